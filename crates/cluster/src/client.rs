//! The client runtime: [`KvClient`] drives one [`rampart_bft::Client`] over TLS links to
//! every replica and multiplexes many concurrent callers onto it.
//!
//! Callers submit operations with [`KvClient::execute`]. The driver task keeps at most one
//! BFT request outstanding (the core's rule) and, whenever it is idle, packs every queued
//! caller's operations — up to [`OPS_PER_REQUEST_MAX`] operations and
//! [`REQUEST_BYTES_MAX`] bytes — into one signed request. The f+1 matching reply is split
//! back to the callers in order. Each operation linearizes at its request's execution
//! point, so batching changes cost, not semantics. Read-only batches (only gets and scans,
//! asked for with `read_only`) take the unordered path and fall back to ordering visibly
//! ([`ClientStats::read_only_fallbacks`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use rampart_bft::{
    Client, ClientId, ClientOutput, Ed25519Authenticator, ReplicaId, RequestSeq, Timestamp,
};
use rampart_kv::{
    KvError, KvOp, KvReply, KvRequest, KvResult, OPS_PER_REQUEST_MAX, REQUEST_BYTES_MAX,
};
use tokio::io::BufReader;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;

use crate::ClusterError;
use crate::config::Cluster;
use crate::frame::{FrameReader, FrameTiming};
use crate::queue::{Budget, Held, QueueRx, QueueTx, queue};
use crate::replica::{BACKOFF_MAX, BACKOFF_MIN, OUTBOUND_QUEUE_MAX, connect_tls, write_frames};
use crate::tls::client_config;

/// Callers' operations waiting in the driver (beyond this, `execute` waits: back-pressure).
pub const JOBS_QUEUED_MAX: usize = 8192;

/// Longest wait for just-answered callers' next operations before the next request leaves.
pub const REGROUP_WAIT: Duration = Duration::from_millis(2);

/// Options of [`KvClient::connect`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Retransmission period of an outstanding request.
    pub retransmit: Duration,
    /// How long `execute` waits for a result before it reports the cluster unreachable.
    pub deadline: Duration,
    /// Operations per BFT request at most (1 disables batching, for comparison).
    pub ops_per_request_max: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retransmit: Duration::from_millis(1000),
            deadline: Duration::from_secs(10),
            ops_per_request_max: OPS_PER_REQUEST_MAX,
        }
    }
}

/// Client counters.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// BFT requests completed.
    pub requests: AtomicU64,
    /// Operations completed.
    pub ops: AtomicU64,
    /// Read-only requests that fell back to ordering.
    pub read_only_fallbacks: AtomicU64,
    /// Replies rejected (bad signature, mismatch) — evidence of a faulty replica.
    pub replies_rejected: AtomicU64,
}

struct Job {
    ops: Vec<KvOp>,
    read_only: bool,
    done: oneshot::Sender<Vec<KvResult>>,
}

/// A handle to the replicated KV service. Cheap to clone; all clones share one session.
#[derive(Clone)]
pub struct KvClient {
    jobs: mpsc::Sender<Job>,
    connected: Arc<AtomicUsize>,
    stats: Arc<ClientStats>,
    n: usize,
    deadline: Duration,
}

