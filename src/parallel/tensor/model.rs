//! The whole GPT on one worker of a tensor group: embeddings, its share of every block, the
//! final layer norm, the tied head and the loss.
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
use crate::model::layernorm::{layernorm_backward, layernorm_forward};
use crate::model::linear::{linear_backward, linear_forward};
use crate::model::loss::{crossentropy_backward, crossentropy_forward};
use crate::model::matmul::Out;
use crate::model::ParamLayout;

use super::block::{self, block_backward, block_forward, weights, Acts, Dims, Scratch};
use super::ops::Ops;
use super::shard::{local_layout, runs};

/// One worker's tensor-parallel model: its collectives, its layout and its activations.
/// Its parameters live in the caller's buffer, laid out by [`TensorParallel::layout`].
#[derive(Debug)]
pub struct TensorParallel {
    /// The tensor group's collectives (f and g), and what they sent.
    pub ops: Ops,
    /// This worker's parameter layout ([`local_layout`]).
    pub layout: ParamLayout,
    cfg: ModelConfig,
    d: Dims,
    /// My rows of the N (all of them without `--sp`).
    rows: Range<usize>,
    /// Local ranges of the whole copies (summed over the group with `--sp`).
    replicated: Vec<Range<usize>>,
    /// The whole copies' gradients, packed for their all-reduce.
    pack: Vec<f32>,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    has_targets: bool,
    /// (m,C) x_0 of my rows
    encoded: Vec<f32>,
    blocks: Vec<Acts>,
    scratch: Scratch,
    /// (m,C) ln_f(x_L), mean and 1/std (m)
    lnf: Vec<f32>,
    lnf_mean: Vec<f32>,
    lnf_rstd: Vec<f32>,
    /// (m,V) logits of my rows, their log-sum-exp and losses (m)
    logits: Vec<f32>,
    lse: Vec<f32>,
    losses: Vec<f32>,
    /// (m,C) d ln_f output, (m,V) d logits
    dln: Vec<f32>,
    dlogits: Vec<f32>,
}

impl TensorParallel {
    /// The model of `ops.comm`'s worker for batches of `batch` sequences of `seq_len` tokens.
    ///
    /// # Panics
    /// If the group's size does not divide H (and so C and 4C), or, with `--sp`, the N rows
    /// (`TrainConfig::validate` says so first, in one line).
    pub fn new(cfg: &ModelConfig, batch: usize, seq_len: usize, ops: Ops) -> TensorParallel {
        let (tp, rank) = (ops.comm.size(), ops.comm.rank());
        let n = batch * seq_len;
        assert_eq!(cfg.n_head % tp, 0, "--tp {tp} must divide the heads");
        assert!(!ops.sp || n % tp == 0, "--sp: {tp} must divide {n} rows");
        let rows = ops.my_rows(n);
        let c = cfg.n_embd;
        let d = Dims::new(cfg, batch, seq_len, tp, ops.sp);
        assert_eq!(d.m, rows.len());
        let replicated = (runs(cfg, tp, rank).into_iter())
            .filter(|r| r.replicated)
            .map(|r| r.local..r.local + r.len)
            .collect::<Vec<_>>();
        let packed = replicated.iter().map(|r| r.len()).sum();
        let (m, v) = (d.m, cfg.vocab_size);
        let z = |len: usize| vec![0.0f32; len];
        TensorParallel {
            layout: local_layout(cfg, tp),
            cfg: cfg.clone(),
            rows,
            replicated,
            pack: z(if d.gathers { packed } else { 0 }),
            inputs: vec![0; n],
            targets: vec![0; n],
            has_targets: false,
            encoded: z(m * c),
            blocks: vec![Acts::new(d); cfg.n_layer],
            scratch: Scratch::new(d),
            lnf: z(m * c),
            lnf_mean: z(m),
            lnf_rstd: z(m),
            logits: z(m * v),
            lse: z(m),
            losses: z(m),
            dln: z(m * c),
            dlogits: z(m * v),
            d,
            ops,
        }
    }

