//! Where a `@socket.io/cluster-adapter` 0.3.0 frame goes.
//!
//! The daemon forwards adapter frames byte for byte; it decodes only the top-level fields
//! (`source`, `type`, `uid`, `nsp`, `requesterUid`) and asks this module for the targets. Frames
//! carry arbitrary JS values (Buffers, sparse arrays, -0, BigInt...), so re-encoding them would
//! be both slower and lossy.
//!
//! Rules, per app (the daemon keeps one [`Relay`] per app, so two socket.io apps never
//! cross-deliver):
//! - `FETCH_SOCKETS_RESPONSE` (8) and `SERVER_SIDE_EMIT_RESPONSE` (10) go only to the worker
//!   that has sent a frame with `uid == requesterUid`; dropped if no such worker is alive.
//! - Everything else, including the other responses `BROADCAST_CLIENT_COUNT` (11) and
//!   `BROADCAST_ACK` (12), goes to every other worker of the app, as the stock `setupPrimary`
//!   does (non-requesters ignore unknown request ids).
//! - When a worker exits, the survivors get `ADAPTER_CLOSE` (13) for each `(uid, nsp)` it used,
//!   so they stop counting it at once instead of after the 10 s heartbeat timeout.
//!
//! Frames without a `uid` come from cluster-adapter 0.2.x, whose numbering differs; they are
//! fanned out to the other workers and never routed as responses.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use super::router::WorkerId;

/// The `source` field every cluster-adapter message carries.
pub const ADAPTER_SOURCE: &str = "_sio_adapter";

/// Message types of cluster-adapter 0.3.0 (`MessageType` in its `index.ts`).
pub mod kind {
    pub const INITIAL_HEARTBEAT: i64 = 1;
    pub const HEARTBEAT: i64 = 2;
    pub const BROADCAST: i64 = 3;
    pub const SOCKETS_JOIN: i64 = 4;
    pub const SOCKETS_LEAVE: i64 = 5;
    pub const DISCONNECT_SOCKETS: i64 = 6;
    pub const FETCH_SOCKETS: i64 = 7;
    pub const FETCH_SOCKETS_RESPONSE: i64 = 8;
    pub const SERVER_SIDE_EMIT: i64 = 9;
    pub const SERVER_SIDE_EMIT_RESPONSE: i64 = 10;
    pub const BROADCAST_CLIENT_COUNT: i64 = 11;
    pub const BROADCAST_ACK: i64 = 12;
    pub const ADAPTER_CLOSE: i64 = 13;
}

/// A worker that created more adapters than this (one per namespace) is tracked only for the
/// first ones: bounded memory against a worker spinning dynamic namespaces.
const MAX_UIDS_PER_WORKER: usize = 4096;
/// In 0.3.0 a uid belongs to one namespace; a few are tolerated for safety, no more.
const MAX_NSPS_PER_UID: usize = 16;

/// The top-level fields of an adapter frame that decide its route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdapterFrame<'a> {
    /// `type`, when it is an integer.
    pub kind: Option<i64>,
    pub uid: Option<&'a str>,
    pub nsp: Option<&'a str>,
    pub requester_uid: Option<&'a str>,
}

impl<'a> AdapterFrame<'a> {
    /// Reads the routing fields from a decoded message; `None` unless `source` is
    /// [`ADAPTER_SOURCE`], i.e. the message is not the relay's business.
    pub fn from_json(msg: &'a Value) -> Option<Self> {
        let obj = msg.as_object()?;
        if obj.get("source").and_then(Value::as_str) != Some(ADAPTER_SOURCE) {
            return None;
        }
        let kind = obj.get("type").and_then(|t| {
            t.as_i64().or_else(|| {
                // V8 may encode small integers as doubles.
                t.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15).map(|f| f as i64)
            })
        });
        let s = |k: &str| obj.get(k).and_then(Value::as_str);
        Some(AdapterFrame { kind, uid: s("uid"), nsp: s("nsp"), requester_uid: s("requesterUid") })
    }

    /// Whether this frame is a response addressed to one requester.
    pub fn is_routed_response(&self) -> bool {
        self.uid.is_some()
            && matches!(self.kind, Some(kind::FETCH_SOCKETS_RESPONSE | kind::SERVER_SIDE_EMIT_RESPONSE))
    }
}

/// The adapter's close message for a `(uid, nsp)` whose worker is gone, with the fields in the
/// order the adapter itself writes them (`type, uid, nsp, source`). The daemon encodes it with
/// the V8 codec and sends it to each surviving worker of the app.
pub fn adapter_close_message(uid: &str, nsp: &str) -> Value {
    json!({
        "type": kind::ADAPTER_CLOSE,
        "uid": uid,
        "nsp": nsp,
        "source": ADAPTER_SOURCE,
    })
}

