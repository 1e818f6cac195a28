//! The replica runtime: a thin tokio driver around [`rampart_bft::Replica`].
//!
//! Tasks: one listener (accepts TLS connections from replicas and clients), one reader per
//! accepted connection, one writer per client connection, one outbound link per peer
//! replica (connects with backoff, writes), and the core task, which alone owns the
//! protocol state, the storage and the routing tables.
//!
//! Queues are bounded in bytes and in frames ([`crate::listen`] has the inbound side and
//! the connection caps; [`TransportLimits`] every limit). Outbound queues hold
//! [`OUTBOUND_QUEUE_MAX`] frames and `replica_outbound_bytes_max` bytes per peer (and
//! `client_outbound_bytes_max` per client); when a peer is slow or down, further frames to
//! it are dropped and counted: the protocol retransmits, and one slow peer never stalls the
//! others or the core.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use rampart_bft::message::{ReplicaBody, SignedMessage};
use rampart_bft::{
    ClientId, Ed25519Authenticator, MemStorage, Message, Output, PersistEntry, Replica, ReplicaId,
    Storage, Timestamp,
};
use rampart_kv::KvApp;
use tokio::io::{AsyncWriteExt as _, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::ClusterError;
use crate::config::Cluster;
use crate::listen::{Event, Shared, accept_loop};
pub use crate::listen::{INBOUND_QUEUE_MAX, OUTBOUND_QUEUE_MAX, TransportLimits, TransportStats};
use crate::queue::{Budget, QueueRx, QueueTx, queue};
use crate::storage::FileStorage;
use crate::tls::{Directory, client_config, server_config, server_name};
/// Inbound messages the core handles before it drains outputs (amortises fsyncs and
/// lets one write carry many frames).
pub const INBOUND_BURST_MAX: usize = 256;
/// Reconnection backoff bounds.
pub const BACKOFF_MIN: Duration = Duration::from_millis(20);
/// Reconnection backoff cap.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A TLS handshake that takes longer is abandoned when this side dials (the listening
/// side uses the cluster file's `handshake_timeout_ms`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes buffered by a connection writer before it flushes.
const WRITE_BUFFER_BYTES: usize = 256 << 10;

/// **Test tool**: make this replica misbehave, to show that the cluster tolerates it.
/// Never use outside tests; the replica logs a warning at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DangerByzantine {
    /// Send nothing at all (but keep receiving).
    Silent,
    /// Answer clients with wrong, validly signed results.
    WrongReplies,
    /// Send conflicting, validly signed PROPOSE/WRITE/ACCEPT messages to different peers.
    Equivocate,
}

/// Options of [`run_replica`].
#[derive(Debug, Clone, Default)]
pub struct ReplicaOptions {
    /// Durable storage directory; `None` keeps everything in memory (benchmarks only: a
    /// replica restarted without its votes could equivocate).
    pub data_dir: Option<PathBuf>,
    /// Test-only misbehaviour.
    pub danger_byzantine: Option<DangerByzantine>,
    /// Transport counters, filled while the replica runs (pass a clone to read them).
    pub stats: Arc<TransportStats>,
}

// One per replica, never moved after start: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Store {
    Mem(MemStorage),
    File(FileStorage),
}

impl Store {
    fn append(&mut self, e: &PersistEntry) -> Result<(), ClusterError> {
        match self {
            Store::Mem(m) => m.apply(e)?,
            Store::File(f) => f.append(e)?,
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<(), ClusterError> {
        if let Store::File(f) = self {
            // fsync blocks: let the runtime move other tasks (other replicas of an
            // in-process cluster, this replica's connections) to another worker meanwhile.
            tokio::task::block_in_place(|| f.sync())?;
        }
        Ok(())
    }
}

/// Maps the core's nanosecond timestamps to the real clock.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    base_ns: u64,
}

impl Clock {
    fn new() -> Clock {
        // Wall-clock base so that leader timestamps keep increasing across restarts; the
        // monotonic clock measures from there, so a clock step never moves timers.
        let base_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Clock {
            start: Instant::now(),
            base_ns,
        }
    }
    fn now(&self) -> Timestamp {
        let e = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.base_ns.saturating_add(e))
    }
    fn instant(&self, t: Timestamp) -> tokio::time::Instant {
        let d = Duration::from_nanos(t.0.saturating_sub(self.base_ns));
        tokio::time::Instant::from_std(far_future(self.start, d))
    }
}

