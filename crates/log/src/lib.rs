//! Rampart secure log: tamper-evident audit trails on hosts you do not trust.
//!
//! # Protocol
//!
//! Every entry is **sealed** with a forward-integrity MAC (Schneier–Kelsey):
//! `HMAC-SHA-256(K(seq), seq || epoch || prev_hash || data)`, where the epoch must equal the
//! sequence number (every entry has its own key), `prev_hash` is the RFC 6962 leaf hash of
//! the previous entry, and the key evolves one-way, `K(seq+1) = SHA-256(K(seq))`, as soon as
//! entry `seq` is sealed. The old key is zeroized in memory at once; the key file on disk
//! holds `K(n)` for the durable size `n` after every [`Log::commit`]. The verifier keeps `K(0)`, exported once at
//! [`Log::init`] to a 0600 file ([`VerifierSecret`]), and can recompute every key.
//!
//! The sealed entries are the leaves of an **RFC 6962 Merkle tree**. The log signs
//! **C2SP tlog-checkpoint** notes (C2SP signed-note, Ed25519) over the tree head, serves
//! **inclusion and consistency proofs**, and lays itself out on disk as **C2SP tlog-tiles**
//! (`checkpoint`, `tile/<L>/<N>`, `tile/entries/<N>`), so any static file server can publish
//! it. Witnesses add cosignatures to checkpoints; [`WitnessPolicy`] demands k of n.
//!
//! # Threat model
//!
//! The host (and its administrator) may be compromised at some time `t`. Then:
//! - entries below the durable size `n` at time `t` cannot be modified, re-sealed, inserted
//!   between, reordered or deleted without [`verify()`] (given `K(0)`) naming the first bad
//!   entry: the attacker holds only `K(n)` and the keys after it (the process may hold a few
//!   more of the batch not yet committed), and the verifier rejects an entry whose epoch is
//!   not its position. This holds even with `signing.key` stolen too: a re-signed checkpoint
//!   does not make a MAC verify;
//! - entries from `n` on are at the attacker's mercy (forward integrity protects only the
//!   past), and so are checkpoints: with `signing.key` the attacker can sign any tree, so a
//!   truncated log is caught only by checkpoints held elsewhere;
//! - truncation of the tail, or rolling the whole directory back to an older valid state, is
//!   invisible to MACs alone; it is caught by any checkpoint seen earlier (kept by a client,
//!   a witness, or the verifier) — pass those as [`VerifyOptions::trusted`];
//! - a log that shows different histories to different parties is caught by witnesses that
//!   cosign only consistent checkpoints.
//!
//! Not protected: availability (the host can delete everything), confidentiality of entries
//! (they are plaintext; encrypt before appending if needed), and the checkpoint signing key
//! (it lives on the host; witnesses are the defence against its misuse).
//!
//! # Invariants
//!
//! - Entry `i` has sequence number `i`, epoch `i` (sealed with `K(i)`), and
//!   `prev_hash` = leaf hash of entry `i-1` (zeros for entry 0).
//! - A checkpoint is published only after every entry and tile it covers is fsynced.
//! - The key file holds exactly one valid key after a completed commit.
//! - Memory is bounded independent of log length: the tree keeps one partial tile per level
//!   (≤ 64 KiB); readers use a fixed 1 MiB buffer (the verifier also keeps ≤ 4 MiB chunks in
//!   flight, and the entry bundle being compared with the published one, ≤ 256 entries of
//!   ≤ 64 KiB); the writer holds the batch being sealed plus at most one batch in flight, each
//!   ≤ [`Config::batch_entries_max`] entries and ≤ [`Config::batch_bytes_max`] bytes.
//!
//! # Layers
//!
//! [`entry`], [`mac`], [`merkle`] and [`checkpoint`] are sans-IO (no files, no clock, no
//! global RNG). [`Log`], [`verify()`] and [`audit`] do file I/O. The optional `http` feature
//! adds the axum service used by `rampart log serve`.
//!
//! ```
//! use rampart_log::{Config, Log, VerifierSecret, VerifyOptions, verify};
//! let tmp = tempfile::tempdir().unwrap();
//! let dir = tmp.path().join("log");
//! let secret = tmp.path().join("verifier.secret");
//! Log::init(&dir, "example.org/audit", &secret, &mut rand_core::OsRng).unwrap();
//! let (mut log, _recovery) = Log::open(&dir, Config::default()).unwrap();
//! log.append(b"alice read record 17").unwrap();
//! log.checkpoint().unwrap(); // commit + sign
//! drop(log);
//! let opts = VerifyOptions { secret: Some(VerifierSecret::load(&secret).unwrap()), ..Default::default() };
//! let report = verify(&dir, &opts).unwrap().expect("log is intact");
//! assert_eq!(report.entries, 1);
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod audit;
pub mod checkpoint;
pub mod cosignature;
pub mod entry;
mod error;
mod fsutil;
#[cfg(feature = "http")]
pub mod http;
mod keyfile;
pub mod mac;
pub mod merkle;
mod segment;
mod store;
mod verify;
mod writer;

