//! Real S3 (moto_server) and Azure Blob (Azurite) endpoints on 127.0.0.1, started per
//! test on a free port and killed on drop. `scripts/test.sh` installs both and exports
//! their paths; a missing tool fails the test with instructions rather than skipping.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running endpoint.
pub struct Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) => PathBuf::from(p),
        None => {
            let found = std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(fallback))
                    .find(|p| p.is_file())
            });
            found.unwrap_or_else(|| {
                panic!(
                    "{fallback} not found: run ./scripts/test.sh, which installs it and sets {var}"
                )
            })
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until something accepts TCP connections on `port`, for at most 60 s.
fn wait_ready(child: &mut Child, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 60 s");
}

/// Starts moto_server (S3).
pub fn moto() -> Server {
    let bin = tool("RAMPART_MOTO_SERVER", "moto_server");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto_server");
    wait_ready(&mut child, port, "moto_server");
    Server {
        child,
        port,
        _dir: dir,
    }
}

/// Starts Azurite's blob service.
pub fn azurite() -> Server {
    let bin = tool("RAMPART_AZURITE", "azurite-blob");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--silent",
            "--skipApiVersionCheck",
            "--location",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting azurite-blob");
    wait_ready(&mut child, port, "azurite-blob");
    Server {
        child,
        port,
        _dir: dir,
    }
}

/// The well-known Azurite development account key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn python(script: &str) {
    let py = tool("RAMPART_TEST_PYTHON", "python3");
    let out = Command::new(py)
        .args(["-c", script])
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "python setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates a bucket on moto.
pub fn create_bucket(s3: &Server, bucket: &str) {
    python(&format!(
        "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:{}', region_name='us-east-1', \
         aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket='{bucket}')",
        s3.port
    ));
}

/// Creates a container on Azurite.
pub fn create_container(az: &Server, container: &str) {
    python(&format!(
        "from azure.storage.blob import BlobServiceClient; BlobServiceClient.from_connection_string(\
         'DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};\
         BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1;').create_container('{container}')",
        az.port
    ));
}

/// object_store options for a bucket on moto.
pub fn s3_options(s3: &Server) -> std::collections::BTreeMap<String, String> {
    [
        ("aws_endpoint", format!("http://127.0.0.1:{}", s3.port)),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", "test".into()),
        ("aws_secret_access_key", "test".into()),
        ("aws_region", "us-east-1".into()),
        ("aws_virtual_hosted_style_request", "false".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// object_store options for a container on Azurite.
pub fn azure_options(az: &Server) -> std::collections::BTreeMap<String, String> {
    [
        ("azure_storage_account_name", "devstoreaccount1".to_string()),
        ("azure_storage_account_key", AZURITE_KEY.into()),
        (
            "azure_storage_endpoint",
            format!("http://127.0.0.1:{}/devstoreaccount1", az.port),
        ),
        ("azure_allow_http", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
