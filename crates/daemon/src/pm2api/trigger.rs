//! pm2's `msgProcess` targets and `pm2 trigger`: which processes get an
//! action message, sending it on their channels, collecting `axm:reply`.

use crate::monitor;
use crate::state::SharedRef;
use corral_proto::{ProcInfo, Reply};
use serde_json::Value;
use std::time::Duration;

/// How long `pm2 trigger` waits for the answers (pm2 waits forever).
const TRIGGER_TIMEOUT: Duration = Duration::from_secs(30);

/// pm2 passes an id as a number, a numeric string or `{id}`.
pub(crate) fn id_of(v: &Value) -> Option<u32> {
    let v = match v {
        Value::Object(o) => o.get("id").or_else(|| o.get("process_id"))?,
        v => v,
    };
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(crate) fn info(shared: &SharedRef, id: u32) -> Option<ProcInfo> {
    let mut t = shared.table();
    monitor::refresh(&mut t);
    t.procs.get(&id).map(|e| e.info.clone())
}

/// `String(v)` as JS would print a name or an id.
pub(crate) fn js_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

pub(crate) fn is_up(p: &ProcInfo) -> bool {
    p.status == "online" || p.status == "launching"
}

pub(crate) fn has_action(p: &ProcInfo, name: &str) -> bool {
    p.axm.as_ref().is_some_and(|a| {
        a.pid == p.pid && a.actions.iter().any(|x| x.get("action_name").and_then(Value::as_str) == Some(name))
    })
}

/// `msgProcess` (what `pm2 trigger` calls): the process(es) that declared
/// the action and are up, and what to send them (the action name alone, or
/// the whole command when it has options); the answer comes back as
/// `axm:reply`.
pub(crate) fn msg_targets(shared: &SharedRef, cmd: &Value) -> Result<(Vec<u32>, Value), String> {
    let action = cmd.get("msg").map(js_string).unwrap_or_default();
    let opts_null = cmd.get("opts").is_none_or(Value::is_null);
    let payload =
        if opts_null && cmd.get("uuid").is_none() { Value::String(action.clone()) } else { cmd.clone() };
    let targets: Vec<ProcInfo> = if let Some(idv) = cmd.get("id") {
        let Some(p) = id_of(idv).and_then(|id| info(shared, id)) else {
            return Err(format!("{} id unknown", js_string(idv)));
        };
        if !has_action(&p, &action) {
            return Err(format!("Action doesn't exist {action} for {}", p.app.name));
        }
        if !is_up(&p) {
            return Err(format!("{} : id offline", p.pm_id));
        }
        vec![p]
    } else if let Some(name) = cmd.get("name").map(js_string) {
        let t = shared.table();
        t.procs
            .values()
            .map(|e| &e.info)
            .filter(|p| {
                let base = std::path::Path::new(&p.app.script).file_name().and_then(|f| f.to_str());
                (p.app.name == name
                    || p.app.namespace == name
                    || base == Some(name.as_str())
                    || name == "all")
                    && is_up(p)
                    && has_action(p, &action)
            })
            .cloned()
            .collect()
    } else {
        return Err("method requires name or id field".into());
    };
    Ok((targets.iter().map(|p| p.pm_id).collect(), payload))
}

/// Sends `payload` to each process's IPC channel; how many took it.
pub(crate) async fn send_all(shared: &SharedRef, ids: &[u32], payload: &Value) -> usize {
    let mut sent = 0;
    for &id in ids {
        if shared.cluster.send_to_process(id, &node_ipc::Value::from(payload)) == Some(true) {
            sent += 1;
        }
    }
    sent
}

/// `pm2 trigger` for Corral's CLI: `msgProcess` as pm2's `trigger` builds
/// it, then the `axm:reply` answers of the processes that received it.
pub async fn trigger(shared: &SharedRef, target: &str, action: &str, param: Option<Value>) -> Reply {
    let mut cmd = serde_json::Map::new();
    cmd.insert("msg".into(), Value::from(action));
    if let Some(p) = param {
        cmd.insert("opts".into(), p);
    }
    if target.parse::<u32>().is_ok() {
        cmd.insert("id".into(), Value::from(target));
    } else {
        cmd.insert("name".into(), Value::from(target));
    }
    // Subscribed before sending: an instant answer is not missed.
    let mut rx = super::topics::axm_replies().subscribe();
    let sent = match msg_targets(shared, &Value::Object(cmd)) {
        Ok((ids, payload)) => send_all(shared, &ids, &payload).await,
        Err(e) => return Reply::Error { message: e },
    };
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + TRIGGER_TIMEOUT;
    while replies.len() < sent {
        let got = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(r)) => r,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            _ => break,
        };
        let (pm_id, data) = got;
        if data.get("action_name").and_then(Value::as_str).is_some_and(|a| a != action) {
            continue;
        }
        let Some(p) = info(shared, pm_id) else { continue };
        let matches = target == "all"
            || p.app.name == target
            || p.app.namespace == target
            || target.parse::<u32>().ok() == Some(pm_id);
        if matches {
            replies.push(corral_proto::ActionReply {
                pm_id,
                name: p.app.name.clone(),
                namespace: p.app.namespace.clone(),
                value: data.get("return").cloned().unwrap_or(Value::Null),
            });
        }
    }
    Reply::Triggered { sent, replies }
}
