//! Gradient buckets, and handing each one to the all-reduce the moment backward finishes it.
//!
//! Backward runs from the loss back to the embeddings, and the parameter layout is
//! ordered so that the gradients it has *finished* are always a suffix of the flat
//! buffer, growing towards offset 0. Buckets are cut from the end:
//!
//! ```text
//! flat gradient buffer:  [ wte | wpe | h.0 | h.1 | h.2 | h.3 | ln_f ]
//! buckets (S floats):     [  b3  ][   b2   ][   b1   ][   b0     ]
//! backward order:          <------------------------------------ starts here
//! after block 3:                                 finished: [  ... b0 ] -> b0 goes out
//! ```
//!
//! With overlap on, [`BucketSink`] is the gradient sink backward writes through: when
//! backward reports that everything from offset `from` on is final, every bucket lying
//! entirely above `from` is split off the open part of the buffer and sent to the
//! worker's communication thread, which all-reduces it while backward carries on.
//!
//! Rust note: `split_at_mut` hands the bucket away as its own `&mut [f32]`, disjoint
//! from what backward may still write, so the compiler itself checks that backward and
//! the all-reduce never touch the same floats. No locks, no `unsafe`. In miniature, with
//! one thread playing backward and one the all-reduce, both given the whole buffer, the
//! compiler refuses the program (error E0499: `grads` borrowed mutably twice):
//! ```compile_fail,E0499
//! let mut grads = vec![0.0f32; 8];
//! std::thread::scope(|s| {
//!     s.spawn(|| grads[0] += 1.0); // backward, still writing
//!     s.spawn(|| grads[7] *= 0.5); // the all-reduce, summing the same buffer: a data race
//! });
//! ```
//! Split first, and each thread owns its part, which the compiler can see:
//! ```
//! let mut grads = vec![0.0f32; 8];
//! let (open, bucket) = grads.split_at_mut(6); // backward keeps [0, 6); [6, 8) is final
//! std::thread::scope(|s| {
//!     s.spawn(|| open[0] += 1.0);
//!     s.spawn(|| bucket[1] *= 0.5);
//! });
//! ```

use std::ops::Range;

use crossbeam::channel::Sender;

use crate::model::GradSink;

/// Bucket ranges in the order they are communicated: the LAST floats of the buffer first.
///
/// `bucket_floats == 0` means one bucket for the whole buffer. Every range is non-empty
/// and together they cover `0..len` exactly.
///
/// ```
/// let plan = nanodist::parallel::buckets::plan(10, 4);
/// assert_eq!(plan, vec![6..10, 2..6, 0..2]);
/// ```
pub fn plan(len: usize, bucket_floats: usize) -> Vec<Range<usize>> {
    if len == 0 {
        return Vec::new();
    }
    let size = if bucket_floats == 0 {
        len
    } else {
        bucket_floats
    };
    let mut out = Vec::new();
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(size);
        out.push(start..end);
        end = start;
    }
    out
}

/// Floats per bucket for `--bucket-kb` (KiB of f32 gradients).
pub fn floats_for_kb(bucket_kb: usize) -> usize {
    bucket_kb * 1024 / 4
}

/// A [`GradSink`] that sends each finished bucket down a channel.
pub struct BucketSink<'g, 'p> {
    /// The part of the gradient buffer not yet handed away: offsets `0..open.len()`.
    open: &'g mut [f32],
    /// All buckets, last floats first (see [`plan`]).
    plan: &'p [Range<usize>],
    /// Index into `plan` of the next bucket to send.
    next: usize,
    /// To the communication thread: (bucket index, its floats).
    tx: Sender<(usize, &'g mut [f32])>,
}

impl<'g, 'p> BucketSink<'g, 'p> {
    /// A sink over the whole gradient buffer.
    pub fn new(
        grads: &'g mut [f32],
        plan: &'p [Range<usize>],
        tx: Sender<(usize, &'g mut [f32])>,
    ) -> Self {
        BucketSink {
            open: grads,
            plan,
            next: 0,
            tx,
        }
    }
}

impl GradSink for BucketSink<'_, '_> {
    fn open(&mut self) -> &mut [f32] {
        self.open
    }

    fn finished(&mut self, from: usize) {
        while let Some(bucket) = self.plan.get(self.next) {
            if bucket.start < from {
                break; // part of this bucket may still be written
            }
            assert_eq!(bucket.end, self.open.len(), "buckets leave from the end");
            let open = std::mem::take(&mut self.open);
            let (rest, ready) = open.split_at_mut(bucket.start);
            self.open = rest;
            // If the communication thread has stopped (a peer failed), it reports the
            // error itself; the bucket is simply not reduced.
            let _ = self.tx.send((self.next, ready));
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_the_buffer_from_the_end() {
        for (len, size) in [(10, 3), (9, 3), (5, 0), (5, 100), (1, 1)] {
            let p = plan(len, size);
            assert_eq!(p.first().unwrap().end, len);
            assert_eq!(p.last().unwrap().start, 0);
            for w in p.windows(2) {
                assert_eq!(w[1].end, w[0].start, "{p:?}");
            }
            assert!(p.iter().all(|r| !r.is_empty()), "{p:?}");
        }
        assert!(plan(0, 4).is_empty());
    }

    #[test]
    fn sink_sends_each_bucket_once_when_it_is_final() {
        let mut grads: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let buckets = plan(10, 4); // 6..10, 2..6, 0..2
        let (tx, rx) = crossbeam::channel::unbounded();
        let mut sink = BucketSink::new(&mut grads, &buckets, tx);
        sink.finished(7); // 6..10 not yet final
        assert!(rx.try_recv().is_err());
        sink.finished(5); // 6..10 final
        let (i, b) = rx.try_recv().unwrap();
        assert_eq!((i, b.to_vec()), (0, vec![6.0, 7.0, 8.0, 9.0]));
        assert_eq!(sink.open().len(), 6);
        sink.finished(0); // everything else
        let rest: Vec<(usize, Vec<f32>)> = rx.try_iter().map(|(i, b)| (i, b.to_vec())).collect();
        assert_eq!(
            rest,
            vec![(1, vec![2.0, 3.0, 4.0, 5.0]), (2, vec![0.0, 1.0])]
        );
    }
}
