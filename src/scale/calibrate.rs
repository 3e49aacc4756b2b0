//! Calibration: the one free figure of the compute model (the achievable fraction of peak),
//! backed out of a measured run, and the published runs the model is checked against.
//!
//! ```text
//!   measured run (TFLOP/s per GPU)  --calibrate_efficiency-->  Hardware::achievable
//!        small, simple layout                                      |
//!                                                                  v
//!   other layouts, other sizes  <-------------- predict ----------+   checked against
//!                                                                      published figures
//! ```
//! Source of every published figure: D. Narayanan, M. Shoeybi, J. Casper et al., "Efficient
//! Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", SC21
//! (arXiv:2104.04473): Table 1 (weak scaling, 1.7B to 1T parameters on up to 3,072 A100s,
//! vocabulary 51,200, sequence 2,048), section 5.1 (GPT-3 175B, 1,024 GPUs, batch 1,536,
//! 140 TFLOP/s, 34 days for 300B tokens) and Table 2 (175B with PTD parallelism on
//! 384/768/1,536 GPUs). Their TFLOP/s count recomputation (eq. 3), as
//! [`super::Prediction::tflops_per_gpu`] does.

use super::config::ScaleConfig;
use super::{predict, Hardware, ModelShape};

/// A run someone published, as a configuration plus what they measured.
#[derive(Clone, Debug)]
pub struct PublishedRun {
    /// Short name.
    pub name: String,
    /// Where the figures come from.
    pub source: &'static str,
    /// The run as a configuration (layout details the source omits are stated in `note`).
    pub config: ScaleConfig,
    /// Reported TFLOP/s per GPU.
    pub tflops_per_gpu: f64,
    /// Reported (or estimated, by the authors) days for `config.tokens`.
    pub days: Option<f64>,
    /// What the configuration assumes beyond the source.
    pub note: &'static str,
}

/// Section 5.1's estimate for GPT-3 175B: 1,024 A100s, batch 1,536, 140 TFLOP/s per GPU
/// (45% of peak), 34 days for 300B tokens. The text does not give the layout; TP 8 x PP 8 x
/// DP 16 (the layout of Table 1's 145.6B row) and micro-batch 1 are this crate's assumption.
pub fn megatron_gpt3_175b() -> PublishedRun {
    PublishedRun {
        name: "GPT-3 175B, 1,024 A100 (Megatron-LM 2021, sec. 5.1)".into(),
        source: "Narayanan et al. 2021, section 5.1",
        config: ScaleConfig::default(),
        tflops_per_gpu: 140.0,
        days: Some(34.0),
        note: "layout TP 8 x PP 8 x DP 16, micro-batch 1: assumed, the text gives n, B, X, T only",
    }
}

/// Table 2's PTD rows for the 174.6B model: model-parallel size 96 (read as TP 8 x PP 12:
/// 8 layers per stage), batch 1,536, micro-batch 1, on 384, 768 or 1,536 GPUs:
/// 153 / 149 / 141 TFLOP/s, 84 / 43 / 23 days for 300B tokens.
pub fn megatron_table2(gpus: usize) -> Option<PublishedRun> {
    let (x, days) = match gpus {
        384 => (153.0, 84.0),
        768 => (149.0, 43.0),
        1536 => (141.0, 23.0),
        _ => return None,
    };
    let mut config = ScaleConfig {
        pp: 12,
        gpus,
        ..ScaleConfig::default()
    };
    config.model.name = "GPT-3 174.6B".into();
    Some(PublishedRun {
        name: format!("GPT-3 175B, {gpus} A100, TP 8 x PP 12 (Megatron-LM 2021, Table 2)"),
        source: "Narayanan et al. 2021, Table 2",
        config,
        tflops_per_gpu: x,
        days: Some(days),
        note: "model-parallel size 96 read as TP 8 x PP 12",
    })
}

/// One row of the paper's Table 1.
#[derive(Clone, Copy, Debug)]
pub struct Table1Row {
    /// Parameters, billions.
    pub billions: f64,
    /// Attention heads (a).
    pub heads: usize,
    /// Hidden size (h).
    pub hidden: usize,
    /// Layers (l).
    pub layers: usize,
    /// Tensor-parallel size.
    pub tp: usize,
    /// Pipeline-parallel size.
    pub pp: usize,
    /// GPUs (n).
    pub gpus: usize,
    /// Global batch (B).
    pub batch: usize,
    /// Achieved TFLOP/s per GPU.
    pub tflops: f64,
}

