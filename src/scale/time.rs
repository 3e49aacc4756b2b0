//! Step time: compute, each parallel group's communication, the pipeline bubble, and what
//! overlaps.
//!
//! ```text
//!  one stage, one micro-batch:  t_mb = compute + TP all-reduces + 2 pipeline sends
//!                                compute = FLOPs / (peak x achievable) + bytes / HBM bandwidth
//!
//!  stage 0  |F1 F2 F3 F4 B1 .. B4|..............|       1F1B or GPipe: the pipeline runs
//!  stage 1  .|F1 F2 F3 F4 B1 .. B4|.............|       (m + p - 1) slots of t_mb, of which
//!  stage 2  ..|...                 |............|       p - 1 are the bubble: a fraction
//!  stage 3  ...|...                 |...........|       (p - 1) / m of the ideal time
//!                                  ^ DP all-reduce of the gradients, partly hidden behind the
//!                                    backward of the last micro-batch
//!  step = m t_mb + bubble + DP time not hidden + per-step synchronisation points
//!         + hand-offs (overlap with no core for communication)
//!
//!  zero bubble (--schedule zb): each backward split into B (input gradient, what the stage
//!  before waits for) and W (the weight gradients dW += dy^T x, nobody waits for them);
//!  W's fill the waits, so a stage idles (p - 1)(F + B - W) instead of (p - 1)(F + B + W):
//!    F = B = W = compute/3   (recompute: F = W = compute/4, B = recompute + backward = 1/2)
//!    W = the weight-gradient third of the matrix products, un-recomputed
//!    bubble = (p - 1)(t_mb - 2W)  +  (p - m) W  when m < p (too few B's to hide the W's)
//!    1F1B:   (p - 1) t_mb;   zb, no communication, no recompute:  (p - 1) t_mb / 3
//!
//!  overlap:  comm_core (GPU: copy engines, links)   hidden = min(dp_overlap x DP, backward)
//!            no comm_core (every core computes)     hidden = 0, + hand-offs x handoff_s
//!                                                   (min(buckets, l/p + 1) hand-offs)
//!
//!  synchronisation points (sync_points): where a worker meets partners that computed up
//!  to it, each charged Hardware::sync_s (0 on the GPU presets, measured on threads):
//!    per micro-batch (in t_mb):  TP  4 per layer (6 recomputing)   PP  2 hand-offs
//!    per step:                   PP  2 barriers (the step's start and end)
//!                                DP  ZeRO 0: 1   1: 3   2: (l/p + 2) m + 2   3: (2 l/p + 3) m + 1
//! ```
//! Not modelled (stated in the report): the optimizer step, the imbalance of the first and
//! last stages (embedding, logits), kernel launch gaps, Megatron's scatter/gather
//! optimisation of pipeline sends, the interleaved schedule, and under `zb` the W's
//! element-wise share (W is taken as matrix products only, so the memory-bound kernels and
//! the communication of a micro-batch stay in F and B; the attention scores' products, which
//! have no weights, are counted in its third) and any imbalance of F, B and W.

use super::config::{Layout, ScaleConfig};
use super::hardware::{hierarchical_allreduce_s, Link};
use crate::config::PipeSchedule;
use serde::Serialize;

