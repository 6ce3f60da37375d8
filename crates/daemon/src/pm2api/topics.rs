//! The pm2 bus's broadcast channels and publishing, shared by pub.sock's
//! server and the RPC front-end.

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

static STARTED_AT: OnceLock<u64> = OnceLock::new();

/// When the pm2 protocols started serving (epoch ms; `getReport`).
pub fn started_at() -> u64 {
    *STARTED_AT.get_or_init(crate::timefmt::now_ms)
}
