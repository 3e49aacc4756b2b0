//! A pipeline stage's data-parallel sum covers exactly the gradients the stage writes.
//!
//! ```text
//!   --workers 4 --pp 2:   layout [ wte | wpe | h.0 h.1 | h.2 h.3 | ln_f ]
//!     stage 0 (ranks 0, 2) sums over dp:  [ wte | wpe | h.0 h.1 ]
//!     stage 1 (ranks 1, 3) sums over dp:  [ wte ]               [ h.2 h.3 | ln_f ]
//! ```
//! A range left out of the sum would leave each replica with its own half of that gradient:
//! the replicas' updates, and so the model, would part from data parallelism's by a fraction
//! of the learning rate, far beyond float rounding. So replicated pipelines (2 and 3
//! replicas, 2 and 3 stages, with and without `--tp`) train as plain data parallelism
//! accumulating the same micro-batches, within the tolerances of `tests/pipeline.rs` and
//! `tests/compose.rs`; and the bytes the data-parallel groups send per step are those of the
//! written ranges only (about 1/P of the model per stage, plus the last stage's `wte`), as
//! summary.json's `comm_per_step` reports them.
//!
//! Up to 8 workers on a 2-core host are oversubscribed: correct, slower; the runs are a few
//! steps of a tiny model.

mod common;

use common::run;
use nanodist::config::TrainConfig;
use nanodist::parallel::pipeline;
use nanodist::parallel::tensor::{comm_per_step, local_layout};

/// 4 blocks of 4 heads (TP 2 holds 2 heads each), trained 4 steps on batches of 12 with a
/// small clip, so that the global norm matters every step.
fn tiny() -> TrainConfig {
    common::clipped(4, 4, 32)
}

/// The bytes every worker of a `--workers W --tp T --pp P` run sends in its data-parallel
/// group per step, added up: each stage's all-reduce of the ranges it writes (its own, and
/// on the last stage the tied `wte`), counted as a ring sends them (2 (D-1)/D of each).
fn dp_bytes_per_step(cfg: &TrainConfig) -> u64 {
    let p = &cfg.parallel;
    let d = cfg.data_parallel();
    let layout = local_layout(&cfg.model, p.tp);
    let wte = layout.tensors[0].len;
    let ring = |floats: usize| (2.0 * (d - 1) as f64 / d as f64 * (4 * floats) as f64) as u64;
    let per_replica: u64 = (pipeline::split(cfg.model.n_layer, p.pp).iter())
        .map(|part| {
            let mine = ring(pipeline::owned(&layout, part).len());
            let tied = if part.last && !part.first {
                ring(wte)
            } else {
                0
            };
            mine + tied
        })
        .sum();
    per_replica * (d * p.tp) as u64
}

#[test]
fn replicated_pipelines_sum_every_range_their_stages_write() {
    // (workers, tp, pp, micro)
    for (workers, tp, pp, micro) in [(4, 1, 2, 2), (6, 1, 3, 2), (6, 1, 2, 2), (8, 2, 2, 3)] {
        let mut cfg = tiny();
        let p = &mut cfg.parallel;
        (p.workers, p.tp, p.pp, p.micro) = (workers, tp, pp, micro);
        let d = cfg.data_parallel();
        let mut plain = tiny();
        (plain.parallel.workers, plain.parallel.accum) = (d, micro);
        let (got, want) = (run(&cfg), run(&plain));
        let what = format!("--workers {workers} --tp {tp} --pp {pp} --micro {micro}");
        // float tolerances: tests/pipeline.rs's without --tp, tests/compose.rs's with it
        let (params_tol, norm_tol) = if tp > 1 { (1e-4, 1e-4) } else { (1e-5, 1e-5) };
        assert_eq!(got.rows.len(), want.rows.len(), "{what}");
        common::assert_steps_close(&got.rows, &want.rows, norm_tol, &what);
        let (a, b) = (&got.model.params, &want.model.params);
        assert_eq!(a.len(), b.len(), "{what}");
        let worst = (a.iter().zip(b)).fold(0f32, |w, (x, y)| w.max((x - y).abs()));
        assert!(
            worst <= params_tol,
            "{what}: parameters differ by {worst:e}"
        );

        // the bytes: the written ranges' sums, and nothing else, in every step
        let steps = cfg.schedule.steps as u64;
        let each = dp_bytes_per_step(&cfg);
        let whole = {
            let n = local_layout(&cfg.model, tp).len;
            (2.0 * (d - 1) as f64 / d as f64 * (4 * n) as f64) as u64 * workers as u64
        };
        println!(
            "{what}: dp bytes per step {} (the whole layout's sum: {whole}, {:.2} of it)",
            got.summary.bytes_sent / steps,
            got.summary.bytes_sent as f64 / steps as f64 / whole as f64
        );
        assert_eq!(got.summary.bytes_sent, steps * each, "{what}");
        assert!(each < whole, "{what}");
        // summary.json's comm_per_step: one worker's, of the largest stage
        let layout = local_layout(&cfg.model, tp);
        let largest = (pipeline::split(cfg.model.n_layer, pp).iter())
            .map(|part| {
                let tied = part.last && !part.first;
                pipeline::owned(&layout, part).len() + if tied { layout.tensors[0].len } else { 0 }
            })
            .max()
            .unwrap();
        let want = 2.0 * (d - 1) as f64 / d as f64 * (4 * largest) as f64;
        let reported = comm_per_step(&cfg);
        let off = (reported.dp_bytes as f64 - want).abs();
        assert!(
            off <= 8.0,
            "{what}: comm_per_step {} vs {want}: {}",
            reported.dp_bytes,
            reported.dp_formula
        );
    }
}
