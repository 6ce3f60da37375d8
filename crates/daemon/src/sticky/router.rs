//! Which worker of ONE app gets a sticky-port request. Pure and synchronous: the daemon owns the
//! sockets, the IPC channels and the clock, and asks this state machine what to do.
//!
//! The daemon keeps one [`Router`] per app that opted in to sticky routing, so traffic never
//! reaches another app's workers (the incumbent shared one table across apps).
//!
//! # Worker lifecycle
//!
//! `add_worker` (not ready) → `set_ready` → `set_draining` → `remove_worker`. A worker receives
//! no sticky traffic until it is ready (`online` arrives before user code ran
//! `setupWorker`). The daemon calls `set_ready` on the first adapter heartbeat, the first
//! `sticky:*` message or `ready`; a registered session also counts (see [`Router::on_session`]).
//! A draining worker gets no new sessions but keeps serving the sids it owns while it is alive.
//!
//! Health is a separate flag ([`Router::set_healthy`], from the worker's readiness checks): an
//! unhealthy ready worker keeps its sids but gets no new sessions while a healthy ready worker
//! exists; with none, health is ignored so traffic is never black-holed.
//!
//! # The hold rule (the registration race)
//!
//! An Engine.IO session is born when a worker answers a session-less handshake. The worker
//! reports the new sid over IPC (`sticky:connection`), but the client may already have sent its
//! next request, carrying that sid, before the report is processed. Routing that request "as new"
//! sends it to a random worker, which answers `Session ID unknown`.
//!
//! Rule: every session-less request routed to worker W records a *pending registration* on W,
//! stamped with the routing time. `on_session(W, _)` claims W's oldest pending registration.
//! Pending registrations expire after the hold window (default 300 ms). A request carrying an
//! unknown sid that arrived at `t` is answered [`Route::Hold`] while some worker has an
//! unclaimed, unexpired pending registration stamped at or before `t` (only a hand-off that
//! happened before the request arrived can have produced its sid), and never later than
//! `t + hold window`. Otherwise it is routed as new, so the worker answers `400` exactly as
//! Engine.IO would for a stale sid. With no recent session-less hand-off, a stale sid is routed
//! at once; a hold costs at most the hold window.
//!
//! The caller waits on a notification fired whenever `on_session`/`remove_worker` changed the
//! table, or until [`Route::Hold::until`](Route::Hold), then asks again with
//! [`Router::reroute`], passing the original arrival time.
//!
//! # Load
//!
//! Least-connection load = registered sessions + hand-offs in flight + unclaimed pending
//! registrations. Counting what is in flight is what spreads a burst of simultaneous connects
//! (the incumbent, @socket.io/pm2, counted confirmed sessions only, so a burst all went to one
//! worker).
//! Ties are broken round-robin so session-less plain HTTP spreads too.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// A worker of the app, as the daemon names it. Opaque here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u32);

/// How requests without a known sid are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Fewest sessions + in-flight hand-offs; ties round-robin. What PM2's God asks for.
    #[default]
    LeastConnection,
    RoundRobin,
    Random,
}

/// The routing decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Hand the connection to this worker.
    Worker(WorkerId),
    /// The sid is unknown but may be registering right now: wait for a table change or until
    /// `until`, then call [`Router::reroute`].
    Hold { until: Instant },
    /// No ready worker. The caller may queue briefly, then answer `503`.
    NoWorker,
}

/// Default bound on how long a request with an unknown sid is held.
pub const DEFAULT_HOLD_WINDOW: Duration = Duration::from_millis(300);

/// Pending registrations kept per worker at most. A worker that never registers sessions (plain
/// HTTP traffic) would otherwise grow the queue at the request rate; beyond this the oldest are
/// dropped, which only shortens a hold.
const MAX_PENDING_PER_WORKER: usize = 4096;

/// Where a worker is in its sticky lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Spawned, not yet shown it can take sticky traffic.
    NotReady,
    /// Takes new sessions.
    Ready,
    /// Being reloaded or stopped: serves its own sessions only. One-way.
    Draining,
}

use WorkerState as State;

#[derive(Debug)]
struct Worker {
    state: State,
    sids: HashSet<String>,
    in_flight: usize,
    /// Routing times of session-less hand-offs not yet matched by a registration. Oldest first.
    pending: VecDeque<Instant>,
    /// Its health checks say it is not ready: no new sessions while another ready worker is
    /// healthy. Orthogonal to `state` (see [`Router::set_healthy`]).
    unhealthy: bool,
}

