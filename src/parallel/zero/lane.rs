//! Where the walk's gathers and reduce-scatters run: on a communication thread of each
//! worker, overlapped with its compute, or inline on the worker's own thread.
//!
//! Both run the same [`Job`]s in the same order, through one [`Courier::run`]; only who
//! calls it differs:
//!
//! ```text
//!   thread (a core is free for it)         inline (every core computes)
//!   main  | block 0 | block 1 | block 2    main  |g1| block 0 |g2| block 1 |g3| block 2
//!   comm  |g1|  g2  |   g3    |                   ^ each gather runs where it is issued
//!          ^ block l+1's gather runs under block l
//! ```
//!
//! Overlap needs hardware to overlap on. A GPU has copy engines beside its compute units;
//! a CPU whose cores all run workers has none spare: a communication thread there is one
//! more busy thread per worker, it takes its core from compute, and a collective waits
//! until every worker's communication thread is scheduled at once. So the thread runs
//! only where a core is free for it ([`ZeroPrefetch::resolve`]).
//!
//! Rust note: [`Lane`] is an enum, not a trait object: its methods take the generic
//! [`Observer`] (to time the inline jobs as the thread times its own), which a `dyn`
//! method cannot.

use std::collections::VecDeque;
use std::ops::Range;

use crossbeam::channel::{unbounded, Receiver, Sender};

use super::shard::local;
use crate::collective::{Comm, CommError};
use crate::step::Observer;
use crate::trace::{Clock, Phase, Span};

#[cfg(doc)]
use crate::config::ZeroPrefetch;

/// A gather or reduce-scatter of the walk, in the order every worker issues it.
pub(crate) enum Job<'b> {
    /// Gather block `.0`'s weights (`.1` in the layout) into the buffer.
    Gather(usize, Range<usize>, &'b mut [f32]),
    /// Reduce-scatter the gradient of `.1` (label `.0`), add my part into my shard, zero it;
    /// a block's buffer goes back to be reused (`.3`), the ends' stay out until next time.
    Reduce(usize, Range<usize>, &'b mut [f32], bool),
}

impl Job<'_> {
    /// Its span on the timeline.
    fn phase(&self) -> Phase {
        match self {
            Job::Gather(l, ..) => Phase::AllGather(*l),
            Job::Reduce(i, ..) => Phase::ReduceScatter(*i),
        }
    }
}

/// What a finished job hands back to the walk.
enum Back<'b> {
    /// Gathered weights, to be computed with.
    Weights(&'b mut [f32]),
    /// An emptied gradient buffer, to be filled again.
    Freed(&'b mut [f32]),
    /// Nothing (the ends' gradient buffers stay out until the next step).
    Kept,
}

/// What the jobs read and write: the communicator, my shard of the weights (the gathers'
/// source) and of the gradient (where the reduce-scatters add my part; `None`: no reduces).
pub(crate) struct Courier<'b> {
    /// The workers' communicator.
    pub comm: &'b mut Comm,
    /// My shard of the weights (stage 3), or the whole weights (stage 2: no gathers).
    pub shard: &'b [f32],
    /// My shard's range in the flat layout.
    pub mine: &'b Range<usize>,
    /// My shard of the gradient.
    pub grads: Option<&'b mut [f32]>,
}

impl<'b> Courier<'b> {
    /// Runs one job: the one body of every gather and reduce-scatter, in either mode.
    fn run(&mut self, job: Job<'b>) -> Result<Back<'b>, CommError> {
        match job {
            Job::Gather(_, unit, buf) => {
                gather_into(buf, self.shard, self.mine, &unit, self.comm)?;
                Ok(Back::Weights(buf))
            }
            Job::Reduce(_, unit, buf, reuse) => {
                let part = local(self.mine, &unit);
                self.comm.reduce_scatter_ranges(buf, part.clone())?;
                if let (Some(g), false) = (self.grads.as_deref_mut(), part.is_empty()) {
                    let from = unit.start + part.start - self.mine.start;
                    let g = &mut g[from..from + part.len()];
                    g.iter_mut().zip(&buf[part]).for_each(|(g, &x)| *g += x);
                }
                buf.fill(0.0); // backward adds into it next time
                Ok(if reuse { Back::Freed(buf) } else { Back::Kept })
            }
        }
    }

    /// The communication thread: runs the jobs in order, hands gathered weights back
    /// through `weights` and emptied gradient buffers through `freed`; returns its spans.
    fn serve(
        mut self,
        jobs: Receiver<Job<'b>>,
        weights: Sender<&'b mut [f32]>,
        freed: Sender<&'b mut [f32]>,
        clock: Option<Clock>,
        step: usize,
    ) -> Result<Vec<Span>, CommError> {
        let mut spans = Vec::new();
        for job in jobs {
            let start_us = clock.map(|c| c.now_us());
            let phase = job.phase();
            match self.run(job)? {
                Back::Weights(buf) => drop(weights.send(buf)),
                Back::Freed(buf) => drop(freed.send(buf)),
                Back::Kept => {}
            }
            if let (Some(c), Some(start_us)) = (clock, start_us) {
                spans.push(Span {
                    phase,
                    step,
                    start_us,
                    dur_us: c.now_us() - start_us,
                    comm_thread: true,
                });
            }
        }
        Ok(spans)
    }
}

/// The walk's side of the jobs: it sends them and takes back the buffers they return.
pub(crate) enum Lane<'b> {
    /// A communication thread runs them while the walk computes.
    Thread {
        /// To the thread, in order.
        jobs: Sender<Job<'b>>,
        /// Gathered weights, in the order of the gathers.
        weights: Receiver<&'b mut [f32]>,
        /// Emptied gradient buffers.
        freed: Receiver<&'b mut [f32]>,
    },
    /// The walk runs each job itself as it sends it.
    Inline {
        /// What runs them.
        courier: Courier<'b>,
        /// Gathered weights not yet taken, in the order of the gathers.
        weights: VecDeque<&'b mut [f32]>,
        /// Emptied gradient buffers not yet taken.
        freed: VecDeque<&'b mut [f32]>,
        /// The first job that failed: later jobs are skipped, the walk stops at its next
        /// take, and [`with_lane`] returns the error (as the thread's end does).
        failed: Option<CommError>,
    },
}

