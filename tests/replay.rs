//! The training loop replayed by hand: every figure of a run against a loop written here
//! from the formulas (nanoGPT's `get_lr`, PyTorch's `clip_grad_norm_` and `AdamW`), with
//! only the model's forward and backward taken from the library.
//!
//! ```text
//!   train::train(cfg)                          replay(cfg) in this file
//!   -----------------                          ------------------------
//!   worker w, micro-batch k: forward/backward  the same sequences, forward/backward
//!   all-reduce (sum)                           g = g_0 + g_1 (two workers: one addition,
//!                                                             exact in any order)
//!   clip + AdamW (src/optim.rs)                clip + AdamW as PyTorch writes them
//!   rows: loss, lr, grad_norm; evals           the same figures
//! ```
//!
//! Why the optimizer needs its own check: the "N workers == 1 worker" and accumulation tests
//! in `train.rs` run the same optimizer on both sides, so a wrong optimizer (no weight decay,
//! a frozen bias correction, a linear schedule) cancels out there. Here it does not.
//!
//! Tolerance. The replay computes the same values with the operations in another order
//! (a division by sqrt(1 - b2^t) where the library multiplies by its inverse, a sequential
//! sum of squares where it keeps 8), so single values differ in the last bit of an f32. The
//! largest parameter difference measured over the runs below is `MEASURED_PARAM`; the
//! tolerance is ten times it. A planted bug moves parameters by far more: dropping weight
//! decay by lr * wd * |p| ~ 1e-5 per step, freezing the bias correction by ~lr = 1e-2,
//! a linear schedule by a few percent of the learning rate.

use nanodist::collective::{chunk_range, Algorithm};
use nanodist::config::{ModelConfig, TrainConfig};
use nanodist::data::{self, sampler, Corpus};
use nanodist::model::{Gpt, Workspace};
use nanodist::train::{self, Event, Outcome, RunOptions};

/// The largest |difference| in any parameter between the library and the replay: one ulp
/// of a weight near 1 (a layer norm's).
const MEASURED_PARAM: f32 = 1.2e-7;
/// The largest relative difference of a loss, validation loss or gradient norm (the
/// three-worker losses against one worker's included).
const MEASURED_RELATIVE: f64 = 7.3e-8;

fn corpus() -> &'static Corpus {
    static CORPUS: std::sync::OnceLock<Corpus> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| data::load("tales", 7).expect("built-in corpus"))
}

/// A tiny model trained long enough to reach the middle of the cosine decay, with a
/// learning rate large enough for weight decay to show, and a clip that bites on some
/// steps and not on others.
fn tiny(workers: usize, accum: usize) -> TrainConfig {
    let mut cfg = TrainConfig {
        model: ModelConfig {
            vocab_size: corpus().vocab.len(),
            block_size: 16,
            n_layer: 2,
            n_head: 2,
            n_embd: 32,
        },
        seed: 5,
        ..TrainConfig::default()
    };
    let p = &mut cfg.parallel;
    (p.workers, p.accum, p.batch) = (workers, accum, 12);
    let o = &mut cfg.optim;
    (o.lr, o.min_lr, o.warmup, o.weight_decay, o.grad_clip) = (1e-2, 1e-3, 2, 0.1, 1.0);
    let s = &mut cfg.schedule;
    (s.steps, s.eval_every, s.eval_windows) = (10, 5, 24);
    cfg
}

/// What a run reports, from the library or from the replay.
#[derive(Debug, Default)]
struct Figures {
    params: Vec<f32>,
    /// Per step: mean loss over the global batch, learning rate, gradient norm.
    loss: Vec<f64>,
    lr: Vec<f64>,
    grad_norm: Vec<f64>,
    /// (steps done, validation loss) of the periodic evaluations.
    evals: Vec<(usize, f64)>,
    /// The final validation loss over all windows.
    val_loss: f64,
    /// The AdamW step count.
    adam_t: u64,
}

