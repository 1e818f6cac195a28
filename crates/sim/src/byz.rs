//! Byzantine replicas: a real core whose outputs are rewritten before they hit the network.
//!
//! A Byzantine replica signs only as itself (it holds its own simulated key and nothing
//! else); anything it claims on behalf of others carries an invalid tag.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use rampart_bft::message::{Batch, ReplicaBody, SignedMessage, StopData};
use rampart_bft::{
    AuthTag, Digest, Message, Output, Regency, ReplicaId, SeqNo, SimulatedAuthenticator,
};

use crate::Node;

/// What a Byzantine replica does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Behaviour {
    /// As leader, sends different batches (and matching votes) to two halves of the replicas.
    Equivocate,
    /// Says nothing while it is the leader.
    SilentLeader,
    /// Sends messages claiming to come from other replicas or clients.
    Forge,
    /// Re-sends old messages it received, as if from their original senders.
    Replay,
    /// STOPDATA that omits or falsifies what it wrote and decided.
    LieStopData,
    /// Wrong checkpoint digests, corrupted state chunks, bogus checkpoint claims.
    WrongCheckpoint,
    /// Wrong results in replies to clients.
    WrongReplies,
    /// Random and bit-flipped bytes.
    Garbage,
}

impl Behaviour {
    /// All behaviours.
    pub const ALL: [Behaviour; 8] = [
        Behaviour::Equivocate,
        Behaviour::SilentLeader,
        Behaviour::Forge,
        Behaviour::Replay,
        Behaviour::LieStopData,
        Behaviour::WrongCheckpoint,
        Behaviour::WrongReplies,
        Behaviour::Garbage,
    ];

    /// Short name for summaries.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Equivocate => "equivocate",
            Behaviour::SilentLeader => "silent",
            Behaviour::Forge => "forge",
            Behaviour::Replay => "replay",
            Behaviour::LieStopData => "lying-stopdata",
            Behaviour::WrongCheckpoint => "wrong-checkpoint",
            Behaviour::WrongReplies => "wrong-replies",
            Behaviour::Garbage => "garbage",
        }
    }
}

/// State of one Byzantine replica.
pub struct Byzantine {
    /// Its id.
    pub id: ReplicaId,
    /// What it does.
    pub behaviours: Vec<Behaviour>,
    auth: SimulatedAuthenticator,
    /// `(regency, cid, digest A, batch B, digest B)` of the last equivocation.
    split: Option<(Regency, SeqNo, Digest, Digest)>,
    /// Packets it received, for replay: `(from, bytes)`, at most `REPLAY_BUFFER_MAX`.
    received: Vec<(Node, Vec<u8>)>,
}

/// Packets a Byzantine replica remembers for replay.
pub const REPLAY_BUFFER_MAX: usize = 64;

/// A packet to put on the network: `(claimed sender, destination, bytes)`.
pub type Packet = (Node, Node, Vec<u8>);

impl Byzantine {
    /// A Byzantine replica `id` with `behaviours`, signing as itself in cluster `seed`.
    #[must_use]
    pub fn new(id: ReplicaId, behaviours: Vec<Behaviour>, auth: SimulatedAuthenticator) -> Self {
        Byzantine {
            id,
            behaviours,
            auth,
            split: None,
            received: Vec::new(),
        }
    }

    fn has(&self, b: Behaviour) -> bool {
        self.behaviours.contains(&b)
    }

    /// Remember a packet it received (for replay).
    pub fn observe(&mut self, from: Node, bytes: &[u8], rng: &mut ChaCha8Rng) {
        if !self.has(Behaviour::Replay) {
            return;
        }
        if self.received.len() < REPLAY_BUFFER_MAX {
            self.received.push((from, bytes.to_vec()));
        } else {
            let i = rng.gen_range(0..REPLAY_BUFFER_MAX);
            self.received[i] = (from, bytes.to_vec());
        }
    }

    fn sign(&self, body: ReplicaBody) -> Message {
        Message::Replica(SignedMessage::new(&self.auth, self.id, body))
    }

