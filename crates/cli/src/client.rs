//! Connection to the daemon's control socket, spawning the daemon when it is
//! absent.
//!
//! The CLI is synchronous; a current-thread tokio runtime owned by the
//! [`Client`] drives the proto crate's async framing.

use anyhow::{anyhow, bail, Context as _, Result};
use corral_proto::{
    read_frame_unbounded as read_frame, write_frame, Event, FrameError, Hello, Reply, Request, Welcome,
    CORRAL_VERSION, PROTOCOL_VERSION,
};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio::runtime::Runtime;

use crate::output;

/// How long a fresh daemon gets to bind `corral.sock`.
const SPAWN_DEADLINE: Duration = Duration::from_secs(5);
/// How long a live daemon gets to answer `Hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `PM2_HOME`, else `$HOME/.pm2`, else `/etc/.pm2` (pm2's order).
pub fn pm2_home() -> PathBuf {
    if let Some(h) = std::env::var_os("PM2_HOME").filter(|h| !h.is_empty()) {
        return absolutize(Path::new(&h));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Path::new(&h).join(".pm2"),
        None => PathBuf::from("/etc/.pm2"),
    }
}

fn absolutize(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|c| c.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Corral's own control socket (pm2's `rpc.sock`/`pub.sock` speak pm2's
/// protocol for pm2's clients; the CLI speaks Corral's here).
pub fn sock_path(home: &Path) -> PathBuf {
    home.join("corral.sock")
}

/// Creates `PM2_HOME` and the folders pm2's CLI creates on every run.
/// A new home is owner-only (0700) and so is `module_conf.json` (0600): they
/// hold settings and, through the dump, every app's environment.
pub fn ensure_home(home: &Path) -> Result<()> {
    corral_daemon::paths::create_private_dir(home)
        .with_context(|| format!("cannot create {}", home.display()))?;
    for d in [home.join("logs"), home.join("pids"), home.join("modules")] {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let conf = home.join("module_conf.json");
    if !conf.exists() {
        let _ = corral_daemon::paths::write_private(&conf, b"{}");
    }
    // pm2 records its first run here; tools test for it.
    let touch = home.join("touch");
    if !touch.exists() {
        let _ = std::fs::write(&touch, crate::timefmt::now_ms().to_string());
    }
    Ok(())
}

/// The pid of a daemon that died without cleaning up: `pm2.pid` names a
/// process that no longer runs (or is no longer a daemon of this home). A
/// daemon that stops normally removes `pm2.pid`, so only a crash, a
/// `kill -9` or an OOM kill leaves one behind.
pub fn died_uncleanly(home: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(home.join("pm2.pid")).ok()?.trim().parse().ok()?;
    if pid <= 1 {
        return None;
    }
    let ours = std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| {
            let want = format!("PM2_HOME={}", home.display());
            env.split(|b| *b == 0).any(|kv| kv == want.as_bytes())
        })
        .unwrap_or(false);
    (!ours).then_some(pid)
}

/// Apps of a dead daemon that outlived it (fork apps that never write to
/// their pipes keep running as orphans): their pids come from the pid files
/// the daemon wrote, and each is checked to be a child of this home
/// (`PM2_HOME` in its environment) before it is stopped, SIGINT then
/// SIGKILL after `grace`. Restored apps must not meet them on their ports.
/// Returns how many were stopped.
pub fn stop_orphans(home: &Path, grace: Duration) -> usize {
    let want = format!("PM2_HOME={}", home.display());
    let mut pids = Vec::new();
    if let Ok(dir) = std::fs::read_dir(home.join("pids")) {
        for e in dir.flatten() {
            let Some(pid) = std::fs::read_to_string(e.path()).ok().and_then(|s| s.trim().parse::<i32>().ok())
            else {
                continue;
            };
            if pid <= 1 || pid == std::process::id() as i32 {
                continue;
            }
            let ours = std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
                .unwrap_or(false);
            if ours {
                pids.push(pid);
            }
        }
    }
    for &p in &pids {
        // SAFETY: signal delivery to a pid checked just above.
        unsafe { libc::kill(p, libc::SIGINT) };
    }
    let start = Instant::now();
    // SAFETY: signal 0 only probes.
    while pids.iter().any(|&p| unsafe { libc::kill(p, 0) } == 0) && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in &pids {
        // SAFETY: as above; a pid already gone gives ESRCH, which is fine.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    pids.len()
}

pub fn new_runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the I/O runtime")
}

pub struct Client {
    rt: Runtime,
    stream: UnixStream,
    /// Where the socket is, to reconnect after the daemon closed an idle
    /// connection.
    home: PathBuf,
    pub welcome: Welcome,
    /// True when this invocation spawned the daemon.
    pub spawned: bool,
}

impl Client {
    /// Connects to a running daemon, or spawns one (printing pm2's two
    /// "Spawning"/"daemonized" lines).
    pub fn connect_or_spawn(home: &Path) -> Result<Client> {
        ensure_home(home)?;
        let rt = new_runtime()?;
        let sock = sock_path(home);
        match rt.block_on(UnixStream::connect(&sock)) {
            Ok(stream) => return Client::handshake(rt, stream, home, false),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                // Nobody listens: a daemon died without cleaning up.
                let _ = std::fs::remove_file(&sock);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("cannot connect to {}: {e}", sock.display()),
        }
        spawn_daemon(home)?;
        let stream = wait_for_daemon(&rt, home)?;
        output::info("PM2 Successfully daemonized");
        Client::handshake(rt, stream, home, true)
    }

    /// Connects without spawning; `None` when no daemon answers.
    pub fn connect_existing(home: &Path) -> Result<Option<Client>> {
        let rt = new_runtime()?;
        match rt.block_on(UnixStream::connect(sock_path(home))) {
            Ok(stream) => Ok(Some(Client::handshake(rt, stream, home, false)?)),
            Err(_) => Ok(None),
        }
    }

    /// Connects to a daemon that is starting in this process
    /// (`pm2-runtime`), polling until `deadline`.
    pub fn connect_polling(home: &Path, deadline: Duration) -> Result<Client> {
        let rt = new_runtime()?;
        let start = Instant::now();
        loop {
            if let Ok(stream) = rt.block_on(UnixStream::connect(sock_path(home))) {
                return Client::handshake(rt, stream, home, false);
            }
            if start.elapsed() > deadline {
                bail!("daemon did not open {} in time", sock_path(home).display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn handshake(rt: Runtime, stream: UnixStream, home: &Path, spawned: bool) -> Result<Client> {
        let (stream, welcome) = hello(&rt, stream)?;
        if welcome.daemon_version != CORRAL_VERSION {
            // stderr, not pm2's stdout: the banner must not break `jlist`
            // parsing.
            output::err(&format!(
                ">>>> In-memory PM2 is out-of-date, do:\n>>>> $ pm2 update\nIn memory PM2 version: {}\nLocal PM2 version: {}\n",
                welcome.daemon_version, CORRAL_VERSION
            ));
        }
        if !spawned {
            warn_settings(&welcome.settings);
        }
        Ok(Client { rt, stream, home: home.to_path_buf(), welcome, spawned })
    }

    /// A new connection in place of one the daemon closed (it closes
    /// connections idle between requests).
    fn reconnect(&mut self) -> Result<()> {
        let sock = sock_path(&self.home);
        let stream = self
            .rt
            .block_on(UnixStream::connect(&sock))
            .with_context(|| format!("cannot connect to {}", sock.display()))?;
        let (stream, welcome) = hello(&self.rt, stream)?;
        self.stream = stream;
        self.welcome = welcome;
        Ok(())
    }

    /// One request/reply pair. `Reply::Error` is returned as a value, not an
    /// error, because callers print it in command-specific ways.
    pub fn request(&mut self, req: &Request) -> Result<Reply> {
        // The daemon closes a connection left idle between requests; a
        // request it never received is safe to send on a new one.
        if !still_open(&self.stream) {
            self.reconnect()?;
        }
        let stream = &mut self.stream;
        let limit = quick_timeout(req);
        self.rt.block_on(async {
            let exchange = async {
                write_frame(stream, req).await.map_err(conn_err)?;
                read_frame::<_, Reply>(stream).await.map_err(conn_err)
            };
            match limit {
                Some(d) => tokio::time::timeout(d, exchange)
                    .await
                    .map_err(|_| anyhow!("the daemon did not answer within {}s", d.as_secs()))?,
                None => exchange.await,
            }
        })
    }

    /// `pm2 jlist`'s text as the daemon rendered it: unescaped on the wire
    /// when the daemon can send it so (`JlistRaw`), else in a `Reply::Text`.
    /// `Ok(None)`: this daemon renders no jlist (the caller builds it from
    /// `List`). An error reply is an error.
    pub fn jlist_bytes(&mut self) -> Result<Option<Vec<u8>>> {
        let raw = self.welcome.capabilities.iter().any(|k| k == corral_proto::CAP_RAW_JLIST);
        if !raw {
            return match self.request(&Request::Jlist)? {
                Reply::Text { text } => Ok(Some(text.into_bytes())),
                Reply::Error { message } => Err(anyhow!(message)),
                _ => Ok(None),
            };
        }
        if !still_open(&self.stream) {
            self.reconnect()?;
        }
        let stream = &mut self.stream;
        self.rt.block_on(async {
            write_frame(stream, &Request::JlistRaw).await.map_err(conn_err)?;
            match read_frame::<_, Reply>(stream).await.map_err(conn_err)? {
                Reply::Raw => {
                    Ok(Some(corral_proto::read_message(stream, usize::MAX).await.map_err(conn_err)?))
                }
                Reply::Text { text } => Ok(Some(text.into_bytes())),
                Reply::Error { message } => Err(anyhow!(message)),
                other => Err(anyhow!("unexpected reply to jlist: {other:?}")),
            }
        })
    }

    /// `Request::List`, ascending pm_id.
    pub fn list(&mut self) -> Result<Vec<corral_proto::ProcInfo>> {
        match self.request(&Request::List)? {
            Reply::Procs { mut procs } => {
                procs.sort_by_key(|p| p.pm_id);
                Ok(procs)
            }
            Reply::Error { message } => Err(anyhow!(message)),
            other => Err(anyhow!("unexpected reply to list: {other:?}")),
        }
    }

    /// Turns the connection into an event stream; `on_event` returns false
    /// to stop. Ends on Ctrl-C/SIGTERM (Ok) or when the daemon goes away.
    pub fn stream_events(
        mut self,
        ids: Option<Vec<u32>>,
        mut on_event: impl FnMut(Event) -> bool,
    ) -> Result<()> {
        let stream = &mut self.stream;
        self.rt.block_on(async move {
            write_frame(stream, &Request::Logs { ids }).await.map_err(conn_err)?;
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot watch SIGTERM")?;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    _ = term.recv() => return Ok(()),
                    ev = read_frame::<_, serde_json::Value>(stream) => {
                        let v = match ev {
                            Ok(v) => v,
                            Err(FrameError::Closed) => return Ok(()),
                            Err(e) => return Err(conn_err(e)),
                        };
                        // The daemon may answer the Logs request itself
                        // (`Ok` before streaming, or an error).
                        if v.get("reply").is_some() {
                            if let Ok(Reply::Error { message }) = serde_json::from_value::<Reply>(v) {
                                return Err(anyhow!(message));
                            }
                            continue;
                        }
                        if let Ok(ev) = serde_json::from_value::<Event>(v) {
                            if !on_event(ev) {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        })
    }

    /// Waits until the daemon closes this connection (after `Kill`).
    pub fn wait_closed(&mut self, timeout: Duration) {
        let stream = &mut self.stream;
        let _ = self.rt.block_on(async {
            tokio::time::timeout(timeout, async {
                loop {
                    if read_frame::<_, serde_json::Value>(stream).await.is_err() {
                        break;
                    }
                }
            })
            .await
        });
    }
}

/// Sends the hello and reads the daemon's welcome (or its refusal).
fn hello(rt: &Runtime, mut stream: UnixStream) -> Result<(UnixStream, Welcome)> {
    let hello = Hello { protocol: PROTOCOL_VERSION, client_version: CORRAL_VERSION.to_string() };
    let answer: serde_json::Value = rt
        .block_on(async {
            tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                write_frame(&mut stream, &hello).await?;
                read_frame::<_, serde_json::Value>(&mut stream).await
            })
            .await
        })
        .map_err(|_| anyhow!("the daemon did not answer within {}s", HANDSHAKE_TIMEOUT.as_secs()))?
        .map_err(|e| anyhow!("handshake with the daemon failed: {e}"))?;
    if answer.get("reply").is_some() {
        return match serde_json::from_value::<Reply>(answer) {
            Ok(Reply::Error { message }) => Err(anyhow!(message)),
            Ok(other) => Err(anyhow!("unexpected handshake answer: {other:?}")),
            Err(e) => Err(anyhow!("malformed handshake answer: {e}")),
        };
    }
    let welcome: Welcome =
        serde_json::from_value(answer).map_err(|e| anyhow!("malformed handshake answer: {e}"))?;
    Ok((stream, welcome))
}

/// False when the daemon has closed (or is closing) this connection: it
/// never writes between a reply and the next request, so anything readable
/// now is the end of the stream.
fn still_open(stream: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut probe = 0u8;
    // SAFETY: a one-byte peek into `probe`; the fd is the open stream's.
    let n = unsafe {
        libc::recv(stream.as_raw_fd(), (&mut probe as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// Async connection + handshake, for callers that drive their own runtime
/// (`pm2-runtime` multiplexes a log stream and a control connection).
pub async fn connect_async(home: &Path) -> Result<UnixStream> {
    let mut stream = UnixStream::connect(sock_path(home))
        .await
        .with_context(|| format!("cannot connect to {}", sock_path(home).display()))?;
    let hello = Hello { protocol: PROTOCOL_VERSION, client_version: CORRAL_VERSION.to_string() };
    let answer: serde_json::Value = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        write_frame(&mut stream, &hello).await?;
        read_frame::<_, serde_json::Value>(&mut stream).await
    })
    .await
    .map_err(|_| anyhow!("the daemon did not answer within {}s", HANDSHAKE_TIMEOUT.as_secs()))?
    .map_err(conn_err)?;
    if answer.get("reply").is_some() {
        return match serde_json::from_value::<Reply>(answer) {
            Ok(Reply::Error { message }) => Err(anyhow!(message)),
            _ => Err(anyhow!("unexpected handshake answer")),
        };
    }
    Ok(stream)
}

/// One async request/reply pair.
pub async fn request_async(stream: &mut UnixStream, req: &Request) -> Result<Reply> {
    write_frame(stream, req).await.map_err(conn_err)?;
    read_frame::<_, Reply>(stream).await.map_err(conn_err)
}

/// A daemon setting given to this CLI call that differs from the running
/// daemon's is ignored by it: say so (on stderr, `jlist` stays parseable).
fn warn_settings(daemon: &std::collections::BTreeMap<String, String>) {
    for d in settings_mismatch(daemon, |k| std::env::var(k).ok()) {
        output::warn_err(&d);
    }
}

/// The warnings for each setting of this environment (`get`) that the
/// running daemon has with another value.
pub fn settings_mismatch(
    daemon: &std::collections::BTreeMap<String, String>,
    get: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for k in corral_proto::DAEMON_SETTINGS {
        let Some(mine) = get(k) else { continue };
        let theirs = daemon.get(*k).map(String::as_str);
        if theirs != Some(mine.as_str()) {
            out.push(format!(
                "{k}={mine} is ignored: the running daemon was started with {}; run `pm2 kill` (or `pm2 update`) to apply it",
                theirs.map(|t| format!("{k}={t}")).unwrap_or_else(|| format!("{k} unset"))
            ));
        }
    }
    out
}

/// Requests that only read or poke state get a deadline so a wedged daemon
/// cannot hang `pm2 ls` forever; starting and stopping processes may
/// legitimately wait on `kill_timeout` / `listen_timeout`, so they do not.
fn quick_timeout(req: &Request) -> Option<Duration> {
    match req {
        Request::Ping
        | Request::List
        | Request::Save { .. }
        | Request::Flush { .. }
        | Request::ReloadLogs
        | Request::SendSignal { .. }
        | Request::SendData { .. } => Some(Duration::from_secs(30)),
        // Probe (20 s), quiet point (15 s), channels (3 s), then the exec.
        Request::Update { .. } => Some(Duration::from_secs(90)),
        _ => None,
    }
}

fn conn_err(e: FrameError) -> anyhow::Error {
    match e {
        FrameError::Closed => anyhow!("the daemon closed the connection"),
        e => anyhow!("daemon connection error: {e}"),
    }
}

/// The process title users grep for ("God Daemon").
pub fn daemon_title(home: &Path) -> String {
    format!("PM2 v{}: God Daemon ({})", CORRAL_VERSION, home.display())
}

/// The daemon settings a daemon re-created from this home must run with:
/// each one given in this command's environment, else the value the running
/// daemon was started with (read from its /proc environ through pm2.pid), so
/// `sudo env PATH=... pm2 startup`, which drops the caller's variables, still
/// writes the `PM2_PORT` the apps run behind today.
pub fn daemon_settings(home: &Path) -> Vec<(String, String)> {
    let running = running_daemon_env(home);
    corral_proto::DAEMON_SETTINGS
        .iter()
        .filter_map(|k| {
            let v = std::env::var(k)
                .ok()
                .or_else(|| running.iter().find(|(rk, _)| rk == k).map(|(_, v)| v.clone()));
            v.filter(|v| !v.is_empty()).map(|v| (k.to_string(), v))
        })
        .collect()
}

/// The environment of the daemon whose pid `home/pm2.pid` names, or nothing
/// when there is none (or it is not ours to read).
pub fn running_daemon_env(home: &Path) -> Vec<(String, String)> {
    let Some(pid) =
        std::fs::read_to_string(home.join("pm2.pid")).ok().and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return Vec::new();
    };
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/environ")) else { return Vec::new() };
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Settings carried to the next daemon this CLI spawns (`pm2 update`: the
/// replaced daemon's `PM2_PORT` and the like), on top of our own environment.
static CARRIED_SETTINGS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Makes the next spawned daemon run with `settings`.
pub fn carry_daemon_settings(settings: Vec<(String, String)>) {
    if let Ok(mut g) = CARRIED_SETTINGS.lock() {
        *g = settings;
    }
}

struct Spawned {
    child: std::process::Child,
    log_offset: u64,
}

static SPAWNED: std::sync::Mutex<Option<Spawned>> = std::sync::Mutex::new(None);

fn spawn_daemon(home: &Path) -> Result<()> {
    output::info(&format!("Spawning PM2 daemon with pm2_home={}", home.display()));
    let log_path = home.join("pm2.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe().context("cannot find the pm2 executable")?;
    let mut cmd = Command::new(&exe);
    cmd.arg0(daemon_title(home))
        .env("CORRAL_DAEMON_MODE", "1")
        .env("PM2_HOME", home)
        .envs(CARRIED_SETTINGS.lock().map(|g| g.clone()).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot duplicate the pm2.log handle")?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the daemon must not belong to the
    // terminal's session, or Ctrl-C in the user's shell would reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("cannot spawn {}", exe.display()))?;
    if let Ok(mut g) = SPAWNED.lock() {
        *g = Some(Spawned { child, log_offset });
    }
    Ok(())
}

fn wait_for_daemon(rt: &Runtime, home: &Path) -> Result<UnixStream> {
    let sock = sock_path(home);
    let start = Instant::now();
    loop {
        if let Ok(s) = rt.block_on(UnixStream::connect(&sock)) {
            return Ok(s);
        }
        let mut guard = SPAWNED.lock().map_err(|_| anyhow!("spawn state poisoned"))?;
        let exited = match guard.as_mut() {
            Some(s) => s.child.try_wait().ok().flatten(),
            None => None,
        };
        let timed_out = start.elapsed() > SPAWN_DEADLINE;
        if exited.is_some() && !timed_out {
            // Another CLI may have won the race to spawn the daemon: ours
            // exits, theirs answers.
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(s) = rt.block_on(UnixStream::connect(&sock)) {
                return Ok(s);
            }
        }
        if exited.is_some() || timed_out {
            let offset = guard.as_ref().map(|s| s.log_offset).unwrap_or(0);
            if timed_out && exited.is_none() {
                if let Some(s) = guard.as_mut() {
                    // A daemon that cannot bind in time is not trusted to
                    // come up later behind the user's back.
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                }
            }
            let tail = log_tail_since(&home.join("pm2.log"), offset, 15);
            let why = match exited {
                Some(st) => format!("daemon exited ({st})"),
                None => format!("no answer on {} after {}s", sock.display(), SPAWN_DEADLINE.as_secs()),
            };
            bail!(SpawnFailed(if tail.is_empty() { why } else { format!("{why}\n{tail}") }));
        }
        drop(guard);
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Marker error: printed as `Daemon failed to start: ...`.
#[derive(Debug)]
pub struct SpawnFailed(pub String);

impl std::fmt::Display for SpawnFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Daemon failed to start: {}", self.0)
    }
}

impl std::error::Error for SpawnFailed {}

fn log_tail_since(path: &Path, offset: u64, lines: usize) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let from = offset.max(len.saturating_sub(64 * 1024));
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_running_daemon() {
        let home = tempfile::tempdir().expect("tempdir");
        // This test process stands in for the daemon: its environ is real.
        std::fs::write(home.path().join("pm2.pid"), std::process::id().to_string()).expect("pid");
        let env = running_daemon_env(home.path());
        assert!(env.iter().any(|(k, _)| k == "PATH"), "{env:?}");
        assert!(running_daemon_env(&home.path().join("nowhere")).is_empty());
    }
}
