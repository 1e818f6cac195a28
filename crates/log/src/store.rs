//! The log directory: initialisation, recovery, appends with batched fsync, checkpoints,
//! tiles and proofs. This is the I/O shell around the sans-IO modules.
//!
//! Write path: when a batch is full (or on [`Log::commit`]) the appender evolves the MAC key
//! in memory (zeroizing the batch's key) and hands the batch to the durability thread
//! ([`crate::writer`]), which writes and fsyncs the segment, writes the tiles that filled
//! (fsynced in the background by the tile syncer), then persists the next key. Sealing the
//! next batch overlaps with that I/O; at most one batch is in flight, and `commit` waits for
//! it, so when `commit` returns every appended entry is durable.
//!
//! [`Log::checkpoint`] commits, waits for the tile syncer, writes the right-edge partial tiles
//! (fsync), then atomically replaces `checkpoint`. A checkpoint therefore never names an entry
//! or tile that is not durable.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use zeroize::Zeroizing;

use crate::checkpoint::{CHECKPOINT_BYTES_MAX, NoteSigner, WitnessPolicy, verify_checkpoint};
use crate::entry::{ENTRY_BYTES_MAX, ENTRY_DATA_MAX, EntryRef, encode_frame};
use crate::error::{Error, Problem, ProblemKind};
use crate::keyfile::KeyFile;
use crate::mac::EpochKey;
use crate::merkle::{
    FullTile, Hash, TILE_LEVELS_MAX, TILE_WIDTH, TileKind, TilePath, TreeBuilder, leaf_hash,
    tile_bytes, tile_hashes,
};
use crate::segment::{FrameReader, Next, list_segments};
use crate::writer::{Job, Writer};

/// File names inside a log directory.
pub mod layout {
    /// Signed C2SP checkpoint (served).
    pub const CHECKPOINT: &str = "checkpoint";
    /// The log's public verifier key, `origin+id+key` (served).
    pub const VKEY: &str = "log.vkey";
    /// The checkpoint signing key (secret, 0600).
    pub const SIGNING_KEY: &str = "signing.key";
    /// The current forward-secure MAC key (secret, 0600).
    pub const MAC_KEY: &str = "mac.key";
    /// Segment directory.
    pub const SEGMENTS: &str = "segments";
    /// Writer lock.
    pub const LOCK: &str = "lock";
    /// Tile root (served).
    pub const TILE: &str = "tile";
}

/// Tuning of a [`Log`]. All limits bound memory; see each field.
#[derive(Debug, Clone)]
pub struct Config {
    /// Entries per batch (= per MAC epoch and per segment fsync) before [`Log::append`] hands
    /// the batch to the durability thread on its own. Memory: two batches (the one being
    /// sealed and the one in flight), each also bounded by `batch_bytes_max`, plus 2 tiles
    /// per 256 entries.
    pub batch_entries_max: usize,
    /// Bytes of frames buffered before an automatic commit.
    pub batch_bytes_max: usize,
    /// A new segment file starts when the current one exceeds this size.
    pub segment_bytes_max: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            batch_entries_max: 4096,
            batch_bytes_max: 8 << 20,
            segment_bytes_max: 64 << 20,
        }
    }
}

/// What [`Log::open`] had to repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Entries replayed from the segments after the last checkpoint.
    pub replayed: u64,
    /// A torn tail was cut off: (first removed entry index, bytes removed).
    pub truncated: Option<(u64, u64)>,
}

/// What `init` hands back: where the verifier secret went and the public key.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The log's origin line.
    pub origin: String,
    /// The log's verifier key (`origin+id+key`).
    pub vkey: String,
}

/// An inclusion proof of one entry in a checkpointed tree.
#[derive(Debug, Clone, PartialEq)]
pub struct InclusionProof {
    /// Position of the entry.
    pub index: u64,
    /// Size of the tree the proof is against.
    pub tree_size: u64,
    /// The sealed entry bytes.
    pub entry: Vec<u8>,
    /// RFC 6962 audit path.
    pub path: Vec<Hash>,
}

fn b64(h: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(h)
}

impl InclusionProof {
    /// Text form: a header line, `index`, `size`, `root`, `entry` (base64 of the sealed
    /// entry), then one base64 hash per line of the audit path.
    pub fn to_text(&self, root: &Hash) -> String {
        let mut s = format!(
            "rampart-log inclusion proof v1\nindex {}\nsize {}\nroot {}\nentry {}\n",
            self.index,
            self.tree_size,
            b64(&root.0),
            b64(&self.entry)
        );
        for h in &self.path {
            s.push_str(&b64(&h.0));
            s.push('\n');
        }
        s
    }

    /// Checks the proof against a tree root.
    pub fn verify(&self, root: &Hash) -> Result<(), Error> {
        tlog_tiles::check_record(
            &self.path,
            self.tree_size,
            *root,
            self.index,
            leaf_hash(&self.entry),
        )
        .map_err(|_| Error::BadProof)
    }
}

/// A consistency proof between two tree sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsistencyProof {
    /// The older size.
    pub old_size: u64,
    /// The newer size.
    pub new_size: u64,
    /// RFC 6962 consistency path.
    pub path: Vec<Hash>,
}

