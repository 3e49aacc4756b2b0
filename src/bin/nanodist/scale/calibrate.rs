//! `nanodist scale --calibrate`: the cost model fed this machine's figures, against nanodist's
//! own runs: data parallel, each ZeRO stage, tensor and pipeline parallel on threads.
//!
//! ```text
//!   all-reduce alone, timed      -> a + bytes * b        the "link"  (per n and algorithm)
//!   n replicas side by side      -> FLOP/s per core      the "GPU"   (n cores busy)
//!   predict(calibrated_cpu(..))  -> step time      vs    nanodist train ... -> step time
//!
//!   layout of each case, as the model reads it (2 workers):
//!     --zero 1|2|3       dp 2, zero stage s     1, 2: one all-reduce's bytes; 3: 1.5 of them
//!     --tp 2             tp 2, dp 1             4 all-reduces of b x T x C per layer, on the path
//!     --pp 2 --micro 4   pp 2, m 4, b = B/4     (m + p - 1) slots of t_mb + 2 sends per slot
//! ```
//!
//! The model is fed only figures measured outside the runs it predicts: the rate comes from
//! replicas that never communicate, the link from the all-reduce alone. The rates and the
//! configurations are measured in interleaved rounds (each keeping its fastest round, as
//! `nanodist bench` does), so a slow moment of a shared host lands on all of them rather than
//! on one.

use std::path::Path;

use nanodist::collective::Algorithm;
use nanodist::config::TrainConfig;
use nanodist::metrics::Summary;
use nanodist::parallel::buckets;
use nanodist::scale::{predict, Hardware, ModelShape, Precision, Prediction, ScaleConfig};
use nanodist::train::{self, RunOptions};
use nanodist::{data, Error};
use serde::Serialize;

