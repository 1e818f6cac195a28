//! The store as a new user meets it: the real `rampart` binary on local-directory clouds.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{files_under, write_blocks};

fn rampart(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .current_dir(dir)
        .env_remove("RAMPART_CONFIG")
        .output()
        .expect("running rampart")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = rampart(dir, args);
    assert!(
        out.status.success(),
        "rampart {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with exactly one line on stderr; returns that line.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = rampart(dir, args);
    assert!(!out.status.success(), "rampart {args:?} should have failed");
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "rampart {args:?}: want one error line, got: {err}"
    );
    assert!(lines[0].starts_with("rampart: error: "), "{err}");
    lines[0].to_owned()
}

fn digest_file(p: &Path) -> [u8; 32] {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = rampart_crypto::hash::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    *h.finalize().as_bytes()
}

/// The issue's acceptance scenario, with a 1 GiB object.
#[test]
fn one_gib_survives_a_destroyed_and_a_corrupted_cloud() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["init"]);
    let input = dir.join("big.bin");
    write_blocks(&input, 1024, None);
    let want = digest_file(&input);
    ok(dir, &["put", "big.bin", "records/big.bin"]);
    let ls = ok(dir, &["ls"]);
    assert!(
        ls.contains("records/big.bin") && ls.contains("1073741824"),
        "{ls}"
    );

    // Nothing readable in the clouds: the first 64 bytes of the file appear nowhere.
    let needle = &std::fs::read(&input).unwrap()[..64];
    for f in files_under(&dir.join("clouds")) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(64).any(|w| w == needle),
            "plaintext in {}",
            f.display()
        );
    }

    // Destroy cloud 1 entirely.
    std::fs::remove_dir_all(dir.join("clouds/cloud-1")).unwrap();
    ok(dir, &["get", "records/big.bin", "out1.bin"]);
    assert_eq!(digest_file(&dir.join("out1.bin")), want);
    let scrub = ok(dir, &["scrub"]);
    assert!(scrub.contains("misbehaving clouds: local-1"), "{scrub}");
    assert!(scrub.contains("repaired: local-1"), "{scrub}");
    let stat = ok(dir, &["stat", "records/big.bin"]);
    assert!(
        stat.contains("4 of 4 clouds hold current metadata; 4 hold valid shards"),
        "{stat}"
    );

    // Corrupt bytes in cloud 2's shard files.
    for f in files_under(&dir.join("clouds/cloud-2/rampart/v1/b")) {
        let mut bytes = std::fs::read(&f).unwrap();
        let at = bytes.len() / 3;
        bytes[at] ^= 0x5a;
        std::fs::write(&f, bytes).unwrap();
    }
    ok(dir, &["get", "records/big.bin", "out2.bin"]);
    assert_eq!(digest_file(&dir.join("out2.bin")), want);
    let check = rampart(dir, &["scrub", "--check"]);
    assert!(
        !check.status.success(),
        "scrub --check must report the corruption"
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("misbehaving clouds: local-2"));
    let scrub = ok(dir, &["scrub"]);
    assert!(
        scrub.contains("misbehaving clouds: local-2") && scrub.contains("repaired: local-2"),
        "{scrub}"
    );
    assert!(ok(dir, &["scrub", "--check"]).contains("all 4 clouds healthy"));

    // Two of four clouds destroyed: beyond f, but a cloud without metadata is not a fault
    // (DepSky's read rule, ADR 0006) and the two survivors' shards verify, so the read
    // returns the exact bytes.
    std::fs::remove_dir_all(dir.join("clouds/cloud-3")).unwrap();
    std::fs::remove_dir_all(dir.join("clouds/cloud-4")).unwrap();
    ok(dir, &["get", "records/big.bin", "out3.bin"]);
    assert_eq!(digest_file(&dir.join("out3.bin")), want);
    // Three destroyed: the read fails and writes no output file. Which error depends on
    // which clouds answer first: three empty clouds (not found) or too few shards.
    std::fs::remove_dir_all(dir.join("clouds/cloud-2")).unwrap();
    let err = fails(dir, &["get", "records/big.bin", "out4.bin"]);
    assert!(
        err.contains("valid shards") || err.contains("no object named"),
        "{err}"
    );
    assert!(!dir.join("out4.bin").exists());
}

