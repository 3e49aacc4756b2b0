//! LayerNorm without bias (nanoGPT `bias=False`), eps = 1e-5, over the C channels of each row.
//!
//! ```text
//!   mean = sum_c x_c / C          rstd = 1 / sqrt(sum_c (x_c - mean)^2 / C + eps)
//!   xhat_c = (x_c - mean) * rstd  out_c = xhat_c * w_c
//! ```
//! The forward keeps `mean` and `rstd` per row (2 floats instead of a C-float `xhat`); the
//! backward rebuilds `xhat` from the input, which the residual stream keeps anyway.

use rayon::prelude::*;

use super::math::{dot, sum};
use super::rows_per_task;

const EPS: f32 = 1e-5;

/// `out (N,C) = layernorm(inp (N,C)) * w (C)`, caching `mean (N)` and `rstd (N)`.
pub fn layernorm_forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    w: &[f32],
    threads: usize,
) {
    let (n, c) = (mean.len(), w.len());
    assert_eq!(out.len(), n * c);
    assert_eq!(inp.len(), n * c);
    assert_eq!(rstd.len(), n);
    if threads <= 1 {
        return forward_rows(out, mean, rstd, inp, w);
    }
    let r = rows_per_task(n, threads);
    out.par_chunks_mut(r * c)
        .zip(mean.par_chunks_mut(r))
        .zip(rstd.par_chunks_mut(r))
        .zip(inp.par_chunks(r * c))
        .for_each(|(((o, m), s), x)| forward_rows(o, m, s, x, w));
}

fn forward_rows(out: &mut [f32], mean: &mut [f32], rstd: &mut [f32], inp: &[f32], w: &[f32]) {
    let c = w.len();
    for (((o, m), s), x) in out
        .chunks_exact_mut(c)
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
        .zip(inp.chunks_exact(c))
    {
        let mu = sum(x) / c as f32;
        // out holds x - mean first: the variance of centred values does not cancel
        for (oi, &xi) in o.iter_mut().zip(x) {
            *oi = xi - mu;
        }
        let var = dot(o, o) / c as f32;
        let r = 1.0 / (var + EPS).sqrt();
        for (oi, &wi) in o.iter_mut().zip(w) {
            *oi *= r * wi;
        }
        *m = mu;
        *s = r;
    }
}

/// Accumulates `dinp (N,C)` and `dw (C)` from `dout (N,C)`.
///
/// With `g = dout * w` (the gradient reaching xhat) the input gradient is
/// ```text
///   dinp_c += rstd * (g_c - mean_c'(g) - xhat_c * mean_c'(g * xhat))
/// ```
/// the first term the direct path, the second through `mean`, the third through `rstd`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dinp: &mut [f32],
    dw: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
    threads: usize,
) {
    let (n, c) = (mean.len(), w.len());
    assert_eq!(dinp.len(), n * c);
    assert_eq!(dout.len(), n * c);
    assert_eq!(inp.len(), n * c);
    assert_eq!(dw.len(), c);
    assert_eq!(rstd.len(), n);
    if threads <= 1 {
        return backward_rows(dinp, Some(dw), dout, inp, w, mean, rstd);
    }
    // rows in parallel for dinp; dw sums over all rows, so it gets its own serial pass
    let r = rows_per_task(n, threads);
    dinp.par_chunks_mut(r * c)
        .zip(dout.par_chunks(r * c))
        .zip(inp.par_chunks(r * c))
        .zip(mean.par_chunks(r).zip(rstd.par_chunks(r)))
        .for_each(|(((dx, dy), x), (m, s))| backward_rows(dx, None, dy, x, w, m, s));
    for ((dy, x), (&mu, &rs)) in dout
        .chunks_exact(c)
        .zip(inp.chunks_exact(c))
        .zip(mean.iter().zip(rstd))
    {
        for ((g, &d), &xi) in dw.iter_mut().zip(dy).zip(x) {
            *g += d * (xi - mu) * rs;
        }
    }
}

/// Channels handled at a time, so the per-row scratch lives on the stack for any C.
const PIECE: usize = 256;

fn backward_rows(
    dinp: &mut [f32],
    mut dw: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
) {
    let c = w.len();
    let (mut xhat, mut g) = ([0.0f32; PIECE], [0.0f32; PIECE]);
    for ((dx, dy), (x, (&mu, &rs))) in dinp
        .chunks_exact_mut(c)
        .zip(dout.chunks_exact(c))
        .zip(inp.chunks_exact(c).zip(mean.iter().zip(rstd)))
    {
        // pass 1: the two row means of the formula above (and dw, which needs xhat too)
        let (mut g_sum, mut gx_sum) = (0.0f32, 0.0f32);
        for start in (0..c).step_by(PIECE) {
            let len = PIECE.min(c - start);
            let (xh, gp) = (&mut xhat[..len], &mut g[..len]);
            let piece = start..start + len;
            let (xs, ds, ws) = (&x[piece.clone()], &dy[piece.clone()], &w[piece.clone()]);
            // (zipped slices rather than indices: no bounds checks, so the loops vectorise)
            for (((h, gi), &xi), (&d, &wi)) in xh
                .iter_mut()
                .zip(gp.iter_mut())
                .zip(xs)
                .zip(ds.iter().zip(ws))
            {
                *h = (xi - mu) * rs;
                *gi = d * wi; // out = xhat * w  =>  d xhat = dout * w
            }
            if let Some(dw) = dw.as_deref_mut() {
                for ((dwi, &d), &h) in dw[piece].iter_mut().zip(ds).zip(xh.iter()) {
                    *dwi += d * h; // out = xhat * w  =>  dw += dout * xhat
                }
            }
            g_sum += sum(gp);
            gx_sum += dot(gp, xh);
        }
        let (g_mean, gx_mean) = (g_sum / c as f32, gx_sum / c as f32);
        // pass 2: dinp, rebuilding xhat and g (cheaper than keeping a C-float row per row)
        for ((dxi, &xi), (&d, &wi)) in dx.iter_mut().zip(x).zip(dy.iter().zip(w)) {
            let xh = (xi - mu) * rs;
            *dxi += rs * (d * wi - g_mean - xh * gx_mean);
        }
    }
}
