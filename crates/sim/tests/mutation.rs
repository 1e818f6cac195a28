//! Mutation sanity: deliberately broken protocol rules must be caught by the simulator, and
//! the very seeds that catch them must pass with the rules intact.
//!
//! The issue-10 mutations re-introduce fixed findings (1, 3, 8). Each is caught by the
//! strategic adversary playing the named attack for that finding within a few seeds; the
//! original random-only simulator (`rampart sim --mode random`) does not catch them in the
//! same seed range (measured by hand, see the crate's README section on the adversary).

use rampart_bft::DangerTestMutation;
use rampart_sim::adversary::Attack;
use rampart_sim::{SimConfig, run};

fn config(seed: u64, mutation: Option<DangerTestMutation>, attack: Option<Attack>) -> SimConfig {
    let mut cfg = SimConfig::new(seed);
    if attack.is_none() {
        // The pre-existing mutations keep their original (random-only) seed ranges.
        cfg.faults = rampart_sim::Faults::RANDOM;
    }
    cfg.mutation = mutation;
    cfg.attack = attack;
    cfg
}

fn caught(
    mutation: DangerTestMutation,
    attack: Option<Attack>,
    seeds: std::ops::Range<u64>,
) -> Vec<u64> {
    let mut failing = Vec::new();
    for seed in seeds {
        let r = run(config(seed, Some(mutation), attack));
        if !r.passed() {
            println!("mutated {mutation:?}: {}", r.line());
            failing.push(seed);
        }
    }
    failing
}

fn check_mutation(
    mutation: DangerTestMutation,
    attack: Option<Attack>,
    seeds: std::ops::Range<u64>,
) -> Vec<u64> {
    let failing = caught(mutation, attack, seeds.clone());
    assert!(
        !failing.is_empty(),
        "no seed in {seeds:?} caught the {mutation:?} mutation: the simulator is too weak"
    );
    for &seed in &failing {
        let r = run(config(seed, None, attack));
        assert!(
            r.passed(),
            "seed {seed} fails even without the mutation: {}",
            r.line()
        );
    }
    failing
}

#[test]
fn weak_quorum_is_caught() {
    check_mutation(DangerTestMutation::WeakQuorum, None, 0..60);
}

#[test]
fn skipped_sync_check_is_caught() {
    check_mutation(DangerTestMutation::SkipSyncCheck, None, 0..400);
}

/// Finding 1, scenario B: a correct new leader, the lone decider's STOPDATA held, an
/// empty STOPDATA from the colluder.
#[test]
fn forgotten_checkpoint_proof_is_caught_with_a_correct_leader() {
    check_mutation(
        DangerTestMutation::ForgetCheckpointProof,
        Some(Attack::CheckpointReopenSlowStopData),
        0..20,
    );
}

/// Finding 3: unsolicited DECISIONS stall a replica that trusts one claim (liveness or
/// the throughput floor).
#[test]
fn trusting_one_checkpoint_claim_is_caught() {
    check_mutation(
        DangerTestMutation::TrustOneCheckpointClaim,
        Some(Attack::UnsolicitedDecisions),
        0..10,
    );
}
