//! `start`, `startOrRestart` / `startOrReload` /
//! `startOrGracefulReload`, and every action on an ecosystem file.
//!
//! CLI flags are mapped to ecosystem keys and validated by
//! `corral_config::app_from_value`, so flags and files share one set of
//! rules and error messages.

use super::{answered, local_env, ops, print_applying, Cli, Code};
use crate::output;
use crate::resolve::{ids_display, is_numeric};
use anyhow::{Context as _, Result};
use corral_config::{ConfigError, Context};
use corral_proto::{AppSpec, Op, ProcInfo, Reply, Request};
use serde_json::{json, Map, Value};
use std::path::Path;

pub enum FileMode {
    /// Apply `op` to the file's apps; restart/reload also start the missing
    /// ones (pm2's `actionFromJson` / `startOr*`).
    Action(Op),
}

pub fn config_context(cli: &Cli, source: &str) -> Context {
    Context {
        cwd: cli.cwd.clone(),
        env: local_env(),
        pm2_home: cli.home.clone(),
        env_name: cli.args.value("env").map(String::from),
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        source: source.to_string(),
    }
}

fn num_or_str(s: &str) -> Value {
    match s.parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => json!(s),
    }
}

/// The ecosystem-key object equivalent to the command line.
pub fn cli_app_object(a: &crate::args::Parsed, script: &str) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("script".into(), json!(script));
    let s = |o: &mut Map<String, Value>, flag: &str, key: &str| {
        if let Some(v) = a.value(flag) {
            o.insert(key.into(), json!(v));
        }
    };
    let n = |o: &mut Map<String, Value>, flag: &str, key: &str| {
        if let Some(v) = a.value(flag) {
            o.insert(key.into(), num_or_str(v));
        }
    };
    let b = |o: &mut Map<String, Value>, flag: &str, key: &str, val: bool| {
        if a.has(flag) {
            o.insert(key.into(), json!(val));
        }
    };
    s(&mut o, "name", "name");
    n(&mut o, "instances", "instances");
    s(&mut o, "cwd", "cwd");
    s(&mut o, "interpreter", "exec_interpreter");
    s(&mut o, "node-args", "node_args");
    s(&mut o, "interpreter-args", "node_args");
    s(&mut o, "output", "out_file");
    s(&mut o, "error", "error_file");
    if a.has("log") {
        o.insert("log_file".into(), a.value("log").map(|v| json!(v)).unwrap_or(json!(true)));
    }
    b(&mut o, "time", "time", true);
    s(&mut o, "log-date-format", "log_date_format");
    s(&mut o, "log-type", "log_type");
    b(&mut o, "merge-logs", "merge_logs", true);
    b(&mut o, "disable-logs", "disable_logs", true);
    s(&mut o, "namespace", "namespace");
    n(&mut o, "max-memory-restart", "max_memory_restart");
    n(&mut o, "restart-delay", "restart_delay");
    n(&mut o, "exp-backoff-restart-delay", "exp_backoff_restart_delay");
    n(&mut o, "max-restarts", "max_restarts");
    n(&mut o, "min-uptime", "min_uptime");
    b(&mut o, "no-autorestart", "autorestart", false);
    b(&mut o, "no-autostart", "autostart", false);
    if let Some(v) = a.value("stop-exit-codes") {
        let codes: Vec<Value> = v.split([',', ' ']).filter(|x| !x.is_empty()).map(num_or_str).collect();
        o.insert("stop_exit_codes".into(), Value::Array(codes));
    }
    n(&mut o, "kill-timeout", "kill_timeout");
    n(&mut o, "listen-timeout", "listen_timeout");
    b(&mut o, "wait-ready", "wait_ready", true);
    b(&mut o, "shutdown-with-message", "shutdown_with_message", true);
    b(&mut o, "no-treekill", "treekill", false);
    s(&mut o, "cron", "cron_restart");
    s(&mut o, "cron-restart", "cron_restart");
    if a.has("watch") {
        let paths = a.values("watch");
        o.insert("watch".into(), if paths.is_empty() { json!(true) } else { json!(paths) });
    }
    s(&mut o, "ignore-watch", "ignore_watch");
    // The flag is in seconds (or `<n>ms`); the ecosystem key in ms.
    if let Some(v) = a.value("watch-delay") {
        let ms = match v.strip_suffix("ms") {
            Some(m) => m.trim().parse::<f64>().ok(),
            None => v.trim().parse::<f64>().ok().map(|s| s * 1000.0),
        };
        match ms {
            Some(ms) if ms.is_finite() && ms >= 0.0 => {
                o.insert("watch_delay".into(), json!(ms.round() as u64))
            }
            _ => o.insert("watch_delay".into(), json!(v)),
        };
    }
    s(&mut o, "instance-var", "instance_var");
    s(&mut o, "increment-var", "increment_var");
    if a.has("execute-command") {
        o.insert("exec_mode".into(), json!("fork_mode"));
    }
    s(&mut o, "pid", "pid_file");
    s(&mut o, "uid", "uid");
    s(&mut o, "gid", "gid");
    if a.has("filter-env") {
        let v = a.values("filter-env");
        o.insert("filter_env".into(), if v.is_empty() { json!(true) } else { json!(v) });
    }
    b(&mut o, "sticky", "sticky", true);
    // Health checks: a short form (`http:/health`, `tcp:3000`, `exec:cmd`)
    // or a probe object as JSON, read like the ecosystem keys.
    s(&mut o, "readiness", "readiness_probe");
    s(&mut o, "liveness", "liveness_probe");
    s(&mut o, "startup-probe", "startup_probe");
    b(&mut o, "notify", "notify", true);
    s(&mut o, "watchdog", "watchdog");
    if a.has("listen") {
        // Repeatable, or comma-separated: every address is bound once by the
        // daemon and passed to every instance (socket activation).
        let addrs: Vec<&str> =
            a.values("listen").into_iter().flat_map(|v| v.split(',')).filter(|x| !x.is_empty()).collect();
        o.insert("listen_fds".into(), json!(addrs));
    }
    b(&mut o, "force", "force", true);
    if !a.app_args.is_empty() {
        o.insert("args".into(), json!(a.app_args));
    }
    if ops::deep_monitoring() {
        o.insert("deep_monitoring".into(), json!(true));
    }
    o
}

