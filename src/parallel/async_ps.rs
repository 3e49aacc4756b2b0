//! An asynchronous parameter server with bounded staleness (stale-synchronous parallel).
//!
//! ```text
//!   server (one, behind a lock): the weights, AdamW, a version (updates applied so far)
//!
//!   worker w, step k:                               worker 0  |pull|grad|push|pull|grad|push|
//!     wait until k <= (slowest worker's step) + S   worker 1  |pull|grad......|push|pull|..
//!     pull   weights + their version v                         a push applies at once: no
//!     forward, backward on my shard of batch k                 worker waits for another,
//!     push   my gradient: the server clips it and              except at the bound S
//!            takes an AdamW step; staleness = version now - v
//! ```
//!
//! No worker waits for the others to finish a step: each applies its gradient as soon as it
//! has one, to weights that may have moved since it pulled them (by the others' pushes).
//! That lag is the **staleness** of the gradient, recorded for every update; the bound S
//! (`--staleness`) stops a fast worker from running more than S steps ahead of the slowest,
//! so a straggler (`--straggler`) slows the others only when it falls S steps behind
//! (Ho et al. 2013, "More effective distributed ML via a stale synchronous parallel
//! parameter server").
//!
//! The server here is a `Mutex` around its state: its updates run one at a time, each on
//! the thread of the worker that pushed (one logical server, no thread of its own, and no
//! sharding). Each push is the mean gradient of the worker's B/N sequences; the server takes
//! N updates per round of the schedule, at the learning rate of step `version / N`.
//! Applied in the order they arrive, the updates depend on thread timing: `--deterministic`
//! is refused.
//!
//! Rust note: the workers share the server through `&Server` (the scoped threads of
//! `train::train` outlive no borrow), and the `Condvar` beside the lock is how a worker at
//! the bound sleeps until the slowest one pushes.

use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crossbeam::channel::Sender;

use crate::collective::{link, Comm};
use crate::config::{OptimConfig, TrainConfig};
use crate::data::sampler;
use crate::error::Error;
use crate::model::{Gpt, ParamLayout};
use crate::optim::{clip_scale, lr_at, AdamW};
use crate::parallel::data_parallel::{
    gone, Context, Evaluator, Report, Telemetry, TrainState, WorkerDone,
};
use crate::step::{train_step, Batch, GradientExchange, Observer, Replica};
use crate::trace::Phase;

/// What the parameter server says about a run: how stale its applied gradients were.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Staleness {
    /// S, the bound.
    pub bound: usize,
    /// Updates applied.
    pub updates: usize,
    /// `histogram[s]`: updates whose gradient was computed on weights `s` versions old.
    pub histogram: Vec<usize>,
    /// The largest staleness applied.
    pub max: usize,
    /// The mean staleness.
    pub mean: f64,
    /// The most steps any worker was ahead of the slowest when it started a step (<= S).
    pub ahead_max: usize,
}

/// The server's state, behind its lock.
struct State {
    params: Vec<f32>,
    adam: AdamW,
    /// Updates applied so far.
    version: usize,
    /// Steps each worker has pushed; `usize::MAX` once it has finished or left.
    clocks: Vec<usize>,
    stats: Staleness,
}

/// The parameter server every worker pushes to and pulls from.
pub struct Server {
    state: Mutex<State>,
    /// Signalled whenever a worker's clock moves (a push, a finish).
    moved: Condvar,
    layout: ParamLayout,
    optim: OptimConfig,
    steps: usize,
    workers: usize,
}

