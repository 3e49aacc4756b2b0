//! The whole GPT on one worker of a tensor group: embeddings, its share of every block, the
//! final layer norm, the tied head and the loss. Its forward and backward are those of the
//! one-stage case of [`TensorStage`] (all L blocks, first and last); its own are the `--sp`
//! sum of the whole copies' gradients at the end of each backward (a pipeline adds them once
//! a step instead) and the global gradient norm.
//!
//! ```text
//!   inputs ─> embed (my rows) ─> block 0 ─> ... ─> block L-1 ─> ln_f ─> @ wte^T ─> loss (my rows)
//!             whole wte, wpe     split (block.rs)               whole ln_f, wte
//! ```
//!
//! Without `--sp` "my rows" are all N rows: every worker computes the embeddings, ln_f, the
//! head and the loss on the same inputs and gets the same floats, so their gradients agree
//! and need no sum. With `--sp` each worker does them on its N/TP rows only; their
//! gradients are then partial, and one all-reduce of the whole copies (wte, wpe, the layer
//! norms: (V + T + (2L+1)) x C floats, 1% of the default model, since V is a vocabulary of
//! characters) adds the parts at the end of backward. Megatron splits the embedding and
//! head by vocabulary too; with V = 65 the split would save nothing worth a collective.

use std::ops::Range;

use crate::collective::{Algorithm, CommError};
use crate::config::ModelConfig;
use crate::error::Error;
use crate::model::{ParamLayout, StagePart};

use super::block::Dims;
use super::ops::Ops;
use super::shard::local_layout;
use super::stage::{sum_whole_copies, whole_copies, TensorStage};

/// One worker's tensor-parallel model: its collectives, its layout and its activations.
/// Its parameters live in the caller's buffer, laid out by [`TensorParallel::layout`].
#[derive(Debug)]
pub struct TensorParallel {
    /// The tensor group's collectives (f and g), and what they sent.
    pub ops: Ops,
    /// This worker's parameter layout ([`local_layout`]).
    pub layout: ParamLayout,
    /// The activations: one stage of all the blocks, first and last.
    stage: TensorStage,
    /// L, the layer the `--sp` sum's span is recorded under.
    n_layer: usize,
    /// Local ranges of the whole copies (summed over the group with `--sp`).
    replicated: Vec<Range<usize>>,
    /// The whole copies' gradients, packed for their all-reduce (`--sp` only; else empty).
    pack: Vec<f32>,
}

impl TensorParallel {
    /// The model of `ops.comm`'s worker for batches of `batch` sequences of `seq_len` tokens.
    ///
    /// # Panics
    /// If the group's size does not divide H (and so C and 4C), or, with `--sp`, the N rows
    /// (`TrainConfig::validate` says so first, in one line).
    pub fn new(cfg: &ModelConfig, batch: usize, seq_len: usize, ops: Ops) -> TensorParallel {
        let (tp, rank) = (ops.comm.size(), ops.comm.rank());
        let whole = StagePart {
            layers: 0..cfg.n_layer,
            first: true,
            last: true,
        };
        let stage = TensorStage::new(cfg, &whole, batch, seq_len, &ops);
        let layout = local_layout(cfg, tp);
        let replicated = whole_copies(cfg, tp, rank, &(0..layout.len));
        let packed = replicated.iter().map(|r| r.len()).sum();
        let gathers = Dims::new(cfg, batch, seq_len, tp, ops.sp).gathers;
        TensorParallel {
            layout,
            stage,
            n_layer: cfg.n_layer,
            replicated,
            pack: vec![0.0; if gathers { packed } else { 0 }],
            ops,
        }
    }

    /// Bytes of activations (and their gradients) this worker holds: what `--sp` shrinks.
    /// (The same as [`activation_bytes`] computes from the shapes alone.)
    pub fn activation_bytes(&self) -> usize {
        self.stage.buffer_bytes()
    }

