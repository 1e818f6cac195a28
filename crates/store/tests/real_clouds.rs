//! The same put/get/fault tests against real cloud APIs: two S3 buckets on moto_server,
//! one Azure container on Azurite and one local directory, each behind a fault injector.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::servers::{self, Server};
use common::{SEG, data, get, put, rt, tuning};
use rampart_store::cloud::Cloud;
use rampart_store::config::{CloudConfig, Secrets};
use rampart_store::faults::{Fault, FaultControl, FaultyStore};
use rampart_store::{CloudOfClouds, Protocol, StoreError};

struct Env {
    _s3: Server,
    _az: Server,
    _dir: tempfile::TempDir,
    configs: Vec<CloudConfig>,
}

fn env() -> Env {
    let s3 = servers::moto();
    let az = servers::azurite();
    servers::create_bucket(&s3, "rampart-a");
    servers::create_bucket(&s3, "rampart-b");
    servers::create_container(&az, "rampart");
    let dir = tempfile::tempdir().unwrap();
    let local = url::Url::from_directory_path(dir.path())
        .unwrap()
        .to_string();
    let configs = vec![
        CloudConfig {
            name: "s3-a".into(),
            url: "s3://rampart-a/tenant".into(),
            options: servers::s3_options(&s3),
        },
        CloudConfig {
            name: "s3-b".into(),
            url: "s3://rampart-b".into(),
            options: servers::s3_options(&s3),
        },
        CloudConfig {
            name: "azure".into(),
            url: "az://rampart".into(),
            options: servers::azure_options(&az),
        },
        CloudConfig {
            name: "local".into(),
            url: local,
            options: Default::default(),
        },
    ];
    Env {
        _s3: s3,
        _az: az,
        _dir: dir,
        configs,
    }
}

fn open(env: &Env, secrets: Secrets) -> (CloudOfClouds, Vec<FaultControl>) {
    let mut ctls = Vec::new();
    let clouds = env
        .configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Cloud::from_config(i, c).unwrap().map_store(|s| {
                let (f, ctl) = FaultyStore::new(s);
                ctls.push(ctl);
                f as Arc<dyn object_store::ObjectStore>
            })
        })
        .collect();
    let store = CloudOfClouds::from_parts(
        [9; 16],
        Protocol::Confidential,
        SEG,
        secrets,
        vec![],
        clouds,
        tuning(),
    )
    .unwrap();
    (store, ctls)
}

#[test]
fn real_clouds_roundtrip_faults_and_repair() {
    let env = env();
    rt().block_on(async {
        let (store, ctl) = open(&env, Secrets::generate());
        // Round trips across segment boundaries, including a multipart-sized object.
        for (i, len) in [0usize, 1, SEG as usize, 3 * SEG as usize + 1, 12 << 20]
            .into_iter()
            .enumerate()
        {
            let bytes = data(len, i as u64);
            put(&store, &format!("obj/{i}"), &bytes)
                .await
                .unwrap_or_else(|e| panic!("put {len}: {e}"));
            assert_eq!(
                get(&store, &format!("obj/{i}")).await.unwrap(),
                bytes,
                "size {len}"
            );
        }
        assert_eq!(store.list("obj/").await.unwrap().len(), 5);

        // Every fault on every cloud, one cloud at a time: exact bytes back.
        let bytes = data(2 * SEG as usize + 9, 77);
        put(&store, "f", &data(10, 1)).await.unwrap();
        put(&store, "f", &bytes).await.unwrap();
        for (c, cloud) in ctl.iter().enumerate() {
            for fault in [
                Fault::Down,
                Fault::CorruptReads,
                Fault::CorruptData,
                Fault::TruncateReads,
                Fault::StaleMetadata,
                Fault::RollbackMetadata,
                Fault::ForgeMetadata,
                Fault::LieInListings,
                Fault::Slow(Duration::from_millis(300)),
            ] {
                cloud.set(fault.clone());
                assert_eq!(
                    get(&store, "f")
                        .await
                        .unwrap_or_else(|e| panic!("cloud {c} {fault:?}: {e}")),
                    bytes,
                    "cloud {c} {fault:?}"
                );
                cloud.set(Fault::None);
            }
        }

        // Two clouds down: reads and writes fail loudly, nothing half-written appears.
        ctl[0].set(Fault::Down);
        ctl[2].set(Fault::Down);
        assert!(matches!(
            get(&store, "f").await,
            Err(StoreError::QuorumUnavailable { .. })
        ));
        assert!(put(&store, "f", b"lost").await.is_err());
        ctl[0].set(Fault::None);
        ctl[2].set(Fault::None);
        assert_eq!(get(&store, "f").await.unwrap(), bytes);

        // A cloud that silently dropped a write is named and repaired by scrub.
        ctl[1].set(Fault::DropWrites);
        put(&store, "dropped", &data(3 * SEG as usize, 5))
            .await
            .unwrap();
        ctl[1].set(Fault::None);
        let rep = store.scrub(true, None).await.unwrap();
        assert_eq!(
            rep.misbehaving_clouds().first().map(|c| c.0.clone()),
            Some("s3-b".to_string()),
            "{rep:?}"
        );
        assert!(rep.failed.is_empty(), "{rep:?}");
        let stat = store.stat("dropped").await.unwrap();
        assert!(stat.clouds.iter().all(|c| c.healthy()), "{stat:?}");
    });
}

