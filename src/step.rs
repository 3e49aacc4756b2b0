//! THE training step: forward, backward, the gradient exchange, clipping, the update.
//!
//! ```text
//!   for each micro-batch k of my sequences:          (deterministic: each sequence alone)
//!     forward   -> loss                               loss must be finite
//!     backward  -> grads += dL/dw                     (deterministic: into an exact i64 sum)
//!   exchange.sum(grads)                               1 replica: nothing; N: all-reduce
//!                                                     (--overlap: during the last backward)
//!   clip + AdamW(lr of this step)                     identical gradients -> identical replicas
//! ```
//!
//! Every caller runs this one function: the data-parallel worker loop, `nanodist bench`,
//! `benches/step.rs` and the [`tutorial`](crate::tutorial). What differs between them is
//! plugged in around it:
//!
//! - a [`GradientExchange`] says how replicas meet: [`Alone`] (one replica, nothing to
//!   sum), or data parallelism's all-reduce over a communicator
//!   ([`crate::parallel::data_parallel::AllReduce`]). Another strategy (a sharded optimizer,
//!   compressed gradients, local SGD) is another implementation of it.
//! - an [`Observer`] sees the phases go by: the worker loop's times and records them and
//!   injects `--straggler` sleeps; [`Unobserved`] does nothing, at no cost.
//!
//! A step that goes wrong on its numbers stops with one error, [`Error::Diverged`], naming
//! the step, the worker and the first tensor that is not finite.
//!
//! Rust note: the exchange and the observer are generic parameters (`impl Trait`), not trait
//! objects, so each caller gets its own copy of the step, compiled with its hooks inlined:
//! [`Unobserved`]'s empty methods cost nothing.

use std::ops::Range;

use crate::config::{OptimConfig, TrainConfig};
use crate::data::sampler;
use crate::error::Error;
use crate::model::{Gpt, ParamLayout, Workspace};
use crate::optim::{clip_scale, lr_at, AdamW};
use crate::parallel::fixed_point;
use crate::parallel::tensor::TensorParallel;
use crate::trace::{Clock, Phase, Span};

/// One replica's training state: the model, its optimizer, and the buffers a step reuses.
///
/// Everything is allocated once, in [`Replica::new`]; a step allocates nothing.
pub struct Replica {
    /// This replica's worker index (named in errors).
    pub rank: usize,
    /// The model's parameters and layout.
    pub model: Gpt,
    /// AdamW's moments, laid out like the parameters.
    pub adam: AdamW,
    /// Activations of one micro-batch (of one sequence in deterministic mode).
    pub ws: Workspace,
    /// Gradients, laid out like the parameters.
    pub grads: Vec<f32>,
    /// Deterministic mode: the exact fixed-point sum of per-sequence gradients (else empty).
    pub acc: Vec<i64>,
    /// One micro-batch's input and target tokens, `(rows, T)`.
    inputs: Vec<u32>,
    targets: Vec<u32>,
    /// Tensor parallelism (`--tp`): this worker's share of every block, which runs forward
    /// and backward in `ws`'s place; `model` then holds this worker's shard. `None`: the
    /// whole model.
    pub tensor: Option<TensorParallel>,
}

impl Replica {
    /// The replica of worker `rank` for `cfg`, from `model` and `adam`.
    pub fn new(rank: usize, model: Gpt, adam: AdamW, cfg: &TrainConfig) -> Self {
        let t = cfg.model.block_size;
        let rows = if cfg.parallel.deterministic {
            1
        } else {
            cfg.micro_batch()
        };
        let ws = Workspace::new(&cfg.model, rows, t);
        Replica::with(rank, model, adam, cfg, ws, None)
    }

    /// The replica of worker `rank` of a tensor group: `model` holds its shard (laid out by
    /// `tensor.layout`), `adam` the shard's moments, and `tensor` runs its forward and
    /// backward. (The whole model's workspace goes unused: one of a single token stands in.)
    pub fn tensor_parallel(
        rank: usize,
        model: Gpt,
        adam: AdamW,
        cfg: &TrainConfig,
        tensor: TensorParallel,
    ) -> Self {
        assert_eq!(
            model.layout, tensor.layout,
            "the model must be this worker's shard"
        );
        let ws = Workspace::new(&cfg.model, 1, 1);
        Replica::with(rank, model, adam, cfg, ws, Some(tensor))
    }

