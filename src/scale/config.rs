//! What the cost model is asked: a model, a cluster and a layout ([`ScaleConfig`]), the number
//! formats ([`Precision`]), and the layout resolved into its group sizes ([`Layout`]). A leaf
//! of its own: the memory and time models read it, and [`predict`](super::predict) combines them.

use serde::Serialize;

use crate::config::PipeSchedule;

use super::hardware::Hardware;
use super::model::ModelShape;
use super::reliability::Reliability;

/// Number formats of the training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Precision {
    /// BF16/FP16 weights, gradients, activations and messages; FP32 master weights and Adam
    /// moments (Micikevicius et al. 2018; the ZeRO paper's accounting). GPUs train this way.
    #[default]
    Mixed,
    /// FP32 everywhere: nanodist's own runs.
    Fp32,
}

/// Everything the prediction depends on: the fields the `nanodist scale` flags fill.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScaleConfig {
    /// The model (`--model tiny|gpt2|gpt2-xl|gpt3` or `--layers/--heads/--embd/--block/--vocab`).
    pub model: ModelShape,
    /// The accelerator and its links (`--gpu a100|h100`).
    pub hardware: Hardware,
    /// GPUs in the job (`--gpus`): DP x PP x TP.
    pub gpus: usize,
    /// GPUs per node sharing the fast link (`--gpus-per-node`).
    pub gpus_per_node: usize,
    /// Tensor-parallel degree (`--tp`): each layer's matrices split this many ways.
    pub tp: usize,
    /// Pipeline-parallel degree (`--pp`): stages of l/p consecutive layers.
    pub pp: usize,
    /// ZeRO stage 0-3 over the data-parallel group (`--zero`).
    pub zero: usize,
    /// Sequences per micro-batch (`--micro-batch`): b.
    pub micro_batch: usize,
    /// Global batch in sequences per optimizer step (`--batch`): B.
    pub batch: usize,
    /// Full activation recomputation (`--recompute`).
    pub recompute: bool,
    /// Pipeline schedule (`--schedule 1f1b|zb|gpipe`), default 1F1B. GPipe takes 1F1B's
    /// time ((m + p - 1) slots) and holds all m micro-batches on a stage; `zb` shortens the
    /// bubble to (p - 1)(F + B - W) and holds up to 2p - 1 micro-batches (see
    /// [`super::time`] and [`super::memory`]).
    pub schedule: PipeSchedule,
    /// Tokens to train on, for the days (`--tokens`).
    pub tokens: f64,
    /// Number formats.
    pub precision: Precision,
    /// Fraction (0..1) of the DP exchange the software overlaps with the backward, up to the
    /// backward of the last micro-batch. Default 1: as much as that backward allows.
    pub dp_overlap: f64,
    /// Buckets the data-parallel exchange is cut into (nanodist's `--bucket-kb`): with the
    /// exchange overlapped on hardware with no core for communication, backward hands them
    /// to the communication thread as it finishes them, `min(buckets, l/p + 1)` hand-offs a
    /// step ([`Hardware::handoff_s`] each). 1 for the presets: the link terms price the
    /// exchange as one all-reduce.
    pub buckets: usize,
    /// Failure rate, checkpoint bandwidth, restart time.
    pub reliability: Reliability,
}

impl Default for ScaleConfig {
    /// GPT-3 175B on 1,024 A100s laid out TP 8 x PP 8 x DP 16, global batch 1,536, micro-batch
    /// 1, full recomputation, 300B tokens: the run Narayanan et al. 2021 (section 5.1) estimate
    /// at 140 TFLOP/s per GPU and 34 days.
    fn default() -> ScaleConfig {
        ScaleConfig {
            model: ModelShape::gpt3(),
            hardware: Hardware::a100(),
            gpus: 1024,
            gpus_per_node: 8,
            tp: 8,
            pp: 8,
            zero: 0,
            micro_batch: 1,
            batch: 1536,
            recompute: true,
            schedule: PipeSchedule::OneFOneB,
            tokens: 300e9,
            precision: Precision::Mixed,
            dp_overlap: 1.0,
            buckets: 1,
            reliability: Reliability::default(),
        }
    }
}

/// The layout's derived sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// Data-parallel replicas: gpus / (tp pp).
    pub dp: usize,
    /// Tensor-parallel degree.
    pub tp: usize,
    /// Pipeline stages.
    pub pp: usize,
    /// Micro-batches per replica per step: B / (dp b).
    pub micro_batches: usize,
}

/// A configuration that cannot describe a run; the message names the problem and the remedy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleError(pub String);

impl std::fmt::Display for ScaleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScaleError {}

impl ScaleConfig {
    /// Checks the layout divides evenly and derives DP and the micro-batch count.
    pub fn layout(&self) -> Result<Layout, ScaleError> {
        let err = |s: String| Err(ScaleError(s));
        let (n, t, p, b) = (self.gpus, self.tp, self.pp, self.micro_batch);
        if n == 0 || t == 0 || p == 0 || b == 0 || self.batch == 0 || self.gpus_per_node == 0 {
            return err(
                "--gpus, --gpus-per-node, --tp, --pp, --micro-batch and --batch must be at least 1"
                    .into(),
            );
        }
        if n % (t * p) != 0 {
            return err(format!(
                "{n} GPUs do not split into tp {t} x pp {p}: make --gpus a multiple of {}",
                t * p
            ));
        }
        if self.model.layers % p != 0 {
            return err(format!(
                "{} layers do not split into {p} pipeline stages: pick --pp dividing the layers",
                self.model.layers
            ));
        }
        if self.model.heads % t != 0 {
            return err(format!(
                "{} heads do not split over tp {t}: pick --tp dividing the heads",
                self.model.heads
            ));
        }
        if self.zero > 3 {
            return err(format!(
                "ZeRO stage {} does not exist: use --zero 0, 1, 2 or 3",
                self.zero
            ));
        }
        let dp = n / (t * p);
        if self.batch % (dp * b) != 0 {
            return err(format!(
                "batch {} does not split into {dp} replicas x micro-batches of {b}: make --batch a multiple of {}",
                self.batch,
                dp * b
            ));
        }
        Ok(Layout {
            dp,
            tp: t,
            pp: p,
            micro_batches: self.batch / (dp * b),
        })
    }
}
