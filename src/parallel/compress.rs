//! Gradient compression with error feedback: send less than the whole gradient, and carry
//! what was not sent into the next step, so that nothing is lost, only delayed.
//!
//! ```text
//!   m        = my gradient + residual           (error feedback: last step's unsent part)
//!   sent     = C(m)                              top-k | int8 | PowerSGD (powersgd.rs)
//!   residual = m - (what the sum received from me)
//!   every worker gathers every worker's `sent` and adds them up in rank order:
//!       the same bits on every worker, so the replicas stay identical
//!
//!   top-k (F = 0.01)   index:value pairs of the 1% largest |m|     8 bytes x F x P
//!   int8               one signed byte per entry, an f32 scale       ~1 byte x P
//!                      per block of 1024
//!   PowerSGD (R)       each matrix rows x cols as P (rows x R) and   4 R (rows+cols) per matrix
//!                      Q (cols x R); vectors whole
//!   plain all-reduce                                                 4 x P, twice (ring)
//! ```
//!
//! Top-k (`topk:F`) keeps its error feedback on the UPDATE, not the gradient:
//!
//! ```text
//!   topk:F       my AdamW step on MY gradient (clipped, my own moments) -> u = p' - p
//!                m = u + residual;  send top-k(m);  p += (sum of every worker's sent) / N
//!   topk-grad:F  m = g + residual;  send top-k(m);  ONE AdamW on the sparse sum
//! ```
//!
//! Why: AdamW divides each coordinate by the root of its own running mean square. Under
//! `topk-grad` a coordinate gets nothing for ~1/F steps, then the whole delayed sum G at
//! once; its second moment sees the spike, and its step over those 1/F steps comes to
//! about sqrt(F) x the dense step (about 1/10 at F = 1%): the model learns as if its
//! learning rate were ten times lower. Compressing AdamW's output instead keeps each
//! coordinate's step at the size AdamW chose; error feedback then only delays it.
//!
//! Top-k and int8 are all-gathers of packed 64-bit words (`i64`: an index and an f32's bits,
//! or eight signed bytes): a sparse or quantised gradient cannot be summed on the way as a
//! ring sums floats, so each worker receives everyone's and adds them itself. PowerSGD is
//! linear in the gradient and all-reduces its factors.
//!
//! [`Compress`] is a [`GradientExchange`]: the one training step runs unchanged around it
//! (`topk:F` overrides the update, as ZeRO does). Error feedback (Seide et al. 2014;
//! Karimireddy et al. 2019) is what lets 1% of the entries train at all: a small entry is
//! not dropped, it grows in the residual until it is among the largest and goes out.

use crate::collective::{Algorithm, Comm};
use crate::config::OptimConfig;
use crate::error::Error;
use crate::model::ParamLayout;
use crate::parallel::data_parallel::{gone, wait_link};
use crate::parallel::fixed_point;
use crate::parallel::powersgd::PowerSgd;
use crate::parallel::sync_options::Compression;
use crate::step::{GradientExchange, Observer, Replica};
use crate::trace::Phase;

/// Entries per int8 block, each with its own scale.
pub const INT8_BLOCK: usize = 1024;

/// Compressed gradients, summed over a communicator, with error feedback.
pub struct Compress {
    /// This worker's endpoint of the group.
    pub comm: Comm,
    /// The all-reduce algorithm (PowerSGD's factors, evaluation).
    pub algorithm: Algorithm,
    codec: Compression,
    /// What was not sent yet, laid out like the gradients (`topk:F`: like the updates).
    residual: Vec<f32>,
    /// Every worker's packed message, worker w's in chunk w.
    packed: Vec<i64>,
    /// Top-k's scratch: the magnitudes of the gradient.
    mags: Vec<f32>,
    /// Deterministic mode: the fixed-point sum as floats.
    scratch: Vec<f32>,
    /// `topk:F`: the parameters before this worker's own AdamW step.
    before: Vec<f32>,
    power: Option<PowerSgd>,
}

