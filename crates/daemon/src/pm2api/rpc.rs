//! `rpc.sock`: pm2-axon-rpc calls onto the daemon's request handling.
//!
//! Calls on one connection run concurrently (pm2's client pipelines up to
//! `CONCURRENT_ACTIONS` of them and matches replies by id), bounded per
//! connection; replies go through one writer task.

use super::trigger::{id_of, info, is_up, js_string, msg_targets, send_all};
use crate::dlog;
use crate::server;
use crate::state::SharedRef;
use axon::rpc::{Incoming, Request as RpcRequest};
use corral_proto::{Op, ProcInfo, Reply, Request};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Semaphore};

/// Calls in flight on one connection before the daemon stops reading it.
const MAX_IN_FLIGHT: usize = 64;

/// The methods pm2's daemon exposes (for `{type:'methods'}`).
const METHODS: &[&str] = &[
    "killMe",
    "profileCPU",
    "profileMEM",
    "prepare",
    "getMonitorData",
    "startProcessId",
    "stopProcessId",
    "restartProcessId",
    "deleteProcessId",
    "sendLineToStdin",
    "softReloadProcessId",
    "reloadProcessId",
    "duplicateProcessId",
    "resetMetaProcessId",
    "stopWatch",
    "startWatch",
    "toggleWatch",
    "notifyByProcessId",
    "notifyKillPM2",
    "monitor",
    "unmonitor",
    "msgProcess",
    "sendDataToProcessId",
    "sendSignalToProcessId",
    "sendSignalToProcessName",
    "ping",
    "getVersion",
    "getReport",
    "reloadLogs",
    "getSystemData",
];

