//! Small numeric helpers the kernels share: a vectorisable `exp`, and reductions.
//!
//! Why not `f32::exp`: it is a call into the C library, one float at a time. GELU needs an
//! exp for each of B*T*4C activations per layer and attention an exp per score, and the
//! library calls alone would cost more than all the matrix products. The versions here are
//! straight-line arithmetic (no branches, no calls), so the compiler turns a loop over them
//! into vector code doing 8 or 16 at once. Reductions likewise keep 16 running sums, which
//! fixes the order of additions (same bits every run) and lets the compiler vectorise them.

/// Floats per block in the blocked loops: 16, one AVX-512 register (two AVX2 registers).
pub const LANES: usize = 16;

/// e^x to about 2 ulp for x in [-87, 88] (clamped outside: e^-87 is 1.6e-38, e^88 is 1.6e38).
///
/// Range reduction: x = n ln2 + r with n an integer and |r| <= ln2/2, so e^x = 2^n e^r;
/// e^r is a degree-7 polynomial (Cephes' `expf` coefficients), 2^n is built in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // ln 2 split in two so that n*LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let shifted = fma(x, LOG2E, ROUND); // = ROUND + n exactly: n sits in the low mantissa bits
    let n = shifted - ROUND;
    let r = fma(n, -LN2_LO, fma(n, -LN2_HI, x));
    let mut p = 1.987_569_1e-4;
    p = fma(p, r, 1.398_199_9e-3);
    p = fma(p, r, 8.333_452e-3);
    p = fma(p, r, 4.166_579_6e-2);
    p = fma(p, r, 1.666_666_5e-1);
    p = fma(p, r, 0.5);
    let er = fma(p, r * r, r + 1.0);
    // 2^n: the biased exponent n + 127 shifted into place. Taken from the bits of `shifted`
    // rather than with `n as i32`, whose saturating conversion would not vectorise.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    er * two_n
}

/// `a * b + c`, as one fused multiply-add instruction where the CPU has one.
///
/// Rust never fuses `a * b + c` on its own (the rounding differs, and it keeps to IEEE), so
/// the polynomials above would cost a multiply and an add per term. `f32::mul_add` is one
/// instruction when the build targets FMA (every x86 CPU since 2013, and every ARM64; this
/// crate builds with `target-cpu=native`), but a slow library call where it does not: there,
/// the plain expression.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(any(target_feature = "fma", target_arch = "aarch64"))]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(any(target_feature = "fma", target_arch = "aarch64")))]
    {
        a * b + c
    }
}

/// Sum of `x` with 16 running partial sums (a fixed order of additions).
#[inline]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    hsum(acc) + tail
}

/// Largest element of `x` (-inf for an empty slice), with 16 running maxima.
#[inline]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    hmax(acc).max(tail)
}

/// Dot product of `a` and `b` (equal lengths) with 16 running partial sums.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    hsum(acc) + tail
}

/// The sum of 16 lanes, folded in halves (8 + 8, then 4 + 4, 2 + 2, 1 + 1): four vector
/// additions instead of a chain of 15 dependent scalar ones.
#[inline(always)]
pub fn hsum(mut v: [f32; LANES]) -> f32 {
    let mut half = LANES / 2;
    while half > 0 {
        for l in 0..half {
            v[l] += v[l + half];
        }
        half /= 2;
    }
    v[0]
}

/// The largest of 16 lanes, folded in halves like [`hsum`].
#[inline(always)]
pub fn hmax(mut v: [f32; LANES]) -> f32 {
    let mut half = LANES / 2;
    while half > 0 {
        for l in 0..half {
            if v[l + half] > v[l] {
                v[l] = v[l + half];
            }
        }
        half /= 2;
    }
    v[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0.0f64;
        for i in -87_000..88_000 {
            let x = i as f32 / 1000.0 + 0.000_37;
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(1000.0) > 1e38);
    }

    #[test]
    fn reductions_match_plain_sums() {
        let a: Vec<f32> = (0..133).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..133).map(|i| (i as f32 * 0.11).cos()).collect();
        let s: f64 = a.iter().map(|&x| x as f64).sum();
        let d: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        assert!((sum(&a) as f64 - s).abs() < 1e-5, "sum {} vs {s}", sum(&a));
        assert!(
            (dot(&a, &b) as f64 - d).abs() < 1e-5,
            "dot {} vs {d}",
            dot(&a, &b)
        );
        let m = a.iter().fold(f32::MIN, |m, &x| m.max(x));
        assert_eq!(max(&a), m);
        assert_eq!(max(&a[..7]), a[..7].iter().fold(f32::MIN, |m, &x| m.max(x)));
        // the halving folds see every lane: the largest value in each position in turn
        for top in 0..LANES {
            let mut v = [-1.0f32; LANES];
            v[top] = 2.0;
            assert_eq!(hmax(v), 2.0, "lane {top}");
            v[top] = 0.0;
            assert_eq!(hsum(v), -(LANES as f32 - 1.0), "lane {top}");
        }
    }
}
