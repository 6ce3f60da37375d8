//! Framing of the two serialization modes and incremental frame decoding.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::value::Value;

/// Node's `serialization` option for the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// One `JSON.stringify` text per line (Node's default, and PM2 fork mode's).
    #[default]
    Json,
    /// `u32` big-endian length + V8 ValueSerializer payload.
    Advanced,
}

impl Mode {
    /// The value of `NODE_CHANNEL_SERIALIZATION_MODE`.
    pub fn as_env(self) -> &'static str {
        match self {
            Mode::Json => "json",
            Mode::Advanced => "advanced",
        }
    }
}

/// The byte Bun's JSON channel puts before an internal message
/// (`{cmd:'NODE_CLUSTER',…}`) to tell it from the user's own messages. It
/// cannot start a JSON text, so a JSON decoder drops it wherever it comes
/// from; writing it is a channel option (`Limits::mark_internal`).
pub const BUN_INTERNAL_MARK: u8 = 0x02;

/// Default cap on one incoming frame.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 << 20;

/// Appends one complete frame (framing included) for `value` to `out`.
///
/// `version` is the V8 header version for advanced mode (ignored for JSON).
/// On error `out` is unchanged.
pub fn encode_frame_into(value: &Value, mode: Mode, version: u32, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    match mode {
        Mode::Json => {
            crate::json::encode_into(value, out)?;
            out.push(b'\n');
        }
        Mode::Advanced => {
            out.extend_from_slice(&[0; 4]);
            if let Err(e) = crate::v8::encode_into(value, version, out) {
                out.truncate(start);
                return Err(e);
            }
            let len = out.len() - start - 4;
            let Ok(len) = u32::try_from(len) else {
                out.truncate(start);
                return Err(Error::NotEncodable("message larger than 4 GiB"));
            };
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        }
    }
    Ok(())
}

/// One complete frame for `value` in `mode` (advanced mode writes version 15).
pub fn encode_frame(value: &Value, mode: Mode) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_frame_into(value, mode, crate::v8::DEFAULT_VERSION, &mut out)?;
    Ok(out)
}

/// Encodes just the payload (no length prefix, no newline).
pub fn encode_payload(value: &Value, mode: Mode) -> Result<Vec<u8>> {
    match mode {
        Mode::Json => crate::json::encode(value),
        Mode::Advanced => crate::v8::encode(value),
    }
}

/// Checks that `payload` can be framed in `mode` without crashing a Node
/// reader, then appends the frame to `out`.
///
/// This is a cheap sanity check (header and version, or no newline in a
/// non-empty line), not a full validation.
pub fn frame_raw_into(payload: &[u8], mode: Mode, out: &mut Vec<u8>) -> Result<()> {
    check_raw(payload, mode)?;
    match mode {
        Mode::Json => {
            out.extend_from_slice(payload);
            out.push(b'\n');
        }
        Mode::Advanced => {
            let len =
                u32::try_from(payload.len()).map_err(|_| Error::InvalidRaw("payload larger than 4 GiB"))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(payload);
        }
    }
    Ok(())
}

/// The sanity check of [`frame_raw_into`]: a JSON payload is a non-blank line
/// without newline, a V8 payload has a supported header and a value byte.
pub fn check_raw(payload: &[u8], mode: Mode) -> Result<()> {
    match mode {
        Mode::Json => {
            if payload.iter().all(|b| b.is_ascii_whitespace()) {
                return Err(Error::InvalidRaw("empty JSON message"));
            }
            if memchr_nl(payload).is_some() {
                return Err(Error::InvalidRaw("JSON message contains a newline"));
            }
        }
        Mode::Advanced => {
            crate::v8::read_header(payload)
                .map_err(|_| Error::InvalidRaw("missing or unsupported V8 header"))?;
            if payload.len() < 3 {
                return Err(Error::InvalidRaw("V8 payload without a value"));
            }
        }
    }
    Ok(())
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Splits a byte stream into frame payloads.
///
/// Feed it whatever each read returned with [`FrameDecoder::extend`], then call
/// [`FrameDecoder::next_frame`] until it returns `Ok(None)`. Payloads exclude
/// the framing: no length prefix in advanced mode, no `\n` in JSON mode. A
/// frame over the cap is an error before anything is allocated for it; after
/// an error the stream cannot be resynchronised and the decoder stays failed.
#[derive(Debug)]
pub struct FrameDecoder {
    mode: Mode,
    max_frame_len: usize,
    buf: BytesMut,
    /// JSON mode: bytes of `buf` already known to contain no newline.
    scanned: usize,
    failed: bool,
}

impl FrameDecoder {
    /// A decoder for `mode` with a cap on one frame's payload.
    pub fn new(mode: Mode, max_frame_len: usize) -> Self {
        FrameDecoder { mode, max_frame_len, buf: BytesMut::new(), scanned: 0, failed: false }
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that do not yet form a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// A copy of the bytes held (the start of a frame not complete yet), for
    /// a decoder that continues this stream elsewhere.
    pub fn pending(&self) -> Vec<u8> {
        self.buf.to_vec()
    }

    /// The next complete payload, if any.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>> {
        if self.failed {
            return Err(Error::Closed);
        }
        let r = self.next_inner();
        if r.is_err() {
            self.failed = true;
            self.buf = BytesMut::new();
        }
        r
    }

    fn next_inner(&mut self) -> Result<Option<Bytes>> {
        match self.mode {
            Mode::Advanced => {
                if self.buf.len() < 4 {
                    return Ok(None);
                }
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
                if len > self.max_frame_len {
                    return Err(Error::FrameTooLarge { len: len as u64, max: self.max_frame_len });
                }
                if self.buf.len() < 4 + len {
                    // No reservation from the announced length: memory follows
                    // the bytes that actually arrive.
                    return Ok(None);
                }
                self.buf.advance(4);
                Ok(Some(self.buf.split_to(len).freeze()))
            }
            Mode::Json => match memchr_nl(&self.buf[self.scanned..]) {
                Some(p) => {
                    let end = self.scanned + p;
                    self.scanned = 0;
                    if end > self.max_frame_len {
                        return Err(Error::FrameTooLarge { len: end as u64, max: self.max_frame_len });
                    }
                    let mut line = self.buf.split_to(end).freeze();
                    self.buf.advance(1);
                    if line.first() == Some(&BUN_INTERNAL_MARK) {
                        line.advance(1);
                    }
                    Ok(Some(line))
                }
                None => {
                    self.scanned = self.buf.len();
                    if self.buf.len() > self.max_frame_len {
                        return Err(Error::FrameTooLarge {
                            len: self.buf.len() as u64,
                            max: self.max_frame_len,
                        });
                    }
                    Ok(None)
                }
            },
        }
    }
}

/// Decodes one payload of `mode` into a value.
pub fn decode_payload(payload: &[u8], mode: Mode) -> Result<Value> {
    match mode {
        Mode::Json => crate::json::decode(payload),
        Mode::Advanced => crate::v8::decode(payload),
    }
}
