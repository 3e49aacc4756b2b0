//! The two leaf notions every collective uses: what can be summed ([`Element`]), and how a
//! buffer is cut into one chunk per worker ([`chunk_range`]).
//!
//! ```text
//!   chunk_range(10, 4, i):   [ 0 1 2 | 3 4 5 | 6 7 | 8 9 ]
//!                              i = 0   i = 1   i = 2 i = 3
//! ```

/// A number the collectives can sum: `f32`, `f64`, `i64`, and `usize` (for bookkeeping,
/// such as the table of colours that `Comm::split` gathers).
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

    /// `buf` as one of the types a link between processes carries ([`Elems`]), or
    /// [`Elems::Other`] for an element type of the caller's own.
    fn elems(buf: &mut [Self]) -> Elems<'_> {
        let _ = buf;
        Elems::Other
    }
}

/// A buffer of one of the element types that crosses a process boundary: a link between
/// processes (such as MPI) must name the type of what it sends, where threads just share it.
///
/// Rust note: an enum of slices turns the generic `&mut [T]` into a value a trait object
/// (`dyn CrossProcess`) can take, since a trait object's methods cannot be generic.
#[derive(Debug)]
pub enum Elems<'a> {
    /// `f32` (gradients).
    F32(&'a mut [f32]),
    /// `f64` (validation sums).
    F64(&'a mut [f64]),
    /// `i64` (deterministic fixed-point gradients, replica hashes).
    I64(&'a mut [i64]),
    /// `usize` (bookkeeping).
    Usize(&'a mut [usize]),
    /// Any other element type: it stays inside its process.
    Other,
}

impl Element for f32 {
    #[inline(always)]
    fn add(a: Self, b: Self) -> Self {
        a + b
    }

    fn elems(buf: &mut [Self]) -> Elems<'_> {
        Elems::F32(buf)
    }
}

impl Element for f64 {
    #[inline(always)]
    fn add(a: Self, b: Self) -> Self {
        a + b
    }

    fn elems(buf: &mut [Self]) -> Elems<'_> {
        Elems::F64(buf)
    }
}

impl Element for i64 {
    #[inline(always)]
    fn add(a: Self, b: Self) -> Self {
        a.wrapping_add(b)
    }

    fn elems(buf: &mut [Self]) -> Elems<'_> {
        Elems::I64(buf)
    }
}

impl Element for usize {
    #[inline(always)]
    fn add(a: Self, b: Self) -> Self {
        a.wrapping_add(b)
    }

    fn elems(buf: &mut [Self]) -> Elems<'_> {
        Elems::Usize(buf)
    }
}

/// The element range of chunk `i` when `len` elements are cut into `n` chunks.
///
/// The first `len % n` chunks get one element more than the rest, so chunk lengths differ
/// by at most one; when `len < n` the last chunks are empty. Every collective uses this
/// chunking: after `Comm::reduce_scatter`, worker `r` holds the sum of
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
    use super::chunk_range;

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
}
