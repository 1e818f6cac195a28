//! Sealed entries and segment frames: the byte formats, sans-IO.
//!
//! A **sealed entry** is what the Merkle tree commits to (its RFC 6962 leaf) and what the
//! C2SP `tile/entries/<N>` bundles carry:
//!
//! ```text
//! offset  size  field
//!      0     1  version (1)
//!      1     8  sequence number, big-endian (0-based index in the log)
//!      9     8  epoch, big-endian (index of the forward-secure MAC key that sealed it)
//!     17    32  previous entry's RFC 6962 leaf hash (all zeros for entry 0)
//!     49    32  HMAC-SHA-256 under K(epoch), see [`crate::mac`]
//!     81     n  entry data, 0 <= n <= ENTRY_DATA_MAX
//! ```
//!
//! A **segment frame** wraps a sealed entry in a segment file:
//! `u32 little-endian length | sealed entry | first 8 bytes of the leaf hash`. The trailing
//! check is not a security mechanism (the MAC and the Merkle tree are); it lets recovery tell a
//! torn write from an intact frame without any key.
//!
//! Every decoder here treats its input as hostile: lengths are bounded before any allocation
//! and no input makes them panic (see the fuzz targets `log_entry` and `log_segment`).

use crate::merkle::{Hash, leaf_hash};

/// Version byte of the sealed-entry format.
pub const ENTRY_VERSION: u8 = 1;
/// Bytes of a sealed entry before its data.
pub const ENTRY_HEADER_LEN: usize = 81;
/// Largest sealed entry, so it fits the u16 length prefix of a C2SP entry bundle.
pub const ENTRY_BYTES_MAX: usize = u16::MAX as usize;
/// Largest entry payload accepted by [`crate::Log::append`].
pub const ENTRY_DATA_MAX: usize = ENTRY_BYTES_MAX - ENTRY_HEADER_LEN;
/// Bytes of a segment frame around the sealed entry: length prefix and check.
pub const FRAME_OVERHEAD: usize = 4 + FRAME_CHECK_LEN;
/// Bytes of the frame check (a prefix of the entry's leaf hash).
pub const FRAME_CHECK_LEN: usize = 8;
/// Magic bytes that open every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"RLOGSEG1";

const _: () = assert!(ENTRY_DATA_MAX > 60_000);
const _: () = assert!(ENTRY_HEADER_LEN == 1 + 8 + 8 + 32 + 32);

/// A sealed entry, borrowed from the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Position of the entry in the log.
    pub seq: u64,
    /// Epoch of the key that sealed it.
    pub epoch: u64,
    /// Leaf hash of the previous entry (zeros for entry 0).
    pub prev_hash: [u8; 32],
    /// The MAC over (seq, epoch, prev_hash, data).
    pub mac: [u8; 32],
    /// The payload.
    pub data: &'a [u8],
}

/// Why bytes are not a well-formed sealed entry or frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the fixed header.
    #[error("entry shorter than its {ENTRY_HEADER_LEN}-byte header")]
    TooShort,
    /// More bytes than [`ENTRY_BYTES_MAX`].
    #[error("entry longer than {ENTRY_BYTES_MAX} bytes")]
    TooLong,
    /// Unknown version byte.
    #[error("unknown entry version {0}")]
    Version(u8),
    /// The frame's length prefix is outside the allowed range.
    #[error("frame length {0} out of range")]
    FrameLength(u32),
    /// The input ends inside a frame.
    #[error("frame truncated")]
    Truncated,
    /// The frame check does not match the entry bytes.
    #[error("frame check mismatch")]
    Check,
}

impl<'a> EntryRef<'a> {
    /// Parses a sealed entry. Never panics; rejects any length outside the format's bounds.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < ENTRY_HEADER_LEN {
            return Err(DecodeError::TooShort);
        }
        if bytes.len() > ENTRY_BYTES_MAX {
            return Err(DecodeError::TooLong);
        }
        let (header, data) = bytes.split_at(ENTRY_HEADER_LEN);
        if header[0] != ENTRY_VERSION {
            return Err(DecodeError::Version(header[0]));
        }
        Ok(EntryRef {
            seq: u64::from_be_bytes(arr(&header[1..9])),
            epoch: u64::from_be_bytes(arr(&header[9..17])),
            prev_hash: arr(&header[17..49]),
            mac: arr(&header[49..81]),
            data,
        })
    }

    /// Appends the encoding of this entry to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.data.len() <= ENTRY_DATA_MAX,
            "caller bounds the data length"
        );
        out.reserve(ENTRY_HEADER_LEN + self.data.len());
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.prev_hash);
        out.extend_from_slice(&self.mac);
        out.extend_from_slice(self.data);
    }

    /// The encoding of this entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// One frame read from a segment: the sealed entry bytes and its leaf hash.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame<'a> {
    /// The sealed entry bytes (not yet decoded).
    pub entry: &'a [u8],
    /// RFC 6962 leaf hash of `entry`, already checked against the frame check.
    pub leaf: Hash,
    /// Total bytes the frame occupies in the segment.
    pub len: usize,
}

