//! The Prometheus endpoint (`PM2_METRICS=host:port`, off when unset: then nothing here runs
//! and nothing is allocated). `GET /metrics` answers, in text exposition format 0.0.4:
//!
//! - per process (`app`, `pm_id` labels): cpu, memory, restarts, uptime, status, health;
//! - the sticky balancer: connections accepted, hand-offs, the balancer's own answers by
//!   status, requests in flight, hand-off latency, and per worker (`app`, `pm_id`, `pid`) its
//!   Socket.IO sessions and readiness;
//! - the adapter relay: frames and bytes by adapter message type, frames dropped;
//! - the cluster listeners: connections each worker accepted;
//! - the daemon: resident memory, open descriptors, event-loop lag;
//! - prom-client: the aggregate of every cluster app whose workers use prom-client's
//!   `AggregatorRegistry` (the daemon is their cluster primary; see [`promclient`]).
//!
//! The daemon's own names start with `corral_`. A scrape reads the process table and the
//! cluster registry under their short locks, the counters the hot paths bump
//! ([`counters`]), and samples processes' cpu and memory at most once a second (the same
//! sampling `pm2 ls` does).

pub mod counters;
pub mod expo;
pub mod http;
pub mod promclient;

use crate::dlog;
use crate::state::{Entry, SharedRef};
use corral_proto::Status;
use counters::{ANSWER_CODES, BALANCER, RELAY, RELAY_KINDS};
use expo::{Kind, Writer};
use http::Decision;
use node_ipc::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a scrape waits for the workers of apps known to answer prom-client requests
/// (prom-client's own primary waits 5 s; Prometheus' default scrape timeout is 10 s).
const PROM_WAIT: Duration = Duration::from_secs(3);
/// Times a worker of an app not known to answer is asked (1 s, 2 s, 4 s ... apart: its
/// `AggregatorRegistry` may not exist yet when it is new).
const PROM_PROBES: u8 = 7;
/// Scrapes in a row without any answer after which an app counts as not answering.
const PROM_MISSES: u8 = 3;
/// Period of the event-loop lag probe.
const LAG_PROBE: Duration = Duration::from_millis(500);

/// Starts the endpoint when `PM2_METRICS` is set. A bad address or a port taken is logged;
/// the daemon runs on without metrics.
pub async fn start(shared: &SharedRef) {
    let Some(addr) = shared.config.metrics_addr.clone() else { return };
    let listener = match TcpListener::bind(addr.as_str()).await {
        Ok(l) => l,
        Err(e) => {
            dlog::error(&format!("PM2_METRICS {addr}: cannot listen ({e}); metrics are off"));
            return;
        }
    };
    let shown = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    dlog::log(&format!("Prometheus metrics on http://{shown}/metrics"));
    let prom = Arc::new(PromClient::default());
    let sink = prom.clone();
    let weak = Arc::downgrade(&shared.cluster);
    shared.cluster.set_metric_reply_sink(Box::new(move |wid, v| sink.on_reply(&weak, wid, v)));
    tokio::spawn(lag_probe());
    tokio::spawn(serve(Arc::downgrade(shared), listener, prom));
}

/// How late a periodic timer fires is how long the daemon's one thread was busy.
async fn lag_probe() {
    loop {
        let t0 = Instant::now();
        tokio::time::sleep(LAG_PROBE).await;
        counters::EVENT_LOOP_LAG.observe(t0.elapsed().saturating_sub(LAG_PROBE));
    }
}

