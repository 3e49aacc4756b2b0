//! Causal multi-head self-attention (the part between `c_attn` and `attn.c_proj`).
//!
//! For each token, `c_attn` makes a query, a key and a value, each C = H*hs channels split
//! into H heads. For one sequence and one head (T rows of hs channels):
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
//! The products are the loops of `head.rs`, which stop at the diagonal instead of computing
//! the whole square as a general matrix product would: at T=64 attention runs about 1.1x
//! (forward) and 1.4x (backward) as fast as with the same products through `gemm`, and
//! gives the same bits (`cargo bench --bench kernels -- attention` times it). `att (B,H,T,T)`
//! keeps P for the backward.
//!
//! # Where q, k and v lie: head-major
//!
//! [`qkv_forward`] writes them **head-major**: each head's queries (keys, values) are one
//! (N, hs) block, so one sequence's are T rows of hs floats side by side in memory.
//! ```text
//!   qkv (3,H,N,hs):  [ q0 | q1 | ... | q(H-1) | k0 | ... | k(H-1) | v0 | ... | v(H-1) ]
//!                      each block (N,hs), N = B*T; sequence b: its rows b*T .. (b+1)*T
//!
//!   the plain product ln1 @ c_attn^T would give (N,3C): token n's q|k|v in one row of 3C,
//!   a head's T rows 3C floats (1.5 KB) apart
//! ```
//! The loops read a head's rows over and over; 1.5 KB apart, each row sits on cache lines
//! of its own and only two or three rows share a 4 KB page, across which the hardware
//! prefetchers do not run. Head-major, a head of one sequence is 8 KB in one piece. It
//! costs nothing to make: `c_attn` runs as 3H products of hs output features each, one per
//! block, which at the default head size give the same bits as the single product (a unit
//! test holds them to it) and are no slower: with their input in cache they take the same
//! time as one product (`cargo bench --bench kernels -- forward_c_attn`), and with it in
//! memory they are faster, since each writes one compact block. Over a whole training step
//! the layout saves about 3% at B=12, measured by interleaving the two layouts step by step
//! in one process (the method is in docs/performance.md).
//!
//! The backward reads dY, the gradient of its output, head-major too: `attn.c_proj`'s
//! input-gradient product runs as H products, one per head ([`proj_backward_heads`]), which
//! saves about 1% more of a step. The same bits again. The gradient `dqkv` and the output Y
//! stay (N,3C) and (N,C), the layouts the products that read them want (splitting those
//! would change the order of their sums): each buffer is laid out for the code that reads
//! it most.

use rayon::prelude::*;

use super::linear::linear_forward;
use super::math::{dot, exp, hmax, hsum, max, LANES};
use super::matmul::{matmul, Mat, MatMut, Out};

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

    /// hs: channels per head.
    fn head_size(&self) -> usize {
        self.c / self.n_head
    }

    /// Sequence `seq`'s T rows in block `block` of a head-major buffer, whose blocks are
    /// (N,hs) one after another.
    fn block_rows<'a>(&self, buf: &'a [f32], block: usize, seq: usize) -> Rows<'a> {
        let (hs, n) = (self.head_size(), self.b * self.t);
        let at = (block * n + seq * self.t) * hs;
        Rows::new(&buf[at..at + self.t * hs], hs)
    }

    /// Sequence `seq`'s query, key and value rows of head `h` inside head-major `qkv`.
    fn head<'a>(&self, qkv: &'a [f32], seq: usize, h: usize) -> [Rows<'a>; 3] {
        std::array::from_fn(|part| self.block_rows(qkv, part * self.n_head + h, seq))
    }
}

/// `qkv (3,H,N,hs)` = `inp (N,D) @ w (3C,D)^T`, head-major (see the module docs): the
/// `c_attn` projection as 3H products, one per block of hs output features.
///
/// The input width D is the model's C; under tensor parallelism a worker's `s` holds only
/// its H/TP heads (C/TP channels) while its input is still the whole (N,C) stream.
pub fn qkv_forward(qkv: &mut [f32], inp: &[f32], w: &[f32], s: AttnShape, threads: usize) {
    let (n, c, hs) = (s.b * s.t, s.c, s.head_size());
    let d = inp.len() / n;
    assert_eq!(inp.len(), n * d);
    assert_eq!(w.len(), 3 * c * d);
    assert_eq!(qkv.len(), n * 3 * c);
    // block j holds output features j*hs .. (j+1)*hs: the rows of w with those indices
    let product = |(j, block): (usize, &mut [f32])| {
        linear_forward(block, inp, &w[j * hs * d..][..hs * d], n, Out::Set, 1);
    };
    for_each_block(qkv, n * hs, threads, product);
}

