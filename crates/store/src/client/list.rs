//! Listing: merging the clouds' listings, and `list`.
//!
//! Invariants (ADR 0003, ADR 0006):
//!
//! - A listing succeeds only if `n − f` clouds listed their metadata: a lying cloud can
//!   hide or invent names, but a completed write is listed by at least one correct cloud of
//!   any `n − f`.
//! - A cloud that lists a name twice backs it once.
//! - Metadata is read only for names that at least `f + 1` clouds list: a completed write
//!   is held by `n − f` clouds, `f + 1` of them correct, and each of those lists it; a name
//!   fewer clouds list is at most an incomplete write or an invention of a faulty cloud.
//! - Neither work nor memory grows with names that fewer than `f + 1` clouds list (ADR
//!   0006). Ordered listings (see [`Cloud::lists_in_order`]) are merged name by name, in
//!   ascending order, holding one name per listing; a listing that goes backwards fails
//!   as that cloud's listing. An unordered listing (a local directory) is sorted in memory
//!   first, at most `unordered_listing_names_max` names, or fails as that cloud's listing.
//! - Names, sizes and attributes in `list` come from verified metadata, never from a
//!   cloud's listing alone.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;

use super::metadata::Wait;
use super::{CloudOfClouds, ListEntry, ROOT, join_failures, meta_prefix, one_line, parse_hex};
use crate::StoreError;
use crate::cloud::Cloud;

/// What the clouds list, from [`CloudOfClouds::listed_names`].
#[derive(Default)]
pub(super) struct Listed {
    /// Names that at least `f + 1` clouds list, ascending, each with the clouds (ascending)
    /// that list it.
    pub(super) names: Vec<([u8; 32], Vec<usize>)>,
    /// Names that at most `f` clouds list (skipped).
    pub(super) unbacked: usize,
    /// Blob listings that failed, `cloud: why` (they do not count against the quorum).
    pub(super) warnings: Vec<String>,
}

/// Which objects of a cloud a listing walks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// `m/<name_id>`: one object per key.
    Metadata,
    /// `b/<name_id>/<blob_id>/…`: the blob objects; a name per blob directory.
    Blobs,
}

/// One cloud's listing, read one name at a time in ascending order.
struct Lister {
    cloud: usize,
    walk: Walk,
    /// The name of each listed object, if it is one of ours.
    names: BoxStream<'static, Result<Option<[u8; 32]>, String>>,
    /// Names of an unordered listing sorted in memory and not yet merged.
    sorted: usize,
    /// Most names the sort of an unordered listing held.
    sorted_max: usize,
    /// The smallest name not yet merged.
    head: Option<[u8; 32]>,
    /// The last name read, to drop repeats and refuse a listing that goes backwards.
    last: Option<[u8; 32]>,
    failed: Option<String>,
}

impl Lister {
    fn start(c: &Cloud, walk: Walk) -> Self {
        let prefix = match walk {
            Walk::Metadata => meta_prefix(),
            Walk::Blobs => Path::from(format!("{ROOT}/b")),
        };
        // Parsed while streaming: at most 32 bytes kept per name, not its path.
        let names = c
            .store()
            .list(Some(&prefix))
            .map(move |r| {
                let m = r.map_err(|e| one_line(&e))?;
                Ok(match walk {
                    Walk::Metadata => m.location.filename().and_then(parse_hex::<32>),
                    Walk::Blobs => m
                        .location
                        .parts()
                        .nth(3)
                        .and_then(|p| parse_hex::<32>(p.as_ref())),
                })
            })
            .boxed();
        Self {
            cloud: c.index,
            walk,
            names,
            sorted: 0,
            sorted_max: 0,
            head: None,
            last: None,
            failed: None,
        }
    }

    /// Reads the first name. An unordered listing is read whole and sorted first, at most
    /// `cap` distinct names.
    async fn prime(&mut self, ordered: bool, cap: usize, deadline: tokio::time::Instant) {
        if !ordered {
            let mut set = BTreeSet::new();
            loop {
                match tokio::time::timeout_at(deadline, self.names.next()).await {
                    Err(_) => return self.fail("timed out".into()),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => return self.fail(e),
                    Ok(Some(Ok(None))) => {}
                    Ok(Some(Ok(Some(id)))) => {
                        if set.len() >= cap && !set.contains(&id) {
                            return self.fail(format!(
                                "lists more than {cap} names in no particular order, the most \
                                 that are sorted in memory (Tuning::unordered_listing_names_max)"
                            ));
                        }
                        set.insert(id);
                        self.sorted_max = set.len();
                    }
                }
            }
            self.sorted = set.len();
            self.names = stream::iter(set.into_iter().map(|id| Ok(Some(id)))).boxed();
        }
        self.advance(deadline).await;
    }

