//! `nanodist scale --calibrate`: the cost model fed this machine's figures, against nanodist's
//! own runs: data parallel, each ZeRO stage, tensor and pipeline parallel on threads.
//!
//! ```text
//!   all-reduce alone, timed      -> a + bytes * b        the "link"  (per n and algorithm)
//!   n replicas side by side      -> FLOP/s per core      the "GPU"   (n cores busy), one
//!                                                        rate per matrix shape:
//!       replicas of B/n                 data parallelism, ZeRO
//!       P stages side by side, no       a pipeline stage: its layers and ends, its M
//!         communication, in the           micro-batches in the schedule's order, its
//!         schedule's order                AdamW
//!       x block kernels T-slice/whole   a tensor-parallel worker's C x C/T slices
//!   n threads: compute, barrier  -> Hardware::sync_s     what a synchronisation point costs
//!      vs the same compute alone                         when partners compute up to it
//!   n threads: block backwards,  -> Hardware::handoff_s  what a hand-off to a communication
//!      each handed to a comm thread                      thread costs when no core is free
//!      that meets its partners'                          for it (overlap, cores <= workers)
//!      vs the same, meeting once
//!   predict(calibrated_cpu(..))  -> step time      vs    nanodist train ... -> step time
//!
//!   layout of each case, as the model reads it (2 workers; points: time::sync_points):
//!     data parallel      dp 2                   1 all-reduce a step, 1 point
//!     --overlap          dp 2, 2 cores          nothing hidden, + min(buckets, l + 1)
//!                                               hand-offs
//!     --zero 1|2|3       dp 2, zero stage s     1, 2: one all-reduce's bytes; 3: 1.5 of them;
//!                                               3, 8, 12 points
//!     --tp 2             tp 2, dp 1             4 all-reduces of b x T x C per layer, on the
//!                                               path, each a point: 16
//!     --pp 2 --micro 4   pp 2, m 4, b = B/4     (m + p - 1) slots of t_mb, 2 sends and 2
//!                                               points per slot, 2 barriers a step
//! ```
//!
//! Each case is predicted under its own `--schedule` (the model's [`ScaleConfig::schedule`]).
//! The list has no `--schedule zb` case: one more pipeline case and its stage rate would
//! lengthen a calibration of ten cases by a tenth or more (the zb bubble formula is checked
//! against the schedule's unit-time simulation in the model's tests instead).
//!
//! The model is fed only figures measured outside the runs it predicts: the rates come from
//! replicas and stages that never communicate and from the block's matrix products alone,
//! the link from the all-reduce alone, the synchronisation point from threads that compute
//! and meet at a barrier, the hand-off from threads that hand work to a meeting thread. The
//! configurations run in interleaved rounds, each case's figures measured just before it in
//! the same round, so that a slow moment of a shared host lands on a case and its figures
//! together; a row shows the case's fastest round beside the prediction from that round's
//! figures, the median over the rounds of each round's ratio, and every round's ratio.

use std::path::Path;
use std::time::Instant;

use nanodist::collective::{self, Algorithm, Comm};
use nanodist::config::{PipeSchedule, TrainConfig};
use nanodist::metrics::Summary;
use nanodist::model::linear::{linear_backward, linear_forward};
use nanodist::model::matmul::Out;
use nanodist::model::{Deferred, Gpt, ParamLayout, Workspace};
use nanodist::optim::AdamW;
use nanodist::parallel::buckets;
use nanodist::parallel::pipeline::{self, schedule};
use nanodist::scale::{predict, Hardware, ModelShape, Precision, Prediction, ScaleConfig};
use nanodist::train::{self, RunOptions};
use nanodist::{data, Error};
use serde::Serialize;

/// One configuration of nanodist's own training, as the cost model sees it and as it ran.
#[derive(Clone, Debug, Serialize)]
struct Row {
    /// The flags that make it: `nanodist train --workers 2 --allreduce ring ...`.
    flags: String,
    workers: usize,
    predicted_ms: f64,
    /// Predicted compute, exposed exchange (DP not hidden + hand-offs to the communication
    /// thread + TP all-reduces + pipeline sends), synchronisation points and pipeline
    /// bubble; they add up to `predicted_ms`.
    predicted_compute_ms: f64,
    predicted_exchange_ms: f64,
    predicted_sync_ms: f64,
    predicted_bubble_ms: f64,
    /// The hand-offs' part of `predicted_exchange_ms` (overlap on shared cores).
    predicted_handoff_ms: f64,
    /// Synchronisation points on the path outside the bubble (`nanodist::scale::sync_points`).
    sync_points: f64,
    /// Hand-offs of buckets to the communication thread a step (0 unless overlapped on
    /// cores that all compute).
    handoffs: f64,
    /// The figures the prediction is fed, measured just before the run: the FLOP/s per
    /// core its compute is priced at (at its matrix shapes, named in `shape`), what one
    /// synchronisation point costs and what one hand-off costs.
    flops_per_core: f64,
    sync_s_per_point: f64,
    handoff_s: f64,
    shape: String,
    /// The fastest round's median step, and its split.
    measured_ms: f64,
    measured_compute_ms: f64,
    measured_comm_ms: f64,
    measured_wait_ms: f64,
    /// predicted / measured, in the fastest round.
    ratio: f64,
    /// The median over the rounds of each round's predicted / measured.
    median_ratio: f64,
    /// Every round's predicted / measured and measured ms per step, in round order: a
    /// spread of the measured steps that the ratios follow is the host; ratios that stay
    /// on one side of 1 round after round are the model.
    round_ratios: Vec<f64>,
    round_measured_ms: Vec<f64>,
}

