//! Measurement tool for the transport limits (issue 10, finding 6; ADR 0305). Not a test:
//! it runs a local cluster in its own process (so that its peak RSS, `VmHWM` in
//! `/proc/PID/status`, is the replicas' alone) and attacks it from another process.
//!
//! ```text
//! transport_probe serve DIR CLIENTS INTERVAL # n = 4 in memory, CLIENTS client keys,
//!                                            #   checkpoint every INTERVAL; replica 3 is
//!                                            #   down (its key is the attacker's); prints
//!                                            #   "ready PID", then replica 0's counters
//!                                            #   every 2 s
//! transport_probe attack DIR PID KIND SECS   # an honest client runs SECS s alone, then
//!                                            #   SECS s during attack KIND; prints its
//!                                            #   throughput in both and PID's VmHWM
//! ```
//!
//! Attacks (clients 1.. are the attacker's keys, as is replica 3's):
//! - `none`: no attack (the honest client twice);
//! - `conns`: every client key opens a TLS connection to every live replica and stays
//!   silent, then 300 plain TCP connections per replica reopen whenever closed;
//! - `oversize`: 8 loops connect and declare a frame above the limit (clients: the
//!   client limit + 1 and `u32::MAX`; replica 3: the replica limit + 1);
//! - `slowloris`: every client key declares a maximal request to replica 0 and sends all
//!   but 8 KiB of it, reconnecting when closed; replica 3 declares a maximal replica frame
//!   and sends 30 MiB of it to replicas 0–2;
//! - `costly`: replica 3 floods replicas 0–2 with tiny signed FETCH, STATEREQUEST and
//!   CHUNKREQUEST messages (the costly replies go to replica 3, which is down);
//! - `scan`: clients 1–8 flood every replica with read-only scans returning 240 KiB and
//!   never read the replies.
#![allow(clippy::disallowed_methods)] // A measurement tool: it reads the clock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rampart_bft::message::{ReplicaBody, SignedMessage};
use rampart_bft::{
    ClientId, Ed25519Authenticator, Message, ReplicaId, Request, RequestSeq, SeqNo, WireLimits,
};
use rampart_cluster::client::{ClientOptions, KvClient};
use rampart_cluster::config::{CLUSTER_FILE, Cluster, ProtocolSettings};
use rampart_cluster::frame::put_frame;
use rampart_cluster::local::{LocalCluster, LocalOptions};
use rampart_kv::{KvOp, KvRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls(c: &Cluster, j: usize, key: &ed25519_dalek::SigningKey) -> Res<Tls> {
    let cfg = rampart_cluster::tls::client_config(key, &c.replica_keys[j])?;
    let tcp = TcpStream::connect(c.replicas[j].addr).await?;
    Ok(tokio_rustls::TlsConnector::from(cfg)
        .connect(rampart_cluster::tls::server_name(), tcp)
        .await?)
}

/// `VmHWM` and `VmRSS` of `pid` in KiB.
fn mem_kib(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Wait until the peer closes `s` (end of stream or error).
async fn until_closed(s: &mut Tls) {
    let mut buf = vec![0u8; 16 << 10];
    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Puts by one closed-loop honest client for `secs` seconds: (completed, failed).
async fn honest_for(honest: &KvClient, tag: &str, secs: u64) -> (u64, u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut ok, mut failed, mut i) = (0, 0, 0u64);
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        let key = format!("{tag}{i}");
        i += 1;
        match tokio::time::timeout(left, honest.put(key.as_bytes(), b"v")).await {
            Ok(Ok(())) => ok += 1,
            Ok(Err(_)) => failed += 1,
            Err(_) => break,
        }
    }
    (ok, failed)
}

#[derive(Default)]
struct Counters {
    conns: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    fn line(&self) -> String {
        format!(
            "attacker: {} connections opened, {} connects/writes failed, {} MiB written",
            self.conns.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed) >> 20
        )
    }
}

