//! The Socket.IO sticky balancer on `PM2_PORT` (and per-app `sticky_port`s).
//!
//! Per connection: read the request head (bounded size and time); answer at once a request for
//! an Engine.IO session no worker has (as Engine.IO would, without buffering its body); read a
//! small body whole (a large one is left in the socket for the worker); route by the `sid` (or to
//! the least-loaded ready worker, with hand-offs in flight counted), then hand the TCP socket to
//! that worker as `{type: 'sticky:connection', data: <every byte read>}` with the fd, and never
//! touch it again.
//!
//! Under a flood, [`sticky::admission`] bounds the connections being read (well below the
//! descriptor limit, so the control socket, log files and spawns always have descriptors) and
//! the bytes they buffer, shedding the oldest first; once a flood has passed, freed memory is
//! handed back to the system.
//!
//! Architecture invariant: after a successful hand-off the balancer has
//! closed its copy of the socket; it never reads a socket it handed off.

use crate::cluster::Registry;
use crate::dlog;
use crate::error::DaemonError;
use crate::metrics::counters::{InFlight, BALANCER};
use crate::state::SharedRef;
use crate::sticky::{self, Admission, Reject, Route, WorkerId};
use node_ipc::{HandleOutcome, HandleType, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How long a request waits for a ready worker before getting a 503.
/// Long enough for a cold start or a crash restart of a Socket.IO app
/// (Engine.IO clients wait 20 s for a handshake), short enough to answer.
const NO_WORKER_WAIT: Duration = Duration::from_secs(10);
/// Hand-off attempts per request when workers die under it.
const MAX_ATTEMPTS: usize = 3;
/// Bytes all connections being read may buffer together (`PM2_STICKY_BUFFER_BUDGET`).
const BUFFER_BUDGET: usize = 64 * 1024 * 1024;

/// The process-wide admission table: the descriptor limit is per process, so one table serves
/// every sticky port.
struct Gate {
    table: Mutex<Admission<Arc<Notify>>>,
    /// Fired whenever a connection leaves the table.
    released: Notify,
    /// Most descriptors the table may hold, shed connections still closing included.
    ceiling: usize,
}

/// The admission limits from the daemon's settings, given once at start
/// ([`configure`]); unset in unit tests, which get the defaults.
static LIMITS: OnceLock<(Option<usize>, Option<usize>)> = OnceLock::new();

/// Records the sticky admission limits (`PM2_STICKY_MAX_CONNECTIONS`,
/// `PM2_STICKY_BUFFER_BUDGET`) before the first port is bound.
pub fn configure(config: &crate::settings::DaemonConfig) {
    let _ = LIMITS.set((config.sticky_max_connections, config.sticky_buffer_budget));
}

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        let (cap, budget) = LIMITS.get().copied().unwrap_or_default();
        let cap = cap.unwrap_or_else(|| sticky::cap_for_fd_limit(fd_limit()));
        let budget = budget.unwrap_or(BUFFER_BUDGET);
        dlog::log(&format!(
            "sticky balancer: reading at most {cap} connections and {budget} buffered bytes at once"
        ));
        Gate {
            table: Mutex::new(Admission::new(cap, budget)),
            released: Notify::new(),
            ceiling: cap + cap / 4 + 16,
        }
    })
}

fn fd_limit() -> u64 {
    // SAFETY: getrlimit only writes the struct we pass.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur
        } else {
            1024
        }
    }
}

impl Gate {
    fn table(&self) -> std::sync::MutexGuard<'_, Admission<Arc<Notify>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn wake(shed: Vec<Arc<Notify>>) {
    for n in shed {
        n.notify_one();
    }
}

/// A connection's place in the admission table, given back on drop.
struct Slot {
    id: u64,
    shed: Arc<Notify>,
}

impl Slot {
    fn admit() -> Slot {
        let shed = Arc::new(Notify::new());
        let (id, others) = gate().table().admit(shed.clone());
        wake(others);
        Slot { id, shed }
    }

    fn charge(&self, n: usize) {
        let shed = gate().table().charge(self.id, n);
        wake(shed);
    }

    fn is_shed(&self) -> bool {
        gate().table().is_shed(self.id)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let g = gate();
        let trim = g.table().release(self.id);
        g.released.notify_waiters();
        if trim {
            give_back_memory();
        }
    }
}

