//! `rampart sim`: run the deterministic BFT simulator (`rampart-sim`) over many seeds.
//!
//! Each seed runs the real replica and client cores in virtual time against the
//! simulator's adversary (named attacks by colluding Byzantine replicas, an adversarial or
//! random network, Byzantine clients, crashes; `--mode random` is the original random-only
//! simulator) and prints one line naming the attack it played. A failing seed is
//! reproduced exactly by `rampart sim --seed S` (with the same `--replicas`, `--mode`,
//! `--attack` and `--danger-mutation`). `--attack-rates` prints, per attack, the decided
//! instances per virtual second with one Byzantine replica on a quiet network against the
//! fault-free rate (the throughput floor is half of it).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::bail;
use rampart_bft::DangerTestMutation;
use rampart_sim::adversary::Attack;
use rampart_sim::{Faults, SimConfig, SimReport};

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
    /// `all`: the strategic adversary (default); `random`: the original simulator (random
    /// Byzantine behaviours and random network only).
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,
    /// Play this attack in every seed (see `--list-attacks`).
    #[arg(long)]
    attack: Option<String>,
    /// List the attack library and exit.
    #[arg(long)]
    list_attacks: bool,
    /// Per attack: decided instances per virtual second with one Byzantine replica, quiet
    /// network, no crashes, against the fault-free rate (`--seeds` seeds each).
    #[arg(long)]
    attack_rates: bool,
    /// Instead of seeds: bounded exhaustive search over the real cores (n = 4, the plain
    /// world and every Twins scenario), every path up to this many choices; prints the
    /// states explored per configuration and fails on the first violation.
    #[arg(long, value_name = "DEPTH")]
    search: Option<usize>,
}

/// Which adversary runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Strategic colluders, adversarial network, Byzantine clients, plus the random faults.
    All,
    /// The original random-only simulator.
    Random,
}

/// Deliberate protocol breakage for mutation testing.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mutation {
    /// WRITE/ACCEPT quorum of f+1 instead of ⌈(n+f+1)/2⌉.
    WeakQuorum,
    /// Leaders and followers ignore STOPDATA write certificates in SYNC.
    SkipSyncCheck,
    /// Issue 10 finding 1 re-introduced: installing a checkpoint forgets its proof, and
    /// the SYNC choice ignores write certificates above h+1.
    ForgetCheckpointProof,
    /// Issue 10 finding 3 re-introduced: one peer's checkpoint claim stops proposing.
    TrustOneCheckpointClaim,
    /// Issue 10 finding 8 re-introduced: followers never forward requests to the leader.
    NoForward,
}

impl Mutation {
    fn core(self) -> DangerTestMutation {
        match self {
            Mutation::WeakQuorum => DangerTestMutation::WeakQuorum,
            Mutation::SkipSyncCheck => DangerTestMutation::SkipSyncCheck,
            Mutation::ForgetCheckpointProof => DangerTestMutation::ForgetCheckpointProof,
            Mutation::TrustOneCheckpointClaim => DangerTestMutation::TrustOneCheckpointClaim,
            Mutation::NoForward => DangerTestMutation::NoForward,
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Mutation::WeakQuorum => "weak-quorum",
            Mutation::SkipSyncCheck => "skip-sync-check",
            Mutation::ForgetCheckpointProof => "forget-checkpoint-proof",
            Mutation::TrustOneCheckpointClaim => "trust-one-checkpoint-claim",
            Mutation::NoForward => "no-forward",
        }
    }
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
    if args.list_attacks {
        for a in Attack::ALL {
            println!("{}", a.name());
        }
        return Ok(());
    }
    let attack = match &args.attack {
        None => None,
        Some(name) => match Attack::from_name(name) {
            Some(a) => Some(a),
            None => bail!("unknown --attack {name}; see --list-attacks"),
        },
    };
    let mutation = args.danger_mutation.map(Mutation::core);
    if args.attack_rates {
        return attack_rates(&args, mutation);
    }
    if let Some(depth) = args.search {
        return search(depth, mutation);
    }
    let faults = match args.mode {
        Mode::All => Faults::ALL,
        Mode::Random => Faults::RANDOM,
    };
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
                    cfg.faults = faults;
                    cfg.attack = attack;
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
        "{} seeds (n={}, mode {:?}{}{}): {} passed, {} failed in {:.1} s ({:.1} seeds/s, {jobs} jobs)",
        total,
        args.replicas,
        args.mode,
        attack.map_or(String::new(), |a| format!(", attack {}", a.name())),
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
            let mut flag = args.danger_mutation.map_or(String::new(), |m| {
                format!(" --danger-mutation {}", m.flag())
            });
            if args.mode == Mode::Random {
                flag.push_str(" --mode random");
            }
            if let Some(a) = attack {
                flag.push_str(&format!(" --attack {}", a.name()));
            }
            println!(
                "reproduce: rampart sim --seed {s} --replicas {}{flag}",
                args.replicas
            );
        }
        bail!("{} of {total} seeds failed", failed.len());
    }
    Ok(())
}

