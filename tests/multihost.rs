//! Several nodes, one Socket.IO cluster: two daemons on this machine (each its own
//! PM2_HOME and sticky port) joined through a real `redis-server` the test starts on a free
//! port, each running the socket.io fixture in 2 workers.

mod common;
use common::*;
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const SECRET: &str = "a-long-enough-cluster-secret";

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// A throwaway redis-server: no persistence, its own temp dir, killed on drop.
struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// With TLS: the server's arguments for it (the port is then TLS only).
    tls: Option<Vec<String>>,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::Builder::new().prefix("corral-redis-").tempdir().expect("tempdir");
        let mut r = Redis { port: free_port(), dir, child: None, tls: None };
        r.spawn();
        r
    }

    /// A redis-server that speaks TLS only, with `pki`'s server certificate; it asks every
    /// client for a certificate and checks one that is shown (`tls-auth-clients optional`).
    fn start_tls(pki: &Pki) -> Redis {
        let dir = tempfile::Builder::new().prefix("corral-redis-").tempdir().expect("tempdir");
        let tls = vec![
            "--tls-cert-file".into(),
            pki.path("server.pem"),
            "--tls-key-file".into(),
            pki.path("server.key"),
            "--tls-ca-cert-file".into(),
            pki.path("ca.pem"),
            "--tls-auth-clients".into(),
            "optional".into(),
        ];
        let mut r = Redis { port: free_port(), dir, child: None, tls: Some(tls) };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let ports: Vec<String> = match &self.tls {
            None => vec!["--port".into(), port],
            Some(tls) => ["--port".into(), "0".into(), "--tls-port".into(), port]
                .into_iter()
                .chain(tls.iter().cloned())
                .collect(),
        };
        let child = Command::new("redis-server")
            .args(&ports)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (scripts/test-all installs it)");
        self.child = Some(child);
        let port = self.port;
        poll("redis-server accepting connections", T, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One command in Redis's inline form; the raw reply's first line.
    fn cmd(&self, line: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("redis");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string()
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }
}

/// Certificates made with the openssl CLI for one test: a CA, Redis's certificate for
/// 127.0.0.1 signed by it, a client certificate signed by it, and a second CA that signed
/// nothing (the wrong one). EC P-256 keys: quick to make.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    const CONF: &'static str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = corral-test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
";

    fn new() -> Pki {
        let dir = tempfile::Builder::new().prefix("corral-pki-").tempdir().expect("tempdir");
        let pki = Pki { dir };
        std::fs::write(pki.dir.path().join("openssl.cnf"), Self::CONF).unwrap();
        for ca in ["ca", "other-ca"] {
            pki.key(ca);
            pki.openssl(&[
                "req",
                "-x509",
                "-new",
                "-config",
                "openssl.cnf",
                "-extensions",
                "ca",
                "-subj",
                &format!("/CN=corral test {ca}"),
                "-days",
                "2",
                "-key",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        for (leaf, serial) in [("server", "2"), ("client", "3")] {
            pki.key(leaf);
            pki.openssl(&[
                "req",
                "-new",
                "-config",
                "openssl.cnf",
                "-subj",
                &format!("/CN=corral test {leaf}"),
                "-key",
                &format!("{leaf}.key"),
                "-out",
                &format!("{leaf}.csr"),
            ]);
            pki.openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{leaf}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "2",
                "-extfile",
                "openssl.cnf",
                "-extensions",
                "leaf",
                "-out",
                &format!("{leaf}.pem"),
            ]);
        }
        pki
    }

    fn key(&self, name: &str) {
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl is not installed (scripts/test-all installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).to_string_lossy().into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn port_of(pm2: &Pm2) -> u16 {
    pm2.envs.iter().find(|(k, _)| k == "PM2_PORT").and_then(|(_, v)| v.parse().ok()).expect("PM2_PORT")
}

fn node(redis: &Redis, id: &str, secret: &str) -> Pm2 {
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    pm2.envs.push(("PM2_CLUSTER_REDIS".into(), redis.url()));
    pm2.envs.push(("PM2_CLUSTER_SECRET".into(), secret.into()));
    pm2.envs.push(("PM2_NODE_ID".into(), id.into()));
    pm2
}

fn start_app(pm2: &Pm2, workers: usize) {
    let n = workers.to_string();
    pm2.run(&["start", "sio_worker.js", "-i", &n, "--name", "chat"]).ok();
    pm2.wait_for("workers online", T, |l| {
        l.iter().filter(|p| p["name"] == "chat" && status(p) == "online").count() == workers
    });
}

fn multi(args: &[String]) -> Value {
    let out =
        Command::new("node").arg("sio_multi.js").args(args).current_dir(node_dir()).output().expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "sio_multi {args:?}: not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn assert_ok(v: &Value, a: &Pm2, b: &Pm2) {
    assert_eq!(
        v["ok"],
        true,
        "scenario failed: {v}\n--- log A:\n{}\n--- log B:\n{}",
        a.daemon_log(),
        b.daemon_log()
    );
}

fn wait_log(pm2: &Pm2, what: &str) {
    let deadline = Instant::now() + T;
    while !pm2.daemon_log().contains(what) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what:?} in pm2.log:\n{}",
            pm2.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Runs a driver of tests/node that prints "progress <i>" on stderr as it goes, calling `at(i)`
/// for each (the test changes something while traffic flows); returns the driver's result,
/// its last stdout line as JSON. Bounded by `limit` (the driver's own timeout is set to it).
fn drive(
    script: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    limit: Duration,
    mut at: impl FnMut(u32),
) -> Value {
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(node_dir())
        .env("SIO_TIMEOUT_MS", limit.as_millis().to_string())
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    let err = child.stderr.take().expect("piped stderr");
    let deadline = Instant::now() + limit;
    for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
        assert!(Instant::now() < deadline, "{script} took too long");
        match line.strip_prefix("progress ").and_then(|n| n.parse::<u32>().ok()) {
            Some(i) => at(i),
            None => eprintln!("{script}: {line}"),
        }
    }
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{script} {args:?}: not JSON ({e}): {stdout}"))
}

#[test]
fn two_nodes_form_one_socketio_cluster_and_a_dead_node_is_closed() {
    let redis = Redis::start();
    let a = node(&redis, "node-a", SECRET);
    let b = node(&redis, "node-b", SECRET);
    start_app(&a, 2);
    start_app(&b, 2);
    let (pa, pb) = (port_of(&a), port_of(&b));

    let v = multi(&["cluster".into(), pa.to_string(), pb.to_string(), "4".into()]);
    assert_ok(&v, &a, &b);
    assert_eq!(v["fetchSocketsOnA"], 8, "{v}");
    assert_eq!(v["sseResponses"], 3, "{v}");
    wait_log(&a, "Cluster: node node-b joined");
    let report = a.run(&["report"]).ok().stdout.clone();
    let line_of = |k: &str| report.lines().find(|l| l.contains(k)).unwrap_or("").to_string();
    assert!(line_of("node id").contains("node-a"), "{report}");
    assert!(line_of("peers").contains("node-b"), "{report}");
    assert!(line_of("redis").contains("publisher connected, reader connected"), "{report}");
    // `pm2 ls` and `jlist` say it too.
    let ls = a.run(&["ls"]).ok().stdout.clone();
    assert!(
        ls.contains("Cluster node node-a: Redis redis://127.0.0.1:")
            && ls.contains("connected, peers: node-b"),
        "{ls}"
    );
    let entry = &a.jlist()[0]["corral_cluster"];
    assert_eq!(
        (entry["node_id"].as_str(), entry["redis"].as_str()),
        (Some("node-a"), Some("connected")),
        "{entry}"
    );
    assert_eq!(entry["peers"], serde_json::json!(["node-b"]), "{entry}");

    // One of B's workers stops: A's workers stop counting it (the close B's survivors get
    // is published too).
    let first = b.jlist()[0]["pm_id"].as_u64().unwrap().to_string();
    b.run(&["stop", &first]).ok();
    let v = multi(&["count".into(), pa.to_string(), "0".into(), "3".into()]);
    assert_ok(&v, &a, &b);

    // kill -9 node B: its daemon and its workers, nothing gets to say goodbye.
    let daemon: i32 = std::fs::read_to_string(b.home().join("pm2.pid")).unwrap().trim().parse().unwrap();
    let workers: Vec<i32> = b.jlist().iter().map(|p| pid(p) as i32).filter(|&p| p > 0).collect();
    for p in std::iter::once(daemon).chain(workers.iter().copied()) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let v = multi(&["count".into(), pa.to_string(), "0".into(), "2".into()]);
    assert_ok(&v, &a, &b);
    eprintln!("serverCount on A dropped to 2 {} ms after B was killed (client poll included)", v["ms"]);
    wait_log(&a, "node node-b is gone");
}

#[test]
fn a_redis_restart_during_a_paced_broadcast_loses_and_duplicates_nothing() {
    let mut redis = Redis::start();
    let a = node(&redis, "rs-a", SECRET);
    let b = node(&redis, "rs-b", SECRET);
    start_app(&a, 2);
    start_app(&b, 2);
    let (pa, pb) = (port_of(&a), port_of(&b));

    let mut restarted = false;
    let v = drive(
        "sio_multi.js",
        &["paced", &pa.to_string(), &pb.to_string(), "300"],
        &[],
        Duration::from_secs(60),
        |i| {
            if i == 50 {
                redis.stop();
            }
            // Down while about 100 messages are emitted.
            if i == 150 && !restarted {
                redis.spawn();
                restarted = true;
            }
        },
    );
    assert!(restarted);
    assert_ok(&v, &a, &b);
    assert_eq!(v["received"], 300, "{v}");
    // Redis really went away under both nodes, and came back empty.
    for (name, n) in [("A", &a), ("B", &b)] {
        let log = n.daemon_log();
        assert!(log.contains("lost the Redis connection"), "node {name} never lost Redis:\n{log}");
        for l in log.lines().filter(|l| l.contains("Cluster:")) {
            eprintln!("{name}: {l}");
        }
    }
}

/// Entries delivered by pushes, from `pm2 report`'s "messages" line ("delivered N (M pushed
/// straight from their node)").
fn pushed_in(pm2: &Pm2) -> u64 {
    let report = pm2.run(&["report"]).ok().stdout.clone();
    report
        .lines()
        .filter(|l| l.starts_with("messages"))
        .find_map(|l| l.split('(').nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no pushed count in the report:\n{report}"))
}

/// With node-to-node listeners the nodes push their adapter frames straight to each other,
/// Redis staying the ordered log: broadcasts keep crossing while Redis is down, and once it is
/// back the stream's copies of what was pushed are echoes, so every message arrives once and
/// in order.
#[test]
fn adapter_frames_go_straight_to_the_other_node_and_cross_while_redis_is_down() {
    let mut redis = Redis::start();
    let mut a = node(&redis, "dp-a", SECRET);
    let mut b = node(&redis, "dp-b", SECRET);
    let listen_a = format!("127.0.0.1:{}", free_port());
    a.envs.push(("PM2_CLUSTER_LISTEN".into(), listen_a.clone()));
    b.envs.push(("PM2_CLUSTER_LISTEN".into(), format!("127.0.0.1:{}", free_port())));
    start_app(&a, 2);
    start_app(&b, 2);
    let (pa, pb) = (port_of(&a), port_of(&b));
    // B pushes to A once it has read A's entries and its address from Redis.
    wait_log(&b, "pushing adapter messages straight to node dp-a");

    // A push with a made-up signature, then bytes that are no push frame: each closes its own
    // connection, logged; the real pushes go on (below).
    let forged = {
        let body = b"not a batch";
        let mut f = b"CRA1".to_vec();
        f.extend_from_slice(&((2 + 4 + 64 + body.len()) as u32).to_be_bytes());
        f.extend_from_slice(&4u16.to_be_bytes());
        f.extend_from_slice(b"dp-b");
        f.extend_from_slice(&[b'0'; 64]);
        f.extend_from_slice(body);
        f
    };
    for bytes in [forged, b"CRA1\xff\xff\xff\xffgarbage".to_vec()] {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&listen_a).expect("A's node-to-node port");
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(&bytes).unwrap();
        let mut rest = Vec::new();
        // A closes the connection without a word (a timeout here would fail the read).
        assert_eq!(s.read_to_end(&mut rest).map(|_| rest.len()).ok(), Some(0));
    }
    wait_log(&a, "push: bad signature (claims node \"dp-b\"");
    wait_log(&a, "push frame of 4294967295 bytes is larger than");

    let mut down_at = None;
    let mut restarted = false;
    let v = drive(
        "sio_multi.js",
        &["paced", &pa.to_string(), &pb.to_string(), "200"],
        &[],
        Duration::from_secs(90),
        |i| {
            if i == 20 {
                redis.stop();
                down_at = Some(pushed_in(&a));
            }
            // Messages 21..=119 were emitted after Redis went away: each must reach A by a
            // push (more entries may come: the adapters' own heartbeats).
            if i == 120 && !restarted {
                let from = down_at.expect("Redis stopped at 20");
                let deadline = Instant::now() + T;
                loop {
                    let now = pushed_in(&a);
                    if now >= from + 99 {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "only {} entries pushed to A with Redis down",
                        now - from
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                redis.spawn();
                restarted = true;
            }
        },
    );
    assert!(restarted);
    assert_ok(&v, &a, &b);
    assert_eq!(v["received"], 200, "{v}");
    for (name, n) in [("A", &a), ("B", &b)] {
        let log = n.daemon_log();
        assert!(log.contains("lost the Redis connection"), "node {name} never lost Redis:\n{log}");
    }
}

/// `pm2 update` on a node, during a paced broadcast from the other node to a client of the
/// updated one: to the cluster nothing happened. The node keeps its id (made up at start
/// here: no PM2_NODE_ID), incarnation and sequence, so the other node's workers never stop
/// counting its workers; its reader resumes at its stream position, so what was published
/// during the update arrives, once and in order.
#[test]
fn an_in_place_update_of_a_node_is_invisible_to_the_cluster() {
    let redis = Redis::start();
    let a = node(&redis, "up-a", SECRET);
    let mut b = node(&redis, "unused", SECRET);
    b.envs.retain(|(k, _)| k != "PM2_NODE_ID");
    b.envs.push(("PM2_CLUSTER_LISTEN".into(), format!("127.0.0.1:{}", free_port())));
    start_app(&a, 2);
    start_app(&b, 2);
    let (pa, pb) = (port_of(&a), port_of(&b));
    let id_of = |n: &Pm2| n.jlist()[0]["corral_cluster"]["node_id"].as_str().unwrap_or("").to_string();
    let b_id = id_of(&b);
    assert!(!b_id.is_empty() && b_id != "unused", "{b_id}");

    // The receiving client is on B (the node updated), the sender on A.
    let mut updated = false;
    let v = drive(
        "sio_multi.js",
        &["paced", &pb.to_string(), &pa.to_string(), "300"],
        &[("SIO_WATCH_COUNT", "4")],
        Duration::from_secs(90),
        |i| {
            if i != 60 || updated {
                return;
            }
            b.run(&["update"]).ok();
            updated = true;
            // The new image knows the sessions B's workers hold (the receiving client's at
            // least) and keeps their records alive for the other nodes.
            let deadline = Instant::now() + T;
            loop {
                let report = b.run(&["report"]).ok().stdout.clone();
                // "sessions             : 1 owned here (...)"
                let owned = report
                    .lines()
                    .filter(|l| l.starts_with("sessions"))
                    .find_map(|l| l.split(':').nth(1)?.split_whitespace().next()?.parse::<u64>().ok());
                if owned.is_some_and(|n| n >= 1) {
                    break;
                }
                assert!(Instant::now() < deadline, "no session owned after the update:\n{report}");
                std::thread::sleep(Duration::from_millis(50));
            }
        },
    );
    assert!(updated);
    assert_ok(&v, &a, &b);
    assert_eq!(v["received"], 300, "{v}");
    assert_eq!(v["countOff"], 0, "{v}");
    let log = b.daemon_log();
    assert!(log.contains(&format!("Cluster: node {b_id} continues after the in-place update")), "{log}");
    assert_eq!(id_of(&b), b_id);
    assert!(!a.daemon_log().contains("is gone"), "{}", a.daemon_log());
}

/// The other ways a daemon gets its apps: node B in a container (`pm2-runtime`, the daemon
/// in the foreground) and node A brought back by `pm2 resurrect` after `pm2 kill`: each
/// joins the cluster like a `pm2 start` node.
#[test]
fn nodes_started_by_pm2_runtime_and_by_resurrect_join_the_cluster() {
    let redis = Redis::start();
    let mut a = node(&redis, "rt-a", SECRET);
    let mut b = node(&redis, "rt-b", SECRET);
    // Both take pushes: the direct path too must come back whichever way a daemon started.
    for n in [&mut a, &mut b] {
        n.envs.push(("PM2_CLUSTER_LISTEN".into(), format!("127.0.0.1:{}", free_port())));
    }
    start_app(&a, 2);
    // B's environment (PM2_HOME, PM2_PORT, the cluster settings), as its CLI gets it.
    let env = b.cmd(&[]);
    let mut runtime = Command::new(env!("CARGO_BIN_EXE_pm2-runtime"))
        .args(["start", "sio_worker.js", "-i", "2", "--name", "chat"])
        .current_dir(node_dir())
        .envs(env.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pm2-runtime");
    // Asked before its daemon listens, the CLI would start a daemon of its own.
    let pid_file = b.home().join("pm2.pid");
    poll("pm2-runtime's daemon up", T, || {
        let pid = std::fs::read_to_string(&pid_file).ok()?;
        (pid.trim() == runtime.id().to_string() && b.run(&["ping"]).code == 0).then_some(())
    });
    b.wait_for("pm2-runtime's workers online", T, |l| {
        l.iter().filter(|p| p["name"] == "chat" && status(p) == "online").count() == 2
    });
    let (pa, pb) = (port_of(&a), port_of(&b));
    let v = multi(&["cluster".into(), pa.to_string(), pb.to_string(), "4".into()]);
    assert_ok(&v, &a, &b);

    // A: saved, killed (its peer sees it go), resurrected: one cluster again.
    a.run(&["save"]).ok();
    a.run(&["kill"]).ok();
    let v = multi(&["count".into(), pb.to_string(), "0".into(), "2".into()]);
    assert_ok(&v, &a, &b);
    // What A's first daemon pushed to B (nothing more comes while A is down).
    let pushed_to_b = pushed_in(&b);
    a.run(&["resurrect"]).ok();
    a.wait_for("resurrected workers online", T, |l| {
        l.iter().filter(|p| p["name"] == "chat" && status(p) == "online").count() == 2
    });
    let v = multi(&["cluster".into(), pa.to_string(), pb.to_string(), "4".into()]);
    assert_ok(&v, &a, &b);
    // Adapter messages go straight both ways again: the resurrected daemon (a new incarnation,
    // its counters from zero) gets pushes from pm2-runtime's, and pushes to it.
    for (to, before, name) in [(&a, 0, "A"), (&b, pushed_to_b, "B")] {
        let deadline = Instant::now() + T;
        while pushed_in(to) <= before {
            assert!(Instant::now() < deadline, "nothing pushed to {name}:\n{}", to.daemon_log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // SAFETY: plain kill of our child.
    unsafe { libc::kill(runtime.id() as i32, libc::SIGTERM) };
    let status = poll("pm2-runtime to exit", T, || runtime.try_wait().ok().flatten());
    assert_eq!(status.code(), Some(0));
    let v = multi(&["count".into(), pa.to_string(), "0".into(), "2".into()]);
    assert_ok(&v, &a, &b);
}

/// `pm2 update` on the node that owns a polling session while its requests alternate between
/// that node and another one (which forwards them): not one request fails. The node-to-node
/// listener is handed to the new image, so forwards that arrive during the exec wait in its
/// backlog instead of being refused (which the forwarding node would answer with
/// "Session ID unknown", ending the session).
#[test]
fn forwarded_requests_survive_an_in_place_update_of_their_owner() {
    let redis = Redis::start();
    let (a, sa, _) = node_on(&redis, "fu-a", "127.0.0.2");
    let (b, sb, lb) = node_on(&redis, "fu-b", "127.0.0.3");
    start_app(&a, 2);
    start_app(&b, 2);
    // The session is B's (handshake there); rounds alternate between A and B.
    let mut updated = false;
    let v = drive(
        "sio_forward.js",
        &["alternate", &sb, &sa, "150"],
        &[("SIO_PACE_MS", "15")],
        Duration::from_secs(90),
        |i| {
            if i == 20 && !updated {
                b.run(&["update"]).ok();
                updated = true;
            }
        },
    );
    assert!(updated);
    assert_ok(&v, &a, &b);
    let log = b.daemon_log();
    assert!(log.contains(&format!("taking requests forwarded by other nodes on {lb}")), "{log}");
    assert!(log.contains("continues after the in-place update"), "{log}");
}

#[test]
fn a_node_with_the_wrong_secret_is_refused_and_logged() {
    let redis = Redis::start();
    let a = node(&redis, "good-a", SECRET);
    let b = node(&redis, "good-b", SECRET);
    let c = node(&redis, "intruder", "not-the-cluster-secret");
    start_app(&a, 2);
    start_app(&b, 2);
    start_app(&c, 1);
    let (pa, pb) = (port_of(&a), port_of(&b));
    // A sees the intruder's entries and refuses them...
    wait_log(&a, "bad signature (claims node \"intruder\"");
    wait_log(&c, "bad signature");
    // ...so its worker is never counted: the cluster is A's and B's 4 workers.
    let v = multi(&["cluster".into(), pa.to_string(), pb.to_string(), "4".into()]);
    assert_ok(&v, &a, &b);
    assert!(!a.daemon_log().contains("node intruder joined"));
}

#[test]
fn a_bad_cluster_setting_is_logged_and_the_node_runs_alone() {
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    pm2.envs.push(("PM2_CLUSTER_REDIS".into(), "rediss://127.0.0.1:1".into()));
    pm2.envs.push(("PM2_CLUSTER_SECRET".into(), SECRET.into()));
    pm2.envs.push(("PM2_CLUSTER_REDIS_CA".into(), "/nonexistent/corral-ca.pem".into()));
    start_app(&pm2, 2);
    wait_log(&pm2, "PM2_CLUSTER_REDIS_CA /nonexistent/corral-ca.pem: ");
    assert!(pm2.daemon_log().contains("this node runs alone"));
}

#[test]
fn nodes_meet_over_tls_and_a_node_with_the_wrong_ca_is_refused() {
    let pki = Pki::new();
    let redis = Redis::start_tls(&pki);
    let with = |mut pm2: Pm2, files: &[(&str, &str)]| {
        for (k, f) in files {
            pm2.envs.push((k.to_string(), pki.path(f)));
        }
        pm2
    };
    let a = with(node(&redis, "tls-a", SECRET), &[("PM2_CLUSTER_REDIS_CA", "ca.pem")]);
    // B also shows a client certificate, which Redis checks.
    let b = with(
        node(&redis, "tls-b", SECRET),
        &[
            ("PM2_CLUSTER_REDIS_CA", "ca.pem"),
            ("PM2_CLUSTER_REDIS_CERT", "client.pem"),
            ("PM2_CLUSTER_REDIS_KEY", "client.key"),
        ],
    );
    // C trusts a CA that did not sign Redis's certificate: it must not connect.
    let c = with(node(&redis, "tls-c", SECRET), &[("PM2_CLUSTER_REDIS_CA", "other-ca.pem")]);
    start_app(&a, 2);
    start_app(&b, 2);
    start_app(&c, 2);
    let (pa, pb, pc) = (port_of(&a), port_of(&b), port_of(&c));

    let v = multi(&["cluster".into(), pa.to_string(), pb.to_string(), "4".into()]);
    assert_ok(&v, &a, &b);
    wait_log(&a, "Cluster: node tls-b joined");
    wait_log(&a, &format!("publishing to Redis at rediss://127.0.0.1:{}/0", redis.port));
    // C says why, once, and keeps relaying between its own workers.
    wait_log(&c, "TLS handshake failed: invalid peer certificate");
    let log_c = c.daemon_log();
    assert!(log_c.contains("PM2_CLUSTER_REDIS_CA"), "{log_c}");
    for l in log_c.lines().filter(|l| l.contains("TLS")) {
        eprintln!("node C: {l}");
    }
    let v = multi(&["cluster".into(), pc.to_string(), pc.to_string(), "2".into()]);
    assert_ok(&v, &c, &a);
    assert!(!a.daemon_log().contains("node tls-c joined"));
    assert!(!c.daemon_log().contains("joined"), "{}", c.daemon_log());
}

/// Starts `name` (2 workers of sio_worker.js) from an ecosystem file with the given
/// `cluster_group` and its own sticky port; returns that port.
fn start_grouped(pm2: &Pm2, name: &str, group: Value) -> u16 {
    let port = free_port();
    let eco = pm2.home().join(format!("{name}.config.json"));
    let app = serde_json::json!({"apps": [{
        "name": name, "script": node_dir().join("sio_worker.js"), "cwd": node_dir(),
        "instances": 2, "exec_mode": "cluster", "sticky_port": port, "cluster_group": group,
    }]});
    std::fs::write(&eco, app.to_string()).unwrap();
    pm2.run(&["start", eco.to_str().unwrap()]).ok();
    pm2.wait_for("workers online", T, |l| {
        l.iter().filter(|p| p["name"] == name && status(p) == "online").count() == 2
    });
    port
}

#[test]
fn cluster_group_joins_apps_by_group_and_false_keeps_an_app_local() {
    let redis = Redis::start();
    let a = node(&redis, "grp-a", SECRET);
    let b = node(&redis, "grp-b", SECRET);
    let solo_a = start_grouped(&a, "solo", Value::Bool(false));
    start_grouped(&b, "solo", Value::Bool(false));
    // Different names, one group: one cluster of 4.
    let chat_a = start_grouped(&a, "chat-eu", "chat".into());
    let chat_b = start_grouped(&b, "chat-us", "chat".into());
    let v = multi(&["cluster".into(), chat_a.to_string(), chat_b.to_string(), "4".into()]);
    assert_ok(&v, &a, &b);
    // The bridge works, yet the opted-out app only counts its own node's workers.
    let v = multi(&["count".into(), solo_a.to_string(), "0".into(), "2".into()]);
    assert_ok(&v, &a, &b);
    assert_eq!(v["last"]["sockets"], 1, "{v}");
}

/// A node whose sticky port and node-to-node listener are on their own loopback address,
/// as separate machines would be. Returns the node, its sticky and its listener address.
fn node_on(redis: &Redis, id: &str, ip: &str) -> (Pm2, String, String) {
    let mut pm2 = node(redis, id, SECRET);
    let listen = format!("{ip}:{}", free_port());
    pm2.envs.retain(|(k, _)| k != "PM2_STICKY_HOST");
    pm2.envs.push(("PM2_STICKY_HOST".into(), ip.into()));
    pm2.envs.push(("PM2_CLUSTER_LISTEN".into(), listen.clone()));
    let sticky = format!("{ip}:{}", port_of(&pm2));
    (pm2, sticky, listen)
}

fn forward_driver(args: &[&str]) -> Value {
    let out =
        Command::new("node").arg("sio_forward.js").args(args).current_dir(node_dir()).output().expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "sio_forward {args:?}: not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn any_node_takes_any_request_and_the_node_port_refuses_strangers() {
    let redis = Redis::start();
    let (a, sticky_a, listen_a) = node_on(&redis, "fw-a", "127.0.0.2");
    let (b, sticky_b, _listen_b) = node_on(&redis, "fw-b", "127.0.0.3");
    start_app(&a, 2);
    start_app(&b, 2);
    wait_log(&a, "taking requests forwarded by other nodes on 127.0.0.2:");
    wait_log(&b, "taking requests forwarded by other nodes on 127.0.0.3:");

    // Garbage on A's node-to-node port closes those connections only...
    let v = forward_driver(&["garbage", &listen_a]);
    assert_ok(&v, &a, &b);
    wait_log(&a, "refused a node-to-node connection from");
    // ...and a forward signed with another secret is refused and logged.
    let v = forward_driver(&["forge", &listen_a, "not-the-cluster-secret", "chat", "AAAAAAAAAAAAAAAAAAAA"]);
    assert_ok(&v, &a, &b);
    wait_log(&a, "bad signature (claims node \"intruder\"");

    // A session handshaken on A, then every request alternating B and A, the websocket
    // upgrade on B: B forwards to A each time, A's listener still serves.
    let v = forward_driver(&["alternate", &sticky_a, &sticky_b, "10"]);
    assert_ok(&v, &a, &b);
    assert_eq!(v["sessionIdUnknown"], 0, "{v}");
    assert_eq!(v["upgraded"], true, "{v}");
    eprintln!("alternating session: {v}");
    // Every request to B went to A through B's forwarding (none answered locally by B).
    let forwarded = |pm2: &Pm2, what: &str| -> u64 {
        let report = pm2.run(&["report"]).ok().stdout.clone();
        let line = report.lines().find(|l| l.contains("forwarded out")).unwrap_or_else(|| panic!("{report}"));
        let after = line.split(what).nth(1).unwrap_or("");
        after.trim().split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    // The session's record named its owner while it lived, and goes when it ends (the
    // websocket was closed).
    let sid = v["sid"].as_str().unwrap();
    poll("the ended session's record deleted", T, || {
        (redis.cmd(&format!("EXISTS corral:sid:chat:{sid}")) == ":0").then_some(())
    });
    let requests_to_b = v["requests"]["B"].as_u64().unwrap() + 2; // + the connect POST and the upgrade
    assert!(forwarded(&b, "forwarded out") >= requests_to_b, "{v}");
    assert!(forwarded(&a, "forwarded in") >= requests_to_b, "{v}");
    // B still knows A as the ended session's owner (cached): its forward is turned down by A
    // (no such session any more), and B answers as Engine.IO answers an unknown sid.
    let answer = raw_get(&sticky_b, &format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    assert!(
        answer.starts_with("HTTP/1.1 400")
            && answer.contains("Content-Type: application/json")
            && answer.ends_with(r#"{"code":1,"message":"Session ID unknown"}"#),
        "{answer}"
    );

    // A body far larger than what B reads before forwarding: the rest streams through B's
    // relay behind the forward (whatever of it reaches A's listener with the forward goes to
    // the worker with the request), and the worker answers the whole message.
    let hs = raw_request(&sticky_a, "GET", "/socket.io/?EIO=4&transport=polling", "");
    let sid =
        hs.split("\"sid\":\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_else(|| panic!("{hs}"));
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert!(raw_request(&sticky_a, "POST", &path, "40").ends_with("ok"));
    let big = format!("42[\"echo\",\"{}\"]", "x".repeat(300_000));
    let answer = raw_request(&sticky_b, "POST", &path, &big);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");

    // A session of A that is still open, then A dies (kill -9, records left in Redis and in
    // B's cache): B answers its requests as an unknown session at once, it does not hang.
    let v = forward_driver(&["open", &sticky_a]);
    assert_ok(&v, &a, &b);
    let sid = v["sid"].as_str().unwrap().to_string();
    let daemon: i32 = std::fs::read_to_string(a.home().join("pm2.pid")).unwrap().trim().parse().unwrap();
    let workers: Vec<i32> = a.jlist().iter().map(|p| pid(p) as i32).filter(|&p| p > 0).collect();
    for p in std::iter::once(daemon).chain(workers) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let answer = raw_get(&sticky_b, &format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("Session ID unknown"), "{answer}");
}

/// One request on a new connection, its head and body in two writes; the whole answer (the
/// server closes after it).
fn raw_request(addr: &str, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(T)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// One GET on a new connection; the whole answer (the server closes after it).
fn raw_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
