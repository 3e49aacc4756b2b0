//! Model and training configuration, with documented defaults.
//!
//! Two plain structs, no builder: [`ModelConfig`] fixes the shapes of the network,
//! [`TrainConfig`] everything about how it is trained. The defaults are nanoGPT's
//! `shakespeare_char` CPU configuration (L=4, H=4, C=128, T=64, B=12, AdamW lr 1e-3).
//! Both serialise to JSON: a run directory's `config.json` is one [`TrainConfig`].

use serde::{Deserialize, Serialize};

use crate::collective::{Algorithm, CrossAlgorithm, Link};
use crate::error::Error;
use crate::parallel::sync_options::{Compression, Outer};

/// The shape of the GPT: everything needed to lay out its parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// V: number of distinct tokens (characters of the corpus).
    pub vocab_size: usize,
    /// T: the longest context the model sees (positions in `wpe`).
    pub block_size: usize,
    /// L: number of transformer blocks.
    pub n_layer: usize,
    /// H: attention heads per block; must divide `n_embd`.
    pub n_head: usize,
    /// C: channels of the residual stream.
    pub n_embd: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            vocab_size: 65,
            block_size: 64,
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
        }
    }
}

impl ModelConfig {
    /// Channels per head, C / H.
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Number of parameters (the head is tied to `wte` and not counted twice).
    ///
    /// ```
    /// let cfg = nanodist::config::ModelConfig::default();
    /// assert_eq!(cfg.num_params(), 804_096);
    /// ```
    pub fn num_params(&self) -> usize {
        let (v, t, c) = (self.vocab_size, self.block_size, self.n_embd);
        // per block: ln_1 (C) + c_attn (3C*C) + c_proj (C*C) + ln_2 (C) + c_fc (4C*C) + mlp.c_proj (C*4C)
        let block = 2 * c + 12 * c * c;
        v * c + t * c + self.n_layer * block + c
    }

    /// Model FLOPs of one training step (forward + backward) for `tokens` tokens.
    ///
    /// The usual 6 * params * tokens for the matrix products (2 forward, 4 backward),
    /// with the embedding tables counted through the tied head's V*C product only,
    /// plus attention's two T*T products per layer (again x3 for the backward).
    pub fn flops_per_step(&self, tokens: usize) -> f64 {
        let (v, t, c, l) = (
            self.vocab_size as f64,
            self.block_size as f64,
            self.n_embd as f64,
            self.n_layer as f64,
        );
        let matmul_params = l * 12.0 * c * c + v * c;
        let attention = l * 2.0 * 2.0 * t * c / 2.0; // causal: half of the T*T scores, per token
        (6.0 * matmul_params + 3.0 * attention) * tokens as f64
    }

    /// Checks the shape; every problem comes back as a one-line error.
    pub fn validate(&self) -> Result<(), Error> {
        let sizes = [
            ("--block", self.block_size),
            ("--layers", self.n_layer),
            ("--heads", self.n_head),
            ("--embd", self.n_embd),
        ];
        for (flag, value) in sizes {
            if value == 0 {
                return Err(Error::Config(format!("{flag} must be at least 1")));
            }
        }
        for (flag, value, max) in [
            ("--block", self.block_size, 1 << 16),
            ("--layers", self.n_layer, 1 << 12),
            ("--embd", self.n_embd, 1 << 16),
        ] {
            if value > max {
                return Err(Error::Config(format!(
                    "{flag} {value} is larger than nanodist supports ({max}): use a smaller value"
                )));
            }
        }
        if self.vocab_size == 0 {
            return Err(Error::Config(
                "the vocabulary is empty (a corpus with no chars): train on a non-empty text file"
                    .into(),
            ));
        }
        if self.n_embd % self.n_head != 0 {
            return Err(Error::Config(format!(
                "--heads {} does not divide --embd {}: pick heads that divide the channels (e.g. --heads {})",
                self.n_head,
                self.n_embd,
                largest_divisor_at_most(self.n_embd, self.n_head)
            )));
        }
        Ok(())
    }
}

fn largest_divisor_at_most(n: usize, k: usize) -> usize {
    (1..=k.min(n)).rev().find(|d| n % d == 0).unwrap_or(1)
}

