//! Jepsen-style test of the store under a Byzantine cloud that picks its moves.
//!
//! - **Endpoints:** four real moto_server processes; the third sits behind the Byzantine
//!   proxy of `history/proxy.rs` (replay, withhold, fake names, refused swaps, slow and
//!   stalled answers, dropped checksum headers, in phases drawn from the seed).
//! - **Concurrent work:** three threads run `rampart put/get/rm/ls` processes on four keys
//!   (all sharing one key file, as an operator's scripts would), a `rampart gateway` serves a
//!   boto3 client doing puts, gets and deletes on two more, and `rampart gc` and
//!   `rampart scrub` run all along.
//! - **The check:** `history/checker.rs` judges the recorded history for regular semantics
//!   and lost writes; every read must succeed (one faulty cloud of four is within the
//!   bound), no listing may show a name nobody wrote, and every move must have been used.
//!
//! CI runs it with a fixed seed for 25 s of work. A longer soak:
//! `RAMPART_HISTORY_SECS=600 RAMPART_HISTORY_SEED=7 cargo test -p rampart --test history`.

// A test of real processes: it reads the clock to time them.
#![allow(clippy::disallowed_methods)]

#[path = "history/checker.rs"]
mod checker;
#[path = "history/proxy.rs"]
mod proxy;
// Shared with the store tests; this test uses only the S3 half.
#[allow(dead_code)]
#[path = "../../store/tests/common/servers.rs"]
mod servers;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use checker::{Kind, Op, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The CLI workers' keys.
const CLI_KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
/// Keys that the lazarus worker deletes, lets `gc` purge, and writes again.
const LAZARUS_KEYS: [&str; 2] = ["z0", "z1"];
const GATEWAY_BUCKET: &str = "hist";
const GATEWAY_KEYS: [&str; 2] = ["g0", "g1"];
/// The `gc` grace period: a put that took longer may lose its data to `gc` by contract
/// (its blobs look abandoned), so the checker treats such a put as unacknowledged.
const GC_GRACE_SECS: u64 = 3;
/// A CLI operation that has not returned after this long is killed and counted as failed.
const OP_DEADLINE: Duration = Duration::from_secs(120);

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn env_u64(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{var} must be a number"))
        })
        .unwrap_or(default)
}

/// Runs `rampart ARGS` in `dir`, killing it after [`OP_DEADLINE`].
fn rampart(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .current_dir(dir)
        .env_remove("RAMPART_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running rampart");
    let deadline = Instant::now() + OP_DEADLINE;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let mut out = child.wait_with_output().unwrap();
            out.stderr
                .extend_from_slice(format!("killed after {OP_DEADLINE:?}").as_bytes());
            return out;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stderr_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', " | ")
}

/// Everything the workers record.
#[derive(Default)]
struct Record {
    history: Vec<Op>,
    /// Operations that failed, with their error, besides the history's own record.
    failures: Vec<String>,
    /// Deleted keys `gc` reported purged.
    purged: u64,
    /// Names listings showed.
    listed: BTreeSet<String>,
}

struct Cluster {
    dir: tempfile::TempDir,
    _moto: Vec<servers::Server>,
    proxy: proxy::Proxy,
}

/// Four moto_server endpoints (the third behind the Byzantine proxy) and a store over them.
fn cluster(seed: u64) -> Cluster {
    let moto: Vec<servers::Server> = (0..4).map(|_| servers::moto()).collect();
    for m in &moto {
        servers::create_bucket(m, "rampart");
    }
    let proxy = proxy::Proxy::start(moto[2].port, seed);
    let dir = tempfile::tempdir().unwrap();
    let out = rampart(dir.path(), &["init"]);
    assert!(out.status.success(), "init: {}", stderr_line(&out));
    let cfg_path = dir.path().join("rampart.toml");
    let mut cfg: toml::Table =
        toml::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let clouds: Vec<toml::Value> = moto
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let port = if i == 2 { proxy.port } else { m.port };
            let mut opts = toml::Table::new();
            for (k, v) in servers::s3_options(m) {
                opts.insert(k, toml::Value::String(v));
            }
            opts.insert(
                "aws_endpoint".into(),
                toml::Value::String(format!("http://127.0.0.1:{port}")),
            );
            let mut c = toml::Table::new();
            c.insert("name".into(), format!("moto-{i}").into());
            c.insert("url".into(), "s3://rampart".into());
            c.insert("options".into(), toml::Value::Table(opts));
            toml::Value::Table(c)
        })
        .collect();
    cfg.insert("clouds".into(), toml::Value::Array(clouds));
    // Rewritten in place: the file keeps the 0600 mode `init` gave it.
    std::fs::write(&cfg_path, toml::to_string(&cfg).unwrap()).unwrap();
    std::fs::remove_dir_all(dir.path().join("clouds")).unwrap();
    Cluster {
        dir,
        _moto: moto,
        proxy,
    }
}