    /// Bytes of activations (and their gradients) this worker holds: what `--sp` shrinks.
    /// (The same as [`activation_bytes`] computes from the shapes alone.)
    pub fn activation_bytes(&self) -> usize {
        let s = &self.scratch;
        let blocks: usize = self.blocks.iter().map(Acts::len).sum();
        let scratch = s.dres.len()
            + s.dres_all.len()
            + s.part.len()
            + s.datty.len()
            + s.dqkv.len()
            + s.datt.len()
            + s.dfc.len();
        let ends = [
            &self.encoded,
            &self.lnf,
            &self.dln,
            &self.lnf_mean,
            &self.lnf_rstd,
            &self.logits,
            &self.dlogits,
            &self.lse,
            &self.losses,
        ];
        let ends: usize = ends.iter().map(|v| v.len()).sum();
        4 * (blocks + scratch + ends)
    }

    /// Offsets of wte, wpe's end (= the first block), and ln_f in the local layout.
    fn ends(&self) -> (usize, usize, usize) {
        let c = self.cfg.n_embd;
        let wpe = self.cfg.vocab_size * c;
        (wpe, wpe + self.cfg.block_size * c, self.layout.len - c)
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
        let (d, c) = (self.d, self.cfg.n_embd);
        let n = d.n();
        assert_eq!(inputs.len(), n, "inputs must be B*T = {n} tokens");
        assert_eq!(
            params.len(),
            self.layout.len,
            "params must be this worker's shard"
        );
        let (wpe_at, blocks_at, lnf_at) = self.ends();
        let (wte, wpe) = (&params[..wpe_at], &params[wpe_at..blocks_at]);
        self.inputs.copy_from_slice(inputs);
        embed(
            &mut self.encoded,
            &inputs[self.rows.clone()],
            self.rows.start,
            wte,
            wpe,
            d.t,
            c,
        );
        for l in 0..self.cfg.n_layer {
            let (done, rest) = self.blocks.split_at_mut(l);
            let x_in = if l == 0 {
                &self.encoded
            } else {
                &done[l - 1].x_out
            };
            let w = weights(&params[self.layout.block_range(l)], d);
            let part = &mut self.scratch.part;
            block_forward(&mut rest[0], part, x_in, &w, d, &mut self.ops, l)?;
        }
        let x_last = self.blocks.last().map_or(&self.encoded, |b| &b.x_out);
        let (mean, rstd) = (&mut self.lnf_mean, &mut self.lnf_rstd);
        layernorm_forward(&mut self.lnf, mean, rstd, x_last, &params[lnf_at..], 1);
        linear_forward(&mut self.logits, &self.lnf, wte, d.m, Out::Set, 1);

        self.has_targets = targets.is_some();
        let Some(targets) = targets else {
            return Ok(None);
        };
        assert_eq!(targets.len(), n, "targets must be B*T = {n} tokens");
        self.targets.copy_from_slice(targets);
        let mine = &targets[self.rows.clone()];
        crossentropy_forward(&mut self.losses, &mut self.lse, &self.logits, mine);
        let mut total = [self.losses.iter().map(|&x| x as f64).sum::<f64>()];
        if d.gathers {
            // each worker has the losses of its rows: their sum is the batch's
            self.ops.comm.all_reduce(&mut total, Algorithm::Naive)?;
        }
        Ok(Some((total[0] / n as f64) as f32))
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
        assert!(
            self.has_targets,
            "backward needs a forward with targets first"
        );
        assert_eq!(
            grads.len(),
            self.layout.len,
            "grads must be this worker's shard"
        );
        let (d, c) = (self.d, self.cfg.n_embd);
        let (wpe_at, blocks_at, lnf_at) = self.ends();
        let wte = &params[..wpe_at];
        let mine = &self.targets[self.rows.clone()];
        crossentropy_backward(
            &mut self.dlogits,
            &self.logits,
            mine,
            &self.lse,
            grad_scale,
            1,
        );
        {
            let (g_front, g_lnf) = grads.split_at_mut(lnf_at);
            // logits = lnf @ wte^T  =>  dlnf = dlogits @ wte,  dwte += dlogits^T @ lnf
            let dwte = &mut g_front[..wpe_at];
            linear_backward(
                &mut self.dln,
                dwte,
                &self.dlogits,
                &self.lnf,
                wte,
                d.m,
                Out::Set,
                1,
            );
            let s = &mut self.scratch;
            s.dres.fill(0.0);
            let x_last = self.blocks.last().map_or(&self.encoded, |b| &b.x_out);
            let (mean, rstd) = (&self.lnf_mean, &self.lnf_rstd);
            let w = &params[lnf_at..];
            layernorm_backward(&mut s.dres, g_lnf, &self.dln, x_last, w, mean, rstd, 1);
        }
        for l in (0..self.cfg.n_layer).rev() {
            let range = self.layout.block_range(l);
            let x_in = if l == 0 {
                &self.encoded
            } else {
                &self.blocks[l - 1].x_out
            };
            let w = weights(&params[range.clone()], d);
            let g = block::grads(&mut grads[range], d);
            let a = &self.blocks[l];
            block_backward(g, &mut self.scratch, a, x_in, &w, d, &mut self.ops, l)?;
        }
        let (dwte, dwpe) = grads[..blocks_at].split_at_mut(wpe_at);
        let ids = &self.inputs[self.rows.clone()];
        embed_backward(dwte, dwpe, &self.scratch.dres, ids, self.rows.start, d.t, c);
        if d.gathers {
            self.sum_replicated(grads)?;
        }
        Ok(())
    }

