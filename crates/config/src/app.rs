//! One app object (ecosystem keys, any alias) into a resolved [`AppSpec`].

use crate::coerce::{as_f64, describe, env_string, parse_bytes, parse_duration_ms, split_args};
use crate::paths::{self, FileKind};
use crate::{ConfigError, Context};
use corral_proto::{AppSpec, ExecMode};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Canonical ecosystem keys and their aliases (pm2's schema.json plus the
/// aliases its CLI maps). camelCase spellings are derived, not listed.
const KEYS: &[(&str, &[&str])] = &[
    ("script", &["exec", "cmd", "command"]),
    ("name", &[]),
    ("namespace", &[]),
    ("cwd", &[]),
    ("args", &[]),
    ("exec_interpreter", &["interpreter"]),
    ("node_args", &["interpreter_args"]),
    ("instances", &[]),
    ("exec_mode", &[]),
    ("watch", &[]),
    ("ignore_watch", &[]),
    ("watch_delay", &[]),
    ("watch_options", &[]),
    ("env", &[]),
    ("max_memory_restart", &[]),
    ("min_uptime", &[]),
    ("max_restarts", &[]),
    ("autorestart", &[]),
    ("autostart", &[]),
    ("restart_delay", &[]),
    ("exp_backoff_restart_delay", &[]),
    ("stop_exit_codes", &[]),
    ("cron_restart", &["cron"]),
    ("kill_timeout", &[]),
    ("shutdown_with_message", &[]),
    ("kill_retry_time", &[]),
    ("treekill", &[]),
    ("wait_ready", &[]),
    ("listen_timeout", &[]),
    ("out_file", &["out", "output", "out_log"]),
    ("error_file", &["error", "err", "err_file", "err_log"]),
    ("log_file", &["log"]),
    ("merge_logs", &["combine_logs"]),
    ("log_date_format", &[]),
    ("time", &[]),
    ("log_type", &[]),
    ("disable_logs", &[]),
    ("pid_file", &["pid"]),
    ("instance_var", &[]),
    ("increment_var", &[]),
    ("port", &[]),
    ("uid", &["user"]),
    ("gid", &[]),
    ("filter_env", &[]),
    ("append_env_to_name", &[]),
    ("name_prefix", &[]),
    ("force", &[]),
    ("source_map_support", &[]),
    ("disable_source_map_support", &[]),
    ("vizion", &[]),
    ("pmx", &[]),
    ("automation", &[]),
    ("trace", &[]),
    ("disable_trace", &[]),
    ("v8", &[]),
    ("event_loop_inspector", &[]),
    ("deep_monitoring", &[]),
    ("io", &[]),
    ("post_update", &[]),
    ("execute_command", &[]),
    ("windowsHide", &["windows_hide"]),
    ("write", &[]),
    ("username", &[]),
    ("install_url", &[]),
    ("km_link", &[]),
    ("log_max_size", &[]),
    ("log_retain", &[]),
    ("log_compress", &[]),
    ("sticky", &[]),
    ("sticky_port", &[]),
    ("cluster_group", &[]),
    ("readiness_probe", &["readiness"]),
    ("liveness_probe", &["liveness"]),
    ("startup_probe", &[]),
    ("notify", &[]),
    ("watchdog", &[]),
    ("listen_fds", &["listen"]),
];

/// Known keys that Corral accepts but does not model in `AppSpec`: they go
/// to `extra` without a warning so `jlist`/`dump.pm2` show them.
const KEPT_IN_EXTRA: &[&str] = &[
    // Built-in log rotation, per app (the daemon reads them from `extra`).
    "log_max_size",
    "log_retain",
    "log_compress",
    "watch_options",
    "port",
    "uid",
    "gid",
    "filter_env",
    "append_env_to_name",
    "force",
    "source_map_support",
    "disable_source_map_support",
    "vizion",
    "pmx",
    "automation",
    "trace",
    "disable_trace",
    "v8",
    "event_loop_inspector",
    "deep_monitoring",
    "io",
    "post_update",
    "execute_command",
    "windowsHide",
    "write",
    "username",
    "install_url",
    "km_link",
];

pub const TIME_FORMAT: &str = "YYYY-MM-DDTHH:mm:ss";

fn lookup(key: &str) -> Option<&'static str> {
    KEYS.iter().find(|(c, a)| *c == key || a.contains(&key)).map(|(c, _)| *c)
}

