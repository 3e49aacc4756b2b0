//! The communicator: what a worker calls. It picks the algorithm and runs it on its
//! transport endpoint, and it splits into sub-communicators.
//!
//! ```text
//!   Comm r  =  Endpoint r (transport.rs)  +  the schedules it has built, by (algorithm, length)
//!
//!   all_reduce(buf, Ring)   -> ring.rs builds the schedule (once) -> schedule.rs runs it
//!   all_reduce(buf, Shared) -> shared.rs
//!   reduce_scatter / all_gather / broadcast -> shared.rs
//!   split(colour, key)      -> a new Comm over a new group of endpoints
//!
//!   with a link (set_link): each collective also counts this worker's bytes on the wire,
//!   and lasts at least the link's model time for it (link.rs): the rest is waited out,
//!   here, or by the caller under its own timeline phase (deferring_link)
//! ```

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::algorithm::Algorithm;
use super::element::{chunk_range, Element};
use super::error::CommError;
use super::hierarchy::{CrossLink, Outer};
use super::link::{self, Link};
use super::schedule::{self, Schedule};
use super::transport::{self, Endpoint};
use super::{naive, ring, shared, tree};

/// Schedules kept per communicator (training reuses a handful of bucket sizes).
const SCHEDULE_CACHE: usize = 16;

/// One worker's communicator: its place in a group, and the collectives it can run there.
///
/// Made by [`group`] (or [`Comm::split`]); move each into its worker's thread. All
/// collectives take `&mut self`: a worker runs one collective at a time. Dropping it (also
/// by a panic unwinding the thread) tells the other workers that this one has left.
pub struct Comm {
    ep: Endpoint,
    /// Schedules built earlier, by (algorithm, length).
    schedules: Vec<(Algorithm, usize, Arc<Schedule>)>,
    /// `Some` in a world of several processes (`hierarchy.rs`): this group is one
    /// process's threads.
    outer: Option<Outer>,
    /// The simulated link every collective is paced to (`None`: run at memory speed).
    link: Option<Link>,
    /// Bytes this worker has sent on the (modelled) wire, all collectives together.
    sent: u64,
    /// While [`Comm::deferring_link`] runs: the link time owed, not yet waited out.
    owed: Option<Duration>,
}

/// Makes a group of `n` workers: one [`Comm`] per worker, `comms[r].rank() == r`.
///
/// ```
/// let comms = nanodist::collective::group(3);
/// assert_eq!(comms.len(), 3);
/// assert_eq!((comms[2].rank(), comms[2].size()), (2, 3));
/// ```
///
/// # Panics
/// If `n == 0`.
pub fn group(n: usize) -> Vec<Comm> {
    transport::endpoints(n).into_iter().map(Comm::new).collect()
}

/// Makes this process's `threads` communicators in a world of several processes joined by
/// `link` (see `hierarchy.rs`): `comms[t].rank()` is `process * threads + t`, `size()` is
/// `processes * threads`, and `all_reduce` and `barrier` span the world. Thread 0 holds the
/// link.
///
/// # Panics
/// If `threads == 0`.
pub fn hierarchical(threads: usize, link: &CrossLink) -> Vec<Comm> {
    transport::endpoints(threads)
        .into_iter()
        .map(|ep| {
            let first = ep.rank() == 0;
            let mut comm = Comm::new(ep);
            comm.outer = Some(Outer {
                process: link.process(),
                processes: link.processes(),
                link: first.then(|| link.clone()),
            });
            comm
        })
        .collect()
}

impl Algorithm {
    /// The message-passing schedule of this algorithm for `n` workers and `len` elements,
    /// or `None` for [`Algorithm::Shared`], which passes no messages.
    ///
    /// ```
    /// use nanodist::collective::Algorithm;
    /// let ring = Algorithm::Ring.schedule(4, 8).unwrap();
    /// assert_eq!(ring.steps.len(), 2 * (4 - 1));
    /// assert!(Algorithm::Shared.schedule(4, 8).is_none());
    /// ```
    pub fn schedule(self, n: usize, len: usize) -> Option<Schedule> {
        match self {
            Algorithm::Naive => Some(naive::schedule(n, len)),
            Algorithm::Ring => Some(ring::schedule(n, len)),
            Algorithm::Tree => Some(tree::schedule(n, len)),
            Algorithm::Shared => None,
        }
    }
}

