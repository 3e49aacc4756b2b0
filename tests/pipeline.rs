//! Pipeline parallelism proves its equivalences.
//!
//! - `--deterministic`: P stages x M micro-batches (GPipe, 1F1B or zero bubble) end with the
//!   same bits as one worker with `--accum M`, and DP x PP replicas as data parallelism alone;
//! - default mode: the same within float tolerance, the gradient norm of every step too; and
//!   zero bubble, whose W's run whenever a stage would wait, the same bits as 1F1B;
//! - a pipeline's checkpoint state is the whole model: it resumes at another layout;
//! - 1F1B holds at most P/M of GPipe's activations on every stage.
//!
//! Tiny models keep each run to a fraction of a second.

mod common;

use common::{run, run_from};
use nanodist::config::{PipeSchedule, TrainConfig};
use nanodist::parallel::pipeline;
use nanodist::train::TrainState;

/// A model of `layers` blocks and `embd` channels, trained 4 steps on batches of 12, with a
/// small clip so that clipping (and so the global norm's bits) matters every step.
fn tiny(layers: usize, embd: usize) -> TrainConfig {
    common::clipped(layers, 2, embd)
}

fn with(
    base: &TrainConfig,
    workers: usize,
    pp: usize,
    micro: usize,
    s: PipeSchedule,
) -> TrainConfig {
    let mut c = base.clone();
    (c.parallel.workers, c.parallel.pp, c.parallel.micro) = (workers, pp, micro);
    c.parallel.schedule = s;
    c
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    let (mut worst, mut at) = (0f32, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if (x - y).abs() > worst {
            (worst, at) = ((x - y).abs(), i);
        }
    }
    assert!(worst <= tol, "{what}: largest difference {worst:e} at {at}");
}

const ALL: [PipeSchedule; 3] = PipeSchedule::ALL;

#[test]
fn deterministic_pipelines_equal_one_worker_bit_for_bit() {
    // 12 channels: tensor boundaries off multiples of 8, where the chained norm must
    // continue the lanes mid-chunk; 32: the aligned case. 4 and 5 blocks: even and uneven.
    for (layers, embd) in [(4, 32), (5, 12)] {
        let mut base = tiny(layers, embd);
        base.parallel.deterministic = true;
        for micro in [1, 3, 4] {
            let mut one = with(&base, 1, 1, 1, PipeSchedule::GPipe);
            one.parallel.accum = micro;
            let one = run(&one);
            for pp in [2, 4] {
                for s in ALL {
                    let p = run(&with(&base, pp, pp, micro, s));
                    let what = format!("L={layers} C={embd} --pp {pp} --micro {micro} {s:?}");
                    assert_eq!(p.summary.param_hash, one.summary.param_hash, "{what}");
                    assert_eq!(p.adam, one.adam, "{what}: AdamW state");
                    for (a, b) in p.rows.iter().zip(&one.rows) {
                        assert_eq!(a.grad_norm, b.grad_norm, "{what}: step {}", a.step);
                        assert_eq!(a.loss, b.loss, "{what}: step {}", a.step);
                    }
                }
            }
        }
    }
}

#[test]
fn deterministic_replicated_pipelines_equal_data_parallelism() {
    let mut base = tiny(4, 32);
    base.parallel.deterministic = true;
    let dp = run(&with(&base, 2, 1, 1, PipeSchedule::GPipe));
    for s in ALL {
        let both = run(&with(&base, 4, 2, 2, s));
        assert_eq!(both.summary.param_hash, dp.summary.param_hash, "{s:?}");
    }
    let both = run(&with(&base, 6, 2, 2, PipeSchedule::OneFOneB));
    assert_eq!(both.summary.param_hash, dp.summary.param_hash, "3 replicas");
}

