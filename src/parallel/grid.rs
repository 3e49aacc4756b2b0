//! The worker grid: N workers laid out as DP x PP x TP, and the sub-groups each one talks in.
//!
//! Tensor parallelism (`--tp T`) splits every layer's matrices over T workers and needs
//! collectives inside every layer; pipeline parallelism (`--pp P`) gives each of P workers a
//! range of layers and passes activations between neighbours once per micro-batch; data
//! parallelism replicates what remains, DP = N / (TP x PP), and sums gradients once a step.
//! The chattiest group gets the closest neighbours, as Megatron-LM orders them: TP innermost
//! (consecutive ranks), then PP, then DP outermost.
//!
//! ```text
//!   --workers 8 --tp 2 --pp 2   ->   DP = 2        rank = (dp * PP + pp) * TP + tp
//!
//!                 pp 0 (layers 0..L/2)     pp 1 (layers L/2..L)
//!                 tp 0      tp 1           tp 0      tp 1
//!     dp 0       [ 0 ]  -  [ 1 ]    ->    [ 2 ]  -  [ 3 ]       a TP group:  {0 1} {2 3} ...
//!     dp 1       [ 4 ]  -  [ 5 ]    ->    [ 6 ]  -  [ 7 ]       a PP group:  {0 2} {1 3} ...
//!                                                               a DP group:  {0 4} {1 5} ...
//! ```
//!
//! Each worker holds four communicators: the whole world, and the three groups through its
//! own position. They come from [`Comm::split`] (MPI_Comm_split's colour and key): the workers
//! that share a colour form a group, ranked by key. A strategy's collectives run only on its
//! own group: the gradient all-reduce of data parallelism on `dp`, the per-layer all-reduces
//! of tensor parallelism on `tp`, the activations of the pipeline on `pp`.
//!
//! With `--tp 1 --pp 1` (the defaults) the grid is plain data parallelism: `dp` is the whole
//! world and `tp`, `pp` are groups of one, whose collectives return at once.

use crate::collective::{Comm, CommError};
use crate::error::Error;

/// The shape of the grid: its three sizes, with `dp * pp * tp` workers in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Data-parallel replicas (outermost).
    pub dp: usize,
    /// Pipeline stages.
    pub pp: usize,
    /// Tensor-parallel workers per layer (innermost: neighbouring ranks).
    pub tp: usize,
}

/// A worker's place in the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coords {
    /// Which replica, `0..dp`.
    pub dp: usize,
    /// Which pipeline stage, `0..pp`.
    pub pp: usize,
    /// Which slice of each layer, `0..tp`.
    pub tp: usize,
}

impl Layout {
    /// The grid of `workers` workers with `tp`-way tensor and `pp`-way pipeline parallelism;
    /// data parallelism takes what remains. Errors (one line, naming the flags) when a size
    /// is zero or `tp * pp` does not divide `workers`.
    ///
    /// ```
    /// use nanodist::parallel::grid::Layout;
    /// let g = Layout::new(8, 2, 2).unwrap();
    /// assert_eq!((g.dp, g.pp, g.tp), (2, 2, 2));
    /// assert!(Layout::new(6, 4, 1).is_err());
    /// ```
    pub fn new(workers: usize, tp: usize, pp: usize) -> Result<Layout, Error> {
        if tp == 0 || pp == 0 {
            return Err(Error::Config(format!(
                "--tp {tp} --pp {pp}: both must be at least 1 (1 means no split)"
            )));
        }
        let model = tp
            .checked_mul(pp)
            .filter(|&m| m <= workers && workers % m == 0);
        let Some(model) = model else {
            return Err(Error::Config(format!(
                "--workers {workers} cannot be laid out as data x {pp} pipeline stages x {tp} \
                 tensor slices: --tp x --pp must divide --workers (use a multiple of {})",
                tp.saturating_mul(pp)
            )));
        };
        Ok(Layout {
            dp: workers / model,
            pp,
            tp,
        })
    }

    /// Number of workers in the grid.
    pub fn workers(&self) -> usize {
        self.dp * self.pp * self.tp
    }

    /// The coordinates of world rank `rank`.
    ///
    /// ```
    /// use nanodist::parallel::grid::{Coords, Layout};
    /// let g = Layout::new(8, 2, 2).unwrap();
    /// assert_eq!(g.coords(6), Coords { dp: 1, pp: 1, tp: 0 });
    /// assert_eq!(g.rank(g.coords(6)), 6);
    /// ```
    pub fn coords(&self, rank: usize) -> Coords {
        Coords {
            dp: rank / (self.pp * self.tp),
            pp: rank / self.tp % self.pp,
            tp: rank % self.tp,
        }
    }

    /// The world rank at `c`: the inverse of [`Layout::coords`].
    pub fn rank(&self, c: Coords) -> usize {
        (c.dp * self.pp + c.pp) * self.tp + c.tp
    }
}

/// One worker's view of the grid: where it sits and the communicators of its groups.
#[derive(Debug)]
pub struct Grid {
    /// The grid's shape.
    pub layout: Layout,
    /// This worker's place in it.
    pub coords: Coords,
    /// Everyone (for barriers, checks and consolidating a checkpoint).
    pub world: Comm,
    /// The workers that share my (dp, pp): my layers' other slices; ranked by `tp`.
    pub tp: Comm,
    /// The workers that share my (dp, tp): the other stages of my replica; ranked by `pp`.
    pub pp: Comm,
    /// The workers that share my (pp, tp): the same slice in the other replicas; ranked by `dp`.
    pub dp: Comm,
}

