//! One measured point of the sweep: what `bench.json` holds per (mode, workers), in a leaf
//! of its own so that the sweep, its table and the solo modes all use it.

use serde::Serialize;

/// One measured point.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// `strong`, `weak`, `independent`, `op-parallel`, `tensor-parallel` or
    /// `tensor-parallel-sp`.
    pub mode: String,
    /// Threads (workers, or kernel threads for op parallel).
    pub workers: usize,
    /// Global batch in sequences.
    pub batch: usize,
    /// Tokens per second at the median step.
    pub tokens_per_s: f64,
    /// Median step time, ms.
    pub step_ms: f64,
    /// tokens/s over N times the 1-thread tokens/s of the same mode.
    pub efficiency: f64,
    /// Median compute / comm / wait per step (mean over workers), ms.
    pub compute_ms: f64,
    /// See `compute_ms`.
    pub comm_ms: f64,
    /// See `compute_ms`.
    pub wait_ms: f64,
    /// Communication time per step predicted by the alpha-beta fit, ms.
    pub predicted_comm_ms: f64,
    /// Model FLOPs of one step, in GFLOP.
    pub gflop_per_step: f64,
    /// The sgemm peak the MFU is taken against, GFLOP/s: that of this many threads, or of one
    /// thread per core when there are more threads than cores; the highest measured with that
    /// many threads at any point of any round.
    pub peak_gflops: f64,
    /// Model FLOPs per second over `peak_gflops`.
    pub mfu: f64,
    /// tokens/s of every round, in order (the point is the fastest).
    pub tokens_per_s_rounds: Vec<f64>,
    /// More threads than cores.
    pub oversubscribed: bool,
    /// The machine's cores: an oversubscribed point's threads take turns on this many.
    pub cores: usize,
    /// Each worker's mean step, ms, in the independent mode (empty in the others): how fast
    /// each core went on its own. A spread between them is what synchronous workers wait for.
    pub worker_step_ms: Vec<f64>,
}

impl Point {
    /// Efficiency against what the cores can deliver: tokens/s over `min(N, cores)` times
    /// one thread's. Past the core count more threads cannot add compute, so an oversubscribed
    /// point's honest ideal is the cores', not N threads'.
    pub fn efficiency_of_cores(&self) -> f64 {
        self.efficiency * self.workers as f64 / self.workers.min(self.cores).max(1) as f64
    }
}
