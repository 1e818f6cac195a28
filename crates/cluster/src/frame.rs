//! Length-framed messages: `u32` little-endian length, then that many bytes.
//!
//! The reader never allocates from the declared length. It checks the length against the
//! connection's limit, then grows the frame buffer only as bytes actually arrive: the
//! capacity is at most `max(FRAME_READ_STEP, 2 × bytes received)` and never more than the
//! declared length. A sender that declares a large frame and trickles bytes therefore
//! holds only about twice what it really sent. Deadlines ([`FrameTiming`]) bound how long a
//! connection may sit idle between frames and how long one frame may take once its first
//! byte arrived (a base plus the declared length at a minimum rate), so a slow-loris sender
//! cannot keep a connection and a half-read buffer forever.
//!
//! [`FrameReader::read_reserved`] also takes every growth of the buffer from a byte
//! [`Budget`] before allocating it, so frames still being read count against the same
//! budget as frames already queued; when the budget is short, the frame's remaining bytes
//! are read and discarded without being kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::time::Instant;

use crate::queue::{Budget, Held};

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// The first allocation for a frame's payload, and the smallest growth step.
pub const FRAME_READ_STEP: usize = 64 << 10;

/// Append one frame to `out`.
pub fn put_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why a frame could not be read. The connection is closed after any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared length is above the connection's limit (nothing was allocated).
    #[error("frame of {len} bytes exceeds limit {max}")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The connection's limit.
        max: usize,
    },
    /// No frame started within the idle deadline.
    #[error("idle for longer than {0:?}")]
    Idle(Duration),
    /// A frame that had started did not complete within its deadline.
    #[error("frame of {len} bytes not complete within its deadline ({received} received)")]
    Slow {
        /// Declared length (0 if the header itself was incomplete).
        len: usize,
        /// Payload bytes received.
        received: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream cut inside a frame")]
    Truncated,
    /// Transport error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Deadlines of a connection's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTiming {
    /// Longest wait for the first byte of a frame (`None`: wait forever).
    pub idle: Option<Duration>,
    /// Time allowed for any frame once its first byte arrived (`None`: no deadline) ...
    pub base: Option<Duration>,
    /// ... plus its declared length at this many bytes per second.
    pub rate_min_bytes_per_sec: u64,
}

impl FrameTiming {
    /// No deadlines (the client side and tests).
    pub const NONE: FrameTiming = FrameTiming {
        idle: None,
        base: None,
        rate_min_bytes_per_sec: 1,
    };

    fn frame_deadline(&self, started: Instant, len: usize) -> Option<Instant> {
        let base = self.base?;
        let rate = self.rate_min_bytes_per_sec.max(1);
        let extra = Duration::from_secs_f64(len as f64 / rate as f64);
        started
            .checked_add(base.saturating_add(extra))
            .or_else(|| started.checked_add(Duration::from_secs(86_400)))
    }
}

/// Counters of frame reading, shared by the connections of one endpoint.
#[derive(Debug, Default)]
pub struct FrameStats {
    /// Largest frame-buffer capacity any connection has held (bytes).
    pub buffer_bytes_hwm: AtomicUsize,
    /// Payload and header bytes read.
    pub bytes_read: AtomicU64,
    /// Payload bytes of frames being read now (not complete yet), all connections.
    pub partial_bytes: AtomicUsize,
    /// Payload bytes read and discarded because the frame's budget was full
    /// ([`FrameReader::read_reserved`]).
    pub discarded_bytes: AtomicU64,
    /// Frames refused for their declared length.
    pub too_large: AtomicU64,
    /// Connections closed because a frame did not complete in time.
    pub slow: AtomicU64,
    /// Connections closed for idleness.
    pub idle: AtomicU64,
}

/// Chooses a frame's budgets from its declared length: one budget and optionally a
/// second, both taken at once ([`FrameReader::read_reserved_by`]).
pub type PickBudget<'a> = dyn Fn(usize) -> (Arc<Budget>, Option<Arc<Budget>>) + Send + Sync + 'a;

/// A frame read by [`FrameReader::read_reserved`].
#[derive(Debug)]
pub enum Reserved {
    /// The whole frame, with its bytes held from the budget.
    Frame(Vec<u8>, Held),
    /// The budget could not hold the frame: its bytes were read and discarded.
    Discarded {
        /// Declared length.
        len: usize,
    },
}

