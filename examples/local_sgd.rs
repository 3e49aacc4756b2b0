//! Local SGD / DiLoCo: two workers that meet only every H steps, against two that meet
//! every step, on a slow link.
//!
//! ```text
//! cargo run --release --example local_sgd
//!
//! 2 workers, link 50:0.125 (1 Gb/s), 60 steps of a 0.80M-parameter GPT.
//! synchronous: all-reduce the gradients after every step.
//!   val loss 2.59 after 60 steps, 25.2 s of steps, 385 MB sent
//! DiLoCo, H = 8: each worker takes 8 AdamW steps on its own shard, then they average how
//! far they moved and the outer Nesterov step (lr 0.7, momentum 0.9) moves the shared weights.
//!   val loss 2.57 after 60 steps, 13.9 s of steps, 51 MB sent (1/7.5 of the bytes)
//! ```
//! (one run on a busy 2-core VM: times vary, the losses and bytes do not.)

use nanodist::collective::Link;
use nanodist::config::TrainConfig;
use nanodist::parallel::sync_options::Outer;
use nanodist::train::{self, RunOptions};
use nanodist::{data, Error};

fn main() -> Result<(), Error> {
    let corpus = data::load("tales", 1337)?;
    let mut cfg = TrainConfig::default();
    cfg.model.vocab_size = corpus.vocab.len();
    (
        cfg.parallel.workers,
        cfg.schedule.steps,
        cfg.schedule.eval_every,
    ) = (2, 60, 0);
    cfg.parallel.link = Some("50:0.125".parse::<Link>().expect("a valid link"));
    println!(
        "2 workers, link 50:0.125 (1 Gb/s), {} steps of a {:.2}M-parameter GPT.",
        cfg.schedule.steps,
        cfg.model.num_params() as f64 / 1e6
    );
    println!("synchronous: all-reduce the gradients after every step.");
    let sync = report(&cfg, &corpus, None)?;
    (cfg.parallel.sync_every, cfg.parallel.outer) = (8, Outer::Nesterov);
    println!(
        "DiLoCo, H = 8: each worker takes 8 AdamW steps on its own shard, then they average how"
    );
    println!(
        "far they moved and the outer Nesterov step (lr {}, momentum {}) moves the shared weights.",
        cfg.parallel.outer_lr, cfg.parallel.outer_momentum
    );
    report(&cfg, &corpus, Some(sync))?;
    Ok(())
}

/// Trains `cfg`, prints its line; returns the bytes it sent.
fn report(cfg: &TrainConfig, corpus: &data::Corpus, sync: Option<u64>) -> Result<u64, Error> {
    let out = train::train(
        cfg,
        corpus,
        train::initial_state(cfg),
        &RunOptions::default(),
        |_| Ok(()),
    )?;
    let s = &out.summary;
    let wall: f64 = out.rows.iter().map(|r| r.step_ms).sum::<f64>() / 1e3;
    let ratio = sync.map_or(String::new(), |b| {
        format!(" (1/{:.1} of the bytes)", b as f64 / s.bytes_sent as f64)
    });
    println!(
        "  val loss {:.2} after {} steps, {wall:.1} s of steps, {:.0} MB sent{ratio}",
        s.val_loss,
        s.steps,
        s.bytes_sent as f64 / 1e6
    );
    Ok(s.bytes_sent)
}