/// One client process identity: runs `rampart` commands and records them.
struct Cli {
    dir: PathBuf,
    name: String,
    scratch: PathBuf,
    rec: Arc<Mutex<Record>>,
    seq: u64,
}

impl Cli {
    fn new(dir: &Path, name: &str, rec: &Arc<Mutex<Record>>) -> Self {
        let scratch = dir.join(name);
        std::fs::create_dir_all(&scratch).unwrap();
        Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            scratch,
            rec: rec.clone(),
            seq: 0,
        }
    }

    fn record(&self, key: &str, start: u128, kind: Kind, failure: Option<String>) {
        let end = now_ns();
        let mut r = self.rec.lock().unwrap();
        if let Some(f) = failure {
            r.failures.push(format!("{} {f}", self.name));
        }
        r.history.push(Op {
            client: self.name.clone(),
            key: key.into(),
            start,
            end,
            kind,
        });
    }

    /// Puts a new unique value of `pad` random bytes after its tag line.
    fn put(&mut self, rng: &mut ChaCha8Rng, key: &str, pad: usize) {
        self.seq += 1;
        let tag = format!("{}-{}", self.name, self.seq);
        let mut body = format!("TAG:{tag}\n").into_bytes();
        body.extend((0..pad).map(|_| rng.r#gen::<u8>()));
        let file = self.scratch.join("put.bin");
        std::fs::write(&file, &body).unwrap();
        let start = now_ns();
        let out = rampart(&self.dir, &["put", file.to_str().unwrap(), key]);
        let failure =
            (!out.status.success()).then(|| format!("put {tag} {key}: {}", stderr_line(&out)));
        let kind = Kind::Write {
            value: Value::Put(tag),
            acked: out.status.success(),
        };
        self.record(key, start, kind, failure);
    }

    fn get(&self, key: &str) {
        let start = now_ns();
        let result = cli_get(&self.dir, &self.scratch, key);
        let failure = result.as_ref().err().map(|e| format!("get {key}: {e}"));
        self.record(key, start, Kind::Read(result), failure);
    }

    fn rm(&self, key: &str) {
        let start = now_ns();
        let out = rampart(&self.dir, &["rm", key]);
        let err = stderr_line(&out);
        // Deleting a key that does not exist fails and writes nothing; any other failure
        // leaves the outcome unknown.
        let failure = (!out.status.success() && !err.contains("no object named"))
            .then(|| format!("rm {key}: {err}"));
        let kind = Kind::Write {
            value: Value::Absent,
            acked: out.status.success(),
        };
        self.record(key, start, kind, failure);
    }

    fn ls(&self) {
        let out = rampart(&self.dir, &["ls"]);
        let mut r = self.rec.lock().unwrap();
        if out.status.success() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(name) = line.split_whitespace().last() {
                    r.listed.insert(name.to_owned());
                }
            }
        } else {
            r.failures
                .push(format!("{} ls: {}", self.name, stderr_line(&out)));
        }
    }
}

/// One CLI worker: random puts, gets, deletes and listings until `until`.
fn cli_worker(dir: PathBuf, id: usize, seed: u64, until: Instant, rec: Arc<Mutex<Record>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((id as u64 + 1) * 0x9e37_79b9));
    let mut cli = Cli::new(&dir, &format!("cli-{id}"), &rec);
    while Instant::now() < until {
        let key = CLI_KEYS[rng.gen_range(0..CLI_KEYS.len())];
        let roll: f64 = rng.r#gen();
        if roll < 0.4 {
            let pad = [64usize, 3000, 40_000, 300_000][rng.gen_range(0..4)];
            cli.put(&mut rng, key, pad);
        } else if roll < 0.8 {
            cli.get(key);
        } else if roll < 0.95 {
            cli.rm(key);
        } else {
            cli.ls();
        }
    }
}

/// Deletes a key, leaves it deleted for longer than the `gc` grace period (so that `gc`
/// purges it, and the Byzantine cloud may resurrect it), then writes it again and reads it,
/// over and over: the path of the review's lost writes.
fn lazarus_worker(dir: PathBuf, seed: u64, until: Instant, rec: Arc<Mutex<Record>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x01a2_a5a5);
    let mut cli = Cli::new(&dir, "lazarus", &rec);
    let mut round = 0;
    while Instant::now() < until {
        let key = LAZARUS_KEYS[round % LAZARUS_KEYS.len()];
        round += 1;
        cli.put(&mut rng, key, 100);
        cli.get(key);
        cli.rm(key);
        std::thread::sleep(Duration::from_secs(GC_GRACE_SECS + 9));
        cli.get(key);
        cli.put(&mut rng, key, 100);
        cli.get(key);
    }
}

