//! One training run, from a configuration to a run directory.
//!
//! ```text
//!  main thread                     worker threads (scoped, one per replica)
//!  -----------                     ----------------------------------------
//!  load corpus, check config
//!  spawn N workers  ------------>  run_worker(rank): step, step, step, ...
//!  reporter: progress bar,  <----  Report::Step / Eval / Checkpoint (channel)
//!    metrics.jsonl, timeline
//!  join; first failure wins  <---  Ok(final params) | Err | panic
//!  summary.json, trace.json, loss.svg
//! ```
//!
//! Only the main thread prints or writes logs (nanoGPT's "only rank 0 logs"); workers
//! just send plain structs down a channel.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checkpoint::{self, param_hash};
use crate::collective;
use crate::config::TrainConfig;
use crate::data::Corpus;
use crate::model::Gpt;
use crate::optim::AdamW;
use crate::parallel::data_parallel::{run_worker, Context, Init, Report, StepReport, WorkerDone};
use crate::report::{self, Progress};
use crate::trace::{self, Clock, Span};
use crate::Error;

/// Steps whose spans go into `trace.json` (from the first step of the run).
pub const TRACE_STEPS: usize = 40;

/// What `summary.json` holds: the figures of one finished run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Total optimizer steps of the run.
    pub steps: usize,
    /// The step this session started from (0 unless resumed).
    pub start_step: usize,
    /// N, worker threads.
    pub workers: usize,
    /// B, sequences per step across all workers.
    pub global_batch: usize,
    /// K, micro-batches per worker per step.
    pub accum: usize,
    /// T, the context length.
    pub block: usize,
    /// Number of parameters.
    pub params: usize,
    /// The all-reduce algorithm.
    pub allreduce: String,
    /// Bucket size in KiB (0: one bucket).
    pub bucket_kb: usize,
    /// Whether all-reduce overlapped backward.
    pub overlap: bool,
    /// Whether the run used exact fixed-point gradient sums.
    pub deterministic: bool,
    /// `tales` or the data file.
    pub corpus: String,
    /// The corpus's entropy floor in nats/char, where known.
    pub floor_nats: Option<f64>,
    /// Mean training loss over the last (up to) 50 steps.
    pub train_loss: f64,
    /// Mean cross-entropy over all validation windows, nats/char.
    pub val_loss: f64,
    /// Predicted tokens per second at the median step time.
    pub tokens_per_s: f64,
    /// Median step time, ms.
    pub step_ms_median: f64,
    /// Median compute time per step (mean over workers), ms.
    pub compute_ms_median: f64,
    /// Median communication time per step (mean over workers), ms.
    pub comm_ms_median: f64,
    /// Median waiting time per step (mean over workers), ms.
    pub wait_ms_median: f64,
    /// Per worker: [compute, comm, wait] in ms, each the mean over the timed steps.
    ///
    /// Why means here, where the totals above are medians: workers take turns waiting for
    /// each other, so a worker's *median* wait can be about 0 while the group loses several
    /// ms a step. Means add up: mean wait x timed steps is the time the worker spent waiting.
    pub per_worker_ms: Vec<[f64; 3]>,
    /// Wall-clock time of the whole run, s.
    pub wall_s: f64,
    /// Peak resident memory of the process, MiB (Linux; 0 elsewhere).
    pub peak_rss_mib: f64,
    /// FNV-1a of the final parameters' bytes, 16 hex digits.
    pub param_hash: String,
}

/// A finished run: its summary and final model.
pub struct Outcome {
    /// The figures.
    pub summary: Summary,
    /// The trained model.
    pub model: Gpt,
    /// Where the run directory is (if any).
    pub out: Option<PathBuf>,
}

/// Per-step figures aggregated over workers (one line of `metrics.jsonl`).
#[derive(Clone, Debug, Serialize)]
pub struct StepRow {
    /// The step (0-based).
    pub step: usize,
    /// Mean loss over the global batch.
    pub loss: f64,
    /// Learning rate.
    pub lr: f64,
    /// Tokens per second for this step.
    pub tokens_per_s: f64,
    /// Slowest worker's step time, ms.
    pub step_ms: f64,
    /// Mean over workers, ms.
    pub compute_ms: f64,
    /// Mean over workers, ms.
    pub comm_ms: f64,
    /// Mean over workers, ms.
    pub wait_ms: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Per worker [compute, comm, wait], ms.
    pub per_worker_ms: Vec<[f64; 3]>,
}

/// Fresh weights for `cfg`, or the state in `resume`'s checkpoint.
pub fn initial_state(cfg: &TrainConfig) -> Init {
    let model = Gpt::new(cfg.model.clone(), cfg.seed);
    Init {
        adam: AdamW::new(model.params.len()),
        params: model.params,
        start_step: 0,
    }
}

