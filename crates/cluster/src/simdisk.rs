//! [`SimulatedDisk`]: an in-memory **simulated** disk for fault tests of
//! [`crate::storage::FileStorage`]. Nothing here touches a real disk.
//!
//! # The model (deliberately pessimistic, close to ext4 without `data=journal`)
//!
//! - Every file has *durable* content and a list of *pending* operations (appends and
//!   length cuts) issued since its last sync. Reads see durable content with the pending
//!   operations applied, as a running process would. `sync_data` and `sync_all` make a
//!   file's pending operations durable.
//! - Every directory has durable entries and a list of pending entry operations (create,
//!   rename, remove). They become durable only when the directory is synced; syncing a
//!   file does **not** make its name durable, and a rename is durable only after the
//!   directory sync that follows it. Directories themselves are created durably.
//! - A crash ([`SimulatedDisk::crash`]) decides, per file, how many of its pending
//!   operations survive (a prefix: the data of one file reaches the platter in order, as
//!   with ext4's `data=ordered` appends), and may tear the first lost append at any byte.
//!   Files are decided independently, so a later write to one file may survive while an
//!   earlier write to another is lost (writes are reordered between files). Per directory,
//!   a prefix of the pending entry operations survives (the metadata journal commits in
//!   order). An optional *hole* zeroes the first part of a file's surviving new bytes:
//!   pages written back out of order inside one file, which ext4 `data=ordered` does not
//!   show for appends but other file systems may; storage may refuse to open then, but
//!   must not return wrong state.
//! - [`SimulatedDisk::flip_bit`] flips a bit of durable content (media corruption).
//! - [`SimulatedDisk::cut_power_after`] makes every mutating operation after the next
//!   `n` fail, so a test can stop the storage at every point of its operation trace.
//! - After a crash, handles opened before it fail, and locks are released.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{Fs, FsFile};

/// One pending operation on a file.
#[derive(Debug, Clone)]
enum FileOp {
    Append(Vec<u8>),
    SetLen(usize),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    pending: Vec<FileOp>,
}

impl Inode {
    fn volatile(&self) -> Vec<u8> {
        let mut v = self.durable.clone();
        for op in &self.pending {
            apply(&mut v, op);
        }
        v
    }
}

fn apply(v: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Append(b) => v.extend_from_slice(b),
        FileOp::SetLen(n) => v.resize(*n, 0),
    }
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename(String, String),
}

#[derive(Debug, Clone, Default)]
struct Dir {
    durable: BTreeMap<String, u64>,
    volatile: BTreeMap<String, u64>,
    pending: Vec<DirOp>,
}

