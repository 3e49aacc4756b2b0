//! The run directory, written as the run goes: only this thread writes it.
//!
//! ```text
//!   train::train ---Event::Step(row)------> metrics.jsonl (a line), the progress bar
//!                ---Event::Eval----------> the progress bar
//!                ---Event::Checkpoint----> checkpoint.safetensors (atomic)
//!                ---Outcome--------------> (one-worker reference) summary.json, trace.json,
//!                                          loss.svg, timeline.svg: each written once
//! ```

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use nanodist::config::{FaultConfig, TrainConfig};
use nanodist::train::{self, Event};
use nanodist::{checkpoint, data, Error};

use crate::report::{self, Progress};
use crate::{chrome, timeline};

/// Trains, and writes the run directory as the run goes: metrics.jsonl and each checkpoint
/// as their events arrive, then (for a run of several workers, unless quiet) the one-worker
/// reference, and summary.json, trace.json and the pictures, each once.
pub fn train_and_record(
    cfg: &TrainConfig,
    corpus: &data::Corpus,
    init: train::TrainState,
    dir: &Path,
    quiet: bool,
) -> Result<train::Outcome, Error> {
    let mut metrics = open_metrics(dir, init.step > 0)?;
    let mut progress = Progress::new(cfg, init.step, quiet);
    let mut last_checkpoint = None;
    let vocab = corpus.vocab.as_string();
    let result = train::train(cfg, corpus, init, &train::RunOptions::default(), |event| {
        match event {
            Event::Step(row) => {
                let line = serde_json::to_string(row).expect("a row serialises");
                writeln!(metrics, "{line}").map_err(|e| Error::io(dir.join("metrics.jsonl"), e))?;
                progress.step(row);
            }
            Event::Eval { step, val_loss } => progress.eval(step, val_loss),
            Event::Checkpoint(state) => {
                let ck = checkpoint::Checkpoint {
                    config: cfg.clone(),
                    vocab: vocab.clone(),
                    step: state.step,
                    params: state.params,
                    adam_m: state.adam.m,
                    adam_v: state.adam.v,
                    adam_t: state.adam.t,
                };
                checkpoint::save(dir, &ck)?;
                last_checkpoint = Some(ck.step);
            }
        }
        Ok(())
    });
    progress.finish();
    metrics
        .flush()
        .map_err(|e| Error::io(dir.join("metrics.jsonl"), e))?;
    let mut outcome = result.map_err(|e| match last_checkpoint {
        Some(step) => Error::Worker(format!(
            "{e}; the last good checkpoint (step {step}) is in {} (--resume it)",
            dir.display()
        )),
        None => e,
    })?;
    if cfg.parallel.workers > 1 && !quiet {
        let t1 = one_worker_tokens_per_s(cfg, corpus)?;
        let s = &mut outcome.summary;
        s.one_worker_tokens_per_s = Some(t1);
        s.scaling_efficiency = Some(s.tokens_per_s / (cfg.parallel.workers as f64 * t1));
    }
    let json = serde_json::to_string_pretty(&outcome.summary).expect("summary serialises");
    checkpoint::write_atomic(&dir.join("summary.json"), json.as_bytes())?;
    let trace = chrome::chrome_trace(&outcome.tracks);
    checkpoint::write_atomic(&dir.join("trace.json"), trace.as_bytes())?;
    let (rows, evals) = (&outcome.rows, &outcome.evals);
    let val_loss = outcome.summary.val_loss;
    let svg = report::loss_chart(corpus, rows, evals, val_loss, cfg.schedule.steps).to_svg();
    checkpoint::write_atomic(&dir.join("loss.svg"), svg.as_bytes())?;
    let svg = timeline::timeline_svg(&outcome.tracks);
    checkpoint::write_atomic(&dir.join("timeline.svg"), svg.as_bytes())?;
    Ok(outcome)
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

/// Tokens per second of ONE worker on `cfg`, timed now over 20 steps (after 5 that warm up):
/// the reference a run of several workers is compared with.
fn one_worker_tokens_per_s(cfg: &TrainConfig, corpus: &data::Corpus) -> Result<f64, Error> {
    let mut one = TrainConfig {
        faults: FaultConfig::default(),
        ..cfg.clone()
    };
    one.parallel.workers = 1;
    (one.schedule.steps, one.schedule.eval_every) = (25, 0);
    let opts = train::RunOptions {
        final_eval: false,
        trace_steps: 0,
    };
    let run = train::train(&one, corpus, train::initial_state(&one), &opts, |_| Ok(()))?;
    Ok(run.summary.tokens_per_s)
}
