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
//! times every phase, the injected faults, and the reports to the main thread. The loop
//! runs the exchange of `--zero` ([`crate::parallel::zero::Zero`]): at stage 0 that is
//! [`AllReduce`] itself; at stages 1 to 3 the state is sharded, and the evaluation, the
//! replica check and the checkpoints ask it for the whole model or state.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam::channel::Sender;

use crate::collective::{Comm, CommError};
use crate::config::TrainConfig;
use crate::data::{sampler, Corpus};
use crate::error::Error;
use crate::error::InjectedFault;
use crate::model::Gpt;
use crate::optim::AdamW;
use crate::parallel::strategy::Exchange;
use crate::parallel::tensor;
use crate::step::{train_step, Batch, Observer, Replica, StepStats};
use crate::trace::{Clock, Phase, Span};

mod between_steps;
mod communicate;
mod messages;

pub(crate) use between_steps::{replicas_differ, Evaluator};
pub use communicate::{gone, wait_link, AllReduce};
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
    pub(crate) fn stops_before(&self, step: usize) -> bool {
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
pub(crate) struct Telemetry {
    pub(crate) clock: Clock,
    pub(crate) spans: Vec<Span>,
    pub(crate) rank: usize,
    /// `--straggler`: this worker sleeps this many ms every step.
    pub(crate) straggle_ms: Option<u64>,
    /// `--fault`: this worker panics at this step.
    pub(crate) fault_at: Option<usize>,
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
    /// The observer of worker `rank` of the run `ctx`.
    pub(crate) fn new(ctx: &Context<'_>, rank: usize) -> Self {
        let faults = &ctx.cfg.faults;
        Telemetry {
            clock: ctx.clock,
            spans: Vec::new(),
            rank,
            straggle_ms: faults.straggler.filter(|s| s.0 == rank).map(|s| s.1),
            fault_at: faults.fault.filter(|f| f.0 == rank).map(|f| f.1),
        }
    }

    /// Microseconds on the run's clock.
    pub(crate) fn now_us(&self) -> f64 {
        self.clock.now_us()
    }

    /// The report of `step`, begun at `start_us`: its time split, summed from its spans.
    pub(crate) fn report(
        &mut self,
        step: usize,
        start_us: f64,
        stats: StepStats,
        traced: bool,
        bytes_sent: u64,
    ) -> StepReport {
        let step_ms = (self.clock.now_us() - start_us) / 1e3;
        let sum = |cat: fn(&Phase) -> bool| {
            (self.spans.iter())
                .filter(|s| s.step == step && !s.comm_thread && cat(&s.phase))
                .map(|s| s.dur_us)
                .sum::<f64>()
                / 1e3
        };
        let comm_ms = sum(|p| p.category() == "comm");
        let wait_ms = sum(|p| matches!(p, Phase::Wait));
        let link_ms = sum(|p| matches!(p, Phase::Link));
        StepReport {
            rank: self.rank,
            step,
            loss: stats.loss,
            lr: stats.lr,
            grad_norm: stats.grad_norm,
            compute_ms: step_ms - comm_ms - wait_ms,
            comm_ms,
            wait_ms,
            link_ms,
            bytes_sent,
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

/// A copy of the whole state after `step` steps for the main thread to checkpoint, on rank 0
/// (`None` elsewhere): ZeRO's shards, or with `--tp` the tensor group's, consolidated (a
/// collective of every worker).
fn snapshot(
    exchange: &mut Exchange,
    replica: &mut Replica,
    step: usize,
) -> Result<Option<TrainState>, CommError> {
    if replica.tensor.is_none() {
        return exchange.snapshot(replica, step);
    }
    let (params, adam) = tensor_state(exchange, replica)?;
    Ok((replica.rank == 0).then_some(TrainState { params, adam, step }))
}

/// With `--tp`: the tensor group's shards of the parameters and moments, consolidated on
/// every worker of the group (a collective of the group; with `--zero 1` the moments'
/// parts are first gathered over the data-parallel group).
fn tensor_state(
    exchange: &mut Exchange,
    replica: &mut Replica,
) -> Result<(Vec<f32>, AdamW), CommError> {
    let adam = exchange.whole_adam(&replica.adam, replica.model.layout.len)?;
    let tp = replica.tensor.as_mut().expect("a tensor-parallel replica");
    tensor::consolidate_state(&replica.model, &adam, &mut tp.ops.comm)
}

/// The end of a worker: the whole parameters and moments (ZeRO's or the tensor group's
/// shards consolidated).
fn into_state(
    mut exchange: Exchange,
    mut replica: Replica,
) -> Result<(Vec<f32>, AdamW), CommError> {
    if replica.tensor.is_some() {
        return tensor_state(&mut exchange, &mut replica);
    }
    exchange.into_state(replica)
}

/// The validation loss over `windows`, split over the data-parallel group, of the whole
/// model: ZeRO's shards gathered, or with `--tp` the tensor group's consolidated and the
/// windows split over every worker of the run (`world`).
fn evaluate(
    ev: &mut Evaluator,
    replica: &mut Replica,
    exchange: &mut Exchange,
    world: Option<&mut Comm>,
    cfg: &TrainConfig,
    val: &[u32],
    windows: &[usize],
) -> Result<f64, CommError> {
    let algorithm = cfg.parallel.allreduce;
    match (&mut replica.tensor, world) {
        (Some(tp), Some(world)) => {
            let full = tensor::consolidate(&replica.model.params, &cfg.model, &mut tp.ops.comm)?;
            let model = Gpt::from_params(cfg.model.clone(), full);
            ev.evaluate(&model, world, algorithm, val, windows)
        }
        _ => {
            let model = exchange.whole_model(&replica.model)?;
            ev.evaluate(&model, exchange.comm(), algorithm, val, windows)
        }
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
    // --tp: this worker holds a shard in a tensor group; the gradient exchange and the
    // shares of the batch run over the data-parallel replicas (see `parallel::tensor`)
    let (comm, mut world, replica_index, tp_replica) = if cfg.parallel.tp > 1 {
        let model = Gpt::from_params(cfg.model.clone(), ctx.init.params.clone());
        let member = tensor::join(comm, cfg).map_err(gone(ctx.init.step))?;
        let tp = member.model.ops.comm.rank();
        let (shard, adam) = tensor::shard_state(&model, &ctx.init.adam, cfg.parallel.tp, tp);
        let replica = Replica::tensor_parallel(rank, shard, adam, cfg, member.model);
        (member.dp, Some(member.world), member.replica, Some(replica))
    } else {
        (comm, None, rank, None)
    };
    // synchronous all-reduce (--zero: with the state sharded), compressed, or local SGD
    // (parallel/strategy.rs)
    let len = (tp_replica.as_ref()).map_or(cfg.model.num_params(), |r| r.model.layout.len);
    let mut exchange = Exchange::new(cfg, comm, len, &ctx.init.params);
    let mut replica = match tp_replica {
        Some(r) => exchange.tensor_replica(r),
        None => exchange.replica(rank, ctx.init, cfg),
    };
    let mut evaluator = Evaluator::new(cfg);
    let mut obs = Telemetry::new(ctx, rank);
    let per_replica = cfg.parallel.batch / cfg.data_parallel();
    let val = &ctx.corpus.val[..];
    let subset = sampler::eval_subset(val.len(), t, cfg.schedule.eval_windows);
    let mut saved = ctx.init.step; // the step of the last state sent for a checkpoint
    let mut stopped_at = None;
    let mut memory = None;
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
            sequences: replica_index * per_replica..(replica_index + 1) * per_replica,
        };
        let (start_us, sent) = (obs.clock.now_us(), exchange.comm().bytes_sent());
        let stats = train_step(&mut replica, cfg, &batch, &mut exchange, &mut obs)?;
        if step + 1 == cfg.schedule.steps {
            // the memory of training, before the final checkpoint and evaluation gather
            memory = exchange.memory(&replica);
        }
        if cfg.faults.perturb == Some((rank, step)) {
            let p = &mut replica.model.params[0];
            *p = f32::from_bits(p.to_bits() ^ 1);
        }
        let traced = step < ctx.init.step + ctx.trace_steps;
        let bytes = exchange.comm().bytes_sent() - sent;
        let report = obs.report(step, start_us, stats, traced, bytes);
        let _ = reports.send(Report::Step(report));

        let done = step + 1;
        if cfg.schedule.eval_every > 0
            && done % cfg.schedule.eval_every == 0
            && done < cfg.schedule.steps
        {
            let (ev, r, world) = (&mut evaluator, &mut replica, world.as_mut());
            let val_loss = obs.time(Phase::Eval, done, || {
                evaluate(ev, r, &mut exchange, world, cfg, val, &subset)
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
            let model = exchange.whole_model(&replica.model).map_err(gone(done))?;
            let differ = replicas_differ(&model.params, exchange.comm());
            if let Some((w, hash, hash0)) = differ.map_err(gone(done))? {
                return Err(Error::Worker(format!(
                    "replicas diverged after step {done}: worker {w} has param hash {hash:016x}, worker 0 {hash0:016x}"
                )));
            }
        }
        let due = cfg.schedule.checkpoint_every > 0 && done % cfg.schedule.checkpoint_every == 0;
        if due || done == cfg.schedule.steps {
            // ZeRO consolidates its shards (a collective); rank 0 sends the whole state
            let state = obs.time(Phase::Checkpoint, done, || {
                snapshot(&mut exchange, &mut replica, done)
            });
            if let Some(state) = state.map_err(gone(done))? {
                let _ = reports.send(Report::Checkpoint(state));
            }
            saved = done;
        }
    }
    if let Some(step) = stopped_at {
        // Interrupted: the state at the boundary is saved (unless it just was), and the
        // final evaluation over all windows is left to the run that finishes the job.
        if saved != step {
            if let Some(state) = snapshot(&mut exchange, &mut replica, step).map_err(gone(step))? {
                let _ = reports.send(Report::Checkpoint(state));
            }
        }
        let memory = memory.or_else(|| exchange.memory(&replica));
        let memory = memory.filter(|_| replica.tensor.is_none()); // (ZeRO's formula)
        let (params, adam) = into_state(exchange, replica).map_err(gone(step))?;
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
        let (r, world) = (&mut replica, world.as_mut());
        evaluate(&mut evaluator, r, &mut exchange, world, cfg, val, &all)
            .map_err(gone(cfg.schedule.steps))?
    } else {
        f64::NAN
    };
    let end = cfg.schedule.steps;
    let memory = memory.or_else(|| exchange.memory(&replica));
    let memory = memory.filter(|_| replica.tensor.is_none()); // (ZeRO's formula)
    let (params, adam) = into_state(exchange, replica).map_err(gone(end))?;
    Ok(WorkerDone {
        memory,
        rank,
        val_loss,
        params,
        adam,
        stopped_at: None,
    })
}
