//! The cloud-of-clouds client: the DepSky protocols over a set of [`Cloud`]s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream::{self, FuturesUnordered, StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use rampart_crypto::aead::{SealingKey, SegmentKey};
use rampart_crypto::hash::{Digest, Hasher};
use rampart_crypto::shamir::{self, Share};
use rampart_crypto::sign::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use rampart_log::audit::{AuditEvent, AuditSink, LogAuditSink, Outcome};

use crate::StoreError;
use crate::cloud::{CasOutcome, CasToken, Cloud, CloudError};
use crate::config::{Secrets, StoreConfig};
use crate::meta::{
    ATTRS_PLAIN_BYTES_MAX, KEY_BYTES_MAX, MANIFEST_BYTES_MAX, MANIFEST_INLINE_MAX, META_BYTES_MAX,
    Manifest, Metadata, ObjectRef, Protocol, SEGMENTS_MAX, TAG_LEN, VERSIONS_MAX, Version,
    VersionEntry,
};
use crate::pipeline::{Codec, EncodedSegment, SegmentContext};

#[path = "gc.rs"]
mod gc;
pub use gc::GcReport;

/// Root of everything Rampart writes in a cloud; the format version is part of the path.
const ROOT: &str = "rampart/v1";

/// Knobs with safe defaults. Memory use of a transfer is bounded by roughly
/// `segment_size × (read_window_segments + 3) + n × (write_queue_segments × shard size +
/// upload_part_bytes × (upload_concurrency + 1))`, about 120 MiB for n = 4 and 4 MiB
/// segments plus allocator slack: measured peak RSS of the whole `rampart` process was
/// 178 MiB for a 2 GiB put and 100 MiB for a 2 GiB get (release build, n = 4). The bound
/// does not depend on the object's size.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Smallest delay before a read asks one more cloud for a segment.
    pub hedge_delay_min: Duration,
    /// Segments fetched ahead while reading.
    pub read_window_segments: usize,
    /// Shards queued per cloud while writing.
    pub write_queue_segments: usize,
    /// A cloud that cannot take a shard for this long is dropped from a write (if
    /// `n − f` others keep up); `scrub` repairs it later.
    pub straggler_timeout: Duration,
    /// Deadline for one small request (metadata, manifest, listing) to one cloud.
    pub op_timeout: Duration,
    /// After `n − f` metadata answers, how long a writer waits for the rest.
    pub quorum_grace: Duration,
    /// After `n − f` metadata answers that disagree (valid metadata beside metadata that
    /// fails verification), how long a reader waits for the remaining clouds before it
    /// applies the fault bound. Costs nothing while no answer is invalid. Also how long a
    /// writer that saw a conflict waits for clouds that missed its read round.
    pub dissent_grace: Duration,
    /// Attempts before a write gives up on concurrent writers.
    pub cas_attempts_max: u32,
    /// Multipart part size per cloud upload (S3 needs at least 5 MiB).
    pub upload_part_bytes: usize,
    /// Parts in flight per cloud upload.
    pub upload_concurrency: usize,
    /// Keys whose metadata is read concurrently by `list`, `scrub` and `gc`.
    pub list_concurrency: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            hedge_delay_min: Duration::from_millis(40),
            read_window_segments: 4,
            write_queue_segments: 4,
            straggler_timeout: Duration::from_secs(20),
            op_timeout: Duration::from_secs(30),
            quorum_grace: Duration::from_millis(20),
            dissent_grace: Duration::from_secs(1),
            cas_attempts_max: 12,
            upload_part_bytes: 8 * 1024 * 1024,
            upload_concurrency: 2,
            list_concurrency: 16,
        }
    }
}

/// Most keys whose newest seen version a single-cloud client remembers (about 100 bytes
/// each); keys beyond it are not checked for rollback.
const SEEN_VERSIONS_MAX: usize = 1 << 20;

/// Callback told the number of bytes transferred so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A client of one cloud-of-clouds store. Cheap to clone.
#[derive(Clone)]
pub struct CloudOfClouds {
    inner: Arc<Inner>,
}

struct Inner {
    clouds: Vec<Arc<Cloud>>,
    f: usize,
    store_id: [u8; 16],
    protocol: Protocol,
    segment_size: u32,
    signing_key: SigningKey,
    trusted: Vec<VerifyingKey>,
    name_id_key: Zeroizing<[u8; 32]>,
    /// Keys the content digest so that a cloud cannot test a guess of the plaintext.
    content_key: Zeroizing<[u8; 32]>,
    name_seal: SealingKey,
    /// Wraps data keys for [`Protocol::Sealed`].
    key_wrap: SealingKey,
    /// With one cloud (`f = 0`): the newest version this client saw per key, so that a
    /// rollback by the cloud is detected (at most [`SEEN_VERSIONS_MAX`] keys).
    seen: std::sync::Mutex<HashMap<[u8; 32], Version>>,
    tuning: Tuning,
    audit: Option<Arc<dyn AuditSink>>,
}

impl fmt::Debug for CloudOfClouds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudOfClouds")
            .field("n", &self.n())
            .field("f", &self.f())
            .field("protocol", &self.inner.protocol)
            .field("clouds", &self.inner.clouds)
            .finish()
    }
}

/// What a successful `put` did.
#[derive(Debug)]
pub struct PutReceipt {
    /// The new version.
    pub version: Version,
    /// Bytes stored.
    pub size: u64,
    /// Uploads to slower clouds still running; `wait` on it before exiting a process.
    pub background: Background,
}

/// What a successful `get` returned.
#[derive(Clone, Debug)]
pub struct GetReceipt {
    /// Version read.
    pub version: Version,
    /// Full object size.
    pub size: u64,
    /// Bytes written to the output (the range length for ranged reads).
    pub bytes_written: u64,
}

/// The newest version of an object, from verified metadata.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    /// User key.
    pub key: String,
    /// Newest version.
    pub version: Version,
    /// Size in bytes.
    pub size: u64,
    /// Writer's timestamp (ms since the Unix epoch).
    pub created_ms: u64,
    /// Protocol used.
    pub protocol: Protocol,
    /// Keyed digest of this version's plaintext: `BLAKE3-keyed(content key, blob id ‖
    /// BLAKE3(plaintext))`, the content key derived from the namespace secret. Differs per
    /// version even for equal content; meaningless to anyone without the secret.
    pub content_digest: Digest,
    /// Opaque attributes stored with the version.
    pub attrs: Vec<u8>,
    /// The version's random blob id (what `content_digest` is keyed over).
    pub blob_id: [u8; 16],
}

/// One line of `list`.
pub type ListEntry = ObjectInfo;

/// A background task: the cloud it works on, what it does, and its handle.
type Task = (String, &'static str, JoinHandle<Result<(), String>>);

/// Work that continues after an operation returned (stragglers).
#[derive(Default)]
pub struct Background {
    tasks: Vec<Task>,
}

impl fmt::Debug for Background {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Background({} tasks)", self.tasks.len())
    }
}

/// How background work ended.
#[derive(Debug, Default)]
pub struct BackgroundReport {
    /// Tasks that finished successfully.
    pub completed: usize,
    /// `cloud: what failed` for tasks that failed.
    pub failed: Vec<String>,
    /// Tasks still running at the deadline (they keep running while the process lives).
    pub unfinished: Vec<String>,
}

impl Background {
    fn push(&mut self, cloud: &str, what: &'static str, h: JoinHandle<Result<(), String>>) {
        self.tasks.push((cloud.to_owned(), what, h));
    }

    fn extend(&mut self, other: Background) {
        self.tasks.extend(other.tasks);
    }

    /// True when every task has finished.
    pub fn all_finished(&self) -> bool {
        self.tasks.iter().all(|(_, _, h)| h.is_finished())
    }

    /// Waits for the stragglers, at most `deadline`.
    pub async fn wait(self, deadline: Duration) -> BackgroundReport {
        let until = tokio::time::Instant::now() + deadline;
        let mut rep = BackgroundReport::default();
        for (cloud, what, h) in self.tasks {
            match tokio::time::timeout_at(until, h).await {
                Ok(Ok(Ok(()))) => rep.completed += 1,
                Ok(Ok(Err(e))) => rep.failed.push(format!("{cloud}: {what}: {e}")),
                Ok(Err(e)) => rep.failed.push(format!("{cloud}: {what}: {e}")),
                Err(_) => rep.unfinished.push(format!("{cloud}: {what}")),
            }
        }
        rep
    }
}

/// Health of one cloud's metadata for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaHealth {
    /// Holds the newest version.
    Current,
    /// Holds a valid but older version.
    Stale {
        /// The version it holds.
        has: Version,
    },
    /// Holds a valid signed entry with the same counter as one of the newest metadata's
    /// entries but different content: writers sharing a key raced (ADR 0006). `scrub`
    /// rewrites it with the newest metadata.
    Divergent {
        /// Its differing version.
        has: Version,
    },
    /// Holds nothing.
    Missing,
    /// Holds bytes that fail verification.
    Invalid {
        /// Why.
        reason: String,
    },
    /// Did not answer.
    Unreachable {
        /// Why.
        reason: String,
    },
}

/// Health of one cloud's shards of the newest version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardHealth {
    /// Every shard (and key share) matches the manifest.
    Valid,
    /// The blob is absent.
    Missing,
    /// A shard or the key share fails its digest.
    Corrupt {
        /// First bad segment, or `None` for the key share / header.
        segment: Option<u64>,
    },
    /// Could not be read.
    Unreachable {
        /// Why.
        reason: String,
    },
    /// The newest version is a deletion marker.
    NotApplicable,
}

/// One cloud's state for one key.
#[derive(Clone, Debug)]
pub struct CloudHealth {
    /// Cloud name.
    pub cloud: String,
    /// Metadata state.
    pub metadata: MetaHealth,
    /// Shard state.
    pub shards: ShardHealth,
}

impl CloudHealth {
    /// True when the cloud holds everything it should.
    pub fn healthy(&self) -> bool {
        self.metadata == MetaHealth::Current
            && matches!(self.shards, ShardHealth::Valid | ShardHealth::NotApplicable)
    }
}

/// Everything known about one key across clouds (`rampart stat`).
#[derive(Clone, Debug)]
pub struct KeyReport {
    /// User key.
    pub key: String,
    /// Versions listed by the newest valid metadata, newest first:
    /// `(version, created_ms, size or None for a deletion)`.
    pub versions: Vec<(Version, u64, Option<u64>)>,
    /// Per cloud.
    pub clouds: Vec<CloudHealth>,
}

/// Result of `scrub`.
#[derive(Clone, Debug, Default)]
pub struct ScrubReport {
    /// Keys examined.
    pub keys: usize,
    /// `(cloud, key, problem)` for every problem found.
    pub problems: Vec<(String, String, String)>,
    /// `(cloud, key, what)` for every repair made.
    pub repaired: Vec<(String, String, String)>,
    /// `(key, why)` for keys that could not be repaired.
    pub failed: Vec<(String, String)>,
    /// Names that at most f clouds list, skipped without a request: a completed write is
    /// listed by at least f + 1 correct clouds, so these are invented by faulty clouds or
    /// writes that reached at most f clouds.
    pub unbacked: usize,
}

