//! Protocol messages and their canonical, versioned wire encoding.
//!
//! Encoding: little-endian fixed-width integers, `u32` length prefixes, one version byte
//! ([`WIRE_VERSION`]) first. Decoding is strict: it checks the whole input against
//! [`WireLimits::message_bytes_max`] before anything else, every length against its limit
//! *and* against the bytes that remain (so no allocation exceeds the input), rejects
//! unknown versions and kinds, non-canonical booleans and options, and trailing bytes.
//! `encode(decode(b)) == b` for every accepted `b`.

use crate::auth::{AUTH_TAG_LEN, AuthTag, Authenticator, Principal};
use crate::storage::{CheckpointRecord, PersistEntry, RegencyRecord, VoteRecord};
use crate::types::{ClientId, Config, Digest, Regency, ReplicaId, RequestSeq, SeqNo, Timestamp};

/// Version byte that starts every message (and every durable record). Version 2: state-transfer
/// chunks and checkpoint records carry the checkpoint's accept certificate (issue 10).
pub const WIRE_VERSION: u8 = 2;

const SIGN_DOMAIN: &[u8] = b"rampart-bft/v1/";
const REQUEST_DOMAIN: &[u8] = b"rampart-bft/v1/request";

/// A client request. Signed by the client, so a Byzantine leader cannot invent requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client.
    pub client: ClientId,
    /// The client's sequence number.
    pub seq: RequestSeq,
    /// Whether the client asks for the unordered read-only path.
    pub read_only: bool,
    /// Opaque operation for the [`crate::Application`].
    pub op: Vec<u8>,
    /// The client's tag over the fields above.
    pub tag: AuthTag,
}

impl Request {
    /// A request signed by `auth` (which must sign as `client`).
    #[must_use]
    pub fn new_signed(
        auth: &dyn Authenticator,
        client: ClientId,
        seq: RequestSeq,
        read_only: bool,
        op: Vec<u8>,
    ) -> Request {
        let mut r = Request {
            client,
            seq,
            read_only,
            op,
            tag: AuthTag([0; AUTH_TAG_LEN]),
        };
        r.tag = auth.sign(&r.signing_payload());
        r
    }

    /// Bytes covered by the tag.
    #[must_use]
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes_raw(REQUEST_DOMAIN);
        w.u64(self.client.0);
        w.u64(self.seq.0);
        w.bool(self.read_only);
        w.bytes(&self.op);
        w.0
    }

    /// Whether the client's tag is valid.
    #[must_use]
    pub fn verify(&self, auth: &dyn Authenticator) -> bool {
        auth.verify(
            Principal::Client(self.client),
            &self.signing_payload(),
            &self.tag,
        )
    }

    fn encoded_len(&self) -> usize {
        8 + 8 + 1 + 4 + self.op.len() + AUTH_TAG_LEN
    }
}

/// A batch of requests with the leader-proposed execution timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// Leader's clock when it cut the batch; never decreases along the decided sequence.
    pub timestamp: Timestamp,
    /// The requests, at most `batch_requests_max`, at most `batch_bytes_max` encoded.
    pub requests: Vec<Request>,
}

impl Batch {
    /// The batch hash that WRITE and ACCEPT vote on.
    #[must_use]
    pub fn digest(&self) -> Digest {
        let mut w = Writer::default();
        w.batch(self);
        Digest::of("rampart-bft batch v1", &[&w.0])
    }

    /// Sum of encoded request sizes (what `batch_bytes_max` limits).
    #[must_use]
    pub fn requests_bytes(&self) -> usize {
        self.requests.iter().map(Request::encoded_len).sum()
    }

    /// Encoded size of one request, as counted by [`Batch::requests_bytes`].
    #[must_use]
    pub fn request_bytes(r: &Request) -> usize {
        r.encoded_len()
    }
}

/// Which vote a certificate collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteKind {
    /// WRITE votes: a write certificate shows the value may have been decided.
    Write,
    /// ACCEPT votes: an accept certificate proves the value was decided.
    Accept,
}

/// One replica's vote tag inside a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    /// Voter.
    pub signer: ReplicaId,
    /// Its tag on the WRITE/ACCEPT message.
    pub tag: AuthTag,
}

