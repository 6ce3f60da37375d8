//! `pm2 list`: the process table, the condensed variant for narrow
//! terminals, `--sort`, and the `-m` mini list.

use super::{bytes_to_size, time_since, width, BoxTable, Cell};
use crate::output::Color;
use corral_proto::{ExecMode, ProcInfo};

/// Below this terminal width pm2 switches to the condensed table.
pub const CONDENSED_BELOW: usize = 134;

pub struct ListOptions<'a> {
    pub now_ms: i64,
    /// Terminal columns (pm2 assumes 300 when unknown).
    pub columns: usize,
    pub sort: Option<&'a str>,
    pub color: bool,
}

fn status_color(s: &str) -> Color {
    match s {
        "online" => Color::Green,
        "launching" => Color::Blue,
        _ => Color::Red,
    }
}

fn uptime(p: &ProcInfo, now: i64) -> String {
    if p.status == "online" && p.pm_uptime > 0 {
        time_since(now, p.pm_uptime as i64)
    } else {
        "0".into()
    }
}

fn pid(p: &ProcInfo) -> String {
    // pm2 shows N/A for a process that was never spawned (pid undefined).
    if p.pid == 0 && p.pm_uptime == 0 && p.status == "stopped" {
        "N/A".into()
    } else {
        p.pid.to_string()
    }
}

fn cpu(p: &ProcInfo) -> String {
    let c = (p.cpu * 10.0).round() / 10.0;
    format!("{c}%")
}

fn mode(p: &ProcInfo) -> Cell {
    match p.app.exec_mode {
        ExecMode::Fork => Cell::colored("fork", Color::InverseBold),
        ExecMode::Cluster => Cell::colored("cluster", Color::BoldBlue),
    }
}

/// Sorts in place per `--sort field[:asc|desc]`; default name ascending,
/// stable so equal names keep pm_id order.
pub fn sort_procs(procs: &mut [ProcInfo], sort: Option<&str>) {
    let (field, desc) = match sort {
        Some(s) => match s.split_once(':') {
            Some((f, d)) => (f, d == "desc"),
            None => (s, false),
        },
        None => ("name", false),
    };
    procs.sort_by(|a, b| {
        let o = match field {
            "id" | "pm_id" => a.pm_id.cmp(&b.pm_id),
            "namespace" => a.app.namespace.cmp(&b.app.namespace),
            "pid" => a.pid.cmp(&b.pid),
            "cpu" => a.cpu.partial_cmp(&b.cpu).unwrap_or(std::cmp::Ordering::Equal),
            "memory" => a.memory.cmp(&b.memory),
            "uptime" => a.pm_uptime.cmp(&b.pm_uptime),
            "status" => a.status.as_str().cmp(b.status.as_str()),
            "restart" | "restarts" => a.restart_time.cmp(&b.restart_time),
            _ => a.app.name.cmp(&b.app.name),
        };
        if desc {
            o.reverse()
        } else {
            o
        }
    });
}

/// The table as pm2 prints it (no trailing newline).
pub fn render_list(procs: &[ProcInfo], opts: &ListOptions) -> String {
    let mut procs = procs.to_vec();
    sort_procs(&mut procs, opts.sort);
    let id_w = procs.iter().map(|p| p.pm_id.to_string().len() + 2).max().unwrap_or(0).max(4);
    let name_w =
        if procs.is_empty() { 11 } else { procs.iter().map(|p| width(&p.app.name)).max().unwrap_or(0) + 5 };
    let condensed = opts.columns < CONDENSED_BELOW;
    let (head, widths): (Vec<&str>, Vec<usize>) = if condensed {
        (vec!["id", "name", "mode", "↺", "status", "cpu", "memory"], vec![id_w, 20, 10, 6, 11, 10, 10])
    } else {
        (
            vec![
                "id",
                "name",
                "namespace",
                "version",
                "mode",
                "pid",
                "uptime",
                "↺",
                "status",
                "cpu",
                "mem",
                "user",
                "watching",
            ],
            vec![id_w, name_w, 13, 9, 9, 10, 8, 6, 11, 10, 10, 10, 10],
        )
    };
    // A health column only when some app has health checks: the default
    // table stays pm2's for scripts that parse it.
    let show_health = procs.iter().any(|p| p.app.health.is_some());
    let (mut head, mut widths) = (head, widths);
    if show_health {
        head.push("health");
        widths.push(10);
    }
    let rows = procs
        .iter()
        .map(|p| {
            let id = Cell::colored(p.pm_id.to_string(), Color::BoldCyan);
            let name = Cell::plain(p.app.name.clone());
            let restarts = Cell::plain(p.restart_time.to_string());
            let status = Cell::colored(p.status.to_string(), status_color(p.status.as_str()));
            let mem = Cell::plain(bytes_to_size(p.memory));
            let mut row = row_cells(p, opts, condensed, id, name, restarts, status, mem);
            if show_health {
                row.push(health_cell(p));
            }
            row
        })
        .collect();
    BoxTable { widths, head: Some(head.into_iter().map(Cell::plain).collect()), rows, color: opts.color }
        .render()
}

