//! Pipeline parallelism: each of P workers runs a contiguous range of blocks (a stage), and
//! M micro-batches stream through the stages, activations forward, their gradients back.
//!
//! ```text
//!   --workers 4 --pp 2 --micro 4  (DP = 2 replicas of a 2-stage pipeline; L = 4 blocks)
//!
//!   replica 0:  rank 0 = stage 0 [wte wpe | block 0 1] --x--> rank 1 = stage 1 [block 2 3 | ln_f head loss]
//!                                                      <-dx--
//!   replica 1:  rank 2 = stage 0 ...                          rank 3 = stage 1 ...
//!               (each replica trains on its half of the batch: B/2 sequences in 4 micro-batches)
//!
//!   one step on a stage:
//!     for action in schedule::actions(gpipe | 1f1b | zb, P, s, M):     (see `schedule`)
//!       Forward(m):  recv x from s-1 (stage 0: embed tokens) -> blocks -> send x to s+1
//!                    (last stage: ln_f, head, loss)
//!       Backward(m): recv dx from s+1 (last: from the loss) -> blocks backward -> send dx to s-1
//!                    my parameters' gradients += ...   (zb: all but the blocks' products')
//!       Weight(m):   (zb) the blocks' products' weight gradients += ...; and before a recv
//!                    whose message has not come (`Comm::probe`), the oldest pending W's
//!     all-reduce my gradients over `dp` (the same stage in the other replicas)
//!     tied wte: stage 0 and stage P-1 add their two parts (the embedding group)
//!     global gradient norm: a chain of partial sums of squares, stage 0 -> P-1
//!     clip + AdamW on my parameters only
//!
//!   --zero 1 (`zero::StageShard`): the stage's tensors cut among its `dp` group:
//!     reduce-scatter over `dp` -> my part summed; tied wte part with part; the norm chain
//!     from the parts' gathered partials; AdamW on my part (my moments); all-gather over `dp`
//! ```
//!
//! The tied embedding: `wte` is both the token embedding (stage 0) and the output head (the
//! last stage). Its gradient has two parts, one from each use; the true gradient is their
//! sum, and both stages must apply the SAME update to their copies or the two uses drift
//! apart. So the two stages exchange their parts and each adds the other's, as Megatron-LM
//! does in its embedding group: `a + b` and `b + a` are the same float, so the copies stay
//! bit-identical.
//!
//! Every stage keeps a parameter buffer of the full layout, so that offsets are those of
//! the whole model and a checkpoint is one copy away, but computes and updates only its own
//! tensors ([`owned`]). Evaluation, checkpoints and the end of the run first gather every
//! stage's tensors ([`Pipe::consolidate`]): the stages broadcast their ranges to each other.
//!
//! Deterministic mode: each stage forms the exact fixed-point sum of per-sequence gradients
//! of its tensors, as one worker does of all of them. One detail makes it bit-identical: one
//! worker adds the head's and the embedding's part of a sequence's `wte` gradient in float
//! before rounding, so the last stage hands each sequence's head part to stage 0, which
//! starts that sequence's embedding backward from it. The gradient norm is the one worker's
//! sum taken in the same order: 8 running sums over the flat buffer, which stage 0 begins
//! and each stage continues over its range (`Pipe::norm_and_loss`).

use std::ops::Range;

use serde::Serialize;

use crate::collective::{Comm, CommError};
use crate::config::PipeSchedule;
use crate::config::TrainConfig;
use crate::data::sampler;
use crate::error::Error;
use crate::model::{Deferred, Gpt, ParamLayout, StagePart, Workspace};
use crate::optim::{clip_factor, lr_at, sum_of_squares, AdamW, NORM_CHUNK};
use crate::parallel::buckets;
use crate::parallel::data_parallel::{gone, AllReduce};
use crate::parallel::fixed_point;
use crate::parallel::zero::{Memory, StageShard};
use crate::step::{first_non_finite, Batch, GradientExchange, Observer, StepStats};
use crate::trace::{Phase, Span};

pub mod schedule;
mod tensor_stage;
mod worker;

pub use crate::model::{owned, split};
pub use worker::run_worker;

use schedule::Action;

/// The one-line description of an uneven split, e.g. `"5 blocks over 2 stages: 3, 2"`, or
/// `None` when every stage has the same number of blocks.
pub fn uneven(n_layer: usize, stages: usize) -> Option<String> {
    if n_layer % stages == 0 {
        return None;
    }
    let sizes: Vec<String> = (split(n_layer, stages).iter())
        .map(|p| p.layers.len().to_string())
        .collect();
    Some(format!(
        "{n_layer} blocks over {stages} stages: {} (as even as it goes)",
        sizes.join(", ")
    ))
}

/// The range of the tied `wte` (V,C) in the flat layout.
fn wte_range(layout: &ParamLayout) -> Range<usize> {
    let wte = &layout.tensors[0];
    debug_assert_eq!(wte.name, "transformer.wte.weight");
    wte.offset..wte.offset + wte.len
}

