//! `pm2 inspect <app>`, `pm2 profile:cpu|profile:mem [app] [time]` and
//! `pm2 slist` / `sysinfos`.
//!
//! pm2 opens an app's inspector through @pm2/io's `internal:inspect`
//! action and profiles its own Node daemon. Corral injects nothing into
//! apps and its daemon is native, so both go through Node's inspector from
//! the outside (`corral_daemon::inspector`: SIGUSR1, the process's own
//! listening port, the DevTools protocol): `inspect` toggles an app's
//! inspector, `profile:*` profiles an app process and writes pm2's file.

use super::{Cli, Code};
use crate::output;
use crate::resolve::{is_numeric, resolve, Target};
use anyhow::Result;
use corral_daemon::inspector::{self, InspectError, Profile};
use corral_proto::ProcInfo;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// pm2's default profile length (its CLI's `time || 10000`).
const DEFAULT_PROFILE_MS: u64 = 10_000;

/// The processes a target names that can be inspected (online, with a pid).
fn live_targets(cli: &mut Cli, target: &str) -> Result<std::result::Result<Vec<ProcInfo>, Code>> {
    let procs = cli.list()?;
    let ids = match resolve(target, &procs, &cli.cwd) {
        Ok(Target::UnknownId(t)) => {
            output::error(&format!("Process or Namespace {t} not found"));
            return Ok(Err(1));
        }
        Ok(t) => t.ids(),
        Err(e) => {
            e.print();
            return Ok(Err(1));
        }
    };
    let live: Vec<ProcInfo> = procs
        .into_iter()
        .filter(|p| {
            ids.contains(&p.pm_id) && p.pid > 0 && matches!(p.status.as_str(), "online" | "launching")
        })
        .collect();
    if live.is_empty() {
        output::error(&format!("No process of {target} is online"));
        return Ok(Err(1));
    }
    Ok(Ok(live))
}

/// day.js `dd-HH:mm:ss` of now (local time), the name pm2 gives profiles.
fn profile_stamp() -> String {
    use corral_daemon::timefmt::{format, local, now_ms};
    let ms = now_ms() as i64;
    let tm = local(ms);
    let days = (ms + tm.offset_secs * 1000).div_euclid(86_400_000);
    // 1970-01-01 was a Thursday.
    let dd = ["Th", "Fr", "Sa", "Su", "Mo", "Tu", "We"][days.rem_euclid(7) as usize];
    format!("{dd}-{}", format(&tm, "HH:mm:ss"))
}

