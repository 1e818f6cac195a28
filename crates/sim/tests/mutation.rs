//! Mutation sanity: deliberately broken protocol rules must be caught by the simulator, and
//! the very seeds that catch them must pass with the rules intact.

use rampart_bft::DangerTestMutation;
use rampart_sim::{SimConfig, run};

fn caught(mutation: DangerTestMutation, seeds: std::ops::Range<u64>) -> Vec<u64> {
    let mut failing = Vec::new();
    for seed in seeds {
        let mut cfg = SimConfig::new(seed);
        cfg.mutation = Some(mutation);
        let r = run(cfg);
        if !r.passed() {
            println!("mutated {mutation:?}: {}", r.line());
            failing.push(seed);
        }
    }
    failing
}

fn check_mutation(mutation: DangerTestMutation, seeds: std::ops::Range<u64>) {
    let failing = caught(mutation, seeds.clone());
    assert!(
        !failing.is_empty(),
        "no seed in {seeds:?} caught the {mutation:?} mutation: the simulator is too weak"
    );
    for seed in failing {
        let r = run(SimConfig::new(seed));
        assert!(
            r.passed(),
            "seed {seed} fails even without the mutation: {}",
            r.line()
        );
    }
}

#[test]
fn weak_quorum_is_caught() {
    check_mutation(DangerTestMutation::WeakQuorum, 0..60);
}

#[test]
fn skipped_sync_check_is_caught() {
    check_mutation(DangerTestMutation::SkipSyncCheck, 0..400);
}
