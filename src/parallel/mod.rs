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
//!
//! How often and how much the replicas share, from fully synchronous to fully
//! asynchronous (`docs/synchronisation.md`), each reusing the one training step:
//!
//! ```text
//!   every step, all of it      data_parallel (AllReduce)            --sync-every 1
//!   every step, less of it     compress (top-k, int8), powersgd     --compress topk:F|int8|powersgd:R
//!   every H steps              local_sgd (local SGD, DiLoCo)        --sync-every H
//!   whenever ready             async_ps (parameter server, bound S) --async --staleness S
//! ```
//! [`strategy`] picks the step's exchange from the configuration; [`sync_options`] names
//! the options.

pub mod async_ps;
pub mod buckets;
pub mod compress;
pub mod data_parallel;
pub mod fixed_point;
pub mod grid;
pub mod local_sgd;
pub mod pipeline;
pub mod powersgd;
pub mod strategy;
pub mod sync_options;
pub mod tensor;
pub mod zero;
