//! The publisher's queues, pure (time is passed in): entries waiting for Redis, and entries
//! already published, kept a while in case Redis comes back without its data.
//!
//! Both are bounded in count and bytes. A waiting entry older than [`Limits::max_wait`] is
//! dropped and counted rather than delivered that late: past the bound Redis was gone too long
//! for the receivers' adapters to still expect it (their requests time out after 5 s).

use super::entry::Entry;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_pending: usize,
    pub max_pending_bytes: usize,
    pub max_wait: Duration,
    pub keep_recent: Duration,
    pub max_recent: usize,
    pub max_recent_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending: 100_000,
            max_pending_bytes: 64 << 20,
            max_wait: Duration::from_secs(30),
            keep_recent: Duration::from_secs(10),
            max_recent: 100_000,
            max_recent_bytes: 64 << 20,
        }
    }
}

struct Item {
    at: Instant,
    entry: Entry,
}

fn size(e: &Entry) -> usize {
    e.frame.len() + e.group.len() + 64
}

pub struct Outbox {
    limits: Limits,
    pending: VecDeque<Item>,
    pending_bytes: usize,
    recent: VecDeque<Item>,
    recent_bytes: usize,
}

impl Outbox {
    pub fn new(limits: Limits) -> Self {
        Outbox {
            limits,
            pending: VecDeque::new(),
            pending_bytes: 0,
            recent: VecDeque::new(),
            recent_bytes: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Entries not yet acknowledged by Redis.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Queues an entry; returns how many old ones were dropped to make room.
    pub fn push(&mut self, entry: Entry, now: Instant) -> u64 {
        self.pending_bytes += size(&entry);
        self.pending.push_back(Item { at: now, entry });
        let mut dropped = 0;
        while self.pending.len() > self.limits.max_pending
            || self.pending_bytes > self.limits.max_pending_bytes
        {
            let Some(it) = self.pending.pop_front() else { break };
            self.pending_bytes -= size(&it.entry);
            dropped += 1;
        }
        dropped
    }

    /// Drops the waiting entries older than `max_wait`; returns how many.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let mut dropped = 0;
        while self
            .pending
            .front()
            .is_some_and(|it| now.saturating_duration_since(it.at) > self.limits.max_wait)
        {
            if let Some(it) = self.pending.pop_front() {
                self.pending_bytes -= size(&it.entry);
                dropped += 1;
            }
        }
        dropped
    }

    /// The next entries to publish, oldest first.
    pub fn batch(&self, n: usize) -> impl Iterator<Item = &Entry> {
        self.pending.iter().take(n).map(|it| &it.entry)
    }

    /// The first `n` entries were published.
    pub fn published(&mut self, n: usize, now: Instant) {
        for _ in 0..n {
            let Some(it) = self.pending.pop_front() else { break };
            self.pending_bytes -= size(&it.entry);
            self.recent_bytes += size(&it.entry);
            self.recent.push_back(Item { at: now, entry: it.entry });
        }
        while self.recent.len() > self.limits.max_recent
            || self.recent_bytes > self.limits.max_recent_bytes
            || self
                .recent
                .front()
                .is_some_and(|it| now.saturating_duration_since(it.at) > self.limits.keep_recent)
        {
            let Some(it) = self.recent.pop_front() else { break };
            self.recent_bytes -= size(&it.entry);
        }
    }

    /// Redis lost its data: the recently published entries go out again, before the
    /// waiting ones (order kept). Returns how many.
    pub fn replay_recent(&mut self, now: Instant) -> usize {
        let n = self.recent.len();
        while let Some(it) = self.recent.pop_back() {
            self.recent_bytes -= size(&it.entry);
            self.pending_bytes += size(&it.entry);
            self.pending.push_front(Item { at: now, entry: it.entry });
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, len: usize) -> Entry {
        Entry {
            node: "a".into(),
            incarnation: "1".into(),
            seq,
            group: "g".into(),
            sender: 1,
            kind: Some(3),
            uid: None,
            nsp: None,
            requester: None,
            to: None,
            json: false,
            frame: vec![0; len],
        }
    }

    fn seqs(o: &Outbox) -> Vec<u64> {
        o.batch(usize::MAX).map(|e| e.seq).collect()
    }

    #[test]
    fn publish_then_replay_keeps_order() {
        let t = Instant::now();
        let mut o = Outbox::new(Limits::default());
        for i in 0..5 {
            o.push(e(i, 10), t);
        }
        assert_eq!(seqs(&o), vec![0, 1, 2, 3, 4]);
        o.published(3, t);
        assert_eq!(seqs(&o), vec![3, 4]);
        assert_eq!(o.replay_recent(t), 3);
        assert_eq!(seqs(&o), vec![0, 1, 2, 3, 4]);
        assert_eq!(o.replay_recent(t), 0);
    }

    #[test]
    fn bounded_by_count_and_bytes() {
        let t = Instant::now();
        let limits = Limits { max_pending: 3, max_pending_bytes: 1000, ..Limits::default() };
        let mut o = Outbox::new(limits);
        let dropped: u64 = (0..5).map(|i| o.push(e(i, 10), t)).sum();
        assert_eq!((dropped, seqs(&o)), (2, vec![2, 3, 4]));
        assert_eq!(o.push(e(9, 900), t), 3);
        assert_eq!(seqs(&o), vec![9]);
    }

    #[test]
    fn waiting_too_long_is_dropped() {
        let t = Instant::now();
        let mut o = Outbox::new(Limits::default());
        o.push(e(0, 1), t);
        o.push(e(1, 1), t + Duration::from_secs(20));
        assert_eq!(o.expire(t + Duration::from_secs(31)), 1);
        assert_eq!(seqs(&o), vec![1]);
        assert_eq!(o.expire(t + Duration::from_secs(31)), 0);
    }

    #[test]
    fn recent_is_kept_ten_seconds() {
        let t = Instant::now();
        let mut o = Outbox::new(Limits::default());
        o.push(e(0, 1), t);
        o.published(1, t);
        o.push(e(1, 1), t);
        o.published(1, t + Duration::from_secs(11));
        assert_eq!(o.replay_recent(t + Duration::from_secs(11)), 1);
        assert_eq!(seqs(&o), vec![1]);
    }
}
