//! Object writes: PutObject, CopyObject, DeleteObject and DeleteObjects, and the
//! streaming put every object and part write goes through.
//!
//! # Invariants
//!
//! - **Nothing partial becomes visible.** Every body streams through [`Checked`] into one
//!   store put ([`Gateway::put_checked`]) whose record is built only after the whole body
//!   was read and its length, `Content-MD5` and `x-amz-checksum-*` verified; a failed
//!   check, a client that goes away, or a copy source read that fails midway aborts the
//!   put before any metadata is written, so the previous version stays.
//! - **Bounded.** A put holds one transfer slot for its whole duration; bodies over
//!   `upload_bytes_max` are refused (early from `Content-Length`, else when the read
//!   crosses it); user metadata is limited to [`USER_METADATA_BYTES_MAX`].
//! - **Nothing silently ignored.** Conditional writes, object lock, SSE headers and
//!   non-private ACLs are refused ([`refuse_unimplemented`]).
//! - `aws-chunked` is framing, never a stored `Content-Encoding`; an empty or malformed
//!   `Content-MD5` is `InvalidDigest`.
//! - Deletes are idempotent (a missing key succeeds, as in S3); only version "null" exists.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use rampart_store::StoreError;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::io::AsyncWriteExt;

use crate::body::{Checked, Digests, PIPE_BYTES};
use crate::checksum::{self, Algorithm, Check, StoredChecksum};
use crate::record::{ObjectAttrs, Record};

use super::errors::*;
use super::read::*;
use super::*;

