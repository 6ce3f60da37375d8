//! The counters the balancer, the relay and the cluster listeners bump on their hot paths:
//! process-wide relaxed atomics (a few nanoseconds each, no lock, nothing allocated), read
//! only by a scrape. They exist whether or not `PM2_METRICS` is set; counting costs less than
//! checking whether anyone will ever read the count.
//!
//! A leaf module: it imports nothing of the daemon, so every module may bump a counter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// A histogram of durations with fixed bucket bounds (seconds), lock-free.
pub struct Histogram {
    pub bounds: &'static [f64],
    /// Non-cumulative counts per bound; the last slot is above every bound (`+Inf`).
    counts: [AtomicU64; 16],
    sum_ns: AtomicU64,
}

/// A read of a [`Histogram`]: cumulative bucket counts (one per bound, then `+Inf`), the sum
/// in seconds and the count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub const fn new(bounds: &'static [f64]) -> Histogram {
        // At most 15 bounds (checked by the unit test of every histogram we declare).
        #[allow(clippy::declare_interior_mutable_const)]
        const Z: AtomicU64 = AtomicU64::new(0);
        Histogram { bounds, counts: [Z; 16], sum_ns: AtomicU64::new(0) }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.iter().position(|b| secs <= *b).unwrap_or(self.bounds.len()).min(15);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len() + 1);
        for (i, b) in self.bounds.iter().enumerate().take(15) {
            acc += self.counts[i].load(Relaxed);
            buckets.push((*b, acc));
        }
        acc += self.counts[self.bounds.len().min(15)].load(Relaxed);
        buckets.push((f64::INFINITY, acc));
        HistogramSnapshot { buckets, count: acc, sum: self.sum_ns.load(Relaxed) as f64 / 1e9 }
    }
}

/// Bucket bounds of the sticky hand-off latency (accept to the worker's ACK of the socket).
pub const HANDOFF_BOUNDS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Bucket bounds of the daemon's event-loop lag (how late a periodic tick runs).
pub const LAG_BOUNDS: &[f64] = &[0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0];

/// The sticky balancer's counters (every sticky port together).
pub struct Balancer {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections handed to a worker (the worker ACKed the socket).
    pub handed_off: AtomicU64,
    /// Requests answered by the balancer itself, by status (400, 408, 413, 431, 503).
    pub answered: [AtomicU64; 5],
    /// Connections being read or routed (admitted, not yet handed off or answered).
    pub in_flight: AtomicI64,
    pub handoff_latency: Histogram,
}

/// The statuses of [`Balancer::answered`], in order.
pub const ANSWER_CODES: [u16; 5] = [400, 408, 413, 431, 503];

impl Balancer {
    pub fn answered(&self, status: u16) {
        if let Some(i) = ANSWER_CODES.iter().position(|c| *c == status) {
            self.answered[i].fetch_add(1, Relaxed);
        }
    }
}

#[allow(clippy::declare_interior_mutable_const)]
const Z: AtomicU64 = AtomicU64::new(0);

pub static BALANCER: Balancer = Balancer {
    accepted: AtomicU64::new(0),
    handed_off: AtomicU64::new(0),
    answered: [Z; 5],
    in_flight: AtomicI64::new(0),
    handoff_latency: Histogram::new(HANDOFF_BOUNDS),
};

/// Counts a connection in flight for as long as it lives.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        BALANCER.in_flight.fetch_add(1, Relaxed);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        BALANCER.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Adapter message types 0..=15 (the cluster adapter's `MessageType`s are 1..=13); anything
/// else is counted in the last slot.
pub const RELAY_KINDS: usize = 16;

/// The Socket.IO adapter relay's counters, by adapter message type.
pub struct Relay {
    pub frames: [AtomicU64; RELAY_KINDS + 1],
    pub bytes: [AtomicU64; RELAY_KINDS + 1],
    /// Frame copies not delivered to a worker (its channel closed or its write buffer full).
    pub dropped: AtomicU64,
}

pub static RELAY: Relay = Relay { frames: [Z; RELAY_KINDS + 1], bytes: [Z; RELAY_KINDS + 1], dropped: Z };

impl Relay {
    /// One frame from a worker, before its fan-out.
    pub fn frame(&self, kind: Option<i64>, len: usize) {
        let i =
            kind.and_then(|k| usize::try_from(k).ok()).filter(|k| *k < RELAY_KINDS).unwrap_or(RELAY_KINDS);
        self.frames[i].fetch_add(1, Relaxed);
        self.bytes[i].fetch_add(len as u64, Relaxed);
    }
}

/// Connections each cluster worker accepted from its app's shared listeners, by the
/// primary's worker id; an entry goes when its worker does ([`forget_worker`]).
static LISTENER_CONNS: Mutex<Option<HashMap<u32, u64>>> = Mutex::new(None);

/// A worker accepted a connection of a shared listener.
pub fn listener_connection(wid: u32) {
    let mut m = LISTENER_CONNS.lock().unwrap_or_else(|p| p.into_inner());
    *m.get_or_insert_with(HashMap::new).entry(wid).or_insert(0) += 1;
}

pub fn forget_worker(wid: u32) {
    let mut m = LISTENER_CONNS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = m.as_mut() {
        m.remove(&wid);
    }
}

pub fn listener_connections(wid: u32) -> u64 {
    let m = LISTENER_CONNS.lock().unwrap_or_else(|p| p.into_inner());
    m.as_ref().and_then(|m| m.get(&wid).copied()).unwrap_or(0)
}

/// The daemon's event-loop lag, measured by the metrics task while the endpoint is on.
pub static EVENT_LOOP_LAG: Histogram = Histogram::new(LAG_BOUNDS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        static H: Histogram = Histogram::new(&[0.001, 0.01]);
        H.observe(Duration::from_micros(500));
        H.observe(Duration::from_millis(5));
        H.observe(Duration::from_millis(5));
        H.observe(Duration::from_secs(2));
        let s = H.snapshot();
        assert_eq!(s.buckets, vec![(0.001, 1), (0.01, 3), (f64::INFINITY, 4)]);
        assert_eq!(s.count, 4);
        assert!((s.sum - 2.0105).abs() < 1e-9);
    }

    #[test]
    fn declared_histograms_fit() {
        assert!(HANDOFF_BOUNDS.len() <= 15 && LAG_BOUNDS.len() <= 15);
        assert!(HANDOFF_BOUNDS.windows(2).all(|w| w[0] < w[1]));
        assert!(LAG_BOUNDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn relay_kinds_out_of_range_share_a_slot() {
        static R: Relay = Relay { frames: [Z; RELAY_KINDS + 1], bytes: [Z; RELAY_KINDS + 1], dropped: Z };
        R.frame(Some(3), 10);
        R.frame(Some(-1), 5);
        R.frame(Some(99), 5);
        R.frame(None, 1);
        assert_eq!(R.frames[3].load(Relaxed), 1);
        assert_eq!(R.frames[RELAY_KINDS].load(Relaxed), 3);
        assert_eq!(R.bytes[RELAY_KINDS].load(Relaxed), 11);
    }

    #[test]
    fn listener_connections_per_worker() {
        listener_connection(900_001);
        listener_connection(900_001);
        assert_eq!(listener_connections(900_001), 2);
        forget_worker(900_001);
        assert_eq!(listener_connections(900_001), 0);
    }
}
