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
//! just send plain structs down a channel. What it makes of them, each step's row and the
//! run's summary, is [`crate::metrics`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::checkpoint;
use crate::collective;
use crate::config::TrainConfig;
use crate::data::Corpus;
use crate::metrics::{aggregate, summarise, StepRow, Summary};
use crate::model::Gpt;
use crate::optim::AdamW;
use crate::parallel::data_parallel::{run_worker, Context, Init, Report, StepReport, WorkerDone};
use crate::report::{self, Progress};
use crate::trace::{self, Clock, Span};
use crate::Error;

/// Steps whose spans go into `trace.json` (from the first step of the run).
pub const TRACE_STEPS: usize = 40;

/// A finished run: its summary and final model.
pub struct Outcome {
    /// The figures.
    pub summary: Summary,
    /// The trained model.
    pub model: Gpt,
    /// Where the run directory is (if any).
    pub out: Option<PathBuf>,
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
