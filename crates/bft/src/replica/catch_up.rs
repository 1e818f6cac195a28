//! Catch-up by certified decisions: FETCH and DECISIONS (ADR 0103).
//!
//! Invariants of this phase:
//! - a replica that sees traffic for a later instance or regency FETCHes from one peer;
//!   the answer holds at most `decisions_per_fetch_max` decisions, each checked on its own
//!   against its accept certificate, so one peer suffices and a Byzantine one can only stay
//!   silent (the fetch then times out and moves to another peer);
//! - only the decision for the open instance is taken, in order;
//! - the SYNC that installed the peer's regency rides along and is verified like a direct
//!   one, including one this replica signed itself before a restart (issue 10, finding 9a);
//! - a checkpoint named in one DECISIONS message only starts a probe for digests, one at a
//!   time; it is no evidence of being behind (issue 10, finding 3).

use super::Replica;
use super::reply_budget::COSTLY_REPLY_OVERHEAD;
use crate::app::Application;
use crate::auth::Authenticator;
use crate::error::PeerFault;
use crate::message::{Decision, ReplicaBody, SignedMessage};
use crate::types::{ReplicaId, SeqNo};

impl<A: Application, Au: Authenticator> Replica<A, Au> {
    // ----- catch-up -----

    pub(super) fn note_behind(&mut self, peer: ReplicaId) {
        self.behind = true;
        if self.fetch_deadline.is_none() && !self.in_transfer() {
            self.start_fetch(peer);
        }
    }

    pub(super) fn start_fetch(&mut self, peer: ReplicaId) {
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

    /// Answer a FETCH (through the peer's reply budget, see `reply_budget`); returns the
    /// estimated bytes of the answer.
    pub(super) fn on_fetch(&mut self, from: ReplicaId, from_cid: SeqNo) -> usize {
        let in_log = self.log.front().is_some_and(|d| d.cid() <= from_cid);
        let checkpoint = match self.checkpoints.last() {
            Some(c) if !in_log && from_cid <= c.cid => Some(c.cid),
            _ => None,
        };
        let decisions: Vec<Decision> = if checkpoint.is_some() {
            Vec::new()
        } else {
            self.log
                .iter()
                .filter(|d| d.cid() >= from_cid)
                .take(self.config.decisions_per_fetch_max)
                .cloned()
                .collect()
        };
        let regency_proof = if self.syncing {
            None
        } else {
            self.regency_proof.clone().map(Box::new)
        };
        let mut bytes = COSTLY_REPLY_OVERHEAD;
        for d in &decisions {
            bytes += d.batch.requests_bytes() + COSTLY_REPLY_OVERHEAD;
        }
        if let Some(p) = &regency_proof
            && let ReplicaBody::Sync(s) = &p.body
        {
            bytes += s.batch.requests_bytes() + COSTLY_REPLY_OVERHEAD;
            for sd in &s.proofs {
                bytes += COSTLY_REPLY_OVERHEAD;
                if let ReplicaBody::StopData(sd) = &sd.body
                    && let Some((_, b)) = &sd.written
                {
                    bytes += b.requests_bytes();
                }
            }
        }
        self.send_now(
            from,
            ReplicaBody::Decisions {
                decisions,
                checkpoint,
                regency_proof,
            },
        );
        bytes
    }

    pub(super) fn on_decisions(
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
}
