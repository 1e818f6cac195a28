//! Forward-integrity MACs (Schneier–Kelsey), sans-IO.
//!
//! Every entry has its own MAC key, bound to its position: entry `seq` is sealed with `K(seq)`,
//! `HMAC-SHA-256(K(seq), "rampart-log/mac/v1\0" || seq || epoch || prev_hash || len(data) || data)`
//! (integers big-endian, `len` as u64), and its `epoch` field must equal `seq`. After sealing
//! an entry the writer evolves the key, `K(seq+1) = SHA-256("rampart-log/key-evolve/v1\0" ||
//! K(seq))`, and `K(seq)` is overwritten ([`zeroize`]). Because SHA-256 is one-way, whoever
//! steals `K(n)` (the writer's key at size `n`) cannot compute any `K(i)` with `i < n`, so
//! cannot forge or re-seal any entry below `n`; and because the epoch is a fixed function of
//! the position (checked by the verifier), a later key cannot seal an earlier position
//! either. The epoch is also inside the MAC input (systemd's CVE-2023-31439 lacked that).
//!
//! The verifier holds `K(0)` and walks the keys forward, one hash per entry.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

const MAC_DOMAIN: &[u8] = b"rampart-log/mac/v1\0";
const EVOLVE_DOMAIN: &[u8] = b"rampart-log/key-evolve/v1\0";

/// The MAC key of one position (epoch = sequence number). Erased from memory when dropped
/// or evolved.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EpochKey {
    epoch: u64,
    key: [u8; 32],
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("EpochKey")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl EpochKey {
    /// Wraps key bytes for `epoch`.
    pub fn new(epoch: u64, key: [u8; 32]) -> Self {
        EpochKey { epoch, key }
    }

    /// A fresh epoch-0 key from the given cryptographic RNG (the OS RNG in production).
    pub fn generate<R: rand_core::CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        EpochKey { epoch: 0, key }
    }

    /// The epoch this key seals.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The raw key bytes, for persisting. Treat as secret.
    pub fn danger_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Moves to the next epoch in place: `K(e+1) = H(K(e))`; `K(e)` is overwritten.
    pub fn evolve(&mut self) {
        let mut h = Sha256::new();
        h.update(EVOLVE_DOMAIN);
        h.update(self.key);
        let mut next: [u8; 32] = h.finalize().into();
        self.key.copy_from_slice(&next);
        next.zeroize();
        self.epoch = self
            .epoch
            .checked_add(1)
            .expect("epoch counter cannot reach u64::MAX");
    }

    /// Evolves until the key belongs to `epoch`. `epoch` must not be earlier than the key's.
    pub fn evolve_to(&mut self, epoch: u64) {
        assert!(epoch >= self.epoch, "keys only evolve forward");
        while self.epoch < epoch {
            self.evolve();
        }
    }

    /// The MAC of an entry sealed in this key's epoch.
    pub fn seal(&self, seq: u64, prev_hash: &[u8; 32], data: &[u8]) -> [u8; 32] {
        compute(&self.key, seq, self.epoch, prev_hash, data)
    }

    /// Checks, in constant time, that `mac` seals (seq, this epoch, prev_hash, data).
    pub fn verify(&self, seq: u64, prev_hash: &[u8; 32], data: &[u8], mac: &[u8; 32]) -> bool {
        let want = self.seal(seq, prev_hash, data);
        want.ct_eq(mac).into()
    }
}

fn compute(key: &[u8; 32], seq: u64, epoch: u64, prev_hash: &[u8; 32], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(MAC_DOMAIN);
    m.update(&seq.to_be_bytes());
    m.update(&epoch.to_be_bytes());
    m.update(prev_hash);
    m.update(&(data.len() as u64).to_be_bytes());
    m.update(data);
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evolution_is_sha256_of_previous_key() {
        let mut k = EpochKey::new(0, [7; 32]);
        let mut h = Sha256::new();
        h.update(EVOLVE_DOMAIN);
        h.update([7u8; 32]);
        let want: [u8; 32] = h.finalize().into();
        k.evolve();
        assert_eq!(k.epoch(), 1);
        assert_eq!(k.danger_bytes(), &want);
        assert_ne!(k.danger_bytes(), &[7; 32]);
    }

    #[test]
    fn mac_binds_every_field() {
        let k = EpochKey::new(0, [9; 32]);
        let mac = k.seal(5, &[1; 32], b"data");
        assert!(k.verify(5, &[1; 32], b"data", &mac));
        assert!(!k.verify(6, &[1; 32], b"data", &mac));
        assert!(!k.verify(5, &[2; 32], b"data", &mac));
        assert!(!k.verify(5, &[1; 32], b"datA", &mac));
        let mut k1 = k.clone();
        k1.evolve();
        assert!(!k1.verify(5, &[1; 32], b"data", &mac), "epoch is bound");
        // Same key bytes, other epoch number: still rejected because the epoch is in the input.
        let k_same_bytes_other_epoch = EpochKey::new(1, [9; 32]);
        assert!(!k_same_bytes_other_epoch.verify(5, &[1; 32], b"data", &mac));
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2, to show the primitive is plain HMAC-SHA-256.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        let got = hex::encode(m.finalize().into_bytes());
        assert_eq!(
            got,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
