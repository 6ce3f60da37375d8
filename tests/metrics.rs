//! The Prometheus endpoint (`PM2_METRICS`) end to end: a fork app and a 2-worker cluster app
//! whose workers use prom-client's `AggregatorRegistry` (the daemon answers as their cluster
//! primary), the output checked by the real `promtool check metrics`; bad HTTP gets clean
//! errors and the daemon lives on.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(45);

/// The npm fixture with prom-client (`tests/promclient`), installed from its lockfile when
/// missing.
fn promclient_dir() -> PathBuf {
    static NPM: std::sync::Once = std::sync::Once::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/promclient");
    NPM.call_once(|| {
        if !dir.join("node_modules/prom-client").is_dir() {
            let st = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).status();
            assert!(st.is_ok_and(|s| s.success()), "npm ci in {} failed", dir.display());
        }
    });
    dir
}

/// Writes `request` on a new connection and reads until the server closes (or 20 s pass).
fn exchange(port: u16, request: &[u8]) -> Result<String, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
    // The server may answer and close before taking every byte of a bad request.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if out.is_empty() => return Err(e.to_string()),
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// One scrape: the body of a 200 answer.
fn scrape(port: u16) -> Result<String, String> {
    let r = exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let (head, body) = r.split_once("\r\n\r\n").ok_or("no head")?;
    if !head.starts_with("HTTP/1.1 200 ") || !head.contains("text/plain; version=0.0.4") {
        return Err(format!("unexpected answer: {head}"));
    }
    Ok(body.to_string())
}