/// A quorum of WRITE or ACCEPT votes for `(regency, cid, digest)`: a transferable proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// WRITE or ACCEPT.
    pub kind: VoteKind,
    /// Regency of the votes.
    pub regency: Regency,
    /// Consensus instance.
    pub cid: SeqNo,
    /// Batch digest voted for.
    pub digest: Digest,
    /// Votes, sorted by signer, no duplicates.
    pub votes: Vec<Vote>,
}

impl Certificate {
    /// Whether this holds `config.quorum()` valid votes from distinct replicas.
    #[must_use]
    pub fn verify(&self, config: &Config, auth: &dyn Authenticator) -> bool {
        if self.votes.len() < config.quorum() {
            return false;
        }
        let body = match self.kind {
            VoteKind::Write => ReplicaBody::Write {
                regency: self.regency,
                cid: self.cid,
                digest: self.digest,
            },
            VoteKind::Accept => ReplicaBody::Accept {
                regency: self.regency,
                cid: self.cid,
                digest: self.digest,
            },
        };
        let payload = body.signing_payload();
        let mut last: Option<ReplicaId> = None;
        for v in &self.votes {
            if last.is_some_and(|l| l >= v.signer) || usize::from(v.signer.0) >= config.replicas {
                return false;
            }
            last = Some(v.signer);
            if !auth.verify(Principal::Replica(v.signer), &payload, &v.tag) {
                return false;
            }
        }
        true
    }
}

/// A decided batch with its proof (an accept certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The batch.
    pub batch: Batch,
    /// Accept certificate whose digest is the batch's digest.
    pub proof: Certificate,
}

impl Decision {
    /// Instance number.
    #[must_use]
    pub fn cid(&self) -> SeqNo {
        self.proof.cid
    }

    /// Whether the proof is a valid accept certificate for this batch.
    #[must_use]
    pub fn verify(&self, config: &Config, auth: &dyn Authenticator) -> bool {
        self.proof.kind == VoteKind::Accept
            && self.proof.digest == self.batch.digest()
            && self.proof.verify(config, auth)
    }
}

/// What a replica tells the new leader when it enters a regency (BFT-SMaRt STOPDATA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopData {
    /// The regency being installed.
    pub regency: Regency,
    /// Accept certificate of this replica's last decided instance (`None` only at genesis).
    pub last_decided: Option<Certificate>,
    /// The highest-regency write certificate it holds for the next instance, with the batch.
    pub written: Option<(Certificate, Batch)>,
}

impl StopData {
    /// Last decided instance claimed (0 at genesis).
    #[must_use]
    pub fn last_cid(&self) -> SeqNo {
        self.last_decided.as_ref().map_or(SeqNo(0), |c| c.cid)
    }
}

/// The new leader's certified choice for the first instance of its regency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sync {
    /// The regency.
    pub regency: Regency,
    /// The instance the choice is for: one above the highest proven decided instance.
    pub cid: SeqNo,
    /// The chosen batch.
    pub batch: Batch,
    /// A quorum of signed STOPDATA messages for `regency` (each a [`SignedMessage`] whose
    /// body is [`ReplicaBody::StopData`]), from distinct replicas.
    pub proofs: Vec<SignedMessage>,
}

