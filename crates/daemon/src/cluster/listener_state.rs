//! The decisions of a shared listener, without I/O: which worker gets the
//! next connection, what happens to a connection whose offer failed, was
//! refused, or whose worker left. Node's `RoundRobinHandle` is the model:
//! each accepted connection goes to the next free worker, a worker has at
//! most one offer outstanding, and a connection comes back to the front of
//! the queue whenever its offer does not end in `accepted: true`.
//!
//! An offer ends only once both halves are in, in either order: the
//! descriptor back from the channel (after the worker's ACK) and the
//! worker's `accepted` reply. Generic over the connection type so tests use
//! plain numbers; the listener task uses descriptors.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// One offer in flight.
#[derive(Debug)]
struct Offer<C> {
    seq: u64,
    /// Back from the channel (ACKed), kept until the reply says whether to
    /// re-offer it.
    conn: Option<C>,
    accepted: Option<bool>,
}

#[derive(Debug)]
struct Slot<C> {
    wid: u32,
    busy: Option<Offer<C>>,
    draining: bool,
    /// Its health checks say it is not ready (see [`ListenerState::set_ready`]).
    unready: bool,
}

/// A connection to hand to a worker now (as `newconn` with sequence `seq`).
#[derive(Debug, PartialEq, Eq)]
pub struct Handout<C> {
    pub wid: u32,
    pub seq: u64,
    pub conn: C,
}

#[derive(Debug)]
pub struct ListenerState<C> {
    slots: Vec<Slot<C>>,
    next: usize,
    pending: VecDeque<C>,
    max_pending: usize,
    linger_until: Option<Instant>,
    /// Offers whose worker left before their connection came back: seq ->
    /// the worker's answer if it gave one (accepted ones are then closed,
    /// the others re-offered).
    orphans: HashMap<u64, Option<bool>>,
}

impl<C> ListenerState<C> {
    /// `max_pending`: connections waiting for a worker at most; beyond,
    /// new ones are refused (closed).
    pub fn new(max_pending: usize) -> Self {
        ListenerState {
            slots: Vec::new(),
            next: 0,
            pending: VecDeque::new(),
            max_pending,
            linger_until: None,
            orphans: HashMap::new(),
        }
    }

    /// A connection was accepted. Returns it back when the queue is full
    /// (the caller closes it).
    pub fn connection(&mut self, conn: C) -> Option<C> {
        if self.pending.len() >= self.max_pending {
            return Some(conn);
        }
        self.pending.push_back(conn);
        None
    }

    /// A worker joined (its `queryServer` was answered). Ends any linger.
    pub fn add(&mut self, wid: u32) {
        self.linger_until = None;
        if !self.slots.iter().any(|s| s.wid == wid) {
            self.slots.push(Slot { wid, busy: None, draining: false, unready: false });
        }
    }

    /// A worker left. Its outstanding connection is re-offered unless it
    /// said it took it. `linger_until`: when the last worker leaves and a
    /// replacement is expected, keep queueing until then.
    pub fn remove(&mut self, wid: u32, linger_until: Option<Instant>) {
        if let Some(i) = self.slots.iter().position(|s| s.wid == wid) {
            let s = self.slots.remove(i);
            if let Some(offer) = s.busy {
                match offer.conn {
                    Some(c) if offer.accepted != Some(true) => self.pending.push_front(c),
                    Some(_) => {}
                    None => {
                        self.orphans.insert(offer.seq, offer.accepted);
                    }
                }
            }
        }
        if self.slots.is_empty() && linger_until.is_some() {
            self.linger_until = linger_until;
        }
    }

