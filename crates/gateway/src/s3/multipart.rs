//! Multipart uploads: create, upload part, list parts, list uploads, abort, complete.
//!
//! # Invariants
//!
//! - An upload is the store entry `u/<id>` with a signed [`Record::Upload`] naming its
//!   bucket and key; its parts are `p/<id>/<number>`, each a verified store object with a
//!   signed [`Record::Part`]. An upload id is 128 random bits; a request naming another
//!   bucket or key gets `NoSuchUpload`.
//! - **Completing is atomic** (ADR 0401): the listed parts are read back, verified, and
//!   streamed into one new store object whose metadata is written only after all of it is
//!   stored; only then are the upload record and its parts tombstoned. A failed
//!   completion leaves the upload as it was.
//! - Part numbers are 1 to [`PART_NUMBER_MAX`]; every part but the last is at least
//!   [`PART_BYTES_MIN`]; a part listed twice counts once (the last entry); a retried
//!   Complete is answered again while its object is current.
//! - Checksums: an upload created with an algorithm checksums every part with it, and the
//!   object gets S3's composite or full-object checksum, verified over the rewrite.

use std::collections::BTreeMap;

use futures::StreamExt;
use md5::{Digest as _, Md5};
use rampart_store::{ObjectInfo, StoreError, Version};
use rand_core::{OsRng, RngCore};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::io::AsyncWriteExt;

use crate::body::{Checked, PIPE_BYTES};
use crate::checksum::{self, Algorithm, Check, StoredChecksum};
use crate::record::{ObjectAttrs, Record, UploadChecksum};

use super::errors::*;
use super::listing::*;
use super::write::*;
use super::*;

impl Gateway {
    /// The attributes and checksum an upload in progress was created with.
    pub(super) async fn upload(
        &self,
        upload_id: &str,
        bucket: &str,
        key: &str,
    ) -> S3Result<(ObjectAttrs, Option<UploadChecksum>)> {
        if upload_id.len() != 32 || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(no_such_upload());
        }
        match self
            .store
            .head(&format!("{UPLOAD_PREFIX}{upload_id}"))
            .await
        {
            Ok(info) => match Record::decode(&info.attrs) {
                Ok(Record::Upload {
                    bucket: b,
                    key: k,
                    attrs,
                    checksum,
                }) if b == bucket && k == key => Ok((attrs, checksum)),
                _ => Err(no_such_upload()),
            },
            Err(StoreError::NotFound { .. }) => Err(no_such_upload()),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Parts stored for an upload, by part number.
    pub(super) async fn parts(&self, upload_id: &str) -> S3Result<BTreeMap<i32, StoredPart>> {
        let prefix = format!("{PART_PREFIX}{upload_id}/");
        let mut out = BTreeMap::new();
        for info in self.store.list(&prefix).await.map_err(store_error)? {
            let Ok(n) = info.key[prefix.len()..].parse::<i32>() else {
                continue;
            };
            if let Ok(Record::Part { etag, checksum }) = Record::decode(&info.attrs) {
                out.insert(
                    n,
                    StoredPart {
                        etag,
                        checksum,
                        info,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Removes an upload record, then its parts (best effort: leftovers are tombstoned
    /// later by another abort, and their space reclaimed by `rampart gc`).
    pub(super) async fn drop_upload(&self, upload_id: &str) -> S3Result<()> {
        match self
            .store
            .delete(&format!("{UPLOAD_PREFIX}{upload_id}"))
            .await
        {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(store_error(e)),
        }
        let parts = self.parts(upload_id).await?;
        futures::stream::iter(parts.into_values())
            .for_each_concurrent(FAN_OUT, |part| async move {
                if let Err(e) = self.store.delete(&part.info.key).await {
                    tracing::warn!(error = %e, "could not delete a part; gc will reclaim it");
                }
            })
            .await;
        Ok(())
    }

    pub(super) async fn serve_create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = req.input;
        object_key(&i.bucket, &i.key)?;
        let attrs = user_attrs(
            i.metadata,
            i.content_type,
            i.content_encoding,
            i.content_disposition,
            i.content_language,
            i.cache_control,
            i.expires,
        )?;
        let checksum = upload_checksum(i.checksum_algorithm.as_ref(), i.checksum_type.as_ref())?;
        self.require_bucket(&i.bucket).await?;
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let upload_id = hex::encode(id);
        let record = Record::Upload {
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            attrs,
            checksum,
        };
        self.store
            .put(
                &format!("{UPLOAD_PREFIX}{upload_id}"),
                tokio::io::empty(),
                record.encode(),
                None,
            )
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(upload_id),
            checksum_algorithm: i.checksum_algorithm,
            checksum_type: checksum.map(|c| {
                ChecksumType::from_static(if c.full_object {
                    ChecksumType::FULL_OBJECT
                } else {
                    ChecksumType::COMPOSITE
                })
            }),
            ..Default::default()
        }))
    }

    pub(super) async fn serve_upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let i = req.input;
        if !(1..=PART_NUMBER_MAX).contains(&i.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "part number must be between 1 and {PART_NUMBER_MAX}"
            ));
        }
        let len = body_limit(i.content_length, self.upload_bytes_max)?;
        let md5 = content_md5(&req.headers)?;
        let check = checksum::announced(&req.headers, req.trailing_headers.as_ref())?;
        let (_, upload_checksum) = self.upload(&i.upload_id, &i.bucket, &i.key).await?;
        // An upload created with a checksum algorithm checksums every part with it: a
        // part that sends another is refused, one that sends none gets it computed.
        let check = match (upload_checksum, check) {
            (Some(u), Some(c)) if c.algorithm() != u.algorithm => {
                return Err(s3_error!(
                    InvalidRequest,
                    "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                    u.algorithm.name(),
                    c.algorithm().name()
                ));
            }
            (Some(u), None) => Some(Check::compute(u.algorithm)),
            (_, c) => c,
        };
        let input = Checked::new(self.client_body(i.body), self.upload_bytes_max)
            .expect_len(len)
            .expect_md5(md5)
            .with_checksum(check);
        let digests = self
            .put_checked(&part_key(&i.upload_id, i.part_number), input, |d| {
                Record::Part {
                    etag: hex::encode(d.md5),
                    checksum: d.checksum.clone(),
                }
            })
            .await?;
        let mut out = UploadPartOutput {
            e_tag: Some(ETag::Strong(hex::encode(digests.md5))),
            ..Default::default()
        };
        if let Some(c) = digests.checksum.as_ref().map(StoredChecksum::to_dto) {
            out.checksum_crc32 = c.checksum_crc32;
            out.checksum_crc32c = c.checksum_crc32c;
            out.checksum_sha1 = c.checksum_sha1;
            out.checksum_sha256 = c.checksum_sha256;
            out.checksum_crc64nvme = c.checksum_crc64nvme;
        }
        Ok(S3Response::new(out))
    }

