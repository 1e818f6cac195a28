//! Bounded exhaustive search over the *real* replica cores.
//!
//! A small, self-contained world: n = 4 identities, each run by a real
//! [`rampart_bft::Replica`] (with [`crate::kv::KvApp`] and **simulated** authentication),
//! optionally with a *twin* (a second correct core sharing an identity and key, see
//! [`crate::twins`]). Client requests are signed by a simulated client key and handed to
//! the chosen replicas before the search starts. Writes become durable at once (no crash
//! is explored here; the seeded simulator covers crashes).
//!
//! # Choice points
//!
//! From every state the search may:
//! - deliver any one in-flight message ([`Choice::Deliver`]); a message never chosen is
//!   as good as dropped, and since agreement is checked in *every* state, dropping needs no
//!   choice of its own;
//! - fire one node's next timer ([`Choice::Timeout`]): that node's clock jumps to its
//!   `poll_timeout()`. Every node has its own clock, so actions on different nodes commute;
//! - heal the twins' partition ([`Choice::Heal`]): messages held back by the partition
//!   become deliverable (everything is delivered after GST).
//!
//! # Bounds and reductions
//!
//! - a depth bound (choices per path), a budget of timer firings and a highest regency a
//!   replica may ask for (so one or two leader changes), at most `state_transfers_max`
//!   installed checkpoints per path, a cap on states;
//! - optionally, a bound on *reorderings within one link* ([`SearchConfig::reorders_max`]):
//!   delivering a message ahead of `k` older ones on the same (sender, receiver) link costs
//!   `k`. `Some(0)` is per-link FIFO (what TCP gives), `None` any order;
//! - **state deduplication.** [`Dedup::Exact`] fingerprints each node by the hash chain of
//!   the inputs it received, in order, plus the heal flag. Cores are deterministic, so two
//!   paths with the same fingerprint reach the same global state (including the in-flight
//!   set, which is a function of what every node received): interleavings that only
//!   reorder actions of different nodes collapse into one state (the partial-order
//!   reduction of this search), and nothing is pruned unsoundly (up to 128-bit hash
//!   collisions). [`Dedup::Epochs`] is coarser and **not sound**: it keeps, per node, the
//!   *multiset* of messages received between two of its timer firings, so it merges
//!   paths that deliver the same messages to a node in another order. It explores deeper
//!   for the same cost, every state it visits is still real and every violation it reports
//!   is real, but it may miss an order-dependent bug.
//!
//! The cores are not `Clone`, so a state is rebuilt by replaying its path from the start
//! (stateless search with a visited-set); a child's fingerprint is computed before it is
//! built, so visited children cost nothing.
//!
//! # Checks, in every state
//!
//! - **agreement** among the non-twin replicas: no two decide different batches for one
//!   instance (twins share the Byzantine identity, so they are not checked);
//! - **checkpoints**: no two non-twin replicas report different digests for one instance;
//! - no core panics (its `invariants()` assertions included).
//!
//! A violation comes with its choice sequence ([`Counterexample`]), replayable with
//! [`replay`]; no shrinking is needed because depth-first search with a depth bound
//! reports the first path it finds, and [`search`] with increasing depth finds a short one.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use rampart_bft::message::ReplicaBody;
use rampart_bft::{
    ClientId, Config, DangerTestMutation, Digest, MemStorage, Message, Output, Peer, Principal,
    Replica, ReplicaId, Request, RequestSeq, SimulatedAuthenticator, Storage, Timestamp,
    WireLimits,
};

use crate::kv::{KvApp, KvOp};

type Core = Replica<KvApp, SimulatedAuthenticator>;

/// Seed of the simulated keys used by the search (public: simulated authentication).
pub const SEARCH_KEY_SEED: u64 = 0x5eec;

/// Index of a node in the search world: `0..n` run identities `0..n`; a twin is `n`.
pub type NodeIx = usize;

/// A message id: the first 16 bytes of the BLAKE3 hash of its wire bytes.
pub type MsgId = [u8; 16];

