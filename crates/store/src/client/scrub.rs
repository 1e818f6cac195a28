//! Inspection and repair: `stat`, `scrub` and `scrub --repair`.
//!
//! Invariants (ADR 0005, ADR 0006):
//!
//! - Health is judged against the newest valid metadata only; a cloud holding a different
//!   signed entry under one of its counters is `Divergent`.
//! - Only names that at least `f + 1` clouds list are examined, so a write that reached at
//!   most `f` clouds is not spread, and no cloud is blamed for listing names no other
//!   cloud lists.
//! - Repair writes shards before metadata, so repaired metadata never points at missing
//!   data; a rebuilt shard or key share is written only if it matches the manifest digest
//!   the writer signed.
//! - Repair only ever writes the newest valid metadata it saw, by compare-and-swap on the
//!   token it read, and leaves alone metadata that does not verify but claims a newer
//!   version for this store and key (it may be a real write by a writer not trusted right
//!   now; overwriting it would lose that write for good).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use object_store::{ObjectStoreExt, PutPayload};
use rampart_crypto::aead::SegmentKey;
use rampart_crypto::hash::Digest;
use rampart_crypto::shamir;

use super::metadata::{MetaAnswer, MetaView, Wait, divergent_version};
use super::quorum::Uploads;
use super::{
    CloudOfClouds, Progress, join_failures, manifest_path, meta_path, one_line, shard_path,
};
use crate::StoreError;
use crate::cloud::{CasOutcome, Cloud, CloudError};
use crate::meta::{MANIFEST_BYTES_MAX, META_BYTES_MAX, Manifest, Metadata, Protocol, Version};
use crate::pipeline::{Codec, SegmentContext};

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

impl CloudOfClouds {
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
            match tokio::time::timeout(timeout, c.get_range_capped(&path, 0..m.header_len() as u64))
                .await
            {
                Ok(Ok(b)) if Digest::of(&b) == m.share_digests[i] => {}
                Ok(Ok(_) | Err(CloudError::TooLarge { .. })) => {
                    return ShardHealth::Corrupt { segment: None };
                }
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
                        tokio::time::timeout(timeout, c.get_range_capped(&path, off..off + len))
                            .await;
                    (
                        s,
                        match r {
                            Ok(Ok(b)) => Ok(
                                b.len() as u64 == len && Digest::of(&b) == *m.shard_digest(s, i)
                            ),
                            Ok(Err(CloudError::TooLarge { .. })) => Ok(false),
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
        let listed = self.listed_names(false).await?;
        let mut rep = ScrubReport {
            unbacked: listed.unbacked,
            ..ScrubReport::default()
        };
        let mut done = 0u64;
        for (id, listed_by) in listed.names {
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