/// `dy (H,N,hs)` = `dx (N,D) @ w (D,C)`, head-major: the input gradient of `attn.c_proj`
/// (whose forward is `x += y @ w^T`), as H products of hs features, one per head, in the
/// layout [`attention_backward`] reads.
///
/// D is the model's C; under tensor parallelism `s` holds a worker's H/TP heads, and `w`
/// its C/TP columns of `attn.c_proj`.
pub fn proj_backward_heads(dy: &mut [f32], dx: &[f32], w: &[f32], s: AttnShape, threads: usize) {
    let (n, c, hs) = (s.b * s.t, s.c, s.head_size());
    let d = dx.len() / n;
    assert_eq!(dy.len(), n * c);
    assert_eq!(dx.len(), n * d);
    assert_eq!(w.len(), d * c);
    // block h: columns h*hs .. (h+1)*hs of w, rows c apart
    let product = |(h, block): (usize, &mut [f32])| {
        let w_h = Mat::new(&w[h * hs..], d, hs, c);
        matmul(
            MatMut::dense(block, n, hs),
            Mat::dense(dx, n, d),
            w_h,
            Out::Set,
            1.0,
            1,
        );
    };
    for_each_block(dy, n * hs, threads, product);
}

/// Runs `f` on each `(index, block)` of `buf`'s blocks of `len` floats: in turn on one
/// thread, side by side on more (each product then single-threaded, which the small ones
/// suit better than splitting each).
fn for_each_block<F>(buf: &mut [f32], len: usize, threads: usize, f: F)
where
    F: Fn((usize, &mut [f32])) + Send + Sync,
{
    if threads <= 1 {
        buf.chunks_exact_mut(len).enumerate().for_each(f);
    } else {
        buf.par_chunks_exact_mut(len).enumerate().for_each(f);
    }
}

/// The head-major layout of `rows`, (N,3C) or (N,C) in the plain products' layout: what
/// [`qkv_forward`] and [`proj_backward_heads`] write, for tests and benchmarks that start
/// from the plain layout.
pub fn heads_from_rows(rows: &[f32], s: AttnShape) -> Vec<f32> {
    let (n, c, hs) = (s.b * s.t, s.c, s.head_size());
    let width = rows.len() / n;
    assert!(
        rows.len() == n * width && width % c == 0,
        "rows must be (N,C) or (N,3C)"
    );
    let mut heads = vec![0.0; rows.len()];
    for (j, block) in heads.chunks_exact_mut(n * hs).enumerate() {
        for (i, row) in block.chunks_exact_mut(hs).enumerate() {
            row.copy_from_slice(&rows[i * width + j * hs..][..hs]);
        }
    }
    heads
}

/// `out (B*T,C)` and the probabilities `att (B,H,T,T)` from head-major `qkv (3,H,B*T,hs)`.
pub fn attention_forward(
    out: &mut [f32],
    att: &mut [f32],
    qkv: &[f32],
    s: AttnShape,
    threads: usize,
) {
    s.check(qkv, att, out);
    let (t, c, h) = (s.t, s.c, s.n_head);
    let seqs = out.chunks_mut(t * c).zip(att.chunks_mut(h * t * t));
    if threads <= 1 {
        seqs.enumerate()
            .for_each(|(seq, (o, a))| forward_seq(o, a, qkv, seq, s));
    } else {
        out.par_chunks_mut(t * c)
            .zip(att.par_chunks_mut(h * t * t))
            .enumerate()
            .for_each(|(seq, (o, a))| forward_seq(o, a, qkv, seq, s));
    }
}