/// After a flood, return the freed heap to the system: the buffers of thousands of connections
/// were small allocations spread over the heap, which glibc keeps (RSS stays at its peak)
/// unless asked. The trim runs once the daemon has been quiet for a moment.
fn give_back_memory() {
    crate::trim::activity();
}

/// Makes sure the balancer listens on `port`. Returns the bind error (with
/// the port's owner when it can be found) if it cannot, and logs it when it
/// differs from the last one; the rest of the daemon is unaffected.
pub fn ensure_listening(shared: &SharedRef, port: u16) -> Result<(), DaemonError> {
    if let Some(prev) = shared.sticky_ports.lock().unwrap_or_else(|p| p.into_inner()).get(&port) {
        if prev.is_none() {
            return Ok(());
        }
    }
    let ip: Option<IpAddr> = match &shared.config.sticky_host {
        Some(h) => Some(
            h.parse()
                .map_err(|_| DaemonError::StickyPort(format!("PM2_STICKY_HOST {h} is not an IP address")))?,
        ),
        None => None,
    };
    let result = match ip {
        Some(ip) => bind(SocketAddr::new(ip, port)),
        None => crate::cluster::bind::any_address(port, bind),
    };
    let mut ports = shared.sticky_ports.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(l) => {
            ports.insert(port, None);
            drop(ports);
            {
                use std::os::fd::AsRawFd;
                port_fds().insert(port, l.as_raw_fd());
            }
            dlog::log(&format!("Socket.IO sticky balancer listening on port {port}"));
            tokio::spawn(accept_loop(shared.clone(), l, port));
            Ok(())
        }
        Err(e) => {
            let owner =
                crate::portowner::describe(port).map(|o| format!(" (held by {o})")).unwrap_or_default();
            let msg = format!("PM2_PORT {port} is not available for the Socket.IO balancer: {e}{owner}");
            // Logged once per distinct failure: every worker spawn of every
            // cluster app retries the bind, and a crash loop must not flood
            // the daemon log with the same line.
            if ports.insert(port, Some(msg.clone())).flatten().as_deref() != Some(msg.as_str()) {
                dlog::error(&msg);
            }
            Err(DaemonError::StickyPort(msg))
        }
    }
}

/// The listening descriptor of every sticky port (owned by its accept
/// loop), for an in-place upgrade.
fn port_fds() -> std::sync::MutexGuard<'static, BTreeMap<u16, std::os::fd::RawFd>> {
    static FDS: Mutex<BTreeMap<u16, std::os::fd::RawFd>> = Mutex::new(BTreeMap::new());
    FDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every sticky port and its listening descriptor.
pub fn export_ports() -> Vec<(u16, std::os::fd::RawFd)> {
    port_fds().iter().map(|(p, fd)| (*p, *fd)).collect()
}

/// Connections accepted on a sticky port and not handed off or answered
/// yet: zero is a quiet point for an in-place upgrade.
pub fn in_progress() -> usize {
    gate().table().in_use()
}

/// Serves a sticky port whose listening socket the image before an in-place
/// upgrade handed over.
pub fn adopt_port(shared: &SharedRef, port: u16, fd: std::os::fd::RawFd) -> std::io::Result<()> {
    use std::os::fd::FromRawFd;
    // SAFETY: the handover names this descriptor as the listening socket of
    // this port; nothing else in this image owns it.
    let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    std_listener.set_nonblocking(true)?;
    let l = TcpListener::from_std(std_listener)?;
    shared.sticky_ports.lock().unwrap_or_else(|p| p.into_inner()).insert(port, None);
    port_fds().insert(port, fd);
    tokio::spawn(accept_loop(shared.clone(), l, port));
    Ok(())
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::AsRawFd;
    let sock = crate::cluster::bind::tcp_socket(addr)?;
    crate::cluster::bind::defer_accept(sock.as_raw_fd());
    sock.listen(1024)
}

/// A connection that is registered with the reactor only if reading it has
/// to wait. With TCP_DEFER_ACCEPT the request is almost always there at
/// accept time, so the common path is accept, one read, the hand-off and a
/// close: no epoll registration, no extra wake-up.
struct Lazy(Conn);

enum Conn {
    Std(std::net::TcpStream),
    Tokio(TcpStream),
    Gone,
}

