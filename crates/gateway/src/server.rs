//! The HTTP server: `s3s` over hyper, with SigV4 authentication and a connection limit.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rampart_store::CloudOfClouds;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use s3s::auth::{S3Auth, SecretKey};
use s3s::config::{S3Config, StaticConfigProvider};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Result, s3_error};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use futures::future::BoxFuture;
use s3s::{HttpError, HttpResponse};
use tracing::Instrument;

use crate::GatewayError;
use crate::config::GatewayConfig;
use crate::conn::{self, Activity, ConnLimits, PerAddress, Watched};
use crate::guard;
use crate::s3::Gateway;

/// Largest XML request body (`CompleteMultipartUpload` of 10,000 parts is about 1 MiB).
pub const XML_BODY_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Builds the S3 service: the gateway, Signature V4 with the configured keys (unsigned
/// requests are refused by `s3s`'s default access check), and bounded XML bodies.
pub fn service(store: CloudOfClouds, cfg: &GatewayConfig) -> S3Service {
    let auth = AccessKeys(
        cfg.access_keys
            .iter()
            .map(|k| {
                (
                    k.access_key_id.clone(),
                    SecretKey::from(k.secret_access_key.as_str()),
                )
            })
            .collect(),
    );
    let mut s3_cfg = S3Config::default();
    s3_cfg.xml_max_body_size = XML_BODY_BYTES_MAX;
    s3_cfg.post_object_max_file_size = 0;
    let gateway = Gateway::new(store, cfg.upload_bytes_max, cfg.transfers_max)
        .with_min_body_rate(cfg.min_body_rate());
    let mut b = S3ServiceBuilder::new(gateway);
    b.set_auth(auth);
    b.set_config(Arc::new(StaticConfigProvider::new(Arc::new(s3_cfg))));
    b.build()
}

/// The configured credentials. `s3s` checks the signature with the secret returned here
/// (in constant time); an unknown id gets `InvalidAccessKeyId`, as from S3.
struct AccessKeys(HashMap<String, SecretKey>);

#[async_trait::async_trait]
impl S3Auth for AccessKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.0.get(access_key).cloned().ok_or_else(|| {
            s3_error!(
                InvalidAccessKeyId,
                "the access key id is not in this gateway's configuration"
            )
        })
    }
}

/// `service` behind the checks of [`crate::guard`]: what they refuse never reaches
/// `s3s`, and every response carries a request id (logged with the request's events).
#[derive(Clone)]
struct Guarded(S3Service);

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Guarded {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = BoxFuture<'static, Result<HttpResponse, HttpError>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let id = guard::request_id();
        let span = tracing::info_span!("s3", request_id = %id);
        if let Err(e) = guard::check(&req) {
            span.in_scope(|| tracing::info!(code = e.code().as_str(), "request refused"));
            return Box::pin(std::future::ready(Ok(guard::error_response(e, &id))));
        }
        let inner = self.0.clone();
        Box::pin(
            async move {
                let resp = inner.call(req.map(s3s::Body::from)).await?;
                Ok(guard::finish(resp, &id))
            }
            .instrument(span),
        )
    }
}

/// Longest a client may take to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTPS acceptor from a PEM certificate chain and private key (rustls with `ring`;
/// TLS 1.2 and 1.3; ALPN h2 and http/1.1). Refuses a key file that others can read.
pub fn tls_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, GatewayError> {
    let tls = |reason: String| GatewayError::Tls { reason };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key_file)
            .map_err(|e| tls(format!("reading {}: {e}", key_file.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(tls(format!(
                "{} is readable by others (mode {:o}): chmod 600 it",
                key_file.display(),
                mode & 0o777
            )));
        }
    }
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            tls(format!(
                "reading certificates from {}: {e}",
                cert_file.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(tls(format!("{} holds no certificate", cert_file.display())));
    }
    // The error names the file only: a parse error must not echo key bytes.
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|_| {
        tls(format!(
            "{} holds no usable PEM private key",
            key_file.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls(format!("certificate and key do not fit: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves `service` on `listener` until `shutdown` completes, at most
/// `connections_max` connections at a time (further ones wait in the backlog) and at most
/// `limits.per_address_max` from one client address (further ones get `503 SlowDown`
/// and are closed). With `tls`, every connection must complete a TLS handshake within
/// [`TLS_HANDSHAKE_TIMEOUT`] first; plain HTTP is never served on that listener. HTTP/1
/// request heads must arrive within `limits.header_timeout` (also the idle keep-alive
/// limit), and a connection that moves no byte for `limits.idle_timeout` is closed.
pub async fn serve(
    listener: TcpListener,
    service: S3Service,
    connections_max: usize,
    limits: ConnLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let permits = Arc::new(Semaphore::new(connections_max));
    let per_address = PerAddress::default();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (mut stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: report, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let Some(slot) = per_address.acquire(peer.ip(), limits.per_address_max) else {
            tracing::info!(%peer, "refused a connection: too many from this address");
            if tls.is_none() {
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let refuse = async {
                        let _ = stream.write_all(conn::TOO_MANY_CONNECTIONS).await;
                        let _ = stream.shutdown().await;
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), refuse).await;
                    drop(permit);
                });
            }
            continue;
        };
        let service = Guarded(service.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let activity = Activity::new();
            let stream = Watched::new(stream, activity.clone());
            let run = async {
                match tls {
                    None => serve_h1(stream, service, &limits).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => {
                                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                if h2 {
                                    http2::Builder::new(TokioExecutor::new())
                                        .timer(TokioTimer::new())
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await
                                } else {
                                    serve_h1(stream, service, &limits).await
                                }
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                Ok(())
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                Ok(())
                            }
                        }
                    }
                }
            };
            tokio::select! {
                r = run => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                _ = conn::watchdog(activity, limits.idle_timeout) => {
                    tracing::debug!(%peer, "closed an idle connection");
                }
            }
            drop(slot);
            drop(permit);
        });
    }
}

async fn serve_h1<IO>(io: IO, service: Guarded, limits: &ConnLimits) -> Result<(), hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .await
}
