//! ZeRO (stages 1, 2, 3): data parallelism with the training state sharded, not replicated.
//!
//! Data parallelism keeps everything on every worker: 4 bytes of weight, 4 of gradient and 8
//! of AdamW moments per parameter, and every worker repeats the same update. ZeRO cuts the
//! flat layout into N contiguous shards; worker r owns shard r of each buffer it shards:
//!
//! ```text
//!   flat layout  [ wte | wpe | h.0 | h.1 | h.2 | h.3 | ln_f ]   cut at multiples of NORM_CHUNK
//!   shards       [ worker 0    | worker 1    | worker 2   ]     the last one shorter
//!
//!                     params   grads    AdamW m, v   per worker, bytes per parameter
//!   stage 0 (DP)      all      all      all          4 + 4 + 8       = 16
//!   stage 1           all      all      shard        4 + 4 + 8/N
//!   stage 2           all      shard    shard        4 + (4 + 8)/N
//!   stage 3 (FSDP)    shard    shard    shard        (4 + 4 + 8)/N
//! ```
//!
//! The step is data parallelism's, [`crate::step::train_step`]; this file is the
//! [`GradientExchange`] that differs from [`AllReduce`], in these few lines:
//!
//! ```text
//!   data parallelism              ZeRO stage 1                     stage 2, 3 (walk.rs)
//!   all-reduce(grads)             reduce-scatter(grads) -> mine    each block's gradient
//!                                                                  reduce-scattered when
//!                                                                  backward is done with it
//!   norm of all grads             norm partials of mine, all-gathered (same bits)
//!   AdamW on everything           AdamW on mine (my 1/N of m, v)
//!                                 all-gather(params)               (stage 3: none; each
//!                                                                  block's weights are
//!                                                                  gathered before use)
//! ```
//!
//! Reduce-scatter + all-gather move the bytes of one all-reduce, so stages 1 and 2 cost
//! no more communication than stage 0; stage 3 gathers every block's weights twice (forward
//! and backward), one more all-gather of the model per step.
//!
//! **Determinism.** Shards start at multiples of [`NORM_CHUNK`], the chunks whose partial
//! sums of squares make the gradient norm ([`crate::optim::clip_scale`]): each worker
//! computes the partials of its own chunks, an all-gather hands every worker all of them,
//! and adding them in chunk order gives the bits one worker holding everything gets.
//! AdamW is element-wise, and deterministic mode's exact i64 sums are reduce-scattered as
//! they are; so `--deterministic` gives the same parameters at every stage and worker count.

use std::borrow::Cow;
use std::ops::Range;

use crate::collective::{CommError, Element};
use crate::config::{OptimConfig, TrainConfig};
use crate::error::Error;
use crate::model::{Gpt, Workspace};
use crate::optim::{clip_from_partials, norm_partials, AdamW, NORM_CHUNK};
use crate::parallel::data_parallel::{gone, AllReduce, TrainState};
use crate::step::{GradientExchange, Observer, Replica};
use crate::trace::Phase;

mod lane;
mod memory;
mod shard;
mod stage;
mod tensor;
mod walk;

pub use memory::{peak_rss_bytes, Memory, StateBytes};
use shard::local;
pub use shard::shards;
pub use stage::{cut, StageShard};
use walk::{Dest, Walk};

/// ZeRO's gradient exchange (`--zero 0|1|2|3`). Stage 0 is [`AllReduce`] itself.
pub struct Zero {
    /// Data parallelism's exchange: stage 0 runs it, and every stage talks through its
    /// communicator (evaluation and the replica check use it too).
    pub dp: AllReduce,
    /// The ZeRO stage, 0 to 3.
    pub stage: u8,
    /// `shards[r]`: worker r's shard of the flat layout.
    pub shards: Vec<Range<usize>>,
    /// One sum of squares per [`NORM_CHUNK`] of the layout; mine computed, the rest gathered.
    partials: Vec<f64>,
    /// Stages 2 and 3: the block-by-block forward and backward, with its buffers.
    walk: Walk,
}

impl Zero {
    /// The exchange of `stage` over `dp`'s communicator, for a layout of `len` floats.
    pub fn new(dp: AllReduce, stage: u8, cfg: &TrainConfig) -> Self {
        let n = dp.comm.size();
        // the whole model's layout, or with --tp this rank's shard's (`tensor.rs`)
        let len = crate::parallel::tensor::local_layout(&cfg.model, cfg.parallel.tp.max(1)).len;
        let shards = shards(len, n);
        let mine = shards[dp.comm.rank()].clone();
        Zero {
            walk: Walk::new(stage, cfg, mine),
            partials: vec![0.0; len.div_ceil(NORM_CHUNK)],
            dp,
            stage,
            shards,
        }
    }

    /// This worker's shard of the flat layout.
    pub fn mine(&self) -> Range<usize> {
        self.shards[self.dp.comm.rank()].clone()
    }