/// Where the time of one optimizer step goes, seconds unless named otherwise.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepTime {
    /// One micro-batch through one stage: forward and backward, its TP all-reduces, its
    /// two pipeline sends and its synchronisation points (t_mb).
    pub micro_batch_s: f64,
    /// Compute time of the m micro-batches: matrix products at the achievable FLOP/s plus
    /// the memory-bound kernels (`elementwise_s`).
    pub compute_s: f64,
    /// The part of `compute_s` spent in memory-bound element-wise kernels.
    pub elementwise_s: f64,
    /// Tensor-parallel all-reduces of the m micro-batches (on the critical path).
    pub tp_s: f64,
    /// Pipeline point-to-point sends of the m micro-batches (on the critical path).
    pub pp_s: f64,
    /// The pipeline bubble: (p - 1) t_mb under 1F1B and GPipe; under `zb`
    /// (p - 1)(t_mb - 2W) + max(p - m, 0) W, W the weight-gradient share of t_mb
    /// (`weight_grad_s`).
    pub bubble_s: f64,
    /// W: one micro-batch's weight-gradient products on one stage, the part of t_mb the
    /// `zb` schedule moves into the waits; a third of the un-recomputed matrix products.
    pub weight_grad_s: f64,
    /// Synchronisation points on the critical path outside the bubble's slots: the m
    /// micro-batches' and the step's (see [`sync_points`]).
    pub sync_points: f64,
    /// Their cost: `sync_points x Hardware::sync_s` (the bubble's slots carry their own).
    pub sync_s: f64,
    /// The data-parallel gradient exchange, whole.
    pub dp_s: f64,
    /// The part of `dp_s` hidden behind the backward.
    pub dp_hidden_s: f64,
    /// Hand-offs of buckets to a communication thread that has no core of its own, a step:
    /// `min(buckets, l/p + 1)` with the exchange overlapped (backward hands over what it has
    /// finished after each block and after the embeddings); 0 where communication has
    /// hardware of its own, or nothing overlaps.
    pub handoffs: f64,
    /// Their cost: `handoffs x Hardware::handoff_s`.
    pub handoff_s: f64,
    /// The step: m t_mb + bubble_s + dp_s - dp_hidden_s + handoff_s + the step's
    /// synchronisation points.
    pub step_s: f64,
    /// Link the TP group uses.
    pub tp_link: String,
    /// Link between neighbouring pipeline stages.
    pub pp_link: String,
    /// Data-parallel peers sharing a node (the hierarchical all-reduce's k).
    pub dp_peers_per_node: usize,
}

