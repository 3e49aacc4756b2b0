//! ZeRO stages 2 and 3: forward and backward walked block by block, with full weights and
//! full gradients only for the blocks in flight.
//!
//! The model's own forward and backward (`model/gpt.rs`) read every weight from one flat
//! buffer and write every gradient into another. Here the same block functions run over
//! block-sized buffers instead, which gathers fill and reduce-scatters empty. The walk
//! issues those [`Job`]s in one order; where they run is its lane (`lane.rs`): a
//! communication thread where a core is free for it, else inline on the worker's thread.
//!
//! ```text
//!  forward (stage 3):   gather the ends (wte, wpe, ln_f): kept until backward is done
//!   thread lane
//!    main thread:       embed | wait w0 | block 0 | wait w1 | block 1 | ... | ln_f, head, loss
//!    comm thread:       gather w0 | gather w1 | gather w2 (into w0's buffer) | ...
//!                                    ^ prefetch: block l+1's gather runs under block l
//!   inline lane
//!    main thread:       embed | gather w0 | gather w1 | block 0 | gather w2 | block 1 | ...
//!                                    ^ the same gathers, where they are issued
//!  backward:            head, ln_f -> reduce-scatter ln_f's gradient
//!   thread lane
//!    main thread:       wait w3 | block 3 into g_a | wait w2 | block 2 into g_b | wait g_a ...
//!    comm thread:       gather w3, w2 | reduce-scatter g_a, add my part into my shard, zero
//!                       g_a, hand it back | gather w1 | reduce-scatter g_b | ...
//!   inline lane
//!    main thread:       gather w3, w2 | block 3 into g_a | reduce-scatter g_a | gather w1 |
//!                       block 2 into g_b | reduce-scatter g_b | gather w0 | block 1 into g_a ...
//!                       embeddings last: their gradient (head and lookup) is reduced at the end
//! ```
//!
//! Stage 2 walks backward the same way with the replica's own (whole) weights: no gathers,
//! only the gradient buffers. Two weight buffers and two gradient buffers are the blocks in
//! flight; the ends' buffers are small ((V + T + 1) x C floats).
//!
//! Deterministic mode (stage 3 only; stage 2 uses the model's backward there) writes the
//! gradient of each sequence into the whole layout, which is summed exactly after the last
//! sequence ([`Dest::Layout`]): the functions and their order are the model's, so the bits
//! are the model's.
//!
//! Rust note: the buffers travel to the lane and back as `&mut [f32]` (through channels to
//! the thread, inside one `std::thread::scope`): a buffer is either being computed on or
//! being communicated, never both, and the compiler checks it, as in `buckets.rs`.

use std::ops::Range;

use super::lane::{gather_into, with_lane, Courier, Job};
use crate::collective::{Comm, CommError};
use crate::config::{TrainConfig, ZeroPrefetch};
use crate::model::block::{block_backward, block_forward, block_grads, block_weights};
use crate::model::embedding::{encoder_backward, encoder_forward};
use crate::model::layernorm::{layernorm_backward, layernorm_forward};
use crate::model::linear::{linear_backward, linear_forward};
use crate::model::loss::{crossentropy_backward, crossentropy_forward};
use crate::model::matmul::Out;
use crate::model::{Gpt, ParamLayout, Workspace};
use crate::step::Observer;
use crate::trace::Phase;

