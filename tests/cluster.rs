//! Cluster mode end to end (issue 4): the real binary as the Node cluster
//! primary, real Node workers (`tests/node`), real connections on 127.0.0.1.
//! Every wait polls against a deadline; measured numbers are printed with
//! `eprintln!` (see them with `--nocapture`).

mod common;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(15);

/// A daemon whose CLI runs in `tests/node`, with `envs` for the app.
fn pm2_with(envs: &[(&str, String)]) -> Pm2 {
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    for (k, v) in envs {
        pm2.envs.push((k.to_string(), v.clone()));
    }
    pm2
}

fn named<'a>(l: &'a [Value], name: &str) -> Vec<&'a Value> {
    l.iter().filter(|p| p["name"] == name).collect()
}

/// All `n` processes of `name` online with a pid, and no others.
fn all_online(l: &[Value], name: &str, n: usize) -> bool {
    let ps = named(l, name);
    ps.len() == n && ps.iter().all(|p| status(p) == "online" && pid(p) > 0)
}

fn pids_of(l: &[Value], name: &str) -> BTreeSet<u64> {
    named(l, name).iter().map(|p| pid(p)).collect()
}

fn out_log(p: &Value) -> String {
    std::fs::read_to_string(p["pm2_env"]["pm_out_log_path"].as_str().unwrap_or_default()).unwrap_or_default()
}

fn err_log(p: &Value) -> String {
    std::fs::read_to_string(p["pm2_env"]["pm_err_log_path"].as_str().unwrap_or_default()).unwrap_or_default()
}

/// `n` sequential requests; answers per pid. Panics on any failure.
fn spread(port: u16, path: &str, n: usize) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for i in 0..n {
        let v = http_get(port, path).unwrap_or_else(|e| panic!("request {i} to port {port} failed: {e}"));
        *m.entry(v["pid"].as_u64().expect("pid in answer")).or_insert(0) += 1;
    }
    m
}

fn spread_json(v: &Value) -> BTreeMap<u64, u64> {
    v["spread"]
        .as_object()
        .map(|o| o.iter().filter_map(|(k, n)| Some((k.parse().ok()?, n.as_u64()?))).collect())
        .unwrap_or_default()
}

/// Polls until every pid in `pids` has exited.
fn wait_dead(pids: &BTreeSet<u64>) {
    poll("old workers to exit", T, || pids.iter().all(|&p| !pid_alive(p as i32)).then_some(()));
}

#[test]
fn requests_reach_every_worker_and_describe_shows_cluster_mode() {
    let port = free_port();
    let pm2 = pm2_with(&[("PORT", port.to_string())]);
    let r = pm2.run(&["start", "http_app.js", "-i", "2", "--name", "web"]);
    r.ok();
    assert!(r.stdout.contains("in cluster_mode (2 instances)"), "{}", r.stdout);
    let list = pm2.wait_for("2 workers online", T, |l| all_online(l, "web", 2));
    for p in &list {
        assert_eq!(p["pm2_env"]["exec_mode"], "cluster_mode", "{p}");
    }
    let instances: BTreeSet<String> =
        list.iter().map(|p| p["pm2_env"]["NODE_APP_INSTANCE"].to_string()).collect();
    assert_eq!(instances.len(), 2, "distinct NODE_APP_INSTANCE: {instances:?}");

    let n = 40;
    let s = spread(port, "/", n);
    assert_eq!(s.keys().copied().collect::<BTreeSet<_>>(), pids_of(&list, "web"), "spread {s:?}");
    // How even it is depends on timing (bench/ measures it); that every
    // worker serves is the rule.
    eprintln!("round robin over 2 workers, {n} sequential requests: {s:?}");

    let d = pm2.run(&["describe", "web"]);
    d.ok();
    assert!(d.stdout.contains("cluster_mode"), "{}", d.stdout);
}

