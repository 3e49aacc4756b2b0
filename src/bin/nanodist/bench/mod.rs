//! `nanodist bench`: how training speed scales with worker threads, against the machine's limits.
//!
//! For each worker count N the benchmark trains a few steps and reports:
//!
//! ```text
//!  strong scaling  global batch fixed (B = 12): each worker gets B/N sequences.
//!                  ideal: tokens/s grows N-fold.  efficiency = tps(N) / (N * tps(1))
//!  weak scaling    batch per worker fixed (6):  global batch = 6N.
//!                  ideal: same step time.       efficiency = tps(N) / (N * tps(1))
//!  independent     strong scaling's N workers and shares of the batch, but each trains
//!                  its own replica and never meets the others: no all-reduce, no waiting.
//!                  ideal: tokens/s grows N-fold.  The cores' own limit for data parallelism.
//!                  tokens/s is the sum of the workers' own (each from its mean step, timed
//!                  only while all N run); ms/step is the step that would give that sum.
//!  op parallel     ONE replica, N threads inside each matrix product and kernel,
//!                  global batch fixed: the alternative to data parallelism.
//!  tensor-parallel (with --tp T) strong scaling's N workers as N/T replicas of a T-way
//!                  tensor-parallel model: each block's matrices split over T workers,
//!                  collectives in every layer. efficiency against strong's 1 worker.
//!  tensor-parallel-sp  the same with sequence parallelism (`--tp T --sp`): reduce-scatters
//!                  and all-gathers in place of the all-reduces, activations outside the
//!                  split matrices 1/T as large.
//! ```
//!
//! The lessons of the comparison:
//! - independent against 1 worker: what N cores deliver side by side when nobody waits
//!   (they share caches, memory and, on a virtual machine, a host). Below N-fold, the
//!   hardware is the limit. Weak scaling's compute per worker against one worker alone,
//!   the same work per worker, measures that sharing directly.
//! - strong against independent at the same N: the price of synchronising, that is the
//!   all-reduce and the wait for the slowest worker of every step. Each worker's step time
//!   varies (the host, the scheduler), and a synchronous step lasts as long as the slowest
//!   draw among N, so the wait grows with N even on perfect hardware.
//! - op parallelism pays a fork and a join in every kernel (about 90 a step) and splits
//!   kernels too small to split well; data parallelism runs whole kernels per thread and
//!   synchronises once per step, at the all-reduce.
//!
//! Alongside: the compute / comm / wait split of each data-parallel point, the model
//! FLOPs utilisation (MFU) against an sgemm peak measured on the spot with the same
//! number of threads, and the communication time the alpha-beta model predicts from
//! the all-reduce fit, next to the one measured.
//!
//! Here: the sweep, and strong and weak scaling, which run the real training loop. In
//! `solo.rs`: op parallel and independent, which time a replica's steps outside it. In
//! `output.rs`: the table, the lessons in words under it, and `scaling.svg`.
//!
//! Strong scaling and independent split the global batch (`--batch`, 12) among the workers, so
//! they skip the counts it does not divide (8 and 16: `--batch 48` for a sweep to 16). Weak
//! scaling and op parallelism run at every count.

use std::path::PathBuf;
use std::time::Instant;

use nanodist::collective::Algorithm;
use nanodist::config::TrainConfig;
use nanodist::data;
use nanodist::parallel::buckets;
use nanodist::train::{self, RunOptions};
use nanodist::Error;

mod bucket_sweep;
mod output;
mod pipeline;
mod pipeline_speed;
mod point;
mod solo;
mod zero;

pub use output::table;
use output::{lessons, print_point, scaling_svg};
pub use point::Point;
use solo::Solo;