impl Compress {
    /// Compression `codec` of gradients laid out as `layout`, over `comm`.
    pub fn new(comm: Comm, algorithm: Algorithm, codec: Compression, layout: &ParamLayout) -> Self {
        let (n, len) = (comm.size(), layout.len);
        let words = match codec {
            Compression::TopK(f) | Compression::TopKGrad(f) => top_k_count(f, len),
            Compression::Int8 => int8_words(len),
            Compression::PowerSgd(_) => 0,
        };
        let power = match codec {
            Compression::PowerSgd(r) => Some(PowerSgd::new(layout, r)),
            _ => None,
        };
        Compress {
            comm,
            algorithm,
            codec,
            residual: vec![0.0; len],
            packed: vec![0; n * words],
            mags: Vec::with_capacity(len),
            scratch: Vec::new(),
            before: Vec::new(),
            power,
        }
    }

    /// Whether error feedback is on the update (`topk:F`): each worker's own AdamW step.
    fn on_update(&self) -> bool {
        matches!(self.codec, Compression::TopK(_))
    }

    /// Sends what the residual holds (top-k or int8), and writes the sum of every worker's
    /// message into `out`; the residual keeps what was not sent.
    fn send<O: Observer>(
        &mut self,
        out: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        let (n, me) = (self.comm.size(), self.comm.rank());
        let (residual, mags, packed) = (&mut self.residual, &mut self.mags, &mut self.packed);
        let words = packed.len() / n;
        let mine = &mut packed[me * words..(me + 1) * words];
        obs.time(Phase::Compress, step, || match self.codec {
            Compression::TopK(_) | Compression::TopKGrad(_) => top_k_encode(residual, mags, mine),
            _ => int8_encode(residual, mine),
        });
        let comm = &mut self.comm;
        let (r, owed) = obs.time(Phase::AllReduce(0), step, || {
            comm.deferring_link(|c| c.all_gather(packed))
        });
        r.map_err(gone(step))?;
        wait_link(owed, step, obs);
        // every worker adds everyone's message in rank order: identical sums everywhere
        obs.time(Phase::Compress, step, || {
            out.fill(0.0);
            for w in 0..n {
                let msg = &packed[w * words..(w + 1) * words];
                match self.codec {
                    Compression::TopK(_) | Compression::TopKGrad(_) => top_k_add(msg, out),
                    _ => int8_add(msg, out),
                }
            }
        });
        Ok(())
    }

    /// The compressed sum of `grads` over the workers, in place.
    fn exchange<O: Observer>(
        &mut self,
        grads: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        if self.on_update() {
            // `topk:F` sends in `update`: each worker keeps its own gradient
            return Ok(());
        }
        // m = g + e: the residual buffer becomes m, and then what is left of it
        let residual = &mut self.residual;
        for (e, g) in residual.iter_mut().zip(grads.iter()) {
            *e += g;
        }
        if let Some(power) = &mut self.power {
            return power.exchange(grads, residual, &mut self.comm, self.algorithm, step, obs);
        }
        self.send(grads, step, obs)
    }

    /// `topk:F`: my own clipped AdamW step on my own gradient, its change to the
    /// parameters added to the residual, the residual's top-k sent, and the mean of every
    /// worker's sent change applied to the parameters as they were.
    fn update_on_update<O: Observer>(
        &mut self,
        r: &mut Replica,
        lr: f32,
        optim: &OptimConfig,
        step: usize,
        obs: &mut O,
    ) -> Result<f32, Error> {
        let n = self.comm.size();
        // my gradient is scaled by the global batch: times N it is my own mean gradient
        r.grads.iter_mut().for_each(|g| *g *= n as f32);
        self.before.clear();
        self.before.extend_from_slice(&r.model.params);
        let norm = obs.time(Phase::Optimizer, step, || crate::step::update(r, lr, optim));
        if !norm.is_finite() {
            return Ok(norm);
        }
        for ((e, p), b) in (self.residual.iter_mut())
            .zip(&mut r.model.params)
            .zip(&self.before)
        {
            *e += *p - b;
            *p = *b;
        }
        let mut sum = std::mem::take(&mut self.scratch);
        sum.resize(self.residual.len(), 0.0);
        self.send(&mut sum, step, obs)?;
        let inv = 1.0 / n as f32;
        for (p, d) in r.model.params.iter_mut().zip(&sum) {
            *p += d * inv;
        }
        self.scratch = sum;
        Ok(norm)
    }
}

