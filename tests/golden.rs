//! Golden values: the bits nanodist produces, pinned, so that a dependency bump that
//! changes them fails here instead of going unnoticed.
//!
//! Every other test compares runs with each other (N workers with 1, a checkpoint with the
//! run it came from). These compare with literal values written down from one run of the
//! code, each the end of a chain of dependencies:
//!
//! ```text
//!   rand_xoshiro ──> Xoshiro256StarStar / SplitMix64 streams ──> generator_streams
//!   + rng::Draw + libm (ln, cos) ──> normal samples ───────────> normal_samples
//!   + the grammar + libm (ln) ──> the tales corpus, its floor ─> tales_corpus
//!   + the model, libm (ln, cos, pow), gemm, the collectives ───> param_hash_of_a_small_run
//! ```
//!
//! **A failure here means the bits changed, not that the test is wrong.** Changing the
//! generators, the draws, the grammar, the kernels or the maths on purpose changes these
//! values too: then check that the change was meant (and that every worker count still
//! agrees), and write the new values down with the change. A dependency bump that moves
//! them is a change in the bits every run of a seed produces, worth knowing before it lands.
//!
//! The `param_hash` also depends on the CPU's arithmetic. The build targets the CPU it runs
//! on (`target-cpu=native`) and needs fused multiply-add to give these bits: `gemm`'s AVX2
//! and AVX-512 microkernels and the attention kernels add each product in the same order,
//! so either gives them. On a CPU without FMA the kernels' `math::fma` is a multiply and an
//! add, two roundings, and the hash differs there.

use nanodist::checkpoint::{fnv1a64, param_hash, FNV_OFFSET};
use nanodist::config::{ModelConfig, TrainConfig};
use nanodist::data::{self, Corpus};
use nanodist::rng::{Draw, Rng, SeedableRng, SplitMix64, Xoshiro256StarStar};
use nanodist::train::{self, RunOptions};

/// Asserts `got == want`, printing both in full and the first index where they differ.
fn assert_pinned<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "{what}: the bits changed (first difference at index {i}: got {:?}, pinned {:?})\n\
             got    {got:?}\npinned {want:?}",
            got.get(i),
            want.get(i)
        );
    }
}

#[test]
fn generator_streams() {
    // Pins rand_xoshiro's Xoshiro256StarStar, seeded as every nanodist stream is seeded
    // (`seed_from_u64`: four SplitMix64 outputs as the state). A change means every
    // stream, from the initial weights to the tales grammar, changed.
    let mut x = Xoshiro256StarStar::seed_from_u64(1337);
    let got: Vec<u64> = (0..6).map(|_| x.next_u64()).collect();
    assert_pinned(
        &got,
        &XOSHIRO_1337,
        "Xoshiro256StarStar::seed_from_u64(1337)",
    );

    // Pins SplitMix64 as the batch sampler uses it: a generator per key, its first output.
    // A change means every training batch's windows changed.
    let got: Vec<u64> = (0..6)
        .map(|key| SplitMix64::seed_from_u64(key).next_u64())
        .collect();
    assert_pinned(
        &got,
        &SPLITMIX_FIRST,
        "SplitMix64::seed_from_u64(0..6), first outputs",
    );
    let mut s = SplitMix64::seed_from_u64(1337);
    let got: Vec<u64> = (0..6).map(|_| s.next_u64()).collect();
    assert_pinned(&got, &SPLITMIX_1337, "SplitMix64::seed_from_u64(1337)");

    // Pins the batch sampler's windows for a few (step, sequence) pairs.
    let got: Vec<usize> = (0..6)
        .map(|k| data::window_start(1337, k, 5 - k, 900_000, 64))
        .collect();
    assert_pinned(&got, &WINDOWS, "window_start(1337, k, 5-k, 900000, 64)");
}

#[test]
fn normal_samples() {
    // Pins `Draw::below`, `Draw::uniform` and `Draw::normal` (Box-Muller through libm's ln
    // and cos). The floats are written as Rust prints them, the shortest decimal that reads
    // back as the same f64, so `==` on them compares bits. A change means the initial
    // weights changed.
    let mut x = Xoshiro256StarStar::seed_from_u64(7);
    let below: Vec<usize> = (0..6).map(|_| x.below(65)).collect();
    assert_pinned(&below, &BELOW_65, "below(65) from seed 7");
    let uniform: Vec<f64> = (0..3).map(|_| x.uniform()).collect();
    assert_pinned(&uniform, &UNIFORM, "uniform(), after the above");
    let normal: Vec<f64> = (0..6).map(|_| x.normal()).collect();
    assert_pinned(&normal, &NORMAL, "normal(), after the above");
}

