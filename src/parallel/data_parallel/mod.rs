//! Synchronous data parallelism: N replicas, one gradient, identical updates.
//!
//! Every worker thread runs [`run_worker`], the same loop for 1 and for N workers:
//!
//! ```text
//!  for each step:
//!    sequences [rank*B/N, (rank+1)*B/N) of the global batch, in K micro-batches
//!    step::train_step(replica, batch, AllReduce, telemetry):
//!      forward + backward  -> my gradients, each scaled by 1/(B*T)
//!      (wait for the slowest worker)
//!      all-reduce (sum) bucket by bucket -> every worker holds the full-batch gradient
//!      clip + AdamW on my replica       -> identical inputs give identical replicas
//!    report the step's times to the main thread
//!  between steps: validation loss, replica check, checkpoint state (rank 0 sends it)
//! ```
//!
//! An interrupt (Ctrl-C) stops every worker at the SAME step boundary, or the workers that
//! stopped would leave the others waiting in an all-reduce. The first worker to see the
//! interrupt flag at the top of its step `s` proposes "stop before step s + 1" in one shared
//! atomic; the proposal is made once (compare-and-swap), and every worker obeys it:
//!
//! ```text
//!  worker 0   top of s: flag seen, stop_at := s+1 | step s ............ | top of s+1: stop
//!  worker 1   top of s (or still in s-1) ......... | step s ............ | top of s+1: stop
//!                                                   ^ step s's all-reduce needs worker 0, so
//!                                                     no worker can be past s when stop_at is set,
//!                                                     and each sees stop_at before it reaches s+1
//! ```
//!
//! Why the sum of shard gradients is the full-batch gradient: the loss is a mean over
//! all B*T predicted tokens, L = (1/(B*T)) * sum_i l_i, and a gradient is linear, so
//! dL/dw = sum over workers of (1/(B*T)) * sum_{i in shard} dl_i/dw. Each worker scales
//! by the GLOBAL 1/(B*T); the all-reduce is a plain sum, with no division by N.
//!
//! The step itself is [`crate::step::train_step`]; what data parallelism adds to it is its
//! [`GradientExchange`](crate::step::GradientExchange), [`AllReduce`] (in `communicate.rs`).
//! This file adds the loop around it: the worker's share of each batch, the telemetry that
//! times every phase, the injected faults, and the reports to the main thread.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam::channel::Sender;

use crate::collective::Comm;
use crate::config::TrainConfig;
use crate::data::{sampler, Corpus};
use crate::error::Error;
use crate::error::InjectedFault;
use crate::model::Gpt;
use crate::step::{train_step, Batch, Observer, Replica, StepStats};
use crate::trace::{Clock, Phase, Span};

mod between_steps;
mod communicate;
mod messages;

use between_steps::{replicas_differ, Evaluator};
pub use communicate::{gone, AllReduce};
pub use messages::{Report, StepReport, TrainState, WorkerDone};

/// What every worker reads: the configuration, the data, the starting state.
pub struct Context<'a> {
    /// The run's configuration.
    pub cfg: &'a TrainConfig,
    /// The corpus, tokenised.
    pub corpus: &'a Corpus,
    /// The starting state; each worker copies it into its own replica.
    pub init: &'a TrainState,
    /// The run's shared clock, for the timeline.
    pub clock: Clock,
    /// Spans of steps `init.step .. init.step + trace_steps` are kept for the timeline.
    pub trace_steps: usize,
    /// Evaluate on all validation windows at the end (otherwise `val_loss` is NaN).
    pub final_eval: bool,
    /// Set by the main thread to stop the run (its caller failed to take a report).
    pub stop: &'a AtomicBool,
    /// Set (by a signal handler, say) to ask for a clean stop at the next step boundary.
    pub interrupt: Option<&'a AtomicBool>,
    /// The step before which every worker stops: `usize::MAX` until an interrupt is seen.
    pub stop_at: &'a AtomicUsize,
}

