//! Seeded simulation runs with every fault class on (network, crashes, Byzantine).
//!
//! 4,000 seeds with n = 4 plus 200 with n = 7. A failing seed prints its summary line and is
//! reproduced exactly by `rampart sim --seed S` (add `--replicas 7` for the n = 7 tests).

use rampart_sim::{SimConfig, run};

fn run_range(seeds: std::ops::Range<u64>, replicas: usize) {
    let mut failed = Vec::new();
    for seed in seeds {
        let mut cfg = SimConfig::new(seed);
        cfg.replicas = replicas;
        let r = run(cfg);
        if !r.passed() {
            failed.push(r.line());
        }
    }
    assert!(
        failed.is_empty(),
        "failing seeds (reproduce with `rampart sim --seed S --replicas {replicas}`):\n{}",
        failed.join("\n")
    );
}

#[test]
fn seeds_0000_0999() {
    run_range(0..1000, 4);
}

#[test]
fn seeds_1000_1999() {
    run_range(1000..2000, 4);
}

#[test]
fn seeds_2000_2999() {
    run_range(2000..3000, 4);
}

#[test]
fn seeds_3000_3999() {
    run_range(3000..4000, 4);
}

#[test]
fn seven_replicas_seeds_0000_0199() {
    run_range(0..200, 7);
}

/// The same seed gives the same run, event for event (what makes `--seed S` a replay).
#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 178, 1489] {
        let a = run(SimConfig::new(seed));
        let b = run(SimConfig::new(seed));
        assert_eq!(a.summary, b.summary, "seed {seed}");
        assert_eq!(a.line(), b.line());
        assert!(a.summary.packets > 0);
    }
}

/// The fault machinery is actually exercised across the suite's seeds (a simulator that
/// silently injected nothing would pass everything).
#[test]
fn faults_are_exercised() {
    let mut total = rampart_sim::Summary::default();
    let mut byzantine_runs = 0;
    for seed in 0..100 {
        let r = run(SimConfig::new(seed));
        let s = r.summary;
        total.crashes += s.crashes;
        total.partitions += s.partitions;
        total.state_transfers += s.state_transfers;
        total.read_only_fallbacks += s.read_only_fallbacks;
        total.read_only_fast += s.read_only_fast;
        total.rejected += s.rejected;
        total.regencies += s.regencies;
        byzantine_runs += usize::from(!s.byzantine.is_empty());
    }
    assert!(total.crashes > 50, "{total:?}");
    assert!(total.partitions > 100, "{total:?}");
    assert!(total.state_transfers > 0, "{total:?}");
    assert!(total.read_only_fallbacks > 0, "{total:?}");
    assert!(total.read_only_fast > 0, "{total:?}");
    assert!(total.rejected > 0, "{total:?}");
    assert!(total.regencies > 100, "{total:?}");
    assert!(byzantine_runs > 50, "{byzantine_runs}");
}

#[test]
#[ignore = "debugging aid: RAMPART_SIM_SEED=S cargo test -p rampart-sim --test seeds one_seed -- --ignored"]
fn one_seed() {
    let seed = std::env::var("RAMPART_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let r = run(SimConfig::new(seed));
    println!("{}", r.line());
    assert!(r.passed());
}
