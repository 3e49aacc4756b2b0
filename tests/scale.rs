//! The cost model of `nanodist::scale` against hand-worked cases, against Megatron-LM's
//! published GPT-3 175B run, and its failure formula against a seeded simulation.
//!
//! The pictures of `docs/at-scale.md` are drawn by the example:
//! `cargo run --release --example scale -- --svg docs/img`.

use nanodist::scale::calibrate::{
    a100_from_table1, calibrate_efficiency, megatron_gpt3_175b, rel_err,
};
use nanodist::scale::hardware::A100_ACHIEVABLE;
use nanodist::scale::reliability::{
    daly_interval_s, goodput, mtbi_s, simulate_goodput, young_interval_s,
};
use nanodist::scale::time::bubble_fraction;
use nanodist::scale::*;

#[test]
fn calibration_constant() {
    let e = a100_from_table1();
    println!("A100 achievable from Table 1's 1.7B row: {e:.4}");
    assert!(
        (e - A100_ACHIEVABLE).abs() < 0.01,
        "backed out {e:.4}, preset {A100_ACHIEVABLE}"
    );
}

#[test]
fn parameter_counts_of_the_presets() {
    let gpt2 = ModelShape::gpt2().params();
    assert!((gpt2 / 1e6 - 124.0).abs() < 1.0, "GPT-2 124M counts {gpt2}");
    let gpt3 = ModelShape::gpt3().params();
    assert!((gpt3 / 1e9 - 175.0).abs() < 1.0, "GPT-3 175B counts {gpt3}");
    assert!(
        ModelShape::tiny().params() < 1e6,
        "the baby GPT is under a million"
    );
}

#[test]
fn memory_of_a_small_case_by_hand() {
    // tiny GPT (l=4, a=4, h=128, s=64, V=65) on 4 GPUs: TP 2 x PP 2, DP 1, ZeRO 0, batch 4 in
    // micro-batches of 1 (m = 4), full recomputation, mixed precision. First stage:
    //   params: 2 blocks x (12*128^2 + 13*128)/2 + (65 + 64)*128/2 = 198,272 + 8,256 = 206,528
    //   model states: 16 bytes each                                    = 3,304,448
    //   activations: kept inputs 2 s b h = 2*64*128 = 16,384 per layer, 2 layers,
    //                min(pp, m) = 2 in flight                          =    65,536
    //              + one layer recomputed, t = 2: s b h (10 + 24/2 + 5*4*64/(128*2))
    //                = 8,192 * 27                                      =   221,184
    //   total                                                          = 3,591,168
    let cfg = ScaleConfig {
        model: ModelShape::tiny(),
        gpus: 4,
        tp: 2,
        pp: 2,
        batch: 4,
        micro_batch: 1,
        recompute: true,
        ..ScaleConfig::default()
    };
    let p = predict(&cfg).unwrap();
    assert_eq!(p.memory.params_per_gpu, 206_528.0);
    assert_eq!(
        p.memory.weights + p.memory.grads + p.memory.optimizer,
        3_304_448.0
    );
    assert_eq!(p.memory.activations, 65_536.0 + 221_184.0);
    assert_eq!(p.memory.total, 3_591_168.0);
    assert!(p.fits);
}

#[test]
fn ring_allreduce_bubble_and_young_by_hand() {
    // 16 GPUs, one per node, over IB HDR (10 us, 25 GB/s), 5.6 GB of gradients:
    // 2*15*10 us = 0.3 ms; 2*15/16 * 5.6e9 / 25e9 = 0.42 s
    let t = Link::ib_hdr().ring_allreduce_s(16, 5.6e9);
    assert!((t - (0.3e-3 + 0.42)).abs() < 1e-9, "ring {t}");
    // 8 stages, 96 micro-batches: 7/96
    assert!((bubble_fraction(8, 96) - 0.072_916_666).abs() < 1e-8);
    // C = 24 s, M = 49.5 h = 178,200 s: sqrt(2*24*178,200) = sqrt(8,553,600) = 2924.6 s
    assert!((young_interval_s(24.0, 178_200.0) - 2924.6).abs() < 0.1);
}

