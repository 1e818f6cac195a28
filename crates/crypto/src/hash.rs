//! BLAKE3 digests, keyed hashes and key derivation.

use std::fmt;

use subtle::ConstantTimeEq;

/// Length of a digest in bytes.
pub const DIGEST_LEN: usize = 32;

/// A 256-bit BLAKE3 digest. Equality is constant time.
#[derive(Clone, Copy, Eq)]
pub struct Digest(pub [u8; DIGEST_LEN]);

impl Digest {
    /// Hashes `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// Keyed hash (a PRF/MAC) of `data` under a 32-byte key.
    pub fn keyed(key: &[u8; 32], data: &[u8]) -> Self {
        Self(*blake3::keyed_hash(key, data).as_bytes())
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }

    /// Lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl PartialEq for Digest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Incremental hasher producing a [`Digest`].
#[derive(Default)]
pub struct Hasher(blake3::Hasher);

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self(blake3::Hasher::new())
    }

    /// Absorbs `data`.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.0.update(data);
        self
    }

    /// The digest of everything absorbed.
    pub fn finalize(&self) -> Digest {
        Digest(*self.0.finalize().as_bytes())
    }
}

/// Derives a 32-byte key for `context` from `material` (BLAKE3's KDF mode).
///
/// `context` must be a hard-coded, globally unique, application-specific string.
pub fn derive_key(context: &str, material: &[u8]) -> [u8; 32] {
    blake3::derive_key(context, material)
}

/// Constant-time equality of two byte strings (false when lengths differ).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_blake3_reference_vector() {
        // BLAKE3 of the empty input, from the BLAKE3 reference test vectors.
        assert_eq!(
            Digest::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn incremental_equals_one_shot_and_differs_on_change() {
        let mut h = Hasher::new();
        h.update(b"hello ").update(b"world");
        assert_eq!(h.finalize(), Digest::of(b"hello world"));
        assert_ne!(h.finalize(), Digest::of(b"hello worle"));
    }

    #[test]
    fn keyed_hash_depends_on_key() {
        assert_ne!(Digest::keyed(&[1; 32], b"x"), Digest::keyed(&[2; 32], b"x"));
        assert_ne!(
            derive_key("rampart test a", b"m"),
            derive_key("rampart test b", b"m")
        );
    }
}
