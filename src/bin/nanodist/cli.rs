//! The flags of `nanodist train` and `nanodist sample`, and how they become a
//! [`TrainConfig`].
//!
//! A flag left unset is `None` and leaves the configuration's value alone: the default of
//! `TrainConfig`, or with `--resume` the value the run was started with. So `--resume DIR`
//! alone continues a run exactly as it was configured. (`nanodist allreduce` and
//! `nanodist bench` keep their flags beside their code: `allreduce.rs`, `bench/`.)

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use nanodist::collective::{Algorithm, CrossAlgorithm};
use nanodist::config::{PipeSchedule, TrainConfig, ZeroPrefetch};

/// Training flags. Unset flags take the defaults of `TrainConfig` (or, with
/// `--resume`, the values of the run being resumed).
#[derive(clap::Args, Debug, Default)]
pub struct TrainArgs {
    /// `tales` (built-in generated stories) or a UTF-8 text file.
    #[arg(long, value_name = "PATH|tales")]
    pub data: Option<String>,
    /// Worker threads, each with a full replica [default: cores, as a divisor of the batch].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Total optimizer steps of the run [default: 2000].
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// Global batch in sequences, split among the workers [default: 12].
    #[arg(long, value_name = "B")]
    pub batch: Option<usize>,
    /// Context length in characters [default: 64].
    #[arg(long, value_name = "T")]
    pub block: Option<usize>,
    /// Transformer blocks [default: 4].
    #[arg(long, value_name = "L")]
    pub layers: Option<usize>,
    /// Attention heads [default: 4].
    #[arg(long, value_name = "H")]
    pub heads: Option<usize>,
    /// Channels [default: 128].
    #[arg(long, value_name = "C")]
    pub embd: Option<usize>,
    /// Peak learning rate [default: 1e-3].
    #[arg(long, value_name = "F")]
    pub lr: Option<f32>,
    /// Micro-batches per worker per step (gradient accumulation) [default: 1].
    #[arg(long, value_name = "K")]
    pub accum: Option<usize>,
    /// Pipeline stages P: each worker runs L/P of the blocks; --workers N makes N/P
    /// pipeline replicas [default: 1; with --pp and no --workers, N = P].
    #[arg(long, value_name = "P")]
    pub pp: Option<usize>,
    /// Micro-batches M each pipeline streams through its stages per step (a pipeline's
    /// gradient accumulation; use it instead of --accum with --pp) [default: 1].
    #[arg(long, value_name = "M")]
    pub micro: Option<usize>,
    /// Pipeline schedule: all forwards then all backwards, one forward one backward, or
    /// 1F1B with the weight gradients filling the waits (zero bubble) [default: gpipe].
    #[arg(long, value_parser = schedule_parser())]
    pub schedule: Option<PipeSchedule>,
    /// Seed for weights, batches and the built-in corpus [default: 1337].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// All-reduce algorithm [default: shared].
    #[arg(long, value_parser = algorithm_parser())]
    pub allreduce: Option<Algorithm>,
    /// Under mpirun: how the processes sum across each other, MPI's own MPI_Allreduce
    /// (mpi) or nanodist's ring over MPI messages (ring) [default: mpi].
    #[arg(long, value_name = "mpi|ring")]
    pub mpi_allreduce: Option<CrossAlgorithm>,
    /// Gradient bucket size in KiB; 0 sends all gradients as one bucket [default: 0].
    #[arg(long, value_name = "N")]
    pub bucket_kb: Option<usize>,
    /// Start each bucket's all-reduce while backward is still running.
    #[arg(long)]
    pub overlap: bool,
    /// Bit-identical results for any worker count, algorithm and bucket size.
    #[arg(long)]
    pub deterministic: bool,
    /// Tensor parallelism: split every block's matrices over groups of T workers (T must
    /// divide --workers and the heads) [default: 1, no split].
    #[arg(long, value_name = "T")]
    pub tp: Option<usize>,
    /// Sequence parallelism: with --tp, split the layer norms' and residuals' token rows
    /// over the tensor group too.
    #[arg(long)]
    pub sp: bool,
    /// ZeRO stage: 0 replicated, 1 shards AdamW's state, 2 + gradients, 3 + parameters
    /// [default: 0].
    #[arg(long, value_name = "0|1|2|3")]
    pub zero: Option<u8>,
    /// Where --zero 2 and 3 run each block's gather and reduce-scatter: on a communication
    /// thread per worker (overlapped with compute), or inline on the worker's thread; auto:
    /// the thread only where the workers leave a core free for it [default: auto].
    #[arg(long, value_parser = zero_prefetch_parser())]
    pub zero_prefetch: Option<ZeroPrefetch>,
    /// Validation loss every N steps (0: only at the end) [default: 250].
    #[arg(long, value_name = "N")]
    pub eval_every: Option<usize>,
    /// Checkpoint every N steps (0: only at the end) [default: at every evaluation].
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,
    /// Compare the replicas' parameter hashes every K steps [default: 0, off].
    #[arg(long, value_name = "K")]
    pub check_replicas: Option<usize>,
    /// Run directory [default: runs/DATE-TIME, a new one].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR up to --steps total, writing into DIR (with --workers M: on
    /// another number of workers; with --data PATH: its data file, moved).
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Worker W sleeps MS milliseconds every step.
    #[arg(long, value_name = "W:MS", value_parser = parse_pair, allow_hyphen_values = true)]
    pub straggler: Option<(usize, u64)>,
    /// Worker W panics at step STEP.
    #[arg(long, value_name = "W:STEP", value_parser = parse_pair, allow_hyphen_values = true)]
    pub fault: Option<(usize, u64)>,
    /// No progress bar, sample or table: just the final line.
    #[arg(long)]
    pub quiet: bool,
    /// How often and how much the workers share (sync_args.rs).
    #[command(flatten)]
    pub sync: crate::sync_args::SyncArgs,
}