    pub(super) async fn serve_list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let (_, upload_checksum) = self.upload(&i.upload_id, &i.bucket, &i.key).await?;
        let marker = i.part_number_marker.unwrap_or(0);
        let max = max_keys(i.max_parts);
        let all = self.parts(&i.upload_id).await?;
        let mut parts = Vec::new();
        let mut truncated = false;
        for (n, part) in all.range(marker.saturating_add(1)..) {
            if parts.len() == max {
                truncated = true;
                break;
            }
            let mut p = Part {
                part_number: Some(*n),
                e_tag: Some(ETag::Strong(part.etag.clone())),
                size: Some(part.info.size as i64),
                last_modified: Some(timestamp(part.info.created_ms)),
                ..Default::default()
            };
            if let Some(c) = part.checksum.as_ref().map(StoredChecksum::to_dto) {
                p.checksum_crc32 = c.checksum_crc32;
                p.checksum_crc32c = c.checksum_crc32c;
                p.checksum_sha1 = c.checksum_sha1;
                p.checksum_sha256 = c.checksum_sha256;
                p.checksum_crc64nvme = c.checksum_crc64nvme;
            }
            parts.push(p);
        }
        let next = parts.last().and_then(|p: &Part| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: if truncated { next } else { None },
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(parts),
            checksum_algorithm: upload_checksum
                .map(|c| ChecksumAlgorithm::from_static(c.algorithm.name())),
            ..Default::default()
        }))
    }

    pub(super) async fn serve_list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        self.require_bucket(&i.bucket).await?;
        let q = ListQuery::new(
            i.prefix.as_deref(),
            i.delimiter.as_deref().filter(|d| !d.is_empty()),
            i.key_marker.as_deref().unwrap_or(""),
            i.max_uploads,
            i.encoding_type.as_ref(),
        );
        // Every upload of this bucket under the prefix, from signed upload records, in S3's
        // order: by key, then by initiation time.
        let mut all: Vec<(String, u64, String)> = Vec::new();
        for info in self.store.list(UPLOAD_PREFIX).await.map_err(store_error)? {
            if let Ok(Record::Upload { bucket, key, .. }) = Record::decode(&info.attrs)
                && bucket == i.bucket
                && key.starts_with(q.prefix)
            {
                let id = info.key[UPLOAD_PREFIX.len()..].to_owned();
                all.push((key, info.created_ms, id));
            }
        }
        all.sort();
        // Resume after (key_marker, upload_id_marker), or after every upload of key_marker.
        let start = match (i.key_marker.as_deref(), i.upload_id_marker.as_deref()) {
            (None, _) => 0,
            (Some(k), None) => all.partition_point(|(key, ..)| key.as_str() <= k),
            (Some(k), Some(id)) => all
                .iter()
                .position(|(key, _, uid)| key == k && uid == id)
                .map_or_else(
                    || all.partition_point(|(key, ..)| key.as_str() <= k),
                    |p| p + 1,
                ),
        };
        let mut uploads = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut truncated = false;
        let mut last: Option<(String, String)> = None;
        for (key, created_ms, id) in &all[start..] {
            let rolled = q.delimiter.and_then(|d| {
                key[q.prefix.len()..]
                    .find(d)
                    .map(|at| key[..q.prefix.len() + at + d.len()].to_owned())
            });
            // A prefix already returned (on this page, or as the marker of the last one).
            if let Some(p) = &rolled
                && (prefixes.last() == Some(p) || i.key_marker.as_ref() == Some(p))
            {
                continue;
            }
            if uploads.len() + prefixes.len() == q.max_keys {
                truncated = true;
                break;
            }
            match rolled {
                Some(p) => {
                    last = Some((p.clone(), String::new()));
                    prefixes.push(p);
                }
                None => {
                    last = Some((key.clone(), id.clone()));
                    uploads.push(MultipartUpload {
                        key: Some(q.encode(key)),
                        upload_id: Some(id.clone()),
                        initiated: Some(timestamp(*created_ms)),
                        ..Default::default()
                    });
                }
            }
        }
        let (next_key, next_id) = match (truncated, last) {
            (true, Some((k, id))) => (Some(q.encode(&k)), Some(id).filter(|id| !id.is_empty())),
            _ => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: Some(q.encode(q.prefix)),
            delimiter: q.delimiter.map(|d| q.encode(d)),
            key_marker: i.key_marker.as_deref().map(|k| q.encode(k)),
            upload_id_marker: i.upload_id_marker,
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            max_uploads: Some(q.max_keys as i32),
            is_truncated: Some(truncated),
            uploads: Some(uploads),
            common_prefixes: Some(
                prefixes
                    .iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(q.encode(p)),
                    })
                    .collect(),
            ),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    pub(super) async fn serve_abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        self.upload(&i.upload_id, &i.bucket, &i.key).await?;
        self.drop_upload(&i.upload_id).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(super) async fn serve_complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        let dst = object_key(&i.bucket, &i.key)?;
        refuse_unimplemented(&PutFeatures {
            conditional: i.if_match.is_some() || i.if_none_match.is_some(),
            ..PutFeatures::default()
        })?;
        let announced = checksum::announced_value(&req.headers)?;
        let (mut attrs, upload_checksum) = match self.upload(&i.upload_id, &i.bucket, &i.key).await
        {
            Ok(u) => u,
            Err(e) if *e.code() == S3ErrorCode::NoSuchUpload => {
                // A retried Complete (the first response was lost): S3 answers it again
                // while the object that upload produced is still the current one.
                return match self.object(&i.bucket, &i.key).await {
                    Ok((_, a)) if a.upload.as_deref() == Some(i.upload_id.as_str()) => {
                        let mut out = CompleteMultipartUploadOutput {
                            location: Some(format!("/{}/{}", i.bucket, i.key)),
                            bucket: Some(i.bucket),
                            key: Some(i.key),
                            e_tag: Some(ETag::Strong(a.etag.clone())),
                            ..Default::default()
                        };
                        set_checksum!(out, a.checksum.as_ref().map(StoredChecksum::to_dto));
                        Ok(S3Response::new(out))
                    }
                    _ => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let requested = i
            .multipart_upload
            .and_then(|m| m.parts)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| s3_error!(MalformedXML, "no parts listed"))?;
        if requested.len() > PART_NUMBER_MAX as usize {
            return Err(s3_error!(MalformedXML, "too many parts"));
        }
        let stored = self.parts(&i.upload_id).await?;
        let mut chosen: Vec<(String, Version, u64)> = Vec::with_capacity(requested.len());
        let mut md5s = Md5::new();
        let numbers = requested
            .iter()
            .map(|p| p.part_number)
            .collect::<Option<Vec<i32>>>()
            .ok_or_else(|| s3_error!(MalformedXML, "part without a number"))?;
        if numbers.windows(2).any(|w| w[0] > w[1]) {
            return Err(s3_error!(
                InvalidPartOrder,
                "parts must be listed in ascending order"
            ));
        }
        // A part number listed more than once (a client that re-sent a part): as in S3,
        // the last entry for it counts.
        let mut listed: Vec<(&CompletedPart, i32)> = Vec::with_capacity(requested.len());
        for (p, &n) in requested.iter().zip(&numbers) {
            if listed.last().is_some_and(|&(_, m)| m == n) {
                listed.pop();
            }
            listed.push((p, n));
        }
        let mut part_sums: Vec<Vec<u8>> = Vec::with_capacity(listed.len());
        for (idx, &(p, n)) in listed.iter().enumerate() {
            let part = stored
                .get(&n)
                .ok_or_else(|| s3_error!(InvalidPart, "part {n} was not uploaded"))?;
            let (etag, info) = (&part.etag, &part.info);
            if p.e_tag.as_ref().is_some_and(|e| strip_etag(e) != etag) {
                return Err(s3_error!(InvalidPart, "part {n} has a different ETag"));
            }
            if let Some(sum) = part_checksum(p, n, part, upload_checksum)? {
                part_sums.push(sum);
            }
            if idx + 1 < listed.len() && info.size < PART_BYTES_MIN {
                return Err(s3_error!(
                    EntityTooSmall,
                    "part {n} is smaller than 5 MiB and not the last"
                ));
            }
            let raw = hex::decode(etag).map_err(|_| s3_error!(InternalError, "bad part etag"))?;
            md5s.update(&raw);
            chosen.push((info.key.clone(), info.version, info.size));
        }
        attrs.etag = format!("{}-{}", hex::encode(md5s.finalize()), chosen.len());
        attrs.parts = Some(chosen.len() as u32);
        attrs.upload = Some(i.upload_id.clone());
        let check = object_checksum(&mut attrs, upload_checksum, announced, &part_sums)?;
        let total: u64 = chosen.iter().map(|c| c.2).sum();
        let etag = attrs.etag.clone();
        let this = self.clone();
        let (bucket, key, upload_id) = (i.bucket, i.key, i.upload_id);
        // The object is rewritten from its parts (each read back and verified) as one
        // store object; this can take a while, so `s3s` keeps the connection alive with
        // whitespace while it runs. See ADR 0401.
        let future = async move {
            let (rx, mut tx) = tokio::io::duplex(PIPE_BYTES);
            let store = this.store.clone();
            let task = tokio::spawn(async move {
                for (skey, version, _) in &chosen {
                    store
                        .get_version(skey, *version, &mut tx, None, None)
                        .await?;
                }
                let _ = tx.shutdown().await;
                Ok::<_, StoreError>(())
            });
            let input = Checked::new(rx, u64::MAX)
                .expect_len(Some(total))
                .with_checksum(check);
            let put = this.put_stream(&dst, input, attrs).await;
            let read = task.await;
            let (_, checksum) = put?;
            match read {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(store_error(e)),
                Err(e) => return Err(S3Error::internal_error(e)),
            }
            this.drop_upload(&upload_id).await?;
            let mut out = CompleteMultipartUploadOutput {
                bucket: Some(bucket.clone()),
                key: Some(key.clone()),
                e_tag: Some(ETag::Strong(etag)),
                location: Some(format!("/{bucket}/{key}")),
                ..Default::default()
            };
            set_checksum!(out, checksum.as_ref().map(StoredChecksum::to_dto));
            Ok(out)
        };
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            future: Some(Box::pin(future)),
            ..Default::default()
        }))
    }
}

