//! Local SGD and DiLoCo: synchronise every H steps instead of every step.
//!
//! ```text
//!   anchor = the parameters every worker agreed on at the last synchronisation
//!   H inner steps, each worker alone:  forward, backward on MY shard, AdamW on MY replica
//!   then, together:
//!     delta_w = anchor - params_w                  how far worker w moved (a "gradient")
//!     delta   = (sum_w delta_w) / N                one all-reduce of P floats per H steps
//!     outer step on the anchor:
//!       sgd:       anchor -= outer_lr * delta                     (outer_lr 1: averaging)
//!       nesterov:  v = mu v + delta;  anchor -= outer_lr (delta + mu v)       (DiLoCo)
//!     params_w = anchor                           the replicas are equal again
//!
//!   worker 0  |step|step|step|step|== sync ==|step|step|step|step|== sync ==|
//!   worker 1  |step|step|step|step|== sync ==|step| ...            H = 4
//! ```
//!
//! The bytes sent fall by H; the price is that replicas drift apart between syncs, and the
//! outer optimizer (DiLoCo: Nesterov, lr 0.7, momentum 0.9; Douillard et al. 2023) turns
//! the averaged drift into progress. Each worker's inner AdamW keeps its own moments.
//!
//! [`LocalSgd`] is a [`GradientExchange`], so the inner steps are the one training step:
//! its `sum` keeps the worker's own gradient (rescaled to the mean over its own shard, as
//! if it trained alone), and its `update` is AdamW, followed every H steps by the outer
//! step. `--sync-every 1` never gets here: it is synchronous data parallelism, the same
//! code and the same bits.

use crate::collective::{Algorithm, Comm};
use crate::config::{OptimConfig, TrainConfig};
use crate::error::Error;
use crate::parallel::data_parallel::{gone, wait_link};
use crate::parallel::sync_options::Outer;
use crate::step::{self, GradientExchange, Observer, Replica};
use crate::trace::Phase;

/// Local SGD's exchange: nothing between syncs, an outer step every H steps.
pub struct LocalSgd {
    /// This worker's endpoint of the group.
    pub comm: Comm,
    /// The all-reduce algorithm of the deltas.
    pub algorithm: Algorithm,
    /// H, steps between synchronisations.
    pub sync_every: usize,
    /// The run's last step + 1: the replicas are synchronised after it, whatever H.
    pub steps: usize,
    /// The outer optimizer.
    pub outer: Outer,
    /// Its learning rate.
    pub outer_lr: f32,
    /// Its momentum (Nesterov).
    pub outer_momentum: f32,
    /// The parameters of the last synchronisation.
    anchor: Vec<f32>,
    /// Nesterov's velocity, laid out like the parameters.
    velocity: Vec<f32>,
    /// The summed deltas.
    delta: Vec<f32>,
}

impl LocalSgd {
    /// Local SGD from the parameters `init` (the same on every worker).
    pub fn new(comm: Comm, algorithm: Algorithm, init: &[f32], cfg: &TrainConfig) -> Self {
        let p = &cfg.parallel;
        LocalSgd {
            comm,
            algorithm,
            sync_every: p.sync_every,
            steps: cfg.schedule.steps,
            outer: p.outer,
            outer_lr: p.outer_lr,
            outer_momentum: p.outer_momentum,
            anchor: init.to_vec(),
            velocity: vec![0.0; init.len()],
            delta: vec![0.0; init.len()],
        }
    }

    /// Whether the replicas synchronise after `step`.
    pub fn syncs_after(&self, step: usize) -> bool {
        (step + 1) % self.sync_every == 0 || step + 1 == self.steps
    }

