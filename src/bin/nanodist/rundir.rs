//! The run directory: how a new run claims one, and how an old run is read back to continue.
//!
//! ```text
//! runs/20261122-033120/   config.json  metrics.jsonl  checkpoint.safetensors
//!                         summary.json  trace.json  loss.svg
//! ```
//!
//! A directory that holds a checkpoint or a summary is never overwritten by a new run:
//! `--resume` continues it instead, from its checkpoint, with its own configuration.

use std::path::{Path, PathBuf};

use nanodist::checkpoint;
use nanodist::config::{FaultConfig, TrainConfig};
use nanodist::data::{self, Corpus};
use nanodist::optim::AdamW;
use nanodist::parallel::data_parallel::TrainState;
use nanodist::Error;

/// A run read back from its directory, ready to continue.
pub struct Resumed {
    /// The saved configuration, with the overrides applied.
    pub cfg: TrainConfig,
    /// The corpus, loaded again (its vocabulary checked against the checkpoint's).
    pub corpus: Corpus,
    /// Weights, AdamW moments and the step to continue from.
    pub init: TrainState,
}

/// Reads the run in `dir` back to continue it.
///
/// `overrides` applies the caller's wishes (the command line's flags) onto a copy of the
/// saved configuration. Only `steps` may change, plus the experiments that are not part of a
/// run (`fault`, `straggler`, `check_replicas`); any other change is refused, and so is a
/// corpus whose vocabulary is no longer the checkpoint's.
pub fn resume(dir: &Path, overrides: impl FnOnce(&mut TrainConfig)) -> Result<Resumed, Error> {
    let ck = checkpoint::load(dir)?;
    // Fault and straggler injection are experiments on a run, not part of it: a resumed
    // run takes them (and --check-replicas) from the overrides only.
    let mut cfg = TrainConfig {
        faults: FaultConfig::default(),
        ..ck.config.clone()
    };
    let mut asked = cfg.clone();
    overrides(&mut asked);
    let complete = dir.join("summary.json").exists();
    if complete && asked.schedule.steps <= ck.step {
        return Err(Error::Config(format!(
            "the run in {} is complete at step {}: pass a larger --steps to continue it",
            dir.display(),
            ck.step
        )));
    }
    cfg.schedule.steps = asked.schedule.steps;
    cfg.faults.fault = asked.faults.fault;
    cfg.faults.straggler = asked.faults.straggler;
    cfg.schedule.check_replicas = asked.schedule.check_replicas;
    if asked != cfg {
        return Err(Error::Config(format!(
            "--resume {} continues that run with its own configuration: pass only --steps, --quiet, --fault, --straggler or --check-replicas, or start a new run with --out",
            dir.display()
        )));
    }
    cfg.validate()?;
    let corpus = data::load(&cfg.data, cfg.seed)?;
    if corpus.vocab.as_string() != ck.vocab {
        return Err(Error::Checkpoint(format!(
            "the corpus {} no longer has the vocabulary of the checkpoint in {} ({} chars now, {} then): resume with the same data",
            cfg.data,
            dir.display(),
            corpus.vocab.len(),
            ck.vocab.chars().count()
        )));
    }
    let init = TrainState {
        params: ck.params,
        adam: AdamW {
            m: ck.adam_m,
            v: ck.adam_v,
            t: ck.adam_t,
        },
        step: ck.step,
    };
    Ok(Resumed { cfg, corpus, init })
}

/// Creates the run directory; refuses to overwrite an earlier run.
pub fn prepare(dir: &Path) -> Result<(), Error> {
    if dir.join(checkpoint::FILE).exists() || dir.join("summary.json").exists() {
        return Err(Error::Config(format!(
            "{} already holds a run: continue it with --resume {} or choose another --out",
            dir.display(),
            dir.display()
        )));
    }
    create_out_dir(dir)
}

/// Creates `dir` and its parents for a command's files, or says which `--out` to change.
pub fn create_out_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::Config(format!(
            "cannot create the output directory {} ({e}); pass --out a directory you can write to",
            dir.display()
        ))
    })
}

/// A new directory `runs/YYYYmmdd-HHMMSS` (UTC; `-2`, `-3`, ... if that one exists), created.
pub fn new_default() -> PathBuf {
    new_dated("")
}

/// A new directory `runs/<prefix>YYYYmmdd-HHMMSS`, created as [`new_default`] creates its own.
pub fn new_dated(prefix: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let stamp = format!(
        "runs/{prefix}{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    // Two runs started in the same second get their own directories: `create_dir` fails if
    // the directory exists, so claiming a name is atomic. (If `runs/` cannot be created, the
    // first name is returned and `prepare` reports the error.)
    let _ = std::fs::create_dir_all("runs");
    (1..1000)
        .map(|i| match i {
            1 => PathBuf::from(&stamp),
            _ => PathBuf::from(format!("{stamp}-{i}")),
        })
        .find(|p| std::fs::create_dir(p).is_ok())
        .unwrap_or_else(|| PathBuf::from(stamp))
}
