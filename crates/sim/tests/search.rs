//! Bounded exhaustive search and Twins over the real replica cores (see
//! `rampart_sim::search` and `rampart_sim::twins`).
//!
//! Bigger bounds by hand: `RAMPART_SEARCH_DEPTH=N cargo test -p rampart-sim --test search
//! -- --ignored --nocapture`.

use rampart_bft::DangerTestMutation;
use rampart_sim::search::{self, Choice, Dedup, SearchConfig, Violation};
use rampart_sim::twins;

/// Depth of the plain n = 4 search in the test suite.
const PLAIN_DEPTH: usize = 6;
/// The plain search reached 20,926 distinct states at `PLAIN_DEPTH` when this was
/// measured; fewer than this floor means the search silently stopped exploring.
const PLAIN_STATES_FLOOR: u64 = 20_000;
/// Depth of the twin searches.
const TWINS_DEPTH: usize = 5;
/// Same for each twin scenario (4,878 to 14,648 measured at `TWINS_DEPTH`).
const TWINS_STATES_FLOOR: u64 = 4_000;

#[test]
fn plain_n4_search_finds_no_violation() {
    let cfg = SearchConfig::small(PLAIN_DEPTH);
    let r = search::search(&cfg);
    println!("plain depth {PLAIN_DEPTH}: {}", r.line());
    if let Some(c) = &r.counterexample {
        panic!("violation:\n{c}");
    }
    assert!(!r.truncated, "the bound must be explored completely");
    assert!(r.states >= PLAIN_STATES_FLOOR, "only {} states", r.states);
    assert_eq!(r.max_depth, PLAIN_DEPTH);
}

#[test]
fn twins_searches_find_no_violation() {
    for s in twins::scenarios(None) {
        let mut cfg = s.config;
        cfg.depth = TWINS_DEPTH;
        let r = search::search(&cfg);
        println!("twins {} depth {TWINS_DEPTH}: {}", s.name, r.line());
        if let Some(c) = &r.counterexample {
            panic!("violation in {}:\n{c}", s.name);
        }
        assert!(!r.truncated);
        assert!(
            r.states >= TWINS_STATES_FLOOR,
            "{}: only {} states",
            s.name,
            r.states
        );
    }
}

#[test]
fn twins_random_walks_keep_agreement() {
    let mut decided_walks = 0;
    let mut walks = 0;
    for s in twins::scenarios(None) {
        let mut cfg = s.config;
        cfg.timeouts_max = 12;
        cfg.regency_max = 3;
        cfg.reorders_max = None;
        for seed in 0..150 {
            let r = twins::random_walk(&cfg, seed, 600);
            walks += 1;
            if let Some(c) = &r.counterexample {
                panic!("{} seed {seed}:\n{c}", s.name);
            }
            if r.max_decided > 0 {
                decided_walks += 1;
            }
        }
    }
    println!("{decided_walks} of {walks} twin walks decided at least one instance");
    // Not vacuous: most walks get decisions past the equivocating twins.
    assert!(decided_walks * 2 > walks, "{decided_walks} of {walks}");
}

/// The search bites: with quorums of f+1 the twin leader gets two batches decided for one
/// instance, within the same bound under which the correct protocol shows no violation.
#[test]
fn twins_search_catches_weak_quorum() {
    let s = &twins::scenarios(Some(DangerTestMutation::WeakQuorum))[0];
    let mut cfg = s.config.clone();
    cfg.depth = std::env::var("RAMPART_SEARCH_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(9);
    cfg.dedup = Dedup::Epochs;
    let r = search::search(&cfg);
    println!("twins {} WeakQuorum: {}", s.name, r.line());
    let c = r.counterexample.expect("the search must catch WeakQuorum");
    println!("{c}");
    assert!(
        matches!(c.violation, Violation::Agreement { cid: 1, .. }),
        "{:?}",
        c.violation
    );
    // The counterexample replays, and is a real path.
    let w = search::replay(&cfg, &c.choices);
    assert_eq!(w.violation(), Some(&c.violation));
    // The same path without the mutation reaches no violation (where it is still valid).
    let mut clean = cfg.clone();
    clean.mutation = None;
    let mut w = search::World::new(&clean);
    for ch in &c.choices {
        if !w.step(ch) {
            break;
        }
    }
    assert_eq!(w.violation(), None);
}

#[test]
fn twins_random_walks_catch_weak_quorum() {
    let mut cfg = twins::scenarios(Some(DangerTestMutation::WeakQuorum))[0]
        .config
        .clone();
    cfg.reorders_max = None;
    let caught = (0..50)
        .filter(|seed| {
            twins::random_walk(&cfg, *seed, 600)
                .counterexample
                .is_some()
        })
        .count();
    println!("WeakQuorum caught by {caught} of 50 twin walks");
    assert!(caught > 0);
}

#[test]
fn counterexample_replays_choice_by_choice() {
    // A replay of any path gives the same fingerprint as the path taken step by step.
    let cfg = SearchConfig::small(6);
    let mut w = search::World::new(&cfg);
    let mut path = Vec::new();
    for _ in 0..6 {
        let (c, _) = w.enabled()[0];
        let predicted = w.fingerprint_after(&c);
        assert!(w.step(&c));
        assert_eq!(w.fingerprint(), predicted);
        path.push(c);
    }
    assert_eq!(search::replay(&cfg, &path).fingerprint(), w.fingerprint());
    assert!(!w.step(&Choice::Heal), "no twins, no heal");
}

/// Bigger bounds by hand (`RAMPART_SEARCH_DEPTH`, `RAMPART_SEARCH_DEDUP=epochs`).
#[test]
#[ignore = "long: run by hand with RAMPART_SEARCH_DEPTH"]
fn deep_search() {
    let depth = std::env::var("RAMPART_SEARCH_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(16);
    let epochs = std::env::var("RAMPART_SEARCH_DEDUP").is_ok_and(|d| d == "epochs");
    let mutation = match std::env::var("RAMPART_SEARCH_MUTATION").as_deref() {
        Ok("weak") => Some(DangerTestMutation::WeakQuorum),
        Ok("sync") => Some(DangerTestMutation::SkipSyncCheck),
        _ => None,
    };
    let mut cfg = SearchConfig::small(depth);
    cfg.mutation = mutation;
    if epochs {
        cfg.dedup = Dedup::Epochs;
    }
    let r = search::search(&cfg);
    println!(
        "plain depth {depth} epochs={epochs} {mutation:?}: {}",
        r.line()
    );
    if let Some(c) = &r.counterexample {
        println!("{c}");
    }
    for s in twins::scenarios(mutation) {
        let mut cfg = s.config;
        cfg.depth = depth;
        if epochs {
            cfg.dedup = Dedup::Epochs;
        }
        let r = search::search(&cfg);
        println!("twins {} depth {depth}: {}", s.name, r.line());
    }
}
