//! One storage provider ("cloud"): an `object_store` backend plus what the protocol needs
//! from it: a compare-and-swap on metadata, and a running latency estimate for ranking.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    GetOptions, GetResult, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use rampart_crypto::hash::Digest;

use crate::StoreError;
use crate::config::CloudConfig;
use crate::meta::META_BYTES_MAX;

/// How a cloud serialises concurrent metadata writers.
#[derive(Clone, Debug)]
pub enum CasMode {
    /// The backend's conditional put (S3 `If-Match`/`If-None-Match`, Azure ETags, GCS
    /// generations, in-memory).
    Native,
    /// A local directory: `object_store` refuses `PutMode::Update` there, so a
    /// read-compare-write runs under an exclusive OS file lock in `lock_dir` instead.
    LocalLock {
        /// Where lock files live (inside the cloud's directory).
        lock_dir: PathBuf,
    },
}

/// The version of a metadata object a writer read, to be compared at write time.
#[derive(Clone, Debug)]
pub enum CasToken {
    /// The object did not exist.
    Absent,
    /// Native conditional put: the ETag/version the cloud reported.
    Native(UpdateVersion),
    /// Local lock: the digest of the bytes read.
    Content(Digest),
}

/// Outcome of a compare-and-swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written.
    Done,
    /// Someone else wrote first; nothing was written.
    Conflict,
}

/// A cloud and its observed behaviour.
pub struct Cloud {
    /// Name from the config, used in every report.
    pub name: String,
    /// Position in the config: this cloud stores shard `index`.
    pub index: usize,
    store: Arc<dyn ObjectStore>,
    cas: CasMode,
    latency_ewma_us: AtomicU64,
    strikes: AtomicU32,
    /// Whether listings come in ascending order of path (see [`Cloud::lists_in_order`]).
    ordered_listing: bool,
}

impl fmt::Debug for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cloud({} #{}, {})", self.name, self.index, self.store)
    }
}

/// Latency assumed for a cloud before it has answered anything.
const LATENCY_PRIOR_US: u64 = 20_000;

impl Cloud {
    /// Wraps an already-built store. A cloud with [`CasMode::Native`] is taken to list in
    /// ascending order of path (S3, Azure, GCS and the in-memory store do), one with
    /// [`CasMode::LocalLock`] not (a local directory does not).
    pub fn new(
        name: impl Into<String>,
        index: usize,
        store: Arc<dyn ObjectStore>,
        cas: CasMode,
    ) -> Self {
        Self {
            name: name.into(),
            index,
            store,
            ordered_listing: matches!(cas, CasMode::Native),
            cas,
            latency_ewma_us: AtomicU64::new(LATENCY_PRIOR_US),
            strikes: AtomicU32::new(0),
        }
    }

    /// Marks the cloud's listings as coming in no particular order: the client then sorts
    /// them in memory, up to [`Tuning::unordered_listing_names_max`](crate::Tuning) names.
    pub fn with_unordered_listing(mut self) -> Self {
        self.ordered_listing = false;
        self
    }

    /// Whether the backend lists objects in ascending order of their paths, as S3, Azure
    /// Blob Storage, GCS and the in-memory store do (`object_store` itself does not promise
    /// an order; a local directory and a plain HTTP store list in no particular order).
    /// The client merges ordered listings name by name, holding one name per cloud, and
    /// treats one that goes backwards as a failed listing.
    pub fn lists_in_order(&self) -> bool {
        self.ordered_listing
    }