    /// Runs the model on `inputs (B,T)` with this worker's `params` (its shard); with
    /// `targets` returns the mean cross-entropy over all B*T tokens (the same on every
    /// worker of the group). A collective: the whole group calls it.
    pub fn forward(
        &mut self,
        params: &[f32],
        inputs: &[u32],
        targets: Option<&[u32]>,
    ) -> Result<Option<f32>, CommError> {
        (self.stage).forward(&mut self.ops, params, Some(inputs), targets)
    }

    /// ACCUMULATES this worker's share of d(grad_scale * sum of the losses)/d(params) into
    /// `grads` (its shard's layout), for the last forward. A collective.
    ///
    /// # Panics
    /// If the last forward had no targets.
    pub fn backward(
        &mut self,
        params: &[f32],
        grad_scale: f32,
        grads: &mut [f32],
    ) -> Result<(), CommError> {
        (self.stage).backward(&mut self.ops, params, grad_scale, grads)?;
        if self.pack.is_empty() {
            return Ok(());
        }
        // each worker's gradients of the whole copies came from its own rows
        let (ops, ranges, pack) = (&mut self.ops, &self.replicated, &mut self.pack);
        sum_whole_copies(ops, ranges, pack, grads, Some(self.n_layer))
    }

    /// The global gradient norm over the whole model and the factor clipping to `max_norm`
    /// multiplies the gradients by, as [`crate::optim::clip_scale`] defines them; a
    /// collective. The whole copies' squares count once (every worker holds the same), the
    /// split tensors' are summed over the group.
    pub fn clip_scale(&mut self, grads: &[f32], max_norm: f32) -> Result<(f32, f32), CommError> {
        // f64 sums of squares, 8 lanes at a time (the loop vectorises), chunk by chunk
        let squares = |g: &[f32]| {
            (g.chunks(crate::optim::NORM_CHUNK))
                .map(crate::optim::sum_of_squares)
                .sum::<f64>()
        };
        let mut whole = 0.0;
        let mut split = [squares(grads)];
        for r in &self.replicated {
            let s = squares(&grads[r.clone()]);
            whole += s;
            split[0] -= s;
        }
        self.ops.comm.all_reduce(&mut split, Algorithm::Naive)?;
        let norm = (whole + split[0].max(0.0)).sqrt();
        let coef = max_norm as f64 / (norm + 1e-6);
        let scale = if max_norm > 0.0 && coef < 1.0 {
            coef as f32
        } else {
            1.0
        };
        Ok((norm as f32, scale))
    }

    /// [`TensorParallel::forward`] and [`TensorParallel::backward`]'s communication failure
    /// as the step's error.
    pub fn error(step: usize) -> impl Fn(CommError) -> Error {
        move |e| match e {
            CommError::PeerGone { rank } => Error::PeerGone { worker: rank, step },
        }
    }
}

/// Bytes of activations (and their gradients) a worker of a `tp`-way group holds for `b`
/// sequences of `t` tokens: what [`TensorParallel::activation_bytes`] allocates.
pub fn activation_bytes(cfg: &ModelConfig, b: usize, t: usize, tp: usize, sp: bool) -> usize {
    let d = Dims::new(cfg, b, t, tp, sp);
    let (n, m, c, v) = (d.n(), d.m, d.c, cfg.vocab_size);
    let all = if d.gathers { n * c } else { 0 };
    let att = d.b * d.hl * d.t * d.t;
    // per block: ln1, ln2, x_mid, x_out (m,C); their means and 1/stds; the gathered
    // ln1, ln2; qkv, att, atty; fch, fcg
    let block = 4 * m * c + 4 * m + 2 * all + 4 * n * d.cl + att + 2 * n * d.fl;
    // dres, dres_all, part, datty, dqkv, datt, dfc
    let scratch = m * c + all + n * c + 4 * n * d.cl + att + n * d.fl;
    // encoded, lnf, dln, the two means, logits, dlogits, lse, losses
    let ends = 3 * m * c + 2 * m + 2 * m * v + 2 * m;
    4 * (cfg.n_layer * block + scratch + ends)
}
