//! Errors. Peer faults (a Byzantine or broken sender) are kept apart from local faults.

use crate::app::RestoreError;
use crate::message::DecodeError;
use crate::storage::StorageError;
use crate::types::{ClientId, ConfigError, ReplicaId};

/// Who sent something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// A replica.
    Replica(ReplicaId),
    /// A client.
    Client(ClientId),
}

/// How a peer misbehaved. The message is dropped and counted; the replica stays live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerFault {
    /// The signer inside the message is not the transport-level sender.
    #[error("signer is not the sender")]
    SenderMismatch,
    /// The authentication tag does not verify.
    #[error("bad authentication tag")]
    BadSignature,
    /// A leader-only message from a replica that does not lead that regency.
    #[error("leader message from a non-leader")]
    NotLeader,
    /// Two different values for one (instance, regency) from the same sender.
    #[error("equivocation")]
    Equivocation,
    /// A batch breaks a limit, holds a badly signed request, or goes back in time.
    #[error("invalid batch")]
    InvalidBatch,
    /// A decision proof does not verify.
    #[error("invalid certificate")]
    InvalidCertificate,
    /// A STOPDATA is malformed or carries an invalid proof.
    #[error("invalid STOPDATA")]
    InvalidStopData,
    /// A SYNC's choice does not follow from its proofs.
    #[error("invalid SYNC")]
    InvalidSync,
    /// A state-transfer chunk or assembled state does not match the agreed digest.
    #[error("invalid state chunk")]
    InvalidState,
    /// A message this node never accepts from that kind of peer.
    #[error("unexpected message")]
    Unexpected,
    /// A client request above a limit.
    #[error("request too large")]
    RequestTooLarge,
}

/// Errors returned by the replica and client cores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A peer sent something invalid (counted in [`crate::Stats`]).
    #[error("peer {peer:?} misbehaved: {fault}")]
    PeerMisbehaved {
        /// The sender.
        peer: Peer,
        /// What it did.
        fault: PeerFault,
    },
    /// Bytes from a peer do not decode.
    #[error("undecodable message: {source}")]
    Decode {
        /// Why.
        #[from]
        source: DecodeError,
    },
    /// The configuration is invalid (local fault).
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// Recovered storage is unusable (local fault).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The application rejected a checkpoint snapshot (local fault).
    #[error("application: {0}")]
    Restore(#[from] RestoreError),
    /// The caller used the API wrongly (local fault).
    #[error("API misuse: {what}")]
    ApiMisuse {
        /// What was wrong.
        what: &'static str,
    },
}
