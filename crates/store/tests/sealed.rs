//! The sealed single backend: one cloud, data sealed under a fresh key per version, the key
//! wrapped under the owner's key file. The cloud sees only ciphertext; every byte it
//! returns is verified, so tampering fails loudly. It cannot tolerate the cloud's loss;
//! a rollback is caught only for keys this client has already seen.

mod common;

use common::{SEG, data, get, memory_store, put, rt};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use rampart_store::faults::Fault;
use rampart_store::{Protocol, StoreError};

#[test]
fn sealed_single_cloud_round_trips_every_size_and_range() {
    rt().block_on(async {
        let (store, _) = memory_store(1, Protocol::Sealed);
        assert_eq!((store.n(), store.f()), (1, 0));
        let sizes = [0, 1, SEG as usize - 16, SEG as usize, 3 * SEG as usize + 7];
        for (i, &len) in sizes.iter().enumerate() {
            let bytes = data(len, i as u64);
            put(&store, &format!("k{i}"), &bytes).await.unwrap();
            assert_eq!(get(&store, &format!("k{i}")).await.unwrap(), bytes, "{len}");
        }
        let bytes = data(3 * SEG as usize + 7, 4);
        for range in [
            0..1u64,
            5..SEG as u64 + 9,
            2 * SEG as u64..bytes.len() as u64,
        ] {
            let mut out = Vec::new();
            store
                .get("k4", &mut out, Some(range.clone()), None)
                .await
                .unwrap();
            assert_eq!(out, &bytes[range.start as usize..range.end as usize]);
        }
        // A new version replaces the old; delete hides it.
        put(&store, "k1", b"second").await.unwrap();
        assert_eq!(get(&store, "k1").await.unwrap(), b"second");
        assert_eq!(store.list("").await.unwrap().len(), sizes.len());
        store.delete("k1").await.unwrap();
        assert!(matches!(
            get(&store, "k1").await,
            Err(StoreError::NotFound { .. })
        ));
        let rep = store.scrub(false, None).await.unwrap();
        assert!(rep.problems.is_empty(), "{rep:?}");
    });
}

#[test]
fn the_single_cloud_holds_no_plaintext() {
    rt().block_on(async {
        let (store, _) = memory_store(1, Protocol::Sealed);
        let marker = b"PLAINTEXT-MARKER-7f3a";
        let mut bytes = data(2 * SEG as usize, 1);
        bytes.extend_from_slice(marker);
        put(&store, "secret/report.txt", &bytes).await.unwrap();
        let cloud = store.clouds()[0].store().clone();
        let objects: Vec<_> = cloud.list(None).try_collect().await.unwrap();
        assert!(objects.len() >= 2, "metadata and a blob: {objects:?}");
        for o in objects {
            assert!(!o.location.as_ref().contains("report"), "{}", o.location);
            let stored = cloud.get(&o.location).await.unwrap().bytes().await.unwrap();
            assert!(
                !stored.windows(marker.len()).any(|w| w == marker),
                "{} holds plaintext",
                o.location
            );
        }
    });
}

#[test]
fn a_tampering_cloud_never_yields_wrong_bytes() {
    rt().block_on(async {
        for fault in [
            Fault::CorruptReads,
            Fault::CorruptData,
            Fault::TruncateReads,
            Fault::ForgeMetadata,
        ] {
            let (store, ctl) = memory_store(1, Protocol::Sealed);
            let bytes = data(2 * SEG as usize + 5, 2);
            put(&store, "k", &bytes).await.unwrap();
            ctl[0].set(fault.clone());
            let err = get(&store, "k").await.unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::Integrity { .. }
                        | StoreError::NotEnoughShards { .. }
                        | StoreError::QuorumUnavailable { .. }
                        | StoreError::NoValidMetadata { .. }
                        | StoreError::TooManyFaulty { .. }
                ),
                "{fault:?}: {err}"
            );
            ctl[0].set(Fault::None);
            assert_eq!(get(&store, "k").await.unwrap(), bytes, "{fault:?}");
        }
    });
}

#[test]
fn a_rollback_is_refused_after_the_client_saw_a_newer_version() {
    rt().block_on(async {
        let (store, ctl) = memory_store(1, Protocol::Sealed);
        put(&store, "k", b"first").await.unwrap();
        put(&store, "k", b"second").await.unwrap();
        put(&store, "k", b"third").await.unwrap();
        assert_eq!(get(&store, "k").await.unwrap(), b"third");
        // The cloud now serves the first version (validly signed, but old).
        ctl[0].set(Fault::RollbackMetadata);
        let err = get(&store, "k").await.unwrap_err();
        assert!(matches!(err, StoreError::RolledBack { .. }), "{err}");
        let err = store.head("k").await.unwrap_err();
        assert!(matches!(err, StoreError::RolledBack { .. }), "{err}");
        // A write refuses to build on the rolled-back version.
        let err = put(&store, "k", b"fourth").await.unwrap_err();
        assert!(matches!(err, StoreError::RolledBack { .. }), "{err}");
        ctl[0].set(Fault::None);
        assert_eq!(get(&store, "k").await.unwrap(), b"third");
        // A key this client never saw cannot be checked: the limit of one cloud.
        put(&store, "other", b"v1").await.unwrap();
        put(&store, "other", b"v2").await.unwrap();
        let (fresh, fresh_ctl) = memory_store(1, Protocol::Sealed);
        put(&fresh, "k", b"only").await.unwrap();
        fresh_ctl[0].set(Fault::RollbackMetadata);
        assert_eq!(get(&fresh, "k").await.unwrap(), b"only");
    });
}

#[test]
fn a_down_cloud_fails_every_operation_clearly() {
    rt().block_on(async {
        let (store, ctl) = memory_store(1, Protocol::Sealed);
        put(&store, "k", b"v").await.unwrap();
        ctl[0].set(Fault::Down);
        let err = get(&store, "k").await.unwrap_err();
        assert!(matches!(err, StoreError::QuorumUnavailable { .. }), "{err}");
        assert!(put(&store, "k", b"w").await.is_err());
        ctl[0].set(Fault::None);
        assert_eq!(get(&store, "k").await.unwrap(), b"v");
    });
}
