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

use super::math::{exp, fma};

const K: f32 = 0.797_884_6; // sqrt(2/pi)
const A: f32 = 0.044_715;
/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

/// `out = gelu(inp)`, elementwise.
pub fn gelu_forward(out: &mut [f32], inp: &[f32], threads: usize) {
    assert_eq!(out.len(), inp.len());
    let kernel = |o: &mut [f32], x: &[f32]| {
        for (o, &x) in o.iter_mut().zip(x) {
            let u = K * x * fma(A * x, x, 1.0); // k (x + a x^3)
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

/// In place: on entry `d` holds `dout`, on exit `dinp = gelu'(inp) * dout`.
///
/// Why in place: `dout` has no other reader, and writing over it touches cache lines that
/// are already there; a separate `dinp` buffer of (B*T,4C) floats would be written cold,
/// its every line first read from memory (the write-allocate), ~1 ms a step at B=12.
pub fn gelu_backward(d: &mut [f32], inp: &[f32], threads: usize) {
    assert_eq!(d.len(), inp.len());
    let kernel = |d: &mut [f32], x: &[f32]| {
        for (d, &x) in d.iter_mut().zip(x) {
            let x2 = x * x;
            let s = 1.0 / (1.0 + exp(-2.0 * K * x * fma(A, x2, 1.0)));
            // d/dx [x s(2u)] = s + x s (1 - s) 2 du/dx
            let du = K * fma(3.0 * A, x2, 1.0);
            let grad = fma(2.0 * x * s * (1.0 - s), du, s);
            *d *= grad;
        }
    };
    if threads <= 1 {
        return kernel(d, inp);
    }
    d.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(d, x)| kernel(d, x));
}
