//! The communicator: one endpoint per worker, and the point-to-point messages under the
//! message-passing algorithms.
//!
//! ```text
//!   group(3) -> [Comm 0, Comm 1, Comm 2]        each moved into its worker's thread
//!
//!   Comm r holds:  to[j]   Sender   --channel (r -> j)-->   Receiver  from[r] of Comm j
//!                  shared: Arc<Shared>  (barrier counters, "who left", buffer addresses)
//!                  spare:  message buffers to reuse, so a collective allocates nothing
//! ```
//!
//! There is one channel per ordered pair of workers. Messages between a pair arrive in the
//! order they were sent, and every worker runs the same schedule, so a receive always takes
//! exactly the message it expects: no tags needed.
//!
//! Rust note: a message is a `Vec<T>` boxed as `Box<dyn Any + Send>`, so one channel type
//! carries `f32`, `f64` and `i64` buffers. Sending *moves* the vector: the sender cannot
//! touch it afterwards, and the receiver, once done, keeps it in `spare` for its own next
//! send. Buffers circulate between workers instead of being allocated per call.

use std::any::Any;
use std::ops::Range;
use std::sync::Arc;

use crossbeam::channel::{unbounded, Receiver, Sender, TryRecvError};

use super::schedule::{self, Schedule};
use super::sync::Group;
use super::window::Slots;
use super::{chunk_range, shared, Algorithm, CommError, Element};

/// A message: a `Vec<T>` of some [`Element`] type.
type Packet = Box<dyn Any + Send>;

/// Schedules kept per endpoint (training reuses a handful of bucket sizes).
const SCHEDULE_CACHE: usize = 16;

/// What all endpoints of a group share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Barrier counters and the "somebody left" flag.
    pub sync: Group,
    /// Where each worker's buffer is during a shared-memory collective.
    pub slots: Slots,
}

/// One worker's endpoint of a group: its rank, its channels, and the shared state.
///
/// Made by [`group`]; move each into its worker's thread. All collectives take `&mut self`:
/// a worker runs one collective at a time. Dropping it (also by a panic unwinding the
/// thread) tells the other workers that this one has left.
pub struct Comm {
    rank: usize,
    size: usize,
    pub(crate) shared: Arc<Shared>,
    /// `to[j]`: the channel from this worker to worker `j` (`to[rank]` is unused).
    to: Vec<Sender<Packet>>,
    /// `from[j]`: the channel from worker `j` to this worker.
    from: Vec<Receiver<Packet>>,
    /// Message buffers received earlier, reused for sending.
    spare: Vec<Packet>,
    /// How many barriers this worker has arrived at (the shared-memory window uses two).
    epoch: usize,
    /// Schedules built earlier, by (algorithm, length).
    schedules: Vec<(Algorithm, usize, Arc<Schedule>)>,
    /// Scratch for the shared-memory window: the peers' buffer addresses.
    pub(crate) peers: Vec<usize>,
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
    assert!(
        n > 0,
        "collective::group: a group needs at least one worker"
    );
    let shared = Arc::new(Shared {
        sync: Group::new(n),
        slots: Slots::new(n),
    });
    // Channel (src -> dst): its sender goes to src, its receiver to dst.
    let mut to: Vec<Vec<Sender<Packet>>> = (0..n).map(|_| Vec::with_capacity(n)).collect();
    let mut from: Vec<Vec<Receiver<Packet>>> = (0..n).map(|_| Vec::with_capacity(n)).collect();
    for src_to in to.iter_mut() {
        for dst_from in from.iter_mut() {
            let (s, r) = unbounded();
            src_to.push(s);
            dst_from.push(r);
        }
    }
    to.into_iter()
        .zip(from)
        .enumerate()
        .map(|(rank, (to, from))| Comm {
            rank,
            size: n,
            shared: Arc::clone(&shared),
            to,
            from,
            spare: Vec::new(),
            epoch: 0,
            schedules: Vec::new(),
            peers: Vec::with_capacity(n),
        })
        .collect()
}

impl Comm {
    /// This worker's index in the group, `0..size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of workers in the group.
    pub fn size(&self) -> usize {
        self.size
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
        if self.size == 1 {
            return Ok(());
        }
        match algo {
            Algorithm::Shared => shared::all_reduce(self, buf),
            Algorithm::Naive | Algorithm::Ring | Algorithm::Tree => {
                let sched = self.schedule(algo, buf.len());
                schedule::execute(self, &sched, buf)
            }
        }
    }

