//! The control socket: `PM2_HOME/corral.sock` (Corral's own CLI protocol;
//! pm2's `rpc.sock` is served by `pm2api`), owner-only, peers of another uid
//! refused (SO_PEERCRED). One task per connection; a bad frame is answered
//! with an error and closes that connection only.

use crate::error::DaemonError;
use crate::state::SharedRef;
use crate::supervisor::{self, ProcessHandle};
use crate::upgrade::conns::{ConnGuard, ConnState};
use crate::{dlog, monitor, persist};
use corral_proto::{
    read_frame, read_frame_limited, write_frame, write_raw_reply, FrameError, Hello, Op, ProcInfo, Reply,
    Request, Status, Welcome, CORRAL_VERSION, MAX_HELLO, PROTOCOL_VERSION,
};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// Control connections open at once. More are answered with an error and
/// closed: a runaway script must not hold the descriptors the daemon needs
/// for its apps (each connection is one fd, counted in the balancer's
/// reserve).
pub const MAX_CONNECTIONS: usize = 256;
/// How long the client has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(shared: SharedRef, listener: UnixListener, shutdown: watch::Sender<bool>) {
    let mut stop = shutdown.subscribe();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            // An in-place upgrade: new clients wait in the backlog for the
            // next image.
            _ = crate::upgrade::pause::resumed(), if crate::upgrade::pause::is_paused() => {}
            _ = crate::upgrade::pause::paused(), if !crate::upgrade::pause::is_paused() => {}
            acc = listener.accept(), if !crate::upgrade::pause::is_paused() => match acc {
                Ok((mut stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        dlog::error(&format!("control socket: more than {MAX_CONNECTIONS} connections, refusing one"));
                        tokio::spawn(async move {
                            let busy = Reply::Error {
                                message: format!("the daemon has {MAX_CONNECTIONS} control connections open; retry when some have ended"),
                            };
                            let _ = tokio::time::timeout(Duration::from_secs(2), write_frame(&mut stream, &busy)).await;
                        });
                        continue;
                    };
                    let (shared, shutdown) = (shared.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        connection(shared, stream, shutdown).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    dlog::error(&format!("rpc accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

pub(crate) fn peer_allowed(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(c) => c.uid() == me || c.uid() == 0,
        Err(_) => false,
    }
}

async fn connection(shared: SharedRef, mut stream: UnixStream, shutdown: watch::Sender<bool>) {
    // Until its hello is answered the connection cannot be handed over.
    let opening = {
        use std::os::fd::AsRawFd;
        let g = ConnGuard::new(stream.as_raw_fd());
        g.set(ConnState::Busy);
        g
    };
    if !peer_allowed(&stream) {
        let _ =
            write_frame(&mut stream, &Reply::Error { message: "permission denied: peer uid differs".into() })
                .await;
        return;
    }
    let hello: Result<Result<Hello, FrameError>, _> =
        tokio::time::timeout(HELLO_TIMEOUT, read_frame_limited(&mut stream, MAX_HELLO)).await;
    match hello {
        Ok(Ok(h)) if h.protocol == PROTOCOL_VERSION => {}
        Ok(Ok(h)) => {
            let msg = format!(
                "protocol mismatch: the CLI ({}) speaks version {}, the daemon ({CORRAL_VERSION}) speaks {PROTOCOL_VERSION}; run `pm2 kill` then retry",
                h.client_version, h.protocol
            );
            let _ = write_frame(&mut stream, &Reply::Error { message: msg }).await;
            return;
        }
        Ok(Err(FrameError::Closed)) | Err(_) => return,
        Ok(Err(e)) => {
            let _ = write_frame(&mut stream, &Reply::Error { message: format!("bad hello: {e}") }).await;
            return;
        }
    }
    let welcome = Welcome {
        protocol: PROTOCOL_VERSION,
        daemon_version: CORRAL_VERSION.into(),
        pid: std::process::id(),
        pm2_home: shared.home.root.to_string_lossy().into_owned(),
        settings: corral_proto::DAEMON_SETTINGS
            .iter()
            .filter_map(|k| shared.config.env.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect(),
        capabilities: vec![corral_proto::CAP_HANDOVER.to_string(), corral_proto::CAP_RAW_JLIST.to_string()],
    };
    if write_frame(&mut stream, &welcome).await.is_err() {
        return;
    }
    drop(opening);
    requests(shared, stream, shutdown).await
}

/// Answers the CLI connection that asked for an in-place update (its
/// descriptor was handed over), then serves it like any other.
pub async fn answer_update(shared: SharedRef, a: crate::upgrade::Adopted, shutdown: watch::Sender<bool>) {
    use std::os::fd::FromRawFd;
    for fd in &a.control_conns {
        adopt_connection(&shared, *fd, shutdown.clone());
    }
    let Some(fd) = a.requester else { return };
    // SAFETY: the handover names this descriptor as the CLI's connection;
    // nothing else in this image owns it.
    let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    if std_stream.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut stream) = UnixStream::from_std(std_stream) else { return };
    let reply = match a.failure {
        Some(why) => Reply::Error {
            message: format!(
                "the new binary could not adopt the daemon ({why}); the previous binary took over again, every process kept running"
            ),
        },
        None => Reply::Updated {
            pid: std::process::id(),
            from_version: a.from_version,
            to_version: CORRAL_VERSION.into(),
            processes: a.processes,
            wall_ms: a.wall_ms,
            failure: None,
        },
    };
    if write_frame(&mut stream, &reply).await.is_err() {
        return;
    }
    requests(shared, stream, shutdown).await
}

/// Serves a control connection the image before an in-place update handed
/// over (between two requests, after its hello).
pub fn adopt_connection(shared: &SharedRef, fd: std::os::fd::RawFd, shutdown: watch::Sender<bool>) {
    use std::os::fd::FromRawFd;
    // SAFETY: the handover names this descriptor as a control connection;
    // nothing else in this image owns it.
    let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    if std_stream.set_nonblocking(true).is_err() {
        return;
    }
    if let Ok(stream) = UnixStream::from_std(std_stream) {
        tokio::spawn(requests(shared.clone(), stream, shutdown));
    }
}

async fn requests(shared: SharedRef, mut stream: UnixStream, shutdown: watch::Sender<bool>) {
    use std::os::fd::AsRawFd;
    let guard = ConnGuard::new(stream.as_raw_fd());
    loop {
        guard.set(ConnState::Idle);
        let req: Request =
            match tokio::time::timeout(shared.config.control_idle_timeout, read_frame(&mut stream)).await {
                Ok(Ok(r)) => r,
                Err(_idle) => return,
                Ok(Err(FrameError::Closed)) => return,
                Ok(Err(e @ (FrameError::Malformed(_) | FrameError::TooLarge(_)))) => {
                    let _ = write_frame(&mut stream, &Reply::Error { message: format!("bad request: {e}") })
                        .await;
                    return;
                }
                Ok(Err(_)) => return,
            };
        guard.set(ConnState::Busy);
        match req {
            Request::Logs { ids } => {
                // A log stream is not handed over by an update (it ends).
                drop(guard);
                logs_stream(&shared, stream, ids).await;
                return;
            }
            Request::Update { binary } => {
                guard.set(ConnState::Requester);
                // Returns only if the update did not happen.
                let why = crate::upgrade::upgrade(&shared, binary, Some(stream.as_raw_fd())).await;
                if write_frame(&mut stream, &Reply::Error { message: why }).await.is_err() {
                    return;
                }
            }
            Request::JlistRaw => {
                crate::trim::activity();
                // The list as the next message, unescaped (see `Request::JlistRaw`).
                let text = jlist_text(&shared);
                if write_raw_reply(&mut stream, text.as_bytes()).await.is_err() {
                    return;
                }
            }
            Request::Kill => {
                crate::pm2api::topics::announce_kill();
                shutdown_all(&shared, false).await;
                let _ = write_frame(&mut stream, &Reply::Ok).await;
                let _ = shutdown.send(true);
                return;
            }
            other => {
                crate::trim::activity();
                let changes = other.changes_process_list();
                let reply = handle(&shared, other).await;
                if changes {
                    autodump(&shared);
                }
                if write_frame(&mut stream, &reply).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `pm2 set pm2:autodump true`: keep dump.pm2 equal to the process list
/// after every change, so a crash of the daemon (or of the machine) loses
/// nothing that was running. Written atomically, like `pm2 save --force`
/// (an emptied list is saved too: it is what the user asked for).
fn autodump(shared: &SharedRef) {
    if !autodump_enabled(&shared.home.root) {
        return;
    }
    if let Err(e) = persist::save(shared, true, false) {
        dlog::error(&format!("autodump: {e}"));
    }
}

fn autodump_enabled(home: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(home.join("module_conf.json")) else { return false };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
    match v.get("pm2").and_then(|m| m.get("autodump")) {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s == "true",
        _ => false,
    }
}

fn err(message: impl std::fmt::Display) -> Reply {
    Reply::Error { message: message.to_string() }
}

fn infos(shared: &SharedRef, ids: &[u32]) -> Vec<ProcInfo> {
    let t = shared.table();
    ids.iter().filter_map(|id| t.procs.get(id).map(|e| e.info.clone())).collect()
}

fn handle_of(shared: &SharedRef, id: u32) -> Option<ProcessHandle> {
    shared.table().procs.get(&id).map(|e| e.handle.clone())
}

fn default_node_version(_shared: &SharedRef) -> Option<String> {
    let v = crate::monitor::node_version();
    (v != "N/A").then_some(v)
}

/// A node app that did not report its version (fork mode reports none) is
/// shown with the version of `node` on the daemon's PATH, as pm2 shows its
/// own node's.
fn fill_node_version(t: &mut crate::state::Table, node: Option<&str>) {
    let Some(v) = node else { return };
    for e in t.procs.values_mut() {
        if e.info.node_version.is_none() && e.info.app.is_node() {
            e.info.node_version = Some(v.to_string());
            e.touch();
        }
    }
}

/// `pm2 jlist`'s text, as pm2 prints it.
fn jlist_text(shared: &SharedRef) -> String {
    let node = default_node_version(shared);
    // On a node of a multi-host cluster every entry also says which node it runs on,
    // the Redis state and the peers (`corral_cluster`, a key pm2's readers ignore).
    // Taken before the table: no registry lock under the table's.
    let bridge = shared.cluster.reg().bridge.clone();
    let cluster = bridge.map(|b| b.summary_json().to_string());
    let mut t = shared.table();
    monitor::refresh(&mut t);
    fill_node_version(&mut t, node.as_deref());
    // Sized from the cached renderings: one allocation for the whole list.
    let guess: usize =
        t.procs.values().map(|e| e.jlist_cache.as_ref().map_or(4096, |(_, s)| s.len() + 256)).sum();
    let mut text = String::with_capacity(guess + 2);
    text.push('[');
    for (i, e) in t.procs.values_mut().enumerate() {
        if i > 0 {
            text.push(',');
        }
        // pm2_env is re-rendered only when the entry changed since
        // (monit is always fresh): jlist of 100 apps stays a few ms.
        let cached = match e.jlist_cache.take() {
            Some((rev, s)) if rev == e.rev => s,
            _ => corral_config::pm2_env(&e.info).to_string(),
        };
        corral_config::jlist_entry_text(&e.info, &cached, &mut text);
        if let (Some(c), Some(b'}')) = (&cluster, text.as_bytes().last()) {
            text.pop();
            text.push_str(",\"corral_cluster\":");
            text.push_str(c);
            text.push('}');
        }
        e.jlist_cache = Some((e.rev, cached));
    }
    text.push(']');
    text
}

pub async fn handle(shared: &SharedRef, req: Request) -> Reply {
    match req {
        Request::Ping => Reply::Pong,
        Request::ClusterStatus => {
            let bridge = shared.cluster.reg().bridge.clone();
            let v = match bridge {
                Some(b) => b.status_json(),
                None => serde_json::json!({ "enabled": false }),
            };
            Reply::Text { text: v.to_string() }
        }
        Request::List => {
            let node = default_node_version(shared);
            let mut t = shared.table();
            monitor::refresh(&mut t);
            fill_node_version(&mut t, node.as_deref());
            Reply::Procs { procs: t.procs.values().map(|e| e.info.with_env_delta()).collect() }
        }
        Request::Jlist | Request::JlistRaw => Reply::Text { text: jlist_text(shared) },
        Request::Start { app } => match app.check_limits().map_err(|e| format!("{e}; not started")) {
            Err(e) => err(e),
            Ok(()) => match start_app(shared, app).await {
                Ok(ids) => Reply::Procs { procs: infos(shared, &ids) },
                Err(e) => err(e),
            },
        },
        Request::Scale { count, .. } if i64::from(count) > corral_proto::app::limits::MAX_INSTANCES => {
            err(format!(
                "cannot scale to {count} instances; the limit is {}",
                corral_proto::app::limits::MAX_INSTANCES
            ))
        }
        Request::Op { op, id, mut update } => {
            if let Some(Err(e)) = update.as_deref().map(corral_proto::AppSpec::check_limits) {
                return err(e);
            }
            let Some(h) = handle_of(shared, id) else {
                return err(DaemonError::NotFound(id));
            };
            if let Some(u) = update.as_deref_mut() {
                if let Err(e) = crate::privileges::normalize(u) {
                    return err(e);
                }
            }
            let r = match op {
                Op::Stop => {
                    // The CLI sends `watch: false` with a stop (pm2 turns the
                    // watcher off); nothing else of a stop's spec applies.
                    if let Some(spec) = &update {
                        shared.with_entry(id, |e| e.info.app.watch = spec.watch);
                    }
                    h.stop().await
                }
                Op::Delete => {
                    let before = infos(shared, &[id]);
                    let _ = h.delete().await;
                    return Reply::Procs { procs: before };
                }
                Op::Restart => h.restart(update).await,
                Op::Reload => h.reload(update).await,
                Op::Reset => h.reset().await,
            };
            match r {
                Ok(()) => Reply::Procs { procs: infos(shared, &[id]) },
                Err(e) => err(e),
            }
        }
        Request::Scale { name, count } => scale(shared, &name, count).await,
        Request::SendSignal { id, signal } => {
            let Some(sig) = supervisor::parse_signal(&signal) else {
                return err(format!("unknown signal {signal}"));
            };
            let Some(h) = handle_of(shared, id) else {
                return err(DaemonError::NotFound(id));
            };
            match h.signal(sig).await {
                Ok(()) => Reply::Procs { procs: infos(shared, &[id]) },
                Err(e) => err(e),
            }
        }
        Request::SendData { id, data } => {
            let v = node_ipc::Value::from(&data);
            match shared.cluster.send_to_process(id, &v) {
                Some(true) => Reply::Ok,
                Some(false) => err(format!("Process {id}: its IPC channel is closed")),
                None => err(format!("Process {id} has no IPC channel (not running, or not a node app)")),
            }
        }
        Request::SendLine { id, line } => {
            let found = shared.with_entry(id, |e| (e.info.app.exec_mode, e.info.status, e.stdin.clone()));
            match found {
                None => err(format!("Process with ID <{id}> unknown.")),
                Some((corral_proto::ExecMode::Cluster, _, _)) => {
                    err("Cannot send line to processes in cluster mode".to_string())
                }
                Some((_, st, _)) if st != "online" && st != "launching" => {
                    err(format!("Process with ID <{id}> offline."))
                }
                Some((_, _, None)) => err(format!("Process with ID <{id}> has no stdin")),
                Some((_, _, Some(f))) => {
                    use std::io::Write;
                    match (&*f).write_all(line.as_bytes()) {
                        Ok(()) => {
                            // Answer once the process has read the line (or
                            // after 3 s), so `pm2 send` followed by a look at
                            // the app's output sees its reaction.
                            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
                            while crate::logs::unread_bytes(&f) > 0 && tokio::time::Instant::now() < deadline
                            {
                                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                            }
                            Reply::Ok
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            err(format!("Process with ID <{id}> does not read its stdin (pipe full)"))
                        }
                        Err(e) => err(format!("cannot write to the stdin of process {id}: {e}")),
                    }
                }
            }
        }
        Request::Annotate { id, key, value } => {
            match shared.with_entry(id, |e| e.info.app.extra.insert(key, value)) {
                Some(_) => Reply::Ok,
                None => err(format!("Process {id} not found")),
            }
        }
        Request::Save { force } => match persist::save(shared, force, true) {
            Ok((path, count)) => Reply::Saved { path, count },
            Err(e) => err(e),
        },
        Request::Resurrect => match persist::resurrect(shared).await {
            Ok((restored, ids)) => Reply::Resurrected { restored, procs: infos(shared, &ids) },
            Err(e) => err(e),
        },
        Request::Flush { ids } => {
            let mut refused = Vec::new();
            let t = shared.table();
            for e in t.procs.values() {
                if ids.as_ref().is_none_or(|ids| ids.contains(&e.info.pm_id)) {
                    truncate(&e.info.pm_out_log_path, &mut refused);
                    truncate(&e.info.pm_err_log_path, &mut refused);
                    if let Some(p) = &e.info.pm_log_path {
                        truncate(p, &mut refused);
                    }
                }
            }
            drop(t);
            if ids.is_none() {
                truncate(&shared.home.daemon_log().to_string_lossy(), &mut refused);
            }
            if refused.is_empty() {
                Reply::Ok
            } else {
                err(refused.join("\n"))
            }
        }
        Request::ReloadLogs => {
            reload_logs(shared);
            Reply::Ok
        }
        Request::Trigger { target, action, param } => {
            // Boxed: trigger sends through `handle` itself.
            Box::pin(crate::pm2api::trigger::trigger(shared, &target, &action, param)).await
        }
        Request::Logs { .. } | Request::Kill | Request::Update { .. } => {
            err("internal: handled by the connection")
        }
    }
}

pub fn reload_logs(shared: &SharedRef) {
    // `pm2 set pm2-logrotate:<key>` nudges us through here.
    crate::logrotate::reload_config(&shared.home.root);
    let files: Vec<_> = shared.table().procs.values().filter_map(|e| e.files.clone()).collect();
    for f in files {
        if let Ok(mut f) = f.lock() {
            if let Err(e) = f.reopen() {
                dlog::error(&format!("reloadLogs: {e}"));
            }
        }
    }
    dlog::log("Reloading logs...");
}

fn truncate(path: &str, refused: &mut Vec<String>) {
    if let Err(e) = crate::logfile::truncate_log(path) {
        dlog::error(&format!("flush: {e}"));
        let e = e.to_string();
        if !refused.contains(&e) {
            refused.push(e);
        }
    }
}

/// Number of processes `instances` asks for.
pub fn instance_count(instances: Option<i64>, nproc: usize) -> usize {
    match instances {
        None => 1,
        Some(0) => nproc,
        Some(k) if k < 0 => (nproc as i64 + k).max(1) as usize,
        Some(k) => k as usize,
    }
}

/// True when the app's nearest package.json depends on the Socket.IO
/// cluster packages: then a sticky port that cannot be bound is an error for
/// `start`, not just a warning.
fn uses_socketio(app: &corral_proto::AppSpec) -> bool {
    let mut dir = std::path::Path::new(&app.script).parent();
    while let Some(d) = dir {
        if let Ok(text) = std::fs::read_to_string(d.join("package.json")) {
            return text.contains("@socket.io/sticky") || text.contains("@socket.io/cluster-adapter");
        }
        dir = d.parent();
    }
    false
}

pub async fn start_app(shared: &SharedRef, mut app: corral_proto::AppSpec) -> Result<Vec<u32>, DaemonError> {
    // Refused before anything is bound or spawned.
    crate::privileges::normalize(&mut app).map_err(|e| DaemonError::Privileges(e.to_string()))?;
    let mut sticky_err = None;
    if app.exec_mode == corral_proto::ExecMode::Cluster && app.sticky != Some(false) {
        let port = app.sticky_port.unwrap_or(shared.config.pm2_port);
        if let Err(e) = crate::balancer::ensure_listening(shared, port) {
            if app.sticky == Some(true) || uses_socketio(&app) {
                sticky_err = Some(e);
            }
        }
    }
    let ids = start_instances(shared, app).await?;
    match sticky_err {
        Some(e) => Err(e),
        None => Ok(ids),
    }
}

async fn start_instances(shared: &SharedRef, app: corral_proto::AppSpec) -> Result<Vec<u32>, DaemonError> {
    let n = instance_count(app.instances, shared.nproc);
    let sequential = app.wait_ready;
    let autostart = app.autostart;
    let mut ids = Vec::with_capacity(n);
    let mut waits = Vec::new();
    for _ in 0..n {
        let h = supervisor::register(shared, app.clone(), None);
        ids.push(h.id());
        if !autostart {
            continue;
        }
        let ticket = h.start();
        if sequential {
            // A deleted process (TaskEnded) is not a start failure.
            match ticket.await {
                Err(DaemonError::TaskEnded) | Ok(()) => {}
                Err(e) => return Err(e),
            }
        } else {
            waits.push(ticket);
        }
    }
    let mut first_err = None;
    for w in waits {
        match w.await {
            Err(DaemonError::TaskEnded) | Ok(()) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e)
            if ids
                .iter()
                .all(|id| shared.with_entry(*id, |e| e.info.status == Status::Errored).unwrap_or(true)) =>
        {
            Err(e)
        }
        _ => Ok(ids),
    }
}

async fn scale(shared: &SharedRef, name: &str, count: u32) -> Reply {
    let mut current: Vec<(u32, corral_proto::AppSpec)> = shared
        .table()
        .procs
        .values()
        .filter(|e| e.info.app.name == name)
        .map(|e| (e.info.pm_id, e.info.app.clone()))
        .collect();
    let Some((_, template)) = current.first().cloned() else {
        return err(format!("Process or Namespace {name} not found"));
    };
    let have = current.len() as u32;
    if count == have {
        return err("Nothing to do");
    }
    let mut ids = Vec::new();
    if count > have {
        let mut app = template;
        app.instances = Some(1);
        for _ in have..count {
            let mut one = app.clone();
            one.instances = None;
            match start_app(shared, one).await {
                Ok(mut new) => ids.append(&mut new),
                Err(e) => return err(e),
            }
        }
    } else {
        // pm2 deletes the oldest ids first, in list order.
        current.sort_by_key(|(id, _)| *id);
        for (id, _) in current.into_iter().take((have - count) as usize) {
            if let Some(h) = handle_of(shared, id) {
                let _ = h.delete().await;
            }
        }
    }
    Reply::Procs { procs: infos(shared, &ids) }
}

async fn logs_stream(shared: &SharedRef, mut stream: UnixStream, ids: Option<Vec<u32>>) {
    let mut rx = shared.bus.subscribe();
    if write_frame(&mut stream, &Reply::Ok).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = stream.into_split();
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    let id = match &ev {
                        corral_proto::Event::Log { pm_id, .. } | corral_proto::Event::Process { pm_id, .. } => Some(*pm_id),
                        corral_proto::Event::Daemon { .. } => None,
                    };
                    if let (Some(ids), Some(id)) = (&ids, id) {
                        if !ids.contains(&id) {
                            continue;
                        }
                    }
                    if write_frame(&mut wr, &ev).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            },
            // The client never writes on a log stream: readable means closed.
            _ = tokio::io::AsyncReadExt::read(&mut rd, &mut probe) => return,
        }
    }
}

/// Stops every process (in parallel) and marks the daemon as shutting down
/// so nothing restarts. With `save`, the list is dumped first (pm2 does so on
/// SIGTERM/SIGINT when at least one app exists).
pub async fn shutdown_all(shared: &SharedRef, save: bool) {
    if save && !shared.table().procs.is_empty() {
        match persist::save(shared, false, false) {
            Ok(_) => {}
            Err(e) => dlog::error(&format!("could not dump the process list: {e}")),
        }
    }
    shared.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
    let handles: Vec<_> = shared.table().procs.values().map(|e| e.handle.clone()).collect();
    let waits: Vec<_> = handles.iter().map(|h| h.delete()).collect();
    for w in waits {
        let _ = w.await;
    }
}