impl ScrubReport {
    /// Clouds that had at least one problem, with counts, most problems first.
    pub fn misbehaving_clouds(&self) -> Vec<(String, usize)> {
        let mut m: BTreeMap<&str, usize> = BTreeMap::new();
        for (c, _, _) in &self.problems {
            *m.entry(c).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = m.into_iter().map(|(c, n)| (c.to_owned(), n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

// ---------------------------------------------------------------------------------------
// Paths and small helpers.

/// One cloud's metadata listing: the name ids it holds, or why it failed.
type Listing = Result<Vec<[u8; 32]>, String>;

fn meta_prefix() -> Path {
    Path::from(format!("{ROOT}/m"))
}

fn meta_path(name_id: &[u8; 32]) -> Path {
    Path::from(format!("{ROOT}/m/{}", hex::encode(name_id)))
}

fn blobs_prefix(name_id: &[u8; 32]) -> Path {
    Path::from(format!("{ROOT}/b/{}", hex::encode(name_id)))
}

fn blob_prefix(name_id: &[u8; 32], blob_id: &[u8; 16]) -> Path {
    Path::from(format!(
        "{ROOT}/b/{}/{}",
        hex::encode(name_id),
        hex::encode(blob_id)
    ))
}

/// Associated data for a wrapped data key: binds it to its store, key and blob.
fn key_wrap_aad(ctx: &SegmentContext) -> Vec<u8> {
    [
        b"rampart-store key-wrap v1".as_slice(),
        &ctx.store_id,
        &ctx.name_id,
        &ctx.blob_id,
    ]
    .concat()
}

fn shard_path(name_id: &[u8; 32], blob_id: &[u8; 16], cloud: usize) -> Path {
    blob_prefix(name_id, blob_id).join(format!("s{cloud}"))
}

fn manifest_path(name_id: &[u8; 32], blob_id: &[u8; 16]) -> Path {
    blob_prefix(name_id, blob_id).join("manifest")
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn one_line(e: &dyn fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn join_failures(f: &[(String, String)]) -> String {
    if f.is_empty() {
        return "no errors reported".into();
    }
    f.iter()
        .map(|(c, r)| format!("{c}: {r}"))
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------
// Metadata quorum reads.

#[derive(Clone)]
enum MetaAnswer {
    Unreachable(String),
    Absent,
    Invalid(String),
    Valid(Box<Metadata>, Bytes),
}

struct CloudMeta {
    answer: Option<MetaAnswer>,
    token: Option<CasToken>,
}

struct MetaView {
    clouds: Vec<CloudMeta>,
    /// Index of a cloud holding the highest valid version.
    best: Option<usize>,
}

impl MetaView {
    fn best(&self) -> Option<(&Metadata, &Bytes)> {
        match self.clouds[self.best?].answer.as_ref()? {
            MetaAnswer::Valid(m, b) => Some((m, b)),
            _ => None,
        }
    }

    /// Per-cloud reasons for answers that fail verification.
    fn invalid_answers(&self, clouds: &[Arc<Cloud>]) -> Vec<(String, String)> {
        self.clouds
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match &c.answer {
                Some(MetaAnswer::Invalid(r)) => Some((clouds[i].name.clone(), r.clone())),
                _ => None,
            })
            .collect()
    }

    /// The newest valid metadata for a read, or why there is none (DepSky's read rule,
    /// ADR 0006). A cloud without metadata proves nothing: a write completes at `n − f`
    /// clouds, so up to `f` correct clouds may lack it beside `f` faulty ones, and any
    /// `n − f` answers include a correct cloud holding every completed write. Only answers
    /// that fail verification are evidence of faults: more than `f` of them mean the fault
    /// bound is exceeded. With no valid metadata and at most `f` invalid answers the key
    /// does not exist.
    fn require(&self, key: &str, clouds: &[Arc<Cloud>], f: usize) -> Result<&Metadata, StoreError> {
        let invalid = self.invalid_answers(clouds);
        match self.best() {
            Some((m, _)) if invalid.len() <= f => Ok(m),
            Some(_) => Err(StoreError::TooManyFaulty {
                key: key.to_owned(),
                faulty: invalid.len(),
                f,
                detail: join_failures(&invalid),
            }),
            None if invalid.len() <= f => Err(StoreError::NotFound {
                key: key.to_owned(),
            }),
            None => Err(StoreError::NoValidMetadata {
                key: key.to_owned(),
                detail: join_failures(&invalid),
            }),
        }
    }
}

/// Whether metadata that fails verification sits beside valid metadata: then whether more
/// than `f` clouds misbehave depends on the answers not yet heard.
fn answers_disagree(clouds: &[CloudMeta]) -> bool {
    let is =
        |want: fn(&MetaAnswer) -> bool| clouds.iter().any(|c| c.answer.as_ref().is_some_and(want));
    is(|a| matches!(a, MetaAnswer::Valid(..))) && is(|a| matches!(a, MetaAnswer::Invalid(_)))
}

/// A version of `other` that differs from `best`'s version with the same counter: two
/// different signed entries claim one counter (writers that share a key raced).
fn divergent_version(best: &Metadata, other: &Metadata) -> Option<Version> {
    other.entries.iter().map(|e| e.version).find(|v| {
        best.entries
            .iter()
            .any(|b| b.version.counter == v.counter && b.version != *v)
    })
}

#[derive(Clone, Copy)]
enum Wait {
    /// Return at `n − f` answers, after a grace period for the rest.
    Quorum(Duration),
    /// Return at `n − f` answers if they agree; if valid metadata sits beside invalid
    /// metadata, hear the remaining clouds (within `dissent_grace`) first, so that whether
    /// more than `f` clouds misbehave does not depend on which answered first.
    Read,
    /// Wait for every cloud (up to the op timeout).
    All,
}

/// Tasks running on several clouds, collected as they finish. Whatever has not finished
/// when the caller has its quorum becomes [`Background`] work.
struct Quorum<T> {
    tx: mpsc::Sender<(usize, Result<T, String>)>,
    rx: mpsc::Receiver<(usize, Result<T, String>)>,
    handles: Vec<Option<Task>>,
    outstanding: usize,
}

impl<T: Send + 'static> Quorum<T> {
    fn new(n: usize) -> Self {
        // Each task sends exactly once, so capacity n never blocks.
        let (tx, rx) = mpsc::channel(n.max(1));
        Self {
            tx,
            rx,
            handles: (0..n).map(|_| None).collect(),
            outstanding: 0,
        }
    }

    fn spawn<F>(&mut self, i: usize, cloud: &str, what: &'static str, fut: F)
    where
        F: std::future::Future<Output = Result<T, String>> + Send + 'static,
    {
        let tx = self.tx.clone();
        let h = tokio::spawn(async move {
            let r = fut.await;
            let summary = r.as_ref().map(|_| ()).map_err(Clone::clone);
            let _ = tx.send((i, r)).await;
            summary
        });
        self.handles[i] = Some((cloud.to_owned(), what, h));
        self.outstanding += 1;
    }

    /// The next task to finish, or `None` when all have.
    async fn next(&mut self) -> Option<(usize, Result<T, String>)> {
        if self.outstanding == 0 {
            return None;
        }
        let r = self.rx.recv().await?;
        self.handles[r.0] = None;
        self.outstanding -= 1;
        Some(r)
    }

    /// A finished task's result, if one is ready now.
    fn try_next(&mut self) -> Option<(usize, Result<T, String>)> {
        let r = self.rx.try_recv().ok()?;
        self.handles[r.0] = None;
        self.outstanding -= 1;
        Some(r)
    }

    fn into_background(self) -> Background {
        let mut bg = Background::default();
        for (cloud, what, h) in self.handles.into_iter().flatten() {
            bg.push(&cloud, what, h);
        }
        bg
    }
}

/// Streams the shards of one blob to some clouds through bounded queues.
struct Uploads {
    clouds: Vec<Arc<Cloud>>,
    senders: Vec<Option<mpsc::Sender<Bytes>>>,
    aborts: Vec<Arc<AtomicBool>>,
    tasks: Quorum<()>,
    failures: Vec<(String, String)>,
}

impl Uploads {
    /// Starts an upload of `shard_path(i)` for every cloud `i` in `which`.
    fn start(
        client: &CloudOfClouds,
        name_id: &[u8; 32],
        blob_id: &[u8; 16],
        which: &[usize],
    ) -> Self {
        let n = client.n();
        let tuning = &client.inner.tuning;
        let mut up = Self {
            clouds: client.inner.clouds.clone(),
            senders: (0..n).map(|_| None).collect(),
            aborts: (0..n).map(|_| Arc::new(AtomicBool::new(false))).collect(),
            tasks: Quorum::new(n),
            failures: Vec::new(),
        };
        for &i in which {
            let cloud = client.inner.clouds[i].clone();
            let (tx, mut rx) = mpsc::channel::<Bytes>(tuning.write_queue_segments.max(1));
            let abort = up.aborts[i].clone();
            let store = cloud.store().clone();
            let path = shard_path(name_id, blob_id, i);
            let (cap, conc) = (tuning.upload_part_bytes, tuning.upload_concurrency.max(1));
            let task = async move {
                let mut w = BufWriter::with_capacity(store, path, cap).with_max_concurrency(conc);
                let mut res: Result<(), String> = Ok(());
                while let Some(b) = rx.recv().await {
                    if let Err(e) = w.put(b).await {
                        res = Err(one_line(&e));
                        break;
                    }
                }
                if res.is_ok() && abort.load(Ordering::SeqCst) {
                    res = Err("dropped from the write".into());
                }
                if res.is_err() {
                    // Abort leaves nothing visible: multipart uploads are discarded.
                    let _ = w.abort().await;
                    return res;
                }
                w.shutdown().await.map_err(|e| one_line(&e))
            };
            up.tasks.spawn(i, &cloud.name, "data upload", task);
            up.senders[i] = Some(tx);
        }
        up
    }

    fn live(&self) -> usize {
        self.senders.iter().filter(|s| s.is_some()).count()
    }

    fn cancel(&mut self, i: usize, why: &str) {
        if self.senders[i].take().is_some() {
            tracing::warn!(cloud = %self.clouds[i].name, "dropping cloud from write: {why}");
            self.failures
                .push((self.clouds[i].name.clone(), why.to_owned()));
        }
        self.aborts[i].store(true, Ordering::SeqCst);
    }

    fn cancel_all(&mut self, why: &str) {
        for i in 0..self.senders.len() {
            self.cancel(i, why);
        }
    }

    /// Queues `shard` for cloud `i`. A cloud whose queue stays full for `timeout` is
    /// dropped if more than `keep` clouds are still live; otherwise this waits.
    async fn send(&mut self, i: usize, shard: Bytes, timeout: Duration, keep: usize) {
        let mut shard = Some(shard);
        while let (Some(tx), Some(s)) = (self.senders[i].as_ref(), shard.take()) {
            match tx.send_timeout(s, timeout).await {
                Ok(()) => return,
                Err(SendTimeoutError::Closed(_)) => {
                    let why = self.reason(i).unwrap_or_else(|| "upload failed".into());
                    self.cancel(i, &why);
                }
                Err(SendTimeoutError::Timeout(s)) => {
                    if self.live() > keep {
                        self.cancel(i, "too slow");
                    }
                    shard = Some(s);
                }
            }
        }
    }

    /// The failure of cloud `i`'s task, if it has finished with one.
    fn reason(&mut self, i: usize) -> Option<String> {
        while let Some((j, r)) = self.tasks.try_next() {
            if let Err(e) = r {
                self.failures.push((self.clouds[j].name.clone(), e));
            }
        }
        self.failures
            .iter()
            .rev()
            .find(|(c, _)| *c == self.clouds[i].name)
            .map(|(_, r)| r.clone())
    }

    /// Closes the queues and waits until `need` uploads completed; the rest continue as
    /// background work.
    async fn finish(
        mut self,
        op: &'static str,
        need: usize,
        n: usize,
    ) -> Result<Background, StoreError> {
        for s in &mut self.senders {
            *s = None;
        }
        let mut ok = 0;
        while ok < need {
            match self.tasks.next().await {
                Some((_, Ok(()))) => ok += 1,
                Some((j, Err(e))) => self.failures.push((self.clouds[j].name.clone(), e)),
                None => break,
            }
        }
        if ok < need {
            self.failures.dedup();
            return Err(StoreError::QuorumUnavailable {
                op,
                answered: ok,
                needed: need,
                n,
                detail: join_failures(&self.failures),
            });
        }
        Ok(self.tasks.into_background())
    }
}

impl CloudOfClouds {
    /// Opens the store described by a loaded config.
    pub fn open(cfg: StoreConfig) -> Result<Self, StoreError> {
        let clouds = cfg
            .clouds
            .iter()
            .enumerate()
            .map(|(i, c)| Cloud::from_config(i, c))
            .collect::<Result<Vec<_>, _>>()?;
        let audit = match &cfg.audit {
            Some(a) => Some(
                Arc::new(LogAuditSink::open(&a.log_dir).map_err(StoreError::Audit)?)
                    as Arc<dyn AuditSink>,
            ),
            None => None,
        };
        let store = Self::from_parts(
            cfg.store_id,
            cfg.protocol,
            cfg.segment_size,
            cfg.secrets,
            cfg.trusted_writers,
            clouds,
            Tuning::default(),
        )?;
        Ok(store.with_audit(audit))
    }

    /// Records every `put`, `get` and `delete` (and its outcome) to `sink`.
    pub fn with_audit(self, sink: Option<Arc<dyn AuditSink>>) -> Self {
        let inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_audit must be called before the client is cloned"));
        Self {
            inner: Arc::new(Inner {
                audit: sink,
                ..inner
            }),
        }
    }

    /// Appends one event to the audit log, if one is configured. Runs the (fsyncing)
    /// append on a blocking thread.
    async fn audit<T>(
        &self,
        action: &'static str,
        key: &str,
        result: Result<T, StoreError>,
        version: impl Fn(&T) -> Version,
    ) -> Result<T, StoreError> {
        let Some(sink) = self.inner.audit.clone() else {
            return result;
        };
        let actor = format!(
            "ed25519:{}",
            &self.inner.signing_key.verifying_key().to_string()[..16]
        );
        let (outcome, version) = match &result {
            Ok(v) => (Outcome::Success, Some(version(v).to_string())),
            Err(_) => (Outcome::Failed, None),
        };
        let key = key.to_owned();
        let recorded = tokio::task::spawn_blocking(move || {
            sink.record(&AuditEvent {
                actor_key_id: &actor,
                action,
                object: &key,
                version: version.as_deref(),
                outcome,
            })
        })
        .await
        .map_err(|e| StoreError::Io {
            context: "audit task".into(),
            source: std::io::Error::other(e),
        })?;
        recorded.map_err(StoreError::Audit)?;
        result
    }

    /// Builds a client from parts (tests use this with in-memory or faulty clouds).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        store_id: [u8; 16],
        protocol: Protocol,
        segment_size: u32,
        secrets: Secrets,
        mut trusted: Vec<VerifyingKey>,
        clouds: Vec<Cloud>,
        tuning: Tuning,
    ) -> Result<Self, StoreError> {
        let n = clouds.len();
        crate::config::check_clouds(n, protocol).map_err(|reason| StoreError::CloudConfig {
            cloud: "*".into(),
            reason,
        })?;
        if segment_size == 0 || segment_size > crate::meta::SEGMENT_BYTES_MAX {
            return Err(StoreError::TooLarge {
                what: "segment size",
                limit: crate::meta::SEGMENT_BYTES_MAX as u64,
            });
        }
        for (i, c) in clouds.iter().enumerate() {
            assert_eq!(c.index, i, "cloud indexes must match their position");
        }
        let me = secrets.signing_key.verifying_key();
        if !trusted.contains(&me) {
            trusted.push(me);
        }
        let name_seal = SealingKey::new(&secrets.name_seal_key());
        let key_wrap = SealingKey::new(&secrets.key_wrap_key());
        Ok(Self {
            inner: Arc::new(Inner {
                f: (n - 1) / 3,
                clouds: clouds.into_iter().map(Arc::new).collect(),
                store_id,
                protocol,
                segment_size,
                name_id_key: secrets.name_id_key(),
                content_key: secrets.content_digest_key(),
                signing_key: secrets.signing_key,
                trusted,
                name_seal,
                key_wrap,
                seen: Default::default(),
                tuning,
                audit: None,
            }),
        })
    }

    /// Number of clouds.
    pub fn n(&self) -> usize {
        self.inner.clouds.len()
    }

    /// Faulty clouds tolerated.
    pub fn f(&self) -> usize {
        self.inner.f
    }

    /// The clouds, in shard order.
    pub fn clouds(&self) -> &[Arc<Cloud>] {
        &self.inner.clouds
    }

    fn quorum(&self) -> usize {
        self.n() - self.f()
    }

    fn k(&self, protocol: Protocol) -> usize {
        match protocol {
            Protocol::Replicated => 1,
            Protocol::Confidential | Protocol::Sealed => self.f() + 1,
        }
    }

    fn name_id(&self, key: &str) -> Result<[u8; 32], StoreError> {
        if key.is_empty() {
            return Err(StoreError::InvalidKey { reason: "empty" });
        }
        if key.len() > KEY_BYTES_MAX {
            return Err(StoreError::InvalidKey {
                reason: "longer than 1024 bytes",
            });
        }
        if key.chars().any(char::is_control) {
            return Err(StoreError::InvalidKey {
                reason: "contains control characters",
            });
        }
        Ok(Digest::keyed(&self.inner.name_id_key, key.as_bytes()).0)
    }

    /// A version entry by this writer; `push_version` assigns its counter.
    fn new_entry(&self, key: &str, name_id: &[u8; 32], object: Option<ObjectRef>) -> VersionEntry {
        let mut entry = VersionEntry {
            version: Version {
                counter: 0,
                writer: self.inner.signing_key.verifying_key().to_bytes(),
                tag: [0; TAG_LEN],
            },
            created_ms: now_ms(),
            encrypted_name: self
                .inner
                .name_seal
                .seal(&self.name_aad(name_id), key.as_bytes()),
            object,
        };
        entry.seal_tag();
        entry
    }

    fn name_aad(&self, name_id: &[u8; 32]) -> Vec<u8> {
        [&self.inner.store_id[..], &name_id[..]].concat()
    }

    /// Seals attributes so clouds learn nothing from them (they are signed with the
    /// metadata too). The associated data binds the store, the key and the purpose, so a
    /// sealed name can never pass for attributes. Empty attributes stay empty.
    fn seal_attrs(&self, name_id: &[u8; 32], attrs: &[u8]) -> Vec<u8> {
        if attrs.is_empty() {
            return Vec::new();
        }
        self.inner.name_seal.seal(&self.attrs_aad(name_id), attrs)
    }

    fn attrs_aad(&self, name_id: &[u8; 32]) -> Vec<u8> {
        [&self.name_aad(name_id)[..], b"/attrs"].concat()
    }

    /// Opens sealed attributes of `key`; attributes that do not open (a trusted writer
    /// with another namespace secret) read as empty.
    fn open_attrs(&self, key: &str, sealed: &[u8]) -> Vec<u8> {
        if sealed.is_empty() {
            return Vec::new();
        }
        let Ok(name_id) = self.name_id(key) else {
            return Vec::new();
        };
        let aad = self.attrs_aad(&name_id);
        self.inner.name_seal.open(&aad, sealed).unwrap_or_else(|_| {
            tracing::warn!(key, "attributes do not open under this namespace key");
            Vec::new()
        })
    }

    fn decrypt_name(&self, name_id: &[u8; 32], entry: &VersionEntry) -> Option<String> {
        let plain = self
            .inner
            .name_seal
            .open(&self.name_aad(name_id), &entry.encrypted_name)
            .ok()?;
        let name = String::from_utf8(plain).ok()?;
        // The name must hash to the id it is filed under, or a writer lied.
        (self.name_id(&name).ok()? == *name_id).then_some(name)
    }

    /// Records that `version` of a key was read or written, and with a single cloud
    /// (where no quorum can outvote it) refuses a version older than one already seen.
    /// With `n ≥ 4` the quorum protocol gives the guarantees and reads may legitimately
    /// go back while a write is in progress (regular semantics), so nothing is checked.
    fn saw(&self, key: &str, name_id: &[u8; 32], version: Version) -> Result<(), StoreError> {
        if self.f() > 0 {
            return Ok(());
        }
        let mut seen = self.inner.seen.lock().unwrap_or_else(|e| e.into_inner());
        let full = seen.len() >= SEEN_VERSIONS_MAX;
        match seen.get_mut(name_id) {
            Some(v) if *v > version => Err(StoreError::RolledBack {
                key: key.to_owned(),
                got: Box::new(version),
                seen: Box::new(*v),
            }),
            Some(v) => {
                *v = version;
                Ok(())
            }
            None if !full => {
                seen.insert(*name_id, version);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn ranked(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.n()).collect();
        order.sort_by_key(|&i| self.inner.clouds[i].rank());
        order
    }

    // -----------------------------------------------------------------------------------
    // Metadata.

    async fn read_meta(&self, name_id: &[u8; 32], wait: Wait) -> Result<MetaView, StoreError> {
        let path = meta_path(name_id);
        let timeout = self.inner.tuning.op_timeout;
        let mut futs: FuturesUnordered<_> = self
            .inner
            .clouds
            .iter()
            .map(|c| {
                let c = c.clone();
                let path = path.clone();
                async move {
                    let t0 = Instant::now();
                    let r = tokio::time::timeout(timeout, c.read_versioned(&path, META_BYTES_MAX))
                        .await;
                    c.observe(t0.elapsed());
                    (c.index, r)
                }
            })
            .collect();
        let mut clouds: Vec<CloudMeta> = (0..self.n())
            .map(|_| CloudMeta {
                answer: None,
                token: None,
            })
            .collect();
        let mut answered = 0;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, futs.next()).await {
                    Ok(x) => x,
                    Err(_) => break,
                },
                None => futs.next().await,
            };
            let Some((i, r)) = next else { break };
            let (answer, token) = match r {
                Err(_) => (MetaAnswer::Unreachable("timed out".into()), None),
                Ok(Err(CloudError::TooLarge { len })) => (
                    MetaAnswer::Invalid(format!("metadata of {len} bytes exceeds the limit")),
                    None,
                ),
                Ok(Err(e)) => (MetaAnswer::Unreachable(one_line(&e)), None),
                Ok(Ok((None, tok))) => (MetaAnswer::Absent, Some(tok)),
                Ok(Ok((Some(bytes), tok))) => {
                    match Metadata::decode_verified(
                        &bytes,
                        &self.inner.store_id,
                        name_id,
                        &self.inner.trusted,
                    ) {
                        Ok(m) => (MetaAnswer::Valid(Box::new(m), bytes), Some(tok)),
                        Err(e) => {
                            self.inner.clouds[i].strike();
                            (MetaAnswer::Invalid(one_line(&e)), Some(tok))
                        }
                    }
                }
            };
            if !matches!(answer, MetaAnswer::Unreachable(_)) {
                answered += 1;
            }
            clouds[i] = CloudMeta {
                answer: Some(answer),
                token,
            };
            if answered >= self.quorum() && deadline.is_none() {
                let grace = match wait {
                    Wait::Quorum(grace) => Some(grace),
                    Wait::Read if answers_disagree(&clouds) => {
                        Some(self.inner.tuning.dissent_grace)
                    }
                    Wait::Read => Some(Duration::ZERO),
                    Wait::All => None,
                };
                match grace {
                    Some(g) if g.is_zero() => break,
                    Some(g) => deadline = Some(tokio::time::Instant::now() + g),
                    None => {}
                }
            }
        }
        if answered < self.quorum() {
            let failures: Vec<(String, String)> = clouds
                .iter()
                .enumerate()
                .filter_map(|(i, c)| match &c.answer {
                    Some(MetaAnswer::Unreachable(r)) => {
                        Some((self.inner.clouds[i].name.clone(), r.clone()))
                    }
                    None => Some((self.inner.clouds[i].name.clone(), "no answer".into())),
                    _ => None,
                })
                .collect();
            return Err(StoreError::QuorumUnavailable {
                op: "reading metadata",
                answered,
                needed: self.quorum(),
                n: self.n(),
                detail: join_failures(&failures),
            });
        }
        let best = clouds
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match &c.answer {
                Some(MetaAnswer::Valid(m, _)) => Some((m.latest().version, i)),
                _ => None,
            })
            .max()
            .map(|(_, i)| i);
        Ok(MetaView { clouds, best })
    }

    /// Compare-and-swaps new metadata onto every cloud, built by `mutate` from the newest
    /// valid metadata; returns once `n − f` clouds took it.
    async fn update_meta<F>(
        &self,
        key: &str,
        name_id: &[u8; 32],
        mutate: F,
    ) -> Result<(Version, Background), StoreError>
    where
        F: Fn(Option<&Metadata>) -> Result<Vec<VersionEntry>, StoreError>,
    {
        let path = meta_path(name_id);
        let tuning = &self.inner.tuning;
        for attempt in 1..=tuning.cas_attempts_max {
            let view = self
                .read_meta(name_id, Wait::Quorum(tuning.quorum_grace))
                .await?;
            if let Some((m, _)) = view.best() {
                // Never build on a rolled-back version (single cloud only).
                self.saw(key, name_id, m.latest().version)?;
            }
            // More than f answers that fail verification (e.g. metadata signed by a writer
            // key this configuration no longer trusts) may hide newer versions: building on
            // what verifies, or on nothing, would restart or lower the version counter and
            // lose those writes. Refuse, as reads do.
            let invalid = view.invalid_answers(&self.inner.clouds);
            if invalid.len() > self.f() {
                return Err(match view.best() {
                    Some(_) => StoreError::TooManyFaulty {
                        key: key.to_owned(),
                        faulty: invalid.len(),
                        f: self.f(),
                        detail: join_failures(&invalid),
                    },
                    None => StoreError::NoValidMetadata {
                        key: key.to_owned(),
                        detail: join_failures(&invalid),
                    },
                });
            }
            let entries = mutate(view.best().map(|(m, _)| m))?;
            let version = entries[0].version;
            let meta = Metadata {
                store_id: self.inner.store_id,
                name_id: *name_id,
                entries,
                signer: self.inner.signing_key.verifying_key(),
            };
            let bytes = Bytes::from(meta.sign(&self.inner.signing_key));

            // Every cloud is asked, and every one that swaps counts towards the quorum:
            // those that answered the read round with their token, the others (late or
            // unreachable then) with a fresh read (ADR 0006). Whatever has not finished
            // once `n − f` swapped continues in the background.
            let mut pending = Quorum::new(self.n());
            let timeout = self.inner.tuning.op_timeout;
            for (i, cm) in view.clouds.iter().enumerate() {
                let cloud = self.inner.clouds[i].clone();
                let (path, bytes) = (path.clone(), bytes.clone());
                match cm.token.clone() {
                    Some(tok) => pending.spawn(i, &cloud.name.clone(), "metadata", async move {
                        match tokio::time::timeout(
                            timeout,
                            cloud.compare_and_swap(&path, bytes, &tok),
                        )
                        .await
                        {
                            Ok(Ok(o)) => Ok(o),
                            Ok(Err(e)) => Err(one_line(&e)),
                            Err(_) => Err("timed out".to_string()),
                        }
                    }),
                    None => {
                        let this = self.clone();
                        let name_id = *name_id;
                        pending.spawn(i, &cloud.name, "metadata", async move {
                            this.late_meta_write(i, &name_id, bytes, version).await
                        });
                    }
                }
            }
            let mut done = 0;
            let mut failures = Vec::new();
            let mut conflicts = 0;
            // Swaps of the read round still running.
            let mut round = view.clouds.iter().filter(|c| c.token.is_some()).count();
            let mut deadline = None;
            // Stop as soon as the quorum is reached or can no longer be. After a conflict
            // (another writer, or a cloud that claims one), once only late clouds remain,
            // wait for them at most `dissent_grace`, then retry: a slow cloud can still
            // complete the quorum, a hanging one does not hold the retry up.
            while done < self.quorum() && failures.len() + conflicts <= self.f() {
                if conflicts > 0 && round == 0 && deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + tuning.dissent_grace);
                }
                let next = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, pending.next()).await {
                        Ok(x) => x,
                        Err(_) => break,
                    },
                    None => pending.next().await,
                };
                let Some((i, r)) = next else {
                    break;
                };
                if view.clouds[i].token.is_some() {
                    round -= 1;
                }
                match r {
                    Ok(CasOutcome::Done) => done += 1,
                    Ok(CasOutcome::Conflict) => conflicts += 1,
                    Err(e) => failures.push((self.inner.clouds[i].name.clone(), e)),
                }
            }
            if done >= self.quorum() {
                let background = pending.into_background();
                self.saw(key, name_id, version)?;
                return Ok((version, background));
            }
            // Swaps still running may yet land; they are harmless (a later write builds on
            // the highest version) and finish in the background.
            drop(pending.into_background());
            if failures.len() > self.f() {
                return Err(StoreError::QuorumUnavailable {
                    op: "writing metadata",
                    answered: done + conflicts,
                    needed: self.quorum(),
                    n: self.n(),
                    detail: join_failures(&failures),
                });
            }
            tracing::debug!(
                key,
                attempt,
                done,
                conflicts,
                "metadata compare-and-swap lost; retrying"
            );
            // Randomised exponential backoff so that racing writers spread out.
            let base = 5u64 << attempt.min(8);
            let jitter = OsRng.next_u64() % base;
            tokio::time::sleep(Duration::from_millis(base + jitter)).await;
        }
        Err(StoreError::Conflict {
            key: key.to_owned(),
            attempts: tuning.cas_attempts_max,
        })
    }