fn apply_dir(m: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Link(n, ino) => {
            m.insert(n.clone(), *ino);
        }
        DirOp::Unlink(n) => {
            m.remove(n);
        }
        DirOp::Rename(from, to) => {
            if let Some(ino) = m.remove(from) {
                m.insert(to.clone(), ino);
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct DiskState {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    dirs: BTreeMap<PathBuf, Dir>,
    locks: BTreeSet<PathBuf>,
    /// Bumped by every crash: older handles fail.
    epoch: u64,
    /// Mutating operations still allowed before the simulated power cut.
    power_left: Option<u64>,
    /// Mutating operations performed.
    ops: u64,
}

fn err(kind: std::io::ErrorKind, what: &str) -> std::io::Error {
    std::io::Error::new(kind, format!("simulated disk: {what}"))
}

fn split(path: &Path) -> std::io::Result<(PathBuf, String)> {
    let dir = path
        .parent()
        .ok_or_else(|| err(std::io::ErrorKind::InvalidInput, "no parent"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err(std::io::ErrorKind::InvalidInput, "bad name"))?;
    Ok((dir.to_owned(), name.to_owned()))
}

impl DiskState {
    fn charge(&mut self) -> std::io::Result<()> {
        match &mut self.power_left {
            Some(0) => return Err(err(std::io::ErrorKind::Other, "power cut")),
            Some(n) => *n -= 1,
            None => {}
        }
        self.ops += 1;
        Ok(())
    }
    fn dir(&mut self, dir: &Path) -> std::io::Result<&mut Dir> {
        self.dirs
            .get_mut(dir)
            .ok_or_else(|| err(std::io::ErrorKind::NotFound, "no such directory"))
    }
    fn lookup(&self, path: &Path) -> std::io::Result<u64> {
        let (dir, name) = split(path)?;
        self.dirs
            .get(&dir)
            .and_then(|d| d.volatile.get(&name))
            .copied()
            .ok_or_else(|| err(std::io::ErrorKind::NotFound, "no such file"))
    }
    fn dir_op(&mut self, dir: &Path, op: DirOp) -> std::io::Result<()> {
        let d = self.dir(dir)?;
        apply_dir(&mut d.volatile, &op);
        d.pending.push(op);
        Ok(())
    }
    fn new_file(&mut self, path: &Path) -> std::io::Result<u64> {
        let (dir, name) = split(path)?;
        self.dir(&dir)?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::default());
        self.dir_op(&dir, DirOp::Link(name, ino))?;
        Ok(ino)
    }
}

/// How one file fares in a crash: which of its pending operations survive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFate {
    /// The file (internal inode number).
    pub ino: u64,
    /// A name it had when the plan was made (for messages).
    pub name: Option<PathBuf>,
    /// Pending operations that survive whole (a prefix).
    pub ops_kept: usize,
    /// Bytes of the next pending append that survive too (a torn write).
    pub torn_bytes: Option<usize>,
    /// Zero this many of the first surviving new bytes (pages written out of order).
    pub hole: Option<usize>,
}

/// How many pending entry operations of one directory survive a crash (a prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirFate {
    /// The directory.
    pub dir: PathBuf,
    /// Pending entry operations that survive.
    pub ops_kept: usize,
}

/// What survives a crash. Files and directories not named lose all pending operations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashPlan {
    /// Per file.
    pub files: Vec<FileFate>,
    /// Per directory.
    pub dirs: Vec<DirFate>,
}

impl CrashPlan {
    /// Whether the plan zeroes a hole (a model in which storage may refuse to open).
    #[must_use]
    pub fn has_hole(&self) -> bool {
        self.files.iter().any(|f| f.hole.is_some())
    }
}

/// Which crash outcomes [`SimulatedDisk::crash_plans`] enumerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TearPoints {
    /// Tear each lost append at a few representative offsets (1, 3, 4, 19, 20, 21 bytes,
    /// a quarter, a half, three quarters, one byte short).
    Representative,
    /// Tear each lost append at every byte.
    EveryByte,
}

/// An in-memory **simulated** disk (see the module docs for its fault model). Cloning
/// gives another handle to the same disk; [`SimulatedDisk::snapshot`] copies it.
#[derive(Debug, Clone, Default)]
pub struct SimulatedDisk {
    state: Arc<Mutex<DiskState>>,
}

/// An open file on a [`SimulatedDisk`].
#[derive(Debug)]
pub struct SimulatedFile {
    state: Arc<Mutex<DiskState>>,
    ino: u64,
    epoch: u64,
}

/// A lock held on a [`SimulatedDisk`], released on drop (or by a crash).
#[derive(Debug)]
pub struct SimulatedLock {
    state: Arc<Mutex<DiskState>>,
    path: PathBuf,
    epoch: u64,
}

fn lock(state: &Mutex<DiskState>) -> MutexGuard<'_, DiskState> {
    // A panic while holding the lock leaves consistent state (every method finishes its
    // mutation before it can fail): keep going.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for SimulatedLock {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        if s.epoch == self.epoch {
            s.locks.remove(&self.path);
        }
    }
}