/// Everything about one training run. `config.json` in a run directory is this struct.
///
/// It is made of one part per concern, each a plain struct with its own defaults: the
/// model's shape, the optimizer, the parallel layout, the schedule of the run, the faults
/// injected into it. In JSON the parts are flattened (`#[serde(flatten)]`), so
/// `config.json` is one flat object:
///
/// ```text
///   {"data": "tales", "model": {...}, "seed": 1337,
///    "lr": .., "min_lr": .., "warmup": .., "weight_decay": .., "beta1": .., ..   optim
///    "workers": .., "batch": .., "accum": .., "allreduce": .., ..               parallel
///    "steps": .., "eval_every": .., "checkpoint_every": .., ..                  schedule
///    "straggler": null, "fault": null}                                          faults
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// `tales` (the built-in generated corpus) or the path of a UTF-8 text file.
    pub data: String,
    /// The model's shape. `vocab_size` is filled in from the corpus.
    pub model: ModelConfig,
    /// Seeds the initial weights, the batch sampler and the built-in corpus.
    pub seed: u64,
    /// AdamW, gradient clipping and the learning-rate schedule.
    #[serde(flatten)]
    pub optim: OptimConfig,
    /// How the global batch is split among workers, and how they sum their gradients.
    #[serde(flatten)]
    pub parallel: ParallelConfig,
    /// How long the run is, and what happens between its steps.
    #[serde(flatten)]
    pub schedule: ScheduleConfig,
    /// Slow or failing workers, on purpose.
    #[serde(flatten)]
    pub faults: FaultConfig,
}

/// The optimizer: AdamW's hyperparameters, gradient clipping, and the learning-rate
/// schedule (linear warm-up, then cosine decay to `min_lr` at the run's last step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Peak learning rate, reached after `warmup` steps.
    pub lr: f32,
    /// The learning rate at the end of the cosine decay (nanoGPT: lr / 10).
    pub min_lr: f32,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// AdamW decoupled weight decay, applied to matrices only.
    pub weight_decay: f32,
    /// AdamW first-moment decay.
    pub beta1: f32,
    /// AdamW second-moment decay.
    pub beta2: f32,
    /// AdamW epsilon.
    pub eps: f32,
    /// Clip the global gradient norm to this value (0 turns clipping off).
    pub grad_clip: f32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 100,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            grad_clip: 1.0,
        }
    }
}

/// The parallel layout: N workers share a global batch of B sequences, each in K
/// micro-batches, and sum their gradients with an all-reduce.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParallelConfig {
    /// N: worker threads, each with a full replica of the model.
    pub workers: usize,
    /// B: the GLOBAL batch in sequences per optimizer step, for any number of workers.
    pub batch: usize,
    /// K: micro-batches per worker per step; gradients are synchronised after the last.
    pub accum: usize,
    /// Which all-reduce algorithm synchronises the gradients.
    pub allreduce: Algorithm,
    /// S: gradients go out in buckets of this many KiB (0: one bucket for everything).
    pub bucket_kb: usize,
    /// Start each bucket's all-reduce while backward is still running. (Ignored in
    /// deterministic mode, whose sum is complete only after the last sequence.)
    pub overlap: bool,
    /// Bit-identical final parameters for any worker count, algorithm and bucket size.
    pub deterministic: bool,
    /// TP: workers per tensor group, each holding 1/TP of every block's matrices (H/TP
    /// heads, 4C/TP hidden units); data parallelism runs over the N/TP groups. 1: no split.
    #[serde(default = "one")]
    pub tp: usize,
    /// Sequence parallelism: outside the split matrices (layer norms, residuals, the loss)
    /// each worker of a tensor group keeps only its 1/TP of the token rows.
    #[serde(default)]
    pub sp: bool,
    /// P: pipeline stages, each a contiguous range of blocks (1: no pipeline). The workers
    /// form DP = N / P replicas of a P-stage pipeline (`parallel::pipeline`).
    #[serde(default = "one")]
    pub pp: usize,
    /// M: micro-batches each pipeline replica streams through its stages per step. A
    /// pipeline's micro-batches are its gradient accumulation: `--pp P --micro M` computes
    /// the gradient one worker computes with `--accum M` (so `--accum` stays 1 with `--pp`).
    #[serde(default = "one")]
    pub micro: usize,
    /// The order in which each stage runs its micro-batches' forwards and backwards.
    #[serde(default)]
    pub schedule: PipeSchedule,
    /// R: processes (MPI ranks) the workers are spread over, `workers / processes` threads
    /// each; 1 without `mpirun` (docs/beyond-one-machine.md).
    #[serde(default = "one")]
    pub processes: usize,
    /// How the processes sum across each other (`--mpi-allreduce`): MPI's own
    /// `MPI_Allreduce`, or nanodist's ring over MPI messages.
    #[serde(default)]
    pub mpi_allreduce: CrossAlgorithm,
    /// ZeRO stage: 0 replicates everything; 1 shards AdamW's moments, 2 the gradients too,
    /// 3 the parameters too (see `parallel::zero`). `overlap` is stage 0's; stages 2 and 3
    /// reduce-scatter block by block during backward whatever it says.
    #[serde(default)]
    pub zero: u8,
    /// Where stages 2 and 3 run their per-block gathers and reduce-scatters: on a
    /// communication thread of each worker, or inline on the worker's own thread (stages
    /// 0 and 1 have none: they ignore it, as stages 2 and 3 ignore `overlap`). Left out of
    /// config.json when `auto`.
    #[serde(default, skip_serializing_if = "ZeroPrefetch::is_auto")]
    pub zero_prefetch: ZeroPrefetch,
    /// The simulated network between workers (`--link ALPHA_US:GBPS`); `None`: memory speed.
    #[serde(default)]
    pub link: Option<Link>,
    /// H: local SGD's optimizer steps between synchronisations (1: every step, synchronous).
    #[serde(default = "one")]
    pub sync_every: usize,
    /// Local SGD's outer optimizer (DiLoCo's: Nesterov).
    #[serde(default)]
    pub outer: Outer,
    /// Local SGD's outer learning rate (DiLoCo's: 0.7).
    #[serde(default = "outer_lr")]
    pub outer_lr: f32,
    /// Local SGD's outer momentum (DiLoCo's: 0.9; Nesterov only).
    #[serde(default = "outer_momentum")]
    pub outer_momentum: f32,
    /// Compress each worker's gradient before it is sent, keeping the rest for next step.
    #[serde(default)]
    pub compress: Option<Compression>,
    /// An asynchronous parameter server instead of an all-reduce (`--async`).
    #[serde(default, rename = "async")]
    pub asynchronous: bool,
    /// S: with `--async`, no worker may run more than S steps ahead of the slowest.
    #[serde(default = "staleness")]
    pub staleness: usize,
}

