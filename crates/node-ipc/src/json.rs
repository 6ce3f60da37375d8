//! `serialization: 'json'`: one `JSON.stringify` text per line.
//!
//! The writer reproduces `JSON.stringify` (number formatting, escapes,
//! `toJSON` of Buffers and Dates, dropped `undefined` properties) so that a
//! Node child sees exactly what a Node parent would have sent.

use crate::error::{Error, Result};
use crate::value::{JsString, Value, ViewKind};

/// Sparse arrays expand to `null`s in JSON; refuse lengths that would make an
/// absurd line instead of allocating it.
const MAX_SPARSE_JSON_LEN: u32 = 1 << 20;

/// Formats a finite or non-finite number the way `Number.prototype.toString` does.
pub fn js_number_string(d: f64) -> String {
    let mut s = String::new();
    write_js_number(&mut s, d);
    s
}

fn write_js_number(out: &mut String, d: f64) {
    if d.is_nan() {
        out.push_str("NaN");
        return;
    }
    if d.is_infinite() {
        out.push_str(if d > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if d == 0.0 {
        out.push('0');
        return;
    }
    if d.fract() == 0.0 && d.abs() < 9_007_199_254_740_992.0 {
        // Exactly representable integers print as plain digits; larger ones
        // go through the shortest-digits path (JS prints 2**60 as ...847000).
        use std::fmt::Write;
        let _ = write!(out, "{d:.0}");
        return;
    }
    // Rust's `{:e}` gives the shortest round-tripping digits, as JS does;
    // only the layout differs.
    let sci = format!("{:e}", d.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exp + 1;
    if d < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.push_str(&"0".repeat((n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
}

fn write_json_string_units(out: &mut Vec<u8>, units: &[u16]) {
    out.push(b'"');
    let mut i = 0;
    while i < units.len() {
        let u = units[i];
        if (0xD800..0xDC00).contains(&u) && i + 1 < units.len() && (0xDC00..0xE000).contains(&units[i + 1]) {
            let c = 0x10000 + (((u as u32) - 0xD800) << 10) + ((units[i + 1] as u32) - 0xDC00);
            if let Some(c) = char::from_u32(c) {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
            i += 2;
            continue;
        }
        if (0xD800..0xE000).contains(&u) {
            // Well-formed JSON.stringify escapes lone surrogates.
            out.extend_from_slice(format!("\\u{u:04x}").as_bytes());
        } else if let Some(c) = char::from_u32(u as u32) {
            escape_char(out, c);
        }
        i += 1;
    }
    out.push(b'"');
}

fn escape_char(out: &mut Vec<u8>, c: char) {
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\u{08}' => out.extend_from_slice(b"\\b"),
        '\u{0c}' => out.extend_from_slice(b"\\f"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
        c => {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
    }
}

fn write_json_string(out: &mut Vec<u8>, s: &JsString) {
    if !s.is_well_formed() {
        write_json_string_units(out, &s.to_utf16());
        return;
    }
    let text = s.as_str();
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b < 0x20 || b == b'"' || b == b'\\' {
            out.extend_from_slice(&bytes[start..i]);
            escape_char(out, b as char);
            start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// What `JSON.stringify` emits for a value, or `None` when it omits it
/// (`undefined`).
fn json_skipped(v: &Value) -> bool {
    matches!(v, Value::Undefined | Value::Hole)
}

/// Appends `JSON.stringify(value)` (without the newline) to `out`.
///
/// Errors where JS would throw (BigInt) or where the value can't be expressed
/// (a top-level `undefined`, back-references).
pub fn encode_into(value: &Value, out: &mut Vec<u8>) -> Result<()> {
    if json_skipped(value) {
        return Err(Error::NotEncodable("undefined cannot be sent as a message"));
    }
    let start = out.len();
    let r = write_value(value, out, 0);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// `JSON.stringify(value)` as bytes (no newline).
pub fn encode(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    encode_into(value, &mut out)?;
    Ok(out)
}

fn write_number(out: &mut Vec<u8>, d: f64) {
    if !d.is_finite() {
        out.extend_from_slice(b"null");
    } else {
        let mut s = String::new();
        write_js_number(&mut s, d);
        out.extend_from_slice(s.as_bytes());
    }
}

fn write_props<'a>(
    out: &mut Vec<u8>,
    props: impl Iterator<Item = (&'a JsString, &'a Value)>,
    depth: usize,
) -> Result<()> {
    out.push(b'{');
    let mut first = true;
    for (k, v) in props {
        if json_skipped(v) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_string(out, k);
        out.push(b':');
        write_value(v, out, depth + 1)?;
    }
    out.push(b'}');
    Ok(())
}

fn typed_element_json(kind: ViewKind, chunk: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut b8 = [0u8; 8];
    b8[..chunk.len()].copy_from_slice(chunk);
    let n: f64 = match kind {
        ViewKind::Int8 => chunk[0] as i8 as f64,
        ViewKind::Uint8 | ViewKind::Uint8Clamped | ViewKind::Buffer | ViewKind::DataView => chunk[0] as f64,
        ViewKind::Int16 => i16::from_le_bytes([b8[0], b8[1]]) as f64,
        ViewKind::Uint16 => u16::from_le_bytes([b8[0], b8[1]]) as f64,
        ViewKind::Int32 => i32::from_le_bytes([b8[0], b8[1], b8[2], b8[3]]) as f64,
        ViewKind::Uint32 => u32::from_le_bytes([b8[0], b8[1], b8[2], b8[3]]) as f64,
        ViewKind::Float32 => f32::from_le_bytes([b8[0], b8[1], b8[2], b8[3]]) as f64,
        ViewKind::Float64 => f64::from_le_bytes(b8),
        ViewKind::BigInt64 | ViewKind::BigUint64 => {
            return Err(Error::NotEncodable("BigInt values cannot be serialized to JSON"))
        }
    };
    // A Float32 element is widened first, as JS does, then printed as an f64.
    write_number(out, n);
    Ok(())
}

fn write_value(v: &Value, out: &mut Vec<u8>, depth: usize) -> Result<()> {
    if depth > crate::v8::DEFAULT_MAX_DEPTH {
        return Err(Error::TooDeep { max: crate::v8::DEFAULT_MAX_DEPTH });
    }
    match v {
        Value::Undefined | Value::Hole | Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Double(d) => write_number(out, *d),
        Value::BigInt(_) => return Err(Error::NotEncodable("BigInt values cannot be serialized to JSON")),
        Value::String(s) => write_json_string(out, s),
        Value::Object(p) => write_props(out, p.iter().map(|(k, v)| (k, v)), depth)?,
        Value::Array(e) | Value::ArrayWithProps { elements: e, .. } => {
            out.push(b'[');
            for (i, x) in e.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(x, out, depth + 1)?;
            }
            out.push(b']');
        }
        Value::SparseArray { length, props } => {
            if *length > MAX_SPARSE_JSON_LEN {
                return Err(Error::NotEncodable("sparse array too long for JSON"));
            }
            out.push(b'[');
            for i in 0..*length {
                if i > 0 {
                    out.push(b',');
                }
                let key = i.to_string();
                match props.iter().rev().find(|(k, _)| k.as_str() == key) {
                    Some((_, x)) => write_value(x, out, depth + 1)?,
                    None => out.extend_from_slice(b"null"),
                }
            }
            out.push(b']');
        }
        Value::Date(ms) => match iso_date(*ms) {
            Some(s) => {
                out.push(b'"');
                out.extend_from_slice(s.as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        },
        Value::Buffer(b) => {
            out.extend_from_slice(b"{\"type\":\"Buffer\",\"data\":[");
            for (i, x) in b.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(x.to_string().as_bytes());
            }
            out.extend_from_slice(b"]}");
        }
        Value::TypedArray { kind: ViewKind::DataView, .. } => out.extend_from_slice(b"{}"),
        Value::TypedArray { kind, bytes } => {
            out.push(b'{');
            for (i, chunk) in bytes.chunks(kind.element_size()).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(format!("\"{i}\":").as_bytes());
                typed_element_json(*kind, chunk, out)?;
            }
            out.push(b'}');
        }
        Value::RegExp { .. } | Value::Map(_) | Value::Set(_) | Value::ArrayBuffer(_) | Value::Error(_) => {
            out.extend_from_slice(b"{}")
        }
        Value::Wrapper(inner) => match &**inner {
            Value::BigInt(_) => {
                return Err(Error::NotEncodable("BigInt values cannot be serialized to JSON"))
            }
            other => write_value(other, out, depth + 1)?,
        },
        Value::HostObject(inner) => write_value(inner, out, depth + 1)?,
        Value::Ref(_) => return Err(Error::NotEncodable("back-references cannot be written as JSON")),
    }
    Ok(())
}

/// `Date.prototype.toISOString` for a time value, `None` for an invalid date.
pub fn iso_date(ms: f64) -> Option<String> {
    if !ms.is_finite() || ms.abs() > 8.64e15 {
        return None;
    }
    let ms = ms.trunc() as i64;
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let year = if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else if y < 0 {
        format!("-{:06}", -y)
    } else {
        format!("+{y:06}")
    };
    Some(format!("{year}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z"))
}

/// Parses one JSON line (trailing `\r` and whitespace are fine, as for
/// `JSON.parse`).
pub fn decode(line: &[u8]) -> Result<Value> {
    match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(v) => Ok(from_json_value(v)),
        Err(e) => {
            // JSON.stringify writes lone surrogates as `\udXXX` escapes, which
            // serde_json refuses; retry with those made U+FFFD (the same lossy
            // rendering JsString gives them) before calling the line invalid.
            let fixed = replace_lone_surrogates(line).ok_or_else(|| Error::Json(e.to_string()))?;
            let v: serde_json::Value =
                serde_json::from_slice(&fixed).map_err(|e| Error::Json(e.to_string()))?;
            Ok(from_json_value(v))
        }
    }
}

/// Rewrites unpaired `\uD800`–`\uDFFF` escapes as `\ufffd`; `None` if there
/// were none (the line is invalid for another reason).
fn replace_lone_surrogates(line: &[u8]) -> Option<Vec<u8>> {
    fn escape_at(b: &[u8], i: usize) -> Option<u16> {
        if b.get(i) != Some(&b'\\') || b.get(i + 1) != Some(&b'u') {
            return None;
        }
        let hex = std::str::from_utf8(b.get(i + 2..i + 6)?).ok()?;
        u16::from_str_radix(hex, 16).ok()
    }
    let mut out = Vec::with_capacity(line.len());
    let mut changed = false;
    let mut i = 0;
    let mut in_string = false;
    while i < line.len() {
        let c = line[i];
        if !in_string {
            in_string = c == b'"';
            out.push(c);
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                in_string = false;
                out.push(c);
                i += 1;
            }
            b'\\' => match escape_at(line, i) {
                Some(0xD800..=0xDBFF) if matches!(escape_at(line, i + 6), Some(0xDC00..=0xDFFF)) => {
                    out.extend_from_slice(&line[i..i + 12]);
                    i += 12;
                }
                Some(0xD800..=0xDFFF) => {
                    out.extend_from_slice(b"\\ufffd");
                    changed = true;
                    i += 6;
                }
                _ => {
                    out.extend_from_slice(&line[i..(i + 2).min(line.len())]);
                    i += 2;
                }
            },
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

pub(crate) fn from_json_value(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::number(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(JsString::new(s)),
        serde_json::Value::Array(a) => Value::Array(a.into_iter().map(from_json_value).collect()),
        serde_json::Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (JsString::new(k), from_json_value(v))).collect())
        }
    }
}

pub(crate) fn to_json_value(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    fn num(d: f64) -> J {
        if d.fract() == 0.0 && d.abs() < 9_007_199_254_740_992.0 {
            J::from(d as i64)
        } else {
            serde_json::Number::from_f64(d).map_or(J::Null, J::Number)
        }
    }
    fn props<'a>(p: impl Iterator<Item = &'a (JsString, Value)>) -> J {
        let mut m = serde_json::Map::new();
        for (k, v) in p {
            if !json_skipped(v) {
                m.insert(k.as_str().to_owned(), to_json_value(v));
            }
        }
        J::Object(m)
    }
    match v {
        Value::Undefined | Value::Hole | Value::Null | Value::Ref(_) => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Double(d) => num(*d),
        Value::BigInt(b) => J::String(bigint_decimal(b)),
        Value::String(s) => J::String(s.as_str().to_owned()),
        Value::Object(p) => props(p.iter()),
        Value::Array(e) | Value::ArrayWithProps { elements: e, .. } => {
            J::Array(e.iter().map(to_json_value).collect())
        }
        Value::SparseArray { length, props } => {
            let len = (*length).min(MAX_SPARSE_JSON_LEN) as usize;
            let mut arr = vec![J::Null; len];
            for (k, v) in props {
                if let Ok(i) = k.as_str().parse::<usize>() {
                    if i < len {
                        arr[i] = to_json_value(v);
                    }
                }
            }
            J::Array(arr)
        }
        Value::Date(ms) => iso_date(*ms).map_or(J::Null, J::String),
        Value::Buffer(b) => {
            serde_json::json!({"type": "Buffer", "data": b.iter().map(|x| *x as u64).collect::<Vec<_>>()})
        }
        Value::TypedArray { kind, bytes } => {
            let mut out = Vec::new();
            if typed_element_json_all(*kind, bytes, &mut out).is_ok() {
                serde_json::from_slice(&out).unwrap_or(J::Null)
            } else {
                J::Null
            }
        }
        Value::RegExp { .. } | Value::Map(_) | Value::Set(_) | Value::ArrayBuffer(_) | Value::Error(_) => {
            J::Object(serde_json::Map::new())
        }
        Value::Wrapper(inner) | Value::HostObject(inner) => to_json_value(inner),
    }
}

fn typed_element_json_all(kind: ViewKind, bytes: &[u8], out: &mut Vec<u8>) -> Result<()> {
    write_value(&Value::TypedArray { kind, bytes: bytes::Bytes::copy_from_slice(bytes) }, out, 0)
}

/// Decimal text of a BigInt (what `String(n)` gives).
pub fn bigint_decimal(b: &crate::value::JsBigInt) -> String {
    // Repeated division of the little-endian magnitude by 10^9.
    let mut limbs: Vec<u32> = b
        .magnitude
        .chunks(4)
        .map(|c| {
            let mut x = [0u8; 4];
            x[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(x)
        })
        .collect();
    while limbs.last() == Some(&0) {
        limbs.pop();
    }
    if limbs.is_empty() {
        return "0".into();
    }
    let mut parts = Vec::new();
    while !limbs.is_empty() {
        let mut rem: u64 = 0;
        for l in limbs.iter_mut().rev() {
            let cur = (rem << 32) | *l as u64;
            *l = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        parts.push(rem as u32);
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    let mut s = String::new();
    if b.negative {
        s.push('-');
    }
    if let Some(last) = parts.pop() {
        s.push_str(&last.to_string());
    }
    for p in parts.iter().rev() {
        s.push_str(&format!("{p:09}"));
    }
    s
}
