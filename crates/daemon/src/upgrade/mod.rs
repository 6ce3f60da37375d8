//! In-place upgrade: the daemon re-executes itself (same pid) with the
//! binary now on disk and keeps every child, channel, listener and session.
//!
//! Old image ([`upgrade`]): probe the new binary (it must say which handover
//! formats it adopts), pause (no accept anywhere, no log pump reads), wait
//! for a quiet point (cluster listeners and the sticky balancer have settled
//! every connection they accepted, no stop/reload/retirement in progress),
//! pause every worker channel at a frame boundary, write the handover
//! document ([`format`]) into a memfd, clear close-on-exec on exactly the
//! descriptors it names, `execve`. If anything before the exec fails, the
//! pause is lifted and the CLI gets the reason: nothing changed.
//!
//! New image ([`take_handover`] then [`adopt`], before anything else at
//! start): read the document, check every descriptor and pid, adopt the
//! control sockets, listeners, sticky ports, processes (their children stay
//! ours: same pid) and the Socket.IO tables, then answer the CLI connection
//! that asked. If it cannot adopt, it re-executes the old binary (kept open
//! since the daemon started) with the same document plus the reason, and
//! the old image adopts and reports the failure.

pub mod conns;
pub mod format;
pub mod pause;

use crate::dlog;
use crate::state::SharedRef;
use format::{ChildHandover, Handover, PortHandover, ProcHandover};
use std::ffi::CString;
use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

/// How long the old image waits for connections, stops and reloads to
/// settle before refusing the update.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);
/// How long it waits for control connections in the middle of a request
/// (most answer at once; `start --wait-ready` waits for the app): past this
/// they are cut (their CLI sees the daemon close the connection; what they
/// asked for goes on in the next image).
const CONN_LIMIT: Duration = Duration::from_secs(3);
/// How long it waits for every channel to reach a frame boundary once
/// reading is paused.
const CHANNEL_LIMIT: Duration = Duration::from_secs(3);

/// What the daemon learned at start: its binary, open (for the fallback),
/// the path it was started from, its control sockets.
struct Start {
    exe_fd: RawFd,
    start_path: String,
    control: [RawFd; 3],
}

static START: OnceLock<Start> = OnceLock::new();

/// Called once at start, before anything else runs: opens the running
/// binary (so the next image can come back to it even if the file on disk
/// is replaced) and records the control sockets.
pub fn remember_start(start_path: Option<String>, control: [RawFd; 3]) {
    // SAFETY: open with a NUL-terminated path; the fd is ours.
    let exe_fd = unsafe { libc::open(c"/proc/self/exe".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    let start_path = start_path.unwrap_or_else(|| {
        std::env::current_exe()
            .map(|p| p.to_string_lossy().trim_end_matches(" (deleted)").to_string())
            .unwrap_or_default()
    });
    let _ = START.set(Start { exe_fd, start_path, control });
}

/// Reads the handover document this image was given, if any, and removes
/// its variable from the environment (apps must not inherit it).
pub fn take_handover() -> Option<Result<Handover, Unreadable>> {
    let fd: RawFd = std::env::var(format::ENV_FD).ok()?.trim().parse().ok()?;
    std::env::remove_var(format::ENV_FD);
    Some(match read_memfd(fd) {
        Err(why) => Err(Unreadable { why, bytes: Vec::new() }),
        Ok(b) => Handover::parse(&b).map_err(|e| Unreadable { why: e.to_string(), bytes: b }),
    })
}

/// A handover document this binary cannot adopt.
pub struct Unreadable {
    why: String,
    bytes: Vec<u8>,
}

/// This binary cannot read the document: back to the old binary, read
/// loosely (its fallback descriptor, every descriptor it names), with the
/// reason added. Never returns.
pub fn unreadable(u: Unreadable) -> ! {
    dlog::error(&format!("In-place update: {}; going back to the previous binary", u.why));
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&u.bytes) else { std::process::exit(1) };
    if v.get("failure").is_some_and(|f| !f.is_null()) {
        std::process::exit(1);
    }
    let Some(exe) = v.get("fallback_exe_fd").and_then(|f| f.as_i64()) else { std::process::exit(1) };
    fn walk(v: &serde_json::Value, out: &mut Vec<RawFd>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if k == "fd" || k.ends_with("_fd") {
                        if let Some(n) = x.as_i64().filter(|n| *n >= 0) {
                            out.push(n as RawFd);
                        }
                    }
                    walk(x, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut fds = Vec::new();
    walk(&v, &mut fds);
    v["failure"] = serde_json::Value::from(u.why);
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    let title = v.get("title").and_then(|t| t.as_str()).map(String::from).unwrap_or_else(current_title);
    let Err(e) = exec_bytes("the previous binary", &title, &bytes, &fds, Some(exe as RawFd));
    dlog::error(&format!("In-place update: {e}"));
    std::process::exit(1)
}

fn read_memfd(fd: RawFd) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek};
    use std::os::fd::FromRawFd;
    // SAFETY: the variable names the memfd the previous image created for
    // us; we take it over (and close it when done).
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut buf = Vec::new();
    f.rewind()
        .and_then(|_| f.read_to_end(&mut buf))
        .map_err(|e| format!("cannot read the handover state: {e}"))?;
    Ok(buf)
}

/// Runs `pm2 update` in place. Returns only when the update did not happen
/// (the reason); on success this image is replaced and the next one
/// answers the CLI on `requester`.
pub async fn upgrade(shared: &SharedRef, binary: Option<String>, requester: Option<RawFd>) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    static RUNNING: AtomicBool = AtomicBool::new(false);
    if RUNNING.swap(true, Ordering::AcqRel) {
        return "another update is in progress".into();
    }
    let why = upgrade_once(shared, binary, requester).await;
    RUNNING.store(false, Ordering::Release);
    why
}

