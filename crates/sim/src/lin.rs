//! Linearizability checker for KV histories (Wing–Gong search with memoisation, per key).
//!
//! Every operation touches one key, so the history is linearizable iff each key's
//! sub-history is (locality, Herlihy–Wing). For each key, a depth-first search picks the
//! next operation to linearize among those invoked before every pending response, applies
//! it to a sequential model, and backtracks when a recorded result disagrees. Operations
//! without a response may take effect at any point after their invocation, or never.
//! States already explored (set of linearized operations, register value) are memoised.

use std::collections::{BTreeMap, HashSet};

use crate::kv::{Key, KvApp, KvOp, KvResult};

/// One client operation in the history. Times are virtual nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistOp {
    /// Client that issued it.
    pub client: u64,
    /// The operation.
    pub op: KvOp,
    /// Invocation time.
    pub invoke: u64,
    /// Response time and result, if it completed.
    pub response: Option<(u64, KvResult)>,
}

impl HistOp {
    fn key(&self) -> Key {
        match self.op {
            KvOp::Get(k) | KvOp::Put(k, _) | KvOp::Cas(k, _, _) | KvOp::Delete(k) => k,
        }
    }
}

/// A non-linearizable key, or a search that ran out of budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinError {
    /// No linearization exists for this key's sub-history.
    #[error("key {key}: history of {ops} operations is not linearizable")]
    NotLinearizable {
        /// The key.
        key: Key,
        /// Operations on it.
        ops: usize,
    },
    /// The search explored more than [`SEARCH_STATES_MAX`] states (counts as a failure:
    /// the checker never passes a history it has not checked).
    #[error("key {key}: checker budget exhausted")]
    Budget {
        /// The key.
        key: Key,
    },
}

/// Search-state budget per key.
pub const SEARCH_STATES_MAX: usize = 2_000_000;

/// Check a whole history.
pub fn check(history: &[HistOp]) -> Result<(), LinError> {
    let mut by_key: BTreeMap<Key, Vec<HistOp>> = BTreeMap::new();
    for op in history {
        // Reads that never returned constrain nothing.
        if matches!(op.op, KvOp::Get(_)) && op.response.is_none() {
            continue;
        }
        by_key.entry(op.key()).or_default().push(op.clone());
    }
    for (key, mut ops) in by_key {
        ops.sort_by_key(|o| o.invoke);
        let mut s = Search {
            ops: &ops,
            done: vec![0u64; ops.len().div_ceil(64)],
            memo: HashSet::new(),
        };
        let remaining = ops.iter().filter(|o| o.response.is_some()).count();
        match s.dfs(None, remaining) {
            Some(true) => {}
            Some(false) => {
                return Err(LinError::NotLinearizable {
                    key,
                    ops: ops.len(),
                });
            }
            None => return Err(LinError::Budget { key }),
        }
    }
    Ok(())
}

struct Search<'a> {
    ops: &'a [HistOp],
    done: Vec<u64>,
    memo: HashSet<(Vec<u64>, Option<u64>)>,
}

impl Search<'_> {
    fn is_done(&self, i: usize) -> bool {
        self.done[i / 64] & (1 << (i % 64)) != 0
    }
    fn flip(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
    }

    /// `Some(found)`, or `None` when the budget is exhausted.
    fn dfs(&mut self, state: Option<u64>, remaining: usize) -> Option<bool> {
        if remaining == 0 {
            return Some(true);
        }
        if self.memo.len() >= SEARCH_STATES_MAX {
            return None;
        }
        if !self.memo.insert((self.done.clone(), state)) {
            return Some(false);
        }
        let min_resp = (0..self.ops.len())
            .filter(|&i| !self.is_done(i))
            .filter_map(|i| self.ops[i].response.map(|(t, _)| t))
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.ops.len() {
            if self.is_done(i) {
                continue;
            }
            let op = &self.ops[i];
            if op.invoke >= min_resp {
                // Ops are sorted by invocation: no later one can go next either.
                break;
            }
            let mut map = BTreeMap::new();
            let key = op.key();
            if let Some(v) = state {
                map.insert(key, v);
            }
            let result = KvApp::apply(&mut map, op.op);
            let next_state = map.get(&key).copied();
            let completed = match op.response {
                Some((_, r)) if r != result => continue,
                Some(_) => 1,
                None => 0,
            };
            self.flip(i);
            let found = self.dfs(next_state, remaining - completed);
            self.flip(i);
            match found {
                Some(true) | None => return found,
                Some(false) => {}
            }
        }
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, op: KvOp, invoke: u64, resp: Option<(u64, KvResult)>) -> HistOp {
        HistOp {
            client,
            op,
            invoke,
            response: resp,
        }
    }

    #[test]
    fn sequential_history_passes() {
        let h = vec![
            op(1, KvOp::Put(0, 1), 0, Some((10, KvResult::Ok))),
            op(2, KvOp::Get(0), 20, Some((30, KvResult::Value(Some(1))))),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn stale_read_after_completed_write_fails() {
        let h = vec![
            op(1, KvOp::Put(0, 1), 0, Some((10, KvResult::Ok))),
            op(1, KvOp::Put(0, 2), 11, Some((20, KvResult::Ok))),
            op(2, KvOp::Get(0), 25, Some((30, KvResult::Value(Some(1))))),
        ];
        assert!(matches!(
            check(&h),
            Err(LinError::NotLinearizable { key: 0, .. })
        ));
    }

    #[test]
    fn concurrent_write_may_or_may_not_be_seen() {
        for seen in [None, Some(7)] {
            let h = vec![
                op(1, KvOp::Put(0, 7), 0, Some((50, KvResult::Ok))),
                op(2, KvOp::Get(0), 10, Some((20, KvResult::Value(seen)))),
            ];
            assert_eq!(check(&h), Ok(()), "{seen:?}");
        }
    }

    #[test]
    fn pending_write_may_take_effect_late_or_never() {
        let h = vec![
            op(1, KvOp::Put(0, 7), 0, None),
            op(2, KvOp::Get(0), 10, Some((20, KvResult::Value(None)))),
            op(2, KvOp::Get(0), 30, Some((40, KvResult::Value(Some(7))))),
        ];
        assert_eq!(check(&h), Ok(()));
        // ...but once seen it cannot be unseen.
        let h2 = vec![
            op(1, KvOp::Put(0, 7), 0, None),
            op(2, KvOp::Get(0), 10, Some((20, KvResult::Value(Some(7))))),
            op(2, KvOp::Get(0), 30, Some((40, KvResult::Value(None)))),
        ];
        assert!(check(&h2).is_err());
    }

    #[test]
    fn cas_results_are_checked() {
        let h = vec![
            op(1, KvOp::Put(0, 1), 0, Some((10, KvResult::Ok))),
            op(
                2,
                KvOp::Cas(0, Some(1), 2),
                20,
                Some((30, KvResult::Swapped(true))),
            ),
            op(
                3,
                KvOp::Cas(0, Some(1), 3),
                40,
                Some((50, KvResult::Swapped(true))),
            ),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn wrong_value_fails() {
        let h = vec![op(
            2,
            KvOp::Get(0),
            10,
            Some((20, KvResult::Value(Some(9)))),
        )];
        assert!(check(&h).is_err());
    }
}
