//! Reading one HTTP request off a fresh sticky-port connection, bounded in size and time.
//!
//! The balancer must know the Engine.IO `sid` before it can pick a worker, and it must hand the
//! worker every byte it consumed (`{type:"sticky:connection", data}`), because after the fd
//! hand-off the worker's `@socket.io/sticky` re-emits `data` in front of whatever is still in the
//! kernel socket. The head is always read whole ([`read_head`]); a small body is read whole too
//! ([`read_body`]) so a slow client costs the worker nothing, while a body larger than
//! [`HttpLimits::stream_above`] is left in the kernel socket for the worker to read itself: the
//! daemon never holds more than that per connection, and the balancer never reads the socket
//! again once it stopped (the worker's HTTP parser continues where the bytes handed over end).
//!
//! Reads go through one scratch buffer per thread and only what arrived is kept, so a connection
//! that sent 300 bytes holds 300 bytes, not a read buffer.
//!
//! Everything here is generic over [`AsyncRead`] so it can be driven by `tokio::io::duplex` or
//! `tokio_test`-style mocks under paused time.

use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

/// Limits applied to one request. Defaults follow Engine.IO's own server limits so a request the
/// worker would accept is never refused here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head (request line + headers + blank line). Beyond it: `431`.
    pub max_head: usize,
    /// Largest request body. Engine.IO's `maxHttpBufferSize` defaults to 1 MB; the worker would
    /// answer `413` too. Beyond it: `413`.
    pub max_body: usize,
    /// How long the whole head may take to arrive, from the first read.
    pub head_timeout: Duration,
    /// How long the body may take to arrive, counted from the end of the head. A
    /// `Content-Length` that promises more than the client sends ends here.
    pub body_timeout: Duration,
    /// Bodies larger than this are not buffered: the request is handed off once its head (and
    /// whatever part of the body came with it) is read, and the worker reads the rest.
    pub stream_above: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head: 16 * 1024,
            max_body: 1_000_000,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            stream_above: 64 * 1024,
        }
    }
}

/// Headers parsed without allocating. A request with more is parsed again with room for as many
/// headers as [`HttpLimits::max_head`] can hold (a header line takes at least 4 bytes), so only
/// the head's size is ever a reason for `431`, as with Node (`--max-http-header-size`, 16 KiB by
/// default; Node has no header-count limit that rejects: `maxHeadersCount` only truncates).
const MAX_HEADERS: usize = 100;

/// A chunk-size line or a trailer line longer than this is garbage, not a slow client.
const MAX_CHUNK_LINE: usize = 4096;

/// Longest `sid` we accept from the query. Engine.IO ids are 20 characters; custom
/// `generateId`s are usually UUID-sized. Anything longer cannot be a session we know.
const MAX_SID_LEN: usize = 256;

/// How many bytes to ask the socket for at once.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The one read buffer of the thread: a read lands here and only the bytes that arrived are
    /// copied into the connection's own buffer.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// One request, read in full (or as far as the client will send before waiting on us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Every byte read from the socket, exactly as received: head, body and anything pipelined
    /// after it. This is the hand-off's `data`.
    pub data: Vec<u8>,
    /// Length of the head (through the blank line) within `data`.
    pub head_len: usize,
    /// Offset in `data` where this request ends. Bytes after it were pipelined. When
    /// `body_complete` is false this is `data.len()`.
    pub end: usize,
    /// Engine.IO session id, from the request-target's query string only.
    pub sid: Option<String>,
    /// False when the client sent `Expect: 100-continue` and is waiting for the interim
    /// response before sending its body (the worker's HTTP server sends `100 Continue` itself),
    /// or when the body is larger than [`HttpLimits::stream_above`]: the worker reads the rest of
    /// the body from the socket.
    pub body_complete: bool,
    /// The request-target is an Engine.IO request (`EIO=` and a `polling`/`websocket`
    /// transport in its query).
    pub engine_io: bool,
    /// The request asks for a WebSocket upgrade.
    pub upgrade: bool,
}

/// Why no request could be handed off. [`ReadError::rejection`] says whether the client gets a
/// response before the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The client sent nothing usable in time (stopped mid-request, or a lying
    /// `Content-Length`). Answered `408`, as Node's `headersTimeout`/`requestTimeout` do.
    #[error("request not received within the time limit")]
    Timeout,
    /// The client closed its side before the request was complete.
    #[error("connection closed before the request was complete")]
    Closed,
    /// The head did not parse, or its framing headers are contradictory.
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    /// The head is larger than [`HttpLimits::max_head`] or has too many headers.
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// The body is larger than [`HttpLimits::max_body`].
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
}

impl ReadError {
    /// The response owed to the client, if any.
    pub fn rejection(&self) -> Option<Reject> {
        match self {
            ReadError::BadRequest(_) => Some(Reject::BadRequest),
            ReadError::HeadTooLarge(_) => Some(Reject::HeaderFieldsTooLarge),
            ReadError::BodyTooLarge(_) => Some(Reject::PayloadTooLarge),
            ReadError::Timeout => Some(Reject::RequestTimeout),
            ReadError::Closed | ReadError::Io(_) => None,
        }
    }
}

/// The responses the balancer itself ever writes. Each is complete and well-formed, with
/// `Connection: close` and `Content-Length: 0`, because the incumbent's malformed 503 made Node's
/// client fail with `HPE_INVALID_HEADER_TOKEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    BadRequest,
    RequestTimeout,
    PayloadTooLarge,
    HeaderFieldsTooLarge,
    ServiceUnavailable,
}

