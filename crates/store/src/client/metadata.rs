//! Metadata: the quorum read and the compare-and-swap write.
//!
//! Invariants (ADR 0001, ADR 0002, ADR 0006):
//!
//! - Metadata bytes from a cloud are used only after `decode_verified` checked the
//!   signature of a trusted writer and the binding to this store and name id; anything
//!   else is [`MetaAnswer::Invalid`] and strikes the cloud. Reads are bounded by
//!   `META_BYTES_MAX` before allocation.
//! - A read returns only with at least `n − f` answers (a cloud without metadata is an
//!   answer, an unreachable one is not), and takes the highest valid version among them
//!   (DepSky's read rule). Missing metadata proves nothing; only answers that fail
//!   verification count as faults, and more than `f` of them refuse the read
//!   ([`MetaView::require`]). Whether it refuses must not depend on which clouds answered
//!   first, so [`Wait::Read`] hears the rest (within `dissent_grace`) when invalid
//!   metadata sits beside valid metadata.
//! - A write builds only on the highest valid version it read and refuses, as reads do,
//!   when more than `f` answers fail verification: building on less could lower the
//!   version counter and lose writes.
//! - The compare-and-swap goes to every cloud, against the token of the read round where
//!   there is one and from a fresh read otherwise; it completes with `n − f` swaps (any
//!   two such quorums share a correct cloud, so two writers cannot both win on one base).
//!   A lost race retries with a higher version after randomised backoff, at most
//!   `cas_attempts_max` times, then [`StoreError::Conflict`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use rand_core::{OsRng, RngCore};

use super::quorum::{Background, Quorum};
use super::{CloudOfClouds, join_failures, meta_path, one_line};
use crate::StoreError;
use crate::cloud::{CasOutcome, CasToken, Cloud, CloudError};
use crate::meta::{META_BYTES_MAX, Metadata, Version, VersionEntry};

#[derive(Clone)]
pub(super) enum MetaAnswer {
    Unreachable(String),
    Absent,
    Invalid(String),
    Valid(Box<Metadata>, Bytes),
}

pub(super) struct CloudMeta {
    pub(super) answer: Option<MetaAnswer>,
    pub(super) token: Option<CasToken>,
}

pub(super) struct MetaView {
    pub(super) clouds: Vec<CloudMeta>,
    /// Index of a cloud holding the highest valid version.
    best: Option<usize>,
}

impl MetaView {
    pub(super) fn best(&self) -> Option<(&Metadata, &Bytes)> {
        match self.clouds[self.best?].answer.as_ref()? {
            MetaAnswer::Valid(m, b) => Some((m, b)),
            _ => None,
        }
    }

    /// Per-cloud reasons for answers that fail verification.
    pub(super) fn invalid_answers(&self, clouds: &[Arc<Cloud>]) -> Vec<(String, String)> {
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
    pub(super) fn require(
        &self,
        key: &str,
        clouds: &[Arc<Cloud>],
        f: usize,
    ) -> Result<&Metadata, StoreError> {
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
pub(super) fn divergent_version(best: &Metadata, other: &Metadata) -> Option<Version> {
    other.entries.iter().map(|e| e.version).find(|v| {
        best.entries
            .iter()
            .any(|b| b.version.counter == v.counter && b.version != *v)
    })
}

#[derive(Clone, Copy)]
pub(super) enum Wait {
    /// Return at `n − f` answers, after a grace period for the rest.
    Quorum(Duration),
    /// Return at `n − f` answers if they agree; if valid metadata sits beside invalid
    /// metadata, hear the remaining clouds (within `dissent_grace`) first, so that whether
    /// more than `f` clouds misbehave does not depend on which answered first.
    Read,
    /// Wait for every cloud (up to the op timeout).
    All,
}

impl CloudOfClouds {
    pub(super) async fn read_meta(
        &self,
        name_id: &[u8; 32],
        wait: Wait,
    ) -> Result<MetaView, StoreError> {
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
    pub(super) async fn update_meta<F>(
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
}
