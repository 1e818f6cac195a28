//! `rampart log`: the secure log (forward-integrity MACs, Merkle tree, signed checkpoints).

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use rampart_log::{
    Config, Log, NoteSigner, VerifierSecret, VerifyOptions, WitnessPolicy, read_checkpoint,
};

/// Arguments of `rampart log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(subcommand)]
    command: LogCommand,
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Create a log in DIR; writes the verifier secret (K0 + public key) once, mode 0600.
    Init {
        /// Log directory (must be empty or absent).
        dir: PathBuf,
        /// Origin line of checkpoints (also the signing key name). Default: `rampart-log-<random>`.
        #[arg(long)]
        origin: Option<String>,
        /// Where to write the verifier secret. Default: DIR.verifier-secret next to DIR.
        /// Move it off this host: whoever holds it can verify, and only it detects forgery.
        #[arg(long)]
        secret_out: Option<PathBuf>,
    },
    /// Append TEXT arguments as entries (or stdin lines when no TEXT), then checkpoint.
    Append {
        /// Log directory.
        dir: PathBuf,
        /// Entries; each argument is one entry.
        text: Vec<String>,
    },
    /// Verify the whole log; exits non-zero naming the first bad entry.
    Verify {
        /// Log directory.
        dir: PathBuf,
        /// Verifier secret from `init` (enables MAC checks, pins the log key).
        #[arg(long = "key", value_name = "SECRET_FILE")]
        key: Option<PathBuf>,
        /// A checkpoint seen earlier; the log must extend it (repeatable).
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        /// Witness verifier key (name+id+key) whose cosignature counts (repeatable).
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
        /// Cosignatures required on each --checkpoint from the --witness keys.
        #[arg(long, default_value_t = 0)]
        witness_threshold: usize,
    },
    /// Print an inclusion proof for entry INDEX against the latest checkpoint.
    Prove {
        /// Log directory.
        dir: PathBuf,
        /// Entry index.
        index: Option<u64>,
        /// Instead: a consistency proof from this older tree size.
        #[arg(long, conflicts_with = "index")]
        consistency: Option<u64>,
    },
    /// Seal pending entries and print the latest signed checkpoint.
    Checkpoint {
        /// Log directory.
        dir: PathBuf,
    },
    /// Generate a witness key: secret to FILE (0600), C2SP cosignature/v1 verifier key to stdout.
    WitnessKeygen {
        /// Witness name.
        name: String,
        /// Secret key output file (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Print the plain Ed25519 note verifier key instead (witnesses cosigning with
        /// `cosign --plain-note`).
        #[arg(long)]
        plain_note: bool,
    },
    /// Add a witness cosignature (C2SP cosignature/v1, timestamped now) to a checkpoint file (in place).
    Cosign {
        /// Checkpoint file.
        checkpoint: PathBuf,
        /// Witness secret key file.
        #[arg(long)]
        witness_key: PathBuf,
        /// Add a plain Ed25519 note signature instead (the format before cosignature/v1).
        #[arg(long)]
        plain_note: bool,
    },
    /// Serve checkpoints, tiles and proofs over HTTP; accept authenticated appends.
    Serve {
        /// Log directory.
        dir: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long)]
        listen: String,
        /// File holding the bearer token for POST /add (else env RAMPART_LOG_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Measure append, verify and proof throughput against same-run baselines.
    Bench {
        /// Entries to append.
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// Bytes per entry.
        #[arg(long, default_value_t = 100)]
        entry_bytes: usize,
        /// Scratch directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// The wall clock in POSIX seconds: the timestamp of a witness's cosignature.
#[allow(clippy::disallowed_methods)] // the CLI is the I/O shell: it reads the clock
fn unix_now() -> Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_secs())
}

