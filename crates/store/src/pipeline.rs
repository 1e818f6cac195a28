//! Segment transforms: plaintext segment → `n` shards (encode) and back (decode).
//!
//! DepSky-CA: seal with AES-256-GCM (nonce = segment index, associated data binds the
//! store, key name, blob and position), split the ciphertext into `k` data shards and add
//! `n − k` Reed–Solomon parity shards. The sealed single backend seals the same way; with
//! one cloud (`n = k = 1`) its only shard is the ciphertext. DepSky-A: every shard is the
//! plaintext segment.
//! These functions are pure and CPU-bound; the client runs them on blocking threads.

use bytes::Bytes;
use rampart_crypto::aead::{SegmentKey, TAG_LEN};
use rampart_crypto::erasure::{ErasureCode, ReedSolomon, shard_len};
use rampart_crypto::hash::Digest;

use crate::StoreError;
use crate::meta::Protocol;

/// Everything that binds a segment to its place, fed to the AEAD as associated data.
#[derive(Clone)]
pub struct SegmentContext {
    /// The store.
    pub store_id: [u8; 16],
    /// The key's name id.
    pub name_id: [u8; 32],
    /// The blob.
    pub blob_id: [u8; 16],
}

impl SegmentContext {
    fn aad(&self, index: u64, last: bool) -> [u8; 16 + 32 + 16 + 8 + 1] {
        let mut a = [0u8; 73];
        a[..16].copy_from_slice(&self.store_id);
        a[16..48].copy_from_slice(&self.name_id);
        a[48..64].copy_from_slice(&self.blob_id);
        a[64..72].copy_from_slice(&index.to_be_bytes());
        a[72] = last as u8;
        a
    }
}

/// The `n` shards of one segment and their digests.
pub struct EncodedSegment {
    /// Shard `i` goes to cloud `i`.
    pub shards: Vec<Bytes>,
    /// BLAKE3 of each shard.
    pub digests: Vec<Digest>,
}

/// Turns segments into shards and back for one blob.
pub struct Codec {
    k: usize,
    n: usize,
    rs: Option<ReedSolomon>,
    key: Option<SegmentKey>,
    ctx: SegmentContext,
}

impl Codec {
    /// A codec for DepSky-CA (`key` is the blob's fresh data key) or DepSky-A (`key` None).
    pub fn new(
        protocol: Protocol,
        k: usize,
        n: usize,
        key: Option<SegmentKey>,
        ctx: SegmentContext,
    ) -> Result<Self, StoreError> {
        let rs = match protocol {
            Protocol::Confidential | Protocol::Sealed => {
                assert!(key.is_some(), "an encrypting protocol needs a data key");
                // One cloud holds the whole ciphertext: there is nothing to code.
                if k == 1 && n == 1 {
                    None
                } else {
                    Some(ReedSolomon::new(k, n).map_err(StoreError::Crypto)?)
                }
            }
            Protocol::Replicated => None,
        };
        Ok(Self { k, n, rs, key, ctx })
    }

    /// Encodes segment `index` (`last` marks the final one).
    pub fn encode(
        &self,
        index: u64,
        last: bool,
        mut plain: Vec<u8>,
    ) -> Result<EncodedSegment, StoreError> {
        match &self.key {
            Some(key) => {
                let ct_len = plain.len() + TAG_LEN;
                let len = shard_len(ct_len, self.k);
                plain.reserve_exact(len * self.k - plain.len());
                key.seal_in_place(index, &self.ctx.aad(index, last), &mut plain);
                debug_assert_eq!(plain.len(), ct_len);
                plain.resize(len * self.k, 0);
                let mut parity = vec![vec![0u8; len]; self.n - self.k];
                if let Some(rs) = &self.rs {
                    let data: Vec<&[u8]> = plain.chunks(len).collect();
                    let mut p: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
                    rs.encode(&data, &mut p).map_err(StoreError::Crypto)?;
                }
                let data = Bytes::from(plain);
                let mut shards: Vec<Bytes> = (0..self.k)
                    .map(|i| data.slice(i * len..(i + 1) * len))
                    .collect();
                shards.extend(parity.into_iter().map(Bytes::from));
                let digests = shards.iter().map(|s| Digest::of(s)).collect();
                Ok(EncodedSegment { shards, digests })
            }
            None => {
                let data = Bytes::from(plain);
                let d = Digest::of(&data);
                Ok(EncodedSegment {
                    shards: vec![data; self.n],
                    digests: vec![d; self.n],
                })
            }
        }
    }

