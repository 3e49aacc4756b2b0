//! `nanodist bench`, as a user runs it: the files it writes say what the table says, and bad
//! flags are refused. Nothing here depends on how fast the machine is.

mod common;

use std::path::Path;
use std::process::Output;

use common::{assert_one_line_error, nanodist, TempDir};

/// `nanodist bench FLAGS --out OUT`.
fn bench(out: &Path, flags: &[&str]) -> Output {
    let out = out.to_str().unwrap();
    nanodist(&[&["bench"], flags, &["--out", out]].concat())
}

#[test]
fn bench_writes_every_point_and_keeps_each_points_fastest_round() {
    let t = TempDir::new("bench");
    let out = t.path("b");
    let o = bench(&out, &["--workers", "1,2", "--steps", "2", "--rounds", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| mode | threads |"), "{stdout}");
    assert!(stdout.contains("round 2 of 2"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    let cores = json["cores"].as_u64().unwrap();
    let points = json["points"].as_array().unwrap();
    // every mode for each of 1 and 2 threads
    assert_eq!(modes_and_workers(points), all_modes(&[1, 2]));
    assert_peaks_shared(points, cores);
    for p in points {
        let rounds = floats(&p["tokens_per_s_rounds"]);
        assert_eq!(rounds.len(), 2, "{p}");
        let best = rounds.iter().cloned().fold(f64::MIN, f64::max);
        assert_eq!(p["tokens_per_s"].as_f64().unwrap(), best, "{p}");
        // tokens/s is the step's tokens over the step time
        let tokens = p["batch"].as_f64().unwrap() * 64.0;
        let from_ms = tokens / (p["step_ms"].as_f64().unwrap() / 1e3);
        assert!((from_ms / best - 1.0).abs() < 1e-9, "{p}");
        let workers = p["workers"].as_u64().unwrap();
        assert_eq!(p["oversubscribed"].as_bool().unwrap(), workers > cores);
        let mfu = p["mfu"].as_f64().unwrap();
        assert!(mfu > 0.0 && mfu.is_finite(), "{p}");
        // the MFU is the model's FLOP rate over the peak of the threads the point keeps busy
        let peak = p["peak_gflops"].as_f64().unwrap();
        let rate = p["gflop_per_step"].as_f64().unwrap() / (p["step_ms"].as_f64().unwrap() / 1e3);
        assert!((rate / peak / mfu - 1.0).abs() < 1e-9, "{p}");
        if workers == 1 {
            assert_eq!(p["efficiency"].as_f64().unwrap(), 1.0, "{p}");
        }
        // independent workers: the throughput is the sum of each worker's own, the step time
        // the one that gives it; the other modes have one step time for all workers
        let each = floats(&p["worker_step_ms"]);
        if p["mode"] == "independent" {
            assert_eq!(each.len() as u64, workers, "{p}");
            let per = p["batch"].as_f64().unwrap() / workers as f64;
            let summed: f64 = each.iter().map(|ms| per * 64.0 / (ms / 1e3)).sum();
            assert!((summed / best - 1.0).abs() < 1e-9, "{p}");
        } else {
            assert!(each.is_empty(), "{p}");
        }
    }
    // the lessons line says what the table says
    let point = |mode: &str| {
        let p = points
            .iter()
            .find(|p| p["mode"] == mode && p["workers"] == 2);
        p.unwrap_or_else(|| panic!("no {mode} point at 2 workers"))
    };
    let num = |p: &serde_json::Value, key: &str| p[key].as_f64().unwrap();
    let strong = point("strong");
    let tps = |p: &serde_json::Value| num(p, "tokens_per_s");
    let line = format!(
        "  2 workers{}: strong scaling delivered {:.0}% of 2 x one worker; {:.0}% of independent \
         workers that never synchronise (all-reduce {:.2} ms and wait {:.2} ms, {:.0}% of a \
         {:.1} ms step); {:.2}x op parallelism on 2 threads\n",
        if cores < 2 { " (oversubscribed)" } else { "" },
        100.0 * num(strong, "efficiency"),
        100.0 * tps(strong) / tps(point("independent")),
        num(strong, "comm_ms"),
        num(strong, "wait_ms"),
        100.0 * (num(strong, "comm_ms") + num(strong, "wait_ms")) / num(strong, "step_ms"),
        num(strong, "step_ms"),
        tps(strong) / tps(point("op-parallel")),
    );
    // and under it, the costs that no all-reduce removes: a weak-scaling worker's compute
    // against one alone, and the spread of the independent workers' mean steps
    let weak = point("weak");
    let alone = points
        .iter()
        .find(|p| p["mode"] == "weak" && p["workers"] == 1);
    let alone = num(alone.expect("no weak point at 1 worker"), "compute_ms");
    let slower = num(weak, "compute_ms") / alone;
    let why = if slower < 1.0 {
        "faster than alone, so the host's speed moved between the two"
    } else if cores < 2 {
        "threads sharing cores"
    } else {
        "the cores slowing one another"
    };
    let each = floats(&point("independent")["worker_step_ms"]);
    let costs = format!(
        "  2 workers, the costs no all-reduce removes: weak scaling's workers computed their 6 \
         sequences each in {:.1} ms a step against {alone:.1} ms for one worker alone \
         ({slower:.2}x: {why}); independent workers' mean steps ran {:.1}-{:.1} ms, and a \
         synchronous step waits for the slowest\n",
        num(weak, "compute_ms"),
        each.iter().cloned().fold(f64::MAX, f64::min),
        each.iter().cloned().fold(f64::MIN, f64::max),
    );
    assert!(
        stdout.contains(&format!("What the sweep says:\n{line}{costs}")),
        "{stdout}"
    );
    // a second sweep into the same directory is refused up front, and the first one kept
    let again = bench(&out, &["--workers", "1"]);
    assert_one_line_error(&again, &["already holds a sweep", "--out"]);
    assert!(!String::from_utf8_lossy(&again.stdout).contains("tokens/s"));
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    assert_eq!(kept, json);
    let svg = std::fs::read_to_string(out.join("scaling.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // the dotted line at the core count appears (on both charts) only when a point is past it
    let marks = svg.matches(&format!(">{cores} cores</text>")).count();
    assert_eq!(marks, if cores < 2 { 2 } else { 0 }, "{svg}");
    assert_eq!(svg.contains("oversubscribed"), cores < 2, "{svg}");
}

#[test]
fn bench_skips_only_the_points_the_batch_cannot_split_into() {
    let t = TempDir::new("bench-skip");
    let out = t.path("b");
    let flags = "--workers 1,2,3 --batch 4 --per-worker 1 --steps 1";
    let o = bench(&out, &flags.split(' ').collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    // said once, with a batch that every count divides
    let note = "strong scaling and independent skip [3] workers: --batch 4 does not divide";
    assert_eq!(stdout.matches(note).count(), 1, "{stdout}");
    let fits = "(--batch 12 divides among every count listed)";
    assert!(stdout.contains(fits), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    let points = json["points"].as_array().unwrap();
    // op parallel runs one replica of the whole batch, so it needs no split
    let mut want = all_modes(&[1, 2]);
    want.extend([("op-parallel".into(), 3), ("weak".into(), 3)]);
    want.sort();
    assert_eq!(modes_and_workers(points), want);
    assert_peaks_shared(points, json["cores"].as_u64().unwrap());
}

/// Every mode at each of `workers`, sorted.
fn all_modes(workers: &[u64]) -> Vec<(String, u64)> {
    let modes = ["independent", "op-parallel", "strong", "weak"];
    let mut all: Vec<(String, u64)> = (modes.iter())
        .flat_map(|m| workers.iter().map(|&n| (m.to_string(), n)))
        .collect();
    all.sort();
    all
}

/// The (mode, workers) of each point, sorted.
fn modes_and_workers(points: &[serde_json::Value]) -> Vec<(String, u64)> {
    let mut seen: Vec<(String, u64)> = (points.iter())
        .map(|p| {
            let mode = p["mode"].as_str().unwrap().to_string();
            (mode, p["workers"].as_u64().unwrap())
        })
        .collect();
    seen.sort();
    seen
}

/// Points that keep as many threads busy share one peak, the best measured for that many:
/// on two cores, 3 workers are measured against the peak of 2 threads.
fn assert_peaks_shared(points: &[serde_json::Value], cores: u64) {
    let busy = |p: &serde_json::Value| p["workers"].as_u64().unwrap().min(cores);
    for p in points {
        for q in points.iter().filter(|q| busy(q) == busy(p)) {
            assert_eq!(p["peak_gflops"], q["peak_gflops"], "{p}\n{q}");
        }
    }
}

/// A JSON array of numbers (a NaN or infinity, which JSON writes as null, fails).
fn floats(v: &serde_json::Value) -> Vec<f64> {
    let items = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    (items.iter())
        .map(|x| {
            x.as_f64()
                .unwrap_or_else(|| panic!("not a number: {x} in {v}"))
        })
        .collect()
}

#[test]
fn bad_bench_flags_are_refused() {
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--workers", "0"], &["--workers"]),
        (
            &["--workers", "1,2,1"],
            &["--workers", "1 twice", "--rounds"],
        ),
        (&["--rounds", "0"], &["--rounds"]),
        (&["--steps", "0"], &["--steps"]),
    ];
    for (flags, needles) in cases {
        let o = nanodist(&[&["bench"], flags].concat());
        assert_one_line_error(&o, needles);
    }
}

#[test]
fn a_point_that_would_not_fit_in_memory_is_refused_before_the_sweep_runs() {
    let t = TempDir::new("bench-mem");
    let out = t.path("b");
    let o = bench(&out, &["--workers", "1,100000"]);
    assert_one_line_error(&o, &["GiB", "--workers"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("tokens/s"));
    assert!(!out.exists(), "a refused sweep left its directory behind");
}

#[test]
fn an_unusable_out_dir_is_refused_before_the_sweep_runs() {
    let t = TempDir::new("bench-out");
    let file = t.path("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = file.join("b");
    let o = bench(&out, &["--workers", "1", "--steps", "1"]);
    assert_one_line_error(&o, &["a-file", "--out"]);
    // refused up front: no point was measured (and so none was lost)
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        !stdout.contains("tokens/s"),
        "the sweep ran first:\n{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

/// The median of `v`, as the bench takes it (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

#[test]
fn the_pipeline_bench_reports_its_rounds_roof_and_ceiling_consistently() {
    let t = TempDir::new("bench-pp");
    let out = t.path("p");
    let flags = ["--pp", "2", "--micro", "2", "--steps", "1", "--rounds", "3"];
    let o = bench(&out, &flags);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "roof (2 independent replicas of 6 sequences",
        "ceiling = roof",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pipeline.json")).unwrap()).unwrap();
    // a row per schedule, each with the theory of its own schedule at P = 2, M = 2
    let rows = j["rows"].as_array().unwrap();
    let theory: Vec<(&str, f64)> = (rows.iter())
        .map(|r| {
            (
                r["schedule"].as_str().unwrap(),
                r["bubble_theory"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(theory.len(), 3, "{theory:?}");
    for (s, b) in &theory {
        let want = if *s == "zb" { 1.0 / 7.0 } else { 1.0 / 3.0 };
        assert!((b - want).abs() < 1e-9, "{s}: theory {b}, want {want}");
    }
    // every ratio is the median of the per-round ratios of the rounds it wrote
    let rounds: Vec<Vec<f64>> = (j["rounds_tokens_per_s"].as_array().unwrap().iter())
        .map(floats)
        .collect();
    assert_eq!(rounds.len(), 3);
    let ratio = |k: usize, of: usize| median(rounds.iter().map(|r| r[k] / r[of]).collect());
    let close = |key: &str, want: f64| {
        let got = j[key].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-9 * want.abs(),
            "{key}: {got} against {want}"
        );
    };
    close("speedup_independent", ratio(1, 0));
    close("speedup_1f1b", ratio(2, 0));
    close("speedup_zb", ratio(3, 0));
    close("zb_over_1f1b", ratio(3, 2));
    close("zb_over_independent", ratio(3, 1));
    close("one_f_one_b_over_independent", ratio(2, 1));
    // the ceiling is the roof, less the schedule's bubble, times the micro-batch efficiency
    let effs: Vec<Vec<f64>> = (j["rounds_micro_efficiency"].as_array().unwrap().iter())
        .map(floats)
        .collect();
    let eff = |k: usize| median(effs.iter().map(|e| e[k]).collect());
    close("micro_efficiency_whole", eff(0));
    close("micro_efficiency_split", eff(1));
    close("ceiling_1f1b", ratio(1, 0) * (1.0 - 1.0 / 3.0) * eff(0));
    close("ceiling_zb", ratio(1, 0) * (1.0 - 1.0 / 7.0) * eff(1));
    // the same FLOPs in smaller products: well above nothing, not far above 1
    for e in effs.iter().flatten() {
        assert!(*e > 0.2 && *e < 5.0, "micro-batch efficiency {e}");
    }
    // zb's step split: a replica's step, the stages' mean and busiest compute, the step
    let split: Vec<Vec<f64>> = (j["rounds_zb_ms"].as_array().unwrap().iter())
        .map(floats)
        .collect();
    assert_eq!(split.len(), 3);
    for r in &split {
        let [replica, mean, busiest, step] = r[..] else {
            panic!("{r:?}")
        };
        assert!(replica > 0.0 && mean > 0.0, "{r:?}");
        assert!(busiest >= mean && step >= busiest, "{r:?}");
    }
}

#[test]
fn a_pipeline_bench_whose_batch_the_stages_do_not_divide_is_refused() {
    let o = nanodist(&["bench", "--pp", "2", "--batch", "9", "--micro", "3"]);
    assert_one_line_error(&o, &["--batch", "2 divides"]);
}
