//! The one validated app model. `corral-config` builds it from CLI flags,
//! ecosystem files and saved dumps; the daemon runs it. Every path in it is
//! absolute and every default is applied, so the daemon never guesses.
//!
//! Serialized with defaults on every field so that specs saved by an older
//! Corral stay loadable.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ExecMode {
    #[default]
    #[serde(rename = "fork_mode")]
    Fork,
    #[serde(rename = "cluster_mode")]
    Cluster,
}

impl ExecMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecMode::Fork => "fork_mode",
            ExecMode::Cluster => "cluster_mode",
        }
    }
}

/// A fully resolved application declaration (one entry of an ecosystem
/// file, or one `pm2 start` command line). One spec fans out into
/// `instances` processes in the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSpec {
    pub name: String,
    pub namespace: String,
    /// Absolute path of the script, or a command name found in `$PATH`
    /// resolved to its absolute path. Becomes `pm_exec_path`.
    pub script: String,
    pub args: Vec<String>,
    /// Absolute working directory (`pm_cwd`).
    pub cwd: String,
    /// Program that runs `script`: absolute path or bare name (`node`,
    /// `bash`, ...), or `"none"` to exec the script itself.
    pub interpreter: String,
    /// `node_args` / `interpreter_args`: placed before the script.
    pub node_args: Vec<String>,
    pub exec_mode: ExecMode,
    /// Raw value as pm2 shows it: 0 = all cores, negative = all but k.
    /// `None` when the user did not set it (pm2's `instances` undefined).
    pub instances: Option<i64>,
    /// The complete environment of the app: the CLI's env at start time,
    /// then `env`, then `env_<name>`. pm2's injected keys are added by the
    /// daemon at spawn time and are not stored here.
    pub env: BTreeMap<String, String>,
    /// Env values the user gave as JSON numbers or booleans (an ecosystem
    /// file's `env: {PORT: 3000}`), keyed like `env`. The process gets the
    /// string form from `env`; `jlist`/`prettylist` show these typed, as pm2
    /// keeps them. An entry only counts while `env` still holds its string
    /// form (a later `--update-env` with another value wins).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env_typed: BTreeMap<String, serde_json::Value>,
    /// `out_file`, `error_file`: absolute paths, `None` = pm2's default under
    /// `PM2_HOME/logs`; `"/dev/null"` disables the stream.
    pub out_file: Option<String>,
    pub error_file: Option<String>,
    pub log_file: Option<String>,
    pub pid_file: Option<String>,
    pub merge_logs: bool,
    /// dayjs-style format string; `time: true` is stored as the pm2 default
    /// `YYYY-MM-DDTHH:mm:ss`.
    pub log_date_format: Option<String>,
    pub log_type: Option<String>,
    pub disable_logs: bool,
    pub autorestart: bool,
    pub autostart: bool,
    pub max_restarts: u32,
    /// Milliseconds.
    pub min_uptime: u64,
    pub restart_delay: u64,
    pub exp_backoff_restart_delay: Option<u64>,
    pub kill_timeout: u64,
    pub kill_retry_time: u64,
    pub stop_exit_codes: Vec<i32>,
    pub instance_var: String,
    pub increment_var: Option<String>,
    pub treekill: bool,
    pub wait_ready: bool,
    pub listen_timeout: u64,
    pub shutdown_with_message: bool,
    /// Bytes.
    pub max_memory_restart: Option<u64>,
    pub cron_restart: Option<String>,
    pub watch: bool,
    pub watch_paths: Vec<String>,
    pub ignore_watch: Vec<String>,
    pub watch_delay: u64,
    /// Socket.IO sticky routing and adapter relay: `None` = decided by the
    /// workers announcing themselves (adapter heartbeat / sticky message).
    pub sticky: Option<bool>,
    pub sticky_port: Option<u16>,
    /// The Socket.IO cluster this app joins across nodes (`PM2_CLUSTER_REDIS`):
    /// `None` = its name; `Some("")` = this app stays on its node
    /// (`cluster_group: false`); otherwise that group name.
    pub cluster_group: Option<String>,
    /// Startup / readiness / liveness probes and sd_notify (`None`: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthSpec>,
    /// `listen_fds` / `--listen`: addresses (`host:port`) the daemon binds
    /// once and passes to every instance with the systemd socket-activation
    /// protocol (fd 3 and up, `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listen_fds: Vec<String>,
    /// `version` of the nearest package.json above the script, if any.
    pub version: Option<String>,
    /// Every `env_<name>` object and any unknown key from the ecosystem file,
    /// kept so `jlist`/`dump.pm2` show them as pm2 does.
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for AppSpec {
    fn default() -> Self {
        AppSpec {
            name: String::new(),
            namespace: "default".into(),
            script: String::new(),
            args: Vec::new(),
            cwd: String::new(),
            interpreter: "node".into(),
            node_args: Vec::new(),
            exec_mode: ExecMode::Fork,
            instances: None,
            env: BTreeMap::new(),
            env_typed: BTreeMap::new(),
            out_file: None,
            error_file: None,
            log_file: None,
            pid_file: None,
            merge_logs: true,
            log_date_format: None,
            log_type: None,
            disable_logs: false,
            autorestart: true,
            autostart: true,
            max_restarts: 16,
            min_uptime: 1000,
            restart_delay: 0,
            exp_backoff_restart_delay: None,
            kill_timeout: 1600,
            kill_retry_time: 100,
            stop_exit_codes: Vec::new(),
            instance_var: "NODE_APP_INSTANCE".into(),
            increment_var: None,
            treekill: true,
            wait_ready: false,
            listen_timeout: 3000,
            shutdown_with_message: false,
            max_memory_restart: None,
            cron_restart: None,
            watch: false,
            watch_paths: Vec::new(),
            ignore_watch: Vec::new(),
            watch_delay: 0,
            sticky: None,
            sticky_port: None,
            cluster_group: None,
            health: None,
            listen_fds: Vec::new(),
            version: None,
            extra: BTreeMap::new(),
        }
    }
}

