//! The crate's error type: every message names the problem and what to do about it.
//!
//! Bad input (a missing file, a batch that does not divide, a corrupt checkpoint) comes
//! back as an [`Error`], never as a panic. `main` prints it on one line and exits with 1.

use std::path::PathBuf;

/// What went wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line value or configuration that cannot work.
    #[error("{0}")]
    Config(String),
    /// The corpus: missing, empty, binary, too short, or a char outside the vocabulary.
    #[error("{0}")]
    Data(String),
    /// A checkpoint or run directory that cannot be read back.
    #[error("{0}")]
    Checkpoint(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A worker failed (panicked, hit a NaN, replicas diverged) and the run stopped.
    #[error("{0}")]
    Worker(String),
    /// A worker stopped because a peer left the group: a consequence, not a cause.
    #[error("{0}")]
    Peer(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
