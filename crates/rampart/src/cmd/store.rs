//! `rampart init|put|get|ls|rm|stat|gc|scrub`: the cloud-of-clouds store.
// The CLI reports elapsed wall-clock time; it is a runtime, not a sans-IO core.
#![allow(clippy::disallowed_methods)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use rampart_store::{CloudOfClouds, MetaHealth, Progress, ShardHealth, StoreConfig};

/// How long a command waits for slower clouds to finish before exiting.
const STRAGGLER_WAIT: Duration = Duration::from_secs(30);

/// Store subcommands (top level of the CLI).
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create rampart.toml, a 0600 key file and local-directory clouds in a directory.
    Init {
        /// Where to write the files (default: the working directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Number of local clouds (n >= 3f+1; 4 tolerates one faulty cloud; 1 is a single
        /// encrypted backend that tolerates none).
        #[arg(long, default_value_t = 4)]
        clouds: usize,
    },
    /// Store a local file (or stdin with "-") under KEY as a new version; with -r, every
    /// file under a directory under KEY/ (skipping files stored unchanged).
    Put {
        /// File to read, or "-" for stdin (with -r: the directory).
        local_file: PathBuf,
        /// Key to store it under (with -r: the key prefix).
        key: String,
        /// Upload the directory tree LOCAL_FILE under the prefix KEY/, in parallel;
        /// resumable (files whose stored content is the same are skipped).
        #[arg(short, long)]
        recursive: bool,
        /// Objects in flight with -r.
        #[arg(long, default_value_t = 32)]
        jobs: usize,
    },
    /// Fetch the newest version of KEY into a local file (or stdout with "-"); with -r,
    /// every key under KEY/ into a directory (skipping files already the same).
    Get {
        /// Key to read (with -r: the key prefix).
        key: String,
        /// File to write (atomically, via a temporary file), or "-" for stdout (with -r:
        /// the directory).
        local_file: PathBuf,
        /// Download every key under the prefix KEY/ into the directory LOCAL_FILE, in
        /// parallel; resumable (files already holding the stored content are skipped).
        #[arg(short, long)]
        recursive: bool,
        /// Objects in flight with -r.
        #[arg(long, default_value_t = 32)]
        jobs: usize,
    },
    /// List stored keys (names come from verified, signed metadata).
    Ls {
        /// Only keys starting with this prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Delete KEY (a signed deletion marker; `gc` reclaims the space).
    Rm {
        /// Key to delete.
        key: String,
    },
    /// Show KEY's versions and which clouds hold valid metadata and shards.
    Stat {
        /// Key to examine.
        key: String,
    },
    /// Drop old versions and reclaim space from deleted keys and abandoned uploads.
    Gc {
        /// Versions to keep per key.
        #[arg(long, default_value_t = 1)]
        keep: usize,
        /// Leave unreferenced blobs younger than this many seconds (uploads in progress),
        /// and versions superseded less than this long ago (reads in progress).
        #[arg(long, default_value_t = 3600)]
        grace_secs: u64,
    },
    /// Verify every cloud, name misbehaving ones, and repair them from healthy clouds.
    Scrub {
        /// Only report; change nothing (exit status 1 if anything is wrong).
        #[arg(long)]
        check: bool,
    },
}

/// Runs a store subcommand.
pub fn run(cmd: StoreCommand, config: &Path) -> Result<()> {
    if let StoreCommand::Init { dir, clouds } = &cmd {
        return init(dir, *clouds);
    }
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let cfg = StoreConfig::load(config)?;
        let store = CloudOfClouds::open(cfg)?;
        match cmd {
            StoreCommand::Init { .. } => unreachable!("handled above"),
            StoreCommand::Put {
                local_file,
                key,
                recursive: true,
                jobs,
            } => super::tree::put_tree(&store, &local_file, &key, jobs).await,
            StoreCommand::Put {
                local_file, key, ..
            } => put(&store, &local_file, &key).await,
            StoreCommand::Get {
                key,
                local_file,
                recursive: true,
                jobs,
            } => super::tree::get_tree(&store, &key, &local_file, jobs).await,
            StoreCommand::Get {
                key, local_file, ..
            } => get(&store, &key, &local_file).await,
            StoreCommand::Ls { prefix } => ls(&store, &prefix).await,
            StoreCommand::Rm { key } => {
                let v = store.delete(&key).await?;
                println!("deleted {key} (deletion marker {v}); run `rampart gc` to reclaim space");
                Ok(())
            }
            StoreCommand::Stat { key } => stat(&store, &key).await,
            StoreCommand::Gc { keep, grace_secs } => gc(&store, keep, grace_secs).await,
            StoreCommand::Scrub { check } => scrub(&store, !check).await,
        }
    })
}

