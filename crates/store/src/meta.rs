//! Signed metadata and manifests: the only things a reader trusts.
//!
//! Each data unit (a user key) has one **metadata** object per cloud. It lists the unit's
//! versions, newest first, and is signed with Ed25519 by a trusted writer. Each version
//! names an immutable blob and binds it by the digest of its **manifest**, which in turn
//! binds every shard of every segment (and, for DepSky-CA, every key share) by digest.
//! Nothing a cloud returns is used unless it hashes to a value reached from a valid
//! signature.
//!
//! Encodings are canonical (see the private `wire` module); decoding checks every length against a
//! named limit before allocating, and never panics on hostile bytes.

use std::fmt;

use rampart_crypto::hash::Digest;
use rampart_crypto::sign::{SIGNATURE_LEN, SigningKey, VerifyingKey};

use crate::StoreError;
use crate::wire::{Reader, Writer};

/// Magic bytes that open a metadata object.
const META_MAGIC: &[u8; 4] = b"RMPM";
/// Magic bytes that open a manifest.
const MANIFEST_MAGIC: &[u8; 4] = b"RMPF";
/// Current encoding version of both formats.
const FORMAT_V1: u8 = 1;
/// Domain separator for metadata signatures.
const META_SIGN_DOMAIN: &[u8] = b"rampart-store/metadata/v1\0";
/// Domain separator for [`VersionEntry::content_tag`].
const ENTRY_TAG_DOMAIN: &[u8] = b"rampart-store/entry-tag/v1\0";

/// Most versions one metadata object lists. Older ones are dropped by the writer and
/// their blobs collected by `gc`. Bounds a metadata object to about 64 × 14 KiB.
pub const VERSIONS_MAX: usize = 64;
/// Longest user key, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;
/// Longest opaque attribute blob per version (content type, user metadata), in bytes.
pub const ATTRS_BYTES_MAX: usize = 8 * 1024;
/// Longest attribute blob a caller may pass: attributes are sealed (AES-256-GCM under the
/// namespace key, 12-byte nonce and 16-byte tag) before they enter the metadata.
pub const ATTRS_PLAIN_BYTES_MAX: usize = ATTRS_BYTES_MAX - 12 - 16;
/// Manifests up to this size are stored inside the metadata, saving a round trip.
pub const MANIFEST_INLINE_MAX: usize = 4 * 1024;
/// Largest metadata object accepted from a cloud.
pub const META_BYTES_MAX: usize = 1024 * 1024;
/// Most clouds in one store.
pub const CLOUDS_MAX: usize = 16;
/// Most segments in one object (256 GiB at the default 4 MiB segment size).
pub const SEGMENTS_MAX: u64 = 65_536;
/// Largest segment size.
pub const SEGMENT_BYTES_MAX: u32 = 64 * 1024 * 1024;
/// Largest manifest: header plus one digest per shard and per key share.
pub const MANIFEST_BYTES_MAX: usize = 64 + (SEGMENTS_MAX as usize + 1) * CLOUDS_MAX * 32;
/// Length of an encrypted key name: nonce + name + tag.
const ENCRYPTED_NAME_BYTES_MAX: usize = KEY_BYTES_MAX + 12 + 16;

const _: () = assert!(
    VERSIONS_MAX * (ATTRS_BYTES_MAX + MANIFEST_INLINE_MAX + ENCRYPTED_NAME_BYTES_MAX + 256)
        <= META_BYTES_MAX
);

/// Length of a data key wrapped under the owner's key ([`Protocol::Sealed`]).
pub const WRAPPED_KEY_LEN: usize =
    rampart_crypto::aead::KEY_LEN + rampart_crypto::aead::SEAL_OVERHEAD;

/// Which protocol stored a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// DepSky-A: every cloud holds a full plaintext replica; integrity and availability
    /// only. For data that is not confidential.
    Replicated,
    /// DepSky-CA: AES-256-GCM with a fresh key per version, Reed–Solomon `k = f+1` of
    /// `n`, the key split with Shamir `k = f+1`.
    Confidential,
    /// A single encrypted backend (`n = 1`, `f = 0`): segments sealed with AES-256-GCM
    /// under a fresh key per version as in DepSky-CA, but the key is wrapped under a key
    /// derived from the owner's namespace secret and stored in each cloud's blob header.
    /// Confidentiality and integrity rest on the owner's keys; availability on one cloud.
    Sealed,
}

