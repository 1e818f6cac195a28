//! The replica's listening side: TLS accept, connection caps, and inbound frames into the
//! core, all bounded in bytes.
//!
//! # Limits (ADR 0305)
//!
//! - Before TLS has identified the peer only the handshake runs: at most
//!   `handshakes_max` at once (further connections are accepted and closed at once), each
//!   within `handshake_timeout_ms`. rustls bounds what a handshake may buffer and accepts
//!   no early data.
//! - After the handshake, one connection per identity: a newer connection from the same
//!   replica or client replaces the older (so a peer whose old connection is half-open can
//!   always reconnect), and at most `client_connections_max` client identities at once;
//!   further clients are closed at once.
//! - Frames: replicas up to `WireLimits::message_bytes_max`, clients up to
//!   `WireLimits::request_message_bytes_max`; buffers grow only with the bytes that
//!   arrived ([`crate::frame`]); a frame must complete within `frame_timeout_ms` plus its
//!   length at `frame_rate_min_bytes_per_sec`, and a client connection with no frame for
//!   `client_idle_timeout_ms` is closed.
//! - Inbound queues: each replica connection may have one maximal message's worth of
//!   bytes waiting for the core (its reader then waits: TCP back-pressure on that replica
//!   only). Each client connection may have two maximal requests' worth, and all clients
//!   together `client_inbound_bytes_max`, which also holds the frame buffers of client
//!   frames still being read (taken as the buffer grows, [`FrameReader::read_reserved`]);
//!   beyond either, the client's frames are dropped (it retransmits); a frame whose
//!   buffer finds the all-clients budget full is read to its end and discarded. Clients and replicas use separate channels into the core, so a
//!   client flood never makes a replica's reader wait.
//! - Fairness between client keys (issue 10): each client identity (not connection) has
//!   its own quota, kept while any of its frames waits for the core: at most
//!   [`CLIENT_INBOUND_FRAMES_MAX`] frames and connection events, and a floor of
//!   `client_inbound_bytes_max / (2 × client_connections_max)` bytes for frames no longer
//!   than the floor's free room, which no other client can take; larger frames use its
//!   two maximal requests of the common rest of the budget. The client channel holds
//!   [`CLIENT_INBOUND_FRAMES_MAX`] × `client_connections_max` events, so one client's
//!   frames never find it full because of others, and a client with one small request in
//!   flight is always admitted, however many Byzantine keys flood. The core takes client
//!   events one identity at a time in turn ([`crate::queue::fair`]), so such a request
//!   waits behind at most one event of each other client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_bft::{ClientId, Peer, WireLimits};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;

use crate::ClusterError;
use crate::config::TransportSettings;
use crate::frame::{FrameReader, FrameStats, FrameTiming, Reserved};
use crate::queue::{Budget, FairTx, Held, QueueTx, queue};
use crate::tls::{Directory, peer_of};

/// Events (frames and client connections) waiting for the core, per channel (replicas
/// and clients have one channel each).
pub const INBOUND_QUEUE_MAX: usize = 1024;
/// Frames queued per outbound peer or client connection at most (bytes are bounded too).
pub const OUTBOUND_QUEUE_MAX: usize = 1024;
/// Frames (and connection events) one client identity may have waiting for the core.
pub const CLIENT_INBOUND_FRAMES_MAX: usize = 32;
/// Read buffer of a replica connection.
const REPLICA_READ_BUFFER: usize = 256 << 10;
/// Read buffer of a client connection (many of them: kept small).
const CLIENT_READ_BUFFER: usize = 16 << 10;
/// Write buffer of a client connection.
pub(crate) const CLIENT_WRITE_BUFFER: usize = 64 << 10;

