//! Synchronous data parallelism: N replicas, one gradient, identical updates.
//!
//! Every worker thread runs [`run_worker`], the same loop for 1 and for N workers:
//!
//! ```text
//!  for each step:
//!    sequences [rank*B/N, (rank+1)*B/N) of the global batch, in K micro-batches
//!    forward + backward  -> my gradients, each scaled by 1/(B*T)
//!    (wait for the slowest worker)
//!    all-reduce (sum) bucket by bucket -> every worker holds the full-batch gradient
//!    clip + AdamW on my replica       -> identical inputs give identical replicas
//! ```
//!
//! Why the sum of shard gradients is the full-batch gradient: the loss is a mean over
//! all B*T predicted tokens, L = (1/(B*T)) * sum_i l_i, and a gradient is linear, so
//! dL/dw = sum over workers of (1/(B*T)) * sum_{i in shard} dl_i/dw. Each worker scales
//! by the GLOBAL 1/(B*T); the all-reduce is a plain sum, with no division by N.

use std::ops::Range;
use std::path::Path;

use crossbeam::channel::Sender;

use crate::collective::{Comm, CommError};
use crate::config::TrainConfig;
use crate::data::{sampler, Corpus};
use crate::model::{Gpt, ParamLayout, Workspace};
use crate::optim::{clip_scale, lr_at, AdamW};
use crate::parallel::buckets;
use crate::parallel::fixed_point;
use crate::trace::{Clock, Phase, Span};
use crate::Error;

mod between_steps;
mod communicate;

/// Where a run starts: fresh weights, or a checkpoint's state.
pub struct Init {
    /// Parameters in layout order.
    pub params: Vec<f32>,
    /// Optimizer state.
    pub adam: AdamW,
    /// The first step to run (0 for a fresh run).
    pub start_step: usize,
}

/// What every worker reads: the configuration, the data and where to report.
pub struct Context<'a> {
    /// The run's configuration.
    pub cfg: &'a TrainConfig,
    /// The corpus, tokenised.
    pub corpus: &'a Corpus,
    /// The starting state; each worker copies it into its own replica.
    pub init: &'a Init,
    /// The run's shared clock, for the timeline.
    pub clock: Clock,
    /// Per-step reports go to the main thread.
    pub reports: Sender<Report>,
    /// The run directory, for checkpoints (None: no checkpoints, e.g. in tests).
    pub out: Option<&'a Path>,
    /// Spans of steps `start_step .. start_step + trace_steps` are kept for `trace.json`.
    pub trace_steps: usize,
    /// Evaluate on all validation windows at the end (otherwise `val_loss` is NaN).
    pub final_eval: bool,
}

/// One worker's account of one step.
#[derive(Debug)]
pub struct StepReport {
    /// The worker.
    pub rank: usize,
    /// The step (0-based).
    pub step: usize,
    /// Mean loss over this worker's sequences.
    pub loss: f32,
    /// The learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Forward, backward, optimizer (and any straggler sleep), ms.
    pub compute_ms: f64,
    /// Communicating (all-reduce, or waiting on it after backward when overlapped), ms.
    pub comm_ms: f64,
    /// Waiting for other workers before communicating, ms.
    pub wait_ms: f64,
    /// The whole step, ms.
    pub step_ms: f64,
    /// Timeline spans (only for traced steps).
    pub spans: Vec<Span>,
}

/// What workers tell the main thread while they run.
#[derive(Debug)]
pub enum Report {
    /// A step is done on one worker.
    Step(StepReport),
    /// Validation loss after `step` steps (rank 0 sends it).
    Eval {
        /// Steps completed.
        step: usize,
        /// Mean cross-entropy, nats/char.
        val_loss: f64,
    },
    /// A checkpoint was written after `step` steps.
    Checkpoint {
        /// Steps completed.
        step: usize,
    },
}

/// What a worker returns when it finishes.
pub struct WorkerDone {
    /// Its rank.
    pub rank: usize,
    /// Validation loss over ALL validation windows (every worker gets the same value).
    pub val_loss: f64,
    /// The final parameters (identical on every worker).
    pub params: Vec<f32>,
    /// The final optimizer state.
    pub adam: AdamW,
}

struct Worker<'a> {
    ctx: &'a Context<'a>,
    rank: usize,
    comm: Comm,
    model: Gpt,
    adam: AdamW,
    /// Activations for one micro-batch (one sequence in deterministic mode).
    ws: Workspace,
    /// Activations for evaluation batches, and for a final partial batch of one.
    eval_ws: Workspace,
    one_ws: Workspace,
    /// Flat gradients, layout order.
    grads: Vec<f32>,
    /// Deterministic mode: the exact fixed-point sum of per-sequence gradients.
    acc: Vec<i64>,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    /// Buckets, in the order they are communicated.
    plan: Vec<Range<usize>>,
    spans: Vec<Span>,
}

fn comm_err(rank: usize, step: usize) -> impl Fn(CommError) -> Error {
    move |e| Error::Peer(format!("worker {rank} stopped at step {step}: {e}"))
}

