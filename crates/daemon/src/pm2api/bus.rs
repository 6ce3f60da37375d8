//! `pub.sock`: pm2's event bus, and the apps' IPC messages it carries.
//!
//! Each subscriber connection translates the daemon's core events itself
//! (so nothing is translated while nobody listens) and forwards the frames
//! published on the pm2 bus ([`super::publish`]). A subscriber that falls
//! behind loses events (broadcast lag), never slows the daemon. Subscribers
//! never write on pm2's bus; bytes they send are decoded (well-formed
//! frames ignored, as pm2's pub socket does) and a malformed frame closes
//! that connection.

use crate::server;
use crate::state::SharedRef;
use crate::{dlog, timefmt};
use corral_proto::{Axm, Event, ProcInfo, Stream};
use serde_json::{json, Map, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

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
                    crate::trim::activity();
                    // Subscribed at accept, before anything else runs: an
                    // event caused by the client's next RPC call is not
                    // missed.
                    let rx = (shared.bus.subscribe(), super::topics::pm2_bus().subscribe());
                    tokio::spawn(subscriber(shared.clone(), stream, rx, shutdown.subscribe()));
                }
                Err(e) => {
                    dlog::error(&format!("pub.sock accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => {
                // A client that connected just before the daemon went down
                // (a bus opened right before `killDaemon`) is still in the
                // backlog: it hears `pm2:kill` too. A timeout of zero polls
                // accept once.
                if let Some(kill) = super::topics::kill_frame() {
                    while let Ok(Ok((mut s, _))) = tokio::time::timeout(Duration::ZERO, listener.accept()).await {
                        let _ = tokio::time::timeout(Duration::from_millis(500), s.write_all(&kill)).await;
                    }
                }
                return;
            }
        }
    }
}

type Receivers = (broadcast::Receiver<Event>, broadcast::Receiver<super::topics::BusFrame>);

async fn subscriber(shared: SharedRef, stream: UnixStream, rx: Receivers, mut stop: watch::Receiver<bool>) {
    if !server::peer_allowed(&stream) {
        return;
    }
    let (mut core, mut own) = rx;
    let (mut rd, mut wr) = stream.into_split();
    // Connected while the daemon was going down, after `pm2:kill` was
    // announced: it gets the announcement too (a client that opens the bus
    // right before `killDaemon` may be accepted only after it), once.
    let late_kill = super::topics::kill_frame();
    if let Some(k) = &late_kill {
        if wr.write_all(k).await.is_err() {
            return;
        }
    }
    let mut dec = axon::Decoder::new(64 * 1024);
    let mut buf = [0u8; 512];
    loop {
        let frame: Option<Vec<u8>> = tokio::select! {
            ev = core.recv() => match ev {
                Ok(ev) => translate(&shared, &ev),
                Err(RecvError::Lagged(_)) => None,
                Err(RecvError::Closed) => return,
            },
            f = own.recv() => match f {
                Ok(f) if late_kill.as_ref().is_some_and(|k| std::sync::Arc::ptr_eq(k, &f)) => None,
                Ok(f) if super::topics::kill_frame().is_some_and(|k| std::sync::Arc::ptr_eq(&k, &f)) => {
                    let _ = wr.write_all(&f).await;
                    super::topics::kill_written();
                    None
                }
                Ok(f) => Some(f.to_vec()),
                Err(RecvError::Lagged(_)) => None,
                Err(RecvError::Closed) => return,
            },
            n = rd.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    dec.extend(&buf[..n]);
                    loop {
                        match dec.next_frame() {
                            // Well-formed frames are ignored, as pm2's pub
                            // socket does; one whose JSON does not parse
                            // (which would throw in pm2's daemon) closes.
                            Ok(Some(f)) => {
                                if let Some(e) = f.iter().find_map(|a| axon::unpack(a).err()) {
                                    dlog::error(&format!("pub.sock: closing a connection: {e}"));
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                dlog::error(&format!("pub.sock: closing a connection: {e}"));
                                return;
                            }
                        }
                    }
                    None
                }
            },
            // On shutdown, let `pm2:kill` (already queued) go out first.
            _ = stop.changed() => {
                // Stopping every app queues many events before `pm2:kill`;
                // a lagged receiver skips the oldest and goes on, so the
                // announcement (the newest) is always written.
                loop {
                    match own.try_recv() {
                        Ok(f) => {
                            let _ = wr.write_all(&f).await;
                        }
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    }
                }
                return;
            }
        };
        if let Some(f) = frame {
            if wr.write_all(&f).await.is_err() {
                return;
            }
        }
    }
}

/// A process as `process:event` carries it: its pm2_env without `env`
/// (pm2's `Utility.formatCLU`).
fn formatted(p: &ProcInfo) -> Value {
    let mut v = corral_config::pm2_env(p);
    if let Value::Object(o) = &mut v {
        o.remove("env");
    }
    v
}

pub fn publish_process_event(p: &ProcInfo, event: &str, manually: bool) {
    super::topics::publish(
        "process:event",
        &json!({ "event": event, "manually": manually, "process": formatted(p), "at": timefmt::now_ms() }),
    );
}

