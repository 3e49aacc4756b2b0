//! Memory per GPU: the model states (weights, gradients, optimizer) and the activations, for
//! the most loaded GPU, the first pipeline stage.
//!
//! ```text
//!   per parameter (mixed-precision Adam, ZeRO paper section 3.1):
//!     weights 2 B (bf16) | grads 2 B (bf16) | fp32 master 4 + momentum 4 + variance 4 = 12 B
//!   ZeRO stage:    0: nothing sharded   1: /DP the 12   2: /DP the 12 and the 2 of grads
//!                  3: /DP all 16
//!   parameters per GPU: a 1/PP slice of the layers, each a 1/TP slice of its matrices
//!   activations: per layer s b h (10 + 24/t + 5 a s/(h t)) bytes (Korthikanti et al. 2022),
//!                or 2 s b h kept per layer with full recomputation,
//!                times the micro-batches in flight on the first stage:
//!                  1F1B min(p, m)    GPipe m    zb min(2p - 1, m) (held from F to W)
//!   zb also keeps, per layer, for the min(p, m) micro-batches whose W is pending:
//!     the four products' output gradients dy   s b h (2 + 7/t) elements (9h at t = 1:
//!                                               qkv 3h/t, attn proj h, fc 4h/t, mlp proj h)
//!     with recomputation also their inputs x   s b h (2 + 5/t) elements (ln_1 h, attn
//!                                               y h/t, ln_2 h, gelu 4h/t), recomputed
//!                                               for B and kept for W
//!   at the activations' precision (2 bytes mixed, 4 f32)
//! ```

use super::config::{Layout, Precision, ScaleConfig};
use crate::config::PipeSchedule;
use crate::parallel::pipeline::schedule;
use serde::Serialize;

/// Bytes of one GPU's memory, by what holds them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Memory {
    /// Parameters held by this GPU (after TP and PP splits, before ZeRO sharding).
    pub params_per_gpu: f64,
    /// Weights as the forward reads them (16-bit in mixed precision), bytes.
    pub weights: f64,
    /// Gradients, bytes.
    pub grads: f64,
    /// Optimizer state (fp32 master weights and Adam moments in mixed precision), bytes.
    pub optimizer: f64,
    /// Activations kept for the backward (under `zb` also what the pending W's keep:
    /// [`pending_weight_bytes`]), bytes.
    pub activations: f64,
    /// Sum of the four, bytes.
    pub total: f64,
    /// The GPU's memory, bytes.
    pub capacity: f64,
    /// `total <= capacity`.
    pub fits: bool,
}

/// One GiB, 2^30 bytes (reports use GiB; datasheets' "80 GB" is 80e9 bytes = 74.5 GiB).
pub const GIB: f64 = (1u64 << 30) as f64;

/// Activation bytes of one transformer layer for one micro-batch of `b` sequences kept for the
/// backward without recomputation, with tensor parallelism of degree `t` and no sequence
/// parallelism (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
/// Transformer Models", Table 2): `s b h (10 + 24/t + 5 a s / (h t))` in 16-bit. The 10 s b h
/// (LayerNorm inputs, dropout masks) is replicated on every TP rank; at t = 1 this is the
/// paper's `s b h (34 + 5 a s / h)`. Units: bytes.
pub fn layer_activation_bytes(cfg: &ScaleConfig, b: usize, t: usize) -> f64 {
    let m = &cfg.model;
    let (s, b, h, a, t) = (
        m.seq as f64,
        b as f64,
        m.hidden as f64,
        m.heads as f64,
        t as f64,
    );
    s * b * h * (10.0 + 24.0 / t + 5.0 * a * s / (h * t)) * cfg.precision.activation_scale()
}

