//! The replicated KV service as operators run it: four `rampart replica` processes on
//! 127.0.0.1, concurrent clients, and faults (kill -9, SIGSTOP/SIGCONT, restarts, a
//! Byzantine replica). Every client operation is recorded and the whole history is checked
//! for linearizability (`rampart_sim::lin`), which also proves that no acknowledged write
//! was lost and that no client accepted a wrong result.
//!
//! Synchronisation is by condition with bounded deadlines (a replica's "ready" line, a
//! log line, a number of completed operations), never by sleeping for a fixed time.

// Real processes, real time: deadlines and history timestamps read the clock.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_bft::ClientId;
use rampart_cluster::client::{ClientOptions, KvClient};
use rampart_cluster::config::Cluster;
use rampart_kv::{KvOp, KvResult};
use rampart_sim::kv::{KvOp as LinOp, KvResult as LinResult};
use rampart_sim::lin::{self, HistOp};

const KEYS: u8 = 6;
const WORKERS: u64 = 6;

struct Procs {
    tmp: tempfile::TempDir,
    cluster_file: PathBuf,
    children: Vec<Option<Child>>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_addrs(n: usize) -> Vec<String> {
    // Hold all listeners at once so the ports differ; the OS does not hand them out again
    // at once after they close.
    let ls: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("addr").to_string())
        .collect()
}

