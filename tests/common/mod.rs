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
        serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("jlist is not JSON: {e}\n{}", r.stdout))
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
                panic!("timed out waiting for {what}; last jlist:\n{}", serde_json::to_string_pretty(&list).unwrap_or_default());
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}
