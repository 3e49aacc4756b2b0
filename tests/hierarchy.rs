//! The hierarchical all-reduce without MPI: "processes" that are groups of threads, joined
//! by a link that is itself a thread group. This checks, in every `cargo test`, what
//! `tests/mpi.rs` checks under `mpirun`: world ranks, sums across the world, and a run
//! spread over processes ending with the same bits as the same workers on threads.

use nanodist::collective::{
    group, hierarchical, Algorithm, Comm, CommError, CrossLink, CrossProcess, Elems,
};
use nanodist::config::{ModelConfig, TrainConfig};
use nanodist::data::{self, Corpus};
use nanodist::train::{self, RunOptions};

/// A link between "processes" made of one thread `Comm` per process.
struct ThreadLink(Comm);

impl CrossProcess for ThreadLink {
    fn process(&self) -> usize {
        self.0.rank()
    }
    fn processes(&self) -> usize {
        self.0.size()
    }
    fn all_reduce(&mut self, buf: Elems<'_>) -> Result<(), CommError> {
        match buf {
            Elems::F32(b) => self.0.all_reduce(b, Algorithm::Ring),
            Elems::F64(b) => self.0.all_reduce(b, Algorithm::Ring),
            Elems::I64(b) => self.0.all_reduce(b, Algorithm::Ring),
            Elems::Usize(b) => self.0.all_reduce(b, Algorithm::Ring),
            Elems::Other => panic!("not carried"),
        }
    }
    fn barrier(&mut self) -> Result<(), CommError> {
        self.0.barrier()
    }
    fn name(&self) -> String {
        "threads".into()
    }
}

/// One link per "process".
fn links(processes: usize) -> Vec<CrossLink> {
    group(processes)
        .into_iter()
        .map(|c| CrossLink::new(Box::new(ThreadLink(c))))
        .collect()
}

#[test]
fn world_ranks_and_sums_span_every_process() {
    let (processes, threads) = (3, 2);
    let results: Vec<(usize, usize, Vec<f64>)> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for link in links(processes) {
            for mut comm in hierarchical(threads, &link) {
                handles.push(s.spawn(move || {
                    let r = comm.rank();
                    let mut x = vec![r as f64 + 1.0; 5];
                    comm.barrier().unwrap();
                    comm.all_reduce(&mut x, Algorithm::Shared).unwrap();
                    (r, comm.size(), x)
                }));
            }
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ranks: Vec<usize> = results.iter().map(|r| r.0).collect();
    ranks.sort_unstable();
    assert_eq!(ranks, (0..6).collect::<Vec<_>>());
    for (_, size, x) in results {
        assert_eq!(size, 6);
        assert_eq!(x, vec![21.0; 5]); // 1 + 2 + ... + 6
    }
}

fn corpus() -> Corpus {
    data::load("tales", 7).expect("built-in corpus")
}

fn tiny(corpus: &Corpus, workers: usize, processes: usize) -> TrainConfig {
    let mut cfg = TrainConfig {
        model: ModelConfig {
            vocab_size: corpus.vocab.len(),
            block_size: 16,
            n_layer: 1,
            n_head: 2,
            n_embd: 16,
        },
        seed: 3,
        ..TrainConfig::default()
    };
    (cfg.parallel.workers, cfg.parallel.batch) = (workers, 8);
    (cfg.parallel.processes, cfg.parallel.deterministic) = (processes, true);
    (cfg.schedule.steps, cfg.schedule.eval_every) = (5, 0);
    cfg
}

#[test]
fn two_processes_of_two_threads_give_the_bits_of_four_threads() {
    let corpus = corpus();
    let opts = RunOptions {
        final_eval: false,
        ..RunOptions::default()
    };
    let threads = tiny(&corpus, 4, 1);
    let expected = train::train(
        &threads,
        &corpus,
        train::initial_state(&threads),
        &opts,
        |_| Ok(()),
    )
    .unwrap()
    .summary
    .param_hash;
    for algo in [Algorithm::Ring, Algorithm::Shared] {
        let mut cfg = tiny(&corpus, 4, 2);
        cfg.parallel.allreduce = algo;
        let hashes: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = links(2)
                .into_iter()
                .map(|link| {
                    let (cfg, corpus) = (&cfg, &corpus);
                    let opts = RunOptions {
                        cross: Some(link),
                        ..opts.clone()
                    };
                    s.spawn(move || {
                        let init = train::initial_state(cfg);
                        let out = train::train(cfg, corpus, init, &opts, |_| Ok(())).unwrap();
                        out.summary.param_hash
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(hashes, vec![expected.clone(); 2], "--allreduce {algo}");
    }
}

#[test]
fn a_run_spread_over_processes_needs_its_link() {
    let corpus = corpus();
    let cfg = tiny(&corpus, 4, 2);
    let err = train::train(
        &cfg,
        &corpus,
        train::initial_state(&cfg),
        &RunOptions::default(),
        |_| Ok(()),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("mpirun -n 2"), "{err}");
}
