//! The writer's MAC key on disk: two fixed 64-byte slots overwritten in place.
//!
//! Slot layout: `"RLK1" | epoch u64 BE | committed u64 BE | key [32] | SHA-256(previous)[..12]`.
//! The key is `K(n)` for the next entry to seal, `n` = `epoch` = `committed`, the number of
//! entries durable when it was written (keys are per position, see [`crate::mac`]). Entries
//! from `n` on are sealed with keys derived from this one, so a defect there is a torn tail,
//! not tampering; `load` rejects a slot whose two counters differ.
//!
//! Evolving writes the new key into the slot not holding the current one and fsyncs, then
//! overwrites the old slot with zeros and fsyncs. A crash between the two leaves both slots valid; `load` takes the
//! newer and erases the older. Overwriting in place is the best a file system offers; see
//! ADR 0202 for what it cannot promise on SSDs and copy-on-write file systems.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::mac::EpochKey;

const SLOT_LEN: usize = 64;
const MAGIC: &[u8; 4] = b"RLK1";

/// The key file, opened read-write.
pub(crate) struct KeyFile {
    file: File,
    /// Slot (0 or 1) holding the current key.
    slot: u64,
    /// Epoch of the current key.
    epoch: u64,
}

fn encode_slot(key: &EpochKey, committed: u64) -> [u8; SLOT_LEN] {
    let mut s = [0u8; SLOT_LEN];
    s[..4].copy_from_slice(MAGIC);
    s[4..12].copy_from_slice(&key.epoch().to_be_bytes());
    s[12..20].copy_from_slice(&committed.to_be_bytes());
    s[20..52].copy_from_slice(key.danger_bytes());
    let check = Sha256::digest(&s[..52]);
    s[52..].copy_from_slice(&check[..12]);
    s
}

fn decode_slot(s: &[u8]) -> Option<(EpochKey, u64)> {
    if s.len() != SLOT_LEN || &s[..4] != MAGIC {
        return None;
    }
    let check = Sha256::digest(&s[..52]);
    if check[..12] != s[52..] {
        return None;
    }
    let epoch = u64::from_be_bytes(s[4..12].try_into().ok()?);
    let committed = u64::from_be_bytes(s[12..20].try_into().ok()?);
    if epoch != committed {
        return None;
    }
    let mut k = [0u8; 32];
    k.copy_from_slice(&s[20..52]);
    let key = EpochKey::new(epoch, k);
    k.zeroize();
    Some((key, committed))
}

impl KeyFile {
    /// Creates the key file (mode 0600) holding `key` in its slot.
    pub(crate) fn create(path: &Path, key: &EpochKey) -> io::Result<()> {
        let mut bytes = [0u8; 2 * SLOT_LEN];
        let mut enc = encode_slot(key, key.epoch());
        bytes[..SLOT_LEN].copy_from_slice(&enc);
        enc.zeroize();
        let r = crate::fsutil::create_private(path, &bytes);
        bytes.zeroize();
        r
    }

    /// Opens the key file and returns the newest valid key and its `committed` count. Erases
    /// the other slot if it still holds an older key.
    pub(crate) fn load(path: &Path) -> io::Result<(KeyFile, EpochKey, u64)> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        if file.metadata()?.len() != 2 * SLOT_LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "key file has wrong size",
            ));
        }
        let mut bytes = [0u8; 2 * SLOT_LEN];
        file.read_exact(&mut bytes)?;
        let a = decode_slot(&bytes[..SLOT_LEN]);
        let b = decode_slot(&bytes[SLOT_LEN..]);
        bytes.zeroize();
        let mut kf = KeyFile {
            file,
            slot: 0,
            epoch: 0,
        };
        let (key, committed, slot) = match (a, b) {
            (Some(a), Some(b)) => {
                let (new, new_slot) = if a.0.epoch() >= b.0.epoch() {
                    (a, 0)
                } else {
                    (b, 1)
                };
                kf.write_slot(1 - new_slot, &[0u8; SLOT_LEN])?;
                (new.0, new.1, new_slot)
            }
            (Some(a), None) => (a.0, a.1, 0),
            (None, Some(b)) => (b.0, b.1, 1),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no valid key slot",
                ));
            }
        };
        kf.slot = slot;
        kf.epoch = key.epoch();
        Ok((kf, key, committed))
    }

    fn write_slot(&mut self, slot: u64, bytes: &[u8; SLOT_LEN]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(slot * SLOT_LEN as u64))?;
        self.file.write_all(bytes)?;
        self.file.sync_data()
    }

    /// Persists `new` = `K(n)` (already evolved in memory), `n` entries durable: new slot
    /// first, then erase the old. `n` never decreases.
    pub(crate) fn evolve(&mut self, new: &EpochKey) -> io::Result<()> {
        assert!(new.epoch() >= self.epoch, "keys only evolve forward");
        if new.epoch() == self.epoch {
            return Ok(());
        }
        let mut enc = encode_slot(new, new.epoch());
        let r = self.write_slot(1 - self.slot, &enc);
        enc.zeroize();
        r?;
        let old = self.slot;
        self.slot = 1 - self.slot;
        self.epoch = new.epoch();
        self.write_slot(old, &[0u8; SLOT_LEN])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evolve_keeps_one_key_and_erases_the_old_slot() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mac.key");
        let mut k = EpochKey::new(0, [5; 32]);
        KeyFile::create(&p, &k).unwrap();
        let (mut kf, loaded, committed) = KeyFile::load(&p).unwrap();
        assert_eq!((loaded.epoch(), committed), (0, 0));
        k.evolve_to(10);
        kf.evolve(&k).unwrap();
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(&raw[..SLOT_LEN], &[0u8; SLOT_LEN], "old slot erased");
        assert!(
            !raw.windows(32).any(|w| w == [5u8; 32]),
            "K(0) no longer on disk"
        );
        drop(kf);
        let (mut kf, loaded, committed) = KeyFile::load(&p).unwrap();
        assert_eq!((loaded.epoch(), committed), (10, 10));
        assert_eq!(loaded.danger_bytes(), k.danger_bytes());
        // An even jump lands in the other slot too (slots alternate, whatever the parity).
        k.evolve_to(12);
        kf.evolve(&k).unwrap();
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(&raw[SLOT_LEN..], &[0u8; SLOT_LEN], "K(10) erased");
        let (_, loaded, _) = KeyFile::load(&p).unwrap();
        assert_eq!(loaded.epoch(), 12);
    }

    #[test]
    fn corrupt_slots_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mac.key");
        KeyFile::create(&p, &EpochKey::new(0, [5; 32])).unwrap();
        let mut raw = std::fs::read(&p).unwrap();
        raw[30] ^= 1;
        std::fs::write(&p, &raw).unwrap();
        assert!(KeyFile::load(&p).is_err());
    }
}
