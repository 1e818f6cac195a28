//! `rampart demo`: the main job on the embedded default, end to end.
//!
//! Creates a local cloud-of-clouds (4 directories, f = 1), stores a file, then
//! destroys and corrupts clouds the way a failing or malicious provider would, and
//! shows that reads still return the exact bytes, that `scrub` names and repairs the
//! faulty clouds, and that with three clouds destroyed a read fails instead of returning
//! anything wrong. Then it starts a BFT-replicated KV service of 4 replicas in this
//! process (`rampart kv up`), writes through it, crashes the leader, keeps writing through
//! the leader change and reads every value back.
// The CLI reports elapsed wall-clock time; it is a runtime, not a sans-IO core.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use rampart_bft::{ClientId, ReplicaId};
use rampart_cluster::client::{ClientOptions, KvClient};
use rampart_cluster::local::{LocalCluster, LocalOptions};
use rampart_kv::{KvOp, KvResult};
use rampart_store::{CloudOfClouds, StoreConfig};

/// Options of `rampart demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory to work in (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Size of the demo object in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    size_mib: u64,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_owned()
        }
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(demo(&dir, args.size_mib))
}

fn step(n: u32, what: &str) {
    println!("\n[{n}] {what}");
}

async fn open(config: &Path) -> Result<CloudOfClouds> {
    Ok(CloudOfClouds::open(StoreConfig::load(config)?)?)
}

async fn fetch_digest(
    store: &CloudOfClouds,
    key: &str,
) -> Result<(rampart_crypto::hash::Digest, f64)> {
    let mut sink = rampart_bench::store::DigestSink::default();
    let t = Instant::now();
    store.get(key, &mut sink, None, None).await?;
    Ok((sink.digest(), t.elapsed().as_secs_f64()))
}

async fn demo(dir: &Path, size_mib: u64) -> Result<()> {
    println!("Rampart demo in {}", dir.display());
    step(
        1,
        "rampart init: 4 local-directory clouds, tolerating 1 faulty cloud",
    );
    let rep = rampart_store::init_local(dir, 4)?;
    let config = rep.config_path.clone();
    for d in &rep.cloud_dirs {
        println!("    cloud {}", d.display());
    }
    let store = open(&config).await?;

    step(
        2,
        &format!(
            "rampart put: a {size_mib} MiB file of random bytes (DepSky-CA: AES-256-GCM, RS 2-of-4, Shamir 2-of-4)"
        ),
    );
    let data_path = dir.join("demo-input.bin");
    write_random_file(&data_path, size_mib << 20)?;
    let want = rampart_crypto::hash::Digest::of(&std::fs::read(&data_path)?);
    let t = Instant::now();
    let file = tokio::fs::File::open(&data_path).await?;
    let receipt = store
        .put("demo/patient-records.bin", file, Vec::new(), None)
        .await?;
    let secs = t.elapsed().as_secs_f64();
    receipt
        .background
        .wait(std::time::Duration::from_secs(30))
        .await;
    println!(
        "    stored {} bytes as {} in {secs:.2}s ({:.0} MB/s)",
        receipt.size,
        receipt.version,
        receipt.size as f64 / secs / 1e6
    );
    let probe = std::fs::read(&data_path)?;
    let (files, leaks) = grep_dir(&dir.join("clouds"), &probe[..64.min(probe.len())])?;
    ensure!(leaks == 0, "plaintext found in cloud directories");
    println!("    searched {files} cloud files for the file's first 64 bytes: not found");

    step(3, "destroy cloud local-1 entirely, then read");
    std::fs::remove_dir_all(&rep.cloud_dirs[0])?;
    let store = open(&config).await?;
    let (got, secs) = fetch_digest(&store, "demo/patient-records.bin").await?;
    ensure!(got == want, "read returned different bytes");
    println!("    read back the exact bytes ({secs:.2}s) with local-1 gone");

    step(4, "rampart scrub: find and repair");
    let s = store.scrub(true, None).await?;
    let bad = s.misbehaving_clouds();
    println!(
        "    misbehaving clouds: {bad:?}; repairs: {}",
        s.repaired.len()
    );
    ensure!(
        bad.first().map(|b| b.0.as_str()) == Some("local-1"),
        "scrub did not name local-1"
    );

    step(
        5,
        "corrupt bytes in every shard file of cloud local-2, then read",
    );
    let corrupted = corrupt_files(&rep.cloud_dirs[1].join("rampart/v1/b"))?;
    println!("    flipped bytes in {corrupted} files");
    let store = open(&config).await?;
    let (got, secs) = fetch_digest(&store, "demo/patient-records.bin").await?;
    ensure!(got == want, "read returned different bytes");
    println!("    read back the exact bytes ({secs:.2}s) despite the corruption");
    let s = store.scrub(true, None).await?;
    let bad = s.misbehaving_clouds();
    println!(
        "    scrub: misbehaving clouds: {bad:?}; repairs: {}",
        s.repaired.len()
    );
    ensure!(
        bad.first().map(|b| b.0.as_str()) == Some("local-2"),
        "scrub did not name local-2"
    );

    step(
        6,
        "destroy three clouds (fewer than k = 2 hold shards): the read must fail, not lie",
    );
    std::fs::remove_dir_all(&rep.cloud_dirs[1])?;
    std::fs::remove_dir_all(&rep.cloud_dirs[2])?;
    std::fs::remove_dir_all(&rep.cloud_dirs[3])?;
    let store = open(&config).await?;
    match fetch_digest(&store, "demo/patient-records.bin").await {
        Ok(_) => bail!("a read with three of four clouds destroyed returned data"),
        Err(e) => println!("    refused as expected: {e}"),
    }
    cluster_demo(dir).await?;
    println!("\ndemo passed: every read returned the exact bytes or failed loudly");
    Ok(())
}