/// Bodies of replica-signed messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicaBody {
    /// Reply to a client.
    Reply {
        /// Client.
        client: ClientId,
        /// The request's sequence number.
        seq: RequestSeq,
        /// Whether it answers a read-only (unordered) request.
        read_only: bool,
        /// Application result.
        result: Vec<u8>,
    },
    /// Leader proposes a batch for an instance.
    Propose {
        /// Regency.
        regency: Regency,
        /// Instance.
        cid: SeqNo,
        /// The batch.
        batch: Batch,
    },
    /// A replica saw a valid proposal with this digest.
    Write {
        /// Regency.
        regency: Regency,
        /// Instance.
        cid: SeqNo,
        /// Batch digest.
        digest: Digest,
    },
    /// A replica saw a write quorum for this digest.
    Accept {
        /// Regency.
        regency: Regency,
        /// Instance.
        cid: SeqNo,
        /// Batch digest.
        digest: Digest,
    },
    /// A replica wants to leave its regency for `regency`.
    Stop {
        /// The regency asked for.
        regency: Regency,
    },
    /// Sent to the new leader on installing a regency.
    StopData(StopData),
    /// The new leader's certified choice.
    Sync(Sync),
    /// Catch-up: send me decisions from `from_cid` on.
    Fetch {
        /// First instance wanted.
        from_cid: SeqNo,
    },
    /// Catch-up answer.
    Decisions {
        /// Consecutive decisions, each with its proof.
        decisions: Vec<Decision>,
        /// Set when the asked-for instances are only in a checkpoint: do state transfer.
        checkpoint: Option<SeqNo>,
        /// The SYNC that installed the sender's current regency, if it is above 0.
        regency_proof: Option<Box<SignedMessage>>,
    },
    /// State transfer: tell me your checkpoints.
    StateRequest,
    /// The checkpoints this replica can serve: `(cid, digest, chunk count)`.
    StateDigests {
        /// Up to two checkpoints.
        checkpoints: Vec<(SeqNo, Digest, u32)>,
    },
    /// State transfer: send me chunk `index` of checkpoint `cid`.
    ChunkRequest {
        /// Checkpoint.
        cid: SeqNo,
        /// Chunk index.
        index: u32,
    },
    /// One chunk of an encoded checkpoint.
    Chunk {
        /// Checkpoint.
        cid: SeqNo,
        /// Chunk index.
        index: u32,
        /// Total chunks.
        total: u32,
        /// Bytes.
        data: Vec<u8>,
        /// The accept certificate of instance `cid` (the checkpoint's proof of decision,
        /// which the installing replica reports in its STOPDATA; ADR 0101).
        proof: Certificate,
    },
}

impl ReplicaBody {
    fn kind(&self) -> u8 {
        match self {
            ReplicaBody::Reply { .. } => 1,
            ReplicaBody::Propose { .. } => 2,
            ReplicaBody::Write { .. } => 3,
            ReplicaBody::Accept { .. } => 4,
            ReplicaBody::Stop { .. } => 5,
            ReplicaBody::StopData(_) => 6,
            ReplicaBody::Sync(_) => 7,
            ReplicaBody::Fetch { .. } => 8,
            ReplicaBody::Decisions { .. } => 9,
            ReplicaBody::StateRequest => 10,
            ReplicaBody::StateDigests { .. } => 11,
            ReplicaBody::ChunkRequest { .. } => 12,
            ReplicaBody::Chunk { .. } => 13,
        }
    }

    /// Bytes covered by the sender's tag: domain, kind, body.
    #[must_use]
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes_raw(SIGN_DOMAIN);
        w.u8(self.kind());
        w.body(self);
        w.0
    }
}

/// A replica-signed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedMessage {
    /// Signer (must also be the transport-level sender).
    pub from: ReplicaId,
    /// Content.
    pub body: ReplicaBody,
    /// `from`'s tag over [`ReplicaBody::signing_payload`].
    pub tag: AuthTag,
}

impl SignedMessage {
    /// Sign `body` as `from`.
    #[must_use]
    pub fn new(auth: &dyn Authenticator, from: ReplicaId, body: ReplicaBody) -> SignedMessage {
        let tag = auth.sign(&body.signing_payload());
        SignedMessage { from, body, tag }
    }

    /// Whether the tag is `from`'s.
    #[must_use]
    pub fn verify(&self, auth: &dyn Authenticator) -> bool {
        auth.verify(
            Principal::Replica(self.from),
            &self.body.signing_payload(),
            &self.tag,
        )
    }
}

/// Anything on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Client → replica.
    Request(Request),
    /// Replica → replica or replica → client.
    Replica(SignedMessage),
}

/// Decoder limits, derived from a [`Config`] so both sides agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    /// n.
    pub replicas: usize,
    /// Requests per batch.
    pub batch_requests_max: usize,
    /// Encoded request bytes per batch.
    pub batch_bytes_max: usize,
    /// Bytes per client op.
    pub request_op_bytes_max: usize,
    /// Bytes per reply result.
    pub reply_bytes_max: usize,
    /// Bytes per state chunk.
    pub state_chunk_bytes_max: usize,
    /// Decisions per catch-up message.
    pub decisions_per_fetch_max: usize,
}

impl WireLimits {
    /// The limits implied by `config`.
    #[must_use]
    pub fn from_config(config: &Config) -> WireLimits {
        WireLimits {
            replicas: config.replicas,
            batch_requests_max: config.batch_requests_max,
            batch_bytes_max: config.batch_bytes_max,
            request_op_bytes_max: config.request_op_bytes_max,
            reply_bytes_max: config.reply_bytes_max,
            state_chunk_bytes_max: config.state_chunk_bytes_max,
            decisions_per_fetch_max: config.decisions_per_fetch_max,
        }
    }

