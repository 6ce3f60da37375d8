//! The daemon's typed errors. Their `Display` is the message the CLI prints
//! (and what pm2 users grep for), so wording is part of the contract.

use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DaemonError {
    /// No process with that pm_id.
    #[error("Process {0} not found")]
    NotFound(u32),
    /// The process's task ended (deleted) before it answered.
    #[error("process task ended")]
    TaskEnded,
    /// A signal for a process that has no child.
    #[error("Process {0} is not running")]
    NotRunning(u32),
    /// `kill(2)` failed for a running child.
    #[error("could not signal pid {0}")]
    SignalFailed(i32),
    /// The child could not be launched (log files, IPC channel, spawn).
    #[error("{0}")]
    Launch(String),
    /// The child exited before it was online.
    #[error("App [{0}] exited before it was ready")]
    ExitedBeforeReady(String),
    /// A cluster reload whose replacement never started or died early; the
    /// old worker keeps serving.
    #[error("{0}")]
    ReloadFailed(String),
    /// The process runs but its health checks did not say it is ready in
    /// time (`restart` of an app whose health checks gate readiness).
    #[error("{0}")]
    NotReady(String),
    /// The sticky balancer's port could not be bound.
    #[error("{0}")]
    StickyPort(String),
    /// The app's uid/gid cannot be resolved or are not ours to give.
    #[error("{0}")]
    Privileges(String),
    /// A worker sent a message the primary cannot act on.
    #[error("{0}")]
    BadMessage(String),
    /// A `cron_restart` pattern croner refuses.
    #[error("Cron pattern error: {0}")]
    CronPattern(String),
    /// dump.pm2 could not be read or written.
    #[error("{0}")]
    Dump(String),
}

pub type Result<T, E = DaemonError> = std::result::Result<T, E>;
