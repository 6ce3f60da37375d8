//! In-place update of the daemon (`pm2 update`, `--binary`, SIGUSR2): the
//! daemon re-executes itself in its own pid and keeps every process, worker
//! channel, listener and Socket.IO session. Black box, real node apps: the
//! seed Socket.IO app (examples/socketio, 2 workers) with websocket and
//! polling clients and a paced broadcast, a plain cluster app under bounded
//! HTTP load, a fork app writing numbered log lines, and connect probes
//! every 5 ms on both ports.

mod common;
use common::*;
use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(40);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sticky_port(pm2: &Pm2) -> u16 {
    pm2.envs.iter().find(|(k, _)| k == "PM2_PORT").and_then(|(_, v)| v.parse().ok()).expect("PM2_PORT")
}

/// Connects every 5 ms until stopped; counts refused (or failed) connects.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Prober {
    fn start(port: u16) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let (mut ok, mut failed) = (0u64, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("{:?}: {e}", e.kind())),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (ok, failed)
        });
        Prober { stop, thread: Some(thread) }
    }

    /// (connects that succeeded, the failures).
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

/// `tests/node/upgrade_client.js` in the background.
struct SioClients {
    job: NodeJob,
    stop_file: PathBuf,
}

impl SioClients {
    fn spawn(port: u16, dir: &Path) -> SioClients {
        let stop_file = dir.join("stop-clients");
        let args = [port.to_string(), stop_file.to_string_lossy().into_owned()];
        let job = NodeJob::start(&node_dir().join("upgrade_client.js"), &args, &node_dir());
        SioClients { job, stop_file }
    }

    fn finish(self) -> Value {
        std::fs::write(&self.stop_file, b"stop").expect("stop file");
        self.job.finish(T)
    }
}

