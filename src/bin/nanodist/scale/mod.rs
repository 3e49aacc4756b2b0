//! `nanodist scale`: the cost model of `nanodist::scale` from the command line, and its
//! calibration on this machine.
//!
//! ```text
//!   nanodist scale [--model gpt3 --gpu a100 --gpus 1024 --tp 8 --pp 8 ...]
//!       flags -> ScaleConfig -> predict -> report (or --json, or --out DIR: the pictures)
//!
//!   nanodist scale --calibrate [--workers 1,2] [--steps N] [--rounds R] [--only A,B]
//!       replicas, trained:        model FLOPs / step time   = FLOP/s per core   (the "GPU",
//!                                 one rate per shape the workers multiply)
//!       all-reduce, timed:        a + bytes * b per worker count and algorithm  (the "link")
//!       threads meeting:          seconds per synchronisation point             (sync_s)
//!       hand-offs to a thread:    seconds per hand-off on a busy core           (handoff_s)
//!       each configuration:       predict(calibrated_cpu(...))  vs  train it    -> ratio
//! ```
//!
//! Here: the flags and the prediction. In `calibrate.rs`: the calibration.

use std::path::{Path, PathBuf};

use nanodist::scale::{
    goodput_svg, memory_svg, predict, report, step_svg, Hardware, ModelShape, PipeSchedule,
    Prediction, ScaleConfig,
};
use nanodist::Error;

mod calibrate;

/// Flags of `nanodist scale`. Defaults: GPT-3 175B on 1,024 A100s, Megatron-LM's layout.
#[derive(clap::Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Model preset: tiny, gpt2, gpt2-xl, gpt3 (= gpt3-175b). The shape flags below change it.
    #[arg(long, default_value = "gpt3")]
    pub model: String,
    /// Transformer blocks (l).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Attention heads (a).
    #[arg(long)]
    pub heads: Option<usize>,
    /// Hidden size (h).
    #[arg(long)]
    pub embd: Option<usize>,
    /// Sequence length (s).
    #[arg(long)]
    pub block: Option<usize>,
    /// Vocabulary (V).
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Accelerator: a100 or h100.
    #[arg(long, default_value = "a100")]
    pub gpu: String,
    /// GPUs in the job: DP x PP x TP.
    #[arg(long, default_value_t = 1024)]
    pub gpus: usize,
    /// GPUs per node, sharing the fast link.
    #[arg(long, default_value_t = 8)]
    pub gpus_per_node: usize,
    /// Tensor-parallel degree.
    #[arg(long, default_value_t = 8)]
    pub tp: usize,
    /// Pipeline stages.
    #[arg(long, default_value_t = 8)]
    pub pp: usize,
    /// ZeRO stage over the data-parallel group: 0, 1, 2 or 3.
    #[arg(long, default_value_t = 0)]
    pub zero: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 1)]
    pub micro_batch: usize,
    /// Global batch in sequences per optimizer step.
    #[arg(long, default_value_t = 1536)]
    pub batch: usize,
    /// Full activation recomputation: on or off (`--recompute` alone: on).
    #[arg(long, default_value = "on", num_args = 0..=1, default_missing_value = "on",
          value_parser = ["on", "off"])]
    pub recompute: String,
    /// Pipeline schedule: 1f1b, zb (zero bubble: weight gradients fill the waits, up to
    /// 2P - 1 micro-batches in flight) or gpipe (1F1B's time, all micro-batches in flight).
    #[arg(long, default_value = "1f1b", value_parser = crate::cli::schedule_parser())]
    pub schedule: PipeSchedule,
    /// Tokens to train on, for the training time (e.g. 300e9).
    #[arg(long, default_value_t = 300e9)]
    pub tokens: f64,
    /// Print the prediction as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write step.svg, memory.svg, goodput.svg and prediction.json here (with --calibrate:
    /// calibration.json and calibration.md); an existing non-empty directory is refused.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Measure this machine, predict nanodist's own runs with the same model, run them, and
    /// compare: the model flags above are then not used.
    #[arg(long)]
    pub calibrate: bool,
    /// With --calibrate: worker counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
    /// With --calibrate: steps per training run (the median step is compared).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// With --calibrate: interleaved rounds; each configuration reports the median of its
    /// per-round predicted/measured and its fastest round.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// With --calibrate: only the configurations whose flags contain one of these,
    /// comma-separated (e.g. `--only overlap,"pp 2"`); all when not given.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// Runs `nanodist scale`.
