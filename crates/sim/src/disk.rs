//! [`SimulatedDiskStorage`]: the real `FileStorage` of the cluster runtime on a
//! [`SimulatedDisk`] (a **simulated** in-memory disk), as a replica's [`Storage`] in the
//! simulator.
//!
//! The runtime appends the entries the core emitted and syncs before it reports them
//! persisted; the simulator does the same at its `Persisted` event ([`Storage::apply`],
//! one entry at a time, or [`SimulatedDiskStorage::append`] then
//! [`SimulatedDiskStorage::sync`]). A crash ([`SimulatedDiskStorage::crash`]) hands over the
//! entries the core emitted but was not yet told are persisted: they are appended and a
//! sync is started that the power cuts after a random number of disk operations; then the
//! disk crashes (any prefix of the unsynced writes survives, the last one possibly torn,
//! unsynced directory entries may be lost) and the storage is reopened, cutting a torn
//! tail, exactly as a restarted replica would. [`Storage::recover`] then returns what the
//! disk holds.
//!
//! Invariants the simulator may rely on: everything reported persisted survives a crash;
//! what survives beyond it is a prefix of the entries emitted after it; a corrupted disk is
//! reported as [`StorageError::Corrupt`], never as different state.

use std::path::Path;

use rampart_bft::{Config, PersistEntry, RecoveredState, Storage, StorageError};
use rampart_cluster::simdisk::{CrashPlan, SimulatedDisk};
use rampart_cluster::storage::FileStorage;

const DIR: &str = "/replica";

/// Disk operations a crash may let a started sync perform before the power goes (the sync
/// of one burst with a checkpoint and a rotation takes about 20).
const CRASH_OPS_MAX: u64 = 24;

/// `FileStorage` on a [`SimulatedDisk`] (see the module docs).
#[derive(Debug)]
pub struct SimulatedDiskStorage {
    disk: SimulatedDisk,
    config: Config,
    /// `None` after a crash whose reopen failed (the error was returned then).
    storage: Option<FileStorage<SimulatedDisk>>,
}

fn gone() -> StorageError {
    StorageError::Corrupt {
        what: "simulated disk storage did not reopen after its last crash",
    }
}

impl SimulatedDiskStorage {
    /// Fresh storage on an empty simulated disk.
    pub fn new(config: &Config) -> Result<SimulatedDiskStorage, StorageError> {
        let disk = SimulatedDisk::new();
        let (storage, _) = FileStorage::open_on(disk.clone(), Path::new(DIR), config)?;
        Ok(SimulatedDiskStorage {
            disk,
            config: config.clone(),
            storage: Some(storage),
        })
    }

    /// The simulated disk (for bit flips and statistics).
    #[must_use]
    pub fn disk(&self) -> &SimulatedDisk {
        &self.disk
    }

    /// Buffer one entry (no disk operation).
    pub fn append(&mut self, entry: &PersistEntry) -> Result<(), StorageError> {
        self.storage.as_mut().ok_or_else(gone)?.append(entry)
    }

    /// Make every appended entry durable.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.storage.as_mut().ok_or_else(gone)?.sync()
    }

    /// Crash the replica's machine while it was persisting `unsynced` (entries the core
    /// emitted and was not told are persisted, in order), then reopen. Returns the crash
    /// outcome, or the error reopening gave (then every later call fails).
    pub fn crash<'a, R: rand::RngCore>(
        &mut self,
        unsynced: impl IntoIterator<Item = &'a PersistEntry>,
        rng: &mut R,
    ) -> Result<CrashPlan, StorageError> {
        if let Some(mut s) = self.storage.take() {
            let mut any = false;
            for e in unsynced {
                s.append(e)?;
                any = true;
            }
            if any {
                self.disk
                    .cut_power_after(Some(rng.next_u64() % (CRASH_OPS_MAX + 1)));
                // Fails where the power goes; whatever it wrote is not acknowledged.
                let _ = s.sync();
            }
        }
        let plan = self.disk.crash(rng);
        let (storage, _) = FileStorage::open_on(self.disk.clone(), Path::new(DIR), &self.config)?;
        self.storage = Some(storage);
        Ok(plan)
    }

    /// Flip one random bit of one random durable file (not the lock file) of a crashed
    /// replica's disk, and reopen: the result must be [`StorageError::Corrupt`], and the
    /// replica cannot restart (its disk is lost; a correct simulator counts it as down for
    /// good). Returns the reopen result.
    pub fn flip_random_bit<R: rand::RngCore>(&mut self, rng: &mut R) -> Result<(), StorageError> {
        self.storage = None;
        self.disk.crash_with(&CrashPlan::default());
        let files: Vec<_> = self
            .disk
            .durable_files()
            .into_iter()
            .filter(|(p, len)| !p.ends_with("LOCK") && *len > 0)
            .collect();
        if !files.is_empty() {
            let (path, len) = &files[(rng.next_u64() % files.len() as u64) as usize];
            let bit = (rng.next_u64() % (*len as u64 * 8)) as usize;
            self.disk.flip_bit(path, bit);
        }
        let (storage, _) = FileStorage::open_on(self.disk.clone(), Path::new(DIR), &self.config)?;
        self.storage = Some(storage);
        Ok(())
    }
}

