//! Per-id actions: stop, restart, reload, delete, reset, sendSignal, scale,
//! kill.

use super::{answered, print_applying, print_done, Cli, Code};
use crate::inspect::inspect;
use crate::output;
use crate::resolve::{ids_display, is_numeric, resolve, Target};
use anyhow::{anyhow, Result};
use corral_proto::{AppSpec, Op, ProcInfo, Reply, Request};
use std::time::{Duration, Instant};

fn op_from_command(cmd: &str) -> Option<Op> {
    Some(match cmd {
        "stop" => Op::Stop,
        "restart" => Op::Restart,
        "reload" => Op::Reload,
        "delete" | "del" => Op::Delete,
        "reset" => Op::Reset,
        _ => return None,
    })
}

/// stop / restart / reload / delete / reset.
pub fn run(cli: &mut Cli, cmd: &str) -> Result<Code> {
    let op = op_from_command(cmd).ok_or_else(|| anyhow!("unknown action {cmd}"))?;
    let targets = cli.args.positionals.clone();
    if targets.is_empty() {
        output::err(&format!(
            "\n  error: missing required argument `{}'\n",
            "id|name|namespace|all|json|stdin"
        ));
        return Ok(1);
    }
    let any_file = targets.iter().any(|t| corral_config::is_ecosystem_file(t) || t == "-");
    let restartish = matches!(op, Op::Restart | Op::Reload);
    if restartish && cli.args.has("env") && !any_file {
        output::error(&format!(
            "Using --env [{}] without passing the ecosystem.config.js does not work",
            cli.args.value("env").unwrap_or("")
        ));
        return Ok(1);
    }
    let _lock = if op == Op::Reload {
        match ReloadLock::acquire(&cli.home, cli.args.has("force")) {
            Ok(l) => Some(l),
            Err(left) => {
                output::error(&format!(
                    "Reload already in progress, please try again in {left} seconds or use --force"
                ));
                return Ok(1);
            }
        }
    } else {
        None
    };
    let mut code = 0;
    for t in &targets {
        let is_file = corral_config::is_ecosystem_file(t) || t == "-";
        if restartish && !is_file && !cli.args.has("update-env") {
            // pm2 prints this once per restarted target.
            output::out(&output::paint(
                output::Color::BoldBlue,
                "Use --update-env to update environment variables",
            ));
        }
        code = if is_file {
            super::start::ecosystem(cli, t, super::start::FileMode::Action(op))?
        } else if op == Op::Reset {
            reset_target(cli, t)?
        } else {
            operate_target(cli, op, t)?
        };
        if code != 0 {
            return Ok(code);
        }
    }
    if op != Op::Reload {
        cli.print_list()?;
    }
    Ok(code)
}

/// The spec to send with a restart/reload/stop: the current env merged in
/// with `--update-env`, watch toggled/disabled with `--watch`.
fn update_for(cli: &Cli, op: Op, p: &ProcInfo, by_name: bool) -> Option<Box<AppSpec>> {
    let mut spec = p.app.clone();
    let mut changed = false;
    // pm2's _operate: a restart/reload by name merges the app's module
    // settings (`pm2 set <app>.<key> <value>`) into its env.
    if by_name && matches!(op, Op::Restart | Op::Reload) {
        changed |= super::conf::apply_module_env(&mut spec, &cli.home);
    }
    if matches!(op, Op::Restart | Op::Reload) && cli.args.has("update-env") {
        // Merging only adds/overwrites, as pm2 does.
        spec.env.extend(super::local_env());
        changed = true;
    }
    if matches!(op, Op::Restart | Op::Reload) {
        changed |= apply_cli_options(&cli.args, &mut spec);
    }
    // pm2's stopProcessId always turns the watcher off (a stopped app must
    // not be brought back by a file change); `restart --watch` toggles it.
    if op == Op::Stop && spec.watch {
        spec.watch = false;
        changed = true;
    }
    if cli.args.has("watch") && op == Op::Restart {
        spec.watch = !spec.watch;
        changed = true;
    }
    changed.then(|| Box::new(spec))
}

