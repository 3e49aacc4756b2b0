//! What a data-parallel worker starts from, and what it tells the main thread.
//!
//! ```text
//!   main thread --TrainState, Context--> worker w  --Report (channel, one Sender per worker)--> main
//!                                            --WorkerDone (when its thread is joined)---> main
//! ```
//! Reports are plain values that move through the channel: a step's times and spans, a
//! validation loss, a checkpoint's state. The worker never writes a file.

use crate::optim::AdamW;
use crate::parallel::zero::Memory;
use crate::trace::Span;

/// A replica's training state after some steps: where a run starts (fresh weights, or a
/// checkpoint's state), and what a checkpoint saves.
#[derive(Clone, Debug)]
pub struct TrainState {
    /// Parameters in layout order.
    pub params: Vec<f32>,
    /// Optimizer state.
    pub adam: AdamW,
    /// Steps completed: the next step to run (0 for a fresh run).
    pub step: usize,
}

/// One worker's account of one step.
#[derive(Debug)]
pub struct StepReport {
    /// The worker.
    pub rank: usize,
    /// The step (0-based).
    pub step: usize,
    /// Mean loss over this worker's sequences.
    pub loss: f32,
    /// The learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Forward, backward, optimizer (and any straggler sleep), ms.
    pub compute_ms: f64,
    /// Communicating (all-reduce, or waiting on it after backward when overlapped), ms.
    pub comm_ms: f64,
    /// Waiting for other workers before communicating, ms.
    pub wait_ms: f64,
    /// The part of `comm_ms` waited out for the simulated `--link` (0 without one), ms.
    pub link_ms: f64,
    /// Bytes this worker sent on the (modelled) wire during the step.
    pub bytes_sent: u64,
    /// The whole step, ms.
    pub step_ms: f64,
    /// Timeline spans (only for traced steps).
    pub spans: Vec<Span>,
}

/// What workers tell the main thread while they run.
#[derive(Debug)]
pub enum Report {
    /// A step is done on one worker.
    Step(StepReport),
    /// Validation loss after `step` steps (rank 0 sends it).
    Eval {
        /// Steps completed.
        step: usize,
        /// Mean cross-entropy, nats/char.
        val_loss: f64,
    },
    /// The state to checkpoint after `step` steps (rank 0 sends it; replicas are identical).
    Checkpoint(TrainState),
}

/// What a worker returns when it finishes.
pub struct WorkerDone {
    /// Its rank.
    pub rank: usize,
    /// Validation loss over ALL validation windows (every worker gets the same value).
    pub val_loss: f64,
    /// The final parameters (identical on every worker; under ZeRO stages 1 to 3 whole on
    /// rank 0 and empty on the others, which hold shards).
    pub params: Vec<f32>,
    /// The final optimizer state (the same, ZeRO's moments consolidated on rank 0).
    pub adam: AdamW,
    /// `Some(k)` when an interrupt stopped the run after `k` steps (every worker at the same
    /// boundary); `None` when it ran to its last step.
    pub stopped_at: Option<usize>,
    /// What this worker held, by the ZeRO formula and measured (`summary.json`'s `memory`);
    /// `None` where the strategy does not count it (tensor, pipeline).
    pub memory: Option<Memory>,
}
