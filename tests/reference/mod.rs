//! The f64 reference that the gradient checks compare against: finite differences, a
//! failure report, and every layer written plainly (no code shared with `src/`).
//!
//! Tolerance. The reference is f64 and its finite differences use h = 1e-5, so their own
//! error is ~h^2 * f''' + 1e-16 / h ≈ 1e-10: the reference gradient is exact for our purpose.
//! The analytic gradient is f32, so its entries carry rounding errors of a few 1e-7 of the
//! largest. Measured (each check prints its largest error, relative to the tensor's largest
//! |gradient|; `cargo test --release --test gradcheck --test model -- --nocapture`):
//!
//! ```text
//!   one layer (gradcheck.rs)            largest 3.7e-7 (gelu dx)       -> LAYER_TOL 4e-6
//!   whole model (model.rs), head 4      largest 7.3e-7 (ln_1)          -> TOL 1e-5
//!   whole model, head 32, sampled       largest 1.1e-6 (mlp.c_fc)      -> TOL 1e-5
//! ```
//!
//! Each tolerance is about ten times the largest error measured under it. A wrong derivative
//! (a missing term, a wrong index, a wrong sign, a buffer overwritten instead of added to)
//! is off by a sizeable part of the gradient itself, and a 0.01% slip in one term is caught.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use nanodist::config::ModelConfig;
use nanodist::rng::{Draw, Xoshiro256StarStar};

/// The whole model's checks (see the table above).
pub const TOL: f64 = 1e-5;
/// One layer's checks (see the table above).
pub const LAYER_TOL: f64 = 4e-6;
pub const H: f64 = 1e-5;

// ---------------------------------------------------------------- helpers

pub fn randn(rng: &mut Xoshiro256StarStar, n: usize, std: f64, mean: f64) -> Vec<f32> {
    (0..n).map(|_| (mean + std * rng.normal()) as f32).collect()
}

pub fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Central differences of `f` at `x` in the coordinates `at` only (a large model's sample).
pub fn numeric_grad_at(x: &[f64], at: &[usize], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (at.iter())
        .map(|&i| {
            let orig = x[i];
            x[i] = orig + H;
            let up = f(&x);
            x[i] = orig - H;
            let down = f(&x);
            x[i] = orig;
            (up - down) / (2.0 * H)
        })
        .collect()
}

/// Central differences of `f` at `x`, one coordinate at a time.
pub fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = x[i];
            x[i] = orig + H;
            let up = f(&x);
            x[i] = orig - H;
            let down = f(&x);
            x[i] = orig;
            (up - down) / (2.0 * H)
        })
        .collect()
}

/// Fails with the first differing values and the largest difference; prints the largest
/// difference either way (`--nocapture` shows them: how `TOL` was measured).
pub fn check(name: &str, got: &[f32], want: &[f64]) {
    check_within(name, got, want, TOL);
}

/// [`check`] at tolerance `tol` (relative to the largest |reference| entry).
pub fn check_within(name: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-12);
    let (mut bad, mut n_bad) = (Vec::new(), 0);
    let (mut worst, mut worst_i) = (0.0f64, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w).abs() / scale;
        if d > worst {
            (worst, worst_i) = (d, i);
        }
        if d > tol || d.is_nan() {
            n_bad += 1;
            if bad.len() < 5 {
                bad.push(format!("[{i}] got {g:.6e} want {w:.6e}"));
            }
        }
    }
    eprintln!("measured {worst:.2e} {name}");
    assert!(
        n_bad == 0,
        "{name}: {n_bad} differ by more than {tol} of max |grad| {scale:.3e}; first: {}; largest: [{worst_i}] {:.2e} (got {} want {})",
        bad.join(", "),
        worst,
        got[worst_i],
        want[worst_i]
    );
}

/// sum(out * r): a scalar whose gradient with respect to `out` is `r`.
pub fn weigh(out: &[f64], r: &[f32]) -> f64 {
    out.iter().zip(r).map(|(o, &r)| o * r as f64).sum()
}

