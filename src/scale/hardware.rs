//! The machine: a GPU's peak and memory, and its two links (inside a node, between nodes) as
//! alpha-beta models, with the collective times built on them.
//!
//! ```text
//!   node 0                          node 1
//!   +--------------------------+    +--------------------------+
//!   | GPU0 GPU1 ... GPU7       |    | GPU8 GPU9 ... GPU15      |
//!   |   \___ NVLink ___/       |    |   \___ NVLink ___/       |   intra: 300 GB/s (A100)
//!   |  NIC0 NIC1 ... NIC7      |    |  NIC8 ...                |
//!   +----|----|---------|------+    +----|---------------------+
//!        +----+-- InfiniBand switch -----+                          inter: 25 GB/s per GPU
//!
//!   time of one message of n bytes over a link:  alpha + n / beta
//! ```
//!
//! The alpha-beta (latency-bandwidth, "Hockney") model is the one the crate's own collectives
//! are measured against (`nanodist allreduce --link A:G`); here it is fed with datasheet figures.

use serde::Serialize;

/// A link as an alpha-beta model: a message of `n` bytes takes `alpha_s + n / bytes_per_s`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Link {
    /// Shown in reports ("NVLink3", "IB HDR").
    pub name: String,
    /// Latency per message, seconds.
    pub alpha_s: f64,
    /// Bandwidth per GPU, per direction, bytes per second.
    pub bytes_per_s: f64,
}

impl Link {
    /// NVLink 3 on an A100 SXM: 12 links x 25 GB/s = 300 GB/s per direction per GPU
    /// (NVIDIA A100 datasheet: "600 GB/s" counts both directions). Alpha 5 us: an assumption
    /// of the order NCCL shows for small messages inside a node.
    pub fn nvlink3() -> Link {
        Link {
            name: "NVLink3".into(),
            alpha_s: 5e-6,
            bytes_per_s: 300e9,
        }
    }

    /// NVLink 4 on an H100 SXM: 18 links, 900 GB/s both directions = 450 GB/s per direction.
    pub fn nvlink4() -> Link {
        Link {
            name: "NVLink4".into(),
            alpha_s: 5e-6,
            bytes_per_s: 450e9,
        }
    }

    /// InfiniBand HDR, one 200 Gb/s adapter per GPU (a DGX A100 has eight) = 25 GB/s per GPU.
    /// Alpha 10 us: an assumption (switch hops plus software).
    pub fn ib_hdr() -> Link {
        Link {
            name: "IB HDR".into(),
            alpha_s: 10e-6,
            bytes_per_s: 25e9,
        }
    }

    /// InfiniBand NDR, one 400 Gb/s adapter per GPU (DGX H100) = 50 GB/s per GPU.
    pub fn ib_ndr() -> Link {
        Link {
            name: "IB NDR".into(),
            alpha_s: 10e-6,
            bytes_per_s: 50e9,
        }
    }

    /// One point-to-point message (a pipeline stage hands its activations on), seconds.
    pub fn p2p_s(&self, bytes: f64) -> f64 {
        self.alpha_s + bytes / self.bytes_per_s
    }

    /// Ring all-reduce of `bytes` on `n` GPUs, seconds: a reduce-scatter then an all-gather,
    /// each `n - 1` steps moving `bytes / n` per GPU (Patarasuk and Yuan 2009; Thakur et al.
    /// 2005):  `2 (n-1) alpha + 2 (n-1)/n * bytes / beta`.
    pub fn ring_allreduce_s(&self, n: usize, bytes: f64) -> f64 {
        2.0 * self.half_s(n, bytes)
    }

    /// One half of the ring (a reduce-scatter or an all-gather), seconds:
    /// `(n-1) alpha + (n-1)/n * bytes / beta`.
    pub fn half_s(&self, n: usize, bytes: f64) -> f64 {
        if n <= 1 {
            return 0.0;
        }
        let steps = (n - 1) as f64;
        steps * self.alpha_s + steps / n as f64 * bytes / self.bytes_per_s
    }
}

/// Hierarchical all-reduce of `bytes` over `n` GPUs of which `k` share a node (k divides n):
/// reduce-scatter inside the node over `intra`, all-reduce the `bytes / k` shard among the
/// `n / k` nodes over `inter` (each GPU on its own adapter, all in parallel), then all-gather
/// inside the node. With `k = 1` it is a plain ring over `inter`; with `k = n`, over `intra`.
///
/// ```text
///   node A: [g0 g1]   reduce-scatter (intra)    g0 owns half 0, g1 owns half 1
///   node B: [g2 g3]   all-reduce half 0: g0<->g2, half 1: g1<->g3 (inter, in parallel)
///                     all-gather (intra)        everyone has the sum
/// ```
pub fn hierarchical_allreduce_s(n: usize, k: usize, bytes: f64, intra: &Link, inter: &Link) -> f64 {
    let k = k.clamp(1, n.max(1));
    let nodes = n.max(1) / k;
    2.0 * intra.half_s(k, bytes) + inter.ring_allreduce_s(nodes, bytes / k as f64)
}

