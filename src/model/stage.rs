//! One pipeline stage's share of the model: a contiguous range of blocks, with the
//! embeddings on the first stage and the final layer norm, head and loss on the last.
//!
//! ```text
//!   stage 0 (first)                    stage s                 stage P-1 (last)
//!   inputs ─> embedding ─> blocks ─x─> blocks ─x─> ... ─x─> blocks ─> ln_f ─> @ wte^T ─> loss
//!                                 ^ x: the residual stream (B,T,C), sent to the next stage
//!   backward, right to left:   <─dx─              <─dx─    (d loss / d x, sent back)
//! ```
//!
//! The forward and backward here are [`Gpt::forward`] and [`Gpt::backward`] cut at block
//! boundaries: the same kernels, called in the same order with the same arguments, so each
//! stage computes bit for bit what one worker computes for its blocks. A later stage takes
//! its input in `ws.encoded` (where stage 0 puts the embedding's output), and every stage but
//! the last takes d loss / d (its output) in `ws.scratch.dres` (where the head's backward
//! puts it), so the block loops are unchanged.
//!
//! A stage's [`Workspace`] holds only its own blocks ([`Workspace::for_stage`]).
//!
//! Rust note: these are `impl Gpt` and `impl Workspace` blocks in a file of their own. An
//! inherent `impl` may sit in any module of the crate that defines the type, so the stage
//! cut lives beside `gpt.rs`, with the same private access (`pub(crate)` fields), and the
//! whole-model path stays as it is.

use std::ops::Range;

use super::block::{
    block_backward, block_forward, block_grads, block_weight_grads, block_weights, BlockDouts,
};
use super::embedding::{encoder_backward, encoder_forward};
use super::{Gpt, ParamLayout, Workspace};
use crate::config::ModelConfig;

/// What one pipeline stage runs: blocks `layers`, the embeddings when `first`, and the
/// final layer norm, the head and the loss when `last` (one stage alone is both).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagePart {
    /// The blocks, `a..b` of the model's `0..L`.
    pub layers: Range<usize>,
    /// Holds `wte`/`wpe` and embeds the tokens.
    pub first: bool,
    /// Holds `ln_f`, applies the tied head and computes the loss.
    pub last: bool,
}

/// The blocks of each of `stages` stages: `n_layer` blocks as evenly as possible, the
/// first `n_layer % stages` stages taking one more.
///
/// ```
/// use nanodist::model::split;
/// let parts = split(6, 4);
/// let layers: Vec<_> = parts.iter().map(|p| p.layers.clone()).collect();
/// assert_eq!(layers, [0..2, 2..4, 4..5, 5..6]);
/// assert!(parts[0].first && parts[3].last && !parts[1].first && !parts[1].last);
/// ```
pub fn split(n_layer: usize, stages: usize) -> Vec<StagePart> {
    assert!(
        stages >= 1 && stages <= n_layer.max(1),
        "{stages} stages of {n_layer} blocks"
    );
    let (base, extra) = (n_layer / stages, n_layer % stages);
    let mut start = 0;
    (0..stages)
        .map(|s| {
            let len = base + usize::from(s < extra);
            let part = StagePart {
                layers: start..start + len,
                first: s == 0,
                last: s + 1 == stages,
            };
            start += len;
            part
        })
        .collect()
}

/// The contiguous range of the flat layout that a stage owns: stage 0 the embeddings and
/// its blocks, the last stage its blocks and `ln_f`, a middle stage its blocks. The ranges
/// of all stages tile the layout. (The last stage also keeps a copy of the tied `wte`,
/// which stage 0 owns.)
pub fn owned(layout: &ParamLayout, part: &StagePart) -> Range<usize> {
    let start = if part.first {
        0
    } else {
        layout.block_range(part.layers.start).start
    };
    let end = if part.last {
        layout.len
    } else {
        layout.block_range(part.layers.end - 1).end
    };
    start..end
}

/// What a split backward ([`Gpt::stage_backward_input`]) keeps for the stage's weight
/// gradients ([`Gpt::stage_weight_grads`]): the output gradients of each block's four
/// matrix products, 9C floats a row. With the block's activations, which the micro-batch's
/// workspace still holds, they are all the weight gradients need.
#[derive(Clone, Debug)]
pub struct Deferred {
    blocks: Vec<BlockDouts>,
}