impl Protocol {
    fn code(self) -> u8 {
        match self {
            Protocol::Replicated => 0,
            Protocol::Confidential => 1,
            Protocol::Sealed => 2,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Protocol::Replicated),
            1 => Some(Protocol::Confidential),
            2 => Some(Protocol::Sealed),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Replicated => "DepSky-A",
            Protocol::Confidential => "DepSky-CA",
            Protocol::Sealed => "sealed single backend",
        })
    }
}

/// A version number. It orders by counter, then by writer key, then by the digest of the
/// signed entry, and so names its writer and identifies its content: two writers sharing
/// one key that race to the same counter produce two different versions, ordered the same
/// way by every reader (ADR 0006).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Version {
    /// Monotonic counter: one more than the highest version the writer saw.
    pub counter: u64,
    /// Public key of the writer that created it.
    pub writer: [u8; 32],
    /// [`VersionEntry::content_tag`] of the entry: a digest of everything the entry says
    /// besides its counter and writer (timestamp, sealed name, blob reference, attributes).
    /// Not stored: every reader recomputes it from the signed bytes.
    pub tag: [u8; TAG_LEN],
}

/// Length of [`Version::tag`].
pub const TAG_LEN: usize = 16;

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v{}.{}.{}",
            self.counter,
            &hex::encode(self.writer)[..8],
            &hex::encode(self.tag)[..8]
        )
    }
}

/// Where a version's bytes live and how they are bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// Protocol used.
    pub protocol: Protocol,
    /// Random identifier of the immutable blob holding the shards.
    pub blob_id: [u8; 16],
    /// Plaintext length in bytes.
    pub size: u64,
    /// `BLAKE3-keyed(content key, blob_id ‖ BLAKE3(plaintext))`, the content key derived
    /// from the namespace secret; checked after a full read. Never the unkeyed digest: clouds would
    /// use it to confirm guesses of the plaintext.
    pub content_digest: Digest,
    /// BLAKE3 of the encoded manifest.
    pub manifest_digest: Digest,
    /// The manifest itself when it is small (at most [`MANIFEST_INLINE_MAX`] bytes).
    pub manifest_inline: Option<Vec<u8>>,
    /// Attributes for higher layers, sealed under the namespace key (empty when there are
    /// none), at most [`ATTRS_BYTES_MAX`] bytes.
    pub attrs: Vec<u8>,
}

/// One version of a data unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionEntry {
    /// Its version number.
    pub version: Version,
    /// Writer's wall-clock time in ms since the Unix epoch (informational only).
    pub created_ms: u64,
    /// The user key, sealed under the namespace key so clouds never see names.
    pub encrypted_name: Vec<u8>,
    /// The object, or `None` for a deletion marker (tombstone).
    pub object: Option<ObjectRef>,
}

impl VersionEntry {
    /// The digest that [`Version::tag`] must hold for this entry: BLAKE3 (domain-separated)
    /// of the entry's canonical encoding without its counter and writer, truncated to
    /// [`TAG_LEN`] bytes. A fresh blob id and a fresh name nonce make it differ per write.
    pub fn content_tag(&self) -> [u8; TAG_LEN] {
        let mut w = Writer::default();
        w.raw(ENTRY_TAG_DOMAIN);
        encode_entry_content(&mut w, self);
        let d = Digest::of(&w.buf);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&d.as_bytes()[..TAG_LEN]);
        tag
    }

    /// Sets [`Version::tag`] from the entry's content; call after any change to it.
    pub fn seal_tag(&mut self) {
        self.version.tag = self.content_tag();
    }
}

/// Everything an entry encodes after its counter and writer.
fn encode_entry_content(w: &mut Writer, e: &VersionEntry) {
    w.u64(e.created_ms);
    w.bytes(&e.encrypted_name);
    match &e.object {
        None => {
            w.u8(0);
        }
        Some(o) => {
            w.u8(1).u8(o.protocol.code()).raw(&o.blob_id).u64(o.size);
            w.raw(o.content_digest.as_bytes())
                .raw(o.manifest_digest.as_bytes());
            w.bytes(o.manifest_inline.as_deref().unwrap_or(&[]));
            w.u8(o.manifest_inline.is_some() as u8);
            w.bytes(&o.attrs);
        }
    }
}

