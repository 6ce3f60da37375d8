//! Fork mode end to end: the real binary, real child processes.

mod common;
use common::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(15);

#[test]
fn lifecycle_start_list_stop_restart_delete() {
    let pm2 = Pm2::new();
    let r = pm2.run(&["start", "forever.js", "--name", "svc"]);
    r.ok();
    assert!(r.stdout.contains("[PM2] Starting "), "{}", r.stdout);
    let list = pm2.wait_for("online", T, |l| l.iter().any(|p| p["name"] == "svc" && status(p) == "online"));
    let p = &list[0];
    assert_eq!(p["pm_id"], 0);
    assert!(pid(p) > 0);
    assert_eq!(p["pm2_env"]["exec_mode"], "fork_mode");
    assert!(p["pm2_env"]["pm_uptime"].as_u64().unwrap() > 0);
    assert!(p["monit"]["memory"].is_u64());

    let ls = pm2.run(&["ls"]);
    ls.ok();
    assert!(ls.stdout.contains("svc") && ls.stdout.contains("online"), "{}", ls.stdout);

    let first_pid = pid(p);
    pm2.run(&["restart", "svc"]).ok();
    let list =
        pm2.wait_for("restarted", T, |l| l.iter().any(|p| status(p) == "online" && pid(p) != first_pid));
    assert_eq!(restarts(&list[0]), 1);
    assert!(!pid_alive(first_pid as i32));

    let r = pm2.run(&["stop", "svc"]);
    r.ok();
    let p = pm2.proc("svc").unwrap();
    assert_eq!(status(&p), "stopped");
    assert_eq!(pid(&p), 0);

    pm2.run(&["delete", "svc"]).ok();
    assert!(pm2.jlist().is_empty());
    // Ids restart at 0 once the table is empty.
    pm2.run(&["start", "forever.js"]).ok();
    assert_eq!(pm2.jlist()[0]["pm_id"], 0);
}

#[test]
fn crash_restarts_with_a_new_pid() {
    let mut pm2 = Pm2::new();
    pm2.envs.push(("CRASH_AFTER_MS".into(), "1500".into()));
    pm2.run(&["start", "crash.js"]).ok();
    let first = pm2.wait_for("online", T, |l| l.first().is_some_and(|p| pid(p) > 0));
    let first_pid = pid(&first[0]);
    let list = pm2.wait_for("a restart", T, |l| l.first().is_some_and(|p| restarts(p) >= 1 && pid(p) > 0));
    assert_ne!(pid(&list[0]), first_pid);
    assert_eq!(list[0]["pm2_env"]["exit_code"], 1);
}

#[test]
fn crash_loop_ends_errored() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "crash.js", "--max-restarts", "3"]).ok();
    let list = pm2.wait_for("errored", T, |l| l.first().is_some_and(|p| status(p) == "errored"));
    assert_eq!(pid(&list[0]), 0);
    assert!(pm2.daemon_log().contains("had too many unstable restarts"), "{}", pm2.daemon_log());
}

#[test]
fn autorestart_false_leaves_it_stopped() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "crash.js", "--no-autorestart"]).ok();
    let list = pm2.wait_for("stopped", T, |l| l.first().is_some_and(|p| status(p) == "stopped"));
    assert_eq!(restarts(&list[0]), 0);
}

#[test]
fn kill_timeout_is_honoured_for_a_process_ignoring_sigint() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "stubborn.js", "--kill-timeout", "700"]).ok();
    let list = pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    let p = pid(&list[0]) as i32;
    // The app must have installed its handler before we stop it.
    poll("stubborn up in the log", T, || {
        let path = list[0]["pm2_env"]["pm_out_log_path"].as_str()?.to_string();
        std::fs::read_to_string(path).ok().filter(|s| s.contains("stubborn up"))
    });
    let t0 = Instant::now();
    pm2.run(&["stop", "stubborn"]).ok();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(650), "stop returned after {took:?}, before kill_timeout");
    assert!(!pid_alive(p));
    assert!(pm2.daemon_log().contains("still alive after 700ms"), "{}", pm2.daemon_log());
}