/// One uploaded part, from its signed record.
pub(super) struct StoredPart {
    etag: String,
    checksum: Option<StoredChecksum>,
    info: ObjectInfo,
}

pub(super) fn part_key(upload_id: &str, part: i32) -> String {
    format!("{PART_PREFIX}{upload_id}/{part:05}")
}

/// The checksum a CreateMultipartUpload asks for: S3's defaults and combinations
/// (COMPOSITE unless CRC64NVME; FULL_OBJECT only for the CRCs).
pub(super) fn upload_checksum(
    algorithm: Option<&ChecksumAlgorithm>,
    kind: Option<&ChecksumType>,
) -> S3Result<Option<UploadChecksum>> {
    let Some(a) = algorithm else {
        if kind.is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "x-amz-checksum-type needs x-amz-checksum-algorithm"
            ));
        }
        return Ok(None);
    };
    let algorithm = Algorithm::from_name(a.as_str()).ok_or_else(|| {
        s3_error!(
            InvalidRequest,
            "unknown x-amz-checksum-algorithm {}",
            a.as_str()
        )
    })?;
    let full_object = match kind.map(ChecksumType::as_str) {
        None => algorithm == Algorithm::Crc64Nvme,
        Some(ChecksumType::FULL_OBJECT) => true,
        Some(ChecksumType::COMPOSITE) => false,
        Some(other) => {
            return Err(s3_error!(
                InvalidRequest,
                "unknown x-amz-checksum-type {other}"
            ));
        }
    };
    if full_object && !algorithm.full_object_capable() {
        return Err(s3_error!(
            InvalidRequest,
            "The FULL_OBJECT checksum type cannot be used with the {} checksum algorithm.",
            algorithm.name()
        ));
    }
    if !full_object && algorithm == Algorithm::Crc64Nvme {
        return Err(s3_error!(
            InvalidRequest,
            "The COMPOSITE checksum type cannot be used with the CRC64NVME checksum algorithm."
        ));
    }
    Ok(Some(UploadChecksum {
        algorithm,
        full_object,
    }))
}

