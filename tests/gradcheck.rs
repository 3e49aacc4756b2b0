//! Gradient checks of every layer against central finite differences of the independent f64
//! reference in `reference/mod.rs` (which also says how the tolerance, `LAYER_TOL`, was
//! measured), into gradient buffers that already hold values, as backward accumulates.
//!
//! How to read a failure: `check_within` prints the first entries that differ and the largest
//! difference, relative to the largest reference gradient of that tensor.

mod reference;

use nanodist::model::attention::{
    attention_backward, attention_forward, heads_from_rows, AttnShape,
};
use nanodist::model::embedding::{encoder_backward, encoder_forward};
use nanodist::model::gelu::{gelu_backward, gelu_forward};
use nanodist::model::layernorm::{layernorm_backward, layernorm_forward};
use nanodist::model::linear::{linear_backward, linear_forward};
use nanodist::model::loss::{crossentropy_backward, crossentropy_forward};
use nanodist::model::matmul::Out;
use nanodist::rng::{SeedableRng, Xoshiro256StarStar};
use reference::*;

// ---------------------------------------------------------------- per-layer checks

/// What a backward kernel added to a buffer that held `before` (backward accumulates, so
/// the checks start from buffers holding random values: a kernel that overwrites fails).
fn added(after: &[f32], before: &[f32]) -> Vec<f32> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[test]
fn layernorm_matches_reference() {
    // C = 300 also runs the kernel's piecewise (256-channel) path
    for (n, c) in [(6, 8), (3, 300)] {
        let mut rng = Xoshiro256StarStar::seed_from_u64(1);
        let x = randn(&mut rng, n * c, 1.5, 0.7);
        let w = randn(&mut rng, c, 0.5, 1.0);
        let r = randn(&mut rng, n * c, 1.0, 0.0);
        for threads in [1, 2] {
            let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, threads);
            check_within(
                "layernorm out",
                &out,
                &ref_layernorm(&f64s(&x), &f64s(&w)),
                LAYER_TOL,
            );
            // backward accumulates: into buffers already holding something
            let (dx0, dw0) = (
                randn(&mut rng, n * c, 1.0, 0.0),
                randn(&mut rng, c, 1.0, 0.0),
            );
            let (mut dx, mut dw) = (dx0.clone(), dw0.clone());
            layernorm_backward(&mut dx, &mut dw, &r, &x, &w, &mean, &rstd, threads);
            let (dx, dw) = (added(&dx, &dx0), added(&dw, &dw0));
            let wf = f64s(&w);
            check_within(
                "layernorm dx",
                &dx,
                &numeric_grad(&f64s(&x), |x| weigh(&ref_layernorm(x, &wf), &r)),
                LAYER_TOL,
            );
            let xf = f64s(&x);
            check_within(
                "layernorm dw",
                &dw,
                &numeric_grad(&wf, |w| weigh(&ref_layernorm(&xf, w), &r)),
                LAYER_TOL,
            );
        }
    }
}

#[test]
fn linear_matches_reference() {
    let (n, fan_in, fan_out) = (5, 7, 3);
    let mut rng = Xoshiro256StarStar::seed_from_u64(2);
    let x = randn(&mut rng, n * fan_in, 1.0, 0.0);
    let w = randn(&mut rng, fan_out * fan_in, 1.0, 0.0);
    let r = randn(&mut rng, n * fan_out, 1.0, 0.0);
    let mut out = vec![0.0; n * fan_out];
    linear_forward(&mut out, &x, &w, n, Out::Set, 1);
    check_within(
        "linear out",
        &out,
        &ref_linear(&f64s(&x), &f64s(&w), fan_in),
        LAYER_TOL,
    );
    let (xf, wf) = (f64s(&x), f64s(&w));
    let want_dx = numeric_grad(&xf, |x| weigh(&ref_linear(x, &wf, fan_in), &r));
    let want_dw = numeric_grad(&wf, |w| weigh(&ref_linear(&xf, w, fan_in), &r));
    // dw always accumulates; dx accumulates with Out::Add and is written with Out::Set
    // (NaN-filled: an entry left unwritten shows up)
    let dw0 = randn(&mut rng, fan_out * fan_in, 1.0, 0.0);
    for (mode, dx0) in [
        (Out::Add, randn(&mut rng, n * fan_in, 1.0, 0.0)),
        (Out::Set, vec![f32::NAN; n * fan_in]),
    ] {
        let (mut dx, mut dw) = (dx0.clone(), dw0.clone());
        linear_backward(&mut dx, &mut dw, &r, &x, &w, n, mode, 1);
        let dx = if mode == Out::Add {
            added(&dx, &dx0)
        } else {
            dx
        };
        check_within(&format!("linear dx ({mode:?})"), &dx, &want_dx, LAYER_TOL);
        check_within(
            &format!("linear dw ({mode:?})"),
            &added(&dw, &dw0),
            &want_dw,
            LAYER_TOL,
        );
    }
}

#[test]
fn gelu_matches_reference() {
    let x: Vec<f32> = (0..81).map(|i| (i as f32 - 40.0) / 8.0).collect();
    let mut rng = Xoshiro256StarStar::seed_from_u64(3);
    let r = randn(&mut rng, x.len(), 1.0, 0.0);
    let mut out = vec![0.0; x.len()];
    gelu_forward(&mut out, &x, 1);
    check_within("gelu out", &out, &ref_gelu(&f64s(&x)), LAYER_TOL);
    let mut dx = r.clone(); // in place: dout in, dinp out
    gelu_backward(&mut dx, &x, 1);
    check_within(
        "gelu dx",
        &dx,
        &numeric_grad(&f64s(&x), |x| weigh(&ref_gelu(x), &r)),
        LAYER_TOL,
    );
}

