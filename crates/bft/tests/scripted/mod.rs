//! A scripted network over real replica cores: the test, playing the adversary, chooses
//! which message is delivered when (no randomness), and may sign messages as the Byzantine
//! replicas it controls.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use rampart_bft::Regency;
use rampart_bft::message::{Batch, ReplicaBody, SignedMessage};
use rampart_bft::*;

pub const SEED: u64 = 7;

/// Records every executed op, so that replicas can be compared.
#[derive(Default)]
pub struct Log(pub Vec<Vec<u8>>);

impl Application for Log {
    fn execute_batch(&mut self, _: &BatchContext, ops: &[&[u8]]) -> Vec<Vec<u8>> {
        ops.iter()
            .map(|op| {
                self.0.push(op.to_vec());
                op.to_vec()
            })
            .collect()
    }
    fn query(&self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.concat()
    }
    fn restore(&mut self, s: &[u8]) -> Result<(), RestoreError> {
        self.0 = vec![s.to_vec()];
        Ok(())
    }
    fn state_digest(&self) -> Digest {
        Digest::of("log", &[&self.0.concat()])
    }
}

pub type Core = Replica<Log, SimulatedAuthenticator>;

/// One message in flight.
#[derive(Clone)]
pub struct InFlight {
    pub from: ReplicaId,
    pub to: ReplicaId,
    pub msg: SignedMessage,
}

pub struct Net {
    pub config: Config,
    pub cores: Vec<Core>,
    pub queue: Vec<InFlight>,
    /// Every message ever sent by a core (the colluding adversary sees all traffic).
    pub history: Vec<InFlight>,
    /// Bodies the adversary already echoed.
    pub echoed: Vec<(u8, ReplicaBody)>,
    /// Decided `(cid -> digest)` per replica.
    pub decided: Vec<BTreeMap<u64, Digest>>,
    pub installed: Vec<Vec<u64>>,
    /// Checkpoints taken `(cid, digest)` per replica.
    pub checkpoints: Vec<Vec<(u64, Digest)>>,
    pub now: Timestamp,
    /// Replicas whose own outputs are dropped (the adversary speaks for them).
    pub muted: Vec<ReplicaId>,
    /// Client requests a replica forwarded to another `(from, to, request)`, queued.
    pub forwards: Vec<(u8, u8, Request)>,
    /// Each replica's durable storage (every persist is applied at once).
    pub storage: Vec<MemStorage>,
}

/// A standalone core of a 4-replica group, driven by hand (no [`Net`]).
pub fn core(i: u8) -> Core {
    Replica::new(
        Config::new(4),
        ReplicaId(i),
        auth(i),
        Log::default(),
        RecoveredState::default(),
        1,
        Timestamp(0),
    )
    .expect("replica")
}

pub fn auth(i: u8) -> SimulatedAuthenticator {
    SimulatedAuthenticator::new(Principal::Replica(ReplicaId(i)), SEED)
}

pub fn request(client: u64, op: &[u8]) -> Request {
    let a = SimulatedAuthenticator::new(Principal::Client(ClientId(client)), SEED);
    Request::new_signed(&a, ClientId(client), RequestSeq(1), false, op.to_vec())
}

pub fn kind(b: &ReplicaBody) -> &'static str {
    match b {
        ReplicaBody::Reply { .. } => "reply",
        ReplicaBody::Propose { .. } => "propose",
        ReplicaBody::Write { .. } => "write",
        ReplicaBody::Accept { .. } => "accept",
        ReplicaBody::Stop { .. } => "stop",
        ReplicaBody::StopData(_) => "stopdata",
        ReplicaBody::Sync(_) => "sync",
        ReplicaBody::Fetch { .. } => "fetch",
        ReplicaBody::Decisions { .. } => "decisions",
        ReplicaBody::StateRequest => "staterequest",
        ReplicaBody::StateDigests { .. } => "statedigests",
        ReplicaBody::ChunkRequest { .. } => "chunkrequest",
        ReplicaBody::Chunk { .. } => "chunk",
        _ => "other",
    }
}

impl Net {
    pub fn new(n: usize, checkpoint_interval: u64) -> Net {
        let mut config = Config::new(n);
        config.checkpoint_interval = checkpoint_interval;
        Net::with_config(config)
    }

    pub fn with_config(config: Config) -> Net {
        let n = config.replicas;
        let cores = (0..n as u8)
            .map(|i| {
                Replica::new(
                    config.clone(),
                    ReplicaId(i),
                    auth(i),
                    Log::default(),
                    RecoveredState::default(),
                    u64::from(i) + 1,
                    Timestamp(0),
                )
                .expect("replica")
            })
            .collect();
        let mut net = Net {
            config,
            cores,
            queue: Vec::new(),
            history: Vec::new(),
            echoed: Vec::new(),
            decided: vec![BTreeMap::new(); n],
            installed: vec![Vec::new(); n],
            checkpoints: vec![Vec::new(); n],
            now: Timestamp(0),
            muted: Vec::new(),
            forwards: Vec::new(),
            storage: vec![MemStorage::default(); n],
        };
        // The start-up fetch round, delivered in full.
        for i in 0..n {
            net.cores[i].handle_timeout(Timestamp(0));
            net.drain(i);
        }
        net.deliver(|_| true);
        net
    }

