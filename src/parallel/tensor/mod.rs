//! Tensor parallelism (Megatron-LM) and sequence parallelism: every block's matrices split
//! over the TP workers of a tensor group (`--tp T`, `--sp`).
//!
//! Megatron splits attention by heads and the MLP by its hidden units, so that each half of
//! a block needs one all-reduce forward and one backward:
//!
//! ```text
//!   attention, 2 workers, H = 4 heads          MLP, 2 workers, 4C hidden units
//!
//!   c_attn (3C,C), column-parallel:            c_fc (4C,C), column-parallel:
//!     worker 0: q,k,v rows of heads 0 1          worker 0: rows 0 .. 2C
//!     worker 1: q,k,v rows of heads 2 3          worker 1: rows 2C .. 4C
//!   attention: each worker on its own heads    gelu: elementwise, local
//!   attn.c_proj (C,C), row-parallel:           mlp.c_proj (C,4C), row-parallel:
//!     worker 0: columns of heads 0 1             worker 0: columns 0 .. 2C
//!     worker 1: columns of heads 2 3             worker 1: columns 2C .. 4C
//!   -> each worker has a partial (N,C) sum     -> each worker has a partial (N,C) sum
//!   g: all-reduce it                           g: all-reduce it
//! ```
//!
//! Layer norms, the embeddings and the tied head stay whole on every worker. The operators
//! f and g that bracket each split region, and their sequence-parallel forms, are drawn in
//! `ops.rs`; the block in `block.rs`; a run of blocks with the embedding before and the
//! head after (a pipeline stage, or all of them: the whole model) in `stage.rs`; what the
//! whole model adds to it (the `--sp` sum of the whole copies, the gradient norm) in
//! `model.rs`; which floats each worker holds, and the consolidated checkpoint, in `shard.rs`.
//!
//! Communication per step, forward and backward, with N = B*T tokens per replica:
//! 4 all-reduces of N x C floats per layer (2 forward, 2 backward), a ring sending
//! 2 (TP-1)/TP of each from every worker: 8 (TP-1)/TP x N x C x L floats per step (with
//! `--sp`: the same bytes as 4 all-gathers + 4 reduce-scatters per layer, plus one
//! all-reduce of the whole copies' gradients). Data parallelism sends 2 (DP-1)/DP x P floats
//! per step, P the parameter count, once. `docs/tensor-parallel.md` sets the two side by side.
//!
//! With `--workers 4 --tp 2` the grid (`grid.rs`) makes two tensor groups {0 1} {2 3}; the
//! data-parallel gradient all-reduce runs over {0 2} and {1 3}: the same shard of the two
//! replicas.

mod block;
mod model;
mod ops;
mod shard;
mod stage;

pub use model::{activation_bytes, TensorParallel};
pub use ops::{f_backward, f_forward, g_backward, g_forward, Ops};
pub use shard::{consolidate, local_layout, runs, shard, Run};
pub use stage::{stage_activation_bytes, sum_whole_copies, whole_copies, StageGroup, TensorStage};

use crate::collective::{Comm, CommError};
use crate::config::TrainConfig;
use crate::model::{owned, split, Gpt};
use crate::optim::AdamW;

use super::grid::{Grid, Layout};

/// A worker's place in a tensor-parallel run: what [`join`] gives back.
#[derive(Debug)]
pub struct Member {
    /// This worker's share of the model (its collectives over the tensor group inside).
    pub model: TensorParallel,
    /// The data-parallel group: the workers holding the same shard in the other replicas.
    pub dp: Comm,
    /// Which replica this worker belongs to, `0..DP`: its share of each batch.
    pub replica: usize,
    /// Every worker of the run (evaluations split their windows over it).
    pub world: Comm,
}

/// Splits the run's `world` into the grid of `cfg` (`--workers`, `--tp`) and builds this
/// worker's tensor-parallel model for batches of `cfg`'s micro-batch. A collective: every
/// worker of `world` calls it.
pub fn join(world: Comm, cfg: &TrainConfig) -> Result<Member, CommError> {
    let p = &cfg.parallel;
    let layout = Layout::new(p.workers, p.tp, 1).expect("TrainConfig::validate checks the grid");
    let grid = Grid::new(world, layout)?;
    let rows = if p.deterministic {
        1
    } else {
        cfg.micro_batch()
    };
    let ops = Ops::new(grid.tp, p.sp, p.allreduce);
    Ok(Member {
        model: TensorParallel::new(&cfg.model, rows, cfg.model.block_size, ops),
        dp: grid.dp,
        replica: grid.coords.dp,
        world: grid.world,
    })
}

/// Worker `rank`'s shard (of a `tp`-way group) of a full model and its optimizer state.
pub fn shard_state(full: &Gpt, adam: &AdamW, tp: usize, rank: usize) -> (Gpt, AdamW) {
    let cfg = &full.cfg;
    let model = Gpt {
        cfg: cfg.clone(),
        layout: local_layout(cfg, tp),
        params: shard(&full.params, cfg, tp, rank),
    };
    let adam = AdamW {
        m: shard(&adam.m, cfg, tp, rank),
        v: shard(&adam.v, cfg, tp, rank),
        t: adam.t,
    };
    (model, adam)
}

