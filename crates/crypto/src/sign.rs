//! Ed25519 signatures (`ed25519-dalek`, strict verification).

use std::fmt;

use ed25519_dalek::Signer;
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::CryptoError;

/// Length of a public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// A private signing key. Zeroized on drop; `Debug` is redacted.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// Generates a fresh key from the OS RNG.
    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::generate(&mut OsRng))
    }

    /// Loads a key from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed, for writing to a 0600 key file.
    pub fn danger_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public={})", self.verifying_key())
    }
}

/// A public verification key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl VerifyingKey {
    /// Parses 32 bytes; rejects points that are not valid keys.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, CryptoError> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| CryptoError::MalformedKey {
                what: "Ed25519 public key",
            })
    }

    /// Parses the lower-case hex form.
    pub fn from_hex(s: &str) -> Result<Self, CryptoError> {
        let mut b = [0u8; PUBLIC_KEY_LEN];
        hex::decode_to_slice(s.trim(), &mut b).map_err(|_| CryptoError::MalformedKey {
            what: "Ed25519 public key (hex)",
        })?;
        Self::from_bytes(&b)
    }

    /// The key's bytes.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_bytes()
    }

    /// Verifies `sig` over `msg` with strict (non-malleable) checks.
    pub fn verify(&self, msg: &[u8], sig: &[u8; SIGNATURE_LEN]) -> Result<(), CryptoError> {
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

impl fmt::Display for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", &hex::encode(self.to_bytes())[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_reject() {
        let k = SigningKey::generate();
        let pk = k.verifying_key();
        let sig = k.sign(b"metadata");
        pk.verify(b"metadata", &sig).unwrap();
        assert_eq!(pk.verify(b"metadatA", &sig), Err(CryptoError::BadSignature));
        let mut bad = sig;
        bad[0] ^= 1;
        assert_eq!(pk.verify(b"metadata", &bad), Err(CryptoError::BadSignature));
        let other = SigningKey::generate().verifying_key();
        assert_eq!(
            other.verify(b"metadata", &sig),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn seed_roundtrip_and_hex() {
        let k = SigningKey::generate();
        let k2 = SigningKey::from_seed(&k.danger_seed());
        assert_eq!(k.verifying_key(), k2.verifying_key());
        let pk = VerifyingKey::from_hex(&k.verifying_key().to_string()).unwrap();
        assert_eq!(pk, k.verifying_key());
        assert!(VerifyingKey::from_hex("zz").is_err());
        assert!(!format!("{k:?}").contains(&hex::encode(*k.danger_seed())));
    }
}
