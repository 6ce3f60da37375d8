//! The daemon-wide pause of an in-place upgrade: while it is on, no
//! listener accepts (the kernel's backlog holds new connections), no log
//! pump reads (the bytes wait in the pipes) and the upgrade waits for every
//! channel to reach a frame boundary. A leaf: it imports nothing of the
//! daemon, so every owner can check it.

use std::sync::LazyLock;
use tokio::sync::watch;

static PAUSED: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::Sender::new(false));

/// Turns the pause on.
pub fn pause() {
    PAUSED.send_replace(true);
}

/// Turns the pause off (the upgrade was refused or failed: the old image
/// goes on).
pub fn resume() {
    PAUSED.send_replace(false);
}

pub fn is_paused() -> bool {
    *PAUSED.borrow()
}

/// Resolves once the pause is off (at once if it is).
pub async fn resumed() {
    let mut rx = PAUSED.subscribe();
    let _ = rx.wait_for(|p| !*p).await;
}

/// Resolves once the pause is on.
pub async fn paused() {
    let mut rx = PAUSED.subscribe();
    let _ = rx.wait_for(|p| *p).await;
}
