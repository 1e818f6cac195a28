//! The HTTP service behind `rampart log serve` (feature `http`).
//!
//! Read-only routes mirror the static C2SP layout, so clients cannot tell this server from a
//! plain file server: `GET /checkpoint`, `GET /log.vkey`, `GET /tile/<L>/<N>[.p/<W>]`,
//! `GET /tile/entries/<N>[.p/<W>]`. Proofs are computed on demand against the latest
//! checkpoint: `GET /proof/inclusion/<index>`, `GET /proof/consistency/<old-size>`.
//!
//! `POST /add` appends: `Authorization: Bearer <token>` (compared in constant time), body of
//! at most [`BODY_BYTES_MAX`] bytes holding at most [`APPEND_LINES_MAX`] newline-separated
//! entries. The entries are sealed, fsynced and checkpointed before the response
//! (`<first-index> <count> <tree-size>`), so a 200 means durable and published.
//!
//! At most [`REQUESTS_IN_FLIGHT_MAX`] requests are served at once, so request memory is
//! bounded by `REQUESTS_IN_FLIGHT_MAX × BODY_BYTES_MAX`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::merkle::TilePath;
use crate::{ENTRY_DATA_MAX, Log, layout};

/// Largest request body accepted by `POST /add`.
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Most entries one `POST /add` may append.
pub const APPEND_LINES_MAX: usize = 1000;
/// Requests handled at once. Worst-case request memory: 64 × 1 MiB bodies.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64;
/// Largest tile file served (a full entry bundle of maximal entries).
const TILE_BYTES_MAX: usize = 256 * (2 + crate::entry::ENTRY_BYTES_MAX);

/// Shared state of the service.
pub struct ServeState {
    dir: PathBuf,
    log: Mutex<Log>,
    token_hash: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ServeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeState")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ServeState {
    /// Wraps an open log; `token` authorises appends.
    pub fn new(dir: PathBuf, log: Log, token: &str) -> Self {
        let token_hash = Zeroizing::new(Sha256::digest(token.as_bytes()).into());
        ServeState {
            dir,
            log: Mutex::new(log),
            token_hash,
        }
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(presented) = v.strip_prefix("Bearer ") else {
            return false;
        };
        // Hash both sides so the comparison is constant-time whatever the lengths.
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        h.ct_eq(&*self.token_hash).into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The service's routes.
pub fn router(state: Arc<ServeState>) -> Router {
    Router::new()
        .route("/checkpoint", get(checkpoint))
        .route("/log.vkey", get(vkey))
        .route("/tile/{*rest}", get(tile))
        .route("/proof/inclusion/{index}", get(inclusion))
        .route("/proof/consistency/{old}", get(consistency))
        .route("/add", post(add))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        // Bounds memory: at most this many requests (each body ≤ BODY_BYTES_MAX) at once;
        // others wait in the accept queue without their bodies being read.
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            REQUESTS_IN_FLIGHT_MAX,
        ))
        .with_state(state)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn blocking<F>(f: F) -> Response
where
    F: FnOnce() -> Response + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
    }
}

/// `Cache-Control` of the checkpoint: it changes with every append, so caches must revalidate.
pub const CHECKPOINT_CACHE: &str = "no-cache";
/// `Cache-Control` of tiles and bundles: a tile path (full or partial width) never changes
/// content, so tlog-tiles lets clients and caches keep it indefinitely.
pub const TILE_CACHE: &str = "public, max-age=31536000, immutable";

fn serve_file(
    path: PathBuf,
    max: usize,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    match crate::fsutil::read_bounded(&path, max) {
        Ok(b) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, cache),
            ],
            b,
        )
            .into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            text(StatusCode::NOT_FOUND, "not found\n")
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read\n"),
    }
}

async fn checkpoint(State(s): State<Arc<ServeState>>) -> Response {
    blocking(move || {
        serve_file(
            s.dir.join(layout::CHECKPOINT),
            crate::checkpoint::CHECKPOINT_BYTES_MAX,
            "text/plain; charset=utf-8",
            CHECKPOINT_CACHE,
        )
    })
    .await
}

async fn vkey(State(s): State<Arc<ServeState>>) -> Response {
    blocking(move || {
        serve_file(
            s.dir.join(layout::VKEY),
            1024,
            "text/plain; charset=utf-8",
            CHECKPOINT_CACHE,
        )
    })
    .await
}

async fn tile(State(s): State<Arc<ServeState>>, UrlPath(rest): UrlPath<String>) -> Response {
    // Only canonical C2SP tile paths map to files: no traversal, no secrets.
    let Some(t) = TilePath::parse(&format!("tile/{rest}")) else {
        return text(StatusCode::BAD_REQUEST, "malformed tile path\n");
    };
    blocking(move || {
        serve_file(
            s.dir.join(t.path()),
            TILE_BYTES_MAX,
            "application/octet-stream",
            TILE_CACHE,
        )
    })
    .await
}

async fn inclusion(State(s): State<Arc<ServeState>>, UrlPath(index): UrlPath<String>) -> Response {
    let Ok(index) = index.parse::<u64>() else {
        return text(StatusCode::BAD_REQUEST, "index must be a decimal integer\n");
    };
    blocking(move || {
        let log = s.lock();
        let (_, root) = log.checkpoint_head();
        match log.prove_inclusion(index) {
            Ok(p) => text(StatusCode::OK, p.to_text(&root)),
            Err(e @ crate::Error::NotInTree { .. }) => {
                text(StatusCode::NOT_FOUND, format!("{e}\n"))
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        }
    })
    .await
}

async fn consistency(State(s): State<Arc<ServeState>>, UrlPath(old): UrlPath<String>) -> Response {
    let Ok(old) = old.parse::<u64>() else {
        return text(StatusCode::BAD_REQUEST, "size must be a decimal integer\n");
    };
    blocking(move || {
        let log = s.lock();
        match log.prove_consistency(old) {
            Ok(p) => text(StatusCode::OK, p.to_text()),
            Err(e @ crate::Error::NotInTree { .. }) => {
                text(StatusCode::NOT_FOUND, format!("{e}\n"))
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        }
    })
    .await
}

async fn add(State(s): State<Arc<ServeState>>, headers: HeaderMap, body: Bytes) -> Response {
    if !s.authorised(&headers) {
        return text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
    }
    // Validate the whole request before appending anything: all or nothing.
    let body = body.strip_suffix(b"\n").unwrap_or(&body).to_vec();
    if body.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "empty body: send one entry per line\n",
        );
    }
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if lines.len() > APPEND_LINES_MAX {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {APPEND_LINES_MAX} entries per request\n"),
        );
    }
    if let Some(i) = lines.iter().position(|l| l.len() > ENTRY_DATA_MAX) {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("line {} exceeds {ENTRY_DATA_MAX} bytes\n", i + 1),
        );
    }
    let owned: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
    blocking(move || {
        let mut log = s.lock();
        let first = log.size();
        for l in &owned {
            if let Err(e) = log.append(l) {
                return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"));
            }
        }
        if let Err(e) = log.checkpoint() {
            tracing::error!(error = %e, "checkpoint after append failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"));
        }
        text(
            StatusCode::OK,
            format!("{first} {} {}\n", owned.len(), log.size()),
        )
    })
    .await
}

/// Serves until the listener fails or `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServeState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
