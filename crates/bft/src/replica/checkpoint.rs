//! Checkpoints: taking one every `checkpoint_interval` decisions and installing one.
//!
//! Invariants of this phase (ADR 0103, ADR 0101):
//! - a checkpoint is the canonical encoding of the application snapshot, the client
//!   sessions and the timestamp after its instance, so correct replicas produce identical
//!   bytes; its digest is over those bytes;
//! - the record keeps the accept certificate of its instance outside the blob, so a
//!   replica that installs it (by transfer or restart) still proves its last decided
//!   instance in STOPDATA (issue 10, finding 1);
//! - at most `CHECKPOINTS_KEPT` (two) checkpoints are kept; once two exist, the log is
//!   truncated through the older one, so it holds at most `2 * checkpoint_interval`
//!   decisions;
//! - the checkpoint is persisted in the order the core emits it, after the decision it
//!   covers.

use super::{Open, Output, Replica, Session};
use crate::app::Application;
use crate::auth::Authenticator;
use crate::error::Error;
use crate::message::{Certificate, CheckpointState, CheckpointView};
use crate::storage::{CheckpointRecord, PersistEntry};
use crate::types::{DangerTestMutation, Digest};

impl<A: Application, Au: Authenticator> Replica<A, Au> {
    /// Checkpoint the state after the instance that `proof` decided.
    pub(super) fn take_checkpoint(&mut self, proof: Certificate) {
        debug_assert_eq!(proof.cid, self.last_decided);
        // The snapshot is written straight into the checkpoint buffer, allocated once at its
        // final size, and the record is shared (not copied) with the persist entry (issue
        // 10, finding 5: a checkpoint used to hold about six copies of the state).
        let sessions: Vec<_> = self
            .sessions
            .iter()
            .map(|(c, s)| (*c, s.seq, s.reply.as_slice()))
            .collect();
        let app = &self.app;
        let blob = CheckpointState::encode_with(
            self.last_decided,
            self.last_timestamp,
            app.snapshot_len(),
            |out| app.snapshot_into(out),
            &sessions,
        );
        drop(sessions);
        let digest = Digest::of("rampart-bft checkpoint v1", &[&blob]);
        let rec = CheckpointRecord {
            cid: self.last_decided,
            digest,
            blob: std::sync::Arc::new(blob),
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
    pub(super) fn install_checkpoint_state(
        &mut self,
        state: CheckpointView<'_>,
        proof: Certificate,
    ) -> Result<(), Error> {
        debug_assert_eq!(proof.cid, state.cid);
        self.app.restore(state.app)?;
        self.sessions = state
            .sessions
            .into_iter()
            .map(|(c, seq, reply)| (c, Session { seq, reply }))
            .collect();
        self.last_decided = state.cid;
        self.last_timestamp = state.timestamp;
        self.last_proof = Some(proof);
        if self.config.danger_test_mutation == Some(DangerTestMutation::ForgetCheckpointProof) {
            self.last_proof = None;
        }
        self.open = Open {
            cid: state.cid.next(),
            ..Open::default()
        };
        let sessions = &self.sessions;
        self.pending
            .retain(|c, (r, _, _)| sessions.get(c).is_none_or(|s| s.seq < r.seq));
        Ok(())
    }
}
