//! A pipeline worker's training loop: data parallelism's loop ([`data_parallel::run_worker`])
//! with a stage's step in place of the whole model's, and the stages gathered into one
//! model wherever the whole model is needed.
//!
//! ```text
//!  grid = Grid::new(world, Layout(workers, tp 1, pp))     -> my stage, my replica
//!  for each step:
//!    Pipe::step (schedule, dp all-reduce, tied wte, global norm, my update)
//!    report the step (every stage reports the same loss and norm)
//!  between steps (every stage of every replica at once):
//!    evaluation:  consolidate parameters, then every worker evaluates its share of windows
//!    checkpoint:  consolidate parameters and AdamW; rank 0 (stage 0 of replica 0) sends it
//!  at the end:    consolidate; rank 0's parameters are the run's model
//! ```
//!
//! [`data_parallel::run_worker`]: crate::parallel::data_parallel::run_worker

use crossbeam::channel::Sender;

use super::{Pipe, PipeComms};
use crate::collective::Comm;
use crate::data::sampler;
use crate::error::Error;
use crate::model::Gpt;
use crate::parallel::data_parallel::{
    gone, replicas_differ, AllReduce, Context, Evaluator, Report, Telemetry, TrainState, WorkerDone,
};
use crate::parallel::grid::{Grid, Layout};
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
    let layout = Layout::new(p.workers, 1, p.pp)?;
    let grid = Grid::new(comm, layout).map_err(gone(ctx.init.step))?;
    let (stage, replica) = (grid.coords.pp, grid.coords.dp);
    let Grid { world, pp, dp, .. } = grid;
    let model = Gpt::from_params(cfg.model.clone(), ctx.init.params.clone());
    let n = model.layout.len;
    let mut comms = PipeComms {
        pp,
        dp: AllReduce::new(dp, p.allreduce, n, p.bucket_kb, false),
    };
    let mut world = world;
    let mut pipe = Pipe::new(stage, model, ctx.init.adam.clone(), cfg);
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
        let start_us = obs.clock.now_us();
        let stats = pipe.step(cfg, &batch, &mut comms, &mut obs)?;
        let traced = step < ctx.init.step + ctx.trace_steps;
        // (bytes on a simulated --link are counted by data parallelism's strategies only)
        let report = obs.report(step, start_us, stats, traced, 0);
        let _ = reports.send(Report::Step(report));

        let done = step + 1;
        let s = &cfg.schedule;
        let eval = s.eval_every > 0 && done % s.eval_every == 0 && done < s.steps;
        let check = s.check_replicas > 0 && done % s.check_replicas == 0;
        let save = (s.checkpoint_every > 0 && done % s.checkpoint_every == 0) || done == s.steps;
        if eval || check || save {
            let pp = &mut comms.pp;
            obs.time(Phase::Checkpoint, done, || pipe.consolidate(pp, save))
                .map_err(gone(done))?;
        }
        if eval {
            let model = &pipe.model;
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
            let differ = replicas_differ(&pipe.model.params, &mut world);
            if let Some((w, hash, hash0)) = differ.map_err(gone(done))? {
                return Err(Error::Worker(format!(
                    "replicas diverged after step {done}: worker {w} has param hash {hash:016x}, worker 0 {hash0:016x}"
                )));
            }
        }
        if rank == 0 && save {
            let state = snapshot(&pipe, done);
            let _ = reports.send(Report::Checkpoint(state));
            saved = done;
        }
    }
    if stopped_at.is_some() || cfg.schedule.steps == ctx.init.step {
        pipe.consolidate(&mut comms.pp, true)
            .map_err(gone(ctx.init.step))?;
    }
    if let Some(step) = stopped_at {
        if rank == 0 && saved != step {
            let _ = reports.send(Report::Checkpoint(snapshot(&pipe, step)));
        }
        return Ok(WorkerDone {
            memory: None,
            rank,
            val_loss: f64::NAN,
            params: pipe.model.params,
            adam: pipe.adam,
            stopped_at,
        });
    }
    let val_loss = if ctx.final_eval {
        let all: Vec<usize> = (0..sampler::val_windows(val.len(), t)).collect();
        let steps = cfg.schedule.steps;
        (evaluator.evaluate(&pipe.model, &mut world, algorithm, val, &all)).map_err(gone(steps))?
    } else {
        f64::NAN
    };
    Ok(WorkerDone {
        memory: None,
        rank,
        val_loss,
        params: pipe.model.params,
        adam: pipe.adam,
        stopped_at: None,
    })
}

/// The consolidated state after `step` steps, for the main thread to checkpoint.
fn snapshot(pipe: &Pipe, step: usize) -> TrainState {
    TrainState {
        params: pipe.model.params.clone(),
        adam: pipe.adam.clone(),
        step,
    }
}
