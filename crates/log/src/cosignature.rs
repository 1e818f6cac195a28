//! C2SP tlog-cosignature `cosignature/v1` (Ed25519), sans-IO.
//!
//! A witness's verifier key is a C2SP vkey with signature type 0x04:
//! `name+id+base64(0x04 || 32-byte Ed25519 public key)`, its key id the first 4 bytes of
//! `SHA-256(name || "\n" || 0x04 || public key)`. The note signature line carries
//! `base64(key id || timestamp || signature)`: the timestamp is a big-endian u64 of POSIX
//! seconds (at most 2^63 - 1), and the Ed25519 signature covers
//! `"cosignature/v1\ntime <timestamp>\n"` followed by the whole checkpoint text (extension
//! lines included). The `signed_note` crate has only type 0x01, so this module supplies the
//! 0x04 [`Verifier`] and [`Signer`]; the Ed25519 primitive is `ed25519-dalek`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use signed_note::{Signer, StandardVerifier, Verifier};

use crate::checkpoint::CheckpointError;

/// Signature type of a plain Ed25519 signed-note key.
const ALG_ED25519: u8 = 0x01;
/// Signature type of a `cosignature/v1` witness key.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Largest timestamp the spec allows (2^63 - 1).
pub const TIMESTAMP_MAX: u64 = i64::MAX as u64;
/// Bytes of a `cosignature/v1` signature after the key id: timestamp and Ed25519 signature.
const SIG_LEN: usize = 8 + ed25519_dalek::SIGNATURE_LENGTH;

/// The message a `cosignature/v1` signature covers.
fn signed_message(timestamp: u64, text: &[u8]) -> Vec<u8> {
    let head = format!("cosignature/v1\ntime {timestamp}\n");
    let mut m = Vec::with_capacity(head.len() + text.len());
    m.extend_from_slice(head.as_bytes());
    m.extend_from_slice(text);
    m
}

/// Key id of a `cosignature/v1` key.
fn key_id(name: &str, key: &VerifyingKey) -> u32 {
    let mut typed = [0u8; 33];
    typed[0] = ALG_COSIGNATURE_V1;
    typed[1..].copy_from_slice(key.as_bytes());
    signed_note::key_id(name, &typed)
}

/// The `cosignature/v1` vkey (`name+id+base64(0x04 || key)`) of an Ed25519 public key.
pub(crate) fn vkey(name: &str, key: &VerifyingKey) -> String {
    let mut typed = [0u8; 33];
    typed[0] = ALG_COSIGNATURE_V1;
    typed[1..].copy_from_slice(key.as_bytes());
    format!("{name}+{:08x}+{}", key_id(name, key), BASE64.encode(typed))
}

/// Verifies `cosignature/v1` signatures of one witness key.
pub(crate) struct CosignatureV1Verifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl Verifier for CosignatureV1Verifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = <&[u8; SIG_LEN]>::try_from(sig) else {
            return false;
        };
        let (ts, ed) = sig.split_at(8);
        let timestamp = u64::from_be_bytes(ts.try_into().expect("8 bytes"));
        if timestamp > TIMESTAMP_MAX {
            return false;
        }
        let ed = ed25519_dalek::Signature::from_bytes(ed.try_into().expect("64 bytes"));
        self.key
            .verify_strict(&signed_message(timestamp, msg), &ed)
            .is_ok()
    }
}

/// Signs `cosignature/v1` at a fixed timestamp (the caller's clock; this module has none).
pub(crate) struct CosignatureV1Signer<'a> {
    pub(crate) name: &'a str,
    pub(crate) key: &'a SigningKey,
    pub(crate) timestamp: u64,
}

impl Signer for CosignatureV1Signer<'_> {
    fn name(&self) -> &str {
        self.name
    }

    fn key_id(&self) -> u32 {
        key_id(self.name, &self.key.verifying_key())
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        if self.timestamp > TIMESTAMP_MAX {
            return Err(ed25519_dalek::SignatureError::new());
        }
        let sig = self.key.try_sign(&signed_message(self.timestamp, msg))?;
        let mut out = Vec::with_capacity(SIG_LEN);
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&sig.to_bytes());
        Ok(out)
    }
}