/// The library's run of `cfg`; `final_eval`: with the validation loss over all windows
/// (about a second; NaN without).
fn run(cfg: &TrainConfig, final_eval: bool) -> Figures {
    let mut f = Figures::default();
    let opts = RunOptions {
        final_eval,
        ..RunOptions::default()
    };
    let out: Outcome = train::train(cfg, corpus(), train::initial_state(cfg), &opts, |e| {
        match e {
            Event::Step(row) => {
                f.loss.push(row.loss);
                f.lr.push(row.lr);
                f.grad_norm.push(row.grad_norm);
            }
            Event::Eval { step, val_loss } => f.evals.push((step, val_loss)),
            Event::Checkpoint(_) => {}
        }
        Ok(())
    })
    .expect("training runs");
    let tail = &f.loss[f.loss.len().saturating_sub(50)..];
    let train_loss = tail.iter().sum::<f64>() / tail.len() as f64;
    assert_eq!(out.summary.train_loss, train_loss, "summary train_loss");
    f.params = out.model.params;
    f.val_loss = out.summary.val_loss;
    f.adam_t = out.adam.t;
    f
}

/// nanoGPT's `get_lr`: linear warm-up, cosine decay to `min_lr` at the last step.
fn lr_at(cfg: &TrainConfig, it: usize) -> f32 {
    let (o, steps) = (&cfg.optim, cfg.schedule.steps);
    if it < o.warmup {
        return o.lr * (it + 1) as f32 / (o.warmup + 1) as f32;
    }
    if it >= steps {
        return o.min_lr;
    }
    let ratio = (it - o.warmup) as f64 / (steps - o.warmup) as f64;
    let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
    (o.min_lr as f64 + coeff * (o.lr - o.min_lr) as f64) as f32
}

/// The mean validation loss of `model` over `windows`, one window at a time.
fn val_loss(model: &Gpt, windows: &[usize]) -> f64 {
    let t = model.cfg.block_size;
    let mut ws = Workspace::new(&model.cfg, 1, t);
    let (mut x, mut y) = (vec![0; t], vec![0; t]);
    let mut sum = 0.0;
    for &w in windows {
        sampler::fill_val(&corpus().val, w..w + 1, t, &mut x, &mut y);
        sum += model.forward(&mut ws, &x, Some(&y)).unwrap() as f64;
    }
    sum / windows.len() as f64
}

/// The training loop of `cfg`, written out.
fn replay(cfg: &TrainConfig) -> Figures {
    let (n, k, b) = (cfg.parallel.workers, cfg.parallel.accum, cfg.parallel.batch);
    let t = cfg.model.block_size;
    let (micro, per_worker) = (b / (n * k), b / n);
    let o = &cfg.optim;
    let mut model = Gpt::new(cfg.model.clone(), cfg.seed);
    let len = model.params.len();
    let (mut m, mut v) = (vec![0f32; len], vec![0f32; len]);
    let mut ws = Workspace::new(&cfg.model, micro, t);
    let (mut x, mut y) = (vec![0; micro * t], vec![0; micro * t]);
    let subset = sampler::eval_subset(corpus().val.len(), t, cfg.schedule.eval_windows);
    let mut f = Figures::default();
    for step in 0..cfg.schedule.steps {
        // each worker's gradient: its K micro-batches accumulated
        let mut total: Option<Vec<f32>> = None;
        let mut losses = 0f64;
        for w in 0..n {
            let mut g = vec![0f32; len];
            let mut loss = 0f32;
            for kk in 0..k {
                let start = w * per_worker + kk * micro;
                let seqs = start..start + micro;
                sampler::fill_batch(
                    &corpus().train,
                    cfg.seed,
                    step as u64,
                    seqs,
                    t,
                    &mut x,
                    &mut y,
                );
                loss += model.forward(&mut ws, &x, Some(&y)).unwrap();
                model.backward(&mut ws, 1.0 / (b * t) as f32, &mut g[..]);
            }
            losses += (loss / k as f32) as f64;
            total = Some(match total {
                None => g,
                Some(sum) => sum.iter().zip(&g).map(|(a, b)| a + b).collect(),
            });
        }
        let g = total.unwrap();
        // clip_grad_norm_: the global L2 norm, and g * max_norm / (norm + 1e-6) above it
        let norm = g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let coef = o.grad_clip as f64 / (norm + 1e-6);
        let clip = if coef < 1.0 { coef as f32 } else { 1.0 };
        // AdamW, step t (1-based), PyTorch's single-tensor form
        let lr = lr_at(cfg, step);
        let tt = step as i32 + 1;
        let bc1 = 1.0 - (o.beta1 as f64).powi(tt);
        let bc2_sqrt = (1.0 - (o.beta2 as f64).powi(tt)).sqrt();
        let step_size = (lr as f64 / bc1) as f32;
        for tensor in &model.layout.tensors {
            for i in tensor.offset..tensor.offset + tensor.len {
                let gi = g[i] * clip;
                if tensor.decay {
                    model.params[i] *= 1.0 - lr * o.weight_decay;
                }
                m[i] += (gi - m[i]) * (1.0 - o.beta1);
                v[i] = v[i] * o.beta2 + (1.0 - o.beta2) * gi * gi;
                let denom = (v[i].sqrt() as f64 / bc2_sqrt) as f32 + o.eps;
                model.params[i] -= step_size * m[i] / denom;
            }
        }
        f.loss.push(losses / n as f64);
        f.lr.push(lr as f64);
        f.grad_norm.push(norm);
        let done = step + 1;
        let every = cfg.schedule.eval_every;
        if every > 0 && done % every == 0 && done < cfg.schedule.steps {
            f.evals.push((done, val_loss(&model, &subset)));
        }
    }
    let all: Vec<usize> = (0..sampler::val_windows(corpus().val.len(), t)).collect();
    f.val_loss = val_loss(&model, &all);
    f.params = model.params;
    f.adam_t = cfg.schedule.steps as u64;
    f
}

