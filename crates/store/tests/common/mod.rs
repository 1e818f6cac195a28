//! Shared helpers for the store's integration tests.
#![allow(dead_code)]
// Tests wait for real servers against wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

pub mod servers;

use std::sync::Arc;

use object_store::memory::InMemory;
use rampart_store::cloud::{CasMode, Cloud};
use rampart_store::config::Secrets;
use rampart_store::faults::{FaultControl, FaultyStore};
use rampart_store::{CloudOfClouds, Protocol, Tuning};

/// Segment size used by tests: small, so that multi-segment objects stay small.
pub const SEG: u32 = 4096;

/// Tuning for tests: short hedges and timeouts so that faults resolve quickly.
pub fn tuning() -> Tuning {
    Tuning {
        hedge_delay_min: std::time::Duration::from_millis(20),
        straggler_timeout: std::time::Duration::from_secs(2),
        op_timeout: std::time::Duration::from_secs(5),
        ..Tuning::default()
    }
}

/// `n` in-memory clouds, each behind a fault injector.
pub fn memory_store(n: usize, protocol: Protocol) -> (CloudOfClouds, Vec<FaultControl>) {
    memory_store_tuned(n, protocol, tuning())
}

/// Like [`memory_store`], with `tuning`.
pub fn memory_store_tuned(
    n: usize,
    protocol: Protocol,
    tuning: Tuning,
) -> (CloudOfClouds, Vec<FaultControl>) {
    let mut ctls = Vec::new();
    let clouds = (0..n)
        .map(|i| {
            let (faulty, ctl) = FaultyStore::new(Arc::new(InMemory::new()));
            ctls.push(ctl);
            Cloud::new(format!("mem-{i}"), i, faulty, CasMode::Native)
        })
        .collect();
    let store = CloudOfClouds::from_parts(
        [7; 16],
        protocol,
        SEG,
        Secrets::generate(),
        vec![],
        clouds,
        tuning,
    )
    .unwrap();
    (store, ctls)
}

/// Deterministic test data of `len` bytes, distinct per `seed`.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Puts `bytes` under `key`, waiting for stragglers briefly.
pub async fn put(
    store: &CloudOfClouds,
    key: &str,
    bytes: &[u8],
) -> Result<rampart_store::Version, rampart_store::StoreError> {
    let r = store.put(key, bytes, Vec::new(), None).await?;
    r.background.wait(std::time::Duration::from_secs(5)).await;
    Ok(r.version)
}

/// Gets the newest bytes of `key`.
pub async fn get(store: &CloudOfClouds, key: &str) -> Result<Vec<u8>, rampart_store::StoreError> {
    let mut out = Vec::new();
    store.get(key, &mut out, None, None).await?;
    Ok(out)
}

/// Runs `writers` tasks that each put `puts` distinct values to `key` concurrently, and
/// checks the consistency guarantees: read-your-writes after every put, one distinct
/// version per acknowledged write, and afterwards reads return the highest version's bytes.
pub async fn check_concurrent_writers(
    store: &CloudOfClouds,
    key: &'static str,
    writers: u64,
    puts: u64,
) {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..puts {
                let bytes = data(300, w * 1000 + i);
                let v = put(&store, key, &bytes).await.unwrap();
                // Read-your-writes: a read right after sees this version or a newer one.
                assert!(store.head(key).await.unwrap().version >= v);
                acked.push((v, bytes));
            }
            acked
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let mut versions: Vec<_> = all.iter().map(|(v, _)| *v).collect();
    versions.sort();
    versions.dedup();
    assert_eq!(
        versions.len() as u64,
        writers * puts,
        "every acknowledged write has its own version"
    );
    let (top, bytes) = all.iter().max_by_key(|(v, _)| *v).unwrap();
    assert_eq!(store.head(key).await.unwrap().version, *top);
    assert_eq!(&get(store, key).await.unwrap(), bytes);
}

/// A two-worker runtime, like the machine the tests run on.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