#[test]
fn stdin_stdout_rm_gc_and_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["init"]);
    for v in ["one", "two", "three"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["put", "-", "notes/today"])
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(v.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(ok(dir, &["get", "notes/today", "-"]), "three");
    let stat = ok(dir, &["stat", "notes/today"]);
    assert_eq!(stat.matches(" bytes  written at ").count(), 3, "{stat}");
    let gc = ok(dir, &["gc", "--keep", "1", "--grace-secs", "0"]);
    assert!(gc.contains("dropped 2 old versions"), "{gc}");
    assert_eq!(ok(dir, &["get", "notes/today", "-"]), "three");
    ok(dir, &["rm", "notes/today"]);
    let err = fails(dir, &["get", "notes/today", "-"]);
    assert!(err.contains("no object named"), "{err}");
    assert_eq!(ok(dir, &["ls"]), "");
    let gc = ok(dir, &["gc", "--grace-secs", "0"]);
    assert!(gc.contains("purged 1 deleted keys"), "{gc}");
}

#[test]
fn bad_input_gets_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // No config yet.
    let e = fails(dir, &["ls"]);
    assert!(e.contains("rampart.toml"), "{e}");
    let e = fails(dir, &["--config", "/nonexistent/r.toml", "ls"]);
    assert!(e.contains("/nonexistent/r.toml"), "{e}");
    ok(dir, &["init"]);
    assert!(fails(dir, &["init"]).contains("refusing to overwrite"));
    std::fs::write(dir.join("f.txt"), "data").unwrap();
    ok(dir, &["put", "f.txt", "k"]);

    assert!(fails(dir, &["get", "nope", "-"]).contains("no object named \"nope\""));
    assert!(fails(dir, &["put", "missing.txt", "k2"]).contains("missing.txt"));
    assert!(fails(dir, &["put", "f.txt", ""]).contains("invalid key"));
    assert!(fails(dir, &["get", "k", "no/such/dir/out"]).contains("no/such/dir"));

    // A corrupted (truncated) config file.
    let config = std::fs::read_to_string(dir.join("rampart.toml")).unwrap();
    std::fs::write(dir.join("rampart.toml"), &config[..config.len() / 2]).unwrap();
    assert!(fails(dir, &["ls"]).contains("config"));
    std::fs::write(dir.join("rampart.toml"), "clouds = 3\n").unwrap();
    assert!(fails(dir, &["ls"]).contains("config"));
    std::fs::write(dir.join("rampart.toml"), &config).unwrap();

    // The wrong signing key: metadata written with the old key does not verify.
    let key = std::fs::read_to_string(dir.join("rampart.key")).unwrap();
    let other = key
        .lines()
        .map(|l| {
            if l.starts_with("signing_key") {
                format!("signing_key = \"{}\"", "11".repeat(32))
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("rampart.key"), other).unwrap();
    let e = fails(dir, &["get", "k", "-"]);
    assert!(e.contains("untrusted key"), "{e}");
    std::fs::write(dir.join("rampart.key"), &key).unwrap();
    assert_eq!(ok(dir, &["get", "k", "-"]), "data");

    // f + 1 clouds gone: a cloud without metadata is not a fault (ADR 0006) and the two
    // survivors' shards verify; one more gone and too few shards remain.
    std::fs::remove_dir_all(dir.join("clouds/cloud-2")).unwrap();
    std::fs::remove_dir_all(dir.join("clouds/cloud-3")).unwrap();
    assert_eq!(ok(dir, &["get", "k", "-"]), "data");
    std::fs::remove_dir_all(dir.join("clouds/cloud-4")).unwrap();
    let e = fails(dir, &["get", "k", "-"]);
    assert!(
        e.contains("valid shards") || e.contains("no object named"),
        "{e}"
    );
}

/// With `[audit]` configured, put, get and rm are sealed into a secure log that verifies.
#[test]
fn store_operations_are_audited_to_a_secure_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["init"]);
    ok(dir, &["log", "init", "audit"]);
    let mut cfg = std::fs::read_to_string(dir.join("rampart.toml")).unwrap();
    cfg.push_str("\n[audit]\nlog_dir = \"audit\"\n");
    std::fs::write(dir.join("rampart.toml"), cfg).unwrap();
    std::fs::write(dir.join("f.txt"), "x").unwrap();
    ok(dir, &["put", "f.txt", "ward-7/chart"]);
    ok(dir, &["get", "ward-7/chart", "-"]);
    ok(dir, &["rm", "ward-7/chart"]);
    fails(dir, &["get", "ward-7/chart", "-"]);
    ok(
        dir,
        &["log", "verify", "audit", "--key", "audit.verifier-secret"],
    );
    let mut all = Vec::new();
    for f in files_under(&dir.join("audit")) {
        all.extend(std::fs::read(f).unwrap());
    }
    let text = String::from_utf8_lossy(&all);
    for needle in [
        "\tput\tward-7/chart\tv1.",
        "\tget\tward-7/chart\tv1.",
        "\trm\tward-7/chart\tv2.",
        "\tget\tward-7/chart\t\tfailed",
    ] {
        assert!(text.contains(needle), "audit log lacks {needle:?}");
    }
}

