//! How a worker's gradients meet the others': the all-reduce of the step, bucket by bucket.
//!
//! ```text
//!   plain:      backward ........... | barrier | all-reduce b0 | b1 | ... | AdamW
//!   --overlap:  backward ... b0 done ... b1 done ... | wait for the comm thread | AdamW
//!                            \__ all-reduce b0 __/ \__ all-reduce b1 __/   (comm thread)
//! ```
//! Buckets are contiguous ranges of the flat gradient buffer, planned from its end, because
//! backward finishes the parameters last in the layout first (`parallel::buckets`).

use super::{comm_err, Worker};
use crate::collective::CommError;
use crate::parallel::buckets::BucketSink;
use crate::parallel::fixed_point;
use crate::trace::{Phase, Span};
use crate::Error;

impl Worker<'_> {
    /// Waits for every worker, then all-reduces the buckets in order.
    pub(super) fn all_reduce(&mut self, step: usize) -> Result<(), Error> {
        let (cfg, clock) = (self.ctx.cfg, self.ctx.clock);
        let err = comm_err(self.rank, step);
        let comm = &mut self.comm;
        clock
            .time(&mut self.spans, Phase::Wait, step, || comm.barrier())
            .map_err(&err)?;
        for (i, range) in self.plan.iter().enumerate() {
            let r = if cfg.deterministic {
                let bucket = &mut self.acc[range.clone()];
                clock.time(&mut self.spans, Phase::AllReduce(i), step, || {
                    comm.all_reduce(bucket, cfg.allreduce)
                })
            } else {
                let bucket = &mut self.grads[range.clone()];
                clock.time(&mut self.spans, Phase::AllReduce(i), step, || {
                    comm.all_reduce(bucket, cfg.allreduce)
                })
            };
            r.map_err(&err)?;
        }
        if cfg.deterministic {
            fixed_point::to_f32(&mut self.grads, &self.acc);
        }
        Ok(())
    }

    /// Backward with each bucket's all-reduce started as soon as backward finishes it.
    ///
    /// A scoped communication thread borrows this worker's endpoint and receives the
    /// finished buckets through a channel; when the scope ends, the compiler knows every
    /// bucket borrow is over and the gradient buffer is whole again.
    pub(super) fn backward_overlapped(&mut self, step: usize, scale: f32) -> Result<(), Error> {
        let (cfg, clock) = (self.ctx.cfg, self.ctx.clock);
        let (model, ws, comm) = (&self.model, &mut self.ws, &mut self.comm);
        let (grads, plan) = (&mut self.grads[..], &self.plan);
        let spans = &mut self.spans;
        let result = std::thread::scope(|s| {
            let (tx, rx) = crossbeam::channel::unbounded::<(usize, &mut [f32])>();
            let comm_thread = s.spawn(move || {
                let mut comm_spans = Vec::new();
                for (i, bucket) in rx {
                    let start_us = clock.now_us();
                    let r = comm.all_reduce(bucket, cfg.allreduce);
                    comm_spans.push(Span {
                        phase: Phase::AllReduce(i),
                        step,
                        start_us,
                        dur_us: clock.now_us() - start_us,
                        comm_thread: true,
                    });
                    r?;
                }
                Ok::<_, CommError>(comm_spans)
            });
            clock.time(spans, Phase::Backward, step, || {
                let mut sink = BucketSink::new(grads, plan, tx);
                model.backward(ws, scale, &mut sink);
            }); // the sink (and the channel's sender) is dropped here: no more buckets
            clock.time(spans, Phase::CommWait, step, || {
                comm_thread
                    .join()
                    .expect("the communication thread does not panic")
            })
        });
        let comm_spans = result.map_err(comm_err(self.rank, step))?;
        self.spans.extend(comm_spans);
        Ok(())
    }
}
