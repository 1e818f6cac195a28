//! Version identity and availability under f faulty clouds (issue 11, findings 5, 6, 7
//! and 9; ADR 0006): writers sharing a key that race to one counter never mix two writes,
//! and `stat` and `scrub` report the divergence; a cloud that merely lacks metadata is not
//! a fault; a swap reaches every cloud; a hanging cloud does not stall a manifest read; names
//! that one cloud invents cost neither metadata reads nor listing memory (finding 8).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{SEG, data, get, memory_store, put, rt, tuning};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use rampart_store::cloud::{CasMode, Cloud};
use rampart_store::config::Secrets;
use rampart_store::faults::{Fault, FaultControl, FaultyStore};
use rampart_store::meta::Metadata;
use rampart_store::{CloudOfClouds, MetaHealth, Protocol, StoreError, Tuning};

/// A client over `inner` (shared with other clients), each cloud behind this client's own
/// fault injector.
fn client(
    inner: &[Arc<InMemory>],
    secrets: Secrets,
    tuning: Tuning,
) -> (CloudOfClouds, Vec<FaultControl>) {
    let mut ctls = Vec::new();
    let clouds = inner
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (faulty, ctl) = FaultyStore::new(s.clone());
            ctls.push(ctl);
            Cloud::new(format!("mem-{i}"), i, faulty, CasMode::Native)
        })
        .collect();
    let store = CloudOfClouds::from_parts(
        [7; 16],
        Protocol::Confidential,
        SEG,
        secrets,
        vec![],
        clouds,
        tuning,
    )
    .unwrap();
    (store, ctls)
}

/// The version counter of the only metadata object in `cloud`, if there is one.
async fn meta_counter(cloud: &InMemory) -> Option<u64> {
    use futures::TryStreamExt;
    let metas: Vec<_> = cloud
        .list(Some(&Path::from("rampart/v1/m")))
        .try_collect()
        .await
        .unwrap();
    let m = metas.first()?;
    let bytes = cloud.get(&m.location).await.ok()?.bytes().await.ok()?;
    Some(
        Metadata::decode_unverified(&bytes)
            .ok()?
            .latest()
            .version
            .counter,
    )
}

/// `head` then `get_version` of what `head` named: the attributes and the body come from
/// one write (or the read refuses because the newest version changed).
async fn read_one_entry(store: &CloudOfClouds, reader: &CloudOfClouds) -> Option<Vec<u8>> {
    let info = store.head("k").await.unwrap();
    let mut body = Vec::new();
    match reader
        .get_version("k", info.version, &mut body, None, None)
        .await
    {
        Ok(_) => {
            let want: &[u8] = match info.attrs.as_slice() {
                b"alpha" => b"alpha-body",
                b"beta" => b"beta-body",
                other => panic!("unexpected attributes {other:?}"),
            };
            assert_eq!(body, want, "headers of one write, body of another");
            Some(info.attrs)
        }
        Err(StoreError::VersionChanged { .. }) => None,
        Err(e) => panic!("read failed: {e}"),
    }
}