    fn batch_encoded_max(&self) -> usize {
        8 + 4 + self.batch_bytes_max
    }

    fn cert_encoded_max(&self) -> usize {
        1 + 8 + 8 + 32 + 4 + self.replicas * (1 + AUTH_TAG_LEN)
    }

    fn stopdata_encoded_max(&self) -> usize {
        8 + 2 + 2 * self.cert_encoded_max() + self.batch_encoded_max()
    }

    fn sync_encoded_max(&self) -> usize {
        8 + 8
            + self.batch_encoded_max()
            + 4
            + self.replicas * (2 + AUTH_TAG_LEN + self.stopdata_encoded_max())
    }

    /// Largest encoded message: a catch-up reply with the most decisions and a SYNC proof.
    /// This is also the worst-case size of one buffered inbound message.
    #[must_use]
    pub fn message_bytes_max(&self) -> usize {
        let decision = self.batch_encoded_max() + self.cert_encoded_max();
        let decisions = 4 + self.decisions_per_fetch_max * decision + 10;
        let signed = 1 + 1 + 1 + AUTH_TAG_LEN;
        let sync = self.sync_encoded_max() + signed;
        let chunk = 8 + 12 + self.state_chunk_bytes_max + self.cert_encoded_max();
        let reply = 8 + 8 + 1 + 4 + self.reply_bytes_max;
        signed
            + (decisions + sync)
                .max(chunk)
                .max(reply)
                .max(self.stopdata_encoded_max())
    }

    /// Largest encoded client request message (version, tag, request with the largest
    /// op). What a client connection may carry: the transport's per-client frame limit.
    #[must_use]
    pub fn request_message_bytes_max(&self) -> usize {
        1 + 1 + 8 + 8 + 1 + 4 + self.request_op_bytes_max + AUTH_TAG_LEN
    }

    /// Largest encoded reply message (version, tag, signer, kind, reply with the largest
    /// result, tag). What a replica sends a client: the client's per-replica frame limit.
    #[must_use]
    pub fn reply_message_bytes_max(&self) -> usize {
        1 + 1 + 1 + 1 + 8 + 8 + 1 + 4 + self.reply_bytes_max + AUTH_TAG_LEN
    }
}

/// Why bytes were rejected. Produced only for hostile or corrupt input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Input ended early.
    #[error("truncated input")]
    Truncated,
    /// A length or count is above its limit.
    #[error("{field}: {len} exceeds limit {max}")]
    TooLarge {
        /// What was too large.
        field: &'static str,
        /// Claimed length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Unknown version byte.
    #[error("unknown wire version {version}")]
    Version {
        /// The byte seen.
        version: u8,
    },
    /// Unknown message or enum tag.
    #[error("unknown {field} tag {tag}")]
    Tag {
        /// Which enum.
        field: &'static str,
        /// The byte seen.
        tag: u8,
    },
    /// Bytes after the message.
    #[error("{extra} trailing bytes")]
    Trailing {
        /// How many.
        extra: usize,
    },
    /// A nested message of the wrong kind (e.g. a SYNC proof that is not a STOPDATA).
    #[error("nested message of the wrong kind in {field}")]
    NestedKind {
        /// Where.
        field: &'static str,
    },
}

