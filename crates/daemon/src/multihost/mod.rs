//! Several Corral nodes form one Socket.IO cluster through Redis, for unchanged apps.
//!
//! Each daemon is its workers' cluster primary and relays their adapter frames to each other
//! (`sticky::relay`). With `PM2_CLUSTER_REDIS` set, the bridge also publishes every frame a
//! local worker sends to one Redis Stream shared by the nodes, and injects the frames other
//! nodes published into the local workers of the same app (byte for byte: every node is
//! Corral, so V8 frames need no transcoding). Workers then count, fetch and broadcast across
//! nodes exactly as across local workers.
//!
//! Parts:
//! - [`config`]: the settings, parsed into a typed value.
//! - [`resp`], [`conn`]: a minimal Redis client (pure codec, thin connection, back-off).
//! - [`entry`]: the signed stream entry; [`peers`]: what we know of the other nodes (pure);
//!   [`outbox`]: the publisher's bounded queues (pure).
//! - [`direct`]: each batch is also pushed straight to the peers' node-to-node listeners;
//!   Redis stays the ordered log, a push only arrives sooner (and while Redis is away).
//! - [`sids`] (who owns a session, pure), [`forward`] (the node-to-node header, pure) and
//!   [`link`] (the session book, the forwarding and the node-to-node listener): any node
//!   takes any request.
//! - this module: the two tasks. The publisher owns one connection: `XADD` in order (so
//!   each sender's order is kept), this node's heartbeat key, and a replay of its last
//!   entries when Redis lost its data. The reader owns another: `XREAD BLOCK` from its last
//!   position (a Redis blip loses nothing the stream still holds), the peers' heartbeat
//!   checks, and delivery to local workers through [`LocalWorkers`].
//!
//! The glue with the cluster primary is three calls: [`Bridge::local_frame`] (a worker sent
//! a frame), [`Bridge::local_closes`] (a worker died; its adapter closes go to the other
//! nodes too) and the [`LocalWorkers`] implementation (deliver a remote frame).

pub mod config;
pub mod conn;
pub mod direct;
pub mod entry;
pub mod forward;
pub mod link;
pub mod outbox;
pub mod peers;
pub mod resp;
pub mod sids;
pub mod tls;

use crate::dlog;
use crate::sticky::relay::kind;
use config::ClusterConfig;
use conn::{Backoff, Conn};
use entry::{Entry, EntryError};
use outbox::Outbox;
use peers::{Close, Peers, Verdict};
use resp::Reply;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub use link::{take_unknown_sid, LocalSessions, SessionOwner};

/// The stream every node publishes to and reads (one per Redis database).
pub const STREAM_KEY: &str = "corral:adapter";
/// Approximate stream bound: about 10 s of a busy cluster's adapter traffic; a node away
/// longer than what the stream still holds counts the entries it lost.
pub const STREAM_MAXLEN: u64 = 100_000;
/// A marker whose change tells that Redis lost its data (restarted without persistence).
const BOOT_KEY: &str = "corral:boot";
/// How often a node refreshes its heartbeat key, and the key's lifetime: a node silent for
/// [`HEARTBEAT_TTL`] is dead for the others, which check every [`CHECK_EVERY`].
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
pub const HEARTBEAT_TTL: Duration = Duration::from_millis(2000);
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// After the reader (re)connects, peers get this long to refresh their keys (Redis may
/// have restarted empty) before a missing key means a dead peer.
const GRACE_AFTER_CONNECT: Duration = Duration::from_millis(5000);
/// Frames handed to the publisher and not yet taken by it (it takes them at once unless
/// the runtime is starved); past this they are dropped and counted.
const MAX_QUEUED: usize = 100_000;
/// Entries per XADD pipeline and per XREAD.
const BATCH: usize = 256;
const READ_COUNT: usize = 1024;
const READ_BLOCK: Duration = Duration::from_millis(500);
/// How long the reader waits before its next `XREAD` when every peer pushes to this node and
/// the last reply was only what pushes had delivered (the stream is then the fallback only).
const ECHO_PAUSE: Duration = Duration::from_millis(10);

fn heartbeat_key(node: &str) -> String {
    format!("corral:node:{node}")
}

/// Where a node with a node-to-node listener takes pushes (and forwards), refreshed with its
/// heartbeat key: [`direct::addr_value`].
fn addr_key(node: &str) -> String {
    format!("corral:addr:{node}")
}

