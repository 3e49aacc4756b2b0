//! The GPT: parameters in one flat buffer, forward and backward over a [`Workspace`].
//!
//! ```text
//!   inputs (B,T) ─> embedding ─> block 0 ─> ... ─> block L-1 ─> ln_f ─> @ wte^T ─> logits (B,T,V)
//!                                                                                   │
//!                                                    targets (B,T) ─> cross-entropy ┘─> loss
//! ```
//! Backward walks the same picture right to left and, after each stage, tells the
//! [`GradSink`] which suffix of the gradient buffer is final (see `layout.rs`).

use super::attention::AttnShape;
use super::block::{block_backward, block_forward, block_grads, block_weights};
use super::embedding::{encoder_backward, encoder_forward};
use super::layernorm::{layernorm_backward, layernorm_forward};
use super::linear::{linear_backward, linear_forward};
use super::loss::{crossentropy_backward, crossentropy_forward};
use super::matmul::Out;
use super::{ParamLayout, Workspace};
use crate::config::ModelConfig;
use crate::rng::{Draw, SeedableRng, Xoshiro256StarStar};

/// Where backward writes gradients; lets a caller take away finished parts while backward runs.
///
/// Backward writes only through [`GradSink::open`], asking for it afresh after every
/// [`GradSink::finished`]; offsets are those of the full [`ParamLayout`]. A plain `[f32]` of
/// the layout's length is a sink that keeps everything.
pub trait GradSink {
    /// The part of the gradient buffer backward may still write: offsets [0, len) of the full layout.
    fn open(&mut self) -> &mut [f32];
    /// Backward will not write offsets >= `from` again (called after ln_f+head, after each
    /// block, and with 0 at the end).
    fn finished(&mut self, from: usize);
}

impl GradSink for [f32] {
    fn open(&mut self) -> &mut [f32] {
        self
    }
    fn finished(&mut self, _from: usize) {}
}

impl GradSink for Vec<f32> {
    fn open(&mut self) -> &mut [f32] {
        self
    }
    fn finished(&mut self, _from: usize) {}
}

/// A GPT whose parameters live in one flat buffer laid out by `layout`.
#[derive(Clone, Debug)]
pub struct Gpt {
    /// The model's shape.
    pub cfg: ModelConfig,
    /// Names and offsets of every tensor in `params`.
    pub layout: ParamLayout,
    /// Every weight, `layout.len` floats.
    pub params: Vec<f32>,
}

impl Gpt {
    /// A freshly initialised model, as nanoGPT initialises it: N(0, 0.02) for the matrices and
    /// both embeddings, N(0, 0.02/sqrt(2L)) for the two projections that write into the
    /// residual stream (`attn.c_proj`, `mlp.c_proj`), 1 for the LayerNorm gains. The weights
    /// are drawn in layout order from one [`Xoshiro256StarStar`] stream ([`Draw::normal`]), so
    /// they depend only on `seed`, and are the same bits on every platform.
    pub fn new(cfg: ModelConfig, seed: u64) -> Gpt {
        let layout = ParamLayout::new(&cfg);
        let mut rng = Xoshiro256StarStar::seed_from_u64(seed);
        let mut params = vec![0.0f32; layout.len];
        let proj_std = 0.02 / (2.0 * cfg.n_layer as f64).sqrt();
        for t in &layout.tensors {
            let p = &mut params[t.offset..t.offset + t.len];
            if t.name.contains(".ln_") {
                p.fill(1.0);
            } else {
                let std = if t.name.ends_with("c_proj.weight") {
                    proj_std
                } else {
                    0.02
                };
                p.iter_mut().for_each(|x| *x = (rng.normal() * std) as f32);
            }
        }
        Gpt {
            cfg,
            layout,
            params,
        }
    }

    /// A model with the given parameters (a checkpoint, another replica).
    ///
    /// # Panics
    /// If `params` is not `cfg.num_params()` long.
    pub fn from_params(cfg: ModelConfig, params: Vec<f32>) -> Gpt {
        let layout = ParamLayout::new(&cfg);
        assert_eq!(
            params.len(),
            layout.len,
            "parameter count does not match the config"
        );
        Gpt {
            cfg,
            layout,
            params,
        }
    }

    pub(crate) fn attn_shape(&self, ws: &Workspace) -> AttnShape {
        AttnShape {
            b: ws.b,
            t: ws.t,
            c: self.cfg.n_embd,
            n_head: self.cfg.n_head,
        }
    }

    /// Views of wte (V,C), wpe (T,C) and ln_f (C) inside `buf` (weights or gradients).
    pub(crate) fn ends(&self) -> (usize, usize, usize) {
        let c = self.cfg.n_embd;
        let wpe = self.cfg.vocab_size * c;
        (wpe, wpe + self.cfg.block_size * c, self.layout.len - c)
    }

    /// Runs the model on `inputs (B,T)`, filling `ws`; with `targets (B,T)` returns the mean
    /// cross-entropy over the B*T tokens. The logits are in `ws.logits()` either way.
    ///
    /// # Panics
    /// If `inputs` or `targets` is not B*T long for `ws`, or holds an id outside the vocabulary.
    pub fn forward(
        &self,
        ws: &mut Workspace,
        inputs: &[u32],
        targets: Option<&[u32]>,
    ) -> Option<f32> {
        let (c, n, threads) = (self.cfg.n_embd, ws.b * ws.t, ws.threads);
        assert_eq!(inputs.len(), n, "inputs must be B*T = {n} tokens");
        let s = self.attn_shape(ws);
        let (wpe_at, blocks_at, _) = self.ends();
        let p = &self.params;
        let (wte, wpe) = (&p[..wpe_at], &p[wpe_at..blocks_at]);
        ws.inputs.copy_from_slice(inputs);
        encoder_forward(&mut ws.encoded, inputs, wte, wpe, ws.t, c);
        for l in 0..self.cfg.n_layer {
            let (done, rest) = ws.blocks.split_at_mut(l);
            let x_in = if l == 0 {
                &ws.encoded
            } else {
                &done[l - 1].x_out
            };
            let w = block_weights(&p[self.layout.block_range(l)], c);
            block_forward(&mut rest[0], x_in, &w, s, threads);
        }
        self.head_forward(ws, targets)
    }