/// Peak bytes of activations each stage holds at once under `cfg`'s schedule: the
/// activations of one micro-batch on that stage (its input, its blocks', and on the last
/// stage the head's), times the most micro-batches it holds between their forward and
/// backward ([`schedule::max_in_flight`]). With `--tp`, one rank's of the stage's tensor
/// group ([`crate::parallel::tensor::stage_activation_bytes`]).
pub fn peak_activation_bytes(cfg: &TrainConfig) -> Vec<usize> {
    let p = &cfg.parallel;
    let parts = split(cfg.model.n_layer, p.pp);
    let rows = cfg.parallel.batch / cfg.data_parallel() / p.micro;
    (parts.iter().enumerate())
        .map(|(s, part)| {
            let t = cfg.model.block_size;
            let one = if p.tp > 1 {
                crate::parallel::tensor::stage_activation_bytes(
                    &cfg.model, part, rows, t, p.tp, p.sp,
                )
            } else {
                Workspace::for_stage(&cfg.model, part, rows, t).activation_bytes(part)
            };
            // zb: and the output gradients its weight gradients read, kept from B to W
            let one = one
                + if p.schedule == PipeSchedule::ZeroBubble {
                    Deferred::for_stage(&cfg.model, part, rows, t).bytes()
                } else {
                    0
                };
            let acts = schedule::actions(p.schedule, p.pp, s, p.micro);
            one * schedule::max_in_flight(&acts)
        })
        .collect()
}

/// One micro-batch's activations on a stage: one workspace of all its rows, or, in
/// deterministic mode, one per sequence (each sequence's gradient is formed alone); under
/// `zb` each piece's [`Deferred`] output gradients too, from its B to its W.
struct Slot {
    pieces: Vec<Workspace>,
    later: Vec<Deferred>,
}

/// A pipeline stage's training state and buffers, allocated once.
pub struct Pipe {
    /// Which stage, `0..stages`.
    pub stage: usize,
    /// P.
    pub stages: usize,
    /// Every stage's blocks.
    pub parts: Vec<StagePart>,
    /// The model; only this stage's tensors are current between consolidations.
    pub model: Gpt,
    /// AdamW's moments (this stage's tensors are current).
    pub adam: AdamW,
    /// Gradients, full layout (this stage's tensors are written).
    pub grads: Vec<f32>,
    /// Deterministic mode's exact sums (else empty).
    pub acc: Vec<i64>,
    /// The tensors this stage updates: its own, and on the last stage the tied `wte`.
    update_layout: ParamLayout,
    /// The micro-batches' activation slots ([`schedule::max_in_flight`] of them).
    slots: Vec<Slot>,
    /// Free slots; `slot_of[m]` is micro-batch m's while it is in flight.
    free: Vec<usize>,
    slot_of: Vec<Option<usize>>,
    /// This stage's actions of every step.
    actions: Vec<Action>,
    /// `zb`: backwards leave the blocks' weight gradients to [`Action::Weight`]s; the
    /// micro-batches `w_next..b_done` have had their B and wait for their W.
    split: bool,
    w_next: usize,
    b_done: usize,
    /// Sequences per micro-batch, and rows per piece (1 in deterministic mode).
    per_micro: usize,
    rows: usize,
    /// One piece's tokens.
    inputs: Vec<u32>,
    targets: Vec<u32>,
    /// Deterministic mode: one micro-batch's per-sequence head parts of the `wte` gradient
    /// (sent by the last stage, received by stage 0).
    wte_parts: Vec<Vec<f32>>,
    /// The other end's `wte` gradient, received into these each step (first and last stage
    /// of P > 1; exact sums in deterministic mode, floats otherwise; else empty).
    wte_theirs_acc: Vec<i64>,
    wte_theirs: Vec<f32>,
    /// The norm partials of this stage's whole chunks, taken each step ([`Pipe::norm_and_loss`]).
    norm_sums: Vec<f64>,
    /// `--tp`: the stage is a tensor group, and `model` holds this rank's shard (see
    /// `tensor_stage.rs`); `None`: whole blocks.
    tensor: Option<crate::parallel::tensor::StageGroup>,
    /// `--zero 1`: the stage's parameters cut among its data-parallel group, and my part's
    /// AdamW moments ([`StageShard`]); `adam` then holds no moments between consolidations.
    zero: Option<StageShard>,
}

/// The communicators a stage talks in.
pub struct PipeComms {
    /// The other stages of my replica, ranked by stage.
    pub pp: Comm,
    /// The same stage in the other replicas: the gradient all-reduce, whose buckets cover
    /// only the ranges the stage writes ([`Pipe::written`]).
    pub dp: AllReduce,
}

impl PipeComms {
    /// `pipe`'s communicators: `pp` its replica's stages, `dp` the same stage in the other
    /// replicas, over which the gradient sum runs in buckets of `--bucket-kb` cut from each
    /// range the stage writes, the last range first (backward finishes the end of the
    /// layout first):
    ///
    /// ```text
    ///   layout:        [ wte | wpe | h.0 h.1 | h.2 h.3 | ln_f ]
    ///   stage 0 sums:  [ wte | wpe | h.0 h.1 ]                      (its range holds wte)
    ///   stage 1 sums:  [ wte ]               [ h.2 h.3 | ln_f ]     (its range, then its wte)
    /// ```
    /// The rest of a stage's buffer is zero on every replica: its sum would be zero too.
    pub fn new(pp: Comm, dp: Comm, pipe: &Pipe, cfg: &TrainConfig) -> PipeComms {
        let p = &cfg.parallel;
        let floats = buckets::floats_for_kb(p.bucket_kb);
        let plan = (pipe.written().into_iter().rev())
            .filter(|r| !r.is_empty())
            .flat_map(|r| {
                let start = r.start;
                buckets::plan(r.len(), floats)
                    .into_iter()
                    .map(move |b| start + b.start..start + b.end)
            })
            .collect();
        let dp = AllReduce {
            comm: dp,
            algorithm: p.allreduce,
            plan,
            overlap: false,
        };
        PipeComms { pp, dp }
    }
}

