//! S3 errors: store and body errors mapped onto the codes clients expect, and the
//! refusal of request features the gateway does not implement.
//!
//! # Invariants
//!
//! - A client never learns cloud names or per-cloud reasons: those stay in the server log
//!   (with the request id); the client gets the class of failure only.
//! - A body fault maps to its S3 code (`EntityTooLarge`, `IncompleteBody`, `BadDigest`,
//!   `InvalidRequest`, `XAmzContentSHA256Mismatch`, `SignatureDoesNotMatch`).
//! - A feature the gateway does not implement is refused with `501 NotImplemented`, never
//!   accepted and silently ignored (issue 12).

use std::io;

use rampart_store::StoreError;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use crate::body::BodyFault;

pub(super) fn no_such_bucket(bucket: &str) -> S3Error {
    s3_error!(NoSuchBucket, "no bucket named {bucket}")
}

pub(super) fn no_such_upload() -> S3Error {
    s3_error!(NoSuchUpload, "no such multipart upload")
}

/// Maps a store error to the S3 error a client expects.
pub(super) fn store_error(e: StoreError) -> S3Error {
    match e {
        StoreError::NotFound { .. } => s3_error!(NoSuchKey, "no such key"),
        StoreError::InvalidKey { reason } => s3_error!(InvalidArgument, "invalid key: {reason}"),
        StoreError::TooLarge {
            what: "attributes", ..
        } => s3_error!(MetadataTooLarge, "object metadata too large"),
        StoreError::Input(io) => input_error(&io),
        // Cloud names and per-cloud reasons stay in the server log (with the request id
        // of the enclosing span); the client learns only the class of failure.
        e @ (StoreError::QuorumUnavailable { .. }
        | StoreError::NotEnoughShards { .. }
        | StoreError::TooManyFaulty { .. }
        | StoreError::Conflict { .. }
        | StoreError::VersionChanged { .. }) => {
            tracing::warn!(error = %e, "store unavailable for a request");
            s3_error!(
                ServiceUnavailable,
                "the store could not serve the request; the server log has the details"
            )
        }
        e => {
            tracing::error!(error = %e, "store error");
            s3_error!(
                InternalError,
                "the store failed the request; the server log has the details"
            )
        }
    }
}

/// An error reading a request body: our own checks, an `s3s` check (such as a
/// mismatching `x-amz-content-sha256`), or the client going away.
pub(super) fn input_error(io: &io::Error) -> S3Error {
    if let Some(inner) = io.get_ref() {
        if let Some(f) = inner.downcast_ref::<BodyFault>() {
            return match f {
                BodyFault::TooLarge(limit) => {
                    s3_error!(EntityTooLarge, "request body larger than {limit} bytes")
                }
                BodyFault::Incomplete { .. } => s3_error!(IncompleteBody, "{f}"),
                BodyFault::BadDigest | BodyFault::ChecksumMismatch(_) => {
                    s3_error!(BadDigest, "{f}")
                }
                BodyFault::MissingTrailer(_) | BodyFault::InvalidChecksum(_) => {
                    s3_error!(InvalidRequest, "{f}")
                }
            };
        }
        if let Some(slow) = inner.downcast_ref::<crate::rate::TooSlow>() {
            return s3_error!(
                RequestTimeout,
                "Your socket connection to the server was not read from or written to within the timeout period: {slow}"
            );
        }
        if let Some(e) = inner.downcast_ref::<S3Error>() {
            return S3Error::with_message(
                e.code().clone(),
                e.message().unwrap_or("bad request body").to_owned(),
            );
        }
        // `s3s` checks payload hashes and chunk signatures while the body streams, but its
        // error types are private: recognise them by their (tested) messages.
        let msg = inner.to_string();
        if msg.contains("Sha256Mismatch") {
            let mut e = S3Error::with_message(
                S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
                "the body does not match x-amz-content-sha256",
            );
            e.set_status_code(http::StatusCode::BAD_REQUEST);
            return e;
        }
        if msg.contains("SignatureMismatch") {
            return s3_error!(
                SignatureDoesNotMatch,
                "a body chunk signature does not match"
            );
        }
    }
    tracing::info!(error = %io, "request body ended early");
    s3_error!(IncompleteBody, "request body ended early")
}

/// What a write asks for that the gateway does not implement (issue 12: never accept
/// and silently ignore).
#[derive(Default)]
pub(super) struct PutFeatures {
    /// `If-Match` / `If-None-Match`: the store's put has no compare-and-swap hook on the
    /// current version the gateway could use, so a create-only write cannot be atomic.
    pub(super) conditional: bool,
    pub(super) object_lock: bool,
    pub(super) encryption: bool,
    /// A canned ACL other than `private`.
    pub(super) acl: bool,
}

pub(super) fn refuse_unimplemented(f: &PutFeatures) -> S3Result<()> {
    if f.conditional {
        return Err(s3_error!(
            NotImplemented,
            "conditional writes (If-Match, If-None-Match) are not implemented"
        ));
    }
    if f.object_lock {
        return Err(s3_error!(NotImplemented, "object lock is not implemented"));
    }
    if f.encryption {
        return Err(s3_error!(
            NotImplemented,
            "SSE-S3, SSE-KMS and SSE-C headers are not implemented (the store always encrypts)"
        ));
    }
    if f.acl {
        return Err(s3_error!(
            NotImplemented,
            "ACLs other than private are not implemented"
        ));
    }
    Ok(())
}
