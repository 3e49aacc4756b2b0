//! `nanodist bench --zero 0,1,2,3`: the ZeRO stages side by side, measured interleaved.
//!
//! ```text
//!   round 1:  stage 0 | stage 1 | stage 2 | stage 3      each: steps + 5 warm-up, the
//!   round 2:  stage 0 | stage 1 | stage 2 | stage 3      run's median tokens/s
//!   ...
//!   ratio of stage k = median over rounds of (tokens/s of k / tokens/s of stage 0 in that round)
//!
//!   --zero-prefetch thread,inline: stages 2 and 3 run once per mode in every round
//!   round 1:  stage 0 | stage 1 | stage 2 thread | stage 2 inline | stage 3 thread | ...
//! ```
//! Interleaving puts every stage through the same moments of a host whose speed drifts, and
//! a ratio taken within a round cancels what drifts slower than a round. The memory columns
//! are the bytes one worker holds (its buffers, measured, and the ZeRO formula): the peak
//! RSS of a process is its whole life's, so each stage's own is measured by its own
//! `nanodist train` (docs/zero.md).

use serde::Serialize;

use nanodist::config::{TrainConfig, ZeroPrefetch};
use nanodist::data;
use nanodist::parallel::zero::StateBytes;
use nanodist::train::{self, RunOptions};
use nanodist::Error;

/// One stage's figures.
#[derive(Clone, Debug, Serialize)]
pub struct StagePoint {
    /// The ZeRO stage.
    pub zero: u8,
    /// Stages 2 and 3: `--zero-prefetch` as asked, and where the block collectives ran.
    pub zero_prefetch: Option<ZeroPrefetch>,
    /// Where the block collectives ran (`auto` resolved).
    pub prefetch: Option<ZeroPrefetch>,
    /// Workers.
    pub workers: usize,
    /// tokens/s of each round, in order.
    pub tokens_per_s_rounds: Vec<f64>,
    /// Median over rounds of tokens/s against stage 0's of the same round.
    pub ratio_to_stage_0: f64,
    /// Bytes one worker holds, measured.
    pub measured: StateBytes,
    /// Bytes one worker holds by the ZeRO formula.
    pub predicted: StateBytes,
}

/// What `nanodist bench --zero` was asked to measure (its flags).
pub struct Plan<'a> {
    /// The stages, in the order of every round.
    pub stages: &'a [u8],
    /// Where stages 2 and 3 run their block collectives: each such stage once per mode.
    pub prefetch: &'a [ZeroPrefetch],
    /// Worker counts.
    pub workers: &'a [usize],
    /// Interleaved rounds.
    pub rounds: usize,
    /// Timed steps per run (after 5 warm-up steps).
    pub steps: usize,
    /// Global batch.
    pub batch: usize,
    /// All-reduce algorithm of stage 0.
    pub allreduce: nanodist::collective::Algorithm,
    /// Corpus.
    pub data: &'a str,
    /// Where zero.json goes.
    pub out: Option<std::path::PathBuf>,
}