impl GradientExchange for Compress {
    fn sum<O: Observer>(
        &mut self,
        grads: &mut [f32],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        self.exchange(grads, step, obs)
    }

    /// Deterministic mode: the exact per-worker sum is compressed as floats, and the
    /// compressed total (added in rank order: repeatable) goes back into fixed point.
    fn sum_exact<O: Observer>(
        &mut self,
        acc: &mut [i64],
        step: usize,
        obs: &mut O,
    ) -> Result<(), Error> {
        if self.on_update() {
            // each worker keeps its own exact gradient: `update` sends
            return Ok(());
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(acc.len(), 0.0);
        fixed_point::to_f32(&mut scratch, acc);
        self.exchange(&mut scratch, step, obs)?;
        acc.fill(0);
        let ok = fixed_point::accumulate_and_zero(acc, &mut scratch);
        self.scratch = scratch;
        if !ok {
            return Err(Error::Worker(format!(
                "worker {} at step {step}: the compressed gradient sum is too large for \
                 fixed point; lower --lr or drop --deterministic",
                self.comm.rank()
            )));
        }
        Ok(())
    }

    fn update<O: Observer>(
        &mut self,
        r: &mut Replica,
        lr: f32,
        optim: &OptimConfig,
        step: usize,
        obs: &mut O,
    ) -> Result<f32, Error> {
        if self.on_update() {
            return self.update_on_update(r, lr, optim, step, obs);
        }
        Ok(obs.time(Phase::Optimizer, step, || crate::step::update(r, lr, optim)))
    }
}

/// k of top-k: the fraction `f` of `len` entries, at least one.
pub fn top_k_count(f: f32, len: usize) -> usize {
    ((f as f64 * len as f64).round() as usize).clamp(1, len.max(1))
}

/// An (index, value) pair as one word: the index in the high 32 bits, the f32's bits low.
fn pack(i: u32, v: f32) -> i64 {
    (((i as u64) << 32) | v.to_bits() as u64) as i64
}

fn unpack(w: i64) -> (usize, f32) {
    ((w as u64 >> 32) as usize, f32::from_bits(w as u32))
}

/// Top-k with error feedback: writes the `out.len()` entries of `m` largest in magnitude
/// (ties: the lower index) into `out` as packed pairs, in index order, and zeroes them in
/// `m`, which is left holding exactly what was not sent: `sent + m_after = m_before`.
///
/// The k-th largest magnitude is found by selection on a copy of the magnitudes (`mags`,
/// contiguous floats: fast), then one pass in index order takes everything above it and as
/// many entries equal to it as are still wanted.
pub fn top_k_encode(m: &mut [f32], mags: &mut Vec<f32>, out: &mut [i64]) {
    let k = out.len();
    assert!(k <= m.len() && m.len() <= u32::MAX as usize);
    if k == 0 {
        return;
    }
    mags.clear();
    mags.extend(m.iter().map(|x| x.abs()));
    let (_, &mut threshold, _) = mags.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let above = m
        .iter()
        .filter(|x| x.abs().total_cmp(&threshold).is_gt())
        .count();
    let mut ties = k - above;
    let mut o = 0;
    for (i, x) in m.iter_mut().enumerate() {
        let take = match x.abs().total_cmp(&threshold) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal if ties > 0 => {
                ties -= 1;
                true
            }
            _ => false,
        };
        if take {
            out[o] = pack(i as u32, *x);
            *x = 0.0;
            o += 1;
        }
    }
    debug_assert_eq!(o, k);
}

/// Adds one worker's top-k message into `grads`.
pub fn top_k_add(msg: &[i64], grads: &mut [f32]) {
    for &w in msg {
        let (i, v) = unpack(w);
        grads[i] += v;
    }
}

/// Words of an int8 message for `len` entries: per block, a scale word and 8 bytes a word.
pub fn int8_words(len: usize) -> usize {
    // every block but the last is a whole number of words (1024 = 128 x 8)
    len.div_ceil(INT8_BLOCK) + len.div_ceil(8)
}

