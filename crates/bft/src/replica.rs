//! The replica core: Mod-SMaRt ordering, synchronization phase, checkpoints, state transfer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::app::{Application, BatchContext};
use crate::auth::{AuthTag, Authenticator};
use crate::error::{Error, Peer, PeerFault};
use crate::message::{
    Batch, Certificate, CheckpointState, Decision, Message, ReplicaBody, Request, SignedMessage,
    StopData, Sync, Vote, VoteKind, WireLimits,
};
use crate::storage::{CheckpointRecord, PersistEntry, RecoveredState, RegencyRecord, VoteRecord};
use crate::types::{
    ClientId, Config, ConfigError, DangerTestMutation, Digest, Regency, ReplicaId, RequestSeq,
    SeqNo, Timestamp,
};

/// STOP messages are kept for regencies up to this far above the installed one
/// (worst case `n * STOP_WINDOW_MAX` entries).
pub const STOP_WINDOW_MAX: u64 = 16;
/// Request-timer backoff: the timeout doubles per failed regency, at most 2^this times.
pub const TIMEOUT_BACKOFF_EXP_MAX: u32 = 6;
/// Network messages (sends, broadcasts, replies) queued in `poll_output` or held for a
/// persist at most. Beyond it a new network message is dropped and counted in
/// [`Stats::outputs_dropped`]: the network may lose messages anyway and retransmission
/// recovers them, whereas a panic or unbounded memory (a driver whose disk stalls while
/// peers keep sending) would not be recoverable (issue 10, finding 9c). Persist entries and
/// events are never dropped.
pub const OUTPUTS_MAX: usize = 1 << 16;

/// An effect the driver must carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // Moved once per message; boxing would only add an allocation.
pub enum Output {
    /// Send to one replica.
    Send {
        /// Destination.
        to: ReplicaId,
        /// Message.
        msg: Message,
    },
    /// Send to every other replica.
    Broadcast {
        /// Message.
        msg: Message,
    },
    /// Send to a client.
    Reply {
        /// Destination.
        client: ClientId,
        /// Message (a signed reply).
        msg: Message,
    },
    /// Write `entry` durably, in token order, then call [`Replica::handle_persisted`].
    Persist {
        /// Token to hand back.
        token: u64,
        /// What to write.
        entry: PersistEntry,
    },
    /// Instance `cid` was decided and executed (event, for observers).
    Decided {
        /// Instance.
        cid: SeqNo,
        /// Regency of the proof.
        regency: Regency,
        /// Batch digest.
        digest: Digest,
        /// Requests in the batch.
        requests: usize,
    },
    /// A checkpoint was taken (event).
    Checkpoint {
        /// Last instance included.
        cid: SeqNo,
        /// Digest of the checkpoint bytes.
        digest: Digest,
    },
    /// State transfer installed a checkpoint (event).
    StateInstalled {
        /// Last instance included.
        cid: SeqNo,
        /// Digest of the checkpoint bytes.
        digest: Digest,
    },
    /// A new regency became active (event).
    RegencyInstalled {
        /// Regency.
        regency: Regency,
        /// Its leader.
        leader: ReplicaId,
    },
}

/// Counters for observability. Peer faults are counted, never fatal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages rejected as peer faults (bad tag, invalid proof, ...).
    pub peer_faults: u64,
    /// Byte strings that failed to decode.
    pub decode_errors: u64,
    /// Instances decided (including by catch-up).
    pub decided: u64,
    /// Requests executed.
    pub executed: u64,
    /// Duplicate requests suppressed at execution.
    pub duplicates_suppressed: u64,
    /// Read-only requests answered without ordering.
    pub read_only_served: u64,
    /// Requests dropped because the pending pool was full.
    pub pending_full_drops: u64,
    /// Requests refused because `clients_max` sessions exist.
    pub sessions_full_refusals: u64,
    /// STOPs sent.
    pub stops_sent: u64,
    /// Regencies installed.
    pub regencies_installed: u64,
    /// State transfers completed.
    pub state_transfers: u64,
    /// Catch-up requests sent.
    pub fetches_sent: u64,
    /// Requests forwarded to the leader on their timer's first expiry.
    pub requests_forwarded: u64,
    /// Network messages dropped because [`OUTPUTS_MAX`] were already queued or held.
    pub outputs_dropped: u64,
}

/// Diagnostic view of a replica (see [`Replica::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Installed regency.
    pub regency: Regency,
    /// Highest regency asked for with STOP.
    pub stop_target: Regency,
    /// Waiting for the new leader's SYNC.
    pub syncing: bool,
    /// Last decided instance.
    pub last_decided: SeqNo,
    /// Requests waiting to be ordered.
    pub pending_requests: usize,
    /// The running state transfer, described.
    pub state_transfer: Option<String>,
    /// The open instance has a proposal.
    pub has_proposal: bool,
    /// WRITEs collected in the open instance.
    pub writes: usize,
    /// ACCEPTs collected in the open instance.
    pub accepts: usize,
    /// Own votes in the open instance.
    pub vote: VoteRecord,
}

#[derive(Debug, Clone)]
struct Session {
    seq: RequestSeq,
    reply: Vec<u8>,
}

#[derive(Debug, Default)]
struct Open {
    cid: SeqNo,
    /// Proposal for `(cid, regency)` as `(regency, digest, batch)`.
    proposal: Option<(Regency, Digest, Batch)>,
    writes: BTreeMap<ReplicaId, (Digest, AuthTag)>,
    accepts: BTreeMap<ReplicaId, (Digest, AuthTag)>,
    vote: VoteRecord,
}

/// A state transfer. Until `chosen` is set it is only a *probe*: the replica asked for
/// checkpoint digests (one peer claimed a checkpoint beyond its log) but has no evidence
/// of its own that it is behind, so it keeps proposing and serving reads (issue 10,
/// finding 3). It downloads only once f+1 replicas vouch for a checkpoint above its last
/// decided instance.
#[derive(Debug)]
struct StateTransfer {
    digests: BTreeMap<ReplicaId, Vec<(SeqNo, Digest, u32)>>,
    /// `(cid, digest, total chunks, providers)` once f+1 replicas agree.
    chosen: Option<(SeqNo, Digest, u32, Vec<ReplicaId>)>,
    provider: usize,
    received: Vec<u8>,
    next_index: u32,
    /// Rounds of StateRequest without f+1 matching digests; gives up at `ST_ATTEMPTS_MAX`.
    attempts: u32,
    /// Failed downloads (timeout or bad chunk) of `chosen`; at
    /// `ST_RETRIES_PER_PROVIDER * providers` the checkpoint is dropped and picked again.
    retries: u32,
    /// When the current step (digests or the next chunk) times out.
    deadline: Timestamp,
}

/// Buffered next-instance messages per replica (PROPOSE, WRITE, ACCEPT); worst case
/// `n * FUTURE_MESSAGES_MAX` messages, one of them a batch.
const FUTURE_MESSAGES_MAX: usize = 3;

/// State-transfer rounds without f+1 matching checkpoint digests before giving up (a
/// Byzantine replica may have claimed a checkpoint nobody else has).
const ST_ATTEMPTS_MAX: u32 = 3;

/// Failed downloads per provider of the chosen checkpoint before the replica asks for
/// digests again and re-picks the newest checkpoint f+1 replicas vouch for (the providers
/// may have garbage-collected the chosen one, or lie; issue 10, finding 4).
const ST_RETRIES_PER_PROVIDER: u32 = 2;

/// A BFT-SMaRt-class replica. Sans-IO: see the crate docs for the driving loop.
pub struct Replica<A: Application, Au: Authenticator> {
    config: Config,
    limits: WireLimits,
    id: ReplicaId,
    auth: Au,
    app: A,
    rng: u64,
    now: Timestamp,

    regency: Regency,
    stop_target: Regency,
    syncing: bool,
    regency_proof: Option<SignedMessage>,
    /// First instance of the installed regency (the SYNC's). Instances below it are only
    /// ever learned by catch-up in this regency, never proposed or voted on.
    sync_cid: SeqNo,
    failed_regencies: u32,
    stops: BTreeMap<Regency, BTreeSet<ReplicaId>>,
    stopdatas: BTreeMap<ReplicaId, SignedMessage>,
    sync_sent: bool,
    pending_sync: Option<SignedMessage>,
    stop_deadline: Option<Timestamp>,

    last_decided: SeqNo,
    last_timestamp: Timestamp,
    last_proof: Option<Certificate>,
    open: Open,
    log: VecDeque<Decision>,
    checkpoints: Vec<CheckpointRecord>,
    sessions: BTreeMap<ClientId, Session>,
    /// Requests waiting to be ordered: the request, when its timer started, and whether it
    /// was already forwarded to the leader (on the timer's first expiry; the second expiry
    /// suspects the leader, as in BFT-SMaRt; issue 10, finding 8).
    pending: BTreeMap<ClientId, (Request, Timestamp, bool)>,
    /// Where the next batch starts walking `pending` (fair batching: after the last client
    /// the previous batch took, so no client id is favoured; issue 10, finding 7).
    batch_cursor: ClientId,

    outputs: VecDeque<Output>,
    held: VecDeque<(u64, Output)>,
    next_token: u64,
    persisted_token: u64,
    recovering: bool,

    retransmit_at: Timestamp,
    fetch_deadline: Option<Timestamp>,
    fetch_peer: Option<ReplicaId>,
    behind: bool,
    st: Option<StateTransfer>,
    /// Verified PROPOSE/WRITE/ACCEPT messages for the instance after the open one, in the
    /// installed regency: on real networks they often overtake the last votes of the open
    /// instance (they come over other connections). Replayed when the open instance is
    /// decided, instead of waiting for a retransmission. At most [`FUTURE_MESSAGES_MAX`]
    /// per replica (one of each kind).
    future: Vec<SignedMessage>,
    /// If the open instance is still undecided then, the replica fetches as it would have
    /// on the first early message (so buffering never costs liveness).
    future_deadline: Option<Timestamp>,
    stats: Stats,
}

