//! A pipeline whose stages are tensor groups (`--tp T --pp P`): the grid's full DP x PP x TP.
//!
//! ```text
//!   --workers 8 --tp 2 --pp 2   (DP = 2 replicas of a 2-stage pipeline of 2-way tensor groups)
//!
//!               stage 0                       stage 1
//!   replica 0   rank 0 (tp 0) ──x, dx──  rank 2 (tp 0)        tp groups: {0 1} {2 3} {4 5} {6 7}
//!               rank 1 (tp 1) ──x, dx──  rank 3 (tp 1)        pp groups: {0 2} {1 3} {4 6} {5 7}
//!   replica 1   rank 4 (tp 0) ──x, dx──  rank 6 (tp 0)        dp groups: {0 4} {1 5} {2 6} {3 7}
//!               rank 5 (tp 1) ──x, dx──  rank 7 (tp 1)
//!
//!   one step on a worker (stage s, tp rank r of replica d):
//!     the schedule's forwards and backwards, as without --tp, each one a collective of my
//!       tensor group (f and g of every block), x and dx to and from rank r of stages s-/+1
//!     --sp: add the whole copies' partial gradients over my tensor group
//!     all-reduce my shard's gradients over dp (rank r of stage s in every replica)
//!     tied wte: stage 0 and stage P-1 add their parts, rank r with rank r (the pp group)
//!     global norm: split tensors' squares summed over tp, whole copies' counted once,
//!       then the stages' totals summed over pp
//!     clip + AdamW on my shard of my stage's tensors
//! ```
//!
//! Each worker's parameter buffer is its tensor-parallel shard in the local layout
//! ([`local_layout`](crate::parallel::tensor::local_layout)): the single model's tensors in
//! the same order, the split ones smaller. So the pipeline's offsets, owned ranges and tied
//! `wte` range work unchanged on it; a consolidation gathers the stages (over pp) and then the
//! shards (over tp) into the whole model, with the single model's names.
//!
//! Deterministic mode is not built here: tensor parallelism adds its partial sums in floats,
//! so it would not give one worker's bits anyway (`TrainConfig::validate` refuses it).

use std::ops::Range;

use super::schedule::Action;
use super::{loss_diverged, owned, Pipe, PipeComms};
use crate::collective::{Algorithm, CommError};
use crate::config::TrainConfig;
use crate::data::sampler;
use crate::error::Error;
use crate::model::Gpt;
use crate::optim::AdamW;
use crate::parallel::data_parallel::gone;
use crate::parallel::tensor::{self, Ops, StageGroup, TensorStage};
use crate::step::{Batch, Observer};
use crate::trace::Phase;

impl Pipe {
    /// Stage `stage` of `cfg`'s pipeline on one rank of a tensor group: `model` and `adam`
    /// hold this rank's shard ([`tensor::shard_state`]), `ops` its tensor group.
    pub fn with_tensor(stage: usize, model: Gpt, adam: AdamW, cfg: &TrainConfig, ops: Ops) -> Pipe {
        assert!(
            !cfg.parallel.deterministic,
            "validate refuses --deterministic"
        );
        let mut pipe = Pipe::new(stage, model, adam, cfg);
        let part = pipe.parts[stage].clone();
        let t = cfg.model.block_size;
        let slots = (0..pipe.slots.len())
            .map(|_| TensorStage::new(&cfg.model, &part, pipe.per_micro, t, &ops))
            .collect();
        let (tp, rank) = (ops.comm.size(), ops.comm.rank());
        let mine = owned(&pipe.model.layout, &part);
        let replicated = if ops.sp && tp > 1 {
            let mut r = tensor::whole_copies(&cfg.model, tp, rank, &mine);
            if part.last && !part.first {
                // the last stage's copy of the tied wte (stage 0 owns it)
                r.insert(0, super::wte_range(&pipe.model.layout));
            }
            r
        } else {
            Vec::new()
        };
        let pack = vec![0.0; replicated.iter().map(|r| r.len()).sum()];
        pipe.tensor = Some(StageGroup {
            ops,
            slots,
            replicated,
            pack,
        });
        pipe
    }

    /// Micro-batch `m`'s forward on this rank of the stage's tensor group.
    pub(super) fn tensor_forward(
        &mut self,
        m: usize,
        cfg: &TrainConfig,
        batch: &Batch<'_>,
        comms: &mut PipeComms,
        obs: &mut impl Observer,
        loss: &mut f32,
    ) -> Result<(), Error> {
        let (step, t) = (batch.step, cfg.model.block_size);
        let slot = self.slot(Action::Forward(m));
        let (s, part) = (self.stage, &self.parts[self.stage]);
        let StageGroup { ops, slots, .. } = self.tensor.as_mut().expect("a tensor stage");
        let st = &mut slots[slot];
        if !part.first {
            let pp = &mut comms.pp;
            (obs.time(Phase::Wait, step, || pp.recv(s - 1, st.input_mut()))).map_err(gone(step))?;
        }
        let first_seq = batch.sequences.start + m * self.per_micro;
        let seqs = first_seq..first_seq + self.per_micro;
        let (x, y) = (&mut self.inputs, &mut self.targets);
        if part.first || part.last {
            sampler::fill_batch(batch.tokens, batch.seed, step as u64, seqs, t, x, y);
        }
        (ops.clock, ops.step) = (obs.clock(), step);
        let params = &self.model.params;
        let (inputs, targets) = (part.first.then_some(&x[..]), part.last.then_some(&y[..]));
        let out = obs.time(Phase::StageForward(m), step, || {
            st.forward(ops, params, inputs, targets)
        });
        ops.spans.drain(..).for_each(|sp| obs.record(sp));
        if let Some(l) = out.map_err(gone(step))? {
            if !l.is_finite() {
                return Err(loss_diverged(step, comms.pp.rank(), l));
            }
            *loss += l;
        }
        if !part.last {
            comms.pp.send(s + 1, st.output()).map_err(gone(step))?;
        }
        Ok(())
    }