/// Flags of `nanodist sample`.
#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// The run directory to load (its checkpoint.safetensors).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 500)]
    pub chars: usize,
    /// Softmax temperature (0: always the likeliest char).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Parses an all-reduce algorithm's name with its `FromStr`, and lists the valid names in
/// `--help` and in the one-line error for a bad one, as clap does for its own enums.
pub fn algorithm_parser() -> impl TypedValueParser<Value = Algorithm> {
    let names = Algorithm::ALL.map(|a| PossibleValue::new(a.name()).help(a.summary()));
    PossibleValuesParser::new(names).try_map(|name| name.parse::<Algorithm>())
}

/// Parses a pipeline schedule's name (`gpipe`, `1f1b`, `zb`), listing them in `--help`.
pub fn schedule_parser() -> impl TypedValueParser<Value = PipeSchedule> {
    let names = [
        PossibleValue::new("gpipe").help("all forwards, then all backwards"),
        PossibleValue::new("1f1b").help("one forward, one backward: at most P micro-batches alive"),
        PossibleValue::new("zb")
            .help("1F1B with weight gradients split off to fill the waits (zero bubble)"),
    ];
    PossibleValuesParser::new(names).try_map(|name| name.parse::<PipeSchedule>())
}

/// Parses `--zero-prefetch` (`auto`, `thread`, `inline`), listing the three in `--help`.
pub fn zero_prefetch_parser() -> impl TypedValueParser<Value = ZeroPrefetch> {
    let names = [
        PossibleValue::new("auto").help("a thread where a core is free for it, else inline"),
        PossibleValue::new("thread").help("a communication thread per worker, overlapped"),
        PossibleValue::new("inline").help("on the worker's own thread, where issued"),
    ];
    PossibleValuesParser::new(names).try_map(|name| name.parse::<ZeroPrefetch>())
}

/// `W:N`, as `--straggler` and `--fault` take it.
fn parse_pair(s: &str) -> Result<(usize, u64), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not of the form W:N (e.g. 1:50)"))?;
    let w = a
        .trim()
        .parse()
        .map_err(|_| format!("'{a}' is not a worker number"))?;
    let n = b
        .trim()
        .parse()
        .map_err(|_| format!("'{b}' is not a whole number"))?;
    Ok((w, n))
}