#[test]
fn megatron_gpt3_175b_within_25_percent() {
    let run = megatron_gpt3_175b();
    let p = predict(&run.config).unwrap();
    let (x, days) = (
        rel_err(p.tflops_per_gpu, run.tflops_per_gpu),
        rel_err(p.days, run.days.unwrap()),
    );
    println!(
        "predicted {:.1} TFLOP/s ({:+.1}%), {:.1} days ({:+.1}%)",
        p.tflops_per_gpu,
        100.0 * x,
        p.days,
        100.0 * days
    );
    assert!(
        p.fits,
        "Megatron's layout must fit: {:.1} GiB",
        p.memory_gib_per_gpu
    );
    assert!(
        x.abs() < 0.25,
        "TFLOP/s per GPU {:.1} vs {} published",
        p.tflops_per_gpu,
        run.tflops_per_gpu
    );
    assert!(
        days.abs() < 0.25,
        "days {:.1} vs {:?} published",
        p.days,
        run.days
    );
}

#[test]
fn layouts_the_paper_did_not_use_do_not_fit() {
    let base = ScaleConfig {
        gpus: 1536,
        ..ScaleConfig::default()
    };
    for (tp, pp, zero) in [(1, 1, 0), (8, 1, 0), (8, 1, 1)] {
        let p = predict(&ScaleConfig {
            tp,
            pp,
            zero,
            ..base.clone()
        })
        .unwrap();
        assert!(
            !p.fits,
            "TP {tp} PP {pp} ZeRO {zero} should not fit: {:.1} GiB",
            p.memory_gib_per_gpu
        );
        assert!(report(&p).contains("DOES NOT FIT"));
    }
}

#[test]
fn simulated_goodput_agrees_with_the_formula_at_16000_gpus() {
    // 16,000 GPUs at Llama 3's failure rate: one interruption every 3.17 h; checkpoint 24 s
    // (GPT-3's 2.4 TB at 100 GB/s), restart 10 min. Work: 3,000 MTBIs (about 3,000 failures),
    // so the simulation's standard error is far below the 2 points allowed.
    let m = mtbi_s(reliability::LLAMA3_GPU_MTBF_HOURS, 16_000);
    let (c, r) = (24.0, 600.0);
    let daly = daly_interval_s(c, m);
    for (i, scale) in [0.25, 1.0, 4.0].into_iter().enumerate() {
        let tau = daly * scale;
        let formula = goodput(tau, c, r, m);
        let sim = simulate_goodput(tau, c, r, m, 3000.0 * m, 42 + i as u64);
        println!(
            "tau {:.0} s: formula {:.4}, simulated {:.4}",
            tau, formula, sim
        );
        assert!(
            (formula - sim).abs() < 0.02,
            "tau {tau:.0} s: formula {formula:.4}, simulated {sim:.4}"
        );
    }
}

