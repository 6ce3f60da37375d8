//! Length-prefixed JSON messages, sent as one or more fragments.
//!
//! Each fragment is a `u32` big-endian header and up to [`MAX_FRAGMENT`]
//! payload bytes. The header's top bit says "more fragments of this message
//! follow"; the other 31 bits are the fragment's length. A message that fits
//! in one fragment is therefore byte for byte the single frame older
//! versions sent and read, and a reply of any size (`jlist` of hundreds of
//! apps with large environments) is streamed instead of refused.
//!
//! Readers are bounded per message ([`MAX_MESSAGE`] for what the daemon
//! accepts from a client; a client reads its own daemon's replies without a
//! bound) and allocate as bytes arrive, never up front from an announced
//! length: a peer that announces 16 MiB and sends nothing costs nothing.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest fragment on the wire (16 MiB), the historical frame limit.
pub const MAX_FRAGMENT: u32 = 16 * 1024 * 1024;
/// Former name of [`MAX_FRAGMENT`].
pub const MAX_FRAME: u32 = MAX_FRAGMENT;
/// Largest message the daemon accepts from a client: far above any valid
/// request (an app is checked against [`crate::app::limits`] on arrival).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Largest hello a daemon reads before the client has identified itself.
pub const MAX_HELLO: usize = 64 * 1024;

const MORE: u32 = 1 << 31;
/// Bytes asked of the reader at once while a fragment arrives.
const READ_STEP: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("message of {0} bytes or more exceeds the limit")]
    TooLarge(u64),
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one message of at most [`MAX_MESSAGE`] bytes. `Closed` is returned
/// only when the peer closed cleanly between messages; a close inside one is
/// an I/O error.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    read_frame_limited(r, MAX_MESSAGE).await
}

/// Reads one message of any size: for a client reading its own daemon's
/// replies (the daemon is the same user, checked by the socket's mode).
pub async fn read_frame_unbounded<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    read_frame_limited(r, usize::MAX).await
}

/// Reads one message of at most `limit` payload bytes.
pub async fn read_frame_limited<R, T>(r: &mut R, limit: usize) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let buf = read_message(r, limit).await?;
    Ok(serde_json::from_slice(&buf)?)
}

/// The raw payload of one message.
pub async fn read_message<R>(r: &mut R, limit: usize) -> Result<Vec<u8>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut buf: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        let mut head = [0u8; 4];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if first && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(FrameError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        first = false;
        let head = u32::from_be_bytes(head);
        let more = head & MORE != 0;
        let len = (head & !MORE) as usize;
        if len > MAX_FRAGMENT as usize || buf.len().saturating_add(len) > limit {
            return Err(FrameError::TooLarge(buf.len().saturating_add(len) as u64));
        }
        // Grow with what arrives, not with what was announced.
        let mut left = len;
        while left > 0 {
            let step = left.min(READ_STEP);
            buf.reserve(step);
            let n = (&mut *r).take(step as u64).read_to_end(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            left -= n;
        }
        if !more {
            return Ok(buf);
        }
    }
}

/// Encodes a message into wire bytes (for callers that write with their own
/// I/O), fragmented as needed.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let payload = serde_json::to_vec(msg)?;
    Ok(fragment(&payload))
}

