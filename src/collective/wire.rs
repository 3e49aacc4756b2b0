//! The message-passing part of a transport, as a trait: what the schedule executor
//! (`schedule.rs`) needs to run the naive, ring and tree all-reduces, and nothing more.
//!
//! ```text
//!   Wire                      implemented by
//!   rank, size                Endpoint (transport.rs): worker threads, channels
//!   send(to, &[T])            MpiEndpoint (mpi.rs, feature "mpi"): MPI processes
//!   recv(from, |&[T]| ..)
//!   step_done()               the end of a schedule step: MPI completes its sends here
//! ```
//!
//! So the ring of `ring.rs` runs, as the same code, between threads and between processes.
//!
//! Rust note: the methods are generic (`send<T>`), so `Wire` is used through generics
//! (`execute<W: Wire>`), never as a `dyn Wire`: each transport gets its own compiled copy of
//! the executor, with no virtual calls.

use super::element::Element;
use super::error::CommError;

/// Point-to-point messages between the members of a group, as the schedules use them.
///
/// The contract: messages from one member to another arrive in the order they were sent;
/// `send` never waits for the receiver to call `recv` (it copies `data` out), so every
/// member can send before it receives.
pub trait Wire {
    /// This member's index in the group, `0..size()`.
    fn rank(&self) -> usize;

    /// Number of members in the group.
    fn size(&self) -> usize;

    /// Sends a copy of `data` to member `to`.
    fn send<T: Element>(&mut self, to: usize, data: &[T]) -> Result<(), CommError>;

    /// Waits for the next message from member `from` and hands it to `use_it`.
    fn recv<T: Element>(&mut self, from: usize, use_it: impl FnOnce(&[T]))
        -> Result<(), CommError>;

    /// Called after each step of a schedule, when this member has received all it expects
    /// in the step: a transport whose sends are still in flight may finish them here.
    fn step_done(&mut self) -> Result<(), CommError> {
        Ok(())
    }
}