#[test]
fn best_simulated_interval_lies_near_young_and_daly() {
    let m = mtbi_s(reliability::LLAMA3_GPU_MTBF_HOURS, 16_000);
    let (c, r) = (24.0, 600.0);
    let (young, daly) = (young_interval_s(c, m), daly_interval_s(c, m));
    // sweep 1/8 .. 8 times Young on a log grid, same seed for every point (common random
    // numbers make the comparison between intervals sharper than the noise of each)
    let sweep: Vec<(f64, f64)> = (0..=24)
        .map(|i| {
            let tau = young * 2f64.powf((i as f64 - 12.0) / 4.0);
            (tau, simulate_goodput(tau, c, r, m, 3000.0 * m, 7))
        })
        .collect();
    let best = sweep
        .iter()
        .cloned()
        .fold((0.0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    println!(
        "best simulated {:.0} s ({:.4}); Young {young:.0} s, Daly {daly:.0} s",
        best.0, best.1
    );
    assert!(
        best.0 > 0.5 * daly && best.0 < 2.0 * young,
        "best {:.0} s, Young {young:.0}, Daly {daly:.0}",
        best.0
    );
}

#[test]
fn calibrated_cpu_predicts_compute_plus_allreduce() {
    // nanodist's own data parallelism: 4 worker threads, f32, no overlap. The step must be
    // the FLOPs per worker at the measured rate plus one shared-memory all-reduce of the
    // f32 gradients (4 bytes x 809,600 parameters on each worker).
    let hw = Hardware::calibrated_cpu(10e9, 5e-6, 5e9, 4e9);
    let cfg = ScaleConfig {
        model: ModelShape::tiny(),
        hardware: hw.clone(),
        gpus: 4,
        gpus_per_node: 4,
        tp: 1,
        pp: 1,
        batch: 12,
        micro_batch: 3,
        recompute: false,
        precision: Precision::Fp32,
        dp_overlap: 0.0,
        ..ScaleConfig::default()
    };
    let p = predict(&cfg).unwrap();
    let compute = ModelShape::tiny().step_flops(12, false) / 4.0 / 10e9;
    let allreduce = hw.intra.ring_allreduce_s(4, p.memory.params_per_gpu * 4.0);
    assert!(
        (p.step_s - (compute + allreduce)).abs() < 1e-12,
        "{} vs {}",
        p.step_s,
        compute + allreduce
    );
    // and calibrating against its own prediction gives back the figure (achievable = 1)
    let e = calibrate_efficiency(&cfg, p.tflops_per_gpu);
    assert!((e - 1.0).abs() < 1e-6, "{e}");
}

/// nanodist's runs on 2 calibrated CPU cores (10 GFLOP/s each, a link of 1 us + 5 GB/s), as
/// `nanodist scale --calibrate` lays each strategy out: the tiny model, f32, batch 12, no
/// overlap.
fn two_cores(tp: usize, pp: usize, zero: usize, micro_batch: usize) -> ScaleConfig {
    ScaleConfig {
        model: ModelShape::tiny(),
        hardware: Hardware::calibrated_cpu(10e9, 1e-6, 5e9, 4e9),
        gpus: 2,
        gpus_per_node: 2,
        tp,
        pp,
        zero,
        batch: 12,
        micro_batch,
        recompute: false,
        precision: Precision::Fp32,
        dp_overlap: 0.0,
        ..ScaleConfig::default()
    }
}

#[test]
fn calibrated_zero_stages_by_hand() {
    // ZeRO 1 and 2: one reduce-scatter + one all-gather = the all-reduce's bytes, so the
    // step is data parallelism's. ZeRO 3 with one micro-batch: the weights gathered before
    // the forward and again before the backward, the gradients reduce-scattered: 3 halves of
    // an all-reduce, 1.5 of them.
    let dp = predict(&two_cores(1, 1, 0, 6)).unwrap();
    let compute = ModelShape::tiny().step_flops(12, false) / 2.0 / 10e9;
    let link = Hardware::calibrated_cpu(10e9, 1e-6, 5e9, 4e9).intra;
    let allreduce = link.ring_allreduce_s(2, dp.memory.params_per_gpu * 4.0);
    // 2 workers: 2 alpha + bytes / beta
    let by_hand = 2e-6 + dp.memory.params_per_gpu * 4.0 / 5e9;
    assert!(
        (allreduce - by_hand).abs() < 1e-15,
        "{allreduce} vs {by_hand}"
    );
    assert!((dp.step_s - (compute + allreduce)).abs() < 1e-12);
    for stage in [1, 2] {
        let z = predict(&two_cores(1, 1, stage, 6)).unwrap();
        assert!(
            (z.step_s - dp.step_s).abs() < 1e-15,
            "stage {stage}: {} vs {}",
            z.step_s,
            dp.step_s
        );
    }
    let z3 = predict(&two_cores(1, 1, 3, 6)).unwrap();
    let want = compute + 1.5 * allreduce;
    assert!((z3.step_s - want).abs() < 1e-12, "{} vs {want}", z3.step_s);
}

#[test]
fn calibrated_pipeline_by_hand() {
    // --pp 2 --micro 4: one replica, micro-batches of 12 / 4 = 3 sequences. Each stage runs
    // half the layers, so its compute is the model's over P; it takes (M + P - 1) = 5 slots
    // of one micro-batch's, and every slot carries 2 sends (activation forward, gradient
    // back) of 3 x 64 x 128 f32: step = compute (M + P - 1) / M / P + 5 x 2 sends.
    let p = predict(&two_cores(1, 2, 0, 3)).unwrap();
    assert_eq!(
        (p.layout.dp, p.layout.pp, p.layout.micro_batches),
        (1, 2, 4)
    );
    let compute = ModelShape::tiny().step_flops(12, false) / 10e9;
    let send = 1e-6 + (3 * 64 * 128 * 4) as f64 / 5e9;
    let want = compute * 5.0 / 4.0 / 2.0 + 5.0 * 2.0 * send;
    assert!((p.step_s - want).abs() < 1e-12, "{} vs {want}", p.step_s);
    // the bubble is one slot of the five
    assert!((p.time.bubble_s - p.step_s / 5.0).abs() < 1e-12);
    assert_eq!(p.time.dp_s, 0.0);
}

#[test]
fn calibrated_tensor_parallel_by_hand() {
    // --tp 2: one replica of the whole batch of 12, each worker half of every matrix; per
    // layer 4 all-reduces (2 forward, 2 backward) of the 12 x 64 x 128 f32 activation, each
    // 2 alpha + bytes / beta on 2 workers: 16 for the 4 layers.
    let p = predict(&two_cores(2, 1, 0, 12)).unwrap();
    let compute = ModelShape::tiny().step_flops(12, false) / 2.0 / 10e9;
    let allreduce = 2e-6 + (12 * 64 * 128 * 4) as f64 / 5e9;
    let want = compute + 16.0 * allreduce;
    assert!((p.step_s - want).abs() < 1e-12, "{} vs {want}", p.step_s);
    assert!((p.time.tp_s - 16.0 * allreduce).abs() < 1e-12);
}

#[test]
fn pictures_are_whole_svg_documents() {
    let p = predict(&ScaleConfig::default()).unwrap();
    let big = predict(&ScaleConfig {
        gpus: 16384,
        batch: 16384,
        ..ScaleConfig::default()
    })
    .unwrap();
    let one = predict(&ScaleConfig {
        gpus: 1,
        tp: 1,
        pp: 1,
        ..ScaleConfig::default()
    })
    .unwrap();
    let pics = [
        ("scale-step.svg", step_svg(&p)),
        (
            "scale-memory.svg",
            memory_svg(&[("1 GPU", &one), ("TP 8 x PP 8 x DP 16", &p)]),
        ),
        ("goodput.svg", goodput_svg(&big)),
    ];
    for (name, svg) in &pics {
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name} is not an SVG"
        );
    }
}