async fn upgrade_once(shared: &SharedRef, binary: Option<String>, requester: Option<RawFd>) -> String {
    let Some(start) = START.get() else {
        return "this daemon cannot hand over (started without its binary)".into();
    };
    let target = binary.unwrap_or_else(|| start.start_path.clone());
    if let Err(e) = probe(&target).await {
        return format!("{e}; the daemon keeps running unchanged");
    }
    let t0 = crate::timefmt::now_ms();
    dlog::log(&format!("In-place update to {target}: pausing"));
    pause::pause();
    let r = quiesce(shared).await.and_then(|()| {
        dlog::log(&format!("In-place update: quiet after {} ms, executing", crate::timefmt::now_ms() - t0));
        let doc = export(shared, start, requester, t0)?;
        exec_with(&target, &doc, None)
    });
    // Only a failure comes back here.
    let Err(e) = r;
    shared.cluster.resume_channels();
    pause::resume();
    dlog::error(&format!("In-place update refused: {e}"));
    format!("{e}; the daemon keeps running unchanged")
}

/// Runs the new binary as a probe: it must answer the range of handover
/// formats it adopts, and that range must hold ours.
async fn probe(target: &str) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(target);
    cmd.env(format::ENV_PROBE, "1")
        .env_remove("CORRAL_DAEMON_MODE")
        .env_remove(format::ENV_FD)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .map_err(|_| format!("the new binary {target} did not answer its probe within 20 s"))?
        .map_err(|e| format!("the new binary {target} cannot be run: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match format::parse_probe(&text) {
        Some((lo, hi)) if out.status.success() && (lo..=hi).contains(&format::FORMAT_VERSION) => Ok(()),
        Some((lo, hi)) if out.status.success() => Err(format!(
            "the new binary {target} adopts handover formats {lo} to {hi}, this daemon writes {}",
            format::FORMAT_VERSION
        )),
        _ => Err(format!(
            "the new binary {target} is not a Corral that can adopt a running daemon (its probe exited with {})",
            out.status
        )),
    }
}