/// The built-in corpus of seed 1337, generated once for the tests of this file.
fn tales() -> &'static Corpus {
    static CORPUS: std::sync::OnceLock<Corpus> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| data::load("tales", 1337).expect("built-in corpus"))
}

#[test]
fn tales_corpus() {
    // Pins the text of `data::load("tales", 1337)` (the grammar and its Xoshiro256StarStar
    // stream), its vocabulary, and its entropy floor (libm's ln). A change means the
    // default corpus is different text, and every run on it different bits.
    let c = tales();
    let tokens: Vec<u32> = c.train.iter().chain(&c.val).copied().collect();
    let text = c.vocab.decode(&tokens);
    let checksum = format!("{:016x}", fnv1a64(FNV_OFFSET, text.as_bytes()));
    let floor = c.floor_nats.expect("tales has a floor");
    let got = (text.chars().count(), c.vocab.len(), &checksum[..], floor);
    assert_eq!(
        got, TALES,
        "tales 1337: (chars, vocabulary, FNV-1a of the text, floor in nats/char): the bits changed"
    );
}

/// The small deterministic run whose final parameters are pinned: L=1, C=32, H=2, T=16,
/// global batch 12, 8 steps (2 of warm-up, then the cosine), `--deterministic`, on
/// [`tales`]. Its whole setup is here, so that a change of the training API is one edit.
fn small_run_hash(workers: usize) -> String {
    let corpus = tales();
    let mut cfg = TrainConfig {
        model: ModelConfig {
            vocab_size: corpus.vocab.len(),
            block_size: 16,
            n_layer: 1,
            n_head: 2,
            n_embd: 32,
        },
        seed: 1337,
        ..TrainConfig::default()
    };
    cfg.parallel.workers = workers;
    cfg.parallel.batch = 12;
    cfg.parallel.deterministic = true;
    cfg.schedule.steps = 8;
    cfg.schedule.eval_every = 0;
    cfg.optim.warmup = 2;
    let opts = RunOptions {
        final_eval: false,
        trace_steps: 0,
        ..RunOptions::default()
    };
    let run = train::train(&cfg, corpus, train::initial_state(&cfg), &opts, |_| Ok(()))
        .expect("training runs");
    param_hash(&run.model.params)
}

#[test]
fn param_hash_of_a_small_run() {
    // Pins the final parameters of the small deterministic run: the initial weights, the
    // batches, the kernels (gemm included), the loss's ln, the schedule's cos, AdamW's pow.
    // A change means a deterministic run of a seed ends with different weights. Deterministic
    // mode promises the same bits for any number of workers, so 1, 2 and 3 all give it.
    let hashes: Vec<String> = [2, 1, 3].into_iter().map(small_run_hash).collect();
    let got: Vec<&str> = hashes.iter().map(String::as_str).collect();
    assert_pinned(
        &got,
        &[SMALL_RUN_HASH; 3],
        "param_hash with 2, 1, 3 workers",
    );
}

// The pinned values, from one run of the code above. The generators' outputs also agree
// with the reference algorithms (splitmix64.c, xoshiro256starstar.c) written out by hand.
const XOSHIRO_1337: [u64; 6] = [
    12468955128717782748,
    15024386940265324015,
    14342583032507416131,
    17171520676123500948,
    3306116497483004019,
    12073436436315661677,
];
const SPLITMIX_FIRST: [u64; 6] = [
    16294208416658607535,
    10451216379200822465,
    10905525725756348110,
    2092789425003139053,
    7958955049054603978,
    7134611160154358618,
];
const SPLITMIX_1337: [u64; 6] = [
    13161956497586561035,
    14663483216071361993,
    3765287255879986010,
    8575537320440087138,
    4226762000762084508,
    12223891719901678529,
];
const WINDOWS: [usize; 6] = [279081, 412100, 323643, 210096, 28917, 297336];
const BELOW_65: [usize; 6] = [45, 18, 54, 63, 64, 56];
const UNIFORM: [f64; 3] = [
    0.060752079492816136,
    0.1044357892428116,
    0.40370652610252655,
];
const NORMAL: [f64; 6] = [
    -0.554584584351418,
    1.504640710092747,
    -1.967357741493396,
    -0.05397664005955176,
    0.6210937655044191,
    0.2538920060013973,
];
const TALES: (usize, usize, &str, f64) = (1000116, 57, "4a526bc97c338668", 0.15727749747041964);
const SMALL_RUN_HASH: &str = "99d4a6bd92969fa7";