impl Gateway {
    /// Streams `input` into `skey` as an object with `attrs`; an empty ETag becomes the
    /// MD5 of the bytes, and a checksum computed while streaming is kept (unless `attrs`
    /// already has one). Returns the ETag and the checksum stored.
    pub(super) async fn put_stream<R>(
        &self,
        skey: &str,
        input: Checked<R>,
        attrs: ObjectAttrs,
    ) -> S3Result<(String, Option<StoredChecksum>)>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        let stored = Arc::new(std::sync::Mutex::new(None));
        let out = stored.clone();
        let digests = self
            .put_checked(skey, input, move |d| {
                let mut attrs = attrs;
                if attrs.etag.is_empty() {
                    attrs.etag = hex::encode(d.md5);
                }
                if attrs.checksum.is_none() {
                    attrs.checksum = d.checksum.clone();
                }
                *out.lock().expect("attrs lock") =
                    Some((attrs.etag.clone(), attrs.checksum.clone()));
                Record::Object(attrs)
            })
            .await?;
        let kept = stored.lock().expect("attrs lock").take();
        Ok(kept.unwrap_or((hex::encode(digests.md5), digests.checksum)))
    }

    /// Streams `input` into `skey` with the record `record(digests of the bytes)`, built
    /// once the whole body has been stored and checked. Returns the digests.
    pub(super) async fn put_checked<R, F>(
        &self,
        skey: &str,
        input: Checked<R>,
        record: F,
    ) -> S3Result<Digests>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
        F: FnOnce(&Digests) -> Record + Send,
    {
        let _transfer = self.transfer_slot().await;
        let slot = input.digest_slot();
        let attrs_slot = slot.clone();
        self.store
            .put_with_attrs_fn(
                skey,
                input,
                move || {
                    let digests = attrs_slot.lock().expect("digest slot lock").clone().ok_or(
                        StoreError::Integrity {
                            reason: "upload body was not read to its end",
                        },
                    )?;
                    Ok(record(&digests).encode())
                },
                None,
            )
            .await
            .map_err(store_error)?;
        // The attributes closure succeeded, so the slot holds the digests.
        Ok(slot
            .lock()
            .expect("digest slot lock")
            .clone()
            .expect("a completed put read its body to the end"))
    }

    pub(super) async fn serve_put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let i = req.input;
        let skey = object_key(&i.bucket, &i.key)?;
        refuse_unimplemented(&PutFeatures {
            conditional: i.if_match.is_some() || i.if_none_match.is_some(),
            object_lock: i.object_lock_mode.is_some()
                || i.object_lock_retain_until_date.is_some()
                || i.object_lock_legal_hold_status.is_some(),
            encryption: i.server_side_encryption.is_some()
                || i.sse_customer_algorithm.is_some()
                || i.sse_customer_key.is_some()
                || i.ssekms_key_id.is_some()
                || i.ssekms_encryption_context.is_some(),
            acl: i.acl.as_ref().is_some_and(|a| a.as_str() != "private"),
        })?;
        let len = body_limit(i.content_length, self.upload_bytes_max)?;
        let md5 = content_md5(&req.headers)?;
        let check = checksum::announced(&req.headers, req.trailing_headers.as_ref())?;
        let attrs = user_attrs(
            i.metadata,
            i.content_type,
            i.content_encoding,
            i.content_disposition,
            i.content_language,
            i.cache_control,
            i.expires,
        )?;
        self.require_bucket(&i.bucket).await?;
        let input = Checked::new(self.client_body(i.body), self.upload_bytes_max)
            .expect_len(len)
            .expect_md5(md5)
            .with_checksum(check);
        let (etag, checksum) = self.put_stream(&skey, input, attrs).await?;
        let mut out = PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        };
        set_checksum!(out, checksum.as_ref().map(StoredChecksum::to_dto));
        Ok(S3Response::new(out))
    }

    pub(super) async fn serve_delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = req.input;
        let skey = object_key(&i.bucket, &i.key)?;
        check_version(i.version_id.as_deref())?;
        if i.if_match.is_some()
            || i.if_match_last_modified_time.is_some()
            || i.if_match_size.is_some()
        {
            return Err(s3_error!(
                NotImplemented,
                "conditional deletes are not implemented"
            ));
        }
        self.require_bucket(&i.bucket).await?;
        match self.store.delete(&skey).await {
            // Deleting a missing key succeeds in S3.
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(store_error(e)),
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    pub(super) async fn serve_delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        if i.delete.objects.len() > PAGE_KEYS_MAX {
            return Err(s3_error!(
                MalformedXML,
                "at most {PAGE_KEYS_MAX} keys per DeleteObjects"
            ));
        }
        self.require_bucket(&i.bucket).await?;
        let quiet = i.delete.quiet.unwrap_or(false);
        let bucket = &i.bucket;
        let results: Vec<(String, Option<String>, Result<(), S3Error>)> =
            futures::stream::iter(i.delete.objects)
                .map(|o| async move {
                    let conditional =
                        o.e_tag.is_some() || o.last_modified_time.is_some() || o.size.is_some();
                    let r = async {
                        let skey = object_key(bucket, &o.key)?;
                        check_version(o.version_id.as_deref())?;
                        if conditional {
                            return Err(s3_error!(
                                NotImplemented,
                                "conditional deletes are not implemented"
                            ));
                        }
                        match self.store.delete(&skey).await {
                            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
                            Err(e) => Err(store_error(e)),
                        }
                    }
                    .await;
                    (o.key, o.version_id, r)
                })
                .buffered(FAN_OUT)
                .collect()
                .await;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for (key, version_id, r) in results {
            match r {
                Ok(()) if !quiet => deleted.push(DeletedObject {
                    key: Some(key),
                    version_id,
                    ..Default::default()
                }),
                Ok(()) => {}
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_owned()),
                    key: Some(key),
                    message: e.message().map(str::to_owned),
                    version_id,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    pub(super) async fn serve_copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            version_id,
        } = &i.copy_source
        else {
            return Err(s3_error!(NotImplemented, "copy from access points"));
        };
        if version_id.is_some() {
            return Err(s3_error!(NotImplemented, "copy of a specific version"));
        }
        let dst = object_key(&i.bucket, &i.key)?;
        let (info, src_attrs) = self.object(src_bucket, src_key).await?;
        let src_algorithm = src_attrs.checksum.as_ref().map(|c| c.algorithm);
        check_conditions(
            &src_attrs.etag,
            info.created_ms,
            Conditions {
                if_match: i.copy_source_if_match.as_ref(),
                if_none_match: i.copy_source_if_none_match.as_ref(),
                if_modified_since: i.copy_source_if_modified_since.as_ref(),
                if_unmodified_since: i.copy_source_if_unmodified_since.as_ref(),
            },
        )
        .map_err(|e| match e.code() {
            S3ErrorCode::NotModified => s3_error!(PreconditionFailed, "If-None-Match failed"),
            _ => e,
        })?;
        self.require_bucket(&i.bucket).await?;
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let mut attrs = if replace {
            user_attrs(
                i.metadata,
                i.content_type,
                i.content_encoding,
                i.content_disposition,
                i.content_language,
                i.cache_control,
                i.expires,
            )?
        } else {
            src_attrs
        };
        // A copy is one new single-part object: its ETag is the MD5 of its bytes, and its
        // checksum (of the algorithm asked for, else the source's) is computed over them.
        let algorithm = match &i.checksum_algorithm {
            Some(a) => Some(Algorithm::from_name(a.as_str()).ok_or_else(|| {
                s3_error!(
                    InvalidRequest,
                    "unknown x-amz-checksum-algorithm {}",
                    a.as_str()
                )
            })?),
            None => src_algorithm,
        };
        attrs.etag.clear();
        attrs.parts = None;
        attrs.checksum = None;
        attrs.upload = None;
        if info.key == dst && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "copying an object onto itself needs a metadata change"
            ));
        }
        let (rx, mut tx) = tokio::io::duplex(PIPE_BYTES);
        let store = self.store.clone();
        let (skey, version) = (info.key.clone(), info.version);
        let task = tokio::spawn(async move {
            let r = store.get_version(&skey, version, &mut tx, None, None).await;
            let _ = tx.shutdown().await;
            r
        });
        // A read that fails midway ends the pipe early; the length check then fails the
        // put, so a truncated copy never becomes visible.
        let input = Checked::new(rx, u64::MAX)
            .expect_len(Some(info.size))
            .with_checksum(algorithm.map(Check::compute));
        let put = self.put_stream(&dst, input, attrs).await;
        let read = task.await;
        let (etag, checksum) = put?;
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(store_error(e)),
            Err(e) => return Err(S3Error::internal_error(e)),
        }
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some({
                let mut r = CopyObjectResult {
                    e_tag: Some(ETag::Strong(etag)),
                    last_modified: Some(Timestamp::from(SystemTime::now())),
                    ..Default::default()
                };
                set_checksum!(r, checksum.as_ref().map(StoredChecksum::to_dto));
                r
            }),
            ..Default::default()
        }))
    }
}