impl Worker {
    fn load(&self) -> usize {
        self.sids.len().saturating_add(self.in_flight).saturating_add(self.pending.len())
    }
}

/// Routing state for one app's workers.
#[derive(Debug)]
pub struct Router {
    policy: Policy,
    hold_window: Duration,
    /// Ordered so ties and round-robin follow worker ids deterministically.
    workers: BTreeMap<WorkerId, Worker>,
    sessions: HashMap<String, WorkerId>,
    /// Last worker picked for a new session; round-robin continues after it.
    last_pick: Option<WorkerId>,
    rng: u64,
}

impl Router {
    pub fn new(policy: Policy) -> Self {
        let seed = RandomState::new().build_hasher().finish();
        Router::with_seed(policy, seed)
    }

    /// A router whose `Random` policy is reproducible (tests).
    pub fn with_seed(policy: Policy, seed: u64) -> Self {
        Router {
            policy,
            hold_window: DEFAULT_HOLD_WINDOW,
            workers: BTreeMap::new(),
            sessions: HashMap::new(),
            last_pick: None,
            // xorshift must not start at 0.
            rng: seed | 1,
        }
    }

    pub fn with_hold_window(mut self, window: Duration) -> Self {
        self.hold_window = window;
        self
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// A freshly spawned worker: known, but not routed to until [`Router::set_ready`].
    /// Re-adding a known id is a no-op.
    pub fn add_worker(&mut self, id: WorkerId) {
        self.workers.entry(id).or_insert_with(|| Worker {
            state: State::NotReady,
            sids: HashSet::new(),
            in_flight: 0,
            pending: VecDeque::new(),
            unhealthy: false,
        });
    }

    /// The worker's health checks (readiness probe, startup, `READY=1`) pass or not. An
    /// unhealthy worker gets no new sessions as long as some ready worker is healthy; its own
    /// sessions still route to it. When no ready worker is healthy, routing ignores health (as
    /// without health checks) rather than turn every new client away.
    pub fn set_healthy(&mut self, id: WorkerId, healthy: bool) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.unhealthy = !healthy;
        }
    }

    /// Whether the worker's health checks pass (unknown workers: false).
    pub fn is_healthy(&self, id: WorkerId) -> bool {
        self.workers.get(&id).is_some_and(|w| !w.unhealthy)
    }

    /// The worker can take sticky traffic. Ignored for draining or unknown workers: draining is
    /// one-way, and an unknown worker has exited.
    pub fn set_ready(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            if w.state == State::NotReady {
                w.state = State::Ready;
            }
        }
    }

    /// The worker is being reloaded or stopped: no new sessions, its own sids still go to it.
    pub fn set_draining(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.state = State::Draining;
        }
    }

    /// The worker exited. Returns the sids it owned, now forgotten (their clients will reconnect
    /// and be routed as new).
    pub fn remove_worker(&mut self, id: WorkerId) -> Vec<String> {
        let Some(w) = self.workers.remove(&id) else {
            return Vec::new();
        };
        let mut sids: Vec<String> = w.sids.into_iter().collect();
        sids.sort();
        for sid in &sids {
            self.sessions.remove(sid);
        }
        // `last_pick` may name the removed worker; round-robin simply continues after its id.
        sids
    }

    /// The worker's state, `None` once removed (or never added). Lets a caller tell "not ready
    /// yet" from "draining", which [`Router::is_ready`] lumps together.
    pub fn state(&self, id: WorkerId) -> Option<WorkerState> {
        self.workers.get(&id).map(|w| w.state)
    }

    pub fn is_ready(&self, id: WorkerId) -> bool {
        self.workers.get(&id).is_some_and(|w| w.state == State::Ready)
    }

    pub fn has_worker(&self, id: WorkerId) -> bool {
        self.workers.contains_key(&id)
    }

    /// Whether any worker could take a new session now.
    pub fn has_ready_worker(&self) -> bool {
        self.workers.values().any(|w| w.state == State::Ready)
    }

    /// Sessions currently registered to the worker.
    pub fn session_count(&self, id: WorkerId) -> usize {
        self.workers.get(&id).map_or(0, |w| w.sids.len())
    }

    /// Hand-offs to the worker not yet acknowledged.
    pub fn in_flight(&self, id: WorkerId) -> usize {
        self.workers.get(&id).map_or(0, |w| w.in_flight)
    }

    /// The worker owning `sid`, if registered.
    pub fn owner(&self, sid: &str) -> Option<WorkerId> {
        self.sessions.get(sid).copied()
    }

    /// Routes a request that has just been read. `sid` is the request-target's `sid` parameter.
    /// A request routed as new (no sid) records a pending registration on its worker.
    pub fn route(&mut self, sid: Option<&str>, now: Instant) -> Route {
        self.route_at(sid, now, now)
    }

    /// Asks again for a request that got [`Route::Hold`]; `arrived` is the `now` of its first
    /// [`Router::route`] call. Never holds past `arrived + hold window`.
    pub fn reroute(&mut self, sid: &str, arrived: Instant, now: Instant) -> Route {
        self.route_at(Some(sid), arrived, now)
    }

    /// Routes as new regardless of pending registrations: for a caller whose own hold budget ran
    /// out. A known sid still goes to its owner.
    pub fn route_unheld(&mut self, sid: &str, now: Instant) -> Route {
        self.expire(now);
        if let Some(w) = self.owner_alive(sid) {
            return Route::Worker(w);
        }
        self.pick_new().map_or(Route::NoWorker, Route::Worker)
    }

    fn route_at(&mut self, sid: Option<&str>, arrived: Instant, now: Instant) -> Route {
        self.expire(now);
        match sid {
            Some(sid) => {
                if let Some(w) = self.owner_alive(sid) {
                    return Route::Worker(w);
                }
                if let Some(until) = self.hold_until(arrived, now) {
                    return Route::Hold { until };
                }
                // A stale or forged sid: any worker will answer 400 like Engine.IO does. No
                // pending registration, since that request creates no session.
                self.pick_new().map_or(Route::NoWorker, Route::Worker)
            }
            None => match self.pick_new() {
                Some(id) => {
                    if let Some(w) = self.workers.get_mut(&id) {
                        if w.pending.len() >= MAX_PENDING_PER_WORKER {
                            w.pending.pop_front();
                        }
                        w.pending.push_back(now);
                    }
                    Route::Worker(id)
                }
                None => Route::NoWorker,
            },
        }
    }

    /// The connection just routed to `id` carries `extra` more session-less Engine.IO requests
    /// pipelined behind the first (each will register a session there): count each as a pending
    /// registration now, so the worker's load includes them before they register and their
    /// registrations do not claim other connections' pending entries.
    pub fn expect_sessions(&mut self, id: WorkerId, extra: usize, now: Instant) {
        if let Some(w) = self.workers.get_mut(&id) {
            for _ in 0..extra.min(MAX_PENDING_PER_WORKER) {
                if w.pending.len() >= MAX_PENDING_PER_WORKER {
                    w.pending.pop_front();
                }
                w.pending.push_back(now);
            }
        }
    }

    /// The daemon started handing a connection to the worker (fd queued on its channel).
    pub fn handoff_started(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.in_flight = w.in_flight.saturating_add(1);
        }
    }

    /// The hand-off ended (ACK, NACK or channel failure).
    pub fn handoff_finished(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.in_flight = w.in_flight.saturating_sub(1);
        }
    }

    /// The worker reported a new Engine.IO session (`sticky:connection`, data = sid). Claims the
    /// worker's oldest pending registration and marks a not-ready worker ready (it is plainly
    /// serving). Returns true when the table changed, i.e. held requests should ask again.
    pub fn on_session(&mut self, id: WorkerId, sid: &str) -> bool {
        let Some(w) = self.workers.get_mut(&id) else {
            return false;
        };
        if w.state == State::NotReady {
            w.state = State::Ready;
        }
        w.pending.pop_front();
        if !w.sids.insert(sid.to_owned()) {
            return true;
        }
        // A sid re-registered by another worker moves: the newest report wins.
        if let Some(prev) = self.sessions.insert(sid.to_owned(), id) {
            if prev != id {
                if let Some(pw) = self.workers.get_mut(&prev) {
                    pw.sids.remove(sid);
                }
            }
        }
        true
    }

    /// The worker reported the session closed (`sticky:disconnection`). Only the owner can
    /// close a session.
    pub fn on_session_closed(&mut self, id: WorkerId, sid: &str) -> bool {
        if self.sessions.get(sid) != Some(&id) {
            return false;
        }
        self.sessions.remove(sid);
        if let Some(w) = self.workers.get_mut(&id) {
            w.sids.remove(sid);
        }
        true
    }

    /// Every session and its worker (an in-place upgrade hands them over).
    pub fn export_sessions(&self) -> Vec<(String, WorkerId)> {
        self.sessions.iter().map(|(sid, w)| (sid.clone(), *w)).collect()
    }

    /// Restores a session handed over by [`Router::export_sessions`]: as a
    /// report of the worker, without claiming a pending registration.
    pub fn import_session(&mut self, id: WorkerId, sid: &str) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        if w.state == State::NotReady {
            w.state = State::Ready;
        }
        if w.sids.insert(sid.to_owned()) {
            self.sessions.insert(sid.to_owned(), id);
        }
    }

    /// Checks the table's internal consistency (every session is in its owner's set and no
    /// other; pending queues bounded). For fuzzing and tests.
    pub fn check_consistency(&self) -> Result<(), String> {
        let counted: usize = self.workers.values().map(|w| w.sids.len()).sum();
        if counted != self.sessions.len() {
            return Err(format!("{counted} sids in workers, {} in the table", self.sessions.len()));
        }
        for (sid, owner) in &self.sessions {
            if !self.workers.get(owner).is_some_and(|w| w.sids.contains(sid)) {
                return Err(format!("session {sid} not in its owner {owner:?}"));
            }
        }
        if self.workers.values().any(|w| w.pending.len() > MAX_PENDING_PER_WORKER) {
            return Err("pending queue over its bound".into());
        }
        Ok(())
    }

    fn owner_alive(&self, sid: &str) -> Option<WorkerId> {
        let id = *self.sessions.get(sid)?;
        // Ready or draining: a draining worker still serves its sessions.
        self.workers.get(&id).filter(|w| w.state != State::NotReady).map(|_| id)
    }

    fn expire(&mut self, now: Instant) {
        let window = self.hold_window;
        for w in self.workers.values_mut() {
            while w.pending.front().is_some_and(|&t| now.saturating_duration_since(t) >= window) {
                w.pending.pop_front();
            }
        }
    }

    /// When a hold on a request that arrived at `arrived` must end, if it is warranted now.
    fn hold_until(&self, arrived: Instant, now: Instant) -> Option<Instant> {
        let cap = arrived + self.hold_window;
        if now >= cap {
            return None;
        }
        self.workers
            .values()
            .flat_map(|w| w.pending.iter())
            .filter(|&&t| t <= arrived)
            .map(|&t| t + self.hold_window)
            .filter(|&exp| exp > now)
            .max()
            .map(|exp| exp.min(cap))
    }

    fn pick_new(&mut self) -> Option<WorkerId> {
        // Healthy ready workers if there is one, else any ready worker.
        let healthy_only = self.workers.values().any(|w| w.state == State::Ready && !w.unhealthy);
        let takes = move |w: &Worker| w.state == State::Ready && !(healthy_only && w.unhealthy);
        let picked = match self.policy {
            Policy::LeastConnection => {
                let min = self.workers.values().filter(|w| takes(w)).map(Worker::load).min()?;
                self.next_round_robin(|w| takes(w) && w.load() == min)
            }
            Policy::RoundRobin => self.next_round_robin(takes),
            Policy::Random => {
                let ready: Vec<WorkerId> =
                    self.ready_ids().filter(|id| self.workers.get(id).is_some_and(takes)).collect();
                if ready.is_empty() {
                    None
                } else {
                    let i = (self.next_random() % ready.len() as u64) as usize;
                    ready.get(i).copied()
                }
            }
        }?;
        self.last_pick = Some(picked);
        Some(picked)
    }

    fn ready_ids(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.workers.iter().filter(|(_, w)| w.state == State::Ready).map(|(&id, _)| id)
    }

    /// The first ready worker after `last_pick` (wrapping) that satisfies `eligible`.
    fn next_round_robin(&self, eligible: impl Fn(&Worker) -> bool) -> Option<WorkerId> {
        let ok = |(id, w): (&WorkerId, &Worker)| (w.state == State::Ready && eligible(w)).then_some(*id);
        let after = match self.last_pick {
            Some(last) => {
                self.workers.range((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded)).find_map(ok)
            }
            None => None,
        };
        after.or_else(|| self.workers.iter().find_map(ok))
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: plenty for spreading load, and no dependency.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W1: WorkerId = WorkerId(1);
    const W2: WorkerId = WorkerId(2);
    const W3: WorkerId = WorkerId(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ready_router(policy: Policy, ids: &[WorkerId]) -> Router {
        let mut r = Router::with_seed(policy, 42);
        for &id in ids {
            r.add_worker(id);
            r.set_ready(id);
        }
        r
    }

    fn worker(route: Route) -> WorkerId {
        match route {
            Route::Worker(w) => w,
            other => panic!("expected a worker, got {other:?}"),
        }
    }

    #[test]
    fn no_workers_means_no_worker() {
        let mut r = Router::new(Policy::LeastConnection);
        let t = Instant::now();
        assert_eq!(r.route(None, t), Route::NoWorker);
        assert_eq!(r.route(Some("abc"), t), Route::NoWorker);
    }

    #[test]
    fn not_ready_workers_get_no_traffic() {
        // A just-spawned worker is not routed to, even though it has no sessions.
        let mut r = Router::with_seed(Policy::LeastConnection, 1);
        let t = Instant::now();
        r.add_worker(W1);
        assert_eq!(r.route(None, t), Route::NoWorker);
        r.add_worker(W2);
        r.set_ready(W2);
        for _ in 0..10 {
            assert_eq!(r.route(None, t), Route::Worker(W2));
        }
        r.set_ready(W1);
        assert_eq!(r.route(None, t), Route::Worker(W1));
    }

    #[test]
    fn session_registration_makes_a_worker_ready() {
        let mut r = Router::with_seed(Policy::LeastConnection, 1);
        r.add_worker(W1);
        assert!(!r.is_ready(W1));
        assert!(r.on_session(W1, "s1"));
        assert!(r.is_ready(W1));
    }

    #[test]
    fn known_sid_goes_to_its_owner() {
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t = Instant::now();
        r.on_session(W2, "sid-b");
        for _ in 0..5 {
            r.on_session(W1, &format!("x{}", r.session_count(W1)));
        }
        // W2 has fewer sessions, but stickiness wins... and W1 owns its own.
        assert_eq!(r.route(Some("sid-b"), t), Route::Worker(W2));
        assert_eq!(r.route(Some("x0"), t), Route::Worker(W1));
        assert_eq!(r.owner("sid-b"), Some(W2));
    }

    #[test]
    fn draining_worker_keeps_its_sessions_but_gets_no_new_ones() {
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t = Instant::now();
        r.on_session(W1, "old");
        for _ in 0..5 {
            r.on_session(W2, &format!("b{}", r.session_count(W2)));
        }
        r.set_draining(W1);
        assert_eq!(r.route(Some("old"), t), Route::Worker(W1));
        for _ in 0..5 {
            assert_eq!(r.route(None, t), Route::Worker(W2));
        }
        // Draining is one-way.
        r.set_ready(W1);
        assert!(!r.is_ready(W1));
        assert_eq!(r.state(W1), Some(WorkerState::Draining));
        assert_eq!(r.state(W2), Some(WorkerState::Ready));
        assert_eq!(r.state(WorkerId(9)), None);
        r.set_draining(W2);
        assert_eq!(r.route(None, t + ms(1000)), Route::NoWorker);
        assert_eq!(r.route(Some("old"), t), Route::Worker(W1));
    }

    #[test]
    fn unhealthy_worker_gets_no_new_sessions_but_keeps_its_own() {
        for policy in [Policy::LeastConnection, Policy::RoundRobin, Policy::Random] {
            let mut r = ready_router(policy, &[W1, W2]);
            let t = Instant::now();
            r.on_session(W1, "old");
            r.set_healthy(W1, false);
            assert!(!r.is_healthy(W1));
            for i in 0..20u64 {
                assert_eq!(r.route(None, t + ms(i * 1000)), Route::Worker(W2), "{policy:?}");
            }
            // Its existing session still goes to it.
            assert_eq!(r.route(Some("old"), t), Route::Worker(W1));
            // No healthy worker left: health is ignored rather than refusing everyone.
            r.set_healthy(W2, false);
            let picks: std::collections::BTreeSet<WorkerId> =
                (0..40u64).map(|i| worker(r.route(None, t + ms(i * 1000)))).collect();
            assert_eq!(picks.len(), 2, "{policy:?}");
            // Healthy again: back in rotation.
            r.set_healthy(W1, true);
            for i in 0..5u64 {
                assert_eq!(r.route(None, t + ms(i * 1000)), Route::Worker(W1), "{policy:?}");
            }
            // A draining worker never comes back through health.
            r.set_draining(W1);
            r.set_healthy(W1, true);
            assert_eq!(r.route(None, t), Route::Worker(W2));
        }
        let mut r = Router::new(Policy::RoundRobin);
        r.set_healthy(WorkerId(5), false);
        assert!(!r.is_healthy(WorkerId(5)));
    }

    #[test]
    fn removed_worker_forgets_its_sessions() {
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t = Instant::now();
        r.on_session(W1, "a");
        r.on_session(W1, "b");
        r.on_session(W2, "c");
        assert_eq!(r.remove_worker(W1), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(r.owner("a"), None);
        assert!(!r.has_worker(W1));
        // Its stale sid now routes as new, to a live worker.
        assert_eq!(r.route(Some("a"), t), Route::Worker(W2));
        assert!(r.remove_worker(W1).is_empty());
        // Late messages from the dead worker change nothing.
        assert!(!r.on_session(W1, "zombie"));
        assert_eq!(r.owner("zombie"), None);
    }

    #[test]
    fn disconnection_unbinds_only_for_the_owner() {
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        r.on_session(W1, "s");
        assert!(!r.on_session_closed(W2, "s"));
        assert_eq!(r.owner("s"), Some(W1));
        assert!(r.on_session_closed(W1, "s"));
        assert_eq!(r.owner("s"), None);
        assert_eq!(r.session_count(W1), 0);
        assert!(!r.on_session_closed(W1, "s"));
    }

    #[test]
    fn sid_reregistered_elsewhere_moves() {
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        r.on_session(W1, "s");
        r.on_session(W2, "s");
        assert_eq!(r.owner("s"), Some(W2));
        assert_eq!(r.session_count(W1), 0);
        assert_eq!(r.session_count(W2), 1);
        // Registering twice on the same worker doesn't double count.
        r.on_session(W2, "s");
        assert_eq!(r.session_count(W2), 1);
    }

    #[test]
    fn burst_of_50_connects_spreads_evenly() {
        // The incumbent's burst problem: 50 handshakes arrive before any session registers.
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t = Instant::now();
        let mut per = BTreeMap::new();
        for _ in 0..50 {
            let w = worker(r.route(None, t));
            r.handoff_started(w);
            *per.entry(w).or_insert(0) += 1;
        }
        assert_eq!(per.get(&W1), Some(&25));
        assert_eq!(per.get(&W2), Some(&25));
    }

    #[test]
    fn burst_spreads_even_if_acks_are_immediate() {
        // Hand-offs finish (ACK) long before the worker registers the sid; the pending
        // registrations still count.
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2, W3]);
        let t = Instant::now();
        let mut per = BTreeMap::new();
        for _ in 0..51 {
            let w = worker(r.route(None, t));
            r.handoff_started(w);
            r.handoff_finished(w);
            *per.entry(w).or_insert(0) += 1;
        }
        assert!(per.values().all(|&n| n == 17), "{per:?}");
    }

    #[test]
    fn least_connection_prefers_fewest_sessions() {
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t = Instant::now();
        for i in 0..4 {
            r.on_session(W1, &format!("a{i}"));
        }
        r.on_session(W2, "b0");
        assert_eq!(r.route(None, t), Route::Worker(W2));
        r.handoff_started(W2);
        // W2: 1 session + 1 in flight + 1 pending = 3 < W1's 4.
        assert_eq!(r.route(None, t), Route::Worker(W2));
        r.handoff_started(W2);
        // W2: 1 + 2 + 2 = 5 > 4.
        assert_eq!(r.route(None, t), Route::Worker(W1));
    }

    #[test]
    fn pipelined_handshakes_count_as_pending_registrations() {
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t = Instant::now();
        // One connection with 100 pipelined handshakes goes to W1 ...
        assert_eq!(r.route(None, t), Route::Worker(W1));
        r.expect_sessions(W1, 99, t);
        // ... so the next connections go to W2 until it has as many.
        for _ in 0..10 {
            assert_eq!(r.route(None, t), Route::Worker(W2));
        }
        // Another client's handshake on W1 later, then W1's 100 registrations: the other
        // client's pending entry is still there (its follow-up request may be held for it).
        let t1 = t + ms(10);
        r.expect_sessions(W1, 0, t1);
        for i in 0..100 {
            r.on_session(W1, &format!("p{i}"));
        }
        assert_eq!(r.session_count(W1), 100);
        assert!(r.workers[&W1].pending.is_empty());
        r.expect_sessions(WorkerId(9), 5, t);
    }

    #[test]
    fn in_flight_count_is_saturating() {
        let mut r = ready_router(Policy::LeastConnection, &[W1]);
        r.handoff_finished(W1);
        assert_eq!(r.in_flight(W1), 0);
        r.handoff_started(W1);
        assert_eq!(r.in_flight(W1), 1);
        r.handoff_started(WorkerId(99));
    }

    #[test]
    fn session_less_plain_http_spreads() {
        // Requests that never register a session (plain GETs) must not all land on one worker.
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t = Instant::now();
        let mut per = BTreeMap::new();
        for i in 0..20u64 {
            let w = worker(r.route(None, t + ms(i * 1000)));
            *per.entry(w).or_insert(0) += 1;
        }
        assert_eq!(per.get(&W1), Some(&10));
        assert_eq!(per.get(&W2), Some(&10));
    }

    #[test]
    fn round_robin_cycles_over_ready_workers() {
        let mut r = ready_router(Policy::RoundRobin, &[W1, W2, W3]);
        let t = Instant::now();
        r.on_session(W1, "a");
        r.on_session(W1, "b");
        let picks: Vec<WorkerId> = (0..6).map(|_| worker(r.route(None, t))).collect();
        assert_eq!(picks, vec![W1, W2, W3, W1, W2, W3]);
        r.set_draining(W2);
        let picks: Vec<WorkerId> = (0..4).map(|_| worker(r.route(None, t))).collect();
        assert_eq!(picks, vec![W1, W3, W1, W3]);
    }

    #[test]
    fn round_robin_survives_removal_of_last_pick() {
        let mut r = ready_router(Policy::RoundRobin, &[W1, W2, W3]);
        let t = Instant::now();
        assert_eq!(r.route(None, t), Route::Worker(W1));
        assert_eq!(r.route(None, t), Route::Worker(W2));
        r.remove_worker(W2);
        assert_eq!(r.route(None, t), Route::Worker(W3));
        assert_eq!(r.route(None, t), Route::Worker(W1));
    }

    #[test]
    fn random_uses_only_ready_workers_and_all_of_them() {
        let mut r = ready_router(Policy::Random, &[W1, W2, W3]);
        r.add_worker(WorkerId(4));
        r.set_draining(W3);
        let t = Instant::now();
        let mut per = BTreeMap::new();
        for _ in 0..200 {
            *per.entry(worker(r.route(None, t))).or_insert(0) += 1;
        }
        assert_eq!(per.keys().copied().collect::<Vec<_>>(), vec![W1, W2]);
        assert!(per.values().all(|&n| n > 50), "{per:?}");
        r.set_policy(Policy::LeastConnection);
        assert_eq!(r.policy(), Policy::LeastConnection);
    }

    #[test]
    fn unknown_sid_is_held_while_a_registration_may_be_in_flight() {
        // The registration race: handshake routed to W1; the client's next request (with the new sid) arrives
        // before W1's `sticky:connection` was processed.
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t0 = Instant::now();
        assert_eq!(r.route(None, t0), Route::Worker(W1));
        let arrived = t0 + ms(5);
        let hold = r.route(Some("newsid"), arrived);
        assert_eq!(hold, Route::Hold { until: t0 + ms(300) });
        // Still held on a re-ask before the registration.
        assert!(matches!(r.reroute("newsid", arrived, t0 + ms(20)), Route::Hold { .. }));
        // The registration lands: the held request goes to the right worker.
        assert!(r.on_session(W1, "newsid"));
        assert_eq!(r.reroute("newsid", arrived, t0 + ms(30)), Route::Worker(W1));
    }

    #[test]
    fn unknown_sid_is_not_held_without_recent_session_less_handoffs() {
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t0 = Instant::now();
        // Nothing routed as new recently: a stale sid is routed at once (to get its 400).
        assert!(matches!(r.route(Some("stale"), t0), Route::Worker(_)));
        // A handshake long ago no longer justifies a hold.
        r.route(None, t0);
        assert!(matches!(r.route(Some("stale"), t0 + ms(300)), Route::Worker(_)));
    }

    #[test]
    fn claimed_registrations_do_not_hold() {
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t0 = Instant::now();
        let w = worker(r.route(None, t0));
        r.on_session(w, "fresh");
        // The only hand-off is accounted for: an unknown sid is stale, no hold.
        assert!(matches!(r.route(Some("stale"), t0 + ms(1)), Route::Worker(_)));
    }

    #[test]
    fn hand_offs_after_arrival_do_not_extend_a_hold() {
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t0 = Instant::now();
        r.route(None, t0);
        let arrived = t0 + ms(10);
        assert_eq!(r.route(Some("x"), arrived), Route::Hold { until: t0 + ms(300) });
        // New handshakes keep coming; they can't have produced "x".
        r.route(None, t0 + ms(200));
        r.route(None, t0 + ms(290));
        // The first one expires at t0+300: hold over, routed as new.
        assert!(matches!(r.reroute("x", arrived, t0 + ms(300)), Route::Worker(_)));
    }

    #[test]
    fn hold_never_exceeds_window_from_arrival() {
        let mut r = ready_router(Policy::LeastConnection, &[W1]).with_hold_window(ms(100));
        let t0 = Instant::now();
        r.route(None, t0);
        let arrived = t0 + ms(50);
        match r.route(Some("x"), arrived) {
            Route::Hold { until } => assert!(until <= arrived + ms(100)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.reroute("x", arrived, arrived + ms(100)), Route::Worker(_)));
    }

    #[test]
    fn hold_ends_when_the_pending_worker_exits() {
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t0 = Instant::now();
        assert_eq!(r.route(None, t0), Route::Worker(W1));
        let arrived = t0 + ms(1);
        assert!(matches!(r.route(Some("x"), arrived), Route::Hold { .. }));
        r.remove_worker(W1);
        assert_eq!(r.reroute("x", arrived, t0 + ms(2)), Route::Worker(W2));
    }

    #[test]
    fn route_unheld_ignores_pending_registrations() {
        let mut r = ready_router(Policy::LeastConnection, &[W1, W2]);
        let t0 = Instant::now();
        r.route(None, t0);
        assert!(matches!(r.route(Some("x"), t0), Route::Hold { .. }));
        assert!(matches!(r.route_unheld("x", t0), Route::Worker(_)));
        r.on_session(W2, "known");
        assert_eq!(r.route_unheld("known", t0), Route::Worker(W2));
    }

    #[test]
    fn held_with_no_ready_worker_then_no_worker() {
        let mut r = ready_router(Policy::LeastConnection, &[W1]);
        let t0 = Instant::now();
        r.route(None, t0);
        r.set_draining(W1);
        // W1 may still register the sid: hold.
        assert!(matches!(r.route(Some("x"), t0), Route::Hold { .. }));
        // After the window nothing can take it.
        assert_eq!(r.reroute("x", t0, t0 + ms(300)), Route::NoWorker);
    }

    #[test]
    fn pending_queue_is_bounded() {
        let mut r = ready_router(Policy::LeastConnection, &[W1]);
        let t0 = Instant::now();
        for _ in 0..(MAX_PENDING_PER_WORKER + 10) {
            r.route(None, t0);
        }
        assert_eq!(r.workers[&W1].pending.len(), MAX_PENDING_PER_WORKER);
    }

    #[test]
    fn random_operation_sequences_keep_the_table_consistent() {
        let mut seed: u64 = 99;
        let mut rnd = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for policy in [Policy::LeastConnection, Policy::RoundRobin, Policy::Random] {
            let mut r = Router::with_seed(policy, 3);
            let t0 = Instant::now();
            let mut now = t0;
            for _ in 0..5000 {
                now += ms(rnd(20));
                let id = WorkerId(rnd(5) as u32);
                let sid = format!("s{}", rnd(40));
                match rnd(10) {
                    0 => r.add_worker(id),
                    1 => r.set_ready(id),
                    2 => r.set_draining(id),
                    3 => {
                        let sids = r.remove_worker(id);
                        assert!(sids.iter().all(|s| r.owner(s).is_none()));
                    }
                    4 => {
                        r.on_session(id, &sid);
                    }
                    5 => {
                        r.on_session_closed(id, &sid);
                    }
                    6 => r.handoff_started(id),
                    7 => r.handoff_finished(id),
                    8 => match r.route(None, now) {
                        Route::Worker(w) => assert!(r.is_ready(w)),
                        Route::NoWorker => assert!(!r.has_ready_worker()),
                        Route::Hold { .. } => panic!("a session-less request is never held"),
                    },
                    _ => {
                        let arrived = now - ms(rnd(400));
                        match r.reroute(&sid, arrived, now) {
                            Route::Worker(w) => assert!(r.has_worker(w)),
                            Route::Hold { until } => {
                                assert!(until > now && until <= arrived + DEFAULT_HOLD_WINDOW)
                            }
                            Route::NoWorker => assert!(!r.has_ready_worker()),
                        }
                    }
                }
                let counted: usize = r.workers.values().map(|w| w.sids.len()).sum();
                assert_eq!(counted, r.sessions.len());
                for (sid, owner) in &r.sessions {
                    assert!(r.workers[owner].sids.contains(sid));
                }
            }
        }
    }

    #[test]
    fn operations_on_unknown_workers_are_harmless() {
        let mut r = Router::new(Policy::RoundRobin);
        let x = WorkerId(7);
        r.set_ready(x);
        r.set_draining(x);
        r.handoff_started(x);
        r.handoff_finished(x);
        assert!(!r.on_session(x, "s"));
        assert!(!r.on_session_closed(x, "s"));
        assert!(r.remove_worker(x).is_empty());
        assert_eq!(r.session_count(x), 0);
        assert!(!r.has_ready_worker());
    }
}
