//! Forwarding a request to the node that owns its Engine.IO session: the pure parts (the
//! signed header frame, replay protection, the client-address headers). The I/O is in
//! [`super::link`].
//!
//! On the node-to-node connection the forwarding node sends, in one write:
//!
//! ```text
//! "CRF1"  u16 big-endian header length  header  request bytes (header's `len` of them)
//! ```
//!
//! The header is UTF-8 lines: node id, app group, sid, client address, time (ms since the
//! epoch), nonce, request length, then the HMAC-SHA256 (hex) under the cluster secret of the
//! seven values before it (each length-prefixed, as stream entries are signed). The owner
//! answers four bytes, [`ACCEPTED`] (then hands the connection to the worker, which answers
//! the request on it) or [`NO_SESSION`] (the session ended meanwhile: the forwarding node
//! answers the client as it would without a cluster), and closes anything else without a word.
//!
//! The forwarding node does not wait for that answer: it relays the rest of the client's bytes
//! right behind the forward (the owner hands them to the worker with the request) and takes
//! the answer off the front of what comes back; the owner sends [`ACCEPTED`] with MSG_MORE,
//! so it usually travels in the same segment as the worker's first response bytes.

use super::entry::{ct_eq, hex, sign};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

pub const MAGIC: &[u8; 4] = b"CRF1";
pub const ACCEPTED: &[u8; 4] = b"FWOK";
pub const NO_SESSION: &[u8; 4] = b"FWNO";
/// Longest header accepted (node id, group and sid are short).
pub const MAX_HEADER: usize = 2048;
/// Most request bytes sent ahead of the splice: a head (16 KiB) and a buffered body (the
/// balancer buffers up to 64 KiB before streaming), with room for pipelined requests.
pub const MAX_DATA: usize = 1 << 20;
/// A header older or newer than this (clock skew included) is refused: with the nonce
/// memory this bounds replays.
pub const FRESH_MS: u64 = 30_000;
/// Nonces remembered at most (those of the last [`FRESH_MS`]); past this new forwards are
/// refused until old ones expire, never accepted unchecked.
pub const MAX_NONCES: usize = 500_000;

/// 16 hex digits, unique per forward: a random starting point drawn once per process, then
/// counted up (uniqueness is all the replay guard needs; the signature covers the rest), so a
/// forward costs no `getrandom` call.
pub fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        let mut b = [0u8; 8];
        // SAFETY: getrandom writes at most len bytes into our buffer.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n == 8 {
            u64::from_le_bytes(b)
        } else {
            // Unique across restarts is what matters: the time and pid will do.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ (u64::from(std::process::id()) << 40)
        }
    });
    let n = start.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed));
    hex(&n.to_be_bytes())
}

