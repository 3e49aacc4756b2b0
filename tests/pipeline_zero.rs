//! ZeRO stage 1 on a pipeline (`--pp P --zero 1`): each stage's AdamW state cut among the
//! stage's replicas trains exactly as the replicated pipeline does.
//!
//! - `--deterministic`: the same bits as `--zero 0` and as data parallelism alone, with even
//!   and uneven cuts (2 and 3 replicas), middle stages (`--pp 3`) and all three schedules;
//! - default mode: the same within float tolerance, with clipping active every step, and
//!   with `--tp 2` stages;
//! - the checkpoint state (AdamW's parts gathered) resumes at other layouts, and a replicated
//!   pipeline's state resumes sharded;
//! - `summary.json`'s `memory` holds the stage's part of the AdamW state.

mod common;

use common::{corpus, run, run_from};
use nanodist::config::{PipeSchedule, TrainConfig};
use nanodist::parallel::pipeline;
use nanodist::train::{self, Event, Outcome, RunOptions, TrainState};

/// A model of `layers` blocks and `embd` channels trained 4 steps on batches of 12, with a
/// small clip so that clipping (and so the global norm's bits) matters every step. At 32
/// channels a block is about 3 norm chunks, so stage ranges and their cuts start and end
/// inside chunks.
fn tiny(layers: usize, embd: usize) -> TrainConfig {
    common::clipped(layers, 2, embd)
}

fn with(base: &TrainConfig, workers: usize, pp: usize, micro: usize, zero: u8) -> TrainConfig {
    let mut c = base.clone();
    let p = &mut c.parallel;
    (p.workers, p.pp, p.micro, p.zero) = (workers, pp, micro, zero);
    c
}

