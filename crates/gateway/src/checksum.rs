//! S3's additional checksums (`x-amz-checksum-crc32`, `-crc32c`, `-sha1`, `-sha256`,
//! `-crc64nvme`): which one a request announces, in a header or an `aws-chunked` trailer,
//! and its verification against the bytes as they stream into the store.
//!
//! The digests are `s3s`'s own (`s3s::crypto`: `crc-fast` for the CRCs, RustCrypto's
//! `sha1` and `sha2`), so the gateway computes exactly what `s3s` and the SDKs compute.
//! A verified value is kept in the object's sealed record and returned on reads that ask
//! for it (`x-amz-checksum-mode: ENABLED`).

use base64::Engine as _;
use http::HeaderMap;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::dto::{Checksum, ChecksumAlgorithm, ChecksumType};
use s3s::{S3Result, TrailingHeaders, s3_error};
use serde::{Deserialize, Serialize};

use crate::body::BodyFault;

/// One of S3's checksum algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// CRC-32 (ISO-HDLC), 4 bytes.
    Crc32,
    /// CRC-32C (Castagnoli), 4 bytes.
    Crc32c,
    /// SHA-1, 20 bytes.
    Sha1,
    /// SHA-256, 32 bytes.
    Sha256,
    /// CRC-64/NVME, 8 bytes.
    Crc64Nvme,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Self; 5] = [
        Self::Crc32,
        Self::Crc32c,
        Self::Sha1,
        Self::Sha256,
        Self::Crc64Nvme,
    ];

    /// The S3 name (`CRC32`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => ChecksumAlgorithm::CRC32,
            Self::Crc32c => ChecksumAlgorithm::CRC32C,
            Self::Sha1 => ChecksumAlgorithm::SHA1,
            Self::Sha256 => ChecksumAlgorithm::SHA256,
            Self::Crc64Nvme => ChecksumAlgorithm::CRC64NVME,
        }
    }

    /// The header carrying the value (`x-amz-checksum-crc32`, …).
    pub fn header(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
        }
    }

    /// The algorithm named `name` (S3 name, any case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    fn from_header(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.header().eq_ignore_ascii_case(name))
    }

    /// Bytes of a digest.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Crc32 | Self::Crc32c => 4,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Crc64Nvme => 8,
        }
    }

    /// Whether S3 combines this algorithm's part checksums into a full-object checksum
    /// (the CRCs) or only a composite one (the SHAs).
    pub fn full_object_capable(self) -> bool {
        matches!(self, Self::Crc32 | Self::Crc32c | Self::Crc64Nvme)
    }

    /// A fresh hasher.
    pub fn hasher(self) -> Hasher {
        Hasher(match self {
            Self::Crc32 => Inner::Crc32(Crc32::new()),
            Self::Crc32c => Inner::Crc32c(Crc32c::new()),
            Self::Sha1 => Inner::Sha1(Sha1::new()),
            Self::Sha256 => Inner::Sha256(Sha256::new()),
            Self::Crc64Nvme => Inner::Crc64Nvme(Crc64Nvme::new()),
        })
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finalize()
    }

    /// The raw digest in `value` (base64 of the right length), else `InvalidRequest`
    /// naming the header or trailer (`source`) it came from.
    pub fn decode(self, value: &str, source: &str) -> S3Result<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .filter(|d| d.len() == self.digest_len())
            .ok_or_else(|| {
                s3_error!(
                    InvalidRequest,
                    "Value for {} {source} is invalid.",
                    self.header()
                )
            })
    }
}

enum Inner {
    Crc32(Crc32),
    Crc32c(Crc32c),
    Sha1(Sha1),
    Sha256(Sha256),
    Crc64Nvme(Crc64Nvme),
}

