//! Rampart's S3-compatible confidentiality gateway over the cloud-of-clouds store.
//!
//! Users keep their S3 tools (the AWS CLI, boto3, any SDK); the clouds only ever see
//! DepSky-CA ciphertext shards under hidden names. The gateway is an [`s3s::S3`]
//! implementation ([`Gateway`]) served over hyper ([`serve`]); every bucket, object and
//! multipart part it keeps is an entry of a [`rampart_store::CloudOfClouds`], so
//! confidentiality, integrity and Byzantine tolerance hold for S3 data exactly as for
//! `rampart put`/`get`.
//!
//! # Mapping onto the store
//!
//! | S3 thing                 | store key                      | signed attributes      |
//! |--------------------------|--------------------------------|------------------------|
//! | bucket `B`               | `b/B` (empty object)           | [`Record::Bucket`] (or [`Record::BucketIn`] with a location constraint) |
//! | object `K` in `B`        | `o/B/K`                        | [`Record::Object`]     |
//! | multipart upload `U`     | `u/U` (empty object)           | [`Record::Upload`]     |
//! | part `N` of `U`          | `p/U/NNNNN`                    | [`Record::Part`]       |
//!
//! The attributes (ETag, content type and the other representation headers, user
//! metadata) live in the store's per-version attribute field, which the store signs with
//! the rest of the metadata, so a cloud cannot alter them. Listings (buckets, objects,
//! parts) come from the store's `list`, which reads names and sizes from verified,
//! signed metadata and never trusts a cloud's listing.
//!
//! # Invariants
//!
//! - **Nothing partial becomes visible.** Request bodies stream into the store through
//!   [`body::Checked`], which fails the read that exceeds the size limit and fails the end
//!   of stream when the length or `Content-MD5` is wrong; a failed read (or a client that
//!   disconnects) makes the store abort the write before any metadata is written.
//! - **Completing a multipart upload is atomic.** The parts (each a verified store object)
//!   are streamed into one new store object, whose metadata is written only after all of
//!   it is stored; then the upload record and parts are tombstoned (ADR 0401).
//! - **Reads send the version they announced.** `GET` looks the object up, then reads
//!   exactly that version ([`rampart_store::CloudOfClouds::get_version`]); the response
//!   starts only once the first verified bytes are ready, and a later failure aborts the
//!   response instead of ending it short.
//! - **Memory is bounded** per transfer by the store's segment pipeline plus a
//!   [`body::PIPE_BYTES`] pipe, whatever the object size; at most
//!   [`GatewayConfig::transfers_max`] transfers run at once (a copy or a multipart
//!   completion counts as one), a client slower than [`GatewayConfig::body_rate_min_bytes_per_sec`]
//!   loses its transfer ([`rate`]), connections are capped by
//!   [`GatewayConfig::connections_max`] and XML bodies by [`server::XML_BODY_BYTES_MAX`].
//!
//! # Authentication
//!
//! AWS Signature V4 (headers, presigned URLs and `aws-chunked` streaming payloads, all
//! verified by `s3s`, including the payload SHA-256; the tests exercise header signatures
//! with signed and unsigned payloads, and presigned URLs) against the access keys of the
//! `[gateway]` section of `rampart.toml`. Unsigned requests get `AccessDenied`, unknown
//! keys `InvalidAccessKeyId`, wrong signatures `SignatureDoesNotMatch`. Secrets are
//! redacted from `Debug` output and never logged.
//!
//! # Transport
//!
//! Plain HTTP, or HTTPS only when `tls_cert_file` and `tls_key_file` are configured
//! ([`tls_acceptor`]: rustls with `ring`, TLS 1.2/1.3, ALPN h2 and http/1.1, a bounded
//! handshake time). SigV4 authenticates requests but does not hide them, so clients that
//! reach the gateway over a network should use HTTPS.
//!
//! # Fault model
//!
//! That of the store: up to `f` of `n ≥ 3f + 1` clouds arbitrarily faulty, or, with the
//! sealed single backend (`n = 1`), one cloud that may withhold or roll back but never
//! forge. The gateway process itself is trusted (it holds the store's keys and sees
//! plaintext), like the `rampart` CLI; run it where you would run the CLI.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// A server: it stamps copies with wall-clock time; this is a runtime, not a sans-IO core.
#![allow(clippy::disallowed_methods)]

pub mod body;
pub mod checksum;
pub mod config;
pub mod conn;
pub mod guard;
pub mod names;
pub mod rate;
pub mod record;
pub mod s3;
pub mod server;

pub use config::{AccessKey, GatewayConfig};
pub use record::{ObjectAttrs, Record};
pub use s3::Gateway;
pub use server::{serve, service, tls_acceptor};

/// `tracing` filter directives a process serving the gateway must add last to its
/// filter: `s3s` logs computed signatures (`s3s::ops::signature`, at debug) and whole
/// requests with their credentials (`s3s::service`, at debug), chunk signatures
/// (`s3s::http::aws_chunked_stream`, at trace).
pub const LOG_DIRECTIVES_FORCED: [&str; 3] = [
    "s3s::ops::signature=off",
    "s3s::service=info",
    "s3s::http::aws_chunked_stream=off",
];

/// Errors of the gateway outside S3 requests (those become S3 error responses).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The `[gateway]` section of `rampart.toml` is missing or invalid.
    #[error("[gateway] config: {reason}")]
    Config {
        /// What is wrong (one line).
        reason: String,
    },
    /// The TLS certificate or key cannot be used.
    #[error("[gateway] TLS: {reason}")]
    Tls {
        /// What is wrong (one line, never key material).
        reason: String,
    },
}
