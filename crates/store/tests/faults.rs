//! Fault tolerance: with up to f faulty clouds every get returns exactly the last
//! written bytes; with f + 1 faulty clouds a get returns those bytes or fails, and never
//! returns anything else.

mod common;

use std::time::Duration;

use common::{SEG, data, get, memory_store, put, rt};
use proptest::prelude::*;
use rampart_store::faults::{Fault, OVERSIZE_BYTES};
use rampart_store::{Protocol, StoreError, Tuning};

const SIZES: [usize; 7] = [
    0,
    1,
    SEG as usize - 1,
    SEG as usize,
    SEG as usize + 1,
    3 * SEG as usize + 7,
    40_000,
];

fn all_faults() -> Vec<Fault> {
    vec![
        Fault::Down,
        Fault::Slow(Duration::from_millis(150)),
        Fault::CorruptReads,
        Fault::CorruptData,
        Fault::TruncateReads,
        Fault::StaleMetadata,
        Fault::RollbackMetadata,
        Fault::ForgeMetadata,
        Fault::LieInListings,
        Fault::DropWrites,
    ]
}

#[test]
fn roundtrip_all_sizes_both_protocols() {
    rt().block_on(async {
        for protocol in [Protocol::Confidential, Protocol::Replicated] {
            let (store, _) = memory_store(4, protocol);
            for (i, &len) in SIZES.iter().enumerate() {
                let key = format!("k{i}");
                let bytes = data(len, i as u64);
                put(&store, &key, &bytes).await.unwrap();
                assert_eq!(
                    get(&store, &key).await.unwrap(),
                    bytes,
                    "{protocol} size {len}"
                );
                let info = store.head(&key).await.unwrap();
                assert_eq!(info.size, len as u64);
            }
            let listed: Vec<String> = store
                .list("")
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.key)
                .collect();
            assert_eq!(listed.len(), SIZES.len());
        }
    });
}

#[test]
fn ranged_reads_return_exact_slices() {
    rt().block_on(async {
        let (store, _) = memory_store(4, Protocol::Confidential);
        let bytes = data(5 * SEG as usize + 123, 9);
        put(&store, "r", &bytes).await.unwrap();
        let len = bytes.len() as u64;
        for range in [
            0..1,
            0..len,
            1..SEG as u64 + 1,
            SEG as u64..2 * SEG as u64,
            len - 1..len,
            17..17,
            4000..12000,
        ] {
            let mut out = Vec::new();
            let rec = store
                .get("r", &mut out, Some(range.clone()), None)
                .await
                .unwrap();
            assert_eq!(
                out,
                &bytes[range.start as usize..range.end as usize],
                "range {range:?}"
            );
            assert_eq!(rec.bytes_written, range.end - range.start);
        }
        let mut out = Vec::new();
        assert!(
            store
                .get("r", &mut out, Some(0..len + 1), None)
                .await
                .is_err()
        );
    });
}

/// One cloud (f = 1) misbehaves in each way, set before or after the write.
#[test]
fn any_single_faulty_cloud_is_tolerated() {
    rt().block_on(async {
        for protocol in [Protocol::Confidential, Protocol::Replicated] {
            for fault in all_faults() {
                for before_write in [true, false] {
                    for victim in [0usize, 3] {
                        let (store, ctl) = memory_store(4, protocol);
                        let bytes = data(2 * SEG as usize + 5, 1);
                        // A first version, so that stale and rolled-back metadata exist.
                        put(&store, "key", &data(100, 2)).await.unwrap();
                        if before_write {
                            ctl[victim].set(fault.clone());
                        }
                        put(&store, "key", &bytes)
                            .await
                            .unwrap_or_else(|e| panic!("{protocol} {fault:?} put: {e}"));
                        ctl[victim].set(fault.clone());
                        let got = get(&store, "key")
                            .await
                            .unwrap_or_else(|e| panic!("{protocol} {fault:?}: {e}"));
                        assert_eq!(
                            got, bytes,
                            "{protocol} {fault:?} before_write={before_write} victim={victim}"
                        );
                        let listed = store.list("").await.unwrap();
                        assert_eq!(
                            listed.len(),
                            1,
                            "{fault:?}: listing must come from verified metadata"
                        );
                        assert_eq!(listed[0].key, "key");
                        assert_eq!(listed[0].size, bytes.len() as u64);
                    }
                }
            }
        }
    });
}

