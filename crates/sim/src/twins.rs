//! Twins (Bano, Sonnino, Chursin, Perelman, Malkhi, 2020; as used to test DiemBFT):
//! equivocation produced by *real* code.
//!
//! A Byzantine replica is modelled by two correct cores that share one identity and one
//! (simulated) signing key. Each twin sees a different part of the cluster (a partition),
//! so each runs the protocol honestly on different inputs and their combined behaviour is
//! an equivocating replica: two PROPOSEs for one instance when the identity leads, two
//! different WRITEs, ACCEPTs, STOPDATAs or SYNCs otherwise. With f = 1 at n = 4 the twin
//! pair is the one Byzantine identity, so agreement is checked only among the other three.
//!
//! This module gives the standard twin setups for n = 4 ([`scenarios`]) for the bounded
//! search ([`crate::search`]) and a seeded random walk over the same world
//! ([`random_walk`]), which reaches paths far deeper than the exhaustive bound.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use rampart_bft::DangerTestMutation;

use crate::kv::KvOp;
use crate::search::{Choice, Counterexample, Dedup, RequestSpec, SearchConfig, TwinSetup, World};

/// A named twin setup.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name (for reports).
    pub name: &'static str,
    /// The world to explore.
    pub config: SearchConfig,
}

/// The twin node's index in a world of `n` identities.
#[must_use]
pub fn twin_node(n: usize) -> usize {
    n
}

/// A twin of `identity` at n = 4, partitioned into `groups` (node indices; the twin is
/// node 4). Client 0's request goes to the first group, client 1's to the second, so the
/// two twins are given different requests to order.
#[must_use]
pub fn config(
    identity: u8,
    groups: Vec<Vec<usize>>,
    mutation: Option<DangerTestMutation>,
) -> SearchConfig {
    let mut cfg = SearchConfig::small(12);
    cfg.requests = groups
        .iter()
        .take(2)
        .enumerate()
        .map(|(c, g)| RequestSpec {
            client: c as u64,
            op: KvOp::Put(0, c as u64 + 1),
            to: g.clone(),
        })
        .collect();
    cfg.twins = Some(TwinSetup {
        identity,
        groups,
        may_heal: true,
    });
    cfg.mutation = mutation;
    cfg.dedup = Dedup::Exact;
    cfg
}

/// The twin setups used for n = 4 (node 4 is the twin):
/// - `leader-split-2-3`: twins of the regency-0 leader, {0, 1} | {0', 2, 3};
/// - `leader-split-3-2`: twins of the regency-0 leader, {0, 1, 2} | {0', 3};
/// - `next-leader-split`: twins of the regency-1 leader, {1, 0} | {1', 2, 3}, so both
///   twins become leader after a leader change.
#[must_use]
pub fn scenarios(mutation: Option<DangerTestMutation>) -> Vec<Scenario> {
    let t = twin_node(4);
    vec![
        Scenario {
            name: "leader-split-2-3",
            config: config(0, vec![vec![0, 1], vec![t, 2, 3]], mutation),
        },
        Scenario {
            name: "leader-split-3-2",
            config: config(0, vec![vec![0, 1, 2], vec![t, 3]], mutation),
        },
        Scenario {
            name: "next-leader-split",
            config: config(1, vec![vec![1, 0], vec![t, 2, 3]], mutation),
        },
    ]
}

/// What a random walk did.
#[derive(Debug, Clone)]
pub struct WalkReport {
    /// Choices taken.
    pub steps: usize,
    /// Highest instance decided by any node.
    pub max_decided: u64,
    /// The violation, with its path, if one was found.
    pub counterexample: Option<Counterexample>,
}

/// A seeded random walk of at most `steps` choices in `cfg`'s world (its depth and state
/// bounds do not apply; its timer, regency and transfer budgets do). Deliveries are
/// chosen uniformly; a timer fires with probability 1/8 per step when messages are in
/// flight (always when none is), and the partition heals with probability 1/40 per step.
#[must_use]
pub fn random_walk(cfg: &SearchConfig, seed: u64, steps: usize) -> WalkReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = World::new(cfg);
    let mut path = Vec::new();
    for _ in 0..steps {
        let enabled = w.enabled();
        if enabled.is_empty() {
            break;
        }
        let (deliver, other): (Vec<Choice>, Vec<Choice>) = enabled
            .into_iter()
            .map(|(c, _)| c)
            .partition(|c| matches!(c, Choice::Deliver { .. }));
        let heal: Vec<Choice> = other
            .iter()
            .copied()
            .filter(|c| *c == Choice::Heal)
            .collect();
        let timers: Vec<Choice> = other.into_iter().filter(|c| *c != Choice::Heal).collect();
        let c = if !heal.is_empty() && rng.gen_ratio(1, 40) {
            heal[0]
        } else if !timers.is_empty() && (deliver.is_empty() || rng.gen_ratio(1, 8)) {
            timers[rng.gen_range(0..timers.len())]
        } else if !deliver.is_empty() {
            deliver[rng.gen_range(0..deliver.len())]
        } else {
            heal[0]
        };
        w.step(&c);
        path.push(c);
        if w.violation().is_some() {
            return WalkReport {
                steps: path.len(),
                max_decided: w.max_decided(),
                counterexample: Some(crate::search::counterexample(cfg, &path)),
            };
        }
    }
    WalkReport {
        steps: path.len(),
        max_decided: w.max_decided(),
        counterexample: None,
    }
}
