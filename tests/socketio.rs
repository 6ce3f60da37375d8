//! Socket.IO cluster end to end: the real daemon as sticky balancer and
//! adapter relay, real socket.io / socket.io-client / @socket.io/sticky /
//! @socket.io/cluster-adapter from tests/node (npm ci), two workers.

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

fn sticky_port(pm2: &Pm2) -> u16 {
    pm2.envs.iter().find(|(k, _)| k == "PM2_PORT").and_then(|(_, v)| v.parse().ok()).expect("PM2_PORT")
}

fn sio_pm2(extra_env: &[(&str, &str)]) -> Pm2 {
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    for (k, v) in extra_env {
        pm2.envs.push((k.to_string(), v.to_string()));
    }
    pm2
}

/// Starts the socket.io fixture in 2 workers and waits until both speak
/// Socket.IO (a sticky request would otherwise wait for readiness).
fn start_sio(pm2: &Pm2, name: &str) {
    pm2.run(&["start", "sio_worker.js", "-i", "2", "--name", name]).ok();
    pm2.wait_for("2 online workers", T, |l| {
        l.iter().filter(|p| p["name"] == name && status(p) == "online").count() == 2
    });
}

fn scenario(port: u16, name: &str, n: Option<usize>, env: &[(&str, &str)]) -> Value {
    let mut c = Command::new("node");
    c.arg("sio_client.js").arg(name).arg(port.to_string()).current_dir(node_dir());
    if let Some(n) = n {
        c.arg(n.to_string());
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("scenario {name}: not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    })
}

fn assert_ok(v: &Value) {
    assert_eq!(v["ok"], true, "scenario failed: {v}");
}

fn all_scenarios(pm2: &Pm2) {
    let port = sticky_port(pm2);
    for s in ["default", "polling", "websocket", "broadcast", "rooms", "acks", "fetch", "sse", "http"] {
        let v = scenario(port, s, None, &[]);
        assert_ok(&v);
        if v.get("workers").is_some() {
            assert_eq!(v["workers"], 2, "{s}: clients should land on both workers: {v}");
        }
    }
}

/// An app on `@socket.io/sticky` without the cluster adapter (e.g. on the
/// Redis adapter) tells the daemon nothing until its first session: with
/// `sticky: true` its workers take sessions once online, and with pm2's
/// `wait_ready` once they say so.
#[test]
fn a_sticky_app_without_the_cluster_adapter_gets_sessions() {
    let pm2 = sio_pm2(&[("NO_ADAPTER", "1")]);
    pm2.run(&["start", "sio_worker.js", "-i", "2", "--name", "plain", "--sticky"]).ok();
    pm2.wait_for("2 online workers", T, |l| {
        l.iter().filter(|p| p["name"] == "plain" && status(p) == "online").count() == 2
    });
    let port = sticky_port(&pm2);
    for s in ["polling", "websocket"] {
        assert_ok(&scenario(port, s, None, &[]));
    }
    pm2.run(&["delete", "all"]).ok();

    let pm2 = sio_pm2(&[("NO_ADAPTER", "1"), ("SEND_READY", "1")]);
    pm2.run(&["start", "sio_worker.js", "-i", "2", "--name", "ready", "--sticky", "--wait-ready"]).ok();
    pm2.wait_for("2 online workers", T, |l| {
        l.iter().filter(|p| p["name"] == "ready" && status(p) == "online").count() == 2
    });
    assert_ok(&scenario(sticky_port(&pm2), "polling", None, &[]));
}

#[test]
fn every_feature_across_two_workers_sticky_2() {
    let pm2 = sio_pm2(&[]);
    start_sio(&pm2, "sio");
    all_scenarios(&pm2);
}

#[test]
fn every_feature_across_two_workers_sticky_1() {
    let pm2 = sio_pm2(&[("STICKY_VERSION", "1")]);
    start_sio(&pm2, "sio1");
    all_scenarios(&pm2);
}

#[test]
fn a_burst_of_connects_spreads_over_both_workers() {
    let pm2 = sio_pm2(&[]);
    start_sio(&pm2, "burst");
    let v = scenario(sticky_port(&pm2), "burst", Some(50), &[]);
    assert_ok(&v);
    assert_eq!(v["connected"], 50);
    // How even the spread is depends on timing; bench/ measures it. That
    // both workers get some is the rule.
    assert_eq!(v["workers"], 2, "{v}");
    eprintln!("burst spread: max - min = {}", v["maxMinusMin"]);
}

#[test]
fn kill_9_of_a_worker_is_announced_to_the_survivor_at_once() {
    // The workers' adapter would notice the dead peer only after 120 s of
    // silence; the client watches for 60 s. A drop seen in that window is
    // the daemon's adapter close, and fetchSockets never timing out (5 s)
    // meanwhile shows it is not left waiting for the dead worker.
    let pm2 = sio_pm2(&[("SIO_HEARTBEAT_TIMEOUT_MS", "120000")]);
    start_sio(&pm2, "exit");
    let v = scenario(sticky_port(&pm2), "exit", None, &[("SIO_EXIT_WINDOW_MS", "60000")]);
    assert_ok(&v);
    assert!(v["serverCountDropMs"].is_u64(), "{v}");
    eprintln!(
        "serverCount dropped after {} ms; slowest fetchSockets {} ms",
        v["serverCountDropMs"], v["maxFetchMs"]
    );
    // The killed worker is restarted and serves again.
    pm2.wait_for("restart", T, |l| l.iter().any(|p| restarts(p) >= 1 && status(p) == "online"));
}

#[test]
fn reload_under_load_fails_no_new_session() {
    let pm2 = sio_pm2(&[]);
    start_sio(&pm2, "rl");
    let port = sticky_port(&pm2);
    let before: Vec<u64> = pm2.jlist().iter().map(pid).collect();
    let dir = tempfile::tempdir().unwrap();
    let progress = dir.path().join("progress");
    let stop = dir.path().join("stop");
    let env = [
        ("SIO_LOAD_MS".to_string(), "120000".to_string()),
        ("SIO_CONCURRENCY".into(), "8".into()),
        ("SIO_PROGRESS_FILE".into(), progress.to_string_lossy().into_owned()),
        ("SIO_STOP_FILE".into(), stop.to_string_lossy().into_owned()),
    ];
    let load = std::thread::spawn(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        scenario(port, "load", Some(100_000), &env)
    });
    let completed = || std::fs::read_to_string(&progress).ok().and_then(|s| s.trim().parse::<u64>().ok());
    // Sessions complete before the reload starts...
    poll("the load to complete a session", T, || completed().filter(|&n| n > 0));
    let t0 = Instant::now();
    pm2.run(&["reload", "rl"]).ok();
    let took = t0.elapsed();
    // ...and after it ended (on the new workers), then the load stops.
    let at_reload = completed().unwrap_or(0);
    poll("sessions after the reload", T, || completed().filter(|&n| n >= at_reload + 16));
    std::fs::write(&stop, "").unwrap();
    let v = load.join().unwrap();
    assert_eq!(v["failures"], 0, "{v}");
    let after: Vec<u64> = pm2.jlist().iter().map(pid).collect();
    assert!(before.iter().all(|p| !after.contains(p)), "every worker replaced: {before:?} -> {after:?}");
    let served: Vec<u64> = v["spread"]
        .as_object()
        .map(|o| o.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default();
    assert!(served.iter().any(|p| before.contains(p)), "sessions on the old workers: {v}");
    assert!(served.iter().any(|p| after.contains(p)), "sessions on the new workers: {v}");
    eprintln!("reload of 2 socket.io workers took {took:?}; load: {v}");
}

#[test]
fn the_seed_app_runs_unchanged() {
    let mut pm2 = Pm2::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/socketio");
    pm2.cwd = dir.clone();
    let r = pm2.run(&["start", "ecosystem.config.js"]);
    r.ok();
    let n =
        pm2.wait_for("workers online", T, |l| !l.is_empty() && l.iter().all(|p| status(p) == "online")).len();
    assert!(n >= 1);
    assert_eq!(pm2.jlist()[0]["pm2_env"]["exec_mode"], "cluster_mode");
    let out = Command::new("node")
        .arg("client.js")
        .arg("10")
        .env("PORT", sticky_port(&pm2).to_string())
        .current_dir(&dir)
        .output()
        .expect("node client.js");
    assert!(
        out.status.success(),
        "client.js failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn raw(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn bad_http_gets_well_formed_errors_and_the_daemon_carries_on() {
    let pm2 = sio_pm2(&[("PM2_STICKY_BODY_TIMEOUT_MS", "500"), ("PM2_STICKY_HEAD_TIMEOUT_MS", "500")]);
    start_sio(&pm2, "bad");
    let port = sticky_port(&pm2);
    // Both workers must be Socket.IO-ready before routing; one session does it.
    assert_ok(&scenario(port, "default", Some(2), &[]));

    let r = raw(port, b"\x16\x03\x01garbage that is not http\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    assert!(r.contains("Content-Length: 0"), "{r}");

    let mut big = b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let r = raw(port, &big);
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");

    let r =
        raw(port, b"POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: 2000000\r\n\r\nxx");
    assert!(r.starts_with("HTTP/1.1 413 "), "{r}");

    // A lying Content-Length: a well-formed 408 once the body deadline
    // passes, as Node's requestTimeout answers.
    let t0 = Instant::now();
    let r =
        raw(port, b"POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort");
    assert!(r.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{r}");
    assert!(t0.elapsed() < Duration::from_secs(5));

    // A client that stops mid-head.
    let r = raw(port, b"GET /socket.io/?EIO=4&tra");
    assert!(r.starts_with("HTTP/1.1 408 "), "{r}");

    // A sid that belongs to no one: answered 400 as Engine.IO does.
    let r = raw(
        port,
        b"GET /socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    assert!(r.ends_with(r#"{"code":1,"message":"Session ID unknown"}"#), "{r}");

    // ... as soon as its head is read: its body is never waited for.
    let t0 = Instant::now();
    let r = raw(
        port,
        b"POST /socket.io/?EIO=4&transport=polling&sid=BBBBBBBBBBBBBBBBBBBB HTTP/1.1\r\nContent-Length: 900000\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    assert!(r.contains("Session ID unknown"), "{r}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let r = raw(
        port,
        b"GET /socket.io/?EIO=4&transport=websocket&sid=CCCCCCCCCCCCCCCCCCCC HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(
        r.starts_with("HTTP/1.1 400 Bad Request\r\n") && r.ends_with("\r\n\r\nSession ID unknown"),
        "{r}"
    );

    // Many headers within Node's 16 KiB head limit reach the worker (Node
    // has no header-count limit that rejects).
    let mut many =
        b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    for i in 0..500 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let r = raw(port, &many);
    assert!(r.starts_with("HTTP/1.1 200 "), "{}", &r[..r.len().min(300)]);

    // Still healthy.
    assert_ok(&scenario(port, "polling", Some(2), &[]));
    assert_eq!(pm2.jlist().len(), 2);
}

#[test]
fn many_idle_connections_do_not_stall_the_daemon() {
    let pm2 = sio_pm2(&[]);
    start_sio(&pm2, "idle");
    let port = sticky_port(&pm2);
    raise_own_fd_limit();
    let daemon_pid: i32 =
        std::fs::read_to_string(pm2.home().join("pm2.pid")).unwrap().trim().parse().unwrap();
    let rss_before = rss_kb(daemon_pid);
    let mut idle = Vec::new();
    for _ in 0..3000 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    assert!(idle.len() >= 1000, "only {} connections", idle.len());
    let t0 = Instant::now();
    pm2.run(&["ping"]).ok();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_ok(&scenario(port, "default", Some(2), &[]));
    let rss_after = rss_kb(daemon_pid);
    eprintln!("{} idle connections: daemon RSS {rss_before} kB -> {rss_after} kB", idle.len());
    assert!(rss_after < rss_before + 64 * 1024, "RSS grew from {rss_before} to {rss_after} kB");
}

fn raise_own_fd_limit() {
    // SAFETY: plain struct in/out.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

#[test]
fn no_live_worker_gets_a_well_formed_503() {
    let pm2 = sio_pm2(&[]);
    start_sio(&pm2, "gone");
    let port = sticky_port(&pm2);
    assert_ok(&scenario(port, "default", Some(2), &[]));
    pm2.run(&["stop", "gone"]).ok();
    let r = raw(port, b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
    assert!(r.contains("Connection: close\r\n") && r.contains("Content-Length: 0\r\n"), "{r}");
}

#[test]
fn a_plain_cluster_app_never_receives_sticky_connections() {
    let mut pm2 = sio_pm2(&[]);
    let app_port = free_port();
    pm2.envs.push(("PORT".into(), app_port.to_string()));
    pm2.run(&["start", "http_app.js", "-i", "2"]).ok();
    pm2.wait_for("online", T, |l| l.len() == 2 && l.iter().all(|p| status(p) == "online"));
    let t0 = Instant::now();
    let r = raw(sticky_port(&pm2), b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
    assert!(t0.elapsed() < Duration::from_secs(8), "the client was left hanging");
}

#[test]
fn two_socketio_apps_do_not_share_broadcasts() {
    let pm2 = sio_pm2(&[]);
    let second_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let eco = dir.path().join("two.config.js");
    let script = node_dir().join("sio_worker.js");
    std::fs::write(
        &eco,
        format!(
            "module.exports = {{ apps: [\n  {{ name: 'a', script: {s:?}, instances: 2, exec_mode: 'cluster' }},\n  {{ name: 'b', script: {s:?}, instances: 2, exec_mode: 'cluster', sticky_port: {second_port} }}\n] }}",
            s = script.to_str().unwrap()
        ),
    )
    .unwrap();
    pm2.run(&["start", eco.to_str().unwrap()]).ok();
    pm2.wait_for("4 online", T, |l| l.len() == 4 && l.iter().all(|p| status(p) == "online"));
    for port in [sticky_port(&pm2), second_port] {
        let v = scenario(port, "fetch", None, &[]);
        assert_ok(&v);
        // Each app's adapter sees its own 2 workers, not 4.
        assert_eq!(v["serverCount"], 2, "{v}");
        assert_ok(&scenario(port, "broadcast", None, &[]));
    }
}

#[test]
fn a_taken_sticky_port_is_a_clear_error() {
    let pm2 = sio_pm2(&[]);
    let port = sticky_port(&pm2);
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let r = pm2.run(&["start", "sio_worker.js", "-i", "2"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains(&port.to_string()), "{}", r.all());
    // The rest of the daemon keeps working.
    pm2.run(&["ping"]).ok();
    assert_eq!(pm2.jlist().len(), 2);
}

/// Runs the seed app's own client (10 Socket.IO clients) against the port.
fn seed_clients_succeed(pm2: &Pm2, dir: &Path, when: &str) {
    let out = Command::new("node")
        .arg("client.js")
        .arg("10")
        .env("PORT", sticky_port(pm2).to_string())
        .current_dir(dir)
        .output()
        .expect("node client.js");
    assert!(
        out.status.success(),
        "{when}: client.js failed:\n{}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        pm2.daemon_log()
    );
}

fn all_online(pm2: &Pm2, when: &str, n: usize) {
    pm2.wait_for(when, T, |l| l.len() == n && l.iter().all(|p| status(p) == "online"));
}

/// Regression: the balancer was bound only by `start`, so an app brought
/// back by `resurrect` (a reboot through `pm2 startup`) or `update` ran
/// online with nothing listening on PM2_PORT.
#[test]
fn the_balancer_comes_back_after_resurrect_and_update() {
    let mut pm2 = Pm2::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/socketio");
    pm2.cwd = dir.clone();
    pm2.run(&["start", "ecosystem.config.js"]).ok();
    let n =
        pm2.wait_for("workers online", T, |l| !l.is_empty() && l.iter().all(|p| status(p) == "online")).len();
    seed_clients_succeed(&pm2, &dir, "after start");

    pm2.run(&["save"]).ok();
    pm2.run(&["kill"]).ok();
    pm2.run(&["resurrect"]).ok();
    all_online(&pm2, "workers online after resurrect", n);
    seed_clients_succeed(&pm2, &dir, "after resurrect");

    // `update` typed in a shell that lacks PM2_PORT: the new daemon keeps
    // the old daemon's port.
    let out = pm2.cmd(&["update"]).env_remove("PM2_PORT").output().expect("pm2 update");
    assert!(out.status.success(), "update failed: {}", String::from_utf8_lossy(&out.stderr));
    all_online(&pm2, "workers online after update", n);
    seed_clients_succeed(&pm2, &dir, "after update");
}
