//! The grid composed: pipeline stages of tensor-parallel blocks, replicated by data
//! parallelism (`--workers N --tp T --pp P`), against one worker (or plain data parallelism)
//! accumulating the same micro-batches.
//!
//! The tolerance. Tensor parallelism adds each row-parallel product as T partial sums and
//! the gradient norm in another order, so a step agrees with one worker's to float rounding,
//! not to the bit: `tests/tensor.rs` measures about 1e-6 of each tensor's largest gradient
//! on one step. Here: the loss of every step within 1e-5 (the first step's loss is the same
//! forward pass, rounded differently), the gradient norm of every step within 1e-4 relative,
//! and the parameters after the few steps within 1e-4: AdamW's update m / sqrt(v) is
//! normalised, so a rounding difference in a gradient near zero can move its parameter by a
//! fraction of the learning rate (3e-4 at most in these steps of warm-up), while a wrong
//! index or a missing sum moves the loss by far more than 1e-5 and the norm by percents.
//! On these runs the parameters after 4 steps differ by about 1e-6 and the losses and
//! norms print the same digits: the bounds leave two orders of margin.
//!
//! 8 workers on a 2-core host are oversubscribed: correct, slower than fewer; the runs here
//! are a few steps of a tiny model.

mod common;

use common::corpus;
use nanodist::config::{PipeSchedule, TrainConfig};
use nanodist::train::{self, Outcome, RunOptions, TrainState};

/// 4 blocks of 4 heads (so TP 2 holds 2 heads each and PP 2 two blocks each), trained 4
/// steps on batches of 12 with a small clip, so that the global norm matters every step.
fn tiny() -> TrainConfig {
    common::clipped(4, 4, 32)
}

fn grid(workers: usize, tp: usize, pp: usize, micro: usize, sp: bool) -> TrainConfig {
    let mut c = tiny();
    let p = &mut c.parallel;
    (p.workers, p.tp, p.pp, p.micro, p.sp) = (workers, tp, pp, micro, sp);
    c
}

fn run_from(cfg: &TrainConfig, init: TrainState) -> Outcome {
    let opts = RunOptions {
        final_eval: true,
        ..RunOptions::default()
    };
    train::train(cfg, corpus(), init, &opts, |_| Ok(())).expect("training runs")
}

fn run(cfg: &TrainConfig) -> Outcome {
    run_from(cfg, train::initial_state(cfg))
}

/// Asserts `got` trained as `want` did, within the module's tolerances.
fn assert_same_training(got: &Outcome, want: &Outcome, what: &str) {
    assert_eq!(got.rows.len(), want.rows.len(), "{what}");
    common::assert_steps_close(&got.rows, &want.rows, 1e-4, what);
    let (g, w) = (&got.model.params, &want.model.params);
    assert_eq!(g.len(), w.len(), "{what}: the whole model comes back");
    let worst = g
        .iter()
        .zip(w)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    println!("{what}: largest parameter difference {worst:e}");
    assert!(worst <= 1e-4, "{what}: a parameter differs by {worst:e}");
    let dv = (got.summary.val_loss - want.summary.val_loss).abs();
    assert!(dv < 1e-4, "{what}: validation loss differs by {dv:e}");
}

#[test]
fn tensor_parallel_stages_train_as_one_worker_accumulating() {
    let mut one = tiny();
    one.parallel.accum = 3;
    let one = run(&one);
    for (schedule, sp) in [(PipeSchedule::OneFOneB, false), (PipeSchedule::GPipe, true)] {
        let mut c = grid(4, 2, 2, 3, sp);
        c.parallel.schedule = schedule;
        let what = format!("--workers 4 --tp 2 --pp 2 --micro 3 {schedule:?} sp={sp}");
        assert_same_training(&run(&c), &one, &what);
    }
}

#[test]
fn replicas_of_tensor_parallel_pipelines_train_as_data_parallelism() {
    // 8 workers on 2 cores: oversubscribed, and still the same sums
    let mut dp = tiny();
    (dp.parallel.workers, dp.parallel.accum) = (2, 2);
    let dp = run(&dp);
    let c = grid(8, 2, 2, 2, false);
    assert_same_training(&run(&c), &dp, "--workers 8 --tp 2 --pp 2 --micro 2");
}

