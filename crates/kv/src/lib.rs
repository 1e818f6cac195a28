//! The replicated key-value service (KV-SMR): a deterministic [`Application`] for the
//! `rampart-bft` core, and the codec of its operations and results.
//!
//! # Operations
//!
//! One BFT request carries a [`KvRequest`]: up to [`OPS_PER_REQUEST_MAX`] operations
//! (get, put, delete, compare-and-swap, prefix scan with a limit). A client process batches
//! the operations of many logical clients into one signed request, so that signature and
//! consensus costs are paid once per request, not once per operation. The replica executes
//! the operations of a request in order, atomically with respect to other requests; each
//! operation therefore linearizes at its request's execution point.
//!
//! # Limits (all enforced when decoding, before allocation)
//!
//! | limit | value |
//! |---|---|
//! | key | [`KEY_BYTES_MAX`] |
//! | value | [`VALUE_BYTES_MAX`] |
//! | operations per request | [`OPS_PER_REQUEST_MAX`] |
//! | entries per scan | [`SCAN_LIMIT_MAX`] |
//! | result bytes per request | [`REPLY_BUDGET_BYTES`] |
//! | whole state (snapshot bytes) | `Config::state_bytes_max` ([`KvApp::state_bytes_max`]); writes beyond it get [`KvError::StateFull`] |
//!
//! Results that would exceed the reply budget are answered with
//! [`KvResult::Error`]`(`[`KvError::ReplyBudget`]`)` (reads only; the client retries them in a
//! later request) or, for scans, cut short with `more = true`. An undecodable request (a
//! Byzantine or buggy client) gets one deterministic [`KvError::Malformed`] result on every
//! replica and changes nothing.
//!
//! # Invariants
//!
//! Execution is a pure function of the state and the ordered operations: no clock, no
//! randomness. `snapshot`/`restore` round-trip exactly, and the snapshot encoding is
//! canonical (sorted keys), so correct replicas produce identical checkpoints.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use rampart_bft::{Application, BatchContext, Digest, RestoreError};

/// Largest key.
pub const KEY_BYTES_MAX: usize = 1024;
/// Largest value.
pub const VALUE_BYTES_MAX: usize = 64 << 10;
/// Operations in one request.
pub const OPS_PER_REQUEST_MAX: usize = 1024;
/// Entries one scan returns at most.
pub const SCAN_LIMIT_MAX: u32 = 1000;
/// Bytes of encoded results per request. Worst case of one reply: this plus one value, a
/// key and framing, which stays below [`REQUEST_BYTES_MAX`] (what the cluster configures as
/// the core's reply limit).
pub const REPLY_BUDGET_BYTES: usize = 256 << 10;
/// Largest encoded [`KvRequest`] and [`KvReply`]; the cluster configures the core's
/// `request_op_bytes_max` and `reply_bytes_max` to this.
pub const REQUEST_BYTES_MAX: usize = 512 << 10;
/// Codec version byte.
pub const KV_VERSION: u8 = 1;

const _: () =
    assert!(REPLY_BUDGET_BYTES + VALUE_BYTES_MAX + KEY_BYTES_MAX + 64 < REQUEST_BYTES_MAX);
const _: () = assert!(VALUE_BYTES_MAX + KEY_BYTES_MAX + 64 < REQUEST_BYTES_MAX);

/// One KV operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Read a key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Write a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Write `new` if the current value equals `expected` (`None`: the key is absent).
    Cas {
        /// The key.
        key: Vec<u8>,
        /// Expected current value.
        expected: Option<Vec<u8>>,
        /// New value.
        new: Vec<u8>,
    },
    /// Up to `limit` entries whose key starts with `prefix`, in key order.
    Scan {
        /// Key prefix.
        prefix: Vec<u8>,
        /// Entries at most (≤ [`SCAN_LIMIT_MAX`]).
        limit: u32,
    },
}

