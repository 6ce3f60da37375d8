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
use node_ipc::{HandleOutcome, HandleReply, HandleType, Sender, Value};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
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

/// Called when the linger time is up with no worker back: the owner closes
/// the listener (drops its sender) unless a worker joined meanwhile.
pub type OnLingerOver = Box<dyn Fn() + Send + Sync>;

struct Listener {
    key: String,
    state: ListenerState<OwnedFd>,
    senders: HashMap<u32, Sender>,
    /// Offers whose descriptor is on its way: at most one per worker (an
    /// offer ends only with the worker's reply), so a short list polled in
    /// this task, not a task per hand-off.
    replies: Vec<(u64, HandleReply)>,
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
    let l = Listener {
        key,
        state: ListenerState::new(MAX_PENDING),
        senders: HashMap::new(),
        replies: Vec::new(),
        on_linger_over,
        busy,
    };
    tokio::spawn(l.run(bound, rx));
    tx
}

/// Most connections accepted per wake-up before the listener looks at its
/// controls and replies again: a burst is taken in a few passes, without one
/// wake-up (and one poll of every branch) per connection, and a flood cannot
/// starve the ACKs that free the workers.
const ACCEPT_BATCH: usize = 64;

/// How one wake-up of the listening socket went.
enum Accepted {
    /// Connections were taken (or the backlog was empty).
    Some,
    /// accept4 failed for another reason than an empty backlog.
    Err(std::io::Error),
}

/// Accepts what the backlog holds, with accept4 (non-blocking,
/// close-on-exec), up to [`ACCEPT_BATCH`], without registering the
/// connections anywhere: the daemon only passes them on. Readiness is
/// cleared only when accept4 says the backlog is empty, so a batch cut short
/// is resumed at the next pass without waiting for the kernel.
async fn accept_batch(l: &AsyncFd<Bound>, state: &mut ListenerState<OwnedFd>) -> Accepted {
    use std::os::fd::AsRawFd;
    let mut guard = match l.readable().await {
        Ok(g) => g,
        Err(e) => return Accepted::Err(e),
    };
    let fd = l.get_ref().as_raw_fd();
    for _ in 0..ACCEPT_BATCH {
        match super::bind::accept4(fd) {
            // A full queue hands the connection back: dropping it closes it.
            Ok(conn) => drop(state.connection(conn)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                guard.clear_ready();
                return Accepted::Some;
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Accepted::Err(e),
        }
    }
    Accepted::Some
}

/// The first settled hand-off among `replies`, taken out of the list: what
/// the worker's channel says about the descriptor.
fn poll_replies(
    replies: &mut Vec<(u64, HandleReply)>,
    cx: &mut Context<'_>,
) -> Poll<(u64, Option<OwnedFd>, bool)> {
    for i in 0..replies.len() {
        if let Poll::Ready(outcome) = Pin::new(&mut replies[i].1).poll(cx) {
            let (seq, _) = replies.swap_remove(i);
            return Poll::Ready(match outcome {
                HandleOutcome::Acked(fd) => (seq, Some(fd), true),
                HandleOutcome::Nacked(fd) | HandleOutcome::Closed(fd) | HandleOutcome::Failed(_, fd) => {
                    (seq, Some(fd), false)
                }
                _ => (seq, None, false),
            });
        }
    }
    Poll::Pending
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Listener {
    async fn run(mut self, bound: Bound, mut rx: mpsc::UnboundedReceiver<LCtl>) {
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
            let paused = crate::upgrade::pause::is_paused();
            let linger = self.state.linger_until().map(Instant::from_std);
            // Replies and controls first: they free workers for the
            // connections already queued.
            tokio::select! {
                biased;
                ctl = rx.recv() => match ctl {
                    Some(c) => {
                        self.on_ctl(c);
                        // Everything else queued meanwhile, in one pass.
                        while let Ok(c) = rx.try_recv() {
                            self.on_ctl(c);
                        }
                    }
                    // The owner dropped its sender: the listener is closed.
                    None => return,
                },
                (seq, fd, acked) = std::future::poll_fn(|cx| poll_replies(&mut self.replies, cx)) => {
                    match (fd, acked) {
                        (Some(fd), true) => self.state.acked(seq, fd),
                        (fd, _) => self.state.handoff_failed(seq, fd),
                    }
                }
                // An in-place upgrade stops accepting: new connections
                // wait in the kernel's backlog for the next image.
                _ = crate::upgrade::pause::resumed(), if paused => {}
                _ = crate::upgrade::pause::paused(), if !paused => {}
                acc = accept_batch(&bound, &mut self.state), if !paused => {
                    if let Accepted::Err(e) = acc {
                        crate::dlog::error(&format!("accept on {} failed: {e}", self.key));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                _ = sleep_opt(linger) => {
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
            self.replies.push((h.seq, reply));
        }
    }
}