impl Reject {
    pub fn status(self) -> u16 {
        match self {
            Reject::BadRequest => 400,
            Reject::RequestTimeout => 408,
            Reject::PayloadTooLarge => 413,
            Reject::HeaderFieldsTooLarge => 431,
            Reject::ServiceUnavailable => 503,
        }
    }

    /// The full response bytes, ready to write before closing.
    pub fn response(self) -> &'static [u8] {
        match self {
            Reject::BadRequest => {
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Reject::RequestTimeout => {
                b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Reject::PayloadTooLarge => {
                b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Reject::HeaderFieldsTooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Reject::ServiceUnavailable => {
                b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
        }
    }
}

/// How the body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    None,
    Length(usize),
    Chunked,
}

/// What the head told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Length of the head (through the blank line).
    pub len: usize,
    /// Engine.IO session id, from the request-target's query only.
    pub sid: Option<String>,
    body: BodyKind,
    expect_continue: bool,
    /// See [`Request::engine_io`].
    pub engine_io: bool,
    /// See [`Request::upgrade`].
    pub upgrade: bool,
}

/// Reads one request from `io`. Returns once the head and body are complete (plus whatever else
/// the same reads brought in), or the body is left to the worker (see [`read_body`]), or fails
/// with the reason to close.
pub async fn read_request<R>(io: &mut R, limits: &HttpLimits) -> Result<Request, ReadError>
where
    R: AsyncRead + Unpin,
{
    let mut data = Vec::new();
    let head = read_head(io, limits, &mut data, &mut |_| {}).await?;
    read_body(io, limits, head, data, &mut |_| {}).await
}

/// Reads until `data` holds a complete head. `on_read` is told how many bytes each read added
/// (the balancer's memory accounting).
pub async fn read_head<R, F>(
    io: &mut R,
    limits: &HttpLimits,
    data: &mut Vec<u8>,
    on_read: &mut F,
) -> Result<Head, ReadError>
where
    R: AsyncRead + Unpin,
    F: FnMut(usize),
{
    // Bytes already read (the balancer's first, synchronous read) may hold the whole head.
    if !data.is_empty() {
        if let Some(head) = parse_head(data, limits)? {
            return Ok(head);
        }
        if data.len() >= limits.max_head {
            return Err(ReadError::HeadTooLarge(limits.max_head));
        }
    }
    let head_deadline = Instant::now() + limits.head_timeout;
    loop {
        let before = data.len();
        read_more(io, data, head_deadline, on_read).await?;
        // Re-parse only when a line may have ended (or on the first read, so garbage is
        // rejected at once): a client dripping one byte at a time must not make us re-scan the
        // whole head per byte.
        if before == 0 || data[before..].contains(&b'\n') {
            if let Some(head) = parse_head(data, limits)? {
                return Ok(head);
            }
        }
        if data.len() >= limits.max_head {
            return Err(ReadError::HeadTooLarge(limits.max_head));
        }
    }
}

/// Reads the body announced by `head` into `data` (which holds the head and whatever followed
/// it), up to [`HttpLimits::stream_above`] bytes; a larger body is left for the worker to read.
pub async fn read_body<R, F>(
    io: &mut R,
    limits: &HttpLimits,
    head: Head,
    mut data: Vec<u8>,
    on_read: &mut F,
) -> Result<Request, ReadError>
where
    R: AsyncRead + Unpin,
    F: FnMut(usize),
{
    let body_deadline = Instant::now() + limits.body_timeout;
    let mut scanner = ChunkedScanner::default();
    let end = loop {
        match body_end(&head, &data, limits, &mut scanner)? {
            Some(end) => break end,
            None => read_more(io, &mut data, body_deadline, on_read).await?,
        }
    };
    Ok(request(head, data, end))
}

/// The request in `data` when nothing more has to be read to hand it off: its head is complete
/// and valid, and its body is complete or left to the worker (see [`read_body`]). Anything else
/// (a partial head, a body still to come, a request to refuse) gives the bytes back for the
/// asynchronous path ([`read_head`] + [`read_body`]), which reads on or answers the error.
///
/// This is the balancer's fast path: with `TCP_DEFER_ACCEPT` a connection almost always brings
/// its whole request in the first read, and then no task, timer or wake-up is needed to read it.
pub fn try_complete(data: Vec<u8>, limits: &HttpLimits) -> Result<Request, Vec<u8>> {
    let head = match parse_head(&data, limits) {
        Ok(Some(head)) => head,
        _ => return Err(data),
    };
    match body_end(&head, &data, limits, &mut ChunkedScanner::default()) {
        Ok(Some(end)) => Ok(request(head, data, end)),
        _ => Err(data),
    }
}

/// Where the request whose head is `head` ends in `data`: `Some(Some(end))` complete,
/// `Some(None)` handed off as it is (the worker reads the rest of a large or `100-continue`
/// body), `None` when more bytes must be read first.
fn body_end(
    head: &Head,
    data: &[u8],
    limits: &HttpLimits,
    scanner: &mut ChunkedScanner,
) -> Result<Option<Option<usize>>, ReadError> {
    match head.body {
        BodyKind::None => Ok(Some(Some(head.len))),
        BodyKind::Length(n) => {
            if n > limits.max_body {
                return Err(ReadError::BodyTooLarge(limits.max_body));
            }
            let end = head.len.saturating_add(n);
            if data.len() >= end {
                Ok(Some(Some(end)))
            } else if head.expect_continue || n > limits.stream_above {
                Ok(Some(None))
            } else {
                Ok(None)
            }
        }
        BodyKind::Chunked => {
            let body = data.get(head.len..).unwrap_or_default();
            match scanner.advance(body, limits.max_body)? {
                Some(len) => Ok(Some(Some(head.len + len))),
                None if head.expect_continue && body.is_empty() => Ok(Some(None)),
                // Large: the worker reads the rest, and enforces its own limit on it.
                None if body.len() > limits.stream_above => Ok(Some(None)),
                None => Ok(None),
            }
        }
    }
}

fn request(head: Head, data: Vec<u8>, end: Option<usize>) -> Request {
    let (end, body_complete) = match end {
        Some(end) => (end, true),
        None => (data.len(), false),
    };
    Request {
        data,
        head_len: head.len,
        end,
        sid: head.sid,
        body_complete,
        engine_io: head.engine_io,
        upgrade: head.upgrade,
    }
}

/// One non-blocking read from `src` through the thread's scratch buffer, appending what arrived
/// to `data` (the balancer's first read, before any task exists for the connection).
pub fn read_now<R: std::io::Read>(src: &mut R, data: &mut Vec<u8>) -> std::io::Result<usize> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let n = src.read(&mut scratch[..])?;
        data.extend_from_slice(scratch.get(..n).unwrap_or_default());
        Ok(n)
    })
}

