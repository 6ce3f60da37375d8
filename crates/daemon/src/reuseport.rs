//! Retiring a worker that listens on `SO_REUSEPORT` sockets of its own (Bun's
//! cluster workers: Bun's `node:http` and `Bun.serve` bind the port in every
//! worker and never ask the primary for a handle, so `node:cluster`'s
//! `disconnect` does not close them as it closes a Node worker's servers).
//!
//! Left alone, such a worker keeps taking new connections until it exits,
//! and the exit resets every connection it had accepted but not answered yet
//! (and, unless `net.ipv4.tcp_migrate_req` is 1, the ones queued on its
//! socket). So before the worker is asked to exit, the daemon takes its
//! listeners out of the port's reuseport group itself:
//!
//! 1. it borrows a duplicate of each of the worker's descriptors that is a
//!    listening TCP socket with `SO_REUSEPORT` (`pidfd_getfd`, Linux 5.6+;
//!    allowed to a parent over its own child, as for ptrace, or with
//!    `CAP_SYS_PTRACE`);
//! 2. `shutdown(SHUT_RD)` on a listening socket stops it listening for every
//!    descriptor that shares it (the kernel's `tcp_disconnect` ->
//!    `inet_csk_listen_stop`): from that instant the kernel picks only the
//!    group's other sockets for new connections, and the connections already
//!    queued on it move to one of them when `tcp_migrate_req` is 1;
//! 3. the worker keeps the connections it accepted and answers them;
//!    [`Stopped::open_connections`] counts the ones still open, so the
//!    retirement can wait for them before it signals the worker.
//!
//! The worker is never written to: its listening descriptor stays open (a
//! stopped socket), its event loop sees it readable and `accept` fail until
//! the worker exits, which the retirement makes happen soon.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Why a worker's listeners could not be stopped from the outside. The
/// retirement then goes on as before (the worker's exit closes them).
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("pidfd_open({pid}): {err}")]
    PidFd { pid: i32, err: io::Error },
    #[error("cannot list /proc/{pid}/fd: {err}")]
    Fds { pid: i32, err: io::Error },
    #[error("pidfd_getfd on pid {pid}: {err}")]
    GetFd { pid: i32, err: io::Error },
}

/// A worker whose reuseport listeners were stopped.
#[derive(Debug)]
pub struct Stopped {
    pid: i32,
    /// The local ports of the listeners stopped.
    pub ports: Vec<u16>,
    /// Socket inodes of the connections the worker had accepted on those
    /// ports when its listeners stopped (no new ones can come).
    conns: HashSet<u64>,
}

impl Stopped {
    /// How many of the connections the worker had accepted when its
    /// listeners stopped it still holds open (0 once it exited).
    pub fn open_connections(&self) -> usize {
        if self.conns.is_empty() {
            return 0;
        }
        socket_fds(self.pid)
            .map(|fds| fds.iter().filter(|(_, ino)| self.conns.contains(ino)).count())
            .unwrap_or(0)
    }
}

/// Stops every listening TCP `SO_REUSEPORT` socket of process `pid` (see
/// the module documentation). `Ok` with no ports when it has none.
pub fn stop_listeners(pid: i32) -> Result<Stopped, StopError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if raw < 0 {
        return Err(StopError::PidFd { pid, err: io::Error::last_os_error() });
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let fds = socket_fds(pid).map_err(|err| StopError::Fds { pid, err })?;
    let mut ports = Vec::new();
    let mut borrowed = Vec::with_capacity(fds.len());
    for (fd, ino) in fds {
        let dup = match get_fd(&pidfd, fd) {
            Ok(d) => d,
            // Closed since the listing, or the process is exiting.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ESRCH)) => continue,
            Err(err) => return Err(StopError::GetFd { pid, err }),
        };
        if !is_tcp(&dup) {
            continue;
        }
        if sockopt(&dup, libc::SO_ACCEPTCONN) == Some(1) {
            if sockopt(&dup, libc::SO_REUSEPORT) == Some(1) {
                if let Some(port) = local_port(&dup) {
                    // SAFETY: shutdown on a descriptor we own.
                    if unsafe { libc::shutdown(dup.as_raw_fd(), libc::SHUT_RD) } == 0 {
                        ports.push(port);
                    }
                }
            }
        } else {
            borrowed.push((ino, dup));
        }
    }
    // The connections accepted on those ports before they stopped. One the
    // worker accepts between the listing and the shutdown is missed, and
    // waited for only by the kill_timeout of the ladder that follows.
    let conns = borrowed
        .into_iter()
        .filter(|(_, d)| local_port(d).is_some_and(|p| ports.contains(&p)))
        .map(|(ino, _)| ino)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Ok(Stopped { pid, ports, conns })
}