impl Lazy {
    fn into_fd(self) -> Option<OwnedFd> {
        match self.0 {
            Conn::Std(s) => Some(s.into()),
            Conn::Tokio(t) => t.into_std().ok().map(Into::into),
            Conn::Gone => None,
        }
    }

    fn into_tokio(self) -> Option<TcpStream> {
        match self.0 {
            Conn::Std(s) => TcpStream::from_std(s).ok(),
            Conn::Tokio(t) => Some(t),
            Conn::Gone => None,
        }
    }
}

impl tokio::io::AsyncRead for Lazy {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read;
        use std::task::Poll;
        loop {
            match &mut self.0 {
                Conn::Std(s) => match s.read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let Conn::Std(s) = std::mem::replace(&mut self.0, Conn::Gone) else { continue };
                        self.0 = Conn::Tokio(TcpStream::from_std(s)?);
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                },
                Conn::Tokio(t) => return std::pin::Pin::new(t).poll_read(cx, buf),
                Conn::Gone => return Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
            }
        }
    }
}

/// accept4 straight into a non-blocking, close-on-exec std socket (tokio's
/// accept would register it with epoll at once).
fn accept_raw(fd: std::os::fd::RawFd) -> std::io::Result<std::net::TcpStream> {
    crate::cluster::bind::accept4(fd).map(std::net::TcpStream::from)
}

