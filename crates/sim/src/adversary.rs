//! The strategic adversary: up to f colluding Byzantine replicas that share one knowledge
//! pool, and a library of named attacks ([`Attack`]).
//!
//! The colluders run real cores (so they take part in the protocol and learn what a
//! replica learns), and the adversary sits between those cores and the network: it sees
//! every packet any colluder receives and every output any colluder's core emits, records
//! what it can use later (signed STOPDATAs, SYNCs, proposed batches, checkpoint digests,
//! accept certificates) in one [`Knowledge`] pool, and sends any message the colluders can
//! validly produce with *their own* keys: forwarded real certificates and SYNCs, vouches
//! for real checkpoint digests, unprompted state-transfer requests and DECISIONS, STOPs,
//! WRITE/ACCEPT votes for whatever it likes, and, as leader, a SYNC built from the subset
//! of valid STOPDATAs it prefers. It never forges another replica's or client's tag.
//!
//! Each attack is a *strategy*: which replicas collude, which correct replica is the
//! target, which links and message kinds the network holds (see [`crate::network`]), and
//! what the colluders send in reaction to what they learn. Everything derives from the
//! seed.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use rampart_bft::message::{Batch, ReplicaBody, SignedMessage, StopData, Sync};
use rampart_bft::{
    Config, Digest, Message, Output, Principal, Regency, ReplicaId, SeqNo, SimulatedAuthenticator,
    WireLimits,
};

use crate::Node;
use crate::byz::Packet;
use crate::network::{Hold, Kind};

/// A named attack from the library. Each names the finding of issue 10 it re-mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attack {
    /// The pre-existing random behaviours of [`crate::byz`]: the Byzantine cores' own
    /// outputs are rewritten at random (equivocation, silence, forgery, replay, lying
    /// STOPDATA, wrong checkpoints and replies, garbage). No choice, no shared knowledge.
    Random,
    /// Finding 1, scenario A. The network holds the ACCEPTs of every checkpoint instance k
    /// and of k+1 (regency 0) from all but the target, so the target alone decides them;
    /// the colluders send unsolicited DECISIONS naming checkpoint k to the others and vouch
    /// for its real digest, so they install it; when replica 1 (a colluder) leads regency
    /// 1 it builds its SYNC from the STOPDATAs that minimise h (its own empty one and the
    /// victims', never the target's), and then proposes and votes for a different batch
    /// for the victims' open instance.
    CheckpointReopenLeader,
    /// Finding 1, scenario B: as above up to the leader change, but the new leader
    /// (replica 1) is correct; the target's STOPDATA is held by the network and the
    /// colluders send empty STOPDATAs, and vote for whatever the new regency proposes.
    CheckpointReopenSlowStopData,
    /// Finding 3: the colluders keep sending unsolicited DECISIONS naming a checkpoint
    /// above everyone's log (mostly to the current leader) and unsolicited STATE DIGESTS
    /// naming real checkpoint digests, and vouch for real digests when asked.
    UnsolicitedDecisions,
    /// Finding 4: the network isolates one correct replica (everything to it held) long
    /// enough that it needs a state transfer, then holds every CHUNK to it, so the
    /// checkpoint it picked is garbage-collected by its providers during the download; the
    /// colluders vouch for old checkpoints and never serve chunks.
    DropCheckpointMidTransfer,
    /// Finding 9a: the first leader (a colluder) is silent, and the adversary crashes
    /// every correct replica right after it installs a regency it leads (its SYNC signed
    /// and sent), then restarts it from its storage.
    RestartLeaderAfterSync,
    /// Finding 8: a Byzantine client sends its requests to one follower only, and the
    /// colluders echo every STOP they see (any replica may join a leader change).
    OneFollowerClient,
    /// Colluders forward every real SYNC they learn (inside DECISIONS) to chosen peers,
    /// vote for every proposal they see, and send different STOPDATAs to different
    /// peers (the truthful one to the leader, stripped ones to the rest, or the reverse).
    ForwardAndSplit,
}

impl Attack {
    /// The library, in the order `--attack` lists it.
    pub const ALL: [Attack; 8] = [
        Attack::Random,
        Attack::CheckpointReopenLeader,
        Attack::CheckpointReopenSlowStopData,
        Attack::UnsolicitedDecisions,
        Attack::DropCheckpointMidTransfer,
        Attack::RestartLeaderAfterSync,
        Attack::OneFollowerClient,
        Attack::ForwardAndSplit,
    ];

