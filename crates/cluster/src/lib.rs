//! The BFT cluster runtime: what turns the sans-IO `rampart-bft` core into a service.
//!
//! # Brief overview
//!
//! - [`config`]: the cluster file (`cluster.toml`: n, f, each replica's id, address and
//!   Ed25519 public key, client public keys, protocol settings) and the 0600 key files.
//! - [`tls`]: TLS 1.3 with pinned raw public keys, mutual authentication.
//! - [`frame`]: length-framed messages with a size limit, buffers that grow only with the
//!   bytes received, and deadlines.
//! - [`listen`]: the accepting side: handshake and connection caps, inbound byte budgets.
//! - [`queue`]: frame queues bounded in bytes.
//! - [`replica`]: the replica runtime ([`replica::run_replica`]).
//! - [`client`]: the client runtime ([`client::KvClient`]), batching many callers into one
//!   signed request.
//! - [`storage`]: [`storage::FileStorage`], the durable log and checkpoints, on a
//!   [`fs::Fs`]: the real disk ([`fs::OsFs`]) or [`simdisk::SimulatedDisk`], a simulated
//!   disk that loses, tears, reorders and flips what it holds, for fault tests.
//! - [`local`]: a whole cluster inside one process ([`local::LocalCluster`]).
//!
//! # Transport protocol
//!
//! Every replica listens on its address. Replica i opens one TLS connection to every other
//! replica j and only writes on it; j only reads it (so each ordered pair has its own
//! connection and no connection-ownership races exist). Clients open one connection to each
//! replica and read the replies on it. TLS 1.3 only, `ring` provider, raw public keys
//! (RFC 7250) pinned from the cluster file in both directions: the identity of a
//! connection's peer (replica id or client id) is the key it proved in the handshake, and
//! the core checks that it matches the signer of each message. On the TLS stream, each
//! message is a frame: `u32` little-endian length, then a `rampart-bft` wire message. A frame
//! above the connection's limit (`WireLimits::message_bytes_max` from a replica,
//! `WireLimits::request_message_bytes_max` from a client) closes the connection.
//!
//! # Invariants
//!
//! - No queue is unbounded, in bytes or in items ([`listen::TransportLimits`], ADR 0305):
//!   inbound per replica connection one maximal message (its reader waits), per client
//!   two maximal requests and all clients `client_inbound_bytes_max`, frames still being
//!   read included (frames beyond are dropped), shared fairly between client keys (each
//!   identity at most `listen::CLIENT_INBOUND_FRAMES_MAX` frames waiting and a floor of
//!   the budget no other key can take); outbound per peer two maximal messages, per client four maximal replies and
//!   all clients `client_outbound_bytes_max` (frames beyond are dropped; the protocol
//!   retransmits); client jobs [`client::JOBS_QUEUED_MAX`] (callers wait).
//! - No buffer is sized from a length the peer declared; connections are capped (one per
//!   identity, `client_connections_max` clients, `handshakes_max` handshakes) and every
//!   handshake and frame has a deadline.
//! - Replies and votes leave only after the entries they depend on are fsynced: the core
//!   holds them until `handle_persisted`, which the runtime calls after one fsync per burst
//!   of inputs (so per consensus instance or better).
//! - Time comes from the monotonic clock, offset to the wall clock once at start.
//! - Nothing from the network is trusted before the core verified it; the transport only
//!   authenticates who sent it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// This is the runtime that feeds the sans-IO core its time: it reads the real clock
// (monotonic, offset once to the wall clock) and nothing below it does.
#![allow(clippy::disallowed_methods)]

pub mod bench;
pub mod client;
pub mod config;
pub mod frame;
pub mod fs;
pub mod listen;
pub mod local;
pub mod queue;
pub mod replica;
pub mod simdisk;
pub mod storage;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Errors of the cluster runtime. One line each, for the CLI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The cluster file is missing or invalid.
    #[error("cluster file {}: {reason}", path.display())]
    ClusterFile {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A cluster file exists already.
    #[error("{} exists already; refusing to overwrite a cluster (and its keys)", path.display())]
    AlreadyInitialised {
        /// Path.
        path: PathBuf,
    },
    /// n out of range.
    #[error(
        "need between 4 and {} replicas (n ≥ 3f+1 with f ≥ 1), got {n}",
        rampart_bft::REPLICAS_MAX
    )]
    BadReplicaCount {
        /// Requested n.
        n: usize,
    },
    /// Not one address per replica.
    #[error("{addrs} addresses given for {n} replicas")]
    AddrCount {
        /// Addresses given.
        addrs: usize,
        /// n.
        n: usize,
    },
    /// Client count out of range.
    #[error("need between 1 and 10000 client identities, got {clients}")]
    BadClientCount {
        /// Requested count.
        clients: u64,
    },
    /// No such replica.
    #[error("unknown replica id {id}: the cluster has replicas 0..{n}")]
    UnknownReplica {
        /// Requested id.
        id: u8,
        /// n.
        n: usize,
    },
    /// No such client identity, or the key does not match it.
    #[error("unknown client id {id}, or its key does not match the cluster file")]
    UnknownClient {
        /// Requested id.
        id: u64,
    },
    /// A key file does not match the cluster file.
    #[error("key file {} does not match the public key in the cluster file", path.display())]
    KeyMismatch {
        /// Path.
        path: PathBuf,
    },
    /// A key file is readable by others.
    #[error("key file {} has mode {mode:o}: it must not be readable by group or others (chmod 600)", path.display())]
    KeyPermissions {
        /// Path.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// A key file is not 64 hex digits.
    #[error("key file {} is not a Rampart private key (64 hex digits)", path.display())]
    BadKeyFile {
        /// Path.
        path: PathBuf,
    },
    /// File-system failure.
    #[error("{}: {source}", path.display())]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// TLS set-up failed.
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    /// Durable storage failed.
    #[error("replica storage: {0}")]
    Storage(rampart_bft::StorageError),
    /// The core refused to start.
    #[error("replica core: {0}")]
    Core(String),
    /// The KV service refused an operation.
    #[error("{0}")]
    Kv(rampart_kv::KvError),
    /// No result within the deadline.
    #[error(
        "cluster unreachable: no f+1 matching replies within {secs:.0} s (TLS links up to {connected} of {n} replicas)"
    )]
    Unreachable {
        /// Deadline.
        secs: f64,
        /// Links up at the deadline.
        connected: usize,
        /// n.
        n: usize,
    },
    /// The client driver stopped.
    #[error("client runtime stopped")]
    ClientStopped,
}

impl ClusterError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ClusterError {
        ClusterError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