/// Waits for a quiet point, bounded. Reading from the workers is paused only
/// for the last step (every channel at a frame boundary); when a channel does
/// not get there within [`CHANNEL_LIMIT`] (a hand-off waiting for its ACK
/// from a worker the machine's load keeps off the CPU), reading resumes and
/// the whole wait starts over, until [`SETTLE_LIMIT`]: the workers are never
/// held off their channel for long, and one unlucky moment does not fail
/// the update.
async fn quiesce(shared: &SharedRef) -> Result<(), String> {
    let start = Instant::now();
    let deadline = start + SETTLE_LIMIT;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        loop {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let why = unsettled(shared, start.elapsed() < CONN_LIMIT);
            match why {
                None => break,
                Some(w) if Instant::now() >= deadline => {
                    return Err(format!("not quiet within {SETTLE_LIMIT:?}: {w}"))
                }
                Some(_) => {}
            }
        }
        shared.cluster.pause_channels();
        let channel_deadline = Instant::now() + CHANNEL_LIMIT;
        let busy = loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            match shared.cluster.export_handover() {
                // Checked again with the control connections, as above: a request read since
                // the check above (a reload whose process is not marked busy yet) would
                // otherwise be cut with its connection and lost with this image. It may need
                // the worker channels, so they resume and the wait starts over.
                Ok(_) => match unsettled(shared, start.elapsed() < CONN_LIMIT) {
                    None => {
                        let (n, _) = conns::control_connections();
                        if n > 0 {
                            dlog::log(&format!(
                                "In-place update: {n} control connections still waiting for an answer are closed"
                            ));
                        }
                        return Ok(());
                    }
                    Some(w) => break w,
                },
                Err(w) if Instant::now() >= channel_deadline => {
                    break format!("{w} (not at a frame boundary within {CHANNEL_LIMIT:?})")
                }
                Err(_) => {}
            }
        };
        if Instant::now() + CHANNEL_LIMIT >= deadline {
            return Err(format!("not quiet with the worker channels paused ({attempts} attempts): {busy}"));
        }
        shared.cluster.resume_channels();
        dlog::log(&format!("In-place update: {busy}; trying again"));
    }
}

/// Why this is not a quiet point, if it is not.
fn unsettled(shared: &SharedRef, with_conns: bool) -> Option<String> {
    use std::sync::atomic::Ordering;
    let n = shared.cluster.unsettled_connections();
    if n > 0 {
        return Some(format!("{n} connections of cluster listeners are being handed out"));
    }
    let n = crate::balancer::in_progress();
    if n > 0 {
        return Some(format!("{n} connections on the sticky port are being read"));
    }
    let (n, _) = conns::control_connections();
    if n > 0 && with_conns {
        return Some(format!("{n} control connections are in the middle of a request"));
    }
    let n = crate::supervisor::actor::RETIRING.load(Ordering::Acquire);
    if n > 0 {
        return Some(format!("{n} workers replaced by a reload are still finishing"));
    }
    // The other nodes must get what the workers said before the pause; while Redis is
    // unreachable there is no point waiting (the update then drops them, and says so).
    if let Some(b) = shared.cluster.reg().bridge.clone() {
        let n = b.unpublished();
        if n > 0 && b.publisher_connected() {
            return Some(format!("{n} adapter messages are being published to the other nodes"));
        }
        let n = b.link().serving();
        if n > 0 {
            return Some(format!("{n} requests forwarded by other nodes are being handed to workers"));
        }
    }
    let t = shared.table();
    if let Some(e) = t.procs.values().find(|e| e.live.busy) {
        return Some(format!("process {} is being stopped or reloaded", e.info.pm_id));
    }
    None
}