    /// Short name for summaries.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Attack::Random => "random",
            Attack::CheckpointReopenLeader => "f1a-checkpoint-reopen-leader",
            Attack::CheckpointReopenSlowStopData => "f1b-checkpoint-reopen-slow-stopdata",
            Attack::UnsolicitedDecisions => "f3-unsolicited-decisions",
            Attack::DropCheckpointMidTransfer => "f4-drop-checkpoint-mid-transfer",
            Attack::RestartLeaderAfterSync => "f9a-restart-leader-after-sync",
            Attack::OneFollowerClient => "f8-one-follower-client",
            Attack::ForwardAndSplit => "forward-and-split",
        }
    }

    /// Parse a [`Attack::name`].
    #[must_use]
    pub fn from_name(s: &str) -> Option<Attack> {
        Attack::ALL.into_iter().find(|a| a.name() == s)
    }

    /// Whether this attack needs network control (holds) rather than the random network.
    #[must_use]
    pub fn holds_network(self) -> bool {
        matches!(
            self,
            Attack::CheckpointReopenLeader
                | Attack::CheckpointReopenSlowStopData
                | Attack::DropCheckpointMidTransfer
        )
    }
}

/// Who does what in one run of an attack.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The attack.
    pub attack: Attack,
    /// The colluding Byzantine replicas (at most f).
    pub colluders: Vec<u8>,
    /// The correct replica singled out (the lone decider, the isolated one), if any.
    pub target: Option<u8>,
    /// The other correct replicas.
    pub victims: Vec<u8>,
}

impl Plan {
    /// Derive the roles of `attack` for n replicas from `rng`.
    #[must_use]
    pub fn derive(attack: Attack, n: usize, f: usize, rng: &mut ChaCha8Rng) -> Plan {
        let n8 = n as u8;
        let pick_from = |pool: &mut Vec<u8>, rng: &mut ChaCha8Rng| -> u8 {
            let i = rng.gen_range(0..pool.len());
            pool.remove(i)
        };
        let mut colluders: Vec<u8> = Vec::new();
        let mut rest: Vec<u8> = (0..n8).collect();
        match attack {
            // The leader of regency 1 colludes.
            Attack::CheckpointReopenLeader => {
                rest.retain(|r| *r != 1);
                colluders.push(1);
            }
            // Replicas 0 and 1 (leaders of regencies 0 and 1) are correct.
            Attack::CheckpointReopenSlowStopData => {}
            // The first leader colludes (and is silent).
            Attack::RestartLeaderAfterSync => {
                rest.retain(|r| *r != 0);
                colluders.push(0);
            }
            _ => {}
        }
        let count = match attack {
            // Throughput-floor attacks use exactly one Byzantine replica.
            Attack::UnsolicitedDecisions | Attack::OneFollowerClient => 1,
            _ => rng.gen_range(1..=f.max(1)),
        };
        while colluders.len() < count {
            let mut eligible: Vec<u8> = rest
                .iter()
                .copied()
                .filter(|r| attack != Attack::CheckpointReopenSlowStopData || *r >= 2)
                .collect();
            if eligible.is_empty() {
                break;
            }
            let r = pick_from(&mut eligible, rng);
            rest.retain(|x| *x != r);
            colluders.push(r);
        }
        colluders.sort_unstable();
        let target = match attack {
            Attack::CheckpointReopenLeader | Attack::CheckpointReopenSlowStopData => {
                // Neither the first leader nor the next one.
                let mut eligible: Vec<u8> = rest.iter().copied().filter(|r| *r >= 2).collect();
                if eligible.is_empty() {
                    None
                } else {
                    Some(pick_from(&mut eligible, rng))
                }
            }
            Attack::DropCheckpointMidTransfer => {
                let mut eligible: Vec<u8> = rest.iter().copied().filter(|r| *r != 0).collect();
                Some(pick_from(&mut eligible, rng))
            }
            _ => None,
        };
        let victims = rest.into_iter().filter(|r| Some(*r) != target).collect();
        Plan {
            attack,
            colluders,
            target,
            victims,
        }
    }

