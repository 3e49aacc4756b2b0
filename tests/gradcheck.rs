//! Gradient checks: every layer, and the whole model, against central finite differences of
//! an independent f64 reference written plainly below (no code shared with `src/`).
//!
//! How to read a failure: `check` prints the first entries that differ and the largest
//! difference, relative to the largest reference gradient of that tensor.
//!
//! Tolerance. The reference is f64 and its finite differences use h = 1e-5, so their own
//! error is ~h^2 * f''' + 1e-16 / h ≈ 1e-10: the reference gradient is exact for our purpose.
//! The analytic gradient is f32: each product or sum rounds with relative error 6e-8, and a
//! gradient entry is a sum of at most a few hundred terms (the longest reductions here are
//! B*T = 10 rows for weight gradients and the C or 4C channels of the matmuls), so its error
//! is below ~1e-7 * 100 = 1e-5 of the magnitude of the terms (the vectorised `exp` adds 2e-7).
//! We allow 1e-4 of the largest |gradient| in the tensor: ten times that bound, yet a wrong
//! derivative (a missing term, a wrong index, a wrong sign) is off by the gradient itself.

use nanodist::config::ModelConfig;
use nanodist::model::attention::{attention_backward, attention_forward, AttnShape};
use nanodist::model::embedding::{encoder_backward, encoder_forward};
use nanodist::model::gelu::{gelu_backward, gelu_forward};
use nanodist::model::layernorm::{layernorm_backward, layernorm_forward};
use nanodist::model::linear::{linear_backward, linear_forward};
use nanodist::model::loss::{crossentropy_backward, crossentropy_forward};
use nanodist::model::matmul::Out;
use nanodist::model::{Gpt, GradSink, ParamLayout, Workspace};
use nanodist::rng::Rng;

const TOL: f64 = 1e-4;
const H: f64 = 1e-5;

// ---------------------------------------------------------------- helpers

fn randn(rng: &mut Rng, n: usize, std: f64, mean: f64) -> Vec<f32> {
    (0..n).map(|_| (mean + std * rng.normal()) as f32).collect()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Central differences of `f` at `x`, one coordinate at a time.
fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = x[i];
            x[i] = orig + H;
            let up = f(&x);
            x[i] = orig - H;
            let down = f(&x);
            x[i] = orig;
            (up - down) / (2.0 * H)
        })
        .collect()
}

/// Fails with the first differing values and the largest difference.
fn check(name: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-12);
    let (mut bad, mut n_bad) = (Vec::new(), 0);
    let (mut worst, mut worst_i) = (0.0f64, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w).abs() / scale;
        if d > worst {
            (worst, worst_i) = (d, i);
        }
        if d > TOL {
            n_bad += 1;
            if bad.len() < 5 {
                bad.push(format!("[{i}] got {g:.6e} want {w:.6e}"));
            }
        }
    }
    assert!(
        n_bad == 0,
        "{name}: {n_bad} differ by more than {TOL} of max |grad| {scale:.3e}; first: {}; largest: [{worst_i}] {:.2e} (got {} want {})",
        bad.join(", "),
        worst,
        got[worst_i],
        want[worst_i]
    );
}

/// sum(out * r): a scalar whose gradient with respect to `out` is `r`.
fn weigh(out: &[f64], r: &[f32]) -> f64 {
    out.iter().zip(r).map(|(o, &r)| o * r as f64).sum()
}

// ---------------------------------------------------------------- f64 reference layers

fn ref_layernorm(x: &[f64], w: &[f64]) -> Vec<f64> {
    let c = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(c) {
        let mean = row.iter().sum::<f64>() / c as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + 1e-5).sqrt();
        out.extend(row.iter().zip(w).map(|(v, w)| (v - mean) * rstd * w));
    }
    out
}

/// out (n, fan_out) = x (n, fan_in) @ w (fan_out, fan_in)^T
fn ref_linear(x: &[f64], w: &[f64], fan_in: usize) -> Vec<f64> {
    let fan_out = w.len() / fan_in;
    let mut out = Vec::new();
    for row in x.chunks(fan_in) {
        for o in 0..fan_out {
            out.push((0..fan_in).map(|i| row[i] * w[o * fan_in + i]).sum());
        }
    }
    out
}

