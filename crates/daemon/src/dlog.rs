//! The daemon's own log, `pm2.log`: the daemon's stdout/stderr are that file
//! (the CLI opens it when it spawns us), so a line is one `println!`.
//! Format as pm2: `YYYY-MM-DDTHH:mm:ss: PM2 log: <msg>`.

use crate::timefmt;
use std::io::Write;

static BUS: std::sync::OnceLock<tokio::sync::broadcast::Sender<corral_proto::Event>> =
    std::sync::OnceLock::new();

/// Daemon lines are also streamed to `pm2 logs` / `pm2-runtime` (pm2's
/// `log:PM2` bus events).
pub fn attach_bus(bus: tokio::sync::broadcast::Sender<corral_proto::Event>) {
    let _ = BUS.set(bus);
}

fn line(level: &str, msg: &str) {
    let at = timefmt::now_ms();
    let ts = timefmt::format_local(at, "YYYY-MM-DDTHH:mm:ss");
    if let Some(bus) = BUS.get() {
        if bus.receiver_count() > 0 {
            let _ = bus.send(corral_proto::Event::Daemon { at, data: format!("{ts}: PM2 {level}: {msg}") });
        }
    }
    let mut out = std::io::stdout().lock();
    // A full disk must not take the daemon down: dropping a log line is the
    // lesser evil.
    let _ = writeln!(out, "{ts}: PM2 {level}: {msg}");
    let _ = out.flush();
}

pub fn log(msg: &str) {
    line("log", msg);
}

pub fn error(msg: &str) {
    line("error", msg);
}

pub fn warn(msg: &str) {
    line("warn", msg);
}
