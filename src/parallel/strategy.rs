//! Which strategy a worker's step exchanges gradients with, picked from the configuration.
//!
//! ```text
//!   --sync-every 1, no --compress   Sync(AllReduce)     every step, the whole gradient
//!   --compress topk:F|int8|..       Compressed(Compress) every step, less of it
//!   --sync-every H > 1              Local(LocalSgd)      every H steps, parameter deltas
//! ```
//! (`--async` is not an exchange inside one step: it has its own worker loop,
//! `async_ps.rs`.)
//!
//! Rust note: an enum, not a `Box<dyn GradientExchange>`: the trait's methods are generic
//! over the observer, so it has no vtable; a `match` per call picks the strategy, and each
//! arm is the strategy's own code, inlined.

use crate::collective::Comm;
use crate::config::OptimConfig;
use crate::config::TrainConfig;
use crate::error::Error;
use crate::model::{Gpt, Workspace};
use crate::parallel::compress::Compress;
use crate::parallel::data_parallel::AllReduce;
use crate::parallel::local_sgd::LocalSgd;
use crate::step::{GradientExchange, Observer, Replica};

/// A worker's gradient exchange, one of the strategies.
pub enum Exchange {
    /// Synchronous data parallelism: all-reduce every step.
    Sync(AllReduce),
    /// Compressed gradients with error feedback.
    Compressed(Compress),
    /// Local SGD / DiLoCo.
    Local(LocalSgd),
}

impl Exchange {
    /// The exchange `cfg` asks for, over `comm`, for a model starting at `model`'s weights.
    pub fn new(cfg: &TrainConfig, mut comm: Comm, model: &Gpt) -> Exchange {
        let p = &cfg.parallel;
        comm.set_link(p.link);
        // deterministic mode's sum is complete only after the last sequence: it never overlaps
        let overlap = p.overlap && !p.deterministic;
        if let Some(codec) = p.compress {
            Exchange::Compressed(Compress::new(comm, p.allreduce, codec, &model.layout))
        } else if p.sync_every > 1 {
            Exchange::Local(LocalSgd::new(comm, p.allreduce, &model.params, cfg))
        } else {
            let len = model.layout.len;
            Exchange::Sync(AllReduce::new(comm, p.allreduce, len, p.bucket_kb, overlap))
        }
    }

    /// This worker's endpoint of the group (evaluation and replica checks use it too).
    pub fn comm(&mut self) -> &mut Comm {
        match self {
            Exchange::Sync(e) => &mut e.comm,
            Exchange::Compressed(e) => &mut e.comm,
            Exchange::Local(e) => &mut e.comm,
        }
    }
}

impl GradientExchange for Exchange {
    fn overlaps_backward(&self) -> bool {
        match self {
            Exchange::Sync(e) => e.overlaps_backward(),
            Exchange::Compressed(e) => e.overlaps_backward(),
            Exchange::Local(e) => e.overlaps_backward(),
        }
    }

    fn backward_and_sum<O: Observer>(
        &mut self,
        model: &Gpt,
        ws: &mut Workspace,
        scale: f32,
        grads: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        match self {
            Exchange::Sync(e) => e.backward_and_sum(model, ws, scale, grads, step, obs),
            Exchange::Compressed(e) => e.backward_and_sum(model, ws, scale, grads, step, obs),
            Exchange::Local(e) => e.backward_and_sum(model, ws, scale, grads, step, obs),
        }
    }

    fn sum<O: Observer>(
        &mut self,
        grads: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        match self {
            Exchange::Sync(e) => e.sum(grads, step, obs),
            Exchange::Compressed(e) => e.sum(grads, step, obs),
            Exchange::Local(e) => e.sum(grads, step, obs),
        }
    }

    fn sum_exact<O: Observer>(
        &mut self,
        acc: &mut [i64],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        match self {
            Exchange::Sync(e) => e.sum_exact(acc, step, obs),
            Exchange::Compressed(e) => e.sum_exact(acc, step, obs),
            Exchange::Local(e) => e.sum_exact(acc, step, obs),
        }
    }

    fn update<O: Observer>(
        &mut self,
        r: &mut Replica,
        lr: f32,
        optim: &OptimConfig,
        step: usize,
        obs: &mut O,
    ) -> Result<f32, Error> {
        match self {
            Exchange::Sync(e) => e.update(r, lr, optim, step, obs),
            Exchange::Compressed(e) => e.update(r, lr, optim, step, obs),
            Exchange::Local(e) => e.update(r, lr, optim, step, obs),
        }
    }
}
