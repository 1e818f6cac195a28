//! [`FileStorage`]: the durable decision log, votes, regency and checkpoints of a replica.
//!
//! # Layout (one directory per replica)
//!
//! - `wal-NNNNNNNN.log`: segments of the write-ahead log. A record is
//!   `len: u32 LE | check: 16 bytes | payload`, where `check` is the first 16 bytes of
//!   BLAKE3(`len || payload`) and the payload is a [`PersistEntry`] in its canonical
//!   encoding (decisions, votes, regency records, log truncations). Every segment starts
//!   with the current regency and vote records, so old segments can be deleted whole.
//! - `checkpoint-CCCCCCCCCCCCCCCCCCCC.bin`: one checkpoint each, `check: 32 | payload`,
//!   written to a temporary file, fsynced and renamed (never torn). The two newest are kept.
//! - `LOCK`: held with an exclusive file lock while a replica runs, so two processes never
//!   write one directory.
//!
//! # Durability and batching
//!
//! [`FileStorage::append`] only buffers (a checkpoint too: it is queued behind the entries
//! appended before it); [`FileStorage::sync`] writes the buffer and calls `fdatasync` once,
//! or, when a checkpoint was appended, syncs the log entries before it first and then writes
//! the checkpoint file, so disk order is the order the core emitted. The runtime appends every entry the core emitted for one input (the
//! entries of a consensus instance arrive together) and syncs once before it calls
//! `handle_persisted`, so fsyncs are batched per instance and no message that depends on an
//! entry leaves before the entry is on disk. [`Storage::apply`] (append + sync) keeps the
//! trait's one-entry contract.
//!
//! # Crash safety
//!
//! On open, records are read until the first one that is short or fails its check; in the
//! last segment that is a torn tail (a crash during a write) and the file is truncated
//! there; anywhere else it is corruption and opening fails. A record is acknowledged only
//! after its fsync, so a torn tail holds nothing the replica has acted on.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use rampart_bft::{
    CHECKPOINTS_KEPT, CheckpointRecord, Config, MemStorage, PersistEntry, RecoveredState,
    RegencyRecord, SeqNo, Storage, StorageError, VoteRecord,
};

/// Bytes of a record header.
const RECORD_HEADER_BYTES: usize = 4 + 16;

/// A replica's durable storage in a directory.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    config: Config,
    _lock: File,
    wal: File,
    segment: u64,
    /// Highest decision in each live segment, oldest first: `(segment, max cid)`.
    segments: Vec<(u64, SeqNo)>,
    buf: Vec<u8>,
    /// Checkpoints appended since the last sync, each with the length `buf` had when it
    /// was appended: `sync` writes them in the order the core emitted them (issue 10,
    /// finding 2: a checkpoint never reaches disk ahead of earlier entries).
    checkpoints_queued: Vec<(usize, CheckpointRecord, PersistEntry)>,
    regency: RegencyRecord,
    vote: Option<VoteRecord>,
    /// Set by a `TruncateLog`: rotate and delete covered segments at the next sync.
    truncate_through: Option<SeqNo>,
    /// fsyncs done (for tests and benchmarks).
    syncs: u64,
}

fn corrupt(what: &'static str) -> StorageError {
    StorageError::Corrupt { what }
}

fn check16(len: &[u8; 4], payload: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(len);
    h.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:08}.log"))
}