/// The largest divisor of `batch` that is at most the number of cores.
pub fn default_workers(batch: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (1..=cores.min(batch.max(1)))
        .rev()
        .find(|w| batch % w == 0)
        .unwrap_or(1)
}

impl TrainArgs {
    /// Applies the flags the user gave onto `cfg`, leaving the others as they are.
    pub fn apply(&self, cfg: &mut TrainConfig) {
        let set = |dst: &mut usize, v: Option<usize>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        if let Some(d) = &self.data {
            cfg.data = d.clone();
        }
        set(&mut cfg.parallel.workers, self.workers);
        set(&mut cfg.schedule.steps, self.steps);
        set(&mut cfg.parallel.batch, self.batch);
        set(&mut cfg.model.block_size, self.block);
        set(&mut cfg.model.n_layer, self.layers);
        set(&mut cfg.model.n_head, self.heads);
        set(&mut cfg.model.n_embd, self.embd);
        set(&mut cfg.parallel.accum, self.accum);
        if let (Some(pp), None) = (self.pp, self.workers) {
            cfg.parallel.workers = pp; // one pipeline, unless --workers asks for replicas
        }
        set(&mut cfg.parallel.pp, self.pp);
        set(&mut cfg.parallel.micro, self.micro);
        if let Some(s) = self.schedule {
            cfg.parallel.schedule = s;
        }
        set(&mut cfg.parallel.bucket_kb, self.bucket_kb);
        set(&mut cfg.parallel.tp, self.tp);
        set(&mut cfg.schedule.eval_every, self.eval_every);
        set(&mut cfg.schedule.checkpoint_every, self.checkpoint_every);
        set(&mut cfg.schedule.check_replicas, self.check_replicas);
        if let Some(lr) = self.lr {
            cfg.optim.lr = lr;
            cfg.optim.min_lr = lr / 10.0;
        }
        if let Some(s) = self.seed {
            cfg.seed = s;
        }
        if let Some(a) = self.allreduce {
            cfg.parallel.allreduce = a;
        }
        if let Some(a) = self.mpi_allreduce {
            cfg.parallel.mpi_allreduce = a;
        }
        if let Some(z) = self.zero {
            cfg.parallel.zero = z;
        }
        if let Some(z) = self.zero_prefetch {
            cfg.parallel.zero_prefetch = z;
        }
        cfg.parallel.overlap |= self.overlap;
        cfg.parallel.deterministic |= self.deterministic;
        cfg.parallel.sp |= self.sp;
        cfg.faults.straggler = self.straggler.or(cfg.faults.straggler);
        cfg.faults.fault = self
            .fault
            .map(|(w, s)| (w, s as usize))
            .or(cfg.faults.fault);
        self.sync.apply(cfg);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        train: TrainArgs,
    }

    /// `cfg` after the flags of `line` (without the program name) are applied onto the defaults.
    fn applied(line: &[&str]) -> serde_json::Value {
        let flags = Flags::try_parse_from(std::iter::once("nanodist").chain(line.iter().copied()))
            .expect("the flags parse");
        let mut cfg = TrainConfig::default();
        flags.train.apply(&mut cfg);
        serde_json::to_value(&cfg).unwrap()
    }

    #[test]
    fn unset_flags_leave_the_config_alone() {
        let defaults = serde_json::to_value(TrainConfig::default()).unwrap();
        assert_eq!(applied(&[]), defaults);
    }

    #[test]
    fn each_flag_sets_its_field_and_no_other() {
        let mut want = serde_json::to_value(TrainConfig::default()).unwrap();
        want["steps"] = 7.into();
        want["workers"] = 3.into();
        want["model"]["n_head"] = 2.into();
        want["lr"] = 0.01f32.into();
        want["min_lr"] = (0.01f32 / 10.0).into();
        want["overlap"] = true.into();
        want["straggler"] = serde_json::json!([1, 50]);
        let got = applied(&[
            "--steps",
            "7",
            "--workers",
            "3",
            "--heads",
            "2",
            "--lr",
            "0.01",
            "--overlap",
            "--straggler",
            "1:50",
        ]);
        assert_eq!(got, want);
    }
}