/// Flags of `nanodist bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Worker counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// Timed steps per point (after 5 warm-up steps).
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// Global batch for strong scaling, independent and op parallel. Strong scaling and
    /// independent split it among the workers and skip the counts it does not divide.
    #[arg(long, default_value_t = 12)]
    pub batch: usize,
    /// Sequences per worker for weak scaling.
    #[arg(long, default_value_t = 6)]
    pub per_worker: usize,
    /// Sweeps to run; each point reports its fastest (least disturbed) one. On a shared or
    /// virtual machine whose speed drifts, 3 or more keep a slow moment of the host from
    /// passing for a scaling loss.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// All-reduce algorithm.
    #[arg(long, value_parser = crate::cli::algorithm_parser(), default_value = "shared")]
    pub allreduce: Algorithm,
    /// Corpus: `tales` or a text file.
    #[arg(long, default_value = "tales")]
    pub data: String,
    /// Also measure tensor parallelism: at each worker count that T divides, the strong
    /// batch on N/T replicas of a T-way tensor-parallel model (`train --tp T`).
    #[arg(long, value_name = "T")]
    pub tp: Option<usize>,
    /// Pipeline stages: measure the pipeline instead (bubble against (P-1)/(M+P-1) for
    /// each --micro M, activation memory of GPipe, 1F1B and zb, speed against one worker
    /// and against P independent replicas, the machine's roof).
    #[arg(long, value_name = "P")]
    pub pp: Option<usize>,
    /// With --pp: the micro-batch counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4,6")]
    pub micro: Vec<usize>,
    /// ZeRO stages to compare side by side instead of the scaling sweep, e.g. `0,1,2,3`:
    /// interleaved rounds (`--rounds`) at each `--workers` count (bench/zero.rs).
    #[arg(long, value_delimiter = ',', value_name = "0,1,2,3")]
    pub zero: Vec<u8>,
    /// With --zero: where stages 2 and 3 run their block collectives, comma-separated
    /// (auto, thread, inline); each such stage runs once per mode in every round.
    #[arg(long, value_delimiter = ',', default_value = "auto",
          value_parser = crate::cli::zero_prefetch_parser())]
    pub zero_prefetch: Vec<nanodist::config::ZeroPrefetch>,
    /// Instead of the scaling sweep: step time against bucket size, with and without
    /// overlap, on this simulated link (ALPHA_US:GBPS); writes buckets.svg (bucket_sweep.rs).
    #[arg(long, value_name = "ALPHA_US:GBPS", value_parser = str::parse::<nanodist::collective::Link>)]
    pub link: Option<nanodist::collective::Link>,
    /// Where bench.json and scaling.svg go [default: a new runs/bench-YYYYmmdd-HHMMSS]; a
    /// directory that already holds a sweep is never overwritten.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl BenchArgs {
    /// Whether the global batch divides among `n` workers, as strong scaling and independent
    /// need; the counts it does not divide are skipped by both.
    fn splits_batch(&self, n: usize) -> bool {
        self.batch % n == 0
    }
}

/// Aggregate sgemm GFLOP/s of `threads` threads, each multiplying its own 512^3 matrices.
///
/// Each thread times 12 products one by one and keeps its fastest: a peak is what the cores
/// can do, and on a shared host an average would fold in whatever moment the host was having
/// (a slow moment made the peak look low and the MFU look high). The threads run at the same
/// time, so each one's fastest product ran beside the others' work.
pub fn sgemm_peak_gflops(threads: usize) -> f64 {
    let n = 512;
    let flops_per = 2.0 * (n * n * n) as f64;
    let reps = 12;
    let best_secs: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    use nanodist::model::matmul::{matmul, Mat, MatMut, Out};
                    let a = vec![1.0f32; n * n];
                    let b = vec![0.5f32; n * n];
                    let mut c = vec![0.0f32; n * n];
                    let mut best = f64::INFINITY;
                    for _ in 0..reps {
                        let start = Instant::now();
                        let (a, b) = (Mat::new(&a, n, n, n), Mat::new(&b, n, n, n));
                        matmul(MatMut::new(&mut c, n, n, n), a, b, Out::Set, 1.0, 1);
                        std::hint::black_box(&c);
                        best = best.min(start.elapsed().as_secs_f64());
                    }
                    best
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    best_secs.iter().map(|t| flops_per / t).sum::<f64>() / 1e9
}

