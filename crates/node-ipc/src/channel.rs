//! The asynchronous parent end of a Node IPC channel.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::fields::{read_fields, FieldValue, Fields};
use crate::frame::{check_raw, encode_frame_into, frame_raw_into, FrameDecoder, Mode, DEFAULT_MAX_FRAME_LEN};
use crate::sys;
use crate::v8::{DecodeOptions, DEFAULT_MAX_DEPTH, DEFAULT_VERSION, MAX_VERSION, MIN_VERSION};
use crate::value::Value;

/// Per-channel limits.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Largest incoming frame payload; a bigger one ends the channel with
    /// [`Error::FrameTooLarge`]. Default 64 MiB.
    pub max_frame_len: usize,
    /// Bytes that may wait to be written (including messages held behind a
    /// handle awaiting its ACK) before sends fail with
    /// [`Error::PeerNotReading`]. Default 64 MiB.
    pub max_write_buffer: usize,
    /// Nesting cap for [`Incoming::decode`]. Default 128.
    pub max_depth: usize,
    /// Decoded messages buffered for the [`Receiver`]; when full the channel
    /// stops reading the socket (and so also stops seeing ACKs). Default 256.
    pub incoming_queue: usize,
    /// Received fds kept while waiting for their `NODE_HANDLE` frame; extras
    /// are closed. Default 16.
    pub max_pending_fds: usize,
    /// How often a NACKed handle is sent again before giving up (Node: 3).
    pub max_handle_retries: u32,
    /// How long a graceful close waits for queued output and ACKs before it
    /// gives up. Default 5 s.
    pub close_timeout: Duration,
    /// JSON mode only: write Node's internal messages (an object whose `cmd`
    /// starts with `NODE_`) with a leading 0x02 byte, as Bun's JSON channel
    /// does and requires: Bun delivers an internal message without the mark
    /// to nobody. Incoming marks are always accepted (see
    /// [`crate::frame::BUN_INTERNAL_MARK`]). Default false (Node, Deno).
    pub mark_internal: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_write_buffer: 64 << 20,
            max_depth: DEFAULT_MAX_DEPTH,
            incoming_queue: 256,
            max_pending_fds: 16,
            max_handle_retries: 3,
            close_timeout: Duration::from_secs(5),
            mark_internal: false,
        }
    }
}

/// The `type` of a `NODE_HANDLE` envelope: which wrapper the receiving Node
/// process builds around the fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandleType {
    /// `net.Socket`: a ready `net.Socket` (what sticky sessions need).
    NetSocket,
    /// `net.Server`: a listening server.
    NetServer,
    /// `net.Native`: the raw `TCP`/`Pipe` handle (cluster `newconn`, shared listen).
    NetNative,
    /// `dgram.Socket`.
    DgramSocket,
    /// `dgram.Native`.
    DgramNative,
}

impl HandleType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HandleType::NetSocket => "net.Socket",
            HandleType::NetServer => "net.Server",
            HandleType::NetNative => "net.Native",
            HandleType::DgramSocket => "dgram.Socket",
            HandleType::DgramNative => "dgram.Native",
        }
    }
}

/// How a handle sent with [`Sender::send_handle`] ended. Every variant that
/// can hand the descriptor back does: drop it to close it, keep it for
/// `keepOpen` semantics (e.g. a shared listening socket).
#[derive(Debug)]
#[non_exhaustive]
pub enum HandleOutcome {
    /// The peer acknowledged the handle (`NODE_HANDLE_ACK`).
    Acked(OwnedFd),
    /// The peer refused it (`NODE_HANDLE_NACK`) after every retry.
    Nacked(OwnedFd),
    /// The channel closed before an ACK arrived.
    Closed(OwnedFd),
    /// The handle was never sent (closed channel, full buffer, unencodable message).
    Failed(Error, OwnedFd),
    /// The channel's tasks were dropped (runtime shut down); the fd was closed.
    Dropped,
}

/// Resolves to the [`HandleOutcome`] of one [`Sender::send_handle`]. The
/// handle is queued when `send_handle` is called, not when this is polled;
/// dropping it closes the fd once the outcome is known.
#[must_use = "the outcome carries the descriptor back"]
pub struct HandleReply {
    inner: ReplyInner,
}

enum ReplyInner {
    Pending(oneshot::Receiver<HandleOutcome>),
    Ready(Option<HandleOutcome>),
}

impl fmt::Debug for HandleReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandleReply")
    }
}

