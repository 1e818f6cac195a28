//! Checkpoint encodings: the canonical checkpoint blob ([`CheckpointState`]), built with
//! the snapshot written in place and decoded with the snapshot borrowed
//! ([`CheckpointView`]), and the split encoding of a `PersistEntry::Checkpoint` that lets a
//! disk storage write and read the blob without a second copy (issue 10, finding 5).

use super::{DecodeError, Reader, WIRE_VERSION, WireLimits, Writer};
use crate::storage::{CheckpointRecord, PersistEntry};
use crate::types::{ClientId, Config, RequestSeq, SeqNo, Timestamp};

/// The contents of a checkpoint: everything a replica needs to continue from instance
/// `cid`, and nothing replica-specific, so correct replicas produce identical bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointState {
    /// Last instance included.
    pub cid: SeqNo,
    /// Timestamp of that instance's batch.
    pub timestamp: Timestamp,
    /// [`crate::Application::snapshot`] output.
    pub app: Vec<u8>,
    /// Client sessions: last executed sequence number and its cached result.
    pub sessions: Vec<(ClientId, RequestSeq, Vec<u8>)>,
}

/// A decoded checkpoint that borrows its snapshot from the blob, so that restoring from a
/// checkpoint does not copy the (possibly GiB-sized) snapshot once more (issue 10,
/// finding 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointView<'a> {
    /// Last instance included.
    pub cid: SeqNo,
    /// Timestamp of that instance's batch.
    pub timestamp: Timestamp,
    /// [`crate::Application::snapshot`] output, borrowed from the blob.
    pub app: &'a [u8],
    /// Client sessions: last executed sequence number and its cached result.
    pub sessions: Vec<(ClientId, RequestSeq, Vec<u8>)>,
}

impl CheckpointState {
    /// Canonical encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let sessions: Vec<(ClientId, RequestSeq, &[u8])> = self
            .sessions
            .iter()
            .map(|(c, s, r)| (*c, *s, r.as_slice()))
            .collect();
        CheckpointState::encode_with(
            self.cid,
            self.timestamp,
            Some(self.app.len()),
            |out| out.extend_from_slice(&self.app),
            &sessions,
        )
    }

    /// The canonical encoding ([`CheckpointState::encode`]) of a checkpoint whose snapshot
    /// `write_app` appends to the output buffer, so the snapshot is built in place instead
    /// of in a `Vec` of its own that is then copied. If `app_len` is the exact number of
    /// bytes `write_app` appends, the buffer is allocated once with its final size.
    #[must_use]
    pub fn encode_with(
        cid: SeqNo,
        timestamp: Timestamp,
        app_len: Option<usize>,
        write_app: impl FnOnce(&mut Vec<u8>),
        sessions: &[(ClientId, RequestSeq, &[u8])],
    ) -> Vec<u8> {
        let sessions_bytes: usize = sessions.iter().map(|(_, _, r)| 8 + 8 + 4 + r.len()).sum();
        let head = 1 + 8 + 8 + 4;
        let mut w = Writer(Vec::with_capacity(
            head + app_len.unwrap_or(0) + 4 + sessions_bytes,
        ));
        w.u8(WIRE_VERSION);
        w.u64(cid.0);
        w.u64(timestamp.0);
        let at = w.0.len();
        w.u32(0);
        write_app(&mut w.0);
        let app = w.0.len() - at - 4;
        // Lengths are bounded far below u32::MAX (asserted in Config::check).
        let len = u32::try_from(app).unwrap_or(u32::MAX).to_le_bytes();
        w.0[at..at + 4].copy_from_slice(&len);
        w.len(sessions.len());
        for (c, s, r) in sessions {
            w.u64(c.0);
            w.u64(s.0);
            w.bytes(r);
        }
        w.0
    }

    /// Strict decoding with the limits of `config`.
    pub fn decode(bytes: &[u8], config: &Config) -> Result<CheckpointState, DecodeError> {
        let v = CheckpointState::decode_view(bytes, config)?;
        Ok(CheckpointState {
            cid: v.cid,
            timestamp: v.timestamp,
            app: v.app.to_vec(),
            sessions: v.sessions,
        })
    }

    /// Strict decoding with the limits of `config`, borrowing the snapshot from `bytes`.
    pub fn decode_view<'a>(
        bytes: &'a [u8],
        config: &Config,
    ) -> Result<CheckpointView<'a>, DecodeError> {
        let limits = WireLimits::from_config(config);
        let mut r = Reader::versioned(bytes, &limits)?;
        let cid = SeqNo(r.u64()?);
        let timestamp = Timestamp(r.u64()?);
        // A range, not a slice: the reader's lifetime is also that of the local limits.
        let app_len = r.slice("snapshot", config.state_bytes_max)?.len();
        let app = (r.pos - app_len)..r.pos;
        let count = r.len("sessions", config.clients_max, 20)?;
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            sessions.push((
                ClientId(r.u64()?),
                RequestSeq(r.u64()?),
                r.bytes("cached reply", config.reply_bytes_max)?,
            ));
        }
        let extra = bytes.len() - r.pos;
        if extra != 0 {
            return Err(DecodeError::Trailing { extra });
        }
        Ok(CheckpointView {
            cid,
            timestamp,
            app: &bytes[app],
            sessions,
        })
    }
}

