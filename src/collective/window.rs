//! The shared-memory window: for the length of one collective, every worker may touch its
//! own *column* of every worker's buffer.
//!
//! Threads of one process can read each other's memory; the borrow checker just cannot
//! see that worker 1's `&mut [f32]` and worker 0's reads of it are ordered by a barrier in
//! another thread. This file is the one place that argues it by hand:
//!
//! ```text
//!            chunk 0     chunk 1     chunk 2          N = 3, column r = chunk_range(len, 3, r)
//!   buf 0  [ col 0     | col 1     | col 2     ]
//!   buf 1  [ col 0     | col 1     | col 2     ]
//!   buf 2  [ col 0     | col 1     | col 2     ]
//!             worker 0    worker 1    worker 2    <- the only worker touching that column
//!
//!   open:   publish (pointer, length, type) of my buffer -> barrier "entry"
//!           check every peer published the same length and type
//!   use:    worker r reads/writes column r of any buffer (Window::column)
//!   close:  barrier "exit" (in Drop, so a panic still waits for it) -> buffers are theirs again
//! ```
//!
//! The buffers travel between threads as raw pointers ([`SendPtr`]), never as integer
//! addresses, so every access to a peer's buffer is derived from that peer's own `&mut [T]`
//! (its provenance), which is what Rust's aliasing rules ask of raw-pointer code.
//!
//! Rust note: [`Window`] holds the `&mut [T]` borrow of the caller's buffer (as
//! `PhantomData`) until it is dropped, so the caller cannot touch its buffer while peers
//! may be writing into it; and [`Window::column`] takes `&mut self`, so at most one slice
//! into a peer's buffer is alive at a time.

use std::any::TypeId;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::element::{chunk_range, Element};
use super::error::CommError;
use super::sync::Group;

/// A raw pointer that may be handed to another thread: where a peer's buffer starts.
///
/// Raw pointers are neither `Send` nor `Sync`, because the compiler cannot know who else
/// uses the memory they point to. Here the window's protocol (the module docs) decides
/// that, so this wrapper states it once.
pub(crate) struct SendPtr<T>(pub *mut T);

// SAFETY: a SendPtr is only ever an address plus provenance that threads pass to each
// other; nothing dereferences it outside `Window::column`/`column_pair`, whose accesses are
// made exclusive (disjoint columns) and ordered (entry and exit barriers) by the window
// protocol, and whose buffer stays borrowed by its owner's `Window` for as long as any
// peer can reach it. Moving or sharing the pointer value itself between threads is
// therefore sound.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as for `Send`: a shared `&SendPtr` only lets a thread copy the pointer value.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SendPtr<T> {}

impl<T> std::fmt::Debug for SendPtr<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SendPtr({:p})", self.0)
    }
}

/// What a worker publishes about its buffer for the length of a collective.
#[derive(Clone, Copy, Debug)]
struct Desc {
    /// The buffer's first element, type-erased (`T` is checked through `ty`).
    ptr: SendPtr<()>,
    len: usize,
    ty: TypeId,
    /// The worker's column (the part of every buffer it alone touches).
    col: (usize, usize),
}

/// The published buffers of a group, one slot per worker.
#[derive(Debug)]
pub(crate) struct Slots {
    descs: Box<[Mutex<Desc>]>,
    /// `r + 1` once worker `r` panicked inside a window: the results are incomplete.
    torn: AtomicUsize,
}

impl Slots {
    pub fn new(n: usize) -> Self {
        let empty = Desc {
            ptr: SendPtr(std::ptr::null_mut()),
            len: 0,
            ty: TypeId::of::<()>(),
            col: (0, 0),
        };
        Slots {
            descs: (0..n).map(|_| Mutex::new(empty)).collect(),
            torn: AtomicUsize::new(0),
        }
    }
}

/// One worker's view of all buffers during a shared-memory collective.
pub(crate) struct Window<'a, T> {
    sync: &'a Group,
    slots: &'a Slots,
    /// `peers[j]`: where worker `j`'s buffer starts.
    peers: &'a [SendPtr<()>],
    rank: usize,
    /// This worker's column: `chunk_range(len, n, rank)`, or the one it asked for.
    col: Range<usize>,
    exit: usize,
    _buf: PhantomData<&'a mut [T]>,
}

