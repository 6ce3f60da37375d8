//! Any node takes any request: the I/O around [`super::sids`] and [`super::forward`].
//!
//! - The session book (one task, one Redis connection): `SET corral:sid:<group>:<sid>` when a
//!   local worker confirms a session, `DEL` when it ends, every live record refreshed every
//!   minute and all of them written again after a reconnect (Redis may have restarted empty);
//!   lookups (`GET`) share the connection, pipelined with the rest.
//! - The forwarding side: the balancer meets a sid no local worker has; [`take_unknown_sid`]
//!   looks up its owner (cached), sends the signed header and the bytes already read to the
//!   owner's node-to-node listener, and relays bytes both ways between the client and that
//!   connection in a task of its own (the [`Relay`]), taking the owner's answer off the front
//!   of what comes back.
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
use std::future::Future;
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
    /// The node-to-node listener's descriptor (-1: none), handed to the next image by an
    /// in-place update so that forwards queue in its backlog across the exec instead of
    /// being refused.
    listener_fd: std::sync::atomic::AtomicI32,
    /// Accepted node-to-node connections not yet handed to a worker or refused.
    serving: std::sync::atomic::AtomicUsize,
    pub(super) log_limit: LogLimit,
    /// Where verified pushes of other nodes' adapter frames go (the bridge).
    direct: std::sync::OnceLock<Arc<dyn super::direct::DirectSink>>,
    /// Push connections open now (other nodes sending their adapter frames straight here).
    pub pushes_in: AtomicU64,
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
            listener_fd: std::sync::atomic::AtomicI32::new(-1),
            serving: Default::default(),
            log_limit: Default::default(),
            direct: Default::default(),
            pushes_in: Default::default(),
        };
        (Arc::new(link), rx)
    }

    /// Starts the session book and, with `PM2_CLUSTER_LISTEN`, the node-to-node listener.
    /// `adopted`: the listening socket the previous image handed over (an in-place update),
    /// used instead of binding a new one.
    pub fn start(
        self: &Arc<Self>,
        rx: mpsc::UnboundedReceiver<SidOp>,
        local: Arc<dyn LocalSessions>,
        adopted: Option<std::os::fd::RawFd>,
    ) {
        tokio::spawn(session_book(self.clone(), rx));
        match self.cfg.listen.clone() {
            Some((h, p)) => {
                tokio::spawn(listen(self.clone(), local, h, p, adopted));
            }
            None => dlog::log(
                "Cluster: no PM2_CLUSTER_LISTEN: this node forwards requests for other nodes' sessions but takes none",
            ),
        }
    }

    /// Where pushes go; set once by the bridge before [`Link::start`].
    pub fn set_direct(&self, sink: Arc<dyn super::direct::DirectSink>) {
        let _ = self.direct.set(sink);
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

    /// Forwards accepted and not yet handed to a worker or refused.
    pub fn serving(&self) -> usize {
        self.serving.load(Ordering::Acquire)
    }

    /// The node-to-node listener, for an in-place update.
    pub fn listener_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.listener_fd.load(Ordering::Acquire)).filter(|fd| *fd >= 0)
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
            "pushes_in": n(&f.pushes_in),
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
/// Returns the stream when the request stays here (no cluster, nobody else owns the sid, the
/// owner could not even be connected to): the caller answers it as before. `None`: the
/// request is on its way to its owner node, and a task of its own relays the client's
/// connection there (and answers the client itself if the owner turns the forward down).
///
/// The forward costs the forwarding node as few wake-ups as it can: the connection to the
/// owner is started and the whole forward written in the same turn (a non-blocking connect;
/// the kernel queues the bytes until the handshake is done, and on loopback it already is),
/// nothing waits for the owner's answer (it arrives with the worker's first response bytes,
/// see [`serve`]), and when the owner's side ends the client is closed at once.
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
    let upgrade = asks_upgrade(&data[..head_len.min(data.len())]);
    let data = forward::add_client_address(data, head_len, client.ip());
    match start_forward(&b, &owner, &group, sid, client, &data).await {
        Ok((upstream, unsent)) => {
            tokio::spawn(forwarded(b, owner, group, sid.to_owned(), upgrade, stream, upstream, unsent));
            None
        }
        Err(e) => {
            forward_failed(&b, &owner, &group, sid, &e);
            Some(stream)
        }
    }
}

