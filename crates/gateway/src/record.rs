//! What the gateway stores in the store's signed per-version attributes.
//!
//! Every store entry the gateway writes carries one [`Record`], encoded as JSON inside a
//! versioned envelope (`{"v":1,"r":…}`). The store signs the attributes with the rest of
//! the version's metadata, so a record is only ever read back after its signature has
//! been verified; decoding is nevertheless strict (unknown fields and versions are
//! rejected) and bounded by [`rampart_store::meta::ATTRS_BYTES_MAX`].

use std::collections::BTreeMap;

use rampart_store::meta::ATTRS_BYTES_MAX;
use serde::{Deserialize, Serialize};

use crate::checksum::{Algorithm, StoredChecksum};

/// Current envelope version.
const RECORD_V1: u8 = 1;

/// S3 attributes of an object (or of an upload, before it completes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectAttrs {
    /// The S3 ETag without quotes: hex MD5 of the bytes for a single PUT,
    /// `hex(MD5(part MD5s))-N` for a multipart upload of `N` parts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
    /// `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// `Content-Disposition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    /// `Content-Language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// `Cache-Control`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// User metadata (`x-amz-meta-*`), names lower-cased.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Number of parts for a multipart object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
    /// The verified `x-amz-checksum-*` of the object, if the upload sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<StoredChecksum>,
    /// `Expires`, as the HTTP date the client sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The multipart upload this object was completed from (a retried Complete of that
    /// upload is answered again from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
}

/// The checksum a multipart upload was created with (`x-amz-checksum-algorithm`,
/// `x-amz-checksum-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadChecksum {
    /// Every part is checksummed with this algorithm.
    pub algorithm: Algorithm,
    /// The object gets a full-object checksum (else a composite one).
    pub full_object: bool,
}

/// One gateway entry in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Record {
    /// A bucket exists (its store entry has no content).
    Bucket,
    /// A bucket created with a location constraint, which `GetBucketLocation` returns.
    BucketIn {
        /// The constraint it was created with.
        location: String,
    },
    /// An object and its S3 attributes.
    Object(ObjectAttrs),
    /// A multipart upload in progress: where it will land and with which attributes.
    Upload {
        /// Target bucket.
        bucket: String,
        /// Target key.
        key: String,
        /// Attributes given at creation (the ETag is filled in at completion).
        attrs: ObjectAttrs,
        /// The checksum the upload was created with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<UploadChecksum>,
    },
    /// One uploaded part.
    Part {
        /// Hex MD5 of the part, without quotes.
        etag: String,
        /// The part's verified (or computed) additional checksum.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<StoredChecksum>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    v: u8,
    r: Record,
}

/// Why attributes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// Longer than the store's attribute limit.
    #[error("gateway record larger than {ATTRS_BYTES_MAX} bytes")]
    TooLarge,
    /// Not a gateway record of a known version.
    #[error("not a valid gateway record")]
    Malformed,
}

impl Record {
    /// Encodes the record for the store's attributes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&Envelope {
            v: RECORD_V1,
            r: self.clone(),
        })
        .expect("records serialise")
    }

    /// Decodes attributes written by [`encode`](Self::encode).
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > ATTRS_BYTES_MAX {
            return Err(RecordError::TooLarge);
        }
        let env: Envelope = serde_json::from_slice(bytes).map_err(|_| RecordError::Malformed)?;
        if env.v != RECORD_V1 {
            return Err(RecordError::Malformed);
        }
        Ok(env.r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attrs() -> impl Strategy<Value = ObjectAttrs> {
        (
            "[0-9a-f]{0,40}",
            proptest::option::of(".{0,40}"),
            proptest::option::of(".{0,20}"),
            proptest::collection::btree_map("[a-z0-9-]{1,20}", ".{0,40}", 0..5),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(
                |(etag, content_type, cache_control, metadata, parts)| ObjectAttrs {
                    etag,
                    content_type,
                    cache_control,
                    metadata,
                    parts,
                    checksum: parts.map(|p| StoredChecksum {
                        algorithm: Algorithm::Crc64Nvme,
                        value: format!("AAAAAAAAAAA={p}"),
                        composite: p % 2 == 0,
                    }),
                    expires: parts.map(|_| "Thu, 01 Jan 2026 00:00:00 GMT".into()),
                    ..Default::default()
                },
            )
    }

    fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            Just(Record::Bucket),
            "[a-z0-9-]{1,20}".prop_map(|location| Record::BucketIn { location }),
            attrs().prop_map(Record::Object),
            (".{1,30}", ".{1,60}", attrs(), any::<bool>()).prop_map(
                |(bucket, key, attrs, full_object)| Record::Upload {
                    bucket,
                    key,
                    attrs,
                    checksum: Some(UploadChecksum {
                        algorithm: Algorithm::Crc32,
                        full_object
                    }),
                }
            ),
            ("[0-9a-f]{32}", proptest::option::of("[A-Za-z0-9+/]{6}==")).prop_map(
                |(etag, value)| Record::Part {
                    etag,
                    checksum: value.map(|value| StoredChecksum {
                        algorithm: Algorithm::Sha1,
                        value,
                        composite: false,
                    }),
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(r in record()) {
            prop_assert_eq!(Record::decode(&r.encode()), Ok(r));
        }

        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Record::decode(&bytes);
        }
    }

    #[test]
    fn rejects_other_versions_unknown_fields_and_oversize() {
        assert_eq!(
            Record::decode(br#"{"v":2,"r":"bucket"}"#),
            Err(RecordError::Malformed)
        );
        assert_eq!(
            Record::decode(br#"{"v":1,"r":"bucket","x":1}"#),
            Err(RecordError::Malformed)
        );
        assert_eq!(
            Record::decode(br#"{"v":1,"r":{"part":{"etag":"a","size":1}}}"#),
            Err(RecordError::Malformed)
        );
        assert_eq!(
            Record::decode(br#"{"v":1,"r":"bucket"}"#),
            Ok(Record::Bucket)
        );
        let big = vec![b' '; ATTRS_BYTES_MAX + 1];
        assert_eq!(Record::decode(&big), Err(RecordError::TooLarge));
    }
}
