//! Length-prefixed JSON frames.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload either side accepts (16 MiB): big enough for `jlist` of
/// thousands of apps with their env, small enough that a hostile length
/// cannot exhaust memory.
pub const MAX_FRAME: u32 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(u64),
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. `Closed` is returned only when the peer closed cleanly
/// between frames; a close inside a frame is an I/O error.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len.into()));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await?;
    Ok(serde_json::from_slice(&buf)?)
}

/// Encodes a frame into bytes (for callers that write with their own I/O).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, msg)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME as usize {
        return Err(FrameError::TooLarge(len as u64));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
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
    async fn oversized_length_is_rejected_without_allocating() {
        let buf = [0xff, 0xff, 0xff, 0xff];
        let r: Result<serde_json::Value, _> = read_frame(&mut &buf[..]).await;
        assert!(matches!(r, Err(FrameError::TooLarge(_))));
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
    }
}
