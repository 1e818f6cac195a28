//! Identifiers, time, digests and the replica configuration.

use std::time::Duration;

/// Index of a replica in the cluster, `0..n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId(pub u8);

/// Identifier of a client. Chosen by the deployment; every client has its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

/// Consensus instance number (BFT-SMaRt's `cid`). Instance 0 is the empty genesis;
/// the first real instance is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The next instance.
    #[must_use]
    pub fn next(self) -> SeqNo {
        SeqNo(self.0.saturating_add(1))
    }
}

/// Regency (BFT-SMaRt's name for a view). The leader of regency `r` is replica `r mod n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Regency(pub u64);

impl Regency {
    /// The next regency.
    #[must_use]
    pub fn next(self) -> Regency {
        Regency(self.0.saturating_add(1))
    }
}

/// Per-client request sequence number; a client's requests execute at most once, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RequestSeq(pub u64);

/// A point in time, in nanoseconds since an arbitrary epoch chosen by the driver.
///
/// The core never reads a clock: every `handle_*` call takes the current `Timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `self + d`, saturating.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }
}

/// A 32-byte BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Digest {
    /// Domain-separated BLAKE3 hash of `parts`.
    #[must_use]
    pub fn of(domain: &str, parts: &[&[u8]]) -> Digest {
        let mut h = blake3::Hasher::new_derive_key(domain);
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        Digest(*h.finalize().as_bytes())
    }
}

/// A deliberately broken protocol rule, for mutation testing of the simulator only.
///
/// Never set this outside tests: every variant breaks safety.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DangerTestMutation {
    /// Use f+1 instead of ⌈(n+f+1)/2⌉ for the WRITE and ACCEPT quorums.
    WeakQuorum,
    /// The new leader ignores the write certificates in STOPDATA when it chooses the SYNC
    /// value, and followers accept any SYNC value without checking it against them.
    SkipSyncCheck,
    /// Issue 10, finding 1 before its fix: installing a checkpoint (by state transfer or on
    /// restart) forgets the checkpoint's accept certificate, and the SYNC choice takes h
    /// from the reported last-decided instances only (a write certificate for a later
    /// instance no longer raises h).
    ForgetCheckpointProof,
    /// Issue 10, finding 3 before its fix: one peer's DECISIONS naming a checkpoint above
    /// the log puts a replica into state transfer at once (it stops proposing and
    /// answering reads), before f+1 replicas vouched for any checkpoint.
    TrustOneCheckpointClaim,
    /// Issue 10, finding 8 before its fix: followers never forward a request to the leader
    /// and suspect it on the request timer's first expiry.
    NoForward,
}

/// Replica configuration. Every limit is named `*_max` and bounds memory; the doc of each
/// states the worst case it implies.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of replicas, n ≥ 3f+1. f is derived: f = ⌊(n−1)/3⌋.
    pub replicas: usize,
    /// Requests per batch (BFT-SMaRt default 1024).
    pub batch_requests_max: usize,
    /// Bytes of encoded requests per batch (BFT-SMaRt default 1 MiB). A proposal, and each
    /// of the ⌈(n+f+1)/2⌉ STOPDATAs in a SYNC, holds at most one batch.
    pub batch_bytes_max: usize,
    /// Bytes of one client operation.
    pub request_op_bytes_max: usize,
    /// Bytes of one reply result. Cached per client: `clients_max * reply_bytes_max` bytes.
    pub reply_bytes_max: usize,
    /// Requests waiting to be ordered (one per client at most). Worst case
    /// `pending_requests_max * request_op_bytes_max` bytes.
    pub pending_requests_max: usize,
    /// Client sessions (last executed sequence number and cached reply). New clients beyond
    /// this are refused deterministically, never evicted (eviction would re-open replays).
    pub clients_max: usize,
    /// A checkpoint is taken every this many decisions (BFT-SMaRt default 1024). The
    /// in-memory decision log holds at most `2 * checkpoint_interval` batches.
    pub checkpoint_interval: u64,
    /// Largest application snapshot accepted by state transfer (assembled in memory).
    pub state_bytes_max: usize,
    /// Bytes per state-transfer chunk.
    pub state_chunk_bytes_max: usize,
    /// Decided batches sent in one catch-up reply.
    pub decisions_per_fetch_max: usize,
    /// Bytes of costly replies (DECISIONS to a FETCH, CHUNK to a CHUNKREQUEST) one peer may
    /// receive per second of this replica's clock, with a burst of one second's worth; a
    /// request beyond it waits (one per peer) until the budget refills (issue 10, finding
    /// 6). The default, 64 MiB/s, moves a 2 GiB checkpoint from one provider in about 32 s.
    pub costly_reply_bytes_per_sec: usize,
    /// Request timer: a request not ordered within this time triggers a leader change
    /// (BFT-SMaRt default 2 s). Doubled per consecutive failed regency, up to 64×.
    pub request_timeout: Duration,
    /// Period of retransmission of this replica's latest protocol messages.
    pub retransmit_interval: Duration,
    /// How long to wait for a catch-up or state-transfer reply before asking another peer.
    pub fetch_timeout: Duration,
    /// How far ahead of a follower's own clock the leader's batch timestamp may be. A
    /// follower refuses a proposal (or a SYNC's free batch) beyond it: timestamps never go
    /// back, so one far-future timestamp would freeze the application's clock there.
    pub timestamp_ahead_max: Duration,
    /// Test-only protocol breakage for mutation testing. `None` in every real deployment.
    pub danger_test_mutation: Option<DangerTestMutation>,
}

