//! The cloud-of-clouds client: the DepSky protocols over a set of [`Cloud`]s.
//!
//! One file per path of the protocol:
//!
//! - [`quorum`]: tasks on several clouds collected until `n − f` of them finished, the
//!   rest handed back as [`Background`] work; bounded shard upload queues.
//! - [`metadata`]: the metadata quorum read and the compare-and-swap write.
//! - [`put`]: the write path (data before metadata) and `delete`.
//! - [`get`]: the read path, manifests and hedged fetches.
//! - [`list`]: merging the clouds' listings and `list`.
//! - [`scrub`]: `stat`, `scrub` and repair.
//! - [`gc`]: garbage collection (ADR 0005).
//!
//! This file holds what every path shares: the client, its tuning, the receipts, the
//! object layout and key naming. Invariants shared by every path:
//!
//! - Every object name in a cloud is under [`ROOT`] and derived from a keyed name id,
//!   never from a user key (ADR 0003): `m/<name_id>` for metadata, `b/<name_id>/<blob_id>/`
//!   for a blob's shards and manifest.
//! - A user key's name id is `BLAKE3-keyed(namespace key, key)`; a key name decrypted from
//!   metadata is accepted only if it hashes back to the name id it is filed under.
//! - Names and attributes are sealed under the namespace key with associated data that
//!   binds the store, the name id and the purpose, so one can never pass for the other.
//! - With a single cloud (`f = 0`) no quorum can outvote a rollback, so the client
//!   refuses a version older than one it already saw ([`StoreError::RolledBack`], ADR 0004).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use rampart_crypto::aead::SealingKey;
use rampart_crypto::hash::Digest;
use rampart_crypto::sign::{SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use rampart_log::audit::{AuditEvent, AuditSink, LogAuditSink, Outcome};

use crate::StoreError;
use crate::cloud::Cloud;
use crate::config::{Secrets, StoreConfig};
use crate::meta::{KEY_BYTES_MAX, ObjectRef, Protocol, TAG_LEN, Version, VersionEntry};
use crate::pipeline::SegmentContext;

mod gc;
mod get;
mod list;
mod metadata;
mod put;
mod quorum;
mod scrub;

pub use gc::GcReport;
pub use quorum::{Background, BackgroundReport};
pub use scrub::{CloudHealth, KeyReport, MetaHealth, ScrubReport, ShardHealth};

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
    /// Most names a listing that comes in no particular order (a local directory, see
    /// [`Cloud::lists_in_order`]) may hold: such a listing is sorted in memory (32 bytes
    /// per name), and one that lists more fails as that cloud's listing. Ordered listings
    /// are merged holding one name per cloud, whatever their length.
    pub unordered_listing_names_max: usize,
    /// Most data uploads that keep running after their write returned (stragglers), across
    /// the client; each holds up to `write_queue_segments` shards and
    /// `upload_part_bytes × (upload_concurrency + 1)` bytes. A write whose slower clouds
    /// would exceed it drops them when it returns (`scrub` repairs them later).
    pub straggler_uploads_max: usize,
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
            unordered_listing_names_max: 1 << 20,
            straggler_uploads_max: 8,
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
    /// Most name ids any listing of this client held at once (see
    /// [`CloudOfClouds::listing_names_held_max`]).
    listing_held_max: AtomicUsize,
    /// Data uploads running now, stragglers included (see
    /// [`CloudOfClouds::uploads_running`]).
    uploads_running: Arc<AtomicUsize>,
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
// ---------------------------------------------------------------------------------------
// Paths and small helpers.

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
                listing_held_max: AtomicUsize::new(0),
                uploads_running: Arc::default(),
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

    /// Data uploads of this client running now, across writes: those of writes in
    /// progress and the stragglers of writes that returned (see
    /// [`Tuning::straggler_uploads_max`]).
    pub fn uploads_running(&self) -> usize {
        self.inner.uploads_running.load(Ordering::SeqCst)
    }

    /// The most name ids that any listing merge of this client (`list`, `scrub`, `gc`) held
    /// in memory at once: the names that `f + 1` clouds list, plus one name per ordered
    /// listing and the sorted names of unordered ones (not counting the page a backend is
    /// reading). A diagnostic: it shows that names a single cloud invents cost no memory.
    pub fn listing_names_held_max(&self) -> usize {
        self.inner.listing_held_max.load(Ordering::Relaxed)
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
}
