//! One training run, from a configuration to an [`Outcome`]. It writes no files and prints
//! nothing: what happens along the way reaches the caller as [`Event`]s.
//!
//! ```text
//!  caller's thread                  worker threads (scoped, one per replica)
//!  ---------------                  ----------------------------------------
//!  check config
//!  spawn N workers  ------------->  run_worker(rank): step, step, step, ...
//!  for report in channel  <-------  Report::Step / Eval / Checkpoint (one Sender each)
//!    fold the workers' reports
//!    into one row per step
//!    on_event(Step | Eval | Checkpoint)      the caller logs, plots, saves
//!  (the channel closes when the
//!   last worker drops its Sender)
//!  join; the root cause wins  <----  Ok(final params) | Err | panic
//!  Outcome: summary, model, rows, timeline
//! ```
//!
//! Under `mpirun` ([`RunOptions::cross`]) the same function runs in every process, with
//! that process's share of the workers as its threads; their communicators span the world
//! (`collective::hierarchical`), and each process's caller sees the rows of its own workers.
//!
//! Only the caller's thread sees the events (nanoGPT's "only rank 0 logs"); workers just
//! send plain values down a channel. What it makes of them, each step's row and the run's
//! summary, is [`crate::metrics`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::collective::{self, CrossLink};
use crate::config::TrainConfig;
use crate::data::Corpus;
use crate::error::Error;
use crate::error::InjectedFault;
use crate::metrics::{aggregate, summarise, StepRow, Summary};
use crate::model::Gpt;
use crate::optim::AdamW;
use crate::parallel::async_ps;
pub use crate::parallel::data_parallel::TrainState;
use crate::parallel::data_parallel::{run_worker, Context, Report, StepReport, WorkerDone};
use crate::parallel::pipeline;
use crate::trace::{Clock, Span};

/// Steps whose spans are kept for the timeline (from the first step of the run).
pub const TRACE_STEPS: usize = 40;

/// What a run tells its caller as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A step is done on every worker: its row of figures.
    Step(&'a StepRow),
    /// The validation loss on the periodic subset of windows after `step` steps.
    Eval {
        /// Steps completed.
        step: usize,
        /// Mean cross-entropy, nats/char.
        val_loss: f64,
    },
    /// The state to save as a checkpoint: every `checkpoint_every` steps and after the last.
    Checkpoint(TrainState),
}

/// A finished run: its figures, its final model, and what it recorded.
pub struct Outcome {
    /// The figures.
    pub summary: Summary,
    /// The trained model.
    pub model: Gpt,
    /// The final optimizer state.
    pub adam: AdamW,
    /// One row per step of this run, in order.
    pub rows: Vec<StepRow>,
    /// The periodic validation losses: (steps completed, loss).
    pub evals: Vec<(usize, f64)>,
    /// Each worker's timeline spans of the first traced steps.
    pub tracks: Vec<Vec<Span>>,
    /// `Some(k)`: [`RunOptions::interrupt`] stopped the run after `k` steps, with a
    /// checkpoint of step `k`; the summary covers the steps run so far, and its `val_loss`
    /// is NaN (the evaluation over all windows belongs to the run that finishes).
    pub interrupted_at: Option<usize>,
}

/// Fresh weights for `cfg`.
pub fn initial_state(cfg: &TrainConfig) -> TrainState {
    let model = Gpt::new(cfg.model.clone(), cfg.seed);
    TrainState {
        adam: AdamW::new(model.params.len()),
        params: model.params,
        step: 0,
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Evaluate the validation loss over all windows at the end (benchmarks skip it).
    pub final_eval: bool,
    /// Keep the timeline spans of this many steps from the start.
    pub trace_steps: usize,
    /// Once set (by a signal handler, say), every worker stops at the same step boundary
    /// soon after, and the run ends early with a checkpoint of that step
    /// ([`Outcome::interrupted_at`]).
    ///
    /// Rust note: an `Arc` rather than a borrow, because a signal handler is registered for
    /// the life of the process and must own what it sets.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// The link to the run's other processes, when it spans several (`mpirun`): this
    /// process runs `workers / processes` of the workers, world ranks
    /// `process * threads ..`, and their all-reduces go through it
    /// (`collective::hierarchical`). `None`: every worker is a thread of this process.
    pub cross: Option<CrossLink>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            final_eval: true,
            trace_steps: TRACE_STEPS,
            interrupt: None,
            cross: None,
        }
    }
}