impl Future for HandleReply {
    type Output = HandleOutcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<HandleOutcome> {
        match &mut self.inner {
            ReplyInner::Ready(o) => Poll::Ready(o.take().unwrap_or(HandleOutcome::Dropped)),
            ReplyInner::Pending(rx) => Pin::new(rx).poll(cx).map(|r| r.unwrap_or(HandleOutcome::Dropped)),
        }
    }
}

/// A descriptor received with a `NODE_HANDLE` frame.
#[derive(Debug)]
pub struct ReceivedHandle {
    /// The descriptor (close-on-exec).
    pub fd: OwnedFd,
    /// The envelope's `type` (`"net.Socket"`, `"net.Native"`, …).
    pub handle_type: String,
}

/// One message from the peer.
///
/// Keeps the raw payload so that a relay can forward it untouched with
/// [`Sender::send_raw`]; decode it with [`Incoming::decode`] or read routing
/// fields with [`Incoming::fields`]. For a `NODE_HANDLE` frame the payload is
/// the envelope, [`Incoming::decode`] returns the inner message and
/// [`Incoming::handle`] the descriptor (already acknowledged).
pub struct Incoming {
    payload: Bytes,
    mode: Mode,
    handle: Option<ReceivedHandle>,
    max_depth: usize,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("mode", &self.mode)
            .field("len", &self.payload.len())
            .field("handle", &self.handle)
            .finish()
    }
}

impl Incoming {
    /// Wraps a payload (for tests and relays that build messages themselves).
    pub fn new(payload: Bytes, mode: Mode) -> Self {
        Incoming { payload, mode, handle: None, max_depth: DEFAULT_MAX_DEPTH }
    }

    /// The payload exactly as received (no length prefix / newline).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Consumes the message into its payload.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// The channel's serialization mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Decodes the message (the inner `msg` for a handle envelope).
    pub fn decode(&self) -> Result<Value> {
        let v = match self.mode {
            Mode::Json => crate::json::decode(&self.payload)?,
            Mode::Advanced => {
                let opts = DecodeOptions { max_depth: self.max_depth, ..DecodeOptions::default() };
                crate::v8::decode_bytes(&self.payload, &opts)?
            }
        };
        if self.handle.is_some() {
            return Ok(match v {
                Value::Object(props) => props
                    .into_iter()
                    .rev()
                    .find(|(k, _)| k.as_str() == "msg")
                    .map_or(Value::Undefined, |(_, v)| v),
                _ => Value::Undefined,
            });
        }
        Ok(v)
    }

    /// The top-level routing fields, without decoding the rest.
    pub fn fields(&self) -> Result<Fields<'_>> {
        read_fields(&self.payload, self.mode)
    }

    /// The descriptor that came with this message, if any.
    pub fn handle(&self) -> Option<&ReceivedHandle> {
        self.handle.as_ref()
    }

    /// Takes the descriptor out of the message.
    pub fn take_handle(&mut self) -> Option<ReceivedHandle> {
        self.handle.take()
    }
}

/// Entry point: see [`Channel::new`].
#[derive(Debug)]
pub struct Channel;

/// Node's internal messages: `{cmd: 'NODE_…'}` (cluster, handles).
fn is_internal(v: &Value) -> bool {
    v.get("cmd").and_then(|c| c.as_str()).is_some_and(|c| c.starts_with("NODE_"))
}

impl Channel {
    /// Drives the parent end of a channel: makes `fd` non-blocking and spawns a
    /// reader and a writer task on the current tokio runtime (any flavour; its
    /// I/O and time drivers must be enabled).
    ///
    /// The channel closes when [`Sender::close`] is called, when every
    /// [`Sender`] is dropped, when the peer closes its end, or on a framing
    /// error; the [`Receiver`] then yields `None`.
    #[allow(clippy::new_ret_no_self)] // a channel is its two halves
    pub fn new(fd: OwnedFd, mode: Mode, limits: Limits) -> Result<(Sender, Receiver)> {
        Self::start(fd, mode, limits, None)
    }

    /// Drives a channel another image of this program was driving: the
    /// bytes of a frame it had half read go to the decoder first, the bytes
    /// it had not written yet go out first, and the V8 version it had
    /// learned is kept. See [`Sender::snapshot`].
    pub fn adopt(
        fd: OwnedFd,
        mode: Mode,
        limits: Limits,
        snap: ChannelSnapshot,
    ) -> Result<(Sender, Receiver)> {
        Self::start(fd, mode, limits, Some(snap))
    }

