//! Tree all-reduce: recursive halving (reduce-scatter) then recursive doubling
//! (all-gather), about `2 log2 N` steps. Non-powers-of-two first fold the extra workers in.
//!
//! Let `p` be the largest power of two `<= N`. The buffer is cut into `p` chunks.
//!
//! ```text
//!   N = 5, p = 4: worker 4 is "extra"
//!
//!   fold in    w4 --whole buffer--> w0            w0 = x0 + x4
//!   halving    d = 1: w0 <-> w1, w2 <-> w3        swap halves: w0,w2 keep chunks 0-1,
//!                                                 w1,w3 keep chunks 2-3, each adds the
//!                                                 half it received to the half it kept
//!              d = 2: w0 <-> w2, w1 <-> w3        swap quarters: w0 keeps chunk 0,
//!                                                 w2 chunk 1, w1 chunk 2, w3 chunk 3
//!   doubling   d = 2, then d = 1: the same pairs swap back what they finished (copies),
//!                                                 so each worker ends with all chunks
//!   fold out   w0 --whole buffer--> w4
//! ```
//!
//! In the halving round with distance `d`, worker `r` pairs with `r XOR d`; both hold the
//! same range of chunks; the lower half goes to the one whose bit `d` is 0.
//!
//! **Summation order:** a balanced pairwise tree over ranks: with `y(i) = x(i) + x(p+i)`
//! for the folded-in workers (`y(i) = x(i)` otherwise), the sum is
//! `((y0 + y1) + (y2 + y3)) + ((y4 + y5) + (y6 + y7))` and so on: in each pair the lower
//! rank's partial sum is the left operand. Pairwise summation also has a smaller rounding
//! error than a left-to-right sum. Each element is finished by one worker and then copied,
//! so all workers hold the same bits.
//!
//! **Cost (alpha-beta):** `2 log2 p` steps; the halving rounds move `S/2, S/4, ...` bytes
//! per worker and the doubling rounds the same back: `2 log2 p alpha + 2(p-1)/p S beta`.
//! If `N != p`, folding in and out adds `2(alpha + S beta)`. Fewer alphas than the ring's
//! `2(N-1)`, the same bytes: the better choice for small buffers and many workers.

use std::ops::Range;

use super::element::chunk_range;
use super::schedule::{Op, Schedule, Step, Transfer};

/// The tree schedule for `n` workers and `len` elements (p chunks).
pub(crate) fn schedule(n: usize, len: usize) -> Schedule {
    let p = 1usize << n.ilog2();
    let elems = |c: &Range<usize>| {
        if c.is_empty() {
            0..0
        } else {
            chunk_range(len, p, c.start).start..chunk_range(len, p, c.end - 1).end
        }
    };
    let mut steps = Vec::new();
    let whole = |from: usize, to: usize, op: Op| Transfer {
        from,
        to,
        chunks: 0..p,
        range: 0..len,
        op,
    };
    let extra = p..n;
    steps.push(Step {
        phase: "fold in the extra workers",
        transfers: extra
            .clone()
            .map(|e| {
                whole(
                    e,
                    e - p,
                    Op::Reduce {
                        incoming_first: false,
                    },
                )
            })
            .collect(),
    });

    // owned[r]: the chunks worker r is responsible for; history[k] is owned before round k.
    let mut owned: Vec<Range<usize>> = vec![0..p; p];
    let mut history = Vec::new();
    let mut d = 1;
    while d < p {
        history.push(owned.clone());
        let mut transfers = Vec::with_capacity(p);
        for (r, c) in owned.iter_mut().enumerate() {
            // Split my chunks in two: keep one half, give the other to my partner.
            let mid = c.start + c.len() / 2;
            let (keep, give) = if r & d == 0 {
                (c.start..mid, mid..c.end)
            } else {
                (mid..c.end, c.start..mid)
            };
            let partner = r ^ d;
            transfers.push(Transfer {
                from: r,
                to: partner,
                range: elems(&give),
                chunks: give,
                op: Op::Reduce {
                    incoming_first: r < partner,
                },
            });
            *c = keep;
        }
        steps.push(Step {
            phase: "reduce-scatter (recursive halving)",
            transfers,
        });
        d *= 2;
    }
    // Doubling: undo the rounds from the last, each worker sending what it finished.
    while let Some(before) = history.pop() {
        d /= 2;
        let transfers = (0..p)
            .map(|r| Transfer {
                from: r,
                to: r ^ d,
                range: elems(&owned[r]),
                chunks: owned[r].clone(),
                op: Op::Copy,
            })
            .collect();
        owned = before;
        steps.push(Step {
            phase: "all-gather (recursive doubling)",
            transfers,
        });
    }
    steps.push(Step {
        phase: "fold out to the extra workers",
        transfers: extra.map(|e| whole(e - p, e, Op::Copy)).collect(),
    });
    Schedule::new(n, len, p, steps)
}

#[cfg(test)]
mod tests {
    #[test]
    fn about_two_log2_n_steps() {
        for (n, steps) in [(2, 2), (3, 4), (4, 4), (5, 6), (8, 6)] {
            assert_eq!(super::schedule(n, 100).steps.len(), steps, "n = {n}");
        }
    }
}
