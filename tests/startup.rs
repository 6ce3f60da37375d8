//! A boot through the unit `pm2 startup` writes: its `ExecStart=` command
//! line run as systemd runs it (with the unit's `Environment=` only) brings
//! the saved Socket.IO app back with its balancer on the same `PM2_PORT`.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// `Environment=K=V` / `Environment="K=V"` lines of a unit, unescaped.
fn unit_env(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|kv| {
            let kv = match kv.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
                Some(q) => q.replace("\\\"", "\"").replace("\\\\", "\\"),
                None => kv.to_string(),
            };
            let kv = kv.replace("%%", "%");
            let (k, v) = kv.split_once('=').expect("K=V");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn a_boot_through_the_systemd_units_execstart_brings_the_socketio_port_back() {
    let mut pm2 = Pm2::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/socketio");
    pm2.cwd = dir.clone();
    let port = pm2.envs.iter().find(|(k, _)| k == "PM2_PORT").map(|(_, v)| v.clone()).unwrap();
    pm2.run(&["start", "ecosystem.config.js"]).ok();
    let n =
        pm2.wait_for("workers online", T, |l| !l.is_empty() && l.iter().all(|p| status(p) == "online")).len();
    pm2.run(&["save"]).ok();

    // The unit `pm2 startup systemd` writes for this daemon (same code,
    // without installing it into /etc).
    let home = pm2.home().display().to_string();
    let settings = corral_cli::client::daemon_settings(pm2.home());
    let path = std::env::var("PATH").unwrap_or_default();
    let unit = corral_cli::startup::systemd_unit(&corral_cli::startup::UnitParams {
        user: "root",
        node_path: &path,
        home_path: &home,
        pm2_path: BIN,
        wait_ip: false,
        settings: &settings,
    });
    let env = unit_env(&unit);
    assert!(env.contains(&("PM2_PORT".to_string(), port.clone())), "{unit}");

    // Machine reboots: the daemon and the apps are gone.
    pm2.run(&["kill"]).ok();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let mut words = exec.split_whitespace();
    let out = Command::new(words.next().unwrap())
        .args(words)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir("/")
        .output()
        .expect("ExecStart");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    pm2.wait_for("workers online after boot", T, |l| l.len() == n && l.iter().all(|p| status(p) == "online"));

    let out = Command::new("node")
        .arg("client.js")
        .arg("10")
        .env("PORT", &port)
        .current_dir(&dir)
        .output()
        .expect("node client.js");
    assert!(
        out.status.success(),
        "clients after boot:\n{}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        pm2.daemon_log()
    );
}