    /// Builds a cloud from its config entry. `file://` URLs use a local lock for CAS.
    pub fn from_config(index: usize, cfg: &CloudConfig) -> Result<Self, StoreError> {
        let url = url::Url::parse(&cfg.url).map_err(|e| StoreError::CloudConfig {
            cloud: cfg.name.clone(),
            reason: format!("bad url: {e}"),
        })?;
        let (store, prefix) =
            object_store::parse_url_opts(&url, cfg.options.iter()).map_err(|e| {
                StoreError::CloudConfig {
                    cloud: cfg.name.clone(),
                    reason: one_line(&e),
                }
            })?;
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            Arc::from(store)
        } else {
            Arc::new(PrefixStore::new(store, prefix))
        };
        let cas = if url.scheme() == "file" {
            let dir = url.to_file_path().map_err(|_| StoreError::CloudConfig {
                cloud: cfg.name.clone(),
                reason: "file URL is not an absolute path".into(),
            })?;
            CasMode::LocalLock {
                lock_dir: dir.join(".rampart-locks"),
            }
        } else {
            CasMode::Native
        };
        let cloud = Self::new(cfg.name.clone(), index, store, cas);
        let ordered = matches!(
            object_store::ObjectStoreScheme::parse(&url),
            Ok((
                object_store::ObjectStoreScheme::AmazonS3
                    | object_store::ObjectStoreScheme::GoogleCloudStorage
                    | object_store::ObjectStoreScheme::MicrosoftAzure
                    | object_store::ObjectStoreScheme::Memory,
                _
            ))
        );
        Ok(if ordered {
            cloud
        } else {
            cloud.with_unordered_listing()
        })
    }

    /// Replaces the store with a wrapper around it (e.g. a fault injector), keeping the
    /// CAS mode.
    pub fn map_store(
        mut self,
        f: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>,
    ) -> Self {
        self.store = f(self.store);
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Records one request's latency in the moving average (weight 1/4).
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let old = self.latency_ewma_us.load(Ordering::Relaxed);
        self.latency_ewma_us
            .store((old * 3 + us) / 4, Ordering::Relaxed);
    }

    /// Estimated latency of the next request.
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_ewma_us.load(Ordering::Relaxed))
    }

    /// Notes that the cloud returned bad data; such clouds are asked last.
    pub fn strike(&self) {
        self.strikes.fetch_add(1, Ordering::Relaxed);
    }

    /// Ranking key: clouds that misbehaved go last, then by latency.
    pub fn rank(&self) -> (u32, u64) {
        (
            self.strikes.load(Ordering::Relaxed).min(1),
            self.latency_ewma_us.load(Ordering::Relaxed),
        )
    }

    /// Reads an object that may be absent, with the token a later CAS compares against.
    pub async fn read_versioned(
        &self,
        path: &Path,
        max_len: usize,
    ) -> Result<(Option<Bytes>, CasToken), CloudError> {
        let res = match self.store.get_opts(path, GetOptions::default()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok((None, CasToken::Absent)),
            Err(e) => return Err(CloudError::Backend(e)),
        };
        if res.meta.size > max_len as u64 {
            return Err(CloudError::TooLarge { len: res.meta.size });
        }
        let token = UpdateVersion {
            e_tag: res.meta.e_tag.clone(),
            version: res.meta.version.clone(),
        };
        // The size the cloud reported is a claim: the body is read with the same cap.
        let bytes = body_capped(res, max_len).await?;
        let token = match self.cas {
            CasMode::Native => CasToken::Native(token),
            CasMode::LocalLock { .. } => CasToken::Content(Digest::of(&bytes)),
        };
        Ok((Some(bytes), token))
    }

    /// Writes `bytes` at `path` only if the object is still what `token` says.
    pub async fn compare_and_swap(
        &self,
        path: &Path,
        bytes: Bytes,
        token: &CasToken,
    ) -> Result<CasOutcome, CloudError> {
        match &self.cas {
            CasMode::Native => {
                let mode = match token {
                    CasToken::Absent => PutMode::Create,
                    CasToken::Native(v) => PutMode::Update(v.clone()),
                    CasToken::Content(_) => return Err(CloudError::TokenMismatch),
                };
                let opts = PutOptions {
                    mode,
                    ..Default::default()
                };
                match self
                    .store
                    .put_opts(path, PutPayload::from(bytes), opts)
                    .await
                {
                    Ok(_) => Ok(CasOutcome::Done),
                    Err(
                        object_store::Error::Precondition { .. }
                        | object_store::Error::AlreadyExists { .. },
                    ) => Ok(CasOutcome::Conflict),
                    Err(e) => Err(CloudError::Backend(e)),
                }
            }
            CasMode::LocalLock { lock_dir } => {
                let lock = lock_file(lock_dir, path).await?;
                // Under the lock: re-read, compare, write. `object_store`'s local put is an
                // atomic rename, so readers never see a torn metadata object.
                let current = match self.store.get(path).await {
                    Ok(r) => Some(body_capped(r, META_BYTES_MAX).await?),
                    Err(object_store::Error::NotFound { .. }) => None,
                    Err(e) => return Err(CloudError::Backend(e)),
                };
                let same = match (token, &current) {
                    (CasToken::Absent, None) => true,
                    (CasToken::Content(d), Some(b)) => *d == Digest::of(b),
                    (CasToken::Native(_), _) => return Err(CloudError::TokenMismatch),
                    _ => false,
                };
                if !same {
                    drop(lock);
                    return Ok(CasOutcome::Conflict);
                }
                self.store
                    .put(path, PutPayload::from(bytes))
                    .await
                    .map_err(CloudError::Backend)?;
                drop(lock);
                Ok(CasOutcome::Done)
            }
        }
    }
}

