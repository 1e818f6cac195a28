//! Object reads: GetObject, HeadObject, GetObjectAttributes, and the conditional-request
//! checks they (and CopyObject) apply.
//!
//! # Invariants
//!
//! - **A read sends the version it announced.** The object is looked up once, and exactly
//!   that version is read ([`rampart_store::CloudOfClouds::get_version`]); the response
//!   starts only once the first verified bytes are ready ([`response_body`]), and a later
//!   failure aborts the response rather than ending it short.
//! - A GET holds one transfer slot until its store read ends.
//! - Conditions apply in RFC 9110 order (`If-Match`, else `If-Unmodified-Since`: 412; then
//!   `If-None-Match`, else `If-Modified-Since`: 304), and a 304 carries the ETag.
//! - Representation headers come from the signed record: an object stored without a
//!   `Content-Type` is `binary/octet-stream`, as in S3; a ranged GET returns no
//!   full-object checksum.

use std::collections::BTreeMap;

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use tokio::io::AsyncWriteExt;

use crate::body::{PIPE_BYTES, response_body};
use crate::checksum::{self, StoredChecksum};
use crate::record::ObjectAttrs;

use super::errors::*;
use crate::rate::RateLimited;

use super::*;

impl Gateway {
    pub(super) async fn serve_get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let i = req.input;
        if i.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "GET by part number"));
        }
        check_version(i.version_id.as_deref())?;
        let (info, attrs) = self.object(&i.bucket, &i.key).await?;
        check_conditions(
            &attrs.etag,
            info.created_ms,
            Conditions {
                if_match: i.if_match.as_ref(),
                if_none_match: i.if_none_match.as_ref(),
                if_modified_since: i.if_modified_since.as_ref(),
                if_unmodified_since: i.if_unmodified_since.as_ref(),
            },
        )?;
        let range = match &i.range {
            None => None,
            Some(r) => Some(
                r.check(info.size)
                    .map_err(|_| s3_error!(InvalidRange, "range not satisfiable"))?,
            ),
        };
        let transfer = self.transfer_slot().await;
        let (rx, mut tx) = tokio::io::duplex(PIPE_BYTES);
        let store = self.store.clone();
        let (skey, version, r) = (info.key.clone(), info.version, range.clone());
        // The store writes towards the client only as fast as it reads: a client slower
        // than the minimum body rate fails the read, which frees the transfer slot.
        let rate = self.min_rate;
        let task = tokio::spawn(async move {
            let _transfer = transfer;
            let mut tx = RateLimited::new(&mut tx, rate);
            let res = store.get_version(&skey, version, &mut tx, r, None).await;
            let _ = tx.shutdown().await;
            res
        });
        let body = response_body(rx, task).await.map_err(store_error)?;
        let (len, content_range) = match &range {
            None => (info.size, None),
            Some(r) => (
                r.end - r.start,
                Some(format!(
                    "bytes {}-{}/{}",
                    r.start,
                    r.end.saturating_sub(1),
                    info.size
                )),
            ),
        };
        let mut out = GetObjectOutput {
            body: Some(body),
            content_length: Some(len as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(attrs.etag.clone())),
            last_modified: Some(timestamp(info.created_ms)),
            content_type: Some(content_type_of(&attrs)),
            content_encoding: attrs.content_encoding.clone(),
            content_disposition: attrs.content_disposition.clone(),
            content_language: attrs.content_language.clone(),
            cache_control: attrs.cache_control.clone(),
            metadata: opt_map(&attrs.metadata),
            parts_count: attrs.parts.map(|p| p as i32),
            expires: expires_of(&attrs),
            ..Default::default()
        };
        // A range is not what the full-object checksum covers: S3 returns none for it.
        if range.is_none() && checksum::mode_enabled(i.checksum_mode.as_ref()) {
            set_checksum!(out, attrs.checksum.as_ref().map(StoredChecksum::to_dto));
        }
        Ok(S3Response::new(out))
    }

    pub(super) async fn serve_head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = req.input;
        let (info, attrs) = self.object(&i.bucket, &i.key).await?;
        check_conditions(
            &attrs.etag,
            info.created_ms,
            Conditions {
                if_match: i.if_match.as_ref(),
                if_none_match: i.if_none_match.as_ref(),
                if_modified_since: i.if_modified_since.as_ref(),
                if_unmodified_since: i.if_unmodified_since.as_ref(),
            },
        )?;
        if i.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "HEAD by part number"));
        }
        check_version(i.version_id.as_deref())?;
        let mut out = HeadObjectOutput {
            content_length: Some(info.size as i64),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(attrs.etag.clone())),
            last_modified: Some(timestamp(info.created_ms)),
            content_type: Some(content_type_of(&attrs)),
            content_encoding: attrs.content_encoding.clone(),
            content_disposition: attrs.content_disposition.clone(),
            content_language: attrs.content_language.clone(),
            cache_control: attrs.cache_control.clone(),
            metadata: opt_map(&attrs.metadata),
            parts_count: attrs.parts.map(|p| p as i32),
            expires: expires_of(&attrs),
            ..Default::default()
        };
        if checksum::mode_enabled(i.checksum_mode.as_ref()) {
            set_checksum!(out, attrs.checksum.as_ref().map(StoredChecksum::to_dto));
        }
        Ok(S3Response::new(out))
    }

    pub(super) async fn serve_get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let i = req.input;
        if i.version_id.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "attributes of a specific version"
            ));
        }
        if i.sse_customer_algorithm.is_some() || i.sse_customer_key.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "SSE-C headers are not implemented"
            ));
        }
        // `x-amz-object-attributes` is one comma-separated header (or several).
        let asked: Vec<&str> = i
            .object_attributes
            .iter()
            .flat_map(|a| a.as_str().split(','))
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if asked.is_empty() {
            return Err(s3_error!(
                InvalidArgument,
                "x-amz-object-attributes names no attribute"
            ));
        }
        if let Some(a) = asked.iter().find(|a| {
            ![
                ObjectAttributes::ETAG,
                ObjectAttributes::CHECKSUM,
                ObjectAttributes::OBJECT_PARTS,
                ObjectAttributes::STORAGE_CLASS,
                ObjectAttributes::OBJECT_SIZE,
            ]
            .contains(a)
        }) {
            return Err(s3_error!(InvalidArgument, "unknown object attribute {a}"));
        }
        let wants = |name: &str| asked.contains(&name);
        let (info, attrs) = self.object(&i.bucket, &i.key).await?;
        // The parts of a completed upload are not kept (the object is rewritten whole,
        // ADR 0401): only their count is known, so a part listing is refused.
        if wants(ObjectAttributes::OBJECT_PARTS)
            && (i.max_parts.is_some() || i.part_number_marker.is_some())
        {
            return Err(s3_error!(
                NotImplemented,
                "listing the parts of a completed object is not implemented (only their count)"
            ));
        }
        Ok(S3Response::new(GetObjectAttributesOutput {
            e_tag: wants(ObjectAttributes::ETAG).then(|| ETag::Strong(attrs.etag.clone())),
            checksum: attrs
                .checksum
                .as_ref()
                .filter(|_| wants(ObjectAttributes::CHECKSUM))
                .map(StoredChecksum::to_dto),
            object_parts: attrs
                .parts
                .filter(|_| wants(ObjectAttributes::OBJECT_PARTS))
                .map(|n| GetObjectAttributesParts {
                    total_parts_count: Some(n as i32),
                    ..Default::default()
                }),
            object_size: wants(ObjectAttributes::OBJECT_SIZE).then_some(info.size as i64),
            storage_class: wants(ObjectAttributes::STORAGE_CLASS)
                .then(|| StorageClass::from_static(StorageClass::STANDARD)),
            last_modified: Some(timestamp(info.created_ms)),
            ..Default::default()
        }))
    }
}