fn ref_gelu(x: &[f64]) -> Vec<f64> {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    x.iter()
        .map(|&v| 0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh()))
        .collect()
}

/// Causal attention: qkv (b*t, 3c) -> (b*t, c).
fn ref_attention(qkv: &[f64], b: usize, t: usize, c: usize, nh: usize) -> Vec<f64> {
    let hs = c / nh;
    let mut out = vec![0.0; b * t * c];
    let at = |s: usize, pos: usize, part: usize, h: usize, d: usize| {
        qkv[(s * t + pos) * 3 * c + part * c + h * hs + d]
    };
    for s in 0..b {
        for h in 0..nh {
            for i in 0..t {
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        (0..hs)
                            .map(|d| at(s, i, 0, h, d) * at(s, j, 1, h, d))
                            .sum::<f64>()
                            / (hs as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hs {
                    out[(s * t + i) * c + h * hs + d] =
                        (0..=i).map(|j| e[j] / z * at(s, j, 2, h, d)).sum();
                }
            }
        }
    }
    out
}

/// Sum over rows of -log softmax(logits)[target].
fn ref_crossentropy(logits: &[f64], targets: &[u32]) -> f64 {
    let v = logits.len() / targets.len();
    logits
        .chunks(v)
        .zip(targets)
        .map(|(row, &t)| {
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            lse - row[t as usize]
        })
        .sum()
}

/// The whole model's summed cross-entropy, offsets written out from the documented order.
fn ref_model(cfg: &ModelConfig, p: &[f64], inputs: &[u32], targets: &[u32], t: usize) -> f64 {
    let (v, c, nh) = (cfg.vocab_size, cfg.n_embd, cfg.n_head);
    let b = inputs.len() / t;
    let wte = &p[..v * c];
    let wpe = &p[v * c..(v + cfg.block_size) * c];
    let mut x: Vec<f64> = Vec::new();
    for (i, &tok) in inputs.iter().enumerate() {
        let pos = i % t;
        x.extend((0..c).map(|k| wte[tok as usize * c + k] + wpe[pos * c + k]));
    }
    let mut at = (v + cfg.block_size) * c;
    let mut take = |len: usize| {
        at += len;
        &p[at - len..at]
    };
    for _ in 0..cfg.n_layer {
        let (ln1, attn, proj) = (take(c), take(3 * c * c), take(c * c));
        let (ln2, fc, mproj) = (take(c), take(4 * c * c), take(4 * c * c));
        let y = ref_attention(&ref_linear(&ref_layernorm(&x, ln1), attn, c), b, t, c, nh);
        let a = ref_linear(&y, proj, c);
        x.iter_mut().zip(&a).for_each(|(x, a)| *x += a);
        let f = ref_gelu(&ref_linear(&ref_layernorm(&x, ln2), fc, c));
        let m = ref_linear(&f, mproj, 4 * c);
        x.iter_mut().zip(&m).for_each(|(x, m)| *x += m);
    }
    let lnf = take(c);
    ref_crossentropy(&ref_linear(&ref_layernorm(&x, lnf), wte, c), targets)
}

// ---------------------------------------------------------------- per-layer checks

#[test]
fn layernorm_matches_reference() {
    // C = 300 also runs the kernel's piecewise (256-channel) path
    for (n, c) in [(6, 8), (3, 300)] {
        let mut rng = Rng::new(1);
        let x = randn(&mut rng, n * c, 1.5, 0.7);
        let w = randn(&mut rng, c, 0.5, 1.0);
        let r = randn(&mut rng, n * c, 1.0, 0.0);
        for threads in [1, 2] {
            let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, threads);
            check("layernorm out", &out, &ref_layernorm(&f64s(&x), &f64s(&w)));
            let (mut dx, mut dw) = (vec![0.0; n * c], vec![0.0; c]);
            layernorm_backward(&mut dx, &mut dw, &r, &x, &w, &mean, &rstd, threads);
            let wf = f64s(&w);
            check(
                "layernorm dx",
                &dx,
                &numeric_grad(&f64s(&x), |x| weigh(&ref_layernorm(x, &wf), &r)),
            );
            let xf = f64s(&x);
            check(
                "layernorm dw",
                &dw,
                &numeric_grad(&wf, |w| weigh(&ref_layernorm(&xf, w), &r)),
            );
        }
    }
}

