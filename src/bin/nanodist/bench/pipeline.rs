//! `nanodist bench --pp P`: the pipeline's bubble and memory, measured against the theory,
//! and its speed against one worker and against what the machine's cores allow.
//!
//! ```text
//!  for M in --micro (2,4,6), for gpipe, 1f1b and zb:
//!    train --workers P --pp P --micro M, warm-up steps, then --steps timed ones
//!    bubble: each stage's idle share of its schedule window (median over stages and steps)
//!            next to (P-1)/(M+P-1) (zb: its simulated schedule's); peak activation bytes
//!            per stage; tokens/s
//!  speed, interleaved (one worker, roof, 1f1b, zb, one worker, ...; --rounds times):
//!    1 worker (the default model, --accum 1)  against  --workers P --pp P --micro max(M)
//!    under 1f1b and under zb; each ratio = median over rounds of (the pipeline's tokens/s
//!    / one worker's in the same round), and zb / 1f1b likewise
//!    roof: P independent replicas, one thread each, B/P sequences each, that never meet
//!    (`bench`'s independent mode): what P cores deliver side by side on this machine. No
//!    schedule of P threads beats it: the roof against one worker is what the machine gives,
//!    the pipeline's share of the roof what its schedule, its smaller products and its
//!    hand-offs cost.
//!    micro-batch efficiency, on this thread alone: every stage's forward and backward
//!    (whole, as 1F1B runs it; B then W, as zb does) on M micro-batches of B/M sequences,
//!    against the whole model's forward and backward on B/P sequences, P times: the same
//!    FLOPs on smaller products
//!  ceiling = roof x (1 - the schedule's bubble) x micro-batch efficiency
//! ```
//!
//! The bubble formula assumes each stage's forward and backward take the same time and the
//! stages run side by side undisturbed: on a machine with fewer free cores than stages the
//! measured bubble grows (a stage waits for a core as well as for its neighbour).

use std::fmt::Write as _;

use nanodist::config::{PipeSchedule, TrainConfig};
use nanodist::data;
use nanodist::metrics::Summary;
use nanodist::model::{split, Deferred, Gpt, Workspace};
use nanodist::parallel::pipeline;
use nanodist::train::{self, RunOptions};
use nanodist::Error;

use std::path::Path;
use std::time::Instant;

use nanodist::collective::Algorithm;

use super::solo::Solo;

/// Warm-up steps before the timed ones.
const WARM: usize = 3;

/// One measured pipeline configuration.
#[derive(serde::Serialize)]
struct Row {
    micro: usize,
    schedule: &'static str,
    bubble_measured: Option<f64>,
    bubble_theory: f64,
    peak_activation_bytes: Vec<usize>,
    tokens_per_s: f64,
}

/// What `nanodist bench --pp` measures (from its flags).
pub struct Options<'a> {
    /// P.
    pub pp: usize,
    /// The micro-batch counts M.
    pub micro: &'a [usize],
    /// Timed steps per configuration.
    pub steps: usize,
    /// Interleaved rounds of the speed comparison.
    pub rounds: usize,
    /// The global batch.
    pub batch: usize,
    /// The corpus.
    pub data: &'a str,
    /// The all-reduce algorithm of the runs.
    pub allreduce: Algorithm,
    /// Where pipeline.json goes, if anywhere.
    pub out: Option<&'a Path>,
}

