//! The synchronisation core: one way to wait, one barrier, one "somebody left" flag.
//!
//! Every wait in the collectives goes through [`Group::wait_until`]: check a condition,
//! spin briefly, then sleep until someone changes what the waiter waits for, and give up
//! with the leaver's rank as soon as a peer has left the group.
//!
//! ```text
//!   wait_until(me, ready):             ready() -> Ok(true) | Ok(false) | Err(rank gone)
//!     loop {
//!       ready()?        Ok(true)  -> Ok
//!                       Err(r)    -> poison the group with r, Err(r)
//!       poisoned by r?            -> ready() once more (it may be done already), else Err(r)
//!       spinning for less than my budget           -> spin_loop(), again
//!         (group fits the cores: learnt by my bell, SPIN to SPIN_LONG; else SPIN_OVERSUBSCRIBED)
//!       not armed yet               -> arm my bell, check ready() again
//!       armed                       -> sleep until my bell rings, again
//!     }
//!
//!   a bell, one per worker:  state = (rings << 1) | ASLEEP
//!     waiter arms:   seen = fetch_or(ASLEEP)     then checks ready() once more
//!     waiter sleeps: lock; while state == seen | ASLEEP: condvar.wait
//!     notifier:      change what waiters wait for (a message, an arrival, a departure),
//!                    then fetch_add(2); if ASLEEP was set: lock, notify
//!     after a wait:  the owner sets its next spin budget from how long it waited
//! ```
//!
//! No wake-up is lost: the waiter's `fetch_or` and the notifier's `fetch_add` touch the
//! same word, so one of them comes first. If the notifier's does, the waiter's Acquire
//! sees the change (the Release of the `fetch_add` covers everything the notifier did
//! before it) and its next `ready()` is true. If the waiter's does, the notifier sees
//! `ASLEEP` and takes the lock, which it can only get before the waiter checks `state`
//! (then the waiter sees the new count and does not sleep) or once it sleeps in the
//! condvar (then the notify wakes it).
//!
//! Who rings which bell: a message rings its receiver's ([`Group::wake`], called by the
//! transport after every send); the last arrival at a barrier, a departure and poisoning
//! ring everyone's. A ring on a bell nobody sleeps on costs one atomic add.
//!
//! Why spin first: waking a sleeping thread through the OS costs 10-50 us, and 2 workers
//! on 2 cores sum the model's 3.2 MB of gradients in about 100 us, so a peer that is a few
//! microseconds behind is caught by spinning. Why then sleep: a spinning or yielding
//! waiter keeps asking for a core it cannot use, so with more workers than cores, or
//! beside other busy processes, the workers that have real work lose the CPU to it. A
//! sleeping waiter asks for nothing, and the run slows only in proportion to the CPU it
//! gets. A group larger than the machine's cores spins for [`SPIN_OVERSUBSCRIBED`] only:
//! its peers are likely not running at all.
//!
//! How long to spin, in a group that fits the cores: from [`SPIN`] up to [`SPIN_LONG`],
//! twice what the waiter's recent waits lasted while they stayed under [`SPIN_LONG`], and
//! back to [`SPIN`] after a longer one (`Bell::learn` says why). A tensor-parallel group
//! meets more than 30 times a step, every meeting a few hundred microseconds of compute
//! after the last: with a fixed 50 us, one OS wake-up turns into a sleep at every one.
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
//! barrier `e + 1` still counts as arrived for a slow one at `e`: nothing to reset. One
//! shared counter of arrivals, bumped with a read-modify-write after each store, orders
//! the arrivals, so the last one to bump it sees everyone arrived and rings every bell.
//! Release/Acquire make everything a worker wrote before arriving visible to everyone
//! that passed the barrier: that is what lets the shared-memory algorithm read its peers'
//! buffers.
//!
//! Built with `RUSTFLAGS="--cfg loom"`, the atomics, the mutex and the condvar come from
//! the loom model checker, the spinning is skipped (every wait that is not ready at once
//! arms and sleeps), and `tests/loom.rs` explores every interleaving of small barriers,
//! exchanges, sleeps, wake-ups and departures on this exact code.
//!
//! Rust note: `#[cfg(loom)]` swaps the imports, not the code: the logic checked by loom is
//! the logic that runs.

