//! `nanodist scale`: the cost model of `nanodist::scale` from the command line, and its
//! calibration on this machine.
//!
//! ```text
//!   nanodist scale [--model gpt3 --gpu a100 --gpus 1024 --tp 8 --pp 8 ...]
//!       flags -> ScaleConfig -> predict -> report (or --json, or --out DIR: the pictures)
//!
//!   nanodist scale --calibrate [--workers 1,2] [--steps N]
//!       1 worker, trained:        model FLOPs / step time   = FLOP/s per core   (the "GPU")
//!       all-reduce, timed:        a + bytes * b per worker count and algorithm  (the "link")
//!       each configuration:       predict(calibrated_cpu(...))  vs  train it    -> ratio
//! ```
//!
//! The calibration feeds the model only figures measured outside the runs it predicts: the
//! rate comes from a run of its own, the link from the all-reduce alone. The configurations
//! are then run in interleaved rounds (each one's fastest round kept, as `nanodist bench`
//! does), so a slow moment of a shared host lands on all of them rather than on one.

use std::path::{Path, PathBuf};

use nanodist::collective::Algorithm;
use nanodist::config::TrainConfig;
use nanodist::metrics::Summary;
use nanodist::parallel::buckets;
use nanodist::scale::{
    goodput_svg, memory_svg, predict, report, step_svg, Hardware, ModelShape, Precision,
    Prediction, ScaleConfig,
};
use nanodist::train::{self, RunOptions};
use nanodist::{data, Error};
use serde::Serialize;

/// Flags of `nanodist scale`. Defaults: GPT-3 175B on 1,024 A100s, Megatron-LM's layout.
#[derive(clap::Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Model preset: tiny, gpt2, gpt2-xl, gpt3 (= gpt3-175b). The shape flags below change it.
    #[arg(long, default_value = "gpt3")]
    pub model: String,
    /// Transformer blocks (l).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Attention heads (a).
    #[arg(long)]
    pub heads: Option<usize>,
    /// Hidden size (h).
    #[arg(long)]
    pub embd: Option<usize>,
    /// Sequence length (s).
    #[arg(long)]
    pub block: Option<usize>,
    /// Vocabulary (V).
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Accelerator: a100 or h100.
    #[arg(long, default_value = "a100")]
    pub gpu: String,
    /// GPUs in the job: DP x PP x TP.
    #[arg(long, default_value_t = 1024)]
    pub gpus: usize,
    /// GPUs per node, sharing the fast link.
    #[arg(long, default_value_t = 8)]
    pub gpus_per_node: usize,
    /// Tensor-parallel degree.
    #[arg(long, default_value_t = 8)]
    pub tp: usize,
    /// Pipeline stages.
    #[arg(long, default_value_t = 8)]
    pub pp: usize,
    /// ZeRO stage over the data-parallel group: 0, 1, 2 or 3.
    #[arg(long, default_value_t = 0)]
    pub zero: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 1)]
    pub micro_batch: usize,
    /// Global batch in sequences per optimizer step.
    #[arg(long, default_value_t = 1536)]
    pub batch: usize,
    /// Full activation recomputation: on or off (`--recompute` alone: on).
    #[arg(long, default_value = "on", num_args = 0..=1, default_missing_value = "on",
          value_parser = ["on", "off"])]
    pub recompute: String,
    /// Tokens to train on, for the training time (e.g. 300e9).
    #[arg(long, default_value_t = 300e9)]
    pub tokens: f64,
    /// Print the prediction as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write step.svg, memory.svg, goodput.svg and prediction.json here (with --calibrate:
    /// calibration.json and calibration.md); an existing non-empty directory is refused.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Measure this machine, predict nanodist's own runs with the same model, run them, and
    /// compare: the model flags above are then not used.
    #[arg(long)]
    pub calibrate: bool,
    /// With --calibrate: worker counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
    /// With --calibrate: steps per training run (the median step is compared).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// With --calibrate: interleaved rounds; each configuration keeps its fastest.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

