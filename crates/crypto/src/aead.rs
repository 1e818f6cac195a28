//! AES-256-GCM through `ring`.
//!
//! Two ways to use a key, chosen so that a nonce can never repeat under one key:
//!
//! - [`SegmentKey`]: a fresh random key per object version. Segment `i` is sealed with
//!   nonce `i` (a 96-bit big-endian counter), so no randomness is needed per segment.
//! - [`SealingKey`]: a long-lived key (e.g. for object names). Every seal draws a fresh
//!   random 96-bit nonce from the OS and prepends it to the ciphertext.

use std::fmt;

use rand_core::{OsRng, RngCore};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::CryptoError;

/// Length of an AES-256-GCM key.
pub const KEY_LEN: usize = 32;
/// Length of the authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes [`SealingKey::seal`] adds to a plaintext: the random nonce and the tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

fn cipher(key: &[u8; KEY_LEN]) -> LessSafeKey {
    // `ring` only rejects keys of the wrong length, which the array type rules out.
    let unbound = UnboundKey::new(&AES_256_GCM, key).expect("32-byte key is valid for AES-256");
    LessSafeKey::new(unbound)
}

fn counter_nonce(counter: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// A fresh per-version data key. Zeroized on drop; `Debug` is redacted.
pub struct SegmentKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    cipher: LessSafeKey,
}

impl SegmentKey {
    /// Generates a new key from the OS RNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(bytes.as_mut());
        Self::from_bytes(bytes)
    }

    /// Rebuilds a key (e.g. from combined Shamir shares).
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let cipher = cipher(&bytes);
        Self { bytes, cipher }
    }

    /// The raw key, for splitting into shares. Handle with care.
    pub fn danger_key_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Encrypts `buf` in place and appends the tag. `counter` must be unique per key.
    pub fn seal_in_place(&self, counter: u64, aad: &[u8], buf: &mut Vec<u8>) {
        self.cipher
            .seal_in_place_append_tag(counter_nonce(counter), Aad::from(aad), buf)
            .expect("AES-GCM sealing cannot fail for in-memory buffers under 64 GiB");
    }

    /// Decrypts `buf` (ciphertext followed by tag) in place and strips the tag.
    pub fn open_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let plain_len = self
            .cipher
            .open_in_place(counter_nonce(counter), Aad::from(aad), buf)
            .map_err(|_| CryptoError::AeadOpen)?
            .len();
        buf.truncate(plain_len);
        Ok(())
    }
}

impl fmt::Debug for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SegmentKey(<redacted>)")
    }
}

/// A long-lived key that seals with random nonces. `Debug` is redacted.
pub struct SealingKey {
    cipher: LessSafeKey,
}

impl SealingKey {
    /// Builds the key from 32 bytes (usually derived with [`crate::hash::derive_key`]).
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self {
            cipher: cipher(key),
        }
    }

    /// Returns `nonce || ciphertext || tag` for `plaintext` bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(NONCE_LEN);
        self.cipher
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .expect("AES-GCM sealing cannot fail for in-memory buffers under 64 GiB");
        out.extend_from_slice(&body);
        out
    }

    /// Opens what [`SealingKey::seal`] produced.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::CiphertextTooShort { len: sealed.len() });
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::AeadOpen)?;
        let mut buf = body.to_vec();
        let n = self
            .cipher
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| CryptoError::AeadOpen)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn segment_roundtrip_and_tamper_detection() {
        let key = SegmentKey::generate();
        let mut buf = b"attack at dawn".to_vec();
        key.seal_in_place(7, b"ctx", &mut buf);
        assert_eq!(buf.len(), 14 + TAG_LEN);
        let sealed = buf.clone();
        key.open_in_place(7, b"ctx", &mut buf).unwrap();
        assert_eq!(buf, b"attack at dawn");

        // Wrong counter, wrong context, flipped bit: all rejected.
        let mut b = sealed.clone();
        assert_eq!(
            key.open_in_place(8, b"ctx", &mut b),
            Err(CryptoError::AeadOpen)
        );
        let mut b = sealed.clone();
        assert_eq!(
            key.open_in_place(7, b"ctX", &mut b),
            Err(CryptoError::AeadOpen)
        );
        let mut b = sealed;
        b[3] ^= 1;
        assert_eq!(
            key.open_in_place(7, b"ctx", &mut b),
            Err(CryptoError::AeadOpen)
        );
    }

    #[test]
    fn fresh_keys_differ() {
        let a = SegmentKey::generate();
        let b = SegmentKey::generate();
        assert_ne!(a.danger_key_bytes(), b.danger_key_bytes());
        assert_eq!(format!("{a:?}"), "SegmentKey(<redacted>)");
    }

    #[test]
    fn sealing_key_uses_fresh_nonces() {
        let k = SealingKey::new(&[9; 32]);
        let a = k.seal(b"n", b"same");
        let b = k.seal(b"n", b"same");
        assert_ne!(
            a, b,
            "two seals of the same plaintext must differ (random nonce)"
        );
        assert_eq!(k.open(b"n", &a).unwrap(), b"same");
        assert_eq!(k.open(b"m", &a), Err(CryptoError::AeadOpen));
        assert!(matches!(
            k.open(b"n", &a[..10]),
            Err(CryptoError::CiphertextTooShort { .. })
        ));
    }

    proptest! {
        #[test]
        fn segment_roundtrip_any(data in proptest::collection::vec(any::<u8>(), 0..4096), ctr in any::<u64>()) {
            let key = SegmentKey::generate();
            let mut buf = data.clone();
            key.seal_in_place(ctr, b"aad", &mut buf);
            key.open_in_place(ctr, b"aad", &mut buf).unwrap();
            prop_assert_eq!(buf, data);
        }
    }
}
