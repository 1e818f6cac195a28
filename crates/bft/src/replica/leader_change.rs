//! Leader change, the synchronization phase: STOP, STOPDATA, SYNC and the choice.
//!
//! Invariants of this phase (ADR 0101, ADR 0102):
//! - a replica joins a change after f+1 STOPs and installs regency r' after Q; the regency
//!   record is durable before STOP or STOPDATA leaves; STOPs are kept only up to
//!   [`STOP_WINDOW_MAX`](super::STOP_WINDOW_MAX) regencies ahead;
//! - a pending STOP may be withdrawn when the regency decides: only STOPDATA promises not
//!   to vote in lower regencies, and it is sent only on installing a regency;
//! - STOPDATA carries the accept certificate of the last decided instance (kept through
//!   checkpoints, state transfer and restart) and the highest-regency write certificate,
//!   with its batch, for the open instance;
//! - `choose` is deterministic over Q STOPDATAs: `cid` is one above the highest proven
//!   decided instance (an accept certificate for c, or a valid write certificate for c+1),
//!   so no certificate in the proofs lies above it; the batch is that of the
//!   highest-regency write certificate for `cid`, if any;
//! - every replica re-checks a SYNC (signatures, distinct valid STOPDATAs, the choice) and
//!   rejects one that differs; a SYNC more than one below the open instance of a replica
//!   whose last decision is from a lower regency is rejected (it would re-open decided
//!   instances);
//! - in regency r' nothing below the SYNC's `cid` is proposed or voted on; those
//!   instances are learned only by certified catch-up; a leader that is behind keeps the
//!   SYNC pending;
//! - the SYNC stands in for the PROPOSE of its instance and leaves only after the leader's
//!   vote for it is durable (issue 10, finding 9b);
//! - timeouts double per failed regency, up to 2^[`TIMEOUT_BACKOFF_EXP_MAX`](super::TIMEOUT_BACKOFF_EXP_MAX).

use std::collections::BTreeSet;

use super::{Output, Replica, STOP_WINDOW_MAX};
use crate::app::Application;
use crate::auth::Authenticator;
use crate::error::PeerFault;
use crate::message::{
    Batch, Decision, Message, ReplicaBody, SignedMessage, StopData, Sync, VoteKind,
};
use crate::storage::{PersistEntry, RegencyRecord};
use crate::types::{DangerTestMutation, Digest, Regency, ReplicaId, SeqNo};

impl<A: Application, Au: Authenticator> Replica<A, Au> {
    // ----- leader change -----

    /// Take back a pending STOP. Safe: only STOPDATA carries a promise not to vote in
    /// lower regencies, and it is sent only on installing a regency.
    pub(super) fn withdraw_stop(&mut self) {
        if self.stop_target > self.regency {
            self.stop_target = self.regency;
            self.stop_deadline = None;
            self.persist(PersistEntry::Regency(RegencyRecord {
                regency: self.regency,
                stop_target: self.stop_target,
            }));
        }
    }

    pub(super) fn start_stop(&mut self, target: Regency) {
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

    pub(super) fn on_stop(&mut self, from: ReplicaId, target: Regency) {
        if target <= self.regency || target.0 > self.regency.0.saturating_add(STOP_WINDOW_MAX) {
            return;
        }
        self.stops.entry(target).or_default().insert(from);
        self.check_stops(target);
    }

    pub(super) fn check_stops(&mut self, target: Regency) {
        let count = self.stops.get(&target).map_or(0, BTreeSet::len);
        if count > self.config.f() && self.stop_target < target {
            self.start_stop(target);
            return;
        }
        if count >= self.quorum() && self.regency < target {
            self.install_regency(target);
        }
    }

    pub(super) fn enter_regency(&mut self, target: Regency) {
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

    pub(super) fn install_regency(&mut self, target: Regency) {
        self.enter_regency(target);
        self.syncing = true;
        self.stop_deadline = Some(self.now.saturating_add(self.current_timeout()));
        self.send_stopdata();
    }

    pub(super) fn my_stopdata(&self) -> StopData {
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

    pub(super) fn send_stopdata(&mut self) {
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

    pub(super) fn validate_stopdata(&self, sd: &StopData, regency: Regency) -> bool {
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

    pub(super) fn on_stopdata(&mut self, m: SignedMessage) -> Result<(), PeerFault> {
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
    pub(super) fn choose(
        proofs: &[SignedMessage],
        mutation: Option<DangerTestMutation>,
    ) -> (SeqNo, Option<Digest>, Option<Batch>) {
        let mut h = SeqNo(0);
        for p in proofs {
            if let ReplicaBody::StopData(sd) = &p.body {
                h = h.max(sd.last_cid());
                if let Some((c, _)) = &sd.written
                    && mutation != Some(DangerTestMutation::ForgetCheckpointProof)
                {
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

    pub(super) fn maybe_send_sync(&mut self) {
        if self.stopdatas.len() < self.quorum() || self.sync_sent {
            return;
        }
        let proofs: Vec<SignedMessage> = self
            .stopdatas
            .values()
            .take(self.quorum())
            .cloned()
            .collect();
        let (h, _, mut forced) = Self::choose(&proofs, self.config.danger_test_mutation);
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
    pub(super) fn on_sync(
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
        if s.cid > self.open.cid
            && let Some(d) = self.certified_open_decision(&s.proofs)
        {
            // The SYNC's proofs prove the open instance decided, and this replica holds the
            // batch: decide it here rather than wait for a peer to serve it. The lone holder
            // of the decision may be a Byzantine replica that completed the accept quorum
            // with its own ACCEPT and never shares it, while its STOPDATA keeps every SYNC
            // one instance above what the correct replicas decided.
            self.decide(d, true);
        }
        if s.cid == self.open.cid {
            let check_time = Self::choose(&s.proofs, self.config.danger_test_mutation)
                .1
                .is_none();
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

    /// The decision of the open instance, when a STOPDATA in `proofs` (already validated)
    /// carries its accept certificate and this replica knows the batch. Every correct signer
    /// of an accept certificate holds the batch in its vote record until it decides, so at
    /// least f+1 correct replicas can decide this way.
    pub(super) fn certified_open_decision(&self, proofs: &[SignedMessage]) -> Option<Decision> {
        proofs.iter().find_map(|p| {
            let ReplicaBody::StopData(sd) = &p.body else {
                return None;
            };
            let proof = sd.last_decided.as_ref()?;
            if proof.cid != self.open.cid || proof.kind != VoteKind::Accept {
                return None;
            }
            let batch = self.known_batch(proof.digest)?.clone();
            Some(Decision {
                batch,
                proof: proof.clone(),
            })
        })
    }

    pub(super) fn validate_sync(&self, s: &Sync) -> Result<(), PeerFault> {
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
        let (h, forced, _) = Self::choose(&s.proofs, self.config.danger_test_mutation);
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
}
