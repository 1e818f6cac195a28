//! `rampart put -r DIR PREFIX` and `rampart get -r PREFIX DIR`: whole directory trees.
//!
//! - **Parallel**: up to `--jobs` objects in flight, one progress bar over files and bytes.
//! - **Resumable**: a file whose stored newest version has the same size and the same
//!   content (checked against the store's keyed content digest, never a plain hash the
//!   clouds could see) is skipped, in both directions; rerunning after an interruption
//!   transfers only what is missing or changed.
//! - **Bounded**: at most [`FILES_MAX`] files per run, and one listing of the prefix up
//!   front (the store bounds listings itself).
//! - **Safe on the way down**: a key is written below DIR only if every component of its
//!   relative path is a plain name (no `..`, `.`, empty or absolute components, no
//!   backslash or NUL), so a key chosen by another writer cannot escape DIR; every file is
//!   written to a temporary file beside it and renamed only after the whole object was
//!   verified, so an interrupted run never leaves a partial file under a final name.
//! - **Never silent**: a file that fails is named on stderr, the others continue, and the
//!   command exits non-zero if any failed. Symlinks and special files are skipped with a
//!   warning (following them could upload files outside DIR).
// The CLI reports elapsed wall-clock time; it is a runtime, not a sans-IO core.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use rampart_crypto::hash::Hasher;
use rampart_store::{Background, CloudOfClouds, ObjectInfo};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

/// Most files one `put -r` or `get -r` handles (the file list is held in memory).
pub const FILES_MAX: usize = 1_000_000;

/// Most objects in flight.
pub const JOBS_MAX: usize = 256;

/// How long the command waits, in all, for slower clouds to finish after the last put.
const STRAGGLER_WAIT: Duration = Duration::from_secs(30);

/// Joins a key prefix and a relative path with `/`.
fn key_for(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        format!("{prefix}{rel}")
    } else {
        format!("{prefix}/{rel}")
    }
}

/// The normalised listing prefix for `prefix` (ends with `/` unless empty).
fn dir_prefix(prefix: &str) -> String {
    key_for(prefix, "")
}

/// The local path below `dir` for key suffix `rel`, or why it is refused.
fn local_path(dir: &Path, rel: &str) -> Result<PathBuf, &'static str> {
    if rel.is_empty() {
        return Err("empty relative name");
    }
    if rel.contains('\\') || rel.contains('\0') {
        return Err("backslash or NUL in the name");
    }
    let mut out = dir.to_path_buf();
    for part in rel.split('/') {
        let mut comps = Path::new(part).components();
        match (comps.next(), comps.next()) {
            (Some(Component::Normal(c)), None) if c == part => out.push(c),
            _ => return Err("a component is empty, `.`, `..` or absolute"),
        }
    }
    Ok(out)
}

/// One regular file found under the upload directory.
struct LocalFile {
    path: PathBuf,
    rel: String,
    size: u64,
}

/// Every regular file under `dir`, sorted by relative name. Symlinks and special files are
/// skipped with a warning; names that are not UTF-8 are refused (a key is UTF-8).
fn walk(dir: &Path) -> Result<Vec<LocalFile>> {
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("reading {}", d.display()))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                bail!("{}: the name is not UTF-8", e.path().display());
            };
            let child = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let ft = e
                .file_type()
                .with_context(|| format!("reading {}", e.path().display()))?;
            if ft.is_dir() {
                stack.push((e.path(), child));
            } else if ft.is_file() {
                let size = e
                    .metadata()
                    .with_context(|| format!("reading {}", e.path().display()))?
                    .len();
                out.push(LocalFile {
                    path: e.path(),
                    rel: child,
                    size,
                });
                if out.len() > FILES_MAX {
                    bail!(
                        "more than {FILES_MAX} files under {}; upload it in parts",
                        dir.display()
                    );
                }
            } else {
                eprintln!(
                    "rampart: warning: skipped {} (not a regular file or directory)",
                    e.path().display()
                );
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// BLAKE3 of a local file, streamed.
async fn hash_file(path: &Path) -> std::io::Result<rampart_crypto::hash::Digest> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// True when `local` holds exactly the content of the stored version `info`.
async fn unchanged(store: &CloudOfClouds, info: &ObjectInfo, local: &Path, size: u64) -> bool {
    if info.size != size {
        return false;
    }
    match hash_file(local).await {
        Ok(d) => store.same_content(info, &d),
        Err(_) => false,
    }
}

/// The newest version of every key under `prefix`, by key.
async fn stored(store: &CloudOfClouds, prefix: &str) -> Result<HashMap<String, ObjectInfo>> {
    let entries = store.list(prefix).await.context("listing the prefix")?;
    if entries.len() > FILES_MAX {
        bail!("more than {FILES_MAX} keys under {prefix:?}; download it in parts");
    }
    Ok(entries.into_iter().map(|e| (e.key.clone(), e)).collect())
}

/// One bar over the bytes, with the file count in its message.
fn bar(total_bytes: u64, what: &'static str) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    ProgressBar::new(total_bytes)
        .with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        )
        .with_message(what)
}

