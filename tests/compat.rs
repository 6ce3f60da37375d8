//! pm2 compatibility details that pm2's own e2e suite checks, each as a
//! black-box test of the real binary.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn stop_and_reload_signal_each_process_once() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "delayed_exit.js", "-i", "2"]).ok();
    let list = pm2.wait_for("2 online", T, |l| l.len() == 2 && l.iter().all(|p| status(p) == "online"));
    let logs: Vec<String> =
        list.iter().map(|p| p["pm2_env"]["pm_out_log_path"].as_str().unwrap().to_string()).collect();
    for l in &logs {
        poll("app up", T, || Some(()).filter(|_| read(l).contains("delayed up")));
    }
    pm2.run(&["reload", "delayed_exit"]).ok();
    for l in &logs {
        poll("old worker exited", T, || Some(()).filter(|_| read(l).contains("exiting")));
        assert_eq!(read(l).matches("got SIGINT").count(), 1, "{l}:\n{}", read(l));
    }
}

#[test]
fn init_overwrites_like_pm2_but_keeps_a_backup() {
    let pm2 = Pm2::new();
    let dir = tempfile::tempdir().unwrap();
    let mut pm2 = pm2;
    pm2.cwd = dir.path().to_path_buf();
    std::fs::write(dir.path().join("ecosystem.config.js"), "// mine\n").unwrap();
    let r = pm2.run(&["init", "simple"]);
    r.ok();
    assert!(r.all().contains("generated"), "{}", r.all());
    let now = std::fs::read_to_string(dir.path().join("ecosystem.config.js")).unwrap();
    assert!(now.contains("apps"), "{now}");
    let bak = std::fs::read_to_string(dir.path().join("ecosystem.config.js.bak")).unwrap();
    assert_eq!(bak, "// mine\n");
}

#[test]
fn restart_counter_counts_restarts_that_ran() {
    let pm2 = Pm2::new();
    // pm2: a crash loop with --max-restarts 2 ends errored showing ↺ 1 (the
    // exit that ends it is not a restart).
    pm2.run(&["start", "crash.js", "--name", "loop", "--max-restarts", "2"]).ok();
    let list = pm2.wait_for("errored", T, |l| l.first().is_some_and(|p| status(p) == "errored"));
    assert_eq!(restarts(&list[0]), 1);
    // A delayed restart is counted when it runs, not when it is scheduled.
    pm2.run(&["start", "crash.js", "--name", "slow", "--restart-delay", "60000"]).ok();
    let list = pm2.wait_for("waiting restart", T, |l| {
        l.iter().any(|p| p["name"] == "slow" && status(p) == "waiting restart")
    });
    let slow = list.iter().find(|p| p["name"] == "slow").unwrap();
    assert_eq!(restarts(slow), 0);
}

#[test]
fn stop_turns_watch_off_and_restart_applies_cli_options() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js", "--watch"]).ok();
    pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    assert_eq!(pm2.jlist()[0]["pm2_env"]["watch"], true);
    pm2.run(&["stop", "forever"]).ok();
    assert_eq!(pm2.jlist()[0]["pm2_env"]["watch"], false);
    pm2.run(&["restart", "forever", "--node-args=--max-old-space-size=100"]).ok();
    let p = pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    assert_eq!(p[0]["pm2_env"]["node_args"], serde_json::json!(["--max-old-space-size=100"]));
    pm2.run(&["restart", "0", "--name=renamed", "--node-args=null"]).ok();
    let p = pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    assert_eq!(p[0]["name"], "renamed");
    assert!(p[0]["pm2_env"].get("node_args").is_none(), "{}", p[0]["pm2_env"]);
}