/// Where one frame goes ([`Relay::route`]), in worker order.
#[derive(Debug)]
pub enum Targets<'a> {
    /// A routed response's requester, or nobody.
    One(Option<WorkerId>),
    /// Every worker of the app but the sender.
    Others {
        from: WorkerId,
        all: std::collections::btree_map::Keys<'a, WorkerId, BTreeMap<String, BTreeSet<String>>>,
    },
}

impl Iterator for Targets<'_> {
    type Item = WorkerId;

    fn next(&mut self) -> Option<WorkerId> {
        match self {
            Targets::One(w) => w.take(),
            Targets::Others { from, all } => all.by_ref().copied().find(|w| w != from),
        }
    }
}

/// Relay state for one app's workers.
#[derive(Debug, Default)]
pub struct Relay {
    /// Per worker: the uids it sent and the namespaces seen with each.
    workers: BTreeMap<WorkerId, BTreeMap<String, BTreeSet<String>>>,
    /// uid → the worker that sent it, for response routing.
    owners: HashMap<String, WorkerId>,
}

impl Relay {
    pub fn new() -> Self {
        Relay::default()
    }

    /// A worker of the app was spawned. It receives fan-out from now on (even before it is
    /// sticky-ready: its adapter answers heartbeats as soon as it exists).
    pub fn add_worker(&mut self, id: WorkerId) {
        self.workers.entry(id).or_default();
    }

    pub fn has_worker(&self, id: WorkerId) -> bool {
        self.workers.contains_key(&id)
    }

    /// The app's live workers.
    pub fn workers(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.workers.keys().copied()
    }

    /// The worker that owns `uid`, if any.
    pub fn owner(&self, uid: &str) -> Option<WorkerId> {
        self.owners.get(uid).copied()
    }

    /// Records what `from` revealed and returns where its frame goes, in worker order. A frame
    /// from a worker that isn't (or is no longer) known goes nowhere: a late frame from a dead
    /// worker must not resurrect it as a target.
    pub fn on_frame(&mut self, from: WorkerId, frame: &AdapterFrame<'_>) -> Vec<WorkerId> {
        self.route(from, frame).collect()
    }

