//! Cryptographic building blocks for Rampart, as thin wrappers over well-kept libraries.
//!
//! Nothing here implements a primitive. Each module fixes one choice so that the rest
//! of Rampart uses it the same way:
//!
//! | module      | what                                   | library                         |
//! |-------------|----------------------------------------|---------------------------------|
//! | [`hash`]    | 256-bit digests, keyed hashes, KDF     | `blake3`                        |
//! | [`aead`]    | AES-256-GCM segment and blob sealing   | `ring` (the one AEAD provider)  |
//! | [`sign`]    | Ed25519 signatures                     | `ed25519-dalek` (strict verify) |
//! | [`shamir`]  | threshold key splitting over GF(2^8)   | `vsss-rs`                       |
//! | [`erasure`] | systematic Reed–Solomon coding         | `reed-solomon-erasure`          |
//!
//! # Invariants
//!
//! - Keys are generated from the operating system's RNG and zeroized on drop.
//! - Digests and tags are compared in constant time ([`hash::Digest`] implements `PartialEq`
//!   with `subtle`).
//! - An AEAD key is never used with the same nonce twice: segment keys are fresh per object
//!   version and nonces are the segment counter; long-lived keys only seal with random nonces.
//! - Nothing here logs or formats secret material (`Debug` on secrets is redacted).
#![deny(missing_docs)]

pub mod aead;
pub mod erasure;
pub mod hash;
pub mod shamir;
pub mod sign;

/// Errors from the cryptographic layer. Verification failures carry no detail on purpose.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// AEAD decryption failed: wrong key, wrong associated data, or altered ciphertext.
    #[error("authenticated decryption failed (ciphertext or its context was altered)")]
    AeadOpen,
    /// A ciphertext is shorter than its nonce and tag.
    #[error("ciphertext too short ({len} bytes)")]
    CiphertextTooShort {
        /// Length seen.
        len: usize,
    },
    /// A signature did not verify under the given key.
    #[error("signature verification failed")]
    BadSignature,
    /// Bytes could not be parsed as a key of the expected kind.
    #[error("malformed {what}")]
    MalformedKey {
        /// Which kind of key.
        what: &'static str,
    },
    /// Secret sharing parameters or shares were invalid.
    #[error("secret sharing failed: {reason}")]
    Sharing {
        /// Why.
        reason: &'static str,
    },
    /// Erasure coding parameters or shards were invalid.
    #[error("erasure coding failed: {reason}")]
    Erasure {
        /// Why.
        reason: &'static str,
    },
}
