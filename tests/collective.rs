//! The collectives against plain sequential sums, on real threads.
//!
//! Every algorithm must (a) give the exact sum for integers, (b) give, for f32, exactly the
//! bits of a sequential sum in the order its file documents, within a stated tolerance of
//! the f64 sum, (c) leave the same bits on every worker, and (d) return an error, not hang,
//! when a worker dies. The same holds on sub-groups made by `Comm::split`: rows and columns
//! of a grid of workers.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use nanodist::collective::{chunk_range, group, Algorithm, Comm, CommError, Element};

/// What the tests need to compare and print elements.
trait Num: Element {
    fn to_f64(self) -> f64;
    fn bits(self) -> u64;
    /// A value that makes summation order visible in the last bits (for floats).
    fn sample(rank: usize, i: usize) -> Self;
}

impl Num for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn bits(self) -> u64 {
        self.to_bits() as u64
    }
    fn sample(rank: usize, i: usize) -> Self {
        let h = hash(rank, i);
        // Magnitudes from 1e-3 to 1e3, both signs: additions round differently per order.
        let mant = (h % 2001) as f32 / 1000.0 - 1.0;
        mant * 10f32.powi((h >> 16) as i32 % 7 - 3)
    }
}

impl Num for i64 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn bits(self) -> u64 {
        self as u64
    }
    fn sample(rank: usize, i: usize) -> Self {
        // Large values so the wrapping addition really wraps.
        (hash(rank, i) as i64).wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64)
    }
}

fn hash(rank: usize, i: usize) -> u64 {
    let mut x = (rank as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)
        ^ (i as u64).wrapping_mul(0x9E37_79B9);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}

/// Asserts `got == want` bit for bit; on failure prints the first differing index, the
/// number of differences and the largest one.
fn assert_bits_eq<T: Num>(got: &[T], want: &[T], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let diffs: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].bits() != want[i].bits())
        .collect();
    if let Some(&first) = diffs.first() {
        let (worst, d) = diffs
            .iter()
            .map(|&i| (i, (got[i].to_f64() - want[i].to_f64()).abs()))
            .fold((first, 0.0), |a, b| if b.1 > a.1 { b } else { a });
        panic!(
            "{what}: {} of {} elements differ; first at [{first}]: got {:?}, want {:?}; \
             largest difference {d:e} at [{worst}] (got {:?}, want {:?})",
            diffs.len(),
            got.len(),
            got[first],
            want[first],
            got[worst],
            want[worst]
        );
    }
}