/// The request's `Content-MD5`, read from the header itself: `s3s` drops an empty one,
/// which S3 refuses like any other malformed digest.
pub(super) fn content_md5(headers: &http::HeaderMap) -> S3Result<Option<[u8; 16]>> {
    let mut values = headers.get_all("content-md5").iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(s3_error!(InvalidDigest, "more than one Content-MD5"));
    }
    let v = v
        .to_str()
        .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not a base64 MD5"))?;
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(Some)
        .ok_or_else(|| s3_error!(InvalidDigest, "Content-MD5 is not a base64 MD5"))
}

pub(super) fn body_limit(len: Option<i64>, max: u64) -> S3Result<Option<u64>> {
    match len {
        Some(l) if l < 0 => Err(s3_error!(InvalidArgument, "negative Content-Length")),
        Some(l) if l as u64 > max => Err(s3_error!(
            EntityTooLarge,
            "request body larger than {max} bytes"
        )),
        l => Ok(l.map(|l| l as u64)),
    }
}

pub(super) fn user_attrs(
    metadata: Option<Metadata>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
) -> S3Result<ObjectAttrs> {
    let metadata: BTreeMap<String, String> = metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let bytes: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > USER_METADATA_BYTES_MAX {
        return Err(s3_error!(
            MetadataTooLarge,
            "user metadata is limited to {USER_METADATA_BYTES_MAX} bytes"
        ));
    }
    // `aws-chunked` describes the request's framing, not the object: S3 drops it.
    let content_encoding = content_encoding
        .map(|e| {
            e.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("aws-chunked"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|e| !e.is_empty());
    Ok(ObjectAttrs {
        etag: String::new(),
        content_type,
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        metadata,
        parts: None,
        checksum: None,
        upload: None,
        expires: expires.map(|t| http_date(&t)).transpose()?,
    })
}

pub(super) fn http_date(t: &Timestamp) -> S3Result<String> {
    let mut out = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut out)
        .map_err(|_| s3_error!(InvalidArgument, "Expires is not a representable date"))?;
    String::from_utf8(out).map_err(|_| s3_error!(InternalError, "date is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_metadata_is_limited() {
        let mut m = Metadata::default();
        m.insert("Big".into(), "x".repeat(USER_METADATA_BYTES_MAX));
        assert_eq!(
            *user_attrs(Some(m), None, None, None, None, None, None)
                .unwrap_err()
                .code(),
            S3ErrorCode::MetadataTooLarge
        );
        let mut m = Metadata::default();
        m.insert("Color".into(), "blue".into());
        let a = user_attrs(Some(m), None, None, None, None, None, None).unwrap();
        assert_eq!(a.metadata.get("color").map(String::as_str), Some("blue"));
    }
}
