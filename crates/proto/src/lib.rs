//! The CLI <-> daemon contract: the app model, requests, replies, events and
//! the frame format. This is the only crate whose types are serialized; every
//! other crate converts to and from these types at its edge.
//!
//! Frame: `u32` big-endian payload length, then a UTF-8 JSON payload; a
//! message larger than one fragment ([`MAX_FRAGMENT`]) is sent as several
//! (see [`frame`]). What the daemon reads is capped per message
//! ([`MAX_MESSAGE`]) and allocated as it arrives, never from the announced
//! length.

pub mod app;
pub mod frame;
pub mod health;
pub mod msg;

pub use app::{is_module, AppSpec, ExecMode, Runtime, INJECTED_ENV_KEYS};
pub use frame::{
    read_frame, read_frame_limited, read_frame_unbounded, read_message, write_frame, write_raw_reply,
    FrameError, MAX_FRAGMENT, MAX_FRAME, MAX_HELLO, MAX_MESSAGE,
};
pub use health::{HealthInfo, HealthSpec, HealthStatus, Probe, ProbeCheck, ProbeResult};
pub use msg::*;

/// Bumped whenever a message changes shape incompatibly. The daemon refuses a
/// client whose version differs and says which versions both sides speak.
pub const PROTOCOL_VERSION: u32 = 1;

/// Corral's own version (daemon handshake, `pm2 report`,
/// `pm2 --version --verbose`).
pub const CORRAL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The pm2 release whose command line, files and output Corral follows:
/// what `pm2 -v` prints, since scripts compare it (`pm2 -v` >= 5).
pub const PM2_VERSION: &str = "6.0.14";

/// `pm2 -v` / `-V` / `--version`: the pm2 version, and with `--verbose`
/// Corral's own on a second line.
pub fn version_text(verbose: bool) -> String {
    if verbose {
        format!("{PM2_VERSION}\nCorral {CORRAL_VERSION} (pm2 {PM2_VERSION} compatible)\n")
    } else {
        format!("{PM2_VERSION}\n")
    }
}

/// Environment variables that configure the daemon itself (not an app): the
/// daemon reads them once at start, and whatever re-creates a daemon later
/// (`pm2 startup`'s unit, `pm2 update`) must carry the values the running
/// daemon was started with, or the next daemon silently behaves differently
/// (a Socket.IO balancer on another port, say).
pub const DAEMON_SETTINGS: &[&str] = &[
    "PM2_PORT",
    "PM2_STICKY_HOST",
    "PM2_GRACEFUL_TIMEOUT",
    "PM2_KILL_SIGNAL",
    "PM2_KILL_USE_MESSAGE",
    "PM2_RELOAD_LOCK_TIMEOUT",
    "PM2_WORKER_INTERVAL",
    "PM2_NODE_OPTIONS",
    "PM2_DUMP_FILE_PATH",
    "EXP_BACKOFF_RESET_TIMER",
    "PM2_CLUSTER_REDIS",
    "PM2_CLUSTER_REDIS_CA",
    "PM2_CLUSTER_REDIS_CERT",
    "PM2_CLUSTER_REDIS_KEY",
    "PM2_CLUSTER_SECRET",
    "PM2_CLUSTER_LISTEN",
    "PM2_CLUSTER_ADVERTISE",
    "PM2_NODE_ID",
    "PM2_METRICS",
];

/// The daemon settings that may hold a secret (the cluster secret, a Redis
/// password): never printed, and a file that carries them is made 0600.
pub const SECRET_SETTINGS: &[&str] = &["PM2_CLUSTER_SECRET", "PM2_CLUSTER_REDIS"];