/// A running digest of one [`Algorithm`].
pub struct Hasher(Inner);

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            Inner::Crc32(h) => h.update(data),
            Inner::Crc32c(h) => h.update(data),
            Inner::Sha1(h) => h.update(data),
            Inner::Sha256(h) => h.update(data),
            Inner::Crc64Nvme(h) => h.update(data),
        }
    }

    /// The digest, big-endian for the CRCs (as S3 encodes them).
    pub fn finalize(self) -> Vec<u8> {
        match self.0 {
            Inner::Crc32(h) => h.finalize().to_vec(),
            Inner::Crc32c(h) => h.finalize().to_vec(),
            Inner::Sha1(h) => h.finalize().to_vec(),
            Inner::Sha256(h) => h.finalize().to_vec(),
            Inner::Crc64Nvme(h) => h.finalize().to_vec(),
        }
    }
}

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A verified checksum kept in an object's or a part's sealed record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredChecksum {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The value as S3 returns it: base64 of the digest, with `-N` for a composite
    /// checksum of `N` parts.
    pub value: String,
    /// A composite (checksum of the part checksums) rather than a full-object checksum.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub composite: bool,
}

impl StoredChecksum {
    /// A full-object checksum from its raw digest.
    pub fn full(algorithm: Algorithm, raw: &[u8]) -> Self {
        Self {
            algorithm,
            value: b64(raw),
            composite: false,
        }
    }

    /// The raw digest of a full-object (or part) checksum.
    pub fn raw(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.value)
            .ok()
    }

    /// The composite checksum of parts: the digest of their concatenated raw digests,
    /// suffixed with the part count, as S3 computes it.
    pub fn composite(algorithm: Algorithm, parts: &[Vec<u8>]) -> Self {
        let mut h = algorithm.hasher();
        for p in parts {
            h.update(p);
        }
        Self {
            algorithm,
            value: format!("{}-{}", b64(&h.finalize()), parts.len()),
            composite: true,
        }
    }

    /// The response fields for this checksum.
    pub fn to_dto(&self) -> Checksum {
        let v = Some(self.value.clone());
        let mut c = Checksum {
            checksum_type: Some(ChecksumType::from_static(if self.composite {
                ChecksumType::COMPOSITE
            } else {
                ChecksumType::FULL_OBJECT
            })),
            ..Default::default()
        };
        match self.algorithm {
            Algorithm::Crc32 => c.checksum_crc32 = v,
            Algorithm::Crc32c => c.checksum_crc32c = v,
            Algorithm::Sha1 => c.checksum_sha1 = v,
            Algorithm::Sha256 => c.checksum_sha256 = v,
            Algorithm::Crc64Nvme => c.checksum_crc64nvme = v,
        }
        c
    }
}

/// Where the expected value of a checksum comes from.
#[derive(Debug)]
enum Want {
    /// Nothing to compare: the checksum is computed for the record only.
    Compute,
    /// A header's value (raw digest).
    Value(Vec<u8>),
    /// The `aws-chunked` trailer of that name, read once the body has ended.
    Trailer(TrailingHeaders),
}

/// A checksum to compute over an upload and, unless [`Check::compute`], to verify.
#[derive(Debug)]
pub struct Check {
    algorithm: Algorithm,
    want: Want,
}

impl Check {
    /// Computes `algorithm` over the body without verifying it.
    pub fn compute(algorithm: Algorithm) -> Self {
        Self {
            algorithm,
            want: Want::Compute,
        }
    }

