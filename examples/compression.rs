//! Gradient compression with error feedback: top-k at 1%, int8 and PowerSGD against the
//! full gradient, after the same number of steps.
//!
//! ```text
//! cargo run --release --example compression
//!
//! 2 workers, 60 steps of a 0.80M-parameter GPT; each worker's gradient is 3.2 MB.
//! full gradient (ring all-reduce)               val loss 2.59   385.5 MB sent
//! topk:0.01  send the 1% largest entries of my AdamW update; keep the rest for later
//!                                               val loss 2.73   7.7 MB sent  (1/50.0)
//! topk-grad:0.01 send the 1% largest entries of my gradient; one AdamW on their sum
//!                                               val loss 3.17   7.7 MB sent  (1/50.0)
//! int8       send every entry as one byte, a scale per 1024
//!                                               val loss 2.59   97.1 MB sent  (1/4.0)
//! powersgd:4 send each matrix as a rank-4 product P Q^T
//!                                               val loss 2.68   17.0 MB sent  (1/22.7)
//! ```
//! (the bytes are the same on every machine; the losses within float rounding of the sums.)

use nanodist::config::TrainConfig;
use nanodist::parallel::sync_options::Compression;
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
    println!(
        "2 workers, {} steps of a {:.2}M-parameter GPT; each worker's gradient is {:.1} MB.",
        cfg.schedule.steps,
        cfg.model.num_params() as f64 / 1e6,
        4.0 * cfg.model.num_params() as f64 / 1e6
    );
    print!("full gradient (ring all-reduce)              ");
    let full = run(&cfg, &corpus, None)?;
    for (codec, what) in [
        (
            Compression::TopK(0.01),
            "send the 1% largest entries of my AdamW update; keep the rest for later",
        ),
        (
            Compression::TopKGrad(0.01),
            "send the 1% largest entries of my gradient; one AdamW on their sum",
        ),
        (
            Compression::Int8,
            "send every entry as one byte, a scale per 1024",
        ),
        (
            Compression::PowerSgd(4),
            "send each matrix as a rank-4 product P Q^T",
        ),
    ] {
        println!("{:<10} {what}", codec.to_string());
        print!("                                             ");
        cfg.parallel.compress = Some(codec);
        run(&cfg, &corpus, Some(full))?;
    }
    Ok(())
}

/// Trains `cfg` and prints its loss and bytes; returns the bytes.
fn run(cfg: &TrainConfig, corpus: &data::Corpus, full: Option<u64>) -> Result<u64, Error> {
    let opts = RunOptions::default();
    let s = train::train(cfg, corpus, train::initial_state(cfg), &opts, |_| Ok(()))?.summary;
    let ratio = full.map_or(String::new(), |b| {
        format!("  (1/{:.1})", b as f64 / s.bytes_sent as f64)
    });
    println!(
        " val loss {:.2}   {:.1} MB sent{ratio}",
        s.val_loss,
        s.bytes_sent as f64 / 1e6
    );
    Ok(s.bytes_sent)
}