impl Grid {
    /// Splits `world` into this worker's groups. A collective call: every worker of
    /// `world` calls it with the same `layout`, whose size must be `world.size()`.
    ///
    /// ```
    /// use nanodist::collective::{group, Algorithm};
    /// use nanodist::parallel::grid::{Grid, Layout};
    /// let layout = Layout::new(4, 2, 1).unwrap(); // 2 replicas of a 2-way tensor split
    /// let sums: Vec<(f32, f32)> = std::thread::scope(|s| {
    ///     let handles: Vec<_> = group(4).into_iter().map(|world| s.spawn(move || {
    ///         let mut g = Grid::new(world, layout).unwrap();
    ///         let r = g.world.rank() as f32;
    ///         let (mut a, mut b) = ([r], [r]);
    ///         g.tp.all_reduce(&mut a, Algorithm::Ring).unwrap(); // {0 1} {2 3}
    ///         g.dp.all_reduce(&mut b, Algorithm::Ring).unwrap(); // {0 2} {1 3}
    ///         (a[0], b[0])
    ///     })).collect();
    ///     handles.into_iter().map(|h| h.join().unwrap()).collect()
    /// });
    /// assert_eq!(sums, [(1.0, 2.0), (1.0, 4.0), (5.0, 2.0), (5.0, 4.0)]);
    /// ```
    ///
    /// # Panics
    /// If `layout.workers() != world.size()`.
    pub fn new(mut world: Comm, layout: Layout) -> Result<Grid, CommError> {
        assert_eq!(
            layout.workers(),
            world.size(),
            "a grid of {layout:?} over a world of {} workers",
            world.size()
        );
        let c = layout.coords(world.rank());
        let (l, rank) = (layout, world.rank());
        // colour: the coordinates the group shares; key: the one it varies along
        let tp = world.split(c.dp * l.pp + c.pp, rank)?;
        let pp = world.split(c.dp * l.tp + c.tp, rank)?;
        let dp = world.split(c.pp * l.tp + c.tp, rank)?;
        Ok(Grid {
            layout,
            coords: c,
            world,
            tp,
            pp,
            dp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::group;

    #[test]
    fn coords_and_rank_are_inverse_and_tp_is_innermost() {
        for (n, tp, pp) in [
            (1, 1, 1),
            (4, 2, 1),
            (4, 1, 2),
            (8, 2, 2),
            (12, 3, 2),
            (6, 1, 3),
        ] {
            let l = Layout::new(n, tp, pp).unwrap();
            assert_eq!(l.workers(), n);
            for r in 0..n {
                let c = l.coords(r);
                assert!(c.dp < l.dp && c.pp < l.pp && c.tp < l.tp);
                assert_eq!(l.rank(c), r);
            }
            if tp > 1 {
                assert_eq!(l.coords(1).tp, 1, "rank 1 is rank 0's tensor-parallel peer");
            }
        }
    }

    #[test]
    fn bad_layouts_are_one_line_errors() {
        for (n, tp, pp) in [(6, 4, 1), (4, 0, 1), (4, 1, 0), (2, 2, 2), (3, 2, 1)] {
            let e = Layout::new(n, tp, pp).unwrap_err().to_string();
            assert!(!e.contains('\n') && e.contains("--"), "{e}");
        }
    }

    /// Every group holds exactly the workers that share its two other coordinates, ranked
    /// by the third: checked by summing one-hot rank vectors over each group.
    /// A group as one worker sees it: its rank, the group's size, the members' one-hot sum.
    type Seen = (usize, usize, Vec<f32>);

    #[test]
    fn groups_hold_the_workers_that_share_the_other_coordinates() {
        let layout = Layout::new(12, 3, 2).unwrap();
        let n = layout.workers();
        let grids: Vec<(Coords, [Seen; 3])> = std::thread::scope(|s| {
            let hs: Vec<_> = (group(n).into_iter())
                .map(|world| {
                    s.spawn(move || {
                        let mut g = Grid::new(world, layout).unwrap();
                        let me = g.world.rank();
                        let seen = |c: &mut Comm| {
                            let mut v = vec![0.0f32; n];
                            v[me] = 1.0;
                            c.all_reduce(&mut v, crate::Algorithm::Ring).unwrap();
                            (c.rank(), c.size(), v)
                        };
                        let groups = [seen(&mut g.tp), seen(&mut g.pp), seen(&mut g.dp)];
                        (g.coords, groups)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (c, [tp, pp, dp]) in &grids {
            assert_eq!((tp.0, tp.1), (c.tp, layout.tp));
            assert_eq!((pp.0, pp.1), (c.pp, layout.pp));
            assert_eq!((dp.0, dp.1), (c.dp, layout.dp));
            for r in 0..n {
                let o = layout.coords(r);
                let expect = |same: bool| if same { 1.0 } else { 0.0 };
                assert_eq!(tp.2[r], expect(o.dp == c.dp && o.pp == c.pp));
                assert_eq!(pp.2[r], expect(o.dp == c.dp && o.tp == c.tp));
                assert_eq!(dp.2[r], expect(o.pp == c.pp && o.tp == c.tp));
            }
        }
    }

    #[test]
    fn point_to_point_messages_arrive_in_order() {
        let got: Vec<Vec<usize>> = std::thread::scope(|s| {
            let hs: Vec<_> = (group(2).into_iter())
                .map(|mut c| {
                    s.spawn(move || {
                        let mut out = Vec::new();
                        if c.rank() == 0 {
                            for i in 0..3usize {
                                c.send(1, &[i, i * 10]).unwrap();
                            }
                        } else {
                            for _ in 0..3 {
                                let mut b = [0usize; 2];
                                c.recv(0, &mut b).unwrap();
                                out.extend(b);
                            }
                        }
                        out
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(got[1], [0, 0, 1, 10, 2, 20]);
    }
}