    /// Decodes segment `index` from verified shards (at least `k` present; `Some` slots
    /// must already match their manifest digests). `plain_len` comes from the manifest.
    pub fn decode(
        &self,
        index: u64,
        last: bool,
        plain_len: usize,
        mut shards: Vec<Option<Vec<u8>>>,
    ) -> Result<Vec<u8>, StoreError> {
        match &self.key {
            Some(key) => {
                if shards[..self.k].iter().any(Option::is_none) {
                    let rs = self.rs.as_ref().ok_or(StoreError::Integrity {
                        reason: "a data shard is missing and there is no parity",
                    })?;
                    rs.reconstruct_data(&mut shards)
                        .map_err(StoreError::Crypto)?;
                }
                let len = shards[0].as_ref().map_or(0, Vec::len);
                let mut ct = Vec::with_capacity(len * self.k);
                for s in shards.into_iter().take(self.k) {
                    ct.extend_from_slice(&s.expect("data shards present after reconstruction"));
                }
                ct.truncate(plain_len + TAG_LEN);
                key.open_in_place(index, &self.ctx.aad(index, last), &mut ct)
                    .map_err(|_| StoreError::Integrity {
                        reason: "segment failed authenticated decryption",
                    })?;
                Ok(ct)
            }
            None => shards
                .into_iter()
                .flatten()
                .next()
                .ok_or(StoreError::Integrity {
                    reason: "no replica to decode",
                }),
        }
    }

    /// Re-derives every shard of a segment from at least `k` verified ones (for repair).
    pub fn complete_shards(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), StoreError> {
        match (&self.rs, &self.key) {
            (Some(rs), _) => rs.reconstruct(shards).map_err(StoreError::Crypto),
            // A single encrypted shard (n = k = 1) has no redundancy to rebuild from.
            (None, Some(_)) if shards.iter().any(Option::is_none) => Err(StoreError::Integrity {
                reason: "a shard is missing and there is no parity",
            }),
            (None, Some(_)) => Ok(()),
            (None, None) => {
                let any = shards
                    .iter()
                    .flatten()
                    .next()
                    .cloned()
                    .ok_or(StoreError::Integrity {
                        reason: "no replica to copy",
                    })?;
                for s in shards.iter_mut() {
                    if s.is_none() {
                        *s = Some(any.clone());
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> SegmentContext {
        SegmentContext {
            store_id: [1; 16],
            name_id: [2; 32],
            blob_id: [3; 16],
        }
    }

    #[test]
    fn ca_roundtrip_from_any_two_shards_and_binding() {
        let key = SegmentKey::generate();
        let kb = zeroize::Zeroizing::new(*key.danger_key_bytes());
        let codec = Codec::new(Protocol::Confidential, 2, 4, Some(key), ctx()).unwrap();
        let plain = b"confidential segment bytes".to_vec();
        let enc = codec.encode(5, true, plain.clone()).unwrap();
        assert_eq!(enc.shards.len(), 4);
        for (s, d) in enc.shards.iter().zip(&enc.digests) {
            assert_eq!(Digest::of(s), *d);
            assert!(
                !s.windows(6).any(|w| w == b"confid"),
                "shards must not contain plaintext"
            );
        }
        for a in 0..4 {
            for b in 0..4 {
                if a == b {
                    continue;
                }
                let mut sh = vec![None; 4];
                sh[a] = Some(enc.shards[a].to_vec());
                sh[b] = Some(enc.shards[b].to_vec());
                assert_eq!(codec.decode(5, true, plain.len(), sh).unwrap(), plain);
            }
        }
        // Wrong position or last-flag: authenticated decryption fails.
        let all: Vec<Option<Vec<u8>>> = enc.shards.iter().map(|s| Some(s.to_vec())).collect();
        assert!(codec.decode(4, true, plain.len(), all.clone()).is_err());
        assert!(codec.decode(5, false, plain.len(), all.clone()).is_err());
        // Another blob's context cannot open it.
        let mut other = ctx();
        other.blob_id = [9; 16];
        let codec2 = Codec::new(
            Protocol::Confidential,
            2,
            4,
            Some(SegmentKey::from_bytes(kb)),
            other,
        )
        .unwrap();
        assert!(codec2.decode(5, true, plain.len(), all).is_err());
    }

    #[test]
    fn replicated_copies_plaintext() {
        let codec = Codec::new(Protocol::Replicated, 1, 4, None, ctx()).unwrap();
        let enc = codec.encode(0, true, b"public".to_vec()).unwrap();
        assert!(enc.shards.iter().all(|s| &s[..] == b"public"));
        let mut sh = vec![None; 4];
        sh[3] = Some(b"public".to_vec());
        assert_eq!(codec.decode(0, true, 6, sh).unwrap(), b"public");
    }
}