/// Two of four clouds (f + 1) misbehave: a get returns the exact bytes or an error.
#[test]
fn two_faulty_clouds_never_yield_wrong_bytes() {
    rt().block_on(async {
        let faults = all_faults();
        let mut failures = 0;
        for a in &faults {
            for b in &faults {
                let (store, ctl) = memory_store(4, Protocol::Confidential);
                let bytes = data(3 * SEG as usize, 3);
                put(&store, "key", &data(10, 4)).await.unwrap();
                put(&store, "key", &bytes).await.unwrap();
                ctl[1].set(a.clone());
                ctl[2].set(b.clone());
                match get(&store, "key").await {
                    Ok(got) => assert_eq!(got, bytes, "{a:?}+{b:?} returned wrong bytes"),
                    Err(e) => {
                        failures += 1;
                        // Errors are loud and name the problem.
                        let msg = e.to_string();
                        assert!(!msg.contains('\n'));
                        assert!(
                            matches!(
                                e,
                                StoreError::NotEnoughShards { .. }
                                    | StoreError::QuorumUnavailable { .. }
                                    | StoreError::TooManyFaulty { .. }
                                    | StoreError::NoValidMetadata { .. }
                            ),
                            "{a:?}+{b:?}: unexpected error kind: {msg}"
                        );
                    }
                }
            }
        }
        // Some combinations (two clouds down, two corrupting) must fail: the check above
        // is not vacuous.
        assert!(failures > 0);
    });
}

/// A cloud without metadata is not evidence of a fault (ADR 0006): a write completes at
/// n − f clouds, and any n − f answers hold a correct cloud that has it. Whichever clouds
/// answer first, the read returns the verified data; `scrub` names and repairs both.
#[test]
fn two_clouds_without_metadata_do_not_block_reads_whichever_answers_first() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        // Clouds 2 and 3 silently lose the write: they hold no metadata for "key".
        ctl[2].set(Fault::DropWrites);
        ctl[3].set(Fault::DropWrites);
        put(&store, "key", b"hello").await.unwrap();
        ctl[2].set(Fault::None);
        for slow in [3, 0] {
            ctl[slow].set(Fault::Slow(Duration::from_millis(100)));
            for _ in 0..3 {
                assert_eq!(get(&store, "key").await.unwrap(), b"hello");
                assert_eq!(store.head("key").await.unwrap().size, 5);
            }
            ctl[slow].set(Fault::None);
        }
        let rep = store.scrub(true, None).await.unwrap();
        let bad: Vec<String> = rep.misbehaving_clouds().into_iter().map(|c| c.0).collect();
        assert_eq!(bad, ["mem-2", "mem-3"], "{rep:?}");
        assert!(rep.failed.is_empty(), "{rep:?}");
        // Repaired: the shards of the two clouds that missed the write serve the read.
        ctl[0].set(Fault::Down);
        ctl[1].set(Fault::CorruptData);
        assert_eq!(get(&store, "key").await.unwrap(), b"hello");
    });
}

#[test]
fn two_clouds_down_fails_loudly() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        put(&store, "key", b"hello").await.unwrap();
        ctl[0].set(Fault::Down);
        ctl[1].set(Fault::Down);
        let err = get(&store, "key").await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::QuorumUnavailable {
                    answered: 2,
                    needed: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("mem-0"),
            "names the failing clouds: {err}"
        );
        let err = put(&store, "key", b"new").await.unwrap_err();
        assert!(matches!(err, StoreError::QuorumUnavailable { .. }), "{err}");
        // Nothing half-written became visible.
        ctl[0].set(Fault::None);
        ctl[1].set(Fault::None);
        assert_eq!(get(&store, "key").await.unwrap(), b"hello");
    });
}

