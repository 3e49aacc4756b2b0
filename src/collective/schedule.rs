//! Schedules: a message-passing all-reduce written down as data.
//!
//! The naive, ring and tree algorithms differ only in *who sends which part of the buffer
//! to whom, in which step, and what the receiver does with it*. Each of their files builds
//! that as a [`Schedule`]; one executor (`execute`) runs any schedule with nothing but a
//! [`Wire`]'s `send` and `recv` (worker threads, or MPI processes), and [`Schedule::simulate`]
//! runs the same schedule on one thread, step by step, for the walkthrough example and the
//! tests. The example therefore narrates exactly what the threads do.
//!
//! ```text
//!   Schedule { workers: 3, len: 6, chunks: 3, steps: [
//!     Step { phase: "reduce-scatter", transfers: [ 0 -> 1 chunk 2 (reduce), 1 -> 2 ..., 2 -> 0 ... ] },
//!     ...
//!   ]}
//!
//!   execute, on worker `me`, for each step in order:
//!     1. send   every transfer with from == me  (a copy of buf[range], never blocks)
//!     2. apply  every transfer with to == me, in listed order (wait for it, then reduce/copy)
//! ```
//!
//! A schedule never has a worker send and receive overlapping ranges in the same step, so
//! "all sends of a step see the buffers as they were before the step" holds both on threads
//! and in the simulation. Channels between a pair of workers keep their order, so each
//! receive gets the message the schedule means.

use std::ops::Range;

use super::element::Element;
use super::error::CommError;
use super::wire::Wire;

/// What the receiver of a transfer does with the incoming elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Add them to its own: `own = incoming + own` if `incoming_first`, else
    /// `own = own + incoming`. The order is part of the algorithm's documented summation
    /// order (floating-point addition is not associative).
    Reduce {
        /// Whether the incoming partial sum is the left operand.
        incoming_first: bool,
    },
    /// Overwrite its own with them (the result travelling back).
    Copy,
}

impl Op {
    /// Applies the operation to `own` with the `incoming` elements.
    ///
    /// # Panics
    /// If the lengths differ (workers disagreed about the buffer length).
    pub fn apply<T: Element>(self, own: &mut [T], incoming: &[T]) {
        assert_eq!(
            own.len(),
            incoming.len(),
            "a message of {} elements for a range of {}: all workers must pass buffers of \
             the same length",
            incoming.len(),
            own.len()
        );
        match self {
            Op::Copy => own.copy_from_slice(incoming),
            Op::Reduce {
                incoming_first: true,
            } => {
                for (o, &x) in own.iter_mut().zip(incoming) {
                    *o = T::add(x, *o);
                }
            }
            Op::Reduce {
                incoming_first: false,
            } => {
                for (o, &x) in own.iter_mut().zip(incoming) {
                    *o = T::add(*o, x);
                }
            }
        }
    }
}

/// One message: worker `from` sends `buf[range]` to worker `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The sending worker.
    pub from: usize,
    /// The receiving worker.
    pub to: usize,
    /// Which chunks of the schedule's chunking this is (for narration), e.g. `3..4`.
    pub chunks: Range<usize>,
    /// The elements, `buf[range]`, on both sides.
    pub range: Range<usize>,
    /// What the receiver does with them.
    pub op: Op,
}

/// One step: transfers that happen at the same time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The phase this step belongs to, e.g. `"reduce-scatter"`.
    pub phase: &'static str,
    /// The step's messages. A worker applies the ones it receives in this order.
    pub transfers: Vec<Transfer>,
}

/// A whole message-passing all-reduce for `workers` workers and `len` elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// N, the number of workers.
    pub workers: usize,
    /// Elements in each worker's buffer.
    pub len: usize,
    /// How many chunks the algorithm cuts the buffer into (`chunk_range`).
    pub chunks: usize,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Schedule {
    /// A schedule from its steps, dropping empty transfers (when `len < chunks` some chunks
    /// are empty: both sides skip them alike, since both build the same schedule).
    pub(crate) fn new(workers: usize, len: usize, chunks: usize, mut steps: Vec<Step>) -> Self {
        for step in &mut steps {
            step.transfers.retain(|t| !t.range.is_empty());
        }
        steps.retain(|s| !s.transfers.is_empty());
        Schedule {
            workers,
            len,
            chunks,
            steps,
        }
    }

    /// Runs the schedule on one thread over `bufs` (one buffer per worker), calling
    /// `after_step(step_index, step, bufs)` after each step. Gives exactly the bits the
    /// threaded execution gives.
    ///
    /// ```
    /// use nanodist::collective::Algorithm;
    /// let ring = Algorithm::Ring.schedule(3, 4).unwrap();
    /// let mut bufs = vec![vec![1.0f32; 4], vec![2.0; 4], vec![3.0; 4]];
    /// ring.simulate(&mut bufs, |_, _, _| {});
    /// assert!(bufs.iter().all(|b| b == &[6.0; 4]));
    /// ```
    pub fn simulate<T: Element>(
        &self,
        bufs: &mut [Vec<T>],
        mut after_step: impl FnMut(usize, &Step, &[Vec<T>]),
    ) {
        assert_eq!(bufs.len(), self.workers, "one buffer per worker");
        for (i, step) in self.steps.iter().enumerate() {
            // All sends of a step read the buffers as they were before it.
            let messages: Vec<Vec<T>> = step
                .transfers
                .iter()
                .map(|t| bufs[t.from][t.range.clone()].to_vec())
                .collect();
            for (t, msg) in step.transfers.iter().zip(&messages) {
                t.op.apply(&mut bufs[t.to][t.range.clone()], msg);
            }
            after_step(i, step, bufs);
        }
    }
}

/// Runs `sched` as worker `ep.rank()` on its `buf`: see the module docs. The same code runs
/// between threads and between processes: it needs only a [`Wire`].
pub(crate) fn execute<T: Element, W: Wire>(
    ep: &mut W,
    sched: &Schedule,
    buf: &mut [T],
) -> Result<(), CommError> {
    assert_eq!(sched.len, buf.len());
    assert_eq!(sched.workers, ep.size());
    let me = ep.rank();
    for step in &sched.steps {
        for t in step.transfers.iter().filter(|t| t.from == me) {
            ep.send(t.to, &buf[t.range.clone()])?;
        }
        for t in step.transfers.iter().filter(|t| t.to == me) {
            let own = &mut buf[t.range.clone()];
            ep.recv(t.from, |incoming: &[T]| t.op.apply(own, incoming))?;
        }
        ep.step_done()?;
    }
    Ok(())
}