impl ConsistencyProof {
    /// Text form: a header line, `old`, `size`, then one base64 hash per line.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "rampart-log consistency proof v1\nold {}\nsize {}\n",
            self.old_size, self.new_size
        );
        for h in &self.path {
            s.push_str(&b64(&h.0));
            s.push('\n');
        }
        s
    }

    /// Checks the proof between two roots.
    pub fn verify(&self, old_root: &Hash, new_root: &Hash) -> Result<(), Error> {
        if self.old_size == 0 || self.old_size == self.new_size {
            let ok = self.path.is_empty()
                && (self.old_size == 0 && *old_root == tlog_tiles::EMPTY_HASH
                    || self.old_size == self.new_size && old_root == new_root);
            return if ok { Ok(()) } else { Err(Error::BadProof) };
        }
        tlog_tiles::check_tree(
            &self.path,
            self.new_size,
            *new_root,
            self.old_size,
            *old_root,
        )
        .map_err(|_| Error::BadProof)
    }
}

/// The secret a verifier keeps: the log's verifier key and the epoch-0 MAC key.
pub struct VerifierSecret {
    /// The log's verifier key.
    pub vkey: String,
    /// K(0).
    pub key: EpochKey,
}

impl std::fmt::Debug for VerifierSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierSecret")
            .field("vkey", &self.vkey)
            .finish_non_exhaustive()
    }
}

const SECRET_HEADER: &str = "rampart-log-verifier-secret v1";

impl VerifierSecret {
    fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{SECRET_HEADER}\nvkey {}\nk0 {}\n",
            self.vkey,
            hex::encode(self.key.danger_bytes())
        ))
    }

    /// Reads a verifier secret file written by [`Log::init`].
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes =
            Zeroizing::new(crate::fsutil::read_bounded(path, 4096).map_err(Error::io(path))?);
        let bad = || Error::BadKeyFile(path.to_owned());
        let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
        let mut lines = text.lines();
        if lines.next() != Some(SECRET_HEADER) {
            return Err(bad());
        }
        let vkey = lines
            .next()
            .and_then(|l| l.strip_prefix("vkey "))
            .ok_or_else(bad)?;
        let k0 = lines
            .next()
            .and_then(|l| l.strip_prefix("k0 "))
            .ok_or_else(bad)?;
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(k0, key.as_mut()).map_err(|_| bad())?;
        signed_note::StandardVerifier::new(vkey).map_err(|_| bad())?;
        Ok(VerifierSecret {
            vkey: vkey.to_owned(),
            key: EpochKey::new(0, *key),
        })
    }
}

/// Fsyncs tile files off the append path, on several threads so the file system can group
/// the fsyncs into shared journal commits. Bounded: at most [`TILE_SYNC_QUEUE_MAX`] files
/// wait; appends block rather than queue without limit.
pub(crate) struct TileSyncer {
    shared: Arc<SyncShared>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

struct SyncShared {
    state: Mutex<SyncState>,
    /// Signalled when work arrives, when work completes, and on shutdown.
    cond: Condvar,
}

#[derive(Default)]
struct SyncState {
    queue: std::collections::VecDeque<PathBuf>,
    /// Files queued or being synced.
    outstanding: usize,
    first_err: Option<std::io::Error>,
    shutdown: bool,
}

const TILE_SYNC_QUEUE_MAX: usize = 1024;
const TILE_SYNC_THREADS: usize = 8;

impl TileSyncer {
    fn start() -> Self {
        let shared = Arc::new(SyncShared {
            state: Mutex::default(),
            cond: Condvar::new(),
        });
        let handles = (0..TILE_SYNC_THREADS)
            .map(|_| {
                let sh = Arc::clone(&shared);
                std::thread::spawn(move || sh.work())
            })
            .collect();
        TileSyncer { shared, handles }
    }

    pub(crate) fn sync(&self, p: PathBuf) {
        let mut st = self.shared.lock();
        while st.queue.len() >= TILE_SYNC_QUEUE_MAX {
            st = self.shared.wait(st);
        }
        st.queue.push_back(p);
        st.outstanding += 1;
        self.shared.cond.notify_all();
    }

    /// Waits until every queued file is synced; reports the first failure since last time.
    fn barrier(&self) -> std::io::Result<()> {
        let mut st = self.shared.lock();
        while st.outstanding > 0 {
            st = self.shared.wait(st);
        }
        match st.first_err.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl SyncShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        // Workers never panic while holding the lock; recover the state if one did.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait<'a>(
        &self,
        g: std::sync::MutexGuard<'a, SyncState>,
    ) -> std::sync::MutexGuard<'a, SyncState> {
        self.cond
            .wait(g)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn work(&self) {
        let mut st = self.lock();
        loop {
            if let Some(p) = st.queue.pop_front() {
                self.cond.notify_all(); // room in the queue
                drop(st);
                let r = File::open(&p).and_then(|f| f.sync_all());
                st = self.lock();
                if let Err(e) = r {
                    st.first_err.get_or_insert(e);
                }
                st.outstanding -= 1;
                self.cond.notify_all();
            } else if st.shutdown {
                return;
            } else {
                st = self.wait(st);
            }
        }
    }
}

impl Drop for TileSyncer {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.cond.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A secure log directory opened for writing. One writer at a time (file lock).
pub struct Log {
    dir: PathBuf,
    config: Config,
    _lock: File,
    signer: NoteSigner,
    vkey: String,
    key: EpochKey,
    /// Entries durable on disk.
    committed: u64,
    tree: TreeBuilder,
    /// Leaf hash of the last appended entry (zeros before the first).
    last_leaf: [u8; 32],
    /// Frames appended but not yet written.
    pending: Vec<u8>,
    pending_entries: usize,
    /// Tiles that filled in the pending batch: (path, bytes).
    pending_tiles: Vec<(PathBuf, Vec<u8>)>,
    /// The incomplete entry bundle (u16 BE length-prefixed sealed entries).
    bundle: Vec<u8>,
    checkpoint_size: u64,
    checkpoint_root: Hash,
    syncer: Arc<TileSyncer>,
    writer: Writer,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("size", &self.tree.size())
            .field("committed", &self.committed)
            .field("epoch", &self.key.epoch())
            .finish_non_exhaustive()
    }
}

fn lock_dir(dir: &Path) -> Result<File, Error> {
    let p = dir.join(layout::LOCK);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(Error::io(&p))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&p)(e)),
    }
}

