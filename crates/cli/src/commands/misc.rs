//! `ecosystem` (`init`), `report`, `list --watch`.

use super::{Cli, Code};
use crate::output;
use anyhow::{Context as _, Result};
use corral_proto::CORRAL_VERSION;
use std::time::Duration;

const FULL_TEMPLATE: &str = r#"module.exports = {
  apps: [
    {
      name: 'app',
      script: './app.js',
      // instances: 'max',          // cluster mode on every core
      // exec_mode: 'cluster',
      watch: false,
      max_memory_restart: '1G',
      env: {
        NODE_ENV: 'development',
      },
      env_production: {
        NODE_ENV: 'production',
      },
    },
  ],

  // `pm2 deploy production setup`, then `pm2 deploy production`.
  deploy: {
    production: {
      user: 'SSH_USERNAME',
      host: 'SSH_HOSTMACHINE',
      ref: 'origin/master',
      repo: 'GIT_REPOSITORY',
      path: 'DESTINATION_PATH',
      'pre-deploy-local': '',
      'post-deploy': 'npm install && pm2 reload ecosystem.config.js --env production',
      'pre-setup': '',
    },
  },
};
"#;

const SIMPLE_TEMPLATE: &str = r#"module.exports = {
  apps: [
    {
      name: 'app',
      script: './app.js',
    },
  ],
};
"#;

/// `pm2 ecosystem [simple]`: writes `./ecosystem.config.js`. An existing
/// file is never overwritten.
pub fn ecosystem(cli: &mut Cli) -> Result<Code> {
    let simple = cli.args.positionals.first().is_some_and(|m| m == "simple");
    let path = cli.cwd.join("ecosystem.config.js");
    if path.exists() {
        // pm2 overwrites silently. At a terminal Corral asks first; in a
        // script it overwrites as pm2 does, but keeps the old file as
        // `.bak` so a hand-written config is never lost.
        use std::io::IsTerminal;
        if std::io::stdin().is_terminal() && !cli.args.has("force") && !confirm_overwrite(&path) {
            output::error(&format!("File {} already exists, not overwritten", path.display()));
            return Ok(1);
        }
        let bak = path.with_extension("js.bak");
        std::fs::copy(&path, &bak).with_context(|| format!("cannot back up {}", path.display()))?;
        output::warn(&format!("File {} exists: previous content kept in {}", path.display(), bak.display()));
    }
    std::fs::write(&path, if simple { SIMPLE_TEMPLATE } else { FULL_TEMPLATE })?;
    output::out(&format!("File {} generated", path.display()));
    Ok(0)
}

fn confirm_overwrite(path: &std::path::Path) -> bool {
    use std::io::{BufRead, Write};
    print!("File {} already exists. Overwrite it? (y/N) ", path.display());
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes" | "Yes")
}

/// `pm2 ls --watch`: redraw every 0.9 s until interrupted.
pub fn list_watch(cli: &mut Cli) -> Result<Code> {
    output::exit_on_broken_pipe();
    loop {
        let procs = cli.list()?;
        output::raw_out("\x1b[2J\x1b[H");
        cli.print_procs(&procs);
        std::thread::sleep(Duration::from_millis(900));
    }
}

fn line(k: &str, v: impl std::fmt::Display) -> String {
    format!("{k:<20} : {v}")
}

fn section(title: &str) -> String {
    let head = format!("--- {title} ");
    let pad = 60usize.saturating_sub(head.chars().count());
    format!(
        "===============================================================================\n{head}{}",
        "-".repeat(pad)
    )
}

fn node_version() -> String {
    std::process::Command::new("node")
        .arg("-v")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().trim_start_matches('v').to_string())
        .unwrap_or_else(|| "N/A".into())
}

/// The daemon's multi-host state, when it is a node of a cluster.
pub fn cluster_status(cli: &mut Cli) -> Option<serde_json::Value> {
    let client = cli.client().ok()?;
    let Ok(corral_proto::Reply::Text { text }) = client.request(&corral_proto::Request::ClusterStatus) else {
        return None;
    };
    serde_json::from_str::<serde_json::Value>(&text).ok().filter(|v| v["enabled"] == true)
}

