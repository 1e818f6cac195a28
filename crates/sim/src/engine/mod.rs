//! The event loop: virtual time, the replica and client cores, the checks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use rampart_bft::{
    Client, ClientId, ClientOutput, Config, Digest, MemStorage, Output, Peer, PersistEntry,
    Principal, RecoveredState, Replica, ReplicaId, RequestSeq, SeqNo, SimulatedAuthenticator,
    Storage, StorageError, Timestamp,
};

use crate::adversary::{Adversary, Attack};
use crate::byz::{self, Behaviour, Byzantine};
use crate::clients::ByzClient;
use crate::disk::SimulatedDiskStorage;
use crate::kv::{KvApp, KvOp, KvResult};
use crate::lin::{self, HistOp, LinError};
use crate::network::{NetMode, Network};
use crate::{Failure, Node, SimConfig, SimReport, Summary};

mod strategy;

pub(crate) use strategy::run_checked;

type Core = Replica<KvApp, SimulatedAuthenticator>;

#[derive(Debug)]
enum Event {
    Deliver {
        from: Node,
        to: Node,
        bytes: Vec<u8>,
    },
    Persisted {
        replica: u8,
        incarnation: u64,
        token: u64,
    },
    Crash(u8),
    Restart(u8),
    Partition,
    PartitionEnd(u64),
    Submit(u64),
    Heal,
    /// A packet the adversary sends later.
    Send {
        from: Node,
        to: Node,
        bytes: Vec<u8>,
    },
    /// The colluders' periodic move.
    AdversaryTick,
    /// A Byzantine client's move.
    ByzClientTick(usize),
    /// A crash the adversary chose (not subject to the random-crash switch).
    ChosenCrash(u8),
}

struct Queued {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Where a replica persists: in memory (durable at once), or through the real
/// `FileStorage` on a simulated disk (correct replicas with [`crate::Faults::disk`]).
enum SlotStorage {
    Mem(Box<MemStorage>),
    Disk(Box<SimulatedDiskStorage>),
}

impl Storage for SlotStorage {
    fn apply(&mut self, entry: &PersistEntry) -> Result<(), StorageError> {
        match self {
            SlotStorage::Mem(m) => m.apply(entry),
            SlotStorage::Disk(d) => d.apply(entry),
        }
    }