/// `pm2 profile:cpu|profile:mem [app] [time]`.
pub fn profile(cli: &mut Cli, kind: Profile) -> Result<Code> {
    let pos = cli.args.positionals.clone();
    // pm2's form is `profile:cpu [time]`: a lone number is the time.
    let (target, time) = match pos.as_slice() {
        [] => (None, None),
        [t] if is_numeric(t) => (None, Some(t.clone())),
        [t] => (Some(t.clone()), None),
        [t, ms, ..] => (Some(t.clone()), Some(ms.clone())),
    };
    let ms = match time.as_deref().map(str::parse::<u64>) {
        None => DEFAULT_PROFILE_MS,
        Some(Ok(ms)) => ms,
        Some(Err(_)) => {
            output::error(&format!(
                "Invalid time {:?}: give the profile length in milliseconds",
                time.unwrap_or_default()
            ));
            return Ok(1);
        }
    };
    let Some(target) = target else {
        output::error(&format!(
            "Corral's daemon is not a Node.js process: there is no PM2 daemon {} to record. \
             Profile an app instead: pm2 {} <app|id> [time]",
            if kind == Profile::Cpu { "CPU profile" } else { "heap" },
            cli.args.command.as_deref().unwrap_or("profile:cpu")
        ));
        return Ok(1);
    };
    let procs = match live_targets(cli, &target)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let rt = crate::client::new_runtime()?;
    let mut failed = false;
    for p in &procs {
        let file: PathBuf =
            cli.cwd.join(format!("{}-{}-{}{}", profile_stamp(), p.app.name, p.pm_id, kind.ext()));
        output::out(&format!(
            "Starting {} profiling of {} (id {}, pid {}) for {ms}ms...",
            kind.action(),
            p.app.name,
            p.pm_id,
            p.pid
        ));
        match rt.block_on(inspector::profile(p.pid as i32, kind, Duration::from_millis(ms), &file)) {
            Ok(()) => output::out(&format!("Profile done in {}", file.display())),
            Err(e) => {
                output::error(&format!("{} ({}): {e}", p.app.name, p.pm_id));
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `pm2 inspect <app>`: opens the inspector of each of its processes, or
/// closes it where it is open (pm2's `internal:inspect` toggles the same
/// way), and says where to attach.
pub fn inspect(cli: &mut Cli) -> Result<Code> {
    let Some(target) = cli.args.positionals.first().cloned() else {
        output::err("\n  error: missing required argument `name'\n");
        return Ok(1);
    };
    let procs = match live_targets(cli, &target)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let rt = crate::client::new_runtime()?;
    let mut failed = false;
    for p in &procs {
        let pid = p.pid as i32;
        let r: std::result::Result<String, InspectError> = rt.block_on(async {
            let opened = inspector::open(pid, inspector::OPEN_WAIT).await?;
            if opened.was_open {
                inspector::close(pid, &opened).await?;
                Ok(format!("Inspect disabled on {}", p.app.name))
            } else {
                Ok(format!(
                    "Inspect enabled on {} => go to chrome : chrome://inspect !!! (id {}, pid {pid}: {})",
                    p.app.name, p.pm_id, opened.ws_url
                ))
            }
        });
        match r {
            Ok(msg) => output::info(&msg),
            Err(e) => {
                output::error(&format!(
                    "Unable to activate inspect mode on {} ({}): {e}",
                    p.app.name, p.pm_id
                ));
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `pm2 slist` / `sysinfos [-t]`: the daemon's `getSystemData` (host
/// metrics, the same machine, so sampled here) printed as pm2 prints it.
pub fn slist(cli: &mut Cli) -> Result<Code> {
    let data = corral_daemon::sysinfo::system_data();
    if cli.args.has("tree") {
        output::raw_out(&tree(&data));
    } else {
        output::raw_out(&crate::inspect::inspect(&data));
    }
    Ok(0)
}

/// treeify's `asTree(obj, true)`: one line per key, values after `: `.
pub fn tree(v: &Value) -> String {
    fn grow(out: &mut String, v: &Value, lasts: &mut Vec<bool>) {
        let keys: Vec<(String, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(a) => a.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
            _ => return,
        };
        let n = keys.len();
        for (i, (k, child)) in keys.into_iter().enumerate() {
            let last = i + 1 == n;
            for l in lasts.iter() {
                out.push_str(if *l { "   " } else { "│  " });
            }
            out.push_str(if last { "└─ " } else { "├─ " });
            out.push_str(&k);
            match child {
                Value::Object(_) | Value::Array(_) => {}
                Value::String(s) => {
                    out.push_str(": ");
                    out.push_str(s);
                }
                other => {
                    // JavaScript's number and boolean text (100, not 100.0).
                    out.push_str(": ");
                    out.push_str(&crate::inspect::inspect(other));
                }
            }
            out.push('\n');
            lasts.push(last);
            grow(out, child, lasts);
            lasts.pop();
        }
    }
    let mut out = String::new();
    grow(&mut out, v, &mut Vec::new());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn treeify_layout() {
        let v = json!({ "a": { "value": 1.0, "unit": "%" }, "b": { "value": "x" } });
        assert_eq!(tree(&v), "├─ a\n│  ├─ value: 1\n│  └─ unit: %\n└─ b\n   └─ value: x\n");
    }

    #[test]
    fn profile_stamp_is_pm2s_format() {
        let s = profile_stamp();
        assert_eq!(s.len(), "Su-12:00:00".len(), "{s}");
        assert!(["Su", "Mo", "Tu", "We", "Th", "Fr", "Sa"].contains(&&s[..2]), "{s}");
    }
}
