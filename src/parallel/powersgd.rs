//! PowerSGD (Vogels et al. 2019): each gradient matrix sent as a rank-R product, found by
//! one step of power iteration, warm-started from the previous step's factor.
//!
//! ```text
//!   M (rows x cols) = my gradient + residual, for each matrix of the model
//!   P = M Q                     rows x R      Q: cols x R, last step's (random at first)
//!   all-reduce P (sum)          P = (sum of everyone's M) Q      linear: sums commute
//!   P = orthonormal columns (Gram-Schmidt, the same bits on every worker)
//!   Q = M^T P                   cols x R
//!   all-reduce Q (sum)          Q = (sum M)^T P
//!   sum M ~= P Q^T              what every worker applies
//!   residual = M - P Q^T / N    my share of what the approximation missed (error feedback,
//!                               as PyTorch's PowerSGD hook keeps it)
//!   vectors (LayerNorm gains) and matrices too small to gain: all-reduced whole
//! ```
//! Bytes per matrix: 4 R (rows + cols) instead of 4 rows cols.

use std::ops::Range;

use crate::collective::{Algorithm, Comm};
use crate::error::Error;
use crate::model::ParamLayout;
use crate::parallel::data_parallel::{gone, wait_link};
use crate::step::Observer;
use crate::trace::Phase;

/// One matrix compressed: where it lies, its shape, and where its factors lie.
#[derive(Clone, Debug)]
struct Matrix {
    offset: usize,
    rows: usize,
    cols: usize,
    /// Its P in `PowerSgd::factors` (rows x R, row-major).
    p: usize,
    /// Its Q in `PowerSgd::q` (cols x R, row-major).
    q: usize,
}

/// PowerSGD's state: which tensors are compressed, and the factors (Q warm-starts).
pub struct PowerSgd {
    rank: usize,
    matrices: Vec<Matrix>,
    /// Tensors sent whole.
    whole: Vec<Range<usize>>,
    /// The first all-reduce's buffer: every matrix's P, then the whole tensors.
    factors: Vec<f32>,
    /// Every matrix's Q, kept from step to step.
    q: Vec<f32>,
}

impl PowerSgd {
    /// PowerSGD of rank `rank` for the tensors of `layout`.
    pub fn new(layout: &ParamLayout, rank: usize) -> Self {
        let (mut matrices, mut whole) = (Vec::new(), Vec::new());
        let (mut p_len, mut q_len) = (0, 0);
        for t in &layout.tensors {
            let gains = t.shape.len() == 2 && rank * (t.shape[0] + t.shape[1]) < t.len;
            if gains {
                let (rows, cols) = (t.shape[0], t.shape[1]);
                matrices.push(Matrix {
                    offset: t.offset,
                    rows,
                    cols,
                    p: p_len,
                    q: q_len,
                });
                p_len += rows * rank;
                q_len += cols * rank;
            } else {
                whole.push(t.offset..t.offset + t.len);
            }
        }
        let whole_len: usize = whole.iter().map(|r| r.len()).sum();
        // Q starts as the same pseudo-random matrix on every worker (a fixed LCG: no seed to
        // agree on), uniform in [-1, 1)
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let q = (0..q_len)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        PowerSgd {
            rank,
            matrices,
            whole,
            factors: vec![0.0; p_len + whole_len],
            q,
        }
    }

