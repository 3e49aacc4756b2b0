use nanodist::model::linear::linear_weight_grad;
use std::time::Instant;
fn main() {
    let c = 128;
    let n = 768;
    let dy: Vec<f32> = (0..n * 4 * c).map(|i| (i % 17) as f32 * 0.01).collect();
    let x: Vec<f32> = (0..n * c).map(|j| (j % 13) as f32 * 0.01).collect();
    let mut dw = vec![0.0f32; 4 * c * c];
    let tag = std::env::args().nth(1).unwrap_or_default();
    for r in 0..10 {
        let t0 = Instant::now();
        for _ in 0..100 {
            linear_weight_grad(&mut dw, &dy, &x, n, 1);
        }
        let s = t0.elapsed().as_secs_f64();
        println!(
            "{tag} round {r}: {:.1} GF/s",
            100.0 * 2.0 * (n * 4 * c * c) as f64 / s / 1e9
        );
    }
}