impl KvClient {
    /// Start the driver and the links to all replicas (in the background: returns at once).
    /// Must be called inside a tokio runtime.
    pub fn connect(
        cluster: &Cluster,
        id: ClientId,
        key: SigningKey,
        opts: ClientOptions,
    ) -> Result<KvClient, ClusterError> {
        if cluster.client_keys.get(&id) != Some(&key.verifying_key()) {
            return Err(ClusterError::UnknownClient { id: id.0 });
        }
        let config = cluster.bft_config();
        let limits = rampart_bft::WireLimits::from_config(&config);
        // A replica sends a client replies only: larger frames close the link.
        let frame_max = limits.reply_message_bytes_max();
        let request_max = limits.request_message_bytes_max();
        let (replies_tx, replies_rx) = mpsc::channel::<(ReplicaId, Vec<u8>, Held)>(1024);
        let connected = Arc::new(AtomicUsize::new(0));
        let mut links = Vec::new();
        for (j, e) in cluster.replicas.iter().enumerate() {
            // One outstanding request and its retransmissions: a few maximal requests.
            let (tx, rx) = queue(OUTBOUND_QUEUE_MAX, Budget::new(4 * request_max, None), None);
            let cfg = client_config(&key, &cluster.replica_keys[j])?;
            let rid = ReplicaId(u8::try_from(j).unwrap_or(u8::MAX));
            tokio::spawn(client_link(
                e.addr,
                rid,
                TlsConnector::from(cfg),
                rx,
                replies_tx.clone(),
                connected.clone(),
                frame_max,
            ));
            links.push(tx);
        }
        // First sequence number: the wall clock in nanoseconds, so that a restarted client
        // process with the same id stays above every number it used before (ADR 0302).
        let first_seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let auth = Ed25519Authenticator::new(
            key,
            cluster.replica_keys.clone(),
            cluster.client_keys.clone(),
        );
        let core = Client::new(&config, id, auth, opts.retransmit, RequestSeq(first_seq));
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(1024);
        let stats = Arc::new(ClientStats::default());
        let driver = Driver {
            core,
            links,
            queue: VecDeque::new(),
            inflight: Vec::new(),
            start: std::time::Instant::now(),
            ops_max: opts.ops_per_request_max.clamp(1, OPS_PER_REQUEST_MAX),
            stats: stats.clone(),
            answered: 0,
        };
        tokio::spawn(driver.run(jobs_rx, replies_rx));
        Ok(KvClient {
            jobs: jobs_tx,
            connected,
            stats,
            n: cluster.n(),
            deadline: opts.deadline,
        })
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Replicas with an established TLS link now.
    #[must_use]
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Execute operations in order, atomically with respect to other requests. `read_only`
    /// asks for the unordered fast path (ignored unless every operation is a read).
    pub async fn execute(
        &self,
        ops: Vec<KvOp>,
        read_only: bool,
    ) -> Result<Vec<KvResult>, ClusterError> {
        if ops.is_empty() || ops.len() > OPS_PER_REQUEST_MAX {
            return Err(ClusterError::Kv(KvError::Malformed));
        }
        let mut bytes = 5;
        for op in &ops {
            op.check().map_err(ClusterError::Kv)?;
            bytes += op.encoded_len();
        }
        if bytes > REQUEST_BYTES_MAX {
            return Err(ClusterError::Kv(KvError::ValueTooLarge));
        }
        let read_only = read_only && ops.iter().all(KvOp::is_read);
        let (done, rx) = oneshot::channel();
        let n_ops = ops.len();
        let job = Job {
            ops,
            read_only,
            done,
        };
        let wait = async {
            self.jobs
                .send(job)
                .await
                .map_err(|_| ClusterError::ClientStopped)?;
            rx.await.map_err(|_| ClusterError::ClientStopped)
        };
        match tokio::time::timeout(self.deadline, wait).await {
            Ok(Ok(results)) if results.len() == n_ops => Ok(results),
            Ok(Ok(_)) => Err(ClusterError::Kv(KvError::Malformed)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClusterError::Unreachable {
                secs: self.deadline.as_secs_f64(),
                connected: self.connected(),
                n: self.n,
            }),
        }
    }

    /// Get a key (ordered; `read_only` for the fast path).
    pub async fn get(&self, key: &[u8], read_only: bool) -> Result<Option<Vec<u8>>, ClusterError> {
        match self.one(KvOp::Get { key: key.to_vec() }, read_only).await? {
            KvResult::Value(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Put a key.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), ClusterError> {
        match self
            .one(
                KvOp::Put {
                    key: key.to_vec(),
                    value: value.to_vec(),
                },
                false,
            )
            .await?
        {
            KvResult::Written => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn one(&self, op: KvOp, read_only: bool) -> Result<KvResult, ClusterError> {
        let mut r = self.execute(vec![op], read_only).await?;
        match r.pop() {
            Some(KvResult::Error(e)) => Err(ClusterError::Kv(e)),
            Some(x) => Ok(x),
            None => Err(ClusterError::Kv(KvError::Malformed)),
        }
    }
}

fn unexpected(r: KvResult) -> ClusterError {
    match r {
        KvResult::Error(e) => ClusterError::Kv(e),
        _ => ClusterError::Kv(KvError::Malformed),
    }
}

struct Driver {
    core: Client<Ed25519Authenticator>,
    links: Vec<QueueTx>,
    queue: VecDeque<Job>,
    inflight: Vec<Job>,
    start: std::time::Instant,
    ops_max: usize,
    stats: Arc<ClientStats>,
    /// Callers answered by the last completed request.
    answered: usize,
}

impl Driver {
    fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    async fn run(
        mut self,
        mut jobs: mpsc::Receiver<Job>,
        mut replies: mpsc::Receiver<(ReplicaId, Vec<u8>, Held)>,
    ) {
        loop {
            let deadline = self.core.poll_timeout().map(|t| {
                tokio::time::Instant::from_std(crate::replica::far_future(
                    self.start,
                    Duration::from_nanos(t.0),
                ))
            });
            tokio::select! {
                j = jobs.recv(), if self.queue.len() < JOBS_QUEUED_MAX => match j {
                    Some(j) => {
                        self.queue.push_back(j);
                        while self.queue.len() < JOBS_QUEUED_MAX {
                            match jobs.try_recv() { Ok(j) => self.queue.push_back(j), Err(_) => break }
                        }
                    }
                    None => if self.queue.is_empty() && self.inflight.is_empty() { return },
                },
                r = replies.recv() => if let Some((from, bytes, _held)) = r {
                    let now = self.now();
                    if self.core.handle_bytes(now, from, &bytes).is_err() {
                        self.stats.replies_rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    while let Ok((from, bytes, _held)) = replies.try_recv() {
                        if self.core.handle_bytes(now, from, &bytes).is_err() {
                            self.stats.replies_rejected.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                },
                () = crate::replica::sleep_opt(deadline) => {
                    let now = self.now();
                    self.core.handle_timeout(now);
                }
            }
            self.answered = 0;
            self.drain();
            self.regroup(&mut jobs).await;
            self.submit();
            self.drain();
        }
    }

    /// Callers just answered usually submit their next operation at once. Wait up to
    /// [`REGROUP_WAIT`] for as many new operations as callers were answered, so that the next
    /// request carries them too; otherwise closed-loop callers split into two cohorts that
    /// alternate between requests, each request carrying half of them.
    async fn regroup(&mut self, jobs: &mut mpsc::Receiver<Job>) {
        if self.answered == 0 || self.core.is_busy() {
            return;
        }
        let deadline = tokio::time::Instant::now() + REGROUP_WAIT;
        let mut arrived = 0;
        while arrived < self.answered && self.queue.len() < JOBS_QUEUED_MAX {
            match tokio::time::timeout_at(deadline, jobs.recv()).await {
                Ok(Some(j)) => {
                    self.queue.push_back(j);
                    arrived += 1;
                }
                _ => break,
            }
        }
        tracing::trace!(
            answered = self.answered,
            arrived,
            queued = self.queue.len(),
            "regrouped"
        );
    }

    fn drain(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                ClientOutput::Broadcast { msg } => {
                    let frame = Bytes::from(msg.encode());
                    for l in &self.links {
                        let _ = l.try_send(frame.clone());
                    }
                }
                ClientOutput::Completed { result, .. } => self.complete(&result),
                ClientOutput::ReadOnlyFallback { .. } => {
                    self.stats
                        .read_only_fallbacks
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!("read-only request fell back to ordering");
                }
                _ => {}
            }
        }
    }

    fn complete(&mut self, result: &[u8]) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let jobs = std::mem::take(&mut self.inflight);
        let results = match KvReply::decode(result) {
            Ok(r) => r.results,
            Err(_) => Vec::new(),
        };
        let total: usize = jobs.iter().map(|j| j.ops.len()).sum();
        let mut it = results.into_iter();
        let malformed = it.len() != total;
        let several = jobs.len() > 1;
        for job in jobs {
            let rs: Vec<KvResult> = if malformed {
                vec![KvResult::Error(KvError::Malformed); job.ops.len()]
            } else {
                it.by_ref().take(job.ops.len()).collect()
            };
            // A read refused for the reply budget of a shared request runs again later.
            let budget = rs.contains(&KvResult::Error(KvError::ReplyBudget));
            if budget && several && job.ops.iter().all(KvOp::is_read) {
                self.queue.push_front(job);
                continue;
            }
            self.stats
                .ops
                .fetch_add(job.ops.len() as u64, Ordering::Relaxed);
            if job.done.send(rs).is_ok() {
                self.answered += 1;
            }
        }
    }

    fn submit(&mut self) {
        if self.core.is_busy() || self.queue.is_empty() {
            return;
        }
        // Drop jobs whose caller gave up.
        self.queue.retain(|j| !j.done.is_closed());
        let Some(first) = self.queue.front() else {
            return;
        };
        let read_only = first.read_only;
        let mut ops = Vec::new();
        let mut bytes = 5;
        while let Some(j) = self.queue.front() {
            let add: usize = j.ops.iter().map(KvOp::encoded_len).sum();
            let fits = self.inflight.is_empty()
                || (ops.len() + j.ops.len() <= self.ops_max && bytes + add <= REQUEST_BYTES_MAX);
            if !fits || j.read_only != read_only {
                break;
            }
            let Some(j) = self.queue.pop_front() else {
                break;
            };
            ops.extend(j.ops.iter().cloned());
            bytes += add;
            self.inflight.push(j);
        }
        let req = KvRequest { ops }.encode();
        let now = self.now();
        if let Err(e) = self.core.submit(now, req, read_only) {
            tracing::warn!(error = %e, "request refused by the client core");
            for j in std::mem::take(&mut self.inflight) {
                let _ = j
                    .done
                    .send(vec![KvResult::Error(KvError::Malformed); j.ops.len()]);
            }
        }
    }
}

async fn client_link(
    addr: std::net::SocketAddr,
    rid: ReplicaId,
    connector: TlsConnector,
    mut rx: QueueRx,
    replies: mpsc::Sender<(ReplicaId, Vec<u8>, Held)>,
    connected: Arc<AtomicUsize>,
    frame_max: usize,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if let Ok(tls) = connect_tls(addr, &connector).await {
            backoff = BACKOFF_MIN;
            connected.fetch_add(1, Ordering::Relaxed);
            let (rd, wr) = tokio::io::split(tls);
            let replies = replies.clone();
            let reader = async move {
                let mut rd = BufReader::with_capacity(64 << 10, rd);
                let frames = FrameReader::new(frame_max, FrameTiming::NONE, None);
                // A replica's replies waiting for the driver: two maximal ones (the
                // reader then waits: back-pressure on that replica only).
                let budget = Budget::new(2 * frame_max, None);
                while let Ok(Some(buf)) = frames.read(&mut rd).await {
                    let Some(held) = budget.take(buf.len()).await else {
                        return;
                    };
                    if replies.send((rid, buf, held)).await.is_err() {
                        return;
                    }
                }
            };
            let stop = tokio::select! {
                r = write_frames(wr, &mut rx, crate::listen::CLIENT_WRITE_BUFFER) => r.is_ok(),
                () = reader => false,
            };
            connected.fetch_sub(1, Ordering::Relaxed);
            if stop {
                return;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        if rx.is_closed() {
            return;
        }
    }
}