/// `pm2 start [targets...]`.
pub fn start(cli: &mut Cli) -> Result<Code> {
    let mut targets = cli.args.positionals.clone();
    if targets.is_empty() {
        targets.push(default_ecosystem(&cli.cwd));
    }
    let mut code = 0;
    for t in &targets {
        let c = start_one(cli, t)?;
        code = code.max(c);
        // An ecosystem file with one bad app still started the others, so
        // the table is shown; a failed script start stops here, as pm2.
        if c != 0 && !is_file_target(t) {
            return Ok(code);
        }
    }
    cli.print_list()?;
    if code == 0 && cli.args.has("attach") {
        let names = attach_names(cli, &targets)?;
        return crate::logs::attach(cli, names);
    }
    Ok(code)
}

/// The app names a start acted on, for `--attach`.
fn attach_names(cli: &mut Cli, targets: &[String]) -> Result<Vec<String>> {
    if let Some(n) = cli.args.value("name") {
        return Ok(vec![n.to_string()]);
    }
    let procs = cli.list()?;
    let mut names: Vec<String> = Vec::new();
    for t in targets {
        let abs = crate::resolve::normalize(&cli.cwd.join(t));
        for p in &procs {
            if (p.app.name == *t || Path::new(&p.app.script) == abs) && !names.contains(&p.app.name) {
                names.push(p.app.name.clone());
            }
        }
    }
    Ok(names)
}

