//! The hierarchical all-reduce: threads inside a process, a link between processes.
//!
//! Clusters have fast links inside a node and slower ones between nodes, so their
//! all-reduce has two levels. nanodist's has the same shape, with threads for the node's
//! GPUs and MPI processes for the nodes:
//!
//! ```text
//!   process 0 (threads 0 1)          process 1 (threads 0 1)          world rank =
//!   t0 [a]  t1 [b]                   t0 [c]  t1 [d]                   process * threads + thread
//!     \ local all-reduce /             \ local all-reduce /
//!      t0, t1: [a+b]                    t0, t1: [c+d]          1. inside each process (shared memory)
//!      t0 ======== cross all-reduce ======== t0                2. one thread per process, over the link
//!      t0: [a+b+c+d]                    t0: [a+b+c+d]
//!     / local broadcast \              / local broadcast \     3. back to the other threads
//!   t0, t1: [a+b+c+d]                t0, t1: [a+b+c+d]
//! ```
//!
//! The link between processes is a [`CrossProcess`] (MPI in `mpi.rs`, behind the cargo
//! feature `mpi`). A communicator made by [`hierarchical`] answers `rank()` and `size()`
//! with the world's numbers and runs `all_reduce` and `barrier` across the world, so code
//! written against a [`Comm`] (the data-parallel worker loop, its evaluation, its replica
//! check) runs across processes unchanged. Its other collectives (reduce-scatter,
//! all-gather, broadcast, point-to-point, split) stay inside one group of threads and
//! refuse a world of several processes.
//!
//! In deterministic mode the gradients are `i64` fixed-point numbers, whose sum is the same
//! in any order: so any layout of processes and threads gives the same bits.

use std::sync::{Arc, Mutex, MutexGuard};

use super::element::Elems;
use super::error::CommError;

/// The link between the processes of a run: one object per process, held by the thread that
/// represents the process (thread 0).
///
/// Every process calls the same methods in the same order, as with any collective.
pub trait CrossProcess: Send {
    /// This process's index, `0..processes()`.
    fn process(&self) -> usize;

    /// Number of processes.
    fn processes(&self) -> usize;

    /// Sums `buf` across processes, in place, with the same bits on every process.
    fn all_reduce(&mut self, buf: Elems<'_>) -> Result<(), CommError>;

    /// Waits until every process has called `barrier`.
    fn barrier(&mut self) -> Result<(), CommError>;

    /// A short name for reports, e.g. `"MPI_Allreduce"`.
    fn name(&self) -> String;
}

/// A shared handle on a process's [`CrossProcess`] link: what a run is given, and what its
/// thread 0 uses.
///
/// Rust note: `Arc<Mutex<..>>` because the link outlives any one run and is used by
/// whichever thread is thread 0's communication thread at the time; the lock is never
/// contended (one thread per process uses it), so it costs a few nanoseconds.
#[derive(Clone)]
pub struct CrossLink {
    link: Arc<Mutex<Box<dyn CrossProcess>>>,
    process: usize,
    processes: usize,
}

impl CrossLink {
    /// Wraps a process's link.
    pub fn new(link: Box<dyn CrossProcess>) -> Self {
        let (process, processes) = (link.process(), link.processes());
        CrossLink {
            link: Arc::new(Mutex::new(link)),
            process,
            processes,
        }
    }

    /// This process's index.
    pub fn process(&self) -> usize {
        self.process
    }

    /// Number of processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The link, for one call.
    pub fn lock(&self) -> MutexGuard<'_, Box<dyn CrossProcess>> {
        // A panic while holding it has ended this process's part in the run anyway.
        self.link.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for CrossLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossLink")
            .field("process", &self.process)
            .field("processes", &self.processes)
            .finish_non_exhaustive()
    }
}

/// Where a thread's communicator sits in a world of several processes.
#[derive(Debug)]
pub(crate) struct Outer {
    /// This process's index.
    pub process: usize,
    /// Number of processes.
    pub processes: usize,
    /// The link, held by thread 0 only.
    pub link: Option<CrossLink>,
}

impl Outer {
    /// The world rank of thread `thread` of `threads`.
    pub fn world_rank(&self, thread: usize, threads: usize) -> usize {
        self.process * threads + thread
    }
}

/// How thread 0 of each process sums across processes (`--mpi-allreduce`).
///
/// ```
/// use nanodist::collective::CrossAlgorithm;
/// assert_eq!("ring".parse::<CrossAlgorithm>(), Ok(CrossAlgorithm::Ring));
/// assert_eq!(CrossAlgorithm::Mpi.to_string(), "mpi");
/// assert!("star".parse::<CrossAlgorithm>().is_err());
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum CrossAlgorithm {
    /// The MPI library's own `MPI_Allreduce`.
    #[default]
    Mpi,
    /// nanodist's ring (`ring.rs`), over MPI point-to-point messages.
    Ring,
}

impl CrossAlgorithm {
    /// Both, in the order tables list them.
    pub const ALL: [CrossAlgorithm; 2] = [CrossAlgorithm::Mpi, CrossAlgorithm::Ring];

    /// The lowercase name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            CrossAlgorithm::Mpi => "mpi",
            CrossAlgorithm::Ring => "ring",
        }
    }
}

impl std::fmt::Display for CrossAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CrossAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mpi" => Ok(CrossAlgorithm::Mpi),
            "ring" => Ok(CrossAlgorithm::Ring),
            _ => Err(format!(
                "unknown cross-process all-reduce '{s}': use mpi (MPI_Allreduce) or ring (nanodist's ring over MPI messages)"
            )),
        }
    }
}
