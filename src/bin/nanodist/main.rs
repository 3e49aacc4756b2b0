//! The `nanodist` command line: train | sample | allreduce | bench | scale.
//!
//! `nanodist` alone trains with the defaults: the built-in corpus, one worker per core.
//! Every failure ends as one line on stderr and a non-zero exit status: 2 for a command line
//! that does not parse, 1 for everything else. A reader of stdout that leaves early
//! (`nanodist | head`) stops nanodist quietly with 141, as SIGPIPE stops C tools. Ctrl-C
//! (SIGINT) or SIGTERM during training stops it cleanly at a step boundary, with a
//! checkpoint and one line saying how to resume, and exits with 130 / 143 as a shell
//! reports those signals; a second one exits at once.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use nanodist::checkpoint::DataFingerprint;
use nanodist::config::TrainConfig;
use nanodist::{checkpoint, data, sample, Error};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

mod allreduce;
#[cfg(feature = "mpi")]
mod allreduce_mpi;
mod bench;
mod chrome;
mod cli;
mod compare;
mod job;
mod lock;
#[cfg(feature = "mpi")]
mod mpirun;
mod plot;
mod record;
mod report;
mod rundir;
mod scale;
mod sync_args;
mod timeline;

use allreduce::AllreduceArgs;
use cli::{default_workers, SampleArgs, TrainArgs};
use job::Job;
use report::{summary_table, thousands};

#[derive(Parser)]
#[command(
    name = "nanodist",
    version,
    about = "Train a tiny GPT with data-parallel worker threads, and see every collective step.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (the default when no subcommand is given).
    Train(Box<TrainArgs>),
    /// Generate text from a trained run.
    Sample(SampleArgs),
    /// Time the all-reduce algorithms.
    Allreduce(AllreduceArgs),
    /// Measure thread scaling: tokens/s, efficiency and the time split per worker count.
    Bench(bench::BenchArgs),
    /// Train every synchronisation strategy for the same budget on a simulated link and
    /// compare validation loss against wall time and bytes sent.
    Compare(compare::CompareArgs),
    /// Predict a run on thousands of GPUs (memory, step time, days), or calibrate the same
    /// model on this machine's threads (--calibrate).
    Scale(Box<scale::ScaleArgs>),
}

