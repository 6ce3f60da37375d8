//! Dates: the daemon's formatter (one copy of the day.js token rules) and
//! the CLI's clock in the signed milliseconds its renderers compute with.

pub use corral_daemon::timefmt::{format, iso, local, utc, Tm};

pub fn now_ms() -> i64 {
    corral_daemon::timefmt::now_ms() as i64
}
