//! `nanodist bench --pp P`: the pipeline's bubble and memory, measured against the theory,
//! and its speed against one worker and against what the machine's cores allow.
//!
//! ```text
//!  for M in --micro (2,4,6), for gpipe, 1f1b and zb:
//!    train --workers P --pp P --micro M, warm-up steps, then --steps timed ones
//!    bubble: each stage's idle share of its schedule window (median over stages and steps)
//!            next to (P-1)/(M+P-1) (zb: its simulated schedule's); peak activation bytes
//!            per stage; tokens/s
//!  speed: one worker, the machine's roof, 1f1b and zb at M = max(M), interleaved
//!         (pipeline_speed.rs)
//! ```
//!
//! The bubble formula assumes each stage's forward and backward take the same time and the
//! stages run side by side undisturbed: on a machine with fewer free cores than stages the
//! measured bubble grows (a stage waits for a core as well as for its neighbour).

use std::path::Path;

use super::pipeline_speed::{Setup, Speed};
use nanodist::collective::Algorithm;
use nanodist::config::{PipeSchedule, TrainConfig};
use nanodist::data;
use nanodist::parallel::pipeline;
use nanodist::train::{self, RunOptions};
use nanodist::Error;

/// Warm-up steps before the timed ones.
const WARM: usize = 3;

/// One measured pipeline configuration.
#[derive(serde::Serialize)]
struct Row {
    micro: usize,
    schedule: &'static str,
    bubble_measured: Option<f64>,
    bubble_theory: f64,
    peak_activation_bytes: Vec<usize>,
    tokens_per_s: f64,
}

/// What `nanodist bench --pp` measures (from its flags).
pub struct Options<'a> {
    /// P.
    pub pp: usize,
    /// The micro-batch counts M.
    pub micro: &'a [usize],
    /// Timed steps per configuration.
    pub steps: usize,
    /// Interleaved rounds of the speed comparison.
    pub rounds: usize,
    /// The global batch.
    pub batch: usize,
    /// The corpus.
    pub data: &'a str,
    /// The all-reduce algorithm of the runs.
    pub allreduce: Algorithm,
    /// Where pipeline.json goes, if anywhere.
    pub out: Option<&'a Path>,
}

/// Runs the pipeline benchmark.
pub fn run(args: &Options<'_>) -> Result<(), Error> {
    let pp = args.pp;
    if args.micro.is_empty() || args.micro.contains(&0) || args.steps == 0 || args.rounds == 0 {
        return Err(Error::Config(
            "--micro needs positive counts (e.g. --micro 2,4,6), and --steps and --rounds at least 1"
                .into(),
        ));
    }
    if args.batch % pp != 0 {
        return Err(Error::Config(format!(
            "bench --pp {pp} needs a --batch that {pp} divides: its roof is {pp} independent \
             replicas of an equal share each (e.g. --batch 12)"
        )));
    }
    let mut base = TrainConfig {
        data: args.data.to_string(),
        ..TrainConfig::default()
    };
    base.schedule.eval_every = 0;
    base.parallel.allreduce = args.allreduce;
    let corpus = data::load(&base.data, base.seed)?;
    base.model.vocab_size = corpus.vocab.len();
    let pipe = |workers: usize, micro: usize, s: PipeSchedule| {
        let mut c = base.clone();
        (c.parallel.workers, c.parallel.pp, c.parallel.micro) = (workers, pp, micro);
        c.parallel.schedule = s;
        c.parallel.batch = args.batch;
        c.schedule.steps = args.steps + WARM;
        c
    };
    let most = args.micro.iter().copied().max().unwrap_or(1);
    for &m in args.micro {
        pipe(pp, m, PipeSchedule::GPipe).validate()?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "pipeline bench: {pp} stages of the default model (L = {}), global batch {}, {} timed steps \
         after {WARM} warm-up; {cores} cores{}",
        base.model.n_layer,
        args.batch,
        args.steps,
        if cores < pp {
            " (fewer than the stages: oversubscribed, the bubble reads high)"
        } else {
            ""
        }
    );
    let opts = RunOptions {
        final_eval: false,
        trace_steps: args.steps + WARM,
        ..RunOptions::default()
    };
    let mut rows = Vec::new();
    println!(
        "{:>5} {:>8} {:>16} {:>8} {:>28} {:>10}",
        "M", "schedule", "bubble measured", "theory", "peak activations/stage (MiB)", "tokens/s"
    );
    for &m in args.micro {
        for s in PipeSchedule::ALL {
            let cfg = pipe(pp, m, s);
            let out = train::train(&cfg, &corpus, train::initial_state(&cfg), &opts, |_| Ok(()))?;
            let timed: Vec<Vec<_>> = (out.tracks.iter())
                .map(|t| t.iter().filter(|sp| sp.step >= WARM).copied().collect())
                .collect();
            let f = pipeline::figures(&cfg, &timed);
            let mib: Vec<String> = (f.peak_activation_bytes.iter())
                .map(|b| format!("{:.1}", *b as f64 / (1 << 20) as f64))
                .collect();
            println!(
                "{m:>5} {:>8} {:>16} {:>8.3} {:>28} {:>10.0}",
                s.name(),
                f.bubble_measured.map_or("-".into(), |b| format!("{b:.3}")),
                f.bubble_theory,
                mib.join(" / "),
                out.summary.tokens_per_s
            );
            rows.push(Row {
                micro: m,
                schedule: s.name(),
                bubble_measured: f.bubble_measured,
                bubble_theory: f.bubble_theory,
                peak_activation_bytes: f.peak_activation_bytes,
                tokens_per_s: out.summary.tokens_per_s,
            });
        }
    }
    // speed: one worker, the roof and the two pipelines, interleaved; a round's ratios
    // compare runs that saw the same load, and the median ignores a round the host disturbed
    let mut one = base.clone();
    (one.parallel.workers, one.parallel.batch) = (1, args.batch);
    one.schedule.steps = args.steps + WARM;
    let speed = Speed::measure(&Setup {
        base: &base,
        corpus: &corpus,
        one,
        piped: [PipeSchedule::OneFOneB, PipeSchedule::ZeroBubble].map(|s| pipe(pp, most, s)),
        opts: RunOptions {
            trace_steps: 0,
            ..opts.clone()
        },
        pp,
        micro: most,
        batch: args.batch,
        steps: args.steps,
        rounds: args.rounds,
        cores,
    })?;
    println!("{}", speed.report());
    if let Some(dir) = args.out {
        let mut json = serde_json::json!({
            "stages": pp,
            "micro": most,
            "batch": args.batch,
            "steps": args.steps,
            "cores": cores,
            "rows": rows,
        });
        if let (Some(all), serde_json::Value::Object(speed)) = (json.as_object_mut(), speed.json())
        {
            all.extend(speed);
        }
        let path = dir.join("pipeline.json");
        let text = serde_json::to_string_pretty(&json).expect("figures serialise");
        (std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, text)))
            .map_err(|source| Error::Io { path, source })?;
        println!("wrote {}/pipeline.json", dir.display());
    }
    Ok(())
}