/// What an in-place update (`pm2 update`) carries from one image's bridge to the next, so
/// that to the other nodes nothing happened: the same node id (also when it was made up at
/// start), incarnation and sequence numbers (a new incarnation would make every peer close
/// all of this node's uids on its workers, though the workers never stopped), the reader's
/// position (the entries other nodes published during the update are delivered, not
/// skipped) and what it knew of the peers.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Resume {
    pub node_id: String,
    pub incarnation: String,
    pub next_seq: u64,
    #[serde(default)]
    pub last_id: Option<String>,
    #[serde(default)]
    pub peers: Option<serde_json::Value>,
    /// The node-to-node listener (the same socket: forwards wait in its backlog).
    #[serde(default)]
    pub listen_fd: Option<i32>,
}

/// Delivers what other nodes sent to this node's workers. Implemented by the cluster primary.
pub trait LocalWorkers: LocalSessions + Send + Sync {
    /// A frame from another node for the workers of `group`: a routed response
    /// (`requester` set, types 8 and 10) goes to the worker owning that uid only, anything
    /// else to every worker of the group.
    /// Frames may stay queued until [`LocalWorkers::flush`].
    fn inject(&self, group: &str, kind: Option<i64>, requester: Option<&str>, json: bool, frame: &[u8]);
    /// Writes what [`LocalWorkers::inject`] queued (called after each read from Redis).
    fn flush(&self);
    /// A uid of a dead node: every worker of `group` gets the adapter close for it.
    fn close_remote(&self, group: &str, uid: &str, nsp: &str);
}

/// A frame waiting to be published.
struct Outgoing {
    group: String,
    sender: u32,
    kind: Option<i64>,
    uid: Option<String>,
    nsp: Option<String>,
    requester: Option<String>,
    to: Option<String>,
    json: bool,
    frame: Vec<u8>,
}

/// Counters and state for logs and `pm2 report`.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub publisher_connected: bool,
    pub reader_connected: bool,
    pub last_error: Option<String>,
    pub published: u64,
    /// Frames dropped before publishing (Redis unreachable too long).
    pub dropped: u64,
    pub delivered: u64,
    pub duplicates: u64,
    /// Entries of other nodes that were trimmed or lost before we read them.
    pub lost: u64,
    /// Entries refused: bad signature or malformed.
    pub refused: u64,
    pub replayed: u64,
    /// Entries delivered by a push, before the stream brought them.
    pub direct: u64,
}

pub struct Bridge {
    cfg: ClusterConfig,
    /// How every connection of this node reaches Redis (TLS included).
    redis: conn::Target,
    incarnation: String,
    out: mpsc::UnboundedSender<Outgoing>,
    /// Frames queued to the sequencer and the publisher and not yet taken by the publisher:
    /// bounds the unbounded channels.
    queued: std::sync::atomic::AtomicUsize,
    /// Entries taken by the publisher and not yet acknowledged by Redis.
    unacked: std::sync::atomic::AtomicUsize,
    /// The publisher's next sequence number and the reader's position (for [`Resume`]).
    next_seq: std::sync::atomic::AtomicU64,
    last_id: Mutex<Option<String>>,
    peers: Mutex<Peers>,
    /// Held while entries are delivered, from the stream or from a push: the check against
    /// the peer's next sequence number and the queueing to the workers happen as one step,
    /// so the two paths cannot reorder a sender's frames.
    deliver_lock: Mutex<()>,
    /// Peers that take pushes: node -> (incarnation, address), from their `addr_key`s, and a
    /// counter the publisher compares to know when to look again.
    peer_addrs: Mutex<std::collections::BTreeMap<String, (String, String)>>,
    addrs_gen: std::sync::atomic::AtomicU64,
    status: Mutex<Status>,
    /// Any node takes any request: session records, forwarding, the node-to-node listener.
    link: Arc<link::Link>,
}