/// Runs the pipeline benchmark.
pub fn run(args: &Options<'_>) -> Result<(), Error> {
    let pp = args.pp;
    if args.micro.is_empty() || args.micro.contains(&0) || args.steps == 0 || args.rounds == 0 {
        return Err(Error::Config(
            "--micro needs positive counts (e.g. --micro 2,4,6), and --steps and --rounds at least 1"
                .into(),
        ));
    }
    if args.batch % pp != 0 {
        return Err(Error::Config(format!(
            "bench --pp {pp} needs a --batch that {pp} divides: its roof is {pp} independent \
             replicas of an equal share each (e.g. --batch 12)"
        )));
    }
    let mut base = TrainConfig {
        data: args.data.to_string(),
        ..TrainConfig::default()
    };
    base.schedule.eval_every = 0;
    base.parallel.allreduce = args.allreduce;
    let corpus = data::load(&base.data, base.seed)?;
    base.model.vocab_size = corpus.vocab.len();
    let pipe = |workers: usize, micro: usize, s: PipeSchedule| {
        let mut c = base.clone();
        (c.parallel.workers, c.parallel.pp, c.parallel.micro) = (workers, pp, micro);
        c.parallel.schedule = s;
        c.parallel.batch = args.batch;
        c.schedule.steps = args.steps + WARM;
        c
    };
    let most = args.micro.iter().copied().max().unwrap_or(1);
    for &m in args.micro {
        pipe(pp, m, PipeSchedule::GPipe).validate()?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "pipeline bench: {pp} stages of the default model (L = {}), global batch {}, {} timed steps \
         after {WARM} warm-up; {cores} cores{}",
        base.model.n_layer,
        args.batch,
        args.steps,
        if cores < pp {
            " (fewer than the stages: oversubscribed, the bubble reads high)"
        } else {
            ""
        }
    );
    let opts = RunOptions {
        final_eval: false,
        trace_steps: args.steps + WARM,
        ..RunOptions::default()
    };
    let mut rows = Vec::new();
    println!(
        "{:>5} {:>8} {:>16} {:>8} {:>28} {:>10}",
        "M", "schedule", "bubble measured", "theory", "peak activations/stage (MiB)", "tokens/s"
    );
    for &m in args.micro {
        for s in [
            PipeSchedule::GPipe,
            PipeSchedule::OneFOneB,
            PipeSchedule::ZeroBubble,
        ] {
            let cfg = pipe(pp, m, s);
            let out = train::train(&cfg, &corpus, train::initial_state(&cfg), &opts, |_| Ok(()))?;
            let timed: Vec<Vec<_>> = (out.tracks.iter())
                .map(|t| t.iter().filter(|sp| sp.step >= WARM).copied().collect())
                .collect();
            let f = pipeline::figures(&cfg, &timed);
            let mib: Vec<String> = (f.peak_activation_bytes.iter())
                .map(|b| format!("{:.1}", *b as f64 / (1 << 20) as f64))
                .collect();
            println!(
                "{m:>5} {:>8} {:>16} {:>8.3} {:>28} {:>10.0}",
                s.name(),
                f.bubble_measured.map_or("-".into(), |b| format!("{b:.3}")),
                f.bubble_theory,
                mib.join(" / "),
                out.summary.tokens_per_s
            );
            rows.push(Row {
                micro: m,
                schedule: s.name(),
                bubble_measured: f.bubble_measured,
                bubble_theory: f.bubble_theory,
                peak_activation_bytes: f.peak_activation_bytes,
                tokens_per_s: out.summary.tokens_per_s,
            });
        }
    }
    // speed: one worker and the two pipelines, interleaved; a round's ratios compare runs
    // that saw the same load, and the median ignores a round the host disturbed
    let mut one = base.clone();
    (one.parallel.workers, one.parallel.batch) = (1, args.batch);
    one.schedule.steps = args.steps + WARM;
    let schedules = [PipeSchedule::OneFOneB, PipeSchedule::ZeroBubble];
    let piped = schedules.map(|s| pipe(pp, most, s));
    let fast = RunOptions {
        trace_steps: 0,
        ..opts.clone()
    };
    let run = |cfg: &TrainConfig| -> Result<Summary, Error> {
        let s = train::train(cfg, &corpus, train::initial_state(cfg), &fast, |_| Ok(()))?;
        Ok(s.summary)
    };
    let speed = |cfg: &TrainConfig| run(cfg).map(|s| s.tokens_per_s);
    let roof = Solo {
        base: &base,
        corpus: &corpus,
        batch: args.batch,
        steps: args.steps,
        cores,
    };
    // tokens/s by round: [one worker, P independent replicas, 1f1b, zb]
    let mut rounds: Vec<[f64; 4]> = Vec::new();
    // one thread's times by round, ms: [the whole model, the stages with whole backwards,
    // with B and W apart] (MicroKernels::times)
    let mut alone: Vec<[f64; 3]> = Vec::new();
    // zb's step by round, ms, means over the timed steps: [a replica's step in the roof,
    // zb's stages' mean compute a step, its busiest stage's, its step]
    let mut zb_split: Vec<[f64; 4]> = Vec::new();
    let mut kernels = MicroKernels::new(&base, &corpus, pp, most, args.batch);
    kernels.times(); // a warm-up: the first touch of every workspace
    for r in 0..args.rounds {
        alone.push(kernels.times());
        let a = speed(&one)?;
        let replicas = roof.independent(pp)?;
        let i = replicas.tokens_per_s;
        let b = speed(&piped[0])?;
        let zb = run(&piped[1])?;
        let c = zb.tokens_per_s;
        rounds.push([a, i, b, c]);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let compute: Vec<f64> = zb.per_worker_ms.iter().map(|w| w[0]).collect();
        let busiest = compute.iter().copied().fold(0.0, f64::max);
        // each worker's mean compute, comm and wait add up to its mean step (as the
        // replicas' step is a mean): the longest of those is the pipeline's
        let step = (zb.per_worker_ms.iter())
            .map(|w| w.iter().sum::<f64>())
            .fold(0.0, f64::max);
        zb_split.push([
            mean(&replicas.worker_step_ms),
            mean(&compute),
            busiest,
            step,
        ]);
        eprint!(
            "\r  speed round {}/{}: roof {:.2}x, 1f1b {:.2}x, zb {:.2}x",
            r + 1,
            args.rounds,
            i / a,
            b / a,
            c / a
        );
    }
    eprintln!();
    let column = |k: usize| median(rounds.iter().map(|r| r[k]).collect());
    let ratio = |k: usize, of: usize| median(rounds.iter().map(|r| r[k] / r[of]).collect());
    let (roof_x, r1, rz, zb_over) = (ratio(1, 0), ratio(2, 0), ratio(3, 0), ratio(3, 2));
    let (r1_roof, rz_roof) = (ratio(2, 1), ratio(3, 1));
    // what each schedule's bubble alone leaves of the roof, and with the smaller products
    let open = |s| 1.0 - pipeline::schedule::theoretical_bubble(s, pp, most);
    let (open_1f1b, open_zb) = (open(PipeSchedule::OneFOneB), open(PipeSchedule::ZeroBubble));
    // micro-batch efficiency: the whole model's time over the stages', per round
    let micro_eff: Vec<[f64; 2]> = alone.iter().map(|t| [t[0] / t[1], t[0] / t[2]]).collect();
    let eff = |k: usize| median(micro_eff.iter().map(|e| e[k]).collect());
    let (eff_whole, eff_split) = (eff(0), eff(1));
    let ceiling_1f1b = roof_x * open_1f1b * eff_whole;
    let ceiling_zb = roof_x * open_zb * eff_split;
    let (one_tps, roof_tps, tps_1f1b, tps_zb) = (column(0), column(1), column(2), column(3));
    let share = args.batch / pp;
    let split_at = |k: usize| median(zb_split.iter().map(|r| r[k]).collect());
    let (replica_ms, stage_ms, busiest_ms, step_ms) =
        (split_at(0), split_at(1), split_at(2), split_at(3));
    // one thread alone: a replica does the whole model on B/P sequences, a stage 1/P of
    // the stages' work on the whole batch
    let per = |k: usize| median(alone.iter().map(|t| t[k] / pp as f64).collect());
    let (replica_alone, stage_alone) = (per(0), per(2));
    let side_by_side = |k: usize, of: usize| {
        median(
            (zb_split.iter().zip(&alone))
                .map(|(z, t)| z[k] / (t[of] / pp as f64))
                .collect(),
        )
    };
    let (replica_x, stage_x) = (side_by_side(0, 0), side_by_side(1, 2));
    let mut line = String::new();
    let _ = write!(
        line,
        "speed ({} round(s), interleaved, medians of per-round ratios): 1 worker {one_tps:.0} \
         tokens/s; --workers {pp} --pp {pp} --micro {most}: --schedule 1f1b {tps_1f1b:.0} \
         tokens/s, {r1:.2}x; --schedule zb {tps_zb:.0} tokens/s, {rz:.2}x (zb / 1f1b \
         {zb_over:.2}x)\n\
         roof ({pp} independent replicas of {share} sequences, one thread each, never \
         meeting): {roof_tps:.0} tokens/s, {roof_x:.2}x one worker; 1f1b reaches {:.0}% of \
         it, zb {:.0}% (their bubbles alone would leave {:.0}% and {:.0}%)\n\
         micro-batch efficiency (one thread, the stages on {most} micro-batches against the \
         whole model on {share} sequences): {eff_whole:.2} with whole backwards, \
         {eff_split:.2} with B and W apart\n\
         ceiling = roof x (1 - bubble) x micro-batch efficiency: 1f1b {roof_x:.2} x \
         {open_1f1b:.3} x {eff_whole:.2} = {ceiling_1f1b:.2}x, zb {roof_x:.2} x {open_zb:.3} \
         x {eff_split:.2} = {ceiling_zb:.2}x; measured {r1:.2}x and {rz:.2}x\n\
         zb's step against a replica's (ms a step, medians of the rounds): alone on one thread, a replica's forward \
         and backward take {replica_alone:.1}, a stage's share (B and W apart) \
         {stage_alone:.1}; side by side, a replica of the roof steps in {replica_ms:.1} \
         ({replica_x:.2}x alone), zb's stages compute {stage_ms:.1} a step ({stage_x:.2}x \
         alone), the busiest {busiest_ms:.1}; zb's step takes {step_ms:.1} (the busiest stage \
         computes {:.0}% of it, waits the rest)",
        args.rounds,
        100.0 * r1_roof,
        100.0 * rz_roof,
        100.0 * open_1f1b,
        100.0 * open_zb,
        100.0 * busiest_ms / step_ms,
    );
    println!("{line}");
    if let Some(dir) = args.out {
        let json = serde_json::json!({
            "stages": pp,
            "micro": most,
            "batch": args.batch,
            "steps": args.steps,
            "cores": cores,
            "rows": rows,
            "one_worker_tokens_per_s": one_tps,
            "independent_tokens_per_s": roof_tps,
            "one_f_one_b_tokens_per_s": tps_1f1b,
            "zb_tokens_per_s": tps_zb,
            "rounds_tokens_per_s": rounds,
            "rounds_columns": ["one worker", "independent", "1f1b", "zb"],
            "speedup_independent": roof_x,
            "speedup_1f1b": r1,
            "speedup_zb": rz,
            "zb_over_1f1b": zb_over,
            "one_f_one_b_over_independent": r1_roof,
            "zb_over_independent": rz_roof,
            "micro_efficiency_whole": eff_whole,
            "micro_efficiency_split": eff_split,
            "rounds_micro_efficiency": micro_eff,
            "rounds_alone_ms": alone,
            "rounds_alone_ms_columns": [
                "whole model, P times",
                "stages, whole backwards",
                "stages, B and W apart",
            ],
            "ceiling_1f1b": ceiling_1f1b,
            "ceiling_zb": ceiling_zb,
            "rounds_zb_ms": zb_split,
            "rounds_zb_ms_columns": [
                "replica step (roof)",
                "zb stage compute, mean over stages",
                "zb busiest stage compute",
                "zb step",
            ],
        });
        let path = dir.join("pipeline.json");
        let text = serde_json::to_string_pretty(&json).expect("figures serialise");
        (std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, text)))
            .map_err(|source| Error::Io { path, source })?;
        println!("wrote {}/pipeline.json", dir.display());
    }
    Ok(())
}