/// Runs `f` on every worker of a fresh group of `n`, returns what each returned (in rank
/// order). Scoped threads: a hang here hangs the test, so failure tests use `spawn_group`.
fn on_group<R: Send>(n: usize, f: impl Fn(&mut Comm) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = group(n)
            .into_iter()
            .map(|mut c| s.spawn(move || f(&mut c)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn inputs<T: Num>(n: usize, len: usize) -> Vec<Vec<T>> {
    (0..n)
        .map(|r| (0..len).map(|i| T::sample(r, i)).collect())
        .collect()
}

/// The sum of `xs` (one value per rank) in the order `algo` documents.
fn documented_sum<T: Element>(algo: Algorithm, xs: &[T], len: usize, i: usize) -> T {
    let n = xs.len();
    let fold = |order: &mut dyn Iterator<Item = usize>| {
        let first = order.next().unwrap();
        order.fold(xs[first], |acc, r| T::add(acc, xs[r]))
    };
    match algo {
        // ((x0 + x1) + x2) + ...
        Algorithm::Naive | Algorithm::Shared => fold(&mut (0..n)),
        // chunk c: x(c+1), x(c+2), ..., x(c): rank order starting after c, ending at c
        Algorithm::Ring => {
            let c = (0..n)
                .find(|&c| chunk_range(len, n, c).contains(&i))
                .unwrap();
            fold(&mut (1..=n).map(|k| (c + k) % n))
        }
        // y(i) = x(i) + x(p+i) for the extra ranks, then a pairwise tree in rank order
        Algorithm::Tree => {
            let p = 1 << n.ilog2();
            let mut y: Vec<T> = (0..p)
                .map(|r| {
                    if r + p < n {
                        T::add(xs[r], xs[r + p])
                    } else {
                        xs[r]
                    }
                })
                .collect();
            while y.len() > 1 {
                y = y.chunks(2).map(|c| T::add(c[0], c[1])).collect();
            }
            y[0]
        }
    }
}

const LENS: [usize; 9] = [0, 1, 2, 3, 7, 8, 13, 100, 1001];

#[test]
fn known_answers_worker_r_contributes_r_plus_1() {
    for algo in Algorithm::ALL {
        for n in 1..=8 {
            for len in LENS {
                let want = (n * (n + 1) / 2) as f32;
                let got = on_group(n, |c| {
                    let mut f = vec![(c.rank() + 1) as f32; len];
                    let mut i = vec![(c.rank() + 1) as i64; len];
                    c.all_reduce(&mut f, algo).unwrap();
                    c.all_reduce(&mut i, algo).unwrap();
                    (f, i)
                });
                for (r, (f, i)) in got.iter().enumerate() {
                    let what = format!("{algo} n={n} len={len} worker {r}");
                    assert_bits_eq(f, &vec![want; len], &what);
                    assert_bits_eq(i, &vec![want as i64; len], &what);
                }
            }
        }
    }
}

/// f32: exactly the documented order's bits on every worker, and within
/// `(n - 1) * eps * sum |x|` of the f64 sum (the classic bound for any order of n - 1
/// additions, eps = 2^-24 the unit roundoff of f32).
#[test]
fn f32_matches_documented_order_bit_for_bit_on_every_worker() {
    for algo in Algorithm::ALL {
        for n in 1..=8 {
            for len in LENS {
                let xs = inputs::<f32>(n, len);
                let got = on_group(n, |c| {
                    let mut b = xs[c.rank()].clone();
                    c.all_reduce(&mut b, algo).unwrap();
                    b
                });
                let col = |i: usize| xs.iter().map(|x| x[i]).collect::<Vec<_>>();
                let want: Vec<f32> = (0..len)
                    .map(|i| documented_sum(algo, &col(i), len, i))
                    .collect();
                for (r, g) in got.iter().enumerate() {
                    assert_bits_eq(g, &want, &format!("{algo} n={n} len={len} worker {r}"));
                }
                for (i, &w) in want.iter().enumerate() {
                    let exact: f64 = col(i).iter().map(|&x| x as f64).sum();
                    let abs: f64 = col(i).iter().map(|&x| (x as f64).abs()).sum();
                    let tol = (n as f64 - 1.0) * f32::EPSILON as f64 / 2.0 * abs + 1e-30;
                    assert!(
                        (w as f64 - exact).abs() <= tol,
                        "{algo} n={n} [{i}]: {w} vs f64 {exact}, tolerance {tol:e}"
                    );
                }
            }
        }
    }
}

/// f64 (the evaluation's loss sums): worker r contributes r + 1, on 4 workers (a sum of 10,
/// where a product would give 24), with every algorithm.
#[test]
fn f64_sums_are_sums_with_every_algorithm() {
    for algo in Algorithm::ALL {
        let got = on_group(4, |c| {
            let mut b = vec![c.rank() as f64 + 1.0; 7];
            c.all_reduce(&mut b, algo).unwrap();
            b
        });
        for (r, b) in got.iter().enumerate() {
            assert_eq!(b, &vec![10.0; 7], "{algo} worker {r}");
        }
    }
}

/// A group caches each algorithm's schedule per length: one group that runs every algorithm
/// on the same length in turn (twice, so the second round reads the cache) gets each
/// algorithm's own order of sums, bit for bit, not another's from the cache.
#[test]
fn one_group_alternating_algorithms_keeps_each_algorithms_order() {
    let (n, len) = (5, 37);
    let xs = inputs::<f32>(n, len);
    let got = on_group(n, |c| {
        let mut out = Vec::new();
        for _ in 0..2 {
            for algo in Algorithm::ALL {
                let mut b = xs[c.rank()].clone();
                c.all_reduce(&mut b, algo).unwrap();
                out.push((algo, b));
            }
        }
        out
    });
    let col = |i: usize| xs.iter().map(|x| x[i]).collect::<Vec<_>>();
    for (r, calls) in got.iter().enumerate() {
        for (k, (algo, b)) in calls.iter().enumerate() {
            let want: Vec<f32> = (0..len)
                .map(|i| documented_sum(*algo, &col(i), len, i))
                .collect();
            assert_bits_eq(b, &want, &format!("call {k} ({algo}) on worker {r}"));
        }
    }
}

/// i64 (the deterministic mode): wrapping sums are exact, every algorithm gives the same.
#[test]
fn i64_sums_are_exact_and_agree_across_algorithms() {
    for n in 1..=8 {
        for len in LENS {
            let xs = inputs::<i64>(n, len);
            let want: Vec<i64> = (0..len)
                .map(|i| xs.iter().fold(0i64, |a, x| a.wrapping_add(x[i])))
                .collect();
            for algo in Algorithm::ALL {
                let got = on_group(n, |c| {
                    let mut b = xs[c.rank()].clone();
                    c.all_reduce(&mut b, algo).unwrap();
                    b
                });
                for (r, g) in got.iter().enumerate() {
                    assert_bits_eq(g, &want, &format!("{algo} n={n} len={len} worker {r}"));
                }
            }
        }
    }
}

/// The threads give what the schedule, simulated on one thread, gives.
#[test]
fn threads_match_the_simulated_schedule() {
    for algo in [Algorithm::Naive, Algorithm::Ring, Algorithm::Tree] {
        for n in 1..=8 {
            let len = 37;
            let mut sim = inputs::<f32>(n, len);
            let threads = on_group(n, |c| {
                let mut b = sim[c.rank()].clone();
                c.all_reduce(&mut b, algo).unwrap();
                b
            });
            algo.schedule(n, len)
                .unwrap()
                .simulate(&mut sim, |_, _, _| {});
            for r in 0..n {
                assert_bits_eq(&threads[r], &sim[r], &format!("{algo} n={n} worker {r}"));
            }
        }
    }
}

/// One group, 200 collectives mixing algorithms, types and lengths.
#[test]
fn one_group_reused_for_many_mixed_calls() {
    let n = 4;
    let results = on_group(n, |c| {
        let mut out = Vec::new();
        for k in 0..200 {
            let algo = Algorithm::ALL[k % 4];
            let len = [5, 64, 1000, 3][k % 7 % 4];
            if k % 3 == 0 {
                let mut b = vec![(c.rank() + k) as i64; len];
                c.all_reduce(&mut b, algo).unwrap();
                out.push(b[len - 1] as f64);
            } else {
                let mut b = vec![(c.rank() + 1) as f32 * 0.5; len];
                c.all_reduce(&mut b, algo).unwrap();
                out.push(b[0] as f64);
            }
            if k % 10 == 0 {
                c.barrier().unwrap();
            }
        }
        out
    });
    for k in 0..200 {
        let want = if k % 3 == 0 { (6 + 4 * k) as f64 } else { 5.0 };
        for (r, res) in results.iter().enumerate() {
            assert_eq!(res[k], want, "call {k} on worker {r}");
        }
    }
}

#[test]
fn reduce_scatter_then_all_gather_is_an_all_reduce() {
    for n in 1..=8 {
        for len in LENS {
            let xs = inputs::<f32>(n, len);
            let got = on_group(n, |c| {
                let mut b = xs[c.rank()].clone();
                let mine = c.reduce_scatter(&mut b).unwrap();
                assert_eq!(mine, chunk_range(len, n, c.rank()));
                let after_rs = b.clone();
                c.all_gather(&mut b).unwrap();
                (after_rs, b)
            });
            let want: Vec<f32> = (0..len)
                .map(|i| {
                    let col: Vec<f32> = xs.iter().map(|x| x[i]).collect();
                    documented_sum(Algorithm::Shared, &col, len, i)
                })
                .collect();
            for (r, (rs, ag)) in got.iter().enumerate() {
                let mine = chunk_range(len, n, r);
                let what = format!("n={n} len={len} worker {r}");
                assert_bits_eq(
                    &rs[mine.clone()],
                    &want[mine.clone()],
                    &format!("reduce_scatter {what}"),
                );
                // Outside its chunk, reduce_scatter leaves the buffer as it was.
                assert_bits_eq(
                    &rs[..mine.start],
                    &xs[r][..mine.start],
                    &format!("rs untouched {what}"),
                );
                assert_bits_eq(&ag[..], &want[..], &format!("all_gather {what}"));
            }
        }
    }
}

#[test]
fn broadcast_copies_the_roots_buffer_everywhere() {
    for n in 1..=6 {
        for root in 0..n {
            for len in [0, 1, 5, 1001] {
                let got = on_group(n, |c| {
                    let mut b = vec![c.rank() as i64 * 100; len];
                    c.broadcast(&mut b, root).unwrap();
                    c.barrier().unwrap();
                    b
                });
                for (r, b) in got.iter().enumerate() {
                    assert_bits_eq(
                        b,
                        &vec![root as i64 * 100; len],
                        &format!("n={n} root={root} worker {r}"),
                    );
                }
            }
        }
    }
}

/// The shared-memory window writes into other threads' buffers: if a barrier were missing
/// or columns overlapped, a worker's fresh values (written right after each call returns)
/// would get overwritten by a slow peer, or a sum would read a peer's next inputs. More
/// workers than cores makes such interleavings likely.
#[test]
fn shared_memory_window_stress_catches_races() {
    let (n, len, rounds) = (6, 257, 300);
    on_group(n, |c| {
        let mut b = vec![0i64; len];
        for k in 0..rounds {
            b.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = (k * 1000 + c.rank() * 10 + i) as i64);
            let algo = if k % 2 == 0 {
                Algorithm::Shared
            } else {
                Algorithm::Ring
            };
            c.all_reduce(&mut b, algo).unwrap();
            for (i, &x) in b.iter().enumerate() {
                let want = (n * (k * 1000 + i) + 10 * n * (n - 1) / 2) as i64;
                assert_eq!(x, want, "round {k} worker {} [{i}]", c.rank());
            }
        }
    });
}

/// Runs `work(comm)` on `n` detached threads; returns each worker's result, or panics if any
/// is still running after 10 s (a hang detector, not a speed test).
fn spawn_group<R: Send + 'static>(
    n: usize,
    work: impl Fn(Comm) -> R + Send + Sync + Clone + 'static,
) -> Vec<Option<R>> {
    let (tx, rx) = mpsc::channel();
    for comm in group(n) {
        let (tx, work) = (tx.clone(), work.clone());
        std::thread::spawn(move || {
            let r = comm.rank();
            // A panicking worker sends nothing; its Comm is dropped while unwinding.
            let out = work(comm);
            let _ = tx.send((r, out));
        });
    }
    drop(tx);
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok((r, v)) => out[r] = Some(v),
            Err(mpsc::RecvTimeoutError::Disconnected) => return out,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("a worker hung for 10 s after a peer died")
            }
        }
    }
}