/// The health column: the run's health status for apps with health checks.
fn health_cell(p: &ProcInfo) -> Cell {
    if p.app.health.is_none() {
        return Cell::colored("-", Color::Gray);
    }
    let st = match (&p.health, p.status.as_str()) {
        (Some(h), "online" | "launching") => h.status.as_str(),
        _ => "unknown",
    };
    let color = match st {
        "ready" => Color::Green,
        "starting" => Color::Yellow,
        "unready" => Color::Red,
        _ => Color::Gray,
    };
    Cell::colored(st, color)
}

#[allow(clippy::too_many_arguments)]
fn row_cells(
    p: &ProcInfo,
    opts: &ListOptions,
    condensed: bool,
    id: Cell,
    name: Cell,
    restarts: Cell,
    status: Cell,
    mem: Cell,
) -> Vec<Cell> {
    if condensed {
        vec![id, name, mode(p), restarts, status, Cell::plain(cpu(p)), mem]
    } else {
        vec![
            id,
            name,
            Cell::plain(p.app.namespace.clone()),
            Cell::plain(p.app.version.clone().unwrap_or_else(|| "N/A".into())),
            mode(p),
            Cell::plain(pid(p)),
            Cell::plain(uptime(p, opts.now_ms)),
            restarts,
            status,
            Cell::plain(cpu(p)),
            mem,
            Cell::colored(user(p), Color::Bold),
            if p.app.watch {
                Cell::colored("enabled", Color::Green)
            } else {
                Cell::colored("disabled", Color::Gray)
            },
        ]
    }
}

/// pm2's "Module" table for the processes flagged `pmx_module` (no
/// trailing newline): module name, version, pid, status, restarts, cpu,
/// memory and user, or the condensed columns on a narrow terminal.
pub fn render_modules(procs: &[ProcInfo], opts: &ListOptions) -> String {
    let mut procs = procs.to_vec();
    sort_procs(&mut procs, opts.sort);
    let id_w = procs.iter().map(|p| p.pm_id.to_string().len() + 2).max().unwrap_or(0).max(4);
    let name_w = procs.iter().map(|p| width(&p.app.name)).max().unwrap_or(0) + 5;
    let condensed = opts.columns < CONDENSED_BELOW;
    let (head, widths): (Vec<&str>, Vec<usize>) = if condensed {
        (vec!["id", "name", "status", "cpu", "mem"], vec![id_w, name_w.min(20), 10, 10, 10])
    } else {
        (
            vec!["id", "module", "version", "pid", "status", "↺", "cpu", "mem", "user"],
            vec![id_w, 30, 15, 10, 10, 6, 10, 10, 10],
        )
    };
    let rows = procs
        .iter()
        .map(|p| {
            let id = Cell::colored(p.pm_id.to_string(), Color::BoldCyan);
            let name = Cell::plain(p.app.name.clone());
            let status = Cell::colored(p.status.to_string(), status_color(p.status.as_str()));
            let mem = Cell::plain(bytes_to_size(p.memory));
            if condensed {
                vec![id, name, status, Cell::plain(cpu(p)), mem]
            } else {
                vec![
                    id,
                    name,
                    Cell::plain(p.app.version.clone().unwrap_or_else(|| "N/A".into())),
                    Cell::plain(pid(p)),
                    status,
                    Cell::plain(p.restart_time.to_string()),
                    Cell::plain(cpu(p)),
                    mem,
                    Cell::colored(user(p), Color::Bold),
                ]
            }
        })
        .collect();
    BoxTable { widths, head: Some(head.into_iter().map(Cell::plain).collect()), rows, color: opts.color }
        .render()
}