/// The largest absolute difference between two buffers.
fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    (a.iter().zip(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Asserts `got` trained as `want` did: parameters and AdamW's moments within `tol`, every
/// step's loss and gradient norm within float tolerance.
fn assert_close(got: &Outcome, want: &Outcome, tol: f32, what: &str) {
    let dp = largest_difference(&got.model.params, &want.model.params);
    let (dm, dv) = (
        largest_difference(&got.adam.m, &want.adam.m),
        largest_difference(&got.adam.v, &want.adam.v),
    );
    println!("{what}: params differ by {dp:e}, AdamW m by {dm:e}, v by {dv:e}");
    assert!(dp <= tol, "{what}: params differ by {dp:e}");
    assert!(dm <= tol && dv <= tol, "{what}: AdamW m {dm:e}, v {dv:e}");
    // a resumed run's rows start later: compare the steps both ran
    let first = got.rows.first().map_or(0, |r| r.step);
    let want_rows: Vec<_> = want.rows.iter().filter(|r| r.step >= first).collect();
    assert_eq!(got.rows.len(), want_rows.len(), "{what}");
    common::assert_steps_close(&got.rows, want_rows, 1e-5, what);
}

#[test]
fn deterministic_sharded_pipelines_equal_replicated_ones_and_data_parallelism() {
    // 12 channels: tensor and stage boundaries off multiples of 8; 5 blocks: uneven stages
    for (layers, embd) in [(4, 32), (5, 12)] {
        let mut base = tiny(layers, embd);
        base.parallel.deterministic = true;
        for replicas in [2, 3] {
            let dp = run(&with(&base, replicas, 1, 1, 0));
            for (pp, micro, s) in [
                (2, 2, PipeSchedule::GPipe),
                (2, 2, PipeSchedule::OneFOneB),
                (3, 1, PipeSchedule::OneFOneB),
                (2, 2, PipeSchedule::ZeroBubble),
            ] {
                let mut zero0 = with(&base, replicas * pp, pp, micro, 0);
                zero0.parallel.schedule = s;
                let mut zero1 = zero0.clone();
                zero1.parallel.zero = 1;
                let (a, b) = (run(&zero0), run(&zero1));
                let what = format!(
                    "L={layers} C={embd} --workers {} --pp {pp} --micro {micro} {s:?}",
                    replicas * pp
                );
                assert_eq!(
                    b.summary.param_hash, a.summary.param_hash,
                    "{what} --zero 1"
                );
                assert_eq!(
                    a.summary.param_hash, dp.summary.param_hash,
                    "{what} --zero 0"
                );
                assert_eq!(
                    b.adam, a.adam,
                    "{what}: AdamW state, gathered from the parts"
                );
                for (x, y) in b.rows.iter().zip(&a.rows) {
                    assert_eq!(x.grad_norm, y.grad_norm, "{what}: step {}", x.step);
                    assert_eq!(x.loss, y.loss, "{what}: step {}", x.step);
                }
            }
        }
    }
}

#[test]
fn default_mode_sharded_pipelines_match_replicated_ones() {
    let base = tiny(4, 32);
    for (workers, pp, micro) in [(2, 2, 2), (4, 2, 2), (6, 2, 2), (6, 3, 2)] {
        let zero0 = run(&with(&base, workers, pp, micro, 0));
        let zero1 = run(&with(&base, workers, pp, micro, 1));
        let what = format!("--workers {workers} --pp {pp} --micro {micro} --zero 1");
        assert_close(&zero1, &zero0, 1e-6, &what);
    }
}

#[test]
fn sharded_tensor_parallel_pipelines_match_replicated_ones() {
    // 2 replicas of a 2-stage pipeline of 2-way tensor groups, with and without --sp
    for sp in [false, true] {
        let mut c = with(&tiny(4, 32), 8, 2, 2, 0);
        (c.parallel.tp, c.parallel.sp) = (2, sp);
        let zero0 = run(&c);
        c.parallel.zero = 1;
        let zero1 = run(&c);
        let what = format!("--workers 8 --tp 2 --pp 2 --zero 1 (--sp {sp})");
        assert_close(&zero1, &zero0, 1e-6, &what);
        let m = zero1.summary.memory.expect("the stage's parts recorded");
        assert_eq!((m.stage, m.workers), (1, 2), "{what}");
    }
}

/// The state a run of `cfg` hands to be checkpointed after `step` steps.
fn checkpoint_at(cfg: &TrainConfig, step: usize) -> TrainState {
    let mut cfg = cfg.clone();
    cfg.schedule.checkpoint_every = step;
    let mut saved = None;
    let opts = RunOptions {
        final_eval: false,
        ..RunOptions::default()
    };
    let init = train::initial_state(&cfg);
    train::train(&cfg, corpus(), init, &opts, |e| {
        if let Event::Checkpoint(s) = e {
            if s.step == step {
                saved = Some(s);
            }
        }
        Ok(())
    })
    .expect("training runs");
    saved.expect("a checkpoint at the step")
}

#[test]
fn a_sharded_pipeline_checkpoint_resumes_at_other_layouts_and_back() {
    let mut base = tiny(4, 32);
    base.schedule.steps = 6;
    let straight = run(&with(&base, 4, 2, 2, 1));
    // saved mid-run at --pp 2 --zero 1 (the run goes on past the save)...
    let state = checkpoint_at(&with(&base, 4, 2, 2, 1), 3);
    assert_eq!(
        state.adam.m.len(),
        state.params.len(),
        "whole AdamW moments"
    );
    assert_eq!(state.adam.t, 3);
    // ...continued by data parallelism, a replicated pipeline and a sharded one
    for (workers, pp, micro, zero) in [(2, 1, 1, 0), (4, 2, 2, 0), (4, 2, 2, 1), (6, 3, 2, 1)] {
        let mut c = with(&base, workers, pp, micro, zero);
        c.parallel.accum = if pp == 1 { 2 } else { 1 };
        let on = run_from(&c, state.clone());
        let what = format!("resumed at --workers {workers} --pp {pp} --zero {zero}");
        assert_close(&on, &straight, 1e-5, &what);
    }
    // and a replicated pipeline's checkpoint resumes sharded
    let state = checkpoint_at(&with(&base, 4, 2, 2, 0), 3);
    let on = run_from(&with(&base, 4, 2, 2, 1), state);
    assert_close(&on, &straight, 1e-5, "--zero 0 resumed at --zero 1");
}

#[test]
fn deterministic_sharded_pipeline_checkpoint_resumes_bit_for_bit() {
    let mut base = tiny(4, 32);
    base.parallel.deterministic = true;
    let straight = run(&with(&base, 2, 1, 1, 0));
    let state = checkpoint_at(&with(&base, 4, 2, 2, 1), 2);
    let on_dp = run_from(&with(&base, 2, 1, 1, 0), state.clone());
    let on_pp = run_from(&with(&base, 4, 2, 2, 0), state);
    assert_eq!(on_dp.summary.param_hash, straight.summary.param_hash);
    assert_eq!(on_pp.summary.param_hash, straight.summary.param_hash);
}

#[test]
fn summary_memory_holds_the_stage_part_of_adamw() {
    let base = tiny(4, 32);
    let out = run(&with(&base, 4, 2, 2, 1));
    let m = out
        .summary
        .memory
        .expect("a sharded pipeline records its memory");
    assert_eq!((m.stage, m.workers), (1, 2));
    // rank 0 is stage 0: wte, wpe and 2 of the 4 blocks
    let layout = nanodist::model::ParamLayout::new(&base.model);
    let stage0 = pipeline::owned(&layout, &pipeline::split(4, 2)[0]).len();
    assert_eq!(m.num_params, stage0, "stage 0's parameters");
    assert_eq!(m.predicted.optimizer, 8 * stage0 as u64 / 2);
    // its part: whole norm chunks, so within one chunk's moments of half
    let half = m.predicted.optimizer as i64;
    let chunk = 8 * nanodist::optim::NORM_CHUNK as i64;
    assert!(
        (m.measured.optimizer as i64 - half).abs() <= chunk,
        "{} vs {half}",
        m.measured.optimizer
    );
    // the replicated pipeline records none (its AdamW state is the stage's, whole)
    assert!(run(&with(&base, 4, 2, 2, 0)).summary.memory.is_none());
}