/// The figures a case's prediction is fed, measured outside its run.
#[derive(Clone, Copy, Debug)]
struct Figures {
    /// FLOP/s per core at the case's matrix shapes ([`Shape`]).
    rate: f64,
    /// Seconds per synchronisation point ([`sync_cost`]).
    sync_s: f64,
    /// Seconds per hand-off to a communication thread on a busy core ([`handoff_cost`]);
    /// measured for the overlapped cases only (0 otherwise, and unused).
    handoff_s: f64,
}

impl Figures {
    /// A rate alone: no meetings, no hand-offs (one worker).
    fn rate(rate: f64) -> Figures {
        Figures {
            rate,
            sync_s: 0.0,
            handoff_s: 0.0,
        }
    }
}

/// One round of one case: its figures, measured just before it, and its run.
struct Trial {
    summary: Summary,
    figures: Figures,
}

/// A configuration to run: its label flags and its training configuration.
struct Case {
    flags: String,
    cfg: TrainConfig,
}

/// Configurations nanodist has that the model does not represent, and why.
const NOT_MODELLED: [(&str, &str); 2] = [
    (
        "--deterministic",
        "runs each sequence through forward and backward on its own and sums gradients as i64 \
         fixed point: its rate per FLOP is that of one-row matrix products plus a conversion \
         per gradient, a rate none of the calibrated FLOP/s figures holds",
    ),
    (
        "--accum K",
        "not run here; a replica with --accum K runs its K micro-batches one after another, \
         each forward then backward in one workspace: replicas trained with --accum K would \
         give its rate, the rest is data parallelism's",
    ),
];

/// The matrix shapes a case's worker multiplies: each has its own FLOP/s per core, measured
/// in the same rounds as the cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A replica's share, `B / N` sequences in one micro-batch: replicas side by side.
    Replica,
    /// A pipeline stage: `l / P` layers, the embeddings on the first and the head on the
    /// last, over `M` micro-batches of `B / (dp M)` sequences in the schedule's order (GPipe
    /// keeps all `M` micro-batches' activations alive, 1F1B at most `P`), then AdamW over
    /// its own tensors: `P` stages computing side by side with no communication, each as
    /// the pipeline's worker runs it ([`stage_rate`]).
    Stage {
        stages: usize,
        micro: usize,
        schedule: PipeSchedule,
    },
    /// A tensor-parallel worker: `B / dp` sequences over the C x C/T slices of every block:
    /// the replicas' rate, times the ratio of the block's matrix products at the slice's
    /// shapes to theirs at the replica's (both timed side by side on `N` threads).
    Slice { tp: usize },
}

impl Shape {
    /// The shapes `cfg`'s workers multiply.
    fn of(cfg: &TrainConfig) -> Shape {
        let p = &cfg.parallel;
        if p.tp > 1 {
            return Shape::Slice { tp: p.tp };
        }
        if p.pp > 1 && cfg.model.n_layer % p.pp == 0 {
            Shape::Stage {
                stages: p.pp,
                micro: p.micro.max(1),
                schedule: p.schedule,
            }
        } else {
            Shape::Replica
        }
    }

    /// As the table's column says it.
    fn describe(self, cfg: &TrainConfig) -> String {
        let share = cfg.parallel.batch / cfg.parallel.workers;
        match self {
            Shape::Replica => format!("replicas of {share}"),
            Shape::Stage {
                stages,
                micro,
                schedule,
            } => format!(
                "stages of {} layers, {micro} micro-batches of {}, {}",
                cfg.model.n_layer / stages,
                cfg.parallel.batch / cfg.data_parallel() / micro,
                schedule.name()
            ),
            Shape::Slice { tp } => format!("replicas of {share} x slice/whole kernels (tp {tp})"),
        }
    }
}

/// Forward-backward passes of a block's matrix products per [`kernel_rate`] (about 0.1 s
/// at the default model's size).
const KERNEL_REPS: usize = 6;

/// Meetings per [`sync_cost`] run (each after a few milliseconds of compute).
const SYNC_POINTS: usize = 40;

/// Backward passes per [`handoff_cost`] run (each with a hand-off after every block), and
/// runs of each kind (the fastest kept).
const HANDOFF_STEPS: usize = 8;
const HANDOFF_ROUNDS: usize = 3;