#[test]
fn graceful_stop_reaches_the_sigint_handler() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "graceful.js"]).ok();
    let list = pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    let log = list[0]["pm2_env"]["pm_out_log_path"].as_str().unwrap().to_string();
    poll("app up", T, || std::fs::read_to_string(&log).ok().filter(|s| s.contains("graceful up")));
    pm2.run(&["stop", "graceful"]).ok();
    poll("shutdown line", T, || {
        std::fs::read_to_string(&log).ok().filter(|s| s.contains("graceful shutdown"))
    });
}

#[test]
fn grandchildren_do_not_survive_a_stop() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "spawner.sh"]).ok();
    let list = pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    let log = list[0]["pm2_env"]["pm_out_log_path"].as_str().unwrap().to_string();
    let gc: i32 = poll("grandchild pid", T, || {
        let s = std::fs::read_to_string(&log).ok()?;
        s.lines().find_map(|l| l.strip_prefix("grandchild ")).and_then(|p| p.trim().parse().ok())
    });
    assert!(pid_alive(gc));
    pm2.run(&["stop", "spawner"]).ok();
    poll("grandchild gone", T, || (!pid_alive(gc)).then_some(()));
}

#[test]
fn logs_are_written_and_flushed() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js"]).ok();
    let list = pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    let out = list[0]["pm2_env"]["pm_out_log_path"].as_str().unwrap().to_string();
    assert!(out.ends_with("logs/forever-out.log"), "{out}");
    poll("ticks", T, || std::fs::read_to_string(&out).ok().filter(|s| s.contains("tick 2")));
    let r = pm2.run(&["logs", "forever", "--nostream", "--lines", "5"]);
    r.ok();
    assert!(r.stdout.contains("tick"), "{}", r.stdout);
    pm2.run(&["flush"]).ok();
    let len = std::fs::metadata(&out).unwrap().len();
    assert!(len < 200, "flush left {len} bytes");
    // The app keeps writing into the truncated file.
    poll("ticks after flush", T, || std::fs::read_to_string(&out).ok().filter(|s| s.contains("tick")));
}

#[test]
fn logs_stream_follows_new_output() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js"]).ok();
    pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    let mut child = pm2
        .cmd(&["logs", "--raw", "--lines", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn logs");
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut acc = String::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            acc.push_str(&String::from_utf8_lossy(&buf[..n]));
            if acc.matches("tick").count() >= 3 {
                let _ = tx.send(acc.clone());
                break;
            }
        }
    });
    let got = rx.recv_timeout(T);
    let _ = child.kill();
    let _ = child.wait();
    assert!(got.is_ok(), "no streamed ticks");
}

#[test]
fn injected_env() {
    let mut pm2 = Pm2::new();
    pm2.envs.push(("MY_VAR".into(), "from-shell".into()));
    pm2.run(&["start", "env.js", "--name", "envy"]).ok();
    let list = pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    let out = list[0]["pm2_env"]["pm_out_log_path"].as_str().unwrap().to_string();
    let line = poll("env line", T, || {
        std::fs::read_to_string(&out).ok()?.lines().find_map(|l| l.strip_prefix("ENV ").map(String::from))
    });
    let env: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(env["pm_id"], "0");
    assert_eq!(env["name"], "envy");
    assert_eq!(env["NODE_APP_INSTANCE"], "0");
    assert_eq!(env["MY_VAR"], "from-shell");
    assert_eq!(env["PM2_HOME"], pm2.home().to_str().unwrap());
    assert!(env["pm_exec_path"].as_str().unwrap().ends_with("env.js"));
    assert_eq!(env["unique_id"].as_str().unwrap().len(), 36);
}

