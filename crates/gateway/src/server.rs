//! The HTTP server: `s3s` over hyper, with SigV4 authentication and a connection limit.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use rampart_store::CloudOfClouds;
use s3s::auth::{S3Auth, SecretKey};
use s3s::config::{S3Config, StaticConfigProvider};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Result, s3_error};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::GatewayError;
use crate::config::GatewayConfig;
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
    let mut b = S3ServiceBuilder::new(Gateway::new(store, cfg.upload_bytes_max, cfg.transfers_max));
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

/// Serves `service` on `listener` until `shutdown` completes, at most
/// `connections_max` connections at a time (further ones wait in the backlog).
pub async fn serve(
    listener: TcpListener,
    service: S3Service,
    connections_max: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let permits = Arc::new(Semaphore::new(connections_max));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
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
        let service = service.clone();
        tokio::spawn(async move {
            let conn = ConnBuilder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = conn {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
}
