//! Collectives: how worker threads share and combine their gradients.
//! (Placeholder: built in the collectives issue.)

use serde::{Deserialize, Serialize};

/// The all-reduce algorithms nanodist implements, each in its own file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Everyone sends to worker 0, which sums and sends back (parameter-server style).
    Naive,
    /// Reduce-scatter then all-gather around a ring: 2(N-1) steps.
    Ring,
    /// Recursive halving and doubling: about 2 log2 N steps.
    Tree,
    /// Each worker sums a disjoint slice straight out of the others' buffers.
    Shared,
}