#[test]
fn save_kill_resurrect_round_trip() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js", "--name", "a", "--namespace", "ns1"]).ok();
    pm2.run(&["start", "env.js", "--name", "b"]).ok();
    pm2.wait_for("both online", T, |l| l.len() == 2 && l.iter().all(|p| status(p) == "online"));
    pm2.run(&["save"]).ok();
    let dump = pm2.home().join("dump.pm2");
    let saved: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&dump).unwrap()).unwrap();
    assert_eq!(saved.len(), 2);
    pm2.run(&["kill"]).ok();
    pm2.run(&["resurrect"]).ok();
    let list = pm2.wait_for("resurrected", T, |l| l.len() == 2 && l.iter().all(|p| status(p) == "online"));
    let a = list.iter().find(|p| p["name"] == "a").unwrap();
    assert_eq!(a["pm2_env"]["namespace"], "ns1");
    // A second save keeps the previous dump as .bak.
    pm2.run(&["save"]).ok();
    assert!(pm2.home().join("dump.pm2.bak").exists());
}

#[test]
fn empty_save_never_destroys_a_good_dump() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js"]).ok();
    pm2.run(&["save"]).ok();
    let before = std::fs::read(pm2.home().join("dump.pm2")).unwrap();
    pm2.run(&["delete", "all"]).ok();
    pm2.run(&["save"]);
    assert_eq!(std::fs::read(pm2.home().join("dump.pm2")).unwrap(), before);
}

