//! The optimizer side of a step: learning-rate schedule, gradient clipping, AdamW.
//!
//! ```text
//!   lr    ^      ___________
//!         |     /           ‾‾‾‾‾‾---___             cosine decay from lr to min_lr
//!         |    /                        ‾‾‾---___________ min_lr
//!         |   / linear warm-up
//!         +--|-----------|------------------------|-----> step
//!            0         warmup                   steps
//! ```
//! Every replica runs these on identical gradients (after the all-reduce), so each one is
//! written to give identical bits for identical inputs: fixed reduction orders, no threads.

use crate::config::OptimConfig;
use crate::model::ParamLayout;

/// The learning rate of 0-based `step` of a run of `steps`, nanoGPT's `get_lr`:
/// `lr * (step+1) / (warmup+1)` during warm-up, then cosine decay from `lr` to `min_lr` at
/// `steps`, `min_lr` after.
///
/// ```
/// use nanodist::{config::OptimConfig, optim::lr_at};
/// let cfg = OptimConfig::default(); // lr 1e-3, min_lr 1e-4, warmup 100
/// assert!((lr_at(99, 2000, &cfg) - 1e-3 * 100.0 / 101.0).abs() < 1e-9);
/// assert!((lr_at(100, 2000, &cfg) - 1e-3).abs() < 1e-9);
/// assert!((lr_at(2000, 2000, &cfg) - 1e-4).abs() < 1e-9);
/// ```
pub fn lr_at(step: usize, steps: usize, cfg: &OptimConfig) -> f32 {
    if step < cfg.warmup {
        return cfg.lr * (step + 1) as f32 / (cfg.warmup + 1) as f32;
    }
    if step >= steps || steps <= cfg.warmup {
        return cfg.min_lr;
    }
    let ratio = (step - cfg.warmup) as f64 / (steps - cfg.warmup) as f64;
    // coefficient 1 at the end of warm-up, 0 at `steps`
    // libm's cos makes the schedule the same bits on every platform.
    let coeff = 0.5 * (1.0 + libm::cos(std::f64::consts::PI * ratio));
    (cfg.min_lr as f64 + coeff * (cfg.lr - cfg.min_lr) as f64) as f32
}

/// Scales `grads` so that their global L2 norm is at most `max_norm` (`<= 0`: never), as
/// PyTorch's `clip_grad_norm_` does, and returns the norm before clipping.
///
/// The training loop does not call this: it takes [`clip_scale`] and hands the factor to
/// [`AdamW::step_scaled`], which multiplies each gradient as it reads it. The same product
/// in the same place gives the same bits, and the gradients are not written and read again
/// (6.4 MB a step at the default size, about 0.2 ms).
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let (norm, scale) = clip_scale(grads, max_norm);
    if scale != 1.0 {
        grads.iter_mut().for_each(|g| *g *= scale);
    }
    norm
}

/// Floats per partial sum of the gradient norm: the flat buffer is cut into chunks of this
/// many floats from offset 0, and each chunk's sum of squares is one partial.
///
/// ```text
///   flat gradient:  [ chunk 0 | chunk 1 | chunk 2 | ... | chunk k-1 (shorter) ]
///   partials:          s0        s1        s2      ...     s(k-1)      (f64, each in a fixed order)
///   norm = sqrt(((s0 + s1) + s2) + ... + s(k-1))
/// ```
///
/// The chunks do not depend on how many workers there are, so a worker that holds only a
/// shard of the gradient (ZeRO, whose shards start at multiples of this) computes its
/// chunks' partials, the partials are gathered, and every worker adds them in chunk order:
/// the same bits as one worker holding everything.
pub const NORM_CHUNK: usize = 4096;

