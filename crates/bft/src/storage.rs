//! Durable state: the decision log, votes, regency and checkpoints.
//!
//! The core never writes storage itself. It emits [`crate::Output::Persist`] with a
//! [`PersistEntry`] and a token; the driver applies entries **in token order** (for example
//! with [`Storage::apply`]) and then calls [`crate::Replica::handle_persisted`]. Messages
//! whose safety depends on an entry (a WRITE after its vote, a reply after its decision) are
//! held back until then. After a crash, [`Storage::recover`] gives the
//! [`RecoveredState`] to build the replica again.
//!
//! A disk implementation (issue 4) should batch the entries of one consensus instance into
//! one fsync; they arrive together.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::message::{Batch, Certificate, Decision};
use crate::types::{Digest, Regency, SeqNo};

/// This replica's votes in the open instance. Restored after a crash so that it never
/// votes for two values in one `(cid, regency)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VoteRecord {
    /// The open instance.
    pub cid: SeqNo,
    /// Regency and digest it sent WRITE for, if any.
    pub wrote: Option<(Regency, Digest)>,
    /// Regency and digest it sent ACCEPT for, if any.
    pub accepted: Option<(Regency, Digest)>,
    /// Its highest-regency write certificate for `cid`, with the batch (reported in STOPDATA).
    pub written: Option<(Certificate, Batch)>,
}

/// The regency a replica is in and the highest one it asked for with STOP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegencyRecord {
    /// Installed regency.
    pub regency: Regency,
    /// Highest regency it sent STOP for (≥ `regency`).
    pub stop_target: Regency,
}

/// A checkpoint: the encoded state after executing instance `cid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// Last instance included.
    pub cid: SeqNo,
    /// BLAKE3 digest of `blob` (what replicas compare in state transfer).
    pub digest: Digest,
    /// Encoded application snapshot and client sessions (identical at correct replicas).
    /// Shared, never copied: the core's checkpoint list, the [`PersistEntry`] and a
    /// storage's queue hold one buffer (issue 10, finding 5: a clone of the record used to
    /// copy the whole state each time).
    pub blob: Arc<Vec<u8>>,
    /// The accept certificate of instance `cid`. Not part of `blob` (vote sets differ
    /// between replicas); kept so that a replica that installed or restarted from this
    /// checkpoint can still prove its last decided instance in STOPDATA (ADR 0101).
    pub proof: Certificate,
}

/// One durable write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PersistEntry {
    /// Append a decided batch to the log.
    Decision(Decision),
    /// Replace the vote record.
    Vote(VoteRecord),
    /// Replace the regency record.
    Regency(RegencyRecord),
    /// Store a checkpoint; keep it and the one before it, drop older ones.
    Checkpoint(CheckpointRecord),
    /// Drop decisions with `cid <= through` (they are covered by a checkpoint).
    TruncateLog {
        /// Last instance to drop.
        through: SeqNo,
    },
}

/// What a replica restarts from.
#[derive(Debug, Clone, Default)]
pub struct RecoveredState {
    /// Regency record.
    pub regency: RegencyRecord,
    /// Vote record of the open instance.
    pub vote: Option<VoteRecord>,
    /// Up to two checkpoints, oldest first.
    pub checkpoints: Vec<CheckpointRecord>,
    /// Decisions after the oldest checkpoint, in order.
    pub decisions: Vec<Decision>,
}

/// A failure of the local storage (a local fault, never a peer's).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The medium failed.
    #[error("storage I/O failed")]
    Io(#[from] std::io::Error),
    /// Stored data does not decode or is inconsistent.
    #[error("stored state is corrupt: {what}")]
    Corrupt {
        /// What was wrong.
        what: &'static str,
    },
}

/// Durable storage for one replica.
pub trait Storage {
    /// Apply one entry durably. Entries must be applied in the order emitted.
    fn apply(&mut self, entry: &PersistEntry) -> Result<(), StorageError>;
    /// Everything needed to restart.
    fn recover(&self) -> Result<RecoveredState, StorageError>;
}

/// In-memory storage, for tests and the simulator.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    regency: RegencyRecord,
    vote: Option<VoteRecord>,
    checkpoints: Vec<CheckpointRecord>,
    decisions: BTreeMap<SeqNo, Decision>,
}

/// Checkpoints kept by storage.
pub const CHECKPOINTS_KEPT: usize = 2;

impl Storage for MemStorage {
    fn apply(&mut self, entry: &PersistEntry) -> Result<(), StorageError> {
        match entry {
            PersistEntry::Decision(d) => {
                self.decisions.insert(d.cid(), d.clone());
            }
            PersistEntry::Vote(v) => self.vote = Some(v.clone()),
            PersistEntry::Regency(r) => self.regency = *r,
            PersistEntry::Checkpoint(c) => {
                self.checkpoints.retain(|k| k.cid < c.cid);
                self.checkpoints.push(c.clone());
                while self.checkpoints.len() > CHECKPOINTS_KEPT {
                    self.checkpoints.remove(0);
                }
            }
            PersistEntry::TruncateLog { through } => {
                self.decisions = self.decisions.split_off(&through.next());
            }
        }
        Ok(())
    }

    fn recover(&self) -> Result<RecoveredState, StorageError> {
        Ok(RecoveredState {
            regency: self.regency,
            vote: self.vote.clone(),
            checkpoints: self.checkpoints.clone(),
            decisions: self.decisions.values().cloned().collect(),
        })
    }
}
