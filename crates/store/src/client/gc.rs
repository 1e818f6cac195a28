//! Garbage collection: dropping old versions and reclaiming blobs nothing references.
//!
//! Rules (ADR 0005), so that no acknowledged write is ever lost:
//!
//! - **Versions never go back.** Metadata is never deleted. A deleted key is compacted to
//!   its newest tombstone, which keeps the key's highest version (the *version floor*),
//!   so the next put is numbered above every version a cloud may still hold or replay.
//! - **Compare-and-swap on what was read.** Every metadata change is a compare-and-swap
//!   built on the exact newest version gc read; a key that changed meanwhile is left for
//!   the next run.
//! - **Grace for superseded versions.** A version beyond `keep` is dropped only once it
//!   was superseded (its successor written) at least `grace` ago, so reads that started
//!   on it can finish; its blob is deleted only after the metadata stopped listing it.
//! - **Grace for unreferenced blobs.** A blob that no listed version references (a write
//!   in progress, a crashed write) is deleted only once it is older than `grace`.
//! - **Unverifiable metadata keeps everything.** If any cloud holds metadata for a key
//!   that does not verify (for example signed by a writer no longer trusted), gc changes
//!   nothing under that key and reports it.

use std::collections::HashSet;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path;

use super::metadata::{MetaAnswer, Wait};
use super::{CloudOfClouds, blobs_prefix, now_ms, one_line, parse_hex};
use crate::StoreError;
use crate::meta::{Metadata, VERSIONS_MAX};

/// Result of `gc`.
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// Keys examined.
    pub keys: usize,
    /// Old versions dropped from metadata.
    pub versions_dropped: usize,
    /// Blob objects deleted across all clouds.
    pub objects_deleted: usize,
    /// Deleted keys compacted to their newest tombstone: their older versions and data
    /// were reclaimed, the tombstone stays as the key's version floor.
    pub keys_purged: usize,
    /// Keys left untouched because some cloud holds metadata for them that does not
    /// verify (for example signed by a writer that is no longer trusted), as
    /// `key (or name id): cloud: why`; nothing under them was deleted. Its length is
    /// their count.
    pub unverifiable: Vec<String>,
    /// Names that at most f clouds list (in metadata or blob listings), skipped without a
    /// request: a completed write is listed by at least f + 1 correct clouds, so these are
    /// invented by faulty clouds or writes that reached at most f clouds, whose space is
    /// not reclaimed.
    pub unbacked: usize,
    /// Problems that did not stop the collection.
    pub warnings: Vec<String>,
}

/// What gc may delete under one key.
#[derive(Default)]
struct Doomed {
    /// Blobs of versions gc dropped from the metadata: deleted now.
    dropped: HashSet<[u8; 16]>,
    /// Blobs of versions the metadata still lists: kept.
    referenced: HashSet<[u8; 16]>,
    /// Whether blobs that no version references may be deleted once older than the
    /// grace period.
    unreferenced: bool,
}

impl CloudOfClouds {
    /// Drops old versions of every key from metadata and deletes their blobs, compacts
    /// deleted keys to their newest tombstone, and deletes blobs no version references.
    ///
    /// Keeps the newest `keep` versions of live keys. A version beyond them is dropped
    /// only once it was superseded at least `grace` ago, and an unreferenced blob (a
    /// write in progress, a crashed write) is deleted only once it is older than
    /// `grace`, which must exceed the longest upload. Keys whose metadata does not
    /// verify on some cloud are left alone and reported in
    /// [`GcReport::unverifiable`].
    pub async fn gc(&self, keep: usize, grace: Duration) -> Result<GcReport, StoreError> {
        let keep = keep.clamp(1, VERSIONS_MAX);
        let mut rep = GcReport::default();
        // Name ids with metadata, and blob directories without (writes that crashed
        // before their metadata), that at least f + 1 clouds list.
        let listed = self.listed_names(true).await?;
        rep.unbacked = listed.unbacked;
        rep.warnings = listed.warnings;
        // Inclusive: with a zero grace period everything written up to now qualifies.
        let cutoff_ms = now_ms().saturating_sub(grace.as_millis() as u64);
        for (id, _) in listed.names {
            rep.keys += 1;
            self.gc_key(&id, keep, cutoff_ms, &mut rep).await;
        }
        Ok(rep)
    }