/// Reads a tile for a tree of at least the size it was written for: the full tile's prefix if
/// the full tile exists, else the partial tile of exactly `width`.
pub(crate) fn read_tile(dir: &Path, kind: TileKind, index: u64, width: usize) -> Option<Vec<u8>> {
    assert!((1..=TILE_WIDTH).contains(&width));
    let full = TilePath {
        kind,
        index,
        width: TILE_WIDTH as u16,
    };
    let max = match kind {
        TileKind::Hashes(_) => TILE_WIDTH * 32,
        TileKind::Entries => TILE_WIDTH * (2 + ENTRY_BYTES_MAX),
    };
    if let Ok(b) = crate::fsutil::read_bounded(&dir.join(full.path()), max) {
        return match kind {
            TileKind::Hashes(_) => (b.len() == TILE_WIDTH * 32).then(|| b[..width * 32].to_vec()),
            TileKind::Entries => bundle_prefix(&b, width).map(<[u8]>::to_vec),
        };
    }
    if width == TILE_WIDTH {
        return None;
    }
    let partial = TilePath {
        kind,
        index,
        width: width as u16,
    };
    let b = crate::fsutil::read_bounded(&dir.join(partial.path()), max).ok()?;
    match kind {
        TileKind::Hashes(_) => (b.len() == width * 32).then_some(b),
        TileKind::Entries => (bundle_prefix(&b, width)?.len() == b.len()).then_some(b),
    }
}

/// The first `count` entries of a C2SP entry bundle (each `u16 BE length || entry`), or
/// `None` if the bundle is malformed or shorter. Never panics.
pub fn bundle_prefix(bundle: &[u8], count: usize) -> Option<&[u8]> {
    let mut pos = 0usize;
    for _ in 0..count {
        let len = u16::from_be_bytes([*bundle.get(pos)?, *bundle.get(pos + 1)?]) as usize;
        pos = pos.checked_add(2 + len)?;
        if pos > bundle.len() {
            return None;
        }
    }
    Some(&bundle[..pos])
}

/// Splits a C2SP entry bundle into entries. `None` if malformed or more than 256 entries.
pub fn bundle_entries(bundle: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = bundle;
    while !rest.is_empty() {
        if out.len() == TILE_WIDTH {
            return None;
        }
        let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
        let e = rest.get(2..2 + len)?;
        out.push(e);
        rest = &rest[2 + len..];
    }
    Some(out)
}

/// Reads tiles from a log directory for `tlog_tiles`' proof machinery.
struct DiskTiles<'a> {
    dir: &'a Path,
}

impl tlog_tiles::TileReader for DiskTiles<'_> {
    fn height(&self) -> u8 {
        crate::merkle::TILE_HEIGHT
    }

    fn read_tiles(&self, tiles: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|t| {
                if t.height() != crate::merkle::TILE_HEIGHT || t.is_data() || t.width() == 0 {
                    return Err(tlog_tiles::Error::InvalidTile);
                }
                read_tile(
                    self.dir,
                    TileKind::Hashes(t.level()),
                    t.level_index(),
                    t.width() as usize,
                )
                .ok_or(tlog_tiles::Error::InvalidTile)
            })
            .collect()
    }

    fn save_tiles(&self, _tiles: &[tlog_tiles::Tile], _data: &[Vec<u8>]) {}
}