/// Reads frames of at most `max` bytes with `timing`'s deadlines.
#[derive(Debug)]
pub struct FrameReader<'s> {
    max: usize,
    timing: FrameTiming,
    stats: Option<&'s FrameStats>,
}

async fn within<T>(
    deadline: Option<Instant>,
    f: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, f).await.ok(),
        None => Some(f.await),
    }
}

impl<'s> FrameReader<'s> {
    /// A reader for frames of at most `max` bytes.
    #[must_use]
    pub fn new(max: usize, timing: FrameTiming, stats: Option<&'s FrameStats>) -> Self {
        FrameReader { max, timing, stats }
    }

    /// The next frame. `Ok(None)` at a clean end of stream between frames.
    pub async fn read<R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
    ) -> Result<Option<Vec<u8>>, FrameError> {
        Ok(match self.read_inner(r, None).await? {
            Some(Reserved::Frame(f, _)) => Some(f),
            // Without a budget nothing is discarded.
            Some(Reserved::Discarded { .. }) | None => None,
        })
    }

    /// The next frame, its buffer taken from `budget` as it grows (before each allocation,
    /// never from the declared length): the bytes of a frame still being read count
    /// against `budget` from the moment they may arrive, and the completed frame keeps
    /// exactly its length. If `budget` is short, everything held for the frame is given
    /// back and its remaining bytes are read and discarded (the connection stays usable).
    /// A failed or cancelled read gives its bytes back too.
    pub async fn read_reserved<R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
        budget: &Arc<Budget>,
    ) -> Result<Option<Reserved>, FrameError> {
        let pick = |_len: usize| (budget.clone(), None);
        self.read_inner(r, Some(&pick)).await
    }

    /// [`FrameReader::read_reserved`] with the budgets chosen per frame once its length is
    /// known: `pick(len)` returns a budget and optionally a second one (each growth is
    /// taken from both at once, [`Budget::try_take_both`]).
    pub async fn read_reserved_by<R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
        pick: &PickBudget<'_>,
    ) -> Result<Option<Reserved>, FrameError> {
        self.read_inner(r, Some(pick)).await
    }

    async fn read_inner<R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
        pick: Option<&PickBudget<'_>>,
    ) -> Result<Option<Reserved>, FrameError> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        let idle = self.timing.idle.map(|d| Instant::now() + d);
        let first = match within(idle, r.read(&mut header)).await {
            None => {
                self.count(|s| &s.idle);
                return Err(FrameError::Idle(self.timing.idle.unwrap_or_default()));
            }
            Some(n) => n?,
        };
        if first == 0 {
            return Ok(None);
        }
        let started = Instant::now();
        let header_deadline = self.timing.frame_deadline(started, 0);
        let mut got = first;
        while got < FRAME_HEADER_BYTES {
            match within(header_deadline, r.read(&mut header[got..])).await {
                None => {
                    self.count(|s| &s.slow);
                    return Err(FrameError::Slow {
                        len: 0,
                        received: 0,
                    });
                }
                Some(Ok(0)) => return Err(FrameError::Truncated),
                Some(n) => got += n?,
            }
        }
        self.add_read(FRAME_HEADER_BYTES);
        let len = u32::from_le_bytes(header) as usize;
        if len > self.max {
            self.count(|s| &s.too_large);
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        let deadline = self.timing.frame_deadline(started, len);
        let budget = pick.map(|p| p(len));
        let mut buf = Vec::new();
        let mut partial = Partial {
            stats: self.stats,
            bytes: 0,
        };
        // Bytes held from `budget` for this frame: always the buffer's target size.
        let mut held: Option<Held> = None;
        let mut reserved = 0;
        while buf.len() < len {
            // Grow with what arrived, never with what was declared.
            let target = len.min(FRAME_READ_STEP.max(buf.len().saturating_mul(2)));
            if let Some((own, shared)) = &budget
                && reserved < target
            {
                match Budget::try_take_both(own, shared.as_ref(), target - reserved) {
                    Some(h) => {
                        reserved = target;
                        held = Some(match held {
                            Some(mut all) => {
                                all.merge(h);
                                all
                            }
                            None => h,
                        });
                    }
                    None => {
                        let received = buf.len();
                        drop((buf, held, partial));
                        self.discard(r, len, received, deadline).await?;
                        return Ok(Some(Reserved::Discarded { len }));
                    }
                }
            }
            if buf.capacity() < target {
                buf.reserve_exact(target - buf.len());
                if let Some(s) = self.stats {
                    s.buffer_bytes_hwm
                        .fetch_max(buf.capacity(), Ordering::Relaxed);
                }
            }
            let want = (target - buf.len()) as u64;
            let mut limited = (&mut *r).take(want);
            match within(deadline, limited.read_buf(&mut buf)).await {
                None => {
                    self.count(|s| &s.slow);
                    return Err(FrameError::Slow {
                        len,
                        received: buf.len(),
                    });
                }
                Some(Ok(0)) => return Err(FrameError::Truncated),
                Some(n) => {
                    let n = n?;
                    self.add_read(n);
                    partial.add(n);
                }
            }
        }
        // An empty frame holds nothing.
        Ok(Some(Reserved::Frame(buf, held.unwrap_or_default())))
    }

    /// Read and drop the rest of a frame of `len` bytes of which `received` arrived.
    async fn discard<R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
        len: usize,
        received: usize,
        deadline: Option<Instant>,
    ) -> Result<(), FrameError> {
        let mut scratch = [0u8; 4096];
        let mut got = received;
        if let Some(s) = self.stats {
            s.discarded_bytes
                .fetch_add(received as u64, Ordering::Relaxed);
        }
        while got < len {
            let want = (len - got).min(scratch.len());
            match within(deadline, r.read(&mut scratch[..want])).await {
                None => {
                    self.count(|s| &s.slow);
                    return Err(FrameError::Slow { len, received: got });
                }
                Some(Ok(0)) => return Err(FrameError::Truncated),
                Some(n) => {
                    let n = n?;
                    got += n;
                    self.add_read(n);
                    if let Some(s) = self.stats {
                        s.discarded_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(())
    }

    fn count(&self, f: impl Fn(&FrameStats) -> &AtomicU64) {
        if let Some(s) = self.stats {
            f(s).fetch_add(1, Ordering::Relaxed);
        }
    }

    fn add_read(&self, n: usize) {
        if let Some(s) = self.stats {
            s.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Counts a frame's bytes in [`FrameStats::partial_bytes`] until it completes or fails
/// (or the read is cancelled).
struct Partial<'s> {
    stats: Option<&'s FrameStats>,
    bytes: usize,
}

impl Partial<'_> {
    fn add(&mut self, n: usize) {
        if let Some(s) = self.stats {
            s.partial_bytes.fetch_add(n, Ordering::Relaxed);
            self.bytes += n;
        }
    }
}

impl Drop for Partial<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.stats {
            s.partial_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

/// Read one frame of at most `max` bytes into `buf` (replacing its contents), without
/// deadlines. `Ok(false)` at a clean end of stream between frames; an error for a frame
/// above `max` or a stream cut inside a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    match FrameReader::new(max, FrameTiming::NONE, None).read(r).await {
        Ok(Some(b)) => {
            *buf = b;
            Ok(true)
        }
        Ok(None) => Ok(false),
        Err(FrameError::Io(e)) => Err(e),
        Err(e) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let mut wire = Vec::new();
        put_frame(&mut wire, b"hello");
        put_frame(&mut wire, b"");
        put_frame(&mut wire, &[7u8; 100]);
        let mut r = wire.as_slice();
        let mut buf = Vec::new();
        assert!(read_frame(&mut r, 64, &mut buf).await.expect("frame"));
        assert_eq!(buf, b"hello");
        assert!(read_frame(&mut r, 64, &mut buf).await.expect("frame"));
        assert!(buf.is_empty());
        assert!(
            read_frame(&mut r, 64, &mut buf).await.is_err(),
            "over the limit"
        );
        let mut cut: &[u8] = &wire[..7];
        assert!(
            read_frame(&mut cut, 64, &mut buf).await.is_err(),
            "cut inside a frame"
        );
        let mut empty: &[u8] = &[];
        assert!(
            !read_frame(&mut empty, 64, &mut buf)
                .await
                .expect("clean end")
        );
    }

    #[tokio::test]
    async fn large_frames_arrive_whole_with_the_buffer_sized_exactly() {
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        put_frame(&mut wire, &payload);
        put_frame(&mut wire, b"next");
        let stats = FrameStats::default();
        let reader = FrameReader::new(4 << 20, FrameTiming::NONE, Some(&stats));
        let mut r = wire.as_slice();
        let got = reader.read(&mut r).await.expect("read").expect("frame");
        assert_eq!(got, payload);
        assert_eq!(got.capacity(), payload.len(), "no slack kept in the queue");
        let next = reader.read(&mut r).await.expect("read").expect("frame");
        assert_eq!(next, b"next", "the reader stops at the frame's end");
    }

    /// The attacker declares a 30 MiB frame and sends 100 KiB: the buffer follows what
    /// arrived, not what was declared.
    #[tokio::test]
    async fn a_declared_length_does_not_allocate_before_the_bytes_arrive() {
        let (mut attacker, mut replica) = tokio::io::duplex(1 << 20);
        let stats = FrameStats::default();
        let declared: u32 = 30 << 20;
        attacker
            .write_all(&declared.to_le_bytes())
            .await
            .expect("header");
        attacker
            .write_all(&vec![1u8; 100 << 10])
            .await
            .expect("trickle");
        drop(attacker);
        let reader = FrameReader::new(32 << 20, FrameTiming::NONE, Some(&stats));
        let r = reader.read(&mut replica).await;
        assert!(matches!(r, Err(FrameError::Truncated)), "{r:?}");
        let hwm = stats.buffer_bytes_hwm.load(Ordering::Relaxed);
        assert!(
            hwm <= 2 * (100 << 10) + FRAME_READ_STEP,
            "buffer grew to {hwm} bytes for 100 KiB received"
        );
        assert_eq!(
            stats.bytes_read.load(Ordering::Relaxed),
            4 + (100 << 10),
            "every byte sent was read"
        );
    }

    /// With a budget: a frame larger than the free budget is read and discarded holding
    /// nothing, the next one is read whole and keeps exactly its length from the budget.
    #[tokio::test]
    async fn a_frame_beyond_its_budget_is_discarded_and_the_next_one_read() {
        let mut wire = Vec::new();
        put_frame(&mut wire, &vec![3u8; 150_000]);
        put_frame(&mut wire, b"next");
        let budget = Budget::new(100_000, None);
        let stats = FrameStats::default();
        let reader = FrameReader::new(1 << 20, FrameTiming::NONE, Some(&stats));
        let mut r = wire.as_slice();
        let first = reader.read_reserved(&mut r, &budget).await.expect("read");
        assert!(
            matches!(first, Some(Reserved::Discarded { len: 150_000 })),
            "{first:?}"
        );
        assert_eq!(budget.used(), 0);
        assert_eq!(stats.discarded_bytes.load(Ordering::Relaxed), 150_000);
        let Some(Reserved::Frame(next, held)) =
            reader.read_reserved(&mut r, &budget).await.expect("read")
        else {
            panic!("the next frame");
        };
        assert_eq!(next, b"next");
        assert_eq!(budget.used(), 4, "the frame holds its length");
        drop(held);
        assert_eq!(budget.used(), 0);
        assert_eq!(stats.partial_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn idle_and_slow_senders_hit_their_deadlines() {
        let timing = FrameTiming {
            idle: Some(Duration::from_millis(100)),
            base: Some(Duration::from_millis(50)),
            rate_min_bytes_per_sec: 20_000,
        };
        let stats = FrameStats::default();
        let reader = FrameReader::new(1 << 20, timing, Some(&stats));
        // Idle: nothing at all.
        let (_keep, mut rd) = tokio::io::duplex(1024);
        assert!(matches!(
            reader.read(&mut rd).await,
            Err(FrameError::Idle(_))
        ));
        // Slow: a 2,000-byte frame gets 50 ms + 100 ms; 10 bytes arrive and then nothing.
        let (mut wr, mut rd) = tokio::io::duplex(1 << 16);
        wr.write_all(&2000u32.to_le_bytes()).await.expect("hdr");
        wr.write_all(&[0u8; 10]).await.expect("bytes");
        assert!(matches!(
            reader.read(&mut rd).await,
            Err(FrameError::Slow {
                len: 2000,
                received: 10
            })
        ));
        // Slow header: two of four bytes.
        let (mut wr, mut rd) = tokio::io::duplex(1 << 16);
        wr.write_all(&[1, 0]).await.expect("half header");
        assert!(matches!(
            reader.read(&mut rd).await,
            Err(FrameError::Slow { len: 0, .. })
        ));
        assert_eq!(stats.idle.load(Ordering::Relaxed), 1);
        assert_eq!(stats.slow.load(Ordering::Relaxed), 2);
    }
}
