//! Log rotation policy, pure (no files, no clock): which settings apply to a
//! log file, when it rotates, what the rotated file is called and which
//! rotated files `retain` deletes. The I/O lives in `logrotate.rs`.
//!
//! Settings are pm2-logrotate's, read from the `pm2-logrotate` section of
//! `module_conf.json` (what `pm2 set pm2-logrotate:<key> <value>` writes), with
//! its defaults and its value parsing: `max_size` (`10M`; `K`/`M`/`G`
//! suffixes, else bytes), `retain` (`30`; not a number = keep all),
//! `compress` (`false`), `dateFormat` (`YYYY-MM-DD_HH-mm-ss`),
//! `rotateInterval` (`0 0 * * *`, a cron forcing a rotation),
//! `workerInterval` (`30` seconds, at least 1), `rotateModule` (`true`).
//! A rotated file is named as pm2-logrotate names it:
//! `<file without .log>__<date>.log` (plus `.gz` when compressed).
//!
//! Per-app ecosystem keys override the global ones for that app's files:
//! `log_max_size`, `log_retain`, `log_compress`. Rotation is off unless the
//! `pm2-logrotate` section exists (pm2 rotates nothing without the module;
//! an installed and configured module leaves that section behind) or the app
//! sets `log_max_size`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

pub const MODULE: &str = "pm2-logrotate";
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub const DEFAULT_RETAIN: usize = 30;
pub const DEFAULT_DATE_FORMAT: &str = "YYYY-MM-DD_HH-mm-ss";
pub const DEFAULT_ROTATE_INTERVAL: &str = "0 0 * * *";
pub const DEFAULT_WORKER_INTERVAL: Duration = Duration::from_secs(30);

/// The global settings (the `pm2-logrotate` section of `module_conf.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub max_size: u64,
    /// `None` = keep every rotated file.
    pub retain: Option<usize>,
    pub compress: bool,
    pub date_format: String,
    /// Cron pattern forcing a rotation of every non-empty app log.
    pub rotate_interval: Option<String>,
    pub worker_interval: Duration,
    pub rotate_module: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_size: DEFAULT_MAX_SIZE,
            retain: Some(DEFAULT_RETAIN),
            compress: false,
            date_format: DEFAULT_DATE_FORMAT.into(),
            rotate_interval: Some(DEFAULT_ROTATE_INTERVAL.into()),
            worker_interval: DEFAULT_WORKER_INTERVAL,
            rotate_module: true,
        }
    }
}

/// JavaScript's `parseInt` on a setting: leading whitespace and sign, then
/// digits; `None` when there are none (NaN).
fn parse_int(v: &Value) -> Option<i64> {
    let s = match v {
        Value::Number(n) => return n.as_f64().map(|f| f.trunc() as i64),
        Value::String(s) => s.trim_start(),
        _ => return None,
    };
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits.bytes().take_while(u8::is_ascii_digit).count();
    let n: i64 = digits[..end].parse().ok()?;
    Some(if neg { -n } else { n })
}

/// pm2-logrotate's `max_size`: `""` means the default, a `K`/`M`/`G` suffix
/// scales, anything else is bytes. `None` for a value with no number.
pub fn parse_size(v: &Value) -> Option<u64> {
    if let Value::String(s) = v {
        if s.is_empty() {
            return Some(DEFAULT_MAX_SIZE);
        }
        let scale = match s.chars().last() {
            Some('G') => 1024 * 1024 * 1024,
            Some('M') => 1024 * 1024,
            Some('K') => 1024,
            _ => 1,
        };
        return parse_int(v).map(|n| n.max(0) as u64 * scale);
    }
    parse_int(v).map(|n| n.max(0) as u64)
}

/// pm2-logrotate's `parseBool`, also taking real booleans (`pm2 set` stores
/// `true`/`false` as JSON booleans).
fn parse_bool(v: Option<&Value>, default: bool) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" => true,
        Some(Value::String(s)) if s == "false" => false,
        _ => default,
    }
}