impl KvOp {
    /// Whether the operation leaves the state unchanged (may use the read-only path).
    #[must_use]
    pub fn is_read(&self) -> bool {
        matches!(self, KvOp::Get { .. } | KvOp::Scan { .. })
    }

    /// Checks the limits; the client calls this before sending.
    pub fn check(&self) -> Result<(), KvError> {
        let (key, value) = match self {
            KvOp::Get { key } | KvOp::Delete { key } => (key, None),
            KvOp::Put { key, value } => (key, Some(value)),
            KvOp::Cas { key, expected, new } => {
                if expected.as_ref().is_some_and(|e| e.len() > VALUE_BYTES_MAX) {
                    return Err(KvError::ValueTooLarge);
                }
                (key, Some(new))
            }
            KvOp::Scan { prefix, limit } => {
                if *limit > SCAN_LIMIT_MAX {
                    return Err(KvError::ScanLimit);
                }
                (prefix, None)
            }
        };
        if key.len() > KEY_BYTES_MAX {
            return Err(KvError::KeyTooLarge);
        }
        if value.is_some_and(|v| v.len() > VALUE_BYTES_MAX) {
            return Err(KvError::ValueTooLarge);
        }
        Ok(())
    }

    /// Bytes this operation adds to an encoded request.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        let opt = |v: &Option<Vec<u8>>| 1 + v.as_ref().map_or(0, |v| 4 + v.len());
        1 + match self {
            KvOp::Get { key } | KvOp::Delete { key } => 2 + key.len(),
            KvOp::Put { key, value } => 2 + key.len() + 4 + value.len(),
            KvOp::Cas { key, expected, new } => 2 + key.len() + opt(expected) + 4 + new.len(),
            KvOp::Scan { prefix, .. } => 2 + prefix.len() + 4,
        }
    }

    fn encode_into(&self, w: &mut Vec<u8>) {
        match self {
            KvOp::Get { key } => {
                w.push(0);
                put_key(w, key);
            }
            KvOp::Put { key, value } => {
                w.push(1);
                put_key(w, key);
                put_value(w, value);
            }
            KvOp::Delete { key } => {
                w.push(2);
                put_key(w, key);
            }
            KvOp::Cas { key, expected, new } => {
                w.push(3);
                put_key(w, key);
                put_opt_value(w, expected.as_deref());
                put_value(w, new);
            }
            KvOp::Scan { prefix, limit } => {
                w.push(4);
                put_key(w, prefix);
                w.extend_from_slice(&limit.to_le_bytes());
            }
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<KvOp, KvError> {
        let op = match r.u8()? {
            0 => KvOp::Get { key: r.key()? },
            1 => KvOp::Put {
                key: r.key()?,
                value: r.value()?,
            },
            2 => KvOp::Delete { key: r.key()? },
            3 => KvOp::Cas {
                key: r.key()?,
                expected: r.opt_value()?,
                new: r.value()?,
            },
            4 => {
                let prefix = r.key()?;
                let limit = r.u32()?;
                if limit > SCAN_LIMIT_MAX {
                    return Err(KvError::ScanLimit);
                }
                KvOp::Scan { prefix, limit }
            }
            _ => return Err(KvError::Malformed),
        };
        Ok(op)
    }
}

/// Why an operation failed. Deterministic: every correct replica returns the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The request did not decode (a buggy or Byzantine client).
    #[error("malformed request")]
    Malformed,
    /// A key is longer than [`KEY_BYTES_MAX`].
    #[error("key longer than {KEY_BYTES_MAX} bytes")]
    KeyTooLarge,
    /// A value is longer than [`VALUE_BYTES_MAX`].
    #[error("value longer than {VALUE_BYTES_MAX} bytes")]
    ValueTooLarge,
    /// A scan limit above [`SCAN_LIMIT_MAX`].
    #[error("scan limit above {SCAN_LIMIT_MAX}")]
    ScanLimit,
    /// The request's results would exceed [`REPLY_BUDGET_BYTES`]; retry the read alone.
    #[error("reply budget exhausted")]
    ReplyBudget,
    /// The write would grow the state's snapshot beyond the bound derived from the
    /// checkpoint limit ([`KvApp::state_bytes_max`]); nothing was written. Deterministic:
    /// every correct replica has the same state and bound, so all refuse the same write.
    #[error("state full: the write would exceed the checkpoint limit")]
    StateFull,
}