    /// `--sp`: adds the group's partial gradients of the whole copies (each worker's came
    /// from its own rows), in one all-reduce.
    fn sum_replicated(&mut self, grads: &mut [f32]) -> Result<(), CommError> {
        let mut at = 0;
        for r in &self.replicated {
            self.pack[at..at + r.len()].copy_from_slice(&grads[r.clone()]);
            at += r.len();
        }
        let p = self.ops.comm.size() as u64;
        self.ops.floats_sent += 2 * self.pack.len() as u64 / p * (p - 1);
        let layer = self.cfg.n_layer;
        let (comm, pack, algorithm) = (&mut self.ops.comm, &mut self.pack, self.ops.algorithm);
        match self.ops.clock {
            Some(clock) => {
                let phase = crate::trace::Phase::Tensor {
                    layer,
                    op: "all-reduce",
                };
                let spans = &mut self.ops.spans;
                clock.time(spans, phase, self.ops.step, || {
                    comm.all_reduce(pack, algorithm)
                })?
            }
            None => comm.all_reduce(pack, algorithm)?,
        }
        let mut at = 0;
        for r in &self.replicated {
            grads[r.clone()].copy_from_slice(&self.pack[at..at + r.len()]);
            at += r.len();
        }
        Ok(())
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

/// `out (m,C)`: rows `first..first+m` of the (B*T) tokens, `wte[id] + wpe[position]`.
pub(super) fn embed(
    out: &mut [f32],
    ids: &[u32],
    first: usize,
    wte: &[f32],
    wpe: &[f32],
    t: usize,
    c: usize,
) {
    let v = wte.len() / c;
    for (i, (row, &id)) in out.chunks_exact_mut(c).zip(ids).enumerate() {
        assert!((id as usize) < v, "token id outside the vocabulary of {v}");
        let pos = (first + i) % t;
        let (te, pe) = (&wte[id as usize * c..][..c], &wpe[pos * c..][..c]);
        for ((o, &a), &b) in row.iter_mut().zip(te).zip(pe) {
            *o = a + b;
        }
    }
}

/// Accumulates `dwte`, `dwpe` from `dout (m,C)` of rows `first..first+m`.
pub(super) fn embed_backward(
    dwte: &mut [f32],
    dwpe: &mut [f32],
    dout: &[f32],
    ids: &[u32],
    first: usize,
    t: usize,
    c: usize,
) {
    for (i, (drow, &id)) in dout.chunks_exact(c).zip(ids).enumerate() {
        let pos = (first + i) % t;
        // forward: out = wte[id] + wpe[pos]  =>  both rows receive dout unchanged
        for (g, &x) in dwte[id as usize * c..][..c].iter_mut().zip(drow) {
            *g += x;
        }
        for (g, &x) in dwpe[pos * c..][..c].iter_mut().zip(drow) {
            *g += x;
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