impl Bridge {
    /// Starts the publisher and the reader on the current runtime. Fails only when the
    /// TLS settings cannot be used (a certificate file missing or unreadable).
    /// `resume`: the previous image's state after an in-place update (used when it is the
    /// same node id).
    pub fn start(
        cfg: ClusterConfig,
        local: Arc<dyn LocalWorkers>,
        resume: Option<Resume>,
    ) -> Result<Arc<Bridge>, tls::TlsError> {
        let redis = conn::Target::new(&cfg)?;
        let resume = resume.filter(|r| r.node_id == cfg.node_id && !r.incarnation.is_empty());
        let incarnation = resume.as_ref().map(|r| r.incarnation.clone()).unwrap_or_else(random_hex);
        let peers = resume
            .as_ref()
            .and_then(|r| r.peers.clone())
            .and_then(|v| Peers::resume(v, &cfg.node_id, &incarnation))
            .unwrap_or_else(|| Peers::new(&cfg.node_id, &incarnation));
        let (tx, rx) = mpsc::unbounded_channel();
        let (to_redis, from_sequencer) = mpsc::unbounded_channel();
        let (link, sid_rx) = link::Link::new(cfg.clone(), redis.clone());
        let bridge = Arc::new(Bridge {
            peers: Mutex::new(peers),
            deliver_lock: Mutex::new(()),
            peer_addrs: Mutex::default(),
            addrs_gen: Default::default(),
            link,
            cfg,
            redis,
            incarnation,
            out: tx,
            queued: Default::default(),
            unacked: Default::default(),
            next_seq: resume.as_ref().map_or(0, |r| r.next_seq).into(),
            last_id: Mutex::new(resume.as_ref().and_then(|r| r.last_id.clone())),
            status: Mutex::default(),
        });
        match &resume {
            Some(r) => dlog::log(&format!(
                "Cluster: node {} continues after the in-place update (sequence {}, stream position {})",
                bridge.cfg.node_id,
                r.next_seq,
                r.last_id.as_deref().unwrap_or("the end")
            )),
            None => dlog::log(&format!(
                "Cluster: node {} joins through {} (stream {STREAM_KEY})",
                bridge.cfg.node_id, bridge.cfg.redis
            )),
        }
        tokio::spawn(sequencer(bridge.clone(), rx, to_redis));
        tokio::spawn(publisher(bridge.clone(), from_sequencer));
        bridge.link.set_direct(Arc::new(DirectIn { bridge: Arc::downgrade(&bridge), local: local.clone() }));
        bridge.link.start(sid_rx, local.clone(), resume.as_ref().and_then(|r| r.listen_fd));
        tokio::spawn(reader(bridge.clone(), local));
        Ok(bridge)
    }

    pub fn node_id(&self) -> &str {
        &self.cfg.node_id
    }

    /// Adapter messages of local workers not yet in Redis (an in-place update waits for
    /// them while Redis is reachable).
    pub fn unpublished(&self) -> usize {
        use std::sync::atomic::Ordering;
        self.queued.load(Ordering::Acquire) + self.unacked.load(Ordering::Acquire)
    }

    pub fn publisher_connected(&self) -> bool {
        self.status_mut().publisher_connected
    }

    /// This node's state for the next image (an in-place update); synchronous, taken at the
    /// update's quiet point, when no task runs until the exec.
    pub fn export(&self) -> Resume {
        use std::sync::atomic::Ordering;
        Resume {
            node_id: self.cfg.node_id.clone(),
            incarnation: self.incarnation.clone(),
            next_seq: self.next_seq.load(Ordering::Acquire),
            last_id: self.last_id.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            peers: serde_json::to_value(&*self.peers_mut()).ok(),
            listen_fd: self.link.listener_fd(),
        }
    }

    pub fn status(&self) -> Status {
        self.status_mut().clone()
    }

    /// Connected peers: (node id, entries read, entries lost).
    pub fn peer_list(&self) -> Vec<(String, u64, u64)> {
        self.peers_mut().peers().map(|(n, p)| (n.to_string(), p.entries, p.lost)).collect()
    }

    /// For `pm2 report`: who we are, Redis, the peers and the counters.
    pub fn status_json(&self) -> serde_json::Value {
        let st = self.status();
        let state = |up: bool| if up { "connected" } else { "disconnected" };
        let peers: Vec<serde_json::Value> = self
            .peer_list()
            .into_iter()
            .map(
                |(node, entries, lost)| serde_json::json!({ "node": node, "entries": entries, "lost": lost }),
            )
            .collect();
        serde_json::json!({
            "enabled": true,
            "node_id": self.cfg.node_id,
            "redis": self.cfg.redis.to_string(),
            "publisher": state(st.publisher_connected),
            "reader": state(st.reader_connected),
            "last_error": st.last_error,
            "peers": peers,
            "published": st.published,
            "delivered": st.delivered,
            "dropped": st.dropped,
            "lost": st.lost,
            "duplicates": st.duplicates,
            "refused": st.refused,
            "replayed": st.replayed,
            "direct": st.direct,
            "forwarding": self.link.status_json(),
        })
    }

    /// A local worker of `group` confirmed session `sid`: other nodes may now forward its
    /// requests here (a no-op without a node-to-node listener).
    pub fn sid_owned(&self, group: &str, sid: &str) {
        self.link.sid_owned(group, sid);
    }

    /// The session ended (or its worker exited).
    pub fn sid_gone(&self, group: &str, sid: &str) {
        self.link.sid_gone(group, sid);
    }

    /// The forwarding half, for the balancer's hook ([`take_unknown_sid`]).
    pub fn link(&self) -> Arc<link::Link> {
        self.link.clone()
    }