    /// The network holds this plan needs, before GST at `gst` (virtual ns).
    #[must_use]
    pub fn holds(&self, cfg: &Config, gst: u64, rng: &mut ChaCha8Rng) -> Vec<Hold> {
        let mut holds = Vec::new();
        match (self.attack, self.target) {
            (Attack::CheckpointReopenLeader | Attack::CheckpointReopenSlowStopData, Some(t)) => {
                // Only the target decides checkpoint instances and the one after them.
                holds.push(Hold {
                    kinds: vec![Kind::Accept],
                    from: None,
                    to: self.victims.clone(),
                    start: 0,
                    until: gst,
                    regency_max: Some(0),
                    checkpoint_window: Some(cfg.checkpoint_interval),
                });
                if self.attack == Attack::CheckpointReopenSlowStopData {
                    holds.push(Hold {
                        kinds: vec![Kind::StopData],
                        from: Some(t),
                        to: Vec::new(),
                        start: 0,
                        until: gst,
                        regency_max: None,
                        checkpoint_window: None,
                    });
                }
            }
            (Attack::DropCheckpointMidTransfer, Some(t)) => {
                // Cut the target off long enough to fall behind the log, then hold its
                // chunks until the providers moved on.
                let cut = rng.gen_range(gst / 10..gst / 3);
                let len = rng.gen_range(gst / 5..gst / 2);
                holds.push(Hold {
                    kinds: Vec::new(),
                    from: None,
                    to: vec![t],
                    start: cut,
                    until: cut + len,
                    regency_max: None,
                    checkpoint_window: None,
                });
                holds.push(Hold {
                    kinds: vec![Kind::Chunk],
                    from: None,
                    to: vec![t],
                    start: cut + len,
                    until: gst,
                    regency_max: None,
                    checkpoint_window: None,
                });
            }
            _ => {}
        }
        holds
    }
}

/// Bounds on what the pool remembers.
const POOL_REGENCIES_MAX: usize = 8;
const POOL_PROPOSALS_MAX: usize = 32;
const POOL_CHECKPOINTS_MAX: usize = 8;

/// Everything any colluder learned (bounded: old entries are evicted first).
#[derive(Debug, Default)]
pub struct Knowledge {
    /// Valid signed STOPDATAs received, by regency and sender.
    pub stopdatas: BTreeMap<u64, BTreeMap<u8, SignedMessage>>,
    /// SYNCs seen, by regency.
    pub syncs: BTreeMap<u64, SignedMessage>,
    /// Batches proposed (PROPOSE or SYNC), by `(regency, cid)`.
    pub proposals: BTreeMap<(u64, u64), Batch>,
    /// Real checkpoint digests: `cid → (digest, chunk count)`.
    pub checkpoints: BTreeMap<u64, (Digest, u32)>,
    /// Highest instance any message named.
    pub max_cid: u64,
    /// Highest regency any message named.
    pub max_regency: u64,
}

fn trim<K: Ord + Copy, V>(m: &mut BTreeMap<K, V>, max: usize) {
    while m.len() > max {
        let Some(k) = m.keys().next().copied() else {
            return;
        };
        m.remove(&k);
    }
}

impl Knowledge {
    fn learn(&mut self, m: &SignedMessage, cfg: &Config) {
        match &m.body {
            ReplicaBody::Propose {
                regency,
                cid,
                batch,
            } => {
                self.proposals.insert((regency.0, cid.0), batch.clone());
                self.max_cid = self.max_cid.max(cid.0);
                self.max_regency = self.max_regency.max(regency.0);
            }
            ReplicaBody::Write { regency, cid, .. } | ReplicaBody::Accept { regency, cid, .. } => {
                self.max_cid = self.max_cid.max(cid.0);
                self.max_regency = self.max_regency.max(regency.0);
            }
            ReplicaBody::StopData(sd) => {
                if let Some((c, b)) = &sd.written {
                    self.proposals.insert((c.regency.0, c.cid.0), b.clone());
                }
                self.stopdatas
                    .entry(sd.regency.0)
                    .or_default()
                    .insert(m.from.0, m.clone());
                trim(&mut self.stopdatas, POOL_REGENCIES_MAX);
            }
            ReplicaBody::Sync(s) => {
                self.proposals
                    .insert((s.regency.0, s.cid.0), s.batch.clone());
                self.syncs.insert(s.regency.0, m.clone());
                trim(&mut self.syncs, POOL_REGENCIES_MAX);
                self.max_regency = self.max_regency.max(s.regency.0);
            }
            ReplicaBody::Decisions {
                decisions,
                regency_proof,
                ..
            } => {
                for d in decisions {
                    self.max_cid = self.max_cid.max(d.cid().0);
                }
                if let Some(p) = regency_proof {
                    self.learn(p, cfg);
                }
            }
            ReplicaBody::StateDigests { checkpoints } => {
                for (c, d, t) in checkpoints {
                    // Only what a correct replica could have: a multiple of the interval.
                    if c.0 % cfg.checkpoint_interval == 0 {
                        self.checkpoints.insert(c.0, (*d, *t));
                    }
                }
                trim(&mut self.checkpoints, POOL_CHECKPOINTS_MAX);
            }
            _ => {}
        }
        trim(&mut self.proposals, POOL_PROPOSALS_MAX);
    }
}

