//! An asynchronous parameter server with a straggler: without a bound the fast worker runs
//! away; with `--staleness 1` it waits whenever it gets 2 steps ahead.
//!
//! ```text
//! cargo run --release --example parameter_server
//!
//! 2 workers push gradients to one server; worker 1 sleeps 150 ms every step.
//! staleness bound 1: worker 0 may start step k only when worker 1 has pushed step k - 2.
//!   40 updates applied; staleness of the gradients: 0: 21, 1: 18, 2: 1 (mean 0.50, max 2)
//!   worker 0 ran at most 1 step(s) ahead; it waited 170 ms a step on average
//! no bound (1000): worker 0 pushes whenever it is ready.
//!   40 updates applied; staleness of the gradients: 0: 27, 1: 6, 2: 2, 3: 4, 4: 1 (mean 0.65, max 4)
//!   worker 0 ran at most 13 step(s) ahead; it waited 0 ms a step on average
//! ```
//! (one run on a busy 2-core VM: thread timing decides the exact counts.)

use nanodist::config::TrainConfig;
use nanodist::train::{self, RunOptions};
use nanodist::{data, Error};

fn main() -> Result<(), Error> {
    let corpus = data::load("tales", 1337)?;
    let mut cfg = TrainConfig::default();
    cfg.model.vocab_size = corpus.vocab.len();
    (cfg.model.n_layer, cfg.model.n_embd) = (2, 64);
    (
        cfg.parallel.workers,
        cfg.schedule.steps,
        cfg.schedule.eval_every,
    ) = (2, 20, 0);
    cfg.parallel.asynchronous = true;
    cfg.faults.straggler = Some((1, 150));
    println!("2 workers push gradients to one server; worker 1 sleeps 150 ms every step.");
    for bound in [1, 1000] {
        cfg.parallel.staleness = bound;
        if bound == 1 {
            println!("staleness bound 1: worker 0 may start step k only when worker 1 has pushed step k - 2.");
        } else {
            println!("no bound ({bound}): worker 0 pushes whenever it is ready.");
        }
        let opts = RunOptions {
            final_eval: false,
            ..RunOptions::default()
        };
        let s = train::train(&cfg, &corpus, train::initial_state(&cfg), &opts, |_| Ok(()))?.summary;
        let st = s.staleness.expect("an async run reports staleness");
        let hist: Vec<String> = (st.histogram.iter().enumerate())
            .filter(|(_, &c)| c > 0)
            .map(|(k, c)| format!("{k}: {c}"))
            .collect();
        println!(
            "  {} updates applied; staleness of the gradients: {} (mean {:.2}, max {})",
            st.updates,
            hist.join(", "),
            st.mean,
            st.max
        );
        println!(
            "  worker 0 ran at most {} step(s) ahead; it waited {:.0} ms a step on average",
            st.ahead_max, s.per_worker_ms[0][2]
        );
    }
    Ok(())
}
