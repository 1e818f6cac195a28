//! The read path: `head`, `get`, manifests and hedged fetches.
//!
//! Invariants (crate docs, ADR 0003, ADR 0006):
//!
//! - Nothing read from a cloud is used before it is checked against a digest reachable
//!   from valid signed metadata: the manifest against the entry's manifest digest (and
//!   the entry's blob id, size and protocol), each shard and key share or wrapped key
//!   against the manifest. A whole read is checked against the keyed content digest.
//! - A read takes one signed entry whole; `get_version` returns
//!   [`StoreError::VersionChanged`] rather than another write's body.
//! - A fetch asks the `need` best-ranked clouds, one more after the hedge delay and one
//!   more for each failure, and returns once `need` answers verified, or fails with
//!   [`StoreError::NotEnoughShards`]: a read never returns unverified bytes. A cloud that
//!   returns bytes that cannot be right is struck and asked last from then on.
//! - At most `read_window_segments` segments are in flight, so memory does not grow with
//!   the object size.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{self, FuturesUnordered, StreamExt};
use rampart_crypto::aead::SegmentKey;
use rampart_crypto::hash::{Digest, Hasher};
use rampart_crypto::shamir::{self, Share};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use super::metadata::Wait;
use super::{
    CloudOfClouds, GetReceipt, ObjectInfo, Progress, join_failures, key_wrap_aad, manifest_path,
    one_line, shard_path,
};
use crate::StoreError;
use crate::cloud::{Cloud, CloudError};
use crate::meta::{MANIFEST_BYTES_MAX, Manifest, ObjectRef, Protocol, Version, VersionEntry};
use crate::pipeline::{Codec, SegmentContext};

impl CloudOfClouds {
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
    pub(super) fn content_digest(&self, blob_id: &[u8; 16], plain: &Digest) -> Digest {
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

    pub(super) fn info(&self, key: &str, e: &VersionEntry) -> Option<ObjectInfo> {
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

    pub(super) async fn load_manifest(
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

    pub(super) async fn fetch_shares(
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
    pub(super) async fn fetch_wrapped_key(
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

    pub(super) async fn fetch_segment_shards(
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
        let backend = |e: CloudError| match e {
            CloudError::Backend(object_store::Error::NotFound { .. }) => {
                FetchFailure::Other("missing".into())
            }
            // More bytes than asked for: cut off unread, and counted against the cloud.
            e @ CloudError::TooLarge { .. } => FetchFailure::Bad(one_line(&e)),
            e => FetchFailure::Other(one_line(&e)),
        };
        match self {
            Fetch::Range(r) if r.is_empty() => Ok(Bytes::new()),
            Fetch::Range(r) => {
                let path = shard_path(name_id, blob_id, c.index);
                let bytes = c
                    .get_range_capped(&path, r.clone())
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
