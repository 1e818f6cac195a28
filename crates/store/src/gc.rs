//! Garbage collection: dropping old versions and reclaiming blobs nothing references.

use std::collections::HashSet;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::{CloudOfClouds, ROOT, Wait, blobs_prefix, meta_path, now_ms, one_line, parse_hex};
use crate::StoreError;
use crate::meta::VERSIONS_MAX;

/// Result of `gc`.
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// Keys examined.
    pub keys: usize,
    /// Old versions dropped from metadata.
    pub versions_dropped: usize,
    /// Blob objects deleted across all clouds.
    pub objects_deleted: usize,
    /// Deleted keys whose metadata was removed entirely.
    pub keys_purged: usize,
    /// Problems that did not stop the collection.
    pub warnings: Vec<String>,
}

impl CloudOfClouds {
    /// Drops all but the newest `keep` versions of every key from metadata, deletes
    /// their blobs, purges deleted keys, and deletes unreferenced blobs older than
    /// `grace` (younger ones may belong to writes in progress).
    pub async fn gc(&self, keep: usize, grace: Duration) -> Result<GcReport, StoreError> {
        let keep = keep.clamp(1, VERSIONS_MAX);
        let mut rep = GcReport::default();
        let listed = self.listed_names().await?;
        let mut ids: HashSet<[u8; 32]> = listed.keys().copied().collect();
        // Blob directories without metadata (writes that crashed before their metadata).
        for c in &self.inner.clouds {
            let prefix = Path::from(format!("{ROOT}/b"));
            if let Ok(Ok(l)) = tokio::time::timeout(
                self.inner.tuning.op_timeout,
                c.store().list_with_delimiter(Some(&prefix)),
            )
            .await
            {
                ids.extend(
                    l.common_prefixes
                        .iter()
                        .filter_map(|p| p.filename().and_then(parse_hex::<32>)),
                );
            }
        }
        // Inclusive: with a zero grace period everything written up to now qualifies.
        let cutoff_ms = now_ms().saturating_sub(grace.as_millis() as u64);
        for id in ids {
            rep.keys += 1;
            let view = match self
                .read_meta(&id, Wait::Quorum(self.inner.tuning.quorum_grace))
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    rep.warnings
                        .push(format!("{}: {}", hex::encode(&id[..8]), one_line(&e)));
                    continue;
                }
            };
            let mut referenced: HashSet<[u8; 16]> = HashSet::new();
            let mut purge = false;
            if let Some((meta, _)) = view.best() {
                let key = self
                    .decrypt_name(&id, meta.latest())
                    .unwrap_or_else(|| hex::encode(&id[..8]));
                let latest = meta.latest();
                if latest.object.is_none() && latest.created_ms <= cutoff_ms {
                    purge = true;
                } else if meta.entries.len() > keep {
                    let dropped = meta.entries.len() - keep;
                    let r = self
                        .update_meta(&key, &id, |base| {
                            let b = base.ok_or(StoreError::NotFound { key: key.clone() })?;
                            Ok(b.entries.iter().take(keep).cloned().collect())
                        })
                        .await;
                    match r {
                        Ok(_) => rep.versions_dropped += dropped,
                        Err(e) => {
                            rep.warnings.push(format!("{key}: {}", one_line(&e)));
                            // Keep everything the current metadata references.
                            referenced.extend(
                                meta.entries
                                    .iter()
                                    .filter_map(|e| e.object.as_ref().map(|o| o.blob_id)),
                            );
                        }
                    }
                    referenced.extend(
                        meta.entries
                            .iter()
                            .take(keep)
                            .filter_map(|e| e.object.as_ref().map(|o| o.blob_id)),
                    );
                } else {
                    referenced.extend(
                        meta.entries
                            .iter()
                            .filter_map(|e| e.object.as_ref().map(|o| o.blob_id)),
                    );
                }
            }
            // Blobs referenced by no kept version: delete those of dropped versions now,
            // unknown ones only once they are older than the grace period.
            let dropped_blobs: HashSet<[u8; 16]> = view
                .best()
                .map(|(m, _)| {
                    m.entries
                        .iter()
                        .filter_map(|e| e.object.as_ref().map(|o| o.blob_id))
                        .collect()
                })
                .unwrap_or_default();
            for c in &self.inner.clouds {
                let objs: Vec<object_store::ObjectMeta> = match tokio::time::timeout(
                    self.inner.tuning.op_timeout * 4,
                    c.store().list(Some(&blobs_prefix(&id))).try_collect(),
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
                            Some(b) if referenced.contains(&b) => false,
                            Some(b) if dropped_blobs.contains(&b) || purge => true,
                            _ => (o.last_modified.timestamp_millis().max(0) as u64) <= cutoff_ms,
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
            if purge {
                for c in &self.inner.clouds {
                    match c.store().delete(&meta_path(&id)).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => rep.warnings.push(format!("{}: {}", c.name, one_line(&e))),
                    }
                }
                rep.keys_purged += 1;
            }
        }
        Ok(rep)
    }
}