/// Two writers sharing one key race to the same counter: writer B's swap lands on cloud
/// 3 only (it is paused on the others), writer A's on clouds 0–2. Every read returns one
/// whole entry, readers that hear both writes agree on one, and `stat` and `scrub`
/// report the divergence; `scrub` repairs it.
#[test]
fn writers_sharing_a_key_racing_to_one_counter_never_mix_entries() {
    rt().block_on(async {
        let inner: Vec<Arc<InMemory>> = (0..4).map(|_| Arc::new(InMemory::new())).collect();
        let secrets = Secrets::generate();
        let (a, ctl_a) = client(&inner, secrets.clone(), tuning());
        let one_try = Tuning {
            cas_attempts_max: 1,
            ..tuning()
        };
        let (b, ctl_b) = client(&inner, secrets, one_try);
        put(&a, "k", b"base").await.unwrap();

        // B reads v1 everywhere, uploads, swaps onto cloud 3, and waits on clouds 0-2.
        for c in &ctl_b[..3] {
            c.set(Fault::HoldMetadataWrites);
        }
        let b2 = b.clone();
        let racing =
            tokio::spawn(
                async move { b2.put("k", &b"beta-body"[..], b"beta".to_vec(), None).await },
            );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while meta_counter(&inner[3]).await != Some(2) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "B never swapped onto cloud 3"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A does not hear cloud 3, so it also writes counter 2, onto clouds 0-2.
        ctl_a[3].set(Fault::Down);
        let va = a
            .put("k", &b"alpha-body"[..], b"alpha".to_vec(), None)
            .await
            .unwrap();
        va.background.wait(Duration::from_secs(5)).await;
        assert_eq!(va.version.counter, 2);
        // B's held swaps now conflict; with one attempt it gives up.
        for c in &ctl_b[..3] {
            c.set(Fault::None);
        }
        let rb = racing.await.unwrap();
        assert!(matches!(rb, Err(StoreError::Conflict { .. })), "{rb:?}");
        assert_eq!(meta_counter(&inner[3]).await, Some(2));
        ctl_a[3].set(Fault::None);

        // A reader that hears only A's clouds names A's version; a reader that hears
        // cloud 3 too must not serve B's body under it.
        ctl_a[3].set(Fault::Down);
        ctl_b[0].set(Fault::Down);
        read_one_entry(&a, &b).await;
        read_one_entry(&b, &a).await;
        // Readers that hear both writes all choose the same one.
        let mut chosen = Vec::new();
        for down in 0..3 {
            for c in &ctl_b {
                c.set(Fault::None);
            }
            ctl_b[down].set(Fault::Down);
            chosen.push(
                read_one_entry(&b, &b)
                    .await
                    .expect("same reader, same answers"),
            );
        }
        for c in ctl_a.iter().chain(&ctl_b) {
            c.set(Fault::None);
        }
        chosen.dedup();
        assert_eq!(chosen.len(), 1, "readers disagree: {chosen:?}");

        // stat and scrub see two signed entries with one counter.
        let stat = a.stat("k").await.unwrap();
        let divergent = stat
            .clouds
            .iter()
            .filter(|c| matches!(c.metadata, MetaHealth::Divergent { .. }))
            .count();
        assert!(divergent >= 1, "{stat:?}");
        let rep = a.scrub(false, None).await.unwrap();
        assert!(
            rep.problems
                .iter()
                .any(|(_, k, p)| k == "k" && p.contains("divergent")),
            "{rep:?}"
        );
        let rep = a.scrub(true, None).await.unwrap();
        assert!(rep.failed.is_empty(), "{rep:?}");
        let stat = a.stat("k").await.unwrap();
        assert!(stat.clouds.iter().all(|c| c.healthy()), "{stat:?}");
        // After repair every cloud holds the one chosen entry.
        let want = chosen[0].clone();
        for c in &ctl_a {
            c.set(Fault::Down);
            assert_eq!(read_one_entry(&a, &a).await.as_ref(), Some(&want));
            c.set(Fault::None);
        }
    });
}

/// DepSky's read rule: one cloud that missed the first write (correct, just late) plus one
/// lying cloud are within f = 1; the data is returned.
#[test]
fn a_cloud_that_missed_the_write_beside_a_lying_cloud_does_not_block_reads() {
    rt().block_on(async {
        for lie in [Fault::CorruptReads, Fault::ForgeMetadata] {
            let (store, ctl) = memory_store(4, Protocol::Confidential);
            let bytes = data(3 * SEG as usize, 11);
            ctl[2].set(Fault::DropWrites);
            put(&store, "k", &bytes).await.unwrap();
            ctl[2].set(Fault::None);
            ctl[3].set(lie.clone());
            for _ in 0..3 {
                assert_eq!(get(&store, "k").await.unwrap(), bytes, "{lie:?}");
                assert_eq!(store.head("k").await.unwrap().size, bytes.len() as u64);
            }
            // A second lying cloud is beyond the bound: refused.
            ctl[0].set(lie.clone());
            let err = get(&store, "k").await.unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::TooManyFaulty {
                        faulty: 2,
                        f: 1,
                        ..
                    }
                ),
                "{lie:?}: {err}"
            );
        }
    });
}

/// Garbage from one cloud for a key that does not exist is not a reason to fail: the key
/// is not found. Garbage from more than f clouds is reported.
#[test]
fn garbage_from_one_cloud_for_a_missing_key_reads_as_not_found() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        put(&store, "other", b"x").await.unwrap();
        ctl[1].set(Fault::InventMetadata);
        // Cloud 0 answers last, so the garbage is among the first n - f answers.
        ctl[0].set(Fault::Slow(Duration::from_millis(200)));
        for _ in 0..2 {
            let err = get(&store, "missing").await.unwrap_err();
            assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
            let err = store.head("missing").await.unwrap_err();
            assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        }
        // Writes of a new key still work beside the garbage (the swap over it fails on
        // that cloud only).
        put(&store, "new", b"fresh").await.unwrap();
        assert_eq!(get(&store, "new").await.unwrap(), b"fresh");
        ctl[2].set(Fault::InventMetadata);
        let err = get(&store, "missing").await.unwrap_err();
        assert!(matches!(err, StoreError::NoValidMetadata { .. }), "{err}");
    });
}

