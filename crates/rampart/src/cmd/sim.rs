//! `rampart sim`: run the deterministic BFT simulator (`rampart-sim`) over many seeds.
//!
//! Each seed runs the real replica and client cores with network faults, crashes and
//! Byzantine replicas in virtual time, and prints one line. A failing seed is reproduced
//! exactly by `rampart sim --seed S` (with the same `--replicas`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::bail;
use rampart_bft::DangerTestMutation;
use rampart_sim::{SimConfig, SimReport};

/// Arguments of `rampart sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Number of seeds to run, starting at `--start`.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of the range.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run exactly this one seed (to reproduce a failure).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of replicas, n ≥ 4 (f = ⌊(n−1)/3⌋).
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Virtual length of each seed's fault phase, in milliseconds (then heal).
    #[arg(long, default_value_t = 3000)]
    fault_ms: u64,
    /// Seeds run in parallel (each seed is single-threaded and deterministic).
    #[arg(long)]
    jobs: Option<usize>,
    /// Only print failing seeds and the total.
    #[arg(long)]
    quiet: bool,
    /// DANGER, testing only: deliberately break the protocol to check that the simulator
    /// notices (mutation testing).
    #[arg(long, value_enum)]
    danger_mutation: Option<Mutation>,
}

/// Deliberate protocol breakage for mutation testing.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mutation {
    /// WRITE/ACCEPT quorum of f+1 instead of ⌈(n+f+1)/2⌉.
    WeakQuorum,
    /// Leaders and followers ignore STOPDATA write certificates in SYNC.
    SkipSyncCheck,
}

/// Run the simulator.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    if args.replicas < 4 || args.replicas > rampart_bft::REPLICAS_MAX {
        bail!(
            "--replicas {} is out of range: need 4 ≤ n ≤ {}",
            args.replicas,
            rampart_bft::REPLICAS_MAX
        );
    }
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.start..args.start.saturating_add(args.seeds)).collect(),
    };
    let mutation = args.danger_mutation.map(|m| match m {
        Mutation::WeakQuorum => DangerTestMutation::WeakQuorum,
        Mutation::SkipSyncCheck => DangerTestMutation::SkipSyncCheck,
    });
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    // Wall-clock time is only reported, never fed to the simulation.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let next = AtomicU64::new(0);
    let results: Mutex<Vec<Option<SimReport>>> = Mutex::new(vec![None; seeds.len()]);
    let printed = Mutex::new(0usize);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&seed) = seeds.get(i) else { break };
                    let mut cfg = SimConfig::new(seed);
                    cfg.replicas = args.replicas;
                    cfg.fault_phase = std::time::Duration::from_millis(args.fault_ms);
                    cfg.mutation = mutation;
                    let report = rampart_sim::run(cfg);
                    let mut all = results.lock().unwrap_or_else(|e| e.into_inner());
                    all[i] = Some(report);
                    // Print in seed order as results become available.
                    let mut p = printed.lock().unwrap_or_else(|e| e.into_inner());
                    while let Some(Some(r)) = all.get(*p) {
                        if !args.quiet || !r.passed() {
                            println!("{}", r.line());
                        }
                        *p += 1;
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let all = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let failed: Vec<u64> = all
        .iter()
        .flatten()
        .filter(|r| !r.passed())
        .map(|r| r.seed)
        .collect();
    let total = seeds.len();
    println!(
        "{} seeds (n={}, all faults{}): {} passed, {} failed in {:.1} s ({:.1} seeds/s, {jobs} jobs)",
        total,
        args.replicas,
        mutation.map_or(String::new(), |m| format!(", MUTATION {m:?}")),
        total - failed.len(),
        failed.len(),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(1e-9),
    );
    let sum = |f: fn(&rampart_sim::Summary) -> u64| -> u64 {
        all.iter().flatten().map(|r| f(&r.summary)).sum()
    };
    println!(
        "totals: decided={} ops={} ro_fast={} ro_fallback={} regencies={} state_transfers={} \
         crashes={} partitions={} rejected={} packets={} byzantine_runs={} virtual_s={}",
        sum(|s| s.decided_max),
        sum(|s| s.ops_completed),
        sum(|s| s.read_only_fast),
        sum(|s| s.read_only_fallbacks),
        sum(|s| s.regencies),
        sum(|s| s.state_transfers),
        sum(|s| s.crashes),
        sum(|s| s.partitions),
        sum(|s| s.rejected),
        sum(|s| s.packets),
        sum(|s| u64::from(!s.byzantine.is_empty())),
        sum(|s| s.virtual_ms) / 1000,
    );
    if !failed.is_empty() {
        for s in failed.iter().take(20) {
            let flag = match args.danger_mutation {
                None => "",
                Some(Mutation::WeakQuorum) => " --danger-mutation weak-quorum",
                Some(Mutation::SkipSyncCheck) => " --danger-mutation skip-sync-check",
            };
            println!(
                "reproduce: rampart sim --seed {s} --replicas {}{flag}",
                args.replicas
            );
        }
        bail!("{} of {total} seeds failed", failed.len());
    }
    Ok(())
}