    pub fn drain(&mut self, i: usize) {
        let me = ReplicaId(i as u8);
        let n = self.cores.len();
        while let Some(o) = self.cores[i].poll_output() {
            match o {
                Output::Persist { token, entry } => {
                    self.storage[i].apply(&entry).expect("storage");
                    self.cores[i].handle_persisted(token);
                }
                Output::Decided { cid, digest, .. } => {
                    let prev = self.decided[i].insert(cid.0, digest);
                    assert!(prev.is_none(), "replica {i} decided {cid:?} twice");
                }
                Output::StateInstalled { cid, .. } => self.installed[i].push(cid.0),
                Output::Checkpoint { cid, digest } => self.checkpoints[i].push((cid.0, digest)),
                Output::Send {
                    to,
                    msg: Message::Request(r),
                } if !self.muted.contains(&me) => self.forwards.push((me.0, to.0, r)),
                Output::Send {
                    to,
                    msg: Message::Replica(msg),
                } if !self.muted.contains(&me) => {
                    let m = InFlight { from: me, to, msg };
                    self.history.push(m.clone());
                    self.queue.push(m);
                }
                Output::Broadcast {
                    msg: Message::Replica(msg),
                } if !self.muted.contains(&me) => {
                    for t in 0..n as u8 {
                        if t != me.0 {
                            let m = InFlight {
                                from: me,
                                to: ReplicaId(t),
                                msg: msg.clone(),
                            };
                            self.history.push(m.clone());
                            self.queue.push(m);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Deliver every queued message that `pick` selects, in order, including the ones the
    /// deliveries produce, until none is selected. The others stay queued.
    pub fn deliver(&mut self, mut pick: impl FnMut(&InFlight) -> bool) {
        while let Some(pos) = self.queue.iter().position(&mut pick) {
            let m = self.queue.remove(pos);
            let to = usize::from(m.to.0);
            let _ = self.cores[to].handle_message(
                self.now,
                Peer::Replica(m.from),
                Message::Replica(m.msg),
            );
            self.drain(to);
        }
    }

    /// Deliver the queued forwarded requests (not what they cause).
    pub fn deliver_forwards(&mut self) {
        for (from, to, r) in std::mem::take(&mut self.forwards) {
            let to = usize::from(to);
            let _ = self.cores[to].handle_message(
                self.now,
                Peer::Replica(ReplicaId(from)),
                Message::Request(r),
            );
            self.drain(to);
        }
    }

    /// Crash replica `i` (its queued messages are lost) and restart it from its storage,
    /// running its start-up timer.
    pub fn restart(&mut self, i: u8) {
        let idx = usize::from(i);
        self.queue.retain(|m| m.from.0 != i && m.to.0 != i);
        let recovered = self.storage[idx].recover().expect("recover");
        self.cores[idx] = Replica::new(
            self.config.clone(),
            ReplicaId(i),
            auth(i),
            Log::default(),
            recovered,
            u64::from(i) + 100,
            self.now,
        )
        .expect("restart");
        self.cores[idx].handle_timeout(self.now);
        self.drain(idx);
    }

    /// Remove (without delivering) the queued messages `pick` selects.
    pub fn take(&mut self, mut pick: impl FnMut(&InFlight) -> bool) -> Vec<InFlight> {
        let (taken, kept) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|m| pick(m));
        self.queue = kept;
        taken
    }

    /// The adversary sends `body`, signed by Byzantine replica `from`, to `to`.
    pub fn inject(&mut self, from: u8, to: u8, body: ReplicaBody) {
        let msg = SignedMessage::new(&auth(from), ReplicaId(from), body);
        self.queue.push(InFlight {
            from: ReplicaId(from),
            to: ReplicaId(to),
            msg,
        });
    }

    pub fn submit(&mut self, to: &[u8], req: &Request) {
        for &i in to {
            let _ = self.cores[usize::from(i)].handle_request(self.now, req.clone());
            self.drain(usize::from(i));
        }
    }

    pub fn advance(&mut self, d: Duration, who: &[u8]) {
        self.now = self.now.saturating_add(d);
        for &i in who {
            self.cores[usize::from(i)].handle_timeout(self.now);
            self.drain(usize::from(i));
        }
    }

    /// Agreement among `correct`: no instance decided with two digests.
    pub fn agreement(&self, correct: &[u8]) -> Result<(), String> {
        let mut seen: BTreeMap<u64, (u8, Digest)> = BTreeMap::new();
        for &i in correct {
            for (cid, d) in &self.decided[usize::from(i)] {
                match seen.get(cid) {
                    Some((j, e)) if e != d => {
                        return Err(format!(
                            "agreement violated at instance {cid}: replica {j} decided {e:?}, replica {i} decided {d:?}"
                        ));
                    }
                    _ => {
                        seen.insert(*cid, (i, *d));
                    }
                }
            }
        }
        Ok(())
    }
}

pub fn is(m: &InFlight, k: &str) -> bool {
    kind(&m.msg.body) == k
}

pub fn batch_digest(b: &Batch) -> Digest {
    b.digest()
}

impl Net {
    /// Byzantine `byz` votes (WRITE and ACCEPT) for whatever correct replicas have voted
    /// for in `regency`, once per vote, to everyone: it holds no value of its own.
    pub fn echo_votes(&mut self, byz: u8, regency: Regency) {
        let votes: Vec<ReplicaBody> = self
            .history
            .iter()
            .filter(|m| m.from.0 != byz)
            .filter_map(|m| match &m.msg.body {
                ReplicaBody::Write { regency: r, .. } | ReplicaBody::Accept { regency: r, .. }
                    if *r == regency =>
                {
                    Some(m.msg.body.clone())
                }
                _ => None,
            })
            .collect();
        for body in votes {
            if self.echoed.iter().any(|(b, e)| *b == byz && *e == body) {
                continue;
            }
            self.echoed.push((byz, body.clone()));
            for to in 0..self.cores.len() as u8 {
                if to != byz {
                    self.inject(byz, to, body.clone());
                }
            }
        }
    }
}