/// A cloud that answers reads but refuses every swap, plus a correct cloud too slow for
/// the read round's grace: the swap still reaches n - f clouds and the put succeeds.
#[test]
fn a_cloud_refusing_swaps_beside_a_slow_cloud_does_not_block_writes() {
    rt().block_on(async {
        let t = Tuning {
            cas_attempts_max: 3,
            ..tuning()
        };
        let inner: Vec<Arc<InMemory>> = (0..4).map(|_| Arc::new(InMemory::new())).collect();
        let (store, ctl) = client(&inner, Secrets::generate(), t);
        put(&store, "k", b"first").await.unwrap();
        ctl[0].set(Fault::RefuseMetadataWrites);
        ctl[1].set(Fault::Slow(Duration::from_millis(150)));
        for (i, body) in [&b"second"[..], b"third"].into_iter().enumerate() {
            let v = put(&store, "k", body)
                .await
                .unwrap_or_else(|e| panic!("put {i}: {e}"));
            assert_eq!(v.counter, i as u64 + 2);
            assert_eq!(get(&store, "k").await.unwrap(), body);
        }
        ctl[0].set(Fault::None);
        ctl[1].set(Fault::None);
        assert_eq!(get(&store, "k").await.unwrap(), b"third");
    });
}

/// A cloud that hangs forever, ranked first: a read of an object whose manifest is not
/// inline still completes (liveness, bounded by a deadline far below the op timeout).
#[test]
fn a_hanging_cloud_does_not_stall_a_manifest_read() {
    rt().block_on(async {
        let t = Tuning {
            op_timeout: Duration::from_secs(600),
            ..tuning()
        };
        for victim in [0usize, 3] {
            let inner: Vec<Arc<InMemory>> = (0..4).map(|_| Arc::new(InMemory::new())).collect();
            let (store, ctl) = client(&inner, Secrets::generate(), t.clone());
            // 64 segments: the manifest (one digest per shard) is far over the inline limit.
            let bytes = data(64 * SEG as usize, 12);
            put(&store, "big", &bytes).await.unwrap();
            let stored: Vec<_> = {
                use futures::TryStreamExt;
                inner[0]
                    .list(Some(&Path::from("rampart/v1/b")))
                    .try_collect()
                    .await
                    .unwrap()
            };
            assert!(
                stored
                    .iter()
                    .any(|o| o.location.as_ref().ends_with("/manifest")),
                "the manifest must not be inline"
            );
            // The victim looks fastest, so it is asked first; then it hangs.
            for _ in 0..64 {
                store.clouds()[victim].observe(Duration::ZERO);
            }
            ctl[victim].set(Fault::Slow(Duration::from_secs(3600)));
            for _ in 0..2 {
                let got = tokio::time::timeout(Duration::from_secs(5), get(&store, "big"))
                    .await
                    .unwrap_or_else(|_| panic!("victim {victim}: the read hung"))
                    .unwrap();
                assert_eq!(got, bytes);
            }
        }
    });
}

/// One cloud lists 30,000 invented names (each twice): `ls` reads metadata only for the
/// names f + 1 clouds list, so the invented ones cost no request.
#[test]
fn names_that_one_cloud_lists_cost_no_metadata_reads() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        put(&store, "a", b"1").await.unwrap();
        put(&store, "b", b"2").await.unwrap();
        ctl[1].set(Fault::InventNames(30_000));
        let reads = || ctl.iter().map(|c| c.metadata_reads()).sum::<u64>();
        let before = reads();
        let keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["a", "b"]);
        let spent = reads() - before;
        assert!(spent <= 8, "{spent} metadata reads to list two keys");
    });
}

/// The same 30,000 invented names cost `gc` and `scrub` no metadata read either, and both
/// report how many names they skipped.
#[test]
fn names_that_one_cloud_lists_cost_gc_and_scrub_no_metadata_reads() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        put(&store, "a", b"1").await.unwrap();
        put(&store, "b", b"2").await.unwrap();
        ctl[1].set(Fault::InventNames(30_000));
        let reads = || ctl.iter().map(|c| c.metadata_reads()).sum::<u64>();

        let before = reads();
        let rep = store.gc(1, Duration::from_secs(3600)).await.unwrap();
        let spent = reads() - before;
        assert_eq!((rep.keys, rep.unbacked), (2, 30_000), "{rep:?}");
        assert!(spent <= 8, "{spent} metadata reads for gc of two keys");

        let before = reads();
        let rep = store.scrub(false, None).await.unwrap();
        let spent = reads() - before;
        assert_eq!((rep.keys, rep.unbacked), (2, 30_000), "{rep:?}");
        assert!(spent <= 8, "{spent} metadata reads to scrub two keys");
    });
}