/// The JavaScript runtime an app's interpreter is, as far as the daemon
/// treats runtimes differently (command line, IPC serialization, cluster
/// hand-out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Node,
    /// Speaks Node's IPC channel, but only JSON to a non-Bun parent: its
    /// "advanced" serialization is JavaScriptCore's, not V8's.
    Bun,
    /// `deno run` with permission flags; V8 "advanced" IPC like Node.
    Deno,
    /// Anything else: no IPC channel, no cluster mode.
    Other,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Node => "node",
            Runtime::Bun => "bun",
            Runtime::Deno => "deno",
            Runtime::Other => "other",
        }
    }
}

impl AppSpec {
    /// True when the interpreter is Node (so the child gets an IPC channel
    /// and can become a cluster worker).
    pub fn is_node(&self) -> bool {
        self.runtime() == Runtime::Node
    }

    /// The runtime, from the interpreter's file name (`bun`,
    /// `/opt/x/node_modules/.bin/deno`, `node@20`...).
    pub fn runtime(&self) -> Runtime {
        let base = self.interpreter.rsplit('/').next().unwrap_or("");
        let base = base.strip_suffix(".exe").unwrap_or(base);
        if base == "node" || base.starts_with("node@") || base == "nodejs" {
            Runtime::Node
        } else if base == "bun" {
            Runtime::Bun
        } else if base == "deno" {
            Runtime::Deno
        } else {
            Runtime::Other
        }
    }

    /// True when the runtime implements `node:cluster` over Node's IPC
    /// channel, so the daemon can be its cluster primary.
    pub fn can_cluster(&self) -> bool {
        matches!(self.runtime(), Runtime::Node | Runtime::Bun | Runtime::Deno)
    }
}

/// The pm2_env keys the daemon writes into every child's environment (as
/// pm2 does), and the ones pm2 itself adds to a saved `env`. One list for
/// both sides: the daemon injects the ones it has a value for, and reading a
/// dump drops all of them to get the app's own environment back.
pub const INJECTED_ENV_KEYS: &[&str] = &[
    "pm_id",
    "name",
    "namespace",
    "instance_var",
    "unique_id",
    "pm_exec_path",
    "pm_cwd",
    "pm_out_log_path",
    "pm_err_log_path",
    "pm_pid_path",
    "pm_log_path",
    "exec_mode",
    "exec_interpreter",
    "instances",
    "node_args",
    "args",
    "status",
    "restart_time",
    "unstable_restarts",
    "created_at",
    "pm_uptime",
    "autorestart",
    "autostart",
    "treekill",
    "merge_logs",
    "username",
    "kill_retry_time",
    "windowsHide",
    "vizion",
    "vizion_running",
    "pmx",
    "automation",
    "km_link",
    "version",
    "axm_actions",
    "axm_monitor",
    "axm_options",
    "axm_dynamic",
    "_pm2_version",
    "node_version",
    "exit_code",
    "prev_restart_delay",
];

/// Size limits an app must meet to enter the daemon. They follow what the
/// kernel lets `execve` pass (each argument or `KEY=value` string at most
/// `MAX_ARG_STRLEN`, 128 KiB; all of them within `ARG_MAX`, 2 MiB by default,
/// shared with the daemon's own environment) and what a file name may be
/// (`NAME_MAX` 255 bytes for the `<name>-out-<id>.log` files), so an app
/// that passes would also start, and a huge name or environment is refused
/// with a clear error instead of bloating every reply and the dump.
pub mod limits {
    /// App name and namespace (they become log and pid file names).
    pub const MAX_NAME: usize = 200;
    /// Script, cwd, interpreter and log/pid file paths (`PATH_MAX`).
    pub const MAX_PATH: usize = 4096;
    /// One argument, or one environment entry counted as `KEY=value`
    /// (`MAX_ARG_STRLEN` less the terminating NUL).
    pub const MAX_ARG: usize = 128 * 1024 - 1;
    /// Arguments, node arguments and environment entries together: half of
    /// the default `ARG_MAX`, the rest left for the inherited environment.
    pub const MAX_ARGS_AND_ENV: usize = 1024 * 1024;
    /// Everything else an ecosystem file carried (`extra`), serialized.
    pub const MAX_EXTRA: usize = 1024 * 1024;
    /// Sockets one app may ask the daemon to bind (`listen_fds`).
    pub const MAX_LISTEN_FDS: usize = 64;
    /// Processes one app (or one `scale`) may ask for.
    pub const MAX_INSTANCES: i64 = 4096;
    /// Watch paths and ignore patterns, each list.
    pub const MAX_WATCH_ENTRIES: usize = 4096;
}