impl Pipe {
    /// Stage `stage` of `cfg`'s pipeline, from the full `model` and `adam`.
    pub fn new(stage: usize, model: Gpt, adam: AdamW, cfg: &TrainConfig) -> Pipe {
        let p = &cfg.parallel;
        let (stages, exact) = (p.pp, p.deterministic);
        let parts = split(cfg.model.n_layer, stages);
        let part = parts[stage].clone();
        let layout = &model.layout;
        let mine = owned(layout, &part);
        let wte = wte_range(layout);
        let tensors = (layout.tensors.iter())
            .filter(|t| mine.contains(&t.offset) || (part.last && wte.contains(&t.offset)))
            .cloned()
            .collect();
        let update_layout = ParamLayout {
            tensors,
            len: layout.len,
        };
        let per_micro = p.batch / cfg.data_parallel() / p.micro;
        let rows = if exact { 1 } else { per_micro };
        let actions = schedule::actions(p.schedule, stages, stage, p.micro);
        let t = cfg.model.block_size;
        let split = p.schedule == PipeSchedule::ZeroBubble;
        // (a tensor-parallel stage keeps its activations in `tensor` instead)
        let pieces = if p.tp > 1 { 0 } else { per_micro / rows };
        let slots = (0..schedule::max_in_flight(&actions))
            .map(|_| Slot {
                pieces: (0..pieces)
                    .map(|_| Workspace::for_stage(&cfg.model, &part, rows, t))
                    .collect(),
                later: (0..if split { pieces } else { 0 })
                    .map(|_| Deferred::for_stage(&cfg.model, &part, rows, t))
                    .collect(),
            })
            .collect::<Vec<_>>();
        let n = layout.len;
        let wte_parts = if exact && (part.first || part.last) && stages > 1 {
            vec![vec![0.0; wte.len()]; per_micro]
        } else {
            Vec::new()
        };
        let tied = stages > 1 && (part.first || part.last);
        let theirs_len = |on: bool| if on { wte.len() } else { 0 };
        Pipe {
            stage,
            stages,
            free: (0..slots.len()).rev().collect(),
            slots,
            slot_of: vec![None; p.micro],
            parts,
            grads: vec![0.0; n],
            acc: if exact { vec![0; n] } else { Vec::new() },
            update_layout,
            actions,
            split,
            w_next: 0,
            b_done: 0,
            per_micro,
            rows,
            inputs: vec![0; rows * t],
            targets: vec![0; rows * t],
            wte_parts,
            wte_theirs_acc: vec![0; theirs_len(tied && exact)],
            wte_theirs: vec![0.0; theirs_len(tied && !exact)],
            norm_sums: Vec::with_capacity(n / NORM_CHUNK + 1),
            tensor: None,
            zero: None,
            model,
            adam,
        }
    }

    /// `--zero 1`: keeps AdamW's moments of this member's part of the stage only, as member
    /// `rank` of the stage's data-parallel group of `size` ([`StageShard`]). The rest of
    /// the step changes with it: the gradient is reduce-scattered, not all-reduced, and the
    /// updated weights all-gathered.
    pub fn shard_optimizer(&mut self, rank: usize, size: usize) {
        let layout = &self.model.layout;
        let part = self.part();
        let tied = (part.last && self.stages > 1)
            .then(|| (wte_range(layout), owned(layout, &self.parts[0])));
        let shard = StageShard::new(owned(layout, part), tied, rank, size, &self.adam);
        self.adam = AdamW {
            m: Vec::new(),
            v: Vec::new(),
            t: self.adam.t,
        };
        self.zero = Some(shard);
    }

    /// `--zero 1`: gathers the moments of the stage's parts from its data-parallel group into
    /// `adam`, whole-layout buffers with the stage's tensors filled, ready for
    /// [`Pipe::consolidate`]; nothing to do without ZeRO. A collective of the group.
    pub fn gather_moments(&mut self, dp: &mut Comm) -> Result<(), CommError> {
        if let Some(z) = &self.zero {
            self.adam = z.whole_adam(self.model.layout.len, dp)?;
        }
        Ok(())
    }

    /// `--zero 1`: drops the whole moments [`Pipe::gather_moments`] made (my parts' stay).
    pub fn release_moments(&mut self) {
        if let Some(z) = &self.zero {
            self.adam = AdamW {
                m: Vec::new(),
                v: Vec::new(),
                t: z.t(),
            };
        }
    }

    /// `--zero 1`: what this worker holds for its stage (`summary.json`'s `memory`); `None`
    /// without ZeRO. Every stage keeps whole-layout buffers of weights and gradients (so
    /// that offsets are the model's), which the measured figures count.
    pub fn memory(&self, cfg: &TrainConfig) -> Option<Memory> {
        let acts = peak_activation_bytes(cfg)[self.stage] as u64;
        (self.zero.as_ref()).map(|z| {
            z.memory(
                self.model.params.len(),
                self.grads.len(),
                self.acc.len(),
                acts,
            )
        })
    }

    fn part(&self) -> &StagePart {
        &self.parts[self.stage]
    }

