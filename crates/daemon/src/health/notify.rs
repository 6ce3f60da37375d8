//! The sd_notify protocol: a unix datagram socket (`PM2_HOME/notify.sock`,
//! 0600) given to apps as `NOTIFY_SOCKET`, so any language's sd_notify
//! library (`READY=1`, `STATUS=...`, `WATCHDOG=1`) works as under systemd.
//!
//! The sender is identified by the kernel (`SO_PASSCRED`: every datagram
//! carries the sender's pid in `SCM_CREDENTIALS`), never by what the message
//! says: the pid of a registered process, or a process in its session (every
//! app runs in a session of its own, so a helper it spawns counts for it, as
//! systemd's `NotifyAccess=all` within a unit), or a descendant. A sender
//! that exits before its datagram is read cannot be traced, the same race
//! systemd has: send, then exit after a moment.
//!
//! The socket is bound the first time an app that wants it is launched, so
//! a daemon whose apps do not use it has no socket and no task.

use super::input::{Input, Notice};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// Datagrams are small; systemd reads at most one page.
const MAX_DATAGRAM: usize = 4096;

pub fn parse(msg: &[u8]) -> Notice {
    let mut n = Notice::default();
    for line in msg.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        match line.split_once('=') {
            Some(("READY", "1")) => n.ready = true,
            Some(("WATCHDOG", "1")) => n.watchdog = true,
            Some(("STATUS", s)) => n.status = Some(s.chars().take(256).collect()),
            _ => {}
        }
    }
    n
}

#[derive(Default)]
struct State {
    bound: bool,
    by_pid: HashMap<i32, mpsc::UnboundedSender<Input>>,
}

pub struct NotifyHub {
    path: PathBuf,
    state: Mutex<State>,
}

/// Keeps a process registered; dropping it unregisters.
pub struct Registration {
    hub: Arc<NotifyHub>,
    pid: i32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.state().by_pid.remove(&self.pid);
    }
}

impl NotifyHub {
    pub fn new(path: PathBuf) -> Arc<NotifyHub> {
        Arc::new(NotifyHub { path, state: Mutex::new(State::default()) })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds the socket and starts its reader, once. Called before spawning
    /// a child that gets `NOTIFY_SOCKET`.
    pub fn ensure_bound(self: &Arc<Self>) -> std::io::Result<()> {
        let mut st = self.state();
        if st.bound {
            return Ok(());
        }
        let _ = std::fs::remove_file(&self.path);
        let sock = std::os::unix::net::UnixDatagram::bind(&self.path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600))?;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads sizeof(c_int) bytes from `one`.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        sock.set_nonblocking(true)?;
        let sock = tokio::net::UnixDatagram::from_std(sock)?;
        st.bound = true;
        tokio::spawn(read_loop(self.clone(), sock));
        Ok(())
    }

    /// Notifications from `pid` (and its session) go to `tx` until the
    /// registration is dropped.
    pub fn register(self: &Arc<Self>, pid: i32, tx: mpsc::UnboundedSender<Input>) -> Registration {
        self.state().by_pid.insert(pid, tx);
        Registration { hub: self.clone(), pid }
    }

    /// The registered process `pid` speaks for: itself, its session leader,
    /// or its nearest registered ancestor.
    fn route(&self, pid: i32) -> Option<mpsc::UnboundedSender<Input>> {
        let st = self.state();
        if let Some(tx) = st.by_pid.get(&pid) {
            return Some(tx.clone());
        }
        let (session, mut parent) = stat_ids(pid)?;
        if let Some(tx) = st.by_pid.get(&session) {
            return Some(tx.clone());
        }
        for _ in 0..32 {
            if parent <= 1 {
                return None;
            }
            if let Some(tx) = st.by_pid.get(&parent) {
                return Some(tx.clone());
            }
            parent = stat_ids(parent)?.1;
        }
        None
    }
}

/// `(session id, parent pid)` of a process, from `/proc/<pid>/stat`.
fn stat_ids(pid: i32) -> Option<(i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parens):
    // state ppid pgrp session ...
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split(' ').take(4).collect();
    Some((f.get(3)?.parse().ok()?, f.get(1)?.parse().ok()?))
}

async fn read_loop(hub: Arc<NotifyHub>, sock: tokio::net::UnixDatagram) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        loop {
            match sock.try_io(tokio::io::Interest::READABLE, || recv_with_pid(sock.as_raw_fd(), &mut buf)) {
                Ok((n, Some(pid))) => {
                    let notice = parse(buf.get(..n).unwrap_or_default());
                    if let Some(tx) = hub.route(pid) {
                        let _ = tx.send(Input::Notify(notice));
                    }
                }
                // No credentials: nothing to trust, dropped.
                Ok((_, None)) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }
}

/// One datagram and the sender's pid from its `SCM_CREDENTIALS`.
fn recv_with_pid(fd: i32, buf: &mut [u8]) -> std::io::Result<(usize, Option<i32>)> {
    // Room for one ucred control message (and a stray SCM_RIGHTS, closed below).
    let mut cbuf = [0u64; 32];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: zeroed msghdr is a valid empty header; every pointer set below
    // points into live buffers of the stated lengths.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: fd is our socket; msg describes valid buffers.
    let n =
        unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut pid = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // bounded by msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_CREDENTIALS {
                let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                pid = Some(cred.pid);
            } else if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
                // Descriptors nobody asked for: close them.
                let len = (h.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                let data = libc::CMSG_DATA(c).cast::<i32>();
                for i in 0..len / std::mem::size_of::<i32>() {
                    libc::close(std::ptr::read_unaligned(data.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(((n as usize).min(buf.len()), pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sd_notify_assignments() {
        assert_eq!(parse(b"READY=1"), Notice { ready: true, ..Default::default() });
        assert_eq!(
            parse(b"READY=1\nSTATUS=Serving 3 clients\nWATCHDOG=1\nMAINPID=1\n"),
            Notice { ready: true, status: Some("Serving 3 clients".into()), watchdog: true }
        );
        assert_eq!(parse(b"READY=0\nWATCHDOG=trigger\n\xff\xfe"), Notice::default());
        assert_eq!(parse(b"").status, None);
    }

    #[tokio::test]
    async fn datagrams_reach_the_sender_registration_by_kernel_pid() {
        let dir = tempfile::tempdir().unwrap();
        let hub = NotifyHub::new(dir.path().join("notify.sock"));
        hub.ensure_bound().unwrap();
        hub.ensure_bound().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(hub.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let me = std::process::id() as i32;
        let reg = hub.register(me, tx);
        let c = std::os::unix::net::UnixDatagram::unbound().unwrap();
        // The text claims another pid; only the kernel's counts.
        c.send_to(b"READY=1\nMAINPID=1\nSTATUS=up", hub.path()).unwrap();
        match rx.recv().await {
            Some(Input::Notify(n)) => assert!(n.ready && n.status.as_deref() == Some("up")),
            other => panic!("{other:?}"),
        }
        drop(reg);
        c.send_to(b"WATCHDOG=1", hub.path()).unwrap();
        assert!(rx.recv().await.is_none(), "unregistered: the sender is dropped");
    }
}