    fn start(
        fd: OwnedFd,
        mode: Mode,
        limits: Limits,
        snap: Option<ChannelSnapshot>,
    ) -> Result<(Sender, Receiver)> {
        sys::check_stream_socket(fd.as_raw_fd())?;
        sys::set_nonblocking(fd.as_raw_fd())?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Io(io::Error::other("Channel::new must be called within a tokio runtime")));
        }
        // Registered for reading only: the writer watches for room only while
        // the socket is full (`watch_room`).
        // SAFETY: an OwnedFd stays open, and always reports the same fd, for as
        // long as the AsyncFd owns it.
        let io = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| Error::Io(e.into()))?;
        let (tx, rx) = mpsc::channel(limits.incoming_queue.max(1));
        let mut decoder = FrameDecoder::new(mode, limits.max_frame_len);
        let mut out = OutBuf::default();
        let mut version = DEFAULT_VERSION;
        if let Some(s) = snap {
            decoder.extend(&s.partial_in);
            out.push(&s.unsent_out);
            if (MIN_VERSION..=MAX_VERSION).contains(&s.version) {
                version = s.version;
            }
        }
        let shared = Arc::new(Shared {
            io,
            mode,
            state: Mutex::new(State {
                version,
                out,
                held: VecDeque::new(),
                held_bytes: 0,
                in_flight: None,
                closing: false,
                closed: false,
                close_deadline: None,
                read_paused: false,
                write_blocked: false,
            }),
            decoder: Mutex::new(decoder),
            limits,
            wake_writer: Notify::new(),
            wake_reader: Notify::new(),
            reader_parked: AtomicBool::new(false),
            incoming: Mutex::new(tx.downgrade()),
            senders: AtomicUsize::new(1),
        });
        tokio::spawn(reader_task(shared.clone(), tx));
        tokio::spawn(writer_task(shared.clone()));
        Ok((Sender { shared }, Receiver { rx }))
    }
}

/// What a channel's parent end holds in memory that the peer has not seen
/// or that does not make a whole message yet: enough for another image of
/// the program to continue the stream exactly where this one stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelSnapshot {
    /// The V8 serializer version written (advanced mode).
    pub version: u32,
    /// Bytes read from the peer that do not form a whole frame yet.
    pub partial_in: Vec<u8>,
    /// Bytes queued for the peer, not written yet (never a frame that
    /// carries a descriptor: a snapshot is only taken with none pending).
    pub unsent_out: Vec<u8>,
}