/// One thread's micro-batch efficiency: the pipeline's stages, run one after the other on
/// `micro` micro-batches of `batch / micro` sequences, against the whole model on
/// `batch / stages` sequences `stages` times. Both do the forward and backward of `batch`
/// sequences through every block: the stages in products of `batch / micro` sequences' rows
/// (and, under zb, with each backward split into B and W), the whole model in products of
/// `batch / stages`' rows, as the roof's replicas do.
struct MicroKernels {
    model: Gpt,
    parts: Vec<nanodist::model::StagePart>,
    /// The whole model's workspace, `batch / stages` sequences.
    whole: Workspace,
    /// Per stage, per micro-batch: its workspace and its kept output gradients.
    slots: Vec<Vec<(Workspace, Deferred)>>,
    grads: Vec<f32>,
    tokens: Vec<u32>,
    targets: Vec<u32>,
    stages: usize,
    seq: usize,
}

impl MicroKernels {
    fn new(
        cfg: &TrainConfig,
        corpus: &data::Corpus,
        stages: usize,
        micro: usize,
        batch: usize,
    ) -> Self {
        let (m, t) = (&cfg.model, cfg.model.block_size);
        let model = Gpt::new(m.clone(), cfg.seed);
        let parts = split(m.n_layer, stages);
        let per = (batch / micro).max(1);
        let slots = (parts.iter())
            .map(|p| {
                (0..micro)
                    .map(|_| {
                        (
                            Workspace::for_stage(m, p, per, t),
                            Deferred::for_stage(m, p, per, t),
                        )
                    })
                    .collect()
            })
            .collect();
        // any valid token ids will do for timing; cycling covers a corpus shorter than a batch
        let n = batch * t;
        let train = &corpus.train;
        let at = |i: usize| train[i % train.len()];
        MicroKernels {
            whole: Workspace::new(m, (batch / stages).max(1), t),
            grads: vec![0.0; model.params.len()],
            tokens: (0..n).map(at).collect(),
            targets: (1..n + 1).map(at).collect(),
            model,
            parts,
            slots,
            stages,
            seq: t,
        }
    }