/// The default of a size that old configuration files do not name.
fn one() -> usize {
    1
}

/// Defaults of the synchronisation options (DiLoCo's for local SGD).
fn outer_lr() -> f32 {
    0.7
}
fn outer_momentum() -> f32 {
    0.9
}
fn staleness() -> usize {
    2
}

/// A pipeline schedule: the order of each stage's forwards and backwards (see
/// `parallel::pipeline::schedule`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipeSchedule {
    /// All forwards, then all backwards: M micro-batches' activations alive per stage.
    #[default]
    GPipe,
    /// One forward, one backward (PipeDream-flush): at most P activations alive per stage.
    #[serde(rename = "1f1b")]
    OneFOneB,
    /// 1F1B with each backward split into B (input gradient) and W (weight gradients),
    /// W's filling the stage's waits (zero bubble): one more micro-batch alive per stage.
    #[serde(rename = "zb")]
    ZeroBubble,
}

impl PipeSchedule {
    /// Every schedule, in the order the docs and benches list them.
    pub const ALL: [PipeSchedule; 3] = [
        PipeSchedule::GPipe,
        PipeSchedule::OneFOneB,
        PipeSchedule::ZeroBubble,
    ];

    /// Its name on the command line: `gpipe`, `1f1b` or `zb`.
    pub fn name(self) -> &'static str {
        match self {
            PipeSchedule::GPipe => "gpipe",
            PipeSchedule::OneFOneB => "1f1b",
            PipeSchedule::ZeroBubble => "zb",
        }
    }
}

impl std::str::FromStr for PipeSchedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "gpipe" => Ok(PipeSchedule::GPipe),
            "1f1b" => Ok(PipeSchedule::OneFOneB),
            "zb" => Ok(PipeSchedule::ZeroBubble),
            _ => Err(Error::Config(format!(
                "--schedule {s} is not a pipeline schedule: use gpipe, 1f1b or zb"
            ))),
        }
    }
}

/// Where ZeRO stages 2 and 3 run their per-block gathers and reduce-scatters
/// (`--zero-prefetch`; `parallel::zero`'s `lane.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroPrefetch {
    /// A thread where a core is free for it, inline where every core computes.
    #[default]
    Auto,
    /// On a communication thread of each worker, overlapped with its compute (prefetch).
    Thread,
    /// On the worker's own thread, at the point the walk issues them.
    Inline,
}

impl ZeroPrefetch {
    /// The default, decided per run.
    pub fn is_auto(&self) -> bool {
        *self == ZeroPrefetch::Auto
    }

