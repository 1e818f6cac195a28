//! The client core (sans-IO): one outstanding request, f+1 matching replies for ordered
//! requests, n−f for read-only ones, visible fallback from read-only to ordered.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::auth::Authenticator;
use crate::error::{Error, Peer, PeerFault};
use crate::message::{Message, ReplicaBody, Request, WireLimits};
use crate::types::{ClientId, Config, Digest, ReplicaId, RequestSeq, Timestamp};

/// An effect of the client core.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // Moved once per message; boxing would only add an allocation.
pub enum ClientOutput {
    /// Send to every replica.
    Broadcast {
        /// The signed request.
        msg: Message,
    },
    /// The outstanding request completed.
    Completed {
        /// Its sequence number.
        seq: RequestSeq,
        /// The result f+1 (ordered) or n−f (read-only) replicas agreed on.
        result: Vec<u8>,
        /// Whether it completed on the unordered read-only path.
        read_only_path: bool,
    },
    /// A read-only request did not get n−f matching replies and was re-sent for ordered
    /// execution. Observable on purpose: BFT-SMaRt users were surprised by silent fallback.
    ReadOnlyFallback {
        /// Its sequence number.
        seq: RequestSeq,
    },
}

/// Client counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests completed.
    pub completed: u64,
    /// Read-only requests completed without ordering.
    pub read_only_fast: u64,
    /// Read-only requests that fell back to ordering.
    pub read_only_fallbacks: u64,
    /// Retransmissions.
    pub retransmissions: u64,
    /// Replies rejected (bad tag, wrong request).
    pub replies_rejected: u64,
}

/// Outstanding-request errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A request is already outstanding.
    #[error("a request is already outstanding")]
    Busy,
    /// The operation exceeds `request_op_bytes_max`.
    #[error("operation of {len} bytes exceeds {max}")]
    TooLarge {
        /// Size.
        len: usize,
        /// Limit.
        max: usize,
    },
}

struct Outstanding {
    seq: RequestSeq,
    op: Vec<u8>,
    read_only: bool,
    replies: BTreeMap<ReplicaId, Digest>,
    results: BTreeMap<Digest, Vec<u8>>,
    deadline: Timestamp,
}

/// A BFT client. Sans-IO like [`crate::Replica`].
pub struct Client<Au: Authenticator> {
    id: ClientId,
    replicas: usize,
    f: usize,
    op_bytes_max: usize,
    timeout: Duration,
    limits: WireLimits,
    auth: Au,
    seq: RequestSeq,
    outstanding: Option<Outstanding>,
    outputs: VecDeque<ClientOutput>,
    stats: ClientStats,
}

impl<Au: Authenticator> Client<Au> {
    /// A client `id` of the cluster described by `config`, retransmitting after `timeout`.
    /// `first_seq` must be above any sequence number this client id used before.
    #[must_use]
    pub fn new(
        config: &Config,
        id: ClientId,
        auth: Au,
        timeout: Duration,
        first_seq: RequestSeq,
    ) -> Self {
        Client {
            id,
            replicas: config.replicas,
            f: config.f(),
            op_bytes_max: config.request_op_bytes_max,
            timeout,
            limits: WireLimits::from_config(config),
            auth,
            seq: first_seq,
            outstanding: None,
            outputs: VecDeque::new(),
            stats: ClientStats::default(),
        }
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Whether a request is outstanding.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        self.outstanding.is_some()
    }

    /// Decoder limits for replies.
    #[must_use]
    pub fn wire_limits(&self) -> &WireLimits {
        &self.limits
    }

    /// Submit an operation; `read_only` asks for the unordered fast path.
    pub fn submit(
        &mut self,
        now: Timestamp,
        op: Vec<u8>,
        read_only: bool,
    ) -> Result<RequestSeq, ClientError> {
        if self.outstanding.is_some() {
            return Err(ClientError::Busy);
        }
        if op.len() > self.op_bytes_max {
            return Err(ClientError::TooLarge {
                len: op.len(),
                max: self.op_bytes_max,
            });
        }
        self.seq = RequestSeq(self.seq.0.saturating_add(1));
        let seq = self.seq;
        self.outstanding = Some(Outstanding {
            seq,
            op,
            read_only,
            replies: BTreeMap::new(),
            results: BTreeMap::new(),
            deadline: now.saturating_add(self.timeout),
        });
        self.send();
        Ok(seq)
    }