fn fragment(payload: &[u8]) -> Vec<u8> {
    let max = MAX_FRAGMENT as usize;
    let count = payload.len().div_ceil(max).max(1);
    let mut out = Vec::with_capacity(payload.len() + 4 * count);
    let mut chunks = payload.chunks(max).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&0u32.to_be_bytes());
    }
    while let Some(c) = chunks.next() {
        let more = if chunks.peek().is_some() { MORE } else { 0 };
        out.extend_from_slice(&(c.len() as u32 | more).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// Writes `Reply::Raw` and then `payload` as one message of raw bytes
/// (fragmented like any other), without copying or escaping the payload.
/// The reply header and the first fragment's header go out in one write.
pub async fn write_raw_reply<W>(w: &mut W, payload: &[u8]) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
{
    let mut head = encode_frame(&crate::msg::Reply::Raw)?;
    let max = MAX_FRAGMENT as usize;
    let mut chunks = payload.chunks(max).peekable();
    if chunks.peek().is_none() {
        head.extend_from_slice(&0u32.to_be_bytes());
        w.write_all(&head).await?;
    }
    while let Some(c) = chunks.next() {
        let more = if chunks.peek().is_some() { MORE } else { 0 };
        head.extend_from_slice(&(c.len() as u32 | more).to_be_bytes());
        w.write_all(&head).await?;
        head.clear();
        w.write_all(c).await?;
    }
    w.flush().await?;
    Ok(())
}

pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let buf = encode_frame(msg)?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip() {
        let buf = encode_frame(&serde_json::json!({"a": 1})).unwrap();
        let v: serde_json::Value = read_frame(&mut &buf[..]).await.unwrap();
        assert_eq!(v["a"], 1);
    }

    #[tokio::test]
    async fn small_message_is_one_classic_frame() {
        let buf = encode_frame(&"x").unwrap();
        assert_eq!(buf, [0, 0, 0, 3, b'"', b'x', b'"']);
    }

    #[tokio::test]
    async fn message_larger_than_a_fragment_streams() {
        let big = "é".repeat(10 * 1024 * 1024); // 20 MiB of JSON string
        let buf = encode_frame(&big).unwrap();
        assert_eq!(buf[0] & 0x80, 0x80, "first fragment says more follows");
        let back: String = read_frame_unbounded(&mut &buf[..]).await.unwrap();
        assert_eq!(back, big);
        // The daemon's bounded reader refuses it without reading it all.
        let r: Result<String, _> = read_frame(&mut &buf[..]).await;
        assert!(matches!(r, Err(FrameError::TooLarge(_))), "{r:?}");
    }

    #[tokio::test]
    async fn raw_reply_is_a_header_then_the_bytes_unescaped() {
        for payload in [&b""[..], &b"[{\"a\":\"\\\"q\\\"\"}]"[..]] {
            let mut buf = Vec::new();
            write_raw_reply(&mut buf, payload).await.unwrap();
            let mut r = &buf[..];
            let head: crate::msg::Reply = read_frame(&mut r).await.unwrap();
            assert!(matches!(head, crate::msg::Reply::Raw), "{head:?}");
            assert_eq!(read_message(&mut r, usize::MAX).await.unwrap(), payload);
            assert!(r.is_empty());
        }
    }

    #[tokio::test]
    async fn raw_reply_larger_than_a_fragment_streams() {
        let big = vec![b'x'; MAX_FRAGMENT as usize + 10];
        let mut buf = Vec::new();
        write_raw_reply(&mut buf, &big).await.unwrap();
        let mut r = &buf[..];
        let _: crate::msg::Reply = read_frame(&mut r).await.unwrap();
        assert_eq!(r[0] & 0x80, 0x80, "first fragment says more follows");
        assert_eq!(read_message(&mut r, usize::MAX).await.unwrap(), big);
    }

    #[tokio::test]
    async fn oversized_length_is_rejected_without_allocating() {
        let buf = [0x7f, 0xff, 0xff, 0xff];
        let r: Result<serde_json::Value, _> = read_frame(&mut &buf[..]).await;
        assert!(matches!(r, Err(FrameError::TooLarge(_))));
        let r: Result<serde_json::Value, _> = read_frame_limited(&mut &[0u8, 1, 0, 0][..], 1000).await;
        assert!(matches!(r, Err(FrameError::TooLarge(_))));
    }

    #[tokio::test]
    async fn announced_length_is_not_reserved_up_front() {
        // 16 MiB announced, 5 bytes sent, then the peer stops: the reader has
        // grown by what arrived only (it fails on EOF here).
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0x01, 0x00, 0x00, 0x00, b'{', b'"', b'a', b'"', b':']).await.unwrap();
        drop(a);
        let r = read_message(&mut b, MAX_MESSAGE).await;
        assert!(matches!(r, Err(FrameError::Io(_))), "{r:?}");
    }

    #[tokio::test]
    async fn garbage_payload_is_malformed() {
        let buf = [0, 0, 0, 3, b'x', b'y', b'z'];
        let r: Result<serde_json::Value, _> = read_frame(&mut &buf[..]).await;
        assert!(matches!(r, Err(FrameError::Malformed(_))));
    }

    #[tokio::test]
    async fn truncated_frame_is_io_error() {
        let buf = [0, 0, 0, 9, b'{'];
        let r: Result<serde_json::Value, _> = read_frame(&mut &buf[..]).await;
        assert!(matches!(r, Err(FrameError::Io(_))));
        let r: Result<serde_json::Value, _> = read_frame(&mut &[][..]).await;
        assert!(matches!(r, Err(FrameError::Closed)));
        // A message cut between fragments is not a clean close either.
        let r: Result<serde_json::Value, _> = read_frame(&mut &[0x80, 0, 0, 1, b'['][..]).await;
        assert!(matches!(r, Err(FrameError::Io(_))), "{r:?}");
    }
}
