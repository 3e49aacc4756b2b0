//! `nanodist train` under `mpirun` (cargo feature `mpi`): R processes of W worker threads.
//!
//! ```text
//!   every rank   hash its command line (all but the program's path); gather the hashes:
//!                any rank that differs from rank 0 -> rank 0 names it, all stop
//!   rank 0       reads the flags, the data, the checkpoint (--resume); takes the run
//!                directory; broadcasts config + corpus + starting state (one payload)
//!   rank r > 0   receives that payload: it needs no data file and writes nothing
//!   every rank   train::train with its W threads, world ranks r*W .. r*W + W, and an MPI
//!                link for thread 0 (collective::hierarchical); rank 0 records the run
//!   a failure    the rank prints one line naming itself, then MPI_Abort ends the job;
//!                a rank that dies is named by mpirun, which stops the others (SIGTERM):
//!                rank 0 then prints one line with the command that resumes the run
//! ```
//!
//! The run directory, its checkpoints and everything printed belong to rank 0, as they
//! belong to the main thread without MPI. A resumed run may have another number of
//! processes or threads: the state is one replica's, whoever trained it.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use nanodist::checkpoint::{fnv1a64, FNV_OFFSET};
use nanodist::collective::mpi::Mpi;
use nanodist::collective::CrossLink;
use nanodist::config::TrainConfig;
use nanodist::data::{Corpus, Vocab};
use nanodist::optim::AdamW;
use nanodist::train::{self, RunOptions, TrainState};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::cli::TrainArgs;
use crate::job::{Job, RunTrain};

/// `nanodist train` as one rank of an mpirun job; rank 0 runs `run_train` (main.rs's
/// `nanodist train`) with itself as the [`Job`].
pub fn train(mpi: &Mpi, args: TrainArgs, run_train: RunTrain) -> ExitCode {
    let (rank, ranks) = (mpi.rank(), mpi.size());
    // 1. The same flags on every rank (the program's own path may differ between hosts).
    let line: Vec<String> = std::env::args().skip(1).collect();
    let hashes = mpi.all_gather(fnv1a64(FNV_OFFSET, line.join("\0").as_bytes()));
    if let Some(r) = hashes.iter().position(|&h| h != hashes[0]) {
        if rank == 0 {
            eprintln!(
                "error: rank {r} was started with other flags than rank 0: give every rank the same command line (mpirun -n {ranks} nanodist train ...)"
            );
        }
        return ExitCode::FAILURE;
    }
    let resume_hint = Arc::new(Mutex::new(None));
    if let Err(e) = line_when_stopped(rank, ranks, Arc::clone(&resume_hint)) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if rank == 0 {
        let mut job = Rank0 {
            mpi,
            started: false,
            resume_hint,
        };
        match run_train(args, Some(&mut job)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                if job.started {
                    mpi.abort(1) // the other ranks may be waiting for this one
                }
                ExitCode::FAILURE
            }
        }
    } else {
        let mut payload = Vec::new();
        mpi.broadcast_bytes(&mut payload);
        if payload.is_empty() {
            return ExitCode::FAILURE; // rank 0 could not start the run, and said why
        }
        let (cfg, corpus, init) = decode(&payload);
        let opts = RunOptions {
            cross: Some(mpi.link(cfg.parallel.mpi_allreduce)),
            ..RunOptions::default()
        };
        match train::train(&cfg, &corpus, init, &opts, |_| Ok(())) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: rank {rank} of {ranks} ({}): {e}", mpi.host());
                mpi.abort(1)
            }
        }
    }
}

/// Rank 0's view of the job, for `run_train_in`.
struct Rank0<'a> {
    mpi: &'a Mpi,
    /// The others have the run and are training: a failure here must stop them.
    started: bool,
    /// The run directory, for the line printed when mpirun stops the job.
    resume_hint: Arc<Mutex<Option<String>>>,
}

impl Job for Rank0<'_> {
    fn processes(&self) -> usize {
        self.mpi.size()
    }

    fn share(&mut self, run: Option<(&TrainConfig, &Corpus, &TrainState)>) -> CrossLink {
        let mut payload = run.map_or_else(Vec::new, |(c, d, s)| encode(c, d, s));
        self.mpi.broadcast_bytes(&mut payload);
        self.started = run.is_some();
        self.mpi
            .link(run.map_or_else(Default::default, |r| r.0.parallel.mpi_allreduce))
    }

    fn run_dir(&mut self, dir: &std::path::Path) {
        *self.resume_hint.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
            "mpirun -n {} nanodist train --resume {}",
            self.mpi.size(),
            dir.display()
        ));
    }
}

