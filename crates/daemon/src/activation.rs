//! Socket activation for apps of any language (`listen_fds`, `--listen`):
//! the daemon binds each address once and passes the listening socket to
//! every instance of the app with the systemd protocol (sd_listen_fds(3)):
//! the sockets on fd 3, 4, ..., `LISTEN_FDS` = their count, `LISTEN_FDNAMES`
//! = their names (colon-separated), `LISTEN_PID` = the child's own pid, set
//! in the child between fork and exec (a wrapper shell would have to be
//! trusted with the app's argv, and the pid is only known there).
//!
//! The instances share one open socket, so they all `accept` from one
//! kernel queue: while one restarts (reload), the others take its share and
//! new connections wait in the backlog, none is refused.
//!
//! Ownership: [`Sockets`] (in `Shared`) keeps a weak map of what is bound
//! and, per process, the sockets its next launch passes on. A socket lives
//! while a process of its app holds it: it survives restarts and reloads
//! (the actor keeps holding it), and closes when the last holder is stopped
//! or deleted.

use corral_proto::AppSpec;
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// The first descriptor of the systemd protocol.
pub const SD_LISTEN_FDS_START: RawFd = 3;
/// Descriptors above which the daemon's copies wait for the child's
/// `dup2`: far from 3..3+n and from the IPC channel placed after them.
const STAGING_MIN_FD: RawFd = 200;

/// One bound, listening socket.
#[derive(Debug)]
pub struct Bound {
    fd: OwnedFd,
    addr: String,
}

impl Bound {
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

#[derive(Default)]
struct Inner {
    /// (app name, address) -> the socket, while someone holds it.
    bound: HashMap<(String, String), Weak<Bound>>,
    /// pm_id -> the sockets it holds.
    held: HashMap<u32, Vec<Arc<Bound>>>,
}

/// The activation sockets of every app.
#[derive(Default)]
pub struct Sockets {
    inner: Mutex<Inner>,
}

impl Sockets {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sockets `pm_id`'s next launch passes on: the app's addresses,
    /// bound now unless a process of the app holds them already. Replaces
    /// what `pm_id` held (an address dropped by an update closes when no
    /// one holds it any more). Empty for apps without `listen_fds`.
    pub fn acquire(&self, pm_id: u32, app: &AppSpec) -> Result<Vec<Arc<Bound>>, String> {
        let mut inner = self.lock();
        inner.bound.retain(|_, w| w.strong_count() > 0);
        let mut out = Vec::with_capacity(app.listen_fds.len());
        for addr in &app.listen_fds {
            let key = (app.name.clone(), addr.clone());
            if let Some(b) = inner.bound.get(&key).and_then(Weak::upgrade) {
                out.push(b);
                continue;
            }
            let b = Arc::new(bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?);
            inner.bound.insert(key, Arc::downgrade(&b));
            out.push(b);
        }
        if out.is_empty() {
            inner.held.remove(&pm_id);
        } else {
            inner.held.insert(pm_id, out.clone());
        }
        Ok(out)
    }

    /// For an in-place update: every socket bound, as (app, address,
    /// descriptor, the processes holding it). The descriptors stay open.
    pub fn export(&self) -> Vec<(String, String, RawFd, Vec<u32>)> {
        let inner = self.lock();
        let mut out: Vec<(String, String, RawFd, Vec<u32>)> = Vec::new();
        for ((app, addr), w) in &inner.bound {
            let Some(b) = w.upgrade() else { continue };
            let holders = inner
                .held
                .iter()
                .filter(|(_, socks)| socks.iter().any(|s| Arc::ptr_eq(s, &b)))
                .map(|(id, _)| *id)
                .collect();
            out.push((app.clone(), addr.clone(), b.fd.as_raw_fd(), holders));
        }
        out
    }

    /// The new image of an in-place update takes over a socket `export`
    /// listed, held by the same processes as before (so it stays bound
    /// across their next restarts).
    ///
    /// # Safety
    /// `fd` must be an open listening socket this image owns and nothing
    /// else in it wraps.
    pub unsafe fn adopt(&self, app: &str, addr: &str, fd: RawFd, holders: &[u32]) {
        // SAFETY: the caller hands over the descriptor.
        let b = Arc::new(Bound { fd: unsafe { OwnedFd::from_raw_fd(fd) }, addr: addr.to_string() });
        let mut inner = self.lock();
        inner.bound.insert((app.to_string(), addr.to_string()), Arc::downgrade(&b));
        for id in holders {
            inner.held.entry(*id).or_default().push(b.clone());
        }
    }