use crossbeam::utils::CachePadded;

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(loom)]
use loom::sync::{Condvar, Mutex};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::{Condvar, Mutex};

use std::sync::PoisonError;
use std::time::{Duration, Instant};

/// How long a waiter spins at least before it sleeps, when its group has no more workers
/// than the machine has cores: long enough to catch a peer that is a few microseconds
/// behind without paying an OS wake-up (10-50 us), short next to a training step.
pub const SPIN: Duration = Duration::from_micros(50);
/// The longest a waiter spins, in a group that fits the cores, after waits short enough
/// for a spin of this length to have caught them (see `Bell::learn`).
pub const SPIN_LONG: Duration = Duration::from_micros(1000);
/// How long a waiter spins in a group with more workers than cores: its peers probably
/// are not running, and every spin takes CPU from one that has work.
pub const SPIN_OVERSUBSCRIBED: Duration = Duration::from_micros(2);

/// Bit 0 of a bell's state: its worker is (about to be) asleep on it.
const ASLEEP: usize = 1;
/// One ring: the count in the bits above bit 0.
const RING: usize = 2;

/// One worker's bell: where it sleeps, and how others wake it.
#[derive(Debug)]
struct Bell {
    /// `(rings << 1) | ASLEEP`.
    state: AtomicUsize,
    lock: Mutex<()>,
    rung: Condvar,
    /// How long the owner spins in its next wait, in microseconds, when its group fits the
    /// cores: learnt from its last waits ([`Bell::learn`]). Only the owner reads or writes
    /// it, so it orders nothing (Relaxed, and a plain std atomic even under loom, which
    /// never spins).
    spin_us: std::sync::atomic::AtomicU32,
}

impl Bell {
    fn new() -> Self {
        Bell {
            state: AtomicUsize::new(0),
            lock: Mutex::new(()),
            rung: Condvar::new(),
            spin_us: std::sync::atomic::AtomicU32::new(SPIN.as_micros() as u32),
        }
    }

    /// The owner's spin budget for its next wait, in a group that fits the cores.
    fn spin(&self) -> Duration {
        let us = self.spin_us.load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_micros(us as u64)
    }

    /// The owner's wait lasted `waited` (spinning and sleeping): sets the next budget.
    ///
    /// ```text
    ///   waited <= SPIN_LONG:  budget = max(2 x waited, 7/8 x budget), within [SPIN, SPIN_LONG]
    ///   waited >  SPIN_LONG:  budget = SPIN
    /// ```
    ///
    /// A peer that arrives within a millisecond is running beside the waiter, a few
    /// microseconds of compute or one OS wake-up behind: spinning twice the last such wait
    /// catches the next one without a sleep. That matters because a sleep feeds itself:
    /// the woken waiter starts its next piece of work one wake-up (tens to hundreds of
    /// microseconds on a virtual machine) after its peer, so at the next barrier its peer
    /// waits that long, sleeps too if its spin is shorter, and so on at every collective;
    /// a tensor-parallel step has more than 30. A longer wait means the peer is not
    /// running (more busy threads than cores, other processes): spinning would hold the
    /// core it needs, so the budget drops to [`SPIN`] at once.
    fn learn(&self, waited: Duration) {
        let next = if waited <= SPIN_LONG {
            (2 * waited).max(self.spin() * 7 / 8).clamp(SPIN, SPIN_LONG)
        } else {
            SPIN
        };
        let us = next.as_micros() as u32;
        (self.spin_us).store(us, std::sync::atomic::Ordering::Relaxed);
    }

    /// Called by a notifier *after* its change: wakes the owner if it sleeps. AcqRel: the
    /// owner's next `arm` (or the check after its sleep) sees the change.
    fn ring(&self) {
        if self.state.fetch_add(RING, Ordering::AcqRel) & ASLEEP != 0 {
            // Taking the lock waits until the owner either has not yet checked the state
            // (and will see the new count) or sleeps in the condvar (and hears the notify).
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.rung.notify_one();
        }
    }

