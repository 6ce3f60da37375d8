//! A cheap reader for the top-level routing fields of a message.
//!
//! A relay (cluster adapter, sticky sessions, cluster protocol) only needs a
//! handful of top-level string or number fields to route a frame, and then
//! forwards the frame byte for byte. This reader finds them without decoding
//! (or allocating) the rest of the message.

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::frame::Mode;
use crate::v8::{tag, unzigzag, Reader, DEFAULT_MAX_DEPTH};

/// A string field, still in its wire encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldStr<'a> {
    /// V8 one-byte string (Latin-1).
    Latin1(&'a [u8]),
    /// V8 two-byte string (UTF-16LE bytes).
    Utf16(&'a [u8]),
    /// UTF-8 text that needs no unescaping.
    Utf8(&'a str),
    /// The inside of a JSON string literal containing escapes.
    JsonEscaped(&'a [u8]),
}

impl<'a> FieldStr<'a> {
    /// Compares with `s` without allocating (except for escaped JSON).
    pub fn eq_str(&self, s: &str) -> bool {
        match self {
            FieldStr::Utf8(t) => *t == s,
            FieldStr::Latin1(b) => {
                if s.is_ascii() {
                    *b == s.as_bytes()
                } else {
                    b.len() == s.chars().count()
                        && b.iter().zip(s.chars()).all(|(x, c)| *x as u32 == c as u32)
                }
            }
            FieldStr::Utf16(b) => {
                let mut it = s.encode_utf16();
                for c in b.chunks_exact(2) {
                    if it.next() != Some(u16::from_le_bytes([c[0], c[1]])) {
                        return false;
                    }
                }
                it.next().is_none() && b.len() % 2 == 0
            }
            FieldStr::JsonEscaped(_) => self.to_str() == s,
        }
    }

    /// True if the string starts with the ASCII `prefix`.
    pub fn starts_with(&self, prefix: &str) -> bool {
        match self {
            FieldStr::Utf8(t) => t.starts_with(prefix),
            FieldStr::Latin1(b) => prefix.is_ascii() && b.starts_with(prefix.as_bytes()),
            _ => self.to_str().starts_with(prefix),
        }
    }

    /// The text (lone surrogates become U+FFFD).
    pub fn to_str(&self) -> Cow<'a, str> {
        match *self {
            FieldStr::Utf8(t) => Cow::Borrowed(t),
            FieldStr::Latin1(b) => match std::str::from_utf8(b) {
                Ok(t) if b.is_ascii() => Cow::Borrowed(t),
                _ => Cow::Owned(b.iter().map(|&x| x as char).collect()),
            },
            FieldStr::Utf16(b) => {
                let units = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
                Cow::Owned(
                    char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect(),
                )
            }
            FieldStr::JsonEscaped(b) => {
                let mut quoted = Vec::with_capacity(b.len() + 2);
                quoted.push(b'"');
                quoted.extend_from_slice(b);
                quoted.push(b'"');
                Cow::Owned(serde_json::from_slice::<String>(&quoted).unwrap_or_default())
            }
        }
    }
}

/// A top-level field's value: routing fields are strings or numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue<'a> {
    /// A string.
    Str(FieldStr<'a>),
    /// A number.
    Num(f64),
}

impl<'a> FieldValue<'a> {
    /// The string, if it is one.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        match self {
            FieldValue::Str(s) => Some(s.to_str()),
            FieldValue::Num(_) => None,
        }
    }

    /// The number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::Num(n) => Some(*n),
            FieldValue::Str(_) => None,
        }
    }

    /// The number as i64, if it is an integral one.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_f64().filter(|n| n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_992.0).map(|n| n as i64)
    }

    /// True if this is the string `s`.
    pub fn eq_str(&self, s: &str) -> bool {
        matches!(self, FieldValue::Str(f) if f.eq_str(s))
    }
}

/// The shape of the message's top-level value.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum TopLevel<'a> {
    /// A plain object; the fields below are filled from it.
    Object,
    /// A bare string, such as `'ready'` or `'shutdown'`.
    String(FieldStr<'a>),
    /// Anything else.
    #[default]
    Other,
}