/// One forwarded request's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub node: String,
    pub group: String,
    pub sid: String,
    /// The client's address as the forwarding node saw it.
    pub client: String,
    pub ts_ms: u64,
    pub nonce: String,
    /// Request bytes following the header.
    pub len: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardError {
    #[error("not a forwarded request: {0}")]
    Garbage(&'static str),
    #[error("bad signature (claims node {0:?}; a different PM2_CLUSTER_SECRET?)")]
    BadSignature(String),
    #[error("stale or future timestamp (clocks more than {FRESH_MS} ms apart, or a replay)")]
    Stale,
    #[error("replayed nonce")]
    Replay,
    #[error("too many forwards in flight to check for replays")]
    Busy,
}

impl Header {
    fn values(&self) -> [Vec<u8>; 7] {
        [
            self.node.as_bytes().to_vec(),
            self.group.as_bytes().to_vec(),
            self.sid.as_bytes().to_vec(),
            self.client.as_bytes().to_vec(),
            self.ts_ms.to_string().into_bytes(),
            self.nonce.as_bytes().to_vec(),
            self.len.to_string().into_bytes(),
        ]
    }

    /// The frame start: magic, length, signed header. The request bytes follow.
    pub fn encode(&self, secret: &[u8]) -> Vec<u8> {
        let vals = self.values();
        let mac = sign(secret, vals.iter().map(Vec::as_slice));
        let mut text = Vec::new();
        for v in &vals {
            text.extend_from_slice(v);
            text.push(b'\n');
        }
        text.extend_from_slice(hex(&mac).as_bytes());
        let mut out = Vec::with_capacity(6 + text.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        out.extend_from_slice(&text);
        out
    }

    /// How long the header is, from the first 6 bytes of a connection.
    pub fn header_len(prefix: &[u8; 6]) -> Result<usize, ForwardError> {
        if &prefix[..4] != MAGIC {
            return Err(ForwardError::Garbage("bad magic"));
        }
        let n = u16::from_be_bytes([prefix[4], prefix[5]]) as usize;
        if n == 0 || n > MAX_HEADER {
            return Err(ForwardError::Garbage("bad header length"));
        }
        Ok(n)
    }

    /// Parses and verifies a header (the bytes after magic and length). The signature is
    /// checked before any value is believed; freshness is checked against `now_ms`.
    pub fn decode(text: &[u8], secret: &[u8], now_ms: u64) -> Result<Header, ForwardError> {
        let g = ForwardError::Garbage;
        let parts: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        let [node, group, sid, client, ts, nonce, len, mac] = parts[..] else {
            return Err(g("wrong number of fields"));
        };
        let vals = [node, group, sid, client, ts, nonce, len];
        let expected = sign(secret, vals);
        let claims = String::from_utf8_lossy(node).chars().take(64).collect::<String>();
        if !ct_eq(hex(&expected).as_bytes(), mac) {
            return Err(ForwardError::BadSignature(claims));
        }
        let text = |b: &[u8]| std::str::from_utf8(b).map(str::to_owned).map_err(|_| g("field is not UTF-8"));
        let num = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse::<u64>().ok());
        let h = Header {
            node: text(node)?,
            group: text(group)?,
            sid: text(sid)?,
            client: text(client)?,
            ts_ms: num(ts).ok_or(g("bad time"))?,
            nonce: text(nonce)?,
            len: num(len).and_then(|n| usize::try_from(n).ok()).ok_or(g("bad length"))?,
        };
        if h.len > MAX_DATA || h.nonce.is_empty() || h.sid.is_empty() {
            return Err(g("bad values"));
        }
        if h.ts_ms.abs_diff(now_ms) > FRESH_MS {
            return Err(ForwardError::Stale);
        }
        Ok(h)
    }
}

/// Nonces of the last [`FRESH_MS`]: a header seen once is refused the second time.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<String, u64>,
    /// (expiry, nonce), oldest first.
    order: VecDeque<(u64, String)>,
}

impl ReplayGuard {
    /// Records `nonce` (stamped `ts_ms`, already checked fresh) at `now_ms`.
    pub fn check(&mut self, nonce: &str, ts_ms: u64, now_ms: u64) -> Result<(), ForwardError> {
        while let Some((exp, _)) = self.order.front() {
            if *exp > now_ms {
                break;
            }
            if let Some((_, n)) = self.order.pop_front() {
                self.seen.remove(&n);
            }
        }
        if self.seen.contains_key(nonce) {
            return Err(ForwardError::Replay);
        }
        if self.seen.len() >= MAX_NONCES {
            return Err(ForwardError::Busy);
        }
        // Kept until the header could no longer pass the freshness check.
        let exp = ts_ms.max(now_ms) + FRESH_MS + 1;
        self.seen.insert(nonce.to_owned(), exp);
        // Expiries arrive nearly in order; an out-of-order one only lives a little longer.
        self.order.push_back((exp.max(self.order.back().map_or(0, |b| b.0)), nonce.to_owned()));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// `data` with `X-Forwarded-For` and `Forwarded` naming `client` added at the end of its head
/// (`head_len` bytes). Node joins repeated `X-Forwarded-For` / `Forwarded` headers with ", ",
/// so a value the client (or a proxy before us) sent stays first and ours is appended, as a
/// proxy appends. The body and anything after it are untouched.
pub fn add_client_address(data: &[u8], head_len: usize, client: IpAddr) -> Vec<u8> {
    let head_len = head_len.min(data.len());
    let head = &data[..head_len];
    // The head ends with an empty line: CRLF CRLF, or a bare LF LF that httparse accepts too.
    let (at, eol): (usize, &[u8]) = if head.ends_with(b"\r\n\r\n") {
        (head_len - 2, b"\r\n")
    } else if head.ends_with(b"\n\n") {
        (head_len - 1, b"\n")
    } else {
        return data.to_vec();
    };
    let forwarded = match client {
        IpAddr::V4(ip) => format!("for={ip}"),
        IpAddr::V6(ip) => format!("for=\"[{ip}]\""),
    };
    let mut out = Vec::with_capacity(data.len() + 80);
    out.extend_from_slice(&data[..at]);
    out.extend_from_slice(format!("X-Forwarded-For: {client}").as_bytes());
    out.extend_from_slice(eol);
    out.extend_from_slice(format!("Forwarded: {forwarded}").as_bytes());
    out.extend_from_slice(eol);
    out.extend_from_slice(&data[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            node: "web-1".into(),
            group: "chat".into(),
            sid: "AbCd_-123".into(),
            client: "203.0.113.9".into(),
            ts_ms: 1_000_000,
            nonce: "00112233aabbccdd".into(),
            len: 42,
        }
    }

    fn split(frame: &[u8]) -> (usize, &[u8]) {
        let prefix: [u8; 6] = frame[..6].try_into().unwrap();
        let n = Header::header_len(&prefix).unwrap();
        (n, &frame[6..6 + n])
    }

    #[test]
    fn nonces_are_unique() {
        let a: std::collections::HashSet<String> = (0..1000).map(|_| nonce()).collect();
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|n| n.len() == 16));
    }

