//! The causal products of one head of one sequence, computed only where the mask lets
//! anything through.
//!
//! Attention's four kinds of product all involve a (T,T) matrix that is zero above the
//! diagonal (P, and dS = P * (...)). A general matrix product (`gemm`) computes the whole
//! square, and packs its operands on every call; these loops stop at the diagonal, which
//! skips ~40% of the work at T=64, and read Q, K, V and dY where they lie. The one copy is
//! z^T for `scores` (8 KB at T=64, hs=32), so that 16 keys sit side by side in a vector:
//! ```text
//!   scores:  S[i][j] = scale * x_i . z_j        S = scale Q K^T,  dP = dY V^T
//!            16 columns at a time, rows in fours, column blocks up to the diagonal's:
//!              j -> [####][    ][    ][    ]    rows 0..15
//!                   [####][####][    ][    ]    rows 16..31      # computed
//!                   [####][####][####][    ]    rows 32..47        (the part of a '#'
//!                   [####][####][####][####]    rows 48..63         block past the diagonal
//!                                                                   is masked later)
//!   mix:     out_i = scale * sum_{j<=i} w[i][j] z_j      Y = P V,  dQ = scale dS K
//!   mix^T:   out_j = scale * sum_{i>=j} w[i][j] z_i      dV = P^T dY,  dK = scale dS^T Q
//! ```
//! Each output element is a sum of fused multiply-adds in a fixed order (d = 0.. for scores,
//! j or i ascending for mix), scaled at the end, whatever B is: a sequence's result does not
//! depend on its neighbours in the batch. That is also the order `gemm`'s microkernels use,
//! and the model's results did not change by a bit when these loops replaced it.

use std::cell::RefCell;

use super::super::math::{fma, LANES};

/// The rows of a matrix inside `data`, row r starting at `data[r*rs]`: one head's q, k or v
/// inside `qkv` (rs = 3C), or its columns of `dout` (rs = C). The width is the caller's.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rows<'a> {
    data: &'a [f32],
    rs: usize,
}

impl<'a> Rows<'a> {
    /// Rows `rs` floats apart, starting at `data[0]`.
    pub fn new(data: &'a [f32], rs: usize) -> Self {
        Rows { data, rs }
    }

    #[inline(always)]
    fn row(&self, r: usize, width: usize) -> &'a [f32] {
        &self.data[r * self.rs..r * self.rs + width]
    }
}

/// The first column past row i's diagonal block: scores are computed in 16-wide blocks up
/// to and including the block that holds column i.
#[inline(always)]
pub(super) fn live_cols(i: usize, t: usize) -> usize {
    ((i / LANES + 1) * LANES).min(t)
}

thread_local! {
    /// z^T for `scores`, padded to whole 16-column blocks; grown once, then reused.
    static ZT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `s (T,T)`: `s[i][j] = scale * x_i . z_j` for `j < live_cols(i)`; the rest of `s` is not
/// written. `x` and `z` have T rows of `hs` floats.
pub(super) fn scores(s: &mut [f32], t: usize, hs: usize, x: Rows, z: Rows, scale: f32) {
    assert_eq!(s.len(), t * t);
    let tp = t.div_ceil(LANES) * LANES;
    ZT.with_borrow_mut(|zt| {
        // z^T (hs, tp): row d holds channel d of every key, so a block of 16 keys is 16
        // consecutive floats; the padding columns are zeros
        if zt.len() < hs * tp {
            zt.resize(hs * tp, 0.0);
        }
        let zt = &mut zt[..hs * tp];
        for (d, zd) in zt.chunks_exact_mut(tp).enumerate() {
            let (keys, pad) = zd.split_at_mut(t);
            for (j, v) in keys.iter_mut().enumerate() {
                *v = z.data[j * z.rs + d];
            }
            pad.fill(0.0);
        }
        let mut i0 = 0;
        while i0 < t {
            if t - i0 >= 4 {
                score_rows::<4>(s, t, hs, x, zt, i0, scale);
                i0 += 4;
            } else {
                score_rows::<1>(s, t, hs, x, zt, i0, scale);
                i0 += 1;
            }
        }
    });
}

/// Rows `i0..i0+R` of `scores`, 16 columns at a time: R x 16 running sums in registers
/// (8 AVX2 registers at R = 4), one pass over the channels per column block.
#[inline(always)]
fn score_rows<const R: usize>(
    s: &mut [f32],
    t: usize,
    hs: usize,
    x: Rows,
    zt: &[f32],
    i0: usize,
    scale: f32,
) {
    let tp = zt.len() / hs;
    let xs: [&[f32]; R] = std::array::from_fn(|r| x.row(i0 + r, hs));
    // rows i0..i0+R share their diagonal block when R divides 16
    let end = live_cols(i0 + R - 1, t);
    for jb in (0..end).step_by(LANES) {
        let mut acc = [[0.0f32; LANES]; R];
        for d in 0..hs {
            let zd: &[f32; LANES] = zt[d * tp + jb..][..LANES].try_into().unwrap();
            for (a, xr) in acc.iter_mut().zip(&xs) {
                let xd = xr[d];
                for l in 0..LANES {
                    a[l] = fma(xd, zd[l], a[l]);
                }
            }
        }
        let cols = LANES.min(t - jb);
        for (r, a) in acc.iter().enumerate() {
            let out = &mut s[(i0 + r) * t + jb..][..cols];
            for (o, &v) in out.iter_mut().zip(a) {
                *o = v * scale;
            }
        }
    }
}

/// The (T,T) weights of a `mix`, read one way or the other.
#[derive(Clone, Copy, Debug)]
pub(super) struct Weights<'a> {
    w: &'a [f32],
    t: usize,
    transposed: bool,
}