fn init(dir: &Path, clouds: usize) -> Result<()> {
    if clouds != 1 && !(4..=16).contains(&clouds) {
        bail!(
            "--clouds must be between 4 and 16 (n >= 3f+1 with f >= 1), or 1 for a single encrypted backend"
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let rep = rampart_store::init_local(dir, clouds)?;
    // The S3 gateway's section: listen address and one fresh access key (the file is 0600).
    let gateway = rampart_gateway::GatewayConfig::generate();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&rep.config_path)
        .with_context(|| format!("opening {}", rep.config_path.display()))?;
    std::io::Write::write_all(
        &mut file,
        format!("\n{}", gateway.to_toml_section()).as_bytes(),
    )
    .with_context(|| format!("writing {}", rep.config_path.display()))?;
    println!(
        "wrote {} and {} (mode 0600)",
        rep.config_path.display(),
        rep.key_path.display()
    );
    for d in &rep.cloud_dirs {
        println!("  cloud: {}", d.display());
    }
    println!("signing key: {}", rep.public_key);
    println!(
        "S3 gateway (`rampart gateway`): access key id {}; its secret is in [gateway] of {}",
        gateway.access_keys[0].access_key_id,
        rep.config_path.display()
    );
    if clouds == 1 {
        println!(
            "one cloud: a single encrypted backend (protocol \"sealed\"). The cloud sees only \
             ciphertext, but nothing tolerates its loss. Try: rampart put FILE KEY"
        );
    } else {
        println!(
            "n = {clouds} clouds, tolerating f = {} faulty ones. Try: rampart put FILE KEY",
            (clouds - 1) / 3
        );
    }
    Ok(())
}

/// A progress bar on stderr when it is a terminal, hidden otherwise.
fn progress_bar(total: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
                .expect("valid template"),
        ),
    };
    pb.set_message(what.to_owned());
    pb
}

fn progress_of(pb: &ProgressBar) -> Progress {
    let pb = pb.clone();
    Arc::new(move |n| pb.set_position(n))
}

async fn put(store: &CloudOfClouds, local: &Path, key: &str) -> Result<()> {
    let started = Instant::now();
    let receipt = if local.as_os_str() == "-" {
        let pb = progress_bar(None, "put");
        let r = store
            .put(key, tokio::io::stdin(), Vec::new(), Some(progress_of(&pb)))
            .await;
        pb.finish_and_clear();
        r?
    } else {
        let file = tokio::fs::File::open(local)
            .await
            .with_context(|| format!("opening {}", local.display()))?;
        let len = file.metadata().await.ok().map(|m| m.len());
        let pb = progress_bar(len, "put");
        let r = store
            .put(
                key,
                tokio::io::BufReader::with_capacity(1 << 20, file),
                Vec::new(),
                Some(progress_of(&pb)),
            )
            .await;
        pb.finish_and_clear();
        r?
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "stored {key}: {} as {} in {:.2}s ({}/s)",
        HumanBytes(receipt.size),
        receipt.version,
        secs,
        HumanBytes((receipt.size as f64 / secs.max(1e-9)) as u64)
    );
    let bg = receipt.background.wait(STRAGGLER_WAIT).await;
    for f in &bg.failed {
        eprintln!(
            "rampart: warning: {f} (the write is durable on a quorum; `rampart scrub` repairs this cloud)"
        );
    }
    for u in &bg.unfinished {
        eprintln!(
            "rampart: warning: {u} still running after {}s; `rampart scrub` will complete it",
            STRAGGLER_WAIT.as_secs()
        );
    }
    Ok(())
}

async fn get(store: &CloudOfClouds, key: &str, local: &Path) -> Result<()> {
    if local.as_os_str() == "-" {
        let mut out = tokio::io::stdout();
        store.get(key, &mut out, None, None).await?;
        return Ok(());
    }
    let info = store.head(key).await?;
    // Write next to the target and rename on success, so that a failed read never
    // leaves a partial file where a complete one is expected.
    let dir = local
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let (std_file, tmp_path) = tmp.into_parts();
    let mut file =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(std_file));
    let pb = progress_bar(Some(info.size), "get");
    let started = Instant::now();
    let r = store
        .get(key, &mut file, None, Some(progress_of(&pb)))
        .await;
    pb.finish_and_clear();
    let receipt = r?;
    let file = file.into_inner();
    file.sync_all().await.context("flushing the output file")?;
    tmp_path
        .persist(local)
        .with_context(|| format!("renaming into {}", local.display()))?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "fetched {key} {} ({}) in {:.2}s ({}/s)",
        receipt.version,
        HumanBytes(receipt.size),
        secs,
        HumanBytes((receipt.size as f64 / secs.max(1e-9)) as u64)
    );
    Ok(())
}