/// One client request, handed to `to` before the search starts.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// The client (each client sends one request).
    pub client: u64,
    /// The operation.
    pub op: KvOp,
    /// Nodes that receive it.
    pub to: Vec<NodeIx>,
}

/// A twin: a second correct core for identity `identity`, run as node `n`.
#[derive(Debug, Clone)]
pub struct TwinSetup {
    /// The shared identity (replica id and key).
    pub identity: u8,
    /// Groups of nodes that can talk to each other until [`Choice::Heal`]; every node is
    /// in exactly one group. Links between groups hold their messages back.
    pub groups: Vec<Vec<NodeIx>>,
    /// Whether the search may heal the partition.
    pub may_heal: bool,
}

/// How visited states are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedup {
    /// Exact: each node's input sequence (sound).
    Exact,
    /// Per node, the multiset of messages between timer firings (coarser; may miss
    /// order-dependent bugs, never reports a false one).
    Epochs,
}

/// What to search.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// Replicas (identities).
    pub n: usize,
    /// Optional twin.
    pub twins: Option<TwinSetup>,
    /// Requests handed out before the search (one instance each: batches hold one request).
    pub requests: Vec<RequestSpec>,
    /// Deliberate protocol breakage, to show the search finds it.
    pub mutation: Option<DangerTestMutation>,
    /// Checkpoint period.
    pub checkpoint_interval: u64,
    /// Choices per path.
    pub depth: usize,
    /// Timer firings per path (all nodes together).
    pub timeouts_max: u32,
    /// A node may fire its timer only while it asks for a regency below this (so at most
    /// `regency_max` leader changes).
    pub regency_max: u64,
    /// Installed checkpoints (state transfers) per path; paths beyond are cut.
    pub state_transfers_max: u32,
    /// Reorderings within a link per path (`None`: any order).
    pub reorders_max: Option<u32>,
    /// Visited-state recognition.
    pub dedup: Dedup,
    /// Stop after this many distinct states (the report says it was truncated).
    pub states_max: u64,
}

impl SearchConfig {
    /// n = 4, two requests sent to every replica, exact dedup, depth `depth`, two timer
    /// firings, one leader change, per-link FIFO.
    #[must_use]
    pub fn small(depth: usize) -> SearchConfig {
        SearchConfig {
            n: 4,
            twins: None,
            requests: (0..2)
                .map(|c| RequestSpec {
                    client: c,
                    op: KvOp::Put(0, c + 1),
                    to: (0..4).collect(),
                })
                .collect(),
            mutation: None,
            checkpoint_interval: 2,
            depth,
            timeouts_max: 2,
            regency_max: 1,
            state_transfers_max: 1,
            reorders_max: Some(0),
            dedup: Dedup::Exact,
            states_max: 5_000_000,
        }
    }

    /// The replica configuration: one request per batch, small checkpoints, a timer
    /// schedule in which retransmission is rare (the search delivers or withholds every
    /// message itself, so retransmissions would only add branches).
    #[must_use]
    pub fn replica_config(&self) -> Config {
        let mut c = Config::new(self.n);
        c.batch_requests_max = 1;
        c.batch_bytes_max = 4096;
        c.request_op_bytes_max = 64;
        c.reply_bytes_max = 64;
        c.pending_requests_max = 16;
        c.clients_max = 16;
        c.checkpoint_interval = self.checkpoint_interval;
        c.state_chunk_bytes_max = 4096;
        c.decisions_per_fetch_max = 4;
        c.request_timeout = Duration::from_secs(1);
        c.retransmit_interval = Duration::from_secs(3600);
        c.fetch_timeout = Duration::from_secs(1);
        c.danger_test_mutation = self.mutation;
        c
    }

    fn nodes(&self) -> usize {
        self.n + usize::from(self.twins.is_some())
    }
}

/// One choice of the adversary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Choice {
    /// Deliver the in-flight message `id` from node `from` to node `to`.
    Deliver {
        /// Sender node.
        from: NodeIx,
        /// Receiver node.
        to: NodeIx,
        /// Message id.
        id: MsgId,
    },
    /// Fire node's next timer.
    Timeout(NodeIx),
    /// End the twins' partition.
    Heal,
}

