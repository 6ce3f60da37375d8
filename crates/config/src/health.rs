//! Health check options (`readiness_probe`, `liveness_probe`, `startup_probe`,
//! `notify`, `watchdog`) into [`corral_proto::HealthSpec`].
//!
//! A probe is a Kubernetes-shaped object (`httpGet`, `tcpSocket`, `exec`,
//! `periodSeconds`, `timeoutSeconds`, `successThreshold`, `failureThreshold`,
//! `initialDelaySeconds`), or the same with pm2-style durations in
//! milliseconds (`interval`, `timeout`, `start_period`), or a short string:
//! `http:/health`, `http:3000/health`, `tcp:3000`, `exec:<command>`. Key
//! spellings are free (`period_seconds`, `periodSeconds`, `PeriodSeconds`).

use crate::coerce::{as_f64, describe, parse_duration_ms};
use corral_proto::{Probe, ProbeCheck};
use serde_json::{Map, Value};

/// `http_get` / `httpGet` / `HTTPGet` → `httpget`.
fn norm(k: &str) -> String {
    k.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

fn port(v: &Value) -> Result<u16, String> {
    match as_f64(v) {
        Some(f) if f.fract() == 0.0 && (1.0..=65535.0).contains(&f) => Ok(f as u16),
        _ => Err(format!("expected a port number (1-65535), got {}", describe(v))),
    }
}

fn path(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if s.starts_with('/') && !s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Ok(s.clone())
        }
        _ => Err(format!("expected an HTTP path starting with / (no spaces), got {}", describe(v))),
    }
}

fn status(v: &Value) -> Result<u16, String> {
    match as_f64(v) {
        Some(f) if f.fract() == 0.0 && (100.0..=599.0).contains(&f) => Ok(f as u16),
        _ => Err(format!("expected an HTTP status (100-599), got {}", describe(v))),
    }
}

fn seconds(v: &Value, zero_ok: bool) -> Result<u64, String> {
    match as_f64(v) {
        Some(f) if f.is_finite() && (f > 0.0 || (zero_ok && f == 0.0)) && f <= 86_400.0 => {
            Ok((f * 1000.0).round() as u64)
        }
        _ => Err(format!(
            "expected a number of seconds{} (e.g. 0.5 or 10), got {}",
            if zero_ok { "" } else { " above 0" },
            describe(v)
        )),
    }
}

fn millis(v: &Value, zero_ok: bool) -> Result<u64, String> {
    let ms = match v {
        Value::Number(_) => as_f64(v).filter(|f| f.is_finite() && *f >= 0.0).map(|f| f.round() as u64),
        Value::String(s) => parse_duration_ms(s),
        _ => None,
    };
    match ms {
        Some(ms) if (ms > 0 || zero_ok) && ms <= 86_400_000 => Ok(ms),
        _ => Err(format!(
            "expected a duration in milliseconds{} (e.g. 500 or \"2s\"), got {}",
            if zero_ok { "" } else { " above 0" },
            describe(v)
        )),
    }
}

fn threshold(v: &Value) -> Result<u32, String> {
    match as_f64(v) {
        Some(f) if f.fract() == 0.0 && (1.0..=1_000_000.0).contains(&f) => Ok(f as u32),
        _ => Err(format!("expected a whole number of at least 1, got {}", describe(v))),
    }
}

fn command(v: &Value) -> Result<Vec<String>, String> {
    let cmd = match v {
        // One string runs through the shell, like a Dockerfile's HEALTHCHECK CMD-SHELL.
        Value::String(s) if !s.trim().is_empty() => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Bool(_) => Ok(i.to_string()),
                other => Err(format!("command items must be strings, got {}", describe(other))),
            })
            .collect::<Result<_, _>>()?,
        Value::Object(o) => {
            return o.get("command").map(command).unwrap_or_else(|| Err("exec needs a command".into()))
        }
        _ => return Err(format!("expected a command (a string or a list), got {}", describe(v))),
    };
    if cmd.first().is_none_or(|c| c.is_empty()) {
        return Err("the command is empty".into());
    }
    Ok(cmd)
}

