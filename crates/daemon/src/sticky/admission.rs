//! Which sticky-port connections the balancer keeps reading when it is flooded.
//!
//! Every connection being read holds a descriptor and its buffered bytes. Two bounds keep a
//! flood of slow or partial requests from starving the daemon (its control socket, log files
//! and spawns need descriptors too) or its memory:
//!
//! - at most `cap` connections are read at once, `cap` computed well below the descriptor
//!   limit so a reserve is always left for the daemon's own work;
//! - at most `budget` bytes are buffered by all of them together.
//!
//! When a new connection would pass the cap, or a read would pass the budget, the *oldest*
//! connections still being read are shed (told to answer `503` and close) until it fits. A
//! legitimate request is read in milliseconds, so the oldest are the slowest: a slowloris flood
//! sheds itself while fresh clients keep being served. A shed connection stops counting against
//! the cap and the budget at once (it only writes its answer and closes); it keeps its slot in
//! the table until it is released, so the total number of descriptors in use is still bounded
//! by [`Admission::in_use`], which the accept loop checks against a hard ceiling.
//!
//! Pure bookkeeping over an opaque token per connection (the balancer's wake-up handle), so the
//! rules are unit-tested without sockets.

use std::collections::BTreeMap;

#[derive(Debug)]
struct Entry<T> {
    bytes: usize,
    shed: bool,
    token: T,
}

/// The table of connections being read, oldest first.
#[derive(Debug)]
pub struct Admission<T> {
    cap: usize,
    budget: usize,
    next_id: u64,
    /// Ids grow with admission order, so the first entries are the oldest.
    entries: BTreeMap<u64, Entry<T>>,
    /// Connections not shed.
    live: usize,
    /// Bytes buffered by connections not shed.
    live_bytes: usize,
    /// Most entries and bytes since the allocator was last asked to give memory back.
    peak: usize,
    peak_bytes: usize,
}

/// After a flood of at least this many connections ...
const TRIM_AFTER_CONNECTIONS: usize = 256;
/// ... or this many buffered bytes ...
const TRIM_AFTER_BYTES: usize = 8 * 1024 * 1024;
/// ... once the table is down to this fraction of its peak, memory is given back.
const TRIM_WHEN_DOWN_TO: usize = 16;