    /// Its name on the command line: `auto`, `thread` or `inline`.
    pub fn name(self) -> &'static str {
        match self {
            ZeroPrefetch::Auto => "auto",
            ZeroPrefetch::Thread => "thread",
            ZeroPrefetch::Inline => "inline",
        }
    }

    /// `Thread` or `Inline`, `Auto` decided for `busy` threads computing at once: a
    /// communication thread only where a core is left for it (overlap needs spare
    /// hardware; on a CPU whose cores all compute, it would take its core from compute).
    pub fn resolve(self, busy: usize) -> ZeroPrefetch {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match self {
            ZeroPrefetch::Auto if busy < cores => ZeroPrefetch::Thread,
            ZeroPrefetch::Auto => ZeroPrefetch::Inline,
            chosen => chosen,
        }
    }
}

impl std::str::FromStr for ZeroPrefetch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(ZeroPrefetch::Auto),
            "thread" => Ok(ZeroPrefetch::Thread),
            "inline" => Ok(ZeroPrefetch::Inline),
            _ => Err(Error::Config(format!(
                "--zero-prefetch {s} is not a mode: use auto, thread or inline"
            ))),
        }
    }
}

impl Default for ParallelConfig {
    fn default() -> Self {
        ParallelConfig {
            workers: 1,
            batch: 12,
            accum: 1,
            allreduce: Algorithm::Shared,
            bucket_kb: 0,
            overlap: false,
            deterministic: false,
            tp: 1,
            sp: false,
            pp: 1,
            micro: 1,
            schedule: PipeSchedule::GPipe,
            processes: 1,
            mpi_allreduce: CrossAlgorithm::Mpi,
            zero: 0,
            zero_prefetch: ZeroPrefetch::Auto,
            link: None,
            sync_every: 1,
            outer: Outer::default(),
            outer_lr: outer_lr(),
            outer_momentum: outer_momentum(),
            compress: None,
            asynchronous: false,
            staleness: staleness(),
        }
    }
}

/// The run's schedule: its length, and the evaluations, checkpoints and replica checks
/// between its steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    /// Total optimizer steps of the run.
    pub steps: usize,
    /// Evaluate the validation loss every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Validation windows used by the periodic evaluations (the final one uses all).
    pub eval_windows: usize,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Compare the replicas' parameter hashes every this many steps (0: never).
    pub check_replicas: usize,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            steps: 2000,
            eval_every: 250,
            eval_windows: 200,
            checkpoint_every: 0,
            check_replicas: 0,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            data: "tales".into(),
            model: ModelConfig::default(),
            seed: 1337,
            optim: OptimConfig::default(),
            parallel: ParallelConfig::default(),
            schedule: ScheduleConfig::default(),
            faults: FaultConfig::default(),
        }
    }
}

/// Faults injected on purpose, to watch what a slow or failing worker does to synchronous
/// training. Neither is part of a run: `--resume` does not carry them over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultConfig {
    /// `(worker, ms)`: that worker sleeps this long every step.
    pub straggler: Option<(usize, u64)>,
    /// `(worker, step)`: that worker panics at this step.
    pub fault: Option<(usize, usize)>,
    /// `(worker, step)`: after this step that worker flips the lowest bit of its first
    /// parameter, as a memory error would: what `--check-replicas` exists to catch. Set by
    /// tests; no flag sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perturb: Option<(usize, usize)>,
}

impl TrainConfig {
    /// Sequences each replica processes per micro-batch: B / (DP * K).
    pub fn micro_batch(&self) -> usize {
        let p = &self.parallel;
        p.batch / (self.data_parallel() * p.accum * p.micro.max(1))
    }

    /// DP: the data-parallel replicas, N / (TP x PP) (each replica a grid of TP x PP
    /// workers: a tensor group per pipeline stage).
    pub fn data_parallel(&self) -> usize {
        let p = &self.parallel;
        (p.workers / (p.tp.max(1) * p.pp.max(1))).max(1)
    }

    /// Tokens (predicted characters) per optimizer step: B * T.
    pub fn tokens_per_step(&self) -> usize {
        self.parallel.batch * self.model.block_size
    }