// ---------------------------------------------------------------- f64 reference layers

pub fn ref_layernorm(x: &[f64], w: &[f64]) -> Vec<f64> {
    let c = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(c) {
        let mean = row.iter().sum::<f64>() / c as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + 1e-5).sqrt();
        out.extend(row.iter().zip(w).map(|(v, w)| (v - mean) * rstd * w));
    }
    out
}

/// out (n, fan_out) = x (n, fan_in) @ w (fan_out, fan_in)^T
pub fn ref_linear(x: &[f64], w: &[f64], fan_in: usize) -> Vec<f64> {
    let fan_out = w.len() / fan_in;
    let mut out = Vec::new();
    for row in x.chunks(fan_in) {
        for o in 0..fan_out {
            out.push((0..fan_in).map(|i| row[i] * w[o * fan_in + i]).sum());
        }
    }
    out
}

pub fn ref_gelu(x: &[f64]) -> Vec<f64> {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    x.iter()
        .map(|&v| 0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh()))
        .collect()
}

/// Causal attention: qkv (b*t, 3c) -> (b*t, c).
pub fn ref_attention(qkv: &[f64], b: usize, t: usize, c: usize, nh: usize) -> Vec<f64> {
    let hs = c / nh;
    let mut out = vec![0.0; b * t * c];
    let at = |s: usize, pos: usize, part: usize, h: usize, d: usize| {
        qkv[(s * t + pos) * 3 * c + part * c + h * hs + d]
    };
    for s in 0..b {
        for h in 0..nh {
            for i in 0..t {
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        (0..hs)
                            .map(|d| at(s, i, 0, h, d) * at(s, j, 1, h, d))
                            .sum::<f64>()
                            / (hs as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hs {
                    out[(s * t + i) * c + h * hs + d] =
                        (0..=i).map(|j| e[j] / z * at(s, j, 2, h, d)).sum();
                }
            }
        }
    }
    out
}

/// Sum over rows of -log softmax(logits)[target].
pub fn ref_crossentropy(logits: &[f64], targets: &[u32]) -> f64 {
    let v = logits.len() / targets.len();
    logits
        .chunks(v)
        .zip(targets)
        .map(|(row, &t)| {
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            lse - row[t as usize]
        })
        .sum()
}

/// The whole model's summed cross-entropy, offsets written out from the documented order.
pub fn ref_model(cfg: &ModelConfig, p: &[f64], inputs: &[u32], targets: &[u32], t: usize) -> f64 {
    let (v, c, nh) = (cfg.vocab_size, cfg.n_embd, cfg.n_head);
    let b = inputs.len() / t;
    let wte = &p[..v * c];
    let wpe = &p[v * c..(v + cfg.block_size) * c];
    let mut x: Vec<f64> = Vec::new();
    for (i, &tok) in inputs.iter().enumerate() {
        let pos = i % t;
        x.extend((0..c).map(|k| wte[tok as usize * c + k] + wpe[pos * c + k]));
    }
    let mut at = (v + cfg.block_size) * c;
    let mut take = |len: usize| {
        at += len;
        &p[at - len..at]
    };
    for _ in 0..cfg.n_layer {
        let (ln1, attn, proj) = (take(c), take(3 * c * c), take(c * c));
        let (ln2, fc, mproj) = (take(c), take(4 * c * c), take(4 * c * c));
        let y = ref_attention(&ref_linear(&ref_layernorm(&x, ln1), attn, c), b, t, c, nh);
        let a = ref_linear(&y, proj, c);
        x.iter_mut().zip(&a).for_each(|(x, a)| *x += a);
        let f = ref_gelu(&ref_linear(&ref_layernorm(&x, ln2), fc, c));
        let m = ref_linear(&f, mproj, 4 * c);
        x.iter_mut().zip(&m).for_each(|(x, m)| *x += m);
    }
    let lnf = take(c);
    ref_crossentropy(&ref_linear(&ref_layernorm(&x, lnf), wte, c), targets)
}
