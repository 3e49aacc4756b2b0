//! Naive all-reduce: everyone sends its whole buffer to worker 0, which sums and sends the
//! result back (the "parameter server" pattern).
//!
//! ```text
//!   step 1 "gather at worker 0"           step 2 "send back"
//!
//!   worker 1 --x1--\                       /--sum--> worker 1
//!   worker 2 --x2---> worker 0: sum      ---sum--> worker 2
//!   worker 3 --x3--/   ((x0+x1)+x2)+x3     \--sum--> worker 3
//! ```
//!
//! **Summation order:** rank order, `((x0 + x1) + x2) + ... + x(N-1)`: worker 0 applies the
//! incoming buffers as they are listed, from worker 1 up. Everyone else receives a copy of
//! worker 0's result, so all workers hold the same bits.
//!
//! **Cost (alpha-beta):** worker 0 receives N-1 whole buffers and sends N-1 whole buffers,
//! one after the other: `2(N-1) alpha + 2(N-1) S beta`. Nothing is parallel: the time
//! grows linearly with N while the other workers idle. It is here as the baseline the
//! others are measured against, and because it is what one writes first.

use super::schedule::{Op, Schedule, Step, Transfer};

/// The naive schedule for `n` workers and `len` elements (one chunk: the whole buffer).
pub(crate) fn schedule(n: usize, len: usize) -> Schedule {
    let gather = (1..n)
        .map(|j| Transfer {
            from: j,
            to: 0,
            chunks: 0..1,
            range: 0..len,
            op: Op::Reduce {
                incoming_first: false,
            },
        })
        .collect();
    let back = (1..n)
        .map(|j| Transfer {
            from: 0,
            to: j,
            chunks: 0..1,
            range: 0..len,
            op: Op::Copy,
        })
        .collect();
    let steps = vec![
        Step {
            phase: "gather at worker 0",
            transfers: gather,
        },
        Step {
            phase: "send back",
            transfers: back,
        },
    ];
    Schedule::new(n, len, 1, steps)
}