/// Keep writing `wire` to replica `j` as `key`, reconnecting, until aborted.
async fn flood_loop(
    c: Arc<Cluster>,
    j: usize,
    key: ed25519_dalek::SigningKey,
    wire: Arc<Vec<u8>>,
    k: Arc<Counters>,
) {
    loop {
        match tls(&c, j, &key).await {
            Ok(mut s) => {
                k.conns.fetch_add(1, Ordering::Relaxed);
                while s.write_all(&wire).await.is_ok() {
                    k.bytes.fetch_add(wire.len() as u64, Ordering::Relaxed);
                }
            }
            Err(_) => {
                k.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Start attack `kind`; its tasks run until the set is dropped.
async fn start_attack(
    c: &Arc<Cluster>,
    kind: &str,
    k: &Arc<Counters>,
) -> Res<tokio::task::JoinSet<()>> {
    let mut set = tokio::task::JoinSet::new();
    let wire_limits = WireLimits::from_config(&c.bft_config());
    let client_ids = 1..u64::try_from(c.client_keys.len())?;
    let live = 0..3usize;
    let key3 = c.replica_key(ReplicaId(3))?;
    match kind {
        "none" => {}
        "conns" => {
            let mut held = Vec::new();
            for id in client_ids {
                let key = c.client_key(ClientId(id))?;
                for j in live.clone() {
                    match tls(c, j, &key).await {
                        Ok(s) => {
                            k.conns.fetch_add(1, Ordering::Relaxed);
                            held.push(s);
                        }
                        Err(_) => {
                            k.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            set.spawn(async move {
                std::future::pending::<()>().await;
                drop(held);
            });
            for j in live {
                for _ in 0..300 {
                    let (c, k) = (c.clone(), k.clone());
                    set.spawn(async move {
                        loop {
                            match TcpStream::connect(c.replicas[j].addr).await {
                                Ok(mut s) => {
                                    k.conns.fetch_add(1, Ordering::Relaxed);
                                    let mut b = [0u8; 64];
                                    while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
                                }
                                Err(_) => {
                                    k.failed.fetch_add(1, Ordering::Relaxed);
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                            }
                        }
                    });
                }
            }
        }
        "oversize" => {
            let client_len = u32::try_from(wire_limits.request_message_bytes_max() + 1)?;
            let replica_len = u32::try_from(wire_limits.message_bytes_max() + 1)?;
            for t in 0..8u64 {
                let (c, k, key3) = (c.clone(), k.clone(), key3.clone());
                let ids = client_ids.clone();
                set.spawn(async move {
                    for round in 0u64.. {
                        let j = usize::try_from((t + round) % 3).unwrap_or(0);
                        let (key, len) = match round % 3 {
                            0 => (key3.clone(), replica_len),
                            1 => (
                                c.client_key(ClientId(ids.start + (t + round) % 8))
                                    .expect("key"),
                                client_len,
                            ),
                            _ => (
                                c.client_key(ClientId(ids.start + (t + round) % 8))
                                    .expect("key"),
                                u32::MAX,
                            ),
                        };
                        match tls(&c, j, &key).await {
                            Ok(mut s) => {
                                k.conns.fetch_add(1, Ordering::Relaxed);
                                let _ = s.write_all(&len.to_le_bytes()).await;
                                let _ = s.flush().await;
                                until_closed(&mut s).await;
                            }
                            Err(_) => {
                                k.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        }
        "slowloris" => {
            let max = wire_limits.request_message_bytes_max();
            let body = Arc::new(vec![0x5au8; max - (8 << 10)]);
            for id in client_ids {
                let (c, k, body) = (c.clone(), k.clone(), body.clone());
                let key = c.client_key(ClientId(id))?;
                set.spawn(async move {
                    loop {
                        match tls(&c, 0, &key).await {
                            Ok(mut s) => {
                                k.conns.fetch_add(1, Ordering::Relaxed);
                                let len = u32::try_from(max).unwrap_or(0).to_le_bytes();
                                if s.write_all(&len).await.is_ok()
                                    && s.write_all(&body).await.is_ok()
                                    && s.flush().await.is_ok()
                                {
                                    k.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                                }
                                until_closed(&mut s).await;
                            }
                            Err(_) => {
                                k.failed.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
            }
            let declared = wire_limits.message_bytes_max();
            for j in live {
                let (c, k, key3) = (c.clone(), k.clone(), key3.clone());
                set.spawn(async move {
                    let chunk = vec![0x5au8; 1 << 20];
                    loop {
                        match tls(&c, j, &key3).await {
                            Ok(mut s) => {
                                k.conns.fetch_add(1, Ordering::Relaxed);
                                let len = u32::try_from(declared).unwrap_or(0).to_le_bytes();
                                let mut ok = s.write_all(&len).await.is_ok();
                                for _ in 0..30 {
                                    ok = ok && s.write_all(&chunk).await.is_ok();
                                }
                                if ok && s.flush().await.is_ok() {
                                    k.bytes.fetch_add(30 << 20, Ordering::Relaxed);
                                }
                                until_closed(&mut s).await;
                            }
                            Err(_) => {
                                k.failed.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
            }
        }
        "costly" => {
            let auth = Ed25519Authenticator::new(
                key3.clone(),
                c.replica_keys.clone(),
                c.client_keys.clone(),
            );
            let interval = c.bft_config().checkpoint_interval;
            let mut wire = Vec::new();
            for i in 0..2000u64 {
                let body = match i % 3 {
                    0 => ReplicaBody::Fetch {
                        from_cid: SeqNo(1 + i % 64),
                    },
                    1 => ReplicaBody::StateRequest,
                    _ => ReplicaBody::ChunkRequest {
                        cid: SeqNo(interval * (1 + (i / 3) % 16)),
                        index: u32::try_from(i % 4)?,
                    },
                };
                let m = SignedMessage::new(&auth, ReplicaId(3), body);
                put_frame(&mut wire, &Message::Replica(m).encode());
            }
            let wire = Arc::new(wire);
            for j in live {
                set.spawn(flood_loop(
                    c.clone(),
                    j,
                    key3.clone(),
                    wire.clone(),
                    k.clone(),
                ));
            }
        }
        "scan" => {
            let op = KvRequest {
                ops: vec![KvOp::Scan {
                    prefix: b"b".to_vec(),
                    limit: 4,
                }],
            }
            .encode();
            for id in client_ids.take(8) {
                let key = c.client_key(ClientId(id))?;
                let auth = Ed25519Authenticator::new(
                    key.clone(),
                    c.replica_keys.clone(),
                    c.client_keys.clone(),
                );
                let mut wire = Vec::new();
                for seq in 1..=2000u64 {
                    let r =
                        Request::new_signed(&auth, ClientId(id), RequestSeq(seq), true, op.clone());
                    put_frame(&mut wire, &Message::Request(r).encode());
                }
                let wire = Arc::new(wire);
                for j in live.clone() {
                    set.spawn(flood_loop(
                        c.clone(),
                        j,
                        key.clone(),
                        wire.clone(),
                        k.clone(),
                    ));
                }
            }
        }
        _ => return Err(format!("unknown attack {kind}").into()),
    }
    Ok(set)
}

async fn serve(dir: &Path, clients: u64, interval: u64) -> Res<()> {
    let opts = LocalOptions {
        durable: false,
        clients,
        protocol: ProtocolSettings {
            checkpoint_interval: interval,
            ..ProtocolSettings::default()
        },
        ..LocalOptions::default()
    };
    let mut local = LocalCluster::start(dir, &opts).await?;
    local.crash(ReplicaId(3));
    let s0 = local.transport_stats(ReplicaId(0)).ok_or("stats")?;
    println!("ready {}", std::process::id());
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let f = &s0.frames;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        println!(
            "r0: clients {} refused {} hs-refused {} hs-timeout {} too-large {} slow {} \
             client-frames-dropped {} discarded {} MiB partial {} MiB client-in-total-hwm {} MiB \
             out-dropped {}",
            s0.client_connections.load(Ordering::Relaxed),
            l(&s0.connections_refused),
            l(&s0.handshakes_refused),
            l(&s0.handshakes_timed_out),
            l(&f.too_large),
            l(&f.slow),
            l(&s0.client_frames_dropped),
            l(&f.discarded_bytes) >> 20,
            f.partial_bytes.load(Ordering::Relaxed) >> 20,
            s0.client_inbound_total_hwm.load(Ordering::Relaxed) >> 20,
            l(&s0.outbound_frames_dropped),
        );
    }
}

async fn attack(dir: &Path, pid: &str, kind: &str, secs: u64) -> Res<()> {
    let c = Arc::new(Cluster::load(&dir.join(CLUSTER_FILE))?);
    let k0 = c.client_key(ClientId(0))?;
    let honest = KvClient::connect(&c, ClientId(0), k0, ClientOptions::default())?;
    // The values the scan flood asks for, and a warm-up.
    let puts = (0..4u8)
        .map(|i| KvOp::Put {
            key: vec![b'b', i],
            value: vec![0x42; 60 << 10],
        })
        .collect();
    honest.execute(puts, false).await?;
    honest_for(&honest, "w", 1).await;
    let (hwm0, _) = mem_kib(pid);
    let before = honest_for(&honest, "a", secs).await;
    let (hwm1, rss1) = mem_kib(pid);
    let k = Arc::new(Counters::default());
    let t = Instant::now();
    let set = start_attack(&c, kind, &k).await?;
    let setup = t.elapsed().as_secs_f64();
    let during = honest_for(&honest, "b", secs).await;
    let (hwm2, rss2) = mem_kib(pid);
    println!(
        "attack {kind}: honest puts/s alone {:.1} ({} ok, {} failed), during {:.1} ({} ok, {} \
         failed); attack setup {setup:.1} s",
        before.0 as f64 / secs as f64,
        before.0,
        before.1,
        during.0 as f64 / secs as f64,
        during.0,
        during.1
    );
    println!(
        "replica process VmHWM: after warm-up {} MiB, after the honest phase {} MiB (RSS {}), \
         after the attack phase {} MiB (RSS {})",
        hwm0 >> 10,
        hwm1 >> 10,
        rss1 >> 10,
        hwm2 >> 10,
        rss2 >> 10
    );
    println!("{}", k.line());
    drop(set);
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "serve" => {
            serve(
                &PathBuf::from(arg(1)),
                arg(2).parse().unwrap_or(1100),
                arg(3).parse().unwrap_or(64),
            )
            .await
        }
        "attack" => {
            attack(
                &PathBuf::from(arg(1)),
                &arg(2),
                &arg(3),
                arg(4).parse().unwrap_or(10),
            )
            .await
        }
        _ => Err(
            "usage: transport_probe serve DIR CLIENTS INTERVAL | attack DIR PID KIND SECS".into(),
        ),
    }
}
