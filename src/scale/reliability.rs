//! Failures at scale: the cluster's mean time between interruptions, the checkpoint interval
//! that wastes least, the goodput, and a seeded Monte-Carlo run that checks the formula.
//!
//! ```text
//!   work tau | ckpt C | work tau | ckpt C | work ..X failure      restart R | work tau | ..
//!   <------ saved ------><------ saved ----><-- lost --->
//!
//!   M = MTBF per GPU / N       (failures independent, exponential: rates add up)
//!   goodput(tau) = tau / E[wall time per saved segment]
//!                = tau / ( M e^{R/M} (e^{(tau+C)/M} - 1) )        (Daly 2006, exact model)
//!               ~= 1 - C/tau - (tau/2 + R)/M                      (first order)
//!   best tau ~= sqrt(2 C M)                                       (Young 1974)
//! ```
//! Calibration point: Meta's Llama 3 paper (Dubey et al. 2024, section 3.3.4) reports 419
//! unexpected interruptions in 54 days on 16,384 H100 GPUs: one every 3.1 hours, a per-GPU
//! MTBF of 16,384 x 54 x 24 / 419 = 50,677 hours (every cause counted, charged to the GPUs).

use serde::Serialize;

/// The per-GPU MTBF, hours, implied by Llama 3's 419 interruptions in 54 days on 16,384 GPUs.
pub const LLAMA3_GPU_MTBF_HOURS: f64 = 16384.0 * 54.0 * 24.0 / 419.0;

/// Failure and checkpoint figures of a run, all stated assumptions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reliability {
    /// Mean time between failures of one GPU (with its share of hosts, network, software),
    /// hours. Default: [`LLAMA3_GPU_MTBF_HOURS`].
    pub gpu_mtbf_hours: f64,
    /// Aggregate write bandwidth of the checkpoint storage, bytes/s. Default 100 GB/s: an
    /// assumption (Llama 3's Tectonic file system sustains 2 TB/s for 16K GPUs).
    pub checkpoint_bytes_per_s: f64,
    /// Time from an interruption to training again (detect, reschedule, load), seconds.
    /// Default 600 s: an assumption.
    pub restart_s: f64,
}

impl Default for Reliability {
    fn default() -> Reliability {
        Reliability {
            gpu_mtbf_hours: LLAMA3_GPU_MTBF_HOURS,
            checkpoint_bytes_per_s: 100e9,
            restart_s: 600.0,
        }
    }
}

/// Mean time between interruptions of a job on `gpus` GPUs, seconds: `MTBF / N`, since a
/// synchronous job stops when any one GPU fails and independent exponential rates add.
pub fn mtbi_s(gpu_mtbf_hours: f64, gpus: usize) -> f64 {
    gpu_mtbf_hours * 3600.0 / gpus.max(1) as f64
}

/// Young's optimal checkpoint interval (Young 1974), seconds of work between checkpoints:
/// `sqrt(2 C M)` for checkpoint cost `C` and mean time between failures `M`.
pub fn young_interval_s(c: f64, m: f64) -> f64 {
    (2.0 * c * m).sqrt()
}

/// Daly's higher-order refinement (Daly 2006, "A higher order estimate of the optimum
/// checkpoint interval for restart dumps", eq. 37): for `C < 2M`,
/// `sqrt(2 C M) (1 + sqrt(C/(2M))/3 + (C/(2M))/9) - C`; otherwise `M`.
pub fn daly_interval_s(c: f64, m: f64) -> f64 {
    if c >= 2.0 * m {
        return m;
    }
    let x = c / (2.0 * m);
    (2.0 * c * m).sqrt() * (1.0 + x.sqrt() / 3.0 + x / 9.0) - c
}

/// Goodput (fraction of wall time that is saved work) with work `tau` between checkpoints of
/// cost `c`, restart `r`, MTBI `m`, all seconds. Exact for exponential failures that may also
/// strike during checkpoints and restarts (Daly 2006): wall time per saved segment
/// `M e^{R/M} (e^{(tau + C)/M} - 1)`.
pub fn goodput(tau: f64, c: f64, r: f64, m: f64) -> f64 {
    tau / (m * (r / m).exp() * ((tau + c) / m).exp_m1())
}

/// The first-order goodput, `1 - C/tau - (tau/2 + R)/M`: checkpoint overhead, plus half an
/// interval of lost work and one restart per failure. Minimising its waste gives Young.
pub fn goodput_first_order(tau: f64, c: f64, r: f64, m: f64) -> f64 {
    1.0 - c / tau - (tau / 2.0 + r) / m
}

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny seeded generator, enough for drawing
/// failure times; kept here so the simulation depends on nothing else in the crate.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An exponential draw with mean `mean`: `-mean ln(U)`, U uniform in (0, 1].
    pub fn exponential(&mut self, mean: f64) -> f64 {
        let u = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        -mean * u.ln()
    }
}

