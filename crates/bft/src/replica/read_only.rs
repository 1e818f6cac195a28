//! Read-only requests (ADR 0105): answered at once, unordered, from the current state.
//!
//! Invariants of this phase:
//! - a read-only request is verified (size, client signature) like an ordered one before
//!   it is answered, and it never enters the pending pool, a batch or a forward to the
//!   leader;
//! - it is answered through [`Application::query`], which takes `&self`, so
//!   the unordered path cannot make correct replicas diverge;
//! - it is not answered while the replica downloads a checkpoint (its state is about to
//!   be replaced);
//! - a result over `reply_bytes_max` becomes empty, as on the ordered path.
//!
//! The client needs n−f matching replies and otherwise falls back, visibly, to ordering.
//! The caveat of ADR 0105 holds: colluding Byzantine replicas returning one consistent stale
//! value can make a fast-path read miss a completed write.

use super::{Output, Replica};
use crate::app::Application;
use crate::auth::Authenticator;
use crate::message::{ReplicaBody, Request};

impl<A: Application, Au: Authenticator> Replica<A, Au> {
    /// Answer a verified read-only request from the current state (no reply during a
    /// checkpoint download, or when the application declines the query).
    pub(super) fn on_read_only(&mut self, r: &Request) {
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
    }
}