/// The name of the first tensor holding a NaN or infinity, if any.
///
/// Every step checks every gradient, so the common answer comes first and fast: the largest
/// magnitude's bit pattern, taken 16 lanes at a time (vectorised), is below infinity's
/// exactly when every value is finite; only when it is not is the position searched for.
pub fn first_non_finite(values: &[f32], layout: &ParamLayout) -> Option<String> {
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
    Some(format!("{} (value {})", t.name, values[i]))
}

/// Runs one worker's whole training loop. `comm` is this worker's endpoint of the group.
pub fn run_worker(ctx: &Context<'_>, comm: Comm) -> Result<WorkerDone, Error> {
    let cfg = ctx.cfg;
    let (t, m) = (cfg.model.block_size, cfg.micro_batch());
    let rows = if cfg.deterministic { 1 } else { m };
    let model = Gpt::from_params(cfg.model.clone(), ctx.init.params.clone());
    let n = model.layout.len;
    let bucket_floats = buckets::floats_for_kb(cfg.bucket_kb);
    let eval_rows = (cfg.batch / cfg.workers).max(1);
    let mut w = Worker {
        ctx,
        rank: comm.rank(),
        comm,
        adam: ctx.init.adam.clone(),
        ws: Workspace::new(&cfg.model, rows, t),
        eval_ws: Workspace::new(&cfg.model, eval_rows, t),
        one_ws: Workspace::new(&cfg.model, 1, t),
        grads: vec![0.0; n],
        acc: if cfg.deterministic {
            vec![0; n]
        } else {
            Vec::new()
        },
        inputs: vec![0; eval_rows.max(rows) * t],
        targets: vec![0; eval_rows.max(rows) * t],
        plan: buckets::plan(n, bucket_floats),
        spans: Vec::new(),
        model,
    };
    let subset = sampler::eval_subset(ctx.corpus.val.len(), t, cfg.eval_windows);
    for step in ctx.init.start_step..cfg.steps {
        w.step(step)?;
        let done = step + 1;
        if cfg.eval_every > 0 && done % cfg.eval_every == 0 && done < cfg.steps {
            let val_loss = w.evaluate(&subset, done)?;
            if w.rank == 0 {
                let _ = ctx.reports.send(Report::Eval {
                    step: done,
                    val_loss,
                });
            }
        }
        if cfg.check_replicas > 0 && done % cfg.check_replicas == 0 {
            w.check_replicas(done)?;
        }
        let due = cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0;
        if w.rank == 0 && (due || done == cfg.steps) {
            w.save_checkpoint(done)?;
        }
    }
    let val_loss = if ctx.final_eval {
        let all: Vec<usize> = (0..sampler::val_windows(ctx.corpus.val.len(), t)).collect();
        w.evaluate(&all, cfg.steps)?
    } else {
        f64::NAN
    };
    Ok(WorkerDone {
        rank: w.rank,
        val_loss,
        params: w.model.params,
        adam: w.adam,
    })
}

