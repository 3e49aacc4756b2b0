//! The names of the synchronisation options: what `--outer` and `--compress` accept, and
//! how `config.json` writes them.
//!
//! ```text
//!   "sgd" | "nesterov"                    --FromStr--> Outer        --Display--> the same
//!   "topk:0.01" | "topk-grad:0.01"
//!   | "int8" | "powersgd:4"               --FromStr--> Compression  --Display--> the same
//! ```
//!
//! A leaf file: the configuration names these types, and the strategies that act on them
//! (`local_sgd.rs`, `compress.rs`) read the configuration.

use serde::{Deserialize, Serialize};

/// Local SGD's outer optimizer: how the averaged parameter change of H inner steps is
/// applied to the parameters of the last synchronisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outer {
    /// `anchor -= outer_lr * delta` (with outer_lr 1: plain parameter averaging).
    Sgd,
    /// Nesterov momentum on the deltas, as DiLoCo (Douillard et al. 2023) does.
    #[default]
    Nesterov,
}

impl std::fmt::Display for Outer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outer::Sgd => "sgd",
            Outer::Nesterov => "nesterov",
        })
    }
}

impl std::str::FromStr for Outer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sgd" => Ok(Outer::Sgd),
            "nesterov" => Ok(Outer::Nesterov),
            _ => Err(format!(
                "--outer '{s}' is not an outer optimizer: use sgd or nesterov"
            )),
        }
    }
}

/// How a worker's gradient is compressed before it is sent (`--compress`).
///
/// ```
/// use nanodist::parallel::sync_options::Compression;
/// assert_eq!("topk:0.01".parse(), Ok(Compression::TopK(0.01)));
/// assert_eq!("topk-grad:0.01".parse(), Ok(Compression::TopKGrad(0.01)));
/// assert_eq!("powersgd:4".parse::<Compression>().unwrap().to_string(), "powersgd:4");
/// assert!("topk:2".parse::<Compression>().unwrap_err().contains("topk:F"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Compression {
    /// Send only the fraction F (0 < F <= 1) of entries largest in magnitude, as
    /// (index, value) pairs, of each worker's AdamW update: error feedback on the update
    /// (`compress.rs` says why).
    TopK(f32),
    /// Top-k of the gradient instead: error feedback on the gradient, and one AdamW on the
    /// sparse sum.
    TopKGrad(f32),
    /// Send every entry as a signed byte, with one f32 scale per block of entries.
    Int8,
    /// Send each matrix as a rank-R product P Q^T (Vogels et al. 2019); vectors whole.
    PowerSgd(usize),
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::TopK(x) => write!(f, "topk:{x}"),
            Compression::TopKGrad(x) => write!(f, "topk-grad:{x}"),
            Compression::Int8 => f.write_str("int8"),
            Compression::PowerSgd(r) => write!(f, "powersgd:{r}"),
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "--compress '{s}' is not a compression: use topk:F (a fraction, 0 < F <= 1, \
                 e.g. topk:0.01), topk-grad:F, int8 or powersgd:R (a rank from 1 to 64, \
                 e.g. powersgd:4)"
            )
        };
        match s.split_once(':') {
            None if s == "int8" => Ok(Compression::Int8),
            Some((name @ ("topk" | "topk-grad"), f)) => match f.parse::<f32>() {
                Ok(f) if f > 0.0 && f <= 1.0 && name == "topk" => Ok(Compression::TopK(f)),
                Ok(f) if f > 0.0 && f <= 1.0 => Ok(Compression::TopKGrad(f)),
                _ => Err(bad()),
            },
            Some(("powersgd", r)) => match r.parse::<usize>() {
                Ok(r) if (1..=64).contains(&r) => Ok(Compression::PowerSgd(r)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for Compression {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Compression> for String {
    fn from(c: Compression) -> String {
        c.to_string()
    }
}
