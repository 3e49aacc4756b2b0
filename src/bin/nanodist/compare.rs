//! `nanodist compare`: every synchronisation strategy trained for the same budget on the same
//! simulated link, side by side.
//!
//! ```text
//!   cargo run --release -- compare --link 50:0.125 --steps 300 --out runs/compare
//!
//!   for each round (--rounds R; round r starts at the r-th strategy):
//!     for each strategy (sync, DiLoCo H=8, top-k 1%, int8, PowerSGD 4, async S=2):
//!       train::train(default model, 2 workers, --link)    periodic val loss every ~steps/20
//!       curve: (training wall time = sum of step times, bytes sent so far, val loss)
//!   table:  after the same steps: val loss (all windows), bytes, wall time
//!           at the same wall time T (the round's fastest strategy's): val loss on each
//!           curve at T, linear between evaluations; with R > 1, one row per round and
//!           how many rounds each strategy beat sync in
//!   compare.svg: val loss against wall time | against bytes sent (log10)
//! ```
//!
//! The training wall time leaves out the periodic evaluations (the same work for every
//! strategy, and none of the comparison).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::Serialize;

use nanodist::collective::Link;
use nanodist::config::TrainConfig;
use nanodist::parallel::sync_options::{Compression, Outer};
use nanodist::train::{self, Event, RunOptions};
use nanodist::{data, Error};

use crate::plot::{Chart, Series};