/// Trains `cfg` on `corpus` from `init`, handing each [`Event`] to `on_event` on the
/// calling thread.
///
/// If `on_event` fails, the workers are stopped and its error is returned. Otherwise a run
/// that fails returns its root cause: a worker's panic (an injected one as
/// [`Error::InjectedFault`]), then a worker's own error (such as [`Error::Diverged`]), and
/// only then [`Error::PeerGone`], which workers return when another one left.
pub fn train(
    cfg: &TrainConfig,
    corpus: &Corpus,
    init: TrainState,
    opts: &RunOptions,
    mut on_event: impl FnMut(Event<'_>) -> Result<(), Error>,
) -> Result<Outcome, Error> {
    cfg.validate()?;
    corpus.check_block(cfg.model.block_size)?;
    // init.step == steps is allowed: a run stopped after its last checkpoint but before
    // its summary is finished by evaluating and summarising it.
    if init.step > cfg.schedule.steps {
        return Err(Error::Config(format!(
            "the run is already at step {}, past --steps {}: pass a larger --steps to continue it",
            init.step, cfg.schedule.steps
        )));
    }
    let processes = opts.cross.as_ref().map_or(1, |c| c.processes());
    if processes != cfg.parallel.processes {
        return Err(Error::Config(format!(
            "the configuration spreads the workers over {} processes, this run has {processes}: start it with mpirun -n {} (or set processes to match)",
            cfg.parallel.processes, cfg.parallel.processes
        )));
    }
    // This process's workers: threads `0..threads`, world ranks `first..first + threads`.
    let threads = cfg.parallel.workers / processes;
    let first = opts.cross.as_ref().map_or(0, |c| c.process() * threads);
    let comms = match &opts.cross {
        Some(link) => collective::hierarchical(threads, link),
        None => collective::group(threads),
    };
    let wall = Instant::now();
    let stop = AtomicBool::new(false);
    let stop_at = AtomicUsize::new(usize::MAX);
    let ctx = Context {
        cfg,
        corpus,
        init: &init,
        clock: Clock::start(),
        trace_steps: opts.trace_steps,
        final_eval: opts.final_eval,
        stop: &stop,
        interrupt: opts.interrupt.as_deref(),
        stop_at: &stop_at,
    };
    let mut fold = Fold {
        workers: threads,
        first,
        rows: Vec::new(),
        evals: Vec::new(),
        tracks: vec![Vec::new(); threads],
        pending: BTreeMap::new(),
        last_step: vec![init.step; threads],
        held: None,
    };
    // --async: the parameter server the workers share (parallel/async_ps.rs)
    let server = (cfg.parallel.asynchronous)
        .then(|| async_ps::Server::new(cfg, init.params.clone(), init.adam.clone(), init.step));
    let mut failed = None;
    let results: Vec<std::thread::Result<Result<WorkerDone, Error>>> = std::thread::scope(|s| {
        let (tx, rx) = crossbeam::channel::unbounded();
        let mut handles = Vec::with_capacity(threads);
        for (thread, comm) in comms.into_iter().enumerate() {
            let rank = first + thread;
            let (ctx, tx, server) = (&ctx, tx.clone(), server.as_ref());
            let spawned = std::thread::Builder::new()
                .name(format!("worker-{rank}"))
                .spawn_scoped(s, move || match server {
                    Some(server) => async_ps::run_worker(ctx, comm, server, tx),
                    None if ctx.cfg.parallel.pp > 1 => pipeline::run_worker(ctx, comm, tx),
                    None => run_worker(ctx, comm, tx),
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // The closure (and with it this rank's endpoint) is dropped: the workers
                    // already started see a peer gone at their first collective and return.
                    stop.store(true, Ordering::Relaxed);
                    failed = Some(Error::Worker(format!(
                        "cannot start worker thread {thread} of {threads} ({e}): the system refused a new thread (a process or memory limit); use fewer --workers or raise the limit (ulimit -u, ulimit -v)"
                    )));
                    break;
                }
            }
        }
        drop(tx); // each worker holds its own Sender: the loop ends when the last one returns
        for report in rx {
            let r = fold.take(cfg, report, &mut on_event);
            if let (Err(e), None) = (r, &failed) {
                failed = Some(e);
                stop.store(true, Ordering::Relaxed);
            }
        }
        if let (Some(state), None) = (fold.held.take(), &failed) {
            // its row never came (a worker failed first): the state is still good to keep
            failed = on_event(Event::Checkpoint(state)).err();
        }
        handles.into_iter().map(|h| h.join()).collect()
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let done = root_cause(results, first, &fold.last_step)?;
    let mut summary = summarise(
        cfg,
        corpus,
        init.step,
        &fold.rows,
        done.val_loss,
        &done.params,
        wall,
    );
    summary.memory = done.memory;
    if let Some(k) = done.stopped_at {
        summary.steps = k; // the steps run so far, which the checkpoint holds
    }
    summary.staleness = server.map(|s| s.staleness());
    Ok(Outcome {
        summary,
        model: Gpt::from_params(cfg.model.clone(), done.params),
        adam: done.adam,
        rows: fold.rows,
        evals: fold.evals,
        tracks: fold.tracks,
        interrupted_at: done.stopped_at,
    })
}

/// The caller's thread's view of the run: the workers' reports folded into rows.
struct Fold {
    /// This process's workers (all of them, without MPI).
    workers: usize,
    /// The world rank of this process's first worker.
    first: usize,
    rows: Vec<StepRow>,
    evals: Vec<(usize, f64)>,
    tracks: Vec<Vec<Span>>,
    /// Reports of steps that not every worker has finished yet.
    pending: BTreeMap<usize, Vec<StepReport>>,
    /// Each worker's last reported step (named if it panics).
    last_step: Vec<usize>,
    /// A checkpoint's state waiting for the row of its last step.
    held: Option<TrainState>,
}

impl Fold {
    /// Takes one report; a step's row goes out when every worker has reported it.
    fn take(
        &mut self,
        cfg: &TrainConfig,
        report: Report,
        on_event: &mut impl FnMut(Event<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        match report {
            Report::Step(r) => {
                let thread = r.rank - self.first;
                self.last_step[thread] = r.step;
                self.tracks[thread].extend_from_slice(&r.spans);
                let step = r.step;
                let group = self.pending.entry(step).or_default();
                group.push(r);
                if group.len() == self.workers {
                    let row = aggregate(cfg, self.pending.remove(&step).unwrap());
                    self.rows.push(row);
                    on_event(Event::Step(self.rows.last().unwrap()))?;
                    if self.held.as_ref().is_some_and(|h| h.step <= step + 1) {
                        let state = self.held.take().unwrap();
                        return on_event(Event::Checkpoint(state));
                    }
                }
                Ok(())
            }
            Report::Eval { step, val_loss } => {
                self.evals.push((step, val_loss));
                on_event(Event::Eval { step, val_loss })
            }
            // Rank 0 may send the state after step s before a slower worker has reported
            // step s - 1: the checkpoint waits for that row, so that a checkpoint on disk
            // never runs ahead of the rows in the caller's log.
            Report::Checkpoint(state)
                if self.rows.last().map_or(0, |r| r.step + 1) < state.step =>
            {
                self.held = Some(state);
                Ok(())
            }
            Report::Checkpoint(state) => on_event(Event::Checkpoint(state)),
        }
    }
}

/// Picks the root cause among the workers' results: a panic, then a worker's own
/// error, and only then the errors of workers that stopped because a peer left.
fn root_cause(
    results: Vec<std::thread::Result<Result<WorkerDone, Error>>>,
    first: usize,
    last_step: &[usize],
) -> Result<WorkerDone, Error> {
    let mut peer_error = None;
    let mut own_error = None;
    let mut ok = None;
    for (thread, r) in results.into_iter().enumerate() {
        let rank = first + thread;
        match r {
            Err(payload) => {
                if let Some(fault) = payload.downcast_ref::<InjectedFault>() {
                    return Err(Error::InjectedFault(*fault));
                }
                let msg = (payload.downcast_ref::<String>().cloned())
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(Error::Worker(format!(
                    "worker {rank} panicked after step {}: {msg}; the run stopped",
                    last_step[thread]
                )));
            }
            Ok(Err(e)) if e.is_consequence() => peer_error = peer_error.or(Some(e)),
            Ok(Err(e)) => own_error = own_error.or(Some(e)),
            Ok(Ok(done)) => ok = ok.or(Some(done)), // replicas are identical: keep the lowest rank
        }
    }
    if let Some(e) = own_error.or(peer_error) {
        return Err(e);
    }
    Ok(ok.expect("every worker finished"))
}
