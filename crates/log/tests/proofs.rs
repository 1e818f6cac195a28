//! Inclusion and consistency proofs from the on-disk tiles, checked with `tlog_tiles`'
//! verifiers against roots computed by a naive RFC 6962 model.

use rampart_log::merkle::{Hash, leaf_hash, node_hash};
use rampart_log::merkle::{TileKind, TilePath};
use rampart_log::{Config, Log, VerifyOptions, bundle_entries, layout, read_checkpoint, verify};

fn model_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash(*b"\xe3\xb0\xc4\x42\x98\xfc\x1c\x14\x9a\xfb\xf4\xc8\x99\x6f\xb9\x24\x27\xae\x41\xe4\x64\x9b\x93\x4c\xa4\x95\x99\x1b\x78\x52\xb8\x55"),
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(model_root(&leaves[..k]), model_root(&leaves[k..]))
        }
    }
}

#[test]
fn proofs_at_many_sizes_match_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    Log::init(
        &dir,
        "proofs.test",
        &tmp.path().join("s"),
        &mut rand_core::OsRng,
    )
    .unwrap();
    let (mut log, _) = Log::open(
        &dir,
        Config {
            batch_entries_max: 20_000,
            ..Config::default()
        },
    )
    .unwrap();
    let mut heads: Vec<(u64, Hash)> = vec![(0, model_root(&[]))];
    // Sizes around tile boundaries, including a level-1 tile (65536 leaves).
    let sizes = [
        1u64, 2, 3, 7, 255, 256, 257, 511, 512, 1000, 65_535, 65_536, 65_537, 66_000,
    ];
    for &size in &sizes {
        while log.size() < size {
            log.append(format!("e{}", log.size()).as_bytes()).unwrap();
        }
        log.checkpoint().unwrap();
        let (_, cp) = read_checkpoint(&dir, log.vkey()).unwrap();
        assert_eq!(cp.size, size);
        let leaves = leaves_from_bundles(&dir, size);
        assert_eq!(cp.root, model_root(&leaves), "root at size {size}");
        // Inclusion: a sample of indices, each verified against the checkpoint root.
        for index in [0, size / 3, size / 2, size - 1] {
            let p = log.prove_inclusion(index).unwrap();
            p.verify(&cp.root).unwrap();
            let mut wrong = p.clone();
            wrong.index = (index + 1) % size;
            if size > 1 {
                assert!(wrong.verify(&cp.root).is_err(), "proof bound to its index");
            }
        }
        assert!(log.prove_inclusion(size).is_err());
        // Consistency with every earlier checkpoint.
        for &(old, old_root) in &heads {
            let p = log.prove_consistency(old).unwrap();
            p.verify(&old_root, &cp.root).unwrap();
            if old > 0 && old < size {
                assert!(
                    p.verify(&cp.root, &cp.root).is_err(),
                    "proof bound to the old root"
                );
            }
        }
        heads.push((size, cp.root));
    }
    drop(log);
    let r = verify(&dir, &VerifyOptions::default()).unwrap().unwrap();
    assert_eq!(r.entries, 66_000);
}

#[test]
fn tampered_tiles_do_not_yield_proofs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    Log::init(
        &dir,
        "tiles.test",
        &tmp.path().join("s"),
        &mut rand_core::OsRng,
    )
    .unwrap();
    let (mut log, _) = Log::open(&dir, Config::default()).unwrap();
    for i in 0..600u32 {
        log.append(&i.to_be_bytes()).unwrap();
    }
    log.checkpoint().unwrap();
    let tile = dir.join(layout::TILE).join("0").join("001");
    let mut b = std::fs::read(&tile).unwrap();
    b[40] ^= 1;
    std::fs::write(&tile, &b).unwrap();
    assert!(
        log.prove_inclusion(300).is_err(),
        "tile authenticated against the checkpoint"
    );
    drop(log);
    // The segments are intact, but what clients read is not: verify names the tile.
    let p = verify(&dir, &VerifyOptions::default())
        .unwrap()
        .unwrap_err();
    assert_eq!(
        p.kind,
        rampart_log::ProblemKind::BadTile("tile/0/001".into())
    );
}

