//! `rampart cluster init`, `rampart replica`, `rampart kv ...`: the replicated KV service.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use rampart_bft::{ClientId, ReplicaId};
use rampart_cluster::client::{ClientOptions, KvClient};
use rampart_cluster::config::{Cluster, InitOptions, ProtocolSettings, TransportSettings, init};
use rampart_cluster::local::{LocalCluster, LocalOptions};
use rampart_cluster::replica::{DangerByzantine, ReplicaOptions, run_replica};
use rampart_kv::{KvOp, KvResult, SCAN_LIMIT_MAX};

/// `rampart cluster ...`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Create a cluster: DIR/cluster.toml plus a private key file (mode 0600) per replica
    /// and per client identity.
    Init(InitArgs),
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Number of replicas n (tolerates f = ⌊(n−1)/3⌋ Byzantine ones).
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Directory for the cluster file and keys.
    #[arg(long)]
    dir: PathBuf,
    /// Client identities to create (one per concurrently running client process).
    #[arg(long, default_value_t = 4)]
    clients: u64,
    /// Replica i listens on 127.0.0.1:(base-port + i).
    #[arg(long, default_value_t = 7100)]
    base_port: u16,
    /// Explicit replica addresses, comma-separated, one per replica in id order
    /// (instead of --base-port).
    #[arg(long, value_delimiter = ',')]
    addrs: Vec<std::net::SocketAddr>,
    /// Decisions between checkpoints.
    #[arg(long, default_value_t = 1024)]
    checkpoint_interval: u64,
    /// Request timeout before a leader change, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    request_timeout_ms: u64,
    /// Concurrent client connections each replica serves (the `[transport]` section of the
    /// cluster file holds this and the other transport limits).
    #[arg(long, default_value_t = TransportSettings::default().client_connections_max)]
    client_connections_max: usize,
}

