//! What a worker does between steps: the validation loss and the replica check.
//!
//! Each is a collective act too: every worker evaluates its share of the validation windows
//! and an all-reduce sums the losses; every worker hashes its replica and an all-reduce
//! gathers the hashes. (Checkpoints are not written here: rank 0 sends the state to the
//! main thread, which owns the run directory.)

use crate::checkpoint;
use crate::collective::{chunk_range, Algorithm, Comm, CommError};
use crate::config::TrainConfig;
use crate::data::sampler;
use crate::model::{Gpt, Workspace};

/// The buffers of evaluation, allocated once per worker.
pub struct Evaluator {
    /// Activations of a full evaluation batch: B/N windows.
    ws: Workspace,
    /// Activations of one window, for a final partial batch.
    one_ws: Workspace,
    inputs: Vec<u32>,
    targets: Vec<u32>,
}

impl Evaluator {
    /// Buffers for evaluation batches of B/N windows of `cfg`.
    pub fn new(cfg: &TrainConfig) -> Self {
        let t = cfg.model.block_size;
        let rows = (cfg.parallel.batch / cfg.parallel.workers).max(1);
        Evaluator {
            ws: Workspace::new(&cfg.model, rows, t),
            one_ws: Workspace::new(&cfg.model, 1, t),
            inputs: vec![0; rows * t],
            targets: vec![0; rows * t],
        }
    }

    /// Mean validation loss of `model` over `windows` of `val`, split across the workers of
    /// `comm`, summed with an all-reduce.
    pub fn evaluate(
        &mut self,
        model: &Gpt,
        comm: &mut Comm,
        algorithm: Algorithm,
        val: &[u32],
        windows: &[usize],
    ) -> Result<f64, CommError> {
        let mine = &windows[chunk_range(windows.len(), comm.size(), comm.rank())];
        let mut sums = [0f64, 0f64]; // [sum of per-window mean losses, windows]
        let rows = self.ws.batch();
        for batch in mine.chunks(rows) {
            if batch.len() == rows {
                sums[0] += self.eval_batch(model, val, batch, false);
            } else {
                // A final partial batch: one window at a time, so no padding enters the mean.
                for w in batch {
                    sums[0] += self.eval_batch(model, val, std::slice::from_ref(w), true);
                }
            }
            sums[1] += batch.len() as f64;
        }
        comm.all_reduce(&mut sums, algorithm)?;
        Ok(sums[0] / sums[1].max(1.0))
    }

    /// Sum over `windows` of each window's mean loss.
    fn eval_batch(&mut self, model: &Gpt, val: &[u32], windows: &[usize], single: bool) -> f64 {
        let t = self.ws.seq_len();
        for (i, &w) in windows.iter().enumerate() {
            let rows = i * t..(i + 1) * t;
            let (inp, tgt) = (&mut self.inputs[rows.clone()], &mut self.targets[rows]);
            sampler::fill_val(val, w..w + 1, t, inp, tgt);
        }
        let len = windows.len() * t;
        let ws = if single {
            &mut self.one_ws
        } else {
            &mut self.ws
        };
        let loss = model
            .forward(ws, &self.inputs[..len], Some(&self.targets[..len]))
            .expect("forward with targets returns a loss");
        loss as f64 * windows.len() as f64
    }
}

/// `--check-replicas`: every worker's parameter hash, gathered. Returns the first worker whose
/// hash differs from worker 0's, with both hashes.
pub fn replicas_differ(
    params: &[f32],
    comm: &mut Comm,
) -> Result<Option<(usize, u64, u64)>, CommError> {
    let mut hashes = vec![0i64; comm.size()];
    // The u64 hash travels as i64 bits; a sum with zeros elsewhere gathers them.
    hashes[comm.rank()] = checkpoint::param_fnv(params) as i64;
    comm.all_reduce(&mut hashes, Algorithm::Naive)?;
    Ok((hashes.iter().position(|&h| h != hashes[0]))
        .map(|w| (w, hashes[w] as u64, hashes[0] as u64)))
}