/// Every byte and count limit of a replica's transport, derived from the core's wire
/// limits and the cluster file's `[transport]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportLimits {
    /// Largest frame from a replica: `WireLimits::message_bytes_max`.
    pub replica_frame_max: usize,
    /// Largest frame from a client: `WireLimits::request_message_bytes_max`.
    pub client_frame_max: usize,
    /// Largest frame to a client: `WireLimits::reply_message_bytes_max`.
    pub reply_frame_max: usize,
    /// Bytes waiting for the core per replica connection (one maximal message).
    pub replica_inbound_bytes_max: usize,
    /// Bytes waiting for the core per client connection (two maximal requests).
    pub client_inbound_bytes_max: usize,
    /// Bytes waiting for the core from all clients (floors and the common rest).
    pub client_inbound_total_max: usize,
    /// Bytes of small frames each client may always have waiting (its floor, taken from
    /// nobody else): `client_inbound_total_max / (2 × client_connections_max)`.
    pub client_inbound_floor_bytes: usize,
    /// Bytes queued to one peer replica (two maximal messages).
    pub replica_outbound_bytes_max: usize,
    /// Bytes queued to one client (four maximal replies).
    pub client_outbound_bytes_max: usize,
    /// Bytes queued to all clients.
    pub client_outbound_total_max: usize,
    /// Concurrent client connections.
    pub client_connections_max: usize,
    /// Concurrent TLS handshakes.
    pub handshakes_max: usize,
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// Frame deadlines on replica connections.
    pub replica_timing: FrameTiming,
    /// Frame deadlines on client connections.
    pub client_timing: FrameTiming,
}

impl TransportLimits {
    /// The limits for `wire` and `s`; an error if the all-clients budgets cannot hold one
    /// client's.
    pub fn new(wire: &WireLimits, s: &TransportSettings) -> Result<TransportLimits, ClusterError> {
        let replica_frame_max = wire.message_bytes_max();
        let client_frame_max = wire.request_message_bytes_max();
        let reply_frame_max = wire.reply_message_bytes_max();
        let l = TransportLimits {
            replica_frame_max,
            client_frame_max,
            reply_frame_max,
            replica_inbound_bytes_max: replica_frame_max,
            client_inbound_bytes_max: 2 * client_frame_max,
            client_inbound_total_max: s.client_inbound_bytes_max,
            client_inbound_floor_bytes: client_floor(
                s.client_inbound_bytes_max,
                s.client_connections_max,
            ),
            replica_outbound_bytes_max: 2 * replica_frame_max,
            client_outbound_bytes_max: 4 * reply_frame_max,
            client_outbound_total_max: s.client_outbound_bytes_max,
            client_connections_max: s.client_connections_max,
            handshakes_max: s.handshakes_max,
            handshake_timeout: Duration::from_millis(s.handshake_timeout_ms),
            replica_timing: FrameTiming {
                idle: None,
                base: Some(Duration::from_millis(s.frame_timeout_ms)),
                rate_min_bytes_per_sec: s.frame_rate_min_bytes_per_sec,
            },
            client_timing: FrameTiming {
                idle: Some(Duration::from_millis(s.client_idle_timeout_ms)),
                base: Some(Duration::from_millis(s.frame_timeout_ms)),
                rate_min_bytes_per_sec: s.frame_rate_min_bytes_per_sec,
            },
        };
        if l.client_inbound_total_max < l.client_inbound_bytes_max
            || l.client_outbound_total_max < l.client_outbound_bytes_max
        {
            return Err(ClusterError::Core(format!(
                "transport: client_inbound_bytes_max must be at least {} and \
                 client_outbound_bytes_max at least {} (one client's share)",
                l.client_inbound_bytes_max, l.client_outbound_bytes_max
            )));
        }
        Ok(l)
    }

    /// The all-clients budget beyond the floors (at least half of it).
    #[must_use]
    pub fn client_inbound_common_max(&self) -> usize {
        self.client_inbound_total_max.saturating_sub(
            self.client_inbound_floor_bytes
                .saturating_mul(self.client_connections_max),
        )
    }

    /// Capacity of the client channel into the core: every client's quota of events.
    #[must_use]
    pub fn client_events_max(&self) -> usize {
        CLIENT_INBOUND_FRAMES_MAX.saturating_mul(self.client_connections_max.max(1))
    }
}

/// Each client's floor of the all-clients budget `total`: half of it split evenly.
fn client_floor(total: usize, connections: usize) -> usize {
    total / 2 / connections.max(1)
}

/// What one client identity may have waiting for the core (or being read), kept across
/// its reconnections while any of it is in use.
pub(crate) struct ClientQuota {
    /// Frames and connection events, [`CLIENT_INBOUND_FRAMES_MAX`].
    frames: Arc<Budget>,
    /// Bytes of small frames, `client_inbound_floor_bytes`.
    floor: Arc<Budget>,
    /// Bytes of other frames, `client_inbound_bytes_max`, with the common budget.
    bytes: Arc<Budget>,
}

