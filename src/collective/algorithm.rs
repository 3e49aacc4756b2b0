//! The names of the all-reduce algorithms: what the command line, `config.json` and the
//! tables call them.
//!
//! ```text
//!   "naive" | "ring" | "tree" | "shared"  --FromStr-->  Algorithm  --Display-->  the same name
//!                                          <-serde--->  (config.json: the same lowercase name)
//! ```
//!
//! The library parses the names itself (`FromStr`), so it needs no command-line parser;
//! the application hands `str::parse` to whichever parser it uses.

use serde::{Deserialize, Serialize};

/// The all-reduce algorithms nanodist implements, each in its own file.
///
/// ```
/// use nanodist::collective::Algorithm;
/// assert_eq!("tree".parse::<Algorithm>(), Ok(Algorithm::Tree));
/// assert_eq!(Algorithm::Tree.to_string(), "tree");
/// let err = "star".parse::<Algorithm>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "unknown all-reduce algorithm 'star': use one of naive, ring, tree, shared"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl Algorithm {
    /// Every algorithm, in the order tables list them.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Naive,
        Algorithm::Ring,
        Algorithm::Tree,
        Algorithm::Shared,
    ];

    /// The lowercase name used on the command line and in JSON (`"ring"`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Naive => "naive",
            Algorithm::Ring => "ring",
            Algorithm::Tree => "tree",
            Algorithm::Shared => "shared",
        }
    }
}

impl Algorithm {
    /// One line on what the algorithm does, for `--help`.
    pub fn summary(self) -> &'static str {
        match self {
            Algorithm::Naive => {
                "Everyone sends to worker 0, which sums and sends back (parameter-server style)"
            }
            Algorithm::Ring => "Reduce-scatter then all-gather around a ring: 2(N-1) steps",
            Algorithm::Tree => "Recursive halving and doubling: about 2 log2 N steps",
            Algorithm::Shared => {
                "Each worker sums a disjoint slice straight out of the others' buffers"
            }
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`Algorithm::ALL`]'s; the message lists the valid ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown all-reduce algorithm '{0}': use one of naive, ring, tree, shared")]
pub struct UnknownAlgorithm(pub String);

impl std::str::FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Exactly the names [`Algorithm::name`] gives (lowercase, nothing else).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::Algorithm;

    #[test]
    fn names_round_trip_through_from_str_display_and_serde() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>(), Ok(a));
            assert_eq!(a.to_string(), a.name());
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.name()));
            assert_eq!(serde_json::from_str::<Algorithm>(&json).unwrap(), a);
        }
        for bad in ["", "Ring", "RING", " ring", "all", "rings"] {
            let err = bad.parse::<Algorithm>().unwrap_err().to_string();
            assert!(!err.contains('\n'), "one line: {err}");
            assert!(err.contains(&format!("'{bad}'")) && err.contains("naive, ring, tree, shared"));
        }
    }
}
