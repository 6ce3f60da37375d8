//! Read-only commands: list, jlist, prettylist, describe, env, pid, id, ping.

use super::{answered, local_env, Cli, Code};
use crate::inspect::inspect;
use crate::output;
use crate::render::describe::{render as render_describe, DescribeOptions};
use crate::render::prettylist::{jlist as render_jlist, prettylist as render_pretty};
use crate::resolve::is_numeric;
use crate::timefmt::now_ms;
use anyhow::Result;
use corral_proto::{ProcInfo, Request};
use serde_json::Value;

pub fn list(cli: &mut Cli) -> Result<Code> {
    cli.print_list()?;
    // A node of a multi-host cluster says so under its table.
    if !cli.args.has("mini-list") {
        if let Some(v) = super::misc::cluster_status(cli) {
            output::out(&super::misc::cluster_line(&v));
        }
    }
    Ok(0)
}

pub fn jlist(cli: &mut Cli) -> Result<Code> {
    // Rendered by the daemon: with hundreds of apps, parsing and rebuilding
    // the list here would cost more than everything else together.
    // It comes unescaped when the daemon can send it so: for a large list,
    // escaping and unescaping a JSON string around it cost more than the
    // rest of the command.
    match cli.client()?.jlist_bytes()? {
        Some(bytes) => output::raw_out_bytes(&bytes),
        None => {
            let procs = cli.list()?;
            output::raw_out(&render_jlist(&procs));
        }
    }
    Ok(0)
}

pub fn prettylist(cli: &mut Cli) -> Result<Code> {
    let procs = cli.list()?;
    // pm2 writes it with process.stdout.write: no newline, not silenced.
    output::raw_out(&render_pretty(&procs));
    Ok(0)
}

/// pm2's describe: every process whose exact name is `t` or, for a
/// number, whose pm_id is `t`, in list order.
fn matching<'a>(procs: &'a [ProcInfo], t: &str) -> Vec<&'a ProcInfo> {
    let id = if is_numeric(t) { t.parse::<u32>().ok() } else { None };
    procs.iter().filter(|p| p.app.name == t || id == Some(p.pm_id)).collect()
}

pub fn describe(cli: &mut Cli) -> Result<Code> {
    let Some(t) = cli.args.positionals.first().cloned() else {
        output::err("\n  error: missing required argument `name|id'\n");
        return Ok(1);
    };
    let procs = cli.list()?;
    let found = matching(&procs, &t);
    if found.is_empty() {
        output::warn_err(&format!("{t} doesn't exist"));
        return Ok(1);
    }
    let env = local_env();
    let opts = DescribeOptions { now_ms: now_ms(), color: output::color_out(), local_env: &env };
    for p in found {
        output::out(&render_describe(p, &opts));
    }
    Ok(0)
}

/// Keys of `pm2_env` that `pm2 env` leaves out (pm2's `safeExtend` list).
const ENV_IGNORED: &[&str] = &[
    "name",
    "exec_mode",
    "env",
    "args",
    "pm_cwd",
    "exec_interpreter",
    "pm_exec_path",
    "node_args",
    "pm_out_log_path",
    "pm_err_log_path",
    "pm_pid_path",
    "pm_log_path",
    "pm_id",
    "status",
    "pm_uptime",
    "created_at",
    "windowsHide",
    "username",
    "merge_logs",
    "kill_retry_time",
    "prev_restart_delay",
    "instance_var",
    "unstable_restarts",
    "restart_time",
    "pmx_module",
    "command",
    "watch",
    "filter_env",
    "versioning",
    "vizion",
    "vizion_running",
    "MODULE_DEBUG",
    "pmx",
    "automation",
    "autostart",
    "autorestart",
    "stop_exit_codes",
    "treekill",
    "exit_code",
    "instances",
];

/// JavaScript's `String(value)`.
fn js_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => a
            .iter()
            .map(|x| if x.is_null() { String::new() } else { js_string(x) })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

pub fn env_lines(p: &ProcInfo) -> Vec<String> {
    let pm2_env = corral_config::pm2_env(p);
    let mut lines = Vec::new();
    match pm2_env.as_object() {
        Some(obj) => {
            for (k, v) in obj {
                if ENV_IGNORED.contains(&k.as_str()) || k.starts_with("axm_") || k.starts_with("vizion") {
                    continue;
                }
                lines.push(format!("{k}: {}", output::paint(output::Color::Green, &js_string(v))));
            }
        }
        // The config crate could not build pm2_env: fall back to the real
        // environment of the process.
        None => {
            for (k, v) in p.effective_env().iter() {
                lines.push(format!("{k}: {}", output::paint(output::Color::Green, v)));
            }
        }
    }
    lines
}

pub fn env(cli: &mut Cli) -> Result<Code> {
    let Some(t) = cli.args.positionals.first().cloned() else {
        output::err("\n  error: missing required argument `id'\n");
        return Ok(1);
    };
    let procs = cli.list()?;
    let found = t.parse::<u32>().ok().and_then(|id| procs.iter().find(|p| p.pm_id == id));
    let Some(p) = found else {
        output::error(&format!("Modules with id {t} not found"));
        return Ok(1);
    };
    for l in env_lines(p) {
        output::out(&l);
    }
    Ok(0)
}

pub fn pid(cli: &mut Cli) -> Result<Code> {
    let procs = cli.list()?;
    let name = cli.args.positionals.first().cloned();
    let pids: Vec<String> = procs
        .iter()
        .filter(|p| name.as_ref().is_none_or(|n| p.app.name == *n))
        .map(|p| p.pid.to_string())
        .collect();
    output::out(&pids.join("\n"));
    Ok(0)
}

pub fn id(cli: &mut Cli) -> Result<Code> {
    let Some(name) = cli.args.positionals.first().cloned() else {
        output::err("\n  error: missing required argument `name'\n");
        return Ok(1);
    };
    let procs = cli.list()?;
    let ids: Vec<u32> = procs.iter().filter(|p| p.app.name == name).map(|p| p.pm_id).collect();
    output::out(&inspect(&serde_json::json!(ids)));
    Ok(0)
}

pub fn ping(cli: &mut Cli) -> Result<Code> {
    if let Err(code) = answered(cli.client()?.request(&Request::Ping)?) {
        return Ok(code);
    }
    output::out("{ msg: 'pong' }");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_string_rules() {
        assert_eq!(js_string(&serde_json::json!(["a", 1])), "a,1");
        assert_eq!(js_string(&serde_json::json!({"a": 1})), "[object Object]");
        assert_eq!(js_string(&serde_json::json!(3)), "3");
    }

    #[test]
    fn describe_matches_name_or_id() {
        let mut a = ProcInfo { pm_id: 0, ..Default::default() };
        a.app.name = "api".into();
        let mut b = ProcInfo { pm_id: 1, ..Default::default() };
        b.app.name = "0".into();
        let v = vec![a, b];
        assert_eq!(matching(&v, "api").len(), 1);
        assert_eq!(matching(&v, "0").len(), 2);
        assert_eq!(matching(&v, "1")[0].pm_id, 1);
        assert!(matching(&v, "x").is_empty());
    }
}
