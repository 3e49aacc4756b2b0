//! The synchronisation core: one way to wait, one barrier, one "somebody left" flag.
//!
//! Every wait in the collectives goes through [`Group::wait_until`]: spin on a condition,
//! and give up with the leaver's rank as soon as a peer has left the group. Nothing here
//! sleeps in the OS on the fast path, because a futex wake-up (10-50 us) would eat the
//! whole latency budget of an all-reduce:
//!
//! ```text
//!   wait_until(ready):                 ready() -> Ok(true) | Ok(false) | Err(rank gone)
//!     loop {
//!       ready()?        Ok(true)  -> Ok          (the common case, after a few spins)
//!                       Err(r)    -> poison the group with r, Err(r)
//!       poisoned by r?            -> ready() once more (it may be done already), else Err(r)
//!       backoff: spin_loop() x SPINS, then yield_now() (more workers than cores still
//!                progress), and after a long wait short sleeps (a straggler that sleeps
//!                for seconds should not cost a whole core). Never an error: slow is fine.
//!     }
//! ```
//!
//! Leaving and failing are different. A worker that drops its endpoint after its last
//! collective has *left*: that is fine unless someone still needs it (a message from it,
//! its arrival at a barrier), and then that wait fails and *poisons* the group. A poisoned
//! group fails every unfinished wait, so the error also reaches the workers that were
//! waiting on somebody else (in a ring, everyone waits on a different neighbour). A worker
//! that panics poisons the group at once.
//!
//! The barrier is a set of per-worker epoch counters, each on its own cache line. Worker `r`
//! arriving at its `e`-th barrier stores `e` into `arrived[r]` (Release) and waits until
//! every counter is `>= e` (Acquire). Counters only grow, so a fast worker already at
//! barrier `e + 1` still counts as arrived for a slow one at `e`: nothing to reset.
//! Release/Acquire make everything a worker wrote before arriving visible to everyone
//! that passed the barrier: that is what lets the shared-memory algorithm read its peers'
//! buffers.
//!
//! Built with `RUSTFLAGS="--cfg loom"`, the atomics and `yield_now` come from the loom
//! model checker, and `tests/loom.rs` explores every interleaving of small barriers,
//! exchanges and departures on this exact code.
//!
//! Rust note: `#[cfg(loom)]` swaps the imports, not the code: the logic checked by loom is
//! the logic that runs.

use crossbeam::utils::CachePadded;

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(loom)]
use loom::thread::yield_now;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::thread::yield_now;

/// Spins before the first `yield_now`: about 20-50 us of `pause` instructions.
const SPINS: u32 = 1 << 10;
/// Yields before waiting turns into short sleeps (roughly a millisecond or more of waiting).
const YIELDS: u32 = 1 << 12;

/// The state all workers of a group share for waiting: arrivals, departures, failure.
#[derive(Debug)]
pub struct Group {
    /// `arrived[r]`: the number of barriers worker `r` has arrived at. One cache line each,
    /// so a worker storing its counter does not slow down the others' spinning reads.
    arrived: Box<[CachePadded<AtomicUsize>]>,
    /// `left[r]`: worker `r` dropped its endpoint. On its own that breaks nothing (it may
    /// have finished everything); it breaks a wait that still needs worker `r`.
    left: Box<[AtomicBool]>,
    /// 0 while the group is healthy; `r + 1` once a wait failed because worker `r` is gone,
    /// or worker `r` panicked. From then on every wait that is not already satisfied fails,
    /// so the failure reaches workers that were waiting on someone else.
    poisoned: AtomicUsize,
}

impl Group {
    /// The shared state of a group of `n` workers: nobody arrived, left, or failed.
    pub fn new(n: usize) -> Self {
        assert!(n > 0, "a group needs at least one worker");
        Group {
            arrived: (0..n)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
            left: (0..n).map(|_| AtomicBool::new(false)).collect(),
            poisoned: AtomicUsize::new(0),
        }
    }

    /// Number of workers.
    pub fn size(&self) -> usize {
        self.arrived.len()
    }

