//! ZeRO stage 1 on a pipeline stage (`--pp P --zero 1`): the stage's parameters are cut
//! among the stage's data-parallel group (the same stage in every replica), and each member
//! keeps AdamW's moments of its part only.
//!
//! ```text
//!   --workers 4 --pp 2 --zero 1     2 replicas of a 2-stage pipeline; dp groups {0 2} {1 3}
//!
//!   flat layout      [ wte | wpe | h.0 | h.1 ][ h.2 | h.3 | ln_f ]
//!                     stage 0 owns ----------  stage 1 owns -------  (+ its copy of wte)
//!   stage 0 rank 0    [ part 0 ----|                               ]
//!           rank 2    [            |- part 1 ]
//!   stage 1 rank 1    [ wte: part 0|         ][ part 0 ---|        ]
//!           rank 3    [ wte: part 1          ][           |- part 1]
//!                     (the copy of wte cut where stage 0's cut falls in it)
//!
//!   after the stage's backwards, over the dp group:
//!     reduce-scatter(each segment)          -> my part summed over the replicas
//!     tied wte: my part with the other end's same part (rank r with rank r, over pp)
//!     norm: my whole chunks' partials all-gathered, the two partial chunks at the
//!           stage's ends broadcast, then the pipeline's chain (same bits as one worker)
//!     AdamW on my parts with my moments;  all-gather(each segment's weights)
//! ```
//!
//! A segment is cut into whole [`NORM_CHUNK`]s of the flat layout ([`cut`]), so every whole
//! chunk of the stage's gradient lies in one member's part and its partial sum of squares
//! is that member's to take; only the chunks the stage's range starts or ends inside are
//! shared with a neighbour stage, and the pipeline's norm chain continues those element by
//! element (`pipeline::Pipe::norm_and_loss`).
//!
//! The tied `wte` lives on the first and the last stage. The last stage cuts its copy as
//! stage 0 cuts its own range (whose start it is), so that rank r of both ends holds the
//! same part: their exchange is part with part, and the two copies get the same update.

use std::ops::Range;

use super::shard::local;
use super::{Memory, StateBytes};
use crate::collective::{chunk_range, Comm, CommError, Element};
use crate::config::OptimConfig;
use crate::model::ParamLayout;
use crate::optim::{sum_of_squares, AdamW, NORM_CHUNK};
use crate::step::Observer;
use crate::trace::Phase;

/// `seg` cut among `n` members: whole [`NORM_CHUNK`]s of the flat layout each, as
/// [`chunk_range`] cuts the chunks the segment meets (the first part starts at `seg.start`
/// and the last ends at `seg.end` where these fall inside a chunk; with fewer chunks than
/// members the last parts are empty).
///
/// ```
/// use nanodist::{optim::NORM_CHUNK, parallel::zero::cut};
/// let c = NORM_CHUNK;
/// assert_eq!(cut(10..3 * c + 5, 2), vec![10..2 * c, 2 * c..3 * c + 5]);
/// assert_eq!(cut(10..20, 2), vec![10..20, 20..20]);
/// ```
pub fn cut(seg: Range<usize>, n: usize) -> Vec<Range<usize>> {
    let (c0, c1) = (seg.start / NORM_CHUNK, seg.end.div_ceil(NORM_CHUNK));
    let at = |c: usize| ((c0 + c) * NORM_CHUNK).clamp(seg.start, seg.end);
    (0..n)
        .map(|r| {
            let c = chunk_range(c1 - c0, n, r);
            at(c.start)..at(c.end)
        })
        .collect()
}

/// One contiguous range of the stage's parameters and every member's part of it.
#[derive(Clone, Debug)]
struct Segment {
    range: Range<usize>,
    parts: Vec<Range<usize>>,
}

/// A pipeline stage's ZeRO-1 state on one member of its data-parallel group: where the
/// parts lie, this member's AdamW moments of its parts, and the norm's partial sums.
#[derive(Clone, Debug)]
pub struct StageShard {
    /// My rank in the stage's data-parallel group.
    rank: usize,
    /// The stage's segments: on the last stage of a pipeline its copy of the tied `wte`
    /// first, then always the range the stage owns.
    segments: Vec<Segment>,
    /// AdamW's moments of my part of each segment, in the same order.
    adam: Vec<AdamW>,
    /// One sum of squares per [`NORM_CHUNK`] of the layout; of the owned range's whole
    /// chunks mine are computed and the others gathered ([`StageShard::share_norm_inputs`]).
    pub partials: Vec<f64>,
}

