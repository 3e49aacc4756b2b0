//! A pipeline worker's training loop: data parallelism's loop ([`data_parallel::run_worker`])
//! with a stage's step in place of the whole model's, and the stages gathered into one
//! model wherever the whole model is needed.
//!
//! ```text
//!  grid = Grid::new(world, Layout(workers, tp, pp))       -> my stage, my replica (--tp:
//!                                                            my shard, `tensor_stage.rs`)
//!  for each step:
//!    Pipe::step (schedule, dp all-reduce of my ranges, tied wte, global norm, my update)
//!    report the step (every stage reports the same loss and norm; bytes: my dp group's)
//!  between steps (every stage of every replica at once):
//!    evaluation:  consolidate parameters (over pp, then --tp's shards over tp), then every
//!                 worker evaluates its share of windows
//!    checkpoint:  (--zero 1: gather AdamW's parts over dp) consolidate parameters and
//!                 AdamW; rank 0 (stage 0 of replica 0) sends it
//!  at the end:    consolidate; rank 0's parameters are the run's model
//! ```
//!
//! [`data_parallel::run_worker`]: crate::parallel::data_parallel::run_worker

use crossbeam::channel::Sender;

use super::{Pipe, PipeComms};
use crate::collective::{Comm, CommError};
use crate::data::sampler;
use crate::error::Error;
use crate::model::Gpt;
use crate::optim::AdamW;
use crate::parallel::data_parallel::{
    gone, replicas_differ, Context, Evaluator, Report, Telemetry, TrainState, WorkerDone,
};
use crate::parallel::grid::{Grid, Layout};
use crate::parallel::tensor::{self, Ops};
use crate::step::{Batch, Observer};
use crate::trace::Phase;

