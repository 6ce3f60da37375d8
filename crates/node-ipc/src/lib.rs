//! Node.js's IPC channel, from the parent's side.
//!
//! A Node child started with `NODE_CHANNEL_FD` talks to its parent over one
//! `AF_UNIX` stream socket, in one of two serializations:
//!
//! * **json**: one `JSON.stringify` text per line;
//! * **advanced**: a `u32` big-endian length, then a V8 ValueSerializer
//!   payload (`ff 0f` + one value), with Node's host objects for Buffers and
//!   TypedArrays.
//!
//! Descriptors travel with SCM_RIGHTS inside `NODE_HANDLE` envelopes, which the
//! receiver acknowledges with `NODE_HANDLE_ACK`; nothing else may be written
//! until that ACK arrives, or Node reorders messages.
//!
//! This crate provides:
//!
//! * [`ChildChannel`]: the socketpair, the `dup2` onto fd 3 and the environment
//!   for a `std::process::Command` or `tokio::process::Command`;
//! * [`Channel`]: the async parent end ([`Sender`], [`Receiver`]) with the
//!   handle protocol, back-pressure and byte-for-byte relaying;
//! * [`Value`] and the codecs ([`v8`], [`json`]), byte-identical to Node 20;
//! * [`fields`]: a cheap reader of top-level routing fields;
//! * [`FrameDecoder`]: incremental framing with a size cap.
//!
//! Every decoder here treats its input as hostile: truncation, absurd lengths,
//! unknown tags and deep nesting are typed errors, and allocations are bounded
//! by the input's size.
//!
//! ```no_run
//! # async fn f() -> Result<(), node_ipc::Error> {
//! use node_ipc::{Channel, ChildChannel, ChannelSnapshot, HandleOutcome, HandleType, Limits, Mode, Value};
//!
//! let chan = ChildChannel::new(Mode::Advanced)?.unique_id("1");
//! let mut cmd = tokio::process::Command::new("node");
//! cmd.arg("worker.js");
//! chan.apply_tokio(&mut cmd);
//! let _child = cmd.spawn()?;
//! let (tx, mut rx) = Channel::new(chan.into_parent(), Mode::Advanced, Limits::default())?;
//!
//! tx.send(&Value::object([("type", Value::from("hello")), ("n", Value::from(1))]))?;
//! let sock = std::net::TcpStream::connect("127.0.0.1:8080")?;
//! match tx.send_handle(&Value::from("conn"), HandleType::NetSocket, sock.into()).await {
//!     HandleOutcome::Acked(fd) => drop(fd), // the child owns the connection now
//!     other => eprintln!("handle not delivered: {other:?}"),
//! }
//! while let Some(msg) = rx.recv().await {
//!     let msg = msg?;
//!     if msg.fields()?.source.is_some_and(|s| s.eq_str("_sio_adapter")) {
//!         tx.send_raw(msg.payload())?; // relay verbatim
//!     } else {
//!         println!("{:?}", msg.decode()?);
//!     }
//! }
//! # Ok(()) }
//! ```

mod channel;
mod error;
pub mod fields;
mod frame;
pub mod json;
mod spawn;
mod sys;
pub mod v8;
mod value;

pub use channel::{
    Channel, ChannelSnapshot, HandleOutcome, HandleReply, HandleType, Incoming, Limits, ReceivedHandle,
    Receiver, Sender,
};
pub use error::{Error, Result};
pub use fields::{read_fields, FieldStr, FieldValue, Fields, TopLevel};
pub use frame::{
    check_raw, decode_payload, encode_frame, encode_frame_into, encode_payload, frame_raw_into, FrameDecoder,
    Mode, BUN_INTERNAL_MARK, DEFAULT_MAX_FRAME_LEN,
};
pub use spawn::{ChildChannel, DEFAULT_CHILD_FD};
pub use v8::DecodeOptions;
pub use value::{ErrorKind, JsBigInt, JsError, JsString, Props, Value, ViewKind};
