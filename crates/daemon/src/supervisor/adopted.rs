//! A child this process did not spawn in its current image: a process an
//! older image of the daemon started before it re-executed itself in place.
//! It is still our child (same pid), so `waitpid` on its pid reaps it; its
//! exit is noticed through a pidfd (readable once it exits), or by polling
//! where pidfds are missing.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct AdoptedChild {
    pid: i32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl AdoptedChild {
    pub fn new(pid: i32) -> Self {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        let pidfd = (fd >= 0)
            .then(|| {
                // SAFETY: the kernel just returned this descriptor to us.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                // SAFETY: the AsyncFd owns the pidfd, so it stays open and
                // the same for the AsyncFd's whole life.
                unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }.ok()
            })
            .flatten();
        AdoptedChild { pid, pidfd, status: None }
    }

    /// Reaps the child if it exited. A pid that is no child of ours any more
    /// (reaped elsewhere) counts as exited with an unknown status (0).
    fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let mut st = 0;
        // SAFETY: waitpid on one pid with WNOHANG writes only `st`.
        let r = unsafe { libc::waitpid(self.pid, &mut st, libc::WNOHANG) };
        if r == self.pid {
            self.status = Some(ExitStatus::from_raw(st));
        } else if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            self.status = Some(ExitStatus::from_raw(0));
        }
        self.status
    }

    /// Resolves once the child exited; cancel-safe, and answers the same
    /// status again when called after that.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.try_reap() {
                return Ok(s);
            }
            match &self.pidfd {
                Some(fd) => {
                    let mut g = fd.readable().await?;
                    g.clear_ready();
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