#[test]
fn two_clouds_corrupting_fails_loudly() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        put(&store, "key", &data(10_000, 5)).await.unwrap();
        // Two clouds corrupting all reads: more than f clouds serve bad metadata, and the
        // read refuses rather than trust the remaining two.
        ctl[0].set(Fault::CorruptReads);
        ctl[1].set(Fault::CorruptReads);
        assert!(matches!(
            get(&store, "key").await,
            Err(StoreError::TooManyFaulty {
                faulty: 2,
                f: 1,
                ..
            })
        ));
        // Two clouds corrupting only data: k = 2 valid shards still exist...
        ctl[0].set(Fault::CorruptData);
        ctl[1].set(Fault::CorruptData);
        assert_eq!(get(&store, "key").await.unwrap(), data(10_000, 5));
        // ...but with a third cloud down, the read must refuse.
        ctl[3].set(Fault::Down);
        let err = get(&store, "key").await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NotEnoughShards {
                    valid: 1,
                    needed: 2,
                    ..
                } | StoreError::QuorumUnavailable { .. }
            ),
            "{err}"
        );
    });
}

/// Per-shard digests are what protect DepSky-A reads (there is no AEAD) and ranged reads
/// (there is no whole-object digest): a cloud corrupting only data must never leak
/// through, whichever cloud is asked first.
#[test]
fn corrupt_data_never_reaches_a_ranged_read() {
    rt().block_on(async {
        for protocol in [Protocol::Replicated, Protocol::Confidential] {
            for victim in 0..4 {
                let (store, ctl) = memory_store(4, protocol);
                let bytes = data(3 * SEG as usize, 10);
                put(&store, "k", &bytes).await.unwrap();
                ctl[victim].set(Fault::CorruptData);
                for _ in 0..3 {
                    let mut out = Vec::new();
                    store
                        .get("k", &mut out, Some(100..9000), None)
                        .await
                        .unwrap();
                    assert_eq!(out, &bytes[100..9000], "{protocol} victim {victim}");
                }
            }
        }
    });
}

#[test]
fn a_slow_cloud_does_not_slow_reads() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        let bytes = data(8 * SEG as usize, 6);
        put(&store, "key", &bytes).await.unwrap();
        // Warm the latency estimates, then make cloud 0 very slow.
        get(&store, "key").await.unwrap();
        // An hour per request: without hedging this read would never finish within the
        // test harness's per-test limit (.config/nextest.toml); with it, it takes
        // milliseconds. (No timing assertion: the harness limit is the bound.)
        ctl[0].set(Fault::Slow(Duration::from_secs(3600)));
        for _ in 0..3 {
            assert_eq!(get(&store, "key").await.unwrap(), bytes);
        }
    });
}

#[test]
fn bad_inputs_get_clear_errors() {
    rt().block_on(async {
        let (store, _) = memory_store(4, Protocol::Confidential);
        assert!(matches!(
            put(&store, "", b"x").await,
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            put(&store, "a\nb", b"x").await,
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            put(&store, &"x".repeat(1025), b"x").await,
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            get(&store, "missing").await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.delete("missing").await,
            Err(StoreError::NotFound { .. })
        ));
        let big = vec![0u8; 9000];
        assert!(matches!(
            store.put("k", &b""[..], big, None).await,
            Err(StoreError::TooLarge { .. })
        ));
    });
}

#[test]
fn untrusted_writer_is_rejected_with_a_clear_error() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        put(&store, "key", b"genuine").await.unwrap();
        // Every cloud serves metadata with a forged signature: nothing verifies.
        for c in &ctl {
            c.set(Fault::ForgeMetadata);
        }
        let err = get(&store, "key").await.unwrap_err();
        assert!(matches!(err, StoreError::NoValidMetadata { .. }), "{err}");
        assert!(err.to_string().contains("signature"), "{err}");
    });
}

