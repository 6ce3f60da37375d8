//! The contract between the supervisor and whoever serves a child's IPC
//! channel. The supervisor spawns a child with a channel, hands the channel
//! to a [`WorkerHost`] and from then on only learns [`WorkerEvent`]s and
//! asks the host to drain, detach or ask the worker to exit. The cluster
//! primary ([`crate::cluster::Primary`]) is the host in the daemon;
//! [`NoIpcHost`] serves tests of processes without a channel. Nothing here
//! knows which protocols a worker speaks on its channel.

use corral_proto::AppSpec;
use node_ipc::{Receiver, Sender};
use std::time::Duration;
use tokio::sync::mpsc;

/// Something a running child told its host, forwarded to its actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// `process.send('ready')`.
    Ready,
    /// A cluster worker's `listening`.
    Listening,
    /// A cluster worker's `online`.
    Online,
    /// The worker can take traffic by a route other than `listen()` (its
    /// first message of a protocol the host balances): counts as listening
    /// for a reload.
    Serving,
    /// `{node_version}` sent by the app.
    NodeVersion(String),
}

/// How to ask a worker to exit on its own before signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitRequest {
    /// The `'shutdown'` message (pm2's `shutdown_with_message`).
    Shutdown,
    /// Node's `disconnect`: close every server, exit once idle.
    Disconnect,
}

/// How a worker that a reload replaced is retired, decided by its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retirement {
    /// Let the worker's open clients finish on it for at most this long
    /// (while [`WorkerHost::open_clients`] is non-zero) before asking it to
    /// exit.
    pub finish_within: Option<Duration>,
    /// `disconnect` makes this worker exit; when false, go straight to the
    /// kill signal.
    pub disconnect: bool,
}

/// Who a freshly spawned worker is.
#[derive(Debug, Clone, Copy)]
pub struct WorkerInfo<'a> {
    pub pm_id: u32,
    pub pid: i32,
    /// `name:pm_id`, for log lines.
    pub label: &'a str,
    pub app: &'a AppSpec,
}

/// What the supervisor needs from the owner of worker channels. Every
/// method is synchronous and short (no lock across an await behind it).
pub trait WorkerHost: Send + Sync {
    /// A fresh worker id (Node's `NODE_UNIQUE_ID`), unique for the host's
    /// life.
    fn alloc_worker_id(&self) -> u32;
    /// Takes over a spawned worker's channel: reads it until it closes and
    /// sends what the worker says to `events`.
    fn attach(
        &self,
        wid: u32,
        who: WorkerInfo<'_>,
        tx: Sender,
        rx: Receiver,
        events: mpsc::UnboundedSender<WorkerEvent>,
    );
    /// No new connections or sessions for this worker (stop, reload);
    /// `replaced`: a replacement follows, keep its listeners for it.
    fn drain(&self, wid: u32, replaced: bool);
    /// The worker exited. `linger`: a replacement is expected soon, so its
    /// listeners keep queueing connections instead of closing.
    fn detach(&self, wid: u32, linger: bool);
    /// How to retire this worker after a reload replaced it.
    fn retirement(&self, wid: u32) -> Retirement;
    /// Clients still served by this worker (kept open during retirement).
    fn open_clients(&self, wid: u32) -> usize;
    /// Asks the worker to exit on its own; false if the request could not
    /// be sent.
    fn ask_exit(&self, wid: u32, how: ExitRequest) -> bool;
    /// The worker's health checks say it is ready (or no longer): a worker
    /// that is not ready gets no new connections or sessions while another
    /// one is ready; its existing sessions keep reaching it. A worker whose
    /// app gates readiness (`AppSpec::health`) starts not ready.
    fn set_ready(&self, wid: u32, ready: bool) {
        let _ = (wid, ready);
    }
    /// A connection to this worker's server on `port`, for a health probe:
    /// `None` when the worker has no listener on that port through the host.
    /// Cluster workers share their listeners (a reload briefly has two
    /// workers on one port), so a probe connecting to the port could reach
    /// another worker; the host hands this one connection to `wid` itself.
    fn connect_probe(&self, wid: u32, port: u16) -> Option<ProbeConnect> {
        let _ = (wid, port);
        None
    }
}

/// A probe connection being made (see [`WorkerHost::connect_probe`]).
pub type ProbeConnect =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<std::net::TcpStream>> + Send>>;

/// A host that ignores every channel: the worker sees its channel close
/// at once. For tests of processes that need no IPC.
#[derive(Debug, Default)]
pub struct NoIpcHost {
    next: std::sync::atomic::AtomicU32,
}

impl WorkerHost for NoIpcHost {
    fn alloc_worker_id(&self) -> u32 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }
    fn attach(
        &self,
        _: u32,
        _: WorkerInfo<'_>,
        _: Sender,
        _: Receiver,
        _: mpsc::UnboundedSender<WorkerEvent>,
    ) {
    }
    fn drain(&self, _: u32, _: bool) {}
    fn detach(&self, _: u32, _: bool) {}
    fn retirement(&self, _: u32) -> Retirement {
        Retirement { finish_within: None, disconnect: false }
    }
    fn open_clients(&self, _: u32) -> usize {
        0
    }
    fn ask_exit(&self, _: u32, _: ExitRequest) -> bool {
        false
    }
}