#[test]
fn default_mode_pipelines_match_within_float_tolerance() {
    let base = tiny(4, 32);
    for (workers, pp, micro) in [(2, 2, 3), (4, 4, 2), (4, 2, 2)] {
        let mut one = with(&base, workers / pp, 1, 1, PipeSchedule::GPipe);
        one.parallel.accum = micro;
        let one = run(&one);
        for s in ALL {
            let p = run(&with(&base, workers, pp, micro, s));
            let what = format!("--workers {workers} --pp {pp} --micro {micro} {s:?}");
            // the tied wte's two parts are added once per step instead of per micro-batch:
            // last-bit differences, which AdamW's normalised steps keep tiny over 4 steps
            assert_close(&p.model.params, &one.model.params, 1e-5, &what);
            common::assert_steps_close(&p.rows, &one.rows, 1e-5, &what);
        }
    }
}

/// zb runs 1F1B's forwards and backwards with the blocks' weight gradients split off and
/// run later, whenever a stage would wait: the same products on the same bits, added to each
/// tensor in the same micro-batch order, so the same model bit for bit without
/// `--deterministic` too, however the W's fall in time.
#[test]
fn zero_bubble_equals_one_f_one_b_bit_for_bit() {
    for (layers, workers, pp, micro) in [(4, 2, 2, 6), (4, 4, 4, 3), (5, 4, 2, 3)] {
        let base = tiny(layers, 32);
        let o = run(&with(&base, workers, pp, micro, PipeSchedule::OneFOneB));
        let z = run(&with(&base, workers, pp, micro, PipeSchedule::ZeroBubble));
        let what = format!("L={layers} --workers {workers} --pp {pp} --micro {micro}");
        assert_eq!(z.summary.param_hash, o.summary.param_hash, "{what}");
        for (a, b) in z.rows.iter().zip(&o.rows) {
            assert_eq!(a.grad_norm, b.grad_norm, "{what}: step {}", a.step);
        }
    }
}

#[test]
fn a_pipeline_state_resumes_at_another_layout() {
    let mut base = tiny(4, 32);
    base.parallel.deterministic = true;
    let straight = run(&with(&base, 1, 1, 1, PipeSchedule::GPipe));
    let mut first = with(&base, 2, 2, 2, PipeSchedule::OneFOneB);
    first.schedule.steps = 2;
    let half = run(&first);
    let state = TrainState {
        params: half.model.params.clone(),
        adam: half.adam.clone(),
        step: 2,
    };
    // ...continued by a 4-stage pipeline, and by one worker: both end where one worker does
    let on_four = run_from(&with(&base, 4, 4, 3, PipeSchedule::GPipe), state.clone());
    let on_one = run_from(&with(&base, 1, 1, 1, PipeSchedule::GPipe), state);
    assert_eq!(on_four.summary.param_hash, straight.summary.param_hash);
    assert_eq!(on_one.summary.param_hash, straight.summary.param_hash);
}

#[test]
fn one_f_one_b_holds_at_most_p_over_m_of_gpipe_activations() {
    let base = tiny(4, 32);
    for (pp, micro) in [(2, 6), (4, 4), (4, 12), (2, 2)] {
        let g = pipeline::peak_activation_bytes(&with(&base, pp, pp, micro, PipeSchedule::GPipe));
        let o =
            pipeline::peak_activation_bytes(&with(&base, pp, pp, micro, PipeSchedule::OneFOneB));
        for s in 0..pp {
            assert!(
                o[s] * micro <= g[s] * pp,
                "P={pp} M={micro} stage {s}: {o:?} {g:?}"
            );
        }
    }
}

