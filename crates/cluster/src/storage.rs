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
//! On open, records are read until the first one that fails. In an older segment that is
//! corruption and opening fails. In the last segment a crash may have torn the last write,
//! and only what a tear can leave is cut as a torn tail: a record cut short by the end of
//! the file, or an all-zero tail. A *complete* record that fails its check or does not
//! decode, or a short one whose length field is one flipped bit away from a record that
//! checks, is damage to data that may have been acknowledged, and opening fails with
//! [`StorageError::Corrupt`] instead of silently dropping it and every record after it.
//! A record is acknowledged only after its fsync, so a torn tail holds nothing the replica
//! has acted on. [`Storage::recover`] re-reads the directory by the same rules.
//!
//! All file access goes through [`crate::fs::Fs`], so the same code runs on the real disk
//! and on [`crate::simdisk::SimulatedDisk`], where `crates/cluster/tests/disk_faults.rs`
//! crashes it after every disk operation of a replica's workload, with every surviving
//! prefix and tear of the unsynced writes, and flips the bits of every durable file.
//!
//! The torn-tail rule assumes that a crash leaves a prefix of a file's unsynced appends
//! (ext4 `data=ordered`, the default). A file system that can write back the later pages of
//! an append before the earlier ones leaves a hole that looks like damage: opening then
//! fails (the replica needs its state from its peers) but never returns wrong state.

use std::path::{Path, PathBuf};

use rampart_bft::{
    CHECKPOINTS_KEPT, CheckpointRecord, Config, MemStorage, PersistEntry, RecoveredState,
    RegencyRecord, SeqNo, Storage, StorageError, VoteRecord,
};

use crate::fs::{Fs, FsFile as _, OsFs};

/// Bytes of a record header.
const RECORD_HEADER_BYTES: usize = 4 + 16;

/// A replica's durable storage in a directory, on the file system `F` (the real disk by
/// default; [`crate::simdisk::SimulatedDisk`] in fault tests). Generic rather than boxed:
/// the runtime keeps naming it `FileStorage`, and a test keeps the concrete disk type.
pub struct FileStorage<F: Fs = OsFs> {
    fs: F,
    dir: PathBuf,
    config: Config,
    _lock: F::Lock,
    wal: F::File,
    segment: u64,
    /// Highest decision in each live segment, oldest first: `(segment, max cid)`.
    segments: Vec<(u64, SeqNo)>,
    buf: Vec<u8>,
    /// Checkpoints appended since the last sync, each with the length `buf` had when it
    /// was appended: `sync` writes them in the order the core emitted them (issue 10,
    /// finding 2: a checkpoint never reaches disk ahead of earlier entries).
    /// The record shares its blob with the core (no copy).
    checkpoints_queued: Vec<(usize, CheckpointRecord)>,
    regency: RegencyRecord,
    vote: Option<VoteRecord>,
    /// Set by a `TruncateLog`: rotate and delete covered segments at the next sync.
    truncate_through: Option<SeqNo>,
    /// fsyncs done (for tests and benchmarks).
    syncs: u64,
}

impl<F: Fs> std::fmt::Debug for FileStorage<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStorage")
            .field("dir", &self.dir)
            .field("segment", &self.segment)
            .field("segments", &self.segments)
            .field("buffered", &self.buf.len())
            .field("syncs", &self.syncs)
            .finish_non_exhaustive()
    }
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

fn list<F: Fs>(
    fs: &F,
    dir: &Path,
    prefix: &str,
    suffix: &str,
) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for name in fs.list(dir)? {
        if let Some(num) = name
            .strip_prefix(prefix)
            .and_then(|s| s.strip_suffix(suffix))
            && let Ok(n) = num.parse::<u64>()
        {
            out.push((n, dir.join(&name)));
        }
    }
    out.sort();
    Ok(out)
}

/// Largest record the log accepts.
fn record_max(config: &Config) -> usize {
    rampart_bft::message::checkpoint_blob_bytes_max(config).max(rampart_bft::BATCH_BYTES_MAX * 4)
}

/// The record at `pos` if it is complete and passes its check: `(payload, bytes used)`.
fn record_at(bytes: &[u8], pos: usize, record_max: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(pos..pos.checked_add(RECORD_HEADER_BYTES)?)?;
    let len_bytes: [u8; 4] = header[..4].try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > record_max {
        return None;
    }
    let payload = bytes.get(pos + RECORD_HEADER_BYTES..pos + RECORD_HEADER_BYTES + len)?;
    (check16(&len_bytes, payload)[..] == header[4..])
        .then_some((payload, RECORD_HEADER_BYTES + len))
}

