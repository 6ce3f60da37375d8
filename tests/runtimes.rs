//! Beyond Node (issue 17), end to end with real runtimes from the
//! registries: Bun and Deno cluster workers (the `bun` and `deno` npm
//! packages, pinned in `tests/runtimes/package-lock.json`) and a Python ASGI
//! app under uvicorn and a WSGI app under gunicorn (PyPI, pinned in
//! `tests/runtimes/requirements.txt`, installed into `tests/runtimes/.venv`)
//! sharing one daemon-bound socket through socket activation (`--listen`,
//! `LISTEN_FDS`).
//!
//! Every wait polls against a deadline; load is bounded in count and time.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// `tests/runtimes`, with `npm ci` run once per test binary if needed.
fn rt_dir() -> PathBuf {
    static NPM: std::sync::Once = std::sync::Once::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runtimes");
    NPM.call_once(|| {
        if !dir.join("node_modules/.bin/bun").exists() || !dir.join("node_modules/.bin/deno").exists() {
            let st = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status();
            assert!(st.is_ok_and(|s| s.success()), "npm ci in {} failed", dir.display());
        }
    });
    dir
}

fn bin(name: &str) -> String {
    rt_dir().join("node_modules/.bin").join(name).to_string_lossy().into_owned()
}

/// A program of `tests/runtimes/.venv` (uvicorn, gunicorn), the venv
/// created from requirements.txt when one is missing (idempotent: an
/// existing venv is used as is).
fn venv_bin(name: &str) -> String {
    static VENV: std::sync::Once = std::sync::Once::new();
    let dir = rt_dir();
    let venv = dir.join(".venv");
    VENV.call_once(|| {
        if ["uvicorn", "gunicorn"].iter().all(|b| venv.join("bin").join(b).exists()) {
            return;
        }
        let st = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "python3 -m venv failed (Debian: apt-get install python3-venv; scripts/test-all does)"
        );
        let st = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "-r"])
            .arg(dir.join("requirements.txt"))
            .status();
        assert!(st.is_ok_and(|s| s.success()), "pip install -r tests/runtimes/requirements.txt failed");
    });
    venv.join("bin").join(name).to_string_lossy().into_owned()
}

fn pm2_in_rt(envs: &[(&str, String)]) -> Pm2 {
    let mut pm2 = Pm2::new();
    pm2.cwd = rt_dir();
    for (k, v) in envs {
        pm2.envs.push((k.to_string(), v.clone()));
    }
    pm2
}

fn named<'a>(l: &'a [Value], name: &str) -> Vec<&'a Value> {
    l.iter().filter(|p| p["name"] == name).collect()
}

fn all_online(l: &[Value], name: &str, n: usize) -> bool {
    let ps = named(l, name);
    ps.len() == n && ps.iter().all(|p| status(p) == "online" && pid(p) > 0)
}

fn pids_of(l: &[Value], name: &str) -> BTreeSet<u64> {
    named(l, name).iter().map(|p| pid(p)).collect()
}

/// Polls `GET /` until every pid of `want` answered (each worker serves the
/// one port); returns the bodies seen.
fn served_by_all(port: u16, want: &BTreeSet<u64>) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    let mut bodies = Vec::new();
    poll(&format!("answers from every worker {want:?}"), T, || {
        if let Ok(v) = http_get(port, "/") {
            if let Some(p) = v["pid"].as_u64() {
                seen.insert(p);
            }
            bodies.push(v);
        }
        want.is_subset(&seen).then_some(())
    });
    bodies
}

/// Two rolling reloads while a bounded load runs; the load's summary.
fn reload_under_load(pm2: &Pm2, port: u16, name: &str, before: &BTreeSet<u64>) -> Value {
    let load =
        Load::spawn(&[format!("port={port}"), "lanes=4".into(), "count=20000".into(), "ms=6000".into()]);
    load.wait_started(T);
    for _ in 0..2 {
        pm2.run(&["reload", name]).ok();
    }
    let res = load.finish(T);
    let list = pm2.wait_for("reloaded and online", T, |l| all_online(l, name, 2));
    let after = pids_of(&list, name);
    assert!(after.is_disjoint(before), "every worker replaced: {before:?} -> {after:?}");
    res
}