#[test]
fn delete_then_gc_reclaims_everything() {
    rt().block_on(async {
        let (store, _) = memory_store(4, Protocol::Confidential);
        for v in 0..3u64 {
            put(&store, "a", &data(5000, v)).await.unwrap();
        }
        put(&store, "b", b"keep me").await.unwrap();
        let rep = store.gc(1, Duration::ZERO).await.unwrap();
        assert_eq!(rep.versions_dropped, 2, "{rep:?}");
        assert!(
            rep.objects_deleted >= 8,
            "two old blobs on four clouds: {rep:?}"
        );
        assert_eq!(get(&store, "a").await.unwrap(), data(5000, 2));
        assert_eq!(store.stat("a").await.unwrap().versions.len(), 1);

        store.delete("a").await.unwrap();
        assert!(matches!(
            get(&store, "a").await,
            Err(StoreError::NotFound { .. })
        ));
        let rep = store.gc(1, Duration::ZERO).await.unwrap();
        assert_eq!(rep.keys_purged, 1, "{rep:?}");
        let keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, vec!["b".to_string()]);
        assert_eq!(get(&store, "b").await.unwrap(), b"keep me");
    });
}

#[test]
fn scrub_names_and_repairs_faulty_clouds() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        let bytes = data(4 * SEG as usize, 8);
        // Cloud 2 drops everything written to it: it will hold nothing for "k".
        ctl[2].set(Fault::DropWrites);
        put(&store, "k", &bytes).await.unwrap();
        ctl[2].set(Fault::None);
        let rep = store.scrub(false, None).await.unwrap();
        assert_eq!(
            rep.misbehaving_clouds().first().map(|c| c.0.as_str()),
            Some("mem-2"),
            "{rep:?}"
        );
        assert!(rep.repaired.is_empty());
        let rep = store.scrub(true, None).await.unwrap();
        assert!(
            rep.repaired
                .iter()
                .any(|(c, _, w)| c == "mem-2" && w == "shards rebuilt"),
            "{rep:?}"
        );
        assert!(rep.failed.is_empty(), "{rep:?}");
        // After repair, cloud 2 alone plus one other suffices: take two others down.
        ctl[0].set(Fault::Down);
        let stat = store.stat("k").await.unwrap();
        assert!(stat.clouds[2].healthy(), "{stat:?}");
        // Clouds 1 and 3 now return corrupt shards (their metadata stays intact), so
        // the read must take cloud 2's rebuilt shards.
        ctl[0].set(Fault::None);
        ctl[1].set(Fault::CorruptData);
        ctl[3].set(Fault::CorruptData);
        assert_eq!(
            get(&store, "k").await.unwrap(),
            bytes,
            "repaired shards must be valid"
        );
        // And a clean store scrubs clean.
        ctl[1].set(Fault::None);
        ctl[3].set(Fault::None);
        let rep = store.scrub(false, None).await.unwrap();
        assert!(rep.problems.is_empty(), "{rep:?}");
    });
}

#[test]
fn scrub_names_a_cloud_that_lies_in_listings() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        for i in 0..4 {
            put(&store, &format!("k{i}"), b"v").await.unwrap();
        }
        ctl[1].set(Fault::LieInListings);
        let rep = store.scrub(false, None).await.unwrap();
        let bad = rep.misbehaving_clouds();
        assert_eq!(bad.len(), 1, "{rep:?}");
        assert_eq!(bad[0].0, "mem-1");
    });
}

/// Concurrent writers on one key: every acknowledged write gets a distinct version,
/// and afterwards every read returns the value of the highest acknowledged version.
#[test]
fn concurrent_writers_are_serialised() {
    rt().block_on(async {
        let (store, _) = memory_store(4, Protocol::Confidential);
        common::check_concurrent_writers(&store, "shared", 4, 5).await;
    });
}

#[derive(Clone, Debug)]
enum Op {
    Put(usize),
    Get,
    Fault(usize, u8),
    Heal,
}

fn op() -> impl Strategy<Value = Op> {
    let sizes = prop::sample::select(vec![
        0usize,
        1,
        SEG as usize - 1,
        SEG as usize,
        SEG as usize + 1,
        2 * SEG as usize,
        20_000,
    ]);
    prop_oneof![
        3 => sizes.prop_map(Op::Put),
        3 => Just(Op::Get),
        2 => (0usize..4, 0u8..10).prop_map(|(c, f)| Op::Fault(c, f)),
        1 => Just(Op::Heal),
    ]
}

