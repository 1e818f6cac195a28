//! Request bodies into the store, store reads into response bodies.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use md5::{Digest as _, Md5};
use rampart_store::StoreError;
use tokio::io::{AsyncRead, AsyncReadExt, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;
use tokio_util::io::{ReaderStream, StreamReader};

/// Bytes buffered between a store read and the HTTP response (per request).
pub const PIPE_BYTES: usize = 256 * 1024;

/// Why an upload body was refused while it streamed.
#[derive(Debug, thiserror::Error)]
pub enum BodyFault {
    /// More bytes than allowed.
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    /// The body ended with a different length than announced.
    #[error("body ended after {got} bytes, {expected} expected")]
    Incomplete {
        /// Bytes read.
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// `Content-MD5` does not match the bytes.
    #[error("Content-MD5 does not match the body")]
    BadDigest,
}

/// The MD5 of a fully read, checked body (`None` until then).
pub type Md5Slot = Arc<Mutex<Option<[u8; 16]>>>;

/// Wraps an upload: counts and MD5-hashes the bytes, fails with a [`BodyFault`] the read
/// that crosses the size limit, and fails the end of stream if the length or MD5 is not
/// what was announced. A failed read makes the store abort the write, so nothing partial
/// becomes visible. On a clean end the MD5 is left in [`Checked::md5_slot`].
pub struct Checked<R> {
    inner: R,
    hasher: Option<Md5>,
    count: u64,
    limit: u64,
    expected_len: Option<u64>,
    expected_md5: Option<[u8; 16]>,
    slot: Md5Slot,
}

impl<R> Checked<R> {
    /// Wraps `inner`, refusing more than `limit` bytes.
    pub fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            hasher: Some(Md5::new()),
            count: 0,
            limit,
            expected_len: None,
            expected_md5: None,
            slot: Arc::default(),
        }
    }

    /// Requires exactly `len` bytes.
    pub fn expect_len(mut self, len: Option<u64>) -> Self {
        self.expected_len = len;
        self
    }

    /// Requires the bytes to hash to `md5`.
    pub fn expect_md5(mut self, md5: Option<[u8; 16]>) -> Self {
        self.expected_md5 = md5;
        self
    }

    /// Where the MD5 lands once the whole body has been read and checked.
    pub fn md5_slot(&self) -> Md5Slot {
        self.slot.clone()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Checked<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.count += new.len() as u64;
            if this.count > this.limit {
                // A failed read hands back no bytes (the `AsyncRead` contract).
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::other(BodyFault::TooLarge(this.limit))));
            }
            if let Some(h) = this.hasher.as_mut() {
                h.update(new);
            }
            return Poll::Ready(Ok(()));
        }
        // End of stream: check it once.
        let Some(h) = this.hasher.take() else {
            return Poll::Ready(Ok(()));
        };
        if let Some(expected) = this.expected_len
            && expected != this.count
        {
            return Poll::Ready(Err(io::Error::other(BodyFault::Incomplete {
                got: this.count,
                expected,
            })));
        }
        let md5: [u8; 16] = h.finalize().into();
        if this.expected_md5.is_some_and(|m| m != md5) {
            return Poll::Ready(Err(io::Error::other(BodyFault::BadDigest)));
        }
        *this.slot.lock().expect("md5 slot lock") = Some(md5);
        Poll::Ready(Ok(()))
    }
}

/// An `s3s` request body as an `AsyncRead`.
pub fn blob_reader(blob: Option<s3s::dto::StreamingBlob>) -> impl AsyncRead + Unpin + Send {
    let stream = match blob {
        Some(b) => b.map_err(io::Error::other).left_stream(),
        None => futures::stream::empty().right_stream(),
    };
    StreamReader::new(stream)
}

/// A response body fed by a store read running in `task` and writing into the other end
/// of `pipe`. Waits for the first bytes (or the end) before returning, so a read that
/// fails before producing anything — a changed version, too few valid shards — becomes
/// an S3 error with a proper status instead of a truncated `200`. A failure after that
/// ends the body with an error, which the HTTP layer turns into an aborted response
/// (never a short body that looks complete).
pub async fn response_body<T: Send + 'static>(
    mut pipe: DuplexStream,
    task: JoinHandle<Result<T, StoreError>>,
) -> Result<s3s::dto::StreamingBlob, StoreError> {
    let mut first = vec![0u8; 64 * 1024];
    let n = pipe.read(&mut first).await.map_err(StoreError::Output)?;
    if n == 0 {
        // The read ended before producing a byte: empty object or an error.
        join(task).await?;
        return Ok(s3s::dto::StreamingBlob::wrap(futures::stream::empty::<
            Result<Bytes, io::Error>,
        >()));
    }
    first.truncate(n);
    let tail = futures::stream::once(async move {
        match join(task).await {
            Ok(_) => None,
            Err(e) => Some(Err(io::Error::other(e.to_string()))),
        }
    })
    .filter_map(futures::future::ready);
    let stream = futures::stream::once(futures::future::ready(Ok(Bytes::from(first))))
        .chain(ReaderStream::with_capacity(pipe, PIPE_BYTES))
        .chain(tail);
    Ok(s3s::dto::StreamingBlob::wrap(SyncStream::new(stream)))
}

async fn join<T>(task: JoinHandle<Result<T, StoreError>>) -> Result<T, StoreError> {
    match task.await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Output(io::Error::other(e))),
    }
}

/// Makes a `Send` stream `Sync` by requiring `&mut` access to poll it (the
/// `sync_wrapper` argument: a shared reference gives no access at all).
struct SyncStream<S> {
    inner: Mutex<Pin<Box<S>>>,
}

impl<S> SyncStream<S> {
    fn new(s: S) -> Self {
        Self {
            inner: Mutex::new(Box::pin(s)),
        }
    }
}

impl<S: Stream> Stream for SyncStream<S> {
    type Item = S::Item;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        let inner = this
            .inner
            .get_mut()
            .expect("never poisoned: only &mut access");
        inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all<R: AsyncRead + Unpin>(mut r: R) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).await?;
        Ok(v)
    }

    fn fault(e: &io::Error) -> &BodyFault {
        e.get_ref().unwrap().downcast_ref::<BodyFault>().unwrap()
    }

    #[tokio::test]
    async fn checked_reader_counts_hashes_and_refuses() {
        let data = b"hello world".to_vec();
        let md5: [u8; 16] = Md5::digest(&data).into();
        let c = Checked::new(&data[..], 100)
            .expect_len(Some(11))
            .expect_md5(Some(md5));
        let slot = c.md5_slot();
        assert_eq!(read_all(c).await.unwrap(), data);
        assert_eq!(*slot.lock().unwrap(), Some(md5));

        let c = Checked::new(&data[..], 10);
        let slot = c.md5_slot();
        let e = read_all(c).await.unwrap_err();
        assert!(matches!(fault(&e), BodyFault::TooLarge(10)));
        assert_eq!(*slot.lock().unwrap(), None);

        let c = Checked::new(&data[..], 100).expect_md5(Some([0; 16]));
        let e = read_all(c).await.unwrap_err();
        assert!(matches!(fault(&e), BodyFault::BadDigest));

        let c = Checked::new(&data[..], 100).expect_len(Some(12));
        let e = read_all(c).await.unwrap_err();
        assert!(matches!(
            fault(&e),
            BodyFault::Incomplete {
                got: 11,
                expected: 12
            }
        ));
    }
}
