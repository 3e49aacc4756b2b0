//! A run of tensor-parallel blocks on one rank of a tensor group: the blocks of a pipeline
//! stage (`--tp` with `--pp`), with the embedding on the first stage and ln_f, the tied head
//! and the loss on the last. The whole model (`model.rs`) is the one-stage case: all L
//! blocks, first and last.
//!
//! ```text
//!   --workers 4 --tp 2 --pp 2     (DP = 1; each stage a tensor group of 2)
//!
//!            stage 0 (first)                         stage 1 (last)
//!   tp 0:  embed ─> block 0 (my heads) ─x_0─────>  block 1 (my heads) ─> ln_f ─> head ─> loss
//!   tp 1:  embed ─> block 0 (my heads) ─x_1─────>  block 1 (my heads) ─> ln_f ─> head ─> loss
//!                   f, g over {tp 0, tp 1}          f, g over {tp 0, tp 1}
//!   x_r: the residual stream (m,C) leaving tp rank r, sent to tp rank r of the next stage
//!        (m = N: every rank holds the same floats; m = N/TP with --sp: rank r's rows)
//!
//!   --tp 2 alone: one stage, first and last
//!   tp r:  embed ─> block 0 ─> ... ─> block L-1 ─> ln_f ─> head ─> loss
//! ```
//!
//! The residual stream between blocks is whole (or, with `--sp`, split by rows) on every rank
//! of a tensor group, so a stage boundary cuts it where no collective is open: each rank sends
//! its own copy (or rows) to the same rank of the next stage, and no rank waits on another
//! rank of its group to do so. The embeddings on the first stage and ln_f and the tied head on
//! the last are whole copies on every rank of the group.
//!
//! One [`TensorStage`] holds one micro-batch's activations; a pipeline keeps one per
//! micro-batch in flight, and all of them share the stage's [`Ops`] (its tensor group).
//! With `--sp` the whole copies' gradients are partial sums (each rank saw its own rows);
//! the pipeline adds them over the group once per step ([`whole_copies`]) rather
//! than once per micro-batch: a sum is linear, so once is enough.

use std::ops::Range;

use crate::collective::{Algorithm, CommError};
use crate::config::ModelConfig;
use crate::model::layernorm::{layernorm_backward, layernorm_forward};
use crate::model::linear::{linear_backward, linear_forward};
use crate::model::loss::{crossentropy_backward, crossentropy_forward};
use crate::model::matmul::Out;
use crate::model::{ParamLayout, StagePart};

use super::block::{self, block_backward, block_forward, weights, Acts, Dims, Scratch};
use super::ops::Ops;
use super::shard::{local_layout, runs};

/// A pipeline stage's tensor group, as one rank holds it: the operators, one
/// [`TensorStage`] per micro-batch slot, and (`--sp` only; else empty) the stage's whole
/// copies in the local layout with a buffer to pack their gradients for the group's sum.
#[derive(Debug)]
pub struct StageGroup {
    /// The tensor group's collectives (f and g).
    pub ops: Ops,
    /// One micro-batch's activations per slot of the pipeline.
    pub slots: Vec<TensorStage>,
    /// The whole copies' local ranges, summed over the group once a step with `--sp`.
    pub replicated: Vec<Range<usize>>,
    /// Their gradients, packed for one all-reduce.
    pub pack: Vec<f32>,
}

/// One micro-batch's activations on one rank of a stage's tensor group (for the whole
/// model: one batch's, on a stage of all the blocks).
#[derive(Debug)]
pub struct TensorStage {
    cfg: ModelConfig,
    layout: ParamLayout,
    part: StagePart,
    d: Dims,
    /// My rows of the N (all of them without `--sp`).
    rows: Range<usize>,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    has_targets: bool,
    /// (m,C) the stage's input: the embedding's output on the first stage, else received
    encoded: Vec<f32>,
    /// One per block of the stage.
    blocks: Vec<Acts>,
    scratch: Scratch,
    /// The last stage's head: ln_f(x) (m,C), its mean and 1/std (m), logits (m,V), their
    /// log-sum-exp and losses (m), and the gradients d ln_f (m,C), d logits (m,V). Empty on
    /// the other stages.
    lnf: Vec<f32>,
    lnf_mean: Vec<f32>,
    lnf_rstd: Vec<f32>,
    logits: Vec<f32>,
    lse: Vec<f32>,
    losses: Vec<f32>,
    dln: Vec<f32>,
    dlogits: Vec<f32>,
}