/// A property that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two non-twin replicas decided different batches for `cid`.
    Agreement {
        /// Instance.
        cid: u64,
        /// (node, digest) decided first.
        first: (NodeIx, Digest),
        /// (node, digest) that conflicts.
        second: (NodeIx, Digest),
    },
    /// Two non-twin replicas reported different checkpoint digests for `cid`.
    Checkpoint {
        /// Instance.
        cid: u64,
        /// Node that disagreed.
        node: NodeIx,
    },
    /// A core panicked (an invariant assertion, or a bug).
    Panic(String),
}

/// A violation and the choices that lead to it from the initial state.
#[derive(Debug, Clone)]
pub struct Counterexample {
    /// What failed.
    pub violation: Violation,
    /// The path.
    pub choices: Vec<Choice>,
    /// One readable line per choice (decoded message, timer).
    pub steps: Vec<String>,
}

impl std::fmt::Display for Counterexample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:?} after {} choices:",
            self.violation,
            self.choices.len()
        )?;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "  {i:3}: {s}")?;
        }
        Ok(())
    }
}

/// What a search did.
#[derive(Debug, Clone, Default)]
pub struct SearchReport {
    /// Distinct states reached (the initial one included).
    pub states: u64,
    /// Transitions executed, replays included.
    pub steps_executed: u64,
    /// Children skipped because their state was already visited.
    pub dedup_hits: u64,
    /// Longest path explored.
    pub max_depth: usize,
    /// States in which some replica had decided at least one instance.
    pub states_with_decision: u64,
    /// Highest instance decided in any state.
    pub max_decided: u64,
    /// Highest regency installed by a replica in any state.
    pub max_regency: u64,
    /// States reached after a checkpoint was installed by state transfer.
    pub states_after_transfer: u64,
    /// Whether `states_max` stopped the search early.
    pub truncated: bool,
    /// The first violation found, if any.
    pub counterexample: Option<Counterexample>,
}

impl SearchReport {
    /// One summary line.
    #[must_use]
    pub fn line(&self) -> String {
        format!(
            "states={} steps={} dedup_hits={} max_depth={} states_with_decision={} \
             max_decided={} max_regency={} states_after_transfer={} truncated={} {}",
            self.states,
            self.steps_executed,
            self.dedup_hits,
            self.max_depth,
            self.states_with_decision,
            self.max_decided,
            self.max_regency,
            self.states_after_transfer,
            self.truncated,
            match &self.counterexample {
                None => "no violation".to_string(),
                Some(c) => format!("VIOLATION {:?} at depth {}", c.violation, c.choices.len()),
            }
        )
    }
}

struct InFlight {
    id: MsgId,
    bytes: Vec<u8>,
}

struct NodeSlot {
    id: ReplicaId,
    twin: bool,
    core: Core,
    storage: MemStorage,
    clock: u64,
    /// Exact fingerprint: hash chain of inputs.
    chain: u128,
    /// Epochs fingerprint: hash of closed epochs and the multiset sum of the open one.
    epochs_closed: u128,
    epoch_sum: u128,
    /// Sends so far (orders messages within a link).
    sent: u64,
    last_decided: u64,
}

/// The world the search explores. Built only by [`World::new`] and changed only by
/// [`World::step`], so a path replays exactly.
pub struct World {
    cfg: SearchConfig,
    limits: WireLimits,
    nodes: Vec<NodeSlot>,
    /// `(from, to, sender's send number)` → message.
    inflight: BTreeMap<(NodeIx, NodeIx, u64), InFlight>,
    group: Vec<usize>,
    healed: bool,
    timeouts_used: u32,
    reorders_used: u32,
    state_transfers: u32,
    max_regency: u64,
    decided: BTreeMap<u64, (NodeIx, Digest)>,
    checkpoints: BTreeMap<u64, Digest>,
    violation: Option<Violation>,
}