impl Comm {
    fn new(ep: Endpoint) -> Self {
        Comm {
            ep,
            schedules: Vec::new(),
            outer: None,
            link: None,
            sent: 0,
            owed: None,
        }
    }

    /// Paces every later collective of this communicator to `link` (`None`: no pacing).
    /// Sub-communicators made by [`Comm::split`] afterwards inherit it.
    pub fn set_link(&mut self, link: Option<Link>) {
        self.link = link;
    }

    /// The simulated link, if any.
    pub fn link(&self) -> Option<Link> {
        self.link
    }

    /// Bytes this worker has sent on the wire so far, as a link would carry them: a
    /// message-passing algorithm's own messages, a shared-memory collective counted as the
    /// ring would send it.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Runs `f` on this communicator with the link's waits owed rather than waited: returns
    /// `f`'s result and the time still owed, which the caller waits out (with
    /// [`link::wait_until`]) under a timeline phase of its own. Without a link it is `f`.
    pub fn deferring_link<R>(&mut self, f: impl FnOnce(&mut Comm) -> R) -> (R, Duration) {
        if self.link.is_none() {
            return (f(self), Duration::ZERO);
        }
        self.owed = Some(Duration::ZERO);
        let r = f(self);
        (r, self.owed.take().unwrap_or_default())
    }

    /// Ends a collective that began at `t0` (`Some` only with a link) and whose model time
    /// on the link is `model_s`: waits out the rest, or owes it while deferring.
    fn pace(&mut self, t0: Option<Instant>, model_s: impl FnOnce(&Link) -> f64) {
        let (Some(t0), Some(link)) = (t0, self.link) else {
            return;
        };
        let deadline = t0 + Duration::from_secs_f64(model_s(&link));
        match &mut self.owed {
            Some(owed) => *owed += deadline.saturating_duration_since(Instant::now()),
            None => link::wait_until(deadline),
        }
    }

    /// The start of a paced collective: the time, only when there is a link.
    fn start(&self) -> Option<Instant> {
        self.link.map(|_| Instant::now())
    }

    /// This worker's index in the group, `0..size()` (in a world of several processes, its
    /// world rank).
    pub fn rank(&self) -> usize {
        match &self.outer {
            Some(o) => o.world_rank(self.ep.rank(), self.ep.size()),
            None => self.ep.rank(),
        }
    }

    /// Number of workers in the group (in a world of several processes, in the world).
    pub fn size(&self) -> usize {
        self.ep.size() * self.outer.as_ref().map_or(1, |o| o.processes)
    }

    /// Refuses a collective that stays inside one group of threads, on a communicator that
    /// spans several processes (see `hierarchy.rs`).
    fn local_only(&self, what: &str) {
        assert!(
            self.outer.as_ref().is_none_or(|o| o.processes == 1),
            "Comm::{what} runs inside one process; across processes only all_reduce and \
             barrier do"
        );
    }

