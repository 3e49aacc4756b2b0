//! Data-parallel training proves its equivalences.
//!
//! - N workers on shards of a batch == 1 worker on the whole batch (default mode: within
//!   a tolerance; deterministic mode: bit for bit);
//! - K accumulated micro-batches == one batch of B;
//! - bucketed, overlapped all-reduce == one plain all-reduce;
//! - the run directory's JSON files are well-formed.
//!
//! A tiny model keeps each run to a fraction of a second.

mod common;

use nanodist::collective::Algorithm;
use nanodist::train::{self, RunOptions};

use common::{corpus, run, tiny};

/// Largest |a - b| with the first index where it exceeds `tol`, for a readable failure.
fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    let (mut worst, mut at) = (0f32, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        if d > worst {
            (worst, at) = (d, i);
        }
    }
    assert!(
        worst <= tol,
        "{what}: largest difference {worst:e} at index {at} ({} vs {}), tolerance {tol:e}",
        a[at],
        b[at]
    );
}

#[test]
fn n_workers_match_one_worker_in_default_mode() {
    let one = run(&tiny(1));
    for n in [2, 3, 4] {
        for algo in Algorithm::ALL {
            let cfg = {
                let mut c = tiny(n);
                c.parallel.allreduce = algo;
                c
            };
            let many = run(&cfg);
            // Shard gradients summed in another order differ from the one-worker sum in
            // the last bits (~1e-7 relative). Adam divides by sqrt(v), so an update moves
            // a weight by at most ~lr = 1e-3 per step; 4 steps of last-bit differences in
            // those updates stay far below 1e-5.
            assert_close(
                &many.model.params,
                &one.model.params,
                1e-5,
                &format!("{n} workers, {algo:?}"),
            );
        }
    }
}

#[test]
fn accumulation_equals_one_big_batch() {
    let one = run(&tiny(1));
    for (workers, accum) in [(1, 3), (1, 12), (2, 2), (3, 4)] {
        let cfg = {
            let mut c = tiny(workers);
            c.parallel.accum = accum;
            c
        };
        let acc = run(&cfg);
        assert_close(
            &acc.model.params,
            &one.model.params,
            1e-5,
            &format!("{workers} workers x {accum} micro-batches"),
        );
    }
}

#[test]
fn bucketed_overlapped_all_reduce_equals_plain() {
    // With 2 workers every algorithm adds exactly two numbers per element, and float
    // addition is commutative: bucket boundaries and overlap cannot change a bit.
    for algo in Algorithm::ALL {
        let plain = run(&{
            let mut c = tiny(2);
            c.parallel.allreduce = algo;
            c
        });
        for (bucket_kb, overlap) in [(4, false), (4, true), (1, true), (0, true)] {
            let cfg = {
                let mut c = tiny(2);
                c.parallel.allreduce = algo;
                c.parallel.bucket_kb = bucket_kb;
                c.parallel.overlap = overlap;
                c
            };
            let b = run(&cfg);
            assert_eq!(
                b.summary.param_hash, plain.summary.param_hash,
                "{algo:?} bucket {bucket_kb} KiB overlap {overlap}"
            );
            // overlapped, the buckets really were summed on the communication thread
            let on_comm_thread = b.tracks.iter().flatten().any(|s| s.comm_thread);
            assert_eq!(on_comm_thread, overlap, "{algo:?} bucket {bucket_kb} KiB");
        }
    }
    // With 3 workers the order of the three-way sums depends on the chunking: close, not equal.
    let plain = run(&tiny(3));
    let b = run(&{
        let mut c = tiny(3);
        c.parallel.bucket_kb = 2;
        c.parallel.overlap = true;
        c.parallel.allreduce = Algorithm::Ring;
        c
    });
    assert_close(
        &b.model.params,
        &plain.model.params,
        1e-5,
        "3 workers, ring, buckets",
    );
}

#[test]
fn deterministic_mode_is_bit_identical_across_workers_algorithms_and_buckets() {
    let reference = run(&{
        let mut c = tiny(1);
        c.parallel.deterministic = true;
        c
    });
    for n in [2, 3, 4, 6, 12] {
        for (i, algo) in Algorithm::ALL.into_iter().enumerate() {
            // one bucket, buckets of 1 and 3 KiB (a partial last one), one per tensor or so
            let bucket_kb = [0, 1, 3, 8][(i + n) % 4];
            let cfg = {
                let mut c = tiny(n);
                c.parallel.deterministic = true;
                c.parallel.allreduce = algo;
                c.parallel.bucket_kb = bucket_kb;
                c
            };
            let r = run(&cfg);
            assert_eq!(
                r.summary.param_hash, reference.summary.param_hash,
                "{n} workers, {algo:?}, bucket {bucket_kb} KiB"
            );
        }
    }
    // ... and accumulation does not matter either.
    let acc = run(&{
        let mut c = tiny(2);
        c.parallel.deterministic = true;
        c.parallel.accum = 3;
        c
    });
    assert_eq!(acc.summary.param_hash, reference.summary.param_hash);
    // The exact sum is close to the float one (fixed point keeps 2^-40 resolution).
    let float = run(&tiny(1));
    assert_close(
        &reference.model.params,
        &float.model.params,
        1e-5,
        "deterministic vs float",
    );
}