/// Verified metadata of one data unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// Store this metadata belongs to (stops replay across stores).
    pub store_id: [u8; 16],
    /// Keyed hash of the user key (stops replay across keys).
    pub name_id: [u8; 32],
    /// Versions, newest first, strictly decreasing.
    pub entries: Vec<VersionEntry>,
    /// Who signed it.
    pub signer: VerifyingKey,
}

impl Metadata {
    /// The newest version.
    pub fn latest(&self) -> &VersionEntry {
        // Decoding rejects empty entry lists and `sign` asserts non-emptiness.
        &self.entries[0]
    }

    fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(META_MAGIC)
            .u8(FORMAT_V1)
            .raw(&self.store_id)
            .raw(&self.name_id);
        w.u32(self.entries.len() as u32);
        for e in &self.entries {
            w.u64(e.version.counter).raw(&e.version.writer);
            encode_entry_content(&mut w, e);
        }
        w.raw(&self.signer.to_bytes());
        w.buf
    }

    /// Encodes and signs. `signer` in `self` must be `key`'s public key.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        assert!(
            !self.entries.is_empty(),
            "metadata always lists at least one version"
        );
        assert!(self.entries.len() <= VERSIONS_MAX);
        assert!(self.entries.windows(2).all(|w| w[0].version > w[1].version));
        assert!(
            self.entries
                .iter()
                .all(|e| e.version.tag == e.content_tag()),
            "every version's tag is its entry's digest"
        );
        assert_eq!(self.signer, key.verifying_key());
        let mut body = self.encode_body();
        let sig = key.sign(&signed_message(&body));
        body.extend_from_slice(&sig);
        assert!(body.len() <= META_BYTES_MAX);
        body
    }

    /// Parses metadata from a cloud and checks everything: format, limits, ordering, the
    /// binding to `store_id` and `name_id`, that the signer is trusted, and the signature.
    pub fn decode_verified(
        bytes: &[u8],
        store_id: &[u8; 16],
        name_id: &[u8; 32],
        trusted: &[VerifyingKey],
    ) -> Result<Self, StoreError> {
        let meta = Self::decode_unverified(bytes)?;
        if &meta.store_id != store_id {
            return Err(StoreError::Forged {
                reason: "metadata belongs to another store",
            });
        }
        if &meta.name_id != name_id {
            return Err(StoreError::Forged {
                reason: "metadata belongs to another key",
            });
        }
        if !trusted.contains(&meta.signer) {
            return Err(StoreError::Forged {
                reason: "metadata signed by an untrusted key",
            });
        }
        let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let sig: [u8; SIGNATURE_LEN] = sig.try_into().expect("split_at gives exactly 64 bytes");
        meta.signer
            .verify(&signed_message(body), &sig)
            .map_err(|_| StoreError::Forged {
                reason: "metadata signature does not verify",
            })?;
        Ok(meta)
    }

    /// Parses without checking the signature or binding. Only for fault injection, fuzzing
    /// and diagnostics; never trust the result.
    pub fn decode_unverified(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() > META_BYTES_MAX {
            return Err(StoreError::Malformed {
                what: "metadata",
                reason: "larger than its limit",
            });
        }
        if bytes.len() < SIGNATURE_LEN {
            return Err(StoreError::Malformed {
                what: "metadata",
                reason: "truncated",
            });
        }
        let mut r = Reader::new(&bytes[..bytes.len() - SIGNATURE_LEN], "metadata");
        let bad = |reason| StoreError::Malformed {
            what: "metadata",
            reason,
        };
        if r.take(4)? != META_MAGIC {
            return Err(bad("bad magic"));
        }
        if r.u8()? != FORMAT_V1 {
            return Err(bad("unsupported format version"));
        }
        let store_id = r.array()?;
        let name_id = r.array()?;
        let count = r.u32()? as usize;
        if count == 0 || count > VERSIONS_MAX {
            return Err(bad("version count out of range"));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let counter = r.u64()?;
            let writer = r.array()?;
            let created_ms = r.u64()?;
            let encrypted_name = r.bytes(ENCRYPTED_NAME_BYTES_MAX)?.to_vec();
            let object = match r.u8()? {
                0 => None,
                1 => {
                    let protocol = Protocol::from_code(r.u8()?).ok_or(bad("unknown protocol"))?;
                    let blob_id = r.array()?;
                    let size = r.u64()?;
                    let content_digest = Digest(r.array()?);
                    let manifest_digest = Digest(r.array()?);
                    let inline = r.bytes(MANIFEST_INLINE_MAX)?.to_vec();
                    let manifest_inline = match r.u8()? {
                        0 if inline.is_empty() => None,
                        1 => Some(inline),
                        _ => return Err(bad("bad inline-manifest flag")),
                    };
                    let attrs = r.bytes(ATTRS_BYTES_MAX)?.to_vec();
                    Some(ObjectRef {
                        protocol,
                        blob_id,
                        size,
                        content_digest,
                        manifest_digest,
                        manifest_inline,
                        attrs,
                    })
                }
                _ => return Err(bad("bad entry kind")),
            };
            let mut entry = VersionEntry {
                version: Version {
                    counter,
                    writer,
                    tag: [0; TAG_LEN],
                },
                created_ms,
                encrypted_name,
                object,
            };
            // The tag is derived, never read: metadata written before it existed decodes
            // unchanged, and a reader's order depends only on signed bytes.
            entry.seal_tag();
            entries.push(entry);
        }
        if !entries.windows(2).all(|w| w[0].version > w[1].version) {
            return Err(bad("versions not strictly decreasing"));
        }
        let signer = VerifyingKey::from_bytes(&r.array()?)
            .map_err(|_| bad("signer is not a valid public key"))?;
        r.finish()?;
        Ok(Self {
            store_id,
            name_id,
            entries,
            signer,
        })
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(META_SIGN_DOMAIN.len() + body.len());
    m.extend_from_slice(META_SIGN_DOMAIN);
    m.extend_from_slice(body);
    m
}