    /// The short form for `jlist`: node id, Redis state, peers.
    pub fn summary_json(&self) -> serde_json::Value {
        let st = self.status();
        let up = st.publisher_connected && st.reader_connected;
        let peers: Vec<String> = self.peer_list().into_iter().map(|(n, _, _)| n).collect();
        serde_json::json!({
            "node_id": self.cfg.node_id,
            "redis": if up { "connected" } else { "disconnected" },
            "peers": peers,
        })
    }

    fn status_mut(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn peers_mut(&self) -> MutexGuard<'_, Peers> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A local worker of `group` sent an adapter frame; the local relay has delivered it
    /// already. Routed responses whose requester is local must not come here.
    #[allow(clippy::too_many_arguments)]
    pub fn local_frame(
        &self,
        group: &str,
        sender: u32,
        kind: Option<i64>,
        uid: Option<&str>,
        nsp: Option<&str>,
        requester: Option<&str>,
        json: bool,
        frame: &[u8],
    ) {
        // A response for another node's requester is published for that node only.
        let to = match (kind, requester) {
            (Some(kind::FETCH_SOCKETS_RESPONSE | kind::SERVER_SIDE_EMIT_RESPONSE), Some(r)) => {
                self.peers_mut().owner(r).map(str::to_owned)
            }
            _ => None,
        };
        self.enqueue(Outgoing {
            group: group.to_owned(),
            sender,
            kind,
            uid: uid.map(str::to_owned),
            nsp: nsp.map(str::to_owned),
            requester: requester.map(str::to_owned),
            to,
            json,
            frame: frame.to_vec(),
        });
    }

    /// A local worker of `group` exited: the other nodes' workers get the adapter close for
    /// each `(uid, nsp)` it used, as the local survivors do.
    pub fn local_closes(&self, group: &str, sender: u32, closes: &[(String, String)]) {
        for (uid, nsp) in closes {
            let msg = node_ipc::Value::from(crate::sticky::adapter_close_message(uid, nsp));
            let Ok(frame) = node_ipc::encode_payload(&msg, node_ipc::Mode::Advanced) else { continue };
            self.enqueue(Outgoing {
                group: group.to_owned(),
                sender,
                kind: Some(kind::ADAPTER_CLOSE),
                uid: Some(uid.clone()),
                nsp: Some(nsp.clone()),
                requester: None,
                to: None,
                json: false,
                frame,
            });
        }
    }

    fn enqueue(&self, o: Outgoing) {
        use std::sync::atomic::Ordering;
        if self.queued.load(Ordering::Relaxed) >= MAX_QUEUED {
            self.status_mut().dropped += 1;
            return;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _ = self.out.send(o);
    }

    fn set_error(&self, what: &str, e: &dyn std::fmt::Display) {
        self.status_mut().last_error = Some(format!("{what}: {e}"));
    }
}

pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most len bytes into our buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        // Uniqueness is all that matters here: time and pid will do.
        let t = crate::timefmt::now_ms() ^ ((std::process::id() as u64) << 40);
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A random 24-bit suffix for the default node id.
pub fn random_u32() -> u32 {
    u32::from_str_radix(&random_hex()[..8], 16).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Publisher

/// Numbers the local workers' frames (one sequence per node: each sender's order is the
/// order of its frames here), pushes them to the peers that take pushes and hands them to
/// the publisher. A task of its own, so that a publisher waiting on Redis (a reconnect, a
/// slow reply) never holds back the pushes.
async fn sequencer(
    b: Arc<Bridge>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    to_redis: mpsc::UnboundedSender<Vec<Entry>>,
) {
    let me = b.cfg.node_id.clone();
    let mut seq: u64 = b.next_seq.load(std::sync::atomic::Ordering::Acquire);
    let mut pushers = direct::Pushers::default();
    let mut addrs_seen = 0u64;
    let mut buf = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut buf, BATCH).await > 0 {
        let mut fresh = Vec::with_capacity(buf.len());
        for o in buf.drain(..) {
            fresh.push(Entry {
                node: me.clone(),
                incarnation: b.incarnation.clone(),
                seq,
                group: o.group,
                sender: o.sender,
                kind: o.kind,
                uid: o.uid,
                nsp: o.nsp,
                requester: o.requester,
                to: o.to,
                json: o.json,
                frame: o.frame,
            });
            seq += 1;
        }
        b.next_seq.store(seq, std::sync::atomic::Ordering::Release);
        push_direct(&b, &mut pushers, &mut addrs_seen, &fresh);
        if to_redis.send(fresh).is_err() {
            return;
        }
    }
}

async fn publisher(b: Arc<Bridge>, mut rx: mpsc::UnboundedReceiver<Vec<Entry>>) {
    let mut outbox = Outbox::new(outbox::Limits::default());
    let mut backoff = Backoff::default();
    let mut conn: Option<Conn> = None;
    let mut boot_marker: Option<Vec<u8>> = None;
    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut buf: Vec<Vec<Entry>> = Vec::with_capacity(BATCH);
    let me = b.cfg.node_id.clone();
    let mut last_beat = Instant::now();
    let mut outage_logged = false;
    loop {
        // Wait for work: frames, the heartbeat tick, or the time to retry Redis.
        let retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let mut beat_due = false;
        tokio::select! {
            n = rx.recv_many(&mut buf, BATCH) => {
                if n == 0 {
                    return;
                }
            }
            _ = beat.tick() => beat_due = true,
            _ = retry => {}
        }
        // Counted in `unacked` (below) before they leave `queued` (which covers the
        // sequencer too), so `unpublished` never misses them in between.
        let now = Instant::now();
        let mut dropped = 0;
        let mut taken = 0;
        for entry in buf.drain(..).flatten() {
            taken += 1;
            dropped += outbox.push(entry, now);
        }
        dropped += outbox.expire(now);
        b.unacked.store(outbox.pending(), std::sync::atomic::Ordering::Release);
        b.queued.fetch_sub(taken, std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            b.status_mut().dropped += dropped;
            dlog::error(&format!(
                "Cluster: dropped {dropped} adapter messages that could not reach Redis in time (the other nodes miss them)"
            ));
        }

        if conn.is_none() {
            if retry_at.is_some_and(|t| t > tokio::time::Instant::now()) {
                continue;
            }
            match connect_publisher(&b, &mut boot_marker).await {
                Ok((c, lost_data)) => {
                    conn = Some(c);
                    outage_logged = false;
                    retry_at = None;
                    backoff.reset();
                    beat_due = true;
                    if lost_data {
                        // Redis came back empty: what we published just before may never have
                        // been read. Readers drop what they already had.
                        let n = outbox.replay_recent(Instant::now());
                        if n > 0 {
                            dlog::warn(&format!(
                                "Cluster: Redis lost its data; publishing our last {n} entries again"
                            ));
                            b.status_mut().replayed += n as u64;
                        }
                    }
                }
                Err(e) => {
                    // Logged once per outage, not once per retry (the reader's errors, which
                    // may come first, do not count: it logs only losing a connection it had).
                    b.status_mut().publisher_connected = false;
                    if !outage_logged {
                        outage_logged = true;
                        dlog::error(&format!(
                            "Cluster: cannot reach Redis at {}: {e}; retrying",
                            b.cfg.redis
                        ));
                    }
                    b.set_error("publish", &e);
                    retry_at = Some(tokio::time::Instant::now() + backoff.next_delay());
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut failed: Option<conn::ConnError> = None;
        if beat_due {
            failed = heartbeat(&b, c).await.err();
            last_beat = Instant::now();
        }
        while failed.is_none() && !outbox.is_empty() {
            // A long backlog (after an outage) must not starve the heartbeat, or the other
            // nodes would take this one for dead while it catches up.
            if last_beat.elapsed() >= HEARTBEAT_EVERY {
                last_beat = Instant::now();
                if let Err(e) = heartbeat(&b, c).await {
                    failed = Some(e);
                    break;
                }
            }
            // The queued entries, in order, as few stream entries as the batch bounds allow.
            let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
            let mut taken = 0usize;
            let xadd = |entries: &[&Entry]| {
                let mut c: Vec<Vec<u8>> = vec![
                    b"XADD".to_vec(),
                    STREAM_KEY.as_bytes().to_vec(),
                    b"MAXLEN".to_vec(),
                    b"~".to_vec(),
                    STREAM_MAXLEN.to_string().into_bytes(),
                    b"*".to_vec(),
                ];
                c.extend(Entry::batch_fields(&me, entries, &b.cfg.secret));
                c
            };
            Entry::in_batches(outbox.batch(BATCH), |group| {
                taken += group.len();
                cmds.push(xadd(group));
            });
            match c.pipeline(&cmds).await {
                Ok(replies) => {
                    if let Some(Reply::Error(e)) = replies.iter().find(|r| matches!(r, Reply::Error(_))) {
                        // A refused XADD (wrong type at the key, out of memory): retried later
                        // like a network error rather than dropped.
                        failed = Some(conn::ConnError::Refused { cmd: "XADD".into(), msg: e.clone() });
                        break;
                    }
                    outbox.published(taken, Instant::now());
                    b.unacked.store(outbox.pending(), std::sync::atomic::Ordering::Release);
                    b.status_mut().published += taken as u64;
                }
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            None => {
                let mut st = b.status_mut();
                if !st.publisher_connected {
                    st.publisher_connected = true;
                    drop(st);
                    dlog::log(&format!("Cluster: publishing to Redis at {}", b.cfg.redis));
                }
            }
            Some(e) => {
                // Entries whose XADD may or may not have landed stay queued: published again
                // after reconnecting, and readers drop the duplicates by sequence number.
                dlog::error(&format!("Cluster: lost the Redis connection (publisher): {e}; reconnecting"));
                outage_logged = true;
                b.status_mut().publisher_connected = false;
                b.set_error("publish", &e);
                conn = None;
                retry_at = Some(tokio::time::Instant::now() + backoff.next_delay());
            }
        }
    }
}

/// Refreshes this node's heartbeat key and, with a node-to-node listener, its address key.
async fn heartbeat(b: &Bridge, c: &mut Conn) -> Result<(), conn::ConnError> {
    let ttl = HEARTBEAT_TTL.as_millis().to_string().into_bytes();
    let node = &b.cfg.node_id;
    let set = |k: String, v: String| {
        vec![b"SET".to_vec(), k.into_bytes(), v.into_bytes(), b"PX".to_vec(), ttl.clone()]
    };
    let mut cmds = vec![set(heartbeat_key(node), b.incarnation.clone())];
    if let Some(addr) = &b.cfg.advertise {
        cmds.push(set(addr_key(node), direct::addr_value(&b.cfg.secret, node, &b.incarnation, addr)));
    }
    for r in c.pipeline(&cmds).await? {
        if let Reply::Error(msg) = r {
            return Err(conn::ConnError::Refused { cmd: "SET".into(), msg });
        }
    }
    Ok(())
}

/// Pushes freshly numbered entries to every peer that takes pushes, batched as the stream
/// entries are (one signature per batch).
fn push_direct(b: &Bridge, pushers: &mut direct::Pushers, seen: &mut u64, fresh: &[Entry]) {
    use std::sync::atomic::Ordering;
    let me = b.cfg.node_id.as_str();
    let gen = b.addrs_gen.load(Ordering::Acquire);
    if gen != *seen {
        *seen = gen;
        let want = b.peer_addrs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        pushers.sync(me, &want);
    }
    if pushers.is_empty() {
        return;
    }
    let send = |group: &[&Entry]| {
        let body = Entry::batch_body(group);
        let mac = Entry::batch_mac(me, &body, &b.cfg.secret);
        let frame = direct::encode(me, &body, &mac);
        // A batch too big to push goes through Redis alone.
        if frame.len() <= direct::MAX_FRAME {
            pushers.push(Arc::new(frame));
        }
    };
    Entry::in_batches(fresh, send);
}

/// Connects the publisher; `true` when Redis lost its data since we last saw it.
async fn connect_publisher(b: &Bridge, boot: &mut Option<Vec<u8>>) -> Result<(Conn, bool), conn::ConnError> {
    let mut c = Conn::connect(&b.redis, &format!("corral-pub-{}", b.cfg.node_id)).await?;
    let mine = random_hex();
    c.cmd(&["SET", BOOT_KEY, mine.as_str(), "NX"]).await?;
    let now = match c.cmd(&["GET", BOOT_KEY]).await? {
        Reply::Bulk(v) => v,
        _ => mine.into_bytes(),
    };
    let lost = boot.as_ref().is_some_and(|prev| *prev != now);
    *boot = Some(now);
    Ok((c, lost))
}

// ---------------------------------------------------------------------------------------
// Reader

async fn reader(b: Arc<Bridge>, local: Arc<dyn LocalWorkers>) {
    let mut backoff = Backoff::default();
    // After an in-place update: where the previous image stopped.
    let mut last_id: Option<String> = b.last_id.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut warned_refused: u64 = 0;
    loop {
        let mut c = match Conn::connect(&b.redis, &format!("corral-sub-{}", b.cfg.node_id)).await {
            Ok(c) => c,
            Err(e) => {
                if b.status_mut().reader_connected {
                    dlog::error(&format!("Cluster: lost the Redis connection (reader): {e}; reconnecting"));
                }
                b.status_mut().reader_connected = false;
                b.set_error("read", &e);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if last_id.is_none() {
            // First start: read from the stream's end (older entries are history).
            match c.cmd(&["XREVRANGE", STREAM_KEY, "+", "-", "COUNT", "1"]).await {
                Ok(Reply::Array(a)) => {
                    last_id = Some(
                        a.first()
                            .and_then(|e| e.as_array())
                            .and_then(|e| e.first())
                            .and_then(|id| id.as_str())
                            .unwrap_or("0-0")
                            .to_owned(),
                    );
                }
                Ok(_) => last_id = Some("0-0".into()),
                Err(e) => {
                    b.set_error("read", &e);
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
        }
        backoff.reset();
        b.status_mut().reader_connected = true;
        dlog::log(&format!("Cluster: reading the adapter stream from Redis at {}", b.cfg.redis));
        let connected_at = Instant::now();
        let mut last_check = Instant::now();
        let err = loop {
            let from = last_id.clone().unwrap_or_else(|| "0-0".into());
            let count = READ_COUNT.to_string();
            let block = READ_BLOCK.as_millis().to_string();
            let args = [
                "XREAD",
                "COUNT",
                count.as_str(),
                "BLOCK",
                block.as_str(),
                "STREAMS",
                STREAM_KEY,
                from.as_str(),
            ];
            let reply = match c.cmd_within(&args, READ_BLOCK + conn::COMMAND_TIMEOUT).await {
                Ok(Reply::Error(e)) => break conn::ConnError::Refused { cmd: "XREAD".into(), msg: e },
                Ok(r) => r,
                Err(e) => break e,
            };
            let (seen, quiet) = deliver(&b, &*local, &reply, &mut warned_refused);
            if let Some(id) = seen {
                *b.last_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
                last_id = Some(id);
            }
            local.flush();
            // Every peer pushes to us and the stream brought nothing a push had not: its
            // copies (and our own entries) are read in batches, a wake-up per ECHO_PAUSE
            // rather than one per message. A peer whose pushes stop has its entries in the
            // next reply, which is then delivered and followed by no pause.
            if quiet && b.cfg.listen.is_some() && b.peers_mut().all_push() {
                tokio::time::sleep(ECHO_PAUSE).await;
            }
            if last_check.elapsed() >= CHECK_EVERY {
                last_check = Instant::now();
                let judge = connected_at.elapsed() >= GRACE_AFTER_CONNECT;
                if let Err(e) = check_peers(&b, &*local, &mut c, judge).await {
                    break e;
                }
            }
        };
        dlog::error(&format!("Cluster: lost the Redis connection (reader): {err}; reconnecting"));
        b.status_mut().reader_connected = false;
        b.set_error("read", &err);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Handles one XREAD reply; returns the last entry id seen, and whether the reply had
/// entries and none of them needed the stream (all this node's own, or pushed already).
fn deliver(b: &Bridge, local: &dyn LocalWorkers, reply: &Reply, warned: &mut u64) -> (Option<String>, bool) {
    // [[stream, [[id, [field, value, ...]], ...]]]
    let Some(streams) = reply.as_array() else { return (None, false) };
    let _one_at_a_time = b.deliver_lock.lock().unwrap_or_else(|p| p.into_inner());
    let mut last = None;
    let mut needed = false;
    for s in streams {
        let Some([_, entries]) =
            s.as_array().and_then(|a| a.get(..2)).and_then(|a| <&[Reply; 2]>::try_from(a).ok())
        else {
            continue;
        };
        for e in entries.as_array().unwrap_or(&[]) {
            let Some([id, fields]) = e.as_array().and_then(|a| <&[Reply; 2]>::try_from(a).ok()) else {
                continue;
            };
            if let Some(id) = id.as_str() {
                last = Some(id.to_owned());
            }
            let fields = fields.as_array().unwrap_or(&[]);
            if Entry::claimed_node(fields) == Some(b.cfg.node_id.as_bytes()) {
                // Ours (every node reads the whole stream): nothing to deliver or check.
                continue;
            }
            if let Some((node, inc, last)) = Entry::claimed_last(fields) {
                // Every frame of it was pushed to us already.
                if b.peers_mut().is_echo(node, inc, last) {
                    continue;
                }
            }
            needed = true;
            let entries = match Entry::from_fields(fields, &b.cfg.secret) {
                Ok(e) => e,
                Err(err) => {
                    b.status_mut().refused += 1;
                    *warned += 1;
                    // The first refusal and then one in a thousand: a misconfigured node must
                    // be visible without flooding the log.
                    if *warned % 1000 == 1 {
                        let what = match &err {
                            EntryError::BadSignature(_) => "refused an entry",
                            EntryError::Malformed(_) => "ignored an entry",
                        };
                        dlog::error(&format!("Cluster: {what}: {err} ({} so far)", *warned));
                    }
                    continue;
                }
            };
            for entry in &entries {
                deliver_one(b, local, entry);
            }
        }
    }
    let quiet = last.is_some() && !needed;
    (last, quiet)
}

/// One frame of another node (verified): delivered, skipped or counted by what the peers'
/// state says.
fn deliver_one(b: &Bridge, local: &dyn LocalWorkers, entry: &Entry) {
    let known = entry.node == b.cfg.node_id || b.peers_mut().is_known(&entry.node);
    let (verdict, closes) = b.peers_mut().on_entry(entry);
    if !known && b.peers_mut().is_known(&entry.node) {
        dlog::log(&format!("Cluster: node {} joined", entry.node));
    }
    apply(b, local, entry, verdict, &closes);
}

/// Carries out what the peers' state said of one entry (from the stream or a push).
fn apply(b: &Bridge, local: &dyn LocalWorkers, entry: &Entry, verdict: Verdict, closes: &[Close]) {
    send_closes(local, closes);
    let lost = match verdict {
        Verdict::Skip => {
            if entry.node != b.cfg.node_id {
                b.status_mut().duplicates += 1;
            }
            return;
        }
        Verdict::Echo => return,
        Verdict::NotForUs { lost } => lost,
        Verdict::Deliver { lost } => {
            local.inject(&entry.group, entry.kind, entry.requester.as_deref(), entry.json, &entry.frame);
            b.status_mut().delivered += 1;
            lost
        }
    };
    if lost > 0 {
        b.status_mut().lost += lost;
        dlog::error(&format!(
            "Cluster: {lost} adapter messages of node {} were lost (trimmed from the stream or lost by Redis before this node read them)",
            entry.node
        ));
    }
}

/// Where the node-to-node listener delivers verified pushes.
struct DirectIn {
    bridge: std::sync::Weak<Bridge>,
    local: Arc<dyn LocalWorkers>,
}

impl direct::DirectSink for DirectIn {
    fn deliver(&self, entries: Vec<Entry>) {
        let Some(b) = self.bridge.upgrade() else { return };
        {
            let _one_at_a_time = b.deliver_lock.lock().unwrap_or_else(|p| p.into_inner());
            for e in &entries {
                let Some((verdict, closes)) = b.peers_mut().on_direct(e) else { continue };
                if matches!(verdict, Verdict::Deliver { .. }) {
                    b.status_mut().direct += 1;
                }
                apply(&b, &*self.local, e, verdict, &closes);
            }
        }
        self.local.flush();
    }
}

fn send_closes(local: &dyn LocalWorkers, closes: &[Close]) {
    for c in closes {
        local.close_remote(&c.group, &c.uid, &c.nsp);
    }
}

/// Reads every known peer's heartbeat and address keys: the addresses of the peers that take
/// pushes and, once `judge` (the grace after a reconnect is over), a missing or changed
/// heartbeat means that peer died.
async fn check_peers(
    b: &Bridge,
    local: &dyn LocalWorkers,
    c: &mut Conn,
    judge: bool,
) -> Result<(), conn::ConnError> {
    let nodes = b.peers_mut().nodes();
    let get = |k: String| vec![b"GET".to_vec(), k.into_bytes()];
    let mut cmds: Vec<Vec<Vec<u8>>> = nodes.iter().map(|n| get(heartbeat_key(n))).collect();
    cmds.extend(nodes.iter().map(|n| get(addr_key(n))));
    let replies = if nodes.is_empty() { Vec::new() } else { c.pipeline(&cmds).await? };
    let (beats, addrs) = replies.split_at(nodes.len().min(replies.len()));
    let mut want = std::collections::BTreeMap::new();
    for ((node, beat), addr) in nodes.iter().zip(beats).zip(addrs) {
        let Some(inc) = beat.as_str() else { continue };
        if let Some((ainc, a)) = addr.as_bytes().and_then(|v| direct::parse_addr(&b.cfg.secret, node, v)) {
            if ainc == inc {
                want.insert(node.clone(), (ainc, a));
            }
        }
    }
    {
        let mut cur = b.peer_addrs.lock().unwrap_or_else(|p| p.into_inner());
        if *cur != want {
            *cur = want;
            b.addrs_gen.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
    if !judge {
        return Ok(());
    }
    for (node, r) in nodes.iter().zip(beats) {
        let current = r.as_str().map(str::to_owned);
        let dead = b.peers_mut().on_heartbeat(node, current.as_deref());
        if let Some(closes) = dead {
            dlog::warn(&format!(
                "Cluster: node {node} is gone (no heartbeat); its {} adapters are closed on this node's workers",
                closes.len()
            ));
            send_closes(local, &closes);
        }
    }
    Ok(())
}