/// `pm2 start` without arguments: `ecosystem.config.js` as pm2, or (an
/// improvement the spec recommends) the first other common config name
/// present in the directory.
pub fn default_ecosystem(cwd: &Path) -> String {
    const NAMES: &[&str] = &[
        "ecosystem.config.js",
        "ecosystem.config.cjs",
        "ecosystem.config.mjs",
        "ecosystem.config.json",
        "ecosystem.json",
        "ecosystem.json5",
        "ecosystem.config.yaml",
        "ecosystem.config.yml",
        "ecosystem.yaml",
        "ecosystem.yml",
    ];
    NAMES.iter().find(|n| cwd.join(n).is_file()).unwrap_or(&NAMES[0]).to_string()
}

/// `startOrRestart` & co: `<file>` required.
pub fn start_or(cli: &mut Cli, op: Op) -> Result<Code> {
    let Some(file) = cli.args.positionals.first().cloned() else {
        output::err("\n  error: missing required argument `json'\n");
        return Ok(1);
    };
    let code = ecosystem(cli, &file, FileMode::Action(op))?;
    // pm2's _startJson ends with speedList for every startOr* variant.
    cli.print_list()?;
    Ok(code)
}

fn is_file_target(t: &str) -> bool {
    corral_config::is_ecosystem_file(t) || t == "-"
}

fn has_extension(x: &str) -> bool {
    Path::new(x).extension().is_some()
}

fn start_one(cli: &mut Cli, x: &str) -> Result<Code> {
    if is_file_target(x) {
        let code = ecosystem(cli, x, FileMode::Action(Op::Restart))?;
        return Ok(code);
    }
    // pm2's _startScript: a number is always a restart (of an app named so,
    // a namespace, or a pm_id), `all` restarts everything, a bare word
    // restarts an app or namespace of that name if there is one.
    let restart = if is_numeric(x) || x == "all" {
        true
    } else if !x.contains('/') && !has_extension(x) {
        let procs = cli.list()?;
        procs.iter().any(|p| p.app.name == x || p.app.namespace == x)
    } else {
        false
    };
    if restart {
        let code = ops::operate_target(cli, Op::Restart, x)?;
        if code == 0 {
            output::info("Process successfully started");
        }
        return Ok(code);
    }
    let procs = cli.list()?;
    start_script(cli, x, &procs)
}

/// pm2 announces a cron restart when it reads an app's config.
fn announce_cron(spec: &AppSpec) {
    if let Some(c) = &spec.cron_restart {
        output::info(&format!("cron restart at {c}"));
    }
}

fn print_config_error(e: &ConfigError) {
    output::error(&e.to_string());
}

fn start_script(cli: &mut Cli, script: &str, procs: &[ProcInfo]) -> Result<Code> {
    let obj = cli_app_object(&cli.args, script);
    start_object(cli, &obj, procs)
}

