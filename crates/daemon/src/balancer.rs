//! The Socket.IO sticky balancer on `PM2_PORT` (and per-app `sticky_port`s).
//!
//! Per connection: read the whole request (bounded head, body and time),
//! route it by its Engine.IO `sid` (or to the least-loaded ready worker, with
//! hand-offs in flight counted), then hand the TCP socket to that worker as
//! `{type: 'sticky:connection', data: <every byte read>}` with the fd, and
//! never touch it again.
//!
//! Architecture invariant: after a successful hand-off the balancer has
//! closed its copy of the socket; it never reads a socket it handed off.

use crate::cluster::Registry;
use crate::dlog;
use crate::state::SharedRef;
use crate::sticky::{self, HttpLimits, Reject, Route, WorkerId};
use node_ipc::{HandleOutcome, HandleType, Value};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Most connections being read at once; beyond, new ones wait in the
/// kernel's backlog. Bounds memory under a flood of idle half-open sockets.
const MAX_READING: usize = 20_000;
/// How long a request waits for a ready worker before getting a 503.
/// Long enough for a cold start or a crash restart of a Socket.IO app
/// (Engine.IO clients wait 20 s for a handshake), short enough to answer.
const NO_WORKER_WAIT: Duration = Duration::from_secs(10);
/// Hand-off attempts per request when workers die under it.
const MAX_ATTEMPTS: usize = 3;

/// Makes sure the balancer listens on `port`. Returns the bind error (with
/// the port's owner when it can be found) if it cannot, and logs it when it
/// differs from the last one; the rest of the daemon is unaffected.
pub fn ensure_listening(shared: &SharedRef, port: u16) -> Result<(), String> {
    if let Some(prev) = shared.sticky_ports.lock().unwrap_or_else(|p| p.into_inner()).get(&port) {
        if prev.is_none() {
            return Ok(());
        }
    }
    let ip: IpAddr = match &shared.sticky_host {
        Some(h) => h.parse().map_err(|_| format!("PM2_STICKY_HOST {h} is not an IP address"))?,
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let result = bind(SocketAddr::new(ip, port)).or_else(|e| {
        if shared.sticky_host.is_none() && e.raw_os_error() != Some(libc::EADDRINUSE) {
            bind(SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port))
        } else {
            Err(e)
        }
    });
    let mut ports = shared.sticky_ports.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(l) => {
            ports.insert(port, None);
            drop(ports);
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
            Err(msg)
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    defer_accept(&sock);
    sock.listen(1024)
}

/// TCP_DEFER_ACCEPT: the kernel hands us a connection only once its first
/// bytes arrived, so reading the request rarely waits (one wake-up less per
/// request), and connections that never send anything never reach us.
fn defer_accept(sock: &tokio::net::TcpSocket) {
    use std::os::fd::AsRawFd;
    let secs: libc::c_int = 10;
    // SAFETY: setsockopt reads `secs` for the given length only.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
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
    use std::os::fd::FromRawFd;
    // SAFETY: accept4 with null address pointers; the returned fd is ours.
    let s = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if s < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `s` is a fresh descriptor nobody else owns.
    Ok(unsafe { std::net::TcpStream::from_raw_fd(s) })
}

async fn accept_loop(shared: SharedRef, listener: TcpListener, port: u16) {
    use std::os::fd::AsRawFd;
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_READING));
    let registered = listener.into_std().and_then(|l| {
        // SAFETY: the AsyncFd owns the std listener, so its fd stays open
        // and the same for the AsyncFd's whole life.
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)
    });
    let listener = match registered {
        Ok(l) => l,
        Err(e) => {
            dlog::error(&format!("sticky balancer on port {port} cannot poll its socket: {e}"));
            return;
        }
    };
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        let mut guard = match listener.readable().await {
            Ok(g) => g,
            Err(e) => {
                dlog::error(&format!("sticky balancer on port {port} failed: {e}"));
                return;
            }
        };
        match guard.try_io(|l| accept_raw(l.get_ref().as_raw_fd())) {
            Ok(Ok(stream)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    connection(shared, port, Lazy(Conn::Std(stream))).await;
                    drop(permit);
                });
            }
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            Ok(Err(e)) => {
                dlog::error(&format!("sticky balancer accept on port {port} failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_would_block) => {}
        }
        if shared.is_shutting_down() {
            return;
        }
    }
}