    /// The replica of this worker, from a whole (consolidated) training state: at stage 0
    /// all of it, at stage 1 and up only its shard of AdamW's moments, at stage 2 and up
    /// only its shard of the gradient (except in deterministic mode, whose exact sum is
    /// per sequence over the whole layout), at stage 3 only its shard of the weights.
    pub fn replica(&self, init: &TrainState, cfg: &TrainConfig) -> Replica {
        let mine = self.mine();
        let adam = if self.stage >= 1 {
            AdamW {
                m: init.adam.m[mine.clone()].to_vec(),
                v: init.adam.v[mine.clone()].to_vec(),
                t: init.adam.t,
            }
        } else {
            init.adam.clone()
        };
        let model = if self.stage == 3 {
            // only my shard is ever copied: a whole copy per worker would be the peak
            Gpt {
                cfg: cfg.model.clone(),
                layout: crate::model::ParamLayout::new(&cfg.model),
                params: init.params[mine.clone()].to_vec(),
            }
        } else {
            Gpt::from_params(cfg.model.clone(), init.params.clone())
        };
        let mut r = Replica::new(self.dp.comm.rank(), model, adam, cfg);
        if self.stage >= 2 && !cfg.parallel.deterministic {
            r.grads = vec![0.0; mine.len()];
        }
        r
    }

    /// The whole model: `model` itself below stage 3; at stage 3 its shards gathered from
    /// every worker (a collective: every worker calls it), for evaluation and checkpoints.
    pub fn whole_model<'m>(&mut self, model: &'m Gpt) -> Result<Cow<'m, Gpt>, CommError> {
        if self.stage < 3 {
            return Ok(Cow::Borrowed(model));
        }
        let params = self.gather(&model.params, model.layout.len)?;
        Ok(Cow::Owned(Gpt::from_params(model.cfg.clone(), params)))
    }

    /// The whole training state after `step` steps, consolidated from every worker's
    /// shards into rank 0 (at stages 1 to 3 every worker calls it: the others send their
    /// shards). `Some` only on rank 0, which sends it to be checkpointed: one checkpoint,
    /// the tensor names of every run, whatever the stage and worker count.
    pub fn snapshot(&mut self, r: &Replica, step: usize) -> Result<Option<TrainState>, CommError> {
        if self.stage == 0 {
            return Ok((self.dp.comm.rank() == 0).then(|| TrainState {
                params: r.model.params.clone(),
                adam: r.adam.clone(),
                step,
            }));
        }
        let len = r.model.layout.len;
        let params = match self.stage {
            3 => self.gather_to_root(&r.model.params, len)?,
            _ => (self.dp.comm.rank() == 0).then(|| r.model.params.clone()),
        };
        let m = self.gather_to_root(&r.adam.m, len)?;
        let v = self.gather_to_root(&r.adam.v, len)?;
        Ok(params.zip(m.zip(v)).map(|(params, (m, v))| TrainState {
            params,
            adam: AdamW { m, v, t: r.adam.t },
            step,
        }))
    }

    /// The replica's final parameters and AdamW state, whole on rank 0 (elsewhere, at
    /// stages 1 to 3, empty: the run keeps rank 0's).
    pub fn into_state(&mut self, r: Replica) -> Result<(Vec<f32>, AdamW), CommError> {
        if self.stage == 0 {
            return Ok((r.model.params, r.adam));
        }
        let empty = AdamW {
            m: Vec::new(),
            v: Vec::new(),
            t: r.adam.t,
        };
        Ok(self
            .snapshot(&r, 0)?
            .map_or((Vec::new(), empty), |s| (s.params, s.adam)))
    }

    /// `shard` of every worker into one whole buffer of `len` on rank 0 (the others send
    /// theirs, point to point): `Some` on rank 0 only, so that no other worker holds the
    /// whole state even for a moment.
    fn gather_to_root(&mut self, shard: &[f32], len: usize) -> Result<Option<Vec<f32>>, CommError> {
        let (mine, comm) = (self.mine(), &mut self.dp.comm);
        if comm.rank() != 0 {
            comm.send(0, shard)?;
            return Ok(None);
        }
        let mut whole = vec![0.0; len];
        whole[mine].copy_from_slice(shard);
        for (j, theirs) in self.shards.iter().enumerate().skip(1) {
            comm.recv(j, &mut whole[theirs.clone()])?;
        }
        Ok(Some(whole))
    }

    /// What this worker holds, by the ZeRO formula and measured (`summary.json`'s `memory`).
    pub fn memory(&self, r: &Replica) -> Memory {
        Memory {
            prefetch: self.walk.prefetch,
            ..Memory::of(self.stage, self.shards.len(), r, self.walk.floats())
        }
    }

    /// A whole buffer of `len` from every worker's shard (`shard` is mine).
    fn gather(&mut self, shard: &[f32], len: usize) -> Result<Vec<f32>, CommError> {
        let mine = self.mine();
        let mut whole = vec![0.0; len];
        whole[mine.clone()].copy_from_slice(shard);
        self.dp.comm.all_gather_ranges(&mut whole, mine)?;
        Ok(whole)
    }

    /// Waits for every worker, then reduce-scatters `grads` bucket by bucket: afterwards
    /// my shard of `grads` holds the sum over the workers (the rest is left as it was).
    fn reduce_scatter<T: Element, O: Observer>(
        &mut self,
        grads: &mut [T],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        let (mine, comm) = (self.mine(), &mut self.dp.comm);
        obs.time(Phase::Wait, step, || comm.barrier())
            .map_err(gone(step))?;
        for (i, bucket) in self.dp.plan.iter().enumerate() {
            let part = local(&mine, bucket);
            let buf = &mut grads[bucket.clone()];
            obs.time(Phase::ReduceScatter(i), step, || {
                comm.reduce_scatter_ranges(buf, part)
            })
            .map_err(gone(step))?;
        }
        Ok(())
    }
}