impl Cloud {
    /// Reads `range` of the object at `path`. A body longer than the range is refused
    /// with [`CloudError::TooLarge`] as soon as it runs over, without reading the rest:
    /// a cloud cannot make the client buffer more than it asked for. A shorter body is
    /// returned as it is (the caller checks the length).
    pub async fn get_range_capped(
        &self,
        path: &Path,
        range: Range<u64>,
    ) -> Result<Bytes, CloudError> {
        let len = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX);
        let opts = GetOptions {
            range: Some(range.into()),
            ..Default::default()
        };
        let res = self
            .store
            .get_opts(path, opts)
            .await
            .map_err(CloudError::Backend)?;
        body_capped(res, len).await
    }
}

/// The body of `res`, or [`CloudError::TooLarge`] as soon as it exceeds `max_len` bytes
/// (whatever size the cloud claimed). A body that arrives in one piece is not copied.
async fn body_capped(res: GetResult, max_len: usize) -> Result<Bytes, CloudError> {
    let mut body = res.into_stream();
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(CloudError::Backend)?;
        len = len.saturating_add(chunk.len());
        if len > max_len {
            return Err(CloudError::TooLarge { len: len as u64 });
        }
        match &first {
            None => first = Some(chunk),
            Some(f) => {
                if rest.is_empty() {
                    rest.reserve(len);
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&chunk);
            }
        }
    }
    assert!(len <= max_len, "body cap");
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(rest)
    })
}

/// Takes an exclusive OS lock on a file named after `path` (released on drop).
async fn lock_file(lock_dir: &std::path::Path, path: &Path) -> Result<std::fs::File, CloudError> {
    let name = Digest::of(path.as_ref().as_bytes()).to_hex();
    let file_path = lock_dir.join(format!("{}.lock", &name[..32]));
    let lock_dir = lock_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&lock_dir)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&file_path)?;
        f.lock()?;
        Ok(f)
    })
    .await
    .map_err(|e| CloudError::Lock(std::io::Error::other(e)))?
    .map_err(CloudError::Lock)
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A failure talking to one cloud. These are counted per cloud, never fatal alone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
    /// The backend reported an error (network, auth, not found, ...).
    #[error("{}", one_line(.0))]
    Backend(object_store::Error),
    /// The object is larger than the protocol allows.
    #[error("object of {len} bytes exceeds the limit")]
    TooLarge {
        /// Length reported or read.
        len: u64,
    },
    /// The request did not finish in time.
    #[error("timed out")]
    Timeout,
    /// The local lock could not be taken.
    #[error("lock: {0}")]
    Lock(std::io::Error),
    /// A CAS token from another cloud kind was used (a bug).
    #[error("CAS token does not match the cloud's CAS mode")]
    TokenMismatch,
}
