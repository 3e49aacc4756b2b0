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
//! so these loops give the same bits as `gemm` would on the same products.
//!
//! On x86 with AVX2 and FMA the same products run through the kernels of `head/x86.rs`,
//! written with intrinsics, which give the same bits faster; the loops here are what every
//! other machine runs, and what the test at the end of this file holds those kernels to.

use std::cell::RefCell;

use super::super::math::{fma, LANES};

mod views;
pub(super) use views::{live_cols, Rows, Weights};

thread_local! {
    /// z^T for `scores`, padded to whole 16-column blocks; grown once, then reused.
    static ZT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `s (T,T)`: `s[i][j] = scale * x_i . z_j` for `j < live_cols(i)`; the rest of `s` is not
/// written. `x` and `z` have T rows of `hs` floats.
pub(super) fn scores(s: &mut [f32], t: usize, hs: usize, x: Rows, z: Rows, scale: f32) {
    scores_with(s, t, hs, x, z, scale, SIMD);
}

/// Whether this build has the kernels of [`x86`]: it targets AVX2 and FMA (Intel's cores since
/// Haswell, 2013, AMD's since Excavator, 2015; the project builds with `target-cpu=native`).
/// Without them, the portable loops.
const SIMD: bool = cfg!(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
));

/// [`scores`], through the [`x86`] kernels when `simd` and the build has them.
fn scores_with(s: &mut [f32], t: usize, hs: usize, x: Rows, z: Rows, scale: f32, simd: bool) {
    assert_eq!(s.len(), t * t);
    x.check(t, hs);
    z.check(t, hs);
    let tp = t.div_ceil(LANES) * LANES;
    ZT.with_borrow_mut(|zt| {
        if zt.len() < hs * tp {
            zt.resize(hs * tp, 0.0);
        }
        let zt = &mut zt[..hs * tp];
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        ))]
        if simd {
            // SAFETY: x and z hold t rows of hs floats (checked above), zt is (hs, tp) and s
            // is (t,t) (asserted): what `x86::scores` asks.
            unsafe { x86::scores(s, t, hs, x, z, zt, scale) };
            return;
        }
        // (`simd` is read only where the build has the x86 kernels)
        let _ = simd;

        // z^T (hs, tp): row d holds channel d of every key, so a block of 16 keys is 16
        // consecutive floats; the padding columns are zeros
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

/// `out_o = scale * sum over the sources of o of w(src, o) z_src`, for T output rows of `hs`
/// floats, `out_rs` floats apart (see [`Weights`] for the two readings).
///
/// `w` must be zero above the diagonal wherever `scores` computed it (P and dS are), and is
/// read only there: outputs go in pairs (o0 even), and the pair's one entry above the
/// diagonal, w[o0][o0+1], lies in row o0's diagonal block.
pub(super) fn mix(out: &mut [f32], out_rs: usize, w: Weights, z: Rows, hs: usize, scale: f32) {
    mix_with(out, out_rs, w, z, hs, scale, SIMD);
}

/// [`mix`], through the [`x86`] kernels when `simd`, the build has them and 16 divides `hs`.
fn mix_with(
    out: &mut [f32],
    out_rs: usize,
    w: Weights,
    z: Rows,
    hs: usize,
    scale: f32,
    simd: bool,
) {
    let t = w.t;
    assert!(t == 0 || (t - 1) * out_rs + hs <= out.len());
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    if simd && hs % LANES == 0 {
        z.check(t, hs);
        // SAFETY: out holds T rows of hs floats out_rs apart (asserted above), z holds T rows
        // of hs floats (checked), w is (T,T) (asserted by `Weights`).
        unsafe { x86::mix(out, out_rs, w, z, hs, scale) };
        return;
    }
    // (`simd` is read only where the build has the x86 kernels)
    let _ = simd;
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

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod x86;

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Floats in [-1, 1) from a little LCG: enough to tell two kernels apart.
    pub(in crate::model::attention) fn noise(len: usize, seed: u32) -> Vec<f32> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 8) as f32 / (1 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Panics unless `got` is `want` bit for bit, naming the first difference (NaN marks the
    /// floats a kernel must not write, and NaN == NaN here when the bits agree).
    pub(in crate::model::attention) fn assert_same_bits(what: &str, want: &[f32], got: &[f32]) {
        assert_eq!(want.len(), got.len(), "{what}: lengths");
        let differ: Vec<usize> = (0..want.len())
            .filter(|&i| want[i].to_bits() != got[i].to_bits())
            .collect();
        if let Some(&i) = differ.first() {
            panic!(
                "{what}: {} of {} floats differ; the first at {i}: {} wanted, {} got",
                differ.len(),
                want.len(),
                want[i],
                got[i]
            );
        }
    }

    /// The kernels this build runs (the [`x86`] ones on x86 with AVX2 + FMA) give the same
    /// bits as the portable loops, on strided views as attention passes them: head widths
    /// with and without a fast path (12 leaves 4 channels past the transpose's 8x8 blocks,
    /// 8 and 12 take the portable `mix`), and T inside, at and past a 16-column block.
    #[test]
    fn fast_kernels_give_the_portable_bits() {
        for (t, hs) in [
            (5, 16),
            (21, 32),
            (35, 16),
            (64, 32),
            (64, 64),
            (33, 8),
            (21, 12),
        ] {
            // rows further apart than they are wide: the kernels allow it, and a stride equal
            // to the width would hide a row index used as a column index
            let rs = 3 * hs + 5;
            let (x, z) = (noise(t * rs, 1), noise(t * rs, 2));
            let (x, z) = (Rows::new(&x, rs), Rows::new(&z, rs));
            let run_scores = |simd| {
                let mut s = vec![f32::NAN; t * t];
                scores_with(&mut s, t, hs, x, z, 0.3, simd);
                s
            };
            let (want, got) = (run_scores(false), run_scores(true));
            for i in 0..t {
                let live = live_cols(i, t);
                let (w, g) = (&want[i * t..][..live], &got[i * t..][..live]);
                assert_same_bits(&format!("scores, t {t}, hs {hs}, row {i}"), w, g);
            }
            // weights that are zero above the diagonal, like P and dS
            let mut w = noise(t * t, 3);
            for i in 0..t {
                w[i * t + i + 1..(i + 1) * t].fill(0.0);
            }
            for weights in [Weights::rows(&w, t), Weights::cols(&w, t)] {
                let run_mix = |simd| {
                    let mut out = vec![f32::NAN; t * rs];
                    mix_with(&mut out, rs, weights, z, hs, 0.7, simd);
                    out
                };
                let (want, got) = (run_mix(false), run_mix(true));
                let reading = if weights.transposed { "cols" } else { "rows" };
                assert_same_bits(&format!("mix ({reading}), t {t}, hs {hs}"), &want, &got);
            }
        }
    }
}
