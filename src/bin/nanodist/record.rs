//! The run directory, written as the run goes: only this thread writes it.
//!
//! ```text
//!   train::train ---Event::Step(row)------> metrics.jsonl (a line, written through), the bar
//!                ---Event::Eval----------> metrics.jsonl ({"step":..,"val_loss":..}), the bar
//!                ---Event::Checkpoint----> checkpoint.safetensors (atomic)
//!                ---Outcome--------------> (one-worker reference) summary.json, trace.json,
//!                                          loss.svg, timeline.svg: each written once
//! ```
//!
//! metrics.jsonl is written through, one `write` per line, so a run killed at any moment
//! leaves every finished step on disk; a resume cuts it back to the checkpoint's step
//! (`rundir::cut_metrics`) before it appends, so each step appears exactly once.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use nanodist::checkpoint::DataFingerprint;
use nanodist::config::{FaultConfig, TrainConfig};
use nanodist::parallel::pipeline;
use nanodist::train::{self, Event};
use nanodist::{checkpoint, data, Error};

use crate::report::{self, Progress};
use crate::{chrome, rundir, timeline};

/// Trains, and writes the run directory as the run goes: metrics.jsonl and each checkpoint
/// as their events arrive, then (for a finished run of several workers, unless quiet) the
/// one-worker reference, and summary.json, trace.json and the pictures, each once.
///
/// Once `interrupt` is set the workers stop at the next step boundary; the checkpoint of
/// that step and the summary so far are written, and the outcome says where it stopped.
/// `cross`: under mpirun, the link to the other processes (this process is rank 0).
#[allow(clippy::too_many_arguments)]
pub fn train_and_record(
    cfg: &TrainConfig,
    corpus: &data::Corpus,
    init: train::TrainState,
    dir: &Path,
    quiet: bool,
    data: Option<&DataFingerprint>,
    interrupt: Arc<AtomicBool>,
    cross: Option<nanodist::collective::CrossLink>,
) -> Result<train::Outcome, Error> {
    let disk = rundir::in_run_dir(dir);
    let (layers, pp) = (cfg.model.n_layer, cfg.parallel.pp);
    if let (Some(note), false) = (pipeline::uneven(layers, pp).filter(|_| pp > 1), quiet) {
        eprintln!("pipeline: {note}");
    }
    let mut metrics = open_metrics(dir, init.step > 0).map_err(&disk)?;
    let mut progress = Progress::new(cfg, init.step, quiet);
    let mut last_checkpoint = None;
    let vocab = corpus.vocab.as_string();
    let opts = train::RunOptions {
        interrupt: Some(interrupt),
        cross,
        ..train::RunOptions::default()
    };
    let result = train::train(cfg, corpus, init, &opts, |event| {
        match event {
            Event::Step(row) => {
                let line = serde_json::to_string(row).expect("a row serialises");
                write_line(&mut metrics, dir, &line).map_err(&disk)?;
                progress.step(row);
            }
            Event::Eval { step, val_loss } => {
                let line = serde_json::json!({ "step": step, "val_loss": val_loss });
                write_line(&mut metrics, dir, &line.to_string()).map_err(&disk)?;
                progress.eval(step, val_loss);
            }
            Event::Checkpoint(state) => {
                let ck = checkpoint::Checkpoint {
                    config: cfg.clone(),
                    vocab: vocab.clone(),
                    step: state.step,
                    params: state.params,
                    adam_m: state.adam.m,
                    adam_v: state.adam.v,
                    adam_t: state.adam.t,
                    data: data.cloned(),
                };
                checkpoint::save(dir, &ck).map_err(&disk)?;
                last_checkpoint = Some(ck.step);
            }
        }
        Ok(())
    });
    progress.finish();
    let mut outcome = result.map_err(|e| match last_checkpoint {
        Some(step) => Error::Worker(format!(
            "{e}; the last good checkpoint (step {step}) is in {} (--resume it)",
            dir.display()
        )),
        None => e,
    })?;
    let interrupted = outcome.interrupted_at.is_some();
    if !interrupted {
        let s = &outcome.summary;
        let line = serde_json::json!({ "step": s.steps, "val_loss": s.val_loss, "windows": "all" });
        write_line(&mut metrics, dir, &line.to_string()).map_err(&disk)?;
    }
    // (under mpirun the other ranks have finished: the one-worker reference is not timed)
    if cfg.parallel.workers > 1 && cfg.parallel.processes == 1 && !quiet && !interrupted {
        let t1 = one_worker_tokens_per_s(cfg, corpus)?;
        let s = &mut outcome.summary;
        s.one_worker_tokens_per_s = Some(t1);
        s.scaling_efficiency = Some(s.tokens_per_s / (cfg.parallel.workers as f64 * t1));
    }
    let mut json = serde_json::to_value(&outcome.summary).expect("summary serialises");
    if let Some(k) = outcome.interrupted_at {
        json["interrupted_at_step"] = k.into();
    }
    grid_figures(&mut json, cfg);
    if cfg.parallel.pp > 1 {
        let figures = pipeline::figures(cfg, &outcome.tracks);
        json["pipeline"] = serde_json::to_value(figures).expect("figures serialise");
    }
    let json = serde_json::to_string_pretty(&json).expect("summary serialises");
    let write = |name: &str, bytes: &[u8]| checkpoint::write_atomic(&dir.join(name), bytes);
    write("summary.json", json.as_bytes()).map_err(&disk)?;
    let trace = chrome::chrome_trace(&outcome.tracks);
    write("trace.json", trace.as_bytes()).map_err(&disk)?;
    let (rows, evals) = (&outcome.rows, &outcome.evals);
    let val_loss = outcome.summary.val_loss;
    let svg = report::loss_chart(corpus, rows, evals, val_loss, cfg.schedule.steps).to_svg();
    write("loss.svg", svg.as_bytes()).map_err(&disk)?;
    let svg = timeline::timeline_svg(&outcome.tracks);
    write("timeline.svg", svg.as_bytes()).map_err(&disk)?;
    Ok(outcome)
}