/// Flags of `nanodist compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// The simulated link between the workers.
    #[arg(long, value_name = "ALPHA_US:GBPS", value_parser = str::parse::<Link>, default_value = "50:0.125")]
    pub link: Link,
    /// Optimizer steps of every strategy (the learning-rate schedule's length).
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Stop each strategy after this many seconds of training instead (its schedule is
    /// still --steps long).
    #[arg(long, value_name = "S")]
    pub seconds: Option<f64>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Strategies to run, comma-separated [default: all but topk-grad]: sync, diloco,
    /// topk, int8, powersgd, async, topk-grad.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Run every strategy this many times, in a rotated order each round, and compare them at
    /// equal wall time round by round: the host's load drifts between runs.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Where compare.json, compare.md and compare.svg go [default: runs/compare-DATE].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A strategy: its name and what it changes in the default configuration.
struct Strategy {
    name: &'static str,
    apply: fn(&mut TrainConfig),
}

/// Every strategy; all but the last run by default (`topk-grad`, top-k's error feedback on
/// the gradient, runs when `--only` names it).
const STRATEGIES: [Strategy; 7] = [
    Strategy {
        name: "sync",
        apply: |_| {},
    },
    Strategy {
        name: "diloco",
        apply: |c| {
            (c.parallel.sync_every, c.parallel.outer) = (8, Outer::Nesterov);
        },
    },
    Strategy {
        name: "topk",
        apply: |c| c.parallel.compress = Some(Compression::TopK(0.01)),
    },
    Strategy {
        name: "int8",
        apply: |c| c.parallel.compress = Some(Compression::Int8),
    },
    Strategy {
        name: "powersgd",
        apply: |c| c.parallel.compress = Some(Compression::PowerSgd(4)),
    },
    Strategy {
        name: "async",
        apply: |c| (c.parallel.asynchronous, c.parallel.staleness) = (true, 2),
    },
    Strategy {
        name: "topk-grad",
        apply: |c| c.parallel.compress = Some(Compression::TopKGrad(0.01)),
    },
];

/// One point of a curve.
#[derive(Clone, Debug, Serialize)]
struct Point {
    step: usize,
    wall_s: f64,
    bytes: u64,
    val_loss: f64,
}

/// One strategy's run.
#[derive(Clone, Debug, Serialize)]
struct Run {
    strategy: String,
    /// The round it ran in (0-based).
    round: usize,
    /// What it ran as (the flags beside `--link`).
    flags: String,
    steps: usize,
    wall_s: f64,
    bytes: u64,
    step_ms_median: f64,
    comm_ms_median: f64,
    link_ms_median: f64,
    /// Val loss over all windows after its steps (NaN when stopped by --seconds).
    val_loss: f64,
    /// Val loss (periodic subset) on its curve at its round's common wall time, linear
    /// between the evaluations on either side.
    val_loss_at_common_wall: f64,
    curve: Vec<Point>,
}

/// The flags a strategy adds, for the table.
fn flags_of(cfg: &TrainConfig) -> String {
    let p = &cfg.parallel;
    match () {
        _ if p.sync_every > 1 => format!(
            "--sync-every {} --outer {} --outer-lr {}",
            p.sync_every, p.outer, p.outer_lr
        ),
        _ if p.compress.is_some() => format!("--compress {}", p.compress.unwrap()),
        _ if p.asynchronous => format!("--async --staleness {}", p.staleness),
        _ => "(all-reduce every step)".into(),
    }
}

/// `nanodist compare`: see the module docs.
pub fn run(args: &CompareArgs) -> Result<(), Error> {
    if args.steps < 20 {
        return Err(Error::Config(
            "--steps must be at least 20 (the curves evaluate every steps/20)".into(),
        ));
    }
    if args.seconds.is_some_and(|s| s.is_nan() || s <= 0.0) {
        return Err(Error::Config("--seconds must be a positive number".into()));
    }
    let chosen: Vec<&Strategy> = if args.only.is_empty() {
        STRATEGIES[..STRATEGIES.len() - 1].iter().collect()
    } else {
        let mut v = Vec::new();
        for name in &args.only {
            match STRATEGIES.iter().find(|s| s.name == name) {
                Some(s) => v.push(s),
                None => {
                    return Err(Error::Config(format!(
                        "--only '{name}' is not a strategy: use sync, diloco, topk, int8, powersgd, async, topk-grad"
                    )))
                }
            }
        }
        v
    };
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| crate::rundir::new_dated("compare-"));
    crate::rundir::create_out_dir(&dir)?;
    let mut base = TrainConfig::default();
    let corpus = data::load(&base.data, base.seed)?;
    base.model.vocab_size = corpus.vocab.len();
    (base.parallel.workers, base.parallel.link) = (args.workers, Some(args.link));
    // about 20 evaluations, each at a multiple of DiLoCo's H = 8 (its replicas agree there)
    let every = (args.steps / 20).div_ceil(8) * 8;
    (base.schedule.steps, base.schedule.eval_every) = (args.steps, every);
    println!(
        "nanodist compare: {} strategies, {} workers, link {} ({} us, {} GB/s), {} steps{}",
        chosen.len(),
        args.workers,
        args.link,
        args.link.alpha_us,
        args.link.gb_per_s,
        args.steps,
        args.seconds
            .map_or(String::new(), |s| format!(", at most {s} s each"))
    );
    if args.rounds == 0 {
        return Err(Error::Config("--rounds must be at least 1".into()));
    }
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        if args.rounds > 1 {
            println!("round {} of {}", round + 1, args.rounds);
        }
        // round r starts at strategy r: no strategy always runs first or last
        let k = round % chosen.len();
        let order = chosen[k..].iter().chain(&chosen[..k]);
        let mut this = Vec::new();
        for s in order {
            let mut cfg = base.clone();
            (s.apply)(&mut cfg);
            cfg.validate()?;
            let mut run = train_one(s.name, &cfg, &corpus, args.seconds)?;
            run.round = round;
            this.push(run);
        }
        // back in the order of --only, so every round's rows line up
        this.sort_by_key(|r| chosen.iter().position(|s| s.name == r.strategy));
        at_common_wall(&mut this);
        runs.extend(this);
    }
    let first: Vec<Run> = runs.iter().filter(|r| r.round == 0).cloned().collect();
    let common = first.iter().map(|r| r.wall_s).fold(f64::INFINITY, f64::min);
    let mut table = table(&first, args, common);
    if args.rounds > 1 {
        table += &rounds_table(&runs, args.rounds);
    }
    let runs_all = runs;
    let runs = first;
    println!("{table}");
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| {
            Error::Config(format!(
                "cannot write {} ({e}): pass --out a directory you can write to",
                dir.join(name).display()
            ))
        })
    };
    write("compare.md", table)?;
    write(
        "compare.json",
        serde_json::to_string_pretty(&runs_all).expect("plain data serialises"),
    )?;
    write("compare.svg", svg(&runs, args))?;
    println!(
        "wrote compare.md, compare.json, compare.svg in {}",
        dir.display()
    );
    Ok(())
}