/// Runs `nanodist scale`.
pub fn run(args: &ScaleArgs) -> Result<(), Error> {
    if let Some(dir) = &args.out {
        check_out(dir)?;
    }
    if args.calibrate {
        return calibrate(args);
    }
    let cfg = config(args)?;
    let p = predict(&cfg).map_err(|e| Error::Config(e.0))?;
    if args.json {
        println!("{}", serde_json::to_string(&p).expect("serialises"));
    } else {
        println!("{}", report(&p));
    }
    if let Some(dir) = &args.out {
        crate::rundir::create_out_dir(dir)?;
        write(dir, "step.svg", &step_svg(&p))?;
        write(dir, "memory.svg", &memory_svg(&memory_rows(&cfg, &p)))?;
        write(dir, "goodput.svg", &goodput_svg(&p))?;
        let json = serde_json::to_string_pretty(&p).expect("serialises");
        write(dir, "prediction.json", &json)?;
        if !args.json {
            println!(
                "wrote step.svg, memory.svg, goodput.svg and prediction.json to {}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// An `--out` that already holds something is refused before any work is done.
fn check_out(dir: &Path) -> Result<(), Error> {
    let non_empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if non_empty || dir.is_file() {
        return Err(Error::Config(format!(
            "{} already exists and is not an empty directory: choose another --out",
            dir.display()
        )));
    }
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), Error> {
    nanodist::checkpoint::write_atomic(&dir.join(name), text.as_bytes())
}

/// The flags as a [`ScaleConfig`]; a flag out of range is a one-line error naming it.
fn config(args: &ScaleArgs) -> Result<ScaleConfig, Error> {
    let bad = |s: String| Err(Error::Config(s));
    let Some(mut model) = ModelShape::preset(&args.model) else {
        return bad(format!(
            "--model {} is not a preset: use tiny, gpt2, gpt2-xl or gpt3 (or set --layers, --heads, --embd, --block, --vocab)",
            args.model
        ));
    };
    let Some(hardware) = Hardware::preset(&args.gpu) else {
        return bad(format!("--gpu {} is not known: use a100 or h100", args.gpu));
    };
    let shape = [
        ("--layers", args.layers, &mut model.layers),
        ("--heads", args.heads, &mut model.heads),
        ("--embd", args.embd, &mut model.hidden),
        ("--block", args.block, &mut model.seq),
        ("--vocab", args.vocab, &mut model.vocab),
    ];
    let mut custom = false;
    for (flag, value, field) in shape {
        if let Some(v) = value {
            if v == 0 {
                return bad(format!("{flag} must be at least 1"));
            }
            (*field, custom) = (v, true);
        }
    }
    if custom {
        model.name = "custom GPT".into();
    }
    if model.hidden % model.heads != 0 {
        return bad(format!(
            "--embd {} does not split into {} heads: pick --embd a multiple of --heads",
            model.hidden, model.heads
        ));
    }
    if !(args.tokens.is_finite() && args.tokens > 0.0) {
        return bad(format!(
            "--tokens {} must be a positive number, e.g. 300e9",
            args.tokens
        ));
    }
    Ok(ScaleConfig {
        model,
        hardware,
        gpus: args.gpus,
        gpus_per_node: args.gpus_per_node,
        tp: args.tp,
        pp: args.pp,
        zero: args.zero,
        micro_batch: args.micro_batch,
        batch: args.batch,
        recompute: args.recompute == "on",
        tokens: args.tokens,
        ..ScaleConfig::default()
    })
}

/// The layout asked for beside the simplest ones on the same GPUs (pure data parallelism,
/// with and without ZeRO-3), where the batch allows them: what the asked layout saves.
fn memory_rows<'a>(cfg: &ScaleConfig, p: &'a Prediction) -> Vec<(&'static str, &'a Prediction)> {
    // leaked: three small predictions in a short-lived process, so the rows can borrow them
    let dp = |zero| {
        let c = ScaleConfig {
            tp: 1,
            pp: 1,
            zero,
            micro_batch: 1,
            ..cfg.clone()
        };
        predict(&c).ok().map(|p| &*Box::leak(Box::new(p)))
    };
    let mut rows = Vec::new();
    if let Some(one) = dp(0) {
        rows.push(("data parallel only", one));
    }
    if let Some(z3) = dp(3) {
        rows.push(("data parallel, ZeRO-3", z3));
    }
    rows.push(("this layout", p));
    rows
}

// ---------------------------------------------------------------------------------------
// Calibration on this machine

/// One configuration of nanodist's own training, as the cost model sees it and as it ran.
#[derive(Clone, Debug, Serialize)]
struct Row {
    /// The flags that make it: `nanodist train --workers 2 --allreduce ring ...`.
    flags: String,
    workers: usize,
    predicted_ms: f64,
    /// Predicted compute and exposed exchange.
    predicted_compute_ms: f64,
    predicted_exchange_ms: f64,
    /// The fastest round's median step, and its split.
    measured_ms: f64,
    measured_compute_ms: f64,
    measured_comm_ms: f64,
    measured_wait_ms: f64,
    /// predicted / measured.
    ratio: f64,
}

/// A configuration to run: its label flags and its training configuration.
struct Case {
    flags: String,
    cfg: TrainConfig,
}

/// Configurations nanodist has that the model does not represent, and why.
const NOT_MODELLED: [(&str, &str); 2] = [
    (
        "--deterministic",
        "runs each sequence through forward and backward on its own and sums gradients as i64 \
         fixed point: its rate per FLOP is that of one-row matrix products plus a conversion \
         per gradient, a rate the one calibrated FLOP/s figure does not hold",
    ),
    (
        "--accum K",
        "splits each worker's share into K smaller micro-batches, whose matrix products run at \
         another rate than the calibrated one, as --deterministic does",
    ),
];

fn cases(args: &ScaleArgs, base: &TrainConfig) -> Vec<Case> {
    let mut out = Vec::new();
    for &n in &args.workers {
        let make = |algo: Algorithm, kb: usize, overlap: bool| {
            let mut cfg = base.clone();
            cfg.parallel.workers = n;
            (
                cfg.parallel.allreduce,
                cfg.parallel.bucket_kb,
                cfg.parallel.overlap,
            ) = (algo, kb, overlap);
            let mut flags = format!("--workers {n}");
            if n > 1 {
                flags += &format!(" --allreduce {}", algo.name());
                if kb > 0 {
                    flags += &format!(" --bucket-kb {kb}");
                }
                if overlap {
                    flags += " --overlap";
                }
            }
            Case { flags, cfg }
        };
        if n == 1 {
            out.push(make(Algorithm::Shared, 0, false));
        } else {
            out.push(make(Algorithm::Shared, 0, false));
            out.push(make(Algorithm::Ring, 0, false));
            out.push(make(Algorithm::Shared, 256, false));
            out.push(make(Algorithm::Shared, 256, true));
        }
    }
    out
}

/// The model's prediction of one case: one "GPU" per worker, its FLOP/s measured, its link
/// the all-reduce fitted for this worker count and algorithm.
///
/// Overlap: the shared-memory and ring all-reduces are copies and sums done by the cores
/// themselves, not by a separate engine as a GPU's NVLink transfers are. With a core per
/// worker and no core to spare, an overlapped exchange takes its time from the backward it
/// runs beside, so the model hides none of it (`dp_overlap` 0); with spare cores, all it can.
fn predict_case(
    cfg: &TrainConfig,
    flops_per_core: f64,
    fit: Option<&AlphaBetaFit>,
    cores: usize,
) -> Prediction {
    let m = &cfg.model;
    let n = cfg.parallel.workers;
    let model = ModelShape::custom(
        "nanodist",
        m.n_layer,
        m.n_head,
        m.n_embd,
        m.block_size,
        m.vocab_size,
    );
    // The fit is the whole all-reduce, `a + bytes * b`; the model's ring over one node of n
    // costs 2(n-1) alpha + 2(n-1)/n bytes / beta and pays alpha once per message, so with k
    // buckets: alpha = k a / (2(n-1)), beta = 2(n-1)/n / b.
    let (alpha_s, bytes_per_s) = match fit {
        Some(f) if n > 1 => {
            let k = buckets::plan(
                m.num_params(),
                buckets::floats_for_kb(cfg.parallel.bucket_kb),
            )
            .len() as f64;
            let hops = 2.0 * (n - 1) as f64;
            (
                k * f.a_us * 1e-6 / hops,
                hops / n as f64 / (f.b_us_per_byte * 1e-6),
            )
        }
        _ => (0.0, f64::INFINITY),
    };
    let sc = ScaleConfig {
        model,
        hardware: Hardware::calibrated_cpu(flops_per_core, alpha_s, bytes_per_s, 8e9),
        gpus: n,
        gpus_per_node: n,
        tp: 1,
        pp: 1,
        zero: 0,
        micro_batch: cfg.parallel.batch / n,
        batch: cfg.parallel.batch,
        recompute: false,
        precision: Precision::Fp32,
        dp_overlap: if cfg.parallel.overlap && n < cores {
            1.0
        } else {
            0.0
        },
        ..ScaleConfig::default()
    };
    predict(&sc).expect("the worker counts divide the batch, checked before")
}

/// The all-reduce of one worker count and algorithm, fitted: microseconds = a + bytes * b.
#[derive(Clone, Copy, Debug, Serialize)]
struct AlphaBetaFit {
    workers: usize,
    algo: &'static str,
    a_us: f64,
    b_us_per_byte: f64,
}

/// FLOP/s per core of `n` independent one-worker replicas training side by side, each on
/// `B / n` sequences (the share a worker of an `n`-worker run gets), never communicating: what
/// one "GPU" computes while the others compute too. Megatron's matrix-product count over the
/// mean of their median steps.
fn rate_per_core(base: &TrainConfig, corpus: &data::Corpus, n: usize) -> Result<f64, Error> {
    let mut one = base.clone();
    (one.parallel.workers, one.parallel.batch) = (1, base.parallel.batch / n);
    let flops = predict_case(&one, 1.0, None, 1).model_flops_per_step;
    // Rust note: scoped threads may borrow `one` and `corpus`; each returns its own summary
    let steps: Vec<Result<f64, Error>> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..n)
            .map(|_| s.spawn(|| train_once(&one, corpus).map(|s| s.step_ms_median)))
            .collect();
        runs.into_iter()
            .map(|h| h.join().expect("a replica panicked"))
            .collect()
    });
    let mean_ms = steps.into_iter().sum::<Result<f64, Error>>()? / n as f64;
    Ok(flops / (mean_ms / 1e3))
}

