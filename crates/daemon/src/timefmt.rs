//! Dates, one copy for the daemon and the CLI: ISO-8601 UTC (`created at`,
//! `--json` logs) and the subset of day.js format tokens pm2 users pass to
//! `log_date_format` / `--timestamp` / `--log-date-format`. Formatting is
//! pure (a broken-down [`Tm`]); only [`local`] asks libc for the offset.

/// Broken-down time. `offset_secs` is east of UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tm {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub ms: u32,
    pub offset_secs: i64,
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn utc(ms: i64) -> Tm {
    from_parts(ms, 0)
}

fn from_parts(ms: i64, offset_secs: i64) -> Tm {
    let local_ms = ms + offset_secs * 1000;
    let secs = local_ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    Tm {
        year: y,
        month: mo,
        day: d,
        hour: (rem / 3600) as u32,
        min: ((rem % 3600) / 60) as u32,
        sec: (rem % 60) as u32,
        ms: local_ms.rem_euclid(1000) as u32,
        offset_secs,
    }
}

/// Local time of the machine (TZ honoured through libc).
pub fn local(ms: i64) -> Tm {
    let t: libc::time_t = ms.div_euclid(1000) as libc::time_t;
    // SAFETY: localtime_r writes only into the zeroed struct we own.
    let off = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            0
        } else {
            tm.tm_gmtoff as i64
        }
    };
    from_parts(ms, off)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `format` of `ms` in the machine's local time (log prefixes, pm2.log).
pub fn format_local(ms: u64, fmt: &str) -> String {
    format(&local(ms as i64), fmt)
}

/// `2026-11-26T01:00:44.253Z` (JS `Date#toISOString`).
pub fn iso(ms: i64) -> String {
    let t = utc(ms);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", t.year, t.month, t.day, t.hour, t.min, t.sec, t.ms)
}

/// day.js `format` for the common tokens; `[text]` is literal.
pub fn format(t: &Tm, fmt: &str) -> String {
    let tokens: &[&str] = &[
        "YYYY", "SSS", "MM", "DD", "HH", "hh", "mm", "ss", "ZZ", "YY", "M", "D", "H", "h", "m", "s", "A",
        "a", "Z",
    ];
    let mut out = String::new();
    let mut rest = fmt;
    'outer: while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            if let Some(end) = r.find(']') {
                out.push_str(&r[..end]);
                rest = &r[end + 1..];
                continue;
            }
        }
        for tok in tokens {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(&token(t, tok));
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn token(t: &Tm, tok: &str) -> String {
    let h12 = if t.hour.is_multiple_of(12) { 12 } else { t.hour % 12 };
    let off = |sep: &str| {
        let sign = if t.offset_secs < 0 { '-' } else { '+' };
        let a = t.offset_secs.abs();
        format!("{sign}{:02}{sep}{:02}", a / 3600, (a % 3600) / 60)
    };
    match tok {
        "YYYY" => format!("{:04}", t.year),
        "YY" => format!("{:02}", t.year.rem_euclid(100)),
        "MM" => format!("{:02}", t.month),
        "M" => t.month.to_string(),
        "DD" => format!("{:02}", t.day),
        "D" => t.day.to_string(),
        "HH" => format!("{:02}", t.hour),
        "H" => t.hour.to_string(),
        "hh" => format!("{h12:02}"),
        "h" => h12.to_string(),
        "mm" => format!("{:02}", t.min),
        "m" => t.min.to_string(),
        "ss" => format!("{:02}", t.sec),
        "s" => t.sec.to_string(),
        "SSS" => format!("{:03}", t.ms),
        "A" => (if t.hour < 12 { "AM" } else { "PM" }).into(),
        "a" => (if t.hour < 12 { "am" } else { "pm" }).into(),
        "ZZ" => off(""),
        "Z" => off(":"),
        _ => String::new(),
    }
}

/// `Date.prototype.toISOString()` of epoch milliseconds (UTC, ms, `Z`).
pub fn iso_utc(ms: u64) -> String {
    iso(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_matches_js() {
        assert_eq!(iso(1_795_654_844_253), "2026-11-26T01:00:44.253Z");
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn twelve_hour_and_short_tokens() {
        let t = utc(1_700_000_000_123);
        assert_eq!(format(&t, "YYYY-MM-DDTHH:mm:ss.SSS [at] Z"), "2023-11-14T22:13:20.123 at +00:00");
        assert_eq!(format(&t, "h:m:s A a D/M YY"), "10:13:20 PM pm 14/11 23");
        let east = Tm { offset_secs: 5 * 3600 + 1800, ..t };
        assert_eq!(format(&east, "Z ZZ"), "+05:30 +0530");
    }

    #[test]
    fn dayjs_tokens() {
        let t = utc(1_795_654_844_253);
        assert_eq!(format(&t, "YYYY-MM-DD-HH:mm:ssZZ"), "2026-11-26-01:00:44+0000");
        assert_eq!(format(&t, "YYYY-MM-DDTHH:mm:ss"), "2026-11-26T01:00:44");
        assert_eq!(format(&t, "[at] HH:mm:ss.SSS Z"), "at 01:00:44.253 +00:00");
    }
}