/// A packet with an extra delay (ns) the adversary wants before it is sent.
pub type Timed = (u64, Packet);

/// The colluders' shared brain.
pub struct Adversary {
    /// Roles.
    pub plan: Plan,
    /// What the colluders know.
    pub pool: Knowledge,
    cfg: Config,
    limits: WireLimits,
    auths: BTreeMap<u8, SimulatedAuthenticator>,
    /// `(colluder, regency, cid, digest)` votes already cast.
    voted: BTreeSet<(u8, u64, u64, Digest)>,
    /// STOPs already echoed: `(colluder, regency)`.
    echoed: BTreeSet<(u8, u64)>,
    /// Checkpoints already claimed to the victims.
    claimed: BTreeSet<u64>,
    /// Reopen attempts: regency → (cid, PROPOSE/votes to resend, times left).
    reopen: BTreeMap<u64, (Vec<Packet>, u32)>,
    /// Moves made (for the summary).
    pub moves: u64,
}

impl Adversary {
    /// An adversary for `plan`; colluders sign with their own keys of cluster `seed`.
    #[must_use]
    pub fn new(plan: Plan, cfg: &Config, seed: u64) -> Adversary {
        let auths = plan
            .colluders
            .iter()
            .map(|r| {
                (
                    *r,
                    SimulatedAuthenticator::new(Principal::Replica(ReplicaId(*r)), seed),
                )
            })
            .collect();
        Adversary {
            plan,
            pool: Knowledge::default(),
            cfg: cfg.clone(),
            limits: WireLimits::from_config(cfg),
            auths,
            voted: BTreeSet::new(),
            echoed: BTreeSet::new(),
            claimed: BTreeSet::new(),
            reopen: BTreeMap::new(),
            moves: 0,
        }
    }

    /// Whether `r` is a colluder.
    #[must_use]
    pub fn colludes(&self, r: u8) -> bool {
        self.plan.colluders.contains(&r)
    }

    fn correct(&self) -> Vec<u8> {
        (0..self.cfg.replicas as u8)
            .filter(|r| !self.colludes(*r))
            .collect()
    }

    fn sign(&self, r: u8, body: ReplicaBody) -> Vec<u8> {
        let auth = &self.auths[&r];
        Message::Replica(SignedMessage::new(auth, ReplicaId(r), body)).encode()
    }

    fn send_to_correct(&mut self, r: u8, body: ReplicaBody, out: &mut Vec<Timed>, delay: u64) {
        let bytes = self.sign(r, body);
        for d in self.correct() {
            out.push((delay, (Node::Replica(r), Node::Replica(d), bytes.clone())));
        }
        self.moves += 1;
    }

    /// A colluder `at` received `bytes` from `from`: learn, and react.
    pub fn observe(&mut self, at: u8, from: Node, bytes: &[u8]) -> Vec<Timed> {
        let mut out = Vec::new();
        let Ok(Message::Replica(m)) = Message::decode(bytes, &self.limits) else {
            return out;
        };
        let Node::Replica(sender) = from else {
            return out;
        };
        if sender != m.from.0 || self.colludes(sender) {
            return out;
        }
        self.pool.learn(&m, &self.cfg);
        let attack = self.plan.attack;
        match &m.body {
            ReplicaBody::Stop { regency }
                if matches!(attack, Attack::OneFollowerClient | Attack::ForwardAndSplit)
                    && self.echoed.insert((at, regency.0)) =>
            {
                // Join every leader change anyone starts.
                self.send_to_correct(at, ReplicaBody::Stop { regency: *regency }, &mut out, 0);
            }
            ReplicaBody::Propose {
                regency,
                cid,
                batch,
            } if self.votes_for_everything() && regency.0 >= 1 => {
                self.vote(at, *regency, *cid, batch.digest(), &mut out);
            }
            ReplicaBody::Sync(s) if self.votes_for_everything() => {
                self.vote(at, s.regency, s.cid, s.batch.digest(), &mut out);
            }
            _ => {}
        }
        out
    }