const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Puts `net.ipv4.tcp_migrate_req` back to 0 if the test turned it on.
struct RestoreMigrateReq(bool);
impl Drop for RestoreMigrateReq {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::fs::write(MIGRATE_REQ, "0");
        }
    }
}

/// Makes sure a closing SO_REUSEPORT listener hands its queued connections
/// to the group's other sockets (Linux 5.14+, `net.ipv4.tcp_migrate_req`),
/// as the README asks of hosts running Bun cluster apps, for the test's
/// duration. Whether it is on, and the guard that restores it.
fn tcp_migrate_req() -> (bool, RestoreMigrateReq) {
    match std::fs::read_to_string(MIGRATE_REQ) {
        Ok(v) if v.trim() == "1" => (true, RestoreMigrateReq(false)),
        Ok(_) => {
            let set = std::fs::write(MIGRATE_REQ, "1").is_ok();
            (set, RestoreMigrateReq(set))
        }
        Err(_) => (false, RestoreMigrateReq(false)),
    }
}

#[test]
fn bun_cluster_serves_one_port_and_reloads() {
    let port = free_port();
    // Every answer takes 20 ms, so each retiring worker has requests in
    // flight when it is stopped (before the fix each reload cut a few).
    let pm2 = pm2_in_rt(&[("PORT", port.to_string()), ("DELAY_MS", "20".to_string())]);
    let bun = bin("bun");
    pm2.run(&["start", "apps/http.js", "--interpreter", &bun, "-i", "2", "--name", "bunweb"]).ok();
    let list = pm2.wait_for("2 bun workers online", T, |l| all_online(l, "bunweb", 2));
    let first = pids_of(&list, "bunweb");
    assert!(named(&list, "bunweb").iter().all(|p| p["pm2_env"]["exec_mode"] == "cluster_mode"));
    let bodies = served_by_all(port, &first);
    assert!(bodies.iter().all(|b| b["runtime"] == "bun"), "{bodies:?}");
    let (migrate, _restore) = tcp_migrate_req();
    let res = reload_under_load(&pm2, port, "bunweb", &first);
    eprintln!("bun reload under load (tcp_migrate_req {migrate}): {res}");
    // Bun workers bind their own SO_REUSEPORT sockets. A retiring one leaves
    // the port's group before it is stopped (the daemon shuts its listening
    // socket down), the connections queued on that socket move to the
    // others (tcp_migrate_req) and the ones it accepted are answered before
    // it gets its signal: not one request fails.
    if migrate {
        assert_eq!(res["failed"], 0, "{res}");
    } else {
        // Without tcp_migrate_req (not root) the kernel resets what was
        // queued on the retiring socket: nothing is refused, at least.
        eprintln!("net.ipv4.tcp_migrate_req cannot be set here: only refusals are checked");
        let refused =
            res["failures"].as_array().map(|f| f.iter().filter(|x| x["code"] == "ECONNREFUSED").count());
        assert_eq!(refused, Some(0), "{res}");
    }
    assert!(res["ok"].as_u64().unwrap_or(0) > 0, "{res}");
    // The daemon still supervises them: a Bun worker that dies is restarted.
    let victim = *pids_of(&pm2.jlist(), "bunweb").iter().next().expect("a worker");
    assert!(unsafe { libc::kill(victim as i32, libc::SIGKILL) } == 0);
    pm2.wait_for("the killed bun worker restarted", T, |l| {
        all_online(l, "bunweb", 2) && !pids_of(l, "bunweb").contains(&victim)
    });
    pm2.run(&["delete", "all"]).ok();
}