impl SimulatedDiskStorage {
    /// On a crashed replica's disk (call right after [`SimulatedDiskStorage::crash`]):
    /// flip one random bit of one random durable file (not the lock file), check that
    /// reopening refuses it as [`StorageError::Corrupt`], flip the bit back and reopen.
    /// Returns `Ok(None)` if the flip was detected (or the disk holds no file), `Ok(Some(
    /// what))` naming the flip that went undetected, or the error of the final reopen.
    pub fn flip_is_detected<R: rand::RngCore>(
        &mut self,
        rng: &mut R,
    ) -> Result<Option<String>, StorageError> {
        self.storage = None;
        let files: Vec<_> = self
            .disk
            .durable_files()
            .into_iter()
            // Not the lock file, and not a checkpoint's temporary file that a crash left
            // before its rename: it holds nothing acknowledged, and the reopen deletes it.
            .filter(|(p, len)| {
                !p.ends_with("LOCK") && p.extension().is_none_or(|e| e != "tmp") && *len > 0
            })
            .collect();
        let mut undetected = None;
        if !files.is_empty() {
            let (path, len) = &files[(rng.next_u64() % files.len() as u64) as usize];
            let bit = (rng.next_u64() % (*len as u64 * 8)) as usize;
            self.disk.flip_bit(path, bit);
            match FileStorage::open_on(self.disk.clone(), Path::new(DIR), &self.config) {
                Err(StorageError::Corrupt { .. }) => {}
                Err(e) => {
                    undetected = Some(format!(
                        "bit {bit} of {} ({len} bytes) flipped: reopen failed with {e}, not as corruption",
                        path.display()
                    ));
                }
                Ok(_) => {
                    undetected = Some(format!(
                        "bit {bit} of {} ({len} bytes) flipped: reopened without noticing",
                        path.display()
                    ));
                }
            }
            // The reopen may have taken the lock: release it as a crash would.
            self.disk.crash_with(&CrashPlan::default());
            self.disk.flip_bit(path, bit);
        }
        let (storage, _) = FileStorage::open_on(self.disk.clone(), Path::new(DIR), &self.config)?;
        self.storage = Some(storage);
        Ok(undetected)
    }
}

impl Storage for SimulatedDiskStorage {
    fn apply(&mut self, entry: &PersistEntry) -> Result<(), StorageError> {
        self.storage.as_mut().ok_or_else(gone)?.apply(entry)
    }

    fn recover(&self) -> Result<RecoveredState, StorageError> {
        self.storage.as_ref().ok_or_else(gone)?.recover()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_bft::message::{Batch, Certificate, Decision, VoteKind};
    use rampart_bft::{Digest, Regency, SeqNo, Timestamp};
    use rand::{Rng as _, SeedableRng as _};

    fn decision(cid: u64) -> PersistEntry {
        PersistEntry::Decision(Decision {
            batch: Batch {
                timestamp: Timestamp(cid),
                requests: vec![],
            },
            proof: Certificate {
                kind: VoteKind::Accept,
                regency: Regency(0),
                cid: SeqNo(cid),
                digest: Digest([cid as u8; 32]),
                votes: vec![],
            },
        })
    }

    /// The simulator's use: persisted entries always survive a crash; of the unsynced
    /// ones a prefix survives; the disk keeps working after each crash.
    #[test]
    fn persisted_entries_survive_crashes_and_unsynced_ones_survive_as_a_prefix() {
        let config = Config::new(4);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut s = SimulatedDiskStorage::new(&config).expect("new");
        let mut next = 1;
        let mut persisted = 0;
        let mut kept_some = 0;
        for round in 0..200 {
            for _ in 0..rng.gen_range(0..4) {
                s.apply(&decision(next)).expect("apply");
                persisted = next;
                next += 1;
            }
            let unsynced: Vec<_> = (next..next + rng.gen_range(0..4)).map(decision).collect();
            s.crash(&unsynced, &mut rng).expect("crash and reopen");
            let got: Vec<u64> = s
                .recover()
                .expect("recover")
                .decisions
                .iter()
                .map(|d| d.cid().0)
                .collect();
            let top = got.last().copied().unwrap_or(0);
            assert!(
                top >= persisted,
                "round {round}: lost persisted entries: {got:?}"
            );
            assert_eq!(
                got,
                (1..=top).collect::<Vec<_>>(),
                "round {round}: not a prefix"
            );
            if top > persisted {
                kept_some += 1;
            }
            // The replica goes on from what it recovered, as a restarted core would.
            next = top + 1;
            persisted = top;
        }
        assert!(kept_some > 0, "some crash kept an unsynced entry");
    }

    #[test]
    fn a_flipped_bit_is_reported_as_corruption() {
        let config = Config::new(4);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let mut s = SimulatedDiskStorage::new(&config).expect("new");
            for cid in 1..=5 {
                s.apply(&decision(cid)).expect("apply");
            }
            assert!(matches!(
                s.flip_random_bit(&mut rng),
                Err(StorageError::Corrupt { .. })
            ));
            assert!(s.recover().is_err(), "no state after a failed reopen");
        }
    }
}
