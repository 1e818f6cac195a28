//! End-to-end tests of `rampart log` through the real binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn rampart() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
}

fn run(args: &[&str]) -> Output {
    rampart().args(args).output().expect("run rampart")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts failure with a one-line `rampart: error:` message; returns it.
fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    err.lines()
        .find(|l| l.starts_with("rampart: error:"))
        .unwrap_or_else(|| panic!("no error line in {err:?}"))
        .to_owned()
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    secret: PathBuf,
}

fn init() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let secret = tmp.path().join("verifier.secret");
    let out = ok(&run(&[
        "log",
        "init",
        dir.to_str().unwrap(),
        "--origin",
        "cli.test/log",
        "--secret-out",
        secret.to_str().unwrap(),
    ]));
    assert!(out.contains("verifier key: cli.test/log+"), "{out}");
    Setup {
        _tmp: tmp,
        dir,
        secret,
    }
}

fn append_stdin(dir: &Path, input: &[u8]) -> Output {
    let mut child = rampart()
        .args(["log", "append", dir.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "one segment");
    segs.pop().unwrap()
}

/// Frame offsets of a segment, parsed independently of the library.
fn frames(seg: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 8;
    while pos < seg.len() {
        let len = u32::from_le_bytes(seg[pos..pos + 4].try_into().unwrap()) as usize;
        out.push((pos, 4 + len + 8));
        pos += 4 + len + 8;
    }
    out
}

/// The "done when": 100,000 lines, a flipped byte, a truncation caught by the last
/// checkpoint.
#[test]
fn done_when_append_100k_flip_byte_truncate() {
    let s = init();
    let d = s.dir.to_str().unwrap();
    let key = s.secret.to_str().unwrap();
    let input: String = (0..100_000)
        .map(|i| format!("event {i} door opened\n"))
        .collect();
    let out = ok(&append_stdin(&s.dir, input.as_bytes()));
    assert!(out.contains("log size 100000"), "{out}");
    let out = ok(&run(&["log", "verify", d, "--key", key]));
    assert!(out.contains("ok: 100000 entries verified"), "{out}");
    // A client keeps the latest checkpoint.
    let cp = s._tmp.path().join("seen.checkpoint");
    let note = ok(&run(&["log", "checkpoint", d]));
    assert!(note.starts_with("cli.test/log\n100000\n"), "{note}");
    std::fs::write(&cp, &note).unwrap();

    // Flip one byte in the middle of the segment: verify names the entry holding it.
    let seg_path = segment(&s.dir);
    let original = std::fs::read(&seg_path).unwrap();
    let mid = original.len() / 2;
    let frs = frames(&original);
    let victim = frs
        .iter()
        .position(|&(o, l)| o <= mid && mid < o + l)
        .unwrap();
    let mut flipped = original.clone();
    flipped[mid] ^= 0x04;
    std::fs::write(&seg_path, &flipped).unwrap();
    let err = fails(&run(&["log", "verify", d, "--key", key]));
    assert!(err.contains(&format!("entry {victim}:")), "{err}");

    // Restore, then cut the last 1,000 entries: the saved checkpoint reports the rollback.
    std::fs::write(&seg_path, &original).unwrap();
    ok(&run(&["log", "verify", d, "--key", key]));
    std::fs::write(&seg_path, &original[..frs[99_000].0]).unwrap();
    let err = fails(&run(&[
        "log",
        "verify",
        d,
        "--key",
        key,
        "--checkpoint",
        cp.to_str().unwrap(),
    ]));
    assert!(err.contains("entry 99000:"), "{err}");
    assert!(
        err.contains("99000 entries") && err.contains("covers 100000"),
        "{err}"
    );
    assert!(err.contains("rolled back"), "{err}");
}

#[test]
fn append_args_prove_and_checkpoint() {
    let s = init();
    let d = s.dir.to_str().unwrap();
    ok(&run(&["log", "append", d, "first", "second", "third"]));
    let proof = ok(&run(&["log", "prove", d, "1"]));
    assert!(
        proof.starts_with("rampart-log inclusion proof v1\nindex 1\nsize 3\n"),
        "{proof}"
    );
    let cons = ok(&run(&["log", "prove", d, "--consistency", "2"]));
    assert!(
        cons.starts_with("rampart-log consistency proof v1\nold 2\nsize 3\n"),
        "{cons}"
    );
    let err = fails(&run(&["log", "prove", d, "3"]));
    assert!(
        err.contains("outside the checkpointed tree of size 3"),
        "{err}"
    );
    ok(&run(&[
        "log",
        "verify",
        d,
        "--key",
        s.secret.to_str().unwrap(),
    ]));
}

#[test]
fn witness_cosignatures_k_of_n() {
    let s = init();
    let d = s.dir.to_str().unwrap();
    ok(&run(&["log", "append", d, "x"]));
    let cp = s._tmp.path().join("cp");
    std::fs::write(&cp, ok(&run(&["log", "checkpoint", d]))).unwrap();
    let mut vkeys = Vec::new();
    for w in ["w1", "w2", "w3"] {
        let key = s._tmp.path().join(w);
        let out = ok(&run(&[
            "log",
            "witness-keygen",
            w,
            "--out",
            key.to_str().unwrap(),
        ]));
        vkeys.push(out.trim().to_owned());
    }
    let verify_2_of_3 = || {
        let mut args: Vec<String> = ["log", "verify", d, "--key", s.secret.to_str().unwrap()]
            .map(String::from)
            .to_vec();
        args.extend(["--checkpoint".into(), cp.to_str().unwrap().into()]);
        for v in &vkeys {
            args.extend(["--witness".into(), v.clone()]);
        }
        args.extend(["--witness-threshold".into(), "2".into()]);
        rampart().args(&args).output().unwrap()
    };
    let err = fails(&verify_2_of_3());
    // One line, said once.
    assert_eq!(
        err,
        format!(
            "rampart: error: verifying {d}: checkpoint: 0 of the required 2 witness cosignatures"
        )
    );
    for w in ["w1", "w3"] {
        let key = s._tmp.path().join(w);
        ok(&run(&[
            "log",
            "cosign",
            cp.to_str().unwrap(),
            "--witness-key",
            key.to_str().unwrap(),
        ]));
    }
    ok(&verify_2_of_3());
    // A broken cosignature is the witness's problem, not the log's.
    let good = std::fs::read_to_string(&cp).unwrap();
    let line = good.lines().find(|l| l.starts_with("— w3 ")).unwrap();
    let mut sig = line.as_bytes().to_vec();
    let i = sig.len() - 5;
    sig[i] = if sig[i] == b'A' { b'B' } else { b'A' };
    let broken = good.replace(line, std::str::from_utf8(&sig).unwrap());
    std::fs::write(&cp, broken).unwrap();
    let err = fails(&verify_2_of_3());
    assert_eq!(
        err,
        format!("rampart: error: verifying {d}: checkpoint: invalid cosignature by witness w3")
    );
    std::fs::write(&cp, good).unwrap();
    ok(&verify_2_of_3());
}

/// `witness-keygen` and `cosign` default to C2SP cosignature/v1; `--plain-note` keeps the
/// older plain Ed25519 note signature. A policy counts each only under its own key type.
#[test]
fn witness_cosignature_v1_and_plain_note() {
    let s = init();
    let d = s.dir.to_str().unwrap();
    ok(&run(&["log", "append", d, "x"]));
    let cp = s._tmp.path().join("cp");
    let fresh = ok(&run(&["log", "checkpoint", d]));
    std::fs::write(&cp, &fresh).unwrap();
    let (k1, k2) = (s._tmp.path().join("v1"), s._tmp.path().join("plain"));
    let v1 = ok(&run(&[
        "log",
        "witness-keygen",
        "v1.example",
        "--out",
        k1.to_str().unwrap(),
    ]));
    let plain = ok(&run(&[
        "log",
        "witness-keygen",
        "plain.example",
        "--out",
        k2.to_str().unwrap(),
        "--plain-note",
    ]));
    // base64 of the type byte 0x04 starts with 'B', of 0x01 with 'A'.
    let key_type = |vkey: &str| vkey.trim().splitn(3, '+').nth(2).unwrap().as_bytes()[0];
    assert_eq!((key_type(&v1), key_type(&plain)), (b'B', b'A'));
    let verify = |threshold: &str| {
        rampart()
            .args(["log", "verify", d, "--key", s.secret.to_str().unwrap()])
            .args(["--checkpoint", cp.to_str().unwrap()])
            .args(["--witness", v1.trim(), "--witness", plain.trim()])
            .args(["--witness-threshold", threshold])
            .output()
            .unwrap()
    };
    let cosign = |key: &Path, extra: &[&str]| {
        rampart()
            .args(["log", "cosign", cp.to_str().unwrap(), "--witness-key"])
            .arg(key)
            .args(extra)
            .output()
            .unwrap()
    };
    ok(&cosign(&k1, &[]));
    // The plain witness cosigning in the wrong format does not count.
    ok(&cosign(&k2, &[]));
    let err = fails(&verify("2"));
    assert!(
        err.ends_with("1 of the required 2 witness cosignatures"),
        "{err}"
    );
    std::fs::write(&cp, &fresh).unwrap();
    ok(&cosign(&k1, &[]));
    ok(&cosign(&k2, &["--plain-note"]));
    ok(&verify("2"));
    // A witness signs checkpoints only.
    let other = s._tmp.path().join("note");
    std::fs::write(&other, "not a checkpoint\n\n— x AAAAAAA=\n").unwrap();
    let err = fails(
        &rampart()
            .args(["log", "cosign", other.to_str().unwrap(), "--witness-key"])
            .arg(&k1)
            .output()
            .unwrap(),
    );
    assert_eq!(err, "rampart: error: cosigning: malformed checkpoint body");
}

#[test]
fn bad_input_gets_one_line_errors() {
    let s = init();
    let d = s.dir.to_str().unwrap();
    let missing = s._tmp.path().join("nope");
    fails(&run(&["log", "append", missing.to_str().unwrap(), "x"]));
    let err = fails(&run(&["log", "init", d]));
    assert!(err.contains("not empty"), "{err}");
    // A too-long entry: nothing appended.
    let long = "y".repeat(rampart_log::ENTRY_DATA_MAX + 1);
    let err = fails(&run(&["log", "append", d, "ok", &long]));
    assert!(err.contains("limit"), "{err}");
    let out = ok(&run(&[
        "log",
        "verify",
        d,
        "--key",
        s.secret.to_str().unwrap(),
    ]));
    assert!(out.contains("ok: 0 entries"), "{out}");
    // The verifier secret never lands inside the (publishable) log directory.
    let d2 = s._tmp.path().join("log2");
    let inside = d2.join("secret");
    let err = fails(&run(&[
        "log",
        "init",
        d2.to_str().unwrap(),
        "--secret-out",
        inside.to_str().unwrap(),
    ]));
    assert!(err.contains("outside the log directory"), "{err}");
    assert!(!d2.exists(), "nothing left behind");
    let d3 = format!("{}/", s._tmp.path().join("log3").display());
    let out = ok(&run(&["log", "init", &d3]));
    // The default origin is a scheme-less URL (C2SP tlog-tiles): host/rampart-log/<id>.
    let origin = out
        .split("(origin ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("{out}"));
    let parts: Vec<&str> = origin.split('/').collect();
    assert_eq!(parts.len(), 3, "{origin}");
    assert!(!parts[0].is_empty() && !parts[0].contains(':'), "{origin}");
    assert_eq!(parts[1], "rampart-log", "{origin}");
    assert_eq!(parts[2].len(), 12, "{origin}");
    assert!(
        s._tmp.path().join("log3.verifier-secret").exists(),
        "default secret is a sibling"
    );
    // A garbage key file.
    let junk = s._tmp.path().join("junk");
    std::fs::write(&junk, "not a key").unwrap();
    let err = fails(&run(&["log", "verify", d, "--key", junk.to_str().unwrap()]));
    assert!(err.contains("malformed key file"), "{err}");
    // Another log's secret: the checkpoint signature does not verify under its key.
    let other = init();
    let err = fails(&run(&[
        "log",
        "verify",
        d,
        "--key",
        other.secret.to_str().unwrap(),
    ]));
    assert!(
        err.contains("verification failed") && err.contains("signature"),
        "{err}"
    );
    // Secret file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&s.secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn kill_9_mid_append_then_recover() {
    let s = init();
    let d = s.dir.to_str().unwrap();
    ok(&run(&["log", "append", d, "before the crash"]));
    let mut child = rampart()
        .args(["log", "append", d])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let line = "a line that keeps coming\n".repeat(1000);
    // Feed until some batches have been committed (the segment grows), then kill -9.
    let seg_dir = s.dir.join("segments");
    let seg_len = || {
        std::fs::read_dir(&seg_dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum::<u64>()
    };
    let start = seg_len();
    for _ in 0..400 {
        if stdin.write_all(line.as_bytes()).is_err() || seg_len() > start + 200_000 {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(stdin);
    // Simulate the worst torn write as well: half a frame at the end of the segment.
    let seg = segment(&s.dir);
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(f);
    let err = fails(&run(&[
        "log",
        "verify",
        d,
        "--key",
        s.secret.to_str().unwrap(),
    ]));
    // Usually "torn tail"; if the kill also tore a frame, the garbage reads as a bad frame.
    assert!(
        err.contains("torn tail") || err.contains("malformed"),
        "{err}"
    );
    let out = run(&["log", "checkpoint", d]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("torn tail at entry") && stderr.contains("truncated"),
        "{stderr}"
    );
    let out = ok(&run(&[
        "log",
        "verify",
        d,
        "--key",
        s.secret.to_str().unwrap(),
    ]));
    assert!(out.contains("entries verified"), "{out}");
}