/// Decide what a bad record at `pos` of the last segment is. A crash tears a write at a
/// byte, so a torn tail is a record cut short by the end of the file (or an all-zero tail,
/// as a file system that extended the file before writing its data leaves it). A complete
/// record that fails its check, or one whose length field is one flipped bit away from a
/// record that passes it, is damage to written data, which may have been acknowledged:
/// opening fails rather than silently dropping it and everything after it.
///
/// The rule does not look for valid records further on: log payloads hold client bytes,
/// which may imitate records.
fn classify_bad_tail(bytes: &[u8], pos: usize, record_max: usize) -> Result<(), StorageError> {
    let rest = &bytes[pos..];
    if rest.iter().all(|b| *b == 0) || rest.len() < RECORD_HEADER_BYTES {
        return Ok(());
    }
    let len_bytes: [u8; 4] = rest[..4].try_into().map_err(|_| corrupt("record header"))?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len <= record_max && RECORD_HEADER_BYTES + len <= rest.len() {
        return Err(corrupt(
            "a complete record of the last log segment fails its check or does not decode",
        ));
    }
    let check = &rest[4..RECORD_HEADER_BYTES];
    for bit in 0..32 {
        let other = (u32::from_le_bytes(len_bytes) ^ (1 << bit)).to_le_bytes();
        let other_len = u32::from_le_bytes(other) as usize;
        if other_len <= record_max
            && let Some(payload) = rest.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + other_len)
            && check16(&other, payload)[..] == *check
        {
            return Err(corrupt(
                "the length field of a record of the last log segment is damaged",
            ));
        }
    }
    Ok(())
}

/// Everything read from a storage directory.
struct Loaded {
    mem: MemStorage,
    segments: Vec<(u64, SeqNo)>,
    /// A torn tail to cut: the last segment and the length to cut it to.
    torn: Option<(PathBuf, usize)>,
}

/// Read the checkpoints and the log (without changing anything).
fn load<F: Fs>(fs: &F, dir: &Path, config: &Config) -> Result<Loaded, StorageError> {
    let mut mem = MemStorage::default();
    for (_, path) in list(fs, dir, "checkpoint-", ".bin")? {
        let bytes = fs.read(&path)?;
        if bytes.len() < 32 || blake3::hash(&bytes[32..]).as_bytes()[..] != bytes[..32] {
            return Err(corrupt("checkpoint file fails its checksum"));
        }
        // Decoded in place: the file's buffer becomes the record's blob (no copy).
        let record = PersistEntry::decode_checkpoint_in(bytes, 32, config)
            .map_err(|_| corrupt("checkpoint file"))?;
        mem.apply(&PersistEntry::Checkpoint(record))?;
    }
    let segs = list(fs, dir, "wal-", ".log")?;
    let mut segments = Vec::new();
    let mut torn = None;
    let last_index = segs.len().saturating_sub(1);
    let record_max = record_max(config);
    for (i, (n, path)) in segs.iter().enumerate() {
        let bytes = fs.read(path)?;
        let mut pos = 0usize;
        let mut max = SeqNo(0);
        while pos < bytes.len() {
            let entry = record_at(&bytes, pos, record_max)
                .and_then(|(p, used)| Some((PersistEntry::decode(p, config).ok()?, used)));
            let Some((entry, used)) = entry else {
                if i != last_index {
                    return Err(corrupt("bad record inside an older log segment"));
                }
                classify_bad_tail(&bytes, pos, record_max)?;
                tracing::warn!(path = %path.display(), offset = pos, dropped = bytes.len() - pos,
                    "torn log tail");
                torn = Some((path.clone(), pos));
                break;
            };
            if let PersistEntry::Decision(d) = &entry {
                max = max.max(d.cid());
            }
            mem.apply(&entry)?;
            pos += used;
        }
        segments.push((*n, max));
    }
    Ok(Loaded {
        mem,
        segments,
        torn,
    })
}

impl FileStorage<OsFs> {
    /// Open (or create) the storage in `dir` on the real disk, recovering from a torn
    /// tail. Returns the storage and the state to build the replica from.
    pub fn open(
        dir: &Path,
        config: &Config,
    ) -> Result<(FileStorage, RecoveredState), StorageError> {
        FileStorage::open_on(OsFs, dir, config)
    }
}