/// Listing memory does not grow with names that one cloud invents (finding 8): the
/// listings are merged in order, one name per listing at a time, so `ls`, `scrub` and
/// `gc` hold the two real names and a name per listing, not the 30,000 invented ones.
#[test]
fn names_that_one_cloud_lists_cost_no_listing_memory() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        put(&store, "a", b"1").await.unwrap();
        put(&store, "b", b"2").await.unwrap();
        ctl[1].set(Fault::InventNames(30_000));
        assert_eq!(store.list("").await.unwrap().len(), 2);
        let rep = store.scrub(false, None).await.unwrap();
        assert_eq!((rep.keys, rep.unbacked), (2, 30_000), "{rep:?}");
        let rep = store.gc(1, Duration::from_secs(3600)).await.unwrap();
        assert_eq!((rep.keys, rep.unbacked), (2, 30_000), "{rep:?}");
        // gc merges 2 listings per cloud (metadata and blobs): at most one name each,
        // plus the two names f + 1 clouds list.
        let held = store.listing_names_held_max();
        assert!(held <= 2 * 4 + 2, "a listing held {held} names at once");
    });
}

/// Four clouds whose listings come in no particular order (here: descending), marked so,
/// over shared in-memory stores.
fn unordered_store(inner: &[Arc<InMemory>], tuning: Tuning) -> (CloudOfClouds, Vec<FaultControl>) {
    let mut ctls = Vec::new();
    let clouds = inner
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (faulty, ctl) = FaultyStore::new(s.clone());
            ctl.set(Fault::ReverseListings);
            ctls.push(ctl);
            Cloud::new(format!("mem-{i}"), i, faulty, CasMode::Native).with_unordered_listing()
        })
        .collect();
    let store = CloudOfClouds::from_parts(
        [7; 16],
        Protocol::Confidential,
        SEG,
        Secrets::generate(),
        vec![],
        clouds,
        tuning,
    )
    .unwrap();
    (store, ctls)
}

/// Unordered listings (local directories) are sorted in memory, at most
/// `unordered_listing_names_max` names each: a cloud that lists more fails as that
/// cloud's listing, and more than f such clouds fail the listing with a clear error.
#[test]
fn unordered_listings_are_sorted_within_a_bound() {
    rt().block_on(async {
        let inner: Vec<Arc<InMemory>> = (0..4).map(|_| Arc::new(InMemory::new())).collect();
        let t = Tuning {
            unordered_listing_names_max: 1_000,
            ..tuning()
        };
        let (store, ctl) = unordered_store(&inner, t);
        let keys = ["e", "b", "d", "a", "c"];
        for k in keys {
            put(&store, k, k.as_bytes()).await.unwrap();
        }
        let listed = |store: CloudOfClouds| async move {
            let l = store.list("").await?;
            Ok::<_, StoreError>(l.into_iter().map(|e| e.key).collect::<Vec<_>>())
        };
        assert_eq!(
            listed(store.clone()).await.unwrap(),
            ["a", "b", "c", "d", "e"]
        );

        // One cloud lists 30,000 names: its listing fails at the bound, the others list.
        ctl[1].set(Fault::InventNames(30_000));
        assert_eq!(
            listed(store.clone()).await.unwrap(),
            ["a", "b", "c", "d", "e"]
        );
        let rep = store.gc(1, Duration::from_secs(3600)).await.unwrap();
        assert_eq!(rep.keys, 5, "{rep:?}");
        assert!(
            rep.warnings
                .iter()
                .any(|w| w.starts_with("mem-1: listing blobs: lists more than 1000")),
            "{rep:?}"
        );
        let held = store.listing_names_held_max();
        assert!(
            held <= 2 * 1_000 + 5 * 8,
            "a listing held {held} names at once"
        );

        // Two such clouds are more than f: the listing fails and says why.
        ctl[2].set(Fault::InventNames(30_000));
        let e = listed(store.clone()).await.unwrap_err();
        assert!(
            matches!(&e, StoreError::QuorumUnavailable { .. })
                && e.to_string()
                    .contains("Tuning::unordered_listing_names_max"),
            "{e}"
        );
    });
}

/// A listing taken to be ordered that goes backwards fails as that cloud's listing: with
/// two such clouds of four the listing fails loudly instead of listing keys twice (a merge
/// that trusted their order would emit every key once per pass).
#[test]
fn a_listing_that_goes_backwards_fails_rather_than_list_keys_twice() {
    rt().block_on(async {
        let (store, ctl) = memory_store(4, Protocol::Confidential);
        for k in ["a", "b", "c"] {
            put(&store, k, k.as_bytes()).await.unwrap();
        }
        ctl[0].set(Fault::ReverseListings);
        let keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        ctl[1].set(Fault::ReverseListings);
        match store.list("").await {
            Err(e @ StoreError::QuorumUnavailable { .. }) => {
                assert!(e.to_string().contains("not in ascending order"), "{e}");
            }
            other => panic!("expected a failed listing, got {other:?}"),
        }
    });
}
