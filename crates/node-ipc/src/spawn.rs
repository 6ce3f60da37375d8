//! Giving a child process its end of the channel.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

use crate::frame::Mode;
use crate::sys;

/// The fd `child_process.fork()` uses (`stdio: [0, 1, 2, 'ipc']`).
pub const DEFAULT_CHILD_FD: RawFd = 3;

/// A socketpair prepared for one child: configure a command with it, spawn,
/// then turn it into the parent's end with [`ChildChannel::into_parent`].
///
/// Works with `std::process::Command` ([`ChildChannel::apply`]) and
/// `tokio::process::Command` ([`ChildChannel::apply_tokio`]); both use a
/// `pre_exec` hook that `dup2`s the child end onto the chosen fd (clearing
/// close-on-exec there only) and sets the environment Node reads:
/// `NODE_CHANNEL_FD`, `NODE_CHANNEL_SERIALIZATION_MODE` and, for cluster
/// workers, `NODE_UNIQUE_ID`.
///
/// ```no_run
/// # async fn f() -> Result<(), node_ipc::Error> {
/// use node_ipc::{Channel, ChildChannel, Limits, Mode, Value};
/// let chan = ChildChannel::new(Mode::Advanced)?;
/// let mut cmd = tokio::process::Command::new("node");
/// cmd.arg("worker.js");
/// chan.apply_tokio(&mut cmd);
/// let child = cmd.spawn()?;
/// let (tx, mut rx) = Channel::new(chan.into_parent(), Mode::Advanced, Limits::default())?;
/// tx.send(&Value::from("hello"))?;
/// while let Some(msg) = rx.recv().await {
///     println!("{:?}", msg?.decode()?);
/// }
/// # drop(child); Ok(()) }
/// ```
#[derive(Debug)]
pub struct ChildChannel {
    parent: OwnedFd,
    child: OwnedFd,
    target_fd: RawFd,
    mode: Mode,
    unique_id: Option<String>,
    cloexec_others: bool,
}

impl ChildChannel {
    /// Creates the socketpair (both ends close-on-exec).
    pub fn new(mode: Mode) -> io::Result<Self> {
        let (parent, child) = sys::socketpair()?;
        Ok(ChildChannel {
            parent,
            child,
            target_fd: DEFAULT_CHILD_FD,
            mode,
            unique_id: None,
            cloexec_others: true,
        })
    }

    /// Puts the child's end on `fd` instead of 3.
    pub fn child_fd(mut self, fd: RawFd) -> Self {
        self.target_fd = fd;
        self
    }

    /// Sets `NODE_UNIQUE_ID`, which makes the child a cluster worker with this
    /// id (it then sends `{cmd:'NODE_CLUSTER',act:'online',seq:0}` first, and
    /// exits as soon as the channel closes).
    pub fn unique_id(mut self, id: impl Into<String>) -> Self {
        self.unique_id = Some(id.into());
        self
    }

    /// Whether to mark every fd above the channel fd close-on-exec in the
    /// child (default true), so that descriptors the parent opened without
    /// `O_CLOEXEC` don't leak into the child.
    pub fn cloexec_others(mut self, on: bool) -> Self {
        self.cloexec_others = on;
        self
    }

    /// The serialization mode announced to the child.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The environment variables the child needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("NODE_CHANNEL_FD", self.target_fd.to_string()),
            ("NODE_CHANNEL_SERIALIZATION_MODE", self.mode.as_env().to_owned()),
        ];
        if let Some(id) = &self.unique_id {
            env.push(("NODE_UNIQUE_ID", id.clone()));
        }
        env
    }

    /// Configures a `std::process::Command`: environment plus a `pre_exec` hook.
    /// Call before `spawn`, keep `self` alive until `spawn` returns.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        if self.unique_id.is_none() {
            cmd.env_remove("NODE_UNIQUE_ID");
        }
        let child = self.child.as_raw_fd();
        let target = self.target_fd;
        let cloexec_others = self.cloexec_others;
        // SAFETY: the hook runs between fork and exec and only makes
        // async-signal-safe system calls (close_range, dup2, fcntl) on
        // plain integers; it touches no locks or allocations.
        unsafe {
            cmd.pre_exec(move || child_setup(child, target, cloexec_others));
        }
    }

    /// Configures a `tokio::process::Command` (through its std command).
    pub fn apply_tokio(&self, cmd: &mut tokio::process::Command) {
        self.apply(cmd.as_std_mut());
    }

    /// After `spawn`: closes the parent's copy of the child end and returns the
    /// parent end, ready for [`Channel::new`](crate::Channel::new).
    pub fn into_parent(self) -> OwnedFd {
        drop(self.child);
        self.parent
    }
}

/// Runs in the forked child, after std has set up stdio.
fn child_setup(child: RawFd, target: RawFd, cloexec_others: bool) -> io::Result<()> {
    // SAFETY (whole body): raw syscalls on integer fds; async-signal-safe.
    unsafe {
        if cloexec_others {
            // Best effort: kernels before 5.11 lack CLOSE_RANGE_CLOEXEC, and
            // std already opens its own descriptors close-on-exec.
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC);
        }
        if child == target {
            let flags = libc::fcntl(target, libc::F_GETFD);
            if flags < 0 || libc::fcntl(target, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
        } else if libc::dup2(child, target) < 0 {
            // dup2 leaves the new descriptor without FD_CLOEXEC.
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
