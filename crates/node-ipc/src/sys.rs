//! Thin wrappers over the socket calls the channel needs.

use std::io;
use std::mem;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Most fds accepted in one `recvmsg`; libuv uses the same order of magnitude.
const MAX_FDS_PER_READ: usize = 16;

/// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    let r = unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a caller-owned fd with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn check_stream_socket(fd: RawFd) -> io::Result<()> {
    let mut ty: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: out-pointers to a c_int and its length.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&mut ty as *mut libc::c_int).cast(), &mut len)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if ty != libc::SOCK_STREAM {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "IPC fd must be a SOCK_STREAM socket"));
    }
    Ok(())
}

pub fn shutdown(fd: RawFd) {
    // SAFETY: shutdown on a caller-owned fd; failure (already closed by the peer) is harmless.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Sends `data` with `fd` attached (SCM_RIGHTS) if given. Never blocks, never
/// raises SIGPIPE.
pub fn send(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> io::Result<usize> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain old data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(mem::size_of::<RawFd>() as u32) } as usize;
        debug_assert!(space <= mem::size_of_val(&cbuf));
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` writable, aligned bytes, enough for
        // one cmsghdr carrying one int, so CMSG_FIRSTHDR is non-null and in bounds.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        }
    }
    loop {
        // SAFETY: msg points at live iov/control buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What one [`recv`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes read (0 = end of stream).
    pub len: usize,
    /// Control data came with them (descriptors, or some the kernel had to
    /// drop for lack of room). An `AF_UNIX` stream read stops after the
    /// bytes a descriptor rode on, so more may be waiting although the
    /// buffer was not filled.
    pub control: bool,
}

impl Received {
    /// The socket held no more than this read took: the buffer was not
    /// filled and nothing made the kernel stop early. A stream read gathers
    /// every queued byte up to the buffer's size and stops short only at a
    /// message that carried descriptors (or credentials, which these
    /// sockets never ask for), so a short read without control data emptied
    /// the socket. Whatever arrives afterwards raises a new readiness edge.
    pub fn drained(&self, buf_len: usize) -> bool {
        self.len > 0 && self.len < buf_len && !self.control
    }
}

/// Reads into `buf`, appending any received fds (close-on-exec) to `fds`.
pub fn recv(sock: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<Received> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut cbuf = [0u64; 16];
    // SAFETY: plain old data.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: pure size computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS_PER_READ * mem::size_of::<RawFd>()) as u32) } as usize;
    msg.msg_controllen = space.min(mem::size_of_val(&cbuf)) as _;
    let n = loop {
        // SAFETY: msg points at live, correctly sized buffers.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG_* macros walk
    // only within it. Every fd found is a fresh descriptor now owned by us.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let payload = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                let count = payload / mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    if fd >= 0 {
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    // With MSG_CTRUNC some fds were dropped by the kernel (already closed for
    // us); those that did arrive are kept and the frame logic NACKs as needed.
    let control = msg.msg_controllen > 0 || msg.msg_flags & libc::MSG_CTRUNC != 0;
    Ok(Received { len: n, control })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_short_read_without_control_data_empties_the_socket() {
        let r = |len, control| Received { len, control };
        assert!(r(213, false).drained(65536));
        assert!(!r(65536, false).drained(65536), "a full buffer may leave more behind");
        assert!(!r(213, true).drained(65536), "a read stops after a descriptor's bytes");
        assert!(!r(0, false).drained(65536), "end of stream is not a read to wait after");
    }

    #[test]
    fn recv_reports_descriptors_as_control_data() {
        let (a, b) = socketpair().unwrap();
        let (x, _y) = socketpair().unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(send(a.as_raw_fd(), b"with", Some(x.as_raw_fd())).unwrap(), 4);
        assert_eq!(send(a.as_raw_fd(), b"plain", None).unwrap(), 5);
        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        let first = recv(b.as_raw_fd(), &mut buf, &mut fds).unwrap();
        // The read stops after the bytes the descriptor came with.
        assert_eq!(first, Received { len: 4, control: true });
        assert_eq!(fds.len(), 1);
        let second = recv(b.as_raw_fd(), &mut buf, &mut fds).unwrap();
        assert_eq!(second, Received { len: 5, control: false });
        assert!(second.drained(buf.len()));
    }
}