#[test]
fn megatron_tables_1_and_2_within_25_percent() {
    // the same one calibrated constant, every published row: Table 1 (1.7B .. 1T, weak
    // scaling) and Table 2's PTD rows (175B on 384 / 768 / 1,536 GPUs)
    let mut runs: Vec<_> = (0..calibrate::TABLE1.len())
        .map(calibrate::megatron_table1)
        .collect();
    runs.extend(
        [384, 768, 1536]
            .into_iter()
            .filter_map(calibrate::megatron_table2),
    );
    let mut worst = 0.0f64;
    for run in &runs {
        let p = predict(&run.config).unwrap();
        let e = rel_err(p.tflops_per_gpu, run.tflops_per_gpu);
        println!(
            "{:<60} {:6.1} vs {:5.1} TFLOP/s ({:+.1}%)",
            run.name,
            p.tflops_per_gpu,
            run.tflops_per_gpu,
            100.0 * e
        );
        assert!(
            p.fits,
            "{} should fit: {:.1} GiB",
            run.name, p.memory_gib_per_gpu
        );
        if let Some(days) = run.days {
            assert!(
                rel_err(p.days, days).abs() < 0.25,
                "{}: {:.1} days vs {days}",
                run.name,
                p.days
            );
        }
        worst = worst.max(e.abs());
    }
    assert!(worst < 0.25, "worst relative error {:.1}%", 100.0 * worst);
}

#[test]
fn synchronisation_points_by_hand() {
    // The tiny model's 4 layers on 2 workers, as `nanodist scale --calibrate` lays them out.
    // TP: 4 all-reduces per layer = 16 per micro-batch. PP: 2 hand-offs per micro-batch, 2
    // barriers a step. DP: ZeRO 0 meets once (the exchange after the backward); 1 three
    // times (reduce-scatter, norm, weights); 2 at each of its 4 + 2 blocks' reduce-scatters,
    // then the norm and the weights: 8; 3 at 4 + 1 gathers forward, 4 + 2 backward, and the
    // norm: 12.
    let points = |tp, pp, zero, mb| {
        let cfg = two_cores(tp, pp, zero, mb);
        sync_points(&cfg, &cfg.layout().unwrap())
    };
    let sp = |per_micro_batch, per_step| SyncPoints {
        per_micro_batch,
        per_step,
    };
    assert_eq!(points(1, 1, 0, 6), sp(0.0, 1.0));
    assert_eq!(points(1, 1, 1, 6), sp(0.0, 3.0));
    assert_eq!(points(1, 1, 2, 6), sp(0.0, 8.0));
    assert_eq!(points(1, 1, 3, 6), sp(0.0, 12.0));
    assert_eq!(points(2, 1, 0, 12), sp(16.0, 0.0));
    assert_eq!(points(1, 2, 0, 3), sp(2.0, 2.0));
    // one worker meets nobody
    let one = ScaleConfig {
        gpus: 1,
        gpus_per_node: 1,
        ..two_cores(1, 1, 0, 12)
    };
    assert_eq!(sync_points(&one, &one.layout().unwrap()), sp(0.0, 0.0));
}