/// Checks the checksums a CompleteMultipartUpload lists for part `n` against the ones
/// the part was uploaded with; returns the part's raw digest when the object gets a
/// composite checksum.
pub(super) fn part_checksum(
    p: &CompletedPart,
    n: i32,
    part: &StoredPart,
    upload: Option<UploadChecksum>,
) -> S3Result<Option<Vec<u8>>> {
    let listed = |a| {
        checksum::field_of(
            a,
            p.checksum_crc32.as_deref(),
            p.checksum_crc32c.as_deref(),
            p.checksum_sha1.as_deref(),
            p.checksum_sha256.as_deref(),
            p.checksum_crc64nvme.as_deref(),
        )
    };
    for a in Algorithm::ALL {
        if let Some(v) = listed(a) {
            match &part.checksum {
                Some(c) if c.algorithm == a && c.value == v.trim() => {}
                _ => {
                    return Err(s3_error!(
                        InvalidPart,
                        "part {n}: the {} listed is not the one it was uploaded with",
                        a.name()
                    ));
                }
            }
        }
    }
    let Some(u) = upload else { return Ok(None) };
    let stored = part
        .checksum
        .as_ref()
        .filter(|c| c.algorithm == u.algorithm)
        .ok_or_else(|| {
            s3_error!(
                InvalidPart,
                "part {n} was uploaded without the upload's {} checksum",
                u.algorithm.name()
            )
        })?;
    if u.full_object {
        return Ok(None);
    }
    if listed(u.algorithm).is_none() {
        return Err(s3_error!(
            InvalidRequest,
            "The upload was created using a {} checksum. The complete request must include the checksum for each part. It was missing for part {n} in the request.",
            u.algorithm.name()
        ));
    }
    stored
        .raw()
        .map(Some)
        .ok_or_else(|| s3_error!(InternalError, "stored part checksum is not base64"))
}