#[test]
fn linear_matches_reference() {
    let (n, fan_in, fan_out) = (5, 7, 3);
    let mut rng = Rng::new(2);
    let x = randn(&mut rng, n * fan_in, 1.0, 0.0);
    let w = randn(&mut rng, fan_out * fan_in, 1.0, 0.0);
    let r = randn(&mut rng, n * fan_out, 1.0, 0.0);
    let mut out = vec![0.0; n * fan_out];
    linear_forward(&mut out, &x, &w, n, Out::Set, 1);
    check(
        "linear out",
        &out,
        &ref_linear(&f64s(&x), &f64s(&w), fan_in),
    );
    let (mut dx, mut dw) = (vec![0.0; n * fan_in], vec![0.0; fan_out * fan_in]);
    linear_backward(&mut dx, &mut dw, &r, &x, &w, n, Out::Add, 1);
    let (xf, wf) = (f64s(&x), f64s(&w));
    check(
        "linear dx",
        &dx,
        &numeric_grad(&xf, |x| weigh(&ref_linear(x, &wf, fan_in), &r)),
    );
    check(
        "linear dw",
        &dw,
        &numeric_grad(&wf, |w| weigh(&ref_linear(&xf, w, fan_in), &r)),
    );
}

#[test]
fn gelu_matches_reference() {
    let x: Vec<f32> = (0..81).map(|i| (i as f32 - 40.0) / 8.0).collect();
    let mut rng = Rng::new(3);
    let r = randn(&mut rng, x.len(), 1.0, 0.0);
    let mut out = vec![0.0; x.len()];
    gelu_forward(&mut out, &x, 1);
    check("gelu out", &out, &ref_gelu(&f64s(&x)));
    let mut dx = r.clone(); // in place: dout in, dinp out
    gelu_backward(&mut dx, &x, 1);
    check(
        "gelu dx",
        &dx,
        &numeric_grad(&f64s(&x), |x| weigh(&ref_gelu(x), &r)),
    );
}

#[test]
fn attention_matches_reference() {
    // T = 21: the softmax takes rows in blocks of 16, so rows 0..15 end inside the first
    // block and rows 16..20 cross into a second, shorter one
    for (b, t, c, nh) in [(2, 5, 8, 2), (1, 21, 4, 2)] {
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
    let mut rng = Rng::new(4);
    let qkv = randn(&mut rng, b * t * 3 * c, 1.0, 0.0);
    let r = randn(&mut rng, b * t * c, 1.0, 0.0);
    for threads in [1, 2] {
        // NaN-filled: every entry the kernel should write but does not shows up
        let (mut out, mut att) = (vec![f32::NAN; b * t * c], vec![f32::NAN; b * nh * t * t]);
        attention_forward(&mut out, &mut att, &qkv, s, threads);
        check(
            "attention out",
            &out,
            &ref_attention(&f64s(&qkv), b, t, c, nh),
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
        let (mut dqkv, mut datt) = (vec![0.0; qkv.len()], vec![0.0; att.len()]);
        attention_backward(&mut dqkv, &mut datt, &r, &qkv, &att, s, threads);
        let want = numeric_grad(&f64s(&qkv), |q| weigh(&ref_attention(q, b, t, c, nh), &r));
        check("attention dqkv", &dqkv, &want);
    }
}

#[test]
fn crossentropy_matches_reference() {
    let (n, v) = (6, 7);
    let mut rng = Rng::new(5);
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
    check("crossentropy dlogits", &dl, &fd);
}

#[test]
fn embedding_matches_reference() {
    let (v, t, c) = (4, 3, 5);
    let inputs = [3u32, 0, 3, 1, 1, 2];
    let mut rng = Rng::new(6);
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
    check("embedding out", &out, &embed(&te, &pe));
    let (mut dte, mut dpe) = (vec![0.0; v * c], vec![0.0; t * c]);
    encoder_backward(&mut dte, &mut dpe, &r, &inputs, t, c);
    check(
        "embedding dwte",
        &dte,
        &numeric_grad(&te, |w| weigh(&embed(w, &pe), &r)),
    );
    check(
        "embedding dwpe",
        &dpe,
        &numeric_grad(&pe, |w| weigh(&embed(&te, w), &r)),
    );
}

// ---------------------------------------------------------------- the whole model

fn tiny() -> ModelConfig {
    ModelConfig {
        vocab_size: 7,
        block_size: 5,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
    }
}

/// A tiny model with weights large enough that every path carries real gradient
/// (nanoGPT's N(0, 0.02) init would leave the attention almost uniform).
fn tiny_model(seed: u64) -> Gpt {
    let cfg = tiny();
    let layout = ParamLayout::new(&cfg);
    let mut rng = Rng::new(seed);
    let mut p = vec![0.0f32; layout.len];
    for t in &layout.tensors {
        let (std, mean) = if t.decay { (0.4, 0.0) } else { (0.2, 1.0) };
        p[t.offset..t.offset + t.len].copy_from_slice(&randn(&mut rng, t.len, std, mean));
    }
    Gpt::from_params(cfg, p)
}

fn tokens(seed: u64, n: usize, v: usize) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(v) as u32).collect()
}

