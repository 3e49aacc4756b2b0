//! From threads to tens of thousands of GPUs: a cost model of one training step at scale.
//!
//! Given a model, a cluster and a layout (DP x PP x TP, ZeRO stage, micro-batches,
//! recomputation), [`predict`] answers three questions with formulas from the papers that
//! introduced them, every assumption stated in [`Prediction::assumptions`]:
//!
//! ```text
//!   1. does it fit?    memory per GPU = weights + grads + optimizer (/ZeRO) + activations
//!                      ........................................ vs 80 GB      memory.rs
//!   2. how fast?       step = (m + p - 1) * (compute + TP all-reduces + PP sends)
//!                             (zb: the bubble's p - 1 slots less the W's they hide)
//!                             + DP all-reduce not hidden by the backward        time.rs
//!                      => tokens/s, TFLOP/s per GPU, MFU, days for T tokens
//!   3. how often does it stop?   MTBI = MTBF / N, Young/Daly checkpoint interval,
//!                      goodput, checked by a seeded Monte-Carlo run        reliability.rs
//!
//!   world of N GPUs = DP x PP x TP, TP innermost (one node), as Megatron orders them:
//!   rank = dp_index * (PP*TP) + pp_index * TP + tp_index
//! ```
//!
//! The same model predicts nanodist's own threads when fed measured figures
//! ([`Hardware::calibrated_cpu`]), and is checked against published runs in
//! [`calibrate`] (Megatron-LM's GPT-3 175B on 1,024 A100s). The chapter `docs/at-scale.md`
//! tells the story with the pictures [`step_svg`], [`memory_svg`] and [`goodput_svg`] draw.
//!
//! # Examples
//!
//! ```
//! use nanodist::scale::{predict, ScaleConfig};
//!
//! // GPT-3 175B on 1,024 A100s with Megatron-LM's layout (TP 8, PP 8, DP 16)
//! let p = predict(&ScaleConfig::default()).unwrap();
//! assert!(p.fits);
//! assert!(p.days > 25.0 && p.days < 45.0);
//! println!("{}", nanodist::scale::report(&p));
//! ```

pub mod calibrate;
pub mod config;
pub mod hardware;
pub mod memory;
pub mod model;
pub mod reliability;
pub mod report;
pub mod svg;
pub mod time;

pub use crate::config::PipeSchedule;
pub use config::{Layout, Precision, ScaleConfig, ScaleError};
pub use hardware::{Hardware, Link};
pub use memory::Memory;
pub use model::ModelShape;
pub use reliability::{Reliability, ReliabilityPrediction};
pub use report::report;
pub use svg::{goodput_svg, memory_svg, step_svg};
pub use time::{sync_points, StepTime, SyncPoints};

use serde::Serialize;

/// Everything [`predict`] says about a run. The JSON keys the command line promises are the
/// top-level fields `fits`, `memory_gib_per_gpu`, `step_s`, `tflops_per_gpu`, `mfu`,
/// `tokens_per_s`, `days`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// The inputs.
    pub config: ScaleConfig,
    /// Derived layout.
    pub layout: Layout,
    /// Parameters of the whole model.
    pub params: f64,
    /// Does the first pipeline stage's memory fit in the GPU's?
    pub fits: bool,
    /// Memory of the most loaded GPU, GiB.
    pub memory_gib_per_gpu: f64,
    /// Its breakdown, bytes.
    pub memory: Memory,
    /// Seconds per optimizer step.
    pub step_s: f64,
    /// Its breakdown.
    pub time: StepTime,
    /// FLOPs executed per step over all GPUs (with recomputation when on): Megatron's count.
    pub hw_flops_per_step: f64,
    /// Model FLOPs per step (no recomputation): the numerator of MFU.
    pub model_flops_per_step: f64,
    /// Executed TFLOP/s per GPU, as Megatron-LM reports them (recomputation counted).
    pub tflops_per_gpu: f64,
    /// Model FLOPs utilisation: model FLOPs / step time / (N x peak) (Chowdhery et al. 2022).
    pub mfu: f64,
    /// Tokens trained per second over the whole job.
    pub tokens_per_s: f64,
    /// Days to train `config.tokens` with no failures.
    pub days: f64,
    /// Failures, checkpoints, goodput.
    pub reliability: ReliabilityPrediction,
    /// Days including failures: days / goodput.
    pub days_with_failures: f64,
    /// Every assumption behind the numbers, one sentence each.
    pub assumptions: Vec<String>,
}

/// Predicts memory, step time and reliability of a run. Errors name a layout that does not
/// divide evenly; a layout that does not fit is a prediction (`fits: false`), not an error.
pub fn predict(cfg: &ScaleConfig) -> Result<Prediction, ScaleError> {
    let lay = cfg.layout()?;
    let params = cfg.model.params();
    let mem = memory::memory(cfg, &lay);
    let hw_flops = cfg.model.step_flops(cfg.batch, cfg.recompute);
    let model_flops = cfg.model.step_flops(cfg.batch, false);
    let time = time::step_time(cfg, &lay, hw_flops, mem.params_per_gpu);
    let step = time.step_s;
    let n = cfg.gpus as f64;
    let tokens_per_s = (cfg.batch * cfg.model.seq) as f64 / step;
    let days = cfg.tokens / tokens_per_s / 86_400.0;
    // a checkpoint holds weights and optimizer state: 2 + 12 bytes per parameter (mixed)
    let (wb, _, ob) = cfg.precision.state_bytes();
    let rel = reliability::reliability(&cfg.reliability, cfg.gpus, params * (wb + ob));
    let days_with_failures = days / rel.goodput;
    Ok(Prediction {
        config: cfg.clone(),
        layout: lay,
        params,
        fits: mem.fits,
        memory_gib_per_gpu: mem.total / memory::GIB,
        memory: mem,
        step_s: step,
        time,
        hw_flops_per_step: hw_flops,
        model_flops_per_step: model_flops,
        tflops_per_gpu: hw_flops / n / step / 1e12,
        mfu: model_flops / n / step / cfg.hardware.peak_flops,
        tokens_per_s,
        days,
        reliability: rel,
        days_with_failures,
        assumptions: assumptions(cfg),
    })
}