    /// Rewrite one output of the core into packets.
    pub fn transform(
        &mut self,
        out: Output,
        is_leader: bool,
        replicas: usize,
        rng: &mut ChaCha8Rng,
    ) -> Vec<Packet> {
        let me = Node::Replica(self.id.0);
        let others: Vec<Node> = (0..replicas as u8)
            .filter(|r| *r != self.id.0)
            .map(Node::Replica)
            .collect();
        let (dests, msg) = match out {
            Output::Send { to, msg } => (vec![Node::Replica(to.0)], msg),
            Output::Broadcast { msg } => (others.clone(), msg),
            Output::Reply { client, msg } => (vec![Node::Client(client.0)], msg),
            _ => return Vec::new(),
        };
        let mut packets: Vec<Packet> = Vec::new();
        let body = match &msg {
            Message::Replica(m) => Some(&m.body),
            _ => None,
        };
        let protocol = matches!(
            body,
            Some(
                ReplicaBody::Propose { .. }
                    | ReplicaBody::Sync(_)
                    | ReplicaBody::Write { .. }
                    | ReplicaBody::Accept { .. }
            )
        );
        if self.has(Behaviour::SilentLeader) && is_leader && protocol {
            return self.extras(&others, None, rng);
        }
        let half = |n: &Node| matches!(n, Node::Replica(r) if usize::from(*r) < replicas / 2);
        let mut rewritten: Option<(Vec<Node>, Message, Vec<Node>, Message)> = None;
        let mut single: Option<Message> = None;
        match body {
            Some(ReplicaBody::Propose {
                regency,
                cid,
                batch,
            }) if self.has(Behaviour::Equivocate) => {
                let b = other_batch(batch);
                let (da, db) = (batch.digest(), b.digest());
                self.split = Some((*regency, *cid, da, db));
                let mb = self.sign(ReplicaBody::Propose {
                    regency: *regency,
                    cid: *cid,
                    batch: b,
                });
                let (a, bn): (Vec<Node>, Vec<Node>) = dests.iter().partition(|n| half(n));
                rewritten = Some((a, msg.clone(), bn, mb));
            }
            Some(ReplicaBody::Sync(s)) if self.has(Behaviour::Equivocate) => {
                let mut s2 = s.clone();
                s2.batch = other_batch(&s.batch);
                let (da, db) = (s.batch.digest(), s2.batch.digest());
                self.split = Some((s.regency, s.cid, da, db));
                let mb = self.sign(ReplicaBody::Sync(s2));
                let (a, bn): (Vec<Node>, Vec<Node>) = dests.iter().partition(|n| half(n));
                rewritten = Some((a, msg.clone(), bn, mb));
            }
            Some(ReplicaBody::Write {
                regency,
                cid,
                digest,
            })
            | Some(ReplicaBody::Accept {
                regency,
                cid,
                digest,
            }) if self.has(Behaviour::Equivocate) => {
                if let Some((r, c, da, db)) = self.split
                    && r == *regency
                    && c == *cid
                    && da == *digest
                {
                    let is_write = matches!(body, Some(ReplicaBody::Write { .. }));
                    let mb = if is_write {
                        self.sign(ReplicaBody::Write {
                            regency: r,
                            cid: c,
                            digest: db,
                        })
                    } else {
                        self.sign(ReplicaBody::Accept {
                            regency: r,
                            cid: c,
                            digest: db,
                        })
                    };
                    let (a, bn): (Vec<Node>, Vec<Node>) = dests.iter().partition(|n| half(n));
                    rewritten = Some((a, msg.clone(), bn, mb));
                }
            }
            Some(ReplicaBody::StopData(sd)) if self.has(Behaviour::LieStopData) => {
                single = Some(self.sign(ReplicaBody::StopData(lie(sd, rng))));
            }
            Some(ReplicaBody::StateDigests { checkpoints })
                if self.has(Behaviour::WrongCheckpoint) =>
            {
                let checkpoints = checkpoints
                    .iter()
                    .map(|(c, _, t)| (*c, Digest(rng.r#gen()), *t))
                    .collect();
                single = Some(self.sign(ReplicaBody::StateDigests { checkpoints }));
            }
            Some(ReplicaBody::Chunk {
                cid,
                index,
                total,
                data,
                proof,
            }) if self.has(Behaviour::WrongCheckpoint) => {
                let mut data = data.clone();
                if data.is_empty() {
                    data.push(1);
                } else {
                    let i = rng.gen_range(0..data.len());
                    data[i] ^= 0x5a;
                }
                single = Some(self.sign(ReplicaBody::Chunk {
                    cid: *cid,
                    index: *index,
                    total: *total,
                    data,
                    proof: proof.clone(),
                }));
            }
            Some(ReplicaBody::Decisions {
                decisions,
                regency_proof,
                ..
            }) if self.has(Behaviour::WrongCheckpoint) && rng.gen_bool(0.5) => {
                let claim = decisions
                    .last()
                    .map_or(SeqNo(1000), |d| SeqNo(d.cid().0 + 1000));
                single = Some(self.sign(ReplicaBody::Decisions {
                    decisions: Vec::new(),
                    checkpoint: Some(claim),
                    regency_proof: regency_proof.clone(),
                }));
            }
            Some(ReplicaBody::Reply {
                client,
                seq,
                read_only,
                ..
            }) if self.has(Behaviour::WrongReplies) => {
                let mut result = vec![1];
                result.extend_from_slice(&rng.gen_range(0u64..4).to_le_bytes());
                single = Some(self.sign(ReplicaBody::Reply {
                    client: *client,
                    seq: *seq,
                    read_only: *read_only,
                    result,
                }));
            }
            _ => {}
        }
        match (rewritten, single) {
            (Some((a, ma, b, mb)), _) => {
                let (ea, eb) = (ma.encode(), mb.encode());
                packets.extend(a.into_iter().map(|d| (me, d, ea.clone())));
                packets.extend(b.into_iter().map(|d| (me, d, eb.clone())));
            }
            (None, Some(m)) => {
                let e = m.encode();
                packets.extend(dests.iter().map(|d| (me, *d, e.clone())));
            }
            (None, None) => {
                let e = msg.encode();
                packets.extend(dests.iter().map(|d| (me, *d, e.clone())));
            }
        }
        let extra = self.extras(&others, Some(&msg), rng);
        packets.extend(extra);
        packets
    }

    /// Forged, replayed and garbage packets sent alongside normal traffic.
    fn extras(
        &mut self,
        others: &[Node],
        msg: Option<&Message>,
        rng: &mut ChaCha8Rng,
    ) -> Vec<Packet> {
        let mut out = Vec::new();
        let me = Node::Replica(self.id.0);
        if others.is_empty() {
            return out;
        }
        let pick = |rng: &mut ChaCha8Rng| others[rng.gen_range(0..others.len())];
        if self.has(Behaviour::Forge) && rng.gen_bool(0.2) {
            if let Some(Message::Replica(m)) = msg {
                // Claim another replica sent it: the tag is ours, so it cannot verify.
                let victim = pick(rng);
                if let Node::Replica(v) = victim {
                    let mut forged = m.clone();
                    forged.from = ReplicaId(v);
                    let to = pick(rng);
                    let claimed = if rng.gen_bool(0.5) { victim } else { me };
                    out.push((claimed, to, Message::Replica(forged).encode()));
                }
            }
            if rng.gen_bool(0.3) {
                // A forged client request with a made-up tag.
                let client = rng.gen_range(0..8u64);
                let req = rampart_bft::Request {
                    client: rampart_bft::ClientId(client),
                    seq: rampart_bft::RequestSeq(rng.gen_range(1..100)),
                    read_only: false,
                    op: crate::kv::KvOp::Put(0, 999_999).encode(),
                    tag: AuthTag([7; rampart_bft::AUTH_TAG_LEN]),
                };
                out.push((
                    Node::Client(client),
                    pick(rng),
                    Message::Request(req).encode(),
                ));
            }
        }
        if self.has(Behaviour::Replay) && !self.received.is_empty() && rng.gen_bool(0.2) {
            let (from, bytes) = self.received[rng.gen_range(0..self.received.len())].clone();
            out.push((from, pick(rng), bytes));
        }
        if self.has(Behaviour::Garbage) && rng.gen_bool(0.1) {
            let bytes = match msg {
                Some(m) if rng.gen_bool(0.5) => {
                    let mut b = m.encode();
                    let flips = rng.gen_range(1..4);
                    for _ in 0..flips {
                        let i = rng.gen_range(0..b.len());
                        b[i] ^= 1 << rng.gen_range(0..8);
                    }
                    b
                }
                _ => {
                    let len = rng.gen_range(0..200);
                    (0..len).map(|_| rng.r#gen::<u8>()).collect()
                }
            };
            out.push((me, pick(rng), bytes));
        }
        out
    }
}

/// A second, different batch for equivocation (re-using the client-signed requests, since a
/// replica cannot forge new ones).
pub(crate) fn other_batch(b: &Batch) -> Batch {
    let mut b2 = b.clone();
    if b2.requests.len() >= 2 {
        b2.requests.pop();
    } else {
        b2.timestamp.0 += 1;
    }
    b2
}

fn lie(sd: &StopData, rng: &mut ChaCha8Rng) -> StopData {
    let mut sd = sd.clone();
    match rng.gen_range(0..4) {
        0 => sd.written = None,
        1 => {
            sd.written = None;
            sd.last_decided = None;
        }
        2 => {
            if let Some((_, b)) = &mut sd.written {
                *b = other_batch(b);
            } else {
                sd.written = None;
            }
        }
        _ => {
            if let Some(c) = &mut sd.last_decided {
                c.cid = SeqNo(c.cid.0 + 5);
            }
        }
    }
    sd
}
