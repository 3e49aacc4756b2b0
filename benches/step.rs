//! One training step at the default configuration (B=12, T=64, V=65, L=4, H=4, C=128) on
//! one thread: `nanodist::step::train_step`, the very function the training loop runs (zero
//! grads, forward, backward, clipping, AdamW), on one replica with nothing to exchange.
//!
//! ```text
//! cargo bench --bench step            # criterion's report, then the summary table
//! cargo bench --bench step -- summary # only the summary table (no criterion bench matches)
//! ```
//! The summary times 30 steps of each variant and prints the best and the median (the
//! machine may be shared: the best is the least disturbed), and the model FLOPs utilisation:
//! `cfg.flops_per_step(B*T)` (3.8 GFLOP at B=12) divided by the best step time. Under the
//! first line, its 30 steps in the order they ran: on a shared host the steady steps come
//! with bursts of much slower ones, one to three seconds long, and those bursts are why
//! criterion's mean lies above the best step.
//! - `B=12 1 thread`: the whole batch on one worker.
//! - `B=6 1 thread`: what each of 2 data-parallel workers does.
//! - `12 x B=1`: deterministic mode, forward + backward one sequence at a time, summed in
//!   fixed point.
//! - `B=12 2 threads op-parallel`: `Workspace::set_threads(2)`, rayon and gemm inside kernels.
//!
//! Then one paired comparison: the B=12 step taken whole against the same step as two
//! accumulated micro-batches of 6 (half the activations' memory), the two stepping
//! alternately, 60 pairs. On a host whose speed drifts, the median of the paired differences
//! sees effects that best and median steps taken minutes apart cannot.
//!
//! The figures and the profile behind them are in `docs/performance.md`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use nanodist::config::{ModelConfig, TrainConfig};
use nanodist::model::Gpt;
use nanodist::optim::AdamW;
use nanodist::rng::{Draw, SeedableRng, Xoshiro256StarStar};
use nanodist::step::{train_step, Alone, Batch, Replica, Unobserved};

const B: usize = 12;
const T: usize = 64;

/// One replica, stepped by the training loop's own step function.
struct Trainer {
    replica: Replica,
    cfg: TrainConfig,
    tokens: Vec<u32>,
    step: usize,
}

impl Trainer {
    /// A trainer for batches of `seqs` sequences, fed `chunk` sequences per forward
    /// (`chunk == 1` is deterministic mode: one sequence at a time, summed in fixed point).
    fn new(threads: usize, seqs: usize, chunk: usize) -> Self {
        let cfg = {
            let mut c = TrainConfig::default();
            c.parallel.batch = seqs;
            c.parallel.accum = if chunk == 1 { 1 } else { seqs / chunk };
            c.parallel.deterministic = chunk == 1;
            c
        };
        let model = Gpt::new(cfg.model.clone(), 1337);
        let adam = AdamW::new(model.layout.len);
        let mut replica = Replica::new(0, model, adam, &cfg);
        replica.ws.set_threads(threads);
        let mut rng = Xoshiro256StarStar::seed_from_u64(7);
        let tokens = (0..100_000)
            .map(|_| rng.below(cfg.model.vocab_size) as u32)
            .collect();
        Trainer {
            replica,
            cfg,
            tokens,
            step: 0,
        }
    }

    fn step(&mut self) -> f32 {
        let batch = Batch {
            tokens: &self.tokens,
            seed: 1,
            step: self.step,
            sequences: 0..self.cfg.parallel.batch,
        };
        let stats = train_step(
            &mut self.replica,
            &self.cfg,
            &batch,
            &mut Alone,
            &mut Unobserved,
        );
        self.step += 1;
        stats.expect("the step runs").loss
    }
}

fn bench_step(c: &mut Criterion) {
    let mut trainer = Trainer::new(1, B, B);
    c.bench_function("train_step_B12_T64_1thread", |b| b.iter(|| trainer.step()));
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(10)).sample_size(20);
    targets = bench_step
}

/// Quartiles and median of the differences `a - b` of `pairs` step times, in ms, the two
/// trainers stepping alternately (which one goes first alternates too).
fn paired(a: &mut Trainer, b: &mut Trainer, pairs: usize) -> (f64, f64, f64) {
    let timed = |t: &mut Trainer| {
        let start = Instant::now();
        t.step();
        start.elapsed().as_secs_f64() * 1e3
    };
    for _ in 0..3 {
        timed(a);
        timed(b);
    }
    let mut diffs: Vec<f64> = (0..pairs)
        .map(|i| {
            if i % 2 == 0 {
                let ta = timed(a);
                ta - timed(b)
            } else {
                let tb = timed(b);
                timed(a) - tb
            }
        })
        .collect();
    diffs.sort_by(f64::total_cmp);
    let at = |q: usize| diffs[q * (diffs.len() - 1) / 4];
    (at(1), at(2), at(3))
}

/// 30 timed steps (after 3 warm-up steps), in seconds, in the order they ran.
fn time_steps(trainer: &mut Trainer) -> Vec<f64> {
    (0..33)
        .map(|_| {
            let start = Instant::now();
            trainer.step();
            start.elapsed().as_secs_f64()
        })
        .skip(3)
        .collect()
}

fn main() {
    benches();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    const FIRST: &str = "B=12 1 thread";
    let variants = [
        (FIRST, 1, B, B),
        ("B=6 1 thread", 1, B / 2, B / 2),
        ("12 x B=1 (deterministic)", 1, B, 1),
        ("B=12 2 threads op-parallel", 2, B, B),
    ];
    for (name, threads, seqs, chunk) in variants {
        let mut trainer = Trainer::new(threads, seqs, chunk);
        let in_order = pool.install(|| time_steps(&mut trainer));
        let mut sorted = in_order.clone();
        sorted.sort_by(f64::total_cmp);
        let (best, median) = (sorted[0], sorted[sorted.len() / 2]);
        let flops = ModelConfig::default().flops_per_step(seqs * T);
        println!(
            "{name:28} best {:6.2} ms  median {:6.2} ms  {:5.1} GFLOP/s ({:.2} GFLOP per step)",
            best * 1e3,
            median * 1e3,
            flops / best / 1e9,
            flops / 1e9
        );
        if name == FIRST {
            let ms: Vec<String> = in_order.iter().map(|s| format!("{:.0}", s * 1e3)).collect();
            println!("  its steps in order, ms: {}", ms.join(" "));
        }
    }
    let (mut whole, mut chunked) = (Trainer::new(1, B, B), Trainer::new(1, B, B / 2));
    let (q1, median, q3) = paired(&mut whole, &mut chunked, 60);
    println!(
        "B=12 whole - 2 x B=6 accumulated: median {median:+.2} ms (quartiles {q1:+.2}, {q3:+.2}) \
         over 60 alternating pairs"
    );
    Criterion::default().configure_from_args().final_summary();
}