/// Counts of one tree transfer.
#[derive(Default)]
struct Tally {
    done: AtomicU64,
    skipped: AtomicU64,
    bytes: AtomicU64,
}

/// Runs `work` for each item with at most `jobs` in flight; returns the failures.
async fn run_all<T, F, Fut>(items: Vec<T>, jobs: usize, work: F) -> Vec<String>
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut failed = Vec::new();
    let mut collect = |r: Result<Result<(), String>, tokio::task::JoinError>| match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failed.push(e),
        Err(e) => failed.push(format!("internal error: {e}")),
    };
    for it in items {
        while set.len() >= jobs {
            if let Some(r) = set.join_next().await {
                collect(r);
            }
        }
        set.spawn(work(it));
    }
    while let Some(r) = set.join_next().await {
        collect(r);
    }
    failed
}

fn check_jobs(jobs: usize) -> Result<()> {
    if jobs == 0 || jobs > JOBS_MAX {
        bail!("--jobs must be between 1 and {JOBS_MAX}");
    }
    Ok(())
}

/// `rampart put -r DIR PREFIX`.
pub async fn put_tree(store: &CloudOfClouds, dir: &Path, prefix: &str, jobs: usize) -> Result<()> {
    check_jobs(jobs)?;
    let started = Instant::now();
    let files = walk(dir)?;
    let have = stored(store, &dir_prefix(prefix)).await?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    let count = files.len();
    let pb = bar(total, "put -r");
    let tally = Arc::new(Tally::default());
    let background: Arc<std::sync::Mutex<Vec<Background>>> = Arc::default();
    let have = Arc::new(have);
    let failed = run_all(files, jobs, |f| {
        let (store, pb, tally, have, background) = (
            store.clone(),
            pb.clone(),
            tally.clone(),
            have.clone(),
            background.clone(),
        );
        let key = key_for(prefix, &f.rel);
        async move {
            if let Some(info) = have.get(&key)
                && unchanged(&store, info, &f.path, f.size).await
            {
                tally.skipped.fetch_add(1, Ordering::Relaxed);
                pb.inc(f.size);
                return Ok(());
            }
            let file = tokio::fs::File::open(&f.path)
                .await
                .map_err(|e| format!("{}: {e}", f.path.display()))?;
            let r = store
                .put(
                    &key,
                    tokio::io::BufReader::with_capacity(1 << 16, file),
                    Vec::new(),
                    None,
                )
                .await
                .map_err(|e| format!("{}: {e}", f.path.display()))?;
            if r.size != f.size {
                return Err(format!(
                    "{}: changed while it was read ({} bytes stored as {key}, {} listed)",
                    f.path.display(),
                    r.size,
                    f.size
                ));
            }
            background.lock().expect("not poisoned").push(r.background);
            tally.done.fetch_add(1, Ordering::Relaxed);
            tally.bytes.fetch_add(r.size, Ordering::Relaxed);
            pb.inc(f.size);
            Ok(())
        }
    })
    .await;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let (done, skipped, bytes) = tally.totals();
    println!(
        "stored {done} of {count} files ({}) under {prefix:?} in {secs:.2}s ({:.0} files/s), skipped {skipped} unchanged",
        HumanBytes(bytes),
        done as f64 / secs.max(1e-9),
    );
    let until = tokio::time::Instant::now() + STRAGGLER_WAIT;
    let mut stragglers_failed = 0usize;
    let mut unfinished = 0usize;
    let waits = std::mem::take(&mut *background.lock().expect("not poisoned"));
    for bg in waits {
        let rep = bg
            .wait(until.saturating_duration_since(tokio::time::Instant::now()))
            .await;
        stragglers_failed += rep.failed.len();
        unfinished += rep.unfinished.len();
    }
    if stragglers_failed + unfinished > 0 {
        eprintln!(
            "rampart: warning: {stragglers_failed} writes to slower clouds failed and {unfinished} were unfinished after {}s (every file is durable on a quorum; `rampart scrub` repairs the rest)",
            STRAGGLER_WAIT.as_secs()
        );
    }
    report(&failed)
}