    fn with(
        rank: usize,
        model: Gpt,
        adam: AdamW,
        cfg: &TrainConfig,
        ws: Workspace,
        tensor: Option<TensorParallel>,
    ) -> Self {
        let t = cfg.model.block_size;
        let rows = if cfg.parallel.deterministic {
            1
        } else {
            cfg.micro_batch()
        };
        let n = model.layout.len;
        Replica {
            rank,
            ws,
            grads: vec![0.0; n],
            acc: if cfg.parallel.deterministic {
                vec![0; n]
            } else {
                Vec::new()
            },
            inputs: vec![0; rows * t],
            targets: vec![0; rows * t],
            model,
            adam,
            tensor,
        }
    }
}

/// What one step trains on: sequences `sequences` of step `step`'s global batch.
///
/// A batch is addressed, not handed over: the tokens come from [`sampler::fill_batch`] as a
/// pure function of (seed, step, sequence), so a worker draws its own share.
#[derive(Clone, Debug)]
pub struct Batch<'a> {
    /// The training split, token ids.
    pub tokens: &'a [u32],
    /// The sampler's seed.
    pub seed: u64,
    /// The optimizer step (0-based).
    pub step: usize,
    /// This replica's sequences of the global batch.
    pub sequences: Range<usize>,
}

/// What a step reports.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean loss over this replica's sequences.
    pub loss: f32,
    /// The learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// One training step of `r` on `batch`: gradients, their exchange, the update.
pub fn train_step(
    r: &mut Replica,
    cfg: &TrainConfig,
    batch: &Batch<'_>,
    exchange: &mut impl GradientExchange,
    obs: &mut impl Observer,
) -> Result<StepStats, Error> {
    let (step, exact) = (batch.step, cfg.parallel.deterministic);
    obs.step_starts(step);
    // Every replica scales by the GLOBAL batch's 1/(B*T): the sum over replicas is the mean.
    let scale = 1.0 / cfg.tokens_per_step() as f32;
    // 1. forward + backward over my sequences: my gradients (deterministic: an exact sum)
    let loss = if exact {
        exact_gradients(r, cfg, batch, scale, exchange, obs)?
    } else {
        gradients(r, cfg, batch, scale, exchange, obs)?
    };
    obs.gradients_done(step);
    // 2. the exchange: every replica ends with the sum of all replicas' gradients
    if exact {
        exchange.sum_exact(&mut r.acc, step, obs)?;
        fixed_point::to_f32(&mut r.grads, &r.acc);
    } else if !exchange.overlaps_backward() {
        exchange.sum(&mut r.grads, step, obs)?;
    }
    // 3. clip + AdamW: the same gradient and the same update keep the replicas equal
    let lr = lr_at(step, cfg.schedule.steps, &cfg.optim);
    let grad_norm = exchange.update(r, lr, &cfg.optim, step, obs)?;
    if !grad_norm.is_finite() {
        let (grads, layout) = (&r.grads, &r.model.layout);
        return Err(diverged_in(grads, layout, step, r.rank, "summed gradient"));
    }
    Ok(StepStats {
        loss,
        lr,
        grad_norm,
    })
}

/// Forward and backward over this replica's sequences, K micro-batches, into `r.grads`;
/// the last backward hands its buckets to the exchange as they finish, where it overlaps.
/// Returns the mean loss.
fn gradients(
    r: &mut Replica,
    cfg: &TrainConfig,
    batch: &Batch<'_>,
    scale: f32,
    exchange: &mut impl GradientExchange,
    obs: &mut impl Observer,
) -> Result<f32, Error> {
    let (step, k_total) = (batch.step, cfg.parallel.accum);
    let (m, start) = (cfg.micro_batch(), batch.sequences.start);
    r.grads.fill(0.0); // backward accumulates: zeroing is a visible step of its own
    let mut loss = 0.0;
    for k in 0..k_total {
        let seqs = start + k * m..start + (k + 1) * m;
        loss += forward(r, cfg, batch, seqs, exchange, obs)?;
        if k + 1 == k_total && exchange.overlaps_backward() {
            let (model, ws, grads) = (&r.model, &mut r.ws, &mut r.grads[..]);
            exchange.backward_and_sum(model, ws, scale, grads, step, obs)?;
        } else {
            backward(r, scale, step, exchange, obs)?;
        }
    }
    // (overlapped, the sum is already under way: the summed gradient's norm is checked)
    if !exchange.overlaps_backward() && first_non_finite(&r.grads, &r.model.layout).is_some() {
        return Err(diverged_in(
            &r.grads,
            &r.model.layout,
            step,
            r.rank,
            "gradient",
        ));
    }
    Ok(loss / k_total as f32)
}