/// Forgets the cached owner of a forward that did not go through, and counts and logs it
/// (a session that ended there meanwhile is no failure).
fn forward_failed(b: &Link, owner: &Owner, group: &str, sid: &str, e: &SendError) {
    b.fwd().cache.lock().unwrap_or_else(|p| p.into_inner()).forget(group, sid);
    if !matches!(e, SendError::NoSession) {
        b.fwd().failed_out.fetch_add(1, Ordering::Relaxed);
        b.fwd().log_limit.warn("forward-out", || {
            format!("Cluster: could not forward a request to node {} at {}: {e}", owner.node, owner.addr)
        });
    }
}

/// The request head asks for a WebSocket upgrade (decides the shape of a 400, and whether
/// the client's connection will carry small frames both ways).
fn asks_upgrade(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).is_ok()
        && req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("upgrade") && h.value.trim_ascii().eq_ignore_ascii_case(b"websocket")
        })
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
    #[error("refused (answered {0:?}, not a forward's answer)")]
    BadAnswer([u8; 4]),
    #[error("request too large to forward")]
    TooLarge,
    #[error("cannot resolve the owner's address")]
    NoAddress,
}

/// Connects to the owner and writes the forward without waiting for either: returns the
/// connection (registered with the reactor) and what the socket did not take yet.
async fn start_forward(
    b: &Link,
    owner: &Owner,
    group: &str,
    sid: &str,
    client: SocketAddr,
    data: &[u8],
) -> Result<(TcpStream, Vec<u8>), SendError> {
    if data.len() > forward::MAX_DATA {
        return Err(SendError::TooLarge);
    }
    let addr = match owner.addr.parse::<SocketAddr>() {
        Ok(a) => a,
        // A host name (PM2_CLUSTER_ADVERTISE): resolved by the system's resolver.
        Err(_) => tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(owner.addr.as_str()))
            .await
            .map_err(|_| SendError::Timeout)??
            .next()
            .ok_or(SendError::NoAddress)?,
    };
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
    let s = connect_now(addr)?;
    let sent = match std::io::Write::write(&mut &s, &frame) {
        Ok(n) => n,
        // Still connecting (a remote owner): the relay writes it once the socket is writable.
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e.into()),
    };
    frame.drain(..sent);
    Ok((TcpStream::from_std(s)?, frame))
}

