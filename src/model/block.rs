//! One transformer block, pre-LayerNorm, as in nanoGPT:
//!
//! ```text
//!   x_in ──┬─> ln_1 ─> c_attn ─> attention ─> attn.c_proj ──(+)──> x_mid
//!          └──────────────────────────────────────────────────┘
//!   x_mid ─┬─> ln_2 ─> c_fc ─> gelu ─> mlp.c_proj ──(+)──> x_out
//!          └──────────────────────────────────────────┘
//! ```
//! The residual adds are fused into the projections: `x_mid` starts as a copy of `x_in` and
//! the projection's gemm adds onto it. Backward keeps ONE gradient buffer `dres` for the
//! residual stream: a residual add passes its gradient through unchanged, so each branch's
//! layernorm backward just accumulates its share into `dres`. The other activation gradients
//! have one producer each and are written outright (`Out::Set`), so nothing needs zeroing.

use super::attention::{
    attention_backward, attention_forward, proj_backward_heads, qkv_forward, AttnShape,
};
use super::gelu::{gelu_backward, gelu_forward};
use super::layernorm::{layernorm_backward, layernorm_forward};
use super::linear::{linear_forward, linear_input_grad, linear_weight_grad};
use super::matmul::Out;
use super::workspace::{BlockActs, Scratch};

/// The six tensors of one block, in layout order: `&[f32]` for weights, `&mut [f32]` for grads.
pub(crate) struct BlockTensors<S> {
    pub ln_1: S,
    pub c_attn: S,
    pub attn_proj: S,
    pub ln_2: S,
    pub c_fc: S,
    pub mlp_proj: S,
}

/// Named views of one block's weights, `s` being exactly its `block_range`.
pub(crate) fn block_weights(s: &[f32], c: usize) -> BlockTensors<&[f32]> {
    assert_eq!(s.len(), 2 * c + 12 * c * c);
    let (ln_1, s) = s.split_at(c);
    let (c_attn, s) = s.split_at(3 * c * c);
    let (attn_proj, s) = s.split_at(c * c);
    let (ln_2, s) = s.split_at(c);
    let (c_fc, mlp_proj) = s.split_at(4 * c * c);
    BlockTensors {
        ln_1,
        c_attn,
        attn_proj,
        ln_2,
        c_fc,
        mlp_proj,
    }
}

/// Named views of one block's gradients, `s` being exactly its `block_range`.
pub(crate) fn block_grads(s: &mut [f32], c: usize) -> BlockTensors<&mut [f32]> {
    assert_eq!(s.len(), 2 * c + 12 * c * c);
    let (ln_1, s) = s.split_at_mut(c);
    let (c_attn, s) = s.split_at_mut(3 * c * c);
    let (attn_proj, s) = s.split_at_mut(c * c);
    let (ln_2, s) = s.split_at_mut(c);
    let (c_fc, mlp_proj) = s.split_at_mut(4 * c * c);
    BlockTensors {
        ln_1,
        c_attn,
        attn_proj,
        ln_2,
        c_fc,
        mlp_proj,
    }
}

/// Fills `a` from `x_in (N,C)`.
pub(crate) fn block_forward(
    a: &mut BlockActs,
    x_in: &[f32],
    w: &BlockTensors<&[f32]>,
    s: AttnShape,
    threads: usize,
) {
    let n = s.b * s.t;
    layernorm_forward(
        &mut a.ln1,
        &mut a.ln1_mean,
        &mut a.ln1_rstd,
        x_in,
        w.ln_1,
        threads,
    );
    // q, k, v head-major, the layout attention reads (see `attention`)
    qkv_forward(&mut a.qkv, &a.ln1, w.c_attn, s, threads);
    attention_forward(&mut a.atty, &mut a.att, &a.qkv, s, threads);
    a.x_mid.copy_from_slice(x_in);
    linear_forward(&mut a.x_mid, &a.atty, w.attn_proj, n, Out::Add, threads);
    layernorm_forward(
        &mut a.ln2,
        &mut a.ln2_mean,
        &mut a.ln2_rstd,
        &a.x_mid,
        w.ln_2,
        threads,
    );
    linear_forward(&mut a.fch, &a.ln2, w.c_fc, n, Out::Set, threads);
    gelu_forward(&mut a.fcg, &a.fch, threads);
    a.x_out.copy_from_slice(&a.x_mid);
    linear_forward(&mut a.x_out, &a.fcg, w.mlp_proj, n, Out::Add, threads);
}

/// The output gradients of a block's four matrix products, kept by a backward that leaves
/// the weight gradients for later ([`block_backward`] with `later`): all
/// [`block_weight_grads`] needs besides the block's activations. A zero-bubble pipeline
/// schedule runs that second half when its stage would otherwise wait (see
/// `parallel::pipeline::schedule`).
#[derive(Clone, Debug)]
pub struct BlockDouts {
    /// (N,3C) d loss / d qkv, the output of c_attn
    pub(crate) qkv: Vec<f32>,
    /// (N,C) d loss / d x_mid, the output of attn.c_proj
    pub(crate) attn_proj: Vec<f32>,
    /// (N,4C) d loss / d fch, the output of c_fc
    pub(crate) fc: Vec<f32>,
    /// (N,C) d loss / d x_out, the output of mlp.c_proj
    pub(crate) mlp_proj: Vec<f32>,
}

