//! Health checks end to end: readiness probes driving the sticky balancer
//! (real socket.io workers and clients from tests/node), a reload whose new
//! worker never becomes ready, liveness restarts, sd_notify from a helper
//! process, `start --wait` exit codes and bad probe configs.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn sticky_port(pm2: &Pm2) -> u16 {
    pm2.envs.iter().find(|(k, _)| k == "PM2_PORT").and_then(|(_, v)| v.parse().ok()).expect("PM2_PORT")
}

/// Two consecutive free ports (the app's PORT and PORT+1 through increment_var).
fn two_ports() -> u16 {
    poll("two consecutive free ports", T, || {
        let p = free_port();
        let next_free = p < u16::MAX
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
            && std::net::TcpListener::bind(("::", p + 1)).is_ok();
        next_free.then_some(p)
    })
}

fn health(p: &Value) -> &str {
    p["pm2_env"]["health"]["status"].as_str().unwrap_or("")
}

/// The Socket.IO app of tests/node with a readiness probe on each worker's own port.
fn write_sio_ecosystem(dir: &Path, name: &str, port: u16, health_dir: &Path) -> String {
    let script = node_dir().join("health_worker.js");
    let eco = json!({ "apps": [{
        "name": name,
        "script": script,
        "exec_mode": "cluster",
        "instances": 2,
        "increment_var": "PORT",
        "env": { "PORT": port, "HEALTH_DIR": health_dir },
        "readiness_probe": {
            "httpGet": { "path": "/health" },
            "periodSeconds": 0.2,
            "timeoutSeconds": 2,
            "failureThreshold": 1,
        },
    }]});
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, eco.to_string()).expect("write ecosystem");
    path.to_string_lossy().into_owned()
}

fn sio_pm2() -> Pm2 {
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    pm2
}

#[test]
fn an_unready_worker_gets_no_new_sessions_while_its_own_session_keeps_working() {
    let pm2 = sio_pm2();
    let tmp = tempfile::tempdir().expect("tmp");
    let eco = write_sio_ecosystem(tmp.path(), "hsio", two_ports(), tmp.path());
    // --wait returns once both workers' readiness probes pass.
    let r = pm2.run(&["start", &eco, "--wait"]);
    r.ok();
    let list = pm2.jlist();
    let workers: Vec<&Value> = list.iter().filter(|p| p["name"] == "hsio").collect();
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|p| health(p) == "ready"), "{list:?}");
    assert!(pm2.run(&["ls"]).stdout.contains("health"), "ls shows a health column");

    let mut client = Command::new("node")
        .arg("sio_health_client.js")
        .arg(sticky_port(&pm2).to_string())
        .arg("6")
        .current_dir(node_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut out = BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read A line");
    let a_pid: u64 = line
        .trim()
        .strip_prefix("A ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected `A <pid>`, got {line:?}"));

    // A's worker turns unready: its /health answers 503.
    std::fs::write(tmp.path().join(format!("unready-{a_pid}")), "").expect("flag");
    pm2.wait_for("A's worker unready", T, |l| l.iter().any(|p| pid(p) == a_pid && health(p) == "unready"));
    assert!(pm2.daemon_log().contains("not ready"), "pm2.log says so");

    client.stdin.as_mut().expect("stdin").write_all(b"go\n").expect("go");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("result");
    let _ = client.wait();
    let v: Value = serde_json::from_str(rest.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {rest}"));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["aPidAfter"].as_u64(), Some(a_pid), "A's session stayed on its worker: {v}");
    let new_pids: Vec<u64> =
        v["newPids"].as_array().expect("newPids").iter().filter_map(Value::as_u64).collect();
    assert_eq!(new_pids.len(), 6, "{v}");
    assert!(new_pids.iter().all(|&p| p != a_pid), "no new session on the unready worker: {v}");

    // Back to ready: it is in rotation again.
    std::fs::remove_file(tmp.path().join(format!("unready-{a_pid}"))).expect("unflag");
    pm2.wait_for("A's worker ready again", T, |l| l.iter().any(|p| pid(p) == a_pid && health(p) == "ready"));
}

