//! The two views the attention kernels read their operands through: [`Rows`], a matrix's rows
//! at a stride, and [`Weights`], a (T,T) weight matrix read by rows or by columns; and
//! [`live_cols`], where a row's causal blocks end. A leaf of its own, so that the portable
//! loops (`head.rs`) and the intrinsics (`head/x86.rs`) both use it without using each other.

use crate::model::math::LANES;

/// The rows of a matrix inside `data`, row r starting at `data[r*rs]`: one head's q, k, v or
/// dY rows of one sequence in a head-major buffer (rs = hs). The kernels take any stride of
/// at least the width, which is the caller's.
#[derive(Clone, Copy, Debug)]
pub(in crate::model::attention) struct Rows<'a> {
    pub(super) data: &'a [f32],
    pub(super) rs: usize,
}

impl<'a> Rows<'a> {
    /// Rows `rs` floats apart, starting at `data[0]`.
    pub fn new(data: &'a [f32], rs: usize) -> Self {
        Rows { data, rs }
    }

    /// Panics unless rows `0..t` of `width` floats lie inside `data`.
    pub(super) fn check(&self, t: usize, width: usize) {
        assert!(
            t == 0 || (t - 1) * self.rs + width <= self.data.len(),
            "{t} rows of {width} floats, {} apart, outside {} floats",
            self.rs,
            self.data.len()
        );
    }

    #[inline(always)]
    pub(super) fn row(&self, r: usize, width: usize) -> &'a [f32] {
        &self.data[r * self.rs..r * self.rs + width]
    }
}

/// The first column past row i's diagonal block: scores are computed in 16-wide blocks up
/// to and including the block that holds column i.
#[inline(always)]
pub(in crate::model::attention) fn live_cols(i: usize, t: usize) -> usize {
    ((i / LANES + 1) * LANES).min(t)
}

/// The (T,T) weights of a `mix`, read one way or the other.
#[derive(Clone, Copy, Debug)]
pub(in crate::model::attention) struct Weights<'a> {
    pub(super) w: &'a [f32],
    pub(super) t: usize,
    pub(super) transposed: bool,
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
    pub(super) fn sources(&self, o0: usize, n: usize) -> std::ops::Range<usize> {
        if self.transposed {
            o0..self.t
        } else {
            0..o0 + n
        }
    }

    /// The weight of row `src` of z in output `o`.
    #[inline(always)]
    pub(super) fn at(&self, src: usize, o: usize) -> f32 {
        if self.transposed {
            self.w[src * self.t + o]
        } else {
            self.w[o * self.t + src]
        }
    }
}
