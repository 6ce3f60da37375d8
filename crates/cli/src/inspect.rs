//! Node's `util.inspect` (default options: depth unlimited here, compact 3,
//! breakLength 80) for JSON values. pm2 prints `prettylist`, `pm2 id`, `ping`
//! and the `(ids: [ 0, 1 ])` of its action lines this way, so the line
//! breaking rules matter to users who diff that output.

use serde_json::Value;

const BREAK_LENGTH: usize = 80;
const COMPACT: usize = 3;
const MIN_LINE_WIDTH: usize = 16;
/// `maxArrayLength` / `maxStringLength` defaults.
const MAX_ARRAY: usize = 100;
const MAX_STRING: usize = 10_000;

pub fn inspect(v: &Value) -> String {
    let mut ctx = Ctx { indentation: 0, current_depth: 0 };
    ctx.format(v, 0)
}

struct Ctx {
    indentation: usize,
    current_depth: usize,
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn is_ident(k: &str) -> bool {
    let mut cs = k.chars();
    match cs.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// JS string literal the way `util.inspect` quotes it: single quotes unless
/// the string contains one and no double quote (then double), or both (then
/// backticks if possible).
pub fn quote(s: &str) -> String {
    let q = if !s.contains('\'') {
        '\''
    } else if !s.contains('"') {
        '"'
    } else if !s.contains('`') && !s.contains("${") {
        '`'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

fn number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(f) if f == f.trunc() && f.abs() < 1e21 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => n.to_string(),
    }
}

impl Ctx {
    fn format(&mut self, v: &Value, depth: usize) -> String {
        match v {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => number(n),
            Value::String(s) => self.string(s),
            Value::Array(a) => {
                if a.is_empty() {
                    return "[]".into();
                }
                self.current_depth = depth;
                let mut out = Vec::with_capacity(a.len().min(MAX_ARRAY) + 1);
                for x in a.iter().take(MAX_ARRAY) {
                    self.indentation += 2;
                    out.push(self.format(x, depth + 1));
                    self.indentation -= 2;
                }
                let more = a.len().saturating_sub(MAX_ARRAY);
                if more > 0 {
                    out.push(format!("... {more} more item{}", if more > 1 { "s" } else { "" }));
                }
                let entries = out.len();
                let out = if entries > 6 { self.group(out, a, more > 0) } else { out };
                self.reduce(out, entries, ("[", "]"), depth)
            }
            Value::Object(m) => {
                if m.is_empty() {
                    return "{}".into();
                }
                self.current_depth = depth;
                let mut out = Vec::with_capacity(m.len());
                for (k, x) in m {
                    let key = if is_ident(k) { k.clone() } else { quote(k) };
                    self.indentation += 2;
                    let s = self.format(x, depth + 1);
                    self.indentation -= 2;
                    out.push(format!("{key}: {s}"));
                }
                let entries = out.len();
                self.reduce(out, entries, ("{", "}"), depth)
            }
        }
    }

    fn string(&self, s: &str) -> String {
        let n = width(s);
        if n > MAX_STRING {
            let more = n - MAX_STRING;
            let head: String = s.chars().take(MAX_STRING).collect();
            return format!(
                "{}... {more} more character{}",
                self.string(&head),
                if more > 1 { "s" } else { "" }
            );
        }
        // Long multi-line strings are split after each newline.
        let len = n;
        if len > MIN_LINE_WIDTH && len + self.indentation + 4 > BREAK_LENGTH && s.contains('\n') {
            let mut parts: Vec<String> = Vec::new();
            let mut cur = String::new();
            for c in s.chars() {
                cur.push(c);
                if c == '\n' {
                    parts.push(std::mem::take(&mut cur));
                }
            }
            if !cur.is_empty() {
                parts.push(cur);
            }
            if parts.len() > 1 {
                let sep = format!(" +\n{}", " ".repeat(self.indentation + 2));
                return parts.iter().map(|p| quote(p)).collect::<Vec<_>>().join(&sep);
            }
        }
        quote(s)
    }

    fn reduce(&mut self, out: Vec<String>, entries: usize, braces: (&str, &str), depth: usize) -> String {
        if self.current_depth.saturating_sub(depth) < COMPACT && entries == out.len() {
            let start = out.len() + self.indentation + braces.0.len() + 10;
            if below_break_length(&out, start) {
                let joined = out.join(", ");
                if !joined.contains('\n') {
                    return format!("{} {} {}", braces.0, joined, braces.1);
                }
            }
        }
        let ind = format!("\n{}", " ".repeat(self.indentation));
        format!("{}{ind}  {}{ind}{}", braces.0, out.join(&format!(",{ind}  ")), braces.1)
    }

    /// Node's `groupArrayElements`; `has_more` = the last entry is the
    /// "... n more items" line, which is kept out of the columns.
    fn group(&self, out: Vec<String>, values: &[Value], has_more: bool) -> Vec<String> {
        let sep = 2usize;
        let output_len = out.len() - usize::from(has_more);
        let data_len: Vec<usize> = out[..output_len].iter().map(|s| width(s)).collect();
        let total: usize = data_len.iter().map(|l| l + sep).sum();
        let max_len = data_len.iter().copied().max().unwrap_or(0);
        let actual_max = max_len + sep;
        if !(actual_max * 3 + self.indentation < BREAK_LENGTH
            && (total as f64 / actual_max as f64 > 5.0 || max_len <= 6))
        {
            return out;
        }
        let average_bias = (actual_max as f64 - total as f64 / out.len() as f64).sqrt();
        let biased_max = (actual_max as f64 - 3.0 - average_bias).max(1.0);
        let columns = [
            ((2.5 * biased_max * output_len as f64).sqrt() / biased_max).round() as usize,
            (BREAK_LENGTH - self.indentation) / actual_max,
            COMPACT * 4,
            15,
        ]
        .into_iter()
        .min()
        .unwrap_or(1);
        if columns <= 1 {
            return out;
        }
        let mut max_line = Vec::with_capacity(columns);
        for i in 0..columns {
            let mut l = 0;
            let mut j = i;
            while j < out.len() {
                l = l.max(data_len.get(j).copied().unwrap_or(0));
                j += columns;
            }
            max_line.push(l + sep);
        }
        let pad_start = values.iter().take(out.len()).all(|v| v.is_number());
        let mut tmp = Vec::new();
        let mut i = 0;
        while i < output_len {
            let max = (i + columns).min(output_len);
            let mut s = String::new();
            let mut j = i;
            while j + 1 < max {
                let cell = format!("{}, ", out[j]);
                s.push_str(&pad(&cell, max_line[j - i], pad_start));
                j += 1;
            }
            if pad_start {
                s.push_str(&pad(&out[j], max_line[j - i] - sep, true));
            } else {
                s.push_str(&out[j]);
            }
            tmp.push(s);
            i += columns;
        }
        if has_more {
            tmp.extend(out.last().cloned());
        }
        tmp
    }
}

fn pad(s: &str, to: usize, start: bool) -> String {
    let w = width(s);
    if w >= to {
        return s.to_string();
    }
    let fill = " ".repeat(to - w);
    if start {
        format!("{fill}{s}")
    } else {
        format!("{s}{fill}")
    }
}

fn below_break_length(out: &[String], start: usize) -> bool {
    let mut total = out.len() + start;
    if total + out.len() > BREAK_LENGTH {
        return false;
    }
    for s in out {
        total += width(s);
        if total > BREAK_LENGTH {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn small_values() {
        assert_eq!(inspect(&json!({"msg": "pong"})), "{ msg: 'pong' }");
        assert_eq!(inspect(&json!([0, 1])), "[ 0, 1 ]");
        assert_eq!(inspect(&json!(["99"])), "[ '99' ]");
        assert_eq!(inspect(&json!([])), "[]");
        assert_eq!(inspect(&json!({"a-b": "it's"})), "{ 'a-b': \"it's\" }");
    }

    #[test]
    fn long_number_arrays_are_grouped() {
        assert_eq!(inspect(&json!([0, 1, 2, 3, 4, 5, 6])), "[\n  0, 1, 2, 3,\n  4, 5, 6\n]");
    }

    #[test]
    fn objects_break_past_80_columns() {
        let v = json!({"restart_time": 1, "status": "online", "pm_exec_path": "/srv/apps/some/long/path/app.js", "x": 1});
        assert_eq!(
            inspect(&v),
            "{\n  restart_time: 1,\n  status: 'online',\n  pm_exec_path: '/srv/apps/some/long/path/app.js',\n  x: 1\n}"
        );
    }

    #[test]
    fn arrays_past_100_items_are_cut_like_node() {
        let v: Vec<u32> = (0..101).map(|i| i % 10).collect();
        let want = "[\n  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1,\n  2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3,\n  4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5,\n  6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7,\n  8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9,\n  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1,\n  2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3,\n  4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5,\n  6, 7, 8, 9,\n  ... 1 more item\n]";
        assert_eq!(inspect(&json!(v)), want);
        let long = "y".repeat(10_002);
        assert!(inspect(&json!(long)).ends_with("'... 2 more characters"));
    }

    #[test]
    fn nesting_deeper_than_three_breaks() {
        let v = json!({"a": {"b": {"c": {"d": 1}}}});
        assert_eq!(inspect(&v), "{\n  a: { b: { c: { d: 1 } } }\n}");
    }
}