async fn serve(shared: Weak<crate::state::Shared>, listener: TcpListener, prom: Arc<PromClient>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, say: wait instead of spinning.
                dlog::error(&format!("metrics endpoint: accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(shared) = shared.upgrade() else { return };
        if shared.is_shutting_down() {
            return;
        }
        if open.load(Relaxed) >= http::MAX_CONNECTIONS {
            continue; // dropped: closed at once
        }
        open.fetch_add(1, Relaxed);
        let (open, prom) = (open.clone(), prom.clone());
        tokio::spawn(async move {
            connection(stream, &shared, &prom).await;
            open.fetch_sub(1, Relaxed);
        });
    }
}

async fn connection(mut s: TcpStream, shared: &SharedRef, prom: &PromClient) {
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        let wait = if first { http::HEAD_TIMEOUT } else { http::IDLE_TIMEOUT };
        first = false;
        let end = match tokio::time::timeout(wait, http::read_head(&mut s, &mut buf)).await {
            Ok(Ok(end)) => end,
            Ok(Err(http::HeadError::TooLarge)) => {
                http::refuse(&mut s, 431).await;
                return;
            }
            Ok(Err(http::HeadError::Closed)) => return,
            Err(_) if buf.is_empty() => return, // idle keep-alive connection
            Err(_) => {
                http::refuse(&mut s, 408).await;
                return;
            }
        };
        let decision = http::decide(&buf[..end]);
        buf.drain(..end);
        match decision {
            Decision::Refuse(status) => {
                http::refuse(&mut s, status).await;
                return;
            }
            Decision::Metrics { keep_alive } => {
                // Scraped less often than every two seconds, the pages a
                // scrape touches are given back in between.
                crate::trim::activity();
                let body = render(shared, prom).await;
                let mut out = http::ok_head(expo::CONTENT_TYPE, body.len(), keep_alive);
                out.extend_from_slice(body.as_bytes());
                if !http::write_all(&mut s, &out).await || !keep_alive {
                    return;
                }
            }
        }
    }
}

/// The whole exposition.
pub async fn render(shared: &SharedRef, prom: &PromClient) -> String {
    let mut w = Writer::new();
    processes(&mut w, shared);
    cluster(&mut w, shared);
    daemon(&mut w);
    let apps = prom.collect(shared).await;
    promclient::write(&mut w, &apps);
    w.finish()
}

/// The one place a process's health enters the metrics: `Some(true)` ready, `Some(false)`
/// starting or failing its readiness checks, `None` when it has no health checks (no sample
/// is written).
fn health(e: &Entry) -> Option<bool> {
    e.info.health.as_ref().map(|h| h.status == corral_proto::HealthStatus::Ready)
}

const STATUSES: [Status; 6] = [
    Status::Online,
    Status::Launching,
    Status::Stopping,
    Status::Stopped,
    Status::Errored,
    Status::WaitingRestart,
];

struct ProcRow {
    app: String,
    pm_id: String,
    status: Status,
    cpu: f64,
    memory: u64,
    restarts: u32,
    uptime: f64,
    healthy: Option<bool>,
}

fn processes(w: &mut Writer, shared: &SharedRef) {
    let rows: Vec<ProcRow> = {
        let mut t = shared.table();
        // Each process's sample is reused for a while by `monitor` itself.
        crate::monitor::refresh(&mut t);
        let now = crate::timefmt::now_ms();
        t.procs
            .values()
            .map(|e| ProcRow {
                app: e.info.app.name.clone(),
                pm_id: e.info.pm_id.to_string(),
                status: e.info.status,
                cpu: e.info.cpu,
                memory: e.info.memory,
                restarts: e.info.restart_time,
                uptime: if e.info.status == Status::Online {
                    now.saturating_sub(e.info.pm_uptime) as f64 / 1000.0
                } else {
                    0.0
                },
                healthy: health(e),
            })
            .collect()
    };
    let l = |r: &ProcRow| [("app", r.app.clone()), ("pm_id", r.pm_id.clone())];
    w.family(
        "corral_process_cpu_usage_ratio",
        "CPU used by the process, 1 = one core (pm2's cpu % / 100).",
        Kind::Gauge,
    );
    for r in &rows {
        w.sample("corral_process_cpu_usage_ratio", &l(r), r.cpu / 100.0);
    }
    w.family("corral_process_memory_bytes", "Resident memory of the process.", Kind::Gauge);
    for r in &rows {
        w.sample("corral_process_memory_bytes", &l(r), r.memory as f64);
    }
    w.family("corral_process_restarts_total", "Restarts of the process (pm2's restart_time).", Kind::Counter);
    for r in &rows {
        w.sample("corral_process_restarts_total", &l(r), r.restarts as f64);
    }
    w.family(
        "corral_process_uptime_seconds",
        "Time since the process went online; 0 when not online.",
        Kind::Gauge,
    );
    for r in &rows {
        w.sample("corral_process_uptime_seconds", &l(r), r.uptime);
    }
    w.family(
        "corral_process_status",
        "1 for the process's status (pm2's status names), 0 for the others.",
        Kind::Gauge,
    );
    for r in &rows {
        for s in STATUSES {
            let labels = [("app", r.app.as_str()), ("pm_id", r.pm_id.as_str()), ("status", s.as_str())];
            w.sample("corral_process_status", &labels, if r.status == s { 1.0 } else { 0.0 });
        }
    }
    if rows.iter().any(|r| r.healthy.is_some()) {
        w.family(
            "corral_process_healthy",
            "1 when the process passes its health checks, else 0.",
            Kind::Gauge,
        );
        for r in &rows {
            if let Some(h) = r.healthy {
                w.sample("corral_process_healthy", &l(r), if h { 1.0 } else { 0.0 });
            }
        }
    }
}

