//! `rampart bench bft`: closed-loop load against a local 4-replica cluster over real TLS
//! sockets, and the same load against one unreplicated server over the same transport
//! (the baseline printed beside it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rampart_bft::{ClientId, ReplicaId};
use rampart_kv::{
    KvApp, KvOp, KvReply, KvRequest, KvResult, OPS_PER_REQUEST_MAX, REQUEST_BYTES_MAX,
};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::ClusterError;
use crate::client::{ClientOptions, KvClient};
use crate::config::ProtocolSettings;
use crate::frame::read_frame;
use crate::local::{LocalCluster, LocalOptions};
use crate::queue::{Budget, queue};
use crate::replica::{connect_tls, write_frames};
use crate::tls::{Directory, client_config, server_config};

/// One benchmark configuration.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Value bytes of each put (0 or 1024 in the standard runs).
    pub value_bytes: usize,
    /// Make every reply carry a value too: each operation is a compare-and-swap "only if
    /// absent" of a `value_bytes` value on a key that already holds one, so it changes
    /// nothing and its reply returns the current value (request and reply payloads both
    /// `value_bytes`: the "1024/1024" microbenchmark). Otherwise plain puts.
    pub echo: bool,
    /// Closed-loop logical clients.
    pub clients: usize,
    /// BFT client identities (sessions) they are spread over. `clients` with
    /// `ops_per_request = 1` is the unbatched, one-op-per-request configuration.
    pub sessions: usize,
    /// Operations per BFT request at most.
    pub ops_per_request: usize,
    /// Durable log (fsync per instance) or in memory.
    pub durable: bool,
    /// Measured duration (after a one-second warm-up).
    pub duration: Duration,
    /// Also measure a leader change (crash the leader after the measurement).
    pub leader_change: bool,
    /// Request timeout of the cluster.
    pub request_timeout: Duration,
}

/// Results of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Operations per second.
    pub ops_per_sec: f64,
    /// BFT requests per second.
    pub requests_per_sec: f64,
    /// Median latency of one operation.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Time from crashing the leader until an operation invoked after the crash completed.
    pub leader_change: Option<Duration>,
    /// Mean value bytes in each measured operation's result (as received and decoded).
    pub reply_value_bytes: f64,
}

/// An operation and where to send the value bytes of its result.
type Op = (KvOp, oneshot::Sender<usize>);

/// Keys each closed-loop client cycles through.
const KEYS_PER_CLIENT: u64 = 64;

/// Value bytes carried by one result.
fn value_bytes(r: &KvResult) -> usize {
    match r {
        KvResult::Value(v) | KvResult::Cas { current: v, .. } => v.as_ref().map_or(0, Vec::len),
        KvResult::Entries { entries, .. } => entries.iter().map(|(_, v)| v.len()).sum(),
        _ => 0,
    }
}