impl KvError {
    fn code(self) -> u8 {
        match self {
            KvError::Malformed => 0,
            KvError::KeyTooLarge => 1,
            KvError::ValueTooLarge => 2,
            KvError::ScanLimit => 3,
            KvError::ReplyBudget => 4,
            KvError::StateFull => 5,
        }
    }

    fn from_code(c: u8) -> Result<KvError, KvError> {
        Ok(match c {
            0 => KvError::Malformed,
            1 => KvError::KeyTooLarge,
            2 => KvError::ValueTooLarge,
            3 => KvError::ScanLimit,
            4 => KvError::ReplyBudget,
            5 => KvError::StateFull,
            _ => return Err(KvError::Malformed),
        })
    }
}

/// The result of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvResult {
    /// Value of a get (`None`: absent).
    Value(Option<Vec<u8>>),
    /// A put was applied.
    Written,
    /// A delete was applied; whether the key existed.
    Deleted(bool),
    /// Outcome of a compare-and-swap, with the value found (before the swap).
    Cas {
        /// Whether the new value was written.
        swapped: bool,
        /// The value found.
        current: Option<Vec<u8>>,
    },
    /// Entries of a scan, in key order; `more` if the limit or the reply budget cut it.
    Entries {
        /// `(key, value)` pairs.
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        /// More entries match.
        more: bool,
    },
    /// The operation was refused.
    Error(KvError),
}

impl KvResult {
    fn encode_into(&self, w: &mut Vec<u8>) {
        match self {
            KvResult::Value(v) => {
                w.push(0);
                put_opt_value(w, v.as_deref());
            }
            KvResult::Written => w.push(1),
            KvResult::Deleted(b) => {
                w.push(2);
                w.push(u8::from(*b));
            }
            KvResult::Cas { swapped, current } => {
                w.push(3);
                w.push(u8::from(*swapped));
                put_opt_value(w, current.as_deref());
            }
            KvResult::Entries { entries, more } => {
                w.push(4);
                w.push(u8::from(*more));
                w.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for (k, v) in entries {
                    put_key(w, k);
                    put_value(w, v);
                }
            }
            KvResult::Error(e) => {
                w.push(5);
                w.push(e.code());
            }
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<KvResult, KvError> {
        Ok(match r.u8()? {
            0 => KvResult::Value(r.opt_value()?),
            1 => KvResult::Written,
            2 => KvResult::Deleted(r.bool()?),
            3 => KvResult::Cas {
                swapped: r.bool()?,
                current: r.opt_value()?,
            },
            4 => {
                let more = r.bool()?;
                let n = r.count(SCAN_LIMIT_MAX as usize, 6)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push((r.key()?, r.value()?));
                }
                KvResult::Entries { entries, more }
            }
            5 => KvResult::Error(KvError::from_code(r.u8()?)?),
            _ => return Err(KvError::Malformed),
        })
    }
}

/// The operations of one BFT request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvRequest {
    /// In execution order.
    pub ops: Vec<KvOp>,
}

impl KvRequest {
    /// Encoding: version, count (u32), operations.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(5 + self.ops.len() * 16);
        w.push(KV_VERSION);
        w.extend_from_slice(&(self.ops.len() as u32).to_le_bytes());
        for op in &self.ops {
            op.encode_into(&mut w);
        }
        w
    }

    /// Strict decoding of hostile bytes: limits checked before allocation, no trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<KvRequest, KvError> {
        if bytes.len() > REQUEST_BYTES_MAX {
            return Err(KvError::Malformed);
        }
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.u8()? != KV_VERSION {
            return Err(KvError::Malformed);
        }
        let n = r.count(OPS_PER_REQUEST_MAX, 3)?;
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            ops.push(KvOp::decode_from(&mut r)?);
        }
        r.finish()?;
        Ok(KvRequest { ops })
    }

    /// Whether every operation is a read.
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.ops.iter().all(KvOp::is_read)
    }
}