struct Shared {
    io: AsyncFd<OwnedFd>,
    mode: Mode,
    limits: Limits,
    state: Mutex<State>,
    /// Owned by the reader task; behind a lock only so a snapshot can copy
    /// a half-read frame while the reader is parked.
    decoder: Mutex<FrameDecoder>,
    wake_writer: Notify,
    /// Wakes the reader when reading is paused or resumed.
    wake_reader: Notify,
    /// The reader stopped at a frame boundary because reading is paused:
    /// every whole frame it read was handed to the receiver.
    reader_parked: AtomicBool,
    /// The reader's queue to the receiver, weakly: to see it is empty.
    incoming: Mutex<mpsc::WeakSender<Result<Incoming>>>,
    senders: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn raw(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

struct State {
    /// V8 version written in advanced mode: the peer's, once seen.
    version: u32,
    out: OutBuf,
    /// Everything sent while a handle awaits its ACK, in order.
    held: VecDeque<Held>,
    held_bytes: usize,
    in_flight: Option<InFlight>,
    closing: bool,
    closed: bool,
    close_deadline: Option<Instant>,
    /// Reading stops at the next frame boundary (see [`Sender::pause_reading`]).
    read_paused: bool,
    /// The last write found the socket full: the writer task waits for room
    /// and writes everything then; [`Sender::flush`] leaves it to it.
    write_blocked: bool,
}

impl State {
    fn buffered(&self) -> usize {
        self.out.len() + self.held_bytes
    }

    /// Closes for good: drops unsent output and hands every pending fd back.
    fn abort(&mut self) {
        self.closed = true;
        self.out = OutBuf::default();
        if let Some(f) = self.in_flight.take() {
            let _ = f.reply.send(HandleOutcome::Closed(f.fd));
        }
        for h in self.held.drain(..) {
            if let Held::Handle { fd, reply, .. } = h {
                let _ = reply.send(HandleOutcome::Closed(fd));
            }
        }
        self.held_bytes = 0;
    }

    fn start_handle(
        &mut self,
        frame: Vec<u8>,
        fd: OwnedFd,
        retries: u32,
        reply: oneshot::Sender<HandleOutcome>,
    ) {
        self.out.push_with_fd(&frame, fd.as_raw_fd());
        self.in_flight = Some(InFlight { frame, fd, retries, sent: false, reply });
    }

    /// Moves held messages to the output until the next handle.
    fn release_held(&mut self) {
        while self.in_flight.is_none() {
            let Some(h) = self.held.pop_front() else { break };
            match h {
                Held::Frame(v) => {
                    self.held_bytes -= v.len();
                    self.out.push(&v);
                }
                Held::Handle { frame, fd, reply } => {
                    self.held_bytes -= frame.len();
                    self.start_handle(frame, fd, 0, reply);
                }
            }
        }
    }

    fn on_ack(&mut self, nack: bool, max_retries: u32) {
        let Some(f) = self.in_flight.take() else { return };
        if !f.sent {
            // An ACK for a handle whose first byte is not even out yet is bogus;
            // honouring it would close an fd still referenced by the output.
            self.in_flight = Some(f);
            return;
        }
        if nack && f.retries < max_retries {
            self.start_handle(f.frame, f.fd, f.retries + 1, f.reply);
            return;
        }
        let outcome = if nack { HandleOutcome::Nacked(f.fd) } else { HandleOutcome::Acked(f.fd) };
        let _ = f.reply.send(outcome);
        self.release_held();
    }
}

struct InFlight {
    frame: Vec<u8>,
    fd: OwnedFd,
    retries: u32,
    /// The first byte (carrying the fd) has been written.
    sent: bool,
    reply: oneshot::Sender<HandleOutcome>,
}

enum Held {
    Frame(Vec<u8>),
    Handle { frame: Vec<u8>, fd: OwnedFd, reply: oneshot::Sender<HandleOutcome> },
}

/// Output bytes plus the positions where an fd must ride along.
#[derive(Default)]
struct OutBuf {
    buf: Vec<u8>,
    head: usize,
    /// Absolute stream offset of `buf[0]`.
    base: u64,
    /// (absolute offset of a frame's first byte, fd to attach there).
    marks: VecDeque<(u64, RawFd)>,
}

enum Flush {
    Drained,
    Blocked,
}

impl OutBuf {
    fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    fn push(&mut self, frame: &[u8]) {
        self.buf.extend_from_slice(frame);
    }

    fn push_with_fd(&mut self, frame: &[u8], fd: RawFd) {
        self.marks.push_back((self.base + self.buf.len() as u64, fd));
        self.buf.extend_from_slice(frame);
    }

    /// Writes until empty or EAGAIN. Returns whether an fd went out.
    fn flush(&mut self, sock: RawFd, fd_sent: &mut bool) -> io::Result<Flush> {
        while self.head < self.buf.len() {
            let pos = self.base + self.head as u64;
            let mut end = self.buf.len();
            let mut attach = None;
            if let Some(&(at, fd)) = self.marks.front() {
                if at == pos {
                    attach = Some(fd);
                    if let Some(&(next, _)) = self.marks.get(1) {
                        end = (next - self.base) as usize;
                    }
                } else {
                    end = (at - self.base) as usize;
                }
            }
            match sys::send(sock, &self.buf[self.head..end], attach) {
                Ok(n) => {
                    if attach.is_some() && n > 0 {
                        self.marks.pop_front();
                        *fd_sent = true;
                    }
                    self.head += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.compact();
                    return Ok(Flush::Blocked);
                }
                Err(e) => return Err(e),
            }
        }
        self.base += self.buf.len() as u64;
        self.buf.clear();
        self.head = 0;
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        Ok(Flush::Drained)
    }

    fn compact(&mut self) {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.base += self.head as u64;
            self.head = 0;
        }
    }
}

/// The sending half. Cheap to clone; all clones feed one ordered queue.
pub struct Sender {
    shared: Arc<Shared>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("mode", &self.shared.mode).finish()
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender { shared: self.shared.clone() }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.close();
        }
    }
}

impl Sender {
    /// The channel's serialization mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// The V8 version this channel writes (the peer's, once a frame from it
    /// was seen; 15 before).
    pub fn version(&self) -> u32 {
        self.shared.lock().version
    }

    /// Bytes waiting to be written, including messages held behind a handle.
    pub fn buffered(&self) -> usize {
        self.shared.lock().buffered()
    }

    /// True once the channel is closed or closing.
    pub fn is_closed(&self) -> bool {
        let st = self.shared.lock();
        st.closed || st.closing
    }