/// int8 with error feedback: each block of `m` as signed bytes `q = round(x / s)`, with
/// `s = max |x| / 127`; `m` is left holding `x - q s`, what the bytes did not carry.
///
/// ```text
///   out: [ s0 | q0..q7 | q8..q15 | ... | s1 | ... ]   one block = 1 + ceil(1024 / 8) words
/// ```
pub fn int8_encode(m: &mut [f32], out: &mut [i64]) {
    out.fill(0);
    let mut w = 0;
    for block in m.chunks_mut(INT8_BLOCK) {
        let most = block.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        let s = most / 127.0;
        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
        out[w] = s.to_bits() as i64;
        w += 1;
        for bytes in block.chunks_mut(8) {
            let mut word = [0u8; 8];
            for (b, x) in word.iter_mut().zip(bytes.iter_mut()) {
                let q = (*x * inv).round().clamp(-127.0, 127.0) as i8;
                *b = q as u8;
                *x -= q as f32 * s;
            }
            out[w] = i64::from_le_bytes(word);
            w += 1;
        }
    }
}

/// Adds one worker's int8 message into `grads`.
pub fn int8_add(msg: &[i64], grads: &mut [f32]) {
    let mut w = 0;
    for block in grads.chunks_mut(INT8_BLOCK) {
        let s = f32::from_bits(msg[w] as u32);
        w += 1;
        for g8 in block.chunks_mut(8) {
            let word = msg[w].to_le_bytes();
            w += 1;
            for (g, &b) in g8.iter_mut().zip(&word) {
                *g += (b as i8) as f32 * s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1e-3 * (1.0 + (i % 5) as f32))
            .collect()
    }

    /// Error feedback loses nothing: what top-k sends plus what it keeps is, bit for bit,
    /// what it was given (the gradient plus the previous residual).
    #[test]
    fn top_k_error_feedback_conserves_the_gradient_mass() {
        let (g, mut residual) = (values(5000), values(5000));
        residual.reverse();
        for (e, x) in residual.iter_mut().zip(&g) {
            *e += x; // m = g + e
        }
        let m = residual.clone();
        let k = top_k_count(0.01, m.len());
        let (mut out, mut mags) = (vec![0i64; k], Vec::new());
        top_k_encode(&mut residual, &mut mags, &mut out);
        let mut sent = vec![0.0f32; m.len()];
        top_k_add(&out, &mut sent);
        for i in 0..m.len() {
            assert_eq!(sent[i] + residual[i], m[i], "entry {i}");
            assert!(
                sent[i] == 0.0 || residual[i] == 0.0,
                "entry {i} both sent and kept"
            );
        }
        // the k sent are the largest: none kept is larger than the smallest sent
        let smallest_sent =
            (sent.iter().filter(|x| **x != 0.0)).fold(f32::MAX, |a, x| a.min(x.abs()));
        let largest_kept = residual.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        assert!(
            largest_kept <= smallest_sent,
            "{largest_kept} > {smallest_sent}"
        );
        assert_eq!(out.len(), 50);
    }

    /// int8 keeps the quantisation error: decoded + residual = input within one rounding
    /// of the subtraction, and the residual is at most half a step of the block's scale.
    #[test]
    fn int8_error_feedback_keeps_what_the_bytes_dropped() {
        let m = values(3000);
        let mut residual = m.clone();
        let mut out = vec![0i64; int8_words(m.len())];
        int8_encode(&mut residual, &mut out);
        let mut sent = vec![0.0f32; m.len()];
        int8_add(&out, &mut sent);
        for (b, block) in m.chunks(INT8_BLOCK).enumerate() {
            let s = block.iter().fold(0.0f32, |a, x| a.max(x.abs())) / 127.0;
            for (j, &x) in block.iter().enumerate() {
                let i = b * INT8_BLOCK + j;
                assert!(
                    (sent[i] + residual[i] - x).abs() <= 1e-6 * x.abs().max(1e-3),
                    "{i}"
                );
                assert!(
                    residual[i].abs() <= 0.5 * s * 1.0001,
                    "{i}: {} vs {s}",
                    residual[i]
                );
            }
        }
    }
}
