//! A tutorial: one data-parallel training step, built by hand from nanodist's parts.
//!
//! This module holds no code, only this page. Its examples are compiled and run by
//! `cargo test`, so every line of them works as written. Each takes one idea of the step
//! that `cargo run --release` repeats 2,000 times, smallest first:
//!
//! 1. [Text to a batch](#1-text-to-a-batch): characters become token ids; a batch is
//!    addressed by (step, sequence), so a worker can draw its own share of it.
//! 2. [One flat buffer](#2-one-flat-buffer): every weight of the model in one `Vec<f32>`.
//! 3. [Forward and backward](#3-forward-and-backward-on-one-worker) on one worker, and
//!    the training step that wraps them.
//! 4. [Two workers, by hand](#4-two-workers-by-hand): the sum of the shards' gradients is
//!    the whole batch's gradient.
//! 5. [Two workers on threads](#5-two-workers-on-threads-with-an-all-reduce): the same
//!    step with an all-reduce as its gradient exchange, and replicas that stay identical.
//! 6. [All of it](#6-all-of-it-traintrain): [`train::train`](crate::train::train).
//!
//! The model is the default one shrunk so that the examples run in milliseconds:
//! T = 8 characters of context, one block, 2 heads, C = 16 channels.
//!
//! # 1. Text to a batch
//!
//! The tokenizer is the sorted set of distinct characters; a token is a character's index
//! in it. A training example is a window of T + 1 tokens: T inputs, and as targets the same
//! window shifted by one, so that every position predicts the character after it.
//!
//! Where each window starts is a pure function of (seed, step, sequence index). That is the
//! whole of data-parallel data loading: worker w of N draws sequences
//! `w*B/N .. (w+1)*B/N` of the step's global batch, and no two workers need to talk about it.
//!
//! ```
//! use nanodist::data::{fill_batch, Corpus};
//!
//! let text = "the cat sat on the mat. the dog sat on the log. ".repeat(20);
//! let corpus = Corpus::from_text("cats", &text, None);
//! assert_eq!(corpus.vocab.as_string(), " .acdeghlmnost"); // V = 14
//! assert_eq!(corpus.vocab.encode("cat")?, vec![3, 2, 13]);
//!
//! // a global batch of 4 sequences of T = 8 at step 0, drawn whole ...
//! let (seed, t) = (1, 8);
//! let (mut x, mut y) = (vec![0; 4 * t], vec![0; 4 * t]);
//! fill_batch(&corpus.train, seed, 0, 0..4, t, &mut x, &mut y);
//! // ... and drawn as two shards by two workers: the same rows
//! let (mut x1, mut y1) = (vec![0; 2 * t], vec![0; 2 * t]);
//! fill_batch(&corpus.train, seed, 0, 2..4, t, &mut x1, &mut y1);
//! assert_eq!((&x[2 * t..], &y[2 * t..]), (&x1[..], &y1[..]));
//! // every target is the next input
//! assert_eq!(&y[..t - 1], &x[1..t]);
//! # Ok::<(), nanodist::Error>(())
//! ```
//!
//! # 2. One flat buffer
//!
//! Every parameter lives in ONE `Vec<f32>`, with named views into it
//! ([`ParamLayout`](crate::model::ParamLayout)). Gradients and AdamW's two moments use the
//! same layout, so summing all gradients across workers is one loop over one slice,
//! whatever the model looks like.
//!
//! ```
//! use nanodist::config::ModelConfig;
//! use nanodist::model::Gpt;
//!
//! let cfg = ModelConfig { vocab_size: 14, block_size: 8, n_layer: 1, n_head: 2, n_embd: 16 };
//! let model = Gpt::new(cfg.clone(), 1337);
//! assert_eq!(model.params.len(), cfg.num_params());
//! let c_attn = model.layout.get("transformer.h.0.attn.c_attn.weight").unwrap();
//! assert_eq!(c_attn.shape, vec![3 * 16, 16]); // (out, in), as PyTorch stores it
//! let wte = &model.params[..14 * 16]; // the token embedding comes first
//! assert!(wte.iter().all(|w| w.abs() < 0.2)); // N(0, 0.02) at initialisation
//! ```
//!
//! # 3. Forward and backward on one worker
//!
//! A [`Workspace`](crate::model::Workspace) holds every activation of one batch shape,
//! allocated once. Forward returns the mean cross-entropy; backward ADDS the gradient of
//! `grad_scale * (sum of the per-token losses)` into a gradient buffer. With
//! `grad_scale = 1 / (B*T)` that is the gradient of the mean loss.
//!
//! At initialisation the logits are nearly 0, so every character is about equally likely
//! and the loss is about ln V. Then [`train_step`](crate::step::train_step), THE step that
//! every caller of nanodist runs (forward, backward, the gradient exchange, clipping, AdamW),
//! brings it down: here on one replica ([`Alone`](crate::step::Alone): nothing to exchange),
//! 20 times on the same batch (step 0's).
//!
//! ```
//! use nanodist::config::{ModelConfig, TrainConfig};
//! # use nanodist::data::{fill_batch, Corpus};
//! use nanodist::model::{Gpt, Workspace};
//! use nanodist::optim::AdamW;
//! use nanodist::step::{train_step, Alone, Batch, Replica, Unobserved};
//!
//! # let text = "the cat sat on the mat. the dog sat on the log. ".repeat(20);
//! # let corpus = Corpus::from_text("cats", &text, None);
//! let model = ModelConfig { vocab_size: 14, block_size: 8, n_layer: 1, n_head: 2, n_embd: 16 };
//! let (b, t) = (4, 8);
//! # let (mut x, mut y) = (vec![0; b * t], vec![0; b * t]);
//! # fill_batch(&corpus.train, 1, 0, 0..b, t, &mut x, &mut y);
//! let gpt = Gpt::new(model.clone(), 1337);
//! let mut ws = Workspace::new(&model, b, t);
//! let first = gpt.forward(&mut ws, &x, Some(&y)).unwrap();
//! assert!((first - (14f32).ln()).abs() < 0.2, "loss {first} at init, ln V = 2.64");
//!
//! let mut cfg = TrainConfig { model, ..TrainConfig::default() };
//! (cfg.parallel.batch, cfg.optim.warmup, cfg.optim.lr) = (b, 0, 1e-2);
//! let adam = AdamW::new(gpt.layout.len);
//! let mut replica = Replica::new(0, gpt, adam, &cfg); // the model, AdamW, buffers
//! let batch = Batch { tokens: &corpus.train, seed: 1, step: 0, sequences: 0..b };
//! for _ in 0..20 {
//!     train_step(&mut replica, &cfg, &batch, &mut Alone, &mut Unobserved)?;
//! }
//! let last = replica.model.forward(&mut ws, &x, Some(&y)).unwrap();
//! assert!(last < first - 0.5, "20 steps on one batch: {first} -> {last}");
//! # Ok::<(), nanodist::Error>(())
//! ```
//!
//! # 4. Two workers, by hand
//!
//! The gradient of a sum is the sum of the gradients. Split the batch of 4 sequences into
//! two shards of 2, let each "worker" run forward and backward on its shard with the same
//! `grad_scale = 1 / (4*T)` (the GLOBAL batch's token count), and the plain sum of their
//! two gradient buffers is the gradient of the whole batch.
//!
//! It is equal as real numbers, not as floats: the whole batch sums each weight's gradient
//! over 32 tokens in one order, the shards over 16 and 16 and then add the halves, and float
//! addition is not associative. So the check has a tolerance (how nanodist gets identical
//! bits anyway: `--deterministic`, in `docs/data-parallel.md`).
//!
//! ```
//! # use nanodist::config::ModelConfig;
//! # use nanodist::data::{fill_batch, Corpus};
//! # use nanodist::model::{Gpt, Workspace};
//! # let text = "the cat sat on the mat. the dog sat on the log. ".repeat(20);
//! # let corpus = Corpus::from_text("cats", &text, None);
//! # let cfg = ModelConfig { vocab_size: 14, block_size: 8, n_layer: 1, n_head: 2, n_embd: 16 };
//! # let model = Gpt::new(cfg.clone(), 1337);
//! let t = 8;
//! let scale = 1.0 / (4 * t) as f32; // the global batch: 4 sequences
//! // the gradient of sequences `seqs`, computed as a worker holding only those would
//! let gradient = |seqs: std::ops::Range<usize>| {
//!     let b = seqs.len();
//!     let (mut x, mut y) = (vec![0; b * t], vec![0; b * t]);
//!     fill_batch(&corpus.train, 1, 0, seqs, t, &mut x, &mut y);
//!     let mut ws = Workspace::new(&cfg, b, t);
//!     let mut grads = vec![0.0f32; model.layout.len];
//!     model.forward(&mut ws, &x, Some(&y)).unwrap();
//!     model.backward(&mut ws, scale, &mut grads[..]);
//!     grads
//! };
//! let whole = gradient(0..4);
//! let (g0, g1) = (gradient(0..2), gradient(2..4));
//! let largest = whole.iter().fold(0f32, |m, g| m.max(g.abs()));
//! for ((w, a), b) in whole.iter().zip(&g0).zip(&g1) {
//!     assert!((w - (a + b)).abs() <= 1e-5 * largest, "{w} vs {a} + {b}");
//! }
//! ```
//!
//! # 5. Two workers on threads, with an all-reduce
//!
//! Now for real: two threads, each with its own replica of the model (a copy of the same
//! weights) and its own shard. [`collective::group`](crate::collective::group) gives each
//! thread one endpoint of a communicator, and
//! [`AllReduce`](crate::parallel::data_parallel::AllReduce) over it is the step's gradient
//! exchange: it leaves the sum of all the workers' gradients in every worker's buffer. Both
//! then take the same AdamW step from the same gradient, so the replicas stay identical, to
//! the bit, without ever exchanging weights.
//!
//! The step is the same function as on one worker; only the exchange differs. With
//! `deterministic` set, each sequence's gradient is summed exactly (in fixed point), so two
//! workers end on the very bits of one worker stepping the whole batch.
//!
//! ```
//! # use nanodist::config::{ModelConfig, TrainConfig};
//! # use nanodist::data::Corpus;
//! # use nanodist::model::Gpt;
//! use nanodist::checkpoint::param_hash;
//! use nanodist::collective::{group, Algorithm};
//! use nanodist::optim::AdamW;
//! use nanodist::parallel::data_parallel::AllReduce;
//! use nanodist::step::{train_step, Alone, Batch, Replica, Unobserved};
//!
//! # let text = "the cat sat on the mat. the dog sat on the log. ".repeat(20);
//! # let corpus = Corpus::from_text("cats", &text, None);
//! # let model = ModelConfig { vocab_size: 14, block_size: 8, n_layer: 1, n_head: 2, n_embd: 16 };
//! let (n, b) = (2, 4); // workers, global batch
//! let start = Gpt::new(model.clone(), 1337);
//! let mut cfg = TrainConfig { model, ..TrainConfig::default() };
//! (cfg.parallel.workers, cfg.parallel.batch, cfg.parallel.deterministic) = (n, b, true);
//! let hashes: Vec<String> = std::thread::scope(|s| {
//!     let workers: Vec<_> = group(n)
//!         .into_iter()
//!         .map(|comm| {
//!             let (cfg, start, corpus) = (&cfg, &start, &corpus);
//!             s.spawn(move || {
//!                 let rank = comm.rank();
//!                 let mut replica = Replica::new(rank, start.clone(), AdamW::new(start.layout.len), cfg);
//!                 let mine = rank * b / n..(rank + 1) * b / n; // its shard of the batch
//!                 let batch = Batch { tokens: &corpus.train, seed: 1, step: 0, sequences: mine };
//!                 // the one thing that makes it data parallel: the exchange is an all-reduce
//!                 let mut exchange = AllReduce::new(comm, Algorithm::Ring, start.layout.len, 0, false);
//!                 train_step(&mut replica, cfg, &batch, &mut exchange, &mut Unobserved).unwrap();
//!                 param_hash(&replica.model.params)
//!             })
//!         })
//!         .collect();
//!     workers.into_iter().map(|w| w.join().unwrap()).collect()
//! });
//! assert_eq!(hashes[0], hashes[1]); // the replicas are still identical, bit for bit
//! assert_ne!(hashes[0], param_hash(&start.params)); // and they did move
//! // one worker stepping the whole batch ends on the same bits
//! let mut one = cfg.clone();
//! one.parallel.workers = 1;
//! let mut replica = Replica::new(0, start.clone(), AdamW::new(start.layout.len), &one);
//! let batch = Batch { tokens: &corpus.train, seed: 1, step: 0, sequences: 0..b };
//! train_step(&mut replica, &one, &batch, &mut Alone, &mut Unobserved)?;
//! assert_eq!(param_hash(&replica.model.params), hashes[0]);
//! # Ok::<(), nanodist::Error>(())
//! ```
//!
//! # 6. All of it: `train::train`
//!
//! [`train::train`](crate::train::train) runs this step for every step of a run, with the
//! pieces this page left out: the learning rate's warm-up and decay, gradient buckets that
//! leave for the all-reduce while backward is still running (`--overlap`), evaluation on the
//! validation split, a timeline of every worker, and events for its caller (a row of figures
//! per step, the state to checkpoint) from which the command line writes the run directory.
//! Its worker loop is [`parallel::data_parallel`](crate::parallel::data_parallel), the same
//! code for 1 and N workers.
//!
//! ```
//! use nanodist::config::{ModelConfig, TrainConfig};
//! use nanodist::data::Corpus;
//! use nanodist::train::{self, RunOptions};
//!
//! let text = "the cat sat on the mat. the dog sat on the log. ".repeat(20);
//! let corpus = Corpus::from_text("cats", &text, None);
//! let model = ModelConfig { vocab_size: 14, block_size: 8, n_layer: 1, n_head: 2, n_embd: 16 };
//! let (workers, batch, steps, warmup) = (2, 4, 60, 10);
//! let mut cfg = TrainConfig { model, ..TrainConfig::default() };
//! (cfg.parallel.workers, cfg.parallel.batch) = (workers, batch);
//! (cfg.schedule.steps, cfg.optim.warmup, cfg.optim.lr) = (steps, warmup, 1e-2);
//! let mut rows = 0;
//! let on_event = |event: train::Event<'_>| {
//!     if let train::Event::Step(_) = event { rows += 1 } // a row of figures per step
//!     Ok(())
//! };
//! let run = train::train(&cfg, &corpus, train::initial_state(&cfg), &RunOptions::default(), on_event)?;
//! assert_eq!(rows, 60);
//! assert_eq!(run.summary.workers, 2);
//! assert!(run.summary.val_loss < 1.5, "val loss {}", run.summary.val_loss); // ln V = 2.64
//! # Ok::<(), nanodist::Error>(())
//! ```
//!
//! Next: `cargo run --release` does this at full size on the built-in corpus, and
//! `cargo run --release --example data_parallel` shows 1, 2 and 4 workers ending on the same
//! bits.
