//! The collectives against plain sequential sums, on real threads.
//!
//! Every algorithm must (a) give the exact sum for integers, (b) give, for f32, exactly the
//! bits of a sequential sum in the order its file documents, within a stated tolerance of
//! the f64 sum, (c) leave the same bits on every worker, and (d) return an error, not hang,
//! when a worker dies.

use std::sync::mpsc;
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