fn checkpoint_path(dir: &Path, cid: SeqNo) -> PathBuf {
    dir.join(format!("checkpoint-{:020}.bin", cid.0))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn list(dir: &Path, prefix: &str, suffix: &str) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(num) = name
            .strip_prefix(prefix)
            .and_then(|s| s.strip_suffix(suffix))
            && let Ok(n) = num.parse::<u64>()
        {
            out.push((n, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

impl FileStorage {
    /// Open (or create) the storage in `dir`, recovering from a torn tail. Returns the
    /// storage and the state to build the replica from.
    pub fn open(
        dir: &Path,
        config: &Config,
    ) -> Result<(FileStorage, RecoveredState), StorageError> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        if lock.try_lock().is_err() {
            return Err(corrupt(
                "data directory is in use by another replica process",
            ));
        }
        // Leftovers of a checkpoint write interrupted before its rename.
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_name().to_str().is_some_and(|n| n.ends_with(".tmp")) {
                std::fs::remove_file(e.path())?;
            }
        }
        let mut mem = MemStorage::default();
        for (_, path) in list(dir, "checkpoint-", ".bin")? {
            let bytes = std::fs::read(&path)?;
            if bytes.len() < 32 || blake3::hash(&bytes[32..]).as_bytes()[..] != bytes[..32] {
                return Err(corrupt("checkpoint file fails its checksum"));
            }
            let entry = PersistEntry::decode(&bytes[32..], config)
                .map_err(|_| corrupt("checkpoint file"))?;
            if !matches!(entry, PersistEntry::Checkpoint(_)) {
                return Err(corrupt("checkpoint file holds another entry"));
            }
            mem.apply(&entry)?;
        }
        let segs = list(dir, "wal-", ".log")?;
        let mut segments = Vec::new();
        let last_index = segs.len().saturating_sub(1);
        for (i, (n, path)) in segs.iter().enumerate() {
            let max = Self::replay(path, config, &mut mem, i == last_index)?;
            segments.push((*n, max));
        }
        let segment = segs.last().map_or(1, |(n, _)| *n);
        let path = segment_path(dir, segment);
        let fresh = !path.exists();
        let mut wal = OpenOptions::new().create(true).append(true).open(&path)?;
        if fresh {
            segments.push((segment, SeqNo(0)));
            sync_dir(dir)?;
        }
        wal.seek(SeekFrom::End(0))?;
        let recovered = mem.recover()?;
        let s = FileStorage {
            dir: dir.to_owned(),
            config: config.clone(),
            _lock: lock,
            wal,
            segment,
            segments,
            buf: Vec::new(),
            checkpoints_queued: Vec::new(),
            regency: recovered.regency,
            vote: recovered.vote.clone(),
            truncate_through: None,
            syncs: 0,
        };
        Ok((s, recovered))
    }

    /// Read one segment into `mem`; truncate a torn tail if `last`. Returns its highest
    /// decision.
    fn replay(
        path: &Path,
        config: &Config,
        mem: &mut MemStorage,
        last: bool,
    ) -> Result<SeqNo, StorageError> {
        let mut bytes = Vec::new();
        File::open(path)?.read_to_end(&mut bytes)?;
        let mut pos = 0usize;
        let mut max = SeqNo(0);
        let record_max = rampart_bft::message::checkpoint_blob_bytes_max(config)
            .max(rampart_bft::BATCH_BYTES_MAX * 4);
        while pos < bytes.len() {
            let good = (|| {
                let header = bytes.get(pos..pos + RECORD_HEADER_BYTES)?;
                let len_bytes: [u8; 4] = header[..4].try_into().ok()?;
                let len = u32::from_le_bytes(len_bytes) as usize;
                if len > record_max {
                    return None;
                }
                let payload =
                    bytes.get(pos + RECORD_HEADER_BYTES..pos + RECORD_HEADER_BYTES + len)?;
                if check16(&len_bytes, payload)[..] != header[4..] {
                    return None;
                }
                let entry = PersistEntry::decode(payload, config).ok()?;
                Some((entry, RECORD_HEADER_BYTES + len))
            })();
            let Some((entry, used)) = good else {
                if !last {
                    return Err(corrupt("bad record inside an older log segment"));
                }
                tracing::warn!(path = %path.display(), offset = pos, dropped = bytes.len() - pos,
                    "torn log tail: truncating");
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(pos as u64)?;
                f.sync_all()?;
                break;
            };
            if let PersistEntry::Decision(d) = &entry {
                max = max.max(d.cid());
            }
            mem.apply(&entry)?;
            pos += used;
        }
        Ok(max)
    }

    /// fsyncs performed so far.
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    fn push_record(&mut self, entry: &PersistEntry) {
        let payload = entry.encode();
        let len = u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes();
        self.buf.extend_from_slice(&len);
        self.buf.extend_from_slice(&check16(&len, &payload));
        self.buf.extend_from_slice(&payload);
    }

    /// Buffer one entry; no I/O happens before [`FileStorage::sync`] (a checkpoint, which
    /// goes to its own file, is queued behind the entries appended before it).
    pub fn append(&mut self, entry: &PersistEntry) -> Result<(), StorageError> {
        match entry {
            PersistEntry::Checkpoint(c) => {
                self.checkpoints_queued
                    .push((self.buf.len(), c.clone(), entry.clone()));
                return Ok(());
            }
            PersistEntry::Decision(d) => {
                if let Some(last) = self.segments.last_mut() {
                    last.1 = last.1.max(d.cid());
                }
            }
            PersistEntry::Vote(v) => self.vote = Some(v.clone()),
            PersistEntry::Regency(r) => self.regency = *r,
            PersistEntry::TruncateLog { through } => {
                self.truncate_through =
                    Some(self.truncate_through.map_or(*through, |t| t.max(*through)));
            }
            _ => return Err(corrupt("unknown persist entry kind")),
        }
        self.push_record(entry);
        Ok(())
    }

    /// Make everything appended durable, in the order appended: one write and one
    /// fdatasync of the log, and, if checkpoints were appended, the log entries before each
    /// checkpoint are synced before its file is written.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        let mut written = 0;
        for (at, c, entry) in std::mem::take(&mut self.checkpoints_queued) {
            if at > written {
                self.wal.write_all(&self.buf[written..at])?;
                self.wal.sync_data()?;
                self.syncs += 1;
                written = at;
            }
            self.write_checkpoint(&c, &entry)?;
        }
        if self.buf.len() > written {
            self.wal.write_all(&self.buf[written..])?;
            self.wal.sync_data()?;
            self.syncs += 1;
        }
        self.buf.clear();
        if let Some(through) = self.truncate_through.take() {
            self.rotate(through)?;
        }
        Ok(())
    }

    /// Start a new segment headed by the current regency and vote, then delete segments
    /// whose decisions are all covered by a checkpoint.
    fn rotate(&mut self, through: SeqNo) -> Result<(), StorageError> {
        let next = self.segment + 1;
        let path = segment_path(&self.dir, next);
        let mut wal = OpenOptions::new().create(true).append(true).open(&path)?;
        self.push_record(&PersistEntry::Regency(self.regency));
        if let Some(v) = self.vote.clone() {
            self.push_record(&PersistEntry::Vote(v));
        }
        self.push_record(&PersistEntry::TruncateLog { through });
        wal.write_all(&self.buf)?;
        wal.sync_all()?;
        self.buf.clear();
        sync_dir(&self.dir)?;
        self.wal = wal;
        self.segment = next;
        self.segments.push((next, SeqNo(0)));
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[0].1 <= through {
            let (n, _) = self.segments.remove(0);
            std::fs::remove_file(segment_path(&self.dir, n))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn write_checkpoint(
        &mut self,
        c: &CheckpointRecord,
        entry: &PersistEntry,
    ) -> Result<(), StorageError> {
        let payload = entry.encode();
        let path = checkpoint_path(&self.dir, c.cid);
        let tmp = path.with_extension("bin.tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(blake3::hash(&payload).as_bytes())?;
            f.write_all(&payload)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        self.syncs += 1;
        let all = list(&self.dir, "checkpoint-", ".bin")?;
        if all.len() > CHECKPOINTS_KEPT {
            for (_, p) in &all[..all.len() - CHECKPOINTS_KEPT] {
                std::fs::remove_file(p)?;
            }
        }
        Ok(())
    }
}

impl Storage for FileStorage {
    fn apply(&mut self, entry: &PersistEntry) -> Result<(), StorageError> {
        self.append(entry)?;
        self.sync()
    }

    fn recover(&self) -> Result<RecoveredState, StorageError> {
        // Re-read from disk: what a restarted process would see.
        let mut mem = MemStorage::default();
        for (_, path) in list(&self.dir, "checkpoint-", ".bin")? {
            let bytes = std::fs::read(&path)?;
            if bytes.len() < 32 || blake3::hash(&bytes[32..]).as_bytes()[..] != bytes[..32] {
                return Err(corrupt("checkpoint file fails its checksum"));
            }
            mem.apply(
                &PersistEntry::decode(&bytes[32..], &self.config)
                    .map_err(|_| corrupt("checkpoint file"))?,
            )?;
        }
        for (_, path) in list(&self.dir, "wal-", ".log")? {
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let mut pos = 0;
            while pos + RECORD_HEADER_BYTES <= bytes.len() {
                let len =
                    u32::from_le_bytes(bytes[pos..pos + 4].try_into().map_err(|_| corrupt("len"))?)
                        as usize;
                let Some(payload) =
                    bytes.get(pos + RECORD_HEADER_BYTES..pos + RECORD_HEADER_BYTES + len)
                else {
                    break;
                };
                let Ok(entry) = PersistEntry::decode(payload, &self.config) else {
                    break;
                };
                mem.apply(&entry)?;
                pos += RECORD_HEADER_BYTES + len;
            }
        }
        mem.recover()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_bft::message::{Batch, Certificate, Decision, VoteKind};
    use rampart_bft::{Digest, Regency, Timestamp};

    /// An (unsigned) accept certificate for instance `cid`, as the fixtures need.
    fn accept_certificate(cid: u64) -> Certificate {
        Certificate {
            kind: VoteKind::Accept,
            regency: Regency(0),
            cid: SeqNo(cid),
            digest: Digest([cid as u8; 32]),
            votes: vec![],
        }
    }

    fn decision(cid: u64) -> PersistEntry {
        PersistEntry::Decision(Decision {
            batch: Batch {
                timestamp: Timestamp(cid),
                requests: vec![],
            },
            proof: accept_certificate(cid),
        })
    }

    fn cids(r: &RecoveredState) -> Vec<u64> {
        r.decisions.iter().map(|d| d.cid().0).collect()
    }

    #[test]
    fn entries_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::new(4);
        {
            let (mut s, r) = FileStorage::open(dir.path(), &config).expect("open");
            assert!(r.decisions.is_empty());
            for cid in 1..=3 {
                s.append(&decision(cid)).expect("append");
            }
            s.append(&PersistEntry::Regency(RegencyRecord {
                regency: Regency(2),
                stop_target: Regency(3),
            }))
            .expect("append");
            s.sync().expect("sync");
            assert_eq!(s.syncs(), 1, "one fsync for the batch");
            // An appended but never synced entry is not durable.
            s.append(&decision(4)).expect("append");
        }
        let seg = segment_path(dir.path(), 1);
        let good_len = std::fs::metadata(&seg).expect("meta").len();
        // A torn write: half a record at the end.
        let mut bytes = decision(4).encode();
        bytes.truncate(bytes.len() / 2);
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&(1000u32).to_le_bytes()).expect("write");
        f.write_all(&bytes).expect("write");
        drop(f);
        let (s, r) = FileStorage::open(dir.path(), &config).expect("reopen");
        assert_eq!(cids(&r), vec![1, 2, 3]);
        assert_eq!(r.regency.regency, Regency(2));
        assert_eq!(
            std::fs::metadata(&seg).expect("meta").len(),
            good_len,
            "torn tail truncated"
        );
        assert_eq!(cids(&s.recover().expect("recover")), vec![1, 2, 3]);
        // A second process cannot open the same directory.
        assert!(FileStorage::open(dir.path(), &config).is_err());
    }

    #[test]
    fn corruption_in_an_older_segment_is_an_error_not_a_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::new(4);
        {
            let (mut s, _) = FileStorage::open(dir.path(), &config).expect("open");
            for cid in 1..=4 {
                s.append(&decision(cid)).expect("append");
            }
            s.append(&PersistEntry::TruncateLog { through: SeqNo(0) })
                .expect("append");
            s.sync().expect("sync");
            s.append(&decision(5)).expect("append");
            s.sync().expect("sync");
        }
        let seg = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&seg).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&seg, bytes).expect("write");
        assert!(FileStorage::open(dir.path(), &config).is_err());
    }

    /// Issue 10, finding 2: a crash after the core's burst `decision k, checkpoint k` was
    /// appended but before `sync` must not leave checkpoint k on disk without decision k
    /// (the checkpoint used to be written and fsynced at once by `append`).
    #[test]
    fn a_crash_before_sync_never_leaves_a_checkpoint_ahead_of_its_decision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::new(4);
        let checkpoint = |cid: u64| {
            PersistEntry::Checkpoint(CheckpointRecord {
                cid: SeqNo(cid),
                digest: Digest([cid as u8; 32]),
                blob: vec![cid as u8; 10],
                proof: accept_certificate(cid),
            })
        };
        {
            let (mut s, _) = FileStorage::open(dir.path(), &config).expect("open");
            for cid in 1..=9 {
                s.append(&decision(cid)).expect("append");
            }
            s.sync().expect("sync");
            s.append(&decision(10)).expect("append");
            s.append(&checkpoint(10)).expect("append");
            // Crash: the process dies before `sync`; nothing buffered survives.
            drop(s);
        }
        let (mut s, r) = FileStorage::open(dir.path(), &config).expect("reopen");
        for c in &r.checkpoints {
            assert!(
                cids(&r).contains(&c.cid.0),
                "checkpoint {} on disk without its decision: {:?}",
                c.cid.0,
                cids(&r)
            );
        }
        // And a synced burst keeps both, in order.
        s.append(&decision(10)).expect("append");
        s.append(&checkpoint(10)).expect("append");
        s.sync().expect("sync");
        drop(s);
        let (_, r) = FileStorage::open(dir.path(), &config).expect("reopen");
        assert_eq!(r.checkpoints.len(), 1);
        assert!(cids(&r).contains(&10));
    }

    #[test]
    fn checkpoints_and_truncation_bound_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::new(4);
        {
            let (mut s, _) = FileStorage::open(dir.path(), &config).expect("open");
            for round in 1..=4u64 {
                for cid in (round - 1) * 10 + 1..=round * 10 {
                    s.append(&decision(cid)).expect("append");
                }
                s.sync().expect("sync");
                let cp = CheckpointRecord {
                    cid: SeqNo(round * 10),
                    digest: Digest([round as u8; 32]),
                    blob: vec![round as u8; 100],
                    proof: Certificate {
                        kind: VoteKind::Accept,
                        regency: Regency(0),
                        cid: SeqNo(round * 10),
                        digest: Digest([round as u8; 32]),
                        votes: vec![],
                    },
                };
                s.append(&PersistEntry::Checkpoint(cp)).expect("checkpoint");
                s.append(&PersistEntry::TruncateLog {
                    through: SeqNo((round - 1) * 10),
                })
                .expect("truncate");
                s.sync().expect("sync");
            }
        }
        let (_, r) = FileStorage::open(dir.path(), &config).expect("reopen");
        assert_eq!(
            r.checkpoints.iter().map(|c| c.cid.0).collect::<Vec<_>>(),
            vec![30, 40]
        );
        assert_eq!(cids(&r), (31..=40).collect::<Vec<_>>());
        assert_eq!(
            list(dir.path(), "checkpoint-", ".bin").expect("list").len(),
            2
        );
        assert!(list(dir.path(), "wal-", ".log").expect("list").len() <= 3);
    }
}