#[test]
fn attention_matches_reference() {
    // T = 21: the softmax takes rows in blocks of 16, so rows 0..15 end inside the first
    // block and rows 16..20 cross into a second, shorter one. Head widths 2 and 4 take the
    // kernels' generic path, 16 and 32 their unrolled one; T = 35 leaves a row over from the
    // kernels' groups of four and of two.
    for (b, t, c, nh) in [(2, 5, 8, 2), (1, 21, 4, 2), (2, 21, 32, 2), (1, 35, 32, 1)] {
        check_attention(b, t, c, nh);
    }
}

fn check_attention(b: usize, t: usize, c: usize, nh: usize) {
    let s = AttnShape {
        b,
        t,
        c,
        n_head: nh,
    };
    let mut rng = Xoshiro256StarStar::seed_from_u64(4);
    // (B*T,3C): the reference's layout, and the gradient's
    let qkv = randn(&mut rng, b * t * 3 * c, 1.0, 0.0);
    // head-major: the layout attention reads, as `qkv_forward` writes it
    let heads = heads_from_rows(&qkv, s);
    let r = randn(&mut rng, b * t * c, 1.0, 0.0);
    for threads in [1, 2] {
        // NaN-filled: every entry the kernel should write but does not shows up
        let (mut out, mut att) = (vec![f32::NAN; b * t * c], vec![f32::NAN; b * nh * t * t]);
        attention_forward(&mut out, &mut att, &heads, s, threads);
        check_within(
            "attention out",
            &out,
            &ref_attention(&f64s(&qkv), b, t, c, nh),
            LAYER_TOL,
        );
        // the causal mask: every row of P sums to 1 over the past and is exactly 0 after it
        for (row, p) in att.chunks_exact(t).enumerate() {
            let i = row % t;
            assert!(p[i + 1..].iter().all(|&x| x == 0.0), "row {i}: {p:?}");
            assert!(
                (p[..=i].iter().sum::<f32>() - 1.0).abs() < 1e-6,
                "row {i}: {p:?}"
            );
        }
        // NaN-filled too: every gradient must be written, and the scratch `datt` may hold
        // anything where the kernel does not compute
        let (mut dqkv, mut datt) = (vec![f32::NAN; qkv.len()], vec![f32::NAN; att.len()]);
        let dout = heads_from_rows(&r, s); // head-major, as attention's backward reads it
        attention_backward(&mut dqkv, &mut datt, &dout, &heads, &att, s, threads);
        let want = numeric_grad(&f64s(&qkv), |q| weigh(&ref_attention(q, b, t, c, nh), &r));
        check_within("attention dqkv", &dqkv, &want, LAYER_TOL);
    }
}

#[test]
fn crossentropy_matches_reference() {
    let (n, v) = (6, 7);
    let mut rng = Xoshiro256StarStar::seed_from_u64(5);
    let logits = randn(&mut rng, n * v, 2.0, 0.0);
    let targets: Vec<u32> = (0..n).map(|i| (i * 3 % v) as u32).collect();
    let (mut losses, mut lse) = (vec![0.0; n], vec![0.0; n]);
    crossentropy_forward(&mut losses, &mut lse, &logits, &targets);
    let total: f64 = losses.iter().map(|&l| l as f64).sum();
    let want = ref_crossentropy(&f64s(&logits), &targets);
    assert!((total - want).abs() < 1e-5 * want, "loss {total} vs {want}");
    let scale = 0.25;
    let mut dl = vec![0.0; n * v];
    crossentropy_backward(&mut dl, &logits, &targets, &lse, scale, 1);
    let fd = numeric_grad(&f64s(&logits), |l| {
        scale as f64 * ref_crossentropy(l, &targets)
    });
    check_within("crossentropy dlogits", &dl, &fd, LAYER_TOL);
}

#[test]
fn embedding_matches_reference() {
    let (v, t, c) = (4, 3, 5);
    let inputs = [3u32, 0, 3, 1, 1, 2];
    let mut rng = Xoshiro256StarStar::seed_from_u64(6);
    let wte = randn(&mut rng, v * c, 1.0, 0.0);
    let wpe = randn(&mut rng, t * c, 1.0, 0.0);
    let r = randn(&mut rng, inputs.len() * c, 1.0, 0.0);
    let mut out = vec![0.0; inputs.len() * c];
    encoder_forward(&mut out, &inputs, &wte, &wpe, t, c);
    let embed = |wte: &[f64], wpe: &[f64]| -> Vec<f64> {
        let mut o = Vec::new();
        for (i, &tok) in inputs.iter().enumerate() {
            o.extend((0..c).map(|k| wte[tok as usize * c + k] + wpe[(i % t) * c + k]));
        }
        o
    };
    let (te, pe) = (f64s(&wte), f64s(&wpe));
    check_within("embedding out", &out, &embed(&te, &pe), LAYER_TOL);
    let (dte0, dpe0) = (
        randn(&mut rng, v * c, 1.0, 0.0),
        randn(&mut rng, t * c, 1.0, 0.0),
    );
    let (mut dte, mut dpe) = (dte0.clone(), dpe0.clone());
    encoder_backward(&mut dte, &mut dpe, &r, &inputs, t, c);
    let (dte, dpe) = (added(&dte, &dte0), added(&dpe, &dpe0));
    check_within(
        "embedding dwte",
        &dte,
        &numeric_grad(&te, |w| weigh(&embed(w, &pe), &r)),
        LAYER_TOL,
    );
    check_within(
        "embedding dwpe",
        &dpe,
        &numeric_grad(&pe, |w| weigh(&embed(&te, w), &r)),
        LAYER_TOL,
    );
}