    /// Swaps `version` onto cloud `i`, which did not answer the read round, from a fresh
    /// read: `Done` if it now holds `version`, `Conflict` if it holds a newer one.
    async fn late_meta_write(
        &self,
        i: usize,
        name_id: &[u8; 32],
        bytes: Bytes,
        version: Version,
    ) -> Result<CasOutcome, String> {
        let cloud = &self.inner.clouds[i];
        let path = meta_path(name_id);
        let work = async {
            for _ in 0..3 {
                let (cur, tok) = cloud
                    .read_versioned(&path, META_BYTES_MAX)
                    .await
                    .map_err(|e| one_line(&e))?;
                let held = cur.and_then(|cur| {
                    Metadata::decode_verified(
                        &cur,
                        &self.inner.store_id,
                        name_id,
                        &self.inner.trusted,
                    )
                    .ok()
                });
                match held.map(|m| m.latest().version) {
                    Some(v) if v == version => return Ok(CasOutcome::Done),
                    Some(v) if v > version => return Ok(CasOutcome::Conflict),
                    _ => {}
                }
                match cloud
                    .compare_and_swap(&path, bytes.clone(), &tok)
                    .await
                    .map_err(|e| one_line(&e))?
                {
                    CasOutcome::Done => return Ok(CasOutcome::Done),
                    CasOutcome::Conflict => continue,
                }
            }
            Ok(CasOutcome::Conflict)
        };
        tokio::time::timeout(self.inner.tuning.op_timeout * 2, work)
            .await
            .map_err(|_| "timed out".to_string())?
    }

