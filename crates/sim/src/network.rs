//! The simulated network, in one of three modes ([`NetMode`]).
//!
//! - **Random**: a coin drops, duplicates, replays and delays packets, and random
//!   partitions (one- and two-way) come and go before the heal (the original simulator).
//! - **Adversarial**: within partial synchrony. Before GST (the heal) the adversary holds
//!   chosen message kinds on chosen links ([`Hold`]): a held packet is delivered when its
//!   hold ends, at the latest at GST, so nothing is delayed forever. The holds come from
//!   the attack's plan (e.g. "ACCEPTs of checkpoint instances to everyone but the target",
//!   "the target's STOPDATA") or, for the random attacks, from the seed ("the WRITEs of
//!   replica 2 to 0 and 3 between 400 and 1,300 ms"). After GST every packet is delivered
//!   within `delay_max`.
//! - **Quiet**: no loss, no holds, a small bounded delay (the throughput-floor runs).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use rampart_bft::message::ReplicaBody;
use rampart_bft::{Message, WireLimits};

use crate::Node;

/// How the network misbehaves in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    /// Coin-flip faults and random partitions.
    Random,
    /// Chosen holds of chosen kinds on chosen links, released by GST.
    Adversarial,
    /// No faults at all.
    Quiet,
}

impl NetMode {
    /// Short name for summaries.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            NetMode::Random => "random",
            NetMode::Adversarial => "adversarial",
            NetMode::Quiet => "quiet",
        }
    }
}

/// Message kinds, as the adversary sees them on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Kind {
    Request,
    Reply,
    Propose,
    Write,
    Accept,
    Stop,
    StopData,
    Sync,
    Fetch,
    Decisions,
    StateRequest,
    StateDigests,
    ChunkRequest,
    Chunk,
}

/// What the network knows of a packet: kind, regency and instance (0 if none).
#[must_use]
pub fn classify(bytes: &[u8], limits: &WireLimits) -> Option<(Kind, u64, u64)> {
    let m = match Message::decode(bytes, limits).ok()? {
        Message::Request(_) => return Some((Kind::Request, 0, 0)),
        Message::Replica(m) => m,
        _ => return None,
    };
    Some(match &m.body {
        ReplicaBody::Reply { .. } => (Kind::Reply, 0, 0),
        ReplicaBody::Propose { regency, cid, .. } => (Kind::Propose, regency.0, cid.0),
        ReplicaBody::Write { regency, cid, .. } => (Kind::Write, regency.0, cid.0),
        ReplicaBody::Accept { regency, cid, .. } => (Kind::Accept, regency.0, cid.0),
        ReplicaBody::Stop { regency } => (Kind::Stop, regency.0, 0),
        ReplicaBody::StopData(sd) => (Kind::StopData, sd.regency.0, sd.last_cid().0),
        ReplicaBody::Sync(s) => (Kind::Sync, s.regency.0, s.cid.0),
        ReplicaBody::Fetch { from_cid } => (Kind::Fetch, 0, from_cid.0),
        ReplicaBody::Decisions { .. } => (Kind::Decisions, 0, 0),
        ReplicaBody::StateRequest => (Kind::StateRequest, 0, 0),
        ReplicaBody::StateDigests { .. } => (Kind::StateDigests, 0, 0),
        ReplicaBody::ChunkRequest { cid, .. } => (Kind::ChunkRequest, 0, cid.0),
        ReplicaBody::Chunk { cid, .. } => (Kind::Chunk, 0, cid.0),
        _ => return None,
    })
}

/// One adversarial hold: matching packets sent in `[start, until)` are delivered at
/// `until` (plus the normal delay). `until` never exceeds GST.
#[derive(Debug, Clone)]
pub struct Hold {
    /// Kinds held (empty: every kind).
    pub kinds: Vec<Kind>,
    /// Sender (replica), or any.
    pub from: Option<u8>,
    /// Destinations (replicas); empty: every replica.
    pub to: Vec<u8>,
    /// Start of the hold (virtual ns).
    pub start: u64,
    /// End of the hold (virtual ns), at most GST.
    pub until: u64,
    /// Only packets of regencies up to this one.
    pub regency_max: Option<u64>,
    /// Only instances k and k+1 for checkpoint instances k (multiples of this interval).
    pub checkpoint_window: Option<u64>,
}

