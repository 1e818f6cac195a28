//! The `s3s::S3` implementation: S3 operations mapped onto the cloud-of-clouds store.
//!
//! One module per part of the S3 API, each stating its invariants: [`buckets`],
//! object writes ([`write`]: put, copy, delete), object reads ([`read`]: get, head,
//! attributes, conditional requests), [`listing`], [`multipart`] uploads, and
//! [`errors`] (error mapping and the refusal of features not implemented). Each S3
//! operation is a `serve_*` method of [`Gateway`] in its module; the `S3` trait impl
//! here only dispatches to them.
//!
//! # Invariants
//!
//! - Every bucket, object, upload and part is a store entry under its own prefix
//!   ([`BUCKET_PREFIX`], [`OBJECT_PREFIX`], [`UPLOAD_PREFIX`], [`PART_PREFIX`]) whose
//!   signed attributes say what it is; an entry whose record does not decode as the
//!   expected kind is never served as one.
//! - Object keys are non-empty, free of control characters and fit the store's key
//!   limit ([`OBJECT_KEY_BYTES_MAX`]) with the longest bucket name.
//! - At most `transfers_max` object transfers (store reads and writes) run at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rampart_store::meta::KEY_BYTES_MAX;
use rampart_store::{CloudOfClouds, ObjectInfo, StoreError};
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::blob_reader;
use crate::rate::{MinRate, RateLimited};
use crate::record::{ObjectAttrs, Record};

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
    min_rate: MinRate,
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
            min_rate: MinRate::OFF,
        }
    }

    /// Aborts object transfers whose client sends or reads slower than `rate`
    /// ([`crate::rate`]); off unless set.
    pub fn with_min_body_rate(mut self, rate: MinRate) -> Self {
        self.min_rate = rate;
        self
    }

    /// A client's request body, held to the minimum body rate.
    fn client_body(
        &self,
        body: Option<StreamingBlob>,
    ) -> RateLimited<impl tokio::io::AsyncRead + Unpin + Send> {
        RateLimited::new(blob_reader(body), self.min_rate)
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

/// The owner S3 lists: every access key of the gateway acts as one user, "rampart".
fn owner() -> Owner {
    Owner {
        display_name: Some("rampart".into()),
        id: Some("rampart".into()),
    }
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

fn strip_etag(e: &ETag) -> &str {
    e.value().trim_matches('"')
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

mod buckets;
mod errors;
mod listing;
mod multipart;
mod read;
mod write;

use errors::*;

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.serve_create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.serve_delete_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.serve_head_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.serve_get_bucket_location(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.serve_list_buckets(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.serve_put_object(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.serve_get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.serve_head_object(req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        self.serve_get_object_attributes(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.serve_delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.serve_delete_objects(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.serve_copy_object(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.serve_list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.serve_list_objects_v2(req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        self.serve_list_object_versions(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.serve_create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.serve_upload_part(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.serve_list_parts(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.serve_list_multipart_uploads(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.serve_abort_multipart_upload(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.serve_complete_multipart_upload(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::S3ErrorCode;

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
}
