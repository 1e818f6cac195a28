//! Bucket operations: create, delete, head, location, and ListBuckets.
//!
//! # Invariants
//!
//! - A bucket is the store entry `b/<name>` whose signed record is [`Record::Bucket`] or
//!   [`Record::BucketIn`]; nothing else counts as a bucket, whatever a cloud lists.
//! - Names are checked ([`crate::names`]) before anything is stored.
//! - Re-creating a bucket one owns succeeds in us-east-1 (no location constraint), as in
//!   S3, and is `BucketAlreadyOwnedByYou` elsewhere; it never writes a second record.
//! - A bucket is deleted only when the signed listing of its objects is empty.
//! - ListBuckets pages are bounded by `max-buckets` ([`BUCKETS_PAGE_MAX`]).

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use crate::record::Record;

use super::errors::*;
use super::*;

impl Gateway {
    pub(super) async fn serve_create_bucket(
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

    pub(super) async fn serve_delete_bucket(
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

    pub(super) async fn serve_head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    pub(super) async fn serve_get_bucket_location(
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

    pub(super) async fn serve_list_buckets(
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
}
