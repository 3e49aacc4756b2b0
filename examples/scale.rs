//! From threads to a thousand GPUs: walk GPT-3 175B from "does not fit on one GPU" to a
//! layout that trains in weeks, with the cost model of `nanodist::scale`.
//!
//! ```text
//! cargo run --release --example scale            # the walk, in words and numbers
//! cargo run --release --example scale -- --svg docs/img   # also draws the three pictures
//!
//! 0. The toy: nanodist's baby GPT, each 'GPU' one worker thread of this CPU.
//!    4 workers, batch 12, f32: 20.6 MiB per worker, 99.1 ms per step, 7749 tokens/s; ...
//! 1. GPT-3 175B on ONE A100. Mixed-precision Adam needs 16 bytes per parameter.
//!    DP 1 x PP 1 x TP 1, ZeRO 0: 2609.2 GiB per GPU of 74.5: DOES NOT FIT
//! ...
//! 5. Megatron-LM's layout: TP 8 inside a node, PP 8 across nodes (12 layers per stage), DP 16.
//!    DP 16 x PP 8 x TP 8, ZeRO 0: 46.8 GiB per GPU of 74.5: fits
//!    step 32.48 s: 135.6 TFLOP/s per GPU, MFU 32.6%, 96857 tokens/s, 35.8 days for 300B tokens
//!    Megatron-LM (Narayanan et al., SC21, sec. 5.1): 140 TFLOP/s per GPU, 34 days.
//!    predicted 135.6 TFLOP/s (-3%), 35.8 days (+5%); ...
//! 7. Failures. ... On 16,384 GPUs: one interruption every 3.1 h, Daly's interval 12 min, goodput 88.6%.
//! ```

use nanodist::scale::calibrate::{
    megatron_gpt3_175b, megatron_table1, megatron_table2, rel_err, TABLE1,
};
use nanodist::scale::{
    goodput_svg, memory_svg, predict, report, step_svg, Hardware, ModelShape, Prediction,
    ScaleConfig,
};

fn show(step: &str, cfg: &ScaleConfig) -> Prediction {
    let p = predict(cfg).unwrap_or_else(|e| panic!("example layout is invalid: {e}"));
    println!("\n{step}");
    println!(
        "   DP {} x PP {} x TP {}, ZeRO {}: {:.1} GiB per GPU of {:.1}: {}",
        p.layout.dp,
        p.layout.pp,
        p.layout.tp,
        cfg.zero,
        p.memory_gib_per_gpu,
        p.memory.capacity / (1u64 << 30) as f64,
        if p.fits { "fits" } else { "DOES NOT FIT" }
    );
    println!(
        "   (weights {:.1}, gradients {:.1}, optimizer {:.1}, activations {:.1} GiB)",
        p.memory.weights / 1073741824.0,
        p.memory.grads / 1073741824.0,
        p.memory.optimizer / 1073741824.0,
        p.memory.activations / 1073741824.0
    );
    if p.fits {
        println!(
            "   step {:.2} s: {:.1} TFLOP/s per GPU, MFU {:.1}%, {:.0} tokens/s, {:.1} days for {:.0}B tokens",
            p.step_s,
            p.tflops_per_gpu,
            100.0 * p.mfu,
            p.tokens_per_s,
            p.days,
            cfg.tokens / 1e9
        );
    }
    p
}

