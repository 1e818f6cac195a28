//! A minimum body rate for transfers with a client (issue 12, security 3): an upload
//! whose client sends too slowly, or a download whose client reads too slowly, fails, and
//! with it the store transfer, so it frees its transfer slot.
//!
//! The idle watchdog ([`crate::conn`]) closes a connection that moves no byte at all; this
//! closes the gap it leaves, a client that trickles a byte now and then.
//!
//! # What is measured
//!
//! Only time spent waiting for the client counts. A window opens when a read from the
//! client's body (or a write towards its response) cannot proceed; it closes, and the
//! client is in good standing again, once [`MinRate::window_bytes`] have moved in it. If
//! the window's time runs out first, the read or write fails with [`TooSlow`]. Time the
//! gateway itself spends elsewhere (a slow store, a busy pipeline) opens no window: while
//! the store is not reading, the client's bytes wait in socket buffers and are counted as
//! soon as it reads again.
//!
//! # Invariants
//!
//! - A transfer whose client moves fewer than `window_bytes` in any window of waiting
//!   fails within one window of the shortfall becoming certain (the timer fires even if
//!   the client sends nothing more).
//! - The state is two numbers and one timer: nothing grows with the transfer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The slowest a client may send a request body or read a response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes per second, averaged over [`MinRate::window`]; 0 disables the check.
    pub bytes_per_sec: u64,
    /// How long a client may fall behind before its transfer fails.
    pub window: Duration,
}

impl MinRate {
    /// No minimum.
    pub const OFF: Self = Self {
        bytes_per_sec: 0,
        window: Duration::from_secs(1),
    };

    /// Bytes a client must move within one window of waiting.
    pub fn window_bytes(&self) -> u64 {
        let ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        self.bytes_per_sec.saturating_mul(ms) / 1000
    }
}

/// A transfer failed because its client was slower than the [`MinRate`].
#[derive(Debug, thiserror::Error)]
#[error("the client moved {moved} bytes in {window:?}, fewer than the {needed} required")]
pub struct TooSlow {
    /// Bytes moved in the window that ran out.
    pub moved: u64,
    /// Bytes the window required.
    pub needed: u64,
    /// The window.
    pub window: Duration,
}

/// An open window (its end is the timer's deadline): the bytes moved in it.
struct Window {
    bytes: u64,
}

/// Wraps a client-facing reader or writer with a [`MinRate`] (see the module docs).
pub struct RateLimited<T> {
    inner: T,
    rate: MinRate,
    needed: u64,
    window: Option<Window>,
    timer: Pin<Box<Sleep>>,
}

impl<T> RateLimited<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, rate: MinRate) -> Self {
        Self {
            inner,
            rate,
            needed: rate.window_bytes(),
            window: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    fn enabled(&self) -> bool {
        self.rate.bytes_per_sec > 0 && self.needed > 0
    }

    /// Counts `n` bytes moved.
    fn moved(&mut self, n: usize) {
        if let Some(w) = self.window.as_mut() {
            w.bytes = w.bytes.saturating_add(n as u64);
            if w.bytes >= self.needed {
                self.window = None;
            }
        }
    }

    /// The inner IO is not ready: opens a window if none is open, and fails once the
    /// open one has run out short.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.enabled() {
            return Poll::Pending;
        }
        let w = match self.window.as_mut() {
            Some(w) => w,
            None => {
                self.timer.as_mut().reset(Instant::now() + self.rate.window);
                self.window.insert(Window { bytes: 0 })
            }
        };
        match self.timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                tracing::info!(
                    moved = w.bytes,
                    needed = self.needed,
                    "a client was slower than the minimum body rate; transfer aborted"
                );
                Poll::Ready(io::Error::other(TooSlow {
                    moved: w.bytes,
                    needed: self.needed,
                    window: self.rate.window,
                }))
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for RateLimited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                this.moved(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.waiting(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for RateLimited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                this.moved(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.waiting(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.waiting(cx).map(Err),
            r => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The [`TooSlow`] inside an IO error, if that is what it is.
pub fn too_slow(e: &io::Error) -> Option<&TooSlow> {
    e.get_ref().and_then(|i| i.downcast_ref::<TooSlow>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn rate(window_ms: u64) -> MinRate {
        MinRate {
            bytes_per_sec: 1000,
            window: Duration::from_millis(window_ms),
        }
    }

    #[tokio::test]
    async fn a_trickling_client_fails_and_a_prompt_one_does_not() {
        // 1,000 bytes are needed per 1 s window; the client sends 10 bytes every 100 ms.
        let (mut client, server) = tokio::io::duplex(64);
        let mut body = RateLimited::new(server, rate(1000));
        let trickle = tokio::spawn(async move {
            for _ in 0..600 {
                if client.write_all(&[b'x'; 10]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut sink = Vec::new();
        let e = body.read_to_end(&mut sink).await.unwrap_err();
        let slow = too_slow(&e).expect("a TooSlow error");
        assert_eq!(slow.needed, 1000);
        assert!(slow.moved < slow.needed, "{slow:?}");
        trickle.abort();

        // A client with its whole body ready, through a small pipe: many short waits,
        // none a whole (10 s) window.
        let (mut client, server) = tokio::io::duplex(4096);
        let mut body = RateLimited::new(server, rate(10_000));
        let prompt = tokio::spawn(async move {
            client.write_all(&vec![b'y'; 1 << 20]).await.unwrap();
        });
        let mut sink = Vec::new();
        body.read_to_end(&mut sink).await.unwrap();
        assert_eq!(sink.len(), 1 << 20);
        prompt.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_fails_the_writer() {
        let (_client, server) = tokio::io::duplex(1024);
        let mut out = RateLimited::new(server, rate(500));
        // The client never reads: the pipe fills, then the window runs out.
        let e = out.write_all(&[0u8; 1 << 20]).await.unwrap_err();
        assert!(too_slow(&e).is_some(), "{e}");
        // Switched off, the same write just waits.
        let (_client, server) = tokio::io::duplex(1024);
        let mut out = RateLimited::new(server, MinRate::OFF);
        let r =
            tokio::time::timeout(Duration::from_millis(1500), out.write_all(&[0u8; 1 << 20])).await;
        assert!(r.is_err(), "the write finished without a reader");
    }
}
