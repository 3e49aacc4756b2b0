//! `nanodist bench --pp P`, its speed: the pipeline against one worker and against what the
//! machine's cores allow, interleaved, and where zb's step goes.
//!
//! ```text
//!  each round (--rounds times), in turn:
//!    one thread alone     MicroKernels: every stage's forward and backward on M micro-batches
//!                         (whole backwards; B then W), against the whole model on B/P
//!                         sequences, P times: the same FLOPs in smaller products
//!    one worker           the default model, --accum 1
//!    the roof             P independent replicas, one thread each, B/P sequences each, that
//!                         never meet (bench's independent mode): no schedule of P threads
//!                         beats it
//!    1f1b, zb             --workers P --pp P --micro max(M)
//!  each ratio = the median over rounds of the ratio within a round
//!  ceiling    = roof x (1 - the schedule's bubble) x micro-batch efficiency
//! ```
//!
//! The roof against one worker is what the machine gives; the pipeline's share of the roof,
//! what its schedule, its smaller products and its hand-offs cost. The last line splits zb's
//! step against a replica's: each alone on one thread, then side by side, then the busiest
//! stage's compute against zb's whole step (the rest is waiting).

use std::fmt::Write as _;
use std::time::Instant;

use super::solo::Solo;
use nanodist::config::{PipeSchedule, TrainConfig};
use nanodist::data;
use nanodist::metrics::{median, Summary};
use nanodist::model::{split, Deferred, Gpt, Workspace};
use nanodist::parallel::pipeline::schedule::theoretical_bubble;
use nanodist::train::{self, RunOptions};
use nanodist::Error;

/// What the speed rounds run.
pub(super) struct Setup<'a> {
    /// The bench's configuration (the default model, the corpus's vocabulary, no evaluation).
    pub base: &'a TrainConfig,
    /// The corpus.
    pub corpus: &'a data::Corpus,
    /// One worker on the whole batch.
    pub one: TrainConfig,
    /// `--workers P --pp P --micro M` under 1f1b and under zb.
    pub piped: [TrainConfig; 2],
    /// How the training runs go (untraced).
    pub opts: RunOptions,
    /// P.
    pub pp: usize,
    /// M.
    pub micro: usize,
    /// The global batch.
    pub batch: usize,
    /// Timed steps of each replica of the roof.
    pub steps: usize,
    /// Interleaved rounds.
    pub rounds: usize,
    /// The machine's cores.
    pub cores: usize,
}

/// Every round's measurements.
pub(super) struct Speed {
    pp: usize,
    micro: usize,
    batch: usize,
    /// tokens/s: [one worker, P independent replicas, 1f1b, zb].
    rounds: Vec<[f64; 4]>,
    /// One thread's times, ms: [the whole model, the stages with whole backwards, with B and
    /// W apart] ([`MicroKernels::times`]).
    alone: Vec<[f64; 3]>,
    /// zb's step, ms, means over the timed steps: [a replica's step in the roof, zb's stages'
    /// mean compute a step, its busiest stage's, its step].
    zb_split: Vec<[f64; 4]>,
}

impl Speed {
    /// Runs the rounds, with a progress line on stderr.
    pub fn measure(s: &Setup<'_>) -> Result<Speed, Error> {
        let run = |cfg: &TrainConfig| -> Result<Summary, Error> {
            let out = train::train(
                cfg,
                s.corpus,
                train::initial_state(cfg),
                &s.opts,
                |_| Ok(()),
            )?;
            Ok(out.summary)
        };
        let roof = Solo {
            base: s.base,
            corpus: s.corpus,
            batch: s.batch,
            steps: s.steps,
            cores: s.cores,
        };
        let mut kernels = MicroKernels::new(s.base, s.corpus, s.pp, s.micro, s.batch);
        kernels.times(); // a warm-up: the first touch of every workspace
        let mut speed = Speed {
            pp: s.pp,
            micro: s.micro,
            batch: s.batch,
            rounds: Vec::new(),
            alone: Vec::new(),
            zb_split: Vec::new(),
        };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        for r in 0..s.rounds {
            speed.alone.push(kernels.times());
            let a = run(&s.one)?.tokens_per_s;
            let replicas = roof.independent(s.pp)?;
            let i = replicas.tokens_per_s;
            let b = run(&s.piped[0])?.tokens_per_s;
            let zb = run(&s.piped[1])?;
            let c = zb.tokens_per_s;
            speed.rounds.push([a, i, b, c]);
            let compute: Vec<f64> = zb.per_worker_ms.iter().map(|w| w[0]).collect();
            let busiest = compute.iter().copied().fold(0.0, f64::max);
            // each worker's mean compute, comm and wait add up to its mean step (as the
            // replicas' step is a mean): the longest of those is the pipeline's
            let step = (zb.per_worker_ms.iter())
                .map(|w| w.iter().sum::<f64>())
                .fold(0.0, f64::max);
            speed.zb_split.push([
                mean(&replicas.worker_step_ms),
                mean(&compute),
                busiest,
                step,
            ]);
            eprint!(
                "\r  speed round {}/{}: roof {:.2}x, 1f1b {:.2}x, zb {:.2}x",
                r + 1,
                s.rounds,
                i / a,
                b / a,
                c / a
            );
        }
        eprintln!();
        Ok(speed)
    }