#[test]
fn deno_cluster_serves_one_port_and_reloads() {
    let port = free_port();
    let pm2 = pm2_in_rt(&[("PORT", port.to_string())]);
    let deno = bin("deno");
    pm2.run(&["start", "apps/http.js", "--interpreter", &deno, "-i", "2", "--name", "denoweb"]).ok();
    let list = pm2.wait_for("2 deno workers online", T, |l| all_online(l, "denoweb", 2));
    let first = pids_of(&list, "denoweb");
    let bodies = served_by_all(port, &first);
    assert!(bodies.iter().all(|b| b["runtime"] == "deno"), "{bodies:?}");
    // Deno workers receive their connections from the daemon's listener
    // (node:cluster round-robin with fd passing): no worker binds the port.
    let res = reload_under_load(&pm2, port, "denoweb", &first);
    eprintln!("deno reload under load: {res}");
    assert_eq!(res["failed"], 0, "{res}");
    assert!(res["ok"].as_u64().unwrap_or(0) > 0, "{res}");
    let log = pm2.daemon_log();
    assert!(!log.contains("invalid message"), "{log}");
    pm2.run(&["delete", "all"]).ok();
}

/// `apps/sio_client.js`: `n` Socket.IO clients, each says one thing, every
/// client must hear everyone (across workers: the daemon relays the cluster
/// adapter's messages). Its JSON summary.
fn sio_clients(port: u16, n: usize, ws_only: bool) -> Value {
    let mut c = Command::new("node");
    c.arg("apps/sio_client.js").arg(n.to_string()).current_dir(rt_dir()).env("PORT", port.to_string());
    if ws_only {
        c.env("WS_ONLY", "1");
    }
    let out = c.output().expect("node sio_client.js");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("sio_client.js: {e}: {text}"));
    // A failed round is retried by the caller's poll; what went wrong is kept in the output.
    if v["ok"] != true {
        eprintln!("sio_client.js round not ok: {v}");
    }
    v
}

