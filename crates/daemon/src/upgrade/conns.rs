//! The registry of open control connections (corral.sock), for an in-place
//! update: it must know which connections sit between two requests (their
//! descriptors are handed to the next image) and which are in the middle of
//! one (no quiet point yet). `server` registers and marks them; `upgrade`
//! reads the registry. A leaf: it imports nothing of the daemon.

/// What an open control connection is doing, for an in-place update: one
/// between requests is handed to the next image; one in the middle of a
/// request is no quiet point.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Idle,
    Busy,
    /// Asked for the update: answered by the next image, separately.
    Requester,
}

fn conns() -> std::sync::MutexGuard<'static, std::collections::HashMap<u64, (std::os::fd::RawFd, ConnState)>>
{
    static CONNS: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<u64, (std::os::fd::RawFd, ConnState)>>,
    > = std::sync::LazyLock::new(Default::default);
    CONNS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A control connection's entry in the registry, removed when it ends.
pub struct ConnGuard(u64);

impl ConnGuard {
    pub fn new(fd: std::os::fd::RawFd) -> ConnGuard {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        conns().insert(id, (fd, ConnState::Idle));
        ConnGuard(id)
    }
    pub fn set(&self, st: ConnState) {
        if let Some(e) = conns().get_mut(&self.0) {
            e.1 = st;
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        conns().remove(&self.0);
    }
}

/// Control connections in the middle of a request, and the descriptors of
/// those between two requests (an in-place update hands them over).
pub fn control_connections() -> (usize, Vec<std::os::fd::RawFd>) {
    let c = conns();
    let busy = c.values().filter(|(_, st)| *st == ConnState::Busy).count();
    let idle = c.values().filter(|(_, st)| *st == ConnState::Idle).map(|(fd, _)| *fd).collect();
    (busy, idle)
}
