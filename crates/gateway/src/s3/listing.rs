//! Listings: ListObjects (v1), ListObjectsV2 and ListObjectVersions, all from the
//! store's signed metadata.
//!
//! # Invariants
//!
//! - **Names and sizes come from verified, signed metadata** (the store's `list`), never
//!   from a cloud's own listing (ADR 0402).
//! - Pages are sorted by key and hold at most `max-keys` entries (objects plus common
//!   prefixes), never more than [`PAGE_KEYS_MAX`]; a page resumes strictly after its
//!   marker or token, so paging lists every key exactly once.
//! - With `EncodingType=url`, every key, prefix, delimiter and marker returned is
//!   percent-encoded as S3 does (keeping `/`).
//! - Buckets are unversioned: each object is listed once, as version "null".

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use crate::record::Record;

use super::errors::*;
use super::*;

impl Gateway {
    /// Sorted keys of a bucket after `start_after`, grouped by `delimiter`, at most
    /// `max_keys` entries (objects plus common prefixes).
    pub(super) async fn list_page(&self, bucket: &str, q: &ListQuery<'_>) -> S3Result<ListPage> {
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

    pub(super) async fn serve_list_objects(
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

    pub(super) async fn serve_list_objects_v2(
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
    pub(super) async fn serve_list_object_versions(
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
}

pub(super) struct ListQuery<'a> {
    pub(super) prefix: &'a str,
    pub(super) delimiter: Option<&'a str>,
    pub(super) start_after: &'a str,
    pub(super) max_keys: usize,
    pub(super) url_encode: bool,
}

impl<'a> ListQuery<'a> {
    /// A query from a listing request's common parameters.
    pub(super) fn new(
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
    pub(super) fn encode(&self, s: &str) -> String {
        if self.url_encode {
            urlencoding::encode(s).replace("%2F", "/")
        } else {
            s.to_owned()
        }
    }
}

#[derive(Default)]
pub(super) struct ListPage {
    objects: Vec<Object>,
    prefixes: Vec<String>,
    truncated: bool,
    last: String,
}

pub(super) fn max_keys(m: Option<i32>) -> usize {
    m.map_or(PAGE_KEYS_MAX, |m| (m.max(0) as usize).min(PAGE_KEYS_MAX))
}

/// `objects` with their owner filled in (ListObjects always lists it, ListObjectsV2 with
/// `fetch-owner=true`).
pub(super) fn with_owner(mut objects: Vec<Object>) -> Vec<Object> {
    for o in &mut objects {
        o.owner = Some(owner());
    }
    objects
}