/// One accelerator and the links around it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hardware {
    /// Shown in reports.
    pub name: String,
    /// Peak dense FLOP/s of one device at the training precision (BF16/FP16 tensor cores).
    pub peak_flops: f64,
    /// Fraction of `peak_flops` the matrix products reach in practice: the one calibrated
    /// figure of the compute model (see [`super::calibrate`]).
    pub achievable: f64,
    /// Memory of one device, bytes.
    pub memory_bytes: f64,
    /// Bandwidth of that memory, bytes/s: the element-wise kernels (LayerNorm, softmax, GELU,
    /// dropout, residual adds) are limited by it, not by FLOP/s. 0 folds them into
    /// `achievable` (as a measured CPU figure does).
    pub memory_bytes_per_s: f64,
    /// The link between devices of one node.
    pub intra: Link,
    /// The link between nodes, per device.
    pub inter: Link,
    /// What one synchronisation point costs a worker whose partners compute up to it, seconds:
    /// partners never arrive together (one is late by its jitter, or by a time slice when its
    /// core is shared), and a waiter that slept waits again for a core to be woken on. Charged
    /// once per point on the critical path ([`super::time::sync_points`]), beyond the link's
    /// `alpha`, which prices a message between partners that are already there. 0 for the GPU
    /// presets (each GPU runs its own kernel stream; stragglers are not modelled); measured
    /// on this machine by `nanodist scale --calibrate` (a pair of threads doing equal compute
    /// then meeting at a barrier, against the same compute with no barrier).
    pub sync_s: f64,
    /// Whether communication runs on resources of its own beside the compute, so that an
    /// overlapped exchange can hide behind the backward: a GPU's copy engines and links
    /// (true for the presets); on the calibrated CPU, a core beyond the workers' compute
    /// threads for the communication thread to run on (`cores > workers`).
    pub comm_core: bool,
    /// What one hand-off of finished buckets to the communication thread costs the compute
    /// when `comm_core` is false, seconds: the thread is woken on a core a worker computes
    /// on, meets its partners' threads there, and the worker's backward waits for the core
    /// meanwhile. Charged per hand-off of an overlapped exchange (see
    /// [`super::ScaleConfig::buckets`]), beside the exchange itself, which nothing hides. 0
    /// for the presets; measured on this machine by `nanodist scale --calibrate` (workers
    /// handing a message to such a thread after each block's backward, against the same
    /// backward meeting once at its end).
    pub handoff_s: f64,
}

impl Hardware {
    /// NVIDIA A100 80GB SXM: 312 TFLOP/s dense BF16, 80 GB of HBM2e at 2,039 GB/s (A100
    /// datasheet), NVLink3 inside a node, IB HDR between nodes.
    ///
    /// `achievable` ([`A100_ACHIEVABLE`]) is backed out of Megatron-LM's own smallest run
    /// (Narayanan et al. 2021, Table 1: 1.7B parameters on 32 GPUs, no tensor and no pipeline
    /// parallelism, 137 TFLOP/s = 44% of peak end to end) once the model has charged that run
    /// its memory-bound kernels and its data-parallel all-reduce: what is left is the matrix
    /// products' rate. A test recomputes it with [`super::calibrate::calibrate_efficiency`].
    /// It is not fitted to the 175B run.
    pub fn a100() -> Hardware {
        Hardware {
            name: "A100-80GB SXM".into(),
            peak_flops: 312e12,
            achievable: A100_ACHIEVABLE,
            memory_bytes: 80e9,
            memory_bytes_per_s: 2039e9,
            intra: Link::nvlink3(),
            inter: Link::ib_hdr(),
            sync_s: 0.0,
            comm_core: true,
            handoff_s: 0.0,
        }
    }