    /// One measurement, ms: [the whole model, P times; the stages with whole backwards; the
    /// stages with B and W apart]. Each covers every block's forward and backward of the
    /// whole batch.
    fn times(&mut self) -> [f64; 3] {
        let whole = self.time(|k| {
            let n = k.whole.batch() * k.seq;
            for i in 0..k.stages {
                let (x, y) = (
                    &k.tokens[i * n..(i + 1) * n],
                    &k.targets[i * n..(i + 1) * n],
                );
                k.model.forward(&mut k.whole, x, Some(y));
                k.model.backward(&mut k.whole, 1.0, &mut k.grads[..]);
            }
        });
        let stages = |k: &mut Self, split: bool| {
            for (p, slots) in k.parts.iter().zip(k.slots.iter_mut()) {
                let n = slots[0].0.batch() * k.seq;
                for (m, (ws, _)) in slots.iter_mut().enumerate() {
                    let (x, y) = (
                        &k.tokens[m * n..(m + 1) * n],
                        &k.targets[m * n..(m + 1) * n],
                    );
                    k.model.stage_forward(ws, p, Some(x), Some(y));
                }
                for (ws, kept) in slots.iter_mut() {
                    if split {
                        k.model.stage_backward_input(ws, p, 1.0, &mut k.grads, kept);
                    } else {
                        k.model.stage_backward(ws, p, 1.0, &mut k.grads);
                    }
                }
                if split {
                    for (ws, kept) in slots.iter() {
                        k.model.stage_weight_grads(ws, p, &mut k.grads, kept);
                    }
                }
            }
        };
        let whole_bw = self.time(|k| stages(k, false));
        let split_bw = self.time(|k| stages(k, true));
        [whole, whole_bw, split_bw].map(|t| t * 1e3)
    }

    fn time(&mut self, f: impl FnOnce(&mut Self)) -> f64 {
        let start = Instant::now();
        f(self);
        start.elapsed().as_secs_f64()
    }
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}