/// A running replica's listening address.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// Bound address.
    pub addr: SocketAddr,
}

/// Run replica `id` until an error. `listener`: an already bound socket (else it binds
/// the cluster file's address). `ready` is told once the replica listens.
pub async fn run_replica(
    cluster: Cluster,
    id: ReplicaId,
    key: SigningKey,
    opts: ReplicaOptions,
    listener: Option<TcpListener>,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
) -> Result<(), ClusterError> {
    let entry = cluster.replica(id.0)?.clone();
    if key.verifying_key() != cluster.replica_keys[usize::from(id.0)] {
        return Err(ClusterError::KeyMismatch {
            path: cluster.replica_key_path(id),
        });
    }
    if let Some(mode) = opts.danger_byzantine {
        tracing::warn!(
            ?mode,
            "REPLICA {} RUNS IN BYZANTINE TEST MODE: it misbehaves on purpose",
            id.0
        );
        eprintln!(
            "WARNING: replica {} runs in Byzantine TEST mode ({mode:?}); never use this in production",
            id.0
        );
    }
    let config = cluster.bft_config();
    let wire = rampart_bft::WireLimits::from_config(&config);
    let limits = TransportLimits::new(&wire, &cluster.transport)?;
    let stats = opts.stats.clone();
    let (store, recovered) = match &opts.data_dir {
        Some(dir) => {
            let (s, r) = FileStorage::open(dir, &config)?;
            (Store::File(s), r)
        }
        None => (
            Store::Mem(MemStorage::default()),
            rampart_bft::RecoveredState::default(),
        ),
    };
    let clock = Clock::new();
    let auth = Ed25519Authenticator::new(
        key.clone(),
        cluster.replica_keys.clone(),
        cluster.client_keys.clone(),
    );
    let replica = Replica::new(
        config,
        id,
        auth,
        KvApp::default(),
        recovered,
        u64::from(id.0) ^ clock.now().0,
        clock.now(),
    )?;

    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(entry.addr)
            .await
            .map_err(|e| ClusterError::Bind {
                addr: entry.addr,
                source: e,
            })?,
    };
    let addr = listener.local_addr().map_err(|e| ClusterError::Bind {
        addr: entry.addr,
        source: e,
    })?;
    let (replica_tx, replica_rx) = mpsc::channel::<Event>(INBOUND_QUEUE_MAX);
    let (client_tx, client_rx) = crate::queue::fair(limits.client_events_max());

    // Every task of this replica dies with it (dropping or aborting `run_replica`).
    let mut tasks = tokio::task::JoinSet::new();
    // Outbound links to the other replicas.
    let mut peers: Vec<Option<QueueTx>> = Vec::with_capacity(cluster.n());
    for (j, e) in cluster.replicas.iter().enumerate() {
        if j == usize::from(id.0) {
            peers.push(None);
            continue;
        }
        let budget = Budget::new(
            limits.replica_outbound_bytes_max,
            Some(stats.replica_outbound_bytes_hwm.clone()),
        );
        let (tx, rx) = queue(OUTBOUND_QUEUE_MAX, budget, None);
        let cfg = client_config(&key, &cluster.replica_keys[j])?;
        tasks.spawn(outbound_link(e.addr, TlsConnector::from(cfg), rx));
        peers.push(Some(tx));
    }

    let dir = Directory::new(&cluster.replica_keys, &cluster.client_keys);
    let acceptor = TlsAcceptor::from(server_config(&key, dir.clone())?);
    let shared = Shared::new(limits, stats.clone(), replica_tx, client_tx);
    tasks.spawn(accept_loop(listener, acceptor, dir, shared));
    tracing::info!(replica = id.0, %addr, "replica listening");
    if let Some(r) = ready {
        let _ = r.send(Ready { addr });
    }
    let byz_auth = Ed25519Authenticator::new(
        key,
        cluster.replica_keys.clone(),
        cluster.client_keys.clone(),
    );
    let mut core = Core {
        replica,
        store,
        peers,
        clients: HashMap::new(),
        clock,
        byzantine: opts.danger_byzantine,
        byz_auth,
        id,
        stats,
    };
    let r = core.run(replica_rx, client_rx).await;
    drop(tasks);
    r
}

