//! `pm2 describe`: one block per process.

use super::{auto_widths, time_since, BoxTable, Cell};
use crate::output::{paint_if, Color};
use crate::timefmt;
use corral_proto::ProcInfo;
use std::collections::BTreeMap;

pub struct DescribeOptions<'a> {
    pub now_ms: i64,
    pub color: bool,
    /// The CLI's environment, for "Divergent env variables from local env".
    pub local_env: &'a BTreeMap<String, String>,
}

fn na(s: &str) -> String {
    if s.is_empty() {
        "N/A".into()
    } else {
        s.to_string()
    }
}

/// The key/value rows in pm2's order.
pub fn rows(p: &ProcInfo, now_ms: i64) -> Vec<(String, String)> {
    let a = &p.app;
    let uptime = if p.status == "online" && p.pm_uptime > 0 {
        time_since(now_ms, p.pm_uptime as i64)
    } else {
        "0".into()
    };
    let mut rows: Vec<(String, String)> = vec![
        ("status".into(), p.status.to_string()),
        ("name".into(), a.name.clone()),
        ("namespace".into(), a.namespace.clone()),
        ("version".into(), a.version.clone().unwrap_or_else(|| "N/A".into())),
        ("restarts".into(), p.restart_time.to_string()),
        ("uptime".into(), uptime),
        ("script path".into(), na(&a.script)),
        ("script args".into(), na(&a.args.join(" "))),
        ("error log path".into(), na(&p.pm_err_log_path)),
        ("out log path".into(), na(&p.pm_out_log_path)),
        ("pid path".into(), na(&p.pm_pid_path)),
        ("interpreter".into(), na(&a.interpreter)),
        ("interpreter args".into(), na(&a.node_args.join(" "))),
        ("script id".into(), p.pm_id.to_string()),
        ("exec cwd".into(), na(&a.cwd)),
        ("exec mode".into(), a.exec_mode.as_str().into()),
        ("node.js version".into(), p.node_version.clone().unwrap_or_else(|| "N/A".into())),
        (
            "node env".into(),
            na(p.env.get("NODE_ENV").or_else(|| a.env.get("NODE_ENV")).map(|s| s.as_str()).unwrap_or("")),
        ),
        ("watch & reload".into(), if a.watch { "✔" } else { "✘" }.into()),
        ("unstable restarts".into(), p.unstable_restarts.to_string()),
        (
            "created at".into(),
            if p.created_at > 0 { timefmt::iso(p.created_at as i64) } else { "N/A".into() },
        ),
    ];
    // Health checks, when the app has any (after pm2's rows).
    if let Some(h) = &a.health {
        let st = p.health.as_ref().map(|i| i.status.as_str()).unwrap_or("unknown");
        rows.push(("health".into(), st.into()));
        for (k, probe) in [
            ("startup probe", &h.startup),
            ("readiness probe", &h.readiness),
            ("liveness probe", &h.liveness),
        ] {
            if let Some(pr) = probe {
                rows.push((
                    k.into(),
                    format!(
                        "{} every {}ms, timeout {}ms, {}/{} to pass/fail, start period {}ms",
                        pr.check.describe(),
                        pr.period_ms,
                        pr.timeout_ms,
                        pr.success_threshold,
                        pr.failure_threshold,
                        pr.initial_delay_ms
                    ),
                ));
            }
        }
        if h.notify || h.watchdog_ms.is_some() {
            let wd = h.watchdog_ms.map(|ms| format!(", watchdog {ms}ms")).unwrap_or_default();
            rows.push((
                "sd_notify".into(),
                format!("{}{wd}", if h.notify { "waits for READY=1" } else { "offered" }),
            ));
        }
        if let Some(i) = &p.health {
            if let Some(l) = &i.last {
                let when = if l.at > 0 { timefmt::iso(l.at as i64) } else { "N/A".into() };
                rows.push((
                    "last probe".into(),
                    format!("{} {}: {} ({when})", l.probe, if l.ok { "ok" } else { "failed" }, l.detail),
                ));
            }
            rows.push(("probe failures".into(), i.failures.to_string()));
            if let Some(st) = &i.notify_status {
                rows.push(("notify status".into(), st.clone()));
            }
        }
    }
    // pm2 splices these in after building the list, log path first.
    if let Some(l) = &p.pm_log_path {
        rows.insert(6, ("entire log path".into(), l.clone()));
    }
    if let Some(c) = &a.cron_restart {
        rows.insert(5, ("cron restart".into(), c.clone()));
    }
    rows
}