/// The step time of a layout. `hw_flops` is the step's FLOPs over all GPUs as executed
/// (with recomputation if on); `params_per_gpu` the parameters whose gradients this GPU syncs.
pub fn step_time(cfg: &ScaleConfig, lay: &Layout, hw_flops: f64, params_per_gpu: f64) -> StepTime {
    let m = &cfg.model;
    let hw = &cfg.hardware;
    let g = cfg.gpus_per_node.max(1);
    let (t, p, d, mb) = (lay.tp, lay.pp, lay.dp, lay.micro_batches);
    let elem = cfg.precision.element_bytes();

    // compute: this GPU's share of the step's FLOPs, per micro-batch, at the sustained rate
    let gemm_mb = hw_flops / cfg.gpus as f64 / mb as f64 / hw.sustained_flops();
    // memory-bound kernels: their traffic follows the activations, s b h (10 + 24/t +
    // 5 a s/(h t)) bytes per layer (Korthikanti et al. 2022), which grow as h while the
    // matrix products grow as h^2: why big models reach a larger fraction of peak. Each
    // activation byte is taken as written and read once per pass over the layer: 2 passes
    // (forward, backward) = 4 touches, 3 with recomputation = 6 (an assumption).
    let touches = if cfg.recompute { 6.0 } else { 4.0 };
    let elementwise_mb = if hw.memory_bytes_per_s > 0.0 {
        let per_layer = super::memory::layer_activation_bytes(cfg, cfg.micro_batch, t);
        (m.layers / p) as f64 * touches * per_layer / hw.memory_bytes_per_s
    } else {
        0.0
    };
    let compute_mb = gemm_mb + elementwise_mb;
    // the backward's share of it: 2 of 3 passes, or 3 of 4 with recomputation (recompute
    // forward + backward run after the loss)
    let backward_mb = compute_mb * if cfg.recompute { 0.75 } else { 2.0 / 3.0 };

    // TP (Shoeybi et al. 2019, Megatron's f/g operators): per layer 2 all-reduces in the
    // forward (after attention, after the MLP), 2 in the backward, 2 more when the forward
    // is recomputed; each of the activation b x s x h, `elem` bytes per element.
    let pick = |inside: bool| if inside { &hw.intra } else { &hw.inter };
    let tp_link: &Link = pick(t <= g);
    let act_bytes = (cfg.micro_batch * m.seq * m.hidden) as f64 * elem;
    let per_layer = if cfg.recompute { 6.0 } else { 4.0 };
    let tp_mb = (m.layers / p) as f64 * per_layer * tp_link.ring_allreduce_s(t, act_bytes);

    // PP: each micro-batch sends its activation forward and receives its gradient back:
    // two messages of b x s x h elements on every stage boundary. Neighbouring stages are
    // t ranks apart; they share a node only when the whole t x p model fits in one.
    let pp_link: &Link = pick(t * p <= g);
    let pp_mb = if p > 1 {
        2.0 * pp_link.p2p_s(act_bytes)
    } else {
        0.0
    };

    let points = sync_points(cfg, lay);
    let sync_mb = points.per_micro_batch * hw.sync_s;
    let t_mb = compute_mb + tp_mb + pp_mb + sync_mb;
    // W, the weight gradients dW += dy^T x of the blocks' four products: a third of the
    // matrix products without recomputation (forward, input gradient, weight gradient are
    // 2 FLOPs per weight and token each); with it `gemm_mb` holds a fourth pass (the
    // recomputed forward) and W is still the same work, a fourth of it. The element-wise
    // kernels, the TP all-reduces and the sends stay in F and B.
    let weight_mb = gemm_mb / if cfg.recompute { 4.0 } else { 3.0 };
    // 1F1B and GPipe both take (m + p - 1) slots (Narayanan et al. 2021, section 2.2):
    // bubble fraction (p - 1) / m of the ideal m t_mb. Zero bubble (ZB-H1, Qi et al. 2023):
    // each stage fills its waits with pending W's, leaving (p - 1)(F + B - W) =
    // (p - 1)(t_mb - 2W); with m < p micro-batches the last W's have too few B's to hide
    // behind, p - m more W's stay exposed (`schedule::simulate` in unit time: 2p - 1 - m
    // idle units, against p - 1 for m >= p).
    let (bubble, pipeline) = match cfg.schedule {
        PipeSchedule::ZeroBubble => {
            let bubble =
                (p - 1) as f64 * (t_mb - 2.0 * weight_mb) + p.saturating_sub(mb) as f64 * weight_mb;
            (bubble, mb as f64 * t_mb + bubble)
        }
        PipeSchedule::OneFOneB | PipeSchedule::GPipe => {
            ((p - 1) as f64 * t_mb, (mb + p - 1) as f64 * t_mb)
        }
    };

    // DP: gradients of this GPU's parameters, summed over the d replicas. Ring all-reduce
    // (2 halves of volume) for ZeRO 0-2 (stage 1/2's reduce-scatter + all-gather of weights
    // moves the same bytes; Rajbhandari et al. 2020, section 7); stage 3 gathers the weights
    // before each micro-batch's forward and again before its backward: 2m all-gathers + one
    // reduce-scatter = (2m + 1) halves. Hierarchical when several replicas share a node.
    let k = if cfg.gpus_per_node % (t * p) == 0 {
        (g / (t * p)).clamp(1, d)
    } else {
        1
    };
    let grad_bytes = params_per_gpu * elem;
    let allreduce = hierarchical_allreduce_s(d, k, grad_bytes, &hw.intra, &hw.inter);
    let halves = if cfg.zero >= 3 {
        2.0 * mb as f64 + 1.0
    } else {
        2.0
    };
    let dp = allreduce * halves / 2.0;
    // Overlap: gradients are ready layer by layer during the last micro-batch's backward, so
    // at most that backward can hide the all-reduce; ZeRO-3's gathers can be prefetched
    // during the whole compute. `dp_overlap` (0..1) is the fraction the software achieves.
    let cap = if cfg.zero >= 3 {
        compute_mb * mb as f64
    } else {
        backward_mb
    };
    // That needs something to run the exchange while the compute runs: a GPU's copy
    // engines and links (`comm_core`). On cores that all compute, the communication thread
    // takes its time from the backward: nothing is hidden, and each hand-off of buckets to
    // it costs the backward a wake-up and a meeting on a busy core (`handoff_s`). Backward
    // hands over what it has finished after each block and after the embeddings (after
    // the head it has finished only ln_f, less than a bucket): l/p + 1 hand-offs a step at
    // most, however many buckets.
    let overlap = cfg.dp_overlap.clamp(0.0, 1.0);
    let (hidden, handoffs) = if hw.comm_core {
        ((overlap * dp).min(cap), 0.0)
    } else if overlap > 0.0 && d > 1 {
        (0.0, cfg.buckets.clamp(1, m.layers / p + 1) as f64)
    } else {
        (0.0, 0.0)
    };

    // a wait for a partner is not hidden behind compute: it is the compute that is late
    let sync_step = points.per_step * hw.sync_s;
    let step = pipeline + dp - hidden + handoffs * hw.handoff_s + sync_step;
    StepTime {
        micro_batch_s: t_mb,
        compute_s: compute_mb * mb as f64,
        elementwise_s: elementwise_mb * mb as f64,
        tp_s: tp_mb * mb as f64,
        pp_s: pp_mb * mb as f64,
        bubble_s: bubble,
        weight_grad_s: weight_mb,
        sync_points: points.per_micro_batch * mb as f64 + points.per_step,
        sync_s: sync_mb * mb as f64 + sync_step,
        dp_s: dp,
        dp_hidden_s: hidden,
        handoffs,
        handoff_s: handoffs * hw.handoff_s,
        step_s: step,
        tp_link: if t > 1 {
            tp_link.name.clone()
        } else {
            "-".into()
        },
        pp_link: if p > 1 {
            pp_link.name.clone()
        } else {
            "-".into()
        },
        dp_peers_per_node: k,
    }
}

