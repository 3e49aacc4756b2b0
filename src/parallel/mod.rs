//! Parallel strategies: how N workers split the work of one training step.
//!
//! Today: synchronous data parallelism ([`data_parallel`]), with gradient buckets
//! that can overlap backward ([`buckets`]) and an exact, order-free gradient sum for
//! bit-identical runs ([`fixed_point`]), on the worker grid of [`grid`] (DP x PP x TP);
//! and ZeRO ([`zero`]), data parallelism with the optimizer state, the gradients and the
//! weights sharded. Later: tensor and pipeline parallelism, local SGD, parameter servers.

pub mod buckets;
pub mod data_parallel;
pub mod fixed_point;
pub mod grid;
pub mod zero;