/// `rampart get KEY`: the tag of what it returned, `Absent` for "no object named".
fn cli_get(dir: &Path, scratch: &Path, key: &str) -> Result<Value, String> {
    let file = scratch.join("got.bin");
    let _ = std::fs::remove_file(&file);
    let out = rampart(dir, &["get", key, file.to_str().unwrap()]);
    if !out.status.success() {
        let err = stderr_line(&out);
        return if err.contains("no object named") {
            Ok(Value::Absent)
        } else {
            Err(err)
        };
    }
    let body = std::fs::read(&file).map_err(|e| format!("reading output: {e}"))?;
    let first = body.split(|&b| b == b'\n').next().unwrap_or(&[]);
    match first.strip_prefix(b"TAG:") {
        Some(t) => Ok(Value::Put(String::from_utf8_lossy(t).into_owned())),
        None => Ok(Value::Put("<garbage>".into())),
    }
}

/// Runs `rampart ARGS` over and over until `until`; returns the number of runs. A failure
/// is recorded unless `tolerated` accepts its error.
fn maintenance(
    dir: PathBuf,
    args: &[&str],
    tolerated: fn(&str) -> bool,
    until: Instant,
    rec: Arc<Mutex<Record>>,
) -> u32 {
    let mut runs = 0;
    while Instant::now() < until {
        let out = rampart(&dir, args);
        runs += 1;
        let err = stderr_line(&out);
        let purged = String::from_utf8_lossy(&out.stdout)
            .split_once("purged ")
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        rec.lock().unwrap().purged += purged;
        if !out.status.success() && !tolerated(&err) {
            rec.lock()
                .unwrap()
                .failures
                .push(format!("{}: {err}", args.join(" ")));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    runs
}

/// A running `rampart gateway`, killed on drop.
struct Gateway {
    child: Child,
    endpoint: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway(dir: &Path) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["gateway", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("RAMPART_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting rampart gateway");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the gateway did not announce its address within 60 s");
    let endpoint = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    Gateway { child, endpoint }
}

fn python() -> PathBuf {
    std::env::var_os("RAMPART_TEST_PYTHON")
        .map(PathBuf::from)
        .expect("RAMPART_TEST_PYTHON not set: run ./scripts/test.sh, which installs boto3")
}

/// Runs the boto3 worker for `secs` and parses its history.
fn gateway_worker(dir: &Path, gw: &Gateway, secs: u64, seed: u64) -> (Vec<Op>, Vec<String>) {
    let cfg: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("rampart.toml")).unwrap()).unwrap();
    let key = &cfg["gateway"]["access_keys"][0];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/history/gateway_worker.py");
    let out = Command::new(python())
        .arg(script)
        .args([
            gw.endpoint.as_str(),
            GATEWAY_BUCKET,
            &secs.to_string(),
            &seed.to_string(),
        ])
        .env("AWS_ACCESS_KEY_ID", key["access_key_id"].as_str().unwrap())
        .env(
            "AWS_SECRET_ACCESS_KEY",
            key["secret_access_key"].as_str().unwrap(),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("running the boto3 worker");
    assert!(
        out.status.success(),
        "boto3 worker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut ops, mut failures) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 7, "bad worker line {line:?}");
        let key = format!("o/{GATEWAY_BUCKET}/{}", f[1]);
        let (start, end): (u128, u128) = (f[3].parse().unwrap(), f[4].parse().unwrap());
        let ok = f[5] == "ok";
        if !ok {
            failures.push(format!("boto3 {} {key}: {}", f[0], f[6]));
        }
        let value = if f[2] == "absent" {
            Value::Absent
        } else {
            Value::Put(f[2].to_owned())
        };
        let kind = match f[0] {
            "get" if ok => Kind::Read(Ok(value)),
            "get" => Kind::Read(Err(f[6].to_owned())),
            _ => Kind::Write { value, acked: ok },
        };
        ops.push(Op {
            client: "boto3".into(),
            key,
            start,
            end,
            kind,
        });
    }
    (ops, failures)
}

#[test]
fn a_byzantine_cloud_that_picks_its_moves_breaks_no_promise() {
    let seed = env_u64("RAMPART_HISTORY_SEED", 20261202);
    let secs = env_u64("RAMPART_HISTORY_SECS", 25);
    eprintln!("history test: seed {seed}, {secs} s of work");
    let c = cluster(seed);
    let dir = c.dir.path().to_owned();
    let gw = gateway(&dir);
    let rec = Arc::new(Mutex::new(Record::default()));
    let until = Instant::now() + Duration::from_secs(secs);

    let mut threads = Vec::new();
    for id in 0..3 {
        let (dir, rec) = (dir.clone(), rec.clone());
        threads.push(std::thread::spawn(move || {
            cli_worker(dir, id, seed, until, rec)
        }));
    }
    {
        let (dir, rec) = (dir.clone(), rec.clone());
        threads.push(std::thread::spawn(move || {
            lazarus_worker(dir, seed, until, rec)
        }));
    }
    // `gc` with a grace period shorter than the run, so that deleted keys are purged
    // while puts of them are in flight; `scrub` may fail only to repair the Byzantine cloud,
    // which refuses or drops some of its writes.
    let gc = {
        let (dir, rec) = (dir.clone(), rec.clone());
        std::thread::spawn(move || {
            maintenance(
                dir,
                &["gc", "--grace-secs", &GC_GRACE_SECS.to_string()],
                |_| false,
                until,
                rec,
            )
        })
    };
    let scrub = {
        let (dir, rec) = (dir.clone(), rec.clone());
        std::thread::spawn(move || {
            maintenance(
                dir,
                &["scrub"],
                |e| e.contains("could not be repaired"),
                until,
                rec,
            )
        })
    };
    let (gw_ops, gw_failures) = gateway_worker(&dir, &gw, secs, seed);
    for t in threads {
        t.join().unwrap();
    }
    let (gcs, scrubs) = (gc.join().unwrap(), scrub.join().unwrap());
    drop(gw);

    let mut rec = Arc::try_unwrap(rec).ok().unwrap().into_inner().unwrap();
    rec.history.extend(gw_ops);
    rec.failures.extend(gw_failures);

    // After everything: the newest acknowledged write of every key must still be there.
    let scratch = dir.join("final");
    std::fs::create_dir_all(&scratch).unwrap();
    let keys: Vec<String> = CLI_KEYS
        .iter()
        .chain(LAZARUS_KEYS.iter())
        .map(|k| k.to_string())
        .chain(
            GATEWAY_KEYS
                .iter()
                .map(|k| format!("o/{GATEWAY_BUCKET}/{k}")),
        )
        .collect();
    for key in &keys {
        let start = now_ns();
        let result = cli_get(&dir, &scratch, key);
        if let Err(e) = &result {
            rec.failures.push(format!("final get {key}: {e}"));
        }
        rec.history.push(Op {
            client: "final".into(),
            key: key.clone(),
            start,
            end: now_ns(),
            kind: Kind::Read(result),
        });
    }

    let reads = rec
        .history
        .iter()
        .filter(|o| matches!(o.kind, Kind::Read(_)))
        .count();
    let writes = rec.history.len() - reads;
    let applied = c.proxy.applied();
    eprintln!(
        "history: {} operations ({writes} writes, {reads} reads), {gcs} gc runs ({} keys purged) \
         and {scrubs} scrub runs; \
         adversary: {} phases, moves applied {applied:?}, {} fake names",
        rec.history.len(),
        rec.purged,
        c.proxy.phases(),
        c.proxy.fake_names()
    );

    let mut slow_puts = 0;
    for op in &mut rec.history {
        if let Kind::Write {
            value: Value::Put(_),
            acked,
        } = &mut op.kind
            && *acked
            && op.end - op.start >= u128::from(GC_GRACE_SECS) * 1_000_000_000
        {
            *acked = false;
            slow_puts += 1;
        }
    }
    eprintln!("history: {slow_puts} acknowledged puts took longer than the gc grace period");
    let violations = checker::check(&rec.history);
    let bad_names: Vec<&String> = rec
        .listed
        .iter()
        .filter(|n| {
            !keys.contains(n)
                && !n.starts_with("b/")
                && !n.starts_with("u/")
                && !n.starts_with("p/")
        })
        .collect();
    let unused: Vec<_> = proxy::MOVES
        .iter()
        .filter(|m| !applied.contains_key(m))
        .collect();
    let mut report = String::new();
    for v in &violations {
        report.push_str(&format!("\n  violation: {v}"));
    }
    for f in &rec.failures {
        report.push_str(&format!("\n  failed: {f}"));
    }
    for n in &bad_names {
        report.push_str(&format!("\n  listed a name nobody wrote: {n:?}"));
    }
    if !unused.is_empty() {
        report.push_str(&format!("\n  moves never applied: {unused:?}"));
    }
    if writes < 20 || reads < 20 {
        report.push_str(&format!(
            "\n  too little work: {writes} writes, {reads} reads"
        ));
    }
    assert!(report.is_empty(), "seed {seed}:{report}");
}
