//! Attacks on a replica's transport over real sockets (127.0.0.1, free ports), each against
//! a running local cluster, each checked on the replica's transport counters rather than on
//! timing (issue 10, finding 6; ADR 0305):
//!
//! - (a) a peer declares a huge frame and trickles bytes: the frame buffer follows the bytes
//!   that arrived; a client may not even declare a replica-sized frame;
//! - (b) more connections than the caps: handshakes beyond `handshakes_max` and clients
//!   beyond `client_connections_max` are closed, one connection per identity survives, and
//!   an honest client keeps completing operations;
//! - (c) a client with a valid key floods read-only requests for a large value and never
//!   reads the replies: what each replica queues for it stays within its byte budget, and an
//!   honest client still completes;
//! - (d) deadlines: a TLS handshake that never finishes, a frame that never completes and a
//!   client connection that never sends are closed.
//!
//! Readiness waits are deadlines on conditions, never fixed sleeps.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rampart_bft::{ClientId, Ed25519Authenticator, Message, ReplicaId, Request, RequestSeq};
use rampart_cluster::client::{ClientOptions, KvClient};
use rampart_cluster::config::{Cluster, TransportSettings};
use rampart_cluster::frame::put_frame;
use rampart_cluster::listen::{TransportLimits, TransportStats};
use rampart_cluster::local::{LocalCluster, LocalOptions};
use rampart_kv::{KvOp, KvRequest};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(10);

async fn start(dir: &std::path::Path, clients: u64, transport: TransportSettings) -> LocalCluster {
    let opts = LocalOptions {
        clients,
        durable: false,
        transport,
        ..LocalOptions::default()
    };
    LocalCluster::start(dir, &opts).await.expect("start")
}

fn limits(c: &Cluster) -> TransportLimits {
    let wire = rampart_bft::WireLimits::from_config(&c.bft_config());
    TransportLimits::new(&wire, &c.transport).expect("limits")
}

fn client(c: &Cluster, id: u64) -> KvClient {
    let key = c.client_key(ClientId(id)).expect("key");
    KvClient::connect(c, ClientId(id), key, ClientOptions::default()).expect("client")
}

async fn tls_to(
    c: &Cluster,
    replica: usize,
    key: &SigningKey,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let cfg =
        rampart_cluster::tls::client_config(key, &c.replica_keys[replica]).expect("tls config");
    let tcp = TcpStream::connect(c.replicas[replica].addr)
        .await
        .expect("connect");
    tokio_rustls::TlsConnector::from(cfg)
        .connect(rampart_cluster::tls::server_name(), tcp)
        .await
        .expect("handshake")
}

/// Whether the peer closed the stream within `d` (end of stream or a reset).
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn stats(local: &LocalCluster, id: u8) -> std::sync::Arc<TransportStats> {
    local.transport_stats(ReplicaId(id)).expect("stats")
}

/// (a) A Byzantine replica (replica 3's key, replica 3 itself down) declares a frame of the
/// replica limit (about 36 MiB at n = 4) and trickles 256 KiB; a client declares a frame
/// above the client limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_frame_length_holds_only_the_bytes_that_arrived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut local = start(dir.path(), 2, TransportSettings::default()).await;
    let c = local.cluster.clone();
    let l = limits(&c);
    assert!(l.replica_frame_max > 30 << 20, "{}", l.replica_frame_max);
    assert!(l.client_frame_max < 1 << 20, "{}", l.client_frame_max);
    local.crash(ReplicaId(3));
    let s0 = stats(&local, 0);

    let key3 = c.replica_key(ReplicaId(3)).expect("key");
    let mut byz = tls_to(&c, 0, &key3).await;
    let declared = u32::try_from(l.replica_frame_max).expect("u32");
    byz.write_all(&declared.to_le_bytes())
        .await
        .expect("header");
    let sent = 256 << 10;
    for _ in 0..sent / 4096 {
        byz.write_all(&[0x5a; 4096]).await.expect("trickle");
        byz.flush().await.expect("flush");
    }
    wait_until("the trickled bytes to reach replica 0", || {
        s0.frames.partial_bytes.load(Ordering::Relaxed) >= sent
    })
    .await;
    let hwm = s0.frames.buffer_bytes_hwm.load(Ordering::Relaxed);
    assert!(
        hwm <= 2 * sent + rampart_cluster::frame::FRAME_READ_STEP,
        "replica 0 holds a {hwm}-byte frame buffer for {sent} bytes received \
         (declared {declared})"
    );

    // A client may not declare more than one maximal request (it would have been allowed
    // a replica-sized frame before).
    let key1 = c.client_key(ClientId(1)).expect("key");
    let mut big = tls_to(&c, 0, &key1).await;
    let too_large = u32::try_from(l.client_frame_max + 1).expect("u32");
    big.write_all(&too_large.to_le_bytes())
        .await
        .expect("header");
    big.flush().await.expect("flush");
    assert!(
        closed_within(&mut big, DEADLINE).await,
        "an oversize client frame closes the connection"
    );
    assert!(s0.frames.too_large.load(Ordering::Relaxed) >= 1);

    // The service is unaffected.
    let honest = client(&c, 0);
    honest.put(b"after", b"trickle").await.expect("put");
    drop(byz);
}

