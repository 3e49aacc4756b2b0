//! What a worker does between steps: the validation loss, the replica check, checkpoints.
//!
//! Each is a collective act too: every worker evaluates its share of the validation windows
//! and an all-reduce sums the losses; every worker hashes its replica and an all-reduce
//! gathers the hashes; rank 0 alone writes the checkpoint (all replicas are identical), and
//! the others simply wait for it at the next collective.

use super::{comm_err, Report, Worker};
use crate::checkpoint::{self, Checkpoint};
use crate::collective::chunk_range;
use crate::data::sampler;
use crate::trace::{Phase, Span};
use crate::Error;

impl Worker<'_> {
    /// Mean validation loss over `windows`, split across workers, summed with an all-reduce.
    pub(super) fn evaluate(&mut self, windows: &[usize], step: usize) -> Result<f64, Error> {
        let (cfg, clock) = (self.ctx.cfg, self.ctx.clock);
        let mine = &windows[chunk_range(windows.len(), cfg.workers, self.rank)];
        let start = clock.now_us();
        let mut sums = [0f64, 0f64]; // [sum of per-window mean losses, windows]
        let rows = self.eval_ws.batch();
        for batch in mine.chunks(rows) {
            if batch.len() == rows {
                sums[0] += self.eval_batch(batch, false);
            } else {
                // A final partial batch: one window at a time, so no padding enters the mean.
                for w in batch {
                    sums[0] += self.eval_batch(std::slice::from_ref(w), true);
                }
            }
            sums[1] += batch.len() as f64;
        }
        self.spans.push(Span {
            phase: Phase::Eval,
            step,
            start_us: start,
            dur_us: clock.now_us() - start,
            comm_thread: false,
        });
        self.comm
            .all_reduce(&mut sums, cfg.allreduce)
            .map_err(comm_err(self.rank, step))?;
        Ok(sums[0] / sums[1].max(1.0))
    }

    /// Sum over `windows` of each window's mean loss.
    fn eval_batch(&mut self, windows: &[usize], single: bool) -> f64 {
        let t = self.ctx.cfg.model.block_size;
        for (i, &w) in windows.iter().enumerate() {
            let rows = i * t..(i + 1) * t;
            let (inp, tgt) = (&mut self.inputs[rows.clone()], &mut self.targets[rows]);
            sampler::fill_val(&self.ctx.corpus.val, w..w + 1, t, inp, tgt);
        }
        let len = windows.len() * t;
        let ws = if single {
            &mut self.one_ws
        } else {
            &mut self.eval_ws
        };
        let loss = self
            .model
            .forward(ws, &self.inputs[..len], Some(&self.targets[..len]))
            .expect("forward with targets returns a loss");
        loss as f64 * windows.len() as f64
    }

    /// `--check-replicas`: every worker's parameter hash must match.
    pub(super) fn check_replicas(&mut self, step: usize) -> Result<(), Error> {
        let n = self.ctx.cfg.workers;
        let mut hashes = vec![0i64; n];
        // The u64 hash travels as i64 bits; a sum with zeros elsewhere gathers them.
        hashes[self.rank] = checkpoint::param_fnv(&self.model.params) as i64;
        self.comm
            .all_reduce(&mut hashes, crate::collective::Algorithm::Naive)
            .map_err(comm_err(self.rank, step))?;
        if let Some(w) = hashes.iter().position(|&h| h != hashes[0]) {
            return Err(Error::Worker(format!(
                "replicas diverged after step {step}: worker {w} has param hash {:016x}, worker 0 {:016x}",
                hashes[w] as u64, hashes[0] as u64
            )));
        }
        Ok(())
    }

    pub(super) fn save_checkpoint(&mut self, done: usize) -> Result<(), Error> {
        let Some(dir) = self.ctx.out else {
            return Ok(());
        };
        let ck = Checkpoint {
            config: self.ctx.cfg.clone(),
            vocab: self.ctx.corpus.vocab.as_string(),
            step: done,
            params: self.model.params.clone(),
            adam_m: self.adam.m.clone(),
            adam_v: self.adam.v.clone(),
            adam_t: self.adam.t,
        };
        let clock = self.ctx.clock;
        clock.time(&mut self.spans, Phase::Checkpoint, done, || {
            checkpoint::save(dir, &ck)
        })?;
        let _ = self.ctx.reports.send(Report::Checkpoint { step: done });
        Ok(())
    }
}
