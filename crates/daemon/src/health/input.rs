//! What reaches the health of a run from outside its actor: probe results
//! (from the probe task) and sd_notify notifications (from the socket).

use super::machine::Kind;

/// A parsed notification (unknown assignments are ignored, as systemd does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notice {
    pub ready: bool,
    pub status: Option<String>,
    pub watchdog: bool,
}

/// One input for a run's health.
#[derive(Debug)]
pub enum Input {
    Probe { kind: Kind, ok: bool, detail: String },
    Notify(Notice),
}