fn cases(workers: &[usize], base: &TrainConfig) -> Vec<Case> {
    let mut out = Vec::new();
    for &n in workers {
        let make = |algo: Algorithm, kb: usize, overlap: bool| {
            let mut cfg = base.clone();
            cfg.parallel.workers = n;
            (
                cfg.parallel.allreduce,
                cfg.parallel.bucket_kb,
                cfg.parallel.overlap,
            ) = (algo, kb, overlap);
            let mut flags = format!("--workers {n}");
            if n > 1 {
                flags += &format!(" --allreduce {}", algo.name());
                if kb > 0 {
                    flags += &format!(" --bucket-kb {kb}");
                }
                if overlap {
                    flags += " --overlap";
                }
            }
            Case { flags, cfg }
        };
        if n == 1 {
            out.push(make(Algorithm::Shared, 0, false));
        } else {
            out.push(make(Algorithm::Shared, 0, false));
            out.push(make(Algorithm::Ring, 0, false));
            out.push(make(Algorithm::Shared, 256, false));
            out.push(make(Algorithm::Shared, 256, true));
        }
        if n == 2 {
            // the other strategies on the same two workers, each with its own flags
            let other = |flags: &str, set: &dyn Fn(&mut TrainConfig)| {
                let mut cfg = base.clone();
                cfg.parallel.workers = n;
                set(&mut cfg);
                Case {
                    flags: format!("--workers {n} {flags}"),
                    cfg,
                }
            };
            for stage in 1..=3u8 {
                out.push(other(&format!("--zero {stage}"), &|c| {
                    c.parallel.zero = stage
                }));
            }
            out.push(other("--tp 2", &|c| c.parallel.tp = 2));
            out.push(other("--pp 2 --micro 4", &|c| {
                (c.parallel.pp, c.parallel.micro) = (2, 4);
            }));
        }
    }
    out
}

/// The model's prediction of one case: one "GPU" per worker, its FLOP/s measured, its link
/// the all-reduce fitted for this worker count and algorithm, laid out as the case runs
/// (its tensor and pipeline degrees, micro-batches and ZeRO stage): see [`scale_config`].
fn predict_case(
    cfg: &TrainConfig,
    figures: &Figures,
    fit: Option<&AlphaBetaFit>,
    cores: usize,
) -> Prediction {
    predict(&scale_config(cfg, figures, fit, cores))
        .expect("the worker counts divide the batch, checked before")
}

/// The cost model's configuration of one case: what [`predict_case`] predicts.
///
/// Overlap: the shared-memory and ring all-reduces are copies and sums done by the cores
/// themselves, not by a separate engine as a GPU's NVLink transfers are. Each worker's
/// communication thread needs a core of its own to run beside the backward: the model has
/// one (`Hardware::comm_core`) only when the machine has more cores than workers (each
/// worker computes on one thread). Without one the model hides nothing and charges each
/// hand-off of buckets to the thread its measured cost (`Hardware::with_shared_comm`).
///
/// Layout: `dp = N / (tp pp)` replicas; a pipeline's `--micro M` are its micro-batches, so
/// the model's micro-batch is `B / (dp M)` sequences (one micro-batch of `B / N` otherwise).
/// The tensor group's all-reduces and the pipeline's sends go over the same fitted link as
/// the gradients: with one bucket, the model's ring over 2 workers prices one all-reduce at
/// exactly the fit's `a + bytes b`, and one send at `a/2 + bytes b`.
///
/// Synchronisation: `sync_s` per point where the workers meet after computing (measured by
/// [`sync_cost`]); the model counts the layout's points (`nanodist::scale::sync_points`).
fn scale_config(
    cfg: &TrainConfig,
    figures: &Figures,
    fit: Option<&AlphaBetaFit>,
    cores: usize,
) -> ScaleConfig {
    let m = &cfg.model;
    let n = cfg.parallel.workers;
    let model = ModelShape::custom(
        "nanodist",
        m.n_layer,
        m.n_head,
        m.n_embd,
        m.block_size,
        m.vocab_size,
    );
    // The fit is the whole all-reduce, `a + bytes * b`; the model's ring over one node of n
    // costs 2(n-1) alpha + 2(n-1)/n bytes / beta and pays alpha once per message, so with k
    // buckets: alpha = k a / (2(n-1)), beta = 2(n-1)/n / b.
    let k = buckets::plan(
        m.num_params(),
        buckets::floats_for_kb(cfg.parallel.bucket_kb),
    )
    .len();
    let (alpha_s, bytes_per_s) = match fit {
        Some(f) if n > 1 => {
            let k = k as f64;
            let hops = 2.0 * (n - 1) as f64;
            (
                k * f.a_us * 1e-6 / hops,
                hops / n as f64 / (f.b_us_per_byte * 1e-6),
            )
        }
        _ => (0.0, f64::INFINITY),
    };
    let p = &cfg.parallel;
    let dp = (n / (p.tp * p.pp)).max(1);
    let micro = if p.pp > 1 { p.micro.max(1) } else { 1 };
    let mut hardware = Hardware::calibrated_cpu(figures.rate, alpha_s, bytes_per_s, 8e9)
        .with_sync(if n > 1 { figures.sync_s } else { 0.0 });
    if cores <= n {
        hardware = hardware.with_shared_comm(figures.handoff_s);
    }
    ScaleConfig {
        model,
        hardware,
        gpus: n,
        gpus_per_node: n,
        tp: p.tp,
        pp: p.pp,
        zero: p.zero as usize,
        micro_batch: p.batch / (dp * micro),
        batch: cfg.parallel.batch,
        recompute: false,
        schedule: p.schedule,
        precision: Precision::Fp32,
        dp_overlap: if cfg.parallel.overlap { 1.0 } else { 0.0 },
        buckets: k,
        ..ScaleConfig::default()
    }
}

/// The all-reduce of one worker count and algorithm, fitted: microseconds = a + bytes * b.
#[derive(Clone, Copy, Debug, Serialize)]
struct AlphaBetaFit {
    workers: usize,
    algo: &'static str,
    a_us: f64,
    b_us_per_byte: f64,
}