fn h128(parts: &[&[u8]]) -> u128 {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let b = h.finalize();
    let mut x = [0u8; 16];
    x.copy_from_slice(&b.as_bytes()[..16]);
    u128::from_le_bytes(x)
}

fn msg_id(bytes: &[u8]) -> MsgId {
    let mut x = [0u8; 16];
    x.copy_from_slice(&blake3::hash(bytes).as_bytes()[..16]);
    x
}

impl World {
    /// The initial state: cores built, their start-up catch-up exchanged, requests handed
    /// out, the first PROPOSE in flight.
    ///
    /// # Panics
    /// If the configuration is invalid (a test bug).
    #[must_use]
    pub fn new(cfg: &SearchConfig) -> World {
        let rcfg = cfg.replica_config();
        let limits = WireLimits::from_config(&rcfg);
        let mut nodes = Vec::new();
        for ix in 0..cfg.nodes() {
            let (id, twin) = match &cfg.twins {
                Some(t) if ix == cfg.n => (t.identity, true),
                Some(t) => (ix as u8, ix as u8 == t.identity),
                None => (ix as u8, false),
            };
            let auth =
                SimulatedAuthenticator::new(Principal::Replica(ReplicaId(id)), SEARCH_KEY_SEED);
            let core = Replica::new(
                rcfg.clone(),
                ReplicaId(id),
                auth,
                KvApp::default(),
                rampart_bft::RecoveredState::default(),
                ix as u64 + 1,
                Timestamp(0),
            )
            .expect("search replica config is valid");
            nodes.push(NodeSlot {
                id: ReplicaId(id),
                twin,
                core,
                storage: MemStorage::default(),
                clock: 0,
                chain: 0,
                epochs_closed: 0,
                epoch_sum: 0,
                sent: 0,
                last_decided: 0,
            });
        }
        let mut group = vec![0; cfg.nodes()];
        if let Some(t) = &cfg.twins {
            for (g, members) in t.groups.iter().enumerate() {
                for m in members {
                    group[*m] = g;
                }
            }
        }
        let mut w = World {
            cfg: cfg.clone(),
            limits,
            nodes,
            inflight: BTreeMap::new(),
            group,
            healed: false,
            timeouts_used: 0,
            reorders_used: 0,
            state_transfers: 0,
            max_regency: 0,
            decided: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            violation: None,
        };
        // Start-up: every core's first timer (its catch-up probe), answered in FIFO order.
        for ix in 0..w.nodes.len() {
            w.drain(ix);
            w.nodes[ix].core.handle_timeout(Timestamp(0));
            w.drain(ix);
        }
        while let Some(key) = w
            .inflight
            .keys()
            .find(|(f, t, _)| w.deliverable(*f, *t))
            .copied()
        {
            let m = w.inflight.remove(&key).expect("key just found");
            w.deliver_bytes(key.0, key.1, &m.bytes);
        }
        // Requests, signed by simulated client keys.
        for r in &cfg.requests {
            let auth =
                SimulatedAuthenticator::new(Principal::Client(ClientId(r.client)), SEARCH_KEY_SEED);
            let req = Request::new_signed(
                &auth,
                ClientId(r.client),
                RequestSeq(1),
                false,
                r.op.encode(),
            );
            for &to in &r.to {
                let _ = w.nodes[to].core.handle_request(Timestamp(0), req.clone());
                w.drain(to);
            }
        }
        w
    }

    fn deliverable(&self, from: NodeIx, to: NodeIx) -> bool {
        self.healed || self.group[from] == self.group[to]
    }

    /// The first violation seen on this path.
    #[must_use]
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Number of messages in flight (deliverable or held back by a partition).
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Highest instance decided by any node.
    #[must_use]
    pub fn max_decided(&self) -> u64 {
        self.nodes.iter().map(|n| n.last_decided).max().unwrap_or(0)
    }

    fn cut(&self) -> bool {
        self.violation.is_some() || self.state_transfers > self.cfg.state_transfers_max
    }