    /// NVIDIA H100 80GB SXM: 989 TFLOP/s dense BF16 (H100 datasheet; 1979 is with sparsity),
    /// 80 GB of HBM3 at 3.35 TB/s, NVLink4, IB NDR. `achievable` = 0.5 is NOT calibrated: an
    /// assumption a little under the A100's (H100 matrix units outrun their memory and
    /// software more; Llama 3 reports 38-43% MFU end to end on 16K H100s).
    pub fn h100() -> Hardware {
        Hardware {
            name: "H100-80GB SXM".into(),
            peak_flops: 989e12,
            achievable: 0.5,
            memory_bytes: 80e9,
            memory_bytes_per_s: 3350e9,
            intra: Link::nvlink4(),
            inter: Link::ib_ndr(),
            sync_s: 0.0,
            comm_core: true,
            handoff_s: 0.0,
        }
    }

    /// A preset by its command-line name: `a100` or `h100`.
    pub fn preset(name: &str) -> Option<Hardware> {
        match name.to_ascii_lowercase().as_str() {
            "a100" => Some(Hardware::a100()),
            "h100" => Some(Hardware::h100()),
            _ => None,
        }
    }

    /// Hardware measured on this machine, so the same model predicts nanodist's own
    /// data-parallel runs: one "GPU" is one worker thread on one core.
    ///
    /// - `flops_per_core`: FLOP/s one worker reaches in the model's matrix products (measured,
    ///   so `achievable` is 1 and the memory-bound kernels are folded in: the measurement
    ///   already holds them);
    /// - `alpha_s`, `bytes_per_s`: the shared-memory all-reduce fitted as `alpha + n / beta`
    ///   (`nanodist allreduce --algo shared`), used for both links: one node, no network;
    /// - `memory_bytes`: memory per worker (the machine's RAM over the workers).
    ///
    /// Its `sync_s` is 0: [`Hardware::with_sync`] sets the measured one. It has a core for
    /// communication (`comm_core`): [`Hardware::with_shared_comm`] says it has none.
    pub fn calibrated_cpu(
        flops_per_core: f64,
        alpha_s: f64,
        bytes_per_s: f64,
        memory_bytes: f64,
    ) -> Hardware {
        let link = Link {
            name: "shared memory".into(),
            alpha_s,
            bytes_per_s,
        };
        Hardware {
            name: "CPU core (calibrated)".into(),
            peak_flops: flops_per_core,
            achievable: 1.0,
            memory_bytes,
            memory_bytes_per_s: 0.0,
            intra: link.clone(),
            inter: link,
            sync_s: 0.0,
            comm_core: true,
            handoff_s: 0.0,
        }
    }

    /// The same hardware with `sync_s` seconds per synchronisation point (see
    /// [`Hardware::sync_s`]).
    pub fn with_sync(self, sync_s: f64) -> Hardware {
        Hardware { sync_s, ..self }
    }

    /// The same hardware with no core for communication: an overlapped exchange's thread
    /// shares the workers' cores, `handoff_s` seconds per hand-off of buckets to it (see
    /// [`Hardware::handoff_s`]).
    pub fn with_shared_comm(self, handoff_s: f64) -> Hardware {
        Hardware {
            comm_core: false,
            handoff_s,
            ..self
        }
    }

    /// FLOP/s the matrix products reach: `peak_flops * achievable`.
    pub fn sustained_flops(&self) -> f64 {
        self.peak_flops * self.achievable
    }
}

/// The A100's achievable fraction of peak (see [`Hardware::a100`]).
pub const A100_ACHIEVABLE: f64 = 0.56;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_allreduce_by_hand() {
        // 8 GPUs, 1 GB, alpha 5 us, 300 GB/s:
        // 2*7*5e-6 = 70 us of latency; 2*7/8 * 1e9 / 300e9 = 1.75/300 s = 5.8333 ms.
        let t = Link::nvlink3().ring_allreduce_s(8, 1e9);
        assert!((t - (70e-6 + 1.75 / 300.0)).abs() < 1e-12, "ring time {t}");
        assert_eq!(Link::nvlink3().ring_allreduce_s(1, 1e9), 0.0);
    }

    #[test]
    fn hierarchical_reduces_to_rings_at_the_ends() {
        let (nv, ib) = (Link::nvlink3(), Link::ib_hdr());
        let flat_ib = ib.ring_allreduce_s(16, 1e9);
        assert!((hierarchical_allreduce_s(16, 1, 1e9, &nv, &ib) - flat_ib).abs() < 1e-12);
        let flat_nv = nv.ring_allreduce_s(8, 1e9);
        assert!((hierarchical_allreduce_s(8, 8, 1e9, &nv, &ib) - flat_nv).abs() < 1e-12);
        // two per node: cheaper than the flat ring over IB, since only half crosses it
        assert!(hierarchical_allreduce_s(16, 2, 1e9, &nv, &ib) < flat_ib);
    }
}
