//! Pipeline parallelism in one screen: the three schedules drawn, then a real 2-stage
//! pipeline trained a few steps, with each stage's forwards, backwards (and, under zb,
//! weight gradients) printed in the order they ran, and its weights compared with one
//! worker's.
//!
//! ```text
//! cargo run --release --example pipeline
//! ```
//!
//! It prints the textbook pictures of GPipe, 1F1B and zero bubble (`schedule::draw`), then
//! for each schedule a run of `--workers 2 --pp 2 --micro 4 --deterministic`: every stage's
//! actions of one step, with their start and length in ms, the measured bubble next to the
//! theory, each stage's peak activation memory, and the param_hash, which is the one
//! worker's (`--accum 4`): a pipeline computes the same step, split by layers.

use nanodist::config::{PipeSchedule, TrainConfig};
use nanodist::parallel::pipeline::{self, schedule};
use nanodist::trace::Phase;
use nanodist::train::{self, RunOptions};
use nanodist::{data, Error};

const ALL: [PipeSchedule; 3] = PipeSchedule::ALL;

fn main() -> Result<(), Error> {
    for s in ALL {
        println!(
            "{} with P = 4 stages, M = 6 micro-batches (unit time, '.' = idle):",
            s.name()
        );
        print!("{}", schedule::draw(s, 4, 6));
        println!();
    }
    let corpus = data::load("tales", 1337)?;
    let mut base = TrainConfig::default();
    base.model.vocab_size = corpus.vocab.len();
    (base.schedule.steps, base.schedule.eval_every) = (4, 0);
    base.parallel.deterministic = true;
    let opts = RunOptions {
        final_eval: false,
        ..RunOptions::default()
    };
    let mut one = base.clone();
    one.parallel.accum = 4;
    let reference = train::train(&one, &corpus, train::initial_state(&one), &opts, |_| Ok(()))?;
    println!(
        "one worker, --accum 4: param_hash {}",
        reference.summary.param_hash
    );
    for s in ALL {
        let mut cfg = base.clone();
        (cfg.parallel.workers, cfg.parallel.pp, cfg.parallel.micro) = (2, 2, 4);
        cfg.parallel.schedule = s;
        let out = train::train(&cfg, &corpus, train::initial_state(&cfg), &opts, |_| Ok(()))?;
        println!(
            "\n--workers 2 --pp 2 --micro 4 --schedule {} (step 2, ms from the step's start):",
            s.name()
        );
        let t0 = (out.tracks.iter().flatten())
            .filter(|sp| sp.step == 2 && sp.phase == Phase::Pipeline)
            .map(|sp| sp.start_us)
            .fold(f64::INFINITY, f64::min);
        for (stage, spans) in out.tracks.iter().enumerate() {
            let acts: Vec<String> = (spans.iter())
                .filter(|sp| sp.step == 2)
                .filter_map(|sp| {
                    let label = match sp.phase {
                        Phase::StageForward(m) => format!("F{m}"),
                        Phase::StageBackward(m) => format!("B{m}"),
                        Phase::StageWeight(m) => format!("W{m}"),
                        _ => return None,
                    };
                    Some(format!(
                        "{label}@{:.0}+{:.0}",
                        (sp.start_us - t0) / 1e3,
                        sp.dur_us / 1e3
                    ))
                })
                .collect();
            println!("  stage {stage}: {}", acts.join("  "));
        }
        let f = pipeline::figures(&cfg, &out.tracks);
        let mib: Vec<String> = (f.peak_activation_bytes.iter())
            .map(|b| format!("{:.1} MiB", *b as f64 / (1 << 20) as f64))
            .collect();
        println!(
            "  bubble {:.2} measured, {:.2} in theory; peak activations per stage: {}",
            f.bubble_measured.unwrap_or(f64::NAN),
            f.bubble_theory,
            mib.join(", ")
        );
        let same = out.summary.param_hash == reference.summary.param_hash;
        println!(
            "  param_hash {} ({})",
            out.summary.param_hash,
            if same {
                "the one worker's"
            } else {
                "DIFFERENT from the one worker's"
            }
        );
    }
    Ok(())
}