/// A non-blocking TCP connection to `addr`, started but not waited for, with TCP_NODELAY
/// (the forward and the small frames of a websocket go out at once).
fn connect_now(addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the descriptor is owned right below.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let s = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    s.set_nodelay(true)?;
    // SAFETY: the sockaddr structs are fully initialised (zeroed, then filled) and the length
    // passed is theirs.
    let rc = unsafe {
        match addr {
            SocketAddr::V4(a) => {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = a.port().to_be();
                sa.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
                libc::connect(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = a.port().to_be();
                sa.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
                sa.sin6_flowinfo = a.flowinfo();
                sa.sin6_scope_id = a.scope_id();
                libc::connect(
                    fd,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(s)
}

/// A forward on its way: relays it, and answers the client as an unknown sid when the owner
/// turns it down (or never answers) before anything of the worker's came back.
#[allow(clippy::too_many_arguments)]
async fn forwarded(
    b: Arc<Link>,
    owner: Owner,
    group: String,
    sid: String,
    upgrade: bool,
    client: TcpStream,
    upstream: TcpStream,
    unsent: Vec<u8>,
) {
    if upgrade {
        // A websocket's frames are small and go both ways: no Nagle delays on our side.
        let _ = client.set_nodelay(true);
    }
    let accepted = || {
        b.fwd().forwarded_out.fetch_add(1, Ordering::Relaxed);
    };
    let end = relay(&client, &upstream, unsent, CONNECT_TIMEOUT + ACK_TIMEOUT, accepted).await;
    drop(upstream);
    match end {
        // Dropping the client closes it: the owner's side ended, so has the exchange (Node's
        // HTTP server closes a `Connection: close` socket once its response is written,
        // without waiting for the client's FIN either).
        End::Done => {}
        End::Failed(e) => {
            forward_failed(&b, &owner, &group, &sid, &e);
            crate::metrics::counters::BALANCER.answered(400);
            let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            let bytes = crate::sticky::unknown_sid_response(upgrade, &date);
            let mut client = client;
            let _ = tokio::time::timeout(Duration::from_secs(2), client.write_all(&bytes)).await;
            let _ = client.shutdown().await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The relay

/// Relays between `client` and `upstream` (the owner node) until it ends, `unsent` (the rest
/// of the forward) first. The owner's answer is due within `answer_within`, the worker's
/// response is not (a long poll is held); `on_accept` runs once the owner accepted.
async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    unsent: Vec<u8>,
    answer_within: Duration,
    mut on_accept: impl FnMut(),
) -> End {
    let mut relay = Relay::new(unsent);
    let answer_by = tokio::time::sleep(answer_within);
    tokio::pin!(answer_by);
    let mut accepted = false;
    std::future::poll_fn(|cx| {
        let step = relay.poll(cx, client, upstream);
        if !accepted && relay.ack.accepted() {
            accepted = true;
            on_accept();
            // Not due any more: pushed out of the way rather than left to fire (a wake-up for
            // nothing in the middle of a websocket's life).
            answer_by.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
        }
        if step.is_ready() {
            return step;
        }
        if !accepted && answer_by.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(End::Failed(SendError::Timeout));
        }
        std::task::Poll::Pending
    })
    .await
}

/// The first four bytes from the owner: its answer to the forward.
#[derive(Debug, Default)]
struct Ack {
    got: [u8; 4],
    len: usize,
}

/// What [`Ack::feed`] made of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
enum AckStep {
    /// Fewer than four bytes so far.
    More,
    /// Accepted; the worker's bytes start at this offset of the chunk fed.
    Accepted(usize),
    NoSession,
    Bad([u8; 4]),
}

impl Ack {
    fn accepted(&self) -> bool {
        self.len == 4
    }

    /// Takes the answer's bytes from the start of `chunk` (the owner's next bytes).
    fn feed(&mut self, chunk: &[u8]) -> AckStep {
        let take = (4 - self.len).min(chunk.len());
        self.got[self.len..self.len + take].copy_from_slice(&chunk[..take]);
        self.len += take;
        if self.len < 4 {
            return AckStep::More;
        }
        match &self.got {
            a if a == forward::ACCEPTED => AckStep::Accepted(take),
            a if a == forward::NO_SESSION => {
                self.len = 0;
                AckStep::NoSession
            }
            a => {
                let a = *a;
                self.len = 0;
                AckStep::Bad(a)
            }
        }
    }
}

/// How a relay ended.
#[derive(Debug)]
enum End {
    /// The owner's side ended after accepting (or one side failed after that): close both.
    Done,
    /// Nothing of the worker's reached the client: it is answered here.
    Failed(SendError),
}

/// One direction's bytes the destination did not take yet. Nothing more is read from the
/// source until they are written (backpressure); empty, it holds no memory.
#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    at: usize,
}

/// Why a direction stopped.
enum Stop {
    /// Both sockets would block; wakers are registered.
    Blocked,
    /// The source ended and everything read from it was written.
    Eof,
    ReadFailed(std::io::Error),
    WriteFailed(std::io::Error),
    Answer(AckStep),
}

/// Read size per step. On the stack: an idle relay (a websocket) holds no buffers.
const CHUNK: usize = 16 << 10;

/// Copies bytes between the client and the owner node, in the task that owns both (no task
/// per direction): each side is read only when the other can take what is read, and read
/// again before waiting for it (the reactor is only asked when a read or write would block).
struct Relay {
    /// Client to owner; starts with what the socket did not take of the forward.
    up: Pending,
    /// The client's side ended: the owner's write side was shut down.
    up_done: bool,
    /// Owner to client.
    down: Pending,
    ack: Ack,
}

impl Relay {
    fn new(unsent: Vec<u8>) -> Relay {
        Relay {
            up: Pending { buf: unsent, at: 0 },
            up_done: false,
            down: Pending::default(),
            ack: Ack::default(),
        }
    }

    /// The end rules: the owner's side ending (or failing) ends the relay, after the client
    /// got everything read from it; the client's side ending half-closes the owner's and the
    /// response keeps coming; a failure on the client's side ends it. Before the owner
    /// accepted, its side ending or failing, or any answer but ACCEPTED, is a failed forward.
    fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
        client: &TcpStream,
        up: &TcpStream,
    ) -> std::task::Poll<End> {
        use std::task::Poll::{Pending as Wait, Ready};
        let accepted = |r: &Relay| r.ack.accepted();
        match pump(cx, up, client, &mut self.down, Some(&mut self.ack)) {
            Stop::Blocked => {}
            Stop::Eof if accepted(self) => return Ready(End::Done),
            Stop::Eof => return Ready(End::Failed(SendError::Refused)),
            Stop::ReadFailed(_) | Stop::WriteFailed(_) if accepted(self) => return Ready(End::Done),
            Stop::ReadFailed(e) => return Ready(End::Failed(e.into())),
            // Nothing was written to the client before the answer.
            Stop::WriteFailed(_) => return Ready(End::Done),
            Stop::Answer(AckStep::NoSession) => return Ready(End::Failed(SendError::NoSession)),
            Stop::Answer(AckStep::Bad(a)) => return Ready(End::Failed(SendError::BadAnswer(a))),
            Stop::Answer(_) => {}
        }
        if !self.up_done {
            match pump(cx, client, up, &mut self.up, None) {
                Stop::Blocked | Stop::Answer(_) => {}
                Stop::Eof => {
                    self.up_done = true;
                    // The request is complete; the response still comes back.
                    // SAFETY: shutdown(2) on a descriptor `up` owns.
                    unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(up), libc::SHUT_WR) };
                }
                Stop::ReadFailed(_) => return Ready(End::Done),
                Stop::WriteFailed(_) if accepted(self) => return Ready(End::Done),
                Stop::WriteFailed(e) => return Ready(End::Failed(e.into())),
            }
        }
        Wait
    }
}

/// Moves bytes from `src` to `dst` until something would block or ends. With `ack`, the
/// owner's answer is taken off the front of the stream first.
fn pump(
    cx: &mut std::task::Context<'_>,
    src: &TcpStream,
    dst: &TcpStream,
    p: &mut Pending,
    mut ack: Option<&mut Ack>,
) -> Stop {
    use std::io::ErrorKind::WouldBlock;
    use std::task::Poll::{Pending as Wait, Ready};
    let mut chunk = [0u8; CHUNK];
    loop {
        while p.at < p.buf.len() {
            match dst.try_write(&p.buf[p.at..]) {
                Ok(n) => p.at += n,
                Err(e) if e.kind() == WouldBlock => match dst.poll_write_ready(cx) {
                    Ready(Ok(())) => {}
                    Ready(Err(e)) => return Stop::WriteFailed(e),
                    Wait => return Stop::Blocked,
                },
                Err(e) => return Stop::WriteFailed(e),
            }
        }
        if p.at > 0 {
            // Flushed: an idle relay keeps no buffer.
            *p = Pending::default();
        }
        let n = match src.try_read(&mut chunk) {
            Ok(0) => return Stop::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == WouldBlock => match src.poll_read_ready(cx) {
                Ready(Ok(())) => continue,
                Ready(Err(e)) => return Stop::ReadFailed(e),
                Wait => return Stop::Blocked,
            },
            Err(e) => return Stop::ReadFailed(e),
        };
        let mut from = 0;
        if let Some(a) = ack.as_deref_mut().filter(|a| !a.accepted()) {
            match a.feed(&chunk[..n]) {
                AckStep::More => continue,
                AckStep::Accepted(at) => from = at,
                other => return Stop::Answer(other),
            }
        }
        let mut data = &chunk[from..n];
        while !data.is_empty() {
            match dst.try_write(data) {
                Ok(w) => data = &data[w..],
                Err(e) if e.kind() == WouldBlock => {
                    // Kept for when `dst` can take it; `src` is not read meanwhile.
                    p.buf.extend_from_slice(data);
                    break;
                }
                Err(e) => return Stop::WriteFailed(e),
            }
        }
    }
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
async fn listen(
    b: Arc<Link>,
    local: Arc<dyn LocalSessions>,
    host: String,
    port: u16,
    adopted: Option<std::os::fd::RawFd>,
) {
    use std::os::fd::{AsRawFd, FromRawFd};
    let bound = match adopted {
        // SAFETY: the handover document names this descriptor as the node-to-node listener
        // the previous image owned (checked open before adoption); nothing else here owns it.
        Some(fd) => {
            let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            l.set_nonblocking(true).and_then(|_| TcpListener::from_std(l))
        }
        None => TcpListener::bind((host.as_str(), port)).await,
    };
    let l = match bound {
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
    b.listener_fd.store(l.get_ref().as_raw_fd(), Ordering::Release);
    use crate::upgrade::pause;
    loop {
        // During an in-place update nothing is accepted: forwards wait in the backlog of
        // the socket the next image adopts, and the ones already accepted finish first
        // (`Link::serving`), so none is cut by the exec.
        if pause::is_paused() {
            pause::resumed().await;
            continue;
        }
        let readable = tokio::select! {
            r = l.readable() => r,
            _ = pause::paused() => continue,
        };
        let mut guard = match readable {
            Ok(g) => g,
            Err(e) => {
                dlog::error(&format!("Cluster: the node-to-node listener failed: {e}"));
                return;
            }
        };
        match guard.try_io(|l| crate::cluster::bind::accept4(l.get_ref().as_raw_fd())) {
            Ok(Ok(fd)) => {
                let serving = Serving::new(&b);
                let (b, local) = (b.clone(), local.clone());
                tokio::spawn(serve(b, local, Sock::Std(std::net::TcpStream::from(fd)), serving));
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

/// Counts an accepted node-to-node connection until its forward is handed to the worker or
/// refused, or it shows itself a push connection (the count is a quiet point's condition for
/// an in-place update: a push connection lives as long as its peer, and what it carries is
/// in the stream too).
struct Serving(Arc<Link>);

impl Serving {
    fn new(b: &Arc<Link>) -> Serving {
        b.serving.fetch_add(1, Ordering::AcqRel);
        Serving(b.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::AcqRel);
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
    ///
    /// With `more` (ACCEPTED, the worker answers next) it is sent with MSG_MORE: the kernel
    /// holds it until the worker's first write, so it reaches the forwarding node in the same
    /// segment as the response, one wake-up there instead of two. A worker that takes longer
    /// than the retransmission timeout (200 ms at least: a long poll) gets it sent alone.
    async fn answer(&mut self, bytes: &[u8; 4], more: bool) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Sock::Std(s) => s.as_raw_fd(),
            Sock::Tokio(t) => t.as_raw_fd(),
            Sock::Gone => return Err(std::io::ErrorKind::NotConnected.into()),
        };
        let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
        // SAFETY: send(2) reads the 4 bytes of `bytes` from a descriptor `self` owns.
        let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), flags) };
        match n {
            4 => Ok(()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                match self {
                    Sock::Tokio(t) if e.kind() == std::io::ErrorKind::WouldBlock => t.write_all(bytes).await,
                    _ => Err(e),
                }
            }
            _ => Err(std::io::ErrorKind::WriteZero.into()),
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
    /// Not a forward: the peer pushes its adapter frames (the bytes after the magic).
    #[error("a push connection")]
    Push(Vec<u8>),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one forward: the signed header is checked as soon as it is complete (before any
/// request byte is believed or waited for), then at least its `len` request bytes. Bytes past
/// those are the client's next ones (the forwarding node relays the rest of a body without
/// waiting for our answer): they go to the worker with the rest, as the balancer hands over
/// whatever it read.
async fn read_forward(b: &Link, s: &mut Sock) -> Result<(Header, Vec<u8>), ServeError> {
    let mut buf = Vec::new();
    let mut header: Option<(Header, usize)> = None;
    loop {
        if header.is_none() && buf.len() >= 4 && buf[..4] == super::direct::MAGIC[..] {
            buf.drain(..4);
            return Err(ServeError::Push(buf));
        }
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
                if buf.len() >= end {
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

async fn serve(b: Arc<Link>, local: Arc<dyn LocalSessions>, mut s: Sock, serving: Serving) {
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
        Ok(Err(ServeError::Push(rest))) => {
            drop(serving);
            if b.pushes_in.fetch_add(1, Ordering::AcqRel) >= super::direct::MAX_CONNECTIONS {
                b.pushes_in.fetch_sub(1, Ordering::AcqRel);
                let why = format!("more than {} push connections", super::direct::MAX_CONNECTIONS);
                return refused(&s, "push-many", why);
            }
            if let Err((kind, why)) = serve_push(&b, &mut s, rest).await {
                refused(&s, kind, why);
            }
            b.pushes_in.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        Ok(Err(e)) => return refused(&s, "in-other", e.to_string()),
        Ok(Ok(v)) => v,
    };
    let tx = match local.session_owner(&h.group, &h.sid) {
        SessionOwner::Worker(tx) => tx,
        SessionOwner::NoSession => {
            // The session ended between the lookup and now: the forwarding node answers.
            let _ = s.answer(forward::NO_SESSION, false).await;
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
    if s.answer(forward::ACCEPTED, true).await.is_err() {
        return;
    }
    b.fwd().forwarded_in.fetch_add(1, Ordering::Relaxed);
    let Some(fd) = s.into_fd() else { return };
    drop(serving);
    let msg = Value::object([("type", Value::from("sticky:connection")), ("data", Value::buffer(data))]);
    // Acked: the worker owns the connection, our copy closes here. Anything else (the worker
    // is gone): closing the connection ends the client's request, and its client retries.
    let _outcome: HandleOutcome = tx.send_handle(&msg, HandleType::NetSocket, fd).await;
}

/// A push connection: frames of verified batches to the bridge until the peer closes it. A
/// malformed frame or a bad signature ends this connection only (the reason is returned, with
/// its kind for the log's rate limit: a flood of garbage must not hide a wrong secret).
async fn serve_push(b: &Link, s: &mut Sock, mut buf: Vec<u8>) -> Result<(), (&'static str, String)> {
    use super::direct::{split, PushError};
    use super::entry::EntryError;
    let Some(sink) = b.direct.get().cloned() else {
        return Err(("push-off", "this node takes no pushes".into()));
    };
    loop {
        let mut used = 0;
        loop {
            let f = match split(&buf[used..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e @ (PushError::TooLarge(_) | PushError::Malformed(_))) => {
                    return Err(("push-garbage", e.to_string()))
                }
            };
            let entries =
                super::entry::Entry::from_batch(f.node, f.body, f.mac, &b.cfg.secret).map_err(|e| {
                    let kind = if matches!(e, EntryError::BadSignature(_)) {
                        "push-signature"
                    } else {
                        "push-garbage"
                    };
                    (kind, format!("push: {e}"))
                })?;
            used += f.used;
            sink.deliver(entries);
        }
        buf.drain(..used);
        // Between frames a push connection may idle as long as its peer has nothing to say;
        // a frame once begun must arrive whole in time, or a trickle could hold its buffer.
        let idle = buf.is_empty();
        let read = s.read_more(&mut buf, 64 << 10);
        let got = if idle {
            read.await
        } else {
            match tokio::time::timeout(READ_TIMEOUT, read).await {
                Ok(r) => r,
                Err(_) => return Err(("push-timeout", "push: a frame not complete within 10 s".into())),
            }
        };
        match got {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(("push-read", format!("push: read failed: {e}"))),
        }
    }
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

    #[test]
    fn the_owners_answer_is_taken_off_the_front_in_any_pieces() {
        let mut a = Ack::default();
        assert_eq!(a.feed(b"FW"), AckStep::More);
        assert!(!a.accepted());
        assert_eq!(a.feed(b"OKHTTP/1.1"), AckStep::Accepted(2));
        assert!(a.accepted());
        let mut a = Ack::default();
        assert_eq!(a.feed(b"FWOK"), AckStep::Accepted(4));
        let mut a = Ack::default();
        assert_eq!(a.feed(b"F"), AckStep::More);
        assert_eq!(a.feed(b"WNO"), AckStep::NoSession);
        assert!(!a.accepted());
        let mut a = Ack::default();
        assert_eq!(a.feed(b"HTTP/1.1 200 OK"), AckStep::Bad(*b"HTTP"));
    }

    /// A connected pair of TCP streams on loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    /// `client` (the client's end), `owner` (the owner's end), and the relay between them
    /// running in a task, `unsent` first.
    async fn relayed(unsent: &[u8]) -> (TcpStream, TcpStream, tokio::task::JoinHandle<(End, bool)>) {
        let (client, client_here) = pair().await;
        let (upstream, owner) = pair().await;
        let unsent = unsent.to_vec();
        let task = tokio::spawn(async move {
            let mut accepted = false;
            let end =
                relay(&client_here, &upstream, unsent, Duration::from_secs(20), || accepted = true).await;
            (end, accepted)
        });
        (client, owner, task)
    }

    const T: Duration = Duration::from_secs(30);

    async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(T, s.read_to_end(&mut got)).await.unwrap().unwrap();
        got
    }

    #[tokio::test]
    async fn the_owners_end_closes_the_client_without_waiting_for_its_fin() {
        let (mut client, mut owner, task) = relayed(b"FORWARD").await;
        let mut got = [0u8; 7];
        tokio::time::timeout(T, owner.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(&got, b"FORWARD");
        // The answer split from the response, as when the worker took its time.
        owner.write_all(b"FW").await.unwrap();
        owner.write_all(b"OKHTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok").await.unwrap();
        drop(owner);
        // The client never shuts down its side, and still sees the response and its end.
        assert_eq!(read_to_end(&mut client).await, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok");
        let (end, accepted) = tokio::time::timeout(T, task).await.unwrap().unwrap();
        assert!(matches!(end, End::Done) && accepted, "{end:?}");
    }

    #[tokio::test]
    async fn the_clients_end_half_closes_the_owner_and_the_response_still_comes() {
        let (mut client, mut owner, task) = relayed(b"HEAD").await;
        client.write_all(b"+BODY").await.unwrap();
        client.shutdown().await.unwrap();
        // The owner sees the whole request and its end, before answering anything.
        assert_eq!(read_to_end(&mut owner).await, b"HEAD+BODY");
        owner.write_all(b"FWOKresponse").await.unwrap();
        drop(owner);
        assert_eq!(read_to_end(&mut client).await, b"response");
        let (end, _) = tokio::time::timeout(T, task).await.unwrap().unwrap();
        assert!(matches!(end, End::Done), "{end:?}");
    }

    #[tokio::test]
    async fn a_refusal_before_the_answer_is_a_failed_forward_and_nothing_reaches_the_client() {
        for (answer, want) in
            [(&b"FWNO"[..], "NoSession"), (b"", "Refused"), (b"FW", "Refused"), (b"HTTP/1.1", "BadAnswer")]
        {
            let (mut client, mut owner, task) = relayed(b"x").await;
            owner.write_all(answer).await.unwrap();
            drop(owner);
            let (end, accepted) = tokio::time::timeout(T, task).await.unwrap().unwrap();
            assert!(!accepted);
            assert!(format!("{end:?}").contains(want), "{answer:?}: {end:?}");
            // Nothing of the owner's reached the client (the caller answers it; here the
            // test's task just closed it).
            assert_eq!(read_to_end(&mut client).await, b"", "{answer:?}");
        }
    }

    #[tokio::test]
    async fn no_answer_in_time_is_a_failed_forward() {
        let (client, client_here) = pair().await;
        let (upstream, _owner) = pair().await;
        let end = tokio::time::timeout(
            T,
            relay(&client_here, &upstream, Vec::new(), Duration::from_millis(100), || {}),
        )
        .await
        .unwrap();
        assert!(matches!(end, End::Failed(SendError::Timeout)), "{end:?}");
        drop(client);
    }

    /// Both directions at once, each far larger than the sockets' buffers and the relay's
    /// chunk, the client reading only after it wrote everything: backpressure holds the
    /// response back meanwhile, nothing is lost, reordered or deadlocked.
    #[tokio::test]
    async fn large_transfers_both_ways_arrive_whole() {
        const N: usize = 8 << 20;
        let pattern =
            |seed: u32| (0..N as u32).map(move |i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed as u8);
        let up: Vec<u8> = pattern(1).collect();
        let down: Vec<u8> = pattern(2).collect();
        let (client, mut owner, task) = relayed(b"").await;
        let (mut client_r, mut client_w) = client.into_split();
        let up2 = up.clone();
        let writer = tokio::spawn(async move {
            client_w.write_all(&up2).await.unwrap();
            client_w.shutdown().await.unwrap();
            client_w
        });
        let down2 = down.clone();
        let owner_task = tokio::spawn(async move {
            let (mut r, mut w) = owner.split();
            let send = async {
                w.write_all(b"FWOK").await.unwrap();
                w.write_all(&down2).await.unwrap();
            };
            let mut got = Vec::new();
            let recv = r.read_to_end(&mut got);
            let (_, r) = tokio::join!(send, recv);
            r.unwrap();
            // The owner's end ends the relay: only once the whole request came.
            w.shutdown().await.unwrap();
            got
        });
        let _client_w = tokio::time::timeout(T, writer).await.unwrap().unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(T, client_r.read_to_end(&mut got)).await.unwrap().unwrap();
        assert!(got == down, "response: {} bytes of {N}", got.len());
        let at_owner = tokio::time::timeout(T, owner_task).await.unwrap().unwrap();
        assert!(at_owner == up, "request: {} bytes of {N}", at_owner.len());
        let (end, accepted) = tokio::time::timeout(T, task).await.unwrap().unwrap();
        assert!(matches!(end, End::Done) && accepted, "{end:?}");
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
    async fn extra_bytes_go_along_replays_and_garbage_are_refused() {
        let b = link();
        let mut f = frame(&b, b"POST / HTTP/1.1\r\nContent-Length: 8\r\n\r\n");
        let replay = f.clone();
        // The rest of the body, relayed right behind the forward.
        f.extend_from_slice(b"bodybody");
        let (_, got) = receive(&b, vec![f]).await.unwrap();
        assert_eq!(got, b"POST / HTTP/1.1\r\nContent-Length: 8\r\n\r\nbodybody");
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
