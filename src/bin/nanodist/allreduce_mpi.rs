//! `mpirun -n R nanodist allreduce`: the all-reduce across MPI processes, in the same table
//! as the threads' (`allreduce.rs`), for the two ways thread 0 of each process can sum
//! across processes: MPI's own `MPI_Allreduce` and nanodist's ring over MPI messages.
//!
//! ```text
//!   mpirun --oversubscribe -n 2 target/release/nanodist allreduce --floats 804096
//!
//!   every rank: for each algorithm, size: barrier, time one all-reduce, x (warm-up + iters)
//!               the iteration's time = the slowest rank's (gathered)
//!   rank 0:     median, busbw = bytes/time * 2(R-1)/R, % of roof, alpha-beta fit; prints
//! ```
//!
//! One thread per process: this measures the link between processes alone (a training run
//! adds the threads' shared-memory sum before it and the broadcast after it).

use std::time::Instant;

use nanodist::collective::mpi::Mpi;
use nanodist::collective::{CrossAlgorithm, Elems};
use nanodist::Error;

use crate::allreduce::{AllreduceArgs, AlphaBeta};

/// Sizes of the sweep, in floats: 1K, 4K, ..., 4M (as for threads).
const SWEEP: [usize; 7] = [
    1 << 10,
    1 << 12,
    1 << 14,
    1 << 16,
    1 << 18,
    1 << 20,
    1 << 22,
];

/// Each iteration's slowest-rank time in microseconds of `op` on a buffer of `floats`.
fn time_each(mpi: &Mpi, floats: usize, iters: usize, mut op: impl FnMut(&mut [f32])) -> Vec<f64> {
    let warmup = (iters / 10).max(3);
    let mut buf = vec![1.0f32; floats];
    let mut mine = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        mpi.barrier();
        let t = Instant::now();
        op(&mut buf);
        if i >= warmup {
            mine.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    mine.iter()
        .map(|t| {
            let all = mpi.all_gather(t.to_bits());
            all.into_iter().map(f64::from_bits).fold(0.0, f64::max)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `nanodist allreduce` under mpirun: see the module docs.
pub fn run(args: &AllreduceArgs, mpi: &Mpi) -> Result<(), Error> {
    let algos: Vec<CrossAlgorithm> = match args.algo.as_str() {
        "all" => CrossAlgorithm::ALL.to_vec(),
        name => vec![name
            .parse::<CrossAlgorithm>()
            .map_err(|e| Error::Config(format!("--algo under mpirun: {e}, or all")))?],
    };
    if args.floats == 0 || args.iters == 0 || args.iters > 10_000 || args.floats > 1 << 28 {
        return Err(Error::Config(
            "--floats must be 1 .. 268435456 and --iters 1 .. 10000 (the defaults are 804096 and 50)".into(),
        ));
    }
    let (n, iters) = (mpi.size(), args.iters);
    let mut sizes = SWEEP.to_vec();
    if !sizes.contains(&args.floats) {
        sizes.push(args.floats);
        sizes.sort_unstable();
    }
    let factor = 2.0 * (n as f64 - 1.0) / n as f64;
    let gbs = |floats: usize, us: f64| (4 * floats) as f64 / us / 1e3 * factor;
    let roofs: Vec<f64> = sizes
        .iter()
        .map(|&f| {
            let t = median(time_each(mpi, f, iters, |buf| {
                buf.iter_mut().for_each(|x| *x += 1.0);
                std::hint::black_box(buf);
            }));
            gbs(f, t)
        })
        .collect();
    let mut rows = Vec::new(); // (algorithm, floats, median us)
    for &algo in &algos {
        let link = mpi.link(algo);
        for &f in &sizes {
            let t = median(time_each(mpi, f, iters, |buf| {
                link.lock()
                    .all_reduce(Elems::F32(buf))
                    .expect("MPI ends the job rather than fail a collective");
            }));
            rows.push((algo, f, t));
        }
    }
    if mpi.rank() != 0 {
        return Ok(());
    }
    let fit = |algo: CrossAlgorithm| {
        let pts: Vec<(f64, f64)> = (rows.iter())
            .filter(|r| r.0 == algo && SWEEP.contains(&r.1))
            .map(|r| ((4 * r.1) as f64, r.2))
            .collect();
        AlphaBeta::fit(&pts)
    };
    let at = sizes
        .iter()
        .position(|&f| f == args.floats)
        .expect("added above");
    if args.json {
        for &(algo, floats, us) in &rows {
            let ab = fit(algo);
            let roof = roofs[sizes.iter().position(|&f| f == floats).expect("a size")];
            let line = serde_json::json!({
                "algo": format!("mpi-{}", algo.name()), "transport": "mpi", "processes": n,
                "floats": floats, "bytes": 4 * floats, "median_us": us,
                "busbw_gbs": gbs(floats, us), "roof_gbs": roof,
                "pct_of_roof": 100.0 * gbs(floats, us) / roof, "iters": iters,
                "alpha_us": ab.alpha_us, "beta_us_per_byte": ab.beta_us_per_byte,
            });
            println!("{line}");
        }
        return Ok(());
    }
    println!(
        "all-reduce of {} f32 ({:.2} MB) across {n} MPI processes (one thread each): median of {iters} runs",
        args.floats,
        (4 * args.floats) as f64 / 1e6
    );
    println!(
        "roof: every process reading and rewriting its own buffer in place: {:.1} GB/s as bus bandwidth",
        roofs[at]
    );
    println!(
        "{:<8} {:>10} {:>11} {:>8} {:>10} {:>14}",
        "algo", "median us", "busbw GB/s", "% roof", "alpha us", "1/beta GB/s"
    );
    let shown = |x: f64, prec: usize| match x.is_finite() && x > 0.0 {
        true => format!("{x:.prec$}"),
        false => "-".to_string(),
    };
    for &(algo, floats, us) in rows.iter().filter(|r| r.1 == args.floats) {
        let ab = fit(algo);
        println!(
            "{:<8} {:>10.1} {:>11.2} {:>7.0}% {:>10} {:>14}",
            algo.name(),
            us,
            gbs(floats, us),
            100.0 * gbs(floats, us) / roofs[at],
            shown(ab.alpha_us, 2),
            shown(1e-3 / ab.beta_us_per_byte, 2)
        );
    }
    println!(
        "(mpi: MPI_Allreduce; ring: nanodist's ring.rs over MPI_Isend/MPI_Mrecv; alpha and beta fitted over {} .. {} floats)",
        SWEEP[0], SWEEP[6]
    );
    Ok(())
}