impl<A: Application, Au: Authenticator> Replica<A, Au> {
    /// Build replica `id` from recovered durable state (`RecoveredState::default()` for a
    /// fresh replica). `app` must be in its initial state. `rng_seed` seeds the choice of
    /// peers for catch-up; `now` starts the timers.
    pub fn new(
        config: Config,
        id: ReplicaId,
        auth: Au,
        app: A,
        recovered: RecoveredState,
        rng_seed: u64,
        now: Timestamp,
    ) -> Result<Self, Error> {
        config.check()?;
        if usize::from(id.0) >= config.replicas {
            return Err(ConfigError::ReplicaId {
                id: id.0,
                replicas: config.replicas,
            }
            .into());
        }
        let limits = WireLimits::from_config(&config);
        let mut r = Replica {
            limits,
            id,
            auth,
            app,
            rng: rng_seed | 1,
            now,
            regency: recovered.regency.regency,
            stop_target: recovered.regency.stop_target.max(recovered.regency.regency),
            syncing: recovered.regency.regency > Regency(0),
            regency_proof: None,
            sync_cid: if recovered.regency.regency > Regency(0) {
                SeqNo(u64::MAX)
            } else {
                SeqNo(0)
            },
            failed_regencies: 0,
            stops: BTreeMap::new(),
            stopdatas: BTreeMap::new(),
            sync_sent: false,
            pending_sync: None,
            stop_deadline: None,
            last_decided: SeqNo(0),
            last_timestamp: Timestamp(0),
            last_proof: None,
            open: Open {
                cid: SeqNo(1),
                ..Open::default()
            },
            log: VecDeque::new(),
            checkpoints: Vec::new(),
            sessions: BTreeMap::new(),
            pending: BTreeMap::new(),
            batch_cursor: ClientId(0),
            outputs: VecDeque::new(),
            held: VecDeque::new(),
            next_token: 1,
            persisted_token: 0,
            recovering: true,
            retransmit_at: now.saturating_add(config.retransmit_interval),
            fetch_deadline: Some(now),
            fetch_peer: None,
            behind: true,
            st: None,
            future: Vec::new(),
            future_deadline: None,
            stats: Stats::default(),
            config,
        };
        r.recover(recovered)?;
        r.recovering = false;
        if r.syncing {
            r.stop_deadline = Some(now.saturating_add(r.current_timeout()));
        }
        r.invariants();
        Ok(r)
    }

    fn recover(&mut self, rec: RecoveredState) -> Result<(), Error> {
        if let Some(cp) = rec.checkpoints.last() {
            if Digest::of("rampart-bft checkpoint v1", &[&cp.blob]) != cp.digest {
                return Err(crate::storage::StorageError::Corrupt {
                    what: "checkpoint digest",
                }
                .into());
            }
            let state = CheckpointState::decode(&cp.blob, &self.config).map_err(|_| {
                crate::storage::StorageError::Corrupt {
                    what: "checkpoint encoding",
                }
            })?;
            if cp.proof.kind != VoteKind::Accept
                || cp.proof.cid != cp.cid
                || !cp.proof.verify(&self.config, &self.auth)
            {
                return Err(crate::storage::StorageError::Corrupt {
                    what: "checkpoint proof",
                }
                .into());
            }
            self.install_checkpoint_state(state, cp.proof.clone())?;
            self.checkpoints = rec.checkpoints.clone();
        }
        // Decisions covered by the checkpoint are kept for serving catch-up, but only as a
        // contiguous run ending at the checkpoint (a crash between persisting a checkpoint
        // and truncating the log may leave unrelated older entries behind).
        let mut covered: Vec<Decision> = Vec::new();
        for d in rec.decisions.iter().rev() {
            let want = covered
                .last()
                .map_or(self.last_decided, |l| SeqNo(l.cid().0 - 1));
            if d.cid() > self.last_decided {
                continue;
            }
            if d.cid() != want || want == SeqNo(0) {
                break;
            }
            covered.push(d.clone());
        }
        self.log.extend(covered.into_iter().rev());
        for d in rec.decisions {
            if d.cid() <= self.last_decided {
                continue;
            }
            if d.cid() != self.last_decided.next() {
                return Err(crate::storage::StorageError::Corrupt { what: "gap in log" }.into());
            }
            self.decide(d, false);
        }
        // The proof of the last decided instance, which STOPDATA carries: set by `decide`
        // for replayed decisions, and otherwise the checkpoint's own (ADR 0101).
        if let Some(d) = self.log.iter().rev().find(|d| d.cid() == self.last_decided) {
            self.last_proof = Some(d.proof.clone());
        }
        // Only the log after the older checkpoint is needed.
        let keep_after = if self.checkpoints.len() == crate::storage::CHECKPOINTS_KEPT {
            self.checkpoints[0].cid
        } else {
            SeqNo(0)
        };
        self.log.retain(|d| d.cid() > keep_after);
        if let Some(v) = rec.vote
            && v.cid == self.open.cid
        {
            self.open.vote = v;
        }
        // Recovery replays history: nothing to tell peers or observers about it.
        self.outputs.retain(|o| matches!(o, Output::Persist { .. }));
        self.held.clear();
        Ok(())
    }

    // ----- getters -----

    /// This replica's id.
    #[must_use]
    pub fn id(&self) -> ReplicaId {
        self.id
    }
    /// Installed regency.
    #[must_use]
    pub fn regency(&self) -> Regency {
        self.regency
    }
    /// Leader of the installed regency.
    #[must_use]
    pub fn leader(&self) -> ReplicaId {
        self.config.leader(self.regency)
    }
    /// Last decided and executed instance.
    #[must_use]
    pub fn last_decided(&self) -> SeqNo {
        self.last_decided
    }
    /// The application.
    #[must_use]
    pub fn app(&self) -> &A {
        &self.app
    }
    /// A snapshot of the protocol state, for diagnostics.
    #[must_use]
    pub fn status(&self) -> Status {
        Status {
            regency: self.regency,
            stop_target: self.stop_target,
            syncing: self.syncing,
            last_decided: self.last_decided,
            pending_requests: self.pending.len(),
            state_transfer: self.st.as_ref().map(|st| {
                format!(
                    "chosen={:?} provider={} next={} attempts={} retries={} digests={:?} deadline={:?}",
                    st.chosen.as_ref().map(|c| (c.0, c.2, c.3.clone())),
                    st.provider,
                    st.next_index,
                    st.attempts,
                    st.retries,
                    st.digests,
                    st.deadline
                )
            }),
            has_proposal: self.open.proposal.is_some(),
            writes: self.open.writes.len(),
            accepts: self.open.accepts.len(),
            vote: self.open.vote.clone(),
        }
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// Decoder limits for messages to this replica.
    #[must_use]
    pub fn wire_limits(&self) -> &WireLimits {
        &self.limits
    }

    // ----- inputs -----

    /// Decode and handle bytes from `from`. Undecodable bytes are counted and rejected.
    pub fn handle_bytes(&mut self, now: Timestamp, from: Peer, bytes: &[u8]) -> Result<(), Error> {
        match Message::decode(bytes, &self.limits) {
            Ok(msg) => self.handle_message(now, from, msg),
            Err(e) => {
                self.stats.decode_errors += 1;
                Err(e.into())
            }
        }
    }

    /// Handle a decoded message from `from` (the transport-authenticated sender).
    pub fn handle_message(
        &mut self,
        now: Timestamp,
        from: Peer,
        msg: Message,
    ) -> Result<(), Error> {
        self.now = self.now.max(now);
        let res = match msg {
            Message::Request(r) => match from {
                Peer::Client(c) if c == r.client => self.on_request(r),
                // A follower forwards a request whose timer expired (issue 10, finding 8).
                // The client's signature makes it authentic whoever carries it; read-only
                // requests are answered by each replica to the client and never forwarded.
                Peer::Replica(p) if p != self.id && !r.read_only => self.on_request(r),
                _ => Err(PeerFault::SenderMismatch),
            },
            Message::Replica(m) => {
                if from != Peer::Replica(m.from) || m.from == self.id {
                    Err(PeerFault::SenderMismatch)
                } else if !m.verify(&self.auth) {
                    Err(PeerFault::BadSignature)
                } else {
                    self.on_replica_message(m)
                }
            }
        };
        self.invariants();
        res.map_err(|fault| {
            self.stats.peer_faults += 1;
            Error::PeerMisbehaved { peer: from, fault }
        })
    }

    /// Handle a client request delivered by a local path (same as a message from it).
    pub fn handle_request(&mut self, now: Timestamp, req: Request) -> Result<(), Error> {
        let from = Peer::Client(req.client);
        self.handle_message(now, from, Message::Request(req))
    }

    /// Persist entries up to and including `token` are durable.
    pub fn handle_persisted(&mut self, token: u64) {
        assert!(
            token < self.next_token,
            "persisted token {token} was never issued"
        );
        self.persisted_token = self.persisted_token.max(token);
        while self
            .held
            .front()
            .is_some_and(|(t, _)| *t <= self.persisted_token)
        {
            if let Some((_, o)) = self.held.pop_front() {
                self.outputs.push_back(o);
            }
        }
        self.invariants();
    }

    /// Timers: call when `now >= poll_timeout()`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        let now = self.now;
        if self.stop_target == self.regency && !self.syncing {
            let leader = self.config.leader(self.regency) == self.id;
            if !leader {
                self.forward_expired();
            }
            let timeout = self.current_timeout();
            // A follower suspects the leader only on a forwarded request's second expiry.
            if self
                .pending
                .values()
                .any(|(_, t, fwd)| (leader || *fwd) && t.saturating_add(timeout) <= now)
            {
                self.start_stop(self.regency.next());
            }
        } else if self.stop_deadline.is_some_and(|d| d <= now) {
            self.start_stop(self.stop_target.next());
        }
        if self.retransmit_at <= now {
            self.retransmit();
            self.retransmit_at = now.saturating_add(self.config.retransmit_interval);
        }
        if self.future_deadline.is_some_and(|d| d <= now) {
            self.future_deadline = None;
            if let Some(peer) = self.future.first().map(|m| m.from) {
                self.note_behind(peer);
            }
        }
        if self.st.as_ref().is_some_and(|st| st.deadline <= now) {
            self.retry_state_transfer();
        }
        if self.fetch_deadline.is_some_and(|d| d <= now) {
            self.fetch_deadline = None;
            if self.behind && !self.in_transfer() {
                let peer = self.pick_peer();
                self.start_fetch(peer);
            }
        }
        self.invariants();
    }

    // ----- outputs -----