#[test]
fn a_reload_whose_new_worker_never_becomes_ready_keeps_the_old_one() {
    let pm2 = sio_pm2();
    let tmp = tempfile::tempdir().expect("tmp");
    let eco = write_sio_ecosystem(tmp.path(), "hreload", two_ports(), tmp.path());
    pm2.run(&["start", &eco, "--wait"]).ok();
    let pids = |pm2: &Pm2| -> Vec<u64> {
        let mut v: Vec<u64> = pm2.jlist().iter().filter(|p| p["name"] == "hreload").map(pid).collect();
        v.sort();
        v
    };
    let before = pids(&pm2);
    assert_eq!(before.len(), 2);
    // Workers started from now on answer 503 forever.
    std::fs::write(tmp.path().join("unready-new"), "").expect("flag");
    let r = pm2.run(&["reload", "hreload"]);
    assert_ne!(r.code, 0, "a failed reload exits non-zero:\n{}", r.all());
    assert!(r.all().contains("was not ready within"), "clear message:\n{}", r.all());
    assert!(r.all().contains("the old worker keeps serving"), "{}", r.all());
    assert_eq!(pids(&pm2), before, "the old workers keep serving");
    let list = pm2.jlist();
    assert!(list
        .iter()
        .filter(|p| p["name"] == "hreload")
        .all(|p| status(p) == "online" && health(p) == "ready"));
    // The new workers were stopped, not left behind.
    let log = pm2.daemon_log();
    assert!(log.contains("(replaced by reload) exited"), "{log}");

    // Without the flag the reload succeeds and the pids change.
    std::fs::remove_file(tmp.path().join("unready-new")).expect("unflag");
    pm2.run(&["reload", "hreload"]).ok();
    let after = pids(&pm2);
    assert!(after.iter().all(|p| !before.contains(p)), "{before:?} -> {after:?}");

    // A restart (one worker at a time) waits for each new worker to be ready, and says so
    // when it never is; the processes run on, unready.
    std::fs::write(tmp.path().join("unready-new"), "").expect("flag");
    let r = pm2.run(&["restart", "hreload"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("is running but not ready yet (last readiness probe: HTTP 503)"), "{}", r.all());
    let list = pm2.jlist();
    assert!(list.iter().all(|p| status(p) == "online" && health(p) == "starting"), "{list:?}");
}

#[test]
fn liveness_failing_past_its_threshold_restarts_the_process() {
    let pm2 = Pm2::new();
    let tmp = tempfile::tempdir().expect("tmp");
    let dead = tmp.path().join("dead");
    let probe = json!({
        "exec": format!("test ! -f {}", dead.display()),
        "periodSeconds": 0.2,
        "failureThreshold": 2,
    })
    .to_string();
    pm2.run(&["start", "forever.js", "--name", "live", "--liveness", &probe]).ok();
    let first = pm2.wait_for("online", T, |l| l.iter().any(|p| status(p) == "online"));
    let pid0 = pid(&first[0]);
    assert_eq!(restarts(&first[0]), 0);
    std::fs::write(&dead, "").expect("flag");
    let l = pm2.wait_for("a liveness restart", T, |l| l.iter().any(|p| restarts(p) >= 1 && pid(p) != pid0));
    std::fs::remove_file(&dead).expect("unflag");
    assert!(restarts(&l[0]) >= 1);
    // The new run is probed from scratch.
    pm2.wait_for("the new run's first liveness result", T, |l| {
        l[0]["pm2_env"]["health"]["last"]["probe"] == "liveness"
            && l[0]["pm2_env"]["health"]["last"]["ok"] == true
    });
    let log = pm2.daemon_log();
    assert!(log.contains("liveness probe failed 2 times in a row (exit code 1): restarting"), "{log}");
    // Healthy again: no more restarts, and it is online.
    pm2.wait_for("online after the restart", T, |l| status(&l[0]) == "online");
    let desc = pm2.run(&["describe", "live"]);
    assert!(desc.stdout.contains("liveness probe"), "{}", desc.stdout);
}

#[test]
fn a_liveness_restart_waits_the_apps_restart_delay_like_a_crash() {
    // A probe that keeps failing (a dependency down) must not restart the
    // process in a tight loop: the restart policy paces it. The delay is long
    // so that the waiting state is certainly observed, however slow the poll.
    let pm2 = Pm2::new();
    let tmp = tempfile::tempdir().expect("tmp");
    let dead = tmp.path().join("dead");
    std::fs::write(&dead, "").expect("flag");
    let probe = json!({
        "exec": format!("test ! -f {}", dead.display()),
        "periodSeconds": 0.2,
        "failureThreshold": 2,
    })
    .to_string();
    pm2.run(&["start", "forever.js", "--name", "paced", "--liveness", &probe, "--restart-delay", "600000"])
        .ok();
    let l = pm2.wait_for("waiting restart after the liveness failure", T, |l| {
        l.iter().any(|p| status(p) == "waiting restart")
    });
    assert_eq!(pid(&l[0]), 0, "{l:?}");
    let log = pm2.daemon_log();
    assert!(log.contains("App [paced:0] will restart in 600000ms"), "{log}");
    // The dependency is back; a manual restart is not held back by the
    // waiting one, and the new run is healthy.
    std::fs::remove_file(&dead).expect("unflag");
    pm2.run(&["restart", "paced"]).ok();
    pm2.wait_for("online and live after the manual restart", T, |l| {
        status(&l[0]) == "online"
            && l[0]["pm2_env"]["health"]["last"]["probe"] == "liveness"
            && l[0]["pm2_env"]["health"]["last"]["ok"] == true
    });
}

#[test]
fn sd_notify_ready_from_a_helper_process_makes_the_app_ready() {
    let pm2 = Pm2::new();
    let r = pm2
        .cmd(&["start", "notify_app.js", "--name", "nt", "--notify", "--wait"])
        .env("NOTIFY_WHEN", "now")
        .output();
    let r = r.expect("pm2");
    assert!(
        r.status.success(),
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    let p = pm2.proc("nt").expect("nt");
    assert_eq!(health(&p), "ready");
    assert_eq!(p["pm2_env"]["health"]["notify_status"], "serving requests");
    // The socket is the daemon's own, owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(pm2.home().join("notify.sock")).expect("notify.sock").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn start_wait_fails_with_a_clear_message_when_the_app_never_gets_ready() {
    let pm2 = Pm2::new();
    let out = pm2
        .cmd(&["start", "notify_app.js", "--name", "never", "--notify", "--wait", "--wait-timeout", "3"])
        .env("NOTIFY_WHEN", "never")
        .output()
        .expect("pm2");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("App [never:0] is starting") && all.contains("not ready within 3s"), "{all}");
    // The app itself still runs; only --wait failed.
    assert_eq!(status(&pm2.proc("never").expect("never")), "online");
    // An app without health checks is ready when online.
    pm2.run(&["start", "forever.js", "--name", "plain", "--wait"]).ok();
}

#[test]
fn a_missed_watchdog_restarts_the_process() {
    let pm2 = Pm2::new();
    let tmp = tempfile::tempdir().expect("tmp");
    let stop = tmp.path().join("stop");
    let out = pm2
        .cmd(&["start", "notify_app.js", "--name", "wd", "--watchdog", "1500"])
        .env("NOTIFY_WHEN", "now")
        .env("NOTIFY_WATCHDOG", "1")
        .env("NOTIFY_STOP_FILE", &stop)
        .output()
        .expect("pm2");
    assert!(out.status.success());
    let p = pm2.wait_for("online", T, |l| l.iter().any(|p| status(p) == "online"));
    let pid0 = pid(&p[0]);
    // The app was given the interval (it prints its environment).
    let out_log = p[0]["pm2_env"]["pm_out_log_path"].as_str().expect("out log").to_string();
    poll("the app's first line", T, || {
        std::fs::read_to_string(&out_log).ok().filter(|s| s.contains("WATCHDOG_USEC=1500000"))
    });
    assert!(std::fs::read_to_string(&out_log).unwrap_or_default().contains("NOTIFY_SOCKET="));
    std::fs::write(&stop, "").expect("stop pings");
    pm2.wait_for("a watchdog restart", T, |l| l.iter().any(|p| restarts(p) >= 1 && pid(p) != pid0));
    assert!(pm2.daemon_log().contains("watchdog: no WATCHDOG=1 within 1500ms: restarting"));
}

#[test]
fn bad_probe_configs_are_clear_errors() {
    let pm2 = Pm2::new();
    let r = pm2.run(&["start", "forever.js", "--readiness", "ftp:21"]);
    assert_ne!(r.code, 0);
    assert!(r.all().contains("readiness_probe") && r.all().contains("expected http:/path"), "{}", r.all());
    let r = pm2.run(&["start", "forever.js", "--readiness", "http:/health"]);
    assert_ne!(r.code, 0);
    assert!(r.all().contains("no port"), "{}", r.all());
    let tmp = tempfile::tempdir().expect("tmp");
    let eco = tmp.path().join("bad.json");
    let script = fixtures().join("forever.js");
    std::fs::write(
        &eco,
        json!({"apps": [{"name": "b", "script": script, "liveness_probe": {"tcpSocket": {"port": 1}, "periodSeconds": 0}}]})
            .to_string(),
    )
    .expect("write");
    let r = pm2.run(&["start", eco.to_str().expect("utf8")]);
    assert_ne!(r.code, 0);
    assert!(
        r.all().contains("\"liveness_probe\": periodSeconds: expected a number of seconds above 0"),
        "{}",
        r.all()
    );
    assert!(pm2.jlist().is_empty(), "nothing started");
}

#[test]
fn readiness_changes_reach_pm2s_event_bus() {
    let pm2 = Pm2::new();
    let tmp = tempfile::tempdir().expect("tmp");
    let flag = tmp.path().join("unready");
    let probe = json!({ "exec": format!("test ! -f {}", flag.display()), "periodSeconds": 0.2, "failureThreshold": 1 })
        .to_string();
    pm2.run(&["start", "forever.js", "--name", "busy", "--readiness", &probe, "--wait"]).ok();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pm2api");
    if !dir.join("node_modules/pm2").is_dir() {
        let st = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).status();
        assert!(st.is_ok_and(|s| s.success()), "npm ci in {} failed", dir.display());
    }
    let mut bus = Command::new("node")
        .arg("health_bus.js")
        .arg("busy")
        .current_dir(&dir)
        .env("PM2_HOME", pm2.home())
        .env_remove("PM2_USAGE")
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut out = BufReader::new(bus.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "subscribed");
    std::fs::write(&flag, "").expect("flag");
    pm2.wait_for("unready", T, |l| l.iter().any(|p| health(p) == "unready"));
    std::fs::remove_file(&flag).expect("unflag");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("bus output");
    let st = bus.wait().expect("wait");
    assert!(
        st.success() && rest.contains("event unready unready") && rest.contains("event ready ready"),
        "{rest}"
    );
}