    // -----------------------------------------------------------------------------------
    // Put.

    /// Stores everything `input` yields under `key` as a new version.
    ///
    /// Memory stays bounded whatever the input size (see [`Tuning`]). On any error
    /// nothing becomes visible: uploads are aborted and no metadata is written.
    pub async fn put<R: AsyncRead + Unpin + Send>(
        &self,
        key: &str,
        input: R,
        attrs: Vec<u8>,
        progress: Option<Progress>,
    ) -> Result<PutReceipt, StoreError> {
        if attrs.len() > ATTRS_PLAIN_BYTES_MAX {
            return Err(StoreError::TooLarge {
                what: "attributes",
                limit: ATTRS_PLAIN_BYTES_MAX as u64,
            });
        }
        let r = self.put_unaudited(key, input, || Ok(attrs), progress).await;
        self.audit("put", key, r, |r| r.version).await
    }

    /// Like [`put`](Self::put), but the attributes are computed by `attrs` once the
    /// whole input has been read and stored, before the metadata is written (for example
    /// from a digest of the content). If `attrs` fails, nothing becomes visible.
    pub async fn put_with_attrs_fn<R, A>(
        &self,
        key: &str,
        input: R,
        attrs: A,
        progress: Option<Progress>,
    ) -> Result<PutReceipt, StoreError>
    where
        R: AsyncRead + Unpin + Send,
        A: FnOnce() -> Result<Vec<u8>, StoreError> + Send,
    {
        let r = self.put_unaudited(key, input, attrs, progress).await;
        self.audit("put", key, r, |r| r.version).await
    }

    async fn put_unaudited<R, A>(
        &self,
        key: &str,
        input: R,
        attrs: A,
        progress: Option<Progress>,
    ) -> Result<PutReceipt, StoreError>
    where
        R: AsyncRead + Unpin + Send,
        A: FnOnce() -> Result<Vec<u8>, StoreError> + Send,
    {
        let name_id = self.name_id(key)?;
        let protocol = self.inner.protocol;
        let (n, k) = (self.n(), self.k(protocol));
        let mut blob_id = [0u8; 16];
        OsRng.fill_bytes(&mut blob_id);
        let ctx = SegmentContext {
            store_id: self.inner.store_id,
            name_id,
            blob_id,
        };

        let all: Vec<usize> = (0..n).collect();
        let mut uploads = Uploads::start(self, &name_id, &blob_id, &all);
        let result = self
            .put_data(&mut uploads, input, protocol, k, ctx, progress)
            .await;
        let (size, content_digest, share_digests, shard_digests) = match result {
            Ok((size, plain, shares, shards)) => {
                (size, self.content_digest(&blob_id, &plain), shares, shards)
            }
            Err(e) => {
                uploads.cancel_all("the write failed");
                return Err(e);
            }
        };
        let attrs = match attrs() {
            Ok(a) if a.len() <= ATTRS_PLAIN_BYTES_MAX => self.seal_attrs(&name_id, &a),
            Ok(_) => {
                uploads.cancel_all("the attributes are too large");
                return Err(StoreError::TooLarge {
                    what: "attributes",
                    limit: ATTRS_PLAIN_BYTES_MAX as u64,
                });
            }
            Err(e) => {
                uploads.cancel_all("the attributes were refused");
                return Err(e);
            }
        };
        let mut background = uploads.finish("uploading data", self.quorum(), n).await?;

        let manifest = Manifest {
            blob_id,
            protocol,
            size,
            segment_size: self.inner.segment_size,
            k: k as u8,
            n: n as u8,
            share_digests,
            shard_digests,
        };
        let encoded = manifest.encode();
        assert!(encoded.len() <= MANIFEST_BYTES_MAX);
        let manifest_digest = Digest::of(&encoded);
        let manifest_inline = if encoded.len() <= MANIFEST_INLINE_MAX {
            Some(encoded)
        } else {
            background.extend(
                self.put_everywhere(
                    manifest_path(&name_id, &blob_id),
                    Bytes::from(encoded),
                    "manifest",
                )
                .await?,
            );
            None
        };

        let entry_template = self.new_entry(
            key,
            &name_id,
            Some(ObjectRef {
                protocol,
                blob_id,
                size,
                content_digest,
                manifest_digest,
                manifest_inline,
                attrs,
            }),
        );
        let (version, bg) = self
            .update_meta(key, &name_id, |base| {
                Ok(push_version(base, entry_template.clone()))
            })
            .await?;
        background.extend(bg);
        tracing::info!(key, %version, size, "put complete");
        Ok(PutReceipt {
            version,
            size,
            background,
        })
    }

