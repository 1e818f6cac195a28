//! `rampart gateway`: serve the S3 API over the cloud-of-clouds store.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use rampart_gateway::GatewayConfig;
use rampart_store::{CloudOfClouds, StoreConfig};

/// Arguments of `rampart gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address to listen on (default: `listen` in rampart.toml's `[gateway]`, else
    /// 127.0.0.1:9000). Port 0 picks a free port; the address is printed on start.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// Runs the gateway until Ctrl-C or SIGTERM.
pub fn run(args: GatewayArgs, config: &Path) -> Result<()> {
    let mut cfg = StoreConfig::load(config)?;
    let section = cfg.gateway.take().ok_or_else(|| {
        anyhow!(
            "{} has no [gateway] section: add one with [[gateway.access_keys]] \
             (access_key_id, secret_access_key), as `rampart init` writes",
            config.display()
        )
    })?;
    let gw = GatewayConfig::from_table(section.0)?;
    let base = config.parent().unwrap_or(Path::new("."));
    let tls = match (&gw.tls_cert_file, &gw.tls_key_file) {
        (Some(cert), Some(key)) => Some(rampart_gateway::tls_acceptor(
            &base.join(cert),
            &base.join(key),
        )?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let (n, f) = (cfg.n(), (cfg.n() - 1) / 3);
    let store = CloudOfClouds::open(cfg)?;
    let listen = args.listen.unwrap_or(gw.listen);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let ids: Vec<&str> = gw
            .access_keys
            .iter()
            .map(|k| k.access_key_id.as_str())
            .collect();
        // Tests and scripts wait for this line: it means the socket accepts requests.
        let backend = if n == 1 {
            "a single encrypted backend, no fault tolerance".to_owned()
        } else {
            format!("n = {n} clouds, f = {f}")
        };
        println!(
            "rampart gateway listening on {scheme}://{addr} ({backend}); access key ids: {}",
            ids.join(", ")
        );
        std::io::stdout().flush().ok();
        let service = rampart_gateway::service(store, &gw);
        let limits = gw.conn_limits();
        rampart_gateway::serve(
            listener,
            service,
            gw.connections_max,
            limits,
            tls,
            shutdown(),
        )
        .await?;
        eprintln!("rampart gateway: shutting down");
        Ok(())
    })
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
