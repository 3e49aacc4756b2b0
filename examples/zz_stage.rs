use nanodist::config::TrainConfig;
use nanodist::model::{split, Gpt, Workspace};
use std::time::Instant;
fn main() {
    let mut cfg = TrainConfig::default();
    cfg.model.vocab_size = 65;
    let model = Gpt::new(cfg.model.clone(), 1);
    let parts = split(4, 2);
    let (rows, t) = (2, 64);
    let tokens: Vec<u32> = (0..rows * t).map(|k| (k * 7 % 65) as u32).collect();
    let mut grads = vec![0.0f32; model.layout.len];
    for round in 0..6 {
        for (s, part) in parts.iter().enumerate() {
            let mut ws = Workspace::for_stage(&cfg.model, part, rows, t);
            let recv: Vec<f32> = (0..rows * t * 128)
                .map(|k| 0.01 * ((k % 13) as f32 - 6.0))
                .collect();
            let (mut f, mut b) = (0.0, 0.0);
            for _ in 0..50 {
                if !part.first {
                    ws.stage_input_mut().copy_from_slice(&recv);
                }
                let t0 = Instant::now();
                model.stage_forward(
                    &mut ws,
                    part,
                    part.first.then_some(&tokens[..]),
                    part.last.then_some(&tokens[..]),
                );
                f += t0.elapsed().as_secs_f64();
                if !part.last {
                    ws.stage_grad_mut().copy_from_slice(&recv);
                }
                let t0 = Instant::now();
                model.stage_backward(&mut ws, part, 1e-3, &mut grads);
                b += t0.elapsed().as_secs_f64();
            }
            println!(
                "round {round} stage {s}: F {:.2} ms B {:.2} ms",
                f * 20.0,
                b * 20.0
            );
        }
    }
}