/// Closed-loop load of `w` through `submit` (which yields the value bytes of the result,
/// or `None` on failure); returns ops/s, per-op latencies, requests/s and the mean value
/// bytes per measured result.
async fn drive<F, Fut>(
    w: &Workload,
    submit: F,
    requests: impl Fn() -> u64,
) -> (f64, Vec<Duration>, f64, f64)
where
    F: Fn(usize, KvOp) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Option<usize>> + Send,
{
    let (clients, value_bytes, echo, duration) = (w.clients, w.value_bytes, w.echo, w.duration);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    // With `echo`, every client first fills its keys, before the warm-up starts.
    let filled = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (stop, measuring, submit) = (stop.clone(), measuring.clone(), submit.clone());
        let filled = filled.clone();
        set.spawn(async move {
            let value = vec![0x5a; value_bytes];
            let key = |n: u64| format!("c{c}/{}", n % KEYS_PER_CLIENT).into_bytes();
            if echo {
                for n in 0..KEYS_PER_CLIENT {
                    let put = KvOp::Put {
                        key: key(n),
                        value: value.clone(),
                    };
                    // A failed fill only makes that key's replies shorter, which the
                    // reported value bytes per reply would show.
                    let _ = submit(c, put).await;
                }
            }
            filled.wait().await;
            let mut lat = Vec::new();
            let mut got = 0usize;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let op = if echo {
                    KvOp::Cas {
                        key: key(n),
                        expected: None,
                        new: value.clone(),
                    }
                } else {
                    KvOp::Put {
                        key: key(n),
                        value: value.clone(),
                    }
                };
                let t = Instant::now();
                let result = submit(c, op).await;
                if let Some(bytes) = result
                    && measuring.load(Ordering::Relaxed)
                {
                    lat.push(t.elapsed());
                    got += bytes;
                }
            }
            (lat, got)
        });
    }
    filled.wait().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let requests_before = requests();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let requests_per_sec = (requests() - requests_before) as f64 / elapsed.as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut reply_bytes = 0usize;
    while let Some(r) = set.join_next().await {
        let (lat, got) = r.unwrap_or_default();
        all.extend(lat);
        reply_bytes += got;
    }
    let reply_value_bytes = reply_bytes as f64 / all.len().max(1) as f64;
    (
        all.len() as f64 / elapsed.as_secs_f64(),
        all,
        requests_per_sec,
        reply_value_bytes,
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Run `w` against a fresh local cluster in `dir`.
pub async fn run_bft(dir: &std::path::Path, w: &Workload) -> Result<Report, ClusterError> {
    let opts = LocalOptions {
        replicas: 4,
        clients: w.sessions.max(1) as u64,
        durable: w.durable,
        protocol: ProtocolSettings {
            checkpoint_interval: 1024,
            request_timeout_ms: u64::try_from(w.request_timeout.as_millis()).unwrap_or(2000),
        },
        ..LocalOptions::default()
    };
    let mut local = LocalCluster::start(dir, &opts).await?;
    let mut sessions = Vec::new();
    for s in 0..w.sessions.max(1) {
        let id = ClientId(s as u64);
        let key = local.cluster.client_key(id)?;
        let copts = ClientOptions {
            ops_per_request_max: w.ops_per_request.clamp(1, OPS_PER_REQUEST_MAX),
            deadline: Duration::from_secs(30),
            ..ClientOptions::default()
        };
        sessions.push(KvClient::connect(&local.cluster, id, key, copts)?);
    }
    // Wait until every session reaches the cluster.
    for s in &sessions {
        s.execute(vec![KvOp::Get { key: vec![] }], false).await?;
    }
    let sessions = Arc::new(sessions);
    let s2 = sessions.clone();
    let submit = move |c: usize, op: KvOp| {
        let s = s2[c % s2.len()].clone();
        async move {
            let results = s.execute(vec![op], false).await.ok()?;
            Some(results.iter().map(value_bytes).sum())
        }
    };
    let s3 = sessions.clone();
    let requests = move || {
        s3.iter()
            .map(|s| s.stats().requests.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let (ops_per_sec, mut lat, requests_per_sec, reply_value_bytes) =
        drive(w, submit, requests).await;
    lat.sort_unstable();
    let mut report = Report {
        ops_per_sec,
        requests_per_sec,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        leader_change: None,
        reply_value_bytes,
    };
    if w.leader_change {
        // Keep load running, crash the leader (replica 0 in regency 0), and time until an
        // operation submitted after the crash completes.
        let stop = Arc::new(AtomicBool::new(false));
        let mut set = tokio::task::JoinSet::new();
        for c in 0..w.clients {
            let (s, stop) = (sessions[c % sessions.len()].clone(), stop.clone());
            set.spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let op = KvOp::Put {
                        key: format!("lc{c}/{}", n % 16).into_bytes(),
                        value: vec![],
                    };
                    let _ = s.execute(vec![op], false).await;
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let crash = Instant::now();
        local.crash(ReplicaId(0));
        let probe = sessions[0]
            .execute(
                vec![KvOp::Put {
                    key: b"probe".to_vec(),
                    value: vec![],
                }],
                false,
            )
            .await;
        if probe.is_ok() {
            report.leader_change = Some(crash.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        while set.join_next().await.is_some() {}
    }
    Ok(report)
}

/// The same closed-loop load against one unreplicated KV server over the same TLS and
/// framing, with the same client-side batching (no consensus, no signatures, no fsync).
pub async fn run_baseline(dir: &std::path::Path, w: &Workload) -> Result<Report, ClusterError> {
    let opts = LocalOptions {
        replicas: 4,
        clients: w.sessions.max(1) as u64,
        durable: false,
        ..LocalOptions::default()
    };
    // Reuse a cluster file only for its keys: replica 0's key serves, client keys connect.
    crate::config::init(
        dir,
        &crate::config::InitOptions {
            replicas: 4,
            clients: opts.clients,
            addrs: Some(vec![([127, 0, 0, 1], 1).into(); 4]),
            base_port: 0,
            protocol: ProtocolSettings::default(),
            transport: crate::config::TransportSettings::default(),
        },
    )?;
    let cluster = crate::config::Cluster::load(&dir.join(crate::config::CLUSTER_FILE))?;
    let server_key = cluster.replica_key(ReplicaId(0))?;
    let tls = TlsAcceptor::from(server_config(
        &server_key,
        Directory::new(&cluster.replica_keys, &cluster.client_keys),
    )?);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| ClusterError::io(dir, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ClusterError::io(dir, e))?;
    let app = Arc::new(std::sync::Mutex::new(KvApp::default()));
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let (tls, app) = (tls.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(conn) = tls.accept(tcp).await else {
                    return;
                };
                let (rd, wr) = tokio::io::split(conn);
                let (tx, mut rx) = queue(64, Budget::new(usize::MAX, None), None);
                tokio::spawn(async move { write_frames(wr, &mut rx, 256 << 10).await });
                let mut rd = BufReader::new(rd);
                let mut buf = Vec::new();
                while let Ok(true) = read_frame(&mut rd, REQUEST_BYTES_MAX, &mut buf).await {
                    let reply = app.lock().map(|mut a| a.execute(&buf)).unwrap_or_default();
                    if !tx.send(Bytes::from(reply)).await {
                        return;
                    }
                }
            });
        }
    });
    let mut sessions = Vec::new();
    for s in 0..w.sessions.max(1) {
        let id = ClientId(s as u64);
        let key = cluster.client_key(id)?;
        let cfg = client_config(&key, &cluster.replica_keys[0])?;
        let conn = connect_tls(addr, &TlsConnector::from(cfg))
            .await
            .map_err(|e| ClusterError::io(dir, e))?;
        let (jobs_tx, jobs_rx) = mpsc::channel::<Op>(1024);
        tokio::spawn(plain_session(
            conn,
            jobs_rx,
            w.ops_per_request.clamp(1, OPS_PER_REQUEST_MAX),
        ));
        sessions.push(jobs_tx);
    }
    let sessions = Arc::new(sessions);
    let submit = move |c: usize, op: KvOp| {
        let s = sessions[c % sessions.len()].clone();
        async move {
            let (tx, rx) = oneshot::channel();
            s.send((op, tx)).await.ok()?;
            rx.await.ok()
        }
    };
    let (ops_per_sec, mut lat, _, reply_value_bytes) = drive(w, submit, || 0).await;
    server.abort();
    lat.sort_unstable();
    Ok(Report {
        ops_per_sec,
        requests_per_sec: 0.0,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        leader_change: None,
        reply_value_bytes,
    })
}

/// One connection, one request outstanding, queued callers batched into it (as `KvClient`).
async fn plain_session(
    conn: tokio_rustls::client::TlsStream<TcpStream>,
    mut jobs: mpsc::Receiver<Op>,
    ops_max: usize,
) {
    let (rd, wr) = tokio::io::split(conn);
    let (tx, mut rx) = queue(4, Budget::new(usize::MAX, None), None);
    tokio::spawn(async move { write_frames(wr, &mut rx, 256 << 10).await });
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    let mut answered = 0;
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < ops_max {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        // The same regrouping as `KvClient` (wait up to REGROUP_WAIT for the callers just
        // answered), so the baseline batches exactly as well.
        let deadline = tokio::time::Instant::now() + crate::client::REGROUP_WAIT;
        while batch.len() < answered.min(ops_max) {
            match tokio::time::timeout_at(deadline, jobs.recv()).await {
                Ok(Some(j)) => batch.push(j),
                _ => break,
            }
        }
        let (ops, dones): (Vec<KvOp>, Vec<_>) = batch.into_iter().unzip();
        if !tx.send(Bytes::from(KvRequest { ops }.encode())).await {
            return;
        }
        if !matches!(
            read_frame(&mut rd, REQUEST_BYTES_MAX, &mut buf).await,
            Ok(true)
        ) {
            return;
        }
        let Ok(reply) = KvReply::decode(&buf) else {
            return;
        };
        answered = 0;
        for (d, r) in dones.into_iter().zip(&reply.results) {
            if d.send(value_bytes(r)).is_ok() {
                answered += 1;
            }
        }
    }
}