impl Message {
    /// Canonical encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(WIRE_VERSION);
        match self {
            Message::Request(r) => {
                w.u8(0);
                w.request(r);
            }
            Message::Replica(m) => {
                w.u8(1);
                w.signed(m);
            }
        }
        w.0
    }

    /// Strict decoding of hostile bytes. Never panics; allocates at most `bytes.len()`.
    pub fn decode(bytes: &[u8], limits: &WireLimits) -> Result<Message, DecodeError> {
        let max = limits.message_bytes_max();
        if bytes.len() > max {
            return Err(DecodeError::TooLarge {
                field: "message",
                len: bytes.len(),
                max,
            });
        }
        let mut r = Reader::versioned(bytes, limits)?;
        let msg = match r.u8()? {
            0 => Message::Request(r.request()?),
            1 => Message::Replica(r.signed(true)?),
            tag => {
                return Err(DecodeError::Tag {
                    field: "message",
                    tag,
                });
            }
        };
        let extra = bytes.len() - r.pos;
        if extra != 0 {
            return Err(DecodeError::Trailing { extra });
        }
        Ok(msg)
    }
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        // Lengths are bounded by limits far below u32::MAX (asserted in Config::check).
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn bytes_raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    fn digest(&mut self, d: &Digest) {
        self.0.extend_from_slice(&d.0);
    }
    fn tag(&mut self, t: &AuthTag) {
        self.0.extend_from_slice(&t.0);
    }
    fn request(&mut self, r: &Request) {
        self.u64(r.client.0);
        self.u64(r.seq.0);
        self.bool(r.read_only);
        self.bytes(&r.op);
        self.tag(&r.tag);
    }
    fn batch(&mut self, b: &Batch) {
        self.u64(b.timestamp.0);
        self.len(b.requests.len());
        for r in &b.requests {
            self.request(r);
        }
    }
    fn cert(&mut self, c: &Certificate) {
        self.u8(match c.kind {
            VoteKind::Write => 0,
            VoteKind::Accept => 1,
        });
        self.u64(c.regency.0);
        self.u64(c.cid.0);
        self.digest(&c.digest);
        self.len(c.votes.len());
        for v in &c.votes {
            self.u8(v.signer.0);
            self.tag(&v.tag);
        }
    }
    fn opt_cert(&mut self, c: Option<&Certificate>) {
        match c {
            None => self.u8(0),
            Some(c) => {
                self.u8(1);
                self.cert(c);
            }
        }
    }
    fn signed(&mut self, m: &SignedMessage) {
        self.u8(m.from.0);
        self.u8(m.body.kind());
        self.body(&m.body);
        self.tag(&m.tag);
    }
    fn body(&mut self, b: &ReplicaBody) {
        match b {
            ReplicaBody::Reply {
                client,
                seq,
                read_only,
                result,
            } => {
                self.u64(client.0);
                self.u64(seq.0);
                self.bool(*read_only);
                self.bytes(result);
            }
            ReplicaBody::Propose {
                regency,
                cid,
                batch,
            } => {
                self.u64(regency.0);
                self.u64(cid.0);
                self.batch(batch);
            }
            ReplicaBody::Write {
                regency,
                cid,
                digest,
            }
            | ReplicaBody::Accept {
                regency,
                cid,
                digest,
            } => {
                self.u64(regency.0);
                self.u64(cid.0);
                self.digest(digest);
            }
            ReplicaBody::Stop { regency } => self.u64(regency.0),
            ReplicaBody::StopData(sd) => {
                self.u64(sd.regency.0);
                self.opt_cert(sd.last_decided.as_ref());
                match &sd.written {
                    None => self.u8(0),
                    Some((c, b)) => {
                        self.u8(1);
                        self.cert(c);
                        self.batch(b);
                    }
                }
            }
            ReplicaBody::Sync(s) => {
                self.u64(s.regency.0);
                self.u64(s.cid.0);
                self.batch(&s.batch);
                self.len(s.proofs.len());
                for p in &s.proofs {
                    self.signed(p);
                }
            }
            ReplicaBody::Fetch { from_cid } => self.u64(from_cid.0),
            ReplicaBody::Decisions {
                decisions,
                checkpoint,
                regency_proof,
            } => {
                self.len(decisions.len());
                for d in decisions {
                    self.batch(&d.batch);
                    self.cert(&d.proof);
                }
                match checkpoint {
                    None => self.u8(0),
                    Some(c) => {
                        self.u8(1);
                        self.u64(c.0);
                    }
                }
                match regency_proof {
                    None => self.u8(0),
                    Some(p) => {
                        self.u8(1);
                        self.signed(p);
                    }
                }
            }
            ReplicaBody::StateRequest => {}
            ReplicaBody::StateDigests { checkpoints } => {
                self.len(checkpoints.len());
                for (cid, d, total) in checkpoints {
                    self.u64(cid.0);
                    self.digest(d);
                    self.u32(*total);
                }
            }
            ReplicaBody::ChunkRequest { cid, index } => {
                self.u64(cid.0);
                self.u32(*index);
            }
            ReplicaBody::Chunk {
                cid,
                index,
                total,
                data,
                proof,
            } => {
                self.u64(cid.0);
                self.u32(*index);
                self.u32(*total);
                self.bytes(data);
                self.cert(proof);
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a WireLimits,
}

impl<'a> Reader<'a> {
    /// A reader past the leading wire-version byte, which must be [`WIRE_VERSION`].
    fn versioned(buf: &'a [u8], limits: &'a WireLimits) -> Result<Self, DecodeError> {
        let mut r = Reader {
            buf,
            pos: 0,
            limits,
        };
        let version = r.u8()?;
        if version != WIRE_VERSION {
            return Err(DecodeError::Version { version });
        }
        Ok(r)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::Tag { field, tag }),
        }
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// A count or length, checked against `max` and against the remaining input, given
    /// that each element takes at least `elem_min` bytes.
    fn len(
        &mut self,
        field: &'static str,
        max: usize,
        elem_min: usize,
    ) -> Result<usize, DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLarge { field, len, max });
        }
        let remaining = self.buf.len() - self.pos;
        if len.saturating_mul(elem_min) > remaining {
            return Err(DecodeError::Truncated);
        }
        Ok(len)
    }
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        Ok(self.slice(field, max)?.to_vec())
    }
    /// Like [`Reader::bytes`], but borrowed from the input (no copy).
    fn slice(&mut self, field: &'static str, max: usize) -> Result<&[u8], DecodeError> {
        let len = self.len(field, max, 1)?;
        self.take(len)
    }
    fn digest(&mut self) -> Result<Digest, DecodeError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(Digest(a))
    }
    fn tag(&mut self) -> Result<AuthTag, DecodeError> {
        let mut a = [0u8; AUTH_TAG_LEN];
        a.copy_from_slice(self.take(AUTH_TAG_LEN)?);
        Ok(AuthTag(a))
    }
    fn replica(&mut self) -> Result<ReplicaId, DecodeError> {
        let r = self.u8()?;
        if usize::from(r) >= self.limits.replicas {
            return Err(DecodeError::TooLarge {
                field: "replica id",
                len: usize::from(r),
                max: self.limits.replicas,
            });
        }
        Ok(ReplicaId(r))
    }
    fn request(&mut self) -> Result<Request, DecodeError> {
        let client = ClientId(self.u64()?);
        let seq = RequestSeq(self.u64()?);
        let read_only = self.bool("read_only")?;
        let op = self.bytes("op", self.limits.request_op_bytes_max)?;
        let tag = self.tag()?;
        Ok(Request {
            client,
            seq,
            read_only,
            op,
            tag,
        })
    }
    fn batch(&mut self) -> Result<Batch, DecodeError> {
        let timestamp = Timestamp(self.u64()?);
        let count = self.len(
            "batch requests",
            self.limits.batch_requests_max,
            8 + 8 + 1 + 4 + 64,
        )?;
        let mut requests = Vec::with_capacity(count);
        let mut total = 0usize;
        for _ in 0..count {
            let r = self.request()?;
            total += r.encoded_len();
            if total > self.limits.batch_bytes_max {
                return Err(DecodeError::TooLarge {
                    field: "batch bytes",
                    len: total,
                    max: self.limits.batch_bytes_max,
                });
            }
            requests.push(r);
        }
        Ok(Batch {
            timestamp,
            requests,
        })
    }
    fn cert(&mut self) -> Result<Certificate, DecodeError> {
        let kind = match self.u8()? {
            0 => VoteKind::Write,
            1 => VoteKind::Accept,
            tag => {
                return Err(DecodeError::Tag {
                    field: "vote kind",
                    tag,
                });
            }
        };
        let regency = Regency(self.u64()?);
        let cid = SeqNo(self.u64()?);
        let digest = self.digest()?;
        let count = self.len("votes", self.limits.replicas, 1 + AUTH_TAG_LEN)?;
        let mut votes = Vec::with_capacity(count);
        for _ in 0..count {
            let signer = self.replica()?;
            let tag = self.tag()?;
            votes.push(Vote { signer, tag });
        }
        Ok(Certificate {
            kind,
            regency,
            cid,
            digest,
            votes,
        })
    }
    fn option(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        self.bool(field)
    }
    /// `top` allows the kinds that may nest other signed messages (SYNC, DECISIONS); nested
    /// messages are decoded with `top = false`, which bounds recursion depth to 2.
    fn signed(&mut self, top: bool) -> Result<SignedMessage, DecodeError> {
        let from = self.replica()?;
        let kind = self.u8()?;
        let body = match kind {
            1 => ReplicaBody::Reply {
                client: ClientId(self.u64()?),
                seq: RequestSeq(self.u64()?),
                read_only: self.bool("read_only")?,
                result: self.bytes("result", self.limits.reply_bytes_max)?,
            },
            2 => ReplicaBody::Propose {
                regency: Regency(self.u64()?),
                cid: SeqNo(self.u64()?),
                batch: self.batch()?,
            },
            3 => ReplicaBody::Write {
                regency: Regency(self.u64()?),
                cid: SeqNo(self.u64()?),
                digest: self.digest()?,
            },
            4 => ReplicaBody::Accept {
                regency: Regency(self.u64()?),
                cid: SeqNo(self.u64()?),
                digest: self.digest()?,
            },
            5 => ReplicaBody::Stop {
                regency: Regency(self.u64()?),
            },
            6 => {
                let regency = Regency(self.u64()?);
                let last_decided = if self.option("last_decided")? {
                    Some(self.cert()?)
                } else {
                    None
                };
                let written = if self.option("written")? {
                    Some((self.cert()?, self.batch()?))
                } else {
                    None
                };
                ReplicaBody::StopData(StopData {
                    regency,
                    last_decided,
                    written,
                })
            }
            7 if top => {
                let regency = Regency(self.u64()?);
                let cid = SeqNo(self.u64()?);
                let batch = self.batch()?;
                let count = self.len("sync proofs", self.limits.replicas, 2 + AUTH_TAG_LEN)?;
                let mut proofs = Vec::with_capacity(count);
                for _ in 0..count {
                    let p = self.signed(false)?;
                    if !matches!(p.body, ReplicaBody::StopData(_)) {
                        return Err(DecodeError::NestedKind {
                            field: "sync proofs",
                        });
                    }
                    proofs.push(p);
                }
                ReplicaBody::Sync(Sync {
                    regency,
                    cid,
                    batch,
                    proofs,
                })
            }
            8 => ReplicaBody::Fetch {
                from_cid: SeqNo(self.u64()?),
            },
            9 if top => {
                let count = self.len("decisions", self.limits.decisions_per_fetch_max, 12)?;
                let mut decisions = Vec::with_capacity(count);
                for _ in 0..count {
                    let batch = self.batch()?;
                    let proof = self.cert()?;
                    decisions.push(Decision { batch, proof });
                }
                let checkpoint = if self.option("checkpoint")? {
                    Some(SeqNo(self.u64()?))
                } else {
                    None
                };
                let regency_proof = if self.option("regency_proof")? {
                    // A SYNC nests STOPDATAs: decode it as a top-level message but reject
                    // anything that is not a SYNC, so depth stays bounded.
                    let from = self.replica()?;
                    if self.u8()? != 7 {
                        return Err(DecodeError::NestedKind {
                            field: "regency proof",
                        });
                    }
                    self.pos -= 2;
                    let _ = from;
                    let p = self.signed_sync()?;
                    Some(Box::new(p))
                } else {
                    None
                };
                ReplicaBody::Decisions {
                    decisions,
                    checkpoint,
                    regency_proof,
                }
            }
            10 => ReplicaBody::StateRequest,
            11 => {
                let count = self.len("checkpoints", 2, 8 + 32 + 4)?;
                let mut checkpoints = Vec::with_capacity(count);
                for _ in 0..count {
                    checkpoints.push((SeqNo(self.u64()?), self.digest()?, self.u32()?));
                }
                ReplicaBody::StateDigests { checkpoints }
            }
            12 => ReplicaBody::ChunkRequest {
                cid: SeqNo(self.u64()?),
                index: self.u32()?,
            },
            13 => ReplicaBody::Chunk {
                cid: SeqNo(self.u64()?),
                index: self.u32()?,
                total: self.u32()?,
                data: self.bytes("chunk", self.limits.state_chunk_bytes_max)?,
                proof: self.cert()?,
            },
            tag => {
                return Err(DecodeError::Tag {
                    field: "replica message",
                    tag,
                });
            }
        };
        let tag = self.tag()?;
        Ok(SignedMessage { from, body, tag })
    }

    /// A signed SYNC nested in a DECISIONS message: its own proofs nest one level more.
    fn signed_sync(&mut self) -> Result<SignedMessage, DecodeError> {
        let from = self.replica()?;
        let _kind = self.u8()?;
        let regency = Regency(self.u64()?);
        let cid = SeqNo(self.u64()?);
        let batch = self.batch()?;
        let count = self.len("sync proofs", self.limits.replicas, 2 + AUTH_TAG_LEN)?;
        let mut proofs = Vec::with_capacity(count);
        for _ in 0..count {
            let p = self.signed(false)?;
            if !matches!(p.body, ReplicaBody::StopData(_)) {
                return Err(DecodeError::NestedKind {
                    field: "sync proofs",
                });
            }
            proofs.push(p);
        }
        let tag = self.tag()?;
        Ok(SignedMessage {
            from,
            body: ReplicaBody::Sync(Sync {
                regency,
                cid,
                batch,
                proofs,
            }),
            tag,
        })
    }
}