/// `put -r` and `get -r`: a tree goes up and comes back byte for byte; a rerun skips what is
/// unchanged, yet sees a same-size edit on either side; a key that would escape the target
/// directory is refused and nothing is written outside it.
#[test]
fn directory_trees_go_up_and_down_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["init"]);
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub/deep")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha").unwrap();
    std::fs::write(src.join("empty"), "").unwrap();
    std::fs::write(src.join("sub/b.bin"), vec![7u8; 70_000]).unwrap();
    std::fs::write(src.join("sub/deep/c"), "gamma").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();

    let out = rampart(dir, &["put", "-r", "src", "backup"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stored 4 of 4 files"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("skipped") && stderr.contains("link"),
        "{stderr}"
    );
    let ls = ok(dir, &["ls", "backup/"]);
    for k in [
        "backup/a.txt",
        "backup/empty",
        "backup/sub/b.bin",
        "backup/sub/deep/c",
    ] {
        assert!(ls.contains(k), "{k} missing from {ls}");
    }
    assert!(!ls.contains("link"), "{ls}");

    // A rerun stores nothing; a same-size edit is seen and stored alone.
    let again = ok(dir, &["put", "-r", "src", "backup"]);
    assert!(
        again.contains("stored 0 of 4 files") && again.contains("skipped 4 unchanged"),
        "{again}"
    );
    std::fs::write(src.join("sub/deep/c"), "GAMMA").unwrap();
    let edited = ok(dir, &["put", "-r", "src", "backup/"]);
    assert!(
        edited.contains("stored 1 of 4 files") && edited.contains("skipped 3"),
        "{edited}"
    );
    assert_eq!(ok(dir, &["get", "backup/sub/deep/c", "-"]), "GAMMA");

    // Down: byte for byte, no temporary files left.
    let down = ok(dir, &["get", "-r", "backup", "out", "--jobs", "3"]);
    assert!(down.contains("fetched 4 of 4 keys"), "{down}");
    let got: Vec<_> = files_under(&dir.join("out"));
    assert_eq!(got.len(), 4, "{got:?}");
    for rel in ["a.txt", "empty", "sub/b.bin", "sub/deep/c"] {
        assert_eq!(
            digest_file(&src.join(rel)),
            digest_file(&dir.join("out").join(rel)),
            "{rel}"
        );
    }
    // A rerun fetches nothing; a same-size local edit is repaired.
    let again = ok(dir, &["get", "-r", "backup", "out"]);
    assert!(
        again.contains("fetched 0 of 4 keys") && again.contains("skipped 4"),
        "{again}"
    );
    std::fs::write(dir.join("out/a.txt"), "ALPHA").unwrap();
    let fixed = ok(dir, &["get", "-r", "backup", "out"]);
    assert!(fixed.contains("fetched 1 of 4 keys"), "{fixed}");
    assert_eq!(std::fs::read(dir.join("out/a.txt")).unwrap(), b"alpha");

    // A key another writer chose to climb out of the directory.
    std::fs::write(dir.join("evil"), "pwned").unwrap();
    ok(dir, &["put", "evil", "backup/../../escaped"]);
    let out = rampart(dir, &["get", "-r", "backup", "out2"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused") && stderr.contains("1 files failed"),
        "{stderr}"
    );
    assert!(
        !dir.join("escaped").exists() && !tmp.path().parent().unwrap().join("escaped").exists()
    );
    assert_eq!(files_under(&dir.join("out2")).len(), 4);

    // Bad input: one line, non-zero.
    assert!(fails(dir, &["put", "-r", "a-missing-dir", "p"]).contains("a-missing-dir"));
    assert!(fails(dir, &["put", "-r", "src/a.txt", "p"]).contains("not a directory"));
    assert!(fails(dir, &["put", "-r", "src", "p", "--jobs", "0"]).contains("--jobs"));
}
