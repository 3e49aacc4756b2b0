//! The products of `head.rs` with AVX2 + FMA intrinsics: a tile of 4 output rows x 16
//! columns in eight registers, each weight broadcast once onto the two registers of its
//! source row; and z^T for `scores` built in 8x8 blocks in registers, where the portable loop
//! gathers one float at a time. Every output is the same chain of fused multiply-adds, in the
//! same order, as in the portable loops, so the results are the same bits (tested in
//! `head.rs`); the loops the compiler makes of the portable code carry bounds checks and a
//! branch on the reading of `w` in the innermost loop.
//!
//! At the default size (B=12, T=64, C=128, 4 heads) these kernels run one layer's attention
//! about 1.3x (forward) and 1.4x (backward) as fast as the portable loops; interleaved with
//! them in one process, they take 13% less time with the inputs in cache and 7% less with
//! them in memory. `cargo bench --bench kernels -- attention` times attention with them.
//!
//! Rows go in fours, which divide the 16-column blocks of `scores`, so a tile never reads a
//! weight past its rows' diagonal block (see [`Weights`]).

use std::arch::x86_64::*;
use std::ops::Range;

use super::views::{live_cols, Rows, Weights};
use crate::model::math::LANES;

/// A tile of `R` x 16 outputs, `out` rows `out_rs` apart:
/// `out[r][c] = scale * sum over src in srcs of w[src*ss + r*os] * z[src*z_rs + c]`.
///
/// # Safety
/// Every index named above, for r < R, c < 16 and src in `srcs`, lies inside the
/// allocation its pointer points into.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    out: *mut f32,
    out_rs: usize,
    w: *const f32,
    (ss, os): (usize, usize),
    z: *const f32,
    z_rs: usize,
    srcs: Range<usize>,
    scale: f32,
) {
    // SAFETY: the intrinsics need AVX2 and FMA, which this module is compiled only with
    // (its `cfg` in head.rs); every pointer offset below is one of the indices named in
    // the `# Safety` contract, which the caller guarantees lie inside their allocations.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for src in srcs {
            let zp = z.add(src * z_rs);
            let (z0, z1) = (_mm256_loadu_ps(zp), _mm256_loadu_ps(zp.add(8)));
            let wp = w.add(src * ss);
            for (r, a) in acc.iter_mut().enumerate() {
                let b = _mm256_broadcast_ss(&*wp.add(r * os));
                a[0] = _mm256_fmadd_ps(b, z0, a[0]);
                a[1] = _mm256_fmadd_ps(b, z1, a[1]);
            }
        }
        let scale = _mm256_set1_ps(scale);
        for (r, a) in acc.iter().enumerate() {
            let o = out.add(r * out_rs);
            _mm256_storeu_ps(o, _mm256_mul_ps(a[0], scale));
            _mm256_storeu_ps(o.add(8), _mm256_mul_ps(a[1], scale));
        }
    }
}

/// [`tile`] for `rows` (1 to 4) rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_rows(
    rows: usize,
    out: *mut f32,
    out_rs: usize,
    w: *const f32,
    strides: (usize, usize),
    z: *const f32,
    z_rs: usize,
    srcs: Range<usize>,
    scale: f32,
) {
    // SAFETY: `tile`'s contract is this function's, passed on unchanged.
    unsafe {
        match rows {
            4 => tile::<4>(out, out_rs, w, strides, z, z_rs, srcs, scale),
            3 => tile::<3>(out, out_rs, w, strides, z, z_rs, srcs, scale),
            2 => tile::<2>(out, out_rs, w, strides, z, z_rs, srcs, scale),
            _ => tile::<1>(out, out_rs, w, strides, z, z_rs, srcs, scale),
        }
    }
}