impl Hold {
    fn matches(&self, now: u64, from: Node, to: Node, meta: Option<(Kind, u64, u64)>) -> bool {
        if now < self.start || now >= self.until {
            return false;
        }
        let Node::Replica(t) = to else { return false };
        if !self.to.is_empty() && !self.to.contains(&t) {
            return false;
        }
        if let Some(f) = self.from
            && from != Node::Replica(f)
        {
            return false;
        }
        let Some((kind, regency, cid)) = meta else {
            return self.kinds.is_empty();
        };
        if !self.kinds.is_empty() && !self.kinds.contains(&kind) {
            return false;
        }
        if self.regency_max.is_some_and(|r| regency > r) {
            return false;
        }
        if let Some(k) = self.checkpoint_window {
            let in_window = cid > 0 && (cid % k == 0 || (cid > k && cid % k == 1));
            if !in_window {
                return false;
            }
        }
        true
    }

    /// A random hold from the seed, within `[0, gst)`, over `n` replicas.
    pub fn random(n: u8, gst: u64, rng: &mut ChaCha8Rng) -> Hold {
        const KINDS: [Kind; 9] = [
            Kind::Accept,
            Kind::Write,
            Kind::Propose,
            Kind::StopData,
            Kind::Sync,
            Kind::Stop,
            Kind::Chunk,
            Kind::Decisions,
            Kind::StateDigests,
        ];
        let mut kinds = vec![KINDS[rng.gen_range(0..KINDS.len())]];
        if rng.gen_bool(0.4) {
            kinds.push(KINDS[rng.gen_range(0..KINDS.len())]);
        }
        let from = Some(rng.gen_range(0..n));
        let mut to: Vec<u8> = (0..n).filter(|_| rng.gen_bool(0.5)).collect();
        if to.is_empty() {
            to.push(rng.gen_range(0..n));
        }
        let start = rng.gen_range(0..gst.max(1));
        let until = (start + rng.gen_range(gst / 10..gst.max(2))).min(gst);
        Hold {
            kinds,
            from,
            to,
            start,
            until,
            regency_max: None,
            checkpoint_window: None,
        }
    }
}

/// Network state.
pub struct Network {
    /// The mode.
    pub mode: NetMode,
    /// Drop probability (random mode).
    pub drop_p: f64,
    /// Duplicate probability (random mode).
    pub dup_p: f64,
    /// Replay probability (random mode).
    pub replay_p: f64,
    /// Smallest delay (ns).
    pub delay_min_ns: u64,
    /// Largest delay (ns); after GST every packet is delivered within it.
    pub delay_max_ns: u64,
    /// Blocked directed links between replicas (random partitions).
    pub blocked: Vec<(u8, u8)>,
    /// Current partition's id.
    pub partition_id: u64,
    /// Packets remembered for network-level replay.
    pub recent: Vec<(Node, Node, Vec<u8>)>,
    /// Adversarial holds.
    pub holds: Vec<Hold>,
    /// Packets held so far.
    pub held: u64,
}

impl Network {
    /// A network with no faults and a delay in `[1, delay_max_ms]` ms.
    #[must_use]
    pub fn quiet(mode: NetMode, delay_max_ms: u64) -> Network {
        Network {
            mode,
            drop_p: 0.0,
            dup_p: 0.0,
            replay_p: 0.0,
            delay_min_ns: 1_000_000,
            delay_max_ns: delay_max_ms * 1_000_000,
            blocked: Vec::new(),
            partition_id: 0,
            recent: Vec::new(),
            holds: Vec::new(),
            held: 0,
        }
    }

    /// When an adversarial hold releases this packet (if one applies now).
    pub fn hold_until(
        &mut self,
        now: u64,
        from: Node,
        to: Node,
        bytes: &[u8],
        limits: &WireLimits,
    ) -> Option<u64> {
        if self.holds.is_empty() || !matches!(to, Node::Replica(_)) {
            return None;
        }
        if !self.holds.iter().any(|h| now >= h.start && now < h.until) {
            return None;
        }
        let meta = classify(bytes, limits);
        let until = self
            .holds
            .iter()
            .filter(|h| h.matches(now, from, to, meta))
            .map(|h| h.until)
            .max()?;
        self.held += 1;
        Some(until)
    }

    /// GST: no more holds, loss, duplication or replay (held packets stay scheduled,
    /// at or before GST).
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.drop_p = 0.0;
        self.dup_p = 0.0;
        self.replay_p = 0.0;
        self.holds.clear();
    }
}
