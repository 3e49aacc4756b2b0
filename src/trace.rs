//! The timeline: what each worker did and when, as plain [`Span`]s on a shared [`Clock`].
//!
//! Each worker has a track (and a second one for its communication thread when all-reduce
//! overlaps backward). A synchronous data-parallel step looks like this:
//!
//! ```text
//! worker 0 | forward | backward |wait|ar b0|ar b1| adamw |
//! worker 1 | forward | backward   |wait|ar b0|ar b1| adamw |   <- a slower worker makes
//!                                  ^ everyone waits here      the others wait
//! ```
//!
//! Spans are recorded by the workers as plain structs (no I/O on the hot path) and handed
//! to the caller of [`crate::train::train`] in its outcome; the command line draws them
//! (`trace.json` for Perfetto, `timeline.svg`).

use std::time::Instant;

/// What a span of time was spent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Forward pass (all micro-batches' forwards are separate spans).
    Forward,
    /// Backward pass.
    Backward,
    /// Waiting for the slowest worker before communicating.
    Wait,
    /// One bucket's all-reduce.
    AllReduce(usize),
    /// Blocked after backward until the overlapped all-reduces finish (exposed communication).
    CommWait,
    /// Clipping and the AdamW update.
    Optimizer,
    /// Validation loss evaluation.
    Eval,
    /// Writing a checkpoint.
    Checkpoint,
    /// A sleep injected by `--straggler`.
    Straggle,
    /// Converting per-sequence gradients to fixed point (deterministic mode).
    FixedPoint,
    /// A collective of tensor parallelism inside block `layer` (`op`: "all-reduce",
    /// "all-gather", "reduce-scatter"; layer = the model's layer count: the embeddings').
    Tensor {
        /// The block.
        layer: usize,
        /// The collective.
        op: &'static str,
    },
    /// A pipeline stage's forward of micro-batch `m` through its blocks.
    StageForward(usize),
    /// A pipeline stage's backward of micro-batch `m` through its blocks (under `zb`, the
    /// input gradient only).
    StageBackward(usize),
    /// A pipeline stage's weight gradients of micro-batch `m` (`--schedule zb`).
    StageWeight(usize),
    /// A pipeline stage's whole schedule of one step, from the stages' common start to
    /// their common end: the window its bubble is measured in (it encloses the stage's
    /// forwards, backwards and waits, and is not itself a box on the timeline).
    Pipeline,
    /// One bucket's reduce-scatter (ZeRO): each worker keeps the sum of its own shard.
    ReduceScatter(usize),
    /// An all-gather of shards (ZeRO): the updated parameters, or block `l`'s weights.
    AllGather(usize),
    /// ZeRO stage 3: waiting for the prefetched gather of block `l`'s weights.
    Prefetch(usize),
    /// Waiting out the rest of a collective's time on the simulated `--link`.
    Link,
    /// Compressing a gradient before it is sent, or adding up the compressed ones.
    Compress,
    /// Pushing a gradient to the parameter server (`--async`), its update included.
    Push,
    /// Pulling the weights from the parameter server (`--async`).
    Pull,
}

impl Phase {
    /// Its name on a timeline: `"forward"`, `"all-reduce bucket 2"`.
    pub fn name(self) -> String {
        match self {
            Phase::Forward => "forward".into(),
            Phase::Backward => "backward".into(),
            Phase::Wait => "wait".into(),
            Phase::AllReduce(b) => format!("all-reduce bucket {b}"),
            Phase::CommWait => "waiting for buckets".into(),
            Phase::Optimizer => "adamw".into(),
            Phase::Eval => "eval".into(),
            Phase::Checkpoint => "checkpoint".into(),
            Phase::Straggle => "straggler sleep".into(),
            Phase::FixedPoint => "fixed-point sum".into(),
            Phase::Tensor { layer, op } => format!("tp {op} layer {layer}"),
            Phase::StageForward(m) => format!("forward m{m}"),
            Phase::StageBackward(m) => format!("backward m{m}"),
            Phase::StageWeight(m) => format!("weight gradients m{m}"),
            Phase::Pipeline => "pipeline schedule".into(),
            Phase::ReduceScatter(b) => format!("reduce-scatter bucket {b}"),
            Phase::AllGather(b) => format!("all-gather {b}"),
            Phase::Prefetch(l) => format!("prefetch block {l}"),
            Phase::Link => "link (simulated)".into(),
            Phase::Compress => "compress".into(),
            Phase::Push => "push gradient".into(),
            Phase::Pull => "pull weights".into(),
        }
    }

    /// Its kind: `"compute"`, `"comm"` or `"wait"`.
    pub fn category(self) -> &'static str {
        match self {
            Phase::AllReduce(_)
            | Phase::CommWait
            | Phase::Tensor { .. }
            | Phase::ReduceScatter(_)
            | Phase::AllGather(_)
            | Phase::Prefetch(_)
            | Phase::Link
            | Phase::Push
            | Phase::Pull => "comm",
            Phase::Wait => "wait",
            Phase::Pipeline => "pipeline",
            _ => "compute",
        }
    }
}

/// One interval on one track.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    /// What happened.
    pub phase: Phase,
    /// The optimizer step it belongs to.
    pub step: usize,
    /// Start, in microseconds since the run's clock started.
    pub start_us: f64,
    /// Duration in microseconds.
    pub dur_us: f64,
    /// Set for spans of a worker's communication thread (overlap mode).
    pub comm_thread: bool,
}

/// A shared start time, so that all tracks line up.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// Starts the clock now.
    pub fn start() -> Self {
        Clock(Instant::now())
    }

    /// Microseconds since the clock started.
    pub fn now_us(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1e6
    }

    /// Records `f` as a span of `phase` into `spans`, returning f's result.
    pub fn time<R>(
        &self,
        spans: &mut Vec<Span>,
        phase: Phase,
        step: usize,
        f: impl FnOnce() -> R,
    ) -> R {
        let start_us = self.now_us();
        let r = f();
        spans.push(Span {
            phase,
            step,
            start_us,
            dur_us: self.now_us() - start_us,
            comm_thread: false,
        });
        r
    }
}