fn main() {
    let svg_dir = std::env::args().skip_while(|a| a != "--svg").nth(1);

    println!("0. The toy: nanodist's baby GPT, each 'GPU' one worker thread of this CPU.");
    println!(
        "   The figures below are placeholders (`nanodist scale --calibrate` measures this machine's):"
    );
    println!("   10 GFLOP/s per core in the matrix products, an all-reduce of 5 us + n / 5 GB/s.");
    let cpu = ScaleConfig {
        model: ModelShape::tiny(),
        hardware: Hardware::calibrated_cpu(10e9, 5e-6, 5e9, 4e9),
        gpus: 4,
        gpus_per_node: 4,
        tp: 1,
        pp: 1,
        micro_batch: 3,
        batch: 12,
        recompute: false,
        tokens: 12.0 * 64.0 * 5000.0,
        precision: nanodist::scale::Precision::Fp32,
        ..ScaleConfig::default()
    };
    let toy = predict(&cpu).expect("a valid toy layout");
    println!(
        "   4 workers, batch 12, f32: {:.1} MiB per worker, {:.1} ms per step, {:.0} tokens/s;\n   the all-reduce takes {:.2} ms, {:.2} ms of it hidden behind the last backward",
        toy.memory.total / 1048576.0,
        toy.step_s * 1e3,
        toy.tokens_per_s,
        toy.time.dp_s * 1e3,
        toy.time.dp_hidden_s * 1e3
    );
    println!("   The same formulas, fed datasheet figures instead, describe a GPU cluster:");

    let base = ScaleConfig::default();
    let one = show(
        "1. GPT-3 175B on ONE A100. Mixed-precision Adam needs 16 bytes per parameter.",
        &ScaleConfig {
            gpus: 1,
            tp: 1,
            pp: 1,
            ..base.clone()
        },
    );
    let dp = show(
        "2. 1,536 A100s, pure data parallelism: every replica still holds all 16 bytes per parameter.",
        &ScaleConfig { gpus: 1536, tp: 1, pp: 1, ..base.clone() },
    );
    let z3 = show(
        "3. ZeRO-3 shards those 16 bytes over the 1,536 replicas: it fits, but every step gathers\n   all weights over InfiniBand twice per micro-batch.",
        &ScaleConfig { gpus: 1536, tp: 1, pp: 1, zero: 3, ..base.clone() },
    );
    println!("   Megatron-LM's Table 2 measured this layout at 44 TFLOP/s: DeepSpeed's 2021 ZeRO-3 gathered");
    println!("   parameter by parameter over flat rings; the model's ideal, prefetched collectives are far kinder.");
    let tp8 = show(
        "4. Tensor parallelism inside a node (TP 8 over NVLink): an eighth of each matrix per GPU, still 22B parameters.",
        &ScaleConfig { gpus: 1536, tp: 8, pp: 1, ..base.clone() },
    );
    let z1 = show(
        "   ... and with ZeRO-1 over its 192 replicas on top: the 2 + 2 bytes of weights and gradients remain.",
        &ScaleConfig { gpus: 1536, tp: 8, pp: 1, zero: 1, ..base.clone() },
    );
    let meg = show(
        "5. Megatron-LM's layout: TP 8 inside a node, PP 8 across nodes (12 layers per stage), DP 16.",
        &base,
    );
    let paper = megatron_gpt3_175b();
    println!(
        "   Megatron-LM (Narayanan et al., SC21, sec. 5.1): {} TFLOP/s per GPU, {} days.",
        paper.tflops_per_gpu,
        paper.days.unwrap_or(f64::NAN)
    );
    println!(
        "   predicted {:.1} TFLOP/s ({:+.0}%), {:.1} days ({:+.0}%); A100 matrix products at {:.0}% of peak,",
        meg.tflops_per_gpu,
        100.0 * rel_err(meg.tflops_per_gpu, paper.tflops_per_gpu),
        meg.days,
        100.0 * rel_err(meg.days, paper.days.unwrap_or(f64::NAN)),
        100.0 * meg.config.hardware.achievable
    );
    println!(
        "   a figure taken from the paper's smallest run (Table 1, 1.7B), not fitted to this one."
    );

    println!("\n6. More GPUs, same batch (Table 2 of the paper: TP 8 x PP 12):");
    for gpus in [384, 768, 1536] {
        let run = megatron_table2(gpus).expect("a Table 2 row");
        let p = predict(&run.config).expect("valid");
        println!(
            "   {gpus:>5} GPUs: predicted {:6.1} TFLOP/s, {:5.1} days | paper {:.0} TFLOP/s, {:.0} days | bubble {:.1}%",
            p.tflops_per_gpu,
            p.days,
            run.tflops_per_gpu,
            run.days.unwrap_or(f64::NAN),
            100.0 * p.time.bubble_s / p.step_s
        );
    }
    println!("   Fewer micro-batches per replica as DP grows: the bubble (p-1)/m eats the gain.");

    println!(
        "\n   Megatron-LM's Table 1 (weak scaling), predicted against published TFLOP/s per GPU:"
    );
    for (i, row) in TABLE1.iter().enumerate() {
        let run = megatron_table1(i);
        match predict(&run.config) {
            Ok(p) => println!(
                "   {:>7.1}B on {:>4} GPUs (TP {} PP {:>2}): {:6.1} vs {:.0} ({:+.0}%){}",
                row.billions,
                row.gpus,
                row.tp,
                row.pp,
                p.tflops_per_gpu,
                row.tflops,
                100.0 * rel_err(p.tflops_per_gpu, row.tflops),
                if p.fits {
                    ""
                } else {
                    "  (predicted not to fit)"
                }
            ),
            Err(e) => println!("   {:>7.1}B: {e}", row.billions),
        }
    }

    println!("\n7. Failures. One GPU fails every ~5.8 years (Llama 3's rate), 1,024 of them every {:.0} hours.", meg.reliability.mtbi_hours);
    println!(
        "   Checkpoint ({:.1} TB) in {:.0} s; Young's interval {:.0} min; goodput {:.1}%: {:.1} days become {:.1}.",
        meg.params * 14.0 / 1e12,
        meg.reliability.checkpoint_s,
        meg.reliability.young_s / 60.0,
        100.0 * meg.reliability.goodput,
        meg.days,
        meg.days_with_failures
    );
    let big = predict(&ScaleConfig {
        gpus: 16384,
        batch: 16384,
        ..base.clone()
    })
    .expect("valid");
    println!(
        "   On 16,384 GPUs: one interruption every {:.1} h, Daly's interval {:.0} min, goodput {:.1}%.",
        big.reliability.mtbi_hours,
        big.reliability.daly_s / 60.0,
        100.0 * big.reliability.goodput
    );

    println!("\nThe full report of step 5:\n\n{}", report(&meg));

    if let Some(dir) = svg_dir {
        let write = |name: &str, svg: String| {
            let path = std::path::Path::new(&dir).join(name);
            std::fs::write(&path, svg)
                .unwrap_or_else(|e| eprintln!("cannot write {}: {e}", path.display()));
            println!("wrote {}", path.display());
        };
        write("scale-step.svg", step_svg(&meg));
        let rows = [
            ("1 GPU", &one),
            ("DP 1536", &dp),
            ("DP 1536, ZeRO-3", &z3),
            ("TP 8 x DP 192", &tp8),
            ("TP 8, ZeRO-1", &z1),
            ("TP 8 x PP 8 x DP 16", &meg),
        ];
        write("scale-memory.svg", memory_svg(&rows));
        write("goodput.svg", goodput_svg(&big));
    }
}