#[test]
fn pm2_env_env_is_the_apps_own_env_and_module_settings_reach_it() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js", "--name", "echo"]).ok();
    pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    let e = &pm2.jlist()[0]["pm2_env"];
    for injected in ["status", "exec_mode", "pm_exec_path", "NODE_APP_INSTANCE", "name"] {
        assert!(e["env"].get(injected).is_none(), "env.{injected} in {}", e["env"]);
    }
    // pm2 adds the app's module settings (none yet: `{}`) under its name.
    assert_eq!(e["env"]["echo"], serde_json::json!({}));
    pm2.run(&["set", "echo.config_var", "false"]).ok();
    let p = pm2.wait_for("restarted with the setting", T, |l| {
        l.first().is_some_and(|p| p["pm2_env"]["env"]["config_var"] == "false" && status(p) == "online")
    });
    assert_eq!(restarts(&p[0]), 1);
    // A key without an app prefix is stored as is (pm2 accepts it).
    pm2.run(&["set", "key1", "val1"]).ok();
    let conf = std::fs::read_to_string(pm2.home().join("module_conf.json")).unwrap();
    assert!(conf.contains("\"key1\": \"val1\""), "{conf}");
    pm2.run(&["unset", "key1"]).ok();
    let conf = std::fs::read_to_string(pm2.home().join("module_conf.json")).unwrap();
    assert!(!conf.contains("key1"), "{conf}");
}

#[test]
fn monitor_and_deep_monitoring_flags() {
    let mut pm2 = Pm2::new();
    pm2.run(&["start", "forever.js", "-i", "2"]).ok();
    pm2.wait_for("online", T, |l| l.len() == 2 && l.iter().all(|p| status(p) == "online"));
    pm2.run(&["monitor", "forever"]).ok();
    assert!(pm2.jlist().iter().all(|p| p["pm2_env"]["_km_monitored"] == true));
    pm2.run(&["unmonitor", "0"]).ok();
    assert_eq!(pm2.jlist()[0]["pm2_env"]["_km_monitored"], false);
    assert!(pm2.jlist()[0]["pm2_env"].get("deep_monitoring").is_none());
    pm2.envs.push(("PM2_DEEP_MONITORING".into(), "true".into()));
    pm2.run(&["restart", "forever"]).ok();
    assert!(pm2.jlist().iter().all(|p| p["pm2_env"]["deep_monitoring"] == true));
}

#[test]
fn a_broken_dump_is_moved_aside_on_resurrect() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js"]).ok();
    pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    pm2.run(&["save"]).ok();
    pm2.run(&["save"]).ok(); // the second save keeps the first as dump.pm2.bak
    pm2.run(&["delete", "all"]).ok();
    let dump = pm2.home().join("dump.pm2");
    std::fs::write(&dump, "[{\n").unwrap();
    pm2.run(&["resurrect"]).ok();
    pm2.wait_for("resurrected", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    assert!(!dump.exists());
    assert_eq!(std::fs::read_to_string(pm2.home().join("dump.pm2.bad")).unwrap(), "[{\n");
}

#[test]
fn pm2_silent_does_not_silence_logs() {
    let mut pm2 = Pm2::new();
    pm2.envs.push(("PM2_SILENT".into(), "true".into()));
    pm2.run(&["start", "graceful.js"]).ok();
    let list = pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    let log = list[0]["pm2_env"]["pm_out_log_path"].as_str().unwrap().to_string();
    poll("app up", T, || Some(()).filter(|_| read(&log).contains("graceful up")));
    let r = pm2.run(&["logs", "graceful", "--lines", "5", "--nostream"]);
    r.ok();
    assert!(r.stdout.contains("graceful up"), "{}", r.all());
}

#[test]
fn daemon_pid_file_path_override() {
    let mut pm2 = Pm2::new();
    let pid_file = pm2.home().join("elsewhere.pid");
    pm2.envs.push(("PM2_PID_FILE_PATH".into(), pid_file.to_string_lossy().into_owned()));
    pm2.run(&["ls"]).ok();
    poll("pid file", T, || std::fs::read_to_string(&pid_file).ok().filter(|s| !s.trim().is_empty()));
    assert!(!pm2.home().join("pm2.pid").exists());
}

