//! ZeRO (`--zero 1|2|3`): the sharded runs train the model data parallelism trains.
//!
//! ```text
//!   --deterministic   stage 0..3 x workers 1..4   ->  one param_hash
//!   default mode      stage 1..3 vs stage 0       ->  the same loss curve, within float noise
//!   shards            any length, any N           ->  contiguous, chunk-aligned, covering
//!   resume            stage 3 on 3 workers, then stage 1 on 2 -> the uninterrupted run's bits
//!   --zero-prefetch   thread vs inline, stages 2, 3 x workers 1..3 -> the same bits, the
//!                     same losses, every gather and reduce-scatter run (counted spans)
//! ```
//! The model is tiny (39,424 parameters: 10 norm chunks, so 3 and 4 workers get uneven
//! shards, blocks straddle shard boundaries, and stage 3 reuses its two buffers of each kind).

use nanodist::checkpoint::param_hash;
use nanodist::config::{ModelConfig, TrainConfig, ZeroPrefetch};
use nanodist::data::{self, Corpus};
use nanodist::optim::NORM_CHUNK;
use nanodist::parallel::data_parallel::TrainState;
use nanodist::parallel::zero::shards;
use nanodist::trace::Phase;
use nanodist::train::{self, Outcome, RunOptions};

fn tales() -> &'static Corpus {
    static CORPUS: std::sync::OnceLock<Corpus> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| data::load("tales", 1337).expect("built-in corpus"))
}

fn config(zero: u8, workers: usize, deterministic: bool) -> TrainConfig {
    let corpus = tales();
    let mut cfg = TrainConfig {
        model: ModelConfig {
            vocab_size: corpus.vocab.len(),
            block_size: 16,
            n_layer: 3,
            n_head: 2,
            n_embd: 32,
        },
        seed: 1337,
        ..TrainConfig::default()
    };
    cfg.parallel.workers = workers;
    cfg.parallel.batch = 12;
    cfg.parallel.deterministic = deterministic;
    cfg.parallel.zero = zero;
    cfg.schedule.steps = 6;
    cfg.schedule.eval_every = 0;
    cfg.optim.warmup = 2;
    // clipping in every step: the gradient norm's bits reach the weights
    cfg.optim.grad_clip = 0.05;
    cfg
}

fn run(cfg: &TrainConfig, init: TrainState) -> Outcome {
    let opts = RunOptions {
        final_eval: false,
        trace_steps: 0,
        ..RunOptions::default()
    };
    train::train(cfg, tales(), init, &opts, |_| Ok(())).expect("training runs")
}

#[test]
fn deterministic_runs_end_with_the_same_bits_at_every_stage_and_worker_count() {
    let mut hashes = Vec::new();
    for zero in 0..=3 {
        for workers in 1..=4 {
            let cfg = config(zero, workers, true);
            let out = run(&cfg, train::initial_state(&cfg));
            assert!(out.rows.iter().all(|r| r.grad_norm > 0.05), "clipped");
            hashes.push((zero, workers, param_hash(&out.model.params)));
        }
    }
    let first = hashes[0].2.clone();
    for (zero, workers, hash) in &hashes {
        assert_eq!(
            hash, &first,
            "--zero {zero} --workers {workers}: all {hashes:?}"
        );
    }
}

#[test]
fn more_workers_than_chunks_leave_empty_shards_and_the_same_bits() {
    // 12 workers, 10 chunks: workers 10 and 11 own nothing
    let one = config(0, 1, true);
    let want = param_hash(&run(&one, train::initial_state(&one)).model.params);
    for zero in 1..=3 {
        let cfg = config(zero, 12, true);
        let got = param_hash(&run(&cfg, train::initial_state(&cfg)).model.params);
        assert_eq!(got, want, "--zero {zero} on 12 workers");
    }
}

/// `other`'s (loss, grad norm) per step equal stage 0's `base` within float noise.
fn assert_follows(base: &[(f64, f64)], other: &[(f64, f64)], what: &str) {
    assert_eq!(other.len(), base.len(), "{what}");
    for (step, (a, b)) in base.iter().zip(other).enumerate() {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * x.abs().max(1.0);
        assert!(
            close(a.0, b.0) && close(a.1, b.1),
            "{what}, step {step}: (loss, norm) {b:?} vs stage 0's {a:?}"
        );
    }
}

#[test]
fn every_stage_follows_stage_0s_loss_curve() {
    // accumulation (stage 2, 3 reduce every micro-batch) and buckets (stage 1's
    // reduce-scatter per bucket) included
    for (workers, accum, bucket_kb) in [(2, 2, 16), (3, 1, 0)] {
        let curve = |zero: u8| {
            let mut cfg = config(zero, workers, false);
            cfg.parallel.accum = accum;
            cfg.parallel.bucket_kb = bucket_kb;
            let out = run(&cfg, train::initial_state(&cfg));
            let rows = out.rows.iter();
            rows.map(|r| (r.loss, r.grad_norm)).collect::<Vec<_>>()
        };
        let base = curve(0);
        for zero in 1..=3 {
            let other = curve(zero);
            assert_follows(&base, &other, &format!("--zero {zero}, {workers} workers"));
        }
    }
}

