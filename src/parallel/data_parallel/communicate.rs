//! How a worker's gradients meet the others': the all-reduce of the step, bucket by bucket.
//!
//! ```text
//!   plain:      backward ........... | barrier | all-reduce b0 | b1 | ... | AdamW
//!   --overlap:  backward ... b0 done ... b1 done ... | wait for the comm thread | AdamW
//!                            \__ all-reduce b0 __/ \__ all-reduce b1 __/   (comm thread)
//! ```
//! On a simulated `--link`, each bucket's all-reduce is followed by the rest of its link
//! time, waited out as a phase of its own (`link`), on whichever thread ran it.
//! Buckets are contiguous ranges of the flat gradient buffer, planned from its end, because
//! backward finishes the parameters last in the layout first (`parallel::buckets`).
//! [`AllReduce`] is data parallelism's [`GradientExchange`]: the step calls it, and this
//! file is all that data parallelism adds to a step.

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::collective::{link, Algorithm, Comm, CommError, Element};
use crate::error::Error;
use crate::model::{Gpt, Workspace};
use crate::parallel::buckets::{self, BucketSink};
use crate::step::{GradientExchange, Observer};
use crate::trace::{Phase, Span};

/// The sum of every worker's gradients, by all-reduce over a communicator.
pub struct AllReduce {
    /// This worker's endpoint of the group (evaluation and replica checks use it too).
    pub comm: Comm,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Buckets, in the order they are communicated.
    pub plan: Vec<Range<usize>>,
    /// Start each bucket's all-reduce during backward (`--overlap`).
    pub overlap: bool,
}

impl AllReduce {
    /// An all-reduce of `len` gradients in buckets of `bucket_kb` KiB (0: one bucket).
    pub fn new(
        comm: Comm,
        algorithm: Algorithm,
        len: usize,
        bucket_kb: usize,
        overlap: bool,
    ) -> Self {
        AllReduce {
            comm,
            algorithm,
            plan: buckets::plan(len, buckets::floats_for_kb(bucket_kb)),
            overlap,
        }
    }

    /// Waits for every worker, then all-reduces `grads` bucket by bucket.
    fn sum_buckets<T: Element, O: Observer>(
        &mut self,
        grads: &mut [T],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        let (comm, algorithm) = (&mut self.comm, self.algorithm);
        obs.time(Phase::Wait, step, || comm.barrier())
            .map_err(gone(step))?;
        for (i, range) in self.plan.iter().enumerate() {
            let bucket = &mut grads[range.clone()];
            let (r, owed) = obs.time(Phase::AllReduce(i), step, || {
                comm.deferring_link(|c| c.all_reduce(bucket, algorithm))
            });
            r.map_err(gone(step))?;
            wait_link(owed, step, obs);
        }
        Ok(())
    }
}

/// Waits out `owed` of simulated link time as the `link` phase (nothing when none is owed).
pub fn wait_link<O: Observer>(owed: Duration, step: usize, obs: &mut O) {
    if !owed.is_zero() {
        let deadline = Instant::now() + owed;
        obs.time(Phase::Link, step, || link::wait_until(deadline));
    }
}

/// A collective's failure as the run's error: the peer that left, and when.
pub fn gone(step: usize) -> impl Fn(CommError) -> Error {
    move |e| match e {
        CommError::PeerGone { rank } => Error::PeerGone { worker: rank, step },
    }
}

impl GradientExchange for AllReduce {
    fn overlaps_backward(&self) -> bool {
        self.overlap
    }

    /// Backward with each bucket's all-reduce started as soon as backward finishes it.
    ///
    /// A scoped communication thread borrows this worker's endpoint and receives the
    /// finished buckets through a channel; when the scope ends, the compiler knows every
    /// bucket borrow is over and the gradient buffer is whole again.
    fn backward_and_sum<O: Observer>(
        &mut self,
        model: &Gpt,
        ws: &mut Workspace,
        scale: f32,
        grads: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        let (comm, algorithm, plan) = (&mut self.comm, self.algorithm, &self.plan);
        let clock = obs.clock();
        let result = std::thread::scope(|s| {
            let (tx, rx) = crossbeam::channel::unbounded::<(usize, &mut [f32])>();
            let comm_thread = s.spawn(move || {
                let mut comm_spans = Vec::new();
                for (i, bucket) in rx {
                    let start_us = clock.map(|c| c.now_us());
                    let (r, owed) = comm.deferring_link(|c| c.all_reduce(bucket, algorithm));
                    let end_us = clock.map(|c| c.now_us());
                    if !owed.is_zero() {
                        link::wait_until(Instant::now() + owed);
                    }
                    if let (Some(c), Some(start_us), Some(end_us)) = (clock, start_us, end_us) {
                        let span = |phase, start_us, end_us: f64| Span {
                            phase,
                            step,
                            start_us,
                            dur_us: end_us - start_us,
                            comm_thread: true,
                        };
                        comm_spans.push(span(Phase::AllReduce(i), start_us, end_us));
                        if !owed.is_zero() {
                            comm_spans.push(span(Phase::Link, end_us, c.now_us()));
                        }
                    }
                    r?;
                }
                Ok::<_, CommError>(comm_spans)
            });
            obs.time(Phase::Backward, step, || {
                let mut sink = BucketSink::new(grads, plan, tx);
                model.backward(ws, scale, &mut sink);
            }); // the sink (and the channel's sender) is dropped here: no more buckets
            obs.time(Phase::CommWait, step, || {
                comm_thread
                    .join()
                    .expect("the communication thread does not panic")
            })
        });
        for span in result.map_err(gone(step))? {
            obs.record(span);
        }
        Ok(())
    }

    fn sum<O: Observer>(
        &mut self,
        grads: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        self.sum_buckets(grads, step, obs)
    }

    fn sum_exact<O: Observer>(
        &mut self,
        acc: &mut [i64],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        self.sum_buckets(acc, step, obs)
    }
}
