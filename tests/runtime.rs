//! `pm2-runtime` (containers): the daemon in the foreground process, app
//! output on stdout, SIGTERM stops everything and exits 0.

mod common;
use common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn runtime_streams_logs_and_exits_0_on_sigterm() {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pm2-runtime"))
        .arg("forever.js")
        .current_dir(fixtures())
        .env("PM2_HOME", home.path())
        .env("PM2_PORT", free_port().to_string())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pm2-runtime");
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = tx.send(all.clone());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while !seen.contains("tick 1") {
        assert!(Instant::now() < deadline, "no app output on stdout:\n{seen}");
        if let Ok(s) = rx.recv_timeout(Duration::from_millis(100)) {
            seen = s;
        }
    }
    // SAFETY: plain kill of our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = poll("pm2-runtime to exit", Duration::from_secs(15), || child.try_wait().ok().flatten());
    assert_eq!(status.code(), Some(0));
    while let Ok(s) = rx.recv_timeout(Duration::from_millis(200)) {
        seen = s;
    }
    assert_eq!(seen.matches("App [forever:0] online").count(), 1, "daemon lines printed once:\n{seen}");
}

#[test]
fn json_output_carries_start_and_online_process_events() {
    let home = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pm2-runtime"))
        .args(["start", "forever.js", "--json"])
        .current_dir(fixtures())
        .env("PM2_HOME", home.path())
        .env("PM2_PORT", free_port().to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = tx.send(all.clone());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while !(seen.contains("\"status\":\"start\"") && seen.contains("\"status\":\"online\"")) {
        assert!(Instant::now() < deadline, "no start/online events:\n{seen}");
        if let Ok(s) = rx.recv_timeout(Duration::from_millis(100)) {
            seen = s;
        }
    }
    assert!(seen.find("\"status\":\"start\"") < seen.find("\"status\":\"online\""), "{seen}");
    // SAFETY: plain kill of our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    poll("pm2-runtime to exit", Duration::from_secs(15), || child.try_wait().ok().flatten());
}
