//! The whole model: its gradient against finite differences of the f64 reference in
//! `reference/mod.rs`, the documented parameter layout, gradient accumulation, the order in
//! which backward hands finished gradients to a sink, causality, and nanoGPT's init.

mod reference;

use nanodist::config::ModelConfig;
use nanodist::model::{Gpt, GradSink, ParamLayout, Workspace};
use nanodist::rng::{Draw, SeedableRng, Xoshiro256StarStar};
use reference::*;

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
    let mut rng = Xoshiro256StarStar::seed_from_u64(seed);
    let mut p = vec![0.0f32; layout.len];
    for t in &layout.tensors {
        let (std, mean) = if t.decay { (0.4, 0.0) } else { (0.2, 1.0) };
        p[t.offset..t.offset + t.len].copy_from_slice(&randn(&mut rng, t.len, std, mean));
    }
    Gpt::from_params(cfg, p)
}

fn tokens(seed: u64, n: usize, v: usize) -> Vec<u32> {
    let mut rng = Xoshiro256StarStar::seed_from_u64(seed);
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
                // positions t.. of wpe were not in the input: exactly zero gradient
                let unused = &grads[r.clone()][t * cfg.n_embd..];
                if let Some(i) = unused.iter().position(|&g| g != 0.0) {
                    let pos = t + i / cfg.n_embd;
                    panic!("{name}: position {pos} got gradient {}", unused[i]);
                }
            }
            check(&name, &grads[r.clone()], &fd[r]);
        }
    }
}

/// The whole model at the default head size (C = 64 over 2 heads of 32: the attention
/// kernels' unrolled path, which the head-size-4 check above never takes), into a gradient
/// buffer that already holds values. Finite differences of every parameter would take
/// minutes in the f64 reference, so each tensor is checked on a sample of its entries
/// (`SAMPLE`, spread over it by a stride prime to its rows).
#[test]
fn default_head_size_gradient_matches_reference() {
    const SAMPLE: usize = 48;
    let cfg = ModelConfig {
        vocab_size: 7,
        block_size: 6,
        n_layer: 1,
        n_head: 2,
        n_embd: 64,
    };
    assert_eq!(
        cfg.n_embd / cfg.n_head,
        ModelConfig::default().n_embd / ModelConfig::default().n_head
    );
    let layout = ParamLayout::new(&cfg);
    let mut rng = Xoshiro256StarStar::seed_from_u64(60);
    let mut p = vec![0.0f32; layout.len];
    for t in &layout.tensors {
        // large enough weights that attention is far from uniform (see `tiny_model`)
        let (std, mean) = if t.decay { (0.25, 0.0) } else { (0.2, 1.0) };
        p[t.offset..t.offset + t.len].copy_from_slice(&randn(&mut rng, t.len, std, mean));
    }
    let model = Gpt::from_params(cfg.clone(), p);
    let (b, t) = (2, 6);
    let (inputs, targets) = (tokens(61, b * t, 7), tokens(62, b * t, 7));
    let mut ws = Workspace::new(&cfg, b, t);
    model.forward(&mut ws, &inputs, Some(&targets)).unwrap();
    let scale = 1.0 / (b * t) as f32;
    let before = randn(&mut rng, layout.len, 0.1, 0.0);
    let mut grads = before.clone();
    model.backward(&mut ws, scale, &mut grads[..]);
    let p64 = f64s(&model.params);
    for tensor in &layout.tensors {
        let stride = (tensor.len / SAMPLE).max(1) | 1;
        let at: Vec<usize> = (0..tensor.len.min(SAMPLE))
            .map(|i| tensor.offset + (i * stride + i / 7) % tensor.len)
            .collect();
        let fd = numeric_grad_at(&p64, &at, |p| {
            scale as f64 * ref_model(&cfg, p, &inputs, &targets, t)
        });
        let got: Vec<f32> = at.iter().map(|&i| grads[i] - before[i]).collect();
        check(&format!("{} (head size 32)", tensor.name), &got, &fd);
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