/// One read into `data`, failing on EOF or when `deadline` passes. The read lands in the
/// thread's scratch buffer; `data` grows by what arrived only.
async fn read_more<R, F>(
    io: &mut R,
    data: &mut Vec<u8>,
    deadline: Instant,
    on_read: &mut F,
) -> Result<(), ReadError>
where
    R: AsyncRead + Unpin,
    F: FnMut(usize),
{
    use std::task::Poll;
    let read = std::future::poll_fn(|cx| {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut buf = ReadBuf::new(&mut scratch[..]);
            match std::pin::Pin::new(&mut *io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    data.extend_from_slice(buf.filled());
                    Poll::Ready(Ok(buf.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    });
    let n = match tokio::time::timeout_at(deadline, read).await {
        Ok(r) => r?,
        Err(_) => return Err(ReadError::Timeout),
    };
    if n == 0 {
        return Err(ReadError::Closed);
    }
    on_read(n);
    Ok(())
}

/// Parses the head if it is complete. `Ok(None)` means "need more bytes".
pub fn parse_head(data: &[u8], limits: &HttpLimits) -> Result<Option<Head>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match parse_head_with(data, limits, &mut headers) {
        Err(ReadError::HeadTooLarge(_)) if data.len() <= limits.max_head => {
            // More than MAX_HEADERS headers: as many as the size limit allows.
            let mut many = vec![httparse::EMPTY_HEADER; limits.max_head / 4 + 1];
            parse_head_with(data, limits, &mut many)
        }
        other => other,
    }
}

fn parse_head_with<'b>(
    data: &'b [u8],
    limits: &HttpLimits,
    headers: &mut [httparse::Header<'b>],
) -> Result<Option<Head>, ReadError> {
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::HeadTooLarge(limits.max_head)),
        Err(_) => return Err(ReadError::BadRequest("unparsable request head")),
    };
    if len > limits.max_head {
        return Err(ReadError::HeadTooLarge(limits.max_head));
    }
    let target = req.path.ok_or(ReadError::BadRequest("missing request target"))?;

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut expect_continue = false;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)?;
            // Repeated identical values are tolerated (RFC 9112 §6.3); differing ones are a
            // smuggling attempt.
            if content_length.is_some_and(|prev| prev != n) {
                return Err(ReadError::BadRequest("conflicting Content-Length"));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // Only the final coding decides framing; anything but `chunked` last leaves the
            // body length unknowable for a request, which RFC 9112 says to reject.
            chunked = last_coding_is_chunked(h.value);
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = trim(h.value).eq_ignore_ascii_case(b"websocket");
        }
    }
    let body = match (transfer_encoding, content_length) {
        (true, Some(_)) => return Err(ReadError::BadRequest("both Transfer-Encoding and Content-Length")),
        (true, None) if chunked => BodyKind::Chunked,
        (true, None) => return Err(ReadError::BadRequest("unsupported Transfer-Encoding")),
        (false, Some(0)) | (false, None) => BodyKind::None,
        (false, Some(n)) => BodyKind::Length(n),
    };
    Ok(Some(Head {
        len,
        sid: sid_from_target(target),
        body,
        expect_continue,
        engine_io: is_engine_io_target(target),
        upgrade,
    }))
}

/// An Engine.IO request: its query names the protocol (`EIO=`) and one of the transports a
/// default Engine.IO server accepts. Only for such a request does a worker answer an unknown
/// `sid` with Engine.IO's "Session ID unknown" (code 1), so only then may the balancer answer it
/// in the worker's place.
pub fn is_engine_io_target(target: &str) -> bool {
    let Some((_, query)) = target.split_once('?') else { return false };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let mut eio = false;
    let mut transport = false;
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("EIO=") {
            eio = !v.is_empty();
        } else if let Some(v) = pair.strip_prefix("transport=") {
            transport = v == "polling" || v == "websocket";
        }
    }
    eio && transport
}