/// The results of one BFT request, one per operation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvReply {
    /// In operation order.
    pub results: Vec<KvResult>,
}

impl KvReply {
    /// Encoding: version, count (u32), results.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(5 + self.results.len() * 4);
        w.push(KV_VERSION);
        w.extend_from_slice(&(self.results.len() as u32).to_le_bytes());
        for r in &self.results {
            r.encode_into(&mut w);
        }
        w
    }

    /// Strict decoding (replies come from possibly Byzantine replicas; the client compares
    /// f+1 of them byte for byte before it decodes one).
    pub fn decode(bytes: &[u8]) -> Result<KvReply, KvError> {
        if bytes.len() > REQUEST_BYTES_MAX {
            return Err(KvError::Malformed);
        }
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.u8()? != KV_VERSION {
            return Err(KvError::Malformed);
        }
        let n = r.count(OPS_PER_REQUEST_MAX, 1)?;
        let mut results = Vec::with_capacity(n);
        for _ in 0..n {
            results.push(KvResult::decode_from(&mut r)?);
        }
        r.finish()?;
        Ok(KvReply { results })
    }
}

fn put_key(w: &mut Vec<u8>, k: &[u8]) {
    w.extend_from_slice(&(k.len() as u16).to_le_bytes());
    w.extend_from_slice(k);
}

fn put_value(w: &mut Vec<u8>, v: &[u8]) {
    w.extend_from_slice(&(v.len() as u32).to_le_bytes());
    w.extend_from_slice(v);
}

fn put_opt_value(w: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => w.push(0),
        Some(v) => {
            w.push(1);
            put_value(w, v);
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], KvError> {
        let end = self.pos.checked_add(n).ok_or(KvError::Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(KvError::Malformed)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, KvError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, KvError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(KvError::Malformed),
        }
    }
    fn u32(&mut self) -> Result<u32, KvError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn count(&mut self, max: usize, elem_min: usize) -> Result<usize, KvError> {
        let n = self.u32()? as usize;
        if n > max || n.saturating_mul(elem_min) > self.buf.len() - self.pos {
            return Err(KvError::Malformed);
        }
        Ok(n)
    }
    fn key(&mut self) -> Result<Vec<u8>, KvError> {
        let mut a = [0u8; 2];
        a.copy_from_slice(self.take(2)?);
        let n = usize::from(u16::from_le_bytes(a));
        if n > KEY_BYTES_MAX {
            return Err(KvError::KeyTooLarge);
        }
        Ok(self.take(n)?.to_vec())
    }
    fn value(&mut self) -> Result<Vec<u8>, KvError> {
        let n = self.u32()? as usize;
        if n > VALUE_BYTES_MAX {
            return Err(KvError::ValueTooLarge);
        }
        Ok(self.take(n)?.to_vec())
    }
    fn opt_value(&mut self) -> Result<Option<Vec<u8>>, KvError> {
        if self.bool()? {
            Ok(Some(self.value()?))
        } else {
            Ok(None)
        }
    }
    fn finish(&self) -> Result<(), KvError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(KvError::Malformed)
        }
    }
}

/// Bytes of an empty snapshot: version and entry count.
const SNAPSHOT_HEADER_BYTES: usize = 1 + 8;

/// Bytes one entry adds to the snapshot: key length, key, value length, value.
fn entry_bytes(key: &[u8], value: &[u8]) -> usize {
    2 + key.len() + 4 + value.len()
}

