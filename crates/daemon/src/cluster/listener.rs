//! One listening socket shared by the workers of an app, with Node's
//! round-robin hand-out (`RoundRobinHandle`): each accepted connection goes
//! to the next free worker as `newconn` with the fd; a worker has at most one
//! offer outstanding; a refused offer (`accepted: false`), a failed hand-off
//! or a worker that dies mid-offer puts the connection back at the front of
//! the queue. Nothing the daemon accepted is dropped while a worker is, or
//! is about to be, there to take it.

use super::bind::Bound;
use super::Primary;
use super::{next_seq, ListenerId};
use node_ipc::{HandleOutcome, HandleType, Sender, Value};
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
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

pub enum LCtl {
    Add(u32, Sender),
    Remove {
        wid: u32,
        linger: bool,
    },
    Drain(u32),
    Reply {
        wid: u32,
        seq: u64,
        accepted: bool,
    },
    /// The worker ACKed the handle: our descriptor comes back, kept until
    /// its `accepted` reply says whether to re-offer it.
    Acked {
        seq: u64,
        fd: OwnedFd,
    },
    /// The handle never reached the worker; the descriptor comes back.
    HandoffFailed {
        seq: u64,
        fd: Option<OwnedFd>,
    },
}

/// One offer in flight. The descriptor travels to the worker and comes back
/// with the ACK (no dup); the offer ends once both the ACK and the worker's
/// `accepted` reply are in, in whichever order the two tasks deliver them.
struct Offer {
    seq: u64,
    fd: Option<OwnedFd>,
    accepted: Option<bool>,
}

struct Slot {
    wid: u32,
    tx: Sender,
    busy: Option<Offer>,
    draining: bool,
}

struct Listener {
    primary: Arc<Primary>,
    id: ListenerId,
    me: mpsc::UnboundedSender<LCtl>,
    slots: Vec<Slot>,
    next: usize,
    pending: VecDeque<OwnedFd>,
    linger_until: Option<Instant>,
    /// Offers whose worker left before their descriptor came back: seq ->
    /// the worker's answer if it gave one (accepted ones are then closed,
    /// others re-offered).
    orphans: std::collections::HashMap<u64, Option<bool>>,
}

pub fn spawn(primary: Arc<Primary>, id: ListenerId, bound: Bound) -> mpsc::UnboundedSender<LCtl> {
    let (tx, rx) = mpsc::unbounded_channel();
    let l = Listener {
        primary,
        id,
        me: tx.clone(),
        slots: Vec::new(),
        next: 0,
        pending: VecDeque::new(),
        linger_until: None,
        orphans: std::collections::HashMap::new(),
    };
    tokio::spawn(l.run(bound, rx));
    // The registry keeps the only long-lived sender; the task keeps a clone
    // for its own hand-off callbacks, which never outlive an offer.
    tx
}