    /// The outer step: average the deltas, move the anchor, reset `params` to it.
    fn synchronise<O: Observer>(
        &mut self,
        params: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        for ((d, a), p) in self.delta.iter_mut().zip(&self.anchor).zip(params.iter()) {
            *d = a - p;
        }
        let (comm, delta, algorithm) = (&mut self.comm, &mut self.delta, self.algorithm);
        let (r, owed) = obs.time(Phase::AllReduce(0), step, || {
            comm.deferring_link(|c| c.all_reduce(delta, algorithm))
        });
        r.map_err(gone(step))?;
        wait_link(owed, step, obs);
        let n = self.comm.size() as f32;
        let (lr, mu) = (self.outer_lr, self.outer_momentum);
        let (anchor, velocity, delta) = (&mut self.anchor, &mut self.velocity, &self.delta);
        obs.time(Phase::Optimizer, step, || {
            for ((a, v), &d) in anchor.iter_mut().zip(velocity.iter_mut()).zip(delta) {
                let d = d / n;
                match self.outer {
                    Outer::Sgd => *a -= lr * d,
                    Outer::Nesterov => {
                        *v = mu * *v + d;
                        *a -= lr * (d + mu * *v);
                    }
                }
            }
            params.copy_from_slice(anchor);
        });
        Ok(())
    }
}

impl GradientExchange for LocalSgd {
    /// My gradient alone, as the mean over my shard: the step scaled it by the GLOBAL
    /// 1/(B*T), so it is multiplied by N.
    fn sum<O: Observer>(&mut self, grads: &mut [f32], _: usize, _: &mut O) -> Result<(), Error> {
        let n = self.comm.size() as f32;
        grads.iter_mut().for_each(|g| *g *= n);
        Ok(())
    }

    fn sum_exact<O: Observer>(
        &mut self,
        acc: &mut [i64],
        _: usize,
        _: &mut O,
    ) -> Result<(), Error> {
        let n = self.comm.size() as i64;
        acc.iter_mut().for_each(|a| *a = a.wrapping_mul(n));
        Ok(())
    }

    /// AdamW on my replica; every H steps (and after the last) the outer step.
    fn update<O: Observer>(
        &mut self,
        r: &mut Replica,
        lr: f32,
        optim: &OptimConfig,
        step: usize,
        obs: &mut O,
    ) -> Result<f32, Error> {
        let norm = obs.time(Phase::Optimizer, step, || step::update(r, lr, optim));
        if self.syncs_after(step) {
            self.synchronise(&mut r.model.params, step, obs)?;
        }
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DiLoCo's outer step on two workers, two rounds, computed by hand.
    #[test]
    fn two_outer_nesterov_steps_by_hand() {
        // anchor [1, 2]; round 1: workers end at [0.5, 2.5] and [1.5, 1.0]
        //   delta = ([0.5, -0.5] + [-0.5, 1.0]) / 2 = [0, 0.25]
        //   v = [0, 0.25]; anchor -= 0.7 (delta + 0.9 v) = [1, 2 - 0.7 * 0.475] = [1, 1.6675]
        // round 2: both end at anchor - [0.1, 0.1] -> delta = [0.1, 0.1]
        //   v = 0.9 [0, 0.25] + [0.1, 0.1] = [0.1, 0.325]
        //   anchor -= 0.7 ([0.1, 0.1] + 0.9 [0.1, 0.325]) = 0.7 [0.19, 0.3925]
        let results: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = crate::collective::group(2)
                .into_iter()
                .map(|comm| {
                    s.spawn(move || {
                        let rank = comm.rank();
                        let mut cfg = crate::config::TrainConfig::default();
                        cfg.parallel.sync_every = 1;
                        let mut l = LocalSgd::new(comm, Algorithm::Ring, &[1.0, 2.0], &cfg);
                        let mut params = if rank == 0 {
                            vec![0.5, 2.5]
                        } else {
                            vec![1.5, 1.0]
                        };
                        let mut obs = crate::step::Unobserved;
                        l.synchronise(&mut params, 0, &mut obs).unwrap();
                        let after_one = params.clone();
                        params.iter_mut().for_each(|p| *p -= 0.1);
                        l.synchronise(&mut params, 1, &mut obs).unwrap();
                        [after_one, params].concat()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let want = [1.0, 1.6675, 1.0 - 0.7 * 0.19, 1.6675 - 0.7 * 0.3925];
        for got in &results {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        }
        assert_eq!(results[0], results[1], "both workers hold the same anchor");
    }
}
