//! Measurement tool for the transport limits (issue 10, finding 6; ADR 0305). Not a test:
//! it runs a local cluster in its own process (so that its peak RSS, `VmHWM` in
//! `/proc/PID/status`, is the replicas' alone) and attacks it from another process.
//!
//! ```text
//! transport_probe serve DIR                  # 4 in-memory replicas; prints "ready"
//! transport_probe trickle DIR AS CONNS BYTES  # AS = client:ID or replica:ID; each conn
//!                                             #   declares a replica-sized frame, sends BYTES
//! transport_probe flood DIR CLIENT N          # N read-only scans returning 240 KiB to
//!                                             #   every replica, replies never read
//! transport_probe bench SECS                  # two `rampart bench bft` workloads
//! ```
#![allow(clippy::disallowed_methods)] // A measurement tool: it reads the clock.

use std::path::PathBuf;
use std::time::Duration;

use rampart_bft::{ClientId, Ed25519Authenticator, Message, ReplicaId, Request, RequestSeq};
use rampart_cluster::bench::{Workload, run_bft};
use rampart_cluster::client::{ClientOptions, KvClient};
use rampart_cluster::config::{CLUSTER_FILE, Cluster};
use rampart_cluster::frame::put_frame;
use rampart_cluster::local::{LocalCluster, LocalOptions};
use rampart_kv::{KvOp, KvRequest};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

async fn tls(
    c: &Cluster,
    j: usize,
    key: &ed25519_dalek::SigningKey,
) -> Res<tokio_rustls::client::TlsStream<TcpStream>> {
    let cfg = rampart_cluster::tls::client_config(key, &c.replica_keys[j])?;
    let tcp = TcpStream::connect(c.replicas[j].addr).await?;
    Ok(tokio_rustls::TlsConnector::from(cfg)
        .connect(rampart_cluster::tls::server_name(), tcp)
        .await?)
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "serve" => {
            let dir = PathBuf::from(arg(1));
            let opts = LocalOptions {
                durable: false,
                ..LocalOptions::default()
            };
            let _local = LocalCluster::start(&dir, &opts).await?;
            println!("ready {}", vm_hwm());
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        "trickle" => {
            let c = Cluster::load(&PathBuf::from(arg(1)).join(CLUSTER_FILE))?;
            let (kind, id) = arg(2)
                .split_once(':')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or("AS")?;
            let key = if kind == "replica" {
                c.replica_key(ReplicaId(id.parse()?))?
            } else {
                c.client_key(ClientId(id.parse()?))?
            };
            let conns: usize = arg(3).parse()?;
            let bytes: usize = arg(4).parse()?;
            let declared =
                rampart_bft::WireLimits::from_config(&c.bft_config()).message_bytes_max();
            let mut open = Vec::new();
            let mut refused = 0;
            for _ in 0..conns {
                let mut s = tls(&c, 0, &key).await?;
                let mut ok = s
                    .write_all(&u32::try_from(declared)?.to_le_bytes())
                    .await
                    .is_ok();
                for _ in 0..bytes / 4096 {
                    ok = ok && s.write_all(&[0x5a; 4096]).await.is_ok();
                }
                ok = ok && s.flush().await.is_ok();
                if ok {
                    open.push(s);
                } else {
                    refused += 1;
                }
            }
            println!(
                "trickle: {conns} connections as {kind} {id}, each declaring {declared} bytes and \
                 sending {bytes}; {refused} failed while writing"
            );
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(open);
        }
        "flood" => {
            let c = Cluster::load(&PathBuf::from(arg(1)).join(CLUSTER_FILE))?;
            let id = ClientId(arg(2).parse()?);
            let n: u64 = arg(3).parse()?;
            // An honest client writes the value the flood asks for (client 0).
            let k0 = c.client_key(ClientId(0))?;
            let honest = KvClient::connect(&c, ClientId(0), k0, ClientOptions::default())?;
            let puts = (0..4u8)
                .map(|i| KvOp::Put {
                    key: vec![b'b', i],
                    value: vec![0x42; 60 << 10],
                })
                .collect();
            honest.execute(puts, false).await?;
            let key = c.client_key(id)?;
            let auth = Ed25519Authenticator::new(
                key.clone(),
                c.replica_keys.clone(),
                c.client_keys.clone(),
            );
            let op = KvRequest {
                ops: vec![KvOp::Scan {
                    prefix: b"b".to_vec(),
                    limit: 4,
                }],
            }
            .encode();
            let mut wire = Vec::new();
            for seq in 1..=n {
                let r = Request::new_signed(&auth, id, RequestSeq(seq), true, op.clone());
                put_frame(&mut wire, &Message::Request(r).encode());
            }
            let mut open = Vec::new();
            for j in 0..c.n() {
                let mut s = tls(&c, j, &key).await?;
                let wire = wire.clone();
                open.push(tokio::spawn(async move {
                    let _ = s.write_all(&wire).await;
                    let _ = s.flush().await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    drop(s);
                }));
            }
            // Meanwhile an honest client keeps working; report how long 20 puts take.
            let t = std::time::Instant::now();
            for i in 0..20u32 {
                honest.put(format!("h{i}").as_bytes(), b"v").await?;
            }
            println!(
                "flood: {n} read-only 240 KiB scans to {} replicas, replies unread; \
                 20 honest puts in {:.2} s",
                c.n(),
                t.elapsed().as_secs_f64()
            );
            tokio::time::sleep(Duration::from_secs(3)).await;
            for o in open {
                o.abort();
            }
        }
        "bench" => {
            let secs: u64 = arg(1).parse().unwrap_or(5);
            let base = Workload {
                value_bytes: 1024,
                echo: false,
                clients: 200,
                sessions: 1,
                ops_per_request: 1024,
                durable: false,
                duration: Duration::from_secs(secs),
                leader_change: false,
                request_timeout: Duration::from_secs(2),
            };
            let runs = [
                ("put 1 KiB, in memory, batched", base.clone()),
                (
                    "put 0 B, in memory, 1 op/request, 200 sessions",
                    Workload {
                        value_bytes: 0,
                        sessions: 200,
                        ops_per_request: 1,
                        ..base.clone()
                    },
                ),
            ];
            for (name, w) in runs {
                let dir = tempfile::tempdir()?;
                let r = run_bft(dir.path(), &w).await?;
                println!(
                    "{name:<48} {:>9.0} ops/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                    r.ops_per_sec,
                    r.p50.as_secs_f64() * 1e3,
                    r.p99.as_secs_f64() * 1e3
                );
            }
        }
        _ => return Err("usage: transport_probe serve|trickle|flood|bench ...".into()),
    }
    Ok(())
}