/// The answer an Engine.IO server (`engine.io` 6, `abortRequest`/`abortUpgrade`) gives a
/// request for a session it does not have, byte for byte but for `Connection: close` (the
/// balancer closes the connection after it) and the `Date` it is given.
pub fn unknown_sid_response(upgrade: bool, http_date: &str) -> Vec<u8> {
    const MESSAGE: &str = "Session ID unknown";
    if upgrade {
        format!(
            "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-type: text/html\r\nContent-Length: {}\r\n\r\n{MESSAGE}",
            MESSAGE.len()
        )
        .into_bytes()
    } else {
        let body = format!("{{\"code\":1,\"message\":\"{MESSAGE}\"}}");
        format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nDate: {http_date}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Session-less Engine.IO requests (handshakes) among the requests pipelined in `data`, as far
/// as their heads and bodies are complete. Each will create a session on the worker that gets
/// the connection, so the router counts each as a pending registration.
pub fn count_handshakes(data: &[u8], limits: &HttpLimits) -> usize {
    let mut at = 0;
    let mut count = 0;
    // Bounded: a pipelined request takes at least a few bytes, `data` at most head + body limits.
    while let Some(rest) = data.get(at..).filter(|r| !r.is_empty()) {
        let Ok(Some(head)) = parse_head(rest, limits) else { break };
        if head.engine_io && head.sid.is_none() {
            count += 1;
        }
        let body = match head.body {
            BodyKind::None => 0,
            BodyKind::Length(n) => n,
            BodyKind::Chunked => break,
        };
        at = at.saturating_add(head.len).saturating_add(body);
    }
    count
}

fn parse_content_length(value: &[u8]) -> Result<usize, ReadError> {
    let v = trim(value);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(ReadError::BadRequest("invalid Content-Length"));
    }
    // All digits, so the only failure left is overflow: far beyond any body limit.
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or(ReadError::BadRequest("invalid Content-Length"))
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    value.rsplit(|&b| b == b',').next().is_some_and(|last| trim(last).eq_ignore_ascii_case(b"chunked"))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    v.get(start..end).unwrap_or_default()
}

/// The `sid` query parameter of a request-target (origin-form `/path?query` or absolute-form
/// `http://host/path?query`), percent-decoded the way Node's `querystring` does it for
/// Engine.IO. Headers and body are never looked at: a request must not be steered to another
/// session's worker by text in its body.
pub fn sid_from_target(target: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let raw = query.split('&').find_map(|pair| pair.strip_prefix("sid=").map(Some).unwrap_or(None))?;
    if raw.is_empty() || raw.len() > MAX_SID_LEN * 3 {
        return None;
    }
    let sid = percent_decode(raw)?;
    if sid.is_empty() || sid.len() > MAX_SID_LEN {
        return None;
    }
    Some(sid)
}

/// `%XX` and `+` decoding; `None` if the result isn't UTF-8 (no session id of ours would be).
/// Malformed escapes are kept literally, as `querystring.unescape` does.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Finds the end of a chunked body without copying it: the worker gets the raw bytes and decodes
/// them itself. Resumable: `pos` remembers how far the bytes seen so far were understood.
#[derive(Debug, Default)]
struct ChunkedScanner {
    pos: usize,
    state: ChunkState,
    decoded: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data, this many bytes left.
    Data(usize),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last (zero) chunk: trailer lines until an empty one.
    Trailer,
}

impl ChunkedScanner {
    /// Advances over `body` (all body bytes received so far). `Ok(Some(len))` once the body is
    /// complete, `len` being its raw length.
    fn advance(&mut self, body: &[u8], max_decoded: usize) -> Result<Option<usize>, ReadError> {
        loop {
            let rest = body.get(self.pos..).unwrap_or_default();
            match self.state {
                ChunkState::Size => {
                    let Some((line, used)) = take_line(rest)? else {
                        return Ok(None);
                    };
                    let size = parse_chunk_size(line)?;
                    self.decoded = self.decoded.saturating_add(size);
                    if self.decoded > max_decoded {
                        return Err(ReadError::BodyTooLarge(max_decoded));
                    }
                    self.pos += used;
                    self.state = if size == 0 { ChunkState::Trailer } else { ChunkState::Data(size) };
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(None);
                    }
                    let n = left.min(rest.len());
                    self.pos += n;
                    self.state = if n == left { ChunkState::DataEnd } else { ChunkState::Data(left - n) };
                }
                ChunkState::DataEnd => {
                    let Some((line, used)) = take_line(rest)? else {
                        return Ok(None);
                    };
                    if !line.is_empty() {
                        return Err(ReadError::BadRequest("chunk data longer than its size"));
                    }
                    self.pos += used;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some((line, used)) = take_line(rest)? else {
                        return Ok(None);
                    };
                    self.pos += used;
                    if line.is_empty() {
                        return Ok(Some(self.pos));
                    }
                }
            }
        }
    }
}