/// Appends a frame holding `entry` (whose leaf hash is `leaf`) to `out`.
pub fn encode_frame(entry: &[u8], leaf: &Hash, out: &mut Vec<u8>) {
    assert!(
        entry.len() <= ENTRY_BYTES_MAX,
        "caller bounds the entry length"
    );
    assert!(
        entry.len() >= ENTRY_HEADER_LEN,
        "caller passes a sealed entry"
    );
    // The assert above bounds the length well below u32::MAX.
    out.extend_from_slice(&(entry.len() as u32).to_le_bytes());
    out.extend_from_slice(entry);
    out.extend_from_slice(&leaf.0[..FRAME_CHECK_LEN]);
}

/// Parses the frame at the start of `buf`. Returns `Ok(None)` when `buf` is empty.
///
/// `Truncated` means `buf` ends inside the frame (a torn tail if `buf` is the file's end).
pub fn decode_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, DecodeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let Some(len_bytes) = buf.get(..4) else {
        return Err(DecodeError::Truncated);
    };
    let len32 = u32::from_le_bytes(arr(len_bytes));
    let len = len32 as usize;
    if !(ENTRY_HEADER_LEN..=ENTRY_BYTES_MAX).contains(&len) {
        return Err(DecodeError::FrameLength(len32));
    }
    let total = 4 + len + FRAME_CHECK_LEN;
    let Some(frame) = buf.get(..total) else {
        return Err(DecodeError::Truncated);
    };
    let entry = &frame[4..4 + len];
    let leaf = leaf_hash(entry);
    let check = &frame[4 + len..];
    if check != &leaf.0[..FRAME_CHECK_LEN] {
        return Err(DecodeError::Check);
    }
    Ok(Some(Frame {
        entry,
        leaf,
        len: total,
    }))
}

/// Copies a slice of known length into an array. Callers slice exact ranges.
fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(data: &[u8]) -> Vec<u8> {
        EntryRef {
            seq: 7,
            epoch: 3,
            prev_hash: [1; 32],
            mac: [2; 32],
            data,
        }
        .encode()
    }

    #[test]
    fn entry_layout_is_fixed() {
        let e = sample(b"hi");
        assert_eq!(e.len(), ENTRY_HEADER_LEN + 2);
        assert_eq!(e[0], 1);
        assert_eq!(&e[1..9], &7u64.to_be_bytes());
        assert_eq!(&e[9..17], &3u64.to_be_bytes());
        assert_eq!(&e[81..], b"hi");
    }

    #[test]
    fn decode_rejects_bad_lengths_and_versions() {
        assert_eq!(EntryRef::decode(&[1; 80]), Err(DecodeError::TooShort));
        assert_eq!(
            EntryRef::decode(&vec![1; ENTRY_BYTES_MAX + 1]),
            Err(DecodeError::TooLong)
        );
        let mut e = sample(b"x");
        e[0] = 9;
        assert_eq!(EntryRef::decode(&e), Err(DecodeError::Version(9)));
    }

    #[test]
    fn frame_detects_torn_and_flipped_bytes() {
        let e = sample(b"payload");
        let mut buf = Vec::new();
        encode_frame(&e, &leaf_hash(&e), &mut buf);
        for cut in 1..buf.len() {
            assert_eq!(
                decode_frame(&buf[..cut]),
                Err(DecodeError::Truncated),
                "cut {cut}"
            );
        }
        for i in 4..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert_eq!(decode_frame(&b), Err(DecodeError::Check), "flip {i}");
        }
        let f = decode_frame(&buf).unwrap().unwrap();
        assert_eq!(f.entry, &e[..]);
        assert_eq!(f.len, buf.len());
        assert_eq!(decode_frame(&[]), Ok(None));
        assert_eq!(
            decode_frame(&[0xff; 12]),
            Err(DecodeError::FrameLength(u32::MAX))
        );
    }

    proptest! {
        #[test]
        fn entry_roundtrip(seq: u64, epoch: u64, prev: [u8; 32], mac: [u8; 32],
                           data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let e = EntryRef { seq, epoch, prev_hash: prev, mac, data: &data };
            let bytes = e.encode();
            prop_assert_eq!(EntryRef::decode(&bytes), Ok(e));
            let mut framed = Vec::new();
            encode_frame(&bytes, &leaf_hash(&bytes), &mut framed);
            let f = decode_frame(&framed).unwrap().unwrap();
            prop_assert_eq!(f.entry, &bytes[..]);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = EntryRef::decode(&bytes);
            let _ = decode_frame(&bytes);
        }
    }
}