#[test]
fn a_panicking_worker_makes_the_others_fail_not_hang() {
    for algo in Algorithm::ALL {
        for n in [2, 3, 5] {
            let victim = n - 1;
            let out = spawn_group(n, move |mut c| {
                let mut b = vec![1.0f32; 1000];
                for step in 0..10 {
                    if c.rank() == victim && step == 4 {
                        panic!("worker {victim} fails on purpose (this panic is expected)");
                    }
                    c.all_reduce(&mut b, algo)?;
                }
                Ok::<_, CommError>(())
            });
            for (r, res) in out.iter().enumerate() {
                if r == victim {
                    assert!(res.is_none());
                } else {
                    let err = res.clone().expect("survivors return").unwrap_err();
                    assert_eq!(
                        err,
                        CommError::PeerGone { rank: victim },
                        "{algo} n={n} worker {r}"
                    );
                    assert!(err.to_string().contains("left the group"));
                }
            }
        }
    }
}

#[test]
fn dropping_an_endpoint_fails_barrier_broadcast_and_gather() {
    let out = spawn_group(3, |mut c| {
        if c.rank() == 0 {
            return Ok(()); // leaves without a word
        }
        let mut b = vec![1i64; 10];
        c.barrier()?;
        c.broadcast(&mut b, 1)?;
        c.all_gather(&mut b)
    });
    assert!(out[1].clone().unwrap().is_err() && out[2].clone().unwrap().is_err());
}