    /// The owner announces that it is going to sleep; returns the state to sleep on.
    fn arm(&self) -> usize {
        self.state.fetch_or(ASLEEP, Ordering::AcqRel) | ASLEEP
    }

    /// The owner sleeps until the bell rang since `arm` returned `seen`.
    fn sleep(&self, seen: usize) {
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while self.state.load(Ordering::Acquire) == seen {
            guard = self
                .rung
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(guard);
        self.disarm();
    }

    /// The owner is awake: notifiers need not take the lock.
    fn disarm(&self) {
        self.state.fetch_and(!ASLEEP, Ordering::AcqRel);
    }
}

/// The state all workers of a group share for waiting: arrivals, departures, failure.
#[derive(Debug)]
pub struct Group {
    /// `arrived[r]`: the number of barriers worker `r` has arrived at. One cache line each,
    /// so a worker storing its counter does not slow down the others' spinning reads.
    arrived: Box<[CachePadded<AtomicUsize>]>,
    /// How many arrivals there were in all: the order in which they happened.
    arrivals: CachePadded<AtomicUsize>,
    /// `left[r]`: worker `r` dropped its endpoint. On its own that breaks nothing (it may
    /// have finished everything); it breaks a wait that still needs worker `r`.
    left: Box<[AtomicBool]>,
    /// 0 while the group is healthy; `r + 1` once a wait failed because worker `r` is gone,
    /// or worker `r` panicked. From then on every wait that is not already satisfied fails,
    /// so the failure reaches workers that were waiting on someone else.
    poisoned: AtomicUsize,
    /// `bells[r]`: where worker `r` sleeps when it waits.
    bells: Box<[CachePadded<Bell>]>,
    /// How long a waiter spins before it sleeps: [`SPIN_OVERSUBSCRIBED`] in a group with
    /// more workers than cores, zero under loom; `None`: the group fits the cores, and each
    /// waiter spins for what its bell learnt ([`Bell::learn`]).
    spin: Option<Duration>,
}

impl Group {
    /// The shared state of a group of `n` workers: nobody arrived, left, or failed.
    pub fn new(n: usize) -> Self {
        assert!(n > 0, "a group needs at least one worker");
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        Group {
            arrived: (0..n)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
            arrivals: CachePadded::new(AtomicUsize::new(0)),
            left: (0..n).map(|_| AtomicBool::new(false)).collect(),
            poisoned: AtomicUsize::new(0),
            bells: (0..n).map(|_| CachePadded::new(Bell::new())).collect(),
            spin: if cfg!(loom) {
                Some(Duration::ZERO)
            } else if n <= cores {
                None
            } else {
                Some(SPIN_OVERSUBSCRIBED)
            },
        }
    }

    /// Number of workers.
    pub fn size(&self) -> usize {
        self.arrived.len()
    }

    /// Worker `rank` leaves (drops its endpoint). Release: everything it did before (its
    /// last arrivals, its last messages) is visible to whoever sees it gone. Wakes every
    /// sleeper, since any of them may have been waiting for it.
    pub fn leave(&self, rank: usize) {
        self.left[rank].store(true, Ordering::Release);
        self.wake_all();
    }

    /// Has worker `rank` left?
    pub fn has_left(&self, rank: usize) -> bool {
        self.left[rank].load(Ordering::Acquire)
    }

    /// Breaks the group because of worker `rank`. Only the first cause is kept. Wakes every
    /// sleeper: all unfinished waits must now fail.
    pub fn poison(&self, rank: usize) {
        let _ = self
            .poisoned
            .compare_exchange(0, rank + 1, Ordering::AcqRel, Ordering::Acquire);
        self.wake_all();
    }

    /// The worker whose departure broke the group, if it is broken.
    pub fn poisoned(&self) -> Option<usize> {
        match self.poisoned.load(Ordering::Acquire) {
            0 => None,
            r => Some(r - 1),
        }
    }

    /// Wakes worker `rank` if it sleeps in a wait. Call it after changing something that
    /// worker may wait for (the transport calls it after sending `rank` a message).
    pub fn wake(&self, rank: usize) {
        self.bells[rank].ring();
    }

