//! The flags of `nanodist train` that choose how often and how much workers share: the
//! simulated link, local SGD / DiLoCo, compression, the asynchronous parameter server.
//! Flattened into [`crate::cli::TrainArgs`]; unset flags leave the configuration alone.

use nanodist::collective::Link;
use nanodist::config::TrainConfig;
use nanodist::parallel::sync_options::{Compression, Outer};

/// Synchronisation flags of `nanodist train`.
#[derive(clap::Args, Debug, Default)]
pub struct SyncArgs {
    /// Simulate a network link: every collective lasts at least its alpha-beta time on it
    /// (e.g. 50:1.25 for 10 Gb Ethernet, 50:0.125 for 1 Gb).
    #[arg(long, value_name = "ALPHA_US:GBPS", value_parser = str::parse::<Link>)]
    pub link: Option<Link>,
    /// Local SGD: synchronise the replicas every H steps (1: every step, synchronous).
    #[arg(long, value_name = "H")]
    pub sync_every: Option<usize>,
    /// Local SGD's outer optimizer: sgd or nesterov [default: nesterov, as DiLoCo].
    #[arg(long, value_name = "sgd|nesterov", value_parser = str::parse::<Outer>)]
    pub outer: Option<Outer>,
    /// Local SGD's outer learning rate [default: 0.7].
    #[arg(long, value_name = "F")]
    pub outer_lr: Option<f32>,
    /// Local SGD's outer (Nesterov) momentum [default: 0.9].
    #[arg(long, value_name = "F")]
    pub outer_momentum: Option<f32>,
    /// Compress what is sent, with error feedback: topk:F (e.g. topk:0.01; of each worker's
    /// AdamW update), topk-grad:F (of the gradient), int8, powersgd:R.
    #[arg(long, value_name = "topk:F|topk-grad:F|int8|powersgd:R", value_parser = str::parse::<Compression>)]
    pub compress: Option<Compression>,
    /// Asynchronous parameter server: workers push gradients without waiting for each other.
    #[arg(long = "async")]
    pub asynchronous: bool,
    /// With --async: no worker runs more than S steps ahead of the slowest [default: 2].
    #[arg(long, value_name = "S")]
    pub staleness: Option<usize>,
}

impl SyncArgs {
    /// Applies the flags the user gave onto `cfg`, leaving the others as they are.
    pub fn apply(&self, cfg: &mut TrainConfig) {
        let p = &mut cfg.parallel;
        p.link = self.link.or(p.link);
        p.sync_every = self.sync_every.unwrap_or(p.sync_every);
        p.outer = self.outer.unwrap_or(p.outer);
        p.outer_lr = self.outer_lr.unwrap_or(p.outer_lr);
        p.outer_momentum = self.outer_momentum.unwrap_or(p.outer_momentum);
        p.compress = self.compress.or(p.compress);
        p.asynchronous |= self.asynchronous;
        p.staleness = self.staleness.unwrap_or(p.staleness);
    }
}