/// The handover document of this image, at a quiet point. Synchronous: no
/// task runs between this and the exec.
fn export(shared: &SharedRef, start: &Start, requester: Option<RawFd>, t0: u64) -> Result<Handover, String> {
    use std::os::fd::AsRawFd;
    let mut cluster = shared.cluster.export_handover()?;
    let t = shared.table();
    let mut procs = Vec::new();
    for e in t.procs.values() {
        let info = e.info.clone();
        let child = (info.pid != 0).then(|| ChildHandover {
            pid: info.pid as i32,
            out_fd: e.live.out_fd,
            err_fd: e.live.err_fd,
            stdin_fd: e.stdin.as_ref().map(|f| f.as_raw_fd()),
            ipc: e.live.wid.and_then(|w| cluster.channels.remove(&w)),
        });
        let restart_in_ms = e.live.restart_at_ms.map(|at| at.saturating_sub(crate::timefmt::now_ms()));
        procs.push(ProcHandover { info, child, restart_in_ms });
    }
    Ok(Handover {
        version: format::FORMAT_VERSION,
        from_version: corral_proto::CORRAL_VERSION.to_string(),
        fallback_exe_fd: (start.exe_fd >= 0).then_some(start.exe_fd),
        start_path: start.start_path.clone(),
        control_fd: start.control[0],
        rpc_fd: start.control[1],
        pub_fd: start.control[2],
        requester_fd: requester,
        next_id: t.next_id,
        next_wid: cluster.next_wid,
        msg_seq: cluster.msg_seq,
        procs,
        listeners: cluster.listeners,
        sticky_ports: crate::balancer::export_ports()
            .into_iter()
            .map(|(port, fd)| PortHandover { port, fd })
            .collect(),
        sticky_apps: cluster.sticky_apps,
        failure: None,
        started_ms: t0,
        title: current_title(),
        control_conns: conns::control_connections().1,
        activation: shared
            .activation
            .export()
            .into_iter()
            .map(|(app, addr, fd, holders)| format::ActivationHandover { app, addr, fd, holders })
            .collect(),
        bridge: shared.cluster.reg().bridge.as_ref().map(|b| b.export()),
    })
}

fn set_cloexec(fd: RawFd, on: bool) -> bool {
    // SAFETY: fcntl on a descriptor number; no memory is involved.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return false;
        }
        let flags = if on { flags | libc::FD_CLOEXEC } else { flags & !libc::FD_CLOEXEC };
        libc::fcntl(fd, libc::F_SETFD, flags) == 0
    }
}

/// Writes `doc` into a memfd and execs `target` (or the binary open as
/// `exe_fd`) with it. Returns only on failure, after restoring
/// close-on-exec on every descriptor.
fn exec_with(
    target: &str,
    doc: &Handover,
    exe_fd: Option<RawFd>,
) -> Result<std::convert::Infallible, String> {
    let title = if doc.title.is_empty() { current_title() } else { doc.title.clone() };
    exec_bytes(target, &title, &doc.to_bytes(), &doc.fds(), exe_fd)
}

fn current_title() -> String {
    std::env::args_os().next().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default()
}

