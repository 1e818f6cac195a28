//! The stolen-key attack: a thief copies `mac.key` and `signing.key` when the log holds `N`
//! entries, lets the log run on, then rewrites entries below and above `N`, re-seals every
//! entry it can, rebuilds the tiles and re-signs the checkpoint with the stolen signing key.
//! The verifier, holding only `K(0)` from `init`, must reject every alteration below `N`. The
//! test also records what is not protected: entries from `N` on (the thief can derive their
//! keys), which only a checkpoint held elsewhere (a client's or a witness's) catches.

use std::path::{Path, PathBuf};

use rampart_log::mac::EpochKey;
use rampart_log::merkle::leaf_hash;
use rampart_log::{
    Config, EntryRef, Log, NoteSigner, Problem, ProblemKind, VerifierSecret, VerifyOptions, layout,
    verify,
};

/// Size of the log when the keys are stolen.
const N: u64 = 200;
/// Size when the attack happens (the log kept running after the theft).
const TOTAL: u64 = 300;

struct Stolen {
    mac_key: Vec<u8>,
    signing_key: String,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// The thief's copy of K(n), parsed from `mac.key` as documented in ADR 0202
/// (`"RLK1" | epoch | committed | key | check`, two 64-byte slots).
fn parse_mac_key(raw: &[u8]) -> EpochKey {
    for slot in raw.chunks(64) {
        if slot.len() == 64 && &slot[..4] == b"RLK1" {
            let epoch = u64::from_be_bytes(slot[4..12].try_into().unwrap());
            return EpochKey::new(epoch, slot[20..52].try_into().unwrap());
        }
    }
    panic!("no key in the stolen mac.key");
}

fn segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join(layout::SEGMENTS))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1);
    segs.pop().unwrap()
}

/// (offset, length) of every frame of a segment.
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