    /// The ranges of the gradient buffer this stage writes, in layout order: the tied `wte`
    /// on the last stage of P > 1 (empty elsewhere: stage 0's own range begins with `wte`),
    /// then its own ([`owned`]). The rest of the buffer stays zero.
    pub fn written(&self) -> [Range<usize>; 2] {
        let (layout, part) = (&self.model.layout, self.part());
        let tied = if part.last && !part.first {
            wte_range(layout)
        } else {
            0..0
        };
        [tied, owned(layout, part)]
    }

    /// Every stage's owned range, by stage.
    fn ranges(&self) -> Vec<Range<usize>> {
        let layout = &self.model.layout;
        self.parts.iter().map(|p| owned(layout, p)).collect()
    }

    /// Gathers every stage's tensors (parameters and AdamW moments) into every stage's
    /// buffers, so that each holds the whole model: each stage broadcasts its range in turn.
    /// A collective call of the stages of one replica.
    pub fn consolidate(&mut self, pp: &mut Comm, with_adam: bool) -> Result<(), CommError> {
        for (s, r) in self.ranges().into_iter().enumerate() {
            pp.broadcast(&mut self.model.params[r.clone()], s)?;
            if with_adam {
                pp.broadcast(&mut self.adam.m[r.clone()], s)?;
                pp.broadcast(&mut self.adam.v[r], s)?;
            }
        }
        Ok(())
    }

    /// One training step of this stage: the schedule's forwards and backwards, the
    /// gradient sums (replicas, tied embedding), the global norm, clip + AdamW.
    pub fn step(
        &mut self,
        cfg: &TrainConfig,
        batch: &Batch<'_>,
        comms: &mut PipeComms,
        obs: &mut impl Observer,
    ) -> Result<StepStats, Error> {
        let (step, exact) = (batch.step, cfg.parallel.deterministic);
        let rank = comms.pp.rank();
        obs.step_starts(step);
        let scale = 1.0 / cfg.tokens_per_step() as f32;
        // a stage writes gradients of its own range and, on the last stage, of the tied
        // wte; the rest of the buffer stays zero from the start
        for r in self.written() {
            self.grads[r.clone()].fill(0.0);
            if exact {
                self.acc[r].fill(0);
            }
        }
        // the stages start together, so each one's window below is the same interval
        obs.time(Phase::Wait, step, || comms.pp.barrier())
            .map_err(gone(step))?;
        let mut loss = 0.0f32;
        let start_us = obs.clock().map(|c| c.now_us());
        (self.w_next, self.b_done) = (0, 0);
        let (s, first, last) = (self.stage, self.part().first, self.part().last);
        for a in 0..self.actions.len() {
            match self.actions[a] {
                Action::Forward(m) => {
                    if !first {
                        self.weights_while_waiting(s - 1, step, comms, obs)?;
                    }
                    self.forward(m, cfg, batch, comms, obs, &mut loss)?
                }
                Action::Backward(m) => {
                    if !last {
                        self.weights_while_waiting(s + 1, step, comms, obs)?;
                    }
                    self.backward(m, scale, batch, comms, obs)?
                }
                // (unless it ran sooner, in a wait)
                Action::Weight(m) if m >= self.w_next => self.weights(m, step, comms, obs)?,
                Action::Weight(_) => {}
            }
        }
        obs.time(Phase::Wait, step, || comms.pp.barrier())
            .map_err(gone(step))?;
        if let (Some(clock), Some(start_us)) = (obs.clock(), start_us) {
            obs.record(Span {
                phase: Phase::Pipeline,
                step,
                start_us,
                dur_us: clock.now_us() - start_us,
                comm_thread: false,
            });
        }
        // --tp --sp: the whole copies' partial gradients, added over the tensor group
        self.sum_tensor_copies(step)?;
        // as one worker forms it: deterministic mode sums the per-sequence losses, the
        // default mode the micro-batches' means (of --accum's micro-batches there)
        loss /= if exact {
            batch.sequences.len()
        } else {
            cfg.parallel.micro
        } as f32;
        obs.gradients_done(step);
        let layout = &self.model.layout;
        let mine = owned(layout, self.part());
        let wte = wte_range(layout);
        let (first, last) = (self.part().first, self.part().last);
        let tied = self.stages > 1 && (first || last);
        let other = if first { self.stages - 1 } else { 0 };
        let replicas = comms.dp.comm.size() > 1;
        if self.zero.is_some() {
            self.sum_sharded(comms, step, obs, tied, other)?;
        } else if exact {
            if replicas {
                // (over the ranges this stage writes: `PipeComms::new`'s plan)
                comms.dp.sum_exact(&mut self.acc, step, obs)?;
            }
            if tied {
                let acc = &mut self.acc[wte.clone()];
                let theirs = &mut self.wte_theirs_acc;
                let pp = &mut comms.pp;
                (pp.send(other, acc).and_then(|_| pp.recv(other, theirs))).map_err(gone(step))?;
                acc.iter_mut().zip(theirs.iter()).for_each(|(a, b)| *a += b);
            }
            fixed_point::to_f32(&mut self.grads[mine.clone()], &self.acc[mine.clone()]);
            if last && tied {
                fixed_point::to_f32(&mut self.grads[wte.clone()], &self.acc[wte.clone()]);
            }
        } else {
            if replicas {
                comms.dp.sum(&mut self.grads, step, obs)?;
            }
            if tied {
                let g = &mut self.grads[wte.clone()];
                let theirs = &mut self.wte_theirs;
                let pp = &mut comms.pp;
                (pp.send(other, g).and_then(|_| pp.recv(other, theirs))).map_err(gone(step))?;
                // a + b == b + a in floats: both copies of wte get the same gradient
                g.iter_mut().zip(theirs.iter()).for_each(|(a, b)| *a += b);
            }
        }
        let (norm, loss) = self.norm_and_loss(comms, loss, step)?;
        let lr = lr_at(step, cfg.schedule.steps, &cfg.optim);
        if !norm.is_finite() {
            let (name, value) = first_non_finite(&self.grads, &self.model.layout).map_or(
                ("a tensor of another stage".to_string(), norm as f32),
                |(n, v)| (n.to_string(), v),
            );
            return Err(Error::Diverged {
                step,
                worker: rank,
                tensor: format!("the summed gradient of {name}"),
                value,
            });
        }
        let clip = clip_factor(norm, cfg.optim.grad_clip);
        let (model, adam, grads) = (&mut self.model, &mut self.adam, &self.grads);
        if let Some(z) = self.zero.as_mut() {
            let (dp, optim) = (&mut comms.dp.comm, &cfg.optim);
            (z.update(
                &mut model.params,
                grads,
                &model.layout,
                lr,
                optim,
                clip,
                dp,
                step,
                obs,
            ))
            .map_err(gone(step))?;
        } else {
            let layout = &self.update_layout;
            obs.time(Phase::Optimizer, step, || {
                adam.step_scaled(&mut model.params, grads, layout, lr, &cfg.optim, clip)
            });
        }
        Ok(StepStats {
            loss,
            lr,
            grad_norm: norm as f32,
        })
    }