    /// Sums `buf` across all workers, in place: afterwards every worker's `buf` holds the
    /// element-wise sum of everyone's, with exactly the same bits on every worker.
    ///
    /// The summation order is fixed per algorithm (see its file), so repeated runs give
    /// identical results.
    ///
    /// ```
    /// use nanodist::collective::{group, Algorithm};
    /// let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
    ///     let handles: Vec<_> = group(2).into_iter().map(|mut comm| s.spawn(move || {
    ///         let mut grad = vec![comm.rank() as f32 + 1.0; 5]; // worker r contributes r + 1
    ///         comm.all_reduce(&mut grad, Algorithm::Ring).unwrap();
    ///         grad
    ///     })).collect();
    ///     handles.into_iter().map(|h| h.join().unwrap()).collect()
    /// });
    /// assert_eq!(sums, vec![vec![3.0; 5], vec![3.0; 5]]);
    /// ```
    pub fn all_reduce<T: Element>(
        &mut self,
        buf: &mut [T],
        algo: Algorithm,
    ) -> Result<(), CommError> {
        let (n, t0, elem) = (self.ep.size(), self.start(), std::mem::size_of::<T>());
        if n > 1 {
            let bytes = (buf.len() * elem) as f64;
            match algo {
                Algorithm::Shared => {
                    shared::all_reduce(&mut self.ep, buf)?;
                    self.sent += (2.0 * (n - 1) as f64 / n as f64 * bytes) as u64;
                    self.pace(t0, |l| l.ring_all_reduce_s(n, bytes));
                }
                Algorithm::Naive | Algorithm::Ring | Algorithm::Tree => {
                    let sched = self.schedule(algo, buf.len());
                    schedule::execute(&mut self.ep, &sched, buf)?;
                    self.sent += link::schedule_bytes_from(&sched, self.ep.rank(), elem);
                    self.pace(t0, |l| l.schedule_s(&sched, elem));
                }
            }
        }
        let Some(outer) = &self.outer else {
            return Ok(());
        };
        // Across processes: thread 0 sums the process's sums, then shares the result.
        if let Some(link) = &outer.link {
            link.lock().all_reduce(T::elems(buf))?;
        }
        if self.ep.size() > 1 {
            shared::broadcast(&mut self.ep, buf, 0)?;
        }
        Ok(())
    }

    /// Sums chunk `rank` of `buf` across all workers into this worker's `buf`; returns that
    /// chunk's range, [`chunk_range`]`(buf.len(), size, rank)`. The rest of `buf` is left as
    /// it was. Sums in rank order (`x0 + x1 + ... + x(N-1)`), through shared memory.
    pub fn reduce_scatter<T: Element>(&mut self, buf: &mut [T]) -> Result<Range<usize>, CommError> {
        self.local_only("reduce_scatter");
        let mine = chunk_range(buf.len(), self.size(), self.rank());
        if self.size() > 1 {
            let t0 = self.start();
            shared::reduce_scatter(&mut self.ep, buf, None)?;
            self.half_done(t0, std::mem::size_of_val(buf));
        }
        Ok(mine)
    }

    /// [`Comm::reduce_scatter`] with uneven chunks, as `MPI_Reduce_scatterv`: each worker
    /// names its own range `mine` of `buf` and ends with the sum of that range there. The
    /// workers' ranges must be disjoint (checked: a panic otherwise); together they need not
    /// cover `buf`. Sums in rank order. A sharded optimizer whose shards start at fixed
    /// boundaries uses it.
    pub fn reduce_scatter_ranges<T: Element>(
        &mut self,
        buf: &mut [T],
        mine: Range<usize>,
    ) -> Result<(), CommError> {
        if self.size() > 1 {
            shared::reduce_scatter(&mut self.ep, buf, Some(mine))?;
        }
        Ok(())
    }

    /// [`Comm::all_gather`] with uneven chunks: each worker contributes its own range `mine`
    /// of `buf`; afterwards every worker's `buf` holds every worker's range. The ranges must
    /// be disjoint (checked).
    pub fn all_gather_ranges<T: Element>(
        &mut self,
        buf: &mut [T],
        mine: Range<usize>,
    ) -> Result<(), CommError> {
        if self.size() > 1 {
            shared::all_gather(&mut self.ep, buf, Some(mine))?;
        }
        Ok(())
    }

    /// Each worker contributes chunk `rank` of its `buf` ([`chunk_range`]); afterwards every
    /// worker's `buf` holds every worker's chunk. The inverse of [`Comm::reduce_scatter`]:
    /// the two in a row are an all-reduce.
    pub fn all_gather<T: Element>(&mut self, buf: &mut [T]) -> Result<(), CommError> {
        self.local_only("all_gather");
        if self.size() > 1 {
            let t0 = self.start();
            shared::all_gather(&mut self.ep, buf, None)?;
            self.half_done(t0, std::mem::size_of_val(buf));
        }
        Ok(())
    }

