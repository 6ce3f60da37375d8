//! pm2's own client protocols, served by the daemon so the `pm2` npm
//! package (`require('pm2')`, dashboards, exporters, modules) works against
//! Corral unchanged:
//!
//! - `rpc.sock`: axon `rep` + `pm2-axon-rpc` ([`rpc`]): the methods pm2's
//!   `lib/Daemon.js` exposes, mapped onto the daemon's own request handling,
//!   answered with pm2's data shapes (the `jlist` entry);
//! - `pub.sock`: axon `pub-emitter` ([`bus`]): `process:event`, `log:out`,
//!   `log:err`, `process:msg`, `axm:reply`, `pm2:kill`... translated from the
//!   daemon's event bus and the apps' IPC messages.
//!
//! The wire format is the pure `axon` crate. Both sockets are owner-only
//! (0600) and check the peer's uid (SO_PEERCRED); a malformed frame closes
//! that connection only. @pm2/io's `axm:*` messages are recorded on the
//! process (`ProcInfo::axm`) so `jlist`, `describe` and `trigger` see them.

pub mod bus;
pub mod rpc;
pub mod topics;
pub mod trigger;

pub use topics::{announce_kill, publish, started_at, BusFrame};

use crate::state::SharedRef;
use std::path::Path;
use tokio::net::UnixListener;
use tokio::sync::watch;

/// The two listeners, bound before the daemon announces itself.
pub struct Listeners {
    pub rpc: UnixListener,
    pub pubsub: UnixListener,
}

/// Binds `rpc.sock` and `pub.sock` owner-only. Stale files (nobody
/// listening) were already cleared by the caller's liveness check.
pub fn bind(rpc: &Path, pubsub: &Path) -> std::io::Result<Listeners> {
    Ok(Listeners { rpc: bind_private(rpc)?, pubsub: bind_private(pubsub)? })
}

/// Binds a unix socket that only its owner can connect to: the file is
/// created under a umask that leaves no group/other bits, so there is no
/// window in which another user could connect.
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    // SAFETY: umask only swaps the process's file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let l = l?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves both sockets until shutdown.
pub async fn serve(shared: SharedRef, l: Listeners, shutdown: watch::Sender<bool>) {
    let _ = topics::pm2_bus();
    let _ = started_at();
    let a = tokio::spawn(rpc::serve(shared.clone(), l.rpc, shutdown.clone()));
    let b = tokio::spawn(bus::serve(shared, l.pubsub, shutdown));
    let _ = a.await;
    let _ = b.await;
}
