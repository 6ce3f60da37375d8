//! One listening socket shared by the workers of an app, with Node's
//! round-robin hand-out (`RoundRobinHandle`): each accepted connection goes
//! to the next free worker as `newconn` with the fd; a worker has at most one
//! offer outstanding; a refused offer (`accepted: false`), a failed hand-off
//! or a worker that dies mid-offer puts the connection back at the front of
//! the queue. Nothing the daemon accepted is dropped while a worker is, or
//! is about to be, there to take it.

use super::bind::Bound;
use super::{next_seq, ListenerId};
use crate::state::SharedRef;
use node_ipc::{HandleOutcome, HandleType, Sender, Value};
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Connections waiting for a worker at most; beyond, new ones are closed.
const MAX_PENDING: usize = 4096;
/// How long a listener whose workers all went away (expecting replacements)
/// keeps accepting and queueing.
const LINGER: Duration = Duration::from_secs(10);

pub enum LCtl {
    Add(u32, Sender),
    Remove { wid: u32, linger: bool },
    Drain(u32),
    Reply { wid: u32, seq: u64, accepted: bool },
    HandoffFailed { wid: u32, seq: u64 },
}

struct Slot {
    wid: u32,
    tx: Sender,
    busy: Option<(u64, OwnedFd)>,
    draining: bool,
}

struct Listener {
    shared: SharedRef,
    id: ListenerId,
    me: mpsc::UnboundedSender<LCtl>,
    slots: Vec<Slot>,
    next: usize,
    pending: VecDeque<OwnedFd>,
    linger_until: Option<Instant>,
}

pub fn spawn(shared: SharedRef, id: ListenerId, bound: Bound) -> mpsc::UnboundedSender<LCtl> {
    let (tx, rx) = mpsc::unbounded_channel();
    let l = Listener {
        shared,
        id,
        me: tx.clone(),
        slots: Vec::new(),
        next: 0,
        pending: VecDeque::new(),
        linger_until: None,
    };
    tokio::spawn(l.run(bound, rx));
    // The registry keeps the only long-lived sender; the task keeps a clone
    // for its own hand-off callbacks, which never outlive an offer.
    tx
}

async fn accept(bound: &Bound) -> std::io::Result<OwnedFd> {
    match bound {
        Bound::Tcp(l) => {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok(s.into_std()?.into())
        }
        Bound::Unix(l, _) => {
            let (s, _) = l.accept().await?;
            Ok(s.into_std()?.into())
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
                    super::linger_expired(&self.shared, &self.id);
                    if self.closed() { return; }
                }
            }
            self.dispatch();
        }
    }

    fn closed(&self) -> bool {
        !self.shared.cluster().listeners.contains_key(&self.id)
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
                    if let Some((seq, fd)) = s.busy {
                        self.shared.cluster().newconn.remove(&seq);
                        self.pending.push_front(fd);
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
                    if s.busy.as_ref().is_some_and(|(b, _)| *b == seq) {
                        if let Some((_, fd)) = s.busy.take() {
                            if !accepted {
                                self.pending.push_front(fd);
                            }
                            // Accepted: the worker owns the connection; our
                            // copy closes here.
                        }
                    }
                }
            }
            LCtl::HandoffFailed { wid, seq } => {
                self.shared.cluster().newconn.remove(&seq);
                if let Some(s) = self.slots.iter_mut().find(|s| s.wid == wid) {
                    if s.busy.as_ref().is_some_and(|(b, _)| *b == seq) {
                        if let Some((_, fd)) = s.busy.take() {
                            self.pending.push_front(fd);
                        }
                    }
                }
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
        let dup = match fd.try_clone() {
            Ok(d) => d,
            Err(_) => {
                // Out of descriptors: keep the connection queued and retry on
                // the next event rather than dropping it.
                self.pending.push_front(fd);
                return;
            }
        };
        let seq = next_seq();
        let key = self.id.1.clone();
        let msg = Value::object([
            ("cmd", Value::from("NODE_CLUSTER")),
            ("act", Value::from("newconn")),
            ("key", Value::from(key)),
            ("seq", Value::from(seq)),
        ]);
        self.shared.cluster().newconn.insert(seq, self.id.clone());
        let slot = &mut self.slots[i];
        let wid = slot.wid;
        let reply = slot.tx.send_handle(&msg, HandleType::NetNative, dup);
        slot.busy = Some((seq, fd));
        let me = self.me.clone();
        tokio::spawn(async move {
            match reply.await {
                HandleOutcome::Acked(dup) => drop(dup),
                _ => {
                    let _ = me.send(LCtl::HandoffFailed { wid, seq });
                }
            }
        });
    }
}