/// An in-place `pm2 update` keeps health where it was: ready workers stay
/// ready (they will not say `ready` again), their probes go on in the new
/// image and still take a worker out of rotation.
#[test]
fn health_survives_an_in_place_update() {
    let pm2 = sio_pm2();
    let tmp = tempfile::tempdir().expect("tmp");
    let eco = write_sio_ecosystem(tmp.path(), "hupd", two_ports(), tmp.path());
    pm2.run(&["start", &eco, "--wait"]).ok();
    let pids = |pm2: &Pm2| -> Vec<u64> {
        let mut v: Vec<u64> = pm2.jlist().iter().filter(|p| p["name"] == "hupd").map(pid).collect();
        v.sort();
        v
    };
    let before = pids(&pm2);
    assert_eq!(before.len(), 2);
    let new_bin = tmp.path().join("pm2-new");
    std::fs::copy(env!("CARGO_BIN_EXE_pm2"), &new_bin).expect("copy the binary");
    let r = pm2.run(&["update", "--binary", &new_bin.to_string_lossy()]);
    r.ok();
    assert!(r.all().contains("updated in place"), "{}", r.all());
    assert_eq!(pids(&pm2), before, "same workers");
    let list = pm2.jlist();
    assert!(list.iter().filter(|p| p["name"] == "hupd").all(|p| health(p) == "ready"), "{list:?}");
    // The probes run in the new image: a worker turning unready is seen.
    let a = before[0];
    std::fs::write(tmp.path().join(format!("unready-{a}")), "").expect("flag");
    pm2.wait_for("the worker unready after the update", T, |l| {
        l.iter().any(|p| pid(p) == a && health(p) == "unready")
    });
}