impl ClientQuota {
    pub(crate) fn new(l: &TransportLimits, stats: &TransportStats) -> Arc<ClientQuota> {
        Arc::new(ClientQuota {
            frames: Budget::new(CLIENT_INBOUND_FRAMES_MAX, None),
            floor: Budget::new(l.client_inbound_floor_bytes, None),
            bytes: Budget::new(
                l.client_inbound_bytes_max,
                Some(stats.client_inbound_bytes_hwm.clone()),
            ),
        })
    }

    fn idle(&self) -> bool {
        self.frames.used() == 0 && self.floor.used() == 0 && self.bytes.used() == 0
    }
}

/// Counters and high-water marks of a replica's transport (for operators and tests).
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Frame reading (buffer high-water mark, deadlines, oversize frames).
    pub frames: FrameStats,
    /// Connections closed before the handshake: `handshakes_max` were running.
    pub handshakes_refused: AtomicU64,
    /// Handshakes that did not finish within the deadline.
    pub handshakes_timed_out: AtomicU64,
    /// Handshakes that failed (unknown key, bad TLS).
    pub handshakes_failed: AtomicU64,
    /// Client connections closed after the handshake: `client_connections_max` reached.
    pub connections_refused: AtomicU64,
    /// Connections closed because the same identity connected again.
    pub connections_replaced: AtomicU64,
    /// Client connections now.
    pub client_connections: AtomicUsize,
    /// Client frames dropped: the client's or all clients' inbound budget was full.
    pub client_frames_dropped: AtomicU64,
    /// Outbound frames dropped (a peer's or client's queue full).
    pub outbound_frames_dropped: AtomicU64,
    /// Largest bytes waiting for the core from any one replica connection.
    pub replica_inbound_bytes_hwm: Arc<AtomicUsize>,
    /// Largest bytes waiting for the core from any one client connection.
    pub client_inbound_bytes_hwm: Arc<AtomicUsize>,
    /// Largest bytes waiting for the core from all clients together.
    pub client_inbound_total_hwm: Arc<AtomicUsize>,
    /// Largest bytes queued to any one peer replica.
    pub replica_outbound_bytes_hwm: Arc<AtomicUsize>,
    /// Largest bytes queued to any one client.
    pub client_outbound_bytes_hwm: Arc<AtomicUsize>,
    /// Largest bytes queued to all clients together.
    pub client_outbound_total_hwm: Arc<AtomicUsize>,
}

/// What readers hand the core.
pub(crate) enum Event {
    /// A frame from an authenticated peer, with its share of the inbound budget.
    Frame(Peer, Vec<u8>, Held),
    /// A client connection is up: its reply queue (and its place in the client's quota).
    ClientUp(ClientId, u64, QueueTx, Held),
    /// A client connection closed.
    ClientDown(ClientId, u64, Held),
}

/// At most one log line a second for one kind of refusal (the counters count them all).
struct LogEvery {
    start: Instant,
    last_ms: AtomicU64,
}

