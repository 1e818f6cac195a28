//! Interoperability with Go's reference implementation: a small Go program
//! (`tests/go/src/rampartverify`) built against Debian's golang-golang-x-mod-dev
//! (golang.org/x/mod/sumdb/note and sumdb/tlog), in GOPATH mode with no module proxy,
//! verifies our checkpoint signature, tiles, entry bundles, inclusion and consistency proofs,
//! and rejects each tampered variant. `scripts/test.sh` installs the Go packages; without
//! them this test fails (it does not skip).

use std::path::{Path, PathBuf};
use std::process::Command;

use rampart_log::{Config, Log, prove_consistency, prove_inclusion, read_checkpoint, read_vkey};

const GOCODE: &str = "/usr/share/gocode";

fn build_verifier(out: &Path) -> PathBuf {
    let go = Command::new("go").arg("version").output();
    assert!(
        go.as_ref().is_ok_and(|o| o.status.success()),
        "Go is missing: install golang-go and golang-golang-x-mod-dev (scripts/test.sh does): {go:?}"
    );
    assert!(
        Path::new(GOCODE)
            .join("src/golang.org/x/mod/sumdb/tlog")
            .is_dir(),
        "golang.org/x/mod is missing from {GOCODE}: install golang-golang-x-mod-dev"
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go");
    let bin = out.join("rampartverify");
    let o = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("rampartverify")
        .env("GOPATH", format!("{}:{GOCODE}", src.display()))
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", out.join("gocache"))
        .current_dir(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    bin
}

struct Case {
    dir: PathBuf,
    vkey: String,
    inclusion: PathBuf,
    consistency: PathBuf,
    old: PathBuf,
}

fn run(bin: &Path, c: &Case) -> Result<String, String> {
    let o = Command::new(bin)
        .arg(&c.dir)
        .arg(&c.vkey)
        .arg(&c.inclusion)
        .arg(&c.consistency)
        .arg(&c.old)
        .output()
        .unwrap();
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn flip(path: &Path, at_from_end: usize) -> Vec<u8> {
    let orig = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut b = orig.clone();
    let i = b.len() - at_from_end;
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    std::fs::write(path, &b).unwrap();
    orig
}

#[test]
fn go_reference_code_verifies_our_log_and_rejects_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = build_verifier(tmp.path());
    let dir = tmp.path().join("log");
    Log::init(
        &dir,
        "example.org/go-interop",
        &tmp.path().join("s"),
        &mut rand_core::OsRng,
    )
    .unwrap();
    let (mut log, _) = Log::open(&dir, Config::default()).unwrap();
    for i in 0..300 {
        log.append(format!("event {i}").as_bytes()).unwrap();
    }
    let old = log.checkpoint().unwrap();
    for i in 300..600 {
        log.append(format!("event {i}").as_bytes()).unwrap();
    }
    log.checkpoint().unwrap();
    drop(log);
    let vkey = read_vkey(&dir).unwrap();
    let (_, cp) = read_checkpoint(&dir, &vkey).unwrap();
    let c = Case {
        dir: dir.clone(),
        vkey,
        inclusion: tmp.path().join("inclusion.txt"),
        consistency: tmp.path().join("consistency.txt"),
        old: tmp.path().join("old.checkpoint"),
    };
    let p = prove_inclusion(&dir, cp.size, &cp.root, 400).unwrap();
    std::fs::write(&c.inclusion, p.to_text(&cp.root)).unwrap();
    let p = prove_consistency(&dir, cp.size, &cp.root, 300).unwrap();
    std::fs::write(&c.consistency, p.to_text()).unwrap();
    std::fs::write(&c.old, &old).unwrap();

    let out = run(&bin, &c).expect("Go verifies the untouched log");
    assert_eq!(
        out.trim(),
        "ok: size 600, 600 leaves, inclusion of 400, consistency from 300"
    );

    // Each tampered variant is rejected, with the reason Go gives.
    let cases: [(PathBuf, usize, &str); 8] = [
        (dir.join("checkpoint"), 5, "checkpoint signature"),
        (
            dir.join("tile/entries/000"),
            3,
            "does not match its level-0 tile",
        ),
        (
            dir.join("tile/entries/002.p/88"),
            3,
            "does not match its level-0 tile",
        ),
        (dir.join("tile/0/001"), 3, "does not match its level-0 tile"),
        (
            dir.join("tile/0/002.p/88"),
            3,
            "does not match its level-0 tile",
        ),
        (dir.join("tile/1/000.p/2"), 3, "level-1 tile hash"),
        (c.inclusion.clone(), 5, "inclusion proof"),
        (c.consistency.clone(), 5, "consistency proof"),
    ];
    for (path, at, want) in cases {
        let orig = flip(&path, at);
        let err = run(&bin, &c).expect_err(&format!("tampered {} accepted", path.display()));
        assert!(err.contains(want), "{}: {err}", path.display());
        std::fs::write(&path, orig).unwrap();
    }
    assert!(run(&bin, &c).is_ok(), "restored");
}