    /// Wakes every sleeping worker of the group.
    fn wake_all(&self) {
        for bell in self.bells.iter() {
            bell.ring();
        }
    }

    /// Worker `me` waits until `ready()` says `Ok(true)`.
    ///
    /// `ready()` returns `Ok(false)` to keep waiting and `Err(rank)` when it can never
    /// become true because worker `rank` is gone; that poisons the group. A poisoned group
    /// ends the wait with `Err` unless `ready()`, checked once more, is already true.
    /// Whoever makes `ready()` true must then call [`Group::wake`]`(me)` (arrivals,
    /// departures and poisoning do it themselves), or a sleeping waiter never notices.
    pub fn wait_until(
        &self,
        me: usize,
        mut ready: impl FnMut() -> Result<bool, usize>,
    ) -> Result<(), usize> {
        let mut waiting = Waiting::new(&self.bells[me], self.spin);
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
            waiting.next();
        }
    }

    /// Worker `me` waits until `ready()` is true, whatever happens to the group. Only for
    /// waits that are guaranteed to end, like leaving the shared-memory window (see
    /// `window.rs`).
    pub fn wait_for(&self, me: usize, mut ready: impl FnMut() -> bool) {
        let mut waiting = Waiting::new(&self.bells[me], self.spin);
        while !ready() {
            waiting.next();
        }
    }

    /// Worker `rank` arrives at its `epoch`-th barrier (epochs count from 1). The arrival
    /// that completes the barrier wakes everyone.
    pub fn arrive(&self, rank: usize, epoch: usize) {
        self.arrived[rank].store(epoch, Ordering::Release);
        // The read-modify-writes on `arrivals` form one chain: the last arrival to bump it
        // acquires every earlier arrival's store, so it sees the barrier complete.
        self.arrivals.fetch_add(1, Ordering::AcqRel);
        if self.all_arrived(epoch) {
            self.wake_all();
        }
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
        self.wait_until(rank, || self.arrivals(epoch))
    }
}

/// One waiter's progress through a wait: spinning, then armed, then asleep.
struct Waiting<'a> {
    bell: &'a Bell,
    spin: Duration,
    /// The budget is the bell's, and the wait's length teaches the bell the next one.
    learns: bool,
    /// When the spinning began; `None` until the first round.
    since: Option<Instant>,
    /// Rounds spun so far (the clock is read only every few rounds).
    spins: u32,
    /// `Some(seen)` once armed: the bell's state to sleep on.
    armed: Option<usize>,
}

impl<'a> Waiting<'a> {
    /// `spin`: the group's fixed budget, or `None` for the bell's learnt one.
    fn new(bell: &'a Bell, spin: Option<Duration>) -> Self {
        Waiting {
            bell,
            spin: spin.unwrap_or_else(|| bell.spin()),
            learns: spin.is_none(),
            since: None,
            spins: 0,
            armed: None,
        }
    }

    /// One round of waiting, after `ready()` said no: spin, or arm (the caller checks
    /// `ready()` again before the sleep), or sleep until the bell rings.
    fn next(&mut self) {
        if let Some(seen) = self.armed.take() {
            self.bell.sleep(seen);
            return;
        }
        if self.spinning() {
            std::hint::spin_loop();
            return;
        }
        self.armed = Some(self.bell.arm());
    }

    /// Still within the spin budget?
    fn spinning(&mut self) -> bool {
        if self.spin.is_zero() {
            return false;
        }
        self.spins += 1;
        if self.spins % 64 != 1 {
            return true;
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        since.elapsed() < self.spin
    }
}

impl Drop for Waiting<'_> {
    /// A wait that ends while armed (ready() turned true after `arm`) disarms, so that
    /// notifiers stop taking the lock.
    fn drop(&mut self) {
        if self.armed.is_some() {
            self.bell.disarm();
        }
        // a wait that was over at the first look says nothing about how long to spin
        if let (true, Some(since)) = (self.learns, self.since) {
            self.bell.learn(since.elapsed());
        }
    }
}