/// zb keeps up to P-1 micro-batches more than 1F1B alive (until their W), and the output
/// gradients its W's read (9C floats a row a block, about half a micro-batch's activations
/// again): more than 1F1B, and less than GPipe where M is well past 2P.
#[test]
fn zero_bubble_holds_between_one_f_one_b_and_gpipe() {
    let base = tiny(4, 32);
    for (pp, micro) in [(2, 6), (3, 12), (2, 12)] {
        let bytes = |s| pipeline::peak_activation_bytes(&with(&base, pp, pp, micro, s));
        let (g, o) = (bytes(PipeSchedule::GPipe), bytes(PipeSchedule::OneFOneB));
        let z = bytes(PipeSchedule::ZeroBubble);
        for s in 0..pp {
            assert!(
                o[s] < z[s] && z[s] < g[s],
                "P={pp} M={micro} stage {s}: {o:?} {z:?} {g:?}"
            );
        }
    }
}

/// A zb run draws its W boxes, one per micro-batch per stage, and records its own theory.
#[test]
fn a_zero_bubble_run_records_its_weight_gradients() {
    let cfg = with(&tiny(4, 32), 2, 2, 4, PipeSchedule::ZeroBubble);
    let out = run(&cfg);
    let f = pipeline::figures(&cfg, &out.tracks);
    assert_eq!(f.schedule, "zb");
    assert!(
        (f.bubble_theory - 1.0 / 13.0).abs() < 1e-12,
        "{}",
        f.bubble_theory
    );
    for spans in &out.tracks {
        let count = |prefix: &str| {
            (spans.iter())
                .filter(|s| s.step == 1 && s.phase.name().starts_with(prefix))
                .count()
        };
        assert_eq!(count("weight gradients m"), 4);
        assert_eq!(count("backward m"), 4);
    }
}

#[test]
fn a_pipeline_run_records_its_schedule_and_bubble() {
    let cfg = with(&tiny(4, 32), 2, 2, 4, PipeSchedule::GPipe);
    let out = run(&cfg);
    let f = pipeline::figures(&cfg, &out.tracks);
    assert_eq!(f.blocks_per_stage, [2, 2]);
    assert!((f.bubble_theory - 0.2).abs() < 1e-12);
    let b = f.bubble_measured.expect("the steps were traced");
    assert!((0.0..1.0).contains(&b), "{b}");
    // every stage ran every micro-batch's forward and backward in every traced step
    for spans in &out.tracks {
        let boxes = spans
            .iter()
            .filter(|s| s.step == 1 && s.phase.name().starts_with("forward m"))
            .count();
        assert_eq!(boxes, 4);
    }
}

#[test]
fn bad_pipeline_layouts_are_refused_in_one_line() {
    let base = tiny(4, 32);
    #[track_caller]
    fn err(c: TrainConfig) -> String {
        c.validate().expect_err("a bad layout").to_string()
    }
    let e = err(with(&base, 8, 8, 1, PipeSchedule::GPipe));
    assert!(e.contains("--pp 8") && e.contains("--layers 4"), "{e}");
    let e = err(with(&base, 3, 2, 1, PipeSchedule::GPipe));
    assert!(e.contains("--workers 3"), "{e}");
    let e = err(with(&base, 2, 2, 5, PipeSchedule::GPipe));
    assert!(e.contains("--micro 5") && e.contains("--batch 12"), "{e}");
    let e = err(with(&base, 1, 1, 3, PipeSchedule::GPipe));
    assert!(e.contains("--micro 3") && e.contains("--accum 3"), "{e}");
    let mut c = with(&base, 2, 2, 2, PipeSchedule::GPipe);
    c.parallel.accum = 2;
    let e = err(c);
    assert!(e.contains("--accum 2") && e.contains("--micro 4"), "{e}");
    let mut c = with(&base, 4, 2, 2, PipeSchedule::ZeroBubble);
    c.parallel.tp = 2;
    let e = err(c);
    assert!(e.contains("--schedule zb") && e.contains("--tp 2"), "{e}");
    for e in [
        err(with(&base, 8, 8, 1, PipeSchedule::GPipe)),
        err(with(&base, 2, 2, 5, PipeSchedule::GPipe)),
    ] {
        assert!(!e.contains('\n'), "{e}");
    }
}