    /// Next effect, in order. Drain after every input.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Earliest time `handle_timeout` must be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let mut t = Some(self.retransmit_at);
        let mut min = |x: Option<Timestamp>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if self.stop_target == self.regency && !self.syncing {
            let oldest = self.pending.values().map(|(_, t, _)| *t).min();
            min(oldest.map(|o| o.saturating_add(self.current_timeout())));
        } else {
            min(self.stop_deadline);
        }
        min(self.fetch_deadline);
        min(self.future_deadline);
        min(self.st.as_ref().map(|st| st.deadline));
        t
    }

    // ----- helpers: effects -----

    fn persist(&mut self, entry: PersistEntry) {
        let token = self.next_token;
        self.next_token += 1;
        self.outputs.push_back(Output::Persist { token, entry });
    }

    /// Whether the network-message queue is full (see [`OUTPUTS_MAX`]); counts the drop.
    fn net_full(&mut self) -> bool {
        let full = self.outputs.len() + self.held.len() >= OUTPUTS_MAX;
        if full {
            self.stats.outputs_dropped += 1;
        }
        full
    }

    /// Queue a network message to leave now, unless the queue is full.
    fn push_net(&mut self, o: Output) {
        if !self.net_full() {
            self.outputs.push_back(o);
        }
    }

    /// Queue a network message that may leave only after every persist issued so far,
    /// unless the queue is full.
    fn after_persist(&mut self, o: Output) {
        if self.recovering || self.net_full() {
            return;
        }
        let last = self.next_token - 1;
        if last <= self.persisted_token {
            self.outputs.push_back(o);
        } else {
            self.held.push_back((last, o));
        }
    }

    fn sign(&self, body: ReplicaBody) -> Message {
        Message::Replica(SignedMessage::new(&self.auth, self.id, body))
    }

    fn broadcast_after_persist(&mut self, body: ReplicaBody) {
        let msg = self.sign(body);
        self.after_persist(Output::Broadcast { msg });
    }

    fn send_now(&mut self, to: ReplicaId, body: ReplicaBody) {
        if self.recovering || to == self.id {
            return;
        }
        let msg = self.sign(body);
        self.push_net(Output::Send { to, msg });
    }

    fn event(&mut self, o: Output) {
        if !self.recovering {
            self.outputs.push_back(o);
        }
    }

    fn current_timeout(&self) -> Duration {
        let factor = 1u32 << self.failed_regencies.min(TIMEOUT_BACKOFF_EXP_MAX);
        self.config
            .request_timeout
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
    }

    fn pick_peer(&mut self) -> ReplicaId {
        // xorshift64: deterministic given rng_seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let n = self.config.replicas as u64;
        let mut p = (self.rng % n) as u8;
        if p == self.id.0 {
            p = ((u64::from(p) + 1) % n) as u8;
        }
        ReplicaId(p)
    }

    fn quorum(&self) -> usize {
        self.config.quorum()
    }

    // ----- client requests -----

    fn on_request(&mut self, r: Request) -> Result<(), PeerFault> {
        if r.op.len() > self.config.request_op_bytes_max {
            return Err(PeerFault::RequestTooLarge);
        }
        if !r.verify(&self.auth) {
            return Err(PeerFault::BadSignature);
        }
        if r.read_only {
            if !self.in_transfer()
                && let Some(result) = self.app.query(&r.op)
            {
                let result = self.bounded_result(result);
                self.stats.read_only_served += 1;
                let body = ReplicaBody::Reply {
                    client: r.client,
                    seq: r.seq,
                    read_only: true,
                    result,
                };
                let msg = self.sign(body);
                self.push_net(Output::Reply {
                    client: r.client,
                    msg,
                });
            }
            return Ok(());
        }
        if let Some(s) = self.sessions.get(&r.client) {
            if r.seq < s.seq {
                return Ok(());
            }
            if r.seq == s.seq {
                // Retransmission of an executed request: resend the cached reply.
                let body = ReplicaBody::Reply {
                    client: r.client,
                    seq: r.seq,
                    read_only: false,
                    result: s.reply.clone(),
                };
                let msg = self.sign(body);
                self.after_persist(Output::Reply {
                    client: r.client,
                    msg,
                });
                return Ok(());
            }
        }
        match self.pending.get(&r.client) {
            Some((p, _, _)) if p.seq >= r.seq => return Ok(()),
            None if self.pending.len() >= self.config.pending_requests_max => {
                self.stats.pending_full_drops += 1;
                return Ok(());
            }
            _ => {}
        }
        self.pending.insert(r.client, (r, self.now, false));
        self.try_propose();
        Ok(())
    }

    /// Forward to the leader the requests whose timer expired for the first time, and
    /// restart their timers. At most `batch_bytes_max` bytes per call: requests beyond the
    /// budget are not sent (the client retransmits to every replica) but their timers
    /// restart too, so the next expiry suspects the leader either way.
    fn forward_expired(&mut self) {
        let now = self.now;
        let timeout = self.current_timeout();
        let leader = self.config.leader(self.regency);
        let mut budget = self.config.batch_bytes_max;
        let mut sends = Vec::new();
        for (r, t, fwd) in self.pending.values_mut() {
            if *fwd || t.saturating_add(timeout) > now {
                continue;
            }
            *fwd = true;
            *t = now;
            let len = Batch::request_bytes(r);
            if len <= budget {
                budget -= len;
                sends.push(r.clone());
            }
        }
        if self.recovering {
            return;
        }
        for r in sends {
            self.stats.requests_forwarded += 1;
            self.push_net(Output::Send {
                to: leader,
                msg: Message::Request(r),
            });
        }
    }

    fn bounded_result(&self, mut result: Vec<u8>) -> Vec<u8> {
        if result.len() > self.config.reply_bytes_max {
            // Deterministic on all replicas: an oversized result becomes empty.
            result.clear();
        }
        result
    }

    // ----- normal case -----

    fn on_replica_message(&mut self, m: SignedMessage) -> Result<(), PeerFault> {
        let from = m.from;
        if let ReplicaBody::Propose { regency, cid, .. }
        | ReplicaBody::Write { regency, cid, .. }
        | ReplicaBody::Accept { regency, cid, .. } = &m.body
            && *regency == self.regency
            && *cid == self.open.cid.next()
            && !self.syncing
            && !self.recovering
        {
            if self.future_deadline.is_none() {
                self.future_deadline = Some(self.now.saturating_add(self.config.fetch_timeout));
            }
            let mine = self.future.iter().filter(|f| f.from == from).count();
            if mine < FUTURE_MESSAGES_MAX
                && self.future.len() < FUTURE_MESSAGES_MAX * self.config.replicas
            {
                self.future.push(m);
            }
            return Ok(());
        }
        match m.body {
            ReplicaBody::Reply { .. } => Err(PeerFault::Unexpected),
            ReplicaBody::Propose {
                regency,
                cid,
                batch,
            } => self.on_propose(from, regency, cid, batch),
            ReplicaBody::Write {
                regency,
                cid,
                digest,
            } => self.on_vote(from, VoteKind::Write, regency, cid, digest, m.tag),
            ReplicaBody::Accept {
                regency,
                cid,
                digest,
            } => self.on_vote(from, VoteKind::Accept, regency, cid, digest, m.tag),
            ReplicaBody::Stop { regency } => {
                self.on_stop(from, regency);
                Ok(())
            }
            ReplicaBody::StopData(_) => self.on_stopdata(m),
            ReplicaBody::Sync(_) => self.on_sync(m, false, false),
            ReplicaBody::Fetch { from_cid } => {
                self.on_fetch(from, from_cid);
                Ok(())
            }
            ReplicaBody::Decisions {
                decisions,
                checkpoint,
                regency_proof,
            } => self.on_decisions(from, decisions, checkpoint, regency_proof),
            ReplicaBody::StateRequest => {
                self.on_state_request(from);
                Ok(())
            }
            ReplicaBody::StateDigests { checkpoints } => {
                self.on_state_digests(from, checkpoints);
                Ok(())
            }
            ReplicaBody::ChunkRequest { cid, index } => {
                self.on_chunk_request(from, cid, index);
                Ok(())
            }
            ReplicaBody::Chunk {
                cid,
                index,
                total,
                data,
                proof,
            } => self.on_chunk(from, cid, index, total, data, proof),
        }
    }

    fn validate_batch(&self, batch: &Batch, check_time: bool) -> Result<(), PeerFault> {
        if batch.requests.len() > self.config.batch_requests_max
            || batch.requests_bytes() > self.config.batch_bytes_max
        {
            return Err(PeerFault::InvalidBatch);
        }
        if check_time && !self.timestamp_acceptable(batch.timestamp) {
            return Err(PeerFault::InvalidBatch);
        }
        let mut clients = BTreeSet::new();
        for r in &batch.requests {
            if r.read_only || r.op.len() > self.config.request_op_bytes_max {
                return Err(PeerFault::InvalidBatch);
            }
            if !clients.insert(r.client) {
                return Err(PeerFault::InvalidBatch);
            }
            // A request identical to one in the pending pool was verified when it arrived
            // from its client: skip the second signature check (the common case for
            // followers, halving their client-signature work).
            let verified = self.pending.get(&r.client).is_some_and(|(p, _, _)| p == r);
            if !verified && !r.verify(&self.auth) {
                return Err(PeerFault::InvalidBatch);
            }
        }
        Ok(())
    }

    /// A leader's batch timestamp never goes back and is at most `timestamp_ahead_max`
    /// ahead of this replica's clock (issue 10, finding 9d). Repeating the last decided
    /// timestamp is always allowed, so a clock behind it cannot stall the replica.
    fn timestamp_acceptable(&self, t: Timestamp) -> bool {
        let ahead = self.now.saturating_add(self.config.timestamp_ahead_max);
        t >= self.last_timestamp && t <= ahead.max(self.last_timestamp)
    }

    fn try_propose(&mut self) {
        if self.config.leader(self.regency) != self.id
            || self.syncing
            || self.stop_target != self.regency
            || self.in_transfer()
            || self.recovering
            || self.pending.is_empty()
        {
            return;
        }
        if self
            .open
            .proposal
            .as_ref()
            .is_some_and(|(r, _, _)| *r == self.regency)
        {
            return;
        }
        if self.open.cid <= self.sync_cid {
            // The SYNC's instance (or one before it, still to catch up on) is not ours to
            // choose freely.
            return;
        }
        if self.open.vote.wrote.is_some_and(|(r, _)| r == self.regency) {
            // We proposed before a crash and lost the batch: never propose a second value
            // in one (instance, regency); the request timer will change leader.
            return;
        }
        let batch = self.cut_batch();
        if batch.requests.is_empty() {
            return;
        }
        let body = ReplicaBody::Propose {
            regency: self.regency,
            cid: self.open.cid,
            batch,
        };
        let msg = self.sign(body.clone());
        if let ReplicaBody::Propose { batch, .. } = body {
            // The PROPOSE leaves only once the leader's own vote for it is durable (ADR
            // 0102): a leader restarted after a lost vote could otherwise propose a second
            // batch in the same (instance, regency) (issue 10, finding 9b).
            self.set_proposal(self.regency, batch, Some(Output::Broadcast { msg }));
        }
    }

    fn cut_batch(&mut self) -> Batch {
        let sessions = &self.sessions;
        self.pending
            .retain(|c, (r, _, _)| sessions.get(c).is_none_or(|s| s.seq < r.seq));
        let mut requests: Vec<Request> = Vec::new();
        let mut bytes = 0;
        // Round-robin from the cursor: a client that always has a request pending (say
        // the lowest id) cannot keep the others out of full batches.
        let cursor = self.batch_cursor;
        let walk = self
            .pending
            .range(cursor..)
            .chain(self.pending.range(..cursor));
        for (_, (r, _, _)) in walk {
            let len = Batch::request_bytes(r);
            if requests.len() >= self.config.batch_requests_max
                || bytes + len > self.config.batch_bytes_max
            {
                break;
            }
            bytes += len;
            requests.push(r.clone());
        }
        if let Some(last) = requests.last() {
            self.batch_cursor = ClientId(last.client.0.wrapping_add(1));
        }
        // The batch is ordered by client id regardless of where the walk started.
        requests.sort_by_key(|r| r.client);
        Batch {
            timestamp: self.now.max(self.last_timestamp),
            requests,
        }
    }

    fn on_propose(
        &mut self,
        from: ReplicaId,
        regency: Regency,
        cid: SeqNo,
        batch: Batch,
    ) -> Result<(), PeerFault> {
        if from != self.config.leader(regency) {
            return Err(PeerFault::NotLeader);
        }
        if regency > self.regency || cid > self.open.cid {
            self.note_behind(from);
            return Ok(());
        }
        if regency < self.regency || cid < self.open.cid || self.syncing {
            return Ok(());
        }
        if cid <= self.sync_cid {
            return Err(PeerFault::Unexpected);
        }
        if self.stop_target != self.regency {
            return Ok(());
        }
        let digest = batch.digest();
        if let Some((r, d, _)) = &self.open.proposal
            && *r == regency
        {
            return if *d == digest {
                Ok(())
            } else {
                Err(PeerFault::Equivocation)
            };
        }
        self.validate_batch(&batch, true)?;
        self.set_proposal(regency, batch, None);
        Ok(())
    }

    /// Adopt `batch` as the open instance's proposal in `regency` and vote WRITE for it.
    /// `announce` (the leader's own PROPOSE or SYNC) is queued after the vote's persist and
    /// before the WRITE, so it never leaves before the vote is durable.
    fn set_proposal(&mut self, regency: Regency, batch: Batch, announce: Option<Output>) {
        assert_eq!(regency, self.regency);
        let digest = batch.digest();
        self.open.proposal = Some((regency, digest, batch));
        let may_write = match self.open.vote.wrote {
            None => true,
            Some((r, _)) => r < regency,
        };
        if may_write && self.stop_target == self.regency {
            assert!(self.open.vote.wrote.is_none_or(|(r, _)| r < regency));
            self.open.vote.cid = self.open.cid;
            self.open.vote.wrote = Some((regency, digest));
            self.persist(PersistEntry::Vote(self.open.vote.clone()));
            if let Some(o) = announce {
                self.after_persist(o);
            }
            let body = ReplicaBody::Write {
                regency,
                cid: self.open.cid,
                digest,
            };
            let tag = self.auth.sign(&body.signing_payload());
            self.open.writes.insert(self.id, (digest, tag));
            self.broadcast_after_persist(body);
        } else if let Some(o) = announce {
            self.after_persist(o);
        }
        self.check_write_quorum();
        self.check_accept_quorum();
    }

    fn on_vote(
        &mut self,
        from: ReplicaId,
        kind: VoteKind,
        regency: Regency,
        cid: SeqNo,
        digest: Digest,
        tag: AuthTag,
    ) -> Result<(), PeerFault> {
        if regency > self.regency || cid > self.open.cid {
            self.note_behind(from);
            return Ok(());
        }
        if regency < self.regency || cid < self.open.cid || cid < self.sync_cid {
            return Ok(());
        }
        let set = match kind {
            VoteKind::Write => &mut self.open.writes,
            VoteKind::Accept => &mut self.open.accepts,
        };
        if let Some((d, _)) = set.get(&from) {
            return if *d == digest {
                Ok(())
            } else {
                Err(PeerFault::Equivocation)
            };
        }
        set.insert(from, (digest, tag));
        match kind {
            VoteKind::Write => self.check_write_quorum(),
            VoteKind::Accept => self.check_accept_quorum(),
        }
        Ok(())
    }

    fn votes_for(set: &BTreeMap<ReplicaId, (Digest, AuthTag)>, digest: Digest) -> Vec<Vote> {
        set.iter()
            .filter(|(_, (d, _))| *d == digest)
            .map(|(r, (_, t))| Vote {
                signer: *r,
                tag: *t,
            })
            .collect()
    }

    fn check_write_quorum(&mut self) {
        let Some((r, digest, batch)) = &self.open.proposal else {
            return;
        };
        if *r != self.regency {
            return;
        }
        let (digest, regency) = (*digest, *r);
        let votes = Self::votes_for(&self.open.writes, digest);
        if votes.len() < self.quorum() {
            return;
        }
        let already = self.open.vote.accepted.is_some_and(|(ar, _)| ar >= regency);
        if already || self.stop_target != self.regency {
            return;
        }
        let cert = Certificate {
            kind: VoteKind::Write,
            regency,
            cid: self.open.cid,
            digest,
            votes,
        };
        debug_assert!(cert.verify(&self.config, &self.auth));
        self.open.vote.cid = self.open.cid;
        self.open.vote.written = Some((cert, batch.clone()));
        self.open.vote.accepted = Some((regency, digest));
        self.persist(PersistEntry::Vote(self.open.vote.clone()));
        let body = ReplicaBody::Accept {
            regency,
            cid: self.open.cid,
            digest,
        };
        let tag = self.auth.sign(&body.signing_payload());
        self.open.accepts.insert(self.id, (digest, tag));
        self.broadcast_after_persist(body);
        self.check_accept_quorum();
    }

    fn known_batch(&self, digest: Digest) -> Option<&Batch> {
        if let Some((_, d, b)) = &self.open.proposal
            && *d == digest
        {
            return Some(b);
        }
        match &self.open.vote.written {
            Some((c, b)) if c.digest == digest => Some(b),
            _ => None,
        }
    }

    fn check_accept_quorum(&mut self) {
        let mut counts: BTreeMap<Digest, usize> = BTreeMap::new();
        for (d, _) in self.open.accepts.values() {
            *counts.entry(*d).or_default() += 1;
        }
        let q = self.quorum();
        let Some(digest) = counts.into_iter().find(|(_, c)| *c >= q).map(|(d, _)| d) else {
            return;
        };
        let Some(batch) = self.known_batch(digest).cloned() else {
            return;
        };
        let votes = Self::votes_for(&self.open.accepts, digest);
        let proof = Certificate {
            kind: VoteKind::Accept,
            regency: self.regency,
            cid: self.open.cid,
            digest,
            votes,
        };
        self.decide(Decision { batch, proof }, true);
    }

    // ----- decision and execution -----

    fn decide(&mut self, d: Decision, reply: bool) {
        assert_eq!(d.cid(), self.open.cid, "decisions are taken in order");
        assert_eq!(d.cid(), self.last_decided.next());
        if !self.recovering {
            self.persist(PersistEntry::Decision(d.clone()));
        }
        let cid = d.cid();
        let d_regency = d.proof.regency;
        let ctx = BatchContext {
            cid,
            timestamp: d.batch.timestamp,
        };
        let mut to_run: Vec<&Request> = Vec::new();
        for r in &d.batch.requests {
            match self.sessions.get(&r.client) {
                Some(s) if s.seq >= r.seq => self.stats.duplicates_suppressed += 1,
                None if self.sessions.len() >= self.config.clients_max => {
                    self.stats.sessions_full_refusals += 1;
                }
                _ => to_run.push(r),
            }
        }
        let ops: Vec<&[u8]> = to_run.iter().map(|r| r.op.as_slice()).collect();
        let results = self.app.execute_batch(&ctx, &ops);
        assert_eq!(
            results.len(),
            ops.len(),
            "Application must return one result per op"
        );
        let executed: Vec<(ClientId, RequestSeq)> =
            to_run.iter().map(|r| (r.client, r.seq)).collect();
        for ((client, seq), result) in executed.into_iter().zip(results) {
            let result = self.bounded_result(result);
            self.stats.executed += 1;
            if self
                .pending
                .get(&client)
                .is_some_and(|(p, _, _)| p.seq <= seq)
            {
                self.pending.remove(&client);
            }
            if reply {
                let body = ReplicaBody::Reply {
                    client,
                    seq,
                    read_only: false,
                    result: result.clone(),
                };
                let msg = self.sign(body);
                self.after_persist(Output::Reply { client, msg });
            }
            self.sessions.insert(client, Session { seq, reply: result });
        }
        self.stats.decided += 1;
        self.event(Output::Decided {
            cid,
            regency: d.proof.regency,
            digest: d.proof.digest,
            requests: d.batch.requests.len(),
        });
        self.last_decided = cid;
        self.last_timestamp = self.last_timestamp.max(d.batch.timestamp);
        let proof = d.proof.clone();
        self.last_proof = Some(proof.clone());
        self.log.push_back(d);
        self.open = Open {
            cid: cid.next(),
            ..Open::default()
        };
        self.failed_regencies = 0;
        if !self.recovering && d_regency == self.regency && !self.syncing {
            // The regency makes progress: a STOP we sent is stale (e.g. we were cut off).
            self.withdraw_stop();
        }
        if cid.0.is_multiple_of(self.config.checkpoint_interval) {
            self.take_checkpoint(proof);
        }
        if let Some(sync) = self.pending_sync.take() {
            let _ = self.on_sync(sync, true, false);
        }
        self.try_propose();
        // Messages that arrived early for the now open instance. Each was verified on
        // arrival; anything no longer current is dropped by the normal checks.
        self.future_deadline = None;
        for m in std::mem::take(&mut self.future) {
            let _ = self.on_replica_message(m);
        }
    }

    /// Checkpoint the state after the instance that `proof` decided.
    fn take_checkpoint(&mut self, proof: Certificate) {
        debug_assert_eq!(proof.cid, self.last_decided);
        let state = CheckpointState {
            cid: self.last_decided,
            timestamp: self.last_timestamp,
            app: self.app.snapshot(),
            sessions: self
                .sessions
                .iter()
                .map(|(c, s)| (*c, s.seq, s.reply.clone()))
                .collect(),
        };
        let blob = state.encode();
        let digest = Digest::of("rampart-bft checkpoint v1", &[&blob]);
        let rec = CheckpointRecord {
            cid: self.last_decided,
            digest,
            blob,
            proof,
        };
        self.persist(PersistEntry::Checkpoint(rec.clone()));
        self.checkpoints.retain(|c| c.cid < rec.cid);
        self.checkpoints.push(rec);
        while self.checkpoints.len() > crate::storage::CHECKPOINTS_KEPT {
            self.checkpoints.remove(0);
        }
        if self.checkpoints.len() == crate::storage::CHECKPOINTS_KEPT {
            let through = self.checkpoints[0].cid;
            self.log.retain(|d| d.cid() > through);
            self.persist(PersistEntry::TruncateLog { through });
        }
        self.event(Output::Checkpoint {
            cid: self.last_decided,
            digest,
        });
    }

    /// Install a checkpoint's state; `proof` (the accept certificate of `state.cid`) becomes
    /// the proof of the last decided instance that STOPDATA reports (ADR 0101).
    fn install_checkpoint_state(
        &mut self,
        state: CheckpointState,
        proof: Certificate,
    ) -> Result<(), Error> {
        debug_assert_eq!(proof.cid, state.cid);
        self.app.restore(&state.app)?;
        self.sessions = state
            .sessions
            .into_iter()
            .map(|(c, seq, reply)| (c, Session { seq, reply }))
            .collect();
        self.last_decided = state.cid;
        self.last_timestamp = state.timestamp;
        self.last_proof = Some(proof);
        self.open = Open {
            cid: state.cid.next(),
            ..Open::default()
        };
        let sessions = &self.sessions;
        self.pending
            .retain(|c, (r, _, _)| sessions.get(c).is_none_or(|s| s.seq < r.seq));
        Ok(())
    }

    // ----- leader change -----

    /// Take back a pending STOP. Safe: only STOPDATA carries a promise not to vote in
    /// lower regencies, and it is sent only on installing a regency.
    fn withdraw_stop(&mut self) {
        if self.stop_target > self.regency {
            self.stop_target = self.regency;
            self.stop_deadline = None;
            self.persist(PersistEntry::Regency(RegencyRecord {
                regency: self.regency,
                stop_target: self.stop_target,
            }));
        }
    }

    fn start_stop(&mut self, target: Regency) {
        if target <= self.stop_target {
            return;
        }
        self.stop_target = target;
        self.failed_regencies = self.failed_regencies.saturating_add(1);
        self.stats.stops_sent += 1;
        self.persist(PersistEntry::Regency(RegencyRecord {
            regency: self.regency,
            stop_target: self.stop_target,
        }));
        self.broadcast_after_persist(ReplicaBody::Stop { regency: target });
        self.stops.entry(target).or_default().insert(self.id);
        self.stop_deadline = Some(self.now.saturating_add(self.current_timeout()));
        self.check_stops(target);
    }

    fn on_stop(&mut self, from: ReplicaId, target: Regency) {
        if target <= self.regency || target.0 > self.regency.0.saturating_add(STOP_WINDOW_MAX) {
            return;
        }
        self.stops.entry(target).or_default().insert(from);
        self.check_stops(target);
    }

    fn check_stops(&mut self, target: Regency) {
        let count = self.stops.get(&target).map_or(0, BTreeSet::len);
        if count > self.config.f() && self.stop_target < target {
            self.start_stop(target);
            return;
        }
        if count >= self.quorum() && self.regency < target {
            self.install_regency(target);
        }
    }

    fn enter_regency(&mut self, target: Regency) {
        assert!(target > self.regency);
        self.regency = target;
        self.stop_target = self.stop_target.max(target);
        self.open.writes.clear();
        self.open.accepts.clear();
        self.open.proposal = None;
        self.stops = self.stops.split_off(&target.next());
        self.stopdatas.clear();
        self.sync_sent = false;
        self.pending_sync = None;
        self.regency_proof = None;
        // Until the SYNC arrives nothing is proposed in this regency.
        self.sync_cid = SeqNo(u64::MAX);
        self.stats.regencies_installed += 1;
        self.persist(PersistEntry::Regency(RegencyRecord {
            regency: self.regency,
            stop_target: self.stop_target,
        }));
    }

    fn install_regency(&mut self, target: Regency) {
        self.enter_regency(target);
        self.syncing = true;
        self.stop_deadline = Some(self.now.saturating_add(self.current_timeout()));
        self.send_stopdata();
    }

    fn my_stopdata(&self) -> StopData {
        let written = match &self.open.vote.written {
            Some((c, b)) if c.cid == self.open.cid => Some((c.clone(), b.clone())),
            _ => None,
        };
        StopData {
            regency: self.regency,
            last_decided: self.last_proof.clone(),
            written,
        }
    }

    fn send_stopdata(&mut self) {
        let leader = self.config.leader(self.regency);
        let body = ReplicaBody::StopData(self.my_stopdata());
        let signed = SignedMessage::new(&self.auth, self.id, body);
        if leader == self.id {
            self.stopdatas.insert(self.id, signed);
            self.maybe_send_sync();
        } else {
            self.after_persist(Output::Send {
                to: leader,
                msg: Message::Replica(signed),
            });
        }
    }

    fn validate_stopdata(&self, sd: &StopData, regency: Regency) -> bool {
        if sd.regency != regency {
            return false;
        }
        if let Some(c) = &sd.last_decided
            && (c.kind != VoteKind::Accept || !c.verify(&self.config, &self.auth))
        {
            return false;
        }
        if let Some((c, b)) = &sd.written
            && (c.kind != VoteKind::Write
                || c.regency >= regency
                || c.digest != b.digest()
                || !c.verify(&self.config, &self.auth))
        {
            return false;
        }
        true
    }

    fn on_stopdata(&mut self, m: SignedMessage) -> Result<(), PeerFault> {
        let ReplicaBody::StopData(sd) = &m.body else {
            return Err(PeerFault::Unexpected);
        };
        if sd.regency != self.regency
            || self.config.leader(self.regency) != self.id
            || !self.syncing
            || self.sync_sent
        {
            return Ok(());
        }
        if !self.validate_stopdata(sd, self.regency) {
            return Err(PeerFault::InvalidStopData);
        }
        self.stopdatas.insert(m.from, m);
        self.maybe_send_sync();
        Ok(())
    }

    /// The deterministic choice every replica recomputes from a quorum of STOPDATAs: the
    /// next instance is one above the highest proven decided instance; if any STOPDATA holds
    /// a write certificate for it, the value of the highest-regency certificate is forced.
    ///
    /// A valid write certificate for instance c proves that c−1 was decided (a correct
    /// replica writes for c only once it has decided c−1, and the certificate holds f+1
    /// correct signers), so it counts towards h as well: no certificate in the proofs is
    /// ever above the chosen instance.
    fn choose(proofs: &[SignedMessage]) -> (SeqNo, Option<Digest>, Option<Batch>) {
        let mut h = SeqNo(0);
        for p in proofs {
            if let ReplicaBody::StopData(sd) = &p.body {
                h = h.max(sd.last_cid());
                if let Some((c, _)) = &sd.written {
                    h = h.max(SeqNo(c.cid.0.saturating_sub(1)));
                }
            }
        }
        let mut best: Option<(Regency, Digest, &Batch)> = None;
        for p in proofs {
            if let ReplicaBody::StopData(sd) = &p.body
                && let Some((c, b)) = &sd.written
                && c.cid == h.next()
                && best.is_none_or(|(r, _, _)| c.regency > r)
            {
                best = Some((c.regency, c.digest, b));
            }
        }
        (h, best.map(|(_, d, _)| d), best.map(|(_, _, b)| b.clone()))
    }

    fn maybe_send_sync(&mut self) {
        if self.stopdatas.len() < self.quorum() || self.sync_sent {
            return;
        }
        let proofs: Vec<SignedMessage> = self
            .stopdatas
            .values()
            .take(self.quorum())
            .cloned()
            .collect();
        let (h, _, mut forced) = Self::choose(&proofs);
        if self.config.danger_test_mutation == Some(DangerTestMutation::SkipSyncCheck) {
            forced = None;
        }
        let batch = match forced {
            Some(b) => b,
            None => self.cut_batch(),
        };
        let sync = Sync {
            regency: self.regency,
            cid: h.next(),
            batch,
            proofs,
        };
        let signed = SignedMessage::new(&self.auth, self.id, ReplicaBody::Sync(sync));
        self.sync_sent = true;
        // The SYNC stands in for a PROPOSE: `on_sync` queues it after the leader's vote for
        // its instance is durable (ADR 0102; issue 10, finding 9b).
        let _ = self.on_sync(signed, true, true);
    }

    /// Handle a SYNC; `trusted` skips validation (this replica's own or an already
    /// validated one). With `announce`, the SYNC is also broadcast, after the vote it
    /// implies is durable.
    fn on_sync(
        &mut self,
        m: SignedMessage,
        trusted: bool,
        announce: bool,
    ) -> Result<(), PeerFault> {
        let mut announce = announce.then(|| Output::Broadcast {
            msg: Message::Replica(m.clone()),
        });
        let ReplicaBody::Sync(s) = &m.body else {
            return Err(PeerFault::Unexpected);
        };
        if m.from != self.config.leader(s.regency) {
            return Err(PeerFault::NotLeader);
        }
        if s.regency < self.regency || (s.regency == self.regency && !self.syncing && !trusted) {
            return Ok(());
        }
        if !trusted {
            self.validate_sync(s)?;
            // A valid SYNC of regency r' is at most one below the open instance of any
            // correct replica that decided its last instance in a regency below r': that
            // decision had a quorum of ACCEPTs, sent before their senders' STOPDATAs for
            // r', so h is at least one below it. A SYNC further down proves a lying
            // leader or broken proofs; voting on it would re-open decided instances.
            if s.cid.next() < self.open.cid
                && self
                    .last_proof
                    .as_ref()
                    .is_some_and(|p| p.regency < s.regency)
            {
                return Err(PeerFault::InvalidSync);
            }
        }
        if s.regency > self.regency {
            self.enter_regency(s.regency);
            self.syncing = true;
        }
        if self.syncing {
            self.syncing = false;
            self.sync_cid = s.cid;
            self.withdraw_stop();
            self.stop_deadline = None;
            self.regency_proof = Some(m.clone());
            let now = self.now;
            for (_, t, fwd) in self.pending.values_mut() {
                *t = now;
                *fwd = false;
            }
            self.event(Output::RegencyInstalled {
                regency: self.regency,
                leader: self.config.leader(self.regency),
            });
        }
        if s.cid == self.open.cid {
            let check_time = Self::choose(&s.proofs).1.is_none();
            if check_time && !self.timestamp_acceptable(s.batch.timestamp) {
                return Err(PeerFault::InvalidSync);
            }
            if self
                .open
                .proposal
                .as_ref()
                .is_none_or(|(r, _, _)| *r < self.regency)
            {
                self.set_proposal(self.regency, s.batch.clone(), announce.take());
            }
        } else if s.cid > self.open.cid {
            self.pending_sync = Some(m.clone());
            self.note_behind(m.from);
        }
        if let Some(o) = announce {
            self.after_persist(o);
        }
        self.try_propose();
        Ok(())
    }

    fn validate_sync(&self, s: &Sync) -> Result<(), PeerFault> {
        if s.proofs.len() < self.quorum() {
            return Err(PeerFault::InvalidSync);
        }
        let mut seen = BTreeSet::new();
        for p in &s.proofs {
            let ReplicaBody::StopData(sd) = &p.body else {
                return Err(PeerFault::InvalidSync);
            };
            if !seen.insert(p.from)
                || !p.verify(&self.auth)
                || !self.validate_stopdata(sd, s.regency)
            {
                return Err(PeerFault::InvalidSync);
            }
        }
        let (h, forced, _) = Self::choose(&s.proofs);
        if s.cid != h.next() {
            return Err(PeerFault::InvalidSync);
        }
        let skip = self.config.danger_test_mutation == Some(DangerTestMutation::SkipSyncCheck);
        match forced {
            Some(d) if !skip => {
                if s.batch.digest() != d {
                    return Err(PeerFault::InvalidSync);
                }
            }
            _ => self.validate_batch(&s.batch, false)?,
        }
        Ok(())
    }

    // ----- catch-up -----

    fn note_behind(&mut self, peer: ReplicaId) {
        self.behind = true;
        if self.fetch_deadline.is_none() && !self.in_transfer() {
            self.start_fetch(peer);
        }
    }

    fn start_fetch(&mut self, peer: ReplicaId) {
        self.fetch_peer = Some(peer);
        self.fetch_deadline = Some(self.now.saturating_add(self.config.fetch_timeout));
        self.stats.fetches_sent += 1;
        self.send_now(
            peer,
            ReplicaBody::Fetch {
                from_cid: self.last_decided.next(),
            },
        );
    }

    fn on_fetch(&mut self, from: ReplicaId, from_cid: SeqNo) {
        let decisions: Vec<Decision> = self
            .log
            .iter()
            .filter(|d| d.cid() >= from_cid)
            .take(self.config.decisions_per_fetch_max)
            .cloned()
            .collect();
        let in_log = self.log.front().is_some_and(|d| d.cid() <= from_cid);
        let checkpoint = match self.checkpoints.last() {
            Some(c) if !in_log && from_cid <= c.cid => Some(c.cid),
            _ => None,
        };
        let regency_proof = if self.syncing {
            None
        } else {
            self.regency_proof.clone().map(Box::new)
        };
        let decisions = if checkpoint.is_some() {
            Vec::new()
        } else {
            decisions
        };
        self.send_now(
            from,
            ReplicaBody::Decisions {
                decisions,
                checkpoint,
                regency_proof,
            },
        );
    }

    fn on_decisions(
        &mut self,
        from: ReplicaId,
        decisions: Vec<Decision>,
        checkpoint: Option<SeqNo>,
        regency_proof: Option<Box<SignedMessage>>,
    ) -> Result<(), PeerFault> {
        if self.fetch_peer == Some(from) {
            self.fetch_deadline = None;
            self.fetch_peer = None;
        }
        let full = decisions.len() >= self.config.decisions_per_fetch_max;
        let mut fault = None;
        for d in decisions {
            if d.cid() != self.open.cid {
                continue;
            }
            if !d.verify(&self.config, &self.auth) {
                fault = Some(PeerFault::InvalidCertificate);
                break;
            }
            self.decide(d, true);
        }
        if let Some(p) = regency_proof {
            let p = *p;
            let newer = match &p.body {
                ReplicaBody::Sync(s) => {
                    s.regency > self.regency || (s.regency == self.regency && self.syncing)
                }
                _ => false,
            };
            // Also a SYNC this replica signed itself: a leader restarted while syncing
            // learns its own regency's SYNC back from its peers (issue 10, finding 9a).
            if newer {
                if !p.verify(&self.auth) {
                    return Err(PeerFault::BadSignature);
                }
                self.on_sync(p, false, false)?;
            }
        }
        if let Some(f) = fault {
            return Err(f);
        }
        if checkpoint.is_some_and(|c| c > self.last_decided) {
            // One replica's claim is no evidence of being behind: only probe for digests
            // (one probe at a time, so repeated claims cost one StateRequest per timeout).
            if self.st.is_none() {
                self.start_state_transfer();
            }
        } else if full {
            self.start_fetch(from);
        } else {
            self.behind = self.pending_sync.is_some();
        }
        Ok(())
    }

    // ----- state transfer -----

    /// The replica is downloading a checkpoint (f+1 replicas vouched for one above its
    /// last decided instance): it neither proposes nor answers reads meanwhile.
    fn in_transfer(&self) -> bool {
        self.st.as_ref().is_some_and(|st| st.chosen.is_some())
    }

    /// Start a state transfer with a probe: ask every replica for its checkpoint digests.
    fn start_state_transfer(&mut self) {
        self.st = Some(StateTransfer {
            digests: BTreeMap::new(),
            chosen: None,
            provider: 0,
            received: Vec::new(),
            next_index: 0,
            attempts: 0,
            retries: 0,
            deadline: self.now.saturating_add(self.config.fetch_timeout),
        });
        let msg = self.sign(ReplicaBody::StateRequest);
        self.push_net(Output::Broadcast { msg });
    }

    /// The current step timed out or failed: ask the next provider for the chosen
    /// checkpoint, or, once every provider failed `ST_RETRIES_PER_PROVIDER` times, ask for
    /// digests again and re-pick; without a choice, ask for digests again (at most
    /// `ST_ATTEMPTS_MAX` rounds).
    fn retry_state_transfer(&mut self) {
        let deadline = self.now.saturating_add(self.config.fetch_timeout);
        let Some(st) = &mut self.st else { return };
        st.received.clear();
        st.next_index = 0;
        st.deadline = deadline;
        if let Some((cid, _, _, providers)) = &st.chosen {
            st.retries += 1;
            let n = u32::try_from(providers.len()).unwrap_or(u32::MAX);
            if st.retries < ST_RETRIES_PER_PROVIDER.saturating_mul(n) {
                st.provider = (st.provider + 1) % providers.len();
                let (p, cid) = (providers[st.provider], *cid);
                self.send_now(p, ReplicaBody::ChunkRequest { cid, index: 0 });
                return;
            }
            // No provider serves it any more (garbage-collected, or they lied): pick again
            // among the checkpoints vouched for now.
            st.chosen = None;
            st.digests.clear();
            st.retries = 0;
        } else {
            st.attempts += 1;
            if st.attempts >= ST_ATTEMPTS_MAX {
                self.st = None;
                return;
            }
        }
        let msg = self.sign(ReplicaBody::StateRequest);
        self.push_net(Output::Broadcast { msg });
    }

    fn chunk_count(&self, len: usize) -> u32 {
        let cs = self.config.state_chunk_bytes_max;
        u32::try_from(len.div_ceil(cs).max(1)).unwrap_or(u32::MAX)
    }

    fn on_state_request(&mut self, from: ReplicaId) {
        let checkpoints = self
            .checkpoints
            .iter()
            .map(|c| (c.cid, c.digest, self.chunk_count(c.blob.len())))
            .collect();
        self.send_now(from, ReplicaBody::StateDigests { checkpoints });
    }

    fn on_state_digests(&mut self, from: ReplicaId, list: Vec<(SeqNo, Digest, u32)>) {
        let f = self.config.f();
        let last = self.last_decided;
        let deadline = self.now.saturating_add(self.config.fetch_timeout);
        let Some(st) = &mut self.st else { return };
        if st.chosen.is_some() {
            return;
        }
        st.digests.insert(from, list);
        let mut votes: BTreeMap<(SeqNo, Digest, u32), Vec<ReplicaId>> = BTreeMap::new();
        for (r, l) in &st.digests {
            for e in l {
                votes.entry(*e).or_default().push(*r);
            }
        }
        let best = votes
            .into_iter()
            .filter(|((cid, _, _), rs)| *cid > last && rs.len() > f)
            .max_by_key(|((cid, _, _), _)| *cid);
        if let Some(((cid, digest, total), providers)) = best {
            let p = providers[0];
            st.chosen = Some((cid, digest, total, providers));
            st.provider = 0;
            st.deadline = deadline;
            self.send_now(p, ReplicaBody::ChunkRequest { cid, index: 0 });
        }
    }

    fn on_chunk_request(&mut self, from: ReplicaId, cid: SeqNo, index: u32) {
        let Some(c) = self.checkpoints.iter().find(|c| c.cid == cid) else {
            return;
        };
        let cs = self.config.state_chunk_bytes_max;
        let total = self.chunk_count(c.blob.len());
        if index >= total {
            return;
        }
        let start = (index as usize) * cs;
        let end = (start + cs).min(c.blob.len());
        let data = c.blob.get(start..end).unwrap_or_default().to_vec();
        let proof = c.proof.clone();
        self.send_now(
            from,
            ReplicaBody::Chunk {
                cid,
                index,
                total,
                data,
                proof,
            },
        );
    }

    fn on_chunk(
        &mut self,
        from: ReplicaId,
        cid: SeqNo,
        index: u32,
        total: u32,
        data: Vec<u8>,
        proof: Certificate,
    ) -> Result<(), PeerFault> {
        let state_max = self.config.state_bytes_max;
        let deadline = self.now.saturating_add(self.config.fetch_timeout);
        let Some(st) = &mut self.st else {
            return Ok(());
        };
        let Some((ccid, digest, ctotal, providers)) = &st.chosen else {
            return Ok(());
        };
        if providers.get(st.provider) != Some(&from) || cid != *ccid || index != st.next_index {
            return Ok(());
        }
        if total != *ctotal || st.received.len() + data.len() > state_max + 16 {
            self.retry_state_transfer();
            return Err(PeerFault::InvalidState);
        }
        let digest = *digest;
        st.received.extend_from_slice(&data);
        st.next_index += 1;
        if st.next_index < total {
            let next = st.next_index;
            st.deadline = deadline;
            self.send_now(from, ReplicaBody::ChunkRequest { cid, index: next });
            return Ok(());
        }
        let blob = std::mem::take(&mut st.received);
        if proof.kind != VoteKind::Accept
            || proof.cid != cid
            || !proof.verify(&self.config, &self.auth)
        {
            self.retry_state_transfer();
            return Err(PeerFault::InvalidState);
        }
        if Digest::of("rampart-bft checkpoint v1", &[&blob]) != digest {
            self.retry_state_transfer();
            return Err(PeerFault::InvalidState);
        }
        let Ok(state) = CheckpointState::decode(&blob, &self.config) else {
            self.retry_state_transfer();
            return Err(PeerFault::InvalidState);
        };
        self.st = None;
        if state.cid <= self.last_decided || state.cid != cid {
            return Ok(());
        }
        if self.install_checkpoint_state(state, proof.clone()).is_err() {
            // f+1 replicas vouched for this digest, so the bytes are what a correct replica
            // checkpointed; a restore failure is a local application fault. Retry later.
            return Ok(());
        }
        self.log.clear();
        let rec = CheckpointRecord {
            cid,
            digest,
            blob,
            proof,
        };
        self.persist(PersistEntry::Checkpoint(rec.clone()));
        self.persist(PersistEntry::TruncateLog { through: cid });
        self.checkpoints = vec![rec];
        self.stats.state_transfers += 1;
        self.event(Output::StateInstalled { cid, digest });
        self.start_fetch(from);
        Ok(())
    }

    // ----- retransmission -----

    fn retransmit(&mut self) {
        if self.stop_target > self.regency {
            let msg = self.sign(ReplicaBody::Stop {
                regency: self.stop_target,
            });
            self.after_persist(Output::Broadcast { msg });
        }
        if self.syncing {
            if self.config.leader(self.regency) != self.id {
                self.send_stopdata();
            }
            return;
        }
        let regency = self.regency;
        let cid = self.open.cid;
        if self.config.leader(regency) == self.id
            && let Some((r, _, batch)) = &self.open.proposal
            && *r == regency
        {
            let sync_instance = self
                .regency_proof
                .as_ref()
                .is_some_and(|p| matches!(&p.body, ReplicaBody::Sync(s) if s.cid == cid));
            let msg = if sync_instance {
                self.regency_proof.clone().map(Message::Replica)
            } else {
                let body = ReplicaBody::Propose {
                    regency,
                    cid,
                    batch: batch.clone(),
                };
                Some(self.sign(body))
            };
            if let Some(msg) = msg {
                self.after_persist(Output::Broadcast { msg });
            }
        }
        if let Some((r, d)) = self.open.vote.wrote
            && r == regency
            && self.open.vote.cid == cid
        {
            self.broadcast_after_persist(ReplicaBody::Write {
                regency,
                cid,
                digest: d,
            });
        }
        if let Some((r, d)) = self.open.vote.accepted
            && r == regency
            && self.open.vote.cid == cid
        {
            self.broadcast_after_persist(ReplicaBody::Accept {
                regency,
                cid,
                digest: d,
            });
        }
    }

    // ----- invariants -----

    fn invariants(&self) {
        assert_eq!(self.open.cid, self.last_decided.next());
        assert!(self.future.len() <= FUTURE_MESSAGES_MAX * self.config.replicas);
        assert!(self.regency <= self.stop_target);
        assert!(self.log.len() as u64 <= 2 * self.config.checkpoint_interval + 1);
        assert!(self.pending.len() <= self.config.pending_requests_max);
        assert!(self.sessions.len() <= self.config.clients_max);
        assert!(self.checkpoints.len() <= crate::storage::CHECKPOINTS_KEPT);
        assert!(
            self.checkpoints
                .last()
                .is_none_or(|c| c.cid <= self.last_decided)
        );
        assert!(self.persisted_token < self.next_token);
        assert!(self.stops.keys().all(|r| *r > self.regency));
        assert!(self.stopdatas.len() <= self.config.replicas);
        assert!(self.held.len() <= OUTPUTS_MAX);
        if let Some((r, _)) = self.open.vote.wrote
            && self.open.vote.cid == self.open.cid
        {
            assert!(
                r <= self.regency,
                "wrote in a regency above the installed one"
            );
        }
        if let Some((r, _, _)) = &self.open.proposal {
            assert!(*r <= self.regency);
            if *r == self.regency && self.regency > Regency(0) {
                assert!(
                    self.open.cid >= self.sync_cid,
                    "proposal below the regency's SYNC"
                );
            }
        }
        assert!(self.log.back().is_none_or(|d| d.cid() == self.last_decided));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::app::RestoreError;
    use crate::auth::{Principal, SimulatedAuthenticator};

    #[derive(Default)]
    struct Echo(Vec<Vec<u8>>);

    impl Application for Echo {
        fn execute_batch(&mut self, _: &BatchContext, ops: &[&[u8]]) -> Vec<Vec<u8>> {
            ops.iter()
                .map(|op| {
                    self.0.push(op.to_vec());
                    op.to_vec()
                })
                .collect()
        }
        fn query(&self, _: &[u8]) -> Option<Vec<u8>> {
            Some(vec![self.0.len() as u8])
        }
        fn snapshot(&self) -> Vec<u8> {
            self.0.concat()
        }
        fn restore(&mut self, _: &[u8]) -> Result<(), RestoreError> {
            Err(RestoreError {
                reason: "not used in these tests",
            })
        }
        fn state_digest(&self) -> Digest {
            Digest::of("echo", &[&self.0.concat()])
        }
    }

    const SEED: u64 = 9;
    type R = Replica<Echo, SimulatedAuthenticator>;

    fn auth(i: u8) -> SimulatedAuthenticator {
        SimulatedAuthenticator::new(Principal::Replica(ReplicaId(i)), SEED)
    }

    fn replica(i: u8, config: Config) -> R {
        Replica::new(
            config,
            ReplicaId(i),
            auth(i),
            Echo::default(),
            RecoveredState::default(),
            1,
            Timestamp(0),
        )
        .expect("valid config")
    }

    /// Persist everything at once and return the other outputs.
    fn drain(r: &mut R) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(o) = r.poll_output() {
            match o {
                Output::Persist { token, .. } => r.handle_persisted(token),
                o => out.push(o),
            }
        }
        out
    }

    fn request(client: u64, op: &[u8]) -> Request {
        let a = SimulatedAuthenticator::new(Principal::Client(ClientId(client)), SEED);
        Request::new_signed(&a, ClientId(client), RequestSeq(1), false, op.to_vec())
    }

    fn batch(client: u64, op: &[u8]) -> Batch {
        Batch {
            timestamp: Timestamp(5),
            requests: vec![request(client, op)],
        }
    }

    fn signed(from: u8, body: ReplicaBody) -> Message {
        Message::Replica(SignedMessage::new(&auth(from), ReplicaId(from), body))
    }

    fn cert(kind: VoteKind, regency: u64, cid: u64, digest: Digest, signers: &[u8]) -> Certificate {
        let votes = signers
            .iter()
            .map(|&s| {
                let body = match kind {
                    VoteKind::Write => ReplicaBody::Write {
                        regency: Regency(regency),
                        cid: SeqNo(cid),
                        digest,
                    },
                    VoteKind::Accept => ReplicaBody::Accept {
                        regency: Regency(regency),
                        cid: SeqNo(cid),
                        digest,
                    },
                };
                Vote {
                    signer: ReplicaId(s),
                    tag: auth(s).sign(&body.signing_payload()),
                }
            })
            .collect();
        Certificate {
            kind,
            regency: Regency(regency),
            cid: SeqNo(cid),
            digest,
            votes,
        }
    }

    fn stopdata(from: u8, regency: u64, written: Option<(Certificate, Batch)>) -> SignedMessage {
        let body = ReplicaBody::StopData(StopData {
            regency: Regency(regency),
            last_decided: None,
            written,
        });
        SignedMessage::new(&auth(from), ReplicaId(from), body)
    }

    fn broadcasts_write(outs: &[Output], digest: Digest) -> bool {
        outs.iter().any(|o| {
            matches!(o, Output::Broadcast { msg: Message::Replica(m) }
                if matches!(m.body, ReplicaBody::Write { digest: d, .. } if d == digest))
        })
    }

    /// Normal case (paper, VP-Consensus): WRITE after a valid PROPOSE, ACCEPT after Q
    /// WRITEs, decide after Q ACCEPTs, and not one vote earlier.
    #[test]
    fn decides_only_on_a_quorum_of_accepts() {
        let mut r = replica(1, Config::new(4));
        let now = Timestamp(1);
        let b = batch(1, b"x");
        let d = b.digest();
        let from = |i| Peer::Replica(ReplicaId(i));
        let propose = ReplicaBody::Propose {
            regency: Regency(0),
            cid: SeqNo(1),
            batch: b,
        };
        r.handle_message(now, from(0), signed(0, propose))
            .expect("valid proposal");
        assert!(broadcasts_write(&drain(&mut r), d));
        let write = |i| {
            signed(
                i,
                ReplicaBody::Write {
                    regency: Regency(0),
                    cid: SeqNo(1),
                    digest: d,
                },
            )
        };
        r.handle_message(now, from(0), write(0))
            .expect("valid write");
        assert_eq!(
            r.status().vote.accepted,
            None,
            "two WRITEs are not a quorum"
        );
        r.handle_message(now, from(2), write(2))
            .expect("valid write");
        assert_eq!(r.status().vote.accepted, Some((Regency(0), d)));
        let accept = |i| {
            signed(
                i,
                ReplicaBody::Accept {
                    regency: Regency(0),
                    cid: SeqNo(1),
                    digest: d,
                },
            )
        };
        r.handle_message(now, from(0), accept(0))
            .expect("valid accept");
        assert_eq!(r.last_decided(), SeqNo(0), "two ACCEPTs are not a quorum");
        r.handle_message(now, from(3), accept(3))
            .expect("valid accept");
        assert_eq!(r.last_decided(), SeqNo(1));
        let outs = drain(&mut r);
        assert!(
            outs.iter()
                .any(|o| matches!(o, Output::Decided { cid: SeqNo(1), .. }))
        );
        assert!(outs.iter().any(|o| matches!(
            o,
            Output::Reply {
                client: ClientId(1),
                ..
            }
        )));
    }

    /// A SYNC must carry the value of the highest-regency write certificate in its proofs;
    /// a correct replica rejects any other value (and, with the mutation, does not).
    #[test]
    fn sync_must_carry_the_certified_value() {
        let a = batch(1, b"a");
        let b = batch(2, b"b");
        let cert_a = cert(VoteKind::Write, 0, 1, a.digest(), &[0, 1, 3]);
        let proofs = vec![
            stopdata(0, 1, Some((cert_a, a.clone()))),
            stopdata(1, 1, None),
            stopdata(3, 1, None),
        ];
        let sync = |batch: &Batch| {
            let s = Sync {
                regency: Regency(1),
                cid: SeqNo(1),
                batch: batch.clone(),
                proofs: proofs.clone(),
            };
            signed(1, ReplicaBody::Sync(s))
        };
        let leader = Peer::Replica(ReplicaId(1));
        let now = Timestamp(1);

        let mut r = replica(2, Config::new(4));
        let err = r.handle_message(now, leader, sync(&b));
        assert!(matches!(
            err,
            Err(Error::PeerMisbehaved {
                fault: PeerFault::InvalidSync,
                ..
            })
        ));
        assert_eq!(r.regency(), Regency(0));
        assert_eq!(r.stats().peer_faults, 1);
        r.handle_message(now, leader, sync(&a))
            .expect("certified value");
        assert_eq!(r.regency(), Regency(1));
        assert!(broadcasts_write(&drain(&mut r), a.digest()));

        let mut config = Config::new(4);
        config.danger_test_mutation = Some(DangerTestMutation::SkipSyncCheck);
        let mut m = replica(2, config);
        m.handle_message(now, leader, sync(&b))
            .expect("the mutation skips the check");
        assert!(broadcasts_write(&drain(&mut m), b.digest()));
    }

    /// Lying STOPDATA (a certificate with a forged vote) invalidates the SYNC carrying it.
    #[test]
    fn sync_with_a_forged_certificate_is_rejected() {
        let a = batch(1, b"a");
        let mut forged = cert(VoteKind::Write, 0, 1, a.digest(), &[0, 1, 3]);
        forged.votes[2].tag = forged.votes[0].tag;
        let proofs = vec![
            stopdata(0, 1, Some((forged, a.clone()))),
            stopdata(1, 1, None),
            stopdata(3, 1, None),
        ];
        let s = Sync {
            regency: Regency(1),
            cid: SeqNo(1),
            batch: a,
            proofs,
        };
        let mut r = replica(2, Config::new(4));
        let err = r.handle_message(
            Timestamp(1),
            Peer::Replica(ReplicaId(1)),
            signed(1, ReplicaBody::Sync(s)),
        );
        assert!(matches!(
            err,
            Err(Error::PeerMisbehaved {
                fault: PeerFault::InvalidSync,
                ..
            })
        ));
    }

    #[test]
    fn forged_and_undecodable_messages_are_counted_not_fatal() {
        let mut r = replica(1, Config::new(4));
        let now = Timestamp(1);
        // Replica 3 signs, but claims to be replica 0.
        let mut m = SignedMessage::new(
            &auth(3),
            ReplicaId(3),
            ReplicaBody::Stop {
                regency: Regency(1),
            },
        );
        m.from = ReplicaId(0);
        let e = r.handle_message(
            now,
            Peer::Replica(ReplicaId(0)),
            Message::Replica(m.clone()),
        );
        assert!(matches!(
            e,
            Err(Error::PeerMisbehaved {
                fault: PeerFault::BadSignature,
                ..
            })
        ));
        let e = r.handle_message(now, Peer::Replica(ReplicaId(3)), Message::Replica(m));
        assert!(matches!(
            e,
            Err(Error::PeerMisbehaved {
                fault: PeerFault::SenderMismatch,
                ..
            })
        ));
        assert!(matches!(
            r.handle_bytes(now, Peer::Replica(ReplicaId(3)), &[1, 1, 200]),
            Err(Error::Decode { .. })
        ));
        assert_eq!(r.stats().peer_faults, 2);
        assert_eq!(r.stats().decode_errors, 1);
    }

    /// f+1 STOPs make a replica join; Q STOPs install the regency and send STOPDATA to the
    /// new leader, only after the regency is durable.
    /// Issue 10, finding 7: with room for one request per batch and clients 1, 2 and 3
    /// always pending (client 1 floods: it always has a request waiting), three
    /// consecutive batches serve all three clients, not client 1 three times.
    #[test]
    fn batching_is_fair_across_clients() {
        let mut config = Config::new(4);
        config.batch_requests_max = 1;
        let mut r = replica(0, config);
        drain(&mut r);
        for c in [3u64, 1, 2] {
            r.pending
                .insert(ClientId(c), (request(c, b"x"), Timestamp(0), false));
        }
        let served: BTreeSet<ClientId> = (0..3)
            .map(|_| {
                let b = r.cut_batch();
                assert_eq!(b.requests.len(), 1);
                b.requests[0].client
            })
            .collect();
        assert_eq!(
            served.len(),
            3,
            "every pending client gets a batch: {served:?}"
        );
    }

    /// Issue 10, finding 1: a write certificate for instance 3 proves that 2 was decided,
    /// even when its STOPDATA reports no last decided instance, so the choice is instance 3
    /// with that certificate's batch (not instance 1 with a free batch).
    #[test]
    fn a_write_certificate_above_h_raises_the_choice() {
        let b = batch(1, b"C");
        let c = cert(VoteKind::Write, 0, 3, b.digest(), &[0, 2, 3]);
        let proofs = vec![
            stopdata(0, 1, Some((c, b.clone()))),
            stopdata(1, 1, None),
            stopdata(3, 1, None),
        ];
        let (h, forced, batch) = R::choose(&proofs);
        assert_eq!(h, SeqNo(2));
        assert_eq!(forced, Some(b.digest()));
        assert_eq!(batch, Some(b));
    }

    #[test]
    fn stop_quorums() {
        let mut r = replica(2, Config::new(4));
        let now = Timestamp(1);
        let stop = |i| {
            signed(
                i,
                ReplicaBody::Stop {
                    regency: Regency(1),
                },
            )
        };
        r.handle_message(now, Peer::Replica(ReplicaId(0)), stop(0))
            .expect("valid");
        assert_eq!(r.status().stop_target, Regency(0), "one STOP is not f+1");
        r.handle_message(now, Peer::Replica(ReplicaId(3)), stop(3))
            .expect("valid");
        assert_eq!(r.status().stop_target, Regency(1), "f+1 STOPs: join");
        assert_eq!(r.regency(), Regency(1), "own STOP makes Q = 3: install");
        // The STOPDATA is held until the regency record is persisted.
        let held = r.poll_output();
        assert!(matches!(held, Some(Output::Persist { .. })));
        let mut saw_stopdata_before_persist = false;
        while let Some(o) = r.poll_output() {
            if matches!(
                &o,
                Output::Send {
                    to: ReplicaId(1),
                    ..
                }
            ) {
                saw_stopdata_before_persist = true;
            }
        }
        assert!(!saw_stopdata_before_persist);
        r.handle_persisted(r.next_token - 1);
        let outs = drain(&mut r);
        assert!(outs.iter().any(
            |o| matches!(o, Output::Send { to: ReplicaId(1), msg: Message::Replica(m) }
            if matches!(m.body, ReplicaBody::StopData(_)))
        ));
    }

    fn arb_body() -> impl Strategy<Value = ReplicaBody> {
        let d = prop_oneof![
            Just(batch(1, b"a").digest()),
            Just(batch(2, b"b").digest()),
            any::<[u8; 32]>().prop_map(Digest)
        ];
        (0u8..9, 0u64..3, 0u64..4, d, any::<bool>()).prop_map(|(k, reg, cid, digest, flag)| {
            let (regency, cid) = (Regency(reg), SeqNo(cid));
            let b = if flag { batch(1, b"a") } else { batch(2, b"b") };
            match k {
                0 => ReplicaBody::Propose {
                    regency,
                    cid,
                    batch: b,
                },
                1 => ReplicaBody::Write {
                    regency,
                    cid,
                    digest,
                },
                2 => ReplicaBody::Accept {
                    regency,
                    cid,
                    digest,
                },
                3 => ReplicaBody::Stop { regency },
                4 => ReplicaBody::Fetch { from_cid: cid },
                5 => ReplicaBody::StateRequest,
                6 => ReplicaBody::StopData(StopData {
                    regency,
                    last_decided: None,
                    written: None,
                }),
                7 => ReplicaBody::Decisions {
                    decisions: vec![],
                    checkpoint: Some(cid),
                    regency_proof: None,
                },
                _ => ReplicaBody::Chunk {
                    cid,
                    index: 0,
                    total: 1,
                    data: vec![1, 2],
                    proof: cert(
                        VoteKind::Accept,
                        regency.0,
                        cid.0,
                        Digest([7; 32]),
                        &[0, 1, 2],
                    ),
                },
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any sequence of validly signed messages from replicas, timeouts and persistence
        /// acknowledgements keeps the core's invariants (checked after every input) and never
        /// panics; outputs stay bounded.
        #[test]
        fn hostile_sequences_keep_invariants(steps in proptest::collection::vec((0u8..4, arb_body(), 0u8..3), 1..60)) {
            let mut r = replica(1, Config::new(4));
            let mut now = 0u64;
            for (from, body, action) in steps {
                now += 10_000_000;
                if from == 1 {
                    r.handle_timeout(Timestamp(now * 100));
                    continue;
                }
                let _ = r.handle_message(Timestamp(now), Peer::Replica(ReplicaId(from)), signed(from, body));
                if action == 0 {
                    drain(&mut r);
                }
            }
            drain(&mut r);
            prop_assert!(r.poll_output().is_none());
        }
    }
}