impl Log {
    /// Creates a new log in `dir` (which must be empty or absent). Fresh keys come from `rng`
    /// (pass the OS RNG). Writes the verifier secret — the log's verifier key and K(0) — once,
    /// mode 0600, to `secret_out`, which must not exist and should then leave this host.
    pub fn init<R: rand_core::CryptoRngCore + ?Sized>(
        dir: &Path,
        origin: &str,
        secret_out: &Path,
        rng: &mut R,
    ) -> Result<InitReport, Error> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(Error::BadOrigin);
        }
        let existed = dir.exists();
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        if fs::read_dir(dir).map_err(Error::io(dir))?.next().is_some() {
            return Err(Error::NotEmpty(dir.to_owned()));
        }
        let canon_dir = fs::canonicalize(dir).map_err(Error::io(dir))?;
        let secret_parent = match secret_out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let canon_parent = fs::canonicalize(secret_parent).map_err(Error::io(secret_parent))?;
        if canon_parent.starts_with(&canon_dir) {
            if !existed {
                let _ = fs::remove_dir(dir); // leave nothing behind
            }
            return Err(Error::SecretInsideLog);
        }
        let (signer, skey, vkey) = NoteSigner::generate(rng, origin)?;
        let k0 = EpochKey::generate(rng);
        let secret = VerifierSecret {
            vkey: vkey.clone(),
            key: k0.clone(),
        };
        // The verifier's copy first: if it cannot be written, no log exists without it.
        crate::fsutil::create_private(secret_out, secret.encode().as_bytes())
            .map_err(Error::io(secret_out))?;
        let p = dir.join(layout::SIGNING_KEY);
        crate::fsutil::create_private(&p, format!("{}\n", skey.as_str()).as_bytes())
            .map_err(Error::io(&p))?;
        let p = dir.join(layout::MAC_KEY);
        KeyFile::create(&p, &k0).map_err(Error::io(&p))?;
        let p = dir.join(layout::VKEY);
        crate::fsutil::write_atomic(&p, format!("{vkey}\n").as_bytes()).map_err(Error::io(&p))?;
        let p = dir.join(layout::SEGMENTS);
        fs::create_dir(&p).map_err(Error::io(&p))?;
        let cp = signer.sign_checkpoint(0, &tlog_tiles::EMPTY_HASH)?;
        let p = dir.join(layout::CHECKPOINT);
        crate::fsutil::write_atomic(&p, &cp).map_err(Error::io(&p))?;
        tracing::info!(origin, "initialised secure log");
        Ok(InitReport {
            origin: origin.to_owned(),
            vkey,
        })
    }

    /// Opens a log for appending, recovering from a crash: replays the entries after the last
    /// checkpoint and cuts off a torn tail (reported in [`Recovery`]). Refuses to open a log
    /// whose durable entries are damaged ([`Error::Corrupt`]).
    pub fn open(dir: &Path, config: Config) -> Result<(Log, Recovery), Error> {
        let lock = lock_dir(dir)?;
        let p = dir.join(layout::VKEY);
        let vkey_bytes = crate::fsutil::read_bounded(&p, 1024).map_err(Error::io(&p))?;
        let vkey = std::str::from_utf8(&vkey_bytes)
            .map_err(|_| Error::BadKeyFile(p.clone()))?
            .trim_end()
            .to_owned();
        let p = dir.join(layout::SIGNING_KEY);
        let skey = Zeroizing::new(crate::fsutil::read_bounded(&p, 1024).map_err(Error::io(&p))?);
        let skey_str = std::str::from_utf8(&skey).map_err(|_| Error::BadKeyFile(p.clone()))?;
        let signer = NoteSigner::from_secret(skey_str).map_err(|_| Error::BadKeyFile(p.clone()))?;
        let p = dir.join(layout::MAC_KEY);
        let (key_file, key, committed_at_epoch) = KeyFile::load(&p).map_err(Error::io(&p))?;
        let cp_path = dir.join(layout::CHECKPOINT);
        let cp_bytes = crate::fsutil::read_bounded(&cp_path, CHECKPOINT_BYTES_MAX)
            .map_err(Error::io(&cp_path))?;
        let cp = verify_checkpoint(&cp_bytes, &vkey, &WitnessPolicy::none())?;

        let syncer = Arc::new(TileSyncer::start());
        let writer = Writer::start(
            dir.join(layout::SEGMENTS),
            p.clone(),
            key_file,
            config.segment_bytes_max,
            Arc::clone(&syncer),
        );
        let mut log = Log {
            dir: dir.to_owned(),
            config,
            _lock: lock,
            signer,
            vkey,
            key,
            committed: 0,
            tree: TreeBuilder::new(),
            last_leaf: [0; 32],
            pending: Vec::new(),
            pending_entries: 0,
            pending_tiles: Vec::new(),
            bundle: Vec::new(),
            checkpoint_size: cp.size,
            checkpoint_root: cp.root,
            syncer,
            writer,
        };
        // Fast path: resume from the checkpoint's right-edge tiles; otherwise replay all.
        let start = match log.load_edge(cp.size, &cp.root) {
            Some(()) => cp.size,
            None => {
                tracing::warn!("right-edge tiles missing or inconsistent; replaying whole log");
                0
            }
        };
        let recovery = log.replay(start, committed_at_epoch, cp.size)?;
        log.committed = log.tree.size();
        log.invariants();
        Ok((log, recovery))
    }

    /// Loads the tree state at `size` from tiles; `None` unless it reproduces `root`.
    fn load_edge(&mut self, size: u64, root: &Hash) -> Option<()> {
        let mut edge = Vec::new();
        for level in 0..TILE_LEVELS_MAX as u8 {
            let w = TreeBuilder::edge_width(size, level);
            let idx = TreeBuilder::edge_index(size, level);
            if w == 0 {
                edge.push(Vec::new());
            } else {
                let b = read_tile(&self.dir, TileKind::Hashes(level), idx, w)?;
                edge.push(tile_hashes(&b)?);
            }
        }
        let tree = TreeBuilder::from_right_edge(size, edge)?;
        if tree.root() != *root {
            return None;
        }
        let w = TreeBuilder::edge_width(size, 0);
        let bundle = if w == 0 {
            Vec::new()
        } else {
            read_tile(
                &self.dir,
                TileKind::Entries,
                TreeBuilder::edge_index(size, 0),
                w,
            )?
        };
        self.tree = tree;
        self.bundle = bundle;
        Some(())
    }

    /// Replays segment entries from `start` (where the tree state already stands), checking
    /// them as the verifier would. Entries before `start` are read only to find the last leaf.
    fn replay(
        &mut self,
        start: u64,
        committed_at_epoch: u64,
        cp_size: u64,
    ) -> Result<Recovery, Error> {
        let seg_dir = self.dir.join(layout::SEGMENTS);
        let segments = list_segments(&seg_dir).map_err(Error::io(&seg_dir))?;
        let first_needed = start.saturating_sub(1);
        let first_seg = segments
            .iter()
            .rposition(|s| s.start <= first_needed)
            .unwrap_or(0);
        let mut recovery = Recovery::default();
        let mut expect = segments.get(first_seg).map_or(0, |s| s.start);
        if expect > first_needed && start > 0 {
            return Err(Error::Corrupt(Problem {
                entry: Some(first_needed),
                kind: ProblemKind::Sequence { found: expect },
            }));
        }
        let mut cut: Option<(usize, u64, u64)> = None; // (segment index, offset, entry)
        'segs: for (si, seg) in segments.iter().enumerate().skip(first_seg) {
            let Some(mut r) = FrameReader::open(&seg.path).map_err(Error::io(&seg.path))? else {
                cut = Some((si, 0, expect));
                break;
            };
            loop {
                let (entry_bytes, leaf, offset) =
                    match r.next_frame().map_err(Error::io(&seg.path))? {
                        Next::End => continue 'segs,
                        Next::Bad(_, offset) => {
                            cut = Some((si, offset, expect));
                            break 'segs;
                        }
                        Next::Frame(e, l, o) => (e, l, o),
                    };
                let problem = |kind| Problem {
                    entry: Some(expect),
                    kind,
                };
                let e = match EntryRef::decode(entry_bytes) {
                    Ok(e) => e,
                    Err(d) => {
                        if expect >= committed_at_epoch {
                            cut = Some((si, offset, expect));
                            break 'segs;
                        }
                        return Err(Error::Corrupt(problem(ProblemKind::Malformed(d))));
                    }
                };
                if start > 0 && expect + 1 < start {
                    // Skipping entries already covered by the tiles.
                    if e.seq != expect {
                        return Err(Error::Corrupt(problem(ProblemKind::Sequence {
                            found: e.seq,
                        })));
                    }
                    expect += 1;
                    continue;
                }
                if start > 0 && expect + 1 == start {
                    // The entry just before the resume point: only its hash is needed.
                    if e.seq != expect {
                        return Err(Error::Corrupt(problem(ProblemKind::Sequence {
                            found: e.seq,
                        })));
                    }
                    if e.epoch != e.seq {
                        return Err(Error::Corrupt(problem(ProblemKind::WrongEpoch {
                            epoch: e.epoch,
                        })));
                    }
                    self.last_leaf = leaf.0;
                    expect += 1;
                    continue;
                }
                let tail = expect >= committed_at_epoch && expect >= cp_size;
                // The position binding, checked as the verifier checks it: every entry is
                // sealed with K(seq), so its epoch is its sequence number.
                let bad = if e.seq != expect {
                    Some(ProblemKind::Sequence { found: e.seq })
                } else if e.prev_hash != self.last_leaf {
                    Some(ProblemKind::BrokenLink)
                } else if e.epoch != e.seq {
                    Some(ProblemKind::WrongEpoch { epoch: e.epoch })
                } else if expect >= committed_at_epoch && {
                    // Entries from the key file's position on are checked with its key.
                    self.key.evolve_to(expect);
                    !self.key.verify(e.seq, &e.prev_hash, e.data, &e.mac)
                } {
                    Some(ProblemKind::BadMac { epoch: e.epoch })
                } else {
                    None
                };
                if let Some(kind) = bad {
                    if tail {
                        cut = Some((si, offset, expect));
                        break 'segs;
                    }
                    return Err(Error::Corrupt(problem(kind)));
                }
                self.push_sealed(entry_bytes, leaf);
                // The frame is already on disk: keep only the derived tiles, bounded.
                self.pending.clear();
                self.pending_entries = 0;
                if self.pending_tiles.len() >= 64 {
                    self.flush_tiles()?;
                }
                expect += 1;
                recovery.replayed += 1;
            }
        }
        if self.tree.size() < cp_size {
            return Err(Error::Corrupt(Problem {
                entry: Some(self.tree.size()),
                kind: ProblemKind::Missing {
                    log_size: self.tree.size(),
                    checkpoint_size: cp_size,
                    which: "stored",
                },
            }));
        }
        if let Some((si, offset, entry)) = cut {
            recovery.truncated = Some((entry, self.truncate_at(&segments, si, offset)?));
            tracing::warn!(
                entry,
                "torn tail after a crash: truncated to the last sealed entry"
            );
        }
        if self.tree.size() < self.key.epoch() {
            // The key file says more entries were durable than the segments hold.
            return Err(Error::Corrupt(Problem {
                entry: Some(self.tree.size()),
                kind: ProblemKind::Missing {
                    log_size: self.tree.size(),
                    checkpoint_size: self.key.epoch(),
                    which: "committed",
                },
            }));
        }
        // The next entry's key: K(size).
        self.key.evolve_to(self.tree.size());
        // Tiles derived during replay go to disk now, like a commit's.
        self.flush_tiles()?;
        Ok(recovery)
    }

    /// Cuts segment `si` at `offset` and deletes later segments. Returns bytes removed.
    fn truncate_at(
        &mut self,
        segments: &[crate::segment::SegmentInfo],
        si: usize,
        offset: u64,
    ) -> Result<u64, Error> {
        let mut removed = 0u64;
        for later in &segments[si + 1..] {
            removed += fs::metadata(&later.path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&later.path).map_err(Error::io(&later.path))?;
        }
        let p = &segments[si].path;
        let f = OpenOptions::new()
            .write(true)
            .open(p)
            .map_err(Error::io(p))?;
        let len = f.metadata().map_err(Error::io(p))?.len();
        let keep = if offset == 0 { 0 } else { offset };
        if keep == 0 {
            drop(f);
            fs::remove_file(p).map_err(Error::io(p))?;
        } else {
            f.set_len(keep).map_err(Error::io(p))?;
            f.sync_all().map_err(Error::io(p))?;
        }
        crate::fsutil::sync_parent(p).map_err(Error::io(p))?;
        Ok(removed + len.saturating_sub(keep))
    }

    /// The origin (checkpoint key name).
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// The log's verifier key.
    pub fn vkey(&self) -> &str {
        &self.vkey
    }

    /// Entries appended (durable or pending).
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Entries durable on disk.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The current MAC epoch: the position of the next entry, whose key `K(size)` is the
    /// only one the writer holds.
    pub fn epoch(&self) -> u64 {
        self.key.epoch()
    }

    /// Size of the latest checkpoint.
    pub fn checkpoint_size(&self) -> u64 {
        self.checkpoint_size
    }

    /// Seals `data` as the next entry and returns its index. The entry is durable only after
    /// [`Log::commit`] (called automatically when the batch fills) or [`Log::checkpoint`].
    pub fn append(&mut self, data: &[u8]) -> Result<u64, Error> {
        if data.len() > ENTRY_DATA_MAX {
            return Err(Error::EntryTooLarge { len: data.len() });
        }
        let seq = self.tree.size();
        debug_assert_eq!(self.key.epoch(), seq, "the key is bound to the position");
        let mac = self.key.seal(seq, &self.last_leaf, data);
        // Forward integrity: K(seq) is gone from memory as soon as its entry is sealed.
        self.key.evolve();
        let entry = EntryRef {
            seq,
            epoch: seq,
            prev_hash: self.last_leaf,
            mac,
            data,
        };
        let mut bytes = Vec::with_capacity(crate::entry::ENTRY_HEADER_LEN + data.len());
        entry.encode_into(&mut bytes);
        let leaf = leaf_hash(&bytes);
        self.push_sealed(&bytes, leaf);
        if self.pending_entries >= self.config.batch_entries_max
            || self.pending.len() >= self.config.batch_bytes_max
        {
            // Durable in the background; `commit` waits for it.
            self.submit_batch()?;
        }
        Ok(seq)
    }

    /// Adds a sealed entry to the pending batch, the tree and the bundle.
    fn push_sealed(&mut self, bytes: &[u8], leaf: Hash) {
        debug_assert_eq!(EntryRef::decode(bytes).map(|e| e.seq), Ok(self.tree.size()));
        encode_frame(bytes, &leaf, &mut self.pending);
        self.pending_entries += 1;
        self.bundle
            .extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        self.bundle.extend_from_slice(bytes);
        let dir = &self.dir;
        let tiles = &mut self.pending_tiles;
        let size_before = self.tree.size();
        self.tree.push(leaf, |t: FullTile<'_>| {
            let path = TilePath {
                kind: TileKind::Hashes(t.level),
                index: t.index,
                width: 256,
            };
            tiles.push((dir.join(path.path()), tile_bytes(t.hashes)));
        });
        if self.tree.size().is_multiple_of(TILE_WIDTH as u64) {
            let index = size_before / TILE_WIDTH as u64;
            let path = TilePath {
                kind: TileKind::Entries,
                index,
                width: 256,
            };
            tiles.push((self.dir.join(path.path()), std::mem::take(&mut self.bundle)));
        }
        self.last_leaf = leaf.0;
    }

    /// Hands the pending batch to the durability thread, which persists `K(size)` (the key
    /// of the next entry; the batch's own keys are already gone) once the batch is durable.
    fn submit_batch(&mut self) -> Result<(), Error> {
        if self.pending_entries == 0 {
            return Ok(());
        }
        let first_seq = self.tree.size() - self.pending_entries as u64;
        let job = Job {
            frames: std::mem::take(&mut self.pending),
            first_seq,
            committed_after: self.tree.size(),
            tiles: std::mem::take(&mut self.pending_tiles),
            new_key: self.key.clone(),
        };
        self.pending_entries = 0;
        if let Some(n) = self.writer.submit(job)? {
            self.committed = n;
        }
        Ok(())
    }

    /// Makes every appended entry durable: one write and one fsync of the segment for the
    /// whole batch, the tiles that filled, and the key file moved to the next epoch so the
    /// batch's key is gone from memory and disk.
    pub fn commit(&mut self) -> Result<(), Error> {
        self.submit_batch()?;
        if let Some(n) = self.writer.wait()? {
            self.committed = n;
        }
        assert_eq!(
            self.committed,
            self.tree.size(),
            "everything appended is durable"
        );
        self.invariants();
        Ok(())
    }

    fn flush_tiles(&mut self) -> Result<(), Error> {
        for (path, bytes) in self.pending_tiles.drain(..) {
            crate::fsutil::write_file(&path, &bytes).map_err(Error::io(&path))?;
            self.syncer.sync(path);
        }
        Ok(())
    }

    /// Commits, then signs and publishes a checkpoint of the whole log. Returns the signed
    /// note. Partial tiles for the new size are written before the checkpoint.
    pub fn checkpoint(&mut self) -> Result<Vec<u8>, Error> {
        self.commit()?;
        let size = self.tree.size();
        let root = self.tree.root();
        let p = self.dir.join(layout::CHECKPOINT);
        if size == self.checkpoint_size {
            assert_eq!(root, self.checkpoint_root, "same size, same root");
            return crate::fsutil::read_bounded(&p, CHECKPOINT_BYTES_MAX).map_err(Error::io(&p));
        }
        self.syncer
            .barrier()
            .map_err(Error::io(self.dir.join(layout::TILE)))?;
        let old_size = self.checkpoint_size;
        for (level, tile) in self.tree.right_edge().iter().enumerate() {
            if tile.is_empty() {
                continue;
            }
            let t = TilePath {
                kind: TileKind::Hashes(level as u8),
                index: TreeBuilder::edge_index(size, level as u8),
                width: tile.len() as u16,
            };
            self.write_synced(&t, &tile_bytes(tile))?;
        }
        if !self.bundle.is_empty() {
            let t = TilePath {
                kind: TileKind::Entries,
                index: TreeBuilder::edge_index(size, 0),
                width: TreeBuilder::edge_width(size, 0) as u16,
            };
            let bundle = self.bundle.clone();
            self.write_synced(&t, &bundle)?;
        }
        let note = self.signer.sign_checkpoint(size, &root)?;
        crate::fsutil::write_atomic(&p, &note).map_err(Error::io(&p))?;
        // Paired check: what we publish verifies as what we meant.
        let back = verify_checkpoint(&note, &self.vkey, &WitnessPolicy::none())?;
        assert_eq!((back.size, back.root), (size, root));
        self.checkpoint_size = size;
        self.checkpoint_root = root;
        // C2SP tlog-tiles: a partial tile stays until its full tile exists, so clients holding
        // an older checkpoint can still read it.
        for dir in superseded_partials(old_size, size) {
            let _ = fs::remove_dir_all(self.dir.join(dir));
        }
        tracing::debug!(size, "published checkpoint");
        Ok(note)
    }

    fn write_synced(&self, t: &TilePath, bytes: &[u8]) -> Result<(), Error> {
        let path = self.dir.join(t.path());
        crate::fsutil::write_file(&path, bytes).map_err(Error::io(&path))?;
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(Error::io(&path))?;
        crate::fsutil::sync_parent(&path).map_err(Error::io(&path))
    }

    /// The latest checkpoint's size and root.
    pub fn checkpoint_head(&self) -> (u64, Hash) {
        (self.checkpoint_size, self.checkpoint_root)
    }

    /// Proves entry `index` is in the latest checkpoint's tree.
    pub fn prove_inclusion(&self, index: u64) -> Result<InclusionProof, Error> {
        prove_inclusion(
            &self.dir,
            self.checkpoint_size,
            &self.checkpoint_root,
            index,
        )
    }

    /// Proves the tree of `old_size` is a prefix of the latest checkpoint's tree.
    pub fn prove_consistency(&self, old_size: u64) -> Result<ConsistencyProof, Error> {
        prove_consistency(
            &self.dir,
            self.checkpoint_size,
            &self.checkpoint_root,
            old_size,
        )
    }

    fn invariants(&self) {
        assert!(self.committed <= self.tree.size());
        assert!(self.checkpoint_size <= self.committed);
        assert!(self.committed + self.pending_entries as u64 <= self.tree.size());
        assert_eq!(
            self.key.epoch(),
            self.tree.size(),
            "the key in memory is K(size), the next entry's"
        );
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // Best effort: a dropped log loses nothing it promised (only commit() promises).
        // No invariant checks here: this also runs when `open` fails half-way.
        let r = self
            .submit_batch()
            .and_then(|()| self.writer.wait().map(|_| ()));
        if let Err(e) = r {
            tracing::error!(error = %e, "commit on drop failed");
        }
    }
}