impl Procs {
    fn init(checkpoint_interval: u64) -> Procs {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("c");
        let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["cluster", "init", "--replicas", "4", "--clients", "4"])
            .arg("--dir")
            .arg(&dir)
            .arg("--addrs")
            .arg(free_addrs(4).join(","))
            .args(["--checkpoint-interval", &checkpoint_interval.to_string()])
            .args(["--request-timeout-ms", "1000"])
            .output()
            .expect("run init");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Procs {
            tmp,
            cluster_file: dir.join("cluster.toml"),
            children: (0..4).map(|_| None).collect(),
        }
    }

    fn log_path(&self, id: usize) -> PathBuf {
        self.tmp.path().join(format!("replica-{id}.stderr"))
    }

    /// Start replica `id` and wait (bounded) for its "ready" line.
    fn start(&mut self, id: usize, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["replica", "--id", &id.to_string()])
            .arg("--cluster")
            .arg(&self.cluster_file)
            .args(extra)
            .env("RAMPART_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn replica");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("ready on") {
                    let _ = tx.send(());
                }
            }
        });
        self.children[id] = Some(child);
        assert!(
            rx.recv_timeout(Duration::from_secs(30)).is_ok(),
            "replica {id} not ready within 30 s: {}",
            std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
        );
    }

    fn kill9(&mut self, id: usize) {
        if let Some(mut c) = self.children[id].take() {
            c.kill().expect("kill -9");
            c.wait().expect("wait");
        }
    }

    fn signal(&self, id: usize, sig: &str) {
        let pid = self.children[id].as_ref().expect("running").id();
        let st = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Wait (bounded) until replica `id`'s log contains `needle`.
    fn wait_log(&self, id: usize, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
            if text.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica {id}: no {needle:?} within {within:?}; log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Concurrent closed-loop clients that record every operation.
struct Load {
    history: Arc<Mutex<Vec<HistOp>>>,
    completed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    clients: Vec<KvClient>,
    epoch: Instant,
}

fn encode_value(v: u64) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn decode_value(b: &[u8]) -> u64 {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a client accepted a value no client wrote: {b:?}"))
}

impl Load {
    fn start(cluster_file: &Path, client_ids: &[u64], epoch: Instant, round: u64) -> Load {
        let cluster = Cluster::load(cluster_file).expect("cluster");
        let clients: Vec<KvClient> = client_ids
            .iter()
            .map(|id| {
                let key = cluster.client_key(ClientId(*id)).expect("client key");
                let opts = ClientOptions {
                    deadline: Duration::from_secs(30),
                    ..ClientOptions::default()
                };
                KvClient::connect(&cluster, ClientId(*id), key, opts).expect("connect")
            })
            .collect();
        let history = Arc::new(Mutex::new(Vec::new()));
        let completed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..WORKERS {
            let c = clients[(w as usize) % clients.len()].clone();
            let (history, completed, stop) = (history.clone(), completed.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let worker = round * 100 + w;
                let mut n = 0u64;
                let mut last_seen: Option<u64> = None;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = ((n * 7 + w) % u64::from(KEYS)) as u8;
                    let value = (worker << 32) | n;
                    let (op, lin_op) = match n % 4 {
                        0 | 1 => (
                            KvOp::Put {
                                key: vec![key],
                                value: encode_value(value),
                            },
                            LinOp::Put(key, value),
                        ),
                        2 => (KvOp::Get { key: vec![key] }, LinOp::Get(key)),
                        _ => (
                            KvOp::Cas {
                                key: vec![key],
                                expected: last_seen.map(encode_value),
                                new: encode_value(value),
                            },
                            LinOp::Cas(key, last_seen, value),
                        ),
                    };
                    let invoke = epoch.elapsed().as_nanos() as u64;
                    let r = c.execute(vec![op], false).await;
                    let response = match r {
                        Ok(mut rs) => {
                            let res = match rs.pop().expect("one result") {
                                KvResult::Written => LinResult::Ok,
                                KvResult::Value(v) => {
                                    let v = v.map(|b| decode_value(&b));
                                    last_seen = v;
                                    LinResult::Value(v)
                                }
                                KvResult::Cas { swapped, current } => {
                                    last_seen = current.map(|b| decode_value(&b));
                                    LinResult::Swapped(swapped)
                                }
                                other => {
                                    panic!("a client accepted an unexpected result: {other:?}")
                                }
                            };
                            completed.fetch_add(1, Ordering::Relaxed);
                            Some((epoch.elapsed().as_nanos() as u64, res))
                        }
                        // Unknown outcome: the write may or may not have taken effect.
                        Err(_) => None,
                    };
                    history.lock().expect("history").push(HistOp {
                        client: worker,
                        op: lin_op,
                        invoke,
                        response,
                    });
                }
            }));
        }
        Load {
            history,
            completed,
            stop,
            tasks,
            clients,
            epoch,
        }
    }

    /// Wait (bounded) for `more` operations to complete from now on.
    async fn progress(&self, more: u64, within: Duration, what: &str) {
        let target = self.completed.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + within;
        while self.completed.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "{what}: only {} of {target} operations completed within {within:?}",
                self.completed.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn requests(&self) -> u64 {
        self.clients
            .iter()
            .map(|c| c.stats().requests.load(Ordering::Relaxed))
            .sum()
    }

    async fn finish(self) -> Vec<HistOp> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("worker panicked");
        }
        let _ = self.epoch;
        Arc::try_unwrap(self.history)
            .map(|m| m.into_inner().expect("history"))
            .unwrap_or_else(|a| a.lock().expect("history").clone())
    }
}