async fn accept_loop(shared: SharedRef, listener: TcpListener, port: u16) {
    use std::os::fd::AsRawFd;
    let gate = gate();
    let registered = listener.into_std().and_then(crate::cluster::bind::poll_listener);
    let listener = match registered {
        Ok(l) => l,
        Err(e) => {
            dlog::error(&format!("sticky balancer on port {port} cannot poll its socket: {e}"));
            return;
        }
    };
    loop {
        // Past the cap the oldest connections are shed, not the new ones refused; only while
        // shed connections are still closing do new ones wait in the kernel's backlog.
        loop {
            let released = gate.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if gate.table().in_use() < gate.ceiling {
                break;
            }
            released.await;
        }
        // An in-place upgrade stops accepting: new connections wait in the
        // kernel's backlog for the next image.
        crate::upgrade::pause::resumed().await;
        let ready = tokio::select! {
            r = listener.readable() => r,
            _ = crate::upgrade::pause::paused() => continue,
        };
        let mut guard = match ready {
            Ok(g) => g,
            Err(e) => {
                dlog::error(&format!("sticky balancer on port {port} failed: {e}"));
                return;
            }
        };
        // Everything the backlog holds, up to a batch per wake-up: a burst costs one wake-up,
        // and the batch bound lets the hand-offs' ACKs in between.
        let fd = guard.get_ref().get_ref().as_raw_fd();
        let mut failed = None;
        for _ in 0..ACCEPT_BATCH {
            if gate.table().in_use() >= gate.ceiling {
                break;
            }
            match accept_raw(fd) {
                Ok(stream) => {
                    BALANCER.accepted.fetch_add(1, Relaxed);
                    let slot = Slot::admit();
                    if let Some((stream, data, slot)) = fast_path(&shared, port, stream, slot) {
                        tokio::spawn(connection(shared.clone(), port, Lazy(Conn::Std(stream)), slot, data));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(guard);
        if let Some(e) = failed {
            dlog::error(&format!("sticky balancer accept on port {port} failed: {e}"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if shared.is_shutting_down() {
            return;
        }
    }
}

/// Most connections accepted per wake-up of a sticky port.
const ACCEPT_BATCH: usize = 64;

/// The common case without a task: the whole request came with the connection (`TCP_DEFER_ACCEPT`
/// makes that the rule), the port's app is known and the router names a worker at once (a new
/// session, or a sid it knows). Then one read, the route and the queued hand-off happen right
/// here in the accept loop, and only the wait for the worker's ACK gets a (small) task. Anything
/// else (bytes still to come, a request to refuse, no app or worker yet, an unknown sid that
/// may be registering or live on another node) gives the connection and the bytes read back
/// for [`connection`], which handles every case.
fn fast_path(
    shared: &SharedRef,
    port: u16,
    mut stream: std::net::TcpStream,
    slot: Slot,
) -> Option<(std::net::TcpStream, Vec<u8>, Slot)> {
    let accepted_at = std::time::Instant::now();
    let limits = &shared.config.http_limits;
    let mut data = Vec::new();
    match sticky::read_now(&mut stream, &mut data) {
        // Closed before sending anything: nobody to answer.
        Ok(0) => return None,
        Ok(n) => slot.charge(n),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some((stream, data, slot)),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Some((stream, data, slot)),
        Err(_) => return None,
    }
    if slot.is_shed() {
        return Some((stream, data, slot));
    }
    let req = match sticky::try_complete(data, limits) {
        Ok(r) => r,
        Err(data) => return Some((stream, data, slot)),
    };
    let extra = pipelined_sessions(&req, limits);
    let Some((app, notify, wid, tx)) = route_now(shared, port, &req, extra) else {
        return Some((stream, req.data, slot));
    };
    let in_flight = InFlight::start();
    let sid = req.sid;
    let msg = Value::object([("type", Value::from("sticky:connection")), ("data", Value::buffer(req.data))]);
    let reply = tx.send_handle(&msg, HandleType::NetSocket, stream.into());
    let shared = shared.clone();
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let outcome = reply.await;
        handoff_finished(&shared, &app, wid);
        let fd = match outcome {
            HandleOutcome::Acked(our_copy) => {
                drop(our_copy);
                BALANCER.handed_off.fetch_add(1, Relaxed);
                BALANCER.handoff_latency.observe(accepted_at.elapsed());
                return;
            }
            HandleOutcome::Nacked(f) | HandleOutcome::Closed(f) | HandleOutcome::Failed(_, f) => f,
            _ => return,
        };
        // The worker went away under it: the other attempts, as the slow path makes them.
        let to = Target { app: &app, notify: &notify, sid: sid.as_deref(), extra };
        hand_off(&shared, &to, &msg, fd, &slot, accepted_at, MAX_ATTEMPTS - 1).await;
    });
    None
}

/// Session-less Engine.IO requests pipelined behind the first one of `req`: each will open a
/// session on the worker that gets the connection.
fn pipelined_sessions(req: &sticky::Request, limits: &sticky::HttpLimits) -> usize {
    // Nothing after the first request (the rule): nothing to parse again.
    if req.data.len() <= req.end {
        return 0;
    }
    let handshakes = sticky::count_handshakes(&req.data, limits);
    handshakes.saturating_sub(usize::from(req.sid.is_none() && req.engine_io))
}

/// The fast path's routing, all under one short registry lock: the port's app, a worker the
/// router names without waiting, its channel; the hand-off is counted as started. `None` when
/// any of it would need waiting or a decision the slow path makes (then nothing was counted,
/// but for a session-less request's pending registration when the picked worker has just lost
/// its channel, which expires on its own).
fn route_now(
    shared: &SharedRef,
    port: u16,
    req: &sticky::Request,
    extra: usize,
) -> Option<(String, Arc<Notify>, u32, node_ipc::Sender)> {
    let mut guard = shared.cluster.reg();
    let reg = &mut *guard;
    let app = reg.port_owner.get(&port)?;
    let sa = reg.apps.get_mut(app)?;
    if let (Some(sid), true, true) = (req.sid.as_deref(), req.engine_io, sa.enabled && !sa.disabled) {
        // A sid no worker has: held, looked up on other nodes or answered by the slow path.
        sa.router.owner(sid)?;
    }
    let wid = match sa.router.route(req.sid.as_deref(), std::time::Instant::now()) {
        Route::Worker(WorkerId(w)) => w,
        Route::Hold { .. } | Route::NoWorker => return None,
    };
    let tx = reg.workers.get(&wid)?.tx.clone();
    sa.router.handoff_started(WorkerId(wid));
    if extra > 0 {
        sa.router.expect_sessions(WorkerId(wid), extra, std::time::Instant::now());
    }
    Some((app.clone(), sa.notify.clone(), wid, tx))
}

fn handoff_finished(shared: &SharedRef, app: &str, wid: u32) {
    let mut reg = shared.cluster.reg();
    if let Some(sa) = reg.apps.get_mut(app) {
        sa.router.handoff_finished(WorkerId(wid));
    }
}

/// Where a request goes: its app and what routes it.
struct Target<'a> {
    app: &'a str,
    notify: &'a Notify,
    sid: Option<&'a str>,
    /// Sessions pipelined behind the first request (see [`pipelined_sessions`]).
    extra: usize,
}

/// Hands `fd` with `msg` to the worker the router picks, up to `attempts` times when workers
/// die under it; a `503` when nobody takes it.
async fn hand_off(
    shared: &SharedRef,
    to: &Target<'_>,
    msg: &Value,
    mut fd: OwnedFd,
    slot: &Slot,
    accepted_at: std::time::Instant,
    attempts: usize,
) {
    let with_router = |f: &mut dyn FnMut(&mut sticky::Router) -> Route| {
        let mut reg = shared.cluster.reg();
        reg.apps.get_mut(to.app).map(|sa| f(&mut sa.router))
    };
    for _ in 0..attempts {
        let route = tokio::select! {
            biased;
            _ = slot.shed.notified() => None,
            r = sticky::resolve_route(to.notify, to.sid, NO_WORKER_WAIT, with_router) => Some(r),
        };
        let wid = match route {
            Some(Route::Worker(WorkerId(w))) => w,
            _ => break,
        };
        let tx = {
            let mut reg = shared.cluster.reg();
            let tx = reg.workers.get(&wid).map(|w| w.tx.clone());
            if tx.is_some() {
                if let Some(sa) = reg.apps.get_mut(to.app) {
                    sa.router.handoff_started(WorkerId(wid));
                    if to.extra > 0 {
                        sa.router.expect_sessions(WorkerId(wid), to.extra, std::time::Instant::now());
                    }
                }
            }
            tx
        };
        let Some(tx) = tx else { continue };
        let outcome = tx.send_handle(msg, HandleType::NetSocket, fd).await;
        handoff_finished(shared, to.app, wid);
        match outcome {
            HandleOutcome::Acked(our_copy) => {
                drop(our_copy);
                BALANCER.handed_off.fetch_add(1, Relaxed);
                BALANCER.handoff_latency.observe(accepted_at.elapsed());
                return;
            }
            HandleOutcome::Nacked(f) | HandleOutcome::Closed(f) | HandleOutcome::Failed(_, f) => fd = f,
            _ => return,
        }
    }
    reject(Lazy(Conn::Std(std::net::TcpStream::from(fd))), Reject::ServiceUnavailable).await;
}

async fn reject(stream: Lazy, r: Reject) {
    BALANCER.answered(r.status());
    if let Some(s) = stream.into_tokio() {
        reject_tokio(s, r).await;
    }
}

async fn reject_tokio(mut stream: TcpStream, r: Reject) {
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(r.response())).await;
    let _ = stream.shutdown().await;
}

fn owner_app(reg: &Registry, port: u16) -> Option<String> {
    reg.port_owner.get(&port).cloned()
}

/// How long after a cluster worker was attached a request on its port waits for the app to
/// claim the port (a Socket.IO worker loading its modules); a plain cluster app never claims it.
const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// The app that receives this port's connections, its router's notifier and whether it speaks
/// Socket.IO. The port is bound as soon as a cluster worker starts, but an app owns it only once
/// one of its workers spoke the sticky protocol: a request arriving in between (a fresh start,
/// the restore after a daemon crash) waits for that, up to [`STARTUP_WAIT`] after the app's
/// newest worker was attached, instead of getting a `503` a few milliseconds before the app can
/// serve it. With no app starting on the port, `None` at once.
async fn port_app(shared: &SharedRef, port: u16) -> Option<(String, Arc<tokio::sync::Notify>, bool)> {
    // Workers attached one after another (a crash loop) must not hold a request for ever.
    let cap = tokio::time::Instant::now() + NO_WORKER_WAIT;
    loop {
        let (starting, give_up) = {
            let reg = shared.cluster.reg();
            if let Some(found) = owner_app(&reg, port).and_then(|a| {
                reg.apps.get(&a).map(|sa| (a.clone(), sa.notify.clone(), sa.enabled && !sa.disabled))
            }) {
                return Some(found);
            }
            // Readiness of any of its workers is announced on the app's notifier.
            let now = std::time::Instant::now();
            reg.apps
                .values()
                .filter(|sa| sa.port == port && !sa.disabled && now < sa.worker_added + STARTUP_WAIT)
                .map(|sa| (sa.notify.clone(), tokio::time::Instant::from_std(sa.worker_added + STARTUP_WAIT)))
                .max_by_key(|(_, until)| *until)?
        };
        let notified = starting.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Asked again after registering interest, so a change in between is not missed.
        let still_unowned = owner_app(&shared.cluster.reg(), port).is_none();
        if still_unowned {
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(give_up.min(cap)) => return None,
            }
        }
    }
}

/// Writes `bytes` and closes, giving the client at most 2 s to take them.
async fn answer(stream: Lazy, bytes: &[u8]) {
    if let Some(mut s) = stream.into_tokio() {
        let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(bytes)).await;
        let _ = s.shutdown().await;
    }
}

/// `Date` header value (RFC 9110 IMF-fixdate), as Node's HTTP server writes it.
fn http_date() -> String {
    chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Everything the fast path does not take: reads the request (`data` holds what was read
/// already), waits for the port's app or a registering session, answers what must be answered
/// here, and hands the connection off.
async fn connection(shared: SharedRef, port: u16, mut stream: Lazy, slot: Slot, mut data: Vec<u8>) {
    let _in_flight = InFlight::start();
    let accepted_at = std::time::Instant::now();
    let limits = shared.config.http_limits;
    let mut charge = |n: usize| slot.charge(n);
    let head = tokio::select! {
        biased;
        _ = slot.shed.notified() => None,
        r = sticky::read_head(&mut stream, &limits, &mut data, &mut charge) => Some(r),
    };
    let head = match head {
        None => return reject(stream, Reject::ServiceUnavailable).await,
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            if let Some(r) = e.rejection() {
                reject(stream, r).await;
            }
            return;
        }
    };
    let Some((app, notify, socketio)) = (tokio::select! {
        biased;
        _ = slot.shed.notified() => None,
        o = port_app(&shared, port) => o,
    }) else {
        reject(stream, Reject::ServiceUnavailable).await;
        return;
    };
    let with_router = |f: &mut dyn FnMut(&mut sticky::Router) -> Route| {
        let mut reg = shared.cluster.reg();
        reg.apps.get_mut(&app).map(|sa| f(&mut sa.router))
    };

    // A request for a session no worker has is answered now, as the worker would (Engine.IO's
    // 400 "Session ID unknown"), instead of buffering its body first. A session that may be
    // registering right now is waited for (the router's hold).
    if let (Some(sid), true, true) = (head.sid.as_deref(), head.engine_io, socketio) {
        let route = tokio::select! {
            biased;
            _ = slot.shed.notified() => None,
            r = sticky::resolve_route(&notify, Some(sid), NO_WORKER_WAIT, with_router) => Some(r),
        };
        match route {
            Some(Route::Worker(_)) => {
                let known = {
                    let reg = shared.cluster.reg();
                    reg.apps.get(&app).and_then(|sa| sa.router.owner(sid)).is_some()
                };
                if !known {
                    // Several machines: another node may own the session; then it is relayed
                    // there, else answered here as before.
                    let Some(s) = stream.into_tokio() else { return };
                    let taken = crate::multihost::take_unknown_sid(
                        shared.cluster.bridge_for(&app),
                        sid,
                        head.len,
                        &data,
                        s,
                    );
                    if let Some(s) = taken.await {
                        BALANCER.answered(400);
                        answer(
                            Lazy(Conn::Tokio(s)),
                            &sticky::unknown_sid_response(head.upgrade, &http_date()),
                        )
                        .await;
                    }
                    return;
                }
            }
            _ => return reject(stream, Reject::ServiceUnavailable).await,
        }
    }

    let req = tokio::select! {
        biased;
        _ = slot.shed.notified() => None,
        r = sticky::read_body(&mut stream, &limits, head, data, &mut charge) => Some(r),
    };
    let req = match req {
        None => return reject(stream, Reject::ServiceUnavailable).await,
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            if let Some(r) = e.rejection() {
                reject(stream, r).await;
            }
            return;
        }
    };
    // Handshakes pipelined behind the first request will each open a session on the worker
    // that gets the connection.
    let extra = pipelined_sessions(&req, &limits);
    let Some(fd) = stream.into_fd() else { return };
    let msg = Value::object([("type", Value::from("sticky:connection")), ("data", Value::buffer(req.data))]);
    let to = Target { app: &app, notify: &notify, sid: req.sid.as_deref(), extra };
    hand_off(&shared, &to, &msg, fd, &slot, accepted_at, MAX_ATTEMPTS).await;
}
