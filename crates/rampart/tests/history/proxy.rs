//! A Byzantine cloud: an HTTP proxy in front of one real S3 endpoint (moto_server) that
//! picks its lies.
//!
//! It knows the store's layout (`rampart/v1/m/<name id>` metadata, `rampart/v1/b/<name
//! id>/…` blobs) and, phase by phase (each lasting 0.5–2.5 s, drawn from the seed), turns on
//! a subset of its moves:
//! - **replay**: answer a metadata read with an older signed body it saw for that object;
//!   and, in every phase, half the time, answer a read of deleted metadata with the oldest
//!   body it saw;
//! - **withhold**: for some names, answer reads with 404 and acknowledge writes it drops;
//! - **fake names**: add names that were never written to metadata listings (in every
//!   phase, half the time; always in its own phases), and answer reads of them with garbage;
//! - **refuse CAS**: answer conditional puts with 412;
//! - **slow** (0.05–0.6 s) and **stall** (3–6 s) before answering;
//! - **drop checksums**: strip ETag and checksum headers from answers.
//!
//! Every move it applies is counted, so that the test can show the adversary really acted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest request or response body the proxy buffers (the test's objects are far smaller).
const BODY_BYTES_MAX: usize = 64 << 20;
/// Older metadata bodies remembered per object, for replay.
const REPLAYS_PER_OBJECT_MAX: usize = 16;
/// Most fake names added to one listing page.
const FAKE_NAMES_PER_LISTING_MAX: usize = 300;

/// The adversary's moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Move {
    /// Serve older signed metadata.
    Replay,
    /// Hide some names: 404 on reads, dropped (but acknowledged) writes.
    Withhold,
    /// Invent names in listings, and garbage for them.
    FakeNames,
    /// 412 on conditional puts.
    RefuseCas,
    /// A short delay.
    Slow,
    /// A long delay.
    Stall,
    /// Strip ETag and checksum headers.
    DropChecksums,
}

/// Every move.
pub const MOVES: [Move; 7] = [
    Move::Replay,
    Move::Withhold,
    Move::FakeNames,
    Move::RefuseCas,
    Move::Slow,
    Move::Stall,
    Move::DropChecksums,
];

struct Phase {
    until: Instant,
    moves: Vec<Move>,
    /// Name ids withheld in this phase (decided at first sight).
    withheld: HashMap<String, bool>,
}

struct State {
    rng: ChaCha8Rng,
    phase: Phase,
    phases: u64,
    /// The first phases' moves.
    opening: Vec<Move>,
    /// Metadata bodies seen per object path, oldest first.
    seen: HashMap<String, Vec<Bytes>>,
    /// Names the proxy invented.
    fakes: HashSet<String>,
    applied: BTreeMap<Move, u64>,
}

impl State {
    fn next_phase(&mut self, now: Instant) {
        let dur = Duration::from_millis(self.rng.gen_range(500..2500));
        let moves = if let Some(&m) = self.opening.get(self.phases as usize) {
            // The opening uses every move alone once, in an order drawn from the seed.
            vec![m]
        } else if self.rng.gen_ratio(1, 5) {
            // Then one phase in five is honest; the others combine one to three moves.
            Vec::new()
        } else {
            let k = self.rng.gen_range(1..=3);
            let mut m: Vec<Move> = (0..k)
                .map(|_| MOVES[self.rng.gen_range(0..MOVES.len())])
                .collect();
            m.sort();
            m.dedup();
            m
        };
        self.phase = Phase {
            until: now + dur,
            moves,
            withheld: HashMap::new(),
        };
        self.phases += 1;
    }

    fn active(&mut self, m: Move) -> bool {
        let now = Instant::now();
        if now >= self.phase.until {
            self.next_phase(now);
        }
        self.phase.moves.contains(&m)
    }

    /// Whether to apply `m` now: with probability 1/2 when it is active.
    fn chance(&mut self, m: Move) -> bool {
        self.active(m) && self.rng.gen_bool(0.5)
    }

    /// Counts one application of `m`.
    fn count(&mut self, m: Move) {
        *self.applied.entry(m).or_default() += 1;
    }

    /// [`State::chance`], counting the move when it is applied.
    fn roll(&mut self, m: Move) -> bool {
        let apply = self.chance(m);
        if apply {
            self.count(m);
        }
        apply
    }

    fn withheld(&mut self, name: &str) -> bool {
        if !self.active(Move::Withhold) {
            return false;
        }
        if let Some(&w) = self.phase.withheld.get(name) {
            if w {
                self.count(Move::Withhold);
            }
            return w;
        }
        let w = self.rng.gen_ratio(1, 3);
        self.phase.withheld.insert(name.to_owned(), w);
        if w {
            self.count(Move::Withhold);
        }
        w
    }
}