impl LogEvery {
    fn new() -> LogEvery {
        LogEvery {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
    fn now(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1000;
        let last = self.last_ms.load(Ordering::Relaxed);
        now >= last + 1000
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Who is connected: one connection per identity, `client_connections_max` clients
/// (counting those whose connection closed while their quota is still in use).
#[derive(Default)]
struct Table {
    replicas: HashMap<u8, (u64, oneshot::Sender<()>)>,
    clients: HashMap<ClientId, ClientSlot>,
}

/// A client identity's connection (if any) and quota.
struct ClientSlot {
    conn: Option<(u64, oneshot::Sender<()>)>,
    quota: Arc<ClientQuota>,
}

impl Table {
    fn live_clients(&self) -> usize {
        self.clients.values().filter(|s| s.conn.is_some()).count()
    }
}

/// Removes a connection from the table when it ends (unless a newer one replaced it).
struct Registered {
    table: Arc<Mutex<Table>>,
    stats: Arc<TransportStats>,
    peer: Peer,
    conn: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut t = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.peer {
            Peer::Replica(r) => {
                if t.replicas.get(&r.0).is_some_and(|(c, _)| *c == self.conn) {
                    t.replicas.remove(&r.0);
                }
            }
            Peer::Client(c) => {
                if let Some(s) = t.clients.get_mut(&c)
                    && s.conn.as_ref().is_some_and(|(k, _)| *k == self.conn)
                {
                    s.conn = None;
                    if s.quota.idle() {
                        t.clients.remove(&c);
                    }
                }
                self.stats
                    .client_connections
                    .store(t.live_clients(), Ordering::Relaxed);
            }
        }
    }
}

/// Everything a connection task needs.
pub(crate) struct Shared {
    pub(crate) limits: TransportLimits,
    pub(crate) stats: Arc<TransportStats>,
    pub(crate) replica_events: mpsc::Sender<Event>,
    pub(crate) client_events: FairTx<ClientId, Event>,
    pub(crate) client_inbound: Arc<Budget>,
    pub(crate) client_outbound: Arc<Budget>,
    table: Arc<Mutex<Table>>,
    refused_log: LogEvery,
    handshake_log: LogEvery,
}

impl Shared {
    pub(crate) fn new(
        limits: TransportLimits,
        stats: Arc<TransportStats>,
        replica_events: mpsc::Sender<Event>,
        client_events: FairTx<ClientId, Event>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            client_inbound: Budget::new(
                limits.client_inbound_common_max(),
                Some(stats.client_inbound_total_hwm.clone()),
            ),
            client_outbound: Budget::new(
                limits.client_outbound_total_max,
                Some(stats.client_outbound_total_hwm.clone()),
            ),
            limits,
            stats,
            replica_events,
            client_events,
            table: Arc::default(),
            refused_log: LogEvery::new(),
            handshake_log: LogEvery::new(),
        })
    }

    /// Admit `peer`'s connection `conn`: replaces an older one of the same identity;
    /// `None` if it is a new client beyond the cap. A client gets its quota.
    fn register(
        &self,
        peer: Peer,
        conn: u64,
    ) -> Option<(Registered, oneshot::Receiver<()>, Option<Arc<ClientQuota>>)> {
        let (tx, rx) = oneshot::channel();
        let mut t = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut quota = None;
        let old = match peer {
            Peer::Replica(r) => t.replicas.insert(r.0, (conn, tx)),
            Peer::Client(c) => {
                let max = self.limits.client_connections_max;
                if !t.clients.contains_key(&c) && t.clients.len() >= max {
                    t.clients.retain(|_, s| s.conn.is_some() || !s.quota.idle());
                    if t.clients.len() >= max {
                        return None;
                    }
                }
                let slot = t.clients.entry(c).or_insert_with(|| ClientSlot {
                    conn: None,
                    quota: ClientQuota::new(&self.limits, &self.stats),
                });
                let old = slot.conn.replace((conn, tx));
                quota = Some(slot.quota.clone());
                self.stats
                    .client_connections
                    .store(t.live_clients(), Ordering::Relaxed);
                old
            }
        };
        if old.is_some() {
            // Dropping the old sender ends the old connection.
            self.stats
                .connections_replaced
                .fetch_add(1, Ordering::Relaxed);
        }
        drop(old);
        Some((
            Registered {
                table: self.table.clone(),
                stats: self.stats.clone(),
                peer,
                conn,
            },
            rx,
            quota,
        ))
    }
}

/// Accept connections until the task is dropped; every connection task dies with it.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    dir: Directory,
    shared: Arc<Shared>,
) {
    let handshakes = Arc::new(Semaphore::new(shared.limits.handshakes_max));
    let mut conns = tokio::task::JoinSet::new();
    let mut conn_id = 0u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (tcp, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(crate::replica::BACKOFF_MIN).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            let n = shared
                .stats
                .handshakes_refused
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if shared.handshake_log.now() {
                tracing::warn!(%remote, refused = n, "too many TLS handshakes at once: connection closed");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        conn_id += 1;
        let (acceptor, dir, shared) = (acceptor.clone(), dir.clone(), shared.clone());
        let conn = conn_id;
        conns.spawn(async move {
            let handshake =
                tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(tcp)).await;
            drop(permit);
            let tls = match handshake {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    shared
                        .stats
                        .handshakes_failed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    shared
                        .stats
                        .handshakes_timed_out
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let Some(peer) = peer_of(tls.get_ref().1, &dir) else {
                return;
            };
            let Some((reg, cancel, quota)) = shared.register(peer, conn) else {
                let n = shared
                    .stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if shared.refused_log.now() {
                    tracing::warn!(%remote, ?peer, refused = n,
                        "client connection refused: client_connections_max reached");
                }
                return;
            };
            serve_connection(tls, peer, conn, &shared, cancel, remote, quota).await;
            drop(reg);
        });
    }
}

/// Read `peer`'s frames into the core (and, for a client, write its replies) until the
/// connection ends, fails a limit, or is replaced. A client's frames count against
/// `quota` (its identity's).
pub(crate) async fn serve_connection<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    peer: Peer,
    conn: u64,
    shared: &Shared,
    cancel: oneshot::Receiver<()>,
    remote: SocketAddr,
    quota: Option<Arc<ClientQuota>>,
) {
    let (rd, wr) = tokio::io::split(stream);
    let l = &shared.limits;
    match peer {
        Peer::Replica(_) => {
            let rd = BufReader::with_capacity(REPLICA_READ_BUFFER, rd);
            tokio::select! {
                () = read_replica(rd, peer, shared) => {}
                _ = cancel => {}
            }
        }
        Peer::Client(c) => {
            let quota = quota.unwrap_or_else(|| ClientQuota::new(l, &shared.stats));
            let own = Budget::new(
                l.client_outbound_bytes_max,
                Some(shared.stats.client_outbound_bytes_hwm.clone()),
            );
            let (tx, mut rx) = queue(
                OUTBOUND_QUEUE_MAX,
                own,
                Some(shared.client_outbound.clone()),
            );
            // Connection events take a place in the client's quota too, so the channel
            // never holds more than every client's quota.
            let Some(up) = quota.frames.take(1).await else {
                return;
            };
            if shared
                .client_events
                .try_send(c, Event::ClientUp(c, conn, tx, up))
                .is_err()
            {
                return;
            }
            let rd = BufReader::with_capacity(CLIENT_READ_BUFFER, rd);
            tokio::select! {
                () = read_client(rd, peer, shared, &quota) => {}
                _ = crate::replica::write_frames(wr, &mut rx, CLIENT_WRITE_BUFFER) => {}
                _ = cancel => {}
            }
            if let Some(down) = quota.frames.take(1).await {
                let _ = shared
                    .client_events
                    .try_send(c, Event::ClientDown(c, conn, down));
            }
        }
    }
    tracing::debug!(?peer, %remote, "connection closed");
}

