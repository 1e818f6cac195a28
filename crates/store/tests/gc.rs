//! Garbage collection never loses an acknowledged write: version numbers never go back
//! (a deleted key keeps its tombstone as a version floor), gc races with puts and reads
//! are safe, and data whose metadata does not verify is kept (ADR 0005).
//!
//! Races are made deterministic with [`Gated`] clouds, which hold chosen requests until
//! the test opens the gate.

mod common;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use rampart_crypto::sign::SigningKey;
use rampart_store::cloud::{CasMode, Cloud};
use rampart_store::config::{Secrets, StoreConfig};
use rampart_store::faults::{Fault, FaultControl, FaultyStore};
use rampart_store::meta::Metadata;
use rampart_store::{CloudOfClouds, MetaHealth, Protocol, StoreError, Tuning};

use common::{SEG, data, get, put, rt, tuning};

const HOUR: Duration = Duration::from_secs(3600);

/// Requests a [`Gated`] cloud can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// The next metadata write (one per cloud).
    MetadataWrite,
    /// Every read of blob data.
    BlobReads,
}

/// Shared by the gated clouds of one test: how many requests wait, and whether the gate
/// is open.
struct Gate {
    held: AtomicUsize,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            open: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Waits until `n` requests are held (bounded: panics after 10 s).
    async fn wait_held(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.held.load(Ordering::SeqCst) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} requests reached the gate",
                self.held.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Lets every held request, and every later one, through.
    fn release(&self) {
        self.open.send_replace(true);
    }
}

/// An `ObjectStore` that holds the requests it is armed for until its [`Gate`] opens.
struct Gated {
    inner: Arc<dyn ObjectStore>,
    gate: Arc<Gate>,
    armed: Mutex<Option<Hold>>,
}

impl Gated {
    fn arm(&self, what: Hold) {
        *self.armed.lock().unwrap() = Some(what);
    }

    async fn pass(&self, what: Hold) {
        let hold = {
            let mut armed = self.armed.lock().unwrap();
            match *armed {
                Some(h) if h == what => {
                    if h == Hold::MetadataWrite {
                        *armed = None;
                    }
                    true
                }
                _ => false,
            }
        };
        if hold && !*self.gate.open.borrow() {
            self.gate.held.fetch_add(1, Ordering::SeqCst);
            let mut rx = self.gate.open.subscribe();
            let _ = rx.wait_for(|open| *open).await;
        }
    }
}

impl fmt::Debug for Gated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gated({})", self.inner)
    }
}

