//! Softmax and cross-entropy, fused: the probabilities are never stored.
//!
//! ```text
//!   lse = log sum_v exp(logits_v)       (computed as max + log sum exp(logits_v - max))
//!   loss = lse - logits[target]         = -log softmax(logits)[target]
//!   dloss/dlogits_v = exp(logits_v - lse) - [v == target]   = probs - onehot
//! ```
//! The forward keeps one float per row, `lse`; the backward rebuilds the probabilities from
//! the logits with it. Keeping the logits intact is what lets [`super::Workspace::logits`]
//! hand them out after a forward with targets.

use rayon::prelude::*;

use super::attention::softmax_weight;
use super::math::{exp, max};
use super::rows_per_task;

/// `losses (N)` and `lse (N)` from `logits (N,V)` and `targets (N)`.
pub fn crossentropy_forward(losses: &mut [f32], lse: &mut [f32], logits: &[f32], targets: &[u32]) {
    let n = losses.len();
    assert_eq!(lse.len(), n);
    assert_eq!(targets.len(), n);
    assert_eq!(logits.len() % n.max(1), 0);
    let v = logits.len() / n.max(1);
    for (((loss, l), row), &tgt) in losses
        .iter_mut()
        .zip(lse.iter_mut())
        .zip(logits.chunks_exact(v))
        .zip(targets)
    {
        assert!(
            (tgt as usize) < v,
            "target {tgt} outside the vocabulary of {v}"
        );
        let m = max(row);
        let mut s = 0.0;
        for chunk in row.chunks(16) {
            s += chunk.iter().map(|&x| exp(x - m)).sum::<f32>();
        }
        // libm's ln (one per row, not per logit) makes the loss the same bits on every platform.
        *l = m + libm::logf(s);
        *loss = *l - row[tgt as usize];
    }
}

/// Writes `dlogits (N,V) = scale * (softmax(logits) - onehot(targets))` (one producer, see
/// `linear_backward`).
pub fn crossentropy_backward(
    dlogits: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    lse: &[f32],
    scale: f32,
    threads: usize,
) {
    let n = lse.len();
    assert_eq!(targets.len(), n);
    assert_eq!(logits.len(), dlogits.len());
    assert_eq!(logits.len() % n.max(1), 0);
    let v = logits.len() / n.max(1);
    let kernel = |dl: &mut [f32], lg: &[f32], tg: &[u32], ls: &[f32]| {
        for (((drow, row), &t), &l) in dl
            .chunks_exact_mut(v)
            .zip(lg.chunks_exact(v))
            .zip(tg)
            .zip(ls)
        {
            for (d, &x) in drow.iter_mut().zip(row) {
                // the softmax part: d lse / d logit_v = prob_v (flushed below 4e-18, see attention)
                *d = scale * softmax_weight(x - l);
            }
            drow[t as usize] -= scale; // the -logits[target] part
        }
    };
    if threads <= 1 {
        return kernel(dlogits, logits, targets, lse);
    }
    let r = rows_per_task(n, threads);
    dlogits
        .par_chunks_mut(r * v)
        .zip(logits.par_chunks(r * v))
        .zip(targets.par_chunks(r).zip(lse.par_chunks(r)))
        .for_each(|((dl, lg), (tg, ls))| kernel(dl, lg, tg, ls));
}