    /// Counts and paces half a ring (a reduce-scatter or an all-gather) of `bytes`.
    fn half_done(&mut self, t0: Option<Instant>, bytes: usize) {
        let (n, bytes) = (self.size(), bytes as f64);
        self.sent += ((n - 1) as f64 / n as f64 * bytes) as u64;
        self.pace(t0, |l| l.half_s(n, bytes));
    }

    /// Copies worker `root`'s `buf` into every worker's `buf`.
    ///
    /// # Panics
    /// If `root >= size()`.
    pub fn broadcast<T: Element>(&mut self, buf: &mut [T], root: usize) -> Result<(), CommError> {
        self.local_only("broadcast");
        assert!(
            root < self.size(),
            "broadcast from worker {root} in a group of {}",
            self.size()
        );
        if self.size() > 1 {
            // a binomial tree on a link: ceil(log2 n) rounds of one whole message
            let t0 = self.start();
            shared::broadcast(&mut self.ep, buf, root)?;
            let bytes = std::mem::size_of_val(buf) as f64;
            let rounds = self.size().next_power_of_two().trailing_zeros() as f64;
            if self.rank() == root {
                self.sent += bytes as u64;
            }
            self.pace(t0, |l| rounds * l.message_s(bytes));
        }
        Ok(())
    }

    /// Sends a copy of `data` to worker `to` of this group: a point-to-point message, as a
    /// pipeline stage sends its activations to the next. Never blocks; the receiver takes
    /// it with [`Comm::recv`]. Messages from one worker to another arrive in order.
    pub fn send<T: Element>(&mut self, to: usize, data: &[T]) -> Result<(), CommError> {
        self.local_only("send");
        self.sent += std::mem::size_of_val(data) as u64;
        self.ep.send(to, data)
    }

    /// Waits for the next message from worker `from` and copies it into `buf`.
    ///
    /// # Panics
    /// If the message's length is not `buf.len()` (both sides must agree on the shape).
    pub fn recv<T: Element>(&mut self, from: usize, buf: &mut [T]) -> Result<(), CommError> {
        self.local_only("recv");
        let (me, t0) = (self.rank(), self.start());
        let bytes = std::mem::size_of_val(buf) as f64;
        // on a link, a message lasts at least its model time from when it is awaited
        let r = self.ep.recv(from, |data: &[T]| {
            assert_eq!(
                data.len(),
                buf.len(),
                "worker {from} sent worker {me} {} elements, it expected {}",
                data.len(),
                buf.len()
            );
            buf.copy_from_slice(data);
        });
        self.pace(t0, |l| l.message_s(bytes));
        r
    }

    /// Whether a message from worker `from` has arrived, so that [`Comm::recv`] would not
    /// wait for it: a pipeline stage asks before it waits, and does other work if not
    /// (MPI's `MPI_Iprobe`).
    pub fn probe(&self, from: usize) -> bool {
        self.local_only("probe");
        self.ep.probe(from)
    }

    /// Waits until every worker has called `barrier`.
    pub fn barrier(&mut self) -> Result<(), CommError> {
        self.ep.barrier()?;
        let Some(outer) = &self.outer else {
            return Ok(());
        };
        // thread 0 waits for the other processes while its own threads wait for it
        if let Some(link) = &outer.link {
            link.lock().barrier()?;
        }
        self.ep.barrier()
    }

