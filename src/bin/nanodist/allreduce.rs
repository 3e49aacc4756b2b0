//! `nanodist allreduce`: time each all-reduce, compare it with the machine's copy bandwidth,
//! and fit the alpha-beta model.
//!
//! ```text
//!   cargo run --release -- allreduce --workers 2 --floats 804096 --algo all --iters 50
//! ```
//!
//! How it measures: the worker threads stay alive for a whole measurement; each iteration
//! starts with a barrier, each worker times its own call, and the iteration counts as the
//! slowest worker's time. The median over `--iters` iterations (after a few warm-up ones)
//! is reported. The buffers are not rewritten between iterations, so they stay in cache as
//! they would after `backward`; values grow (or become inf), which does not change the
//! speed of float addition.
//!
//! - **bus bandwidth** (the nccl-tests convention): `busbw = bytes / time * 2(N-1)/N`, the
//!   rate each worker's "link" would need in a bandwidth-optimal algorithm. Comparable
//!   across N.
//! - **roof**: the least memory traffic an in-place all-reduce can do. Whatever the
//!   algorithm, every worker's buffer must be read once and rewritten once, so each worker
//!   moves at least `bytes` in and `bytes` out. The roof times exactly that: every worker
//!   reads and rewrites its own buffer in place (`x += 1`), all at the same time, and is
//!   expressed as the bus bandwidth an all-reduce of that duration would show:
//!   `roof = bytes / t_roof * 2(N-1)/N`. An all-reduce cannot beat it by much (its data sits
//!   in *other* cores' caches too), so "% of roof" is how close an algorithm comes to the
//!   machine's memory system. (A plain copy is no roof: it also reads every destination line
//!   before overwriting it, about 1.5x the traffic.)
//! - **alpha, beta**: least-squares fit of `time = alpha + beta * bytes` over a sweep of
//!   sizes (1K..4M floats), weighted by `1/time^2` so the small sizes (which decide alpha)
//!   count as much as the big ones (which decide beta).

use std::time::Instant;

use nanodist::collective::{group, Algorithm, Comm, Link};
use nanodist::Error;

/// Arguments of `nanodist allreduce`.
#[derive(clap::Args, Debug, Clone)]
pub struct AllreduceArgs {
    /// Worker threads in the group.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// f32 elements per worker (default: the model's 804,096 gradients, 3.2 MB).
    #[arg(long, default_value_t = 804_096)]
    pub floats: usize,
    /// Algorithm: naive, ring, tree, shared, or all.
    #[arg(long, default_value = "all")]
    pub algo: String,
    /// Timed iterations per measurement (after warm-up); the median is reported.
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Print one JSON object per (algorithm, size) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Time the all-reduces on a simulated link (ALPHA_US:GBPS, e.g. 50:0.125): each lasts
    /// at least its alpha-beta time there. Times --floats only (no sweep, no fit).
    #[arg(long, value_name = "ALPHA_US:GBPS", value_parser = str::parse::<Link>)]
    pub link: Option<Link>,
}

/// The alpha-beta model of one algorithm: `time_us = alpha_us + beta_us_per_byte * bytes`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlphaBeta {
    /// Fixed cost of one all-reduce, whatever its size (microseconds).
    pub alpha_us: f64,
    /// Cost per byte of buffer (microseconds per byte).
    pub beta_us_per_byte: f64,
}

impl AlphaBeta {
    /// Predicted time of one all-reduce of `bytes` bytes, in microseconds.
    pub fn predict_us(&self, bytes: usize) -> f64 {
        self.alpha_us + self.beta_us_per_byte * bytes as f64
    }

    /// Weighted least-squares fit to `(bytes, microseconds)` points (weights `1/us^2`).
    pub fn fit(points: &[(f64, f64)]) -> AlphaBeta {
        let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &(x, y) in points {
            let w = 1.0 / (y * y).max(1e-12);
            sw += w;
            sx += w * x;
            sy += w * y;
            sxx += w * x * x;
            sxy += w * x * y;
        }
        let det = sw * sxx - sx * sx;
        if points.len() < 2 || det.abs() < 1e-300 {
            let y = points.first().map_or(0.0, |p| p.1);
            return AlphaBeta {
                alpha_us: y,
                beta_us_per_byte: 0.0,
            };
        }
        let beta = (sw * sxy - sx * sy) / det;
        AlphaBeta {
            alpha_us: (sy - beta * sx) / sw,
            beta_us_per_byte: beta,
        }
    }
}