/// `pm2 serve [path] [port]`: starts the built-in static file server as an
/// app named `static-page-server-<port>` (or `--name`).
pub fn serve(cli: &mut Cli) -> Result<Code> {
    let pos = cli.args.positionals.clone();
    let port = std::env::var("PM2_SERVE_PORT")
        .ok()
        .or_else(|| pos.get(1).cloned())
        .or_else(|| cli.args.value("port").map(String::from))
        .unwrap_or_else(|| "8080".into());
    let dir =
        std::env::var("PM2_SERVE_PATH").ok().or_else(|| pos.first().cloned()).unwrap_or_else(|| ".".into());
    let dir = crate::resolve::normalize(&cli.cwd.join(dir));
    let script = match corral_config::serve::ensure_script(&cli.home) {
        Ok(p) => p,
        Err(e) => {
            output::error(&format!("Error while trying to serve : cannot write the server script: {e}"));
            return Ok(1);
        }
    };
    let mut obj = cli_app_object(&cli.args, &script.to_string_lossy());
    if !cli.args.has("name") {
        obj.insert("name".into(), json!(format!("static-page-server-{port}")));
    }
    obj.insert("cwd".into(), json!(dir.to_string_lossy()));
    // The server says `ready` once it listens: `pm2 serve` returns then.
    obj.insert("wait_ready".into(), json!(true));
    let mut env = Map::new();
    env.insert("PM2_SERVE_PORT".into(), num_or_str(&port));
    env.insert("PM2_SERVE_PATH".into(), json!(dir.to_string_lossy()));
    env.insert("PM2_SERVE_SPA".into(), json!(if cli.args.has("spa") { "true" } else { "false" }));
    if let (Some(u), Some(p)) = (cli.args.value("basic-auth-username"), cli.args.value("basic-auth-password"))
    {
        env.insert("PM2_SERVE_BASIC_AUTH".into(), json!("true"));
        env.insert("PM2_SERVE_BASIC_AUTH_USERNAME".into(), json!(u));
        env.insert("PM2_SERVE_BASIC_AUTH_PASSWORD".into(), json!(p));
    }
    obj.insert("env".into(), Value::Object(env));
    let procs = cli.list()?;
    let code = start_object(cli, &obj, &procs)?;
    if code != 0 {
        return Ok(code);
    }
    output::info(&format!("Serving {} on port {port}", dir.display()));
    cli.print_list()?;
    Ok(0)
}

fn start_object(cli: &mut Cli, obj: &Map<String, Value>, procs: &[ProcInfo]) -> Result<Code> {
    let ctx = config_context(cli, "<cli>");
    let (mut spec, warnings) = match corral_config::app_from_value(obj, &ctx) {
        Ok(r) => r,
        Err(e) => {
            print_config_error(&e);
            return Ok(1);
        }
    };
    super::conf::apply_module_env(&mut spec, &cli.home);
    for w in &warnings {
        output::warn(w);
    }
    announce_cron(&spec);
    let same: Vec<&ProcInfo> =
        procs.iter().filter(|p| p.app.script == spec.script && p.app.name == spec.name).collect();
    // pm2: a stopped copy is restarted (even with -f); a running one needs
    // -f to be started again.
    let all_down = !same.is_empty()
        && same.iter().all(|p| matches!(p.status.as_str(), "stopped" | "errored" | "stopping"));
    if !same.is_empty() && !all_down && !cli.args.has("force") {
        output::error("Script already launched, add -f option to force re-execution");
        return Ok(1);
    }
    if all_down {
        // By name: every instance of the app.
        let code = ops::operate_target(cli, Op::Restart, &spec.name)?;
        if code == 0 {
            output::info("Process successfully started");
        }
        return Ok(code);
    }
    let n = spec.instances.unwrap_or(1);
    output::info(&format!(
        "Starting {} in {} ({} instance{})",
        spec.script,
        spec.exec_mode.as_str(),
        n,
        if n > 1 { "s" } else { "" }
    ));
    match answered(cli.client()?.request(&Request::Start { app: spec })?) {
        Err(code) => Ok(code),
        Ok(_) => {
            output::info("Done.");
            Ok(0)
        }
    }
}

/// Reads `-` (stdin) into a temporary JSON file the config loader can read.
fn stdin_file(cli: &Cli) -> Result<std::path::PathBuf> {
    use std::io::Read;
    let mut buf = String::new();
    std::io::stdin().read_to_string(&mut buf).context("cannot read stdin")?;
    let p = cli.home.join(format!(".stdin-{}.json", std::process::id()));
    std::fs::write(&p, buf).with_context(|| format!("cannot write {}", p.display()))?;
    Ok(p)
}

fn only_filter(cli: &Cli) -> Option<Vec<String>> {
    cli.args.value("only").map(|v| v.split([',', ' ']).filter(|s| !s.is_empty()).map(String::from).collect())
}

