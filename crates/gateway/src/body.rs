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

use crate::checksum::{Check, Hasher, StoredChecksum};

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
    /// An `x-amz-checksum-*` value does not match the bytes (the algorithm's S3 name).
    #[error("The {0} you specified did not match the calculated checksum.")]
    ChecksumMismatch(&'static str),
    /// The `aws-chunked` body ended without the trailer `x-amz-trailer` announced.
    #[error("the body ended without the {0} trailer that x-amz-trailer announced")]
    MissingTrailer(&'static str),
    /// The announced trailer is not a valid checksum of its algorithm.
    #[error("Value for {0} trailer is invalid.")]
    InvalidChecksum(&'static str),
}

/// What a fully read, checked body hashed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// MD5 of the bytes.
    pub md5: [u8; 16],
    /// The verified (or computed) additional checksum, if one was asked for.
    pub checksum: Option<StoredChecksum>,
}

/// The [`Digests`] of a fully read, checked body (`None` until then).
pub type DigestSlot = Arc<Mutex<Option<Digests>>>;

/// Wraps an upload: counts and MD5-hashes the bytes, fails with a [`BodyFault`] the read
/// that crosses the size limit, and fails the end of stream if the length or MD5 is not
/// what was announced. A failed read makes the store abort the write, so nothing partial
/// becomes visible. An additional checksum ([`Checked::with_checksum`]) is computed in the
/// same pass and verified at the end. On a clean end the digests are left in
/// [`Checked::digest_slot`].
pub struct Checked<R> {
    inner: R,
    hasher: Option<Md5>,
    checksum: Option<(Check, Hasher)>,
    count: u64,
    limit: u64,
    expected_len: Option<u64>,
    expected_md5: Option<[u8; 16]>,
    slot: DigestSlot,
}

impl<R> Checked<R> {
    /// Wraps `inner`, refusing more than `limit` bytes.
    pub fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            hasher: Some(Md5::new()),
            checksum: None,
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

    /// Computes (and verifies, unless [`Check::compute`]) an additional checksum.
    pub fn with_checksum(mut self, check: Option<Check>) -> Self {
        self.checksum = check.map(|c| {
            let h = c.algorithm().hasher();
            (c, h)
        });
        self
    }

    /// Where the digests land once the whole body has been read and checked.
    pub fn digest_slot(&self) -> DigestSlot {
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
            if let Some((_, h)) = this.checksum.as_mut() {
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
        let checksum = match this.checksum.take() {
            None => None,
            Some((check, h)) => {
                let got = h.finalize();
                if let Err(f) = check.verify(&got) {
                    return Poll::Ready(Err(io::Error::other(f)));
                }
                Some(StoredChecksum::full(check.algorithm(), &got))
            }
        };
        *this.slot.lock().expect("digest slot lock") = Some(Digests { md5, checksum });
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
        let slot = c.digest_slot();
        assert_eq!(read_all(c).await.unwrap(), data);
        assert_eq!(
            *slot.lock().unwrap(),
            Some(Digests {
                md5,
                checksum: None
            })
        );

        let c = Checked::new(&data[..], 10);
        let slot = c.digest_slot();
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

    #[tokio::test]
    async fn checked_reader_verifies_an_additional_checksum() {
        use crate::checksum::Algorithm;
        let data = b"hello world";
        let good = Algorithm::Crc32c.digest(data);
        let c = Checked::new(&data[..], 100)
            .with_checksum(Some(Check::value(Algorithm::Crc32c, good.clone())));
        let slot = c.digest_slot();
        read_all(c).await.unwrap();
        let got = slot.lock().unwrap().clone().unwrap().checksum;
        assert_eq!(got, Some(StoredChecksum::full(Algorithm::Crc32c, &good)));

        let c = Checked::new(&data[..], 100)
            .with_checksum(Some(Check::value(Algorithm::Crc32c, vec![0; 4])));
        let slot = c.digest_slot();
        let e = read_all(c).await.unwrap_err();
        assert!(matches!(fault(&e), BodyFault::ChecksumMismatch("CRC32C")));
        assert_eq!(*slot.lock().unwrap(), None);
    }
}