pub async fn serve(shared: SharedRef, listener: UnixListener, shutdown: watch::Sender<bool>) {
    let mut stop = shutdown.subscribe();
    loop {
        tokio::select! {
            // An in-place upgrade: new clients wait in the backlog for the
            // next image.
            _ = crate::upgrade::pause::resumed(), if crate::upgrade::pause::is_paused() => {}
            _ = crate::upgrade::pause::paused(), if !crate::upgrade::pause::is_paused() => {}
            acc = listener.accept(), if !crate::upgrade::pause::is_paused() => match acc {
                Ok((stream, _)) => {
                    tokio::spawn(connection(shared.clone(), stream, shutdown.clone()));
                }
                Err(e) => {
                    dlog::error(&format!("rpc.sock accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

async fn connection(shared: SharedRef, stream: UnixStream, shutdown: watch::Sender<bool>) {
    if !server::peer_allowed(&stream) {
        return;
    }
    let peer_pid = stream.peer_cred().ok().and_then(|c| c.pid());
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Written>();
    let writer = tokio::spawn(async move {
        while let Some((f, done)) = rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                return;
            }
            if let Some(done) = done {
                read_by_peer(&wr).await;
                let _ = done.send(());
            }
        }
    });
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut dec = axon::Decoder::new(axon::DEFAULT_MAX_FRAME);
    let mut buf = vec![0u8; 16 * 1024];
    'conn: loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        dec.extend(&buf[..n]);
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    dlog::error(&format!("rpc.sock: closing a connection: {e}"));
                    writer.abort();
                    break 'conn;
                }
            };
            let inc = match axon::rpc::parse_request(frame) {
                Ok(i) => i,
                Err(e) => {
                    dlog::error(&format!("rpc.sock: closing a connection: {e}"));
                    writer.abort();
                    break 'conn;
                }
            };
            let Ok(permit) = permits.clone().acquire_owned().await else { break 'conn };
            let (shared, tx, shutdown) = (shared.clone(), tx.clone(), shutdown.clone());
            tokio::spawn(async move {
                let (frame, then) = answer(&shared, inc, peer_pid, &shutdown).await;
                match (frame, then) {
                    (Some(f), Some((ids, payload))) => {
                        // The client has read the reply before the apps get
                        // the message: pm2's `trigger` counts answers
                        // against the reply's process_count and would wait
                        // forever if an answer overtook it.
                        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                        let _ = tx.send((f, Some(done_tx)));
                        if done_rx.await.is_ok() {
                            send_all(&shared, &ids, &payload).await;
                        }
                    }
                    (Some(f), None) => {
                        let _ = tx.send((f, None));
                    }
                    (None, _) => {}
                }
                drop(permit);
            });
        }
    }
    drop(tx);
}

/// The reply frame for one request; `None` where pm2's daemon never calls
/// back (`killMe`, `notifyKillPM2`: a reply would call a callback the
/// client did not give).
async fn answer(
    shared: &SharedRef,
    inc: Incoming,
    peer_pid: Option<i32>,
    shutdown: &watch::Sender<bool>,
) -> (Option<Vec<u8>>, Then) {
    let Incoming { req, id } = inc;
    let mut then = None;
    let r = match req {
        RpcRequest::Methods => return (axon::rpc::reply_methods(&id, METHODS).ok(), None),
        RpcRequest::Invalid(why) => Err(why),
        RpcRequest::Call { method, args } => {
            let arg = args.into_iter().next().unwrap_or(Value::Null);
            match call(shared, &method, arg, peer_pid, shutdown).await {
                Outcome::Reply(v) => Ok(v),
                Outcome::ReplyThen(v, ids, payload) => {
                    then = Some((ids, payload));
                    Ok(v)
                }
                Outcome::Text(t) => return (axon::rpc::reply_ok(&id, &format!("[{t}]")).ok(), None),
                Outcome::Error(e) => Err(e),
                Outcome::NoReply => return (None, None),
            }
        }
    };
    let f = match r {
        Ok(v) => axon::rpc::reply_ok(&id, &Value::Array(vec![v]).to_string()),
        Err(e) => axon::rpc::reply_err(&id, &e),
    };
    (f.ok(), then)
}

/// Waits (up to 2 s) until the peer has read everything written on `wr`.
///
/// Written is not enough for `msgProcess`: the client reads rpc.sock and
/// pub.sock in whatever order its event loop reports them, and an
/// `axm:reply` processed before the reply makes pm2's `trigger` wait
/// forever. A unix socket's send queue (SIOCOUTQ) counts bytes the peer has
/// not read yet; once it is empty the client has read the reply, and parses
/// it in that same turn of its loop.
async fn read_by_peer(wr: &tokio::net::unix::OwnedWriteHalf) {
    use std::os::fd::AsRawFd;
    let fd = wr.as_ref().as_raw_fd();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ) on a socket we own writes one int.
        let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
        if r != 0 || queued == 0 || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A frame for the writer task, and who to tell once it is written.
type Written = (Vec<u8>, Option<tokio::sync::oneshot::Sender<()>>);

/// Messages to send to processes once the reply is written.
type Then = Option<(Vec<u32>, Value)>;

enum Outcome {
    Reply(Value),
    /// Reply, then send `payload` to the processes `ids`.
    ReplyThen(Value, Vec<u32>, Value),
    /// One result already serialized (`getMonitorData`'s list).
    Text(String),
    Error(String),
    NoReply,
}

use Outcome::{Error as Fail, Reply as Ok_};

fn entry(p: &ProcInfo) -> Value {
    corral_config::jlist_entry(p)
}

async fn call(
    shared: &SharedRef,
    method: &str,
    arg: Value,
    peer_pid: Option<i32>,
    shutdown: &watch::Sender<bool>,
) -> Outcome {
    crate::trim::activity();
    match method {
        "ping" => Ok_(json!({ "msg": "pong" })),
        "getVersion" => Ok_(Value::from(corral_proto::CORRAL_VERSION)),
        "getReport" => Ok_(report(shared)),
        // Sampled on demand (up to 250 ms), off the event loop.
        "getSystemData" => match tokio::task::spawn_blocking(crate::sysinfo::system_data).await {
            Ok(v) => Ok_(v),
            Err(e) => Fail(format!("getSystemData failed: {e}")),
        },
        "getMonitorData" => match server::handle(shared, Request::Jlist).await {
            Reply::Text { text } => Outcome::Text(text),
            _ => Fail("could not list processes".into()),
        },
        "prepare" => prepare(shared, arg).await,
        "startProcessId" => {
            let Some(id) = id_of(&arg) else { return Fail(format!("{arg} id unknown")) };
            match info(shared, id) {
                None => Fail(format!("{id} id unknown")),
                Some(p) if p.status == "online" => Fail("process already online".into()),
                Some(p) if p.status == "launching" => Fail("process already started".into()),
                Some(_) => op(shared, Op::Restart, id, None).await,
            }
        }
        "stopProcessId" => match id_of(&arg) {
            Some(id) => op(shared, Op::Stop, id, None).await,
            None => Fail(format!("{arg} : id unknown")),
        },
        "deleteProcessId" => match id_of(&arg) {
            Some(id) => op(shared, Op::Delete, id, None).await,
            None => Fail(format!("{arg} : id unknown")),
        },
        "resetMetaProcessId" => match id_of(&arg) {
            Some(id) => op(shared, Op::Reset, id, None).await,
            None => Fail(format!("{arg} id unknown")),
        },
        "restartProcessId" | "reloadProcessId" | "softReloadProcessId" => {
            let Some(id) = id_of(&arg) else {
                return Fail(format!("opts.id not passed to {method}"));
            };
            let Some(p) = info(shared, id) else { return Fail("God db process id unknown".into()) };
            let update = updated_spec(&p, arg.get("env"));
            let o = if method == "restartProcessId" { Op::Restart } else { Op::Reload };
            op(shared, o, id, update).await
        }
        "duplicateProcessId" => {
            let Some(p) = id_of(&arg).and_then(|id| info(shared, id)) else {
                return Fail(format!("{arg} id unknown"));
            };
            let mut app = p.app.clone();
            app.instances = None;
            match server::start_app(shared, app).await {
                Ok(ids) => Ok_(ids
                    .first()
                    .and_then(|id| info(shared, *id))
                    .map(|p| entry(&p))
                    .unwrap_or(Value::Null)),
                Err(e) => Fail(e.to_string()),
            }
        }
        "sendSignalToProcessId" => {
            let sig = arg.get("signal").and_then(Value::as_str).unwrap_or("").to_string();
            let Some(id) = id_of(&arg) else { return Fail(format!("{arg} id unknown")) };
            match server::handle(shared, Request::SendSignal { id, signal: sig }).await {
                Reply::Error { message } => Fail(message),
                _ => Ok_(info(shared, id).map(|p| entry(&p)).unwrap_or(Value::Null)),
            }
        }
        "sendSignalToProcessName" => {
            let sig = arg.get("signal").and_then(Value::as_str).unwrap_or("").to_string();
            let name = arg.get("process_name").map(js_string).unwrap_or_default();
            let ids: Vec<u32> = shared
                .table()
                .procs
                .values()
                .filter(|e| e.info.app.name == name)
                .map(|e| e.info.pm_id)
                .collect();
            if ids.is_empty() {
                return Fail("Process name not found".into());
            }
            for id in ids {
                if let Reply::Error { message } =
                    server::handle(shared, Request::SendSignal { id, signal: sig.clone() }).await
                {
                    return Fail(message);
                }
            }
            Ok_(json!({}))
        }
        "sendDataToProcessId" => send_data(shared, arg).await,
        "msgProcess" => match msg_targets(shared, &arg) {
            Ok((ids, payload)) => {
                let n = ids.len();
                Outcome::ReplyThen(json!({ "process_count": n, "success": true }), ids, payload)
            }
            Err(e) => Fail(e),
        },
        "sendLineToStdin" => send_line(shared, arg).await,
        "profileCPU" => profile(shared, crate::inspector::Profile::Cpu, arg).await,
        "profileMEM" => profile(shared, crate::inspector::Profile::Mem, arg).await,
        "notifyByProcessId" => {
            let Some(p) = id_of(&arg).and_then(|id| info(shared, id)) else {
                return Fail("process id doesnt exists".into());
            };
            let event = arg.get("action_name").map(js_string).unwrap_or_default();
            let manually = arg.get("manually").is_some_and(|m| !m.is_null());
            super::bus::publish_process_event(&p, &event, manually);
            Ok_(Value::Null)
        }
        "stopWatch" | "startWatch" | "toggleWatch" => Ok_(json!({ "success": true })),
        "monitor" | "unmonitor" => match id_of(&arg).and_then(|id| info(shared, id)) {
            Some(p) => Ok_(json!({ "success": true, "pm_id": p.pm_id })),
            None => Fail("Unknown pm_id".into()),
        },
        "reloadLogs" => {
            server::reload_logs(shared);
            Ok_(json!({}))
        }
        "notifyKillPM2" => Outcome::NoReply,
        "killMe" => {
            super::topics::announce_kill();
            server::shutdown_all(shared, false).await;
            super::topics::kill_delivered(Duration::from_secs(1)).await;
            // pm2's client waits for SIGQUIT as the sign the daemon is gone;
            // only the peer that asked gets it.
            let asked = id_of(&json!({ "id": arg.get("pid").cloned().unwrap_or(Value::Null) }));
            if let (Some(pid), Some(peer)) = (asked, peer_pid) {
                if pid as i32 == peer && peer > 1 {
                    crate::proctree::signal(peer, libc::SIGQUIT);
                }
            }
            let _ = shutdown.send(true);
            Outcome::NoReply
        }
        other => Fail(format!("method \"{other}\" does not exist")),
    }
}

async fn op(shared: &SharedRef, op: Op, id: u32, update: Option<Box<corral_proto::AppSpec>>) -> Outcome {
    if info(shared, id).is_none() {
        return Fail(format!("{id} id unknown"));
    }
    match server::handle(shared, Request::Op { op, id, update }).await {
        Reply::Procs { procs } => match procs.first() {
            // A deleted process is answered as it was before deletion, with
            // the status pm2 reports for it.
            Some(p) if op == Op::Delete => {
                let mut p = p.clone();
                p.status = corral_proto::Status::Stopped;
                Ok_(entry(&p))
            }
            Some(p) => Ok_(info(shared, p.pm_id).map(|p| entry(&p)).unwrap_or_else(|| entry(p))),
            None => Ok_(Value::Null),
        },
        Reply::Error { message } => Fail(message),
        _ => Ok_(Value::Null),
    }
}

/// pm2 merges `opts.env` into the process's env on restart/reload
/// (`Utility.extend`: scalar values only, objects such as `current_conf`
/// are skipped). Nothing to merge, or nothing new: no update.
fn updated_spec(p: &ProcInfo, env: Option<&Value>) -> Option<Box<corral_proto::AppSpec>> {
    let Some(Value::Object(env)) = env else { return None };
    let mut app = p.app.clone();
    let mut changed = false;
    for (k, v) in env {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        if k == "updateEnv" || k == "PM2_HOME" || k == "CORRAL_DAEMON_MODE" {
            continue;
        }
        if app.env.get(k) != Some(&s) {
            app.env.insert(k.clone(), s);
            changed = true;
        }
    }
    changed.then(|| Box::new(app))
}

/// `prepare`: the app pm2's client resolved (`Common.resolveAppAttributes`:
/// `pm_exec_path`, `pm_cwd`, the whole `env`, `exec_mode` as `fork_mode`...)
/// is the shape of a saved pm2_env, so it is read the way `dump.pm2` is.
async fn prepare(shared: &SharedRef, arg: Value) -> Outcome {
    if !arg.is_object() {
        return Fail("prepare needs an application object".into());
    }
    let cwd = arg.get("pm_cwd").or_else(|| arg.get("cwd")).and_then(Value::as_str).unwrap_or("/").to_string();
    let ctx = corral_config::Context {
        cwd: cwd.into(),
        env: Default::default(),
        pm2_home: shared.home.root.clone(),
        env_name: None,
        nproc: shared.nproc,
        source: "<pm2 API>".into(),
    };
    let mut app = match corral_config::app_from_pm2_env(&arg, &ctx) {
        Ok(a) => a,
        Err(e) => return Fail(e.to_string()),
    };
    app.instances = match arg.get("instances") {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(Value::String(s)) if s == "max" => Some(0),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    if arg.get("status").and_then(Value::as_str) == Some("stopped") {
        app.autostart = false;
    }
    match server::start_app(shared, app).await {
        Ok(ids) => {
            Ok_(Value::Array(ids.iter().filter_map(|id| info(shared, *id)).map(|p| entry(&p)).collect()))
        }
        Err(e) => Fail(e.to_string()),
    }
}

async fn send_data(shared: &SharedRef, packet: Value) -> Outcome {
    let (Some(id), Some(_), Some(_)) = (
        packet.get("id").and_then(id_of),
        packet.get("data"),
        packet.get("topic").filter(|t| !t.is_null() && *t != &Value::Bool(false) && *t != &json!("")),
    ) else {
        return Fail("ID, DATA or TOPIC field is missing".into());
    };
    match info(shared, id) {
        None => return Fail(format!("Process with ID <{id}> unknown.")),
        Some(p) if !is_up(&p) => return Fail(format!("Process with ID <{id}> offline.")),
        Some(_) => {}
    }
    match server::handle(shared, Request::SendData { id, data: packet.clone() }).await {
        Reply::Error { message } => Fail(message),
        _ => Ok_(json!({ "success": true, "data": packet })),
    }
}

/// pm2's `sendLineToStdin`: `{pm_id, line}` written as given (the client
/// adds the separator); answered `{pm_id, line}`.
async fn send_line(shared: &SharedRef, packet: Value) -> Outcome {
    let line = packet.get("line").and_then(Value::as_str).filter(|l| !l.is_empty());
    let (Some(raw_id), Some(line)) = (packet.get("pm_id").filter(|v| !v.is_null()), line) else {
        return Fail("pm_id or line field missing".into());
    };
    let Some(id) = id_of(&json!({ "id": raw_id })) else {
        return Fail(format!("Process with ID <{}> unknown.", js_string(raw_id)));
    };
    match server::handle(shared, Request::SendLine { id, line: line.to_string() }).await {
        Reply::Error { message } => Fail(message),
        _ => Ok_(json!({ "pm_id": raw_id, "line": line })),
    }
}

/// pm2's `profileCPU` / `profileMEM` (`{pwd, timeout}`) profile pm2's own
/// Node daemon; Corral's is native, so there is nothing to profile unless
/// the caller names an app process (`id`, Corral's addition), which is then
/// profiled through its inspector. Answered as pm2's daemon answers:
/// `{file}` on success, `{error}` (not an RPC error) on failure.
async fn profile(shared: &SharedRef, kind: crate::inspector::Profile, msg: Value) -> Outcome {
    let Some(pwd) = msg.get("pwd").and_then(Value::as_str).filter(|p| !p.is_empty()) else {
        return Ok_(json!({ "error": "pwd (the profile file to write) missing" }));
    };
    let Some(id) = msg.get("id").filter(|v| !v.is_null()).and_then(|v| id_of(&json!({ "id": v }))) else {
        return Ok_(json!({
            "error": "Corral's daemon is not a Node.js process and has no heap or CPU profile; \
                      pass the id of an app process (`id`) to profile that app"
        }));
    };
    let Some(p) = info(shared, id) else { return Ok_(json!({ "error": format!("{id} id unknown") })) };
    if !is_up(&p) || p.pid == 0 {
        return Ok_(json!({ "error": format!("Process with ID <{id}> offline.") }));
    }
    let ms = match msg.get("timeout") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(5000.0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(5000.0),
        _ => 5000.0,
    };
    let duration = Duration::from_millis(ms.clamp(0.0, 3_600_000.0) as u64);
    match crate::inspector::profile(p.pid as i32, kind, duration, std::path::Path::new(pwd)).await {
        Ok(()) => Ok_(json!({ "file": pwd })),
        Err(e) => Ok_(json!({ "error": e.to_string() })),
    }
}

fn report(shared: &SharedRef) -> Value {
    let env: serde_json::Map<String, Value> =
        shared.config.env.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let node = crate::monitor::node_version();
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    json!({
        "pm2_version": corral_proto::CORRAL_VERSION,
        "node_version": node,
        "node_path": shared.config.env.get("_").cloned().unwrap_or_else(|| "not found".into()),
        "argv0": std::env::args().next().unwrap_or_default(),
        "argv": std::env::args().collect::<Vec<_>>(),
        "user": shared.config.env.get("USER").cloned().unwrap_or_else(|| shared.username.clone()),
        "uid": uid,
        "gid": gid,
        "env": env,
        "managed_apps": shared.table().procs.len(),
        "started_at": super::topics::started_at(),
    })
}
