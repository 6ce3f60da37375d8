//! pm2's JSON shapes (`jlist`, `pm2_env`, `dump.pm2`) and reading them back.
//!
//! Values are built directly (no serialize-then-parse) because `jlist`
//! renders every process on each call.

use crate::app::{canonical_key, resolve_app, sanitize_log_name};
use crate::coerce::env_string;
use crate::paths;
use crate::{ConfigError, Context};
use corral_proto::{AppSpec, ProcInfo};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

fn n(v: u64) -> Value {
    Value::from(v)
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn strs(v: &[String]) -> Value {
    Value::Array(v.iter().map(|x| s(x)).collect())
}

fn is_down(p: &ProcInfo) -> bool {
    matches!(p.status.as_str(), "stopped" | "errored" | "stopping") || p.pid == 0
}

/// pm2 prints CPU as a JS number: `0`, `12.5`.
fn cpu_value(cpu: f64) -> Value {
    let r = (cpu * 10.0).round() / 10.0;
    if !r.is_finite() || r <= 0.0 {
        return Value::from(0);
    }
    if r.fract() == 0.0 {
        Value::from(r as u64)
    } else {
        serde_json::Number::from_f64(r).map(Value::Number).unwrap_or_else(|| Value::from(0))
    }
}

pub fn jlist_entry(p: &ProcInfo) -> Value {
    let down = is_down(p);
    let mut m = Map::with_capacity(5);
    m.insert("pid".into(), n(if down { 0 } else { u64::from(p.pid) }));
    m.insert("name".into(), s(&p.app.name));
    m.insert("pm2_env".into(), pm2_env(p));
    m.insert("pm_id".into(), n(u64::from(p.pm_id)));
    let mut monit = Map::with_capacity(2);
    monit.insert("memory".into(), n(if down { 0 } else { p.memory }));
    monit.insert("cpu".into(), if down { Value::from(0) } else { cpu_value(p.cpu) });
    m.insert("monit".into(), Value::Object(monit));
    Value::Object(m)
}

/// `jlist_entry(p)` as JSON text, with `pm2_env` given already serialized:
/// the daemon caches that part, which changes far less often than `monit`.
/// Produces the same bytes as `serde_json::to_string(&jlist_entry(p))`.
pub fn jlist_entry_text(p: &ProcInfo, pm2_env_json: &str, out: &mut String) {
    use std::fmt::Write;
    let down = is_down(p);
    let name = Value::from(p.app.name.as_str());
    let cpu = if down { Value::from(0) } else { cpu_value(p.cpu) };
    let _ = write!(
        out,
        "{{\"pid\":{},\"name\":{},\"pm2_env\":{},\"pm_id\":{},\"monit\":{{\"memory\":{},\"cpu\":{}}}}}",
        if down { 0 } else { p.pid },
        name,
        pm2_env_json,
        p.pm_id,
        if down { 0 } else { p.memory },
        cpu
    );
}

fn extra_or(a: &AppSpec, key: &str, default: bool) -> Value {
    match a.extra.get(key) {
        Some(v @ Value::Bool(_)) => v.clone(),
        _ => Value::Bool(default),
    }
}

pub fn pm2_env(p: &ProcInfo) -> Value {
    let a = &p.app;
    let d = AppSpec::default();
    let env = user_env(p);
    let mut m = Map::with_capacity(80 + env.len() + a.extra.len());
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    // Key order follows pm2's own output (Appendix A.3).
    put("namespace", s(&a.namespace));
    put("kill_retry_time", n(a.kill_retry_time));
    put("windowsHide", extra_or(a, "windowsHide", true));
    put("username", s(&p.username));
    put("treekill", Value::Bool(a.treekill));
    put("automation", extra_or(a, "automation", true));
    put("pmx", extra_or(a, "pmx", true));
    put("instance_var", s(&a.instance_var));
    put("autorestart", Value::Bool(a.autorestart));
    put("autostart", Value::Bool(a.autostart));
    put("vizion", extra_or(a, "vizion", true));
    put("merge_logs", Value::Bool(a.merge_logs));
    put("args", strs(&a.args));
    put("name", s(&a.name));
    // `--node-args=null` on a restart removes the key, as pm2 does.
    if !(a.node_args.is_empty() && a.extra.get("node_args").is_some_and(Value::is_null)) {
        put("node_args", strs(&a.node_args));
    }
    put("pm_exec_path", s(&a.script));
    put("pm_cwd", s(&a.cwd));
    put("exec_interpreter", s(&a.interpreter));
    put("exec_mode", s(a.exec_mode.as_str()));
    put("instances", Value::from(a.instances.unwrap_or(1)));
    put("pm_out_log_path", s(&p.pm_out_log_path));
    put("pm_err_log_path", s(&p.pm_err_log_path));
    put("pm_pid_path", s(&p.pm_pid_path));
    if let Some(l) = &p.pm_log_path {
        put("pm_log_path", s(l));
    }
    put("km_link", extra_or(a, "km_link", false));
    put("vizion_running", Value::Bool(false));
    // Only the configured name: pm2 sets `NODE_APP_INSTANCE` only when it is
    // the instance_var.
    put(&a.instance_var, n(u64::from(p.instance)));

    // Options, shown when set (differing from the default), as pm2 shows
    // the keys the user gave.
    put(
        "watch",
        if !a.watch || a.watch_paths.is_empty() { Value::Bool(a.watch) } else { strs(&a.watch_paths) },
    );
    if !a.ignore_watch.is_empty() {
        put("ignore_watch", strs(&a.ignore_watch));
    }
    if a.watch_delay != d.watch_delay {
        put("watch_delay", n(a.watch_delay));
    }
    for (k, v) in [
        ("out_file", &a.out_file),
        ("error_file", &a.error_file),
        ("log_file", &a.log_file),
        ("pid_file", &a.pid_file),
    ] {
        if let Some(v) = v {
            put(k, s(v));
        }
    }
    if let Some(f) = &a.log_date_format {
        put("log_date_format", s(f));
    }
    if let Some(t) = &a.log_type {
        put("log_type", s(t));
    }
    if a.disable_logs {
        put("disable_logs", Value::Bool(true));
    }
    if let Some(b) = a.max_memory_restart {
        put("max_memory_restart", n(b));
    }
    if let Some(c) = &a.cron_restart {
        put("cron_restart", s(c));
    }
    if a.min_uptime != d.min_uptime {
        put("min_uptime", n(a.min_uptime));
    }
    if a.max_restarts != d.max_restarts {
        put("max_restarts", n(u64::from(a.max_restarts)));
    }
    if a.restart_delay != d.restart_delay {
        put("restart_delay", n(a.restart_delay));
    }
    if let Some(ms) = a.exp_backoff_restart_delay {
        put("exp_backoff_restart_delay", n(ms));
    }
    if a.kill_timeout != d.kill_timeout {
        put("kill_timeout", n(a.kill_timeout));
    }
    if !a.stop_exit_codes.is_empty() {
        put("stop_exit_codes", Value::Array(a.stop_exit_codes.iter().map(|&c| Value::from(c)).collect()));
    }
    if a.wait_ready {
        put("wait_ready", Value::Bool(true));
    }
    if a.listen_timeout != d.listen_timeout {
        put("listen_timeout", n(a.listen_timeout));
    }
    if a.shutdown_with_message {
        put("shutdown_with_message", Value::Bool(true));
    }
    if let Some(v) = &a.increment_var {
        put("increment_var", s(v));
    }
    if let Some(b) = a.sticky {
        put("sticky", Value::Bool(b));
    }
    if let Some(port) = a.sticky_port {
        put("sticky_port", n(u64::from(port)));
    }
    if !a.listen_fds.is_empty() {
        put("listen_fds", Value::Array(a.listen_fds.iter().map(|x| s(x)).collect()));
    }
    match a.cluster_group.as_deref() {
        None => {}
        Some("") => put("cluster_group", Value::Bool(false)),
        Some(g) => put("cluster_group", s(g)),
    }
    if let Some(h) = &a.health {
        for (key, probe) in [
            ("startup_probe", &h.startup),
            ("readiness_probe", &h.readiness),
            ("liveness_probe", &h.liveness),
        ] {
            if let Some(p) = probe {
                put(key, crate::health::probe_value(p));
            }
        }
        if h.notify {
            put("notify", Value::Bool(true));
        }
        if let Some(ms) = h.watchdog_ms {
            put("watchdog", n(ms));
        }
    }
    // env_<name> objects and other keys from the file; pm2's own fields
    // above win over them.
    for (k, v) in &a.extra {
        if k == "node_args" && v.is_null() {
            continue;
        }
        m.entry(k.clone()).or_insert_with(|| v.clone());
    }
    // pm2 flattens the env into pm2_env; its own fields win.
    for (k, v) in &env {
        m.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("unique_id", s(&p.unique_id));
    put("status", s(p.status.as_str()));
    put("pm_uptime", n(p.pm_uptime));
    // What the current run declared with @pm2/io (empty otherwise).
    match p.current_axm() {
        Some(x) if !is_down(p) => {
            put("axm_actions", Value::Array(x.actions.clone()));
            put("axm_monitor", Value::Object(x.monitor.clone()));
            put("axm_options", Value::Object(x.options.clone()));
        }
        _ => {
            put("axm_actions", Value::Array(Vec::new()));
            put("axm_monitor", Value::Object(Map::new()));
            put("axm_options", Value::Object(Map::new()));
        }
    }
    put("axm_dynamic", Value::Object(Map::new()));
    // Health of the current run, for apps with health checks.
    if let Some(h) = &p.health {
        put("health", serde_json::to_value(h).unwrap_or(Value::Null));
    }
    put("created_at", n(p.created_at));
    put("pm_id", n(u64::from(p.pm_id)));
    put("restart_time", n(u64::from(p.restart_time)));
    put("unstable_restarts", n(u64::from(p.unstable_restarts)));
    put("version", s(a.version.as_deref().unwrap_or("N/A")));
    if let Some(v) = &p.node_version {
        put("node_version", s(v));
    }
    if let Some(c) = p.exit_code {
        put("exit_code", Value::from(c));
    }
    if let Some(ms) = p.prev_restart_delay {
        put("prev_restart_delay", n(ms));
    }
    let mut env_obj = env;
    if !p.unique_id.is_empty() {
        env_obj.entry("unique_id").or_insert_with(|| s(&p.unique_id));
    }
    put("env", Value::Object(env_obj));
    Value::Object(m)
}

/// The app's own environment as pm2 keeps it in `pm2_env.env` (and
/// flattens into `pm2_env`): the stored env (the CLI's env at start, the
/// file's `env`, module settings), values the user typed as numbers or
/// booleans kept so, and the increment var with this instance's offset. The
/// keys the daemon injects into the child's environment (`status`, `name`,
/// `exec_mode`, log paths...) are not part of it: pm2 shows them once, as
/// pm2_env fields.
fn user_env(p: &ProcInfo) -> Map<String, Value> {
    let a = &p.app;
    let mut env = Map::with_capacity(a.env.len() + 1);
    for (k, v) in &a.env {
        let val = match a.env_typed.get(k) {
            Some(t) if env_string(t) == *v => t.clone(),
            _ => s(v),
        };
        env.insert(k.clone(), val);
    }
    if let Some(var) = &a.increment_var {
        let base: i64 = a.env.get(var).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        env.insert(var.clone(), Value::from(base + i64::from(p.instance)));
    }
    env
}

/// pm2_env fields that describe a process's run, not its configuration:
/// never read back as options.
const RUNTIME: &[&str] = &[
    "status",
    "restart_time",
    "unstable_restarts",
    "created_at",
    "pm_uptime",
    "pm_id",
    "unique_id",
    "exit_code",
    "prev_restart_delay",
    "pm_exec_path",
    "pm_cwd",
    "pm_out_log_path",
    "pm_err_log_path",
    "pm_pid_path",
    "pm_log_path",
    "axm_actions",
    "axm_monitor",
    "axm_options",
    "axm_dynamic",
    "health",
    "vizion_running",
    "_pm2_version",
    "node_version",
    "version",
    "versioning",
    "username",
    "NODE_APP_INSTANCE",
    "instances",
    "env",
    "command",
    "pmx_module",
    "restart_task",
    "started_inside",
    "created_at_ms",
];

/// Defaults pm2 writes into every pm2_env; equal values are not worth
/// keeping as options.
const DEFAULT_FLAGS: &[(&str, bool)] =
    &[("vizion", true), ("pmx", true), ("automation", true), ("windowsHide", true), ("km_link", false)];

pub fn instance_from_pm2_env(v: &Value) -> Option<u32> {
    let var = v.get("instance_var").and_then(Value::as_str).unwrap_or("NODE_APP_INSTANCE");
    let read = |x: &Value| match x {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    v.get(var)
        .and_then(read)
        .or_else(|| v.get("NODE_APP_INSTANCE").and_then(read))
        .or_else(|| v.get("env").and_then(|e| e.get(var)).and_then(read))
        .and_then(|i| u32::try_from(i).ok())
}

/// Is `p` the path the daemon would pick anyway (`<home>/<dir>/<name><suffix>`
/// with an optional `-<id>` before the extension)?
fn is_default_path(p: &Path, home: &Path, dir: &str, name: &str, suffix: &str, ext: &str) -> bool {
    if p.parent() != Some(home.join(dir).as_path()) {
        return false;
    }
    let Some(file) = p.file_name().and_then(|f| f.to_str()) else { return false };
    let Some(rest) = file.strip_prefix(&format!("{}{suffix}", sanitize_log_name(name))) else { return false };
    let Some(mid) = rest.strip_suffix(ext) else { return false };
    mid.is_empty()
        || mid.strip_prefix('-').is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes a `-<digits>` pm2 inserted before the extension (only
/// `-<pm_id>` when the entry names its pm_id).
fn strip_id(p: &str, ext: &str, pm_id: Option<u64>) -> String {
    if let Some(stem) = p.strip_suffix(ext) {
        if let Some(i) = stem.rfind('-') {
            let digits = &stem[i + 1..];
            let ours = pm_id.is_none_or(|id| digits.parse::<u64>().ok() == Some(id));
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && ours {
                return format!("{}{ext}", &stem[..i]);
            }
        }
    }
    p.to_owned()
}

pub fn app_from_pm2_env(v: &Value, ctx: &Context) -> Result<AppSpec, ConfigError> {
    let o = v.as_object().ok_or_else(|| ConfigError::Malformed {
        file: ctx.source.clone(),
        reason: format!("a process entry must be an object, got {}", crate::coerce::describe(v)),
    })?;
    let name = o.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
    let home_env = ctx.env.get("HOME").map(String::as_str);
    let expand = |p: &str| paths::expand_tilde(p, home_env);

    // The saved env is the app's whole env; drop what the daemon injects.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if let Some(Value::Object(e)) = o.get("env") {
        for (k, val) in e {
            env.insert(k.clone(), env_string(val));
        }
    }
    let saved_env = env.clone();
    let instance_var =
        o.get("instance_var").and_then(Value::as_str).unwrap_or("NODE_APP_INSTANCE").to_owned();
    for k in corral_proto::INJECTED_ENV_KEYS {
        env.remove(*k);
    }
    env.remove(&instance_var);
    // The daemon sets PM2_HOME itself; a copy naming this same home adds
    // nothing.
    if env.get("PM2_HOME").map(|h| Path::new(h) == ctx.pm2_home.as_path()).unwrap_or(false) {
        env.remove("PM2_HOME");
    }
    env.remove("NODE_APP_INSTANCE");
    // increment_var was saved with the instance offset added.
    if let (Some(var), Some(i)) = (o.get("increment_var").and_then(Value::as_str), instance_from_pm2_env(v)) {
        if let Some(val) = env.get(var).and_then(|x| x.trim().parse::<i64>().ok()) {
            env.insert(var.to_owned(), (val - i64::from(i)).to_string());
        }
    }

    let mut app = Map::new();
    let mut kept_aside = Vec::new();
    for (k, val) in o {
        if RUNTIME.contains(&k.as_str()) || *k == instance_var {
            continue;
        }
        // Flattened env vars are copies of `env`.
        if let Some(ev) = saved_env.get(k) {
            if *ev == env_string(val) && canonical_key(k).is_none() {
                continue;
            }
        }
        if let Some((_, def)) = DEFAULT_FLAGS.iter().find(|(f, _)| f == k) {
            if val.as_bool() == Some(*def) {
                continue;
            }
        }
        match canonical_key(k) {
            // Already applied when the entry was made; applying them again
            // would filter the saved env or prefix the name twice.
            Some("filter_env" | "name_prefix" | "append_env_to_name") => {
                kept_aside.push((k.clone(), val.clone()))
            }
            Some(
                "exec_interpreter" | "script" | "cwd" | "out_file" | "error_file" | "log_file" | "pid_file",
            ) => {}
            _ => {
                app.insert(k.clone(), val.clone());
            }
        }
    }

    let script = o.get("pm_exec_path").or_else(|| o.get("script")).cloned().unwrap_or(Value::Null);
    app.insert("script".into(), script);
    if let Some(c) = o.get("pm_cwd").or_else(|| o.get("cwd")) {
        app.insert("cwd".into(), c.clone());
    }
    if let Some(Value::String(i)) = o.get("exec_interpreter") {
        // A dump from a pm2 install may name the node bundled with it;
        // fall back to `node` from PATH when that one is gone.
        let i = if i.starts_with('/') && !Path::new(i).exists() && i.ends_with("/node") { "node" } else { i };
        app.insert("exec_interpreter".into(), s(i));
    }
    // pm2 inserts `-<pm_id>` into log paths unless merge_logs is true, and
    // leaves merge_logs out of cluster entries it never set it on: only an
    // explicit `true` means the paths carry no id.
    let merge = o.get("merge_logs").and_then(Value::as_bool) == Some(true);
    let pm_id = o.get("pm_id").and_then(Value::as_u64);
    let home = &ctx.pm2_home;
    let logs: [(&str, &str, &str, &str, &str); 3] = [
        ("out_file", "pm_out_log_path", "logs", "-out", ".log"),
        ("error_file", "pm_err_log_path", "logs", "-error", ".log"),
        ("pid_file", "pm_pid_path", "pids", "", ".pid"),
    ];
    for (key, runtime, dir, suffix, ext) in logs {
        if let Some(Value::String(p)) = o.get(key) {
            app.insert(key.into(), s(p));
            continue;
        }
        let Some(Value::String(p)) = o.get(runtime) else { continue };
        let p = expand(p);
        if p.is_empty() || is_default_path(Path::new(&p), home, dir, &name, suffix, ext) {
            continue;
        }
        // pm2 inserts `-<pm_id>` in pid files always and in log files of
        // unmerged instances.
        let p = if key == "pid_file" || (!merge && p != "/dev/null") { strip_id(&p, ext, pm_id) } else { p };
        app.insert(key.into(), Value::String(p));
    }
    match (o.get("log_file"), o.get("pm_log_path")) {
        (Some(Value::String(p)), _) => {
            app.insert("log_file".into(), s(p));
        }
        (_, Some(Value::String(p))) => {
            let p = expand(p);
            let p = if merge { p } else { strip_id(&p, ".log", pm_id) };
            app.insert("log_file".into(), Value::String(p));
        }
        _ => {}
    }

    let rctx = Context { env_name: None, ..ctx.clone() };
    // A dump is data the user did not write by hand: an option that no
    // longer validates (older pm2, hand edits) is dropped rather than losing
    // the whole process on resurrect. Script, cwd and interpreter errors
    // still fail, since the process could not run anyway.
    let mut spec = None;
    for _ in 0..16 {
        match resolve_app(&app, &rctx, env.clone()) {
            Ok((s, _warnings)) => {
                spec = Some(s);
                break;
            }
            Err(ConfigError::Invalid { key, .. })
                if key != "script" && key != "cwd" && app.contains_key(&key) =>
            {
                app.remove(&key);
            }
            Err(e) => return Err(e),
        }
    }
    let Some(mut spec) = spec else {
        return Err(ConfigError::Malformed {
            file: ctx.source.clone(),
            reason: format!("process entry {name} has too many invalid options"),
        });
    };
    for (k, val) in kept_aside {
        spec.extra.insert(k, val);
    }
    if let Some(Value::Object(e)) = o.get("env") {
        for (k, val) in e {
            if !matches!(val, Value::Number(_) | Value::Bool(_)) {
                continue;
            }
            if spec.env.get(k) == Some(&env_string(val)) {
                spec.env_typed.insert(k.clone(), val.clone());
            } else if spec.increment_var.as_deref() == Some(k.as_str()) {
                // Saved with the instance offset added: the base keeps the type.
                if let Some(base) = spec.env.get(k).and_then(|b| b.trim().parse::<i64>().ok()) {
                    spec.env_typed.insert(k.clone(), Value::from(base));
                }
            }
        }
    }
    // A dump holds one entry per instance: no fan-out on resurrect.
    spec.instances = None;
    Ok(spec)
}