    /// Checks everything that does not depend on the corpus: the one place a configuration
    /// is validated, the model's shape included.
    pub fn validate(&self) -> Result<(), Error> {
        self.model.validate()?;
        let (p, o, s) = (&self.parallel, &self.optim, &self.schedule);
        let cfg = |msg: String| Err(Error::Config(msg));
        for (flag, value) in [
            ("--workers", p.workers),
            ("--steps", s.steps),
            ("--batch", p.batch),
            ("--accum", p.accum),
        ] {
            if value == 0 {
                return cfg(format!("{flag} must be at least 1"));
            }
        }
        self.validate_pipeline()?;
        if p.tp > 1 && p.pp > 1 && p.deterministic {
            return cfg(format!(
                "--deterministic with --tp {} --pp {}: the exact fixed-point sums of a pipeline \
                 stage of tensor-parallel blocks are not built (tensor parallelism adds its \
                 partial sums in floats, so it is not one worker's bits anyway): drop \
                 --deterministic, or use --tp or --pp alone",
                p.tp, p.pp
            ));
        }
        // Products of sizes are checked, so that no value can wrap (in a release build) to
        // a zero that a later division trips over, or to a small size that looks valid.
        let Some(split) = p.workers.checked_mul(p.accum) else {
            return cfg(format!(
                "--workers {} x --accum {} is too large to count: use fewer workers or \
                 accumulation steps (their product must divide --batch)",
                p.workers, p.accum
            ));
        };
        if p.batch.checked_mul(self.model.block_size).is_none() {
            return cfg(format!(
                "--batch {} x --block {} chars per step is too large to count: use a \
                 smaller --batch or --block",
                p.batch, self.model.block_size
            ));
        }
        if p.bucket_kb > MAX_BUCKET_KB {
            return cfg(format!(
                "--bucket-kb {} is larger than {MAX_BUCKET_KB} (4 GiB), more than any model \
                 here holds: use 0 to send all gradients as one bucket",
                p.bucket_kb
            ));
        }
        if p.zero > 3 {
            return cfg(format!(
                "--zero {} is not a ZeRO stage: use 0 (replicated), 1 (optimizer state), \
                 2 (+ gradients) or 3 (+ parameters)",
                p.zero
            ));
        }
        self.validate_zero()?;
        if p.processes == 0 || p.workers % p.processes != 0 {
            return cfg(format!(
                "{} workers do not spread evenly over {} processes: under mpirun, --workers is \
                 the threads of each process",
                p.workers, p.processes
            ));
        }
        if p.processes > 1 && (p.tp > 1 || p.pp > 1) {
            return cfg(format!(
                "--tp {} --pp {} under mpirun: across processes nanodist sums gradients \
                 (all-reduce) but does not yet split a model: run tensor and pipeline \
                 parallelism on the threads of one process",
                p.tp, p.pp
            ));
        }
        self.validate_tensor()?;
        let split = split / p.tp; // the replicas share the batch, not the workers of a group
                                  // (a pipeline's batch divides among its replicas and micro-batches: see above)
        if p.pp <= 1 && p.batch % split != 0 {
            return cfg(format!(
                "--batch {} does not divide among {} x {} accumulation steps: use a batch that is a multiple of {}",
                p.batch,
                match p.tp {
                    1 => format!("{} workers", p.workers),
                    tp => format!("{} replicas of --tp {tp}", self.data_parallel()),
                },
                p.accum,
                split
            ));
        }
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return cfg(format!("--lr {} must be a positive number", o.lr));
        }
        if let Some((w, ms)) = self.faults.straggler.filter(|s| s.1 > MAX_STRAGGLER_MS) {
            return cfg(format!(
                "--straggler {w}:{ms} sleeps longer than {MAX_STRAGGLER_MS} ms a step, which \
                 would look like a hang: use at most {w}:{MAX_STRAGGLER_MS}"
            ));
        }
        let faults = [
            ("--straggler", self.faults.straggler.map(|s| s.0)),
            ("--fault", self.faults.fault.map(|f| f.0)),
        ];
        for (flag, worker) in faults {
            if let Some(w) = worker.filter(|&w| w >= p.workers) {
                return cfg(format!(
                    "{flag} names worker {w}, but {}: name one of those",
                    numbered(p.workers)
                ));
            }
        }
        self.validate_sync()?;
        if let Some((w, step)) = self.faults.fault.filter(|f| f.1 >= s.steps) {
            return cfg(format!(
                "--fault {w}:{step} names step {step}, which a run of --steps {} (steps 0 to {}) never reaches: choose a step below {}",
                s.steps,
                s.steps - 1,
                s.steps
            ));
        }
        Ok(())
    }
}

impl TrainConfig {
    /// The layout of `--tp` and `--sp` (see `parallel::tensor`): the grid, whole heads per
    /// worker, whole token rows with `--sp`.
    fn validate_tensor(&self) -> Result<(), Error> {
        let (p, m) = (&self.parallel, &self.model);
        crate::parallel::grid::Layout::new(p.workers, p.tp, 1)?;
        let cfg = |msg: String| Err(Error::Config(msg));
        if p.tp == 1 {
            if p.sp {
                return cfg(
                    "--sp splits activations over a tensor group: use it with --tp 2 \
                            or more"
                        .into(),
                );
            }
            return Ok(());
        }
        if m.n_head % p.tp != 0 {
            return cfg(format!(
                "--tp {} does not divide the {} attention heads (--heads): use a --tp that \
                 divides {}",
                p.tp, m.n_head, m.n_head
            ));
        }
        if p.overlap {
            return cfg(format!(
                "--overlap hides data parallelism's all-reduce behind the whole model's \
                 backward, which --tp {} splits: drop --overlap",
                p.tp
            ));
        }
        let rows = if p.deterministic {
            1
        } else {
            self.micro_batch()
        } * m.block_size;
        if p.sp && rows % p.tp != 0 {
            return cfg(format!(
                "--sp splits a micro-batch's {rows} token rows over --tp {}: use a --block \
                 (or --batch) that makes them a multiple of {}",
                p.tp, p.tp
            ));
        }
        Ok(())
    }