/// The routing fields found at the top level of one message. A field is `None`
/// when absent or when its value is neither a string nor a number.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Fields<'a> {
    /// Shape of the top-level value.
    pub top: TopLevel<'a>,
    /// `source` (`'_sio_adapter'` for the cluster adapter).
    pub source: Option<FieldValue<'a>>,
    /// `type`.
    pub type_: Option<FieldValue<'a>>,
    /// `cmd` (`NODE_*` internal messages).
    pub cmd: Option<FieldValue<'a>>,
    /// `uid`.
    pub uid: Option<FieldValue<'a>>,
    /// `requesterUid`.
    pub requester_uid: Option<FieldValue<'a>>,
    /// `act`.
    pub act: Option<FieldValue<'a>>,
    /// `ack`.
    pub ack: Option<FieldValue<'a>>,
    /// `seq`.
    pub seq: Option<FieldValue<'a>>,
    /// `key`.
    pub key: Option<FieldValue<'a>>,
    /// `nsp`.
    pub nsp: Option<FieldValue<'a>>,
}

impl<'a> Fields<'a> {
    fn slot(&mut self, name: &[u8]) -> Option<&mut Option<FieldValue<'a>>> {
        Some(match name {
            b"cmd" => &mut self.cmd,
            b"uid" => &mut self.uid,
            b"act" => &mut self.act,
            b"ack" => &mut self.ack,
            b"seq" => &mut self.seq,
            b"key" => &mut self.key,
            b"nsp" => &mut self.nsp,
            b"type" => &mut self.type_,
            b"source" => &mut self.source,
            b"requesterUid" => &mut self.requester_uid,
            _ => return None,
        })
    }

    /// True for Node's internal messages (`cmd` a string of more than five
    /// characters starting with `NODE_`), which Node never hands to
    /// `process.on('message')`.
    pub fn is_internal(&self) -> bool {
        match &self.cmd {
            Some(FieldValue::Str(s)) => s.starts_with("NODE_") && s.to_str().chars().count() > 5,
            _ => false,
        }
    }
}

/// Reads the routing fields of a payload in the given mode.
pub fn read_fields(payload: &[u8], mode: Mode) -> Result<Fields<'_>> {
    match mode {
        Mode::Advanced => read_fields_v8(payload),
        Mode::Json => read_fields_json(payload),
    }
}

/// Reads the routing fields of a V8 payload (header included).
pub fn read_fields_v8(payload: &[u8]) -> Result<Fields<'_>> {
    // The fast scanner handles the common shape (an object with one-byte keys)
    // and gives up on anything else; the careful reader then either handles
    // the rarer shape or reports the precise error.
    match fast::read(payload) {
        Some(f) => Ok(f),
        None => read_fields_v8_careful(payload),
    }
}

/// The careful reader behind [`read_fields_v8`], exposed for differential tests.
#[doc(hidden)]
pub fn read_fields_v8_careful(payload: &[u8]) -> Result<Fields<'_>> {
    let mut r = Reader::new(payload, None, DEFAULT_MAX_DEPTH);
    r.header()?;
    let mut f = Fields::default();
    match r.tag()? {
        tag::BEGIN_OBJECT => {}
        tag::ONE_BYTE => {
            let n = r.varint32()? as usize;
            f.top = TopLevel::String(FieldStr::Latin1(r.raw(n)?));
            return Ok(f);
        }
        tag::TWO_BYTE => {
            let n = r.varint32()? as usize;
            f.top = TopLevel::String(FieldStr::Utf16(r.raw(n)?));
            return Ok(f);
        }
        _ => return Ok(f),
    }
    f.top = TopLevel::Object;
    loop {
        let at = r.pos;
        let t = r.tag()?;
        let name: Option<Cow<'_, [u8]>> = match t {
            tag::END_OBJECT => return Ok(f),
            tag::ONE_BYTE => {
                let n = r.varint32()? as usize;
                Some(Cow::Borrowed(r.raw(n)?))
            }
            tag::TWO_BYTE | tag::UTF8 => {
                let n = r.varint32()? as usize;
                let b = r.raw(n)?;
                let s = if t == tag::UTF8 {
                    FieldStr::Utf8(std::str::from_utf8(b).unwrap_or(""))
                } else {
                    FieldStr::Utf16(b)
                };
                Some(Cow::Owned(s.to_str().into_owned().into_bytes()))
            }
            tag::INT32 | tag::UINT32 => {
                r.varint()?;
                None
            }
            tag::DOUBLE => {
                r.raw(8)?;
                None
            }
            _ => return Err(Error::Malformed { what: "object key is not a string or number", offset: at }),
        };
        let slot = match &name {
            Some(n) if n.len() <= 12 => f.slot(n),
            _ => None,
        };
        match slot {
            Some(slot) => *slot = scalar(&mut r)?,
            None => r.skip(1)?,
        }
    }
}

