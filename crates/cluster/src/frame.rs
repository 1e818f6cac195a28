//! Length-framed messages: `u32` little-endian length, then that many bytes.
//!
//! The reader checks the length against a limit before it allocates, so a peer cannot
//! make it buffer more than `frame_bytes_max` per connection.

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Append one frame to `out`.
pub fn put_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Read one frame into `buf` (replacing its contents). `Ok(false)` at a clean end of
/// stream between frames; an error for a frame above `max` or a stream cut inside a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds limit {max}"),
        ));
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
