//! One listening socket shared by the workers of an app: the task that
//! accepts connections and hands them out as Node's round-robin primary
//! does. The decisions live in [`ListenerState`]; this task only does the
//! I/O: accept4, `newconn` with the descriptor, the ACK coming back.
//!
//! The task ends when its owner (the cluster primary's registry) drops the
//! control sender; queued connections are then closed.

use super::bind::Bound;
use super::listener_state::ListenerState;
use super::wire::next_seq;
use node_ipc::{HandleOutcome, HandleType, Sender, Value};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Connections waiting for a worker at most; beyond, new ones are closed.
const MAX_PENDING: usize = 4096;
/// How long a listener whose workers all went away (expecting replacements)
/// keeps accepting and queueing.
const LINGER: Duration = Duration::from_secs(10);

/// Controls from the listener's owner.
pub enum LCtl {
    Add(u32, Sender),
    Remove {
        wid: u32,
        linger: bool,
    },
    Drain(u32),
    /// The worker's health checks pass or not (`ListenerState::set_ready`).
    Ready(u32, bool),
    /// The worker's `accepted` reply to a `newconn`.
    Reply {
        wid: u32,
        seq: u64,
        accepted: bool,
    },
}

/// How a hand-off ended, from the channel's side.
enum Outcome {
    /// The worker ACKed the handle: our descriptor comes back, kept until
    /// its `accepted` reply says whether to re-offer it.
    Acked { seq: u64, fd: OwnedFd },
    /// The handle never reached the worker; the descriptor comes back if
    /// the channel still had it.
    Failed { seq: u64, fd: Option<OwnedFd> },
}

/// Called when the linger time is up with no worker back: the owner closes
/// the listener (drops its sender) unless a worker joined meanwhile.
pub type OnLingerOver = Box<dyn Fn() + Send + Sync>;

struct Listener {
    key: String,
    state: ListenerState<OwnedFd>,
    senders: HashMap<u32, Sender>,
    outcomes_tx: mpsc::UnboundedSender<Outcome>,
    on_linger_over: OnLingerOver,
    /// Connections accepted and not settled yet (queued, or offered and
    /// not answered): zero is a quiet point for an in-place upgrade.
    busy: Arc<AtomicUsize>,
}

/// Starts the task for `bound`; `key` is Node's listener key (sent with
/// every `newconn`).
pub fn spawn(key: String, bound: Bound, on_linger_over: OnLingerOver) -> mpsc::UnboundedSender<LCtl> {
    spawn_counted(key, bound, on_linger_over, Arc::default())
}

/// [`spawn`], with the count of unsettled connections kept in `busy`.
pub fn spawn_counted(
    key: String,
    bound: Bound,
    on_linger_over: OnLingerOver,
    busy: Arc<AtomicUsize>,
) -> mpsc::UnboundedSender<LCtl> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
    let l = Listener {
        key,
        state: ListenerState::new(MAX_PENDING),
        senders: HashMap::new(),
        outcomes_tx,
        on_linger_over,
        busy,
    };
    tokio::spawn(l.run(bound, rx, outcomes_rx));
    tx
}

/// Waits for a connection and accepts it with accept4, non-blocking and
/// close-on-exec, without registering it anywhere: the daemon only passes it
/// on to a worker.
async fn accept(l: &AsyncFd<Bound>) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    loop {
        let mut guard = l.readable().await?;
        match guard.try_io(|b| super::bind::accept4(b.get_ref().as_raw_fd())) {
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            Ok(res) => return res,
            Err(_would_block) => continue,
        }
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Listener {
    async fn run(
        mut self,
        bound: Bound,
        mut rx: mpsc::UnboundedReceiver<LCtl>,
        mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    ) {
        // SAFETY: the AsyncFd owns `bound`, so the fd stays open and the same
        // for the AsyncFd's whole life.
        let bound = match unsafe { AsyncFd::register_with_interest(bound, Interest::READABLE) } {
            Ok(b) => b,
            Err(e) => {
                crate::dlog::error(&format!("listener {} cannot be polled: {e}", self.key));
                return;
            }
        };
        loop {
            tokio::select! {
                ctl = rx.recv() => match ctl {
                    Some(c) => self.on_ctl(c),
                    // The owner dropped its sender: the listener is closed.
                    None => return,
                },
                Some(o) = outcomes.recv() => match o {
                    Outcome::Acked { seq, fd } => self.state.acked(seq, fd),
                    Outcome::Failed { seq, fd } => self.state.handoff_failed(seq, fd),
                },
                // An in-place upgrade stops accepting: new connections
                // wait in the kernel's backlog for the next image.
                _ = crate::upgrade::pause::resumed(), if crate::upgrade::pause::is_paused() => {}
                _ = crate::upgrade::pause::paused(), if !crate::upgrade::pause::is_paused() => {}
                acc = accept(&bound), if !crate::upgrade::pause::is_paused() => match acc {
                    // A full queue hands the connection back: dropping it
                    // closes it.
                    Ok(fd) => drop(self.state.connection(fd)),
                    Err(e) => {
                        crate::dlog::error(&format!("accept on {} failed: {e}", self.key));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = sleep_opt(self.state.linger_until().map(Instant::from_std)) => {
                    self.state.linger_over();
                    (self.on_linger_over)();
                }
            }
            self.dispatch();
            self.busy.store(self.state.queued() + self.state.offers_in_flight(), Ordering::Release);
        }
    }

    fn on_ctl(&mut self, c: LCtl) {
        match c {
            LCtl::Add(wid, tx) => {
                self.senders.insert(wid, tx);
                self.state.add(wid);
            }
            LCtl::Remove { wid, linger } => {
                self.senders.remove(&wid);
                self.state.remove(wid, linger.then(|| Instant::now().into_std() + LINGER));
            }
            LCtl::Drain(wid) => self.state.drain(wid),
            LCtl::Ready(wid, ready) => self.state.set_ready(wid, ready),
            LCtl::Reply { wid, seq, accepted } => self.state.reply(wid, seq, accepted),
        }
    }

    fn dispatch(&mut self) {
        let senders = &self.senders;
        let usable = |wid: u32| senders.get(&wid).is_some_and(|s| !s.is_closed());
        for h in self.state.dispatch(usable, next_seq) {
            let Some(tx) = self.senders.get(&h.wid) else {
                self.state.handoff_failed(h.seq, Some(h.conn));
                continue;
            };
            let msg = Value::object([
                ("cmd", Value::from("NODE_CLUSTER")),
                ("act", Value::from("newconn")),
                ("key", Value::from(self.key.clone())),
                ("seq", Value::from(h.seq)),
            ]);
            let reply = tx.send_handle(&msg, HandleType::NetNative, h.conn);
            let outcomes = self.outcomes_tx.clone();
            let seq = h.seq;
            tokio::spawn(async move {
                let _ = match reply.await {
                    HandleOutcome::Acked(fd) => outcomes.send(Outcome::Acked { seq, fd }),
                    HandleOutcome::Nacked(fd) | HandleOutcome::Closed(fd) | HandleOutcome::Failed(_, fd) => {
                        outcomes.send(Outcome::Failed { seq, fd: Some(fd) })
                    }
                    _ => outcomes.send(Outcome::Failed { seq, fd: None }),
                };
            });
        }
    }
}
