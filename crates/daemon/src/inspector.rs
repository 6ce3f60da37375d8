//! Node's inspector from the outside: `pm2 inspect`, `pm2 profile:cpu` /
//! `profile:mem` and the API's `profileCPU` / `profileMEM`.
//!
//! pm2 profiles its own (Node) daemon with an in-process `inspector.Session`
//! and opens an app's inspector through @pm2/io's `internal:inspect` action.
//! Corral's daemon is not a Node process and injects nothing into apps, so
//! it does what a debugger does: SIGUSR1 makes any Node process start its
//! inspector (Node's documented behaviour, on `process.debugPort`, 9229
//! unless `--inspect-port` says otherwise), the port it listens on is found
//! among the process's own listening sockets (`/proc/<pid>/fd` inodes against
//! `/proc/<pid>/net/tcp*`, so another process's inspector is never taken for
//! it), `/json/list` gives the DevTools websocket, and the DevTools protocol
//! runs the profiler. An inspector this module opened for a profile is closed
//! again afterwards: an open inspector lets any local user run code in the app.
//!
//! A leaf: imports nothing of the daemon.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Node's default inspector port.
pub const DEFAULT_PORT: u16 = 9229;
/// How long a process gets to open its inspector after SIGUSR1 (a loaded
/// machine, a busy event loop: the signal is handled on Node's own thread,
/// but the listener is set up on the main one).
pub const OPEN_WAIT: Duration = Duration::from_secs(15);
/// Biggest DevTools message accepted (a heap profile of a large app).
const MAX_MESSAGE: usize = 512 << 20;
/// One DevTools call (Profiler.stop serializes the whole profile).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// One HTTP exchange with the inspector's `/json/list`.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
pub enum InspectError {
    #[error("process {0} is not running")]
    NoProcess(i32),
    #[error("process {pid} is not a Node.js process ({exe}): only node apps have an inspector")]
    NotNode { pid: i32, exe: String },
    #[error(
        "cannot open the inspector of process {pid}: port {port} is already in use by another process \
         (node opens its inspector there on SIGUSR1); free it, or start the app with \
         --node-args=\"--inspect-port=<port>\" (0 picks a free port)"
    )]
    PortInUse { pid: i32, port: u16 },
    #[error("cannot signal process {pid}: {err}")]
    Signal { pid: i32, err: std::io::Error },
    #[error(
        "process {pid} opened no inspector within {secs} s (node writes the reason to the app's error log; \
         a node started with --disable-sigusr1 never opens it)"
    )]
    NoInspector { pid: i32, secs: u64 },
    #[error("inspector of process {pid}: {msg}")]
    Protocol { pid: i32, msg: String },
    #[error("cannot write {path}: {err}")]
    Write { path: String, err: std::io::Error },
}

/// What `pm2 profile:cpu` / `profile:mem` record; pm2's file extensions and
/// API method names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `Profiler.start` / `Profiler.stop`: a `.cpuprofile`.
    Cpu,
    /// `HeapProfiler.startSampling` / `stopSampling`: a `.heapprofile`.
    Mem,
}

impl Profile {
    pub fn ext(self) -> &'static str {
        match self {
            Profile::Cpu => ".cpuprofile",
            Profile::Mem => ".heapprofile",
        }
    }
    pub fn action(self) -> &'static str {
        match self {
            Profile::Cpu => "profileCPU",
            Profile::Mem => "profileMEM",
        }
    }
    fn methods(self) -> [&'static str; 4] {
        match self {
            Profile::Cpu => ["Profiler.enable", "Profiler.start", "Profiler.stop", "Profiler.disable"],
            Profile::Mem => [
                "HeapProfiler.enable",
                "HeapProfiler.startSampling",
                "HeapProfiler.stopSampling",
                "HeapProfiler.disable",
            ],
        }
    }
}

/// An open inspector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub port: u16,
    /// `webSocketDebuggerUrl` from `/json/list`.
    pub ws_url: String,
    /// The inspector was already open before this module signalled.
    pub was_open: bool,
}

