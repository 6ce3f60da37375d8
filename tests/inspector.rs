//! `pm2 inspect`, `pm2 profile:cpu` / `profile:mem` (through Node's
//! inspector, opened with SIGUSR1) and `pm2 slist`, on real node apps in
//! fork and cluster mode.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
/// Node opens its inspector on 9229 unless told otherwise; tests run side by
/// side, so each app asks for a free port of its own (0).
const ANY_PORT: &str = "--node-args=--inspect-port=0";

fn profiles(dir: &std::path::Path, ext: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(ext) {
            out.push(serde_json::from_slice(&std::fs::read(e.path()).unwrap()).expect("profile is JSON"));
        }
    }
    out
}

#[test]
fn profiles_fork_and_cluster_apps_and_leaves_no_inspector_open() {
    let mut pm2 = Pm2::new();
    let out = tempfile::tempdir().unwrap();
    pm2.cwd = out.path().to_path_buf();
    let script = fixtures().join("forever.js");
    let script = script.to_str().unwrap();
    pm2.run(&["start", script, "--name", "f", ANY_PORT]).ok();
    pm2.run(&["start", script, "--name", "c", "-i", "2", ANY_PORT]).ok();
    let list = pm2.wait_for("3 online", T, |l| l.len() == 3 && l.iter().all(|p| status(p) == "online"));

    let r = pm2.run(&["profile:cpu", "f", "300"]);
    r.ok();
    assert!(r.stdout.contains("Starting profileCPU profiling of f (id 0"), "{}", r.all());
    assert!(r.stdout.contains("Profile done in "), "{}", r.all());
    let cpu = profiles(out.path(), ".cpuprofile");
    assert_eq!(cpu.len(), 1);
    for k in ["nodes", "startTime", "endTime", "samples", "timeDeltas"] {
        assert!(cpu[0].get(k).is_some(), "cpuprofile lacks {k}");
    }

    // Both workers of the cluster app, one after the other on node's port.
    let r = pm2.run(&["profile:mem", "c", "300"]);
    r.ok();
    let mem = profiles(out.path(), ".heapprofile");
    assert_eq!(mem.len(), 2, "{}", r.all());
    for m in &mem {
        assert!(m.get("head").is_some() && m.get("samples").is_some(), "heapprofile: {m}");
    }

    // The apps kept running (same pids) and no inspector was left open.
    let after = pm2.jlist();
    for (a, b) in list.iter().zip(after.iter()) {
        assert_eq!(pid(a), pid(b));
        assert_eq!(status(b), "online");
        let r = pm2.run(&["inspect", b["pm_id"].to_string().as_str()]);
        r.ok();
        assert!(r.stdout.contains("Inspect enabled on"), "{}", r.all());
        let r = pm2.run(&["inspect", b["pm_id"].to_string().as_str()]);
        r.ok();
        assert!(r.stdout.contains("Inspect disabled on"), "{}", r.all());
    }

    // pm2's form profiles its own daemon: Corral says why it cannot.
    let r = pm2.run(&["profile:cpu", "100"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not a Node.js process"), "{}", r.all());
}

#[test]
fn inspect_opens_a_debugger_and_refuses_non_node_apps() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "forever.js", "--name", "f", ANY_PORT]).ok();
    pm2.run(&["start", "/bin/sleep", "--name", "s", "--", "1000"]).ok();
    // An app whose inspector port another process holds.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let node_args = format!("--node-args=--inspect-port={held_port}");
    pm2.run(&["start", "forever.js", "--name", "busy", &node_args]).ok();
    pm2.wait_for("all online", T, |l| l.len() == 3 && l.iter().all(|p| status(p) == "online"));
    let r = pm2.run(&["inspect", "busy"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains(&format!("port {held_port} is already in use")), "{}", r.all());
    drop(held);
    let r = pm2.run(&["inspect", "f"]);
    r.ok();
    let url = r.stdout.split("ws://").nth(1).unwrap_or_else(|| panic!("{}", r.all()));
    let port: u16 = url.split(['/', ':']).nth(1).unwrap().parse().unwrap();
    let listening = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(listening(), "nothing listens on the inspector's port {port}");
    let r = pm2.run(&["inspect", "f"]);
    r.ok();
    assert!(r.stdout.contains("Inspect disabled on f"), "{}", r.all());
    assert!(!listening(), "the inspector is still open");

    let r = pm2.run(&["profile:cpu", "s", "100"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not a Node.js process"), "{}", r.all());
    let r = pm2.run(&["inspect", "nope"]);
    assert_eq!(r.code, 1);
}

#[test]
fn slist_prints_host_metrics() {
    let pm2 = Pm2::new();
    let r = pm2.run(&["slist"]);
    r.ok();
    for k in ["'CPU Usage'", "'RAM Total'", "'Disk Reads'", "type: 'metric'"] {
        assert!(r.stdout.contains(k), "slist lacks {k}: {}", r.stdout);
    }
    let r = pm2.run(&["sysinfos", "--tree"]);
    r.ok();
    assert!(r.stdout.contains("├─ CPU Usage\n│  ├─ value: "), "{}", r.stdout);
}