/// Where a worker meets partners that computed up to that point: counted per micro-batch
/// (on every slot of the pipeline, bubble included) and per step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SyncPoints {
    /// Points inside one micro-batch's slot: TP's all-reduces and the pipeline's hand-offs.
    pub per_micro_batch: f64,
    /// Points once per step: the pipeline's barriers and the data-parallel exchange's.
    pub per_step: f64,
}

/// The synchronisation points of a layout, as nanodist's workers meet (`l/p` the layers of
/// a stage, `m` the micro-batches). Points with no compute between them (the buckets of one
/// exchange, a reduce-scatter right after a barrier) are one point: the partners are
/// already together for the second.
///
/// - TP: Megatron's f/g all-reduces, 2 per layer forward and 2 backward (2 more when the
///   forward is recomputed), each after a stretch of the worker's own compute;
/// - PP: each micro-batch's activation handed forward and its gradient handed back, and the
///   step's two barriers (the stages start together, and meet after the schedule);
/// - DP over `d > 1` replicas, by ZeRO stage: 0, the gradient exchange after the backward;
///   1, the reduce-scatter, the norm's partials after the norm, the weights' all-gather after
///   AdamW; 2, each block's gradient reduce-scattered as the backward finishes it (the
///   stage's layers, `ln_f`, the embeddings) per micro-batch, then the norm and the
///   weights; 3, each block's weights gathered before its forward (the layers and the ends
///   kept for the step) and again with its gradient's reduce-scatter in the backward, per
///   micro-batch, then the norm.
pub fn sync_points(cfg: &ScaleConfig, lay: &Layout) -> SyncPoints {
    let (t, p, d) = (lay.tp, lay.pp, lay.dp);
    let m = lay.micro_batches as f64;
    let ls = (cfg.model.layers / p) as f64;
    let tp = if t > 1 {
        ls * if cfg.recompute { 6.0 } else { 4.0 }
    } else {
        0.0
    };
    let (pp_mb, pp_step) = if p > 1 { (2.0, 2.0) } else { (0.0, 0.0) };
    let dp = if d > 1 {
        match cfg.zero {
            0 => 1.0,
            1 => 3.0,
            2 => (ls + 2.0) * m + 2.0,
            _ => (2.0 * ls + 3.0) * m + 1.0,
        }
    } else {
        0.0
    };
    SyncPoints {
        per_micro_batch: tp + pp_mb,
        per_step: pp_step + dp,
    }
}