/// Largest |a - b| and where.
fn largest_difference(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    let mut worst = (0f32, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        // a NaN on either side is infinitely far from anything
        let d = if x.is_nan() || y.is_nan() {
            f32::INFINITY
        } else {
            (x - y).abs()
        };
        if d > worst.0 {
            worst = (d, i);
        }
    }
    worst
}

/// |a - b| relative to |b|; infinite where either is NaN (`f64::max` would drop a NaN).
fn relative(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::INFINITY;
    }
    (a - b).abs() / b.abs().max(1e-30)
}

/// Every figure of `got` against the replay's `want`, printing the measured differences
/// (run with `--nocapture` to re-measure the tolerances).
fn assert_matches(got: &Figures, want: &Figures, what: &str) {
    let (d, at) = largest_difference(&got.params, &want.params);
    let rel = (got.loss.iter().zip(&want.loss))
        .chain(got.grad_norm.iter().zip(&want.grad_norm))
        .chain(
            got.evals
                .iter()
                .map(|e| &e.1)
                .zip(want.evals.iter().map(|e| &e.1)),
        )
        .chain(
            [(&got.val_loss, &want.val_loss)]
                .into_iter()
                .filter(|v| !v.0.is_nan()),
        )
        .map(|(a, b)| relative(*a, *b))
        .fold(0.0, f64::max);
    println!("{what}: parameters differ by at most {d:e} (at {at}), figures by {rel:e} relative");
    assert!(
        d <= 10.0 * MEASURED_PARAM,
        "{what}: parameter {at} is {} in the run, {} in the replay (difference {d:e}, tolerance {:e})",
        got.params[at],
        want.params[at],
        10.0 * MEASURED_PARAM
    );
    assert_eq!(got.lr, want.lr, "{what}: the learning rates");
    assert_eq!(got.loss.len(), want.loss.len(), "{what}: steps");
    assert_eq!(
        got.evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        want.evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        "{what}: evaluation steps"
    );
    assert_eq!(got.adam_t, want.adam_t, "{what}: AdamW's t");
    assert!(
        rel <= 10.0 * MEASURED_RELATIVE,
        "{what}: a loss or gradient norm differs by {rel:e} relative (tolerance {:e}):\nrun    {:?} {:?} {:?} {}\nreplay {:?} {:?} {:?} {}",
        10.0 * MEASURED_RELATIVE,
        got.loss,
        got.grad_norm,
        got.evals,
        got.val_loss,
        want.loss,
        want.grad_norm,
        want.evals,
        want.val_loss
    );
}

