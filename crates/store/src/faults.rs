//! A fault-injecting `ObjectStore` wrapper, for tests and demonstrations.
//!
//! [`FaultyStore`] forwards every call to an inner store unless its [`FaultControl`] says
//! otherwise. Faults can be switched while a test runs. It models a provider that is
//! down, slow, or actively malicious: corrupting or truncating bytes, serving stale or
//! rolled-back metadata, forging metadata signatures, lying in listings, or acknowledging
//! writes it never stores.
//!
//! Nothing in production uses this module; it exists so that the fault-tolerance claims
//! are tested against a real `ObjectStore` implementation rather than a mock of the
//! protocol.
#![deny(clippy::missing_trait_methods)]

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};
use rampart_crypto::sign::SigningKey;

use crate::meta::Metadata;

/// What a faulty cloud does.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Fault {
    /// Behaves correctly.
    #[default]
    None,
    /// Every request fails at once.
    Down,
    /// Every request is delayed by this much first.
    Slow(Duration),
    /// Reads return the stored bytes with one byte flipped.
    CorruptReads,
    /// Reads of data objects (not metadata) return one byte flipped.
    CorruptData,
    /// Reads return only the first half of the bytes.
    TruncateReads,
    /// Metadata reads return the previous version written (stale).
    StaleMetadata,
    /// Metadata reads return the first version ever written (rolled back).
    RollbackMetadata,
    /// Metadata reads return a newer-looking version whose signature is forged.
    ForgeMetadata,
    /// Listings hide every other entry and invent a fake one (listed first, in order).
    LieInListings,
    /// Writes are acknowledged but silently discarded.
    DropWrites,
    /// Writes of metadata wait until the fault is changed, then go through (a pause,
    /// to order racing writers deterministically).
    HoldMetadataWrites,
    /// Writes of metadata fail: the cloud answers reads but refuses every swap.
    RefuseMetadataWrites,
    /// Reads of metadata that does not exist return invented garbage.
    InventMetadata,
    /// Listings add this many invented names (each listed twice), in order before the
    /// real ones, so that the listing still comes in ascending order.
    InventNames(u32),
    /// Reads of data objects (not metadata) send the stored bytes followed by
    /// [`OVERSIZE_BYTES`] more, produced only as the reader pulls them (see
    /// [`FaultControl::oversize_bytes_pulled`]).
    OversizeReads,
    /// Listings come in descending order (as from a backend that lists in no particular
    /// order).
    ReverseListings,
}

/// Extra bytes a cloud with [`Fault::OversizeReads`] sends after a data object's bytes.
pub const OVERSIZE_BYTES: u64 = 64 * 1024 * 1024;

/// Size of each extra chunk of [`Fault::OversizeReads`].
const OVERSIZE_CHUNK: usize = 64 * 1024;

/// The first, the previous and the latest bytes written to one metadata path.
struct History {
    first: Bytes,
    previous: Option<Bytes>,
    latest: Bytes,
}

#[derive(Default)]
struct State {
    fault: Fault,
    /// For metadata paths: what was written (bounded: three versions per path).
    history: HashMap<Path, History>,
    /// Metadata reads served so far.
    metadata_reads: u64,
    /// Extra bytes of [`Fault::OversizeReads`] the readers pulled.
    oversize_pulled: u64,
}

/// Handle that switches a [`FaultyStore`]'s behaviour.
#[derive(Clone, Default)]
pub struct FaultControl(Arc<Mutex<State>>);

impl FaultControl {
    /// Sets the current fault.
    pub fn set(&self, fault: Fault) {
        self.0.lock().expect("fault state lock").fault = fault;
    }

    /// The current fault.
    pub fn get(&self) -> Fault {
        self.0.lock().expect("fault state lock").fault.clone()
    }

    /// How many of the extra bytes of [`Fault::OversizeReads`] readers pulled so far.
    pub fn oversize_bytes_pulled(&self) -> u64 {
        self.0.lock().expect("fault state lock").oversize_pulled
    }

    /// How many metadata reads this cloud has been asked for.
    pub fn metadata_reads(&self) -> u64 {
        self.0.lock().expect("fault state lock").metadata_reads
    }
}

