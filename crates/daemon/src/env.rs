//! The environment a process is spawned with: the stored app env
//! plus every pm2_env field pm2 injects, stringified the way pm2 does.

use crate::state::Shared;
use corral_proto::{ExecMode, ProcInfo};
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
        env.extend(shared.daemon_env.clone());
    }
    env.extend(app.env.clone());
    env.remove("CORRAL_DAEMON_MODE");
    let ins = |env: &mut BTreeMap<String, String>, k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    ins(&mut env, "PM2_HOME", shared.home.root.to_string_lossy().into_owned());
    ins(&mut env, "pm_id", p.pm_id.to_string());
    ins(&mut env, "name", app.name.clone());
    ins(&mut env, "namespace", app.namespace.clone());
    ins(&mut env, &app.instance_var, p.instance.to_string());
    ins(&mut env, "instance_var", app.instance_var.clone());
    ins(&mut env, "unique_id", p.unique_id.clone());
    ins(&mut env, "pm_exec_path", app.script.clone());
    ins(&mut env, "pm_cwd", app.cwd.clone());
    ins(&mut env, "PWD", app.cwd.clone());
    ins(&mut env, "pm_out_log_path", p.pm_out_log_path.clone());
    ins(&mut env, "pm_err_log_path", p.pm_err_log_path.clone());
    ins(&mut env, "pm_pid_path", p.pm_pid_path.clone());
    if let Some(l) = &p.pm_log_path {
        ins(&mut env, "pm_log_path", l.clone());
    }
    ins(&mut env, "exec_mode", app.exec_mode.as_str().into());
    ins(&mut env, "exec_interpreter", app.interpreter.clone());
    ins(&mut env, "instances", app.instances.unwrap_or(1).to_string());
    ins(&mut env, "node_args", app.node_args.join(","));
    if !app.args.is_empty() {
        ins(&mut env, "args", app.args.join(","));
    }
    ins(&mut env, "status", "launching".into());
    ins(&mut env, "restart_time", p.restart_time.to_string());
    ins(&mut env, "unstable_restarts", p.unstable_restarts.to_string());
    ins(&mut env, "created_at", p.created_at.to_string());
    ins(&mut env, "pm_uptime", p.pm_uptime.to_string());
    ins(&mut env, "autorestart", b(app.autorestart));
    ins(&mut env, "autostart", b(app.autostart));
    ins(&mut env, "treekill", b(app.treekill));
    ins(&mut env, "merge_logs", b(app.merge_logs));
    ins(&mut env, "username", shared.username.clone());
    ins(&mut env, "kill_retry_time", app.kill_retry_time.to_string());
    ins(&mut env, "windowsHide", "true".into());
    ins(&mut env, "vizion", "true".into());
    ins(&mut env, "vizion_running", "false".into());
    ins(&mut env, "pmx", "true".into());
    ins(&mut env, "automation", "true".into());
    ins(&mut env, "km_link", "false".into());
    if let Some(v) = &app.version {
        ins(&mut env, "version", v.clone());
    }
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
