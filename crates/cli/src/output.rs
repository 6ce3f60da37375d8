//! Console output with pm2's prefixes, `-s` silence and colour policy.
//!
//! Colour policy (a deliberate, documented difference from pm2): ANSI colours
//! are emitted only when the stream is a TTY and neither `--no-color`,
//! `NO_COLOR` nor `TERM=dumb` is set. pm2 colours pipes too, which pollutes
//! the output that users' scripts parse.
//!
//! `-s` silences what pm2 prints through `console.*`; raw writes that pm2
//! does with `process.stdout.write` (`jlist`) go through [`raw_out`] and are
//! never silenced, as in pm2.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static SILENT: AtomicBool = AtomicBool::new(false);
/// `-s` / `--silent` given: pm2 then silences every `console.*` call, while
/// `PM2_SILENT=true` only silences its `[PM2]` messages and tables.
static SILENT_FLAG: AtomicBool = AtomicBool::new(false);
static COLOR_OUT: AtomicBool = AtomicBool::new(false);
static COLOR_ERR: AtomicBool = AtomicBool::new(false);

pub const PREFIX: &str = "[PM2] ";
pub const PREFIX_WARN: &str = "[PM2][WARN] ";
pub const PREFIX_ERR: &str = "[PM2][ERROR] ";

fn isatty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Decides silence and colours once, from the parsed flags and environment.
pub fn init(silent: bool, no_color: bool) {
    let env_silent = std::env::var("PM2_SILENT").map(|v| v == "true" || v == "1").unwrap_or(false);
    SILENT.store(silent || env_silent, Ordering::Relaxed);
    SILENT_FLAG.store(silent, Ordering::Relaxed);
    let env_off = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
        || std::env::var("TERM").map(|t| t == "dumb").unwrap_or(false);
    let allowed = !no_color && !env_off;
    COLOR_OUT.store(allowed && isatty(1), Ordering::Relaxed);
    COLOR_ERR.store(allowed && isatty(2), Ordering::Relaxed);
}

pub fn silent() -> bool {
    SILENT.load(Ordering::Relaxed)
}

pub fn color_out() -> bool {
    COLOR_OUT.load(Ordering::Relaxed)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Red,
    Green,
    Yellow,
    Blue,
    Cyan,
    Gray,
    Bold,
    BoldCyan,
    BoldBlue,
    Inverse,
    InverseBold,
    BgGray,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Red => "\x1b[31m",
            Color::Green => "\x1b[32m",
            Color::Yellow => "\x1b[33m",
            Color::Blue => "\x1b[34m",
            Color::Cyan => "\x1b[36m",
            Color::Gray => "\x1b[90m",
            Color::Bold => "\x1b[1m",
            Color::BoldCyan => "\x1b[1m\x1b[36m",
            Color::BoldBlue => "\x1b[1m\x1b[34m",
            Color::Inverse => "\x1b[7m",
            Color::InverseBold => "\x1b[7m\x1b[1m",
            Color::BgGray => "\x1b[100m",
        }
    }
}

/// Wraps `s` in `c` when `enabled`.
pub fn paint_if(enabled: bool, c: Color, s: &str) -> String {
    if enabled && !s.is_empty() {
        format!("{}{}\x1b[0m", c.code(), s)
    } else {
        s.to_string()
    }
}

/// Colours for stdout.
pub fn paint(c: Color, s: &str) -> String {
    paint_if(color_out(), c, s)
}

pub fn paint_err(c: Color, s: &str) -> String {
    paint_if(COLOR_ERR.load(Ordering::Relaxed), c, s)
}

/// Test-only capture of everything printed: (stdout, stderr).
#[cfg(test)]
pub static CAPTURE: std::sync::Mutex<Option<(String, String)>> = std::sync::Mutex::new(None);

#[cfg(test)]
fn captured(stdout: bool, s: &str) -> bool {
    let mut g = CAPTURE.lock().unwrap_or_else(|e| e.into_inner());
    match g.as_mut() {
        Some((o, e)) => {
            if stdout {
                o.push_str(s);
            } else {
                e.push_str(s);
            }
            true
        }
        None => false,
    }
}

#[cfg(not(test))]
fn captured(_stdout: bool, _s: &str) -> bool {
    false
}

static EXIT_ON_EPIPE: AtomicBool = AtomicBool::new(false);

/// `pm2 logs | head`: once the reader is gone there is nothing left to do.
/// Only for read-only streaming commands: a state-changing command must not
/// stop halfway because its output is piped into `head`; nor `pm2-runtime`,
/// whose process also hosts the daemon.
pub fn exit_on_broken_pipe() {
    EXIT_ON_EPIPE.store(true, Ordering::Relaxed);
}

fn check(r: std::io::Result<()>) {
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe && EXIT_ON_EPIPE.load(Ordering::Relaxed) {
            std::process::exit(0);
        }
    }
}

/// A line on stdout (pm2 `console.log`), silenced by `-s`.
pub fn out(line: &str) {
    if silent() || captured(true, &format!("{line}\n")) {
        return;
    }
    let mut o = std::io::stdout().lock();
    // A closed pipe (`pm2 ls | head`) must not panic.
    check(writeln!(o, "{line}"));
}

/// A line on stderr (pm2 `console.error`), silenced by `-s`.
pub fn err(line: &str) {
    if silent() || captured(false, &format!("{line}\n")) {
        return;
    }
    let mut e = std::io::stderr().lock();
    check(writeln!(e, "{line}"));
}

/// A streamed log line on stdout (`pm2 logs`): only `-s` silences it, not
/// `PM2_SILENT` (pm2 prints log lines with `console.log` directly).
pub fn log_out(line: &str) {
    if SILENT_FLAG.load(Ordering::Relaxed) || captured(true, &format!("{line}\n")) {
        return;
    }
    let mut o = std::io::stdout().lock();
    check(writeln!(o, "{line}"));
}

/// [`log_out`] for stderr.
pub fn log_err(line: &str) {
    if SILENT_FLAG.load(Ordering::Relaxed) || captured(false, &format!("{line}\n")) {
        return;
    }
    let mut e = std::io::stderr().lock();
    check(writeln!(e, "{line}"));
}

/// Unsilenced raw stdout write (pm2 `process.stdout.write`).
pub fn raw_out(s: &str) {
    if captured(true, s) {
        return;
    }
    let mut o = std::io::stdout().lock();
    check(o.write_all(s.as_bytes()));
    check(o.flush());
}

/// [`raw_out`] of bytes the daemon rendered (`jlist`), written as they came.
pub fn raw_out_bytes(b: &[u8]) {
    if captured(true, &String::from_utf8_lossy(b)) {
        return;
    }
    let mut o = std::io::stdout().lock();
    check(o.write_all(b));
    check(o.flush());
}

/// `[PM2] msg` on stdout.
pub fn info(msg: &str) {
    out(&format!("{}{msg}", paint(Color::Green, PREFIX)));
}

/// `[PM2][WARN] msg` on stdout.
pub fn warn(msg: &str) {
    out(&format!("{}{msg}", paint(Color::Yellow, PREFIX_WARN)));
}

/// `[PM2][WARN] msg` on stderr (pm2's `printError` of a warning).
pub fn warn_err(msg: &str) {
    err(&format!("{}{msg}", paint_err(Color::Yellow, PREFIX_WARN)));
}

/// `[PM2][ERROR] msg` on stderr.
pub fn error(msg: &str) {
    err(&format!("{}{msg}", paint_err(Color::Red, PREFIX_ERR)));
}