/// Layout and digests of one blob: what every shard and key share must hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The blob this manifest describes.
    pub blob_id: [u8; 16],
    /// Protocol used.
    pub protocol: Protocol,
    /// Plaintext length.
    pub size: u64,
    /// Plaintext bytes per segment (the last may be shorter).
    pub segment_size: u32,
    /// Shards needed to rebuild a segment.
    pub k: u8,
    /// Number of clouds (shards per segment).
    pub n: u8,
    /// Digest of each cloud's blob header: its key share (DepSky-CA) or the wrapped key
    /// (sealed); empty for DepSky-A.
    pub share_digests: Vec<Digest>,
    /// Digest of shard `cloud` of segment `s` at index `s * n + cloud`.
    pub shard_digests: Vec<Digest>,
}

impl Manifest {
    /// Number of segments: at least one, so even an empty object has a shard per cloud.
    pub fn segments(&self) -> u64 {
        segment_count(self.size, self.segment_size)
    }

    /// Plaintext bytes in segment `s`.
    pub fn segment_plain_len(&self, s: u64) -> usize {
        let start = s * self.segment_size as u64;
        (self.size.saturating_sub(start)).min(self.segment_size as u64) as usize
    }

    /// Bytes of each shard of segment `s`.
    pub fn shard_len(&self, s: u64) -> usize {
        shard_len_for(self.protocol, self.segment_plain_len(s), self.k as usize)
    }

    /// Bytes before the first shard in each cloud's blob: the key share for DepSky-CA,
    /// the wrapped key for [`Protocol::Sealed`].
    pub fn header_len(&self) -> usize {
        match self.protocol {
            Protocol::Replicated => 0,
            Protocol::Confidential => rampart_crypto::shamir::SHARE_LEN,
            Protocol::Sealed => WRAPPED_KEY_LEN,
        }
    }

    /// Offset of segment `s`'s shard within a cloud's blob.
    pub fn shard_offset(&self, s: u64) -> u64 {
        self.header_len() as u64 + s * self.shard_len(0) as u64
    }