/// The memory of the first pipeline stage's GPUs (the most loaded: it holds the embedding and
/// the most micro-batches in flight).
pub fn memory(cfg: &ScaleConfig, lay: &Layout) -> Memory {
    let m = &cfg.model;
    let (t, p, d) = (lay.tp as f64, lay.pp as f64, lay.dp as f64);
    // parameters: l/p blocks, each split t ways; the first stage also holds the embeddings,
    // split over t (vocabulary-parallel). The final LayerNorm's 2h live on the last stage and
    // are left out (negligible).
    let params = m.layers as f64 / p * m.block_params() / t + m.embedding_params() / t;
    let (wb, gb, ob) = cfg.precision.state_bytes();
    // ZeRO (Rajbhandari et al. 2020): stage >= 1 shards the optimizer state over the DP group,
    // stage >= 2 the gradients too, stage 3 the weights too.
    let shard = |stage: usize| if cfg.zero >= stage { d } else { 1.0 };
    let weights = params * wb / shard(3);
    let grads = params * gb / shard(2);
    let optimizer = params * ob / shard(1);

    // activations: micro-batches in flight on the first stage, from their forward to their
    // backward (to their W under zb)
    let in_flight = in_flight(cfg.schedule, lay.pp, lay.micro_batches) as f64;
    let layers_here = m.layers as f64 / p;
    let full = layer_activation_bytes(cfg, cfg.micro_batch, lay.tp);
    let activations = if cfg.recompute {
        // full recomputation keeps only each layer's input (2 s b h bytes in 16-bit,
        // Korthikanti et al. 2022, section 4.1), plus one layer's full set while it is
        // recomputed during the backward
        let kept =
            2.0 * (m.seq * cfg.micro_batch * m.hidden) as f64 * cfg.precision.activation_scale();
        layers_here * kept * in_flight + full
    } else {
        layers_here * full * in_flight
    };
    let activations = activations + pending_weight_bytes(cfg, lay);
    let total = weights + grads + optimizer + activations;
    let capacity = cfg.hardware.memory_bytes;
    Memory {
        params_per_gpu: params,
        weights,
        grads,
        optimizer,
        activations,
        total,
        capacity,
        fits: total <= capacity,
    }
}

/// Micro-batches whose activations the first of `pp` stages holds at once under `schedule`
/// over `micro_batches`: 1F1B min(p, m), GPipe m, `zb` min(2p - 1, m) (W at most p - 1
/// micro-batches after its B). The pipeline's own count ([`schedule::max_in_flight`]) over
/// stage 0's list of actions, so the model and the runs agree.
pub fn in_flight(schedule: PipeSchedule, pp: usize, micro_batches: usize) -> usize {
    let stage0 = schedule::actions(schedule, pp.max(1), 0, micro_batches);
    schedule::max_in_flight(&stage0)
}

/// What `zb` keeps on the first stage for the W's not yet run, bytes: for each of the
/// stage's layers and each of the min(p, m) micro-batches whose W is pending, the four
/// products' output gradients, `s b h (2 + 7/t)` elements, and with recomputation their
/// inputs too, `s b h (2 + 5/t)` (without it the inputs are among the activations already
/// counted). 0 under 1F1B and GPipe, whose backward uses its gradients at once.
pub fn pending_weight_bytes(cfg: &ScaleConfig, lay: &Layout) -> f64 {
    if cfg.schedule != PipeSchedule::ZeroBubble {
        return 0.0;
    }
    let m = &cfg.model;
    let t = lay.tp as f64;
    let per_token = if cfg.recompute {
        (2.0 + 7.0 / t) + (2.0 + 5.0 / t)
    } else {
        2.0 + 7.0 / t
    } * m.hidden as f64;
    let tokens = (m.seq * cfg.micro_batch) as f64;
    let pending = lay.pp.min(lay.micro_batches) as f64;
    let layers_here = (m.layers / lay.pp) as f64;
    layers_here * pending * tokens * per_token * cfg.precision.element_bytes()
}

impl Precision {
    /// Bytes per parameter of (weights, gradients, optimizer state).
    /// Mixed precision Adam: (2, 2, 12), the ZeRO paper's "2 + 2 + K with K = 12".
    /// f32 throughout (nanodist's own runs): (4, 4, 8), the 8 being Adam's two moments.
    pub fn state_bytes(self) -> (f64, f64, f64) {
        match self {
            Precision::Mixed => (2.0, 2.0, 12.0),
            Precision::Fp32 => (4.0, 4.0, 8.0),
        }
    }

    /// Bytes per element of activations and of everything sent: 2 (bf16) or 4 (f32).
    pub fn element_bytes(self) -> f64 {
        match self {
            Precision::Mixed => 2.0,
            Precision::Fp32 => 4.0,
        }
    }