/// Runs `rampart log`.
pub fn run(args: LogArgs) -> Result<()> {
    match args.command {
        LogCommand::Init {
            dir,
            origin,
            secret_out,
        } => init(&dir, origin, secret_out),
        LogCommand::Append { dir, text } => append(&dir, text),
        LogCommand::Verify {
            dir,
            key,
            checkpoints,
            witnesses,
            witness_threshold,
        } => verify(&dir, key, checkpoints, witnesses, witness_threshold),
        LogCommand::Prove {
            dir,
            index,
            consistency,
        } => prove(&dir, index, consistency),
        LogCommand::Checkpoint { dir } => {
            let note = open(&dir)?.checkpoint()?;
            std::io::stdout().write_all(&note)?;
            Ok(())
        }
        LogCommand::WitnessKeygen {
            name,
            out,
            plain_note,
        } => {
            let (signer, skey, vkey) = NoteSigner::generate(&mut rand_core::OsRng, &name)?;
            write_private(&out, format!("{}\n", skey.as_str()).as_bytes())?;
            if plain_note {
                println!("{vkey}");
            } else {
                println!("{}", signer.cosignature_v1_vkey());
            }
            Ok(())
        }
        LogCommand::Cosign {
            checkpoint,
            witness_key,
            plain_note,
        } => {
            let skey = zeroize::Zeroizing::new(read_small(&witness_key, 1024)?);
            let skey = zeroize::Zeroizing::new(
                String::from_utf8(skey.to_vec()).context("witness key is not UTF-8")?,
            );
            let signer = NoteSigner::from_secret(&skey).context("witness key")?;
            let note = read_small(&checkpoint, CHECKPOINT_FILE_MAX)?;
            let cosigned = if plain_note {
                signer.cosign(&note)
            } else {
                signer.cosign_v1(&note, unix_now()?)
            }
            .context("cosigning")?;
            std::fs::write(&checkpoint, cosigned)
                .with_context(|| format!("writing {}", checkpoint.display()))?;
            Ok(())
        }
        LogCommand::Serve {
            dir,
            listen,
            token_file,
        } => serve(&dir, &listen, token_file),
        LogCommand::Bench {
            entries,
            entry_bytes,
            dir,
        } => bench::run(entries, entry_bytes, dir),
    }
}

/// Largest checkpoint file accepted (a note with up to 100 signatures fits easily).
const CHECKPOINT_FILE_MAX: u64 = 16 * 1024;