/// The few command-line options pm2 applies on top of an ecosystem file's
/// apps (`_startJson`): `--watch` (bare), `--ignore-watch`, a numeric `-i`.
pub fn apply_cli_overrides(a: &crate::args::Parsed, spec: &mut AppSpec) {
    if a.has("watch") && a.values("watch").is_empty() && !spec.watch {
        spec.watch = true;
    }
    if let Some(iw) = a.value("ignore-watch") {
        if spec.ignore_watch.is_empty() {
            spec.ignore_watch = iw.split_whitespace().map(String::from).collect();
        }
    }
    if let Some(n) = a.value("instances").and_then(|v| v.parse::<i64>().ok()) {
        // An app without `instances` got fork mode by default; pm2 derives
        // the mode after this override, so a node app becomes a cluster.
        if spec.instances.is_none() {
            if spec.is_node() {
                spec.exec_mode = corral_proto::ExecMode::Cluster;
            }
            // Likewise the merge_logs default (true only without instances
            // or with 0 = max).
            spec.merge_logs = n == 0;
        }
        spec.instances = Some(n);
    }
}

/// Acts on every app of an ecosystem file.
pub fn ecosystem(cli: &mut Cli, file: &str, mode: FileMode) -> Result<Code> {
    let FileMode::Action(op) = mode;
    let (path, temp) = if file == "-" {
        (stdin_file(cli)?, true)
    } else {
        (crate::resolve::normalize(&cli.cwd.join(file)), false)
    };
    let ctx = config_context(cli, file);
    let loaded = corral_config::load_ecosystem(&path, &ctx);
    if temp {
        let _ = std::fs::remove_file(&path);
    }
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            // The whole file failed: nothing was done, so no table either.
            print_config_error(&e);
            return Err(super::Reported(1).into());
        }
    };
    for w in &loaded.warnings {
        output::warn(w);
    }
    let only = only_filter(cli);
    let mut code = 0;
    let mut apps: Vec<AppSpec> = Vec::new();
    for a in loaded.apps {
        match a {
            Ok(mut spec) => {
                if only.as_ref().is_none_or(|o| o.contains(&spec.name)) {
                    apply_cli_overrides(&cli.args, &mut spec);
                    announce_cron(&spec);
                    super::conf::apply_module_env(&mut spec, &cli.home);
                    apps.push(spec);
                }
            }
            Err(e) => {
                // With --only, errors of other apps are not the user's
                // concern; only `Invalid` says which app it is about.
                // stop/delete only need the apps' names (pm2 does not
                // validate the file for them).
                let relevant = match (&only, &e) {
                    _ if !matches!(op, Op::Restart | Op::Reload) => false,
                    (None, _) => true,
                    (Some(o), ConfigError::Invalid { app, .. }) => o.contains(app),
                    (Some(_), _) => false,
                };
                if relevant {
                    output::error(&format!("Error: {e}"));
                    code = 1;
                }
            }
        }
    }
    let procs = cli.list()?;
    let ids_of =
        |name: &str| -> Vec<u32> { procs.iter().filter(|p| p.app.name == name).map(|p| p.pm_id).collect() };
    let starts_missing = matches!(op, Op::Restart | Op::Reload);
    let missing: Vec<&AppSpec> = apps.iter().filter(|a| ids_of(&a.name).is_empty()).collect();

    let mut done: Vec<&str> = Vec::new();
    for app in apps.iter().filter(|a| !ids_of(&a.name).is_empty()) {
        // Two declarations with one name act once on that name (pm2 merges
        // them; the last declaration wins here).
        if done.contains(&app.name.as_str()) {
            continue;
        }
        done.push(&app.name);
        let app = apps.iter().rev().find(|a| a.name == app.name).unwrap_or(app);
        let ids = ids_of(&app.name);
        // restart/reload go through pm2's _operate (which announces the
        // action); stop/delete through actionFromJson (✓ lines only).
        if starts_missing {
            print_applying(op.pm2_method(), &app.name, &ids_display(&ids));
        }
        let update = matches!(op, Op::Restart | Op::Reload).then_some(app);
        code = code.max(ops::apply(cli, op, &ids, &procs, update, false)?);
    }
    if starts_missing && !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|a| a.name.as_str()).collect();
        output::warn(&format!("Applications {} not running, starting...", names.join(", ")));
        for app in missing {
            if app.wait_ready {
                output::warn(&format!(
                    "App {} has option 'wait_ready' set, waiting for app to be ready...",
                    app.name
                ));
            }
            match cli.client()?.request(&Request::Start { app: app.clone() })? {
                Reply::Error { message } => {
                    output::error(&format!("Error: {message}"));
                    code = 1;
                }
                Reply::Procs { procs } => {
                    output::info(&format!("App [{}] launched ({} instances)", app.name, procs.len()));
                }
                _ => output::info(&format!(
                    "App [{}] launched ({} instances)",
                    app.name,
                    app.instances.unwrap_or(1).max(1)
                )),
            }
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_discovery() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(default_ecosystem(d.path()), "ecosystem.config.js");
        std::fs::write(d.path().join("ecosystem.yml"), "apps: []").unwrap();
        assert_eq!(default_ecosystem(d.path()), "ecosystem.yml");
        std::fs::write(d.path().join("ecosystem.config.cjs"), "").unwrap();
        assert_eq!(default_ecosystem(d.path()), "ecosystem.config.cjs");
    }

    #[test]
    fn cli_overrides_on_file_apps() {
        let args: Vec<String> =
            ["start", "e.config.js", "-i", "3", "--watch"].iter().map(|s| s.to_string()).collect();
        let p = crate::args::parse(&args).unwrap();
        let mut spec = AppSpec { interpreter: "node".into(), ..Default::default() };
        apply_cli_overrides(&p, &mut spec);
        assert_eq!(spec.instances, Some(3));
        assert_eq!(spec.exec_mode, corral_proto::ExecMode::Cluster);
        assert!(spec.watch);
        let mut py = AppSpec { interpreter: "python3".into(), ..Default::default() };
        apply_cli_overrides(&p, &mut py);
        assert_eq!(py.exec_mode, corral_proto::ExecMode::Fork);
    }

    #[test]
    fn flags_map_to_ecosystem_keys() {
        let args: Vec<String> = [
            "start",
            "app.js",
            "--name",
            "api",
            "-i",
            "max",
            "--no-autorestart",
            "--time",
            "--watch",
            "--max-memory-restart",
            "200M",
            "--kill-timeout",
            "3000",
            "--stop-exit-codes",
            "0,3",
            "--",
            "--port",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = crate::args::parse(&args).unwrap();
        let o = cli_app_object(&p, "app.js");
        assert_eq!(o["script"], "app.js");
        assert_eq!(o["name"], "api");
        assert_eq!(o["instances"], "max");
        assert_eq!(o["autorestart"], false);
        assert_eq!(o["time"], true);
        assert_eq!(o["watch"], true);
        assert_eq!(o["max_memory_restart"], "200M");
        assert_eq!(o["kill_timeout"], 3000);
        assert_eq!(o["stop_exit_codes"], json!([0, 3]));
        assert_eq!(o["args"], json!(["--port", "1"]));
        assert!(!o.contains_key("treekill"));
        let p = crate::args::parse(&["start".into(), "a.js".into(), "--watch-delay".into(), "1.5".into()])
            .unwrap();
        assert_eq!(cli_app_object(&p, "a.js")["watch_delay"], 1500);
        let p = crate::args::parse(&["start".into(), "a.js".into(), "--watch-delay".into(), "400ms".into()])
            .unwrap();
        assert_eq!(cli_app_object(&p, "a.js")["watch_delay"], 400);
    }
}
