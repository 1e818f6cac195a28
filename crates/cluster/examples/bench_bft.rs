//! The workloads of `rampart bench bft` (issue 4) through `rampart_cluster::bench::run_bft`,
//! as an example of this crate alone, so that two commits can be compared with a release
//! build of `rampart-cluster` only (issue 10: the transport's throughput cost). The same
//! file builds at commits before the transport change.
//!
//! ```text
//! bench_bft SECS [NAME...]   # NAME: mem0 mem1k dur1k op1  (default: all four)
//! ```
#![allow(clippy::disallowed_methods)] // A measurement tool: it reads the clock.

use std::time::Duration;

use rampart_cluster::bench::{Workload, run_bft};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let w = |value_bytes, clients, sessions, ops_per_request, durable| Workload {
        value_bytes,
        echo: false,
        clients,
        sessions,
        ops_per_request,
        durable,
        duration: Duration::from_secs(secs),
        leader_change: false,
        request_timeout: Duration::from_secs(2),
    };
    let all = [
        (
            "mem0",
            "put 0 B, in memory, batched",
            w(0, 200, 1, 1024, false),
        ),
        (
            "mem1k",
            "put 1 KiB, in memory, batched",
            w(1024, 100, 1, 1024, false),
        ),
        (
            "dur1k",
            "put 1 KiB, durable, batched",
            w(1024, 100, 1, 1024, true),
        ),
        (
            "op1",
            "put 0 B, in memory, 1 op/request",
            w(0, 200, 200, 1, false),
        ),
    ];
    let wanted: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    for (short, name, w) in all {
        if !wanted.is_empty() && !wanted.contains(&short) {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let r = run_bft(dir.path(), &w).await?;
        println!(
            "{short:<6} {name:<36} {:>9.0} ops/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            r.ops_per_sec,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