    /// Queues a message. Returns at once; ordering across all clones is the
    /// order of calls. Fails with [`Error::Closed`], [`Error::PeerNotReading`]
    /// or an encoding error (nothing is queued then).
    pub fn send(&self, value: &Value) -> Result<()> {
        if value.is_undefined() {
            return Err(Error::NotEncodable("undefined cannot be sent as a message"));
        }
        let mode = self.shared.mode;
        let mark = mode == Mode::Json && self.shared.limits.mark_internal && is_internal(value);
        self.enqueue(|out, version| {
            let start = out.len();
            encode_frame_into(value, mode, version, out)?;
            if mark {
                out.insert(start, crate::frame::BUN_INTERNAL_MARK);
            }
            Ok(())
        })
    }

    /// Queues a payload already encoded for this channel's mode (as returned
    /// by [`Incoming::payload`] of a channel in the same mode), byte for byte.
    pub fn send_raw(&self, payload: &[u8]) -> Result<()> {
        let mode = self.shared.mode;
        check_raw(payload, mode)?;
        self.enqueue(|out, _| frame_raw_into(payload, mode, out))
    }

    /// [`Sender::send_raw`] for a caller that sends a batch: the frame is
    /// queued but the writer is not woken. The caller must call
    /// [`Sender::flush`] once the batch is queued (a relay: after the frames
    /// of one read), which writes everything queued in one syscall from the
    /// caller's own task, without a hop to the channel's writer task.
    pub fn queue_raw(&self, payload: &[u8]) -> Result<()> {
        let mode = self.shared.mode;
        check_raw(payload, mode)?;
        self.enqueue_quiet(|out, _| frame_raw_into(payload, mode, out)).map(drop)
    }

    /// Writes what is queued now, from the calling task: one `sendmsg` for
    /// everything queued since the last write, unless the socket is full
    /// (then the writer task takes over and waits for room) or a handle
    /// waits for its ACK (then nothing may be written yet). Never blocks.
    pub fn flush(&self) {
        match flush_step(&self.shared, self.shared.raw(), true) {
            Step::Drained => {}
            // The writer waits for room, or ends the channel.
            Step::Blocked | Step::Done => self.shared.wake_writer.notify_one(),
        }
    }

    /// True when both senders feed the same channel.
    pub fn same_channel(&self, other: &Sender) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    fn enqueue(&self, write: impl FnOnce(&mut Vec<u8>, u32) -> Result<()>) -> Result<()> {
        if self.enqueue_quiet(write)? {
            self.shared.wake_writer.notify_one();
        }
        Ok(())
    }

    /// Queues a frame without waking the writer. True when it went to the
    /// output (false: held behind a handle awaiting its ACK, which wakes the
    /// writer when it comes).
    fn enqueue_quiet(&self, write: impl FnOnce(&mut Vec<u8>, u32) -> Result<()>) -> Result<bool> {
        let mut st = self.shared.lock();
        if st.closed || st.closing {
            return Err(Error::Closed);
        }
        let max = self.shared.limits.max_write_buffer;
        let before = st.buffered();
        if st.in_flight.is_some() {
            let mut v = Vec::new();
            write(&mut v, st.version)?;
            if before + v.len() > max {
                return Err(Error::PeerNotReading { buffered: before, max });
            }
            st.held_bytes += v.len();
            st.held.push_back(Held::Frame(v));
            // Nothing to write until the ACK comes.
            return Ok(false);
        }
        let version = st.version;
        let start = st.out.buf.len();
        write(&mut st.out.buf, version)?;
        if before + (st.out.buf.len() - start) > max {
            st.out.buf.truncate(start);
            return Err(Error::PeerNotReading { buffered: before, max });
        }
        Ok(true)
    }

    /// Sends `msg` with a descriptor, wrapped as Node does:
    /// `{cmd:'NODE_HANDLE', type, msg}` with the fd attached (SCM_RIGHTS) to the
    /// frame's first byte. Until the peer ACKs, every later message on this
    /// channel (with or without fd) is held back, because Node would
    /// otherwise deliver it before the handle's own message.
    pub fn send_handle(&self, msg: &Value, handle_type: HandleType, fd: OwnedFd) -> HandleReply {
        let ready = |o| HandleReply { inner: ReplyInner::Ready(Some(o)) };
        let envelope = Value::object([
            ("cmd", Value::from("NODE_HANDLE")),
            ("type", Value::from(handle_type.as_str())),
            ("msg", msg.clone()),
        ]);
        let mut st = self.shared.lock();
        if st.closed || st.closing {
            return ready(HandleOutcome::Failed(Error::Closed, fd));
        }
        // Room for a hand-off's envelope and a request head without regrowing.
        let mut frame = Vec::with_capacity(512);
        if let Err(e) = encode_frame_into(&envelope, self.shared.mode, st.version, &mut frame) {
            return ready(HandleOutcome::Failed(e, fd));
        }
        let max = self.shared.limits.max_write_buffer;
        let before = st.buffered();
        if before + frame.len() > max {
            return ready(HandleOutcome::Failed(Error::PeerNotReading { buffered: before, max }, fd));
        }
        let (tx, rx) = oneshot::channel();
        if st.in_flight.is_some() {
            st.held_bytes += frame.len();
            st.held.push_back(Held::Handle { frame, fd, reply: tx });
        } else {
            st.start_handle(frame, fd, 0, tx);
            drop(st);
            self.shared.wake_writer.notify_one();
        }
        HandleReply { inner: ReplyInner::Pending(rx) }
    }

