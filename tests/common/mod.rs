//! Black-box harness: the real `pm2` binary in a temporary `PM2_HOME`.
//! Every wait polls a condition against a deadline; nothing sleeps a fixed
//! time to "let things settle".

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pm2");

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub struct Pm2 {
    pub home: tempfile::TempDir,
    pub cwd: PathBuf,
    pub envs: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Pm2 {
    pub fn new() -> Self {
        let home = tempfile::Builder::new().prefix("corral-test-").tempdir().expect("tempdir");
        // A port of its own for the sticky balancer, so parallel tests never
        // meet on 8080.
        let envs = vec![
            ("PM2_PORT".to_string(), free_port().to_string()),
            ("PM2_STICKY_HOST".to_string(), "127.0.0.1".to_string()),
        ];
        Pm2 { cwd: fixtures(), home, envs }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(&self.cwd)
            .env("PM2_HOME", self.home.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = self.cmd(args).output().expect("spawn pm2");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn jlist(&self) -> Vec<Value> {
        let r = self.run(&["jlist"]);
        r.ok();
        serde_json::from_str(r.stdout.trim())
            .unwrap_or_else(|e| panic!("jlist is not JSON: {e}\n{}", r.stdout))
    }

    pub fn proc(&self, name: &str) -> Option<Value> {
        self.jlist().into_iter().find(|p| p["name"] == name)
    }

    /// Polls `jlist` until `f` holds or the deadline passes; returns the
    /// last list seen.
    pub fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let list = self.jlist();
            if f(&list) {
                return list;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last jlist:\n{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("pm2.log")).unwrap_or_default()
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        // Belt and braces: a daemon that did not answer `kill` must not
        // outlive the test.
        if let Ok(pid) = std::fs::read_to_string(self.home.path().join("pm2.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

pub fn status(p: &Value) -> &str {
    p["pm2_env"]["status"].as_str().unwrap_or("")
}

pub fn restarts(p: &Value) -> u64 {
    p["pm2_env"]["restart_time"].as_u64().unwrap_or(0)
}

pub fn pid(p: &Value) -> u64 {
    p["pid"].as_u64().unwrap_or(0)
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !matches!(s.rfind(')').and_then(|i| s.as_bytes().get(i + 2)), Some(b'Z')))
        .unwrap_or(false)
}

/// A TCP port no other test (of any test process) holds and nothing
/// listens on. Binding port 0 and releasing it races with parallel tests
/// (the kernel may hand the same port out again, and daemons bind it only
/// later), so ports come from 20000-31999, below the kernel's ephemeral
/// range, each reserved by an exclusive `flock` on a file shared by every
/// test process, held until this process exits.
pub fn free_port() -> u16 {
    use std::os::fd::AsRawFd;
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    let dir = std::env::temp_dir().join("corral-test-ports");
    std::fs::create_dir_all(&dir).expect("port lock dir");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = nanos ^ std::process::id().wrapping_mul(2_654_435_761);
    for i in 0..COUNT {
        // A stride coprime with COUNT visits every port once.
        let port = (FIRST + (seed.wrapping_add(i.wrapping_mul(7_919))) % COUNT) as u16;
        let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
        else {
            continue;
        };
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        // Free on every address a test daemon may bind (127.0.0.1, `::`).
        // (A host without IPv6 only checks 127.0.0.1.)
        let v6_free = match std::net::TcpListener::bind(("::", port)) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
        };
        let free = v6_free && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            HELD.lock().unwrap_or_else(|p| p.into_inner()).push(f);
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT);
}

/// The npm fixture project with the Node apps (`tests/node`). Runs `npm ci`
/// there once per test binary if `node_modules` is missing.
pub fn node_dir() -> PathBuf {
    static NPM: std::sync::Once = std::sync::Once::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    NPM.call_once(|| {
        if !dir.join("node_modules").is_dir() {
            let st = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).status();
            assert!(st.is_ok_and(|s| s.success()), "npm ci in {} failed", dir.display());
        }
    });
    dir
}

/// One `GET` with `Connection: close` on a new connection (`127.0.0.1:port`
/// or a unix socket); the JSON body of a 200 answer, or what went wrong.
pub fn http_get(port: u16, path: &str) -> Result<Value, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    http_exchange(s, path)
}

pub fn http_get_unix(sock: &Path, path: &str) -> Result<Value, String> {
    let s = std::os::unix::net::UnixStream::connect(sock).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    http_exchange(s, path)
}

fn http_exchange<S: std::io::Read + std::io::Write + TimeoutStream>(
    mut s: S,
    path: &str,
) -> Result<Value, String> {
    s.timeouts(Duration::from_secs(5));
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("not a 200: {head}"));
    }
    // Content-Length or chunked: the JSON object is between the outer braces.
    let (a, b) = (body.find('{'), body.rfind('}'));
    let json = match (a, b) {
        (Some(a), Some(b)) if a < b => &body[a..=b],
        _ => return Err(format!("no JSON body: {body:?}")),
    };
    serde_json::from_str(json).map_err(|e| format!("{e}: {json}"))
}

trait TimeoutStream {
    fn timeouts(&self, d: Duration);
}
impl TimeoutStream for std::net::TcpStream {
    fn timeouts(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
        let _ = self.set_write_timeout(Some(d));
    }
}
impl TimeoutStream for std::os::unix::net::UnixStream {
    fn timeouts(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
        let _ = self.set_write_timeout(Some(d));
    }
}

/// A node script in the background that says `started` on stderr once it is
/// under way and prints one JSON summary on stdout when it ends (its other
/// stderr lines are passed through).
pub struct NodeJob {
    child: std::process::Child,
    started: std::sync::mpsc::Receiver<()>,
    name: String,
}

impl NodeJob {
    pub fn start(script: &Path, args: &[String], cwd: &Path) -> NodeJob {
        let name = script.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn node {name}: {e}"));
        let (tx, started) = std::sync::mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        let who = name.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if line.trim() == "started" {
                    let _ = tx.send(());
                } else {
                    eprintln!("{who}: {line}");
                }
            }
        });
        NodeJob { child, started, name }
    }

    /// Waits for its `started`.
    pub fn wait_started(&self, timeout: Duration) {
        self.started
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("{} did not get under way in time", self.name));
    }

    /// Waits for it to end (it is bounded by itself) and returns its JSON
    /// summary.
    pub fn finish(mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait node") {
                let mut out = String::new();
                let _ = std::io::Read::read_to_string(self.child.stdout.as_mut().expect("stdout"), &mut out);
                assert!(st.success(), "{} failed ({st}): {out}", self.name);
                return serde_json::from_str(out.trim())
                    .unwrap_or_else(|e| panic!("{} output: {e}: {out}", self.name));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not finish within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeJob {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `tests/node/load.js` running in the background (`started` after its
/// first successful response).
pub struct Load(NodeJob);

impl Load {
    /// `args` are load.js's `key=value` arguments.
    pub fn spawn(args: &[String]) -> Load {
        let dir = node_dir();
        Load(NodeJob::start(&dir.join("load.js"), args, &dir))
    }

    /// Waits for the first successful response.
    pub fn wait_started(&self, timeout: Duration) {
        self.0.wait_started(timeout)
    }

    /// Waits for load.js to end and returns its JSON summary.
    pub fn finish(self, timeout: Duration) -> Value {
        self.0.finish(timeout)
    }
}

/// Resident memory of a process in kB (VmRSS), 0 when it is gone.
pub fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
