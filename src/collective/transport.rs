//! The transport: one endpoint per worker, and everything the collectives need from "the
//! wire": point-to-point messages, a barrier, noticing that a peer has left, and a window
//! onto the peers' buffers for the shared-memory algorithm. No collective is defined here.
//!
//! ```text
//!   endpoints(3) -> [Endpoint 0, Endpoint 1, Endpoint 2]
//!
//!   Endpoint r holds:  to[j]   Sender  --channel (r -> j)-->  Receiver  from[r] of Endpoint j
//!                      shared: Arc<Shared>  (barrier counters, "who left", published buffers)
//!                      spare:  message buffers to reuse, so a collective allocates nothing
//!
//!   send(to, &[T])           copy into a message, never blocks        (channels)
//!   recv(from, |&[T]| ..)    wait for the next message from `from`    (channels + sync)
//!                            (send wakes the receiver if it sleeps: Group::wake)
//!   barrier()                everyone arrives before anyone leaves    (sync)
//!   window(&mut [T])         every worker's buffer, for one collective (window.rs)
//!   drop                     "I left": waits that need me fail, none hang
//! ```
//!
//! There is one channel per ordered pair of workers. Messages between a pair arrive in the
//! order they were sent, and every worker runs the same schedule, so a receive always takes
//! exactly the message it expects: no tags needed.
//!
//! Rust note: a message is a `Vec<T>` boxed as `Box<dyn Any + Send>`, so one channel type
//! carries `f32`, `f64` and `i64` buffers (and, once per `Comm::split`, a whole endpoint).
//! Sending *moves* the box: the sender cannot touch it afterwards, and the receiver, once
//! done, keeps it in `spare` for its own next send. Buffers circulate between workers
//! instead of being allocated per call.

use std::any::Any;
use std::sync::Arc;

use crossbeam::channel::{unbounded, Receiver, Sender, TryRecvError};

use super::element::Element;
use super::error::CommError;
use super::sync::Group;
use super::window::{self, SendPtr, Slots, Window};
use super::wire::Wire;

/// A message: a `Vec<T>` of some [`Element`] type, or another `Send` value.
type Packet = Box<dyn Any + Send>;

/// What all endpoints of a group share.
#[derive(Debug)]
struct Shared {
    /// Barrier counters and the "somebody left" flag.
    sync: Group,
    /// Where each worker's buffer is during a shared-memory collective.
    slots: Slots,
}

/// One worker's end of a group: its rank, its channels, and the shared state.
///
/// Dropping it (also by a panic unwinding the thread) tells the other workers that this
/// one has left.
pub(crate) struct Endpoint {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
    /// `to[j]`: the channel from this worker to worker `j` (`to[rank]` is unused).
    to: Vec<Sender<Packet>>,
    /// `from[j]`: the channel from worker `j` to this worker.
    from: Vec<Receiver<Packet>>,
    /// Message buffers received earlier, reused for sending.
    spare: Vec<Packet>,
    /// How many barriers this worker has arrived at (a shared-memory window uses two).
    epoch: usize,
    /// Scratch for the shared-memory window: the peers' buffers.
    peers: Vec<SendPtr<()>>,
}

/// Makes the endpoints of a new group of `n` workers, `eps[r].rank() == r`.
///
/// # Panics
/// If `n == 0`.
pub(crate) fn endpoints(n: usize) -> Vec<Endpoint> {
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
        .map(|(rank, (to, from))| Endpoint {
            rank,
            size: n,
            shared: Arc::clone(&shared),
            to,
            from,
            spare: Vec::new(),
            epoch: 0,
            peers: Vec::with_capacity(n),
        })
        .collect()
}

impl Endpoint {
    /// This worker's index in the group, `0..size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of workers in the group.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Waits until every worker has called `barrier`.
    pub fn barrier(&mut self) -> Result<(), CommError> {
        let epoch = self.next_epoch();
        self.shared
            .sync
            .barrier(self.rank, epoch)
            .map_err(|rank| CommError::PeerGone { rank })
    }

    /// The epoch of the next barrier.
    fn next_epoch(&mut self) -> usize {
        self.epoch += 1;
        self.epoch
    }