    /// Korthikanti's activation formula counts 16-bit elements: f32 doubles it.
    pub fn activation_scale(self) -> f64 {
        self.element_bytes() / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ModelShape, ScaleConfig};
    use super::*;

    #[test]
    fn tiny_case_by_hand() {
        // The tiny GPT (l=4, a=4, h=128, s=64, V=65) on 2 GPUs, DP=2, ZeRO 0, micro-batch 1,
        // batch 2, no recomputation, mixed precision.
        // params: block 12*128^2 + 13*128 = 198,272; 4 blocks = 793,088;
        //         embeddings (65 + 64)*128 = 16,512  => 809,600 on the GPU (the final
        //         LayerNorm's 256 are left out of the per-GPU count)
        // weights 2 B, grads 2 B, optimizer 12 B => 16 * 809,600 = 12,953,600 bytes
        // activations per layer: s b h (10 + 24 + 5 a s / h) = 64*1*128*(34 + 5*4*64/128)
        //                       = 8192 * 44 = 360,448 bytes; 4 layers, 1 in flight = 1,441,792
        // total 14,395,392 bytes
        let cfg = ScaleConfig {
            model: ModelShape::tiny(),
            gpus: 2,
            tp: 1,
            pp: 1,
            zero: 0,
            micro_batch: 1,
            batch: 2,
            recompute: false,
            ..ScaleConfig::default()
        };
        let lay = cfg.layout().unwrap();
        let mem = memory(&cfg, &lay);
        assert_eq!(mem.params_per_gpu, 809_600.0);
        assert_eq!(mem.weights + mem.grads + mem.optimizer, 12_953_600.0);
        assert_eq!(mem.activations, 1_441_792.0);
        assert_eq!(mem.total, 14_395_392.0);
        // ZeRO-3 over the 2 replicas halves all 16 bytes: 6,476,800
        let z3 = memory(
            &ScaleConfig {
                zero: 3,
                ..cfg.clone()
            },
            &lay,
        );
        assert_eq!(z3.weights + z3.grads + z3.optimizer, 6_476_800.0);
        // ZeRO-1 halves only the 12: 809,600 * (2 + 2 + 6) = 8,096,000
        let z1 = memory(&ScaleConfig { zero: 1, ..cfg }, &lay);
        assert_eq!(z1.weights + z1.grads + z1.optimizer, 8_096_000.0);
    }

    #[test]
    fn zero_bubble_holds_2p_minus_1_and_the_pending_gradients() {
        // The tiny GPT on 2 stages (2 layers each), 4 micro-batches of 1, mixed precision:
        // 360,448 activation bytes per layer per micro-batch (see tiny_case_by_hand).
        // 1F1B: min(2, 4) = 2 in flight: 2 layers x 2 x 360,448 = 1,441,792
        // GPipe: all 4: 2,883,584
        // zb: min(3, 4) = 3 in flight: 2,162,688, plus the output gradients of min(2, 4) = 2
        //     pending W's: 2 layers x 2 x 64 tokens x 9 x 128 x 2 bytes = 589,824
        let cfg = ScaleConfig {
            model: ModelShape::tiny(),
            gpus: 2,
            tp: 1,
            pp: 2,
            micro_batch: 1,
            batch: 4,
            recompute: false,
            ..ScaleConfig::default()
        };
        let lay = cfg.layout().unwrap();
        let with = |schedule| {
            memory(
                &ScaleConfig {
                    schedule,
                    ..cfg.clone()
                },
                &lay,
            )
        };
        let one = with(PipeSchedule::OneFOneB);
        assert_eq!(one.activations, 1_441_792.0);
        assert_eq!(with(PipeSchedule::GPipe).activations, 2_883_584.0);
        let zb = with(PipeSchedule::ZeroBubble);
        assert_eq!(zb.activations, 2_162_688.0 + 589_824.0);
        assert_eq!(zb.total - one.total, zb.activations - one.activations);
        assert_eq!(in_flight(PipeSchedule::ZeroBubble, 8, 96), 15);
        assert_eq!(in_flight(PipeSchedule::ZeroBubble, 8, 4), 4);
        assert_eq!(in_flight(PipeSchedule::OneFOneB, 8, 96), 8);
    }
}