/// How to run: where to write, what to show.
#[derive(Clone, Debug)]
pub struct RunOptions<'a> {
    /// The run directory (None: write nothing, e.g. in tests and benchmarks).
    pub out: Option<&'a Path>,
    /// No progress bar or lines.
    pub quiet: bool,
    /// Evaluate the validation loss over all windows at the end (benchmarks skip it).
    pub final_eval: bool,
}

/// Trains `cfg` on `corpus` from `init`.
pub fn train(
    cfg: &TrainConfig,
    corpus: &Corpus,
    init: Init,
    opts: &RunOptions<'_>,
) -> Result<Outcome, Error> {
    let (out, quiet) = (opts.out, opts.quiet);
    cfg.validate()?;
    corpus.check_block(cfg.model.block_size)?;
    // start_step == steps is allowed: a run stopped after its last checkpoint but before
    // its summary is finished by evaluating and summarising it.
    if init.start_step > cfg.steps {
        return Err(Error::Config(format!(
            "the run is already at step {}, past --steps {}: pass a larger --steps to continue it",
            init.start_step, cfg.steps
        )));
    }
    let mut metrics = match out {
        Some(dir) => Some(open_metrics(dir, init.start_step > 0)?),
        None => None,
    };
    let wall = Instant::now();
    let (tx, rx) = crossbeam::channel::unbounded();
    let ctx = Context {
        cfg,
        corpus,
        init: &init,
        clock: Clock::start(),
        reports: tx,
        out,
        trace_steps: TRACE_STEPS,
        final_eval: opts.final_eval,
    };
    let mut progress = Progress::new(cfg, init.start_step, quiet);
    let mut rows: Vec<StepRow> = Vec::new();
    let mut evals: Vec<(usize, f64)> = Vec::new();
    let mut tracks: Vec<Vec<Span>> = vec![Vec::new(); cfg.workers];
    let mut pending: BTreeMap<usize, Vec<StepReport>> = BTreeMap::new();
    let mut last_checkpoint = None;
    let mut last_step = vec![init.start_step; cfg.workers];

    let results: Vec<std::thread::Result<Result<WorkerDone, Error>>> = std::thread::scope(|s| {
        let handles: Vec<_> = collective::group(cfg.workers)
            .into_iter()
            .enumerate()
            .map(|(rank, comm)| {
                let ctx = &ctx;
                std::thread::Builder::new()
                    .name(format!("worker-{rank}"))
                    .spawn_scoped(s, move || run_worker(ctx, comm))
                    .expect("spawn a worker thread")
            })
            .collect();
        // The reporter: runs until every worker has returned, then drains the channel.
        loop {
            let finished = handles.iter().all(|h| h.is_finished());
            while let Ok(report) =
                rx.recv_timeout(Duration::from_millis(if finished { 0 } else { 50 }))
            {
                match report {
                    Report::Step(r) => {
                        last_step[r.rank] = r.step;
                        tracks[r.rank].extend_from_slice(&r.spans);
                        let step = r.step;
                        let group = pending.entry(step).or_default();
                        group.push(r);
                        if group.len() == cfg.workers {
                            let row = aggregate(cfg, pending.remove(&step).unwrap());
                            if let Some(m) = metrics.as_mut() {
                                let _ = writeln!(m, "{}", serde_json::to_string(&row).unwrap());
                            }
                            progress.step(&row);
                            rows.push(row);
                        }
                    }
                    Report::Eval { step, val_loss } => {
                        progress.eval(step, val_loss);
                        evals.push((step, val_loss));
                    }
                    Report::Checkpoint { step } => last_checkpoint = Some(step),
                }
                if !finished {
                    break;
                }
            }
            if finished {
                break;
            }
        }
        handles.into_iter().map(|h| h.join()).collect()
    });
    progress.finish();
    if let Some(mut m) = metrics {
        m.flush().map_err(|e| Error::io("metrics.jsonl", e))?;
    }
    let done = first_failure(results, &last_step, out, last_checkpoint)?;
    let (val_loss, params) = (done.val_loss, done.params);
    let summary = summarise(cfg, corpus, init.start_step, &rows, val_loss, &params, wall);
    if let Some(dir) = out {
        let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
        checkpoint::write_atomic(&dir.join("summary.json"), json.as_bytes())?;
        checkpoint::write_atomic(
            &dir.join("trace.json"),
            trace::chrome_trace(&tracks).as_bytes(),
        )?;
        let svg = report::loss_chart(corpus, &rows, &evals, val_loss, cfg.steps).to_svg();
        checkpoint::write_atomic(&dir.join("loss.svg"), svg.as_bytes())?;
    }
    Ok(Outcome {
        summary,
        model: Gpt::from_params(cfg.model.clone(), params),
        out: out.map(Path::to_path_buf),
    })
}