/// One worker's training of `batch` sequences in `accum` micro-batches, on a model of
/// `layers` layers otherwise `base`'s: a replica the rates are measured on.
fn replica(base: &TrainConfig, layers: usize, batch: usize, accum: usize) -> TrainConfig {
    let mut one = base.clone();
    one.model.n_layer = layers;
    (one.parallel.workers, one.parallel.batch) = (1, batch);
    one.parallel.accum = accum;
    one
}

/// FLOP/s per core of `n` independent copies of the one-worker replica `one` training side
/// by side, never communicating: what one "GPU" computes while the others compute too.
/// Megatron's matrix-product count over the mean of their median steps.
fn rate_per_core(one: &TrainConfig, corpus: &data::Corpus, n: usize) -> Result<f64, Error> {
    let flops = predict_case(one, &Figures::rate(1.0), None, 1).model_flops_per_step;
    // Replica 0 runs on this thread, as every case's training does, the others beside it.
    // Rust note: scoped threads may borrow `one` and `corpus`; each returns its own result.
    let steps: Vec<Result<f64, Error>> = std::thread::scope(|s| {
        let others: Vec<_> = (1..n)
            .map(|_| s.spawn(|| train_once(one, corpus).map(|s| s.step_ms_median)))
            .collect();
        let mine = train_once(one, corpus).map(|s| s.step_ms_median);
        let others = others
            .into_iter()
            .map(|h| h.join().expect("a replica panicked"));
        std::iter::once(mine).chain(others).collect()
    });
    let mean_ms = steps.into_iter().sum::<Result<f64, Error>>()? / n as f64;
    Ok(flops / (mean_ms / 1e3))
}

/// FLOP/s per core of `n` pipeline workers' stages computing side by side, with no
/// communication: worker `i` runs stage `i mod P` of the model split as the pipeline
/// splits it ([`pipeline::split`]), the schedule's forwards and backwards of `micro`
/// micro-batches of `B / (dp M)` sequences (each in the activation slot the pipeline gives
/// it: GPipe keeps all `M` alive), a received input and gradient copied in where the
/// pipeline receives them, then AdamW over the stage's tensors (the last stage's include the
/// tied `wte`). The model prices a stage at the step's FLOPs over the `n` workers, so the
/// rate is those FLOPs over the workers' mean median step. (The last stage holds the head
/// and the loss, the first the embeddings; with the default model their steps differ by a
/// few percent, less than one measurement's spread on a shared host, so the mean is taken,
/// not the slowest.)
fn stage_rate(
    base: &TrainConfig,
    n: usize,
    stages: usize,
    micro: usize,
    order: PipeSchedule,
) -> f64 {
    let mut cfg = base.clone();
    cfg.parallel.workers = n;
    (cfg.parallel.pp, cfg.parallel.micro, cfg.parallel.schedule) = (stages, micro, order);
    let flops = predict_case(&cfg, &Figures::rate(1.0), None, 1).model_flops_per_step;
    let (m, t, steps) = (&cfg.model, cfg.model.block_size, cfg.schedule.steps);
    let rows = cfg.parallel.batch / (n / stages).max(1) / micro;
    let parts = pipeline::split(m.n_layer, stages);
    let whole = Gpt::new(m.clone(), cfg.seed);
    let layout = whole.layout.clone();
    let secs: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let (part, cfg, layout) = (&parts[i % stages], &cfg, &layout);
                let mut model = whole.clone();
                s.spawn(move || {
                    let actions = schedule::actions(order, stages, i % stages, micro);
                    let in_flight = schedule::max_in_flight(&actions);
                    let mut slots: Vec<Workspace> = (0..in_flight)
                        .map(|_| Workspace::for_stage(&cfg.model, part, rows, t))
                        .collect();
                    // zb: each slot's kept output gradients, from its B to its W
                    let split = order == PipeSchedule::ZeroBubble;
                    let mut later: Vec<Deferred> = (0..if split { in_flight } else { 0 })
                        .map(|_| Deferred::for_stage(&cfg.model, part, rows, t))
                        .collect();
                    // the tensors this stage updates, as the pipeline's AdamW sees them
                    let mine = pipeline::owned(layout, part);
                    let tensors = (layout.tensors.iter())
                        .filter(|x| mine.contains(&x.offset) || (part.last && x.offset == 0))
                        .cloned()
                        .collect();
                    let update = ParamLayout {
                        tensors,
                        len: layout.len,
                    };
                    let mut adam = AdamW::new(layout.len);
                    let mut grads = vec![0.0f32; layout.len];
                    let tokens: Vec<u32> = (0..rows * t)
                        .map(|k| (k * 7 % cfg.model.vocab_size) as u32)
                        .collect();
                    let received: Vec<f32> = (0..rows * t * cfg.model.n_embd)
                        .map(|k| 0.01 * ((k % 13) as f32 - 6.0))
                        .collect();
                    let mut one_step = |model: &mut Gpt| {
                        grads.fill(0.0);
                        let (mut free, mut slot_of): (Vec<usize>, Vec<usize>) =
                            ((0..slots.len()).rev().collect(), vec![0; micro]);
                        for a in &actions {
                            match *a {
                                schedule::Action::Forward(mb) => {
                                    slot_of[mb] = free.pop().expect("a free slot");
                                    let ws = &mut slots[slot_of[mb]];
                                    if !part.first {
                                        ws.stage_input_mut().copy_from_slice(&received);
                                    }
                                    let x = part.first.then_some(&tokens[..]);
                                    let y = part.last.then_some(&tokens[..]);
                                    model.stage_forward(ws, part, x, y);
                                }
                                schedule::Action::Backward(mb) => {
                                    let ws = &mut slots[slot_of[mb]];
                                    if !part.last {
                                        ws.stage_grad_mut().copy_from_slice(&received);
                                    }
                                    match later.get_mut(slot_of[mb]) {
                                        Some(keep) => model
                                            .stage_backward_input(ws, part, 1e-3, &mut grads, keep),
                                        None => {
                                            model.stage_backward(ws, part, 1e-3, &mut grads);
                                            free.push(slot_of[mb]);
                                        }
                                    }
                                }
                                schedule::Action::Weight(mb) => {
                                    let (ws, kept) = (&slots[slot_of[mb]], &later[slot_of[mb]]);
                                    model.stage_weight_grads(ws, part, &mut grads, kept);
                                    free.push(slot_of[mb]);
                                }
                            }
                        }
                        let o = &cfg.optim;
                        adam.step_scaled(&mut model.params, &grads, &update, 1e-4, o, 1.0);
                    };
                    one_step(&mut model); // first touch of the buffers, untimed
                    let mut times: Vec<f64> = (0..steps)
                        .map(|_| {
                            let t0 = Instant::now();
                            one_step(&mut model);
                            t0.elapsed().as_secs_f64()
                        })
                        .collect();
                    times.sort_by(f64::total_cmp);
                    times[times.len() / 2]
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("a stage thread panicked"))
            .collect()
    });
    flops / n as f64 / (secs.iter().sum::<f64>() / n as f64)
}