    /// Streams the input through the pipeline into the uploaders. Returns the size, the
    /// content digest and the digests for the manifest.
    async fn put_data<R: AsyncRead + Unpin + Send>(
        &self,
        uploads: &mut Uploads,
        input: R,
        protocol: Protocol,
        k: usize,
        ctx: SegmentContext,
        progress: Option<Progress>,
    ) -> Result<(u64, Digest, Vec<Digest>, Vec<Digest>), StoreError> {
        let n = self.n();
        let (seg_key, share_digests) = match protocol {
            Protocol::Confidential => {
                let key = SegmentKey::generate();
                let shares =
                    shamir::split(key.danger_key_bytes(), k, n).map_err(StoreError::Crypto)?;
                let digests: Vec<Digest> =
                    shares.iter().map(|s| Digest::of(s.as_bytes())).collect();
                // The header of each cloud's blob is its key share.
                let headers: Vec<Bytes> = shares
                    .iter()
                    .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                    .collect();
                self.dispatch(uploads, headers).await?;
                (Some(key), digests)
            }
            Protocol::Sealed => {
                let key = SegmentKey::generate();
                let wrapped = Bytes::from(
                    self.inner
                        .key_wrap
                        .seal(&key_wrap_aad(&ctx), key.danger_key_bytes()),
                );
                let digest = Digest::of(&wrapped);
                // The header of each cloud's blob is the wrapped key.
                self.dispatch(uploads, vec![wrapped; n]).await?;
                (Some(key), vec![digest; n])
            }
            Protocol::Replicated => (None, Vec::new()),
        };
        let codec = Arc::new(Codec::new(protocol, k, n, seg_key, ctx)?);
        let mut reader = SegmentReader::new(input, self.inner.segment_size as usize);
        let mut hasher = Hasher::new();
        let mut size = 0u64;
        let mut shard_digests = Vec::new();
        let mut in_flight: std::collections::VecDeque<
            JoinHandle<Result<EncodedSegment, StoreError>>,
        > = Default::default();
        let mut input_done = false;
        loop {
            // Keep two segments encoding while the previous one uploads (2 cores).
            while !input_done && in_flight.len() < 2 {
                match reader.next().await.map_err(StoreError::Input)? {
                    Some((index, last, plain)) => {
                        if index >= SEGMENTS_MAX {
                            return Err(StoreError::TooLarge {
                                what: "object",
                                limit: SEGMENTS_MAX * self.inner.segment_size as u64,
                            });
                        }
                        hasher.update(&plain);
                        size += plain.len() as u64;
                        if let Some(p) = &progress {
                            p(size);
                        }
                        let codec = codec.clone();
                        in_flight.push_back(tokio::task::spawn_blocking(move || {
                            codec.encode(index, last, plain)
                        }));
                        input_done = last;
                    }
                    None => input_done = true,
                }
            }
            let Some(h) = in_flight.pop_front() else {
                break;
            };
            let enc = h.await.map_err(|e| StoreError::Io {
                context: "encoding task".into(),
                source: std::io::Error::other(e),
            })??;
            shard_digests.extend(enc.digests);
            self.dispatch(uploads, enc.shards).await?;
        }
        Ok((size, hasher.finalize(), share_digests, shard_digests))
    }

    /// Hands shard `i` to cloud `i`'s upload, dropping a cloud that stays full for longer
    /// than the straggler timeout as long as `n − f` others remain.
    async fn dispatch(&self, uploads: &mut Uploads, shards: Vec<Bytes>) -> Result<(), StoreError> {
        let timeout = self.inner.tuning.straggler_timeout;
        for (i, shard) in shards.into_iter().enumerate() {
            uploads.send(i, shard, timeout, self.quorum()).await;
        }
        if uploads.live() < self.quorum() {
            return Err(StoreError::QuorumUnavailable {
                op: "uploading data",
                answered: uploads.live(),
                needed: self.quorum(),
                n: self.n(),
                detail: join_failures(&uploads.failures),
            });
        }
        Ok(())
    }

