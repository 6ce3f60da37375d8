//! The wire format pm2's clients speak to its daemon, as a pure codec.
//!
//! pm2 (the `pm2` npm package, `lib/Client.js` and `lib/Daemon.js`) talks to
//! its daemon over two unix sockets with the `pm2-axon` library:
//!
//! - `rpc.sock`: a `req` socket on the client, `rep` on the daemon, carrying
//!   `pm2-axon-rpc` calls;
//! - `pub.sock`: `pub-emitter` on the daemon, `sub-emitter` on clients.
//!
//! Every message on both is one **amp** frame (the `amp` package): a meta
//! byte (`version << 4 | argc`, version 1, 1..=15 arguments), then per
//! argument a big-endian u32 length and that many bytes. Arguments are
//! packed by `amp-message`: `s:<utf-8>` is a string, `j:<json>` a JSON value
//! (`undefined` travels as `null`), anything else a binary blob.
//!
//! RPC: a request is `[j:{"type":"call","method":M,"args":[...]}, id]`
//! (`id` is the req socket's `s:<pid>:<n>`), or `[j:{"type":"methods"}, id]`.
//! The reply echoes the id as the last argument: `[j:{"args":[...]}, id]`
//! on success (the callback's arguments after `err`), `[j:{"error":msg}, id]`
//! on failure. Pub/sub: an event is `[s:<topic>, j:<data>]`.
//!
//! [`Decoder`] is incremental (bytes arrive in any split), bounded
//! ([`Decoder::new`] takes the largest frame accepted) and never panics:
//! every hostile input is an [`Error`] after which the connection is closed.

mod decode;
mod encode;
pub mod rpc;

pub use decode::{unpack, Arg, Decoder};
pub use encode::{encode, pack_json_text, pack_str, pack_value, Frame};

/// The amp protocol version pm2's libraries write (and the only one read).
pub const AMP_VERSION: u8 = 1;
/// amp carries the argument count in four bits.
pub const MAX_ARGS: usize = 15;
/// Largest frame the daemon accepts from a client by default (16 MiB): a
/// `prepare` call carries one app with its whole environment, far below.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error("amp version {0} is not supported (only version 1)")]
    Version(u8),
    #[error("an amp frame must carry at least one argument")]
    NoArgs,
    #[error("amp frame of at least {0} bytes exceeds the {1}-byte limit")]
    TooLarge(u64, usize),
    #[error("too many arguments ({0}; amp carries at most 15)")]
    TooManyArgs(usize),
    #[error("argument of {0} bytes cannot be framed")]
    ArgTooLarge(usize),
    #[error("malformed JSON argument: {0}")]
    Json(String),
    #[error("malformed RPC message: {0}")]
    Rpc(String),
}
