//! The direct path: a node pushes each batch of its adapter frames straight to the other
//! nodes' node-to-node listeners, as well as to the Redis stream.
//!
//! Redis stays the ordered log every node reads: it is what makes a blip, a restart or a
//! trimmed peer lose nothing. The push only makes a frame arrive sooner (one hop: no Redis
//! round trip, no blocked `XREAD` to wake) and keeps frames moving while Redis is away.
//! A receiver delivers a pushed entry only when it is exactly the next one it expects of that
//! peer's incarnation (sequence numbers, [`super::peers::Peers::on_direct`]); anything else
//! (a gap after a dropped push, a peer not yet seen in the stream) is left to the stream,
//! which then skips what the push delivered. So per-sender order holds across both paths and
//! nothing arrives twice. Pushes are signed like stream entries (the same batch, the same
//! HMAC), so a push needs no handshake: a forged or replayed one is refused or skipped.
//!
//! On the node-to-node connection, after the 4-byte [`MAGIC`], the pushing node sends frames:
//!
//! ```text
//! u32 BE length of the rest   u16 BE node id length   node id   64 hex digits of the HMAC   body
//! ```
//!
//! where body and HMAC are those of a batch entry ([`super::entry::Entry::batch_body`]). The
//! receiver never writes on it. A peer's address comes from its `corral:addr:<node>` key,
//! refreshed with its heartbeat and signed (anyone who can write to Redis could otherwise
//! point our pushes at a host of their choosing).

use super::conn::Backoff;
use super::entry::{ct_eq, hex, sign};
use crate::dlog;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

pub const MAGIC: &[u8; 4] = b"CRA1";
/// Largest push frame accepted (a batch is at most 256 KiB of frames unless one frame alone is
/// bigger; bigger ones go through Redis only).
pub const MAX_FRAME: usize = 1 << 20;
/// Push connections a node serves at once (one per peer is what a cluster needs); past this
/// they are refused and those peers' frames come through Redis. With [`MAX_FRAME`] this bounds
/// what pushes can make a node buffer.
pub const MAX_CONNECTIONS: u64 = 64;
const MAX_NODE: usize = 256;
const MAC_HEX: usize = 64;
/// Frames, and bytes, queued per peer while its connection is busy or down; past either they
/// are dropped (the stream carries them).
const QUEUE: usize = 1024;
const QUEUE_BYTES: usize = 8 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PushError {
    #[error("push frame of {0} bytes is larger than {MAX_FRAME}")]
    TooLarge(usize),
    #[error("malformed push frame: {0}")]
    Malformed(&'static str),
}

/// One push frame for `body` (a batch of `node`'s entries) signed with `mac` (hex).
pub fn encode(node: &str, body: &[u8], mac: &str) -> Vec<u8> {
    let rest = 2 + node.len() + MAC_HEX + body.len();
    let mut out = Vec::with_capacity(4 + rest);
    out.extend_from_slice(&(rest as u32).to_be_bytes());
    out.extend_from_slice(&(node.len() as u16).to_be_bytes());
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(mac.as_bytes());
    out.extend_from_slice(body);
    out
}

/// A complete push frame at the start of `buf`.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Bytes of `buf` the frame takes.
    pub used: usize,
    pub node: &'a [u8],
    pub mac: &'a [u8],
    pub body: &'a [u8],
}

/// The first push frame of `buf`: `None` while it is incomplete; an error as soon as its
/// prefix cannot be a valid frame (the connection is then closed).
pub fn split(buf: &[u8]) -> Result<Option<Frame<'_>>, PushError> {
    let Some((len, rest)) = buf.split_first_chunk::<4>() else { return Ok(None) };
    let len = u32::from_be_bytes(*len) as usize;
    if len > MAX_FRAME {
        return Err(PushError::TooLarge(len));
    }
    // A node id of one byte at least, and the signature.
    if len < 2 + 1 + MAC_HEX {
        return Err(PushError::Malformed("shorter than its header"));
    }
    if let Some((n, _)) = rest.split_first_chunk::<2>() {
        let n = u16::from_be_bytes(*n) as usize;
        if n == 0 || n > MAX_NODE {
            return Err(PushError::Malformed("bad node id length"));
        }
        if len < 2 + n + MAC_HEX {
            return Err(PushError::Malformed("shorter than its header"));
        }
    }
    if rest.len() < len {
        return Ok(None);
    }
    let frame = &rest[..len];
    let n = u16::from_be_bytes([frame[0], frame[1]]) as usize;
    let (node, tail) = frame[2..].split_at(n);
    let (mac, body) = tail.split_at(MAC_HEX);
    Ok(Some(Frame { used: 4 + len, node, mac, body }))
}