    /// Where `--zero` is meaningful beside the other splits (docs/zero.md): stage 1 with
    /// `--tp` shards each rank's own shard of the model over the data-parallel group, and
    /// with `--pp` each stage's parameters over the stage's data-parallel group.
    fn validate_zero(&self) -> Result<(), Error> {
        let p = &self.parallel;
        let cfg = |msg: String| Err(Error::Config(msg));
        if p.zero == 0 {
            return Ok(());
        }
        if p.processes > 1 {
            return cfg(format!(
                "--zero {} shards the state over the threads of one process; across mpirun's \
                 processes nanodist sums whole gradients: drop --zero or mpirun",
                p.zero
            ));
        }
        if p.pp > 1 && p.zero > 1 {
            return cfg(format!(
                "--zero {} with --pp {}: stages 2 and 3 reduce-scatter and gather the whole \
                 model's blocks one by one as its backward walks them, which a pipeline stage's \
                 schedule of micro-batches does not run: use --zero 1 with --pp",
                p.zero, p.pp
            ));
        }
        if p.tp > 1 && p.zero > 1 {
            return cfg(format!(
                "--zero {} with --tp {}: stages 2 and 3 reduce-scatter and gather the whole \
                 model's blocks one by one as its backward walks them, which a tensor-parallel \
                 block (already a shard of one) does not run: use --zero 1 with --tp",
                p.zero, p.tp
            ));
        }
        Ok(())
    }

    /// The pipeline's flags: `--pp`, `--micro` and how they meet the others.
    fn validate_pipeline(&self) -> Result<(), Error> {
        let (p, l) = (&self.parallel, self.model.n_layer);
        let cfg = |msg: String| Err(Error::Config(msg));
        if p.pp == 0 || p.micro == 0 {
            return cfg(format!(
                "--pp {} --micro {}: both must be at least 1 (1 means no pipeline)",
                p.pp, p.micro
            ));
        }
        if p.pp == 1 {
            if p.micro > 1 {
                return cfg(format!(
                    "--micro {} streams micro-batches through pipeline stages, but there is one \
                     stage: add --pp 2 or more, or split the batch with --accum {}",
                    p.micro, p.micro
                ));
            }
            return Ok(());
        }
        if p.pp > l {
            return cfg(format!(
                "--pp {} asks for more stages than the model has blocks (--layers {l}): every \
                 stage needs at least one block: use --pp {l} or fewer",
                p.pp
            ));
        }
        let layout = crate::parallel::grid::Layout::new(p.workers, p.tp.max(1), p.pp)?;
        if p.schedule == PipeSchedule::ZeroBubble && p.tp > 1 {
            return cfg(format!(
                "--schedule zb with --tp {}: the split backward (input gradient, then weight \
                 gradients) of a tensor-parallel stage is not built: use --schedule 1f1b with \
                 --tp, or zb without --tp",
                p.tp
            ));
        }
        if p.accum > 1 {
            return cfg(format!(
                "--accum {} with --pp {}: a pipeline accumulates over its micro-batches \
                 already: use --micro {} instead",
                p.accum,
                p.pp,
                p.accum * p.micro
            ));
        }
        let split = layout.dp.saturating_mul(p.micro);
        if p.batch % split != 0 {
            return cfg(format!(
                "--batch {} does not divide among {} pipeline replicas x --micro {}: use a \
                 batch that is a multiple of {split}",
                p.batch, layout.dp, p.micro
            ));
        }
        Ok(())
    }