impl TensorStage {
    /// Buffers for `part` on the rank of `ops`' tensor group, for micro-batches of `batch`
    /// sequences of `seq_len` tokens.
    ///
    /// # Panics
    /// If the group's size does not divide H, or with `--sp` the N rows
    /// (`TrainConfig::validate` says so first, in one line).
    pub fn new(
        cfg: &ModelConfig,
        part: &StagePart,
        batch: usize,
        seq_len: usize,
        ops: &Ops,
    ) -> TensorStage {
        let tp = ops.comm.size();
        let n = batch * seq_len;
        assert_eq!(cfg.n_head % tp, 0, "--tp {tp} must divide the heads");
        assert!(!ops.sp || n % tp == 0, "--sp: {tp} must divide {n} rows");
        let rows = ops.my_rows(n);
        let d = Dims::new(cfg, batch, seq_len, tp, ops.sp);
        assert_eq!(d.m, rows.len());
        let (m, c, v) = (d.m, cfg.n_embd, cfg.vocab_size);
        let z = |len: usize| vec![0.0f32; len];
        let head = |len: usize| z(if part.last { len } else { 0 });
        TensorStage {
            cfg: cfg.clone(),
            layout: local_layout(cfg, tp),
            part: part.clone(),
            rows,
            inputs: vec![0; n],
            targets: vec![0; n],
            has_targets: false,
            encoded: z(m * c),
            blocks: vec![Acts::new(d); part.layers.len()],
            scratch: Scratch::new(d),
            lnf: head(m * c),
            lnf_mean: head(m),
            lnf_rstd: head(m),
            logits: head(m * v),
            lse: head(m),
            losses: head(m),
            dln: head(m * c),
            dlogits: head(m * v),
            d,
        }
    }

    /// The stage's input (m,C), written by the caller before [`TensorStage::forward`] on
    /// every stage but the first.
    pub fn input_mut(&mut self) -> &mut [f32] {
        &mut self.encoded
    }

    /// The stage's output (m,C) after [`TensorStage::forward`]: the next stage's input.
    pub fn output(&self) -> &[f32] {
        self.blocks.last().map_or(&self.encoded, |b| &b.x_out)
    }

    /// d loss / d (the stage's output), written by the caller before
    /// [`TensorStage::backward`] on every stage but the last; after it, d loss / d (the
    /// stage's input).
    pub fn grad_mut(&mut self) -> &mut [f32] {
        &mut self.scratch.dres
    }

    /// d loss / d (the stage's input) after [`TensorStage::backward`].
    pub fn grad(&self) -> &[f32] {
        &self.scratch.dres
    }

