//! ZeRO in one screen: the same model trained at stages 0, 1, 2 and 3 on 2 workers, who
//! holds what at each, and the same weights at the end.
//!
//! ```text
//! cargo run --release --example zero
//! ```
//! Each stage shards one more kind of state among the workers (see `parallel::zero`); in
//! deterministic mode every stage ends with the same param_hash, because the shards start at
//! the gradient norm's fixed chunks and AdamW is element-wise.

use nanodist::config::TrainConfig;
use nanodist::parallel::zero::shards;
use nanodist::train::{self, RunOptions};
use nanodist::{data, Error};

fn main() -> Result<(), Error> {
    let corpus = data::load("tales", 1337)?;
    let mut base = TrainConfig::default();
    base.model.vocab_size = corpus.vocab.len();
    // 8 blocks: the two blocks a stage-2 or stage-3 worker holds whole while they are in
    // flight are a quarter of the model (with the default 4 they would be half)
    base.model.n_layer = 8;
    (base.schedule.steps, base.schedule.eval_every) = (10, 0);
    (base.parallel.workers, base.parallel.deterministic) = (2, true);
    let p = base.model.num_params();
    let s = shards(p, 2);
    println!(
        "{:.2}M parameters on 2 workers; the shards: worker 0 holds [{}, {}), worker 1 [{}, {}).\n",
        p as f64 / 1e6,
        s[0].start,
        s[0].end,
        s[1].start,
        s[1].end
    );
    let says = [
        "every worker holds everything: weights, gradients, both AdamW moments (16 B/param)",
        "the gradient is reduce-scattered: each worker updates its half with its half of the \
         moments, then the weights are all-gathered",
        "each block's gradient is reduce-scattered as soon as backward is done with it: a \
         worker keeps its half, and whole gradients only for the two blocks in flight",
        "each worker keeps half the weights: every block's are gathered before its forward \
         (the next one prefetched) and again before its backward, then dropped",
    ];
    let mut hashes = Vec::new();
    for zero in 0..=3u8 {
        let mut cfg = base.clone();
        cfg.parallel.zero = zero;
        let opts = RunOptions {
            final_eval: false,
            trace_steps: 0,
            ..RunOptions::default()
        };
        let run = |cfg: &TrainConfig| {
            train::train(cfg, &corpus, train::initial_state(cfg), &opts, |_| Ok(()))
        };
        // the default mode's buffers are the memory figures; deterministic mode (which keeps
        // the whole exact sum at every stage) gives the bits to compare
        let s = run(&{
            let mut c = cfg.clone();
            c.parallel.deterministic = false;
            c
        })?
        .summary;
        let hash = run(&cfg)?.summary.param_hash;
        println!("--zero {zero}: {}", says[zero as usize]);
        if let Some(m) = &s.memory {
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            let (h, f) = (&m.measured, &m.predicted);
            println!(
                "  per worker: params {:.2} MiB, grads {:.2}, AdamW {:.2} (formula {:.2}, {:.2}, {:.2})",
                mib(h.params),
                mib(h.grads),
                mib(h.optimizer),
                mib(f.params),
                mib(f.grads),
                mib(f.optimizer)
            );
        }
        println!(
            "  loss {:.3}, {:.0} tokens/s; deterministic: param_hash {hash}\n",
            s.train_loss, s.tokens_per_s
        );
        hashes.push(hash);
    }
    let same = hashes.iter().all(|h| h == &hashes[0]);
    println!(
        "{}",
        if same {
            "All four stages ended with the same param_hash: the same model, each stage with less state per worker."
        } else {
            "The stages' param_hashes differ: that is a bug (deterministic mode promises the same bits)."
        }
    );
    Ok(())
}