/// The replicated map. Also the sequential model of the linearizability checks.
///
/// Its snapshot never exceeds [`KvApp::state_bytes_max`], which is the core's
/// `Config::state_bytes_max` (the most a checkpoint's snapshot may hold when it is decoded):
/// a write that would pass it is refused with [`KvError::StateFull`], so a replica can
/// always restart from, and transfer, its own checkpoint (issue 10, finding 5). Before the
/// bound a state past 256 MiB made every checkpoint undecodable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvApp {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// `snapshot().len()`, kept up to date by every write.
    snapshot_bytes: usize,
    state_bytes_max: usize,
}

impl Default for KvApp {
    /// An empty map bounded by the default `Config::state_bytes_max`.
    fn default() -> Self {
        KvApp::for_config(&rampart_bft::Config::new(4))
    }
}

impl KvApp {
    /// An empty map whose snapshot is bounded by `config.state_bytes_max`. Every replica
    /// must use the same bound (it is part of the deterministic state machine).
    #[must_use]
    pub fn for_config(config: &rampart_bft::Config) -> Self {
        KvApp::with_state_bytes_max(config.state_bytes_max)
    }

    /// An empty map whose snapshot is bounded by `state_bytes_max` bytes.
    #[must_use]
    pub fn with_state_bytes_max(state_bytes_max: usize) -> Self {
        KvApp {
            map: BTreeMap::new(),
            snapshot_bytes: SNAPSHOT_HEADER_BYTES,
            state_bytes_max,
        }
    }

    /// The bound on [`KvApp::snapshot_bytes`].
    #[must_use]
    pub fn state_bytes_max(&self) -> usize {
        self.state_bytes_max
    }

    /// Bytes of the snapshot of the current state (what a checkpoint carries).
    #[must_use]
    pub fn snapshot_bytes(&self) -> usize {
        self.snapshot_bytes
    }

    /// Write `key = value` if the snapshot stays within the bound.
    fn write(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        let old = self.map.get(key).map_or(0, |v| entry_bytes(key, v));
        let new = self.snapshot_bytes - old + entry_bytes(key, value);
        if new > self.state_bytes_max {
            return Err(KvError::StateFull);
        }
        self.map.insert(key.to_vec(), value.to_vec());
        self.snapshot_bytes = new;
        Ok(())
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Apply one operation. `budget` is the remaining reply budget of the request; reads
    /// that would exceed it are refused (scans are cut short).
    pub fn apply(&mut self, op: &KvOp, budget: &mut usize) -> KvResult {
        match op {
            KvOp::Put { key, value } => match self.write(key, value) {
                Ok(()) => KvResult::Written,
                Err(e) => KvResult::Error(e),
            },
            KvOp::Delete { key } => match self.map.remove(key) {
                Some(v) => {
                    self.snapshot_bytes -= entry_bytes(key, &v);
                    KvResult::Deleted(true)
                }
                None => KvResult::Deleted(false),
            },
            KvOp::Cas { key, expected, new } => {
                let current = self.map.get(key).cloned();
                let swapped = current == *expected;
                if swapped && let Err(e) = self.write(key, new) {
                    return KvResult::Error(e);
                }
                let cost = 8 + current.as_ref().map_or(0, Vec::len);
                *budget = budget.saturating_sub(cost);
                KvResult::Cas { swapped, current }
            }
            KvOp::Get { .. } | KvOp::Scan { .. } => self.read(op, budget),
        }
    }

    fn read(&self, op: &KvOp, budget: &mut usize) -> KvResult {
        match op {
            KvOp::Get { key } => {
                let v = self.map.get(key);
                let cost = 8 + v.map_or(0, Vec::len);
                if cost > *budget {
                    return KvResult::Error(KvError::ReplyBudget);
                }
                *budget -= cost;
                KvResult::Value(v.cloned())
            }
            KvOp::Scan { prefix, limit } => {
                let mut entries = Vec::new();
                let mut more = false;
                for (k, v) in self.map.range(prefix.clone()..) {
                    if !k.starts_with(prefix) {
                        break;
                    }
                    let cost = 6 + k.len() + v.len();
                    if entries.len() >= *limit as usize || cost > *budget {
                        more = true;
                        break;
                    }
                    *budget -= cost;
                    entries.push((k.clone(), v.clone()));
                }
                KvResult::Entries { entries, more }
            }
            _ => KvResult::Error(KvError::Malformed),
        }
    }

    /// Execute one encoded request; always returns an encoded [`KvReply`].
    #[must_use]
    pub fn execute(&mut self, op: &[u8]) -> Vec<u8> {
        let reply = match KvRequest::decode(op) {
            Ok(req) => {
                let mut budget = REPLY_BUDGET_BYTES;
                KvReply {
                    results: req.ops.iter().map(|o| self.apply(o, &mut budget)).collect(),
                }
            }
            Err(e) => KvReply {
                results: vec![KvResult::Error(e)],
            },
        };
        reply.encode()
    }
}

impl Application for KvApp {
    fn execute_batch(&mut self, _ctx: &BatchContext, ops: &[&[u8]]) -> Vec<Vec<u8>> {
        ops.iter().map(|op| self.execute(op)).collect()
    }

