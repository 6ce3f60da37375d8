//! The daemon's settings, read once from its environment at start
//! ([`DaemonConfig::from_env`]) and passed to whoever needs them; nothing
//! else in the daemon reads environment variables, except [`crate::paths`],
//! which finds `PM2_HOME` (or `HOME`) before there is a home to start in. Names and defaults are
//! pm2's (and @socket.io/pm2's for the sticky ones).

use crate::sticky::HttpLimits;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// `PM2_PORT`: the default sticky balancer port (8080).
    pub pm2_port: u16,
    /// `PM2_STICKY_HOST`: the sticky balancer's bind address; all
    /// interfaces, dual stack, when unset (as pm2).
    pub sticky_host: Option<String>,
    /// `PM2_STICKY_MAX_BODY`, `PM2_STICKY_MAX_HEAD` (bytes),
    /// `PM2_STICKY_HEAD_TIMEOUT_MS`, `PM2_STICKY_BODY_TIMEOUT_MS`,
    /// `PM2_STICKY_STREAM_ABOVE` (bytes); else
    /// Engine.IO's own defaults.
    pub http_limits: HttpLimits,
    /// `PM2_GRACEFUL_TIMEOUT`: how long a worker replaced by a reload keeps
    /// its Socket.IO sessions (8000 ms).
    pub graceful_timeout: Duration,
    /// `PM2_WORKER_INTERVAL`: period of the memory-limit and backoff-reset
    /// check (30000 ms, at least 100).
    pub worker_interval: Duration,
    /// `EXP_BACKOFF_RESET_TIMER`: uptime after which the exponential
    /// backoff starts over (30000 ms).
    pub backoff_reset_ms: u64,
    /// `PM2_KILL_SIGNAL`: the first signal of a stop (SIGINT).
    pub kill_signal: i32,
    /// `PM2_KILL_USE_MESSAGE`: stop with the `'shutdown'` message first.
    pub kill_use_message: bool,
    /// `PM2_NODE_OPTIONS`: extra node arguments for every node app.
    pub node_options: Vec<String>,
    /// `PM2_DUMP_FILE_PATH`: dump.pm2 elsewhere than in PM2_HOME.
    pub dump_file: Option<PathBuf>,
    /// `PM2_CONTROL_IDLE_TIMEOUT_MS`: how long a control connection may sit
    /// between requests (60000 ms). A CLI sends its requests back to back
    /// (and reconnects if it waited longer); log streams are not subject to
    /// it.
    pub control_idle_timeout: Duration,
    /// `PM2_STICKY_MAX_CONNECTIONS`: connections the sticky balancer reads at
    /// once (else derived from the descriptor limit).
    pub sticky_max_connections: Option<usize>,
    /// `PM2_STICKY_BUFFER_BUDGET`: bytes the sticky balancer buffers at once
    /// across connections (else 64 MiB).
    pub sticky_buffer_budget: Option<usize>,
    /// `PM2_METRICS`: the address (`host:port`) of the Prometheus endpoint;
    /// none when unset or empty (no listener, no task).
    pub metrics_addr: Option<String>,
    /// The daemon's whole environment (cluster workers inherit it, as with
    /// pm2).
    pub env: BTreeMap<String, String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig::from_vars(std::iter::empty())
    }
}