/// Splits off one line (LF or CRLF terminated). `Ok(None)` if no full line has arrived yet.
fn take_line(rest: &[u8]) -> Result<Option<(&[u8], usize)>, ReadError> {
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) if i > MAX_CHUNK_LINE => Err(ReadError::BadRequest("chunk line too long")),
        Some(i) => {
            let line = &rest[..i];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Ok(Some((line, i + 1)))
        }
        None if rest.len() > MAX_CHUNK_LINE => Err(ReadError::BadRequest("chunk line too long")),
        None => Ok(None),
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<usize, ReadError> {
    // Chunk extensions (`;name=value`) are allowed and ignored.
    let size = line.split(|&b| b == b';').next().map(trim).unwrap_or_default();
    if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(ReadError::BadRequest("invalid chunk size"));
    }
    std::str::from_utf8(size)
        .ok()
        .and_then(|s| usize::from_str_radix(s, 16).ok())
        .ok_or(ReadError::BadRequest("invalid chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn limits() -> HttpLimits {
        HttpLimits::default()
    }

    /// Feeds `parts` through a duplex pipe, one write per part, and reads a request from it.
    async fn read_parts(parts: &[&[u8]], limits: HttpLimits) -> Result<Request, ReadError> {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for p in parts {
                if client.write_all(&p).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            // Keep the client open so EOF doesn't end the read: only completeness does.
            client
        });
        let r = read_request(&mut server, &limits).await;
        drop(writer);
        r
    }

    #[tokio::test]
    async fn get_without_body_returns_head_and_sid() {
        let req =
            b"GET /socket.io/?EIO=4&transport=polling&sid=abcdefghij0123456789 HTTP/1.1\r\nHost: x\r\n\r\n";
        let r = read_parts(&[req], limits()).await.unwrap();
        assert_eq!(r.data, req.to_vec());
        assert_eq!(r.head_len, req.len());
        assert_eq!(r.end, req.len());
        assert_eq!(r.sid.as_deref(), Some("abcdefghij0123456789"));
        assert!(r.body_complete);
    }

    #[tokio::test]
    async fn handshake_has_no_sid() {
        let req = b"GET /socket.io/?EIO=4&transport=polling&t=abc HTTP/1.1\r\n\r\n";
        let r = read_parts(&[req], limits()).await.unwrap();
        assert_eq!(r.sid, None);
    }

    #[tokio::test]
    async fn head_split_byte_by_byte() {
        let req: &[u8] = b"GET /?sid=s1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let parts: Vec<&[u8]> = req.chunks(1).collect();
        let r = read_parts(&parts, limits()).await.unwrap();
        assert_eq!(r.data, req.to_vec());
        assert_eq!(r.sid.as_deref(), Some("s1"));
    }

    #[tokio::test]
    async fn sid_in_body_or_header_is_ignored() {
        // The incumbent matched `sid=` anywhere in the first chunk.
        let body = b"4:sid=OTHERSESSION0123456";
        let head = format!(
            "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nCookie: sid=COOKIEaaaaaaaaaaaaaa\r\nX-Sid: sid=HEADERaaaaaaaaaaaaaa\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut all = head.as_bytes().to_vec();
        all.extend_from_slice(body);
        let r = read_parts(&[&all], limits()).await.unwrap();
        assert_eq!(r.sid, None);
        assert_eq!(r.data, all);
    }

    #[tokio::test]
    async fn body_in_later_segments_is_read_in_full() {
        // The incumbent lost a POST whose body arrives in a second TCP segment.
        let head = b"POST /socket.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\nContent-Length: 10\r\n\r\n";
        let r = read_parts(&[head, b"01234", b"56789"], limits()).await.unwrap();
        let mut want = head.to_vec();
        want.extend_from_slice(b"0123456789");
        assert_eq!(r.data, want);
        assert_eq!(r.end, want.len());
        assert_eq!(r.head_len, head.len());
    }

    #[tokio::test]
    async fn large_binary_body_is_read_exactly() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let head = format!("POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        let mut all = head.as_bytes().to_vec();
        all.extend_from_slice(&body);
        let parts: Vec<&[u8]> = all.chunks(70_000).collect();
        let lim = HttpLimits { stream_above: 1_000_000, ..limits() };
        let r = read_parts(&parts, lim).await.unwrap();
        assert_eq!(r.data, all);
        assert_eq!(r.end, all.len());
        assert!(r.body_complete);
    }

    #[tokio::test]
    async fn large_body_is_left_for_the_worker() {
        // Beyond `stream_above` the balancer stops after the head (and what came with it): the
        // rest stays in the socket for the worker, the daemon holds at most one read.
        let body = vec![b'x'; 500_000];
        let head = format!("POST /up HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        let (mut client, mut server) = tokio::io::duplex(1024 * 1024);
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(&body[..1000]).await.unwrap();
        let r = read_request(&mut server, &limits()).await.unwrap();
        assert!(!r.body_complete);
        assert_eq!(r.end, r.data.len());
        assert!(r.data.len() <= head.len() + 1000);
        assert!(r.data.starts_with(head.as_bytes()));
        // Chunked: the same once more than `stream_above` is buffered.
        let lim = HttpLimits { stream_above: 100, ..limits() };
        let mut req = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..10 {
            req.extend_from_slice(b"40\r\n");
            req.extend_from_slice(&[b'y'; 64]);
            req.extend_from_slice(b"\r\n");
        }
        let (mut client, mut server) = tokio::io::duplex(1024 * 1024);
        client.write_all(&req).await.unwrap();
        let r = read_request(&mut server, &lim).await.unwrap();
        assert!(!r.body_complete);
        assert!(req.starts_with(&r.data));
        drop(client);
    }

    #[tokio::test]
    async fn pipelined_bytes_are_returned_too() {
        let a = b"POST /a?sid=one HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let b = b"GET /b?sid=two HTTP/1.1\r\n\r\n";
        let mut all = a.to_vec();
        all.extend_from_slice(b);
        let r = read_parts(&[&all], limits()).await.unwrap();
        assert_eq!(r.data, all);
        assert_eq!(r.end, a.len());
        assert_eq!(r.sid.as_deref(), Some("one"));
    }

    #[test]
    fn try_complete_takes_whole_requests_only() {
        let get = b"GET /socket.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
        let r = try_complete(get.clone(), &limits()).unwrap();
        assert_eq!((r.end, r.head_len, r.body_complete), (get.len(), get.len(), true));
        assert_eq!(r.sid.as_deref(), Some("abc"));
        assert!(r.engine_io && !r.upgrade);
        // Every prefix short of the head is given back untouched.
        for cut in 0..get.len() {
            assert_eq!(try_complete(get[..cut].to_vec(), &limits()).unwrap_err(), &get[..cut]);
        }
        let post =
            b"POST /?EIO=4&transport=polling&sid=s HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        assert_eq!(try_complete(post.clone(), &limits()).unwrap().end, post.len());
        assert!(try_complete(post[..post.len() - 1].to_vec(), &limits()).is_err(), "body still to come");
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec();
        assert_eq!(try_complete(chunked.clone(), &limits()).unwrap().end, chunked.len());
        assert!(try_complete(chunked[..chunked.len() - 2].to_vec(), &limits()).is_err());
        // Requests to refuse go to the slow path, which answers them.
        for bad in [
            &b"\x00garbage\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 1000001\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(try_complete(bad.to_vec(), &limits()).unwrap_err(), bad);
        }
    }

    #[test]
    fn try_complete_leaves_large_and_continue_bodies_to_the_worker() {
        let lim = HttpLimits { stream_above: 10, ..limits() };
        let big = b"POST /?sid=s HTTP/1.1\r\nContent-Length: 100\r\n\r\npart".to_vec();
        let r = try_complete(big.clone(), &lim).unwrap();
        assert_eq!((r.end, r.body_complete), (big.len(), false));
        let cont = b"POST /?sid=s HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n".to_vec();
        let r = try_complete(cont.clone(), &limits()).unwrap();
        assert_eq!((r.end, r.body_complete), (cont.len(), false));
    }

    #[tokio::test]
    async fn try_complete_agrees_with_the_reader() {
        let mut rng = Lcg(0xfa57);
        let cases: [&[u8]; 4] = [
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
            b"POST /?EIO=4&transport=polling&sid=s%20x HTTP/1.1\r\nContent-Length: 12\r\n\r\n42[\"a\",\"b\"]!",
            b"POST /c?sid=x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\ntail",
            b"GET /socket.io/?EIO=4&transport=websocket&sid=ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        ];
        for bytes in cases {
            for _ in 0..40 {
                let cut = rng.below(bytes.len() + 1);
                let prefix = &bytes[..cut];
                if let Ok(fast) = try_complete(prefix.to_vec(), &limits()) {
                    let slow = read_parts(&[prefix], limits()).await.unwrap();
                    assert_eq!(fast, slow, "{prefix:?}");
                }
            }
            assert!(try_complete(bytes.to_vec(), &limits()).is_ok());
        }
    }

    #[tokio::test]
    async fn read_head_uses_bytes_already_read() {
        // Nothing more will ever arrive: the head must come from `data` alone.
        let (_client, mut server) = tokio::io::duplex(64);
        let mut data = b"GET /?sid=a HTTP/1.1\r\n\r\n".to_vec();
        let head = read_head(&mut server, &limits(), &mut data, &mut |_| {}).await.unwrap();
        assert_eq!(head.sid.as_deref(), Some("a"));
        let mut bad = b"\x00\x01 nonsense\r\n\r\n".to_vec();
        let e = read_head(&mut server, &limits(), &mut bad, &mut |_| {}).await.unwrap_err();
        assert_eq!(e.rejection(), Some(Reject::BadRequest));
    }

    #[tokio::test]
    async fn chunked_body_is_read_to_its_end() {
        let head = b"POST /c?sid=x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let body: &[u8] = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n";
        let tail = b"GET /next HTTP/1.1\r\n\r\n";
        let mut all = head.to_vec();
        all.extend_from_slice(body);
        all.extend_from_slice(tail);
        // Split at awkward places, including inside the size line and the CRLFs.
        let parts: Vec<&[u8]> = all.chunks(3).collect();
        let r = read_parts(&parts, limits()).await.unwrap();
        assert_eq!(r.end, head.len() + body.len());
        assert_eq!(&r.data[..r.end], &all[..r.end]);
        // Pipelined bytes that arrived with the last read are included; never more than sent.
        assert!(all.starts_with(&r.data));
    }

    #[tokio::test]
    async fn chunked_body_over_limit_is_413() {
        let lim = HttpLimits { max_body: 8, ..limits() };
        let req =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
        let e = read_parts(&[req], lim).await.unwrap_err();
        assert!(matches!(e, ReadError::BodyTooLarge(8)), "{e:?}");
        assert_eq!(e.rejection(), Some(Reject::PayloadTooLarge));
    }

    #[tokio::test]
    async fn bad_chunk_size_is_400() {
        let req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let e = read_parts(&[req], limits()).await.unwrap_err();
        assert_eq!(e.rejection(), Some(Reject::BadRequest));
    }

    #[tokio::test]
    async fn content_length_over_limit_is_413_without_reading_body() {
        let req = b"POST / HTTP/1.1\r\nContent-Length: 1000001\r\n\r\n";
        let e = read_parts(&[req], limits()).await.unwrap_err();
        assert!(matches!(e, ReadError::BodyTooLarge(_)));
        assert_eq!(Reject::PayloadTooLarge.status(), 413);
    }

    #[tokio::test]
    async fn oversized_head_is_431() {
        let mut req = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        req.extend_from_slice(&[b'a'; 20 * 1024]);
        let e = read_parts(&[&req], limits()).await.unwrap_err();
        assert!(matches!(e, ReadError::HeadTooLarge(_)), "{e:?}");
        assert_eq!(e.rejection(), Some(Reject::HeaderFieldsTooLarge));
    }

    #[tokio::test]
    async fn complete_head_just_over_the_limit_is_431() {
        let lim = HttpLimits { max_head: 64, ..limits() };
        let req = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(60));
        let e = read_parts(&[req.as_bytes()], lim).await.unwrap_err();
        assert!(matches!(e, ReadError::HeadTooLarge(64)), "{e:?}");
    }

    #[tokio::test]
    async fn header_count_is_limited_by_size_only_as_in_node() {
        // Node accepts any number of headers within --max-http-header-size (16 KiB).
        let mut req = String::from("GET /?sid=s HTTP/1.1\r\n");
        for _ in 0..3000 {
            req.push_str("X:\r\n");
        }
        req.push_str("\r\n");
        assert!(req.len() < 16 * 1024);
        let r = read_parts(&[req.as_bytes()], limits()).await.unwrap();
        assert_eq!(r.end, req.len());
        assert_eq!(r.sid.as_deref(), Some("s"));
        // Past the size, 431 whatever the count.
        let mut req = String::from("GET / HTTP/1.1\r\n");
        for i in 0..4000 {
            req.push_str(&format!("X-{i}: v\r\n"));
        }
        req.push_str("\r\n");
        let e = read_parts(&[req.as_bytes()], limits()).await.unwrap_err();
        assert!(matches!(e, ReadError::HeadTooLarge(_)), "{e:?}");
    }

    #[tokio::test]
    async fn garbage_is_400() {
        for g in [
            &b"\x00\x01\x02garbage\r\n\r\n"[..],
            b"GET / FOO/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            let e = read_parts(&[g], limits()).await.unwrap_err();
            assert_eq!(e.rejection(), Some(Reject::BadRequest), "{g:?} -> {e:?}");
        }
    }

    #[tokio::test]
    async fn conflicting_framing_is_400() {
        for req in [
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
        ] {
            let e = read_parts(&[req], limits()).await.unwrap_err();
            assert_eq!(e.rejection(), Some(Reject::BadRequest), "{req:?} -> {e:?}");
        }
    }

    #[tokio::test]
    async fn repeated_identical_content_length_is_fine() {
        let req = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok";
        let r = read_parts(&[req], limits()).await.unwrap();
        assert_eq!(r.end, req.len());
    }

    #[tokio::test]
    async fn expect_continue_hands_off_without_waiting_for_body() {
        let req = b"POST /?sid=s HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n";
        let r = read_parts(&[req], limits()).await.unwrap();
        assert!(!r.body_complete);
        assert_eq!(r.data, req.to_vec());
        assert_eq!(r.end, req.len());
    }

    #[tokio::test]
    async fn eof_mid_request_is_closed_without_response() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\nHost").await.unwrap();
        drop(client);
        let e = read_request(&mut server, &limits()).await.unwrap_err();
        assert!(matches!(e, ReadError::Closed), "{e:?}");
        assert_eq!(e.rejection(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn client_that_stops_mid_head_times_out() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        let start = Instant::now();
        let e = read_request(&mut server, &limits()).await.unwrap_err();
        assert!(matches!(e, ReadError::Timeout), "{e:?}");
        assert_eq!(e.rejection(), Some(Reject::RequestTimeout));
        assert_eq!(start.elapsed(), limits().head_timeout);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn lying_content_length_times_out() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly-a-bit").await.unwrap();
        let start = Instant::now();
        let e = read_request(&mut server, &limits()).await.unwrap_err();
        assert!(matches!(e, ReadError::Timeout), "{e:?}");
        assert_eq!(start.elapsed(), limits().body_timeout);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_drip_is_bounded_by_head_deadline_not_per_read() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let drip = tokio::spawn(async move {
            for _ in 0..1000 {
                if client.write_all(b"a").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let start = Instant::now();
        let e = read_request(&mut server, &limits()).await.unwrap_err();
        assert!(matches!(e, ReadError::Timeout | ReadError::BadRequest(_)), "{e:?}");
        assert!(start.elapsed() <= limits().head_timeout);
        drip.abort();
    }

    #[test]
    fn reject_responses_are_well_formed() {
        for r in [
            Reject::BadRequest,
            Reject::RequestTimeout,
            Reject::PayloadTooLarge,
            Reject::HeaderFieldsTooLarge,
            Reject::ServiceUnavailable,
        ] {
            let bytes = r.response();
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut resp = httparse::Response::new(&mut headers);
            let parsed = resp.parse(bytes).unwrap();
            assert_eq!(parsed, httparse::Status::Complete(bytes.len()));
            assert_eq!(resp.code, Some(r.status()));
            assert_eq!(resp.version, Some(1));
            let names: Vec<(String, Vec<u8>)> =
                resp.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
            assert!(names.contains(&("connection".into(), b"close".to_vec())));
            assert!(names.contains(&("content-length".into(), b"0".to_vec())));
        }
        assert!(Reject::ServiceUnavailable.response().starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"));
    }

    #[test]
    fn engine_io_targets() {
        assert!(is_engine_io_target("/socket.io/?EIO=4&transport=polling&sid=x"));
        assert!(is_engine_io_target("/custom/?transport=websocket&EIO=3"));
        assert!(!is_engine_io_target("/socket.io/?EIO=4&transport=carrier-pigeon"));
        assert!(!is_engine_io_target("/api?sid=x&transport=polling"));
        assert!(!is_engine_io_target("/socket.io/"));
    }

    #[test]
    fn unknown_sid_answers_are_engine_io_s() {
        let polling = unknown_sid_response(false, "Sun, 29 Nov 2026 09:00:00 GMT");
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = resp.parse(&polling).unwrap() else { panic!() };
        assert_eq!(resp.code, Some(400));
        assert_eq!(&polling[n..], br#"{"code":1,"message":"Session ID unknown"}"#);
        let ws = unknown_sid_response(true, "");
        assert!(ws.ends_with(b"\r\n\r\nSession ID unknown"));
        assert!(ws.starts_with(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"));
    }

    #[test]
    fn pipelined_handshakes_are_counted() {
        let hs = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\n\r\n";
        let with_sid =
            "POST /socket.io/?EIO=4&transport=polling&sid=a HTTP/1.1\r\nContent-Length: 2\r\n\r\n40";
        let all =
            format!("{hs}{with_sid}{}{}GET /x HTTP/1.1\r\n", hs.repeat(3), "GET /plain HTTP/1.1\r\n\r\n");
        assert_eq!(count_handshakes(all.as_bytes(), &limits()), 4);
        assert_eq!(count_handshakes(b"", &limits()), 0);
        assert_eq!(count_handshakes(b"garbage\r\n\r\n", &limits()), 0);
    }

    #[test]
    fn sid_extraction_from_target() {
        assert_eq!(sid_from_target("/socket.io/?EIO=4&sid=abc").as_deref(), Some("abc"));
        assert_eq!(sid_from_target("/?sid=a%2Db").as_deref(), Some("a-b"));
        assert_eq!(sid_from_target("http://h:1/socket.io/?sid=xyz&EIO=4").as_deref(), Some("xyz"));
        assert_eq!(sid_from_target("/?sid=first&sid=second").as_deref(), Some("first"));
        assert_eq!(sid_from_target("/?xsid=abc"), None);
        assert_eq!(sid_from_target("/?sid="), None);
        assert_eq!(sid_from_target("/path/sid=abc"), None);
        assert_eq!(sid_from_target("/?a=1#sid=abc"), None);
        assert_eq!(sid_from_target("/?sid=%ff%fe"), None);
        assert_eq!(sid_from_target(&format!("/?sid={}", "a".repeat(300))), None);
        assert_eq!(sid_from_target("/?sid=%zz").as_deref(), Some("%zz"));
    }

    /// Tiny deterministic generator so the randomized tests need no extra dependency and
    /// replay identically.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn random_split<'a>(rng: &mut Lcg, bytes: &'a [u8]) -> Vec<&'a [u8]> {
        let mut parts = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len().min(40));
            let (a, b) = rest.split_at(n);
            parts.push(a);
            rest = b;
        }
        parts
    }

    #[tokio::test]
    async fn any_split_of_a_valid_request_reads_the_same() {
        let chunked = b"POST /socket.io/?EIO=4&sid=Zz_-0123456789abcdef HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\nGET /tail HTTP/1.1\r\n\r\n".to_vec();
        let length = b"POST /?EIO=4&transport=polling&sid=s%20x HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n42[\"a\",\"b\"]!GET /p HTTP/1.1\r\n\r\n".to_vec();
        let get = b"GET /socket.io/?EIO=4&transport=websocket&sid=ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec();
        let cases: [(&[u8], usize, &str); 3] = [
            (&chunked, chunked.len() - 22, "Zz_-0123456789abcdef"),
            (&length, length.len() - 19, "s x"),
            (&get, get.len(), "ws"),
        ];
        let mut rng = Lcg(0x5eed);
        for (bytes, end, sid) in cases {
            for _ in 0..100 {
                let parts = random_split(&mut rng, bytes);
                let r = read_parts(&parts, limits()).await.unwrap();
                assert_eq!(r.end, end);
                assert_eq!(r.sid.as_deref(), Some(sid));
                assert!(bytes.starts_with(&r.data) && r.data.len() >= end);
            }
        }
    }

    #[tokio::test]
    async fn random_input_never_panics() {
        let mut rng = Lcg(7);
        let alphabet: &[&[u8]] = &[
            b"GET ",
            b"POST ",
            b"/?sid=",
            b" HTTP/1.1",
            b"\r\n",
            b"\n",
            b"Content-Length: ",
            b"Transfer-Encoding: chunked",
            b"0",
            b"5",
            b"ff",
            b";",
            b":",
            b"\x00",
            b"\xff",
            b"a",
            b"Expect: 100-continue",
        ];
        let lim = HttpLimits { max_head: 256, max_body: 512, ..limits() };
        for _ in 0..500 {
            let mut input = Vec::new();
            for _ in 0..rng.below(60) {
                input.extend_from_slice(alphabet[rng.below(alphabet.len())]);
            }
            let parts = random_split(&mut rng, &input);
            // Closing the writer turns "need more" into `Closed` instead of a 10 s wait.
            let (mut client, mut server) = tokio::io::duplex(64 * 1024);
            for p in &parts {
                client.write_all(p).await.unwrap();
            }
            drop(client);
            let _ = read_request(&mut server, &lim).await;
        }
    }

    #[test]
    fn chunk_scanner_never_panics_on_odd_input() {
        let inputs: [&[u8]; 6] =
            [b"", b"\n", b"ffffffffffffffffff\r\n", b"0\r\n", b"1\r\nab\r\n", b"\r\n\r\n\r\n"];
        for input in inputs {
            let mut s = ChunkedScanner::default();
            let _ = s.advance(input, 1_000_000);
        }
    }
}
