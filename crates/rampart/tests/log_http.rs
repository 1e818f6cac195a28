//! `rampart log serve` end to end: the real binary on a free 127.0.0.1 port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TOKEN: &str = "correct-horse-battery-staple";

struct Server {
    child: Child,
    addr: String,
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    secret: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let secret = tmp.path().join("secret");
    let st = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "log",
            "init",
            dir.to_str().unwrap(),
            "--origin",
            "http.test",
            "--secret-out",
        ])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(st.status.success());
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "log",
            "serve",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--token-file",
        ])
        .arg(&token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Readiness: the server prints its address once bound. Bounded wait, no sleeps.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(a) = line.strip_prefix("listening on http://") {
                let _ = tx.send(a.to_owned());
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            panic!("server not ready within 20 s");
        }
    };
    Server {
        child,
        addr,
        _tmp: tmp,
        dir,
        secret,
    }
}

/// Minimal HTTP/1.1 client: returns (status, body).
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body; ignore a reset on write.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |p| p + 4);
    (status, resp[split..].to_vec())
}

/// The response head (status line and headers), lower-cased.
fn head(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).to_lowercase();
    text.split("\r\n\r\n").next().unwrap_or("").to_owned()
}

fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    request(addr, "GET", path, &[], b"")
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn serves_checkpoints_tiles_proofs_and_authenticated_appends() {
    let srv = start();
    let a = srv.addr.as_str();
    let vkey = rampart_log::read_vkey(&srv.dir).unwrap();

    let (st, body) = get(a, "/checkpoint");
    assert_eq!(st, 200);
    let cp =
        rampart_log::verify_checkpoint(&body, &vkey, &rampart_log::WitnessPolicy::none()).unwrap();
    assert_eq!(cp.size, 0);

    // Authentication.
    assert_eq!(request(a, "POST", "/add", &[], b"x\n").0, 401);
    let wrong = bearer("correct-horse-battery-stapl3");
    assert_eq!(
        request(a, "POST", "/add", &[("Authorization", &wrong)], b"x\n").0,
        401
    );
    let auth = bearer(TOKEN);
    let h = [("Authorization", auth.as_str())];
    let (st, body) = request(
        a,
        "POST",
        "/add",
        &h,
        b"door 1 opened\nlight 7 dimmed\nrecord 9 read\n",
    );
    assert_eq!(
        (st, String::from_utf8_lossy(&body).as_ref()),
        (200, "0 3 3\n")
    );

    // Bounds: body size, entries per request, empty body. Nothing half-appended.
    let big = vec![b'a'; rampart_log::http::BODY_BYTES_MAX + 10];
    assert_eq!(request(a, "POST", "/add", &h, &big).0, 413);
    let many = "x\n".repeat(rampart_log::http::APPEND_LINES_MAX + 1);
    assert_eq!(request(a, "POST", "/add", &h, many.as_bytes()).0, 413);
    assert_eq!(request(a, "POST", "/add", &h, b"").0, 400);

    let (st, body) = get(a, "/checkpoint");
    assert_eq!(st, 200);
    let cp =
        rampart_log::verify_checkpoint(&body, &vkey, &rampart_log::WitnessPolicy::none()).unwrap();
    assert_eq!(cp.size, 3, "rejected requests appended nothing");

    // Tiles as a static server would serve them.
    // tlog-tiles media types and caching.
    let h = head(a, "/checkpoint");
    assert!(
        h.contains("\r\ncontent-type: text/plain; charset=utf-8"),
        "{h}"
    );
    assert!(h.contains("\r\ncache-control: no-cache"), "{h}");
    let h = head(a, "/tile/0/000.p/3");
    assert!(
        h.contains("\r\ncontent-type: application/octet-stream"),
        "{h}"
    );
    assert!(
        h.contains("\r\ncache-control: public, max-age=31536000, immutable"),
        "{h}"
    );
    let (st, tile) = get(a, "/tile/0/000.p/3");
    assert_eq!((st, tile.len()), (200, 96));
    let (st, bundle) = get(a, "/tile/entries/000.p/3");
    assert_eq!(st, 200);
    let entries = rampart_log::bundle_entries(&bundle).unwrap();
    assert_eq!(
        rampart_log::EntryRef::decode(entries[2]).unwrap().data,
        b"record 9 read"
    );
    for bad in [
        "/tile/../signing.key",
        "/tile/0/..%2f..%2fsigning.key",
        "/tile/0/3",
        "/tile/x/000",
    ] {
        let (st, _) = get(a, bad);
        assert!(st == 400 || st == 404, "{bad}: {st}");
    }
    assert_eq!(get(a, "/signing.key").0, 404);
    assert_eq!(get(a, "/mac.key").0, 404);

    // Proofs.
    let (st, proof) = get(a, "/proof/inclusion/2");
    assert_eq!(st, 200);
    assert!(
        String::from_utf8_lossy(&proof)
            .starts_with("rampart-log inclusion proof v1\nindex 2\nsize 3\n")
    );
    assert_eq!(get(a, "/proof/inclusion/3").0, 404);
    assert_eq!(get(a, "/proof/inclusion/-1").0, 400);
    assert_eq!(get(a, "/proof/consistency/1").0, 200);
    assert_eq!(get(a, "/proof/consistency/4").0, 404);

    // Stop the server; the log verifies with the secret.
    let mut srv = srv;
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "log",
            "verify",
            srv.dir.to_str().unwrap(),
            "--key",
            srv.secret.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: 3 entries"));
}