    /// Sums chunk `rank` of `buf` across all workers into this worker's `buf`; returns that
    /// chunk's range, [`chunk_range`]`(buf.len(), size, rank)`. The rest of `buf` is left as
    /// it was. Sums in rank order (`x0 + x1 + ... + x(N-1)`), through shared memory.
    pub fn reduce_scatter<T: Element>(&mut self, buf: &mut [T]) -> Result<Range<usize>, CommError> {
        let mine = chunk_range(buf.len(), self.size, self.rank);
        if self.size > 1 {
            shared::reduce_scatter(self, buf)?;
        }
        Ok(mine)
    }

    /// Each worker contributes chunk `rank` of its `buf` ([`chunk_range`]); afterwards every
    /// worker's `buf` holds every worker's chunk. The inverse of [`Comm::reduce_scatter`]:
    /// the two in a row are an all-reduce.
    pub fn all_gather<T: Element>(&mut self, buf: &mut [T]) -> Result<(), CommError> {
        if self.size > 1 {
            shared::all_gather(self, buf)?;
        }
        Ok(())
    }

    /// Copies worker `root`'s `buf` into every worker's `buf`.
    ///
    /// # Panics
    /// If `root >= size()`.
    pub fn broadcast<T: Element>(&mut self, buf: &mut [T], root: usize) -> Result<(), CommError> {
        assert!(
            root < self.size,
            "broadcast from worker {root} in a group of {}",
            self.size
        );
        if self.size > 1 {
            shared::broadcast(self, buf, root)?;
        }
        Ok(())
    }

    /// Waits until every worker has called `barrier`.
    pub fn barrier(&mut self) -> Result<(), CommError> {
        self.epoch += 1;
        self.shared
            .sync
            .barrier(self.rank, self.epoch)
            .map_err(|rank| CommError::PeerGone { rank })
    }

    /// The epoch of the next barrier; the shared-memory window uses two per collective.
    pub(crate) fn next_epoch(&mut self) -> usize {
        self.epoch += 1;
        self.epoch
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
            algo.schedule(self.size, len)
                .expect("a message-passing algorithm"),
        );
        if self.schedules.len() == SCHEDULE_CACHE {
            self.schedules.remove(0);
        }
        self.schedules.push((algo, len, Arc::clone(&s)));
        s
    }

    /// Sends a copy of `data` to worker `to`. Never blocks (the channels are unbounded).
    pub(crate) fn send<T: Element>(&mut self, to: usize, data: &[T]) -> Result<(), CommError> {
        // Reuse a spare Vec<T> if there is one; its capacity grows to the largest message.
        let mut packet = match self.spare.iter().position(|p| p.is::<Vec<T>>()) {
            Some(i) => self.spare.swap_remove(i),
            None => Box::new(Vec::<T>::with_capacity(data.len())),
        };
        let v = packet
            .downcast_mut::<Vec<T>>()
            .expect("checked by is::<Vec<T>>");
        v.clear();
        v.extend_from_slice(data);
        self.to[to].send(packet).map_err(|_| {
            let sync = &self.shared.sync;
            sync.poison(to);
            CommError::PeerGone {
                rank: sync.poisoned().unwrap_or(to),
            }
        })
    }

    /// Waits for the next message from worker `from` and hands it to `use_it`.
    pub(crate) fn recv<T: Element>(
        &mut self,
        from: usize,
        use_it: impl FnOnce(&[T]),
    ) -> Result<(), CommError> {
        let rx = &self.from[from];
        let mut got = None;
        self.shared
            .sync
            .wait_until(|| match rx.try_recv() {
                Ok(p) => {
                    got = Some(p);
                    Ok(true)
                }
                Err(TryRecvError::Empty) => Ok(false),
                Err(TryRecvError::Disconnected) => Err(from),
            })
            .map_err(|rank| CommError::PeerGone { rank })?;
        let packet = got.expect("set when ready");
        let data = packet.downcast_ref::<Vec<T>>().unwrap_or_else(|| {
            panic!(
                "worker {from} sent worker {} a buffer of a different element type than {}: \
                 all workers must call the same collectives on the same types",
                self.rank,
                std::any::type_name::<T>()
            )
        });
        use_it(data);
        if self.spare.len() < 4 * self.size {
            self.spare.push(packet);
        }
        Ok(())
    }
}

impl Drop for Comm {
    /// Leaving. A panicking worker (this runs while its thread unwinds) breaks the group at
    /// once; a worker that just finished leaves quietly, and only a peer that still needs
    /// it gets [`CommError::PeerGone`]. Either way nobody hangs.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared.sync.poison(self.rank);
        }
        self.shared.sync.leave(self.rank);
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Comm")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}