    /// [`Relay::on_frame`] without the allocation: the targets as an iterator over the
    /// relay's own table (the relay path runs once per frame).
    pub fn route(&mut self, from: WorkerId, frame: &AdapterFrame<'_>) -> Targets<'_> {
        if !self.workers.contains_key(&from) {
            return Targets::One(None);
        }
        if let Some(uid) = frame.uid {
            if frame.kind == Some(kind::ADAPTER_CLOSE) {
                self.forget(from, uid, frame.nsp);
            } else {
                self.learn(from, uid, frame.nsp);
            }
        }
        if frame.is_routed_response() {
            return Targets::One(frame.requester_uid.and_then(|r| self.owners.get(r).copied()));
        }
        Targets::Others { from, all: self.workers.keys() }
    }

    /// `from` sent a frame with `uid` (and `nsp`). Every frame carries them, so the common case
    /// (both known already) allocates nothing.
    fn learn(&mut self, from: WorkerId, uid: &str, nsp: Option<&str>) {
        let Some(uids) = self.workers.get_mut(&from) else { return };
        if !uids.contains_key(uid) {
            if uids.len() >= MAX_UIDS_PER_WORKER {
                return;
            }
            uids.insert(uid.to_owned(), BTreeSet::new());
        }
        let Some(nsps) = uids.get_mut(uid) else { return };
        if let Some(nsp) = nsp {
            if nsps.len() < MAX_NSPS_PER_UID && !nsps.contains(nsp) {
                nsps.insert(nsp.to_owned());
            }
        }
        let prev = match self.owners.get_mut(uid) {
            Some(owner) => Some(std::mem::replace(owner, from)),
            None => {
                self.owners.insert(uid.to_owned(), from);
                None
            }
        };
        // 64 random bits make a clash unlikely; if one happens the newest sender owns the
        // uid, and the old owner's record goes so its exit won't close it.
        if let Some(prev) = prev.filter(|&p| p != from) {
            if let Some(old) = self.workers.get_mut(&prev) {
                old.remove(uid);
            }
        }
    }

    /// `from`'s adapter for `uid` closed on its own: nothing left to announce for that
    /// namespace.
    fn forget(&mut self, from: WorkerId, uid: &str, nsp: Option<&str>) {
        let Some(uids) = self.workers.get_mut(&from) else { return };
        let Some(nsps) = uids.get_mut(uid) else { return };
        if let Some(nsp) = nsp {
            nsps.remove(nsp);
        }
        if nsps.is_empty() || nsp.is_none() {
            uids.remove(uid);
            if self.owners.get(uid) == Some(&from) {
                self.owners.remove(uid);
            }
        }
    }

    /// Every `(uid, nsp, worker)` known (an in-place upgrade hands them
    /// over); a uid seen without a namespace has an empty one.
    pub fn export_uids(&self) -> Vec<(String, String, WorkerId)> {
        let mut v = Vec::new();
        for (w, uids) in &self.workers {
            for (uid, nsps) in uids {
                if nsps.is_empty() {
                    v.push((uid.clone(), String::new(), *w));
                }
                v.extend(nsps.iter().map(|n| (uid.clone(), n.clone(), *w)));
            }
        }
        v
    }

    /// Restores one entry of [`Relay::export_uids`] for a known worker.
    pub fn import_uid(&mut self, id: WorkerId, uid: &str, nsp: &str) {
        let Some(uids) = self.workers.get_mut(&id) else { return };
        let nsps = uids.entry(uid.to_owned()).or_default();
        if !nsp.is_empty() {
            nsps.insert(nsp.to_owned());
        }
        self.owners.insert(uid.to_owned(), id);
    }

    /// The worker exited. Returns the `(uid, nsp)` pairs for which every surviving worker
    /// ([`Relay::workers`]) must get [`adapter_close_message`].
    pub fn remove_worker(&mut self, id: WorkerId) -> Vec<(String, String)> {
        let Some(uids) = self.workers.remove(&id) else {
            return Vec::new();
        };
        let mut closes = Vec::new();
        for (uid, nsps) in uids {
            if self.owners.get(&uid) == Some(&id) {
                self.owners.remove(&uid);
            }
            closes.extend(nsps.into_iter().map(|nsp| (uid.clone(), nsp)));
        }
        closes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W1: WorkerId = WorkerId(1);
    const W2: WorkerId = WorkerId(2);
    const W3: WorkerId = WorkerId(3);

    fn frame<'a>(kind: i64, uid: &'a str, nsp: &'a str) -> AdapterFrame<'a> {
        AdapterFrame { kind: Some(kind), uid: Some(uid), nsp: Some(nsp), requester_uid: None }
    }

    fn relay3() -> Relay {
        let mut r = Relay::new();
        for w in [W1, W2, W3] {
            r.add_worker(w);
        }
        r
    }

    #[test]
    fn non_responses_go_to_every_other_worker() {
        let mut r = relay3();
        for k in [1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13, 99] {
            assert_eq!(r.on_frame(W2, &frame(k, "u2", "/")), vec![W1, W3], "type {k}");
        }
    }

    #[test]
    fn responses_go_to_the_requester_only() {
        let mut r = relay3();
        r.on_frame(W1, &frame(kind::FETCH_SOCKETS, "u1", "/"));
        r.on_frame(W3, &frame(kind::HEARTBEAT, "u3", "/"));
        for k in [kind::FETCH_SOCKETS_RESPONSE, kind::SERVER_SIDE_EMIT_RESPONSE] {
            let resp = AdapterFrame { requester_uid: Some("u1"), ..frame(k, "u3", "/") };
            assert_eq!(r.on_frame(W3, &resp), vec![W1]);
        }
    }

    #[test]
    fn other_responses_fan_out_like_the_stock_primary() {
        let mut r = relay3();
        r.on_frame(W1, &frame(kind::BROADCAST, "u1", "/"));
        for k in [kind::BROADCAST_CLIENT_COUNT, kind::BROADCAST_ACK] {
            let resp = AdapterFrame { requester_uid: Some("u1"), ..frame(k, "u2", "/") };
            assert_eq!(r.on_frame(W2, &resp), vec![W1, W3]);
        }
    }

    #[test]
    fn response_to_unknown_requester_is_dropped() {
        let mut r = relay3();
        let resp =
            AdapterFrame { requester_uid: Some("nobody"), ..frame(kind::FETCH_SOCKETS_RESPONSE, "u2", "/") };
        assert!(r.on_frame(W2, &resp).is_empty());
        let no_requester = frame(kind::SERVER_SIDE_EMIT_RESPONSE, "u2", "/");
        assert!(r.on_frame(W2, &no_requester).is_empty());
    }

    #[test]
    fn requester_that_exited_gets_nothing() {
        let mut r = relay3();
        r.on_frame(W1, &frame(kind::FETCH_SOCKETS, "u1", "/"));
        r.remove_worker(W1);
        let resp =
            AdapterFrame { requester_uid: Some("u1"), ..frame(kind::FETCH_SOCKETS_RESPONSE, "u2", "/") };
        assert!(r.on_frame(W2, &resp).is_empty());
    }

    #[test]
    fn uidless_frames_from_old_adapters_fan_out() {
        // cluster-adapter 0.2.x: type 8 is its FETCH_SOCKETS request, not a response.
        let mut r = relay3();
        let f = AdapterFrame { kind: Some(8), ..AdapterFrame::default() };
        assert_eq!(r.on_frame(W1, &f), vec![W2, W3]);
    }

    #[test]
    fn frames_from_unknown_workers_go_nowhere() {
        let mut r = relay3();
        r.remove_worker(W3);
        assert!(r.on_frame(W3, &frame(kind::BROADCAST, "u3", "/")).is_empty());
        assert!(!r.has_worker(W3));
        assert_eq!(r.owner("u3"), None);
    }

    #[test]
    fn exit_announces_every_uid_and_namespace() {
        let mut r = relay3();
        r.on_frame(W2, &frame(kind::INITIAL_HEARTBEAT, "aaaa", "/"));
        r.on_frame(W2, &frame(kind::INITIAL_HEARTBEAT, "aaaa", "/"));
        r.on_frame(W2, &frame(kind::INITIAL_HEARTBEAT, "bbbb", "/admin"));
        r.on_frame(W1, &frame(kind::INITIAL_HEARTBEAT, "cccc", "/"));
        let closes = r.remove_worker(W2);
        assert_eq!(
            closes,
            vec![("aaaa".to_string(), "/".to_string()), ("bbbb".to_string(), "/admin".to_string())]
        );
        assert_eq!(r.workers().collect::<Vec<_>>(), vec![W1, W3]);
        assert_eq!(r.owner("aaaa"), None);
        assert_eq!(r.owner("cccc"), Some(W1));
        assert!(r.remove_worker(W2).is_empty());
    }

    #[test]
    fn a_closed_adapter_is_not_announced_again() {
        let mut r = relay3();
        r.on_frame(W2, &frame(kind::HEARTBEAT, "aaaa", "/"));
        r.on_frame(W2, &frame(kind::HEARTBEAT, "bbbb", "/x"));
        assert_eq!(r.on_frame(W2, &frame(kind::ADAPTER_CLOSE, "bbbb", "/x")), vec![W1, W3]);
        assert_eq!(r.owner("bbbb"), None);
        assert_eq!(r.remove_worker(W2), vec![("aaaa".to_string(), "/".to_string())]);
    }

    #[test]
    fn uid_tracking_is_bounded() {
        let mut r = relay3();
        for i in 0..(MAX_UIDS_PER_WORKER + 10) {
            let uid = format!("{i:016x}");
            r.on_frame(W1, &frame(kind::INITIAL_HEARTBEAT, &uid, "/"));
        }
        assert_eq!(r.remove_worker(W1).len(), MAX_UIDS_PER_WORKER);
    }

    #[test]
    fn close_message_has_the_adapter_fields_in_order() {
        let v = adapter_close_message("59186b404b17233b", "/");
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"type":13,"uid":"59186b404b17233b","nsp":"/","source":"_sio_adapter"}"#
        );
        let f = AdapterFrame::from_json(&v).unwrap();
        assert_eq!(f.kind, Some(kind::ADAPTER_CLOSE));
        assert_eq!(f.uid, Some("59186b404b17233b"));
        assert_eq!(f.nsp, Some("/"));
    }

    #[test]
    fn from_json_reads_only_adapter_messages() {
        let v = serde_json::json!({"type": 10.0, "data": {"x": 1}, "uid": "u", "nsp": "/",
                                   "source": "_sio_adapter", "requesterUid": "r"});
        let f = AdapterFrame::from_json(&v).unwrap();
        assert_eq!(f.kind, Some(10));
        assert_eq!(f.requester_uid, Some("r"));
        assert!(AdapterFrame::from_json(&serde_json::json!({"type": "sticky:connection"})).is_none());
        assert!(AdapterFrame::from_json(&serde_json::json!("_sio_adapter")).is_none());
        let odd = serde_json::json!({"type": "x", "uid": 5, "source": "_sio_adapter"});
        assert_eq!(AdapterFrame::from_json(&odd), Some(AdapterFrame::default()));
    }
}