/// The configuration reaches what it is meant to: warm-up, the middle of the cosine decay,
/// steps clipped and steps not.
fn assert_exercised(cfg: &TrainConfig, want: &Figures) {
    let o = &cfg.optim;
    let mid = (want.lr.iter().enumerate())
        .filter(|&(s, &lr)| s > o.warmup && lr > o.min_lr as f64 * 1.5 && lr < o.lr as f64 * 0.9)
        .count();
    assert!(mid >= 3, "steps in mid-decay: {:?}", want.lr);
    let clipped = (want.grad_norm.iter())
        .filter(|&&g| g > o.grad_clip as f64)
        .count();
    assert!(
        clipped > 0 && clipped < want.grad_norm.len(),
        "clipped on {clipped} of the steps: {:?}",
        want.grad_norm
    );
}

#[test]
fn one_worker_run_equals_the_hand_written_loop() {
    let cfg = tiny(1, 1);
    let want = replay(&cfg);
    assert_exercised(&cfg, &want);
    assert_matches(&run(&cfg, true), &want, "1 worker");
}

/// Two workers with two micro-batches each, every algorithm, plain and overlapped (the
/// buckets leave during the LAST micro-batch's backward): all the replay of the same split,
/// and every replica identical after every step.
#[test]
fn two_workers_accumulating_and_overlapping_equal_the_hand_written_loop() {
    let want = replay(&tiny(2, 2));
    for algo in Algorithm::ALL {
        for (bucket_kb, overlap) in [(0, false), (1, true), (0, true)] {
            let mut cfg = tiny(2, 2);
            cfg.parallel.allreduce = algo;
            (cfg.parallel.bucket_kb, cfg.parallel.overlap) = (bucket_kb, overlap);
            cfg.schedule.check_replicas = 1;
            let what = format!(
                "2 workers x 2 micro-batches, {algo:?}, bucket {bucket_kb} KiB, overlap {overlap}"
            );
            // the final evaluation is the three-worker test's
            assert_matches(&run(&cfg, false), &want, &what);
        }
    }
}

/// Three workers evaluate a third of the windows each and sum: the validation losses and
/// the reported train losses are the one-worker figures (their own parameters differ from
/// one worker's in the last bits only, through the order of the three-way sums).
#[test]
fn three_workers_report_the_losses_of_the_whole_batch() {
    let (one, three) = (replay(&tiny(1, 1)), run(&tiny(3, 1), true));
    let rel = |a: &[f64], b: &[f64]| {
        (a.iter().zip(b))
            .map(|(a, b)| relative(*a, *b))
            .fold(0.0, f64::max)
    };
    let evals = |f: &Figures| f.evals.iter().map(|e| e.1).collect::<Vec<_>>();
    let (dl, de) = (
        rel(&three.loss, &one.loss),
        rel(&evals(&three), &evals(&one)),
    );
    let dv = relative(three.val_loss, one.val_loss);
    println!("3 workers vs 1: losses {dl:e}, evals {de:e}, final {dv:e} relative");
    // the windows of the evaluation really are split: each worker's share alone is off
    let subset = sampler::eval_subset(corpus().val.len(), 16, 24);
    let mine = &subset[chunk_range(subset.len(), 3, 0)];
    let model = Gpt::from_params(tiny(1, 1).model, three.params.clone());
    let share = relative(val_loss(&model, mine), val_loss(&model, &subset));
    assert!(
        share > 1e-3,
        "worker 0's windows alone give the same loss ({share:e})"
    );
    for (d, what) in [
        (dl, "train losses"),
        (de, "evaluations"),
        (dv, "final val_loss"),
    ] {
        assert!(
            d <= 10.0 * MEASURED_RELATIVE,
            "{what} differ by {d:e} relative"
        );
    }
}