/// Maps any spelling (canonical, alias, camelCase of either) to the
/// canonical key.
pub fn canonical_key(key: &str) -> Option<&'static str> {
    if let Some(c) = lookup(key) {
        return Some(c);
    }
    let starts_lower = key.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if starts_lower && key.chars().any(|c| c.is_ascii_uppercase()) {
        let mut snake = String::with_capacity(key.len() + 4);
        for c in key.chars() {
            if c.is_ascii_uppercase() {
                snake.push('_');
                snake.push(c.to_ascii_lowercase());
            } else {
                snake.push(c);
            }
        }
        return lookup(&snake);
    }
    None
}

/// Log and pid file names use the app name with `[^a-zA-Z0-9.-]` replaced
/// by `-` (pm2's rule).
pub fn sanitize_log_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

struct Opts<'a> {
    /// canonical key → (key as written, value). Nulls are dropped: an unset
    /// option and `key: null` mean the same in a JS config.
    map: BTreeMap<&'static str, (&'a str, &'a Value)>,
}

impl<'a> Opts<'a> {
    fn get(&self, k: &str) -> Option<(&'a str, &'a Value)> {
        self.map.get(k).copied()
    }
}

pub(crate) struct Resolver<'c> {
    ctx: &'c Context,
    app: String,
    warnings: Vec<String>,
    path_var: String,
}

/// Env values given as JSON numbers or booleans ([`AppSpec::env_typed`]).
type TypedEnv = BTreeMap<String, Value>;

pub(crate) fn resolve_app(
    obj: &Map<String, Value>,
    ctx: &Context,
    base_env: BTreeMap<String, String>,
) -> Result<(AppSpec, Vec<String>), ConfigError> {
    let label = obj
        .get("name")
        .and_then(Value::as_str)
        .or_else(|| {
            ["script", "exec", "cmd", "command"].iter().find_map(|k| obj.get(*k).and_then(Value::as_str))
        })
        .unwrap_or("?")
        .to_owned();
    let path_var = ctx
        .env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut r = Resolver { ctx, app: label, warnings: Vec::new(), path_var };
    let spec = r.run(obj, base_env)?;
    Ok((spec, r.warnings))
}