#[test]
fn deno_runs_the_socketio_seed_app_across_workers() {
    let pm2 = pm2_in_rt(&[]);
    let port: u16 = pm2.envs.iter().find(|(k, _)| k == "PM2_PORT").and_then(|(_, v)| v.parse().ok()).unwrap();
    let deno = bin("deno");
    // The seed app unchanged: @socket.io/sticky's setupWorker, the cluster
    // adapter, no listen() of its own; the daemon's sticky balancer hands
    // Deno workers their connections.
    pm2.run(&["start", "apps/sio_worker.js", "--interpreter", &deno, "-i", "2", "--name", "siodeno"]).ok();
    let list = pm2.wait_for("2 deno workers online", T, |l| all_online(l, "siodeno", 2));
    let pids = pids_of(&list, "siodeno");
    let res = poll("every client hears every message", T, || {
        let r = sio_clients(port, 10, false);
        (r["ok"] == true).then_some(r)
    });
    eprintln!("deno socket.io: {res}");
    let per_worker: BTreeSet<u64> = res["clientsPerWorkerPid"]
        .as_object()
        .map(|m| m.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default();
    assert_eq!(per_worker, pids, "clients on both workers: {res}");
    pm2.run(&["delete", "all"]).ok();
}

#[test]
fn bun_socketio_websocket_app_broadcasts_across_workers() {
    let port = free_port();
    let pm2 = pm2_in_rt(&[("PORT", port.to_string())]);
    let bun = bin("bun");
    pm2.run(&["start", "apps/sio_ws.js", "--interpreter", &bun, "-i", "2", "--name", "siobun"]).ok();
    let list = pm2.wait_for("2 bun workers online", T, |l| all_online(l, "siobun", 2));
    let pids = pids_of(&list, "siobun");
    // Clients land on a worker by the kernel's SO_REUSEPORT hash: retry
    // until both workers have some (each try is a full check anyway).
    let res = poll("every client hears every message, clients on both workers", T, || {
        let r = sio_clients(port, 10, true);
        let on: BTreeSet<u64> = r["clientsPerWorkerPid"]
            .as_object()
            .map(|m| m.keys().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default();
        (r["ok"] == true && on == pids).then_some(r)
    });
    eprintln!("bun socket.io (websocket only): {res}");
    pm2.run(&["delete", "all"]).ok();
}

#[test]
fn uvicorn_instances_share_one_socket_through_listen_fds() {
    let uv = venv_bin("uvicorn");
    let port = free_port();
    let pm2 = pm2_in_rt(&[]);
    let listen = format!("127.0.0.1:{port}");
    pm2.run(&[
        "start", &uv, "--name", "asgi", "-i", "2", "--listen", &listen, "--cwd", "apps", "--", "--fd", "3",
        "asgi:app",
    ])
    .ok();
    let list = pm2.wait_for("2 uvicorn instances online", T, |l| all_online(l, "asgi", 2));
    assert!(named(&list, "asgi").iter().all(|p| p["pm2_env"]["exec_mode"] == "fork_mode"));
    let first = pids_of(&list, "asgi");
    let bodies = served_by_all(port, &first);
    for b in &bodies {
        // LISTEN_PID is the child's own pid (set between fork and exec).
        assert_eq!(
            b["listen_pid"].as_str().map(String::from),
            b["pid"].as_u64().map(|p| p.to_string()),
            "{b}"
        );
        assert_eq!(b["listen_fds"], "1", "{b}");
        assert_eq!(b["listen_fdnames"], "asgi", "{b}");
    }
    let res = reload_under_load(&pm2, port, "asgi", &first);
    eprintln!("uvicorn reload under load: {res}");
    // The socket stays open through the reload: nothing is ever refused.
    // uvicorn's graceful shutdown closes the connections it accepted but
    // has not read a request from yet (its h11 protocol's `shutdown()`), so
    // a few resets at the moment an instance stops are uvicorn's, and the
    // zero-failure reload is checked with gunicorn below.
    let refused =
        res["failures"].as_array().map(|f| f.iter().filter(|x| x["code"] == "ECONNREFUSED").count());
    assert_eq!(refused, Some(0), "{res}");
    assert!(res["ok"].as_u64().unwrap_or(0) > 0, "{res}");
    // Stopping every instance closes the socket; starting binds it again.
    pm2.run(&["stop", "asgi"]).ok();
    poll("the socket closed after stop", T, || http_get(port, "/").is_err().then_some(()));
    pm2.run(&["start", "asgi"]).ok();
    let list = pm2.wait_for("online again", T, |l| all_online(l, "asgi", 2));
    served_by_all(port, &pids_of(&list, "asgi"));
    pm2.run(&["delete", "all"]).ok();
}

/// An in-place `pm2 update` hands the activation socket to the new image:
/// the instances keep serving, and their next restarts get the same socket
/// (binding the address again would fail while they hold it).
#[test]
fn listen_fds_sockets_survive_an_in_place_update() {
    let uv = venv_bin("uvicorn");
    let port = free_port();
    let pm2 = pm2_in_rt(&[]);
    let listen = format!("127.0.0.1:{port}");
    pm2.run(&[
        "start", &uv, "--name", "asgiu", "-i", "2", "--listen", &listen, "--cwd", "apps", "--", "--fd", "3",
        "asgi:app",
    ])
    .ok();
    let list = pm2.wait_for("2 uvicorn instances online", T, |l| all_online(l, "asgiu", 2));
    let first = pids_of(&list, "asgiu");
    let dir = tempfile::tempdir().expect("tmp");
    let new_bin = dir.path().join("pm2-new");
    std::fs::copy(env!("CARGO_BIN_EXE_pm2"), &new_bin).expect("copy the binary");
    let r = pm2.run(&["update", "--binary", &new_bin.to_string_lossy()]);
    r.ok();
    assert!(r.all().contains("updated in place"), "{}", r.all());
    assert_eq!(pids_of(&pm2.jlist(), "asgiu"), first, "same instances");
    served_by_all(port, &first);
    pm2.run(&["restart", "asgiu"]).ok();
    let list = pm2.wait_for("restarted instances online", T, |l| {
        all_online(l, "asgiu", 2) && pids_of(l, "asgiu").is_disjoint(&first)
    });
    served_by_all(port, &pids_of(&list, "asgiu"));
    pm2.run(&["delete", "all"]).ok();
}

#[test]
fn gunicorn_instances_reload_under_load_without_a_failure() {
    let gunicorn = venv_bin("gunicorn");
    let port = free_port();
    // gunicorn stops gracefully on SIGTERM (SIGINT is its quick shutdown).
    let pm2 = pm2_in_rt(&[("PM2_KILL_SIGNAL", "SIGTERM".to_string())]);
    let listen = format!("127.0.0.1:{port}");
    let ctl = pm2.home().join("gunicorn.ctl").to_string_lossy().into_owned();
    pm2.run(&[
        "start",
        &gunicorn,
        "--name",
        "wsgi",
        "-i",
        "2",
        "--listen",
        &listen,
        "--cwd",
        "apps",
        "--",
        "-w",
        "1",
        "--control-socket",
        &ctl,
        "wsgi:app",
    ])
    .ok();
    let list = pm2.wait_for("2 gunicorn instances online", T, |l| all_online(l, "wsgi", 2));
    let masters = pids_of(&list, "wsgi");
    // gunicorn accepts the systemd sockets only when LISTEN_PID is its own
    // pid; its workers answer, their parent is the instance pm2 shows.
    let mut seen = BTreeSet::new();
    poll("answers through both gunicorn masters", T, || {
        if let Ok(v) = http_get(port, "/") {
            if let Some(m) = v["master"].as_u64() {
                seen.insert(m);
            }
        }
        masters.is_subset(&seen).then_some(())
    });
    let load =
        Load::spawn(&[format!("port={port}"), "lanes=4".into(), "count=20000".into(), "ms=6000".into()]);
    load.wait_started(T);
    for _ in 0..2 {
        pm2.run(&["reload", "wsgi"]).ok();
    }
    let res = load.finish(T);
    eprintln!("gunicorn reload under load: {res}");
    assert_eq!(res["failed"], 0, "{res}");
    let list = pm2.wait_for("reloaded", T, |l| all_online(l, "wsgi", 2));
    assert!(pids_of(&list, "wsgi").is_disjoint(&masters));
    pm2.run(&["delete", "all"]).ok();
}

#[test]
fn bad_runtime_combinations_are_refused_clearly() {
    let pm2 = pm2_in_rt(&[]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // A cluster app gets its listeners from node:cluster already.
    let r = pm2.run(&["start", "apps/http.js", "-i", "2", "--listen", &listen, "--name", "x"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("listen_fds") && r.all().contains("fork"), "{}", r.all());
    // Port 0 / garbage addresses.
    for bad in ["127.0.0.1:0", "localhost:80", "nope"] {
        let r = pm2.run(&["start", "apps/http.js", "--listen", bad, "--name", "y"]);
        assert_ne!(r.code, 0, "{bad}: {}", r.all());
        assert!(r.all().contains("listen_fds"), "{bad}: {}", r.all());
    }
    // Bun workers cannot take the sticky balancer's hand-offs.
    let bun = bin("bun");
    let r = pm2.run(&["start", "apps/http.js", "--interpreter", &bun, "-i", "2", "--sticky", "--name", "z"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("Bun"), "{}", r.all());
    // Runtimes too old for cluster workers (a stand-in binary answering
    // `--version` as Bun 1.1.24 and Deno 2.7.14 do; the real ones were
    // checked by hand: README, Runtimes).
    let dir = tempfile::tempdir().expect("tmp");
    for (name, says, want) in [
        ("bun", "1.1.24", "Bun 1.1.24 cannot run cluster workers (Bun 1.1.25 or later can)"),
        (
            "deno",
            "deno 2.7.14 (stable, release, x86_64-unknown-linux-gnu)",
            "Deno 2.7.14 cannot run cluster workers",
        ),
    ] {
        let fake = dir.path().join(name);
        std::fs::write(&fake, format!("#!/bin/sh\necho '{says}'\n")).expect("write");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let r = pm2.run(&["start", "apps/http.js", "--interpreter", &fake.to_string_lossy(), "-i", "2"]);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.all().contains(want), "{}", r.all());
    }
    assert!(pm2.jlist().is_empty(), "nothing started: {:?}", pm2.jlist());
}