    /// `--zero 1`'s sums: the stage's gradient (deterministic mode: its exact sums)
    /// reduce-scattered over the replicas, my part of the tied `wte` added with the other
    /// end's same part (`tied`; `other` is that end's stage), deterministic mode's sums of my
    /// parts made floats. Afterwards my parts hold the summed gradient.
    fn sum_sharded(
        &mut self,
        comms: &mut PipeComms,
        step: usize,
        obs: &mut impl Observer,
        tied: bool,
        other: usize,
    ) -> Result<(), Error> {
        let z = self.zero.as_ref().expect("a sharded stage");
        let exact = !self.acc.is_empty();
        let dp = &mut comms.dp.comm;
        // the replicas' backwards end at different times: their wait is not the sum's
        obs.time(Phase::Wait, step, || dp.barrier())
            .map_err(gone(step))?;
        if exact {
            z.reduce_scatter(&mut self.acc, dp, step, obs)
        } else {
            z.reduce_scatter(&mut self.grads, dp, step, obs)
        }
        .map_err(gone(step))?;
        let w = z.wte_part(&wte_range(&self.model.layout));
        if tied && !w.is_empty() {
            // rank r of the first and the last stage hold the same part of wte
            let (pp, n) = (&mut comms.pp, w.len());
            if exact {
                let (acc, theirs) = (&mut self.acc[w], &mut self.wte_theirs_acc[..n]);
                (pp.send(other, acc).and_then(|_| pp.recv(other, theirs))).map_err(gone(step))?;
                acc.iter_mut().zip(theirs.iter()).for_each(|(a, b)| *a += b);
            } else {
                let (g, theirs) = (&mut self.grads[w], &mut self.wte_theirs[..n]);
                (pp.send(other, g).and_then(|_| pp.recv(other, theirs))).map_err(gone(step))?;
                // a + b == b + a in floats: both copies of my part get the same gradient
                g.iter_mut().zip(theirs.iter()).for_each(|(a, b)| *a += b);
            }
        }
        if exact {
            for p in z.parts() {
                fixed_point::to_f32(&mut self.grads[p.clone()], &self.acc[p]);
            }
        }
        Ok(())
    }

    /// Micro-batch `m`'s forward on this stage; the last stage adds its pieces' losses to
    /// `loss` (per sequence in deterministic mode, else the micro-batch's mean).
    fn forward(
        &mut self,
        m: usize,
        cfg: &TrainConfig,
        batch: &Batch<'_>,
        comms: &mut PipeComms,
        obs: &mut impl Observer,
        loss: &mut f32,
    ) -> Result<(), Error> {
        if self.tensor.is_some() {
            return self.tensor_forward(m, cfg, batch, comms, obs, loss);
        }
        let (step, t) = (batch.step, cfg.model.block_size);
        let slot = self.slot(Action::Forward(m));
        let (s, part) = (self.stage, &self.parts[self.stage]);
        let pieces = &mut self.slots[slot].pieces;
        if !part.first {
            let pp = &mut comms.pp;
            obs.time(Phase::Wait, step, || {
                pieces
                    .iter_mut()
                    .try_for_each(|ws| pp.recv(s - 1, ws.stage_input_mut()))
            })
            .map_err(gone(step))?;
        }
        let first_seq = batch.sequences.start + m * self.per_micro;
        let (model, rows) = (&self.model, self.rows);
        let (x, y) = (&mut self.inputs, &mut self.targets);
        // the first non-finite loss of the pieces, if any
        let bad = obs.time(Phase::StageForward(m), step, || {
            for (j, ws) in pieces.iter_mut().enumerate() {
                let seqs = first_seq + j * rows..first_seq + (j + 1) * rows;
                if part.first || part.last {
                    sampler::fill_batch(batch.tokens, batch.seed, step as u64, seqs, t, x, y);
                }
                let inputs = part.first.then_some(&x[..]);
                let targets = part.last.then_some(&y[..]);
                match model.stage_forward(ws, part, inputs, targets) {
                    Some(l) if !l.is_finite() => return Some(l),
                    Some(l) => *loss += l, // in sequence order, as one worker adds them
                    None => {}
                }
            }
            None
        });
        if let Some(value) = bad {
            return Err(loss_diverged(step, comms.pp.rank(), value));
        }
        if !part.last {
            for ws in pieces.iter() {
                comms
                    .pp
                    .send(s + 1, ws.stage_output())
                    .map_err(gone(step))?;
            }
        }
        Ok(())
    }