/// The short form: `http:/path`, `http:PORT/path`, `http:PORT`, `tcp:PORT`,
/// `tcp`, `exec:<command>`.
pub fn short_probe(s: &str) -> Result<ProbeCheck, String> {
    let s = s.trim();
    let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
    match kind.to_ascii_lowercase().as_str() {
        "http" => {
            let (p, path) = match rest.find('/') {
                Some(i) => (&rest[..i], rest[i..].to_string()),
                None => (rest, "/".to_string()),
            };
            let port = if p.is_empty() { None } else { Some(self::port(&Value::String(p.into()))?) };
            self::path(&Value::String(path.clone()))?;
            Ok(ProbeCheck::Http { path, port, status: None })
        }
        "tcp" => {
            let port = if rest.is_empty() { None } else { Some(self::port(&Value::String(rest.into()))?) };
            Ok(ProbeCheck::Tcp { port })
        }
        "exec" => Ok(ProbeCheck::Exec { command: command(&Value::String(rest.into()))? }),
        _ => Err(format!(
            "expected http:/path, http:PORT/path, tcp:PORT, exec:<command> or a probe object, got {s:?}"
        )),
    }
}

/// One probe. `which` is `startup`, `readiness` or `liveness` (liveness and
/// startup probes must have `successThreshold` 1, as in Kubernetes).
pub fn probe(v: &Value, which: &str) -> Result<Probe, String> {
    let obj: Map<String, Value> = match v {
        Value::String(s) if s.trim_start().starts_with('{') => match crate::json5::parse(s) {
            Ok(Value::Object(o)) => o,
            Ok(other) => return Err(format!("expected a probe object, got {}", describe(&other))),
            Err(e) => return Err(format!("not a valid probe object: {e}")),
        },
        Value::String(s) => return Ok(Probe::new(short_probe(s)?)),
        Value::Object(o) => o.clone(),
        other => {
            return Err(format!(
                "expected a probe object or a string like http:/health, got {}",
                describe(other)
            ))
        }
    };
    let mut check: Option<ProbeCheck> = None;
    let set_check = |c: ProbeCheck, check: &mut Option<ProbeCheck>| -> Result<(), String> {
        if check.is_some() {
            return Err("a probe has one check: httpGet, tcpSocket or exec".into());
        }
        *check = Some(c);
        Ok(())
    };
    let (mut top_port, mut top_path, mut top_status) = (None, None, None);
    let mut p = Probe::new(ProbeCheck::Tcp { port: None });
    for (k, val) in &obj {
        let field = |r: Result<(), String>| r.map_err(|e| format!("{k}: {e}"));
        match norm(k).as_str() {
            "httpget" | "http" => {
                let c = match val {
                    Value::String(s) => short_probe(&format!("http:{s}"))?,
                    Value::Object(o) => {
                        let mut path = "/".to_string();
                        let (mut port, mut st) = (None, None);
                        for (hk, hv) in o {
                            match norm(hk).as_str() {
                                "path" => path = self::path(hv).map_err(|e| format!("{k}.{hk}: {e}"))?,
                                "port" => port = Some(self::port(hv).map_err(|e| format!("{k}.{hk}: {e}"))?),
                                "status" | "expectedstatus" => {
                                    st = Some(status(hv).map_err(|e| format!("{k}.{hk}: {e}"))?)
                                }
                                // Kubernetes fields that have no meaning here.
                                "host" | "scheme" | "httpheaders" => {
                                    return Err(format!(
                                        "{k}.{hk}: not supported (probes go to 127.0.0.1 over plain HTTP)"
                                    ))
                                }
                                _ => return Err(format!("{k}: unknown field \"{hk}\"")),
                            }
                        }
                        ProbeCheck::Http { path, port, status: st }
                    }
                    other => {
                        return Err(format!("{k}: expected a path or an object, got {}", describe(other)))
                    }
                };
                set_check(c, &mut check)?;
            }
            "tcpsocket" | "tcp" => {
                let port = match val {
                    Value::Bool(true) => None,
                    Value::Object(o) => match o.iter().find(|(ok, _)| norm(ok) == "port") {
                        Some((_, pv)) => Some(self::port(pv).map_err(|e| format!("{k}.port: {e}"))?),
                        None => None,
                    },
                    other => Some(self::port(other).map_err(|e| format!("{k}: {e}"))?),
                };
                set_check(ProbeCheck::Tcp { port }, &mut check)?;
            }
            "exec" | "command" => {
                let c = command(val).map_err(|e| format!("{k}: {e}"))?;
                set_check(ProbeCheck::Exec { command: c }, &mut check)?;
            }
            "port" => top_port = Some(self::port(val).map_err(|e| format!("{k}: {e}"))?),
            "path" => top_path = Some(self::path(val).map_err(|e| format!("{k}: {e}"))?),
            "status" | "expectedstatus" => top_status = Some(status(val).map_err(|e| format!("{k}: {e}"))?),
            "periodseconds" => field(seconds(val, false).map(|ms| p.period_ms = ms))?,
            "interval" | "period" => field(millis(val, false).map(|ms| p.period_ms = ms))?,
            "timeoutseconds" => field(seconds(val, false).map(|ms| p.timeout_ms = ms))?,
            "timeout" => field(millis(val, false).map(|ms| p.timeout_ms = ms))?,
            "initialdelayseconds" => field(seconds(val, true).map(|ms| p.initial_delay_ms = ms))?,
            "initialdelay" | "startperiod" => field(millis(val, true).map(|ms| p.initial_delay_ms = ms))?,
            "successthreshold" => field(threshold(val).map(|n| p.success_threshold = n))?,
            "failurethreshold" => field(threshold(val).map(|n| p.failure_threshold = n))?,
            _ => return Err(format!("unknown field \"{k}\"")),
        }
    }
    let mut check = check.ok_or("a probe needs a check: httpGet (or http), tcpSocket (or tcp) or exec")?;
    match &mut check {
        ProbeCheck::Http { path, port, status } => {
            if let Some(tp) = top_path {
                *path = tp;
            }
            *port = port.or(top_port);
            *status = status.or(top_status);
        }
        ProbeCheck::Tcp { port } => {
            if top_path.is_some() || top_status.is_some() {
                return Err("path and status apply to HTTP probes only".into());
            }
            *port = port.or(top_port);
        }
        ProbeCheck::Exec { .. } => {
            if top_port.is_some() || top_path.is_some() || top_status.is_some() {
                return Err("port, path and status do not apply to exec probes".into());
            }
        }
    }
    p.check = check;
    if which != "readiness" && p.success_threshold != 1 {
        return Err(format!("successThreshold must be 1 for a {which} probe"));
    }
    Ok(p)
}