/// Every collective, called on its own by the workers that stay after one left without a
/// word: each returns [`CommError::PeerGone`] naming the one that left, and none hangs
/// (`spawn_group` fails the test after 10 s). Each operation gets a fresh group, so none is
/// skipped because an earlier one already failed.
#[test]
fn every_collective_fails_not_hangs_when_a_peer_is_gone() {
    type Op = fn(&mut Comm, usize) -> Result<(), CommError>;
    let mut ops: Vec<(String, Op)> = Vec::new();
    for algo in Algorithm::ALL {
        let op: Op = match algo {
            Algorithm::Naive => |c, _| c.all_reduce(&mut [1.0f32; 100], Algorithm::Naive),
            Algorithm::Ring => |c, _| c.all_reduce(&mut [1.0f32; 100], Algorithm::Ring),
            Algorithm::Tree => |c, _| c.all_reduce(&mut [1.0f32; 100], Algorithm::Tree),
            Algorithm::Shared => |c, _| c.all_reduce(&mut [1.0f32; 100], Algorithm::Shared),
        };
        ops.push((format!("all_reduce {algo}"), op));
    }
    let more: [(&str, Op); 8] = [
        ("reduce_scatter", |c, _| {
            c.reduce_scatter(&mut [1i64; 100]).map(|_| ())
        }),
        ("all_gather", |c, _| c.all_gather(&mut [1i64; 100])),
        ("broadcast from the one gone", |c, gone| {
            c.broadcast(&mut [1i64; 100], gone)
        }),
        ("broadcast from a survivor", |c, gone| {
            c.broadcast(&mut [1i64; 100], (gone + 1) % 3)
        }),
        ("barrier", |c, _| c.barrier()),
        ("send", |c, gone| c.send(gone, &[1i64; 100])),
        ("recv", |c, gone| c.recv(gone, &mut [1i64; 100])),
        ("split", |c, _| c.split(0, c.rank()).map(|_| ())),
    ];
    ops.extend(more.into_iter().map(|(name, op)| (name.to_string(), op)));
    for (name, op) in ops {
        for gone in [0, 2] {
            // the others start once it is gone, so that even a send (which never waits)
            // finds it gone
            let left = Arc::new(std::sync::Barrier::new(3));
            let out = spawn_group(3, move |mut c| {
                if c.rank() == gone {
                    drop(c); // leaves without a word
                    left.wait();
                    return None;
                }
                left.wait();
                Some(op(&mut c, gone))
            });
            for (r, res) in out.into_iter().enumerate().filter(|&(r, _)| r != gone) {
                assert_eq!(
                    res.expect("survivors return"),
                    Some(Err(CommError::PeerGone { rank: gone })),
                    "{name}, worker {gone} gone: worker {r}"
                );
            }
        }
    }
}