fn non_empty_string(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

impl Settings {
    /// The settings in a parsed `module_conf.json`; `None` when it has no
    /// `pm2-logrotate` section (rotation off).
    pub fn from_module_conf(conf: &Value) -> Option<Settings> {
        let m = conf.get(MODULE)?.as_object()?;
        let d = Settings::default();
        Some(Settings {
            max_size: m.get("max_size").and_then(parse_size).unwrap_or(d.max_size),
            retain: match m.get("retain") {
                None => d.retain,
                Some(v) => parse_int(v).map(|n| n.max(0) as usize),
            },
            compress: parse_bool(m.get("compress"), false),
            date_format: non_empty_string(m.get("dateFormat")).unwrap_or(d.date_format),
            rotate_interval: non_empty_string(m.get("rotateInterval")).or(d.rotate_interval),
            worker_interval: m
                .get("workerInterval")
                .and_then(parse_int)
                .map(|s| Duration::from_secs(s.max(1) as u64))
                .unwrap_or(d.worker_interval),
            rotate_module: parse_bool(m.get("rotateModule"), true),
        })
    }
}

/// An app's own rotation keys from its ecosystem entry (kept in
/// `AppSpec::extra`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppOverrides {
    /// `Some(0)` turns size rotation off for this app.
    pub max_size: Option<u64>,
    /// `Some(None)`: keep all.
    pub retain: Option<Option<usize>>,
    pub compress: Option<bool>,
}

impl AppOverrides {
    pub fn from_extra(extra: &BTreeMap<String, Value>) -> AppOverrides {
        AppOverrides {
            max_size: extra.get("log_max_size").and_then(|v| match v {
                Value::Bool(false) | Value::Null => Some(0),
                v => parse_size(v),
            }),
            retain: extra.get("log_retain").map(|v| parse_int(v).map(|n| n.max(0) as usize)),
            compress: extra.get("log_compress").map(|v| parse_bool(Some(v), false)),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == AppOverrides::default()
    }
}

/// What applies to one app's log files.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Rotate once the file reaches this many bytes; 0 = never by size.
    pub max_size: u64,
    pub retain: Option<usize>,
    pub compress: bool,
    pub date_format: String,
}

/// The policy for an app: `None` when nothing turns rotation on for it.
pub fn effective(global: Option<&Settings>, app: &AppOverrides) -> Option<Policy> {
    if global.is_none() && app.max_size.is_none_or(|s| s == 0) {
        return None;
    }
    let d = Settings::default();
    let g = global.unwrap_or(&d);
    Some(Policy {
        max_size: app.max_size.unwrap_or(if global.is_some() { g.max_size } else { 0 }),
        retain: app.retain.unwrap_or(g.retain),
        compress: app.compress.unwrap_or(g.compress),
        date_format: g.date_format.clone(),
    })
}

/// Whether a file of `size` bytes is due: the check runs after every write,
/// so a rotated file ends at the first whole write that reaches the limit.
pub fn due(policy: &Policy, size: u64) -> bool {
    policy.max_size > 0 && size >= policy.max_size
}

/// `<path without .log>__<stamp>.log`, pm2-logrotate's name; `n` > 0 adds
/// `_<n>` before `.log` for a second rotation within the same stamp (a
/// fast writer with a small `max_size` rotates several times a second).
pub fn rotated_name(path: &str, stamp: &str, n: u32) -> String {
    let base = path.strip_suffix(".log").unwrap_or(path);
    if n == 0 {
        format!("{base}__{stamp}.log")
    } else {
        format!("{base}__{stamp}_{n}.log")
    }
}

/// The prefix every rotated file of `file_name` (no directory) starts with.
pub fn rotated_prefix(file_name: &str) -> String {
    format!("{}__", file_name.strip_suffix(".log").unwrap_or(file_name))
}