#[test]
fn scale_up_and_down_keeps_serving() {
    let port = free_port();
    let pm2 = pm2_with(&[("PORT", port.to_string())]);
    pm2.run(&["start", "http_app.js", "-i", "2", "--name", "web"]).ok();
    let before = pids_of(&pm2.wait_for("2 online", T, |l| all_online(l, "web", 2)), "web");

    pm2.run(&["scale", "web", "3"]).ok();
    let list = pm2.wait_for("3 online", T, |l| all_online(l, "web", 3));
    let three = pids_of(&list, "web");
    assert!(before.is_subset(&three), "scale up replaced workers: {before:?} -> {three:?}");
    // The new worker takes its share: sequential requests reach all three.
    let s = spread(port, "/", 30);
    assert_eq!(s.keys().copied().collect::<BTreeSet<_>>(), three, "spread after scale 3: {s:?}");

    // Scale down under load: the removed workers are drained before their
    // SIGINT, so nothing fails.
    let load =
        Load::spawn(&[format!("port={port}"), "lanes=4".into(), "count=100000".into(), "ms=2500".into()]);
    load.wait_started(T);
    pm2.run(&["scale", "web", "1"]).ok();
    let res = load.finish(T);
    eprintln!("scale 3 -> 1 under load: {res}");
    assert_eq!(res["failed"], 0, "{res}");
    let list = pm2.wait_for("1 online", T, |l| all_online(l, "web", 1));
    let one = pids_of(&list, "web");
    assert!(one.is_subset(&three));
    wait_dead(&three.difference(&one).copied().collect());
    let s = spread(port, "/", 10);
    assert_eq!(s.keys().copied().collect::<BTreeSet<_>>(), one, "spread after scale 1: {s:?}");
}

/// SIGKILL of one worker while 6 lanes of slow requests (400 ms each, new
/// connection per request) run. What may fail, and only that: requests whose
/// connection the killed worker had already accepted (it logs `conn <client
/// port>` when Node hands it the connection) and not yet answered (`done
/// <client port>`), so at most one per lane. A
/// connection the daemon had offered but the worker had not yet accepted is
/// re-offered (to the other worker, or with one worker to its replacement:
/// the listener lingers and queues meanwhile), and new connections keep
/// being served. (Known microsecond race, not covered: the worker is killed
/// between sending `accepted` and running its `connection` listener.)
fn sigkill_under_load(instances: usize) {
    let port = free_port();
    let pm2 = pm2_with(&[("PORT", port.to_string()), ("DELAY_MS", "400".into()), ("LOG_CONN", "1".into())]);
    pm2.run(&["start", "router_app.js", "-i", &instances.to_string(), "--name", "web"]).ok();
    let list = pm2.wait_for("all online", T, |l| all_online(l, "web", instances));
    let lanes = 6;
    let load = Load::spawn(&[
        format!("port={port}"),
        format!("lanes={lanes}"),
        "count=100000".into(),
        "ms=4000".into(),
    ]);
    load.wait_started(T);
    let victim = named(&list, "web")[0].clone();
    let victim_pid = pid(&victim) as i32;
    // Client ports of the connections the victim accepted (`conn`) or
    // answered (`done`).
    let victim_log = |what: &str| -> BTreeSet<u64> {
        out_log(&victim)
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(what)).then_some(())?;
                let port: u64 = w.next()?.parse().ok()?;
                (w.next()? == victim_pid.to_string()).then_some(port)
            })
            .collect()
    };
    // Kill it while it holds at least 2 unanswered requests, so the kill
    // really hits in-flight work.
    let held = poll("the victim to hold requests", T, || {
        let held = victim_log("conn").difference(&victim_log("done")).count();
        (held >= 2).then_some(held)
    });
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(victim_pid, libc::SIGKILL) }, 0);
    let res = load.finish(T);
    eprintln!("kill -9 of 1 of {instances} worker(s) holding {held}+ requests, under load: {res}");

    // The victim's stdout pipe is drained by the daemon after its death.
    let unanswered: BTreeSet<u64> = victim_log("conn").difference(&victim_log("done")).copied().collect();
    let failed = res["failed"].as_u64().unwrap();
    assert!(failed <= lanes, "more failures than requests in flight: {res}");
    for f in res["failures"].as_array().unwrap() {
        let lp = f["localPort"].as_u64();
        assert!(
            lp.is_some_and(|p| unanswered.contains(&p)),
            "failed request was not one the killed worker had accepted and not answered: {f}\n\
             victim's unanswered: {unanswered:?}"
        );
        assert!(
            f["code"] == "ECONNRESET" || f["message"] == "socket hang up",
            "unexpected failure kind: {f}"
        );
    }
    // Service went on: the survivor and/or the restarted worker answered.
    assert!(res["ok"].as_u64().unwrap() > 10, "{res}");
    if failed > 0 {
        assert!(res["okAfterFirstFailure"].as_u64().unwrap() > 0, "nothing served after the kill: {res}");
    }
    let list = pm2.wait_for("the killed worker restarted", T, |l| {
        all_online(l, "web", instances)
            && named(l, "web").iter().any(|p| p["pm_id"] == victim["pm_id"] && restarts(p) == 1)
    });
    assert!(!pids_of(&list, "web").contains(&(victim_pid as u64)));
}