struct WorkerRow {
    app: String,
    pm_id: String,
    pid: String,
    sessions: Option<usize>,
    ready: Option<bool>,
    conns: u64,
}

/// Adapter message type names (`@socket.io/cluster-adapter`'s `MessageType`).
fn relay_kind_name(k: usize) -> &'static str {
    match k {
        1 => "INITIAL_HEARTBEAT",
        2 => "HEARTBEAT",
        3 => "BROADCAST",
        4 => "SOCKETS_JOIN",
        5 => "SOCKETS_LEAVE",
        6 => "DISCONNECT_SOCKETS",
        7 => "FETCH_SOCKETS",
        8 => "FETCH_SOCKETS_RESPONSE",
        9 => "SERVER_SIDE_EMIT",
        10 => "SERVER_SIDE_EMIT_RESPONSE",
        11 => "BROADCAST_CLIENT_COUNT",
        12 => "BROADCAST_ACK",
        13 => "ADAPTER_CLOSE",
        _ => "other",
    }
}

fn cluster(w: &mut Writer, shared: &SharedRef) {
    let rows: Vec<WorkerRow> = {
        let reg = shared.cluster.reg();
        let mut v: Vec<(u32, WorkerRow)> = reg
            .workers
            .iter()
            // Cluster workers only (fork apps have a channel too, but no listener or session).
            .filter(|(_, l)| reg.apps.contains_key(&l.app))
            .map(|(wid, l)| {
                let sa = reg.apps.get(&l.app).filter(|sa| sa.enabled && !sa.disabled);
                let id = crate::sticky::WorkerId(*wid);
                (
                    *wid,
                    WorkerRow {
                        app: l.app.clone(),
                        pm_id: l.pm_id.to_string(),
                        pid: l.pid.to_string(),
                        sessions: sa.map(|sa| sa.router.session_count(id)),
                        ready: sa
                            .and_then(|sa| sa.router.state(id))
                            .map(|s| s == crate::sticky::WorkerState::Ready),
                        conns: counters::listener_connections(*wid),
                    },
                )
            })
            .collect();
        v.sort_by_key(|(wid, _)| *wid);
        v.into_iter().map(|(_, r)| r).collect()
    };
    let l = |r: &WorkerRow| [("app", r.app.clone()), ("pm_id", r.pm_id.clone()), ("pid", r.pid.clone())];

    w.family(
        "corral_balancer_connections_accepted_total",
        "Connections the sticky balancer accepted.",
        Kind::Counter,
    );
    w.sample::<&str, &str>(
        "corral_balancer_connections_accepted_total",
        &[],
        BALANCER.accepted.load(Relaxed) as f64,
    );
    w.family(
        "corral_balancer_handoffs_total",
        "Connections the sticky balancer handed to a worker.",
        Kind::Counter,
    );
    w.sample::<&str, &str>("corral_balancer_handoffs_total", &[], BALANCER.handed_off.load(Relaxed) as f64);
    w.family(
        "corral_balancer_responses_total",
        "Requests the sticky balancer answered itself, by status.",
        Kind::Counter,
    );
    for (i, code) in ANSWER_CODES.iter().enumerate() {
        let c = code.to_string();
        w.sample(
            "corral_balancer_responses_total",
            &[("code", c.as_str())],
            BALANCER.answered[i].load(Relaxed) as f64,
        );
    }
    w.family(
        "corral_balancer_requests_in_flight",
        "Connections being read or routed by the sticky balancer.",
        Kind::Gauge,
    );
    w.sample::<&str, &str>(
        "corral_balancer_requests_in_flight",
        &[],
        BALANCER.in_flight.load(Relaxed).max(0) as f64,
    );
    w.family(
        "corral_balancer_handoff_duration_seconds",
        "Time from accepting a connection to the worker taking it.",
        Kind::Histogram,
    );
    w.histogram("corral_balancer_handoff_duration_seconds", &[], &BALANCER.handoff_latency.snapshot());
    w.family("corral_balancer_sessions", "Engine.IO sessions on a Socket.IO worker.", Kind::Gauge);
    for r in &rows {
        if let Some(n) = r.sessions {
            w.sample("corral_balancer_sessions", &l(r), n as f64);
        }
    }
    w.family(
        "corral_balancer_worker_ready",
        "1 when a Socket.IO worker takes new sessions, 0 when not yet or draining.",
        Kind::Gauge,
    );
    for r in &rows {
        if let Some(ready) = r.ready {
            w.sample("corral_balancer_worker_ready", &l(r), if ready { 1.0 } else { 0.0 });
        }
    }

    for (name, help, counts) in [
        (
            "corral_relay_frames_total",
            "Socket.IO adapter frames relayed, by adapter message type.",
            &RELAY.frames,
        ),
        (
            "corral_relay_bytes_total",
            "Bytes of the adapter frames relayed, by adapter message type.",
            &RELAY.bytes,
        ),
    ] {
        w.family(name, help, Kind::Counter);
        for (k, c) in counts.iter().enumerate().take(RELAY_KINDS + 1) {
            let n = c.load(Relaxed);
            if n > 0 {
                w.sample(name, &[("type", relay_kind_name(k))], n as f64);
            }
        }
    }
    w.family(
        "corral_relay_dropped_frames_total",
        "Adapter frame copies not delivered (the worker's channel closed or full).",
        Kind::Counter,
    );
    w.sample::<&str, &str>("corral_relay_dropped_frames_total", &[], RELAY.dropped.load(Relaxed) as f64);

    w.family(
        "corral_cluster_connections_total",
        "Connections a cluster worker accepted from its app's shared listeners.",
        Kind::Counter,
    );
    for r in &rows {
        w.sample("corral_cluster_connections_total", &l(r), r.conns as f64);
    }
}