/// (b) Caps: 4 handshakes, 3 client connections. The honest client holds one slot; an
/// attacker with three client keys and plain TCP tries to take the rest and more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_connections_are_refused_and_honest_clients_still_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let transport = TransportSettings {
        client_connections_max: 3,
        handshakes_max: 4,
        ..TransportSettings::default()
    };
    let local = start(dir.path(), 4, transport).await;
    let c = local.cluster.clone();
    let s0 = stats(&local, 0);
    let honest = client(&c, 0);
    honest.put(b"k", b"before").await.expect("put");

    // One connection per identity: each new connection with key 1 closes the previous.
    let key1 = c.client_key(ClientId(1)).expect("key");
    let mut prev = tls_to(&c, 0, &key1).await;
    for _ in 0..4 {
        let next = tls_to(&c, 0, &key1).await;
        assert!(
            closed_within(&mut prev, DEADLINE).await,
            "an older connection of the same client is closed"
        );
        prev = next;
    }
    assert!(s0.connections_replaced.load(Ordering::Relaxed) >= 4);
    // Key 2 takes the last slot; key 3 is one client too many.
    let key2 = c.client_key(ClientId(2)).expect("key");
    let mut third = tls_to(&c, 0, &key2).await;
    wait_until("three client connections at replica 0", || {
        s0.client_connections.load(Ordering::Relaxed) == 3
    })
    .await;
    let key3 = c.client_key(ClientId(3)).expect("key");
    let mut fourth = tls_to(&c, 0, &key3).await;
    assert!(
        closed_within(&mut fourth, DEADLINE).await,
        "a client beyond client_connections_max is closed"
    );
    assert_eq!(s0.connections_refused.load(Ordering::Relaxed), 1);
    assert_eq!(s0.client_connections.load(Ordering::Relaxed), 3);

    // Ten plain TCP connections that never start a handshake: four hold the handshake
    // slots (until the handshake deadline), the six others are closed at once.
    let mut raw = Vec::new();
    for _ in 0..10 {
        raw.push(
            TcpStream::connect(c.replicas[0].addr)
                .await
                .expect("connect"),
        );
    }
    wait_until("six refused handshakes", || {
        s0.handshakes_refused.load(Ordering::Relaxed) >= 6
    })
    .await;
    let mut closed = 0;
    for r in &mut raw {
        if closed_within(r, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(closed >= 6, "{closed} of 10 closed");

    // The connections already admitted are untouched and the service still works.
    honest
        .put(b"k", b"after")
        .await
        .expect("put during the attack");
    assert_eq!(
        honest.get(b"k", false).await.expect("get"),
        Some(b"after".to_vec())
    );
    assert!(
        !closed_within(&mut third, Duration::from_millis(100)).await,
        "an admitted client stays connected"
    );
    drop(prev);
}

/// (c) Client 1 floods all replicas with read-only scans returning 240 KiB and never reads:
/// without a byte bound each replica would queue up to 1024 such replies (240 MiB) for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_gets_no_more_than_its_queue_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = start(dir.path(), 2, TransportSettings::default()).await;
    let c = local.cluster.clone();
    let l = limits(&c);
    let honest = client(&c, 0);
    let puts = (0..4u8)
        .map(|i| KvOp::Put {
            key: vec![b'b', i],
            value: vec![0x42; 60 << 10],
        })
        .collect();
    honest.execute(puts, false).await.expect("put 4 × 60 KiB");

    let key1 = c.client_key(ClientId(1)).expect("key");
    let auth =
        Ed25519Authenticator::new(key1.clone(), c.replica_keys.clone(), c.client_keys.clone());
    let op = KvRequest {
        ops: vec![KvOp::Scan {
            prefix: b"b".to_vec(),
            limit: 4,
        }],
    }
    .encode();
    let mut wire = Vec::new();
    for seq in 1..=300u64 {
        let r = Request::new_signed(&auth, ClientId(1), RequestSeq(seq), true, op.clone());
        put_frame(&mut wire, &Message::Request(r).encode());
    }
    let mut floods = Vec::new();
    for j in 0..c.n() {
        let mut s = tls_to(&c, j, &key1).await;
        let wire = wire.clone();
        floods.push(tokio::spawn(async move {
            // Written, never read: the replies pile up on the replica's side.
            let _ = s.write_all(&wire).await;
            let _ = s.flush().await;
            std::future::pending::<()>().await;
            drop(s);
        }));
    }
    let all: Vec<_> = (0..4).map(|j| stats(&local, j)).collect();
    wait_until("every replica to fill client 1's queue", || {
        all.iter().all(|s| {
            s.outbound_frames_dropped.load(Ordering::Relaxed) > 0
                || s.client_outbound_bytes_hwm.load(Ordering::Relaxed) > l.client_outbound_bytes_max
        })
    })
    .await;
    // An honest client completes while the flood sits in the replicas' queues.
    for i in 0..10u32 {
        honest
            .put(format!("h{i}").as_bytes(), b"v")
            .await
            .expect("honest put during the flood");
    }
    for (j, s) in all.iter().enumerate() {
        let out = s.client_outbound_bytes_hwm.load(Ordering::Relaxed);
        assert!(
            out <= l.client_outbound_bytes_max,
            "replica {j} queued {out} bytes for one client (cap {})",
            l.client_outbound_bytes_max
        );
        let inb = s.client_inbound_bytes_hwm.load(Ordering::Relaxed);
        assert!(inb <= l.client_inbound_bytes_max, "replica {j}: {inb}");
        let total = s.client_outbound_total_hwm.load(Ordering::Relaxed);
        assert!(total <= l.client_outbound_total_max, "replica {j}: {total}");
    }
    for f in floods {
        f.abort();
    }
}