    /// Closes gracefully: no new sends; what is queued (including messages
    /// held behind a handle) is written within [`Limits::close_timeout`], then
    /// both directions are shut down. Pending handles resolve
    /// [`HandleOutcome::Closed`] if their ACK never came.
    pub fn close(&self) {
        let mut st = self.shared.lock();
        if !st.closing && !st.closed {
            st.closing = true;
            st.close_deadline = Some(Instant::now() + self.shared.limits.close_timeout);
        }
        drop(st);
        self.shared.wake_writer.notify_one();
    }

    /// Stops reading from the peer at the next frame boundary: frames read
    /// already are still delivered, new bytes stay in the socket. Writing
    /// goes on.
    pub fn pause_reading(&self) {
        self.shared.lock().read_paused = true;
        self.shared.wake_reader.notify_one();
    }

    /// Undoes [`Sender::pause_reading`].
    pub fn resume_reading(&self) {
        self.shared.lock().read_paused = false;
        self.shared.wake_reader.notify_one();
    }

    /// The channel's descriptor (still owned by the channel).
    pub fn raw_fd(&self) -> RawFd {
        self.shared.raw()
    }

    /// What another image of the program needs to continue this channel
    /// ([`Channel::adopt`]), or `None` while it is not at a quiet point:
    /// reading must be paused and the reader parked, every message it read
    /// taken by the receiver, and no descriptor on its way (a handle waiting
    /// for its ACK, messages held behind it). A closed channel has nothing
    /// to hand over either.
    pub fn snapshot(&self) -> Option<ChannelSnapshot> {
        let sh = &self.shared;
        if !sh.reader_parked.load(Ordering::Acquire) {
            return None;
        }
        let queue_empty = {
            let weak = sh.incoming.lock().unwrap_or_else(|e| e.into_inner());
            weak.upgrade().is_none_or(|tx| tx.capacity() == tx.max_capacity())
        };
        if !queue_empty {
            return None;
        }
        let st = sh.lock();
        if st.closed
            || st.closing
            || st.in_flight.is_some()
            || !st.held.is_empty()
            || !st.out.marks.is_empty()
        {
            return None;
        }
        let partial_in = sh.decoder.lock().unwrap_or_else(|e| e.into_inner()).pending();
        Some(ChannelSnapshot {
            version: st.version,
            partial_in,
            unsent_out: st.out.buf[st.out.head..].to_vec(),
        })
    }

    /// Closes at once, dropping queued output; pending handles resolve
    /// [`HandleOutcome::Closed`] with their fds.
    pub fn abort(&self) {
        self.shared.lock().abort();
        sys::shutdown(self.shared.raw());
        self.shared.wake_writer.notify_one();
    }
}

/// The receiving half.
#[derive(Debug)]
pub struct Receiver {
    rx: mpsc::Receiver<Result<Incoming>>,
}

impl Receiver {
    /// The next message; `None` once the channel is closed. An `Err` (framing
    /// error, socket error) is followed by `None`.
    pub async fn recv(&mut self) -> Option<Result<Incoming>> {
        self.rx.recv().await
    }

    /// The next message if one is already here; `None` when none is (or the
    /// channel is closed: [`Receiver::recv`] then says so). Lets a consumer
    /// handle every message of one read before it acts on them as a batch.
    pub fn try_recv(&mut self) -> Option<Result<Incoming>> {
        self.rx.try_recv().ok()
    }

    /// Polling form of [`Receiver::recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming>>> {
        self.rx.poll_recv(cx)
    }
}

fn control_frame(cmd: &str, mode: Mode, version: u32) -> Vec<u8> {
    let mut out = Vec::new();
    // A fixed, two-key-free object of ASCII strings always encodes.
    let _ = encode_frame_into(&Value::object([("cmd", Value::from(cmd))]), mode, version, &mut out);
    out
}

