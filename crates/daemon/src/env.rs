//! The environment a process is spawned with: the stored app env
//! plus every pm2_env field pm2 injects, stringified the way pm2 does.

use crate::state::Shared;
use corral_proto::{ExecMode, ProcInfo, INJECTED_ENV_KEYS};
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
