//! `rampart bench store`: put and get throughput of the cloud-of-clouds store over four
//! (or more, or one sealed) local-directory clouds, each beside a plain `object_store` put/get of the plaintext
//! to one local directory, and the client pipeline rate (encrypt + encode + hash).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use rampart_crypto::hash::Digest;
use rampart_store::pipeline::{Codec, SegmentContext};
use rampart_store::{CloudOfClouds, Protocol, StoreConfig};
use rand_core::{OsRng, RngCore};
use tokio::io::AsyncWriteExt;

use crate::BenchError;

/// One measured case.
#[derive(Clone, Debug)]
pub struct Row {
    /// Object size in bytes.
    pub size: u64,
    /// "put" or "get".
    pub op: &'static str,
    /// Median seconds per operation through the cloud-of-clouds store.
    pub store_secs: f64,
    /// Median seconds per operation for the single-directory baseline.
    pub baseline_secs: f64,
}

impl Row {
    /// Store throughput in MB/s (10^6 bytes).
    pub fn store_mbps(&self) -> f64 {
        self.size as f64 / self.store_secs / 1e6
    }
    /// Baseline throughput in MB/s.
    pub fn baseline_mbps(&self) -> f64 {
        self.size as f64 / self.baseline_secs / 1e6
    }
    /// Store throughput relative to the baseline (1.0 = as fast).
    pub fn ratio(&self) -> f64 {
        self.baseline_secs / self.store_secs
    }
}

/// Everything `store` measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Put/get rows.
    pub rows: Vec<Row>,
    /// Single-thread pipeline rate (AES-256-GCM + Reed–Solomon 2+2 + BLAKE3), GB/s of
    /// plaintext per core.
    pub pipeline_gbps_per_core: f64,
    /// Single-thread BLAKE3 rate over the same bytes (a reference point), GB/s.
    pub blake3_gbps: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn reps_for(size: u64) -> usize {
    match size {
        0..=65_536 => 200,
        65_537..=4_194_304 => 20,
        _ => 3,
    }
}

/// Runs the benchmark with `clouds` local-directory clouds (4 or more for DepSky-CA, 1 for
/// the sealed single backend) in a fresh temporary directory under `parent`.
pub async fn run(
    sizes: &[u64],
    parent: &std::path::Path,
    clouds: usize,
) -> Result<Report, BenchError> {
    let dir = tempfile::tempdir_in(parent)?;
    let rep = rampart_store::init_local(dir.path(), clouds)?;
    let cfg = StoreConfig::load(&rep.config_path)?;
    let store = CloudOfClouds::open(cfg)?;
    let base_dir = dir.path().join("baseline");
    std::fs::create_dir_all(&base_dir)?;
    let baseline = Arc::new(LocalFileSystem::new_with_prefix(&base_dir)?);

    let mut rows = Vec::new();
    for &size in sizes {
        let mut data = vec![0u8; size as usize];
        OsRng.fill_bytes(&mut data);
        let data = Bytes::from(data);
        let reps = reps_for(size);
        let (mut sp, mut sg, mut bp, mut bg) = (vec![], vec![], vec![], vec![]);
        for r in 0..reps {
            // Alternate store and baseline so that drift hits both alike.
            let key = format!("bench/{size}/{r}");
            let t = Instant::now();
            let receipt = store.put(&key, &data[..], Vec::new(), None).await?;
            sp.push(t.elapsed().as_secs_f64());
            // Stragglers belong to the put's cost on an idle machine; let them finish
            // outside the timed region so they do not disturb the next measurement.
            receipt.background.wait(Duration::from_secs(60)).await;

            let path = Path::from(key.clone());
            let t = Instant::now();
            let mut w = BufWriter::with_capacity(baseline.clone(), path.clone(), 8 << 20);
            w.put(data.clone()).await?;
            w.shutdown().await?;
            bp.push(t.elapsed().as_secs_f64());

            let t = Instant::now();
            let mut sink = DigestSink::default();
            store.get(&key, &mut sink, None, None).await?;
            sg.push(t.elapsed().as_secs_f64());
            if sink.digest() != Digest::of(&data) {
                return Err(BenchError::Mismatch { what: key });
            }

            let t = Instant::now();
            let mut stream = baseline.get(&path).await?.into_stream();
            let mut n = 0usize;
            while let Some(chunk) = stream.next().await {
                n += chunk?.len();
            }
            bg.push(t.elapsed().as_secs_f64());
            if n != data.len() {
                return Err(BenchError::Mismatch {
                    what: format!("baseline {key}"),
                });
            }
        }
        rows.push(Row {
            size,
            op: "put",
            store_secs: median(sp),
            baseline_secs: median(bp),
        });
        rows.push(Row {
            size,
            op: "get",
            store_secs: median(sg),
            baseline_secs: median(bg),
        });
    }
    let (pipeline_gbps_per_core, blake3_gbps) = pipeline_rate(256 << 20)?;
    Ok(Report {
        rows,
        pipeline_gbps_per_core,
        blake3_gbps,
    })
}

/// Encodes `total` bytes of random plaintext in 4 MiB segments on this thread.
fn pipeline_rate(total: usize) -> Result<(f64, f64), BenchError> {
    let seg = 4 << 20;
    let mut plain = vec![0u8; seg];
    OsRng.fill_bytes(&mut plain);
    let ctx = SegmentContext {
        store_id: [1; 16],
        name_id: [2; 32],
        blob_id: [3; 16],
    };
    let codec = Codec::new(
        Protocol::Confidential,
        2,
        4,
        Some(rampart_crypto::aead::SegmentKey::generate()),
        ctx,
    )?;
    let segments = total / seg;
    let t = Instant::now();
    for i in 0..segments {
        // The same buffer shape the store's segment reader produces (room for the tag).
        let mut buf = Vec::with_capacity(seg + 64);
        buf.extend_from_slice(&plain);
        let enc = codec.encode(i as u64, i + 1 == segments, buf)?;
        std::hint::black_box(enc);
    }
    let pipeline = (segments * seg) as f64 / t.elapsed().as_secs_f64() / 1e9;
    let t = Instant::now();
    for _ in 0..segments {
        std::hint::black_box(Digest::of(&plain));
    }
    let blake3 = (segments * seg) as f64 / t.elapsed().as_secs_f64() / 1e9;
    Ok((pipeline, blake3))
}

/// An `AsyncWrite` that hashes what it is given and discards it.
#[derive(Default)]
pub struct DigestSink {
    hasher: rampart_crypto::hash::Hasher,
}

impl DigestSink {
    /// BLAKE3 of everything written so far.
    pub fn digest(&self) -> Digest {
        self.hasher.finalize()
    }
}

impl tokio::io::AsyncWrite for DigestSink {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.get_mut().hasher.update(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