    /// Verifies the body against `raw`.
    pub fn value(algorithm: Algorithm, raw: Vec<u8>) -> Self {
        Self {
            algorithm,
            want: Want::Value(raw),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Checks the digest of the whole body against what the request announced.
    pub fn verify(&self, got: &[u8]) -> Result<(), BodyFault> {
        let want = match &self.want {
            Want::Compute => return Ok(()),
            Want::Value(v) => v.clone(),
            Want::Trailer(t) => {
                let header = self.algorithm.header();
                let value = t
                    .read(|h| h.get(header).map(|v| v.to_str().map(str::to_owned)))
                    .flatten()
                    .ok_or(BodyFault::MissingTrailer(header))?
                    .map_err(|_| BodyFault::InvalidChecksum(header))?;
                self.algorithm
                    .decode(&value, "trailer")
                    .map_err(|_| BodyFault::InvalidChecksum(header))?
            }
        };
        // Checksums are not secrets: a plain comparison is fine.
        if want == got {
            Ok(())
        } else {
            Err(BodyFault::ChecksumMismatch(self.algorithm.name()))
        }
    }
}

/// The checksum a PUT or UploadPart request announces: at most one `x-amz-checksum-*`
/// header, or an `x-amz-trailer` naming one (which needs an `aws-chunked` body with
/// trailers, whose trailers `s3s` verifies and hands over in `trailers`), matching
/// `x-amz-sdk-checksum-algorithm` when that is sent. Malformed or contradictory
/// announcements are refused with `InvalidRequest` (or `BadDigest`, as S3 does for an
/// SDK algorithm that differs from the value's).
pub fn announced(
    headers: &HeaderMap,
    trailers: Option<&TrailingHeaders>,
) -> S3Result<Option<Check>> {
    let mut found: Option<Check> = None;
    for a in Algorithm::ALL {
        let mut values = headers.get_all(a.header()).iter();
        let Some(v) = values.next() else { continue };
        if found.is_some() || values.next().is_some() {
            return Err(multiple());
        }
        let v = v.to_str().map_err(|_| {
            s3_error!(
                InvalidRequest,
                "Value for {} header is invalid.",
                a.header()
            )
        })?;
        found = Some(Check::value(a, a.decode(v, "header")?));
    }
    if let Some(t) = headers.get("x-amz-trailer") {
        let name = t.to_str().unwrap_or("").trim();
        let a = Algorithm::from_header(name).ok_or_else(|| {
            s3_error!(
                InvalidRequest,
                "the x-amz-trailer header names no supported checksum (x-amz-checksum-crc32, -crc32c, -sha1, -sha256 or -crc64nvme)"
            )
        })?;
        if found.is_some() {
            return Err(multiple());
        }
        let trailers = trailers.ok_or_else(|| {
            s3_error!(
                InvalidRequest,
                "x-amz-trailer needs an aws-chunked body with trailers (x-amz-content-sha256: STREAMING-*-TRAILER)"
            )
        })?;
        found = Some(Check {
            algorithm: a,
            want: Want::Trailer(trailers.clone()),
        });
    }
    if let Some(sdk) = headers.get("x-amz-sdk-checksum-algorithm") {
        let sdk = sdk
            .to_str()
            .ok()
            .and_then(Algorithm::from_name)
            .ok_or_else(|| {
                s3_error!(
                    InvalidRequest,
                    "x-amz-sdk-checksum-algorithm names no supported checksum algorithm"
                )
            })?;
        match &found {
            None => {
                return Err(s3_error!(
                    InvalidRequest,
                    "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or x-amz-trailer headers were found."
                ));
            }
            Some(c) if c.algorithm != sdk => {
                return Err(s3_error!(
                    BadDigest,
                    "x-amz-sdk-checksum-algorithm {} differs from the checksum sent ({})",
                    sdk.name(),
                    c.algorithm.name()
                ));
            }
            Some(_) => {}
        }
    }
    Ok(found)
}

fn multiple() -> s3s::S3Error {
    s3_error!(
        InvalidRequest,
        "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
    )
}

/// The whole-object checksum a CompleteMultipartUpload request announces, as a raw
/// digest for a full-object checksum or the `base64-N` text of a composite one.
pub fn announced_value(headers: &HeaderMap) -> S3Result<Option<(Algorithm, String)>> {
    let mut found = None;
    for a in Algorithm::ALL {
        let mut values = headers.get_all(a.header()).iter();
        let Some(v) = values.next() else { continue };
        if found.is_some() || values.next().is_some() {
            return Err(multiple());
        }
        let v = v.to_str().map_err(|_| {
            s3_error!(
                InvalidRequest,
                "Value for {} header is invalid.",
                a.header()
            )
        })?;
        found = Some((a, v.trim().to_owned()));
    }
    Ok(found)
}

/// The checksum of one algorithm among the fields of a listed part, if any.
pub fn field_of(
    a: Algorithm,
    crc32: Option<&str>,
    crc32c: Option<&str>,
    sha1: Option<&str>,
    sha256: Option<&str>,
    crc64nvme: Option<&str>,
) -> Option<String> {
    match a {
        Algorithm::Crc32 => crc32,
        Algorithm::Crc32c => crc32c,
        Algorithm::Sha1 => sha1,
        Algorithm::Sha256 => sha256,
        Algorithm::Crc64Nvme => crc64nvme,
    }
    .map(str::to_owned)
}

/// Whether a request asked for checksums in the response (`x-amz-checksum-mode: ENABLED`).
pub fn mode_enabled(mode: Option<&s3s::dto::ChecksumMode>) -> bool {
    mode.is_some_and(|m| {
        m.as_str()
            .eq_ignore_ascii_case(s3s::dto::ChecksumMode::ENABLED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard check inputs of the CRC catalogue ("123456789"), and the SHA test
    /// vectors of FIPS 180 ("abc").
    #[test]
    fn digests_match_published_check_values() {
        let check = b"123456789";
        assert_eq!(hex::encode(Algorithm::Crc32.digest(check)), "cbf43926");
        assert_eq!(hex::encode(Algorithm::Crc32c.digest(check)), "e3069283");
        assert_eq!(
            hex::encode(Algorithm::Crc64Nvme.digest(check)),
            "ae8b14860a799888"
        );
        assert_eq!(
            hex::encode(Algorithm::Sha1.digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex::encode(Algorithm::Sha256.digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        for a in Algorithm::ALL {
            assert_eq!(a.digest(b"").len(), a.digest_len());
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn announcements_are_parsed_strictly() {
        let crc = b64(&Algorithm::Crc32.digest(b"x"));
        let c = announced(&headers(&[("x-amz-checksum-crc32", &crc)]), None)
            .unwrap()
            .unwrap();
        assert_eq!(c.algorithm(), Algorithm::Crc32);
        assert!(c.verify(&Algorithm::Crc32.digest(b"x")).is_ok());
        assert!(matches!(
            c.verify(&Algorithm::Crc32.digest(b"y")),
            Err(BodyFault::ChecksumMismatch("CRC32"))
        ));
        assert!(announced(&headers(&[]), None).unwrap().is_none());
        let code =
            |h: &[(&'static str, &str)]| announced(&headers(h), None).unwrap_err().code().clone();
        // Wrong length, not base64, two values, two algorithms.
        assert_eq!(
            code(&[("x-amz-checksum-crc32", "AAAA")]),
            s3s::S3ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(&[("x-amz-checksum-sha256", "!!")]),
            s3s::S3ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(&[
                ("x-amz-checksum-crc32", &crc),
                ("x-amz-checksum-crc32", &crc)
            ]),
            s3s::S3ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(&[
                ("x-amz-checksum-crc32", &crc),
                ("x-amz-checksum-crc32c", &crc)
            ]),
            s3s::S3ErrorCode::InvalidRequest
        );
        // An SDK algorithm without a value, or naming another algorithm.
        assert_eq!(
            code(&[("x-amz-sdk-checksum-algorithm", "CRC32")]),
            s3s::S3ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(&[
                ("x-amz-sdk-checksum-algorithm", "SHA1"),
                ("x-amz-checksum-crc32", &crc)
            ]),
            s3s::S3ErrorCode::BadDigest
        );
        // A trailer without an aws-chunked body, or naming no checksum.
        assert_eq!(
            code(&[("x-amz-trailer", "x-amz-checksum-crc32")]),
            s3s::S3ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(&[("x-amz-trailer", "x-amz-meta-a")]),
            s3s::S3ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn composite_is_the_checksum_of_the_part_checksums() {
        let parts = [
            Algorithm::Sha256.digest(b"a"),
            Algorithm::Sha256.digest(b"b"),
        ];
        let c = StoredChecksum::composite(Algorithm::Sha256, &parts);
        let want = b64(&Algorithm::Sha256.digest(&[parts[0].clone(), parts[1].clone()].concat()));
        assert_eq!(c.value, format!("{want}-2"));
        assert_eq!(
            c.to_dto().checksum_type.unwrap().as_str(),
            ChecksumType::COMPOSITE
        );
    }
}
