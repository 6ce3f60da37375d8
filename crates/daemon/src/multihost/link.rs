//! Any node takes any request: the I/O around [`super::sids`] and [`super::forward`].
//!
//! - The session book (one task, one Redis connection): `SET corral:sid:<group>:<sid>` when a
//!   local worker confirms a session, `DEL` when it ends, every live record refreshed every
//!   minute and all of them written again after a reconnect (Redis may have restarted empty);
//!   lookups (`GET`) share the connection, pipelined with the rest.
//! - The forwarding side: the balancer meets a sid no local worker has; [`take_unknown_sid`]
//!   looks up its owner (cached), sends the signed header and the bytes already read to the
//!   owner's node-to-node listener, and once the owner accepted, copies bytes both ways
//!   between the client and that connection in a task of its own.
//! - The owning side: [`listen`] accepts node-to-node connections, verifies each header
//!   (signature, freshness, nonce), and hands the connection to the worker that owns the
//!   session exactly as the balancer hands a client's (`sticky:connection` with the bytes
//!   already read), never reading it again. A forwarded request is never forwarded again.

use super::config::ClusterConfig;
use super::forward::{self, ForwardError, Header, ReplayGuard};
use super::sids::{self, Cached, Owner};
use crate::dlog;
use node_ipc::{HandleOutcome, HandleType, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A node-to-node connection must deliver its header and request bytes within this.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The owner's answer to a forward (it only checks the header and its table).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// One lookup's wait for Redis.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// A sid missing in Redis is asked again after these delays before it counts as nobody's:
/// the owner writes its record when its worker confirms the session, which can come a
/// moment after the client already sent its next request to another node.
const MISS_RETRIES: [Duration; 3] =
    [Duration::from_millis(50), Duration::from_millis(100), Duration::from_millis(200)];
/// Records written per pipeline when refreshing.
const REFRESH_BATCH: usize = 1000;
/// Sessions this node keeps records for at most (the router bounds sessions long before).
const MAX_OWNED: usize = 1_000_000;

pub enum SidOp {
    Own(String, String),
    Gone(String),
    Lookup(String, oneshot::Sender<Lookup>),
}

pub enum Lookup {
    Found(Vec<u8>),
    Missing,
    Unavailable,
}

/// Forwarding state and counters, owned by the bridge.
pub struct Link {
    pub(super) cfg: ClusterConfig,
    redis: super::conn::Target,
    /// The session book's queue: records to write (only with a node-to-node listener).
    sid_ops: Option<mpsc::UnboundedSender<SidOp>>,
    /// The same queue for lookups (every node forwards, listener or not).
    lookups: mpsc::UnboundedSender<SidOp>,
    pub(super) cache: Mutex<sids::Cache>,
    pub(super) replay: Mutex<ReplayGuard>,
    pub forwarded_out: AtomicU64,
    pub forwarded_in: AtomicU64,
    /// Forwards that failed (owner unreachable, refused): answered as an unknown sid.
    pub failed_out: AtomicU64,
    /// Node-to-node connections refused (garbage, bad signature, replay, unknown app).
    pub refused_in: AtomicU64,
    pub owned: AtomicU64,
    pub(super) book_connected: std::sync::atomic::AtomicBool,
    pub(super) listening: Mutex<Option<String>>,
    pub(super) log_limit: LogLimit,
}

/// At most one line per second per kind of message, with how many were left out.
#[derive(Default)]
pub(super) struct LogLimit(Mutex<HashMap<&'static str, (Instant, u64)>>);

impl LogLimit {
    pub(super) fn warn(&self, kind: &'static str, msg: impl FnOnce() -> String) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match m.get_mut(kind) {
            Some((last, skipped)) if now.duration_since(*last) < Duration::from_secs(1) => *skipped += 1,
            other => {
                let skipped = other.map(|(_, s)| *s).unwrap_or(0);
                let more =
                    if skipped > 0 { format!(" ({skipped} more like it not logged)") } else { String::new() };
                dlog::warn(&format!("{}{more}", msg()));
                m.insert(kind, (now, 0));
            }
        }
    }
}

/// Who serves a session on this node. Implemented by the cluster primary.
pub trait LocalSessions: Send + Sync {
    /// Who serves session `sid` of `group` on this node (a request forwarded by another node).
    fn session_owner(&self, group: &str, sid: &str) -> SessionOwner;
}

/// The answer of [`LocalSessions::session_owner`].
pub enum SessionOwner {
    /// The channel of the worker that owns the session.
    Worker(node_ipc::Sender),
    /// An app of that group runs here, but no worker has the session (any more).
    NoSession,
    /// No app of that group runs here.
    UnknownGroup,
}

impl Link {
    /// The forwarding half of a bridge; [`Link::start`] starts its tasks.
    pub fn new(
        cfg: ClusterConfig,
        redis: super::conn::Target,
    ) -> (Arc<Link>, mpsc::UnboundedReceiver<SidOp>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Link {
            sid_ops: cfg.listen.as_ref().map(|_| tx.clone()),
            lookups: tx,
            cfg,
            redis,
            cache: Default::default(),
            replay: Default::default(),
            forwarded_out: Default::default(),
            forwarded_in: Default::default(),
            failed_out: Default::default(),
            refused_in: Default::default(),
            owned: Default::default(),
            book_connected: Default::default(),
            listening: Default::default(),
            log_limit: Default::default(),
        };
        (Arc::new(link), rx)
    }

    /// Starts the session book and, with `PM2_CLUSTER_LISTEN`, the node-to-node listener.
    pub fn start(self: &Arc<Self>, rx: mpsc::UnboundedReceiver<SidOp>, local: Arc<dyn LocalSessions>) {
        tokio::spawn(session_book(self.clone(), rx));
        match self.cfg.listen.clone() {
            Some((h, p)) => {
                tokio::spawn(listen(self.clone(), local, h, p));
            }
            None => dlog::log(
                "Cluster: no PM2_CLUSTER_LISTEN: this node forwards requests for other nodes' sessions but takes none",
            ),
        }
    }

    fn fwd(&self) -> &Link {
        self
    }

    /// A local worker of `group` confirmed session `sid`: other nodes may now forward its
    /// requests here. A no-op without a node-to-node listener.
    pub fn sid_owned(&self, group: &str, sid: &str) {
        let (Some(ops), Some(addr)) = (&self.sid_ops, &self.cfg.advertise) else { return };
        let value = sids::record_value(&self.cfg.secret, group, sid, &self.cfg.node_id, addr);
        let _ = ops.send(SidOp::Own(sids::record_key(group, sid), value));
    }

    /// The session ended (or its worker exited).
    pub fn sid_gone(&self, group: &str, sid: &str) {
        let Some(ops) = &self.sid_ops else { return };
        let _ = ops.send(SidOp::Gone(sids::record_key(group, sid)));
    }

    /// The node that owns `sid` of `group`, if another node does.
    pub async fn find_owner(&self, group: &str, sid: &str) -> Option<Owner> {
        let ops = &self.lookups;
        match self.fwd().cache.lock().unwrap_or_else(|p| p.into_inner()).get(group, sid, Instant::now()) {
            Cached::Owner(o) => return Some(o),
            Cached::Nobody => return None,
            Cached::Unknown => {}
        }
        let key = sids::record_key(group, sid);
        let mut found = None;
        for delay in std::iter::once(Duration::ZERO).chain(MISS_RETRIES) {
            tokio::time::sleep(delay).await;
            let (tx, rx) = oneshot::channel();
            ops.send(SidOp::Lookup(key.clone(), tx)).ok()?;
            match tokio::time::timeout(LOOKUP_TIMEOUT, rx).await {
                Ok(Ok(Lookup::Found(v))) => {
                    found = Some(v);
                    break;
                }
                Ok(Ok(Lookup::Missing)) => continue,
                // Redis unreachable: answered as without a cluster, nothing cached.
                _ => return None,
            }
        }
        let owner = match found.map(|v| sids::parse_record(&self.cfg.secret, group, sid, &v)) {
            Some(Ok(o)) if o.node != self.cfg.node_id => Some(o),
            // Our own record for a session we no longer have: stale.
            Some(Ok(_)) | None => None,
            Some(Err(e)) => {
                self.fwd()
                    .log_limit
                    .warn("record", || format!("Cluster: ignored the record of sid {sid:?}: {e}"));
                None
            }
        };
        self.fwd().cache.lock().unwrap_or_else(|p| p.into_inner()).put(
            group,
            sid,
            owner.clone(),
            Instant::now(),
        );
        owner
    }

    pub fn status_json(&self) -> serde_json::Value {
        let f = self.fwd();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "listen": f.listening.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            "advertise": self.cfg.advertise,
            "sessions_redis": if f.book_connected.load(Ordering::Relaxed) { "connected" } else { "disconnected" },
            "sessions_owned": n(&f.owned),
            "forwarded_out": n(&f.forwarded_out),
            "forwarded_in": n(&f.forwarded_in),
            "failed_out": n(&f.failed_out),
            "refused_in": n(&f.refused_in),
        })
    }
}