/// Request limits, from the environment once (`PM2_STICKY_MAX_BODY` bytes,
/// `PM2_STICKY_MAX_HEAD` bytes, `PM2_STICKY_HEAD_TIMEOUT_MS`,
/// `PM2_STICKY_BODY_TIMEOUT_MS`), else Engine.IO's own defaults.
fn limits() -> HttpLimits {
    static LIMITS: std::sync::OnceLock<HttpLimits> = std::sync::OnceLock::new();
    *LIMITS.get_or_init(|| {
        let num = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<u64>().ok());
        let mut l = HttpLimits::default();
        if let Some(v) = num("PM2_STICKY_MAX_BODY") {
            l.max_body = v as usize;
        }
        if let Some(v) = num("PM2_STICKY_MAX_HEAD") {
            l.max_head = v as usize;
        }
        if let Some(v) = num("PM2_STICKY_HEAD_TIMEOUT_MS") {
            l.head_timeout = Duration::from_millis(v);
        }
        if let Some(v) = num("PM2_STICKY_BODY_TIMEOUT_MS") {
            l.body_timeout = Duration::from_millis(v);
        }
        l
    })
}

async fn reject(stream: Lazy, r: Reject) {
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

async fn connection(shared: SharedRef, port: u16, mut stream: Lazy) {
    let req = match sticky::read_request(&mut stream, &limits()).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(r) = e.rejection() {
                reject(stream, r).await;
            }
            return;
        }
    };
    let Some((app, notify)) = ({
        let reg = shared.cluster();
        owner_app(&reg, port).and_then(|a| reg.apps.get(&a).map(|sa| (a.clone(), sa.notify.clone())))
    }) else {
        reject(stream, Reject::ServiceUnavailable).await;
        return;
    };
    let Some(mut fd) = stream.into_fd() else { return };
    let msg = Value::object([("type", Value::from("sticky:connection")), ("data", Value::buffer(req.data))]);
    for _ in 0..MAX_ATTEMPTS {
        let route = sticky::resolve_route(&notify, req.sid.as_deref(), NO_WORKER_WAIT, |f| {
            let mut reg = shared.cluster();
            reg.apps.get_mut(&app).map(|sa| f(&mut sa.router))
        })
        .await;
        let wid = match route {
            Route::Worker(WorkerId(w)) => w,
            _ => break,
        };
        let tx = {
            let mut reg = shared.cluster();
            let tx = reg.workers.get(&wid).map(|w| w.tx.clone());
            if tx.is_some() {
                if let Some(sa) = reg.apps.get_mut(&app) {
                    sa.router.handoff_started(WorkerId(wid));
                }
            }
            tx
        };
        let Some(tx) = tx else { continue };
        let outcome = tx.send_handle(&msg, HandleType::NetSocket, fd).await;
        {
            let mut reg = shared.cluster();
            if let Some(sa) = reg.apps.get_mut(&app) {
                sa.router.handoff_finished(WorkerId(wid));
            }
        }
        match outcome {
            HandleOutcome::Acked(our_copy) => {
                drop(our_copy);
                return;
            }
            HandleOutcome::Nacked(f) | HandleOutcome::Closed(f) | HandleOutcome::Failed(_, f) => fd = f,
            _ => return,
        }
    }
    reject(Lazy(Conn::Std(std::net::TcpStream::from(fd))), Reject::ServiceUnavailable).await;
}
