//! A checker of recorded histories for the store's promise: regular semantics per key, and
//! no acknowledged write lost.
//!
//! Every operation is recorded by the client that ran it, with the wall-clock times at which
//! it was invoked and at which it returned (all clients run on one machine, so one clock).
//! A write is a put of a unique value or a delete (the value "absent"); the initial state of
//! every key is a delete that completed before anything began.
//!
//! A read that returned value `v` is legal when some write `w` of `v`:
//! - began before the read returned, and
//! - is not *stale* for the read: there is no acknowledged write `w'` of the same key that
//!   began after `w` was acknowledged and was itself acknowledged before the read began.
//!
//! This is a sound (never rejecting a correct store) rendering of regularity for many
//! writers: a write whose outcome is unknown (its client failed or timed out) may have taken
//! effect at any later time, so it is never stale and never makes another write stale. A
//! read that returned a value nobody wrote is always a violation. A write that the history
//! shows acknowledged and that a later read misses is reported as a lost write.

use std::collections::BTreeMap;
use std::fmt;

/// What a write stored.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// The key does not exist (after a delete, or before any write).
    Absent,
    /// A put's unique tag.
    Put(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Absent => f.write_str("absent"),
            Value::Put(t) => f.write_str(t),
        }
    }
}

/// One recorded operation.
#[derive(Clone, Debug)]
pub struct Op {
    /// Who ran it (for reports).
    pub client: String,
    /// The key it touched.
    pub key: String,
    /// Invocation time, ns since the epoch.
    pub start: u128,
    /// Return time, ns since the epoch.
    pub end: u128,
    /// What it did and how it ended.
    pub kind: Kind,
}

/// What an operation did.
#[derive(Clone, Debug)]
pub enum Kind {
    /// A put (`Value::Put`) or delete (`Value::Absent`); `acked` when the client reported
    /// success.
    Write {
        /// The value written.
        value: Value,
        /// The client reported success.
        acked: bool,
    },
    /// A read and what it returned (`Err` with the error when it failed).
    Read(Result<Value, String>),
}

/// A broken promise found in a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A read returned something no write of that key wrote.
    NeverWritten {
        /// The read.
        read: String,
        /// What it returned.
        value: Value,
    },
    /// A read returned a value that an acknowledged later write had replaced before the
    /// read began (for `Absent` after an acknowledged put: a lost write).
    Stale {
        /// The read.
        read: String,
        /// What it returned.
        value: Value,
        /// An acknowledged write that superseded every write of that value.
        superseded_by: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NeverWritten { read, value } => {
                write!(
                    f,
                    "{read} returned {value}, which no write of that key wrote"
                )
            }
            Violation::Stale {
                read,
                value,
                superseded_by,
            } => write!(
                f,
                "{read} returned {value}, but {superseded_by} had replaced it before the read began"
            ),
        }
    }
}

fn describe(op: &Op) -> String {
    let what = match &op.kind {
        Kind::Write {
            value: Value::Absent,
            acked,
        } => format!("delete (acked: {acked})"),
        Kind::Write { value, acked } => format!("put {value} (acked: {acked})"),
        Kind::Read(_) => "read".to_owned(),
    };
    format!(
        "{} {what} of {:?} during [{}, {}] ns",
        op.client, op.key, op.start, op.end
    )
}

/// Checks every successful read of `history`; failed reads are the caller's to count.
pub fn check(history: &[Op]) -> Vec<Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut out = Vec::new();
    for (key, ops) in by_key {
        let initial = Op {
            client: "initial state".into(),
            key: key.to_owned(),
            start: 0,
            end: 0,
            kind: Kind::Write {
                value: Value::Absent,
                acked: true,
            },
        };
        let writes: Vec<&Op> = std::iter::once(&initial)
            .chain(
                ops.iter()
                    .copied()
                    .filter(|o| matches!(o.kind, Kind::Write { .. })),
            )
            .collect();
        for read in ops.iter().filter(|o| matches!(o.kind, Kind::Read(Ok(_)))) {
            let Kind::Read(Ok(v)) = &read.kind else {
                unreachable!()
            };
            if let Some(v) = judge(read, v, &writes) {
                out.push(v);
            }
        }
    }
    out
}

fn write_of(op: &Op) -> (&Value, bool) {
    match &op.kind {
        Kind::Write { value, acked } => (value, *acked),
        Kind::Read(_) => unreachable!("only writes are passed"),
    }
}

