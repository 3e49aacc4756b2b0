//! Deterministic mode: exact gradient sums, whatever the worker count or algorithm.
//!
//! Float addition is not associative: `(a + b) + c` and `a + (b + c)` can differ in the
//! last bit. Split a batch over 2 workers instead of 3, or change the all-reduce from a
//! ring to a tree, and the gradient sum is formed in another order, so the models drift
//! apart bit by bit. Integer addition IS associative (wrapping or not, as long as it does
//! not overflow), so nanodist makes the sums exact:
//!
//! ```text
//!  sequence s of the global batch --forward/backward alone--> g_s (f32)
//!                       round(g_s * 2^40) --> i64, added into acc   (exact)
//!                       (rounded to nearest, ties to even)
//!  all-reduce over i64 (any algorithm, any bucket size)               (exact)
//!  grad = acc / 2^40 as f32                                           (same bits everywhere)
//! ```
//!
//! Each sequence's gradient is computed on its own (a micro-batch of one), so it does not
//! depend on which other sequences share a worker; every later addition is an integer one.
//! The result is a function of the set of sequences alone: 1, 2, 3, 4, 6 or 12 workers
//! end with bit-identical parameters.
//!
//! Cost: micro-batches of one make the matrix products narrower, and each sequence's
//! 0.8M gradients are converted and added once more; the i64 all-reduce moves twice the
//! bytes. `nanodist bench` measures it against the default mode.
//!
//! Range: with 2^40 the resolution is 9.1e-13. A single sequence's gradient (already scaled by
//! 1/(B*T)) must stay below [`LIMIT`] = 2048 per element, where the conversion is exact; it is
//! far inside that, and anything larger, NaN or infinite is caught before conversion.

/// Fixed-point scale: gradients are stored as integer multiples of 2^-40.
pub const SCALE_BITS: i32 = 40;

/// `1.5 * 2^52`: adding it to an f64 of magnitude below 2^51 rounds the value to an integer
/// (ties to even) and leaves that integer in the low bits of the mantissa.
const MAGIC: f64 = 6_755_399_441_055_744.0;

/// Per-sequence gradients must stay below this magnitude: then `g * 2^40 < 2^51`, where the
/// conversion is exact. Anything larger (or NaN, or infinite) is refused.
pub const LIMIT: f32 = 2048.0;

/// Adds `g * 2^40`, rounded to the nearest integer, into `acc` for every element, and zeroes
/// `g` for the next sequence.
///
/// Returns `false` (and converts nothing) if any element of `g` is not finite or not below
/// [`LIMIT`] in magnitude.
pub fn accumulate_and_zero(acc: &mut [i64], g: &mut [f32]) -> bool {
    assert_eq!(acc.len(), g.len());
    // One branch-free pass the compiler vectorises (NaN fails every comparison).
    if !g.iter().fold(true, |ok, x| ok & (x.abs() < LIMIT)) {
        return false;
    }
    let scale = (SCALE_BITS as f64).exp2();
    let magic_bits = MAGIC.to_bits() as i64;
    for (a, x) in acc.iter_mut().zip(g.iter_mut()) {
        // f32 -> f64 and the power-of-two scale are exact; adding MAGIC rounds to an integer,
        // which the subtraction of MAGIC's bit pattern reads back out: all of it vectorises,
        // unlike `f64::round` and the saturating `as i64`.
        let v = *x as f64 * scale + MAGIC;
        *a += v.to_bits() as i64 - magic_bits;
        *x = 0.0;
    }
    true
}

/// Converts the summed fixed-point gradients back to floats.
pub fn to_f32(grads: &mut [f32], acc: &[i64]) {
    assert_eq!(acc.len(), grads.len());
    let inv = (-SCALE_BITS as f64).exp2();
    for (g, &a) in grads.iter_mut().zip(acc) {
        *g = (a as f64 * inv) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_sums_do_not_depend_on_order() {
        // Three values whose float sum depends on the order.
        let xs = [1.0e-3f32, 1.0, -1.0];
        let left = (xs[0] + xs[1]) + xs[2];
        let right = xs[0] + (xs[1] + xs[2]);
        assert_ne!(
            left.to_bits(),
            right.to_bits(),
            "pick values that show the problem"
        );
        let sum_in = |order: [usize; 3]| {
            let mut acc = vec![0i64; 1];
            for i in order {
                let mut g = vec![xs[i]];
                assert!(accumulate_and_zero(&mut acc, &mut g));
                assert_eq!(g[0], 0.0, "the scratch gradient is zeroed");
            }
            let mut out = vec![0f32];
            to_f32(&mut out, &acc);
            out[0]
        };
        let a = sum_in([0, 1, 2]);
        for order in [[2, 1, 0], [1, 0, 2], [1, 2, 0]] {
            assert_eq!(a.to_bits(), sum_in(order).to_bits());
        }
        assert!((a - 1.0e-3).abs() < 1e-9, "{a}");
    }

    #[test]
    fn non_finite_or_huge_gradients_are_refused() {
        let mut acc = vec![0i64; 2];
        for bad in [f32::NAN, f32::INFINITY, -f32::INFINITY, LIMIT, -3000.0] {
            assert!(!accumulate_and_zero(&mut acc, &mut [1.0, bad]), "{bad}");
        }
        assert_eq!(acc, vec![0, 0]);
    }

    #[test]
    fn conversion_rounds_to_the_nearest_multiple_of_2_pow_minus_40() {
        let unit = (-SCALE_BITS as f32).exp2();
        let cases: [(f32, i64); 8] = [
            (0.0, 0),
            (-0.0, 0),
            (unit, 1),
            (-unit, -1),
            (3.0 * unit, 3),
            (1.0, 1 << 40),
            (-1.5, -(3 << 39)),
            (2047.5, 2047 * (1 << 40) + (1 << 39)),
        ];
        for (x, want) in cases {
            let mut acc = vec![0i64];
            assert!(accumulate_and_zero(&mut acc, &mut [x]));
            assert_eq!(acc[0], want, "{x}");
            // ... and it agrees with the plain (slow) rounding.
            assert_eq!(
                acc[0],
                (x as f64 * (SCALE_BITS as f64).exp2()).round() as i64
            );
        }
        // Ties go to even: 0.5 and 1.5 units.
        let mut acc = vec![0i64; 2];
        assert!(accumulate_and_zero(&mut acc, &mut [0.5 * unit, 1.5 * unit]));
        assert_eq!(acc, vec![0, 2]);
    }
}