impl StageShard {
    /// Member `rank` of `size` of a stage that owns `owned` (and, on the last stage, the
    /// copy `wte` of the tied embedding, which stage 0, owning `first`, cuts: `tied` is
    /// `Some((wte, first))`), with my parts' moments taken from the whole (local) AdamW
    /// state `adam`, laid out like the parameters.
    pub fn new(
        owned: Range<usize>,
        tied: Option<(Range<usize>, Range<usize>)>,
        rank: usize,
        size: usize,
        adam: &AdamW,
    ) -> StageShard {
        let mut segments = Vec::new();
        if let Some((wte, first)) = tied {
            let parts = (cut(first, size).into_iter())
                .map(|p| p.start.clamp(wte.start, wte.end)..p.end.clamp(wte.start, wte.end))
                .collect();
            segments.push(Segment { range: wte, parts });
        }
        segments.push(Segment {
            parts: cut(owned.clone(), size),
            range: owned,
        });
        let mine = (segments.iter())
            .map(|s| {
                let p = s.parts[rank].clone();
                AdamW {
                    m: adam.m[p.clone()].to_vec(),
                    v: adam.v[p].to_vec(),
                    t: adam.t,
                }
            })
            .collect();
        StageShard {
            rank,
            segments,
            adam: mine,
            partials: vec![0.0; adam.m.len().div_ceil(NORM_CHUNK)],
        }
    }

    /// My part of each segment, in the flat layout.
    pub fn parts(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.segments.iter().map(|s| s.parts[self.rank].clone())
    }

    /// My part of the owned range.
    pub fn owned_part(&self) -> Range<usize> {
        self.owned().parts[self.rank].clone()
    }

    fn owned(&self) -> &Segment {
        self.segments.last().expect("the owned range")
    }

    /// My part of the tied `wte` (`wte` its range): on the last stage my part of its copy,
    /// on the others my part of the owned range inside `wte` (the same range on rank r of
    /// the first and the last stage).
    pub fn wte_part(&self, wte: &Range<usize>) -> Range<usize> {
        let p = self.segments[0].parts[self.rank].clone();
        p.start.clamp(wte.start, wte.end)..p.end.clamp(wte.start, wte.end)
    }

    /// Sums `buf` over the group, segment by segment: afterwards my part of each holds the
    /// sum over the replicas (the rest is left as it was). A collective of the group.
    pub fn reduce_scatter<T: Element>(
        &self,
        buf: &mut [T],
        comm: &mut Comm,
        step: usize,
        obs: &mut impl Observer,
    ) -> Result<(), CommError> {
        for (k, s) in self.segments.iter().enumerate() {
            let mine = local(&s.parts[self.rank], &s.range);
            let b = &mut buf[s.range.clone()];
            obs.time(Phase::ReduceScatter(k), step, || {
                comm.reduce_scatter_ranges(b, mine)
            })?;
        }
        Ok(())
    }

    /// Hands every member what the pipeline's norm chain reads of the owned range's summed
    /// gradient: the partials of the whole chunks (each member takes its own, an all-gather
    /// shares them) and the elements of the two chunks the range starts and ends inside,
    /// broadcast from their holders into `grads`. A collective of the group.
    ///
    /// ```text
    ///   owned       [ head |  chunk  |  chunk  |  chunk  | tail ]
    ///   parts       [ member 0         | member 1              ]
    ///   partials          p0 (mine: 0)  p1 (0)    p2 (1)            all-gathered
    ///   head, tail  elements broadcast from member 0 and member 1
    /// ```
    pub fn share_norm_inputs(
        &mut self,
        grads: &mut [f32],
        comm: &mut Comm,
    ) -> Result<(), CommError> {
        let (owned, mine) = (self.owned().range.clone(), self.owned_part());
        let (a, b) = (owned.start, owned.end);
        let head_end = a.next_multiple_of(NORM_CHUNK).min(b);
        // my whole chunks: from a chunk boundary inside my part up to its last one
        let lo = mine.start.max(head_end);
        let chunks = if lo < mine.end {
            lo / NORM_CHUNK..mine.end / NORM_CHUNK
        } else {
            0..0
        };
        for c in chunks.clone() {
            self.partials[c] = sum_of_squares(&grads[c * NORM_CHUNK..(c + 1) * NORM_CHUNK]);
        }
        comm.all_gather_ranges(&mut self.partials, chunks)?;
        let tail_start = (b / NORM_CHUNK * NORM_CHUNK).max(head_end);
        for end in [a..head_end, tail_start..b] {
            if end.is_empty() {
                continue;
            }
            let holder = (self.owned().parts.iter())
                .position(|p| p.contains(&end.start))
                .expect("the parts tile the owned range");
            comm.broadcast(&mut grads[end], holder)?;
        }
        Ok(())
    }

