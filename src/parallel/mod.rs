//! Parallel strategies: how N workers split the work of one training step.
//!
//! - [`data_parallel`]: synchronous data parallelism, with gradient buckets that can overlap
//!   backward ([`buckets`]) and an exact, order-free gradient sum for bit-identical runs
//!   ([`fixed_point`]);
//! - [`tensor`]: tensor and sequence parallelism (`--tp`, `--sp`), every block's matrices
//!   split over a group of workers;
//! - [`zero`]: ZeRO stages 1-3 (`--zero`), data parallelism with the optimizer state, the
//!   gradients and the weights sharded;
//! - [`pipeline`]: pipeline parallelism (`--pp`, `--micro`, `--schedule`), the blocks split
//!   into stages that stream micro-batches;
//!
//! all on the worker grid of [`grid`] (DP x PP x TP).

pub mod buckets;
pub mod data_parallel;
pub mod fixed_point;
pub mod grid;
pub mod pipeline;
pub mod tensor;
pub mod zero;
