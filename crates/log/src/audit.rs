//! The audit hook other subsystems call to record who did what.
//!
//! ```no_run
//! use rampart_log::audit::{AuditEvent, AuditSink, LogAuditSink, Outcome};
//! # fn main() -> Result<(), rampart_log::Error> {
//! let sink = LogAuditSink::open(std::path::Path::new("/var/lib/rampart/audit"))?;
//! sink.record(&AuditEvent {
//!     actor_key_id: "ed25519:3f1a…",
//!     action: "put",
//!     object: "bucket/key",
//!     version: Some("v7"),
//!     outcome: Outcome::Success,
//! })?;
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Mutex;

use crate::{Config, Error, Log};

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The action was carried out.
    Success,
    /// Refused by access control or policy.
    Denied,
    /// Attempted but failed.
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Outcome::Success),
            "denied" => Some(Outcome::Denied),
            "failed" => Some(Outcome::Failed),
            _ => None,
        }
    }
}

/// One audit record. Fields are free text; the encoding escapes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditEvent<'a> {
    /// Identifier of the key that authenticated the actor.
    pub actor_key_id: &'a str,
    /// The action, e.g. `put`, `get`, `rm`.
    pub action: &'a str,
    /// The object acted on.
    pub object: &'a str,
    /// The object version, if any.
    pub version: Option<&'a str>,
    /// How it ended.
    pub outcome: Outcome,
}

const AUDIT_PREFIX: &str = "rampart-audit/v1";

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\t' => out.push_str("%09"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.split('%');
    out.push_str(it.next()?);
    for part in it {
        let code = part.get(..2)?;
        out.push(match code {
            "25" => '%',
            "09" => '\t',
            "0A" => '\n',
            "0D" => '\r',
            _ => return None,
        });
        out.push_str(&part[2..]);
    }
    Some(out)
}

impl AuditEvent<'_> {
    /// The entry bytes: `rampart-audit/v1<TAB>actor<TAB>action<TAB>object<TAB>version<TAB>outcome`
    /// with `%`, tab, CR and LF percent-escaped and an absent version as an empty field.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::from(AUDIT_PREFIX);
        for field in [
            self.actor_key_id,
            self.action,
            self.object,
            self.version.unwrap_or(""),
        ] {
            s.push('\t');
            escape(field, &mut s);
        }
        s.push('\t');
        s.push_str(self.outcome.as_str());
        s.into_bytes()
    }
}

/// An owned, decoded audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// See [`AuditEvent::actor_key_id`].
    pub actor_key_id: String,
    /// See [`AuditEvent::action`].
    pub action: String,
    /// See [`AuditEvent::object`].
    pub object: String,
    /// See [`AuditEvent::version`].
    pub version: Option<String>,
    /// See [`AuditEvent::outcome`].
    pub outcome: Outcome,
}

impl AuditRecord {
    /// Decodes entry data written by [`AuditEvent::encode`]; `None` if it is not one.
    pub fn decode(data: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(data).ok()?;
        let f: Vec<&str> = s.splitn(7, '\t').collect();
        if f.len() != 6 || f[0] != AUDIT_PREFIX {
            return None;
        }
        let version = unescape(f[4])?;
        Some(AuditRecord {
            actor_key_id: unescape(f[1])?,
            action: unescape(f[2])?,
            object: unescape(f[3])?,
            version: (!version.is_empty()).then_some(version),
            outcome: Outcome::parse(f[5])?,
        })
    }
}

/// Where subsystems send audit events. Implementations must make an event durable (or
/// return an error) before `record` returns: an action whose audit record could be lost
/// should not be reported as done.
pub trait AuditSink: Send + Sync {
    /// Records one event; returns its position in the log.
    fn record(&self, event: &AuditEvent<'_>) -> Result<u64, Error>;
}

/// An [`AuditSink`] appending to a local secure log directory (created by `rampart log init`).
/// Each `record` is sealed and fsynced before it returns.
pub struct LogAuditSink {
    log: Mutex<Log>,
}

impl std::fmt::Debug for LogAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogAuditSink").finish_non_exhaustive()
    }
}

