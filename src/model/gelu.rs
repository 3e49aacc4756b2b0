//! GELU, tanh approximation (GPT-2, nanoGPT's `new_gelu`).
//!
//! ```text
//!   u = k (x + 0.044715 x^3),  k = sqrt(2/pi)
//!   gelu(x) = 0.5 x (1 + tanh u)
//!   gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 * 0.044715 x^2)
//! ```
//! Computed as `x * sigmoid(2u)`, the same function (0.5 (1 + tanh u) = sigmoid(2u)) with one
//! exp and one division. With `s = sigmoid(2u)`, `1 - tanh^2 u = 4 s (1 - s)`, so
//! ```text
//!   gelu'(x) = s + 2 x s (1 - s) du/dx,   du/dx = k (1 + 3 * 0.044715 x^2)
//! ```
//! The backward recomputes `s` from the input instead of keeping it: one more exp per
//! activation is cheaper than writing and re-reading a (B*T,4C) buffer.

use rayon::prelude::*;

use super::math::exp;

const K: f32 = 0.797_884_6; // sqrt(2/pi)
const A: f32 = 0.044_715;
/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

/// `out = gelu(inp)`, elementwise.
pub fn gelu_forward(out: &mut [f32], inp: &[f32], threads: usize) {
    assert_eq!(out.len(), inp.len());
    let kernel = |o: &mut [f32], x: &[f32]| {
        for (o, &x) in o.iter_mut().zip(x) {
            let u = K * (x + A * x * x * x);
            *o = x / (1.0 + exp(-2.0 * u)); // x * sigmoid(2u)
        }
    };
    if threads <= 1 {
        return kernel(out, inp);
    }
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(o, x)| kernel(o, x));
}

/// Writes `dinp = gelu'(inp) * dout` (its one producer: nothing to accumulate onto, see
/// `linear_backward`).
pub fn gelu_backward(dinp: &mut [f32], dout: &[f32], inp: &[f32], threads: usize) {
    assert_eq!(dinp.len(), inp.len());
    assert_eq!(dout.len(), inp.len());
    let kernel = |dx: &mut [f32], dy: &[f32], x: &[f32]| {
        for ((dx, &dy), &x) in dx.iter_mut().zip(dy).zip(x) {
            let s = 1.0 / (1.0 + exp(-2.0 * K * (x + A * x * x * x)));
            // d/dx [x s(2u)] = s + x s (1 - s) 2 du/dx
            let du = K * (1.0 + 3.0 * A * x * x);
            let grad = s + 2.0 * x * s * (1.0 - s) * du;
            *dx = grad * dy;
        }
    };
    if threads <= 1 {
        return kernel(dinp, dout, inp);
    }
    dinp.par_chunks_mut(CHUNK)
        .zip(dout.par_chunks(CHUNK))
        .zip(inp.par_chunks(CHUNK))
        .for_each(|((dx, dy), x)| kernel(dx, dy, x));
}