#[test]
fn bad_input_is_a_clear_error_and_non_zero_exit() {
    let pm2 = Pm2::new();
    let r = pm2.run(&["start", "does-not-exist.js"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("[PM2][ERROR] Script not found"), "{}", r.all());

    let r = pm2.run(&["stop", "nope"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("[PM2][ERROR] Process or Namespace nope not found"), "{}", r.all());

    let r = pm2.run(&["stop", "42"]);
    assert_eq!(r.code, 1);

    let r = pm2.run(&["start", "forever.js", "--no-such-flag"]);
    assert_eq!(r.code, 1);
    assert!(r.all().contains("unknown option"), "{}", r.all());

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.config.js");
    std::fs::write(&bad, "module.exports = { apps: [ { script: 'x.js', instances: {} } ] }").unwrap();
    let r = pm2.run(&["start", bad.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.all());
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{ apps: [ ").unwrap();
    let r = pm2.run(&["start", broken.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("malformated") || r.all().contains("broken.json"), "{}", r.all());

    // The daemon survived all of it.
    assert!(pm2.jlist().is_empty());
}

#[test]
fn garbage_on_the_control_socket_does_not_hurt_the_daemon() {
    use std::io::{Read, Write};
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js"]).ok();
    let sock = pm2.home().join("corral.sock");
    for payload in [&b"\xff\xff\xff\xffjunk"[..], b"\x00\x00\x00\x03abc", b"GET / HTTP/1.1\r\n\r\n", b""] {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(payload);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let list = pm2.jlist();
    assert_eq!(list.len(), 1);
    assert_eq!(status(&list[0]), "online");
}

#[test]
fn socket_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let pm2 = Pm2::new();
    pm2.run(&["ping"]).ok();
    for sock in ["corral.sock", "rpc.sock", "pub.sock"] {
        let mode = std::fs::metadata(pm2.home().join(sock)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{sock} mode {mode:o}");
    }
    assert!(pm2.home().join("pm2.pid").exists());
}

#[test]
fn ecosystem_file_starts_every_app() {
    let pm2 = Pm2::new();
    let dir = tempfile::tempdir().unwrap();
    let eco = dir.path().join("ecosystem.config.js");
    let fx = fixtures();
    std::fs::write(
        &eco,
        format!(
            "module.exports = {{ apps: [ {{ name: 'one', script: '{0}/forever.js', env: {{ MY_VAR: 'x' }} }}, {{ name: 'two', script: '{0}/env.js', instances: 2, exec_mode: 'fork' }} ] }}",
            fx.display()
        ),
    )
    .unwrap();
    pm2.run(&["start", eco.to_str().unwrap()]).ok();
    let list = pm2.wait_for("three online", T, |l| l.len() == 3 && l.iter().all(|p| status(p) == "online"));
    let two: Vec<_> = list.iter().filter(|p| p["name"] == "two").collect();
    assert_eq!(two.len(), 2);
    // Non-merged instance logs get the -<id> suffix.
    assert!(two[0]["pm2_env"]["pm_out_log_path"].as_str().unwrap().contains("two-out-"));
}

#[test]
fn wait_ready_holds_start_until_the_app_sends_ready() {
    let mut pm2 = Pm2::new();
    pm2.envs.push(("READY_AFTER_MS".into(), "800".into()));
    let t0 = Instant::now();
    pm2.run(&["start", "ready.js", "--wait-ready", "--listen-timeout", "10000"]).ok();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(700), "start returned after {took:?}, before ready");
    assert!(took < Duration::from_secs(8), "start waited for listen_timeout instead of ready: {took:?}");
    assert_eq!(status(&pm2.jlist()[0]), "online");
}

#[test]
fn listen_timeout_bounds_wait_ready() {
    let mut pm2 = Pm2::new();
    pm2.envs.push(("READY_AFTER_MS".into(), "600000".into()));
    let t0 = Instant::now();
    pm2.run(&["start", "ready.js", "--wait-ready", "--listen-timeout", "700"]).ok();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(600) && took < Duration::from_secs(8), "{took:?}");
    assert_eq!(status(&pm2.jlist()[0]), "online");
}

#[test]
fn max_memory_restart_restarts_a_process_over_its_limit() {
    let mut pm2 = Pm2::new();
    pm2.envs.push(("PM2_WORKER_INTERVAL".into(), "300".into()));
    pm2.run(&["start", "hog.js", "--max-memory-restart", "100M"]).ok();
    pm2.wait_for("a memory restart", T, |l| l.first().is_some_and(|p| restarts(p) >= 1));
    assert!(pm2.daemon_log().contains("exceeds --max-memory-restart"), "{}", pm2.daemon_log());
}

#[test]
fn time_prefixes_every_line_and_merged_instances_share_one_file() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js", "--time", "-i", "2", "--merge-logs", "-x"]).ok();
    let list = pm2.wait_for("online", T, |l| l.len() == 2 && l.iter().all(|p| status(p) == "online"));
    let out = list[0]["pm2_env"]["pm_out_log_path"].as_str().unwrap().to_string();
    assert_eq!(list[1]["pm2_env"]["pm_out_log_path"].as_str().unwrap(), out);
    let text = poll("ticks from both", T, || {
        std::fs::read_to_string(&out).ok().filter(|s| s.matches("forever started").count() >= 2)
    });
    for line in text.lines().filter(|l| !l.is_empty()) {
        // YYYY-MM-DDTHH:mm:ss: <line>
        let (ts, _) = line.split_at(21);
        assert!(ts.ends_with(": ") && ts.as_bytes()[4] == b'-' && ts.as_bytes()[10] == b'T', "{line}");
    }
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let pm2 = Pm2::new();
    // A socket file nobody listens on, as a crashed daemon leaves behind.
    for sock in ["corral.sock", "rpc.sock", "pub.sock"] {
        let path = pm2.home().join(sock);
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
    }
    let t0 = Instant::now();
    pm2.run(&["ping"]).ok();
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_unwritable_pm2_home_is_a_clear_error_not_a_hang() {
    let mut pm2 = Pm2::new();
    let blocker = pm2.home().join("not-a-dir");
    std::fs::write(&blocker, "a file where PM2_HOME should be a directory").unwrap();
    pm2.envs.push(("PM2_HOME".into(), blocker.join("home").to_string_lossy().into_owned()));
    let t0 = Instant::now();
    let r = pm2.run(&["ls"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("[PM2][ERROR]"), "{}", r.all());
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn watch_restarts_on_a_change_and_ignores_node_modules() {
    let mut pm2 = Pm2::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures().join("forever.js"), dir.path().join("app.js")).unwrap();
    std::fs::create_dir(dir.path().join("node_modules")).unwrap();
    pm2.cwd = dir.path().to_path_buf();
    pm2.run(&["start", "app.js", "--watch"]).ok();
    let l = pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    assert_eq!(l[0]["pm2_env"]["watch"], true);
    let first = pid(&l[0]);
    // A change under node_modules is ignored by pm2's default rule...
    std::fs::write(dir.path().join("node_modules/dep.js"), "x").unwrap();
    // ...a change to the app's own files restarts it.
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    pm2.wait_for("a watch restart", T, |l| {
        l.first().is_some_and(|p| pid(p) != first && status(p) == "online")
    });
    assert!(
        pm2.daemon_log().contains("Change detected on path config.json for app app - restarting"),
        "{}",
        pm2.daemon_log()
    );
    assert!(!pm2.daemon_log().contains("node_modules/dep.js"), "{}", pm2.daemon_log());
}

#[test]
fn cron_restart_restarts_on_schedule() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js", "--cron-restart", "*/1 * * * * *"]).ok();
    let l = pm2.wait_for("online", T, |l| l.first().is_some_and(|p| status(p) == "online"));
    let first = pid(&l[0]);
    pm2.wait_for("a cron restart", T, |l| l.first().is_some_and(|p| restarts(p) >= 1 && pid(p) != first));
}

/// After kill -9 of the daemon, the next command starts a new daemon that
/// brings back the saved list (and stops the orphans the dead one left, so
/// nothing runs twice), and says so.
#[test]
fn the_next_command_after_a_daemon_crash_restores_the_saved_list() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "silent.js", "--name", "quiet"]).ok();
    let before = pm2.wait_for("online", T, |l| l.len() == 1 && status(&l[0]) == "online");
    let orphan = pid(&before[0]) as i32;
    pm2.run(&["save"]).ok();
    let daemon: i32 = std::fs::read_to_string(pm2.home().join("pm2.pid")).unwrap().trim().parse().unwrap();
    // SAFETY: SIGKILL to the test's own daemon.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    poll("daemon gone", T, || (!pid_alive(daemon)).then_some(()));
    // The app does not write, so it outlives its daemon.
    assert!(pid_alive(orphan), "the fork app should have outlived its daemon");

    let r = pm2.run(&["ls"]);
    r.ok();
    assert!(r.all().contains("died without stopping its apps"), "{}", r.all());
    let list = pm2.wait_for("restored", T, |l| l.len() == 1 && status(&l[0]) == "online");
    assert_ne!(pid(&list[0]) as i32, orphan);
    poll("orphan stopped", T, || (!pid_alive(orphan)).then_some(()));

    // A clean stop is not a crash: nothing is restored behind the user's back.
    pm2.run(&["kill"]).ok();
    let r = pm2.run(&["ls"]);
    assert!(!r.all().contains("died without"), "{}", r.all());
    assert!(pm2.jlist().is_empty());
}

/// `pm2 set pm2:autodump true` keeps dump.pm2 equal to the list after every
/// change, without `pm2 save`.
#[test]
fn autodump_keeps_the_saved_list_current() {
    let pm2 = Pm2::new();
    pm2.run(&["set", "pm2:autodump", "true"]).ok();
    pm2.run(&["start", "silent.js", "--name", "one"]).ok();
    pm2.run(&["start", "silent.js", "--name", "two"]).ok();
    let names = |pm2: &Pm2| -> Vec<String> {
        let text = std::fs::read(pm2.home().join("dump.pm2")).unwrap_or_default();
        let v: Vec<serde_json::Value> = serde_json::from_slice(&text).unwrap_or_default();
        v.iter().filter_map(|e| e["name"].as_str().map(String::from)).collect()
    };
    assert_eq!(names(&pm2), ["one", "two"]);
    pm2.run(&["delete", "one"]).ok();
    assert_eq!(names(&pm2), ["two"]);
    let daemon: i32 = std::fs::read_to_string(pm2.home().join("pm2.pid")).unwrap().trim().parse().unwrap();
    // SAFETY: SIGKILL to the test's own daemon.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    poll("daemon gone", T, || (!pid_alive(daemon)).then_some(()));
    pm2.run(&["ls"]).ok();
    pm2.wait_for("two restored", T, |l| l.len() == 1 && l[0]["name"] == "two" && status(&l[0]) == "online");
}
