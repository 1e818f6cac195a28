//! Connection hygiene: an idle watchdog on every connection and a per-client-address
//! connection cap, so idle or stalled clients cannot hold connections or transfer slots
//! (issue 12, security 3). A client that stalls mid-body moves no byte, so the watchdog
//! drops its connection and with it the request and its transfer slot.
//!
//! A client that trickles a byte now and then, just often enough to keep the watchdog
//! quiet, is caught by the minimum body rate of object transfers ([`crate::rate`]).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Time limits of one connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Longest wait for a complete request head (HTTP/1), from the connection's start
    /// or the end of the previous response: also the idle keep-alive limit.
    pub header_timeout: Duration,
    /// Longest time a connection may move no byte in either direction.
    pub idle_timeout: Duration,
    /// Most connections from one client address at once.
    pub per_address_max: usize,
}

/// Open connections per client address, bounded by [`ConnLimits::per_address_max`].
#[derive(Clone, Debug, Default)]
pub struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One counted connection; uncounted on drop.
#[derive(Debug)]
pub struct AddressSlot {
    table: PerAddress,
    ip: IpAddr,
}

impl PerAddress {
    /// A slot for a connection from `ip`, or `None` if `ip` already has `max` of them.
    pub fn acquire(&self, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut t = self.0.lock().expect("per-address table lock");
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().expect("per-address table lock");
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// The time of a connection's last byte, for [`watchdog`].
#[derive(Clone, Debug)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    /// A connection starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::default(),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// Completes once `activity` has seen no byte for `idle`: the caller then drops the
/// connection.
pub async fn watchdog(activity: Activity, idle: Duration) {
    loop {
        let deadline = activity.last() + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// A connection's IO, recording every byte moved in its [`Activity`].
pub struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T> Watched<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Activity) -> Self {
        Self { inner, activity }
    }

    /// The wrapped IO.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The response to a connection refused by the per-address cap (then closed).
pub const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: application/xml\r\nConnection: close\r\nContent-Length: 113\r\n\r\n\
<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
<Message>too many connections</Message></Error>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_cap_counts_and_releases() {
        let t = PerAddress::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = t.acquire(ip, 2).unwrap();
        let _b = t.acquire(ip, 2).unwrap();
        assert!(t.acquire(ip, 2).is_none());
        assert!(t.acquire("10.0.0.1".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(t.acquire(ip, 2).is_some());
    }

    #[test]
    fn refusal_response_has_the_announced_length() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body.len(), 113);
    }
}