fn daemon(w: &mut Writer) {
    let page = {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as f64
        } else {
            4096.0
        }
    };
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map(|pages| pages * page);
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count().saturating_sub(1)).ok();
    let (utime, stime) = self_cpu_ticks().unwrap_or((0, 0));
    if let Some(rss) = rss {
        w.family("corral_daemon_resident_memory_bytes", "Resident memory of the daemon.", Kind::Gauge);
        w.sample::<&str, &str>("corral_daemon_resident_memory_bytes", &[], rss);
    }
    if let Some(fds) = fds {
        w.family("corral_daemon_open_fds", "Open file descriptors of the daemon.", Kind::Gauge);
        w.sample::<&str, &str>("corral_daemon_open_fds", &[], fds as f64);
    }
    w.family("corral_daemon_cpu_seconds_total", "CPU time the daemon used (user and system).", Kind::Counter);
    w.sample::<&str, &str>(
        "corral_daemon_cpu_seconds_total",
        &[],
        (utime + stime) as f64 / crate::proctree::clock_ticks() as f64,
    );
    w.family(
        "corral_daemon_event_loop_lag_seconds",
        "How late the daemon's periodic probe ran (its one thread busy meanwhile).",
        Kind::Histogram,
    );
    w.histogram("corral_daemon_event_loop_lag_seconds", &[], &counters::EVENT_LOOP_LAG.snapshot());
}

/// utime and stime of the daemon, in clock ticks.
fn self_cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// Whether an app's workers answer prom-client's requests. A worker of an app not known to
/// answer is asked a few times early in its life ([`PROM_PROBES`]), at scrapes, without the
/// scrape waiting for it: an answer makes the app known (its metrics are in the next
/// scrapes), and an app that does not use prom-client gets a handful of messages per worker,
/// not one per scrape.
#[derive(Debug, Clone, Default)]
struct AppProm {
    speaks: bool,
    /// Scrapes in a row it was asked and none of its workers answered.
    misses: u8,
    /// Probes of each live worker: how many so far, and when the next one is due.
    probed: HashMap<u32, (u8, Instant)>,
}

#[derive(Default)]
struct PromState {
    next_id: u64,
    waiting: HashMap<u64, mpsc::UnboundedSender<(u32, promclient::Reply)>>,
    apps: HashMap<String, AppProm>,
}

/// The daemon as prom-client's cluster primary: asks workers, gathers their replies.
#[derive(Default)]
pub struct PromClient {
    state: Mutex<PromState>,
}