async fn ls(store: &CloudOfClouds, prefix: &str) -> Result<()> {
    for e in store.list(prefix).await? {
        println!("{:>12}  {:<22}  {}", e.size, e.version.to_string(), e.key);
    }
    Ok(())
}

async fn stat(store: &CloudOfClouds, key: &str) -> Result<()> {
    let rep = store.stat(key).await?;
    println!("key: {}", rep.key);
    println!("versions (newest first):");
    for (v, created_ms, size) in &rep.versions {
        match size {
            Some(s) => println!("  {v}  {s} bytes  written at {created_ms} ms"),
            None => println!("  {v}  deleted at {created_ms} ms"),
        }
    }
    println!("clouds:");
    for c in &rep.clouds {
        let mark = if c.healthy() { "ok " } else { "BAD" };
        println!(
            "  {mark} {:<16} metadata: {:<28} shards: {}",
            c.cloud,
            c.metadata.to_string(),
            c.shards
        );
    }
    let valid = rep
        .clouds
        .iter()
        .filter(|c| matches!(c.shards, ShardHealth::Valid))
        .count();
    let current = rep
        .clouds
        .iter()
        .filter(|c| c.metadata == MetaHealth::Current)
        .count();
    println!(
        "{current} of {} clouds hold current metadata; {valid} hold valid shards",
        rep.clouds.len()
    );
    Ok(())
}

async fn gc(store: &CloudOfClouds, keep: usize, grace_secs: u64) -> Result<()> {
    let rep = store.gc(keep, Duration::from_secs(grace_secs)).await?;
    println!(
        "examined {} keys: dropped {} old versions, deleted {} objects, purged {} deleted keys",
        rep.keys, rep.versions_dropped, rep.objects_deleted, rep.keys_purged
    );
    if rep.unbacked > 0 {
        println!(
            "skipped {} names that at most f = {} clouds list (invented by a faulty cloud, or writes that reached too few clouds)",
            rep.unbacked,
            store.f()
        );
    }
    for u in &rep.unverifiable {
        eprintln!("rampart: warning: kept {u}");
    }
    if !rep.unverifiable.is_empty() {
        eprintln!(
            "rampart: warning: kept {} keys whose metadata does not verify (is a writer missing from trusted_writers?)",
            rep.unverifiable.len()
        );
    }
    for w in &rep.warnings {
        eprintln!("rampart: warning: {w}");
    }
    Ok(())
}

async fn scrub(store: &CloudOfClouds, repair: bool) -> Result<()> {
    let pb = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    pb.set_message("scrubbing keys");
    let p = pb.clone();
    let rep = store
        .scrub(repair, Some(Arc::new(move |n| p.set_position(n))))
        .await;
    pb.finish_and_clear();
    let rep = rep?;
    for (cloud, key, problem) in &rep.problems {
        println!("problem: {cloud}: {key}: {problem}");
    }
    for (cloud, key, what) in &rep.repaired {
        println!("repaired: {cloud}: {key}: {what}");
    }
    for (key, why) in &rep.failed {
        println!("failed: {key}: {why}");
    }
    if rep.unbacked > 0 {
        println!(
            "skipped {} names that at most f = {} clouds list (invented by a faulty cloud, or writes that reached too few clouds)",
            rep.unbacked,
            store.f()
        );
    }
    let bad = rep.misbehaving_clouds();
    if bad.is_empty() {
        println!(
            "scrubbed {} keys: all {} clouds healthy",
            rep.keys,
            store.n()
        );
        return Ok(());
    }
    let names: Vec<String> = bad
        .iter()
        .map(|(c, n)| format!("{c} ({n} problems)"))
        .collect();
    println!(
        "scrubbed {} keys: misbehaving clouds: {}",
        rep.keys,
        names.join(", ")
    );
    if !rep.failed.is_empty() {
        bail!("{} keys could not be repaired", rep.failed.len());
    }
    if !repair {
        bail!(
            "problems found on {} clouds (run `rampart scrub` without --check to repair)",
            bad.len()
        );
    }
    println!("all problems repaired");
    Ok(())
}
