//! Tamper evidence: each attack on a sealed log is detected and the exact entry is named.

use std::path::{Path, PathBuf};

use rampart_log::mac::EpochKey;
use rampart_log::merkle::leaf_hash;
use rampart_log::{
    Config, EntryRef, Log, Problem, ProblemKind, VerifierSecret, VerifyOptions, layout, verify,
};

const N: u64 = 300;
/// Small batches, so the log spans many epochs.
const BATCH: usize = 7;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    secret: PathBuf,
}

fn build(n: u64) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let secret = tmp.path().join("verifier.secret");
    Log::init(&dir, "tamper.test", &secret, &mut rand_core::OsRng).unwrap();
    let cfg = Config {
        batch_entries_max: BATCH,
        ..Config::default()
    };
    let (mut log, _) = Log::open(&dir, cfg).unwrap();
    for i in 0..n {
        log.append(format!("event {i}").as_bytes()).unwrap();
    }
    log.checkpoint().unwrap();
    assert!(log.epoch() > 40, "many epochs: {}", log.epoch());
    Fixture {
        _tmp: tmp,
        dir,
        secret,
    }
}

impl Fixture {
    fn opts(&self) -> VerifyOptions {
        VerifyOptions {
            secret: Some(VerifierSecret::load(&self.secret).unwrap()),
            ..Default::default()
        }
    }
    fn verify(&self) -> Result<u64, Problem> {
        verify(&self.dir, &self.opts()).unwrap().map(|r| r.entries)
    }
    fn segment(&self) -> PathBuf {
        let d = self.dir.join(layout::SEGMENTS);
        let mut segs: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        segs.sort();
        assert_eq!(segs.len(), 1);
        segs.pop().unwrap()
    }
}

/// (offset, length) of every frame in a segment file, parsed independently of the library.
fn frames(seg: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 8;
    while pos < seg.len() {
        let len = u32::from_le_bytes(seg[pos..pos + 4].try_into().unwrap()) as usize;
        out.push((pos, 4 + len + 8));
        pos += 4 + len + 8;
    }
    out
}