    async fn gc_key(&self, id: &[u8; 32], keep: usize, cutoff_ms: u64, rep: &mut GcReport) {
        let view = match self
            .read_meta(id, Wait::Quorum(self.inner.tuning.quorum_grace))
            .await
        {
            Ok(v) => v,
            Err(e) => {
                rep.warnings
                    .push(format!("{}: {}", hex::encode(&id[..8]), one_line(&e)));
                return;
            }
        };
        let best = view.best().map(|(m, _)| m.clone());
        let label = best
            .as_ref()
            .and_then(|m| self.decrypt_name(id, m.latest()))
            .unwrap_or_else(|| hex::encode(&id[..8]));
        let invalid: Vec<String> = view
            .clouds
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match &c.answer {
                Some(MetaAnswer::Invalid(r)) => Some(format!("{}: {r}", self.inner.clouds[i].name)),
                _ => None,
            })
            .collect();
        if !invalid.is_empty() {
            rep.unverifiable
                .push(format!("{label}: {}", invalid.join("; ")));
            return;
        }
        let doomed = match &best {
            // No cloud of a quorum holds metadata: no write of this key completed.
            None => Doomed {
                unreferenced: true,
                ..Doomed::default()
            },
            Some(meta) => {
                self.gc_versions(&label, id, meta, keep, cutoff_ms, rep)
                    .await
            }
        };
        self.delete_blobs(id, &doomed, cutoff_ms, rep).await;
    }

    /// Drops the versions of `meta` that may go, by compare-and-swap against `meta`'s
    /// newest version; returns what may then be deleted.
    async fn gc_versions(
        &self,
        key: &str,
        id: &[u8; 32],
        meta: &Metadata,
        keep: usize,
        cutoff_ms: u64,
        rep: &mut GcReport,
    ) -> Doomed {
        let blobs = |entries: &[crate::meta::VersionEntry]| -> HashSet<[u8; 16]> {
            entries
                .iter()
                .filter_map(|e| e.object.as_ref().map(|o| o.blob_id))
                .collect()
        };
        let entries = &meta.entries;
        // Versions dropped by writers beyond VERSIONS_MAX left unreferenced blobs that
        // were superseded no later than the oldest listed version was written.
        let unreferenced = entries.len() < VERSIONS_MAX
            || entries.last().is_some_and(|e| e.created_ms <= cutoff_ms);
        let kept = kept_len(meta, keep, cutoff_ms);
        let mut doomed = Doomed {
            dropped: HashSet::new(),
            referenced: blobs(entries),
            unreferenced,
        };
        if kept == entries.len() {
            return doomed;
        }
        let read = meta.latest().version;
        let oldest_kept = entries[kept - 1].version;
        let r = self
            .update_meta(key, id, |base| match base {
                Some(b) if b.latest().version == read => Ok(b
                    .entries
                    .iter()
                    .take_while(|e| e.version >= oldest_kept)
                    .cloned()
                    .collect()),
                _ => Err(StoreError::VersionChanged {
                    key: key.to_owned(),
                }),
            })
            .await;
        match r {
            Ok(_) => {
                rep.versions_dropped += entries.len() - kept;
                if meta.latest().object.is_none() && kept == 1 {
                    rep.keys_purged += 1;
                }
                doomed.referenced = blobs(&entries[..kept]);
                doomed.dropped = blobs(&entries[kept..]);
            }
            Err(StoreError::VersionChanged { .. }) => rep.warnings.push(format!(
                "{key}: changed while gc ran; left for the next run"
            )),
            Err(e) => rep.warnings.push(format!("{key}: {}", one_line(&e))),
        }
        doomed
    }

    /// Deletes, on every cloud, the blobs of dropped versions and the unreferenced blobs
    /// older than the cutoff.
    async fn delete_blobs(
        &self,
        id: &[u8; 32],
        doomed: &Doomed,
        cutoff_ms: u64,
        rep: &mut GcReport,
    ) {
        for c in &self.inner.clouds {
            let objs: Vec<object_store::ObjectMeta> = match tokio::time::timeout(
                self.inner.tuning.op_timeout * 4,
                c.store().list(Some(&blobs_prefix(id))).try_collect(),
            )
            .await
            {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    rep.warnings
                        .push(format!("{}: listing blobs: {}", c.name, one_line(&e)));
                    continue;
                }
                Err(_) => {
                    rep.warnings
                        .push(format!("{}: listing blobs timed out", c.name));
                    continue;
                }
            };
            let doomed: Vec<Path> = objs
                .into_iter()
                .filter(|o| {
                    let blob = o
                        .location
                        .parts()
                        .nth(4)
                        .and_then(|p| parse_hex::<16>(p.as_ref()));
                    match blob {
                        Some(b) if doomed.dropped.contains(&b) => true,
                        Some(b) if doomed.referenced.contains(&b) => false,
                        _ => {
                            doomed.unreferenced
                                && (o.last_modified.timestamp_millis().max(0) as u64) <= cutoff_ms
                        }
                    }
                })
                .map(|o| o.location)
                .collect();
            let count = doomed.len();
            let deleted = c
                .store()
                .delete_stream(stream::iter(doomed.into_iter().map(Ok)).boxed())
                .filter(|r| futures::future::ready(r.is_ok()))
                .count()
                .await;
            rep.objects_deleted += deleted;
            if deleted < count {
                rep.warnings
                    .push(format!("{}: {} deletions failed", c.name, count - deleted));
            }
        }
    }
}

/// How many of `meta`'s newest versions gc keeps: the newest `keep` (only the tombstone
/// of a deleted key), and every version superseded after `cutoff_ms`. Always at least
/// one, so the newest version, the key's version floor, stays.
fn kept_len(meta: &Metadata, keep: usize, cutoff_ms: u64) -> usize {
    let e = &meta.entries;
    let keep = if e[0].object.is_none() { 1 } else { keep };
    let mut kept = e.len();
    // Version `kept - 1` was superseded when version `kept - 2` was written.
    while kept > keep.max(1) && e[kept - 2].created_ms <= cutoff_ms {
        kept -= 1;
    }
    kept
}