    /// No new connections for this worker.
    pub fn drain(&mut self, wid: u32) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.wid == wid) {
            s.draining = true;
        }
    }

    /// The worker's health checks pass (`true`) or not. A worker that is
    /// not ready gets no connections while another worker that is ready
    /// could take them (even if that one is busy now: they wait for it);
    /// when none is ready, readiness is ignored, as without health checks.
    pub fn set_ready(&mut self, wid: u32, ready: bool) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.wid == wid) {
            s.unready = !ready;
        }
    }

    /// The worker's `accepted` reply to offer `seq`.
    pub fn reply(&mut self, wid: u32, seq: u64, accepted: bool) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.wid == wid) {
            if let Some(offer) = s.busy.as_mut().filter(|o| o.seq == seq) {
                offer.accepted = Some(accepted);
            }
            Self::finish(s, &mut self.pending);
        }
    }

    /// The worker ACKed the handle of offer `seq`: the connection is back.
    pub fn acked(&mut self, seq: u64, conn: C) {
        match self.slots.iter_mut().find(|s| s.busy.as_ref().is_some_and(|o| o.seq == seq)) {
            Some(s) => {
                if let Some(o) = s.busy.as_mut() {
                    o.conn = Some(conn);
                }
                Self::finish(s, &mut self.pending);
            }
            None => {
                if self.orphans.remove(&seq) != Some(Some(true)) {
                    self.pending.push_front(conn);
                }
            }
        }
    }

    /// The handle never reached the worker; the connection comes back if
    /// the channel still had it.
    pub fn handoff_failed(&mut self, seq: u64, conn: Option<C>) {
        self.orphans.remove(&seq);
        if let Some(s) = self.slots.iter_mut().find(|s| s.busy.as_ref().is_some_and(|o| o.seq == seq)) {
            s.busy = None;
        }
        if let Some(c) = conn {
            self.pending.push_front(c);
        }
    }

    /// When the linger ends, if lingering.
    pub fn linger_until(&self) -> Option<Instant> {
        self.linger_until
    }

    /// The linger time is up (the owner decides whether to close).
    pub fn linger_over(&mut self) {
        self.linger_until = None;
    }

    /// Offers a worker has not answered yet.
    pub fn offers_in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.busy.is_some()).count()
    }

    /// Connections waiting for a worker.
    pub fn queued(&self) -> usize {
        self.pending.len()
    }

    /// Hands out queued connections, round robin, to workers that are free,
    /// not draining and `usable`; each hand-out makes its worker busy.
    pub fn dispatch(
        &mut self,
        usable: impl Fn(u32) -> bool,
        mut next_seq: impl FnMut() -> u64,
    ) -> Vec<Handout<C>> {
        let mut out = Vec::new();
        let ready_only = self.slots.iter().any(|s| !s.draining && !s.unready && usable(s.wid));
        while !self.pending.is_empty() {
            let n = self.slots.len();
            let Some(i) = (0..n).map(|k| (self.next + k) % n).find(|&i| {
                let s = &self.slots[i];
                s.busy.is_none() && !s.draining && !(ready_only && s.unready) && usable(s.wid)
            }) else {
                break;
            };
            self.next = (i + 1) % n.max(1);
            let Some(conn) = self.pending.pop_front() else { break };
            let seq = next_seq();
            self.slots[i].busy = Some(Offer { seq, conn: None, accepted: None });
            out.push(Handout { wid: self.slots[i].wid, seq, conn });
        }
        out
    }

    /// Ends an offer once both its connection and the worker's answer are
    /// back: accepted drops our copy, refused re-offers it.
    fn finish(s: &mut Slot<C>, pending: &mut VecDeque<C>) {
        if s.busy.as_ref().is_some_and(|o| o.conn.is_some() && o.accepted.is_some()) {
            if let Some(Offer { conn: Some(c), accepted: Some(false), .. }) = s.busy.take() {
                pending.push_front(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Seq(u64);
    impl Seq {
        fn next(&mut self) -> u64 {
            self.0 += 1;
            self.0
        }
    }

    fn all(_: u32) -> bool {
        true
    }

    fn two_workers() -> (ListenerState<u32>, Seq) {
        let mut l = ListenerState::new(16);
        l.add(1);
        l.add(2);
        (l, Seq(0))
    }

    #[test]
    fn round_robin_one_offer_per_worker() {
        let (mut l, mut seq) = two_workers();
        for c in 100..103 {
            assert_eq!(l.connection(c), None);
        }
        let out = l.dispatch(all, || seq.next());
        assert_eq!(out, vec![Handout { wid: 1, seq: 1, conn: 100 }, Handout { wid: 2, seq: 2, conn: 101 }]);
        assert_eq!(l.queued(), 1, "both busy: the third waits");
        // Worker 1 finishes (ACK then accepted): it gets the next one.
        l.acked(1, 100);
        l.reply(1, 1, true);
        let out = l.dispatch(all, || seq.next());
        assert_eq!(out, vec![Handout { wid: 1, seq: 3, conn: 102 }]);
    }

    #[test]
    fn the_reply_and_the_ack_may_come_in_either_order() {
        let (mut l, mut seq) = two_workers();
        l.connection(7);
        let h = l.dispatch(all, || seq.next()).remove(0);
        l.reply(h.wid, h.seq, false);
        assert_eq!(l.queued(), 0, "not re-offered before the connection is back");
        l.acked(h.seq, 7);
        assert_eq!(l.queued(), 1, "refused: back in the queue");
        // The refusing worker is free again; round robin moves on to 2.
        let out = l.dispatch(all, || seq.next());
        assert_eq!(out[0].wid, 2);
        assert_eq!(out[0].conn, 7);
    }

    #[test]
    fn a_failed_handoff_comes_back_first() {
        let (mut l, mut seq) = two_workers();
        l.connection(1);
        l.connection(2);
        l.connection(3);
        let out = l.dispatch(all, || seq.next());
        l.handoff_failed(out[0].seq, Some(out[0].conn));
        let again = l.dispatch(all, || seq.next());
        assert_eq!(again[0].conn, 1, "re-offered before the newer connection 3");
    }

    #[test]
    fn a_worker_that_leaves_mid_offer_loses_nothing_it_did_not_accept() {
        let (mut l, mut seq) = two_workers();
        l.connection(10);
        l.connection(11);
        let out = l.dispatch(all, || seq.next());
        // Worker 1 left before its connection came back: an orphan.
        l.remove(1, None);
        l.acked(out[0].seq, 10);
        assert_eq!(l.queued(), 1, "never accepted: re-offered");
        // Worker 2 accepted, then left before the ACK: dropped, not doubled.
        l.reply(2, out[1].seq, true);
        l.remove(2, None);
        l.acked(out[1].seq, 11);
        assert_eq!(l.queued(), 1);
        // Worker 3 had the connection back but no answer yet when it left.
        l.add(3);
        let h = l.dispatch(all, || seq.next()).remove(0);
        l.acked(h.seq, h.conn);
        l.remove(3, None);
        assert_eq!(l.queued(), 1);
    }

    #[test]
    fn unready_workers_get_nothing_while_a_ready_one_exists() {
        let mut l = ListenerState::new(16);
        l.add(1);
        l.add(2);
        l.set_ready(1, false);
        let mut seq = 0;
        let mut next = || {
            seq += 1;
            seq
        };
        for c in 0..3 {
            assert!(l.connection(c).is_none());
        }
        let h = l.dispatch(|_| true, &mut next);
        assert_eq!(h.iter().map(|h| h.wid).collect::<Vec<_>>(), vec![2]);
        // Worker 2 is busy: the rest waits for it rather than go to 1.
        assert!(l.dispatch(|_| true, &mut next).is_empty());
        l.reply(2, h[0].seq, true);
        l.acked(h[0].seq, h[0].conn);
        assert_eq!(l.dispatch(|_| true, &mut next).iter().map(|h| h.wid).collect::<Vec<_>>(), vec![2]);
        // Nobody ready: readiness is ignored, as without health checks.
        l.set_ready(2, false);
        l.drain(2);
        assert_eq!(l.dispatch(|_| true, &mut next).iter().map(|h| h.wid).collect::<Vec<_>>(), vec![1]);
        l.set_ready(7, true);
    }

    #[test]
    fn draining_and_unusable_workers_get_nothing() {
        let (mut l, mut seq) = two_workers();
        l.drain(1);
        l.connection(5);
        l.connection(6);
        let out = l.dispatch(|w| w != 2, || seq.next());
        assert!(out.is_empty());
        assert_eq!(l.queued(), 2);
        let out = l.dispatch(all, || seq.next());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].wid, 2);
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut l: ListenerState<u32> = ListenerState::new(2);
        assert_eq!(l.connection(1), None);
        assert_eq!(l.connection(2), None);
        assert_eq!(l.connection(3), Some(3));
    }

    #[test]
    fn the_last_worker_leaving_lingers_until_one_joins() {
        let (mut l, mut seq) = two_workers();
        let until = Instant::now() + Duration::from_secs(10);
        l.remove(1, Some(until));
        assert_eq!(l.linger_until(), None, "one worker left: no linger");
        l.remove(2, Some(until));
        assert_eq!(l.linger_until(), Some(until));
        l.connection(9);
        assert!(l.dispatch(all, || seq.next()).is_empty(), "queued meanwhile");
        l.add(3);
        assert_eq!(l.linger_until(), None);
        assert_eq!(l.dispatch(all, || seq.next())[0].conn, 9);
        l.remove(3, None);
        assert_eq!(l.linger_until(), None, "no replacement expected: no linger");
    }

    #[test]
    fn late_answers_for_unknown_offers_change_nothing() {
        let (mut l, mut seq) = two_workers();
        l.reply(1, 99, true);
        l.reply(42, 1, false);
        l.connection(1);
        let out = l.dispatch(all, || seq.next());
        assert_eq!(out.len(), 1);
        l.reply(out[0].wid, out[0].seq + 1, false);
        l.acked(out[0].seq, out[0].conn);
        assert_eq!(l.queued(), 0, "still waiting for its own reply");
    }
}
