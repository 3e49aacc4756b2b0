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
//! Start reading at [`train::train`] (the run), then [`parallel::data_parallel`] (one
//! worker's loop, the same code for 1 and N workers), then [`collective`] (how gradients are
//! summed across threads) and [`model`] (the GPT, each layer's forward above its backward).
//! The chapters in `docs/` tell the same story in prose, and [`tutorial`] builds one
//! data-parallel step by hand from these parts, in examples that `cargo test` runs.
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
//! | [`config`] | model and training configuration, documented defaults |
//! | [`data`] | char tokenizer, the built-in `tales` corpus, batch sampling by (step, sequence) |
//! | [`model`] | flat parameter layout, the layers, the GPT |
//! | [`optim`] | AdamW, the learning-rate schedule, gradient clipping |
//! | [`collective`] | the communicator and the all-reduce algorithms |
//! | [`parallel`] | synchronous data parallelism, buckets, deterministic sums |
//! | [`train`] | one run: workers, reporting, the run directory |
//! | [`cli`] | the flags of `train` and `sample`, applied onto a configuration |
//! | [`metrics`] | each step's figures over the workers, and the run's summary |
//! | [`checkpoint`] | safetensors save and load, atomic, with a checksum |
//! | [`rundir`] | the run directory: claimed new, or read back to resume |
//! | [`trace`] | the timeline as a Chrome trace |
//! | [`report`], [`plot`] | progress bar, summary table, SVG charts |
//! | [`sample`] | generating text from a trained model |
//! | [`bench`](mod@bench) | thread-scaling benchmark |
//! | [`rng`] | the documented random number generators |
//! | [`tutorial`] | one data-parallel step built by hand, in tested examples (docs only) |
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
//! let on_event = |event| {
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

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod collective;
pub mod config;
pub mod data;
pub mod error;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod plot;
pub mod report;
pub mod rng;
pub mod rundir;
pub mod sample;
pub mod step;
pub mod trace;
pub mod train;
pub mod tutorial;

pub use error::Error;