    /// Total length of each cloud's blob.
    pub fn blob_len(&self) -> u64 {
        let last = self.segments() - 1;
        self.shard_offset(last) + self.shard_len(last) as u64
    }

    /// Expected digest of cloud `cloud`'s shard of segment `s`.
    pub fn shard_digest(&self, s: u64, cloud: usize) -> &Digest {
        &self.shard_digests[s as usize * self.n as usize + cloud]
    }

    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(MANIFEST_MAGIC)
            .u8(FORMAT_V1)
            .raw(&self.blob_id)
            .u8(self.protocol.code());
        w.u64(self.size)
            .u32(self.segment_size)
            .u8(self.k)
            .u8(self.n);
        w.u32(self.share_digests.len() as u32);
        for d in &self.share_digests {
            w.raw(d.as_bytes());
        }
        w.u32(self.shard_digests.len() as u32);
        for d in &self.shard_digests {
            w.raw(d.as_bytes());
        }
        w.buf
    }

    /// Parses and checks internal consistency. Callers check the digest first.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let bad = |reason| StoreError::Malformed {
            what: "manifest",
            reason,
        };
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(bad("larger than its limit"));
        }
        let mut r = Reader::new(bytes, "manifest");
        if r.take(4)? != MANIFEST_MAGIC {
            return Err(bad("bad magic"));
        }
        if r.u8()? != FORMAT_V1 {
            return Err(bad("unsupported format version"));
        }
        let blob_id = r.array()?;
        let protocol = Protocol::from_code(r.u8()?).ok_or(bad("unknown protocol"))?;
        let size = r.u64()?;
        let segment_size = r.u32()?;
        let k = r.u8()?;
        let n = r.u8()?;
        if segment_size == 0 || segment_size > SEGMENT_BYTES_MAX {
            return Err(bad("segment size out of range"));
        }
        if n as usize > CLOUDS_MAX || k == 0 || k > n {
            return Err(bad("coding parameters out of range"));
        }
        let segments = size.div_ceil(segment_size as u64).max(1);
        if segments > SEGMENTS_MAX {
            return Err(bad("too many segments"));
        }
        let shares = r.u32()? as usize;
        let want_shares = match protocol {
            Protocol::Replicated => 0,
            Protocol::Confidential | Protocol::Sealed => n as usize,
        };
        if shares != want_shares {
            return Err(bad("wrong number of key-share digests"));
        }
        let share_digests = (0..shares)
            .map(|_| r.array().map(Digest))
            .collect::<Result<_, _>>()?;
        let shards = r.u32()? as usize;
        if shards as u64 != segments * n as u64 || r.remaining() != shards * 32 {
            return Err(bad("wrong number of shard digests"));
        }
        let shard_digests = (0..shards)
            .map(|_| r.array().map(Digest))
            .collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(Self {
            blob_id,
            protocol,
            size,
            segment_size,
            k,
            n,
            share_digests,
            shard_digests,
        })
    }
}

/// Number of segments for `size` bytes (at least one).
pub fn segment_count(size: u64, segment_size: u32) -> u64 {
    size.div_ceil(segment_size as u64).max(1)
}