    /// `pm_id` was stopped or deleted: it holds nothing (a socket no process
    /// holds is closed, its queued connections refused).
    pub fn release(&self, pm_id: u32) {
        let gone = self.lock().held.remove(&pm_id);
        // Closed outside the lock.
        drop(gone);
    }
}

/// Binds and listens (SO_REUSEADDR, close-on-exec, blocking: the app sets
/// its own mode, as with systemd).
fn bind(addr: &str) -> io::Result<Bound> {
    let sa: SocketAddr =
        addr.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad address"))?;
    let domain = if sa.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket calls on a descriptor we own from here on.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let setopt = |level, name| {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if setopt(libc::SOL_SOCKET, libc::SO_REUSEADDR) < 0 {
            return Err(io::Error::last_os_error());
        }
        if sa.is_ipv6() && setopt(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) < 0 {
            return Err(io::Error::last_os_error());
        }
        let (storage, len) = sockaddr(&sa);
        if libc::bind(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) < 0 {
            return Err(io::Error::last_os_error());
        }
        // The backlog is where connections wait while instances restart.
        if libc::listen(fd.as_raw_fd(), libc::SOMAXCONN) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Bound { fd, addr: sa.to_string() })
    }
}

fn sockaddr(sa: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; we fill the variant
    // that matches the family.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match sa {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut st as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            (st, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut st as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_scope_id = a.scope_id();
            (st, std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// Where a child's IPC channel goes: after its activation sockets.
pub fn channel_fd(app: &AppSpec) -> RawFd {
    SD_LISTEN_FDS_START + app.listen_fds.len() as RawFd
}

/// The value of `LISTEN_FDNAMES`: one name per socket (systemd's
/// `FileDescriptorName=`), here the app's name without the separator.
pub fn fd_names(app: &AppSpec, n: usize) -> String {
    let name: String = app.name.chars().map(|c| if c == ':' || c.is_control() { '_' } else { c }).collect();
    vec![name; n].join(":")
}

/// Everything the child needs between fork and exec, allocated before the
/// fork: after it only writes into these buffers and makes system calls.
struct ExecPlan {
    program: CString,
    _args: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` followed by room for the pid and its NUL.
    pid_var: Box<[u8; 32]>,
    /// The daemon's copies of the sockets, above [`STAGING_MIN_FD`].
    staged: Vec<OwnedFd>,
}

// SAFETY: the raw pointers point into buffers the plan owns (CStrings and
// the boxed pid buffer, which never move); the plan is only used by the
// spawning thread and, after fork, by the child.
unsafe impl Send for ExecPlan {}
unsafe impl Sync for ExecPlan {}

const LISTEN_PID: &[u8] = b"LISTEN_PID=";

/// Makes `cmd` pass `sockets` to the child: stages copies of them, and
/// installs the hook that `dup2`s them onto 3.. and execs the program
/// itself with `LISTEN_PID` set to the child's pid. Must be the last
/// `pre_exec` hook (it never returns on success) and be called after every
/// `env`/`arg` change of `cmd` (the plan copies them).
pub fn apply(cmd: &mut std::process::Command, sockets: &[Arc<Bound>]) -> io::Result<()> {
    if sockets.is_empty() {
        return Ok(());
    }
    let cstr =
        |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| io::Error::other("NUL byte in a command line"));
    let env: Vec<(Vec<u8>, Vec<u8>)> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| (k.as_bytes().to_vec(), v.as_bytes().to_vec())))
        .filter(|(k, _)| k.as_slice() != b"LISTEN_PID")
        .collect();
    let path = env.iter().find(|(k, _)| k.as_slice() == b"PATH").map(|(_, v)| v.clone());
    let program = resolve_program(cmd.get_program(), path.as_deref(), cmd.get_current_dir())?;
    let mut args = vec![cstr(cmd.get_program())?];
    for a in cmd.get_args() {
        args.push(cstr(a)?);
    }
    let mut env_c = Vec::with_capacity(env.len());
    for (k, v) in env {
        let mut kv = k;
        kv.push(b'=');
        kv.extend_from_slice(&v);
        env_c.push(CString::new(kv).map_err(|_| io::Error::other("NUL byte in the environment"))?);
    }
    let mut pid_var = Box::new([0u8; 32]);
    pid_var[..LISTEN_PID.len()].copy_from_slice(LISTEN_PID);
    let mut staged = Vec::with_capacity(sockets.len());
    for s in sockets {
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we then own.
        let fd = unsafe { libc::fcntl(s.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, STAGING_MIN_FD) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        staged.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env_c.iter().map(|e| e.as_ptr()).collect();
    envp.push(pid_var.as_ptr().cast());
    envp.push(std::ptr::null());
    let mut plan = ExecPlan { program, _args: args, argv, _env: env_c, envp, pid_var, staged };
    // SAFETY: the hook only writes into buffers allocated above and makes
    // async-signal-safe system calls (getpid, dup2, execve).
    unsafe {
        cmd.pre_exec(move || exec_with_sockets(&mut plan));
    }
    Ok(())
}

/// In the child: sockets onto 3.., `LISTEN_PID`, exec. Returns only on
/// failure (std reports the error as the spawn's).
fn exec_with_sockets(plan: &mut ExecPlan) -> io::Result<()> {
    // SAFETY (whole body): system calls on integers and on buffers the plan
    // owns; no allocation.
    unsafe {
        for (i, fd) in plan.staged.iter().enumerate() {
            // dup2 leaves the target without FD_CLOEXEC: the app inherits it.
            if libc::dup2(fd.as_raw_fd(), SD_LISTEN_FDS_START + i as RawFd) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let mut pid = libc::getpid() as u32;
        let mut digits = [0u8; 10];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (pid % 10) as u8;
            n += 1;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        let buf = &mut plan.pid_var;
        for i in 0..n {
            buf[LISTEN_PID.len() + i] = digits[n - 1 - i];
        }
        buf[LISTEN_PID.len() + n] = 0;
        libc::execve(plan.program.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
    }
    Err(io::Error::last_os_error())
}

/// The program's path as `execvp` would find it, but in the app's `PATH`
/// (the daemon's when the app has none), resolved before the fork.
fn resolve_program(program: &OsStr, path: Option<&[u8]>, cwd: Option<&Path>) -> io::Result<CString> {
    let bytes = program.as_bytes();
    if bytes.contains(&b'/') {
        let p = Path::new(program);
        let full = match cwd {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        };
        return CString::new(full.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("NUL byte in the program"));
    }
    let daemon_path = std::env::var_os("PATH").map(|p| p.as_bytes().to_vec());
    let path =
        path.map(<[u8]>::to_vec).or(daemon_path).unwrap_or_else(|| b"/usr/local/bin:/usr/bin:/bin".to_vec());
    for dir in path.split(|b| *b == b':') {
        let dir = if dir.is_empty() { Path::new(".") } else { Path::new(OsStr::from_bytes(dir)) };
        let cand = dir.join(program);
        if crate::activation::is_executable(&cand) {
            return CString::new(cand.as_os_str().as_bytes())
                .map_err(|_| io::Error::other("NUL byte in PATH"));
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found in PATH", program.to_string_lossy())))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, addrs: &[&str]) -> AppSpec {
        AppSpec {
            name: name.into(),
            listen_fds: addrs.iter().map(|s| s.to_string()).collect(),
            ..AppSpec::default()
        }
    }

    #[test]
    fn a_socket_lives_while_a_process_holds_it() {
        let s = Sockets::default();
        let a = s.acquire(0, &app("web", &["127.0.0.1:0"])).unwrap();
        let b = s.acquire(1, &app("web", &["127.0.0.1:0"])).unwrap();
        assert!(Arc::ptr_eq(&a[0], &b[0]), "one socket for every instance");
        // A restart acquires again: same socket.
        let again = s.acquire(0, &app("web", &["127.0.0.1:0"])).unwrap();
        assert!(Arc::ptr_eq(&a[0], &again[0]));
        drop((a, b, again));
        s.release(0);
        assert_eq!(s.lock().held.len(), 1);
        s.release(1);
        assert!(s.lock().bound.values().all(|w| w.strong_count() == 0));
        // Another app asking for the same address binds its own.
        let other = s.acquire(2, &app("api", &["127.0.0.1:0"])).unwrap();
        assert_eq!(other.len(), 1);
        assert!(s.acquire(3, &app("x", &[])).unwrap().is_empty());
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let e = Sockets::default().acquire(0, &app("web", &[&addr])).unwrap_err();
        assert!(e.contains(&addr) && e.contains("in use"), "{e}");
    }

    #[test]
    fn names_and_channel_fd() {
        let a = app("my:app", &["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(fd_names(&a, 2), "my_app:my_app");
        assert_eq!(channel_fd(&a), 5);
    }
}