/// FLOP/s per core at `shape` with `n` cores busy (see [`Shape`]).
fn measure_rate(
    base: &TrainConfig,
    corpus: &data::Corpus,
    n: usize,
    shape: Shape,
) -> Result<f64, Error> {
    let share = base.parallel.batch / n;
    let (c, t, l) = (base.model.n_embd, base.model.block_size, base.model.n_layer);
    Ok(match shape {
        Shape::Replica => rate_per_core(&replica(base, l, share, 1), corpus, n)?,
        Shape::Stage {
            stages,
            micro,
            schedule,
        } => stage_rate(base, n, stages, micro, schedule),
        Shape::Slice { tp } => {
            let rows = base.parallel.batch / (n / tp).max(1) * t;
            let whole = kernel_rate(n, share * t, c, 1, KERNEL_REPS);
            let slice = kernel_rate(n, rows, c, tp, KERNEL_REPS);
            rate_per_core(&replica(base, l, share, 1), corpus, n)? * slice / whole
        }
    })
}

/// A block's four linear layers, as one worker of a tensor group of `tp` holds them, on
/// `rows` tokens: `(fan_in, fan_out)` of `c_attn` (C, 3C/T), `attn.c_proj` (C/T, C), `c_fc`
/// (C, 4C/T), `mlp.c_proj` (4C/T, C). `tp = 1` is a whole block.
struct BlockKernels {
    rows: usize,
    layers: Vec<Kernel>,
}

/// One linear layer's buffers: input, weight, output, and their gradients.
struct Kernel {
    inp: Vec<f32>,
    w: Vec<f32>,
    out: Vec<f32>,
    dinp: Vec<f32>,
    dw: Vec<f32>,
}

impl BlockKernels {
    fn new(rows: usize, c: usize, tp: usize) -> BlockKernels {
        let shapes = [
            (c, 3 * c / tp),
            (c / tp, c),
            (c, 4 * c / tp),
            (4 * c / tp, c),
        ];
        let layers = shapes
            .iter()
            .map(|&(fan_in, fan_out)| Kernel {
                inp: vec![0.01; rows * fan_in],
                w: vec![0.01; fan_out * fan_in],
                out: vec![0.0; rows * fan_out],
                dinp: vec![0.0; rows * fan_in],
                dw: vec![0.0; fan_out * fan_in],
            })
            .collect();
        BlockKernels { rows, layers }
    }

    /// FLOPs of one [`BlockKernels::forward_backward`]: 6 per weight per row (2 forward, 4
    /// backward), Megatron's count.
    fn flops(&self) -> f64 {
        let weights: usize = self.layers.iter().map(|k| k.w.len()).sum();
        6.0 * (self.rows * weights) as f64
    }

    /// The attention half's linear layers forward: the stretch of compute between two of
    /// tensor parallelism's all-reduces, as [`sync_cost`] uses it.
    fn attention_forward(&mut self) {
        for k in &mut self.layers[..2] {
            linear_forward(&mut k.out, &k.inp, &k.w, self.rows, Out::Set, 1);
        }
    }

    /// Every layer backward, last first (its output taken as its gradient): the stretch of
    /// compute between two of backward's hand-offs of buckets, as [`handoff_cost`] uses it.
    fn backward(&mut self) {
        let rows = self.rows;
        self.layers.iter_mut().rev().for_each(|k| k.backward(rows));
    }

    /// Every layer forward, then backward (its output taken as its gradient).
    fn forward_backward(&mut self) {
        let rows = self.rows;
        for k in &mut self.layers {
            linear_forward(&mut k.out, &k.inp, &k.w, rows, Out::Set, 1);
            k.backward(rows);
        }
    }
}

impl Kernel {
    /// The layer's backward on `rows` rows, its output taken as its gradient.
    fn backward(&mut self, rows: usize) {
        let k = self;
        linear_backward(
            &mut k.dinp,
            &mut k.dw,
            &k.out,
            &k.inp,
            &k.w,
            rows,
            Out::Set,
            1,
        );
    }
}