/// A frame for `entry` with a correct frame check, as an attacker would write it.
fn frame(entry: &[u8]) -> Vec<u8> {
    let mut f = (entry.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(entry);
    f.extend_from_slice(&leaf_hash(entry).0[..8]);
    f
}

fn entry_of(seg: &[u8], fr: (usize, usize)) -> Vec<u8> {
    seg[fr.0 + 4..fr.0 + fr.1 - 8].to_vec()
}

fn at(p: Result<u64, Problem>) -> (Option<u64>, ProblemKind) {
    let p = p.expect_err("tampering must be detected");
    (p.entry, p.kind)
}

#[test]
fn intact_log_verifies() {
    let f = build(N);
    assert_eq!(f.verify(), Ok(N));
}

#[test]
fn flipped_byte_is_named() {
    let f = build(N);
    let seg_path = f.segment();
    let mut seg = std::fs::read(&seg_path).unwrap();
    let fr = frames(&seg)[150];
    seg[fr.0 + fr.1 - 10] ^= 0x01; // last data byte of entry 150
    std::fs::write(&seg_path, &seg).unwrap();
    assert!(matches!(
        at(f.verify()),
        (Some(150), ProblemKind::Malformed(_))
    ));
}

#[test]
fn modified_entry_with_fixed_frame_check_fails_its_mac() {
    let f = build(N);
    let seg_path = f.segment();
    let seg = std::fs::read(&seg_path).unwrap();
    let fr = frames(&seg)[123];
    let mut entry = entry_of(&seg, fr);
    let last = entry.len() - 1;
    entry[last] ^= 0x20;
    let mut out = seg[..fr.0].to_vec();
    out.extend(frame(&entry));
    out.extend_from_slice(&seg[fr.0 + fr.1..]);
    std::fs::write(&seg_path, &out).unwrap();
    assert!(matches!(
        at(f.verify()),
        (Some(123), ProblemKind::BadMac { .. })
    ));
}

#[test]
fn deleted_entry_is_named() {
    let f = build(N);
    let seg_path = f.segment();
    let seg = std::fs::read(&seg_path).unwrap();
    let fr = frames(&seg)[77];
    let mut out = seg[..fr.0].to_vec();
    out.extend_from_slice(&seg[fr.0 + fr.1..]);
    std::fs::write(&seg_path, &out).unwrap();
    assert_eq!(
        at(f.verify()),
        (Some(77), ProblemKind::Sequence { found: 78 })
    );
}

#[test]
fn inserted_entries_are_named() {
    // A replayed copy of an older entry.
    let f = build(N);
    let seg_path = f.segment();
    let seg = std::fs::read(&seg_path).unwrap();
    let frs = frames(&seg);
    let (copy, target) = (frs[10], frs[200]);
    let mut out = seg[..target.0].to_vec();
    out.extend_from_slice(&seg[copy.0..copy.0 + copy.1]);
    out.extend_from_slice(&seg[target.0..]);
    std::fs::write(&seg_path, &out).unwrap();
    assert_eq!(
        at(f.verify()),
        (Some(200), ProblemKind::Sequence { found: 10 })
    );

    // A forged entry with the right sequence number and link, but no key to seal it.
    let f = build(N);
    let seg_path = f.segment();
    let seg = std::fs::read(&seg_path).unwrap();
    let frs = frames(&seg);
    let prev = leaf_hash(&entry_of(&seg, frs[199]));
    let forged = EntryRef {
        seq: 200,
        epoch: 200,
        prev_hash: prev.0,
        mac: [0; 32],
        data: b"forged",
    }
    .encode();
    let mut out = seg[..frs[200].0].to_vec();
    out.extend(frame(&forged));
    out.extend_from_slice(&seg[frs[200].0..]);
    std::fs::write(&seg_path, &out).unwrap();
    assert_eq!(
        at(f.verify()),
        (Some(200), ProblemKind::BadMac { epoch: 200 })
    );
}

#[test]
fn reordered_entries_are_named() {
    let f = build(N);
    let seg_path = f.segment();
    let seg = std::fs::read(&seg_path).unwrap();
    let frs = frames(&seg);
    let (a, b) = (frs[42], frs[43]);
    let mut out = seg[..a.0].to_vec();
    out.extend_from_slice(&seg[b.0..b.0 + b.1]);
    out.extend_from_slice(&seg[a.0..a.0 + a.1]);
    out.extend_from_slice(&seg[b.0 + b.1..]);
    std::fs::write(&seg_path, &out).unwrap();
    assert_eq!(
        at(f.verify()),
        (Some(42), ProblemKind::Sequence { found: 43 })
    );
}

#[test]
fn truncation_is_named() {
    let f = build(N);
    let seg_path = f.segment();
    let seg = std::fs::read(&seg_path).unwrap();
    let frs = frames(&seg);
    std::fs::write(&seg_path, &seg[..frs[250].0]).unwrap();
    assert_eq!(
        at(f.verify()),
        (
            Some(250),
            ProblemKind::Missing {
                log_size: 250,
                checkpoint_size: N,
                which: "stored"
            }
        )
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

#[test]
fn rollback_to_older_valid_state_is_caught_by_an_earlier_checkpoint() {
    let f = build(N);
    // The attacker keeps a copy of the whole directory at size N...
    let old = f._tmp.path().join("old");
    copy_dir(&f.dir, &old);
    // ...the log grows and a client keeps the new checkpoint...
    let (mut log, _) = Log::open(&f.dir, Config::default()).unwrap();
    for i in 0..100 {
        log.append(format!("later {i}").as_bytes()).unwrap();
    }
    let seen = log.checkpoint().unwrap();
    drop(log);
    // ...then the attacker restores the old, internally valid directory.
    std::fs::remove_dir_all(&f.dir).unwrap();
    copy_dir(&old, &f.dir);
    assert_eq!(f.verify(), Ok(N), "the old state alone is valid");
    let opts = VerifyOptions {
        trusted: vec![seen],
        ..f.opts()
    };
    let p = verify(&f.dir, &opts).unwrap().unwrap_err();
    assert_eq!(
        (p.entry, p.kind),
        (
            Some(N),
            ProblemKind::Missing {
                log_size: N,
                checkpoint_size: N + 100,
                which: "trusted"
            }
        )
    );
}

/// K(e) as a thief who read `mac.key` at epoch `e` would hold it.
fn stolen_key(f: &Fixture, epoch: u64) -> EpochKey {
    let mut k = VerifierSecret::load(&f.secret).unwrap().key;
    k.evolve_to(epoch);
    k
}

#[test]
fn resealing_an_old_entry_with_a_later_key_is_named() {
    let f = build(N);
    let seg_path = f.segment();
    let seg = std::fs::read(&seg_path).unwrap();
    let frs = frames(&seg);
    let victim = 100;
    let orig = entry_of(&seg, frs[victim]);
    let e = EntryRef::decode(&orig).unwrap();
    assert_eq!(e.epoch, 100, "the epoch is the position");
    let k = stolen_key(&f, 200); // stolen when the log held 200 entries
    let data = b"alice never read record 17";
    let mac = k.seal(e.seq, &e.prev_hash, data);
    // Both ways of using the later key fail: under its own epoch (the position binding) and
    // under the entry's epoch (the MAC).
    for (epoch, want) in [
        (200, ProblemKind::WrongEpoch { epoch: 200 }),
        (100, ProblemKind::BadMac { epoch: 100 }),
    ] {
        let resealed = EntryRef {
            epoch,
            mac,
            data,
            ..e
        }
        .encode();
        let mut out = seg[..frs[victim].0].to_vec();
        out.extend(frame(&resealed));
        out.extend_from_slice(&seg[frs[victim].0 + frs[victim].1..]);
        std::fs::write(&seg_path, &out).unwrap();
        assert_eq!(at(f.verify()), (Some(100), want));
    }
}

#[test]
fn resealing_the_whole_tail_consistently_is_caught_by_the_checkpoint() {
    let f = build(N);
    let seg_path = f.segment();
    let seg = std::fs::read(&seg_path).unwrap();
    let frs = frames(&seg);
    let from = 250usize;
    let mut k = stolen_key(&f, 250);
    let mut out = seg[..frs[from].0].to_vec();
    let mut prev = leaf_hash(&entry_of(&seg, frs[from - 1])).0;
    for (i, fr) in frs.iter().enumerate().skip(from) {
        let old = entry_of(&seg, *fr);
        let e = EntryRef::decode(&old).unwrap();
        let data = format!("rewritten {i}");
        let mac = k.seal(e.seq, &prev, data.as_bytes());
        k.evolve();
        let new = EntryRef {
            epoch: e.seq,
            prev_hash: prev,
            mac,
            data: data.as_bytes(),
            ..e
        }
        .encode();
        prev = leaf_hash(&new).0;
        out.extend(frame(&new));
    }
    std::fs::write(&seg_path, &out).unwrap();
    // MACs, links and epochs are all consistent; the signed checkpoint still pins the
    // original tree, and the authenticated tiles locate the first rewritten entry.
    assert_eq!(
        at(f.verify()),
        (
            Some(250),
            ProblemKind::Rewritten {
                checkpoint_size: N,
                which: "stored"
            }
        )
    );
}

#[test]
fn torn_tail_is_reported_then_truncated_on_open() {
    let f = build(N);
    let seg_path = f.segment();
    let mut seg = std::fs::read(&seg_path).unwrap();
    let good_len = seg.len();
    // A crash in the middle of writing entry N: half a frame at the end.
    let half = frame(
        &EntryRef {
            seq: N,
            epoch: 0,
            prev_hash: [0; 32],
            mac: [0; 32],
            data: b"xx",
        }
        .encode(),
    );
    seg.extend_from_slice(&half[..half.len() / 2]);
    std::fs::write(&seg_path, &seg).unwrap();
    assert_eq!(at(f.verify()), (Some(N), ProblemKind::TornTail));
    let (mut log, rec) = Log::open(&f.dir, Config::default()).unwrap();
    assert_eq!(rec.truncated, Some((N, (half.len() / 2) as u64)));
    assert_eq!(std::fs::metadata(&seg_path).unwrap().len(), good_len as u64);
    log.append(b"after recovery").unwrap();
    log.checkpoint().unwrap();
    drop(log);
    assert_eq!(f.verify(), Ok(N + 1));
}

#[test]
fn unsealed_tail_after_crash_is_recovered_and_kept() {
    // Entries written but not checkpointed (crash after the segment fsync) are replayed.
    let f = build(N);
    let (mut log, _) = Log::open(
        &f.dir,
        Config {
            batch_entries_max: 1000,
            ..Config::default()
        },
    )
    .unwrap();
    for i in 0..50 {
        log.append(format!("tail {i}").as_bytes()).unwrap();
    }
    log.commit().unwrap();
    drop(log); // no checkpoint: the process could have died here
    let (mut log, rec) = Log::open(&f.dir, Config::default()).unwrap();
    assert_eq!((rec.replayed, rec.truncated), (50, None));
    assert_eq!(log.size(), N + 50);
    log.checkpoint().unwrap();
    drop(log);
    assert_eq!(f.verify(), Ok(N + 50));
}

#[test]
fn damage_below_the_durable_mark_refuses_to_open() {
    let f = build(N);
    let seg_path = f.segment();
    let mut seg = std::fs::read(&seg_path).unwrap();
    let fr = frames(&seg)[5];
    seg[fr.0 + 20] ^= 1;
    std::fs::write(&seg_path, &seg).unwrap();
    // Entry 5 is below the checkpoint: the writer must not "repair" it away. Remove the
    // right-edge tiles so open has to replay from the start.
    std::fs::remove_dir_all(f.dir.join("tile")).unwrap();
    let err = Log::open(&f.dir, Config::default()).unwrap_err();
    assert!(err.to_string().contains("entry 5"), "{err}");
}

#[test]
fn replay_refuses_an_entry_whose_epoch_is_not_its_position() {
    // Entries durable but not yet checkpointed are replayed on open without their MACs (their
    // keys are gone). The position binding must still hold there, or the writer would sign
    // a checkpoint over a log its own verifier rejects.
    let f = build(N);
    let (mut log, _) = Log::open(&f.dir, Config::default()).unwrap();
    for i in 0..20 {
        log.append(format!("tail {i}").as_bytes()).unwrap();
    }
    log.commit().unwrap();
    drop(log);
    let seg_path = f.segment();
    let seg = std::fs::read(&seg_path).unwrap();
    let frs = frames(&seg);
    let victim = N as usize + 5;
    let orig = entry_of(&seg, frs[victim]);
    let e = EntryRef::decode(&orig).unwrap();
    let moved = EntryRef {
        epoch: e.seq + 1,
        ..e
    }
    .encode();
    let mut out = seg[..frs[victim].0].to_vec();
    out.extend(frame(&moved));
    // Re-link the later entries (their MACs are not checked on replay, their keys are gone),
    // so the epoch is the only thing wrong.
    let mut prev = leaf_hash(&moved).0;
    for fr in &frs[victim + 1..] {
        let old = entry_of(&seg, *fr);
        let relinked = EntryRef {
            prev_hash: prev,
            ..EntryRef::decode(&old).unwrap()
        }
        .encode();
        prev = leaf_hash(&relinked).0;
        out.extend(frame(&relinked));
    }
    std::fs::write(&seg_path, &out).unwrap();
    assert_eq!(
        at(f.verify()),
        (Some(N + 5), ProblemKind::WrongEpoch { epoch: N + 6 })
    );
    let err = Log::open(&f.dir, Config::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "log is corrupt: entry {}: epoch {} is not this entry's position (each entry is sealed with K(seq))",
            N + 5,
            N + 6
        )
    );
}

/// Flips one byte of a published tile file and returns verify's problem.
fn tamper_tile(f: &Fixture, tile: &str) -> Problem {
    let p = f.dir.join(tile);
    let mut b = std::fs::read(&p).unwrap_or_else(|e| panic!("{tile}: {e}"));
    let i = b.len() - 3;
    b[i] ^= 1;
    std::fs::write(&p, &b).unwrap();
    verify(&f.dir, &f.opts())
        .unwrap()
        .expect_err("tampered tiles must fail verify")
}

#[test]
fn tampered_published_tiles_and_bundles_fail_verify() {
    // N = 300: one full tile and bundle (index 0), partials of width 44 at index 1.
    for tile in [
        "tile/0/000",
        "tile/entries/000",
        "tile/0/001.p/44",
        "tile/entries/001.p/44",
        "tile/1/000.p/1",
    ] {
        let f = build(N);
        let p = tamper_tile(&f, tile);
        assert_eq!(
            p,
            Problem {
                entry: None,
                kind: ProblemKind::BadTile(tile.to_owned())
            }
        );
        assert_eq!(
            p.to_string(),
            format!("published {tile} does not match the entries (tampered or stale)")
        );
    }
    // A missing partial the checkpoint needs.
    let f = build(N);
    std::fs::remove_file(f.dir.join("tile/entries/001.p/44")).unwrap();
    assert_eq!(
        at(f.verify()),
        (
            None,
            ProblemKind::MissingTile("tile/entries/001.p/44".into())
        )
    );
}