#[test]
fn a_tensor_parallel_pipeline_state_resumes_at_other_layouts() {
    let straight = run(&tiny());
    let mut first = grid(4, 2, 2, 2, false);
    first.schedule.steps = 2;
    let half = run(&first);
    let state = TrainState {
        params: half.model.params.clone(),
        adam: half.adam.clone(),
        step: 2,
    };
    // the consolidated state is the single model's, in its layout: one worker, a plain
    // pipeline and tensor parallelism alone all continue it to where one worker ends
    for (workers, tp, pp, micro) in [(1, 1, 1, 1), (2, 1, 2, 1), (2, 2, 1, 1), (4, 2, 2, 1)] {
        let on = run_from(&grid(workers, tp, pp, micro, false), state.clone());
        let what = format!("resumed on --workers {workers} --tp {tp} --pp {pp}");
        let worst = (on.model.params.iter().zip(&straight.model.params))
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{what}: a parameter differs by {worst:e}");
        for (a, b) in on.rows.iter().zip(&straight.rows[2..]) {
            assert!((a.loss - b.loss).abs() < 1e-5, "{what}: step {}", a.step);
        }
    }
}

#[test]
fn deterministic_tensor_parallel_pipelines_are_refused_in_one_line() {
    let mut c = grid(4, 2, 2, 2, false);
    c.parallel.deterministic = true;
    let e = c.validate().expect_err("refused").to_string();
    assert!(
        e.contains("--deterministic") && e.contains("--tp 2 --pp 2"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    // and the grid still has to divide
    let e = grid(6, 2, 2, 1, false)
        .validate()
        .expect_err("refused")
        .to_string();
    assert!(e.contains("--workers 6"), "{e}");
}

/// The largest absolute difference between two buffers.
fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn zero_1_shards_each_tensor_parallel_shard_over_the_replicas() {
    // 2 and 3 replicas of --tp 2: 3 cuts each rank's shard unevenly, so the pieces' edges
    // fall inside tensors, whole copies and split ones alike
    for workers in [4, 6] {
        let mut zero = grid(workers, 2, 1, 1, false);
        let replicated = run(&zero);
        zero.parallel.zero = 1;
        let sharded = run(&zero);
        let what = format!("--workers {workers} --tp 2 --zero 1");
        assert_same_training(&sharded, &replicated, &what);
        // the checkpoint state: AdamW's parts gathered over the replicas, then the tensor
        // group's shards consolidated into the single model's layout
        let (a, b) = (&sharded.adam, &replicated.adam);
        assert_eq!(
            a.m.len(),
            b.m.len(),
            "{what}: the whole AdamW state comes back"
        );
        let dm = largest_difference(&a.m, &b.m);
        let dv = largest_difference(&a.v, &b.v);
        println!("{what}: AdamW m differs by {dm:e}, v by {dv:e}");
        assert!(dm <= 1e-6 && dv <= 1e-6, "{what}: AdamW m {dm:e}, v {dv:e}");
    }
}

#[test]
fn zero_where_it_is_not_built_is_refused_in_one_line() {
    for (workers, tp, pp, zero, needles) in [
        (4, 2, 1, 2, ["--zero 2", "--zero 1 with --tp"]),
        (4, 2, 1, 3, ["--zero 3", "--zero 1 with --tp"]),
        (4, 1, 2, 2, ["--zero 2 with --pp 2", "--zero 1 with --pp"]),
        (8, 2, 2, 3, ["--zero 3 with --pp 2", "--zero 1 with --pp"]),
    ] {
        let mut c = grid(workers, tp, pp, 1, false);
        c.parallel.zero = zero;
        let e = c.validate().expect_err("refused").to_string();
        assert!(!e.contains('\n'), "{e}");
        for n in needles {
            assert!(e.contains(n), "{e} lacks {n}");
        }
    }
}

#[test]
fn a_tensor_parallel_stage_holds_fewer_activations_and_1f1b_still_bounds_them() {
    use nanodist::parallel::pipeline::peak_activation_bytes;
    let at = |tp: usize, sp: bool, s: PipeSchedule| {
        let mut c = grid(2 * tp, tp, 2, 6, sp);
        c.parallel.schedule = s;
        peak_activation_bytes(&c)
    };
    let whole = at(1, false, PipeSchedule::GPipe);
    let split = at(2, false, PipeSchedule::GPipe);
    let rows = at(2, true, PipeSchedule::GPipe);
    let one_f = at(2, true, PipeSchedule::OneFOneB);
    println!("peak activation bytes per stage: {whole:?}, --tp 2 {split:?}, --sp {rows:?}");
    for s in 0..2 {
        assert!(split[s] < whole[s] && rows[s] < split[s], "stage {s}");
        assert!(
            one_f[s] * 6 <= rows[s] * 2,
            "stage {s}: 1F1B {one_f:?} GPipe {rows:?}"
        );
    }
}
