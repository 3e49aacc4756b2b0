//! One transformer block on one worker of a tensor group: its H/TP heads and 4C/TP hidden
//! units, between the f and g operators of `ops.rs`.
//!
//! ```text
//!   x_in ─┬─> ln_1 ─> f ─> c_attn_r ─> attention (my heads) ─> attn.c_proj_r ─> g ─(+)─> x_mid
//!         └───────────────────────────────────────────────────────────────────────┘
//!   x_mid ┬─> ln_2 ─> f ─> c_fc_r ─> gelu ─> mlp.c_proj_r ─> g ─(+)─> x_out
//!         └──────────────────────────────────────────────────┘
//!   (N,C) or, with --sp, my N/TP rows       (N, C/TP or 4C/TP)         (N,C) partial sums
//! ```
//!
//! The kernels are the single model's (`model/`), called on the local shapes: attention
//! on an [`AttnShape`] of H/TP heads of the same head size, the products on (3C/TP, C),
//! (C, C/TP), (4C/TP, C) and (C, 4C/TP) matrices. Each worker runs them on one thread.

use crate::collective::CommError;
use crate::model::attention::{
    attention_backward, attention_forward, proj_backward_heads, qkv_forward, AttnShape,
};
use crate::model::gelu::{gelu_backward, gelu_forward};
use crate::model::layernorm::{layernorm_backward, layernorm_forward};
use crate::model::linear::{linear_backward, linear_forward, linear_weight_grad};
use crate::model::matmul::Out;

use super::ops::{f_backward, f_forward, g_backward, g_forward, Ops};

/// The sizes of one worker's share of a forward.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dims {
    /// B sequences of T tokens: N = B*T rows inside the regions.
    pub b: usize,
    pub t: usize,
    /// Rows this worker keeps outside the regions: N, or N/TP with `--sp`.
    pub m: usize,
    /// C, and this worker's C/TP attention channels (H/TP heads) and 4C/TP hidden units.
    pub c: usize,
    pub cl: usize,
    pub fl: usize,
    /// H/TP heads.
    pub hl: usize,
    /// Whether the regions gather their input from the workers (`--sp` with TP > 1).
    pub gathers: bool,
}

impl Dims {
    /// The sizes on worker `rank` of a `tp`-way group, for `b` sequences of `t` tokens.
    pub fn new(cfg: &crate::config::ModelConfig, b: usize, t: usize, tp: usize, sp: bool) -> Dims {
        let (n, c) = (b * t, cfg.n_embd);
        Dims {
            b,
            t,
            m: if sp { n / tp } else { n },
            c,
            cl: c / tp,
            fl: 4 * c / tp,
            hl: cfg.n_head / tp,
            gathers: sp && tp > 1,
        }
    }

    pub fn n(&self) -> usize {
        self.b * self.t
    }

    pub fn attn(&self) -> AttnShape {
        AttnShape {
            b: self.b,
            t: self.t,
            c: self.cl,
            n_head: self.hl,
        }
    }

    /// Floats of one block's local parameters.
    pub fn block_len(&self) -> usize {
        2 * self.c + 4 * self.c * self.cl + 2 * self.c * self.fl
    }
}

/// The six tensors of one local block, in layout order.
pub(super) struct Tensors<S> {
    pub ln_1: S,
    pub c_attn: S,
    pub attn_proj: S,
    pub ln_2: S,
    pub c_fc: S,
    pub mlp_proj: S,
}

/// Named views of one local block's weights.
pub(super) fn weights(s: &[f32], d: Dims) -> Tensors<&[f32]> {
    assert_eq!(s.len(), d.block_len());
    let (ln_1, s) = s.split_at(d.c);
    let (c_attn, s) = s.split_at(3 * d.cl * d.c);
    let (attn_proj, s) = s.split_at(d.c * d.cl);
    let (ln_2, s) = s.split_at(d.c);
    let (c_fc, mlp_proj) = s.split_at(d.fl * d.c);
    Tensors {
        ln_1,
        c_attn,
        attn_proj,
        ln_2,
        c_fc,
        mlp_proj,
    }
}

/// Named views of one local block's gradients.
pub(super) fn grads(s: &mut [f32], d: Dims) -> Tensors<&mut [f32]> {
    assert_eq!(s.len(), d.block_len());
    let (ln_1, s) = s.split_at_mut(d.c);
    let (c_attn, s) = s.split_at_mut(3 * d.cl * d.c);
    let (attn_proj, s) = s.split_at_mut(d.c * d.cl);
    let (ln_2, s) = s.split_at_mut(d.c);
    let (c_fc, mlp_proj) = s.split_at_mut(d.fl * d.c);
    Tensors {
        ln_1,
        c_attn,
        attn_proj,
        ln_2,
        c_fc,
        mlp_proj,
    }
}