    /// Checks the synchronisation options: local SGD, compression, the parameter server.
    fn validate_sync(&self) -> Result<(), Error> {
        let p = &self.parallel;
        let cfg = |msg: &str| Err(Error::Config(msg.into()));
        if p.sync_every == 0 {
            return cfg("--sync-every must be at least 1 (1: synchronise every step)");
        }
        if !(p.outer_lr.is_finite() && p.outer_lr > 0.0) {
            return cfg("--outer-lr must be a positive number (DiLoCo uses 0.7)");
        }
        if !(p.outer_momentum.is_finite() && (0.0..1.0).contains(&p.outer_momentum)) {
            return cfg("--outer-momentum must be in [0, 1) (DiLoCo uses 0.9)");
        }
        let strategies = [p.sync_every > 1, p.compress.is_some(), p.asynchronous];
        if strategies.iter().filter(|&&on| on).count() > 1 {
            return cfg(
                "--sync-every (above 1), --compress and --async are different strategies: pick one",
            );
        }
        let grid = p.tp > 1 || p.pp > 1 || p.zero > 0 || p.processes > 1;
        if strategies.iter().any(|&on| on) && grid {
            return cfg(
                "--sync-every (above 1), --compress and --async replace plain data parallelism's \
                 all-reduce; they do not combine with --tp, --pp, --zero or mpirun yet: pick one",
            );
        }
        if p.compress.is_some() && p.overlap {
            return cfg("--compress needs the whole gradient before it sends: drop --overlap");
        }
        if p.asynchronous && p.deterministic {
            return cfg(
                "--async applies gradients in the order they arrive, which no seed fixes: drop --deterministic",
            );
        }
        if p.asynchronous && (p.overlap || p.accum > 1 || p.workers < 2) {
            return cfg(
                "--async runs whole-gradient pushes from at least 2 workers: use --workers 2 or more, no --overlap, --accum 1",
            );
        }
        if p.staleness > 1000 {
            return cfg("--staleness above 1000 is unbounded in practice: use at most 1000");
        }
        Ok(())
    }
}

/// The longest `--straggler` sleep, in ms per step: a minute already stalls every worker
/// for a minute a step, slow enough to watch; beyond it a run looks hung.
pub const MAX_STRAGGLER_MS: u64 = 60_000;

/// The largest `--bucket-kb`: 4 GiB of gradients, more than any model nanodist trains, and
/// small enough that its count of floats (`KiB * 1024 / 4`) never overflows.
pub const MAX_BUCKET_KB: usize = 4 << 20;

/// Bytes a run would hold in memory, estimated before anything is allocated.
///
/// Per worker: parameters, gradients and the two AdamW moments (4 x 4 bytes per
/// parameter, plus 8 for the fixed-point sum in deterministic mode), and the
/// activations kept for backward: per token and layer about 18 C floats (layernorm
/// outputs, q/k/v, attention output, the 4C-wide MLP twice, residuals) plus the
/// H x T attention probabilities; per token 2 V floats of logits and probabilities.
pub fn memory_estimate(cfg: &TrainConfig) -> f64 {
    let m = &cfg.model;
    let (c, t, l, h, v) = (
        m.n_embd as f64,
        m.block_size as f64,
        m.n_layer as f64,
        m.n_head as f64,
        m.vocab_size as f64,
    );
    let params = l * (12.0 * c * c + 2.0 * c) + (v + t + 1.0) * c;
    let per_token = l * (18.0 * c + 2.0 * h * t) + 2.0 * v + 4.0 * c;
    let p = &cfg.parallel;
    let rows = (p.batch / p.workers.max(1)).max(1) as f64;
    let state = params * if p.deterministic { 24.0 } else { 16.0 };
    let activations = 2.0 * rows * t * per_token * 4.0; // training + evaluation workspaces
    p.workers as f64 * (state + activations)
}

/// Refuses a run whose estimated memory exceeds 80% of what the machine has available.
pub fn check_memory(cfg: &TrainConfig) -> Result<(), Error> {
    let need = memory_estimate(cfg);
    let gib = |b: f64| b / (1u64 << 30) as f64;
    match over_budget(need) {
        Some(avail) => Err(Error::Config(format!(
            "this run would need about {:.1} GiB ({} per worker) but {:.1} GiB is available: use fewer --workers or a smaller --batch (in nanodist train also a smaller --embd, --layers or --block)",
            gib(need),
            human_bytes(need / cfg.parallel.workers.max(1) as f64),
            gib(avail)
        ))),
        None => Ok(()),
    }
}

/// The memory available now (bytes) when `need` bytes would take more than 80% of it: the
/// budget every command's memory check keeps to. `None` when it fits, or is not known.
pub fn over_budget(need: f64) -> Option<f64> {
    available_bytes().filter(|&avail| need > 0.8 * avail)
}

/// "1.5 GiB" or, below a GiB, "46 MiB".
fn human_bytes(bytes: f64) -> String {
    if bytes >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", bytes / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", bytes / (1u64 << 20) as f64)
    }
}

/// The memory the machine can give a new process now, in bytes (Linux's `MemAvailable`), or
/// `None` where that is not known: the memory checks then let the command run.
fn available_bytes() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb * 1024.0)
}

