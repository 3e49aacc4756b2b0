//! The run directory: how a run claims one and holds it, and how an old run is read back
//! (and checked) to continue.
//!
//! ```text
//! runs/20261122-033120/   nanodist.lock      the pid of the process that holds the directory
//!                         provenance.json    version, command lines, CPU, data fingerprint, samples
//!                         config.json  metrics.jsonl  checkpoint.safetensors
//!                         summary.json  trace.json  loss.svg  timeline.svg
//! ```
//!
//! A directory is owned by one process at a time: an exclusive lock on `nanodist.lock`,
//! held for the life of the run and released by the operating system when the process
//! ends, however it ends (even by SIGKILL, so a stale lock never blocks a resume).
//! A directory that holds a checkpoint or a summary is never overwritten by a new run:
//! `--resume` continues it instead, from its checkpoint, with its own configuration.
//!
//! Resuming checks three records against each other: the checkpoint (the truth: its
//! metadata is checksummed), config.json (what a person reads and might edit), and the
//! data file (found by its recorded absolute path or a new `--data`, accepted by size and
//! hash). Any disagreement is refused on one line that says which record and what to do.

use std::path::{Path, PathBuf};

use nanodist::checkpoint::{self, DataFingerprint};
use nanodist::config::{FaultConfig, TrainConfig};
use nanodist::data::{self, Corpus};
use nanodist::optim::AdamW;
use nanodist::parallel::data_parallel::TrainState;
use nanodist::Error;

use crate::lock::{lock, Lock, LOCK};

/// The file that marks a directory as a nanodist run (see `record::Provenance`).
pub const PROVENANCE: &str = "provenance.json";

/// A run read back from its directory, ready to continue.
pub struct Resumed {
    /// The saved configuration, with the overrides applied.
    pub cfg: TrainConfig,
    /// The corpus, loaded again (its vocabulary checked against the checkpoint's).
    pub corpus: Corpus,
    /// Weights, AdamW moments and the step to continue from.
    pub init: TrainState,
    /// The data file's fingerprint (`None` for the built-in corpus).
    pub data: Option<DataFingerprint>,
    /// The directory, held for this process.
    pub lock: Lock,
}

/// Reads the run in `dir` back to continue it.
///
/// `overrides` applies the caller's wishes (the command line's flags) onto a copy of the
/// saved configuration. Only `steps` and `workers` may change, the data may be found at a
/// new path (if its fingerprint matches), plus the experiments that are not part of a run
/// (`fault`, `straggler`, `check_replicas`); any other change is refused, and so is a data
/// file whose contents changed. On success metrics.jsonl is cut back to the checkpoint's
/// step and config.json says how the run continues.
pub fn resume(dir: &Path, overrides: impl FnOnce(&mut TrainConfig)) -> Result<Resumed, Error> {
    let lock = if dir.is_dir() { Some(lock(dir)?) } else { None };
    let ck = checkpoint::load(dir)?; // reports a missing directory
    let lock = lock.expect("the directory exists: its checkpoint was read");
    check_config_json(dir, &ck.config, "--resume")?;
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
            "the run in {} has done {} steps already: pass a larger --steps to continue it",
            dir.display(),
            ck.step
        )));
    }
    let new_data = (asked.data != cfg.data).then(|| asked.data.clone());
    let recorded_data = std::mem::replace(&mut cfg.data, asked.data.clone());
    cfg.schedule.steps = asked.schedule.steps;
    cfg.parallel.workers = asked.parallel.workers;
    // the checkpoint holds the whole model: it resumes at any tensor-parallel layout
    cfg.parallel.tp = asked.parallel.tp;
    // (--sp has no meaning without a tensor group: a run resumed at --tp 1 drops it)
    asked.parallel.sp &= asked.parallel.tp > 1;
    cfg.parallel.sp = asked.parallel.sp;
    // the pipeline layout is a layout like --workers: the checkpoint is the whole model
    cfg.parallel.pp = asked.parallel.pp;
    cfg.parallel.micro = asked.parallel.micro;
    cfg.parallel.schedule = asked.parallel.schedule;
    cfg.parallel.processes = asked.parallel.processes; // another process count (mpirun)
    cfg.parallel.mpi_allreduce = asked.parallel.mpi_allreduce;
    // the checkpoint is consolidated: any ZeRO stage takes its shards of it
    cfg.parallel.zero = asked.parallel.zero;
    cfg.parallel.zero_prefetch = asked.parallel.zero_prefetch; // where, not what, it computes
    cfg.faults = asked.faults.clone();
    cfg.schedule.check_replicas = asked.schedule.check_replicas;
    if asked != cfg {
        return Err(Error::Config(format!(
            "--resume {} continues that run with its own configuration: pass only --steps, --workers, --zero, --zero-prefetch, --tp, --sp, --pp, --micro, --schedule, --data (the same file, moved), --quiet, --fault, --straggler or --check-replicas, or start a new run with --out",
            dir.display()
        )));
    }
    cfg.data = recorded_data; // find_data checks a new path before it replaces this one
    let (p, workers) = (&cfg.parallel, cfg.parallel.workers);
    // (a pipeline's share of the batch is checked by validate below)
    if workers > 0 && p.pp <= 1 && p.batch % (cfg.data_parallel() * p.accum) != 0 {
        return Err(Error::Config(format!(
            "--workers {workers} cannot share the run's batch of {} sequences ({} accumulation steps each): choose a number of workers that divides {}",
            p.batch,
            p.accum,
            p.batch / p.accum
        )));
    }
    if let Some((w, step)) = cfg.faults.fault.filter(|f| f.1 < ck.step) {
        return Err(Error::Config(format!(
            "--fault {w}:{step} names step {step}, but the resumed run starts at step {}: choose a step from {} to {}",
            ck.step,
            ck.step,
            cfg.schedule.steps.saturating_sub(1)
        )));
    }
    cfg.validate()?;
    let data = find_data(dir, &mut cfg, ck.data.as_ref(), new_data.as_deref())?;
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
    cut_metrics(dir, ck.step)?;
    let json = serde_json::to_string_pretty(&cfg).expect("config serialises");
    checkpoint::write_atomic(&dir.join("config.json"), json.as_bytes())?;
    let init = TrainState {
        params: ck.params,
        adam: AdamW {
            m: ck.adam_m,
            v: ck.adam_v,
            t: ck.adam_t,
        },
        step: ck.step,
    };
    Ok(Resumed {
        cfg,
        corpus,
        init,
        data,
        lock,
    })
}

