//! Megatron's conjugate operators f and g, and their sequence-parallel forms.
//!
//! A tensor-parallel region starts at a column-parallel matrix (every worker needs the whole
//! input, makes its own columns of the output) and ends at a row-parallel one (every worker
//! makes a partial sum of the whole output). Two operators bracket it:
//!
//! ```text
//!            f                                                        g
//!   x ──> [identity] ──> X @ A_r^T (my columns) ──> ... ──> Y_r @ B_r^T ──> [all-reduce] ──> z
//!  dx <── [all-reduce] <── dX_r (a partial sum) <── ... <── dz            <── [identity] <── dz
//!
//!   f: forward identity,   backward all-reduce  (each worker's dX is the part through its columns)
//!   g: forward all-reduce, backward identity    (each worker's z is the part through its rows)
//! ```
//!
//! With sequence parallelism (`--sp`) the activations outside the regions (layer norms,
//! residual adds, the embeddings and the loss) are split by rows: worker r keeps token rows
//! [r*N/TP, (r+1)*N/TP) of the N = B*T rows. The all-reduce of g becomes a reduce-scatter (each
//! worker keeps only its rows of the sum) and f's identity an all-gather (the region needs
//! every row); backward swaps them. An all-reduce IS a reduce-scatter then an all-gather, so
//! the bytes sent are the same and the activations outside the regions take 1/TP the memory:
//!
//! ```text
//!            f (SP)                                                  g (SP)
//!   x_r ─> [all-gather] ─> X (N rows) ─> region ─> partial Z (N rows) ─> [reduce-scatter] ─> z_r
//!  dx_r <─ [reduce-scatter] <─ dX partial <─ region <─ dZ (N rows) <──── [all-gather] <──── dz_r
//! ```
//!
//! The two collectives each operator needs are [`Ops::gather_in`] (f forward, g backward)
//! and [`Ops::sum_out`] (g forward, f backward); the four named functions below are those two
//! in the places the picture puts them, so the model reads as the paper draws it.

use std::ops::Range;

use crate::collective::{Algorithm, Comm, CommError};
use crate::trace::{Clock, Phase, Span};

/// A worker's end of its tensor group, and what it has sent.
#[derive(Debug)]
pub struct Ops {
    /// The tensor group (`grid.tp`).
    pub comm: Comm,
    /// Sequence parallelism: rows split outside the regions.
    pub sp: bool,
    /// The all-reduce algorithm of g (without `--sp`).
    pub algorithm: Algorithm,
    /// Floats this worker sent in the tensor group since the counter was last taken.
    pub floats_sent: u64,
    /// Spans of the collectives, when a clock is set (taken by the step's observer).
    pub spans: Vec<Span>,
    /// The clock spans are timed with; `None`: nobody records them.
    pub clock: Option<Clock>,
    /// The step the spans belong to.
    pub step: usize,
}

impl Ops {
    /// The operators over `comm`.
    pub fn new(comm: Comm, sp: bool, algorithm: Algorithm) -> Ops {
        Ops {
            comm,
            sp,
            algorithm,
            floats_sent: 0,
            spans: Vec::new(),
            clock: None,
            step: 0,
        }
    }

    /// The rows (of N) this worker keeps outside the regions: all of them without `--sp`.
    pub fn my_rows(&self, n: usize) -> Range<usize> {
        if self.sp {
            let rows = n / self.comm.size();
            self.comm.rank() * rows..(self.comm.rank() + 1) * rows
        } else {
            0..n
        }
    }

    /// Into a region: `mine` (my rows, width `c`) becomes the whole `all` (N rows). Without
    /// `--sp` `mine` already is everything and `all` is not touched (the caller reads
    /// `mine`): returns whether `all` was filled.
    pub fn gather_in(
        &mut self,
        all: &mut [f32],
        mine: &[f32],
        layer: usize,
    ) -> Result<bool, CommError> {
        if !self.sp || self.comm.size() == 1 {
            return Ok(false);
        }
        let at = self.comm.rank() * mine.len();
        all[at..at + mine.len()].copy_from_slice(mine);
        // an all-gather sends (TP - 1) chunks of N/TP rows from every worker
        self.floats_sent += (all.len() - mine.len()) as u64;
        self.timed(layer, "all-gather", |comm| comm.all_gather(all))?;
        Ok(true)
    }

    /// Out of a region: `part` (N rows, a partial sum) becomes the sum; returns the range of
    /// `part` that holds this worker's rows of it (all of `part` without `--sp`).
    pub fn sum_out(&mut self, part: &mut [f32], layer: usize) -> Result<Range<usize>, CommError> {
        let p = self.comm.size() as u64;
        if p == 1 {
            return Ok(0..part.len());
        }
        let len = part.len() as u64;
        if self.sp {
            self.floats_sent += len / p * (p - 1);
            self.timed(layer, "reduce-scatter", |comm| comm.reduce_scatter(part))
        } else {
            // a ring all-reduce: a reduce-scatter and an all-gather, (TP-1)/TP of it each
            self.floats_sent += 2 * len / p * (p - 1);
            let algorithm = self.algorithm;
            self.timed(layer, "all-reduce", |comm| comm.all_reduce(part, algorithm))?;
            Ok(0..part.len())
        }
    }

    fn timed<R>(&mut self, layer: usize, op: &'static str, f: impl FnOnce(&mut Comm) -> R) -> R {
        let Some(clock) = self.clock else {
            return f(&mut self.comm);
        };
        let (comm, step) = (&mut self.comm, self.step);
        clock.time(&mut self.spans, Phase::Tensor { layer, op }, step, || {
            f(comm)
        })
    }
}

/// f forward: identity (`--sp`: all-gather my rows into `all`). Returns whether `all` holds
/// the input (else `mine` does).
pub fn f_forward(
    ops: &mut Ops,
    all: &mut [f32],
    mine: &[f32],
    l: usize,
) -> Result<bool, CommError> {
    ops.gather_in(all, mine, l)
}

/// f backward: all-reduce the partial input gradients (`--sp`: reduce-scatter); returns my
/// rows' range of `part`.
pub fn f_backward(ops: &mut Ops, part: &mut [f32], l: usize) -> Result<Range<usize>, CommError> {
    ops.sum_out(part, l)
}

/// g forward: all-reduce the partial outputs (`--sp`: reduce-scatter); returns my rows'
/// range of `part`.
pub fn g_forward(ops: &mut Ops, part: &mut [f32], l: usize) -> Result<Range<usize>, CommError> {
    ops.sum_out(part, l)
}

/// g backward: identity (`--sp`: all-gather my rows' gradient into `all`). Returns whether
/// `all` holds the gradient (else `mine` does).
pub fn g_backward(
    ops: &mut Ops,
    all: &mut [f32],
    mine: &[f32],
    l: usize,
) -> Result<bool, CommError> {
    ops.gather_in(all, mine, l)
}