#[test]
fn shards_are_contiguous_chunk_aligned_and_cover_any_length() {
    for len in [
        0,
        1,
        NORM_CHUNK - 1,
        NORM_CHUNK,
        3 * NORM_CHUNK + 5,
        14_720,
        800_000,
    ] {
        for n in 1..=7 {
            let s = shards(len, n);
            assert_eq!(s.len(), n);
            let mut next = 0;
            for (r, range) in s.iter().enumerate() {
                assert_eq!(range.start, next, "len {len} n {n} shard {r}: {s:?}");
                assert!(range.start % NORM_CHUNK == 0 || range.start == len, "{s:?}");
                next = range.end;
            }
            assert_eq!(next, len, "{s:?}");
            // no shard holds more than one chunk more than another
            let chunks = |r: &std::ops::Range<usize>| r.len().div_ceil(NORM_CHUNK);
            let (lo, hi) = (s.iter().map(chunks).min(), s.iter().map(chunks).max());
            assert!(hi.unwrap() - lo.unwrap() <= 1, "{s:?}");
        }
    }
}

#[test]
fn a_run_saved_at_one_stage_resumes_at_another() {
    let whole = config(0, 2, true);
    let straight = run(&whole, train::initial_state(&whole));
    // stage 3 on 3 workers for 3 steps; its consolidated state goes on at stage 1 on 2
    let mut first = config(3, 3, true);
    first.schedule.steps = 3;
    let half = run(&first, train::initial_state(&first));
    assert_eq!(half.model.params.len(), whole.model.num_params());
    assert_eq!(
        half.adam.m.len(),
        whole.model.num_params(),
        "moments consolidated"
    );
    let state = TrainState {
        params: half.model.params,
        adam: half.adam,
        step: 3,
    };
    let second = config(1, 2, true);
    let resumed = run(&second, state);
    assert_eq!(
        param_hash(&resumed.model.params),
        param_hash(&straight.model.params)
    );
    assert_eq!(
        resumed.adam, straight.adam,
        "the moments are the straight run's"
    );
}

