//! Health checks of an app (startup, readiness, liveness probes and the
//! sd_notify protocol) and the health state a process reports.
//!
//! The probe model follows Kubernetes (`httpGet`, `tcpSocket`, `exec`;
//! `periodSeconds`, `timeoutSeconds`, `successThreshold`, `failureThreshold`,
//! `initialDelaySeconds`) with the same defaults; durations are kept in
//! milliseconds here.

use serde::{Deserialize, Serialize};

/// What one probe checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProbeCheck {
    /// `GET path` on 127.0.0.1:`port`: healthy when the status is `status`
    /// (any 2xx/3xx when `None`, as Kubernetes).
    Http { path: String, port: Option<u16>, status: Option<u16> },
    /// A TCP connection to 127.0.0.1:`port` succeeds.
    Tcp { port: Option<u16> },
    /// The command (run without a shell when given as a list, with `sh -c`
    /// when one string) exits 0, in the app's cwd with the app's env.
    Exec { command: Vec<String> },
}

impl ProbeCheck {
    /// The port the check uses, if it has one of its own.
    pub fn port(&self) -> Option<u16> {
        match self {
            ProbeCheck::Http { port, .. } | ProbeCheck::Tcp { port } => *port,
            ProbeCheck::Exec { .. } => None,
        }
    }

    /// Whether the check needs a port (its own or the app's `PORT`).
    pub fn needs_port(&self) -> bool {
        !matches!(self, ProbeCheck::Exec { .. })
    }

    /// Short human form (`http GET /health`, `tcp :3000`, `exec cmd`).
    pub fn describe(&self) -> String {
        let port = |p: &Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_else(|| ":$PORT".into());
        match self {
            ProbeCheck::Http { path, port: p, .. } => format!("http GET {}{path}", port(p)),
            ProbeCheck::Tcp { port: p } => format!("tcp {}", port(p)),
            ProbeCheck::Exec { command } => format!("exec {}", command.join(" ")),
        }
    }
}

/// One probe and its schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub check: ProbeCheck,
    /// `periodSeconds` (default 10 s).
    pub period_ms: u64,
    /// `timeoutSeconds` (default 1 s).
    pub timeout_ms: u64,
    /// `successThreshold` (default 1; must be 1 for liveness and startup).
    pub success_threshold: u32,
    /// `failureThreshold` (default 3).
    pub failure_threshold: u32,
    /// `initialDelaySeconds`: the start period, counted from the launch,
    /// before the first probe (default 0).
    pub initial_delay_ms: u64,
}

impl Probe {
    pub const DEFAULT_PERIOD_MS: u64 = 10_000;
    pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;
    pub const DEFAULT_SUCCESS: u32 = 1;
    pub const DEFAULT_FAILURE: u32 = 3;

    pub fn new(check: ProbeCheck) -> Probe {
        Probe {
            check,
            period_ms: Self::DEFAULT_PERIOD_MS,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            success_threshold: Self::DEFAULT_SUCCESS,
            failure_threshold: Self::DEFAULT_FAILURE,
            initial_delay_ms: 0,
        }
    }

    /// How long this probe may take to pass from the launch before it has
    /// failed `failure_threshold` times in a row: the start period plus the
    /// failed attempts.
    pub fn budget_ms(&self) -> u64 {
        self.initial_delay_ms
            .saturating_add(self.period_ms.saturating_mul(u64::from(self.failure_threshold)))
            .saturating_add(self.timeout_ms)
    }
}

/// The health checks of an app. `None` in [`crate::AppSpec::health`] when
/// the app has none (it costs nothing then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct HealthSpec {
    pub startup: Option<Probe>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
    /// Offer `NOTIFY_SOCKET`; the app is ready once it sends `READY=1`.
    pub notify: bool,
    /// `WATCHDOG_USEC` in milliseconds: the app must send `WATCHDOG=1` at
    /// least this often or it counts as a liveness failure (restart).
    pub watchdog_ms: Option<u64>,
}

impl HealthSpec {
    pub fn has_probes(&self) -> bool {
        self.startup.is_some() || self.readiness.is_some() || self.liveness.is_some()
    }

    /// The app is given `NOTIFY_SOCKET`.
    pub fn offers_notify(&self) -> bool {
        self.notify || self.watchdog_ms.is_some() || self.has_probes()
    }

    /// A new process is not ready until its checks say so (a startup or
    /// readiness probe, or `READY=1`); a liveness probe or a watchdog alone
    /// does not hold it back.
    pub fn gates_readiness(&self) -> bool {
        self.startup.is_some() || self.readiness.is_some() || self.notify
    }

    /// The app must say `READY=1` before it is ready.
    pub fn waits_for_notify(&self) -> bool {
        self.notify
    }

    /// How long a new process may take to become ready before a reload gives
    /// up on it: the startup probe's budget, else the readiness probe's, at
    /// least `listen_timeout`.
    pub fn ready_budget_ms(&self, listen_timeout: u64) -> u64 {
        let probe = self.startup.as_ref().or(self.readiness.as_ref()).map(Probe::budget_ms).unwrap_or(0);
        probe.max(listen_timeout)
    }
}

/// Where a process stands, as `pm2_env.health.status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Not running, or nothing known yet.
    #[default]
    Unknown,
    /// Running, not yet shown it is ready (start period, startup probe,
    /// waiting for `ready` / `READY=1`).
    Starting,
    Ready,
    /// Was ready, its readiness probe now fails: no new connections.
    Unready,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Unknown => "unknown",
            HealthStatus::Starting => "starting",
            HealthStatus::Ready => "ready",
            HealthStatus::Unready => "unready",
        }
    }
}

/// The last result of a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ProbeResult {
    /// `startup`, `readiness`, `liveness` or `watchdog`.
    pub probe: String,
    pub ok: bool,
    /// What was seen (`HTTP 200`, `connection refused`, `exit code 1`, ...).
    pub detail: String,
    /// Epoch milliseconds.
    pub at: u64,
}

/// A process's health, kept by its supervisor (`pm2_env.health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct HealthInfo {
    pub status: HealthStatus,
    pub last: Option<ProbeResult>,
    /// Failed probes of the current run, all probes together.
    pub failures: u32,
    /// The last `STATUS=` the app sent over `NOTIFY_SOCKET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_status: Option<String>,
}