    /// Micro-batch `m`'s backward on this stage, its gradients added to `grads` (or, in
    /// deterministic mode, each piece's into the exact sum `acc`).
    fn backward(
        &mut self,
        m: usize,
        scale: f32,
        batch: &Batch<'_>,
        comms: &mut PipeComms,
        obs: &mut impl Observer,
    ) -> Result<(), Error> {
        if self.tensor.is_some() {
            return self.tensor_backward(m, scale, batch, comms, obs);
        }
        let step = batch.step;
        let slot = self.slot(Action::Backward(m));
        let (s, part) = (self.stage, &self.parts[self.stage]);
        let last_stage = self.stages - 1;
        let Slot { pieces, later } = &mut self.slots[slot];
        let exact = !self.acc.is_empty();
        let handoff = exact && self.stages > 1;
        let wte = wte_range(&self.model.layout);
        let wte_parts = &mut self.wte_parts;
        let pp = &mut comms.pp;
        obs.time(Phase::Wait, step, || -> Result<(), CommError> {
            if !part.last {
                for ws in pieces.iter_mut() {
                    pp.recv(s + 1, ws.stage_grad_mut())?;
                }
            }
            if handoff && part.first {
                for w in wte_parts.iter_mut() {
                    pp.recv(last_stage, w)?;
                }
            }
            Ok(())
        })
        .map_err(gone(step))?;
        let (model, grads, acc) = (&self.model, &mut self.grads, &mut self.acc);
        let mine = owned(&model.layout, part);
        let ok = obs.time(Phase::StageBackward(m), step, || {
            for (j, ws) in pieces.iter_mut().enumerate() {
                if handoff && part.first {
                    // one worker's wte gradient of this sequence starts as the head's part
                    grads[wte.clone()].copy_from_slice(&wte_parts[j]);
                }
                match later.get_mut(j) {
                    Some(keep) => model.stage_backward_input(ws, part, scale, grads, keep),
                    None => model.stage_backward(ws, part, scale, grads),
                }
                if handoff && part.last {
                    wte_parts[j].copy_from_slice(&grads[wte.clone()]);
                    grads[wte.clone()].fill(0.0);
                }
                if exact
                    && !fixed_point::accumulate_and_zero(
                        &mut acc[mine.clone()],
                        &mut grads[mine.clone()],
                    )
                {
                    return false;
                }
            }
            true
        });
        if !ok {
            let what = format!("gradient of stage {s} (micro-batch {m})");
            return Err(sum_diverged(step, comms.pp.rank(), what));
        }
        if !part.first {
            for ws in pieces.iter() {
                comms.pp.send(s - 1, ws.stage_grad()).map_err(gone(step))?;
            }
        }
        if handoff && part.last {
            for w in self.wte_parts.iter() {
                comms.pp.send(0, w).map_err(gone(step))?;
            }
        }
        if self.split {
            self.b_done = m + 1;
        }
        Ok(())
    }

    /// `zb`: micro-batch `m`'s weight gradients on this stage (its [`Action::Weight`]): the
    /// products [`Gpt::stage_backward_input`] left, added to `grads` in micro-batch order
    /// (or, in deterministic mode, each piece's into the exact sum `acc`). Its slot is free
    /// afterwards.
    fn weights(
        &mut self,
        m: usize,
        step: usize,
        comms: &PipeComms,
        obs: &mut impl Observer,
    ) -> Result<(), Error> {
        debug_assert_eq!(m, self.w_next, "W's run in micro-batch order");
        let slot = self.slot(Action::Weight(m));
        let (model, part) = (&self.model, &self.parts[self.stage]);
        let Slot { pieces, later } = &self.slots[slot];
        let (grads, acc) = (&mut self.grads, &mut self.acc);
        let mine = owned(&model.layout, part);
        let ok = obs.time(Phase::StageWeight(m), step, || {
            pieces.iter().zip(later).all(|(ws, kept)| {
                model.stage_weight_grads(ws, part, grads, kept);
                acc.is_empty()
                    || fixed_point::accumulate_and_zero(
                        &mut acc[mine.clone()],
                        &mut grads[mine.clone()],
                    )
            })
        });
        if !ok {
            let what = format!("weight gradient of stage {} (micro-batch {m})", self.stage);
            return Err(sum_diverged(step, comms.pp.rank(), what));
        }
        self.w_next = m + 1;
        Ok(())
    }