    /// Bytes of the float buffers this rank holds for the stage: every block's activations,
    /// the scratch of backward, and the ends (input, head, loss and their gradients).
    pub(super) fn buffer_bytes(&self) -> usize {
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

    /// Runs the stage with this rank's `params` (its whole shard, in the local layout; only
    /// the stage's tensors are read). The first stage embeds `inputs (B,T)`; the last, given
    /// `targets`, returns the mean cross-entropy over all B*T tokens (the same on every rank
    /// of the group). A collective of the tensor group.
    pub fn forward(
        &mut self,
        ops: &mut Ops,
        params: &[f32],
        inputs: Option<&[u32]>,
        targets: Option<&[u32]>,
    ) -> Result<Option<f32>, CommError> {
        let (d, c) = (self.d, self.cfg.n_embd);
        let n = d.n();
        assert_eq!(
            params.len(),
            self.layout.len,
            "params must be this rank's shard"
        );
        let (wpe_at, blocks_at, lnf_at) = self.ends();
        let (wte, wpe) = (&params[..wpe_at], &params[wpe_at..blocks_at]);
        if self.part.first {
            let inputs = inputs.expect("the first stage embeds its inputs");
            assert_eq!(inputs.len(), n, "inputs must be B*T = {n} tokens");
            self.inputs.copy_from_slice(inputs);
            let (ids, first) = (&inputs[self.rows.clone()], self.rows.start);
            embed(&mut self.encoded, ids, first, wte, wpe, d.t, c);
        }
        for (i, l) in self.part.layers.clone().enumerate() {
            let (done, rest) = self.blocks.split_at_mut(i);
            let x_in = if i == 0 {
                &self.encoded
            } else {
                &done[i - 1].x_out
            };
            let w = weights(&params[self.layout.block_range(l)], d);
            let part = &mut self.scratch.part;
            block_forward(&mut rest[0], part, x_in, &w, d, ops, l)?;
        }
        if !self.part.last {
            return Ok(None);
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
            // each rank has the losses of its rows: their sum is the whole (micro-)batch's
            ops.comm.all_reduce(&mut total, Algorithm::Naive)?;
        }
        Ok(Some((total[0] / n as f64) as f32))
    }

    /// ACCUMULATES this rank's share of the stage's d(grad_scale * summed loss)/d(params)
    /// into `grads` (the local layout; only the stage's tensors are written). The last stage
    /// starts from the loss, the others from [`TensorStage::grad_mut`]; every stage but the
    /// first leaves d loss / d (its input) in [`TensorStage::grad`]. A collective of the
    /// tensor group. With `--sp` the whole copies' gradients are this rank's rows' part.
    ///
    /// # Panics
    /// If the last stage's forward had no targets.
    pub fn backward(
        &mut self,
        ops: &mut Ops,
        params: &[f32],
        grad_scale: f32,
        grads: &mut [f32],
    ) -> Result<(), CommError> {
        assert_eq!(
            grads.len(),
            self.layout.len,
            "grads must be this rank's shard"
        );
        let (d, c) = (self.d, self.cfg.n_embd);
        let (wpe_at, blocks_at, lnf_at) = self.ends();
        if self.part.last {
            assert!(
                self.has_targets,
                "backward needs a forward with targets first"
            );
            let wte = &params[..wpe_at];
            let mine = &self.targets[self.rows.clone()];
            let (logits, lse) = (&self.logits, &self.lse);
            crossentropy_backward(&mut self.dlogits, logits, mine, lse, grad_scale, 1);
            let (g_front, g_lnf) = grads.split_at_mut(lnf_at);
            // logits = lnf @ wte^T  =>  dlnf = dlogits @ wte,  dwte += dlogits^T @ lnf
            let dwte = &mut g_front[..wpe_at];
            let (dln, dlogits, lnf) = (&mut self.dln, &self.dlogits, &self.lnf);
            linear_backward(dln, dwte, dlogits, lnf, wte, d.m, Out::Set, 1);
            let s = &mut self.scratch;
            s.dres.fill(0.0);
            let x_last = self.blocks.last().map_or(&self.encoded, |b| &b.x_out);
            let (mean, rstd, w) = (&self.lnf_mean, &self.lnf_rstd, &params[lnf_at..]);
            layernorm_backward(&mut s.dres, g_lnf, &self.dln, x_last, w, mean, rstd, 1);
        }
        for (i, l) in self.part.layers.clone().enumerate().rev() {
            let range = self.layout.block_range(l);
            let x_in = if i == 0 {
                &self.encoded
            } else {
                &self.blocks[i - 1].x_out
            };
            let w = weights(&params[range.clone()], d);
            let g = block::grads(&mut grads[range], d);
            block_backward(g, &mut self.scratch, &self.blocks[i], x_in, &w, d, ops, l)?;
        }
        if self.part.first {
            let (dwte, dwpe) = grads[..blocks_at].split_at_mut(wpe_at);
            let (ids, first) = (&self.inputs[self.rows.clone()], self.rows.start);
            embed_backward(dwte, dwpe, &self.scratch.dres, ids, first, d.t, c);
        }
        Ok(())
    }

    /// Offsets of wte, wpe's end (= the first block), and ln_f in the local layout.
    fn ends(&self) -> (usize, usize, usize) {
        let c = self.cfg.n_embd;
        let wpe = self.cfg.vocab_size * c;
        (wpe, wpe + self.cfg.block_size * c, self.layout.len - c)
    }
}

/// `out (m,C)`: rows `first..first+m` of the (B*T) tokens, `wte[id] + wpe[position]`.
fn embed(out: &mut [f32], ids: &[u32], first: usize, wte: &[f32], wpe: &[f32], t: usize, c: usize) {
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
fn embed_backward(
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

/// `--sp`: adds the tensor group's partial gradients of the whole copies at `ranges` of
/// `grads` (each rank's came from its own rows) in one all-reduce, packed into `pack` (their
/// total length), and counts what it sends in `ops.floats_sent`. With `timed_as` and a clock
/// in `ops`, the all-reduce's span goes to `ops.spans` as that layer's.
pub fn sum_whole_copies(
    ops: &mut Ops,
    ranges: &[Range<usize>],
    pack: &mut [f32],
    grads: &mut [f32],
    timed_as: Option<usize>,
) -> Result<(), CommError> {
    let mut at = 0;
    for r in ranges {
        pack[at..at + r.len()].copy_from_slice(&grads[r.clone()]);
        at += r.len();
    }
    let p = ops.comm.size() as u64;
    ops.floats_sent += 2 * pack.len() as u64 / p * (p - 1);
    let (comm, algorithm) = (&mut ops.comm, ops.algorithm);
    match (ops.clock, timed_as) {
        (Some(clock), Some(layer)) => {
            let phase = crate::trace::Phase::Tensor {
                layer,
                op: "all-reduce",
            };
            let spans = &mut ops.spans;
            clock.time(spans, phase, ops.step, || comm.all_reduce(pack, algorithm))?
        }
        _ => comm.all_reduce(pack, algorithm)?,
    }
    let mut at = 0;
    for r in ranges {
        grads[r.clone()].copy_from_slice(&pack[at..at + r.len()]);
        at += r.len();
    }
    Ok(())
}

/// The local ranges (in rank `rank`'s layout, of a `tp`-way group) of the whole copies (the
/// embeddings and layer norms every rank holds) that lie inside `within`: what `--sp` adds
/// over the tensor group, and what a gradient norm counts once rather than per rank.
pub fn whole_copies(
    cfg: &ModelConfig,
    tp: usize,
    rank: usize,
    within: &Range<usize>,
) -> Vec<Range<usize>> {
    (runs(cfg, tp, rank).into_iter())
        .filter(|r| r.replicated)
        .map(|r| r.local.max(within.start)..(r.local + r.len).min(within.end))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Bytes of what one micro-batch's forward keeps for backward on one rank of a `tp`-way
/// stage running `part`, for `b` sequences of `t` tokens: its input, every block's
/// activations, and on the last stage the head's; on the first and last stage the tokens.
/// The counterpart of `Workspace::activation_bytes` for a stage of whole blocks.
pub fn stage_activation_bytes(
    cfg: &ModelConfig,
    part: &StagePart,
    b: usize,
    t: usize,
    tp: usize,
    sp: bool,
) -> usize {
    let d = Dims::new(cfg, b, t, tp, sp);
    let (m, c, v) = (d.m, cfg.n_embd, cfg.vocab_size);
    let blocks = part.layers.len() * Acts::new(d).len();
    // ln_f's output, mean and 1/std, the logits, their log-sum-exp and the losses
    let head = if part.last {
        m * c + 2 * m + m * v + 2 * m
    } else {
        0
    };
    let tokens = (usize::from(part.first) + usize::from(part.last)) * d.n();
    4 * (m * c + blocks + head) + 4 * tokens
}