/// Publishes `buf` as worker `rank`'s, waits (barrier `entry`) until every worker has, and
/// returns the window onto all buffers; dropping it waits at barrier `exit`. `peers` is the
/// caller's scratch for the peers' pointers, reused so that a collective allocates nothing.
///
/// `col`: this worker's column, `None` for `chunk_range(len, n, rank)`. Columns chosen by the
/// workers themselves (a sharded optimizer's uneven shards) must lie inside the buffer and
/// be disjoint: every worker checks every pair before touching a buffer.
///
/// # Panics
/// If the workers' buffers differ in length or element type, or their columns overlap (a
/// contract violation; every worker sees the same descriptors, so all of them panic before
/// touching any buffer).
pub(crate) fn open<'a, T: Element>(
    (sync, slots): (&'a Group, &'a Slots),
    rank: usize,
    (entry, exit): (usize, usize),
    peers: &'a mut Vec<SendPtr<()>>,
    buf: &'a mut [T],
    col: Option<Range<usize>>,
) -> Result<Window<'a, T>, CommError> {
    let (n, len) = (slots.descs.len(), buf.len());
    let col = col.unwrap_or_else(|| chunk_range(len, n, rank));
    let me = Desc {
        // From here on this worker reaches its own buffer only through this pointer, like
        // everyone else: `buf` itself is parked in the Window's PhantomData.
        ptr: SendPtr(buf.as_mut_ptr().cast()),
        len,
        ty: TypeId::of::<T>(),
        col: (col.start, col.end),
    };
    *slots.descs[rank].lock().expect("slot lock") = me;
    sync.barrier(rank, entry)
        .map_err(|rank| CommError::PeerGone { rank })?;
    peers.clear();
    for (j, slot) in slots.descs.iter().enumerate() {
        let d = *slot.lock().expect("slot lock");
        assert!(
            d.len == len && d.ty == me.ty,
            "shared-memory collective: worker {j} passed {} elements of another type or \
             length than worker {rank}'s {len} x {}: all workers must pass the same",
            d.len,
            std::any::type_name::<T>()
        );
        let (a, b) = d.col;
        assert!(
            a <= b && b <= len && (j == rank || b <= col.start || col.end <= a || a == b),
            "shared-memory collective: worker {j}'s column {a}..{b} overlaps worker {rank}'s \
             {col:?} or leaves the buffer of {len}: columns must be disjoint"
        );
        peers.push(d.ptr);
    }
    Ok(Window {
        sync,
        slots,
        peers,
        rank,
        col,
        exit,
        _buf: PhantomData,
    })
}

impl<T: Element> Window<'_, T> {
    /// This worker's column, `chunk_range(len, n, rank)`.
    pub fn col(&self) -> Range<usize> {
        self.col.clone()
    }

    /// This worker's column of worker `j`'s buffer.
    pub fn column(&mut self, j: usize) -> &mut [T] {
        let p = self.peers[j].0.cast::<T>();
        // SAFETY:
        // - Live and typed: `peers[j]` is the start of worker j's `&mut [T]` of `len`
        //   elements (length and TypeId checked in `open`), and `col` lies within `0..len`.
        //   Worker j keeps that borrow until its Window is dropped, after the exit barrier,
        //   which waits for our arrival, which happens when *our* Window drops; this slice
        //   borrows our Window, so it is gone by then.
        // - Exclusive: between the entry and exit barriers worker r forms slices only of
        //   column r (chunk_range(len, n, r), or its own range, checked against every
        //   peer's in `open`), and columns of different workers are disjoint;
        //   no worker touches its own buffer except through its Window. Within this worker,
        //   `&mut self` allows one such slice at a time.
        // - Ordered: each worker's writes before the collective happen-before our reads (the
        //   entry barrier: Release store of `arrived`, Acquire loads); our writes
        //   happen-before the owner's next use of its buffer (the exit barrier).
        unsafe { std::slice::from_raw_parts_mut(p.add(self.col.start), self.col.len()) }
    }

    /// This worker's column of two *different* buffers `i` and `j`, both writable.
    pub fn column_pair(&mut self, i: usize, j: usize) -> (&mut [T], &mut [T]) {
        assert_ne!(i, j, "column_pair needs two different buffers");
        let (pi, pj) = (self.peers[i].0.cast::<T>(), self.peers[j].0.cast::<T>());
        let (start, len) = (self.col.start, self.col.len());
        // SAFETY: as in `column`, for column r of two different buffers: two distinct
        // allocations, so the two slices cannot overlap each other either.
        unsafe {
            (
                std::slice::from_raw_parts_mut(pi.add(start), len),
                std::slice::from_raw_parts_mut(pj.add(start), len),
            )
        }
    }

    /// Copies this worker's column of buffer `from` into the same column of buffer `to`.
    pub fn copy_column(&mut self, from: usize, to: usize) {
        if from != to {
            let (src, dst) = self.column_pair(from, to);
            dst.copy_from_slice(src);
        }
    }

    /// Leaves the window: waits until every worker is done with every buffer.
    /// `Err` if a worker panicked inside its window (its column was not finished).
    pub fn close(self) -> Result<(), CommError> {
        let slots = self.slots;
        drop(self);
        match slots.torn.load(Ordering::Acquire) {
            0 => Ok(()),
            r => Err(CommError::PeerGone { rank: r - 1 }),
        }
    }
}

impl<T> Drop for Window<'_, T> {
    /// The exit barrier. It runs on unwinding too: a worker that panics inside the window
    /// still waits here until nobody is using its buffer, so its caller's stack frame (which
    /// owns the buffer) cannot be freed under a peer's feet.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.slots.torn.compare_exchange(
                0,
                self.rank + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        let sync = self.sync;
        sync.arrive(self.rank, self.exit);
        // No "peer gone" exit here: every worker passed the entry barrier, so every worker
        // is inside its window and reaches this barrier (normally or by unwinding).
        sync.wait_for(self.rank, || sync.all_arrived(self.exit));
    }
}