fn frame(entry: &[u8]) -> Vec<u8> {
    let mut f = (entry.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(entry);
    f.extend_from_slice(&leaf_hash(entry).0[..8]);
    f
}

/// How the thief re-seals an entry with the stolen key `K(E)`.
#[derive(Debug, Clone, Copy)]
enum Strategy {
    /// Derive the key of the entry's own position, `K(seq)` (possible for `seq >= E`), and
    /// write `epoch = seq`.
    OwnPosition,
    /// Seal with `K(E)` itself and write `epoch = E` (what a per-batch scheme accepted for
    /// any `seq >= E`).
    StolenEpoch,
}

/// Rewrites entry `victim` and re-seals it and every later entry as well as the thief can
/// (with `strategy`; below `E` the thief has no usable key and seals with `K(E)` anyway).
/// Then rebuilds tiles and checkpoint with the stolen signing key, using the log's own code
/// (the easiest path for a thief; if the log's replay refuses, the thief is left with the
/// rewritten segments under an empty checkpoint).
fn attack(dir: &Path, stolen: &Stolen, victim: u64, strategy: Strategy) {
    let seg_path = segment(dir);
    let seg = std::fs::read(&seg_path).unwrap();
    let frs = frames(&seg);
    let k_n = parse_mac_key(&stolen.mac_key);
    let mut out = seg[..frs[victim as usize].0].to_vec();
    let mut prev = if victim == 0 {
        [0; 32]
    } else {
        let (o, l) = frs[victim as usize - 1];
        leaf_hash(&seg[o + 4..o + l - 8]).0
    };
    for (i, &(o, l)) in frs.iter().enumerate().skip(victim as usize) {
        let e = EntryRef::decode(&seg[o + 4..o + l - 8]).unwrap();
        let data = if i as u64 == victim {
            b"alice never read record 17".to_vec()
        } else {
            e.data.to_vec()
        };
        let mut k = k_n.clone();
        let epoch = match strategy {
            Strategy::OwnPosition if e.seq >= k.epoch() => {
                k.evolve_to(e.seq);
                e.seq
            }
            Strategy::OwnPosition => e.seq,
            Strategy::StolenEpoch => k.epoch(),
        };
        let new = EntryRef {
            seq: e.seq,
            epoch,
            prev_hash: prev,
            mac: k.seal(e.seq, &prev, &data),
            data: &data,
        }
        .encode();
        prev = leaf_hash(&new).0;
        out.extend(frame(&new));
    }
    std::fs::write(&seg_path, &out).unwrap();
    // Rebuild: tiles from scratch, an empty checkpoint signed with the stolen key, then let
    // the log replay everything and sign the rewritten tree.
    std::fs::remove_dir_all(dir.join(layout::TILE)).unwrap();
    let signer = NoteSigner::from_secret(stolen.signing_key.trim_end()).unwrap();
    let empty = rampart_log::merkle::TreeBuilder::new().root();
    let cp0 = signer.sign_checkpoint(0, &empty).unwrap();
    std::fs::write(dir.join(layout::CHECKPOINT), cp0).unwrap();
    match Log::open(dir, Config::default()) {
        Ok((mut log, _)) => {
            assert_eq!(log.size(), TOTAL);
            log.checkpoint().unwrap();
        }
        Err(e) => eprintln!("victim {victim}, {strategy:?}: the log's replay refuses: {e}"),
    }
}

fn verify_with_k0(dir: &Path, secret: &Path, trusted: Vec<Vec<u8>>) -> Result<u64, Problem> {
    let opts = VerifyOptions {
        secret: Some(VerifierSecret::load(secret).unwrap()),
        trusted,
        ..Default::default()
    };
    verify(dir, &opts).unwrap().map(|r| r.entries)
}

#[test]
fn a_key_stolen_at_size_n_cannot_rewrite_any_entry_below_n() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let secret = tmp.path().join("verifier.secret");
    Log::init(&dir, "stolen.test", &secret, &mut rand_core::OsRng).unwrap();
    // Small batches: many commits, so a per-batch key would lag far behind the position.
    let cfg = Config {
        batch_entries_max: 16,
        ..Config::default()
    };
    let (mut log, _) = Log::open(&dir, cfg.clone()).unwrap();
    for i in 0..N {
        log.append(format!("event {i}").as_bytes()).unwrap();
    }
    log.checkpoint().unwrap();
    // The theft: both secret files in the directory, at size N.
    let stolen = Stolen {
        mac_key: std::fs::read(dir.join(layout::MAC_KEY)).unwrap(),
        signing_key: std::fs::read_to_string(dir.join(layout::SIGNING_KEY)).unwrap(),
    };
    for i in N..TOTAL {
        log.append(format!("event {i}").as_bytes()).unwrap();
    }
    let client_checkpoint = log.checkpoint().unwrap();
    drop(log);
    assert_eq!(verify_with_k0(&dir, &secret, vec![]), Ok(TOTAL));

    let mut protected = Vec::new();
    let mut unprotected = Vec::new();
    for victim in [
        0,
        1,
        15,
        16,
        17,
        N / 2,
        N - 17,
        N - 1,
        N,
        N + 1,
        N + 50,
        TOTAL - 1,
    ] {
        let mut forged = false;
        for strategy in [Strategy::OwnPosition, Strategy::StolenEpoch] {
            let copy = tmp.path().join(format!("attack-{victim}-{strategy:?}"));
            copy_dir(&dir, &copy);
            attack(&copy, &stolen, victim, strategy);
            match verify_with_k0(&copy, &secret, vec![]) {
                Err(p) => {
                    // Below N the altered entry itself is named; from N on a failed strategy
                    // fails at a later entry (the other strategy then succeeds).
                    if victim < N {
                        assert_eq!(p.entry, Some(victim), "the altered entry is named: {p}");
                    }
                    assert!(
                        matches!(
                            p.kind,
                            ProblemKind::BadMac { .. } | ProblemKind::WrongEpoch { .. }
                        ),
                        "{p}"
                    );
                }
                Ok(n) => {
                    assert_eq!(n, TOTAL);
                    // Not protected by the MACs; a checkpoint the client kept catches it.
                    let p = verify_with_k0(&copy, &secret, vec![client_checkpoint.clone()])
                        .expect_err("the client's checkpoint pins the original tree");
                    assert!(
                        matches!(
                            p.kind,
                            ProblemKind::RootMismatch {
                                checkpoint_size: TOTAL,
                                which: "trusted"
                            }
                        ),
                        "{victim}: {p}"
                    );
                    forged = true;
                }
            }
        }
        if forged {
            unprotected.push(victim);
        } else {
            protected.push(victim);
        }
    }
    eprintln!("protected by the MAC chain: {protected:?}; only by checkpoints: {unprotected:?}");
    assert_eq!(protected, [0, 1, 15, 16, 17, N / 2, N - 17, N - 1]);
    assert_eq!(unprotected, [N, N + 1, N + 50, TOTAL - 1]);
}