/// Refuses what is not a live Node process: `/proc/<pid>/exe` (or argv[0]
/// when the link is not readable) named `node`, `nodejs` or `node<version>`.
pub fn check_node(pid: i32) -> Result<(), InspectError> {
    if pid <= 0 {
        return Err(InspectError::NoProcess(pid));
    }
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !proc_dir.exists() {
        return Err(InspectError::NoProcess(pid));
    }
    let exe = match std::fs::read_link(proc_dir.join("exe")) {
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(_) => std::fs::read(proc_dir.join("cmdline"))
            .ok()
            .and_then(|c| c.split(|b| *b == 0).next().map(|a| String::from_utf8_lossy(a).into_owned()))
            .unwrap_or_default(),
    };
    let exe = exe.trim_end_matches(" (deleted)").to_string();
    let base = Path::new(&exe).file_name().map(|b| b.to_string_lossy().into_owned()).unwrap_or_default();
    let is_node = base == "nodejs"
        || base.strip_prefix("node").is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if is_node {
        Ok(())
    } else if exe.is_empty() {
        Err(InspectError::NoProcess(pid))
    } else {
        Err(InspectError::NotNode { pid, exe })
    }
}

/// The port Node will open its inspector on for this process: the last of
/// `--inspect-port`, `--debug-port`, `--inspect[-brk][=[host:]port]` in
/// `NODE_OPTIONS` then the command line (command line wins), else 9229.
pub fn configured_port(pid: i32) -> u16 {
    let mut args: Vec<String> = Vec::new();
    if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
        for kv in env.split(|b| *b == 0) {
            if let Some(v) = kv.strip_prefix(b"NODE_OPTIONS=") {
                args.extend(String::from_utf8_lossy(v).split_whitespace().map(str::to_string));
            }
        }
    }
    if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
        // Node's own options come before the script: stop at the first
        // argument that is not an option (argv[0] aside).
        for a in cmd.split(|b| *b == 0).skip(1).map(|a| String::from_utf8_lossy(a).into_owned()) {
            if !a.starts_with('-') {
                break;
            }
            args.push(a);
        }
    }
    port_from_args(&args)
}

fn port_from_args(args: &[String]) -> u16 {
    let mut port = DEFAULT_PORT;
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let (flag, value) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        match flag {
            "--inspect-port" | "--debug-port" => {
                let v = value.or_else(|| it.next().cloned());
                if let Some(p) = v.as_deref().and_then(host_port) {
                    port = p;
                }
            }
            "--inspect" | "--inspect-brk" | "--inspect-wait" => {
                if let Some(p) = value.as_deref().and_then(host_port) {
                    port = p;
                }
            }
            _ => {}
        }
    }
    port
}

/// `9230`, `127.0.0.1:9230`, `[::1]:9230` -> 9230; a bare host keeps the port.
fn host_port(v: &str) -> Option<u16> {
    let tail = v.rsplit(':').next().unwrap_or(v);
    tail.parse().ok()
}

/// A listening TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Listen {
    addr: IpAddr,
    port: u16,
    inode: u64,
}

/// The socket inodes `pid` holds.
fn socket_inodes(pid: i32) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return out };
    for e in dir.flatten() {
        if let Ok(t) = std::fs::read_link(e.path()) {
            let t = t.to_string_lossy();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                if let Ok(n) = n.parse() {
                    out.insert(n);
                }
            }
        }
    }
    out
}

/// Every listening TCP socket in the network namespace of `pid`.
fn listening_in_netns(pid: i32) -> Vec<Listen> {
    let mut out = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
            out.extend(text.lines().skip(1).filter_map(|l| parse_tcp_line(l, v6)));
        }
    }
    out
}

/// One line of `/proc/net/tcp{,6}` in LISTEN state (0A).
fn parse_tcp_line(line: &str, v6: bool) -> Option<Listen> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 || f[3] != "0A" {
        return None;
    }
    let (a, p) = f[1].split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let addr = if v6 {
        if a.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        // Four 32-bit words, each in host (little-endian) order.
        for (w, chunk) in b.chunks_mut(4).enumerate() {
            let word = u32::from_str_radix(&a[w * 8..w * 8 + 8], 16).ok()?;
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        let word = u32::from_str_radix(a, 16).ok()?;
        IpAddr::V4(Ipv4Addr::from(word.to_le_bytes()))
    };
    let inode = f[9].parse().ok()?;
    Some(Listen { addr, port, inode })
}

