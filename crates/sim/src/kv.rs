//! A small deterministic key-value application for the simulator, and its operations.

use std::collections::BTreeMap;

use rampart_bft::{Application, BatchContext, Digest, RestoreError};

/// Keys are one byte: at most 256 keys, so the state is at most 256 × 9 bytes.
pub type Key = u8;

/// A KV operation. Values are `u64`s; the simulator writes unique values so that the
/// linearizability checker can tell writes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOp {
    /// Read a key.
    Get(Key),
    /// Write a key.
    Put(Key, u64),
    /// Compare-and-swap: write `new` if the current value is `expected`.
    Cas(Key, Option<u64>, u64),
    /// Remove a key.
    Delete(Key),
}

/// A KV result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvResult {
    /// Value read.
    Value(Option<u64>),
    /// Write done.
    Ok,
    /// CAS outcome.
    Swapped(bool),
}

impl KvOp {
    /// Encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(19);
        match *self {
            KvOp::Get(k) => v.extend_from_slice(&[0, k]),
            KvOp::Put(k, x) => {
                v.extend_from_slice(&[1, k]);
                v.extend_from_slice(&x.to_le_bytes());
            }
            KvOp::Cas(k, e, x) => {
                v.extend_from_slice(&[2, k]);
                match e {
                    None => v.push(0),
                    Some(e) => {
                        v.push(1);
                        v.extend_from_slice(&e.to_le_bytes());
                    }
                }
                v.extend_from_slice(&x.to_le_bytes());
            }
            KvOp::Delete(k) => v.extend_from_slice(&[3, k]),
        }
        v
    }

    /// Strict decoding; `None` for anything malformed.
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<KvOp> {
        let u64_at = |i: usize| -> Option<u64> {
            let s = b.get(i..i + 8)?;
            Some(u64::from_le_bytes(s.try_into().ok()?))
        };
        match (b.first()?, b.get(1)?) {
            (0, k) if b.len() == 2 => Some(KvOp::Get(*k)),
            (1, k) if b.len() == 10 => Some(KvOp::Put(*k, u64_at(2)?)),
            (2, k) => match b.get(2)? {
                0 if b.len() == 11 => Some(KvOp::Cas(*k, None, u64_at(3)?)),
                1 if b.len() == 19 => Some(KvOp::Cas(*k, Some(u64_at(3)?), u64_at(11)?)),
                _ => None,
            },
            (3, k) if b.len() == 2 => Some(KvOp::Delete(*k)),
            _ => None,
        }
    }
}

impl KvResult {
    /// Encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            KvResult::Value(None) => vec![0],
            KvResult::Value(Some(x)) => {
                let mut v = vec![1];
                v.extend_from_slice(&x.to_le_bytes());
                v
            }
            KvResult::Ok => vec![2],
            KvResult::Swapped(s) => vec![3, u8::from(s)],
        }
    }

    /// Decoding; `None` if malformed.
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<KvResult> {
        match b {
            [0] => Some(KvResult::Value(None)),
            [1, rest @ ..] if rest.len() == 8 => Some(KvResult::Value(Some(u64::from_le_bytes(
                rest.try_into().ok()?,
            )))),
            [2] => Some(KvResult::Ok),
            [3, s] if *s <= 1 => Some(KvResult::Swapped(*s == 1)),
            _ => None,
        }
    }
}

/// The replicated map. Bounded by its key type: at most 256 keys of one `u64` each, so its
/// snapshot stays far below any `Config::state_bytes_max` (issue 10, finding 5: unlike
/// `rampart_kv::KvApp` it needs no runtime state bound).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvApp {
    map: BTreeMap<Key, u64>,
}

impl KvApp {
    /// Apply one operation to a map (also the checker's sequential model).
    pub fn apply(map: &mut BTreeMap<Key, u64>, op: KvOp) -> KvResult {
        match op {
            KvOp::Get(k) => KvResult::Value(map.get(&k).copied()),
            KvOp::Put(k, x) => {
                map.insert(k, x);
                KvResult::Ok
            }
            KvOp::Cas(k, e, x) => {
                if map.get(&k).copied() == e {
                    map.insert(k, x);
                    KvResult::Swapped(true)
                } else {
                    KvResult::Swapped(false)
                }
            }
            KvOp::Delete(k) => {
                map.remove(&k);
                KvResult::Ok
            }
        }
    }
}

/// Result of an undecodable operation (deterministic on every replica).
pub const BAD_OP: &[u8] = &[0xff];

impl Application for KvApp {
    fn execute_batch(&mut self, _ctx: &BatchContext, ops: &[&[u8]]) -> Vec<Vec<u8>> {
        ops.iter()
            .map(|op| match KvOp::decode(op) {
                Some(op) => Self::apply(&mut self.map, op).encode(),
                None => BAD_OP.to_vec(),
            })
            .collect()
    }

    fn query(&self, op: &[u8]) -> Option<Vec<u8>> {
        match KvOp::decode(op)? {
            KvOp::Get(k) => Some(KvResult::Value(self.map.get(&k).copied()).encode()),
            _ => None,
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.map.len() * 9);
        for (k, x) in &self.map {
            v.push(*k);
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        if !snapshot.len().is_multiple_of(9) {
            return Err(RestoreError {
                reason: "malformed snapshot",
            });
        }
        let mut map = BTreeMap::new();
        for c in snapshot.chunks_exact(9) {
            let x = u64::from_le_bytes(c[1..9].try_into().map_err(|_| RestoreError {
                reason: "malformed value",
            })?);
            if map.insert(c[0], x).is_some() {
                return Err(RestoreError {
                    reason: "malformed snapshot",
                });
            }
        }
        self.map = map;
        Ok(())
    }

    fn state_digest(&self) -> Digest {
        Digest::of("rampart-sim kv state", &[&self.snapshot()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_and_results_round_trip() {
        for op in [
            KvOp::Get(3),
            KvOp::Put(1, 77),
            KvOp::Cas(2, None, 5),
            KvOp::Cas(2, Some(9), 5),
            KvOp::Delete(0),
        ] {
            assert_eq!(KvOp::decode(&op.encode()), Some(op));
        }
        for r in [
            KvResult::Value(None),
            KvResult::Value(Some(4)),
            KvResult::Ok,
            KvResult::Swapped(true),
        ] {
            assert_eq!(KvResult::decode(&r.encode()), Some(r));
        }
        assert_eq!(KvOp::decode(&[9, 9]), None);
        assert_eq!(KvOp::decode(&[1, 1, 0]), None);
    }

    #[test]
    fn snapshot_restores_the_same_state() {
        let mut a = KvApp::default();
        let ctx = BatchContext {
            cid: rampart_bft::SeqNo(1),
            timestamp: rampart_bft::Timestamp(0),
        };
        let ops = [KvOp::Put(1, 5).encode(), KvOp::Put(2, 6).encode()];
        let refs: Vec<&[u8]> = ops.iter().map(Vec::as_slice).collect();
        a.execute_batch(&ctx, &refs);
        let mut b = KvApp::default();
        b.restore(&a.snapshot()).expect("valid snapshot");
        assert_eq!(a.state_digest(), b.state_digest());
        assert_eq!(a, b);
        assert!(b.restore(&[1, 2]).is_err());
    }
}