    /// Splits the group into sub-groups, as `MPI_Comm_split` does: the workers that pass
    /// the same `colour` form a new group, ranked by `(key, rank in this group)`.
    ///
    /// A collective call: every worker of this group calls it (with its own colour and
    /// key). Each gets a [`Comm`] of its sub-group, which is a group like any other: every
    /// collective and every algorithm runs on it, it breaks on its own when one of *its*
    /// workers leaves ([`CommError::PeerGone`] names the rank in the sub-group), and it can
    /// be split again. This communicator stays usable beside it.
    ///
    /// ```text
    ///   group(6) as a 2 x 3 grid      rows: split(r / 3, r)      columns: split(r % 3, r)
    ///        0  1  2                  {0 1 2} {3 4 5}            {0 3} {1 4} {2 5}
    ///        3  4  5                  worker 4 is rank 1 of 3    worker 4 is rank 1 of 2
    ///
    ///   1. all_gather everyone's (colour, key)           on this group
    ///   2. my sub-group: the workers of my colour, sorted by (key, rank); my place = my rank
    ///   3. its rank 0 makes the sub-group's endpoints and sends each member its own
    ///      (a point-to-point message on this group); the others wait for theirs
    /// ```
    ///
    /// ```
    /// use nanodist::collective::{group, Algorithm};
    /// let rows: Vec<(usize, usize, f32)> = std::thread::scope(|s| {
    ///     let handles: Vec<_> = group(4).into_iter().map(|mut comm| s.spawn(move || {
    ///         let r = comm.rank();
    ///         let mut row = comm.split(r / 2, r).unwrap(); // rows {0, 1} and {2, 3}
    ///         let mut x = [r as f32];
    ///         row.all_reduce(&mut x, Algorithm::Ring).unwrap();
    ///         (row.rank(), row.size(), x[0])
    ///     })).collect();
    ///     handles.into_iter().map(|h| h.join().unwrap()).collect()
    /// });
    /// assert_eq!(rows, [(0, 2, 1.0), (1, 2, 1.0), (0, 2, 5.0), (1, 2, 5.0)]);
    /// ```
    pub fn split(&mut self, colour: usize, key: usize) -> Result<Comm, CommError> {
        self.local_only("split");
        let (n, me) = (self.size(), self.rank());
        // table[2j], table[2j + 1]: worker j's colour and key; chunk j of 2n is exactly that
        // pair, so an all-gather fills in everyone's.
        let mut table = vec![0usize; 2 * n];
        table[2 * me..2 * me + 2].copy_from_slice(&[colour, key]);
        self.all_gather(&mut table)?;
        let mut members: Vec<usize> = (0..n).filter(|&j| table[2 * j] == colour).collect();
        members.sort_by_key(|&j| (table[2 * j + 1], j));
        let ep = if members[0] == me {
            // Endpoint 0 is ours; endpoint i goes to the member ranked i.
            let mut eps = transport::endpoints(members.len()).into_iter();
            let mine = eps.next().expect("a group of at least one");
            for (ep, &to) in eps.zip(&members[1..]) {
                self.ep.send_value(to, ep)?;
            }
            mine
        } else {
            self.ep.recv_value::<Endpoint>(members[0])?
        };
        let mut sub = Comm::new(ep);
        sub.link = self.link;
        Ok(sub)
    }

    /// The schedule of `algo` for this group and `len` elements, built once and cached.
    fn schedule(&mut self, algo: Algorithm, len: usize) -> Arc<Schedule> {
        if let Some((_, _, s)) = self
            .schedules
            .iter()
            .find(|(a, l, _)| *a == algo && *l == len)
        {
            return Arc::clone(s);
        }
        let s = Arc::new(
            algo.schedule(self.ep.size(), len)
                .expect("a message-passing algorithm"),
        );
        if self.schedules.len() == SCHEDULE_CACHE {
            self.schedules.remove(0);
        }
        self.schedules.push((algo, len, Arc::clone(&s)));
        s
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Comm")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::Algorithm;

    /// Within a step no worker receives into a range it also sends (or receives twice into
    /// overlapping ranges except to reduce in order), so simulation == threads.
    #[test]
    fn no_worker_sends_what_it_receives_in_the_same_step() {
        for algo in [Algorithm::Naive, Algorithm::Ring, Algorithm::Tree] {
            for n in 1..=9 {
                for len in [0, 1, 5, 8, 13] {
                    let s = algo.schedule(n, len).unwrap();
                    for step in &s.steps {
                        for a in &step.transfers {
                            for b in step.transfers.iter().filter(|b| b.from == a.to) {
                                let overlap =
                                    a.range.start < b.range.end && b.range.start < a.range.end;
                                assert!(!overlap, "{algo} n={n} len={len}: {a:?} / {b:?}");
                            }
                        }
                    }
                }
            }
        }
    }
}