pub use checkpoint::{Checkpoint, CheckpointError, NoteSigner, WitnessPolicy, verify_checkpoint};
pub use entry::{ENTRY_DATA_MAX, EntryRef};
pub use error::{Error, Problem, ProblemKind};
pub use store::{
    Config, ConsistencyProof, InclusionProof, InitReport, Log, Recovery, VerifierSecret,
    bundle_entries, layout, prove_consistency, prove_inclusion, read_checkpoint, read_vkey,
};
pub use verify::{VerifyOptions, VerifyReport, verify};

/// Fuzzing entry points: parse arbitrary bytes with every decoder of untrusted input.
/// Public so the fuzz targets and the in-tree random-input test share one harness.
pub mod fuzzing {
    /// Feeds `data` to the entry, frame, segment, bundle, tile-path and checkpoint parsers.
    /// Must never panic.
    pub fn parse_all(data: &[u8]) {
        let _ = crate::entry::EntryRef::decode(data);
        let mut rest = data;
        let mut frames = 0;
        while let Ok(Some(f)) = crate::entry::decode_frame(rest) {
            let _ = crate::entry::EntryRef::decode(f.entry);
            rest = &rest[f.len..];
            frames += 1;
            if frames > 10_000 {
                break;
            }
        }
        let _ = crate::store::bundle_entries(data);
        let _ = crate::store::bundle_prefix(data, 3);
        if let Ok(s) = std::str::from_utf8(data) {
            let _ = crate::merkle::TilePath::parse(s);
            let _ = crate::audit::AuditRecord::decode(data);
        }
        let _ = crate::merkle::tile_hashes(data);
        let _ =
            crate::checkpoint::verify_checkpoint(data, FUZZ_VKEY, &crate::WitnessPolicy::none());
    }

    /// Reads `data` as a segment body (after the magic) frame by frame, delivered in reads of
    /// uneven sizes chosen by the first byte, to exercise the reader's buffer refills. Must
    /// never panic, and must consume the input exactly.
    pub fn segment(data: &[u8]) {
        let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
        let mut bytes = crate::entry::SEGMENT_MAGIC.to_vec();
        bytes.extend_from_slice(data);
        let reader = Chunked {
            data: &bytes,
            pos: 0,
            step,
        };
        let Ok(Some(mut r)) = crate::segment::FrameReader::from_reader(reader) else {
            panic!("the magic is present, so the reader must open");
        };
        let mut consumed = crate::entry::SEGMENT_MAGIC.len() as u64;
        loop {
            match r.next_frame() {
                Ok(crate::segment::Next::Frame(e, leaf, offset)) => {
                    assert_eq!(offset, consumed, "frames are contiguous");
                    assert_eq!(leaf, crate::merkle::leaf_hash(e));
                    let _ = crate::entry::EntryRef::decode(e);
                    consumed += (e.len() + crate::entry::FRAME_OVERHEAD) as u64;
                }
                Ok(crate::segment::Next::End) => {
                    assert_eq!(consumed, bytes.len() as u64, "end only at the end");
                    break;
                }
                Ok(crate::segment::Next::Bad(_, offset)) => {
                    assert_eq!(offset, consumed, "bad bytes reported where they start");
                    break;
                }
                Err(_) => break,
            }
        }
    }

    /// A reader that hands out at most `step` bytes per call.
    struct Chunked<'a> {
        data: &'a [u8],
        pos: usize,
        step: usize,
    }

    impl std::io::Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    const FUZZ_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
}
