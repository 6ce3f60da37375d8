//! Running probes: one task per run of a process that has probes, which
//! runs each active probe on its schedule (one at a time, each bounded by
//! its timeout) and sends the results to the process's actor. Only the
//! startup probe runs until the actor says the start is over; then readiness
//! and liveness. The task ends when the actor drops its [`ProbeTask`].

use super::input::Input;
use super::machine::Kind;
use corral_proto::{HealthSpec, Probe, ProbeCheck};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Makes a connection to the process's server on a port itself (cluster
/// workers, whose listeners the daemon owns and shares); `None` from it: the
/// worker has no listener on that port. Without a connector, probes connect
/// to 127.0.0.1:port.
pub type Connector = std::sync::Arc<
    dyn Fn(
            u16,
        ) -> Option<
            std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<std::net::TcpStream>> + Send>>,
        > + Send
        + Sync,
>;

/// Where and how the probes of one run reach the process.
#[derive(Clone)]
pub struct Target {
    /// The process's `PORT`, for probes without a port of their own.
    pub port: Option<u16>,
    pub cwd: String,
    pub env: BTreeMap<String, String>,
    pub connect: Option<Connector>,
}

/// A connection to the process's server on `port`.
async fn connect(target: &Target, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let Some(connector) = &target.connect else {
        return tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    };
    // Never the shared port: it could be another worker answering.
    let Some(fut) = connector(port) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "the worker does not listen on it (yet)",
        ));
    };
    let s = fut.await?;
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}

/// The probe task of one run: dropping it stops the probes.
pub struct ProbeTask {
    task: tokio::task::JoinHandle<()>,
    probing: watch::Sender<bool>,
}

impl ProbeTask {
    /// The start is over: readiness and liveness probes run from now on.
    pub fn set_probing(&self) {
        self.probing.send_if_modified(|p| !std::mem::replace(p, true));
    }
}

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the probes of a run launched at `launched`; `probing`: the start
/// is already over (no startup probe).
pub fn spawn(
    spec: &HealthSpec,
    target: Target,
    launched: Instant,
    probing: bool,
    out: mpsc::UnboundedSender<Input>,
) -> ProbeTask {
    let (tx, rx) = watch::channel(probing);
    let probes: Vec<(Kind, Probe)> = [
        (Kind::Startup, &spec.startup),
        (Kind::Readiness, &spec.readiness),
        (Kind::Liveness, &spec.liveness),
    ]
    .into_iter()
    .filter_map(|(k, p)| p.clone().map(|p| (k, p)))
    .collect();
    let task = tokio::spawn(run(probes, target, launched, rx, out));
    ProbeTask { task, probing: tx }
}

async fn run(
    probes: Vec<(Kind, Probe)>,
    target: Target,
    launched: Instant,
    mut probing: watch::Receiver<bool>,
    out: mpsc::UnboundedSender<Input>,
) {
    let mut next: Vec<Instant> =
        probes.iter().map(|(_, p)| launched + Duration::from_millis(p.initial_delay_ms)).collect();
    loop {
        let phase = *probing.borrow_and_update();
        let active = |k: Kind| if phase { k != Kind::Startup } else { k == Kind::Startup };
        let due = probes
            .iter()
            .zip(&next)
            .enumerate()
            .filter(|(_, ((k, _), _))| active(*k))
            .min_by_key(|(_, (_, t))| **t)
            .map(|(i, (_, t))| (i, *t));
        let Some((i, at)) = due else {
            // Nothing to run in this phase: wait for the next one.
            if probing.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            r = probing.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
        }
        let Some((kind, probe)) = probes.get(i) else { return };
        let (ok, detail) = check(probe, &target).await;
        if out.send(Input::Probe { kind: *kind, ok, detail }).is_err() {
            return;
        }
        if let Some(t) = next.get_mut(i) {
            *t = Instant::now() + Duration::from_millis(probe.period_ms.max(1));
        }
    }
}

/// Runs one probe once: `(passed, what was seen)`.
pub async fn check(probe: &Probe, target: &Target) -> (bool, String) {
    let timeout = Duration::from_millis(probe.timeout_ms.max(1));
    let port = probe.check.port().or(target.port);
    let r = match &probe.check {
        ProbeCheck::Http { path, status, .. } => match port {
            Some(port) => tokio::time::timeout(timeout, http(target, port, path, *status)).await,
            None => return (false, "no port (set the probe's port or PORT in the app's env)".into()),
        },
        ProbeCheck::Tcp { .. } => match port {
            Some(port) => {
                tokio::time::timeout(timeout, async {
                    match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        Ok(_) => (true, format!("connected to port {port}")),
                        Err(e) => (false, format!("port {port}: {e}")),
                    }
                })
                .await
            }
            None => return (false, "no port (set the probe's port or PORT in the app's env)".into()),
        },
        ProbeCheck::Exec { command } => return exec(command, target, timeout).await,
    };
    r.unwrap_or_else(|_| (false, format!("timed out after {}ms", timeout.as_millis())))
}