    /// Choices available here, each with its reordering cost, within the budgets.
    #[must_use]
    pub fn enabled(&self) -> Vec<(Choice, u32)> {
        let mut out = Vec::new();
        if self.cut() {
            return out;
        }
        let mut ahead: BTreeMap<(NodeIx, NodeIx), u32> = BTreeMap::new();
        for (&(from, to, _), m) in &self.inflight {
            if !self.deliverable(from, to) {
                continue;
            }
            let k = ahead.entry((from, to)).or_insert(0);
            let cost = *k;
            *k += 1;
            if self
                .cfg
                .reorders_max
                .is_none_or(|max| self.reorders_used + cost <= max)
            {
                let cost = if self.cfg.reorders_max.is_some() {
                    cost
                } else {
                    0
                };
                out.push((Choice::Deliver { from, to, id: m.id }, cost));
            }
        }
        if self.timeouts_used < self.cfg.timeouts_max {
            for (ix, n) in self.nodes.iter().enumerate() {
                if n.core.status().stop_target.0 < self.cfg.regency_max
                    && n.core.poll_timeout().is_some()
                {
                    out.push((Choice::Timeout(ix), 0));
                }
            }
        }
        if !self.healed && self.cfg.twins.as_ref().is_some_and(|t| t.may_heal) {
            out.push((Choice::Heal, 0));
        }
        out
    }

    /// The fingerprint of this state.
    #[must_use]
    pub fn fingerprint(&self) -> u128 {
        self.fingerprint_with(None)
    }

    /// The fingerprint the state would have after `c`, without taking it.
    #[must_use]
    pub fn fingerprint_after(&self, c: &Choice) -> u128 {
        self.fingerprint_with(Some(c))
    }

    fn node_fp(&self, ix: NodeIx, c: Option<&Choice>) -> u128 {
        let n = &self.nodes[ix];
        match (self.cfg.dedup, c) {
            (Dedup::Exact, Some(Choice::Deliver { from, to, id })) if *to == ix => {
                h128(&[b"d", &n.chain.to_le_bytes(), &[*from as u8], id])
            }
            (Dedup::Exact, Some(Choice::Timeout(t))) if *t == ix => {
                let at = n.core.poll_timeout().map_or(0, |t| t.0).max(n.clock);
                h128(&[b"t", &n.chain.to_le_bytes(), &at.to_le_bytes()])
            }
            (Dedup::Exact, _) => n.chain,
            (Dedup::Epochs, Some(Choice::Deliver { from, to, id })) if *to == ix => {
                let sum = n.epoch_sum.wrapping_add(h128(&[&[*from as u8], id]));
                h128(&[&n.epochs_closed.to_le_bytes(), &sum.to_le_bytes()])
            }
            (Dedup::Epochs, Some(Choice::Timeout(t))) if *t == ix => {
                let closed = h128(&[
                    b"t",
                    &n.epochs_closed.to_le_bytes(),
                    &n.epoch_sum.to_le_bytes(),
                ]);
                h128(&[&closed.to_le_bytes(), &0u128.to_le_bytes()])
            }
            (Dedup::Epochs, _) => {
                h128(&[&n.epochs_closed.to_le_bytes(), &n.epoch_sum.to_le_bytes()])
            }
        }
    }

    fn fingerprint_with(&self, c: Option<&Choice>) -> u128 {
        let healed = self.healed || matches!(c, Some(Choice::Heal));
        let mut parts: Vec<[u8; 16]> = vec![[u8::from(healed); 16]];
        for ix in 0..self.nodes.len() {
            parts.push(self.node_fp(ix, c).to_le_bytes());
        }
        let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        h128(&refs)
    }