impl SimulatedFile {
    fn with<T>(&mut self, f: impl FnOnce(&mut Inode) -> T) -> std::io::Result<T> {
        let mut s = lock(&self.state);
        if s.epoch != self.epoch {
            return Err(err(std::io::ErrorKind::Other, "handle from before a crash"));
        }
        s.charge()?;
        let inode = s
            .inodes
            .get_mut(&self.ino)
            .ok_or_else(|| err(std::io::ErrorKind::NotFound, "inode gone"))?;
        Ok(f(inode))
    }
}

impl FsFile for SimulatedFile {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.with(|i| i.pending.push(FileOp::Append(bytes.to_vec())))
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        let len =
            usize::try_from(len).map_err(|_| err(std::io::ErrorKind::InvalidInput, "length"))?;
        self.with(|i| i.pending.push(FileOp::SetLen(len)))
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.with(|i| {
            for op in std::mem::take(&mut i.pending) {
                apply(&mut i.durable, &op);
            }
        })
    }
    fn sync_all(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
}

impl SimulatedDisk {
    /// An empty disk.
    #[must_use]
    pub fn new() -> SimulatedDisk {
        SimulatedDisk::default()
    }

    fn state(&self) -> MutexGuard<'_, DiskState> {
        lock(&self.state)
    }

    /// An independent copy of this disk (locks not copied; handles stay with the original).
    #[must_use]
    pub fn snapshot(&self) -> SimulatedDisk {
        let mut s = self.state().clone();
        s.locks.clear();
        s.epoch += 1;
        SimulatedDisk {
            state: Arc::new(Mutex::new(s)),
        }
    }

    /// Allow `ops` more mutating operations (writes, cuts, syncs, creates, renames,
    /// removals); every one after that fails, as if the power was cut. `None`: no limit.
    pub fn cut_power_after(&self, ops: Option<u64>) {
        self.state().power_left = ops;
    }

    /// Mutating operations performed on this disk so far.
    #[must_use]
    pub fn ops(&self) -> u64 {
        self.state().ops
    }

    /// Whether anything (data or directory entries) is not yet durable.
    #[must_use]
    pub fn has_pending(&self) -> bool {
        let s = self.state();
        s.inodes.values().any(|i| !i.pending.is_empty())
            || s.dirs.values().any(|d| !d.pending.is_empty())
    }

    fn names(s: &DiskState) -> BTreeMap<u64, PathBuf> {
        let mut out = BTreeMap::new();
        for (dir, d) in &s.dirs {
            for (name, ino) in d.volatile.iter().chain(d.durable.iter()) {
                out.entry(*ino).or_insert_with(|| dir.join(name));
            }
        }
        out
    }

    /// Every crash outcome worth checking now: the cross product, over files with pending
    /// operations and directories with pending entries, of each surviving prefix (for a
    /// file also each prefix plus a torn part of the next append at `tear` offsets, and all
    /// kept with a hole over the first half of the new bytes).
    #[must_use]
    pub fn crash_plans(&self, tear: TearPoints) -> Vec<CrashPlan> {
        let s = self.state();
        let names = Self::names(&s);
        let mut plans = vec![CrashPlan::default()];
        for (ino, inode) in &s.inodes {
            if inode.pending.is_empty() {
                continue;
            }
            let fate = |ops_kept, torn_bytes, hole| FileFate {
                ino: *ino,
                name: names.get(ino).cloned(),
                ops_kept,
                torn_bytes,
                hole,
            };
            let mut fates = Vec::new();
            for j in 0..=inode.pending.len() {
                fates.push(fate(j, None, None));
                if let Some(FileOp::Append(b)) = inode.pending.get(j) {
                    for t in tear_points(b.len(), tear) {
                        fates.push(fate(j, Some(t), None));
                    }
                }
            }
            let new_bytes = inode.volatile().len().saturating_sub(inode.durable.len());
            if new_bytes >= 2 {
                fates.push(fate(inode.pending.len(), None, Some(new_bytes / 2)));
            }
            plans = plans
                .into_iter()
                .flat_map(|p| {
                    fates.iter().map(move |f| {
                        let mut p = p.clone();
                        p.files.push(f.clone());
                        p
                    })
                })
                .collect();
        }
        for (dir, d) in &s.dirs {
            if d.pending.is_empty() {
                continue;
            }
            plans = plans
                .into_iter()
                .flat_map(|p| {
                    (0..=d.pending.len()).map(move |ops_kept| {
                        let mut p = p.clone();
                        p.dirs.push(DirFate {
                            dir: dir.clone(),
                            ops_kept,
                        });
                        p
                    })
                })
                .collect();
        }
        plans
    }

    /// A random crash outcome in the prefix model (no holes): per file a random surviving
    /// prefix, torn at a random byte half of the time; per directory a random prefix.
    pub fn random_crash_plan<R: rand_core::RngCore>(&self, rng: &mut R) -> CrashPlan {
        let s = self.state();
        let mut pick = |n: usize| (rng.next_u64() % (n as u64 + 1)) as usize;
        let mut plan = CrashPlan::default();
        for (ino, inode) in &s.inodes {
            if inode.pending.is_empty() {
                continue;
            }
            let ops_kept = pick(inode.pending.len());
            let torn_bytes = match inode.pending.get(ops_kept) {
                Some(FileOp::Append(b)) if b.len() > 1 && pick(1) == 1 => {
                    Some(1 + pick(b.len() - 2))
                }
                _ => None,
            };
            plan.files.push(FileFate {
                ino: *ino,
                name: None,
                ops_kept,
                torn_bytes,
                hole: None,
            });
        }
        for (dir, d) in &s.dirs {
            if !d.pending.is_empty() {
                plan.dirs.push(DirFate {
                    dir: dir.clone(),
                    ops_kept: pick(d.pending.len()),
                });
            }
        }
        plan
    }

    /// Crash at a random point of the prefix model; returns the plan applied.
    pub fn crash<R: rand_core::RngCore>(&self, rng: &mut R) -> CrashPlan {
        let plan = self.random_crash_plan(rng);
        self.crash_with(&plan);
        plan
    }

    /// Crash: keep what `plan` says of the pending operations, drop the rest, invalidate
    /// open handles, release locks and restore the power.
    pub fn crash_with(&self, plan: &CrashPlan) {
        let mut s = self.state();
        let fates: BTreeMap<u64, &FileFate> = plan.files.iter().map(|f| (f.ino, f)).collect();
        for (ino, inode) in &mut s.inodes {
            let old_len = inode.durable.len();
            let mut v = std::mem::take(&mut inode.durable);
            if let Some(f) = fates.get(ino) {
                for op in inode.pending.iter().take(f.ops_kept) {
                    apply(&mut v, op);
                }
                if let (Some(t), Some(FileOp::Append(b))) =
                    (f.torn_bytes, inode.pending.get(f.ops_kept))
                {
                    v.extend_from_slice(&b[..t.min(b.len())]);
                }
                if let Some(h) = f.hole {
                    let end = (old_len + h).min(v.len());
                    if old_len < end {
                        v[old_len..end].fill(0);
                    }
                }
            }
            inode.durable = v;
            inode.pending.clear();
        }
        let dir_fates: BTreeMap<&PathBuf, usize> =
            plan.dirs.iter().map(|d| (&d.dir, d.ops_kept)).collect();
        for (path, d) in &mut s.dirs {
            let kept = dir_fates.get(path).copied().unwrap_or(0);
            let pending = std::mem::take(&mut d.pending);
            for op in pending.iter().take(kept) {
                apply_dir(&mut d.durable, op);
            }
            d.volatile = d.durable.clone();
        }
        let live: BTreeSet<u64> = s
            .dirs
            .values()
            .flat_map(|d| d.durable.values().copied())
            .collect();
        s.inodes.retain(|ino, _| live.contains(ino));
        s.locks.clear();
        s.epoch += 1;
        s.power_left = None;
    }

    /// Durable files and their lengths, by path.
    #[must_use]
    pub fn durable_files(&self) -> Vec<(PathBuf, usize)> {
        let s = self.state();
        let mut out = Vec::new();
        for (dir, d) in &s.dirs {
            for (name, ino) in &d.durable {
                let len = s.inodes.get(ino).map_or(0, |i| i.durable.len());
                out.push((dir.join(name), len));
            }
        }
        out
    }

    /// Flip bit `bit` of the durable content of `path` (and of what reads see). Returns
    /// false if the file has no such bit.
    pub fn flip_bit(&self, path: &Path, bit: usize) -> bool {
        let mut s = self.state();
        let Ok(ino) = s.lookup(path) else {
            return false;
        };
        let Some(inode) = s.inodes.get_mut(&ino) else {
            return false;
        };
        let Some(byte) = inode.durable.get_mut(bit / 8) else {
            return false;
        };
        *byte ^= 1 << (bit % 8);
        true
    }
}

