//! Watch a ring and a tree all-reduce, step by step, on 4 workers and 8 numbers each.
//!
//! ```text
//! cargo run --release --example allreduce_walkthrough
//! ```
//!
//! Worker r starts with 10^r everywhere (1, 10, 100, 1000), so every digit of a partial sum
//! tells whose numbers are in it: 1100 = workers 2 and 3. Shortened expected output:
//!
//! ```text
//! == ring all-reduce: 4 workers, 8 numbers, 4 chunks ==
//! start
//!   worker 0: [     1     1 |     1     1 |     1     1 |     1     1 ]
//!   ...
//! step 1: reduce-scatter
//!   worker 0 sends chunk 3 to worker 1, which adds its own
//!   worker 1 sends chunk 0 to worker 2, which adds its own
//!   worker 2 sends chunk 1 to worker 3, which adds its own
//!   worker 3 sends chunk 2 to worker 0, which adds its own
//!   worker 0: [     1     1 |     1     1 |  1001  1001 |     1     1 ]
//!   worker 1: [    10    10 |    10    10 |    10    10 |    11    11 ]
//!   worker 2: [   110   110 |   100   100 |   100   100 |   100   100 ]
//!   worker 3: [  1000  1000 |  1100  1100 |  1000  1000 |  1000  1000 ]
//! ...
//! step 6: all-gather
//!   ...
//!   worker 3: [  1111  1111 |  1111  1111 |  1111  1111 |  1111  1111 ]
//! the threads got exactly what the steps above show, and it is the plain sum: 1111
//!
//! == tree all-reduce: 4 workers, 8 numbers, 4 chunks ==
//! ...
//! step 1: reduce-scatter (recursive halving)
//!   worker 0 sends chunks 2-3 to worker 1, which adds its own
//!   worker 1 sends chunks 0-1 to worker 0, which adds its own
//! ...
//! ```
//!
//! The steps printed are the very schedule the worker threads execute
//! ([`Schedule`](nanodist::collective::Schedule)), run here on one thread so it can be
//! printed between steps; at the end the same all-reduce runs on real threads and must
//! give the same bits.

use nanodist::collective::{chunk_range, group, Algorithm, Op, Schedule, Transfer};

const WORKERS: usize = 4;
const LEN: usize = 8;

fn main() {
    let start: Vec<Vec<f32>> = (0..WORKERS)
        .map(|r| vec![10f32.powi(r as i32); LEN])
        .collect();
    let plain_sum: f32 = start.iter().map(|b| b[0]).sum();
    for algo in [Algorithm::Ring, Algorithm::Tree] {
        let sched = algo
            .schedule(WORKERS, LEN)
            .expect("a message-passing algorithm");
        println!(
            "== {algo} all-reduce: {WORKERS} workers, {LEN} numbers, {} chunks ==",
            sched.chunks
        );
        println!("start");
        print_buffers(&sched, &start);
        let mut bufs = start.clone();
        sched.simulate(&mut bufs, |i, step, bufs| {
            println!("step {}: {}", i + 1, step.phase);
            for t in &step.transfers {
                println!("  {}", narrate(t));
            }
            print_buffers(&sched, bufs);
        });

        // The same all-reduce on real threads, one per worker.
        let threads: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = group(WORKERS)
                .into_iter()
                .map(|mut comm| {
                    let mut buf = start[comm.rank()].clone();
                    s.spawn(move || {
                        comm.all_reduce(&mut buf, algo)
                            .expect("no worker fails here");
                        buf
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(threads, bufs, "threads and the printed steps disagree");
        assert!(threads.iter().flatten().all(|&x| x == plain_sum));
        println!(
            "the threads got exactly what the steps above show, and it is the plain sum: {plain_sum}\n"
        );
    }
}

/// "worker 1 sends chunk 3 to worker 2, which adds its own"
fn narrate(t: &Transfer) -> String {
    let what = if t.chunks.len() == 1 {
        format!("chunk {}", t.chunks.start)
    } else {
        format!("chunks {}-{}", t.chunks.start, t.chunks.end - 1)
    };
    let then = match t.op {
        Op::Reduce { .. } => "which adds its own",
        Op::Copy => "which copies it",
    };
    format!("worker {} sends {what} to worker {}, {then}", t.from, t.to)
}

/// Every worker's buffer, with `|` between the schedule's chunks.
fn print_buffers(sched: &Schedule, bufs: &[Vec<f32>]) {
    for (r, b) in bufs.iter().enumerate() {
        let chunks: Vec<String> = (0..sched.chunks)
            .map(|c| {
                b[chunk_range(LEN, sched.chunks, c)]
                    .iter()
                    .map(|x| format!("{x:5}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        println!("  worker {r}: [ {} ]", chunks.join(" | "));
    }
}