fn translate(shared: &SharedRef, ev: &Event) -> Option<Vec<u8>> {
    let (topic, data) = match ev {
        Event::Log { pm_id, name, namespace, stream, at, data } => (
            match stream {
                Stream::Out => "log:out",
                Stream::Err => "log:err",
            },
            json!({
                "process": { "pm_id": pm_id, "name": name, "rev": null, "namespace": namespace },
                "at": at,
                "data": data,
            }),
        ),
        Event::Process { pm_id, name, event, at } => {
            let process = shared
                .table()
                .procs
                .get(pm_id)
                .map(|e| formatted(&e.info))
                .unwrap_or_else(|| json!({ "pm_id": pm_id, "name": name }));
            ("process:event", json!({ "event": event, "manually": false, "process": process, "at": at }))
        }
        Event::Daemon { .. } => return None,
    };
    axon::rpc::event(topic, &data.to_string()).ok()
}

/// IPC messages pm2 consumes instead of broadcasting (they update the
/// process's pm2_env).
const CONSUMED: &[&str] = &["axm:action", "axm:monitor", "axm:option:setPID", "axm:option:configuration"];

/// An app's IPC message that is not Node cluster traffic: what pm2's
/// `ForkMode`/`ClusterMode` do with `process.send()`. `{type, data}` goes
/// on the bus under `type` (the `axm:*` declarations of @pm2/io are
/// recorded on the process instead); anything else as `process:msg` with
/// `raw`.
pub fn worker_message(shared: &SharedRef, pm_id: u32, pid: i32, msg: &node_ipc::Value) {
    let ty = msg.get("type").and_then(|t| t.as_str()).map(str::to_owned);
    let data = msg.get("data").filter(|d| is_truthy(d));
    match (ty, data) {
        (Some(ty), Some(data)) if !ty.is_empty() => {
            let data = data.to_json();
            if CONSUMED.contains(&ty.as_str()) {
                record_axm(shared, pm_id, pid, &ty, data);
                return;
            }
            if ty == "axm:reply" {
                let replies = super::topics::axm_replies();
                if replies.receiver_count() > 0 {
                    let _ = replies.send((pm_id, data.clone()));
                }
            }
            if super::topics::pm2_bus().receiver_count() == 0 {
                return;
            }
            let Some((name, namespace)) = names(shared, pm_id) else { return };
            super::topics::publish(
                &ty,
                &json!({
                    "at": timefmt::now_ms(),
                    "data": data,
                    "process": { "pm_id": pm_id, "name": name, "versioning": null, "namespace": namespace },
                }),
            );
        }
        _ => {
            if super::topics::pm2_bus().receiver_count() == 0 {
                return;
            }
            let Some((name, namespace)) = names(shared, pm_id) else { return };
            super::topics::publish(
                "process:msg",
                &json!({
                    "at": timefmt::now_ms(),
                    "raw": msg.to_json(),
                    "process": { "pm_id": pm_id, "name": name, "namespace": namespace },
                }),
            );
        }
    }
}

/// JS truthiness of `msg.data` (pm2 tests `msg.data && msg.type`).
fn is_truthy(v: &node_ipc::Value) -> bool {
    if v.is_undefined() || v.is_null() {
        return false;
    }
    if let Some(b) = v.as_bool() {
        return b;
    }
    if let Some(s) = v.as_str() {
        return !s.is_empty();
    }
    if let Some(n) = v.as_f64() {
        return n != 0.0 && !n.is_nan();
    }
    true
}

fn names(shared: &SharedRef, pm_id: u32) -> Option<(String, String)> {
    shared.table().procs.get(&pm_id).map(|e| (e.info.app.name.clone(), e.info.app.namespace.clone()))
}

/// Records an `axm:*` declaration (pm2's `Daemon.startLogic`): actions are
/// added once by name, monitor values and options are merged. The record
/// belongs to the run with `pid`; a new run starts from empty.
fn record_axm(shared: &SharedRef, pm_id: u32, pid: i32, ty: &str, data: Value) {
    let pid = u32::try_from(pid).unwrap_or(0);
    shared.with_entry(pm_id, |e| {
        let axm = e.info.axm.get_or_insert_with(Axm::default);
        if axm.pid != pid {
            *axm = Axm { pid, ..Axm::default() };
        }
        apply_axm(axm, ty, data);
    });
}

pub fn apply_axm(axm: &mut Axm, ty: &str, data: Value) {
    match ty {
        "axm:action" => {
            let name = data.get("action_name").cloned();
            if name.is_some() && !axm.actions.iter().any(|a| a.get("action_name") == name.as_ref()) {
                axm.actions.push(data);
            }
        }
        "axm:monitor" => {
            if let Value::Object(m) = data {
                merge(&mut axm.monitor, m);
            }
        }
        "axm:option:configuration" => {
            if let Value::Object(m) = data {
                merge(&mut axm.options, m);
            }
        }
        _ => {}
    }
}

fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        into.insert(k, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axm_records_like_pm2() {
        let mut a = Axm::default();
        apply_axm(&mut a, "axm:action", json!({"action_name": "hello", "opts": null}));
        apply_axm(&mut a, "axm:action", json!({"action_name": "hello", "opts": {"x": 1}}));
        apply_axm(&mut a, "axm:action", json!({"no_name": true}));
        assert_eq!(a.actions.len(), 1);
        apply_axm(&mut a, "axm:monitor", json!({"Requests": {"value": 1}}));
        apply_axm(&mut a, "axm:monitor", json!({"Requests": {"value": 2}, "Heap": {"value": 3}}));
        assert_eq!(a.monitor["Requests"]["value"], 2);
        assert_eq!(a.monitor.len(), 2);
        apply_axm(&mut a, "axm:option:configuration", json!({"module_conf": {}}));
        apply_axm(&mut a, "axm:monitor", json!("not an object"));
        assert!(a.options.contains_key("module_conf"));
    }
}