    /// Writes one small immutable object to every cloud; returns after `n − f`.
    async fn put_everywhere(
        &self,
        path: Path,
        bytes: Bytes,
        what: &'static str,
    ) -> Result<Background, StoreError> {
        let mut q = Quorum::new(self.n());
        for c in &self.inner.clouds {
            let (c2, path, bytes) = (c.clone(), path.clone(), bytes.clone());
            let timeout = self.inner.tuning.op_timeout;
            q.spawn(c.index, &c.name, what, async move {
                match tokio::time::timeout(timeout, c2.store().put(&path, PutPayload::from(bytes)))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(one_line(&e)),
                    Err(_) => Err("timed out".into()),
                }
            });
        }
        let mut ok = 0;
        let mut failures = Vec::new();
        while let Some((i, r)) = q.next().await {
            match r {
                Ok(()) => ok += 1,
                Err(e) => failures.push((self.inner.clouds[i].name.clone(), e)),
            }
            if ok >= self.quorum() {
                return Ok(q.into_background());
            }
        }
        Err(StoreError::QuorumUnavailable {
            op: what,
            answered: ok,
            needed: self.quorum(),
            n: self.n(),
            detail: join_failures(&failures),
        })
    }

    // -----------------------------------------------------------------------------------
    // Reads.

    /// The newest version's description, from verified metadata only.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        let name_id = self.name_id(key)?;
        let view = self.read_meta(&name_id, Wait::Read).await?;
        let meta = view.require(key, &self.inner.clouds, self.f())?;
        self.saw(key, &name_id, meta.latest().version)?;
        self.info(key, meta.latest())
            .ok_or_else(|| StoreError::NotFound {
                key: key.to_owned(),
            })
    }

    /// The stored content digest of blob `blob_id`, whose plaintext's BLAKE3 is `plain`:
    /// BLAKE3 keyed under a key derived from the namespace secret, over the random blob id
    /// and `plain`. A cloud holding it cannot confirm a guess of the plaintext, and cannot
    /// link equal plaintexts (each version has a fresh blob id), yet a reader still checks
    /// a whole read against it (collision resistance of BLAKE3 and of its keyed mode).
    fn content_digest(&self, blob_id: &[u8; 16], plain: &Digest) -> Digest {
        let mut m = [0u8; 16 + 32];
        m[..16].copy_from_slice(blob_id);
        m[16..].copy_from_slice(plain.as_bytes());
        Digest::keyed(&self.inner.content_key, &m)
    }

    /// True when a plaintext whose BLAKE3 is `plain` is the content of the version `info`
    /// describes (the keyed comparison `get` makes after a full read; constant time).
    /// `rampart put -r` and `get -r` use it to skip unchanged files without reading them
    /// from the clouds.
    #[must_use]
    pub fn same_content(&self, info: &ObjectInfo, plain: &Digest) -> bool {
        self.content_digest(&info.blob_id, plain) == info.content_digest
    }

    fn info(&self, key: &str, e: &VersionEntry) -> Option<ObjectInfo> {
        let o = e.object.as_ref()?;
        Some(ObjectInfo {
            key: key.to_owned(),
            version: e.version,
            size: o.size,
            created_ms: e.created_ms,
            protocol: o.protocol,
            content_digest: o.content_digest,
            attrs: self.open_attrs(key, &o.attrs),
            blob_id: o.blob_id,
        })
    }

    /// Writes the newest version of `key` (or `range` of it) to `out`.
    ///
    /// Every byte written has been verified against the signed metadata first. If fewer
    /// than `k` clouds return valid data for some segment the call fails; bytes of
    /// earlier, verified segments may already have been written to `out`, so callers
    /// writing files should write to a temporary file and rename on success.
    pub async fn get<W: AsyncWrite + Unpin + Send>(
        &self,
        key: &str,
        out: &mut W,
        range: Option<Range<u64>>,
        progress: Option<Progress>,
    ) -> Result<GetReceipt, StoreError> {
        let r = self.get_unaudited(key, out, range, None, progress).await;
        self.audit("get", key, r, |r| r.version).await
    }

    /// Like [`get`](Self::get), but only if the newest version is still `expected`
    /// (otherwise [`StoreError::VersionChanged`] before any byte is written). Lets a
    /// server send headers from [`head`](Self::head) and then bytes of exactly that
    /// version.
    pub async fn get_version<W: AsyncWrite + Unpin + Send>(
        &self,
        key: &str,
        expected: Version,
        out: &mut W,
        range: Option<Range<u64>>,
        progress: Option<Progress>,
    ) -> Result<GetReceipt, StoreError> {
        let r = self
            .get_unaudited(key, out, range, Some(expected), progress)
            .await;
        self.audit("get", key, r, |r| r.version).await
    }

    async fn get_unaudited<W: AsyncWrite + Unpin + Send>(
        &self,
        key: &str,
        out: &mut W,
        range: Option<Range<u64>>,
        expected: Option<Version>,
        progress: Option<Progress>,
    ) -> Result<GetReceipt, StoreError> {
        let name_id = self.name_id(key)?;
        let view = self.read_meta(&name_id, Wait::Read).await?;
        let entry = view
            .require(key, &self.inner.clouds, self.f())?
            .latest()
            .clone();
        self.saw(key, &name_id, entry.version)?;
        if expected.is_some_and(|v| v != entry.version) {
            return Err(StoreError::VersionChanged {
                key: key.to_owned(),
            });
        }
        let obj = entry.object.clone().ok_or_else(|| StoreError::NotFound {
            key: key.to_owned(),
        })?;
        let manifest = Arc::new(self.load_manifest(&name_id, &obj).await?);
        let full = range.is_none();
        let range = range.unwrap_or(0..obj.size);
        if range.start > range.end || range.end > obj.size {
            return Err(StoreError::TooLarge {
                what: "requested range end",
                limit: obj.size,
            });
        }
        let reader = Arc::new(self.blob_reader(name_id, manifest.clone()).await?);
        let seg = manifest.segment_size as u64;
        let (first, last_seg) = (range.start / seg, range.end.saturating_sub(1) / seg);
        let segments: Vec<u64> = if range.is_empty() && !full {
            vec![]
        } else {
            (first..=last_seg.max(first)).collect()
        };
        let window = self.inner.tuning.read_window_segments.max(1);
        let mut stream = stream::iter(segments)
            .map(|s| {
                let reader = reader.clone();
                async move { reader.read_segment(s).await.map(|p| (s, p)) }
            })
            .buffered(window);
        let mut hasher = full.then(Hasher::new);
        let mut written = 0u64;
        while let Some(item) = stream.next().await {
            let (s, plain) = item?;
            if let Some(h) = hasher.as_mut() {
                h.update(&plain);
            }
            let seg_start = s * seg;
            let from = range.start.saturating_sub(seg_start) as usize;
            let to = ((range.end - seg_start) as usize).min(plain.len());
            if from < to {
                out.write_all(&plain[from..to])
                    .await
                    .map_err(StoreError::Output)?;
                written += (to - from) as u64;
            }
            if let Some(p) = &progress {
                p(written);
            }
        }
        if hasher
            .is_some_and(|h| self.content_digest(&obj.blob_id, &h.finalize()) != obj.content_digest)
        {
            return Err(StoreError::Integrity {
                reason: "content digest of the whole object does not match",
            });
        }
        out.flush().await.map_err(StoreError::Output)?;
        Ok(GetReceipt {
            version: entry.version,
            size: obj.size,
            bytes_written: written,
        })
    }

    async fn load_manifest(
        &self,
        name_id: &[u8; 32],
        obj: &ObjectRef,
    ) -> Result<Manifest, StoreError> {
        let bytes = match &obj.manifest_inline {
            Some(b) => Bytes::from(b.clone()),
            None => {
                // Hedged like shards: a hanging cloud costs a hedge delay, not a timeout.
                let want = obj.manifest_digest;
                let got = self
                    .hedged_fetch(
                        name_id,
                        &obj.blob_id,
                        1,
                        Fetch::Manifest,
                        0,
                        &HashSet::new(),
                        move |_, b| {
                            if Digest::of(b) == want {
                                Ok(Bytes::copy_from_slice(b))
                            } else {
                                Err("manifest digest mismatch")
                            }
                        },
                    )
                    .await
                    .map_err(|e| match e {
                        StoreError::NotEnoughShards { n, detail, .. } => {
                            StoreError::NotEnoughShards {
                                segment: 0,
                                valid: 0,
                                needed: 1,
                                n,
                                detail: format!("no valid manifest: {detail}"),
                            }
                        }
                        e => e,
                    })?;
                got.into_iter()
                    .flatten()
                    .next()
                    .ok_or(StoreError::Integrity {
                        reason: "no verified manifest",
                    })?
            }
        };
        if Digest::of(&bytes) != obj.manifest_digest {
            return Err(StoreError::Integrity {
                reason: "inline manifest does not match its digest",
            });
        }
        let m = Manifest::decode(&bytes)?;
        if m.blob_id != obj.blob_id
            || m.size != obj.size
            || m.protocol != obj.protocol
            || m.n as usize != self.n()
        {
            return Err(StoreError::Integrity {
                reason: "manifest does not match its metadata entry",
            });
        }
        if m.k as usize != self.k(m.protocol) {
            return Err(StoreError::Integrity {
                reason: "manifest coding parameters do not match this store",
            });
        }
        Ok(m)
    }

    /// Prepares to read a blob: for DepSky-CA, fetches `k` verified key shares.
    async fn blob_reader(
        &self,
        name_id: [u8; 32],
        manifest: Arc<Manifest>,
    ) -> Result<BlobReader, StoreError> {
        let key = match manifest.protocol {
            Protocol::Confidential => {
                let shares = self
                    .fetch_shares(&name_id, &manifest, &HashSet::new())
                    .await?;
                let secret = shamir::combine(&shares).map_err(StoreError::Crypto)?;
                Some(SegmentKey::from_bytes(secret))
            }
            Protocol::Sealed => Some(
                self.fetch_wrapped_key(&name_id, &manifest, &HashSet::new())
                    .await?
                    .1,
            ),
            Protocol::Replicated => None,
        };
        let ctx = SegmentContext {
            store_id: self.inner.store_id,
            name_id,
            blob_id: manifest.blob_id,
        };
        let codec = Codec::new(
            manifest.protocol,
            manifest.k as usize,
            manifest.n as usize,
            key,
            ctx,
        )?;
        Ok(BlobReader {
            client: self.clone(),
            name_id,
            manifest,
            codec: Arc::new(codec),
        })
    }

    async fn fetch_shares(
        &self,
        name_id: &[u8; 32],
        m: &Arc<Manifest>,
        exclude: &HashSet<usize>,
    ) -> Result<Vec<Share>, StoreError> {
        let hl = m.header_len() as u64;
        let m2 = m.clone();
        let got = self
            .hedged_fetch(
                name_id,
                &m.blob_id,
                m.k as usize,
                Fetch::Range(0..hl),
                u64::MAX,
                exclude,
                move |i, b| {
                    let share = Share::from_bytes(b).map_err(|_| "malformed key share")?;
                    if Digest::of(share.as_bytes()) != m2.share_digests[i]
                        || share.id() as usize != i + 1
                    {
                        return Err("key share does not match the manifest");
                    }
                    Ok(share)
                },
            )
            .await?;
        Ok(got.into_iter().flatten().collect())
    }

    /// Fetches one verified wrapped data key ([`Protocol::Sealed`]) and unwraps it.
    async fn fetch_wrapped_key(
        &self,
        name_id: &[u8; 32],
        m: &Arc<Manifest>,
        exclude: &HashSet<usize>,
    ) -> Result<(Bytes, SegmentKey), StoreError> {
        let m2 = m.clone();
        let got = self
            .hedged_fetch(
                name_id,
                &m.blob_id,
                1,
                Fetch::Range(0..m.header_len() as u64),
                u64::MAX,
                exclude,
                move |i, b| {
                    if Digest::of(b) != m2.share_digests[i] {
                        return Err("wrapped key does not match the manifest");
                    }
                    Ok(Bytes::copy_from_slice(b))
                },
            )
            .await?;
        let wrapped = got
            .into_iter()
            .flatten()
            .next()
            .ok_or(StoreError::Integrity {
                reason: "no verified wrapped key",
            })?;
        let ctx = SegmentContext {
            store_id: self.inner.store_id,
            name_id: *name_id,
            blob_id: m.blob_id,
        };
        let plain = Zeroizing::new(
            self.inner
                .key_wrap
                .open(&key_wrap_aad(&ctx), &wrapped)
                .map_err(|_| StoreError::Integrity {
                    reason: "the data key does not unwrap under this store's key file",
                })?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != key.len() {
            return Err(StoreError::Integrity {
                reason: "unwrapped data key has the wrong length",
            });
        }
        key.copy_from_slice(&plain);
        Ok((wrapped, SegmentKey::from_bytes(key)))
    }

    /// Reads `what` of a blob from the fastest clouds until `need` of them pass `verify`.
    /// Starts with the `need` best-ranked clouds, adds one more after the hedge delay, and
    /// one more for each failure.
    #[allow(clippy::too_many_arguments)]
    async fn hedged_fetch<T, V>(
        &self,
        name_id: &[u8; 32],
        blob_id: &[u8; 16],
        need: usize,
        what: Fetch,
        segment: u64,
        exclude: &HashSet<usize>,
        verify: V,
    ) -> Result<Vec<Option<T>>, StoreError>
    where
        V: Fn(usize, &[u8]) -> Result<T, &'static str>,
    {
        let n = self.n();
        let order: Vec<usize> = self
            .ranked()
            .into_iter()
            .filter(|i| !exclude.contains(i))
            .collect();
        let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
        let mut ok = 0;
        let mut failures: Vec<(String, String)> = Vec::new();
        let timeout = self.inner.tuning.op_timeout;
        let launch = |i: usize| {
            let c = self.inner.clouds[i].clone();
            let what = what.clone();
            let (name_id, blob_id) = (*name_id, *blob_id);
            async move {
                let t0 = Instant::now();
                let r =
                    match tokio::time::timeout(timeout, what.fetch(&c, &name_id, &blob_id)).await {
                        Ok(r) => r,
                        Err(_) => Err(FetchFailure::Other("timed out".into())),
                    };
                c.observe(t0.elapsed());
                (i, r)
            }
        };
        let mut inflight = FuturesUnordered::new();
        let mut next = 0;
        while next < need.min(order.len()) {
            inflight.push(launch(order[next]));
            next += 1;
        }
        let hedge_delay = {
            let slowest = order
                .iter()
                .take(need)
                .map(|&i| self.inner.clouds[i].latency())
                .max()
                .unwrap_or_default();
            self.inner.tuning.hedge_delay_min.max(slowest * 3)
        };
        let hedge = tokio::time::sleep(hedge_delay);
        tokio::pin!(hedge);
        loop {
            tokio::select! {
                Some((i, r)) = inflight.next(), if !inflight.is_empty() => {
                    let cloud = &self.inner.clouds[i];
                    let res = match r {
                        Err(FetchFailure::Other(e)) => Err(e),
                        Err(FetchFailure::Bad(e)) => {
                            cloud.strike();
                            Err(e)
                        }
                        Ok(bytes) => verify(i, &bytes).map_err(|e| {
                            cloud.strike();
                            e.to_string()
                        }),
                    };
                    match res {
                        Ok(v) => {
                            slots[i] = Some(v);
                            ok += 1;
                            if ok >= need {
                                return Ok(slots);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(cloud = %cloud.name, segment, "read failed: {e}");
                            failures.push((cloud.name.clone(), e));
                            if next < order.len() {
                                inflight.push(launch(order[next]));
                                next += 1;
                            }
                        }
                    }
                }
                () = &mut hedge, if next < order.len() => {
                    // Someone is slow: ask one more cloud, and remember the slowness.
                    for &i in order.iter().take(next) {
                        if slots[i].is_none() && !failures.iter().any(|(c, _)| *c == self.inner.clouds[i].name) {
                            self.inner.clouds[i].observe(hedge_delay * 2);
                        }
                    }
                    inflight.push(launch(order[next]));
                    next += 1;
                    hedge.as_mut().reset(tokio::time::Instant::now() + hedge_delay);
                }
                else => break,
            }
        }
        Err(StoreError::NotEnoughShards {
            segment,
            valid: ok,
            needed: need,
            n,
            detail: join_failures(&failures),
        })
    }

    // -----------------------------------------------------------------------------------
    // Delete, list.

    /// Marks `key` deleted with a signed tombstone version. The data is removed by `gc`;
    /// the tombstone stays as the key's version floor (ADR 0005).
    pub async fn delete(&self, key: &str) -> Result<Version, StoreError> {
        let r = self.delete_unaudited(key).await;
        self.audit("rm", key, r, |v| *v).await
    }

    async fn delete_unaudited(&self, key: &str) -> Result<Version, StoreError> {
        let name_id = self.name_id(key)?;
        let template = self.new_entry(key, &name_id, None);
        let (version, bg) = self
            .update_meta(key, &name_id, |base| match base {
                Some(m) if m.latest().object.is_some() => {
                    Ok(push_version(Some(m), template.clone()))
                }
                _ => Err(StoreError::NotFound {
                    key: key.to_owned(),
                }),
            })
            .await?;
        // Deletion markers are tiny; give stragglers a moment but do not block on them.
        drop(bg);
        Ok(version)
    }

    /// Name ids present in the metadata listings of the clouds, with which clouds listed
    /// each. Needs `n − f` clouds to list successfully (a lying cloud can hide or invent
    /// entries, but a completed write is listed by at least one correct cloud of any
    /// `n − f`).
    async fn listed_names(&self) -> Result<BTreeMap<[u8; 32], Vec<usize>>, StoreError> {
        let prefix = meta_prefix();
        let timeout = self.inner.tuning.op_timeout * 4;
        let results: Vec<(usize, Listing)> =
            futures::future::join_all(self.inner.clouds.iter().map(|c| {
                let prefix = prefix.clone();
                async move {
                    // Parsed while streaming: 32 bytes kept per name, not its path.
                    let work = c
                        .store()
                        .list(Some(&prefix))
                        .try_filter_map(|m| {
                            futures::future::ready(Ok(m
                                .location
                                .filename()
                                .and_then(parse_hex::<32>)))
                        })
                        .try_collect::<Vec<[u8; 32]>>();
                    let r = match tokio::time::timeout(timeout, work).await {
                        Ok(Ok(ids)) => Ok(ids),
                        Ok(Err(e)) => Err(one_line(&e)),
                        Err(_) => Err("timed out".into()),
                    };
                    (c.index, r)
                }
            }))
            .await;
        let mut names: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
        let mut failures = Vec::new();
        let mut answered = 0;
        for (i, r) in results {
            match r {
                Ok(ids) => {
                    answered += 1;
                    for id in ids {
                        // A cloud that lists a name twice still backs it once.
                        let by = names.entry(id).or_default();
                        if by.last() != Some(&i) {
                            by.push(i);
                        }
                    }
                }
                Err(e) => failures.push((self.inner.clouds[i].name.clone(), e)),
            }
        }
        if answered < self.quorum() {
            return Err(StoreError::QuorumUnavailable {
                op: "listing",
                answered,
                needed: self.quorum(),
                n: self.n(),
                detail: join_failures(&failures),
            });
        }
        Ok(names)
    }

    /// Lists live objects whose key starts with `prefix`, sorted by key. Names and sizes
    /// come from verified metadata, never from a cloud's listing alone.
    ///
    /// Only names that at least `f + 1` clouds list cost a metadata read: a completed
    /// write is held by `n − f` clouds, at least `f + 1` of them correct, and each of those
    /// lists it, so a name fewer clouds list is at most an incomplete write (or invented by
    /// a faulty cloud, which would otherwise cost a read of every cloud per name).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, StoreError> {
        let names = self.listed_names().await?;
        let backed = self.f() + 1;
        let ids: Vec<[u8; 32]> = names
            .into_iter()
            .filter(|(_, by)| by.len() >= backed)
            .map(|(id, _)| id)
            .collect();
        let conc = self.inner.tuning.list_concurrency.max(1);
        let mut out: Vec<ListEntry> = stream::iter(ids)
            .map(|id| async move {
                let view = self.read_meta(&id, Wait::Quorum(Duration::ZERO)).await?;
                let Some((meta, _)) = view.best() else {
                    return Ok(None);
                };
                let latest = meta.latest();
                let Some(key) = self.decrypt_name(&id, latest) else {
                    return Ok(None);
                };
                Ok::<_, StoreError>(self.info(&key, latest))
            })
            .buffer_unordered(conc)
            .try_filter_map(
                |x| async move { Ok(x.filter(|e: &ListEntry| e.key.starts_with(prefix))) },
            )
            .try_collect()
            .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    // -----------------------------------------------------------------------------------
    // Inspection, scrub, gc.

    /// Examines every cloud's metadata and shards of `key` (reads all shards).
    pub async fn stat(&self, key: &str) -> Result<KeyReport, StoreError> {
        let name_id = self.name_id(key)?;
        let view = self.read_meta(&name_id, Wait::All).await?;
        if view.best().is_none() {
            // Report why: nothing stored, or nothing that verifies (a diagnostic names
            // even one cloud's garbage).
            let invalid = view.invalid_answers(&self.inner.clouds);
            return Err(if invalid.is_empty() {
                StoreError::NotFound {
                    key: key.to_owned(),
                }
            } else {
                StoreError::NoValidMetadata {
                    key: key.to_owned(),
                    detail: join_failures(&invalid),
                }
            });
        }
        Ok(self.inspect(key, &name_id, &view).await)
    }

    async fn inspect(&self, key: &str, name_id: &[u8; 32], view: &MetaView) -> KeyReport {
        let (meta, _) = view.best().expect("caller checked best");
        let latest = meta.latest();
        let versions = meta
            .entries
            .iter()
            .map(|e| (e.version, e.created_ms, e.object.as_ref().map(|o| o.size)))
            .collect();
        let manifest = match &latest.object {
            Some(o) => Some(self.load_manifest(name_id, o).await.map(Arc::new)),
            None => None,
        };
        let mut clouds = Vec::with_capacity(self.n());
        for (i, cm) in view.clouds.iter().enumerate() {
            let metadata = match &cm.answer {
                None => MetaHealth::Unreachable {
                    reason: "no answer".into(),
                },
                Some(MetaAnswer::Unreachable(r)) => MetaHealth::Unreachable { reason: r.clone() },
                Some(MetaAnswer::Absent) => MetaHealth::Missing,
                Some(MetaAnswer::Invalid(r)) => MetaHealth::Invalid { reason: r.clone() },
                Some(MetaAnswer::Valid(m, _)) => match divergent_version(meta, m) {
                    Some(has) => MetaHealth::Divergent { has },
                    None if m.latest().version == latest.version => MetaHealth::Current,
                    None => MetaHealth::Stale {
                        has: m.latest().version,
                    },
                },
            };
            let shards = match &manifest {
                None => ShardHealth::NotApplicable,
                Some(Err(e)) => ShardHealth::Unreachable {
                    reason: format!("manifest unavailable: {}", one_line(e)),
                },
                Some(Ok(m)) => self.check_blob(name_id, m, i).await,
            };
            clouds.push(CloudHealth {
                cloud: self.inner.clouds[i].name.clone(),
                metadata,
                shards,
            });
        }
        KeyReport {
            key: key.to_owned(),
            versions,
            clouds,
        }
    }

    /// Reads cloud `i`'s whole blob and checks the key share and every shard.
    async fn check_blob(&self, name_id: &[u8; 32], m: &Manifest, i: usize) -> ShardHealth {
        let c = &self.inner.clouds[i];
        let path = shard_path(name_id, &m.blob_id, i);
        let timeout = self.inner.tuning.op_timeout;
        match tokio::time::timeout(timeout, c.store().head(&path)).await {
            Err(_) => {
                return ShardHealth::Unreachable {
                    reason: "timed out".into(),
                };
            }
            Ok(Err(object_store::Error::NotFound { .. })) => return ShardHealth::Missing,
            Ok(Err(e)) => {
                return ShardHealth::Unreachable {
                    reason: one_line(&e),
                };
            }
            Ok(Ok(meta)) if meta.size != m.blob_len() => {
                return ShardHealth::Corrupt { segment: None };
            }
            Ok(Ok(_)) => {}
        }
        if m.header_len() > 0 {
            match tokio::time::timeout(
                timeout,
                c.store().get_range(&path, 0..m.header_len() as u64),
            )
            .await
            {
                Ok(Ok(b)) if Digest::of(&b) == m.share_digests[i] => {}
                Ok(Ok(_)) => return ShardHealth::Corrupt { segment: None },
                Ok(Err(e)) => {
                    return ShardHealth::Unreachable {
                        reason: one_line(&e),
                    };
                }
                Err(_) => {
                    return ShardHealth::Unreachable {
                        reason: "timed out".into(),
                    };
                }
            }
        }
        let results = stream::iter(0..m.segments())
            .map(|s| {
                let path = path.clone();
                async move {
                    let len = m.shard_len(s) as u64;
                    if len == 0 {
                        return (s, Ok(Digest::of(&[]) == *m.shard_digest(s, i)));
                    }
                    let off = m.shard_offset(s);
                    let r =
                        tokio::time::timeout(timeout, c.store().get_range(&path, off..off + len))
                            .await;
                    (
                        s,
                        match r {
                            Ok(Ok(b)) => Ok(
                                b.len() as u64 == len && Digest::of(&b) == *m.shard_digest(s, i)
                            ),
                            Ok(Err(e)) => Err(one_line(&e)),
                            Err(_) => Err("timed out".to_string()),
                        },
                    )
                }
            })
            .buffered(4);
        tokio::pin!(results);
        while let Some((s, r)) = results.next().await {
            match r {
                Ok(true) => {}
                Ok(false) => return ShardHealth::Corrupt { segment: Some(s) },
                Err(e) => return ShardHealth::Unreachable { reason: e },
            }
        }
        ShardHealth::Valid
    }

    /// Verifies every key on every cloud, names misbehaving clouds, and (with `repair`)
    /// rewrites missing or corrupt metadata, manifests and shards from healthy clouds.
    pub async fn scrub(
        &self,
        repair: bool,
        progress: Option<Progress>,
    ) -> Result<ScrubReport, StoreError> {
        let mut names = self.listed_names().await?;
        let mut rep = ScrubReport::default();
        let listed = names.len();
        names.retain(|_, by| by.len() > self.f());
        rep.unbacked = listed - names.len();
        let mut done = 0u64;
        for (id, listed_by) in names {
            done += 1;
            if let Some(p) = &progress {
                p(done);
            }
            let view = match self.read_meta(&id, Wait::All).await {
                Ok(v) => v,
                Err(e) => {
                    rep.failed.push((hex::encode(id), one_line(&e)));
                    continue;
                }
            };
            let Some((meta, raw)) = view.best() else {
                // Listed, but no cloud has valid metadata: the listing clouds invented it
                // or hold garbage under it.
                for i in listed_by {
                    rep.problems.push((
                        self.inner.clouds[i].name.clone(),
                        hex::encode(&id[..8]),
                        "lists an object with no valid metadata".into(),
                    ));
                }
                continue;
            };
            let raw = raw.clone();
            let key = self
                .decrypt_name(&id, meta.latest())
                .unwrap_or_else(|| format!("<undecryptable {}>", hex::encode(&id[..8])));
            rep.keys += 1;
            let report = self.inspect(&key, &id, &view).await;
            for (i, ch) in report.clouds.iter().enumerate() {
                if !listed_by.contains(&i)
                    && ch.metadata != MetaHealth::Missing
                    && !matches!(ch.metadata, MetaHealth::Unreachable { .. })
                {
                    rep.problems.push((
                        ch.cloud.clone(),
                        key.clone(),
                        "listing omits this key".into(),
                    ));
                }
                if ch.metadata != MetaHealth::Current {
                    rep.problems.push((
                        ch.cloud.clone(),
                        key.clone(),
                        format!("metadata {}", describe_meta(&ch.metadata)),
                    ));
                }
                if !matches!(ch.shards, ShardHealth::Valid | ShardHealth::NotApplicable) {
                    rep.problems.push((
                        ch.cloud.clone(),
                        key.clone(),
                        format!("shards {}", describe_shards(&ch.shards)),
                    ));
                }
            }
            if !repair {
                continue;
            }
            if let Err(e) = self
                .repair_key(&key, &id, &view, raw, &report, &mut rep)
                .await
            {
                rep.failed.push((key.clone(), one_line(&e)));
            }
        }
        Ok(rep)
    }

    async fn repair_key(
        &self,
        key: &str,
        name_id: &[u8; 32],
        view: &MetaView,
        raw: Bytes,
        report: &KeyReport,
        rep: &mut ScrubReport,
    ) -> Result<(), StoreError> {
        let (meta, _) = view.best().expect("caller checked best");
        // Shards first, so that repaired metadata never points at missing data.
        if let Some(obj) = &meta.latest().object {
            let m = Arc::new(self.load_manifest(name_id, obj).await?);
            if obj.manifest_inline.is_none() {
                let bytes = Bytes::from(m.encode());
                for (i, c) in self.inner.clouds.iter().enumerate() {
                    let path = manifest_path(name_id, &m.blob_id);
                    let ok = matches!(c.read_versioned(&path, MANIFEST_BYTES_MAX).await, Ok((Some(b), _)) if Digest::of(&b) == obj.manifest_digest);
                    let reachable =
                        !matches!(report.clouds[i].shards, ShardHealth::Unreachable { .. });
                    if !ok
                        && reachable
                        && c.store()
                            .put(&path, PutPayload::from(bytes.clone()))
                            .await
                            .is_ok()
                    {
                        rep.repaired.push((
                            c.name.clone(),
                            key.to_owned(),
                            "manifest rewritten".into(),
                        ));
                    }
                }
            }
            let bad: Vec<usize> = report
                .clouds
                .iter()
                .enumerate()
                .filter(|(_, h)| {
                    matches!(h.shards, ShardHealth::Missing | ShardHealth::Corrupt { .. })
                })
                .map(|(i, _)| i)
                .collect();
            if !bad.is_empty() {
                self.rebuild_blob(name_id, m, &bad).await?;
                for &i in &bad {
                    rep.repaired.push((
                        self.inner.clouds[i].name.clone(),
                        key.to_owned(),
                        "shards rebuilt".into(),
                    ));
                }
            }
        }
        for (i, cm) in view.clouds.iter().enumerate() {
            let stale = !matches!(
                report.clouds[i].metadata,
                MetaHealth::Current | MetaHealth::Unreachable { .. }
            );
            if let (true, Some(tok)) = (stale, &cm.token) {
                let c = &self.inner.clouds[i];
                if let MetaHealth::Invalid { .. } = report.clouds[i].metadata
                    && let Some(v) = self.claims_newer(c, name_id, meta.latest().version).await
                {
                    rep.failed.push((
                        key.to_owned(),
                        format!(
                            "{}: not overwritten: holds metadata claiming the newer {v} that does \
                             not verify (is its writer missing from trusted_writers?)",
                            c.name
                        ),
                    ));
                    continue;
                }
                match c
                    .compare_and_swap(&meta_path(name_id), raw.clone(), tok)
                    .await
                {
                    Ok(CasOutcome::Done) => rep.repaired.push((
                        c.name.clone(),
                        key.to_owned(),
                        "metadata rewritten".into(),
                    )),
                    Ok(CasOutcome::Conflict) => rep.failed.push((
                        key.to_owned(),
                        format!("{}: metadata changed during repair", c.name),
                    )),
                    Err(e) => rep
                        .failed
                        .push((key.to_owned(), format!("{}: {}", c.name, one_line(&e)))),
                }
            }
        }
        Ok(())
    }

    /// The version that cloud `c`'s metadata of `name_id` claims, unverified, if it is
    /// well formed, names this store and key, and is newer than `best`. Scrub leaves such
    /// metadata alone: it may be a newer write whose writer is not trusted right now (a
    /// writer key rotation), and overwriting it with `best` would lose that write for good.
    async fn claims_newer(&self, c: &Cloud, name_id: &[u8; 32], best: Version) -> Option<Version> {
        let path = meta_path(name_id);
        let read = c.read_versioned(&path, META_BYTES_MAX);
        let (bytes, _) = tokio::time::timeout(self.inner.tuning.op_timeout, read)
            .await
            .ok()?
            .ok()?;
        let m = Metadata::decode_unverified(&bytes?).ok()?;
        let v = m.latest().version;
        (m.store_id == self.inner.store_id && m.name_id == *name_id && v > best).then_some(v)
    }

    /// Rewrites the blobs of clouds `bad` from `k` verified shards of the others.
    async fn rebuild_blob(
        &self,
        name_id: &[u8; 32],
        m: Arc<Manifest>,
        bad: &[usize],
    ) -> Result<(), StoreError> {
        let exclude: HashSet<usize> = bad.iter().copied().collect();
        let mut uploads = Uploads::start(self, name_id, &m.blob_id, bad);
        let straggle = self.inner.tuning.straggler_timeout;
        let result = async {
            let key = match m.protocol {
                Protocol::Confidential => {
                    let shares = self.fetch_shares(name_id, &m, &exclude).await?;
                    for &i in bad {
                        let share =
                            shamir::reshare(&shares, (i + 1) as u8).map_err(StoreError::Crypto)?;
                        // Paired check: the rebuilt share must be the one the writer bound.
                        if Digest::of(share.as_bytes()) != m.share_digests[i] {
                            return Err(StoreError::Integrity {
                                reason: "rebuilt key share does not match the manifest",
                            });
                        }
                        uploads
                            .send(i, Bytes::copy_from_slice(share.as_bytes()), straggle, 0)
                            .await;
                    }
                    let secret = shamir::combine(&shares).map_err(StoreError::Crypto)?;
                    Some(SegmentKey::from_bytes(secret))
                }
                Protocol::Sealed => {
                    let (wrapped, key) = self.fetch_wrapped_key(name_id, &m, &exclude).await?;
                    for &i in bad {
                        uploads.send(i, wrapped.clone(), straggle, 0).await;
                    }
                    Some(key)
                }
                Protocol::Replicated => None,
            };
            let ctx = SegmentContext {
                store_id: self.inner.store_id,
                name_id: *name_id,
                blob_id: m.blob_id,
            };
            let codec = Arc::new(Codec::new(
                m.protocol,
                m.k as usize,
                m.n as usize,
                key,
                ctx,
            )?);
            for s in 0..m.segments() {
                let mut shards = self.fetch_segment_shards(name_id, &m, s, &exclude).await?;
                let codec = codec.clone();
                shards = tokio::task::spawn_blocking(move || {
                    codec.complete_shards(&mut shards).map(|()| shards)
                })
                .await
                .map_err(|e| StoreError::Io {
                    context: "repair task".into(),
                    source: std::io::Error::other(e),
                })??;
                for &i in bad {
                    let shard = shards[i].take().ok_or(StoreError::Integrity {
                        reason: "shard missing after reconstruction",
                    })?;
                    if Digest::of(&shard) != *m.shard_digest(s, i) {
                        return Err(StoreError::Integrity {
                            reason: "rebuilt shard does not match the manifest",
                        });
                    }
                    uploads.send(i, Bytes::from(shard), straggle, 0).await;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            uploads.cancel_all("repair failed");
            let _ = uploads.finish("repair upload", 0, self.n()).await;
            return Err(e);
        }
        let bg = uploads.finish("repair upload", bad.len(), self.n()).await?;
        debug_assert!(bg.all_finished());
        Ok(())
    }

    async fn fetch_segment_shards(
        &self,
        name_id: &[u8; 32],
        m: &Arc<Manifest>,
        s: u64,
        exclude: &HashSet<usize>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let off = m.shard_offset(s);
        let len = m.shard_len(s) as u64;
        let m2 = m.clone();
        self.hedged_fetch(
            name_id,
            &m.blob_id,
            m.k as usize,
            Fetch::Range(off..off + len),
            s,
            exclude,
            move |i, b| {
                if Digest::of(b) == *m2.shard_digest(s, i) {
                    Ok(b.to_vec())
                } else {
                    Err("shard does not match the manifest")
                }
            },
        )
        .await
    }
}

fn describe_meta(m: &MetaHealth) -> String {
    match m {
        MetaHealth::Current => "current".into(),
        MetaHealth::Stale { has } => format!("stale (holds {has})"),
        MetaHealth::Divergent { has } => {
            format!("divergent (holds {has}, another entry with the same counter)")
        }
        MetaHealth::Missing => "missing".into(),
        MetaHealth::Invalid { reason } => format!("invalid ({reason})"),
        MetaHealth::Unreachable { reason } => format!("unreachable ({reason})"),
    }
}

fn describe_shards(s: &ShardHealth) -> String {
    match s {
        ShardHealth::Valid => "valid".into(),
        ShardHealth::Missing => "missing".into(),
        ShardHealth::Corrupt { segment: Some(s) } => format!("corrupt (segment {s})"),
        ShardHealth::Corrupt { segment: None } => "corrupt (key share or length)".into(),
        ShardHealth::Unreachable { reason } => format!("unreachable ({reason})"),
        ShardHealth::NotApplicable => "n/a".into(),
    }
}

impl fmt::Display for MetaHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe_meta(self))
    }
}

