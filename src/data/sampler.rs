//! Where each training sequence comes from, and the fixed validation windows.
//!
//! Training windows are drawn by a *counter-based* generator: the start of global
//! sequence `seq` at optimizer step `step` is `hash(seed, step, seq)` mapped onto the
//! valid starts, the hash being three chained [`SplitMix64`] outputs, each from a generator
//! seeded with the key so far. No generator state moves between calls, so
//!
//! - worker `w` of `N` draws sequences `w*B/N .. (w+1)*B/N` and gets exactly its rows of
//!   the global batch, without talking to anyone;
//! - the batch of step 1000 costs the same to draw as the batch of step 0, so a resumed run
//!   continues with the very windows an uninterrupted run would have seen.
//!
//! ```text
//!   tokens  |..........................................................|  len
//!   window          [start .. start+T)   inputs
//!                    [start+1 .. start+T+1)  targets (shifted by one)
//!   start = window_start(seed, step, seq, len, T)  uniform in 0 ..= len-T-1
//! ```
//!
//! Validation uses non-overlapping windows of T+1 tokens laid end to end, so the
//! validation loss is a fixed, deterministic number for a split and a block size:
//!
//! ```text
//!   val     |0 1 ... T|0 1 ... T|0 1 ... T|..     window i = tokens[i*(T+1) .. (i+1)*(T+1)]
//! ```
//!
//! Every function here is a pure function of its arguments and allocates nothing
//! (except [`eval_subset`], which returns its list).

use std::ops::Range;

use crate::rng::{Rng, SeedableRng, SplitMix64};

/// The first token of the window of global sequence `seq` at optimizer step `step`.
///
/// Uniform over the `len - block` valid starts `0 ..= len-block-1` (each leaves room for
/// `block` inputs and the one extra target), up to a bias below `len / 2^64`.
///
/// # Panics
/// If `len < block + 1`: [`super::Corpus::check_block`] rejects such corpora up front.
///
/// # Examples
/// ```
/// use nanodist::data::sampler::window_start;
/// let s = window_start(42, 7, 3, 1000, 64);
/// assert!(s + 64 < 1000);
/// assert_eq!(s, window_start(42, 7, 3, 1000, 64)); // a pure function: same arguments, same window
/// ```
pub fn window_start(seed: u64, step: u64, seq: u64, len: usize, block: usize) -> usize {
    assert!(
        len > block,
        "a split of {len} tokens has no window of block {block} + 1 tokens"
    );
    // Chain the three counters through the mixer, so that (seed, step, seq) and, say,
    // (seed, seq, step) land on unrelated values.
    let h = mix(mix(mix(seed) ^ step) ^ seq);
    // Lemire's multiply-shift maps 64 random bits onto 0..starts without a division.
    let starts = (len - block) as u128;
    ((h as u128 * starts) >> 64) as usize
}

/// Writes the windows of global sequences `seqs` at step `step` as rows of
/// `inputs` and `targets`, each `(seqs.len(), block)` row-major.
///
/// `targets[r][t] = inputs[r][t + 1]` within a row, and the last target is the token after
/// the window. Calling it for `0..6` and then `6..12` writes exactly the rows that `0..12`
/// writes: that is how a worker draws its shard of the global batch.
pub fn fill_batch(
    tokens: &[u32],
    seed: u64,
    step: u64,
    seqs: Range<usize>,
    block: usize,
    inputs: &mut [u32],
    targets: &mut [u32],
) {
    assert_eq!(inputs.len(), seqs.len() * block, "inputs: (seqs, block)");
    assert_eq!(targets.len(), seqs.len() * block, "targets: (seqs, block)");
    if block == 0 {
        return;
    }
    let rows = inputs.chunks_mut(block).zip(targets.chunks_mut(block));
    for (seq, (x, y)) in seqs.zip(rows) {
        let start = window_start(seed, step, seq as u64, tokens.len(), block);
        x.copy_from_slice(&tokens[start..start + block]);
        y.copy_from_slice(&tokens[start + 1..start + block + 1]);
    }
}

/// The first output of a SplitMix64 generator seeded with `key`: a bijective mix of the
/// 64 bits of `key` (add the golden-ratio constant, then two xor-shift-multiply rounds).
///
/// This is what makes the sampler counter-based: a fresh generator per key, used once, so
/// the result depends on the key alone and no generator state outlives the call.
fn mix(key: u64) -> u64 {
    SplitMix64::seed_from_u64(key).next_u64()
}

/// How many non-overlapping windows of `block + 1` tokens fit in `len` tokens.
///
/// Window `i` is `tokens[i*(block+1) .. (i+1)*(block+1)]`; the last `len % (block+1)`
/// tokens are not evaluated.
pub fn val_windows(len: usize, block: usize) -> usize {
    len / (block + 1)
}

/// Writes validation windows `windows` as rows of `inputs` and `targets`, each
/// `(windows.len(), block)` row-major.
///
/// # Panics
/// If a window is past [`val_windows`] or the buffers have the wrong shape.
pub fn fill_val(
    tokens: &[u32],
    windows: Range<usize>,
    block: usize,
    inputs: &mut [u32],
    targets: &mut [u32],
) {
    assert!(
        windows.end <= val_windows(tokens.len(), block),
        "validation windows {windows:?} past the {} that fit",
        val_windows(tokens.len(), block)
    );
    assert_eq!(
        inputs.len(),
        windows.len() * block,
        "inputs: (windows, block)"
    );
    assert_eq!(
        targets.len(),
        windows.len() * block,
        "targets: (windows, block)"
    );
    if block == 0 {
        return;
    }
    let rows = inputs.chunks_mut(block).zip(targets.chunks_mut(block));
    for (i, (x, y)) in windows.zip(rows) {
        let start = i * (block + 1);
        x.copy_from_slice(&tokens[start..start + block]);
        y.copy_from_slice(&tokens[start + 1..start + block + 1]);
    }
}

/// A fixed, evenly spaced subset of `count` validation window indices, for the quick
/// evaluations during training; all windows when `count` is at least their number.
///
/// The indices are increasing and depend only on the arguments, so every periodic
/// evaluation of a run (and of any other run on the same split) sees the same windows.
///
/// ```
/// use nanodist::data::sampler::eval_subset;
/// assert_eq!(eval_subset(50, 4, 3), vec![1, 5, 8]); // 10 windows of 5 tokens, 3 of them
/// assert_eq!(eval_subset(50, 4, 99).len(), 10);
/// ```
pub fn eval_subset(len: usize, block: usize, count: usize) -> Vec<usize> {
    let total = val_windows(len, block);
    if count >= total {
        return (0..total).collect();
    }
    // The middle of each of `count` equal slices of 0..total: distinct because total > count.
    (0..count)
        .map(|i| ((2 * i + 1) as u128 * total as u128 / (2 * count) as u128) as usize)
        .collect()
}
