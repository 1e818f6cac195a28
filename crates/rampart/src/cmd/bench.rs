//! `rampart bench ...`: benchmarks that print ratios against same-run baselines.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Cloud-of-clouds put/get vs. a plain single-directory put/get, and the pipeline rate.
    Store(StoreBenchArgs),
    /// BFT-replicated KV (4 replicas, TLS, loopback) vs. one unreplicated server.
    Bft(crate::cmd::cluster::BftBenchArgs),
}

/// Options of `rampart bench store`.
#[derive(Debug, Args)]
pub struct StoreBenchArgs {
    /// Object sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = vec![4096u64, 1 << 20, 256 << 20])]
    sizes: Vec<u64>,
    /// Directory for the temporary clouds (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Local clouds: 4 to 16 (DepSky-CA), or 1 for the sealed single backend.
    #[arg(long, default_value_t = 4)]
    clouds: usize,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Store(args) => store(args),
        BenchCommand::Bft(args) => crate::cmd::cluster::bench_bft(args),
    }
}

fn store(args: StoreBenchArgs) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let dir = args.dir.unwrap_or_else(std::env::temp_dir);
    let what = if args.clouds == 1 {
        "1 local-directory cloud (sealed single backend)".to_owned()
    } else {
        format!(
            "{} local-directory clouds (n={}, f={}, DepSky-CA)",
            args.clouds,
            args.clouds,
            (args.clouds.max(1) - 1) / 3
        )
    };
    println!("rampart bench store: {what} vs. one local directory");
    let rep = rt.block_on(rampart_bench::store::run(&args.sizes, &dir, args.clouds))?;
    println!(
        "{:>12} {:>4} {:>14} {:>14} {:>8}",
        "size", "op", "store MB/s", "plain MB/s", "ratio"
    );
    for r in &rep.rows {
        println!(
            "{:>12} {:>4} {:>14.1} {:>14.1} {:>8.2}",
            r.size,
            r.op,
            r.store_mbps(),
            r.baseline_mbps(),
            r.ratio()
        );
    }
    println!(
        "client pipeline (AES-256-GCM + RS 2+2 + BLAKE3 per shard), one core: {:.2} GB/s of plaintext (BLAKE3 alone: {:.2} GB/s)",
        rep.pipeline_gbps_per_core, rep.blake3_gbps
    );
    Ok(())
}