impl LogAuditSink {
    /// Opens (and recovers) the log in `dir` and takes its writer lock.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let (log, recovery) = Log::open(dir, Config::default())?;
        if let Some((entry, bytes)) = recovery.truncated {
            tracing::warn!(entry, bytes, "audit log: torn tail truncated on open");
        }
        Ok(LogAuditSink {
            log: Mutex::new(log),
        })
    }

    /// Signs a checkpoint of everything recorded so far and returns it.
    pub fn checkpoint(&self) -> Result<Vec<u8>, Error> {
        self.lock().checkpoint()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave a half-appended entry on disk (commit
        // writes whole batches), so the log is still usable.
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl AuditSink for LogAuditSink {
    fn record(&self, event: &AuditEvent<'_>) -> Result<u64, Error> {
        let mut log = self.lock();
        let index = log.append(&event.encode())?;
        log.commit()?;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_roundtrips_and_escapes() {
        let e = AuditEvent {
            actor_key_id: "key\t1%",
            action: "put",
            object: "a\nb",
            version: None,
            outcome: Outcome::Denied,
        };
        let bytes = e.encode();
        assert!(!bytes.contains(&b'\n'));
        let r = AuditRecord::decode(&bytes).unwrap();
        assert_eq!(r.actor_key_id, "key\t1%");
        assert_eq!(r.object, "a\nb");
        assert_eq!(r.version, None);
        assert_eq!(r.outcome, Outcome::Denied);
        assert_eq!(
            AuditRecord::decode(b"rampart-audit/v1\ta\tb\tc\td\tmaybe"),
            None
        );
        assert_eq!(
            AuditRecord::decode(b"rampart-audit/v1\t%zz\tb\tc\td\tfailed"),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn audit_codec_roundtrips(actor in ".{0,40}", action in ".{0,10}", object in ".{0,60}",
                                  version in proptest::option::of(".{0,10}"), o in 0u8..3) {
            let outcome = [Outcome::Success, Outcome::Denied, Outcome::Failed][usize::from(o)];
            let e = AuditEvent {
                actor_key_id: &actor,
                action: &action,
                object: &object,
                version: version.as_deref(),
                outcome,
            };
            let r = AuditRecord::decode(&e.encode()).unwrap();
            proptest::prop_assert_eq!(&r.actor_key_id, &actor);
            proptest::prop_assert_eq!(&r.action, &action);
            proptest::prop_assert_eq!(&r.object, &object);
            // An empty version is indistinguishable from none, by design.
            proptest::prop_assert_eq!(r.version, version.filter(|v| !v.is_empty()));
            proptest::prop_assert_eq!(r.outcome, outcome);
        }
    }

    #[test]
    fn sink_appends_durably_and_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let secret = tmp.path().join("secret");
        Log::init(&dir, "audit.test", &secret, &mut rand_core::OsRng).unwrap();
        let sink = LogAuditSink::open(&dir).unwrap();
        for (i, action) in ["put", "get", "rm"].iter().enumerate() {
            let ev = AuditEvent {
                actor_key_id: "k1",
                action,
                object: "bucket/obj",
                version: Some("3"),
                outcome: Outcome::Success,
            };
            assert_eq!(sink.record(&ev).unwrap(), i as u64);
        }
        sink.checkpoint().unwrap();
        drop(sink);
        let opts = crate::VerifyOptions {
            secret: Some(crate::VerifierSecret::load(&secret).unwrap()),
            ..Default::default()
        };
        let report = crate::verify(&dir, &opts).unwrap().unwrap();
        assert_eq!(report.entries, 3);
        let proof = crate::store::prove_inclusion(
            &dir,
            3,
            &crate::read_checkpoint(&dir, &opts.secret.as_ref().unwrap().vkey)
                .unwrap()
                .1
                .root,
            2,
        )
        .unwrap();
        let e = crate::EntryRef::decode(&proof.entry).unwrap();
        assert_eq!(AuditRecord::decode(e.data).unwrap().action, "rm");
    }
}
