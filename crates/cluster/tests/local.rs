//! A local cluster over real TLS sockets: every operation kind, concurrent callers batched
//! into shared requests, the read-only path, and a crashed replica.

use rampart_bft::{ClientId, ReplicaId};
use rampart_cluster::client::{ClientOptions, KvClient};
use rampart_cluster::local::{LocalCluster, LocalOptions};
use rampart_kv::{KvOp, KvResult};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_serves_every_operation_and_survives_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut local = LocalCluster::start(dir.path(), &LocalOptions::default())
        .await
        .expect("start");
    let key = local.cluster.client_key(ClientId(0)).expect("key");
    let c = KvClient::connect(&local.cluster, ClientId(0), key, ClientOptions::default())
        .expect("client");

    c.put(b"a/1", b"x").await.expect("put");
    assert_eq!(
        c.get(b"a/1", false).await.expect("get"),
        Some(b"x".to_vec())
    );
    assert_eq!(
        c.get(b"a/1", true).await.expect("read-only get"),
        Some(b"x".to_vec())
    );
    let r = c
        .execute(
            vec![
                KvOp::Cas {
                    key: b"a/1".to_vec(),
                    expected: Some(b"x".to_vec()),
                    new: b"y".to_vec(),
                },
                KvOp::Cas {
                    key: b"a/1".to_vec(),
                    expected: Some(b"x".to_vec()),
                    new: b"z".to_vec(),
                },
                KvOp::Put {
                    key: b"a/2".to_vec(),
                    value: b"w".to_vec(),
                },
                KvOp::Delete {
                    key: b"nope".to_vec(),
                },
                KvOp::Scan {
                    prefix: b"a/".to_vec(),
                    limit: 1,
                },
            ],
            false,
        )
        .await
        .expect("batch");
    assert_eq!(
        r[0],
        KvResult::Cas {
            swapped: true,
            current: Some(b"x".to_vec())
        }
    );
    assert_eq!(
        r[1],
        KvResult::Cas {
            swapped: false,
            current: Some(b"y".to_vec())
        }
    );
    assert_eq!(r[3], KvResult::Deleted(false));
    assert_eq!(
        r[4],
        KvResult::Entries {
            entries: vec![(b"a/1".to_vec(), b"y".to_vec())],
            more: true
        }
    );

    // Many concurrent callers share requests.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let c = c.clone();
        set.spawn(async move { c.put(format!("k{i}").as_bytes(), &i.to_le_bytes()).await });
    }
    while let Some(r) = set.join_next().await {
        r.expect("join").expect("put");
    }
    let requests = c
        .stats()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        requests < 5 + 200,
        "200 concurrent puts were batched ({requests} requests)"
    );

    // A crashed follower does not stop the service.
    local.crash(ReplicaId(3));
    c.put(b"after", b"crash").await.expect("put after crash");
    assert_eq!(
        c.get(b"after", false).await.expect("get"),
        Some(b"crash".to_vec())
    );
}
