//! The `s3s::S3` implementation: S3 operations mapped onto the cloud-of-clouds store.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use md5::{Digest as _, Md5};
use rampart_store::meta::KEY_BYTES_MAX;
use rampart_store::{CloudOfClouds, ObjectInfo, StoreError, Version};
use rand_core::{OsRng, RngCore};
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::{BodyFault, Checked, Digests, PIPE_BYTES, blob_reader, response_body};
use crate::checksum::{self, Algorithm, Check, StoredChecksum};
use crate::record::{ObjectAttrs, Record, UploadChecksum};

/// Store key prefix of bucket entries: `b/<bucket>`.
const BUCKET_PREFIX: &str = "b/";
/// Store key prefix of objects: `o/<bucket>/<key>`.
const OBJECT_PREFIX: &str = "o/";
/// Store key prefix of multipart uploads in progress: `u/<upload id>`.
const UPLOAD_PREFIX: &str = "u/";
/// Store key prefix of uploaded parts: `p/<upload id>/<part number, 5 digits>`.
const PART_PREFIX: &str = "p/";
/// Longest S3 object key, in bytes.
pub const OBJECT_KEY_BYTES_MAX: usize = KEY_BYTES_MAX - OBJECT_PREFIX.len() - 63 - 1;
/// Most bytes of user metadata (names and values) per object, as in S3.
pub const USER_METADATA_BYTES_MAX: usize = 2048;
/// Highest part number, as in S3.
pub const PART_NUMBER_MAX: i32 = 10_000;
/// Smallest part other than the last, as in S3.
pub const PART_BYTES_MIN: u64 = 5 * 1024 * 1024;
/// Most keys per listing page and most keys per `DeleteObjects`, as in S3.
pub const PAGE_KEYS_MAX: usize = 1000;
/// Most buckets per `ListBuckets` page (`max-buckets`), as in S3.
pub const BUCKETS_PAGE_MAX: i32 = 10_000;
/// The version id of every object: buckets are unversioned, so each object's only
/// version is S3's "null" version.
const NULL_VERSION: &str = "null";
/// Store operations run at once by one `DeleteObjects` or part cleanup.
const FAN_OUT: usize = 8;

/// The gateway: an S3 service whose every object, part and bucket is a store entry.
#[derive(Clone, Debug)]
pub struct Gateway {
    store: CloudOfClouds,
    upload_bytes_max: u64,
    transfers: Arc<Semaphore>,
}

impl Gateway {
    /// A gateway over `store`, refusing request bodies over `upload_bytes_max` and
    /// running at most `transfers_max` object transfers at once (others wait).
    pub fn new(store: CloudOfClouds, upload_bytes_max: u64, transfers_max: usize) -> Self {
        assert!(transfers_max > 0);
        Self {
            store,
            upload_bytes_max,
            transfers: Arc::new(Semaphore::new(transfers_max)),
        }
    }

    /// A slot for one object transfer: bounds the memory of concurrent store pipelines.
    async fn transfer_slot(&self) -> OwnedSemaphorePermit {
        self.transfers
            .clone()
            .acquire_owned()
            .await
            .expect("the transfer semaphore is never closed")
    }

    async fn require_bucket(&self, bucket: &str) -> S3Result<ObjectInfo> {
        match self.store.head(&format!("{BUCKET_PREFIX}{bucket}")).await {
            Ok(info) => match Record::decode(&info.attrs) {
                Ok(Record::Bucket | Record::BucketIn { .. }) => Ok(info),
                _ => Err(no_such_bucket(bucket)),
            },
            Err(StoreError::NotFound { .. }) => Err(no_such_bucket(bucket)),
            Err(e) => Err(store_error(e)),
        }
    }