/// `rampart get -r PREFIX DIR`.
pub async fn get_tree(store: &CloudOfClouds, prefix: &str, dir: &Path, jobs: usize) -> Result<()> {
    check_jobs(jobs)?;
    let started = Instant::now();
    let lp = dir_prefix(prefix);
    let have = stored(store, &lp).await?;
    let mut items: Vec<(ObjectInfo, PathBuf)> = Vec::with_capacity(have.len());
    let mut failed = Vec::new();
    for (key, info) in have {
        match local_path(dir, &key[lp.len()..]) {
            Ok(p) => items.push((info, p)),
            Err(why) => failed.push(format!("{key:?}: refused: {why}")),
        }
    }
    items.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    let count = items.len();
    let total: u64 = items.iter().map(|(i, _)| i.size).sum();
    let pb = bar(total, "get -r");
    let tally = Arc::new(Tally::default());
    failed.extend(
        run_all(items, jobs, |(info, path)| {
            let (store, pb, tally) = (store.clone(), pb.clone(), tally.clone());
            async move {
                let shown = path.display().to_string();
                if let Ok(m) = tokio::fs::symlink_metadata(&path).await {
                    if !m.is_file() {
                        return Err(format!("{shown}: exists and is not a regular file"));
                    }
                    if unchanged(&store, &info, &path, m.len()).await {
                        tally.skipped.fetch_add(1, Ordering::Relaxed);
                        pb.inc(info.size);
                        return Ok(());
                    }
                }
                let n = fetch(&store, &info, &path)
                    .await
                    .map_err(|e| format!("{shown}: {e:#}"))?;
                tally.done.fetch_add(1, Ordering::Relaxed);
                tally.bytes.fetch_add(n, Ordering::Relaxed);
                pb.inc(info.size);
                Ok(())
            }
        })
        .await,
    );
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let (done, skipped, bytes) = tally.totals();
    println!(
        "fetched {done} of {count} keys ({}) into {} in {secs:.2}s ({:.0} files/s), skipped {skipped} unchanged",
        HumanBytes(bytes),
        dir.display(),
        done as f64 / secs.max(1e-9),
    );
    report(&failed)
}

/// Writes the listed version of one key to `path` through a temporary file beside it.
async fn fetch(store: &CloudOfClouds, info: &ObjectInfo, path: &Path) -> Result<u64> {
    let parent = path.parent().expect("below DIR");
    tokio::fs::create_dir_all(parent)
        .await
        .with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("creating a temporary file in {}", parent.display()))?;
    let (std_file, tmp_path) = tmp.into_parts();
    let mut file =
        tokio::io::BufWriter::with_capacity(1 << 16, tokio::fs::File::from_std(std_file));
    // The version the listing named: a newer write since the listing is left for the next run.
    let r = store
        .get_version(&info.key, info.version, &mut file, None, None)
        .await?;
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .context("writing")?;
    file.into_inner().sync_all().await.context("flushing")?;
    tmp_path.persist(path).context("renaming into place")?;
    Ok(r.size)
}

impl Tally {
    fn totals(&self) -> (u64, u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Prints each failure and fails if there was any.
fn report(failed: &[String]) -> Result<()> {
    for f in failed {
        eprintln!("rampart: failed: {f}");
    }
    if !failed.is_empty() {
        bail!(
            "{} files failed (rerun the command to retry them; finished files are skipped)",
            failed.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_with_one_slash() {
        assert_eq!(key_for("", "a/b"), "a/b");
        assert_eq!(key_for("p", "a/b"), "p/a/b");
        assert_eq!(key_for("p/", "a"), "p/a");
        assert_eq!(dir_prefix("p"), "p/");
        assert_eq!(dir_prefix(""), "");
    }

    #[test]
    fn keys_cannot_escape_the_directory() {
        let d = Path::new("/out");
        assert_eq!(local_path(d, "a/b.txt").unwrap(), Path::new("/out/a/b.txt"));
        for bad in [
            "",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "/abs",
            "a\\b",
            "a\0b",
            "a/",
        ] {
            assert!(local_path(d, bad).is_err(), "{bad:?} must be refused");
        }
    }
}
