//! Local-time formatting with the dayjs tokens pm2 users put in
//! `log_date_format` (`YYYY MM DD HH mm ss SSS Z`), without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    ms: u32,
    offset_s: i64,
}

fn local_parts(ms: u64) -> Parts {
    let secs = (ms / 1000) as libc::time_t;
    // SAFETY: localtime_r only writes into the tm we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return Parts { year: 1970, month: 1, day: 1, hour: 0, min: 0, sec: 0, ms: 0, offset_s: 0 };
    }
    Parts {
        year: tm.tm_year as i64 + 1900,
        month: tm.tm_mon as u32 + 1,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        min: tm.tm_min as u32,
        sec: tm.tm_sec as u32,
        ms: (ms % 1000) as u32,
        offset_s: tm.tm_gmtoff,
    }
}

/// `Date.prototype.toISOString()`: UTC with milliseconds and `Z`
/// (`2026-11-29T08:10:38.922Z`).
pub fn iso_utc(ms: u64) -> String {
    let secs = (ms / 1000) as libc::time_t;
    // SAFETY: gmtime_r only writes into the tm we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::gmtime_r(&secs, &mut tm).is_null() } {
        return "1970-01-01T00:00:00.000Z".into();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        tm.tm_year as i64 + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ms % 1000
    )
}

/// Formats `ms` (epoch milliseconds) with a dayjs-like pattern. Text in
/// `[brackets]` is copied literally, as in dayjs.
pub fn format(ms: u64, pattern: &str) -> String {
    let p = local_parts(ms);
    let mut out = String::with_capacity(pattern.len() + 8);
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let rest = &pattern[i..];
        let tok = |t: &str| rest.starts_with(t);
        if b[i] == b'[' {
            if let Some(end) = rest.find(']') {
                out.push_str(&rest[1..end]);
                i += end + 1;
                continue;
            }
        }
        let (s, n) = if tok("YYYY") {
            (format!("{:04}", p.year), 4)
        } else if tok("YY") {
            (format!("{:02}", p.year % 100), 2)
        } else if tok("MM") {
            (format!("{:02}", p.month), 2)
        } else if tok("DD") {
            (format!("{:02}", p.day), 2)
        } else if tok("HH") {
            (format!("{:02}", p.hour), 2)
        } else if tok("mm") {
            (format!("{:02}", p.min), 2)
        } else if tok("ss") {
            (format!("{:02}", p.sec), 2)
        } else if tok("SSS") {
            (format!("{:03}", p.ms), 3)
        } else if tok("ZZ") || tok("Z") {
            let sign = if p.offset_s < 0 { '-' } else { '+' };
            let o = p.offset_s.abs();
            let colon = if tok("ZZ") { "" } else { ":" };
            (format!("{sign}{:02}{colon}{:02}", o / 3600, (o % 3600) / 60), if tok("ZZ") { 2 } else { 1 })
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            (c.to_string(), c.len_utf8())
        };
        out.push_str(&s);
        i += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        std::env::set_var("TZ", "UTC");
        let s = format(1_700_000_000_123, "YYYY-MM-DDTHH:mm:ss.SSS [at] Z");
        assert_eq!(s, "2023-11-14T22:13:20.123 at +00:00");
    }

    #[test]
    fn iso_is_utc_with_milliseconds() {
        assert_eq!(iso_utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso_utc(5), "1970-01-01T00:00:00.005Z");
    }
}