impl Context<'_> {
    /// Whether this worker stops before `step`: see the module docs for why all agree.
    fn stops_before(&self, step: usize) -> bool {
        if self.interrupt.is_some_and(|f| f.load(Ordering::SeqCst)) {
            // Only the first proposal counts; a later one (same step or the next) is dropped.
            let _ = (self.stop_at).compare_exchange(
                usize::MAX,
                step + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
        step >= self.stop_at.load(Ordering::SeqCst)
    }
}

/// A worker's observer of its steps: times every phase on the run's clock, and injects the
/// configured straggler sleep and fault.
struct Telemetry {
    clock: Clock,
    spans: Vec<Span>,
    rank: usize,
    /// `--straggler`: this worker sleeps this many ms every step.
    straggle_ms: Option<u64>,
    /// `--fault`: this worker panics at this step.
    fault_at: Option<usize>,
}

impl Observer for Telemetry {
    fn time<R>(&mut self, phase: Phase, step: usize, f: impl FnOnce() -> R) -> R {
        self.clock.time(&mut self.spans, phase, step, f)
    }

    fn clock(&self) -> Option<Clock> {
        Some(self.clock)
    }

    fn record(&mut self, span: Span) {
        self.spans.push(span);
    }

    fn step_starts(&mut self, step: usize) {
        if self.fault_at == Some(step) {
            // Unwinds like any panic, so the peers see this worker leave mid-collective.
            std::panic::panic_any(InjectedFault {
                worker: self.rank,
                step,
            });
        }
    }

    fn gradients_done(&mut self, step: usize) {
        if let Some(ms) = self.straggle_ms {
            self.time(Phase::Straggle, step, || {
                std::thread::sleep(std::time::Duration::from_millis(ms))
            });
        }
    }
}

impl Telemetry {
    /// The report of `step`, begun at `start_us`: its time split, summed from its spans.
    fn report(&mut self, step: usize, start_us: f64, stats: StepStats, traced: bool) -> StepReport {
        let step_ms = (self.clock.now_us() - start_us) / 1e3;
        let sum = |cat: fn(&Phase) -> bool| {
            (self.spans.iter())
                .filter(|s| s.step == step && !s.comm_thread && cat(&s.phase))
                .map(|s| s.dur_us)
                .sum::<f64>()
                / 1e3
        };
        let comm_ms = sum(|p| matches!(p, Phase::AllReduce(_) | Phase::CommWait));
        let wait_ms = sum(|p| matches!(p, Phase::Wait));
        StepReport {
            rank: self.rank,
            step,
            loss: stats.loss,
            lr: stats.lr,
            grad_norm: stats.grad_norm,
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
        }
    }
}

/// A copy of `replica`'s state after `step` steps, for the main thread to checkpoint.
fn snapshot(replica: &Replica, step: usize) -> TrainState {
    TrainState {
        params: replica.model.params.clone(),
        adam: replica.adam.clone(),
        step,
    }
}

/// Runs one worker's whole training loop. `comm` is this worker's endpoint of the group;
/// `reports` its own sender to the main thread (dropped when the worker ends, so the main
/// thread's loop over reports ends when every worker has).
pub fn run_worker(
    ctx: &Context<'_>,
    comm: Comm,
    reports: Sender<Report>,
) -> Result<WorkerDone, Error> {
    let cfg = ctx.cfg;
    let (rank, t) = (comm.rank(), cfg.model.block_size);
    let model = Gpt::from_params(cfg.model.clone(), ctx.init.params.clone());
    // deterministic mode's sum is complete only after the last sequence: it never overlaps
    let overlap = cfg.parallel.overlap && !cfg.parallel.deterministic;
    let mut exchange = AllReduce::new(
        comm,
        cfg.parallel.allreduce,
        model.layout.len,
        cfg.parallel.bucket_kb,
        overlap,
    );
    let mut replica = Replica::new(rank, model, ctx.init.adam.clone(), cfg);
    let mut evaluator = Evaluator::new(cfg);
    let mut obs = Telemetry {
        clock: ctx.clock,
        spans: Vec::new(),
        rank,
        straggle_ms: cfg.faults.straggler.filter(|s| s.0 == rank).map(|s| s.1),
        fault_at: cfg.faults.fault.filter(|f| f.0 == rank).map(|f| f.1),
    };
    let per_worker = cfg.parallel.batch / cfg.parallel.workers;
    let (val, algorithm) = (&ctx.corpus.val[..], cfg.parallel.allreduce);
    let subset = sampler::eval_subset(val.len(), t, cfg.schedule.eval_windows);
    let mut saved = ctx.init.step; // the step of the last state sent for a checkpoint
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
        let batch = Batch {
            tokens: &ctx.corpus.train,
            seed: cfg.seed,
            step,
            sequences: rank * per_worker..(rank + 1) * per_worker,
        };
        let start_us = obs.clock.now_us();
        let stats = train_step(&mut replica, cfg, &batch, &mut exchange, &mut obs)?;
        if cfg.faults.perturb == Some((rank, step)) {
            let p = &mut replica.model.params[0];
            *p = f32::from_bits(p.to_bits() ^ 1);
        }
        let traced = step < ctx.init.step + ctx.trace_steps;
        let _ = reports.send(Report::Step(obs.report(step, start_us, stats, traced)));

        let done = step + 1;
        if cfg.schedule.eval_every > 0
            && done % cfg.schedule.eval_every == 0
            && done < cfg.schedule.steps
        {
            let (model, comm) = (&replica.model, &mut exchange.comm);
            let val_loss = obs.time(Phase::Eval, done, || {
                evaluator.evaluate(model, comm, algorithm, val, &subset)
            });
            let val_loss = val_loss.map_err(gone(done))?;
            if rank == 0 {
                let _ = reports.send(Report::Eval {
                    step: done,
                    val_loss,
                });
            }
        }
        if cfg.schedule.check_replicas > 0 && done % cfg.schedule.check_replicas == 0 {
            let differ = replicas_differ(&replica.model.params, &mut exchange.comm);
            if let Some((w, hash, hash0)) = differ.map_err(gone(done))? {
                return Err(Error::Worker(format!(
                    "replicas diverged after step {done}: worker {w} has param hash {hash:016x}, worker 0 {hash0:016x}"
                )));
            }
        }
        let due = cfg.schedule.checkpoint_every > 0 && done % cfg.schedule.checkpoint_every == 0;
        if rank == 0 && (due || done == cfg.schedule.steps) {
            let state = obs.time(Phase::Checkpoint, done, || snapshot(&replica, done));
            let _ = reports.send(Report::Checkpoint(state));
            saved = done;
        }
    }
    if let Some(step) = stopped_at {
        // Interrupted: the state at the boundary is saved (unless it just was), and the
        // final evaluation over all windows is left to the run that finishes the job.
        if rank == 0 && saved != step {
            let _ = reports.send(Report::Checkpoint(snapshot(&replica, step)));
        }
        return Ok(WorkerDone {
            rank,
            val_loss: f64::NAN,
            params: replica.model.params,
            adam: replica.adam,
            stopped_at,
        });
    }
    let val_loss = if ctx.final_eval {
        let all: Vec<usize> = (0..sampler::val_windows(val.len(), t)).collect();
        let (model, comm) = (&replica.model, &mut exchange.comm);
        (evaluator.evaluate(model, comm, algorithm, val, &all)).map_err(gone(cfg.schedule.steps))?
    } else {
        f64::NAN
    };
    Ok(WorkerDone {
        rank,
        val_loss,
        params: replica.model.params,
        adam: replica.adam,
        stopped_at: None,
    })
}