#[test]
fn layout_matches_documented_order() {
    let cfg = tiny();
    let (v, t, c) = (7, 5, 8);
    let mut want = vec![
        ("transformer.wte.weight".to_string(), v * c),
        ("transformer.wpe.weight".to_string(), t * c),
    ];
    for i in 0..2 {
        for (name, len) in [
            ("ln_1", c),
            ("attn.c_attn", 3 * c * c),
            ("attn.c_proj", c * c),
            ("ln_2", c),
            ("mlp.c_fc", 4 * c * c),
            ("mlp.c_proj", 4 * c * c),
        ] {
            want.push((format!("transformer.h.{i}.{name}.weight"), len));
        }
    }
    want.push(("transformer.ln_f.weight".to_string(), c));
    let layout = ParamLayout::new(&cfg);
    let got: Vec<(String, usize)> = layout
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.len))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        layout.block_range(1),
        (v + t) * c + 2 * c + 12 * c * c..(v + t) * c + 2 * (2 * c + 12 * c * c)
    );
}

#[test]
fn model_gradient_matches_reference() {
    let model = tiny_model(10);
    let cfg = model.cfg.clone();
    // full context, and a shorter one (positions 0..4 of a block of 5)
    for (b, t, threads) in [(2, 5, 1), (2, 5, 2), (3, 4, 1)] {
        let inputs = tokens(11, b * t, cfg.vocab_size);
        let targets = tokens(12, b * t, cfg.vocab_size);
        let mut ws = Workspace::new(&cfg, b, t);
        ws.set_threads(threads);
        let loss = model.forward(&mut ws, &inputs, Some(&targets)).unwrap() as f64;
        let p64 = f64s(&model.params);
        let want = ref_model(&cfg, &p64, &inputs, &targets, t) / (b * t) as f64;
        assert!(
            (loss - want).abs() < 1e-5 * want,
            "loss {loss} vs reference {want}"
        );
        let scale = 1.0 / (b * t) as f32;
        let mut grads = vec![0.0f32; model.layout.len];
        model.backward(&mut ws, scale, &mut grads[..]);
        let fd = numeric_grad(&p64, |p| {
            scale as f64 * ref_model(&cfg, p, &inputs, &targets, t)
        });
        for tensor in &model.layout.tensors {
            let r = tensor.offset..tensor.offset + tensor.len;
            let name = format!("{} (b={b}, t={t}, threads={threads})", tensor.name);
            if t < cfg.block_size && tensor.name == "transformer.wpe.weight" {
                assert!(grads[r.clone()][t * cfg.n_embd..].iter().all(|&g| g == 0.0));
            }
            check(&name, &grads[r.clone()], &fd[r]);
        }
    }
}

#[test]
fn backward_accumulates() {
    let model = tiny_model(20);
    let mut ws = Workspace::new(&model.cfg, 2, 5);
    let (x, y) = (tokens(21, 10, 7), tokens(22, 10, 7));
    model.forward(&mut ws, &x, Some(&y));
    let mut once = vec![0.0f32; model.layout.len];
    model.backward(&mut ws, 0.1, &mut once[..]);
    let mut twice = vec![0.0f32; model.layout.len];
    model.backward(&mut ws, 0.1, &mut twice[..]);
    model.backward(&mut ws, 0.1, &mut twice[..]);
    let doubled: Vec<f64> = once.iter().map(|&g| 2.0 * g as f64).collect();
    check("two backward calls", &twice, &doubled);
}