impl Resolver<'_> {
    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.ctx.source.clone(),
            app: self.app.clone(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    fn home(&self) -> Option<&str> {
        self.ctx.env.get("HOME").map(String::as_str)
    }

    fn string(&self, o: &Opts, k: &str) -> Result<Option<String>, ConfigError> {
        match o.get(k) {
            None => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s.clone())),
            Some((w, v)) => Err(self.invalid(w, format!("expected a string, got {}", describe(v)))),
        }
    }

    fn boolean(&self, o: &Opts, k: &str) -> Result<Option<bool>, ConfigError> {
        match o.get(k) {
            None => Ok(None),
            Some((_, Value::Bool(b))) => Ok(Some(*b)),
            Some((_, Value::String(s))) if s == "true" => Ok(Some(true)),
            Some((_, Value::String(s))) if s == "false" => Ok(Some(false)),
            Some((w, v)) => Err(self.invalid(w, format!("expected a boolean, got {}", describe(v)))),
        }
    }

    /// Milliseconds: a number, a numeric string or `<n>ms|s|m|h`.
    fn millis(&self, o: &Opts, k: &str) -> Result<Option<u64>, ConfigError> {
        let Some((w, v)) = o.get(k) else { return Ok(None) };
        let ms = match v {
            Value::Number(_) => as_f64(v).filter(|f| *f >= 0.0).map(|f| f.round() as u64),
            Value::String(s) => parse_duration_ms(s),
            _ => None,
        };
        ms.map(Some).ok_or_else(|| {
            self.invalid(
                w,
                format!("expected a duration in milliseconds (e.g. 1500 or \"5s\"), got {}", describe(v)),
            )
        })
    }

    fn count(&self, o: &Opts, k: &str) -> Result<Option<u64>, ConfigError> {
        let Some((w, v)) = o.get(k) else { return Ok(None) };
        match as_f64(v) {
            Some(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as u64)),
            _ => Err(self.invalid(w, format!("expected a non-negative integer, got {}", describe(v)))),
        }
    }

    /// A string (split like a command line) or an array of scalars.
    fn list(&self, o: &Opts, k: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some((w, v)) = o.get(k) else { return Ok(None) };
        match v {
            Value::String(s) => Ok(Some(split_args(s))),
            Value::Number(_) | Value::Bool(_) => Ok(Some(vec![env_string(v)])),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, it)| match it {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(_) | Value::Bool(_) => Ok(env_string(it)),
                    other => Err(self.invalid(
                        w,
                        format!(
                            "expected a string or an array of strings, but item {i} is {}",
                            describe(other)
                        ),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            other => {
                Err(self
                    .invalid(w, format!("expected a string or an array of strings, got {}", describe(other))))
            }
        }
    }

    fn normalize<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        extra: &mut BTreeMap<String, Value>,
    ) -> Opts<'a> {
        let mut map: BTreeMap<&'static str, (&'a str, &'a Value)> = BTreeMap::new();
        for (k, v) in obj {
            if let Some(env_name) = k.strip_prefix("env_") {
                if !env_name.is_empty() {
                    extra.insert(k.clone(), v.clone());
                    continue;
                }
            }
            let Some(c) = canonical_key(k) else {
                self.warnings.push(format!(
                    "{}: app {}: unknown option \"{k}\" (kept, but Corral does not use it)",
                    self.ctx.source, self.app
                ));
                extra.insert(k.clone(), v.clone());
                continue;
            };
            if v.is_null() {
                continue;
            }
            match map.get(c) {
                // The canonical spelling wins over an alias whatever the
                // order, so `script` beats `exec`.
                Some((prev, _)) if *prev == c => {
                    self.warnings.push(format!(
                        "{}: app {}: \"{k}\" ignored, \"{c}\" is also set",
                        self.ctx.source, self.app
                    ));
                }
                Some((prev, _)) if k != c => {
                    self.warnings.push(format!(
                        "{}: app {}: \"{k}\" ignored, \"{prev}\" is also set",
                        self.ctx.source, self.app
                    ));
                }
                Some((prev, _)) => {
                    self.warnings.push(format!(
                        "{}: app {}: \"{prev}\" ignored, \"{c}\" is also set",
                        self.ctx.source, self.app
                    ));
                    map.insert(c, (k.as_str(), v));
                }
                None => {
                    map.insert(c, (k.as_str(), v));
                }
            }
        }
        Opts { map }
    }

    fn run(
        &mut self,
        obj: &Map<String, Value>,
        base_env: BTreeMap<String, String>,
    ) -> Result<AppSpec, ConfigError> {
        let mut spec = AppSpec::default();
        let mut extra = BTreeMap::new();
        let o = self.normalize(obj, &mut extra);
        for k in KEPT_IN_EXTRA {
            if let Some((_, v)) = o.get(k) {
                extra.insert((*k).to_owned(), v.clone());
            }
        }

        // Working directory: relative to the CLI's cwd.
        let cwd = match self.string(&o, "cwd")? {
            Some(c) => {
                let p = paths::resolve(&self.ctx.cwd, &paths::expand_tilde(&c, self.home()));
                if !p.is_dir() {
                    let w = o.get("cwd").map(|(w, _)| w).unwrap_or("cwd");
                    return Err(self.invalid(w, format!("directory {} does not exist", p.display())));
                }
                p
            }
            None => paths::normalize(&self.ctx.cwd),
        };
        spec.cwd = cwd.to_string_lossy().into_owned();

        // Script: relative to the app cwd (not the config file's dir), then
        // $PATH; a command line with spaces runs through a shell.
        let raw_script = match o.get("script") {
            None => return Err(ConfigError::NoScript),
            Some((_, Value::String(s))) if s.trim().is_empty() => return Err(ConfigError::NoScript),
            Some((_, Value::String(s))) => s.clone(),
            Some((w, v)) => return Err(self.invalid(w, format!("expected a string, got {}", describe(v)))),
        };
        let candidate = paths::resolve(&cwd, &paths::expand_tilde(&raw_script, self.home()));
        let mut shell_line = false;
        let script_path: PathBuf = if candidate.exists() {
            candidate
        } else if raw_script.contains(' ') {
            shell_line = true;
            paths::which("bash", &self.path_var)
                .or_else(|| paths::which("sh", &self.path_var))
                .ok_or_else(|| ConfigError::InterpreterNotFound("bash".into()))?
        } else if !raw_script.contains('/') {
            paths::which(&raw_script, &self.path_var)
                .ok_or_else(|| ConfigError::ScriptNotFound(candidate.to_string_lossy().into_owned()))?
        } else {
            return Err(ConfigError::ScriptNotFound(candidate.to_string_lossy().into_owned()));
        };
        spec.script = script_path.to_string_lossy().into_owned();

        // Name: basename without the last extension; a shell line is cut at
        // its last `.` (pm2: "python3 -m http.server 8000" → "python3 -m http").
        let mut name = match self.string(&o, "name")? {
            Some(n) if !n.is_empty() => n,
            _ if shell_line => match raw_script.rfind('.') {
                Some(i) if i > 0 => raw_script[..i].to_owned(),
                _ => raw_script.clone(),
            },
            _ => Path::new(&raw_script)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| raw_script.clone()),
        };
        if let Some(prefix) = self.string(&o, "name_prefix")? {
            name = format!("{prefix}:{name}");
        }
        if let (Some(e), Some(true)) = (&self.ctx.env_name, self.boolean(&o, "append_env_to_name")?) {
            name = format!("{name}-{e}");
        }
        self.app = name.clone();
        spec.name = name;
        if let Some(ns) = self.string(&o, "namespace")? {
            if !ns.is_empty() {
                spec.namespace = ns;
            }
        }

        spec.args = self.list(&o, "args")?.unwrap_or_default();
        if shell_line {
            if !spec.args.is_empty() {
                self.warnings.push(format!(
                    "{}: app {}: \"args\" ignored: the script is a shell command line",
                    self.ctx.source, self.app
                ));
            }
            spec.args = vec!["-c".into(), raw_script.clone()];
        }
        spec.node_args = self.list(&o, "node_args")?.unwrap_or_default();

        spec.interpreter = self.interpreter(&o, &script_path, &cwd, shell_line)?;

        // Instances and exec mode (pm2's determineExecMode).
        spec.instances = self.instances(&o)?;
        let explicit_mode = match o.get("exec_mode") {
            None => None,
            Some((w, Value::String(s))) => {
                let m = s.trim().to_ascii_lowercase();
                match m.strip_suffix("_mode").unwrap_or(&m) {
                    "fork" => Some(ExecMode::Fork),
                    "cluster" => Some(ExecMode::Cluster),
                    _ => {
                        return Err(self.invalid(w, format!("expected \"fork\" or \"cluster\", got \"{s}\"")))
                    }
                }
            }
            Some((w, v)) => {
                return Err(self.invalid(w, format!("expected \"fork\" or \"cluster\", got {}", describe(v))))
            }
        };
        spec.exec_mode = match explicit_mode {
            Some(m) => m,
            None if spec.instances.is_some() && spec.can_cluster() => ExecMode::Cluster,
            None => ExecMode::Fork,
        };
        if self.boolean(&o, "execute_command")? == Some(true) {
            spec.exec_mode = ExecMode::Fork;
        }
        if spec.exec_mode == ExecMode::Cluster && !spec.can_cluster() {
            // Cluster workers speak node:cluster (Node, Bun, Deno); anything
            // else can only run as independent forks.
            self.warnings.push(format!(
                "{}: app {}: cluster mode needs a node, bun or deno script (interpreter is {}), using fork mode",
                self.ctx.source, self.app, spec.interpreter
            ));
            spec.exec_mode = ExecMode::Fork;
        }
        spec.merge_logs = match self.boolean(&o, "merge_logs")? {
            Some(b) => b,
            None => explicit_mode != Some(ExecMode::Cluster) && matches!(spec.instances, None | Some(0)),
        };

        let (env, typed) = self.env(&o, obj, base_env)?;
        spec.env = env;
        spec.env_typed = typed;

        // Log and pid files.
        spec.out_file = self.file_path(&o, "out_file", &cwd)?;
        spec.error_file = self.file_path(&o, "error_file", &cwd)?;
        spec.pid_file = self.file_path(&o, "pid_file", &cwd)?;
        spec.log_file = match o.get("log_file") {
            Some((_, Value::Bool(true))) => {
                let p = self.ctx.pm2_home.join("logs").join(format!("{}.log", sanitize_log_name(&spec.name)));
                Some(p.to_string_lossy().into_owned())
            }
            Some((_, Value::Bool(false))) => None,
            _ => self.file_path(&o, "log_file", &cwd)?,
        };
        spec.log_date_format = self.string(&o, "log_date_format")?;
        if spec.log_date_format.is_none() && self.boolean(&o, "time")? == Some(true) {
            spec.log_date_format = Some(TIME_FORMAT.into());
        }
        spec.log_type = self.string(&o, "log_type")?;
        if let Some(b) = self.boolean(&o, "disable_logs")? {
            spec.disable_logs = b;
        }

        // Restart policy.
        if let Some(b) = self.boolean(&o, "autorestart")? {
            spec.autorestart = b;
        }
        if let Some(b) = self.boolean(&o, "autostart")? {
            spec.autostart = b;
        }
        if let Some(n) = self.count(&o, "max_restarts")? {
            spec.max_restarts = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(ms) = self.millis(&o, "min_uptime")? {
            if ms < 100 {
                let w = o.get("min_uptime").map(|(w, _)| w).unwrap_or("min_uptime");
                return Err(self.invalid(w, format!("must be at least 100 ms, got {ms}")));
            }
            spec.min_uptime = ms;
        }
        if let Some(ms) = self.millis(&o, "restart_delay")? {
            spec.restart_delay = ms;
        }
        spec.exp_backoff_restart_delay = self.millis(&o, "exp_backoff_restart_delay")?.filter(|&ms| ms > 0);
        if let Some(ms) = self.millis(&o, "kill_timeout")? {
            spec.kill_timeout = ms;
        }
        if let Some(ms) = self.millis(&o, "kill_retry_time")? {
            spec.kill_retry_time = ms;
        }
        if let Some(ms) = self.millis(&o, "listen_timeout")? {
            spec.listen_timeout = ms;
        }
        spec.stop_exit_codes = self.exit_codes(&o)?;
        if let Some(b) = self.boolean(&o, "treekill")? {
            spec.treekill = b;
        }
        if let Some(b) = self.boolean(&o, "wait_ready")? {
            spec.wait_ready = b;
        }
        if let Some(b) = self.boolean(&o, "shutdown_with_message")? {
            spec.shutdown_with_message = b;
        }
        if let Some(v) = self.string(&o, "instance_var")? {
            if !v.is_empty() {
                spec.instance_var = v;
            }
        }
        spec.increment_var = self.string(&o, "increment_var")?.filter(|s| !s.is_empty());
        spec.max_memory_restart = match o.get("max_memory_restart") {
            None => None,
            Some((w, v)) => {
                let b = match v {
                    Value::Number(_) => as_f64(v).filter(|f| *f >= 0.0).map(|f| f.round() as u64),
                    Value::String(s) => parse_bytes(s),
                    _ => None,
                };
                match b {
                    Some(0) => None,
                    Some(b) => Some(b),
                    None => {
                        return Err(self.invalid(
                            w,
                            format!("expected bytes or a size like \"200M\"/\"1G\", got {}", describe(v)),
                        ))
                    }
                }
            }
        };
        spec.cron_restart = self.cron(&o)?;

        // Watching.
        match o.get("watch") {
            None | Some((_, Value::Bool(false))) => {}
            Some((_, Value::Bool(true))) => spec.watch = true,
            Some((w, v)) => {
                let list = self.list(&o, "watch")?.ok_or_else(|| self.invalid(w, "expected a boolean"))?;
                if let Value::Number(_) = v {
                    return Err(self.invalid(
                        w,
                        format!("expected a boolean, a path or an array of paths, got {}", describe(v)),
                    ));
                }
                if list.len() == 1 && (list[0] == "true" || list[0] == "false") {
                    spec.watch = list[0] == "true";
                } else {
                    spec.watch = !list.is_empty();
                    spec.watch_paths = list
                        .iter()
                        .map(|p| {
                            paths::resolve(&cwd, &paths::expand_tilde(p, self.home()))
                                .to_string_lossy()
                                .into_owned()
                        })
                        .collect();
                }
            }
        }
        spec.ignore_watch = self.list(&o, "ignore_watch")?.unwrap_or_default();
        if let Some(ms) = self.millis(&o, "watch_delay")? {
            spec.watch_delay = ms;
        }

        spec.sticky = self.boolean(&o, "sticky")?;
        spec.sticky_port = match o.get("sticky_port") {
            None => None,
            Some((w, v)) => match as_f64(v) {
                Some(f) if f.fract() == 0.0 && (1.0..=65535.0).contains(&f) => Some(f as u16),
                _ => {
                    return Err(
                        self.invalid(w, format!("expected a port number (1-65535), got {}", describe(v)))
                    )
                }
            },
        };
        spec.cluster_group = match o.get("cluster_group") {
            None | Some((_, Value::Bool(true))) => None,
            Some((_, Value::Bool(false))) => Some(String::new()),
            Some((_, Value::String(s))) if s == "false" => Some(String::new()),
            Some((w, Value::String(s)))
                if s.is_empty()
                    || s.len() > 128
                    || s.chars().any(|c| c.is_control() || c.is_whitespace()) =>
            {
                return Err(
                    self.invalid(w, format!("expected a group name (1-128 visible characters), got {s:?}"))
                )
            }
            Some((_, Value::String(s))) => Some(s.clone()),
            Some((w, v)) => {
                return Err(self.invalid(w, format!("expected a group name or false, got {}", describe(v))))
            }
        };
        if spec.sticky == Some(true)
            && spec.exec_mode == ExecMode::Cluster
            && spec.runtime() == corral_proto::Runtime::Bun
        {
            // The balancer hands each Socket.IO session's connection to one
            // worker as a descriptor; Bun workers cannot receive one (they
            // listen on SO_REUSEPORT sockets of their own).
            return Err(self.invalid(
                "sticky",
                "Bun cluster workers cannot receive connections from the daemon, so the sticky \
                 Socket.IO balancer cannot route sessions to them; run the app under node or deno, or drop sticky",
            ));
        }
        if spec.exec_mode == ExecMode::Cluster {
            let path = if spec.interpreter.contains('/') {
                Some(std::path::PathBuf::from(&spec.interpreter))
            } else {
                paths::which(&spec.interpreter, &self.path_var)
            };
            if let Some(why) = path.and_then(|p| crate::runtime_version::too_old(&spec, &p)) {
                return Err(self.invalid("interpreter", why));
            }
        }
        spec.listen_fds = match o.get("listen_fds") {
            None => Vec::new(),
            Some((w, _)) => {
                let list = self.list(&o, "listen_fds")?.unwrap_or_default();
                let mut out: Vec<String> = Vec::with_capacity(list.len());
                for a in &list {
                    let addr = listen_address(a).map_err(|e| self.invalid(w, e))?;
                    if out.contains(&addr) {
                        return Err(self.invalid(w, format!("{addr} is listed twice")));
                    }
                    out.push(addr);
                }
                if out.len() > corral_proto::app::limits::MAX_LISTEN_FDS {
                    return Err(self.invalid(
                        w,
                        format!(
                            "{} addresses; the limit is {}",
                            out.len(),
                            corral_proto::app::limits::MAX_LISTEN_FDS
                        ),
                    ));
                }
                if !out.is_empty() && spec.exec_mode == ExecMode::Cluster {
                    return Err(self.invalid(
                        w,
                        "a cluster app's workers get their listeners from the daemon already (node:cluster); \
                         listen_fds is for fork-mode instances (any language): use exec_mode \"fork\" with instances",
                    ));
                }
                out
            }
        };
        for (w, v) in ["uid", "gid"].iter().filter_map(|k| o.get(k)) {
            if !matches!(v, Value::String(_) | Value::Number(_)) {
                return Err(self.invalid(w, format!("expected a user/group name or id, got {}", describe(v))));
            }
        }

        spec.health = self.health(&o, &spec.env)?;
        spec.version =
            if script_path.is_file() { script_path.parent().and_then(paths::package_version) } else { None };
        spec.extra = extra;
        Ok(spec)
    }

    fn interpreter(
        &self,
        o: &Opts,
        script: &Path,
        cwd: &Path,
        shell_line: bool,
    ) -> Result<String, ConfigError> {
        if let Some(i) = self.string(o, "exec_interpreter")? {
            let i = i.trim().to_owned();
            if i.is_empty() || i == "none" {
                return Ok("none".into());
            }
            // nvm-style versions are resolved at spawn time.
            if i.starts_with("node@") {
                return Ok(i);
            }
            if i.contains('/') {
                let p = paths::resolve(cwd, &paths::expand_tilde(&i, self.home()));
                return if paths::is_executable_file(&p) {
                    Ok(p.to_string_lossy().into_owned())
                } else {
                    Err(ConfigError::InterpreterNotFound(i))
                };
            }
            return match paths::which(&i, &self.path_var) {
                Some(_) => Ok(i),
                None => Err(ConfigError::InterpreterNotFound(i)),
            };
        }
        if shell_line {
            return Ok("none".into());
        }
        let ext = script.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        let wanted: &[&str] = match ext.as_str() {
            "js" | "cjs" | "mjs" => &["node"],
            "sh" => &["bash"],
            "py" => &["python", "python3"],
            "rb" => &["ruby"],
            "php" => &["php"],
            "pl" => &["perl"],
            "coffee" => &["coffee"],
            "ls" => &["lsc"],
            "ts" | "tsx" => &["bun"],
            _ => match paths::sniff(script) {
                FileKind::Binary => return Ok("none".into()),
                FileKind::ForeignShebang if paths::is_executable_file(script) => return Ok("none".into()),
                _ => &["node"],
            },
        };
        wanted
            .iter()
            .find(|w| paths::which(w, &self.path_var).is_some())
            .map(|w| (*w).to_owned())
            .ok_or_else(|| ConfigError::InterpreterNotFound(wanted[0].to_owned()))
    }

    fn instances(&mut self, o: &Opts) -> Result<Option<i64>, ConfigError> {
        let Some((w, v)) = o.get("instances") else { return Ok(None) };
        match v {
            Value::String(s) if s.trim().eq_ignore_ascii_case("max") => Ok(Some(0)),
            Value::Number(_) | Value::String(_) => match as_f64(v) {
                Some(f) if f.fract() == 0.0 && f.abs() < 1e9 => Ok(Some(f as i64)),
                Some(_) => {
                    Err(self.invalid(w, format!("expected an integer or \"max\", got {}", describe(v))))
                }
                None => {
                    // pm2 turns any other string into 0, i.e. one process per
                    // CPU; keep that but say so.
                    self.warnings.push(format!(
                        "{}: app {}: \"{w}\": {} is not a number; treated as 0 (one instance per CPU) like pm2",
                        self.ctx.source,
                        self.app,
                        describe(v)
                    ));
                    Ok(Some(0))
                }
            },
            _ => Err(self.invalid(w, format!("expected a number or \"max\", got {}", describe(v)))),
        }
    }

    fn env(
        &mut self,
        o: &Opts,
        obj: &Map<String, Value>,
        mut env: BTreeMap<String, String>,
    ) -> Result<(BTreeMap<String, String>, TypedEnv), ConfigError> {
        let mut typed = BTreeMap::new();
        // filter_env: true drops the inherited env, strings drop inherited
        // names containing them.
        match o.get("filter_env") {
            None | Some((_, Value::Bool(false))) => {}
            Some((_, Value::Bool(true))) => env.clear(),
            Some((w, v)) => {
                let pats = self.list(o, "filter_env")?.ok_or_else(|| {
                    self.invalid(w, format!("expected a boolean, a string or an array, got {}", describe(v)))
                })?;
                env.retain(|k, _| !pats.iter().any(|p| !p.is_empty() && k.contains(p.as_str())));
            }
        }
        if let Some((w, v)) = o.get("env") {
            self.merge_env(&mut env, &mut typed, w, v)?;
        }
        if let Some(name) = &self.ctx.env_name {
            let key = format!("env_{name}");
            match obj.get(&key) {
                None | Some(Value::Null) => {
                    self.warnings.push(format!("Environment [{name}] is not defined in process file"))
                }
                Some(v) => self.merge_env(&mut env, &mut typed, &key, v)?,
            }
        }
        if let Some((w, v)) = o.get("port") {
            match v {
                Value::Number(_) | Value::String(_) => {
                    env.insert("PORT".into(), env_string(v));
                    if v.is_number() {
                        typed.insert("PORT".into(), v.clone());
                    } else {
                        typed.remove("PORT");
                    }
                }
                _ => return Err(self.invalid(w, format!("expected a port number, got {}", describe(v)))),
            }
        }
        Ok((env, typed))
    }

    fn merge_env(
        &self,
        env: &mut BTreeMap<String, String>,
        typed: &mut BTreeMap<String, Value>,
        key: &str,
        v: &Value,
    ) -> Result<(), ConfigError> {
        let parsed;
        let map = match v {
            Value::Object(m) => m,
            // pm2's schema allows a string: accept one holding an object.
            Value::String(s) => {
                parsed = crate::json5::parse(s).ok();
                match &parsed {
                    Some(Value::Object(m)) => m,
                    _ => {
                        return Err(self
                            .invalid(key, "expected an object of variables, got a string that is not one"))
                    }
                }
            }
            other => {
                return Err(
                    self.invalid(key, format!("expected an object of variables, got {}", describe(other)))
                )
            }
        };
        for (k, val) in map {
            env.insert(k.clone(), env_string(val));
            if matches!(val, Value::Number(_) | Value::Bool(_)) {
                typed.insert(k.clone(), val.clone());
            } else {
                typed.remove(k);
            }
        }
        Ok(())
    }

    fn file_path(&self, o: &Opts, k: &str, cwd: &Path) -> Result<Option<String>, ConfigError> {
        let Some(s) = self.string(o, k)? else { return Ok(None) };
        if s.is_empty() {
            return Ok(None);
        }
        if s == "/dev/null" || s.eq_ignore_ascii_case("null") {
            return Ok(Some("/dev/null".into()));
        }
        Ok(Some(paths::resolve(cwd, &paths::expand_tilde(&s, self.home())).to_string_lossy().into_owned()))
    }

    fn exit_codes(&self, o: &Opts) -> Result<Vec<i32>, ConfigError> {
        let Some((w, v)) = o.get("stop_exit_codes") else { return Ok(Vec::new()) };
        let bad = |what: &str| {
            self.invalid(w, format!("expected an exit code or an array of exit codes, got {what}"))
        };
        let one = |it: &Value| -> Result<Vec<i32>, ConfigError> {
            match it {
                Value::Number(_) => match as_f64(it) {
                    Some(f) if f.fract() == 0.0 && f.abs() <= i32::MAX as f64 => Ok(vec![f as i32]),
                    _ => Err(bad(&describe(it))),
                },
                Value::String(s) => s
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|p| !p.is_empty())
                    .map(|p| p.parse::<i32>().map_err(|_| bad(&describe(it))))
                    .collect(),
                other => Err(bad(&describe(other))),
            }
        };
        match v {
            Value::Array(items) => {
                let mut out = Vec::new();
                for it in items {
                    out.extend(one(it)?);
                }
                Ok(out)
            }
            other => one(other),
        }
    }

    /// The health checks, `None` when the app has none.
    fn health(
        &self,
        o: &Opts,
        env: &BTreeMap<String, String>,
    ) -> Result<Option<corral_proto::HealthSpec>, ConfigError> {
        let mut h = corral_proto::HealthSpec::default();
        for (key, which) in
            [("startup_probe", "startup"), ("readiness_probe", "readiness"), ("liveness_probe", "liveness")]
        {
            let Some((w, v)) = o.get(key) else { continue };
            if v == &Value::Bool(false) {
                continue;
            }
            let p = crate::health::probe(v, which).map_err(|e| self.invalid(w, e))?;
            // A probe without a port of its own uses the app's PORT: it must
            // have one now (an instance may still get PORT+i from
            // increment_var at spawn).
            if p.check.needs_port() && p.check.port().is_none() {
                let ok = env.get("PORT").is_some_and(|s| s.trim().parse::<u16>().is_ok_and(|n| n > 0));
                if !ok {
                    return Err(self.invalid(
                        w,
                        "the probe has no port and the app has no PORT in its env: give the probe a port",
                    ));
                }
            }
            match which {
                "startup" => h.startup = Some(p),
                "readiness" => h.readiness = Some(p),
                _ => h.liveness = Some(p),
            }
        }
        if let Some(b) = self.boolean(o, "notify")? {
            h.notify = b;
        }
        if let Some((w, v)) = o.get("watchdog") {
            if v != &Value::Bool(false) && v != &Value::from(0) {
                h.watchdog_ms = Some(crate::health::watchdog(v).map_err(|e| self.invalid(w, e))?);
            }
        }
        Ok((h != corral_proto::HealthSpec::default()).then_some(h))
    }

    fn cron(&self, o: &Opts) -> Result<Option<String>, ConfigError> {
        let Some((w, v)) = o.get("cron_restart") else { return Ok(None) };
        let pat = match v {
            Value::String(s) => s.trim().to_owned(),
            Value::Number(_) => env_string(v),
            Value::Bool(false) => return Ok(None),
            other => return Err(self.invalid(w, format!("expected a cron pattern, got {}", describe(other)))),
        };
        if pat.is_empty() || pat == "0" {
            return Ok(None);
        }
        check_cron(&pat).map_err(|e| self.invalid(w, format!("Cron pattern error: {e}")))?;
        Ok(Some(pat))
    }
}