/// The sum of squares of one norm chunk, in f64 with 8 running sums in a fixed order (the
/// loop vectorises; the same floats give the same bits).
pub fn sum_of_squares(chunk: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let lanes = chunk.chunks_exact(8);
    let tail: f64 = lanes.remainder().iter().map(|&g| g as f64 * g as f64).sum();
    for c in lanes {
        for l in 0..8 {
            acc[l] += c[l] as f64 * c[l] as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Writes the partial of each [`NORM_CHUNK`] of `grads` into `out` (one per chunk, in
/// order). `grads` must start at a chunk boundary of the flat layout.
pub fn norm_partials(grads: &[f32], out: &mut [f64]) {
    assert_eq!(
        out.len(),
        grads.len().div_ceil(NORM_CHUNK),
        "one partial per chunk"
    );
    for (o, c) in out.iter_mut().zip(grads.chunks(NORM_CHUNK)) {
        *o = sum_of_squares(c);
    }
}

/// The norm from every chunk's partial (added in chunk order) and the factor that clipping
/// to `max_norm` multiplies the gradients by (1 when within it, or when `max_norm <= 0`).
pub fn clip_from_partials(partials: impl IntoIterator<Item = f64>, max_norm: f32) -> (f32, f32) {
    let norm = partials.into_iter().fold(0.0f64, |a, s| a + s).sqrt();
    (norm as f32, clip_factor(norm, max_norm))
}

/// The factor clipping multiplies gradients of global L2 norm `norm` by: `max_norm / norm`
/// when that is below 1 (and `max_norm > 0`), else 1. [`clip_from_partials`] uses it, and so
/// does a pipeline, whose stages compute the norm together.
pub fn clip_factor(norm: f64, max_norm: f32) -> f32 {
    let coef = max_norm as f64 / (norm + 1e-6);
    if max_norm > 0.0 && coef < 1.0 {
        coef as f32
    } else {
        1.0
    }
}

/// The global L2 norm of `grads` and the factor that clipping to `max_norm` multiplies them
/// by (1 when they are within it, or when `max_norm <= 0`).
///
/// The sum of squares is a sum of [`NORM_CHUNK`] partials in chunk order, each taken in f64
/// in a fixed order: the same gradients give the same bits on every replica, and a sharded
/// optimizer that gathers its shards' partials gets the same bits too.
pub fn clip_scale(grads: &[f32], max_norm: f32) -> (f32, f32) {
    clip_from_partials(grads.chunks(NORM_CHUNK).map(sum_of_squares), max_norm)
}

/// AdamW (Loshchilov & Hutter) with PyTorch's semantics: bias-corrected moments and
/// weight decay decoupled from the gradient, applied only to tensors with `decay`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    /// First moment (running mean of the gradient), laid out like the parameters.
    pub m: Vec<f32>,
    /// Second moment (running mean of the squared gradient), laid out like the parameters.
    pub v: Vec<f32>,
    /// Steps taken so far (the bias correction's t).
    pub t: u64,
}

impl AdamW {
    /// Zero moments for `n` parameters.
    pub fn new(n: usize) -> Self {
        AdamW {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One update of `params` from `grads` at learning rate `lr`:
    /// ```text
    ///   p -= lr * wd * p                       (decay tensors only)
    ///   m  = b1 m + (1 - b1) g                 v = b2 v + (1 - b2) g^2
    ///   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    /// ```
    ///
    /// # Panics
    /// If the buffers do not all have the layout's length.
    pub fn step(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        layout: &ParamLayout,
        lr: f32,
        cfg: &OptimConfig,
    ) {
        self.step_scaled(params, grads, layout, lr, cfg, 1.0);
    }

    /// [`step`](Self::step) on `grads` each multiplied by `grad_scale` as it is read: the
    /// clipping factor of [`clip_scale`], applied without a pass of its own.
    ///
    /// # Panics
    /// If the buffers do not all have the layout's length.
    pub fn step_scaled(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        layout: &ParamLayout,
        lr: f32,
        cfg: &OptimConfig,
        grad_scale: f32,
    ) {
        assert_eq!(params.len(), layout.len);
        self.step_shard(params, grads, layout, 0..layout.len, lr, cfg, grad_scale);
    }

    /// [`step_scaled`](Self::step_scaled) on the shard `range` of the flat layout alone:
    /// `params`, `grads` and this optimizer's moments hold just that range. AdamW is
    /// element-wise (weight decay per tensor, taken from the layout for each tensor's part
    /// of the range), so a shard's update gives the bits the whole update gives there.
    ///
    /// # Panics
    /// If a buffer's length is not the range's, or the range lies outside the layout.
    #[allow(clippy::too_many_arguments)]
    pub fn step_shard(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        layout: &ParamLayout,
        range: std::ops::Range<usize>,
        lr: f32,
        cfg: &OptimConfig,
        grad_scale: f32,
    ) {
        let n = range.len();
        assert!(
            range.end <= layout.len,
            "shard {range:?} outside the layout"
        );
        assert_eq!(params.len(), n);
        assert_eq!(grads.len(), n);
        assert_eq!(self.m.len(), n);
        assert_eq!(self.v.len(), n);
        self.t += 1;
        let (b1, b2, eps) = (cfg.beta1, cfg.beta2, cfg.eps);
        // libm's pow makes the bias corrections the same bits on every platform (`powi`'s
        // rounding is left to the compiler and its runtime library).
        let bc1 = 1.0 - libm::pow(b1 as f64, self.t as f64);
        let bc2 = 1.0 - libm::pow(b2 as f64, self.t as f64);
        let step_size = (lr as f64 / bc1) as f32;
        let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
        for t in &layout.tensors {
            // this tensor's part of the shard, in the shard's own offsets
            let (start, end) = (t.offset.max(range.start), (t.offset + t.len).min(range.end));
            if start >= end {
                continue;
            }
            let r = start - range.start..end - range.start;
            let decay = if t.decay {
                1.0 - lr * cfg.weight_decay
            } else {
                1.0
            };
            let (p, g) = (&mut params[r.clone()], &grads[r.clone()]);
            let (m, v) = (&mut self.m[r.clone()], &mut self.v[r]);
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                let g = g * grad_scale;
                *p *= decay;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= step_size * *m / (v.sqrt() * inv_sqrt_bc2 + eps);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    /// The layout of a one-layer model of the given sizes.
    fn tiny_layout(
        vocab_size: usize,
        block_size: usize,
        n_head: usize,
        n_embd: usize,
    ) -> ParamLayout {
        ParamLayout::new(&ModelConfig {
            vocab_size,
            block_size,
            n_layer: 1,
            n_head,
            n_embd,
        })
    }

    #[test]
    fn clipping_scales_to_max_norm_and_reports_the_old_norm() {
        let mut g = vec![3.0f32, 4.0];
        assert_eq!(clip_grad_norm(&mut g, 0.0), 5.0);
        assert_eq!(g, [3.0, 4.0]);
        assert_eq!(clip_grad_norm(&mut g, 1.0), 5.0);
        assert!(
            (g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6,
            "{g:?}"
        );
    }

    #[test]
    fn clipping_inside_adamw_gives_the_bits_of_clipping_first() {
        let cfg = OptimConfig::default();
        let layout = tiny_layout(5, 4, 2, 8);
        let grads: Vec<f32> = (0..layout.len)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        let p0: Vec<f32> = (0..layout.len).map(|i| (i as f32 * 0.7).sin()).collect();
        // a norm over the limit (the factor is below 1) and one within it (the factor is 1)
        for max_norm in [0.5, 1e6] {
            let (mut a, mut b) = (p0.clone(), p0.clone());
            let (mut adam_a, mut adam_b) = (AdamW::new(layout.len), AdamW::new(layout.len));
            for step in 0..3 {
                let mut clipped = grads.clone();
                let norm = clip_grad_norm(&mut clipped, max_norm);
                adam_a.step(&mut a, &clipped, &layout, 1e-2, &cfg);
                let (norm_b, scale) = clip_scale(&grads, max_norm);
                assert_eq!(norm_b.to_bits(), norm.to_bits());
                assert_eq!(scale < 1.0, max_norm < 1.0, "step {step}");
                adam_b.step_scaled(&mut b, &grads, &layout, 1e-2, &cfg, scale);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "max_norm {max_norm}");
            assert_eq!(bits(&adam_a.m), bits(&adam_b.m));
            assert_eq!(bits(&adam_a.v), bits(&adam_b.v));
        }
    }

    #[test]
    fn first_adamw_step_moves_each_weight_by_about_lr() {
        // t = 1: m/(1-b1) = g and sqrt(v/(1-b2)) = |g|, so the step is lr * sign(g)
        let cfg = OptimConfig::default();
        let layout = tiny_layout(3, 2, 1, 2);
        let mut p = vec![1.0f32; layout.len];
        let g: Vec<f32> = (0..layout.len)
            .map(|i| if i % 2 == 0 { 0.5 } else { -2.0 })
            .collect();
        let mut opt = AdamW::new(layout.len);
        opt.step(&mut p, &g, &layout, 0.01, &cfg);
        for t in &layout.tensors {
            for i in t.offset..t.offset + t.len {
                let decayed = if t.decay { 1.0 - 0.01 * 0.1 } else { 1.0 };
                let want = decayed - 0.01 * g[i].signum();
                assert!(
                    (p[i] - want).abs() < 1e-6,
                    "{} [{i}]: {} vs {want}",
                    t.name,
                    p[i]
                );
            }
        }
    }
}
