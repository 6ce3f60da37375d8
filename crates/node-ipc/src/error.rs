use std::io;

/// Everything that can go wrong in this crate.
///
/// Decoding errors describe bad input and never leave partial state behind; a
/// framing error ([`Error::FrameTooLarge`]) ends the channel it happened on,
/// because a byte stream cannot be resynchronised after it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A frame announced (or a JSON line reached) more bytes than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced or accumulated length.
        len: u64,
        /// The configured cap.
        max: usize,
    },
    /// The payload ended in the middle of a value.
    #[error("payload truncated at offset {offset}")]
    Truncated {
        /// Where more bytes were needed.
        offset: usize,
    },
    /// A V8 tag this codec does not know.
    #[error("unknown V8 tag 0x{tag:02x} at offset {offset}")]
    UnknownTag {
        /// The tag byte.
        tag: u8,
        /// Its offset in the payload.
        offset: usize,
    },
    /// The payload does not start with a supported V8 version header.
    #[error("unsupported V8 serializer version {0}")]
    UnsupportedVersion(u32),
    /// Nesting went deeper than the cap.
    #[error("value nested deeper than {max} levels")]
    TooDeep {
        /// The cap.
        max: usize,
    },
    /// A two-byte string had an odd byte length.
    #[error("invalid UTF-16 string at offset {offset}")]
    InvalidUtf16 {
        /// Offset of the string.
        offset: usize,
    },
    /// Text that must be UTF-8 was not.
    #[error("invalid UTF-8 at offset {offset}")]
    InvalidUtf8 {
        /// Offset of the text.
        offset: usize,
    },
    /// Structurally invalid V8 data (counts that don't match, bad references…).
    #[error("malformed V8 data at offset {offset}: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
        /// Where.
        offset: usize,
    },
    /// Resolving back-references would build a value far larger than its input.
    #[error("value expands beyond {max} nodes")]
    TooLarge {
        /// The node budget.
        max: usize,
    },
    /// A JSON-mode line is not valid JSON.
    #[error("invalid JSON message: {0}")]
    Json(String),
    /// The value cannot be written in this mode without making Node throw.
    #[error("value cannot be encoded: {0}")]
    NotEncodable(&'static str),
    /// Raw bytes handed to `send_raw` are not a valid payload for this mode.
    #[error("invalid raw payload: {0}")]
    InvalidRaw(&'static str),
    /// The write buffer is full: the peer has stopped reading.
    #[error("peer is not reading: {buffered} bytes buffered, limit {max}")]
    PeerNotReading {
        /// Bytes already waiting.
        buffered: usize,
        /// The configured cap.
        max: usize,
    },
    /// The channel is closed.
    #[error("channel closed")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