/// Trains `cfg` for its steps and returns its summary (no final evaluation).
fn train_once(cfg: &TrainConfig, corpus: &data::Corpus) -> Result<Summary, Error> {
    let opts = RunOptions {
        final_eval: false,
        ..RunOptions::default()
    };
    let init = train::initial_state(cfg);
    Ok(train::train(cfg, corpus, init, &opts, |_| Ok(()))?.summary)
}

fn calibrate(args: &ScaleArgs) -> Result<(), Error> {
    if args.workers.is_empty() || args.workers.contains(&0) {
        return Err(Error::Config(
            "--workers needs positive counts, e.g. --workers 1,2".into(),
        ));
    }
    if args.steps < 2 || args.rounds == 0 {
        return Err(Error::Config(
            "--steps must be at least 2 and --rounds at least 1 (e.g. --steps 20 --rounds 2)"
                .into(),
        ));
    }
    let mut base = TrainConfig::default();
    base.schedule.eval_every = 0;
    base.schedule.steps = args.steps;
    if let Some(&n) = args.workers.iter().find(|&&n| base.parallel.batch % n != 0) {
        return Err(Error::Config(format!(
            "--workers {n} does not divide the batch of {}: use counts dividing it (1, 2, 3, 4, 6, 12)",
            base.parallel.batch
        )));
    }
    let corpus = data::load(&base.data, base.seed)?;
    base.model.vocab_size = corpus.vocab.len();
    let all = cases(args, &base);
    for c in &all {
        c.cfg.validate()?;
        nanodist::config::check_memory(&c.cfg)?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "nanodist scale --calibrate: {} ({cores} cores), {} steps per run, {} round(s)",
        cpu_model(),
        args.steps,
        args.rounds
    );

    // 1. the "link": the all-reduce alone, per worker count and algorithm
    let mut fits: Vec<AlphaBetaFit> = Vec::new();
    for c in all.iter().filter(|c| c.cfg.parallel.workers > 1) {
        let (n, algo) = (c.cfg.parallel.workers, c.cfg.parallel.allreduce);
        if fits.iter().any(|f| f.workers == n && f.algo == algo.name()) {
            continue;
        }
        crate::allreduce::check_memory(n, crate::allreduce::FIT_LARGEST)?;
        let f = crate::allreduce::fit_alpha_beta(n, algo, 20);
        let fit = AlphaBetaFit {
            workers: n,
            algo: algo.name(),
            a_us: f.alpha_us,
            b_us_per_byte: f.beta_us_per_byte,
        };
        println!(
            "  all-reduce {} on {n} workers, timed alone: {:.1} us + bytes / {:.2} GB/s",
            algo.name(),
            fit.a_us,
            1e-3 / fit.b_us_per_byte
        );
        fits.push(fit);
    }

    // a first run warms the allocator and the caches, so no case pays for it
    let mut warm = base.clone();
    warm.schedule.steps = 3;
    train_once(&warm, &corpus)?;

    // 2. in each round: the "GPU" (FLOP/s per core with n cores busy), then every case run;
    // each keeps its fastest round
    let mut rates: Vec<(usize, f64)> = args.workers.iter().map(|&n| (n, 0.0)).collect();
    let mut best: Vec<Option<Summary>> = vec![None; all.len()];
    for round in 1..=args.rounds {
        for (n, rate) in rates.iter_mut() {
            let r = rate_per_core(&base, &corpus, *n)?;
            println!(
                "  round {round}: {n} independent replica(s) of batch {} side by side: {:.2} GFLOP/s per core",
                base.parallel.batch / *n,
                r / 1e9
            );
            *rate = rate.max(r);
        }
        for (c, b) in all.iter().zip(best.iter_mut()) {
            let s = train_once(&c.cfg, &corpus)?;
            println!(
                "  round {round}: nanodist train {:<56} {:8.2} ms per step",
                c.flags, s.step_ms_median
            );
            if b.as_ref()
                .is_none_or(|b| s.step_ms_median < b.step_ms_median)
            {
                *b = Some(s);
            }
        }
    }

    // 3. every case predicted from those figures alone
    let preds: Vec<Prediction> = all
        .iter()
        .map(|c| {
            let n = c.cfg.parallel.workers;
            let fit = fits
                .iter()
                .find(|f| f.workers == n && f.algo == c.cfg.parallel.allreduce.name());
            let rate = rates.iter().find(|r| r.0 == n).map_or(0.0, |r| r.1);
            predict_case(&c.cfg, rate, fit, cores)
        })
        .collect();
    let rows: Vec<Row> = (all.iter().zip(&preds).zip(best))
        .map(|((c, p), s)| {
            let s = s.expect("every case ran");
            let exposed = p.time.dp_s - p.time.dp_hidden_s;
            Row {
                flags: c.flags.clone(),
                workers: c.cfg.parallel.workers,
                predicted_ms: p.step_s * 1e3,
                predicted_compute_ms: p.time.compute_s * 1e3,
                predicted_exchange_ms: exposed * 1e3,
                measured_ms: s.step_ms_median,
                measured_compute_ms: s.compute_ms_median,
                measured_comm_ms: s.comm_ms_median,
                measured_wait_ms: s.wait_ms_median,
                ratio: p.step_s * 1e3 / s.step_ms_median,
            }
        })
        .collect();
    let md = markdown(&rows);
    println!("\n{md}");
    for (flag, why) in NOT_MODELLED {
        println!("  not modelled: {flag}: {why}");
    }
    if let Some(dir) = &args.out {
        crate::rundir::create_out_dir(dir)?;
        let json = serde_json::json!({
            "machine": cpu_model(),
            "cores": cores,
            "steps": args.steps,
            "rounds": args.rounds,
            "flops_per_core": rates.iter().map(|(n, r)| serde_json::json!({"busy_cores": n, "flops": r})).collect::<Vec<_>>(),
            "allreduce_fits": fits,
            "rows": rows,
            "not_modelled": NOT_MODELLED.iter().map(|(f, w)| serde_json::json!({"flag": f, "why": w})).collect::<Vec<_>>(),
        });
        write(
            dir,
            "calibration.json",
            &serde_json::to_string_pretty(&json).expect("serialises"),
        )?;
        write(dir, "calibration.md", &md)?;
        println!(
            "wrote calibration.json and calibration.md to {}",
            dir.display()
        );
    }
    Ok(())
}

/// The table predicted against measured, as markdown.
fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| nanodist train ... | predicted ms/step (compute + exchange) | measured ms/step (compute, comm, wait) | predicted / measured |\n|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| `{}` | {:.2} ({:.2} + {:.2}) | {:.2} ({:.2}, {:.2}, {:.2}) | {:.2} |\n",
            r.flags,
            r.predicted_ms,
            r.predicted_compute_ms,
            r.predicted_exchange_ms,
            r.measured_ms,
            r.measured_compute_ms,
            r.measured_comm_ms,
            r.measured_wait_ms,
            r.ratio
        );
    }
    s
}

/// The CPU's model name as `lscpu` shows it (Linux), or "unknown CPU".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