/// pm2's `_handleAttributeUpdate`: options given to `restart` / `reload`
/// (or `start` of an existing app) are merged into the stored config; a
/// value of `null` removes the option. True if anything changed.
pub fn apply_cli_options(a: &crate::args::Parsed, spec: &mut AppSpec) -> bool {
    let before = spec.clone();
    if let Some(n) = a.value("name").filter(|n| !n.is_empty()) {
        spec.name = n.to_string();
    }
    if let Some(v) = a.value("node-args").or_else(|| a.value("interpreter-args")) {
        if v == "null" {
            spec.node_args.clear();
            // Shown as absent, not as an empty list.
            spec.extra.insert("node_args".into(), serde_json::Value::Null);
        } else {
            spec.node_args = corral_config::split_args(v);
            spec.extra.remove("node_args");
        }
    }
    if !a.app_args.is_empty() {
        spec.args = a.app_args.clone();
    }
    if let Some(b) = a.value("max-memory-restart").and_then(corral_config::parse_bytes) {
        spec.max_memory_restart = Some(b);
    }
    if let Some(ms) = a.value("kill-timeout").and_then(|v| v.trim().parse().ok()) {
        spec.kill_timeout = ms;
    }
    if let Some(ms) = a.value("restart-delay").and_then(|v| v.trim().parse().ok()) {
        spec.restart_delay = ms;
    }
    if let Some(n) = a.value("max-restarts").and_then(|v| v.trim().parse().ok()) {
        spec.max_restarts = n;
    }
    if let Some(c) = a.value("cron").or_else(|| a.value("cron-restart")) {
        spec.cron_restart = if c == "null" || c.is_empty() { None } else { Some(c.to_string()) };
    }
    if a.has("no-autorestart") {
        spec.autorestart = false;
    }
    // Options set through the environment (pm2 reads it on every action).
    if deep_monitoring() {
        spec.extra.insert("deep_monitoring".into(), serde_json::Value::Bool(true));
    }
    *spec != before
}

/// `PM2_DEEP_MONITORING` set in the CLI's environment.
pub fn deep_monitoring() -> bool {
    std::env::var_os("PM2_DEEP_MONITORING").is_some_and(|v| !v.is_empty())
}