impl fmt::Display for ShardHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe_shards(self))
    }
}

/// New version list: `entry` with the next counter, then the base's versions (bounded).
fn push_version(base: Option<&Metadata>, mut entry: VersionEntry) -> Vec<VersionEntry> {
    let counter = base.map_or(0, |m| m.latest().version.counter);
    entry.version.counter = counter
        .checked_add(1)
        .expect("version counter overflow (2^64 writes)");
    let mut entries = vec![entry];
    if let Some(m) = base {
        entries.extend(m.entries.iter().take(VERSIONS_MAX - 1).cloned());
    }
    entries
}

/// What [`CloudOfClouds::hedged_fetch`] reads from each cloud.
#[derive(Clone)]
enum Fetch {
    /// A byte range of the cloud's own shard object `s<i>`.
    Range(Range<u64>),
    /// The blob's whole manifest (the same object on every cloud).
    Manifest,
}

/// Why one cloud's fetch failed.
enum FetchFailure {
    /// The cloud returned bytes that cannot be right (counts against its rank).
    Bad(String),
    /// Missing, unreachable or an error.
    Other(String),
}

impl Fetch {
    async fn fetch(
        &self,
        c: &Cloud,
        name_id: &[u8; 32],
        blob_id: &[u8; 16],
    ) -> Result<Bytes, FetchFailure> {
        let backend = |e: object_store::Error| match e {
            object_store::Error::NotFound { .. } => FetchFailure::Other("missing".into()),
            e => FetchFailure::Other(one_line(&e)),
        };
        match self {
            Fetch::Range(r) if r.is_empty() => Ok(Bytes::new()),
            Fetch::Range(r) => {
                let path = shard_path(name_id, blob_id, c.index);
                let bytes = c
                    .store()
                    .get_range(&path, r.clone())
                    .await
                    .map_err(backend)?;
                if bytes.len() as u64 != r.end - r.start {
                    return Err(FetchFailure::Bad(format!(
                        "returned {} bytes instead of {}",
                        bytes.len(),
                        r.end - r.start
                    )));
                }
                Ok(bytes)
            }
            Fetch::Manifest => {
                let path = manifest_path(name_id, blob_id);
                match c.read_versioned(&path, MANIFEST_BYTES_MAX).await {
                    Ok((Some(b), _)) => Ok(b),
                    Ok((None, _)) => Err(FetchFailure::Other("manifest missing".into())),
                    Err(e @ CloudError::TooLarge { .. }) => Err(FetchFailure::Bad(one_line(&e))),
                    Err(e) => Err(FetchFailure::Other(one_line(&e))),
                }
            }
        }
    }
}

