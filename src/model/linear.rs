//! Linear layer without bias, weight stored (out, in) as in PyTorch's `nn.Linear`.
//!
//! ```text
//!   out (N,OUT) = inp (N,IN) @ w^T (IN,OUT)        one gemm, w read transposed in place
//! ```

use super::matmul::{matmul, Mat, MatMut, Out};

/// `out (N,OUT) = inp (N,IN) @ w (OUT,IN)^T`, or `+=` with `Out::Add` (the fused residual add:
/// the block copies the residual into `out` and the projection adds onto it).
pub fn linear_forward(
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    mode: Out,
    threads: usize,
) {
    let (fan_in, fan_out) = (inp.len() / n, out.len() / n);
    assert_eq!(inp.len(), n * fan_in);
    assert_eq!(out.len(), n * fan_out);
    assert_eq!(w.len(), fan_out * fan_in);
    let w_t = Mat::dense(w, fan_out, fan_in).t();
    matmul(
        MatMut::dense(out, n, fan_out),
        Mat::dense(inp, n, fan_in),
        w_t,
        mode,
        1.0,
        threads,
    );
}

/// Accumulates `dw (OUT,IN)` from `dout (N,OUT)`; writes (`Out::Set`) or accumulates
/// (`Out::Add`) `dinp (N,IN)`.
///
/// Why a mode for `dinp`: an activation gradient with a single producer can be written
/// outright, which saves zeroing it first (a memset of every such buffer, ~2 ms a step at the
/// default size). Parameter gradients belong to the caller and always accumulate.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dinp: &mut [f32],
    dw: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    dinp_mode: Out,
    threads: usize,
) {
    // each half checks its own shapes; the input and its gradient must match as well
    assert_eq!(dinp.len(), inp.len());
    linear_input_grad(dinp, dout, w, n, dinp_mode, threads);
    linear_weight_grad(dw, dout, inp, n, threads);
}

/// Writes (`Out::Set`) or accumulates (`Out::Add`) `dinp (N,IN)` from `dout (N,OUT)`: the
/// input's half of [`linear_backward`].
pub fn linear_input_grad(
    dinp: &mut [f32],
    dout: &[f32],
    w: &[f32],
    n: usize,
    dinp_mode: Out,
    threads: usize,
) {
    let (fan_in, fan_out) = (dinp.len() / n, dout.len() / n);
    assert_eq!(dinp.len(), n * fan_in);
    assert_eq!(dout.len(), n * fan_out);
    assert_eq!(w.len(), fan_out * fan_in);
    // forward: out = inp @ w^T  =>  dinp (+)= dout @ w      (N,OUT) @ (OUT,IN)
    matmul(
        MatMut::dense(dinp, n, fan_in),
        Mat::dense(dout, n, fan_out),
        Mat::dense(w, fan_out, fan_in),
        dinp_mode,
        1.0,
        threads,
    );
}

/// Accumulates `dw (OUT,IN)` from `dout (N,OUT)` and `inp (N,IN)`: the weight's half of
/// [`linear_backward`], for a caller that makes `dinp` its own way.
pub fn linear_weight_grad(dw: &mut [f32], dout: &[f32], inp: &[f32], n: usize, threads: usize) {
    let (fan_in, fan_out) = (inp.len() / n, dout.len() / n);
    assert_eq!(inp.len(), n * fan_in);
    assert_eq!(dout.len(), n * fan_out);
    assert_eq!(dw.len(), fan_out * fan_in);
    // forward: out = inp @ w^T  =>  dw += dout^T @ inp      (OUT,N) @ (N,IN)
    matmul(
        MatMut::dense(dw, fan_out, fan_in),
        Mat::dense(dout, n, fan_out).t(),
        Mat::dense(inp, n, fan_in),
        Out::Add,
        1.0,
        threads,
    );
}
