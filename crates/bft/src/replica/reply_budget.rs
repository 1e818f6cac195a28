//! Per-peer byte budget for costly replies (issue 10, finding 6).
//!
//! A FETCH or a CHUNKREQUEST is a few bytes, but its answer (up to
//! `decisions_per_fetch_max` batches and the SYNC that installed the regency, or one
//! checkpoint chunk) makes the replica clone, sign and queue up to MiB. Without a bound one
//! peer spamming tiny requests could make a replica spend its CPU and output queue on it.
//!
//! Invariants of this part:
//! - each peer has its own budget of `costly_reply_bytes_per_sec` bytes per second of the
//!   replica's clock (the `now` of its inputs: time is an input, never read), holding at
//!   most one second's worth; a costly request is served only while the peer's balance is
//!   positive and its estimated reply size is charged (the balance may go below zero by
//!   one reply), so over any interval of T seconds one peer receives at most
//!   `(T + 1) * costly_reply_bytes_per_sec` bytes plus one reply;
//! - a request that finds the balance spent is not dropped but kept, one per peer (a newer
//!   one replaces it: a requester only ever waits for its latest), and served once the
//!   balance is positive again (a timer in `poll_timeout`); so an honest state transfer
//!   is slowed to the budget, never stopped, and one peer's spam never delays another's;
//! - at most n balances and n kept requests exist.

use std::collections::BTreeMap;

use super::Replica;
use crate::app::Application;
use crate::auth::Authenticator;
use crate::types::{ReplicaId, SeqNo, Timestamp};

/// Bytes charged per costly reply on top of its payload (header, signature, certificate).
pub(super) const COSTLY_REPLY_OVERHEAD: usize = 512;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A costly request, kept while its sender's budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Costly {
    /// FETCH from this instance.
    Fetch(SeqNo),
    /// CHUNKREQUEST for this checkpoint and chunk.
    Chunk(SeqNo, u32),
}

/// The budgets and kept requests of every peer.
#[derive(Debug, Default)]
pub(super) struct ReplyBudget {
    /// Balance in bytes (at most one second's worth; below zero by at most one reply) and
    /// when it was last refilled.
    balance: BTreeMap<ReplicaId, (i64, Timestamp)>,
    /// One kept request per peer.
    pub(super) deferred: BTreeMap<ReplicaId, Costly>,
}

impl ReplyBudget {
    fn refill(&mut self, peer: ReplicaId, now: Timestamp, rate: usize) -> i64 {
        let cap = i64::try_from(rate).unwrap_or(i64::MAX);
        let (bal, at) = self.balance.entry(peer).or_insert((cap, now));
        let elapsed = u128::from(now.0.saturating_sub(at.0));
        let add = (elapsed * rate as u128 / NANOS_PER_SEC).min(i64::MAX as u128) as i64;
        if add > 0 || now < *at {
            *bal = bal.saturating_add(add).min(cap);
            *at = now;
        }
        *bal
    }

    /// Whether `peer` may be served now.
    pub(super) fn available(&mut self, peer: ReplicaId, now: Timestamp, rate: usize) -> bool {
        self.refill(peer, now, rate) > 0
    }

    /// Charge `bytes` to `peer`.
    pub(super) fn charge(&mut self, peer: ReplicaId, bytes: usize) {
        if let Some((bal, _)) = self.balance.get_mut(&peer) {
            *bal = bal.saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// When the first kept request may be served.
    pub(super) fn next_due(&self, rate: usize) -> Option<Timestamp> {
        self.deferred
            .keys()
            .filter_map(|p| self.balance.get(p))
            .map(|(bal, at)| {
                // The balance becomes positive once it has gained `1 - bal` bytes.
                let need = u128::try_from(1 - (*bal).min(0)).unwrap_or(1);
                let nanos = (need * NANOS_PER_SEC).div_ceil(rate.max(1) as u128);
                Timestamp(at.0.saturating_add(u64::try_from(nanos).unwrap_or(u64::MAX)))
            })
            .min()
    }

    /// Entries held (for the invariants).
    pub(super) fn len(&self) -> (usize, usize) {
        (self.balance.len(), self.deferred.len())
    }
}

impl<A: Application, Au: Authenticator> Replica<A, Au> {
    /// A costly request from `from`: serve it if its budget allows, otherwise keep it (one
    /// per peer) until it does.
    pub(super) fn on_costly(&mut self, from: ReplicaId, req: Costly) {
        let rate = self.config.costly_reply_bytes_per_sec;
        if self.budget.available(from, self.now, rate) {
            self.budget.deferred.remove(&from);
            self.serve_costly(from, req);
        } else {
            self.stats.costly_requests_deferred += 1;
            self.budget.deferred.insert(from, req);
        }
    }

    /// Serve the kept requests whose budget has refilled.
    pub(super) fn serve_deferred(&mut self) {
        let rate = self.config.costly_reply_bytes_per_sec;
        let now = self.now;
        let due: Vec<ReplicaId> = self.budget.deferred.keys().copied().collect();
        for peer in due {
            if self.budget.available(peer, now, rate)
                && let Some(req) = self.budget.deferred.remove(&peer)
            {
                self.serve_costly(peer, req);
            }
        }
    }

    fn serve_costly(&mut self, from: ReplicaId, req: Costly) {
        let bytes = match req {
            Costly::Fetch(from_cid) => self.on_fetch(from, from_cid),
            Costly::Chunk(cid, index) => self.on_chunk_request(from, cid, index),
        };
        self.budget.charge(from, bytes);
        self.stats.costly_reply_bytes += bytes as u64;
    }
}