/// Runs the sweep, prints the table, writes bench.json and scaling.svg.
pub fn run(args: &BenchArgs) -> Result<(), Error> {
    if let Some(pp) = args.pp {
        return pipeline::run(&pipeline::Options {
            pp,
            micro: &args.micro,
            steps: args.steps,
            rounds: args.rounds,
            batch: args.batch,
            data: &args.data,
            allreduce: args.allreduce,
            out: args.out.as_deref(),
        });
    }
    if args.workers.is_empty() || args.workers.contains(&0) {
        return Err(Error::Config(
            "--workers needs positive counts, e.g. --workers 1,2,4".into(),
        ));
    }
    if let Some(n) = (1..args.workers.len()).find_map(|i| {
        let n = args.workers[i];
        args.workers[..i].contains(&n).then_some(n)
    }) {
        return Err(Error::Config(format!(
            "--workers lists {n} twice; to measure each point more than once, use --rounds"
        )));
    }
    if args.steps == 0 || args.batch == 0 || args.per_worker == 0 || args.rounds == 0 {
        return Err(Error::Config(
            "--steps, --batch, --per-worker and --rounds must be at least 1".into(),
        ));
    }
    if !args.zero.is_empty() {
        return zero::run(&zero::Plan {
            stages: &args.zero,
            prefetch: &args.zero_prefetch,
            workers: &args.workers,
            rounds: args.rounds,
            steps: args.steps,
            batch: args.batch,
            allreduce: args.allreduce,
            data: &args.data,
            out: args.out.clone(),
        });
    }
    // Caps that keep every size below (steps + 5 warm-up, sequences per worker x workers) far
    // from overflow, and a sweep finite: the bench times tens of steps, not millions.
    const MAX_STEPS: usize = 100_000;
    const MAX_SEQUENCES: usize = 1 << 20;
    if args.steps > MAX_STEPS || args.rounds > MAX_STEPS {
        return Err(Error::Config(format!(
            "--steps {} and --rounds {} must be at most {MAX_STEPS} each: the bench times tens of steps",
            args.steps, args.rounds
        )));
    }
    let most_workers = args.workers.iter().copied().max().unwrap_or(1);
    let weak_batch = args.per_worker.checked_mul(most_workers);
    if args.batch > MAX_SEQUENCES || weak_batch.is_none_or(|b| b > MAX_SEQUENCES) {
        return Err(Error::Config(format!(
            "--batch {} or --per-worker {} x {most_workers} workers is over {MAX_SEQUENCES} sequences: use smaller values",
            args.batch, args.per_worker
        )));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut base = TrainConfig {
        data: args.data.clone(),
        ..TrainConfig::default()
    };
    base.parallel.allreduce = args.allreduce;
    base.schedule.eval_every = 0;
    let corpus = data::load(&base.data, base.seed)?;
    base.model.vocab_size = corpus.vocab.len();
    // every point's configuration, memory included, before anything runs: a point that cannot
    // work is found now, not after the points before it have run for minutes
    for &n in &args.workers {
        for (_, cfg) in point_configs(args, &base, n) {
            cfg.validate()?;
            nanodist::config::check_memory(&cfg)?;
        }
        // the predicted communication comes from an alpha-beta fit on n workers
        crate::allreduce::check_memory(n, crate::allreduce::FIT_LARGEST)?;
    }
    // then the output directory: a bad --out found only at the end would throw the sweep's
    // results away (or an earlier sweep's)
    let dir = match &args.out {
        Some(dir) => {
            if dir.join("bench.json").exists() {
                return Err(Error::Config(format!(
                    "{} already holds a sweep (bench.json): choose another --out, or leave it \
                     out for a new directory under runs/",
                    dir.display()
                )));
            }
            dir.clone()
        }
        None => crate::rundir::new_dated("bench-"),
    };
    crate::rundir::create_out_dir(&dir)?; // also reports a `runs/` that cannot be made
    if let Some(link) = args.link {
        base.parallel.batch = args.batch;
        bucket_sweep::sweep(&base, &corpus, link, args.steps, &dir)?;
        return Ok(());
    }
    println!(
        "nanodist bench: {} cores, worker counts {:?}, {} timed steps per point{}",
        cores,
        args.workers,
        args.steps,
        if args.workers.iter().any(|&w| w > cores) {
            " (points with more workers than cores are oversubscribed)"
        } else {
            ""
        }
    );
    // strong scaling and independent split the global batch: name the counts that it does
    // not divide, once, with a batch that every count divides
    let skipped: Vec<usize> = (args.workers.iter().copied())
        .filter(|&n| !args.splits_batch(n))
        .collect();
    if !skipped.is_empty() {
        let fits = args.workers.iter().fold(args.batch, |b, &n| lcm(b, n));
        println!(
            "  strong scaling and independent skip {skipped:?} workers: --batch {} does not divide \
             among them (--batch {fits} divides among every count listed)",
            args.batch
        );
    }
    // peaks[k]: the best sgemm peak of k busy threads over every point and round so far
    let mut peaks = vec![0.0f64; cores.min(*args.workers.iter().max().unwrap()) + 1];
    let mut points: Vec<Point> = Vec::new();
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("round {round} of {}", args.rounds);
        }
        for p in sweep(args, &base, &corpus, cores, &mut peaks)? {
            match points
                .iter_mut()
                .find(|q| q.mode == p.mode && q.workers == p.workers)
            {
                Some(q) => {
                    q.tokens_per_s_rounds.push(p.tokens_per_s);
                    if p.tokens_per_s > q.tokens_per_s {
                        let rounds = std::mem::take(&mut q.tokens_per_s_rounds);
                        *q = Point {
                            tokens_per_s_rounds: rounds,
                            ..p
                        };
                    }
                }
                None => points.push(p),
            }
        }
    }
    for p in &mut points {
        p.peak_gflops = peaks[p.workers.min(cores)];
        p.mfu = p.gflop_per_step / (p.step_ms / 1e3) / p.peak_gflops;
    }
    for mode in [
        "strong",
        "weak",
        "independent",
        "op-parallel",
        "tensor-parallel",
        "tensor-parallel-sp",
    ] {
        // tensor parallelism has no 1-worker point of its own: its 1 worker is strong's
        let base = if mode.starts_with("tensor-parallel") {
            "strong"
        } else {
            mode
        };
        let one = points
            .iter()
            .find(|p| p.mode == base && p.workers == 1)
            .map(|p| p.tokens_per_s);
        for p in points.iter_mut().filter(|p| p.mode == mode) {
            p.efficiency = one.map_or(f64::NAN, |t1| p.tokens_per_s / (p.workers as f64 * t1));
        }
    }
    println!("\n{}", table(&points));
    print!("{}", lessons(&points));
    let json = serde_json::json!({ "cores": cores, "points": points });
    let json = serde_json::to_string_pretty(&json).expect("serialises");
    nanodist::checkpoint::write_atomic(&dir.join("bench.json"), json.as_bytes())?;
    nanodist::checkpoint::write_atomic(
        &dir.join("scaling.svg"),
        scaling_svg(&points, cores).as_bytes(),
    )?;
    println!("wrote {0}/bench.json and {0}/scaling.svg", dir.display());
    Ok(())
}

