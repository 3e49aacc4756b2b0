//! The one `unsafe` call in the crate, `gemm` behind `model::matmul`, against ndarray's
//! matrix product as an independent reference: dense, transposed and strided views, set
//! and accumulate, one and two threads.

use nanodist::model::matmul::{matmul, Mat, MatMut, Out};
use nanodist::rng::{Draw, SeedableRng, Xoshiro256StarStar};
use ndarray::{s, Array2};

fn random(rows: usize, cols: usize, rng: &mut Xoshiro256StarStar) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| rng.normal() as f32)
}

/// Largest |a - b| relative to the largest |b|, with where it happened.
fn assert_close(got: &Array2<f32>, want: &Array2<f32>, what: &str) {
    let scale = want.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
    let (mut worst, mut at) = (0f32, (0, 0));
    for ((i, j), w) in want.indexed_iter() {
        let d = (got[(i, j)] - w).abs() / scale;
        if d > worst {
            (worst, at) = (d, (i, j));
        }
    }
    // f32 products of length k <= 96 differ from another summation order by a few ulps
    // of the largest term: 1e-5 of the largest entry leaves room for that and nothing more.
    assert!(
        worst < 1e-5,
        "{what}: relative difference {worst:e} at {at:?}: {} vs {}",
        got[at],
        want[at]
    );
}

#[test]
fn gemm_views_agree_with_ndarray() {
    let mut rng = Xoshiro256StarStar::seed_from_u64(11);
    for &(m, n, k) in &[(1, 1, 1), (7, 5, 3), (64, 96, 32), (33, 17, 96)] {
        let a = random(m, k, &mut rng);
        let b = random(k, n, &mut rng);
        let c0 = random(m, n, &mut rng);
        for threads in [1, 2] {
            // C = 0.5 * A @ B, dense views
            let mut c = Array2::<f32>::zeros((m, n));
            let (ad, bd) = (a.as_standard_layout(), b.as_standard_layout());
            matmul(
                MatMut::new(c.as_slice_mut().unwrap(), m, n, n),
                Mat::dense(ad.as_slice().unwrap(), m, k),
                Mat::dense(bd.as_slice().unwrap(), k, n),
                Out::Set,
                0.5,
                threads,
            );
            assert_close(&c, &(a.dot(&b) * 0.5), &format!("set {m}x{n}x{k}"));

            // C += A @ B with A and B stored transposed (as weights (out, in) are)
            let (at, bt) = (
                a.t().as_standard_layout().to_owned(),
                b.t().as_standard_layout().to_owned(),
            );
            let mut c = c0.clone();
            matmul(
                MatMut::new(c.as_slice_mut().unwrap(), m, n, n),
                Mat::dense(at.as_slice().unwrap(), k, m).t(),
                Mat::dense(bt.as_slice().unwrap(), n, k).t(),
                Out::Add,
                1.0,
                threads,
            );
            assert_close(
                &c,
                &(&c0 + &a.dot(&b)),
                &format!("add, transposed {m}x{n}x{k}"),
            );

            // A strided view: the first k columns of a wider matrix (one head's columns)
            let wide = random(m, k + 3, &mut rng);
            let mut c = Array2::<f32>::zeros((m, n));
            matmul(
                MatMut::new(c.as_slice_mut().unwrap(), m, n, n),
                Mat::new(wide.as_slice().unwrap(), m, k, k + 3),
                Mat::dense(bd.as_slice().unwrap(), k, n),
                Out::Set,
                1.0,
                threads,
            );
            let want = wide.slice(s![.., ..k]).dot(&b);
            assert_close(&c, &want, &format!("strided {m}x{n}x{k}"));
        }
    }
}