fn check(history: &[HistOp]) {
    let done = history.iter().filter(|h| h.response.is_some()).count();
    assert!(done > 0, "no operation completed");
    if let Err(e) = lin::check(history) {
        panic!(
            "history of {} operations ({done} completed) is not linearizable: {e}",
            history.len()
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// kill -9 a follower: service continues. Write past several checkpoints, restart it: it
/// catches up by state transfer (and then carries the quorum when another replica dies).
/// Finally kill -9 the whole cluster and restart it: no acknowledged write is lost.
#[test]
fn follower_crash_state_transfer_and_full_restart() {
    let interval = 16;
    let mut p = Procs::init(interval);
    for i in 0..4 {
        p.start(i, &[]);
    }
    let rt = runtime();
    let epoch = Instant::now();
    let mut history = Vec::new();
    rt.block_on(async {
        let load = Load::start(&p.cluster_file, &[0, 1], epoch, 0);
        load.progress(50, Duration::from_secs(60), "warm-up").await;
        p.kill9(3);
        load.progress(50, Duration::from_secs(60), "after kill -9 of follower 3")
            .await;
        // Several checkpoints' worth of decisions (a decision holds at most one request
        // per client) while replica 3 is down.
        let target = load.requests() + 2 * 4 * interval;
        let deadline = Instant::now() + Duration::from_secs(120);
        while load.requests() < target {
            assert!(
                Instant::now() < deadline,
                "load stalled with replica 3 down"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p.start(3, &[]);
        p.wait_log(
            3,
            "state transfer installed a checkpoint",
            Duration::from_secs(60),
        );
        // Replica 3 must now be part of every quorum.
        p.kill9(2);
        load.progress(
            50,
            Duration::from_secs(60),
            "replica 3 in the quorum after state transfer",
        )
        .await;
        history.extend(load.finish().await);
    });
    // Full-cluster restart.
    for i in 0..4 {
        p.kill9(i);
    }
    for i in 0..4 {
        p.start(i, &[]);
    }
    rt.block_on(async {
        let load = Load::start(&p.cluster_file, &[2, 3], epoch, 1);
        load.progress(50, Duration::from_secs(60), "after full restart")
            .await;
        history.extend(load.finish().await);
    });
    // The first reads after the restart must see the last acknowledged writes: the
    // checker rejects any history where they do not.
    check(&history);
}

/// SIGSTOP the leader: a leader change happens and service continues. SIGCONT: it catches
/// up, and carries the quorum once a follower dies.
#[test]
fn leader_sigstop_changes_leader_and_it_catches_up() {
    let mut p = Procs::init(64);
    for i in 0..4 {
        p.start(i, &[]);
    }
    let rt = runtime();
    let epoch = Instant::now();
    let history = rt.block_on(async {
        let load = Load::start(&p.cluster_file, &[0, 1], epoch, 0);
        load.progress(50, Duration::from_secs(60), "warm-up").await;
        p.signal(0, "-STOP");
        load.progress(50, Duration::from_secs(60), "leader 0 stopped")
            .await;
        p.wait_log(1, "regency installed", Duration::from_secs(10));
        p.signal(0, "-CONT");
        // Leader of regency 1 is replica 1; kill follower 3, so replica 0 is needed.
        p.kill9(3);
        load.progress(
            50,
            Duration::from_secs(60),
            "resumed replica 0 in the quorum",
        )
        .await;
        load.finish().await
    });
    check(&history);
}

fn byzantine(mode: &str, id: usize) {
    let mut p = Procs::init(64);
    for i in 0..4 {
        if i == id {
            p.start(i, &["--danger-byzantine", mode]);
        } else {
            p.start(i, &[]);
        }
    }
    p.wait_log(id, "Byzantine TEST mode", Duration::from_secs(5));
    let rt = runtime();
    let history = rt.block_on(async {
        let load = Load::start(&p.cluster_file, &[0, 1], Instant::now(), 0);
        load.progress(200, Duration::from_secs(90), mode).await;
        load.finish().await
    });
    if id == 0 {
        // The equivocating leader was deposed (no value can gather a quorum under it).
        p.wait_log(1, "regency installed", Duration::from_secs(5));
    }
    // Every accepted result decoded to a value some client wrote (else the worker panics)
    // and the history is linearizable: no client accepted a wrong result.
    check(&history);
}

/// The leader equivocates (conflicting PROPOSE/WRITE/ACCEPT to different replicas).
#[test]
fn byzantine_equivocating_leader() {
    byzantine("equivocate", 0);
}

/// A replica answers clients with wrong, validly signed results.
#[test]
fn byzantine_wrong_replies() {
    byzantine("wrong-replies", 1);
}

/// A replica says nothing at all.
#[test]
fn byzantine_silent_replica() {
    byzantine("silent", 2);
}

/// Bad input gets a one-line error and a non-zero exit.
#[test]
fn bad_input_is_refused_clearly() {
    let p = Procs::init(64);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(args)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        err
    };
    let f = p.cluster_file.to_str().expect("utf-8");
    assert!(run(&["replica", "--cluster", f, "--id", "4"]).contains("unknown replica id 4"));
    assert!(
        run(&["kv", "--cluster", f, "--client", "9", "get", "k"]).contains("unknown client id 9")
    );
    let big = "v".repeat(70_000);
    assert!(run(&["kv", "--cluster", f, "put", "k", &big]).contains("value longer than"));
    assert!(run(&["kv", "--cluster", f, "get", &"k".repeat(2000)]).contains("key longer than"));
    // Nobody is running: unreachable, within the deadline.
    assert!(
        run(&["kv", "--cluster", f, "--timeout-secs", "1", "get", "k"])
            .contains("cluster unreachable")
    );
    assert!(
        run(&["kv", "--cluster", "/nonexistent/cluster.toml", "get", "k"]).contains("cluster file")
    );
    let dir = p
        .cluster_file
        .parent()
        .expect("dir")
        .to_str()
        .expect("utf-8");
    assert!(run(&["cluster", "init", "--dir", dir]).contains("exists already"));
    assert!(
        run(&[
            "cluster",
            "init",
            "--replicas",
            "3",
            "--dir",
            "/tmp/x-never"
        ])
        .contains("need between 4")
    );
}

fn rampart(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .expect("run rampart")
}

fn ok_stdout(args: &[&str]) -> String {
    let out = rampart(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The README walkthrough: four replica processes, the `kv` CLI for every operation, one
/// replica killed and restarted.
#[test]
fn cli_walkthrough_with_four_replica_processes() {
    let mut p = Procs::init(64);
    for i in 0..4 {
        p.start(i, &[]);
    }
    let f = p.cluster_file.to_str().expect("utf-8").to_owned();
    let kv = |rest: &[&str]| {
        let mut args = vec!["kv", "--cluster", f.as_str()];
        args.extend_from_slice(rest);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |rest: &[&str]| {
        let a = kv(rest);
        ok_stdout(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert_eq!(run(&["put", "greeting", "hello"]), "OK\n");
    assert_eq!(run(&["get", "greeting"]), "hello\n");
    assert_eq!(run(&["get", "greeting", "--read-only"]), "hello\n");
    assert_eq!(run(&["cas", "greeting", "hello", "bonjour"]), "swapped\n");
    let failed = rampart(
        &kv(&["cas", "greeting", "hello", "x"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("current value is \"bonjour\""));
    assert_eq!(run(&["cas", "--absent", "counter", "1"]), "swapped\n");
    assert_eq!(
        run(&["scan", "", "--limit", "10"]),
        "counter\t1\ngreeting\tbonjour\n"
    );
    p.kill9(2);
    assert_eq!(run(&["del", "counter"]), "deleted\n");
    assert_eq!(run(&["put", "after", "kill"]), "OK\n");
    let missing = rampart(
        &kv(&["get", "counter"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("key not found: counter"));
    p.start(2, &[]);
    // Replica 2 must serve again: without replica 1, replicas 0, 2 and 3 form the quorum.
    p.kill9(1);
    assert_eq!(run(&["get", "after"]), "kill\n");
}

/// `rampart kv up` runs a whole cluster in one process; the CLI uses it.
#[test]
fn kv_up_serves_the_cli() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("up");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["kv", "up", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kv up");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("stdout");
    let child = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("local cluster of 4 replicas up") {
                let _ = tx.send(());
            }
        }
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "kv up not ready"
    );
    let f = dir.join("cluster.toml");
    let f = f.to_str().expect("utf-8");
    assert_eq!(ok_stdout(&["kv", "--cluster", f, "put", "k", "v"]), "OK\n");
    assert_eq!(ok_stdout(&["kv", "--cluster", f, "get", "k"]), "v\n");
    drop(child);
}