/// Where the walk's backward puts the gradient.
pub(crate) enum Dest<'g> {
    /// The whole layout (deterministic mode): added in, as the model's backward does.
    Layout(&'g mut [f32]),
    /// My shard only: each block's gradient is reduce-scattered and my part added in.
    Shard(&'g mut [f32]),
}

/// The walk's buffers: gathered weights (stage 3) and gradients in flight (stages 2, 3).
pub(crate) struct Walk {
    /// My shard of the flat layout.
    mine: Range<usize>,
    /// Stage 3: wte and wpe, then ln_f, gathered for the whole step.
    emb_w: Vec<f32>,
    lnf_w: Vec<f32>,
    /// Stage 3: two block-sized weight buffers (the block computed, the one prefetched).
    block_w: [Vec<f32>; 2],
    /// Default mode: the gradients in flight, zeroed whenever they come back.
    emb_g: Vec<f32>,
    lnf_g: Vec<f32>,
    block_g: [Vec<f32>; 2],
    /// Where the gathers and reduce-scatters run (`Thread` or `Inline`); `None`: this
    /// stage walks nothing (below 2, or stage 2's deterministic mode: the model's backward).
    pub(crate) prefetch: Option<ZeroPrefetch>,
}

impl Walk {
    /// The buffers `stage` needs for `cfg` (none below stage 2).
    pub(crate) fn new(stage: u8, cfg: &TrainConfig, mine: Range<usize>) -> Self {
        let layout = ParamLayout::new(&cfg.model);
        let c = cfg.model.n_embd;
        let (blocks_at, block) = if cfg.model.n_layer > 0 {
            (layout.block_range(0).start, layout.block_range(0).len())
        } else {
            (layout.len - c, 0)
        };
        let sized = |on: bool, n: usize| if on { vec![0.0; n] } else { Vec::new() };
        let (s3, grads) = (stage == 3, stage >= 2 && !cfg.parallel.deterministic);
        Walk {
            mine,
            emb_w: sized(s3, blocks_at),
            lnf_w: sized(s3, c),
            block_w: [sized(s3, block), sized(s3, block)],
            emb_g: sized(grads, blocks_at),
            lnf_g: sized(grads, c),
            block_g: [sized(grads, block), sized(grads, block)],
            prefetch: (s3 || grads).then(|| cfg.parallel.zero_prefetch.resolve(busy_threads(cfg))),
        }
    }

    /// Floats held for weights and for gradients in flight.
    pub(crate) fn floats(&self) -> (usize, usize) {
        let w = self.emb_w.len() + self.lnf_w.len() + 2 * self.block_w[0].len();
        let g = self.emb_g.len() + self.lnf_g.len() + 2 * self.block_g[0].len();
        (w, g)
    }

    /// Stage 3's forward: `model.params` is my shard; each block's weights are gathered
    /// (the next one prefetched) before it runs. Returns the mean loss.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward<O: Observer>(
        &mut self,
        model: &Gpt,
        ws: &mut Workspace,
        inputs: &[u32],
        targets: &[u32],
        comm: &mut Comm,
        step: usize,
        obs: &mut O,
    ) -> Result<f32, CommError> {
        let (c, n, threads) = (model.cfg.n_embd, ws.b * ws.t, ws.threads);
        let (s, nl, layout) = (model.attn_shape(ws), model.cfg.n_layer, &model.layout);
        let (wpe_at, blocks_at, lnf_at) = model.ends();
        let (shard, mine) = (&model.params[..], &self.mine);
        let Walk {
            emb_w,
            lnf_w,
            block_w: [a, b],
            prefetch,
            ..
        } = self;
        let thread = *prefetch == Some(ZeroPrefetch::Thread);
        obs.time(Phase::AllGather(nl), step, || {
            gather_into(emb_w, shard, mine, &(0..blocks_at), comm)?;
            gather_into(lnf_w, shard, mine, &(lnf_at..layout.len), comm)
        })?;
        obs.time(Phase::Forward, step, || {
            ws.inputs.copy_from_slice(inputs);
            let (wte, wpe) = emb_w.split_at(wpe_at);
            encoder_forward(&mut ws.encoded, inputs, wte, wpe, ws.t, c);
        });
        let courier = Courier {
            comm,
            shard,
            mine,
            grads: None,
        };
        with_lane(thread, courier, step, obs, |lane, obs| {
            for (l, buf) in [&mut a[..], &mut b[..]].into_iter().enumerate().take(nl) {
                lane.send(Job::Gather(l, layout.block_range(l), buf), step, obs);
            }
            for l in 0..nl {
                let Some(w) = lane.weights(l, step, obs) else {
                    break; // a job failed: its error is returned below
                };
                let (done, rest) = ws.blocks.split_at_mut(l);
                let x_in = if l == 0 {
                    &ws.encoded
                } else {
                    &done[l - 1].x_out
                };
                obs.time(Phase::Forward, step, || {
                    block_forward(&mut rest[0], x_in, &block_weights(w, c), s, threads)
                });
                if l + 2 < nl {
                    lane.send(Job::Gather(l + 2, layout.block_range(l + 2), w), step, obs);
                }
            }
        })?;
        let loss = obs.time(Phase::Forward, step, || {
            let x_last = ws.blocks.last().map_or(&ws.encoded, |b| &b.x_out);
            let (mean, rstd) = (&mut ws.lnf_mean, &mut ws.lnf_rstd);
            layernorm_forward(&mut ws.lnf, mean, rstd, x_last, lnf_w, threads);
            let wte = &emb_w[..wpe_at];
            linear_forward(&mut ws.logits, &ws.lnf, wte, n, Out::Set, threads);
            ws.has_targets = true;
            ws.targets.copy_from_slice(targets);
            crossentropy_forward(&mut ws.losses, &mut ws.lse, &ws.logits, targets);
            let total: f64 = ws.losses.iter().map(|&x| x as f64).sum();
            (total / n as f64) as f32
        });
        Ok(loss)
    }

    /// Backward of the last forward, block by block (stage 2: the replica's own weights;
    /// stage 3: gathered again, prefetched), the gradient going to `dest`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward<O: Observer>(
        &mut self,
        model: &Gpt,
        ws: &mut Workspace,
        scale: f32,
        dest: Dest<'_>,
        comm: &mut Comm,
        step: usize,
        obs: &mut O,
    ) -> Result<(), CommError> {
        let (c, n, threads) = (model.cfg.n_embd, ws.b * ws.t, ws.threads);
        let (s, nl, layout) = (model.attn_shape(ws), model.cfg.n_layer, &model.layout);
        let (wpe_at, blocks_at, lnf_at) = model.ends();
        let gathered = model.params.len() != layout.len; // stage 3: params are my shard
        let (p, mine) = (&model.params[..], &self.mine);
        let Walk {
            emb_w,
            lnf_w,
            block_w: [wa, wb],
            emb_g,
            lnf_g,
            block_g: [ga, gb],
            prefetch,
            ..
        } = self;
        let thread = *prefetch == Some(ZeroPrefetch::Thread);
        let (emb_w, lnf_w): (&[f32], &[f32]) = if gathered {
            (emb_w, lnf_w)
        } else {
            (&p[..blocks_at], &p[lnf_at..])
        };
        // the gradient of the ends, and (shard mode) my shard and the free block buffers
        let (emb_g, lnf_g, mut blocks_g, shard_g, mut free): (_, _, _, _, Vec<&mut [f32]>) =
            match dest {
                Dest::Layout(g) => {
                    let (front, lnf) = g.split_at_mut(lnf_at);
                    let (emb, blocks) = front.split_at_mut(blocks_at);
                    (emb, lnf, Some(blocks), None, Vec::new())
                }
                Dest::Shard(g) => (&mut emb_g[..], &mut lnf_g[..], None, Some(g), vec![ga, gb]),
            };
        let d = &mut ws.scratch;
        let courier = Courier {
            comm,
            shard: p,
            mine,
            grads: shard_g,
        };
        with_lane(thread, courier, step, obs, |lane, obs| {
            if gathered {
                for (k, buf) in [&mut wa[..], &mut wb[..]].into_iter().enumerate().take(nl) {
                    let l = nl - 1 - k;
                    lane.send(Job::Gather(l, layout.block_range(l), buf), step, obs);
                }
            }
            let reducing = blocks_g.is_none();
            // the head and ln_f: wte's first share of gradient, ln_f's whole
            obs.time(Phase::Backward, step, || {
                let (lse, targets) = (&ws.lse, &ws.targets);
                crossentropy_backward(&mut d.dlogits, &ws.logits, targets, lse, scale, threads);
                let (wte, g_wte) = (&emb_w[..wpe_at], &mut emb_g[..wpe_at]);
                let dl = &d.dlogits;
                linear_backward(&mut d.dln, g_wte, dl, &ws.lnf, wte, n, Out::Set, threads);
                d.dres.fill(0.0);
                let x_last = ws.blocks.last().map_or(&ws.encoded, |b| &b.x_out);
                let (mean, rstd) = (&ws.lnf_mean, &ws.lnf_rstd);
                layernorm_backward(
                    &mut d.dres,
                    lnf_g,
                    &d.dln,
                    x_last,
                    lnf_w,
                    mean,
                    rstd,
                    threads,
                );
            });
            if reducing {
                lane.send(Job::Reduce(0, lnf_at..layout.len, lnf_g, false), step, obs);
            }
            for l in (0..nl).rev() {
                let range = layout.block_range(l);
                let w: &mut [f32] = if gathered {
                    match lane.weights(l, step, obs) {
                        Some(w) => w,
                        None => break,
                    }
                } else {
                    &mut [] // stage 2 reads the replica's weights
                };
                let weights_l = if gathered { &w[..] } else { &p[range.clone()] };
                let x_in = if l == 0 {
                    &ws.encoded
                } else {
                    &ws.blocks[l - 1].x_out
                };
                let acts = &ws.blocks[l];
                if let Some(blocks) = blocks_g.as_deref_mut() {
                    let g = &mut blocks[range.start - blocks_at..range.end - blocks_at];
                    obs.time(Phase::Backward, step, || {
                        let (w, g) = (block_weights(weights_l, c), block_grads(g, c));
                        block_backward(g, d, acts, x_in, &w, s, threads, None)
                    });
                } else {
                    let Some(g) = free.pop().or_else(|| lane.freed(step, obs)) else {
                        break;
                    };
                    obs.time(Phase::Backward, step, || {
                        let (w, g) = (block_weights(weights_l, c), block_grads(g, c));
                        block_backward(g, d, acts, x_in, &w, s, threads, None)
                    });
                    lane.send(Job::Reduce(nl - l, range, g, true), step, obs);
                }
                if gathered && l >= 2 {
                    lane.send(Job::Gather(l - 2, layout.block_range(l - 2), w), step, obs);
                }
            }
            // x_0 = wte[inputs] + wpe: the embeddings' gradient is complete, last
            obs.time(Phase::Backward, step, || {
                let (dwte, dwpe) = emb_g.split_at_mut(wpe_at);
                encoder_backward(dwte, dwpe, &d.dres, &ws.inputs, ws.t, c);
            });
            if reducing {
                lane.send(Job::Reduce(nl + 1, 0..blocks_at, emb_g, false), step, obs);
            }
        })
    }
}

/// The threads that compute in this process: its workers, one compute thread each.
fn busy_threads(cfg: &TrainConfig) -> usize {
    cfg.parallel.workers / cfg.parallel.processes.max(1)
}
