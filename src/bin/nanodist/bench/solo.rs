//! The two modes of `nanodist bench` that run outside the training loop, one step timed at a
//! time: **op parallel**, one replica with N threads inside its kernels, and **independent**,
//! N replicas, one thread each, that never meet.
//!
//! ```text
//!   op parallel      [ replica: every kernel split N ways ]        one model, N threads
//!   independent      [ replica 0 ] [ replica 1 ] ... [ N-1 ]       N models, no all-reduce
//! ```
//! Both time the same step as training does (forward, backward, clipping, AdamW), so their
//! figures sit in the same table as strong and weak scaling.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::point::Point;
use nanodist::config::TrainConfig;
use nanodist::data;
use nanodist::model::Gpt;
use nanodist::optim::AdamW;
use nanodist::step::{train_step, Alone, Batch, Replica, Unobserved};
use nanodist::Error;

/// What both modes share: the configuration, the corpus, the global batch, the timed steps
/// per point, and the machine's cores (to mark oversubscribed points).
pub(super) struct Solo<'a> {
    pub base: &'a TrainConfig,
    pub corpus: &'a data::Corpus,
    pub batch: usize,
    pub steps: usize,
    pub cores: usize,
}

impl Solo<'_> {
    /// One replica, `threads` threads inside the kernels, the whole batch per step.
    pub fn op_parallel(&self, threads: usize) -> Result<Point, Error> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Config(format!("cannot start {threads} threads: {e}")))?;
        let (done, start) = (AtomicBool::new(false), StartLine::new(1));
        let mut times = pool.install(|| self.time_steps(threads, 0..self.batch, &start, &done))?;
        times.sort_by(f64::total_cmp);
        let median_ms = times[times.len() / 2];
        Ok(self.point("op-parallel", threads, median_ms))
    }

    /// N replicas that never meet: worker w trains its own copy on the sequences strong scaling
    /// gives it (w*B/N..(w+1)*B/N of each step), one thread each, with no all-reduce and so no
    /// waiting. It is data parallelism with the synchronisation taken out: against one worker it
    /// shows what the cores deliver side by side (shared caches and memory, the host's moods),
    /// and against `strong` at the same N, what synchronising costs.
    pub fn independent(&self, n: usize) -> Result<Point, Error> {
        let per = self.batch / n;
        // All N start timing together, after every one has built its model and warmed up (a
        // worker timing while another still builds would share the cores with less than N);
        // the first to finish its steps stops the others' timing (a worker left alone at the
        // end would have the cores to itself). So every timed step ran while all N were busy,
        // and with more workers than cores each step's time includes its waits for a core.
        let (done, start) = (AtomicBool::new(false), StartLine::new(n));
        let times: Result<Vec<Vec<f64>>, Error> = std::thread::scope(|s| {
            let (done, start) = (&done, &start);
            let handles: Vec<_> = (0..n)
                .map(|w| {
                    let seqs = w * per..(w + 1) * per;
                    s.spawn(move || self.time_steps(1, seqs, start, done))
                })
                .collect();
            (handles.into_iter().enumerate())
                .map(|(w, h)| {
                    h.join().map_err(|_| {
                        Error::Worker(format!("independent worker {w} of {n} panicked; see above"))
                    })?
                })
                .collect()
        });
        // Throughput is every worker's timed steps over its own timed span, summed: a median step
        // would favour whichever workers the scheduler let run most when oversubscribed. The step
        // time reported is the one that gives that throughput on the whole batch.
        let means: Vec<f64> = (times?.iter())
            .map(|t| t.iter().sum::<f64>() / t.len() as f64)
            .collect();
        let seqs_per_s: f64 = means.iter().map(|ms| per as f64 / (ms / 1e3)).sum();
        let step_ms = self.batch as f64 / seqs_per_s * 1e3;
        Ok(Point {
            worker_step_ms: means,
            ..self.point("independent", n, step_ms)
        })
    }

    /// A point of `threads` threads whose step of the whole batch takes `step_ms`, with no
    /// communication.
    fn point(&self, mode: &str, threads: usize, step_ms: f64) -> Point {
        let tokens = self.batch * self.base.model.block_size;
        let tokens_per_s = tokens as f64 / (step_ms / 1e3);
        Point {
            mode: mode.into(),
            workers: threads,
            batch: self.batch,
            tokens_per_s,
            step_ms,
            efficiency: 0.0,
            compute_ms: step_ms,
            comm_ms: 0.0,
            wait_ms: 0.0,
            predicted_comm_ms: 0.0,
            gflop_per_step: self.base.model.flops_per_step(tokens) / 1e9,
            peak_gflops: 0.0,
            mfu: 0.0,
            tokens_per_s_rounds: vec![tokens_per_s],
            oversubscribed: threads > self.cores,
            cores: self.cores,
            worker_step_ms: Vec::new(),
        }
    }

    /// The times (ms) of `self.steps` training steps of one replica on sequences `seqs` of each step,
    /// after 5 untimed warm-up steps of [`train_step`] (forward, backward, clipping, AdamW), with `threads` threads
    /// inside the kernels (of the current rayon pool). It waits at `start` between the warm-up
    /// and the timed steps. Once `done` is set it stops, without timing the step in flight, as
    /// soon as it has timed one step; it sets `done` when it has all its steps.
    fn time_steps(
        &self,
        threads: usize,
        seqs: std::ops::Range<usize>,
        start: &StartLine,
        done: &AtomicBool,
    ) -> Result<Vec<f64>, Error> {
        let (base, corpus, steps) = (self.base, self.corpus, self.steps);
        let mut cfg = base.clone();
        (cfg.parallel.batch, cfg.parallel.workers) = (seqs.len(), 1);
        let model = Gpt::new(cfg.model.clone(), cfg.seed);
        let adam = AdamW::new(model.params.len());
        let mut replica = Replica::new(0, model, adam, &cfg);
        replica.ws.set_threads(threads);
        let mut times = Vec::new();
        let mut arrival = Arrival {
            line: start,
            arrived: false,
        };
        for step in 0..steps + 5 {
            if step == 5 {
                arrival.arrive_and_wait();
            }
            let start = Instant::now();
            let batch = Batch {
                tokens: &corpus.train,
                seed: cfg.seed,
                step,
                sequences: seqs.clone(),
            };
            // a replica alone: nothing to exchange, nothing observed
            train_step(&mut replica, &cfg, &batch, &mut Alone, &mut Unobserved)?;
            if done.load(Ordering::Relaxed) && !times.is_empty() {
                break;
            }
            if step >= 5 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        done.store(true, Ordering::Relaxed);
        Ok(times)
    }
}

