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
            version: None,
            extra: BTreeMap::new(),
        }
    }
}

impl AppSpec {
    /// True when the interpreter is Node (so the child gets an IPC channel
    /// and can become a cluster worker).
    pub fn is_node(&self) -> bool {
        let base = self.interpreter.rsplit('/').next().unwrap_or("");
        base == "node" || base.starts_with("node@") || base == "nodejs"
    }
}

/// A pm2 module (`pm2 install`): flagged `pmx_module: true` as pm2 flags
/// it. Modules get their own table in `pm2 ls` and are not saved in
/// `dump.pm2`; the CLI starts them from `module_conf.json` instead.
pub fn is_module(app: &AppSpec) -> bool {
    matches!(app.extra.get("pmx_module"), Some(serde_json::Value::Bool(true)))
}
