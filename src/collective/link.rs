//! A simulated network link: every collective lasts at least what the alpha-beta model
//! says its messages and bytes would take on it.
//!
//! ```text
//!   --link 50:0.125       alpha = 50 us per message, beta = 1 / 0.125 GB/s (1 Gb Ethernet)
//!
//!   collective on a link:  |== real work (shared memory) ==|...... waited out ......|
//!                          t0                                            t0 + model time
//!   model time of a message-passing all-reduce: its schedule, step by step,
//!       sum over steps of  max over workers ( messages x alpha + bytes / bandwidth )
//!   the shared-memory all-reduce, reduce-scatter, all-gather: the ring's cost
//!       (the bandwidth-optimal algorithm a cluster would run), `scale::Link`'s formulas
//! ```
//!
//! The real work still runs (the sum is the sum), and the rest is waited out on the thread
//! that called the collective, so a communication thread that overlaps backward still
//! overlaps it. Without a link nothing is waited and nothing is timed.
//!
//! The same counts give each worker's **bytes on the wire**: what it would send on a link
//! (a shared-memory all-reduce is counted as the ring would send it), so strategies that
//! send less can be compared by their bytes whether a link is simulated or not.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::schedule::Schedule;
use crate::scale::hardware::Link as ModelLink;

/// A link between workers as an alpha-beta model: a message of `b` bytes takes
/// `alpha + b / bandwidth`.
///
/// Written `ALPHA_US:GB_PER_S` on the command line and in `config.json`:
///
/// ```
/// use nanodist::collective::Link;
/// let gbe: Link = "50:0.125".parse().unwrap(); // 1 Gb Ethernet: 0.125 GB/s
/// assert_eq!(gbe.to_string(), "50:0.125");
/// assert!((gbe.message_s(125_000.0) - (50e-6 + 1e-3)).abs() < 1e-12);
/// let err = "50".parse::<Link>().unwrap_err();
/// assert!(err.contains("ALPHA_US:GBPS"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Link {
    /// Latency of one message, microseconds.
    pub alpha_us: f64,
    /// Bandwidth of one worker's link, per direction, gigabytes (1e9 bytes) per second.
    pub gb_per_s: f64,
}

impl Link {
    /// The cost model's link with these figures (its ring formulas are the ones used here).
    fn model(&self) -> ModelLink {
        ModelLink {
            name: String::new(), // (no allocation: a link is costed per collective)
            alpha_s: self.alpha_us * 1e-6,
            bytes_per_s: self.gb_per_s * 1e9,
        }
    }

    /// One message of `bytes` bytes, seconds.
    pub fn message_s(&self, bytes: f64) -> f64 {
        self.model().p2p_s(bytes)
    }

    /// A ring all-reduce of `bytes` bytes on `n` workers, seconds:
    /// `2 (n-1) alpha + 2 (n-1)/n bytes / bandwidth`.
    pub fn ring_all_reduce_s(&self, n: usize, bytes: f64) -> f64 {
        self.model().ring_allreduce_s(n, bytes)
    }

    /// A reduce-scatter or an all-gather of `bytes` bytes (the whole buffer) on `n`
    /// workers, seconds: half a ring all-reduce.
    pub fn half_s(&self, n: usize, bytes: f64) -> f64 {
        self.model().half_s(n, bytes)
    }

    /// A message-passing schedule of `elem_bytes`-byte elements, seconds: its steps one
    /// after the other, each as long as its busiest worker's messages and bytes (a worker
    /// sends and receives at once, on separate directions of its link).
    pub fn schedule_s(&self, sched: &Schedule, elem_bytes: usize) -> f64 {
        let (alpha, bw) = (self.alpha_us * 1e-6, self.gb_per_s * 1e9);
        let mut total = 0.0;
        let mut out = vec![(0usize, 0usize); sched.workers];
        let mut inn = vec![(0usize, 0usize); sched.workers];
        for step in &sched.steps {
            out.iter_mut()
                .chain(inn.iter_mut())
                .for_each(|c| *c = (0, 0));
            for t in &step.transfers {
                let len = t.range.len() * elem_bytes;
                out[t.from] = (out[t.from].0 + 1, out[t.from].1 + len);
                inn[t.to] = (inn[t.to].0 + 1, inn[t.to].1 + len);
            }
            let busiest = (out.iter().chain(&inn))
                .map(|&(msgs, bytes)| msgs as f64 * alpha + bytes as f64 / bw)
                .fold(0.0, f64::max);
            total += busiest;
        }
        total
    }
}