    /// Take one choice. Returns `false` if it is not available here.
    pub fn step(&mut self, c: &Choice) -> bool {
        let Some((_, cost)) = self.enabled().into_iter().find(|(x, _)| x == c) else {
            return false;
        };
        self.reorders_used += cost;
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| self.step_inner(c)));
        if let Err(e) = res {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            self.violation.get_or_insert(Violation::Panic(msg));
        }
        true
    }

    fn step_inner(&mut self, c: &Choice) {
        match *c {
            Choice::Deliver { from, to, id } => {
                let key = self
                    .inflight
                    .iter()
                    .find(|((f, t, _), m)| *f == from && *t == to && m.id == id)
                    .map(|(k, _)| *k)
                    .expect("enabled message is in flight");
                let m = self.inflight.remove(&key).expect("key just found");
                let n = &mut self.nodes[to];
                n.chain = h128(&[b"d", &n.chain.to_le_bytes(), &[from as u8], &id]);
                n.epoch_sum = n.epoch_sum.wrapping_add(h128(&[&[from as u8], &id]));
                self.deliver_bytes(from, to, &m.bytes);
            }
            Choice::Timeout(ix) => {
                self.timeouts_used += 1;
                let n = &mut self.nodes[ix];
                let at = n.core.poll_timeout().map_or(0, |t| t.0).max(n.clock);
                n.clock = at;
                n.chain = h128(&[b"t", &n.chain.to_le_bytes(), &at.to_le_bytes()]);
                n.epochs_closed = h128(&[
                    b"t",
                    &n.epochs_closed.to_le_bytes(),
                    &n.epoch_sum.to_le_bytes(),
                ]);
                n.epoch_sum = 0;
                n.core.handle_timeout(Timestamp(at));
                self.drain(ix);
            }
            Choice::Heal => self.healed = true,
        }
    }

    fn deliver_bytes(&mut self, from: NodeIx, to: NodeIx, bytes: &[u8]) {
        let peer = Peer::Replica(self.nodes[from].id);
        let n = &mut self.nodes[to];
        let _ = n.core.handle_bytes(Timestamp(n.clock), peer, bytes);
        self.drain(to);
    }

    fn route(&mut self, from: NodeIx, to_id: Option<ReplicaId>, bytes: &[u8]) {
        let me = self.nodes[from].id;
        let id = msg_id(bytes);
        for to in 0..self.nodes.len() {
            let tid = self.nodes[to].id;
            let wanted = match to_id {
                Some(t) => t == tid,
                None => tid != me,
            };
            if !wanted || to == from {
                continue;
            }
            let seq = self.nodes[from].sent;
            self.nodes[from].sent += 1;
            self.inflight.insert(
                (from, to, seq),
                InFlight {
                    id,
                    bytes: bytes.to_vec(),
                },
            );
        }
    }

    fn drain(&mut self, ix: NodeIx) {
        while let Some(out) = self.nodes[ix].core.poll_output() {
            let twin = self.nodes[ix].twin;
            match out {
                Output::Persist { token, entry } => {
                    let n = &mut self.nodes[ix];
                    n.storage.apply(&entry).expect("memory storage");
                    n.core.handle_persisted(token);
                }
                Output::Send { to, msg } => self.route(ix, Some(to), &msg.encode()),
                Output::Broadcast { msg } => self.route(ix, None, &msg.encode()),
                Output::Decided { cid, digest, .. } => {
                    self.nodes[ix].last_decided = cid.0;
                    if twin {
                        continue;
                    }
                    match self.decided.get(&cid.0) {
                        Some(&(first, d)) if d != digest => {
                            self.violation.get_or_insert(Violation::Agreement {
                                cid: cid.0,
                                first: (first, d),
                                second: (ix, digest),
                            });
                        }
                        Some(_) => {}
                        None => {
                            self.decided.insert(cid.0, (ix, digest));
                        }
                    }
                }
                Output::Checkpoint { cid, digest } | Output::StateInstalled { cid, digest } => {
                    if matches!(out, Output::StateInstalled { .. }) {
                        self.state_transfers += 1;
                        self.nodes[ix].last_decided = cid.0;
                    }
                    if twin {
                        continue;
                    }
                    match self.checkpoints.get(&cid.0) {
                        Some(d) if *d != digest => {
                            self.violation.get_or_insert(Violation::Checkpoint {
                                cid: cid.0,
                                node: ix,
                            });
                        }
                        Some(_) => {}
                        None => {
                            self.checkpoints.insert(cid.0, digest);
                        }
                    }
                }
                Output::RegencyInstalled { regency, .. } => {
                    self.max_regency = self.max_regency.max(regency.0);
                }
                _ => {}
            }
        }
    }

    /// A readable line for choice `c` in this state (before it is taken).
    #[must_use]
    pub fn describe(&self, c: &Choice) -> String {
        let name = |ix: NodeIx| -> String {
            let n = &self.nodes[ix];
            if ix >= self.cfg.n {
                format!("r{}'", n.id.0)
            } else {
                format!("r{}", n.id.0)
            }
        };
        match *c {
            Choice::Deliver { from, to, id } => {
                let bytes = self
                    .inflight
                    .values()
                    .find(|m| m.id == id)
                    .map(|m| m.bytes.as_slice())
                    .unwrap_or_default();
                format!(
                    "deliver {} -> {}: {}",
                    name(from),
                    name(to),
                    describe_bytes(bytes, &self.limits)
                )
            }
            Choice::Timeout(ix) => {
                let n = &self.nodes[ix];
                let at = n.core.poll_timeout().map_or(0, |t| t.0).max(n.clock);
                format!("timeout {} at {} ms", name(ix), at / 1_000_000)
            }
            Choice::Heal => "heal the partition".to_string(),
        }
    }
}