impl BlockDouts {
    /// Buffers for `n` rows of `c` channels.
    pub(crate) fn new(n: usize, c: usize) -> Self {
        BlockDouts {
            qkv: vec![0.0; n * 3 * c],
            attn_proj: vec![0.0; n * c],
            fc: vec![0.0; n * 4 * c],
            mlp_proj: vec![0.0; n * c],
        }
    }

    /// Floats held: 9C per row.
    pub(crate) fn len(&self) -> usize {
        self.qkv.len() + self.attn_proj.len() + self.fc.len() + self.mlp_proj.len()
    }
}

/// A weight gradient now, `dw += dout^T @ inp`, or, with `keep`, a copy of `dout` for
/// [`block_weight_grads`] to use later (the same product on the same bits then). For the
/// residual stream's gradient `dres`, which the backward goes on changing; the block's
/// other two output gradients are kept by swapping buffers, without a copy.
fn weight_grad(
    dw: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    keep: Option<&mut Vec<f32>>,
    n: usize,
    threads: usize,
) {
    match keep {
        Some(k) => k.copy_from_slice(dout),
        None => linear_weight_grad(dw, dout, inp, n, threads),
    }
}

/// Backward through one block: on entry `d.dres` holds d loss / d x_out, on exit d loss / d x_in.
/// Accumulates the block's parameter gradients into `g`; with `later`, only its layer
/// norms', and the four products' output gradients go to `later` for
/// [`block_weight_grads`] (the split backward of zero-bubble schedules: "B" here, "W" there).
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_backward(
    g: BlockTensors<&mut [f32]>,
    d: &mut Scratch,
    a: &BlockActs,
    x_in: &[f32],
    w: &BlockTensors<&[f32]>,
    s: AttnShape,
    threads: usize,
    mut later: Option<&mut BlockDouts>,
) {
    let n = s.b * s.t;
    // x_out = x_mid + fcg @ mlp_proj^T: the residual passes dres through to x_mid unchanged
    linear_input_grad(&mut d.dfc, &d.dres, w.mlp_proj, n, Out::Set, threads);
    let k = later.as_deref_mut().map(|l| &mut l.mlp_proj);
    weight_grad(g.mlp_proj, &d.dres, &a.fcg, k, n, threads);
    // fcg = gelu(fch): dfc holds d fcg on entry, d fch on exit
    gelu_backward(&mut d.dfc, &a.fch, threads);
    // fch = ln2 @ c_fc^T
    linear_input_grad(&mut d.dln, &d.dfc, w.c_fc, n, Out::Set, threads);
    match later.as_deref_mut() {
        // dfc is not read again (the next block writes it outright): keep it by a swap
        Some(l) => std::mem::swap(&mut d.dfc, &mut l.fc),
        None => linear_weight_grad(g.c_fc, &d.dfc, &a.ln2, n, threads),
    }
    // ln2 = ln_2(x_mid): add this branch's gradient to the residual's; dres is now d x_mid
    let (mean, rstd) = (&a.ln2_mean, &a.ln2_rstd);
    layernorm_backward(
        &mut d.dres,
        g.ln_2,
        &d.dln,
        &a.x_mid,
        w.ln_2,
        mean,
        rstd,
        threads,
    );

    // x_mid = x_in + atty @ attn_proj^T; datty head-major, as attention's backward reads it
    proj_backward_heads(&mut d.datty, &d.dres, w.attn_proj, s, threads);
    let k = later.as_deref_mut().map(|l| &mut l.attn_proj);
    weight_grad(g.attn_proj, &d.dres, &a.atty, k, n, threads);
    // atty = attention(qkv)
    attention_backward(
        &mut d.dqkv,
        &mut d.datt,
        &d.datty,
        &a.qkv,
        &a.att,
        s,
        threads,
    );
    // qkv = ln1 @ c_attn^T (stored head-major; its gradient dqkv is (N,3C), the plain layout)
    linear_input_grad(&mut d.dln, &d.dqkv, w.c_attn, n, Out::Set, threads);
    match later {
        // (as dfc: attention's backward writes dqkv outright)
        Some(l) => std::mem::swap(&mut d.dqkv, &mut l.qkv),
        None => linear_weight_grad(g.c_attn, &d.dqkv, &a.ln1, n, threads),
    }
    // ln1 = ln_1(x_in); dres is now d x_in
    let (mean, rstd) = (&a.ln1_mean, &a.ln1_rstd);
    layernorm_backward(
        &mut d.dres,
        g.ln_1,
        &d.dln,
        x_in,
        w.ln_1,
        mean,
        rstd,
        threads,
    );
}

/// The weight gradients [`block_backward`] left in `kept`: the four products
/// `dw += dout^T @ inp`, each on the bits the backward would have used.
pub(crate) fn block_weight_grads(
    g: BlockTensors<&mut [f32]>,
    a: &BlockActs,
    kept: &BlockDouts,
    n: usize,
    threads: usize,
) {
    linear_weight_grad(g.mlp_proj, &kept.mlp_proj, &a.fcg, n, threads);
    linear_weight_grad(g.c_fc, &kept.fc, &a.ln2, n, threads);
    linear_weight_grad(g.attn_proj, &kept.attn_proj, &a.atty, n, threads);
    linear_weight_grad(g.c_attn, &kept.qkv, &a.ln1, n, threads);
}