/// FLOP/s per core of the block's matrix products at one shape (`rows` tokens, a `tp`-way
/// slice), `reps` forward-backward passes on each of `n` threads side by side (the cores as
/// busy as in the runs): the mean over the threads.
fn kernel_rate(n: usize, rows: usize, c: usize, tp: usize, reps: usize) -> f64 {
    let secs: Vec<(f64, f64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(move || {
                    let mut b = BlockKernels::new(rows, c, tp);
                    b.forward_backward(); // first touch of the buffers, untimed
                    let t0 = Instant::now();
                    for _ in 0..reps {
                        b.forward_backward();
                    }
                    (b.flops() * reps as f64, t0.elapsed().as_secs_f64())
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("a kernel thread panicked"))
            .collect()
    });
    let (flops, secs) = (secs[0].0, secs.iter().map(|x| x.1).sum::<f64>() / n as f64);
    flops / secs
}

/// The mean over `n` threads side by side of the seconds `body` returns; each thread gets its
/// endpoint of a fresh group of `n` and its own kernels at a replica's shape (`rows` tokens,
/// `c` channels).
fn mean_over_threads(
    n: usize,
    rows: usize,
    c: usize,
    body: impl Fn(Comm, BlockKernels) -> f64 + Sync,
) -> f64 {
    let body = &body;
    let secs: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (collective::group(n).into_iter())
            .map(|comm| s.spawn(move || body(comm, BlockKernels::new(rows, c, 1))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("a calibration thread panicked"))
            .collect()
    });
    secs.iter().sum::<f64>() / n as f64
}

/// Seconds one synchronisation point costs `n` workers that compute up to it: `n` threads
/// each run `points` stretches of the same compute (the attention half of a block's linear
/// layers forward at a replica's shape, the order of the stretch between two of tensor
/// parallelism's all-reduces), once meeting at the collectives' barrier after every
/// stretch, once not meeting at all; the difference of the threads' mean elapsed times,
/// per point. It holds what the model's link does not: partners that arrive apart (jitter,
/// a core taken by another process) and a sleeping waiter's wake-up. Never below 0.
fn sync_cost(n: usize, base: &TrainConfig, points: usize) -> f64 {
    let (c, rows) = (
        base.model.n_embd,
        base.parallel.batch / n * base.model.block_size,
    );
    let run = |meet: bool| -> f64 {
        mean_over_threads(n, rows, c, |mut comm, mut b| {
            b.attention_forward(); // first touch of the buffers, untimed
            if meet {
                comm.barrier().expect("a calibration thread left");
            }
            let t0 = Instant::now();
            for _ in 0..points {
                b.attention_forward();
                if meet {
                    comm.barrier().expect("a calibration thread left");
                }
            }
            t0.elapsed().as_secs_f64()
        })
    };
    // alternated, so that a change of the host's load between runs falls on both sides
    let (alone, met) = (run(false), run(true));
    let (alone, met) = (alone + run(false), met + run(true));
    ((met - alone) / 2.0 / points as f64).max(0.0)
}

/// Seconds one hand-off of buckets to a communication thread costs a worker whose core the
/// thread shares: `n` threads each run [`HANDOFF_STEPS`] backwards of `stretches` block
/// backwards (the linear layers' backward at a replica's shape), once as an overlapped
/// exchange runs them (each step a scoped communication thread, as the worker spawns one;
/// after every block a message down a channel wakes it and it meets its partners' threads at
/// the collectives' barrier; the worker joins it at the step's end) and once as the plain
/// exchange does (the workers meet once after the backward); alternated three times, the
/// difference of the fastest runs' mean elapsed times (over the threads), per hand-off. With as many workers as cores it holds
/// the thread's wake-up on a busy core, its meeting there, and what the backward loses to
/// both; the all-reduce's own work is not in it (the model charges that as the exchange).
/// Never below 0.
fn handoff_cost(n: usize, base: &TrainConfig, stretches: usize) -> f64 {
    let (c, rows) = (
        base.model.n_embd,
        base.parallel.batch / n * base.model.block_size,
    );
    let run = |handed: bool| -> f64 {
        mean_over_threads(n, rows, c, |mut comm, mut b| {
            b.backward(); // first touch of the buffers, untimed
            comm.barrier().expect("a calibration thread left");
            let t0 = Instant::now();
            for _ in 0..HANDOFF_STEPS {
                if !handed {
                    (0..stretches).for_each(|_| b.backward());
                    comm.barrier().expect("a calibration thread left");
                    continue;
                }
                let comm = &mut comm;
                std::thread::scope(|s| {
                    let (tx, rx) = crossbeam::channel::unbounded::<()>();
                    s.spawn(move || {
                        for () in rx {
                            comm.barrier().expect("a calibration thread left");
                        }
                    });
                    for _ in 0..stretches {
                        b.backward();
                        tx.send(()).expect("the communication thread is there");
                    }
                });
            }
            t0.elapsed().as_secs_f64()
        })
    };
    // alternated, so that a change of the host's load between runs falls on both sides,
    // and the fastest of each kept: a burst of another process's work lands on one run
    let (mut plain, mut handed) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..HANDOFF_ROUNDS {
        plain = plain.min(run(false));
        handed = handed.min(run(true));
    }
    ((handed - plain) / (HANDOFF_STEPS * stretches) as f64).max(0.0)
}