/// Activations of one local block. `m` rows outside the regions, N inside.
#[derive(Clone, Debug)]
pub(super) struct Acts {
    /// (m,C) ln_1(x_in), its per-row mean and 1/std (m)
    pub ln1: Vec<f32>,
    pub ln1_mean: Vec<f32>,
    pub ln1_rstd: Vec<f32>,
    /// (N,C) ln1 of every worker's rows (`--sp` only; else empty)
    pub ln1_all: Vec<f32>,
    /// (3,H/TP,N,hs) my heads' q, k, v, head-major
    pub qkv: Vec<f32>,
    /// (B,H/TP,T,T) my heads' attention probabilities
    pub att: Vec<f32>,
    /// (N,C/TP) my heads' outputs side by side
    pub atty: Vec<f32>,
    /// (m,C) x_in + g(atty @ attn.c_proj_r^T)
    pub x_mid: Vec<f32>,
    /// (m,C) ln_2(x_mid), mean, 1/std; (N,C) gathered (`--sp`)
    pub ln2: Vec<f32>,
    pub ln2_mean: Vec<f32>,
    pub ln2_rstd: Vec<f32>,
    pub ln2_all: Vec<f32>,
    /// (N,4C/TP) my hidden units before and after the GELU
    pub fch: Vec<f32>,
    pub fcg: Vec<f32>,
    /// (m,C) x_mid + g(fcg @ mlp.c_proj_r^T)
    pub x_out: Vec<f32>,
}

/// Gradients of activations, reused by every block during backward.
#[derive(Clone, Debug)]
pub(super) struct Scratch {
    /// (m,C) d loss / d (the residual stream at the current point of backward)
    pub dres: Vec<f32>,
    /// (N,C) dres of every worker's rows (`--sp` only)
    pub dres_all: Vec<f32>,
    /// (N,C) a partial sum on its way through g (forward) or f (backward)
    pub part: Vec<f32>,
    /// (H/TP,N,hs) d atty, head-major
    pub datty: Vec<f32>,
    /// (N,3C/TP) d qkv
    pub dqkv: Vec<f32>,
    /// (B,H/TP,T,T) d attention scores
    pub datt: Vec<f32>,
    /// (N,4C/TP) d fcg, then d fch (in place)
    pub dfc: Vec<f32>,
}

impl Acts {
    pub fn new(d: Dims) -> Acts {
        let (n, m, c) = (d.n(), d.m, d.c);
        let z = |len: usize| vec![0.0f32; len];
        let all = if d.gathers { n * c } else { 0 };
        Acts {
            ln1: z(m * c),
            ln1_mean: z(m),
            ln1_rstd: z(m),
            ln1_all: z(all),
            qkv: z(n * 3 * d.cl),
            att: z(d.b * d.hl * d.t * d.t),
            atty: z(n * d.cl),
            x_mid: z(m * c),
            ln2: z(m * c),
            ln2_mean: z(m),
            ln2_rstd: z(m),
            ln2_all: z(all),
            fch: z(n * d.fl),
            fcg: z(n * d.fl),
            x_out: z(m * c),
        }
    }

    /// Floats held.
    pub fn len(&self) -> usize {
        [
            &self.ln1,
            &self.ln1_mean,
            &self.ln1_rstd,
            &self.ln1_all,
            &self.qkv,
            &self.att,
            &self.atty,
            &self.x_mid,
            &self.ln2,
            &self.ln2_mean,
            &self.ln2_rstd,
            &self.ln2_all,
            &self.fch,
            &self.fcg,
            &self.x_out,
        ]
        .iter()
        .map(|v| v.len())
        .sum()
    }
}

impl Scratch {
    pub fn new(d: Dims) -> Scratch {
        let (n, m, c) = (d.n(), d.m, d.c);
        let z = |len: usize| vec![0.0f32; len];
        Scratch {
            dres: z(m * c),
            dres_all: z(if d.gathers { n * c } else { 0 }),
            part: z(n * c),
            datty: z(n * d.cl),
            dqkv: z(n * 3 * d.cl),
            datt: z(d.b * d.hl * d.t * d.t),
            dfc: z(n * d.fl),
        }
    }
}

/// `out = x + y` row by row: the residual add after g.
fn residual(out: &mut [f32], x: &[f32], y: &[f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
        *o = a + b;
    }
}