fn scalar<'a>(r: &mut Reader<'a>) -> Result<Option<FieldValue<'a>>> {
    let save = r.pos;
    Ok(Some(match r.tag()? {
        tag::ONE_BYTE => {
            let n = r.varint32()? as usize;
            FieldValue::Str(FieldStr::Latin1(r.raw(n)?))
        }
        tag::TWO_BYTE => {
            let n = r.varint32()? as usize;
            FieldValue::Str(FieldStr::Utf16(r.raw(n)?))
        }
        tag::UTF8 => {
            let n = r.varint32()? as usize;
            let b = r.raw(n)?;
            FieldValue::Str(FieldStr::Utf8(
                std::str::from_utf8(b).map_err(|_| Error::InvalidUtf8 { offset: save })?,
            ))
        }
        tag::INT32 => FieldValue::Num(unzigzag(r.varint32()?) as f64),
        tag::UINT32 => FieldValue::Num(r.varint32()? as f64),
        tag::DOUBLE => FieldValue::Num(r.double()?),
        _ => {
            r.pos = save;
            r.skip(1)?;
            return Ok(None);
        }
    }))
}

fn json_err(what: &str, at: usize) -> Error {
    Error::Json(format!("{what} at byte {at}"))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// Scans a JSON string starting at the opening quote; returns (end after the
/// closing quote, has escapes).
fn json_string_end(b: &[u8], start: usize) -> Result<(usize, bool)> {
    let mut i = start + 1;
    let mut escaped = false;
    while i < b.len() {
        match b[i] {
            b'"' => return Ok((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
    Err(json_err("unterminated string", start))
}

fn skip_json_value(b: &[u8], start: usize) -> Result<usize> {
    let mut i = start;
    match b.get(i) {
        Some(b'"') => Ok(json_string_end(b, i)?.0),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = json_string_end(b, i)?.0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Err(json_err("unterminated container", start))
        }
        Some(_) => {
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                i += 1;
            }
            if i == start {
                return Err(json_err("expected a value", start));
            }
            Ok(i)
        }
        None => Err(json_err("expected a value", start)),
    }
}

fn json_str(b: &[u8], start: usize, end: usize, escaped: bool) -> Result<FieldStr<'_>> {
    let inner = &b[start + 1..end - 1];
    if escaped {
        Ok(FieldStr::JsonEscaped(inner))
    } else {
        std::str::from_utf8(inner).map(FieldStr::Utf8).map_err(|_| Error::InvalidUtf8 { offset: start })
    }
}

/// Reads the routing fields of one JSON line (without its newline). This is a
/// scanner, not a validator: a line it accepts may still fail to decode.
pub fn read_fields_json(line: &[u8]) -> Result<Fields<'_>> {
    let b = line;
    let mut f = Fields::default();
    let mut i = skip_ws(b, 0);
    match b.get(i) {
        Some(b'{') => {}
        Some(b'"') => {
            let (end, esc) = json_string_end(b, i)?;
            f.top = TopLevel::String(json_str(b, i, end, esc)?);
            return Ok(f);
        }
        Some(_) => return Ok(f),
        None => return Err(json_err("empty message", 0)),
    }
    f.top = TopLevel::Object;
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'}') => return Ok(f),
            Some(b'"') => {}
            _ => return Err(json_err("expected a key", i)),
        }
        let (kend, kesc) = json_string_end(b, i)?;
        let name: Cow<'_, [u8]> = if kesc {
            Cow::Owned(json_str(b, i, kend, true)?.to_str().into_owned().into_bytes())
        } else {
            Cow::Borrowed(&b[i + 1..kend - 1])
        };
        i = skip_ws(b, kend);
        if b.get(i) != Some(&b':') {
            return Err(json_err("expected ':'", i));
        }
        i = skip_ws(b, i + 1);
        let vstart = i;
        let vend = skip_json_value(b, i)?;
        if let Some(slot) = if name.len() <= 12 { f.slot(&name) } else { None } {
            *slot = match b[vstart] {
                b'"' => {
                    let (_, esc) = json_string_end(b, vstart)?;
                    Some(FieldValue::Str(json_str(b, vstart, vend, esc)?))
                }
                b'-' | b'0'..=b'9' => std::str::from_utf8(&b[vstart..vend])
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .map(FieldValue::Num),
                _ => None,
            };
        }
        i = skip_ws(b, vend);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(f),
            _ => return Err(json_err("expected ',' or '}'", i)),
        }
    }
}