/// `pm2 ls -m`.
pub fn render_mini(procs: &[ProcInfo], now_ms: i64, sort: Option<&str>) -> String {
    let mut procs = procs.to_vec();
    sort_procs(&mut procs, sort);
    let mut out = String::new();
    for p in &procs {
        let mode = match p.app.exec_mode {
            ExecMode::Fork => "fork",
            ExecMode::Cluster => "cluster",
        };
        out.push_str(&format!("+--- {}\n", p.app.name));
        out.push_str(&format!("namespace : {}\n", p.app.namespace));
        out.push_str(&format!("version : {}\n", p.app.version.as_deref().unwrap_or("N/A")));
        out.push_str(&format!("pid : {}\n", pid(p)));
        out.push_str(&format!("pm2 id : {}\n", p.pm_id));
        out.push_str(&format!("status : {}\n", p.status));
        out.push_str(&format!("mode : {mode}\n"));
        out.push_str(&format!("restarted : {}\n", p.restart_time));
        out.push_str(&format!("uptime : {}\n", uptime(p, now_ms)));
        out.push_str(&format!("memory usage : {} \n", bytes_to_size(p.memory)));
        out.push_str(&format!("error log : {}\n", p.pm_err_log_path));
        out.push_str(&format!("watching : {}\n", if p.app.watch { "yes" } else { "no" }));
        out.push_str(&format!("PID file : {}\n", p.pm_pid_path));
        out.push('\n');
    }
    out
}

