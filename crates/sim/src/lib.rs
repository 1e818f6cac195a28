//! A deterministic, VOPR-style simulator for the Rampart BFT core, with an adversary that
//! chooses its moves.
//!
//! One thread, one seeded RNG (ChaCha8) per concern, virtual time. It runs the *real*
//! [`rampart_bft::Replica`] and [`rampart_bft::Client`] cores; every message goes through
//! the real wire codec. Authentication is **simulated** (keyed BLAKE3, see
//! [`rampart_bft::SimulatedAuthenticator`]): each party holds only its own key.
//!
//! # The adversary
//!
//! Each seed picks (from the adversary's own RNG, so [`Faults::RANDOM`] runs replay the
//! original simulator exactly):
//!
//! - **Byzantine replicas.** Either the original *random* behaviours ([`byz`]: a
//!   Byzantine core's own outputs rewritten by coin flips), or a **named attack** from the
//!   library [`adversary::Attack`], played by up to f *colluding* replicas that share one
//!   knowledge pool of everything any of them received (signed STOPDATAs, SYNCs, proposed
//!   batches, real checkpoint digests). A colluder runs a real core and may additionally
//!   send anything it can validly sign with its *own* key: forwarded real SYNCs and
//!   certificates, vouches for a real checkpoint digest, unsolicited DECISIONS and STATE
//!   DIGESTS, unprompted state requests, STOPs, WRITE/ACCEPT votes for any batch,
//!   different STOPDATAs to different peers, and, as leader, a SYNC built from the subset
//!   of valid STOPDATAs that minimises h followed by a PROPOSE of a different batch for
//!   an instance it knows some replica decided. It never forges another party's tag. One
//!   attack per finding of issue 10 that a replica or the network can mount (1A, 1B, 3,
//!   4, 8, 9a) plus forwarding/splitting; the summary line names the attack played.
//! - **The network** ([`network::NetMode`]): *random* (coin-flip drop, duplicate, replay,
//!   delay, one- and two-way partitions: the original), *adversarial* (the attack's plan,
//!   or the seed, holds chosen message kinds on chosen links, e.g. "ACCEPTs of checkpoint
//!   instances to everyone but the target", "replica 2's STOPDATA"), or *quiet*. This is
//!   partial synchrony: before GST (the heal) a hold may delay a packet arbitrarily but not
//!   forever (it is delivered when the hold ends, at GST at the latest); after GST every
//!   packet is delivered within the delay bound.
//! - **Byzantine clients** with valid keys ([`clients`]): floods, replays of old signed
//!   requests (their own, and honest clients' as network replays), oversize requests,
//!   requests to one follower only. They touch keys the honest clients never use.
//! - **Crashes** of correct replicas, restarting from their durable state and losing any
//!   write not yet persisted; random, or chosen by the attack (finding 9a: the new leader
//!   right after its SYNC).
//!
//! What it does *not* do: it does not search. Attacks are scripted strategies with
//! seed-derived roles and timings; a new attack needs new code in [`adversary`]. Twins and
//! bounded exhaustive search are separate work.
//!
//! # Checks
//!
//! Each run has a *fault phase* followed by a *heal* (GST): partitions and holds end,
//! loss stops, crashed replicas restart. Then every honest client must complete a few more
//! operations within [`SimConfig::liveness_bound`]. Checked along the way and at the end:
//!
//! - **agreement**: no two correct replicas decide different batches for one instance;
//! - **same execution sequence**: every correct replica executes instances in order with no
//!   gap (state transfer jumps to a checkpoint whose digest matches the others');
//! - **checkpoints**: all correct replicas produce the same checkpoint digest for an instance;
//! - **linearizability** of the honest clients' KV history ([`lin`]);
//! - **liveness** after heal, with at most f Byzantine replicas and any Byzantine clients;
//! - **throughput floor**: in runs with exactly one Byzantine replica, a quiet network and
//!   no crashes, the instances decided per virtual second of the fault phase must be at
//!   least half those of the same configuration and seed without any fault (a second,
//!   fault-free run), [`Failure::Throughput`];
//! - no core panics and no timer that fails to advance.
//!
//! Everything derives from the seed, so `run(SimConfig::new(seed))` reproduces a failure
//! exactly (`rampart sim --seed S`).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod adversary;
pub mod byz;
pub mod clients;
pub mod disk;
mod engine;
pub mod kv;
pub mod lin;
pub mod network;
pub mod search;
pub mod twins;

use std::time::Duration;

use rampart_bft::{Config, DangerTestMutation, Digest};

use crate::adversary::Attack;
use crate::byz::Behaviour;
use crate::lin::LinError;

/// A network endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    /// A replica.
    Replica(u8),
    /// A client.
    Client(u64),
}