fn fault_of(code: u8) -> Fault {
    match code {
        0 => Fault::Down,
        1 => Fault::Slow(Duration::from_millis(30)),
        2 => Fault::CorruptReads,
        3 => Fault::TruncateReads,
        4 => Fault::StaleMetadata,
        5 => Fault::RollbackMetadata,
        6 => Fault::ForgeMetadata,
        7 => Fault::LieInListings,
        8 => Fault::CorruptData,
        _ => Fault::DropWrites,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random schedules with at most one faulty cloud at a time (the faulty cloud may
    /// change between operations): every get returns exactly the last written bytes.
    #[test]
    fn random_schedules_with_at_most_f_faults(ops in proptest::collection::vec(op(), 1..24), seed in any::<u64>()) {
        rt().block_on(async {
            let (store, ctl) = memory_store(4, Protocol::Confidential);
            let mut last: Option<Vec<u8>> = None;
            let mut faulty: Option<usize> = None;
            for (i, op) in ops.iter().enumerate() {
                match op {
                    Op::Put(len) => {
                        let bytes = data(*len, seed ^ i as u64);
                        put(&store, "p", &bytes).await.unwrap();
                        last = Some(bytes);
                    }
                    Op::Get => match &last {
                        Some(b) => assert_eq!(&get(&store, "p").await.unwrap(), b),
                        None => assert!(get(&store, "p").await.is_err()),
                    },
                    Op::Fault(c, f) => {
                        // A cloud that was faulty may have missed writes; it stays
                        // counted as the one faulty cloud until healed by a scrub.
                        let c = faulty.unwrap_or(*c);
                        ctl[c].set(fault_of(*f));
                        faulty = Some(c);
                    }
                    Op::Heal => {
                        if let Some(c) = faulty.take() {
                            ctl[c].set(Fault::None);
                            store.scrub(true, None).await.unwrap();
                        }
                    }
                }
            }
        });
    }

    /// Random schedules with two faulty clouds: every get returns the bytes of a write
    /// that could be the latest, or fails; never anything else.
    #[test]
    fn random_schedules_with_f_plus_one_faults(ops in proptest::collection::vec(op(), 1..16), seed in any::<u64>()) {
        rt().block_on(async {
            let (store, ctl) = memory_store(4, Protocol::Confidential);
            // Values a read may legitimately return: the last acknowledged write and any
            // failed write attempted after it.
            let mut candidates: Vec<Vec<u8>> = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                match op {
                    Op::Put(len) => {
                        let bytes = data(*len, seed ^ i as u64);
                        match put(&store, "p", &bytes).await {
                            Ok(_) => candidates = vec![bytes],
                            Err(_) => candidates.push(bytes),
                        }
                    }
                    Op::Get => {
                        if let Ok(got) = get(&store, "p").await {
                            assert!(candidates.contains(&got), "returned bytes that were never the latest write");
                        }
                    }
                    Op::Fault(c, f) => ctl[*c % 2 + 1].set(fault_of(*f)),
                    Op::Heal => {}
                }
            }
        });
    }
}

/// Attributes (the S3 gateway's content types, user metadata and ETags) round-trip, are
/// computed after the data when asked, are never visible to clouds, and a refusal leaves
/// nothing behind; `get_version` refuses a version that is no longer the newest.
#[test]
fn attrs_are_sealed_and_versions_checked() {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    rt().block_on(async {
        let (store, _) = memory_store(4, Protocol::Confidential);
        let marker = b"ATTRS-MARKER-content-type-text/secret".to_vec();
        let v1 = store
            .put("a", &b"one"[..], marker.clone(), None)
            .await
            .unwrap();
        v1.background.wait(std::time::Duration::from_secs(5)).await;
        assert_eq!(store.head("a").await.unwrap().attrs, marker);
        // Computed after the data was read: sees the final state.
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = seen.clone();
        let v2 = store
            .put_with_attrs_fn(
                "a",
                &b"two"[..],
                move || {
                    s2.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok(b"late".to_vec())
                },
                None,
            )
            .await
            .unwrap();
        v2.background.wait(std::time::Duration::from_secs(5)).await;
        assert!(seen.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(store.head("a").await.unwrap().attrs, b"late");
        // A refusal aborts the write: the newest version stays v2.
        let r = store
            .put_with_attrs_fn(
                "a",
                &b"three"[..],
                || {
                    Err(rampart_store::StoreError::Integrity {
                        reason: "refused by the test",
                    })
                },
                None,
            )
            .await;
        assert!(r.is_err());
        assert_eq!(get(&store, "a").await.unwrap(), b"two");
        // get_version: the current version reads, an older one is refused before any byte.
        let mut out = Vec::new();
        store
            .get_version("a", v2.version, &mut out, None, None)
            .await
            .unwrap();
        assert_eq!(out, b"two");
        let mut out = Vec::new();
        let e = store
            .get_version("a", v1.version, &mut out, None, None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, rampart_store::StoreError::VersionChanged { .. }),
            "{e}"
        );
        assert!(out.is_empty());
        // No cloud holds the attributes in the clear.
        for cloud in store.clouds() {
            let objs: Vec<_> = cloud.store().list(None).try_collect().await.unwrap();
            for o in objs {
                let bytes = cloud.store().get(&o.location).await.unwrap().bytes().await;
                let bytes = bytes.unwrap();
                assert!(!bytes.windows(marker.len()).any(|w| w == marker));
                assert!(!bytes.windows(4).any(|w| w == b"late"));
            }
        }
        // Too large attributes are refused before anything is uploaded.
        let big = vec![0u8; rampart_store::meta::ATTRS_PLAIN_BYTES_MAX + 1];
        assert!(store.put("b", &b"x"[..], big, None).await.is_err());
        assert!(store.head("b").await.is_err());
    });
}

/// A cloud that sends more bytes than a read asked for is cut off as soon as the body runs
/// over, instead of being buffered whole (issue 11, finding 10): `get` still returns the
/// exact bytes from the other clouds, and `scrub` reports the cloud's shards as corrupt.
#[test]
fn a_cloud_that_sends_more_than_it_was_asked_for_is_cut_off() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        let bytes = data(3 * SEG as usize + 5, 9);
        put(&store, "k", &bytes).await.unwrap();
        ctl[0].set(Fault::OversizeReads);
        // Cloud 0 looks fastest, so it is asked first.
        for _ in 0..64 {
            store.clouds()[0].observe(Duration::ZERO);
        }
        assert_eq!(get(&store, "k").await.unwrap(), bytes);
        let rep = store.scrub(false, None).await.unwrap();
        assert!(
            rep.problems
                .iter()
                .any(|(c, _, p)| c == "mem-0" && p.starts_with("shards corrupt")),
            "{rep:?}"
        );
        // Each refused read pulled at most one extra chunk; reading one body whole would
        // have pulled all of OVERSIZE_BYTES.
        let pulled = ctl[0].oversize_bytes_pulled();
        assert!(
            pulled > 0 && pulled < OVERSIZE_BYTES,
            "pulled {pulled} extra bytes"
        );
    });
}

/// Uploads that keep running after their write returned (stragglers) are bounded across
/// the client (issue 11, finding 10): with one cloud hanging, each put leaves its upload
/// to that cloud behind, and beyond `straggler_uploads_max` of them a put drops that
/// cloud's upload when it returns, interrupting even the hanging request.
#[test]
fn stragglers_of_a_hanging_cloud_are_bounded() {
    rt().block_on(async {
        let t = Tuning {
            straggler_uploads_max: 2,
            ..common::tuning()
        };
        let (store, ctl) = common::memory_store_tuned(4, Protocol::Confidential, t);
        ctl[3].set(Fault::Slow(Duration::from_secs(3600)));
        for i in 0..6 {
            let r = store
                .put(&format!("k{i}"), &b"v"[..], Vec::new(), None)
                .await
                .unwrap();
            drop(r.background);
        }
        // Dropped uploads end as soon as they are woken; wait for that (bounded).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.uploads_running() > 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} uploads still running after 6 puts",
                store.uploads_running()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ctl[3].set(Fault::None);
        for i in 0..6 {
            assert_eq!(get(&store, &format!("k{i}")).await.unwrap(), b"v");
        }
    });
}