/// One line under `pm2 ls` on a cluster node: who we are, Redis, the peers.
pub fn cluster_line(v: &serde_json::Value) -> String {
    let up = v["publisher"] == "connected" && v["reader"] == "connected";
    let peers: Vec<&str> = v["peers"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["node"].as_str()).collect())
        .unwrap_or_default();
    let listener = match v["forwarding"]["listen"].as_str() {
        Some(l) => format!(", node port {l}"),
        None => String::new(),
    };
    format!(
        "Cluster node {}: Redis {} {}, peers: {}{listener}",
        v["node_id"].as_str().unwrap_or("?"),
        v["redis"].as_str().unwrap_or("?"),
        if up { "connected" } else { "DISCONNECTED" },
        if peers.is_empty() { "none".to_string() } else { peers.join(", ") },
    )
}

/// The multi-host state, when the daemon is a node of a cluster.
fn cluster_section(cli: &mut Cli, out: &mut Vec<String>) {
    let Some(v) = cluster_status(cli) else { return };
    out.push(section("Cluster"));
    let s = |k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    out.push(line("node id", s("node_id")));
    out.push(line("redis", format!("{} (publisher {}, reader {})", s("redis"), s("publisher"), s("reader"))));
    out.push(line("last redis error", s("last_error")));
    let peers: Vec<String> = v["peers"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["node"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    out.push(line("peers", if peers.is_empty() { "none".to_string() } else { peers.join(", ") }));
    out.push(line(
        "messages",
        format!(
            "published {}, delivered {} ({} pushed straight from their node), dropped {}, lost {}, duplicates {}, refused {}",
            s("published"),
            s("delivered"),
            s("direct"),
            s("dropped"),
            s("lost"),
            s("duplicates"),
            s("refused")
        ),
    ));
    let f = &v["forwarding"];
    let fs = |k: &str| match &f[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    out.push(line(
        "node listener",
        match &f["listen"] {
            serde_json::Value::String(l) => format!("{l} (advertised as {})", fs("advertise")),
            _ => "none (this node forwards, takes no forwarded requests)".to_string(),
        },
    ));
    out.push(line(
        "sessions",
        format!(
            "{} owned here (records: redis {}), forwarded out {}, forwarded in {}, failed out {}, refused in {}",
            fs("sessions_owned"),
            fs("sessions_redis"),
            fs("forwarded_out"),
            fs("forwarded_in"),
            fs("failed_out"),
            fs("refused_in")
        ),
    ));
}

/// `pm2 report`: versions, system, process table and the daemon's last log
/// lines, fenced for pasting into an issue.
pub fn report(cli: &mut Cli) -> Result<Code> {
    let welcome = cli.client()?.welcome.clone();
    let procs = cli.list()?;
    let mut out = vec![String::from("```")];
    out.push(section(&format!("PM2 report ({})", crate::timefmt::iso(crate::timefmt::now_ms()))));
    out.push(section("Daemon"));
    out.push(line("pm2d version", &welcome.daemon_version));
    out.push(line("pid", welcome.pid));
    out.push(line("pm2 home", &welcome.pm2_home));
    out.push(line("protocol", welcome.protocol));
    cluster_section(cli, &mut out);
    out.push(section("CLI"));
    out.push(line("local pm2", corral_proto::PM2_VERSION));
    out.push(line("corral version", CORRAL_VERSION));
    out.push(line("node version", node_version()));
    out.push(line(
        "binary",
        std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "N/A".into()),
    ));
    out.push(line("user", crate::startup::whoami()));
    out.push(section("System info"));
    out.push(line("arch", std::env::consts::ARCH));
    out.push(line("platform", std::env::consts::OS));
    out.push(line("cpus count", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)));
    if let Ok(mem) = std::fs::read_to_string("/proc/meminfo") {
        for l in mem.lines().filter(|l| l.starts_with("MemTotal:") || l.starts_with("MemAvailable:")) {
            if let Some((k, v)) = l.split_once(':') {
                out.push(line(k, v.trim()));
            }
        }
    }
    out.push(line("home", std::env::var("HOME").unwrap_or_default()));
    out.push(section("PM2 list"));
    let opts = crate::render::table::ListOptions {
        now_ms: crate::timefmt::now_ms(),
        columns: 300,
        sort: None,
        color: false,
    };
    out.push(crate::render::table::render_list(&procs, &opts));
    out.push(section("Daemon logs"));
    let log = cli.home.join("pm2.log");
    out.push(format!("{} last 20 lines:", log.display()));
    out.extend(crate::logs::tail_lines(&log, 20));
    out.push(String::from("```"));
    output::out(&out.join("\n"));
    Ok(0)
}