impl<F: Fs> FileStorage<F> {
    /// Open (or create) the storage in `dir` on `fs`, recovering from a torn tail.
    pub fn open_on(
        fs: F,
        dir: &Path,
        config: &Config,
    ) -> Result<(FileStorage<F>, RecoveredState), StorageError> {
        fs.create_dir_all(dir)?;
        let Some(lock) = fs.lock(&dir.join("LOCK"))? else {
            return Err(corrupt(
                "data directory is in use by another replica process",
            ));
        };
        // Leftovers of a checkpoint write interrupted before its rename.
        for name in fs.list(dir)? {
            if name.ends_with(".tmp") {
                fs.remove(&dir.join(name))?;
            }
        }
        let Loaded {
            mem,
            mut segments,
            torn,
        } = load(&fs, dir, config)?;
        if let Some((path, len)) = torn {
            let mut f = fs.open_append(&path)?;
            f.set_len(len as u64)?;
            f.sync_all()?;
        }
        let segment = segments.last().map_or(1, |(n, _)| *n);
        let path = segment_path(dir, segment);
        let fresh = !fs.exists(&path);
        let wal = fs.open_append(&path)?;
        if fresh {
            segments.push((segment, SeqNo(0)));
            fs.sync_dir(dir)?;
        }
        let recovered = mem.recover()?;
        let s = FileStorage {
            fs,
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

    /// fsyncs performed so far.
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// The file system this storage runs on.
    #[must_use]
    pub fn fs(&self) -> &F {
        &self.fs
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
                self.checkpoints_queued.push((self.buf.len(), c.clone()));
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
        for (at, c) in std::mem::take(&mut self.checkpoints_queued) {
            if at > written {
                self.wal.write_all(&self.buf[written..at])?;
                self.wal.sync_data()?;
                self.syncs += 1;
                written = at;
            }
            self.write_checkpoint(&c)?;
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
        let mut wal = self.fs.open_append(&path)?;
        self.push_record(&PersistEntry::Regency(self.regency));
        if let Some(v) = self.vote.clone() {
            self.push_record(&PersistEntry::Vote(v));
        }
        self.push_record(&PersistEntry::TruncateLog { through });
        wal.write_all(&self.buf)?;
        wal.sync_all()?;
        self.buf.clear();
        self.fs.sync_dir(&self.dir)?;
        self.wal = wal;
        self.segment = next;
        self.segments.push((next, SeqNo(0)));
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[0].1 <= through {
            let (n, _) = self.segments.remove(0);
            self.fs.remove(&segment_path(&self.dir, n))?;
            removed = true;
        }
        if removed {
            self.fs.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Write the checkpoint file. The payload (`PersistEntry::Checkpoint(c)` encoded) is
    /// hashed and written in three parts, the blob from where it is, so no second copy of
    /// the state is built (issue 10, finding 5); the file's bytes are the same.
    fn write_checkpoint(&mut self, c: &CheckpointRecord) -> Result<(), StorageError> {
        let (head, tail) = PersistEntry::checkpoint_encoding(c);
        let mut check = blake3::Hasher::new();
        check.update(&head);
        check.update(&c.blob);
        check.update(&tail);
        let path = checkpoint_path(&self.dir, c.cid);
        let tmp = path.with_extension("bin.tmp");
        {
            let mut f = self.fs.create(&tmp)?;
            f.write_all(check.finalize().as_bytes())?;
            f.write_all(&head)?;
            f.write_all(&c.blob)?;
            f.write_all(&tail)?;
            f.sync_all()?;
        }
        self.fs.rename(&tmp, &path)?;
        self.fs.sync_dir(&self.dir)?;
        self.syncs += 1;
        let all = list(&self.fs, &self.dir, "checkpoint-", ".bin")?;
        if all.len() > CHECKPOINTS_KEPT {
            for (_, p) in &all[..all.len() - CHECKPOINTS_KEPT] {
                self.fs.remove(p)?;
            }
        }
        Ok(())
    }
}

impl<F: Fs> Storage for FileStorage<F> {
    fn apply(&mut self, entry: &PersistEntry) -> Result<(), StorageError> {
        self.append(entry)?;
        self.sync()
    }

    /// Re-read from disk, by the rules of [`FileStorage::open_on`] (a torn tail is left
    /// out, not cut): what a restarted process would see.
    fn recover(&self) -> Result<RecoveredState, StorageError> {
        load(&self.fs, &self.dir, &self.config)?.mem.recover()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_bft::message::{Batch, Certificate, Decision, VoteKind};
    use rampart_bft::{Digest, Regency, Timestamp};
    use std::fs::OpenOptions;

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
        std::io::Write::write_all(&mut f, &(1000u32).to_le_bytes()).expect("write");
        std::io::Write::write_all(&mut f, &bytes).expect("write");
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
                blob: vec![cid as u8; 10].into(),
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
                    blob: vec![round as u8; 100].into(),
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
            list(&OsFs, dir.path(), "checkpoint-", ".bin")
                .expect("list")
                .len(),
            2
        );
        assert!(list(&OsFs, dir.path(), "wal-", ".log").expect("list").len() <= 3);
    }

    /// Three synced decisions on the real disk; returns the segment and its record sizes.
    fn three_synced(dir: &Path, config: &Config) -> (PathBuf, usize) {
        let (mut s, _) = FileStorage::open(dir, config).expect("open");
        for cid in 1..=3 {
            s.append(&decision(cid)).expect("append");
        }
        s.sync().expect("sync");
        let seg = segment_path(dir, 1);
        let record = RECORD_HEADER_BYTES + decision(1).encode().len();
        assert_eq!(
            std::fs::metadata(&seg).expect("meta").len() as usize,
            3 * record
        );
        (seg, record)
    }

    fn flip(path: &Path, byte: usize, mask: u8) {
        let mut bytes = std::fs::read(path).expect("read");
        bytes[byte] ^= mask;
        std::fs::write(path, bytes).expect("write");
    }

    /// A flipped bit in an acknowledged record of the last segment used to pass for a torn
    /// tail: open cut the log there and silently dropped that record and every later one.
    #[test]
    fn a_flip_in_an_acknowledged_record_of_the_last_segment_is_an_error_not_a_torn_tail() {
        let config = Config::new(4);
        // In the payload of the middle record.
        let dir = tempfile::tempdir().expect("tempdir");
        let (seg, record) = three_synced(dir.path(), &config);
        flip(&seg, record + RECORD_HEADER_BYTES + 3, 0x10);
        assert!(matches!(
            FileStorage::open(dir.path(), &config),
            Err(StorageError::Corrupt { .. })
        ));
        assert_eq!(
            std::fs::metadata(&seg).expect("meta").len() as usize,
            3 * record,
            "nothing cut"
        );
        // In the payload of the last record.
        let dir = tempfile::tempdir().expect("tempdir");
        let (seg, record) = three_synced(dir.path(), &config);
        flip(&seg, 3 * record - 1, 0x01);
        assert!(FileStorage::open(dir.path(), &config).is_err());
        // In the length field of the last record, making it run past the end of the file
        // (what a torn write looks like, but one flipped bit from a record that checks).
        let dir = tempfile::tempdir().expect("tempdir");
        let (seg, record) = three_synced(dir.path(), &config);
        flip(&seg, 2 * record + 2, 0x04);
        assert!(FileStorage::open(dir.path(), &config).is_err());
        // In the length field of the middle record.
        let dir = tempfile::tempdir().expect("tempdir");
        let (seg, record) = three_synced(dir.path(), &config);
        flip(&seg, record + 3, 0x80);
        assert!(FileStorage::open(dir.path(), &config).is_err());
        // A real torn tail (a record cut short, or zeros) is still cut, not an error.
        for tail in [&decision(4).encode()[..7], &[0u8; 30][..]] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (seg, record) = three_synced(dir.path(), &config);
            let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
            let mut torn = Vec::new();
            if tail[0] != 0 {
                let len = (decision(4).encode().len() as u32).to_le_bytes();
                torn.extend_from_slice(&len);
                torn.extend_from_slice(&check16(&len, &decision(4).encode()));
            }
            torn.extend_from_slice(tail);
            std::io::Write::write_all(&mut f, &torn).expect("write");
            drop(f);
            let (_, r) = FileStorage::open(dir.path(), &config).expect("torn tail");
            assert_eq!(cids(&r), vec![1, 2, 3]);
            assert_eq!(
                std::fs::metadata(&seg).expect("meta").len() as usize,
                3 * record
            );
        }
    }

    /// `recover()` used to re-read the log without checking records: a flipped bit that
    /// still decoded came back as a different decision.
    #[test]
    fn recover_checks_every_record_as_open_does() {
        let config = Config::new(4);
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = FileStorage::open(dir.path(), &config).expect("open");
        for cid in 1..=3 {
            s.append(&decision(cid)).expect("append");
        }
        s.sync().expect("sync");
        assert_eq!(cids(&s.recover().expect("recover")), vec![1, 2, 3]);
        let seg = segment_path(dir.path(), 1);
        let record = RECORD_HEADER_BYTES + decision(1).encode().len();
        // Flip a bit of the timestamp of decision 2 (it still decodes).
        let payload = decision(2).encode();
        let ts = payload
            .windows(8)
            .position(|w| w == 2u64.to_le_bytes())
            .expect("timestamp bytes");
        flip(&seg, record + RECORD_HEADER_BYTES + ts, 0x40);
        assert!(matches!(s.recover(), Err(StorageError::Corrupt { .. })));
    }
}