/// The `<N>.p` directories of the checkpoint of `old` size whose full tile exists at `new`
/// size. Partial tiles only ever exist at checkpoint edges, so these are all the partials a
/// new checkpoint makes removable.
fn superseded_partials(old: u64, new: u64) -> Vec<String> {
    let mut out = Vec::new();
    for level in 0..TILE_LEVELS_MAX as u8 {
        if TreeBuilder::edge_width(old, level) == 0 {
            continue;
        }
        let index = TreeBuilder::edge_index(old, level);
        let full_at_new = (index + 1).saturating_mul(1u64 << (8 * (u32::from(level) + 1)).min(63));
        if new < full_at_new {
            continue;
        }
        let kinds: &[TileKind] = if level == 0 {
            &[TileKind::Hashes(0), TileKind::Entries]
        } else {
            &[TileKind::Hashes(level)]
        };
        for &kind in kinds {
            let one = TilePath {
                kind,
                index,
                width: 1,
            }
            .path();
            if let Some(d) = one.strip_suffix("/1") {
                out.push(d.to_owned());
            }
        }
    }
    out
}

/// Proves entry `index` is in the tree (`size`, `root`) using the tiles in `dir`. The tiles
/// are authenticated against `root` by `tlog_tiles` before use.
pub fn prove_inclusion(
    dir: &Path,
    size: u64,
    root: &Hash,
    index: u64,
) -> Result<InclusionProof, Error> {
    if index >= size {
        return Err(Error::NotInTree { index, size });
    }
    let reader = DiskTiles { dir };
    let hr = tlog_tiles::TileHashReader::new(size, *root, &reader);
    let path = tlog_tiles::prove_record(size, index, &hr).map_err(|_| Error::Tile)?;
    let tile_index = index / TILE_WIDTH as u64;
    let in_tile = (index % TILE_WIDTH as u64) as usize;
    let width = if tile_index < size / TILE_WIDTH as u64 {
        TILE_WIDTH
    } else {
        (size % TILE_WIDTH as u64) as usize
    };
    let bundle = read_tile(dir, TileKind::Entries, tile_index, width).ok_or(Error::Tile)?;
    let entries = bundle_entries(&bundle).ok_or(Error::Tile)?;
    let entry = entries.get(in_tile).ok_or(Error::Tile)?.to_vec();
    let proof = InclusionProof {
        index,
        tree_size: size,
        entry,
        path,
    };
    // Paired check: never hand out a proof that does not verify.
    proof.verify(root).map_err(|_| Error::Tile)?;
    Ok(proof)
}