impl fmt::Debug for FaultControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultControl({:?})", self.get())
    }
}

/// An `ObjectStore` that injects [`Fault`]s in front of an inner store.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    ctl: FaultControl,
}

impl FaultyStore {
    /// Wraps `inner`; returns the store and its control handle.
    pub fn new(inner: Arc<dyn ObjectStore>) -> (Arc<Self>, FaultControl) {
        let ctl = FaultControl::default();
        (
            Arc::new(Self {
                inner,
                ctl: ctl.clone(),
            }),
            ctl,
        )
    }

    async fn gate(&self) -> Result<Fault> {
        let fault = self.ctl.get();
        match &fault {
            Fault::Down => Err(injected("cloud down")),
            Fault::Slow(d) => {
                tokio::time::sleep(*d).await;
                Ok(fault)
            }
            _ => Ok(fault),
        }
    }

    fn is_metadata(path: &Path) -> bool {
        path.as_ref().contains("/m/")
    }

    fn record(&self, path: &Path, bytes: &Bytes) {
        if !Self::is_metadata(path) {
            return;
        }
        let mut st = self.ctl.0.lock().expect("fault state lock");
        match st.history.get_mut(path) {
            None => {
                let h = History {
                    first: bytes.clone(),
                    previous: None,
                    latest: bytes.clone(),
                };
                st.history.insert(path.clone(), h);
            }
            Some(h) => h.previous = Some(std::mem::replace(&mut h.latest, bytes.clone())),
        }
    }

    /// The bytes a malicious cloud serves instead of the current metadata, if any.
    fn substitute_metadata(&self, fault: &Fault, path: &Path, current: &Bytes) -> Option<Bytes> {
        if !Self::is_metadata(path) {
            return None;
        }
        let st = self.ctl.0.lock().expect("fault state lock");
        let h = st.history.get(path)?;
        match fault {
            Fault::RollbackMetadata => Some(h.first.clone()),
            // The version written before the current one (if there was one).
            Fault::StaleMetadata => h.previous.clone(),
            Fault::ForgeMetadata => forge(current),
            _ => None,
        }
    }
}

/// Keeps the trusted signer's name but bumps the version and signs with an attacker key.
fn forge(current: &Bytes) -> Option<Bytes> {
    let mut meta = Metadata::decode_unverified(current).ok()?;
    let attacker = SigningKey::generate();
    let claimed = meta.signer;
    meta.entries[0].version.counter = meta.entries[0].version.counter.saturating_add(1000);
    if let Some(o) = meta.entries[0].object.as_mut() {
        o.size = o.size.saturating_add(1);
    }
    meta.entries[0].seal_tag();
    meta.signer = attacker.verifying_key();
    let mut bytes = meta.sign(&attacker);
    // Splice the trusted signer's public key back in: the signature no longer matches it.
    let sig_at = bytes.len() - 64;
    bytes[sig_at - 32..sig_at].copy_from_slice(&claimed.to_bytes());
    Some(Bytes::from(bytes))
}

/// Garbage served as the metadata of a key that does not exist.
fn invented(location: &Path) -> GetResult {
    let out = Bytes::from_static(b"RMPM\x01 invented by a lying cloud, not signed metadata");
    let len = out.len() as u64;
    GetResult {
        payload: GetResultPayload::Stream(stream::once(async move { Ok(out) }).boxed()),
        meta: ObjectMeta {
            location: location.clone(),
            last_modified: Default::default(),
            size: len,
            e_tag: Some("invented".into()),
            version: None,
        },
        range: 0..len,
        attributes: Default::default(),
        extensions: Default::default(),
    }
}

