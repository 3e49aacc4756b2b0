//! Random numbers: two named generators from `rand_xoshiro`, and the three conversions
//! nanodist draws with.
//!
//! nanodist promises bit-identical runs for a seed, on every machine. That needs two things:
//!
//! - **Generators whose streams are fixed.** [`Xoshiro256StarStar`] and [`SplitMix64`] come
//!   from the `rand_xoshiro` crate; each is a published algorithm (Blackman and Vigna 2018;
//!   Steele, Lea and Flood 2014) checked there against its authors' reference vectors, and
//!   `tests/golden.rs` pins the first outputs of both as nanodist seeds them.
//! - **Conversions whose values are fixed.** The rand book's "Reproducibility" chapter allows
//!   value-breaking changes to rand's distributions in minor releases, so turning 64 random
//!   bits into an index, a float or a normal sample is written out here, three short
//!   functions in the [`Draw`] trait, rather than taken from `rand::distr`.
//!
//! ```text
//!   Xoshiro256StarStar::seed_from_u64(seed)       state: 4 SplitMix64 outputs of seed
//!     └─ next_u64 ─┬─> below(n)    Lemire's multiply-shift         (the Draw trait)
//!                  ├─> uniform()   top 53 bits * 2^-53
//!                  └─> normal()    Box-Muller with libm's ln and cos
//!   SplitMix64::seed_from_u64(key).next_u64()     one output per key, keys chained from
//!                                                 (seed, step, seq): the batch sampler
//! ```
//!
//! Streams (weight initialisation, the `tales` grammar, sampling text, test data) start with
//! `Xoshiro256StarStar::seed_from_u64(seed)`. The batch sampler is counter-based instead: no
//! generator lives from one step to the next (see [`crate::data::sampler`]), so checkpoints
//! store no generator state, only the seed and the step.
//!
//! The same promise covers the few transcendental functions whose results decide bits of
//! training (the loss's ln, Box-Muller's ln and cos, the schedule's cos, AdamW's pow, and
//! sampling's exp): they come from the `libm` crate, a Rust port of musl's maths, instead
//! of the platform's C library, whose results may differ in the last bit between libcs.
//! The kernels' own `exp` ([`crate::model::math`]) is plain arithmetic and needs neither.
//!
//! # Examples
//! ```
//! use nanodist::rng::{Draw, SeedableRng, Xoshiro256StarStar};
//! let mut rng = Xoshiro256StarStar::seed_from_u64(42);
//! let die = rng.below(6); // 0..6
//! let x = rng.normal(); // N(0, 1)
//! assert!(die < 6 && x.is_finite());
//! // the same seed, the same draws
//! let mut again = Xoshiro256StarStar::seed_from_u64(42);
//! assert_eq!((again.below(6), again.normal()), (die, x));
//! ```

pub use rand_core::{Rng, SeedableRng};
pub use rand_xoshiro::{SplitMix64, Xoshiro256StarStar};

/// Uniform integers, floats and normal samples from any generator's 64-bit outputs, with
/// values fixed by the code below (not by a library's choice of algorithm).
///
/// Each method consumes a fixed number of `next_u64` outputs (one, one, two), so a stream's
/// draws line up the same way on every machine.
///
/// Rust note: a trait with provided methods and a blanket `impl` for every [`Rng`] is an
/// *extension trait*: `use nanodist::rng::Draw` adds `below`, `uniform` and `normal` to
/// `Xoshiro256StarStar` (and to any other generator), though neither type is ours.
pub trait Draw: Rng {
    /// Uniform integer in `0..n` (`n > 0`), by Lemire's multiply-shift: the high 64 bits of
    /// the 128-bit product `bits * n`. No division and no rejection loop; the bias is below
    /// `n / 2^64`.
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`: the top 53 bits (an f64's whole mantissa) times `2^-53`, exact.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal, by the Box-Muller transform of two uniforms:
    /// `sqrt(-2 ln u1) cos(2 pi u2)`.
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // in (0, 1]: ln is finite
        let u2 = self.uniform();
        // libm's ln and cos (not the platform's C library) make these bits the same on every
        // platform; sqrt is exactly rounded by IEEE 754 everywhere.
        (-2.0 * libm::log(u1)).sqrt() * libm::cos(std::f64::consts::TAU * u2)
    }
}

impl<R: Rng + ?Sized> Draw for R {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_state_round_trips() {
        let mut a = Xoshiro256StarStar::seed_from_u64(42);
        let mut b = Xoshiro256StarStar::seed_from_u64(42);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut c = Xoshiro256StarStar::from_seed(a.state());
        assert_eq!(a.next_u64(), c.next_u64());
        assert_ne!(
            Xoshiro256StarStar::seed_from_u64(1).next_u64(),
            Xoshiro256StarStar::seed_from_u64(2).next_u64()
        );
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = Xoshiro256StarStar::seed_from_u64(3);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        // standard errors: mean 1/sqrt(n) = 0.003, variance sqrt(2/n) = 0.0045
        assert!(mean.abs() < 0.015, "mean {mean}");
        assert!((var - 1.0).abs() < 0.025, "var {var}");
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Xoshiro256StarStar::seed_from_u64(5);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let k = r.below(7);
            seen[k] = true;
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
    }

    #[test]
    fn uniform_is_in_the_unit_interval() {
        let mut r = Xoshiro256StarStar::seed_from_u64(9);
        for _ in 0..1000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }
}
