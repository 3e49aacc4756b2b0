//! Which strategy a worker's step exchanges gradients with, picked from the configuration.
//!
//! ```text
//!   --sync-every 1, no --compress   Sync(Zero)           every step, the whole gradient
//!                                                        (--zero 1|2|3: sharded state)
//!   --compress topk:F|int8|..       Compressed(Compress) every step, less of it
//!   --sync-every H > 1              Local(LocalSgd)      every H steps, parameter deltas
//! ```
//! (`--async` is not an exchange inside one step: it has its own worker loop,
//! `async_ps.rs`.)
//!
//! Rust note: an enum, not a `Box<dyn GradientExchange>`: the trait's methods are generic
//! over the observer, so it has no vtable; a `match` per call picks the strategy, and each
//! arm is the strategy's own code, inlined.

use std::borrow::Cow;

use crate::collective::{Comm, CommError};
use crate::config::OptimConfig;
use crate::config::TrainConfig;
use crate::error::Error;
use crate::model::{Gpt, ParamLayout, Workspace};
use crate::optim::AdamW;
use crate::parallel::compress::Compress;
use crate::parallel::data_parallel::{AllReduce, TrainState};
use crate::parallel::local_sgd::LocalSgd;
use crate::parallel::zero::{Memory, Zero};
use crate::step::{GradientExchange, Observer, Replica};

/// A worker's gradient exchange, one of the strategies.
pub enum Exchange {
    /// Synchronous data parallelism: all-reduce every step (ZeRO stage 0), or with the
    /// state sharded (stages 1, 2, 3).
    Sync(Zero),
    /// Compressed gradients with error feedback.
    Compressed(Compress),
    /// Local SGD / DiLoCo.
    Local(LocalSgd),
}

impl Exchange {
    /// The exchange `cfg` asks for, over `comm`, for a replica of `len` parameters (the
    /// whole model's, or a tensor-parallel shard's) starting at `init`.
    pub fn new(cfg: &TrainConfig, mut comm: Comm, len: usize, init: &[f32]) -> Exchange {
        let p = &cfg.parallel;
        comm.set_link(p.link);
        // deterministic mode's sum is complete only after the last sequence: it never overlaps
        let overlap = p.overlap && !p.deterministic;
        if let Some(codec) = p.compress {
            let layout = ParamLayout::new(&cfg.model);
            Exchange::Compressed(Compress::new(comm, p.allreduce, codec, &layout))
        } else if p.sync_every > 1 {
            Exchange::Local(LocalSgd::new(comm, p.allreduce, init, cfg))
        } else {
            let dp = AllReduce::new(comm, p.allreduce, len, p.bucket_kb, overlap);
            Exchange::Sync(Zero::new(dp, p.zero, cfg))
        }
    }

    /// This worker's endpoint of the group (evaluation and replica checks use it too).
    pub fn comm(&mut self) -> &mut Comm {
        match self {
            Exchange::Sync(e) => &mut e.dp.comm,
            Exchange::Compressed(e) => &mut e.comm,
            Exchange::Local(e) => &mut e.comm,
        }
    }

    /// Worker `rank`'s replica of `init` (ZeRO keeps only its shards of it).
    pub fn replica(&self, rank: usize, init: &TrainState, cfg: &TrainConfig) -> Replica {
        match self {
            Exchange::Sync(z) => z.replica(init, cfg),
            _ => {
                let model = Gpt::from_params(cfg.model.clone(), init.params.clone());
                Replica::new(rank, model, init.adam.clone(), cfg)
            }
        }
    }

    /// A tensor-parallel replica `r` (whole local moments) as this exchange keeps it: ZeRO
    /// stage 1 keeps only its part of the moments (`zero/tensor.rs`).
    pub fn tensor_replica(&self, mut r: Replica) -> Replica {
        if let Exchange::Sync(z) = self {
            r.adam = z.my_adam(r.adam);
        }
        r
    }

    /// The moments of the whole local buffer of `len` floats: ZeRO's parts gathered (a
    /// collective of the data-parallel group), else `adam` itself.
    pub fn whole_adam<'a>(
        &mut self,
        adam: &'a AdamW,
        len: usize,
    ) -> Result<Cow<'a, AdamW>, CommError> {
        match self {
            Exchange::Sync(z) => z.whole_adam(adam, len),
            _ => Ok(Cow::Borrowed(adam)),
        }
    }

    /// The whole model (ZeRO stage 3 gathers its shards: a collective).
    pub fn whole_model<'m>(&mut self, model: &'m Gpt) -> Result<Cow<'m, Gpt>, CommError> {
        match self {
            Exchange::Sync(z) => z.whole_model(model),
            _ => Ok(Cow::Borrowed(model)),
        }
    }

    /// The whole state after `step` steps, on rank 0 (`None` elsewhere): ZeRO consolidates
    /// its shards (a collective).
    pub fn snapshot(&mut self, r: &Replica, step: usize) -> Result<Option<TrainState>, CommError> {
        match self {
            Exchange::Sync(z) => z.snapshot(r, step),
            _ => Ok((r.rank == 0).then(|| TrainState {
                params: r.model.params.clone(),
                adam: r.adam.clone(),
                step,
            })),
        }
    }

    /// The end of a worker: the whole parameters and moments (ZeRO's on rank 0).
    pub fn into_state(&mut self, r: Replica) -> Result<(Vec<f32>, AdamW), CommError> {
        match self {
            Exchange::Sync(z) => z.into_state(r),
            _ => Ok((r.model.params, r.adam)),
        }
    }

    /// What the worker holds, by ZeRO's formula and measured; `None` for the strategies
    /// that do not count it.
    pub fn memory(&self, r: &Replica) -> Option<Memory> {
        match self {
            Exchange::Sync(z) => Some(z.memory(r)),
            _ => None,
        }
    }
}

impl GradientExchange for Exchange {
    fn forward<O: Observer>(
        &mut self,
        model: &Gpt,
        ws: &mut Workspace,
        inputs: &[u32],
        targets: &[u32],
        step: usize,
        obs: &mut O,
    ) -> Result<f32, Error> {
        match self {
            Exchange::Sync(e) => e.forward(model, ws, inputs, targets, step, obs),
            Exchange::Compressed(e) => e.forward(model, ws, inputs, targets, step, obs),
            Exchange::Local(e) => e.forward(model, ws, inputs, targets, step, obs),
        }
    }

    fn backward<O: Observer>(
        &mut self,
        model: &Gpt,
        ws: &mut Workspace,
        scale: f32,
        grads: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        match self {
            Exchange::Sync(e) => e.backward(model, ws, scale, grads, step, obs),
            Exchange::Compressed(e) => e.backward(model, ws, scale, grads, step, obs),
            Exchange::Local(e) => e.backward(model, ws, scale, grads, step, obs),
        }
    }

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