/// Clips the summed gradient and takes the AdamW step; returns the norm before clipping
/// (not finite: nothing is updated, and the step reports the divergence). The default
/// [`GradientExchange::update`]; an exchange that adds to it (local SGD) calls it too.
pub fn update(r: &mut Replica, lr: f32, optim: &OptimConfig) -> f32 {
    let (norm, clip) = match &mut r.tensor {
        None => clip_scale(&r.grads, optim.grad_clip),
        // the norm of the whole model, summed over the group; a peer that left makes it NaN,
        // and the worker loop names the peer as the cause
        Some(tp) => (tp.clip_scale(&r.grads, optim.grad_clip)).unwrap_or((f32::NAN, 1.0)),
    };
    if norm.is_finite() {
        let model = &mut r.model;
        (r.adam).step_scaled(&mut model.params, &r.grads, &model.layout, lr, optim, clip);
    }
    norm
}

/// Fills the micro-batch of `seqs` and runs forward; the loss must be finite.
fn forward(
    r: &mut Replica,
    cfg: &TrainConfig,
    batch: &Batch<'_>,
    seqs: Range<usize>,
    exchange: &mut impl GradientExchange,
    obs: &mut impl Observer,
) -> Result<f32, Error> {
    let len = seqs.len() * cfg.model.block_size;
    let (x, y) = (&mut r.inputs[..len], &mut r.targets[..len]);
    let (t, step) = (cfg.model.block_size, batch.step);
    sampler::fill_batch(batch.tokens, batch.seed, step as u64, seqs, t, x, y);
    let loss = match &mut r.tensor {
        None => exchange.forward(&r.model, &mut r.ws, x, y, step, obs)?,
        Some(tp) => {
            (tp.ops.clock, tp.ops.step) = (obs.clock(), step);
            let params = &r.model.params;
            let loss = obs.time(Phase::Forward, step, || tp.forward(params, x, Some(y)));
            tp.ops.spans.drain(..).for_each(|s| obs.record(s));
            let loss = loss.map_err(TensorParallel::error(step))?;
            loss.expect("forward with targets returns a loss")
        }
    };
    if !loss.is_finite() {
        return Err(diverged(step, r.rank, "the loss".into(), loss));
    }
    Ok(loss)
}

/// Backward of the last forward, accumulated into `r.grads`: the whole model's, or this
/// worker's share of its tensor group's (a collective of the group).
fn backward(
    r: &mut Replica,
    scale: f32,
    step: usize,
    exchange: &mut impl GradientExchange,
    obs: &mut impl Observer,
) -> Result<(), Error> {
    let (model, ws, grads) = (&r.model, &mut r.ws, &mut r.grads[..]);
    match &mut r.tensor {
        None => exchange.backward(model, ws, scale, grads, step, obs)?,
        Some(tp) => {
            let done = obs.time(Phase::Backward, step, || {
                tp.backward(&model.params, scale, grads)
            });
            tp.ops.spans.drain(..).for_each(|s| obs.record(s));
            done.map_err(TensorParallel::error(step))?
        }
    }
    Ok(())
}

/// Deterministic mode: each sequence's gradient alone, summed exactly in fixed point into
/// `r.acc` (see [`fixed_point`]). Returns the mean loss.
fn exact_gradients(
    r: &mut Replica,
    cfg: &TrainConfig,
    batch: &Batch<'_>,
    scale: f32,
    exchange: &mut impl GradientExchange,
    obs: &mut impl Observer,
) -> Result<f32, Error> {
    let step = batch.step;
    r.grads.fill(0.0);
    r.acc.fill(0);
    let mut loss = 0.0;
    for seq in batch.sequences.clone() {
        loss += forward(r, cfg, batch, seq..seq + 1, exchange, obs)?;
        backward(r, scale, step, exchange, obs)?;
        let (acc, grads) = (&mut r.acc, &mut r.grads);
        let ok = obs.time(Phase::FixedPoint, step, || {
            fixed_point::accumulate_and_zero(acc, grads)
        });
        if !ok {
            let what = format!("gradient (sequence {seq})");
            return Err(diverged_in(&r.grads, &r.model.layout, step, r.rank, &what));
        }
    }
    Ok(loss / batch.sequences.len() as f32)
}