/// "2 workers, numbered 0 to 1": how a message names the valid worker indices.
fn numbered(workers: usize) -> String {
    match workers {
        1 => "the run has 1 worker, numbered 0".into(),
        n => format!("the run has {n} workers, numbered 0 to {}", n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_has_nanogpt_parameter_count() {
        // V=65 (Tiny Shakespeare): 65*128 + 64*128 + 4*(2*128 + 12*128*128) + 128
        assert_eq!(ModelConfig::default().num_params(), 804_096);
    }

    #[test]
    fn default_step_is_about_3_8_gflop() {
        let cfg = ModelConfig::default();
        let gflop = cfg.flops_per_step(12 * 64) / 1e9;
        assert!((3.6..4.0).contains(&gflop), "{gflop}");
    }

    #[test]
    fn batch_must_divide_among_workers_and_accumulation() {
        let mut c = TrainConfig::default();
        c.parallel.workers = 5;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("does not divide"), "{err}");
        c.parallel.workers = 4;
        c.parallel.accum = 3;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn huge_models_are_refused_before_allocating() {
        let mut c = TrainConfig::default();
        assert!(check_memory(&c).is_ok());
        let small = memory_estimate(&c);
        assert!(small > 10e6 && small < 200e6, "{small}");
        c.model.n_embd = 32_768;
        c.model.n_layer = 64;
        let err = check_memory(&c).unwrap_err().to_string();
        assert!(err.contains("GiB") && err.contains("--embd"), "{err}");
        c.model.n_embd = 1 << 20;
        assert!(c.validate().is_err());
    }

    /// config.json stays one flat object, with the keys it has always had, and reads back.
    #[test]
    fn config_json_is_flat_and_round_trips() {
        let mut c = TrainConfig::default();
        c.faults.fault = Some((1, 12));
        c.parallel.overlap = true;
        let json = serde_json::to_value(&c).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        for key in [
            "data",
            "model",
            "seed",
            "lr",
            "min_lr",
            "warmup",
            "weight_decay",
            "beta1",
            "beta2",
            "eps",
            "grad_clip",
            "workers",
            "batch",
            "accum",
            "allreduce",
            "bucket_kb",
            "overlap",
            "deterministic",
            "tp",
            "sp",
            "pp",
            "micro",
            "schedule",
            "processes",
            "mpi_allreduce",
            "zero",
            "steps",
            "eval_every",
            "eval_windows",
            "checkpoint_every",
            "check_replicas",
            "straggler",
            "fault",
        ] {
            assert!(keys.contains(&key), "{key} missing from {json}");
        }
        let sync_keys = [
            "link",
            "sync_every",
            "outer",
            "outer_lr",
            "outer_momentum",
            "compress",
            "async",
            "staleness",
        ];
        for key in sync_keys {
            assert!(keys.contains(&key), "{key} missing from {json}");
        }
        assert_eq!(keys.len(), 33 + sync_keys.len(), "{json}");
        let back: TrainConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, c);
        // a config.json written without the synchronisation keys loads with their defaults
        let mut old = json.clone();
        for key in sync_keys {
            old.as_object_mut().unwrap().remove(key);
        }
        let back: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(back, c);
        // a config.json written without the ZeRO stage loads as stage 0
        let mut old = json;
        old.as_object_mut().unwrap().remove("zero");
        let back: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(back.parallel.zero, 0);
    }

    /// Sizes whose product cannot be counted are refused in one line naming the flags,
    /// never divided by after wrapping to 0.
    #[test]
    fn overflowing_products_are_refused() {
        let mut c = TrainConfig::default();
        c.parallel.workers = 1 << 33;
        c.parallel.accum = 1 << 31;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("--workers") && err.contains("--accum"),
            "{err}"
        );
        let mut c = TrainConfig::default();
        c.parallel.batch = usize::MAX;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--batch") && err.contains("--block"), "{err}");
        let mut c = TrainConfig::default();
        c.parallel.bucket_kb = usize::MAX;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--bucket-kb"), "{err}");
    }

    #[test]
    fn straggler_sleeps_are_capped() {
        let mut c = TrainConfig::default();
        c.faults.straggler = Some((0, MAX_STRAGGLER_MS));
        assert!(c.validate().is_ok());
        c.faults.straggler = Some((0, u64::MAX));
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("--straggler") && err.contains("60000"),
            "{err}"
        );
    }

    #[test]
    fn heads_must_divide_channels() {
        let mut c = ModelConfig {
            n_head: 5,
            ..ModelConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("--heads 5 does not divide --embd 128"),
            "{err}"
        );
        c.n_head = 8;
        assert!(c.validate().is_ok());
    }
}
