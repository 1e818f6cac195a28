//! Seeded simulation runs with every fault class on.

use rampart_sim::{SimConfig, run};

#[test]
fn smoke_20_seeds() {
    let mut failed = Vec::new();
    for seed in 0..20 {
        let r = run(SimConfig::new(seed));
        println!("{}", r.line());
        if !r.passed() {
            failed.push(r.line());
        }
    }
    assert!(failed.is_empty(), "failing seeds (reproduce with `rampart sim --seed S`):\n{}", failed.join("\n"));
}

#[test]
#[ignore = "debugging aid: RAMPART_SIM_SEED=S cargo test -p rampart-sim --test seeds one_seed -- --ignored"]
fn one_seed() {
    let seed = std::env::var("RAMPART_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let r = run(SimConfig::new(seed));
    println!("{}", r.line());
    assert!(r.passed());
}

#[test]
#[ignore = "exploration: RAMPART_SIM_SEEDS=N cargo test -p rampart-sim --test seeds many -- --ignored"]
fn many() {
    let n: u64 = std::env::var("RAMPART_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let start: u64 = std::env::var("RAMPART_SIM_START").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut failed = 0;
    for seed in start..start + n {
        let r = run(SimConfig::new(seed));
        if !r.passed() {
            failed += 1;
            println!("{}", r.line());
        }
    }
    println!("{failed} of {n} failed");
    assert_eq!(failed, 0);
}