/// How many ids are acted on at once: `--parallel`, else
/// `PM2_CONCURRENT_ACTIONS` (2), 1 for two ids or fewer, 10 for delete, as
/// pm2. Reload defaults to one at a time (zero-downtime needs the other
/// instances up; pm2's two-at-a-time reload is a known complaint).
pub fn concurrency(cli: &Cli, op: Op, n: usize) -> usize {
    if let Some(p) = cli.args.value("parallel").and_then(|v| v.parse::<usize>().ok()) {
        return p.max(1);
    }
    if n <= 2 {
        return 1;
    }
    match op {
        Op::Delete => 10,
        Op::Reload => 1,
        _ => {
            std::env::var("PM2_CONCURRENT_ACTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(2usize).max(1)
        }
    }
}

struct Job {
    id: u32,
    name: String,
    cron: Option<String>,
    update: Option<Box<AppSpec>>,
}

/// Prints the outcome of one id; true on success.
fn report(op: Op, job: &Job, reply: Result<Reply>) -> bool {
    match reply {
        Ok(Reply::Error { message }) => {
            output::error(&message);
            false
        }
        Err(e) => {
            output::error(&format!("{e:#}"));
            false
        }
        Ok(_) => {
            print_done(&job.name, job.id);
            if op == Op::Stop {
                if let Some(cron) = &job.cron {
                    output::warn(&format!("App {} stopped but CRON RESTART is still UP {cron}", job.name));
                }
            }
            true
        }
    }
}

/// Sends `op` to each id, printing pm2's ✓ lines. Returns 1 on any error.
pub fn apply(
    cli: &mut Cli,
    op: Op,
    ids: &[u32],
    procs: &[ProcInfo],
    updates: Option<&AppSpec>,
    by_name: bool,
) -> Result<Code> {
    let jobs: Vec<Job> = ids
        .iter()
        .map(|id| {
            let p = procs.iter().find(|p| p.pm_id == *id);
            let update = match (updates, p) {
                (Some(spec), _) => Some(Box::new(spec.clone())),
                (None, Some(p)) => update_for(cli, op, p, by_name),
                (None, None) => None,
            };
            Job {
                id: *id,
                name: p.map(|p| p.app.name.clone()).unwrap_or_else(|| id.to_string()),
                cron: p.and_then(|p| p.app.cron_restart.clone()),
                update,
            }
        })
        .collect();
    let workers = concurrency(cli, op, jobs.len()).min(jobs.len());
    if workers <= 1 {
        let mut ok = true;
        for job in &jobs {
            let reply = cli.client()?.request(&Request::Op { op, id: job.id, update: job.update.clone() });
            ok &= report(op, job, reply);
        }
        return Ok(if ok { 0 } else { 1 });
    }
    // One connection per worker: the daemon serves connections concurrently.
    let queue = std::sync::Mutex::new(jobs.into_iter().collect::<std::collections::VecDeque<_>>());
    let failed = std::sync::atomic::AtomicBool::new(false);
    let home = cli.home.clone();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut client = match crate::client::Client::connect_existing(&home) {
                    Ok(Some(c)) => c,
                    Ok(None) => {
                        output::error("the daemon is not running any more");
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                    Err(e) => {
                        output::error(&format!("{e:#}"));
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                };
                loop {
                    let job = match queue.lock() {
                        Ok(mut q) => q.pop_front(),
                        Err(_) => None,
                    };
                    let Some(job) = job else { break };
                    let reply = client.request(&Request::Op { op, id: job.id, update: job.update.clone() });
                    if !report(op, &job, reply) {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    Ok(if failed.load(std::sync::atomic::Ordering::Relaxed) { 1 } else { 0 })
}

pub fn operate_target(cli: &mut Cli, op: Op, t: &str) -> Result<Code> {
    let procs = cli.list()?;
    let cwd = cli.cwd.clone();
    match resolve(t, &procs, &cwd) {
        Err(e) => {
            e.print();
            Ok(1)
        }
        Ok(Target::UnknownId(s)) => {
            print_applying(op.pm2_method(), t, &inspect(&serde_json::json!([s])));
            output::error(&format!("Process {s} not found"));
            Ok(1)
        }
        Ok(Target::Ids(ids)) => {
            print_applying(op.pm2_method(), t, &ids_display(&ids));
            let by_name = t != "all" && !t.starts_with('/') && procs.iter().any(|p| p.app.name == t);
            apply(cli, op, &ids, &procs, None, by_name)
        }
        Ok(Target::Id(id)) => {
            print_applying(op.pm2_method(), t, &inspect(&serde_json::json!([t])));
            apply(cli, op, &[id], &procs, None, false)
        }
    }
}

fn reset_target(cli: &mut Cli, t: &str) -> Result<Code> {
    let procs = cli.list()?;
    let cwd = cli.cwd.clone();
    let ids = match resolve(t, &procs, &cwd) {
        Ok(t @ (Target::Ids(_) | Target::Id(_))) => t.ids(),
        Ok(Target::UnknownId(_)) | Err(_) => {
            output::err("Unknown process name");
            return Ok(1);
        }
    };
    let mut code = 0;
    for id in ids {
        match answered(cli.client()?.request(&Request::Op { op: Op::Reset, id, update: None })?) {
            Err(c) => code = c,
            Ok(_) => output::info(&format!("Resetting meta for process id {id}")),
        }
    }
    Ok(code)
}

/// `pm2 sendSignal <signal> <id|name>`.
pub fn send_signal(cli: &mut Cli) -> Result<Code> {
    let (signal, target) = match cli.args.positionals.as_slice() {
        [s, t, ..] => (s.clone(), t.clone()),
        _ => {
            output::err("\n  error: missing required argument `signal'\n");
            return Ok(1);
        }
    };
    let procs = cli.list()?;
    if is_numeric(&target) {
        output::info(&format!("Sending signal to process id {target}"));
        let id: u32 = target.parse().map_err(|_| anyhow!("invalid id {target}"))?;
        if !procs.iter().any(|p| p.pm_id == id) {
            output::error(&format!("Process {id} not found"));
            return Ok(1);
        }
        if let Err(code) =
            answered(cli.client()?.request(&Request::SendSignal { id, signal: signal.clone() })?)
        {
            return Ok(code);
        }
        output::out(&format!("successfully sent signal {signal} to process id {id}"));
        cli.print_list()?;
        return Ok(0);
    }
    output::info(&format!("Sending signal to process name {target}"));
    let ids: Vec<u32> = procs
        .iter()
        .filter(|p| p.app.name == target && matches!(p.status.as_str(), "online" | "launching"))
        .map(|p| p.pm_id)
        .collect();
    if ids.is_empty() {
        output::error(&format!("Process {target} not found"));
        return Ok(1);
    }
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            // pm2 spaces the instances out so they do not all react at once.
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Err(code) =
            answered(cli.client()?.request(&Request::SendSignal { id: *id, signal: signal.clone() })?)
        {
            return Ok(code);
        }
    }
    output::out(&format!("successfully sent signal {signal} to process name {target}"));
    cli.print_list()?;
    Ok(0)
}

/// `pm2 scale <app> <n|+n|-n>`.
pub fn scale(cli: &mut Cli) -> Result<Code> {
    let (app, n) = match cli.args.positionals.as_slice() {
        [a, n, ..] => (a.clone(), n.clone()),
        _ => {
            output::err("\n  error: missing required argument `number'\n");
            return Ok(1);
        }
    };
    let procs = cli.list()?;
    let abs = crate::resolve::normalize(&cli.cwd.join(&app));
    let mine: Vec<&ProcInfo> =
        procs.iter().filter(|p| p.app.name == app || std::path::Path::new(&p.app.script) == abs).collect();
    let Some(first) = mine.first() else {
        output::error(&format!("Application {app} not found"));
        return Ok(1);
    };
    let name = first.app.name.clone();
    let current = mine.len() as i64;
    let target = if let Some(d) = n.strip_prefix('+') {
        d.parse::<i64>().map(|d| current + d)
    } else if n.starts_with('-') {
        n.parse::<i64>().map(|d| current + d)
    } else {
        n.parse::<i64>()
    };
    let target = match target {
        Ok(t) => t.clamp(0, i64::from(u32::MAX)),
        Err(_) => {
            output::error(&format!("Invalid number {n}"));
            return Ok(1);
        }
    };
    if target == current {
        output::error("Nothing to do");
        return Ok(1);
    }
    let before: Vec<(u32, String)> = mine.iter().map(|p| (p.pm_id, p.app.name.clone())).collect();
    match answered(cli.client()?.request(&Request::Scale { name: name.clone(), count: target as u32 })?) {
        Err(code) => return Ok(code),
        Ok(_) => {
            for _ in current..target {
                output::info("Scaling up application");
            }
        }
    }
    let after = cli.list()?;
    // Report the ids the daemon actually removed.
    for (id, nm) in before.iter().filter(|(id, _)| !after.iter().any(|p| p.pm_id == *id)) {
        print_applying("deleteProcessId", &id.to_string(), &ids_display(&[*id]));
        print_done(nm, *id);
    }
    cli.print_procs(&after);
    Ok(0)
}

/// `pm2 kill`: delete everything and stop the daemon; never saves.
pub fn kill(cli: &mut Cli) -> Result<Code> {
    // Improvement over pm2: no daemon is spawned just to be killed.
    let client = crate::client::Client::connect_existing(&cli.home);
    match client {
        Ok(Some(mut c)) => match kill_daemon(&mut c, &cli.home) {
            Ok(code) => Ok(code),
            Err(e) => {
                output::error(&format!("{e:#}"));
                kill_by_signal(&cli.home)
            }
        },
        // Something listens but does not speak the protocol in time.
        Err(e) => {
            output::error(&format!("{e:#}"));
            kill_by_signal(&cli.home)
        }
        Ok(None) => {
            output::warn_err("No process found");
            output::info("[v] All Applications Stopped");
            output::info("[v] PM2 Daemon Stopped");
            Ok(0)
        }
    }
}

/// pm2's `killDaemon`: every process reported deleted, then the daemon
/// stopped; returns once it is gone (bounded wait).
pub fn kill_daemon(client: &mut crate::client::Client, home: &std::path::Path) -> Result<Code> {
    let procs = client.list()?;
    if procs.is_empty() {
        output::warn_err("No process found");
    } else {
        let ids: Vec<u32> = procs.iter().map(|p| p.pm_id).collect();
        print_applying("deleteProcessId", "all", &ids_display(&ids));
    }
    let pid = daemon_pid(home);
    match answered(client.request(&Request::Kill)?) {
        Err(code) => return Ok(code),
        Ok(_) => {
            for p in &procs {
                print_done(&p.app.name, p.pm_id);
            }
            output::info("[v] All Applications Stopped");
        }
    }
    client.wait_closed(Duration::from_secs(5));
    wait_pid_gone(pid, Duration::from_secs(5));
    output::info("[v] PM2 Daemon Stopped");
    Ok(0)
}

/// Last resort for a daemon that no longer answers: SIGTERM the pid in
/// `pm2.pid`, SIGKILL after 5 s.
pub fn kill_by_signal(home: &std::path::Path) -> Result<Code> {
    let Some(pid) = daemon_pid(home).filter(|p| *p > 1) else {
        output::error("the daemon does not answer and pm2.pid names no process");
        return Ok(1);
    };
    output::warn(&format!("Sending SIGTERM to the daemon (pid {pid})"));
    // SAFETY: plain signal delivery to a pid read from pm2.pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_pid_gone(Some(pid), Duration::from_secs(5));
    // SAFETY: as above; signal 0 only probes.
    if unsafe { libc::kill(pid, 0) } == 0 {
        output::warn(&format!("Daemon still alive, sending SIGKILL (pid {pid})"));
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_pid_gone(Some(pid), Duration::from_secs(2));
    }
    output::info("[v] PM2 Daemon Stopped");
    Ok(0)
}

pub fn daemon_pid(home: &std::path::Path) -> Option<i32> {
    let path = std::env::var_os("PM2_PID_FILE_PATH")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| home.join("pm2.pid"));
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn wait_pid_gone(pid: Option<i32>, timeout: Duration) {
    let Some(pid) = pid else { return };
    if pid <= 0 {
        return;
    }
    let start = Instant::now();
    // SAFETY: signal 0 only probes for existence.
    while unsafe { libc::kill(pid, 0) } == 0 && start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `PM2_HOME/reload.lock`: the epoch ms of a running reload, emptied when it
/// ends. A second reload within `PM2_RELOAD_LOCK_TIMEOUT` (30 s) is refused
/// unless `--force`, as in pm2.
pub struct ReloadLock {
    path: std::path::PathBuf,
}

impl ReloadLock {
    /// Err carries the seconds left on the other reload's lock.
    pub fn acquire(home: &std::path::Path, force: bool) -> Result<ReloadLock, u64> {
        let path = home.join("reload.lock");
        let timeout: i64 =
            std::env::var("PM2_RELOAD_LOCK_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(30_000);
        let now = crate::timefmt::now_ms();
        if !force {
            if let Some(ts) = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<i64>().ok()) {
                let age = now - ts;
                if (0..timeout).contains(&age) {
                    return Err((timeout - age) as u64 / 1000);
                }
            }
        }
        let _ = std::fs::write(&path, now.to_string());
        Ok(ReloadLock { path })
    }
}

impl Drop for ReloadLock {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, "");
    }
}

/// `pm2 monitor|unmonitor <id|name|all>`: sets `_km_monitored` on each
/// process (the flag PM2 Plus reads to pick the processes it monitors); the
/// processes keep running untouched.
pub fn monitor_state(cli: &mut Cli, monitor: bool) -> Result<Code> {
    let Some(target) = cli.args.positionals.first().cloned() else {
        output::error("Please specify an <app_name|pm_id>");
        return Ok(1);
    };
    let procs = cli.list()?;
    let ids: Vec<u32> = if target == "all" {
        procs.iter().map(|p| p.pm_id).collect()
    } else if let Ok(id) = target.parse::<u32>() {
        vec![id]
    } else {
        procs.iter().filter(|p| p.app.name == target).map(|p| p.pm_id).collect()
    };
    if ids.is_empty() {
        output::error(&format!("Process {target} not found"));
        return Ok(1);
    }
    for id in ids {
        let req =
            Request::Annotate { id, key: "_km_monitored".into(), value: serde_json::Value::Bool(monitor) };
        if let Reply::Error { message } = cli.client()?.request(&req)? {
            output::error(&message);
            return Ok(1);
        }
    }
    cli.print_list()?;
    Ok(0)
}

/// The single process `t` names (a pm_id, or an app with one process).
fn one_id(procs: &[ProcInfo], t: &str) -> Option<u32> {
    if let Ok(id) = t.parse::<u32>() {
        return procs.iter().any(|p| p.pm_id == id).then_some(id);
    }
    let mut it = procs.iter().filter(|p| p.app.name == t);
    match (it.next(), it.next()) {
        (Some(p), None) => Some(p.pm_id),
        _ => None,
    }
}

/// `pm2 send <pm_id> <line>`: writes `line` and a newline to the stdin of
/// a fork-mode process.
pub fn send_line(cli: &mut Cli) -> Result<Code> {
    let (target, line) = match cli.args.positionals.as_slice() {
        [t, l, ..] => (t.clone(), l.clone()),
        _ => {
            output::err("\n  error: missing required argument `line'\n");
            return Ok(1);
        }
    };
    let procs = cli.list()?;
    let Some(id) = one_id(&procs, &target) else {
        output::error(&format!("Process with ID <{target}> unknown."));
        return Ok(1);
    };
    match cli.client()?.request(&Request::SendLine { id, line: format!("{line}\n") })? {
        Reply::Error { message } => {
            output::error(&message);
            Ok(1)
        }
        _ => {
            cli.print_list()?;
            Ok(0)
        }
    }
}

/// `pm2 attach <pm_id> [separator]`: shows the process's output and sends
/// each line typed on stdin to its stdin (ended with `separator`, default a
/// newline), until Ctrl-C or end of input.
pub fn attach(cli: &mut Cli) -> Result<Code> {
    let Some(target) = cli.args.positionals.first().cloned() else {
        output::err("\n  error: missing required argument `pm_id'\n");
        return Ok(1);
    };
    let separator = cli.args.positionals.get(1).cloned().unwrap_or_else(|| "\n".into());
    if target.parse::<u32>().is_err() {
        output::error("pm_id must be a process number (not a process name)");
        return Ok(1);
    }
    let procs = cli.list()?;
    let Some(id) = one_id(&procs, &target) else {
        output::error(&format!("Process with ID <{target}> unknown."));
        return Ok(1);
    };
    let home = cli.home.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let Ok(Some(mut c)) = crate::client::Client::connect_existing(&home) else { return };
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Ok(Reply::Error { message }) =
                c.request(&Request::SendLine { id, line: format!("{line}{separator}") })
            {
                output::error(&message);
            }
        }
    });
    let name = procs.iter().find(|p| p.pm_id == id).map(|p| p.app.name.clone()).unwrap_or_default();
    crate::logs::attach(cli, vec![name])
}