/// A JSON value as JS template literals print it (`${v}`).
fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Array(a) => a.iter().map(json_text).collect::<Vec<_>>().join(","),
        serde_json::Value::Object(_) => "[object Object]".into(),
        v => v.to_string(),
    }
}

/// Variables of the app whose value differs from (or is absent in) the
/// CLI's environment.
fn divergent(p: &ProcInfo, local: &BTreeMap<String, String>) -> Vec<(String, String)> {
    p.app.env.iter().filter(|(k, v)| local.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn render(p: &ProcInfo, o: &DescribeOptions) -> String {
    let mut out = Vec::new();
    out.push(paint_if(
        o.color,
        Color::Inverse,
        &format!(" Describing process with id {} - name {} ", p.pm_id, p.app.name),
    ));
    let rows: Vec<Vec<Cell>> = rows(p, o.now_ms)
        .into_iter()
        .map(|(k, v)| {
            let vc = if k == "status" {
                Cell::colored(
                    v,
                    match p.status.as_str() {
                        "online" => Color::Green,
                        "launching" => Color::Blue,
                        _ => Color::Red,
                    },
                )
            } else {
                Cell::plain(v)
            };
            vec![Cell::colored(k, Color::Bold), vc]
        })
        .collect();
    let widths = auto_widths(&rows);
    out.push(BoxTable { widths, head: None, rows, color: o.color }.render());
    if let Some(axm) = p.current_axm().filter(|_| p.status == "online") {
        let one = |cells: Vec<Vec<Cell>>| {
            let widths = auto_widths(&cells);
            BoxTable { widths, head: None, rows: cells, color: o.color }.render()
        };
        let names: Vec<Vec<Cell>> = axm
            .actions
            .iter()
            .filter_map(|a| a.get("action_name"))
            .map(|n| vec![Cell::plain(json_text(n))])
            .collect();
        if !names.is_empty() {
            out.push(paint_if(o.color, Color::Inverse, " Actions available "));
            out.push(one(names));
            out.push(format!(" Trigger via: pm2 trigger {} <action_name>\n", p.app.name));
        }
        if !axm.monitor.is_empty() {
            out.push(paint_if(o.color, Color::Inverse, " Code metrics value "));
            let rows = axm
                .monitor
                .iter()
                .map(|(k, m)| {
                    let value = m.get("value").unwrap_or(m);
                    let unit = m.get("unit").map(json_text).unwrap_or_default();
                    vec![
                        Cell::colored(k.clone(), Color::Bold),
                        Cell::plain(format!("{} {unit}", json_text(value))),
                    ]
                })
                .collect();
            out.push(one(rows));
        }
    }
    out.push(paint_if(o.color, Color::Inverse, " Divergent env variables from local env "));
    let div = divergent(p, o.local_env);
    if div.is_empty() {
        out.push(String::new());
    } else {
        let rows: Vec<Vec<Cell>> =
            div.into_iter().map(|(k, v)| vec![Cell::plain(k), Cell::plain(v)]).collect();
        let widths = auto_widths(&rows);
        out.push(BoxTable { widths, head: None, rows, color: o.color }.render());
    }
    out.push(String::new());
    out.push(" Add your own code metrics: http://bit.ly/code-metrics".into());
    out.push(format!(" Use `pm2 logs {} [--lines 1000]` to display logs", p.app.name));
    out.push(format!(" Use `pm2 env {}` to display environment variables", p.pm_id));
    out.push(format!(" Use `pm2 monit` to monitor CPU and Memory usage {}", p.app.name));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::ExecMode;

    const A4_TABLE: &str = "\
┌───────────────────┬──────────────────────────────┐
│ status            │ online                       │
│ name              │ worker                       │
│ namespace         │ default                      │
│ version           │ 1.2.3                        │
│ restarts          │ 0                            │
│ uptime            │ 67s                          │
│ script path       │ /srv/apps/env.js             │
│ script args       │ --a b                        │
│ error log path    │ /h/.pm2/logs/worker-error.log │
│ out log path      │ /h/.pm2/logs/worker-out.log  │
│ pid path          │ /h/.pm2/pids/worker-2.pid    │
│ interpreter       │ node                         │
│ interpreter args  │ N/A                          │
│ script id         │ 2                            │
│ exec cwd          │ /srv/apps                    │
│ exec mode         │ fork_mode                    │
│ node.js version   │ 20.20.2                      │
│ node env          │ N/A                          │
│ watch & reload    │ ✘                            │
│ unstable restarts │ 0                            │
│ created at        │ 2026-11-26T01:00:44.253Z     │
└───────────────────┴──────────────────────────────┘";

    fn worker() -> ProcInfo {
        let mut p = ProcInfo {
            pm_id: 2,
            pid: 6683,
            status: corral_proto::Status::Online,
            created_at: 1_795_654_844_253,
            pm_uptime: 1_795_654_844_253,
            pm_out_log_path: "/h/.pm2/logs/worker-out.log".into(),
            pm_err_log_path: "/h/.pm2/logs/worker-error.log".into(),
            pm_pid_path: "/h/.pm2/pids/worker-2.pid".into(),
            node_version: Some("20.20.2".into()),
            ..Default::default()
        };
        p.app.name = "worker".into();
        p.app.version = Some("1.2.3".into());
        p.app.script = "/srv/apps/env.js".into();
        p.app.args = vec!["--a".into(), "b".into()];
        p.app.cwd = "/srv/apps".into();
        p.app.exec_mode = ExecMode::Fork;
        p
    }

    #[test]
    fn appendix_a4_layout() {
        let p = worker();
        let env = BTreeMap::new();
        let s = render(
            &p,
            &DescribeOptions { now_ms: 1_795_654_844_253 + 67_000, color: false, local_env: &env },
        );
        // One column is one char wider than its longest value + 2 padding:
        // the error log path (29 chars) sets it.
        let expected =
            A4_TABLE.replace("──────────────────────────────┐", "───────────────────────────────┐");
        let mut lines = s.lines();
        assert_eq!(lines.next(), Some(" Describing process with id 2 - name worker "));
        let table: Vec<&str> = lines.by_ref().take(23).collect();
        for (got, want) in table.iter().zip(expected.lines()) {
            assert_eq!(got.split('│').nth(1), want.split('│').nth(1));
            assert_eq!(got.split('│').nth(2).map(str::trim), want.split('│').nth(2).map(str::trim));
        }
        assert!(s.ends_with(
            " Divergent env variables from local env \n\n\n Add your own code metrics: http://bit.ly/code-metrics\n Use `pm2 logs worker [--lines 1000]` to display logs\n Use `pm2 env 2` to display environment variables\n Use `pm2 monit` to monitor CPU and Memory usage worker"
        ));
    }

    #[test]
    fn optional_rows_are_spliced() {
        let mut p = worker();
        p.app.cron_restart = Some("*/5 * * * *".into());
        p.pm_log_path = Some("/h/all.log".into());
        let r = rows(&p, 0);
        assert_eq!(r[5].0, "cron restart");
        assert_eq!(r[6].0, "uptime");
        assert_eq!(r[7].0, "entire log path");
        assert_eq!(r[8].0, "script path");
    }

    #[test]
    fn divergent_env_lists_differences() {
        let mut p = worker();
        p.app.env.insert("A".into(), "1".into());
        p.app.env.insert("B".into(), "2".into());
        let mut local = BTreeMap::new();
        local.insert("A".to_string(), "1".to_string());
        let s = render(&p, &DescribeOptions { now_ms: 0, color: false, local_env: &local });
        assert!(s.contains("│ B │ 2 │"), "{s}");
        assert!(!s.contains("│ A │"));
    }
}