/// (d) With short deadlines: a handshake that never starts or never finishes, a frame that
/// never completes, and an authenticated client that never sends are all closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_handshakes_frames_and_idle_clients_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let transport = TransportSettings {
        handshake_timeout_ms: 300,
        frame_timeout_ms: 300,
        frame_rate_min_bytes_per_sec: 1 << 30,
        client_idle_timeout_ms: 600,
        ..TransportSettings::default()
    };
    let local = start(dir.path(), 3, transport).await;
    let c = local.cluster.clone();
    let s0 = stats(&local, 0);

    // Connects and sends nothing.
    let mut silent = TcpStream::connect(c.replicas[0].addr)
        .await
        .expect("connect");
    assert!(closed_within(&mut silent, DEADLINE).await);
    // Starts a ClientHello record (declares 512 bytes) and stops after 10.
    let mut partial = TcpStream::connect(c.replicas[0].addr)
        .await
        .expect("connect");
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
        .await
        .expect("partial hello");
    assert!(closed_within(&mut partial, DEADLINE).await);
    assert_eq!(s0.handshakes_timed_out.load(Ordering::Relaxed), 2);

    // Authenticated, then a frame that never completes (slow loris).
    let key1 = c.client_key(ClientId(1)).expect("key");
    let mut loris = tls_to(&c, 0, &key1).await;
    loris.write_all(&1000u32.to_le_bytes()).await.expect("hdr");
    loris.write_all(&[0u8; 10]).await.expect("bytes");
    loris.flush().await.expect("flush");
    assert!(closed_within(&mut loris, DEADLINE).await);
    assert_eq!(s0.frames.slow.load(Ordering::Relaxed), 1);

    // Authenticated and silent.
    let key2 = c.client_key(ClientId(2)).expect("key");
    let mut idle = tls_to(&c, 0, &key2).await;
    assert!(closed_within(&mut idle, DEADLINE).await);
    assert!(s0.frames.idle.load(Ordering::Relaxed) >= 1);

    // Honest clients live with these deadlines (they reconnect when idle-closed).
    let honest = client(&c, 0);
    honest.put(b"k", b"v").await.expect("put");
    assert_eq!(
        honest.get(b"k", false).await.expect("get"),
        Some(b"v".to_vec())
    );
}