// one argument per column of the paper's table, in its order, so the rows below read as it does
#[allow(clippy::too_many_arguments)]
const fn row(
    billions: f64,
    heads: usize,
    hidden: usize,
    layers: usize,
    tp: usize,
    pp: usize,
    gpus: usize,
    batch: usize,
    tflops: f64,
) -> Table1Row {
    Table1Row {
        billions,
        heads,
        hidden,
        layers,
        tp,
        pp,
        gpus,
        batch,
        tflops,
    }
}

/// Table 1 of the paper, every row (weak scaling; all with s = 2048, V = 51,200).
pub const TABLE1: [Table1Row; 10] = [
    row(1.7, 24, 2304, 24, 1, 1, 32, 512, 137.0),
    row(3.6, 32, 3072, 30, 2, 1, 64, 512, 138.0),
    row(7.5, 32, 4096, 36, 4, 1, 128, 512, 142.0),
    row(18.4, 48, 6144, 40, 8, 1, 256, 1024, 135.0),
    row(39.1, 64, 8192, 48, 8, 2, 512, 1536, 138.0),
    row(76.1, 80, 10240, 60, 8, 4, 1024, 1792, 140.0),
    row(145.6, 96, 12288, 80, 8, 8, 1536, 2304, 148.0),
    row(310.1, 128, 16384, 96, 8, 16, 1920, 2160, 155.0),
    row(529.6, 128, 20480, 105, 8, 35, 2520, 2520, 163.0),
    row(1008.0, 160, 25600, 128, 8, 64, 3072, 3072, 163.0),
];

/// Row `i` of [`TABLE1`] as a published run on A100s, micro-batch 1 and recomputation on
/// (the table omits the micro-batch; 1 is what the paper's other GPT-3 runs use).
pub fn megatron_table1(i: usize) -> PublishedRun {
    let r = TABLE1[i];
    let name = format!("{}B", r.billions);
    PublishedRun {
        name: format!(
            "{}B, {} A100, TP {} x PP {} (Megatron-LM 2021, Table 1)",
            r.billions, r.gpus, r.tp, r.pp
        ),
        source: "Narayanan et al. 2021, Table 1",
        config: ScaleConfig {
            model: ModelShape::custom(&name, r.layers, r.heads, r.hidden, 2048, 51200),
            hardware: Hardware::a100(),
            gpus: r.gpus,
            tp: r.tp,
            pp: r.pp,
            batch: r.batch,
            micro_batch: 1,
            recompute: true,
            ..ScaleConfig::default()
        },
        tflops_per_gpu: r.tflops,
        days: None,
        note: "micro-batch 1 assumed",
    }
}

/// The achievable fraction of peak that makes the model reproduce a measured throughput:
/// solves `predict(cfg with achievable = e).tflops_per_gpu == measured` for `e` by bisection
/// (the prediction rises with `e`). Use it on a run whose layout is simple (no TP, no PP), so
/// that the figure stands for the matrix products and not for the communication the model
/// computes separately. Units: `measured_tflops_per_gpu` in TFLOP/s, as the report prints.
pub fn calibrate_efficiency(cfg: &ScaleConfig, measured_tflops_per_gpu: f64) -> f64 {
    let at = |e: f64| {
        let mut c = cfg.clone();
        c.hardware.achievable = e;
        predict(&c).map(|p| p.tflops_per_gpu).unwrap_or(0.0)
    };
    let (mut lo, mut hi) = (1e-6, 1.0);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if at(mid) < measured_tflops_per_gpu {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The A100's achievable fraction as backed out of Table 1's 1.7B row: the smallest run,
/// pure data parallelism over 32 GPUs, 137 TFLOP/s. [`Hardware::a100`] carries this value
/// rounded (a test keeps them in step).
pub fn a100_from_table1() -> f64 {
    let run = megatron_table1(0);
    calibrate_efficiency(&run.config, run.tflops_per_gpu)
}

/// Relative error of `predicted` against `published`: (predicted - published) / published.
pub fn rel_err(predicted: f64, published: f64) -> f64 {
    (predicted - published) / published
}