/// Parses a witness verifier key: a plain Ed25519 note key (type 0x01) or a
/// `cosignature/v1` key (type 0x04). Any other type, a wrong key id, or a malformed key is
/// refused.
pub(crate) fn witness_verifier(vkey: &str) -> Result<Box<dyn Verifier>, CheckpointError> {
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(id16), Some(key64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(CheckpointError::BadKey);
    };
    let key = BASE64.decode(key64).map_err(|_| CheckpointError::BadKey)?;
    match key.first() {
        Some(&ALG_ED25519) => Ok(Box::new(
            StandardVerifier::new(vkey).map_err(|_| CheckpointError::BadKey)?,
        )),
        Some(&ALG_COSIGNATURE_V1) => {
            if id16.len() != 8 || !signed_note::is_key_name_valid(name) {
                return Err(CheckpointError::BadKey);
            }
            let id = u32::from_str_radix(id16, 16).map_err(|_| CheckpointError::BadKey)?;
            let bytes: &[u8; 32] = key[1..].try_into().map_err(|_| CheckpointError::BadKey)?;
            let key = VerifyingKey::from_bytes(bytes).map_err(|_| CheckpointError::BadKey)?;
            if id != key_id(name, &key) {
                return Err(CheckpointError::BadKey);
            }
            Ok(Box::new(CosignatureV1Verifier {
                name: name.to_owned(),
                id,
                key,
            }))
        }
        _ => Err(CheckpointError::BadKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{NoteSigner, WitnessPolicy, verify_checkpoint};
    use crate::merkle::Hash;
    use rand_core::OsRng;

    /// Rewrites the payload (key id || signature) of `name`'s signature line.
    fn rewrite(note: &[u8], name: &str, f: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let text = std::str::from_utf8(note).unwrap();
        let prefix = format!("— {name} ");
        let mut out = String::new();
        for line in text.split_inclusive('\n') {
            match line.strip_prefix(&prefix) {
                Some(b64) => {
                    let mut raw = BASE64.decode(b64.trim_end()).unwrap();
                    f(&mut raw);
                    out.push_str(&format!("{prefix}{}\n", BASE64.encode(raw)));
                }
                None => out.push_str(line),
            }
        }
        assert_ne!(out.as_bytes(), note, "no line of {name}");
        out.into_bytes()
    }

    struct Setup {
        log_vkey: String,
        witness: NoteSigner,
        checkpoint: Vec<u8>,
    }

    fn setup() -> Setup {
        let (log, _, log_vkey) = NoteSigner::generate(&mut OsRng, "example.org/log").unwrap();
        let (witness, _, _) = NoteSigner::generate(&mut OsRng, "example.org/witness").unwrap();
        let checkpoint = log.sign_checkpoint(10, &Hash([5; 32])).unwrap();
        Setup {
            log_vkey,
            witness,
            checkpoint,
        }
    }

    fn policy(vkey: String) -> WitnessPolicy {
        WitnessPolicy::new(vec![vkey], 1).unwrap()
    }

    /// Known answer from sigsum-go (pkg/checkpoint/checkpoint_test.go, not written by us):
    /// witness key seed {17, 0, ...}, name example.org/witness, timestamp 1234, over the
    /// checkpoint "example.org/log\n10\nHA5H...=\n". Ed25519 is deterministic, so our signer
    /// must produce the same line byte for byte, and our verifier must accept it.
    #[test]
    fn sigsum_known_answer_vector() {
        let mut seed = [0u8; 32];
        seed[0] = 17;
        let key = SigningKey::from_bytes(&seed);
        let name = "example.org/witness";
        let text = b"example.org/log\n10\nHA5HAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let want = "ys8uUAAAAAAAAATSftMzceM8zssdZ9jin9SjwIxzx9iADMf63VqirX2hafol9RsqNqbofIz0LVRqHXI2kpEBSki5RTXFtxz1vo9+Cg==";
        let raw = BASE64.decode(want).unwrap();
        assert_eq!(key_id(name, &key.verifying_key()), 0xcacf2e50);
        assert_eq!(&raw[..4], &0xcacf2e50u32.to_be_bytes());
        assert_eq!(&raw[4..12], &1234u64.to_be_bytes());
        let signer = CosignatureV1Signer {
            name,
            key: &key,
            timestamp: 1234,
        };
        assert_eq!(signer.sign(text).unwrap(), raw[4..]);
        let v = witness_verifier(&vkey(name, &key.verifying_key())).unwrap();
        assert_eq!(v.key_id(), 0xcacf2e50);
        assert!(v.verify(text, &raw[4..]));
        assert!(!v.verify(
            b"example.org/log\n11\nHA5HAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            &raw[4..]
        ));
        // Through the note parser too.
        let note = format!("{}\n— {name} {want}\n", std::str::from_utf8(text).unwrap());
        let note = signed_note::Note::from_bytes(note.as_bytes()).unwrap();
        let (ok, _) = note
            .verify(&signed_note::VerifierList::new(vec![v]))
            .unwrap();
        assert_eq!(ok.len(), 1);
    }

    #[test]
    fn cosignature_v1_counts_for_its_vkey() {
        let s = setup();
        let vk = s.witness.cosignature_v1_vkey();
        assert!(vk.starts_with("example.org/witness+"));
        let signed = s.witness.cosign_v1(&s.checkpoint, 1_700_000_000).unwrap();
        let got = verify_checkpoint(&signed, &s.log_vkey, &policy(vk.clone())).unwrap();
        assert_eq!(got.witnesses, vec!["example.org/witness".to_owned()]);
        assert_eq!(got.size, 10);
        // The line is key id || u64 timestamp || Ed25519 signature (76 bytes).
        let line = std::str::from_utf8(&signed)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("— example.org/witness "))
            .unwrap()
            .to_owned();
        let raw = BASE64.decode(line.rsplit(' ').next().unwrap()).unwrap();
        assert_eq!(raw.len(), 76);
        assert_eq!(&raw[4..12], &1_700_000_000u64.to_be_bytes());
        // Mixed with a plain witness in one policy, both count.
        let (plain, _, plain_vk) = NoteSigner::generate(&mut OsRng, "plain.example").unwrap();
        let both = plain.cosign(&signed).unwrap();
        let two = WitnessPolicy::new(vec![vk, plain_vk], 2).unwrap();
        let got = verify_checkpoint(&both, &s.log_vkey, &two).unwrap();
        assert_eq!(got.witnesses.len(), 2);
    }

    #[test]
    fn tampered_cosignatures_are_rejected() {
        let s = setup();
        let vk = s.witness.cosignature_v1_vkey();
        let signed = s.witness.cosign_v1(&s.checkpoint, 1_700_000_000).unwrap();
        let name = "example.org/witness";
        let bad_witness = |note: &[u8]| {
            matches!(
                verify_checkpoint(note, &s.log_vkey, &policy(vk.clone())),
                Err(crate::CheckpointError::BadWitnessSignature(n)) if n == name
            )
        };
        // Bad signature bytes.
        assert!(bad_witness(&rewrite(&signed, name, |r| r[40] ^= 1)));
        // Timestamp changed (it is inside the signed message).
        assert!(bad_witness(&rewrite(&signed, name, |r| r[11] ^= 1)));
        // Timestamp above 2^63 - 1, even with a valid signature over it.
        let huge = 1u64 << 63;
        let text = note_text(&s.checkpoint);
        let over = rewrite(&signed, name, |r| {
            let ed = s.witness.key.sign(&signed_message(huge, &text));
            r[4..12].copy_from_slice(&huge.to_be_bytes());
            r[12..].copy_from_slice(&ed.to_bytes());
        });
        assert!(bad_witness(&over));
        // The same construction at an allowed timestamp does verify (so the above failed on
        // the bound alone).
        let fine = rewrite(&signed, name, |r| {
            let ed = s.witness.key.sign(&signed_message(huge - 1, &text));
            r[4..12].copy_from_slice(&(huge - 1).to_be_bytes());
            r[12..].copy_from_slice(&ed.to_bytes());
        });
        assert!(verify_checkpoint(&fine, &s.log_vkey, &policy(vk.clone())).is_ok());
        assert!(matches!(
            s.witness.cosign_v1(&s.checkpoint, huge),
            Err(crate::CheckpointError::BadTimestamp)
        ));
        // Wrong key id: not this witness's line, so it does not count.
        let wrong_id = rewrite(&signed, name, |r| r[0] ^= 1);
        assert!(matches!(
            verify_checkpoint(&wrong_id, &s.log_vkey, &policy(vk.clone())),
            Err(crate::CheckpointError::WitnessQuorum { got: 0, need: 1 })
        ));
    }

    /// The note text (the checkpoint body) of a signed note.
    fn note_text(note: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(note).unwrap();
        let end = text.find("\n\n").unwrap();
        text.as_bytes()[..=end].to_vec()
    }

    #[test]
    fn extension_lines_are_covered() {
        let (log, _, log_vkey) = NoteSigner::generate(&mut OsRng, "example.org/log").unwrap();
        let (w, _, _) = NoteSigner::generate(&mut OsRng, "w").unwrap();
        let body = |ext: &str| {
            let t = format!("example.org/log\n3\n{}\n{ext}\n", BASE64.encode([1u8; 32]));
            let mut n = signed_note::Note::new(t.as_bytes(), &[]).unwrap();
            n.add_sigs(&[&log.inner]).unwrap();
            n.to_bytes()
        };
        let signed = w.cosign_v1(&body("ext one"), 7).unwrap();
        let p = policy(w.cosignature_v1_vkey());
        assert!(verify_checkpoint(&signed, &log_vkey, &p).is_ok());
        // The log re-signs a changed extension line; the old cosignature no longer holds.
        let relogged = body("ext two");
        let cosig = std::str::from_utf8(&signed)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("— w "))
            .unwrap()
            .to_owned();
        let swapped = format!("{}{cosig}\n", std::str::from_utf8(&relogged).unwrap());
        assert!(matches!(
            verify_checkpoint(swapped.as_bytes(), &log_vkey, &p),
            Err(crate::CheckpointError::BadWitnessSignature(_))
        ));
    }

    #[test]
    fn formats_do_not_cross() {
        let s = setup();
        let name = "example.org/witness";
        let v1_vk = s.witness.cosignature_v1_vkey();
        let plain_vk = s.witness.vkey();
        let v1 = s.witness.cosign_v1(&s.checkpoint, 1_700_000_000).unwrap();
        let plain = s.witness.cosign(&s.checkpoint).unwrap();
        let v1_id = u32::from_str_radix(v1_vk.split('+').nth(1).unwrap(), 16).unwrap();
        let plain_id = u32::from_str_radix(plain_vk.split('+').nth(1).unwrap(), 16).unwrap();
        assert_ne!(v1_id, plain_id, "the type byte is in the key id");
        // Each verifies only under its own vkey: the other key id is an unknown key.
        assert!(verify_checkpoint(&v1, &s.log_vkey, &policy(v1_vk.clone())).is_ok());
        assert!(verify_checkpoint(&plain, &s.log_vkey, &policy(plain_vk.clone())).is_ok());
        assert!(verify_checkpoint(&v1, &s.log_vkey, &policy(plain_vk.clone())).is_err());
        assert!(verify_checkpoint(&plain, &s.log_vkey, &policy(v1_vk.clone())).is_err());
        // A cosignature/v1 payload presented under the plain key's id is refused...
        let v1_as_plain = rewrite(&v1, name, |r| {
            r[..4].copy_from_slice(&plain_id.to_be_bytes())
        });
        assert!(matches!(
            verify_checkpoint(&v1_as_plain, &s.log_vkey, &policy(plain_vk.clone())),
            Err(crate::CheckpointError::BadWitnessSignature(_))
        ));
        // ...and a plain signature under the cosignature/v1 key's id.
        let plain_as_v1 = rewrite(&plain, name, |r| {
            r[..4].copy_from_slice(&v1_id.to_be_bytes())
        });
        assert!(matches!(
            verify_checkpoint(&plain_as_v1, &s.log_vkey, &policy(v1_vk.clone())),
            Err(crate::CheckpointError::BadWitnessSignature(_))
        ));
        // A plain signature with a zero timestamp glued on is not a cosignature/v1 either.
        let padded = rewrite(&plain, name, |r| {
            r[..4].copy_from_slice(&v1_id.to_be_bytes());
            r.splice(4..4, [0u8; 8]);
        });
        assert!(verify_checkpoint(&padded, &s.log_vkey, &policy(v1_vk)).is_err());
    }

    #[test]
    fn witness_vkeys_are_checked() {
        let s = setup();
        let good = s.witness.cosignature_v1_vkey();
        assert!(witness_verifier(&good).is_ok());
        assert!(witness_verifier(&s.witness.vkey()).is_ok());
        let mut parts: Vec<String> = good.splitn(3, '+').map(str::to_owned).collect();
        // Wrong key id.
        let id = u32::from_str_radix(&parts[1], 16).unwrap() ^ 1;
        let wrong_id = format!("{}+{id:08x}+{}", parts[0], parts[2]);
        assert!(witness_verifier(&wrong_id).is_err());
        // Unknown type byte, wrong length, garbage.
        let mut raw = BASE64.decode(&parts[2]).unwrap();
        raw[0] = 0x02;
        parts[2] = BASE64.encode(&raw);
        assert!(witness_verifier(&parts.join("+")).is_err());
        raw[0] = ALG_COSIGNATURE_V1;
        raw.push(0);
        parts[2] = BASE64.encode(&raw);
        assert!(witness_verifier(&parts.join("+")).is_err());
        for bad in ["", "a", "a+b", "a+0000000+BA==", "a b+00000000+BA=="] {
            assert!(witness_verifier(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn witnesses_sign_checkpoints_only() {
        let s = setup();
        let (log, _, _) = NoteSigner::generate(&mut OsRng, "other").unwrap();
        // A signed note whose text is a cosignature/v1 message is not a checkpoint.
        let text = signed_message(
            5,
            b"example.org/log\n10\nBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=\n",
        );
        let mut note = signed_note::Note::new(&text, &[]).unwrap();
        note.add_sigs(&[&log.inner]).unwrap();
        let note = note.to_bytes();
        assert!(matches!(
            s.witness.cosign(&note),
            Err(crate::CheckpointError::MalformedBody)
        ));
        assert!(matches!(
            s.witness.cosign_v1(&note, 5),
            Err(crate::CheckpointError::MalformedBody)
        ));
    }
}