fn short(d: &Digest) -> String {
    format!("{:02x}{:02x}", d.0[0], d.0[1])
}

/// A one-line description of a replica message.
#[must_use]
pub fn describe_bytes(bytes: &[u8], limits: &WireLimits) -> String {
    let m = match Message::decode(bytes, limits) {
        Ok(Message::Replica(m)) => m,
        Ok(Message::Request(r)) => return format!("REQUEST client={} seq={}", r.client.0, r.seq.0),
        Ok(_) => return "other".to_string(),
        Err(e) => return format!("undecodable ({e})"),
    };
    match &m.body {
        ReplicaBody::Propose {
            regency,
            cid,
            batch,
        } => {
            format!(
                "PROPOSE reg={} cid={} {}",
                regency.0,
                cid.0,
                short(&batch.digest())
            )
        }
        ReplicaBody::Write {
            regency,
            cid,
            digest,
        } => {
            format!("WRITE reg={} cid={} {}", regency.0, cid.0, short(digest))
        }
        ReplicaBody::Accept {
            regency,
            cid,
            digest,
        } => {
            format!("ACCEPT reg={} cid={} {}", regency.0, cid.0, short(digest))
        }
        ReplicaBody::Stop { regency } => format!("STOP {}", regency.0),
        ReplicaBody::StopData(sd) => format!(
            "STOPDATA reg={} last={} written={:?}",
            sd.regency.0,
            sd.last_cid().0,
            sd.written
                .as_ref()
                .map(|(c, _)| (c.regency.0, c.cid.0, short(&c.digest)))
        ),
        ReplicaBody::Sync(s) => format!(
            "SYNC reg={} cid={} {} from={:?}",
            s.regency.0,
            s.cid.0,
            short(&s.batch.digest()),
            s.proofs.iter().map(|p| p.from.0).collect::<Vec<_>>()
        ),
        ReplicaBody::Fetch { .. } => "FETCH".to_string(),
        ReplicaBody::Decisions { .. } => "DECISIONS".to_string(),
        ReplicaBody::StateRequest => "STATEREQUEST".to_string(),
        ReplicaBody::StateDigests { .. } => "STATEDIGESTS".to_string(),
        ReplicaBody::ChunkRequest { .. } => "CHUNKREQUEST".to_string(),
        ReplicaBody::Chunk { .. } => "CHUNK".to_string(),
        _ => "other".to_string(),
    }
}

