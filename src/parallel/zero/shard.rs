//! Where the shards lie: contiguous ranges of the flat layout, whole norm chunks each.
//!
//! ```text
//!   flat layout   [ c0 | c1 | c2 | c3 | c4 | c5 | c6 | c7 | c8 | c9 (short) ]   NORM_CHUNK floats each
//!   3 workers     [ c0 .. c3          | c4 .. c6     | c7 .. c9            ]
//!   a block       [      |<------ block 1 ------>|    ]   local(shard 1, block 1): its part of it
//! ```

use std::ops::Range;

use crate::collective::chunk_range;
use crate::optim::NORM_CHUNK;

/// The contiguous shards of a flat buffer of `len` floats among `n` workers: whole
/// [`NORM_CHUNK`]s each, cut as [`chunk_range`] cuts the chunks, the last shard shorter
/// (and, with fewer chunks than workers, the last shards empty).
///
/// ```
/// use nanodist::{optim::NORM_CHUNK, parallel::zero::shards};
/// let s = shards(2 * NORM_CHUNK + 10, 2); // 3 chunks: 2 + 1
/// assert_eq!(s, vec![0..2 * NORM_CHUNK, 2 * NORM_CHUNK..2 * NORM_CHUNK + 10]);
/// ```
pub fn shards(len: usize, n: usize) -> Vec<Range<usize>> {
    let chunks = len.div_ceil(NORM_CHUNK);
    (0..n)
        .map(|r| {
            let c = chunk_range(chunks, n, r);
            (c.start * NORM_CHUNK).min(len)..(c.end * NORM_CHUNK).min(len)
        })
        .collect()
}

/// The part of `shard` inside `within`, in `within`'s own offsets (empty when they do not
/// meet): what a worker owns of one bucket or one block.
pub(crate) fn local(shard: &Range<usize>, within: &Range<usize>) -> Range<usize> {
    let start = shard.start.clamp(within.start, within.end);
    let end = shard.end.clamp(start, within.end);
    start - within.start..end - within.start
}