    /// ACCUMULATES d(grad_scale * sum over tokens of the cross-entropy)/d(params) into `grads`,
    /// for the last forward (which must have had targets).
    ///
    /// With N workers each holding a shard of a global batch of B sequences, every worker
    /// passes `grad_scale = 1 / (B * T)`: the plain SUM of their gradients is then the mean
    /// gradient of the whole batch.
    ///
    /// # Panics
    /// If the last forward had no targets, or the sink's open part is shorter than promised.
    pub fn backward<S: GradSink + ?Sized>(
        &self,
        ws: &mut Workspace,
        grad_scale: f32,
        grads: &mut S,
    ) {
        assert!(
            ws.has_targets,
            "backward needs a forward with targets first"
        );
        let (c, threads) = (self.cfg.n_embd, ws.threads);
        let s = self.attn_shape(ws);
        let (wpe_at, blocks_at, lnf_at) = self.ends();
        let p = &self.params;

        self.head_backward(ws, grad_scale, grads.open());
        grads.finished(lnf_at);
        let d = &mut ws.scratch;

        for l in (0..self.cfg.n_layer).rev() {
            let range = self.layout.block_range(l);
            let g = grads.open();
            assert!(g.len() >= range.end, "the sink closed block {l} too early");
            let x_in = if l == 0 {
                &ws.encoded
            } else {
                &ws.blocks[l - 1].x_out
            };
            let w = block_weights(&p[range.clone()], c);
            block_backward(
                block_grads(&mut g[range.clone()], c),
                d,
                &ws.blocks[l],
                x_in,
                &w,
                s,
                threads,
                None,
            );
            grads.finished(range.start);
        }

        // x_0 = wte[inputs] + wpe: scatter dres into both tables
        let g = grads.open();
        assert!(
            g.len() >= blocks_at,
            "the sink closed the embeddings too early"
        );
        let (dwte, dwpe) = g[..blocks_at].split_at_mut(wpe_at);
        encoder_backward(dwte, dwpe, &d.dres, &ws.inputs, ws.t, c);
        grads.finished(0);
    }

    /// The end of the model, shared by [`Gpt::forward`] and a pipeline's last stage: ln_f
    /// over the last block's output, the head tied to the token embedding, and with
    /// `targets` the mean cross-entropy over the B*T tokens.
    pub(super) fn head_forward(&self, ws: &mut Workspace, targets: Option<&[u32]>) -> Option<f32> {
        let (n, threads) = (ws.b * ws.t, ws.threads);
        let (wpe_at, _, lnf_at) = self.ends();
        let p = &self.params;
        let x_last = ws.blocks.last().map_or(&ws.encoded, |b| &b.x_out);
        layernorm_forward(
            &mut ws.lnf,
            &mut ws.lnf_mean,
            &mut ws.lnf_rstd,
            x_last,
            &p[lnf_at..],
            threads,
        );
        // the head is tied to the token embedding: logits = lnf @ wte^T
        linear_forward(&mut ws.logits, &ws.lnf, &p[..wpe_at], n, Out::Set, threads);

        ws.has_targets = targets.is_some();
        let targets = targets?;
        assert_eq!(targets.len(), n, "targets must be B*T = {n} tokens");
        ws.targets.copy_from_slice(targets);
        crossentropy_forward(&mut ws.losses, &mut ws.lse, &ws.logits, targets);
        let total: f64 = ws.losses.iter().map(|&x| x as f64).sum();
        Some((total / n as f64) as f32)
    }

    /// Backward through [`Gpt::head_forward`]: ACCUMULATES the head's share of `wte`'s
    /// gradient and ln_f's into `g` (the full layout), and leaves d loss / d (the last
    /// block's output) in `ws.scratch.dres`.
    pub(super) fn head_backward(&self, ws: &mut Workspace, grad_scale: f32, g: &mut [f32]) {
        let (n, threads) = (ws.b * ws.t, ws.threads);
        let (wpe_at, _, lnf_at) = self.ends();
        let p = &self.params;
        let d = &mut ws.scratch;
        // loss = mean CE  =>  dlogits = grad_scale * (probs - onehot)
        crossentropy_backward(
            &mut d.dlogits,
            &ws.logits,
            &ws.targets,
            &ws.lse,
            grad_scale,
            threads,
        );
        assert_eq!(
            g.len(),
            self.layout.len,
            "the gradient buffer must match the layout"
        );
        let (g_front, g_lnf) = g.split_at_mut(lnf_at);
        // logits = lnf @ wte^T  =>  dlnf = dlogits @ wte,  dwte += dlogits^T @ lnf
        linear_backward(
            &mut d.dln,
            &mut g_front[..wpe_at],
            &d.dlogits,
            &ws.lnf,
            &p[..wpe_at],
            n,
            Out::Set,
            threads,
        );
        // lnf = ln_f(x_L): dres starts as d x_L
        d.dres.fill(0.0);
        let x_last = ws.blocks.last().map_or(&ws.encoded, |b| &b.x_out);
        let (mean, rstd) = (&ws.lnf_mean, &ws.lnf_rstd);
        layernorm_backward(
            &mut d.dres,
            g_lnf,
            &d.dln,
            x_last,
            &p[lnf_at..],
            mean,
            rstd,
            threads,
        );
    }
}