/// Fills `a` from `x_in (m,C)`; `part` is (N,C) scratch. Block `l`'s two collectives go
/// through `ops`.
pub(super) fn block_forward(
    a: &mut Acts,
    part: &mut [f32],
    x_in: &[f32],
    w: &Tensors<&[f32]>,
    d: Dims,
    ops: &mut Ops,
    l: usize,
) -> Result<(), CommError> {
    let n = d.n();
    layernorm_forward(
        &mut a.ln1,
        &mut a.ln1_mean,
        &mut a.ln1_rstd,
        x_in,
        w.ln_1,
        1,
    );
    // f: every worker's heads read every row of ln1
    let ln1 = if f_forward(ops, &mut a.ln1_all, &a.ln1, l)? {
        &a.ln1_all
    } else {
        &a.ln1
    };
    // column-parallel: my heads' q, k, v, then attention on my heads alone
    qkv_forward(&mut a.qkv, ln1, w.c_attn, d.attn(), 1);
    attention_forward(&mut a.atty, &mut a.att, &a.qkv, d.attn(), 1);
    // row-parallel: my heads' share of the projection, (N,C), summed by g
    linear_forward(part, &a.atty, w.attn_proj, n, Out::Set, 1);
    let mine = g_forward(ops, part, l)?;
    residual(&mut a.x_mid, x_in, &part[mine]);

    layernorm_forward(
        &mut a.ln2,
        &mut a.ln2_mean,
        &mut a.ln2_rstd,
        &a.x_mid,
        w.ln_2,
        1,
    );
    let ln2 = if f_forward(ops, &mut a.ln2_all, &a.ln2, l)? {
        &a.ln2_all
    } else {
        &a.ln2
    };
    // column-parallel: my 4C/TP hidden units; the GELU is elementwise, so it stays local
    linear_forward(&mut a.fch, ln2, w.c_fc, n, Out::Set, 1);
    gelu_forward(&mut a.fcg, &a.fch, 1);
    // row-parallel: my hidden units' share of the output, summed by g
    linear_forward(part, &a.fcg, w.mlp_proj, n, Out::Set, 1);
    let mine = g_forward(ops, part, l)?;
    residual(&mut a.x_out, &a.x_mid, &part[mine]);
    Ok(())
}

/// Backward through block `l`: on entry `s.dres` holds d loss / d x_out (my rows), on exit
/// d loss / d x_in. Accumulates the local parameter gradients into `g`.
#[allow(clippy::too_many_arguments)]
pub(super) fn block_backward(
    g: Tensors<&mut [f32]>,
    s: &mut Scratch,
    a: &Acts,
    x_in: &[f32],
    w: &Tensors<&[f32]>,
    d: Dims,
    ops: &mut Ops,
    l: usize,
) -> Result<(), CommError> {
    let n = d.n();
    let (ln1, ln2) = if d.gathers {
        (&a.ln1_all, &a.ln2_all)
    } else {
        (&a.ln1, &a.ln2)
    };
    // g backward: every worker needs d x_out of every row for its own hidden units
    let dy = if g_backward(ops, &mut s.dres_all, &s.dres, l)? {
        &s.dres_all
    } else {
        &s.dres
    };
    // x_out = x_mid + fcg @ mlp.c_proj_r^T (summed over workers by g)
    linear_backward(
        &mut s.dfc,
        g.mlp_proj,
        dy,
        &a.fcg,
        w.mlp_proj,
        n,
        Out::Set,
        1,
    );
    gelu_backward(&mut s.dfc, &a.fch, 1);
    // fch = ln2 @ c_fc_r^T: my hidden units' part of d ln2; f backward sums the parts
    linear_backward(&mut s.part, g.c_fc, &s.dfc, ln2, w.c_fc, n, Out::Set, 1);
    let mine = f_backward(ops, &mut s.part, l)?;
    let (mean, rstd) = (&a.ln2_mean, &a.ln2_rstd);
    let dln = &s.part[mine];
    layernorm_backward(&mut s.dres, g.ln_2, dln, &a.x_mid, w.ln_2, mean, rstd, 1);

    let dy = if g_backward(ops, &mut s.dres_all, &s.dres, l)? {
        &s.dres_all
    } else {
        &s.dres
    };
    // x_mid = x_in + atty @ attn.c_proj_r^T; datty head-major, as attention's backward reads
    proj_backward_heads(&mut s.datty, dy, w.attn_proj, d.attn(), 1);
    linear_weight_grad(g.attn_proj, dy, &a.atty, n, 1);
    attention_backward(
        &mut s.dqkv,
        &mut s.datt,
        &s.datty,
        &a.qkv,
        &a.att,
        d.attn(),
        1,
    );
    // qkv = ln1 @ c_attn_r^T: my heads' part of d ln1, summed by f backward
    linear_backward(
        &mut s.part,
        g.c_attn,
        &s.dqkv,
        ln1,
        w.c_attn,
        n,
        Out::Set,
        1,
    );
    let mine = f_backward(ops, &mut s.part, l)?;
    let (mean, rstd) = (&a.ln1_mean, &a.ln1_rstd);
    let dln = &s.part[mine];
    layernorm_backward(&mut s.dres, g.ln_1, dln, x_in, w.ln_1, mean, rstd, 1);
    Ok(())
}
