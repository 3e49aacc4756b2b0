//! Criterion benchmark of each all-reduce at the model's size: 804,096 f32 (3.2 MB) on 2
//! workers.
//!
//! ```text
//! cargo bench --bench allreduce
//! ```
//!
//! The workers are spawned once and kept alive: worker 0 is the benchmark thread itself,
//! the others wait for a command ("run `iters` all-reduces with this algorithm"), so a
//! sample measures the collective, not thread start-up. Each sample starts with a barrier.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam::channel::{unbounded, Receiver, Sender};
use nanodist::collective::{group, Algorithm, Comm};

const WORKERS: usize = 2;
const FLOATS: usize = 804_096;

/// Worker 0 (the caller) plus worker threads 1..N that run batches on command.
struct Pool {
    comm: Comm,
    buf: Vec<f32>,
    commands: Vec<Sender<Option<(Algorithm, u64)>>>,
    done: Receiver<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    fn new(n: usize, floats: usize) -> Pool {
        let mut comms = group(n).into_iter();
        let comm = comms.next().unwrap();
        let (done_tx, done) = unbounded();
        let (mut commands, mut threads) = (Vec::new(), Vec::new());
        for mut c in comms {
            let (tx, rx) = unbounded::<Option<(Algorithm, u64)>>();
            let done_tx = done_tx.clone();
            commands.push(tx);
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![1.0f32; floats];
                while let Ok(Some((algo, iters))) = rx.recv() {
                    c.barrier().unwrap();
                    for _ in 0..iters {
                        c.all_reduce(&mut buf, algo).unwrap();
                    }
                    done_tx.send(()).unwrap();
                }
            }));
        }
        Pool {
            comm,
            buf: vec![1.0f32; floats],
            commands,
            done,
            threads,
        }
    }

    /// Runs `iters` all-reduces on every worker; the time worker 0 took.
    fn run(&mut self, algo: Algorithm, iters: u64) -> Duration {
        for c in &self.commands {
            c.send(Some((algo, iters))).unwrap();
        }
        self.comm.barrier().unwrap();
        let t = Instant::now();
        for _ in 0..iters {
            self.comm.all_reduce(&mut self.buf, algo).unwrap();
        }
        let elapsed = t.elapsed();
        for _ in &self.commands {
            self.done.recv().unwrap();
        }
        elapsed
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for c in &self.commands {
            let _ = c.send(None);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn allreduce(c: &mut Criterion) {
    let mut pool = Pool::new(WORKERS, FLOATS);
    let mut g = c.benchmark_group(format!("allreduce_{FLOATS}f32_{WORKERS}workers"));
    g.throughput(Throughput::Bytes((4 * FLOATS) as u64));
    g.sample_size(30).measurement_time(Duration::from_secs(3));
    for algo in Algorithm::ALL {
        g.bench_function(algo.name(), |b| {
            b.iter_custom(|iters| pool.run(algo, iters))
        });
    }
    g.finish();
}

criterion_group!(benches, allreduce);
criterion_main!(benches);