/// Reads a blob segment by segment for `get`.
struct BlobReader {
    client: CloudOfClouds,
    name_id: [u8; 32],
    manifest: Arc<Manifest>,
    codec: Arc<Codec>,
}

impl BlobReader {
    async fn read_segment(&self, s: u64) -> Result<Vec<u8>, StoreError> {
        let shards = self
            .client
            .fetch_segment_shards(&self.name_id, &self.manifest, s, &HashSet::new())
            .await?;
        let last = s + 1 == self.manifest.segments();
        let plain_len = self.manifest.segment_plain_len(s);
        let codec = self.codec.clone();
        tokio::task::spawn_blocking(move || codec.decode(s, last, plain_len, shards))
            .await
            .map_err(|e| StoreError::Io {
                context: "decoding task".into(),
                source: std::io::Error::other(e),
            })?
    }
}

/// Cuts an input stream into segments, reading one ahead to know which is last.
struct SegmentReader<R> {
    input: R,
    segment_size: usize,
    lookahead: Option<Vec<u8>>,
    index: u64,
    done: bool,
}

impl<R: AsyncRead + Unpin> SegmentReader<R> {
    fn new(input: R, segment_size: usize) -> Self {
        Self {
            input,
            segment_size,
            lookahead: None,
            index: 0,
            done: false,
        }
    }

    async fn fill(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(self.segment_size + rampart_crypto::aead::TAG_LEN + 64);
        (&mut self.input)
            .take(self.segment_size as u64)
            .read_to_end(&mut buf)
            .await?;
        Ok(buf)
    }

    /// `(index, is_last, bytes)`; an empty input yields one empty last segment.
    async fn next(&mut self) -> std::io::Result<Option<(u64, bool, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        let cur = match self.lookahead.take() {
            Some(b) => b,
            None => self.fill().await?,
        };
        let last = if cur.len() < self.segment_size {
            true
        } else {
            let next = self.fill().await?;
            let empty = next.is_empty();
            if !empty {
                self.lookahead = Some(next);
            }
            empty
        };
        self.done = last;
        let i = self.index;
        self.index += 1;
        Ok(Some((i, last, cur)))
    }
}