impl Deferred {
    /// Buffers for a stage running `part` on batches of `batch` sequences of `seq_len`.
    pub fn for_stage(cfg: &ModelConfig, part: &StagePart, batch: usize, seq_len: usize) -> Self {
        let n = batch * seq_len;
        Deferred {
            blocks: (part.layers.clone())
                .map(|_| BlockDouts::new(n, cfg.n_embd))
                .collect(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let floats: usize = self.blocks.iter().map(BlockDouts::len).sum();
        floats * std::mem::size_of::<f32>()
    }
}

impl Workspace {
    /// Buffers for a stage running `part` on batches of `batch` sequences of `seq_len`.
    pub fn for_stage(cfg: &ModelConfig, part: &StagePart, batch: usize, seq_len: usize) -> Self {
        let mine = ModelConfig {
            n_layer: part.layers.len(),
            ..cfg.clone()
        };
        Workspace::new(&mine, batch, seq_len)
    }

    /// The stage's input activations (B,T,C), written by the caller before
    /// [`Gpt::stage_forward`] on every stage but the first.
    pub fn stage_input_mut(&mut self) -> &mut [f32] {
        &mut self.encoded
    }

    /// The stage's output activations (B,T,C) after [`Gpt::stage_forward`]: what the next
    /// stage takes as its input.
    pub fn stage_output(&self) -> &[f32] {
        self.blocks.last().map_or(&self.encoded, |b| &b.x_out)
    }

    /// d loss / d (the stage's output), written by the caller before [`Gpt::stage_backward`]
    /// on every stage but the last; after it, d loss / d (the stage's input).
    pub fn stage_grad_mut(&mut self) -> &mut [f32] {
        &mut self.scratch.dres
    }

    /// d loss / d (the stage's input) after [`Gpt::stage_backward`]: what the previous stage
    /// takes.
    pub fn stage_grad(&self) -> &[f32] {
        &self.scratch.dres
    }

    /// Bytes of what forward keeps for backward on a stage running `part`: its input, every
    /// block's activations, and on the last stage the head's (logits, layer norm, losses).
    /// The gradient scratch, reused by every backward, is not counted.
    pub fn activation_bytes(&self, part: &StagePart) -> usize {
        let f = std::mem::size_of::<f32>();
        let b = &self.blocks;
        let block: usize = b
            .iter()
            .map(|a| {
                a.ln1.len()
                    + a.ln1_mean.len()
                    + a.ln1_rstd.len()
                    + a.qkv.len()
                    + a.att.len()
                    + a.atty.len()
                    + a.x_mid.len()
                    + a.ln2.len()
                    + a.ln2_mean.len()
                    + a.ln2_rstd.len()
                    + a.fch.len()
                    + a.fcg.len()
                    + a.x_out.len()
            })
            .sum();
        let tokens = if part.first { self.inputs.len() } else { 0 }
            + if part.last { self.targets.len() } else { 0 };
        let head = if part.last {
            self.lnf.len()
                + self.lnf_mean.len()
                + self.lnf_rstd.len()
                + self.logits.len()
                + self.lse.len()
                + self.losses.len()
        } else {
            0
        };
        (self.encoded.len() + block + head) * f + tokens * std::mem::size_of::<u32>()
    }
}

impl Gpt {
    /// Runs `part` of the model. The first stage embeds `inputs (B,T)`; a later one reads
    /// its input from [`Workspace::stage_input_mut`]. The last stage, given `targets`,
    /// returns the mean cross-entropy; the others leave their output in
    /// [`Workspace::stage_output`] and return `None`.
    ///
    /// # Panics
    /// If `ws` was not made for `part`, or the first stage gets no inputs.
    pub fn stage_forward(
        &self,
        ws: &mut Workspace,
        part: &StagePart,
        inputs: Option<&[u32]>,
        targets: Option<&[u32]>,
    ) -> Option<f32> {
        let (c, n, threads) = (self.cfg.n_embd, ws.b * ws.t, ws.threads);
        assert_eq!(
            ws.blocks.len(),
            part.layers.len(),
            "a workspace of this stage"
        );
        let s = self.attn_shape(ws);
        let (wpe_at, blocks_at, _) = self.ends();
        let p = &self.params;
        let (wte, wpe) = (&p[..wpe_at], &p[wpe_at..blocks_at]);
        if part.first {
            let inputs = inputs.expect("the first stage embeds its inputs");
            assert_eq!(inputs.len(), n, "inputs must be B*T = {n} tokens");
            ws.inputs.copy_from_slice(inputs);
            encoder_forward(&mut ws.encoded, inputs, wte, wpe, ws.t, c);
        }
        for (i, l) in part.layers.clone().enumerate() {
            let (done, rest) = ws.blocks.split_at_mut(i);
            let x_in = if i == 0 {
                &ws.encoded
            } else {
                &done[i - 1].x_out
            };
            let w = block_weights(&p[self.layout.block_range(l)], c);
            block_forward(&mut rest[0], x_in, &w, s, threads);
        }
        if !part.last {
            return None;
        }
        self.head_forward(ws, targets)
    }

    /// ACCUMULATES `part`'s share of d(grad_scale * summed loss)/d(params) into `grads` (the
    /// full layout's length; only `part`'s tensors are written). The last stage starts from
    /// the loss; the others from [`Workspace::stage_grad_mut`]. Every stage but the first
    /// leaves d loss / d (its input) in [`Workspace::stage_grad`].
    ///
    /// On the last stage the head's share of the tied `wte` gradient goes to `grads[wte]`,
    /// on the first the embedding's: the two halves of one gradient, which the pipeline adds.
    ///
    /// # Panics
    /// If the last stage's forward had no targets, or `grads` does not match the layout.
    pub fn stage_backward(
        &self,
        ws: &mut Workspace,
        part: &StagePart,
        grad_scale: f32,
        grads: &mut [f32],
    ) {
        self.stage_backward_split(ws, part, grad_scale, grads, None);
    }

    /// [`Gpt::stage_backward`] without the blocks' four weight gradients each (`c_attn`,
    /// `attn.c_proj`, `c_fc`, `mlp.c_proj`): the input gradient the previous stage waits
    /// for, sooner. What those products need is kept in `later`; [`Gpt::stage_weight_grads`]
    /// adds them to `grads` afterwards, with the same bits as the whole backward. (The zero-bubble
    /// schedule's "B"; the head's and the embedding's gradients are small and stay here.)
    pub fn stage_backward_input(
        &self,
        ws: &mut Workspace,
        part: &StagePart,
        grad_scale: f32,
        grads: &mut [f32],
        later: &mut Deferred,
    ) {
        self.stage_backward_split(ws, part, grad_scale, grads, Some(later));
    }

    /// ACCUMULATES into `grads` the weight gradients [`Gpt::stage_backward_input`] left in
    /// `kept`, from the activations `ws` still holds for the same micro-batch (the schedule's
    /// "W": no message waits for it, so it can fill a stage's idle time).
    pub fn stage_weight_grads(
        &self,
        ws: &Workspace,
        part: &StagePart,
        grads: &mut [f32],
        kept: &Deferred,
    ) {
        let (c, n, threads) = (self.cfg.n_embd, ws.b * ws.t, ws.threads);
        assert_eq!(kept.blocks.len(), part.layers.len(), "kept by this stage");
        for (i, l) in part.layers.clone().enumerate() {
            let g = block_grads(&mut grads[self.layout.block_range(l)], c);
            block_weight_grads(g, &ws.blocks[i], &kept.blocks[i], n, threads);
        }
    }

    fn stage_backward_split(
        &self,
        ws: &mut Workspace,
        part: &StagePart,
        grad_scale: f32,
        grads: &mut [f32],
        mut later: Option<&mut Deferred>,
    ) {
        let (c, threads) = (self.cfg.n_embd, ws.threads);
        assert_eq!(
            grads.len(),
            self.layout.len,
            "the gradient buffer must match"
        );
        let s = self.attn_shape(ws);
        let (wpe_at, blocks_at, _) = self.ends();
        let p = &self.params;
        if part.last {
            assert!(
                ws.has_targets,
                "backward needs a forward with targets first"
            );
            self.head_backward(ws, grad_scale, grads);
        }
        let d = &mut ws.scratch;
        for (i, l) in part.layers.clone().enumerate().rev() {
            let range = self.layout.block_range(l);
            let x_in = if i == 0 {
                &ws.encoded
            } else {
                &ws.blocks[i - 1].x_out
            };
            let w = block_weights(&p[range.clone()], c);
            let keep = later.as_deref_mut().map(|k| &mut k.blocks[i]);
            block_backward(
                block_grads(&mut grads[range], c),
                d,
                &ws.blocks[i],
                x_in,
                &w,
                s,
                threads,
                keep,
            );
        }
        if part.first {
            let (dwte, dwpe) = grads[..blocks_at].split_at_mut(wpe_at);
            encoder_backward(dwte, dwpe, &d.dres, &ws.inputs, ws.t, c);
        }
    }
}