impl<T: Clone> Admission<T> {
    pub fn new(cap: usize, budget: usize) -> Self {
        Admission {
            cap: cap.max(1),
            budget,
            next_id: 0,
            entries: BTreeMap::new(),
            live: 0,
            live_bytes: 0,
            peak: 0,
            peak_bytes: 0,
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections holding a descriptor (shed ones included until released).
    pub fn in_use(&self) -> usize {
        self.entries.len()
    }

    /// Connections being read (not shed).
    pub fn live(&self) -> usize {
        self.live
    }

    /// Bytes buffered by the connections being read.
    pub fn live_bytes(&self) -> usize {
        self.live_bytes
    }

    /// Admits a new connection. Returns its id and the tokens of the connections to shed to
    /// stay within the cap (oldest first).
    pub fn admit(&mut self, token: T) -> (u64, Vec<T>) {
        let mut shed = Vec::new();
        while self.live >= self.cap {
            match self.shed_oldest() {
                Some(t) => shed.push(t),
                None => break,
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(id, Entry { bytes: 0, shed: false, token });
        self.live += 1;
        self.peak = self.peak.max(self.entries.len());
        (id, shed)
    }

    /// Counts `n` more bytes buffered by connection `id`. Returns the tokens of the connections
    /// to shed to stay within the budget, oldest first; `id` itself may be among them.
    pub fn charge(&mut self, id: u64, n: usize) -> Vec<T> {
        let Some(e) = self.entries.get_mut(&id) else { return Vec::new() };
        e.bytes = e.bytes.saturating_add(n);
        if !e.shed {
            self.live_bytes = self.live_bytes.saturating_add(n);
        }
        let buffered: usize = self.live_bytes;
        self.peak_bytes = self.peak_bytes.max(buffered);
        let mut shed = Vec::new();
        while self.live_bytes > self.budget {
            match self.shed_oldest() {
                Some(t) => shed.push(t),
                None => break,
            }
        }
        shed
    }

    /// Whether connection `id` was shed (its reader should stop and answer `503`).
    pub fn is_shed(&self, id: u64) -> bool {
        self.entries.get(&id).is_some_and(|e| e.shed)
    }

    /// The connection is gone. Returns true when a flood has just ended: the caller should ask
    /// the allocator to return freed memory to the system.
    pub fn release(&mut self, id: u64) -> bool {
        if let Some(e) = self.entries.remove(&id) {
            if !e.shed {
                self.live -= 1;
                self.live_bytes = self.live_bytes.saturating_sub(e.bytes);
            }
        }
        let flooded = self.peak >= TRIM_AFTER_CONNECTIONS || self.peak_bytes >= TRIM_AFTER_BYTES;
        if flooded && self.entries.len() <= self.peak / TRIM_WHEN_DOWN_TO {
            self.peak = self.entries.len();
            self.peak_bytes = self.live_bytes;
            return true;
        }
        false
    }

    fn shed_oldest(&mut self) -> Option<T> {
        let e = self.entries.values_mut().find(|e| !e.shed)?;
        e.shed = true;
        self.live -= 1;
        self.live_bytes = self.live_bytes.saturating_sub(e.bytes);
        Some(e.token.clone())
    }
}

/// How many sticky connections may be read at once, given the descriptor limit: a quarter of
/// the limit (at least 2048) stays reserved for the daemon's own work (control connections,
/// each app's pipes, channel and log files, spawns, cluster connections in transit), and
/// never more than 20 000 are read at once.
pub fn cap_for_fd_limit(nofile: u64) -> usize {
    let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
    let reserve = (nofile / 4).max(2048);
    nofile.saturating_sub(reserve).clamp(64, 20_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_the_oldest_is_shed() {
        let mut a = Admission::new(3, usize::MAX);
        let ids: Vec<u64> = (0..3).map(|i| a.admit(i).0).collect();
        assert_eq!(a.live(), 3);
        let (id3, shed) = a.admit(3);
        assert_eq!(shed, vec![0]);
        assert!(a.is_shed(ids[0]) && !a.is_shed(id3));
        assert_eq!((a.live(), a.in_use()), (3, 4));
        // The shed one leaves; the next newcomer sheds the next oldest.
        a.release(ids[0]);
        assert_eq!(a.in_use(), 3);
        assert_eq!(a.admit(4).1, vec![1]);
    }

    #[test]
    fn past_the_budget_the_oldest_bytes_are_shed_first() {
        let mut a = Admission::new(100, 1000);
        let (old, _) = a.admit("old");
        let (mid, _) = a.admit("mid");
        let (new, _) = a.admit("new");
        assert!(a.charge(old, 400).is_empty());
        assert!(a.charge(mid, 400).is_empty());
        assert_eq!(a.charge(new, 300), vec!["old"]);
        assert_eq!(a.live_bytes(), 700);
        // A single connection over the budget on its own sheds itself last.
        assert_eq!(a.charge(new, 2000), vec!["mid", "new"]);
        assert_eq!(a.live_bytes(), 0);
        // Charging a shed connection changes nothing.
        assert!(a.charge(old, 5000).is_empty());
        assert_eq!(a.live(), 0);
    }

    #[test]
    fn release_after_a_flood_advises_a_trim_once() {
        let mut a = Admission::new(10_000, usize::MAX);
        let ids: Vec<u64> = (0..1000).map(|i| a.admit(i).0).collect();
        let mut trims = 0;
        for id in ids {
            if a.release(id) {
                trims += 1;
            }
        }
        assert_eq!(trims, 1);
        // A quiet period does not ask again.
        let (id, _) = a.admit(0);
        assert!(!a.release(id));
    }

    #[test]
    fn random_operations_keep_the_counts_consistent() {
        let mut seed = 5u64;
        let mut rnd = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut a = Admission::new(20, 5000);
        let mut open: Vec<u64> = Vec::new();
        for _ in 0..20_000 {
            match rnd(3) {
                0 => open.push(a.admit(()).0),
                1 if !open.is_empty() => {
                    let id = open[rnd(open.len() as u64) as usize];
                    a.charge(id, rnd(800) as usize);
                }
                _ if !open.is_empty() => {
                    let id = open.swap_remove(rnd(open.len() as u64) as usize);
                    a.release(id);
                }
                _ => {}
            }
            assert!(a.live() <= 20);
            assert!(a.live_bytes() <= 5000);
            assert_eq!(a.in_use(), open.len());
            let live = a.entries.values().filter(|e| !e.shed).count();
            let bytes: usize = a.entries.values().filter(|e| !e.shed).map(|e| e.bytes).sum();
            assert_eq!((live, bytes), (a.live(), a.live_bytes()));
        }
    }

    #[test]
    fn cap_leaves_a_reserve() {
        assert_eq!(cap_for_fd_limit(1024), 64);
        assert_eq!(cap_for_fd_limit(4096), 2048);
        assert_eq!(cap_for_fd_limit(65_536), 20_000);
        assert_eq!(cap_for_fd_limit(1 << 20), 20_000);
        assert_eq!(cap_for_fd_limit(20_000), 15_000);
    }
}
