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
//! [`group`]`(n)` makes one [`Comm`] (communicator endpoint) per worker; each is moved into
//! its worker's thread. Besides [`Comm::all_reduce`] there are its two halves,
//! [`Comm::reduce_scatter`] (each worker ends with the sum of *its* chunk) and
//! [`Comm::all_gather`] (each worker contributes its chunk, all end with all of them), plus
//! [`Comm::broadcast`] and [`Comm::barrier`].
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
//! The budget is tight: the model's 3.2 MB of gradients should be summed across 2 workers in
//! well under 100 us, and waking a sleeping thread through the OS costs 10-50 us. So workers
//! never sleep in the OS while waiting for each other: they spin on an atomic for a while,
//! then `yield_now` (so more workers than cores still make progress). The one waiting
//! primitive, with its "a peer has left" check, is in [`sync`] and is model-checked with loom.
//!
//! Rust note: a [`Comm`] is `Send` but not `Clone`: the type system makes "one endpoint per
//! worker, owned by its thread" the only way to use it, and its `Drop` (which also runs when
//! the thread panics and unwinds) is how the others learn that it left. A second handle on
//! worker 0's endpoint, which could enter a collective twice, does not compile (E0599: no
//! method `clone`):
//! ```compile_fail,E0599
//! let comms = nanodist::collective::group(2);
//! let again = comms[0].clone();
//! ```

mod comm;
mod error;
mod naive;
mod ring;
pub mod schedule;
mod shared;
pub mod sync;
mod tree;
mod window;

pub use comm::{group, Comm};
pub use error::CommError;
pub use schedule::{Op, Schedule, Step, Transfer};

use serde::{Deserialize, Serialize};

/// The all-reduce algorithms nanodist implements, each in its own file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Everyone sends to worker 0, which sums and sends back (parameter-server style).
    Naive,
    /// Reduce-scatter then all-gather around a ring: 2(N-1) steps.
    Ring,
    /// Recursive halving and doubling: about 2 log2 N steps.
    Tree,
    /// Each worker sums a disjoint slice straight out of the others' buffers.
    Shared,
}

impl Algorithm {
    /// Every algorithm, in the order tables list them.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Naive,
        Algorithm::Ring,
        Algorithm::Tree,
        Algorithm::Shared,
    ];

    /// The lowercase name used on the command line and in JSON (`"ring"`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Naive => "naive",
            Algorithm::Ring => "ring",
            Algorithm::Tree => "tree",
            Algorithm::Shared => "shared",
        }
    }

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

impl std::str::FromStr for Algorithm {
    type Err = String;

    /// The algorithm of a lowercase name (`"ring"`), as the command line takes it.
    fn from_str(s: &str) -> Result<Self, String> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                format!(
                    "'{s}' is not an all-reduce algorithm: use one of naive, ring, tree, shared"
                )
            })
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A number the collectives can sum: `f32`, `f64` and `i64`.
///
/// `add` is the reduction. For the integers it is *wrapping* addition: the deterministic
/// training mode all-reduces `i64` fixed-point gradients, and wrapping addition is
/// associative and commutative, so any summation order gives identical bits.
///
/// Rust note: the bounds say what the collectives need: `Copy` (elements are copied into
/// messages), `Send + Sync` (other threads read and write the buffers), `'static` (messages
/// are type-erased as `Box<dyn Any>` and downcast back on arrival).
pub trait Element: Copy + Send + Sync + Default + PartialEq + std::fmt::Debug + 'static {
    /// The sum of two elements.
    fn add(a: Self, b: Self) -> Self;
}

impl Element for f32 {
    #[inline(always)]
    fn add(a: Self, b: Self) -> Self {
        a + b
    }
}

impl Element for f64 {
    #[inline(always)]
    fn add(a: Self, b: Self) -> Self {
        a + b
    }
}

impl Element for i64 {
    #[inline(always)]
    fn add(a: Self, b: Self) -> Self {
        a.wrapping_add(b)
    }
}

/// The element range of chunk `i` when `len` elements are cut into `n` chunks.
///
/// The first `len % n` chunks get one element more than the rest, so chunk lengths differ
/// by at most one; when `len < n` the last chunks are empty. Every collective uses this
/// chunking: after [`Comm::reduce_scatter`], worker `r` holds the sum of
/// `chunk_range(len, n, r)`.
///
/// ```
/// use nanodist::collective::chunk_range;
/// assert_eq!(chunk_range(10, 4, 0), 0..3);
/// assert_eq!(chunk_range(10, 4, 1), 3..6);
/// assert_eq!(chunk_range(10, 4, 3), 8..10);
/// assert_eq!(chunk_range(2, 4, 3), 2..2); // shorter than n: empty chunks at the end
/// ```
///
/// # Panics
/// If `n == 0` or `i >= n`.
pub fn chunk_range(len: usize, n: usize, i: usize) -> std::ops::Range<usize> {
    assert!(n > 0, "chunk_range: cannot cut into 0 chunks");
    assert!(i < n, "chunk_range: chunk {i} of only {n}");
    let (base, rem) = (len / n, len % n);
    let start = i * base + i.min(rem);
    let end = start + base + usize::from(i < rem);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_tile_the_buffer() {
        for len in 0..40 {
            for n in 1..9 {
                let mut next = 0;
                for i in 0..n {
                    let r = chunk_range(len, n, i);
                    assert_eq!(r.start, next, "len {len} n {n} chunk {i}");
                    let even = r.len() == len / n || r.len() == len / n + 1;
                    assert!(even, "len {len} n {n} chunk {i}: {} floats", r.len());
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>().unwrap(), a);
            assert_eq!(a.to_string(), a.name());
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.name()));
        }
    }
}
