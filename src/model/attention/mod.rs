//! Causal multi-head self-attention (the part between `c_attn` and `attn.c_proj`).
//!
//! `qkv (B*T,3C)` holds, for each token, its query, key and value, each C = H*hs channels
//! split into H heads. For one sequence and one head (T rows, hs columns, row stride 3C):
//! ```text
//!   S = Q K^T / sqrt(hs)           (T,T) how much query i attends to key j
//!   P = softmax over j <= i        the causal mask: token i never sees the future
//!   Y = P V                        (T,hs) written into head h's columns of out (B*T,C)
//!
//!         key j ->                  P (T,T), T = 5
//!   query i   [ p . . . . ]         row i is a softmax over keys 0..=i;
//!      |      [ p p . . . ]         '.' entries are exactly 0, so Y = P V needs
//!      v      [ p p p . . ]         no mask of its own
//!             [ p p p p . ]
//!             [ p p p p p ]
//! ```
//! Q, K and V are read straight out of `qkv`, and Y is written straight into head h's columns
//! of `out`. The products are the loops of `head.rs`, which stop at the diagonal instead of
//! computing the whole square as a general matrix product would: at T=64 attention runs
//! about 10% (forward) and 30% (backward) faster than with the same products through
//! `gemm`, and gives the same bits. `att (B,H,T,T)` keeps P for the backward.

use rayon::prelude::*;

use super::math::{dot, exp, hmax, hsum, max, LANES};

mod head;
use head::{live_cols, mix, scores, Rows, Weights};

/// The shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// B: sequences.
    pub b: usize,
    /// T: positions per sequence.
    pub t: usize,
    /// C: channels of q (and of k, of v).
    pub c: usize,
    /// H: heads, each of C/H channels.
    pub n_head: usize,
}

impl AttnShape {
    fn check(&self, qkv: &[f32], att: &[f32], out: &[f32]) {
        let AttnShape { b, t, c, n_head } = *self;
        assert_eq!(c % n_head, 0, "heads must divide channels");
        assert_eq!(qkv.len(), b * t * 3 * c);
        assert_eq!(att.len(), b * n_head * t * t);
        assert_eq!(out.len(), b * t * c);
    }
}

/// `out (B*T,C)` and the probabilities `att (B,H,T,T)` from `qkv (B*T,3C)`.
pub fn attention_forward(
    out: &mut [f32],
    att: &mut [f32],
    qkv: &[f32],
    s: AttnShape,
    threads: usize,
) {
    s.check(qkv, att, out);
    let (t, c, h) = (s.t, s.c, s.n_head);
    let seqs = out
        .chunks_mut(t * c)
        .zip(att.chunks_mut(h * t * t))
        .zip(qkv.chunks(t * 3 * c));
    if threads <= 1 {
        seqs.for_each(|((o, a), x)| forward_seq(o, a, x, s));
    } else {
        out.par_chunks_mut(t * c)
            .zip(att.par_chunks_mut(h * t * t))
            .zip(qkv.par_chunks(t * 3 * c))
            .for_each(|((o, a), x)| forward_seq(o, a, x, s));
    }
}

fn forward_seq(out: &mut [f32], att: &mut [f32], qkv: &[f32], s: AttnShape) {
    let (t, c) = (s.t, s.c);
    let hs = c / s.n_head;
    let scale = 1.0 / (hs as f32).sqrt();
    for (h, p) in att.chunks_exact_mut(t * t).enumerate() {
        let q = Rows::new(&qkv[h * hs..], 3 * c);
        let k = Rows::new(&qkv[c + h * hs..], 3 * c);
        let v = Rows::new(&qkv[2 * c + h * hs..], 3 * c);
        // S = scale * Q @ K^T  (T,T), up to each row's diagonal block
        scores(p, t, hs, q, k, scale);
        // P = causal softmax of S, row by row, in place (zeros past the diagonal)
        for (i, row) in p.chunks_exact_mut(t).enumerate() {
            causal_softmax_row(row, i);
        }
        // Y = P @ V  (T,hs) into head h's columns of out
        mix(&mut out[h * hs..], c, Weights::rows(p, t), v, hs, 1.0);
    }
}