/// Median time, in microseconds, of one all-reduce of `floats` f32 across `workers`
/// threads with `algo`, over `iters` iterations after warm-up.
///
/// # Panics
/// If `workers`, `floats` or `iters` is 0 (`run` checks its arguments first).
pub fn time_allreduce(workers: usize, floats: usize, algo: Algorithm, iters: usize) -> f64 {
    time_allreduce_on(workers, floats, algo, iters, None)
}

/// [`time_allreduce`] on a simulated `link` (`None`: memory speed).
pub fn time_allreduce_on(
    workers: usize,
    floats: usize,
    algo: Algorithm,
    iters: usize,
    link: Option<Link>,
) -> f64 {
    median(time_each(workers, floats, iters, |comm, buf, _| {
        comm.set_link(link);
        comm.all_reduce(buf, algo)
            .expect("no worker fails in a benchmark");
    }))
}

/// The model time of one all-reduce of `floats` f32 on `link`, microseconds: the
/// algorithm's schedule, message by message (shared memory: the ring's).
fn model_us(link: Link, workers: usize, floats: usize, algo: Algorithm) -> f64 {
    let s = match algo.schedule(workers, floats) {
        Some(sched) => link.schedule_s(&sched, 4),
        None => link.ring_all_reduce_s(workers, (4 * floats) as f64),
    };
    s * 1e6
}

/// `nanodist allreduce --link`: each algorithm at --floats on the link, beside its model.
fn run_on_link(args: &AllreduceArgs, algos: &[Algorithm], link: Link) {
    let n = args.workers;
    if !args.json {
        println!(
            "all-reduce of {} f32 ({:.2} MB) across {n} workers on link {link} ({} us, {} GB/s): median of {} runs",
            args.floats,
            (4 * args.floats) as f64 / 1e6,
            link.alpha_us,
            link.gb_per_s,
            args.iters
        );
        println!(
            "{:<8} {:>12} {:>12} {:>8}",
            "algo", "median us", "model us", "ratio"
        );
    }
    for &algo in algos {
        let t = time_allreduce_on(n, args.floats, algo, args.iters, Some(link));
        let m = model_us(link, n, args.floats, algo);
        if args.json {
            let line = serde_json::json!({
                "algo": algo.name(), "workers": n, "floats": args.floats,
                "bytes": 4 * args.floats, "median_us": t, "model_us": m,
                "link": link.to_string(), "iters": args.iters,
            });
            println!("{line}");
        } else {
            println!("{:<8} {:>12.1} {:>12.1} {:>8.3}", algo.name(), t, m, t / m);
        }
    }
}

/// Fits the alpha-beta model of `algo` on `workers` threads from a sweep of sizes.
pub fn fit_alpha_beta(workers: usize, algo: Algorithm, iters: usize) -> AlphaBeta {
    let points: Vec<(f64, f64)> = SWEEP
        .iter()
        .map(|&f| ((4 * f) as f64, time_allreduce(workers, f, algo, iters)))
        .collect();
    AlphaBeta::fit(&points)
}

/// Refuses timing all-reduces of up to `largest` floats on `workers` threads where that would
/// not fit in memory (9,999 workers at the fit's 4M floats need 469 GiB), rather than swap
/// for an hour. Each worker holds a buffer and a scratch of that size, and a message-passing
/// algorithm up to one more buffer's worth in flight.
pub fn check_memory(workers: usize, largest: usize) -> Result<(), Error> {
    let need = workers as f64 * largest as f64 * 3.0 * 4.0;
    match nanodist::config::over_budget(need) {
        Some(avail) => {
            let gib = |b: f64| b / (1u64 << 30) as f64;
            Err(Error::Config(format!(
                "--workers {workers} would need about {:.1} GiB (the alpha-beta fit times \
                 all-reduces of up to {largest} floats on every worker) but {:.1} GiB is \
                 available: use fewer --workers",
                gib(need),
                gib(avail)
            )))
        }
        None => Ok(()),
    }
}

/// The largest all-reduce [`fit_alpha_beta`] times, in floats.
pub const FIT_LARGEST: usize = SWEEP[SWEEP.len() - 1];

/// Sizes of the sweep, in floats: 1K, 4K, ..., 4M.
const SWEEP: [usize; 7] = [
    1 << 10,
    1 << 12,
    1 << 14,
    1 << 16,
    1 << 18,
    1 << 20,
    1 << 22,
];

