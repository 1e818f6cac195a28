//! Checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519-signed, with
//! k-of-n witness cosignatures. Sans-IO.
//!
//! Body and note formats are handled by the `tlog_tiles` and `signed_note` crates (ports of
//! Go's `sumdb/tlog` and `sumdb/note`). Witness cosignatures are C2SP tlog-cosignature
//! `cosignature/v1` signatures (vkey type 0x04, see [`crate::cosignature`]) or, for witnesses
//! set up before those, plain Ed25519 signed-note signatures (type 0x01) over the same
//! checkpoint text; the witness's vkey says which (ADR 0203).

use base64::Engine;
use signed_note::{Note, Signer, StandardSigner, StandardVerifier, Verifier, VerifierList};
use zeroize::Zeroizing;

use crate::cosignature::{CosignatureV1Signer, witness_verifier};
use crate::merkle::Hash;

/// Largest signed checkpoint accepted, in bytes (origin, three lines, up to 100 signatures).
pub const CHECKPOINT_BYTES_MAX: usize = 16 * 1024;
/// Most witnesses a policy may name.
pub const WITNESSES_MAX: usize = 64;

/// A checkpoint whose log signature (and witness quorum, if one was demanded) verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The log's origin line (also the signing key's name).
    pub origin: String,
    /// Number of entries the tree head covers.
    pub size: u64,
    /// RFC 6962 root of those entries.
    pub root: Hash,
    /// Names of the witnesses whose cosignatures verified.
    pub witnesses: Vec<String>,
}

/// Why a checkpoint was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Larger than [`CHECKPOINT_BYTES_MAX`].
    #[error("checkpoint larger than {CHECKPOINT_BYTES_MAX} bytes")]
    TooLarge,
    /// Not a well-formed signed note.
    #[error("malformed signed note")]
    MalformedNote,
    /// The note text is not a C2SP checkpoint body.
    #[error("malformed checkpoint body")]
    MalformedBody,
    /// The origin line is not the expected log's.
    #[error("checkpoint is for another log")]
    WrongOrigin,
    /// No valid signature by the log key, or an invalid signature by a known key.
    #[error("log signature missing or invalid")]
    BadSignature,
    /// A cosignature by a witness of the policy does not verify.
    #[error("invalid cosignature by witness {0}")]
    BadWitnessSignature(String),
    /// Fewer valid witness cosignatures than the policy demands.
    #[error("{got} of the required {need} witness cosignatures")]
    WitnessQuorum {
        /// Valid cosignatures by distinct named witnesses.
        got: usize,
        /// Threshold of the policy.
        need: usize,
    },
    /// A verifier or signer key string is malformed.
    #[error("malformed key")]
    BadKey,
    /// A cosignature timestamp above 2^63 - 1.
    #[error("cosignature timestamp out of range")]
    BadTimestamp,
}