/// Finds the run's data file, sets `cfg.data` to its absolute path, and checks it against
/// the fingerprint `then` the run recorded: at `new` (a `--data` given on resume) or else
/// at the recorded path. The built-in corpus needs no file.
fn find_data(
    dir: &Path,
    cfg: &mut TrainConfig,
    then: Option<&DataFingerprint>,
    new: Option<&str>,
) -> Result<Option<DataFingerprint>, Error> {
    if cfg.data == "tales" {
        if new.is_some() {
            return Err(Error::Config(format!(
                "the run in {} trains on the built-in corpus: resume it without --data",
                dir.display()
            )));
        }
        return Ok(None);
    }
    let Some(then) = then else {
        // A checkpoint without a fingerprint: only the vocabulary can be checked.
        if let Some(new) = new {
            cfg.data = new.to_string();
        }
        return Ok(None);
    };
    let path = PathBuf::from(new.unwrap_or(&then.path));
    if !path.is_file() {
        return Err(Error::Data(match new {
            Some(_) => format!(
                "--data {} is not a file: pass the path of the run's data ({} bytes, once at {})",
                path.display(),
                then.bytes,
                then.path
            ),
            None => format!(
                "the run's data file {} is gone: pass --data with its new path (it is recognised by its size, {} bytes, and hash)",
                then.path, then.bytes
            ),
        }));
    }
    let now = DataFingerprint::of_file(&path)?;
    if let Some(what) = now.differs_from(then) {
        let vocab = match data::load(&now.path, cfg.seed) {
            Ok(c) if c.vocab.len() != cfg.model.vocab_size => format!(
                ", and its vocabulary has {} chars where the run's had {}",
                c.vocab.len(),
                cfg.model.vocab_size
            ),
            _ => String::new(),
        };
        return Err(Error::Data(format!(
            "the data file {} is not the data of the run in {}: {what}{vocab}; restore the original file, or start a new run with --out",
            path.display(),
            dir.display()
        )));
    }
    cfg.data = now.path.clone();
    Ok(Some(now))
}