struct Core {
    replica: Replica<KvApp, Ed25519Authenticator>,
    store: Store,
    peers: Vec<Option<QueueTx>>,
    clients: HashMap<ClientId, (u64, QueueTx)>,
    clock: Clock,
    byzantine: Option<DangerByzantine>,
    byz_auth: Ed25519Authenticator,
    id: ReplicaId,
    stats: Arc<TransportStats>,
}

impl Core {
    async fn run(
        &mut self,
        mut replicas: mpsc::Receiver<Event>,
        mut clients: crate::queue::FairRx<ClientId, Event>,
    ) -> Result<(), ClusterError> {
        self.drain()?;
        loop {
            let deadline = self.replica.poll_timeout().map(|t| self.clock.instant(t));
            let ev = tokio::select! {
                ev = replicas.recv() => ev,
                ev = clients.recv() => ev,
                () = sleep_opt(deadline) => {
                    self.replica.handle_timeout(self.clock.now());
                    self.drain()?;
                    continue;
                }
            };
            let Some(ev) = ev else { return Ok(()) };
            self.handle(ev);
            // Take what else is queued before draining outputs: one fsync and one write
            // per peer for a whole burst.
            // Both channels in turn, so that neither starves the other.
            for _ in 0..INBOUND_BURST_MAX / 2 {
                let r = replicas.try_recv().ok();
                let c = clients.try_recv();
                if r.is_none() && c.is_none() {
                    break;
                }
                for ev in [r, c].into_iter().flatten() {
                    self.handle(ev);
                }
            }
            if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                self.replica.handle_timeout(self.clock.now());
            }
            self.drain()?;
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Frame(peer, bytes, held) => {
                if let Err(e) = self.replica.handle_bytes(self.clock.now(), peer, &bytes) {
                    tracing::debug!(?peer, error = %e, "message rejected");
                }
                // The frame's bytes leave the inbound budget only now.
                drop((bytes, held));
            }
            Event::ClientUp(c, conn, tx, _quota) => {
                self.clients.insert(c, (conn, tx));
            }
            Event::ClientDown(c, conn, _quota) => {
                if self.clients.get(&c).is_some_and(|(k, _)| *k == conn) {
                    self.clients.remove(&c);
                }
            }
        }
    }

    /// Carry out every output; persist entries are made durable with one sync, then the
    /// core is told, which may release held messages: loop until nothing is left.
    fn drain(&mut self) -> Result<(), ClusterError> {
        loop {
            let mut persisted = None;
            while let Some(out) = self.replica.poll_output() {
                match out {
                    Output::Persist { token, entry } => {
                        self.store.append(&entry)?;
                        persisted = Some(token);
                    }
                    Output::Send { to, msg } => self.send_replica(to, &msg),
                    Output::Broadcast { msg } => self.broadcast(&msg),
                    Output::Reply { client, msg } => self.reply(client, &msg),
                    Output::RegencyInstalled { regency, leader } => {
                        tracing::info!(
                            replica = self.id.0,
                            regency = regency.0,
                            leader = leader.0,
                            "regency installed"
                        );
                    }
                    Output::StateInstalled { cid, .. } => {
                        tracing::info!(
                            replica = self.id.0,
                            cid = cid.0,
                            "state transfer installed a checkpoint"
                        );
                    }
                    _ => {}
                }
            }
            let Some(token) = persisted else {
                return Ok(());
            };
            self.store.sync()?;
            self.replica.handle_persisted(token);
        }
    }

    /// Queues `frame` on `tx`, or counts it dropped when the queue is full in frames or
    /// bytes (the protocol retransmits). A free function so that callers can borrow
    /// `peers` and `stats` apart.
    fn push(stats: &TransportStats, tx: &QueueTx, frame: Bytes) {
        if !tx.try_send(frame) {
            stats
                .outbound_frames_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn send_replica(&mut self, to: ReplicaId, msg: &Message) {
        if self.byzantine == Some(DangerByzantine::Silent) {
            return;
        }
        if let Some(Some(tx)) = self.peers.get(usize::from(to.0)) {
            Self::push(&self.stats, tx, Bytes::from(msg.encode()));
        }
    }

    fn broadcast(&mut self, msg: &Message) {
        match self.byzantine {
            Some(DangerByzantine::Silent) => return,
            Some(DangerByzantine::Equivocate) => {
                if let Some(alt) = self.equivocation(msg) {
                    let (a, b) = (Bytes::from(msg.encode()), Bytes::from(alt.encode()));
                    for (j, tx) in self.peers.iter().enumerate() {
                        if let Some(tx) = tx {
                            let frame = if j % 2 == 0 { a.clone() } else { b.clone() };
                            Self::push(&self.stats, tx, frame);
                        }
                    }
                    return;
                }
            }
            _ => {}
        }
        let frame = Bytes::from(msg.encode());
        for tx in self.peers.iter().flatten() {
            Self::push(&self.stats, tx, frame.clone());
        }
    }

    /// A conflicting, validly signed variant of a PROPOSE, WRITE or ACCEPT.
    fn equivocation(&self, msg: &Message) -> Option<Message> {
        let Message::Replica(m) = msg else {
            return None;
        };
        let mut body = m.body.clone();
        match &mut body {
            ReplicaBody::Propose { batch, .. } => {
                batch.timestamp = Timestamp(batch.timestamp.0.wrapping_add(1));
            }
            ReplicaBody::Write { digest, .. } | ReplicaBody::Accept { digest, .. } => {
                digest.0[0] ^= 0xff;
            }
            _ => return None,
        }
        Some(Message::Replica(SignedMessage::new(
            &self.byz_auth,
            self.id,
            body,
        )))
    }

    fn reply(&mut self, client: ClientId, msg: &Message) {
        let wrong = match (self.byzantine, msg) {
            (Some(DangerByzantine::Silent), _) => return,
            (Some(DangerByzantine::WrongReplies), Message::Replica(m)) => {
                let mut body = m.body.clone();
                match &mut body {
                    ReplicaBody::Reply { result, .. } => {
                        result.push(0xee);
                        Some(Message::Replica(SignedMessage::new(
                            &self.byz_auth,
                            self.id,
                            body,
                        )))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some((_, tx)) = self.clients.get(&client) {
            let frame = Bytes::from(wrong.as_ref().unwrap_or(msg).encode());
            Self::push(&self.stats, tx, frame);
        }
    }
}

/// `start + d`, or a day from `start` if that overflows (a deadline that far is "never").
pub(crate) fn far_future(start: Instant, d: Duration) -> Instant {
    start
        .checked_add(d)
        .or_else(|| start.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(start)
}

pub(crate) async fn sleep_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Write frames from `rx`, coalescing whatever is queued into one buffer of `buffer`
/// bytes and one flush. A frame's budget share is returned once it is written. Returns
/// `Ok` when `rx` is closed, an error when the connection fails.
pub(crate) async fn write_frames<W: tokio::io::AsyncWrite + Unpin>(
    w: W,
    rx: &mut QueueRx,
    buffer: usize,
) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(buffer, w);
    while let Some(frame) = rx.recv().await {
        let mut next = Some(frame);
        while let Some((f, held)) = next.take() {
            let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
            w.write_all(&len.to_le_bytes()).await?;
            w.write_all(&f).await?;
            drop(held);
            next = rx.try_recv();
        }
        w.flush().await?;
    }
    Ok(())
}

/// Dial `addr` and complete the pinned TLS handshake within [`HANDSHAKE_TIMEOUT`].
pub(crate) async fn connect_tls(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(server_name(), tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

async fn outbound_link(addr: SocketAddr, connector: TlsConnector, mut rx: QueueRx) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match connect_tls(addr, &connector).await {
            Ok(tls) => {
                backoff = BACKOFF_MIN;
                // Frames queued while the link was down are stale; the protocol retransmits.
                rx.clear();
                let (_rd, wr) = tokio::io::split(tls);
                match write_frames(wr, &mut rx, WRITE_BUFFER_BYTES).await {
                    Ok(()) => return, // The core stopped.
                    Err(e) => tracing::debug!(%addr, error = %e, "link to replica lost"),
                }
            }
            Err(e) => tracing::debug!(%addr, error = %e, "connect failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        rx.clear();
    }
}

impl From<rampart_bft::StorageError> for ClusterError {
    fn from(e: rampart_bft::StorageError) -> Self {
        ClusterError::Storage(e)
    }
}

impl From<rampart_bft::Error> for ClusterError {
    fn from(e: rampart_bft::Error) -> Self {
        ClusterError::Core(e.to_string())
    }
}
