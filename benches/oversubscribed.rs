//! Oversubscription: does a run slow only in proportion to the CPU it gets?
//!
//! ```text
//! cargo bench --bench oversubscribed
//! OVERSUB_STEPS=30 OVERSUB_ROUNDS=3 OVERSUB_OTHER=path/to/other/nanodist cargo bench --bench oversubscribed
//! ```
//!
//! Runs the `nanodist` binary five ways, interleaved round by round so that the host's
//! changing speed hits each alike:
//!
//! ```text
//!   alone    nanodist --workers 12 --batch 24 --steps N --quiet     (2 sequences a worker)
//!   busy     the same, with two busy processes beside it (each spins on a core)
//!   two      nanodist --workers 2  --batch 24 --steps N --quiet
//!   alone48  nanodist --workers 12 --batch 48 --steps N --quiet     (4 sequences a worker)
//!   two48    nanodist --workers 2  --batch 48 --steps N --quiet
//!
//!   contention     = tokens/s alone / tokens/s busy      (2 busy + 1 run on 2 cores: ~1.5 fair)
//!   oversubscribed = tokens/s of 12 workers / of 2 workers, alone, at each batch
//! ```
//!
//! tokens/s here is the run's tokens over the sum of its step times (`metrics.jsonl`, the
//! first step left out), so start-up and evaluation do not count, and every slow step does.
//! `OVERSUB_OTHER` names a second binary measured the same way in the same rounds, for an A/B comparison.
//! The busy processes are this benchmark re-run with `OVERSUB_BUSY=1`. It is a benchmark,
//! not a test: it prints ratios and never fails on them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

fn main() {
    if std::env::var_os("OVERSUB_BUSY").is_some() {
        busy_forever();
    }
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (steps, rounds) = (env("OVERSUB_STEPS", 20), env("OVERSUB_ROUNDS", 2));
    let mut bins = vec![("new", PathBuf::from(env!("CARGO_BIN_EXE_nanodist")))];
    if let Some(other) = std::env::var_os("OVERSUB_OTHER") {
        bins.push(("other", PathBuf::from(other)));
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("oversubscribed: {steps} steps, {rounds} rounds, {cores} cores");
    // results[bin][case]: tokens/s of each round
    let mut results = vec![vec![Vec::new(); CASES.len()]; bins.len()];
    for round in 0..rounds {
        for (b, (name, bin)) in bins.iter().enumerate() {
            for (c, (case, workers, busy, batch)) in CASES.iter().enumerate() {
                let hogs: Vec<Child> = (0..*busy).map(|_| spawn_busy()).collect();
                let tps = run(bin, *workers, *batch, steps);
                for mut h in hogs {
                    let _ = h.kill();
                    let _ = h.wait();
                }
                println!(
                    "  round {round} {name:<6} {case:<7} {workers:>2} workers, batch {batch}: {tps:>8.0} tokens/s"
                );
                results[b][c].push(tps);
            }
        }
    }
    for (b, (name, _)) in bins.iter().enumerate() {
        let m: Vec<f64> = results[b].iter().map(|r| median(r)).collect();
        let (alone, busy, two, alone48, two48) = (m[0], m[1], m[2], m[3], m[4]);
        println!(
            "{name}: 12 workers alone / beside 2 busy processes: {:.2}x slower (medians: {alone:.0}, {busy:.0})",
            alone / busy
        );
        println!(
            "{name}: 12 workers reach {:.0}% of 2 workers' tokens/s at batch 24, {:.0}% at batch 48 \
             (medians: {alone:.0} / {two:.0}, {alone48:.0} / {two48:.0})",
            100.0 * alone / two,
            100.0 * alone48 / two48
        );
    }
}

/// (name, workers, busy processes beside the run, global batch in sequences)
const CASES: [(&str, usize, usize, usize); 5] = [
    ("alone", 12, 0, 24),
    ("busy", 12, 2, 24),
    ("two", 2, 0, 24),
    ("alone48", 12, 0, 48),
    ("two48", 2, 0, 48),
];

/// One run; tokens/s over the sum of its step times.
fn run(bin: &Path, workers: usize, batch: usize, steps: usize) -> f64 {
    let out = std::env::temp_dir().join(format!("nanodist-oversub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(bin)
        .args([
            "--workers",
            &workers.to_string(),
            "--batch",
            &batch.to_string(),
        ])
        .args(["--steps", &steps.to_string(), "--quiet", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run nanodist");
    assert!(status.success(), "{} failed", bin.display());
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics.jsonl");
    let (mut tokens, mut seconds) = (0.0, 0.0);
    // the first step warms caches and allocators: leave it out
    for line in metrics.lines().skip(1) {
        let m: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        // evaluation lines (`{"step", "val_loss"}`) carry no step time
        let Some(ms) = m["step_ms"].as_f64() else {
            continue;
        };
        // `batch` sequences of 64 tokens a step
        tokens += (batch * 64) as f64;
        seconds += ms / 1e3;
    }
    let _ = std::fs::remove_dir_all(&out);
    tokens / seconds
}

fn spawn_busy() -> Child {
    Command::new(std::env::current_exe().expect("own path"))
        .env("OVERSUB_BUSY", "1")
        .spawn()
        .expect("spawn a busy process")
}

/// A busy process: one thread that never waits, until it is killed.
fn busy_forever() -> ! {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