/// Keys written per phase of the cluster demo, and the concurrent callers writing them.
const KV_KEYS: usize = 1000;
const KV_CALLERS: usize = 100;

async fn cluster_demo(dir: &Path) -> Result<()> {
    step(
        7,
        "rampart kv up: a BFT-replicated KV service, 4 replicas (f = 1) over TLS, durable logs",
    );
    let mut local = LocalCluster::start(&dir.join("cluster"), &LocalOptions::default()).await?;
    let id = ClientId(0);
    let key = local.cluster.client_key(id)?;
    let client = KvClient::connect(&local.cluster, id, key, ClientOptions::default())?;
    let t = Instant::now();
    kv_puts(&client, 0..KV_KEYS).await?;
    println!(
        "    {KV_KEYS} puts from {KV_CALLERS} concurrent callers in {:.2}s",
        t.elapsed().as_secs_f64()
    );

    step(
        8,
        "crash the leader (replica 0) and keep writing: the others elect a new one",
    );
    local.crash(ReplicaId(0));
    let t = Instant::now();
    client.put(b"after-the-crash", b"still here").await?;
    println!(
        "    first put after the crash done in {:.2}s (leader change; request timeout {} ms)",
        t.elapsed().as_secs_f64(),
        local.cluster.protocol.request_timeout_ms
    );
    kv_puts(&client, KV_KEYS..2 * KV_KEYS).await?;
    println!("    {KV_KEYS} more puts with replica 0 down");

    step(9, "read every key back through the ordering protocol");
    let mut checked = 0;
    for chunk in (0..2 * KV_KEYS).collect::<Vec<_>>().chunks(500) {
        let ops = chunk
            .iter()
            .map(|i| KvOp::Get {
                key: kv_key(*i).into_bytes(),
            })
            .collect();
        let results = client.execute(ops, false).await?;
        ensure!(
            results.len() == chunk.len(),
            "reply with a wrong number of results"
        );
        for (i, r) in chunk.iter().zip(results) {
            let KvResult::Value(Some(v)) = r else {
                bail!("key {} missing after the leader crash", kv_key(*i));
            };
            ensure!(
                v == kv_value(*i).into_bytes(),
                "key {} has a wrong value",
                kv_key(*i)
            );
            checked += 1;
        }
    }
    println!("    all {checked} values exact; replica 0 stays down, f = 1 tolerated");
    Ok(())
}

fn kv_key(i: usize) -> String {
    format!("sensor/{i:05}")
}

fn kv_value(i: usize) -> String {
    format!("reading {i}")
}

/// Writes keys `range` from [`KV_CALLERS`] concurrent callers sharing one client session.
async fn kv_puts(client: &KvClient, range: std::ops::Range<usize>) -> Result<()> {
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..KV_CALLERS {
        let client = client.clone();
        let keys: Vec<usize> = range.clone().skip(c).step_by(KV_CALLERS).collect();
        callers.spawn(async move {
            for i in keys {
                client
                    .put(kv_key(i).as_bytes(), kv_value(i).as_bytes())
                    .await?;
            }
            Ok::<_, rampart_cluster::ClusterError>(())
        });
    }
    while let Some(r) = callers.join_next().await {
        r.context("a demo caller panicked")??;
    }
    Ok(())
}

fn write_random_file(path: &Path, len: u64) -> Result<()> {
    use rand_core::RngCore;
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        rand_core::OsRng.fill_bytes(&mut buf);
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Counts files under `dir`, and those containing `needle`.
fn grep_dir(dir: &Path, needle: &[u8]) -> Result<(usize, usize)> {
    let mut hits = 0;
    let files = walk(dir)?;
    for entry in &files {
        let bytes = std::fs::read(entry)?;
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits += 1;
        }
    }
    Ok((files.len(), hits))
}

fn corrupt_files(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for f in walk(dir)? {
        let mut bytes = std::fs::read(&f)?;
        if bytes.is_empty() {
            continue;
        }
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&f, bytes)?;
        n += 1;
    }
    Ok(n)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    Ok(out)
}