    fn recover(&self) -> Result<RecoveredState, StorageError> {
        match self {
            SlotStorage::Mem(m) => m.recover(),
            SlotStorage::Disk(d) => d.recover(),
        }
    }
}

struct ReplicaSlot {
    core: Option<Core>,
    storage: SlotStorage,
    /// Persist entries emitted but not yet durable.
    unpersisted: Vec<(u64, rampart_bft::PersistEntry)>,
    persist_ready_at: u64,
    incarnation: u64,
    byz: Option<Byzantine>,
    next_exec: u64,
}

struct ClientSlot {
    core: Client<SimulatedAuthenticator>,
    current: Option<usize>,
    ops_after_heal_done: usize,
    last_value: Option<u64>,
}

/// Packets remembered for network-level replay.
const RECENT_PACKETS_MAX: usize = 128;
/// Crash/restart pairs per run.
const CRASHES_MAX: u64 = 6;

struct Sim {
    cfg: SimConfig,
    rcfg: Config,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    replicas: Vec<ReplicaSlot>,
    clients: Vec<ClientSlot>,
    net: Network,
    healed: bool,
    heal_at: u64,
    history: Vec<HistOp>,
    decided: BTreeMap<u64, Digest>,
    checkpoints: BTreeMap<u64, Digest>,
    next_value: u64,
    summary: Summary,
    failure: Option<Failure>,
    /// The adversary's own randomness (so that [`crate::Faults::RANDOM`] runs draw exactly
    /// what they drew before the adversary existed).
    adv_rng: ChaCha8Rng,
    /// Crash outcomes and bit flips of the simulated disks.
    disk_rng: ChaCha8Rng,
    adv: Option<Adversary>,
    byz_clients: Vec<ByzClient>,
    random_crashes: bool,
    limits: rampart_bft::WireLimits,
}

fn ms(x: u64) -> u64 {
    x * 1_000_000
}

impl Sim {
    fn new(cfg: SimConfig) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let rcfg = cfg.replica_config();
        let n = cfg.replicas;
        let f = rcfg.f();
        // Byzantine set.
        let mut byz_ids: Vec<u8> = Vec::new();
        if cfg.faults.byzantine && rng.gen_bool(0.75) {
            let count = rng.gen_range(1..=f);
            while byz_ids.len() < count {
                let r = rng.gen_range(0..n as u8);
                if !byz_ids.contains(&r) {
                    byz_ids.push(r);
                }
            }
        }
        let mut replicas = Vec::new();
        let mut summary = Summary::default();
        for r in 0..n as u8 {
            let byz = if byz_ids.contains(&r) {
                let mut behaviours: Vec<Behaviour> = Behaviour::ALL
                    .iter()
                    .copied()
                    .filter(|_| rng.gen_bool(0.4))
                    .collect();
                if behaviours.is_empty() {
                    behaviours.push(Behaviour::ALL[rng.gen_range(0..Behaviour::ALL.len())]);
                }
                summary.byzantine.push((r, behaviours.clone()));
                let auth = SimulatedAuthenticator::new(Principal::Replica(ReplicaId(r)), cfg.seed);
                Some(Byzantine::new(ReplicaId(r), behaviours, auth))
            } else {
                None
            };
            let storage = if cfg.faults.disk && byz.is_none() {
                let d = SimulatedDiskStorage::new(&rcfg).expect("an empty simulated disk opens");
                SlotStorage::Disk(Box::new(d))
            } else {
                SlotStorage::Mem(Box::default())
            };
            replicas.push(ReplicaSlot {
                core: None,
                storage,
                unpersisted: Vec::new(),
                persist_ready_at: 0,
                incarnation: 0,
                byz,
                next_exec: 1,
            });
        }
        let clients = (0..cfg.clients as u64)
            .map(|c| ClientSlot {
                core: Client::new(
                    &rcfg,
                    ClientId(c),
                    SimulatedAuthenticator::new(Principal::Client(ClientId(c)), cfg.seed),
                    Duration::from_millis(400),
                    RequestSeq(0),
                ),
                current: None,
                ops_after_heal_done: 0,
                last_value: None,
            })
            .collect();
        let net = if cfg.faults.network {
            let delay_max = rng.gen_range(2..40);
            let mut net = Network::quiet(NetMode::Random, delay_max);
            net.drop_p = rng.gen_range(0.0..0.08);
            net.dup_p = rng.gen_range(0.0..0.05);
            net.replay_p = rng.gen_range(0.0..0.02);
            net
        } else {
            Network::quiet(NetMode::Quiet, 5)
        };
        let heal_at = u64::try_from(cfg.fault_phase.as_nanos()).unwrap_or(u64::MAX);
        let limits = rampart_bft::WireLimits::from_config(&rcfg);
        let adv_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xad5e_c0de_5eed_0001);
        // Its own stream, so that disk faults change no other random choice of the run.
        let disk_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xd15c_0000_f11b_0002);
        let mut sim = Sim {
            cfg,
            rcfg,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            replicas,
            clients,
            net,
            healed: false,
            heal_at,
            history: Vec::new(),
            decided: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            next_value: 1,
            summary,
            failure: None,
            adv_rng,
            disk_rng,
            adv: None,
            byz_clients: Vec::new(),
            random_crashes: true,
            limits,
        };
        sim.summary.attack = Attack::Random.name();
        sim.setup_adversary();
        sim.summary.net = sim.net.mode.name();
        for r in 0..n as u8 {
            sim.start_replica(r);
        }
        for c in 0..sim.cfg.clients as u64 {
            let at = sim.rng.gen_range(0..ms(20));
            sim.schedule(at, Event::Submit(c));
        }
        sim.schedule(heal_at, Event::Heal);
        if sim.cfg.faults.network {
            let at = sim.rng.gen_range(ms(50)..ms(600));
            sim.schedule(at, Event::Partition);
        }
        if sim.cfg.faults.crashes {
            let crashes = sim.rng.gen_range(0..=CRASHES_MAX);
            for _ in 0..crashes {
                let at = sim.rng.gen_range(ms(10)..heal_at.max(ms(11)));
                let r = sim.rng.gen_range(0..n as u8);
                sim.schedule(at, Event::Crash(r));
            }
        }
        sim
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            event,
        }));
    }

    fn is_correct(&self, r: u8) -> bool {
        self.replicas[usize::from(r)].byz.is_none()
    }

    fn start_replica(&mut self, r: u8) {
        let slot = &mut self.replicas[usize::from(r)];
        let recovered = match slot.storage.recover() {
            Ok(s) => s,
            Err(e) => {
                self.failure = Some(Failure::Start {
                    replica: r,
                    error: e.to_string(),
                });
                return;
            }
        };
        let auth = SimulatedAuthenticator::new(Principal::Replica(ReplicaId(r)), self.cfg.seed);
        let rng_seed = self.cfg.seed ^ (u64::from(r) << 32) ^ slot.incarnation;
        match Replica::new(
            self.rcfg.clone(),
            ReplicaId(r),
            auth,
            KvApp::default(),
            recovered,
            rng_seed,
            Timestamp(self.now),
        ) {
            Ok(core) => {
                slot.next_exec = core.last_decided().0 + 1;
                slot.core = Some(core);
                self.drain_replica(r);
            }
            Err(e) => {
                self.failure = Some(Failure::Start {
                    replica: r,
                    error: e.to_string(),
                })
            }
        }
    }

    fn run(mut self) -> SimReport {
        let end = self.heal_at + u64::try_from(self.cfg.liveness_bound.as_nanos()).unwrap_or(0);
        while self.failure.is_none() {
            if self.healed && self.clients_done() {
                break;
            }
            let next_event = self.queue.peek().map(|q| q.0.at);
            let next_timer = self.next_timer();
            let next = match (next_event, next_timer) {
                (Some(a), Some((b, _))) => a.min(b),
                (Some(a), None) => a,
                (None, Some((b, _))) => b,
                (None, None) => break,
            };
            if next > end {
                self.now = end;
                break;
            }
            self.now = self.now.max(next);
            if next_event == Some(next) {
                if let Some(Reverse(q)) = self.queue.pop() {
                    self.handle_event(q.event);
                }
            } else {
                self.fire_timers();
            }
        }
        if self.failure.is_none() && !self.clients_done() {
            let unfinished = self.clients.iter().filter(|c| !self.client_done(c)).count();
            if std::env::var_os("RAMPART_SIM_DEBUG").is_some() {
                for (i, s) in self.replicas.iter().enumerate() {
                    if let Some(c) = &s.core {
                        eprintln!("replica {i} byz={} {:?}", s.byz.is_some(), c.status());
                    }
                }
            }
            self.failure = Some(Failure::Liveness {
                unfinished,
                bound_ms: u64::try_from(self.cfg.liveness_bound.as_millis()).unwrap_or(0),
                decided: self.decided.keys().last().copied().unwrap_or(0),
            });
        }
        if self.failure.is_none()
            && let Err(e) = lin::check(&self.history)
        {
            self.failure = Some(Failure::Linearizability(e));
        }
        self.summary.decided_max = self.decided.keys().last().copied().unwrap_or(0);
        for c in &self.clients {
            let s = c.core.stats();
            self.summary.ops_completed += s.completed;
            self.summary.read_only_fast += s.read_only_fast;
            self.summary.read_only_fallbacks += s.read_only_fallbacks;
        }
        for slot in &self.replicas {
            if let (Some(core), None) = (&slot.core, &slot.byz) {
                let st = core.stats();
                self.summary.rejected += st.peer_faults + st.decode_errors;
            }
        }
        self.summary.virtual_ms = self.now / 1_000_000;
        let fault_ms = (self.heal_at / 1_000_000).max(1);
        self.summary.rate_milli = self.summary.decided_at_heal * 1_000_000 / fault_ms;
        self.summary.held = self.net.held;
        self.summary.adversary_moves = self.adv.as_ref().map_or(0, |a| a.moves);
        SimReport {
            seed: self.cfg.seed,
            failure: self.failure,
            summary: self.summary,
        }
    }

    fn client_done(&self, c: &ClientSlot) -> bool {
        c.ops_after_heal_done >= self.cfg.ops_after_heal
    }

    fn clients_done(&self) -> bool {
        self.clients.iter().all(|c| self.client_done(c))
    }

    fn next_timer(&self) -> Option<(u64, Node)> {
        let mut best: Option<(u64, Node)> = None;
        for (i, s) in self.replicas.iter().enumerate() {
            if let Some(t) = s.core.as_ref().and_then(Core::poll_timeout)
                && best.is_none_or(|(b, _)| t.0 < b)
            {
                best = Some((t.0, Node::Replica(i as u8)));
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            if let Some(t) = c.core.poll_timeout()
                && best.is_none_or(|(b, _)| t.0 < b)
            {
                best = Some((t.0, Node::Client(i as u64)));
            }
        }
        best
    }

    fn fire_timers(&mut self) {
        let now = Timestamp(self.now);
        for r in 0..self.replicas.len() {
            let due = self.replicas[r]
                .core
                .as_ref()
                .and_then(Core::poll_timeout)
                .is_some_and(|t| t <= now);
            if due {
                if let Some(core) = self.replicas[r].core.as_mut() {
                    core.handle_timeout(now);
                    if core.poll_timeout().is_some_and(|t| t <= now) {
                        self.failure = Some(Failure::TimerStuck(Node::Replica(r as u8)));
                    }
                }
                self.drain_replica(r as u8);
            }
        }
        for c in 0..self.clients.len() {
            if self.clients[c]
                .core
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.clients[c].core.handle_timeout(now);
                if self.clients[c]
                    .core
                    .poll_timeout()
                    .is_some_and(|t| t <= now)
                {
                    self.failure = Some(Failure::TimerStuck(Node::Client(c as u64)));
                }
                self.drain_client(c as u64);
            }
        }
    }

    fn handle_event(&mut self, e: Event) {
        match e {
            Event::Deliver { from, to, bytes } => self.deliver(from, to, bytes),
            Event::Persisted {
                replica,
                incarnation,
                token,
            } => {
                let slot = &mut self.replicas[usize::from(replica)];
                if slot.incarnation != incarnation {
                    return;
                }
                let mut applied = 0;
                for (t, entry) in &slot.unpersisted {
                    if *t > token {
                        break;
                    }
                    if let Err(e) = slot.storage.apply(entry) {
                        self.failure = Some(Failure::Start {
                            replica,
                            error: format!("storage: {e}"),
                        });
                    }
                    applied += 1;
                }
                slot.unpersisted.drain(..applied);
                if let Some(core) = slot.core.as_mut() {
                    core.handle_persisted(token);
                }
                self.drain_replica(replica);
            }
            Event::Crash(r) => {
                if self.random_crashes {
                    self.crash(r);
                }
            }
            Event::Restart(r) => {
                if self.replicas[usize::from(r)].core.is_none() {
                    self.start_replica(r);
                }
            }
            Event::Partition => {
                if self.healed || self.net.mode != NetMode::Random {
                    return;
                }
                let n = self.cfg.replicas as u8;
                let size = self.rng.gen_range(1..=n / 2);
                let mut side: Vec<u8> = Vec::new();
                while side.len() < usize::from(size) {
                    let r = self.rng.gen_range(0..n);
                    if !side.contains(&r) {
                        side.push(r);
                    }
                }
                let one_way = self.rng.gen_bool(0.4);
                let inbound = self.rng.gen_bool(0.5);
                self.net.blocked.clear();
                for a in 0..n {
                    for b in 0..n {
                        let (ina, inb) = (side.contains(&a), side.contains(&b));
                        if ina == inb {
                            continue;
                        }
                        if !one_way || (inbound && inb) || (!inbound && ina) {
                            self.net.blocked.push((a, b));
                        }
                    }
                }
                self.net.partition_id += 1;
                self.summary.partitions += 1;
                let id = self.net.partition_id;
                let end = self.now + self.rng.gen_range(ms(100)..ms(1500));
                self.schedule(end, Event::PartitionEnd(id));
                let next = end + self.rng.gen_range(ms(50)..ms(800));
                self.schedule(next, Event::Partition);
            }
            Event::PartitionEnd(id) => {
                if id == self.net.partition_id {
                    self.net.blocked.clear();
                }
            }
            Event::Heal => {
                self.healed = true;
                self.summary.decided_at_heal = self.decided.keys().last().copied().unwrap_or(0);
                self.net.heal();
                for r in 0..self.replicas.len() as u8 {
                    if self.replicas[usize::from(r)].core.is_none() {
                        self.start_replica(r);
                    }
                }
            }
            Event::Submit(c) => self.submit(c),
            Event::Send { from, to, bytes } => self.send(from, to, bytes),
            Event::AdversaryTick => self.adversary_tick(),
            Event::ByzClientTick(i) => self.byz_client_tick(i),
            Event::ChosenCrash(r) => self.crash(r),
        }
    }

    fn crash(&mut self, r: u8) {
        let crashed = self.replicas.iter().filter(|s| s.core.is_none()).count();
        let slot = &mut self.replicas[usize::from(r)];
        if self.healed || slot.core.is_none() || crashed >= self.rcfg.f() {
            return;
        }
        slot.core = None;
        if let SlotStorage::Disk(d) = &mut slot.storage {
            // The power goes while the emitted but unacknowledged entries are being
            // written: any prefix of them may survive, the last one torn.
            let unsynced = slot.unpersisted.iter().map(|(_, e)| e);
            if let Err(e) = d.crash(unsynced, &mut self.disk_rng) {
                self.failure = Some(Failure::Disk {
                    replica: r,
                    error: format!("reopening after a crash: {e}"),
                });
            } else {
                self.summary.disk_crashes += 1;
                if self.disk_rng.gen_bool(0.5) {
                    match d.flip_is_detected(&mut self.disk_rng) {
                        Ok(None) => self.summary.bit_flips_detected += 1,
                        Ok(Some(what)) => {
                            self.failure = Some(Failure::Disk {
                                replica: r,
                                error: format!("undetected corruption: {what}"),
                            });
                        }
                        Err(e) => {
                            self.failure = Some(Failure::Disk {
                                replica: r,
                                error: format!("reopening after an undone bit flip: {e}"),
                            });
                        }
                    }
                }
            }
        }
        slot.unpersisted.clear();
        slot.incarnation += 1;
        self.summary.crashes += 1;
        let back = self.now + self.rng.gen_range(ms(20)..ms(1500));
        self.schedule(back, Event::Restart(r));
    }

    fn submit(&mut self, c: u64) {
        let idx = c as usize;
        if self.client_done(&self.clients[idx]) || self.clients[idx].core.is_busy() {
            return;
        }
        let key = self.rng.gen_range(0..3u8);
        let roll = self.rng.gen_range(0..100);
        let (op, read_only) = match roll {
            0..30 => (KvOp::Get(key), true),
            30..45 => (KvOp::Get(key), false),
            45..80 => {
                self.next_value += 1;
                (KvOp::Put(key, self.next_value), false)
            }
            80..95 => {
                self.next_value += 1;
                let expected = if self.rng.gen_bool(0.5) {
                    self.clients[idx].last_value
                } else {
                    None
                };
                (KvOp::Cas(key, expected, self.next_value), false)
            }
            _ => (KvOp::Delete(key), false),
        };
        let now = Timestamp(self.now);
        if self.clients[idx]
            .core
            .submit(now, op.encode(), read_only)
            .is_ok()
        {
            self.history.push(HistOp {
                client: c,
                op,
                invoke: self.now,
                response: None,
            });
            self.clients[idx].current = Some(self.history.len() - 1);
        }
        self.drain_client(c);
    }

    fn deliver(&mut self, from: Node, to: Node, bytes: Vec<u8>) {
        let now = Timestamp(self.now);
        if std::env::var("RAMPART_SIM_TRACE").is_ok_and(|v| v == "2") {
            trace_packet(self.now, from, to, &bytes, &self.rcfg);
        }
        match to {
            Node::Replica(r) => {
                let peer = match from {
                    Node::Replica(x) => Peer::Replica(ReplicaId(x)),
                    Node::Client(c) => Peer::Client(ClientId(c)),
                };
                let mut reactions = Vec::new();
                if let Some(adv) = self.adv.as_mut()
                    && adv.colludes(r)
                {
                    reactions = adv.observe(r, from, &bytes);
                }
                for (d, p) in reactions {
                    self.send_timed(d, p);
                }
                let slot = &mut self.replicas[usize::from(r)];
                if let Some(b) = slot.byz.as_mut() {
                    b.observe(from, &bytes, &mut self.rng);
                }
                let Some(core) = slot.core.as_mut() else {
                    return;
                };
                // Peer faults are counted by the core; the simulator only checks that the
                // core stays live and never panics.
                let res = core.handle_bytes(now, peer, &bytes);
                if let Err(e) = res
                    && std::env::var_os("RAMPART_SIM_DEBUG").is_some()
                    && self.now > self.heal_at
                {
                    eprintln!(
                        "t={}ms replica {r} rejected from {from:?}: {e}",
                        self.now / 1_000_000
                    );
                }
                self.drain_replica(r);
            }
            Node::Client(c) => {
                let Node::Replica(x) = from else { return };
                // Replies to Byzantine clients: they ignore them.
                if c as usize >= self.clients.len() {
                    return;
                }
                let _ = self.clients[c as usize]
                    .core
                    .handle_bytes(now, ReplicaId(x), &bytes);
                self.drain_client(c);
            }
        }
    }

    fn send(&mut self, from: Node, to: Node, bytes: Vec<u8>) {
        self.summary.packets += 1;
        if let (Node::Replica(a), Node::Replica(b)) = (from, to)
            && self.net.blocked.contains(&(a, b))
        {
            return;
        }
        if self.net.drop_p > 0.0 && self.rng.gen_bool(self.net.drop_p) {
            return;
        }
        let copies = if self.net.dup_p > 0.0 && self.rng.gen_bool(self.net.dup_p) {
            2
        } else {
            1
        };
        let held = if self.net.holds.is_empty() {
            None
        } else {
            self.net
                .hold_until(self.now, from, to, &bytes, &self.limits)
        };
        if !self.byz_clients.is_empty() {
            self.note_client_packet(from, to, &bytes);
        }
        for _ in 0..copies {
            let at = held.unwrap_or(self.now).max(self.now)
                + self
                    .rng
                    .gen_range(self.net.delay_min_ns..=self.net.delay_max_ns);
            self.schedule(
                at,
                Event::Deliver {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
        if self.net.replay_p > 0.0 {
            if self.net.recent.len() < RECENT_PACKETS_MAX {
                self.net.recent.push((from, to, bytes));
            } else {
                let i = self.rng.gen_range(0..RECENT_PACKETS_MAX);
                self.net.recent[i] = (from, to, bytes);
            }
            if self.rng.gen_bool(self.net.replay_p) {
                let i = self.rng.gen_range(0..self.net.recent.len());
                let (f, t, b) = self.net.recent[i].clone();
                let at = self.now + self.rng.gen_range(ms(1)..ms(200));
                self.schedule(
                    at,
                    Event::Deliver {
                        from: f,
                        to: t,
                        bytes: b,
                    },
                );
            }
        }
    }

    fn drain_replica(&mut self, r: u8) {
        let n = self.cfg.replicas;
        loop {
            let slot = &mut self.replicas[usize::from(r)];
            let Some(core) = slot.core.as_mut() else {
                return;
            };
            let Some(out) = core.poll_output() else {
                return;
            };
            let is_leader = core.leader() == core.id();
            let correct = slot.byz.is_none();
            match out {
                Output::Persist { token, entry } => {
                    if correct {
                        slot.unpersisted.push((token, entry));
                        let at = slot.persist_ready_at.max(self.now) + self.rng.gen_range(0..ms(3));
                        slot.persist_ready_at = at;
                        let incarnation = slot.incarnation;
                        self.schedule(
                            at,
                            Event::Persisted {
                                replica: r,
                                incarnation,
                                token,
                            },
                        );
                    } else {
                        // Byzantine replicas "persist" instantly; their storage is not trusted.
                        let _ = slot.storage.apply(&entry);
                        core.handle_persisted(token);
                    }
                }
                Output::Decided {
                    cid,
                    digest,
                    regency,
                    requests,
                } => {
                    if std::env::var_os("RAMPART_SIM_TRACE").is_some() {
                        eprintln!(
                            "t={} r{r} decided cid={} reg={} {digest:?} n={requests}",
                            self.now / 1000,
                            cid.0,
                            regency.0
                        );
                    }
                    if correct {
                        self.check_decided(r, cid.0, digest);
                    }
                }
                Output::Checkpoint { cid, digest } if correct => {
                    self.check_checkpoint(r, cid, digest, false);
                }
                Output::StateInstalled { cid, digest } if correct => {
                    self.check_checkpoint(r, cid, digest, true);
                }
                ref o @ (Output::Checkpoint { .. } | Output::StateInstalled { .. }) => {
                    if let Some(adv) = self.adv.as_mut() {
                        let _ = adv.on_output(r, o, &mut self.adv_rng);
                    }
                }
                Output::RegencyInstalled { regency, leader } => {
                    if std::env::var_os("RAMPART_SIM_TRACE").is_some() {
                        eprintln!("t={} r{r} regency {}", self.now / 1000, regency.0);
                    }
                    if correct {
                        self.summary.regencies += 1;
                    }
                    // Finding 9a: crash a leader right after it installed its own regency.
                    if correct
                        && leader.0 == r
                        && !self.healed
                        && self
                            .adv
                            .as_ref()
                            .is_some_and(|a| a.plan.attack == Attack::RestartLeaderAfterSync)
                    {
                        let at = self.now + ms(1);
                        self.schedule(at, Event::ChosenCrash(r));
                    }
                }
                out @ (Output::Send { .. } | Output::Broadcast { .. } | Output::Reply { .. }) => {
                    let chosen = match self.adv.as_mut() {
                        Some(adv) if !correct => adv.on_output(r, &out, &mut self.adv_rng),
                        _ => None,
                    };
                    if let Some(timed) = chosen {
                        for (d, p) in timed {
                            self.send_timed(d, p);
                        }
                        continue;
                    }
                    let slot = &mut self.replicas[usize::from(r)];
                    let packets = if let Some(b) = slot.byz.as_mut() {
                        b.transform(out, is_leader, n, &mut self.rng)
                    } else {
                        plain_packets(r, n, out)
                    };
                    for (from, to, bytes) in packets {
                        self.send(from, to, bytes);
                    }
                }
                _ => {}
            }
        }
    }

    fn check_decided(&mut self, r: u8, cid: u64, digest: Digest) {
        let slot = &mut self.replicas[usize::from(r)];
        if cid != slot.next_exec {
            self.failure = Some(Failure::Order {
                replica: r,
                expected: slot.next_exec,
                got: cid,
            });
            return;
        }
        slot.next_exec = cid + 1;
        match self.decided.get(&cid) {
            Some(d) if *d != digest => {
                self.failure = Some(Failure::Agreement {
                    cid,
                    a: *d,
                    b: digest,
                    replica: r,
                });
            }
            Some(_) => {}
            None => {
                self.decided.insert(cid, digest);
            }
        }
    }

    fn check_checkpoint(&mut self, r: u8, cid: SeqNo, digest: Digest, installed: bool) {
        if installed {
            self.summary.state_transfers += 1;
            self.replicas[usize::from(r)].next_exec = cid.0 + 1;
        }
        match self.checkpoints.get(&cid.0) {
            Some(d) if *d != digest => {
                self.failure = Some(Failure::Checkpoint {
                    cid: cid.0,
                    replica: r,
                });
            }
            Some(_) => {}
            None => {
                self.checkpoints.insert(cid.0, digest);
            }
        }
        debug_assert!(self.is_correct(r));
    }

    fn drain_client(&mut self, c: u64) {
        let n = self.cfg.replicas as u8;
        while let Some(out) = self.clients[c as usize].core.poll_output() {
            match out {
                ClientOutput::Broadcast { msg } => {
                    let bytes = msg.encode();
                    for r in 0..n {
                        self.send(Node::Client(c), Node::Replica(r), bytes.clone());
                    }
                }
                ClientOutput::Completed { result, .. } => {
                    let slot = &mut self.clients[c as usize];
                    if let Some(i) = slot.current.take() {
                        let Some(res) = KvResult::decode(&result) else {
                            self.failure =
                                Some(Failure::Linearizability(LinError::NotLinearizable {
                                    key: 255,
                                    ops: 0,
                                }));
                            return;
                        };
                        if let KvResult::Value(v) = res {
                            slot.last_value = v;
                        }
                        self.history[i].response = Some((self.now, res));
                    }
                    if self.healed {
                        slot.ops_after_heal_done += 1;
                    }
                    let at = self.now + self.rng.gen_range(ms(1)..ms(30));
                    self.schedule(at, Event::Submit(c));
                }
                ClientOutput::ReadOnlyFallback { .. } => {}
                _ => {}
            }
        }
    }
}

fn plain_packets(r: u8, n: usize, out: Output) -> Vec<byz::Packet> {
    let me = Node::Replica(r);
    match out {
        Output::Send { to, msg } => vec![(me, Node::Replica(to.0), msg.encode())],
        Output::Broadcast { msg } => {
            let bytes = msg.encode();
            (0..n as u8)
                .filter(|x| *x != r)
                .map(|x| (me, Node::Replica(x), bytes.clone()))
                .collect()
        }
        Output::Reply { client, msg } => vec![(me, Node::Client(client.0), msg.encode())],
        _ => Vec::new(),
    }
}

fn trace_packet(now: u64, from: Node, to: Node, bytes: &[u8], cfg: &Config) {
    use rampart_bft::message::ReplicaBody as B;
    let limits = rampart_bft::WireLimits::from_config(cfg);
    let Ok(rampart_bft::Message::Replica(m)) = rampart_bft::Message::decode(bytes, &limits) else {
        return;
    };
    let what = match &m.body {
        B::Propose {
            regency,
            cid,
            batch,
        } => {
            format!(
                "PROPOSE reg={} cid={} {:?}",
                regency.0,
                cid.0,
                batch.digest()
            )
        }
        B::Write {
            regency,
            cid,
            digest,
        } => format!("WRITE reg={} cid={} {digest:?}", regency.0, cid.0),
        B::Accept {
            regency,
            cid,
            digest,
        } => format!("ACCEPT reg={} cid={} {digest:?}", regency.0, cid.0),
        B::Stop { regency } => format!("STOP {}", regency.0),
        B::StopData(sd) => format!(
            "STOPDATA reg={} last={} written={:?}",
            sd.regency.0,
            sd.last_cid().0,
            sd.written
                .as_ref()
                .map(|(c, _)| (c.regency.0, c.cid.0, c.digest))
        ),
        B::Sync(s) => format!(
            "SYNC reg={} cid={} {:?} proofs={:?}",
            s.regency.0,
            s.cid.0,
            s.batch.digest(),
            s.proofs.iter().map(|p| p.from.0).collect::<Vec<_>>()
        ),
        B::Decisions {
            decisions,
            checkpoint,
            regency_proof,
        } => format!(
            "DECISIONS n={} checkpoint={checkpoint:?} proof={}",
            decisions.len(),
            regency_proof.is_some()
        ),
        B::StateRequest => "STATEREQUEST".to_string(),
        B::Fetch { from_cid } => format!("FETCH from={}", from_cid.0),
        B::StateDigests { checkpoints } => format!(
            "STATEDIGESTS {:?}",
            checkpoints.iter().map(|c| c.0.0).collect::<Vec<_>>()
        ),
        B::Chunk { cid, index, .. } => format!("CHUNK cid={} index={index}", cid.0),
        _ => return,
    };
    eprintln!("t={} {from:?}->{to:?} {what}", now / 1000);
}
