//! Verification of a log directory, streaming, in bounded memory. Read-only.
//!
//! Checks, in one pass over the segments: frame checks, sequence numbers, epochs, the hash
//! chain, the forward-secure MACs (with the verifier secret), and the Merkle root at the size
//! of the stored checkpoint and of every trusted checkpoint given. Reports the first problem
//! by position.
//!
//! It also checks what is published for clients against the same entries: every full hash
//! tile and entry bundle (byte for byte; those the stored checkpoint covers must exist),
//! every partial tile and bundle of an index whose full tile exists (each must be a prefix of
//! it), and the right-edge partial tiles and bundle at the stored checkpoint's size (must
//! exist and match), together with the older partials of that edge. Partials wider than the
//! stored checkpoint's edge (left by a crash before a checkpoint) are not checked. Tile
//! problems have no entry position, so an entry-level problem is reported first.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;

use crate::checkpoint::{WitnessPolicy, verify_checkpoint};
use crate::entry::{DecodeError, EntryRef};
use crate::error::{Error, Problem, ProblemKind};
use crate::mac::EpochKey;
use crate::merkle::{
    Hash, TILE_LEVELS_MAX, TILE_WIDTH, TileKind, TilePath, TreeBuilder, tile_bytes, tile_hashes,
};
use crate::segment::{FrameReader, Next, list_segments};
use crate::store::{VerifierSecret, layout, read_tile, read_vkey};

/// What to verify against.
#[derive(Debug, Default)]
pub struct VerifyOptions {
    /// The verifier secret from `init`: enables MAC checks and pins the log's public key.
    pub secret: Option<VerifierSecret>,
    /// Checkpoints seen earlier (signed notes), e.g. saved by a client or a witness. The log
    /// must extend each of them.
    pub trusted: Vec<Vec<u8>>,
    /// Witness cosignatures demanded of the trusted checkpoints.
    pub policy: WitnessPolicy,
}

/// Summary of a log that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: u64,
    /// Size of the stored checkpoint (entries after it are sealed but not yet checkpointed).
    pub checkpoint_size: u64,
    /// Whether MACs were checked (a verifier secret was given).
    pub macs_checked: bool,
    /// Epoch of the last entry (its position: keys are per entry).
    pub last_epoch: u64,
}

/// A checkpoint the entries must match.
struct Target {
    root: Hash,
    which: &'static str,
}

/// Verifies the log in `dir`. `Ok(Err(problem))` when the log is damaged or tampered with;
/// `Err` when it cannot be read or the options are invalid.
pub fn verify(dir: &Path, opts: &VerifyOptions) -> Result<Result<VerifyReport, Problem>, Error> {
    let vkey = match &opts.secret {
        Some(s) => s.vkey.clone(),
        None => {
            tracing::warn!("no verifier secret: MACs unchecked, log key taken from the directory");
            read_vkey(dir)?
        }
    };
    let p = dir.join(layout::CHECKPOINT);
    let stored = match crate::fsutil::read_bounded(&p, crate::checkpoint::CHECKPOINT_BYTES_MAX) {
        Ok(b) => match verify_checkpoint(&b, &vkey, &WitnessPolicy::none()) {
            Ok(c) => c,
            Err(_) => {
                return Ok(Err(Problem {
                    entry: None,
                    kind: ProblemKind::Checkpoint(
                        "the stored checkpoint's signature does not verify",
                    ),
                }));
            }
        },
        Err(e) => return Err(Error::io(p)(e)),
    };
    let mut targets: BTreeMap<u64, Vec<Target>> = BTreeMap::new();
    targets.entry(stored.size).or_default().push(Target {
        root: stored.root,
        which: "stored",
    });
    let mut trusted_max = 0;
    for t in &opts.trusted {
        let c = verify_checkpoint(t, &vkey, &opts.policy)?;
        trusted_max = trusted_max.max(c.size);
        targets.entry(c.size).or_default().push(Target {
            root: c.root,
            which: "trusted",
        });
    }

    let mut problems: Vec<Problem> = Vec::new();
    let stream = stream(
        dir,
        opts.secret.as_ref().map(|s| &s.key),
        &targets,
        stored.size,
        &mut problems,
    )?;
    let (size, last_epoch) = match stream {
        Ok(v) => v,
        Err(p) => {
            // An entry-level problem; a located rewrite strictly before it (from the tree)
            // wins. On a tie the entry-level diagnosis is more specific, so it goes first.
            problems.insert(0, p);
            let first = problems
                .into_iter()
                .min_by_key(|p| p.entry.unwrap_or(u64::MAX));
            return Ok(Err(first.expect("just pushed")));
        }
    };
    for (&tsize, ts) in targets.range(size + 1..) {
        for t in ts {
            problems.push(Problem {
                entry: Some(size),
                kind: ProblemKind::Missing {
                    log_size: size,
                    checkpoint_size: tsize,
                    which: t.which,
                },
            });
        }
    }
    if stored.size < trusted_max && problems.is_empty() {
        problems.push(Problem {
            entry: None,
            kind: ProblemKind::CheckpointRollback {
                stored: stored.size,
                trusted: trusted_max,
            },
        });
    }
    // Report the earliest position; problems without a position last.
    if let Some(p) = problems
        .into_iter()
        .min_by_key(|p| p.entry.unwrap_or(u64::MAX))
    {
        return Ok(Err(p));
    }
    Ok(Ok(VerifyReport {
        entries: size,
        checkpoint_size: stored.size,
        macs_checked: opts.secret.is_some(),
        last_epoch,
    }))
}