fn exec_bytes(
    target: &str,
    title: &str,
    doc: &[u8],
    fds: &[RawFd],
    exe_fd: Option<RawFd>,
) -> Result<std::convert::Infallible, String> {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: memfd_create with a NUL-terminated name; the fd is ours.
    let mfd = unsafe { libc::memfd_create(c"corral-handover".as_ptr(), 0) };
    if mfd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: we own the fresh memfd.
    let mut mem = unsafe { std::fs::File::from_raw_fd(mfd) };
    mem.write_all(doc).map_err(|e| format!("cannot write the handover state: {e}"))?;
    for &fd in fds {
        if !set_cloexec(fd, false) {
            for &f in fds {
                set_cloexec(f, true);
            }
            return Err(format!("descriptor {fd} named in the handover is not open"));
        }
    }
    let c = |s: &str| CString::new(s.as_bytes().to_vec()).unwrap_or_default();
    let argv = [c(title)];
    let mut envs: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != "CORRAL_DAEMON_MODE" && k != format::ENV_FD)
        .map(|(k, v)| c(&format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
        .collect();
    envs.push(c("CORRAL_DAEMON_MODE=1"));
    envs.push(c(&format!("{}={}", format::ENV_FD, mem.as_raw_fd())));
    let argv_p: Vec<*const libc::c_char> =
        argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let env_p: Vec<*const libc::c_char> = envs.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    // SAFETY: argv and envp are NULL-terminated arrays of NUL-terminated
    // strings that outlive the call; execve only returns on failure.
    unsafe {
        match exe_fd {
            Some(fd) => {
                libc::syscall(
                    libc::SYS_execveat,
                    fd,
                    c"".as_ptr(),
                    argv_p.as_ptr(),
                    env_p.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
            }
            None => {
                let path = c(target);
                libc::execve(path.as_ptr(), argv_p.as_ptr(), env_p.as_ptr());
            }
        }
    }
    let err = std::io::Error::last_os_error();
    for &fd in fds {
        set_cloexec(fd, true);
    }
    Err(format!("cannot execute {target}: {err}"))
}

/// What the new image adopted, for the CLI's answer.
pub struct Adopted {
    pub requester: Option<RawFd>,
    /// The multi-host bridge continues as the same node.
    pub bridge: Option<crate::multihost::Resume>,
    /// Other control connections, between two requests.
    pub control_conns: Vec<RawFd>,
    pub from_version: String,
    pub failure: Option<String>,
    pub wall_ms: u64,
    pub processes: usize,
}

/// Checks that everything the document names exists in this process
/// before touching any of it, so a refusal leaves it intact for the
/// fallback.
fn check(doc: &Handover) -> Result<(), String> {
    if std::env::var_os("CORRAL_HANDOVER_REFUSE").is_some() {
        return Err("CORRAL_HANDOVER_REFUSE is set (a test of the fallback)".into());
    }
    for fd in doc.fds() {
        // SAFETY: F_GETFD on a descriptor number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(format!("descriptor {fd} of the handover is not open"));
        }
    }
    Ok(())
}

/// New image: everything but the control sockets (which `lib.rs` serves).
/// On failure before anything was taken over, goes back to the old binary;
/// never returns then.
pub fn adopt(shared: &SharedRef, doc: Handover) -> Adopted {
    dlog::log(&format!(
        "In-place update: new image reading the state {} ms after the pause",
        crate::timefmt::now_ms().saturating_sub(doc.started_ms)
    ));
    if let Err(e) = check(&doc) {
        fall_back(doc, e);
    }
    shared.cluster.adopt_listeners(doc.next_wid, doc.msg_seq, &doc.listeners);
    for p in &doc.sticky_ports {
        if let Err(e) = crate::balancer::adopt_port(shared, p.port, p.fd) {
            dlog::error(&format!("sticky port {} could not be adopted: {e}", p.port));
        }
    }
    for a in &doc.activation {
        // SAFETY: `check` found the descriptor open; the document names it
        // as this socket and nothing else in this image owns it.
        unsafe { shared.activation.adopt(&a.app, &a.addr, a.fd, &a.holders) };
    }
    let mut n = 0;
    for p in doc.procs {
        let id = p.info.pm_id;
        match crate::supervisor::actor::adopt(shared, p) {
            Ok(_) => n += 1,
            Err(e) => dlog::error(&format!("process {id} could not be adopted: {e}")),
        }
    }
    shared.table().next_id = doc.next_id;
    shared.cluster.adopt_sticky(&doc.sticky_apps);
    if let Some(fd) = doc.fallback_exe_fd {
        // The old binary is needed only until adoption is done.
        // SAFETY: the handover names this descriptor; closing it is ours.
        unsafe { libc::close(fd) };
    }
    let wall_ms = crate::timefmt::now_ms().saturating_sub(doc.started_ms);
    dlog::log(&format!(
        "In-place update from {} done: {n} processes adopted in {wall_ms} ms",
        doc.from_version
    ));
    Adopted {
        requester: doc.requester_fd,
        bridge: doc.bridge,
        control_conns: doc.control_conns,
        from_version: doc.from_version,
        failure: doc.failure,
        wall_ms,
        processes: n,
    }
}

/// This image cannot adopt: back to the old binary with the same document
/// and the reason. If even that fails, nothing can be saved: say so and
/// exit (the children lose their channels).
fn fall_back(mut doc: Handover, why: String) -> ! {
    dlog::error(&format!("In-place update: this binary cannot adopt the daemon ({why}); going back"));
    if doc.failure.is_some() {
        // Already the fallback image: going back again would loop.
        dlog::error("In-place update: the previous binary cannot adopt either; the daemon stops");
        std::process::exit(1);
    }
    doc.failure = Some(why);
    // The fault-injection switch is for this image only.
    std::env::remove_var("CORRAL_HANDOVER_REFUSE");
    if let Some(fd) = doc.fallback_exe_fd {
        let Err(e) = exec_with("the previous binary", &doc, Some(fd));
        dlog::error(&format!("In-place update: {e}"));
    }
    std::process::exit(1);
}