/// Writers serialised by S3 If-Match (moto), Azure ETags (Azurite) and the local lock.
#[test]
fn real_clouds_concurrent_writers() {
    let env = env();
    rt().block_on(async {
        let (store, _) = open(&env, Secrets::generate());
        common::check_concurrent_writers(&store, "race", 3, 4).await;
    });
}

/// The sealed single backend on one real S3 bucket: the bucket holds only ciphertext, and
/// bytes changed in the bucket behind the store's back make reads fail, never lie.
#[test]
fn real_s3_single_sealed_backend() {
    use futures::TryStreamExt;
    use object_store::{ObjectStoreExt, PutPayload};

    let s3 = servers::moto();
    servers::create_bucket(&s3, "rampart-single");
    let cfg = CloudConfig {
        name: "s3".into(),
        url: "s3://rampart-single".into(),
        options: servers::s3_options(&s3),
    };
    rt().block_on(async {
        let cloud = Cloud::from_config(0, &cfg).unwrap();
        let bucket = cloud.store().clone();
        let store = CloudOfClouds::from_parts(
            [5; 16],
            Protocol::Sealed,
            // Whole-MiB segments: a few range reads per object instead of thousands.
            1 << 20,
            Secrets::generate(),
            vec![],
            vec![cloud],
            tuning(),
        )
        .unwrap();
        let marker = b"SEALED-S3-PLAINTEXT-MARKER";
        // Large enough to go multipart on S3.
        let mut bytes = data(12 << 20, 3);
        bytes[5 << 20..(5 << 20) + marker.len()].copy_from_slice(marker);
        put(&store, "big", &bytes).await.unwrap();
        put(&store, "small", marker).await.unwrap();
        assert_eq!(get(&store, "big").await.unwrap(), bytes);
        assert_eq!(get(&store, "small").await.unwrap(), marker);

        let objects: Vec<_> = bucket.list(None).try_collect().await.unwrap();
        let mut shards = Vec::new();
        for o in &objects {
            let stored = bucket
                .get(&o.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(
                !stored.windows(marker.len()).any(|w| w == marker),
                "{} holds plaintext",
                o.location
            );
            if o.location.as_ref().ends_with("/s0") {
                shards.push((o.location.clone(), stored));
            }
        }
        assert_eq!(shards.len(), 2, "{objects:?}");

        // Flip one byte of every blob in the bucket: every read must now fail.
        for (path, stored) in shards {
            let mut v = stored.to_vec();
            let i = v.len() - 1;
            v[i] ^= 0x40;
            bucket.put(&path, PutPayload::from(v)).await.unwrap();
        }
        for key in ["big", "small"] {
            let err = get(&store, key).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::NotEnoughShards { .. } | StoreError::Integrity { .. }
                ),
                "{key}: {err}"
            );
        }
    });
}