    /// Clip + AdamW on my parts (`clip` multiplies the gradients as they are read), then
    /// each segment's weights all-gathered over the group. A collective of the group.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        layout: &ParamLayout,
        lr: f32,
        optim: &OptimConfig,
        clip: f32,
        comm: &mut Comm,
        step: usize,
        obs: &mut impl Observer,
    ) -> Result<(), CommError> {
        let rank = self.rank;
        for (s, adam) in self.segments.iter().zip(self.adam.iter_mut()) {
            let p = s.parts[rank].clone();
            let (w, g) = (&mut params[p.clone()], &grads[p.clone()]);
            obs.time(Phase::Optimizer, step, || {
                adam.step_shard(w, g, layout, p, lr, optim, clip)
            });
        }
        for (k, s) in self.segments.iter().enumerate() {
            let mine = local(&s.parts[rank], &s.range);
            let w = &mut params[s.range.clone()];
            obs.time(Phase::AllGather(k), step, || {
                comm.all_gather_ranges(w, mine)
            })?;
        }
        Ok(())
    }

    /// AdamW's state of a buffer of `len` floats with the stage's segments filled from every
    /// member's parts (the rest zero): what the pipeline's consolidation then completes
    /// over the stages. A collective of the group.
    pub fn whole_adam(&self, len: usize, comm: &mut Comm) -> Result<AdamW, CommError> {
        let mut whole = AdamW::new(len);
        whole.t = self.adam[0].t;
        for (s, adam) in self.segments.iter().zip(&self.adam) {
            let p = s.parts[self.rank].clone();
            whole.m[p.clone()].copy_from_slice(&adam.m);
            whole.v[p.clone()].copy_from_slice(&adam.v);
            let mine = local(&p, &s.range);
            comm.all_gather_ranges(&mut whole.m[s.range.clone()], mine.clone())?;
            comm.all_gather_ranges(&mut whole.v[s.range.clone()], mine)?;
        }
        Ok(whole)
    }

    /// The steps my moments have taken (AdamW's t).
    pub fn t(&self) -> u64 {
        self.adam[0].t
    }

    /// What this member holds (`summary.json`'s `memory`): the ZeRO-1 formula for the
    /// stage's parameters (`num_params` counts them: the owned range and the copy of `wte`)
    /// over the group, next to the buffers the stage keeps: `params` and `grads` floats of
    /// weights and gradients, `exact` i64s of deterministic mode's sum, my parts' moments,
    /// and `activations` bytes.
    pub fn memory(&self, params: usize, grads: usize, exact: usize, activations: u64) -> Memory {
        let size = self.owned().parts.len();
        let p: usize = self.segments.iter().map(|s| s.range.len()).sum();
        let moments: usize = self.adam.iter().map(|a| a.m.len() + a.v.len()).sum();
        Memory {
            stage: 1,
            workers: size,
            num_params: p,
            predicted: StateBytes {
                params: 4 * p as u64,
                grads: 4 * p as u64,
                optimizer: 8 * p as u64 / size as u64,
                activations,
            },
            measured: StateBytes {
                params: 4 * params as u64,
                grads: 4 * grads as u64 + 8 * exact as u64,
                optimizer: 4 * moments as u64,
                activations,
            },
            peak_rss_bytes: super::peak_rss_bytes(),
            prefetch: None, // stage 1 walks no blocks
        }
    }
}