/// `w'` superseded `w` before `read` began: both acknowledged, `w'` invoked after `w`
/// returned, and `w'` returned before the read was invoked.
fn superseded(w: &Op, by: &Op, read: &Op) -> bool {
    let (_, w_acked) = write_of(w);
    let (_, by_acked) = write_of(by);
    w_acked && by_acked && w.end < by.start && by.end < read.start
}

fn judge(read: &Op, v: &Value, writes: &[&Op]) -> Option<Violation> {
    let candidates: Vec<&Op> = writes
        .iter()
        .copied()
        .filter(|w| write_of(w).0 == v && w.start < read.end)
        .collect();
    if candidates.is_empty() {
        return Some(Violation::NeverWritten {
            read: describe(read),
            value: v.clone(),
        });
    }
    let mut witness = None;
    for c in &candidates {
        match writes.iter().find(|by| superseded(c, by, read)) {
            None => return None,
            Some(by) => witness = Some(describe(by)),
        }
    }
    Some(Violation::Stale {
        read: describe(read),
        value: v.clone(),
        superseded_by: witness.expect("at least one candidate"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client: &str, tag: &str, start: u128, end: u128, acked: bool) -> Op {
        Op {
            client: client.into(),
            key: "k".into(),
            start,
            end,
            kind: Kind::Write {
                value: Value::Put(tag.into()),
                acked,
            },
        }
    }

    fn del(start: u128, end: u128) -> Op {
        Op {
            client: "d".into(),
            key: "k".into(),
            start,
            end,
            kind: Kind::Write {
                value: Value::Absent,
                acked: true,
            },
        }
    }

    fn read(v: Value, start: u128, end: u128) -> Op {
        Op {
            client: "r".into(),
            key: "k".into(),
            start,
            end,
            kind: Kind::Read(Ok(v)),
        }
    }

    fn p(t: &str) -> Value {
        Value::Put(t.into())
    }

    #[test]
    fn a_read_of_the_newest_or_a_concurrent_write_is_legal() {
        let h = vec![
            put("a", "a1", 10, 20, true),
            put("b", "b1", 30, 40, true),
            put("a", "a2", 45, 60, true),
            read(p("b1"), 42, 50),
            read(p("a2"), 42, 50),
            read(p("a2"), 61, 70),
        ];
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn a_read_of_a_replaced_value_is_stale() {
        let h = vec![
            put("a", "a1", 10, 20, true),
            put("b", "b1", 30, 40, true),
            read(p("a1"), 41, 50),
        ];
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(matches!(&v[0], Violation::Stale { value, .. } if *value == p("a1")));
    }

    #[test]
    fn absent_after_an_acknowledged_put_is_a_lost_write() {
        let h = vec![put("a", "a1", 10, 20, true), read(Value::Absent, 30, 40)];
        let v = check(&h);
        assert!(
            matches!(&v[..], [Violation::Stale { value: Value::Absent, superseded_by, .. }] if superseded_by.contains("a1")),
            "{v:?}"
        );
    }

    #[test]
    fn absent_after_a_delete_is_legal_and_an_old_value_after_it_is_not() {
        let h = vec![
            put("a", "a1", 10, 20, true),
            del(30, 40),
            read(Value::Absent, 50, 60),
            read(p("a1"), 50, 60),
        ];
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(matches!(&v[0], Violation::Stale { value, .. } if *value == p("a1")));
    }

    #[test]
    fn a_value_nobody_wrote_or_from_the_future_is_a_violation() {
        let h = vec![
            put("a", "a1", 100, 120, true),
            read(p("zz"), 10, 20),
            read(p("a1"), 10, 20),
        ];
        let v = check(&h);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(
            v.iter()
                .all(|v| matches!(v, Violation::NeverWritten { .. }))
        );
    }

    #[test]
    fn a_write_of_unknown_outcome_may_appear_late_but_never_supersedes() {
        let h = vec![
            put("a", "a1", 10, 20, true),
            put("b", "b1", 30, 40, false),
            // b1 failed: it may take effect later...
            read(p("b1"), 100, 110),
            // ...and a1 is still legal, since b1 was not acknowledged.
            read(p("a1"), 100, 110),
        ];
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn keys_are_judged_apart() {
        let mut other = put("a", "x1", 10, 20, true);
        other.key = "other".into();
        let h = vec![other, read(p("x1"), 30, 40)];
        assert!(matches!(&check(&h)[..], [Violation::NeverWritten { .. }]));
    }
}