/// The value of the sample line starting with `series ` (name and labels as written).
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics` on the exposition: no parse error at all (exit 1), and no lint
/// problem (exit 3) with any of the daemon's own `corral_*` families. Apps' families are the
/// apps' own naming (prom-client's default metrics have gauges ending in `_total`, which the
/// linter flags); they must parse, their names are not ours to fix.
fn promtool(body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; scripts/test-all installs it)");
    child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let only_app_lint = out.status.code() == Some(3)
        && report.lines().filter(|l| !l.trim().is_empty()).all(|l| !l.starts_with("corral_"));
    assert!(
        out.status.success() || only_app_lint,
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn with_metrics() -> (Pm2, u16) {
    let mut pm2 = Pm2::new();
    let port = free_port();
    pm2.envs.push(("PM2_METRICS".into(), format!("127.0.0.1:{port}")));
    (pm2, port)
}

#[test]
fn metrics_cover_processes_cluster_and_prom_client_and_pass_promtool() {
    let (mut pm2, mport) = with_metrics();
    pm2.cwd = promclient_dir();
    let app_port = free_port();
    pm2.envs.push(("PORT".into(), app_port.to_string()));
    pm2.run(&["start", "cluster_app.js", "-i", "2", "--name", "pc"]).ok();
    let forever = fixtures().join("forever.js");
    pm2.run(&["start", forever.to_str().expect("utf-8 path"), "--name", "fk"]).ok();
    pm2.wait_for("3 online", T, |l| l.len() == 3 && l.iter().all(|p| status(p) == "online"));

    // Both workers answered: 5 + 5 (sum), the highest instance (max), `omit` left out.
    let body = poll("aggregated prom-client metrics", T, || {
        let b = scrape(mport).ok()?;
        (value(&b, "fixture_hits_total{kind=\"boot\",app=\"pc\"}") == Some(10.0)).then_some(b)
    });
    assert_eq!(value(&body, "fixture_top_instance{app=\"pc\"}"), Some(1.0), "{body}");
    assert_eq!(value(&body, "fixture_latency_seconds_count{app=\"pc\"}"), Some(2.0), "{body}");
    assert!(!body.contains("fixture_omitted"), "{body}");

    for (app, id) in [("pc", 0), ("pc", 1), ("fk", 2)] {
        let l = format!("{{app=\"{app}\",pm_id=\"{id}\"");
        assert_eq!(
            value(&body, &format!("corral_process_status{l},status=\"online\"}}")),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            value(&body, &format!("corral_process_status{l},status=\"stopped\"}}")),
            Some(0.0),
            "{body}"
        );
        assert_eq!(value(&body, &format!("corral_process_restarts_total{l}}}")), Some(0.0), "{body}");
        assert!(
            value(&body, &format!("corral_process_memory_bytes{l}}}")).is_some_and(|m| m > 0.0),
            "{body}"
        );
        assert!(value(&body, &format!("corral_process_uptime_seconds{l}}}")).is_some(), "{body}");
        assert!(value(&body, &format!("corral_process_cpu_usage_ratio{l}}}")).is_some(), "{body}");
    }
    assert!(value(&body, "corral_daemon_resident_memory_bytes").is_some_and(|v| v > 0.0), "{body}");
    assert!(value(&body, "corral_daemon_open_fds").is_some_and(|v| v > 0.0), "{body}");
    for family in [
        "corral_balancer_connections_accepted_total",
        "corral_balancer_handoffs_total",
        "corral_balancer_responses_total",
        "corral_balancer_requests_in_flight",
        "corral_balancer_handoff_duration_seconds",
        "corral_relay_frames_total",
        "corral_relay_dropped_frames_total",
        "corral_cluster_connections_total",
        "corral_daemon_event_loop_lag_seconds",
    ] {
        assert!(body.contains(&format!("# TYPE {family} ")), "{family} missing:\n{body}");
    }

    // A request to the cluster app is counted on the worker that took it.
    let r = http_get_text(app_port);
    assert!(r.contains("ok"), "{r}");
    let body = poll("a cluster connection counted", T, || {
        let b = scrape(mport).ok()?;
        let n: f64 = b
            .lines()
            .filter(|l| l.starts_with("corral_cluster_connections_total{app=\"pc\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (n >= 1.0).then_some(b)
    });
    promtool(&body);

    // A restart shows in the counter.
    pm2.run(&["restart", "fk"]).ok();
    poll("restart counted", T, || {
        let b = scrape(mport).ok()?;
        (value(&b, "corral_process_restarts_total{app=\"fk\",pm_id=\"2\"}") == Some(1.0)).then_some(())
    });
}

fn http_get_text(port: u16) -> String {
    exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap_or_else(|e| e)
}

#[test]
fn metrics_endpoint_refuses_bad_http_and_the_daemon_lives_on() {
    let (pm2, mport) = with_metrics();
    pm2.run(&["ping"]).ok();
    poll("endpoint up", T, || scrape(mport).ok());

    let status = |req: &[u8]| -> String {
        let r = exchange(mport, req).unwrap_or_else(|e| panic!("no answer: {e}"));
        r.lines().next().unwrap_or("").to_string()
    };
    assert_eq!(status(b"garbage\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    assert_eq!(status(b"\x00\xff\xfe\x01\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    assert_eq!(
        status(b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(status(b"GET /other HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
    assert_eq!(status(b"GET /metrics HTTP/1.1\r\nContent-Length: 9\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(status(&huge), "HTTP/1.1 431 Request Header Fields Too Large");
    let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        status(format!("GET /metrics HTTP/1.1\r\n{many}\r\n").as_bytes()),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // Connections that say nothing, or half a head, then vanish.
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", mport)).expect("connect");
        let _ = s.write_all(b"GET /met");
    }
    // Two requests on one connection (keep-alive), both answered.
    let two =
        exchange(mport, b"GET /metrics HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
            .expect("keep-alive answers");
    assert_eq!(two.matches("HTTP/1.1 200 OK").count(), 2);

    scrape(mport).expect("still serving");
    pm2.run(&["ping"]).ok();
    assert!(pm2.daemon_log().contains(&format!("Prometheus metrics on http://127.0.0.1:{mport}/metrics")));
}

#[test]
fn metrics_with_a_bad_address_are_off_and_the_daemon_runs() {
    let mut pm2 = Pm2::new();
    pm2.envs.push(("PM2_METRICS".into(), "not an address".into()));
    pm2.run(&["ping"]).ok();
    let log = poll("the error in pm2.log", T, || {
        let l = pm2.daemon_log();
        l.contains("PM2_METRICS not an address: cannot listen").then_some(l)
    });
    assert!(!log.contains("Prometheus metrics on"), "{log}");
    pm2.run(&["ls"]).ok();
}

#[test]
fn metrics_show_the_balancer_and_relay_of_a_socketio_app() {
    let (mut pm2, mport) = with_metrics();
    pm2.cwd = node_dir();
    pm2.run(&["start", "sio_worker.js", "-i", "2", "--name", "sio"]).ok();
    pm2.wait_for("2 online workers", T, |l| l.iter().filter(|p| status(p) == "online").count() == 2);
    let sticky: u16 =
        pm2.envs.iter().find(|(k, _)| k == "PM2_PORT").and_then(|(_, v)| v.parse().ok()).expect("port");
    let out = Command::new("node")
        .args(["sio_client.js", "broadcast", &sticky.to_string()])
        .current_dir(node_dir())
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"ok\":true"), "{stdout}{}", String::from_utf8_lossy(&out.stderr));

    let body = scrape(mport).expect("scrape");
    let v = |s: &str| value(&body, s).unwrap_or_else(|| panic!("{s} missing:\n{body}"));
    assert!(v("corral_balancer_connections_accepted_total") >= 1.0, "{body}");
    assert!(v("corral_balancer_handoffs_total") >= 1.0, "{body}");
    assert!(v("corral_balancer_handoff_duration_seconds_count") >= 1.0, "{body}");
    assert!(v("corral_relay_frames_total{type=\"BROADCAST\"}") >= 1.0, "{body}");
    assert!(v("corral_relay_bytes_total{type=\"BROADCAST\"}") > 0.0, "{body}");
    let ready = body
        .lines()
        .filter(|l| l.starts_with("corral_balancer_worker_ready{app=\"sio\"") && l.ends_with(" 1"));
    assert_eq!(ready.count(), 2, "{body}");
    assert_eq!(
        body.lines().filter(|l| l.starts_with("corral_balancer_sessions{app=\"sio\"")).count(),
        2,
        "{body}"
    );
    promtool(&body);
}