fn tear_points(len: usize, tear: TearPoints) -> Vec<usize> {
    let mut out: Vec<usize> = match tear {
        TearPoints::EveryByte => (1..len).collect(),
        TearPoints::Representative => [
            1,
            3,
            4,
            19,
            20,
            21,
            len / 4,
            len / 2,
            3 * len / 4,
            len.saturating_sub(1),
        ]
        .into_iter()
        .filter(|t| *t > 0 && *t < len)
        .collect(),
    };
    out.sort_unstable();
    out.dedup();
    out
}

impl Fs for SimulatedDisk {
    type File = SimulatedFile;
    type Lock = SimulatedLock;

    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.state().dirs.entry(dir.to_owned()).or_default();
        Ok(())
    }

    fn lock(&self, path: &Path) -> std::io::Result<Option<SimulatedLock>> {
        let mut s = self.state();
        if !s.locks.insert(path.to_owned()) {
            return Ok(None);
        }
        Ok(Some(SimulatedLock {
            state: Arc::clone(&self.state),
            path: path.to_owned(),
            epoch: s.epoch,
        }))
    }

    fn open_append(&self, path: &Path) -> std::io::Result<SimulatedFile> {
        let mut s = self.state();
        let ino = match s.lookup(path) {
            Ok(ino) => ino,
            Err(_) => {
                s.charge()?;
                s.new_file(path)?
            }
        };
        Ok(SimulatedFile {
            state: Arc::clone(&self.state),
            ino,
            epoch: s.epoch,
        })
    }

    fn create(&self, path: &Path) -> std::io::Result<SimulatedFile> {
        let mut s = self.state();
        s.charge()?;
        let ino = match s.lookup(path) {
            Ok(ino) => {
                if let Some(i) = s.inodes.get_mut(&ino) {
                    i.pending.push(FileOp::SetLen(0));
                }
                ino
            }
            Err(_) => s.new_file(path)?,
        };
        Ok(SimulatedFile {
            state: Arc::clone(&self.state),
            ino,
            epoch: s.epoch,
        })
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let s = self.state();
        let ino = s.lookup(path)?;
        Ok(s.inodes.get(&ino).map(Inode::volatile).unwrap_or_default())
    }

    fn exists(&self, path: &Path) -> bool {
        self.state().lookup(path).is_ok()
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let s = self.state();
        let d = s
            .dirs
            .get(dir)
            .ok_or_else(|| err(std::io::ErrorKind::NotFound, "no such directory"))?;
        Ok(d.volatile.keys().cloned().collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let (dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if dir != to_dir {
            return Err(err(
                std::io::ErrorKind::Unsupported,
                "rename across directories",
            ));
        }
        let mut s = self.state();
        s.lookup(from)?;
        s.charge()?;
        s.dir_op(&dir, DirOp::Rename(from_name, to_name))
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        let (dir, name) = split(path)?;
        let mut s = self.state();
        s.lookup(path)?;
        s.charge()?;
        s.dir_op(&dir, DirOp::Unlink(name))
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        let mut s = self.state();
        s.charge()?;
        let d = s.dir(dir)?;
        d.durable = d.volatile.clone();
        d.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(disk: &SimulatedDisk, path: &Path, bytes: &[u8], sync: bool) {
        let mut f = disk.open_append(path).expect("open");
        f.write_all(bytes).expect("write");
        if sync {
            f.sync_data().expect("sync");
        }
    }

    #[test]
    fn unsynced_data_and_names_are_lost_synced_ones_kept() {
        let disk = SimulatedDisk::new();
        let dir = Path::new("/d");
        disk.create_dir_all(dir).expect("mkdir");
        write(&disk, &dir.join("a"), b"durable", true);
        // The name of "a" is not durable yet: a crash that keeps no entry loses the file.
        let lost = disk.snapshot();
        lost.crash_with(&CrashPlan::default());
        assert!(!lost.exists(&dir.join("a")));
        disk.sync_dir(dir).expect("sync dir");
        write(&disk, &dir.join("a"), b" volatile", false);
        assert_eq!(
            disk.read(&dir.join("a")).expect("read"),
            b"durable volatile"
        );
        let crashed = disk.snapshot();
        crashed.crash_with(&CrashPlan::default());
        assert_eq!(crashed.read(&dir.join("a")).expect("read"), b"durable");
        // Every plan keeps the durable part and a prefix (or a holed prefix) of the rest.
        let plans = disk.crash_plans(TearPoints::EveryByte);
        assert_eq!(
            plans.len(),
            1 + 8 + 1 + 1,
            "lost, torn at 8 points, kept, hole"
        );
        for p in &plans {
            let d = disk.snapshot();
            d.crash_with(p);
            let got = d.read(&dir.join("a")).expect("read");
            assert!(got.starts_with(b"durable"), "{p:?}: {got:?}");
            if !p.has_hole() {
                assert!(b"durable volatile".starts_with(&got), "{p:?}: {got:?}");
            }
        }
    }

    #[test]
    fn a_rename_is_durable_only_after_the_directory_sync() {
        let disk = SimulatedDisk::new();
        let dir = Path::new("/d");
        disk.create_dir_all(dir).expect("mkdir");
        write(&disk, &dir.join("t.tmp"), b"x", true);
        disk.sync_dir(dir).expect("sync dir");
        disk.rename(&dir.join("t.tmp"), &dir.join("t"))
            .expect("rename");
        let before = disk.snapshot();
        before.crash_with(&CrashPlan::default());
        assert!(before.exists(&dir.join("t.tmp")) && !before.exists(&dir.join("t")));
        disk.sync_dir(dir).expect("sync dir");
        let after = disk.snapshot();
        after.crash_with(&CrashPlan::default());
        assert_eq!(after.read(&dir.join("t")).expect("read"), b"x");
    }

    #[test]
    fn power_cut_stops_mutations_and_a_crash_invalidates_handles_and_locks() {
        let disk = SimulatedDisk::new();
        let dir = Path::new("/d");
        disk.create_dir_all(dir).expect("mkdir");
        let _l = disk.lock(&dir.join("LOCK")).expect("lock").expect("free");
        assert!(disk.lock(&dir.join("LOCK")).expect("lock").is_none());
        let mut f = disk.open_append(&dir.join("a")).expect("open");
        disk.cut_power_after(Some(1));
        f.write_all(b"1").expect("first write allowed");
        assert!(f.write_all(b"2").is_err());
        assert!(f.sync_data().is_err());
        disk.crash_with(&CrashPlan::default());
        assert!(f.write_all(b"3").is_err(), "stale handle");
        assert!(disk.lock(&dir.join("LOCK")).expect("lock").is_some());
    }

    #[test]
    fn flip_bit_changes_durable_content() {
        let disk = SimulatedDisk::new();
        let dir = Path::new("/d");
        disk.create_dir_all(dir).expect("mkdir");
        write(&disk, &dir.join("a"), &[0u8; 2], true);
        assert!(disk.flip_bit(&dir.join("a"), 9));
        assert!(!disk.flip_bit(&dir.join("a"), 16));
        assert_eq!(disk.read(&dir.join("a")).expect("read"), vec![0, 2]);
    }
}
