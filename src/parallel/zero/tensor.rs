//! ZeRO stage 1 on tensor-parallel replicas (`--tp T --zero 1`): each rank's shard of the
//! model is its own flat vector, and ZeRO shards THAT vector's AdamW state over the
//! data-parallel group, the ranks that hold the same tensor shard in every replica (as
//! Megatron-LM's distributed optimizer does).
//!
//! ```text
//!   --workers 4 --tp 2 --zero 1      tp groups {0 1} {2 3}; dp groups {0 2} {1 3}
//!
//!   rank 0 (tp 0, replica 0):  [ tp-0 shard of the model, local layout             ]
//!                              [ AdamW m, v of its first half ]
//!   rank 2 (tp 0, replica 1):  [ tp-0 shard of the model, local layout             ]
//!                                                             [ AdamW of its second half ]
//!   step: tensor-parallel forward and backward (collectives over tp), then over dp:
//!         reduce-scatter(grads) -> my half summed;  norm;  AdamW on my half;  all-gather
//! ```
//!
//! The one thing that differs from stage 1 of plain data parallelism is the gradient norm
//! of the whole model: the squares of the split tensors are summed over the tensor group,
//! those of the whole copies (embeddings, layer norms, identical on every rank) counted
//! once; each worker forms both sums over its own piece of its shard, the data-parallel
//! group adds the pieces, and the tensor group adds the split sums.
//!
//! Stages 2 and 3 reduce-scatter each block's gradient as the whole model's backward
//! finishes it and gather each block's weights before use (`walk.rs`): walks over the
//! single model's blocks that a tensor-parallel block, already a shard, does not run.
//! `TrainConfig::validate` refuses them with `--tp`.

use std::borrow::Cow;

use super::Zero;
use crate::collective::{Algorithm, CommError};
use crate::config::OptimConfig;
use crate::error::Error;
use crate::optim::{clip_factor, AdamW};
use crate::parallel::data_parallel::gone;
use crate::parallel::tensor::whole_copies;
use crate::step::{Observer, Replica};
use crate::trace::Phase;

impl Zero {
    /// Stage 1's update of a tensor-parallel replica: the norm of the whole model (module
    /// docs), clip + AdamW on my part of my shard, the updated parts all-gathered over the
    /// data-parallel group. Returns the norm before clipping.
    pub(super) fn update_tensor<O: Observer>(
        &mut self,
        r: &mut Replica,
        lr: f32,
        optim: &OptimConfig,
        step: usize,
        obs: &mut O,
    ) -> Result<f32, Error> {
        debug_assert_eq!(self.stage, 1, "validate refuses stages 2 and 3 with --tp");
        let mine = self.mine();
        let tp = r.tensor.as_mut().expect("a tensor-parallel replica");
        let (size, rank) = (tp.ops.comm.size(), tp.ops.comm.rank());
        let squares = |g: &[f32]| g.iter().map(|&x| x as f64 * x as f64).sum::<f64>();
        let grads = &r.grads[mine.clone()];
        let dp = &mut self.dp.comm;
        let norm = obs.time(Phase::Optimizer, step, || -> Result<f64, CommError> {
            // [whole copies, split tensors] of my part of my shard
            let mut sq = [0.0, squares(grads)];
            for c in whole_copies(&r.model.cfg, size, rank, &mine) {
                let s = squares(&r.grads[c]);
                sq[0] += s;
                sq[1] -= s;
            }
            dp.all_reduce(&mut sq, Algorithm::Naive)?; // my whole shard's
            let mut split = [sq[1].max(0.0)];
            tp.ops.comm.all_reduce(&mut split, Algorithm::Naive)?; // every rank's slices
            Ok((sq[0] + split[0]).sqrt())
        });
        let norm = norm.map_err(gone(step))?;
        if !norm.is_finite() {
            return Ok(norm as f32); // every worker has the same norm: all stop here
        }
        let clip = clip_factor(norm, optim.grad_clip);
        let (layout, params) = (&r.model.layout, &mut r.model.params[mine.clone()]);
        obs.time(Phase::Optimizer, step, || {
            (r.adam).step_shard(params, grads, layout, mine.clone(), lr, optim, clip)
        });
        let params = &mut r.model.params;
        obs.time(Phase::AllGather(0), step, || {
            dp.all_gather_ranges(params, mine)
        })
        .map_err(gone(step))?;
        Ok(norm as f32)
    }

    /// AdamW's moments of the whole local buffer (`len` floats) from every worker's part
    /// (a collective of the data-parallel group); `adam` itself at stage 0.
    pub fn whole_adam<'a>(
        &mut self,
        adam: &'a AdamW,
        len: usize,
    ) -> Result<Cow<'a, AdamW>, CommError> {
        if self.stage == 0 {
            return Ok(Cow::Borrowed(adam));
        }
        Ok(Cow::Owned(AdamW {
            m: self.gather(&adam.m, len)?,
            v: self.gather(&adam.v, len)?,
            t: adam.t,
        }))
    }

    /// My part of a whole local AdamW state: what a stage-1 replica keeps.
    pub fn my_adam(&self, adam: AdamW) -> AdamW {
        if self.stage == 0 {
            return adam;
        }
        let mine = self.mine();
        AdamW {
            m: adam.m[mine.clone()].to_vec(),
            v: adam.v[mine].to_vec(),
            t: adam.t,
        }
    }
}
