//! Parallel strategies: how N workers split the work of one training step.
//!
//! Today: synchronous data parallelism ([`data_parallel`]), with gradient buckets
//! that can overlap backward ([`buckets`]) and an exact, order-free gradient sum for
//! bit-identical runs ([`fixed_point`]), on the worker grid of [`grid`] (DP x PP x TP).
//! Later: ZeRO, tensor and pipeline parallelism, local SGD, parameter servers.

pub mod async_ps;
pub mod buckets;
pub mod compress;
pub mod data_parallel;
pub mod fixed_point;
pub mod grid;
pub mod local_sgd;
pub mod powersgd;
pub mod strategy;
pub mod sync_options;