impl DaemonConfig {
    pub fn from_env() -> Self {
        // Non-UTF-8 variables cannot be any of ours; children still get
        // every UTF-8 one.
        DaemonConfig::from_vars(
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let env: BTreeMap<String, String> = vars.into_iter().collect();
        let num = |k: &str| env.get(k).and_then(|v| v.trim().parse::<u64>().ok());
        let mut http_limits = HttpLimits::default();
        if let Some(v) = num("PM2_STICKY_MAX_BODY") {
            http_limits.max_body = v as usize;
        }
        if let Some(v) = num("PM2_STICKY_MAX_HEAD") {
            http_limits.max_head = v as usize;
        }
        if let Some(v) = num("PM2_STICKY_HEAD_TIMEOUT_MS") {
            http_limits.head_timeout = Duration::from_millis(v);
        }
        if let Some(v) = num("PM2_STICKY_BODY_TIMEOUT_MS") {
            http_limits.body_timeout = Duration::from_millis(v);
        }
        if let Some(v) = num("PM2_STICKY_STREAM_ABOVE") {
            http_limits.stream_above = v as usize;
        }
        DaemonConfig {
            pm2_port: env.get("PM2_PORT").and_then(|p| p.parse().ok()).unwrap_or(8080),
            sticky_host: env.get("PM2_STICKY_HOST").filter(|h| !h.is_empty()).cloned(),
            http_limits,
            graceful_timeout: Duration::from_millis(
                env.get("PM2_GRACEFUL_TIMEOUT").and_then(|v| v.parse().ok()).unwrap_or(8000),
            ),
            worker_interval: Duration::from_millis(
                env.get("PM2_WORKER_INTERVAL").and_then(|v| v.parse::<u64>().ok()).unwrap_or(30_000).max(100),
            ),
            backoff_reset_ms: env
                .get("EXP_BACKOFF_RESET_TIMER")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30_000),
            kill_signal: env
                .get("PM2_KILL_SIGNAL")
                .and_then(|s| crate::proctree::parse_signal(s))
                .unwrap_or(libc::SIGINT),
            kill_use_message: env.contains_key("PM2_KILL_USE_MESSAGE"),
            node_options: env
                .get("PM2_NODE_OPTIONS")
                .map(|s| s.split_whitespace().map(String::from).collect())
                .unwrap_or_default(),
            dump_file: env.get("PM2_DUMP_FILE_PATH").map(PathBuf::from),
            control_idle_timeout: Duration::from_millis(num("PM2_CONTROL_IDLE_TIMEOUT_MS").unwrap_or(60_000)),
            sticky_max_connections: num("PM2_STICKY_MAX_CONNECTIONS").map(|v| v as usize),
            sticky_buffer_budget: num("PM2_STICKY_BUFFER_BUDGET").map(|v| v as usize),
            metrics_addr: env
                .get("PM2_METRICS")
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(String::from),
            env,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> DaemonConfig {
        DaemonConfig::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn pm2_defaults() {
        let c = cfg(&[]);
        assert_eq!(c.pm2_port, 8080);
        assert_eq!(c.sticky_host, None);
        assert_eq!(c.graceful_timeout, Duration::from_millis(8000));
        assert_eq!(c.worker_interval, Duration::from_millis(30_000));
        assert_eq!(c.backoff_reset_ms, 30_000);
        assert_eq!(c.kill_signal, libc::SIGINT);
        assert!(!c.kill_use_message);
        assert!(c.node_options.is_empty());
        assert_eq!(c.dump_file, None);
        assert_eq!(c.control_idle_timeout, Duration::from_secs(60));
        assert_eq!((c.sticky_max_connections, c.sticky_buffer_budget), (None, None));
        assert_eq!(c.metrics_addr, None);
        assert_eq!(cfg(&[("PM2_METRICS", " ")]).metrics_addr, None, "empty means off");
        assert_eq!(cfg(&[("PM2_METRICS", "127.0.0.1:9209")]).metrics_addr.as_deref(), Some("127.0.0.1:9209"));
    }

    #[test]
    fn variables_override_and_bad_values_fall_back() {
        let c = cfg(&[
            ("PM2_PORT", "9000"),
            ("PM2_STICKY_HOST", ""),
            ("PM2_WORKER_INTERVAL", "5"),
            ("PM2_KILL_SIGNAL", "SIGTERM"),
            ("PM2_KILL_USE_MESSAGE", "1"),
            ("PM2_NODE_OPTIONS", " --max-old-space-size=64  --trace-warnings "),
            ("PM2_GRACEFUL_TIMEOUT", "soon"),
            ("PM2_STICKY_MAX_BODY", "1024"),
            ("PM2_CONTROL_IDLE_TIMEOUT_MS", "250"),
            ("PM2_STICKY_MAX_CONNECTIONS", "64"),
            ("PM2_STICKY_BUFFER_BUDGET", "lots"),
        ]);
        assert_eq!(c.control_idle_timeout, Duration::from_millis(250));
        assert_eq!((c.sticky_max_connections, c.sticky_buffer_budget), (Some(64), None));
        assert_eq!(c.pm2_port, 9000);
        assert_eq!(c.sticky_host, None, "empty means unset");
        assert_eq!(c.worker_interval, Duration::from_millis(100), "floored");
        assert_eq!(c.kill_signal, libc::SIGTERM);
        assert!(c.kill_use_message);
        assert_eq!(c.node_options, ["--max-old-space-size=64", "--trace-warnings"]);
        assert_eq!(c.graceful_timeout, Duration::from_millis(8000));
        assert_eq!(c.http_limits.max_body, 1024);
        assert_eq!(cfg(&[("PM2_KILL_SIGNAL", "NOPE")]).kill_signal, libc::SIGINT);
    }
}
