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
/// the port's owner when it can be found) if it cannot; the rest of the
/// daemon is unaffected.
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
            ports.insert(port, Some(msg.clone()));
            Err(msg)
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

async fn accept_loop(shared: SharedRef, listener: TcpListener, port: u16) {
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_READING));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    connection(shared, port, stream).await;
                    drop(permit);
                });
            }
            Err(e) => {
                dlog::error(&format!("sticky balancer accept on port {port} failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
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

async fn reject(mut stream: TcpStream, r: Reject) {
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(r.response())).await;
    let _ = stream.shutdown().await;
}

fn owner_app(reg: &Registry, port: u16) -> Option<String> {
    reg.port_owner.get(&port).cloned()
}

async fn connection(shared: SharedRef, port: u16, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
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
    let Ok(std_stream) = stream.into_std() else { return };
    let mut fd: OwnedFd = std_stream.into();
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
    let std_stream = std::net::TcpStream::from(fd);
    if let Ok(stream) = TcpStream::from_std(std_stream) {
        reject(stream, Reject::ServiceUnavailable).await;
    }
}
