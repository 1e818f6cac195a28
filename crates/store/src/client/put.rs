//! The write path: `put` and `delete`.
//!
//! Invariants (crate docs, ADR 0003, ADR 0005):
//!
//! - Data lands before metadata: the metadata naming a blob is swapped only after `n − f`
//!   clouds completed their upload of it (and of its manifest, if not inline), so metadata
//!   never points at data that fewer than `n − f` clouds hold.
//! - Every version gets a fresh random `blob_id`; blobs are write-once, and a write that
//!   loses a compare-and-swap race retries only its metadata.
//! - On any error before the metadata write nothing becomes visible: every upload is
//!   aborted and no metadata is written.
//! - Memory is bounded by the segment size times the pipeline depth (two segments
//!   encoding, bounded queues per cloud), whatever the input size; an object has at most
//!   `SEGMENTS_MAX` segments and attributes at most `ATTRS_PLAIN_BYTES_MAX` bytes.
//! - A new version's counter is one above the base's newest, and the version list is
//!   bounded by `VERSIONS_MAX`. A delete is a signed tombstone, never a removal: it keeps
//!   the key's version floor (ADR 0005).

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use rampart_crypto::aead::SegmentKey;
use rampart_crypto::hash::{Digest, Hasher};
use rampart_crypto::shamir;
use rand_core::{OsRng, RngCore};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

use super::quorum::{Background, Quorum, Uploads};
use super::{
    CloudOfClouds, Progress, PutReceipt, join_failures, key_wrap_aad, manifest_path, one_line,
};
use crate::StoreError;
use crate::meta::{
    ATTRS_PLAIN_BYTES_MAX, MANIFEST_BYTES_MAX, MANIFEST_INLINE_MAX, Manifest, Metadata, ObjectRef,
    Protocol, SEGMENTS_MAX, VERSIONS_MAX, Version, VersionEntry,
};
use crate::pipeline::{Codec, EncodedSegment, SegmentContext};

impl CloudOfClouds {
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