async fn read_replica<R: AsyncRead + Unpin>(mut rd: R, peer: Peer, shared: &Shared) {
    let l = &shared.limits;
    let reader = FrameReader::new(
        l.replica_frame_max,
        l.replica_timing,
        Some(&shared.stats.frames),
    );
    let budget = Budget::new(
        l.replica_inbound_bytes_max,
        Some(shared.stats.replica_inbound_bytes_hwm.clone()),
    );
    loop {
        let frame = match reader.read(&mut rd).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(?peer, error = %e, "replica connection closed");
                return;
            }
        };
        // Waits while this replica's earlier frames still wait for the core.
        let Some(held) = budget.take(frame.len()).await else {
            return;
        };
        if shared
            .replica_events
            .send(Event::Frame(peer, frame, held))
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn read_client<R: AsyncRead + Unpin>(
    mut rd: R,
    peer: Peer,
    shared: &Shared,
    quota: &ClientQuota,
) {
    let Peer::Client(client) = peer else {
        return;
    };
    let l = &shared.limits;
    let reader = FrameReader::new(
        l.client_frame_max,
        l.client_timing,
        Some(&shared.stats.frames),
    );
    // A frame that fits the free room of the client's floor uses only the floor; any
    // other its two maximal requests and the common budget.
    let pick = |len: usize| {
        if len <= quota.floor.max() - quota.floor.used() {
            (quota.floor.clone(), None)
        } else {
            (quota.bytes.clone(), Some(shared.client_inbound.clone()))
        }
    };
    loop {
        // The frame's bytes count against the client's quota and the all-clients budget
        // while they arrive, and it keeps them while it waits for the core (issue 10:
        // many half-sent frames must not hold memory beyond the budget, nor a few keys
        // all of it).
        let (frame, reserved) = match reader.read_reserved_by(&mut rd, &pick).await {
            Ok(Some(Reserved::Frame(f, held))) => (f, held),
            Ok(Some(Reserved::Discarded { .. })) => {
                shared
                    .stats
                    .client_frames_dropped
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(?peer, error = %e, "client connection closed");
                return;
            }
        };
        // Never waits: a client over its share loses the frame (it retransmits).
        let sent = quota.frames.try_take(1).is_some_and(|count| {
            shared
                .client_events
                .try_send(
                    client,
                    Event::Frame(peer, frame, reserved.with_count(count)),
                )
                .is_ok()
        });
        if !sent {
            shared
                .stats
                .client_frames_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::FairRx;
    use rampart_bft::ReplicaId;
    use tokio::io::AsyncWriteExt as _;

    type Channels = (Arc<Shared>, mpsc::Receiver<Event>, FairRx<ClientId, Event>);

    fn shared() -> Channels {
        shared_with(|_| {})
    }

    fn shared_with(f: impl FnOnce(&mut TransportLimits)) -> Channels {
        let wire = WireLimits::from_config(&rampart_bft::Config::new(4));
        let mut limits =
            TransportLimits::new(&wire, &TransportSettings::default()).expect("limits");
        f(&mut limits);
        limits.client_inbound_floor_bytes = client_floor(
            limits.client_inbound_total_max,
            limits.client_connections_max,
        );
        let (rtx, rrx) = mpsc::channel(INBOUND_QUEUE_MAX);
        let (ctx, crx) = crate::queue::fair(limits.client_events_max());
        let stats = Arc::new(TransportStats::default());
        (Shared::new(limits, stats, rtx, ctx), rrx, crx)
    }

    /// The core is stalled (nobody reads its channels). A client sends 50 maximal requests:
    /// two fit its budget, the rest are dropped, and its reader never waits; a replica's
    /// frame still reaches the core's replica channel.
    #[tokio::test]
    async fn a_client_flood_into_a_stalled_core_is_dropped_and_never_blocks_replicas() {
        let (shared, mut replica_rx, _client_rx) = shared();
        let max = shared.limits.client_frame_max;
        let (mut attacker, rd) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            let frame = vec![7u8; max];
            for _ in 0..50 {
                let len = u32::try_from(max).expect("u32").to_le_bytes();
                attacker.write_all(&len).await.expect("hdr");
                attacker.write_all(&frame).await.expect("frame");
            }
        });
        let quota = ClientQuota::new(&shared.limits, &shared.stats);
        let client = read_client(rd, Peer::Client(ClientId(1)), &shared, &quota);
        tokio::time::timeout(Duration::from_secs(20), client)
            .await
            .expect("the client reader never waits for the core");
        writer.await.expect("writer");
        let s = &shared.stats;
        assert_eq!(s.client_frames_dropped.load(Ordering::Relaxed), 48);
        assert_eq!(
            s.client_inbound_bytes_hwm.load(Ordering::Relaxed),
            shared.limits.client_inbound_bytes_max
        );
        assert_eq!(
            shared.client_inbound.used(),
            2 * max,
            "two frames wait for the core"
        );

        let (mut peer, rd) = tokio::io::duplex(1 << 16);
        peer.write_all(&3u32.to_le_bytes()).await.expect("hdr");
        peer.write_all(b"abc").await.expect("frame");
        drop(peer);
        let replica = read_replica(rd, Peer::Replica(ReplicaId(1)), &shared);
        tokio::time::timeout(Duration::from_secs(20), replica)
            .await
            .expect("a replica's reader is not blocked by the client flood");
        assert!(matches!(
            replica_rx.try_recv(),
            Ok(Event::Frame(Peer::Replica(ReplicaId(1)), ref f, _)) if f == b"abc"
        ));
    }

    /// Frames still being read count against the all-clients budget (issue 10, finding 6
    /// follow-up). The budget is two maximal requests; four clients each declare a maximal
    /// request and send seven eighths of it, then stall. Every byte is read, but the bytes
    /// held in partial frames stay within the budget, which covers them; the clients that
    /// found it full have their bytes discarded. Before the fix partial frames were outside
    /// the budget: 3.5 maximal requests held against a budget of 2, and the budget showed 0.
    #[tokio::test]
    async fn partial_client_frames_count_against_the_all_clients_budget() {
        let (shared, _r, mut client_rx) =
            shared_with(|l| l.client_inbound_total_max = 2 * l.client_frame_max);
        let max = shared.limits.client_frame_max;
        let sent = max - max / 8;
        let mut attackers = Vec::new();
        let mut readers = tokio::task::JoinSet::new();
        for i in 0..4 {
            let (mut a, rd) = tokio::io::duplex(1 << 20);
            let len = u32::try_from(max).expect("u32").to_le_bytes();
            a.write_all(&len).await.expect("hdr");
            a.write_all(&vec![1u8; sent]).await.expect("partial frame");
            attackers.push(a);
            let s = shared.clone();
            readers.spawn(async move {
                let quota = ClientQuota::new(&s.limits, &s.stats);
                read_client(rd, Peer::Client(ClientId(i)), &s, &quota).await;
            });
        }
        let f = &shared.stats.frames;
        let received = || {
            f.partial_bytes.load(Ordering::Relaxed)
                + usize::try_from(f.discarded_bytes.load(Ordering::Relaxed)).expect("usize")
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while received() < 4 * sent {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {} bytes read ({} partial, {} read, budget {} used)",
                received(),
                4 * sent,
                f.partial_bytes.load(Ordering::Relaxed),
                f.bytes_read.load(Ordering::Relaxed),
                shared.client_inbound.used()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let partial = f.partial_bytes.load(Ordering::Relaxed);
        let budget = &shared.client_inbound;
        assert!(
            partial <= budget.max(),
            "{partial} bytes held in partial client frames, all-clients budget {}",
            budget.max()
        );
        assert!(
            budget.used() >= partial,
            "the budget counts {} bytes, partial frames hold {partial}",
            budget.used()
        );
        assert!(f.discarded_bytes.load(Ordering::Relaxed) > 0);

        // The attackers leave: everything held for them is given back, and a client's
        // frame gets through again.
        drop(attackers);
        while readers.join_next().await.is_some() {}
        assert_eq!(budget.used(), 0, "released on disconnect");
        assert_eq!(f.partial_bytes.load(Ordering::Relaxed), 0);
        let (mut honest, rd) = tokio::io::duplex(1 << 16);
        honest.write_all(&3u32.to_le_bytes()).await.expect("hdr");
        honest.write_all(b"abc").await.expect("frame");
        drop(honest);
        let quota = ClientQuota::new(&shared.limits, &shared.stats);
        read_client(rd, Peer::Client(ClientId(9)), &shared, &quota).await;
        let queued = client_rx.try_recv();
        assert!(matches!(
            queued,
            Some(Event::Frame(Peer::Client(ClientId(9)), ref f, _)) if f == b"abc"
        ));
        assert_eq!(
            (quota.floor.used(), quota.frames.used()),
            (3, 1),
            "the queued small frame keeps its bytes of the client's floor"
        );
        drop(queued);
        assert_eq!((quota.floor.used(), quota.frames.used()), (0, 0));
    }

    /// Issue 10 (transport probe `scan`): Byzantine keys flooding small frames into a
    /// stalled core cannot take the client channel. Eight attackers each send 2,000 tiny
    /// frames (far more than the 1,024 events a shared FIFO held) and then an honest
    /// client sends one request: it is queued (each key's quota bounds its frames) and
    /// the core takes it among its first nine frames (one key at a time in turn), not
    /// behind every attacker's quota. Before the fix the channel was full and the honest
    /// frame was dropped.
    #[tokio::test]
    async fn flooding_client_keys_cannot_take_the_channel_from_an_honest_client() {
        let (shared, _r, mut client_rx) = shared();
        let attackers = 8u64;
        for i in 0..attackers {
            let (mut a, rd) = tokio::io::duplex(1 << 16);
            let quota = ClientQuota::new(&shared.limits, &shared.stats);
            let writer = tokio::spawn(async move {
                for _ in 0..2000 {
                    a.write_all(&8u32.to_le_bytes()).await.expect("hdr");
                    a.write_all(b"scanscan").await.expect("frame");
                }
            });
            read_client(rd, Peer::Client(ClientId(i)), &shared, &quota).await;
            writer.await.expect("writer");
        }
        let (mut honest, rd) = tokio::io::duplex(1 << 16);
        honest.write_all(&3u32.to_le_bytes()).await.expect("hdr");
        honest.write_all(b"put").await.expect("frame");
        drop(honest);
        let quota = ClientQuota::new(&shared.limits, &shared.stats);
        read_client(rd, Peer::Client(ClientId(99)), &shared, &quota).await;
        // The core wakes up: the honest request is among the first frames it takes.
        let bound = usize::try_from(attackers).expect("usize") + 1;
        let mut taken = 0;
        let mut found = false;
        while let Some(ev) = client_rx.try_recv() {
            taken += 1;
            if matches!(ev, Event::Frame(Peer::Client(ClientId(99)), ref f, _) if f == b"put") {
                found = true;
                break;
            }
        }
        assert!(
            found,
            "honest request not queued ({taken} frames queued, {} dropped)",
            shared.stats.client_frames_dropped.load(Ordering::Relaxed)
        );
        assert!(
            taken <= bound,
            "honest request behind {taken} frames (bound {bound})"
        );
    }

    /// Issue 10 (transport probe `slowloris`): Byzantine keys holding half-sent maximal
    /// requests fill the common all-clients budget, yet an honest client's small request
    /// is still admitted, from its own floor. Before the fix the budget was one shared
    /// pool and the honest frame was discarded.
    #[tokio::test]
    async fn half_sent_frames_of_other_keys_cannot_starve_an_honest_small_request() {
        let (shared, _r, mut client_rx) =
            shared_with(|l| l.client_inbound_total_max = 4 * l.client_frame_max);
        let max = shared.limits.client_frame_max;
        let sent = max - max / 8;
        let mut attackers = Vec::new();
        let mut readers = tokio::task::JoinSet::new();
        for i in 0..4 {
            let (mut a, rd) = tokio::io::duplex(1 << 20);
            a.write_all(&u32::try_from(max).expect("u32").to_le_bytes())
                .await
                .expect("hdr");
            a.write_all(&vec![1u8; sent]).await.expect("partial frame");
            attackers.push(a);
            let s = shared.clone();
            readers.spawn(async move {
                let quota = ClientQuota::new(&s.limits, &s.stats);
                read_client(rd, Peer::Client(ClientId(i)), &s, &quota).await;
            });
        }
        let f = &shared.stats.frames;
        let received = || {
            f.partial_bytes.load(Ordering::Relaxed)
                + usize::try_from(f.discarded_bytes.load(Ordering::Relaxed)).expect("usize")
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while received() < 4 * sent {
            assert!(tokio::time::Instant::now() < deadline, "attack not read");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            f.discarded_bytes.load(Ordering::Relaxed) > 0,
            "the attackers filled the common budget"
        );
        // Budget steps are 64 KiB or more: take the few bytes left directly (as small
        // queued frames of further keys would), so the common budget is exactly full.
        let common = &shared.client_inbound;
        let _rest = common.try_take(common.max() - common.used());
        assert_eq!(common.used(), common.max());
        let (mut honest, rd) = tokio::io::duplex(1 << 16);
        honest.write_all(&3u32.to_le_bytes()).await.expect("hdr");
        honest.write_all(b"put").await.expect("frame");
        drop(honest);
        let quota = ClientQuota::new(&shared.limits, &shared.stats);
        read_client(rd, Peer::Client(ClientId(99)), &shared, &quota).await;
        assert!(
            matches!(
                client_rx.try_recv(),
                Some(Event::Frame(Peer::Client(ClientId(99)), ref f, _)) if f == b"put"
            ),
            "honest request not admitted ({} of {} common bytes used)",
            shared.client_inbound.used(),
            shared.client_inbound.max()
        );
        drop(attackers);
        while readers.join_next().await.is_some() {}
    }

    /// One connection per identity (the newer replaces the older), and at most
    /// `client_connections_max` clients.
    #[tokio::test]
    async fn the_table_admits_one_connection_per_identity_and_caps_clients() {
        let (shared, _r, _c) = shared();
        let mut shared = Arc::try_unwrap(shared).map_err(|_| ()).expect("unique");
        shared.limits.client_connections_max = 2;
        let (_a, mut a_cancel, _) = shared
            .register(Peer::Client(ClientId(1)), 1)
            .expect("first");
        let (_b, b_cancel, _) = shared
            .register(Peer::Client(ClientId(1)), 2)
            .expect("same client again");
        assert!(
            matches!(
                a_cancel.try_recv(),
                Err(oneshot::error::TryRecvError::Closed)
            ),
            "the older connection is told to close"
        );
        let c = shared
            .register(Peer::Client(ClientId(2)), 3)
            .expect("second client");
        assert!(
            shared.register(Peer::Client(ClientId(3)), 4).is_none(),
            "over the cap"
        );
        assert_eq!(shared.stats.client_connections.load(Ordering::Relaxed), 2);
        drop(c);
        assert_eq!(shared.stats.client_connections.load(Ordering::Relaxed), 1);
        assert!(
            shared.register(Peer::Client(ClientId(3)), 5).is_some(),
            "room again"
        );
        // Replicas are not counted against the client cap.
        let _r1 = shared
            .register(Peer::Replica(ReplicaId(1)), 6)
            .expect("replica");
        let _r1b = shared
            .register(Peer::Replica(ReplicaId(1)), 7)
            .expect("replica again");
        assert_eq!(shared.stats.connections_replaced.load(Ordering::Relaxed), 2);
        drop(b_cancel);
    }
}