/// The pipeline bubble as a fraction of the ideal time: `(p - 1) / m` (Huang et al. 2019,
/// GPipe; Narayanan et al. 2021, eq. 1).
pub fn bubble_fraction(pp: usize, micro_batches: usize) -> f64 {
    (pp.saturating_sub(1)) as f64 / micro_batches.max(1) as f64
}

/// The pipeline bubble of `schedule` as a fraction of the ideal time, F, B and W one unit
/// each (a micro-batch 3 units, no communication, no recomputation): `(p - 1) / m` for
/// 1F1B and GPipe, `(p - 1) / (3m)` for `zb` when `m >= p` (ZB-H1, Qi et al. 2023), and
/// `(2p - 1 - m) / (3m)` for `zb` when `m < p`.
pub fn schedule_bubble_fraction(schedule: PipeSchedule, pp: usize, micro_batches: usize) -> f64 {
    match schedule {
        PipeSchedule::GPipe | PipeSchedule::OneFOneB => bubble_fraction(pp, micro_batches),
        PipeSchedule::ZeroBubble => {
            let (p, m) = (pp.max(1), micro_batches.max(1));
            let idle = (p - 1) + p.saturating_sub(m);
            idle as f64 / (3 * m) as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ModelShape, ScaleConfig};
    use super::*;

    #[test]
    fn bubble_by_hand() {
        // p = 8 stages, m = 96 micro-batches: 7/96 = 0.0729
        assert!((bubble_fraction(8, 96) - 7.0 / 96.0).abs() < 1e-15);
        assert_eq!(bubble_fraction(1, 4), 0.0);
        // and the step model's bubble is that fraction of its ideal (m t_mb)
        let cfg = ScaleConfig::default();
        let lay = cfg.layout().unwrap();
        let flops = cfg.model.step_flops(cfg.batch, cfg.recompute);
        let st = step_time(&cfg, &lay, flops, 1e9);
        let ideal = st.micro_batch_s * lay.micro_batches as f64;
        assert!((st.bubble_s / ideal - bubble_fraction(lay.pp, lay.micro_batches)).abs() < 1e-12);
    }

    #[test]
    fn pure_data_parallel_step_is_compute_plus_exposed_allreduce() {
        // GPT-2 on 8 GPUs of one node, no overlap: step = compute + ring all-reduce over NVLink
        let cfg = ScaleConfig {
            model: ModelShape::gpt2(),
            gpus: 8,
            tp: 1,
            pp: 1,
            batch: 64,
            micro_batch: 8,
            recompute: false,
            dp_overlap: 0.0,
            ..ScaleConfig::default()
        };
        let lay = cfg.layout().unwrap();
        let flops = cfg.model.step_flops(64, false);
        let params = 124e6;
        let st = step_time(&cfg, &lay, flops, params);
        // matrix products at the sustained rate, plus 12 layers x 4 touches of each layer's
        // activations (micro-batch 8, t = 1) at HBM speed; 64 / (8 x 8) = 1 micro-batch per replica
        let gemm = flops / 8.0 / cfg.hardware.sustained_flops();
        let act = crate::scale::memory::layer_activation_bytes(&cfg, 8, 1);
        let compute = gemm + 12.0 * 4.0 * act / cfg.hardware.memory_bytes_per_s;
        let ar = cfg.hardware.intra.ring_allreduce_s(8, params * 2.0);
        assert!((st.step_s - (compute + ar)).abs() < 1e-12, "{st:?}");
        assert_eq!(st.dp_peers_per_node, 8);
    }

    /// A pipeline with nothing but matrix products: no links, no memory-bound kernels,
    /// no meetings, so t_mb is compute alone and F = B = W = t_mb / 3.
    fn compute_only(pp: usize, batch: usize, recompute: bool, schedule: PipeSchedule) -> StepTime {
        let cfg = ScaleConfig {
            model: ModelShape::gpt2(),
            hardware: crate::scale::Hardware::calibrated_cpu(1e12, 0.0, f64::INFINITY, 80e9),
            gpus: pp,
            gpus_per_node: pp,
            tp: 1,
            pp,
            micro_batch: 1,
            batch,
            recompute,
            schedule,
            dp_overlap: 0.0,
            ..ScaleConfig::default()
        };
        let lay = cfg.layout().unwrap();
        let flops = cfg.model.step_flops(cfg.batch, cfg.recompute);
        step_time(&cfg, &lay, flops, 1e8)
    }

    #[test]
    fn zero_bubble_is_a_third_of_1f1b_at_m_at_least_p() {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1e-30);
        for (p, m) in [(2, 2), (4, 4), (4, 16), (6, 96)] {
            let one = compute_only(p, m, false, PipeSchedule::OneFOneB);
            let zb = compute_only(p, m, false, PipeSchedule::ZeroBubble);
            let t = one.micro_batch_s;
            assert!(close(zb.micro_batch_s, t));
            assert!(close(zb.weight_grad_s, t / 3.0), "{zb:?}");
            assert!(close(one.bubble_s, (p - 1) as f64 * t));
            assert!(
                close(zb.bubble_s, one.bubble_s / 3.0),
                "p {p} m {m}: {zb:?}"
            );
            // the step drops by 2 (p - 1) t_mb / 3
            let drop = 2.0 * (p - 1) as f64 * t / 3.0;
            assert!(close(one.step_s - zb.step_s, drop), "p {p} m {m}");
            assert!(close(zb.step_s, (3 * m + p - 1) as f64 * t / 3.0));
        }
        // GPipe's time is 1F1B's
        let g = compute_only(4, 8, false, PipeSchedule::GPipe);
        assert_eq!(g, compute_only(4, 8, false, PipeSchedule::OneFOneB));
    }

    #[test]
    fn zero_bubble_with_recomputation_and_few_micro_batches() {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
        // recomputation: F = W = t_mb/4, B = recompute + input gradient = t_mb/2:
        // bubble (p - 1)(F + B - W) = (p - 1) t_mb / 2
        let zb = compute_only(4, 8, true, PipeSchedule::ZeroBubble);
        assert!(close(zb.weight_grad_s, zb.micro_batch_s / 4.0));
        assert!(close(zb.bubble_s, 3.0 * zb.micro_batch_s / 2.0), "{zb:?}");
        // m < p: p - m more W's exposed: p = 4, m = 2: (3 + 2) t_mb / 3
        let zb = compute_only(4, 2, false, PipeSchedule::ZeroBubble);
        assert!(close(zb.bubble_s, 5.0 * zb.micro_batch_s / 3.0), "{zb:?}");
        assert!(close(
            zb.bubble_s / (2.0 * zb.micro_batch_s),
            schedule_bubble_fraction(PipeSchedule::ZeroBubble, 4, 2)
        ));
    }

    #[test]
    fn zero_bubble_fraction_matches_the_simulated_schedule() {
        // in unit time (F = B = W = 1) the simulated zb schedule of the pipeline idles
        // slots - 3m units: the model's (p - 1) + max(p - m, 0)
        use crate::parallel::pipeline::schedule::slots;
        for p in 1..=6 {
            for m in 1..=12 {
                let slots = slots(PipeSchedule::ZeroBubble, p, m);
                let idle = (slots - 3 * m) as f64 / (3 * m) as f64;
                let model = schedule_bubble_fraction(PipeSchedule::ZeroBubble, p, m);
                assert!(
                    (idle - model).abs() < 1e-12,
                    "p {p} m {m}: {idle} vs {model}"
                );
            }
        }
        assert_eq!(
            schedule_bubble_fraction(PipeSchedule::OneFOneB, 8, 96),
            bubble_fraction(8, 96)
        );
    }
}
