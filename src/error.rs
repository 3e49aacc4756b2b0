//! The crate's error type: every message names the problem and what to do about it.
//!
//! Bad input (a missing file, a batch that does not divide, a corrupt checkpoint) comes
//! back as an [`Error`], never as a panic. `main` prints it on one line and exits with 1.
//!
//! What can go wrong while training is structured, so that a caller can tell the cause
//! from its consequences without reading message text: a step whose numbers
//! [`Diverged`](Error::Diverged), a worker that stopped because a peer left
//! ([`PeerGone`](Error::PeerGone)), a fault injected on purpose
//! ([`InjectedFault`](Error::InjectedFault)).

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
    /// A value of a step is not finite: the loss, or a gradient. The run stops.
    #[error(
        "training diverged at step {step} on worker {worker}: {tensor} is {value}; lower --lr"
    )]
    Diverged {
        /// The step (0-based).
        step: usize,
        /// The worker that found it.
        worker: usize,
        /// What is not finite: "the loss", "the gradient of transformer.h.0.ln_1.weight", ...
        tensor: String,
        /// The value found.
        value: f32,
    },
    /// A worker stopped because peer `worker` left the group: a consequence, not a cause.
    #[error(
        "worker {worker} left the group during step {step} (it panicked or stopped); \
         look for its own error, the group cannot be used again"
    )]
    PeerGone {
        /// The worker that left.
        worker: usize,
        /// The step the collective belonged to.
        step: usize,
    },
    /// A worker panicked on purpose (`--fault W:STEP`).
    #[error("{0}; the run stopped")]
    InjectedFault(InjectedFault),
    /// A worker failed in another way (a panic, replicas that differ) and the run stopped.
    #[error("{0}")]
    Worker(String),
}

/// The panic payload of `--fault W:STEP`: worker `worker` panics at step `step`.
///
/// It is raised with [`std::panic::panic_any`], so the worker's thread unwinds as in any
/// panic (its peers see it leave, as they would a real crash), and it is recognised by its
/// type when the thread is joined, never by the text of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("injected fault: worker {worker} panics at step {step} (--fault {worker}:{step})")]
pub struct InjectedFault {
    /// The worker that panics.
    pub worker: usize,
    /// The step at which it does.
    pub step: usize,
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether this error is the consequence of another worker's failure.
    pub fn is_consequence(&self) -> bool {
        matches!(self, Error::PeerGone { .. })
    }
}