/// Leaf hashes of the first `size` entries, read from the C2SP entry bundles.
fn leaves_from_bundles(dir: &std::path::Path, size: u64) -> Vec<Hash> {
    let mut out = Vec::new();
    for t in 0..size.div_ceil(256) {
        let full = TilePath {
            kind: TileKind::Entries,
            index: t,
            width: 256,
        };
        let bytes = std::fs::read(dir.join(full.path())).unwrap_or_else(|_| {
            let w = (size % 256) as u16;
            std::fs::read(dir.join(TilePath { width: w, ..full }.path())).unwrap()
        });
        for e in bundle_entries(&bytes).unwrap() {
            if (out.len() as u64) < size {
                out.push(leaf_hash(e));
            }
        }
    }
    out
}

/// Every hash tile file, relative to the log directory.
fn hash_tiles(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join(layout::TILE)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n == "entries") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_corrupted_tile_store_never_yields_a_wrong_consistency_proof() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    Log::init(
        &dir,
        "cons.test",
        &tmp.path().join("s"),
        &mut rand_core::OsRng,
    )
    .unwrap();
    let (mut log, _) = Log::open(&dir, Config::default()).unwrap();
    let olds = [1u64, 255, 256, 300, 65_535, 65_536, 65_537, 65_800];
    for &old in &olds {
        while log.size() < old {
            log.append(format!("e{}", log.size()).as_bytes()).unwrap();
        }
        log.checkpoint().unwrap();
    }
    while log.size() < 66_000 {
        log.append(format!("e{}", log.size()).as_bytes()).unwrap();
    }
    log.checkpoint().unwrap();
    let (_, cp) = read_checkpoint(&dir, log.vkey()).unwrap();
    drop(log);
    let leaves = leaves_from_bundles(&dir, cp.size);
    let true_old: Vec<Hash> = olds
        .iter()
        .map(|&o| model_root(&leaves[..o as usize]))
        .collect();
    let mut wrong = Vec::new();
    let mut refused = 0;
    for tile in hash_tiles(&dir) {
        let orig = std::fs::read(&tile).unwrap();
        for slot in [0, orig.len() / 64, orig.len() / 32 - 1] {
            let mut b = orig.clone();
            b[slot * 32] ^= 1;
            std::fs::write(&tile, &b).unwrap();
            for (&old, old_root) in olds.iter().zip(&true_old) {
                match rampart_log::prove_consistency(&dir, cp.size, &cp.root, old) {
                    Ok(p) => {
                        if p.verify(old_root, &cp.root).is_err() {
                            wrong.push((tile.clone(), slot, old));
                        }
                    }
                    Err(_) => refused += 1,
                }
            }
        }
        std::fs::write(&tile, &orig).unwrap();
    }
    assert!(refused > 0, "some corruptions hit the tiles a proof reads");
    assert!(wrong.is_empty(), "wrong proofs handed out: {wrong:?}");
}

#[test]
fn partial_tiles_stay_until_their_full_tile_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    Log::init(
        &dir,
        "partial.test",
        &tmp.path().join("s"),
        &mut rand_core::OsRng,
    )
    .unwrap();
    let (mut log, _) = Log::open(&dir, Config::default()).unwrap();
    let grow = |log: &mut Log, to: u64| {
        while log.size() < to {
            log.append(b"x").unwrap();
        }
        log.checkpoint().unwrap();
    };
    grow(&mut log, 10);
    grow(&mut log, 20);
    // A client holding the size-10 checkpoint still finds its tiles.
    for p in [
        "tile/0/000.p/10",
        "tile/entries/000.p/10",
        "tile/0/000.p/20",
    ] {
        assert!(dir.join(p).exists(), "{p} kept");
    }
    grow(&mut log, 300);
    assert!(dir.join("tile/0/000").exists());
    assert!(
        !dir.join("tile/0/000.p").exists(),
        "superseded by the full tile"
    );
    assert!(!dir.join("tile/entries/000.p").exists());
    assert!(dir.join("tile/0/001.p/44").exists());
}