    /// `zb`: while the message this stage waits for next (from stage `from`) has not come,
    /// runs its oldest pending W ([`Pipe::weights`]): the idle time of GPipe and 1F1B,
    /// filled with work nobody waits for. Nothing to do under the other schedules.
    fn weights_while_waiting(
        &mut self,
        from: usize,
        step: usize,
        comms: &PipeComms,
        obs: &mut impl Observer,
    ) -> Result<(), Error> {
        while self.w_next < self.b_done && !comms.pp.probe(from) {
            self.weights(self.w_next, step, comms, obs)?;
        }
        Ok(())
    }

    /// The slot of the activations of `action`'s micro-batch, for a forward or a backward of
    /// either kind of stage: at its forward a free one, which the micro-batch keeps until its
    /// backward (under zb, its W); then the same one, free again for the next action (a
    /// stage runs one action at a time, so no forward takes it while this one reads it).
    fn slot(&mut self, action: Action) -> usize {
        match action {
            Action::Forward(m) => {
                let slot =
                    (self.free.pop()).expect("the schedule keeps at most max_in_flight alive");
                self.slot_of[m] = Some(slot);
                slot
            }
            // under zb the micro-batch keeps its slot for its W
            Action::Backward(m) if self.split => {
                self.slot_of[m].expect("a backward after its forward")
            }
            Action::Backward(m) | Action::Weight(m) => {
                let slot = self.slot_of[m]
                    .take()
                    .expect("a backward (and W) after its forward");
                self.free.push(slot);
                slot
            }
        }
    }

    /// The global gradient norm, formed exactly as [`crate::optim::clip_scale`] forms it on
    /// one worker, and the step's loss, which only the last stage knows; both go to every
    /// stage. One worker's norm is a sum, in order, of [`NORM_CHUNK`] partials, each 8
    /// running f64 sums of squares (lane `i % 8` for element `i`) plus the last chunk's tail.
    /// A stage boundary may fall inside a chunk, so the stages pass the running state on,
    /// in layout order: the sum of the chunks finished so far, the 8 lanes of the open
    /// chunk, and its tail.
    ///
    /// Only the elements before a stage's first chunk boundary continue the previous
    /// stage's open chunk. Every chunk after it starts from zero lanes, so a stage takes
    /// the partials of its whole chunks (and the lanes of its last, partial one) *before*
    /// the state arrives; once it arrives, it continues the open chunk over those few
    /// elements and adds its partials in order. The chain then costs each stage at most one
    /// chunk of work while the others wait, instead of its whole range.
    ///
    /// ```text
    ///   my range:      [ head | chunk | chunk | ... | chunk | partial ]
    ///   before recv:            partials: p1, p2, ..., pk    lanes of the partial
    ///   after recv:    continue the open chunk over head, close it, st[0] += p1, ..., pk,
    ///                  open = the partial's lanes  -> send on (the last stage: the total)
    /// ```
    ///
    /// With `--zero 1` a member holds the summed gradient of its part of the range only:
    /// [`StageShard::share_norm_inputs`] first hands it the partials of the other parts'
    /// whole chunks and the elements of the range's first and last chunk, all this reads.
    fn norm_and_loss(
        &mut self,
        comms: &mut PipeComms,
        loss: f32,
        step: usize,
    ) -> Result<(f64, f32), Error> {
        if self.tensor.is_some() {
            return self.tensor_norm_and_loss(comms, loss, step);
        }
        let (s, last) = (self.stage, self.stages - 1);
        let mine = owned(&self.model.layout, self.part());
        if let Some(z) = self.zero.as_mut() {
            (z.share_norm_inputs(&mut self.grads, &mut comms.dp.comm)).map_err(gone(step))?;
        }
        let gathered = self.zero.as_ref().map(|z| &z.partials[..]);
        let pp = &mut comms.pp;
        let g = &self.grads;
        let n = g.len();
        // the last chunk's elements past its last multiple of 8 are its tail
        let last_chunk = (n - 1) / NORM_CHUNK * NORM_CHUNK;
        let body = last_chunk + (n - last_chunk) / 8 * 8;
        // elements before the first chunk boundary of my range continue an open chunk
        let head_end = mine.start.next_multiple_of(NORM_CHUNK).min(mine.end);
        let sums = &mut self.norm_sums;
        sums.clear();
        // the lanes and tail of my last chunk when it is partial (else zeros)
        let mut open = [0f64; 10];
        let mut c = head_end;
        while c < mine.end {
            let end = (c + NORM_CHUNK).min(mine.end);
            if end - c == NORM_CHUNK {
                // a whole chunk: its partial, exactly as one worker takes it
                sums.push(
                    gathered.map_or_else(|| sum_of_squares(&g[c..end]), |p| p[c / NORM_CHUNK]),
                );
            } else {
                norm_lanes(&mut open, g, c..end, body);
            }
            c = end;
        }
        // state: [finished chunks' sum, lane 0..8 of the open chunk, the tail]
        let mut st = [0f64; 10];
        if s > 0 {
            pp.recv(s - 1, &mut st).map_err(gone(step))?;
        }
        norm_lanes(&mut st, g, mine.start..head_end, body);
        if head_end < mine.end {
            // element head_end starts a chunk: the open one is complete
            if head_end > 0 {
                st[0] += st[1..9].iter().sum::<f64>();
            }
            st[0] = sums.iter().fold(st[0], |a, p| a + p);
            // a whole chunk ending at my range's end is closed here rather than by the
            // next stage: adding its partial now or adding it plus 0.0 later is the same
            st[1..].copy_from_slice(&open[1..]);
        }
        let mut out = [0f64; 2];
        if s < last {
            pp.send(s + 1, &st).map_err(gone(step))?;
        } else {
            let total = st[0] + (st[1..9].iter().sum::<f64>() + st[9]);
            out = [total.sqrt(), loss as f64];
        }
        pp.broadcast(&mut out, last).map_err(gone(step))?;
        Ok((out[0], out[1] as f32))
    }
}