/// Which fault classes a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Drop, duplicate, delay/reorder, replay, partitions.
    pub network: bool,
    /// Crash and restart correct replicas.
    pub crashes: bool,
    /// Up to f Byzantine replicas.
    pub byzantine: bool,
    /// The Byzantine replicas collude and play a named attack from the library
    /// ([`adversary::Attack`]) most of the time, instead of only the random behaviours.
    pub strategic: bool,
    /// Some runs use the adversarial network (chosen holds, released by GST) or a quiet one
    /// (throughput floor) instead of the random one.
    pub adversarial_network: bool,
    /// Byzantine clients with valid keys ([`clients`]).
    pub byzantine_clients: bool,
    /// Correct replicas persist through the real `FileStorage` on a **simulated** disk
    /// ([`disk`]): a crash keeps any prefix of the unsynced writes, the last one possibly
    /// torn, and loses unsynced directory entries; at half the crashes a bit of a durable
    /// file is flipped, the reopen must report corruption, and the bit is flipped back.
    pub disk: bool,
}

impl Faults {
    /// Everything on.
    pub const ALL: Faults = Faults {
        network: true,
        crashes: true,
        byzantine: true,
        strategic: true,
        adversarial_network: true,
        byzantine_clients: true,
        disk: true,
    };

    /// The original simulator: random network, crashes, random Byzantine behaviours; no
    /// choice, no collusion, no Byzantine clients. Draws exactly the same random numbers
    /// as before the adversary existed, so old seeds replay.
    pub const RANDOM: Faults = Faults {
        network: true,
        crashes: true,
        byzantine: true,
        strategic: false,
        adversarial_network: false,
        byzantine_clients: false,
        disk: false,
    };

    /// No faults at all (the throughput baseline).
    pub const NONE: Faults = Faults {
        network: false,
        crashes: false,
        byzantine: false,
        strategic: false,
        adversarial_network: false,
        byzantine_clients: false,
        disk: false,
    };
}

/// One simulation run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed; everything else random derives from it.
    pub seed: u64,
    /// n.
    pub replicas: usize,
    /// Concurrent clients (one outstanding operation each).
    pub clients: usize,
    /// Virtual duration of the fault phase.
    pub fault_phase: Duration,
    /// After heal, every client must finish `ops_after_heal` operations within this.
    pub liveness_bound: Duration,
    /// Operations per client after heal.
    pub ops_after_heal: usize,
    /// Fault classes.
    pub faults: Faults,
    /// Deliberate protocol breakage (mutation testing).
    pub mutation: Option<DangerTestMutation>,
    /// Play this attack instead of one derived from the seed (needs `faults.byzantine`).
    pub attack: Option<Attack>,
}

impl SimConfig {
    /// Defaults: 4 replicas, 3 clients, 3 s of faults, 60 s liveness bound, all faults.
    #[must_use]
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            replicas: 4,
            clients: 3,
            fault_phase: Duration::from_secs(3),
            liveness_bound: Duration::from_secs(60),
            ops_after_heal: 3,
            faults: Faults::ALL,
            mutation: None,
            attack: None,
        }
    }

    /// The replica configuration used: small limits so that checkpoints, state transfer,
    /// chunking and batching limits are exercised in short runs.
    #[must_use]
    pub fn replica_config(&self) -> Config {
        let mut c = Config::new(self.replicas);
        c.batch_requests_max = 2;
        c.batch_bytes_max = 4096;
        c.request_op_bytes_max = 64;
        c.reply_bytes_max = 64;
        c.pending_requests_max = 64;
        c.clients_max = 32;
        c.checkpoint_interval = 8;
        c.state_chunk_bytes_max = 48;
        c.decisions_per_fetch_max = 4;
        c.request_timeout = Duration::from_millis(300);
        c.retransmit_interval = Duration::from_millis(100);
        c.fetch_timeout = Duration::from_millis(150);
        c.danger_test_mutation = self.mutation;
        c
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// Two correct replicas decided different batches for one instance.
    #[error("agreement violated at cid {cid}: {a:?} vs {b:?} (replica {replica})")]
    Agreement {
        /// Instance.
        cid: u64,
        /// First digest seen.
        a: Digest,
        /// Conflicting digest.
        b: Digest,
        /// Replica that decided `b`.
        replica: u8,
    },
    /// A correct replica executed out of order or skipped an instance.
    #[error("replica {replica} executed cid {got}, expected {expected}")]
    Order {
        /// Replica.
        replica: u8,
        /// Expected instance.
        expected: u64,
        /// Executed instance.
        got: u64,
    },
    /// Correct replicas disagree on a checkpoint digest.
    #[error("checkpoint digest mismatch at cid {cid} (replica {replica})")]
    Checkpoint {
        /// Instance.
        cid: u64,
        /// Replica that disagreed.
        replica: u8,
    },
    /// The client history is not linearizable.
    #[error("history not linearizable: {0}")]
    Linearizability(LinError),
    /// Clients did not finish within the bound after heal.
    #[error(
        "liveness: {unfinished} client(s) unfinished {bound_ms} ms after heal (max decided cid {decided})"
    )]
    Liveness {
        /// Clients still busy.
        unfinished: usize,
        /// The bound.
        bound_ms: u64,
        /// Highest decided instance.
        decided: u64,
    },
    /// A core panicked.
    #[error("panic: {0}")]
    Panic(String),
    /// A node asked to be woken at or before the current time after handling its timeout.
    #[error("timer of {0:?} does not advance")]
    TimerStuck(Node),
    /// With one Byzantine replica and a quiet network, fewer than half the instances per
    /// virtual second of the same configuration without faults were decided.
    #[error(
        "throughput: {rate_milli} decided instances per 1000 virtual s, floor {floor_milli} \
         (half the fault-free rate)"
    )]
    Throughput {
        /// Decided instances per 1000 virtual seconds during the fault phase.
        rate_milli: u64,
        /// Half the fault-free rate, same unit.
        floor_milli: u64,
    },
    /// The simulated disk lost or changed what `FileStorage` acknowledged, or a flipped bit
    /// went undetected.
    #[error("replica {replica} disk: {error}")]
    Disk {
        /// Replica.
        replica: u8,
        /// What went wrong.
        error: String,
    },
    /// A core could not be built (e.g. recovery failed).
    #[error("replica {replica} failed to start: {error}")]
    Start {
        /// Replica.
        replica: u8,
        /// Error text.
        error: String,
    },
}

