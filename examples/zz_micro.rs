use nanodist::config::TrainConfig;
use nanodist::model::{split, Gpt, Workspace};
use std::time::Instant;
fn main() {
    let mut cfg = TrainConfig::default();
    cfg.model.vocab_size = 65;
    let model = Gpt::new(cfg.model.clone(), 1);
    let part = &split(4, 1)[0];
    let t = 64;
    let mut grads = vec![0.0f32; model.layout.len];
    let mut ws12 = Workspace::for_stage(&cfg.model, part, 12, t);
    let mut ws2 = Workspace::for_stage(&cfg.model, part, 2, t);
    let tok12: Vec<u32> = (0..12 * t).map(|k| (k * 7 % 65) as u32).collect();
    let mut ratios = vec![];
    for round in 0..15 {
        let t0 = Instant::now();
        for _ in 0..5 {
            model.stage_forward(&mut ws12, part, Some(&tok12), Some(&tok12));
            model.stage_backward(&mut ws12, part, 1e-3, &mut grads);
        }
        let a = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        for _ in 0..5 {
            for m in 0..6 {
                let tk = &tok12[m * 2 * t..(m + 1) * 2 * t];
                model.stage_forward(&mut ws2, part, Some(tk), Some(tk));
                model.stage_backward(&mut ws2, part, 1e-3, &mut grads);
            }
        }
        let b = t0.elapsed().as_secs_f64();
        ratios.push(a / b);
        println!(
            "round {round}: B=12 {:.1} ms, 6 x B=2 {:.1} ms, efficiency {:.3}",
            a * 200.0,
            b * 200.0,
            a / b
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!("median {:.3}", ratios[7]);
}
