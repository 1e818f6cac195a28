//! End-to-end benchmarks. Every figure is printed beside a baseline measured in the same
//! run on the same machine, because absolute times drift on shared machines.
//!
//! - [`store`]: cloud-of-clouds put/get against a plain single-directory `object_store`
//!   put/get of the same plaintext, plus the client pipeline rate per core.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// Benchmarks measure wall-clock time by definition.
#![allow(clippy::disallowed_methods)]

pub mod store;

/// A benchmark failed to run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The store under test failed.
    #[error(transparent)]
    Store(#[from] rampart_store::StoreError),
    /// The baseline backend failed.
    #[error("baseline: {0}")]
    Baseline(#[from] object_store::Error),
    /// Local I/O failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A read returned different bytes than were written.
    #[error("benchmark read back different bytes for {what}")]
    Mismatch {
        /// Which case.
        what: String,
    },
}