impl Config {
    /// Defaults close to BFT-SMaRt's for `replicas` replicas.
    #[must_use]
    pub fn new(replicas: usize) -> Config {
        Config {
            replicas,
            batch_requests_max: 1024,
            batch_bytes_max: 1 << 20,
            request_op_bytes_max: 64 << 10,
            reply_bytes_max: 64 << 10,
            pending_requests_max: 10_000,
            clients_max: 10_000,
            checkpoint_interval: 1024,
            state_bytes_max: 256 << 20,
            state_chunk_bytes_max: 1 << 20,
            decisions_per_fetch_max: 16,
            costly_reply_bytes_per_sec: 64 << 20,
            request_timeout: Duration::from_secs(2),
            retransmit_interval: Duration::from_millis(500),
            fetch_timeout: Duration::from_millis(500),
            timestamp_ahead_max: Duration::from_secs(30),
            danger_test_mutation: None,
        }
    }

    /// Maximum number of Byzantine replicas tolerated.
    #[must_use]
    pub fn f(&self) -> usize {
        self.replicas.saturating_sub(1) / 3
    }

    /// WRITE, ACCEPT, STOP-install and STOPDATA quorum: ⌈(n+f+1)/2⌉ (2f+1 when n = 3f+1).
    #[must_use]
    pub fn quorum(&self) -> usize {
        if self.danger_test_mutation == Some(DangerTestMutation::WeakQuorum) {
            return self.f() + 1;
        }
        (self.replicas + self.f() + 2) / 2
    }

    /// Leader of a regency.
    #[must_use]
    pub fn leader(&self, regency: Regency) -> ReplicaId {
        let n = self.replicas.max(1) as u64;
        ReplicaId(u8::try_from(regency.0 % n).unwrap_or(0))
    }

    /// Checks the relations between limits. Called by the constructors.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.replicas < 4 || self.replicas > REPLICAS_MAX {
            return Err(ConfigError::Replicas {
                replicas: self.replicas,
            });
        }
        let pairs = [
            (
                "batch_requests_max",
                self.batch_requests_max,
                BATCH_REQUESTS_MAX,
            ),
            ("batch_bytes_max", self.batch_bytes_max, BATCH_BYTES_MAX),
            (
                "request_op_bytes_max",
                self.request_op_bytes_max,
                self.batch_bytes_max,
            ),
            ("reply_bytes_max", self.reply_bytes_max, REPLY_BYTES_MAX),
            (
                "state_chunk_bytes_max",
                self.state_chunk_bytes_max,
                STATE_CHUNK_BYTES_MAX,
            ),
            (
                "decisions_per_fetch_max",
                self.decisions_per_fetch_max,
                DECISIONS_PER_FETCH_MAX,
            ),
        ];
        for (name, value, max) in pairs {
            if value == 0 || value > max {
                return Err(ConfigError::Limit { name, value, max });
            }
        }
        if self.checkpoint_interval == 0
            || self.pending_requests_max == 0
            || self.clients_max == 0
            || self.costly_reply_bytes_per_sec == 0
        {
            return Err(ConfigError::Limit {
                name: "checkpoint/pending/clients",
                value: 0,
                max: 0,
            });
        }
        Ok(())
    }
}

/// Largest supported cluster.
pub const REPLICAS_MAX: usize = 64;
/// Absolute cap on `Config::batch_requests_max`, enforced by the decoder.
pub const BATCH_REQUESTS_MAX: usize = 4096;
/// Absolute cap on `Config::batch_bytes_max`, enforced by the decoder (4 MiB).
pub const BATCH_BYTES_MAX: usize = 4 << 20;
/// Absolute cap on a reply result, enforced by the decoder (1 MiB).
pub const REPLY_BYTES_MAX: usize = 1 << 20;
/// Absolute cap on a state-transfer chunk (4 MiB).
pub const STATE_CHUNK_BYTES_MAX: usize = 4 << 20;
/// Absolute cap on decided batches per catch-up message.
pub const DECISIONS_PER_FETCH_MAX: usize = 64;

const _: () = assert!(REPLICAS_MAX <= u8::MAX as usize);
const _: () = assert!(BATCH_BYTES_MAX >= REPLY_BYTES_MAX);

/// An invalid [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// n must be in 4..=64.
    #[error("replicas = {replicas}: need 4 ≤ n ≤ 64")]
    Replicas {
        /// The configured value.
        replicas: usize,
    },
    /// A limit is zero or above its absolute cap.
    #[error("{name} = {value}: must be in 1..={max}")]
    Limit {
        /// Name of the field.
        name: &'static str,
        /// The configured value.
        value: usize,
        /// The largest allowed value.
        max: usize,
    },
    /// The replica id is not below n.
    #[error("replica id {id} is not below n = {replicas}")]
    ReplicaId {
        /// The id.
        id: u8,
        /// n.
        replicas: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_match_the_paper() {
        for (n, f, q) in [(4, 1, 3), (5, 1, 4), (7, 2, 5), (10, 3, 7)] {
            let c = Config::new(n);
            assert_eq!(c.f(), f, "n={n}");
            assert_eq!(c.quorum(), q, "n={n}");
            // Two quorums intersect in at least f+1 replicas, so in one correct replica.
            assert!(2 * c.quorum() > n + f);
        }
    }

    #[test]
    fn weak_quorum_mutation_breaks_intersection() {
        let mut c = Config::new(4);
        c.danger_test_mutation = Some(DangerTestMutation::WeakQuorum);
        assert_eq!(c.quorum(), 2);
        assert!(2 * c.quorum() < c.replicas + c.f() + 1);
    }

    #[test]
    fn config_check_rejects_bad_limits() {
        assert!(Config::new(4).check().is_ok());
        assert!(Config::new(3).check().is_err());
        let mut c = Config::new(4);
        c.batch_requests_max = 0;
        assert!(c.check().is_err());
    }
}
