//! Which floats of the full model a tensor-parallel worker holds, and the way back.
//!
//! A worker's parameters are one flat buffer like the full model's, with the same tensor
//! names in the same order; only the four matrices of each block are smaller:
//!
//! ```text
//!   full (layout.rs)                       worker r of TP  (cl = C/TP, fl = 4C/TP)
//!   wte (V,C) wpe (T,C)                    wte (V,C) wpe (T,C)          whole copies
//!   ln_1 (C)                               ln_1 (C)                     whole copy
//!   c_attn (3C,C)  rows q|k|v              c_attn (3cl,C)  rows q_r|k_r|v_r: my heads'
//!   attn.c_proj (C,C)                      attn.c_proj (C,cl)  columns r*cl..: my heads'
//!   ln_2 (C)                               ln_2 (C)
//!   mlp.c_fc (4C,C)                        mlp.c_fc (fl,C)  rows r*fl..
//!   mlp.c_proj (C,4C)                      mlp.c_proj (C,fl)  columns r*fl..
//!   ln_f (C)                               ln_f (C)
//!
//!   c_attn, full:   [ q: h0 h1 | h2 h3 ][ k: h0 h1 | h2 h3 ][ v: h0 h1 | h2 h3 ]   H = 4, TP = 2
//!                     worker 0   worker 1  worker 0  worker 1  worker 0  worker 1
//! ```
//!
//! [`runs`] lists, for one worker, where each run of its floats lies in both buffers; the
//! shard ([`shard`]) copies full -> local along them, and [`consolidate`] adds every worker's
//! runs into one full buffer (the whole copies from worker 0 alone), so the same code
//! serves parameters, AdamW's moments and gradients.

use crate::collective::{Algorithm, Comm, CommError};
use crate::config::ModelConfig;
use crate::model::{ParamLayout, TensorInfo};

/// One run of contiguous floats: `len` of them at `full` in the full layout and at `local`
/// in a worker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Offset in the full layout.
    pub full: usize,
    /// Offset in the worker's layout.
    pub local: usize,
    /// Floats.
    pub len: usize,
    /// Whether every worker holds this run (a whole copy) rather than a slice of its own.
    pub replicated: bool,
}

/// How a tensor is split over the tensor group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    /// Whole on every worker.
    Whole,
    /// Rows split: `parts` groups of rows (c_attn's q, k, v: 3; c_fc: 1), each cut in TP.
    Rows(usize),
    /// Columns split (the row-parallel projections' inputs).
    Cols,
}

fn split_of(name: &str) -> Split {
    if name.ends_with("attn.c_attn.weight") {
        Split::Rows(3)
    } else if name.ends_with("mlp.c_fc.weight") {
        Split::Rows(1)
    } else if name.ends_with("c_proj.weight") {
        Split::Cols
    } else {
        Split::Whole
    }
}

/// The shape a worker of a `tp`-way group holds of a tensor of full shape `shape`.
fn local_shape(name: &str, shape: &[usize], tp: usize) -> Vec<usize> {
    match split_of(name) {
        Split::Whole => shape.to_vec(),
        Split::Rows(_) => vec![shape[0] / tp, shape[1]],
        Split::Cols => vec![shape[0], shape[1] / tp],
    }
}

/// The layout of one worker's parameters in a `tp`-way tensor group: the full layout's
/// tensors, in its order and with its names, the split ones smaller (module docs).
///
/// ```
/// use nanodist::{config::ModelConfig, model::ParamLayout, parallel::tensor::local_layout};
/// let cfg = ModelConfig::default();
/// let (full, half) = (ParamLayout::new(&cfg), local_layout(&cfg, 2));
/// let c = cfg.n_embd;
/// assert_eq!(half.get("transformer.h.0.attn.c_attn.weight").unwrap().shape, [3 * c / 2, c]);
/// assert_eq!(local_layout(&cfg, 1), full);
/// ```
pub fn local_layout(cfg: &ModelConfig, tp: usize) -> ParamLayout {
    let full = ParamLayout::new(cfg);
    let mut offset = 0;
    let tensors = (full.tensors.iter())
        .map(|t| {
            let shape = local_shape(&t.name, &t.shape, tp);
            let len = shape.iter().product();
            let info = TensorInfo {
                name: t.name.clone(),
                shape,
                offset,
                len,
                decay: t.decay,
            };
            offset += len;
            info
        })
        .collect();
    ParamLayout {
        tensors,
        len: offset,
    }
}

