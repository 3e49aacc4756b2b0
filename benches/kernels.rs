//! Criterion benchmarks of the model's kernels, one layer's worth at the default config
//! (B=12, T=64, C=128, H=4: N = B*T = 768 rows), one thread.
//!
//! ```text
//! cargo bench --bench kernels               # all of them
//! cargo bench --bench kernels -- gelu       # only those whose name contains "gelu"
//! ```
//! These are the pieces `benches/step.rs` times together. Each reports its throughput
//! (elements per second; for attention and the products an "element" is one FLOP, so
//! Gelem/s reads as GFLOP/s), so a change to one kernel can be measured on its own,
//! where the step's noise would hide it. The inputs are fixed pseudo-random numbers of the
//! size activations have (|x| < 2): some kernels' speed depends on the values (a subnormal
//! costs ~100 cycles), so zeros or ones would flatter them.
//!
//! The matrix products are the layer's twelve (forward, input gradient, weight gradient of
//! each of `c_attn`, `attn.c_proj`, `c_fc`, `mlp.c_proj`), so they show how fast `gemm` runs at
//! each shape against the one-core peak of the `bench` command's sgemm.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nanodist::model::attention::{attention_backward, attention_forward, qkv_forward, AttnShape};
use nanodist::model::gelu::{gelu_backward, gelu_forward};
use nanodist::model::layernorm::{layernorm_backward, layernorm_forward};
use nanodist::model::linear::{linear_backward, linear_forward};
use nanodist::model::matmul::Out;
use nanodist::rng::{Draw, SeedableRng, Xoshiro256StarStar};

const N: usize = 12 * 64;
const C: usize = 128;
const SHAPE: AttnShape = AttnShape {
    b: 12,
    t: 64,
    c: C,
    n_head: 4,
};

/// `len` numbers uniform in (-2, 2).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Xoshiro256StarStar::seed_from_u64(seed);
    (0..len)
        .map(|_| (4.0 * rng.uniform() - 2.0) as f32)
        .collect()
}

fn elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise");
    let n4 = N * 4 * C;
    let x = values(n4, 1);
    let mut y = vec![0.0; n4];
    g.throughput(Throughput::Elements(n4 as u64));
    g.bench_function("gelu_forward_768x512", |b| {
        b.iter(|| gelu_forward(&mut y, &x, 1))
    });
    let dy = values(n4, 2);
    g.bench_function("gelu_backward_768x512", |b| {
        // backward works in place: start each pass from the same dout
        b.iter(|| {
            y.copy_from_slice(&dy);
            gelu_backward(&mut y, &x, 1)
        })
    });

    let x = values(N * C, 3);
    let w = values(C, 4);
    let (mut out, mut mean, mut rstd) = (vec![0.0; N * C], vec![0.0; N], vec![0.0; N]);
    g.throughput(Throughput::Elements((N * C) as u64));
    g.bench_function("layernorm_forward_768x128", |b| {
        b.iter(|| layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, 1))
    });
    let dout = values(N * C, 5);
    let (mut dinp, mut dw) = (vec![0.0; N * C], vec![0.0; C]);
    g.bench_function("layernorm_backward_768x128", |b| {
        b.iter(|| layernorm_backward(&mut dinp, &mut dw, &dout, &x, &w, &mean, &rstd, 1))
    });
    g.finish();
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    let (b, t, h) = (SHAPE.b, SHAPE.t, SHAPE.n_head);
    let hs = C / h;
    // the products (QK^T and PV forward, four more backward), counted whole as gemm runs them
    let flops = (b * h * 2 * t * t * hs) as u64;
    // q, k, v head-major, as `qkv_forward` writes them (the values are what matters here)
    let qkv: Vec<f32> = values(N * 3 * C, 6).iter().map(|v| v * 0.5).collect();
    let mut att = vec![0.0; b * h * t * t];
    let mut out = vec![0.0; N * C];
    g.throughput(Throughput::Elements(2 * flops));
    g.bench_function("attention_forward_B12_T64_H4", |bch| {
        bch.iter(|| attention_forward(&mut out, &mut att, &qkv, SHAPE, 1))
    });
    let dout = values(N * C, 7);
    let (mut dqkv, mut datt) = (vec![0.0; N * 3 * C], vec![0.0; b * h * t * t]);
    g.throughput(Throughput::Elements(4 * flops));
    g.bench_function("attention_backward_B12_T64_H4", |bch| {
        bch.iter(|| attention_backward(&mut dqkv, &mut datt, &dout, &qkv, &att, SHAPE, 1))
    });
    g.finish();
}

fn linear(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear");
    for (name, fan_out, fan_in) in [
        ("c_attn", 3 * C, C),
        ("attn_c_proj", C, C),
        ("c_fc", 4 * C, C),
        ("mlp_c_proj", C, 4 * C),
    ] {
        let flops = 2 * (N * fan_out * fan_in) as u64;
        let inp = values(N * fan_in, 8);
        let w: Vec<f32> = values(fan_out * fan_in, 9)
            .iter()
            .map(|v| v * 0.05)
            .collect();
        let mut out = vec![0.0; N * fan_out];
        g.throughput(Throughput::Elements(flops));
        g.bench_function(format!("forward_{name}_{N}x{fan_in}x{fan_out}"), |b| {
            b.iter(|| linear_forward(&mut out, &inp, &w, N, Out::Set, 1))
        });
        let dout = values(N * fan_out, 10);
        let (mut dinp, mut dw) = (vec![0.0; N * fan_in], vec![0.0; fan_out * fan_in]);
        g.throughput(Throughput::Elements(2 * flops));
        g.bench_function(format!("backward_{name}_{N}x{fan_in}x{fan_out}"), |b| {
            b.iter(|| linear_backward(&mut dinp, &mut dw, &dout, &inp, &w, N, Out::Set, 1))
        });
    }
    // c_attn as the model runs it: 3H products of hs features, q, k, v written head-major
    let inp = values(N * C, 8);
    let w: Vec<f32> = values(3 * C * C, 9).iter().map(|v| v * 0.05).collect();
    let mut qkv = vec![0.0; N * 3 * C];
    g.throughput(Throughput::Elements(2 * (N * 3 * C * C) as u64));
    let name = format!("forward_c_attn_head_major_{N}x{C}x{}", 3 * C);
    g.bench_function(name, |b| {
        b.iter(|| qkv_forward(&mut qkv, &inp, &w, SHAPE, 1))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = elementwise, attention, linear
}
criterion_main!(benches);
