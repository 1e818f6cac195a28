//! Rampart's Byzantine fault-tolerant state machine replication core, in the class of
//! BFT-SMaRt (Bessani, Sousa, Alchieri, DSN 2014): Mod-SMaRt ordering over VP-Consensus,
//! with a synchronization phase for leader change, checkpoints and state transfer.
//!
//! # Brief overview
//!
//! - [`Replica`]: one replica's protocol state machine. Sans-IO: inputs are `handle_*`
//!   calls, effects come out of [`Replica::poll_output`], timers from
//!   [`Replica::poll_timeout`].
//! - [`Client`]: the client side (one outstanding request, reply quorums, retransmission,
//!   visible read-only fallback).
//! - Traits the deployment provides: [`Application`] (the deterministic service),
//!   [`Storage`] (durable log, votes, checkpoints; [`MemStorage`] for tests) and
//!   [`Authenticator`] ([`Ed25519Authenticator`]; [`SimulatedAuthenticator`] for tests).
//! - [`message`]: the canonical, versioned wire format with strict, bounded decoding.
//!
//! # Fault model and quorums
//!
//! n ≥ 3f+1 replicas, of which at most f = ⌊(n−1)/3⌋ are Byzantine; any number of clients,
//! each may be Byzantine; the network may drop, delay, duplicate, reorder and replay. Safety
//! never depends on timing; liveness needs eventual synchrony. Correct replicas may crash and
//! restart from their [`Storage`] (a crash-recovered replica is not counted as faulty).
//!
//! | quorum | size | used for |
//! |---|---|---|
//! | Q = ⌈(n+f+1)/2⌉ (2f+1 when n = 3f+1) | [`Config::quorum`] | WRITE, ACCEPT, installing a regency from STOPs, STOPDATAs in a SYNC |
//! | f+1 | | joining a leader change; matching checkpoint digests in state transfer; client replies for ordered requests |
//! | n−f | | client replies on the read-only path |
//!
//! Any two Q-quorums intersect in at least f+1 replicas, hence in at least one correct one.
//!
//! # Protocol
//!
//! **Normal case** (one consensus instance `cid` at a time, as in BFT-SMaRt). The leader of
//! regency r (replica r mod n) cuts a batch from its pending requests — at most
//! `batch_requests_max` requests and `batch_bytes_max` bytes, with a timestamp that never
//! goes back — and broadcasts PROPOSE(r, cid, batch). A replica that finds the batch valid
//! (client signatures, limits, at most one request per client) makes its vote durable and
//! then broadcasts WRITE(r, cid, H(batch)). On Q matching WRITEs it holds a *write
//! certificate*; it makes it durable and broadcasts ACCEPT. On Q matching ACCEPTs (an
//! *accept certificate*, the decision proof) it decides, executes the batch through
//! [`Application::execute_batch`] and replies to the clients once the decision is durable.
//! Requests already executed for a client (same or lower sequence number) are suppressed;
//! the last reply per client is cached and re-sent for retransmissions. PROPOSE, WRITE and
//! ACCEPT messages for the next instance that overtake the open instance's last votes are
//! kept (at most three per sender) and replayed once it is decided (ADR 0304).
//!
//! **Leader change** (synchronization phase). A request not ordered within the request
//! timeout is forwarded by a follower to the leader; not ordered within a second timeout,
//! it makes the replica broadcast STOP(r+1) (the leader itself sends STOP at once). f+1 STOPs for a regency make a replica join;
//! Q STOPs make it install the regency, after which it sends STOPDATA to the new leader:
//! the accept certificate of its last decided instance and its highest-regency write
//! certificate (with the batch) for the next one. The new leader collects Q valid STOPDATAs
//! and broadcasts SYNC(r', cid, batch, proofs). Every replica re-checks the SYNC: each
//! STOPDATA signed and valid, `cid` one above the highest *proven* decided instance (an
//! accept certificate for c, or a write certificate for c+1, proves c; a checkpoint keeps
//! the accept certificate of its instance, so installing one never loses the proof), and,
//! if any STOPDATA carries a write certificate for `cid`, the batch of the highest-regency
//! one — otherwise any valid batch. The SYNC then stands in for the PROPOSE of `cid` in r'.
//! Timeouts double per failed regency.
//!
//! **Catch-up, checkpoints, state transfer.** A replica that sees traffic for a later
//! instance or regency fetches decisions (each with its accept certificate, so one peer
//! suffices) and the SYNC that installed the peer's regency. Every `checkpoint_interval`
//! decisions a replica encodes its state (application snapshot, client sessions) as a
//! checkpoint; the log keeps decisions back to the previous checkpoint. A replica whose
//! next instance is only in a checkpoint asks all replicas for checkpoint digests (while it
//! keeps working: one peer's word is no evidence), takes a `(cid, digest)` above its last
//! decided instance reported by f+1, downloads the checkpoint in chunks of
//! `state_chunk_bytes_max` from one of those replicas (switching on timeout or mismatch, and
//! re-picking once every provider failed), and installs it only if the bytes hash to the
//! agreed digest.
//!
//! **Read-only requests** are answered at once by each replica from its current state; the
//! client needs n−f matching replies, and otherwise re-sends the request for ordering and
//! reports [`ClientOutput::ReadOnlyFallback`] (never silently).
//!
//! Deviations from BFT-SMaRt are recorded in `docs/adr/01NN-*.md`.
//!
//! # Invariants asserted
//!
//! `Replica` runs `invariants()` after every input: the open instance is one above the last
//! decided; the installed regency never exceeds the STOP target; a replica never votes in a
//! regency above the installed one, nor below the regency's SYNC instance; the in-memory
//! log holds at most `2 * checkpoint_interval + 1` decisions and ends at the last decided
//! instance; pending requests, client sessions, checkpoints and collected STOPDATAs stay
//! within their limits; persisted tokens were issued. Decisions are taken strictly in order
//! (`decide` asserts it), a write certificate is checked when formed (debug) and every
//! received certificate is checked before use. Limits are related by `const` assertions.
//! The simulator (`rampart-sim`) checks agreement, identical execution sequences,
//! identical checkpoints, linearizability and liveness over thousands of seeds.
//!
//! # The driving loop
//!
//! The caller owns the clock, the network and the disk. A minimal in-memory cluster of four
//! replicas and a client, delivering every message at once:
//!
//! ```
//! use rampart_bft::*;
//! use std::collections::VecDeque;
//!
//! #[derive(Default)]
//! struct Counter(u64);
//! impl Application for Counter {
//!     fn execute_batch(&mut self, _: &BatchContext, ops: &[&[u8]]) -> Vec<Vec<u8>> {
//!         ops.iter().map(|op| { self.0 += op.len() as u64; self.0.to_le_bytes().to_vec() }).collect()
//!     }
//!     fn query(&self, _: &[u8]) -> Option<Vec<u8>> { Some(self.0.to_le_bytes().to_vec()) }
//!     fn snapshot(&self) -> Vec<u8> { self.0.to_le_bytes().to_vec() }
//!     fn restore(&mut self, s: &[u8]) -> Result<(), RestoreError> {
//!         self.0 = u64::from_le_bytes(s.try_into().map_err(|_| RestoreError { reason: "len" })?);
//!         Ok(())
//!     }
//!     fn state_digest(&self) -> Digest { Digest::of("counter", &[&self.0.to_le_bytes()]) }
//! }
//!
//! let config = Config::new(4);
//! let cluster_seed = 42; // simulated keys: tests only
//! let auth = |p| SimulatedAuthenticator::new(p, cluster_seed);
//! let mut storage: Vec<MemStorage> = (0..4).map(|_| MemStorage::default()).collect();
//! let mut replicas: Vec<_> = (0..4u8)
//!     .map(|i| {
//!         let id = ReplicaId(i);
//!         Replica::new(config.clone(), id, auth(Principal::Replica(id)), Counter::default(),
//!                      RecoveredState::default(), u64::from(i), Timestamp(0)).unwrap()
//!     })
//!     .collect();
//! let me = ClientId(7);
//! let mut client = Client::new(&config, me, auth(Principal::Client(me)),
//!                              std::time::Duration::from_secs(1), RequestSeq(0));
//!
//! let now = Timestamp(1_000);
//! client.submit(now, b"hello".to_vec(), false).unwrap();
//! // (destination replica or None for the client, sender, wire bytes)
//! let mut net: VecDeque<(Option<u8>, Peer, Vec<u8>)> = VecDeque::new();
//! let mut result = None;
//! for _ in 0..10_000 {
//!     while let Some(out) = client.poll_output() {
//!         match out {
//!             ClientOutput::Broadcast { msg } => {
//!                 for r in 0..4 { net.push_back((Some(r), Peer::Client(me), msg.encode())); }
//!             }
//!             ClientOutput::Completed { result: r, .. } => result = Some(r),
//!             _ => {}
//!         }
//!     }
//!     for i in 0..4u8 {
//!         let r = &mut replicas[usize::from(i)];
//!         let from = Peer::Replica(ReplicaId(i));
//!         while let Some(out) = r.poll_output() {
//!             match out {
//!                 // 1. Make it durable, in order, then say so (this releases held sends).
//!                 Output::Persist { token, entry } => {
//!                     storage[usize::from(i)].apply(&entry).unwrap();
//!                     r.handle_persisted(token);
//!                 }
//!                 // 2. Put messages on the wire.
//!                 Output::Send { to, msg } => net.push_back((Some(to.0), from, msg.encode())),
//!                 Output::Broadcast { msg } => {
//!                     let bytes = msg.encode();
//!                     for j in (0..4).filter(|j| *j != i) { net.push_back((Some(j), from, bytes.clone())); }
//!                 }
//!                 Output::Reply { msg, .. } => net.push_back((None, from, msg.encode())),
//!                 // 3. Events (Decided, Checkpoint, ...) are for observers.
//!                 _ => {}
//!             }
//!         }
//!     }
//!     // 4. Deliver one message (a real driver also calls handle_timeout at poll_timeout()).
//!     let Some((to, from, bytes)) = net.pop_front() else { break };
//!     match (to, from) {
//!         (Some(r), _) => { let _ = replicas[usize::from(r)].handle_bytes(now, from, &bytes); }
//!         (None, Peer::Replica(r)) => { let _ = client.handle_bytes(now, r, &bytes); }
//!         _ => {}
//!     }
//! }
//! assert_eq!(result, Some(5u64.to_le_bytes().to_vec()));
//! assert!(replicas.iter().all(|r| r.last_decided() == SeqNo(1)));
//! ```
//!
//! # What this crate does not do
//!
//! No IO of any kind: no sockets, no files, no threads, no clock, no global randomness
//! (clippy's `disallowed-methods` bans `Instant::now`, `SystemTime::now` and `thread_rng`).
//! Time enters as a [`Timestamp`] argument, randomness as a seed, durability through
//! [`Output::Persist`] and [`Replica::handle_persisted`]. Transport encryption and
//! connection management belong to the runtime that drives the core (issue 4).
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
pub use auth::{
    AUTH_TAG_LEN, AuthTag, Authenticator, Ed25519Authenticator, Principal, SimulatedAuthenticator,
};
pub use client::{Client, ClientError, ClientOutput, ClientStats};
pub use error::{Error, Peer, PeerFault};
pub use message::{DecodeError, Message, Request, WireLimits};
pub use replica::{
    OUTPUTS_MAX, Output, Replica, STOP_WINDOW_MAX, Stats, Status, TIMEOUT_BACKOFF_EXP_MAX,
};
pub use storage::{
    CHECKPOINTS_KEPT, CheckpointRecord, MemStorage, PersistEntry, RecoveredState, RegencyRecord,
    Storage, StorageError, VoteRecord,
};
pub use types::{
    BATCH_BYTES_MAX, BATCH_REQUESTS_MAX, ClientId, Config, ConfigError, DECISIONS_PER_FETCH_MAX,
    DangerTestMutation, Digest, REPLICAS_MAX, REPLY_BYTES_MAX, Regency, ReplicaId, RequestSeq,
    STATE_CHUNK_BYTES_MAX, SeqNo, Timestamp,
};