/// Bytes worker `me` sends in `sched` with `elem_bytes`-byte elements.
pub(crate) fn schedule_bytes_from(sched: &Schedule, me: usize, elem_bytes: usize) -> u64 {
    let sent = (sched.steps.iter().flat_map(|s| &s.transfers))
        .filter(|t| t.from == me)
        .map(|t| t.range.len())
        .sum::<usize>();
    (sent * elem_bytes) as u64
}

/// Waits until `deadline`: sleeps while it is far, then spins through the last stretch,
/// because a sleep overshoots by tens of microseconds and a link's alpha is about that size.
/// (A spin, not `yield_now`: beside busy processes, a yield can give the core away for a
/// whole time slice, milliseconds.)
pub fn wait_until(deadline: Instant) {
    const SPIN: Duration = Duration::from_micros(100);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::hint::spin_loop();
        }
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.alpha_us, self.gb_per_s)
    }
}

impl std::str::FromStr for Link {
    type Err = String;

    /// `ALPHA_US:GBPS`: a latency in microseconds (>= 0) and a bandwidth in GB/s (> 0).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!(
                "--link '{s}' {why}: write ALPHA_US:GBPS, e.g. 50:0.125 for 1 Gb Ethernet \
                 (50 us per message, 0.125 GB/s)"
            )
        };
        let (a, g) = s.split_once(':').ok_or_else(|| bad("has no ':'"))?;
        let alpha_us: f64 = (a.trim().parse()).map_err(|_| bad("has no number before ':'"))?;
        let gb_per_s: f64 = (g.trim().parse()).map_err(|_| bad("has no number after ':'"))?;
        if !(0.0..=1e6).contains(&alpha_us) {
            return Err(bad("has a latency outside 0..=1000000 us"));
        }
        if !(gb_per_s.is_finite() && gb_per_s >= 1e-6) {
            return Err(bad("has a bandwidth that is not a positive number of GB/s"));
        }
        Ok(Link { alpha_us, gb_per_s })
    }
}

impl TryFrom<String> for Link {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Link> for String {
    fn from(l: Link) -> String {
        l.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::Algorithm;

    /// The ring's schedule, costed message by message, is the cost model's ring formula.
    #[test]
    fn the_ring_schedule_costs_what_the_ring_formula_says() {
        let link: Link = "50:0.125".parse().unwrap();
        for n in [2, 3, 4, 8] {
            let len = 840 * n; // chunks of equal size
            let sched = Algorithm::Ring.schedule(n, len).unwrap();
            let by_steps = link.schedule_s(&sched, 4);
            let formula = link.ring_all_reduce_s(n, (len * 4) as f64);
            assert!(
                (by_steps - formula).abs() < 1e-12,
                "{n}: {by_steps} vs {formula}"
            );
            let sent = schedule_bytes_from(&sched, 1, 4) as f64;
            assert_eq!(sent, 2.0 * (n - 1) as f64 / n as f64 * (len * 4) as f64);
        }
    }

    #[test]
    fn names_round_trip_and_bad_ones_say_what_to_write() {
        for s in ["50:0.125", "0:10", "2.5:1.25"] {
            let l: Link = s.parse().unwrap();
            assert_eq!(l.to_string(), s);
            let json = serde_json::to_string(&l).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Link>(&json).unwrap(), l);
        }
        for bad in ["", "50", "x:1", "50:y", "-1:1", "50:0", "50:-2", "nan:1"] {
            let e = bad.parse::<Link>().unwrap_err();
            assert!(!e.contains('\n') && e.contains("ALPHA_US:GBPS"), "{e}");
        }
    }
}
