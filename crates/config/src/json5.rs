//! A lenient JSON reader for `.json` ecosystem files and `dump.pm2`.
//!
//! pm2 evaluates both as a JavaScript expression, so real files carry
//! comments, trailing commas, unquoted keys and single-quoted strings. This
//! accepts the JSON5 subset of JavaScript literals; anything beyond that
//! (function calls, `process.env.X`) is left to `node` by the caller.

use serde_json::{Map, Number, Value};

/// Parse error with a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.col, self.msg)
    }
}

/// Parses one JSON5 value (surrounding whitespace and comments allowed).
pub fn parse(text: &str) -> Result<Value, ParseError> {
    let mut p = Parser { chars: text.chars().collect(), pos: 0 };
    p.skip_ws()?;
    // pm2 wraps the text in parentheses, so a file that is itself
    // parenthesised is legal there too.
    let v = p.value(0)?;
    p.skip_ws()?;
    if p.pos < p.chars.len() {
        return Err(p.err("unexpected text after the value"));
    }
    Ok(v)
}

const MAX_DEPTH: usize = 512;

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn err(&self, msg: impl Into<String>) -> ParseError {
        let upto = &self.chars[..self.pos.min(self.chars.len())];
        let line = upto.iter().filter(|&&c| c == '\n').count() + 1;
        let col = upto.iter().rev().take_while(|&&c| c != '\n').count() + 1;
        ParseError { line, col, msg: msg.into() }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, off: usize) -> Option<char> {
        self.chars.get(self.pos + off).copied()
    }

    fn skip_ws(&mut self) -> Result<(), ParseError> {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() || c == '\u{feff}' => self.pos += 1,
                Some('/') if self.peek_at(1) == Some('/') => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                Some('/') if self.peek_at(1) == Some('*') => {
                    let start = self.pos;
                    self.pos += 2;
                    loop {
                        match self.peek() {
                            None => {
                                self.pos = start;
                                return Err(self.err("unterminated /* comment"));
                            }
                            Some('*') if self.peek_at(1) == Some('/') => {
                                self.pos += 2;
                                break;
                            }
                            _ => self.pos += 1,
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        match self.peek() {
            None => Err(self.err("unexpected end of input, expected a value")),
            Some('{') => self.object(depth),
            Some('[') => self.array(depth),
            Some('(') => {
                self.pos += 1;
                self.skip_ws()?;
                let v = self.value(depth + 1)?;
                self.skip_ws()?;
                if self.peek() != Some(')') {
                    return Err(self.err("expected `)`"));
                }
                self.pos += 1;
                Ok(v)
            }
            Some(q @ ('"' | '\'' | '`')) => Ok(Value::String(self.string(q)?)),
            Some(c) if c == '-' || c == '+' || c == '.' || c.is_ascii_digit() => self.number(),
            Some(c) if is_ident_start(c) => {
                let start = self.pos;
                let word = self.ident();
                match word.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    // JSON.stringify turns undefined/NaN/Infinity into null;
                    // doing the same keeps such files loadable.
                    "null" | "undefined" | "NaN" | "Infinity" => Ok(Value::Null),
                    _ => {
                        self.pos = start;
                        Err(self.err(format!("unexpected identifier `{word}`")))
                    }
                }
            }
            Some(c) => Err(self.err(format!("unexpected character `{c}`"))),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.pos += 1; // '{'
        let mut map = Map::new();
        loop {
            self.skip_ws()?;
            match self.peek() {
                Some('}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                None => return Err(self.err("unterminated object, expected `}`")),
                _ => {}
            }
            let key = match self.peek() {
                Some(q @ ('"' | '\'')) => self.string(q)?,
                Some(c) if is_ident_start(c) => self.ident(),
                Some(c) if c.is_ascii_digit() => match self.number()? {
                    Value::Number(n) => n.to_string(),
                    _ => return Err(self.err("invalid numeric key")),
                },
                Some(c) => return Err(self.err(format!("expected a key, found `{c}`"))),
                None => return Err(self.err("unterminated object")),
            };
            self.skip_ws()?;
            if self.peek() != Some(':') {
                return Err(self.err(format!("expected `:` after key \"{key}\"")));
            }
            self.pos += 1;
            self.skip_ws()?;
            let v = self.value(depth + 1)?;
            map.insert(key, v);
            self.skip_ws()?;
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {}
                Some(c) => return Err(self.err(format!("expected `,` or `}}`, found `{c}`"))),
                None => return Err(self.err("unterminated object, expected `}`")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.pos += 1; // '['
        let mut out = Vec::new();
        loop {
            self.skip_ws()?;
            match self.peek() {
                Some(']') => {
                    self.pos += 1;
                    return Ok(Value::Array(out));
                }
                None => return Err(self.err("unterminated array, expected `]`")),
                _ => {}
            }
            out.push(self.value(depth + 1)?);
            self.skip_ws()?;
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {}
                Some(c) => return Err(self.err(format!("expected `,` or `]`, found `{c}`"))),
                None => return Err(self.err("unterminated array, expected `]`")),
            }
        }
    }

    fn ident(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if is_ident_start(c) || c.is_ascii_digit() {
                s.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        s
    }

    fn string(&mut self, quote: char) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut s = String::new();
        loop {
            let Some(c) = self.peek() else {
                self.pos = start;
                return Err(self.err("unterminated string"));
            };
            self.pos += 1;
            match c {
                c if c == quote => return Ok(s),
                '\\' => {
                    let Some(e) = self.peek() else {
                        self.pos = start;
                        return Err(self.err("unterminated string"));
                    };
                    self.pos += 1;
                    match e {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        'r' => s.push('\r'),
                        'b' => s.push('\u{8}'),
                        'f' => s.push('\u{c}'),
                        'v' => s.push('\u{b}'),
                        '0' => s.push('\0'),
                        // Line continuation.
                        '\n' => {}
                        '\r' => {
                            if self.peek() == Some('\n') {
                                self.pos += 1;
                            }
                        }
                        'x' => {
                            let cp = self.hex(2)?;
                            s.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                        }
                        'u' => {
                            let cp = self.unicode_escape()?;
                            s.push(cp);
                        }
                        other => s.push(other),
                    }
                }
                '\n' if quote != '`' => {
                    self.pos -= 1;
                    return Err(self.err("line break inside a string"));
                }
                c => s.push(c),
            }
        }
    }

    fn hex(&mut self, n: usize) -> Result<u32, ParseError> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self.peek().and_then(|c| c.to_digit(16)).ok_or_else(|| self.err("bad hex escape"))?;
            v = v * 16 + d;
            self.pos += 1;
        }
        Ok(v)
    }

    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let hi = if self.peek() == Some('{') {
            self.pos += 1;
            let mut v = 0u32;
            while let Some(d) = self.peek().and_then(|c| c.to_digit(16)) {
                v = v.saturating_mul(16).saturating_add(d);
                self.pos += 1;
            }
            if self.peek() != Some('}') {
                return Err(self.err("bad \\u{...} escape"));
            }
            self.pos += 1;
            return char::from_u32(v).ok_or_else(|| self.err("bad code point"));
        } else {
            self.hex(4)?
        };
        if (0xD800..0xDC00).contains(&hi) && self.peek() == Some('\\') && self.peek_at(1) == Some('u') {
            let save = self.pos;
            self.pos += 2;
            let lo = self.hex(4)?;
            if (0xDC00..0xE000).contains(&lo) {
                let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                return Ok(char::from_u32(cp).unwrap_or('\u{fffd}'));
            }
            self.pos = save;
        }
        Ok(char::from_u32(hi).unwrap_or('\u{fffd}'))
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let mut neg = false;
        if let Some(c @ ('+' | '-')) = self.peek() {
            neg = c == '-';
            self.pos += 1;
        }
        if self.peek().is_some_and(is_ident_start) {
            let word = self.ident();
            if word == "Infinity" || word == "NaN" {
                return Ok(Value::Null);
            }
            self.pos = start;
            return Err(self.err("invalid number"));
        }
        if self.peek() == Some('0') && matches!(self.peek_at(1), Some('x' | 'X')) {
            self.pos += 2;
            let mut v: u64 = 0;
            let digits_start = self.pos;
            while let Some(d) = self.peek().and_then(|c| c.to_digit(16)) {
                v = v.saturating_mul(16).saturating_add(u64::from(d));
                self.pos += 1;
            }
            if self.pos == digits_start {
                return Err(self.err("invalid hex number"));
            }
            return Ok(if neg {
                Value::Number(Number::from(-(v.min(i64::MAX as u64) as i64)))
            } else {
                Value::Number(Number::from(v))
            });
        }
        let body_start = self.pos;
        while let Some(c) = self.peek() {
            let sign_of_exponent =
                matches!(c, '+' | '-') && matches!(self.chars.get(self.pos - 1), Some('e' | 'E'));
            if c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '_') || sign_of_exponent {
                self.pos += 1;
            } else {
                break;
            }
        }
        let body: String = self.chars[body_start..self.pos].iter().filter(|&&c| c != '_').collect();
        if body.is_empty() || body == "." {
            self.pos = start;
            return Err(self.err("invalid number"));
        }
        let is_int = body.chars().all(|c| c.is_ascii_digit());
        if is_int {
            if let Ok(u) = body.parse::<u64>() {
                if !neg {
                    return Ok(Value::Number(Number::from(u)));
                }
                if let Ok(i) = i64::try_from(u) {
                    return Ok(Value::Number(Number::from(-i)));
                }
            }
        }
        let f: f64 = body.parse().map_err(|_| {
            let mut e = self.err(format!("invalid number `{body}`"));
            e.col = e.col.saturating_sub(self.pos - start);
            e
        })?;
        let f = if neg { -f } else { f };
        // Integral floats (`1e3`, `2.0`) read as integers, as JS has one
        // number type and options like `instances` expect integers.
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            return Ok(Value::Number(Number::from(f as i64)));
        }
        Ok(Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null))
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_json() {
        assert_eq!(
            parse(r#"{"a": [1, 2.5, "x", true, null]}"#).unwrap(),
            json!({"a": [1, 2.5, "x", true, null]})
        );
    }

    #[test]
    fn js_object_literal() {
        let text = "// ecosystem\n{\n  apps: [{\n    name: 'api', /* inline */ script: \"app.js\",\n    instances: +2, port: 0x10, ratio: .5,\n    env: { A: 'it\\'s', },\n  },],\n}\n";
        assert_eq!(
            parse(text).unwrap(),
            json!({"apps": [{"name": "api", "script": "app.js", "instances": 2, "port": 16, "ratio": 0.5, "env": {"A": "it's"}}]})
        );
    }

    #[test]
    fn parenthesised_and_negative() {
        assert_eq!(parse("({a: -1, b: 1e3})").unwrap(), json!({"a": -1, "b": 1000}));
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("{\n  a: 1,\n  b: ]\n}").unwrap_err();
        assert_eq!((e.line, e.col), (3, 6));
        let e = parse("{a: 1").unwrap_err();
        assert!(e.msg.contains("unterminated"), "{e}");
        assert!(parse("{a: process.env.X}").is_err());
        assert!(parse("[1] x").is_err());
    }

    #[test]
    fn unicode_escapes() {
        assert_eq!(parse(r#""\u00e9\ud83d\ude00\x41""#).unwrap(), json!("é😀A"));
    }
}