#[test]
fn uneven_reduce_scatter_and_all_gather_follow_the_ranges_each_worker_names() {
    use nanodist::collective::group;
    // 3 workers, 10 elements, shards of 4, 6 and 0 elements; worker r contributes r + 1
    let ranges = [0..4, 4..10, 10..10];
    let out: Vec<(Vec<f32>, Vec<f32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (group(3).into_iter().zip(ranges.clone()))
            .map(|(mut comm, mine)| {
                s.spawn(move || {
                    let r = comm.rank() as f32;
                    let mut grads = vec![r + 1.0; 10];
                    comm.reduce_scatter_ranges(&mut grads, mine.clone())
                        .unwrap();
                    let mut params = vec![-1.0; 10];
                    params[mine.clone()].iter_mut().for_each(|p| *p = r);
                    comm.all_gather_ranges(&mut params, mine).unwrap();
                    (grads, params)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // worker 0 summed its 4, worker 1 its 6; the rest of each buffer is its own
    assert_eq!(out[0].0, [6.0, 6.0, 6.0, 6.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    assert_eq!(out[1].0, [2.0, 2.0, 2.0, 2.0, 6.0, 6.0, 6.0, 6.0, 6.0, 6.0]);
    assert_eq!(out[2].0, [3.0; 10]);
    let gathered = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    for (_, params) in &out {
        assert_eq!(params, &gathered);
    }
}

#[test]
fn overlapping_ranges_are_refused_before_any_buffer_is_touched() {
    use nanodist::collective::group;
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (group(2).into_iter().zip([0..6, 4..10]))
            .map(|(mut comm, mine)| {
                s.spawn(move || {
                    let mut buf = vec![1.0f32; 10];
                    comm.reduce_scatter_ranges(&mut buf, mine).unwrap();
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().is_err()).collect()
    });
    assert_eq!(
        results,
        [true, true],
        "both workers see the overlap and panic"
    );
}

#[test]
fn a_stage_past_3_is_refused_in_one_line() {
    let err = config(4, 1, false).validate().unwrap_err().to_string();
    assert!(err.contains("--zero 4") && !err.contains('\n'), "{err}");
}

/// The two places the walk's collectives can run.
const LANES: [ZeroPrefetch; 2] = [ZeroPrefetch::Thread, ZeroPrefetch::Inline];

#[test]
fn thread_and_inline_collectives_give_stage_0s_bits() {
    for workers in 1..=3 {
        let base = config(0, workers, true);
        let want = param_hash(&run(&base, train::initial_state(&base)).model.params);
        for zero in 2..=3 {
            for lane in LANES {
                let mut cfg = config(zero, workers, true);
                cfg.parallel.zero_prefetch = lane;
                let out = run(&cfg, train::initial_state(&cfg));
                let prefetch = out.summary.memory.as_ref().and_then(|m| m.prefetch);
                // (stage 2's deterministic backward is the model's: no walk, nothing to place)
                assert_eq!(prefetch, (zero == 3).then_some(lane), "--zero {zero}");
                assert_eq!(
                    param_hash(&out.model.params),
                    want,
                    "--zero {zero} --zero-prefetch {} --workers {workers}",
                    lane.name()
                );
            }
        }
    }
}

#[test]
fn thread_and_inline_collectives_follow_stage_0s_loss_curve() {
    // a skipped reduce-scatter loses a block's gradient (the norm shows it at once); a
    // skipped gather leaves a block's weights stale or zero (the loss shows it)
    for workers in 1..=3 {
        let curve = |zero: u8, lane: ZeroPrefetch| {
            let mut cfg = config(zero, workers, false);
            cfg.parallel.accum = 2;
            cfg.parallel.zero_prefetch = lane;
            let out = run(&cfg, train::initial_state(&cfg));
            let prefetch = out.summary.memory.as_ref().and_then(|m| m.prefetch);
            assert_eq!(prefetch, (zero >= 2).then_some(lane), "--zero {zero}");
            let rows = out.rows.iter();
            rows.map(|r| (r.loss, r.grad_norm)).collect::<Vec<_>>()
        };
        let base = curve(0, ZeroPrefetch::Auto);
        for zero in 2..=3 {
            let [thread, inline] = LANES.map(|lane| curve(zero, lane));
            assert_eq!(
                thread, inline,
                "--zero {zero}, {workers} workers: the same sums"
            );
            let what = format!("--zero {zero} inline, {workers} workers");
            assert_follows(&base, &inline, &what);
        }
    }
}

#[test]
fn inline_runs_every_gather_and_reduce_scatter_on_the_workers_own_track() {
    let n_layer = config(0, 1, false).model.n_layer;
    for zero in 2..=3u8 {
        for lane in LANES {
            let mut cfg = config(zero, 2, false);
            cfg.parallel.zero_prefetch = lane;
            let opts = RunOptions {
                final_eval: false,
                trace_steps: 2,
                ..RunOptions::default()
            };
            let init = train::initial_state(&cfg);
            let out = train::train(&cfg, tales(), init, &opts, |_| Ok(())).expect("runs");
            for (w, spans) in out.tracks.iter().enumerate() {
                let step = spans.iter().map(|s| s.step).max().expect("traced");
                let of_step = || spans.iter().filter(|s| s.step == step);
                // per step: each block's gather before forward and before backward (stage
                // 3), ln_f's and each block's and the embeddings' reduce-scatters
                let blocks = |s: &&nanodist::trace::Span| match s.phase {
                    Phase::AllGather(l) => zero == 3 && l < n_layer,
                    Phase::ReduceScatter(_) => true,
                    _ => false,
                };
                let walked: Vec<_> = of_step().filter(blocks).collect();
                let want = if zero == 3 { 2 * n_layer } else { 0 } + n_layer + 2;
                assert_eq!(
                    walked.len(),
                    want,
                    "--zero {zero} {}, worker {w}: {walked:?}",
                    lane.name()
                );
                let on_thread = lane == ZeroPrefetch::Thread;
                assert!(
                    walked.iter().all(|s| s.comm_thread == on_thread),
                    "--zero {zero} {}: {walked:?}",
                    lane.name()
                );
                // inline, nothing waits for a prefetch: the gathers ran where issued
                let prefetch_waits = of_step().filter(|s| matches!(s.phase, Phase::Prefetch(_)));
                assert_eq!(prefetch_waits.count() > 0, on_thread && zero == 3);
            }
        }
    }
}

#[test]
fn zero_prefetch_names_parse_and_a_bad_one_is_refused_in_one_line() {
    for lane in [
        ZeroPrefetch::Auto,
        ZeroPrefetch::Thread,
        ZeroPrefetch::Inline,
    ] {
        assert_eq!(lane.name().parse::<ZeroPrefetch>().unwrap(), lane);
    }
    let err = "overlap".parse::<ZeroPrefetch>().unwrap_err().to_string();
    assert!(
        err.contains("--zero-prefetch overlap") && !err.contains('\n'),
        "{err}"
    );
    // auto leaves a thread only where a core is free for it
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(ZeroPrefetch::Auto.resolve(cores), ZeroPrefetch::Inline);
    let below = ZeroPrefetch::Auto.resolve(cores - 1);
    assert_eq!(below, ZeroPrefetch::Thread);
    assert_eq!(ZeroPrefetch::Thread.resolve(cores), ZeroPrefetch::Thread);
    // config.json keeps a forced mode, and one without the key loads as auto
    let mut cfg = config(3, 2, false);
    cfg.parallel.zero_prefetch = ZeroPrefetch::Inline;
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["zero_prefetch"], "inline");
    let back: TrainConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, cfg);
    let mut old = json;
    old.as_object_mut().unwrap().remove("zero_prefetch");
    let back: TrainConfig = serde_json::from_value(old).unwrap();
    assert_eq!(back.parallel.zero_prefetch, ZeroPrefetch::Auto);
}