/// What happened in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Highest decided instance.
    pub decided_max: u64,
    /// Client operations completed.
    pub ops_completed: u64,
    /// Read-only operations completed on the fast path.
    pub read_only_fast: u64,
    /// Read-only operations that fell back to ordering (visible fallback).
    pub read_only_fallbacks: u64,
    /// Regency installations seen (over correct replicas).
    pub regencies: u64,
    /// State transfers completed.
    pub state_transfers: u64,
    /// Replica crashes injected.
    pub crashes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Crashes of a replica on the simulated disk (`FileStorage` reopened after each).
    pub disk_crashes: u64,
    /// Bit flips injected into a crashed replica's durable files and detected on reopen.
    pub bit_flips_detected: u64,
    /// Packets sent.
    pub packets: u64,
    /// Messages rejected by correct replicas as peer faults or undecodable.
    pub rejected: u64,
    /// Byzantine replicas and their behaviours.
    pub byzantine: Vec<(u8, Vec<Behaviour>)>,
    /// The attack played (its [`Attack::name`]).
    pub attack: &'static str,
    /// The network mode ([`network::NetMode::name`]).
    pub net: &'static str,
    /// Byzantine clients' attacks.
    pub byz_clients: Vec<&'static str>,
    /// Adversary moves (crafted messages sent) and packets held by the network.
    pub adversary_moves: u64,
    /// Packets held by the adversarial network.
    pub held: u64,
    /// Highest decided instance at the heal (end of the fault phase).
    pub decided_at_heal: u64,
    /// Decided instances per 1000 virtual seconds during the fault phase.
    pub rate_milli: u64,
    /// Fault-free rate of the same configuration (instances per 1000 virtual s), when the
    /// throughput floor applied to this run.
    pub baseline_milli: Option<u64>,
    /// Virtual time at the end, in ms.
    pub virtual_ms: u64,
}

/// Result of one run.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// `None` if every check passed.
    pub failure: Option<Failure>,
    /// Counters.
    pub summary: Summary,
}

impl SimReport {
    /// Whether all checks passed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// One summary line.
    #[must_use]
    pub fn line(&self) -> String {
        let s = &self.summary;
        let byz: Vec<String> = s
            .byzantine
            .iter()
            .map(|(r, b)| {
                format!(
                    "{r}:{}",
                    b.iter().map(|x| x.name()).collect::<Vec<_>>().join("+")
                )
            })
            .collect();
        let status = match &self.failure {
            None => "PASS".to_string(),
            Some(f) => format!("FAIL ({f})"),
        };
        let clients = if s.byz_clients.is_empty() {
            String::new()
        } else {
            format!(" byz_clients=[{}]", s.byz_clients.join(","))
        };
        format!(
            "seed={} {status} attack={} net={} decided={} ops={} ro_fast={} ro_fallback={} \
             regencies={} state_transfers={} crashes={} disk_crashes={} flips_detected={} \
             partitions={} held={} moves={} rejected={} packets={} byz=[{}]{clients} vt={}ms",
            self.seed,
            s.attack,
            s.net,
            s.decided_max,
            s.ops_completed,
            s.read_only_fast,
            s.read_only_fallbacks,
            s.regencies,
            s.state_transfers,
            s.crashes,
            s.disk_crashes,
            s.bit_flips_detected,
            s.partitions,
            s.held,
            s.adversary_moves,
            s.rejected,
            s.packets,
            byz.join(","),
            s.virtual_ms
        )
    }
}

/// Run one seed, turning a panic inside the cores into a [`Failure::Panic`].
#[must_use]
pub fn run(cfg: SimConfig) -> SimReport {
    let seed = cfg.seed;
    match std::panic::catch_unwind(move || engine::run_checked(cfg)) {
        Ok(r) => r,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            SimReport {
                seed,
                failure: Some(Failure::Panic(msg)),
                summary: Summary::default(),
            }
        }
    }
}