fn main() -> ExitCode {
    // Injected faults are reported by the run itself, in one line: keep the default
    // panic message (with its location) for real bugs only.
    //
    // A reader that leaves early makes Rust's `println!` panic: see `reader_left`.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload().downcast_ref::<String>();
        if let Some(why) = message.and_then(|m| m.strip_prefix("failed printing to stdout: ")) {
            if why.starts_with("Broken pipe") {
                reader_left();
            }
            cannot_print(why);
        }
        let injected = info.payload().is::<nanodist::InjectedFault>();
        if !injected {
            default_hook(info);
        }
    }));
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // Under mpirun without MPI built in, every process would train alone (and race for
    // the same run directory): refuse.
    #[cfg(not(feature = "mpi"))]
    if std::env::var("OMPI_COMM_WORLD_SIZE").is_ok_and(|n| n != "1") {
        eprintln!(
            "error: this nanodist was built without MPI, so under mpirun every process would train alone: build it with cargo build --release --features mpi"
        );
        return ExitCode::FAILURE;
    }
    // Under mpirun (built with --features mpi), this process is one rank of a job.
    #[cfg(feature = "mpi")]
    let mpi = match nanodist::collective::mpi::init() {
        Ok(mpi) => mpi,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command;
    #[cfg(feature = "mpi")]
    let command = match (&mpi, command) {
        (Some(mpi), None) => return mpirun::train(mpi, cli.train, run_train_in),
        (Some(mpi), Some(Command::Train(args))) => return mpirun::train(mpi, *args, run_train_in),
        (Some(mpi), Some(Command::Allreduce(args))) => {
            return match allreduce_mpi::run(&args, mpi) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        // the other commands run on rank 0 alone
        (Some(mpi), Some(_)) if mpi.rank() > 0 => return ExitCode::SUCCESS,
        (_, command) => command,
    };
    let result = match command {
        None => run_train(cli.train),
        Some(Command::Train(args)) => run_train(*args),
        Some(Command::Sample(args)) => run_sample(args),
        Some(Command::Allreduce(args)) => allreduce::run(&args).map(|()| ExitCode::SUCCESS),
        Some(Command::Bench(args)) => bench::run(&args).map(|()| ExitCode::SUCCESS),
        Some(Command::Scale(args)) => scale::run(&args).map(|()| ExitCode::SUCCESS),
        Some(Command::Compare(args)) => compare::run(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The reader of stdout left early (`nanodist | head`) and closed the pipe. C programs are
/// stopped quietly by SIGPIPE then; nanodist does the same: it exits at once with the status
/// a shell reports for SIGPIPE (128 + 13), without a message. Files are only ever written
/// whole (temp file + rename), so none is left half-written.
fn reader_left() -> ! {
    std::process::exit(141)
}

/// Standard output cannot be written for another reason than a closed pipe (a file on a full
/// disk: `nanodist > out.txt`): one line on stderr and exit status 1, as for any other error.
/// What nanodist had finished is on disk already, each file whole.
fn cannot_print(why: &str) -> ! {
    eprintln!(
        "error: cannot write to standard output: {why}; free some space or send it elsewhere"
    );
    std::process::exit(1)
}

/// Parses the command line, or reports why it cannot on one line.
///
/// Clap's own report of a bad flag spans several lines: the error, sometimes a tip or the
/// possible values, the usage, and a pointer to `--help`. nanodist keeps to one line per
/// error, so the lines that say what is wrong are joined and the usage is left to `--help`.
/// `--help` and `--version` print as clap prints them.
///
/// Every flag that takes a value takes a negative number as that value (`--seed -1`), so a
/// bad count is reported as a bad value of its flag, not as an unknown flag "-1".
fn parse_cli() -> Result<Cli, ExitCode> {
    let negative = |a: clap::Arg| a.allow_negative_numbers(true);
    let mut cmd = Cli::command().mut_args(negative);
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().into()).collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |s| s.mut_args(negative));
    }
    let parsed = cmd
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    parsed.map_err(|e| {
        use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
        if matches!(e.kind(), DisplayHelp | DisplayVersion) || !e.use_stderr() {
            e.exit();
        }
        eprintln!("{}", one_line(&e.render().to_string()));
        ExitCode::from(2)
    })
}

/// Clap's multi-line report as one line: its error and tip lines, without the usage block
/// and the closing pointer to `--help`, which becomes "; see --help".
fn one_line(report: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut in_usage = false;
    for line in report.lines().map(str::trim) {
        if line.is_empty() {
            in_usage = false;
        } else if line.starts_with("Usage:") {
            in_usage = true;
        } else if !in_usage && !line.starts_with("For more information") {
            parts.push(match line.strip_prefix("tip:") {
                Some(tip) => format!("(tip:{tip})"),
                None => line.to_string(),
            });
        }
    }
    format!("{}; see --help", parts.join(" "))
}

fn run_train(args: TrainArgs) -> Result<ExitCode, Error> {
    run_train_in(args, None)
}

/// Spreads the run's workers over `processes` (1 without mpirun): `--workers` threads each,
/// or under mpirun one each when the flag is not given.
fn spread(cfg: &mut TrainConfig, workers: Option<usize>, processes: usize) {
    if processes > 1 {
        cfg.parallel.workers = workers.unwrap_or(1).saturating_mul(processes);
    }
    cfg.parallel.processes = processes;
}

/// `nanodist train`, alone or as rank 0 of an mpirun job (`job`).
fn run_train_in(args: TrainArgs, mut job: Option<&mut dyn Job>) -> Result<ExitCode, Error> {
    let processes = job.as_ref().map_or(1, |j| j.processes());
    // Caught from the start: a Ctrl-C while the corpus loads still ends with a checkpoint.
    // (Under mpirun, mpirun owns the signals: see mpirun.rs.)
    let signals = if job.is_some() {
        Signals::none()
    } else {
        catch_interrupts()?
    };
    let prepared = prepare_train(&args, processes);
    let cross = job
        .as_mut()
        .map(|j| j.share(prepared.as_ref().ok().map(|p| (&p.0, &p.1, &p.2))));
    // `_lock` holds the run directory until this function returns (or the process ends).
    let (cfg, corpus, init, dir, data, _lock) = prepared?;
    if let Some(j) = job.as_mut() {
        j.run_dir(&dir);
    }
    record::begin_provenance(&dir, &cfg, data.as_ref(), init.step)?;
    if init.step == 0 {
        let json = serde_json::to_string_pretty(&cfg).expect("config serialises");
        checkpoint::write_atomic(&dir.join("config.json"), json.as_bytes())
            .map_err(rundir::in_run_dir(&dir))?;
    }
    if !args.quiet {
        println!(
            "nanodist: a {:.2}M-parameter GPT on {} ({} chars, vocabulary {}{}), {} worker{}, {} steps of {} x {} chars",
            cfg.model.num_params() as f64 / 1e6,
            corpus.name,
            thousands((corpus.train.len() + corpus.val.len()) as f64),
            corpus.vocab.len(),
            corpus.floor_nats.map_or(String::new(), |f| format!(", entropy floor {f:.3} nats/char")),
            cfg.parallel.workers,
            if processes > 1 {
                format!("s ({processes} processes x {} threads)", cfg.parallel.workers / processes)
            } else if cfg.parallel.workers == 1 {
                String::new()
            } else {
                "s".into()
            },
            cfg.schedule.steps,
            cfg.parallel.batch,
            cfg.model.block_size
        );
        if init.step > 0 {
            println!("resuming {} at step {}", dir.display(), init.step);
        }
    }
    let outcome = record::train_and_record(
        &cfg,
        &corpus,
        init,
        &dir,
        args.quiet,
        data.as_ref(),
        signals.interrupted.clone(),
        cross,
    )?;
    if let Some(step) = outcome.interrupted_at {
        let (name, code) = signals.which();
        eprintln!(
            "nanodist: stopped by {name} after step {step} of {}, checkpoint saved; continue with: nanodist train --resume {}",
            cfg.schedule.steps,
            dir.display()
        );
        return Ok(ExitCode::from(code));
    }
    let s = &outcome.summary;
    if args.quiet {
        println!(
            "val_loss {:.4} | {} tokens/s | param_hash {} | {}",
            s.val_loss,
            thousands(s.tokens_per_s),
            s.param_hash,
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("\n{}", summary_table(s));
    if let (Some(t1), Some(efficiency)) = (s.one_worker_tokens_per_s, s.scaling_efficiency) {
        println!(
            "  {:<22} {:.2}x one worker ({} tokens/s, timed just now over 20 steps): {:.0}% efficiency\n",
            "scaling",
            s.tokens_per_s / t1,
            thousands(t1),
            100.0 * efficiency
        );
    }
    let text = sample::generate(
        &outcome.model,
        &corpus.vocab,
        "",
        400,
        0.8,
        cfg.seed,
        |_| {},
    )?;
    println!("A sample (temperature 0.8):\n---\n{}\n---", text.trim());
    record::record_sample(&dir, &text)?;
    println!(
        "Run directory {}: summary.json, metrics.jsonl, checkpoint.safetensors, provenance.json,\n  trace.json (open in https://ui.perfetto.dev), loss.svg and timeline.svg (open in a browser)",
        dir.display()
    );
    println!(
        "More text: nanodist sample --run {} --prompt {}",
        dir.display(),
        shell_quote(&hint_prompt(&corpus))
    );
    Ok(ExitCode::SUCCESS)
}

/// What `nanodist train` starts from: the configuration, the corpus, the starting state, the
/// run directory (locked) and the data file's fingerprint.
type Prepared = (
    TrainConfig,
    data::Corpus,
    nanodist::train::TrainState,
    std::path::PathBuf,
    Option<DataFingerprint>,
    lock::Lock,
);

/// Reads the flags, the data and (with `--resume`) the checkpoint; makes the run directory.
fn prepare_train(args: &TrainArgs, processes: usize) -> Result<Prepared, Error> {
    Ok(match &args.resume {
        Some(dir) => {
            let r = rundir::resume(dir, |cfg| {
                args.apply(cfg);
                spread(cfg, args.workers, processes);
            })?;
            (r.cfg, r.corpus, r.init, dir.clone(), r.data, r.lock)
        }
        None => {
            let mut cfg = TrainConfig::default();
            cfg.parallel.workers = default_workers(args.batch.unwrap_or(12));
            if let Some(tp) = args.tp.filter(|_| args.workers.is_none()) {
                // one tensor group per replica the cores allow: at least one group
                cfg.parallel.workers = (cfg.parallel.workers / tp.max(1)).max(1) * tp;
            }
            args.apply(&mut cfg);
            spread(&mut cfg, args.workers, processes);
            if args.checkpoint_every.is_none() {
                // nanoGPT's habit: a checkpoint at every evaluation, so little is lost to a kill
                cfg.schedule.checkpoint_every = cfg.schedule.eval_every;
            }
            cfg.validate()?;
            let corpus = data::load(&cfg.data, cfg.seed)?;
            cfg.model.vocab_size = corpus.vocab.len();
            cfg.validate()?;
            corpus.check_block(cfg.model.block_size)?;
            nanodist::config::check_memory(&cfg)?;
            // The run records where its data is (absolute: resume from any directory) and
            // what it is (size and hash: resume refuses a changed file).
            let data = match cfg.data.as_str() {
                "tales" => None,
                path => Some(DataFingerprint::of_file(std::path::Path::new(path))?),
            };
            if let Some(d) = &data {
                cfg.data = d.path.clone();
            }
            let dir = args.out.clone().unwrap_or_else(rundir::new_default);
            let lock = rundir::prepare(&dir)?;
            let init = nanodist::train::initial_state(&cfg);
            (cfg, corpus, init, dir, data, lock)
        }
    })
}

/// What the signals SIGINT and SIGTERM have asked for.
struct Signals {
    /// Set by the first SIGINT or SIGTERM: stop at the next step boundary.
    interrupted: Arc<AtomicBool>,
    /// The number of the last signal received.
    last: Arc<AtomicUsize>,
}

impl Signals {
    /// Flags that no signal sets (under mpirun, which owns the signals).
    fn none() -> Self {
        Signals {
            interrupted: Arc::new(AtomicBool::new(false)),
            last: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The signal's name and the exit status a shell reports for it (128 + its number).
    fn which(&self) -> (&'static str, u8) {
        match self.last.load(Ordering::SeqCst) as i32 {
            SIGTERM => ("SIGTERM", 143),
            _ => ("SIGINT", 130),
        }
    }
}

/// The first SIGINT (Ctrl-C) or SIGTERM asks the run to stop cleanly: every worker stops at
/// the same step boundary, the checkpoint and summary are written, and nanodist exits with
/// 130 / 143. A second one exits at once with that status (the last checkpoint stays whole:
/// files are only ever replaced by rename).
///
/// Rust note: a signal handler may do almost nothing safely. signal-hook's `flag` handlers
/// only store to atomics, which the training loop reads at its step boundaries.
fn catch_interrupts() -> Result<Signals, Error> {
    let signals = Signals {
        interrupted: Arc::new(AtomicBool::new(false)),
        last: Arc::new(AtomicUsize::new(0)),
    };
    for (sig, code) in [(SIGINT, 130), (SIGTERM, 143)] {
        // Registered in this order, so a signal first checks whether one came before.
        let registered =
            flag::register_conditional_shutdown(sig, code, signals.interrupted.clone())
                .and_then(|_| flag::register_usize(sig, signals.last.clone(), sig as usize))
                .and_then(|_| flag::register(sig, signals.interrupted.clone()));
        registered.map_err(|e| {
            Error::Config(format!(
                "cannot install the Ctrl-C handler ({e}): run nanodist where signals can be caught"
            ))
        })?;
    }
    Ok(signals)
}

/// A prompt for the end-of-run hint that the corpus can continue: its first word (at most
/// 8 chars), so every char is in the vocabulary.
fn hint_prompt(corpus: &data::Corpus) -> String {
    let head = corpus
        .vocab
        .decode(&corpus.train[..corpus.train.len().min(64)]);
    let word: String = head
        .trim_start()
        .chars()
        .take_while(|c| !c.is_whitespace() && !c.is_control())
        .take(8)
        .collect();
    if word.is_empty() {
        head.chars().take(1).collect()
    } else {
        word
    }
}

/// `text` quoted for a POSIX shell: in single quotes, each `'` written as `'\''`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn run_sample(args: SampleArgs) -> Result<ExitCode, Error> {
    let ck = checkpoint::load(&args.run)?;
    rundir::check_config_json(&args.run, &ck.config, "sample")?;
    let vocab = data::Vocab::from_chars(&ck.vocab)?;
    let model = nanodist::model::Gpt::from_params(ck.config.model.clone(), ck.params);
    // the prompt, then each character as it is sampled
    let mut stdout = std::io::stdout();
    let mut show = |text: &str| {
        use std::io::Write;
        match write!(stdout, "{text}").and_then(|()| stdout.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => reader_left(),
            Err(e) => cannot_print(&e.to_string()),
        }
    };
    sample::generate(
        &model,
        &vocab,
        &args.prompt,
        args.chars,
        args.temperature,
        args.seed,
        &mut show,
    )?;
    show("\n");
    Ok(ExitCode::SUCCESS)
}
