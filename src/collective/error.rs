//! What a collective returns when the group breaks.

/// A collective could not finish because a peer is gone.
///
/// Once any worker has left, the group is broken for good: every later collective on every
/// remaining worker returns this error too. The training loop turns it into
/// [`crate::Error::Worker`] and stops. A sub-group made by `Comm::split` breaks the same
/// way, on its own: `rank` is then the leaver's rank *in that sub-group*.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommError {
    /// Worker `rank` dropped its `Comm` (usually because its thread panicked) while the
    /// others still needed it.
    #[error(
        "worker {rank} left the group mid-collective (it panicked or stopped); \
         look for its panic message above, the group cannot be used again"
    )]
    PeerGone {
        /// The first worker found gone.
        rank: usize,
    },
}

impl From<CommError> for crate::Error {
    fn from(e: CommError) -> Self {
        crate::Error::Worker(e.to_string())
    }
}