    #[test]
    fn round_trip() {
        let f = sample().encode(b"secret");
        let (n, text) = split(&f);
        assert_eq!(n + 6, f.len());
        assert_eq!(Header::decode(text, b"secret", 1_000_500).unwrap(), sample());
    }

    #[test]
    fn wrong_secret_altered_or_stale_headers_are_refused() {
        let f = sample().encode(b"secret");
        let (_, text) = split(&f);
        assert_eq!(
            Header::decode(text, b"other", 1_000_000),
            Err(ForwardError::BadSignature("web-1".into()))
        );
        for i in 0..text.len() - 64 {
            if text[i] == b'\n' {
                continue;
            }
            let mut t = text.to_vec();
            t[i] ^= 1;
            assert!(Header::decode(&t, b"secret", 1_000_000).is_err(), "byte {i}");
        }
        assert_eq!(Header::decode(text, b"secret", 1_000_000 + FRESH_MS + 1), Err(ForwardError::Stale));
        assert_eq!(Header::decode(text, b"secret", 1_000_000 - FRESH_MS - 1), Err(ForwardError::Stale));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(Header::header_len(b"GET / ").is_err());
        assert!(Header::header_len(b"CRF1\0\0").is_err());
        assert!(Header::header_len(b"CRF1\xff\xff").is_err());
        for t in [&b""[..], b"\n\n\n", b"a\nb\nc\nd\ne\nf\ng\nh\ni", &[0xff; 100]] {
            assert!(Header::decode(t, b"s", 0).is_err());
        }
        // Signed but nonsensical values.
        let bad = Header { len: MAX_DATA + 1, ..sample() };
        let f = bad.encode(b"s");
        let (_, text) = split(&f);
        assert_eq!(Header::decode(text, b"s", 1_000_000), Err(ForwardError::Garbage("bad values")));
    }

    #[test]
    fn replays_are_refused_and_memory_expires() {
        let mut g = ReplayGuard::default();
        assert_eq!(g.check("n1", 100, 100), Ok(()));
        assert_eq!(g.check("n1", 100, 200), Err(ForwardError::Replay));
        assert_eq!(g.check("n2", 150, 200), Ok(()));
        // Once the header could no longer pass the freshness check, its nonce is forgotten.
        assert_eq!(g.check("n3", 100 + FRESH_MS + 50, 100 + FRESH_MS + 50), Ok(()));
        assert_eq!(g.len(), 2);
        assert_eq!(g.check("n2", 150, 150 + FRESH_MS), Err(ForwardError::Replay));
    }

    #[test]
    fn client_address_is_appended_to_the_head_only() {
        let req = b"POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: 4\r\n\r\nbody";
        let head_len = req.len() - 4;
        let out = add_client_address(req, head_len, "203.0.113.9".parse().unwrap());
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.ends_with(
                "Content-Length: 4\r\nX-Forwarded-For: 203.0.113.9\r\nForwarded: for=203.0.113.9\r\n\r\nbody"
            ),
            "{s}"
        );
        let v6 = add_client_address(b"GET / HTTP/1.1\n\n", 16, "::1".parse().unwrap());
        assert_eq!(v6, b"GET / HTTP/1.1\nX-Forwarded-For: ::1\nForwarded: for=\"[::1]\"\n\n");
        // Not a complete head: unchanged.
        assert_eq!(add_client_address(b"GET /", 5, "::1".parse().unwrap()), b"GET /");
    }
}