    /// The median over rounds of `rounds[k] / rounds[of]`.
    fn ratio(&self, k: usize, of: usize) -> f64 {
        median(self.rounds.iter().map(|r| r[k] / r[of]).collect())
    }

    /// The median over rounds of `rounds[k]`.
    fn column(&self, k: usize) -> f64 {
        median(self.rounds.iter().map(|r| r[k]).collect())
    }

    /// The micro-batch efficiency of each round: [whole backwards, B and W apart], the whole
    /// model's time over the stages'.
    fn micro_efficiency(&self) -> Vec<[f64; 2]> {
        (self.alone.iter())
            .map(|t| [t[0] / t[1], t[0] / t[2]])
            .collect()
    }

    /// 1 - each schedule's bubble: [1f1b, zb].
    fn open(&self) -> [f64; 2] {
        [PipeSchedule::OneFOneB, PipeSchedule::ZeroBubble]
            .map(|s| 1.0 - theoretical_bubble(s, self.pp, self.micro))
    }

    /// The median micro-batch efficiency: [whole backwards, B and W apart].
    fn efficiency(&self) -> [f64; 2] {
        let e = self.micro_efficiency();
        [0, 1].map(|k| median(e.iter().map(|e| e[k]).collect()))
    }

    /// The lines `nanodist bench --pp` prints.
    pub fn report(&self) -> String {
        let (pp, most, share) = (self.pp, self.micro, self.batch / self.pp);
        let (one_tps, roof_tps, tps_1f1b, tps_zb) = (
            self.column(0),
            self.column(1),
            self.column(2),
            self.column(3),
        );
        let (roof_x, r1, rz, zb_over) = (
            self.ratio(1, 0),
            self.ratio(2, 0),
            self.ratio(3, 0),
            self.ratio(3, 2),
        );
        let (r1_roof, rz_roof) = (self.ratio(2, 1), self.ratio(3, 1));
        let [open_1f1b, open_zb] = self.open();
        let [eff_whole, eff_split] = self.efficiency();
        let (ceiling_1f1b, ceiling_zb) =
            (roof_x * open_1f1b * eff_whole, roof_x * open_zb * eff_split);
        let split_at = |k: usize| median(self.zb_split.iter().map(|r| r[k]).collect());
        let (replica_ms, stage_ms, busiest_ms, step_ms) =
            (split_at(0), split_at(1), split_at(2), split_at(3));
        // one thread alone: a replica does the whole model on B/P sequences, a stage 1/P of
        // the stages' work on the whole batch
        let per = |k: usize| median(self.alone.iter().map(|t| t[k] / pp as f64).collect());
        let (replica_alone, stage_alone) = (per(0), per(2));
        let side_by_side = |k: usize, of: usize| {
            median(
                (self.zb_split.iter().zip(&self.alone))
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
             zb's step against a replica's (ms a step, medians of the rounds): alone on one \
             thread, a replica's forward and backward take {replica_alone:.1}, a stage's share \
             (B and W apart) {stage_alone:.1}; side by side, a replica of the roof steps in \
             {replica_ms:.1} ({replica_x:.2}x alone), zb's stages compute {stage_ms:.1} a step \
             ({stage_x:.2}x alone), the busiest {busiest_ms:.1}; zb's step takes {step_ms:.1} \
             (the busiest stage computes {:.0}% of it, waits the rest)",
            self.rounds.len(),
            100.0 * r1_roof,
            100.0 * rz_roof,
            100.0 * open_1f1b,
            100.0 * open_zb,
            100.0 * busiest_ms / step_ms,
        );
        line
    }

    /// The speed's keys of `pipeline.json`.
    pub fn json(&self) -> serde_json::Value {
        let roof_x = self.ratio(1, 0);
        let [open_1f1b, open_zb] = self.open();
        let [eff_whole, eff_split] = self.efficiency();
        serde_json::json!({
            "one_worker_tokens_per_s": self.column(0),
            "independent_tokens_per_s": self.column(1),
            "one_f_one_b_tokens_per_s": self.column(2),
            "zb_tokens_per_s": self.column(3),
            "rounds_tokens_per_s": self.rounds,
            "rounds_columns": ["one worker", "independent", "1f1b", "zb"],
            "speedup_independent": roof_x,
            "speedup_1f1b": self.ratio(2, 0),
            "speedup_zb": self.ratio(3, 0),
            "zb_over_1f1b": self.ratio(3, 2),
            "one_f_one_b_over_independent": self.ratio(2, 1),
            "zb_over_independent": self.ratio(3, 1),
            "micro_efficiency_whole": eff_whole,
            "micro_efficiency_split": eff_split,
            "rounds_micro_efficiency": self.micro_efficiency(),
            "rounds_alone_ms": self.alone,
            "rounds_alone_ms_columns": [
                "whole model, P times",
                "stages, whole backwards",
                "stages, B and W apart",
            ],
            "ceiling_1f1b": roof_x * open_1f1b * eff_whole,
            "ceiling_zb": roof_x * open_zb * eff_split,
            "rounds_zb_ms": self.zb_split,
            "rounds_zb_ms_columns": [
                "replica step (roof)",
                "zb stage compute, mean over stages",
                "zb busiest stage compute",
                "zb step",
            ],
        })
    }
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
