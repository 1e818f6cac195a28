//! Byzantine clients with valid keys: they sign real requests as themselves, and choose
//! what to send and to whom. Their operations touch only keys at or above
//! [`BYZ_KEY_BASE`], so the honest clients' history (checked for linearizability) is
//! theirs alone; the honest clients must still finish (liveness).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use rampart_bft::{ClientId, Message, Principal, Request, RequestSeq, SimulatedAuthenticator};

use crate::Node;
use crate::byz::Packet;
use crate::kv::KvOp;

/// Keys the Byzantine clients write (the honest ones use 0..3).
pub const BYZ_KEY_BASE: u8 = 100;
/// Old requests a replaying client remembers.
const REPLAY_MAX: usize = 32;

/// What a Byzantine client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientAttack {
    /// A new signed request to every replica every 2 ms, never waiting for replies.
    Flood,
    /// Re-sends its own old signed requests, and (a network replay) honest clients' old
    /// requests from their own address.
    Replay,
    /// Validly signed requests with an operation above `request_op_bytes_max`.
    Oversize,
    /// Valid requests sent to one follower only (issue 10, finding 8).
    OneFollower,
}

impl ClientAttack {
    /// All of them.
    pub const ALL: [ClientAttack; 4] = [
        ClientAttack::Flood,
        ClientAttack::Replay,
        ClientAttack::Oversize,
        ClientAttack::OneFollower,
    ];

    /// Short name for summaries.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ClientAttack::Flood => "flood",
            ClientAttack::Replay => "replay",
            ClientAttack::Oversize => "oversize",
            ClientAttack::OneFollower => "one-follower",
        }
    }
}

/// One Byzantine client.
pub struct ByzClient {
    /// Its id.
    pub id: ClientId,
    /// Its attack.
    pub attack: ClientAttack,
    auth: SimulatedAuthenticator,
    seq: u64,
    mine: Vec<Vec<u8>>,
    /// Honest clients' request packets seen on the network (for replay).
    pub seen: Vec<(Node, Node, Vec<u8>)>,
    follower: u8,
}

impl ByzClient {
    /// A Byzantine client `id` of cluster `seed`.
    #[must_use]
    pub fn new(id: u64, attack: ClientAttack, seed: u64, follower: u8) -> ByzClient {
        ByzClient {
            id: ClientId(id),
            attack,
            auth: SimulatedAuthenticator::new(Principal::Client(ClientId(id)), seed),
            seq: 0,
            mine: Vec::new(),
            seen: Vec::new(),
            follower,
        }
    }

    /// Milliseconds until its next move.
    #[must_use]
    pub fn period_ms(&self) -> u64 {
        match self.attack {
            ClientAttack::Flood => 2,
            ClientAttack::Replay | ClientAttack::Oversize => 20,
            ClientAttack::OneFollower => 150,
        }
    }

    /// Remember an honest client's request packet (bounded).
    pub fn see(&mut self, p: &Packet, rng: &mut ChaCha8Rng) {
        if self.attack != ClientAttack::Replay {
            return;
        }
        if self.seen.len() < REPLAY_MAX {
            self.seen.push(p.clone());
        } else {
            let i = rng.gen_range(0..REPLAY_MAX);
            self.seen[i] = p.clone();
        }
    }

    fn request(&mut self, op: Vec<u8>) -> Vec<u8> {
        self.seq += 1;
        Message::Request(Request::new_signed(
            &self.auth,
            self.id,
            RequestSeq(self.seq),
            false,
            op,
        ))
        .encode()
    }

    /// Its next move: packets to send.
    pub fn tick(&mut self, n: u8, op_max: usize, rng: &mut ChaCha8Rng) -> Vec<Packet> {
        let me = Node::Client(self.id.0);
        let key = BYZ_KEY_BASE + (self.id.0 % 100) as u8;
        let mut out = Vec::new();
        match self.attack {
            ClientAttack::Flood => {
                let b = self.request(KvOp::Put(key, rng.gen_range(0..1000)).encode());
                for r in 0..n {
                    out.push((me, Node::Replica(r), b.clone()));
                }
            }
            ClientAttack::Replay => {
                if self.mine.is_empty() || rng.gen_bool(0.3) {
                    let b = self.request(KvOp::Put(key, self.seq).encode());
                    if self.mine.len() < REPLAY_MAX {
                        self.mine.push(b.clone());
                    }
                    for r in 0..n {
                        out.push((me, Node::Replica(r), b.clone()));
                    }
                } else {
                    let b = self.mine[rng.gen_range(0..self.mine.len())].clone();
                    out.push((me, Node::Replica(rng.gen_range(0..n)), b));
                }
                if !self.seen.is_empty() {
                    let p = self.seen[rng.gen_range(0..self.seen.len())].clone();
                    out.push(p);
                }
            }
            ClientAttack::Oversize => {
                let len = op_max + rng.gen_range(1..200);
                let b = self.request(vec![0xab; len]);
                for r in 0..n {
                    out.push((me, Node::Replica(r), b.clone()));
                }
            }
            ClientAttack::OneFollower => {
                let b = self.request(KvOp::Put(key, self.seq).encode());
                out.push((me, Node::Replica(self.follower), b));
            }
        }
        out
    }
}