    /// The newest version of an object and its attributes.
    async fn object(&self, bucket: &str, key: &str) -> S3Result<(ObjectInfo, ObjectAttrs)> {
        let skey = object_key(bucket, key)?;
        match self.store.head(&skey).await {
            Ok(info) => match Record::decode(&info.attrs) {
                Ok(Record::Object(attrs)) => Ok((info, attrs)),
                _ => Err(s3_error!(InternalError, "object record is not readable")),
            },
            Err(StoreError::NotFound { .. }) => {
                self.require_bucket(bucket).await?;
                Err(s3_error!(NoSuchKey, "no such key"))
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// Streams `input` into `skey` as an object with `attrs`; an empty ETag becomes the
    /// MD5 of the bytes, and a checksum computed while streaming is kept (unless `attrs`
    /// already has one). Returns the ETag and the checksum stored.
    async fn put_stream<R>(
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
    async fn put_checked<R, F>(&self, skey: &str, input: Checked<R>, record: F) -> S3Result<Digests>
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

    /// The attributes and checksum an upload in progress was created with.
    async fn upload(
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
    async fn parts(&self, upload_id: &str) -> S3Result<BTreeMap<i32, StoredPart>> {
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
    async fn drop_upload(&self, upload_id: &str) -> S3Result<()> {
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

    /// Sorted keys of a bucket after `start_after`, grouped by `delimiter`, at most
    /// `max_keys` entries (objects plus common prefixes).
    async fn list_page(&self, bucket: &str, q: &ListQuery<'_>) -> S3Result<ListPage> {
        self.require_bucket(bucket).await?;
        let base = format!("{OBJECT_PREFIX}{bucket}/");
        let entries = self
            .store
            .list(&format!("{base}{}", q.prefix))
            .await
            .map_err(store_error)?;
        let mut page = ListPage::default();
        if q.max_keys == 0 {
            return Ok(page);
        }
        for info in entries {
            let key = &info.key[base.len()..];
            if key <= q.start_after {
                continue;
            }
            let prefix_len = q.prefix.len();
            let common = q.delimiter.filter(|d| !d.is_empty()).and_then(|d| {
                key[prefix_len..]
                    .find(d)
                    .map(|i| &key[..prefix_len + i + d.len()])
            });
            if let Some(cp) = common {
                if cp <= q.start_after || page.prefixes.last().map(String::as_str) == Some(cp) {
                    continue;
                }
                if page.objects.len() + page.prefixes.len() == q.max_keys {
                    page.truncated = true;
                    break;
                }
                page.prefixes.push(cp.to_owned());
                page.last = cp.to_owned();
                continue;
            }
            if page.objects.len() + page.prefixes.len() == q.max_keys {
                page.truncated = true;
                break;
            }
            let etag = match Record::decode(&info.attrs) {
                Ok(Record::Object(a)) => a.etag,
                _ => String::new(),
            };
            page.last = key.to_owned();
            page.objects.push(Object {
                key: Some(q.encode(key)),
                size: Some(info.size as i64),
                e_tag: Some(ETag::Strong(etag)),
                last_modified: Some(timestamp(info.created_ms)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            });
        }
        Ok(page)
    }
}

/// One uploaded part, from its signed record.
struct StoredPart {
    etag: String,
    checksum: Option<StoredChecksum>,
    info: ObjectInfo,
}

struct ListQuery<'a> {
    prefix: &'a str,
    delimiter: Option<&'a str>,
    start_after: &'a str,
    max_keys: usize,
    url_encode: bool,
}

impl<'a> ListQuery<'a> {
    /// A query from a listing request's common parameters.
    fn new(
        prefix: Option<&'a str>,
        delimiter: Option<&'a str>,
        start_after: &'a str,
        max: Option<i32>,
        encoding: Option<&EncodingType>,
    ) -> Self {
        Self {
            prefix: prefix.unwrap_or(""),
            delimiter,
            start_after,
            max_keys: max_keys(max),
            url_encode: encoding.is_some_and(|e| e.as_str() == EncodingType::URL),
        }
    }

    /// `s` as a listing returns it: with `EncodingType=url`, percent-encoded as S3 does
    /// (every byte but the unreserved characters and `/`).
    fn encode(&self, s: &str) -> String {
        if self.url_encode {
            urlencoding::encode(s).replace("%2F", "/")
        } else {
            s.to_owned()
        }
    }
}

#[derive(Default)]
struct ListPage {
    objects: Vec<Object>,
    prefixes: Vec<String>,
    truncated: bool,
    last: String,
}

fn max_keys(m: Option<i32>) -> usize {
    m.map_or(PAGE_KEYS_MAX, |m| (m.max(0) as usize).min(PAGE_KEYS_MAX))
}

fn no_such_bucket(bucket: &str) -> S3Error {
    s3_error!(NoSuchBucket, "no bucket named {bucket}")
}

fn no_such_upload() -> S3Error {
    s3_error!(NoSuchUpload, "no such multipart upload")
}

/// The store key of an object; S3 keys must fit the store's key limit.
fn object_key(bucket: &str, key: &str) -> S3Result<String> {
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "empty object key"));
    }
    if key.len() > OBJECT_KEY_BYTES_MAX {
        return Err(s3_error!(
            KeyTooLongError,
            "object keys are limited to {OBJECT_KEY_BYTES_MAX} bytes"
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(s3_error!(
            InvalidArgument,
            "object keys may not contain control characters"
        ));
    }
    Ok(format!("{OBJECT_PREFIX}{bucket}/{key}"))
}

/// Buckets are unversioned: the only version id there is, is "null" (the current one).
fn check_version(v: Option<&str>) -> S3Result<()> {
    match v {
        None | Some(NULL_VERSION) => Ok(()),
        Some(_) => Err(s3_error!(
            NoSuchVersion,
            "buckets are unversioned: the only version id is \"null\""
        )),
    }
}

fn part_key(upload_id: &str, part: i32) -> String {
    format!("{PART_PREFIX}{upload_id}/{part:05}")
}

/// The owner S3 lists: every access key of the gateway acts as one user, "rampart".
fn owner() -> Owner {
    Owner {
        display_name: Some("rampart".into()),
        id: Some("rampart".into()),
    }
}

/// `objects` with their owner filled in (ListObjects always lists it, ListObjectsV2 with
/// `fetch-owner=true`).
fn with_owner(mut objects: Vec<Object>) -> Vec<Object> {
    for o in &mut objects {
        o.owner = Some(owner());
    }
    objects
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

fn strip_etag(e: &ETag) -> &str {
    e.value().trim_matches('"')
}

/// Maps a store error to the S3 error a client expects.
fn store_error(e: StoreError) -> S3Error {
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
fn input_error(io: &io::Error) -> S3Error {
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

/// The request's `Content-MD5`, read from the header itself: `s3s` drops an empty one,
/// which S3 refuses like any other malformed digest.
fn content_md5(headers: &http::HeaderMap) -> S3Result<Option<[u8; 16]>> {
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

fn body_limit(len: Option<i64>, max: u64) -> S3Result<Option<u64>> {
    match len {
        Some(l) if l < 0 => Err(s3_error!(InvalidArgument, "negative Content-Length")),
        Some(l) if l as u64 > max => Err(s3_error!(
            EntityTooLarge,
            "request body larger than {max} bytes"
        )),
        l => Ok(l.map(|l| l as u64)),
    }
}

fn user_attrs(
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

/// The stored `Content-Type`, or S3's default for an object stored without one.
fn content_type_of(a: &ObjectAttrs) -> String {
    a.content_type
        .clone()
        .unwrap_or_else(|| "binary/octet-stream".to_owned())
}

fn http_date(t: &Timestamp) -> S3Result<String> {
    let mut out = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut out)
        .map_err(|_| s3_error!(InvalidArgument, "Expires is not a representable date"))?;
    String::from_utf8(out).map_err(|_| s3_error!(InternalError, "date is not UTF-8"))
}

/// The stored `Expires` as a response field (a record that does not parse gives none).
fn expires_of(a: &ObjectAttrs) -> Option<Timestamp> {
    a.expires
        .as_deref()
        .and_then(|e| Timestamp::parse(TimestampFormat::HttpDate, e).ok())
}

/// Sets the `checksum_*` fields of an S3 output from a stored checksum.
macro_rules! set_checksum {
    ($out:expr, $c:expr) => {{
        let c: Option<s3s::dto::Checksum> = $c;
        if let Some(c) = c {
            $out.checksum_crc32 = c.checksum_crc32;
            $out.checksum_crc32c = c.checksum_crc32c;
            $out.checksum_sha1 = c.checksum_sha1;
            $out.checksum_sha256 = c.checksum_sha256;
            $out.checksum_crc64nvme = c.checksum_crc64nvme;
            $out.checksum_type = c.checksum_type;
        }
    }};
}

fn opt_map(m: &BTreeMap<String, String>) -> Option<Metadata> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// The checksum a CreateMultipartUpload asks for: S3's defaults and combinations
/// (COMPOSITE unless CRC64NVME; FULL_OBJECT only for the CRCs).
fn upload_checksum(
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
fn part_checksum(
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
fn object_checksum(
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

/// What a write asks for that the gateway does not implement (issue 12: never accept
/// and silently ignore).
#[derive(Default)]
struct PutFeatures {
    /// `If-Match` / `If-None-Match`: the store's put has no compare-and-swap hook on the
    /// current version the gateway could use, so a create-only write cannot be atomic.
    conditional: bool,
    object_lock: bool,
    encryption: bool,
    /// A canned ACL other than `private`.
    acl: bool,
}

fn refuse_unimplemented(f: &PutFeatures) -> S3Result<()> {
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

/// The conditional-request headers of a read (RFC 9110 section 13.2.2 order, as S3 applies
/// them): `If-Match`, else `If-Unmodified-Since` (412 on failure); then `If-None-Match`,
/// else `If-Modified-Since` (304 on failure). Dates compare at whole seconds, as HTTP
/// dates carry no more.
#[derive(Clone, Copy)]
struct Conditions<'a> {
    if_match: Option<&'a ETagCondition>,
    if_none_match: Option<&'a ETagCondition>,
    if_modified_since: Option<&'a Timestamp>,
    if_unmodified_since: Option<&'a Timestamp>,
}

fn unix_secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

fn check_conditions(etag: &str, modified_ms: u64, c: Conditions<'_>) -> S3Result<()> {
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

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let i = req.input;
        let bucket = i.bucket;
        if let Some(why) = crate::names::bucket_name_problem(&bucket) {
            return Err(s3_error!(
                InvalidBucketName,
                "bucket name {bucket:?}: {why}"
            ));
        }
        let constraint = i
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            .map(|l| l.as_str().to_owned())
            .filter(|l| !l.is_empty());
        match self.require_bucket(&bucket).await {
            // As in S3's us-east-1 (the region without a location constraint), creating a
            // bucket one already owns succeeds; elsewhere it is a conflict.
            Ok(_) if constraint.as_deref().is_none_or(|l| l == "us-east-1") => {
                return Ok(S3Response::new(CreateBucketOutput {
                    location: Some(format!("/{bucket}")),
                }));
            }
            Ok(_) => {
                return Err(s3_error!(
                    BucketAlreadyOwnedByYou,
                    "bucket {bucket} already exists"
                ));
            }
            Err(e) if *e.code() == S3ErrorCode::NoSuchBucket => {}
            Err(e) => return Err(e),
        }
        self.store
            .put(
                &format!("{BUCKET_PREFIX}{bucket}"),
                tokio::io::empty(),
                match constraint {
                    // us-east-1 is the region without a constraint, as S3 lists it.
                    Some(location) if location != "us-east-1" => {
                        Record::BucketIn { location }.encode()
                    }
                    _ => Record::Bucket.encode(),
                },
                None,
            )
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        let objects = self
            .store
            .list(&format!("{OBJECT_PREFIX}{bucket}/"))
            .await
            .map_err(store_error)?;
        if !objects.is_empty() {
            return Err(s3_error!(BucketNotEmpty, "bucket {bucket} is not empty"));
        }
        self.store
            .delete(&format!("{BUCKET_PREFIX}{bucket}"))
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let info = self.require_bucket(&req.input.bucket).await?;
        let location = match Record::decode(&info.attrs) {
            Ok(Record::BucketIn { location }) => Some(BucketLocationConstraint::from(location)),
            _ => None,
        };
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: location,
        }))
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let i = req.input;
        if i.bucket_region.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "the gateway has one region; BucketRegion filtering is not implemented"
            ));
        }
        let max = match i.max_buckets {
            None => usize::MAX,
            Some(m @ 1..=BUCKETS_PAGE_MAX) => m as usize,
            Some(_) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "max-buckets must be between 1 and {BUCKETS_PAGE_MAX}"
                ));
            }
        };
        // Continuation tokens are the hex of the last bucket name returned.
        let after = match &i.continuation_token {
            None => String::new(),
            Some(t) => hex::decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| s3_error!(InvalidArgument, "invalid continuation token"))?,
        };
        let prefix = i.prefix.as_deref().unwrap_or("");
        let entries = self.store.list(BUCKET_PREFIX).await.map_err(store_error)?;
        let mut all: Vec<(String, u64)> = entries
            .into_iter()
            .filter(|i| {
                matches!(
                    Record::decode(&i.attrs),
                    Ok(Record::Bucket | Record::BucketIn { .. })
                )
            })
            .map(|i| (i.key[BUCKET_PREFIX.len()..].to_owned(), i.created_ms))
            .filter(|(name, _)| name.starts_with(prefix) && *name > after)
            .collect();
        all.sort();
        let truncated = all.len() > max;
        all.truncate(max);
        let next = truncated.then(|| hex::encode(&all[all.len() - 1].0));
        let buckets = all
            .into_iter()
            .map(|(name, created_ms)| Bucket {
                name: Some(name),
                creation_date: Some(timestamp(created_ms)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner()),
            continuation_token: next,
            prefix: i.prefix,
        }))
    }

    async fn put_object(
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
        let input = Checked::new(blob_reader(i.body), self.upload_bytes_max)
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

    async fn get_object(
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
        let task = tokio::spawn(async move {
            let _transfer = transfer;
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

    async fn head_object(
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

    async fn get_object_attributes(
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

    async fn delete_object(
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

    async fn delete_objects(
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

    async fn copy_object(
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

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let q = ListQuery::new(
            i.prefix.as_deref(),
            i.delimiter.as_deref(),
            i.marker.as_deref().unwrap_or(""),
            i.max_keys,
            i.encoding_type.as_ref(),
        );
        let page = self.list_page(&i.bucket, &q).await?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket.clone()),
            // S3 returns the v1 prefix as sent, and always a (maybe empty) marker.
            prefix: Some(q.prefix.to_owned()),
            marker: Some(q.encode(i.marker.as_deref().unwrap_or(""))),
            delimiter: q.delimiter.filter(|d| !d.is_empty()).map(|d| q.encode(d)),
            max_keys: Some(q.max_keys as i32),
            is_truncated: Some(page.truncated),
            next_marker: page.truncated.then(|| q.encode(&page.last)),
            common_prefixes: Some(
                page.prefixes
                    .iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(q.encode(p)),
                    })
                    .collect(),
            ),
            contents: Some(with_owner(page.objects)),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        // Continuation tokens are the hex of the last key or prefix returned.
        let token = match &i.continuation_token {
            None => None,
            Some(t) => Some(
                hex::decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| s3_error!(InvalidArgument, "invalid continuation token"))?,
            ),
        };
        let start_after = token.as_deref().or(i.start_after.as_deref()).unwrap_or("");
        let q = ListQuery::new(
            i.prefix.as_deref(),
            i.delimiter.as_deref(),
            start_after,
            i.max_keys,
            i.encoding_type.as_ref(),
        );
        let page = self.list_page(&i.bucket, &q).await?;
        let key_count = (page.objects.len() + page.prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket.clone()),
            prefix: Some(q.encode(q.prefix)),
            delimiter: q.delimiter.filter(|d| !d.is_empty()).map(|d| q.encode(d)),
            max_keys: Some(q.max_keys as i32),
            key_count: Some(key_count),
            is_truncated: Some(page.truncated),
            continuation_token: i.continuation_token.clone(),
            next_continuation_token: page.truncated.then(|| hex::encode(&page.last)),
            start_after: i.start_after.as_deref().map(|s| q.encode(s)),
            common_prefixes: Some(
                page.prefixes
                    .iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(q.encode(p)),
                    })
                    .collect(),
            ),
            contents: Some(if i.fetch_owner == Some(true) {
                with_owner(page.objects)
            } else {
                page.objects
            }),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    /// Buckets are unversioned: every object's one version is the current "null" one, and
    /// there are no delete markers. Listed so that version-aware tools (and cleanup
    /// scripts) see the bucket's objects.
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let i = req.input;
        if i.optional_object_attributes.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "x-amz-optional-object-attributes is not implemented"
            ));
        }
        // Each key has one version, so a version marker other than "null" names nothing;
        // "null" resumes after the key marker, like no version marker.
        if i.version_id_marker
            .as_deref()
            .is_some_and(|v| v != NULL_VERSION && !v.is_empty())
        {
            return Err(s3_error!(
                InvalidArgument,
                "buckets are unversioned: the only version id is \"null\""
            ));
        }
        let q = ListQuery::new(
            i.prefix.as_deref(),
            i.delimiter.as_deref(),
            i.key_marker.as_deref().unwrap_or(""),
            i.max_keys,
            i.encoding_type.as_ref(),
        );
        let page = self.list_page(&i.bucket, &q).await?;
        let versions = page
            .objects
            .into_iter()
            .map(|o| ObjectVersion {
                key: o.key,
                version_id: Some(NULL_VERSION.to_owned()),
                is_latest: Some(true),
                e_tag: o.e_tag,
                size: o.size,
                last_modified: o.last_modified,
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket.clone()),
            prefix: Some(q.encode(q.prefix)),
            delimiter: q.delimiter.filter(|d| !d.is_empty()).map(|d| q.encode(d)),
            key_marker: Some(q.encode(q.start_after)),
            version_id_marker: i.version_id_marker,
            max_keys: Some(q.max_keys as i32),
            is_truncated: Some(page.truncated),
            next_key_marker: page.truncated.then(|| q.encode(&page.last)),
            next_version_id_marker: page.truncated.then(|| NULL_VERSION.to_owned()),
            versions: Some(versions),
            common_prefixes: Some(
                page.prefixes
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

    async fn create_multipart_upload(
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

    async fn upload_part(
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
        let input = Checked::new(blob_reader(i.body), self.upload_bytes_max)
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

    async fn list_parts(
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

    async fn list_multipart_uploads(
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

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        self.upload(&i.upload_id, &i.bucket, &i.key).await?;
        self.drop_upload(&i.upload_id).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn complete_multipart_upload(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_are_bounded_and_clean() {
        assert_eq!(object_key("b", "k/x").unwrap(), "o/b/k/x");
        assert!(object_key("b", "").is_err());
        assert!(object_key("b", "a\nb").is_err());
        let long = "x".repeat(OBJECT_KEY_BYTES_MAX + 1);
        assert_eq!(
            *object_key("b", &long).unwrap_err().code(),
            S3ErrorCode::KeyTooLongError
        );
        // The longest bucket name plus the longest key still fits the store.
        let bucket = "b".repeat(63);
        let key = "k".repeat(OBJECT_KEY_BYTES_MAX);
        assert!(object_key(&bucket, &key).unwrap().len() <= KEY_BYTES_MAX);
    }

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