#[test]
fn synchronisation_cost_by_hand() {
    // The same layouts with 100 us per synchronisation point: each step gains its points'
    // cost, and the pipeline's bubble slots carry their own.
    let sync = 100e-6;
    let with = |tp, pp, zero, mb| {
        let mut cfg = two_cores(tp, pp, zero, mb);
        cfg.hardware = cfg.hardware.with_sync(sync);
        (
            predict(&two_cores(tp, pp, zero, mb)).unwrap(),
            predict(&cfg).unwrap(),
        )
    };
    for (tp, pp, zero, mb, points) in [
        (1, 1, 0, 6, 1.0),
        (1, 1, 1, 6, 3.0),
        (1, 1, 2, 6, 8.0),
        (1, 1, 3, 6, 12.0),
        (2, 1, 0, 12, 16.0),
    ] {
        let (without, p) = with(tp, pp, zero, mb);
        let want = without.step_s + points * sync;
        assert!(
            (p.step_s - want).abs() < 1e-12,
            "tp {tp} zero {zero}: {} vs {want}",
            p.step_s
        );
        assert!((p.time.sync_s - points * sync).abs() < 1e-15);
        assert_eq!(p.time.sync_points, points);
    }
    // --pp 2 --micro 4: 5 slots of t_mb, each with 2 hand-off points, + 2 barriers:
    // 12 points on the path, 2 of them in the bubble's slot
    let (without, p) = with(1, 2, 0, 3);
    let want = without.step_s + 12.0 * sync;
    assert!((p.step_s - want).abs() < 1e-12, "{} vs {want}", p.step_s);
    assert!((p.time.sync_s - 10.0 * sync).abs() < 1e-15);
    assert!((p.time.bubble_s - (without.time.bubble_s + 2.0 * sync)).abs() < 1e-15);
    let t = &p.time;
    let parts = t.compute_s + t.tp_s + t.pp_s + t.sync_s + t.bubble_s + t.dp_s - t.dp_hidden_s;
    assert!((parts - t.step_s).abs() < 1e-12, "{parts} vs {}", t.step_s);
}

#[test]
fn gpu_presets_price_no_synchronisation() {
    // the at-scale predictions are the link's and the compute's alone
    assert_eq!(Hardware::a100().sync_s, 0.0);
    assert_eq!(Hardware::h100().sync_s, 0.0);
    let p = predict(&ScaleConfig::default()).unwrap();
    assert_eq!(p.time.sync_s, 0.0);
    assert!(p.time.sync_points > 0.0);
}