impl<'a> Weights<'a> {
    /// `out_i = sum_{j<=i} w[i][j] z_j`: Y = P V, dQ = dS K.
    pub fn rows(w: &'a [f32], t: usize) -> Self {
        assert_eq!(w.len(), t * t);
        Weights {
            w,
            t,
            transposed: false,
        }
    }

    /// `out_j = sum_{i>=j} w[i][j] z_i`: dV = P^T dY, dK = dS^T Q.
    pub fn cols(w: &'a [f32], t: usize) -> Self {
        Weights {
            transposed: true,
            ..Weights::rows(w, t)
        }
    }

    /// The rows of z that feed outputs `o0..o0+n`, in summation order.
    #[inline(always)]
    fn sources(&self, o0: usize, n: usize) -> std::ops::Range<usize> {
        if self.transposed {
            o0..self.t
        } else {
            0..o0 + n
        }
    }

    /// The weight of row `src` of z in output `o`.
    #[inline(always)]
    fn at(&self, src: usize, o: usize) -> f32 {
        if self.transposed {
            self.w[src * self.t + o]
        } else {
            self.w[o * self.t + src]
        }
    }
}

/// `out_o = scale * sum over the sources of o of w(src, o) z_src`, for T output rows of `hs`
/// floats, `out_rs` floats apart (see [`Weights`] for the two readings).
///
/// `w` must be zero above the diagonal wherever `scores` computed it (P and dS are), and is
/// read only there: outputs go in pairs (o0 even), and the pair's one entry above the
/// diagonal, w[o0][o0+1], lies in row o0's diagonal block.
pub(super) fn mix(out: &mut [f32], out_rs: usize, w: Weights, z: Rows, hs: usize, scale: f32) {
    let t = w.t;
    assert!(t == 0 || (t - 1) * out_rs + hs <= out.len());
    match hs {
        16 => mix_pairs::<16>(out, out_rs, w, z, scale),
        32 => mix_pairs::<32>(out, out_rs, w, z, scale),
        64 => mix_pairs::<64>(out, out_rs, w, z, scale),
        _ => mix_any(out, out_rs, w, z, hs, scale),
    }
}

/// `mix` for a head width known at compile time, two output rows at a time.
fn mix_pairs<const HS: usize>(out: &mut [f32], out_rs: usize, w: Weights, z: Rows, scale: f32) {
    let mut o0 = 0;
    while o0 + 2 <= w.t {
        mix_rows::<HS, 2>(out, out_rs, w, z, o0, scale);
        o0 += 2;
    }
    if o0 < w.t {
        mix_rows::<HS, 1>(out, out_rs, w, z, o0, scale);
    }
}

/// Output rows `o0..o0+N` of `mix`: N x HS running sums in registers (8 AVX2 registers at
/// N = 2, HS = 32), each weight broadcast onto a row of z.
#[inline(always)]
fn mix_rows<const HS: usize, const N: usize>(
    out: &mut [f32],
    out_rs: usize,
    w: Weights,
    z: Rows,
    o0: usize,
    scale: f32,
) {
    let mut acc = [[0.0f32; HS]; N];
    for src in w.sources(o0, N) {
        let zr: &[f32; HS] = z.row(src, HS).try_into().unwrap();
        for (r, a) in acc.iter_mut().enumerate() {
            let wt = w.at(src, o0 + r);
            for d in 0..HS {
                a[d] = fma(wt, zr[d], a[d]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        let dst = &mut out[(o0 + r) * out_rs..][..HS];
        for (o, &v) in dst.iter_mut().zip(a) {
            *o = v * scale;
        }
    }
}

/// `mix` for any head width: one output row at a time, summed in place in `out`.
fn mix_any(out: &mut [f32], out_rs: usize, w: Weights, z: Rows, hs: usize, scale: f32) {
    for o in 0..w.t {
        let dst = &mut out[o * out_rs..][..hs];
        dst.fill(0.0);
        for src in w.sources(o, 1) {
            let wt = w.at(src, o);
            for (a, &zv) in dst.iter_mut().zip(z.row(src, hs)) {
                *a = fma(wt, zv, *a);
            }
        }
        dst.iter_mut().for_each(|a| *a *= scale);
    }
}