/// A scanner over raw offsets that returns `None` on anything unusual instead
/// of building errors: the routing hot path (millions of frames per second)
/// pays for no `Result` plumbing.
mod fast {
    use super::{FieldStr, FieldValue, Fields, TopLevel};
    use crate::v8::{tag, unzigzag, DEFAULT_MAX_DEPTH, MAX_VERSION, MIN_VERSION};

    #[inline(always)]
    fn vi(d: &[u8], p: &mut usize) -> Option<u64> {
        let b = *d.get(*p)?;
        *p += 1;
        if b < 0x80 {
            return Some(b as u64);
        }
        let mut v = (b & 0x7F) as u64;
        let mut shift = 7;
        loop {
            let b = *d.get(*p)?;
            *p += 1;
            if shift > 35 {
                return None;
            }
            v |= ((b & 0x7F) as u64) << shift;
            shift += 7;
            if b < 0x80 {
                return Some(v);
            }
        }
    }

    #[inline(always)]
    fn adv(d: &[u8], p: &mut usize, n: u64) -> Option<()> {
        let end = p.checked_add(usize::try_from(n).ok()?)?;
        if end > d.len() {
            return None;
        }
        *p = end;
        Some(())
    }

    #[inline(always)]
    fn tg(d: &[u8], p: &mut usize) -> Option<u8> {
        loop {
            let t = *d.get(*p)?;
            *p += 1;
            match t {
                tag::PADDING => {}
                tag::VERIFY_COUNT => {
                    vi(d, p)?;
                }
                _ => return Some(t),
            }
        }
    }

    /// Skips one value; strings and small integers (most values) without a call.
    #[inline(always)]
    fn skip(d: &[u8], p: &mut usize, depth: usize) -> Option<()> {
        let t = tg(d, p)?;
        match t {
            tag::ONE_BYTE => {
                let n = vi(d, p)?;
                adv(d, p, n)
            }
            tag::INT32 => vi(d, p).map(drop),
            _ => skip_t(d, p, t, depth),
        }
    }

    fn skip_t(d: &[u8], p: &mut usize, t: u8, depth: usize) -> Option<()> {
        if depth > DEFAULT_MAX_DEPTH {
            return None;
        }
        match t {
            tag::UNDEFINED | tag::NULL | tag::TRUE | tag::FALSE | tag::TRUE_OBJECT | tag::FALSE_OBJECT => {}
            tag::INT32 | tag::UINT32 | tag::OBJREF => {
                vi(d, p)?;
            }
            tag::DOUBLE | tag::DATE | tag::NUMBER_OBJECT => adv(d, p, 8)?,
            tag::ONE_BYTE | tag::TWO_BYTE | tag::UTF8 | tag::ARRAY_BUFFER => {
                let n = vi(d, p)?;
                adv(d, p, n)?
            }
            tag::BIGINT | tag::BIGINT_OBJECT => {
                let n = vi(d, p)? >> 1;
                adv(d, p, n)?
            }
            tag::STRING_OBJECT => skip(d, p, depth + 1)?,
            tag::REGEXP => {
                skip(d, p, depth + 1)?;
                vi(d, p)?;
            }
            tag::BEGIN_OBJECT => {
                props(d, p, tag::END_OBJECT, depth)?;
                vi(d, p)?;
            }
            tag::BEGIN_SPARSE => {
                vi(d, p)?;
                props(d, p, tag::END_SPARSE, depth)?;
                vi(d, p)?;
                vi(d, p)?;
            }
            tag::BEGIN_DENSE => {
                let n = vi(d, p)?;
                for _ in 0..n {
                    let t = tg(d, p)?;
                    if t != tag::HOLE {
                        skip_t(d, p, t, depth + 1)?;
                    }
                }
                props(d, p, tag::END_DENSE, depth)?;
                vi(d, p)?;
                vi(d, p)?;
            }
            tag::BEGIN_MAP | tag::BEGIN_SET => {
                let end = if t == tag::BEGIN_MAP { tag::END_MAP } else { tag::END_SET };
                loop {
                    let t = tg(d, p)?;
                    if t == end {
                        break;
                    }
                    skip_t(d, p, t, depth + 1)?;
                }
                vi(d, p)?;
            }
            tag::HOST => match vi(d, p)? {
                0 => {
                    vi(d, p)?;
                    let n = vi(d, p)?;
                    adv(d, p, n)?
                }
                1 => skip(d, p, depth + 1)?,
                _ => return None,
            },
            tag::ERROR => loop {
                let st = *d.get(*p)?;
                *p += 1;
                match st {
                    b'E' | b'R' | b'F' | b'S' | b'T' | b'U' => {}
                    b'm' | b's' | b'c' => skip(d, p, depth + 1)?,
                    b'.' => break,
                    _ => return None,
                }
            },
            _ => return None,
        }
        Some(())
    }

