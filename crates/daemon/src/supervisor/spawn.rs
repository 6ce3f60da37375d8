//! What a child is spawned with: its command line, its environment (the
//! stored app env plus every pm2_env field pm2 injects, stringified the way
//! pm2 does) and its log and pid paths.

use crate::paths;
use crate::state::Shared;
use corral_proto::{AppSpec, ExecMode, ProcInfo, INJECTED_ENV_KEYS};
use std::collections::BTreeMap;

fn b(v: bool) -> String {
    if v {
        "true".into()
    } else {
        "false".into()
    }
}

pub fn build(shared: &Shared, p: &ProcInfo) -> BTreeMap<String, String> {
    let app = &p.app;
    let mut env = BTreeMap::new();
    if app.exec_mode == ExecMode::Cluster {
        // pm2 forks cluster workers from the daemon, so they see its env.
        env.extend(shared.config.env.clone());
    }
    env.extend(app.env.clone());
    env.remove("CORRAL_DAEMON_MODE");
    let ins = |env: &mut BTreeMap<String, String>, k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    ins(&mut env, "PM2_HOME", shared.home.root.to_string_lossy().into_owned());
    for &key in INJECTED_ENV_KEYS {
        if let Some(v) = injected(key, shared, p) {
            env.insert(key.to_string(), v);
        }
    }
    ins(&mut env, &app.instance_var, p.instance.to_string());
    ins(&mut env, "PWD", app.cwd.clone());
    if let Some(var) = &app.increment_var {
        let base: i64 = app.env.get(var).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        ins(&mut env, var, (base + p.instance as i64).to_string());
    }
    let interp = app.interpreter.rsplit('/').next().unwrap_or("");
    if interp.starts_with("python") {
        ins(&mut env, "PYTHONUNBUFFERED", "1".into());
    }
    env
}

/// Whether a launch that failed with `e` before the child existed may
/// succeed later: the interpreter, script or cwd missing or not yet
/// executable (a deploy in progress, a volume not mounted yet), a binary
/// being written, no descriptors, memory or processes left. Anything else
/// (`ENOEXEC`, a symbolic link refused as a log file, ...) is a mistake in
/// the app's settings and fails at once.
pub fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOENT
                | libc::EACCES
                | libc::ETXTBSY
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
                | libc::EAGAIN
                | libc::EINTR
                | libc::EBUSY
                | libc::ENOSPC
                | libc::EDQUOT
                | libc::EIO
        )
    )
}

/// A random RFC 4122 version-4 UUID (pm2's `unique_id`).
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most len bytes into our buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 16 {
        // No entropy syscall: fall back to time and pid, uniqueness is all
        // pm2 users rely on.
        let t = crate::timefmt::now_ms() as u128 ^ ((std::process::id() as u128) << 64);
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The value the daemon gives an injected key, if it gives one (the others
/// only appear in environments pm2 saved).
fn injected(key: &str, shared: &Shared, p: &ProcInfo) -> Option<String> {
    let app = &p.app;
    Some(match key {
        "pm_id" => p.pm_id.to_string(),
        "name" => app.name.clone(),
        "namespace" => app.namespace.clone(),
        "instance_var" => app.instance_var.clone(),
        "unique_id" => p.unique_id.clone(),
        "pm_exec_path" => app.script.clone(),
        "pm_cwd" => app.cwd.clone(),
        "pm_out_log_path" => p.pm_out_log_path.clone(),
        "pm_err_log_path" => p.pm_err_log_path.clone(),
        "pm_pid_path" => p.pm_pid_path.clone(),
        "pm_log_path" => p.pm_log_path.clone()?,
        "exec_mode" => app.exec_mode.as_str().into(),
        "exec_interpreter" => app.interpreter.clone(),
        "instances" => app.instances.unwrap_or(1).to_string(),
        "node_args" => app.node_args.join(","),
        "args" if !app.args.is_empty() => app.args.join(","),
        "status" => "launching".into(),
        "restart_time" => p.restart_time.to_string(),
        "unstable_restarts" => p.unstable_restarts.to_string(),
        "created_at" => p.created_at.to_string(),
        "pm_uptime" => p.pm_uptime.to_string(),
        "autorestart" => b(app.autorestart),
        "autostart" => b(app.autostart),
        "treekill" => b(app.treekill),
        "merge_logs" => b(app.merge_logs),
        "username" => shared.username.clone(),
        "kill_retry_time" => app.kill_retry_time.to_string(),
        "windowsHide" | "vizion" | "pmx" | "automation" => "true".into(),
        "vizion_running" | "km_link" => "false".into(),
        "version" => app.version.clone()?,
        _ => return None,
    })
}

/// Log and pid paths: `-<pm_id>` suffix unless logs are
/// merged; pid files always get it.
pub fn fill_paths(shared: &Shared, p: &mut ProcInfo) {
    let app = &p.app;
    let base = corral_config::sanitize_log_name(&app.name);
    let logs = shared.home.logs();
    let pick = |custom: &Option<String>, default: String| -> String {
        let path = custom.clone().unwrap_or(default);
        if app.merge_logs || path == "/dev/null" {
            path
        } else {
            paths::with_id_suffix(&path, p.pm_id)
        }
    };
    let out = pick(&app.out_file, logs.join(format!("{base}-out.log")).to_string_lossy().into_owned());
    let err = pick(&app.error_file, logs.join(format!("{base}-error.log")).to_string_lossy().into_owned());
    let combined = app.log_file.as_ref().map(|f| pick(&Some(f.clone()), String::new()));
    let pid = match &app.pid_file {
        Some(f) => paths::with_id_suffix(f, p.pm_id),
        None => shared.home.pids().join(format!("{base}-{}.pid", p.pm_id)).to_string_lossy().into_owned(),
    };
    p.pm_out_log_path = out;
    p.pm_err_log_path = err;
    p.pm_log_path = combined;
    p.pm_pid_path = pid;
}

/// Program and argv for a fork-mode app: `interpreter
/// [node_args] script args`, or the script itself for `none`.
pub fn command_line(app: &AppSpec, node_options: &[String]) -> (String, Vec<String>) {
    if app.interpreter == "none" || app.interpreter.is_empty() {
        return (app.script.clone(), app.args.clone());
    }
    let mut args = crate::runtimes::interpreter_args(app);
    if app.is_node() {
        args.extend(node_options.iter().cloned());
    }
    args.push(app.script.clone());
    args.extend(app.args.iter().cloned());
    (app.interpreter.clone(), args)
}
