//! Model checks of the synchronisation core (`collective::sync`) with loom.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target-loom cargo test --release --test loom
//! ```
//!
//! Under `--cfg loom` the core's atomics, mutex and condvar are loom's (and waits skip the
//! spinning, so every wait that is not ready at once sleeps on its bell), and each
//! `loom::model` below runs its closure under every interleaving (and every weak-memory outcome that the
//! orderings allow), up to a preemption bound. Data is passed in `Relaxed` atomics on
//! purpose: the only thing that can make a peer's value visible is the barrier's
//! Release/Acquire, so a broken barrier shows up as a stale read.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use loom::sync::Arc;
use loom::thread;
use nanodist::collective::sync::Group;

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(3, f)
}

/// `preemptions`: how many times loom may switch threads where the program did not yield.
fn model_bounded(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    // Every round of a spinning wait is a branch: allow long waits.
    b.max_branches = 100_000;
    b.check(f);
}

/// Two workers exchange values through a barrier, twice: each sees the other's first value
/// (the barrier orders write before read), and the second write cannot overtake the peer's
/// first read (the second barrier).
#[test]
fn barrier_publishes_writes_and_can_be_reused() {
    model(|| {
        let g = Arc::new(Group::new(2));
        let slot = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let worker = |r: usize, g: Arc<Group>, slot: Arc<[AtomicUsize; 2]>| {
            slot[r].store(r + 1, Relaxed);
            g.barrier(r, 1).unwrap();
            assert_eq!(
                slot[1 - r].load(Relaxed),
                2 - r,
                "worker {r} saw a stale value"
            );
            g.barrier(r, 2).unwrap();
            slot[r].store(10 + r, Relaxed);
        };
        let (g1, s1) = (g.clone(), slot.clone());
        let t = thread::spawn(move || worker(1, g1, s1));
        worker(0, g, slot);
        t.join().unwrap();
    });
}

/// A worker that completes the barrier and leaves right after does not fail the peer that
/// is still on its way out of the same barrier.
#[test]
fn leaving_after_the_barrier_is_not_an_error() {
    model(|| {
        let g = Arc::new(Group::new(2));
        let g1 = g.clone();
        let t = thread::spawn(move || {
            g1.barrier(1, 1).unwrap();
            g1.leave(1);
        });
        assert_eq!(g.barrier(0, 1), Ok(()));
        t.join().unwrap();
    });
}

/// A worker that leaves without arriving makes the barrier fail instead of hang.
#[test]
fn leaving_before_the_barrier_fails_it() {
    model(|| {
        let g = Arc::new(Group::new(2));
        let g1 = g.clone();
        let t = thread::spawn(move || g1.leave(1));
        assert_eq!(g.barrier(0, 1), Err(1));
        t.join().unwrap();
    });
}

/// Three workers, as in a ring: worker 1 waits for a message from worker 2, worker 0 for
/// a message from worker 1. Worker 2 has left without sending. Worker 1's wait fails, which
/// poisons the group, so worker 0 (waiting on worker 1, who is alive and never leaves)
/// fails too, and both name worker 2. (Worker 2 left before the others started: that
/// keeps the model to two threads, small enough to explore fully.)
#[test]
fn failure_reaches_workers_waiting_on_someone_else() {
    model(|| {
        let g = Arc::new(Group::new(3));
        g.leave(2);
        // A message from `from` that never comes: the wait can only end by failing.
        let wait_for_message = |g: &Group, me: usize, from: usize| {
            g.wait_until(me, || {
                if g.has_left(from) {
                    Err(from)
                } else {
                    Ok(false)
                }
            })
        };
        let g1 = g.clone();
        let t1 = thread::spawn(move || wait_for_message(&g1, 1, 2));
        assert_eq!(wait_for_message(&g, 0, 1), Err(2));
        assert_eq!(t1.join().unwrap(), Err(2));
    });
}

/// A panicking worker poisons the group: a barrier that cannot complete fails at once.
#[test]
fn poison_fails_a_waiting_barrier() {
    model(|| {
        let g = Arc::new(Group::new(2));
        let g1 = g.clone();
        let t = thread::spawn(move || g1.poison(1));
        assert_eq!(g.barrier(0, 1), Err(1));
        t.join().unwrap();
    });
}

/// A waiter that finds nothing sleeps on its bell, and one `wake` per message wakes it:
/// no wake-up is lost in any interleaving of arming, sleeping and ringing (a lost one
/// would leave worker 0 asleep forever, which loom reports as a deadlock). The messages
/// are `Relaxed` stores, so only the bell's ordering can make them visible.
#[test]
fn a_sleeping_waiter_wakes_for_each_message() {
    model(|| {
        let g = Arc::new(Group::new(2));
        let inbox = Arc::new(AtomicUsize::new(0));
        let (g1, inbox1) = (g.clone(), inbox.clone());
        let t = thread::spawn(move || {
            for _ in 0..2 {
                inbox1.fetch_add(1, Relaxed);
                g1.wake(0);
            }
        });
        assert_eq!(g.wait_until(0, || Ok(inbox.load(Relaxed) == 2)), Ok(()));
        t.join().unwrap();
    });
}

/// A worker asleep waiting for a message from a peer that leaves instead wakes up and
/// fails: leaving rings every bell.
#[test]
fn a_sleeping_waiter_wakes_when_its_peer_leaves() {
    model(|| {
        let g = Arc::new(Group::new(2));
        let g1 = g.clone();
        let t = thread::spawn(move || g1.leave(1));
        let wait = g.wait_until(0, || if g.has_left(1) { Err(1) } else { Ok(false) });
        assert_eq!(wait, Err(1));
        t.join().unwrap();
    });
}