    /// Micro-batch `m`'s backward on this rank of the stage's tensor group, its gradients
    /// added to `grads`.
    pub(super) fn tensor_backward(
        &mut self,
        m: usize,
        scale: f32,
        batch: &Batch<'_>,
        comms: &mut PipeComms,
        obs: &mut impl Observer,
    ) -> Result<(), Error> {
        let step = batch.step;
        let slot = self.slot(Action::Backward(m));
        let (s, part) = (self.stage, &self.parts[self.stage]);
        let StageGroup { ops, slots, .. } = self.tensor.as_mut().expect("a tensor stage");
        let st = &mut slots[slot];
        if !part.last {
            let pp = &mut comms.pp;
            (obs.time(Phase::Wait, step, || pp.recv(s + 1, st.grad_mut()))).map_err(gone(step))?;
        }
        (ops.clock, ops.step) = (obs.clock(), step);
        let (params, grads) = (&self.model.params, &mut self.grads);
        let done = obs.time(Phase::StageBackward(m), step, || {
            st.backward(ops, params, scale, grads)
        });
        ops.spans.drain(..).for_each(|sp| obs.record(sp));
        done.map_err(gone(step))?;
        if !part.first {
            comms.pp.send(s - 1, st.grad()).map_err(gone(step))?;
        }
        Ok(())
    }

    /// `--sp`: adds the tensor group's partial gradients of this stage's whole copies (each
    /// rank's came from its own rows), in one all-reduce a step. Nothing to do without a
    /// tensor group or without `--sp`.
    pub(super) fn sum_tensor_copies(&mut self, step: usize) -> Result<(), Error> {
        let Some(tp) = self.tensor.as_mut().filter(|t| !t.replicated.is_empty()) else {
            return Ok(());
        };
        // untimed: a stage hands its tensor group's spans to the observer in its forwards
        // and backwards only
        let (ops, ranges, pack) = (&mut tp.ops, &tp.replicated, &mut tp.pack);
        tensor::sum_whole_copies(ops, ranges, pack, &mut self.grads, None).map_err(gone(step))
    }

    /// The global gradient norm of the whole model and the step's loss (which only the last
    /// stage knows), on every worker of the replica: the squares of this stage's split
    /// tensors summed over the tensor group, its whole copies' counted once, then every
    /// stage's total summed over the pipeline group. With `--zero 1` each member of the
    /// stage's data-parallel group takes both sums over its part of the stage, and the group
    /// adds them first.
    pub(super) fn tensor_norm_and_loss(
        &mut self,
        comms: &mut PipeComms,
        loss: f32,
        step: usize,
    ) -> Result<(f64, f32), Error> {
        let tp = self.tensor.as_mut().expect("a tensor stage");
        let cfg = &self.model.cfg;
        let (size, rank) = (tp.ops.comm.size(), tp.ops.comm.rank());
        let owned = owned(&self.model.layout, &self.parts[self.stage]);
        let mine = self.zero.as_ref().map_or(owned, |z| z.owned_part());
        let squares = |r: Range<usize>| {
            (self.grads[r].iter())
                .map(|&x| x as f64 * x as f64)
                .sum::<f64>()
        };
        // [whole copies, split tensors]
        let mut sq = [0.0, squares(mine.clone())];
        for r in tensor::whole_copies(cfg, size, rank, &mine) {
            let s = squares(r);
            sq[0] += s;
            sq[1] -= s;
        }
        if self.zero.is_some() {
            (comms.dp.comm.all_reduce(&mut sq, Algorithm::Naive)).map_err(gone(step))?;
        }
        let (whole, mut split) = (sq[0], [sq[1].max(0.0)]);
        (tp.ops.comm.all_reduce(&mut split, Algorithm::Naive)).map_err(gone(step))?;
        let last = self.stage + 1 == self.stages;
        let mut out = [whole + split[0], if last { loss as f64 } else { 0.0 }];
        comms
            .pp
            .all_reduce(&mut out, Algorithm::Naive)
            .map_err(gone(step))?;
        Ok((out[0].sqrt(), out[1] as f32))
    }

    /// With `--tp`: the whole model, and with `with_adam` AdamW's state (else empty
    /// moments), from the tensor group's shards, after [`Pipe::consolidate`] has gathered the
    /// stages (a collective of the group); `None` without a tensor group (the stage's own
    /// buffers then are the whole model).
    pub fn gather_shards(&mut self, with_adam: bool) -> Result<Option<(Gpt, AdamW)>, CommError> {
        let Some(tp) = self.tensor.as_mut() else {
            return Ok(None);
        };
        let (cfg, comm) = (&self.model.cfg, &mut tp.ops.comm);
        let (params, adam) = if with_adam {
            tensor::consolidate_state(&self.model, &self.adam, comm)?
        } else {
            let params = tensor::consolidate(&self.model.params, cfg, comm)?;
            (params, AdamW::new(0))
        };
        Ok(Some((Gpt::from_params(cfg.clone(), params), adam)))
    }
}