/// Trains `cfg` for its steps and returns its summary (no final evaluation).
fn train_once(cfg: &TrainConfig, corpus: &data::Corpus) -> Result<Summary, Error> {
    let opts = RunOptions {
        final_eval: false,
        ..RunOptions::default()
    };
    let init = train::initial_state(cfg);
    Ok(train::train(cfg, corpus, init, &opts, |_| Ok(()))?.summary)
}

/// Runs the calibration: `workers` counts, `steps` per run, `rounds` interleaved, the cases
/// whose flags contain one of `only` (all when empty); writes calibration.json and
/// calibration.md into `out` when given.
pub fn run(
    workers: &[usize],
    steps: usize,
    rounds: usize,
    only: &[String],
    out: Option<&Path>,
) -> Result<(), Error> {
    if workers.is_empty() || workers.contains(&0) {
        return Err(Error::Config(
            "--workers needs positive counts, e.g. --workers 1,2".into(),
        ));
    }
    if steps < 2 || rounds == 0 {
        return Err(Error::Config(
            "--steps must be at least 2 and --rounds at least 1 (e.g. --steps 20 --rounds 2)"
                .into(),
        ));
    }
    let mut base = TrainConfig::default();
    base.schedule.eval_every = 0;
    base.schedule.steps = steps;
    if let Some(&n) = workers.iter().find(|&&n| base.parallel.batch % n != 0) {
        return Err(Error::Config(format!(
            "--workers {n} does not divide the batch of {}: use counts dividing it (1, 2, 3, 4, 6, 12)",
            base.parallel.batch
        )));
    }
    let corpus = data::load(&base.data, base.seed)?;
    base.model.vocab_size = corpus.vocab.len();
    let all: Vec<Case> = cases(workers, &base)
        .into_iter()
        .filter(|c| only.is_empty() || only.iter().any(|o| c.flags.contains(o.as_str())))
        .collect();
    if all.is_empty() {
        return Err(Error::Config(format!(
            "--only {}: no configuration's flags contain it; use parts of the table's flags, e.g. --only overlap,\"pp 2\"",
            only.join(",")
        )));
    }
    for c in &all {
        c.cfg.validate()?;
        nanodist::config::check_memory(&c.cfg)?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_start = load_average();
    println!(
        "nanodist scale --calibrate: {} ({cores} cores), {} steps per run, {} round(s); load average {load_start}",
        cpu_model(),
        steps,
        rounds
    );

    // 1. the "link": the all-reduce alone, per worker count and algorithm
    let mut fits: Vec<AlphaBetaFit> = Vec::new();
    for c in all.iter().filter(|c| c.cfg.parallel.workers > 1) {
        let (n, algo) = (c.cfg.parallel.workers, c.cfg.parallel.allreduce);
        if fits.iter().any(|f| f.workers == n && f.algo == algo.name()) {
            continue;
        }
        crate::allreduce::check_memory(n, crate::allreduce::FIT_LARGEST)?;
        let f = crate::allreduce::fit_alpha_beta(n, algo, 20);
        let fit = AlphaBetaFit {
            workers: n,
            algo: algo.name(),
            a_us: f.alpha_us,
            b_us_per_byte: f.beta_us_per_byte,
        };
        println!(
            "  all-reduce {} on {n} workers, timed alone: {:.1} us + bytes / {:.2} GB/s",
            algo.name(),
            fit.a_us,
            1e-3 / fit.b_us_per_byte
        );
        fits.push(fit);
    }

    // a first run warms the allocator and the caches, so no case pays for it
    let mut warm = base.clone();
    warm.schedule.steps = 3;
    train_once(&warm, &corpus)?;

    // 2. in each round, every case: the figures its prediction needs (the "GPU" at its
    // shapes with n cores busy, what a synchronisation point costs, what a hand-off to the
    // communication thread costs), measured just before it runs, then the run; a slow
    // moment of a shared host lands on a case and its figures together
    let mut trials: Vec<Vec<Trial>> = all.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (c, tried) in all.iter().zip(trials.iter_mut()) {
            let (n, shape) = (c.cfg.parallel.workers, Shape::of(&c.cfg));
            let rate = measure_rate(&base, &corpus, n, shape)?;
            let sync_s = if n > 1 {
                sync_cost(n, &base, SYNC_POINTS)
            } else {
                0.0
            };
            // backward hands buckets over where it finishes a block and after the embeddings
            // block, the embeddings
            let handoff_s = if n > 1 && c.cfg.parallel.overlap {
                handoff_cost(n, &base, base.model.n_layer + 1)
            } else {
                0.0
            };
            let summary = train_once(&c.cfg, &corpus)?;
            println!(
                "  round {round}: nanodist train {:<56} {:8.2} ms per step  ({:.2} GFLOP/s per core, {:.0} us per point, {:.0} us per hand-off)",
                c.flags,
                summary.step_ms_median,
                rate / 1e9,
                sync_s * 1e6,
                handoff_s * 1e6
            );
            tried.push(Trial {
                summary,
                figures: Figures {
                    rate,
                    sync_s,
                    handoff_s,
                },
            });
        }
    }

    // 3. every case predicted from its figures alone; its row shows the fastest round, the
    // prediction from that round's figures, and every round's ratio
    let rows: Vec<Row> = all
        .iter()
        .zip(trials)
        .map(|(c, tried)| {
            let n = c.cfg.parallel.workers;
            let fit = fits
                .iter()
                .find(|f| f.workers == n && f.algo == c.cfg.parallel.allreduce.name());
            let pred = |t: &Trial| predict_case(&c.cfg, &t.figures, fit, cores);
            let round_ratios: Vec<f64> = tried
                .iter()
                .map(|t| pred(t).step_s * 1e3 / t.summary.step_ms_median)
                .collect();
            let mut sorted = round_ratios.clone();
            sorted.sort_by(f64::total_cmp);
            let median_ratio = sorted[sorted.len() / 2];
            let best = (tried.iter())
                .min_by(|a, b| (a.summary.step_ms_median).total_cmp(&b.summary.step_ms_median))
                .expect("every case ran");
            let (p, s) = (pred(best), &best.summary);
            let t = &p.time;
            let exposed = t.dp_s - t.dp_hidden_s + t.handoff_s + t.tp_s + t.pp_s;
            Row {
                flags: c.flags.clone(),
                workers: n,
                predicted_ms: p.step_s * 1e3,
                predicted_compute_ms: t.compute_s * 1e3,
                predicted_exchange_ms: exposed * 1e3,
                predicted_sync_ms: t.sync_s * 1e3,
                predicted_bubble_ms: t.bubble_s * 1e3,
                predicted_handoff_ms: t.handoff_s * 1e3,
                sync_points: t.sync_points,
                handoffs: t.handoffs,
                flops_per_core: best.figures.rate,
                sync_s_per_point: best.figures.sync_s,
                handoff_s: best.figures.handoff_s,
                shape: Shape::of(&c.cfg).describe(&c.cfg),
                measured_ms: s.step_ms_median,
                measured_compute_ms: s.compute_ms_median,
                measured_comm_ms: s.comm_ms_median,
                measured_wait_ms: s.wait_ms_median,
                ratio: p.step_s * 1e3 / s.step_ms_median,
                median_ratio,
                round_ratios,
                round_measured_ms: tried.iter().map(|t| t.summary.step_ms_median).collect(),
            }
        })
        .collect();
    let load_end = load_average();
    let md = markdown(&rows);
    println!("\n{md}");
    let within = |f: fn(&Row) -> f64| rows.iter().filter(|r| (f(r) - 1.0).abs() <= 0.15).count();
    println!(
        "within 15%: {} of {} rows on the fastest round, {} on the medians; load average {load_start} at the start, {load_end} at the end",
        within(|r| r.ratio),
        rows.len(),
        within(|r| r.median_ratio)
    );
    for (flag, why) in NOT_MODELLED {
        println!("  not modelled: {flag}: {why}");
    }
    if let Some(dir) = out {
        crate::rundir::create_out_dir(dir)?;
        let json = serde_json::json!({
            "machine": cpu_model(),
            "cores": cores,
            "steps": steps,
            "rounds": rounds,
            "load_average_start": load_start,
            "load_average_end": load_end,
            "allreduce_fits": fits,
            "rows": rows,
            "not_modelled": NOT_MODELLED.iter().map(|(f, w)| serde_json::json!({"flag": f, "why": w})).collect::<Vec<_>>(),
        });
        let json = serde_json::to_string_pretty(&json).expect("serialises");
        nanodist::checkpoint::write_atomic(&dir.join("calibration.json"), json.as_bytes())?;
        nanodist::checkpoint::write_atomic(&dir.join("calibration.md"), md.as_bytes())?;
        println!(
            "wrote calibration.json and calibration.md to {}",
            dir.display()
        );
    }
    Ok(())
}

