//! One training step at the default configuration (B=12, T=64, V=65, L=4, H=4, C=128) on
//! one thread: zero grads + forward + backward + clip_grad_norm + AdamW.
//!
//! ```text
//! cargo bench --bench step
//! ```
//! After criterion's report it prints the model FLOPs utilisation: `cfg.flops_per_step(B*T)`
//! (3.8 GFLOP) divided by the best measured step time.
//!
//! Measured on the 2-core Xeon (AVX-512) dev machine while others were compiling on it, best
//! of several runs: 88 ms (43 GFLOP/s) with `gemm`'s default features, whose x86 kernels stop
//! at AVX2+FMA (about 70 GFLOP/s on these shapes); 61 ms (63 GFLOP/s) with
//! `gemm = { version = "0.19", features = ["x86-v4"] }`, which adds its AVX-512 kernels
//! (about 125 GFLOP/s). The matrix products are ~80% of the step either way.

use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use nanodist::config::{ModelConfig, TrainConfig};
use nanodist::model::{Gpt, Workspace};
use nanodist::optim::{clip_grad_norm, lr_at, AdamW};
use nanodist::rng::Rng;

const B: usize = 12;

/// Everything one worker owns for training.
struct Trainer {
    model: Gpt,
    ws: Workspace,
    grads: Vec<f32>,
    opt: AdamW,
    train: TrainConfig,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    step: usize,
}

impl Trainer {
    fn new(threads: usize) -> Self {
        let cfg = ModelConfig::default();
        let model = Gpt::new(cfg.clone(), 1337);
        let mut ws = Workspace::new(&cfg, B, cfg.block_size);
        ws.set_threads(threads);
        let mut rng = Rng::new(7);
        let n = B * cfg.block_size;
        let tokens: Vec<u32> = (0..=n).map(|_| rng.below(cfg.vocab_size) as u32).collect();
        Trainer {
            grads: vec![0.0; model.layout.len],
            opt: AdamW::new(model.layout.len),
            model,
            ws,
            train: TrainConfig::default(),
            inputs: tokens[..n].to_vec(),
            targets: tokens[1..].to_vec(),
            step: 0,
        }
    }

    fn step(&mut self) -> f32 {
        let t = &mut *self;
        let scale = 1.0 / t.inputs.len() as f32;
        t.grads.fill(0.0);
        let loss = t
            .model
            .forward(&mut t.ws, &t.inputs, Some(&t.targets))
            .unwrap();
        t.model.backward(&mut t.ws, scale, &mut t.grads[..]);
        clip_grad_norm(&mut t.grads, t.train.grad_clip);
        let lr = lr_at(t.step, &t.train);
        t.opt
            .step(&mut t.model.params, &t.grads, &t.model.layout, lr, &t.train);
        t.step += 1;
        loss
    }
}

fn bench_step(c: &mut Criterion) {
    let mut trainer = Trainer::new(1);
    c.bench_function("train_step_B12_T64_1thread", |b| b.iter(|| trainer.step()));
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(10)).sample_size(20);
    targets = bench_step
}

fn main() {
    benches();
    // Model FLOPs utilisation: the best of 30 timed steps (the machine may be shared).
    let mut trainer = Trainer::new(1);
    let mut best = f64::INFINITY;
    for i in 0..33 {
        let start = Instant::now();
        trainer.step();
        if i >= 3 {
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    let flops = ModelConfig::default().flops_per_step(B * 64);
    println!(
        "best step {:.2} ms, {:.1} GFLOP/s model FLOPs ({:.2} GFLOP per step)",
        best * 1e3,
        flops / best / 1e9,
        flops / 1e9
    );
    Criterion::default().configure_from_args().final_summary();
}