/// The full parameters and optimizer state from every worker's shard: the consolidated
/// checkpoint, with the single model's layout and tensor names, so that it resumes at any
/// layout and loads in PyTorch. A collective of the tensor group `comm`.
pub fn consolidate_state(
    shard: &Gpt,
    adam: &AdamW,
    comm: &mut Comm,
) -> Result<(Vec<f32>, AdamW), CommError> {
    let cfg = &shard.cfg;
    let params = consolidate(&shard.params, cfg, comm)?;
    let adam = AdamW {
        m: consolidate(&adam.m, cfg, comm)?,
        v: consolidate(&adam.v, cfg, comm)?,
        t: adam.t,
    };
    Ok((params, adam))
}

/// What one worker sends in each of its groups per optimizer step, counted as a ring sends
/// (each all-reduce 2 (P-1)/P of its buffer, each all-gather and reduce-scatter (P-1)/P).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommPerStep {
    /// Bytes in the tensor group: the per-layer collectives (and with `--sp` the sum of
    /// the whole copies' gradients).
    pub tp_bytes: u64,
    /// The formula `tp_bytes` comes from, in the notation of the docs.
    pub tp_formula: String,
    /// Bytes in the data-parallel group: the gradient all-reduce of this worker's shard.
    pub dp_bytes: u64,
    /// Its formula.
    pub dp_formula: String,
}

/// [`CommPerStep`] of a run of `cfg`. The tensor group's figure is what [`Ops`] counts
/// (`Ops::floats_sent`), which `tests/tensor.rs` holds it to.
pub fn comm_per_step(cfg: &TrainConfig) -> CommPerStep {
    let (p, m) = (&cfg.parallel, &cfg.model);
    let (tp, dp) = (p.tp as u64, cfg.data_parallel() as u64);
    // with --pp a worker's tensor group runs only its stage's blocks: the largest stage's
    let l = m.n_layer.div_ceil(p.pp.max(1)) as u64;
    let (c, t) = (m.n_embd as u64, m.block_size as u64);
    // micro-batches per step and the rows of each (deterministic: one sequence at a time)
    let (passes, rows) = if p.deterministic {
        ((p.batch as u64) / dp, t)
    } else {
        (
            (p.accum * p.micro.max(1)) as u64,
            cfg.micro_batch() as u64 * t,
        )
    };
    let nc = rows * c;
    let per_layer = 8 * (nc / tp) * (tp - 1); // 4 all-reduces (SP: 4 gathers + 4 scatters)
    let whole = (m.vocab_size as u64 + t + 2 * l + 1) * c;
    let sp_sum = if p.sp { 2 * (whole / tp) * (tp - 1) } else { 0 };
    // (a pipeline stage adds its whole copies' gradients once a step, not per micro-batch)
    let sp_passes = if p.pp > 1 { 1 } else { passes };
    let tp_floats = passes * l * per_layer + sp_passes * sp_sum;
    let local = local_layout(m, p.tp);
    let shard = if p.pp > 1 {
        stage_sum_floats(&local, m.n_layer, p.pp)
    } else {
        local.len
    } as u64;
    let elem = if p.deterministic { 8 } else { 4 };
    CommPerStep {
        tp_bytes: 4 * tp_floats,
        tp_formula: format!(
            "4 bytes x micro-batches ({passes}) x [L{} ({l}) x 8 (TP-1)/TP x N ({rows}) x C ({c})\
             {}], TP = {tp}",
            if p.pp > 1 { "/PP" } else { "" },
            if p.sp {
                " + 2 (TP-1)/TP x (V+T+2L+1) C (the whole copies' gradients)"
            } else {
                ""
            }
        ),
        dp_bytes: elem * 2 * (shard / dp) * (dp - 1),
        dp_formula: format!(
            "{elem} bytes x 2 (DP-1)/DP x P/TP{} ({shard} parameters of this worker's shard{}), \
             DP = {dp}",
            if p.pp > 1 {
                " of the largest stage"
            } else {
                ""
            },
            if p.pp > 1 {
                " that its stage writes"
            } else {
                ""
            }
        ),
    }
}

/// The most floats a worker's data-parallel sum covers with `--pp` (`pp > 1`): a stage sums
/// only the gradients it writes (`parallel::pipeline::Pipe::written`): the range it owns
/// ([`owned`]: stage 0 the embeddings and its blocks, a middle stage its blocks, the last
/// its blocks and `ln_f`) and, on the last stage, its copy of the tied `wte`; the largest
/// stage's, in `layout` (a worker's shard). `tests/pipeline_dp.rs` holds it to the
/// pipeline's own ranges.
fn stage_sum_floats(layout: &crate::model::ParamLayout, n_layer: usize, pp: usize) -> usize {
    split(n_layer, pp)
        .iter()
        .map(|part| {
            let tied = if part.last && !part.first {
                layout.tensors[0].len
            } else {
                0
            };
            owned(layout, part).len() + tied
        })
        .max()
        .unwrap_or(layout.len)
}