impl PersistEntry {
    /// Canonical durable encoding (for a disk [`crate::Storage`]; the core never writes it).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(WIRE_VERSION);
        match self {
            PersistEntry::Decision(d) => {
                w.u8(0);
                w.batch(&d.batch);
                w.cert(&d.proof);
            }
            PersistEntry::Vote(v) => {
                w.u8(1);
                w.u64(v.cid.0);
                for rd in [&v.wrote, &v.accepted] {
                    match rd {
                        None => w.u8(0),
                        Some((r, d)) => {
                            w.u8(1);
                            w.u64(r.0);
                            w.digest(d);
                        }
                    }
                }
                match &v.written {
                    None => w.u8(0),
                    Some((c, b)) => {
                        w.u8(1);
                        w.cert(c);
                        w.batch(b);
                    }
                }
            }
            PersistEntry::Regency(r) => {
                w.u8(2);
                w.u64(r.regency.0);
                w.u64(r.stop_target.0);
            }
            PersistEntry::Checkpoint(c) => {
                let (head, tail) = PersistEntry::checkpoint_encoding(c);
                w.bytes_raw(&head[1..]);
                w.bytes_raw(&c.blob);
                w.bytes_raw(&tail);
            }
            PersistEntry::TruncateLog { through } => {
                w.u8(4);
                w.u64(through.0);
            }
        }
        w.0
    }

    /// Strict decoding with the limits of `config` (stored bytes are checked like network
    /// bytes: a corrupt disk must not make the replica allocate without bound or panic).
    pub fn decode(bytes: &[u8], config: &Config) -> Result<PersistEntry, DecodeError> {
        let limits = WireLimits::from_config(config);
        let mut r = Reader::versioned(bytes, &limits)?;
        let entry = match r.u8()? {
            0 => {
                let batch = r.batch()?;
                let proof = r.cert()?;
                PersistEntry::Decision(Decision { batch, proof })
            }
            1 => {
                let cid = SeqNo(r.u64()?);
                let pair = |r: &mut Reader<'_>| -> Result<Option<(Regency, Digest)>, DecodeError> {
                    if r.option("vote")? {
                        Ok(Some((Regency(r.u64()?), r.digest()?)))
                    } else {
                        Ok(None)
                    }
                };
                let wrote = pair(&mut r)?;
                let accepted = pair(&mut r)?;
                let written = if r.option("written")? {
                    Some((r.cert()?, r.batch()?))
                } else {
                    None
                };
                PersistEntry::Vote(VoteRecord {
                    cid,
                    wrote,
                    accepted,
                    written,
                })
            }
            2 => PersistEntry::Regency(RegencyRecord {
                regency: Regency(r.u64()?),
                stop_target: Regency(r.u64()?),
            }),
            3 => PersistEntry::Checkpoint(CheckpointRecord {
                cid: SeqNo(r.u64()?),
                digest: r.digest()?,
                blob: std::sync::Arc::new(
                    r.bytes("checkpoint", checkpoint_blob_bytes_max(config))?,
                ),
                proof: r.cert()?,
            }),
            4 => PersistEntry::TruncateLog {
                through: SeqNo(r.u64()?),
            },
            tag => {
                return Err(DecodeError::Tag {
                    field: "persist entry",
                    tag,
                });
            }
        };
        let extra = bytes.len() - r.pos;
        if extra != 0 {
            return Err(DecodeError::Trailing { extra });
        }
        Ok(entry)
    }
}

mod checkpoint;
pub use checkpoint::{CheckpointState, CheckpointView, checkpoint_blob_bytes_max};

#[cfg(test)]
mod tests;
