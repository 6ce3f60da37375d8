//! The endpoint's HTTP/1.1, minimal and hardened: `GET /metrics` (a query string is ignored)
//! and nothing else. A head must arrive whole within [`HEAD_TIMEOUT`] and fit in
//! [`MAX_HEAD`] bytes; a bad request gets a well-formed 4xx and the connection is closed;
//! requests with a body are refused (nothing here reads one). Connections stay open between
//! scrapes (Prometheus reuses them) for at most [`IDLE_TIMEOUT`], and at most
//! [`MAX_CONNECTIONS`] are served at once (more are closed at accept).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const MAX_HEAD: usize = 8 * 1024;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: usize = 64;
const MAX_HEADERS: usize = 64;

/// What to do with one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve the metrics; `keep_alive`: the connection may carry another request.
    Metrics { keep_alive: bool },
    /// Answer with this status and close.
    Refuse(u16),
}

/// Decides on a complete head (request line and headers, up to and including the blank
/// line).
pub fn decide(head: &[u8]) -> Decision {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Decision::Refuse(431),
        _ => return Decision::Refuse(400),
    }
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Decision::Refuse(400);
    };
    let path = path.split('?').next().unwrap_or(path);
    if path != "/metrics" {
        return Decision::Refuse(404);
    }
    if method != "GET" {
        return Decision::Refuse(405);
    }
    let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let has_body = req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        || header("content-length").is_some_and(|v| v.trim_ascii() != b"0");
    if has_body {
        return Decision::Refuse(400);
    }
    let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
    Decision::Metrics { keep_alive: version == 1 && !close }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// A complete error response (the connection is closed after it).
pub fn refusal(status: u16) -> Vec<u8> {
    let body = format!("{}\n", reason(status));
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\n{allow}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

pub fn ok_head(content_type: &str, len: usize, keep_alive: bool) -> Vec<u8> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: {conn}\r\n\r\n")
        .into_bytes()
}

/// Why no head could be read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The peer closed (or the connection failed) before a whole head.
    Closed,
    TooLarge,
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads until `buf` holds a whole head; returns its length. Bytes after it stay in `buf`.
pub async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, HeadError> {
    let mut scanned: usize = 0;
    loop {
        if let Some(end) = head_end(&buf[scanned.saturating_sub(3)..]) {
            return Ok(scanned.saturating_sub(3) + end);
        }
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        scanned = buf.len();
        let mut chunk = [0u8; 2048];
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        match s.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Answers with an error and closes gracefully: the write side first, then what the client
/// still sends is read and dropped (at most [`LINGER_BYTES`] within [`LINGER`]), so the close
/// does not reset the connection before the client has read the answer.
pub async fn refuse(s: &mut TcpStream, status: u16) {
    if !write_all(s, &refusal(status)).await {
        return;
    }
    let _ = s.shutdown().await;
    let drain = async {
        let mut left = LINGER_BYTES;
        let mut buf = [0u8; 4096];
        while left > 0 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// Writes `bytes` within [`WRITE_TIMEOUT`]; false when the peer is gone or too slow.
pub async fn write_all(s: &mut TcpStream, bytes: &[u8]) -> bool {
    matches!(tokio::time::timeout(WRITE_TIMEOUT, s.write_all(bytes)).await, Ok(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let d = |s: &str| decide(s.as_bytes());
        assert_eq!(d("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Decision::Metrics { keep_alive: true });
        assert_eq!(d("GET /metrics?x=1 HTTP/1.1\r\n\r\n"), Decision::Metrics { keep_alive: true });
        assert_eq!(
            d("GET /metrics HTTP/1.1\r\nConnection: Close\r\n\r\n"),
            Decision::Metrics { keep_alive: false }
        );
        assert_eq!(d("GET /metrics HTTP/1.0\r\n\r\n"), Decision::Metrics { keep_alive: false });
        assert_eq!(d("GET / HTTP/1.1\r\n\r\n"), Decision::Refuse(404));
        assert_eq!(d("GET /metricsx HTTP/1.1\r\n\r\n"), Decision::Refuse(404));
        assert_eq!(d("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\n"), Decision::Refuse(405));
        assert_eq!(d("DELETE /metrics HTTP/1.1\r\n\r\n"), Decision::Refuse(405));
        assert_eq!(d("GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\n"), Decision::Refuse(400));
        assert_eq!(
            d("GET /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Decision::Metrics { keep_alive: true }
        );
        assert_eq!(d("GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Decision::Refuse(400));
        assert_eq!(d("\x00\x01garbage\r\n\r\n"), Decision::Refuse(400));
        assert_eq!(d("GET /metrics HTTP/9.9\r\n\r\n"), Decision::Refuse(400));
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(d(&format!("GET /metrics HTTP/1.1\r\n{many}\r\n")), Decision::Refuse(431));
    }

    #[test]
    fn responses_are_well_formed() {
        let r = String::from_utf8(refusal(405)).unwrap_or_default();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(r.contains("Allow: GET\r\n") && r.contains("Content-Length: 19\r\n"));
        assert!(r.ends_with("\r\n\r\nMethod Not Allowed\n"));
        let h = String::from_utf8(ok_head("text/plain", 12, true)).unwrap_or_default();
        assert!(h.contains("Content-Length: 12\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn random_heads_never_panic_and_never_serve() {
        // A fixed-seed xorshift: the same inputs every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"GET /metrics HTTP/1.1\r\n:\x00\xff ?=Content-Length0123456789";
        for _ in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut head: Vec<u8> =
                (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            head.extend_from_slice(b"\r\n\r\n");
            if let Decision::Metrics { .. } = decide(&head) {
                assert!(head.starts_with(b"GET /metrics"), "{:?}", String::from_utf8_lossy(&head));
            }
        }
    }

    #[test]
    fn head_end_found_across_reads() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