/// (pm_id, pid, restart_time, pm_uptime) of every process.
fn identity(list: &[Value]) -> Vec<(u64, u64, u64, u64)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|p| {
            (
                p["pm_id"].as_u64().unwrap_or(u64::MAX),
                pid(p),
                restarts(p),
                p["pm2_env"]["pm_uptime"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v
}

fn daemon_pid(pm2: &Pm2) -> String {
    std::fs::read_to_string(pm2.home().join("pm2.pid")).unwrap_or_default().trim().to_string()
}

/// Starts the three apps and waits for them.
fn start_apps(pm2: &Pm2, dir: &Path, http_port: u16) {
    pm2.run(&[
        "start",
        &repo().join("examples/socketio/worker.js").to_string_lossy(),
        "-i",
        "2",
        "--name",
        "sio",
    ])
    .ok();
    let web = node_dir().join("http_app.js");
    let mut c = pm2.cmd(&["start", &web.to_string_lossy(), "-i", "2", "--name", "web"]);
    let out = c.env("PORT", http_port.to_string()).output().expect("pm2 start web");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let logger = dir.join("counter.js");
    std::fs::write(&logger, "let i = 0;\nsetInterval(() => console.log('line ' + (i++)), 5);\n")
        .expect("write app");
    pm2.run(&["start", &logger.to_string_lossy(), "--name", "counter"]).ok();
    pm2.wait_for("5 processes online", T, |l| l.len() == 5 && l.iter().all(|p| status(p) == "online"));
}

/// The counter app's log: every line from 0 to the last, once each.
fn check_counter_log(pm2: &Pm2) {
    pm2.run(&["stop", "counter"]).ok();
    let log = std::fs::read_to_string(pm2.home().join("logs/counter-out.log")).expect("counter log");
    let nums: Vec<u64> = log
        .lines()
        .filter_map(|l| l.strip_prefix("line "))
        .map(|n| n.trim().parse().expect("a number"))
        .collect();
    assert!(nums.len() > 20, "too few lines: {}\n{log}\n{}", nums.len(), pm2.daemon_log());
    for (i, n) in nums.iter().enumerate() {
        assert_eq!(*n, i as u64, "log line {i} is `line {n}` (a line lost, torn or duplicated)");
    }
}

/// Everything running, clients and load on, `update` runs, then every
/// guarantee is checked. `update` returns whether the daemon should now
/// run another image (false: it refused or fell back).
fn under_traffic(update: impl FnOnce(&Pm2, &Path) -> bool) {
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let http_port = free_port();
    start_apps(&pm2, dir.path(), http_port);
    let sport = sticky_port(&pm2);
    let before = identity(&pm2.jlist());
    let dpid = daemon_pid(&pm2);

    let clients = SioClients::spawn(sport, dir.path());
    clients.job.wait_started(T);
    let load = Load::spawn(&[
        format!("port={http_port}"),
        "lanes=4".into(),
        "count=100000".into(),
        "ms=3000".into(),
    ]);
    load.wait_started(T);
    let probes = (Prober::start(http_port), Prober::start(sport));

    let switched = update(&pm2, dir.path());

    let res = load.finish(T);
    let (ok_http, refused_http) = probes.0.finish();
    let (ok_sticky, refused_sticky) = probes.1.finish();
    let sio = clients.finish();
    eprintln!("load: {res}\nsocket.io: {sio}\nprobes: http {ok_http} ok, sticky {ok_sticky} ok");

    assert_eq!(res["failed"], 0, "HTTP requests failed across the update: {res}");
    assert!(refused_http.is_empty(), "connects to the cluster port failed: {refused_http:?}");
    assert!(refused_sticky.is_empty(), "connects to the sticky port failed: {refused_sticky:?}");
    assert_eq!(sio["ok"], true, "Socket.IO sessions or broadcasts suffered: {sio}");
    assert_eq!(daemon_pid(&pm2), dpid, "the daemon's pid changed");
    let after = identity(&pm2.jlist());
    assert_eq!(after, before, "pids, restart counters or uptimes changed");
    let log = pm2.daemon_log();
    assert_eq!(log.contains("processes adopted"), switched, "{log}");
    check_counter_log(&pm2);
}

#[test]
fn update_in_place_keeps_every_process_connection_and_session() {
    under_traffic(|pm2, dir| {
        // "The new binary": a copy of this build at another path.
        let new_bin = dir.join("pm2-new");
        std::fs::copy(BIN, &new_bin).expect("copy the binary");
        let r = pm2.run(&["update", "--binary", &new_bin.to_string_lossy()]);
        r.ok();
        assert!(r.all().contains("updated in place"), "{}", r.all());
        // The daemon runs the new binary now.
        let exe = std::fs::read_link(format!("/proc/{}/exe", daemon_pid(pm2))).expect("exe");
        assert_eq!(exe, new_bin);
        true
    });
}

#[test]
fn a_new_binary_that_fails_leaves_the_daemon_running() {
    under_traffic(|pm2, dir| {
        // Exits 1 at start: refused by its probe, nothing changes.
        let bad = dir.join("bad.sh");
        std::fs::write(&bad, "#!/bin/sh\nexit 1\n").expect("script");
        make_executable(&bad);
        let r = pm2.run(&["update", "--binary", &bad.to_string_lossy()]);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.all().contains("keeps running unchanged"), "{}", r.all());
        // Passes the probe but refuses to adopt: the new image goes back to
        // the old binary, which adopts everything again.
        let refuses = dir.join("refuses.sh");
        std::fs::write(&refuses, format!("#!/bin/sh\nCORRAL_HANDOVER_REFUSE=1 exec {BIN} \"$@\"\n"))
            .expect("script");
        make_executable(&refuses);
        let r = pm2.run(&["update", "--binary", &refuses.to_string_lossy()]);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.all().contains("the previous binary took over again"), "{}", r.all());
        pm2.run(&["ping"]).ok();
        true
    });
}

#[test]
fn sigusr2_updates_in_place() {
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let logger = dir.path().join("counter.js");
    std::fs::write(&logger, "let i = 0;\nsetInterval(() => console.log('line ' + (i++)), 5);\n")
        .expect("write app");
    pm2.run(&["start", &logger.to_string_lossy(), "--name", "counter"]).ok();
    pm2.wait_for("online", T, |l| l.len() == 1 && status(&l[0]) == "online");
    let lines = || {
        std::fs::read_to_string(pm2.home().join("logs/counter-out.log"))
            .map(|l| l.lines().count())
            .unwrap_or(0)
    };
    poll("the app's first log lines", T, || (lines() > 20).then_some(()));
    let before = identity(&pm2.jlist());
    let dpid: i32 = daemon_pid(&pm2).parse().expect("pid");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(dpid, libc::SIGUSR2) };
    poll("the update's log line", T, || pm2.daemon_log().contains("processes adopted").then_some(()));
    let n = lines();
    poll("log lines written after the update", T, || (lines() > n + 20).then_some(()));
    assert_eq!(identity(&pm2.jlist()), before);
    check_counter_log(&pm2);
}

fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn update_during_a_crash_loop_restart_delay_keeps_the_timer() {
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("crash.js");
    std::fs::write(&app, "setTimeout(() => process.exit(1), 50);\n").expect("write app");
    pm2.run(&["start", &app.to_string_lossy(), "--name", "crash", "--restart-delay", "3000"]).ok();
    let list = pm2.wait_for("waiting restart", T, |l| {
        l.len() == 1 && status(&l[0]) == "waiting restart" && restarts(&l[0]) >= 1
    });
    let n = restarts(&list[0]);
    let r = pm2.run(&["update"]);
    r.ok();
    assert!(r.all().contains("updated in place"), "{}", r.all());
    // The delayed restart still runs, once, after the update.
    pm2.wait_for("the delayed restart", T, |l| l.len() == 1 && restarts(&l[0]) > n);
}

#[test]
fn update_during_a_reload_waits_for_it() {
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    let http_port = free_port();
    let web = node_dir().join("http_app.js");
    let mut c = pm2.cmd(&["start", &web.to_string_lossy(), "-i", "2", "--name", "web"]);
    let out = c.env("PORT", http_port.to_string()).output().expect("pm2 start web");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    pm2.wait_for("2 online", T, |l| l.len() == 2 && l.iter().all(|p| status(p) == "online"));
    let load = Load::spawn(&[
        format!("port={http_port}"),
        "lanes=4".into(),
        "count=100000".into(),
        "ms=4000".into(),
    ]);
    load.wait_started(T);
    let reload =
        pm2.cmd(&["reload", "web"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("reload");
    let r = pm2.run(&["update"]);
    let reload = reload.wait_with_output().expect("reload");
    assert!(
        reload.status.success(),
        "{}\nupdate: {}\n--- pm2.log:\n{}",
        String::from_utf8_lossy(&reload.stderr),
        r.all(),
        pm2.daemon_log()
    );
    r.ok();
    let res = load.finish(T);
    assert_eq!(res["failed"], 0, "{res}");
    let list = pm2.wait_for("2 online", T, |l| l.len() == 2 && l.iter().all(|p| status(p) == "online"));
    assert!(list.iter().all(|p| restarts(p) == 1), "each worker reloaded once");
    let body = http_get(http_port, "/").expect("served after both");
    assert!(body["pid"].as_u64().is_some(), "{body}");
}

#[test]
fn update_with_an_ipc_frame_half_written_delivers_it_whole() {
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let go = dir.path().join("go");
    let app = dir.path().join("half.js");
    // Writes the first half of the JSON frame of `process.send('ready')`
    // straight onto its channel (fd 3), the rest once the test says so:
    // the daemon can only see `ready` by joining both halves, across the
    // update.
    std::fs::write(
        &app,
        format!(
            r#"const fs = require("fs");
fs.writeSync(3, '"rea');
const t = setInterval(() => {{
  if (fs.existsSync({go:?})) {{ clearInterval(t); fs.writeSync(3, 'dy"\n'); }}
}}, 10);
setInterval(() => {{}}, 1000);
"#
        ),
    )
    .expect("write app");
    // The daemon first, so the background start and jlist do not both
    // spawn one.
    pm2.run(&["ping"]).ok();
    // `start --wait-ready` waits for the ready message: in the background.
    // (Its connection is one the update cuts: only the connection that asked
    // for the update is handed over.)
    let mut starter = pm2
        .cmd(&[
            "start",
            &app.to_string_lossy(),
            "--name",
            "half",
            "--wait-ready",
            "--listen-timeout",
            "120000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pm2 start");
    pm2.wait_for("launching", T, |l| l.len() == 1 && status(&l[0]) == "launching");
    let before = identity(&pm2.jlist());
    let r = pm2.run(&["update"]);
    r.ok();
    assert_eq!(status(&pm2.jlist()[0]), "launching");
    std::fs::write(&go, b"go").expect("go");
    let list = pm2.wait_for("online by its ready message", T, |l| l.len() == 1 && status(&l[0]) == "online");
    assert_eq!(identity(&list), before);
    let _ = starter.kill();
    let _ = starter.wait();
}