/// Parses a `cron_restart` pattern as pm2 does (croner): 5 or 6 fields
/// (seconds optional) or an `@` nickname. The one cron rule: the config
/// validates with it and the daemon schedules with it.
pub fn parse_cron(pat: &str) -> Result<croner::Cron, String> {
    croner::Cron::new(pat).with_seconds_optional().parse().map_err(|e| e.to_string())
}

/// Validates a `cron_restart` pattern (see [`parse_cron`]).
pub fn check_cron(pat: &str) -> Result<(), String> {
    parse_cron(pat).map(|_| ())
}

/// One `listen_fds` entry in its stored form: `host:port` with an IP
/// address (`[v6]:port` for IPv6), a bare port meaning every IPv4 address
/// (`0.0.0.0:port`). Port 0 is refused: every instance and every restart
/// must find the socket at the same address.
pub(crate) fn listen_address(a: &str) -> Result<String, String> {
    let a = a.trim();
    let with_host = if a.bytes().all(|b| b.is_ascii_digit()) { format!("0.0.0.0:{a}") } else { a.to_owned() };
    let addr: std::net::SocketAddr = with_host.parse().map_err(|_| {
        format!("expected host:port with an IP address (127.0.0.1:8000, [::1]:8000) or a port, got {a:?}")
    })?;
    if addr.port() == 0 {
        return Err(format!("{a:?}: port 0 would give every restart another port; name a port"));
    }
    Ok(addr.to_string())
}