impl Server {
    /// A server holding `params` and `adam`, for the run `cfg`.
    pub fn new(cfg: &TrainConfig, params: Vec<f32>, adam: AdamW, start_step: usize) -> Self {
        let n = cfg.parallel.workers;
        Server {
            state: Mutex::new(State {
                params,
                adam,
                version: start_step * n,
                clocks: vec![start_step; n],
                stats: Staleness {
                    bound: cfg.parallel.staleness,
                    ..Staleness::default()
                },
            }),
            moved: Condvar::new(),
            layout: ParamLayout::new(&cfg.model),
            optim: cfg.optim.clone(),
            steps: cfg.schedule.steps,
            workers: n,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // a worker that panicked while holding the lock left the state consistent enough to
        // report (every update is whole or not begun): keep going, the run reports the panic
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a worker may start `step`: at most S steps ahead of the slowest.
    /// Returns how far ahead it is.
    pub fn wait_turn(&self, step: usize) -> usize {
        let mut s = self.lock();
        let bound = s.stats.bound;
        loop {
            let slowest = s.clocks.iter().copied().min().unwrap_or(step);
            let ahead = step.saturating_sub(slowest.min(step));
            if ahead <= bound {
                s.stats.ahead_max = s.stats.ahead_max.max(ahead);
                return ahead;
            }
            s = self.moved.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Copies the current weights into `params`; returns their version.
    pub fn pull(&self, params: &mut [f32]) -> usize {
        let s = self.lock();
        params.copy_from_slice(&s.params);
        s.version
    }

    /// Applies worker `rank`'s gradient of its `step`, computed on weights of version
    /// `pulled`: clip, AdamW, version + 1. Returns the gradient's norm before clipping.
    pub fn push(&self, rank: usize, step: usize, grads: &[f32], pulled: usize) -> f32 {
        let mut s = self.lock();
        let lr = lr_at(s.version / self.workers, self.steps, &self.optim);
        let (norm, clip) = clip_scale(grads, self.optim.grad_clip);
        if norm.is_finite() {
            let State { params, adam, .. } = &mut *s;
            adam.step_scaled(params, grads, &self.layout, lr, &self.optim, clip);
        }
        let staleness = s.version - pulled;
        s.version += 1;
        let st = &mut s.stats;
        if st.histogram.len() <= staleness {
            st.histogram.resize(staleness + 1, 0);
        }
        st.histogram[staleness] += 1;
        st.updates += 1;
        st.max = st.max.max(staleness);
        s.clocks[rank] = step + 1;
        drop(s);
        self.moved.notify_all();
        norm
    }

    /// Worker `rank` is done (finished, or leaving on an error): it holds nobody back.
    pub fn leave(&self, rank: usize) {
        self.lock().clocks[rank] = usize::MAX;
        self.moved.notify_all();
    }

    /// The weights and the optimizer state now.
    pub fn state(&self) -> (Vec<f32>, AdamW) {
        let s = self.lock();
        (s.params.clone(), s.adam.clone())
    }

    /// The staleness statistics so far.
    pub fn staleness(&self) -> Staleness {
        let mut st = self.lock().stats.clone();
        let total: usize = st.histogram.iter().enumerate().map(|(s, c)| s * c).sum();
        st.mean = total as f64 / st.updates.max(1) as f64;
        st
    }
}

/// A worker's side of the parameter server, as the step's [`GradientExchange`]: `sum`
/// keeps its own gradient (as the mean over its shard), `update` pushes it, waits for its
/// turn at the staleness bound, and pulls the weights for the next step.
pub struct Push<'s> {
    /// The server.
    pub server: &'s Server,
    /// This worker.
    pub rank: usize,
    /// The version of the weights this worker's replica holds.
    pub pulled: usize,
    /// The simulated link (a push and a pull each cost one message of the weights' size).
    pub link: Option<link::Link>,
    /// Bytes on the wire so far: each push (gradient up) and pull (weights down).
    pub bytes: u64,
}

impl Push<'_> {
    /// Waits out one message of `bytes` on the link, begun at `t0`, as the `link` phase.
    fn pace<O: Observer>(&mut self, t0: Instant, bytes: usize, step: usize, obs: &mut O) {
        self.bytes += bytes as u64;
        if let Some(l) = self.link {
            let deadline = t0 + std::time::Duration::from_secs_f64(l.message_s(bytes as f64));
            obs.time(Phase::Link, step, || link::wait_until(deadline));
        }
    }

    /// Waits for this worker's turn at `step`, then pulls the weights into `params`.
    pub fn turn_and_pull<O: Observer>(&mut self, params: &mut [f32], step: usize, obs: &mut O) {
        let server = self.server;
        obs.time(Phase::Wait, step, || server.wait_turn(step));
        let t0 = Instant::now();
        self.pulled = obs.time(Phase::Pull, step, || server.pull(params));
        self.pace(t0, std::mem::size_of_val(params), step, obs);
    }
}

impl GradientExchange for Push<'_> {
    fn sum<O: Observer>(&mut self, grads: &mut [f32], _: usize, _: &mut O) -> Result<(), Error> {
        let n = self.server.workers as f32;
        grads.iter_mut().for_each(|g| *g *= n);
        Ok(())
    }

    fn sum_exact<O: Observer>(&mut self, _: &mut [i64], _: usize, _: &mut O) -> Result<(), Error> {
        Err(Error::Config(
            "--async applies gradients in the order they arrive, which no seed fixes: drop --deterministic".into(),
        ))
    }

    fn update<O: Observer>(
        &mut self,
        r: &mut Replica,
        _lr: f32,
        _optim: &OptimConfig,
        step: usize,
        obs: &mut O,
    ) -> Result<f32, Error> {
        let t0 = Instant::now();
        let (server, rank, pulled) = (self.server, self.rank, self.pulled);
        let norm = obs.time(Phase::Push, step, || {
            server.push(rank, step, &r.grads, pulled)
        });
        self.pace(t0, std::mem::size_of_val(&r.grads[..]), step, obs);
        Ok(norm)
    }
}

/// Marks the worker as gone from the server when its loop ends, however it ends (an error
/// or a panic unwinding included), so that no other worker waits for it at the bound.
struct Leave<'s>(&'s Server, usize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

/// One asynchronous worker's loop: pull, compute, push, as fast as the bound lets it.
///
/// Between steps it does what a synchronous worker does, with one difference: before an
/// evaluation or a checkpoint every worker meets at a barrier, so that all pushes up to that
/// step are in and every worker pulls the same weights.
pub fn run_worker(
    ctx: &Context<'_>,
    mut comm: Comm,
    server: &Server,
    reports: Sender<Report>,
) -> Result<WorkerDone, Error> {
    let cfg = ctx.cfg;
    let (rank, t) = (comm.rank(), cfg.model.block_size);
    let _leave = Leave(server, rank);
    comm.set_link(cfg.parallel.link);
    let model = Gpt::from_params(cfg.model.clone(), ctx.init.params.clone());
    // the replica's own AdamW is never used: the server holds the optimizer
    let mut replica = Replica::new(rank, model, AdamW::new(0), cfg);
    let mut push = Push {
        server,
        rank,
        pulled: 0,
        link: cfg.parallel.link,
        bytes: 0,
    };
    let mut evaluator = Evaluator::new(cfg);
    let mut obs = Telemetry::new(ctx, rank);
    let per_worker = cfg.parallel.batch / cfg.parallel.workers;
    let (val, algorithm) = (&ctx.corpus.val[..], cfg.parallel.allreduce);
    let subset = sampler::eval_subset(val.len(), t, cfg.schedule.eval_windows);
    let mut stopped_at = None;
    for step in ctx.init.step..cfg.schedule.steps {
        if ctx.stop.load(Ordering::Relaxed) {
            return Err(Error::Worker(format!(
                "worker {rank} was stopped at step {step}"
            )));
        }
        if ctx.stops_before(step) {
            stopped_at = Some(step);
            break;
        }
        let (start_us, sent) = (obs.now_us(), push.bytes);
        push.turn_and_pull(&mut replica.model.params, step, &mut obs);
        let batch = Batch {
            tokens: &ctx.corpus.train,
            seed: cfg.seed,
            step,
            sequences: rank * per_worker..(rank + 1) * per_worker,
        };
        let stats = train_step(&mut replica, cfg, &batch, &mut push, &mut obs)?;
        let traced = step < ctx.init.step + ctx.trace_steps;
        let report = obs.report(step, start_us, stats, traced, push.bytes - sent);
        let _ = reports.send(Report::Step(report));
        let done = step + 1;
        let eval = cfg.schedule.eval_every > 0
            && done % cfg.schedule.eval_every == 0
            && done < cfg.schedule.steps;
        let checkpoint =
            cfg.schedule.checkpoint_every > 0 && done % cfg.schedule.checkpoint_every == 0;
        if eval || checkpoint {
            // everyone's pushes up to `done` are in: every worker pulls the same weights
            obs.time(Phase::Wait, done, || comm.barrier())
                .map_err(gone(done))?;
            server.pull(&mut replica.model.params);
        }
        if eval {
            let model = &replica.model;
            let val_loss = obs.time(Phase::Eval, done, || {
                evaluator.evaluate(model, &mut comm, algorithm, val, &subset)
            });
            let val_loss = val_loss.map_err(gone(done))?;
            if rank == 0 {
                let _ = reports.send(Report::Eval {
                    step: done,
                    val_loss,
                });
            }
        }
        if checkpoint && rank == 0 && done < cfg.schedule.steps {
            let _ = reports.send(Report::Checkpoint(snapshot(server, done)));
        }
        if eval || checkpoint {
            // nobody pushes step `done` before rank 0 has taken the state of `done` steps
            comm.barrier().map_err(gone(done))?;
        }
    }
    // the end: every worker's pushes are in, everyone holds the final weights
    server.leave(rank);
    let end = stopped_at.unwrap_or(cfg.schedule.steps);
    comm.barrier().map_err(gone(end))?;
    server.pull(&mut replica.model.params);
    if rank == 0 {
        let _ = reports.send(Report::Checkpoint(snapshot(server, end)));
    }
    let val_loss = if ctx.final_eval && stopped_at.is_none() {
        let all: Vec<usize> = (0..sampler::val_windows(val.len(), t)).collect();
        let r = evaluator.evaluate(&replica.model, &mut comm, algorithm, val, &all);
        r.map_err(gone(end))?
    } else {
        f64::NAN
    };
    let (params, adam) = server.state();
    Ok(WorkerDone {
        memory: None,
        rank,
        val_loss,
        params,
        adam,
        stopped_at,
    })
}

/// The server's state after `step` steps, for a checkpoint.
fn snapshot(server: &Server, step: usize) -> TrainState {
    let (params, adam) = server.state();
    TrainState { params, adam, step }
}