impl AppSpec {
    /// Checks the app against [`limits`]; the error names the field, its
    /// size and the limit.
    pub fn check_limits(&self) -> Result<(), String> {
        use limits::*;
        let too_long = |what: &str, len: usize, max: usize| -> Result<(), String> {
            if len > max {
                Err(format!("{what} is {len} bytes long; the limit is {max} bytes"))
            } else {
                Ok(())
            }
        };
        too_long("the app name", self.name.len(), MAX_NAME)?;
        too_long("the namespace", self.namespace.len(), MAX_NAME)?;
        let paths = [
            ("the script path", Some(&self.script)),
            ("the cwd", Some(&self.cwd)),
            ("the interpreter", Some(&self.interpreter)),
            ("out_file", self.out_file.as_ref()),
            ("error_file", self.error_file.as_ref()),
            ("log_file", self.log_file.as_ref()),
            ("pid_file", self.pid_file.as_ref()),
        ];
        for (what, p) in paths {
            if let Some(p) = p {
                too_long(&format!("{what} of app {}", self.name), p.len(), MAX_PATH)?;
            }
        }
        let mut total = 0usize;
        for a in self.args.iter().chain(&self.node_args) {
            too_long(&format!("an argument of app {}", self.name), a.len(), MAX_ARG)?;
            total = total.saturating_add(a.len() + 1);
        }
        for (k, v) in &self.env {
            let len = k.len() + 1 + v.len();
            too_long(&format!("environment variable {} of app {}", short(k), self.name), len, MAX_ARG)?;
            total = total.saturating_add(len + 1);
        }
        too_long(
            &format!("the arguments and environment of app {} together", self.name),
            total,
            MAX_ARGS_AND_ENV,
        )?;
        if let Some(n) = self.instances {
            if n.abs() > MAX_INSTANCES {
                return Err(format!(
                    "app {} asks for {n} instances; the limit is {MAX_INSTANCES}",
                    self.name
                ));
            }
        }
        if self.watch_paths.len() > MAX_WATCH_ENTRIES || self.ignore_watch.len() > MAX_WATCH_ENTRIES {
            return Err(format!(
                "app {} has more than {MAX_WATCH_ENTRIES} watch or ignore_watch entries",
                self.name
            ));
        }
        if !self.extra.is_empty() {
            let extra = serde_json::to_vec(&self.extra).map(|v| v.len()).unwrap_or(usize::MAX);
            too_long(&format!("the other options of app {}", self.name), extra, MAX_EXTRA)?;
        }
        Ok(())
    }
}

/// A name for an error message, cut to something readable.
fn short(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// A pm2 module (`pm2 install`): flagged `pmx_module: true` as pm2 flags
/// it. Modules get their own table in `pm2 ls` and are not saved in
/// `dump.pm2`; the CLI starts them from `module_conf.json` instead.
pub fn is_module(app: &AppSpec) -> bool {
    matches!(app.extra.get("pmx_module"), Some(serde_json::Value::Bool(true)))
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn app() -> AppSpec {
        AppSpec { name: "a".into(), script: "/x.js".into(), cwd: "/".into(), ..AppSpec::default() }
    }

    #[test]
    fn a_normal_app_and_a_120_kb_variable_pass() {
        let mut a = app();
        a.env.insert("BIG".into(), "x".repeat(120 * 1024));
        a.args = vec!["--port".into(), "80".into()];
        assert_eq!(a.check_limits(), Ok(()));
    }

    #[test]
    fn oversized_fields_are_named() {
        let mut a = app();
        a.name = "n".repeat(15_000_000);
        let e = a.check_limits().unwrap_err();
        assert!(e.contains("app name is 15000000 bytes") && e.contains("200"), "{e}");

        let mut a = app();
        a.env.insert("HUGE".into(), "x".repeat(200 * 1024));
        let e = a.check_limits().unwrap_err();
        assert!(e.contains("environment variable HUGE of app a"), "{e}");

        let mut a = app();
        for i in 0..10 {
            a.env.insert(format!("V{i}"), "x".repeat(120 * 1024));
        }
        let e = a.check_limits().unwrap_err();
        assert!(e.contains("together"), "{e}");

        let mut a = app();
        a.args = vec!["y".repeat(MAX_ARG_PLUS)];
        assert!(a.check_limits().unwrap_err().contains("an argument"));

        let mut a = app();
        a.instances = Some(1_000_000_000);
        assert!(a.check_limits().unwrap_err().contains("instances"));

        let mut a = app();
        a.out_file = Some("/".repeat(5000));
        assert!(a.check_limits().unwrap_err().contains("out_file"));
    }

    const MAX_ARG_PLUS: usize = limits::MAX_ARG + 1;
}
