//! Requests, replies and streamed events.
//!
//! A connection starts with [`Hello`] from the client and [`Welcome`] (or an
//! error reply) from the daemon. Then the client sends one [`Request`] and
//! reads one [`Reply`], repeatedly; `Request::Logs` turns the connection into
//! a stream of [`Event`]s until the client closes it.
//!
//! Target resolution (names, namespaces, `/regex/`, `all`) happens in the CLI
//! against `List`, as pm2 does; the daemon acts on ids.

use crate::app::AppSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub client_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: u32,
    pub daemon_version: String,
    pub pid: u32,
    pub pm2_home: String,
    /// The daemon-level settings it was started with
    /// ([`crate::DAEMON_SETTINGS`] that were set), so a CLI call given other values can say they do not
    /// apply to a daemon already running.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// What this daemon can do beyond the protocol version: `"handover"`
    /// when it updates itself in place ([`Request::Update`]). Older daemons
    /// send none.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// The capability of a daemon that updates itself in place.
pub const CAP_HANDOVER: &str = "handover";
/// The capability of a daemon that answers [`Request::JlistRaw`].
pub const CAP_RAW_JLIST: &str = "raw-jlist";

/// What a per-id operation does. Names follow pm2's RPC methods so the CLI
/// can print `Applying action stopProcessId ...` from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Stop,
    Restart,
    Reload,
    Delete,
    Reset,
}

impl Request {
    /// True for requests that may change what `dump.pm2` would hold: the
    /// set of apps, their specs or whether they run.
    pub fn changes_process_list(&self) -> bool {
        matches!(
            self,
            Request::Start { .. } | Request::Op { .. } | Request::Scale { .. } | Request::Resurrect
        )
    }
}