fn open_metrics(dir: &Path, append: bool) -> Result<File, Error> {
    let path = dir.join("metrics.jsonl");
    OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(&path)
        .map_err(|e| Error::io(&path, e))
}

/// One line of metrics.jsonl, in one `write` so that a kill leaves whole lines.
fn write_line(file: &mut File, dir: &Path, line: &str) -> Result<(), Error> {
    let bytes = format!("{line}\n");
    (file.write_all(bytes.as_bytes())).map_err(|e| Error::io(dir.join("metrics.jsonl"), e))
}

/// `provenance.json`: where a run's numbers came from.
///
/// ```text
///   {"nanodist_version": "0.1.0",
///    "data": {"path": "/abs/corpus.txt", "bytes": .., "fnv1a64": ".."} | {"builtin": "tales", "seed": ..},
///    "invocations": [ {"command_line": [..], "cpu_model": "..", "threads": 16, "pid": ..,
///                      "start_step": 0, "unix_time": .., "sample": "text it printed" | null}, ..]}
/// ```
/// Each `train` or `--resume` of the directory adds one invocation; the file's presence is
/// also what marks a directory as a nanodist run.
pub fn begin_provenance(
    dir: &Path,
    cfg: &TrainConfig,
    data: Option<&DataFingerprint>,
    start_step: usize,
) -> Result<(), Error> {
    let path = dir.join(rundir::PROVENANCE);
    let mut p = read_provenance(dir);
    p["nanodist_version"] = env!("CARGO_PKG_VERSION").into();
    p["data"] = match data {
        Some(d) => serde_json::to_value(d).expect("a fingerprint serialises"),
        None => serde_json::json!({ "builtin": cfg.data, "seed": cfg.seed }),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let invocation = serde_json::json!({
        "command_line": std::env::args().collect::<Vec<_>>(),
        "cpu_model": cpu_model(),
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "pid": std::process::id(),
        "start_step": start_step,
        "unix_time": now,
        "sample": null,
    });
    match p["invocations"].as_array_mut() {
        Some(list) => list.push(invocation),
        None => p["invocations"] = serde_json::json!([invocation]),
    }
    let text = serde_json::to_string_pretty(&p).expect("provenance serialises");
    checkpoint::write_atomic(&path, text.as_bytes()).map_err(rundir::in_run_dir(dir))
}

/// Records the sample text the run printed, in its invocation of provenance.json.
pub fn record_sample(dir: &Path, text: &str) -> Result<(), Error> {
    let mut p = read_provenance(dir);
    if let Some(last) = p["invocations"].as_array_mut().and_then(|l| l.last_mut()) {
        last["sample"] = text.into();
    }
    let text = serde_json::to_string_pretty(&p).expect("provenance serialises");
    let path = dir.join(rundir::PROVENANCE);
    checkpoint::write_atomic(&path, text.as_bytes()).map_err(rundir::in_run_dir(dir))
}

fn read_provenance(dir: &Path) -> serde_json::Value {
    std::fs::read_to_string(dir.join(rundir::PROVENANCE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter(|v| v.is_object())
        .unwrap_or_else(|| serde_json::json!({}))
}

/// The CPU's "model name" from /proc/cpuinfo (Linux), or "unknown".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Tokens per second of ONE worker on `cfg`, timed now over 20 steps (after 5 that warm up):
/// the reference a run of several workers is compared with.
fn one_worker_tokens_per_s(cfg: &TrainConfig, corpus: &data::Corpus) -> Result<f64, Error> {
    let mut one = TrainConfig {
        faults: FaultConfig::default(),
        ..cfg.clone()
    };
    one.parallel.workers = 1;
    // one worker holds the whole model: a pipeline's micro-batches become its accumulation
    (one.parallel.pp, one.parallel.accum) = (1, one.parallel.accum * one.parallel.micro);
    one.parallel.micro = 1;
    (one.schedule.steps, one.schedule.eval_every) = (25, 0);
    let opts = train::RunOptions {
        final_eval: false,
        trace_steps: 0,
        interrupt: None,
        cross: None,
    };
    let run = train::train(&one, corpus, train::initial_state(&one), &opts, |_| Ok(()))?;
    Ok(run.summary.tokens_per_s)
}

/// summary.json's `layout` (the grid) and `comm_per_step` (bytes each worker sends in each
/// group per step, beside their formulas), and the activation bytes per worker under `--tp`.
fn grid_figures(json: &mut serde_json::Value, cfg: &TrainConfig) {
    use nanodist::parallel::tensor::{activation_bytes, comm_per_step};
    let p = &cfg.parallel;
    json["layout"] = serde_json::json!({
        "dp": cfg.data_parallel(),
        "pp": p.pp,
        "tp": p.tp,
        "sp": p.sp,
        "zero": p.zero,
    });
    let c = comm_per_step(cfg);
    json["comm_per_step"] = serde_json::json!({
        "tp": { "bytes": c.tp_bytes, "formula": c.tp_formula },
        "dp": { "bytes": c.dp_bytes, "formula": c.dp_formula },
    });
    if p.tp > 1 {
        let rows = if p.deterministic {
            1
        } else {
            cfg.micro_batch()
        };
        let t = cfg.model.block_size;
        json["activation_bytes_per_worker"] =
            activation_bytes(&cfg.model, rows, t, p.tp, p.sp).into();
    }
}
