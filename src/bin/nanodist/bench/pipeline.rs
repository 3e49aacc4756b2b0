//! `nanodist bench --pp P`: the pipeline's bubble and memory, measured against the theory,
//! and its speed against one worker.
//!
//! ```text
//!  for M in --micro (2,4,6), for gpipe, 1f1b and zb:
//!    train --workers P --pp P --micro M, warm-up steps, then --steps timed ones
//!    bubble: each stage's idle share of its schedule window (median over stages and steps)
//!            next to (P-1)/(M+P-1) (zb: its simulated schedule's); peak activation bytes
//!            per stage; tokens/s
//!  speed, interleaved (one worker, 1f1b, zb, one worker, ...; --rounds times):
//!    1 worker (the default model, --accum 1)  against  --workers P --pp P --micro max(M)
//!    under 1f1b and under zb; each ratio = median over rounds of (the pipeline's tokens/s
//!    / one worker's in the same round), and zb / 1f1b likewise
//! ```
//!
//! The bubble formula assumes each stage's forward and backward take the same time and the
//! stages run side by side undisturbed: on a machine with fewer free cores than stages the
//! measured bubble grows (a stage waits for a core as well as for its neighbour).

use std::fmt::Write as _;

use nanodist::config::{PipeSchedule, TrainConfig};
use nanodist::data;
use nanodist::parallel::pipeline;
use nanodist::train::{self, RunOptions};
use nanodist::Error;

use std::path::Path;

use nanodist::collective::Algorithm;

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
    let speed = |cfg: &TrainConfig| -> Result<f64, Error> {
        let s = train::train(cfg, &corpus, train::initial_state(cfg), &fast, |_| Ok(()))?;
        Ok(s.summary.tokens_per_s)
    };
    // tokens/s by round: [one worker, 1f1b, zb]
    let mut rounds: Vec<[f64; 3]> = Vec::new();
    for r in 0..args.rounds {
        let a = speed(&one)?;
        let (b, c) = (speed(&piped[0])?, speed(&piped[1])?);
        rounds.push([a, b, c]);
        eprint!(
            "\r  speed round {}/{}: {:.2}x / {:.2}x",
            r + 1,
            args.rounds,
            b / a,
            c / a
        );
    }
    eprintln!();
    let column = |k: usize| median(rounds.iter().map(|r| r[k]).collect());
    let ratio = |k: usize, of: usize| median(rounds.iter().map(|r| r[k] / r[of]).collect());
    let (r1, rz, zb_over) = (ratio(1, 0), ratio(2, 0), ratio(2, 1));
    let mut line = String::new();
    let _ = write!(
        line,
        "speed ({} round(s), interleaved, median of each): 1 worker {:.0} tokens/s; \
         --workers {pp} --pp {pp} --micro {most}: --schedule 1f1b {:.0} tokens/s, {r1:.2}x; \
         --schedule zb {:.0} tokens/s, {rz:.2}x (medians of per-round ratios; zb / 1f1b {zb_over:.2}x)",
        args.rounds,
        column(0),
        column(1),
        column(2),
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
            "one_worker_tokens_per_s": column(0),
            "one_f_one_b_tokens_per_s": column(1),
            "zb_tokens_per_s": column(2),
            "rounds_tokens_per_s": rounds,
            "speedup_1f1b": r1,
            "speedup_zb": rz,
            "zb_over_1f1b": zb_over,
        });
        let path = dir.join("pipeline.json");
        let text = serde_json::to_string_pretty(&json).expect("figures serialise");
        (std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, text)))
            .map_err(|source| Error::Io { path, source })?;
        println!("wrote {}/pipeline.json", dir.display());
    }
    Ok(())
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}