/// The worker's socket descriptors and their inodes (`socket:[N]` links).
fn socket_fds(pid: i32) -> io::Result<Vec<(RawFd, u64)>> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(ent) = ent else { continue };
        let Some(fd) = ent.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()) else { continue };
        let Ok(link) = std::fs::read_link(ent.path()) else { continue };
        if let Some(ino) = parse_socket_link(&link.to_string_lossy()) {
            out.push((fd, ino));
        }
    }
    Ok(out)
}

/// `socket:[1234]` -> 1234.
fn parse_socket_link(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

fn get_fd(pidfd: &OwnedFd, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number in that
    // process and flags; it returns a new descriptor (close-on-exec) or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) } as RawFd;
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// An integer `SOL_SOCKET` option, `None` if the call fails (not a socket).
fn sockopt(fd: &OwnedFd, opt: libc::c_int) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for the write of one c_int.
    let r = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, (&mut v as *mut libc::c_int).cast(), &mut len)
    };
    (r == 0).then_some(v)
}

fn is_tcp(fd: &OwnedFd) -> bool {
    matches!(sockopt(fd, libc::SO_DOMAIN), Some(libc::AF_INET | libc::AF_INET6))
        && sockopt(fd, libc::SO_PROTOCOL) == Some(libc::IPPROTO_TCP)
}

/// The local port of an IPv4/IPv6 socket.
fn local_port(fd: &OwnedFd) -> Option<u16> {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss and len describe a buffer large enough for any address.
    let r = unsafe {
        libc::getsockname(fd.as_raw_fd(), (&mut ss as *mut libc::sockaddr_storage).cast(), &mut len)
    };
    if r != 0 {
        return None;
    }
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(u16::from_be(sin.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(u16::from_be(sin6.sin6_port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link("socket:[42]"), Some(42));
        assert_eq!(parse_socket_link("pipe:[42]"), None);
        assert_eq!(parse_socket_link("socket:[x]"), None);
    }

    /// A reuseport listener bound in this process (the test plays the
    /// worker and the daemon at once).
    fn reuseport_listener() -> TcpListener {
        // SAFETY: plain socket calls on a descriptor this test owns; the
        // address is a valid sockaddr_in for bind.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            let one: libc::c_int = 1;
            let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            assert_eq!(
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_REUSEPORT,
                    (&one as *const libc::c_int).cast(),
                    len
                ),
                0
            );
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let slen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(libc::bind(fd, (&sin as *const libc::sockaddr_in).cast(), slen), 0);
            assert_eq!(libc::listen(fd, 16), 0);
            TcpListener::from_raw_fd(fd)
        }
    }

    #[test]
    fn stops_reuseport_listeners_and_counts_accepted_connections() {
        let l = reuseport_listener();
        let port = l.local_addr().expect("addr").port();
        // An exclusive listener is left alone.
        let plain = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut accepted, _) = l.accept().expect("accept");
        let s = stop_listeners(std::process::id() as i32).expect("stop");
        assert!(s.ports.contains(&port), "{s:?}");
        assert!(!s.ports.contains(&plain.local_addr().expect("addr").port()), "{s:?}");
        // The port no longer takes connections; the accepted one still works.
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        assert!(TcpStream::connect(plain.local_addr().expect("addr")).is_ok());
        assert_eq!(s.open_connections(), 1);
        client.write_all(b"x").expect("write");
        let mut b = [0u8; 1];
        accepted.read_exact(&mut b).expect("read");
        drop(accepted);
        assert_eq!(s.open_connections(), 0);
    }
}
