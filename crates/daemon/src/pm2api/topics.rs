//! The pm2 bus's broadcast channels and publishing, shared by pub.sock's
//! server and the RPC front-end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

/// Frames for pub.sock subscribers that do not come from the daemon's core
/// event bus (app IPC messages, `pm2:kill`), encoded once for all of them.
pub type BusFrame = Arc<Vec<u8>>;

/// The pm2 bus of this daemon (one daemon per process).
static PM2_BUS: OnceLock<broadcast::Sender<BusFrame>> = OnceLock::new();

pub(crate) fn pm2_bus() -> &'static broadcast::Sender<BusFrame> {
    PM2_BUS.get_or_init(|| broadcast::channel(1024).0)
}

/// `axm:reply` answers (pm_id, data) for `pm2 trigger` from Corral's CLI.
static AXM_REPLIES: OnceLock<broadcast::Sender<(u32, serde_json::Value)>> = OnceLock::new();

pub(crate) fn axm_replies() -> &'static broadcast::Sender<(u32, serde_json::Value)> {
    AXM_REPLIES.get_or_init(|| broadcast::channel(256).0)
}

/// Publishes `[s:topic, j:data]` to every pub.sock subscriber, if any.
pub fn publish(topic: &str, data: &serde_json::Value) {
    let bus = pm2_bus();
    if bus.receiver_count() == 0 {
        return;
    }
    if let Ok(f) = axon::rpc::event(topic, &data.to_string()) {
        let _ = bus.send(Arc::new(f));
    }
}

/// `pm2:kill`, once announced: clients still in pub.sock's backlog when the
/// daemon goes down get it too.
static KILL: OnceLock<BusFrame> = OnceLock::new();

/// Subscribers that were sent `pm2:kill`, and how many have written it.
static KILL_TO: AtomicUsize = AtomicUsize::new(0);
static KILL_WRITTEN: AtomicUsize = AtomicUsize::new(0);

/// Announces `pm2:kill` on the bus (once; later calls do nothing). Called
/// before the shutdown starts, whichever way it was asked for.
pub fn announce_kill() {
    let data = serde_json::json!({ "status": "killed", "msg": "pm2 has been killed via CLI" });
    let Ok(f) = axon::rpc::event("pm2:kill", &data.to_string()) else { return };
    let f = Arc::new(f);
    if KILL.set(f.clone()).is_ok() {
        if let Ok(n) = pm2_bus().send(f) {
            KILL_TO.store(n, Ordering::SeqCst);
        }
    }
}

/// A subscriber wrote `pm2:kill` to its client.
pub fn kill_written() {
    KILL_WRITTEN.fetch_add(1, Ordering::SeqCst);
}

/// Waits, at most `limit`, until every subscriber has written `pm2:kill`.
/// pm2's client closes its bus when the daemon's SIGQUIT arrives: sent
/// before the announcement is out, it would cut it off.
pub async fn kill_delivered(limit: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while KILL_WRITTEN.load(Ordering::SeqCst) < KILL_TO.load(Ordering::SeqCst)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// The `pm2:kill` frame, if it was announced.
pub fn kill_frame() -> Option<BusFrame> {
    KILL.get().cloned()
}

static STARTED_AT: OnceLock<u64> = OnceLock::new();

/// When the pm2 protocols started serving (epoch ms; `getReport`).
pub fn started_at() -> u64 {
    *STARTED_AT.get_or_init(crate::timefmt::now_ms)
}