#[test]
fn send_writes_a_line_to_the_stdin_of_a_fork_app() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "stdin_echo.js"]).ok();
    let list = pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    let log = list[0]["pm2_env"]["pm_out_log_path"].as_str().unwrap().to_string();
    pm2.run(&["send", "0", "hello there"]).ok();
    poll("echoed line", T, || Some(()).filter(|_| read(&log).contains("got hello there")));
    // Cluster workers have no stdin to write to, as in pm2.
    pm2.run(&["start", "forever.js", "-i", "1"]).ok();
    pm2.wait_for("2 online", T, |l| l.len() == 2 && l.iter().all(|p| status(p) == "online"));
    let r = pm2.run(&["send", "1", "x"]);
    assert_eq!(r.code, 1);
    assert!(r.all().contains("cluster mode"), "{}", r.all());
}

/// Raw `GET`; returns (status code, body).
fn get(port: u16, path: &str, auth: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = auth.map(|a| format!("Authorization: Basic {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split(' ').nth(1)?.parse().ok()?;
    Some((code, buf.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default()))
}

#[test]
fn serve_static_files_spa_and_basic_auth() {
    let pm2 = Pm2::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "home page\n").unwrap();
    std::fs::write(dir.path().join("other.html"), "other\n").unwrap();
    std::fs::write(dir.path().join("404.html"), "custom missing\n").unwrap();
    let port = free_port();
    let d = dir.path().to_string_lossy().into_owned();
    pm2.run(&["serve", &d, &port.to_string()]).ok();
    let name = format!("static-page-server-{port}");
    pm2.wait_for("online", T, |l| {
        l.first().is_some_and(|p| p["name"] == name.as_str() && status(p) == "online")
    });
    let (code, body) = poll("served", T, || get(port, "/", None));
    assert_eq!((code, body.as_str()), (200, "home page\n"));
    assert_eq!(get(port, "/nope.html", None).unwrap(), (404, "custom missing\n".into()));
    assert_eq!(get(port, "/../../etc/passwd", None).map(|r| r.0), Some(404));
    pm2.run(&["delete", "all"]).ok();
    // SPA: unknown paths fall back to the file of that name, then the home page.
    let port = free_port();
    pm2.run(&[
        "serve",
        &d,
        &port.to_string(),
        "--spa",
        "--basic-auth-username",
        "u",
        "--basic-auth-password",
        "p",
    ])
    .ok();
    pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    let (code, _) = poll("served", T, || get(port, "/", None));
    assert_eq!(code, 401);
    let ok = Some("dTpw"); // base64("u:p")
    assert_eq!(get(port, "/a/b/c", ok).unwrap(), (200, "home page\n".into()));
    assert_eq!(get(port, "/a/b/other.html", ok).unwrap(), (200, "other\n".into()));
}

#[test]
fn pm2_io_metrics_show_in_axm_monitor() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "axm.js"]).ok();
    let l = pm2.wait_for("metric", T, |l| {
        l.first().is_some_and(|p| p["pm2_env"]["axm_monitor"]["test-probe"]["value"] == 42)
    });
    assert_eq!(l[0]["pm2_env"]["axm_options"]["module_name"], "axm");
}

#[test]
fn cron_announced_and_node_version_shown_for_fork_apps() {
    let pm2 = Pm2::new();
    let r = pm2.run(&["start", "forever.js", "--cron-restart", "0 0 * * *"]);
    r.ok();
    assert!(r.stdout.contains("[PM2] cron restart at 0 0 * * *"), "{}", r.all());
    let l = pm2
        .wait_for("node version", T, |l| l.first().is_some_and(|p| p["pm2_env"]["node_version"].is_string()));
    let v = l[0]["pm2_env"]["node_version"].as_str().unwrap().to_string();
    let d = pm2.run(&["describe", "0"]);
    assert!(d.stdout.lines().any(|x| x.contains("node.js version") && x.contains(&v)), "{}", d.stdout);
}