/// The stated assumptions of a prediction, in words.
fn assumptions(cfg: &ScaleConfig) -> Vec<String> {
    let hw = &cfg.hardware;
    let r = &cfg.reliability;
    let mut out = vec![
        format!(
            "matrix products run at {:.0}% of the {}'s peak {:.0} TFLOP/s ({} FLOP/s sustained)",
            hw.achievable * 100.0,
            hw.name,
            hw.peak_flops / 1e12,
            fmt_si(hw.sustained_flops())
        ),
        "FLOPs are Megatron's matrix-product count (Narayanan et al. 2021, eq. 3)".into(),
        format!(
            "element-wise kernels move 4 bytes per activation byte (6 with recomputation) at {:.0} GB/s of device memory",
            hw.memory_bytes_per_s / 1e9
        ),
        format!(
            "links: {} {:.0} GB/s + {:.0} us inside a node of {}, {} {:.0} GB/s + {:.0} us per GPU between nodes, per direction",
            hw.intra.name,
            hw.intra.bytes_per_s / 1e9,
            hw.intra.alpha_s * 1e6,
            cfg.gpus_per_node,
            hw.inter.name,
            hw.inter.bytes_per_s / 1e9,
            hw.inter.alpha_s * 1e6
        ),
        "collectives are rings (hierarchical when replicas share a node) moving whole tensors in one message".into(),
        "TP all-reduces and pipeline sends sit on the critical path; no scatter/gather optimisation, no interleaving".into(),
        format!("the DP exchange overlaps the last micro-batch's backward by a fraction {:.2}", cfg.dp_overlap),
        format!(
            "the first pipeline stage is the most loaded (embedding, {}); stage imbalance in time is ignored",
            match cfg.schedule {
                PipeSchedule::OneFOneB => "p micro-batches in flight under 1F1B",
                PipeSchedule::GPipe => "all m micro-batches in flight under GPipe",
                PipeSchedule::ZeroBubble =>
                    "2p - 1 micro-batches in flight under zb, and the pending W's output gradients",
            }
        ),
        "memory counts model states and activations only: no framework workspace, fragmentation or communication buffers".into(),
        format!(
            "GPU MTBF {:.0} h (Llama 3: 419 interruptions in 54 days on 16,384 GPUs), checkpoint storage {:.0} GB/s, restart {:.0} s",
            r.gpu_mtbf_hours,
            r.checkpoint_bytes_per_s / 1e9,
            r.restart_s
        ),
    ];
    if cfg.schedule == PipeSchedule::ZeroBubble {
        out.push("zb: W (the weight gradients) is a third of the un-recomputed matrix products and fills the pipeline's waits: bubble (p - 1)(F + B - W), + (p - m) W when m < p".into());
    }
    out.push(if hw.sync_s > 0.0 {
        format!(
            "each synchronisation point (a worker meeting partners that computed up to it) costs {:.0} us beyond the link's latency",
            hw.sync_s * 1e6
        )
    } else {
        "partners meet without waiting for each other: no stragglers, no jitter".into()
    });
    out.push(if hw.comm_core {
        "communication has hardware of its own (copy engines, links): an overlapped exchange runs beside the compute".into()
    } else {
        format!(
            "no core for communication: an overlapped exchange hides nothing, and each of its {} hand-off(s) of buckets to the communication thread costs the backward {:.0} us",
            cfg.buckets.clamp(1, cfg.model.layers / cfg.pp.max(1) + 1),
            hw.handoff_s * 1e6
        )
    });
    out
}

/// `1.23e15` as `1.23P`: reports' compact SI numbers.
pub fn fmt_si(x: f64) -> String {
    let units = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, u) in units {
        if x.abs() >= scale {
            return format!("{:.3}{u}", x / scale);
        }
    }
    format!("{x:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_layouts_are_one_line_errors() {
        let bad = ScaleConfig {
            gpus: 1000,
            ..ScaleConfig::default()
        };
        let e = predict(&bad).unwrap_err().to_string();
        assert!(e.contains("multiple of 64") && !e.contains('\n'), "{e}");
        let bad = ScaleConfig {
            pp: 7,
            gpus: 7 * 8 * 16,
            ..ScaleConfig::default()
        };
        assert!(predict(&bad)
            .unwrap_err()
            .to_string()
            .contains("pipeline stages"));
        let bad = ScaleConfig {
            batch: 100,
            ..ScaleConfig::default()
        };
        assert!(predict(&bad).unwrap_err().to_string().contains("batch 100"));
    }

    #[test]
    fn json_has_the_promised_keys() {
        let p = predict(&ScaleConfig::default()).unwrap();
        let v = serde_json::to_value(&p).unwrap();
        for key in [
            "fits",
            "memory_gib_per_gpu",
            "step_s",
            "tflops_per_gpu",
            "mfu",
            "tokens_per_s",
            "days",
        ] {
            assert!(v.get(key).is_some(), "missing key {key}");
        }
    }
}