/// Proves the tree of `old_size` is a prefix of the tree (`size`, `root`).
pub fn prove_consistency(
    dir: &Path,
    size: u64,
    root: &Hash,
    old_size: u64,
) -> Result<ConsistencyProof, Error> {
    if old_size > size {
        return Err(Error::NotInTree {
            index: old_size,
            size,
        });
    }
    if old_size == 0 || old_size == size {
        return Ok(ConsistencyProof {
            old_size,
            new_size: size,
            path: Vec::new(),
        });
    }
    let reader = DiskTiles { dir };
    let hr = tlog_tiles::TileHashReader::new(size, *root, &reader);
    let path = tlog_tiles::prove_tree(size, old_size, &hr).map_err(|_| Error::Tile)?;
    let proof = ConsistencyProof {
        old_size,
        new_size: size,
        path,
    };
    // Paired check, by our own code rather than the tile reader's: the old root from the
    // tiles of the old size's right edge, and the proof must lead from it to the
    // checkpointed `root`. A path that reaches the authentic new root pins the old root too,
    // so a proof that passes is correct whatever the tiles held.
    let old_root = edge_root(dir, old_size, size).ok_or(Error::Tile)?;
    proof.verify(&old_root, root).map_err(|_| Error::Tile)?;
    Ok(proof)
}

