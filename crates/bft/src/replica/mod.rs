//! The replica core: Mod-SMaRt ordering, synchronization phase, checkpoints, state transfer.
//!
//! Split by protocol phase, each file stating the invariants of its phase:
//! - this file: the [`Replica`] struct, construction and recovery from [`RecoveredState`],
//!   getters, the inputs (`handle_*`), the outputs, the effect helpers and `invariants()`;
//! - [`normal`]: client requests, batching, PROPOSE/WRITE/ACCEPT, decision, execution and
//!   retransmission;
//! - [`leader_change`]: STOP, STOPDATA, SYNC and the deterministic choice;
//! - [`checkpoint`]: taking and installing checkpoints;
//! - [`catch_up`]: FETCH and certified DECISIONS;
//! - [`transfer`]: chunked state transfer;
//! - [`read_only`]: the unordered read-only path.
//!
//! Invariants held here, for every phase (checked by `invariants()` after every input):
//! - effects leave in the order the core emits them; a network message queued after a
//!   persist is held until `handle_persisted` covers that persist (ADR 0102), and at most
//!   [`OUTPUTS_MAX`] network messages are queued or held (beyond it they are dropped and
//!   counted; persists and events never are);
//! - recovery rebuilds the state from the latest checkpoint (digest, encoding and accept
//!   certificate checked), the contiguous log after it, the vote record and the regency,
//!   and emits nothing to peers or observers;
//! - the open instance is one above the last decided; the installed regency never exceeds
//!   the STOP target; the in-memory log holds at most `2 * checkpoint_interval + 1`
//!   decisions and ends at the last decided instance; pending requests, sessions,
//!   checkpoints, buffered future messages and STOPDATAs stay within their limits.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::app::Application;
use crate::auth::{AuthTag, Authenticator};
use crate::error::{Error, Peer, PeerFault};
use crate::message::{
    Batch, Certificate, CheckpointState, Decision, Message, ReplicaBody, Request, SignedMessage,
    VoteKind, WireLimits,
};
use crate::storage::{CheckpointRecord, PersistEntry, RecoveredState, VoteRecord};
use crate::types::{
    ClientId, Config, ConfigError, DangerTestMutation, Digest, Regency, ReplicaId, RequestSeq,
    SeqNo, Timestamp,
};

mod catch_up;
mod checkpoint;
mod leader_change;
mod normal;
mod read_only;
mod reply_budget;
#[cfg(test)]
mod tests;
mod transfer;

use reply_budget::{Costly, ReplyBudget};
use transfer::StateTransfer;

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
    /// Costly requests (FETCH, CHUNKREQUEST) kept because their sender's reply budget was
    /// spent ([`Config::costly_reply_bytes_per_sec`]).
    pub costly_requests_deferred: u64,
    /// Estimated bytes of costly replies sent.
    pub costly_reply_bytes: u64,
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

/// Buffered next-instance messages per replica (PROPOSE, WRITE, ACCEPT); worst case
/// `n * FUTURE_MESSAGES_MAX` messages, one of them a batch.
const FUTURE_MESSAGES_MAX: usize = 3;

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
    /// Per-peer byte budget for costly replies (issue 10, finding 6).
    budget: ReplyBudget,
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
            budget: ReplyBudget::default(),
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
            let state = CheckpointState::decode_view(&cp.blob, &self.config).map_err(|_| {
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
            let no_forward =
                self.config.danger_test_mutation == Some(DangerTestMutation::NoForward);
            if !leader && !no_forward {
                self.forward_expired();
            }
            let timeout = self.current_timeout();
            // A follower suspects the leader only on a forwarded request's second expiry.
            if self.pending.values().any(|(_, t, fwd)| {
                (leader || *fwd || no_forward) && t.saturating_add(timeout) <= now
            }) {
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
        self.serve_deferred();
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
        min(self.budget.next_due(self.config.costly_reply_bytes_per_sec));
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

    // ----- replica messages: dispatch -----

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
                self.on_costly(from, Costly::Fetch(from_cid));
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
                self.on_costly(from, Costly::Chunk(cid, index));
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
        let (balances, kept) = self.budget.len();
        assert!(balances <= self.config.replicas && kept <= self.config.replicas);
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
