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
use super::linear::{linear_backward, linear_forward, linear_weight_grad};
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

/// Backward through one block: on entry `d.dres` holds d loss / d x_out, on exit d loss / d x_in.
/// Accumulates the block's parameter gradients into `g`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_backward(
    g: BlockTensors<&mut [f32]>,
    d: &mut Scratch,
    a: &BlockActs,
    x_in: &[f32],
    w: &BlockTensors<&[f32]>,
    s: AttnShape,
    threads: usize,
) {
    let n = s.b * s.t;
    // x_out = x_mid + fcg @ mlp_proj^T: the residual passes dres through to x_mid unchanged
    linear_backward(
        &mut d.dfc,
        g.mlp_proj,
        &d.dres,
        &a.fcg,
        w.mlp_proj,
        n,
        Out::Set,
        threads,
    );
    // fcg = gelu(fch): dfc holds d fcg on entry, d fch on exit
    gelu_backward(&mut d.dfc, &a.fch, threads);
    // fch = ln2 @ c_fc^T
    linear_backward(
        &mut d.dln,
        g.c_fc,
        &d.dfc,
        &a.ln2,
        w.c_fc,
        n,
        Out::Set,
        threads,
    );
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
    linear_weight_grad(g.attn_proj, &d.dres, &a.atty, n, threads);
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
    linear_backward(
        &mut d.dln,
        g.c_attn,
        &d.dqkv,
        &a.ln1,
        w.c_attn,
        n,
        Out::Set,
        threads,
    );
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