// ---------------------------------------------------------------------------------------
// The session book

async fn session_book(b: Arc<Link>, mut rx: mpsc::UnboundedReceiver<SidOp>) {
    use super::conn::{Backoff, Conn};
    use super::resp::Reply;
    let ttl = sids::RECORD_TTL.as_millis().to_string();
    let mut owned: HashMap<String, String> = HashMap::new();
    let mut conn: Option<Conn> = None;
    let mut backoff = Backoff::default();
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut refresh = tokio::time::interval(sids::REFRESH_EVERY);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await;
    let mut resync = false;
    let mut buf = Vec::with_capacity(512);
    loop {
        let retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            n = rx.recv_many(&mut buf, 512) => if n == 0 { return },
            _ = refresh.tick() => resync = true,
            _ = retry => {}
        }
        let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut waiters: Vec<(usize, oneshot::Sender<Lookup>)> = Vec::new();
        for op in buf.drain(..) {
            match op {
                SidOp::Own(k, v) => {
                    if owned.len() < MAX_OWNED || owned.contains_key(&k) {
                        cmds.push(vec![
                            b"SET".to_vec(),
                            k.clone().into(),
                            v.clone().into(),
                            b"PX".to_vec(),
                            ttl.clone().into(),
                        ]);
                        owned.insert(k, v);
                    }
                }
                SidOp::Gone(k) => {
                    if owned.remove(&k).is_some() {
                        cmds.push(vec![b"DEL".to_vec(), k.into()]);
                    }
                }
                SidOp::Lookup(k, tx) => {
                    waiters.push((cmds.len(), tx));
                    cmds.push(vec![b"GET".to_vec(), k.into()]);
                }
            }
        }
        b.fwd().owned.store(owned.len() as u64, Ordering::Relaxed);
        if conn.is_none() && retry_at.is_none_or(|t| t <= tokio::time::Instant::now()) {
            match Conn::connect(&b.redis, &format!("corral-sid-{}", b.cfg.node_id)).await {
                Ok(c) => {
                    conn = Some(c);
                    retry_at = None;
                    backoff.reset();
                    // Redis may have restarted empty, and what we wrote while away is lost.
                    resync = true;
                    b.fwd().book_connected.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    if b.fwd().book_connected.swap(false, Ordering::Relaxed) {
                        dlog::error(&format!("Cluster: session records: cannot reach Redis: {e}; retrying"));
                    }
                    retry_at = Some(tokio::time::Instant::now() + backoff.next_delay());
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            for (_, w) in waiters {
                let _ = w.send(Lookup::Unavailable);
            }
            continue;
        };
        let mut failed = None;
        if resync {
            resync = false;
            let all: Vec<Vec<Vec<u8>>> = owned
                .iter()
                .map(|(k, v)| {
                    vec![
                        b"SET".to_vec(),
                        k.clone().into(),
                        v.clone().into(),
                        b"PX".to_vec(),
                        ttl.clone().into(),
                    ]
                })
                .collect();
            for chunk in all.chunks(REFRESH_BATCH) {
                if let Err(e) = c.pipeline(chunk).await {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() && !cmds.is_empty() {
            match c.pipeline(&cmds).await {
                Ok(replies) => {
                    for (i, w) in waiters.drain(..) {
                        let r = match replies.get(i) {
                            Some(Reply::Bulk(v)) => Lookup::Found(v.clone()),
                            Some(Reply::Nil) => Lookup::Missing,
                            _ => Lookup::Unavailable,
                        };
                        let _ = w.send(r);
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        for (_, w) in waiters {
            let _ = w.send(Lookup::Unavailable);
        }
        if let Some(e) = failed {
            dlog::error(&format!("Cluster: session records: lost the Redis connection: {e}; reconnecting"));
            b.fwd().book_connected.store(false, Ordering::Relaxed);
            conn = None;
            resync = true;
            retry_at = Some(tokio::time::Instant::now() + backoff.next_delay());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The forwarding side

/// The balancer's hook for an Engine.IO request whose sid no local worker has (after the
/// router's hold); `target` is the bridge's link and the app's group (`Primary::bridge_for`).
/// Returns the stream when the request stays here (no cluster, nobody else
/// owns the sid, the owner could not be reached): the caller answers it as before. `None`:
/// the request went to its owner node, and the client's connection is relayed to it by a
/// task of its own.
pub async fn take_unknown_sid(
    target: Option<(Arc<Link>, String)>,
    sid: &str,
    head_len: usize,
    data: &[u8],
    stream: TcpStream,
) -> Option<TcpStream> {
    let Some((b, group)) = target else { return Some(stream) };
    let Some(owner) = b.find_owner(&group, sid).await else { return Some(stream) };
    let Ok(client) = stream.peer_addr() else { return Some(stream) };
    let data = forward::add_client_address(data, head_len, client.ip());
    match send_forward(&b, &owner, &group, sid, client, &data).await {
        Ok(upstream) => {
            b.fwd().forwarded_out.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(relay_both_ways(stream, upstream));
            None
        }
        Err(e) => {
            b.fwd().cache.lock().unwrap_or_else(|p| p.into_inner()).forget(&group, sid);
            if !matches!(e, SendError::NoSession) {
                b.fwd().failed_out.fetch_add(1, Ordering::Relaxed);
                b.fwd().log_limit.warn("forward-out", || {
                    format!(
                        "Cluster: could not forward a request to node {} at {}: {e}",
                        owner.node, owner.addr
                    )
                });
            }
            Some(stream)
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("the session ended there")]
    NoSession,
    #[error("refused (closed the connection: a different PM2_CLUSTER_SECRET, or it does not run this app)")]
    Refused,
    #[error("request too large to forward")]
    TooLarge,
}

async fn send_forward(
    b: &Link,
    owner: &Owner,
    group: &str,
    sid: &str,
    client: SocketAddr,
    data: &[u8],
) -> Result<TcpStream, SendError> {
    if data.len() > forward::MAX_DATA {
        return Err(SendError::TooLarge);
    }
    let mut s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(owner.addr.as_str()))
        .await
        .map_err(|_| SendError::Timeout)??;
    let _ = s.set_nodelay(true);
    let h = Header {
        node: b.cfg.node_id.clone(),
        group: group.to_owned(),
        sid: sid.to_owned(),
        client: client.ip().to_string(),
        ts_ms: crate::timefmt::now_ms(),
        nonce: forward::nonce(),
        len: data.len(),
    };
    let mut frame = h.encode(&b.cfg.secret);
    frame.extend_from_slice(data);
    let mut ack = [0u8; 4];
    let exchange = async {
        s.write_all(&frame).await?;
        s.read_exact(&mut ack).await?;
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(ACK_TIMEOUT, exchange).await {
        Err(_) => return Err(SendError::Timeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(SendError::Refused),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(())) => {}
    }
    match &ack {
        a if a == forward::ACCEPTED => Ok(s),
        a if a == forward::NO_SESSION => Err(SendError::NoSession),
        _ => Err(SendError::Refused),
    }
}

/// Copies bytes between the client and the owner node until either side is done (a
/// websocket lives here for its whole life; polling requests end with their connection).
async fn relay_both_ways(mut client: TcpStream, mut upstream: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

// ---------------------------------------------------------------------------------------
// The owning side

/// Binds the node-to-node listener and serves it. A bind failure is logged: this node then
/// takes no forwarded requests, everything else works.
///
/// The common path costs what the balancer's local hand-off costs: with TCP_DEFER_ACCEPT the
/// kernel hands over a connection once its first bytes arrived, and the forwarding node sent
/// the whole forward in one write, so the connection is accepted (`accept4`, not registered
/// with the reactor), read once, checked, answered and handed to the worker without ever
/// being registered with epoll or waking the task twice. Only a forward that is not all
/// there yet waits on the reactor.
async fn listen(b: Arc<Link>, local: Arc<dyn LocalSessions>, host: String, port: u16) {
    use std::os::fd::AsRawFd;
    let l = match TcpListener::bind((host.as_str(), port)).await {
        Ok(l) => l,
        Err(e) => {
            dlog::error(&format!(
                "Cluster: cannot listen for other nodes on {host}:{port} (PM2_CLUSTER_LISTEN): {e}; requests for this node's sessions that reach other nodes get \"Session ID unknown\""
            ));
            return;
        }
    };
    crate::cluster::bind::defer_accept(l.as_raw_fd());
    let shown = l.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| format!("{host}:{port}"));
    let registered = l.into_std().and_then(crate::cluster::bind::poll_listener);
    let l = match registered {
        Ok(l) => l,
        Err(e) => {
            dlog::error(&format!("Cluster: cannot poll the node-to-node listener on {shown}: {e}"));
            return;
        }
    };
    dlog::log(&format!(
        "Cluster: taking requests forwarded by other nodes on {shown} (advertised as {})",
        b.cfg.advertise.as_deref().unwrap_or("?")
    ));
    *b.fwd().listening.lock().unwrap_or_else(|p| p.into_inner()) = Some(shown);
    loop {
        let mut guard = match l.readable().await {
            Ok(g) => g,
            Err(e) => {
                dlog::error(&format!("Cluster: the node-to-node listener failed: {e}"));
                return;
            }
        };
        match guard.try_io(|l| crate::cluster::bind::accept4(l.get_ref().as_raw_fd())) {
            Ok(Ok(fd)) => {
                tokio::spawn(serve(b.clone(), local.clone(), Sock::Std(std::net::TcpStream::from(fd))));
            }
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            Ok(Err(e)) => {
                b.fwd().log_limit.warn("accept", || format!("Cluster: node-to-node accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_would_block) => {}
        }
    }
}

/// An accepted node-to-node connection, registered with the reactor only if reading it has
/// to wait.
enum Sock {
    Std(std::net::TcpStream),
    Tokio(TcpStream),
    Gone,
}

impl Sock {
    /// Appends at most `max` bytes read from the connection; 0 at its end.
    async fn read_more(&mut self, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
        use std::io::Read;
        let start = buf.len();
        buf.resize(start + max.min(64 << 10), 0);
        let got = loop {
            match self {
                Sock::Std(s) => match s.read(&mut buf[start..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let Sock::Std(s) = std::mem::replace(self, Sock::Gone) else { continue };
                        match TcpStream::from_std(s) {
                            Ok(t) => *self = Sock::Tokio(t),
                            Err(e) => break Err(e),
                        }
                    }
                    r => break r,
                },
                Sock::Tokio(t) => break t.read(&mut buf[start..]).await,
                Sock::Gone => break Err(std::io::ErrorKind::NotConnected.into()),
            }
        };
        buf.truncate(start + *got.as_ref().unwrap_or(&0));
        got
    }

    /// Writes a 4-byte answer. On a fresh connection it always fits the socket's buffer.
    async fn answer(&mut self, bytes: &[u8; 4]) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Sock::Std(s) => match s.write(bytes)? {
                4 => Ok(()),
                _ => Err(std::io::ErrorKind::WriteZero.into()),
            },
            Sock::Tokio(t) => t.write_all(bytes).await,
            Sock::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    fn peer(&self) -> String {
        let a = match self {
            Sock::Std(s) => s.peer_addr(),
            Sock::Tokio(t) => t.peer_addr(),
            Sock::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        };
        a.map_or_else(|_| "?".to_owned(), |a| a.to_string())
    }

    fn into_fd(self) -> Option<std::os::fd::OwnedFd> {
        match self {
            Sock::Std(s) => Some(s.into()),
            Sock::Tokio(t) => t.into_std().ok().map(Into::into),
            Sock::Gone => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("{0}")]
    Forward(#[from] ForwardError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one forward: the signed header is checked as soon as it is complete (before any
/// request byte is believed or waited for), then exactly its `len` request bytes. More bytes
/// than that are a protocol violation: the forwarding node sends nothing else before our answer.
async fn read_forward(b: &Link, s: &mut Sock) -> Result<(Header, Vec<u8>), ServeError> {
    let mut buf = Vec::new();
    let mut header: Option<(Header, usize)> = None;
    loop {
        if header.is_none() && buf.len() >= 6 {
            let mut prefix = [0u8; 6];
            prefix.copy_from_slice(&buf[..6]);
            let n = Header::header_len(&prefix)?;
            if buf.len() >= 6 + n {
                let now = crate::timefmt::now_ms();
                let h = Header::decode(&buf[6..6 + n], &b.cfg.secret, now)?;
                b.fwd().replay.lock().unwrap_or_else(|p| p.into_inner()).check(&h.nonce, h.ts_ms, now)?;
                header = Some((h, 6 + n));
            }
        }
        let want = match header.take() {
            Some((h, start)) => {
                let end = start + h.len;
                if buf.len() > end {
                    return Err(ForwardError::Garbage("bytes past the announced request").into());
                }
                if buf.len() == end {
                    buf.drain(..start);
                    return Ok((h, buf));
                }
                header = Some((h, start));
                end - buf.len()
            }
            // The header's length is not known yet: whatever the largest forward allows.
            None => (6 + forward::MAX_HEADER + forward::MAX_DATA).saturating_sub(buf.len()),
        };
        if s.read_more(&mut buf, want).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

async fn serve(b: Arc<Link>, local: Arc<dyn LocalSessions>, mut s: Sock) {
    // Rate-limited per kind, so a flood of garbage cannot hide a wrong secret.
    let refused = |s: &Sock, kind: &'static str, why: String| {
        b.fwd().refused_in.fetch_add(1, Ordering::Relaxed);
        let peer = s.peer();
        b.fwd()
            .log_limit
            .warn(kind, || format!("Cluster: refused a node-to-node connection from {peer}: {why}"));
    };
    let (h, data) = match tokio::time::timeout(READ_TIMEOUT, read_forward(&b, &mut s)).await {
        Err(_) => return refused(&s, "in-timeout", "nothing valid within 10 s".into()),
        Ok(Err(ServeError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return refused(&s, "in-eof", "closed before a complete forward".into())
        }
        Ok(Err(ServeError::Forward(e @ ForwardError::BadSignature(_)))) => {
            return refused(&s, "in-signature", e.to_string())
        }
        Ok(Err(ServeError::Forward(e @ ForwardError::Garbage(_)))) => {
            return refused(&s, "in-garbage", e.to_string())
        }
        Ok(Err(e)) => return refused(&s, "in-other", e.to_string()),
        Ok(Ok(v)) => v,
    };
    let tx = match local.session_owner(&h.group, &h.sid) {
        SessionOwner::Worker(tx) => tx,
        SessionOwner::NoSession => {
            // The session ended between the lookup and now: the forwarding node answers.
            let _ = s.answer(forward::NO_SESSION).await;
            return;
        }
        SessionOwner::UnknownGroup => {
            return refused(
                &s,
                "in-group",
                format!(
                    "node {} forwarded a request for app group {:?}, which this node does not run",
                    h.node, h.group
                ),
            );
        }
    };
    if s.answer(forward::ACCEPTED).await.is_err() {
        return;
    }
    b.fwd().forwarded_in.fetch_add(1, Ordering::Relaxed);
    let Some(fd) = s.into_fd() else { return };
    let msg = Value::object([("type", Value::from("sticky:connection")), ("data", Value::buffer(data))]);
    // Acked: the worker owns the connection, our copy closes here. Anything else (the worker
    // is gone): closing the connection ends the client's request, and its client retries.
    let _outcome: HandleOutcome = tx.send_handle(&msg, HandleType::NetSocket, fd).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn link() -> Arc<Link> {
        let cfg = super::super::config::from_env(
            |k| match k {
                "PM2_CLUSTER_REDIS" => Some("redis://127.0.0.1:1".into()),
                "PM2_CLUSTER_SECRET" => Some("0123456789abcdef-test".into()),
                _ => None,
            },
            || "owner".into(),
        )
        .unwrap()
        .unwrap();
        let target = super::super::conn::Target::new(&cfg).unwrap();
        Link::new(cfg, target).0
    }

    fn frame(b: &Link, data: &[u8]) -> Vec<u8> {
        let h = Header {
            node: "other".into(),
            group: "chat".into(),
            sid: "AAAAAAAAAAAAAAAAAAAA".into(),
            client: "127.0.0.9".into(),
            ts_ms: crate::timefmt::now_ms(),
            nonce: forward::nonce(),
            len: data.len(),
        };
        let mut f = h.encode(&b.cfg.secret);
        f.extend_from_slice(data);
        f
    }

    /// Sends `parts` on a new connection (a pause between them) and reads it as the
    /// listener does, starting without the reactor.
    async fn receive(b: &Link, parts: Vec<Vec<u8>>) -> Result<(Header, Vec<u8>), ServeError> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let writer = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            for p in parts {
                c.write_all(&p).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
            // Closed here: all was sent (a reader that wants more sees the end).
        });
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let mut sock = Sock::Std(s);
        let r = tokio::time::timeout(Duration::from_secs(20), read_forward(b, &mut sock)).await.unwrap();
        let _ = writer.join();
        r
    }

    #[tokio::test]
    async fn a_forward_in_pieces_is_read_whole() {
        let b = link();
        // Larger than one read, header split in the middle: the slow path on the reactor.
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let f = frame(&b, &data);
        let (h, got) =
            receive(&b, vec![f[..9].to_vec(), f[9..70_000].to_vec(), f[70_000..].to_vec()]).await.unwrap();
        assert_eq!((h.node.as_str(), h.len), ("other", data.len()));
        assert!(got == data);
        // In one write: the common path.
        let (_, got) = receive(&b, vec![frame(&b, b"GET / HTTP/1.1\r\n\r\n")]).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn extra_bytes_replays_and_garbage_are_refused() {
        let b = link();
        let mut f = frame(&b, b"GET / HTTP/1.1\r\n\r\n");
        let replay = f.clone();
        f.extend_from_slice(b"more");
        let e = receive(&b, vec![f]).await.unwrap_err();
        assert!(e.to_string().contains("bytes past the announced request"), "{e}");
        // The same header again (its nonce was seen while checking the one above).
        let e = receive(&b, vec![replay]).await.unwrap_err();
        assert!(matches!(e, ServeError::Forward(ForwardError::Replay)), "{e}");
        let e = receive(&b, vec![b"GET / HTTP/1.1\r\n\r\n".to_vec()]).await.unwrap_err();
        assert!(matches!(e, ServeError::Forward(ForwardError::Garbage(_))), "{e}");
        // Closed half-way: an end of file, not a hang.
        let f = frame(&b, b"GET / HTTP/1.1\r\n\r\n");
        let e = receive(&b, vec![f[..20].to_vec()]).await.unwrap_err();
        assert!(matches!(&e, ServeError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof), "{e}");
    }
}