/// The training runs of the data-parallel points at `n` workers: strong scaling where the
/// batch divides among them, and weak scaling.
fn point_configs(
    args: &BenchArgs,
    base: &TrainConfig,
    n: usize,
) -> Vec<(&'static str, TrainConfig)> {
    let run = |batch| {
        let mut cfg = base.clone();
        (cfg.parallel.workers, cfg.parallel.batch) = (n, batch);
        cfg.schedule.steps = args.steps + 5;
        cfg
    };
    let mut cfgs = Vec::new();
    if args.splits_batch(n) {
        cfgs.push(("strong", run(args.batch)));
    }
    cfgs.push(("weak", run(args.per_worker * n)));
    if let Some(tp) = args.tp.filter(|&tp| tp > 1 && n % tp == 0) {
        if args.batch % (n / tp) == 0 {
            let mut cfg = run(args.batch);
            cfg.parallel.tp = tp;
            // the same grid with sequence parallelism, where T divides a micro-batch's rows
            let mut sp = cfg.clone();
            sp.parallel.sp = true;
            cfgs.push(("tensor-parallel", cfg));
            if sp.validate().is_ok() {
                cfgs.push(("tensor-parallel-sp", sp));
            }
        }
    }
    cfgs
}

/// One sweep over the worker counts: every point measured once. Raises `peaks` (indexed by
/// the number of busy threads) to the sgemm peaks measured now; MFU is left for the caller.
fn sweep(
    args: &BenchArgs,
    base: &TrainConfig,
    corpus: &data::Corpus,
    cores: usize,
    peaks: &mut [f64],
) -> Result<Vec<Point>, Error> {
    let mut points = Vec::new();
    for &n in &args.workers {
        // more threads than cores cannot multiply faster than the cores: the peak of an
        // oversubscribed point is that of one thread per core
        let busy = n.min(cores);
        let peak = sgemm_peak_gflops(busy);
        peaks[busy] = peaks[busy].max(peak);
        println!("  sgemm peak with {busy} thread(s), measured now: {peak:.0} GFLOP/s");
        for (mode, cfg) in point_configs(args, base, n) {
            let batch = cfg.parallel.batch;
            let opts = RunOptions {
                final_eval: false,
                ..RunOptions::default()
            };
            let init = train::initial_state(&cfg);
            let s = train::train(&cfg, corpus, init, &opts, |_| Ok(()))?.summary;
            let flops = cfg.model.flops_per_step(cfg.tokens_per_step());
            points.push(Point {
                mode: mode.into(),
                workers: n,
                batch,
                tokens_per_s: s.tokens_per_s,
                step_ms: s.step_ms_median,
                efficiency: 0.0,
                compute_ms: s.compute_ms_median,
                comm_ms: s.comm_ms_median,
                wait_ms: s.wait_ms_median,
                predicted_comm_ms: predict_comm_ms(&cfg),
                gflop_per_step: flops / 1e9,
                peak_gflops: 0.0,
                mfu: 0.0,
                tokens_per_s_rounds: vec![s.tokens_per_s],
                oversubscribed: n > cores,
                cores,
                worker_step_ms: Vec::new(),
            });
            print_point(points.last().unwrap());
        }
        let solo = Solo {
            base,
            corpus,
            batch: args.batch,
            steps: args.steps,
            cores,
        };
        if args.splits_batch(n) {
            let p = solo.independent(n)?;
            print_point(&p);
            points.push(p);
        }
        // one replica of the whole batch: any thread count will do
        let p = solo.op_parallel(n)?;
        print_point(&p);
        points.push(p);
    }
    Ok(points)
}

/// Per-step communication predicted by the alpha-beta model: one all-reduce per bucket.
fn predict_comm_ms(cfg: &TrainConfig) -> f64 {
    if cfg.parallel.workers == 1 {
        return 0.0;
    }
    if cfg.parallel.tp > 1 {
        return f64::NAN; // the alpha-beta fit is of the data-parallel all-reduce alone
    }
    let params = cfg.model.num_params();
    let fit = crate::allreduce::fit_alpha_beta(cfg.parallel.workers, cfg.parallel.allreduce, 20);
    let elem = if cfg.parallel.deterministic { 8 } else { 4 };
    buckets::plan(params, buckets::floats_for_kb(cfg.parallel.bucket_kb))
        .iter()
        .map(|r| fit.predict_us(r.len() * elem))
        .sum::<f64>()
        / 1e3
}

/// Least common multiple.
fn lcm(a: usize, b: usize) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    a / gcd(a, b) * b
}
