//! The daemon's own log, `pm2.log`: the daemon's stdout/stderr are that file
//! (the CLI opens it when it spawns us), so a line is one `println!`.
//! Format as pm2: `YYYY-MM-DDTHH:mm:ss: PM2 log: <msg>`.

use crate::timefmt;
use std::io::Write;

fn line(level: &str, msg: &str) {
    let ts = timefmt::format(timefmt::now_ms(), "YYYY-MM-DDTHH:mm:ss");
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