/// A running Byzantine proxy; stops with the test process.
pub struct Proxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    /// Starts a proxy in front of `upstream` (a moto_server port), drawing its strategy from
    /// `seed`.
    pub fn start(upstream: u16, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut opening = MOVES.to_vec();
        for i in (1..opening.len()).rev() {
            opening.swap(i, rng.gen_range(0..=i));
        }
        let state = Arc::new(Mutex::new(State {
            rng,
            phase: Phase {
                until: Instant::now(),
                moves: Vec::new(),
                withheld: HashMap::new(),
            },
            phases: 0,
            opening,
            seen: HashMap::new(),
            fakes: HashSet::new(),
            applied: BTreeMap::new(),
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(listener, upstream, st));
        });
        Self { port, state }
    }

    /// How many times each move was applied so far.
    pub fn applied(&self) -> BTreeMap<Move, u64> {
        self.state.lock().unwrap().applied.clone()
    }

    /// How many phases the strategy went through.
    pub fn phases(&self) -> u64 {
        self.state.lock().unwrap().phases
    }

    /// Names the proxy invented (store-internal name ids, hex).
    pub fn fake_names(&self) -> usize {
        self.state.lock().unwrap().fakes.len()
    }
}

async fn serve(listener: std::net::TcpListener, upstream: u16, state: Arc<Mutex<State>>) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let client = client.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let client = client.clone();
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, upstream, &client, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// What a request is, in the store's layout.
enum Target {
    /// `rampart/v1/m/<name>`.
    Meta(String),
    /// `rampart/v1/b/<name>/…`.
    Blob(String),
    /// A listing of the metadata prefix.
    MetaListing,
    Other,
}

fn classify(req: &Request<Incoming>) -> Target {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    // Path style: /<bucket>/<key>.
    let key = path.trim_start_matches('/').split_once('/').map(|(_, k)| k);
    match key {
        Some(k) if k.starts_with("rampart/v1/m/") && query.is_empty() => {
            Target::Meta(k["rampart/v1/m/".len()..].to_owned())
        }
        Some(k) if k.starts_with("rampart/v1/b/") => Target::Blob(
            k["rampart/v1/b/".len()..]
                .split('/')
                .next()
                .unwrap_or("")
                .to_owned(),
        ),
        _ if query.contains("list-type=2")
            && (query.contains("rampart%2Fv1%2Fm") || query.contains("rampart/v1/m")) =>
        {
            Target::MetaListing
        }
        _ => Target::Other,
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn s3_error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    let mut r = reply(
        status,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{code}</Message></Error>"
        ),
    );
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    r
}