    fn query(&self, op: &[u8]) -> Option<Vec<u8>> {
        let req = KvRequest::decode(op).ok()?;
        if !req.is_read_only() {
            return None;
        }
        let mut budget = REPLY_BUDGET_BYTES;
        let results = req.ops.iter().map(|o| self.read(o, &mut budget)).collect();
        Some(KvReply { results }.encode())
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(self.snapshot_bytes);
        self.snapshot_into(&mut w);
        w
    }

    fn snapshot_len(&self) -> Option<usize> {
        Some(self.snapshot_bytes)
    }

    /// Written in place into the checkpoint buffer (no snapshot `Vec` of its own).
    fn snapshot_into(&self, w: &mut Vec<u8>) {
        w.reserve_exact(self.snapshot_bytes);
        w.push(KV_VERSION);
        w.extend_from_slice(&(self.map.len() as u64).to_le_bytes());
        for (k, v) in &self.map {
            put_key(w, k);
            put_value(w, v);
        }
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        if snapshot.len() > self.state_bytes_max {
            return Err(RestoreError {
                reason: "KV snapshot over the state bound",
            });
        }
        let bad = RestoreError {
            reason: "malformed KV snapshot",
        };
        let mut r = Reader {
            buf: snapshot,
            pos: 0,
        };
        if r.u8().map_err(|_| bad.clone())? != KV_VERSION {
            return Err(bad);
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(r.take(8).map_err(|_| bad.clone())?);
        let n = u64::from_le_bytes(a);
        let mut map = BTreeMap::new();
        let mut last: Option<Vec<u8>> = None;
        for _ in 0..n {
            let k = r.key().map_err(|_| bad.clone())?;
            let v = r.value().map_err(|_| bad.clone())?;
            // Canonical: strictly increasing keys.
            if last.as_ref().is_some_and(|l| *l >= k) {
                return Err(bad);
            }
            last = Some(k.clone());
            map.insert(k, v);
        }
        r.finish().map_err(|_| bad)?;
        self.map = map;
        self.snapshot_bytes = snapshot.len();
        Ok(())
    }

    fn state_digest(&self) -> Digest {
        Digest::of("rampart-kv state v1", &[&self.snapshot()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn arb_op() -> impl Strategy<Value = KvOp> {
        prop_oneof![
            arb_bytes(8).prop_map(|key| KvOp::Get { key }),
            (arb_bytes(8), arb_bytes(16)).prop_map(|(key, value)| KvOp::Put { key, value }),
            arb_bytes(8).prop_map(|key| KvOp::Delete { key }),
            (
                arb_bytes(8),
                proptest::option::of(arb_bytes(8)),
                arb_bytes(8)
            )
                .prop_map(|(key, expected, new)| KvOp::Cas { key, expected, new }),
            (arb_bytes(4), 0..=SCAN_LIMIT_MAX)
                .prop_map(|(prefix, limit)| KvOp::Scan { prefix, limit }),
        ]
    }

    proptest! {
        #[test]
        fn request_round_trip_and_prefixes_rejected(ops in proptest::collection::vec(arb_op(), 0..8),
                                                    cut in any::<prop::sample::Index>()) {
            let req = KvRequest { ops };
            let bytes = req.encode();
            prop_assert_eq!(bytes.len(), 5 + req.ops.iter().map(KvOp::encoded_len).sum::<usize>());
            prop_assert_eq!(KvRequest::decode(&bytes), Ok(req));
            let i = cut.index(bytes.len());
            prop_assert!(KvRequest::decode(&bytes[..i]).is_err());
        }

        /// The app matches a BTreeMap model, replies round-trip, and snapshots restore.
        #[test]
        fn app_matches_model(ops in proptest::collection::vec(arb_op(), 0..64)) {
            let mut app = KvApp::default();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for op in &ops {
                let reply = KvReply::decode(&app.execute(&KvRequest { ops: vec![op.clone()] }.encode()));
                let got = reply.expect("decodes").results.remove(0);
                let want = match op {
                    KvOp::Get { key } => KvResult::Value(model.get(key).cloned()),
                    KvOp::Put { key, value } => { model.insert(key.clone(), value.clone()); KvResult::Written }
                    KvOp::Delete { key } => KvResult::Deleted(model.remove(key).is_some()),
                    KvOp::Cas { key, expected, new } => {
                        let current = model.get(key).cloned();
                        let swapped = current == *expected;
                        if swapped { model.insert(key.clone(), new.clone()); }
                        KvResult::Cas { swapped, current }
                    }
                    KvOp::Scan { prefix, limit } => {
                        let all: Vec<_> = model.iter().filter(|(k, _)| k.starts_with(prefix))
                            .map(|(k, v)| (k.clone(), v.clone())).collect();
                        let more = all.len() > *limit as usize;
                        KvResult::Entries { entries: all.into_iter().take(*limit as usize).collect(), more }
                    }
                };
                prop_assert_eq!(got, want);
            }
            prop_assert_eq!(app.snapshot().len(), app.snapshot_bytes());
            let mut b = KvApp::default();
            b.restore(&app.snapshot()).expect("restores");
            prop_assert_eq!(b.snapshot_bytes(), app.snapshot_bytes());
            prop_assert_eq!(&b, &app);
            prop_assert_eq!(b.state_digest(), app.state_digest());
        }

        #[test]
        fn decoders_never_panic(bytes in arb_bytes(256)) {
            let _ = KvRequest::decode(&bytes);
            let _ = KvReply::decode(&bytes);
            let _ = KvApp::default().restore(&bytes);
        }
    }

    #[test]
    fn limits_are_enforced() {
        let big_key = KvOp::Get {
            key: vec![0; KEY_BYTES_MAX + 1],
        };
        assert_eq!(big_key.check(), Err(KvError::KeyTooLarge));
        let big_value = KvOp::Put {
            key: b"k".to_vec(),
            value: vec![0; VALUE_BYTES_MAX + 1],
        };
        assert_eq!(big_value.check(), Err(KvError::ValueTooLarge));
        // The decoder refuses them too (a client that skips `check`).
        let reply = KvReply::decode(
            &KvApp::default().execute(
                &KvRequest {
                    ops: vec![big_value],
                }
                .encode(),
            ),
        );
        assert_eq!(
            reply.expect("decodes").results,
            vec![KvResult::Error(KvError::ValueTooLarge)]
        );
        // Reads beyond the reply budget are refused, deterministically.
        let mut app = KvApp::default();
        let value = vec![7u8; VALUE_BYTES_MAX];
        let mut ops: Vec<KvOp> = (0..5u8)
            .map(|i| KvOp::Put {
                key: vec![i],
                value: value.clone(),
            })
            .collect();
        ops.extend((0..5u8).map(|i| KvOp::Get { key: vec![i] }));
        let reply = KvReply::decode(&app.execute(&KvRequest { ops }.encode())).expect("decodes");
        assert_eq!(reply.results[5], KvResult::Value(Some(value)));
        assert_eq!(reply.results[9], KvResult::Error(KvError::ReplyBudget));
        assert!(reply.encode().len() < REQUEST_BYTES_MAX);
        // Writes are never refused by the budget and are never read-only.
        assert!(
            !KvRequest {
                ops: vec![KvOp::Delete { key: vec![] }]
            }
            .is_read_only()
        );
    }

    /// Issue 10, finding 5b: the state is bounded by the checkpoint limit. A write that
    /// would grow the snapshot past it is refused with `StateFull` and changes nothing
    /// (puts, and compare-and-swaps that match); deletes and same-size overwrites still
    /// work; the full state's checkpoint decodes under the core's limits, so a replica
    /// restarts from it. Before the bound the map grew without limit.
    #[test]
    fn writes_beyond_the_checkpoint_limit_are_refused_deterministically() {
        let mut config = rampart_bft::Config::new(4);
        config.state_bytes_max = 4096;
        let run = |app: &mut KvApp, ops: Vec<KvOp>| {
            KvReply::decode(&app.execute(&KvRequest { ops }.encode()))
                .expect("decodes")
                .results
        };
        let put = |i: u16| KvOp::Put {
            key: i.to_le_bytes().to_vec(),
            value: vec![7; 500],
        };
        let mut a = KvApp::for_config(&config);
        let mut b = KvApp::for_config(&config);
        let mut refused = None;
        for i in 0..20u16 {
            let ra = run(&mut a, vec![put(i)]);
            assert_eq!(ra, run(&mut b, vec![put(i)]), "replicas agree");
            assert!(a.snapshot_bytes() <= 4096);
            if ra == vec![KvResult::Error(KvError::StateFull)] {
                refused = Some(i);
                break;
            }
            assert_eq!(ra, vec![KvResult::Written]);
        }
        // 9 header bytes + 8 entries of 508 bytes = 4,073; a ninth does not fit.
        assert_eq!(refused, Some(8));
        assert_eq!(a.len(), 8, "the refused put wrote nothing");
        assert_eq!(a.snapshot().len(), a.snapshot_bytes());
        let swap = KvOp::Cas {
            key: 0u16.to_le_bytes().to_vec(),
            expected: Some(vec![7; 500]),
            new: vec![8; 600],
        };
        assert_eq!(
            run(&mut a, vec![swap]),
            vec![KvResult::Error(KvError::StateFull)]
        );
        assert_eq!(
            run(&mut a, vec![put(0)]),
            vec![KvResult::Written],
            "same size"
        );
        assert_eq!(
            run(
                &mut a,
                vec![
                    KvOp::Delete {
                        key: 1u16.to_le_bytes().to_vec()
                    },
                    put(8)
                ]
            ),
            vec![KvResult::Deleted(true), KvResult::Written]
        );
        // The full state checkpoints and restores under the core's limits.
        let state = rampart_bft::message::CheckpointState {
            cid: rampart_bft::SeqNo(1),
            timestamp: rampart_bft::Timestamp(0),
            app: a.snapshot(),
            sessions: Vec::new(),
        };
        let decoded = rampart_bft::message::CheckpointState::decode(&state.encode(), &config)
            .expect("the checkpoint decodes");
        let mut c = KvApp::for_config(&config);
        c.restore(&decoded.app).expect("restores");
        assert_eq!(c, a);
        // A snapshot over the bound is refused on restore.
        let mut small = KvApp::with_state_bytes_max(100);
        assert!(small.restore(&a.snapshot()).is_err());
    }
}
