//! Matrix products through the `gemm` crate, behind a safe, bounds-checked view type.
//!
//! Every product in the model is `C (m,n) [+]= scale * A (m,k) @ B (k,n)` where A and B may be
//! *views*: a transposed weight, or a matrix whose rows are further apart than they are
//! wide. [`Mat`] describes such a view with a row stride and a column stride, so a
//! transpose is free (swap the strides) and no product ever copies its inputs.
//!
//! ```text
//!   row-major (rows, cols, rs)         .t(): the same floats read the other way
//!   element (i, j) = data[i*rs + j*cs]  element (i, j) = data[j*rs + i*cs]
//! ```

use gemm::Parallelism;

/// A read-only strided view of a matrix inside a slice.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `(rows, cols)` with rows `rs` floats apart, starting at `data[0]`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Self {
        let m = Mat {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        };
        assert!(
            m.fits(),
            "view ({rows},{cols}) rs {rs} outside {} floats",
            data.len()
        );
        m
    }

    /// A dense row-major `(rows, cols)` matrix.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat::new(data, rows, cols, cols)
    }

    /// The transpose, without moving a float.
    pub fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// The largest index the view reads is inside `data`.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// A writable row-major view; rows may be further apart than `cols` (one head's columns).
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
}

impl<'a> MatMut<'a> {
    /// Row-major `(rows, cols)` with rows `rs >= cols` floats apart, starting at `data[0]`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, rs: usize) -> Self {
        assert!(rs >= cols, "rows overlap: rs {rs} < cols {cols}");
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + cols <= data.len(),
            "view ({rows},{cols}) rs {rs} outside {} floats",
            data.len()
        );
        MatMut {
            data,
            rows,
            cols,
            rs,
        }
    }

    /// A dense row-major `(rows, cols)` matrix.
    pub fn dense(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut::new(data, rows, cols, cols)
    }
}

/// Whether a product overwrites its destination or adds to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    /// `C = scale * A @ B`
    Set,
    /// `C += scale * A @ B` (gradient accumulation, the fused residual add)
    Add,
}

/// `c (m,n) [+]= scale * a (m,k) @ b (k,n)` on `threads` threads of the current rayon pool.
///
/// # Panics
/// If the shapes do not chain.
pub fn matmul(c: MatMut, a: Mat, b: Mat, out: Out, scale: f32, threads: usize) {
    let (m, n, k) = (c.rows, c.cols, a.cols);
    assert_eq!(a.rows, m, "A has {} rows, C has {m}", a.rows);
    assert_eq!(b.rows, k, "A has {k} columns, B has {} rows", b.rows);
    assert_eq!(b.cols, n, "B has {} columns, C has {n}", b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if out == Out::Set {
            for row in c.data.chunks_mut(c.rs) {
                let len = n.min(row.len());
                row[..len].fill(0.0);
            }
        }
        return;
    }
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    #[cfg(test)]
    IN_GEMM.set(true);
    // SAFETY: `gemm` reads A at a.data[i*a.rs + j*a.cs] for i < m, j < k, B likewise for
    // i < k, j < n, and reads and writes C at c.data[i*c.rs + j] for i < m, j < n. The
    // constructors asserted that each of these largest indices lies inside its slice; the
    // strides are non-negative and fit in isize because the slices exist. C is borrowed
    // mutably, so it cannot alias A or B, and `c.rs >= n` makes its elements distinct.
    // Tested by `tests::strided_views_match_naive`, including transposed and offset views.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.data.as_mut_ptr(),
            1,
            c.rs as isize,
            out == Out::Add,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
    #[cfg(test)]
    IN_GEMM.set(false);
}

#[cfg(test)]
thread_local! {
    /// Set while `gemm` runs on this thread. `gemm` allocates its packing buffers on every
    /// call; the allocation test of `workspace.rs` counts only what nanodist allocates.
    pub(crate) static IN_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &Mat, b: &Mat, i: usize, j: usize) -> f32 {
        (0..a.cols)
            .map(|p| a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs])
            .sum()
    }

    #[test]
    fn strided_views_match_naive() {
        let buf: Vec<f32> = (0..400)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        // A: (5,3) at offset 2 with row stride 9; B: the transpose of a (4,3) block, rs 6.
        let a = Mat::new(&buf[2..], 5, 3, 9);
        let b = Mat::new(&buf[100..], 4, 3, 6).t();
        for out in [Out::Set, Out::Add] {
            let mut c = [1.0f32; 5 * 7];
            matmul(MatMut::new(&mut c[1..], 5, 4, 7), a, b, out, 0.5, 1);
            for i in 0..5 {
                for j in 0..4 {
                    let base = if out == Out::Add { 1.0 } else { 0.0 };
                    let want = base + 0.5 * naive(&a, &b, i, j);
                    let got = c[1 + i * 7 + j];
                    assert!((got - want).abs() < 1e-5, "({i},{j}) {got} vs {want}");
                }
                // the gaps between rows of C are untouched
                for j in 4..7 {
                    if 1 + i * 7 + j < c.len() {
                        assert_eq!(c[1 + i * 7 + j], 1.0);
                    }
                }
            }
            assert_eq!(c[0], 1.0);
        }
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn view_past_the_end_is_rejected() {
        let buf = [0.0f32; 10];
        let _ = Mat::new(&buf, 3, 3, 4);
    }
}
