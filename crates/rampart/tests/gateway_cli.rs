//! `rampart gateway` as a new user meets it: `rampart init`, the real binary serving S3 on
//! a free loopback port, and real clients (the AWS CLI and boto3) driving it.
//!
//! The clients come from `scripts/test.sh`, which installs them and exports
//! `RAMPART_AWS_CLI` (the `aws` executable) and `RAMPART_TEST_PYTHON` (a Python with
//! boto3). Without those variables the tests look for `aws` and `python3` on `PATH`, and
//! fail with instructions if they are missing, rather than skip: a skipped test proves
//! nothing.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;
use common::{files_under, write_blocks};

/// Bytes planted in every file the clients upload; no cloud may ever hold them.
const MARKER: &[u8] = b"RAMPART-GATEWAY-PLAINTEXT-MARKER-5b1e";
/// User metadata set by `s3_clients.py metadata`; no cloud may hold it either.
const META_MARKER: &[u8] = b"RAMPART-USER-METADATA-MARKER-9c2f";
/// How long the gateway may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(60);

fn tool(var: &str, fallback: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(fallback))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("{fallback} not found: run ./scripts/test.sh, which installs it and sets {var}")
        })
}

fn rampart(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .current_dir(dir)
        .env_remove("RAMPART_CONFIG")
        .output()
        .expect("running rampart")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `rampart gateway`, killed on drop.
struct Gateway {
    child: Child,
    endpoint: String,
    key_id: String,
    secret: String,
    home: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts the gateway of the store in `dir` on a free port (`--listen 127.0.0.1:0`)
    /// and waits, at most [`START_DEADLINE`], for the line announcing its address.
    fn start(dir: &Path) -> Self {
        Self::start_logged(dir, None)
    }

    /// [`Gateway::start`], with stderr (at `RAMPART_LOG=trace`) written to `log`.
    fn start_logged(dir: &Path, log: Option<&Path>) -> Self {
        let cfg: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("rampart.toml")).unwrap()).unwrap();
        let key = &cfg["gateway"]["access_keys"][0];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rampart"));
        cmd.args(["gateway", "--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env_remove("RAMPART_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(log) = log {
            cmd.env("RAMPART_LOG", "trace")
                .stderr(std::fs::File::create(log).unwrap());
        }
        let mut child = cmd.spawn().expect("starting rampart gateway");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the gateway never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_DEADLINE) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("rampart gateway did not announce its address within {START_DEADLINE:?}");
            }
        };
        let endpoint = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        Self {
            child,
            endpoint: endpoint.to_owned(),
            key_id: key["access_key_id"].as_str().unwrap().to_owned(),
            secret: key["secret_access_key"].as_str().unwrap().to_owned(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn client_env(&self, c: &mut Command) {
        c.env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", self.home.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.home.path().join("credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HOME", self.home.path());
    }

    /// Runs the AWS CLI against the gateway.
    fn aws(&self, args: &[&str]) -> Output {
        self.aws_at(&self.endpoint, args)
            .output()
            .expect("running the AWS CLI")
    }

    /// The AWS CLI command for `args` against `endpoint`, with the gateway's credentials.
    fn aws_at(&self, endpoint: &str, args: &[&str]) -> Command {
        let mut c = Command::new(tool("RAMPART_AWS_CLI", "aws"));
        c.arg("--endpoint-url").arg(endpoint).args(args);
        self.client_env(&mut c);
        c
    }

    /// The AWS CLI against `endpoint` with a single attempt, for requests that must fail
    /// (the CLI would otherwise retry refused connections and server errors).
    fn aws_once(&self, endpoint: &str, args: &[&str]) -> Output {
        self.aws_at(endpoint, args)
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_RETRY_MODE", "standard")
            .output()
            .expect("running the AWS CLI")
    }

    /// `aws [extra] s3 cp --only-show-errors from to`, which must succeed.
    fn cp(&self, extra: &[&str], from: &Path, to: &str) -> String {
        let mut args = extra.to_vec();
        args.extend(["s3", "cp", "--only-show-errors", from.to_str().unwrap(), to]);
        self.aws_ok(&args)
    }

    /// `aws [extra] s3 cp --only-show-errors from to` of an object into a file.
    fn cp_down(&self, extra: &[&str], from: &str, to: &Path) -> Output {
        let mut args = extra.to_vec();
        args.extend(["s3", "cp", "--only-show-errors", from, to.to_str().unwrap()]);
        self.aws(&args)
    }

    fn aws_ok(&self, args: &[&str]) -> String {
        ok(self.aws(args), &format!("aws {args:?}"))
    }

    /// Runs one step of `tests/gateway/s3_clients.py` (boto3 and raw HTTP); its stdout.
    fn python(&self, step: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/s3_clients.py");
        let mut c = Command::new(tool("RAMPART_TEST_PYTHON", "python3"));
        c.arg(script).arg(&self.endpoint).arg(step);
        self.client_env(&mut c);
        let out = ok(
            c.output().expect("running python"),
            &format!("s3_clients.py {step}"),
        );
        assert!(
            out.contains(&format!("{} ok", step.replace('_', " "))),
            "{out}"
        );
        out
    }
}

/// A temporary directory with `store/` (for `rampart init`) and `work/` (client files).
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, work) = (tmp.path().join("store"), tmp.path().join("work"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    (tmp, dir, work)
}

fn init(dir: &Path) {
    ok(rampart(dir, &["init"]), "rampart init");
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Cloud files holding `needle`, and the total bytes searched.
fn clouds_containing(clouds: &Path, needle: &[u8]) -> (Vec<PathBuf>, u64) {
    let mut hits = Vec::new();
    let mut total = 0;
    for p in files_under(clouds) {
        let bytes = std::fs::read(&p).unwrap();
        total += bytes.len() as u64;
        if bytes.windows(needle.len()).any(|w| w == needle)
            || p.to_string_lossy().contains("big.bin")
        {
            hits.push(p);
        }
    }
    (hits, total)
}

/// Damages every file of one cloud (metadata, manifests, shards): a Byzantine cloud.
fn corrupt_cloud(cloud: &Path) -> usize {
    let files = files_under(cloud);
    for p in &files {
        let mut bytes = std::fs::read(p).unwrap();
        if bytes.is_empty() {
            bytes.push(0);
        }
        let mid = bytes.len() / 2;
        bytes[0] ^= 0xff;
        bytes[mid] ^= 0xff;
        std::fs::write(p, bytes).unwrap();
    }
    files.len()
}

#[test]
fn gateway_serves_real_clients_and_clouds_see_only_ciphertext() {
    let (_tmp, dir, work) = scratch();
    init(&dir);
    let gw = Gateway::start(&dir);
    gw.aws_ok(&["s3", "mb", "s3://data"]);

    // 100 MiB up and down: above the CLI's 8 MiB threshold, so a 13-part upload.
    let big = work.join("big.bin");
    write_blocks(&big, 100, Some(MARKER));
    gw.cp(&[], &big, "s3://data/big.bin");
    let down = work.join("big.down");
    ok(gw.cp_down(&[], "s3://data/big.bin", &down), "download");
    assert!(same_file(&big, &down), "100 MiB download differs");

    // head-object and a ranged get-object.
    let head = gw.aws_ok(&[
        "s3api",
        "head-object",
        "--bucket",
        "data",
        "--key",
        "big.bin",
    ]);
    assert!(head.contains("\"ContentLength\": 104857600"), "{head}");
    assert!(head.contains("-13\\\""), "multipart ETag expected: {head}");
    let ranged = work.join("range.out");
    let got = gw.aws_ok(&[
        "s3api",
        "get-object",
        "--bucket",
        "data",
        "--key",
        "big.bin",
        "--range",
        "bytes=1048570-1048681",
        ranged.to_str().unwrap(),
    ]);
    assert!(got.contains("\"ContentLength\": 112"), "{got}");
    assert!(got.contains("bytes 1048570-1048681/104857600"), "{got}");
    let whole = std::fs::read(&big).unwrap();
    assert_eq!(std::fs::read(&ranged).unwrap(), whole[1048570..1048682]);
    drop(whole);

    // sync of a directory tree, up and back down.
    let tree = work.join("tree");
    let names = [
        "a.txt",
        "b c.txt",
        "plus+sign.txt",
        "sub/b.txt",
        "sub/d.bin",
        "sub/deep/c.txt",
        "sub/deep/e.txt",
        "other/f.txt",
    ];
    for (i, n) in names.iter().enumerate() {
        let p = tree.join(n);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut body = MARKER.to_vec();
        body.extend(format!(" file {n} #{i} ").repeat(i * 300 + 1).as_bytes());
        std::fs::write(&p, body).unwrap();
    }
    gw.aws_ok(&[
        "s3",
        "sync",
        "--only-show-errors",
        tree.to_str().unwrap(),
        "s3://data/tree",
    ]);
    let back = work.join("tree.down");
    gw.aws_ok(&[
        "s3",
        "sync",
        "--only-show-errors",
        "s3://data/tree",
        back.to_str().unwrap(),
    ]);
    for n in names {
        assert!(
            same_file(&tree.join(n), &back.join(n)),
            "{n} differs after sync"
        );
    }
    assert_eq!(files_under(&back).len(), names.len());

    // ls with prefixes.
    let top = gw.aws_ok(&["s3", "ls", "s3://data/"]);
    assert!(
        top.contains("PRE tree/") && top.contains("104857600 big.bin"),
        "{top}"
    );
    let sub = gw.aws_ok(&["s3", "ls", "s3://data/tree/sub/"]);
    assert!(sub.contains("PRE deep/") && sub.contains(" b.txt") && sub.contains(" d.bin"));
    assert!(!sub.contains("a.txt") && !sub.contains("c.txt"), "{sub}");
    let rec = gw.aws_ok(&["s3", "ls", "--recursive", "s3://data/tree/"]);
    assert_eq!(rec.lines().count(), names.len(), "{rec}");
    assert!(
        rec.contains("tree/b c.txt") && rec.contains("tree/plus+sign.txt"),
        "{rec}"
    );

    // boto3: user metadata, content type, ETags, copy, conditional gets; then listing
    // pagination past 1,000 keys (v1 and v2), delimiters, batch deletes.
    gw.python("metadata");
    gw.python("paginate");
    gw.python("multipart_uploads");

    // No cloud holds the plaintext (or a key name), though they hold the data.
    let clouds = dir.join("clouds");
    let (hits, total) = clouds_containing(&clouds, MARKER);
    assert!(hits.is_empty(), "plaintext found in cloud files: {hits:?}");
    let (hits, _) = clouds_containing(&clouds, META_MARKER);
    assert!(
        hits.is_empty(),
        "user metadata found in cloud files: {hits:?}"
    );
    assert!(total > 200 << 20, "clouds hold only {total} bytes");

    // One Byzantine cloud: every one of its files damaged. Clients still get exact bytes.
    let damaged = corrupt_cloud(&clouds.join("cloud-2"));
    assert!(damaged > 10, "only {damaged} files in cloud-2");
    let down2 = work.join("big.down2");
    ok(gw.cp_down(&[], "s3://data/big.bin", &down2), "download");
    assert!(
        same_file(&big, &down2),
        "download with a corrupted cloud differs"
    );
    let back2 = work.join("tree.down2");
    gw.aws_ok(&[
        "s3",
        "sync",
        "--only-show-errors",
        "s3://data/tree",
        back2.to_str().unwrap(),
    ]);
    for n in names {
        assert!(
            same_file(&tree.join(n), &back2.join(n)),
            "{n} differs, corrupted cloud"
        );
    }

    // Deletes: a recursive rm (DeleteObjects) and a single delete-object.
    gw.aws_ok(&[
        "s3",
        "rm",
        "--only-show-errors",
        "--recursive",
        "s3://data/tree",
    ]);
    let left = gw.aws_ok(&["s3api", "list-objects-v2", "--bucket", "data"]);
    assert!(
        left.contains("big.bin") && !left.contains("tree/"),
        "{left}"
    );
    gw.aws_ok(&[
        "s3api",
        "delete-object",
        "--bucket",
        "data",
        "--key",
        "big.bin",
    ]);
    let gone = gw.aws(&[
        "s3api",
        "head-object",
        "--bucket",
        "data",
        "--key",
        "big.bin",
    ]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("404"));
    gw.aws_ok(&["s3", "rb", "s3://data"]);
}

#[test]
fn gateway_bad_input_gets_s3_errors_and_nothing_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir);

    // A config without a usable [gateway] section: one clear line, non-zero exit.
    let cfg_path = dir.join("rampart.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let bare = cfg.split("[gateway]").next().unwrap().to_owned();
    std::fs::write(&cfg_path, &bare).unwrap();
    let out = rampart(dir, &["gateway", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no [gateway] section"), "{err}");
    std::fs::write(&cfg_path, format!("{bare}[gateway]\naccess_keys = []\n")).unwrap();
    let out = rampart(dir, &["gateway", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("at least one"), "{err}");

    // Uploads limited to 6 MiB, so a 7 MiB part is too large.
    let limited = cfg.replace(
        "upload_bytes_max = 5368709120",
        &format!("upload_bytes_max = {}", 6 << 20),
    );
    assert_ne!(limited, cfg);
    std::fs::write(&cfg_path, limited).unwrap();
    let gw = Gateway::start(dir);
    gw.python("bad_input");
    drop(gw);

    // The store itself (signed metadata, read by the CLI) holds exactly the objects that
    // completed: no trace of the refused, aborted or interrupted uploads.
    let ls = ok(rampart(dir, &["ls", "o/"]), "rampart ls");
    let keys: Vec<&str> = ls
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(keys, ["o/bad/keep", "o/bad/mp2"], "{ls}");
    let stat = ok(rampart(dir, &["stat", "o/bad/keep"]), "rampart stat");
    // One version only: the interrupted overwrite never got one.
    assert!(stat.contains("9 bytes") && !stat.contains("v2."), "{stat}");
}

/// Issue 12: `x-amz-checksum-*` on PUT, UploadPart (header or `aws-chunked` trailer) and
/// multipart objects is verified (a wrong one is `BadDigest` and stores nothing), kept and
/// returned on request; boto3's default CRC32 round-trips.
#[test]
fn gateway_issue_12_verifies_keeps_and_returns_checksums() {
    let (_tmp, dir, _work) = scratch();
    init(&dir);
    let gw = Gateway::start(&dir);
    gw.python("checksums");
}

/// Issue 12: ceph/s3-tests cases the gateway failed (listing encodings and markers,
/// ListBuckets pages, ListObjectVersions, representation headers, 304 ETags, multipart
/// retries), each checked with boto3 or raw HTTP; and `Transfer-Encoding: chunked` PUTs
/// (411 `MissingContentLength` without aws-chunked framing, streamed with it).
#[test]
fn gateway_issue_12_s3_tests_conformance_fixes() {
    let (_tmp, dir, _work) = scratch();
    init(&dir);
    let gw = Gateway::start(&dir);
    gw.python("conformance");
    gw.python("chunked_transfer");
}

/// Issue 12, security 1, 2, 4 and 6: unsigned `x-amz-*` headers (a presigned PUT turned
/// into a copy, injected metadata), Signature V2 in both forms, presigned URLs valid for
/// over 7 days are all refused with 403; errors carry a request id; and at trace level the
/// gateway never logs the signature it computed for a rejected request.
#[test]
fn gateway_issue_12_refuses_unsigned_headers_sigv2_and_long_presigned_urls() {
    let (tmp, dir, _work) = scratch();
    init(&dir);
    let log = tmp.path().join("gateway.log");
    let gw = Gateway::start_logged(&dir, Some(&log));
    let out = gw.python("signatures");
    drop(gw);
    let good = out
        .lines()
        .find_map(|l| l.strip_prefix("correct signature: "))
        .unwrap_or_else(|| panic!("no signature printed: {out}"));
    assert_eq!(good.len(), 64, "{good}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("TRACE") || logged.contains("DEBUG"),
        "the gateway logged nothing at trace level"
    );
    assert!(
        !logged.contains(good),
        "the log holds the signature of a rejected request"
    );
    assert!(
        !logged.contains(&gw_secret(&dir)),
        "the log holds the secret access key"
    );
}

/// Issue 12, security 5: `rampart.toml` holds the S3 secrets and cloud credentials.
/// `rampart init` writes it 0600, and the gateway refuses one that others can read, with
/// one line saying how to fix it.
#[test]
fn gateway_issue_12_refuses_a_config_others_can_read() {
    use std::os::unix::fs::PermissionsExt;

    let (_tmp, dir, _work) = scratch();
    init(&dir);
    let config = dir.join("rampart.toml");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "rampart init wrote mode {mode:o}");
    for bad in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(bad)).unwrap();
        let (status, err) = refused_within(&dir, &["gateway", "--listen", "127.0.0.1:0"]);
        assert!(!status.success(), "exited 0 with a mode {bad:o} config");
        assert!(err.contains("chmod 600"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    drop(Gateway::start(&dir));
}

/// Runs `rampart args`, which must exit on its own within [`START_DEADLINE`] (a gateway
/// that starts serving instead fails the test rather than hanging it): status, stderr.
fn refused_within(dir: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .current_dir(dir)
        .env_remove("RAMPART_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running rampart");
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // stderr ends when the process exits.
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    match rx.recv_timeout(START_DEADLINE) {
        Ok(text) => (child.wait().unwrap(), text),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rampart {args:?} kept running instead of refusing");
        }
    }
}

/// Issue 12, security 3: idle connections cannot exhaust the gateway. With a 2 s header
/// timeout and at most 4 connections per address, connections beyond the cap are refused
/// with 503, idle ones are closed by the header timeout (the Python side fails if one
/// stays open 30 s), and an honest client is then served.
#[test]
fn gateway_issue_12_closes_idle_connections_and_caps_them_per_address() {
    let (_tmp, dir, _work) = scratch();
    init(&dir);
    let config = dir.join("rampart.toml");
    let mut table: toml::Table =
        toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let gw = table["gateway"].as_table_mut().unwrap();
    gw.insert("header_timeout_secs".into(), 2.into());
    gw.insert("idle_timeout_secs".into(), 4.into());
    gw.insert("connections_per_address_max".into(), 4.into());
    std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
    let gw = Gateway::start(&dir);
    gw.python("idle_clients");
}

/// Issue 12, security 3: a minimum body rate. With one transfer slot and a minimum of
/// 64 KiB/s over 2 s, an authenticated client that trickles an upload (10 KiB/s), or reads
/// a 32 MiB download that slowly through a 4 KiB receive buffer, loses its transfer and
/// frees the slot: other requests are served while it is still connected and before it
/// has made 150 trickle steps (then it would finish at full speed and free the slot
/// itself), the trickled upload stores nothing, the slow download is cut short, and a
/// full-speed download is unaffected.
/// Both halves are revert-checked (ADR 0403).
#[test]
fn gateway_issue_12_minimum_body_rate_frees_the_transfer_slot() {
    let (_tmp, dir, _work) = scratch();
    init(&dir);
    let config = dir.join("rampart.toml");
    let mut table: toml::Table =
        toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let gw = table["gateway"].as_table_mut().unwrap();
    gw.insert("transfers_max".into(), 1.into());
    gw.insert("body_rate_min_bytes_per_sec".into(), (64 * 1024).into());
    gw.insert("body_rate_window_secs".into(), 2.into());
    std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
    let gw = Gateway::start(&dir);
    gw.python("slow_clients");
}

fn gw_secret(dir: &Path) -> String {
    let cfg: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("rampart.toml")).unwrap()).unwrap();
    cfg["gateway"]["access_keys"][0]["secret_access_key"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The single encrypted backend: `rampart init --clouds 1`, then the gateway in front of
/// one cloud. The AWS CLI gets its bytes back; the cloud holds only ciphertext; a cloud
/// that changes bytes makes downloads fail instead of returning them.
#[test]
fn gateway_on_a_single_encrypted_backend() {
    let (_tmp, dir, work) = scratch();
    let said = ok(rampart(&dir, &["init", "--clouds", "1"]), "rampart init");
    assert!(said.contains("single encrypted backend"), "{said}");
    let gw = Gateway::start(&dir);
    gw.aws_ok(&["s3", "mb", "s3://one"]);

    // 20 MiB: a multipart upload through the CLI.
    let big = work.join("big.bin");
    write_blocks(&big, 20, Some(MARKER));
    gw.cp(&[], &big, "s3://one/big.bin");
    let down = work.join("big.down");
    ok(gw.cp_down(&[], "s3://one/big.bin", &down), "download");
    assert!(same_file(&big, &down), "download differs");
    let listed = gw.aws_ok(&["s3", "ls", "s3://one/"]);
    assert!(listed.contains("20971520 big.bin"), "{listed}");

    let cloud = dir.join("clouds");
    let (hits, searched) = clouds_containing(&cloud, MARKER);
    assert!(hits.is_empty(), "plaintext in the cloud: {hits:?}");
    assert!(searched > 20 << 20, "searched only {searched} bytes");

    // One cloud and no others to outvote it: a lying cloud is detected, not survived.
    std::fs::remove_file(&down).unwrap();
    assert!(corrupt_cloud(&cloud) > 0);
    let out = gw.aws_once(
        &gw.endpoint,
        &["s3", "cp", "s3://one/big.bin", down.to_str().unwrap()],
    );
    assert!(
        !out.status.success(),
        "a corrupted single cloud served data"
    );
    assert!(
        !down.exists() || !same_file(&big, &down),
        "failed download left the full file"
    );
    // Issue 12, security 6: the error names no cloud and no per-cloud reason.
    let out = gw.aws_once(
        &gw.endpoint,
        &[
            "s3api",
            "get-object",
            "--bucket",
            "one",
            "--key",
            "big.bin",
            down.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && (err.contains("InternalError") || err.contains("ServiceUnavailable")),
        "{err}"
    );
    let cloud_names = ["local-", "cloud-", "magic", "metadata", "shard"];
    assert!(
        cloud_names.iter().all(|n| !err.contains(n)),
        "the error leaks store internals: {err}"
    );
}

/// HTTPS with an operator's certificate: the AWS CLI trusting that certificate works; plain
/// HTTP on the same port and a client that does not trust the certificate are refused; a
/// private key that others can read stops the gateway before it listens.
#[test]
fn gateway_serves_https_with_the_configured_certificate() {
    use std::os::unix::fs::PermissionsExt;

    let (_tmp, dir, work) = scratch();
    init(&dir);
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = dir.join("gateway-cert.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(dir.join("gateway-key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let config = dir.join("rampart.toml");
    let mut table: toml::Table =
        toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let gw = table["gateway"].as_table_mut().unwrap();
    gw.insert("tls_cert_file".into(), "gateway-cert.pem".into());
    gw.insert("tls_key_file".into(), "gateway-key.pem".into());
    std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();

    let key_file = dir.join("gateway-key.pem");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = rampart(&dir, &["gateway", "--listen", "127.0.0.1:0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("chmod 600"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let gw = Gateway::start(&dir);
    assert!(
        gw.endpoint.starts_with("https://127.0.0.1:"),
        "{}",
        gw.endpoint
    );
    let ca = cert.to_str().unwrap();
    gw.aws_ok(&["--ca-bundle", ca, "s3", "mb", "s3://secure"]);
    let file = work.join("report.txt");
    let mut body = MARKER.to_vec();
    body.extend(b"grid readings over TLS ".repeat(5000));
    std::fs::write(&file, &body).unwrap();
    let trust = ["--ca-bundle", ca];
    gw.cp(&trust, &file, "s3://secure/report.txt");
    let down = work.join("report.down");
    ok(
        gw.cp_down(&trust, "s3://secure/report.txt", &down),
        "download",
    );
    assert_eq!(std::fs::read(&down).unwrap(), body);

    // A client that does not trust the certificate, and plain HTTP, are both refused.
    let ls = ["--cli-read-timeout", "10", "s3", "ls", "s3://secure/"];
    let plain_endpoint = gw.endpoint.replace("https://", "http://");
    for (endpoint, what) in [
        (
            gw.endpoint.as_str(),
            "an untrusted certificate was accepted",
        ),
        (
            plain_endpoint.as_str(),
            "plain HTTP was served on the HTTPS port",
        ),
    ] {
        let out = gw.aws_once(endpoint, &ls);
        assert!(!out.status.success(), "{what}");
    }
}