    /// Moves `head` to the next name. A listing that fails, runs past `deadline` or goes
    /// backwards ends as failed (a backend that lists in order never goes backwards).
    async fn advance(&mut self, deadline: tokio::time::Instant) {
        self.head = None;
        while self.failed.is_none() {
            let id = match tokio::time::timeout_at(deadline, self.names.next()).await {
                Err(_) => return self.fail("timed out".into()),
                Ok(None) => return,
                Ok(Some(Err(e))) => return self.fail(e),
                Ok(Some(Ok(None))) => continue,
                Ok(Some(Ok(Some(id)))) => id,
            };
            self.sorted = self.sorted.saturating_sub(1);
            match self.last {
                // A cloud that lists a name twice still backs it once.
                Some(last) if id == last => continue,
                Some(last) if id < last => {
                    return self.fail("listing is not in ascending order".into());
                }
                _ => {}
            }
            self.last = Some(id);
            self.head = Some(id);
            return;
        }
    }

    fn fail(&mut self, why: String) {
        self.head = None;
        self.sorted = 0;
        self.names = stream::empty().boxed();
        self.failed = Some(why);
    }

    /// Names this listing holds in memory.
    fn held(&self) -> usize {
        self.sorted + usize::from(self.head.is_some())
    }
}

impl CloudOfClouds {
    /// The names that at least `f + 1` clouds list in their metadata (and, with `blobs`,
    /// their blob directories: a cloud backs a name if it lists either), with the clouds
    /// that list each, and how many names fewer clouds list. Needs `n − f` clouds to list
    /// their metadata successfully (a lying cloud can hide or invent entries, but a
    /// completed write is listed by at least one correct cloud of any `n − f`).
    ///
    /// The listings are merged in ascending order of name, one name per listing at a
    /// time, so memory grows only with the names returned, never with names fewer than
    /// `f + 1` clouds list.
    pub(super) async fn listed_names(&self, blobs: bool) -> Result<Listed, StoreError> {
        let deadline = tokio::time::Instant::now() + self.inner.tuning.op_timeout * 4;
        let cap = self.inner.tuning.unordered_listing_names_max;
        let walks: &[Walk] = if blobs {
            &[Walk::Metadata, Walk::Blobs]
        } else {
            &[Walk::Metadata]
        };
        let clouds = &self.inner.clouds;
        let mut listers: Vec<Lister> = walks
            .iter()
            .flat_map(|&w| clouds.iter().map(move |c| Lister::start(c, w)))
            .collect();
        futures::future::join_all(
            listers
                .iter_mut()
                .map(|l| l.prime(clouds[l.cloud].lists_in_order(), cap, deadline)),
        )
        .await;
        let mut out = Listed::default();
        let held = |listers: &[Lister], out: &Listed| {
            listers.iter().map(Lister::held).sum::<usize>() + out.names.len()
        };
        // The sorts of unordered listings ran concurrently: count each one's peak.
        let mut held_max = listers
            .iter()
            .map(|l| l.sorted_max.max(l.held()))
            .sum::<usize>();
        while let Some(min) = listers.iter().filter_map(|l| l.head).min() {
            let mut by: Vec<usize> = listers
                .iter()
                .filter(|l| l.head == Some(min))
                .map(|l| l.cloud)
                .collect();
            by.sort_unstable();
            by.dedup();
            if by.len() > self.f() {
                out.names.push((min, by));
            } else {
                out.unbacked += 1;
            }
            futures::future::join_all(
                listers
                    .iter_mut()
                    .filter(|l| l.head == Some(min))
                    .map(|l| l.advance(deadline)),
            )
            .await;
            held_max = held_max.max(held(&listers, &out));
        }
        self.inner
            .listing_held_max
            .fetch_max(held_max, Ordering::Relaxed);
        let mut failures = Vec::new();
        let mut answered = 0;
        for l in &listers {
            let name = &clouds[l.cloud].name;
            match (&l.failed, l.walk) {
                (None, Walk::Metadata) => answered += 1,
                (Some(e), Walk::Metadata) => failures.push((name.clone(), e.clone())),
                (Some(e), Walk::Blobs) => out.warnings.push(format!("{name}: listing blobs: {e}")),
                (None, Walk::Blobs) => {}
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
        Ok(out)
    }

    /// Lists live objects whose key starts with `prefix`, sorted by key. Names and sizes
    /// come from verified metadata, never from a cloud's listing alone.
    ///
    /// Only names that at least `f + 1` clouds list cost a metadata read: a completed
    /// write is held by `n − f` clouds, at least `f + 1` of them correct, and each of those
    /// lists it, so a name fewer clouds list is at most an incomplete write (or invented by
    /// a faulty cloud, which would otherwise cost a read of every cloud per name).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, StoreError> {
        let ids = self
            .listed_names(false)
            .await?
            .names
            .into_iter()
            .map(|(id, _)| id);
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