/// The value of `corral:addr:<node>`: where the node takes pushes and forwards, signed.
pub fn addr_value(secret: &[u8], node: &str, incarnation: &str, addr: &str) -> String {
    let mac = sign(secret, [b"addr".as_slice(), node.as_bytes(), incarnation.as_bytes(), addr.as_bytes()]);
    format!("{incarnation} {addr} {}", hex(&mac))
}

/// Reads an `addr_value`: `(incarnation, addr)` when its signature holds.
pub fn parse_addr(secret: &[u8], node: &str, value: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut it = text.split(' ');
    let (inc, addr, mac) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || inc.is_empty() || addr.is_empty() {
        return None;
    }
    let want = sign(secret, [b"addr".as_slice(), node.as_bytes(), inc.as_bytes(), addr.as_bytes()]);
    ct_eq(hex(&want).as_bytes(), mac.as_bytes()).then(|| (inc.to_owned(), addr.to_owned()))
}

/// Receives the entries of verified pushes. Implemented by the bridge.
pub trait DirectSink: Send + Sync {
    /// A push's batch, verified; delivered in order, or left to the stream.
    fn deliver(&self, entries: Vec<super::entry::Entry>);
}

/// One connection per peer that advertises an address, each fed by a bounded queue. Owned by
/// the publisher.
#[derive(Default)]
pub struct Pushers {
    peers: BTreeMap<String, PushTo>,
}

struct PushTo {
    incarnation: String,
    addr: String,
    tx: mpsc::Sender<Arc<Vec<u8>>>,
    /// Bytes queued and not yet written (shared with the connection's task).
    queued: Arc<AtomicUsize>,
}