#[test]
fn sigkill_of_one_of_two_workers_under_load_loses_only_requests_it_had_accepted() {
    sigkill_under_load(2);
}

#[test]
fn sigkill_of_the_only_worker_under_load_loses_only_requests_it_had_accepted() {
    sigkill_under_load(1);
}

/// `reload` under continuous load must fail no request.
#[test]
fn reload_under_load_fails_no_request_and_replaces_every_worker() {
    let port = free_port();
    let pm2 = pm2_with(&[("PORT", port.to_string())]);
    pm2.run(&["start", "http_app.js", "-i", "2", "--name", "web"]).ok();
    let first = pids_of(&pm2.wait_for("2 online", T, |l| all_online(l, "web", 2)), "web");
    let load = Load::spawn(&[
        "port=".to_string() + &port.to_string(),
        "lanes=8".into(),
        "count=200000".into(),
        "ms=5000".into(),
    ]);
    load.wait_started(T);
    let mut seen = first.clone();
    let mut durations = Vec::new();
    // Two rolling reloads back to back while the load runs.
    for _ in 0..2 {
        let t0 = Instant::now();
        pm2.run(&["reload", "web"]).ok();
        durations.push(t0.elapsed());
        let now = pids_of(&pm2.wait_for("2 online", T, |l| all_online(l, "web", 2)), "web");
        assert!(now.is_disjoint(&seen), "a worker survived the reload: before {seen:?}, now {now:?}");
        seen.extend(now);
    }
    let res = load.finish(T);
    eprintln!("reload under load: {res}; `pm2 reload` took {durations:?}");
    assert_eq!(res["failed"], 0, "requests failed during reload: {res}");
    assert!(res["ok"].as_u64().unwrap() > 200, "too little load to mean anything: {res}");
    let final_pids = pids_of(&pm2.jlist(), "web");
    let served = spread_json(&res);
    assert!(final_pids.iter().all(|p| served.contains_key(p)), "the last workers served nothing: {res}");
    assert!(first.iter().all(|p| served.contains_key(p)));
    wait_dead(&seen.difference(&final_pids).copied().collect());
    let r = pm2.jlist();
    assert!(named(&r, "web").iter().all(|p| restarts(p) == 2), "{r:?}");
}