/// Row `i` of the causal softmax, in place: scores `row[..=i]` become probabilities that sum
/// to 1, and the future `row[i+1..]` becomes exactly 0.
///
/// The row is taken in whole blocks of 16 floats (one AVX-512 register, two AVX2 ones), so
/// the compiler emits vector code with no scalar tail loop. The block holding the diagonal
/// is masked past it with -inf, which the max ignores and exp turns into 0:
/// ```text
///   row i = 20:  [ 16 live ][ 5 live | -inf x 11 ][ 0 ... ]   max, exp + sum, scale
/// ```
/// When T is not a multiple of 16 that block can run past the row's end; there it is a
/// padded copy.
fn causal_softmax_row(row: &mut [f32], i: usize) {
    let start = i / LANES * LANES; // the block holding the diagonal
    let live = i + 1 - start;
    let (body, rest) = row.split_at_mut(start);
    if rest.len() >= LANES {
        let (last, future) = rest.split_at_mut(LANES);
        softmax_blocks(body, last.try_into().unwrap(), live);
        future.fill(0.0);
    } else {
        let mut last = [0.0; LANES];
        last[..rest.len()].copy_from_slice(rest);
        softmax_blocks(body, &mut last, live);
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// Softmax over the whole blocks of `body` and the first `live` lanes of `last`, in place;
/// the other lanes of `last` come out 0.
fn softmax_blocks(body: &mut [f32], last: &mut [f32; LANES], live: usize) {
    for (l, x) in last.iter_mut().enumerate() {
        if l >= live {
            *x = f32::NEG_INFINITY;
        }
    }
    let m = max(body).max(hmax(*last));

    let mut total = [0.0f32; LANES];
    let mut weigh = |b: &mut [f32; LANES]| {
        for l in 0..LANES {
            b[l] = softmax_weight(b[l] - m);
            total[l] += b[l];
        }
    };
    for b in body.chunks_exact_mut(LANES) {
        weigh(b.try_into().unwrap());
    }
    weigh(last);
    let inv = 1.0 / hsum(total);
    body.iter_mut()
        .chain(last.iter_mut())
        .for_each(|x| *x *= inv);
}

/// exp(d) for d = score - row max <= 0, flushed to exactly 0 below e^-40 (4e-18).
///
/// Such a weight is invisible next to the row's largest (1) in f32 anyway (eps 6e-8); kept,
/// it would breed subnormal numbers in the products that follow, and on x86 every
/// arithmetic operation on a subnormal costs about a hundred cycles.
#[inline(always)]
pub(crate) fn softmax_weight(d: f32) -> f32 {
    if d < -40.0 {
        0.0
    } else {
        exp(d)
    }
}

/// Writes `dqkv (B*T,3C)` from `dout (B*T,C)`; `datt (B,H,T,T)` is scratch.
///
/// Each of dQ, dK, dV of each head comes out of exactly one product, so they are written,
/// not accumulated (no zeroing needed; see `linear_backward`).
pub fn attention_backward(
    dqkv: &mut [f32],
    datt: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    att: &[f32],
    s: AttnShape,
    threads: usize,
) {
    s.check(qkv, att, dout);
    s.check(dqkv, datt, dout);
    let (t, c, h) = (s.t, s.c, s.n_head);
    if threads <= 1 {
        dqkv.chunks_mut(t * 3 * c)
            .zip(datt.chunks_mut(h * t * t))
            .zip(dout.chunks(t * c))
            .zip(qkv.chunks(t * 3 * c).zip(att.chunks(h * t * t)))
            .for_each(|(((dx, da), dy), (x, a))| backward_seq(dx, da, dy, x, a, s));
    } else {
        dqkv.par_chunks_mut(t * 3 * c)
            .zip(datt.par_chunks_mut(h * t * t))
            .zip(dout.par_chunks(t * c))
            .zip(qkv.par_chunks(t * 3 * c).zip(att.par_chunks(h * t * t)))
            .for_each(|(((dx, da), dy), (x, a))| backward_seq(dx, da, dy, x, a, s));
    }
}

fn backward_seq(
    dqkv: &mut [f32],
    datt: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    att: &[f32],
    s: AttnShape,
) {
    let (t, c) = (s.t, s.c);
    let hs = c / s.n_head;
    let scale = 1.0 / (hs as f32).sqrt();
    for (h, (dp, p)) in datt
        .chunks_exact_mut(t * t)
        .zip(att.chunks_exact(t * t))
        .enumerate()
    {
        let q = Rows::new(&qkv[h * hs..], 3 * c);
        let k = Rows::new(&qkv[c + h * hs..], 3 * c);
        let v = Rows::new(&qkv[2 * c + h * hs..], 3 * c);
        let dy = Rows::new(&dout[h * hs..], c);
        // forward: Y = P @ V  =>  dP = dY @ V^T   (T,T), up to each row's diagonal block
        scores(dp, t, hs, dy, v, 1.0);
        // forward: Y = P @ V  =>  dV = P^T @ dY  (T,hs)
        mix(
            &mut dqkv[2 * c + h * hs..],
            3 * c,
            Weights::cols(p, t),
            dy,
            hs,
            1.0,
        );
        // forward: P_i = softmax(S_i)  =>  dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik).
        // Masked entries have P_ij = 0, so they get dS_ij = 0 and add nothing to the sum;
        // past the diagonal block neither dP nor dS is computed or read.
        for (i, (drow, prow)) in dp.chunks_exact_mut(t).zip(p.chunks_exact(t)).enumerate() {
            let live = live_cols(i, t);
            let (drow, prow) = (&mut drow[..live], &prow[..live]);
            let pdp = dot(prow, drow);
            for (d, &pij) in drow.iter_mut().zip(prow) {
                *d = pij * (*d - pdp);
            }
        }
        // forward: S = scale * Q @ K^T  =>  dQ = scale * dS @ K,  dK = scale * dS^T @ Q
        let ds = &*dp;
        mix(
            &mut dqkv[h * hs..],
            3 * c,
            Weights::rows(ds, t),
            k,
            hs,
            scale,
        );
        mix(
            &mut dqkv[c + h * hs..],
            3 * c,
            Weights::cols(ds, t),
            q,
            hs,
            scale,
        );
    }
}