    /// Worker `rank` leaves (drops its endpoint). Release: everything it did before (its
    /// last arrivals, its last messages) is visible to whoever sees it gone.
    pub fn leave(&self, rank: usize) {
        self.left[rank].store(true, Ordering::Release);
    }

    /// Has worker `rank` left?
    pub fn has_left(&self, rank: usize) -> bool {
        self.left[rank].load(Ordering::Acquire)
    }

    /// Breaks the group because of worker `rank`. Only the first cause is kept.
    pub fn poison(&self, rank: usize) {
        let _ = self
            .poisoned
            .compare_exchange(0, rank + 1, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The worker whose departure broke the group, if it is broken.
    pub fn poisoned(&self) -> Option<usize> {
        match self.poisoned.load(Ordering::Acquire) {
            0 => None,
            r => Some(r - 1),
        }
    }

    /// Waits until `ready()` says `Ok(true)`.
    ///
    /// `ready()` returns `Ok(false)` to keep waiting and `Err(rank)` when it can never
    /// become true because worker `rank` is gone; that poisons the group. A poisoned group
    /// ends the wait with `Err` unless `ready()`, checked once more, is already true.
    pub fn wait_until(&self, mut ready: impl FnMut() -> Result<bool, usize>) -> Result<(), usize> {
        let mut waited = 0u32;
        loop {
            match ready() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(rank) => {
                    // Report the original cause: `rank` may only have left because of it.
                    self.poison(rank);
                    return Err(self.poisoned().unwrap_or(rank));
                }
            }
            if let Some(rank) = self.poisoned() {
                return match ready() {
                    Ok(true) => Ok(()),
                    _ => Err(rank),
                };
            }
            backoff(&mut waited);
        }
    }

    /// Waits until `ready()` is true, whatever happens to the group. Only for waits that
    /// are guaranteed to end, like leaving the shared-memory window (see `window.rs`).
    pub fn wait_for(&self, mut ready: impl FnMut() -> bool) {
        let mut waited = 0u32;
        while !ready() {
            backoff(&mut waited);
        }
    }

    /// Worker `rank` arrives at its `epoch`-th barrier (epochs count from 1).
    pub fn arrive(&self, rank: usize, epoch: usize) {
        self.arrived[rank].store(epoch, Ordering::Release);
    }

    /// Has every worker arrived at its `epoch`-th barrier (or a later one)?
    pub fn all_arrived(&self, epoch: usize) -> bool {
        self.arrived
            .iter()
            .all(|a| a.load(Ordering::Acquire) >= epoch)
    }

    /// Like [`Group::all_arrived`], but `Err(rank)` if worker `rank` has not arrived and
    /// has left, so never will.
    pub fn arrivals(&self, epoch: usize) -> Result<bool, usize> {
        for (rank, a) in self.arrived.iter().enumerate() {
            if a.load(Ordering::Acquire) < epoch {
                // Seeing `left` (Acquire) makes its last arrival visible: look once more.
                if self.has_left(rank) && a.load(Ordering::Acquire) < epoch {
                    return Err(rank);
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Arrive at barrier `epoch` and wait for everyone. `Err(rank)` if worker `rank` is
    /// gone and the barrier can never complete.
    pub fn barrier(&self, rank: usize, epoch: usize) -> Result<(), usize> {
        self.arrive(rank, epoch);
        self.wait_until(|| self.arrivals(epoch))
    }
}

/// One round of waiting: spin, then yield, then (after a long wait) doze.
#[inline]
fn backoff(waited: &mut u32) {
    if cfg!(loom) {
        // loom needs a yield in every spin loop to know the thread is waiting.
        yield_now();
        return;
    }
    *waited = waited.saturating_add(1);
    if *waited < SPINS {
        std::hint::spin_loop();
    } else if *waited < SPINS + YIELDS {
        yield_now();
    } else {
        // A straggler: the peer is far behind. Sleeping 50 us at a time costs nothing
        // measurable at this point and gives the core back.
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}