#[test]
fn replica_checks_pass_when_replicas_agree() {
    // Every step, each worker hashes its replica and the hashes are gathered: identical
    // replicas must never be reported as diverged, in either mode.
    for deterministic in [false, true] {
        let cfg = {
            let mut c = tiny(3);
            c.schedule.check_replicas = 1;
            c.parallel.deterministic = deterministic;
            c
        };
        let opts = RunOptions {
            final_eval: false,
            ..RunOptions::default()
        };
        let r = train::train(
            &cfg,
            corpus(),
            train::initial_state(&cfg),
            &opts,
            |_| Ok(()),
        );
        assert!(r.is_ok(), "deterministic {deterministic}: {:?}", r.err());
    }
}

/// A replica that drifts (one bit of one weight, flipped after step 2 on worker 1) is
/// caught by the check after that step, not before and not later, and stops the run.
#[test]
fn replica_checks_catch_a_perturbed_replica() {
    for (workers, deterministic) in [(2, false), (3, true)] {
        let cfg = {
            let mut c = tiny(workers);
            c.schedule.check_replicas = 1;
            c.parallel.deterministic = deterministic;
            c.faults.perturb = Some((1, 2));
            c
        };
        let opts = RunOptions {
            final_eval: false,
            ..RunOptions::default()
        };
        let mut steps = 0;
        let r = train::train(&cfg, corpus(), train::initial_state(&cfg), &opts, |e| {
            steps += matches!(e, train::Event::Step(_)) as usize;
            Ok(())
        });
        let e = r
            .err()
            .expect("the perturbed replica is caught")
            .to_string();
        assert!(
            e.contains("replicas diverged after step 3: worker 1 has param hash"),
            "{e}"
        );
        assert_eq!(steps, 3, "the run stops at the check that fails");
    }
}

/// An interrupt seen at the top of step 0 stops every worker before step 1: one row, one
/// checkpoint of step 1 (rank 0's, the final model's bits), no final evaluation.
#[test]
fn an_interrupt_stops_every_worker_at_one_boundary_with_one_checkpoint() {
    let cfg = tiny(3);
    let opts = RunOptions {
        final_eval: true,
        interrupt: Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
            true,
        ))),
        ..RunOptions::default()
    };
    let (mut rows, mut checkpoints) = (0, Vec::new());
    let out = train::train(&cfg, corpus(), train::initial_state(&cfg), &opts, |e| {
        match e {
            train::Event::Step(_) => rows += 1,
            train::Event::Checkpoint(s) => checkpoints.push((s.step, s.params)),
            train::Event::Eval { .. } => {}
        }
        Ok(())
    })
    .expect("an interrupted run is not an error");
    assert_eq!(out.interrupted_at, Some(1));
    assert_eq!((rows, out.rows.len(), out.summary.steps), (1, 1, 1));
    assert_eq!(checkpoints, [(1, out.model.params.clone())]);
    assert!(out.summary.val_loss.is_nan(), "{}", out.summary.val_loss);
}

/// The library writes no files: everything the command line puts in a run directory
/// (summary.json, trace.json, metrics.jsonl, checkpoints) reaches it as events and in the
/// outcome, well-formed.
#[test]
fn a_run_hands_its_caller_every_figure_of_the_run_directory() {
    let cfg = {
        let mut c = tiny(2);
        c.schedule.eval_every = 2;
        c.schedule.steps = 6;
        c
    };
    let (mut lines, mut evals, mut checkpoints) = (Vec::new(), Vec::new(), Vec::new());
    let out = train::train(
        &cfg,
        corpus(),
        train::initial_state(&cfg),
        &RunOptions::default(),
        |event| {
            match event {
                train::Event::Step(row) => lines.push(serde_json::to_value(row).unwrap()),
                train::Event::Eval { step, .. } => evals.push(step),
                train::Event::Checkpoint(state) => checkpoints.push((state.step, state.params)),
            }
            Ok(())
        },
    )
    .unwrap();
    let summary = serde_json::to_value(&out.summary).unwrap();
    for key in [
        "steps",
        "workers",
        "global_batch",
        "block",
        "params",
        "allreduce",
        "deterministic",
        "train_loss",
        "val_loss",
        "tokens_per_s",
        "step_ms_median",
        "compute_ms_median",
        "comm_ms_median",
        "wait_ms_median",
        "wall_s",
        "param_hash",
    ] {
        assert!(
            !summary[key].is_null(),
            "the summary lacks {key}: {summary}"
        );
    }
    assert_eq!(summary["param_hash"].as_str().unwrap().len(), 16);
    let val = summary["val_loss"].as_f64().unwrap();
    assert!(val.is_finite() && val > 0.0, "{val}");
    assert_eq!(evals, [2, 4]);
    // the last step's state is handed over for the checkpoint, and it is the final model
    assert_eq!(checkpoints.len(), 1);
    assert_eq!(checkpoints[0].0, 6);
    assert_eq!(checkpoints[0].1, out.model.params);

    // the timeline (trace.json, timeline.svg): every worker's phases
    assert_eq!(out.tracks.len(), 2);
    for (w, spans) in out.tracks.iter().enumerate() {
        for name in ["forward", "backward", "adamw", "wait"] {
            assert!(
                spans
                    .iter()
                    .any(|s| !s.comm_thread && s.phase.name() == name),
                "worker {w} has no {name} span"
            );
        }
        assert!(spans.iter().any(|s| s.phase.category() == "comm"));
    }

    assert_eq!(lines.len(), 6);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["step"], i);
        for key in [
            "loss",
            "lr",
            "tokens_per_s",
            "compute_ms",
            "comm_ms",
            "wait_ms",
        ] {
            assert!(l[key].is_number(), "metrics line {i} lacks {key}");
        }
    }
}