fn injected(what: &'static str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected fault: {what}").into(),
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({}, {:?})", self.inner, self.ctl.get())
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[derive(Debug)]
struct DiscardUpload;

#[async_trait]
impl MultipartUpload for DiscardUpload {
    fn put_part(&mut self, _data: PutPayload) -> UploadPart {
        Box::pin(async { Ok(()) })
    }
    async fn complete(&mut self) -> Result<PutResult> {
        Ok(PutResult {
            e_tag: Some("discarded".into()),
            version: None,
            extensions: Default::default(),
        })
    }
    async fn abort(&mut self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let fault = self.gate().await?;
        if fault == Fault::DropWrites {
            return Ok(PutResult {
                e_tag: Some("discarded".into()),
                version: None,
                extensions: Default::default(),
            });
        }
        if Self::is_metadata(location) {
            match fault {
                Fault::RefuseMetadataWrites => return Err(injected("metadata writes refused")),
                Fault::HoldMetadataWrites => {
                    while self.ctl.get() == Fault::HoldMetadataWrites {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                _ => {}
            }
        }
        let bytes: Bytes = payload.clone().into();
        let res = self.inner.put_opts(location, payload, opts).await?;
        self.record(location, &bytes);
        Ok(res)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        if self.gate().await? == Fault::DropWrites {
            return Ok(Box::new(DiscardUpload));
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if Self::is_metadata(location) {
            self.ctl.0.lock().expect("fault state lock").metadata_reads += 1;
        }
        let fault = self.gate().await?;
        let res = match self.inner.get_opts(location, options).await {
            Err(object_store::Error::NotFound { .. })
                if fault == Fault::InventMetadata && Self::is_metadata(location) =>
            {
                return Ok(invented(location));
            }
            r => r?,
        };
        let tamper = (fault == Fault::CorruptData && !Self::is_metadata(location))
            || matches!(
                fault,
                Fault::CorruptReads
                    | Fault::TruncateReads
                    | Fault::StaleMetadata
                    | Fault::RollbackMetadata
                    | Fault::ForgeMetadata
            );
        if fault == Fault::OversizeReads && !Self::is_metadata(location) {
            let ctl = self.ctl.clone();
            let chunks = OVERSIZE_BYTES.div_ceil(OVERSIZE_CHUNK as u64);
            let extra = stream::iter(0..chunks).map(move |_| {
                ctl.0.lock().expect("fault state lock").oversize_pulled += OVERSIZE_CHUNK as u64;
                Ok(Bytes::from(vec![0u8; OVERSIZE_CHUNK]))
            });
            let GetResult {
                meta,
                range,
                attributes,
                extensions,
                payload,
            } = res;
            let body = GetResult {
                meta: meta.clone(),
                range: range.clone(),
                attributes: attributes.clone(),
                extensions: extensions.clone(),
                payload,
            }
            .into_stream();
            return Ok(GetResult {
                payload: GetResultPayload::Stream(body.chain(extra).boxed()),
                meta,
                range,
                attributes,
                extensions,
            });
        }
        if !tamper || res.range.is_empty() {
            return Ok(res);
        }
        let GetResult {
            meta,
            range,
            attributes,
            extensions,
            payload,
        } = res;
        let bytes = GetResult {
            meta: meta.clone(),
            range: range.clone(),
            attributes: attributes.clone(),
            extensions: extensions.clone(),
            payload,
        }
        .bytes()
        .await?;
        let out = match fault {
            Fault::CorruptReads | Fault::CorruptData => {
                let mut v = bytes.to_vec();
                let i = v.len() / 2;
                v[i] ^= 0x01;
                Bytes::from(v)
            }
            Fault::TruncateReads => bytes.slice(..bytes.len() / 2),
            _ => self
                .substitute_metadata(&fault, location, &bytes)
                .unwrap_or(bytes),
        };
        let range = range.start..range.start + out.len() as u64;
        let mut meta = meta;
        if Self::is_metadata(location) {
            meta.size = out.len() as u64;
        }
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream::once(async move { Ok(out) }).boxed()),
            meta,
            range,
            attributes,
            extensions,
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let opts = GetOptions {
                range: Some(r.clone().into()),
                ..Default::default()
            };
            out.push(self.get_opts(location, opts).await?.bytes().await?);
        }
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        match self.ctl.get() {
            Fault::Down => locations.map(|_| Err(injected("cloud down"))).boxed(),
            Fault::DropWrites => locations,
            _ => self.inner.delete_stream(locations),
        }
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let fault = self.ctl.get();
        let inner = self.inner.list(prefix);
        match fault {
            Fault::Down => stream::once(async { Err(injected("cloud down")) }).boxed(),
            Fault::LieInListings => lie(inner, prefix.cloned()),
            Fault::InventNames(k) => invented_names(k, prefix.cloned()).chain(inner).boxed(),
            Fault::ReverseListings => stream::once(inner.collect::<Vec<_>>())
                .flat_map(|mut v| {
                    v.reverse();
                    stream::iter(v)
                })
                .boxed(),
            _ => inner,
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let fault = self.ctl.get();
        let inner = self.inner.list_with_offset(prefix, offset);
        match fault {
            Fault::Down => stream::once(async { Err(injected("cloud down")) }).boxed(),
            Fault::LieInListings => lie(inner, prefix.cloned()),
            _ => inner,
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let fault = self.gate().await?;
        let mut res = self.inner.list_with_delimiter(prefix).await?;
        if fault == Fault::LieInListings {
            let mut i = 0u32;
            res.objects.retain(|_| {
                i += 1;
                i.is_multiple_of(2)
            });
        }
        Ok(res)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        if self.gate().await? == Fault::DropWrites {
            return Ok(());
        }
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        if self.gate().await? == Fault::DropWrites {
            return Ok(());
        }
        self.inner.rename_opts(from, to, options).await
    }
}

/// `k` invented names under `prefix`, each listed twice.
fn invented_names(k: u32, prefix: Option<Path>) -> BoxStream<'static, Result<ObjectMeta>> {
    let prefix = prefix.unwrap_or_else(|| Path::from("invented"));
    stream::iter((0..k).flat_map(move |i| {
        let meta = ObjectMeta {
            location: prefix.clone().join(format!("{:064x}", u64::from(i) + 1)),
            last_modified: Default::default(),
            size: 1,
            e_tag: None,
            version: None,
        };
        [Ok(meta.clone()), Ok(meta)]
    }))
    .boxed()
}

/// Hides every other entry and appends an invented one under the same prefix.
fn lie(
    inner: BoxStream<'static, Result<ObjectMeta>>,
    prefix: Option<Path>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    let mut i = 0u64;
    let hidden = inner.filter(move |_| {
        i += 1;
        futures::future::ready(i.is_multiple_of(2))
    });
    let fake_path = match prefix {
        Some(p) => p
            .clone()
            .join("00000000000000000000000000000000000000000000000000000000deadbeef"),
        None => Path::from("invented-by-a-lying-cloud"),
    };
    let fake = ObjectMeta {
        location: fake_path,
        last_modified: Default::default(),
        size: 1,
        e_tag: None,
        version: None,
    };
    // First, so that the listing still comes in ascending order.
    stream::once(async move { Ok(fake) }).chain(hidden).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    async fn read(s: &FaultyStore, p: &Path) -> Result<Bytes> {
        s.get(p).await?.bytes().await
    }

    #[tokio::test]
    async fn metadata_faults_serve_the_right_old_versions() {
        let (s, ctl) = FaultyStore::new(Arc::new(InMemory::new()));
        let p = Path::from("rampart/v1/m/abc");
        for v in ["v1", "v2", "v3"] {
            s.put(&p, PutPayload::from(v.as_bytes().to_vec()))
                .await
                .unwrap();
        }
        assert_eq!(read(&s, &p).await.unwrap(), "v3");
        ctl.set(Fault::StaleMetadata);
        assert_eq!(read(&s, &p).await.unwrap(), "v2");
        ctl.set(Fault::RollbackMetadata);
        assert_eq!(read(&s, &p).await.unwrap(), "v1");
        ctl.set(Fault::CorruptReads);
        assert_ne!(read(&s, &p).await.unwrap(), "v3");
        ctl.set(Fault::Down);
        assert!(read(&s, &p).await.is_err());
        ctl.set(Fault::DropWrites);
        s.put(&p, PutPayload::from(b"v4".to_vec())).await.unwrap();
        ctl.set(Fault::None);
        assert_eq!(
            read(&s, &p).await.unwrap(),
            "v3",
            "dropped writes are not stored"
        );
    }
}