/// The user column: the user the app runs as (`uid`, a numeric id shown by
/// name when it has one, as pm2 does), else the user who started it.
fn user(p: &ProcInfo) -> String {
    match p.app.extra.get("uid") {
        Some(serde_json::Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .and_then(|n| nix::unistd::User::from_uid(n.into()).ok().flatten())
            .map(|u| u.name)
            .unwrap_or_else(|| n.to_string()),
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        _ => p.username.clone(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn proc(
        id: u32,
        name: &str,
        mode: ExecMode,
        pid: u32,
        status: &str,
        mem: u64,
        version: Option<&str>,
    ) -> ProcInfo {
        let mut p = ProcInfo {
            pm_id: id,
            pid,
            status: status.parse().unwrap(),
            memory: mem,
            username: "root".into(),
            ..Default::default()
        };
        p.app.name = name.into();
        p.app.exec_mode = mode;
        p.app.version = version.map(String::from);
        p
    }

    const A1: &str = "\
┌────┬────────┬─────────────┬─────────┬─────────┬──────────┬────────┬──────┬───────────┬──────────┬──────────┬──────────┬──────────┐
│ id │ name   │ namespace   │ version │ mode    │ pid      │ uptime │ ↺    │ status    │ cpu      │ mem      │ user     │ watching │
├────┼────────┼─────────────┼─────────┼─────────┼──────────┼────────┼──────┼───────────┼──────────┼──────────┼──────────┼──────────┤
│ 0  │ api    │ default     │ N/A     │ fork    │ 6328     │ 0s     │ 0    │ online    │ 0%       │ 20.5mb   │ root     │ disabled │
└────┴────────┴─────────────┴─────────┴─────────┴──────────┴────────┴──────┴───────────┴──────────┴──────────┴──────────┴──────────┘";

    const A2: &str = "\
┌────┬───────────┬─────────────┬─────────┬─────────┬──────────┬────────┬──────┬───────────┬──────────┬──────────┬──────────┬──────────┐
│ id │ name      │ namespace   │ version │ mode    │ pid      │ uptime │ ↺    │ status    │ cpu      │ mem      │ user     │ watching │
├────┼───────────┼─────────────┼─────────┼─────────┼──────────┼────────┼──────┼───────────┼──────────┼──────────┼──────────┼──────────┤
│ 0  │ api       │ default     │ N/A     │ fork    │ 6328     │ 12s    │ 0    │ online    │ 0%       │ 51.3mb   │ root     │ disabled │
│ 1  │ web       │ default     │ 1.2.3   │ cluster │ 6682     │ 2s     │ 0    │ online    │ 0%       │ 56.7mb   │ root     │ disabled │
│ 3  │ web       │ default     │ 1.2.3   │ cluster │ 6706     │ 2s     │ 0    │ online    │ 0%       │ 56.0mb   │ root     │ disabled │
│ 2  │ worker    │ default     │ 1.2.3   │ fork    │ 6683     │ 2s     │ 0    │ online    │ 0%       │ 54.6mb   │ root     │ disabled │
└────┴───────────┴─────────────┴─────────┴─────────┴──────────┴────────┴──────┴───────────┴──────────┴──────────┴──────────┴──────────┘";

    fn opts(now: i64) -> ListOptions<'static> {
        ListOptions { now_ms: now, columns: 300, sort: None, color: false }
    }

    #[test]
    fn appendix_a1_single_app() {
        let now = 1_795_654_844_253;
        let mut p = proc(0, "api", ExecMode::Fork, 6328, "online", 21_495_808, None);
        p.pm_uptime = now as u64;
        assert_eq!(render_list(&[p], &opts(now)), A1);
    }

    #[test]
    fn appendix_a2_sorted_by_name() {
        let now = 1_795_654_900_000i64;
        let mk = |id, name, mode, pid, mem, ver, up: i64| {
            let mut p = proc(id, name, mode, pid, "online", mem, ver);
            p.pm_uptime = (now - up * 1000) as u64;
            p
        };
        let procs = vec![
            mk(0, "api", ExecMode::Fork, 6328, 53_791_949, None, 12),
            mk(1, "web", ExecMode::Cluster, 6682, 59_454_259, Some("1.2.3"), 2),
            mk(2, "worker", ExecMode::Fork, 6683, 57_251_020, Some("1.2.3"), 2),
            mk(3, "web", ExecMode::Cluster, 6706, 58_720_256, Some("1.2.3"), 2),
        ];
        assert_eq!(render_list(&procs, &opts(now)), A2);
    }

    #[test]
    fn empty_list_has_header_only() {
        let t = render_list(&[], &opts(0));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("│ id │ name      │"));
    }

    #[test]
    fn module_table() {
        let p = proc(0, "pm2-logrotate", ExecMode::Fork, 16304, "online", 5 * 1024 * 1024, Some("3.0.0"));
        let t = render_modules(std::slice::from_ref(&p), &opts(0));
        let want = "\
┌────┬──────────────────────────────┬───────────────┬──────────┬──────────┬──────┬──────────┬──────────┬──────────┐
│ id │ module                       │ version       │ pid      │ status   │ ↺    │ cpu      │ mem      │ user     │
├────┼──────────────────────────────┼───────────────┼──────────┼──────────┼──────┼──────────┼──────────┼──────────┤
│ 0  │ pm2-logrotate                │ 3.0.0         │ 16304    │ online   │ 0    │ 0%       │ 5.0mb    │ root     │
└────┴──────────────────────────────┴───────────────┴──────────┴──────────┴──────┴──────────┴──────────┴──────────┘";
        assert_eq!(t, want);
        let t = render_modules(&[p], &ListOptions { now_ms: 0, columns: 100, sort: None, color: false });
        assert!(t.contains("│ id │ name             │ status   │ cpu      │ mem      │"), "{t}");
    }

    #[test]
    fn condensed_when_narrow_and_truncates_status() {
        let p = proc(8, "crash", ExecMode::Fork, 0, "waiting restart", 0, None);
        let t = render_list(&[p], &ListOptions { now_ms: 0, columns: 100, sort: None, color: false });
        assert!(
            t.contains("│ id │ name               │ mode     │ ↺    │ status    │ cpu      │ memory   │"),
            "{t}"
        );
        assert!(t.contains("│ waiting … │"), "{t}");
    }

    #[test]
    fn sort_desc_by_id() {
        let mut v = vec![
            proc(0, "b", ExecMode::Fork, 1, "online", 0, None),
            proc(1, "a", ExecMode::Fork, 1, "online", 0, None),
        ];
        sort_procs(&mut v, Some("id:desc"));
        assert_eq!(v[0].pm_id, 1);
    }

    #[test]
    fn mini_list_block() {
        let mut p = proc(0, "m2", ExecMode::Fork, 5982, "online", 57_251_020, Some("1.2.3"));
        p.pm_uptime = 1000;
        p.pm_err_log_path = "/h/logs/m2-error.log".into();
        p.pm_pid_path = "/h/pids/m2-0.pid".into();
        let m = render_mini(&[p], 7000, None);
        assert!(m.starts_with("+--- m2\nnamespace : default\nversion : 1.2.3\npid : 5982\npm2 id : 0\n"));
        assert!(m.contains("uptime : 6s\nmemory usage : 54.6mb \n"));
        assert!(m.ends_with("PID file : /h/pids/m2-0.pid\n\n"));
    }
}