/// Reads a small file, refusing anything over `max` bytes before reading it.
fn read_small(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > max {
        bail!("{} is {len} bytes; at most {max} expected", path.display());
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(max + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    if buf.len() as u64 > max {
        bail!("{} grew beyond {max} bytes while reading", path.display());
    }
    Ok(buf)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn open(dir: &Path) -> Result<Log> {
    let (log, recovery) = Log::open(dir, Config::default())
        .with_context(|| format!("opening log {}", dir.display()))?;
    if let Some((entry, bytes)) = recovery.truncated {
        eprintln!(
            "rampart: recovered from a crash: torn tail at entry {entry} truncated ({bytes} bytes); \
             the log now holds {} entries",
            log.size()
        );
    }
    Ok(log)
}

/// `<host>/rampart-log/<id>`: a scheme-less URL, `host` from the kernel's host name when it
/// is a plain DNS name, else `localhost`.
fn default_origin(id: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}/rampart-log/{id}")
}

fn init(dir: &Path, origin: Option<String>, secret_out: Option<PathBuf>) -> Result<()> {
    let origin = match origin {
        Some(o) => o,
        None => {
            // C2SP tlog-tiles: the origin should be the log's URL prefix without the scheme.
            // Without one given, this host's name and a random path.
            let mut b = [0u8; 6];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
            default_origin(&hex::encode(b))
        }
    };
    let secret = match secret_out {
        Some(p) => p,
        None => {
            // A sibling of DIR, never inside it (DIR may be published by a file server).
            let name = dir.file_name().context("DIR must name a directory")?;
            let parent = dir.parent().unwrap_or(Path::new(""));
            parent.join(format!("{}.verifier-secret", name.to_string_lossy()))
        }
    };
    let report = Log::init(dir, &origin, &secret, &mut rand_core::OsRng)
        .with_context(|| format!("initialising log {}", dir.display()))?;
    println!(
        "initialised log {} (origin {})",
        dir.display(),
        report.origin
    );
    println!("verifier key: {}", report.vkey);
    println!(
        "verifier secret written to {} (mode 0600): move it off this host; \
         `rampart log verify --key` needs it",
        secret.display()
    );
    Ok(())
}

/// Lines buffered and validated before they are appended as one durable batch.
const STDIN_BATCH_LINES_MAX: usize = 4096;

fn append(dir: &Path, text: Vec<String>) -> Result<()> {
    if !text.is_empty() {
        // Arguments: all or nothing.
        if let Some((i, t)) = text
            .iter()
            .enumerate()
            .find(|(_, t)| t.len() > rampart_log::ENTRY_DATA_MAX)
        {
            bail!(
                "argument {} is {} bytes; the limit is {}",
                i + 1,
                t.len(),
                rampart_log::ENTRY_DATA_MAX
            );
        }
        let mut log = open(dir)?;
        let first = log.size();
        for t in &text {
            log.append(t.as_bytes())?;
        }
        log.checkpoint()?;
        println!(
            "appended entries {first}..{} ; log size {}",
            log.size(),
            log.size()
        );
        return Ok(());
    }
    let mut log = open(dir)?;
    let first = log.size();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(STDIN_BATCH_LINES_MAX);
    let mut line_no = 0u64;
    loop {
        let mut line = Vec::new();
        // Bounded read: never buffer more than one maximal entry plus the newline.
        let n = (&mut input)
            .take(rampart_log::ENTRY_DATA_MAX as u64 + 2)
            .read_until(b'\n', &mut line)
            .context("reading stdin")?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        } else if line.len() > rampart_log::ENTRY_DATA_MAX {
            // Whole batches before this one are sealed; this batch is not appended.
            log.checkpoint()?;
            bail!(
                "stdin line {line_no} exceeds {} bytes; appended and checkpointed {} entries before its batch",
                rampart_log::ENTRY_DATA_MAX,
                log.size() - first
            );
        }
        batch.push(line);
        if batch.len() == STDIN_BATCH_LINES_MAX {
            for l in batch.drain(..) {
                log.append(&l)?;
            }
            log.commit()?;
        }
    }
    for l in batch.drain(..) {
        log.append(&l)?;
    }
    log.checkpoint()?;
    println!(
        "appended entries {first}..{} ; log size {}",
        log.size(),
        log.size()
    );
    Ok(())
}

fn verify(
    dir: &Path,
    key: Option<PathBuf>,
    checkpoints: Vec<PathBuf>,
    witnesses: Vec<String>,
    witness_threshold: usize,
) -> Result<()> {
    let secret = match key {
        Some(p) => {
            Some(VerifierSecret::load(&p).with_context(|| format!("loading {}", p.display()))?)
        }
        None => {
            eprintln!(
                "rampart: warning: no --key: MACs are not checked and the log's own public key is trusted"
            );
            None
        }
    };
    let mut trusted = Vec::new();
    for p in &checkpoints {
        trusted.push(read_small(p, CHECKPOINT_FILE_MAX)?);
    }
    let policy = WitnessPolicy::new(witnesses, witness_threshold).context("witness policy")?;
    let opts = VerifyOptions {
        secret,
        trusted,
        policy,
    };
    match rampart_log::verify(dir, &opts).with_context(|| format!("verifying {}", dir.display()))? {
        Ok(r) => {
            println!(
                "ok: {} entries verified ({}); checkpoint covers {}; last epoch {}",
                r.entries,
                if r.macs_checked {
                    "MACs, hash chain, Merkle root"
                } else {
                    "hash chain, Merkle root"
                },
                r.checkpoint_size,
                r.last_epoch
            );
            Ok(())
        }
        Err(problem) => bail!("verification failed: {problem}"),
    }
}

fn prove(dir: &Path, index: Option<u64>, consistency: Option<u64>) -> Result<()> {
    let vkey = rampart_log::read_vkey(dir)?;
    let (_, cp) = read_checkpoint(dir, &vkey)?;
    let out = match (index, consistency) {
        (Some(i), None) => {
            let p = rampart_log::prove_inclusion(dir, cp.size, &cp.root, i)?;
            p.to_text(&cp.root)
        }
        (None, Some(old)) => rampart_log::prove_consistency(dir, cp.size, &cp.root, old)?.to_text(),
        _ => bail!("give an INDEX or --consistency OLD_SIZE"),
    };
    print!("{out}");
    Ok(())
}

fn serve(dir: &Path, listen: &str, token_file: Option<PathBuf>) -> Result<()> {
    let token = zeroize::Zeroizing::new(match token_file {
        Some(p) => String::from_utf8(read_small(&p, 4096)?)
            .context("token file is not UTF-8")?
            .trim_end()
            .to_owned(),
        None => std::env::var("RAMPART_LOG_TOKEN")
            .context("no --token-file and RAMPART_LOG_TOKEN is not set")?,
    });
    if token.len() < 16 {
        bail!("the bearer token must be at least 16 characters");
    }
    let log = open(dir)?;
    let state = Arc::new(rampart_log::http::ServeState::new(
        dir.to_owned(),
        log,
        &token,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        println!("listening on http://{addr}");
        std::io::stdout().flush()?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        rampart_log::http::serve(listener, state, shutdown)
            .await
            .context("serving")
    })
}

mod bench {
    //! `rampart log bench`. Wall-clock timing is the point here, so `Instant::now` is allowed
    //! in this module only.
    #![allow(clippy::disallowed_methods)]

    use std::io::Write;
    use std::path::PathBuf;
    use std::time::Instant;

    use anyhow::Result;
    use rampart_log::{Config, Log, VerifierSecret, VerifyOptions};
    use sha2::Digest;

    pub(super) fn run(entries: u64, entry_bytes: usize, dir: Option<PathBuf>) -> Result<()> {
        let tmp = tempfile::tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
        let cfg = Config::default();
        println!(
            "rampart log bench: {entries} entries of {entry_bytes} bytes, batch {} entries per fsync",
            cfg.batch_entries_max
        );
        let payload = |i: u64| {
            let mut v = format!("entry {i:>12} ").into_bytes();
            v.resize(entry_bytes, b'x');
            v
        };

        // Baseline: the same bytes, framed, written and fsynced in the same batches, no sealing.
        let raw = tmp.path().join("raw.seg");
        let t = Instant::now();
        {
            let mut f = std::fs::File::create(&raw)?;
            let mut buf = Vec::new();
            for i in 0..entries {
                let p = payload(i);
                buf.extend_from_slice(&((p.len() + 81) as u32).to_le_bytes());
                buf.extend_from_slice(&[0u8; 81]);
                buf.extend_from_slice(&p);
                buf.extend_from_slice(&[0u8; 8]);
                if (i + 1) % cfg.batch_entries_max as u64 == 0 || i + 1 == entries {
                    f.write_all(&buf)?;
                    f.sync_data()?;
                    buf.clear();
                }
            }
        }
        let raw_s = t.elapsed().as_secs_f64();

        let dir = tmp.path().join("log");
        let secret = tmp.path().join("secret");
        Log::init(&dir, "bench", &secret, &mut rand_core::OsRng)?;
        let t = Instant::now();
        let (commit_s, fsyncs) = {
            let (mut log, _) = Log::open(&dir, cfg.clone())?;
            for i in 0..entries {
                log.append(&payload(i))?;
            }
            log.commit()?;
            let commit_s = t.elapsed().as_secs_f64();
            log.checkpoint()?;
            (commit_s, entries.div_ceil(cfg.batch_entries_max as u64))
        };
        let log_s = t.elapsed().as_secs_f64();
        println!(
            "  sealed and committed in {commit_s:.2} s ({fsyncs} batches, 3 fsyncs each); \
             checkpoint incl. waiting for tile fsyncs {:.2} s",
            log_s - commit_s
        );
        row(
            "durable appends/s (sealed, tiles, checkpoint)",
            entries as f64 / log_s,
            "raw framed appends/s, same fsync batching",
            entries as f64 / raw_s,
        );

        // Verify throughput vs plain SHA-256 over the segment bytes.
        let opts = VerifyOptions {
            secret: Some(VerifierSecret::load(&secret)?),
            ..Default::default()
        };
        let t = Instant::now();
        let report = rampart_log::verify(&dir, &opts)?.map_err(|p| anyhow::anyhow!("{p}"))?;
        let verify_s = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            report.entries == entries,
            "verified {} entries",
            report.entries
        );
        let mut seg_bytes = 0u64;
        let t = Instant::now();
        for e in std::fs::read_dir(dir.join("segments"))? {
            let bytes = std::fs::read(e?.path())?;
            seg_bytes += bytes.len() as u64;
            std::hint::black_box(sha2::Sha256::digest(&bytes));
        }
        let sha_s = t.elapsed().as_secs_f64();
        row(
            "verify entries/s (MAC + chain + root)",
            entries as f64 / verify_s,
            "sha256 over segment bytes, entries/s",
            entries as f64 / sha_s,
        );
        println!("  (segment bytes {seg_bytes})");

        // Proofs against the checkpoint.
        let vkey = rampart_log::read_vkey(&dir)?;
        let (_, cp) = rampart_log::read_checkpoint(&dir, &vkey)?;
        let samples = 1000u64;
        let mut proofs = Vec::new();
        let t = Instant::now();
        for k in 0..samples {
            let i = (k * 7_919_993) % cp.size;
            proofs.push(rampart_log::prove_inclusion(&dir, cp.size, &cp.root, i)?);
        }
        let gen_us = t.elapsed().as_secs_f64() * 1e6 / samples as f64;
        let t = Instant::now();
        for p in &proofs {
            p.verify(&cp.root)?;
        }
        let ver_us = t.elapsed().as_secs_f64() * 1e6 / samples as f64;
        println!(
            "inclusion proof at size {}: generate {gen_us:.1} µs, verify {ver_us:.1} µs (mean of {samples})",
            cp.size
        );
        let mut cproofs = Vec::new();
        let t = Instant::now();
        for k in 1..=100u64 {
            cproofs.push(rampart_log::prove_consistency(
                &dir,
                cp.size,
                &cp.root,
                (k * 9_973) % cp.size + 1,
            )?);
        }
        let cgen_us = t.elapsed().as_secs_f64() * 1e6 / 100.0;
        println!(
            "consistency proof at size {}: generate {cgen_us:.1} µs (mean of 100)",
            cp.size
        );
        Ok(())
    }

    fn row(name: &str, value: f64, base_name: &str, base: f64) {
        println!(
            "{name}: {value:.0}   baseline {base_name}: {base:.0}   ratio {:.2}",
            value / base
        );
    }
}
