//! `uid` / `gid`: apps really run as the user they ask for (the tests run as
//! root, as pm2's `--uid` requires), in fork and cluster mode, from the CLI,
//! an ecosystem file and a resurrected dump; refusals spawn nothing.

mod common;
use common::*;
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skips (with a note) where the test cannot mean anything: not root, or
/// no `nobody` user with id 65534.
fn runnable() -> bool {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let ok = is_root() && passwd.lines().any(|l| l.starts_with("nobody:x:65534:65534:"));
    if !ok {
        eprintln!("skipped: needs root and a nobody user 65534:65534");
    }
    ok
}

/// `(real, effective, saved, fs)` uids, the same for gids, and the
/// supplementary groups of a live process.
fn ids(pid: u64) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = |key: &str| -> Vec<u32> {
        st.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|r| r.split_whitespace().filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default()
    };
    (line("Uid:"), line("Gid:"), line("Groups:"))
}

fn assert_runs_as_nobody(pid: u64) {
    let (uid, gid, groups) = ids(pid);
    assert_eq!(uid, vec![NOBODY; 4], "Uid of pid {pid}");
    assert_eq!(gid, vec![NOBODY; 4], "Gid of pid {pid}");
    assert!(!groups.contains(&0), "pid {pid} kept root's group: {groups:?}");
}

fn environ(pid: u64, key: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|&b| b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(&format!("{key}=")).map(String::from)
    })
}

fn owner(path: &str) -> (u32, u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.uid(), m.gid())
}

fn online_pid(pm2: &Pm2, name: &str) -> Value {
    let list = pm2.wait_for(&format!("{name} online"), T, |l| {
        l.iter().any(|p| p["name"] == name && status(p) == "online" && pid(p) > 0)
    });
    list.into_iter().find(|p| p["name"] == name).unwrap_or_default()
}

#[test]
fn fork_app_runs_as_the_uid_with_its_primary_group_home_and_log_files() {
    if !runnable() {
        return;
    }
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js", "--name", "svc", "--uid", "nobody"]).ok();
    let p = online_pid(&pm2, "svc");
    assert_runs_as_nobody(pid(&p));
    // As pm2 shows them once resolved: numeric ids, the user's primary gid.
    assert_eq!(p["pm2_env"]["uid"], NOBODY);
    assert_eq!(p["pm2_env"]["gid"], NOBODY);
    assert_eq!(environ(pid(&p), "HOME").as_deref(), Some("/nonexistent"));
    assert_eq!(environ(pid(&p), "USER").as_deref(), Some("nobody"));
    for key in ["pm_out_log_path", "pm_err_log_path", "pm_pid_path"] {
        let path = p["pm2_env"][key].as_str().unwrap_or_default();
        assert_eq!(owner(path), (NOBODY, NOBODY), "{key} {path}");
    }
    // The app still logs through the daemon.
    let out = p["pm2_env"]["pm_out_log_path"].as_str().unwrap_or_default().to_string();
    poll("a tick in the out log", T, || std::fs::read_to_string(&out).ok().filter(|s| s.contains("tick")));
    let ls = pm2.run(&["ls"]);
    ls.ok();
    assert!(ls.stdout.contains("nobody"), "{}", ls.stdout);

    // A restart keeps the identity.
    let first = pid(&p);
    pm2.run(&["restart", "svc"]).ok();
    let list = pm2.wait_for("restarted", T, |l| l.iter().any(|p| status(p) == "online" && pid(p) != first));
    assert_runs_as_nobody(pid(&list[0]));
}