    fn votes_for_everything(&self) -> bool {
        matches!(
            self.plan.attack,
            Attack::CheckpointReopenLeader
                | Attack::CheckpointReopenSlowStopData
                | Attack::ForwardAndSplit
        )
    }

    /// Every colluder sends WRITE and ACCEPT for `(regency, cid, digest)` (once).
    fn vote(
        &mut self,
        _at: u8,
        regency: Regency,
        cid: SeqNo,
        digest: Digest,
        out: &mut Vec<Timed>,
    ) {
        for c in self.plan.colluders.clone() {
            if !self.voted.insert((c, regency.0, cid.0, digest)) {
                continue;
            }
            for body in [
                ReplicaBody::Write {
                    regency,
                    cid,
                    digest,
                },
                ReplicaBody::Accept {
                    regency,
                    cid,
                    digest,
                },
            ] {
                self.send_to_correct(c, body, out, 2_000_000);
            }
        }
    }

    /// A colluder's own core emitted `out`. `Some(packets)` replaces what the core wanted
    /// to send; `None` leaves it to [`crate::byz`].
    pub fn on_output(&mut self, r: u8, out: &Output, rng: &mut ChaCha8Rng) -> Option<Vec<Timed>> {
        let attack = self.plan.attack;
        match out {
            Output::Checkpoint { cid, .. } | Output::StateInstalled { cid, .. } => {
                // Its own checkpoints are real; digests come from its StateDigests answers.
                self.pool.max_cid = self.pool.max_cid.max(cid.0);
                None
            }
            Output::Send { msg, .. } | Output::Broadcast { msg } => {
                let Message::Replica(m) = msg else {
                    return None;
                };
                self.pool.learn(m, &self.cfg);
                match &m.body {
                    ReplicaBody::StopData(sd) => self.stopdata(r, sd, out, rng),
                    ReplicaBody::Sync(s) if attack == Attack::CheckpointReopenLeader => {
                        Some(self.reopen_sync(r, s))
                    }
                    ReplicaBody::Chunk { .. } if attack == Attack::DropCheckpointMidTransfer => {
                        Some(Vec::new())
                    }
                    ReplicaBody::Propose { .. }
                    | ReplicaBody::Write { .. }
                    | ReplicaBody::Accept { .. }
                    | ReplicaBody::Sync(_)
                        if attack == Attack::RestartLeaderAfterSync && r == 0 =>
                    {
                        // A silent first leader, to force leader changes.
                        Some(Vec::new())
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn stopdata(
        &mut self,
        r: u8,
        sd: &StopData,
        out: &Output,
        rng: &mut ChaCha8Rng,
    ) -> Option<Vec<Timed>> {
        let empty = StopData {
            regency: sd.regency,
            last_decided: None,
            written: None,
        };
        let leader = self.cfg.leader(sd.regency).0;
        match self.plan.attack {
            Attack::CheckpointReopenSlowStopData | Attack::CheckpointReopenLeader => {
                self.moves += 1;
                let b = self.sign(r, ReplicaBody::StopData(empty));
                Some(vec![(0, (Node::Replica(r), Node::Replica(leader), b))])
            }
            Attack::ForwardAndSplit => {
                self.moves += 1;
                let truthful = match out {
                    Output::Send { msg, .. } | Output::Broadcast { msg } => msg.encode(),
                    _ => return None,
                };
                let stripped = self.sign(r, ReplicaBody::StopData(empty));
                let leader_gets_truth = rng.gen_bool(0.5);
                let mut v = Vec::new();
                for d in 0..self.cfg.replicas as u8 {
                    if d == r {
                        continue;
                    }
                    let to_leader = d == leader;
                    let bytes = if to_leader == leader_gets_truth {
                        truthful.clone()
                    } else {
                        stripped.clone()
                    };
                    v.push((0, (Node::Replica(r), Node::Replica(d), bytes)));
                }
                Some(v)
            }
            _ => None,
        }
    }

    /// Finding 1 A: replace the core's SYNC by one built from the STOPDATAs that minimise
    /// h (never the target's), sent to the victims, then propose and vote for a different
    /// batch for the victims' open instance.
    fn reopen_sync(&mut self, r: u8, honest: &Sync) -> Vec<Timed> {
        let regency = honest.regency;
        let q = self.cfg.quorum();
        let mut honest_pkts = Vec::new();
        let hb = self.sign(r, ReplicaBody::Sync(honest.clone()));
        for d in 0..self.cfg.replicas as u8 {
            if d != r {
                honest_pkts.push((0, (Node::Replica(r), Node::Replica(d), hb.clone())));
            }
        }
        let own = SignedMessage::new(
            &self.auths[&r],
            ReplicaId(r),
            ReplicaBody::StopData(StopData {
                regency,
                last_decided: None,
                written: None,
            }),
        );
        let mut candidates: Vec<SignedMessage> = vec![own];
        if let Some(m) = self.pool.stopdatas.get(&regency.0) {
            for (from, sm) in m {
                if Some(*from) != self.plan.target && !self.colludes(*from) {
                    candidates.push(sm.clone());
                }
            }
        }
        for c in &self.plan.colluders {
            if *c != r && candidates.len() < q {
                candidates.push(SignedMessage::new(
                    &self.auths[c],
                    ReplicaId(*c),
                    ReplicaBody::StopData(StopData {
                        regency,
                        last_decided: None,
                        written: None,
                    }),
                ));
            }
        }
        let last = |m: &SignedMessage| match &m.body {
            ReplicaBody::StopData(sd) => sd.last_cid().0,
            _ => 0,
        };
        candidates.sort_by_key(last);
        candidates.truncate(q);
        if candidates.len() < q {
            return honest_pkts;
        }
        // h as the reported last-decided instances alone say.
        let h = candidates.iter().map(last).max().unwrap_or(0);
        // The victims' open instance (one above their proofs, or their write certificates).
        let mut open = 0;
        let mut written: Option<Batch> = None;
        for m in &candidates {
            if let ReplicaBody::StopData(sd) = &m.body {
                open = open.max(sd.last_cid().0 + 1);
                if let Some((c, b)) = &sd.written
                    && c.cid.0 >= open
                {
                    open = c.cid.0;
                    written = Some(b.clone());
                }
            }
        }
        if h + 1 >= open {
            // Nothing to gain: the honest SYNC.
            return honest_pkts;
        }
        self.moves += 1;
        let sync = Sync {
            regency,
            cid: SeqNo(h + 1),
            batch: honest.batch.clone(),
            proofs: candidates,
        };
        let sb = self.sign(r, ReplicaBody::Sync(sync));
        let mut out: Vec<Timed> = Vec::new();
        for d in 0..self.cfg.replicas as u8 {
            if d == r {
                continue;
            }
            let bytes = if Some(d) == self.plan.target {
                hb.clone()
            } else {
                sb.clone()
            };
            out.push((0, (Node::Replica(r), Node::Replica(d), bytes)));
        }
        let base = written
            .or_else(|| self.pool.proposals.get(&(0, open)).cloned())
            .unwrap_or_else(|| honest.batch.clone());
        let other = crate::byz::other_batch(&base);
        let digest = other.digest();
        let mut again = Vec::new();
        let pb = self.sign(
            r,
            ReplicaBody::Propose {
                regency,
                cid: SeqNo(open),
                batch: other,
            },
        );
        for d in &self.plan.victims {
            again.push((Node::Replica(r), Node::Replica(*d), pb.clone()));
        }
        for c in self.plan.colluders.clone() {
            for body in [
                ReplicaBody::Write {
                    regency,
                    cid: SeqNo(open),
                    digest,
                },
                ReplicaBody::Accept {
                    regency,
                    cid: SeqNo(open),
                    digest,
                },
            ] {
                let b = self.sign(c, body);
                for d in &self.plan.victims {
                    again.push((Node::Replica(c), Node::Replica(*d), b.clone()));
                }
            }
        }
        for p in &again {
            out.push((40_000_000, p.clone()));
        }
        self.reopen.insert(regency.0, (again, 5));
        out
    }

    /// Periodic moves; called every few virtual ms before and after GST.
    pub fn tick(&mut self, rng: &mut ChaCha8Rng) -> Vec<Timed> {
        let mut out = Vec::new();
        let colluders = self.plan.colluders.clone();
        if colluders.is_empty() {
            return out;
        }
        let c = colluders[rng.gen_range(0..colluders.len())];
        match self.plan.attack {
            Attack::CheckpointReopenLeader
            | Attack::CheckpointReopenSlowStopData
            | Attack::DropCheckpointMidTransfer => {
                // Learn the real checkpoints of the target (an unprompted state request).
                if let Some(t) = self.plan.target {
                    let b = self.sign(c, ReplicaBody::StateRequest);
                    out.push((0, (Node::Replica(c), Node::Replica(t), b)));
                }
                // Name each real checkpoint to the victims once, and vouch for it.
                let fresh: Vec<(u64, (Digest, u32))> = self
                    .pool
                    .checkpoints
                    .iter()
                    .filter(|(k, _)| !self.claimed.contains(k))
                    .map(|(k, v)| (*k, *v))
                    .collect();
                for (k, (d, t)) in fresh {
                    self.claimed.insert(k);
                    for col in &colluders {
                        let claim = ReplicaBody::Decisions {
                            decisions: Vec::new(),
                            checkpoint: Some(SeqNo(k)),
                            regency_proof: None,
                        };
                        let b = self.sign(*col, claim);
                        let digests = self.sign(
                            *col,
                            ReplicaBody::StateDigests {
                                checkpoints: vec![(SeqNo(k), d, t)],
                            },
                        );
                        for v in &self.plan.victims {
                            out.push((0, (Node::Replica(*col), Node::Replica(*v), b.clone())));
                            out.push((
                                3_000_000,
                                (Node::Replica(*col), Node::Replica(*v), digests.clone()),
                            ));
                        }
                    }
                    self.moves += 1;
                }
                // Re-send pending reopen PROPOSEs and votes a few times.
                for (pkts, left) in self.reopen.values_mut() {
                    if *left > 0 {
                        *left -= 1;
                        out.extend(pkts.iter().cloned().map(|p| (0, p)));
                    }
                }
            }
            Attack::UnsolicitedDecisions => {
                let leader = self.cfg.leader(Regency(self.pool.max_regency)).0;
                let to = if rng.gen_bool(0.7) && !self.colludes(leader) {
                    leader
                } else {
                    let cs = self.correct();
                    cs[rng.gen_range(0..cs.len())]
                };
                let far = self.pool.max_cid + rng.gen_range(1..4) * self.cfg.checkpoint_interval;
                let claim = ReplicaBody::Decisions {
                    decisions: Vec::new(),
                    checkpoint: Some(SeqNo(far)),
                    regency_proof: None,
                };
                let b = self.sign(c, claim);
                out.push((0, (Node::Replica(c), Node::Replica(to), b)));
                if let Some((k, (d, t))) = self.pool.checkpoints.iter().next_back() {
                    let b = self.sign(
                        c,
                        ReplicaBody::StateDigests {
                            checkpoints: vec![(SeqNo(*k), *d, *t)],
                        },
                    );
                    out.push((0, (Node::Replica(c), Node::Replica(to), b)));
                }
                // Keep learning real digests.
                let cs = self.correct();
                let ask = cs[rng.gen_range(0..cs.len())];
                let b = self.sign(c, ReplicaBody::StateRequest);
                out.push((0, (Node::Replica(c), Node::Replica(ask), b)));
                self.moves += 1;
            }
            Attack::ForwardAndSplit => {
                if let Some((_, s)) = self
                    .pool
                    .syncs
                    .iter()
                    .nth(rng.gen_range(0..self.pool.syncs.len().max(1)))
                {
                    let fwd = ReplicaBody::Decisions {
                        decisions: Vec::new(),
                        checkpoint: None,
                        regency_proof: Some(Box::new(s.clone())),
                    };
                    let cs = self.correct();
                    let to = cs[rng.gen_range(0..cs.len())];
                    let b = self.sign(c, fwd);
                    out.push((0, (Node::Replica(c), Node::Replica(to), b)));
                    self.moves += 1;
                }
            }
            _ => {}
        }
        out
    }
}
