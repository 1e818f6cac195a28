//! The replicated application.

use crate::types::{Digest, SeqNo, Timestamp};

/// Context of one decided batch, identical on every correct replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchContext {
    /// Consensus instance.
    pub cid: SeqNo,
    /// Leader-proposed timestamp: the only notion of time the application may use.
    pub timestamp: Timestamp,
}

/// A deterministic state machine. Every correct replica runs the same operations in the
/// same order and must reach the same state: no clocks, no randomness, no IO here.
pub trait Application {
    /// Execute the ordered operations of one batch; one result per operation, in order.
    fn execute_batch(&mut self, ctx: &BatchContext, ops: &[&[u8]]) -> Vec<Vec<u8>>;
    /// Answer a read-only operation without changing state. `None` if `op` is not
    /// read-only; the client then falls back to ordered execution.
    fn query(&self, op: &[u8]) -> Option<Vec<u8>>;
    /// Serialise the whole state.
    fn snapshot(&self) -> Vec<u8>;
    /// The exact length of [`Application::snapshot`], if the application knows it without
    /// building the snapshot. With it the core allocates a checkpoint once, at its final
    /// size (a growing buffer may hold up to twice the state).
    fn snapshot_len(&self) -> Option<usize> {
        None
    }
    /// Append [`Application::snapshot`] to `out` (the checkpoint being encoded). The default
    /// builds the snapshot and copies it; an application with a large state should write
    /// it in place, so a checkpoint holds no second copy of the state (issue 10, finding 5).
    fn snapshot_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.snapshot());
    }
    /// Replace the state by a snapshot made by [`Application::snapshot`].
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;
    /// A digest of the state; equal states must have equal digests.
    fn state_digest(&self) -> Digest;
}

/// A snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("snapshot rejected by the application: {reason}")]
pub struct RestoreError {
    /// Why.
    pub reason: &'static str,
}
