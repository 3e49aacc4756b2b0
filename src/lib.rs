//! nanodist: train a tiny GPT with data-parallel worker threads, and see every collective step.
//!
//! This crate is meant to be read. It trains a character-level GPT (nanoGPT's "baby GPT",
//! 0.8M parameters) on the CPU with N worker threads, each holding a full replica of the
//! model, exactly as data-parallel training works on a cluster of GPUs, shrunk to a laptop.
//!
//! # One step, the whole story
//!
//! ```text
//!            global batch: B sequences of T chars (the same for any number of workers)
//!                 |  split by sequence index: worker w gets B/N of them   data::sampler
//!     +-----------+-----------+
//!  worker 0    worker 1 ... worker N-1       a full replica each          parallel::data_parallel
//!  forward     forward        forward        loss on its own shard        model::Gpt::forward
//!  backward    backward       backward       gradients into a flat buffer model::Gpt::backward
//!     \            |            /
//!      +---- all-reduce (sum) -+             ring / tree / naive / shared  collective
//!     /            |            \            per bucket, maybe overlapped  parallel::buckets
//!  AdamW       AdamW          AdamW          identical inputs ->          optim
//!                                            identical replicas
//! ```
//!
//! Start reading at [`step::train_step`] (ONE training step, the same function for every
//! caller), then [`parallel::data_parallel`] (one worker's loop around it, the same code for
//! 1 and N workers), then [`train::train`] (a run: the workers, and the events its caller
//! sees), [`collective`] (how gradients are summed across threads) and [`model`] (the GPT,
//! each layer's forward above its backward). The chapters in `docs/` tell the same story
//! in prose, and [`tutorial`] builds one data-parallel step from these parts, in examples
//! that `cargo test` runs.
//!
//! # Glossary
//!
//! | symbol | meaning | default |
//! |---|---|---|
//! | B | global batch: sequences per optimizer step, across all workers | 12 |
//! | T | block: characters of context per sequence | 64 |
//! | C | channels of the residual stream (`n_embd`) | 128 |
//! | L | transformer blocks | 4 |
//! | H | attention heads per block | 4 |
//! | V | vocabulary: distinct characters of the corpus | 65 for Tiny Shakespeare |
//! | N | workers: threads, each with a full replica | one per core |
//! | K | micro-batches per worker per step (gradient accumulation) | 1 |
//! | S | bucket: gradients sent per all-reduce call, in KiB | all at once |
//!
//! # Module map
//!
//! | module | concept |
//! |---|---|
//! | [`step`] | THE training step: forward, backward, gradient exchange, clip, update |
//! | [`train`](mod@train) | one run: workers, their reports folded into rows, events for the caller |
//! | [`parallel`] | synchronous data parallelism, buckets, deterministic sums; the worker grid; ZeRO, tensor and pipeline parallelism; compression, local SGD / DiLoCo, a parameter server |
//! | [`collective`] | the communicator and the all-reduce algorithms |
//! | [`model`] | flat parameter layout, the layers, the GPT |
//! | [`optim`] | AdamW, the learning-rate schedule, gradient clipping |
//! | [`data`] | char tokenizer, the built-in `tales` corpus, batch sampling by (step, sequence) |
//! | [`config`] | model and training configuration, documented defaults |
//! | [`metrics`] | each step's figures over the workers, and the run's summary |
//! | [`trace`] | the timeline: spans of each worker on a shared clock |
//! | [`checkpoint`] | safetensors save and load, atomic, with a checksum |
//! | [`sample`] | generating text from a trained model |
//! | [`rng`] | the seeded generators (`rand_xoshiro`) and the value-stable draws on them |
//! | [`scale`] | a cost model: the same mechanisms at the scale of thousands of GPUs |
//! | [`tutorial`] | one data-parallel step built from these parts, in tested examples (docs only) |
//!
//! The most used items are re-exported here: [`TrainConfig`], [`Gpt`], [`train_step`],
//! [`train()`], [`Error`] and a few more (below).
//!
//! The library writes no files and prints nothing. The `nanodist` command line
//! (`src/bin/nanodist/`) is its application: the flags, the progress bar and summary table,
//! the run directory (it writes every file of it, from the events of [`train()`]), the
//! charts and timeline, and the `bench` and `allreduce` commands.
//!
//! # Example
//!
//! ```no_run
//! use nanodist::{config::TrainConfig, data, train};
//!
//! let corpus = data::load("tales", 1337)?;
//! let mut cfg = TrainConfig::default();
//! (cfg.parallel.workers, cfg.schedule.steps) = (2, 200);
//! cfg.model.vocab_size = corpus.vocab.len();
//! let on_event = |event: train::Event<'_>| {
//!     if let train::Event::Step(row) = event {
//!         println!("step {} loss {:.3}", row.step, row.loss);
//!     }
//!     Ok(())
//! };
//! let opts = train::RunOptions::default();
//! let run = train::train(&cfg, &corpus, train::initial_state(&cfg), &opts, on_event)?;
//! println!("val loss {:.3}, {:.0} tokens/s", run.summary.val_loss, run.summary.tokens_per_s);
//! # Ok::<(), nanodist::Error>(())
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod data;
mod error;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod rng;
pub mod sample;
pub mod scale;
pub mod step;
pub mod trace;
pub mod train;
pub mod tutorial;

pub use collective::{Algorithm, Comm};
pub use config::{
    FaultConfig, ModelConfig, OptimConfig, ParallelConfig, ScheduleConfig, TrainConfig,
};
pub use data::Corpus;
pub use error::{Error, InjectedFault};
pub use model::{Gpt, ParamLayout, Workspace};
pub use optim::AdamW;
pub use step::{train_step, Batch, GradientExchange, Observer, Replica, StepStats};
pub use train::{train, Event, Outcome, RunOptions, TrainState};