/// Trains one strategy, recording its curve.
fn train_one(
    name: &str,
    cfg: &TrainConfig,
    corpus: &data::Corpus,
    seconds: Option<f64>,
) -> Result<Run, Error> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let opts = RunOptions {
        final_eval: true,
        trace_steps: 0,
        interrupt: Some(Arc::clone(&interrupt)),
        ..RunOptions::default()
    };
    let (mut wall_s, mut bytes, mut curve) = (0.0, 0u64, Vec::new());
    let mut at_step = Vec::new(); // (wall, bytes) after each step
    let outcome = train::train(cfg, corpus, train::initial_state(cfg), &opts, |e| {
        match e {
            Event::Step(row) => {
                wall_s += row.step_ms / 1e3;
                bytes += row.bytes_sent;
                at_step.push((wall_s, bytes));
                if seconds.is_some_and(|s| wall_s >= s) {
                    interrupt.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            Event::Eval { step, val_loss } => {
                let (w, b) = at_step
                    .get(step.wrapping_sub(1))
                    .copied()
                    .unwrap_or((wall_s, bytes));
                curve.push(Point {
                    step,
                    wall_s: w,
                    bytes: b,
                    val_loss,
                });
            }
            Event::Checkpoint(_) => {}
        }
        Ok(())
    })?;
    let s = &outcome.summary;
    if s.val_loss.is_finite() {
        curve.push(Point {
            step: s.steps,
            wall_s,
            bytes,
            val_loss: s.val_loss,
        });
    }
    println!(
        "  {name:<9} {:>4} steps  {:>6.1} s  {:>9.1} MB sent  val loss {:.4}",
        outcome.rows.len(),
        wall_s,
        bytes as f64 / 1e6,
        curve.last().map_or(f64::NAN, |p| p.val_loss)
    );
    Ok(Run {
        strategy: name.into(),
        round: 0,
        flags: flags_of(cfg),
        steps: outcome.rows.len(),
        wall_s,
        bytes,
        step_ms_median: s.step_ms_median,
        comm_ms_median: s.comm_ms_median,
        link_ms_median: s.link_ms_median,
        val_loss: s.val_loss,
        val_loss_at_common_wall: f64::NAN,
        curve,
    })
}

/// Sets every run's loss at the round's common wall time: the shortest run's training time,
/// which every curve reaches.
fn at_common_wall(runs: &mut [Run]) {
    let common = runs.iter().map(|r| r.wall_s).fold(f64::INFINITY, f64::min);
    for r in runs {
        r.val_loss_at_common_wall = loss_at(&r.curve, common);
    }
}

/// The val loss on `curve` at wall time `t`: linear between the evaluations either side
/// (NaN before the first).
fn loss_at(curve: &[Point], t: f64) -> f64 {
    let Some(i) = curve.iter().rposition(|p| p.wall_s <= t + 1e-9) else {
        return f64::NAN;
    };
    match curve.get(i + 1) {
        Some(b) if b.wall_s > curve[i].wall_s => {
            let a = &curve[i];
            a.val_loss + (b.val_loss - a.val_loss) * (t - a.wall_s) / (b.wall_s - a.wall_s)
        }
        _ => curve[i].val_loss,
    }
}

/// Every round's loss at its common wall time, and how often each strategy beat sync there.
fn rounds_table(runs: &[Run], rounds: usize) -> String {
    let names: Vec<&str> = (runs.iter().filter(|r| r.round == 0))
        .map(|r| r.strategy.as_str())
        .collect();
    let mut t = format!(
        "\n| round | common wall s | {} |\n|---|---|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    let mut wins = vec![0usize; names.len()];
    for round in 0..rounds {
        let this: Vec<&Run> = runs.iter().filter(|r| r.round == round).collect();
        let common = this.iter().map(|r| r.wall_s).fold(f64::INFINITY, f64::min);
        let sync = this.iter().find(|r| r.strategy == "sync");
        let cells: Vec<String> = (this.iter().zip(&mut wins))
            .map(|(r, w)| {
                let beat =
                    sync.is_some_and(|s| r.val_loss_at_common_wall < s.val_loss_at_common_wall);
                *w += beat as usize;
                format!(
                    "{:.4}{}",
                    r.val_loss_at_common_wall,
                    if beat { " *" } else { "" }
                )
            })
            .collect();
        t += &format!("| {} | {common:.1} | {} |\n", round + 1, cells.join(" | "));
    }
    t += "\nval loss at each round's common wall time (its shortest run's); * lower than sync's. \
          Lower than sync in: ";
    let tally: Vec<String> = (names.iter().zip(&wins))
        .filter(|(n, _)| **n != "sync")
        .map(|(n, w)| format!("{n} {w} of {rounds}"))
        .collect();
    t += &tally.join(", ");
    t += ".\n";
    t
}

/// The comparison as a Markdown table.
fn table(runs: &[Run], args: &CompareArgs, common: f64) -> String {
    let sync_bytes = runs.iter().find(|r| r.strategy == "sync").map(|r| r.bytes);
    let mut t = format!(
        "| strategy | flags | steps | train wall s | step ms | comm ms (link) | MB sent | bytes vs sync | val loss after its steps | val loss at {common:.1} s |\n|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in runs {
        let ratio = sync_bytes.map_or("-".into(), |b| match r.bytes {
            0 => "-".into(),
            x => format!("1/{:.1}", b as f64 / x as f64),
        });
        t += &format!(
            "| {} | `{}` | {} | {:.1} | {:.0} | {:.0} ({:.0}) | {:.1} | {} | {:.4} | {:.4} |\n",
            r.strategy,
            r.flags,
            r.steps,
            r.wall_s,
            r.step_ms_median,
            r.comm_ms_median + 0.0, // (+ 0.0 turns a -0 into 0)
            r.link_ms_median + 0.0,
            r.bytes as f64 / 1e6,
            ratio,
            r.val_loss,
            r.val_loss_at_common_wall
        );
    }
    t += &format!(
        "\n{} workers, link {}; val loss after its steps: all validation windows; at {common:.1} s \
         (the shortest run's training time): the periodic evaluations (200 windows) either side, \
         linear between them.\n",
        args.workers, args.link
    );
    t
}

const COLOURS: [&str; 7] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#b07aa1", "#9c755f",
];

/// Two charts side by side: val loss against training wall time, and against bytes sent.
fn svg(runs: &[Run], args: &CompareArgs) -> String {
    let series = |x: fn(&Point) -> f64| -> Vec<Series> {
        (runs.iter().zip(COLOURS.iter().cycle()))
            .map(|(r, &color)| Series {
                name: r.strategy.clone(),
                points: r.curve.iter().map(|p| (x(p), p.val_loss)).collect(),
                color,
                dashed: false,
            })
            .collect()
    };
    let time = Chart {
        title: format!("val loss against training time, link {}", args.link),
        x_label: "training wall time, s".into(),
        y_label: "val loss, nats/char".into(),
        series: series(|p| p.wall_s),
        ..Chart::default()
    };
    let bytes = Chart {
        title: "val loss against bytes sent".into(),
        x_label: "log10 of bytes sent by all workers".into(),
        y_label: "val loss, nats/char".into(),
        series: series(|p| (p.bytes.max(1) as f64).log10()),
        ..Chart::default()
    };
    let (a, b) = (time.to_svg(), bytes.to_svg());
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1440\" height=\"440\">\n\
         <svg x=\"0\" y=\"0\">{a}</svg>\n<svg x=\"720\" y=\"0\">{b}</svg>\n</svg>\n"
    )
}