impl Pushers {
    /// Brings the connections in line with `want` (node -> (incarnation, addr)): a peer gone,
    /// restarted or moved gets its connection dropped (its task ends) and, if still there, a
    /// new one.
    pub fn sync(&mut self, me: &str, want: &BTreeMap<String, (String, String)>) {
        self.peers.retain(|node, p| {
            want.get(node).is_some_and(|(inc, addr)| *inc == p.incarnation && *addr == p.addr)
        });
        for (node, (inc, addr)) in want {
            if node == me || self.peers.contains_key(node) {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let queued = Arc::new(AtomicUsize::new(0));
            tokio::spawn(push_to(node.clone(), addr.clone(), rx, queued.clone()));
            self.peers
                .insert(node.clone(), PushTo { incarnation: inc.clone(), addr: addr.clone(), tx, queued });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Queues one frame for every peer; a full queue drops it (the stream carries it).
    pub fn push(&self, frame: Arc<Vec<u8>>) {
        let len = frame.len();
        for p in self.peers.values() {
            if p.queued.load(Ordering::Acquire) + len > QUEUE_BYTES {
                continue;
            }
            p.queued.fetch_add(len, Ordering::AcqRel);
            if p.tx.try_send(frame.clone()).is_err() {
                p.queued.fetch_sub(len, Ordering::AcqRel);
            }
        }
    }
}

/// Keeps one connection to `node` at `addr` and writes what is queued, several frames per
/// write when they queue up. Frames that cannot be sent are dropped: the stream has them.
async fn push_to(node: String, addr: String, mut rx: mpsc::Receiver<Arc<Vec<u8>>>, queued: Arc<AtomicUsize>) {
    let taken = |f: &Arc<Vec<u8>>| {
        queued.fetch_sub(f.len(), Ordering::AcqRel);
    };
    let mut backoff = Backoff::default();
    let mut logged_down = false;
    let mut batch = Vec::new();
    let mut buf = Vec::new();
    loop {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await;
        let mut s = match connected {
            Ok(Ok(s)) => s,
            failed => {
                if !logged_down {
                    logged_down = true;
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    dlog::warn(&format!(
                        "Cluster: cannot push adapter messages to node {node} at {addr}: {why}; they go through Redis only until it answers"
                    ));
                }
                // What queues meanwhile is dropped; the end of the queue ends the task.
                let wait = tokio::time::sleep(backoff.next_delay());
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => break,
                        f = rx.recv() => match f {
                            Some(f) => taken(&f),
                            None => return,
                        },
                    }
                }
                continue;
            }
        };
        let _ = s.set_nodelay(true);
        if s.write_all(MAGIC).await.is_err() {
            continue;
        }
        backoff.reset();
        logged_down = false;
        dlog::log(&format!("Cluster: pushing adapter messages straight to node {node} at {addr}"));
        loop {
            if rx.recv_many(&mut batch, 64).await == 0 {
                return;
            }
            buf.clear();
            for f in batch.drain(..) {
                buf.extend_from_slice(&f);
                taken(&f);
            }
            if let Err(e) = s.write_all(&buf).await {
                dlog::warn(&format!(
                    "Cluster: the push connection to node {node} at {addr} failed: {e}; reconnecting"
                ));
                break;
            }
            // A burst's buffer is not kept for a quiet connection.
            if buf.capacity() > 1 << 20 {
                buf = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_splits_back_in_any_pieces() {
        let f = encode("node-a", b"the body", &"ab".repeat(32));
        let mut two = f.clone();
        two.extend_from_slice(&f);
        for cut in 0..f.len() {
            assert_eq!(split(&two[..cut]), Ok(None), "cut at {cut}");
        }
        let got = split(&two).unwrap().unwrap();
        assert_eq!(
            got,
            Frame { used: f.len(), node: b"node-a", mac: "ab".repeat(32).as_bytes(), body: b"the body" }
        );
        let next = split(&two[got.used..]).unwrap().unwrap();
        assert_eq!(next.body, b"the body");
    }

    #[test]
    fn garbage_is_refused_as_soon_as_its_prefix_shows_it() {
        assert_eq!(split(&[0xff, 0xff, 0xff, 0xff]), Err(PushError::TooLarge(u32::MAX as usize)));
        // A zero-length node id, a node id longer than allowed, a frame too short for its header.
        assert!(split(&[0, 0, 0, 100, 0, 0]).is_err());
        assert!(split(&[0, 0, 0, 100, 4, 0]).is_err());
        assert!(split(&[0, 0, 0, 10, 0, 3]).is_err());
        assert!(split(&[0, 0, 0, 0]).is_err());
        assert!(split(&[0, 0, 0, 1, 7]).is_err());
        // Arbitrary bytes never panic.
        for seed in 0u32..2000 {
            let bytes: Vec<u8> =
                (0..(seed % 97)).map(|i| (seed.wrapping_mul(2654435761) >> (i % 24)) as u8).collect();
            let _ = split(&bytes);
        }
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_holds_a_bounded_queue() {
        // A listener that accepts and never reads: the kernel buffers fill, then the queue.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let mut pushers = Pushers::default();
        let want = BTreeMap::from([("b".to_string(), ("i".to_string(), addr))]);
        pushers.sync("a", &want);
        let frame = Arc::new(vec![7u8; 256 << 10]);
        for _ in 0..400 {
            pushers.push(frame.clone());
            tokio::task::yield_now().await;
        }
        let p = &pushers.peers["b"];
        assert!(p.queued.load(Ordering::Acquire) <= QUEUE_BYTES, "{}", p.queued.load(Ordering::Acquire));
        // Gone from the wanted set: its connection task ends with its queue.
        pushers.sync("a", &BTreeMap::new());
        assert!(pushers.is_empty());
        drop(l);
    }

    #[test]
    fn addresses_are_signed() {
        let v = addr_value(b"s3cret", "node-a", "inc1", "10.0.0.1:7000");
        assert_eq!(
            parse_addr(b"s3cret", "node-a", v.as_bytes()),
            Some(("inc1".into(), "10.0.0.1:7000".into()))
        );
        assert_eq!(parse_addr(b"other", "node-a", v.as_bytes()), None);
        assert_eq!(parse_addr(b"s3cret", "node-b", v.as_bytes()), None);
        let moved = v.replace("10.0.0.1", "10.6.6.6");
        assert_eq!(parse_addr(b"s3cret", "node-a", moved.as_bytes()), None);
        assert_eq!(parse_addr(b"s3cret", "node-a", b"garbage"), None);
        assert_eq!(parse_addr(b"s3cret", "node-a", &[0xff, 0x20, 0x20]), None);
    }
}
