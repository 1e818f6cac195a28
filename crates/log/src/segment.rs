//! Segment files: listing them and reading frames through a bounded buffer.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::entry::{DecodeError, ENTRY_BYTES_MAX, FRAME_OVERHEAD, SEGMENT_MAGIC, decode_frame};
use crate::merkle::Hash;

/// Read buffer per segment reader: the memory bound of reading any log.
const READ_BUF_BYTES: usize = 1 << 20;
const _: () = assert!(READ_BUF_BYTES > 2 * (ENTRY_BYTES_MAX + FRAME_OVERHEAD));
/// Most segment files a log directory may hold (2^20 files of 64 MiB is 64 TiB).
pub(crate) const SEGMENTS_MAX: usize = 1 << 20;

/// A segment file and the sequence number its name says it starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub(crate) start: u64,
    pub(crate) path: PathBuf,
}

/// File name of the segment starting at `start`.
pub(crate) fn segment_name(start: u64) -> String {
    format!("{start:020}.seg")
}

/// Lists `dir`'s segment files in order. Names other than `<20 digits>.seg` are ignored.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<SegmentInfo>> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(num) = name.strip_suffix(".seg") else {
            continue;
        };
        if num.len() != 20 || !num.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(start) = num.parse::<u64>() else {
            continue;
        };
        if out.len() >= SEGMENTS_MAX {
            return Err(io::Error::other("too many segment files"));
        }
        out.push(SegmentInfo {
            start,
            path: ent.path(),
        });
    }
    out.sort_by_key(|s| s.start);
    Ok(out)
}

/// What the reader found next.
#[derive(Debug)]
pub(crate) enum Next<'a> {
    /// A frame whose check matched: entry bytes, leaf hash, offset of the frame in the file.
    Frame(&'a [u8], Hash, u64),
    /// Clean end of file.
    End,
    /// Undecodable bytes at this offset; `Truncated` at end of file is a torn tail.
    Bad(DecodeError, u64),
}

/// Reads frames from one segment file with a fixed-size buffer.
pub(crate) struct FrameReader<R = File> {
    file: R,
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
}

impl FrameReader<File> {
    /// Opens a segment and checks its magic. `Ok(None)`: the file is shorter than the magic
    /// (a segment torn at creation).
    pub(crate) fn open(path: &Path) -> io::Result<Option<Self>> {
        Self::from_reader(File::open(path)?)
    }
}

impl<R: Read> FrameReader<R> {
    /// Reads a segment from any byte source, checking its magic first.
    pub(crate) fn from_reader(mut file: R) -> io::Result<Option<Self>> {
        let mut magic = [0u8; 8];
        let mut got = 0;
        while got < magic.len() {
            let n = file.read(&mut magic[got..])?;
            if n == 0 {
                return Ok(None);
            }
            got += n;
        }
        if &magic != SEGMENT_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a segment file",
            ));
        }
        Ok(Some(FrameReader {
            file,
            buf: vec![0u8; READ_BUF_BYTES],
            pos: 0,
            filled: 0,
            base: SEGMENT_MAGIC.len() as u64,
            eof: false,
        }))
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.base += self.pos as u64;
            self.pos = 0;
        }
        while self.filled < self.buf.len() {
            let n = self.file.read(&mut self.buf[self.filled..])?;
            if n == 0 {
                self.eof = true;
                break;
            }
            self.filled += n;
        }
        Ok(())
    }

    /// The next frame, end of file, or the first undecodable bytes.
    pub(crate) fn next_frame(&mut self) -> io::Result<Next<'_>> {
        loop {
            let offset = self.base + self.pos as u64;
            let (len, leaf) = match decode_frame(&self.buf[self.pos..self.filled]) {
                Ok(Some(f)) => (f.len, f.leaf),
                Ok(None) if self.eof => return Ok(Next::End),
                Err(DecodeError::Truncated) if self.eof => {
                    return Ok(Next::Bad(DecodeError::Truncated, offset));
                }
                Ok(None) | Err(DecodeError::Truncated) => {
                    self.fill()?;
                    continue;
                }
                Err(e) => return Ok(Next::Bad(e, offset)),
            };
            let start = self.pos;
            self.pos += len;
            let entry = &self.buf[start + 4..start + len - crate::entry::FRAME_CHECK_LEN];
            return Ok(Next::Frame(entry, leaf, offset));
        }
    }
}
