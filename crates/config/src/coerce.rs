//! Value coercions of pm2's schema: numeric strings, `10M` byte
//! sizes, `5s` durations and shell-like argument strings.

use serde_json::Value;

/// How a value is described in error messages: `got an object`.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string ({})", Value::String(s.clone())),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Splits an argument string the way pm2 does for `args`/`node_args`:
/// whitespace separates, `"..."` and `'...'` group (quotes removed, also
/// inside a word as in `k="a b"`), a backslash escapes the next character
/// outside single quotes.
pub fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '"' | '\'' => {
                in_word = true;
                let quote = c;
                let qpos = cur.len();
                let mut closed = false;
                while let Some(d) = chars.next() {
                    if d == quote {
                        closed = true;
                        break;
                    }
                    if d == '\\' && quote == '"' {
                        match chars.peek() {
                            Some(&n) if n == '"' || n == '\\' => {
                                cur.push(n);
                                chars.next();
                                continue;
                            }
                            _ => {}
                        }
                    }
                    cur.push(d);
                }
                // An unbalanced quote is taken literally rather than
                // swallowing the rest silently.
                if !closed {
                    cur.insert(qpos, quote);
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => cur.push('\\'),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// A number given as a JSON number or a numeric string.
pub fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                return None;
            }
            t.parse::<f64>().ok().filter(|f| f.is_finite())
        }
        _ => None,
    }
}

/// `<n>` bytes or `<n>K|M|G|T` (×1024ⁿ, optional `B`, any case).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let t = lower.strip_suffix('b').filter(|r| !r.is_empty()).unwrap_or(&lower);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1024f64),
        'm' => (&t[..t.len() - 1], 1024f64 * 1024.0),
        'g' => (&t[..t.len() - 1], 1024f64 * 1024.0 * 1024.0),
        't' => (&t[..t.len() - 1], 1024f64 * 1024.0 * 1024.0 * 1024.0),
        _ => (t, 1f64),
    };
    let n: f64 = num.trim().parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    Some((n * mult).round() as u64)
}

/// `<n>` milliseconds or `<n>ms|s|m|h`.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1f64)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000f64)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000f64)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000f64)
    } else {
        (t.as_str(), 1f64)
    };
    let n: f64 = num.trim().parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    Some((n * mult).round() as u64)
}

/// Stringifies an env value as pm2 does: strings as-is, numbers and
/// booleans printed, objects and arrays as JSON.
pub fn env_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split_args_quotes() {
        assert_eq!(split_args("  --port 3000   -v "), vec!["--port", "3000", "-v"]);
        assert_eq!(
            split_args(r#"--name "a b" 'c d' k="v w" e\ f"#),
            vec!["--name", "a b", "c d", "k=v w", "e f"]
        );
        assert_eq!(split_args(r#""" x"#), vec!["", "x"]);
        assert_eq!(split_args(r#"say "he said \"hi\"""#), vec!["say", r#"he said "hi""#]);
        assert_eq!(split_args("'unclosed x"), vec!["'unclosed x"]);
        assert!(split_args("   ").is_empty());
    }

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("10M"), Some(10 * 1024 * 1024));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("200K"), Some(200 * 1024));
        assert_eq!(parse_bytes("512mb"), Some(512 * 1024 * 1024));
        assert_eq!(parse_bytes("1.5G"), Some(1610612736));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1M"), None);
        assert_eq!(parse_bytes(""), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5s"), Some(5000));
        assert_eq!(parse_duration_ms("2m"), Some(120_000));
        assert_eq!(parse_duration_ms("1h"), Some(3_600_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("1.5s"), Some(1500));
        assert_eq!(parse_duration_ms("700"), Some(700));
        assert_eq!(parse_duration_ms("soon"), None);
    }

    #[test]
    fn env_values() {
        assert_eq!(env_string(&json!(3000)), "3000");
        assert_eq!(env_string(&json!(true)), "true");
        assert_eq!(env_string(&json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(env_string(&json!([1, "x"])), r#"[1,"x"]"#);
    }
}
