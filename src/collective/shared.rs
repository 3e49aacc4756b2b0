//! Shared-memory all-reduce: each worker sums its own column straight out of everyone's
//! buffer and writes the sum straight back into everyone's buffer. No messages at all.
//!
//! ```text
//!   N = 3, len = 6, column r = chunk_range(6, 3, r)
//!
//!             col 0   col 1   col 2                    col 0   col 1   col 2
//!   buf 0   [ a0 a0 | a1 a1 | a2 a2 ]        buf 0   [ s0 s0 | s1 s1 | s2 s2 ]
//!   buf 1   [ b0 b0 | b1 b1 | b2 b2 ]  --->  buf 1   [ s0 s0 | s1 s1 | s2 s2 ]
//!   buf 2   [ c0 c0 | c1 c1 | c2 c2 ]        buf 2   [ s0 s0 | s1 s1 | s2 s2 ]
//!              ^ worker 0: s0 = (a0 + b0) + c0, written into all three buffers
//!
//!   entry barrier -> every worker sums and writes its column -> exit barrier
//! ```
//!
//! **Summation order:** rank order, `((x0 + x1) + x2) + ... + x(N-1)`, the same as naive.
//! Each element is summed once, by one worker, and that one value is written everywhere,
//! so every worker ends with the same bits.
//!
//! **Cost:** two barriers (the alpha: each about one cache-line hand-off between cores,
//! well under a microsecond) plus, per worker, reading `S/N` bytes from each of N buffers
//! and writing `S/N` bytes into each: `S` read and `S` written, with no copy into or out
//! of messages. The message-passing algorithms move every byte through a message buffer
//! at least twice more. The summing is done a tile at a time (a few KB that stay in L1):
//! load the column of buffer 0 into the tile, add each other buffer's column into it, then
//! store the tile into every buffer; the loops are plain slices, which the compiler turns
//! into vector instructions.
//!
//! `reduce_scatter`, `all_gather` and `broadcast` in this file use the same window: in each,
//! worker `r` touches only column `r` of the buffers (see `window.rs` for why that is sound).
//! Like every algorithm, this file is written against the transport (`transport.rs`) alone:
//! it opens the endpoint's window and works on columns.

use super::element::Element;
use super::error::CommError;
use super::transport::Endpoint;
use super::window::Window;

/// Elements per tile: 4 KB of f32, small enough for L1 next to the buffers' lines.
const TILE: usize = 1024;

/// Sums column `rank` of every buffer, a tile at a time, and hands each finished tile to
/// `store(window, range_in_column, tile)`.
fn sum_column<T: Element>(
    w: &mut Window<'_, T>,
    n: usize,
    mut store: impl FnMut(&mut Window<'_, T>, std::ops::Range<usize>, &[T]),
) {
    let len = w.col().len();
    let mut tile = [T::default(); TILE];
    let mut start = 0;
    while start < len {
        let end = (start + TILE).min(len);
        let acc = &mut tile[..end - start];
        acc.copy_from_slice(&w.column(0)[start..end]);
        for j in 1..n {
            for (a, &x) in acc.iter_mut().zip(&w.column(j)[start..end]) {
                *a = T::add(*a, x);
            }
        }
        store(w, start..end, acc);
        start = end;
    }
}

/// All-reduce through shared memory: see the module docs.
pub(crate) fn all_reduce<T: Element>(ep: &mut Endpoint, buf: &mut [T]) -> Result<(), CommError> {
    let n = ep.size();
    let mut w = ep.window(buf)?;
    if n == 2 {
        // The common case (2 workers), fused: one pass reads both buffers and writes both.
        let (a, b) = w.column_pair(0, 1);
        for (x, y) in a.iter_mut().zip(b.iter_mut()) {
            let s = T::add(*x, *y);
            *x = s;
            *y = s;
        }
    } else {
        sum_column(&mut w, n, |w, range, tile| {
            for j in 0..n {
                w.column(j)[range.clone()].copy_from_slice(tile);
            }
        });
    }
    w.close()
}

/// Reduce-scatter through shared memory: worker r sums column r into its own buffer only
/// (`col`: the column it chose; `None`: the even chunk).
pub(crate) fn reduce_scatter<T: Element>(
    ep: &mut Endpoint,
    buf: &mut [T],
    col: Option<std::ops::Range<usize>>,
) -> Result<(), CommError> {
    let (n, me) = (ep.size(), ep.rank());
    let mut w = ep.window_at(buf, col)?;
    sum_column(&mut w, n, |w, range, tile| {
        w.column(me)[range].copy_from_slice(tile);
    });
    w.close()
}

/// All-gather through shared memory: worker r copies its column r into everyone's buffer
/// (`col`: the column it chose; `None`: the even chunk).
pub(crate) fn all_gather<T: Element>(
    ep: &mut Endpoint,
    buf: &mut [T],
    col: Option<std::ops::Range<usize>>,
) -> Result<(), CommError> {
    let (n, me) = (ep.size(), ep.rank());
    let mut w = ep.window_at(buf, col)?;
    for j in 0..n {
        w.copy_column(me, j);
    }
    w.close()
}

/// Broadcast through shared memory: worker r copies column r of the root's buffer into
/// everyone's buffer, so all workers copy in parallel.
pub(crate) fn broadcast<T: Element>(
    ep: &mut Endpoint,
    buf: &mut [T],
    root: usize,
) -> Result<(), CommError> {
    let n = ep.size();
    let mut w = ep.window(buf)?;
    for j in 0..n {
        w.copy_column(root, j);
    }
    w.close()
}