/// `--search DEPTH`: the bounded exhaustive search of `rampart_sim::search`.
fn search(depth: usize, mutation: Option<DangerTestMutation>) -> anyhow::Result<()> {
    if !(1..=64).contains(&depth) {
        bail!("--search {depth} is out of range: 1 to 64 choices");
    }
    let mut violations = 0;
    for (name, report) in rampart_sim::search::standard_runs(depth, mutation) {
        println!("{name:<28} {}", report.line());
        if let Some(c) = &report.counterexample {
            println!("{c}");
            violations += 1;
        }
    }
    if violations > 0 {
        bail!("{violations} configurations reached a violation");
    }
    Ok(())
}

/// `--attack-rates`: for each attack, `--seeds` seeds with one Byzantine replica on a quiet
/// network (the throughput-floor configuration), the mean rate and the mean fault-free
/// rate of the same seeds.
fn attack_rates(args: &SimArgs, mutation: Option<DangerTestMutation>) -> anyhow::Result<()> {
    let faults = Faults {
        network: false,
        crashes: false,
        byzantine: true,
        strategic: true,
        adversarial_network: false,
        byzantine_clients: false,
        disk: false,
    };
    println!(
        "{:<38} {:>6} {:>14} {:>14} {:>6} {:>7}",
        "attack", "seeds", "rate (inst/s)", "fault-free", "ratio", "failed"
    );
    let mut any_failed = false;
    for a in Attack::ALL {
        if a.holds_network() {
            // These need the adversarial network: no quiet-network rate.
            continue;
        }
        let mut rate = 0u64;
        let mut base = 0u64;
        let mut floor_runs = 0u64;
        let mut failed = 0u64;
        for seed in args.start..args.start.saturating_add(args.seeds) {
            let mut cfg = SimConfig::new(seed);
            cfg.replicas = args.replicas;
            cfg.fault_phase = std::time::Duration::from_millis(args.fault_ms);
            cfg.mutation = mutation;
            cfg.faults = faults;
            cfg.attack = Some(a);
            let r = rampart_sim::run(cfg);
            if !r.passed() {
                failed += 1;
                if !args.quiet {
                    println!("  {}", r.line());
                }
            }
            if let Some(b) = r.summary.baseline_milli {
                floor_runs += 1;
                rate += r.summary.rate_milli;
                base += b;
            }
        }
        any_failed |= failed > 0;
        let d = floor_runs.max(1) as f64 * 1000.0;
        println!(
            "{:<38} {:>6} {:>14.1} {:>14.1} {:>6.2} {:>7}",
            a.name(),
            floor_runs,
            rate as f64 / d,
            base as f64 / d,
            rate as f64 / (base.max(1)) as f64,
            failed
        );
    }
    if any_failed {
        bail!("some seeds failed");
    }
    Ok(())
}