impl GradientExchange for Zero {
    fn forward<O: Observer>(
        &mut self,
        model: &Gpt,
        ws: &mut Workspace,
        inputs: &[u32],
        targets: &[u32],
        step: usize,
        obs: &mut O,
    ) -> Result<f32, Error> {
        if self.stage < 3 {
            return self.dp.forward(model, ws, inputs, targets, step, obs);
        }
        let comm = &mut self.dp.comm;
        (self.walk)
            .forward(model, ws, inputs, targets, comm, step, obs)
            .map_err(gone(step))
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
        let whole = grads.len() == model.layout.len;
        if self.stage < 2 || (self.stage == 2 && whole) {
            return self.dp.backward(model, ws, scale, grads, step, obs);
        }
        // deterministic mode sums exactly, after the last sequence: the whole layout here
        let dest = if whole {
            Dest::Layout(grads)
        } else {
            Dest::Shard(grads)
        };
        let comm = &mut self.dp.comm;
        (self.walk)
            .backward(model, ws, scale, dest, comm, step, obs)
            .map_err(gone(step))
    }

    fn overlaps_backward(&self) -> bool {
        self.stage == 0 && self.dp.overlap
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
        self.dp.backward_and_sum(model, ws, scale, grads, step, obs)
    }

    /// Stage 0: the all-reduce. Stage 1: the reduce-scatter of the whole gradient. Stages
    /// 2 and 3: nothing left, each block was reduce-scattered as backward finished it.
    fn sum<O: Observer>(
        &mut self,
        grads: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        match self.stage {
            0 => self.dp.sum(grads, step, obs),
            1 => self.reduce_scatter(grads, step, obs),
            _ => Ok(()),
        }
    }

    /// The exact sums are reduce-scattered as they are (integers: any order, same bits).
    fn sum_exact<O: Observer>(
        &mut self,
        acc: &mut [i64],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        match self.stage {
            0 => self.dp.sum_exact(acc, step, obs),
            _ => self.reduce_scatter(acc, step, obs),
        }
    }

    /// Clip + AdamW on my shard: the norm from every worker's chunk partials, my 1/N of
    /// the moments, and (stages 1, 2) the updated shards all-gathered into every replica.
    fn update<O: Observer>(
        &mut self,
        r: &mut Replica,
        lr: f32,
        optim: &OptimConfig,
        step: usize,
        obs: &mut O,
    ) -> Result<f32, Error> {
        if self.stage == 0 {
            return self.dp.update(r, lr, optim, step, obs);
        }
        if r.tensor.is_some() {
            return self.update_tensor(r, lr, optim, step, obs);
        }
        let mine = self.mine();
        let layout = &r.model.layout;
        // my shard's gradient: the whole buffer's slice, or the buffer itself (stage 2, 3)
        let grads = if r.grads.len() == layout.len {
            &r.grads[mine.clone()]
        } else {
            &r.grads[..]
        };
        // my chunks of the norm (none for an empty shard: more workers than chunks)
        let chunks = match mine.is_empty() {
            true => 0..0,
            false => mine.start / NORM_CHUNK..mine.end.div_ceil(NORM_CHUNK),
        };
        let (partials, comm) = (&mut self.partials, &mut self.dp.comm);
        let (norm, clip) = obs
            .time(Phase::Optimizer, step, || {
                norm_partials(grads, &mut partials[chunks.clone()]);
                comm.all_gather_ranges(partials, chunks)?;
                Ok(clip_from_partials(
                    partials.iter().copied(),
                    optim.grad_clip,
                ))
            })
            .map_err(gone(step))?;
        if !norm.is_finite() {
            return Ok(norm); // every worker has the same norm: all stop here
        }
        let params = if self.stage == 3 {
            &mut r.model.params[..]
        } else {
            &mut r.model.params[mine.clone()]
        };
        obs.time(Phase::Optimizer, step, || {
            (r.adam).step_shard(params, grads, layout, mine.clone(), lr, optim, clip)
        });
        if self.stage < 3 {
            let params = &mut r.model.params;
            obs.time(Phase::AllGather(0), step, || {
                comm.all_gather_ranges(params, mine)
            })
            .map_err(gone(step))?;
        }
        Ok(norm)
    }
}