/// Runs one pipeline worker's whole training loop: `comm` is its endpoint of the world,
/// `reports` its sender to the main thread (as for [`crate::parallel::data_parallel::run_worker`]).
pub fn run_worker(
    ctx: &Context<'_>,
    comm: Comm,
    reports: Sender<Report>,
) -> Result<WorkerDone, Error> {
    let cfg = ctx.cfg;
    let p = &cfg.parallel;
    let rank = comm.rank();
    let layout = Layout::new(p.workers, p.tp, p.pp)?;
    let grid = Grid::new(comm, layout).map_err(gone(ctx.init.step))?;
    let (stage, replica, slice) = (grid.coords.pp, grid.coords.dp, grid.coords.tp);
    let Grid {
        world, pp, dp, tp, ..
    } = grid;
    let model = Gpt::from_params(cfg.model.clone(), ctx.init.params.clone());
    let mut pipe = if p.tp > 1 {
        // my shard of every tensor (only my stage's are trained), in the local layout
        let (shard, adam) = tensor::shard_state(&model, &ctx.init.adam, p.tp, slice);
        let ops = Ops::new(tp, p.sp, p.allreduce);
        Pipe::with_tensor(stage, shard, adam, cfg, ops)
    } else {
        Pipe::new(stage, model, ctx.init.adam.clone(), cfg)
    };
    let mut comms = PipeComms::new(pp, dp, &pipe, cfg);
    if p.zero == 1 {
        // my part of the stage's AdamW state, over the stage's replicas
        let dp = &comms.dp.comm;
        pipe.shard_optimizer(dp.rank(), dp.size());
    }
    let mut memory = None;
    let mut world = world;
    // --tp: the whole model and AdamW state, consolidated from the shards when needed
    let mut whole: Option<(Gpt, AdamW)> = None;
    let mut evaluator = Evaluator::new(cfg);
    let mut obs = Telemetry {
        clock: ctx.clock,
        spans: Vec::new(),
        rank,
        straggle_ms: cfg.faults.straggler.filter(|s| s.0 == rank).map(|s| s.1),
        fault_at: cfg.faults.fault.filter(|f| f.0 == rank).map(|f| f.1),
    };
    let per_replica = p.batch / layout.dp;
    let (val, algorithm, t) = (&ctx.corpus.val[..], p.allreduce, cfg.model.block_size);
    let subset = sampler::eval_subset(val.len(), t, cfg.schedule.eval_windows);
    let mut saved = ctx.init.step;
    let mut stopped_at = None;
    for step in ctx.init.step..cfg.schedule.steps {
        if ctx.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Worker(format!(
                "worker {rank} was stopped at step {step}"
            )));
        }
        if ctx.stops_before(step) {
            stopped_at = Some(step);
            break;
        }
        let batch = Batch {
            tokens: &ctx.corpus.train,
            seed: cfg.seed,
            step,
            sequences: replica * per_replica..(replica + 1) * per_replica,
        };
        let (start_us, sent) = (obs.clock.now_us(), comms.dp.comm.bytes_sent());
        let stats = pipe.step(cfg, &batch, &mut comms, &mut obs)?;
        if step + 1 == cfg.schedule.steps {
            // the memory of training, before the final consolidation
            memory = pipe.memory(cfg);
        }
        let traced = step < ctx.init.step + ctx.trace_steps;
        // the bytes of the step's data-parallel group (the gradient sum over the replicas),
        // as data parallelism counts its exchange's; activations between stages are not counted
        let bytes = comms.dp.comm.bytes_sent() - sent;
        let report = obs.report(step, start_us, stats, traced, bytes);
        let _ = reports.send(Report::Step(report));

        let done = step + 1;
        let s = &cfg.schedule;
        let eval = s.eval_every > 0 && done % s.eval_every == 0 && done < s.steps;
        let check = s.check_replicas > 0 && done % s.check_replicas == 0;
        let save = (s.checkpoint_every > 0 && done % s.checkpoint_every == 0) || done == s.steps;
        if eval || check || save {
            let (pp, dp) = (&mut comms.pp, &mut comms.dp.comm);
            obs.time(Phase::Checkpoint, done, || -> Result<(), CommError> {
                if save {
                    pipe.gather_moments(dp)?; // --zero 1: from the stage's parts
                }
                pipe.consolidate(pp, save)?;
                whole = pipe.gather_shards(save)?;
                Ok(())
            })
            .map_err(gone(done))?;
        }
        if eval {
            let model = whole.as_ref().map_or(&pipe.model, |w| &w.0);
            let val_loss = obs.time(Phase::Eval, done, || {
                evaluator.evaluate(model, &mut world, algorithm, val, &subset)
            });
            let val_loss = val_loss.map_err(gone(done))?;
            if rank == 0 {
                let _ = reports.send(Report::Eval {
                    step: done,
                    val_loss,
                });
            }
        }
        if check {
            let model = whole.as_ref().map_or(&pipe.model, |w| &w.0);
            let differ = replicas_differ(&model.params, &mut world);
            if let Some((w, hash, hash0)) = differ.map_err(gone(done))? {
                return Err(Error::Worker(format!(
                    "replicas diverged after step {done}: worker {w} has param hash {hash:016x}, worker 0 {hash0:016x}"
                )));
            }
        }
        if rank == 0 && save {
            let state = snapshot(&pipe, &whole, done);
            let _ = reports.send(Report::Checkpoint(state));
            saved = done;
        }
        if save && done < s.steps {
            pipe.release_moments();
        }
    }
    if stopped_at.is_some() || cfg.schedule.steps == ctx.init.step {
        (pipe.gather_moments(&mut comms.dp.comm)).map_err(gone(ctx.init.step))?;
        pipe.consolidate(&mut comms.pp, true)
            .map_err(gone(ctx.init.step))?;
        whole = pipe.gather_shards(true).map_err(gone(ctx.init.step))?;
    }
    if let Some(step) = stopped_at {
        if rank == 0 && saved != step {
            let _ = reports.send(Report::Checkpoint(snapshot(&pipe, &whole, step)));
        }
        let memory = memory.or_else(|| pipe.memory(cfg));
        let (params, adam) = whole.map_or((pipe.model.params, pipe.adam), |(m, a)| (m.params, a));
        return Ok(WorkerDone {
            memory,
            rank,
            val_loss: f64::NAN,
            params,
            adam,
            stopped_at,
        });
    }
    let val_loss = if ctx.final_eval {
        let all: Vec<usize> = (0..sampler::val_windows(val.len(), t)).collect();
        let steps = cfg.schedule.steps;
        let model = whole.as_ref().map_or(&pipe.model, |w| &w.0);
        (evaluator.evaluate(model, &mut world, algorithm, val, &all)).map_err(gone(steps))?
    } else {
        f64::NAN
    };
    let memory = memory.or_else(|| pipe.memory(cfg));
    let (params, adam) = whole.map_or((pipe.model.params, pipe.adam), |(m, a)| (m.params, a));
    Ok(WorkerDone {
        memory,
        rank,
        val_loss,
        params,
        adam,
        stopped_at: None,
    })
}

/// The consolidated state after `step` steps, for the main thread to checkpoint: the
/// stage's buffers, or with `--tp` the `whole` model gathered from the shards.
fn snapshot(pipe: &Pipe, whole: &Option<(Gpt, AdamW)>, step: usize) -> TrainState {
    let (model, adam) = whole
        .as_ref()
        .map_or((&pipe.model, &pipe.adam), |(m, a)| (m, a));
    TrainState {
        params: model.params.clone(),
        adam: adam.clone(),
        step,
    }
}