/// The stored `Content-Type`, or S3's default for an object stored without one.
pub(super) fn content_type_of(a: &ObjectAttrs) -> String {
    a.content_type
        .clone()
        .unwrap_or_else(|| "binary/octet-stream".to_owned())
}

/// The stored `Expires` as a response field (a record that does not parse gives none).
pub(super) fn expires_of(a: &ObjectAttrs) -> Option<Timestamp> {
    a.expires
        .as_deref()
        .and_then(|e| Timestamp::parse(TimestampFormat::HttpDate, e).ok())
}

pub(super) fn opt_map(m: &BTreeMap<String, String>) -> Option<Metadata> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// The conditional-request headers of a read (RFC 9110 section 13.2.2 order, as S3 applies
/// them): `If-Match`, else `If-Unmodified-Since` (412 on failure); then `If-None-Match`,
/// else `If-Modified-Since` (304 on failure). Dates compare at whole seconds, as HTTP
/// dates carry no more.
#[derive(Clone, Copy)]
pub(super) struct Conditions<'a> {
    pub(super) if_match: Option<&'a ETagCondition>,
    pub(super) if_none_match: Option<&'a ETagCondition>,
    pub(super) if_modified_since: Option<&'a Timestamp>,
    pub(super) if_unmodified_since: Option<&'a Timestamp>,
}

pub(super) fn unix_secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

pub(super) fn check_conditions(etag: &str, modified_ms: u64, c: Conditions<'_>) -> S3Result<()> {
    let matches = |c: &ETagCondition| match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => strip_etag(e) == etag,
    };
    let modified_secs = i64::try_from(modified_ms / 1000).unwrap_or(i64::MAX);
    match (c.if_match, c.if_unmodified_since) {
        (Some(m), _) if !matches(m) => {
            return Err(s3_error!(PreconditionFailed, "If-Match failed"));
        }
        (None, Some(t)) if modified_secs > unix_secs(t) => {
            return Err(s3_error!(PreconditionFailed, "If-Unmodified-Since failed"));
        }
        _ => {}
    }
    let not_modified = match (c.if_none_match, c.if_modified_since) {
        (Some(m), _) => matches(m),
        (None, Some(t)) => modified_secs <= unix_secs(t),
        (None, None) => false,
    };
    if not_modified {
        let mut e = s3_error!(NotModified);
        e.set_status_code(http::StatusCode::NOT_MODIFIED);
        // RFC 9110 section 15.4.5: a 304 carries the ETag a 200 would have.
        let mut h = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("\"{etag}\"")) {
            h.insert(http::header::ETAG, v);
        }
        e.set_headers(h);
        return Err(e);
    }
    Ok(())
}