impl fmt::Display for Gated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gated({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Gated {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        if location.as_ref().contains("/m/") {
            self.pass(Hold::MetadataWrite).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if location.as_ref().contains("/b/") {
            self.pass(Hold::BlobReads).await;
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A DepSky-CA client over `stores` (cloud `i` is `stores[i]`).
fn client_over(
    stores: &[Arc<dyn ObjectStore>],
    secrets: Secrets,
    trusted: Vec<rampart_crypto::sign::VerifyingKey>,
) -> CloudOfClouds {
    let clouds = stores
        .iter()
        .enumerate()
        .map(|(i, s)| Cloud::new(format!("mem-{i}"), i, s.clone(), CasMode::Native))
        .collect();
    CloudOfClouds::from_parts(
        [7; 16],
        Protocol::Confidential,
        SEG,
        secrets,
        trusted,
        clouds,
        // Held requests wait for the test, not for a timeout.
        Tuning {
            op_timeout: Duration::from_secs(30),
            ..tuning()
        },
    )
    .unwrap()
}

/// Four in-memory clouds, each behind a fault injector and a gate.
struct Env {
    store: CloudOfClouds,
    /// The bare clouds, below the faults and gates.
    mem: Vec<Arc<dyn ObjectStore>>,
    faults: Vec<FaultControl>,
    gated: Vec<Arc<Gated>>,
    gate: Arc<Gate>,
    signing_key: SigningKey,
}

impl Env {
    fn new() -> Self {
        let gate = Gate::new();
        let (mut mem, mut faults, mut gated) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..4 {
            let m: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let (faulty, ctl) = FaultyStore::new(m.clone());
            let g = Arc::new(Gated {
                inner: faulty,
                gate: gate.clone(),
                armed: Mutex::new(None),
            });
            mem.push(m);
            faults.push(ctl);
            gated.push(g);
        }
        let secrets = Secrets::generate();
        let signing_key = SigningKey::from_seed(&secrets.signing_key.danger_seed());
        let stores: Vec<Arc<dyn ObjectStore>> = gated
            .iter()
            .map(|g| g.clone() as Arc<dyn ObjectStore>)
            .collect();
        Self {
            store: client_over(&stores, secrets, vec![]),
            mem,
            faults,
            gated,
            gate,
            signing_key,
        }
    }

    fn arm(&self, what: Hold) {
        for g in &self.gated {
            g.arm(what);
        }
    }

    /// Rewrites every cloud's metadata as if each version had been written `by` earlier
    /// (re-signed by the writer), so that grace periods can pass without waiting.
    async fn age_metadata(&self, by: Duration) {
        for s in &self.mem {
            let metas: Vec<ObjectMeta> = s
                .list(Some(&Path::from("rampart/v1/m")))
                .try_collect()
                .await
                .unwrap();
            for m in metas {
                let bytes = s.get(&m.location).await.unwrap().bytes().await.unwrap();
                let mut meta = Metadata::decode_unverified(&bytes).unwrap();
                for e in &mut meta.entries {
                    e.created_ms -= by.as_millis() as u64;
                    // The version's tag is a digest of the entry, creation time included.
                    e.version.tag = e.content_tag();
                }
                let signed = meta.sign(&self.signing_key);
                s.put(&m.location, PutPayload::from(signed)).await.unwrap();
            }
        }
    }
}

/// Deletes `key` and waits until every cloud holds the tombstone (`delete` leaves the
/// slowest cloud's write running in the background).
async fn delete_everywhere(s: &CloudOfClouds, key: &str) -> rampart_store::Version {
    let v = s.delete(key).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stat = s.stat(key).await.unwrap();
        if stat
            .clouds
            .iter()
            .all(|c| c.metadata == MetaHealth::Current)
        {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stat:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every object under the store's root on every cloud.
async fn all_objects(stores: &[Arc<dyn ObjectStore>]) -> Vec<Path> {
    let mut out = Vec::new();
    for s in stores {
        let objs: Vec<ObjectMeta> = s.list(None).try_collect().await.unwrap();
        out.extend(objs.into_iter().map(|o| o.location));
    }
    out.sort();
    out
}

/// Finding: a gc purge deleted a deleted key's metadata, so the next put restarted at
/// v1 and a cloud that missed the gc (or replays old metadata) won with the old
/// tombstone; scrub then "repaired" correct clouds with it.
#[test]
fn a_put_after_gc_of_a_deleted_key_is_newer_than_any_old_version() {
    rt().block_on(async {
        let env = Env::new();
        let s = &env.store;
        put(s, "k", b"old").await.unwrap();
        let tombstone = delete_everywhere(s, "k").await;
        // Cloud 3 holds the tombstone and the old version, and misses the gc and the put.
        env.faults[3].set(Fault::Down);
        let rep = s.gc(1, Duration::ZERO).await.unwrap();
        assert_eq!(rep.keys_purged, 1, "{rep:?}");
        let v = put(s, "k", b"new").await.unwrap();
        assert!(
            v > tombstone,
            "new {v} must be above the tombstone {tombstone}"
        );
        env.faults[3].set(Fault::None);
        for _ in 0..3 {
            assert_eq!(get(s, "k").await.unwrap(), b"new");
            assert_eq!(s.head("k").await.unwrap().version, v);
        }
        // Scrub brings cloud 3 up to the new version, never the others down to the old.
        let rep = s.scrub(true, None).await.unwrap();
        assert!(rep.failed.is_empty(), "{rep:?}");
        assert_eq!(get(s, "k").await.unwrap(), b"new");
        let stat = s.stat("k").await.unwrap();
        for c in &stat.clouds {
            assert_eq!(c.metadata, MetaHealth::Current, "{stat:?}");
        }
        // A cloud that replays the oldest metadata it ever held does not win either.
        env.faults[3].set(Fault::RollbackMetadata);
        assert_eq!(get(s, "k").await.unwrap(), b"new");
        // The old blob cloud 3 still held is reclaimed once it is reachable.
        env.faults[3].set(Fault::None);
        s.gc(1, Duration::ZERO).await.unwrap();
        let blobs: Vec<Path> = all_objects(&env.mem[3..])
            .await
            .into_iter()
            .filter(|p| p.as_ref().contains("/b/"))
            .collect();
        assert_eq!(blobs.len(), 1, "only the new version's shard: {blobs:?}");
    });
}

/// Finding: gc racing a put of a deleted key deleted the put's in-flight blob and then
/// the metadata without compare-and-swap; the acknowledged put was unreadable.
#[test]
fn gc_racing_a_put_of_a_deleted_key_keeps_the_put() {
    rt().block_on(async {
        let env = Env::new();
        let s = &env.store;
        put(s, "k", b"old").await.unwrap();
        let tombstone = delete_everywhere(s, "k").await;
        // The deletion is older than the grace period.
        env.age_metadata(2 * HOUR).await;
        // A put uploads its data, then waits at its metadata writes while gc runs.
        env.arm(Hold::MetadataWrite);
        let writer = {
            let s = s.clone();
            tokio::spawn(async move { put(&s, "k", &data(3 * SEG as usize, 1)).await })
        };
        env.gate.wait_held(4).await;
        let rep = s.gc(1, HOUR).await.unwrap();
        assert_eq!(
            rep.keys_purged, 1,
            "the old tombstone is compacted: {rep:?}"
        );
        env.gate.release();
        let v = writer.await.unwrap().expect("the put succeeds");
        assert!(v > tombstone, "{v} above {tombstone}");
        assert_eq!(get(s, "k").await.unwrap(), data(3 * SEG as usize, 1));
        assert_eq!(s.head("k").await.unwrap().version, v);
    });
}

/// gc changes metadata only by compare-and-swap on the exact version it read: a put that
/// lands between gc's read and its write makes gc leave the key for the next run.
#[test]
fn gc_leaves_a_key_that_changed_after_it_was_read() {
    rt().block_on(async {
        let env = Env::new();
        let s = &env.store;
        put(s, "k", b"old").await.unwrap();
        delete_everywhere(s, "k").await;
        env.age_metadata(2 * HOUR).await;
        // gc reads the old tombstone, then waits at its metadata writes while a put lands.
        env.arm(Hold::MetadataWrite);
        let collector = {
            let s = s.clone();
            tokio::spawn(async move { s.gc(1, HOUR).await })
        };
        env.gate.wait_held(4).await;
        let v = put(s, "k", b"new").await.unwrap();
        env.gate.release();
        let rep = collector.await.unwrap().unwrap();
        assert_eq!(rep.keys_purged, 0, "{rep:?}");
        assert_eq!(rep.versions_dropped, 0, "{rep:?}");
        assert!(
            rep.warnings
                .iter()
                .any(|w| w.contains("changed while gc ran")),
            "{rep:?}"
        );
        assert_eq!(get(s, "k").await.unwrap(), b"new");
        assert_eq!(s.head("k").await.unwrap().version, v);
        assert_eq!(s.stat("k").await.unwrap().versions.len(), 3);
    });
}

/// Finding: gc dropped the blobs of superseded versions at once, so reads that had
/// started on them failed. They now get the grace period, counted from when they were
/// superseded.
#[test]
fn gc_gives_superseded_versions_the_grace_period() {
    rt().block_on(async {
        let env = Env::new();
        let s = &env.store;
        let v1 = data(3 * SEG as usize, 1);
        let v2 = data(2 * SEG as usize, 2);
        put(s, "k", &v1).await.unwrap();
        // A read of v1 has its metadata and waits at its first data request.
        env.arm(Hold::BlobReads);
        let reader = {
            let s = s.clone();
            tokio::spawn(async move { get(&s, "k").await })
        };
        env.gate.wait_held(1).await;
        put(s, "k", &v2).await.unwrap();
        let rep = s.gc(1, HOUR).await.unwrap();
        env.gate.release();
        assert_eq!(
            reader
                .await
                .unwrap()
                .expect("the read that started on v1 finishes"),
            v1
        );
        assert_eq!(rep.versions_dropped, 0, "{rep:?}");
        assert_eq!(rep.objects_deleted, 0, "{rep:?}");
        assert_eq!(get(s, "k").await.unwrap(), v2);
        // Once v1 was superseded longer ago than the grace period, it goes.
        env.age_metadata(2 * HOUR).await;
        let rep = s.gc(1, HOUR).await.unwrap();
        assert_eq!(rep.versions_dropped, 1, "{rep:?}");
        assert_eq!(rep.objects_deleted, 4, "one shard per cloud: {rep:?}");
        assert_eq!(get(s, "k").await.unwrap(), v2);
        assert_eq!(s.stat("k").await.unwrap().versions.len(), 1);
    });
}

/// Four empty in-memory clouds.
fn memory_clouds() -> Vec<Arc<dyn ObjectStore>> {
    (0..4)
        .map(|_| Arc::new(InMemory::new()) as Arc<dyn ObjectStore>)
        .collect()
}

/// Two configurations of one store: the same namespace secret, the second with its own
/// signing key (as after a writer key rotation).
fn rotated_secrets() -> (Secrets, Secrets, Secrets) {
    let dir = tempfile::tempdir().unwrap();
    let init = rampart_store::init_local(dir.path(), 4).unwrap();
    let load = || StoreConfig::load(&init.config_path).unwrap().secrets;
    let (a, mut b, mut c) = (load(), load(), load());
    b.signing_key = SigningKey::generate();
    c.signing_key = SigningKey::from_seed(&b.signing_key.danger_seed());
    (a, b, c)
}

/// Finding: gc deleted data whose metadata did not verify (after a writer key rotation
/// that forgot the old key); trusting the old key again did not bring it back.
#[test]
fn gc_keeps_data_whose_metadata_does_not_verify() {
    rt().block_on(async {
        let (a, b, c) = rotated_secrets();
        let a_pub = a.signing_key.verifying_key();
        let mem = memory_clouds();
        let writer_a = client_over(&mem, a, vec![]);
        put(&writer_a, "k", &data(5000, 1)).await.unwrap();
        put(&writer_a, "k", &data(5000, 2)).await.unwrap();
        drop(writer_a);
        let before = all_objects(&mem).await;
        // The rotated configuration trusts only the new key.
        let rotated = client_over(&mem, b, vec![]);
        let rep = rotated.gc(1, Duration::ZERO).await.unwrap();
        assert_eq!(rep.objects_deleted, 0, "{rep:?}");
        assert_eq!(rep.versions_dropped, 0, "{rep:?}");
        assert_eq!(rep.unverifiable.len(), 1, "{rep:?}");
        assert!(rep.unverifiable[0].contains("untrusted"), "{rep:?}");
        assert_eq!(all_objects(&mem).await, before, "nothing deleted");
        // Trusting the old key again brings the object back.
        let fixed = client_over(&mem, c, vec![a_pub]);
        assert_eq!(get(&fixed, "k").await.unwrap(), data(5000, 2));
        let err = get(&rotated, "k").await.unwrap_err();
        assert!(matches!(err, StoreError::NoValidMetadata { .. }), "{err}");
    });
}

/// Finding (issue 11): a put treated metadata it could not verify as no metadata, so after
/// a writer key rotation that forgot the old key it wrote version 1 over every cloud: the
/// old writer's versions were gone, and the counter went back. It must refuse instead, and
/// trusting the old key again must still show the newest write.
#[test]
fn a_put_never_restarts_the_version_over_metadata_it_cannot_verify() {
    rt().block_on(async {
        let (a, b, c) = rotated_secrets();
        let a_pub = a.signing_key.verifying_key();
        let mem = memory_clouds();
        let writer_a = client_over(&mem, a, vec![]);
        put(&writer_a, "k", &data(3000, 1)).await.unwrap();
        put(&writer_a, "k", &data(3000, 2)).await.unwrap();
        let newest = |s: rampart_store::KeyReport| s.versions.iter().map(|v| v.0.counter).max();
        let counter = newest(writer_a.stat("k").await.unwrap());
        drop(writer_a);
        // The rotated configuration trusts only the new key: its put must be refused.
        let rotated = client_over(&mem, b, vec![]);
        let err = put(&rotated, "k", b"by the new key").await.unwrap_err();
        assert!(matches!(err, StoreError::NoValidMetadata { .. }), "{err}");
        assert!(err.to_string().contains("untrusted"), "{err}");
        // Trusting the old key again: the newest write is there, at its counter.
        let fixed = client_over(&mem, c, vec![a_pub]);
        assert_eq!(get(&fixed, "k").await.unwrap(), data(3000, 2));
        assert_eq!(newest(fixed.stat("k").await.unwrap()), counter);
    });
}

/// After a writer key rotation that forgot the old key, scrub must not overwrite the
/// newer metadata it cannot verify with the older version it can: trusting the old key
/// again must bring the newest write back.
#[test]
fn scrub_never_overwrites_newer_unverifiable_metadata_with_an_older_version() {
    rt().block_on(async {
        let (a, b, c) = rotated_secrets();
        let (a_pub, b_pub) = (a.signing_key.verifying_key(), b.signing_key.verifying_key());
        let (mut stores, mut faults) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            let (s, ctl) = FaultyStore::new(Arc::new(InMemory::new()));
            stores.push(s as Arc<dyn ObjectStore>);
            faults.push(ctl);
        }
        // B writes v1 everywhere; A (trusted then) writes v2 while cloud 3 is down.
        let writer_b = client_over(&stores, c, vec![a_pub]);
        put(&writer_b, "k", b"v1 by B").await.unwrap();
        let writer_a = client_over(&stores, a, vec![b_pub]);
        faults[3].set(Fault::Down);
        put(&writer_a, "k", b"v2 by A").await.unwrap();
        faults[3].set(Fault::None);
        // The rotated configuration trusts only B: it sees v1 on cloud 3 and metadata it
        // cannot verify on the others.
        let rotated = client_over(&stores, b, vec![]);
        let rep = rotated.scrub(true, None).await.unwrap();
        assert_eq!(rep.failed.len(), 3, "{rep:?}");
        assert!(rep.failed[0].1.contains("not overwritten"), "{rep:?}");
        assert!(
            !rep.repaired
                .iter()
                .any(|(_, _, w)| w == "metadata rewritten"),
            "{rep:?}"
        );
        // Trusting A again: the newest write is still there.
        assert_eq!(get(&writer_b, "k").await.unwrap(), b"v2 by A");
    });
}