/// One configuration of nanodist's own training, as the cost model sees it and as it ran.
#[derive(Clone, Debug, Serialize)]
struct Row {
    /// The flags that make it: `nanodist train --workers 2 --allreduce ring ...`.
    flags: String,
    workers: usize,
    predicted_ms: f64,
    /// Predicted compute, exposed exchange (DP not hidden + TP all-reduces + pipeline sends)
    /// and pipeline bubble; they add up to `predicted_ms`.
    predicted_compute_ms: f64,
    predicted_exchange_ms: f64,
    predicted_bubble_ms: f64,
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
const NOT_MODELLED: [(&str, &str); 4] = [
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
    (
        "--tp T, --pp P --micro M (their compute)",
        "a tensor-parallel worker multiplies C x C/T slices and a pipeline stage micro-batches \
         of B/M sequences: smaller matrix products than the B/N-sequence replicas the FLOP/s \
         per core is measured on, so the row's compute is that rate's, not theirs",
    ),
    (
        "--tp T, --pp P (their messages)",
        "the link is the fitted whole-gradient all-reduce, a + bytes b: the tensor-parallel \
         all-reduces of one B x T x C activation (4 per layer) and the pipeline's sends are \
         priced on its a and b, though a thread's small hand-off is a barrier and a copy whose \
         cost the fit's large-message points do not pin down",
    ),
];

fn cases(workers: &[usize], base: &TrainConfig) -> Vec<Case> {
    let mut out = Vec::new();
    for &n in workers {
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
        if n == 2 {
            // the other strategies on the same two workers, each with its own flags
            let other = |flags: &str, set: &dyn Fn(&mut TrainConfig)| {
                let mut cfg = base.clone();
                cfg.parallel.workers = n;
                set(&mut cfg);
                Case {
                    flags: format!("--workers {n} {flags}"),
                    cfg,
                }
            };
            for stage in 1..=3u8 {
                out.push(other(&format!("--zero {stage}"), &|c| {
                    c.parallel.zero = stage
                }));
            }
            out.push(other("--tp 2", &|c| c.parallel.tp = 2));
            out.push(other("--pp 2 --micro 4", &|c| {
                (c.parallel.pp, c.parallel.micro) = (2, 4);
            }));
        }
    }
    out
}

/// The model's prediction of one case: one "GPU" per worker, its FLOP/s measured, its link
/// the all-reduce fitted for this worker count and algorithm, laid out as the case runs
/// (its tensor and pipeline degrees, micro-batches and ZeRO stage): see [`scale_config`].
fn predict_case(
    cfg: &TrainConfig,
    flops_per_core: f64,
    fit: Option<&AlphaBetaFit>,
    cores: usize,
) -> Prediction {
    predict(&scale_config(cfg, flops_per_core, fit, cores))
        .expect("the worker counts divide the batch, checked before")
}

/// The cost model's configuration of one case: what [`predict_case`] predicts.
///
/// Overlap: the shared-memory and ring all-reduces are copies and sums done by the cores
/// themselves, not by a separate engine as a GPU's NVLink transfers are. With a core per
/// worker and no core to spare, an overlapped exchange takes its time from the backward it
/// runs beside, so the model hides none of it (`dp_overlap` 0); with spare cores, all it can.
///
/// Layout: `dp = N / (tp pp)` replicas; a pipeline's `--micro M` are its micro-batches, so
/// the model's micro-batch is `B / (dp M)` sequences (one micro-batch of `B / N` otherwise).
/// The tensor group's all-reduces and the pipeline's sends go over the same fitted link as
/// the gradients: with one bucket, the model's ring over 2 workers prices one all-reduce at
/// exactly the fit's `a + bytes b`, and one send at `a/2 + bytes b`.
fn scale_config(
    cfg: &TrainConfig,
    flops_per_core: f64,
    fit: Option<&AlphaBetaFit>,
    cores: usize,
) -> ScaleConfig {
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
    let p = &cfg.parallel;
    let dp = (n / (p.tp * p.pp)).max(1);
    let micro = if p.pp > 1 { p.micro.max(1) } else { 1 };
    ScaleConfig {
        model,
        hardware: Hardware::calibrated_cpu(flops_per_core, alpha_s, bytes_per_s, 8e9),
        gpus: n,
        gpus_per_node: n,
        tp: p.tp,
        pp: p.pp,
        zero: p.zero as usize,
        micro_batch: p.batch / (dp * micro),
        batch: cfg.parallel.batch,
        recompute: false,
        precision: Precision::Fp32,
        dp_overlap: if cfg.parallel.overlap && n < cores {
            1.0
        } else {
            0.0
        },
        ..ScaleConfig::default()
    }
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
    // Replica 0 runs on this thread, as every case's training does, the others beside it.
    // Rust note: scoped threads may borrow `one` and `corpus`; each returns its own result.
    let steps: Vec<Result<f64, Error>> = std::thread::scope(|s| {
        let others: Vec<_> = (1..n)
            .map(|_| s.spawn(|| train_once(&one, corpus).map(|s| s.step_ms_median)))
            .collect();
        let mine = train_once(&one, corpus).map(|s| s.step_ms_median);
        let others = others
            .into_iter()
            .map(|h| h.join().expect("a replica panicked"));
        std::iter::once(mine).chain(others).collect()
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

/// Runs the calibration: `workers` counts, `steps` per run, `rounds` interleaved; writes
/// calibration.json and calibration.md into `out` when given.
pub fn run(
    workers: &[usize],
    steps: usize,
    rounds: usize,
    out: Option<&Path>,
) -> Result<(), Error> {
    if workers.is_empty() || workers.contains(&0) {
        return Err(Error::Config(
            "--workers needs positive counts, e.g. --workers 1,2".into(),
        ));
    }
    if steps < 2 || rounds == 0 {
        return Err(Error::Config(
            "--steps must be at least 2 and --rounds at least 1 (e.g. --steps 20 --rounds 2)"
                .into(),
        ));
    }
    let mut base = TrainConfig::default();
    base.schedule.eval_every = 0;
    base.schedule.steps = steps;
    if let Some(&n) = workers.iter().find(|&&n| base.parallel.batch % n != 0) {
        return Err(Error::Config(format!(
            "--workers {n} does not divide the batch of {}: use counts dividing it (1, 2, 3, 4, 6, 12)",
            base.parallel.batch
        )));
    }
    let corpus = data::load(&base.data, base.seed)?;
    base.model.vocab_size = corpus.vocab.len();
    let all = cases(workers, &base);
    for c in &all {
        c.cfg.validate()?;
        nanodist::config::check_memory(&c.cfg)?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "nanodist scale --calibrate: {} ({cores} cores), {} steps per run, {} round(s)",
        cpu_model(),
        steps,
        rounds
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
    let mut rates: Vec<(usize, f64)> = workers.iter().map(|&n| (n, 0.0)).collect();
    let mut best: Vec<Option<Summary>> = vec![None; all.len()];
    for round in 1..=rounds {
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
            let t = &p.time;
            let exposed = t.dp_s - t.dp_hidden_s + t.tp_s + t.pp_s;
            Row {
                flags: c.flags.clone(),
                workers: c.cfg.parallel.workers,
                predicted_ms: p.step_s * 1e3,
                predicted_compute_ms: t.compute_s * 1e3,
                predicted_exchange_ms: exposed * 1e3,
                predicted_bubble_ms: t.bubble_s * 1e3,
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
    if let Some(dir) = out {
        crate::rundir::create_out_dir(dir)?;
        let json = serde_json::json!({
            "machine": cpu_model(),
            "cores": cores,
            "steps": steps,
            "rounds": rounds,
            "flops_per_core": rates.iter().map(|(n, r)| serde_json::json!({"busy_cores": n, "flops": r})).collect::<Vec<_>>(),
            "allreduce_fits": fits,
            "rows": rows,
            "not_modelled": NOT_MODELLED.iter().map(|(f, w)| serde_json::json!({"flag": f, "why": w})).collect::<Vec<_>>(),
        });
        let json = serde_json::to_string_pretty(&json).expect("serialises");
        nanodist::checkpoint::write_atomic(&dir.join("calibration.json"), json.as_bytes())?;
        nanodist::checkpoint::write_atomic(&dir.join("calibration.md"), md.as_bytes())?;
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
        "| nanodist train ... | predicted ms/step (compute + exchange + bubble) | measured ms/step (compute, comm, wait) | predicted / measured |\n|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| `{}` | {:.2} ({:.2} + {:.2} + {:.2}) | {:.2} ({:.2}, {:.2}, {:.2}) | {:.2} |\n",
            r.flags,
            r.predicted_ms,
            r.predicted_compute_ms,
            r.predicted_exchange_ms,
            r.predicted_bubble_ms,
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