/// Sequence `seq`: its rows of `out` and its (H,T,T) of `att`.
fn forward_seq(out: &mut [f32], att: &mut [f32], qkv: &[f32], seq: usize, s: AttnShape) {
    let (t, c, hs) = (s.t, s.c, s.head_size());
    let scale = 1.0 / (hs as f32).sqrt();
    for (h, p) in att.chunks_exact_mut(t * t).enumerate() {
        let [q, k, v] = s.head(qkv, seq, h);
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

/// Writes `dqkv (B*T,3C)` (token n's dq|dk|dv in row n) from head-major `dout (H,B*T,hs)`
/// (as [`proj_backward_heads`] writes it), given the forward's head-major
/// `qkv (3,H,B*T,hs)` and `att`; `datt (B,H,T,T)` is scratch.
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
    let seq = |(i, ((dx, da), a))| backward_seq(dx, da, dout, qkv, a, i, s);
    if threads <= 1 {
        dqkv.chunks_mut(t * 3 * c)
            .zip(datt.chunks_mut(h * t * t))
            .zip(att.chunks(h * t * t))
            .enumerate()
            .for_each(seq);
    } else {
        dqkv.par_chunks_mut(t * 3 * c)
            .zip(datt.par_chunks_mut(h * t * t))
            .zip(att.par_chunks(h * t * t))
            .enumerate()
            .for_each(seq);
    }
}

/// Sequence `seq`: its rows of `dqkv` and `dout`, its (H,T,T) of `datt` and `att`.
fn backward_seq(
    dqkv: &mut [f32],
    datt: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    att: &[f32],
    seq: usize,
    s: AttnShape,
) {
    let (t, c, hs) = (s.t, s.c, s.head_size());
    let scale = 1.0 / (hs as f32).sqrt();
    for (h, (dp, p)) in datt
        .chunks_exact_mut(t * t)
        .zip(att.chunks_exact(t * t))
        .enumerate()
    {
        let [q, k, v] = s.head(qkv, seq, h);
        let dy = s.block_rows(dout, h, seq);
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

#[cfg(test)]
mod tests {
    use super::head::tests::{assert_same_bits as same_bits, noise};
    use super::*;
    use crate::model::linear::linear_backward;

    /// The default's head size (hs = 32) with fewer sequences.
    const SHAPE: AttnShape = AttnShape {
        b: 2,
        t: 16,
        c: 128,
        n_head: 4,
    };

    /// `qkv_forward`'s 3H products give, float for float, the single product of the plain
    /// layout re-laid out, at the default head size: each output is the same dot product,
    /// summed in the same order, so the model's `param_hash`es did not change. (With heads
    /// of 8 floats or fewer, `gemm` takes other kernels for such narrow products, and the
    /// last bits can differ.)
    #[test]
    fn qkv_forward_is_the_plain_product_head_major() {
        let (s, n) = (SHAPE, SHAPE.b * SHAPE.t);
        let (inp, w) = (noise(n * s.c, 1), noise(3 * s.c * s.c, 2));
        let mut rows = vec![0.0; n * 3 * s.c];
        linear_forward(&mut rows, &inp, &w, n, Out::Set, 1);
        let want = heads_from_rows(&rows, s);
        for threads in [1, 2] {
            let mut got = vec![f32::NAN; want.len()];
            qkv_forward(&mut got, &inp, &w, s, threads);
            same_bits(&format!("qkv_forward, threads {threads}"), &want, &got);
        }
    }

    /// Likewise `proj_backward_heads` against `linear_backward`'s input gradient.
    #[test]
    fn proj_backward_heads_is_the_plain_product_head_major() {
        let (s, n) = (SHAPE, SHAPE.b * SHAPE.t);
        let (dx, w, x) = (noise(n * s.c, 3), noise(s.c * s.c, 4), noise(n * s.c, 5));
        let (mut rows, mut dw) = (vec![0.0; n * s.c], vec![0.0; s.c * s.c]);
        linear_backward(&mut rows, &mut dw, &dx, &x, &w, n, Out::Set, 1);
        let want = heads_from_rows(&rows, s);
        for threads in [1, 2] {
            let mut got = vec![f32::NAN; want.len()];
            proj_backward_heads(&mut got, &dx, &w, s, threads);
            same_bits(
                &format!("proj_backward_heads, threads {threads}"),
                &want,
                &got,
            );
        }
    }
}