/// When mpirun stops the job (a rank died, or Ctrl-C), it sends the others SIGTERM (then
/// SIGKILL): rank 0 says so in one line, with the command that resumes the run from its
/// last checkpoint, and every rank exits at once. (Without MPI, the first SIGINT/SIGTERM
/// stops at a step boundary instead; across processes that would need the ranks to agree
/// on the boundary, and mpirun does not wait for them.)
fn line_when_stopped(
    rank: usize,
    ranks: usize,
    resume_hint: Arc<Mutex<Option<String>>>,
) -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(|e| {
        format!("cannot catch SIGTERM ({e}): run nanodist where signals can be caught")
    })?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            if rank == 0 {
                let hint = resume_hint
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                eprintln!(
                    "nanodist: mpirun stopped the job of {ranks} ranks (signal {sig}): another rank ended or the job was interrupted (mpirun names the rank){}",
                    hint.map_or(String::new(), |h| format!("; continue from the last checkpoint with: {h}"))
                );
            }
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

/// The payload rank 0 broadcasts: a JSON header, then the numbers as little-endian bytes.
///
/// ```text
///   [u64 header length][header JSON: config, corpus name, vocabulary, entropy floor,
///                       step, adam_t, lengths][train u32s][val u32s][params f32s][m f32s][v f32s]
/// ```
fn encode(cfg: &TrainConfig, corpus: &Corpus, init: &TrainState) -> Vec<u8> {
    let header = serde_json::json!({
        "config": cfg,
        "name": corpus.name,
        "vocab": corpus.vocab.as_string(),
        "floor_nats": corpus.floor_nats,
        "step": init.step,
        "adam_t": init.adam.t,
        "lengths": [corpus.train.len(), corpus.val.len(), init.params.len()],
    })
    .to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for tokens in [&corpus.train, &corpus.val] {
        tokens
            .iter()
            .for_each(|t| out.extend_from_slice(&t.to_le_bytes()));
    }
    for floats in [&init.params, &init.adam.m, &init.adam.v] {
        floats
            .iter()
            .for_each(|f| out.extend_from_slice(&f.to_le_bytes()));
    }
    out
}

/// The inverse of [`encode`]. The payload comes from rank 0 of the same binary, so a
/// malformed one is a bug: it panics.
fn decode(payload: &[u8]) -> (TrainConfig, Corpus, TrainState) {
    let (len, rest) = payload.split_at(8);
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
    let (header, mut rest) = rest.split_at(len);
    let h: serde_json::Value = serde_json::from_slice(header).expect("rank 0's header");
    let cfg: TrainConfig = serde_json::from_value(h["config"].clone()).expect("rank 0's config");
    let n = |i: usize| h["lengths"][i].as_u64().expect("a length") as usize;
    let mut take = |count: usize| {
        let (head, tail) = rest.split_at(4 * count);
        rest = tail;
        head.chunks_exact(4)
            .map(|b| <[u8; 4]>::try_from(b).expect("4 bytes"))
    };
    let train: Vec<u32> = take(n(0)).map(u32::from_le_bytes).collect();
    let val: Vec<u32> = take(n(1)).map(u32::from_le_bytes).collect();
    let params: Vec<f32> = take(n(2)).map(f32::from_le_bytes).collect();
    let m: Vec<f32> = take(n(2)).map(f32::from_le_bytes).collect();
    let v: Vec<f32> = take(n(2)).map(f32::from_le_bytes).collect();
    let corpus = Corpus {
        name: h["name"].as_str().unwrap_or("?").to_string(),
        vocab: Vocab::from_chars(h["vocab"].as_str().expect("rank 0's vocabulary"))
            .expect("rank 0's vocabulary"),
        train,
        val,
        floor_nats: h["floor_nats"].as_f64(),
    };
    let init = TrainState {
        params,
        adam: AdamW {
            m,
            v,
            t: h["adam_t"].as_u64().unwrap_or(0),
        },
        step: h["step"].as_u64().unwrap_or(0) as usize,
    };
    (cfg, corpus, init)
}