impl PromClient {
    fn state(&self) -> std::sync::MutexGuard<'_, PromState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker's `prom-client:getMetricsRes`, from the cluster primary's reader.
    fn on_reply(&self, primary: &Weak<crate::cluster::Primary>, wid: u32, v: &Value) {
        let Some(reply) = promclient::parse_reply(v) else { return };
        let mut st = self.state();
        if let Some(tx) = reply.request_id.and_then(|id| st.waiting.get(&id)) {
            let _ = tx.send((wid, reply));
            return;
        }
        // A late answer (or to a request whose scrape did not wait): the app speaks it.
        let app = primary.upgrade().and_then(|p| p.reg().workers.get(&wid).map(|w| w.app.clone()));
        if let Some(app) = app {
            let a = st.apps.entry(app).or_default();
            a.speaks = true;
            a.misses = 0;
        }
    }

    /// Asks the cluster workers and aggregates what they answer, per app (sorted by name).
    async fn collect(&self, shared: &SharedRef) -> Vec<(String, Vec<promclient::Metric>)> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let id = {
            let mut st = self.state();
            let id = st.next_id;
            st.next_id = st.next_id.wrapping_add(1) % (1 << 53);
            st.waiting.insert(id, tx);
            id
        };
        let started = Instant::now();
        // wid -> (app, wait until)
        let mut awaited: HashMap<u32, (String, Instant)> = HashMap::new();
        let mut asked_apps: HashSet<String> = HashSet::new();
        {
            let mut st = self.state();
            let reg = shared.cluster.reg();
            let msg = promclient::request(id);
            for (wid, link) in reg.workers.iter() {
                // Cluster workers only (fork apps are no cluster workers to prom-client), and
                // not those being replaced (their replacement is asked).
                if link.draining || !reg.apps.contains_key(&link.app) {
                    continue;
                }
                let app = st.apps.entry(link.app.clone()).or_default();
                if !app.speaks {
                    let (n, due) = app.probed.get(wid).copied().unwrap_or((0, started));
                    if n >= PROM_PROBES || due > started {
                        continue;
                    }
                    app.probed.insert(*wid, (n + 1, started + Duration::from_secs(1 << n)));
                }
                if link.tx.send(&msg).is_err() {
                    continue;
                }
                asked_apps.insert(link.app.clone());
                if app.speaks {
                    awaited.insert(*wid, (link.app.clone(), started + PROM_WAIT));
                }
            }
        }
        let mut got: BTreeMap<String, Vec<promclient::Metric>> = BTreeMap::new();
        let mut answered: HashSet<String> = HashSet::new();
        let mut record =
            |wid: u32, reply: promclient::Reply, awaited: &mut HashMap<u32, (String, Instant)>| {
                let app = awaited.remove(&wid).map(|(a, _)| a).or_else(|| {
                    let reg = shared.cluster.reg();
                    reg.workers.get(&wid).map(|w| w.app.clone())
                });
                let Some(app) = app else { return };
                answered.insert(app.clone());
                if let Ok(ms) = reply.metrics {
                    got.entry(app).or_default().extend(ms);
                }
            };
        while let Some(until) = awaited.values().map(|(_, t)| *t).min() {
            tokio::select! {
                r = rx.recv() => match r {
                    Some((wid, reply)) => record(wid, reply, &mut awaited),
                    None => break,
                },
                _ = tokio::time::sleep_until(until.into()) => {
                    let now = Instant::now();
                    awaited.retain(|_, (_, t)| *t > now);
                }
            }
        }
        // Replies that arrived meanwhile from re-probed apps count too.
        while let Ok((wid, reply)) = rx.try_recv() {
            record(wid, reply, &mut awaited);
        }
        {
            let mut st = self.state();
            st.waiting.remove(&id);
            for name in asked_apps {
                let a = st.apps.entry(name.clone()).or_default();
                if answered.contains(&name) {
                    a.speaks = true;
                    a.misses = 0;
                } else if a.speaks {
                    a.misses += 1;
                    if a.misses >= PROM_MISSES {
                        a.speaks = false;
                        a.misses = 0;
                    }
                }
            }
            // Apps and workers gone from the registry are forgotten.
            let reg = shared.cluster.reg();
            st.apps.retain(|name, _| reg.apps.contains_key(name));
            for a in st.apps.values_mut() {
                a.probed.retain(|wid, _| reg.workers.contains_key(wid));
            }
        }
        got.into_iter().map(|(app, ms)| (app, promclient::aggregate(ms))).collect()
    }
}