/// `zt (hs, tp)` = the transpose of z's T rows of `hs` floats, zero past column T: 8x8
/// blocks go through eight registers (eight loads, 24 shuffles, eight stores), where the
/// plain loop does 64 scalar loads and stores.
///
/// # Safety
/// `z` holds T rows of `hs` floats, and `zt` has `hs * tp` floats with tp >= T.
unsafe fn transpose(zt: &mut [f32], tp: usize, z: Rows, t: usize, hs: usize) {
    // SAFETY: the intrinsics need AVX2 and FMA, which this module is compiled only with;
    // the block loads read z rows j0..j0+8 < T, channels d0..d0+8 <= hs, and the stores
    // write zt rows d0..d0+8 <= hs, columns j0..j0+8 <= T <= tp: inside the sizes the
    // `# Safety` contract promises, as are the scalar copies (j < T, d < hs).
    unsafe {
        let (src, dst) = (z.data.as_ptr(), zt.as_mut_ptr());
        let (full_j, full_d) = (t / 8 * 8, hs / 8 * 8);
        for j0 in (0..full_j).step_by(8) {
            for d0 in (0..full_d).step_by(8) {
                let r: [__m256; 8] =
                    std::array::from_fn(|k| _mm256_loadu_ps(src.add((j0 + k) * z.rs + d0)));
                let lo = |a, b| _mm256_unpacklo_ps(a, b);
                let hi = |a, b| _mm256_unpackhi_ps(a, b);
                let t = [
                    lo(r[0], r[1]),
                    hi(r[0], r[1]),
                    lo(r[2], r[3]),
                    hi(r[2], r[3]),
                ];
                let u = [
                    lo(r[4], r[5]),
                    hi(r[4], r[5]),
                    lo(r[6], r[7]),
                    hi(r[6], r[7]),
                ];
                // rows 0-3 and 4-7 of each column, one 128-bit half per source lane
                let a = [
                    _mm256_shuffle_ps::<0x44>(t[0], t[2]),
                    _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
                    _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                    _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
                ];
                let b = [
                    _mm256_shuffle_ps::<0x44>(u[0], u[2]),
                    _mm256_shuffle_ps::<0xEE>(u[0], u[2]),
                    _mm256_shuffle_ps::<0x44>(u[1], u[3]),
                    _mm256_shuffle_ps::<0xEE>(u[1], u[3]),
                ];
                for k in 0..4 {
                    let col_k = _mm256_permute2f128_ps::<0x20>(a[k], b[k]);
                    let col_k4 = _mm256_permute2f128_ps::<0x31>(a[k], b[k]);
                    _mm256_storeu_ps(dst.add((d0 + k) * tp + j0), col_k);
                    _mm256_storeu_ps(dst.add((d0 + k + 4) * tp + j0), col_k4);
                }
            }
        }
        // what the 8x8 blocks leave: the last T % 8 keys, the last hs % 8 channels, the padding
        for d in 0..hs {
            let first = if d < full_d { full_j } else { 0 };
            for j in first..t {
                *dst.add(d * tp + j) = *src.add(j * z.rs + d);
            }
            zt[d * tp + t..(d + 1) * tp].fill(0.0);
        }
    }
}

/// `super::scores`, with `zt` (hs rows of tp floats, tp >= T a multiple of 16) to hold z^T.
///
/// # Safety
/// `x` and `z` hold T rows of `hs` floats, `zt` has `hs * tp` floats and `s` is (T,T).
pub(super) unsafe fn scores(
    s: &mut [f32],
    t: usize,
    hs: usize,
    x: Rows,
    z: Rows,
    zt: &mut [f32],
    scale: f32,
) {
    // SAFETY: the intrinsics need AVX2 and FMA, which this module is compiled only with.
    // `transpose` gets what its contract asks (this function's contract). Each tile reads
    // rows i0..i0+rows < T of x (hs floats each) and 16 columns jb..jb+16 <= tp of zt's hs
    // rows, and writes rows i0..i0+rows of s at columns jb..jb+16 <= T (full blocks only)
    // or into `last`, 4 rows of 16: all inside the sizes the contract promises.
    unsafe {
        let tp = zt.len() / hs;
        transpose(zt, tp, z, t, hs);
        let mut last = [0.0f32; 4 * LANES];
        for i0 in (0..t).step_by(4) {
            let rows = (t - i0).min(4);
            let w = x.data.as_ptr().add(i0 * x.rs);
            for jb in (0..live_cols(i0 + rows - 1, t)).step_by(LANES) {
                let z = zt.as_ptr().add(jb);
                let cols = LANES.min(t - jb);
                if cols == LANES {
                    let out = s.as_mut_ptr().add(i0 * t + jb);
                    tile_rows(rows, out, t, w, (1, x.rs), z, tp, 0..hs, scale);
                } else {
                    // a block past the last key: computed whole, written as far as T
                    tile_rows(
                        rows,
                        last.as_mut_ptr(),
                        LANES,
                        w,
                        (1, x.rs),
                        z,
                        tp,
                        0..hs,
                        scale,
                    );
                    for r in 0..rows {
                        s[(i0 + r) * t + jb..][..cols].copy_from_slice(&last[r * LANES..][..cols]);
                    }
                }
            }
        }
    }
}

/// `super::mix` for a head width that is a multiple of 16.
///
/// # Safety
/// `out` holds T rows of `hs` floats `out_rs` apart, and `z` T rows of `hs` floats.
pub(super) unsafe fn mix(
    out: &mut [f32],
    out_rs: usize,
    w: Weights,
    z: Rows,
    hs: usize,
    scale: f32,
) {
    // SAFETY: the intrinsics need AVX2 and FMA, which this module is compiled only with.
    // Each tile writes rows o0..o0+rows < T of `out` at columns c0..c0+16 <= hs (hs is a
    // multiple of 16), reads z rows in `w.sources` (< T) at the same columns, and reads
    // the (T,T) weights at (src, o) for those rows: inside the sizes the contract promises.
    unsafe {
        let t = w.t;
        // w(src, o) = w[src*ss + o*os]
        let strides = if w.transposed { (t, 1) } else { (1, t) };
        for o0 in (0..t).step_by(4) {
            let rows = (t - o0).min(4);
            let wp = w.w.as_ptr().add(o0 * strides.1);
            for c0 in (0..hs).step_by(LANES) {
                let dst = out.as_mut_ptr().add(o0 * out_rs + c0);
                let zp = z.data.as_ptr().add(c0);
                tile_rows(
                    rows,
                    dst,
                    out_rs,
                    wp,
                    strides,
                    zp,
                    z.rs,
                    w.sources(o0, rows),
                    scale,
                );
            }
        }
    }
}