/// The table predicted against measured, as markdown.
fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| nanodist train ... | GFLOP/s per core (measured on); sync points x us; hand-offs x us | predicted ms/step (compute + exchange + sync + bubble) | measured ms/step (compute, comm, wait) | predicted / measured | median over rounds | each round: ratio (measured ms) |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let handoffs = if r.handoffs > 0.0 {
            format!("; {:.0} x {:.0}", r.handoffs, r.handoff_s * 1e6)
        } else {
            String::new()
        };
        let rounds: Vec<String> = (r.round_ratios.iter())
            .zip(&r.round_measured_ms)
            .map(|(q, ms)| format!("{q:.2} ({ms:.1})"))
            .collect();
        s += &format!(
            "| `{}` | {:.2} ({}); {:.0} x {:.0}{handoffs} | {:.2} ({:.2} + {:.2} + {:.2} + {:.2}) | {:.2} ({:.2}, {:.2}, {:.2}) | {:.2} | {:.2} | {} |\n",
            r.flags,
            r.flops_per_core / 1e9,
            r.shape,
            r.sync_points,
            r.sync_s_per_point * 1e6,
            r.predicted_ms,
            r.predicted_compute_ms,
            r.predicted_exchange_ms,
            r.predicted_sync_ms,
            r.predicted_bubble_ms,
            r.measured_ms,
            r.measured_compute_ms,
            r.measured_comm_ms,
            r.measured_wait_ms,
            r.ratio,
            r.median_ratio,
            rounds.join(", ")
        );
    }
    s
}

/// The host's load averages over 1, 5 and 15 minutes as /proc/loadavg gives them (Linux),
/// or "unknown": how busy the machine was while the figures were measured.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// The CPU's model name as `lscpu` shows it (Linux), or "unknown CPU".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
