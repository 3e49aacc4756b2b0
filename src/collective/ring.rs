//! Ring all-reduce: reduce-scatter then all-gather around a ring, N-1 steps each.
//!
//! The buffer is cut into N chunks (`chunk_range`). Worker `r` only
//! ever sends to `r + 1` and receives from `r - 1` (mod N). N = 4, chunk `c` of worker `r`
//! written `r.c`:
//!
//! ```text
//!        +-----> w1 -----+
//!        |               v        every link busy in every step
//!        w0              w2
//!        ^               |
//!        +------ w3 <----+
//!
//!   reduce-scatter, step s: worker r sends chunk (r - s - 1) mod N to worker r + 1,
//!   which adds its own chunk to it                               [c] = chunk c
//!
//!   step 0:  w0 [3] -> w1   w1 [0] -> w2   w2 [1] -> w3   w3 [2] -> w0
//!   step 1:  w0 [2] -> w1   w1 [3] -> w2   w2 [0] -> w3   w3 [1] -> w0
//!   step 2:  w0 [1] -> w1   w1 [2] -> w2   w2 [3] -> w3   w3 [0] -> w0
//!            now worker r holds the full sum of chunk r
//!
//!   all-gather, step s: worker r sends chunk (r - s) mod N to r + 1, which copies it
//!   step 3:  w0 [0] -> w1   w1 [1] -> w2   w2 [2] -> w3   w3 [3] -> w0
//!   step 4:  w0 [3] -> w1   w1 [0] -> w2   ...
//!   step 5:  ...  now every worker holds every summed chunk
//! ```
//!
//! **Summation order:** chunk `c` starts at worker `c + 1`, travels round the ring and
//! finishes at worker `c`: `((x(c+1) + x(c+2)) + ...) + x(c)`, ranks mod N (the incoming
//! partial sum is the left operand). Each chunk is summed once and then copied around, so
//! all workers hold the same bits.
//!
//! **Cost (alpha-beta):** `2(N-1)` steps, each moving one chunk of `S/N` bytes per worker,
//! all links at once: `2(N-1) alpha + 2(N-1)/N S beta`. The bytes each worker sends do not
//! grow with N (bandwidth-optimal), but the alphas do: for small buffers the tree wins.

use super::element::chunk_range;
use super::schedule::{Op, Schedule, Step, Transfer};

/// The ring schedule for `n` workers and `len` elements (n chunks).
pub(crate) fn schedule(n: usize, len: usize) -> Schedule {
    let transfer = |r: usize, c: usize, op: Op| Transfer {
        from: r,
        to: (r + 1) % n,
        chunks: c..c + 1,
        range: chunk_range(len, n, c),
        op,
    };
    let mut steps = Vec::with_capacity(2 * n.saturating_sub(1));
    for s in 0..n - 1 {
        let op = Op::Reduce {
            incoming_first: true,
        };
        steps.push(Step {
            phase: "reduce-scatter",
            transfers: (0..n)
                .map(|r| transfer(r, (r + 2 * n - s - 1) % n, op))
                .collect(),
        });
    }
    for s in 0..n - 1 {
        steps.push(Step {
            phase: "all-gather",
            transfers: (0..n)
                .map(|r| transfer(r, (r + n - s) % n, Op::Copy))
                .collect(),
        });
    }
    Schedule::new(n, len, n, steps)
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_times_n_minus_one_steps_and_worker_r_owns_chunk_r() {
        for n in 2..8 {
            let s = super::schedule(n, 64);
            assert_eq!(s.steps.len(), 2 * (n - 1));
            // The first all-gather step: every worker sends the chunk it finished.
            for t in &s.steps[n - 1].transfers {
                assert_eq!(t.chunks, t.from..t.from + 1);
            }
        }
    }
}
