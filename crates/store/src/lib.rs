//! Rampart's cloud-of-clouds object store: DepSky-A and DepSky-CA, modernised.
//!
//! An object store spread over `n ≥ 3f + 1` independent storage providers ("clouds")
//! that keeps every object confidential, intact and available while up to `f` of them
//! are down, slow, or malicious. There is no server: this crate is the whole client.
//!
//! # Protocol
//!
//! Each user key is a *data unit*. Its name is hidden from clouds: objects are named by
//! `name_id = BLAKE3-keyed(namespace key, user key)`. Per cloud `i` the unit has:
//!
//! - `rampart/v1/m/<name_id>`: **metadata**, the list of versions newest first, signed
//!   with Ed25519 by a trusted writer and bound to the store id and `name_id`. Each
//!   version may carry attributes for higher layers (the S3 gateway keeps ETags,
//!   content types and user metadata there), sealed under the namespace key like the
//!   key name and covered by the signature;
//! - `rampart/v1/b/<name_id>/<blob_id>/s<i>`: cloud `i`'s **shards** of an immutable blob
//!   (for DepSky-CA preceded by cloud `i`'s Shamir share of the blob key);
//! - `rampart/v1/b/<name_id>/<blob_id>/manifest`: the blob's **manifest** (digests of every
//!   shard and share), unless it is small enough to sit inside the metadata.
//!
//! **Write** (`put`): read metadata from `n − f` clouds and take the highest valid version
//! `v`; stream the data as segments through encrypt → erasure-code → hash → upload to all
//! clouds and wait for `n − f` complete uploads; only then compare-and-swap the new
//! metadata (version `v + 1`, naming this writer) onto every cloud (clouds that missed the
//! read round are swapped from a fresh read) and return after `n − f` succeed. Slower clouds finish in the background. Because data lands before
//! metadata, metadata never points at data that fewer than `n − f` clouds hold.
//!
//! **Read** (`get`): read metadata from all clouds, use the first `n − f` answers, and
//! take the highest validly signed version. A cloud without metadata is not a fault (a
//! write completes at `n − f` clouds); more than `f` answers that fail verification are.
//! Fetch the manifest and each segment from the fastest clouds, hedging to the next after
//! a delay or on any error, and accept a shard only if its BLAKE3 digest matches the
//! manifest bound by that signature.
//!
//! A version is `(counter, writer, tag)`, the tag a digest of the signed entry, so two
//! writers sharing a key that race to one counter make two versions that every reader
//! orders alike; `stat` and `scrub` report such divergence (ADR 0006).
//!
//! **DepSky-CA**: a fresh AES-256-GCM key per version; Reed–Solomon with `k = f + 1` of
//! `n` shards; the key split with Shamir `k = f + 1`, so any `f` colluding clouds learn
//! nothing. With `n = 4` the clouds store 2× the data. **DepSky-A** replicates plaintext
//! to every cloud and is meant for public data.
//!
//! **Sealed single backend** ([`Protocol::Sealed`], exactly one cloud, `f = 0`): the same
//! code with `n = k = 1`. Segments are sealed as in DepSky-CA; the data key is wrapped
//! (AES-256-GCM, bound to store, key and blob) under a key derived from the owner's
//! namespace secret and stored as the blob header. The cloud learns nothing and cannot
//! forge, but it can withhold data, and serve an older signed version to a client that
//! has not seen a newer one (a client remembers the newest version it saw per key and
//! refuses older ones with [`StoreError::RolledBack`]).
//!
//! # Consistency
//!
//! Writers are serialised per key by compare-and-swap on each cloud's metadata (native
//! conditional puts, or an OS file lock for local directories); a writer needs `n − f`
//! successful swaps and otherwise retries with a higher version. Any two quorums of
//! `n − f` share at least `f + 1` clouds, one of them correct, so:
//!
//! - a completed write is returned by every read that starts after it (or a newer one);
//! - version numbers of completed writes strictly increase;
//! - a read concurrent with a write may return the old or the new version (regular, not
//!   atomic, semantics: reads do not write back);
//! - a read never returns bytes that were not written by a trusted writer for that key.
//!
//! # Invariants the code keeps
//!
//! - Nothing read from a cloud is used before it is checked against a digest reachable
//!   from a valid signature; decoders bound every length before allocating.
//! - Blobs are write-once: a new version always gets a fresh random `blob_id`; repair
//!   rewrites a shard only with bytes that match its manifest digest.
//! - Memory is bounded by the segment size times the pipeline depth, whatever the object
//!   size (see [`Tuning`]).
//!
//! # Fault model
//!
//! Up to `f` clouds may be arbitrarily faulty ([`faults`] injects the behaviours tested).
//! Writers holding keys listed in `trusted_writers` are trusted. Clients' clocks are only
//! used for informational timestamps and garbage-collection grace periods.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// The client measures cloud latency and stamps versions with wall-clock time; this
// crate is a runtime, not a sans-IO core.
#![allow(clippy::disallowed_methods)]

mod client;
pub mod cloud;
pub mod config;
pub mod faults;
pub mod meta;
pub mod pipeline;
mod wire;