pub fn run(args: &ScaleArgs) -> Result<(), Error> {
    if let Some(dir) = &args.out {
        check_out(dir)?;
    }
    if args.calibrate {
        return calibrate::run(
            &args.workers,
            args.steps,
            args.rounds,
            &args.only,
            args.out.as_deref(),
        );
    }
    let cfg = config(args)?;
    let p = predict(&cfg).map_err(|e| Error::Config(e.0))?;
    if args.json {
        println!("{}", serde_json::to_string(&p).expect("serialises"));
    } else {
        println!("{}", report(&p));
    }
    if let Some(dir) = &args.out {
        crate::rundir::create_out_dir(dir)?;
        write(dir, "step.svg", &step_svg(&p))?;
        write(dir, "memory.svg", &memory_svg(&memory_rows(&cfg, &p)))?;
        write(dir, "goodput.svg", &goodput_svg(&p))?;
        let json = serde_json::to_string_pretty(&p).expect("serialises");
        write(dir, "prediction.json", &json)?;
        if !args.json {
            println!(
                "wrote step.svg, memory.svg, goodput.svg and prediction.json to {}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// An `--out` that already holds something is refused before any work is done.
fn check_out(dir: &Path) -> Result<(), Error> {
    let non_empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if non_empty || dir.is_file() {
        return Err(Error::Config(format!(
            "{} already exists and is not an empty directory: choose another --out",
            dir.display()
        )));
    }
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), Error> {
    nanodist::checkpoint::write_atomic(&dir.join(name), text.as_bytes())
}

/// The flags as a [`ScaleConfig`]; a flag out of range is a one-line error naming it.
fn config(args: &ScaleArgs) -> Result<ScaleConfig, Error> {
    let bad = |s: String| Err(Error::Config(s));
    let Some(mut model) = ModelShape::preset(&args.model) else {
        return bad(format!(
            "--model {} is not a preset: use tiny, gpt2, gpt2-xl or gpt3 (or set --layers, --heads, --embd, --block, --vocab)",
            args.model
        ));
    };
    let Some(hardware) = Hardware::preset(&args.gpu) else {
        return bad(format!("--gpu {} is not known: use a100 or h100", args.gpu));
    };
    let shape = [
        ("--layers", args.layers, &mut model.layers),
        ("--heads", args.heads, &mut model.heads),
        ("--embd", args.embd, &mut model.hidden),
        ("--block", args.block, &mut model.seq),
        ("--vocab", args.vocab, &mut model.vocab),
    ];
    let mut custom = false;
    for (flag, value, field) in shape {
        if let Some(v) = value {
            if v == 0 {
                return bad(format!("{flag} must be at least 1"));
            }
            (*field, custom) = (v, true);
        }
    }
    if custom {
        model.name = "custom GPT".into();
    }
    if model.hidden % model.heads != 0 {
        return bad(format!(
            "--embd {} does not split into {} heads: pick --embd a multiple of --heads",
            model.hidden, model.heads
        ));
    }
    if !(args.tokens.is_finite() && args.tokens > 0.0) {
        return bad(format!(
            "--tokens {} must be a positive number, e.g. 300e9",
            args.tokens
        ));
    }
    Ok(ScaleConfig {
        model,
        hardware,
        gpus: args.gpus,
        gpus_per_node: args.gpus_per_node,
        tp: args.tp,
        pp: args.pp,
        zero: args.zero,
        micro_batch: args.micro_batch,
        batch: args.batch,
        recompute: args.recompute == "on",
        schedule: args.schedule,
        tokens: args.tokens,
        ..ScaleConfig::default()
    })
}

/// The layout asked for beside the simplest ones on the same GPUs (pure data parallelism,
/// with and without ZeRO-3), where the batch allows them: what the asked layout saves.
fn memory_rows<'a>(cfg: &ScaleConfig, p: &'a Prediction) -> Vec<(&'static str, &'a Prediction)> {
    // leaked: three small predictions in a short-lived process, so the rows can borrow them
    let dp = |zero| {
        let c = ScaleConfig {
            tp: 1,
            pp: 1,
            zero,
            micro_batch: 1,
            ..cfg.clone()
        };
        predict(&c).ok().map(|p| &*Box::leak(Box::new(p)))
    };
    let mut rows = Vec::new();
    if let Some(one) = dp(0) {
        rows.push(("data parallel only", one));
    }
    if let Some(z3) = dp(3) {
        rows.push(("data parallel, ZeRO-3", z3));
    }
    rows.push(("this layout", p));
    rows
}