/// A sink that records `finished` calls and checks that nothing past them changes.
struct Recorder {
    buf: Vec<f32>,
    open_len: usize,
    calls: Vec<usize>,
    frozen: Vec<f32>,
}

impl GradSink for Recorder {
    fn open(&mut self) -> &mut [f32] {
        &mut self.buf[..self.open_len]
    }
    fn finished(&mut self, from: usize) {
        assert!(
            from <= self.open_len,
            "finished({from}) after finished({})",
            self.open_len
        );
        assert_eq!(
            self.buf[self.open_len..],
            self.frozen[self.open_len..],
            "a finished part changed"
        );
        self.calls.push(from);
        self.open_len = from;
        self.frozen = self.buf.clone();
    }
}

#[test]
fn grad_sink_sees_a_shrinking_open_prefix_and_final_suffixes() {
    let model = tiny_model(30);
    let layout = &model.layout;
    let mut ws = Workspace::new(&model.cfg, 2, 5);
    let (x, y) = (tokens(31, 10, 7), tokens(32, 10, 7));
    model.forward(&mut ws, &x, Some(&y));
    let mut plain = vec![0.0f32; layout.len];
    model.backward(&mut ws, 0.1, &mut plain[..]);

    let mut rec = Recorder {
        buf: vec![0.0; layout.len],
        open_len: layout.len,
        calls: vec![],
        frozen: vec![0.0; layout.len],
    };
    model.backward(&mut ws, 0.1, &mut rec);
    let want = vec![
        layout.get("transformer.ln_f.weight").unwrap().offset,
        layout.block_range(1).start,
        layout.block_range(0).start,
        0,
    ];
    assert_eq!(rec.calls, want);
    // what was handed over is exactly the full gradient
    assert_eq!(rec.buf, plain);
}

#[test]
fn sequences_in_a_batch_do_not_interact() {
    let model = tiny_model(40);
    let mut ws = Workspace::new(&model.cfg, 2, 5);
    let mut x = tokens(41, 10, 7);
    model.forward(&mut ws, &x, None);
    let before = ws.logits()[..5 * 7].to_vec();
    for tok in &mut x[5..] {
        *tok = (*tok + 3) % 7;
    }
    model.forward(&mut ws, &x, None);
    assert_eq!(
        ws.logits()[..5 * 7],
        before[..],
        "sequence 0 changed when sequence 1 did"
    );
}

#[test]
fn attention_is_causal() {
    let model = tiny_model(50);
    let mut ws = Workspace::new(&model.cfg, 1, 5);
    let mut x = tokens(51, 5, 7);
    model.forward(&mut ws, &x, None);
    let before = ws.logits().to_vec();
    for j in (1..5).rev() {
        x[j] = (x[j] + 1) % 7;
        model.forward(&mut ws, &x, None);
        let after = ws.logits();
        let v = 7;
        assert_eq!(
            after[..j * v],
            before[..j * v],
            "changing position {j} changed an earlier position"
        );
        assert_ne!(
            after[j * v..(j + 1) * v],
            before[j * v..(j + 1) * v],
            "position {j} ignores its own input"
        );
    }
}

#[test]
fn init_is_deterministic_and_nanogpt_shaped() {
    let cfg = ModelConfig::default();
    let (a, b) = (Gpt::new(cfg.clone(), 1), Gpt::new(cfg.clone(), 1));
    assert_eq!(a.params, b.params);
    assert_ne!(a.params, Gpt::new(cfg.clone(), 2).params);
    let std_of = |name: &str| {
        let t = a.layout.get(name).unwrap();
        let p = &a.params[t.offset..t.offset + t.len];
        (p.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / p.len() as f64).sqrt()
    };
    assert!((std_of("transformer.h.0.mlp.c_fc.weight") - 0.02).abs() < 0.001);
    assert!((std_of("transformer.h.3.attn.c_proj.weight") - 0.02 / 8f64.sqrt()).abs() < 0.0005);
    assert!((std_of("transformer.wte.weight") - 0.02).abs() < 0.002);
    assert_eq!(std_of("transformer.h.1.ln_2.weight"), 1.0);
}