/// Runs the comparison for each worker count, prints it, writes `zero.json`.
pub fn run(args: &Plan<'_>) -> Result<(), Error> {
    let stages = args.stages;
    // every run of a round: stages 0 and 1 once, stages 2 and 3 once per mode
    let runs: Vec<(u8, Option<ZeroPrefetch>)> = (stages.iter())
        .flat_map(|&z| match z {
            0 | 1 => vec![(z, None)],
            _ => args.prefetch.iter().map(|&p| (z, Some(p))).collect(),
        })
        .collect();
    let mut base = TrainConfig {
        data: args.data.to_string(),
        ..TrainConfig::default()
    };
    base.parallel.allreduce = args.allreduce;
    base.parallel.batch = args.batch;
    base.schedule.eval_every = 0;
    base.schedule.steps = args.steps + 5;
    let corpus = data::load(&base.data, base.seed)?;
    base.model.vocab_size = corpus.vocab.len();
    let config = |(zero, prefetch): (u8, Option<ZeroPrefetch>), n: usize| {
        let mut cfg = base.clone();
        (cfg.parallel.zero, cfg.parallel.workers) = (zero, n);
        cfg.parallel.zero_prefetch = prefetch.unwrap_or_default();
        cfg
    };
    for &n in args.workers {
        for &run in &runs {
            config(run, n).validate()?;
        }
    }
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| crate::rundir::new_dated("bench-zero-"));
    crate::rundir::create_out_dir(&dir)?;
    println!(
        "nanodist bench --zero {stages:?}: workers {:?}, {} rounds of {} timed steps, interleaved",
        args.workers, args.rounds, args.steps
    );
    let mut points = Vec::new();
    for &n in args.workers {
        let mut tps = vec![Vec::new(); runs.len()];
        let mut memory = vec![(StateBytes::default(), StateBytes::default()); runs.len()];
        let mut placed = vec![None; runs.len()];
        for round in 1..=args.rounds {
            for (i, &(z, asked)) in runs.iter().enumerate() {
                let cfg = config((z, asked), n);
                let opts = RunOptions {
                    final_eval: false,
                    trace_steps: 0,
                    ..RunOptions::default()
                };
                let s = train::train(&cfg, &corpus, train::initial_state(&cfg), &opts, |_| Ok(()))?
                    .summary;
                let lane =
                    asked.map_or(String::new(), |p| format!(" --zero-prefetch {}", p.name()));
                println!(
                    "  round {round}, {n} workers, --zero {z}{lane}: {:.0} tokens/s",
                    s.tokens_per_s
                );
                tps[i].push(s.tokens_per_s);
                if let Some(m) = s.memory {
                    memory[i] = (m.measured, m.predicted);
                    placed[i] = m.prefetch;
                }
            }
        }
        // stage 0's rounds, or the first stage listed, are the reference
        let reference = runs.iter().position(|&(z, _)| z == 0).unwrap_or(0);
        for (i, &(z, asked)) in runs.iter().enumerate() {
            let ratios = (tps[i].iter().zip(&tps[reference]))
                .map(|(a, b)| a / b)
                .collect();
            points.push(StagePoint {
                zero: z,
                zero_prefetch: asked,
                prefetch: placed[i],
                workers: n,
                tokens_per_s_rounds: tps[i].clone(),
                ratio_to_stage_0: median(ratios),
                measured: memory[i].0,
                predicted: memory[i].1,
            });
        }
    }
    println!("\n{}", table(&points));
    let json =
        serde_json::to_string_pretty(&serde_json::json!({ "points": points })).expect("serialises");
    nanodist::checkpoint::write_atomic(&dir.join("zero.json"), json.as_bytes())?;
    println!("wrote {}/zero.json", dir.display());
    Ok(())
}

/// The side-by-side table.
pub fn table(points: &[StagePoint]) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut out = String::from(
        "  workers  zero  collectives     tokens/s (median)  vs stage 0   state/worker MiB: params  grads  adamw  (formula total)\n",
    );
    for p in points {
        let (m, f) = (&p.measured, &p.predicted);
        let formula = mib(f.params + f.grads + f.optimizer);
        // where stages 2 and 3 ran their block collectives: "thread", "auto: inline"
        let lane = match (p.zero_prefetch, p.prefetch) {
            (Some(ZeroPrefetch::Auto), Some(got)) => format!("auto: {}", got.name()),
            (_, Some(got)) => got.name().to_string(),
            (Some(asked), None) => asked.name().to_string(),
            (None, None) => "-".to_string(),
        };
        out.push_str(&format!(
            "  {:>7}  {:>4}  {lane:<14}  {:>17.0}  {:>9.3}x   {:>22.2} {:>6.2} {:>6.2}  ({formula:.2})\n",
            p.workers,
            p.zero,
            median(p.tokens_per_s_rounds.clone()),
            p.ratio_to_stage_0,
            mib(m.params),
            mib(m.grads),
            mib(m.optimizer),
        ));
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