/// Shard length for a segment of `plain_len` bytes.
pub fn shard_len_for(protocol: Protocol, plain_len: usize, k: usize) -> usize {
    match protocol {
        Protocol::Replicated => plain_len,
        Protocol::Confidential | Protocol::Sealed => {
            rampart_crypto::erasure::shard_len(plain_len + rampart_crypto::aead::TAG_LEN, k)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(counter: u64, writer: [u8; 32], tomb: bool) -> VersionEntry {
        let mut e = VersionEntry {
            version: Version {
                counter,
                writer,
                tag: [0; TAG_LEN],
            },
            created_ms: 1,
            encrypted_name: vec![1, 2, 3],
            object: (!tomb).then(|| ObjectRef {
                protocol: Protocol::Confidential,
                blob_id: [7; 16],
                size: 10,
                content_digest: Digest([1; 32]),
                manifest_digest: Digest([2; 32]),
                manifest_inline: Some(vec![9; 5]),
                attrs: vec![],
            }),
        };
        e.seal_tag();
        e
    }

    fn sample(key: &SigningKey, entries: Vec<VersionEntry>) -> Metadata {
        Metadata {
            store_id: [3; 16],
            name_id: [4; 32],
            entries,
            signer: key.verifying_key(),
        }
    }

    #[test]
    fn sign_then_verify_and_every_binding_checked() {
        let key = SigningKey::generate();
        let w = key.verifying_key().to_bytes();
        let m = sample(&key, vec![entry(2, w, true), entry(1, w, false)]);
        let bytes = m.sign(&key);
        let trusted = [key.verifying_key()];
        assert_eq!(
            Metadata::decode_verified(&bytes, &[3; 16], &[4; 32], &trusted).unwrap(),
            m
        );
        assert!(matches!(
            Metadata::decode_verified(&bytes, &[0; 16], &[4; 32], &trusted),
            Err(StoreError::Forged { .. })
        ));
        assert!(matches!(
            Metadata::decode_verified(&bytes, &[3; 16], &[0; 32], &trusted),
            Err(StoreError::Forged { .. })
        ));
        let other = [SigningKey::generate().verifying_key()];
        assert!(matches!(
            Metadata::decode_verified(&bytes, &[3; 16], &[4; 32], &other),
            Err(StoreError::Forged { .. })
        ));
        // Any single flipped bit is caught, whatever it hits.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(
                Metadata::decode_verified(&b, &[3; 16], &[4; 32], &trusted).is_err(),
                "bit flip at {i}"
            );
        }
    }

    #[test]
    fn equal_counters_with_different_content_are_different_versions() {
        let key = SigningKey::generate();
        let w = key.verifying_key().to_bytes();
        let a = entry(5, w, false);
        let mut b = entry(5, w, false);
        b.object.as_mut().unwrap().blob_id = [8; 16];
        b.seal_tag();
        assert_eq!(a.version.counter, b.version.counter);
        assert_ne!(a.version, b.version, "the tag tells the two writes apart");
        // Every reader recomputes the same tags from the signed bytes.
        for e in [&a, &b] {
            let bytes = sample(&key, vec![e.clone()]).sign(&key);
            let m = Metadata::decode_verified(&bytes, &[3; 16], &[4; 32], &[key.verifying_key()])
                .unwrap();
            assert_eq!(m.latest().version, e.version);
        }
    }

    #[test]
    fn manifest_geometry() {
        let m = Manifest {
            blob_id: [0; 16],
            protocol: Protocol::Confidential,
            size: 10,
            segment_size: 4,
            k: 2,
            n: 4,
            share_digests: vec![Digest([0; 32]); 4],
            shard_digests: vec![Digest([0; 32]); 12],
        };
        assert_eq!(m.segments(), 3);
        assert_eq!(m.segment_plain_len(2), 2);
        assert_eq!(m.shard_len(0), 10); // (4 + 16) / 2
        assert_eq!(m.shard_len(2), 9); // (2 + 16) / 2
        assert_eq!(m.shard_offset(1), 33 + 10);
        assert_eq!(m.blob_len(), 33 + 10 + 10 + 9);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Metadata::decode_unverified(&bytes);
            let _ = Manifest::decode(&bytes);
        }

        #[test]
        fn manifest_roundtrip(size in 0u64..100_000, seg in 1u32..5000, ca in any::<bool>()) {
            let n = 4u8;
            let protocol = if ca { Protocol::Confidential } else { Protocol::Replicated };
            let segments = segment_count(size, seg);
            prop_assume!(segments <= 1000);
            let m = Manifest {
                blob_id: [5; 16], protocol, size, segment_size: seg, k: 2, n,
                share_digests: if ca { vec![Digest([1; 32]); 4] } else { vec![] },
                shard_digests: (0..segments * 4).map(|i| Digest([i as u8; 32])).collect(),
            };
            let enc = m.encode();
            prop_assert_eq!(Manifest::decode(&enc).unwrap(), m);
            // Truncations are rejected, not mis-parsed.
            for cut in [1usize, 7, enc.len() / 2] {
                prop_assert!(Manifest::decode(&enc[..enc.len().saturating_sub(cut)]).is_err());
            }
        }
    }
}