    /// Opens the shared-memory window onto every worker's `buf` (see `window.rs`); all
    /// workers of the group call it together, with buffers of the same length and type.
    pub fn window<'a, T: Element>(
        &'a mut self,
        buf: &'a mut [T],
    ) -> Result<Window<'a, T>, CommError> {
        self.window_at(buf, None)
    }

    /// [`window`](Self::window) with this worker's column chosen by the caller (`None`: the
    /// even chunk); the workers' columns must be disjoint.
    pub fn window_at<'a, T: Element>(
        &'a mut self,
        buf: &'a mut [T],
        col: Option<std::ops::Range<usize>>,
    ) -> Result<Window<'a, T>, CommError> {
        let epochs = (self.next_epoch(), self.next_epoch());
        let shared = &*self.shared;
        window::open(
            (&shared.sync, &shared.slots),
            self.rank,
            epochs,
            &mut self.peers,
            buf,
            col,
        )
    }

    /// Sends a copy of `data` to worker `to`. Never blocks (the channels are unbounded).
    pub fn send<T: Element>(&mut self, to: usize, data: &[T]) -> Result<(), CommError> {
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
        self.post(to, packet)
    }

    /// Waits for the next message from worker `from`, which must be a `Vec<T>`, and hands
    /// it to `use_it`.
    pub fn recv<T: Element>(
        &mut self,
        from: usize,
        use_it: impl FnOnce(&[T]),
    ) -> Result<(), CommError> {
        let packet = self.wait(from)?;
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

    /// Whether a message from worker `from` is waiting, so that [`Endpoint::recv`] would
    /// not block (MPI's `MPI_Iprobe`).
    pub fn probe(&self, from: usize) -> bool {
        !self.from[from].is_empty()
    }

    /// Moves `value` to worker `to` (which takes it with [`Endpoint::recv_value`]).
    pub fn send_value<V: Any + Send>(&mut self, to: usize, value: V) -> Result<(), CommError> {
        self.post(to, Box::new(value))
    }

    /// Waits for the next message from worker `from`, which must be a `V`, and returns it.
    pub fn recv_value<V: Any + Send>(&mut self, from: usize) -> Result<V, CommError> {
        let packet = self.wait(from)?;
        match packet.downcast::<V>() {
            Ok(v) => Ok(*v),
            Err(_) => panic!(
                "worker {from} sent worker {} something other than a {}: all workers must \
                 call the same collectives in the same order",
                self.rank,
                std::any::type_name::<V>()
            ),
        }
    }

    /// Puts `packet` on the channel to worker `to` and wakes `to` if it sleeps waiting for
    /// it; a closed channel means `to` has left.
    fn post(&mut self, to: usize, packet: Packet) -> Result<(), CommError> {
        let sync = &self.shared.sync;
        match self.to[to].send(packet) {
            Ok(()) => {
                sync.wake(to);
                Ok(())
            }
            Err(_) => {
                sync.poison(to);
                Err(CommError::PeerGone {
                    rank: sync.poisoned().unwrap_or(to),
                })
            }
        }
    }

    /// Waits for the next packet from worker `from`; fails if it left without sending one.
    fn wait(&mut self, from: usize) -> Result<Packet, CommError> {
        let rx = &self.from[from];
        let mut got = None;
        self.shared
            .sync
            .wait_until(self.rank, || match rx.try_recv() {
                Ok(p) => {
                    got = Some(p);
                    Ok(true)
                }
                Err(TryRecvError::Empty) => Ok(false),
                Err(TryRecvError::Disconnected) => Err(from),
            })
            .map_err(|rank| CommError::PeerGone { rank })?;
        Ok(got.expect("set when ready"))
    }
}

impl Wire for Endpoint {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send<T: Element>(&mut self, to: usize, data: &[T]) -> Result<(), CommError> {
        Endpoint::send(self, to, data)
    }

    fn recv<T: Element>(
        &mut self,
        from: usize,
        use_it: impl FnOnce(&[T]),
    ) -> Result<(), CommError> {
        Endpoint::recv(self, from, use_it)
    }
}

impl Drop for Endpoint {
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

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}