/// `rampart replica`: serve one replica of a cluster.
#[derive(Debug, Args)]
pub struct ReplicaArgs {
    /// The cluster file (written by `rampart cluster init`).
    #[arg(long)]
    cluster: PathBuf,
    /// This replica's id (0..n).
    #[arg(long)]
    id: u8,
    /// Data directory for the durable log and checkpoints [default: beside the cluster
    /// file, replica-ID].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Keep state in memory only (benchmarks; a restarted replica forgets its votes).
    #[arg(long)]
    memory: bool,
    /// TEST TOOL ONLY: make this replica Byzantine on purpose.
    #[arg(long, hide = true, value_enum)]
    danger_byzantine: Option<ByzantineArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ByzantineArg {
    Silent,
    WrongReplies,
    Equivocate,
}

/// `rampart kv ...`: use the replicated key-value service.
#[derive(Debug, Args)]
pub struct KvArgs {
    /// The cluster file.
    #[arg(long, global = true, env = "RAMPART_CLUSTER")]
    cluster: Option<PathBuf>,
    /// Client identity to use (each concurrently running client process needs its own).
    #[arg(long, global = true, default_value_t = 0)]
    client: u64,
    /// Seconds to wait for a result before reporting the cluster unreachable.
    #[arg(long, global = true, default_value_t = 10)]
    timeout_secs: u64,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// Write a value.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Read a value (exit status 1 if absent).
    Get {
        /// Key.
        key: String,
        /// Use the unordered read-only path (n−f matching replies; falls back to ordering).
        #[arg(long)]
        read_only: bool,
    },
    /// Delete a key.
    Del {
        /// Key.
        key: String,
    },
    /// Compare-and-swap: `cas KEY OLD NEW` sets NEW if the current value is OLD;
    /// `cas --absent KEY NEW` sets NEW if the key is absent (exit status 1 if not swapped).
    Cas {
        /// Key.
        key: String,
        /// Expected current value (with --absent: the new value).
        old: String,
        /// New value.
        new: Option<String>,
        /// Expect the key to be absent.
        #[arg(long)]
        absent: bool,
    },
    /// List keys starting with PREFIX, in order.
    Scan {
        /// Key prefix.
        prefix: String,
        /// Entries at most.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Run a whole 4-replica cluster in this process (created in DIR if new).
    Up {
        /// Cluster directory.
        #[arg(long)]
        dir: PathBuf,
        /// Keep state in memory only.
        #[arg(long)]
        memory: bool,
    },
}

/// `rampart cluster ...`.
pub fn run_cluster(args: ClusterArgs) -> Result<()> {
    match args.command {
        ClusterCommand::Init(a) => {
            let path = init(
                &a.dir,
                &InitOptions {
                    replicas: a.replicas,
                    clients: a.clients,
                    addrs: (!a.addrs.is_empty()).then_some(a.addrs),
                    base_port: a.base_port,
                    protocol: ProtocolSettings {
                        checkpoint_interval: a.checkpoint_interval,
                        request_timeout_ms: a.request_timeout_ms,
                    },
                    transport: TransportSettings {
                        client_connections_max: a.client_connections_max,
                        ..TransportSettings::default()
                    },
                },
            )?;
            let c = Cluster::load(&path)?;
            println!("wrote {} (n = {}, f = {})", path.display(), c.n(), c.f());
            for r in &c.replicas {
                println!(
                    "  replica {} on {}: rampart replica --cluster {} --id {}",
                    r.id,
                    r.addr,
                    path.display(),
                    r.id
                );
            }
            println!(
                "  keys: {}/replica-*.key, client-*.key (mode 0600)",
                a.dir.display()
            );
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `rampart replica`.
pub fn run_replica_cmd(args: ReplicaArgs) -> Result<()> {
    let cluster = Cluster::load(&args.cluster)?;
    cluster.replica(args.id)?;
    let id = ReplicaId(args.id);
    let key = cluster.replica_key(id)?;
    let data_dir = if args.memory {
        None
    } else {
        Some(
            args.data
                .unwrap_or_else(|| cluster.dir.join(format!("replica-{}", args.id))),
        )
    };
    let danger_byzantine = args.danger_byzantine.map(|b| match b {
        ByzantineArg::Silent => DangerByzantine::Silent,
        ByzantineArg::WrongReplies => DangerByzantine::WrongReplies,
        ByzantineArg::Equivocate => DangerByzantine::Equivocate,
    });
    let rt = runtime()?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let addr = cluster.replicas[usize::from(args.id)].addr;
        let durable = data_dir.is_some();
        let task = tokio::spawn(run_replica(
            cluster,
            id,
            key,
            ReplicaOptions {
                data_dir,
                danger_byzantine,
                ..ReplicaOptions::default()
            },
            None,
            Some(tx),
        ));
        if rx.await.is_ok() {
            println!(
                "replica {} ready on {addr} ({})",
                args.id,
                if durable { "durable" } else { "in memory" }
            );
            let _ = std::io::stdout().flush();
        }
        task.await.context("replica task")??;
        Ok(())
    })
}

/// `rampart kv ...`.
pub fn run_kv(args: KvArgs) -> Result<()> {
    if let KvCommand::Up { dir, memory } = &args.command {
        return up(dir, *memory);
    }
    let Some(path) = args.cluster.clone() else {
        bail!("no cluster file: pass --cluster DIR/cluster.toml (or set RAMPART_CLUSTER)");
    };
    let cluster = Cluster::load(&path)?;
    let id = ClientId(args.client);
    let key = cluster.client_key(id)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let opts = ClientOptions {
            deadline: Duration::from_secs(args.timeout_secs.max(1)),
            ..ClientOptions::default()
        };
        let c = KvClient::connect(&cluster, id, key, opts)?;
        kv_command(&c, args.command).await
    })
}

async fn kv_command(c: &KvClient, cmd: KvCommand) -> Result<()> {
    let one = |r: Vec<KvResult>| -> Result<KvResult> {
        match r.into_iter().next() {
            Some(KvResult::Error(e)) => Err(e.into()),
            Some(r) => Ok(r),
            None => bail!("empty reply"),
        }
    };
    let mut out = std::io::stdout().lock();
    match cmd {
        KvCommand::Put { key, value } => {
            c.put(key.as_bytes(), value.as_bytes()).await?;
            writeln!(out, "OK")?;
        }
        KvCommand::Get { key, read_only } => match c.get(key.as_bytes(), read_only).await? {
            Some(v) => {
                out.write_all(&v)?;
                writeln!(out)?;
            }
            None => bail!("key not found: {key}"),
        },
        KvCommand::Del { key } => {
            let r = one(c
                .execute(
                    vec![KvOp::Delete {
                        key: key.into_bytes(),
                    }],
                    false,
                )
                .await?)?;
            match r {
                KvResult::Deleted(true) => writeln!(out, "deleted")?,
                _ => writeln!(out, "not found")?,
            }
        }
        KvCommand::Cas {
            key,
            old,
            new,
            absent,
        } => {
            let (expected, new) = match (new, absent) {
                (None, true) => (None, old),
                (Some(new), false) => (Some(old.into_bytes()), new),
                (Some(_), true) => bail!("with --absent give only KEY NEW"),
                (None, false) => bail!("give KEY OLD NEW (or --absent KEY NEW)"),
            };
            let op = KvOp::Cas {
                key: key.into_bytes(),
                expected,
                new: new.into_bytes(),
            };
            match one(c.execute(vec![op], false).await?)? {
                KvResult::Cas { swapped: true, .. } => writeln!(out, "swapped")?,
                KvResult::Cas { current, .. } => match current {
                    Some(v) => bail!(
                        "compare failed: current value is {:?}",
                        String::from_utf8_lossy(&v)
                    ),
                    None => bail!("compare failed: the key is absent"),
                },
                _ => bail!("unexpected reply"),
            }
        }
        KvCommand::Scan { prefix, limit } => {
            if limit > SCAN_LIMIT_MAX {
                bail!("--limit {limit} exceeds {SCAN_LIMIT_MAX}");
            }
            let op = KvOp::Scan {
                prefix: prefix.into_bytes(),
                limit,
            };
            match one(c.execute(vec![op], false).await?)? {
                KvResult::Entries { entries, more } => {
                    for (k, v) in entries {
                        out.write_all(&k)?;
                        out.write_all(b"\t")?;
                        out.write_all(&v)?;
                        writeln!(out)?;
                    }
                    if more {
                        eprintln!("(more entries match; raise --limit)");
                    }
                }
                _ => bail!("unexpected reply"),
            }
        }
        KvCommand::Up { .. } => unreachable!("handled before connecting"),
    }
    Ok(())
}

fn up(dir: &Path, memory: bool) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async move {
        let opts = LocalOptions {
            durable: !memory,
            ..LocalOptions::default()
        };
        let mut local = LocalCluster::start(dir, &opts).await?;
        println!(
            "local cluster of {} replicas up ({}); use: rampart kv --cluster {} put KEY VALUE",
            local.cluster.n(),
            if memory { "in memory" } else { "durable" },
            local.path.display()
        );
        let _ = std::io::stdout().flush();
        tokio::select! {
            r = local.wait() => r.map_err(anyhow::Error::from),
            r = tokio::signal::ctrl_c() => { r.context("waiting for Ctrl-C")?; Ok(()) }
        }
    })
}