    fn send(&mut self) {
        let Some(o) = &self.outstanding else { return };
        let req = Request::new_signed(&self.auth, self.id, o.seq, o.read_only, o.op.clone());
        self.outputs.push_back(ClientOutput::Broadcast {
            msg: Message::Request(req),
        });
    }

    fn fallback(&mut self, now: Timestamp) {
        let Some(o) = &mut self.outstanding else {
            return;
        };
        assert!(o.read_only);
        o.read_only = false;
        o.replies.clear();
        o.results.clear();
        o.deadline = now.saturating_add(self.timeout);
        self.stats.read_only_fallbacks += 1;
        self.outputs
            .push_back(ClientOutput::ReadOnlyFallback { seq: o.seq });
        self.send();
    }

    /// Decode and handle bytes from replica `from`.
    pub fn handle_bytes(
        &mut self,
        now: Timestamp,
        from: ReplicaId,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let msg = Message::decode(bytes, &self.limits)?;
        self.handle_message(now, from, msg)
    }

    /// Handle a reply from replica `from`.
    pub fn handle_message(
        &mut self,
        now: Timestamp,
        from: ReplicaId,
        msg: Message,
    ) -> Result<(), Error> {
        let fault = |fault| Error::PeerMisbehaved {
            peer: Peer::Replica(from),
            fault,
        };
        let Message::Replica(m) = msg else {
            self.stats.replies_rejected += 1;
            return Err(fault(PeerFault::Unexpected));
        };
        if m.from != from || usize::from(from.0) >= self.replicas {
            self.stats.replies_rejected += 1;
            return Err(fault(PeerFault::SenderMismatch));
        }
        let ReplicaBody::Reply {
            client,
            seq,
            read_only,
            result,
        } = &m.body
        else {
            self.stats.replies_rejected += 1;
            return Err(fault(PeerFault::Unexpected));
        };
        let Some(o) = &mut self.outstanding else {
            return Ok(());
        };
        if *client != self.id || *seq != o.seq || *read_only != o.read_only {
            return Ok(());
        }
        if !m.verify(&self.auth) {
            self.stats.replies_rejected += 1;
            return Err(fault(PeerFault::BadSignature));
        }
        if o.replies.contains_key(&from) {
            return Ok(());
        }
        let d = Digest::of("rampart-bft reply", &[result]);
        o.replies.insert(from, d);
        o.results.entry(d).or_insert_with(|| result.clone());
        let matching = o.replies.values().filter(|x| **x == d).count();
        let needed = if o.read_only {
            self.replicas - self.f
        } else {
            self.f + 1
        };
        if matching >= needed {
            let result = o.results.remove(&d).unwrap_or_default();
            let read_only_path = o.read_only;
            let seq = o.seq;
            self.outstanding = None;
            self.stats.completed += 1;
            if read_only_path {
                self.stats.read_only_fast += 1;
            }
            self.outputs.push_back(ClientOutput::Completed {
                seq,
                result,
                read_only_path,
            });
            return Ok(());
        }
        if o.read_only {
            // Can n−f matching replies still arrive?
            let best = {
                let mut counts: BTreeMap<Digest, usize> = BTreeMap::new();
                for x in o.replies.values() {
                    *counts.entry(*x).or_default() += 1;
                }
                counts.values().copied().max().unwrap_or(0)
            };
            let missing = self.replicas - o.replies.len();
            if best + missing < needed {
                self.fallback(now);
            }
        }
        Ok(())
    }

    /// Timers: retransmit, or fall back from read-only.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let Some(o) = &mut self.outstanding else {
            return;
        };
        if o.deadline > now {
            return;
        }
        if o.read_only {
            self.fallback(now);
            return;
        }
        o.deadline = now.saturating_add(self.timeout);
        self.stats.retransmissions += 1;
        self.send();
    }

    /// Next effect.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.outputs.pop_front()
    }

    /// Earliest time `handle_timeout` must be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.outstanding.as_ref().map(|o| o.deadline)
    }
}