/// Simulates a job that needs `work_s` seconds of computation, checkpointing after every
/// `tau` seconds of work (cost `c`), with failures at exponential intervals of mean `m` that
/// lose everything since the last completed checkpoint and cost a restart `r` (which can
/// itself be interrupted). Returns the goodput: work / wall time. Seeded: same inputs, same
/// answer.
pub fn simulate_goodput(tau: f64, c: f64, r: f64, m: f64, work_s: f64, seed: u64) -> f64 {
    let mut rng = SplitMix64::new(seed);
    let (mut wall, mut done) = (0.0, 0.0);
    // time left until the next failure; memoryless, so it may be redrawn after any restart
    let mut to_failure = rng.exponential(m);
    while done < work_s {
        let segment = tau + c;
        if to_failure >= segment {
            wall += segment;
            to_failure -= segment;
            done += tau;
            continue;
        }
        // failure inside the segment: its work is lost; restart until one completes
        wall += to_failure;
        loop {
            let f = rng.exponential(m);
            if f >= r {
                wall += r;
                to_failure = f - r;
                break;
            }
            wall += f;
        }
    }
    done / wall
}

/// The reliability picture of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReliabilityPrediction {
    /// The inputs.
    pub assumptions: Reliability,
    /// Mean time between interruptions of the whole job, hours.
    pub mtbi_hours: f64,
    /// Time to write one checkpoint, seconds.
    pub checkpoint_s: f64,
    /// Young's interval, seconds of work.
    pub young_s: f64,
    /// Daly's interval, seconds of work.
    pub daly_s: f64,
    /// Goodput at Daly's interval (formula).
    pub goodput: f64,
    /// Goodput against the interval: (interval s, formula, simulated).
    pub table: Vec<(f64, f64, f64)>,
}

/// The reliability of a job on `gpus` GPUs whose checkpoint is `checkpoint_bytes`.
pub fn reliability(rel: &Reliability, gpus: usize, checkpoint_bytes: f64) -> ReliabilityPrediction {
    let m = mtbi_s(rel.gpu_mtbf_hours, gpus);
    let c = checkpoint_bytes / rel.checkpoint_bytes_per_s;
    let r = rel.restart_s;
    let (young, daly) = (young_interval_s(c, m), daly_interval_s(c, m));
    // intervals from 1/8 to 8 times Daly's, on a log scale; the simulation runs each for
    // 400 MTBIs of work or 20,000 segments, whichever is less (a quick look; the tests run
    // longer)
    let table = (0..=12)
        .map(|i| {
            let tau = daly * 2f64.powf((i as f64 - 6.0) / 2.0);
            let sim = simulate_goodput(tau, c, r, m, (400.0 * m).min(20_000.0 * tau), 7 + i as u64);
            (tau, goodput(tau, c, r, m), sim)
        })
        .collect();
    ReliabilityPrediction {
        assumptions: rel.clone(),
        mtbi_hours: m / 3600.0,
        checkpoint_s: c,
        young_s: young,
        daly_s: daly,
        goodput: goodput(daly, c, r, m),
        table,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn young_by_hand() {
        // C = 60 s, M = 3 h = 10,800 s: sqrt(2 * 60 * 10,800) = sqrt(1,296,000) = 1138.4 s
        assert!((young_interval_s(60.0, 10_800.0) - 1_296_000f64.sqrt()).abs() < 1e-9);
        // Daly's is a little longer minus C: x = 60/21,600; 1138.4*(1 + 0.01757 + 0.00031) - 60
        let d = daly_interval_s(60.0, 10_800.0);
        assert!((d - 1098.8).abs() < 0.5, "Daly {d}");
    }

    #[test]
    fn llama3_calibration() {
        // 16,384 GPUs at the derived MTBF: one interruption per 54*24/419 = 3.09 h
        let m = mtbi_s(LLAMA3_GPU_MTBF_HOURS, 16_384) / 3600.0;
        assert!((m - 54.0 * 24.0 / 419.0).abs() < 1e-9);
    }

    #[test]
    fn first_order_agrees_when_failures_are_rare() {
        let (c, r, m) = (10.0, 60.0, 1e6);
        let tau = young_interval_s(c, m);
        let (exact, approx) = (goodput(tau, c, r, m), goodput_first_order(tau, c, r, m));
        assert!((exact - approx).abs() < 1e-4, "{exact} vs {approx}");
    }
}
