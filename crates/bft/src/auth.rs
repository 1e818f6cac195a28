//! Message authentication behind one interface.
//!
//! Every protocol message, client request and reply carries an [`AuthTag`] made by its
//! sender. WRITE and ACCEPT tags double as *transferable* votes: a quorum of them is a
//! certificate that any replica can check (STOPDATA, SYNC and catch-up carry them), so the
//! scheme behind [`Authenticator`] must be verifiable by third parties: signatures, or a
//! simulation stand-in. A MAC-vector scheme (BFT-SMaRt's default) would have to carry one
//! MAC per replica in each vote; see ADR 0101. A trusted-counter USIG (MinBFT/CheapBFT)
//! would be a further implementation that binds a monotonic counter into the tag; the
//! core already treats tags as opaque, so it can be added without changing the protocol
//! code paths for checking them.

use ed25519_dalek::Signer as _;
use subtle::ConstantTimeEq;

use crate::types::{ClientId, ReplicaId};

/// Length of an [`AuthTag`] (an Ed25519 signature; shorter schemes pad with zeros).
pub const AUTH_TAG_LEN: usize = 64;

/// An authentication tag: signature or simulated signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthTag(pub [u8; AUTH_TAG_LEN]);

impl std::fmt::Debug for AuthTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthTag({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// Who made a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Principal {
    /// A replica.
    Replica(ReplicaId),
    /// A client.
    Client(ClientId),
}

/// Makes tags as this node and checks tags of others.
///
/// Implementations must be deterministic (the simulator relies on it) and must compare
/// secrets in constant time.
pub trait Authenticator {
    /// Tag `payload` as this node.
    fn sign(&self, payload: &[u8]) -> AuthTag;
    /// Whether `tag` is `signer`'s tag on `payload`. Unknown signers fail.
    fn verify(&self, signer: Principal, payload: &[u8], tag: &AuthTag) -> bool;
}

/// Ed25519 signatures (`ed25519-dalek`). For production use.
pub struct Ed25519Authenticator {
    key: ed25519_dalek::SigningKey,
    replicas: Vec<ed25519_dalek::VerifyingKey>,
    clients: std::collections::BTreeMap<ClientId, ed25519_dalek::VerifyingKey>,
}

impl Ed25519Authenticator {
    /// `key` is this node's signing key; `replicas[i]` is replica i's public key.
    #[must_use]
    pub fn new(
        key: ed25519_dalek::SigningKey,
        replicas: Vec<ed25519_dalek::VerifyingKey>,
        clients: std::collections::BTreeMap<ClientId, ed25519_dalek::VerifyingKey>,
    ) -> Self {
        Ed25519Authenticator {
            key,
            replicas,
            clients,
        }
    }
}

impl Authenticator for Ed25519Authenticator {
    fn sign(&self, payload: &[u8]) -> AuthTag {
        AuthTag(self.key.sign(payload).to_bytes())
    }

    fn verify(&self, signer: Principal, payload: &[u8], tag: &AuthTag) -> bool {
        let key = match signer {
            Principal::Replica(r) => self.replicas.get(usize::from(r.0)),
            Principal::Client(c) => self.clients.get(&c),
        };
        let Some(key) = key else { return false };
        let sig = ed25519_dalek::Signature::from_bytes(&tag.0);
        key.verify_strict(payload, &sig).is_ok()
    }
}

/// **Simulated** authentication for deterministic tests and the simulator: a keyed BLAKE3
/// hash whose keys are derived from a public cluster seed.
///
/// Anyone who knows the seed can forge any tag, so this is *not* authentication. It models
/// unforgeable signatures only because the simulator gives each node, correct or Byzantine,
/// a signer for its own principal and nothing else. It is about 100× faster than Ed25519.
#[derive(Clone)]
pub struct SimulatedAuthenticator {
    me: Principal,
    seed: u64,
    my_key: [u8; 32],
}

impl SimulatedAuthenticator {
    /// A simulated signer for `me` in the cluster identified by `seed`.
    #[must_use]
    pub fn new(me: Principal, seed: u64) -> Self {
        SimulatedAuthenticator {
            me,
            seed,
            my_key: Self::key(me, seed),
        }
    }

    /// The principal this signer signs as.
    #[must_use]
    pub fn principal(&self) -> Principal {
        self.me
    }

    fn key(p: Principal, seed: u64) -> [u8; 32] {
        let mut input = [0u8; 17];
        input[..8].copy_from_slice(&seed.to_le_bytes());
        match p {
            Principal::Replica(r) => {
                input[8] = 1;
                input[9] = r.0;
            }
            Principal::Client(c) => {
                input[8] = 2;
                input[9..17].copy_from_slice(&c.0.to_le_bytes());
            }
        }
        blake3::derive_key("rampart-bft simulated key v1", &input)
    }

    fn tag_with(key: &[u8; 32], payload: &[u8]) -> AuthTag {
        let mut tag = [0u8; AUTH_TAG_LEN];
        tag[..32].copy_from_slice(blake3::keyed_hash(key, payload).as_bytes());
        AuthTag(tag)
    }
}

impl Authenticator for SimulatedAuthenticator {
    fn sign(&self, payload: &[u8]) -> AuthTag {
        Self::tag_with(&self.my_key, payload)
    }

    fn verify(&self, signer: Principal, payload: &[u8], tag: &AuthTag) -> bool {
        let expected = Self::tag_with(&Self::key(signer, self.seed), payload);
        bool::from(expected.0.ct_eq(&tag.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_tags_verify_only_for_their_signer() {
        let a = SimulatedAuthenticator::new(Principal::Replica(ReplicaId(0)), 7);
        let b = SimulatedAuthenticator::new(Principal::Replica(ReplicaId(1)), 7);
        let t = a.sign(b"hello");
        assert!(b.verify(Principal::Replica(ReplicaId(0)), b"hello", &t));
        assert!(!b.verify(Principal::Replica(ReplicaId(1)), b"hello", &t));
        assert!(!b.verify(Principal::Replica(ReplicaId(0)), b"hellO", &t));
        let other_cluster = SimulatedAuthenticator::new(Principal::Replica(ReplicaId(1)), 8);
        assert!(!other_cluster.verify(Principal::Replica(ReplicaId(0)), b"hello", &t));
    }

    #[test]
    fn ed25519_tags_verify_only_for_their_signer() {
        let k0 = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
        let k1 = ed25519_dalek::SigningKey::from_bytes(&[2u8; 32]);
        let pubs = vec![k0.verifying_key(), k1.verifying_key()];
        let a = Ed25519Authenticator::new(k0, pubs.clone(), Default::default());
        let b = Ed25519Authenticator::new(k1, pubs, Default::default());
        let t = a.sign(b"m");
        assert!(b.verify(Principal::Replica(ReplicaId(0)), b"m", &t));
        assert!(!b.verify(Principal::Replica(ReplicaId(1)), b"m", &t));
        assert!(!b.verify(Principal::Replica(ReplicaId(9)), b"m", &t));
        assert!(!b.verify(Principal::Client(ClientId(1)), b"m", &t));
    }
}
