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
//! `ops.rs`; the block in `block.rs`; the whole model in `model.rs`; which floats each
//! worker holds, and the consolidated checkpoint, in `shard.rs`.
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

pub use model::TensorParallel;
pub use ops::{f_backward, f_forward, g_backward, g_forward, Ops};
pub use shard::{consolidate, local_layout, runs, shard, Run};

use crate::collective::{Comm, CommError};
use crate::config::TrainConfig;
use crate::model::Gpt;
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