impl Op {
    pub fn pm2_method(self) -> &'static str {
        match self {
            Op::Stop => "stopProcessId",
            Op::Restart => "restartProcessId",
            Op::Reload => "reloadProcessId",
            Op::Delete => "deleteProcessId",
            Op::Reset => "resetMetaProcessId",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "req", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // one request per round trip; boxing buys nothing
pub enum Request {
    Ping,
    /// `pm2 update`: the daemon re-executes itself in place with `binary`
    /// (default: the binary it was started from) and keeps every process.
    /// Answered by the new image ([`Reply::Updated`]), or with an error when
    /// the daemon kept running unchanged.
    Update {
        #[serde(default)]
        binary: Option<String>,
    },
    /// Start the processes of one app (fan-out to `instances` happens in the
    /// daemon). Replies `Procs` with the new processes.
    Start {
        app: AppSpec,
    },
    /// Apply `op` to one process. `update` replaces the stored spec before a
    /// restart/reload (`--update-env` or an ecosystem file): the daemon keeps
    /// pm_id, counters and instance index.
    Op {
        op: Op,
        id: u32,
        update: Option<Box<AppSpec>>,
    },
    /// Snapshot of every process (ascending pm_id). `env` comes as a delta
    /// over `app.env` (see [`ProcInfo::effective_env`]).
    List,
    /// `pm2 jlist`, rendered by the daemon (`Reply::Text`): the CLI prints it
    /// as is, so a list of hundreds of apps is not parsed and rebuilt.
    Jlist,
    /// `Jlist` without the JSON string around it: the daemon answers
    /// [`Reply::Raw`], then sends the list itself as the next message
    /// (fragmented like any other, so of any size). Neither side escapes or
    /// unescapes the text, which was most of the cost of a large list. Sent
    /// only to a daemon that announces [`CAP_RAW_JLIST`].
    JlistRaw,
    /// Change the number of instances of app `name` to `count`.
    Scale {
        name: String,
        count: u32,
    },
    SendSignal {
        id: u32,
        signal: String,
    },
    /// Send a message to the process's IPC channel (pm2 `sendDataToProcessId`).
    SendData {
        id: u32,
        data: serde_json::Value,
    },
    /// Write `line` to the stdin of a fork-mode process (pm2
    /// `sendLineToStdin`, behind `pm2 send` and `pm2 attach`).
    SendLine {
        id: u32,
        line: String,
    },
    /// Set a pm2_env field that does not change how the process runs
    /// (`pm2 monitor` / `unmonitor` set `_km_monitored`). Replies `Ok`.
    Annotate {
        id: u32,
        key: String,
        value: serde_json::Value,
    },
    /// Write `dump.pm2` (atomic, previous kept as `.bak`).
    Save {
        force: bool,
    },
    /// Start every saved process whose name is not running.
    Resurrect,
    /// Truncate log files of the given ids, or all of them and `pm2.log`.
    Flush {
        ids: Option<Vec<u32>>,
    },
    ReloadLogs,
    /// Turn this connection into an event stream of log lines and process
    /// events for the given ids (`None` = every process).
    Logs {
        ids: Option<Vec<u32>>,
    },
    /// Stop every process and exit the daemon (no save).
    Kill,
    /// `pm2 trigger <target> <action> [param]`: run an action the app
    /// declared with @pm2/io on every matching process (id, name,
    /// namespace or `all`) and collect their `axm:reply` answers.
    Trigger {
        target: String,
        action: String,
        param: Option<serde_json::Value>,
    },
    /// The multi-host state (node id, Redis, peers, counters) as a JSON
    /// object in `Reply::Text`; `{"enabled":false}` on a single host.
    ClusterStatus,
}

/// A process's state, serialised as pm2's strings (what `jlist` shows and
/// scripts compare against).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Status {
    #[serde(rename = "online")]
    Online,
    #[serde(rename = "launching")]
    Launching,
    #[serde(rename = "stopping")]
    Stopping,
    #[default]
    #[serde(rename = "stopped")]
    Stopped,
    #[serde(rename = "errored")]
    Errored,
    #[serde(rename = "waiting restart")]
    WaitingRestart,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Launching => "launching",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Errored => "errored",
            Status::WaitingRestart => "waiting restart",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Status, String> {
        [
            Status::Online,
            Status::Launching,
            Status::Stopping,
            Status::Stopped,
            Status::Errored,
            Status::WaitingRestart,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Status {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A process as the daemon sees it. `jlist`/`prettylist`/`describe`/`list`
/// are rendered from this by the CLI.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ProcInfo {
    pub pm_id: u32,
    pub pid: u32,
    pub status: Status,
    pub restart_time: u32,
    pub unstable_restarts: u32,
    /// Epoch milliseconds.
    pub created_at: u64,
    pub pm_uptime: u64,
    pub exit_code: Option<i32>,
    pub prev_restart_delay: Option<u64>,
    /// Index within the app (`NODE_APP_INSTANCE`).
    pub instance: u32,
    pub unique_id: String,
    pub pm_out_log_path: String,
    pub pm_err_log_path: String,
    pub pm_log_path: Option<String>,
    pub pm_pid_path: String,
    pub node_version: Option<String>,
    pub username: String,
    pub memory: u64,
    pub cpu: f64,
    /// The environment the process was (or will be) spawned with, including
    /// pm2's injected keys.
    pub env: BTreeMap<String, String>,
    pub app: AppSpec,
    /// Socket.IO sticky routing is active for this worker.
    pub sticky: bool,
    /// `env` holds only the keys that differ from `app.env` (the `List`
    /// reply sends that to halve its size).
    pub env_is_delta: bool,
    /// What the app declared with @pm2/io (pm2's `axm_*` pm2_env fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub axm: Option<Axm>,
    /// Health of the current run (`pm2_env.health`), for apps with health
    /// checks or sd_notify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthInfo>,
}

/// An app's @pm2/io declarations over IPC, for the run with `pid` (a new
/// run declares again from scratch): `axm:action` entries, the latest
/// `axm:monitor` values and merged `axm:option:configuration`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Axm {
    pub pid: u32,
    pub actions: Vec<serde_json::Value>,
    pub monitor: serde_json::Map<String, serde_json::Value>,
    pub options: serde_json::Map<String, serde_json::Value>,
}

impl ProcInfo {
    /// The @pm2/io declarations of the current run, if it made any.
    pub fn current_axm(&self) -> Option<&Axm> {
        self.axm.as_ref().filter(|a| a.pid == self.pid && self.pid != 0)
    }
}

impl ProcInfo {
    /// The complete spawn environment, whether `env` is full or a delta.
    pub fn effective_env(&self) -> std::borrow::Cow<'_, BTreeMap<String, String>> {
        if self.env.is_empty() {
            return std::borrow::Cow::Borrowed(&self.app.env);
        }
        if !self.env_is_delta {
            return std::borrow::Cow::Borrowed(&self.env);
        }
        let mut full = self.app.env.clone();
        full.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        std::borrow::Cow::Owned(full)
    }

    /// The same process with `env` reduced to its delta over `app.env`.
    pub fn with_env_delta(&self) -> ProcInfo {
        let env: BTreeMap<String, String> = self
            .env
            .iter()
            .filter(|(k, v)| self.app.env.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let env_is_delta = !self.env.is_empty();
        let mut p = self.clone_with_env(env);
        p.env_is_delta = env_is_delta;
        p
    }

    fn clone_with_env(&self, env: BTreeMap<String, String>) -> ProcInfo {
        ProcInfo {
            pm_id: self.pm_id,
            pid: self.pid,
            status: self.status,
            restart_time: self.restart_time,
            unstable_restarts: self.unstable_restarts,
            created_at: self.created_at,
            pm_uptime: self.pm_uptime,
            exit_code: self.exit_code,
            prev_restart_delay: self.prev_restart_delay,
            instance: self.instance,
            unique_id: self.unique_id.clone(),
            pm_out_log_path: self.pm_out_log_path.clone(),
            pm_err_log_path: self.pm_err_log_path.clone(),
            pm_log_path: self.pm_log_path.clone(),
            pm_pid_path: self.pm_pid_path.clone(),
            node_version: self.node_version.clone(),
            username: self.username.clone(),
            memory: self.memory,
            cpu: self.cpu,
            env,
            app: self.app.clone(),
            sticky: self.sticky,
            env_is_delta: self.env_is_delta,
            axm: self.axm.clone(),
            health: self.health.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Ok,
    Pong,
    Procs {
        procs: Vec<ProcInfo>,
    },
    Saved {
        path: String,
        count: usize,
    },
    Resurrected {
        restored: Vec<String>,
        procs: Vec<ProcInfo>,
    },
    /// Text to print as is (`Jlist`).
    Text {
        text: String,
    },
    /// The next message on this connection is the answer itself, as raw
    /// bytes rather than JSON (`JlistRaw`): read it with
    /// [`crate::frame::read_message`].
    Raw,
    /// `Trigger`: how many processes received the action, and the answers
    /// that came back in time.
    Triggered {
        sent: usize,
        replies: Vec<ActionReply>,
    },
    /// The daemon updated in place (same pid). `failure`: the new binary
    /// could not adopt and the previous one took over again.
    Updated {
        pid: u32,
        from_version: String,
        to_version: String,
        processes: usize,
        wall_ms: u64,
        failure: Option<String>,
    },
    /// `message` is shown to the user after `[PM2][ERROR] `.
    Error {
        message: String,
    },
}

/// One process's answer to a triggered action (`axm:reply`'s `return`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionReply {
    pub pm_id: u32,
    pub name: String,
    pub namespace: String,
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Out,
    Err,
}

/// Streamed on a `Logs` connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Log {
        pm_id: u32,
        name: String,
        namespace: String,
        stream: Stream,
        /// Epoch ms when the daemon read the chunk.
        at: u64,
        data: String,
    },
    /// pm2's `process:event` (`online`, `exit`, `stop`, `restart`, ...).
    Process { pm_id: u32, name: String, event: String, at: u64 },
    /// A line of `pm2.log`.
    Daemon { at: u64, data: String },
}

#[cfg(test)]
mod status_tests {
    use super::Status;

    #[test]
    fn status_is_pm2s_string_on_the_wire_and_back() {
        for st in [
            Status::Online,
            Status::Launching,
            Status::Stopping,
            Status::Stopped,
            Status::Errored,
            Status::WaitingRestart,
        ] {
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), st);
            assert_eq!(st.as_str().parse::<Status>(), Ok(st));
        }
        assert_eq!(Status::WaitingRestart.to_string(), "waiting restart");
        assert!(Status::Online == "online");
        assert!("nope".parse::<Status>().is_err());
    }
}