thread_local! {
    static BOMB_ARMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// An element whose addition panics on the thread that armed it: a panic *inside* a
/// collective, in the middle of the shared-memory window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Bomb(i64);

impl Element for Bomb {
    fn add(a: Self, b: Self) -> Self {
        if BOMB_ARMED.with(|c| c.get()) {
            panic!("Bomb::add on an armed thread (this panic is expected)");
        }
        Bomb(a.0 + b.0)
    }
}

#[test]
fn a_panic_inside_a_collective_fails_the_others() {
    for algo in Algorithm::ALL {
        let out = spawn_group(3, move |mut c| {
            BOMB_ARMED.with(|a| a.set(c.rank() == 1));
            let mut b = vec![Bomb(1); 300];
            c.all_reduce(&mut b, algo)
        });
        // Naive: only worker 0 adds, so worker 1 never panics and everyone finishes.
        let expect_panic = algo != Algorithm::Naive;
        assert_eq!(
            out[1].is_none(),
            expect_panic,
            "{algo}: did worker 1 panic?"
        );
        for r in [0, 2] {
            let res = out[r].clone().expect("survivors return");
            assert_eq!(res.is_err(), expect_panic, "{algo} worker {r}: {res:?}");
        }
    }
}

// ---- Sub-groups (Comm::split) ----------------------------------------------------------

/// The grids the sub-group tests lay their workers out in: (rows, columns).
const GRIDS: [(usize, usize); 2] = [(2, 2), (2, 3)];

/// Runs `f(parent, row, column)` on every worker of a `rows x cols` grid: worker `r` sits
/// at row `r / cols`, column `r % cols`, and its row and column are split off the parent.
fn on_grid<R: Send>(
    rows: usize,
    cols: usize,
    f: impl Fn(&mut Comm, &mut Comm, &mut Comm) -> R + Sync,
) -> Vec<R> {
    on_group(rows * cols, |c| {
        let r = c.rank();
        let mut row = c.split(r / cols, r).unwrap();
        let mut col = c.split(r % cols, r).unwrap();
        assert_eq!(
            (row.rank(), row.size()),
            (r % cols, cols),
            "worker {r}'s row"
        );
        assert_eq!(
            (col.rank(), col.size()),
            (r / cols, rows),
            "worker {r}'s column"
        );
        f(c, &mut row, &mut col)
    })
}

/// The parent ranks in worker `r`'s row and column, in sub-group rank order.
fn row_and_column(r: usize, rows: usize, cols: usize) -> (Vec<usize>, Vec<usize>) {
    let row = (0..cols).map(|j| r / cols * cols + j).collect();
    let col = (0..rows).map(|i| i * cols + r % cols).collect();
    (row, col)
}

/// On every row and every column, every algorithm gives the bits of the documented
/// sequential sum over that sub-group's members (in sub-group rank order).
#[test]
fn sub_groups_all_reduce_like_a_sequential_sum_for_every_algorithm() {
    for (rows, cols) in GRIDS {
        let n = rows * cols;
        for algo in Algorithm::ALL {
            for len in [0, 1, 7, 100, 1001] {
                let xs = inputs::<f32>(n, len);
                let got = on_grid(rows, cols, |c, row, col| {
                    let mut in_row = xs[c.rank()].clone();
                    row.all_reduce(&mut in_row, algo).unwrap();
                    let mut in_col = xs[c.rank()].clone();
                    col.all_reduce(&mut in_col, algo).unwrap();
                    (in_row, in_col)
                });
                let want = |members: &[usize]| -> Vec<f32> {
                    (0..len)
                        .map(|i| {
                            let xi: Vec<f32> = members.iter().map(|&m| xs[m][i]).collect();
                            documented_sum(algo, &xi, len, i)
                        })
                        .collect()
                };
                for (r, (in_row, in_col)) in got.iter().enumerate() {
                    let (row, col) = row_and_column(r, rows, cols);
                    let what = format!("{algo} {rows}x{cols} len={len} worker {r}");
                    assert_bits_eq(in_row, &want(&row), &format!("row {what}"));
                    assert_bits_eq(in_col, &want(&col), &format!("column {what}"));
                }
            }
        }
    }
}

/// reduce_scatter and all_gather on rows, broadcast on columns, against plain loops.
#[test]
fn sub_groups_reduce_scatter_all_gather_and_broadcast() {
    for (rows, cols) in GRIDS {
        let (n, len) = (rows * cols, 101);
        let xs = inputs::<i64>(n, len);
        let got = on_grid(rows, cols, |c, row, col| {
            let mut rs = xs[c.rank()].clone();
            let mine = row.reduce_scatter(&mut rs).unwrap();
            let mut ag = rs.clone();
            row.all_gather(&mut ag).unwrap();
            let mut bc = xs[c.rank()].clone();
            let root = col.size() - 1;
            col.broadcast(&mut bc, root).unwrap();
            (mine, rs, ag, bc)
        });
        for (r, (mine, rs, ag, bc)) in got.iter().enumerate() {
            let (row, col) = row_and_column(r, rows, cols);
            let what = format!("{rows}x{cols} worker {r}");
            let row_sum: Vec<i64> = (0..len)
                .map(|i| row.iter().fold(0i64, |a, &m| a.wrapping_add(xs[m][i])))
                .collect();
            assert_eq!(*mine, chunk_range(len, cols, r % cols), "{what}");
            assert_bits_eq(
                &rs[mine.clone()],
                &row_sum[mine.clone()],
                &format!("reduce_scatter {what}"),
            );
            assert_bits_eq(
                &rs[..mine.start],
                &xs[r][..mine.start],
                &format!("reduce_scatter leaves the rest {what}"),
            );
            assert_bits_eq(ag, &row_sum, &format!("all_gather {what}"));
            let root = *col.last().unwrap();
            assert_bits_eq(bc, &xs[root], &format!("broadcast {what}"));
        }
    }
}

/// Ranks follow (key, parent rank); a sub-group splits again; the parent stays usable.
#[test]
fn split_ranks_by_key_then_rank_and_splits_again() {
    let got = on_group(6, |c| {
        let r = c.rank();
        // colour 0: workers 0 2 4 with keys 1 0 0 -> ranks 2 0 1 (ties broken by rank)
        let mut half = c.split(r % 2, usize::from(r < 2)).unwrap();
        // ranks {0, 1} and {2} of each half
        let mut quarter = half.split(half.rank() / 2, 0).unwrap();
        let mut sums = Vec::new();
        for algo in Algorithm::ALL {
            let mut x = [r as i64 + 1];
            quarter.all_reduce(&mut x, algo).unwrap();
            sums.push(x[0]);
        }
        let mut everyone = [r as i64 + 1];
        c.all_reduce(&mut everyone, Algorithm::Ring).unwrap();
        (
            half.rank(),
            quarter.rank(),
            quarter.size(),
            sums,
            everyone[0],
        )
    });
    // worker: half rank, quarter rank, quarter size, quarter sum of (r + 1)
    let want = [
        (2, 0, 1, 1),
        (2, 0, 1, 2),
        (0, 0, 2, 3 + 5),
        (0, 0, 2, 4 + 6),
        (1, 1, 2, 3 + 5),
        (1, 1, 2, 4 + 6),
    ];
    for (r, (half, quarter, size, sums, everyone)) in got.into_iter().enumerate() {
        let (h, q, s, sum) = want[r];
        assert_eq!((half, quarter, size), (h, q, s), "worker {r}'s ranks");
        assert_eq!(sums, vec![sum; 4], "worker {r}'s sums, one per algorithm");
        assert_eq!(everyone, 21, "worker {r} on the parent after the splits");
    }
}

/// Rows and columns used in alternation, with mixed algorithms and lengths, and the parent
/// now and then: each group's collectives see only their own members.
#[test]
fn row_and_column_groups_used_in_alternation() {
    for (rows, cols) in GRIDS {
        on_grid(rows, cols, |c, row, col| {
            let me = c.rank();
            let (in_row, in_col) = row_and_column(me, rows, cols);
            for k in 0..120 {
                let len = [3, 64, 1000][k % 3];
                let mut a = vec![(me + k) as i64; len];
                row.all_reduce(&mut a, Algorithm::ALL[k % 4]).unwrap();
                let want_a: usize = in_row.iter().map(|m| m + k).sum();
                assert_eq!(a, vec![want_a as i64; len], "row, round {k}, worker {me}");
                let mut b = vec![(me * k) as i64; len];
                col.all_reduce(&mut b, Algorithm::ALL[(k + 1) % 4]).unwrap();
                let want_b: usize = in_col.iter().map(|m| m * k).sum();
                assert_eq!(
                    b,
                    vec![want_b as i64; len],
                    "column, round {k}, worker {me}"
                );
                if k % 10 == 0 {
                    let mut x = [1i64];
                    c.all_reduce(&mut x, Algorithm::Shared).unwrap();
                    assert_eq!(x[0], (rows * cols) as i64, "parent, round {k}");
                }
            }
        });
    }
}

/// A worker that panics after the split breaks its row (its row-mates get PeerGone with
/// its rank in the row, promptly) but not the other row.
#[test]
fn a_peer_leaving_a_sub_group_fails_that_group_only() {
    for algo in Algorithm::ALL {
        let (rows, cols, victim) = (2, 3, 4); // row 1, rank 1 in it
        let out = spawn_group(rows * cols, move |mut c| {
            let r = c.rank();
            let mut row = c.split(r / cols, r).unwrap();
            // Everyone's split is done before the victim breaks the parent too.
            c.barrier().unwrap();
            if r == victim {
                panic!("worker {victim} fails on purpose (this panic is expected)");
            }
            let mut b = vec![1.0f32; 1000];
            for _ in 0..10 {
                row.all_reduce(&mut b, algo)?;
            }
            Ok::<_, CommError>(b[0])
        });
        for (r, res) in out.iter().enumerate() {
            let what = format!("{algo} worker {r}");
            match r {
                _ if r == victim => assert!(res.is_none(), "{what}"),
                0..=2 => assert_eq!(res.clone().unwrap(), Ok(3f32.powi(10)), "{what}"),
                _ => assert_eq!(
                    res.clone().unwrap(),
                    Err(CommError::PeerGone { rank: 1 }),
                    "{what}"
                ),
            }
        }
    }
}

/// A worker that drops its row (without panicking) fails a barrier of that row, while its
/// column, which it keeps, still works.
#[test]
fn dropping_a_sub_group_fails_its_barrier_and_keeps_the_others() {
    let (rows, cols, leaver) = (2, 3, 5); // row 1, rank 2 in it; column {2, 5}
    let out = spawn_group(rows * cols, move |mut c| {
        let r = c.rank();
        let mut row = c.split(r / cols, r).unwrap();
        let mut col = c.split(r % cols, r).unwrap();
        let in_row = if r == leaver {
            drop(row);
            Ok(())
        } else if r / cols == 1 {
            row.barrier()
        } else {
            Ok(())
        };
        let mut x = [r as i64];
        col.all_reduce(&mut x, Algorithm::Shared)?;
        Ok::<_, CommError>((in_row, x[0]))
    });
    for (r, res) in out.into_iter().enumerate() {
        let (in_row, col_sum) = res.expect("every worker returns").unwrap();
        let want_row = if r / cols == 1 && r != leaver {
            Err(CommError::PeerGone { rank: 2 })
        } else {
            Ok(())
        };
        assert_eq!(in_row, want_row, "worker {r}'s row");
        assert_eq!(
            col_sum,
            (2 * (r % cols) + cols) as i64,
            "worker {r}'s column"
        );
    }
}

/// Splitting a group that a worker has left fails (on the parent) instead of hanging.
#[test]
fn split_fails_not_hangs_when_a_peer_is_gone() {
    let out = spawn_group(3, |mut c| {
        if c.rank() == 0 {
            return Ok(()); // leaves without a word
        }
        let r = c.rank();
        c.split(0, r).map(|_| ())
    });
    assert_eq!(out[0], Some(Ok(())));
    for r in [1, 2] {
        assert_eq!(
            out[r],
            Some(Err(CommError::PeerGone { rank: 0 })),
            "worker {r}"
        );
    }
}
