//! Binding a listener the way Node's cluster primary does for a worker's
//! `queryServer` (round-robin scheduling), and naming it the way the worker
//! expects (`key`, `sockname`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What a worker asked for, from the `queryServer` message.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `None` = JS `null`/`undefined`: every interface.
    pub address: Option<String>,
    /// `None` for unix sockets.
    pub port: Option<i64>,
    /// 4, 6, or -1 (pipe / unix socket).
    pub address_type: i64,
    /// JS `fd` (listening on an inherited fd); not supported by Corral.
    pub fd: Option<i64>,
    pub index: i64,
    /// The `key` text the worker will match `newconn.key` against, built as
    /// Node builds it: `${address}:${port}:${addressType}:${fd}:${index}`.
    pub key: String,
}

/// A bound, listening socket.
pub enum Bound {
    // Plain std sockets: the listener task registers them with the reactor
    // itself and accepts with accept4, so accepted connections are never
    // registered (they are only passed on).
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, std::path::PathBuf),
}

impl Bound {
    /// `sockname` for the reply: `{address, family, port}` for TCP, `None`
    /// for unix sockets (the worker then reports the requested path).
    pub fn sockname(&self) -> Option<(String, &'static str, u16)> {
        match self {
            Bound::Tcp(l) => l.local_addr().ok().map(|a| {
                let fam = if a.is_ipv4() { "IPv4" } else { "IPv6" };
                (a.ip().to_string(), fam, a.port())
            }),
            Bound::Unix(..) => None,
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Bound::Unix(_, path) = self {
            // Node removes the socket file when the server closes.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Node's listen backlog.
const BACKLOG: u32 = 511;

impl std::os::fd::AsRawFd for Bound {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Bound::Tcp(l) => l.as_raw_fd(),
            Bound::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

/// A TCP socket bound to `addr` with SO_REUSEADDR, not yet listening (the
/// one TCP bind of the daemon: cluster listeners and the sticky balancer).
pub fn tcp_socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let sock =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    Ok(sock)
}

fn tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    tcp_socket(addr)?.listen(BACKLOG)?.into_std()
}

/// Node's rule for a port without an address: `::` (dual stack), falling
/// back to `0.0.0.0` where IPv6 is unavailable; a port in use is an error
/// either way.
pub fn any_address<T>(port: u16, bind: impl Fn(SocketAddr) -> std::io::Result<T>) -> std::io::Result<T> {
    match bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)) {
        Err(e) if e.raw_os_error() != Some(libc::EADDRINUSE) => {
            bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
        }
        r => r,
    }
}

/// TCP_DEFER_ACCEPT on a listening socket: the kernel hands us a connection
/// only once its first bytes arrived, so reading the request rarely waits
/// (one wake-up less per request), and connections that never send anything
/// never reach us (the kernel drops them after the timeout). Best effort: a
/// kernel without it still accepts as usual.
pub fn defer_accept(listener: std::os::fd::RawFd) {
    let secs: libc::c_int = 10;
    // SAFETY: setsockopt reads `secs` for the given length only.
    unsafe {
        libc::setsockopt(
            listener,
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A listener polled for readiness only (never for writability): its
/// accept loop takes connections with [`accept4`] without registering them.
pub fn poll_listener(
    listener: std::net::TcpListener,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::net::TcpListener>> {
    // SAFETY: the AsyncFd owns the std listener, so its fd stays open and the
    // same for the AsyncFd's whole life.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

/// accept4: the next connection, non-blocking and close-on-exec, without
/// registering it with epoll (the daemon mostly only passes it on).
pub fn accept4(listener: std::os::fd::RawFd) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: accept4 with null address pointers; the returned fd is ours.
    let fd = unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Binds what `q` asks for. A bare port binds `::` (dual stack) and falls
/// back to `0.0.0.0` where IPv6 is unavailable, as Node does.
pub fn bind(q: &Query) -> std::io::Result<Bound> {
    if q.address_type == -1 {
        let path = q.address.clone().ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let l = std::os::unix::net::UnixListener::bind(&path)?;
        l.set_nonblocking(true)?;
        return Ok(Bound::Unix(l, path.into()));
    }
    if q.fd.is_some() {
        return Err(std::io::Error::from_raw_os_error(libc::ENOTSUP));
    }
    let port = q.port.unwrap_or(0);
    let port = u16::try_from(port).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    match &q.address {
        Some(a) => {
            let ip: IpAddr = a.parse().map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            tcp(SocketAddr::new(ip, port)).map(Bound::Tcp)
        }
        None => any_address(port, tcp).map(Bound::Tcp),
    }
}

/// libuv reports errors as negative errno values.
pub fn uv_errno(e: &std::io::Error) -> i64 {
    -(e.raw_os_error().unwrap_or(libc::EINVAL) as i64)
}

/// The code Node shows for a bind error (`err.code`), for the daemon log:
/// `EADDRINUSE`, `EACCES`, ... (`EINVAL` when there is no OS error).
pub fn uv_errname(e: &std::io::Error) -> String {
    let n = e.raw_os_error().unwrap_or(libc::EINVAL);
    let name = match n {
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EINVAL => "EINVAL",
        libc::ENOTSUP => "ENOTSUP",
        libc::ENOENT => "ENOENT",
        libc::ENOTDIR => "ENOTDIR",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        _ => return format!("errno {n}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(address: Option<&str>, port: i64) -> Query {
        Query {
            address: address.map(String::from),
            port: Some(port),
            address_type: 4,
            fd: None,
            index: 0,
            key: String::new(),
        }
    }

    #[tokio::test]
    async fn bare_port_is_dual_stack_and_conflicts_report_eaddrinuse() {
        let b = bind(&q(None, 0)).unwrap();
        let (_, fam, port) = b.sockname().unwrap();
        assert!(port > 0);
        assert!(fam == "IPv6" || fam == "IPv4");
        let e = match bind(&q(None, port as i64)) {
            Err(e) => e,
            Ok(_) => panic!("second bind succeeded"),
        };
        assert_eq!(uv_errno(&e), -98);
        assert_eq!(uv_errname(&e), "EADDRINUSE");
    }

    #[tokio::test]
    async fn explicit_host_and_unix_socket() {
        let b = bind(&q(Some("127.0.0.1"), 0)).unwrap();
        assert_eq!(b.sockname().unwrap().0, "127.0.0.1");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let u = Query {
            address: Some(path.to_string_lossy().into_owned()),
            port: None,
            address_type: -1,
            fd: None,
            index: 0,
            key: String::new(),
        };
        let b = bind(&u).unwrap();
        assert!(b.sockname().is_none());
        assert!(path.exists());
        drop(b);
        assert!(!path.exists());
        assert!(bind(&q(Some("not-an-ip"), 0)).is_err());
    }
}