/// Order of two rotated names of one log at equal age: by stamp, then by
/// the `_<n>` of a repeated stamp, numerically (`_9` before `_10`).
fn name_order(name: &str) -> (&str, u64) {
    let stem = name.strip_suffix(".gz").unwrap_or(name);
    let stem = stem.strip_suffix(".log").unwrap_or(stem);
    match stem.rsplit_once('_') {
        Some((head, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && head.contains("__") => {
            (head, n.parse().unwrap_or(0))
        }
        _ => (stem, 0),
    }
}

/// Which of the rotated files (name, age key: rotation order, oldest first
/// once sorted) `retain` deletes: all but the `retain` newest. Files still
/// being compressed (`.tmp`) are not counted.
pub fn to_delete(mut rotated: Vec<(String, u128)>, retain: Option<usize>) -> Vec<String> {
    let Some(keep) = retain else { return Vec::new() };
    rotated.retain(|(n, _)| !n.ends_with(".tmp"));
    rotated.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| name_order(&a.0).cmp(&name_order(&b.0))));
    let excess = rotated.len().saturating_sub(keep);
    rotated.into_iter().take(excess).map(|(n, _)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_parse_as_pm2_logrotate() {
        assert_eq!(parse_size(&json!("10M")), Some(10 * 1024 * 1024));
        assert_eq!(parse_size(&json!("1K")), Some(1024));
        assert_eq!(parse_size(&json!("2G")), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size(&json!("500")), Some(500));
        assert_eq!(parse_size(&json!(4096)), Some(4096));
        assert_eq!(parse_size(&json!("")), Some(DEFAULT_MAX_SIZE));
        assert_eq!(parse_size(&json!("abc")), None);
        // parseInt("10MB") is 10 and "B" is no known suffix: bytes.
        assert_eq!(parse_size(&json!("10MB")), Some(10));
    }

    #[test]
    fn no_section_means_off() {
        assert_eq!(Settings::from_module_conf(&json!({})), None);
        assert_eq!(Settings::from_module_conf(&json!({"other": {"a": 1}})), None);
        assert_eq!(effective(None, &AppOverrides::default()), None);
    }

    #[test]
    fn defaults_and_overrides_from_module_conf() {
        let s = Settings::from_module_conf(&json!({"pm2-logrotate": {}})).unwrap();
        assert_eq!(s, Settings::default());
        let s = Settings::from_module_conf(&json!({"pm2-logrotate": {
            "max_size": "1K", "retain": "7", "compress": true, "dateFormat": "YYYY",
            "rotateInterval": "*/1 * * * *", "workerInterval": "0", "rotateModule": "false"
        }}))
        .unwrap();
        assert_eq!(s.max_size, 1024);
        assert_eq!(s.retain, Some(7));
        assert!(s.compress);
        assert_eq!(s.date_format, "YYYY");
        assert_eq!(s.rotate_interval.as_deref(), Some("*/1 * * * *"));
        assert_eq!(s.worker_interval, Duration::from_secs(1));
        assert!(!s.rotate_module);
        let s = Settings::from_module_conf(&json!({"pm2-logrotate": {"retain": "all", "compress": "yes"}}))
            .unwrap();
        assert_eq!(s.retain, None);
        assert!(!s.compress);
    }

    #[test]
    fn app_keys_override_and_enable() {
        let mut extra = BTreeMap::new();
        extra.insert("log_max_size".to_string(), json!("64K"));
        extra.insert("log_retain".to_string(), json!(3));
        let app = AppOverrides::from_extra(&extra);
        let p = effective(None, &app).unwrap();
        assert_eq!(
            p,
            Policy {
                max_size: 65536,
                retain: Some(3),
                compress: false,
                date_format: DEFAULT_DATE_FORMAT.into()
            }
        );
        let g = Settings { compress: true, ..Settings::default() };
        let p = effective(Some(&g), &app).unwrap();
        assert!(p.compress);
        assert_eq!(p.max_size, 65536);
        let p = effective(Some(&g), &AppOverrides::default()).unwrap();
        assert_eq!(p.max_size, DEFAULT_MAX_SIZE);
        let off = AppOverrides { max_size: Some(0), ..AppOverrides::default() };
        assert_eq!(effective(None, &off), None);
        assert_eq!(effective(Some(&g), &off).map(|p| p.max_size), Some(0));
        assert!(!due(&effective(Some(&g), &off).unwrap(), u64::MAX));
    }

    #[test]
    fn names_and_retain() {
        assert_eq!(
            rotated_name("/l/app-out.log", "2024-01-02_03-04-05", 0),
            "/l/app-out__2024-01-02_03-04-05.log"
        );
        assert_eq!(rotated_name("/l/app-out.log", "S", 2), "/l/app-out__S_2.log");
        assert_eq!(rotated_name("/l/app.txt", "S", 0), "/l/app.txt__S.log");
        assert_eq!(rotated_prefix("app-out.log"), "app-out__");
        let files =
            vec![("c".to_string(), 3), ("a".to_string(), 1), ("b".to_string(), 2), ("x.tmp".to_string(), 0)];
        assert_eq!(to_delete(files.clone(), Some(1)), vec!["a".to_string(), "b".to_string()]);
        assert!(to_delete(files.clone(), None).is_empty());
        assert!(to_delete(files, Some(30)).is_empty());
        let same_age = vec![
            ("a__S_10.log".to_string(), 5),
            ("a__S_9.log".to_string(), 5),
            ("a__S.log.gz".to_string(), 5),
        ];
        assert_eq!(to_delete(same_age, Some(1)), vec!["a__S.log.gz".to_string(), "a__S_9.log".to_string()]);
        assert!(due(&Policy { max_size: 10, retain: None, compress: false, date_format: String::new() }, 10));
    }
}