/// Checks `dir/config.json` against the checkpoint's configuration `ck`: the two may differ
/// only in what a resume may change (steps, workers, the data's path, the experiments).
/// A missing config.json is fine (the checkpoint has the configuration); an unreadable or
/// edited one is refused, naming the first field that differs. `command` names the flag
/// that read the directory, for the message.
pub fn check_config_json(dir: &Path, ck: &TrainConfig, command: &str) -> Result<(), Error> {
    let path = dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let remedy = "restore it, or delete it to use the checkpoint's own configuration";
    let saved: TrainConfig = serde_json::from_str(&text).map_err(|e| {
        Error::Checkpoint(format!(
            "{} is not a nanodist configuration ({e}), so {command} cannot trust it: {remedy}",
            path.display()
        ))
    })?;
    let comparable = |c: &TrainConfig| {
        let mut c = c.clone();
        (c.schedule.steps, c.parallel.workers, c.data) = (0, 0, String::new());
        c.faults = FaultConfig::default();
        c.schedule.check_replicas = 0;
        serde_json::to_value(&c).expect("config serialises")
    };
    let (a, b) = (comparable(&saved), comparable(ck));
    if a != b {
        let field = first_difference(&a, &b, "");
        return Err(Error::Checkpoint(format!(
            "{} disagrees with the checkpoint beside it ({field}), so {command} cannot trust it: {remedy}",
            path.display()
        )));
    }
    Ok(())
}

/// The first key whose values differ in two JSON objects, as `key: A in config.json, B in
/// the checkpoint`.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, prefix: &str) -> String {
    if let (Some(ma), Some(mb)) = (a.as_object(), b.as_object()) {
        for (k, va) in ma {
            let name = format!("{prefix}{k}");
            match mb.get(k) {
                Some(vb) if vb == va => {}
                Some(vb) => return first_difference(va, vb, &format!("{name}.")),
                None => return format!("{name} is not in the checkpoint's configuration"),
            }
        }
        if let Some(k) = mb.keys().find(|k| !ma.contains_key(*k)) {
            return format!("{prefix}{k} is missing");
        }
    }
    format!(
        "{}: {a} in config.json, {b} in the checkpoint",
        prefix.trim_end_matches('.')
    )
}

/// Creates the run directory and takes it for this run; refuses to overwrite an earlier
/// run, or a directory of other files.
pub fn prepare(dir: &Path) -> Result<Lock, Error> {
    create_out_dir(dir)?;
    let had_lock = dir.join(LOCK).exists();
    let lock = lock(dir)?;
    if dir.join(checkpoint::FILE).exists() || dir.join("summary.json").exists() {
        return Err(Error::Config(format!(
            "{} already holds a run: continue it with --resume {} or choose another --out",
            dir.display(),
            dir.display()
        )));
    }
    // A directory with only a lock file, or a nanodist run stopped before its first
    // checkpoint (nothing in it worth keeping), is started afresh; anything else is not ours.
    let others: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != LOCK)
        .collect();
    if !others.is_empty() && !dir.join(PROVENANCE).exists() {
        let mut shown = others.clone();
        shown.sort();
        shown.truncate(3);
        if !had_lock {
            drop(lock);
            let _ = std::fs::remove_file(dir.join(LOCK)); // leave the directory as it was
        }
        return Err(Error::Config(format!(
            "--out {} is a directory of other files ({}{}), not a nanodist run: pass a new or empty directory",
            dir.display(),
            shown.join(", "),
            if others.len() > 3 { ", ..." } else { "" }
        )));
    }
    Ok(lock)
}

/// Turns a failed write of a run file into one line that names the run directory and what
/// to do: a full disk, say, is fixed outside nanodist, and the run then continues.
pub fn in_run_dir(dir: &Path) -> impl Fn(Error) -> Error + '_ {
    move |e| {
        match e {
        Error::Io { path, source } => Error::Config(format!(
            "cannot write {} ({source}): the run directory {} needs free space and write permission; make room (or copy it to another disk) and continue with --resume {}",
            path.display(),
            dir.display(),
            dir.display()
        )),
        other => other,
    }
    }
}

/// Cuts `dir/metrics.jsonl` back to a checkpoint of `step` steps: the rows of steps
/// `0..step` and the evaluations after at most `step` steps stay; the rows a run wrote after
/// its last checkpoint (and a line half-written by a kill) go, since the resumed run
/// computes those steps again.
pub fn cut_metrics(dir: &Path, step: usize) -> Result<(), Error> {
    let path = dir.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(()); // none yet: the resumed run starts it
    };
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        let Ok(row) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(s) = row["step"].as_u64().map(|s| s as usize) else {
            continue;
        };
        let is_eval = row.get("val_loss").is_some();
        if (is_eval && s <= step) || (!is_eval && s < step) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    checkpoint::write_atomic(&path, kept.as_bytes()).map_err(in_run_dir(dir))
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
