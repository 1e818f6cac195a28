//! The normal case (Mod-SMaRt over VP-Consensus, one instance at a time): client
//! requests, batching, PROPOSE/WRITE/ACCEPT, decision, execution and retransmission.
//!
//! Invariants of this phase (ADRs 0100, 0102, 0104):
//! - a request is admitted only within `request_op_bytes_max` and with a valid client
//!   signature; a client has at most one pending request (the highest sequence number
//!   seen), the pool at most `pending_requests_max`; a batch holds at most one request per
//!   client, `batch_requests_max` requests and `batch_bytes_max` bytes, and is cut
//!   round-robin from a cursor so no client id is favoured (issue 10, finding 7);
//! - a follower forwards a request to the leader on its timer's first expiry (at most
//!   `batch_bytes_max` bytes per expiry) and suspects the leader only on the second
//!   (issue 10, finding 8);
//! - the leader proposes only in the installed regency, above the regency's SYNC instance,
//!   never twice in one (instance, regency), and its PROPOSE leaves only after its own vote
//!   is durable (ADR 0102, issue 10 finding 9b);
//! - a follower accepts a PROPOSE only from the regency's leader, with every client
//!   signature valid and a timestamp that never goes back and is at most
//!   `timestamp_ahead_max` ahead of its clock (issue 10, finding 9d);
//! - a replica votes WRITE at most once and ACCEPT at most once per (instance, regency),
//!   each vote durable before it leaves; a second, different vote from a peer is
//!   equivocation;
//! - Q matching WRITEs form a write certificate (made durable before ACCEPT); Q matching
//!   ACCEPTs for a known batch form the accept certificate that decides;
//! - decisions are taken strictly in order; a request runs only if its sequence number is
//!   above its session's, and a new client is refused (never evicted) once `clients_max`
//!   sessions exist (ADR 0104); results over `reply_bytes_max` become empty on every
//!   replica; replies leave only after the decision is durable;
//! - next-instance messages that overtake the open instance's last votes are kept (at most
//!   [`FUTURE_MESSAGES_MAX`](super::FUTURE_MESSAGES_MAX) per sender) and replayed after the
//!   decision, through the normal checks (ADR 0304);
//! - retransmission re-sends only what the replica already durably voted or proposed.

use std::collections::{BTreeMap, BTreeSet};

use super::{Open, Output, Replica, Session};
use crate::app::{Application, BatchContext};
use crate::auth::{AuthTag, Authenticator};
use crate::error::PeerFault;
use crate::message::{Batch, Certificate, Decision, Message, ReplicaBody, Request, Vote, VoteKind};
use crate::storage::PersistEntry;
use crate::types::{ClientId, Digest, Regency, ReplicaId, RequestSeq, SeqNo, Timestamp};

impl<A: Application, Au: Authenticator> Replica<A, Au> {
    // ----- client requests -----

    pub(super) fn on_request(&mut self, r: Request) -> Result<(), PeerFault> {
        if r.op.len() > self.config.request_op_bytes_max {
            return Err(PeerFault::RequestTooLarge);
        }
        if !r.verify(&self.auth) {
            return Err(PeerFault::BadSignature);
        }
        if r.read_only {
            self.on_read_only(&r);
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
    pub(super) fn forward_expired(&mut self) {
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

    pub(super) fn bounded_result(&self, mut result: Vec<u8>) -> Vec<u8> {
        if result.len() > self.config.reply_bytes_max {
            // Deterministic on all replicas: an oversized result becomes empty.
            result.clear();
        }
        result
    }

    pub(super) fn validate_batch(&self, batch: &Batch, check_time: bool) -> Result<(), PeerFault> {
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
    pub(super) fn timestamp_acceptable(&self, t: Timestamp) -> bool {
        let ahead = self.now.saturating_add(self.config.timestamp_ahead_max);
        t >= self.last_timestamp && t <= ahead.max(self.last_timestamp)
    }

    pub(super) fn try_propose(&mut self) {
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

    pub(super) fn cut_batch(&mut self) -> Batch {
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

    pub(super) fn on_propose(
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
    pub(super) fn set_proposal(
        &mut self,
        regency: Regency,
        batch: Batch,
        announce: Option<Output>,
    ) {
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

    pub(super) fn on_vote(
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

    pub(super) fn votes_for(
        set: &BTreeMap<ReplicaId, (Digest, AuthTag)>,
        digest: Digest,
    ) -> Vec<Vote> {
        set.iter()
            .filter(|(_, (d, _))| *d == digest)
            .map(|(r, (_, t))| Vote {
                signer: *r,
                tag: *t,
            })
            .collect()
    }

    pub(super) fn check_write_quorum(&mut self) {
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

    pub(super) fn known_batch(&self, digest: Digest) -> Option<&Batch> {
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

    pub(super) fn check_accept_quorum(&mut self) {
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

    pub(super) fn decide(&mut self, d: Decision, reply: bool) {
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

    // ----- retransmission -----

    pub(super) fn retransmit(&mut self) {
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
}