thread_local! {
    /// One read buffer per thread, not per channel: a daemon with hundreds
    /// of mostly idle channels would otherwise keep 64 KiB each. It is only
    /// borrowed inside a synchronous read, never across an await.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
}

async fn reader_task(shared: Arc<Shared>, tx: mpsc::Sender<Result<Incoming>>) {
    let mut fds: VecDeque<OwnedFd> = VecDeque::new();
    let mut new_fds = Vec::new();
    let mut receiver_alive = true;
    // Frames an adopted decoder may already hold whole.
    let mut fresh = true;
    'read: loop {
        if !fresh {
            if shared.lock().read_paused {
                shared.reader_parked.store(true, Ordering::Release);
                shared.wake_reader.notified().await;
                shared.reader_parked.store(false, Ordering::Release);
                continue;
            }
            let mut guard = tokio::select! {
                g = shared.io.readable() => match g {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = tx.send(Err(Error::Io(e))).await;
                        break;
                    }
                },
                // Paused (or resumed) while waiting: look again.
                _ = shared.wake_reader.notified() => continue,
            };
            match guard.try_io(|io| {
                READ_BUF.with(|b| {
                    let mut b = b.borrow_mut();
                    let r = sys::recv(io.as_raw_fd(), &mut b, &mut new_fds);
                    if let Ok(got) = r {
                        shared.decoder.lock().unwrap_or_else(|e| e.into_inner()).extend(&b[..got.len]);
                    }
                    r.map(|got| (got, got.drained(b.len())))
                })
            }) {
                Err(_would_block) => continue,
                Ok(Ok((got, _))) if got.len == 0 => break,
                Ok(Ok((_, drained))) => {
                    // A short read emptied the socket: wait for the next
                    // edge instead of a read that would only say EAGAIN
                    // (one syscall less per wake-up, as tokio's own stream
                    // reads do).
                    if drained {
                        guard.clear_ready();
                    }
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Ok(Err(e)) => {
                    if receiver_alive {
                        let _ = tx.send(Err(Error::Io(e))).await;
                    }
                    break;
                }
            };
        }
        fresh = false;
        for fd in new_fds.drain(..) {
            if fds.len() < shared.limits.max_pending_fds {
                fds.push_back(fd);
            }
        }
        loop {
            let next = shared.decoder.lock().unwrap_or_else(|e| e.into_inner()).next_frame();
            let payload = match next {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    if receiver_alive {
                        let _ = tx.send(Err(e)).await;
                    }
                    break 'read;
                }
            };
            let Some(incoming) = dispatch(&shared, payload, &mut fds) else { continue };
            if receiver_alive && tx.send(Ok(incoming)).await.is_err() {
                // Keep reading so ACKs are still processed; drop user messages.
                receiver_alive = false;
            }
        }
    }
    shared.lock().abort();
    sys::shutdown(shared.raw());
    shared.wake_writer.notify_one();
}

/// Handles internal frames; returns what the receiver should see.
fn dispatch(shared: &Shared, payload: Bytes, fds: &mut VecDeque<OwnedFd>) -> Option<Incoming> {
    let mode = shared.mode;
    let mut st = shared.lock();
    if mode == Mode::Advanced && payload.len() >= 2 && payload[0] == 0xFF {
        let v = payload[1] as u32;
        if (MIN_VERSION..=MAX_VERSION).contains(&v) && v != st.version {
            st.version = v;
        }
    }
    let mut handle_type = None;
    if let Ok(f) = read_fields(&payload, mode) {
        if let Some(FieldValue::Str(cmd)) = &f.cmd {
            if cmd.eq_str("NODE_HANDLE_ACK") || cmd.eq_str("NODE_HANDLE_NACK") {
                st.on_ack(cmd.eq_str("NODE_HANDLE_NACK"), shared.limits.max_handle_retries);
                drop(st);
                shared.wake_writer.notify_one();
                return None;
            }
            if cmd.eq_str("NODE_HANDLE") {
                handle_type =
                    Some(f.type_.and_then(|t| t.as_str().map(|s| s.into_owned())).unwrap_or_default());
            }
        }
    }
    let mut incoming = Incoming { payload, mode, handle: None, max_depth: shared.limits.max_depth };
    if let Some(handle_type) = handle_type {
        // Node pairs the oldest unclaimed fd with the next NODE_HANDLE frame.
        let fd = fds.pop_front();
        let reply = if fd.is_some() { "NODE_HANDLE_ACK" } else { "NODE_HANDLE_NACK" };
        // ACK/NACK bypass the queue of messages held behind our own handle.
        if !st.closed {
            let frame = control_frame(reply, mode, st.version);
            st.out.push(&frame);
        }
        drop(st);
        shared.wake_writer.notify_one();
        // Without an fd Node drops the message too.
        incoming.handle = Some(ReceivedHandle { fd: fd?, handle_type });
    }
    Some(incoming)
}