/// What the reader thread hands to the checking thread, in order.
enum Msg {
    /// Complete frames: their entry bytes back to back, and (length, leaf hash) of each.
    Frames(Vec<u8>, Vec<(usize, Hash)>),
    /// A segment file shorter than its magic.
    Empty,
    /// Undecodable bytes; `true` if in the last segment.
    Bad(DecodeError, bool),
    /// A file that is not a segment.
    NotSegment(std::path::PathBuf),
    /// An I/O error.
    Io(std::path::PathBuf, std::io::Error),
}

/// Bytes of entries per message; with [`PIPELINE_DEPTH`] it bounds the pipeline's memory.
const CHUNK_BYTES: usize = 1 << 20;
const PIPELINE_DEPTH: usize = 4;

/// Reader thread: reads segments, checks frames (computing leaf hashes), sends chunks. Stops
/// when the checker hangs up.
/// Also grows the Merkle tree and checks its root at every checkpoint size; root mismatches
/// go to `problems`.
fn read_segments(
    dir: &Path,
    segments: &[crate::segment::SegmentInfo],
    targets: &BTreeMap<u64, Vec<Target>>,
    stored_size: u64,
    problems: &mut Vec<Problem>,
    tx: &mpsc::SyncSender<Msg>,
) -> Result<(), Error> {
    let mut tree = TreeBuilder::new();
    // The entry bundle being filled (≤ 256 entries of ≤ 64 KiB) and the full tiles just made.
    let mut bundle: Vec<u8> = Vec::new();
    let mut full: Vec<(u8, u64, Vec<u8>)> = Vec::new();
    if let Some(ts) = targets.get(&0) {
        check_targets(dir, 0, &tree, ts, problems)?;
    }
    for (si, seg) in segments.iter().enumerate() {
        let last = si + 1 == segments.len();
        let mut r = match FrameReader::open(&seg.path) {
            Ok(Some(r)) => r,
            Ok(None) => {
                let _ = tx.send(Msg::Empty);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let _ = tx.send(Msg::NotSegment(seg.path.clone()));
                return Ok(());
            }
            Err(e) => {
                let _ = tx.send(Msg::Io(seg.path.clone(), e));
                return Ok(());
            }
        };
        let mut buf = Vec::with_capacity(CHUNK_BYTES + crate::entry::ENTRY_BYTES_MAX);
        let mut items = Vec::new();
        loop {
            let stop = match r.next_frame() {
                Ok(Next::Frame(e, leaf, _)) => {
                    buf.extend_from_slice(e);
                    items.push((e.len(), leaf));
                    // Entries are ≤ u16::MAX bytes (checked by the frame decoder).
                    bundle.extend_from_slice(&(e.len() as u16).to_be_bytes());
                    bundle.extend_from_slice(e);
                    tree.push(leaf, |t| {
                        full.push((t.level, t.index, tile_bytes(t.hashes)));
                    });
                    for (level, index, bytes) in full.drain(..) {
                        // Entries the tile covers: (index + 1) · 256^(level + 1).
                        let span = 1u64 << (8 * (u32::from(level) + 1)).min(63);
                        let covered = (index + 1).saturating_mul(span);
                        let kind = TileKind::Hashes(level);
                        check_published(dir, kind, index, &bytes, covered <= stored_size, problems);
                    }
                    if tree.size().is_multiple_of(TILE_WIDTH as u64) {
                        let index = tree.size() / TILE_WIDTH as u64 - 1;
                        let need = tree.size() <= stored_size;
                        check_published(dir, TileKind::Entries, index, &bundle, need, problems);
                        bundle.clear();
                    }
                    if tree.size() == stored_size {
                        check_edge(dir, &tree, &bundle, problems);
                    }
                    if let Some(ts) = targets.get(&tree.size()) {
                        check_targets(dir, tree.size(), &tree, ts, problems)?;
                    }
                    None
                }
                Ok(Next::End) => Some(None),
                Ok(Next::Bad(d, _)) => Some(Some(Msg::Bad(d, last))),
                Err(e) => Some(Some(Msg::Io(seg.path.clone(), e))),
            };
            if buf.len() >= CHUNK_BYTES || stop.is_some() {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_BYTES));
                if !items.is_empty()
                    && tx
                        .send(Msg::Frames(full, std::mem::take(&mut items)))
                        .is_err()
                {
                    return Ok(());
                }
            }
            match stop {
                None => {}
                Some(None) => break,
                Some(Some(m)) => {
                    let _ = tx.send(m);
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Streams all entries. Returns the size and last epoch, or the first entry-level problem.
/// Root mismatches at checkpoint sizes are pushed to `problems` (located when possible).
/// Two threads: one reads and hashes frames, this one checks MACs, links and the tree.
fn stream(
    dir: &Path,
    k0: Option<&EpochKey>,
    targets: &BTreeMap<u64, Vec<Target>>,
    stored_size: u64,
    problems: &mut Vec<Problem>,
) -> Result<Result<(u64, u64), Problem>, Error> {
    let seg_dir = dir.join(layout::SEGMENTS);
    let segments = list_segments(&seg_dir).map_err(Error::io(&seg_dir))?;
    let (tx, rx) = mpsc::sync_channel::<Msg>(PIPELINE_DEPTH);
    std::thread::scope(|scope| {
        let segs = &segments;
        let reader = scope.spawn(move || {
            let mut found = Vec::new();
            read_segments(dir, segs, targets, stored_size, &mut found, &tx).map(|()| found)
        });
        let r = check_stream(k0, &rx);
        drop(rx); // stops the reader if we returned early
        match reader.join() {
            Ok(Ok(found)) => problems.extend(found),
            Ok(Err(e)) => return Err(e),
            Err(p) => std::panic::resume_unwind(p),
        }
        r
    })
}

/// Checking thread: sequence numbers, the position binding of epochs, MACs and the hash chain.
fn check_stream(
    k0: Option<&EpochKey>,
    rx: &mpsc::Receiver<Msg>,
) -> Result<Result<(u64, u64), Problem>, Error> {
    // K(expect): walked forward one hash per entry.
    let mut key = k0.cloned();
    let mut last_leaf = [0u8; 32];
    let mut expect = 0u64;
    let bad = |entry: u64, kind| {
        Ok(Err(Problem {
            entry: Some(entry),
            kind,
        }))
    };
    for msg in rx {
        let (buf, items) = match msg {
            Msg::Frames(b, i) => (b, i),
            Msg::Empty | Msg::Bad(DecodeError::Truncated, true) => {
                return bad(expect, ProblemKind::TornTail);
            }
            Msg::Bad(e, _) => return bad(expect, ProblemKind::Malformed(e)),
            Msg::NotSegment(p) => return bad(expect, ProblemKind::BadSegment(p)),
            Msg::Io(p, e) => return Err(Error::io(p)(e)),
        };
        let mut pos = 0usize;
        for (len, leaf) in items {
            let bytes = &buf[pos..pos + len];
            pos += len;
            let e = match EntryRef::decode(bytes) {
                Ok(e) => e,
                Err(d) => return bad(expect, ProblemKind::Malformed(d)),
            };
            if e.seq != expect {
                return bad(expect, ProblemKind::Sequence { found: e.seq });
            }
            // The key is bound to the position: a key stolen at size n (K(n)) can only make
            // MACs that verify here for positions >= n.
            if e.epoch != e.seq {
                return bad(expect, ProblemKind::WrongEpoch { epoch: e.epoch });
            }
            if let Some(k) = key.as_mut() {
                if !k.verify(e.seq, &e.prev_hash, e.data, &e.mac) {
                    return bad(expect, ProblemKind::BadMac { epoch: e.epoch });
                }
                k.evolve();
            }
            if e.prev_hash != last_leaf {
                // This entry is intact (frame check, and MAC if checked), so the link it seals
                // names the authentic previous entry: that one was changed.
                return bad(expect.saturating_sub(1), ProblemKind::BrokenLink);
            }
            last_leaf = leaf.0;
            expect += 1;
        }
    }
    Ok(Ok((expect, expect.saturating_sub(1))))
}

/// The prefix of a full tile (or bundle) that a partial one of `width` must equal.
fn prefix(kind: TileKind, full: &[u8], width: usize) -> Option<&[u8]> {
    match kind {
        TileKind::Hashes(_) => full.get(..width * 32),
        TileKind::Entries => crate::store::bundle_prefix(full, width),
    }
}

fn tile_problem(kind: ProblemKind) -> Problem {
    Problem { entry: None, kind }
}

/// Checks a full tile or bundle the entries produced against the published file, and every
/// published partial of the same index against its prefix. `required`: the stored
/// checkpoint covers it, so it must be published.
fn check_published(
    dir: &Path,
    kind: TileKind,
    index: u64,
    bytes: &[u8],
    required: bool,
    problems: &mut Vec<Problem>,
) {
    let t = TilePath {
        kind,
        index,
        width: TILE_WIDTH as u16,
    };
    let name = t.path();
    match crate::fsutil::read_bounded(&dir.join(&name), bytes.len()) {
        Ok(b) if b == bytes => {}
        Ok(_) => problems.push(tile_problem(ProblemKind::BadTile(name))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if required {
                problems.push(tile_problem(ProblemKind::MissingTile(name)));
            }
        }
        Err(_) => problems.push(tile_problem(ProblemKind::BadTile(name))),
    }
    check_partials(dir, kind, index, bytes, TILE_WIDTH - 1, problems);
}

/// Checks every published partial of (`kind`, `index`) of width ≤ `max_width` against the
/// prefix of `full`. Reads one directory of at most 255 names.
fn check_partials(
    dir: &Path,
    kind: TileKind,
    index: u64,
    full: &[u8],
    max_width: usize,
    problems: &mut Vec<Problem>,
) {
    let one = TilePath {
        kind,
        index,
        width: 1,
    }
    .path();
    let pdir = dir.join(one.strip_suffix("/1").unwrap_or(&one));
    let Ok(rd) = std::fs::read_dir(&pdir) else {
        return;
    };
    for ent in rd.take(TILE_WIDTH) {
        let Ok(ent) = ent else { continue };
        let fname = ent.file_name();
        let Some(w) = fname
            .to_str()
            .and_then(|n| n.parse::<u16>().ok())
            .filter(|&w| (1..TILE_WIDTH as u16).contains(&w))
        else {
            continue;
        };
        if usize::from(w) > max_width {
            continue;
        }
        let name = TilePath {
            kind,
            index,
            width: w,
        }
        .path();
        let want = prefix(kind, full, usize::from(w));
        let ok = match (want, crate::fsutil::read_bounded(&ent.path(), full.len())) {
            (Some(want), Ok(b)) => b == want,
            _ => false,
        };
        if !ok {
            problems.push(tile_problem(ProblemKind::BadTile(name)));
        }
    }
}

/// At the stored checkpoint's size: the right-edge partial tiles and bundle must be
/// published and match, and older partials of the same edge must be their prefixes.
fn check_edge(dir: &Path, tree: &TreeBuilder, bundle: &[u8], problems: &mut Vec<Problem>) {
    let size = tree.size();
    for level in 0..TILE_LEVELS_MAX as u8 {
        let w = TreeBuilder::edge_width(size, level);
        if w == 0 {
            continue;
        }
        let index = TreeBuilder::edge_index(size, level);
        let hashes = tree
            .right_edge()
            .get(usize::from(level))
            .map(|h| tile_bytes(h))
            .unwrap_or_default();
        let mut kinds = vec![(TileKind::Hashes(level), hashes)];
        if level == 0 {
            kinds.push((TileKind::Entries, bundle.to_vec()));
        }
        for (kind, bytes) in kinds {
            let name = TilePath {
                kind,
                index,
                width: w as u16,
            }
            .path();
            match crate::fsutil::read_bounded(&dir.join(&name), bytes.len()) {
                Ok(b) if b == bytes => {}
                Ok(_) => problems.push(tile_problem(ProblemKind::BadTile(name))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    problems.push(tile_problem(ProblemKind::MissingTile(name)));
                }
                Err(_) => problems.push(tile_problem(ProblemKind::BadTile(name))),
            }
            check_partials(dir, kind, index, &bytes, w - 1, problems);
        }
    }
}

fn check_targets(
    dir: &Path,
    size: u64,
    tree: &TreeBuilder,
    ts: &[Target],
    problems: &mut Vec<Problem>,
) -> Result<(), Error> {
    let root = tree.root();
    for t in ts {
        if t.root != root {
            let located = locate(dir, size, &t.root)?;
            problems.push(match located {
                Some(entry) => Problem {
                    entry: Some(entry),
                    kind: ProblemKind::Rewritten {
                        checkpoint_size: size,
                        which: t.which,
                    },
                },
                None => Problem {
                    entry: None,
                    kind: ProblemKind::RootMismatch {
                        checkpoint_size: size,
                        which: t.which,
                    },
                },
            });
        }
    }
    Ok(())
}

/// Finds the first entry whose leaf hash differs from the level-0 tiles, provided the tiles
/// themselves hash to the checkpoint root (then they are authentic). Bounded memory: one
/// tile at a time plus a tree builder.
fn locate(dir: &Path, size: u64, root: &Hash) -> Result<Option<u64>, Error> {
    let tiles = size.div_ceil(TILE_WIDTH as u64);
    let width_of = |t: u64| {
        if t + 1 < tiles || size.is_multiple_of(TILE_WIDTH as u64) {
            TILE_WIDTH
        } else {
            (size % TILE_WIDTH as u64) as usize
        }
    };
    // Pass 1: authenticate the tiles.
    let mut tree = TreeBuilder::new();
    for t in 0..tiles {
        let Some(hashes) =
            read_tile(dir, TileKind::Hashes(0), t, width_of(t)).and_then(|b| tile_hashes(&b))
        else {
            return Ok(None);
        };
        for h in hashes {
            tree.push(h, |_| {});
        }
    }
    if tree.root() != *root {
        return Ok(None);
    }
    // Pass 2: compare leaf by leaf.
    let seg_dir = dir.join(layout::SEGMENTS);
    let segments = list_segments(&seg_dir).map_err(Error::io(&seg_dir))?;
    let mut index = 0u64;
    let mut tile: Vec<Hash> = Vec::new();
    for seg in &segments {
        let Some(mut r) = FrameReader::open(&seg.path).map_err(Error::io(&seg.path))? else {
            return Ok(Some(index));
        };
        loop {
            if index >= size {
                return Ok(None);
            }
            let leaf = match r.next_frame() {
                Ok(Next::Frame(_, l, _)) => l,
                Ok(Next::End) => break,
                _ => return Ok(Some(index)),
            };
            let pos = (index % TILE_WIDTH as u64) as usize;
            if pos == 0 {
                let t = index / TILE_WIDTH as u64;
                let b = read_tile(dir, TileKind::Hashes(0), t, width_of(t)).ok_or(Error::Tile)?;
                tile = tile_hashes(&b).ok_or(Error::Tile)?;
            }
            if tile.get(pos) != Some(&leaf) {
                return Ok(Some(index));
            }
            index += 1;
        }
    }
    Ok((index < size).then_some(index))
}