/// `watchdog`: milliseconds (a number or `"30s"`), above 0.
pub fn watchdog(v: &Value) -> Result<u64, String> {
    millis(v, false)
}

/// A probe as an ecosystem value that [`probe`] reads back unchanged
/// (`jlist`, `dump.pm2`).
pub fn probe_value(p: &Probe) -> Value {
    let mut m = Map::new();
    match &p.check {
        ProbeCheck::Http { path, port, status } => {
            let mut h = Map::new();
            h.insert("path".into(), Value::from(path.clone()));
            if let Some(port) = port {
                h.insert("port".into(), Value::from(*port));
            }
            if let Some(st) = status {
                h.insert("status".into(), Value::from(*st));
            }
            m.insert("httpGet".into(), Value::Object(h));
        }
        ProbeCheck::Tcp { port } => {
            m.insert(
                "tcpSocket".into(),
                port.map_or(Value::Bool(true), |p| serde_json::json!({ "port": p })),
            );
        }
        ProbeCheck::Exec { command } => {
            m.insert("exec".into(), serde_json::json!({ "command": command }));
        }
    }
    m.insert("interval".into(), Value::from(p.period_ms));
    m.insert("timeout".into(), Value::from(p.timeout_ms));
    m.insert("successThreshold".into(), Value::from(p.success_threshold));
    m.insert("failureThreshold".into(), Value::from(p.failure_threshold));
    m.insert("start_period".into(), Value::from(p.initial_delay_ms));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubernetes_shape_with_defaults() {
        let p = probe(&json!({"httpGet": {"path": "/health", "port": 3000}}), "readiness").unwrap();
        assert_eq!(p.check, ProbeCheck::Http { path: "/health".into(), port: Some(3000), status: None });
        assert_eq!(
            (p.period_ms, p.timeout_ms, p.success_threshold, p.failure_threshold),
            (10_000, 1_000, 1, 3)
        );
        let p = probe(
            &json!({"tcp_socket": {"port": 1}, "periodSeconds": 0.5, "timeout_seconds": 2,
                    "failureThreshold": 5, "initialDelaySeconds": 0}),
            "liveness",
        )
        .unwrap();
        assert_eq!(p.check, ProbeCheck::Tcp { port: Some(1) });
        assert_eq!((p.period_ms, p.timeout_ms, p.failure_threshold, p.initial_delay_ms), (500, 2000, 5, 0));
        let p =
            probe(&json!({"exec": {"command": ["true"]}, "interval": "2s", "start_period": 100}), "startup")
                .unwrap();
        assert_eq!(p.check, ProbeCheck::Exec { command: vec!["true".into()] });
        assert_eq!((p.period_ms, p.initial_delay_ms), (2000, 100));
    }

    #[test]
    fn probe_values_read_back_unchanged() {
        for v in [
            json!({"httpGet": {"path": "/h", "port": 3, "status": 204}, "periodSeconds": 0.25}),
            json!({"tcp": true, "failureThreshold": 7, "initialDelaySeconds": 2}),
            json!({"exec": "exit 0", "timeout": "3s", "successThreshold": 2}),
        ] {
            let p = probe(&v, "readiness").unwrap();
            assert_eq!(probe(&probe_value(&p), "readiness").unwrap(), p);
        }
    }

    #[test]
    fn short_forms() {
        assert_eq!(
            probe(&json!("http:/health"), "readiness").unwrap().check,
            ProbeCheck::Http { path: "/health".into(), port: None, status: None }
        );
        assert_eq!(
            probe(&json!("http:8080/h?x=1"), "readiness").unwrap().check,
            ProbeCheck::Http { path: "/h?x=1".into(), port: Some(8080), status: None }
        );
        assert_eq!(probe(&json!("tcp:9"), "liveness").unwrap().check, ProbeCheck::Tcp { port: Some(9) });
        assert_eq!(
            probe(&json!("exec:test -f /tmp/x"), "liveness").unwrap().check,
            ProbeCheck::Exec { command: vec!["/bin/sh".into(), "-c".into(), "test -f /tmp/x".into()] }
        );
        let p =
            probe(&json!(r#"{"http": "/x", "port": 5, "status": 204, "period": 100}"#), "readiness").unwrap();
        assert_eq!(p.check, ProbeCheck::Http { path: "/x".into(), port: Some(5), status: Some(204) });
        assert_eq!(p.period_ms, 100);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let bad = [
            (json!({}), "needs a check"),
            (json!({"http": "/a", "tcp": 1}), "one check"),
            (json!({"httpGet": {"path": "nope"}}), "starting with /"),
            (json!({"http": "nope"}), "port number"),
            (json!({"tcp": 70000}), "port number"),
            (json!({"tcp": 1, "periodSeconds": 0}), "above 0"),
            (json!({"tcp": 1, "timeoutSeconds": -1}), "above 0"),
            (json!({"tcp": 1, "failureThreshold": 0}), "at least 1"),
            (json!({"tcp": 1, "perodSeconds": 1}), "unknown field \"perodSeconds\""),
            (json!({"exec": ""}), "command"),
            (json!({"exec": "x", "port": 1}), "do not apply"),
            (json!({"http": "/", "status": 42}), "HTTP status"),
            (json!("ftp:1"), "expected http:/path"),
            (json!(5), "expected a probe object"),
        ];
        for (v, want) in bad {
            let e = probe(&v, "readiness").unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
        let e = probe(&json!({"tcp": 1, "successThreshold": 2}), "liveness").unwrap_err();
        assert!(e.contains("must be 1"), "{e}");
        assert!(probe(&json!({"tcp": 1, "successThreshold": 2}), "readiness").is_ok());
        assert!(watchdog(&json!(0)).is_err());
        assert_eq!(watchdog(&json!("3s")), Ok(3000));
    }
}
