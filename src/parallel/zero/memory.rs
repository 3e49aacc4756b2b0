//! What one worker holds, by the ZeRO paper's formula and as measured from its buffers,
//! and the process's peak resident memory.
//!
//! ```text
//!   bytes per parameter, fp32 + AdamW      params   grads   AdamW m, v
//!   stage 0                                4        4       8
//!   stage 1                                4        4       8/N
//!   stage 2                                4        4/N     8/N
//!   stage 3                                4/N      4/N     8/N
//!   activations: the same at every stage (ZeRO does not shard them)
//! ```
//!
//! The measured figures count the buffers a worker really keeps: besides its shards, stage 3
//! holds two gathered blocks and the ends (embeddings, ln_f), and stages 2 and 3 two
//! gradient blocks in flight. Deterministic mode keeps the whole exact sum (8 bytes per
//! parameter) and the per-sequence gradient whatever the stage.

use serde::{Deserialize, Serialize};

use crate::config::ZeroPrefetch;
use crate::model::Workspace;
use crate::step::Replica;

/// Bytes held for each kind of state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateBytes {
    /// Weights.
    pub params: u64,
    /// Gradients (deterministic mode: the exact i64 sum included).
    pub grads: u64,
    /// AdamW's two moments.
    pub optimizer: u64,
    /// The activations of one micro-batch and backward's scratch.
    pub activations: u64,
}

impl StateBytes {
    /// All four together.
    pub fn total(&self) -> u64 {
        self.params + self.grads + self.optimizer + self.activations
    }
}

/// One worker's memory at a ZeRO stage: the formula's bytes and the measured ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// The ZeRO stage.
    pub stage: u8,
    /// N, the workers the state is sharded among.
    pub workers: usize,
    /// The model's parameters.
    pub num_params: usize,
    /// Per worker, by the ZeRO formula.
    pub predicted: StateBytes,
    /// Per worker, the buffers this worker holds.
    pub measured: StateBytes,
    /// The whole process's peak resident set (VmHWM), where the system reports it.
    pub peak_rss_bytes: Option<u64>,
    /// Stages 2 and 3: where the per-block gathers and reduce-scatters ran (`thread` or
    /// `inline`, `--zero-prefetch` resolved); absent where there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<ZeroPrefetch>,
}

impl Memory {
    /// The formula for `stage` with `n` workers and the replica's parameters, next to
    /// what `replica` holds and the `(weights, gradients)` floats of ZeRO's buffers in
    /// flight (blocks gathered, gradients being reduced).
    pub fn of(stage: u8, n: usize, replica: &Replica, (walk_w, walk_g): (usize, usize)) -> Self {
        let p = replica.model.layout.len as u64;
        let shard = |bytes: u64, sharded: bool| if sharded { bytes / n as u64 } else { bytes };
        let activations = workspace_floats(&replica.ws) as u64 * 4;
        let predicted = StateBytes {
            params: shard(4 * p, stage >= 3),
            grads: shard(4 * p, stage >= 2),
            optimizer: shard(8 * p, stage >= 1),
            activations,
        };
        let measured = StateBytes {
            params: 4 * (replica.model.params.len() + walk_w) as u64,
            grads: 4 * (replica.grads.len() + walk_g) as u64 + 8 * replica.acc.len() as u64,
            optimizer: 4 * (replica.adam.m.len() + replica.adam.v.len()) as u64,
            activations,
        };
        Memory {
            stage,
            workers: n,
            num_params: p as usize,
            predicted,
            measured,
            peak_rss_bytes: peak_rss_bytes(),
            prefetch: None,
        }
    }
}

/// Floats of a workspace's activations and scratch.
fn workspace_floats(ws: &Workspace) -> usize {
    let blocks: usize = (ws.blocks.iter())
        .map(|a| {
            [
                &a.ln1,
                &a.ln1_mean,
                &a.ln1_rstd,
                &a.qkv,
                &a.att,
                &a.atty,
                &a.x_mid,
                &a.ln2,
                &a.ln2_mean,
                &a.ln2_rstd,
                &a.fch,
                &a.fcg,
                &a.x_out,
            ]
            .iter()
            .map(|v| v.len())
            .sum::<usize>()
        })
        .sum();
    let d = &ws.scratch;
    let scratch = [
        &d.dres, &d.dln, &d.datty, &d.dqkv, &d.datt, &d.dfc, &d.dlogits,
    ]
    .iter()
    .map(|v| v.len())
    .sum::<usize>();
    let ends = [
        &ws.encoded,
        &ws.lnf,
        &ws.lnf_mean,
        &ws.lnf_rstd,
        &ws.logits,
        &ws.lse,
        &ws.losses,
    ]
    .iter()
    .map(|v| v.len())
    .sum::<usize>();
    blocks + scratch + ends
}

/// The process's peak resident set size in bytes (`VmHWM` of `/proc/self/status`); `None`
/// where there is no such file (not Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