/// How long the writer waits before it tries again when it cannot watch the
/// socket for room (no descriptor left for the watch).
const RETRY_WITHOUT_WATCH: Duration = Duration::from_millis(5);

/// Watches a full socket for room: a duplicate of its descriptor registered
/// for writability only. The channel's own registration is for reading
/// only, because a socket registered for writability for good (tokio's
/// default) raises an edge, and wakes the whole runtime, every time the peer
/// reads and so frees room: one useless wake-up per message written.
fn watch_room(shared: &Shared) -> io::Result<AsyncFd<OwnedFd>> {
    let dup = shared.io.get_ref().try_clone()?;
    // SAFETY: the AsyncFd owns the duplicate, which stays open and the same
    // descriptor until the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }.map_err(|e| e.into())
}

async fn writer_task(shared: Arc<Shared>) {
    let raw = shared.raw();
    // `Some` while the socket is full.
    let mut room: Option<AsyncFd<OwnedFd>> = None;
    let mut retry_at: Option<Instant> = None;
    loop {
        if room.is_some() || retry_at.is_some() {
            let deadline = shared.lock().close_deadline;
            let mut drained = false;
            tokio::select! {
                g = writable_opt(room.as_ref()) => {
                    let Ok(mut g) = g else { break };
                    match flush_step(&shared, raw, false) {
                        Step::Blocked => g.clear_ready(),
                        Step::Drained => drained = true,
                        Step::Done => break,
                    }
                }
                _ = sleep_until_opt(retry_at) => {
                    retry_at = None;
                    match flush_step(&shared, raw, false) {
                        Step::Blocked => match watch_room(&shared) {
                            Ok(w) => room = Some(w),
                            Err(_) => retry_at = Some(Instant::now() + RETRY_WITHOUT_WATCH),
                        },
                        Step::Drained => {}
                        Step::Done => break,
                    }
                }
                _ = shared.wake_writer.notified() => {
                    if shared.lock().closed { break }
                }
                _ = sleep_until_opt(deadline) => break,
            }
            if drained {
                room = None;
            }
            continue;
        }
        match flush_step(&shared, raw, false) {
            Step::Blocked => match watch_room(&shared) {
                Ok(w) => room = Some(w),
                Err(_) => retry_at = Some(Instant::now() + RETRY_WITHOUT_WATCH),
            },
            Step::Done => break,
            Step::Drained => {
                let deadline = shared.lock().close_deadline;
                tokio::select! {
                    _ = shared.wake_writer.notified() => {}
                    _ = sleep_until_opt(deadline) => break,
                }
            }
        }
    }
    // Deadline passed, socket error or finished: make sure nothing stays pending.
    let mut st = shared.lock();
    if !st.closed {
        st.abort();
    }
    drop(st);
    sys::shutdown(raw);
}

async fn writable_opt(
    w: Option<&AsyncFd<OwnedFd>>,
) -> io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, OwnedFd>> {
    match w {
        Some(w) => w.writable().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

enum Step {
    Drained,
    Blocked,
    Done,
}

/// Writes what is queued. `inline`: called by a sender's [`Sender::flush`],
/// which leaves a socket known to be full to the writer task.
fn flush_step(shared: &Shared, raw: RawFd, inline: bool) -> Step {
    let mut st = shared.lock();
    if st.closed {
        return Step::Done;
    }
    if inline && st.write_blocked {
        return Step::Drained;
    }
    let mut fd_sent = false;
    let r = st.out.flush(raw, &mut fd_sent);
    if fd_sent {
        if let Some(f) = st.in_flight.as_mut() {
            f.sent = true;
        }
    }
    st.write_blocked = matches!(r, Ok(Flush::Blocked));
    match r {
        Ok(Flush::Blocked) => Step::Blocked,
        Ok(Flush::Drained) => {
            if st.closing && st.in_flight.is_none() && st.held.is_empty() {
                st.closed = true;
                Step::Done
            } else {
                Step::Drained
            }
        }
        Err(_) => {
            st.abort();
            Step::Done
        }
    }
}
