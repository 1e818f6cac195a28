//! Listing: merging the clouds' metadata listings, and `list`.
//!
//! Invariants (ADR 0003, ADR 0006):
//!
//! - A listing succeeds only if `n − f` clouds listed: a lying cloud can hide or invent
//!   names, but a completed write is listed by at least one correct cloud of any `n − f`.
//! - A cloud that lists a name twice backs it once.
//! - Metadata is read only for names that at least `f + 1` clouds list: a completed write
//!   is held by `n − f` clouds, `f + 1` of them correct, and each of those lists it; a name
//!   fewer clouds list is at most an incomplete write or an invention of a faulty cloud.
//! - Names, sizes and attributes in `list` come from verified metadata, never from a
//!   cloud's listing alone.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};

use super::metadata::Wait;
use super::{CloudOfClouds, ListEntry, join_failures, meta_prefix, one_line, parse_hex};
use crate::StoreError;

/// One cloud's metadata listing: the name ids it holds, or why it failed.
type Listing = Result<Vec<[u8; 32]>, String>;

impl CloudOfClouds {
    /// Name ids present in the metadata listings of the clouds, with which clouds listed
    /// each. Needs `n − f` clouds to list successfully (a lying cloud can hide or invent
    /// entries, but a completed write is listed by at least one correct cloud of any
    /// `n − f`).
    pub(super) async fn listed_names(&self) -> Result<BTreeMap<[u8; 32], Vec<usize>>, StoreError> {
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
}
