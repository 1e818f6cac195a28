//! `rampart`: the command-line interface. A thin layer over the library crates.
//!
//! Each subsystem owns one module under `cmd/` with its `clap` arguments and a
//! `run` function; this file only parses the command line, sets up logging and
//! maps errors to a one-line message and a non-zero exit code.

mod cmd;

/// mimalloc reuses freed multi-megabyte segment buffers; the system allocator maps and
/// unmaps them each time, paying a page fault per 4 KiB (measured: the store pipeline
/// ran at a third of its speed).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Rampart keeps data confidential, intact and available on clouds you do not trust.
#[derive(Debug, Parser)]
#[command(name = "rampart", version, about, long_about = None)]
struct Cli {
    /// Verbosity of diagnostics on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Store configuration file (written by `rampart init`).
    #[arg(
        long,
        global = true,
        env = "RAMPART_CONFIG",
        default_value = "rampart.toml"
    )]
    config: std::path::PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Store(cmd::store::StoreCommand),
    /// Benchmarks (results print beside a baseline measured in the same run).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Run the main job on the embedded default: a local cloud-of-clouds, with faults.
    Demo(cmd::demo::DemoArgs),
    /// Secure log: forward-integrity sealed, Merkle-tree, signed-checkpoint audit trail.
    Log(cmd::log::LogArgs),
    /// Serve the S3 API over the store: clients keep their tools, clouds see ciphertext.
    Gateway(cmd::gateway::GatewayArgs),
    /// Run the deterministic BFT simulator over many seeds (faults, crashes, Byzantine replicas).
    Sim(cmd::sim::SimArgs),
    /// BFT cluster set-up (`cluster init`).
    Cluster(cmd::cluster::ClusterArgs),
    /// Serve one replica of a BFT cluster.
    Replica(cmd::cluster::ReplicaArgs),
    /// Replicated key-value service: put, get, del, cas, scan; `kv up` runs a local cluster.
    Kv(cmd::cluster::KvArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Store(c) => cmd::store::run(c, &cli.config),
        Command::Bench(c) => cmd::bench::run(c),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Log(args) => cmd::log::run(args),
        Command::Sim(args) => cmd::sim::run(args),
        Command::Gateway(args) => cmd::gateway::run(args, &cli.config),
        Command::Cluster(args) => cmd::cluster::run_cluster(args),
        Command::Replica(args) => cmd::cluster::run_replica_cmd(args),
        Command::Kv(args) => cmd::cluster::run_kv(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, outermost first.
            let msg = err
                .chain()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            eprintln!("rampart: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("RAMPART_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // At debug level `s3s` logs the signature it computed for a rejected request (a valid
    // signature for the attacker's request) and every request with its Authorization
    // header or presigned query (replayable credentials). Never, whatever RAMPART_LOG says.
    for d in rampart_gateway::LOG_DIRECTIVES_FORCED {
        filter = filter.add_directive(d.parse().expect("constant directive parses"));
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