async fn handle(
    req: Request<Incoming>,
    upstream: u16,
    client: &Client<HttpConnector, Full<Bytes>>,
    state: &Mutex<State>,
) -> Response<Full<Bytes>> {
    let target = classify(&req);
    let method = req.method().clone();
    let conditional =
        req.headers().contains_key("if-match") || req.headers().contains_key("if-none-match");

    // Delays come first, whatever the request.
    let delay = {
        let mut s = state.lock().unwrap();
        if s.roll(Move::Stall) {
            Some(Duration::from_millis(s.rng.gen_range(3000..6000)))
        } else if s.roll(Move::Slow) {
            Some(Duration::from_millis(s.rng.gen_range(50..600)))
        } else {
            None
        }
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }

    // Moves that answer without asking the real cloud.
    {
        let mut s = state.lock().unwrap();
        let name = match &target {
            Target::Meta(n) | Target::Blob(n) => Some(n.clone()),
            _ => None,
        };
        if let Some(name) = &name {
            if s.fakes.contains(name) && method == Method::GET {
                let len = s.rng.gen_range(1..2048);
                let garbage: Vec<u8> = (0..len).map(|_| s.rng.r#gen()).collect();
                s.count(Move::FakeNames);
                return reply(StatusCode::OK, garbage);
            }
            if s.withheld(name) {
                return match method {
                    Method::PUT | Method::POST => {
                        let mut r = reply(StatusCode::OK, Bytes::new());
                        r.headers_mut()
                            .insert("etag", HeaderValue::from_static("\"withheld\""));
                        r
                    }
                    Method::DELETE => reply(StatusCode::NO_CONTENT, Bytes::new()),
                    _ => s3_error(StatusCode::NOT_FOUND, "NoSuchKey"),
                };
            }
        }
        if method == Method::PUT && conditional && s.roll(Move::RefuseCas) {
            return s3_error(StatusCode::PRECONDITION_FAILED, "PreconditionFailed");
        }
    }

    let (parts, body) = req.into_parts();
    let Ok(body) = Limited::new(body, BODY_BYTES_MAX).collect().await else {
        return s3_error(StatusCode::BAD_REQUEST, "IncompleteBody");
    };
    let body = body.to_bytes();
    let path = parts.uri.path().to_owned();
    let uri = format!(
        "http://127.0.0.1:{upstream}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut up = Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in &parts.headers {
        up = up.header(k, v);
    }
    let up = up.body(Full::new(body.clone())).unwrap();
    let Ok(resp) = client.request(up).await else {
        return s3_error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown");
    };
    let (mut rparts, rbody) = resp.into_parts();
    let Ok(rbody) = Limited::new(rbody, BODY_BYTES_MAX).collect().await else {
        return s3_error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown");
    };
    let mut rbody = rbody.to_bytes();

    {
        let mut s = state.lock().unwrap();
        if let Target::Meta(_) = &target {
            // Remember every signed body this cloud was given or served, for replays.
            let seen_now = if method == Method::PUT {
                rparts.status.is_success().then(|| body.clone())
            } else if method == Method::GET && rparts.status == StatusCode::OK {
                Some(rbody.clone())
            } else {
                None
            };
            if let Some(b) = seen_now {
                let list = s.seen.entry(path.clone()).or_default();
                if !list.contains(&b) {
                    list.push(b);
                    if list.len() > REPLAYS_PER_OBJECT_MAX {
                        list.remove(0);
                    }
                }
            }
            if method == Method::GET && rparts.status == StatusCode::OK && s.chance(Move::Replay) {
                let older: Vec<Bytes> = s.seen[&path]
                    .iter()
                    .filter(|b| **b != rbody)
                    .cloned()
                    .collect();
                if !older.is_empty() {
                    let pick = if s.rng.gen_bool(0.5) {
                        0
                    } else {
                        s.rng.gen_range(0..older.len())
                    };
                    rbody = older[pick].clone();
                    s.count(Move::Replay);
                }
            } else if method == Method::GET
                && rparts.status == StatusCode::NOT_FOUND
                && s.rng.gen_bool(0.5)
                && let Some(old) = s.seen.get(&path).and_then(|l| l.first()).cloned()
            {
                // Resurrect metadata that was deleted (by `gc`) with the oldest body seen, in
                // every phase: this lie costs the adversary nothing.
                s.count(Move::Replay);
                rparts.status = StatusCode::OK;
                rparts.headers.clear();
                for (k, v) in [
                    ("content-type", "application/octet-stream"),
                    ("etag", "\"resurrected\""),
                    ("last-modified", "Thu, 01 Jan 2026 00:00:00 GMT"),
                ] {
                    rparts.headers.insert(k, HeaderValue::from_static(v));
                }
                rbody = old;
            }
        }
        if let Target::MetaListing = &target
            && rparts.status == StatusCode::OK
            && (s.active(Move::FakeNames) || s.rng.gen_bool(0.5))
        {
            let text = String::from_utf8_lossy(&rbody).into_owned();
            if let Some(at) = text.rfind("</ListBucketResult>") {
                let n = s.rng.gen_range(1..=FAKE_NAMES_PER_LISTING_MAX);
                let mut extra = String::new();
                for _ in 0..n {
                    let name = hex::encode(s.rng.r#gen::<[u8; 32]>());
                    extra.push_str(&format!(
                        "<Contents><Key>rampart/v1/m/{name}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>\
                         <ETag>&quot;fake&quot;</ETag><Size>512</Size><StorageClass>STANDARD</StorageClass></Contents>"
                    ));
                    s.fakes.insert(name);
                }
                rbody = Bytes::from(format!("{}{extra}{}", &text[..at], &text[at..]));
                s.count(Move::FakeNames);
            }
        }
        if s.roll(Move::DropChecksums) {
            let drop: Vec<_> = rparts
                .headers
                .keys()
                .filter(|k| {
                    let k = k.as_str();
                    k == "etag" || k == "content-md5" || k.starts_with("x-amz-checksum")
                })
                .cloned()
                .collect();
            for k in drop {
                rparts.headers.remove(k);
            }
        }
    }

    rparts.headers.remove(TRANSFER_ENCODING);
    if method != Method::HEAD {
        rparts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(rbody.len()));
    }
    Response::from_parts(rparts, Full::new(rbody))
}