/// A signer for checkpoints (the log key) or cosignatures (a witness key).
pub struct NoteSigner {
    pub(crate) inner: StandardSigner,
    /// The same Ed25519 key, for `cosignature/v1` (erased on drop).
    pub(crate) key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.inner.name())
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// Generates a fresh Ed25519 key named `name` from the given RNG (the OS RNG in
    /// production). Returns the signer, its secret `PRIVATE+KEY+…` string and the public
    /// verifier key `name+id+key`.
    pub fn generate<R: rand_core::CryptoRngCore + ?Sized>(
        rng: &mut R,
        name: &str,
    ) -> Result<(Self, Zeroizing<String>, String), CheckpointError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(CheckpointError::BadKey);
        }
        let (skey, vkey) = signed_note::generate_key(rng, name);
        let skey = Zeroizing::new(skey);
        let signer = Self::from_secret(&skey)?;
        Ok((signer, skey, vkey))
    }

    /// Loads a signer from its `PRIVATE+KEY+name+id+key` string.
    pub fn from_secret(skey: &str) -> Result<Self, CheckpointError> {
        let skey = skey.trim_end();
        // Validates the format, the algorithm (Ed25519) and the key id.
        let inner = StandardSigner::new(skey).map_err(|_| CheckpointError::BadKey)?;
        // PRIVATE+KEY+name+id+base64: names have no '+', base64 may.
        let key64 = skey.splitn(5, '+').nth(4).ok_or(CheckpointError::BadKey)?;
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(key64)
                .map_err(|_| CheckpointError::BadKey)?,
        );
        let seed: &[u8; 32] = raw
            .get(1..)
            .and_then(|k| k.try_into().ok())
            .ok_or(CheckpointError::BadKey)?;
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        Ok(NoteSigner { inner, key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Signs a checkpoint body for (origin = this key's name, size, root).
    pub fn sign_checkpoint(&self, size: u64, root: &Hash) -> Result<Vec<u8>, CheckpointError> {
        let body = tlog_tiles::Checkpoint::new(self.name(), size, *root, "")
            .map_err(|_| CheckpointError::MalformedBody)?;
        let mut note =
            Note::new(&body.to_bytes(), &[]).map_err(|_| CheckpointError::MalformedBody)?;
        note.add_sigs(&[&self.inner])
            .map_err(|_| CheckpointError::BadKey)?;
        Ok(note.to_bytes())
    }

    /// The plain Ed25519 signed-note vkey (type 0x01) of this key: the log's verifier key,
    /// or a witness's for [`NoteSigner::cosign`].
    pub fn vkey(&self) -> String {
        signed_note::new_ed25519_verifier_key(self.name(), &self.key.verifying_key())
    }

    /// The C2SP `cosignature/v1` vkey (type 0x04) of this key, for
    /// [`NoteSigner::cosign_v1`]. Its key id differs from [`NoteSigner::vkey`]'s.
    pub fn cosignature_v1_vkey(&self) -> String {
        crate::cosignature::vkey(self.name(), &self.key.verifying_key())
    }

    /// Adds this key's plain Ed25519 note signature (type 0x01) to a signed checkpoint, the
    /// cosignature format of witnesses set up before `cosignature/v1`. Existing signatures
    /// are kept. Refuses a note whose text is not a checkpoint body.
    pub fn cosign(&self, signed_note_bytes: &[u8]) -> Result<Vec<u8>, CheckpointError> {
        self.add_cosignature(signed_note_bytes, &self.inner)
    }

    /// Adds this key's C2SP `cosignature/v1` (type 0x04) at `timestamp` (POSIX seconds, at
    /// most 2^63 - 1; the caller reads the clock) to a signed checkpoint. Existing signatures
    /// are kept, except an older cosignature by this key, which is replaced. Refuses a note
    /// whose text is not a checkpoint body.
    pub fn cosign_v1(
        &self,
        signed_note_bytes: &[u8],
        timestamp: u64,
    ) -> Result<Vec<u8>, CheckpointError> {
        if timestamp > crate::cosignature::TIMESTAMP_MAX {
            return Err(CheckpointError::BadTimestamp);
        }
        let signer = CosignatureV1Signer {
            name: self.name(),
            key: &self.key,
            timestamp,
        };
        self.add_cosignature(signed_note_bytes, &signer)
    }

    fn add_cosignature(
        &self,
        signed_note_bytes: &[u8],
        signer: &dyn Signer,
    ) -> Result<Vec<u8>, CheckpointError> {
        if signed_note_bytes.len() > CHECKPOINT_BYTES_MAX {
            return Err(CheckpointError::TooLarge);
        }
        let mut note =
            Note::from_bytes(signed_note_bytes).map_err(|_| CheckpointError::MalformedNote)?;
        // A witness key signs checkpoints only: this keeps a plain signature by it from ever
        // covering text that reads as a `cosignature/v1` message, and vice versa.
        tlog_tiles::Checkpoint::from_bytes(note.text())
            .map_err(|_| CheckpointError::MalformedBody)?;
        note.add_sigs(&[signer])
            .map_err(|_| CheckpointError::BadKey)?;
        Ok(note.to_bytes())
    }
}

/// Which witnesses must cosign: at least `threshold` of `witnesses` (verifier keys).
#[derive(Debug, Clone, Default)]
pub struct WitnessPolicy {
    witnesses: Vec<String>,
    threshold: usize,
}

impl WitnessPolicy {
    /// No witnesses required.
    pub fn none() -> Self {
        Self::default()
    }

    /// Requires `threshold` of the given witness verifier keys (`name+id+key`): type 0x04
    /// keys count `cosignature/v1` signatures, type 0x01 keys plain Ed25519 note signatures.
    /// Witness names must be distinct and differ from the log's.
    pub fn new(witnesses: Vec<String>, threshold: usize) -> Result<Self, CheckpointError> {
        if witnesses.len() > WITNESSES_MAX || threshold > witnesses.len() {
            return Err(CheckpointError::BadKey);
        }
        let mut names = std::collections::BTreeSet::new();
        for w in &witnesses {
            let v = witness_verifier(w)?;
            if !names.insert(v.name().to_owned()) {
                return Err(CheckpointError::BadKey);
            }
        }
        Ok(WitnessPolicy {
            witnesses,
            threshold,
        })
    }
}

/// Parses and verifies a signed checkpoint against the log's verifier key and a witness
/// policy. Every byte is untrusted; nothing panics.
pub fn verify_checkpoint(
    bytes: &[u8],
    log_vkey: &str,
    policy: &WitnessPolicy,
) -> Result<Checkpoint, CheckpointError> {
    if bytes.len() > CHECKPOINT_BYTES_MAX {
        return Err(CheckpointError::TooLarge);
    }
    let log = StandardVerifier::new(log_vkey).map_err(|_| CheckpointError::BadKey)?;
    let log_name = log.name().to_owned();
    let log_id = log.key_id();
    let mut verifiers: Vec<Box<dyn Verifier>> = vec![Box::new(log)];
    for w in &policy.witnesses {
        let v = witness_verifier(w)?;
        if v.name() == log_name {
            return Err(CheckpointError::BadKey);
        }
        verifiers.push(v);
    }
    let note = Note::from_bytes(bytes).map_err(|_| CheckpointError::MalformedNote)?;
    let (verified, _unknown) = note
        .verify(&VerifierList::new(verifiers))
        .map_err(|e| match e {
            signed_note::NoteError::InvalidSignature { name, .. } if name != log_name => {
                CheckpointError::BadWitnessSignature(name)
            }
            _ => CheckpointError::BadSignature,
        })?;
    if !verified
        .iter()
        .any(|s| s.name() == log_name && s.id() == log_id)
    {
        return Err(CheckpointError::BadSignature);
    }
    let body = tlog_tiles::Checkpoint::from_bytes(note.text())
        .map_err(|_| CheckpointError::MalformedBody)?;
    if body.origin() != log_name {
        return Err(CheckpointError::WrongOrigin);
    }
    // Extension lines (C2SP tlog-checkpoint) are accepted and ignored: we never write them
    // and nothing here depends on them.
    let mut witnesses: Vec<String> = verified
        .iter()
        .filter(|s| s.name() != log_name)
        .map(|s| s.name().to_owned())
        .collect();
    witnesses.sort();
    witnesses.dedup();
    if witnesses.len() < policy.threshold {
        return Err(CheckpointError::WitnessQuorum {
            got: witnesses.len(),
            need: policy.threshold,
        });
    }
    Ok(Checkpoint {
        origin: log_name,
        size: body.size(),
        root: *body.hash(),
        witnesses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn root(b: u8) -> Hash {
        Hash([b; 32])
    }

    #[test]
    fn sign_then_verify_and_reject_changes() {
        let (s, _sk, vk) = NoteSigner::generate(&mut OsRng, "example.org/log").unwrap();
        let cp = s.sign_checkpoint(42, &root(7)).unwrap();
        let text = String::from_utf8(cp.clone()).unwrap();
        assert!(text.starts_with("example.org/log\n42\n"), "{text}");
        let got = verify_checkpoint(&cp, &vk, &WitnessPolicy::none()).unwrap();
        assert_eq!((got.size, got.root), (42, root(7)));
        let forged = text.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            verify_checkpoint(forged.as_bytes(), &vk, &WitnessPolicy::none()),
            Err(CheckpointError::BadSignature)
        ));
        let (_, _, other) = NoteSigner::generate(&mut OsRng, "example.org/log").unwrap();
        assert!(verify_checkpoint(&cp, &other, &WitnessPolicy::none()).is_err());
    }

    /// A secret key round-trips, also when its base64 contains '+' (the field separator).
    #[test]
    fn secret_keys_with_plus_in_base64_load() {
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(13);
        let mut plus = 0;
        for i in 0..32 {
            let (s, skey, vkey) = NoteSigner::generate(&mut rng, &format!("w{i}")).unwrap();
            plus += usize::from(skey.splitn(5, '+').nth(4).unwrap().contains('+'));
            let loaded = NoteSigner::from_secret(&skey).unwrap();
            assert_eq!(loaded.vkey(), vkey);
            assert_eq!(loaded.cosignature_v1_vkey(), s.cosignature_v1_vkey());
        }
        assert!(plus > 0, "the seed gives keys with '+' in their base64");
    }

    #[test]
    fn witness_quorum_k_of_n() {
        let (s, _, vk) = NoteSigner::generate(&mut OsRng, "log").unwrap();
        let ws: Vec<_> = (0..3)
            .map(|i| NoteSigner::generate(&mut OsRng, &format!("witness{i}")).unwrap())
            .collect();
        let policy = WitnessPolicy::new(ws.iter().map(|w| w.2.clone()).collect(), 2).unwrap();
        let mut cp = s.sign_checkpoint(1, &root(1)).unwrap();
        assert!(matches!(
            verify_checkpoint(&cp, &vk, &policy),
            Err(CheckpointError::WitnessQuorum { got: 0, need: 2 })
        ));
        cp = ws[0].0.cosign(&cp).unwrap();
        // The same witness twice still counts once.
        let twice = ws[0].0.cosign(&cp).unwrap();
        assert!(matches!(
            verify_checkpoint(&twice, &vk, &policy),
            Err(CheckpointError::WitnessQuorum { got: 1, need: 2 })
        ));
        // A witness outside the policy does not count.
        let (stranger, _, _) = NoteSigner::generate(&mut OsRng, "stranger").unwrap();
        let with_stranger = stranger.cosign(&cp).unwrap();
        assert!(verify_checkpoint(&with_stranger, &vk, &policy).is_err());
        cp = ws[2].0.cosign(&cp).unwrap();
        // A broken cosignature is named as the witness's, not the log's.
        let mut broken = String::from_utf8(cp.clone()).unwrap();
        let line = broken
            .lines()
            .find(|l| l.starts_with("— witness2 "))
            .unwrap()
            .to_owned();
        let mut sig = line.rsplit(' ').next().unwrap().as_bytes().to_vec();
        sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
        let fixed = format!("— witness2 {}", String::from_utf8(sig).unwrap());
        broken = broken.replace(&line, &fixed);
        let err = verify_checkpoint(broken.as_bytes(), &vk, &policy).unwrap_err();
        assert_eq!(err.to_string(), "invalid cosignature by witness witness2");
        let err = crate::Error::from(err);
        assert_eq!(
            err.to_string(),
            "checkpoint: invalid cosignature by witness witness2"
        );
        assert!(std::error::Error::source(&err).is_none(), "printed once");
        let quorum = crate::Error::from(CheckpointError::WitnessQuorum { got: 2, need: 3 });
        assert_eq!(
            quorum.to_string(),
            "checkpoint: 2 of the required 3 witness cosignatures"
        );
        assert!(std::error::Error::source(&quorum).is_none(), "printed once");
        let got = verify_checkpoint(&cp, &vk, &policy).unwrap();
        assert_eq!(
            got.witnesses,
            vec!["witness0".to_owned(), "witness2".to_owned()]
        );
    }

    /// Interop: the signed note from Go's golang.org/x/mod/sumdb/note tests (not written by
    /// us) parses and verifies with the same stack, and a one-character change fails.
    #[test]
    fn go_sumdb_note_vector_verifies() {
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let msg = "If you think cryptography is the answer to your problem,\n\
                   then you don't know what your problem is.\n\
                   \n\
                   — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let v = StandardVerifier::new(vkey).unwrap();
        let note = Note::from_bytes(msg.as_bytes()).unwrap();
        assert!(
            note.verify(&VerifierList::new(vec![Box::new(v.clone())]))
                .is_ok()
        );
        let bad = Note::from_bytes(msg.replace("cryptography", "cryptographY").as_bytes()).unwrap();
        assert!(bad.verify(&VerifierList::new(vec![Box::new(v)])).is_err());
        // Not a checkpoint body, so the checkpoint verifier rejects it cleanly.
        assert!(matches!(
            verify_checkpoint(msg.as_bytes(), vkey, &WitnessPolicy::none()),
            Err(CheckpointError::MalformedBody)
        ));
    }

    /// Interop: the example checkpoint body from the C2SP tlog-checkpoint spec parses.
    #[test]
    fn c2sp_example_checkpoint_body_parses() {
        let body =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let c = tlog_tiles::Checkpoint::from_bytes(body.as_bytes()).unwrap();
        assert_eq!(c.size(), 20_852_163);
        assert_eq!(c.to_bytes(), body.as_bytes());
    }

    #[test]
    fn extension_lines_are_accepted_and_ignored() {
        let (s, _, vk) = NoteSigner::generate(&mut OsRng, "example.org/log").unwrap();
        let body = format!(
            "example.org/log\n5\n{}\nextension line one\nanother\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [3u8; 32])
        );
        let mut note = Note::new(body.as_bytes(), &[]).unwrap();
        note.add_sigs(&[&s.inner]).unwrap();
        let signed = note.to_bytes();
        let got = verify_checkpoint(&signed, &vk, &WitnessPolicy::none()).unwrap();
        assert_eq!((got.size, got.root), (5, root(3)));
    }

    #[test]
    fn garbage_never_panics() {
        let (_, _, vk) = NoteSigner::generate(&mut OsRng, "log").unwrap();
        for s in [
            "",
            "\n\n",
            "log\n1\n\n— log AAAA\n",
            "x\n\n— \n",
            "— — —\n\n\n",
        ] {
            assert!(verify_checkpoint(s.as_bytes(), &vk, &WitnessPolicy::none()).is_err());
        }
        assert!(matches!(
            verify_checkpoint(
                &vec![b'a'; CHECKPOINT_BYTES_MAX + 1],
                &vk,
                &WitnessPolicy::none()
            ),
            Err(CheckpointError::TooLarge)
        ));
    }
}
