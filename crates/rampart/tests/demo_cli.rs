//! `rampart demo`, the README's first command, runs end to end: the store part (destroyed,
//! corrupted and too many faulty clouds) and the replicated KV part (leader crash).

use std::process::Command;

#[test]
fn demo_runs_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["demo", "--size-mib", "4", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run rampart demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for want in [
        "read back the exact bytes",
        "refused as expected",
        "first put after the crash done",
        "all 2000 values exact",
        "demo passed",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}
