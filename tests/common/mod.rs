//! What the tests share: the binary, a scratch directory, and the check that a failure is
//! one clean line (process-level); a tiny configuration and an in-process run (library-level).

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use nanodist::config::{ModelConfig, TrainConfig};
use nanodist::data::{self, Corpus};
use nanodist::metrics::StepRow;
use nanodist::train::{self, Outcome, RunOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_nanodist");

/// A scratch directory under the system's temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nanodist-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `nanodist ARGS` and waits for it.
pub fn nanodist(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run nanodist")
}

/// Asserts a clean failure whose single stderr line contains every one of `needles`.
pub fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    // Rust's report of a panic names its source location ("panicked at src/...").
    assert!(
        !stderr.contains("panicked at"),
        "a panic instead of an error:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got:\n{stderr}"
    );
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks {n:?}: {}", lines[0]);
    }
}

/// The built-in corpus, loaded once for every test in the file.
pub fn corpus() -> &'static Corpus {
    static CORPUS: std::sync::OnceLock<Corpus> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| data::load("tales", 7).expect("built-in corpus"))
}

/// A tiny model (2 layers, 32 channels) for `workers` workers: 4 steps of batch 12, no eval.
pub fn tiny(workers: usize) -> TrainConfig {
    let mut cfg = TrainConfig {
        model: ModelConfig {
            vocab_size: corpus().vocab.len(),
            block_size: 16,
            n_layer: 2,
            n_head: 2,
            n_embd: 32,
        },
        seed: 3,
        ..TrainConfig::default()
    };
    (cfg.parallel.workers, cfg.parallel.batch) = (workers, 12);
    (
        cfg.schedule.steps,
        cfg.schedule.eval_every,
        cfg.optim.warmup,
    ) = (4, 0, 2);
    cfg
}

/// `layers` blocks of `heads` heads and `embd` channels, trained 4 steps on batches of 12
/// with a small clip (0.05), so that clipping, and with it the global norm's bits, matters
/// every step: the model of the grid's tests (pipeline, tensor, their compositions). The
/// layout (workers, --tp, --pp) is each test's.
pub fn clipped(layers: usize, heads: usize, embd: usize) -> TrainConfig {
    let mut cfg = TrainConfig {
        model: ModelConfig {
            vocab_size: corpus().vocab.len(),
            block_size: 16,
            n_layer: layers,
            n_head: heads,
            n_embd: embd,
        },
        seed: 3,
        ..TrainConfig::default()
    };
    cfg.parallel.batch = 12;
    (cfg.schedule.steps, cfg.schedule.eval_every) = (4, 0);
    (cfg.optim.warmup, cfg.optim.grad_clip) = (2, 0.05);
    cfg
}

/// Trains `cfg` in-process on the built-in corpus, without the final evaluation.
pub fn run(cfg: &TrainConfig) -> Outcome {
    run_from(cfg, train::initial_state(cfg))
}

/// [`run`] from the state `init` (a resumed run).
pub fn run_from(cfg: &TrainConfig, init: train::TrainState) -> Outcome {
    let opts = RunOptions {
        final_eval: false,
        ..RunOptions::default()
    };
    train::train(cfg, corpus(), init, &opts, |_| Ok(())).expect("training runs")
}

/// Asserts that each step of `got` trained as the same step of `want` (paired in order):
/// the loss within 1e-5, the gradient norm within `norm_tol` relative. The float-tolerance
/// check of the strategies that are not bit-exact.
pub fn assert_steps_close<'a>(
    got: &[StepRow],
    want: impl IntoIterator<Item = &'a StepRow>,
    norm_tol: f64,
    what: &str,
) {
    for (a, b) in got.iter().zip(want) {
        let rel = (a.grad_norm - b.grad_norm).abs() / b.grad_norm;
        assert!(
            rel < norm_tol,
            "{what}: step {} gradient norm {} vs {}",
            a.step,
            a.grad_norm,
            b.grad_norm
        );
        assert!(
            (a.loss - b.loss).abs() < 1e-5,
            "{what}: step {} loss {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
    }
}
