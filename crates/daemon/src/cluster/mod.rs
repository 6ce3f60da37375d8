//! The Node cluster primary, natively: per-worker IPC message handling
//! (`online`, `queryServer`, `listening`, `close`, `newconn` replies,
//! `exitedAfterDisconnect`), the listener registry, and the Socket.IO state
//! (sticky router and adapter relay) of every app.
//!
//! Architecture invariants:
//! - The daemon owns every listener a worker asks for. Listeners are scoped
//!   per app: two apps asking for one port get `EADDRINUSE`, as two separate
//!   programs would.
//! - Registry membership changes synchronously (under the registry lock) in
//!   the task that learns about them; listener tasks only do I/O. So a
//!   listener is never closed while a worker that was just promised it
//!   exists.
//! - Adapter frames are forwarded byte for byte (`send_raw`); only their
//!   top-level fields are read.

pub mod bind;
pub mod handover;
pub mod listener;
pub mod listener_state;
pub mod wire;

use crate::dlog;
use crate::error::DaemonError;
use crate::sticky::{self, AdapterFrame, Relay, Router, WorkerId};
use crate::supervisor::host::{ExitRequest, ProbeConnect, Retirement, WorkerEvent, WorkerHost, WorkerInfo};
use node_ipc::{FieldValue, Incoming, Mode, Receiver, Sender, TopLevel, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use wire::{cluster_msg, js_string};

pub type ListenerId = (String, String);

pub struct ListenerEntry {
    pub tx: mpsc::UnboundedSender<listener::LCtl>,
    pub sockname: Option<(String, &'static str, u16)>,
    pub members: BTreeSet<u32>,
    /// The listening socket (owned by the listener task), for an in-place
    /// upgrade.
    pub fd: std::os::fd::RawFd,
    /// The path of a unix-socket listener.
    pub unix_path: Option<std::path::PathBuf>,
    /// Connections the task accepted and has not settled.
    pub busy: Arc<std::sync::atomic::AtomicUsize>,
}

pub struct WorkerLink {
    pub pm_id: u32,
    pub pid: i32,
    pub app: String,
    pub tx: Sender,
    pub listeners: Vec<ListenerId>,
    /// Being stopped or replaced (`drain_worker`). When `replaced`, its
    /// `close` messages do not close a listener (the replacement needs it);
    /// its exit decides (`worker_gone`'s `linger`).
    pub draining: bool,
    /// Set with `draining`: a replacement follows (restart, reload), so the
    /// listeners it closes stay open for it.
    pub replaced: bool,
    /// Its health checks say it is not ready: no new connections or
    /// sessions while another worker is ready (its supervisor decides, by
    /// `WorkerHost::set_ready`).
    pub unready: bool,
    /// `Some`: the worker joins the listeners it asked for only when it says
    /// `listening`, not right after the `queryServer` reply (Deno workers;
    /// these are the listeners waiting). Deno 2.9 loses a handle that
    /// arrives in the same read as a message before it, and the kernel
    /// glues a `newconn` (with its fd) to an unread reply; once the worker
    /// says `listening` it has read the reply.
    pub join_when_listening: Option<Vec<ListenerId>>,
}

/// Socket.IO state of one app.
pub struct StickyApp {
    pub router: Router,
    pub relay: Relay,
    pub notify: Arc<Notify>,
    /// The app receives sticky connections: it opted in (`sticky: true`) or
    /// one of its workers announced itself (adapter or sticky message).
    pub enabled: bool,
    /// `sticky: false`: never route to it, never relay.
    pub disabled: bool,
    /// `sticky: true`: its workers take sessions once online, even when they
    /// never speak the cluster adapter (an app on `@socket.io/sticky`'s
    /// `setupWorker` with another adapter only reports its first session).
    pub opted_in: bool,
    pub port: u16,
    /// The cross-node group it joins (`cluster_group`; its name by default),
    /// `None` when it stays on this node.
    pub group: Option<String>,
    /// When its newest worker was attached: until one speaks the sticky
    /// protocol, the balancer holds requests for a short while after this
    /// (a Socket.IO worker still loading its modules), not for a plain app
    /// that never will.
    pub worker_added: std::time::Instant,
}

#[derive(Default)]
pub struct Registry {
    pub listeners: HashMap<ListenerId, ListenerEntry>,
    pub workers: HashMap<u32, WorkerLink>,
    pub apps: HashMap<String, StickyApp>,
    /// Which app receives the connections of a sticky port.
    pub port_owner: HashMap<u16, String>,
    /// The multi-host bridge (`PM2_CLUSTER_REDIS`), when configured.
    pub bridge: Option<Arc<crate::multihost::Bridge>>,
    next_wid: u32,
}

impl Registry {
    pub fn alloc_wid(&mut self) -> u32 {
        self.next_wid += 1;
        self.next_wid
    }
}

/// The cluster primary: owns the registry of workers, listeners and
/// per-app Socket.IO state, and is the [`WorkerHost`] of every child with a
/// channel.
pub struct Primary {
    me: Weak<Primary>,
    reg: Mutex<Registry>,
    /// `PM2_PORT`: the default sticky port of cluster apps.
    pm2_port: u16,
    /// `PM2_GRACEFUL_TIMEOUT`: how long a replaced Socket.IO worker keeps
    /// its sessions.
    graceful_timeout: Duration,
    /// Makes the sticky balancer listen on a port (set once by the daemon;
    /// the balancer reads this registry, so the primary cannot own it).
    serve_sticky_port: OnceLock<StickyPortServer>,
    /// Where apps' own messages go (set once by the daemon: pm2's bus).
    app_messages: OnceLock<AppMessageSink>,
    /// Where workers' prom-client metric replies go (set by the metrics endpoint when on).
    metric_replies: OnceLock<MetricReplySink>,
}

/// Takes a worker's `prom-client:getMetricsRes` message with the worker's id.
pub type MetricReplySink = Box<dyn Fn(u32, &Value) + Send + Sync>;

/// Binds the sticky balancer on a port, idempotently.
pub type StickyPortServer = Box<dyn Fn(u16) + Send + Sync>;

/// Takes an app's own message (`process.send({type, data})` and the like)
/// with the sender's pm_id and pid: pm2's bus publishes them.
pub type AppMessageSink = Box<dyn Fn(u32, i32, &Value) + Send + Sync>;

/// Hands an app's own message to the sink, if one is set.
fn app_message(p: &Primary, wid: u32, v: &Value) {
    let Some(sink) = p.app_messages.get() else { return };
    let Some((pm_id, pid)) = p.reg().workers.get(&wid).map(|w| (w.pm_id, w.pid)) else { return };
    sink(pm_id, pid, v);
}

impl Primary {
    pub fn new(pm2_port: u16, graceful_timeout: Duration) -> Arc<Primary> {
        Arc::new_cyclic(|me| Primary {
            me: me.clone(),
            reg: Mutex::default(),
            pm2_port,
            graceful_timeout,
            serve_sticky_port: OnceLock::new(),
            app_messages: OnceLock::new(),
            metric_replies: OnceLock::new(),
        })
    }

    /// Locks the registry. A poisoned lock (a panic elsewhere while holding
    /// it) must not take the daemon down: every update leaves the registry
    /// consistent at statement boundaries, so we keep using it.
    pub fn reg(&self) -> MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets who binds sticky ports: every cluster worker spawned (by any
    /// path: start, resurrect, update, scale) makes sure its app's port is
    /// served.
    pub fn set_sticky_port_server(&self, f: StickyPortServer) {
        let _ = self.serve_sticky_port.set(f);
    }

    /// Sends a message to the newest worker of a pm_id (a reload briefly has
    /// two). `None`: it has no channel; `Some(false)`: the channel is closed.
    pub fn send_to_process(&self, pm_id: u32, v: &Value) -> Option<bool> {
        let reg = self.reg();
        let link = reg.workers.iter().filter(|(_, w)| w.pm_id == pm_id).max_by_key(|(wid, _)| **wid);
        link.map(|(_, w)| w.tx.send(v).is_ok())
    }

    /// The multi-host bridge and the group of `app`, when it joins other nodes.
    pub fn bridge_for(&self, app: &str) -> Option<(Arc<crate::multihost::link::Link>, String)> {
        let reg = self.reg();
        reg.bridge.as_ref().map(|b| b.link()).zip(reg.apps.get(app).and_then(|sa| sa.group.clone()))
    }

    /// Sets where apps' own messages go.
    pub fn set_app_message_sink(&self, f: AppMessageSink) {
        let _ = self.app_messages.set(f);
    }

    /// Sets where workers' prom-client metric replies go (the daemon is their cluster
    /// primary); without it they go to pm2's bus like any other message.
    pub fn set_metric_reply_sink(&self, f: MetricReplySink) {
        let _ = self.metric_replies.set(f);
    }

    fn arc(&self) -> Option<Arc<Primary>> {
        self.me.upgrade()
    }
}

impl WorkerHost for Primary {
    fn alloc_worker_id(&self) -> u32 {
        self.reg().alloc_wid()
    }

    fn attach(
        &self,
        wid: u32,
        who: WorkerInfo<'_>,
        tx: Sender,
        rx: Receiver,
        events: mpsc::UnboundedSender<WorkerEvent>,
    ) {
        worker_spawned(self, wid, who.pm_id, who.pid, who.app, tx);
        if let Some(p) = self.arc() {
            tokio::spawn(worker_reader(p, wid, who.label.to_string(), rx, events));
        }
    }

    fn drain(&self, wid: u32, replaced: bool) {
        drain_worker(self, wid, replaced)
    }

    fn detach(&self, wid: u32, linger: bool) {
        worker_gone(self, wid, linger)
    }

    fn retirement(&self, wid: u32) -> Retirement {
        if is_socketio_worker(self, wid) {
            // Its Socket.IO sessions finish on it (their requests still
            // route here), bounded by PM2_GRACEFUL_TIMEOUT. It never exits
            // on `disconnect` (its adapter timers keep it alive) and would
            // lose its channel: go straight to the kill signal.
            Retirement { finish_within: Some(self.graceful_timeout), disconnect: false }
        } else {
            Retirement { finish_within: None, disconnect: true }
        }
    }

    fn open_clients(&self, wid: u32) -> usize {
        session_count(self, wid)
    }

    fn ask_exit(&self, wid: u32, how: ExitRequest) -> bool {
        match how {
            ExitRequest::Shutdown => send_message(self, wid, &Value::from("shutdown")),
            ExitRequest::Disconnect => send_disconnect(self, wid),
        }
    }

    fn set_ready(&self, wid: u32, ready: bool) {
        set_worker_ready(self, wid, ready)
    }

    fn connect_probe(&self, wid: u32, port: u16) -> Option<ProbeConnect> {
        probe_connection(self, wid, port)
    }
}

/// A loopback TCP connection whose server side is handed to `wid` as if its
/// listener on `port` had accepted it (`newconn` with the listener's key),
/// so a health probe reaches exactly that worker. Its `accepted` reply is
/// ignored by the listener task (an unknown seq).
fn probe_connection(p: &Primary, wid: u32, port: u16) -> Option<ProbeConnect> {
    let reg = p.reg();
    let w = reg.workers.get(&wid)?;
    let lid = w.listeners.iter().find(|lid| {
        reg.listeners.get(*lid).and_then(|l| l.sockname.as_ref()).is_some_and(|(_, _, p)| *p == port)
    })?;
    let key = lid.1.clone();
    let tx = w.tx.clone();
    drop(reg);
    Some(Box::pin(async move {
        // Loopback connect completes from the backlog at once: no wait here.
        let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let client = std::net::TcpStream::connect(l.local_addr()?)?;
        let (server, _) = l.accept()?;
        let msg = Value::object([
            ("cmd", Value::from("NODE_CLUSTER")),
            ("act", Value::from("newconn")),
            ("key", Value::from(key)),
            ("seq", Value::from(wire::next_seq())),
        ]);
        match tx.send_handle(&msg, node_ipc::HandleType::NetNative, server.into()).await {
            node_ipc::HandleOutcome::Acked(_) => Ok(client),
            _ => Err(std::io::Error::other("the worker did not take the probe's connection")),
        }
    }))
}

/// Readiness from a worker's health checks, published by its supervisor:
/// its listeners and its app's router stop (or resume) giving it new
/// connections and sessions.
fn set_worker_ready(p: &Primary, wid: u32, ready: bool) {
    let mut reg = p.reg();
    let Some(w) = reg.workers.get_mut(&wid) else { return };
    w.unready = !ready;
    let app = w.app.clone();
    for lid in w.listeners.clone() {
        if let Some(l) = reg.listeners.get(&lid) {
            let _ = l.tx.send(listener::LCtl::Ready(wid, ready));
        }
    }
    if let Some(sa) = reg.apps.get_mut(&app) {
        sa.router.set_healthy(WorkerId(wid), ready);
        if ready {
            sa.notify.notify_waiters();
        }
    }
}

/// Registers a freshly spawned worker. Cluster workers of an app that may
/// speak Socket.IO join its router (not ready yet) and relay.
fn worker_spawned(p: &Primary, wid: u32, pm_id: u32, pid: i32, app: &corral_proto::AppSpec, tx: Sender) {
    let mut reg = p.reg();
    reg.workers.insert(
        wid,
        WorkerLink {
            pm_id,
            pid,
            app: app.name.clone(),
            tx,
            listeners: Vec::new(),
            draining: false,
            replaced: false,
            // An app whose health checks gate readiness starts not ready.
            unready: app.health.as_ref().is_some_and(|h| h.gates_readiness()),
            join_when_listening: (app.runtime() == corral_proto::Runtime::Deno).then(Vec::new),
        },
    );
    if app.exec_mode == corral_proto::ExecMode::Cluster {
        let port = app.sticky_port.unwrap_or(p.pm2_port);
        let sa = reg.apps.entry(app.name.clone()).or_insert_with(|| StickyApp {
            router: Router::new(sticky::Policy::LeastConnection),
            relay: Relay::new(),
            notify: Arc::new(Notify::new()),
            enabled: false,
            disabled: false,
            opted_in: false,
            group: None,
            port,
            worker_added: std::time::Instant::now(),
        });
        sa.disabled = app.sticky == Some(false);
        sa.opted_in = app.sticky == Some(true);
        sa.port = port;
        sa.worker_added = std::time::Instant::now();
        sa.router.add_worker(WorkerId(wid));
        if app.health.as_ref().is_some_and(|h| h.gates_readiness()) {
            sa.router.set_healthy(WorkerId(wid), false);
        }
        sa.relay.add_worker(WorkerId(wid));
        sa.group = match app.cluster_group.as_deref() {
            None => Some(app.name.clone()),
            Some("") => None,
            Some(g) => Some(g.to_owned()),
        };
        if app.sticky == Some(true) && !sa.enabled {
            sa.enabled = true;
            reg.port_owner.entry(port).or_insert_with(|| app.name.clone());
        }
        let wants_balancer = app.sticky != Some(false);
        drop(reg);
        // Every path that runs a cluster worker comes through here (start,
        // resurrect, `update`, pm2-runtime, ecosystem reload, scale, restart
        // with a changed spec), so the balancer is bound here and not only
        // by `start`: an app restored from dump.pm2 must get its port too.
        // Idempotent once bound; a port that was taken is tried again.
        if wants_balancer {
            // A failure is logged by the balancer; the worker still runs.
            if let Some(serve) = p.serve_sticky_port.get() {
                serve(port);
            }
        }
    }
}

/// Stops routing new connections and sessions to a worker (reload, stop,
/// scale down). Its current sessions keep reaching it while it lives.
fn drain_worker(p: &Primary, wid: u32, replaced: bool) {
    let mut reg = p.reg();
    let Some(w) = reg.workers.get_mut(&wid) else { return };
    w.draining = true;
    w.replaced = replaced;
    let app = w.app.clone();
    for lid in w.listeners.clone() {
        if let Some(l) = reg.listeners.get(&lid) {
            let _ = l.tx.send(listener::LCtl::Drain(wid));
        }
    }
    if let Some(sa) = reg.apps.get_mut(&app) {
        sa.router.set_draining(WorkerId(wid));
    }
}

/// A worker exited (or its channel died). `linger`: the app expects a
/// replacement soon (crash restart, restart, reload), so its listeners stay
/// open and queue connections for a while instead of closing.
fn worker_gone(p: &Primary, wid: u32, linger: bool) {
    let mut reg = p.reg();
    let Some(w) = reg.workers.remove(&wid) else { return };
    crate::metrics::counters::forget_worker(wid);
    for lid in &w.listeners {
        leave_listener(&mut reg, lid, wid, linger);
    }
    let Some(sa) = reg.apps.get_mut(&w.app) else { return };
    let sids = sa.router.remove_worker(WorkerId(wid));
    let closes = sa.relay.remove_worker(WorkerId(wid));
    sa.notify.notify_waiters();
    let group = sa.group.clone();
    if let (Some(b), Some(group)) = (&reg.bridge, &group) {
        // The other nodes' workers must stop counting it too, and stop forwarding its sessions.
        b.local_closes(group, wid, &closes);
        for sid in &sids {
            b.sid_gone(group, sid);
        }
    }
    let Some(sa) = reg.apps.get_mut(&w.app) else { return };
    let survivors: Vec<u32> = sa.relay.workers().map(|w| w.0).collect();
    if survivors.is_empty() && !linger {
        let port = sa.port;
        reg.apps.remove(&w.app);
        if reg.port_owner.get(&port) == Some(&w.app) {
            reg.port_owner.remove(&port);
        }
        return;
    }
    // Tell the survivors at once that the dead worker's adapters are gone
    // (otherwise they wait ~10 s for the heartbeat and fetchSockets stalls).
    for (uid, nsp) in closes {
        let msg = Value::from(sticky::adapter_close_message(&uid, &nsp));
        for s in &survivors {
            if let Some(link) = reg.workers.get(s) {
                let _ = link.tx.send(&msg);
            }
        }
    }
}

fn leave_listener(reg: &mut Registry, lid: &ListenerId, wid: u32, linger: bool) {
    let Some(l) = reg.listeners.get_mut(lid) else { return };
    l.members.remove(&wid);
    let _ = l.tx.send(listener::LCtl::Remove { wid, linger });
    if l.members.is_empty() && !linger {
        // Dropping the entry drops the last control sender: the listener task
        // closes the socket and drops queued connections.
        reg.listeners.remove(lid);
    }
}

/// Called by a lingering listener whose time is up: closes it unless a
/// worker joined meanwhile.
fn linger_expired(p: &Primary, lid: &ListenerId) {
    let mut reg = p.reg();
    if reg.listeners.get(lid).is_some_and(|l| l.members.is_empty()) {
        reg.listeners.remove(lid);
    }
}

/// Starts the task of a bound listener and makes its registry entry.
fn start_listener(p: &Primary, lid: &ListenerId, bound: bind::Bound) -> ListenerEntry {
    use std::os::fd::AsRawFd;
    let sockname = bound.sockname();
    let fd = bound.as_raw_fd();
    let unix_path = match &bound {
        bind::Bound::Unix(_, path) => Some(path.clone()),
        bind::Bound::Tcp(_) => None,
    };
    let (weak, id) = (p.me.clone(), lid.clone());
    let on_linger_over = Box::new(move || {
        if let Some(p) = weak.upgrade() {
            linger_expired(&p, &id);
        }
    });
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tx = listener::spawn_counted(lid.1.clone(), bound, on_linger_over, busy.clone());
    ListenerEntry { tx, sockname, members: BTreeSet::new(), fd, unix_path, busy }
}

/// Most messages handled before the relay's queued frames are written: the
/// batch is what one read brought (a current-thread runtime runs the
/// channel's reader to the end of its read first), and this bounds it on a
/// runtime where the reader runs alongside.
const MAX_BATCH: usize = 256;

/// The channels the relay queued frames on while handling one batch of a
/// worker's messages; each gets one write when the batch ends.
#[derive(Default)]
pub(crate) struct Batch {
    dirty: Vec<Sender>,
}

impl Batch {
    /// Queues a relayed frame for `tx`, to be written by [`Batch::flush`].
    fn queue(&mut self, tx: &Sender, payload: &[u8]) -> node_ipc::Result<()> {
        tx.queue_raw(payload)?;
        if !self.dirty.iter().any(|d| d.same_channel(tx)) {
            self.dirty.push(tx.clone());
        }
        Ok(())
    }

    /// Writes every channel queued on: one `sendmsg` each for the whole batch.
    fn flush(&mut self) {
        for tx in self.dirty.drain(..) {
            tx.flush();
        }
    }
}

/// Reads one worker's channel until it closes.
async fn worker_reader(
    p: Arc<Primary>,
    wid: u32,
    label: String,
    mut rx: Receiver,
    events: mpsc::UnboundedSender<WorkerEvent>,
) {
    let mut batch = Batch::default();
    while let Some(first) = rx.recv().await {
        // Everything already read is handled before the relayed frames go
        // out, so a burst costs one write per peer, not one per frame.
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(msg) = next.take() {
            let alive = handle_message(&p, wid, &label, msg, &events, &mut batch);
            handled += 1;
            if !alive {
                batch.flush();
                return;
            }
            if handled < MAX_BATCH {
                next = rx.try_recv();
            }
        }
        batch.flush();
    }
    batch.flush();
}

/// Handles one message; false when the channel was closed for garbage.
fn handle_message(
    p: &Primary,
    wid: u32,
    label: &str,
    msg: node_ipc::Result<Incoming>,
    events: &mpsc::UnboundedSender<WorkerEvent>,
    batch: &mut Batch,
) -> bool {
    let msg = match msg {
        Ok(m) => m,
        Err(e) => {
            // Garbage on one channel must not take the
            // daemon down. Close that channel; the worker is restarted.
            close_and_restart(p, wid, &format!("App [{label}] wrote a malformed IPC frame ({e})"));
            return false;
        }
    };
    if let Some(why) = garbage(&msg) {
        // Framed, but not a message Node could have written: something
        // else writes on the channel (a child that inherited its fd, a
        // native module). Nothing more from it can be trusted.
        close_and_restart(p, wid, &format!("App [{label}] wrote a malformed IPC message ({why})"));
        return false;
    }
    if let Err(e) = on_message(p, wid, label, msg, events, batch) {
        dlog::error(&format!("App [{label}] sent an invalid message: {e}"));
    }
    true
}

/// Why a framed message cannot come from Node's `process.send`, if so. Only
/// bytes that are no message at all count: in advanced mode a payload
/// without the V8 header byte, in JSON mode a line that is not JSON. A valid
/// message the codec cannot fully decode (a V8 type it does not know, say)
/// is only logged by `on_message`.
fn garbage(msg: &Incoming) -> Option<String> {
    match msg.mode() {
        Mode::Advanced => match msg.payload().first() {
            Some(0xff) => None,
            Some(b) => Some(format!("payload starts with 0x{b:02x}, not a V8 header")),
            None => Some("empty payload".into()),
        },
        // Validated without building a value (the field reader is lenient
        // about what follows a top-level scalar).
        Mode::Json => serde_json::from_slice::<serde::de::IgnoredAny>(msg.payload())
            .err()
            .map(|e| format!("invalid JSON message: {e}")),
    }
}

fn close_and_restart(p: &Primary, wid: u32, what: &str) {
    dlog::error(&format!("{what}; closing its channel and restarting it"));
    let pid = {
        let reg = p.reg();
        reg.workers.get(&wid).map(|w| {
            w.tx.abort();
            w.pid
        })
    };
    if let Some(pid) = pid {
        crate::proctree::signal(pid, libc::SIGTERM);
    }
}

fn field_str(f: &Option<FieldValue<'_>>) -> Option<String> {
    field_text(f).map(|s| s.into_owned())
}

/// A string field's text, borrowed from the payload when it can be.
fn field_text<'a>(f: &Option<FieldValue<'a>>) -> Option<std::borrow::Cow<'a, str>> {
    f.as_ref().and_then(|v| v.as_str())
}

fn on_message(
    p: &Primary,
    wid: u32,
    label: &str,
    msg: Incoming,
    events: &mpsc::UnboundedSender<WorkerEvent>,
    batch: &mut Batch,
) -> Result<(), DaemonError> {
    let f = msg.fields().map_err(|e| DaemonError::BadMessage(e.to_string()))?;
    if f.cmd.as_ref().is_some_and(|c| c.eq_str("NODE_CLUSTER")) {
        let v = msg.decode().map_err(|e| DaemonError::BadMessage(e.to_string()))?;
        return on_cluster(p, wid, label, &v, events);
    }
    if f.source.as_ref().is_some_and(|s| s.eq_str(sticky::ADAPTER_SOURCE)) {
        // Borrowed from the payload (ASCII, as cluster-adapter's ids are): nothing allocated.
        let (uid, nsp, req) = (field_text(&f.uid), field_text(&f.nsp), field_text(&f.requester_uid));
        let frame = AdapterFrame {
            kind: f.type_.as_ref().and_then(|t| t.as_i64()),
            uid: uid.as_deref(),
            nsp: nsp.as_deref(),
            requester_uid: req.as_deref(),
        };
        relay(p, wid, &frame, msg.payload(), events, batch);
        return Ok(());
    }
    match &f.top {
        TopLevel::String(s) if s.eq_str("ready") => {
            let _ = events.send(WorkerEvent::Ready);
            // pm2's `wait_ready` signal also readies a worker of an app that
            // takes sticky sessions (never makes a plain cluster app one).
            let mut reg = p.reg();
            if app_of(&reg, wid).is_some_and(|sa| sa.enabled) {
                set_sticky_ready(&mut reg, wid, events);
            }
        }
        TopLevel::Object => {
            let ty = field_str(&f.type_);
            if let Some(t) = ty.as_deref().filter(|t| t.starts_with("sticky:")) {
                let v = msg.decode().map_err(|e| DaemonError::BadMessage(e.to_string()))?;
                on_sticky(p, wid, t, &v, events);
            } else if f.cmd.is_none() && ty.is_none() {
                let v = msg.decode().map_err(|e| DaemonError::BadMessage(e.to_string()))?;
                if let Some(ver) = v.get("node_version").and_then(|v| v.as_str()) {
                    let _ = events.send(WorkerEvent::NodeVersion(ver.to_string()));
                } else {
                    app_message(p, wid, &v);
                }
            } else if let (None, Some(sink)) = (
                &f.cmd,
                p.metric_replies
                    .get()
                    .filter(|_| ty.as_deref() == Some(crate::metrics::promclient::REPLY_TYPE)),
            ) {
                // prom-client's AggregatorRegistry answering its cluster primary.
                let v = msg.decode().map_err(|e| DaemonError::BadMessage(e.to_string()))?;
                sink(wid, &v);
            } else if f.cmd.is_none() {
                // `{type, data}`: pm2's bus messages and @pm2/io's axm:*.
                let v = msg.decode().map_err(|e| DaemonError::BadMessage(e.to_string()))?;
                app_message(p, wid, &v);
            }
        }
        _ => {}
    }
    Ok(())
}

fn on_cluster(
    p: &Primary,
    wid: u32,
    label: &str,
    v: &Value,
    events: &mpsc::UnboundedSender<WorkerEvent>,
) -> Result<(), DaemonError> {
    let act = v.get("act").and_then(|a| a.as_str());
    match act {
        Some("online") => {
            let _ = events.send(WorkerEvent::Online);
            let mut reg = p.reg();
            if app_of(&reg, wid).is_some_and(|sa| sa.opted_in) {
                set_sticky_ready(&mut reg, wid, events);
            }
        }
        Some("listening") => {
            join_deferred(p, wid);
            let _ = events.send(WorkerEvent::Listening);
        }
        Some("queryServer") => query_server(p, wid, label, v)?,
        Some("close") => {
            let key = js_string(v.get("key"));
            let mut reg = p.reg();
            let Some(app) = reg.workers.get(&wid).map(|w| w.app.clone()) else { return Ok(()) };
            let lid = (app, key);
            let replaced = reg.workers.get(&wid).is_some_and(|w| w.draining && w.replaced);
            if replaced {
                // A worker being stopped closes its servers on SIGINT or
                // `disconnect`. If it is the last one and a replacement
                // follows (restart), closing the listener here would refuse
                // connections and drop the queued ones meanwhile. It only
                // stops taking connections now; its exit (`worker_gone`)
                // tells whether the listener lingers for a replacement or
                // closes.
                if let Some(l) = reg.listeners.get_mut(&lid) {
                    l.members.remove(&wid);
                    let _ = l.tx.send(listener::LCtl::Remove { wid, linger: true });
                }
                return Ok(());
            }
            if let Some(w) = reg.workers.get_mut(&wid) {
                w.listeners.retain(|l| l != &lid);
            }
            leave_listener(&mut reg, &lid, wid, false);
        }
        Some("exitedAfterDisconnect") => {
            let seq = v.get("seq").cloned().unwrap_or(Value::Null);
            let reg = p.reg();
            if let Some(w) = reg.workers.get(&wid) {
                let _ = w.tx.send(&cluster_msg(vec![("ack", seq)]));
            }
        }
        None if v.get("ack").is_some() => {
            let ack = v
                .get("ack")
                .and_then(|a| a.as_f64())
                .ok_or_else(|| DaemonError::BadMessage("newconn reply without a numeric ack".into()))?;
            let accepted = v.get("accepted").and_then(|a| a.as_bool()).unwrap_or(false);
            if accepted {
                crate::metrics::counters::listener_connection(wid);
            }
            // Each listener of the worker ignores a seq it did not offer.
            let reg = p.reg();
            for lid in reg.workers.get(&wid).map(|w| w.listeners.as_slice()).unwrap_or_default() {
                if let Some(l) = reg.listeners.get(lid) {
                    let _ = l.tx.send(listener::LCtl::Reply { wid, seq: ack as u64, accepted });
                }
            }
        }
        other => return Err(DaemonError::BadMessage(format!("unknown cluster message act={other:?}"))),
    }
    Ok(())
}

fn query_server(p: &Primary, wid: u32, label: &str, v: &Value) -> Result<(), DaemonError> {
    let seq =
        v.get("seq").cloned().ok_or_else(|| DaemonError::BadMessage("queryServer without seq".into()))?;
    let address = v.get("address");
    let port = v.get("port");
    let address_type = v.get("addressType");
    let fd = v.get("fd");
    let index = v.get("index");
    let key = format!(
        "{}:{}:{}:{}:{}",
        js_string(address),
        js_string(port),
        js_string(address_type),
        js_string(fd),
        js_string(index)
    );
    let q = bind::Query {
        address: address.and_then(|a| a.as_str()).map(String::from),
        port: port.and_then(|p| p.as_i64()),
        address_type: address_type.and_then(|a| a.as_i64()).unwrap_or(4),
        fd: fd.and_then(|f| f.as_i64()).filter(|f| *f >= 0),
        index: index.and_then(|i| i.as_i64()).unwrap_or(0),
        key: key.clone(),
    };
    let mut reg = p.reg();
    let Some(app) = reg.workers.get(&wid).map(|w| w.app.clone()) else { return Ok(()) };
    let lid = (app.clone(), key.clone());
    let sockname = if let Some(l) = reg.listeners.get(&lid) {
        Ok(l.sockname.clone())
    } else {
        match bind::bind(&q) {
            Ok(bound) => {
                let sockname = bound.sockname();
                reg.listeners.insert(lid.clone(), start_listener(p, &lid, bound));
                Ok(sockname)
            }
            Err(e) => Err(e),
        }
    };
    let Some(link) = reg.workers.get(&wid) else { return Ok(()) };
    let tx = link.tx.clone();
    match sockname {
        Err(e) => {
            let what = match &q.address {
                Some(a) if q.address_type == -1 => a.clone(),
                Some(a) => format!("{a}:{}", q.port.unwrap_or(0)),
                None => format!("port {}", q.port.unwrap_or(0)),
            };
            // Named as the worker will see it (`err.code`), so a search of
            // pm2.log for the app's error finds the daemon's side too.
            dlog::error(&format!("App [{label}] cannot listen on {what}: {}: {e}", bind::uv_errname(&e)));
            let reply = cluster_msg(vec![
                ("errno", Value::from(bind::uv_errno(&e))),
                ("key", Value::from(key)),
                ("ack", seq),
                ("data", Value::Null),
            ]);
            let _ = tx.send(&reply);
        }
        Ok(sockname) => {
            let mut fields =
                vec![("errno", Value::Null), ("key", Value::from(key)), ("ack", seq), ("data", Value::Null)];
            if let Some((address, family, port)) = sockname {
                fields.push((
                    "sockname",
                    Value::object([
                        ("address", Value::from(address)),
                        ("family", Value::from(family)),
                        ("port", Value::from(port as u32)),
                    ]),
                ));
            }
            // The reply is queued before the worker joins the listener, so
            // no newconn can overtake it on the channel.
            let _ = tx.send(&cluster_msg(fields));
            let deferred = match reg.workers.get_mut(&wid).and_then(|w| w.join_when_listening.as_mut()) {
                Some(waiting) => {
                    waiting.push(lid.clone());
                    true
                }
                None => false,
            };
            if !deferred {
                let unready = reg.workers.get(&wid).is_some_and(|w| w.unready);
                if let Some(l) = reg.listeners.get_mut(&lid) {
                    l.members.insert(wid);
                    let _ = l.tx.send(listener::LCtl::Add(wid, tx));
                    if unready {
                        let _ = l.tx.send(listener::LCtl::Ready(wid, false));
                    }
                }
            }
            if let Some(w) = reg.workers.get_mut(&wid) {
                if !w.listeners.contains(&lid) {
                    w.listeners.push(lid);
                }
            }
        }
    }
    Ok(())
}

/// A worker that joins its listeners on `listening` said it: it joins the
/// ones it asked for since (a draining worker joins none).
fn join_deferred(p: &Primary, wid: u32) {
    let mut reg = p.reg();
    let Some(w) = reg.workers.get_mut(&wid) else { return };
    let Some(waiting) = w.join_when_listening.as_mut() else { return };
    let lids = std::mem::take(waiting);
    if w.draining {
        return;
    }
    let tx = w.tx.clone();
    let unready = w.unready;
    for lid in lids {
        if let Some(l) = reg.listeners.get_mut(&lid) {
            l.members.insert(wid);
            let _ = l.tx.send(listener::LCtl::Add(wid, tx.clone()));
            if unready {
                let _ = l.tx.send(listener::LCtl::Ready(wid, false));
            }
        }
    }
}

/// The first adapter or sticky message of a worker: it can take sticky
/// traffic now, and its app is a Socket.IO app. False when the worker or
/// its app is unknown, or the app is not balanced (`sticky: false`). Runs
/// for every relayed frame, so the usual case (announced already) only
/// looks things up.
fn announce(reg: &mut Registry, wid: u32, events: &mpsc::UnboundedSender<WorkerEvent>) -> bool {
    let Registry { workers, apps, port_owner, .. } = reg;
    let Some(w) = workers.get(&wid) else { return false };
    let Some(sa) = apps.get_mut(&w.app) else { return false };
    if sa.disabled {
        return false;
    }
    // As `set_sticky_ready`: only a worker that was never ready becomes ready.
    if sa.router.state(WorkerId(wid)) == Some(sticky::WorkerState::NotReady) {
        sa.router.set_ready(WorkerId(wid));
        sa.notify.notify_waiters();
        let _ = events.send(WorkerEvent::Serving);
    }
    if !sa.enabled {
        sa.enabled = true;
        port_owner.entry(sa.port).or_insert_with(|| w.app.clone());
    }
    true
}

/// The Socket.IO state of a worker's app.
fn app_of(reg: &Registry, wid: u32) -> Option<&StickyApp> {
    reg.workers.get(&wid).and_then(|w| reg.apps.get(&w.app)).filter(|sa| !sa.disabled)
}

/// The worker may take new sticky sessions. Only a worker that was never
/// ready becomes ready: a draining one keeps speaking the adapter protocol
/// but must not get new sessions.
fn set_sticky_ready(reg: &mut Registry, wid: u32, events: &mpsc::UnboundedSender<WorkerEvent>) {
    let Some(app) = reg.workers.get(&wid).map(|w| w.app.clone()) else { return };
    let Some(sa) = reg.apps.get_mut(&app).filter(|sa| !sa.disabled) else { return };
    if sa.router.state(WorkerId(wid)) == Some(sticky::WorkerState::NotReady) {
        sa.router.set_ready(WorkerId(wid));
        sa.notify.notify_waiters();
        let _ = events.send(WorkerEvent::Serving);
    }
}

fn relay(
    p: &Primary,
    wid: u32,
    frame: &AdapterFrame<'_>,
    payload: &[u8],
    events: &mpsc::UnboundedSender<WorkerEvent>,
    batch: &mut Batch,
) {
    let mut guard = p.reg();
    if !announce(&mut guard, wid, events) {
        return;
    }
    let Registry { workers, apps, bridge, .. } = &mut *guard;
    let Some(sender) = workers.get(&wid) else { return };
    let Some(sa) = apps.get_mut(&sender.app) else { return };
    crate::metrics::counters::RELAY.frame(frame.kind, payload.len());
    let mut targets = 0usize;
    for t in sa.relay.route(WorkerId(wid), frame) {
        targets += 1;
        if let Some(link) = workers.get(&t.0) {
            // A worker that stopped reading loses relay traffic rather than
            // growing the daemon's memory without bound.
            if batch.queue(&link.tx, payload).is_err() {
                crate::metrics::counters::RELAY.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    // A response whose requester is a local worker stays on this node.
    let answered_here = frame.is_routed_response() && targets > 0;
    if let (Some(b), false, Some(group)) = (bridge.as_ref(), answered_here, sa.group.as_deref()) {
        let json = sender.tx.mode() == Mode::Json;
        b.local_frame(group, wid, frame.kind, frame.uid, frame.nsp, frame.requester_uid, json, payload);
    }
}

/// Delivers other nodes' adapter frames to this node's workers (the multi-host bridge).
///
/// Frames are queued without a write each; [`crate::multihost::LocalWorkers::flush`] writes
/// each worker's queue in one `sendmsg` once a read from Redis is delivered, so a worker reads
/// a burst in a few reads rather than one per frame (what a worker pays per read is most of
/// what receiving costs it).
pub struct RemoteFrames {
    primary: Weak<Primary>,
    dirty: std::sync::Mutex<Batch>,
}

impl RemoteFrames {
    pub fn new(primary: Weak<Primary>) -> RemoteFrames {
        RemoteFrames { primary, dirty: Default::default() }
    }

    fn batch(&self) -> std::sync::MutexGuard<'_, Batch> {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl crate::multihost::LocalSessions for RemoteFrames {
    fn session_owner(&self, group: &str, sid: &str) -> crate::multihost::SessionOwner {
        use crate::multihost::SessionOwner;
        let Some(p) = self.primary.upgrade() else { return SessionOwner::UnknownGroup };
        let reg = p.reg();
        let mut known = false;
        for sa in
            reg.apps.values().filter(|sa| sa.enabled && !sa.disabled && sa.group.as_deref() == Some(group))
        {
            known = true;
            if let Some(link) = sa.router.owner(sid).and_then(|w| reg.workers.get(&w.0)) {
                return SessionOwner::Worker(link.tx.clone());
            }
        }
        if known {
            SessionOwner::NoSession
        } else {
            SessionOwner::UnknownGroup
        }
    }
}

impl crate::multihost::LocalWorkers for RemoteFrames {
    fn inject(&self, group: &str, kind: Option<i64>, requester: Option<&str>, json: bool, frame: &[u8]) {
        let Some(p) = self.primary.upgrade() else { return };
        let reg = p.reg();
        let mut batch = self.batch();
        let routed = matches!(
            kind,
            Some(
                sticky::relay::kind::FETCH_SOCKETS_RESPONSE | sticky::relay::kind::SERVER_SIDE_EMIT_RESPONSE
            )
        );
        let src = if json { Mode::Json } else { Mode::Advanced };
        // Usually one app per group on a node; several local apps may join one group.
        for sa in reg.apps.values().filter(|sa| !sa.disabled && sa.group.as_deref() == Some(group)) {
            let targets: Vec<WorkerId> = match (routed, requester) {
                (true, Some(r)) => sa.relay.owner(r).into_iter().collect(),
                (true, None) => Vec::new(),
                (false, _) => sa.relay.workers().collect(),
            };
            for t in targets {
                let Some(link) = reg.workers.get(&t.0) else { continue };
                if link.tx.mode() == src {
                    if batch.queue(&link.tx, frame).is_err() {
                        crate::metrics::counters::RELAY
                            .dropped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                } else if let Ok(v) = node_ipc::decode_payload(frame, src) {
                    // A worker with the other serialization: same value, its encoding.
                    let _ = link.tx.send(&v);
                }
            }
        }
    }

    fn flush(&self) {
        self.batch().flush();
    }

    fn close_remote(&self, group: &str, uid: &str, nsp: &str) {
        // Queued frames keep their place: `send` appends behind them and writes them all.
        let Some(p) = self.primary.upgrade() else { return };
        let reg = p.reg();
        let msg = Value::from(sticky::adapter_close_message(uid, nsp));
        for sa in reg.apps.values().filter(|sa| sa.group.as_deref() == Some(group)) {
            for w in sa.relay.workers() {
                if let Some(link) = reg.workers.get(&w.0) {
                    let _ = link.tx.send(&msg);
                }
            }
        }
    }
}

fn on_sticky(p: &Primary, wid: u32, ty: &str, v: &Value, events: &mpsc::UnboundedSender<WorkerEvent>) {
    let mut reg = p.reg();
    if !announce(&mut reg, wid, events) {
        return;
    }
    let Some(app) = reg.workers.get(&wid).map(|w| w.app.clone()) else { return };
    let Some(sa) = reg.apps.get_mut(&app) else { return };
    let sid = v.get("data").and_then(|d| d.as_str());
    match (ty, sid) {
        ("sticky:connection", Some(sid)) => {
            sa.router.on_session(WorkerId(wid), sid);
            sa.notify.notify_waiters();
        }
        ("sticky:disconnection", Some(sid)) => {
            sa.router.on_session_closed(WorkerId(wid), sid);
        }
        _ => return,
    }
    // Other nodes forward this session's requests here while it lives (several machines).
    if let (Some(b), Some(group), Some(sid)) =
        (&reg.bridge, reg.apps.get(&app).and_then(|sa| sa.group.as_ref()), sid)
    {
        if ty == "sticky:connection" {
            b.sid_owned(group, sid);
        } else {
            b.sid_gone(group, sid);
        }
    }
}

/// True when the worker's app speaks Socket.IO (sticky routing enabled).
fn is_socketio_worker(p: &Primary, wid: u32) -> bool {
    let reg = p.reg();
    reg.workers.get(&wid).and_then(|w| reg.apps.get(&w.app)).is_some_and(|sa| sa.enabled && !sa.disabled)
}

/// Live Engine.IO sessions on a worker.
fn session_count(p: &Primary, wid: u32) -> usize {
    let reg = p.reg();
    let Some(w) = reg.workers.get(&wid) else { return 0 };
    reg.apps.get(&w.app).map(|sa| sa.router.session_count(WorkerId(wid))).unwrap_or(0)
}

/// Sends `{cmd:'NODE_CLUSTER', act:'disconnect'}`: the worker closes its
/// servers and exits once idle.
fn send_disconnect(p: &Primary, wid: u32) -> bool {
    let reg = p.reg();
    match reg.workers.get(&wid) {
        Some(w) => w.tx.send(&cluster_msg(vec![("act", Value::from("disconnect"))])).is_ok(),
        None => false,
    }
}

/// Sends a plain message (e.g. `'shutdown'`) on a worker's channel.
fn send_message(p: &Primary, wid: u32, v: &Value) -> bool {
    let reg = p.reg();
    reg.workers.get(&wid).is_some_and(|w| w.tx.send(v).is_ok())
}

#[cfg(test)]
mod tests;