/// The object checksum of a completing upload: a composite one is set in `attrs` now
/// (from the part digests); a full-object one is returned as the check to run over the
/// rewrite. A checksum the client announces for the whole object must match.
pub(super) fn object_checksum(
    attrs: &mut ObjectAttrs,
    upload: Option<UploadChecksum>,
    announced: Option<(Algorithm, String)>,
    part_sums: &[Vec<u8>],
) -> S3Result<Option<Check>> {
    attrs.checksum = None;
    let Some(u) = upload else {
        if let Some((a, _)) = announced {
            return Err(s3_error!(
                InvalidRequest,
                "the upload was created without a checksum algorithm, so its {} cannot be checked",
                a.header()
            ));
        }
        return Ok(None);
    };
    if let Some((a, _)) = &announced
        && *a != u.algorithm
    {
        return Err(s3_error!(
            BadDigest,
            "the upload was created with {}, not {}",
            u.algorithm.name(),
            a.name()
        ));
    }
    if u.full_object {
        return Ok(Some(match announced {
            None => Check::compute(u.algorithm),
            Some((a, v)) => Check::value(a, a.decode(&v, "header")?),
        }));
    }
    let c = StoredChecksum::composite(u.algorithm, part_sums);
    if let Some((_, v)) = announced {
        let bare = c
            .value
            .rsplit_once('-')
            .map_or(c.value.as_str(), |(b, _)| b);
        if v != c.value && v != bare {
            return Err(s3_error!(
                BadDigest,
                "The {} you specified did not match the calculated checksum.",
                u.algorithm.name()
            ));
        }
    }
    attrs.checksum = Some(c);
    Ok(None)
}