/// How the replicas' gradients become one: the part of a step each parallel strategy
/// supplies.
///
/// After [`sum`](Self::sum) (or [`sum_exact`](Self::sum_exact) in deterministic mode) every
/// replica holds the same gradient, so the same update keeps them identical.
pub trait GradientExchange {
    /// Forward of one micro-batch `(inputs, targets)` on `model`; returns the loss.
    ///
    /// The default runs the replica's model as it is. A strategy whose replica holds only a
    /// shard of the weights (ZeRO stage 3) gathers each block's before using it.
    fn forward<O: Observer>(
        &mut self,
        model: &Gpt,
        ws: &mut Workspace,
        inputs: &[u32],
        targets: &[u32],
        step: usize,
        obs: &mut O,
    ) -> Result<f32, Error> {
        let loss = obs.time(Phase::Forward, step, || {
            model.forward(ws, inputs, Some(targets))
        });
        Ok(loss.expect("forward with targets returns a loss"))
    }

    /// Backward of the last forward, ADDING this replica's gradients into `grads` (not
    /// the last micro-batch when overlapped: that one is
    /// [`backward_and_sum`](Self::backward_and_sum)).
    ///
    /// The default is the model's backward into the whole layout. A strategy that keeps
    /// only a shard of the gradient (ZeRO stages 2 and 3) sums each block's gradient as it
    /// is done and adds its own part into `grads`, then its shard.
    fn backward<O: Observer>(
        &mut self,
        model: &Gpt,
        ws: &mut Workspace,
        scale: f32,
        grads: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        obs.time(Phase::Backward, step, || model.backward(ws, scale, grads));
        Ok(())
    }

    /// Whether the sum starts during the last micro-batch's backward, bucket by bucket
    /// ([`backward_and_sum`](Self::backward_and_sum)) instead of after it.
    fn overlaps_backward(&self) -> bool {
        false
    }

    /// The last micro-batch's backward into `grads`, with the sum started as gradients
    /// become final. Called only when [`overlaps_backward`](Self::overlaps_backward).
    fn backward_and_sum<O: Observer>(
        &mut self,
        model: &Gpt,
        ws: &mut Workspace,
        scale: f32,
        grads: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        obs.time(Phase::Backward, step, || model.backward(ws, scale, grads));
        self.sum(grads, step, obs)
    }

