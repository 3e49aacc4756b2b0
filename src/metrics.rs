//! The figures of a run: one [`StepRow`] per step (a line of `metrics.jsonl`), folded from
//! the workers' own reports, and the [`Summary`] of the whole run (`summary.json`).
//!
//! ```text
//!   worker 0: StepReport { compute, comm, wait, loss, .. }  \
//!   worker 1: StepReport { .. }                              +-> StepRow (per step)
//!   ...                                                     /        |
//!                                       all the rows of the run -----+-> Summary (medians)
//! ```
//!
//! A step lasts as long as its slowest worker, so a row's `step_ms` is the maximum over
//! workers while compute, comm and wait are means. The summary takes medians over the steps,
//! leaving out the first three, which warm caches and the allocator.

use std::fs;
use std::time::Instant;

use serde::Serialize;

use crate::checkpoint::param_hash;
use crate::config::TrainConfig;
use crate::data::Corpus;
use crate::parallel::async_ps::Staleness;
use crate::parallel::data_parallel::StepReport;
use crate::parallel::zero::Memory;

/// What `summary.json` holds: the figures of one finished run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Total optimizer steps of the run.
    pub steps: usize,
    /// The step this run started from (0, or where a resumed run continued).
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
    /// The simulated link (`ALPHA_US:GBPS`), if any.
    pub link: Option<String>,
    /// Median time per step waited out for the simulated link (part of `comm_ms_median`), ms.
    pub link_ms_median: f64,
    /// Bytes all workers together sent on the (modelled) wire over the run's steps.
    pub bytes_sent: u64,
    /// `--async`: the staleness of the gradients the parameter server applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staleness: Option<Staleness>,
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
    /// The ZeRO stage (`--zero`; 0: replicated data parallelism).
    pub zero: u8,
    /// Bytes one worker held for parameters, gradients, optimizer state and activations,
    /// by the ZeRO formula and measured, with the process's peak RSS (set by the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// Tokens per second of ONE worker on the same configuration, timed by the caller right
    /// after the run (the command line does, for runs of several workers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_worker_tokens_per_s: Option<f64>,
    /// `tokens_per_s / (workers * one_worker_tokens_per_s)`, where that is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling_efficiency: Option<f64>,
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
    /// Mean over workers: the part of `comm_ms` waited out for the simulated link, ms.
    pub link_ms: f64,
    /// Bytes all workers together sent on the (modelled) wire this step.
    pub bytes_sent: u64,
    /// Per worker [compute, comm, wait], ms.
    pub per_worker_ms: Vec<[f64; 3]>,
}

/// The median, the mean of the middle two for an even count; 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
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

/// One step's row from every worker's report of it.
pub(crate) fn aggregate(cfg: &TrainConfig, mut reports: Vec<StepReport>) -> StepRow {
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
        link_ms: mean(|r| r.link_ms),
        bytes_sent: reports.iter().map(|r| r.bytes_sent).sum(),
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

/// The summary of a run from its rows, its final validation loss and parameters, and the
/// time it started.
pub(crate) fn summarise(
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
        steps: cfg.schedule.steps,
        start_step,
        workers: cfg.parallel.workers,
        global_batch: cfg.parallel.batch,
        accum: cfg.parallel.accum,
        block: cfg.model.block_size,
        params: params.len(),
        allreduce: format!("{:?}", cfg.parallel.allreduce).to_lowercase(),
        bucket_kb: cfg.parallel.bucket_kb,
        overlap: cfg.parallel.overlap,
        deterministic: cfg.parallel.deterministic,
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
        link: cfg.parallel.link.map(|l| l.to_string()),
        link_ms_median: med(|r| r.link_ms),
        bytes_sent: rows.iter().map(|r| r.bytes_sent).sum(),
        staleness: None,
        // this process's workers (all of them without mpirun)
        per_worker_ms: (0..cfg.parallel.workers / cfg.parallel.processes.max(1))
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
        zero: cfg.parallel.zero,
        memory: None,
        one_worker_tokens_per_s: None,
        scaling_efficiency: None,
    }
}
