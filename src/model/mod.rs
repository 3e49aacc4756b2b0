//! The model: a character-level GPT (nanoGPT's architecture without biases), written as
//! plain kernels over flat buffers.
//!
//! - [`layout`]: every parameter in one `Vec<f32>`, with names, offsets and the order that
//!   lets gradients be all-reduced while backward runs.
//! - the layers, each `*_forward` directly above its `*_backward`: [`embedding`],
//!   [`layernorm`], [`linear`] (through [`matmul`], the one place that calls `gemm`),
//!   [`attention`], [`gelu`], [`loss`] (softmax + cross-entropy fused).
//! - [`Workspace`]: every activation, allocated once; [`Gpt`]: forward and backward.
//!
//! Conventions (those of llm.c): kernel arguments go outputs, inputs, caches; shapes are
//! asserted on entry; backward kernels ACCUMULATE (`+=`) and the caller zeroes, visibly.
//! `N = B*T` rows everywhere. Every kernel takes a `threads` count: 1 is the plain loop a
//! data-parallel worker runs; more splits the rows (or the gemm) over the current rayon pool.

pub mod attention;
pub(crate) mod block;
pub mod embedding;
pub mod gelu;
mod gpt;
pub mod layernorm;
pub mod layout;
pub mod linear;
pub mod loss;
pub mod math;
pub mod matmul;
mod stage;
mod workspace;

pub use gpt::{Gpt, GradSink};
pub use layout::{ParamLayout, TensorInfo};
pub use stage::{owned, split, Deferred, StagePart};
pub use workspace::Workspace;

/// Rows per parallel task, so that `threads` tasks cover `rows` rows.
pub(crate) fn rows_per_task(rows: usize, threads: usize) -> usize {
    rows.div_ceil(threads.max(1)).max(1)
}