#[test]
fn overlap_without_a_core_for_communication_by_hand() {
    // Data parallelism on 2 calibrated cores, the exchange overlapped in 13 buckets (the
    // default model's 3.2 MB in 256 KiB). With a core for the communication thread (the
    // default), the all-reduce hides behind the backward: step = compute. With none, it
    // hides nothing and backward hands its finished buckets over after each of the 4 blocks
    // and after the embeddings (after the head only ln_f is finished, less than a bucket):
    // min(13, 4 + 1) = 5 hand-offs of 200 us each.
    let overlapped = |buckets: usize| ScaleConfig {
        dp_overlap: 1.0,
        buckets,
        ..two_cores(1, 1, 0, 6)
    };
    let compute = ModelShape::tiny().step_flops(12, false) / 2.0 / 10e9;
    let link = Hardware::calibrated_cpu(10e9, 1e-6, 5e9, 4e9).intra;
    let own = predict(&overlapped(13)).unwrap();
    let allreduce = link.ring_allreduce_s(2, own.memory.params_per_gpu * 4.0);
    assert!(Hardware::calibrated_cpu(10e9, 1e-6, 5e9, 4e9).comm_core);
    assert!(
        (own.step_s - compute).abs() < 1e-12,
        "{} vs {compute}",
        own.step_s
    );
    assert!((own.time.dp_hidden_s - allreduce).abs() < 1e-15);
    assert_eq!(own.time.handoff_s, 0.0);
    let shared = |buckets: usize| {
        let mut cfg = overlapped(buckets);
        cfg.hardware = cfg.hardware.with_shared_comm(200e-6);
        predict(&cfg).unwrap()
    };
    let p = shared(13);
    let want = compute + allreduce + 5.0 * 200e-6;
    assert!((p.step_s - want).abs() < 1e-12, "{} vs {want}", p.step_s);
    assert_eq!(p.time.dp_hidden_s, 0.0);
    assert!((p.time.handoff_s - 5.0 * 200e-6).abs() < 1e-15);
    assert_eq!(p.time.handoffs, 5.0);
    // 3 buckets: 3 hand-offs (fewer buckets than release points)
    let p = shared(3);
    assert!((p.step_s - (compute + allreduce + 3.0 * 200e-6)).abs() < 1e-12);
    assert_eq!(p.time.handoffs, 3.0);
    // no overlap: no communication thread, no hand-offs, whatever the hardware
    let mut plain = two_cores(1, 1, 0, 6);
    plain.buckets = 13;
    plain.hardware = plain.hardware.with_shared_comm(200e-6);
    let p = predict(&plain).unwrap();
    assert!((p.step_s - (compute + allreduce)).abs() < 1e-12);
    assert_eq!(p.time.handoff_s, 0.0);
}

#[test]
fn gpu_presets_have_communication_hardware() {
    // a GPU's copy engines and links run the exchange beside the compute: overlap hides
    // what the backward covers, and no hand-off is charged
    for hw in [Hardware::a100(), Hardware::h100()] {
        assert!(hw.comm_core, "{}", hw.name);
        assert_eq!(hw.handoff_s, 0.0);
    }
    let gpt2 = ScaleConfig {
        model: ModelShape::gpt2(),
        gpus: 8,
        tp: 1,
        pp: 1,
        batch: 64,
        micro_batch: 8,
        recompute: false,
        buckets: 40,
        ..ScaleConfig::default()
    };
    let p = predict(&gpt2).unwrap();
    assert_eq!(p.time.handoff_s, 0.0);
    assert!(
        (p.time.dp_hidden_s - p.time.dp_s).abs() < 1e-15,
        "{:?}",
        p.time
    );
}

#[test]
fn zero_bubble_on_megatrons_layout() {
    // GPT-3 175B, TP 8 x PP 8 x DP 16, m = 96, recomputation on: zb keeps the micro-batch's
    // time, shortens the bubble to (p - 1)(t_mb - 2W) and the step by 2 (p - 1) W, and holds
    // 2p - 1 = 15 micro-batches on the first stage plus the pending W's
    let one = predict(&ScaleConfig::default()).unwrap();
    let zb = predict(&ScaleConfig {
        schedule: PipeSchedule::ZeroBubble,
        ..ScaleConfig::default()
    })
    .unwrap();
    let (t1, tz) = (&one.time, &zb.time);
    assert_eq!(t1.micro_batch_s, tz.micro_batch_s);
    let w = tz.weight_grad_s;
    assert!(w > 0.0 && w < tz.micro_batch_s / 4.0 + 1e-15, "{tz:?}");
    assert!((tz.bubble_s - 7.0 * (tz.micro_batch_s - 2.0 * w)).abs() < 1e-9);
    assert!(
        ((t1.step_s - tz.step_s) - 14.0 * w).abs() < 1e-9,
        "{t1:?} {tz:?}"
    );
    assert!(zb.tflops_per_gpu > one.tflops_per_gpu);
    assert!(zb.memory.activations > one.memory.activations);
    assert_eq!(zb.memory.weights, one.memory.weights);
    // the report names the schedule and the bubble's share
    let text = report(&zb);
    assert!(text.contains("schedule zb"), "{text}");
    assert!(text.contains("pipeline bubble (zb, "), "{text}");
}