/// Options of `rampart bench bft`.
#[derive(Debug, Args)]
pub struct BftBenchArgs {
    /// Seconds measured per configuration (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Closed-loop clients for the 0-byte runs.
    #[arg(long, default_value_t = 200)]
    clients_small: usize,
    /// Closed-loop clients for the 1 KiB runs.
    #[arg(long, default_value_t = 100)]
    clients_large: usize,
    /// Client sessions (BFT client identities, one outstanding request each) the batched
    /// runs spread the clients over; 1 = one client process multiplexing all of them.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Request timeout of the cluster in milliseconds (the leader change is compared to it).
    #[arg(long, default_value_t = 2000)]
    request_timeout_ms: u64,
    /// Only the batched runs (skip the slower one-op-per-request runs).
    #[arg(long)]
    quick: bool,
}

/// `rampart bench bft`.
pub fn bench_bft(args: BftBenchArgs) -> Result<()> {
    use rampart_cluster::bench::{Workload, run_baseline, run_bft};
    let rt = runtime()?;
    let duration = Duration::from_secs(args.duration_secs.max(1));
    let timeout = Duration::from_millis(args.request_timeout_ms.max(1));
    let w = |value_bytes, clients, sessions, ops, durable, leader_change| Workload {
        value_bytes,
        echo: false,
        clients,
        sessions,
        ops_per_request: ops,
        durable,
        duration,
        leader_change,
        request_timeout: timeout,
    };
    let (cs, cl, s) = (args.clients_small, args.clients_large, args.sessions);
    let mut runs = vec![
        (
            "put 0 B, in memory, batched",
            w(0, cs, s, 1024, false, true),
            true,
        ),
        (
            "put 1 KiB, in memory, batched",
            w(1024, cl, s, 1024, false, false),
            true,
        ),
        (
            "put 1 KiB, durable, batched",
            w(1024, cl, s, 1024, true, false),
            false,
        ),
        (
            "1 KiB -> 1 KiB, in memory, batched",
            Workload {
                echo: true,
                ..w(1024, cl, s, 1024, false, false)
            },
            true,
        ),
        (
            "1 KiB -> 1 KiB, durable, batched",
            Workload {
                echo: true,
                ..w(1024, cl, s, 1024, true, false)
            },
            false,
        ),
    ];
    if !args.quick {
        runs.push((
            "put 0 B, in memory, 1 op/request",
            w(0, cs, cs, 1, false, false),
            false,
        ));
        runs.push((
            "put 1 KiB, durable, 1 op/request",
            w(1024, cl, cl, 1, true, false),
            false,
        ));
    }
    println!(
        "rampart bench bft: n = 4 replicas (f = 1) + clients in one process on this machine, TLS 1.3 over loopback, {} s per run",
        duration.as_secs()
    );
    println!(
        "baseline: the same closed-loop load and batching against one unreplicated KV server over the same TLS transport"
    );
    println!(
        "{:<34} {:>8} {:>9} {:>11} {:>9} {:>9} {:>12} {:>7}",
        "workload", "clients", "sessions", "ops/s", "p50 ms", "p99 ms", "baseline/s", "ratio"
    );
    rt.block_on(async {
        for (name, w, baseline) in runs {
            let tmp = tempfile::tempdir().context("temp dir")?;
            let r = run_bft(tmp.path(), &w).await?;
            let b = if baseline {
                let tmp = tempfile::tempdir().context("temp dir")?;
                Some(run_baseline(tmp.path(), &w).await?)
            } else {
                None
            };
            println!(
                "{:<34} {:>8} {:>9} {:>11.0} {:>9.2} {:>9.2} {:>12} {:>7}",
                name,
                w.clients,
                w.sessions,
                r.ops_per_sec,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                b.as_ref().map_or("-".into(), |b| format!("{:.0}", b.ops_per_sec)),
                b.as_ref().map_or("-".into(), |b| format!("{:.3}", r.ops_per_sec / b.ops_per_sec)),
            );
            println!("{:<34} ({:.0} BFT requests/s, {:.1} ops per request, {:.0} value bytes per reply)", "", r.requests_per_sec, r.ops_per_sec / r.requests_per_sec.max(1e-9), r.reply_value_bytes);
            if let Some(lc) = r.leader_change {
                println!(
                    "{:<34} leader crash -> first op after it completed: {:.0} ms (request timeout {} ms; {:.2}x)",
                    "",
                    lc.as_secs_f64() * 1e3,
                    timeout.as_millis(),
                    lc.as_secs_f64() / timeout.as_secs_f64()
                );
            }
        }
        Ok(())
    })
}