    /// The compressed sum into `grads`; `m` holds my gradient plus residual on entry and
    /// the new residual on return.
    pub fn exchange<O: Observer>(
        &mut self,
        grads: &mut [f32],
        m: &mut [f32],
        comm: &mut Comm,
        algorithm: Algorithm,
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        let (r, n) = (self.rank, comm.size() as f32);
        let p_len: usize = self.matrices.iter().map(|a| a.rows * r).sum();
        let (factors, q, matrices, whole) =
            (&mut self.factors, &mut self.q, &self.matrices, &self.whole);
        // P = M Q for every matrix; the whole tensors after the P's
        obs.time(Phase::Compress, step, || {
            for a in matrices {
                let mat = &m[a.offset..a.offset + a.rows * a.cols];
                let (p, q) = (
                    &mut factors[a.p..a.p + a.rows * r],
                    &q[a.q..a.q + a.cols * r],
                );
                matmul(p, mat, q, a.rows, a.cols, r);
            }
            let mut at = p_len;
            for range in whole {
                factors[at..at + range.len()].copy_from_slice(&m[range.clone()]);
                at += range.len();
            }
        });
        all_reduce(comm, factors, algorithm, step, obs)?;
        // Q = M^T P, with P's columns orthonormal
        obs.time(Phase::Compress, step, || {
            for a in matrices {
                let p = &mut factors[a.p..a.p + a.rows * r];
                orthonormalise(p, a.rows, r);
                let mat = &m[a.offset..a.offset + a.rows * a.cols];
                matmul_t(&mut q[a.q..a.q + a.cols * r], mat, p, a.rows, a.cols, r);
            }
        });
        all_reduce(comm, q, algorithm, step, obs)?;
        // sum M ~= P Q^T; my residual keeps M - P Q^T / N; whole tensors were sent exactly
        obs.time(Phase::Compress, step, || {
            for a in matrices {
                let (p, q) = (&factors[a.p..a.p + a.rows * r], &q[a.q..a.q + a.cols * r]);
                for i in 0..a.rows {
                    for j in 0..a.cols {
                        let at = a.offset + i * a.cols + j;
                        let v: f32 = (0..r).map(|k| p[i * r + k] * q[j * r + k]).sum();
                        grads[at] = v;
                        m[at] -= v / n;
                    }
                }
            }
            let mut at = p_len;
            for range in whole {
                grads[range.clone()].copy_from_slice(&factors[at..at + range.len()]);
                m[range.clone()].fill(0.0);
                at += range.len();
            }
        });
        Ok(())
    }
}

/// A sum over the workers on the link, its link time as a phase of its own.
fn all_reduce<O: Observer>(
    comm: &mut Comm,
    buf: &mut [f32],
    algorithm: Algorithm,
    step: usize,
    obs: &mut O,
) -> Result<(), Error> {
    let (res, owed) = obs.time(Phase::AllReduce(0), step, || {
        comm.deferring_link(|c| c.all_reduce(buf, algorithm))
    });
    res.map_err(gone(step))?;
    wait_link(owed, step, obs);
    Ok(())
}

/// `p = a q`: a is rows x cols, q cols x r, p rows x r (all row-major).
fn matmul(p: &mut [f32], a: &[f32], q: &[f32], rows: usize, cols: usize, r: usize) {
    p.fill(0.0);
    for i in 0..rows {
        for j in 0..cols {
            let x = a[i * cols + j];
            for k in 0..r {
                p[i * r + k] += x * q[j * r + k];
            }
        }
    }
}

/// `q = a^T p`: a is rows x cols, p rows x r, q cols x r.
fn matmul_t(q: &mut [f32], a: &[f32], p: &[f32], rows: usize, cols: usize, r: usize) {
    q.fill(0.0);
    for i in 0..rows {
        for j in 0..cols {
            let x = a[i * cols + j];
            for k in 0..r {
                q[j * r + k] += x * p[i * r + k];
            }
        }
    }
}

/// Gram-Schmidt on the `r` columns of the rows x r matrix `p`: each column minus its
/// projections on the earlier ones, then scaled to unit length (a column of zeros stays
/// zero; the small epsilon keeps it finite, as PyTorch's hook does).
fn orthonormalise(p: &mut [f32], rows: usize, r: usize) {
    for c in 0..r {
        for prev in 0..c {
            let dot: f32 = (0..rows).map(|i| p[i * r + c] * p[i * r + prev]).sum();
            for i in 0..rows {
                p[i * r + c] -= dot * p[i * r + prev];
            }
        }
        let norm = (0..rows).map(|i| p[i * r + c].powi(2)).sum::<f32>().sqrt();
        for i in 0..rows {
            p[i * r + c] /= norm + 1e-8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix of rank 1 is recovered exactly (to float rounding) by rank-1 PowerSGD after
    /// one power step: P spans its column space.
    #[test]
    fn a_rank_one_matrix_is_recovered() {
        let (rows, cols, r) = (6, 5, 1);
        let u: Vec<f32> = (0..rows).map(|i| i as f32 - 2.5).collect();
        let v: Vec<f32> = (0..cols).map(|j| 0.5 + j as f32).collect();
        let a: Vec<f32> = (0..rows * cols)
            .map(|x| u[x / cols] * v[x % cols])
            .collect();
        let q0 = vec![0.3, -0.2, 0.9, 0.1, 0.4];
        let mut p = vec![0.0; rows];
        matmul(&mut p, &a, &q0, rows, cols, r);
        orthonormalise(&mut p, rows, r);
        let mut q = vec![0.0; cols];
        matmul_t(&mut q, &a, &p, rows, cols, r);
        for x in 0..rows * cols {
            let approx = p[x / cols] * q[x % cols];
            assert!((approx - a[x]).abs() < 1e-4, "{x}: {approx} vs {}", a[x]);
        }
    }
}