impl Worker<'_> {
    /// One optimizer step: gradients, synchronisation, update. Reports its time split.
    fn step(&mut self, step: usize) -> Result<(), Error> {
        let (cfg, clock) = (self.ctx.cfg, self.ctx.clock);
        if cfg.fault == Some((self.rank, step)) {
            panic!(
                "injected fault: worker {} panics at step {step} (--fault {}:{step})",
                self.rank, self.rank
            );
        }
        let start = clock.now_us();
        let loss = if cfg.deterministic {
            self.gradients_deterministic(step)?
        } else {
            self.gradients(step)?
        };
        if let Some((_, ms)) = cfg.straggler.filter(|s| s.0 == self.rank) {
            clock.time(&mut self.spans, Phase::Straggle, step, || {
                std::thread::sleep(std::time::Duration::from_millis(ms))
            });
        }
        if !cfg.overlap || cfg.deterministic {
            self.all_reduce(step)?;
        }
        // Every replica now holds the same gradient: the same update keeps them equal.
        let lr = lr_at(step, cfg);
        let (grads, adam, model) = (&mut self.grads, &mut self.adam, &mut self.model);
        let grad_norm = clock.time(&mut self.spans, Phase::Optimizer, step, || {
            let (norm, clip) = clip_scale(grads, cfg.grad_clip);
            if norm.is_finite() {
                adam.step_scaled(&mut model.params, grads, &model.layout, lr, cfg, clip);
            }
            norm
        });
        if !grad_norm.is_finite() {
            let which = first_non_finite(&self.grads, &self.model.layout).unwrap_or_default();
            return Err(Error::Worker(format!(
                "step {step}: the summed gradient is not finite (first in {which}); training diverged: lower --lr"
            )));
        }
        let step_ms = (clock.now_us() - start) / 1e3;
        let sum = |cat: fn(&Phase) -> bool| {
            self.spans
                .iter()
                .filter(|s| s.step == step && !s.comm_thread && cat(&s.phase))
                .map(|s| s.dur_us)
                .sum::<f64>()
                / 1e3
        };
        let comm_ms = sum(|p| matches!(p, Phase::AllReduce(_) | Phase::CommWait));
        let wait_ms = sum(|p| matches!(p, Phase::Wait));
        let traced = step < self.ctx.init.start_step + self.ctx.trace_steps;
        let report = StepReport {
            rank: self.rank,
            step,
            loss,
            lr,
            grad_norm,
            compute_ms: step_ms - comm_ms - wait_ms,
            comm_ms,
            wait_ms,
            step_ms,
            spans: if traced {
                std::mem::take(&mut self.spans)
            } else {
                self.spans.clear();
                Vec::new()
            },
        };
        let _ = self.ctx.reports.send(Report::Step(report));
        Ok(())
    }

    /// This worker's sequences of the global batch: [rank*B/N, (rank+1)*B/N).
    fn my_sequences(&self) -> Range<usize> {
        let per_worker = self.ctx.cfg.batch / self.ctx.cfg.workers;
        self.rank * per_worker..(self.rank + 1) * per_worker
    }

    /// Forward and backward over this worker's shard, K micro-batches, into `grads`.
    /// Returns the mean loss over the shard.
    fn gradients(&mut self, step: usize) -> Result<f32, Error> {
        let (cfg, clock) = (self.ctx.cfg, self.ctx.clock);
        let (t, m) = (cfg.model.block_size, cfg.micro_batch());
        let scale = 1.0 / cfg.tokens_per_step() as f32;
        let mine = self.my_sequences();
        self.grads.fill(0.0);
        let mut loss_sum = 0.0;
        for k in 0..cfg.accum {
            let seqs = mine.start + k * m..mine.start + (k + 1) * m;
            let loss = self.forward(step, seqs, m * t)?;
            loss_sum += loss;
            let last = k + 1 == cfg.accum;
            if cfg.overlap && last {
                self.backward_overlapped(step, scale)?;
            } else {
                let (model, ws, grads) = (&self.model, &mut self.ws, &mut self.grads);
                clock.time(&mut self.spans, Phase::Backward, step, || {
                    model.backward(ws, scale, &mut grads[..])
                });
            }
        }
        if !cfg.overlap {
            if let Some(which) = first_non_finite(&self.grads, &self.model.layout) {
                return Err(Error::Worker(format!(
                    "worker {} at step {step}: gradient of {which} is not finite: training diverged; lower --lr",
                    self.rank
                )));
            }
        }
        Ok(loss_sum / cfg.accum as f32)
    }

    /// Fills the batch for `seqs` and runs forward; checks the loss.
    fn forward(&mut self, step: usize, seqs: Range<usize>, len: usize) -> Result<f32, Error> {
        let (cfg, clock) = (self.ctx.cfg, self.ctx.clock);
        let (inputs, targets) = (&mut self.inputs[..len], &mut self.targets[..len]);
        let train = &self.ctx.corpus.train;
        let t = cfg.model.block_size;
        sampler::fill_batch(train, cfg.seed, step as u64, seqs, t, inputs, targets);
        let (model, ws) = (&self.model, &mut self.ws);
        let loss = clock.time(&mut self.spans, Phase::Forward, step, || {
            model.forward(ws, inputs, Some(targets))
        });
        let loss = loss.expect("forward with targets returns a loss");
        if !loss.is_finite() {
            return Err(Error::Worker(format!(
                "worker {} at step {step}: the loss is {loss}: training diverged; lower --lr",
                self.rank
            )));
        }
        Ok(loss)
    }

    /// Deterministic mode: each sequence alone, summed exactly in fixed point.
    fn gradients_deterministic(&mut self, step: usize) -> Result<f32, Error> {
        let (cfg, clock) = (self.ctx.cfg, self.ctx.clock);
        let scale = 1.0 / cfg.tokens_per_step() as f32;
        let t = cfg.model.block_size;
        self.grads.fill(0.0);
        self.acc.fill(0);
        let mut loss_sum = 0.0;
        let mine = self.my_sequences();
        for seq in mine.clone() {
            loss_sum += self.forward(step, seq..seq + 1, t)?;
            let (model, ws, grads) = (&self.model, &mut self.ws, &mut self.grads);
            clock.time(&mut self.spans, Phase::Backward, step, || {
                model.backward(ws, scale, &mut grads[..])
            });
            let (acc, grads) = (&mut self.acc, &mut self.grads);
            let ok = clock.time(&mut self.spans, Phase::FixedPoint, step, || {
                fixed_point::accumulate_and_zero(acc, grads)
            });
            if !ok {
                let which = first_non_finite(&self.grads, &self.model.layout).unwrap_or_default();
                return Err(Error::Worker(format!(
                    "worker {} at step {step}: gradient of {which} is not finite (sequence {seq}): training diverged; lower --lr",
                    self.rank
                )));
            }
        }
        Ok(loss_sum / mine.len() as f32)
    }
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
                let said = first_non_finite(&w, &layout).expect("a non-finite value");
                assert!(
                    said.starts_with(&format!("{} (value ", t.name)),
                    "{at}: {said}"
                );
            }
        }
    }
}