/// Rebuild the world after `choices` from the initial state.
///
/// # Panics
/// If a choice is not available where the path says (the path is not from this config).
#[must_use]
pub fn replay(cfg: &SearchConfig, choices: &[Choice]) -> World {
    let mut w = World::new(cfg);
    for c in choices {
        assert!(w.step(c), "choice {c:?} is not available on replay");
    }
    w
}

/// The counterexample for a violating path, with readable steps.
#[must_use]
pub fn counterexample(cfg: &SearchConfig, choices: &[Choice]) -> Counterexample {
    let mut w = World::new(cfg);
    let mut steps = Vec::new();
    for c in choices {
        steps.push(w.describe(c));
        w.step(c);
    }
    Counterexample {
        violation: w
            .violation
            .clone()
            .unwrap_or(Violation::Panic("no violation on replay".into())),
        choices: choices.to_vec(),
        steps,
    }
}

struct Dfs<'a> {
    cfg: &'a SearchConfig,
    /// Fingerprint → least reorder budget used to reach it.
    visited: HashMap<u128, u32>,
    report: SearchReport,
    path: Vec<Choice>,
}

impl Dfs<'_> {
    fn note(&mut self, w: &World) {
        let r = &mut self.report;
        r.states += 1;
        r.max_depth = r.max_depth.max(self.path.len());
        let md = w.max_decided();
        if md > 0 {
            r.states_with_decision += 1;
        }
        r.max_decided = r.max_decided.max(md);
        r.max_regency = r.max_regency.max(w.max_regency);
        if w.state_transfers > 0 {
            r.states_after_transfer += 1;
        }
    }

    fn visit(&mut self, w: World) -> bool {
        if w.violation.is_some() {
            self.report.counterexample = Some(counterexample(self.cfg, &self.path));
            return true;
        }
        if self.path.len() >= self.cfg.depth {
            return false;
        }
        let mut fresh = Vec::new();
        for (c, cost) in w.enabled() {
            let used = w.reorders_used + cost;
            let fp = w.fingerprint_after(&c);
            match self.visited.get(&fp) {
                Some(&u) if u <= used => self.report.dedup_hits += 1,
                _ => {
                    self.visited.insert(fp, used);
                    fresh.push(c);
                }
            }
        }
        let mut current = Some(w);
        let last = fresh.len().saturating_sub(1);
        for (i, c) in fresh.into_iter().enumerate() {
            if self.report.states >= self.cfg.states_max {
                self.report.truncated = true;
                return false;
            }
            let mut child = if i == last {
                current.take().expect("current world is used once")
            } else {
                self.report.steps_executed += self.path.len() as u64;
                replay(self.cfg, &self.path)
            };
            child.step(&c);
            self.report.steps_executed += 1;
            self.path.push(c);
            self.note(&child);
            if self.visit(child) {
                return true;
            }
            self.path.pop();
        }
        false
    }
}

/// Depth-first search of every path within the bounds of `cfg`; stops at the first
/// violation.
#[must_use]
pub fn search(cfg: &SearchConfig) -> SearchReport {
    let w = World::new(cfg);
    let mut dfs = Dfs {
        cfg,
        visited: HashMap::new(),
        report: SearchReport::default(),
        path: Vec::new(),
    };
    dfs.visited.insert(w.fingerprint(), 0);
    dfs.note(&w);
    dfs.visit(w);
    dfs.report
}

/// The standard configurations: the plain n = 4 world and every twin scenario of
/// [`crate::twins::scenarios`], each searched to `depth` with `mutation` (normally
/// `None`). Returns `(name, report)` per configuration; for a CLI.
#[must_use]
pub fn standard_runs(
    depth: usize,
    mutation: Option<DangerTestMutation>,
) -> Vec<(String, SearchReport)> {
    let mut plain = SearchConfig::small(depth);
    plain.mutation = mutation;
    let mut runs = vec![("plain".to_string(), search(&plain))];
    for s in crate::twins::scenarios(mutation) {
        let mut cfg = s.config;
        cfg.depth = depth;
        runs.push((format!("twins:{}", s.name), search(&cfg)));
    }
    runs
}