/// Every run of worker `rank`'s floats (of a `tp`-way group), in local order.
pub fn runs(cfg: &ModelConfig, tp: usize, rank: usize) -> Vec<Run> {
    let (full, local) = (ParamLayout::new(cfg), local_layout(cfg, tp));
    let mut out = Vec::new();
    for (f, l) in full.tensors.iter().zip(&local.tensors) {
        let mut push = |full: usize, local: usize, len: usize, replicated: bool| {
            out.push(Run {
                full: f.offset + full,
                local: l.offset + local,
                len,
                replicated,
            })
        };
        match split_of(&f.name) {
            Split::Whole => push(0, 0, f.len, true),
            Split::Rows(parts) => {
                // each part (q, k, v) is rows/parts rows; mine are the rank-th 1/tp of each
                let (rows, cols) = (f.shape[0] / parts, f.shape[1]);
                let mine = rows / tp;
                for p in 0..parts {
                    let at = (p * rows + rank * mine) * cols;
                    push(at, p * mine * cols, mine * cols, false);
                }
            }
            Split::Cols => {
                let (rows, cols) = (f.shape[0], f.shape[1]);
                let mine = cols / tp;
                for r in 0..rows {
                    push(r * cols + rank * mine, r * mine, mine, false);
                }
            }
        }
    }
    out
}

/// Worker `rank`'s shard of the full buffer `full` (parameters or a moment), in its layout.
pub fn shard(full: &[f32], cfg: &ModelConfig, tp: usize, rank: usize) -> Vec<f32> {
    let mut local = vec![0.0; local_layout(cfg, tp).len];
    for r in runs(cfg, tp, rank) {
        local[r.local..r.local + r.len].copy_from_slice(&full[r.full..r.full + r.len]);
    }
    local
}

/// The full buffer from every worker's `local` shard: a collective over the tensor group
/// `comm` (every worker calls it; every worker gets the full buffer).
///
/// Each worker writes its runs into a zeroed full buffer (the whole copies only on worker 0)
/// and an all-reduce sums them: every float has exactly one writer, and x + 0 = x exactly,
/// so the result is the shards' floats themselves. It sends a whole model per worker, which
/// checkpoints and evaluations can afford; the training step never calls it.
pub fn consolidate(
    local: &[f32],
    cfg: &ModelConfig,
    comm: &mut Comm,
) -> Result<Vec<f32>, CommError> {
    let (tp, rank) = (comm.size(), comm.rank());
    let mut full = vec![0.0; cfg.num_params()];
    for r in runs(cfg, tp, rank) {
        if r.replicated && rank != 0 {
            continue;
        }
        full[r.full..r.full + r.len].copy_from_slice(&local[r.local..r.local + r.len]);
    }
    comm.all_reduce(&mut full, Algorithm::Ring)?;
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelConfig {
        ModelConfig {
            vocab_size: 7,
            block_size: 4,
            n_layer: 2,
            n_head: 4,
            n_embd: 8,
        }
    }

    /// The shards' split floats tile the full buffer exactly once; the whole copies are
    /// everyone's; each worker's runs tile its own buffer.
    #[test]
    fn shards_tile_the_model() {
        let cfg = tiny();
        for tp in [1, 2, 4] {
            let mut owners = vec![0usize; cfg.num_params()];
            for rank in 0..tp {
                let mut covered = vec![false; local_layout(&cfg, tp).len];
                for r in runs(&cfg, tp, rank) {
                    for i in 0..r.len {
                        if !r.replicated || rank == 0 {
                            owners[r.full + i] += 1;
                        }
                        assert!(!covered[r.local + i], "tp {tp} rank {rank} twice");
                        covered[r.local + i] = true;
                    }
                }
                assert!(covered.iter().all(|&c| c), "tp {tp} rank {rank} has a gap");
            }
            assert!(owners.iter().all(|&o| o == 1), "tp {tp}: {owners:?}");
        }
    }

    /// Sharding then consolidating gives back the full buffer, float for float.
    #[test]
    fn consolidate_undoes_shard() {
        let cfg = tiny();
        let full: Vec<f32> = (0..cfg.num_params())
            .map(|i| i as f32 * 0.5 - 3.0)
            .collect();
        for tp in [1, 2, 4] {
            let back: Vec<Vec<f32>> = std::thread::scope(|s| {
                let handles: Vec<_> = (crate::collective::group(tp).into_iter())
                    .map(|mut comm| {
                        let (cfg, full) = (&cfg, &full);
                        s.spawn(move || {
                            let local = shard(full, cfg, tp, comm.rank());
                            consolidate(&local, cfg, &mut comm).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for b in back {
                assert_eq!(b, full, "tp {tp}");
            }
        }
    }
}