    /// Sums `grads` over the replicas, in place.
    fn sum<O: Observer>(
        &mut self,
        grads: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error>;

    /// Sums deterministic mode's fixed-point gradients over the replicas, in place.
    fn sum_exact<O: Observer>(
        &mut self,
        acc: &mut [i64],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error>;

    /// Clips the summed gradient in `r.grads` and takes the optimizer step on `r`; returns
    /// the gradient norm before clipping (not finite: nothing is updated).
    ///
    /// The default is replicated data parallelism's: every replica holds the whole summed
    /// gradient and updates all of its parameters. A strategy that shards the optimizer
    /// (ZeRO) overrides it: it updates its own slice and gathers the others'.
    fn update<O: Observer>(
        &mut self,
        r: &mut Replica,
        lr: f32,
        optim: &OptimConfig,
        step: usize,
        obs: &mut O,
    ) -> Result<f32, Error> {
        Ok(obs.time(Phase::Optimizer, step, || update(r, lr, optim)))
    }
}

/// One replica alone: its gradient already is the sum.
#[derive(Clone, Copy, Debug, Default)]
pub struct Alone;

impl GradientExchange for Alone {
    fn sum<O: Observer>(&mut self, _: &mut [f32], _: usize, _: &mut O) -> Result<(), Error> {
        Ok(())
    }

    fn sum_exact<O: Observer>(&mut self, _: &mut [i64], _: usize, _: &mut O) -> Result<(), Error> {
        Ok(())
    }
}

/// Sees a step's phases go by: timing, tracing, injected stragglers.
///
/// Every method has a default that does nothing, so [`Unobserved`] is an empty `impl`.
pub trait Observer {
    /// Runs `f` as `phase` of `step` and returns its result (a tracer times it).
    fn time<R>(&mut self, phase: Phase, step: usize, f: impl FnOnce() -> R) -> R {
        let _ = (phase, step);
        f()
    }

    /// The clock that spans measured on another thread (overlapped buckets) are timed with;
    /// `None`: nobody records them.
    fn clock(&self) -> Option<Clock> {
        None
    }

    /// Takes a span timed elsewhere (the communication thread's).
    fn record(&mut self, span: Span) {
        let _ = span;
    }

    /// The step begins.
    fn step_starts(&mut self, step: usize) {
        let _ = step;
    }

    /// This replica's gradients are done, before they are summed (when not overlapped).
    fn gradients_done(&mut self, step: usize) {
        let _ = step;
    }
}

/// An observer that does nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unobserved;

impl Observer for Unobserved {}

/// [`Error::Diverged`] for a gradient buffer: the first tensor of `values` holding a value
/// that is not finite (or, all finite but too large to sum, the largest).
fn diverged_in(
    values: &[f32],
    layout: &ParamLayout,
    step: usize,
    worker: usize,
    what: &str,
) -> Error {
    let (name, value) = first_non_finite(values, layout).unwrap_or_else(|| {
        let i = (0..values.len()).max_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()));
        let i = i.unwrap_or(0);
        let t = layout
            .tensors
            .iter()
            .find(|t| (t.offset..t.offset + t.len).contains(&i));
        (
            t.map_or("?", |t| &t.name),
            values.get(i).copied().unwrap_or(f32::NAN),
        )
    });
    diverged(step, worker, format!("the {what} of {name}"), value)
}

fn diverged(step: usize, worker: usize, tensor: String, value: f32) -> Error {
    Error::Diverged {
        step,
        worker,
        tensor,
        value,
    }
}

/// The name of the tensor holding the first NaN or infinity, and that value, if any.
///
/// Every step checks every gradient, so the common answer comes first and fast: the largest
/// magnitude's bit pattern, taken 16 lanes at a time (vectorised), is below infinity's
/// exactly when every value is finite; only when it is not is the position searched for.
pub fn first_non_finite<'l>(values: &[f32], layout: &'l ParamLayout) -> Option<(&'l str, f32)> {
    const INF_BITS: u32 = 0x7f80_0000; // |x| of infinity; NaNs lie above it
    let magnitude = |v: &f32| v.to_bits() & !(1 << 31);
    let mut most = [0u32; 16];
    let chunks = values.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            most[l] = most[l].max(magnitude(&c[l]));
        }
    }
    let largest = most.into_iter().chain(tail.iter().map(magnitude)).max();
    if largest.unwrap_or(0) < INF_BITS {
        return None;
    }
    let i = values.iter().position(|v| !v.is_finite())?;
    let t = layout
        .tensors
        .iter()
        .find(|t| (t.offset..t.offset + t.len).contains(&i))?;
    Some((&t.name, values[i]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    /// The fast answer (all finite) and the search agree wherever the bad value lies: in the
    /// 16-wide blocks, in the tail after them, and at either end; the largest finite float
    /// and the smallest subnormal pass.
    #[test]
    fn first_non_finite_finds_every_kind_anywhere() {
        let layout = ParamLayout::new(&ModelConfig {
            vocab_size: 6,
            block_size: 4,
            n_layer: 1,
            n_head: 2,
            n_embd: 8,
        });
        let n = layout.len;
        assert!(n % 16 != 0, "the layout should leave a tail: {n}");
        let mut v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).cos()).collect();
        v[1] = f32::MAX;
        v[2] = -f32::MAX;
        v[3] = f32::from_bits(1);
        assert_eq!(first_non_finite(&v, &layout), None);
        for at in [0, 5, 16 * (n / 32), n / 16 * 16 - 1, n / 16 * 16, n - 1] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                let mut w = v.clone();
                w[at] = bad;
                let t = (layout.tensors.iter())
                    .find(|t| (t.offset..t.offset + t.len).contains(&at))
                    .unwrap();
                let (name, value) = first_non_finite(&w, &layout).expect("a non-finite value");
                assert_eq!(name, t.name, "{at}");
                assert_eq!(value.to_bits(), bad.to_bits(), "{at}");
            }
        }
    }
}