/// Runs `op(comm, buf, scratch)` on `workers` threads, `iters` timed times each after a
/// warm-up; returns each iteration's slowest worker time in microseconds.
fn time_each(
    workers: usize,
    floats: usize,
    iters: usize,
    op: impl Fn(&mut Comm, &mut [f32], &mut [f32]) + Sync,
) -> Vec<f64> {
    assert!(
        workers > 0 && floats > 0 && iters > 0,
        "time_each: all sizes must be > 0"
    );
    let warmup = (iters / 10).max(3);
    let per_worker: Vec<Vec<f64>> = std::thread::scope(|s| {
        let op = &op;
        let handles: Vec<_> = group(workers)
            .into_iter()
            .map(|mut comm| {
                s.spawn(move || {
                    let mut buf = vec![1.0f32; floats];
                    let mut scratch = vec![0.0f32; floats];
                    let mut times = Vec::with_capacity(iters);
                    for i in 0..warmup + iters {
                        comm.barrier().expect("no worker fails in a benchmark");
                        let t = Instant::now();
                        op(&mut comm, &mut buf, &mut scratch);
                        if i >= warmup {
                            times.push(t.elapsed().as_secs_f64() * 1e6);
                        }
                    }
                    times
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("benchmark worker"))
            .collect()
    });
    (0..iters)
        .map(|i| per_worker.iter().map(|t| t[i]).fold(0.0, f64::max))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The most worker threads `nanodist allreduce` starts.
const MAX_WORKERS: usize = 1024;

/// The largest buffer it times, in floats per worker (4 GiB).
const MAX_FLOATS: usize = 1 << 30;

/// The most timed iterations per measurement: the sweep times 7 or 8 sizes per algorithm,
/// so 10,000 iterations of the 16 MB one already take minutes.
const MAX_ITERS: usize = 10_000;

/// What `nanodist allreduce --workers 1` prints: one worker has nothing to exchange, so
/// each algorithm takes no time and has no bandwidth (`null` in JSON, never 0/0).
fn one_worker(args: &AllreduceArgs, algos: &[Algorithm]) {
    if args.json {
        for algo in algos {
            let line = serde_json::json!({
                "algo": algo.name(), "workers": 1, "floats": args.floats,
                "bytes": 4 * args.floats, "median_us": 0.0, "busbw_gbs": null,
                "roof_gbs": null, "pct_of_roof": null, "iters": 0,
                "alpha_us": null, "beta_us_per_byte": null,
            });
            println!("{line}");
        }
    } else {
        println!(
            "all-reduce of {} f32 across 1 worker: nothing to exchange (one worker's sum is \
             its own buffer), so nothing is timed; use --workers 2 or more to compare the \
             algorithms",
            args.floats
        );
    }
}

/// One measured row.
struct Row {
    algo: Algorithm,
    floats: usize,
    median_us: f64,
    roof_gbs: f64,
}

/// `nanodist allreduce`: see the module docs.
pub fn run(args: &AllreduceArgs) -> Result<(), Error> {
    if args.workers == 0 {
        return Err(Error::Config(
            "--workers must be at least 1 (try --workers 2)".into(),
        ));
    }
    if args.floats == 0 || args.iters == 0 {
        return Err(Error::Config(format!(
            "--floats and --iters must be at least 1 (got --floats {} --iters {}); \
             the defaults are 804096 and 50",
            args.floats, args.iters
        )));
    }
    // (--workers is capped after the memory check, whose message says more: how much)
    for (flag, value, max) in [
        ("--floats", args.floats, MAX_FLOATS),
        ("--iters", args.iters, MAX_ITERS),
    ] {
        if value > max {
            return Err(Error::Config(format!(
                "{flag} {value} is more than nanodist allreduce measures ({max}): use {flag} \
                 {max} or less"
            )));
        }
    }
    let algos: Vec<Algorithm> = if args.algo == "all" {
        Algorithm::ALL.to_vec()
    } else {
        match args.algo.parse::<Algorithm>() {
            Ok(a) => vec![a],
            Err(_) => {
                return Err(Error::Config(format!(
                    "unknown --algo '{}': use one of naive, ring, tree, shared, or all",
                    args.algo
                )))
            }
        }
    };
    let (n, iters) = (args.workers, args.iters);
    if n == 1 {
        // One worker's sum is its own buffer: there is nothing to time, and the bus
        // bandwidth's factor 2(N-1)/N is 0, so every bandwidth would be 0 or 0/0.
        one_worker(args, &algos);
        return Ok(());
    }
    if let Some(link) = args.link {
        check_memory(n, args.floats)?;
        run_on_link(args, &algos, link);
        return Ok(());
    }
    let mut sizes = SWEEP.to_vec();
    if !sizes.contains(&args.floats) {
        sizes.push(args.floats);
        sizes.sort_unstable();
    }
    check_memory(n, sizes.last().copied().unwrap_or(args.floats))?;
    if n > MAX_WORKERS {
        return Err(Error::Config(format!(
            "--workers {n} is more than nanodist allreduce measures ({MAX_WORKERS}): use \
             --workers {MAX_WORKERS} or less"
        )));
    }
    let roofs: Vec<f64> = sizes
        .iter()
        .map(|&f| {
            let t = median(time_each(n, f, iters, |_, buf, _| {
                for x in buf.iter_mut() {
                    *x += 1.0;
                }
                std::hint::black_box(buf);
            }));
            (4 * f) as f64 / t / 1e3 * 2.0 * (n as f64 - 1.0) / n as f64
        })
        .collect();
    let mut rows = Vec::new();
    for &algo in &algos {
        for (&floats, &roof_gbs) in sizes.iter().zip(&roofs) {
            let median_us = time_allreduce(n, floats, algo, iters);
            rows.push(Row {
                algo,
                floats,
                median_us,
                roof_gbs,
            });
        }
    }
    let fit = |algo: Algorithm| {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.algo == algo && SWEEP.contains(&r.floats))
            .map(|r| ((4 * r.floats) as f64, r.median_us))
            .collect();
        AlphaBeta::fit(&pts)
    };
    let busbw = |r: &Row| {
        let bytes = (4 * r.floats) as f64;
        bytes / r.median_us / 1e3 * 2.0 * (n as f64 - 1.0) / n as f64
    };
    if args.json {
        for r in &rows {
            let ab = fit(r.algo);
            let line = serde_json::json!({
                "algo": r.algo.name(), "workers": n, "floats": r.floats, "bytes": 4 * r.floats,
                "median_us": r.median_us, "busbw_gbs": busbw(r), "roof_gbs": r.roof_gbs,
                "pct_of_roof": 100.0 * busbw(r) / r.roof_gbs, "iters": iters,
                "alpha_us": ab.alpha_us, "beta_us_per_byte": ab.beta_us_per_byte,
            });
            println!("{line}");
        }
        return Ok(());
    }
    let at = sizes
        .iter()
        .position(|&f| f == args.floats)
        .expect("added above");
    println!(
        "all-reduce of {} f32 ({:.2} MB) across {n} workers: median of {iters} runs",
        args.floats,
        (4 * args.floats) as f64 / 1e6
    );
    if n > 1 {
        let bytes = (4 * args.floats) as f64;
        println!(
            "roof: every worker reading and rewriting its own {:.2} MB in place takes {:.1} us \
             (the least traffic of any in-place all-reduce): {:.1} GB/s as bus bandwidth",
            bytes / 1e6,
            bytes / roofs[at] / 1e3 * 2.0 * (n as f64 - 1.0) / n as f64,
            roofs[at]
        );
    }
    println!(
        "{:<8} {:>10} {:>11} {:>8} {:>10} {:>14}",
        "algo", "median us", "busbw GB/s", "% roof", "alpha us", "1/beta GB/s"
    );
    for r in rows.iter().filter(|r| r.floats == args.floats) {
        let ab = fit(r.algo);
        // A fit over noisy times can come out with a negative slope or intercept: that is
        // no bandwidth or latency at all, so it shows as "-" rather than as a number.
        let shown = |x: f64, prec: usize| match x.is_finite() && x > 0.0 {
            true => format!("{x:.prec$}"),
            false => "-".to_string(),
        };
        let pct = match r.roof_gbs > 0.0 {
            true => format!("{:.0}%", 100.0 * busbw(r) / r.roof_gbs),
            false => "-".to_string(),
        };
        println!(
            "{:<8} {:>10.1} {:>11.2} {:>8} {:>10} {:>14}",
            r.algo.name(),
            r.median_us,
            busbw(r),
            pct,
            shown(ab.alpha_us, 2),
            shown(1e-3 / ab.beta_us_per_byte, 2)
        );
    }
    println!(
        "(alpha and beta fitted over {} .. {} floats; busbw = bytes/time * 2(N-1)/N)",
        SWEEP[0], SWEEP[6]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_beta_fits_a_line_exactly() {
        let fit = AlphaBeta::fit(&[(1000.0, 3.0), (2000.0, 5.0), (4000.0, 9.0)]);
        assert!((fit.alpha_us - 1.0).abs() < 1e-9, "{fit:?}");
        assert!((fit.beta_us_per_byte - 0.002).abs() < 1e-12, "{fit:?}");
        assert!((fit.predict_us(3000) - 7.0).abs() < 1e-9);
    }
}