/// The root of the tree of `size` computed from the right-edge tiles of that size, each read
/// as a prefix of the tile published for the checkpoint of `published` size (the full tile,
/// or that checkpoint's own partial).
fn edge_root(dir: &Path, size: u64, published: u64) -> Option<Hash> {
    let mut edge = Vec::new();
    for level in 0..TILE_LEVELS_MAX as u8 {
        let w = TreeBuilder::edge_width(size, level);
        if w == 0 {
            edge.push(Vec::new());
            continue;
        }
        let idx = TreeBuilder::edge_index(size, level);
        let kind = TileKind::Hashes(level);
        let bytes = match read_tile(dir, kind, idx, w) {
            Some(b) => b,
            None if idx == TreeBuilder::edge_index(published, level) => {
                let pw = TreeBuilder::edge_width(published, level);
                let b = read_tile(dir, kind, idx, pw.max(w))?;
                b.get(..w * 32)?.to_vec()
            }
            None => return None,
        };
        edge.push(tile_hashes(&bytes)?);
    }
    Some(TreeBuilder::from_right_edge(size, edge)?.root())
}

/// Reads and verifies a log directory's stored checkpoint with the given verifier key.
pub fn read_checkpoint(dir: &Path, vkey: &str) -> Result<(Vec<u8>, crate::Checkpoint), Error> {
    let p = dir.join(layout::CHECKPOINT);
    let bytes = crate::fsutil::read_bounded(&p, CHECKPOINT_BYTES_MAX).map_err(Error::io(&p))?;
    let cp = verify_checkpoint(&bytes, vkey, &WitnessPolicy::none())?;
    Ok((bytes, cp))
}

/// Reads the log's own verifier key file (untrusted: anyone with the host can replace it).
pub fn read_vkey(dir: &Path) -> Result<String, Error> {
    let p = dir.join(layout::VKEY);
    let b = crate::fsutil::read_bounded(&p, 1024).map_err(Error::io(&p))?;
    Ok(std::str::from_utf8(&b)
        .map_err(|_| Error::BadKeyFile(p.clone()))?
        .trim_end()
        .to_owned())
}
