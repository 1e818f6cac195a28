//! Errors of the log library and the findings of verification.

use std::path::PathBuf;

use crate::checkpoint::CheckpointError;
use crate::entry::{DecodeError, ENTRY_DATA_MAX};

/// Errors of [`crate::Log`] and friends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `init` found an existing log (or other files) in the directory.
    #[error("{} is not empty; refusing to initialise a log there", .0.display())]
    NotEmpty(PathBuf),
    /// Another process holds the log's writer lock.
    #[error("the log is locked by another writer")]
    Locked,
    /// An entry exceeds [`ENTRY_DATA_MAX`].
    #[error("entry of {len} bytes exceeds the limit of {ENTRY_DATA_MAX} bytes")]
    EntryTooLarge {
        /// The offending length.
        len: usize,
    },
    /// The origin is not a valid signed-note key name.
    #[error("invalid origin: must be non-empty, without spaces or '+'")]
    BadOrigin,
    /// The verifier secret would land inside the log directory, which may be published.
    #[error("the verifier secret must be written outside the log directory")]
    SecretInsideLog,
    /// A key file is malformed.
    #[error("malformed key file {}", .0.display())]
    BadKeyFile(PathBuf),
    /// A checkpoint was rejected. (Not a `source`: the message already includes it, and an
    /// error chain would print it twice.)
    #[error("checkpoint: {0}")]
    Checkpoint(CheckpointError),
    /// The log's stored state is inconsistent; [`crate::verify`] says more.
    #[error("log is corrupt: {0}")]
    Corrupt(Problem),
    /// A proof was requested for a position outside the checkpointed tree.
    #[error("index {index} is outside the checkpointed tree of size {size}")]
    NotInTree {
        /// The requested index or size.
        index: u64,
        /// The checkpoint size.
        size: u64,
    },
    /// A tile needed for a proof is missing or does not match the checkpoint.
    #[error("tile data missing or inconsistent with the checkpoint")]
    Tile,
    /// An earlier batch failed to become durable (see the error it returned); reopen the log.
    #[error("an earlier write failed; reopen the log to recover")]
    WriterGone,
    /// A proof failed to verify.
    #[error("proof does not verify")]
    BadProof,
}

impl From<CheckpointError> for Error {
    fn from(e: CheckpointError) -> Self {
        Error::Checkpoint(e)
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The first thing found wrong in a log, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Index of the first bad (or first missing) entry, when the problem has a position.
    pub entry: Option<u64>,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.entry {
            Some(e) => write!(f, "entry {e}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// Kinds of [`Problem`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The frame or entry bytes do not parse (modified bytes).
    #[error("malformed or modified frame ({0})")]
    Malformed(DecodeError),
    /// The last segment ends inside a frame (a write torn by a crash).
    #[error("torn tail: the segment ends inside this entry")]
    TornTail,
    /// A segment file does not start with the segment magic.
    #[error("segment file {} is not a segment", .0.display())]
    BadSegment(PathBuf),
    /// The entry at this position carries another sequence number.
    #[error("found sequence number {found} here (entry deleted, inserted or reordered)")]
    Sequence {
        /// The sequence number read.
        found: u64,
    },
    /// The epoch is not the entry's position. Every entry has its own key, `K(seq)`, so an
    /// honest writer always writes `epoch = seq`; anything else is an attempt to seal an
    /// entry with a key of another position (for example one stolen later).
    #[error("epoch {epoch} is not this entry's position (each entry is sealed with K(seq))")]
    WrongEpoch {
        /// The epoch read.
        epoch: u64,
    },
    /// The MAC does not verify with the key of the entry's position.
    #[error("MAC does not verify under the key K({epoch}) (modified or forged)")]
    BadMac {
        /// The entry's epoch.
        epoch: u64,
    },
    /// The next entry seals a different hash of this entry.
    #[error("does not match the hash sealed into the next entry (modified or replaced)")]
    BrokenLink,
    /// The log holds fewer entries than a checkpoint covers.
    #[error(
        "missing: the log holds {log_size} entries but a {which} checkpoint covers {checkpoint_size} (truncated or rolled back)"
    )]
    Missing {
        /// Entries found.
        log_size: u64,
        /// Size of the checkpoint (or the durable mark in the key file).
        checkpoint_size: u64,
        /// "stored" or "trusted" (checkpoints), or "committed" (the key file's durable mark).
        which: &'static str,
    },
    /// The stored checkpoint is older than a trusted one (the log directory was rolled back).
    #[error(
        "rollback: the stored checkpoint (size {stored}) is older than the trusted checkpoint (size {trusted})"
    )]
    CheckpointRollback {
        /// Size of the checkpoint in the directory.
        stored: u64,
        /// Size of the trusted checkpoint.
        trusted: u64,
    },
    /// The entries differ from what a checkpoint committed to; the entry named is the first
    /// whose leaf hash differs from the checkpoint-authenticated tiles, when they are intact.
    #[error("differs from the entry the {which} checkpoint of size {checkpoint_size} committed to")]
    Rewritten {
        /// Size of the checkpoint.
        checkpoint_size: u64,
        /// "stored" or "trusted".
        which: &'static str,
    },
    /// The entries differ from a checkpoint and the tiles cannot locate the first difference.
    #[error(
        "the tree of size {checkpoint_size} does not match the {which} checkpoint (rewritten log)"
    )]
    RootMismatch {
        /// Size of the checkpoint.
        checkpoint_size: u64,
        /// "stored" or "trusted".
        which: &'static str,
    },
    /// A published tile or entry bundle differs from what the segments produce.
    #[error("published {0} does not match the entries (tampered or stale)")]
    BadTile(String),
    /// A tile or entry bundle the stored checkpoint needs is not published.
    #[error("published {0} is missing")]
    MissingTile(String),
    /// The stored checkpoint is missing or does not verify.
    #[error("checkpoint rejected: {0}")]
    Checkpoint(&'static str),
}