/// The error of a stage whose exact (fixed-point) gradient sum of `what` overflowed on
/// `worker` at `step`: a gradient that was not finite or too large to sum.
fn sum_diverged(step: usize, worker: usize, what: String) -> Error {
    Error::Diverged {
        step,
        worker,
        tensor: what,
        value: f32::NAN,
    }
}

/// The error of a stage whose loss came out `value`, not finite, on `worker` at `step`.
fn loss_diverged(step: usize, worker: usize, value: f32) -> Error {
    Error::Diverged {
        step,
        worker,
        tensor: "the loss".into(),
        value,
    }
}

/// Continues the running norm state `st` (see [`Pipe::norm_and_loss`]) over `g[range]`,
/// element by element as one worker's chunks take them: a chunk boundary closes the open
/// chunk into `st[0]`, element `i` adds to lane `i % 8`, or to the tail from `body` on.
fn norm_lanes(st: &mut [f64; 10], g: &[f32], range: Range<usize>, body: usize) {
    for i in range {
        if i % NORM_CHUNK == 0 && i > 0 {
            st[0] += st[1..9].iter().sum::<f64>(); // the chunk before i is complete
            st[1..9].fill(0.0);
        }
        let sq = g[i] as f64 * g[i] as f64;
        if i < body {
            st[1 + i % 8] += sq;
        } else {
            st[9] += sq;
        }
    }
}

/// `cfg`'s schedule drawn in unit time (see [`schedule::draw`]).
pub fn draw(cfg: &TrainConfig) -> String {
    let p = &cfg.parallel;
    schedule::draw(p.schedule, p.pp, p.micro)
}

/// What a pipeline run reports beside the usual figures (`summary.json`'s `pipeline`).
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    /// P.
    pub stages: usize,
    /// M.
    pub micro: usize,
    /// `gpipe` or `1f1b`.
    pub schedule: &'static str,
    /// Blocks per stage, stage 0 first.
    pub blocks_per_stage: Vec<usize>,
    /// The idle fraction of each stage's schedule window, the median over stages and
    /// traced steps (the first step, a warm-up, left out); `None` without spans.
    pub bubble_measured: Option<f64>,
    /// (P-1)/(M+P-1); under `zb`, the simulated schedule's ([`schedule::theoretical_bubble`]).
    pub bubble_theory: f64,
    /// Each stage's peak bytes of activations held for backward ([`peak_activation_bytes`]).
    pub peak_activation_bytes: Vec<usize>,
}

/// The [`Figures`] of a run of `cfg` whose workers recorded `tracks`.
pub fn figures(cfg: &TrainConfig, tracks: &[Vec<Span>]) -> Figures {
    let p = &cfg.parallel;
    Figures {
        stages: p.pp,
        micro: p.micro,
        schedule: p.schedule.name(),
        blocks_per_stage: (split(cfg.model.n_layer, p.pp).iter())
            .map(|s| s.layers.len())
            .collect(),
        bubble_measured: measured_bubble(tracks),
        bubble_theory: schedule::theoretical_bubble(p.schedule, p.pp, p.micro),
        peak_activation_bytes: peak_activation_bytes(cfg),
    }
}

/// The measured bubble: on each track, for each step but the first traced one, 1 - (time
/// in the stage's forwards and backwards) / (its [`Phase::Pipeline`] window, which runs
/// from the stages' common start to their common end); the median of them all. `None` when
/// no track holds a window.
///
/// ```text
///   window   |<------------------------------------------------>|
///   stage 1  |  wait  |F0|F1|F2|F3|B0 |B1 |B2 |B3 |    wait     |
///   bubble = 1 - (F0+..+B3) / window
/// ```
pub fn measured_bubble(tracks: &[Vec<Span>]) -> Option<f64> {
    let first = (tracks.iter().flatten())
        .filter(|s| s.phase == Phase::Pipeline)
        .map(|s| s.step)
        .min()?;
    let mut fractions = Vec::new();
    for spans in tracks {
        for w in spans.iter().filter(|s| s.phase == Phase::Pipeline) {
            if w.step == first
                && spans
                    .iter()
                    .any(|s| s.phase == Phase::Pipeline && s.step > first)
            {
                continue;
            }
            let busy: f64 = (spans.iter())
                .filter(|s| s.step == w.step)
                .filter(|s| {
                    matches!(
                        s.phase,
                        Phase::StageForward(_) | Phase::StageBackward(_) | Phase::StageWeight(_)
                    )
                })
                .map(|s| s.dur_us)
                .sum();
            if w.dur_us > 0.0 {
                fractions.push(1.0 - busy / w.dur_us);
            }
        }
    }
    // the median: a step in which the host took a core away from a stage is an outlier
    fractions.sort_by(f64::total_cmp);
    let n = fractions.len();
    (n > 0).then(|| (fractions[(n - 1) / 2] + fractions[n / 2]) / 2.0)
}
