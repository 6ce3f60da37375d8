//! Packing (`amp-message`) and framing (`amp`).

use crate::{Error, AMP_VERSION, MAX_ARGS};

/// One encoded amp frame, ready to write.
pub type Frame = Vec<u8>;

/// `s:` + the string, as `amp-message` packs a JS string.
pub fn pack_str(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + s.len());
    v.extend_from_slice(b"s:");
    v.extend_from_slice(s.as_bytes());
    v
}

/// `j:` + JSON text the caller already serialized (large replies are built
/// as text once, never re-parsed).
pub fn pack_json_text(json: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + json.len());
    v.extend_from_slice(b"j:");
    v.extend_from_slice(json.as_bytes());
    v
}

/// `j:` + the value serialized.
pub fn pack_value(v: &serde_json::Value) -> Vec<u8> {
    pack_json_text(&v.to_string())
}

/// Frames already packed arguments: meta byte, then length-prefixed args.
pub fn encode(args: &[Vec<u8>]) -> Result<Frame, Error> {
    if args.is_empty() {
        return Err(Error::NoArgs);
    }
    if args.len() > MAX_ARGS {
        return Err(Error::TooManyArgs(args.len()));
    }
    let mut len = 1usize;
    for a in args {
        if u32::try_from(a.len()).is_err() {
            return Err(Error::ArgTooLarge(a.len()));
        }
        len += 4 + a.len();
    }
    let mut buf = Vec::with_capacity(len);
    buf.push(AMP_VERSION << 4 | args.len() as u8);
    for a in args {
        buf.extend_from_slice(&(a.len() as u32).to_be_bytes());
        buf.extend_from_slice(a);
    }
    Ok(buf)
}