/// Where the timed steps of [`Solo::independent`]'s workers start together: each worker
/// arrives once, at the end of its warm-up, and waits for the others.
pub(super) struct StartLine {
    arrived: AtomicUsize,
    workers: usize,
}

impl StartLine {
    fn new(workers: usize) -> Self {
        StartLine {
            arrived: AtomicUsize::new(0),
            workers,
        }
    }
}

/// One worker's place at the [`StartLine`]. A worker that leaves before it arrives (an
/// error, a panic) arrives as it leaves, when this drops: nobody waits for it for ever.
struct Arrival<'a> {
    line: &'a StartLine,
    arrived: bool,
}

impl Arrival<'_> {
    fn arrive(&mut self) {
        if !self.arrived {
            self.arrived = true;
            self.line.arrived.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Arrives, then waits for every worker. It sleeps between looks rather than spinning:
    /// with more workers than cores, the ones still warming up need the cores.
    fn arrive_and_wait(&mut self) {
        self.arrive();
        while self.line.arrived.load(Ordering::Acquire) < self.line.workers {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.arrive();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_line_does_not_wait_for_a_worker_that_left_before_arriving() {
        let line = std::sync::Arc::new(StartLine::new(2));
        let (tx, rx) = std::sync::mpsc::channel();
        // detached, so that a waiter that never returns fails the test instead of hanging it
        let theirs = std::sync::Arc::clone(&line);
        std::thread::spawn(move || {
            let mut mine = Arrival {
                line: &theirs,
                arrived: false,
            };
            mine.arrive_and_wait();
            tx.send(()).unwrap();
        });
        // the other worker fails during its warm-up: its place drops unarrived
        let gone = Arrival {
            line: &line,
            arrived: false,
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(rx.try_recv().is_err(), "went on before the other arrived");
        drop(gone);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("still waiting for a worker that left");
        assert_eq!(line.arrived.load(Ordering::Acquire), 2);
    }
}
