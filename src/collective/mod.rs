//! Collectives: how worker threads share and combine their gradients.
//!
//! After `backward`, every worker holds a gradient computed on its own shard of the batch.
//! Before the optimizer step they must all hold the *sum* of those gradients. An operation
//! that every worker of a group enters together, and that combines or spreads data across
//! all of them, is a **collective**; the sum-everywhere one is the **all-reduce**.
//!
//! ```text
//!   before                         after all_reduce (SUM)
//!   worker 0: [1 1 1 1]            worker 0: [6 6 6 6]
//!   worker 1: [2 2 2 2]    ---->   worker 1: [6 6 6 6]
//!   worker 2: [3 3 3 3]            worker 2: [6 6 6 6]
//! ```
//!
//! [`group`]`(n)` makes one [`Comm`] (communicator) per worker; each is moved into its
//! worker's thread. Besides [`Comm::all_reduce`] there are its two halves,
//! [`Comm::reduce_scatter`] (each worker ends with the sum of *its* chunk) and
//! [`Comm::all_gather`] (each worker contributes its chunk, all end with all of them), plus
//! [`Comm::broadcast`] and [`Comm::barrier`]. [`Comm::split`] cuts a group into sub-groups.
//!
//! # Two layers
//!
//! The **transport** at the bottom moves data between workers and knows nothing of sums;
//! the **collectives** on top are written against the transport alone; the communicator
//! that a worker calls sits above both and picks the algorithm. Every file uses only files
//! below it:
//!
//! ```text
//!   communicator  comm.rs        Comm: group(n), split, all_reduce(buf, algo) -> dispatch
//!   ------------------------------------------------------------------------------------
//!   collectives   naive.rs ring.rs tree.rs    each builds a Schedule (who sends what to whom)
//!                 schedule.rs                 Schedule, and the executor: runs one with send/recv
//!                 shared.rs                   all-reduce, reduce-scatter, all-gather, broadcast
//!                                             on the shared-memory window
//!   ------------------------------------------------------------------------------------
//!   transport     transport.rs   Endpoint: rank, size, send, recv, barrier, window, "I left"
//!                 window.rs      a window onto every worker's buffer for one collective
//!                 sync.rs        the one way to wait: spin, then sleep; barrier; who left
//!   ------------------------------------------------------------------------------------
//!   leaves        element.rs (Element, chunk_range)  algorithm.rs (Algorithm)  error.rs
//!                 link.rs (Link: a simulated network, its alpha-beta time per collective)
//! ```
//!
//! The `nanodist allreduce` command (`src/bin/nanodist/allreduce.rs`, in the application)
//! sits above the communicator.
//!
//! # Across processes
//!
//! The message-passing algorithms need only a [`Wire`] (`wire.rs`: rank, size, send, recv),
//! which the threads' `Endpoint` implements and so does `mpi::MpiEndpoint` (feature `mpi`):
//! the same ring code runs between threads and between MPI processes. A run over several
//! processes is hierarchical (`hierarchy.rs`): [`hierarchical`] makes communicators whose
//! `all_reduce` sums inside the process, then across processes over a [`CrossProcess`] link
//! held by thread 0, then shares the result back.
//!
//! ```text
//!   comm.rs        Comm (+ Outer: process, link)  --all_reduce-->  local sum, link, broadcast
//!   hierarchy.rs   CrossProcess (trait), CrossLink           mpi.rs: MpiLink (MPI_Allreduce | ring)
//!   wire.rs        Wire: Endpoint (threads) | MpiEndpoint (MPI point-to-point)
//! ```
//!
//! # Sub-groups
//!
//! [`Comm::split`]`(colour, key)` works as `MPI_Comm_split`: every worker of a group calls
//! it, and the workers with equal colour form a new group, ranked by `(key, rank)`. A grid
//! of workers gets its rows and its columns this way, each a group of its own:
//!
//! ```text
//!   group(6), as 2 rows x 3 columns          row    = comm.split(rank / 3, rank)
//!                                            column = comm.split(rank % 3, rank)
//!        col 0  col 1  col 2
//!   row 0 [ 0  |  1  |  2 ]   <- a row group of 3: ranks 0 1 2 in it
//!   row 1 [ 3  |  4  |  5 ]   <- ranks 0 1 2 in it
//!           ^ a column group of 2: worker 0 is its rank 0, worker 3 its rank 1
//! ```
//!
//! A sub-group has its own channels, barrier and window: collectives on a row and on a
//! column never mix, though as in any group, the members of each call its collectives in
//! the same order. A worker that leaves breaks exactly the groups it belonged to.
//!
//! # The algorithms
//!
//! Four ways to compute the same all-reduce, one file each. Their cost in the
//! **alpha-beta model**: sending a message of `b` bytes costs `alpha + b * beta`, where
//! alpha is the fixed cost of a message (a hand-off between threads here, a network
//! round trip in a cluster) and beta the cost per byte (copying and adding it).
//! `S` is the buffer size in bytes, `N` the number of workers, `p` the largest power of two
//! `<= N`.
//!
//! | algorithm | file | messages on the critical path | time in the alpha-beta model |
//! |---|---|---|---|
//! | [`Algorithm::Naive`]  | `naive.rs`  | 2(N-1) at worker 0  | `2(N-1) alpha + 2(N-1) S beta` |
//! | [`Algorithm::Ring`]   | `ring.rs`   | 2(N-1)              | `2(N-1) alpha + 2(N-1)/N S beta` |
//! | [`Algorithm::Tree`]   | `tree.rs`   | 2 log2 p (+2 if N != p) | `2 log2 p alpha + 2(p-1)/p S beta` (+`2(alpha + S beta)`) |
//! | [`Algorithm::Shared`] | `shared.rs` | 2 barriers          | `2 alpha_barrier + S (read) + S (write) beta_mem` |
//!
//! Ring is bandwidth-optimal among message-passing algorithms (each worker sends
//! `2(N-1)/N * S` bytes however large N is); the tree pays fewer alphas, which wins for
//! small buffers; naive funnels everything through one worker. Shared memory skips messages
//! altogether: threads of one process can read each other's buffers, so each worker sums its
//! own slice straight out of all the buffers and writes the result back into all of them.
//! `nanodist allreduce` measures all four and fits alpha and beta.
//!
//! Every algorithm adds in a **fixed, documented order** (see each file), so a run repeats
//! bit for bit, and every worker ends with exactly the same bits. Floating-point addition
//! is not associative, so *which* fixed order differs between algorithms and the results
//! may differ in the last bits between algorithms; for `i64` (the deterministic training
//! mode's fixed-point gradients) wrapping addition is associative and all agree exactly.
//!
//! # The contract
//!
//! - All workers of a group call the same collectives, in the same order, with buffers of
//!   the same length and element type (and the same `root`/`algo`). Like MPI, a worker that
//!   skips a collective leaves the others waiting: that is a bug in the caller. Mismatched
//!   lengths or types are detected where cheap and panic.
//! - A *slow* worker is fine: the others wait for it, however long (there are no timeouts).
//! - A worker that *leaves* (panics, or drops its [`Comm`]) breaks the group: every
//!   collective that needs it returns [`CommError::PeerGone`] promptly, on every worker, and
//!   the group cannot be used again.
//! - Chunks are always [`chunk_range`]`(len, N, rank)`.
//!
//! # How waiting works
//!
//! A waiting worker spins on an atomic for a moment, then sleeps until a peer wakes it:
//!
//! ```text
//!   waiter:   check ---spin 50 us to 1 ms (2 us if more workers than cores)---> sleep
//!                ^        (the length: twice the waiter's recent short waits)      |
//!                +------------------------- woken ---------------------------------+
//!   notifier: send a message    -> wake its receiver
//!             last barrier arrival, leaving, failing -> wake everyone
//! ```
//!
//! The spin keeps the fast path fast: on 2 cores, a peer a few microseconds behind is
//! caught without the 10-50 us an OS wake-up costs, and the model's 3.2 MB all-reduce stays
//! near 100 us. The sleep keeps slow paths fair: a waiter that kept spinning or yielding
//! would keep asking for a core, so with more workers than cores, or beside other busy
//! processes, it would take CPU from the workers that have work, and a run would slow far
//! more than the CPU it lost. Asleep, it asks for nothing. `cargo bench --bench
//! oversubscribed` measures both effects (the figures are in `docs/performance.md`). The
//! one waiting primitive, with its "a peer has left" check and its proof that no wake-up is
//! lost, is in [`sync`], and is model-checked with loom, sleeps and wake-ups included.
//!
//! Rust note: a [`Comm`] is `Send` but not `Clone`: the type system makes "one endpoint per
//! worker, owned by its thread" the only way to use it, and dropping it (its endpoint's
//! `Drop`, which also runs when the thread panics and unwinds) is how the others learn that
//! it left. A second handle on
//! worker 0's endpoint, which could enter a collective twice, does not compile (E0599: no
//! method `clone`):
//! ```compile_fail,E0599
//! let comms = nanodist::collective::group(2);
//! let again = comms[0].clone();
//! ```

mod algorithm;
mod comm;
mod element;
mod error;
mod hierarchy;
pub mod link;
#[cfg(feature = "mpi")]
pub mod mpi;
mod naive;
mod ring;
pub mod schedule;
mod shared;
pub mod sync;
mod transport;
mod tree;
mod window;
mod wire;

pub use algorithm::{Algorithm, UnknownAlgorithm};
pub use comm::{group, hierarchical, Comm};
pub use element::{chunk_range, Element, Elems};
pub use error::CommError;
pub use hierarchy::{CrossAlgorithm, CrossLink, CrossProcess};
pub use link::Link;
pub use schedule::{Op, Schedule, Step, Transfer};
pub use wire::Wire;