/// Bound on an encoded checkpoint blob implied by `config` (snapshot, sessions, header).
#[must_use]
pub fn checkpoint_blob_bytes_max(config: &Config) -> usize {
    let sessions = config
        .clients_max
        .saturating_mul(8 + 8 + 4 + config.reply_bytes_max);
    1 + 8
        + 8
        + 4
        + config
            .state_bytes_max
            .saturating_add(4)
            .saturating_add(sessions)
}

impl PersistEntry {
    /// The encoding of `PersistEntry::Checkpoint(c)` without its blob: it is
    /// `head ++ c.blob ++ tail`, so a disk storage can hash and write the blob from where it
    /// is instead of building the whole encoding in a second buffer (issue 10, finding 5).
    #[must_use]
    pub fn checkpoint_encoding(c: &CheckpointRecord) -> (Vec<u8>, Vec<u8>) {
        let mut head = Writer::default();
        head.u8(WIRE_VERSION);
        head.u8(3);
        head.u64(c.cid.0);
        head.digest(&c.digest);
        head.len(c.blob.len());
        let mut tail = Writer::default();
        tail.cert(&c.proof);
        (head.0, tail.0)
    }

    /// Decode `bytes[start..]`, which must be the encoding of a `PersistEntry::Checkpoint`,
    /// reusing the allocation of `bytes` for the record's blob (the blob is moved to the
    /// front of it, not copied into a new buffer). Strict, with the limits of `config`.
    pub fn decode_checkpoint_in(
        mut bytes: Vec<u8>,
        start: usize,
        config: &Config,
    ) -> Result<CheckpointRecord, DecodeError> {
        let limits = WireLimits::from_config(config);
        let input = bytes.get(start..).ok_or(DecodeError::Truncated)?;
        let mut r = Reader::versioned(input, &limits)?;
        let tag = r.u8()?;
        if tag != 3 {
            return Err(DecodeError::Tag {
                field: "checkpoint entry",
                tag,
            });
        }
        let cid = SeqNo(r.u64()?);
        let digest = r.digest()?;
        let blob_len = r
            .slice("checkpoint", checkpoint_blob_bytes_max(config))?
            .len();
        let blob_start = start + r.pos - blob_len;
        let proof = r.cert()?;
        let extra = input.len() - r.pos;
        if extra != 0 {
            return Err(DecodeError::Trailing { extra });
        }
        bytes.truncate(blob_start + blob_len);
        bytes.drain(..blob_start);
        Ok(CheckpointRecord {
            cid,
            digest,
            blob: std::sync::Arc::new(bytes),
            proof,
        })
    }
}