fn open_metrics(dir: &Path, append: bool) -> Result<BufWriter<File>, Error> {
    let path = dir.join("metrics.jsonl");
    let file = OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    Ok(BufWriter::new(file))
}

/// Picks the root cause among the workers' results: a panic, then a worker's own
/// error, and only then the errors of workers that stopped because a peer left.
fn first_failure(
    results: Vec<std::thread::Result<Result<WorkerDone, Error>>>,
    last_step: &[usize],
    out: Option<&Path>,
    last_checkpoint: Option<usize>,
) -> Result<WorkerDone, Error> {
    let kept = match (out, last_checkpoint) {
        (Some(dir), Some(step)) => format!(
            "; the last good checkpoint (step {step}) is in {} (--resume it)",
            dir.display()
        ),
        _ => String::new(),
    };
    let mut peer_error = None;
    let mut own_error = None;
    let mut ok = None;
    for (rank, r) in results.into_iter().enumerate() {
        match r {
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(Error::Worker(format!(
                    "worker {rank} panicked after step {}: {msg}; the run stopped{kept}",
                    last_step[rank]
                )));
            }
            Ok(Err(e @ Error::Peer(_))) => peer_error = peer_error.or(Some(e)),
            Ok(Err(e)) => own_error = own_error.or(Some(e)),
            Ok(Ok(done)) => ok = ok.or(Some(done)), // replicas are identical: keep the lowest rank
        }
    }
    if let Some(e) = own_error.or(peer_error) {
        return Err(Error::Worker(format!("{e}{kept}")));
    }
    Ok(ok.expect("every worker finished"))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn aggregate(cfg: &TrainConfig, mut reports: Vec<StepReport>) -> StepRow {
    reports.sort_by_key(|r| r.rank);
    let n = reports.len() as f64;
    let mean = |f: fn(&StepReport) -> f64| reports.iter().map(f).sum::<f64>() / n;
    let step_ms = reports.iter().map(|r| r.step_ms).fold(0.0, f64::max);
    StepRow {
        step: reports[0].step,
        loss: mean(|r| r.loss as f64),
        lr: reports[0].lr as f64,
        tokens_per_s: cfg.tokens_per_step() as f64 / (step_ms / 1e3),
        step_ms,
        compute_ms: mean(|r| r.compute_ms),
        comm_ms: mean(|r| r.comm_ms),
        wait_ms: mean(|r| r.wait_ms),
        grad_norm: reports[0].grad_norm as f64,
        per_worker_ms: reports
            .iter()
            .map(|r| [r.compute_ms, r.comm_ms, r.wait_ms])
            .collect(),
    }
}

/// Peak resident set size of this process in MiB, from /proc (0 where unavailable).
pub fn peak_rss_mib() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn summarise(
    cfg: &TrainConfig,
    corpus: &Corpus,
    start_step: usize,
    rows: &[StepRow],
    val_loss: f64,
    params: &[f32],
    wall: Instant,
) -> Summary {
    // The first steps warm caches and the allocator: leave them out of the medians.
    let timed = if rows.len() > 10 { &rows[3..] } else { rows };
    let med = |f: fn(&StepRow) -> f64| median(timed.iter().map(f).collect());
    let tail = &rows[rows.len().saturating_sub(50)..];
    let step_ms = med(|r| r.step_ms);
    Summary {
        steps: cfg.steps,
        start_step,
        workers: cfg.workers,
        global_batch: cfg.batch,
        accum: cfg.accum,
        block: cfg.model.block_size,
        params: params.len(),
        allreduce: format!("{:?}", cfg.allreduce).to_lowercase(),
        bucket_kb: cfg.bucket_kb,
        overlap: cfg.overlap,
        deterministic: cfg.deterministic,
        corpus: corpus.name.clone(),
        floor_nats: corpus.floor_nats,
        train_loss: tail.iter().map(|r| r.loss).sum::<f64>() / tail.len().max(1) as f64,
        val_loss,
        tokens_per_s: if step_ms > 0.0 {
            cfg.tokens_per_step() as f64 / (step_ms / 1e3)
        } else {
            0.0
        },
        step_ms_median: step_ms,
        compute_ms_median: med(|r| r.compute_ms),
        comm_ms_median: med(|r| r.comm_ms),
        wait_ms_median: med(|r| r.wait_ms),
        per_worker_ms: (0..cfg.workers)
            .map(|w| {
                let col = |i: usize| {
                    timed.iter().map(|r| r.per_worker_ms[w][i]).sum::<f64>()
                        / timed.len().max(1) as f64
                };
                [col(0), col(1), col(2)]
            })
            .collect(),
        wall_s: wall.elapsed().as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
        param_hash: param_hash(params),
    }
}