#[test]
fn cluster_worker_runs_as_the_uid_and_serves_through_the_daemons_listener() {
    if !runnable() {
        return;
    }
    let port = free_port();
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    pm2.envs.push(("PORT".into(), port.to_string()));
    pm2.run(&["start", "http_app.js", "-i", "2", "--name", "web", "--uid", "nobody", "--gid", "nogroup"])
        .ok();
    let list = pm2.wait_for("2 workers online", T, |l| {
        l.iter().filter(|p| p["name"] == "web" && status(p) == "online" && pid(p) > 0).count() == 2
    });
    for p in &list {
        assert_runs_as_nobody(pid(p));
    }
    let pids: Vec<u64> = list.iter().map(pid).collect();
    // `online` comes before the app's `listen()`: wait for the listener.
    poll("the app's port to answer", T, || http_get(port, "/").ok());
    for i in 0..6 {
        let v = http_get(port, "/").unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert!(pids.contains(&v["pid"].as_u64().unwrap_or(0)), "answered by {v}");
    }
    // A reload's replacement workers run as the uid too.
    pm2.run(&["reload", "web"]).ok();
    let list = pm2.wait_for("2 new workers", T, |l| {
        l.iter().filter(|p| status(p) == "online" && pid(p) > 0 && !pids.contains(&pid(p))).count() == 2
    });
    for p in &list {
        assert_runs_as_nobody(pid(p));
    }
    http_get(port, "/").unwrap_or_else(|e| panic!("request after reload failed: {e}"));
}

#[test]
fn ecosystem_uid_and_gid_by_number() {
    if !runnable() {
        return;
    }
    let pm2 = Pm2::new();
    let dir = tempfile::tempdir().unwrap();
    let eco = dir.path().join("ecosystem.json");
    let script = fixtures().join("forever.js");
    let app = serde_json::json!({"apps": [{"name": "num", "script": script, "uid": NOBODY, "gid": "65534"}]});
    std::fs::write(&eco, app.to_string()).unwrap();
    pm2.run(&["start", eco.to_str().unwrap()]).ok();
    let p = online_pid(&pm2, "num");
    assert_runs_as_nobody(pid(&p));
    assert_eq!(p["pm2_env"]["uid"], NOBODY);
    assert_eq!(p["pm2_env"]["gid"], NOBODY);
}

#[test]
fn unknown_user_or_group_is_refused_and_nothing_runs() {
    let pm2 = Pm2::new();
    let r = pm2.run(&["start", "forever.js", "--uid", "no-such-user-corral"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("User no-such-user-corral cannot be found"), "{}", r.all());
    let r = pm2.run(&["start", "forever.js", "--uid", "root", "--gid", "no-such-group-corral"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("Group no-such-group-corral cannot be found"), "{}", r.all());
    let r = pm2.run(&["start", "forever.js", "--gid", "0"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("without a uid"), "{}", r.all());
    assert!(pm2.jlist().is_empty(), "{:?}", pm2.jlist());
}

#[test]
fn uid_survives_save_kill_resurrect() {
    if !runnable() {
        return;
    }
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js", "--name", "svc", "--uid", "nobody"]).ok();
    online_pid(&pm2, "svc");
    pm2.run(&["save"]).ok();
    let dump: Value = serde_json::from_slice(&std::fs::read(pm2.home().join("dump.pm2")).unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(dump[0]["uid"], NOBODY, "{dump}");
    assert_eq!(dump[0]["gid"], NOBODY, "{dump}");
    pm2.run(&["kill"]).ok();
    pm2.run(&["resurrect"]).ok();
    let p = online_pid(&pm2, "svc");
    assert_runs_as_nobody(pid(&p));
    assert_eq!(p["pm2_env"]["uid"], NOBODY);
}

#[test]
fn a_daemon_that_is_not_root_refuses_another_uid_and_runs_its_own() {
    if !runnable() {
        return;
    }
    let pm2 = Pm2::new();
    // The daemon (auto-started by the CLI) runs as nobody in a home it owns.
    std::os::unix::fs::chown(pm2.home(), Some(NOBODY), Some(NOBODY)).unwrap();
    let as_nobody = |args: &[&str]| {
        let out = pm2.cmd(args).uid(NOBODY).gid(NOBODY).output().expect("spawn pm2");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let r = as_nobody(&["start", "forever.js", "--name", "root-app", "--uid", "root"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("please run pm2 as root"), "{}", r.all());
    // Asking for its own identity is no switch at all, and is allowed.
    as_nobody(&["start", "forever.js", "--name", "own", "--uid", "nobody"]).ok();
    let p = online_pid(&pm2, "own");
    assert_runs_as_nobody(pid(&p));
    let list = pm2.jlist();
    assert_eq!(list.len(), 1, "{list:?}");
}