/// `wait_ready`: the worker listens at once but says `ready` 1.5 s later.
/// It stays `launching` until then and `start` returns only then; a reload
/// (under load, failing nothing) retires the old worker only after the new
/// one said `ready`.
#[test]
fn wait_ready_is_honoured_by_start_and_reload() {
    let port = free_port();
    let pm2 = pm2_with(&[("PORT", port.to_string()), ("READY_AFTER_MS", "1500".into())]);
    // The daemon first: a `jlist` racing `start` to spawn it would print
    // pm2's "Spawning PM2 daemon" lines before its JSON.
    pm2.run(&["ping"]).ok();
    let t0 = Instant::now();
    let mut start = pm2
        .cmd(&[
            "start",
            "router_app.js",
            "-i",
            "1",
            "--name",
            "rdy",
            "--wait-ready",
            "--listen-timeout",
            "10000",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn start");
    // Listening but not ready: launching, and requests are served.
    let list = pm2.wait_for("launching with a pid", T, |l| {
        named(l, "rdy").first().is_some_and(|p| status(p) == "launching" && pid(p) > 0)
    });
    let first = pid(&list[0]);
    // Served before ready. Ordered so it cannot race: if `start` had
    // returned before the request, the app must have sent `ready` by then.
    let returned = start.try_wait().expect("wait start").is_some();
    let v = poll("an answer", T, || http_get(port, "/").ok());
    if returned {
        assert_eq!(v["ready"], true, "start returned before the app was ready: {v}");
    }
    let st = poll("start to return", T, || start.try_wait().expect("wait start"));
    let took = t0.elapsed();
    assert!(st.success());
    assert!(took >= Duration::from_millis(1400), "start returned after {took:?}, before ready");
    let p = pm2.proc("rdy").unwrap();
    assert_eq!(status(&p), "online");
    assert!(out_log(&p).contains(&format!("ready {first} ")), "{}", out_log(&p));
    eprintln!("wait_ready start (ready after 1500 ms) took {took:?}");

    let load =
        Load::spawn(&[format!("port={port}"), "lanes=4".into(), "count=100000".into(), "ms=2500".into()]);
    load.wait_started(T);
    let t0 = Instant::now();
    pm2.run(&["reload", "rdy"]).ok();
    let took = t0.elapsed();
    let res = load.finish(T);
    eprintln!("wait_ready reload took {took:?}; load meanwhile: {res}");
    assert_eq!(res["failed"], 0, "{res}");
    assert!(took >= Duration::from_millis(1400), "reload did not wait for ready: {took:?}");
    let p =
        pm2.wait_for("new worker online", T, |l| all_online(l, "rdy", 1) && pid(&l[0]) != first)[0].clone();
    let second = pid(&p);
    let stamp = |log: &str, what: &str, pid: u64| -> Option<u64> {
        log.lines().find_map(|l| l.strip_prefix(&format!("{what} {pid} "))?.trim().parse().ok())
    };
    let ready_at = stamp(&out_log(&p), "ready", second).expect("new worker said ready");
    let gone_at = poll("the old worker to be disconnected", T, || stamp(&out_log(&p), "disconnect", first));
    assert!(
        gone_at >= ready_at,
        "old worker retired at {gone_at}, before the new one was ready at {ready_at}"
    );
    wait_dead(&[first].into());
}

/// An app that listens but never says `ready`: `start --wait-ready` gives up
/// after listen_timeout and marks it online.
#[test]
fn listen_timeout_ends_a_wait_ready_start() {
    let port = free_port();
    let pm2 = pm2_with(&[("PORT", port.to_string())]);
    let t0 = Instant::now();
    pm2.run(&[
        "start",
        "router_app.js",
        "-i",
        "1",
        "--name",
        "mute",
        "--wait-ready",
        "--listen-timeout",
        "1500",
    ])
    .ok();
    let took = t0.elapsed();
    eprintln!("wait_ready start of a never-ready app (listen_timeout 1500) took {took:?}");
    assert!(took >= Duration::from_millis(1400), "start did not wait: {took:?}");
    // Without listen_timeout it would wait forever; the bound is generous.
    assert!(took < Duration::from_secs(30), "start waited far beyond listen_timeout: {took:?}");
    pm2.wait_for("online", T, |l| all_online(l, "mute", 1));
    assert!(http_get(port, "/").is_ok());
}

/// A worker that never listens: reload goes on after listen_timeout.
#[test]
fn listen_timeout_ends_a_reload_of_a_never_listening_app() {
    let pm2 = pm2_with(&[]);
    pm2.run(&["start", "never_listens.js", "-i", "1", "--name", "idle", "--listen-timeout", "1000"]).ok();
    let first = pid(&pm2.wait_for("online", T, |l| all_online(l, "idle", 1))[0]);
    let t0 = Instant::now();
    pm2.run(&["reload", "idle"]).ok();
    let took = t0.elapsed();
    eprintln!("reload of a never-listening app (listen_timeout 1000) took {took:?}");
    assert!(took >= Duration::from_millis(900), "reload did not wait for listen_timeout: {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let list = pm2.wait_for("replaced", T, |l| all_online(l, "idle", 1) && pid(&l[0]) != first);
    assert_eq!(restarts(&list[0]), 1);
    assert!(pm2.daemon_log().contains("did not listen within 1000ms"), "{}", pm2.daemon_log());
    wait_dead(&[first].into());
}

#[test]
fn graceful_stop_reaches_the_sigint_handler_of_every_worker() {
    let port = free_port();
    let pm2 = pm2_with(&[("PORT", port.to_string())]);
    // A kill_timeout far beyond the deadline below: a stop that waited for
    // it cannot pass.
    pm2.run(&["start", "router_app.js", "-i", "2", "--name", "web", "--kill-timeout", "120000"]).ok();
    let list = pm2.wait_for("2 online", T, |l| all_online(l, "web", 2));
    // `online` comes from Node before the app's code ran: wait until each
    // worker listens, so its SIGINT handler is installed before the stop.
    for p in &list {
        poll("the worker to listen", T, || {
            out_log(p).contains(&format!("listening {} ", pid(p))).then_some(())
        });
    }
    let t0 = Instant::now();
    pm2.run(&["stop", "web"]).ok();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(30), "stop waited for kill_timeout: {took:?}");
    let after = pm2.jlist();
    for p in &list {
        assert!(
            out_log(p).contains(&format!("sigint {}\n", pid(p))),
            "no SIGINT seen by {}:\n{}",
            pid(p),
            out_log(p)
        );
        assert!(!pid_alive(pid(p) as i32));
    }
    for p in named(&after, "web") {
        assert_eq!(status(p), "stopped");
        assert_eq!(p["pm2_env"]["exit_code"], 0, "{p}");
    }
    assert!(!pm2.daemon_log().contains("SIGKILL"), "{}", pm2.daemon_log());
}

#[test]
fn an_app_listening_on_two_ports_gets_both() {
    let (a, b) = (free_port(), free_port());
    let pm2 = pm2_with(&[("PORT", a.to_string()), ("PORT2", b.to_string())]);
    pm2.run(&["start", "router_app.js", "-i", "2", "--name", "two"]).ok();
    let list = pm2.wait_for("2 online", T, |l| all_online(l, "two", 2));
    let all = pids_of(&list, "two");
    for port in [a, b] {
        poll("the port to answer", T, || http_get(port, "/").ok());
        let s = spread(port, "/", 10);
        assert_eq!(s.keys().copied().collect::<BTreeSet<_>>(), all, "port {port}: {s:?}");
        assert_eq!(http_get(port, "/").unwrap()["port"], port, "served through the wrong listener");
    }
    // A reload ends its wait at the new worker's first `listening`, before
    // it may have asked for the second port: with one worker, the second
    // port has no member for a moment and must queue, not drop.
    pm2.run(&["scale", "two", "1"]).ok();
    pm2.wait_for("1 online", T, |l| all_online(l, "two", 1));
    let loads: Vec<Load> = [a, b]
        .iter()
        .map(|p| {
            Load::spawn(&[format!("port={p}"), "lanes=3".into(), "count=100000".into(), "ms=3000".into()])
        })
        .collect();
    for l in &loads {
        l.wait_started(T);
    }
    pm2.run(&["reload", "two"]).ok();
    pm2.run(&["reload", "two"]).ok();
    for (port, l) in [a, b].into_iter().zip(loads) {
        let res = l.finish(T);
        eprintln!("reload of a two-port app, load on port {port}: {res}");
        assert_eq!(res["failed"], 0, "port {port}: {res}");
    }
}

#[test]
fn unix_socket_listener() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("x.sock");
    let pm2 = pm2_with(&[("SOCK", sock.to_string_lossy().into_owned())]);
    pm2.run(&["start", "router_app.js", "-i", "2", "--name", "ux"]).ok();
    let list = pm2.wait_for("2 online", T, |l| all_online(l, "ux", 2));
    poll("the socket to answer", T, || http_get_unix(&sock, "/").ok());
    let mut s = BTreeMap::new();
    for _ in 0..10 {
        let v = http_get_unix(&sock, "/").expect("request on the unix socket");
        *s.entry(v["pid"].as_u64().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(s.keys().copied().collect::<BTreeSet<_>>(), pids_of(&list, "ux"), "{s:?}");
    // Node's load generator, too (http.request with socketPath).
    let res =
        Load::spawn(&[format!("socket={}", sock.display()), "lanes=4".into(), "count=40".into()]).finish(T);
    assert_eq!((res["ok"].as_u64(), res["failed"].as_u64()), (Some(40), Some(0)), "{res}");
    pm2.run(&["delete", "ux"]).ok();
    // Node removes the socket file when the server closes; so does the daemon.
    poll("the socket file to be removed", T, || (!Path::new(&sock).exists()).then_some(()));
}

/// The port is taken by another program (this test, on 127.0.0.1; the
/// worker asks for the bare port, which the daemon binds dual stack on `::`
/// — that conflicts, as it does for Node). The app sees exactly the error
/// Node's own cluster primary gives it.
#[test]
fn port_in_use_is_eaddrinuse_as_node_reports_it() {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let mut pm2 = pm2_with(&[("PORT", port.to_string())]);

    // Reference: the same app under Node's cluster primary.
    let dir = node_dir();
    let reference = std::process::Command::new("node")
        .args(["cluster_ref.js", "router_app.js"])
        .current_dir(&dir)
        .env("PORT", port.to_string())
        .env("ON_ERROR", "log")
        .env("REF_UNTIL", "listen-error")
        .output()
        .expect("node cluster_ref.js");
    let ref_out = String::from_utf8_lossy(&reference.stdout);
    let ref_err =
        ref_out.lines().find(|l| l.starts_with("listen-error ")).expect("reference error line").to_string();
    let ref_json: Value = serde_json::from_str(ref_err.trim_start_matches("listen-error ")).unwrap();
    assert_eq!(ref_json["code"], "EADDRINUSE", "{ref_out}");

    // Without a handler: Node's unhandled 'error' crashes the worker (exit 1).
    // (First, so the daemon it spawns does not carry ON_ERROR: cluster
    // workers get the daemon's env too, as with pm2.)
    pm2.run(&["start", "router_app.js", "-i", "1", "--name", "crashy", "--max-restarts", "2"]).ok();
    let p = pm2.wait_for("crashed", T, |l| {
        named(l, "crashy").first().is_some_and(|p| restarts(p) >= 1 && p["pm2_env"]["exit_code"] == 1)
    });
    let p = named(&p, "crashy")[0].clone();
    let err = err_log(&p);
    assert!(err.contains(&format!("Error: bind EADDRINUSE null:{port}")), "{err}");
    assert!(err.contains("code: 'EADDRINUSE'"), "{err}");

    // With an error handler: the app logs it and keeps running.
    pm2.envs.push(("ON_ERROR".into(), "log".into()));
    pm2.run(&["start", "router_app.js", "-i", "1", "--name", "handled"]).ok();
    let p = poll("the app to log the listen error", T, || {
        let p = pm2.proc("handled")?;
        out_log(&p).contains("listen-error ").then_some(p)
    });
    let line = out_log(&p).lines().find(|l| l.starts_with("listen-error ")).unwrap().to_string();
    let got: Value = serde_json::from_str(line.trim_start_matches("listen-error ")).unwrap();
    assert_eq!(got, ref_json, "Corral: {got}\nNode:   {ref_json}");
    assert_eq!(status(&p), "online");
    assert_eq!(restarts(&p), 0);
    let log = pm2.daemon_log();
    let named_it = format!("App [handled:{}] cannot listen on port {port}: EADDRINUSE", p["pm_id"]);
    assert!(log.contains(&named_it), "pm2.log does not name it ({named_it}):\n{log}");

    drop(blocker);
}

/// Garbage on one worker's IPC channel: a frame whose length is absurd, a
/// well-framed message that is no V8 data, and (fork mode, JSON channel) a
/// line that is no JSON. Each time that worker is logged and restarted; the
/// daemon and another app are untouched.
#[test]
fn malformed_ipc_restarts_only_that_worker() {
    let a = free_port();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("garbage-sent");
    let mut p = pm2_with(&[("GARBAGE_MARKER", marker.to_string_lossy().into_owned())]);
    p.envs.push(("PORT".into(), a.to_string()));
    p.run(&["start", "http_app.js", "-i", "1", "--name", "other"]).ok();
    let list = p.wait_for("other online", T, |l| all_online(l, "other", 1));
    let other_pid = pids_of(&list, "other");
    let daemon_pid = std::fs::read_to_string(p.home().join("pm2.pid")).unwrap();

    for (kind, mode, logged) in [
        ("frame", &["-i", "1"][..], "wrote a malformed IPC frame"),
        ("payload", &["-i", "1"][..], "wrote a malformed IPC message (payload starts with 0x67"),
        ("line", &[][..], "wrote a malformed IPC message (invalid JSON message"),
    ] {
        let b = free_port();
        let name = format!("junk-{kind}");
        p.envs.retain(|(k, _)| k != "PORT" && k != "GARBAGE_KIND");
        p.envs.push(("PORT".into(), b.to_string()));
        p.envs.push(("GARBAGE_KIND".into(), kind.into()));
        let mut args = vec!["start", "garbage_ipc.js", "--name", &name];
        args.extend_from_slice(mode);
        p.run(&args).ok();
        let sent = marker.with_extension(kind);
        let sender: u64 =
            poll("the garbage to be written", T, || std::fs::read_to_string(&sent).ok()?.parse().ok());
        let list = p.wait_for("junk restarted", T, |l| {
            named(l, &name)
                .first()
                .is_some_and(|j| restarts(j) >= 1 && status(j) == "online" && pid(j) != sender)
        });
        let junk = named(&list, &name)[0].clone();
        assert_eq!(restarts(&junk), 1, "{kind}");
        let want = format!("[{name}:{}] {logged}", junk["pm_id"]);
        assert!(p.daemon_log().contains(&want), "{kind}: no {want:?} in\n{}", p.daemon_log());
        assert_eq!(junk["pm2_env"]["exec_mode"], if mode.is_empty() { "fork_mode" } else { "cluster_mode" });
        wait_dead(&[sender].into());
        // The restarted worker serves; the other app never noticed.
        let v = poll("junk to answer", T, || http_get(b, "/").ok());
        assert_eq!(v["pid"].as_u64(), Some(pid(&junk)), "{kind}");
        assert_eq!(spread(a, "/", 5).keys().copied().collect::<BTreeSet<_>>(), other_pid);
    }
    let list = p.jlist();
    assert_eq!(pids_of(&list, "other"), other_pid);
    assert_eq!(restarts(named(&list, "other")[0]), 0);
    assert_eq!(std::fs::read_to_string(p.home().join("pm2.pid")).unwrap(), daemon_pid);
}

/// `restart` of a one-worker app whose SIGINT handler closes its server
/// (the `close` message comes before the exit): the listener stays open and
/// queues connections for the replacement, so a restart under load fails no
/// request. A plain `stop` closes it: the port is free again.
#[test]
fn restart_of_a_single_worker_under_load_fails_no_request_and_stop_frees_the_port() {
    let port = free_port();
    let pm2 = pm2_with(&[("PORT", port.to_string())]);
    pm2.run(&["start", "http_app.js", "-i", "1", "--name", "solo"]).ok();
    let first = pid(&pm2.wait_for("online", T, |l| all_online(l, "solo", 1))[0]);
    let load =
        Load::spawn(&[format!("port={port}"), "lanes=4".into(), "count=100000".into(), "ms=3000".into()]);
    load.wait_started(T);
    let t0 = Instant::now();
    pm2.run(&["restart", "solo"]).ok();
    let took = t0.elapsed();
    let list = pm2.wait_for("replaced", T, |l| all_online(l, "solo", 1) && pid(&l[0]) != first);
    let res = load.finish(T);
    eprintln!("restart of 1 worker under load: {res}; `pm2 restart` took {took:?}");
    assert_eq!(res["failed"], 0, "{res}");
    assert!(spread_json(&res).contains_key(&pid(&list[0])), "{res}");

    pm2.run(&["stop", "solo"]).ok();
    poll("the port to be released", T, || std::net::TcpListener::bind(("127.0.0.1", port)).ok());
    assert!(http_get(port, "/").is_err());
}

/// Listeners belong to an app: a second app asking for the first one's port
/// gets EADDRINUSE, as a second program would.
#[test]
fn two_apps_cannot_share_a_port() {
    let port = free_port();
    let pm2 = pm2_with(&[("PORT", port.to_string()), ("ON_ERROR", "log".into())]);
    pm2.run(&["start", "router_app.js", "-i", "2", "--name", "first"]).ok();
    let list = pm2.wait_for("first online", T, |l| all_online(l, "first", 2));
    poll("first to answer", T, || http_get(port, "/").ok());
    pm2.run(&["start", "router_app.js", "-i", "1", "--name", "second"]).ok();
    let p = poll("second to see the error", T, || {
        let p = pm2.proc("second")?;
        out_log(&p).contains("listen-error ").then_some(p)
    });
    assert!(out_log(&p).contains(&format!("\"message\":\"bind EADDRINUSE null:{port}\"")), "{}", out_log(&p));
    // The first app keeps the port, alone.
    let s = spread(port, "/", 6);
    assert_eq!(s.keys().copied().collect::<BTreeSet<_>>(), pids_of(&list, "first"), "{s:?}");
}

/// A replacement that dies before it listens leaves the old worker serving:
/// `reload` fails (non-zero exit, the reason on stderr), the old pids stay,
/// and the load sees no failure.
#[test]
fn a_reload_whose_new_workers_crash_keeps_the_old_ones_serving() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let crash = dir.path().join("crash");
    let pm2 =
        pm2_with(&[("PORT", port.to_string()), ("CRASH_IF_EXISTS", crash.to_string_lossy().into_owned())]);
    pm2.run(&["start", "router_app.js", "-i", "2", "--name", "web"]).ok();
    let before = pids_of(&pm2.wait_for("2 online", T, |l| all_online(l, "web", 2)), "web");
    let load =
        Load::spawn(&[format!("port={port}"), "lanes=6".into(), "count=100000".into(), "ms=2500".into()]);
    load.wait_started(T);
    std::fs::write(&crash, "").unwrap();
    let r = pm2.run(&["reload", "web"]);
    assert_ne!(r.code, 0, "a failed reload must not exit 0\n{}", r.all());
    assert!(r.stderr.contains("the old worker keeps serving"), "{}", r.all());
    let res = load.finish(T);
    eprintln!("failed reload under load: {res}");
    assert_eq!(res["failed"], 0, "{res}");
    let list = pm2.jlist();
    assert!(all_online(&list, "web", 2), "{list:?}");
    assert_eq!(pids_of(&list, "web"), before);
    assert_eq!(spread_json(&res).keys().copied().collect::<BTreeSet<_>>(), before, "{res}");
}

/// What `server.address()` returns in a worker (built from the daemon's
/// `sockname`), compared with what Node's own cluster primary gives the same
/// app: bare port, explicit 127.0.0.1, port 0, unix socket.
#[test]
fn server_address_is_what_nodes_primary_reports() {
    let dir = tempfile::tempdir().unwrap();
    let reference = |envs: &[(&str, String)]| -> String {
        let mut c = std::process::Command::new("node");
        c.args(["cluster_ref.js", "router_app.js"]).current_dir(node_dir()).env("REF_UNTIL", "listening");
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().expect("node cluster_ref.js");
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = out.lines().find(|l| l.starts_with("listening ")).expect("reference listening line");
        line.splitn(4, ' ').nth(3).unwrap().to_string()
    };
    let pm2 = pm2_with(&[]);
    // The daemon first, without any app's env: cluster workers also get the
    // daemon's env, as with pm2.
    pm2.run(&["ping"]).ok();
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("bare", vec![("PORT", free_port().to_string())]),
        ("host", vec![("PORT", free_port().to_string()), ("HOST", "127.0.0.1".into())]),
        ("zero", vec![("PORT", "0".into())]),
        ("unix", vec![("SOCK", dir.path().join("ref.sock").to_string_lossy().into_owned())]),
    ];
    for (name, envs) in cases {
        let want = reference(&envs);
        let mut envs = envs;
        if name == "unix" {
            envs = vec![("SOCK", dir.path().join("corral.sock").to_string_lossy().into_owned())];
        }
        let mut cmd = pm2.cmd(&["start", "router_app.js", "-i", "1", "--name", name]);
        for (k, v) in &envs {
            cmd.env(k, v);
        }
        assert!(cmd.output().expect("pm2 start").status.success());
        let got = poll("the app to listen", T, || {
            let p = pm2.proc(name)?;
            let log = out_log(&p);
            let line = log.lines().find(|l| l.starts_with("listening "))?.to_string();
            Some(line.splitn(4, ' ').nth(3)?.to_string())
        });
        match name {
            "zero" => {
                let (w, g): (Value, Value) =
                    (serde_json::from_str(&want).unwrap(), serde_json::from_str(&got).unwrap());
                assert_eq!((&w["address"], &w["family"]), (&g["address"], &g["family"]), "{name}");
                assert!(g["port"].as_u64().unwrap_or(0) > 0, "{got}");
            }
            "unix" => assert_eq!(got.replace("corral.sock", "ref.sock"), want, "{name}"),
            _ => assert_eq!(got, want, "{name}"),
        }
    }
}