/// The listening sockets `pid` itself holds.
fn listening_of(pid: i32) -> Vec<Listen> {
    let mine = socket_inodes(pid);
    listening_in_netns(pid).into_iter().filter(|l| mine.contains(&l.inode)).collect()
}

/// Where to connect to reach a socket listening on `addr`.
fn connect_addr(l: &Listen) -> SocketAddr {
    let ip = match l.addr {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, l.port)
}

/// Opens the inspector of `pid` (SIGUSR1) unless it is open already, and
/// returns its DevTools websocket.
pub async fn open(pid: i32, wait: Duration) -> Result<Opened, InspectError> {
    check_node(pid)?;
    let before = listening_of(pid);
    let port = configured_port(pid);
    // Already open (an earlier `pm2 inspect`, `--inspect`): its port is the
    // configured one, or any of its loopback ports for `--inspect-port=0`.
    for l in before.iter().filter(|l| l.port == port || (port == 0 && l.addr.is_loopback())) {
        if let Some(ws_url) = ws_url_at(connect_addr(l)).await {
            return Ok(Opened { port: l.port, ws_url, was_open: true });
        }
    }
    if port != 0 {
        let taken = listening_in_netns(pid).iter().any(|l| l.port == port && !before.contains(l));
        if taken {
            return Err(InspectError::PortInUse { pid, port });
        }
    }
    // SAFETY: kill(2) with a pid checked above; a pid that exited in between
    // gives ESRCH, reported as an error.
    if unsafe { libc::kill(pid, libc::SIGUSR1) } != 0 {
        return Err(InspectError::Signal { pid, err: std::io::Error::last_os_error() });
    }
    let deadline = Instant::now() + wait;
    let mut tried: BTreeSet<Listen> = before.iter().copied().collect();
    loop {
        for l in listening_of(pid) {
            if tried.contains(&l) {
                continue;
            }
            if let Some(ws_url) = ws_url_at(connect_addr(&l)).await {
                return Ok(Opened { port: l.port, ws_url, was_open: false });
            }
            // A socket the app opened meanwhile is not asked again.
            tried.insert(l);
        }
        if Instant::now() >= deadline {
            return Err(InspectError::NoInspector { pid, secs: wait.as_secs() });
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(InspectError::NoProcess(pid));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /json/list` at `addr`: the first target's `webSocketDebuggerUrl`, or
/// `None` when nothing there answers as Node's inspector does.
async fn ws_url_at(addr: SocketAddr) -> Option<String> {
    let body = timeout(HTTP_TIMEOUT, http_get(addr, "/json/list")).await.ok()??;
    let list: Value = serde_json::from_slice(&body).ok()?;
    list.as_array()?.iter().find_map(|t| t.get("webSocketDebuggerUrl")?.as_str().map(str::to_string))
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = resp.parse(&buf) {
            if resp.code != Some(200) {
                return None;
            }
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
            if let Some(len) = len {
                if buf.len() >= head + len {
                    return Some(buf[head..head + len].to_vec());
                }
            }
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf) {
        Ok(httparse::Status::Complete(head)) if resp.code == Some(200) => Some(buf[head..].to_vec()),
        _ => None,
    }
}

/// A DevTools protocol session over the inspector's websocket.
pub struct Session {
    pid: i32,
    s: TcpStream,
    next_id: u64,
}

impl Session {
    pub async fn connect(pid: i32, ws_url: &str) -> Result<Session, InspectError> {
        let err = |msg: String| InspectError::Protocol { pid, msg };
        let rest =
            ws_url.strip_prefix("ws://").ok_or_else(|| err(format!("unexpected websocket {ws_url}")))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut s = timeout(HTTP_TIMEOUT, TcpStream::connect(host))
            .await
            .map_err(|_| err(format!("connecting to {host} timed out")))?
            .map_err(|e| err(format!("cannot connect to {host}: {e}")))?;
        let key = base64(&random_bytes::<16>());
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.map_err(|e| err(e.to_string()))?;
        // The 101 head, read byte by byte so no frame byte is consumed.
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        let read_head = async {
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).await.map_err(|e| err(e.to_string()))? == 0 || head.len() > 8192 {
                    return Err(err("the websocket handshake was refused".into()));
                }
                head.push(b[0]);
            }
            Ok(())
        };
        timeout(HTTP_TIMEOUT, read_head).await.map_err(|_| err("websocket handshake timed out".into()))??;
        if !head.starts_with(b"HTTP/1.1 101") {
            let line =
                String::from_utf8_lossy(head.split(|c| *c == b'\r').next().unwrap_or_default()).into_owned();
            return Err(err(format!("websocket handshake answered {line}")));
        }
        Ok(Session { pid, s, next_id: 1 })
    }

    fn err(&self, msg: impl Into<String>) -> InspectError {
        InspectError::Protocol { pid: self.pid, msg: msg.into() }
    }

    /// Calls `method` and returns its `result` (events in between are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, InspectError> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.send(0x1, msg.as_bytes()).await?;
        let pid = self.pid;
        let wait = async {
            loop {
                let m = self.recv().await?;
                let v: Value =
                    serde_json::from_slice(&m).map_err(|e| self.err(format!("bad message: {e}")))?;
                if v.get("id").and_then(Value::as_u64) != Some(id) {
                    continue;
                }
                if let Some(e) = v.get("error") {
                    let text = e.get("message").and_then(Value::as_str).unwrap_or("error");
                    return Err(self.err(format!("{method}: {text}")));
                }
                return Ok(v.get("result").cloned().unwrap_or(Value::Null));
            }
        };
        timeout(CALL_TIMEOUT, wait)
            .await
            .map_err(|_| InspectError::Protocol { pid, msg: format!("{method} timed out") })?
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), InspectError> {
        let mut f = Vec::with_capacity(payload.len() + 14);
        f.push(0x80 | opcode);
        let n = payload.len();
        // Client frames are masked (RFC 6455 5.3).
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        let mask = random_bytes::<4>();
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).await.map_err(|e| self.err(e.to_string()))
    }

    /// One whole text message (fragments joined; pings answered).
    async fn recv(&mut self) -> Result<Vec<u8>, InspectError> {
        let mut msg = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.read_exact(&mut h).await?;
            let (fin, opcode, masked) = (h[0] & 0x80 != 0, h[0] & 0x0f, h[1] & 0x80 != 0);
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.read_exact(&mut b).await?;
                    u16::from_be_bytes(b) as u64
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.read_exact(&mut b).await?;
                    u64::from_be_bytes(b)
                }
                n => n as u64,
            };
            if len as usize > MAX_MESSAGE || msg.len() + len as usize > MAX_MESSAGE {
                return Err(self.err(format!("a message larger than {} MiB", MAX_MESSAGE >> 20)));
            }
            let mut mask = [0u8; 4];
            if masked {
                self.read_exact(&mut mask).await?;
            }
            let mut payload = vec![0u8; len as usize];
            self.read_exact(&mut payload).await?;
            if masked {
                payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
            }
            match opcode {
                0x0..=0x2 => {
                    msg.extend_from_slice(&payload);
                    if fin {
                        return Ok(msg);
                    }
                }
                0x8 => return Err(self.err("the inspector closed the connection")),
                0x9 => self.send(0xA, &payload).await?,
                _ => {}
            }
        }
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), InspectError> {
        self.s
            .read_exact(buf)
            .await
            .map(|_| ())
            .map_err(|e| InspectError::Protocol { pid: self.pid, msg: format!("connection lost: {e}") })
    }

    /// Closes the websocket (a close frame, then the socket).
    pub async fn close(mut self) {
        let _ = self.send(0x8, &1000u16.to_be_bytes()).await;
        let _ = self.s.shutdown().await;
    }
}

/// Closes an inspector this module opened, from inside the app: Node's
/// `inspector.close()` waits until no session is connected, so it runs on
/// a timer and the session disconnects right after asking.
async fn close_inspector(mut s: Session) {
    let expr = "(function(){var m;try{m=typeof process.getBuiltinModule==='function'?\
                process.getBuiltinModule('inspector'):require('inspector')}catch(e){}\
                if(m&&m.close){setTimeout(function(){m.close()},10);return true}return false})()";
    let _ = s.call("Runtime.evaluate", json!({ "expression": expr, "includeCommandLineAPI": true })).await;
    s.close().await;
}

/// Closes the inspector `opened` of `pid` and waits until its port is
/// released (5 s at most).
pub async fn close(pid: i32, opened: &Opened) -> Result<(), InspectError> {
    let s = Session::connect(pid, &opened.ws_url).await?;
    close_inspector(s).await;
    if released(pid, opened.port, Duration::from_secs(5)).await {
        Ok(())
    } else {
        Err(InspectError::Protocol {
            pid,
            msg: format!("the inspector on port {} did not close", opened.port),
        })
    }
}

/// Waits until `pid` no longer listens on `port`.
async fn released(pid: i32, port: u16, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if !listening_of(pid).iter().any(|l| l.port == port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records a profile of `pid` for `duration` and writes it as JSON to `out`
/// (pm2's format: the DevTools `profile` object). The inspector is left as
/// it was found.
pub async fn profile(pid: i32, kind: Profile, duration: Duration, out: &Path) -> Result<(), InspectError> {
    let opened = open(pid, OPEN_WAIT).await?;
    let mut s = Session::connect(pid, &opened.ws_url).await?;
    let result = record(&mut s, kind, duration).await;
    if opened.was_open {
        s.close().await;
    } else {
        // Closed before the next process of the app opens its own on the
        // same port.
        close_inspector(s).await;
        released(pid, opened.port, Duration::from_secs(5)).await;
    }
    let profile = result?;
    let text =
        serde_json::to_vec(&profile).map_err(|e| InspectError::Protocol { pid, msg: e.to_string() })?;
    // Off the event loop: a heap profile can be large.
    tokio::fs::write(out, text)
        .await
        .map_err(|err| InspectError::Write { path: out.display().to_string(), err })
}

async fn record(s: &mut Session, kind: Profile, duration: Duration) -> Result<Value, InspectError> {
    let [enable, start, stop, disable] = kind.methods();
    s.call(enable, json!({})).await?;
    s.call(start, json!({})).await?;
    tokio::time::sleep(duration).await;
    let mut r = s.call(stop, json!({})).await?;
    let _ = s.call(disable, json!({})).await;
    match r.get_mut("profile").map(Value::take) {
        Some(p) if p.is_object() => Ok(p),
        _ => Err(s.err(format!("{stop} returned no profile"))),
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // SAFETY: getrandom writes at most N bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), N, 0) };
    if n != N as isize {
        // Masking keys and handshake nonces only need to vary, not be secret.
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    b
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if c.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn inspector_port_from_node_options_and_flags() {
        assert_eq!(port_from_args(&[]), 9229);
        assert_eq!(port_from_args(&s(&["--inspect-port=0"])), 0);
        assert_eq!(port_from_args(&s(&["--inspect-port", "9400"])), 9400);
        assert_eq!(port_from_args(&s(&["--inspect=127.0.0.1:9300"])), 9300);
        assert_eq!(port_from_args(&s(&["--inspect"])), 9229);
        assert_eq!(port_from_args(&s(&["--inspect=9301", "--debug-port=9302"])), 9302);
        assert_eq!(port_from_args(&s(&["--max-old-space-size=100"])), 9229);
    }

    #[test]
    fn proc_net_tcp_lines() {
        let v4 = "   0: 0100007F:240D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4437484 1";
        assert_eq!(
            parse_tcp_line(v4, false),
            Some(Listen { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 9229, inode: 4437484 })
        );
        let est =
            "   3: 0100007F:8FF2 0100007F:240D 06 00000000:00000000 03:0000176E 00000000     0        0 0 3";
        assert_eq!(parse_tcp_line(est, false), None);
        let v6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1";
        assert_eq!(
            parse_tcp_line(v6, true),
            Some(Listen { addr: IpAddr::V6(Ipv6Addr::LOCALHOST), port: 8080, inode: 77 })
        );
        assert_eq!(parse_tcp_line("garbage", false), None);
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn non_node_processes_are_refused() {
        // This test binary is not node.
        match check_node(std::process::id() as i32) {
            Err(InspectError::NotNode { .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(check_node(0), Err(InspectError::NoProcess(_))));
    }
}
