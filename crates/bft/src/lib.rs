//! Rampart's BFT state machine replication core, in the class of BFT-SMaRt.
//!
//! (Full protocol documentation below, see "Protocol".)
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod app;
mod auth;
mod client;
mod error;
pub mod message;
mod replica;
mod storage;
mod types;

pub use app::{Application, BatchContext, RestoreError};
pub use auth::{AUTH_TAG_LEN, AuthTag, Authenticator, Ed25519Authenticator, Principal, SimulatedAuthenticator};
pub use client::{Client, ClientError, ClientOutput, ClientStats};
pub use error::{Error, Peer, PeerFault};
pub use message::{DecodeError, Message, Request, WireLimits};
pub use replica::{OUTPUTS_MAX, Output, Replica, STOP_WINDOW_MAX, Stats, Status, TIMEOUT_BACKOFF_EXP_MAX};
pub use storage::{
    CHECKPOINTS_KEPT, CheckpointRecord, MemStorage, PersistEntry, RecoveredState, RegencyRecord,
    Storage, StorageError, VoteRecord,
};
pub use types::{
    BATCH_BYTES_MAX, BATCH_REQUESTS_MAX, ClientId, Config, ConfigError, DECISIONS_PER_FETCH_MAX,
    DangerTestMutation, Digest, REPLICAS_MAX, REPLY_BYTES_MAX, Regency, ReplicaId, RequestSeq,
    STATE_CHUNK_BYTES_MAX, SeqNo, Timestamp,
};