pub use client::{
    Background, BackgroundReport, CloudHealth, CloudOfClouds, GcReport, GetReceipt, KeyReport,
    ListEntry, MetaHealth, ObjectInfo, Progress, PutReceipt, ScrubReport, ShardHealth, Tuning,
};
pub use config::{StoreConfig, init_local};
pub use meta::{Protocol, Version};

use std::path::PathBuf;

/// Errors from the store. Per-cloud failures are collected into the quorum errors;
/// they only surface alone when a single cloud was addressed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The config file is missing something or has a bad value.
    #[error("config {}: {reason}", path.display())]
    Config {
        /// Which file.
        path: PathBuf,
        /// What is wrong (one line).
        reason: String,
    },
    /// A cloud entry could not be turned into a backend.
    #[error("cloud {cloud:?}: {reason}")]
    CloudConfig {
        /// Cloud name.
        cloud: String,
        /// What is wrong.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A user key is not acceptable.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// Why.
        reason: &'static str,
    },
    /// No object is stored under this key.
    #[error("no object named {key:?}")]
    NotFound {
        /// The key.
        key: String,
    },
    /// More than `f` clouds returned metadata for the key, and none of it verifies (for
    /// example it is signed by a key this client does not trust). `stat` reports this for
    /// even one such cloud.
    #[error("no valid metadata for {key:?} ({detail})")]
    NoValidMetadata {
        /// The key.
        key: String,
        /// Per-cloud reasons.
        detail: String,
    },
    /// More than `f` clouds answered with metadata that fails verification for a key that
    /// exists: the store is outside its fault model, so nothing it returns could be
    /// trusted to be current. Repair with `scrub` (or restore the clouds) first. Clouds
    /// that merely lack the metadata are not counted (ADR 0006).
    #[error(
        "{key:?}: metadata is invalid on {faulty} clouds, more than the f = {f} this store tolerates; refusing to read ({detail})"
    )]
    TooManyFaulty {
        /// The key.
        key: String,
        /// Clouds with invalid metadata.
        faulty: usize,
        /// Faults tolerated.
        f: usize,
        /// Per-cloud reasons.
        detail: String,
    },
    /// Fewer than `n − f` clouds answered, so no safe decision is possible.
    #[error("{op}: only {answered} of {n} clouds answered, {needed} needed ({detail})")]
    QuorumUnavailable {
        /// The operation.
        op: &'static str,
        /// Clouds that answered.
        answered: usize,
        /// Clouds needed.
        needed: usize,
        /// Clouds configured.
        n: usize,
        /// Per-cloud failures, `name: reason; …`.
        detail: String,
    },
    /// Fewer than `k` clouds returned valid shards for a segment: the read fails rather
    /// than return anything unverified.
    #[error(
        "{}: only {valid} of {n} clouds returned valid shards, {needed} needed ({detail})",
        segment_label(*.segment)
    )]
    NotEnoughShards {
        /// Segment index, or `u64::MAX` for the blob header (key share or wrapped key).
        segment: u64,
        /// Valid shards found.
        valid: usize,
        /// Shards needed.
        needed: usize,
        /// Clouds configured.
        n: usize,
        /// Per-cloud failures.
        detail: String,
    },
    /// The only cloud of a sealed single backend returned an older version of a key than
    /// this client already saw: the cloud rolled the key back. Nothing was read.
    #[error(
        "{key:?}: the cloud returned version {got}, older than version {seen} this client already saw (rolled back)"
    )]
    RolledBack {
        /// The key.
        key: String,
        /// The version returned (boxed: a version is 56 bytes).
        got: Box<Version>,
        /// The newest version this client saw.
        seen: Box<Version>,
    },
    /// The newest version is no longer the one the caller asked for (a concurrent write
    /// or delete landed in between); nothing was read.
    #[error("{key:?} changed since it was looked up; try again")]
    VersionChanged {
        /// The key.
        key: String,
    },
    /// Concurrent writers kept winning on some clouds. The outcome is unknown: the write
    /// reached fewer than `n − f` clouds, but those may hold it, and a later read or scrub
    /// may make it the newest version (ordered as a write concurrent with the winners).
    #[error(
        "write to {key:?} conflicted with concurrent writers {attempts} times; it may still take \
         effect: read the key before writing it again"
    )]
    Conflict {
        /// The key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Data failed a check after passing per-shard checks (a writer bug or a forged
    /// object by a trusted writer).
    #[error("integrity check failed: {reason}")]
    Integrity {
        /// What failed.
        reason: &'static str,
    },
    /// Bytes from a cloud could not be parsed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Metadata failed authentication.
    #[error("forged metadata: {reason}")]
    Forged {
        /// What failed.
        reason: &'static str,
    },
    /// An input exceeds a limit.
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge {
        /// What.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The input stream failed while reading.
    #[error("reading input: {0}")]
    Input(#[source] std::io::Error),
    /// The output stream failed while writing.
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    /// The operation ran but could not be recorded in the configured audit log.
    #[error("audit log: {0}")]
    Audit(#[source] rampart_log::Error),
    /// A cryptographic operation failed.
    #[error(transparent)]
    Crypto(rampart_crypto::CryptoError),
}

fn segment_label(segment: u64) -> String {
    if segment == u64::MAX {
        "blob key header".into()
    } else {
        format!("segment {segment}")
    }
}