impl<'b> Lane<'b> {
    /// Issues `job` (inline: runs it now, timed as its own phase).
    pub(crate) fn send<O: Observer>(&mut self, job: Job<'b>, step: usize, obs: &mut O) {
        match self {
            // a closed queue means the thread failed: its error comes from the join
            Lane::Thread { jobs, .. } => drop(jobs.send(job)),
            Lane::Inline {
                courier,
                weights,
                freed,
                failed,
            } => {
                if failed.is_some() {
                    return;
                }
                match obs.time(job.phase(), step, || courier.run(job)) {
                    Ok(Back::Weights(buf)) => weights.push_back(buf),
                    Ok(Back::Freed(buf)) => freed.push_back(buf),
                    Ok(Back::Kept) => {}
                    Err(e) => *failed = Some(e),
                }
            }
        }
    }

    /// Block `l`'s gathered weights (thread: waited for, timed as its prefetch); `None`
    /// when a job failed (the walk stops; [`with_lane`] returns the error).
    pub(crate) fn weights<O: Observer>(
        &mut self,
        l: usize,
        step: usize,
        obs: &mut O,
    ) -> Option<&'b mut [f32]> {
        match self {
            Lane::Thread { weights, .. } => {
                obs.time(Phase::Prefetch(l), step, || weights.recv()).ok()
            }
            Lane::Inline { weights, .. } => weights.pop_front(),
        }
    }

    /// An emptied gradient buffer (thread: waited for); `None` when a job failed.
    pub(crate) fn freed<O: Observer>(&mut self, step: usize, obs: &mut O) -> Option<&'b mut [f32]> {
        match self {
            Lane::Thread { freed, .. } => obs.time(Phase::CommWait, step, || freed.recv()).ok(),
            Lane::Inline { freed, .. } => freed.pop_front(),
        }
    }
}

/// Runs `body` with a lane: on a communication thread (`thread`) spawned for it and
/// joined after it (the wait timed as [`Phase::CommWait`], its spans recorded), or
/// inline. Returns body's result, or the first job's error.
pub(crate) fn with_lane<'b, O: Observer, R>(
    thread: bool,
    courier: Courier<'b>,
    step: usize,
    obs: &mut O,
    body: impl FnOnce(&mut Lane<'b>, &mut O) -> R,
) -> Result<R, CommError> {
    if !thread {
        let mut lane = Lane::Inline {
            courier,
            weights: VecDeque::new(),
            freed: VecDeque::new(),
            failed: None,
        };
        let r = body(&mut lane, obs);
        return match lane {
            Lane::Inline {
                failed: Some(e), ..
            } => Err(e),
            _ => Ok(r),
        };
    }
    let clock = obs.clock();
    let (r, spans) = std::thread::scope(|sc| {
        let (jobs, jobs_rx) = unbounded();
        let (weights_tx, weights) = unbounded();
        let (freed_tx, freed) = unbounded();
        let server = sc.spawn(move || courier.serve(jobs_rx, weights_tx, freed_tx, clock, step));
        let mut lane = Lane::Thread {
            jobs,
            weights,
            freed,
        };
        let r = body(&mut lane, obs);
        drop(lane); // closes the queue: the thread ends after its last job
        let spans = obs.time(Phase::CommWait, step, || {
            server
                .join()
                .expect("the communication thread does not panic")
        });
        spans.map(|spans| (r, spans))
    })?;
    spans.into_iter().for_each(|span| obs.record(span));
    Ok(r)
}

/// Gathers the weights of `unit` (a range of the layout) into `buf`: my part from my
/// `shard`, the others' from theirs.
pub(crate) fn gather_into(
    buf: &mut [f32],
    shard: &[f32],
    mine: &Range<usize>,
    unit: &Range<usize>,
    comm: &mut Comm,
) -> Result<(), CommError> {
    let part = local(mine, unit);
    if !part.is_empty() {
        let from = unit.start + part.start - mine.start;
        buf[part.clone()].copy_from_slice(&shard[from..from + part.len()]);
    }
    comm.all_gather_ranges(buf, part)
}