    fn props(d: &[u8], p: &mut usize, end: u8, depth: usize) -> Option<()> {
        loop {
            let t = tg(d, p)?;
            if t == end {
                return Some(());
            }
            if t == tag::ONE_BYTE {
                let n = vi(d, p)?;
                adv(d, p, n)?;
            } else {
                skip_t(d, p, t, depth + 1)?;
            }
            skip(d, p, depth + 1)?;
        }
    }

    fn scalar<'a>(d: &'a [u8], p: &mut usize) -> Option<Option<FieldValue<'a>>> {
        let t = tg(d, p)?;
        Some(Some(match t {
            tag::ONE_BYTE | tag::TWO_BYTE => {
                let n = vi(d, p)?;
                let start = *p;
                adv(d, p, n)?;
                let b = &d[start..*p];
                FieldValue::Str(if t == tag::ONE_BYTE { FieldStr::Latin1(b) } else { FieldStr::Utf16(b) })
            }
            tag::INT32 => FieldValue::Num(unzigzag(u32::try_from(vi(d, p)?).ok()?) as f64),
            tag::UINT32 => FieldValue::Num(u32::try_from(vi(d, p)?).ok()? as f64),
            tag::DOUBLE => {
                let start = *p;
                adv(d, p, 8)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(&d[start..*p]);
                FieldValue::Num(f64::from_le_bytes(b))
            }
            // UTF-8 strings need validation: leave them to the careful reader.
            tag::UTF8 => return None,
            _ => {
                skip_t(d, p, t, 1)?;
                return Some(None);
            }
        }))
    }

    pub(super) fn read(d: &[u8]) -> Option<Fields<'_>> {
        if *d.first()? != tag::VERSION {
            return None;
        }
        let mut p = 1;
        let v = vi(d, &mut p)?;
        if !(MIN_VERSION as u64..=MAX_VERSION as u64).contains(&v) || tg(d, &mut p)? != tag::BEGIN_OBJECT {
            return None;
        }
        let mut f = Fields { top: TopLevel::Object, ..Fields::default() };
        loop {
            match tg(d, &mut p)? {
                tag::END_OBJECT => {
                    vi(d, &mut p)?;
                    return Some(f);
                }
                tag::ONE_BYTE => {
                    let n = vi(d, &mut p)?;
                    let start = p;
                    adv(d, &mut p, n)?;
                    let name = &d[start..p];
                    match if name.len() <= 12 { f.slot(name) } else { None } {
                        Some(slot) => *slot = scalar(d, &mut p)?,
                        None => skip(d, &mut p, 1)?,
                    }
                }
                tag::INT32 | tag::UINT32 => {
                    vi(d, &mut p)?;
                    skip(d, &mut p, 1)?;
                }
                tag::DOUBLE => {
                    adv(d, &mut p, 8)?;
                    skip(d, &mut p, 1)?;
                }
                _ => return None,
            }
        }
    }
}