/// Waits for a connection and accepts it with accept4, non-blocking and
/// close-on-exec, without registering it anywhere: the daemon only passes it
/// on to a worker.
async fn accept(l: &AsyncFd<Bound>) -> std::io::Result<OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    loop {
        let mut guard = l.readable().await?;
        let r = guard.try_io(|b| {
            // SAFETY: accept4 with null address pointers; the new fd is ours.
            let fd = unsafe {
                libc::accept4(
                    b.get_ref().as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                // SAFETY: a fresh descriptor nobody else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        });
        match r {
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
    async fn run(mut self, bound: Bound, mut rx: mpsc::UnboundedReceiver<LCtl>) {
        // SAFETY: the AsyncFd owns `bound`, so the fd stays open and the same
        // for the AsyncFd's whole life.
        let bound = match unsafe { AsyncFd::register_with_interest(bound, Interest::READABLE) } {
            Ok(b) => b,
            Err(e) => {
                crate::dlog::error(&format!("listener {} cannot be polled: {e}", self.id.1));
                return;
            }
        };
        loop {
            tokio::select! {
                ctl = rx.recv() => {
                    match ctl {
                        Some(c) => self.on_ctl(c),
                        // Every registry sender is gone: the listener closed.
                        None => return,
                    }
                    // Only the registry's sender and ours remain when the
                    // registry dropped its entry.
                    if self.closed() { return; }
                }
                acc = accept(&bound) => match acc {
                    Ok(fd) => {
                        if self.pending.len() >= MAX_PENDING {
                            drop(fd);
                        } else {
                            self.pending.push_back(fd);
                        }
                    }
                    Err(e) => {
                        crate::dlog::error(&format!("accept on {} failed: {e}", self.id.1));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = sleep_opt(self.linger_until) => {
                    self.linger_until = None;
                    super::linger_expired(&self.primary, &self.id);
                    if self.closed() { return; }
                }
            }
            self.dispatch();
        }
    }

    fn closed(&self) -> bool {
        !self.primary.reg().listeners.contains_key(&self.id)
    }

    fn on_ctl(&mut self, c: LCtl) {
        match c {
            LCtl::Add(wid, tx) => {
                self.linger_until = None;
                if !self.slots.iter().any(|s| s.wid == wid) {
                    self.slots.push(Slot { wid, tx, busy: None, draining: false });
                }
            }
            LCtl::Remove { wid, linger } => {
                if let Some(i) = self.slots.iter().position(|s| s.wid == wid) {
                    let s = self.slots.remove(i);
                    if let Some(offer) = s.busy {
                        self.primary.reg().newconn.remove(&offer.seq);
                        match offer.fd {
                            // The worker is gone: unless it said it took
                            // the connection, someone else gets it.
                            Some(fd) if offer.accepted != Some(true) => self.pending.push_front(fd),
                            Some(_) => {}
                            None => {
                                self.orphans.insert(offer.seq, offer.accepted);
                            }
                        }
                    }
                }
                if self.slots.is_empty() && linger {
                    self.linger_until = Some(Instant::now() + LINGER);
                }
            }
            LCtl::Drain(wid) => {
                if let Some(s) = self.slots.iter_mut().find(|s| s.wid == wid) {
                    s.draining = true;
                }
            }
            LCtl::Reply { wid, seq, accepted } => {
                if let Some(s) = self.slots.iter_mut().find(|s| s.wid == wid) {
                    if let Some(offer) = s.busy.as_mut().filter(|o| o.seq == seq) {
                        offer.accepted = Some(accepted);
                    }
                    Self::finish(s, &mut self.pending);
                }
            }
            LCtl::Acked { seq, fd } => {
                match self.slots.iter_mut().find(|s| s.busy.as_ref().is_some_and(|o| o.seq == seq)) {
                    Some(s) => {
                        if let Some(o) = s.busy.as_mut() {
                            o.fd = Some(fd);
                        }
                        Self::finish(s, &mut self.pending);
                    }
                    None => {
                        if self.orphans.remove(&seq) != Some(Some(true)) {
                            self.pending.push_front(fd);
                        }
                    }
                }
            }
            LCtl::HandoffFailed { seq, fd } => {
                self.primary.reg().newconn.remove(&seq);
                self.orphans.remove(&seq);
                if let Some(s) = self.slots.iter_mut().find(|s| s.busy.as_ref().is_some_and(|o| o.seq == seq))
                {
                    s.busy = None;
                }
                if let Some(fd) = fd {
                    self.pending.push_front(fd);
                }
            }
        }
    }

    /// Ends an offer once both its descriptor and the worker's answer are
    /// back: accepted closes our copy, refused re-offers it.
    fn finish(s: &mut Slot, pending: &mut VecDeque<OwnedFd>) {
        if s.busy.as_ref().is_some_and(|o| o.fd.is_some() && o.accepted.is_some()) {
            if let Some(Offer { fd: Some(fd), accepted: Some(false), .. }) = s.busy.take() {
                pending.push_front(fd);
            }
        }
    }

    fn dispatch(&mut self) {
        while !self.pending.is_empty() {
            let n = self.slots.len();
            let Some(i) = (0..n).map(|k| (self.next + k) % n).find(|&i| {
                let s = &self.slots[i];
                s.busy.is_none() && !s.draining && !s.tx.is_closed()
            }) else {
                return;
            };
            self.next = (i + 1) % n.max(1);
            let Some(fd) = self.pending.pop_front() else { return };
            self.offer(i, fd);
        }
    }

    fn offer(&mut self, i: usize, fd: OwnedFd) {
        let seq = next_seq();
        let key = self.id.1.clone();
        let msg = Value::object([
            ("cmd", Value::from("NODE_CLUSTER")),
            ("act", Value::from("newconn")),
            ("key", Value::from(key)),
            ("seq", Value::from(seq)),
        ]);
        self.primary.reg().newconn.insert(seq, self.id.clone());
        let slot = &mut self.slots[i];
        let reply = slot.tx.send_handle(&msg, HandleType::NetNative, fd);
        slot.busy = Some(Offer { seq, fd: None, accepted: None });
        let me = self.me.clone();
        tokio::spawn(async move {
            let _ = match reply.await {
                HandleOutcome::Acked(fd) => me.send(LCtl::Acked { seq, fd }),
                HandleOutcome::Nacked(fd) | HandleOutcome::Closed(fd) | HandleOutcome::Failed(_, fd) => {
                    me.send(LCtl::HandoffFailed { seq, fd: Some(fd) })
                }
                _ => me.send(LCtl::HandoffFailed { seq, fd: None }),
            };
        });
    }
}