/// `GET path` over plain HTTP/1.1 on 127.0.0.1; only the status line is read.
async fn http(target: &Target, port: u16, path: &str, expect: Option<u16>) -> (bool, String) {
    let mut s = match connect(target, port).await {
        Ok(s) => s,
        Err(e) => return (false, format!("port {port}: {e}")),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: corral-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return (false, format!("port {port}: {e}"));
    }
    // The status line is in the first bytes; read at most 1 KiB for it.
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 1024 {
        match s.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return (false, format!("port {port}: {e}")),
        }
    }
    match parse_status(&buf) {
        Some(code) => {
            let ok = match expect {
                Some(want) => code == want,
                None => (200..400).contains(&code),
            };
            (ok, format!("HTTP {code}"))
        }
        None if buf.is_empty() => (false, format!("port {port}: closed without an answer")),
        None => (false, format!("port {port}: not an HTTP answer")),
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// Runs the command in the app's cwd with its env, in a process group of
/// its own so a timeout kills whatever it started.
async fn exec(command: &[String], target: &Target, timeout: Duration) -> (bool, String) {
    let Some((prog, args)) = command.split_first() else { return (false, "empty command".into()) };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .env_clear()
        .envs(&target.env)
        .current_dir(&target.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run {prog}: {e}")),
    };
    let pid = child.id().map(|p| p as i32);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) if st.success() => (true, "exit code 0".into()),
        Ok(Ok(st)) => match st.code() {
            Some(c) => (false, format!("exit code {c}")),
            None => (false, "killed by a signal".into()),
        },
        Ok(Err(e)) => (false, format!("cannot wait for {prog}: {e}")),
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: kill has no memory-safety preconditions; the group
                // is the probe's own (process_group(0)).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = child.wait().await;
            (false, format!("timed out after {}ms", timeout.as_millis()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service Unavailable\r\nx"), Some(503));
        assert_eq!(parse_status(b"HTTP/1.1 20"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    fn target() -> Target {
        Target { port: None, cwd: "/".into(), env: BTreeMap::new(), connect: None }
    }

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_local_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut s, _)) = l.accept().await {
                n += 1;
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let code = if n % 2 == 1 { "200 OK" } else { "503 Service Unavailable" };
                let _ = s.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        let p = Probe::new(ProbeCheck::Http { path: "/health".into(), port: None, status: None });
        let t = Target { port: Some(port), ..target() };
        assert_eq!(check(&p, &t).await, (true, "HTTP 200".into()));
        assert_eq!(check(&p, &t).await, (false, "HTTP 503".into()));
        let p = Probe::new(ProbeCheck::Http { path: "/".into(), port: Some(port), status: Some(503) });
        assert_eq!(check(&p, &target()).await, (false, "HTTP 200".into()));
        assert!(check(&p, &target()).await.0);
        let p = Probe::new(ProbeCheck::Tcp { port: Some(port) });
        assert!(check(&p, &target()).await.0);
        let p = Probe::new(ProbeCheck::Tcp { port: None });
        assert!(!check(&p, &target()).await.0);
    }

    #[tokio::test]
    async fn exec_probes_exit_codes_and_timeouts() {
        let sh = |s: &str| vec!["/bin/sh".to_string(), "-c".to_string(), s.to_string()];
        let p = Probe::new(ProbeCheck::Exec { command: sh("exit 0") });
        assert_eq!(check(&p, &target()).await, (true, "exit code 0".into()));
        let p = Probe::new(ProbeCheck::Exec { command: sh("exit 3") });
        assert_eq!(check(&p, &target()).await, (false, "exit code 3".into()));
        let p = Probe { timeout_ms: 100, ..Probe::new(ProbeCheck::Exec { command: sh("sleep 30") }) };
        assert_eq!(check(&p, &target()).await, (false, "timed out after 100ms".into()));
        let p = Probe::new(ProbeCheck::Exec { command: vec!["/nonexistent/x".into()] });
        assert!(check(&p, &target()).await.1.starts_with("cannot run"));
    }

    #[tokio::test(start_paused = true)]
    async fn schedule_runs_startup_first_then_the_others_each_period() {
        let spec = HealthSpec {
            startup: Some(Probe {
                period_ms: 100,
                initial_delay_ms: 50,
                ..Probe::new(ProbeCheck::Tcp { port: Some(1) })
            }),
            readiness: Some(Probe { period_ms: 1000, ..Probe::new(ProbeCheck::Tcp { port: Some(1) }) }),
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        let task = spawn(&spec, target(), t0, false, tx);
        let kind = |i: Option<Input>| match i {
            Some(Input::Probe { kind, .. }) => kind,
            other => panic!("{other:?}"),
        };
        assert_eq!(kind(rx.recv().await), Kind::Startup);
        assert!(Instant::now() >= t0 + Duration::from_millis(50));
        assert_eq!(kind(rx.recv().await), Kind::Startup);
        task.set_probing();
        assert_eq!(kind(rx.recv().await), Kind::Readiness);
        let t1 = Instant::now();
        assert_eq!(kind(rx.recv().await), Kind::Readiness);
        assert!(Instant::now() >= t1 + Duration::from_millis(1000));
        drop(task);
        assert!(rx.recv().await.is_none());
    }
}
