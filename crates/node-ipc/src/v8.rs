//! The subset of V8's ValueSerializer format that Node's `advanced`
//! serialization produces for plain data, plus Node's host-object encoding of
//! Buffers and TypedArrays.
//!
//! The encoder writes exactly the bytes Node 20 writes for the same JS value:
//! Node kills a child on a malformed frame, so there is no "close enough".

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::value::{ErrorKind, JsBigInt, JsError, JsString, Props, StrForm, Value, ViewKind};

/// The version Node 20 (V8 11.3) writes.
pub const DEFAULT_VERSION: u32 = 15;
/// Oldest version accepted (Node 20 reads 13–15).
pub const MIN_VERSION: u32 = 13;
/// Newest version accepted: 16 (V8 13.x and later, Deno 2.x) only stops
/// truncating ArrayBuffer lengths and offsets to 32 bits, which are varints
/// either way, so a version-16 payload reads like a version-15 one.
pub const MAX_VERSION: u32 = 16;
/// Default nesting cap.
pub const DEFAULT_MAX_DEPTH: usize = 128;

pub(crate) mod tag {
    pub const VERSION: u8 = 0xFF;
    pub const PADDING: u8 = 0x00;
    pub const VERIFY_COUNT: u8 = b'?';
    pub const HOLE: u8 = b'-';
    pub const UNDEFINED: u8 = b'_';
    pub const NULL: u8 = b'0';
    pub const TRUE: u8 = b'T';
    pub const FALSE: u8 = b'F';
    pub const INT32: u8 = b'I';
    pub const UINT32: u8 = b'U';
    pub const DOUBLE: u8 = b'N';
    pub const BIGINT: u8 = b'Z';
    pub const UTF8: u8 = b'S';
    pub const ONE_BYTE: u8 = b'"';
    pub const TWO_BYTE: u8 = b'c';
    pub const OBJREF: u8 = b'^';
    pub const BEGIN_OBJECT: u8 = b'o';
    pub const END_OBJECT: u8 = b'{';
    pub const BEGIN_SPARSE: u8 = b'a';
    pub const END_SPARSE: u8 = b'@';
    pub const BEGIN_DENSE: u8 = b'A';
    pub const END_DENSE: u8 = b'$';
    pub const DATE: u8 = b'D';
    pub const TRUE_OBJECT: u8 = b'y';
    pub const FALSE_OBJECT: u8 = b'x';
    pub const NUMBER_OBJECT: u8 = b'n';
    pub const BIGINT_OBJECT: u8 = b'z';
    pub const STRING_OBJECT: u8 = b's';
    pub const REGEXP: u8 = b'R';
    pub const BEGIN_MAP: u8 = b';';
    pub const END_MAP: u8 = b':';
    pub const BEGIN_SET: u8 = b'\'';
    pub const END_SET: u8 = b',';
    pub const ARRAY_BUFFER: u8 = b'B';
    pub const HOST: u8 = b'\\';
    pub const ERROR: u8 = b'r';
}

mod etag {
    pub const EVAL: u8 = b'E';
    pub const RANGE: u8 = b'R';
    pub const REFERENCE: u8 = b'F';
    pub const SYNTAX: u8 = b'S';
    pub const TYPE: u8 = b'T';
    pub const URI: u8 = b'U';
    pub const MESSAGE: u8 = b'm';
    pub const CAUSE: u8 = b'c';
    pub const STACK: u8 = b's';
    pub const END: u8 = b'.';
}

// Node's ChildProcessSerializer prefix inside a host object.
const HOST_ARRAY_BUFFER_VIEW: u32 = 0;
const HOST_OTHER: u32 = 1;

/// Options for [`decode_with`].
#[derive(Clone, Debug)]
pub struct DecodeOptions {
    /// Nesting cap (default 128).
    pub max_depth: usize,
    /// Keep back-references as [`Value::Ref`] instead of copying the referenced
    /// object; the result then re-encodes byte for byte.
    pub keep_refs: bool,
    /// Cap on the number of values produced when back-references are copied
    /// (defends against "billion laughs" payloads). `None`: 64 per input byte,
    /// at least 4096.
    pub max_nodes: Option<usize>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_depth: DEFAULT_MAX_DEPTH, keep_refs: false, max_nodes: None }
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let b = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn zigzag(n: i32) -> u32 {
    ((n << 1) ^ (n >> 31)) as u32
}

/// Encodes `value` as a complete payload (`ff 0f` header + value), as Node's
/// `v8.serialize` / advanced IPC would.
pub fn encode(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    encode_into(value, DEFAULT_VERSION, &mut out)?;
    Ok(out)
}

/// Appends a payload written with header `version` to `out`. On error `out` is
/// left as it was.
///
/// Padding before two-byte strings depends on the parity of the offset, which
/// V8 counts from the start of its buffer; Node's IPC puts an (even) 4-byte
/// length before the payload, so parity is taken relative to where the payload
/// starts in `out`.
pub fn encode_into(value: &Value, version: u32, out: &mut Vec<u8>) -> Result<()> {
    if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
        return Err(Error::UnsupportedVersion(version));
    }
    let start = out.len();
    let mut enc = Encoder { out, start, next_id: 0, max_depth: DEFAULT_MAX_DEPTH };
    enc.out.push(tag::VERSION);
    put_varint(enc.out, version as u64);
    let r = enc.value(value, 0);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    next_id: u32,
    max_depth: usize,
}

/// Whether `key` is a canonical array index, which V8 enumerates (and writes)
/// as a number.
fn array_index(key: &str) -> Option<u32> {
    let b = key.as_bytes();
    if b.is_empty() || b.len() > 10 || (b.len() > 1 && b[0] == b'0') || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = key.parse().ok()?;
    // 2^32 - 1 is not an index (it is the maximum length).
    if n < u32::MAX as u64 {
        Some(n as u32)
    } else {
        None
    }
}

impl Encoder<'_> {
    fn tag(&mut self, t: u8) {
        self.out.push(t);
    }

    fn varint(&mut self, n: u64) {
        put_varint(self.out, n);
    }

    fn double(&mut self, d: f64) {
        self.out.extend_from_slice(&d.to_le_bytes());
    }

    fn new_id(&mut self) {
        self.next_id = self.next_id.wrapping_add(1);
    }

    fn string(&mut self, s: &JsString) {
        match s.form() {
            // ASCII first: one pass over the bytes, the common case (keys, commands, ids).
            StrForm::Auto if s.as_str().is_ascii() => {
                let text = s.as_str();
                self.tag(tag::ONE_BYTE);
                self.varint(text.len() as u64);
                self.out.extend_from_slice(text.as_bytes());
            }
            StrForm::Auto if s.as_str().chars().all(|c| (c as u32) <= 0xFF) => {
                let text = s.as_str();
                self.tag(tag::ONE_BYTE);
                let n = text.chars().count();
                self.varint(n as u64);
                self.out.extend(text.chars().map(|c| c as u8));
            }
            StrForm::Wtf16(units) => {
                let units = units.clone();
                self.two_byte(units.iter().copied(), units.len());
            }
            _ => {
                let n = s.as_str().encode_utf16().count();
                self.two_byte(s.as_str().encode_utf16(), n);
            }
        }
    }

    fn two_byte(&mut self, units: impl Iterator<Item = u16>, count: usize) {
        let byte_len = (count * 2) as u64;
        // V8 aligns the UTF-16 data on an even offset with a padding tag.
        let pos = self.out.len() - self.start;
        if (pos + 1 + varint_len(byte_len)) & 1 == 1 {
            self.tag(tag::PADDING);
        }
        self.tag(tag::TWO_BYTE);
        self.varint(byte_len);
        self.out.reserve(count * 2);
        for u in units {
            self.out.extend_from_slice(&u.to_le_bytes());
        }
    }

    fn key(&mut self, k: &JsString) {
        if let (StrForm::Auto, Some(i)) = (k.form(), array_index(k.as_str())) {
            if i <= i32::MAX as u32 {
                self.tag(tag::INT32);
                self.varint(zigzag(i as i32) as u64);
            } else {
                self.tag(tag::DOUBLE);
                self.double(i as f64);
            }
        } else {
            self.string(k);
        }
    }

    fn props(&mut self, props: &[(JsString, Value)], depth: usize) -> Result<()> {
        for (k, v) in props {
            self.key(k);
            if matches!(v, Value::Hole) {
                return Err(Error::NotEncodable("hole outside an array"));
            }
            self.value(v, depth + 1)?;
        }
        Ok(())
    }

    fn bigint(&mut self, b: &JsBigInt) -> Result<()> {
        let len = b.magnitude.len() as u64;
        if len > (1 << 30) {
            return Err(Error::NotEncodable("BigInt too large"));
        }
        self.varint((len << 1) | b.negative as u64);
        self.out.extend_from_slice(&b.magnitude);
        Ok(())
    }

    fn value(&mut self, v: &Value, depth: usize) -> Result<()> {
        if depth > self.max_depth {
            return Err(Error::TooDeep { max: self.max_depth });
        }
        match v {
            Value::Undefined => self.tag(tag::UNDEFINED),
            Value::Null => self.tag(tag::NULL),
            Value::Bool(true) => self.tag(tag::TRUE),
            Value::Bool(false) => self.tag(tag::FALSE),
            Value::Int(i) => {
                self.tag(tag::INT32);
                self.varint(zigzag(*i) as u64);
            }
            Value::Double(d) => {
                self.tag(tag::DOUBLE);
                self.double(*d);
            }
            Value::BigInt(b) => {
                self.tag(tag::BIGINT);
                self.bigint(b)?;
            }
            Value::String(s) => self.string(s),
            Value::Object(props) => {
                self.new_id();
                self.tag(tag::BEGIN_OBJECT);
                self.props(props, depth)?;
                self.tag(tag::END_OBJECT);
                self.varint(props.len() as u64);
            }
            Value::Array(elements) => self.dense(elements, &[], depth)?,
            Value::ArrayWithProps { elements, props } => self.dense(elements, props, depth)?,
            Value::SparseArray { length, props } => {
                self.new_id();
                self.tag(tag::BEGIN_SPARSE);
                self.varint(*length as u64);
                self.props(props, depth)?;
                self.tag(tag::END_SPARSE);
                self.varint(props.len() as u64);
                self.varint(*length as u64);
            }
            Value::Hole => return Err(Error::NotEncodable("hole outside an array")),
            Value::Date(ms) => {
                self.new_id();
                self.tag(tag::DATE);
                self.double(*ms);
            }
            Value::RegExp { source, flags } => {
                self.new_id();
                self.tag(tag::REGEXP);
                self.string(source);
                self.varint(*flags as u64);
            }
            Value::Map(entries) => {
                self.new_id();
                self.tag(tag::BEGIN_MAP);
                for (k, val) in entries {
                    self.value(k, depth + 1)?;
                    self.value(val, depth + 1)?;
                }
                self.tag(tag::END_MAP);
                self.varint(entries.len() as u64 * 2);
            }
            Value::Set(items) => {
                self.new_id();
                self.tag(tag::BEGIN_SET);
                for item in items {
                    self.value(item, depth + 1)?;
                }
                self.tag(tag::END_SET);
                self.varint(items.len() as u64);
            }
            Value::Buffer(bytes) => self.host_view(ViewKind::Buffer, bytes)?,
            Value::TypedArray { kind, bytes } => self.host_view(*kind, bytes)?,
            Value::ArrayBuffer(bytes) => {
                self.new_id();
                self.tag(tag::ARRAY_BUFFER);
                self.varint(bytes.len() as u64);
                self.out.extend_from_slice(bytes);
            }
            Value::Error(e) => {
                self.new_id();
                self.tag(tag::ERROR);
                let proto = match e.kind {
                    ErrorKind::Error => None,
                    ErrorKind::EvalError => Some(etag::EVAL),
                    ErrorKind::RangeError => Some(etag::RANGE),
                    ErrorKind::ReferenceError => Some(etag::REFERENCE),
                    ErrorKind::SyntaxError => Some(etag::SYNTAX),
                    ErrorKind::TypeError => Some(etag::TYPE),
                    ErrorKind::UriError => Some(etag::URI),
                };
                if let Some(p) = proto {
                    self.varint(p as u64);
                }
                if let Some(m) = &e.message {
                    self.varint(etag::MESSAGE as u64);
                    self.string(m);
                }
                if let Some(c) = &e.cause {
                    self.varint(etag::CAUSE as u64);
                    self.value(c, depth + 1)?;
                }
                if let Some(s) = &e.stack {
                    self.varint(etag::STACK as u64);
                    self.string(s);
                }
                self.varint(etag::END as u64);
            }
            Value::Wrapper(inner) => {
                self.new_id();
                match &**inner {
                    Value::Bool(true) => self.tag(tag::TRUE_OBJECT),
                    Value::Bool(false) => self.tag(tag::FALSE_OBJECT),
                    Value::Double(d) => {
                        self.tag(tag::NUMBER_OBJECT);
                        self.double(*d);
                    }
                    Value::Int(i) => {
                        self.tag(tag::NUMBER_OBJECT);
                        self.double(*i as f64);
                    }
                    Value::BigInt(b) => {
                        self.tag(tag::BIGINT_OBJECT);
                        self.bigint(b)?;
                    }
                    Value::String(s) => {
                        self.tag(tag::STRING_OBJECT);
                        self.string(s);
                    }
                    _ => return Err(Error::NotEncodable("wrapper of a non-primitive")),
                }
            }
            Value::HostObject(inner) => {
                if !matches!(**inner, Value::Object(_)) {
                    return Err(Error::NotEncodable("host object must wrap a plain object"));
                }
                self.new_id();
                self.tag(tag::HOST);
                self.varint(HOST_OTHER as u64);
                self.value(inner, depth + 1)?;
            }
            Value::Ref(id) => {
                if *id >= self.next_id {
                    return Err(Error::NotEncodable("back-reference to an object not yet written"));
                }
                self.tag(tag::OBJREF);
                self.varint(*id as u64);
            }
        }
        Ok(())
    }

    fn dense(&mut self, elements: &[Value], props: &[(JsString, Value)], depth: usize) -> Result<()> {
        self.new_id();
        self.tag(tag::BEGIN_DENSE);
        self.varint(elements.len() as u64);
        for e in elements {
            if matches!(e, Value::Hole) {
                self.tag(tag::HOLE);
            } else {
                self.value(e, depth + 1)?;
            }
        }
        self.props(props, depth)?;
        self.tag(tag::END_DENSE);
        self.varint(props.len() as u64);
        self.varint(elements.len() as u64);
        Ok(())
    }

    fn host_view(&mut self, kind: ViewKind, bytes: &Bytes) -> Result<()> {
        if !bytes.len().is_multiple_of(kind.element_size()) {
            return Err(Error::NotEncodable("typed array length is not a multiple of its element size"));
        }
        if bytes.len() > u32::MAX as usize {
            return Err(Error::NotEncodable("view longer than 4 GiB"));
        }
        self.new_id();
        self.tag(tag::HOST);
        self.varint(HOST_ARRAY_BUFFER_VIEW as u64);
        self.varint(kind.index() as u64);
        self.varint(bytes.len() as u64);
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Decodes a payload (header + value) with default options.
pub fn decode(payload: &[u8]) -> Result<Value> {
    decode_with(payload, &DecodeOptions::default())
}

/// Decodes a payload (header + value).
pub fn decode_with(payload: &[u8], opts: &DecodeOptions) -> Result<Value> {
    decode_inner(payload, None, opts)
}

/// Decodes a payload held in [`Bytes`]; Buffers and TypedArrays in the result
/// share its memory instead of being copied.
pub fn decode_bytes(payload: &Bytes, opts: &DecodeOptions) -> Result<Value> {
    decode_inner(payload, Some(payload), opts)
}

/// Reads the version header; returns the version and the offset of the value.
pub fn read_header(payload: &[u8]) -> Result<(u32, usize)> {
    let mut r = Reader::new(payload, None, DEFAULT_MAX_DEPTH);
    let v = r.header()?;
    Ok((v, r.pos))
}

fn decode_inner(payload: &[u8], owner: Option<&Bytes>, opts: &DecodeOptions) -> Result<Value> {
    let mut r = Reader::new(payload, owner, opts.max_depth);
    r.keep_refs = opts.keep_refs;
    r.header()?;
    let v = r.value(0)?;
    if !r.saw_ref || opts.keep_refs {
        return Ok(v);
    }
    let max_nodes = opts.max_nodes.unwrap_or_else(|| (payload.len().saturating_mul(64)).max(4096));
    let mut table = Vec::new();
    collect_ids(&v, &mut table);
    let mut res =
        Resolver { table, active: Vec::new(), budget: max_nodes, max_nodes, max_depth: opts.max_depth };
    let mut next = 0u32;
    res.resolve(&v, &mut next, 0)
}

pub(crate) struct Reader<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
    owner: Option<&'a Bytes>,
    next_id: u32,
    max_depth: usize,
    keep_refs: bool,
    saw_ref: bool,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8], owner: Option<&'a Bytes>, max_depth: usize) -> Self {
        Reader { data, pos: 0, owner, next_id: 0, max_depth, keep_refs: true, saw_ref: false }
    }

    fn truncated(&self) -> Error {
        Error::Truncated { offset: self.pos }
    }

    fn malformed(&self, what: &'static str) -> Error {
        Error::Malformed { what, offset: self.pos }
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8> {
        let b = *self.data.get(self.pos).ok_or_else(|| self.truncated())?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64> {
        if let Some(&b) = self.data.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(b as u64);
            }
        }
        self.varint_slow()
    }

    fn varint_slow(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift >= 64 {
                return Err(self.malformed("varint too long"));
            }
            v |= ((b & 0x7F) as u64) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
    }

    /// V8 reads a u32 varint and silently drops higher bits; we refuse them so
    /// that lengths can't wrap.
    pub(crate) fn varint32(&mut self) -> Result<u32> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| self.malformed("varint exceeds 32 bits"))
    }

    pub(crate) fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        let end =
            self.pos.checked_add(n).filter(|e| *e <= self.data.len()).ok_or_else(|| self.truncated())?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes> {
        let start = self.pos;
        let s = self.raw(n)?;
        Ok(match self.owner {
            Some(owner) => owner.slice(start..start + n),
            None => Bytes::copy_from_slice(s),
        })
    }

    pub(crate) fn double(&mut self) -> Result<f64> {
        let s = self.raw(8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(s);
        Ok(f64::from_le_bytes(b))
    }

    pub(crate) fn header(&mut self) -> Result<u32> {
        match self.data.first() {
            Some(&tag::VERSION) => {
                self.pos = 1;
                let v = self.varint()?;
                if (MIN_VERSION as u64..=MAX_VERSION as u64).contains(&v) {
                    Ok(v as u32)
                } else {
                    Err(Error::UnsupportedVersion(u32::try_from(v).unwrap_or(u32::MAX)))
                }
            }
            Some(_) => Err(Error::UnsupportedVersion(0)),
            None => Err(self.truncated()),
        }
    }

    /// The next tag, skipping padding (and V8's legacy object-count checks).
    #[inline]
    pub(crate) fn tag(&mut self) -> Result<u8> {
        if let Some(&t) = self.data.get(self.pos) {
            if t != tag::PADDING && t != tag::VERIFY_COUNT {
                self.pos += 1;
                return Ok(t);
            }
        }
        loop {
            let t = self.u8()?;
            match t {
                tag::PADDING => continue,
                tag::VERIFY_COUNT => {
                    self.varint()?;
                }
                _ => return Ok(t),
            }
        }
    }

    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    fn one_byte(&mut self) -> Result<JsString> {
        let n = self.varint32()? as usize;
        let s = self.raw(n)?;
        let text = match std::str::from_utf8(s) {
            Ok(t) if s.is_ascii() => t.to_owned(),
            _ => s.iter().map(|&b| b as char).collect(),
        };
        Ok(JsString::new(text))
    }

    fn two_byte_str(&mut self) -> Result<JsString> {
        let at = self.pos;
        let n = self.varint32()? as usize;
        if n % 2 == 1 {
            return Err(Error::InvalidUtf16 { offset: at });
        }
        let s = self.raw(n)?;
        let units: Vec<u16> = s.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        Ok(JsString::from_utf16(&units))
    }

    fn utf8_str(&mut self) -> Result<JsString> {
        let at = self.pos;
        let n = self.varint32()? as usize;
        let s = self.raw(n)?;
        let t = std::str::from_utf8(s).map_err(|_| Error::InvalidUtf8 { offset: at })?;
        Ok(JsString::new(t))
    }

    /// A value that must be a string (RegExp source, Error message/stack).
    fn string_value(&mut self) -> Result<JsString> {
        let at = self.pos;
        match self.tag()? {
            tag::ONE_BYTE => self.one_byte(),
            tag::TWO_BYTE => self.two_byte_str(),
            tag::UTF8 => self.utf8_str(),
            _ => Err(Error::Malformed { what: "expected a string", offset: at }),
        }
    }

    /// An object key: V8 allows only strings and numbers.
    fn key(&mut self, t: u8, at: usize) -> Result<JsString> {
        match t {
            tag::ONE_BYTE => self.one_byte(),
            tag::TWO_BYTE => self.two_byte_str(),
            tag::UTF8 => self.utf8_str(),
            tag::INT32 => {
                let z = self.varint32()?;
                Ok(JsString::new(unzigzag(z).to_string()))
            }
            tag::UINT32 => Ok(JsString::new(self.varint32()?.to_string())),
            tag::DOUBLE => Ok(JsString::new(crate::json::js_number_string(self.double()?))),
            _ => Err(Error::Malformed { what: "object key is not a string or number", offset: at }),
        }
    }

    fn props(&mut self, end: u8, depth: usize) -> Result<Props> {
        let mut props = Vec::new();
        loop {
            let at = self.pos;
            let t = self.tag()?;
            if t == end {
                return Ok(props);
            }
            let k = self.key(t, at)?;
            let v = self.value(depth + 1)?;
            props.push((k, v));
        }
    }

    fn expect_count(&mut self, n: usize, what: &'static str) -> Result<()> {
        if self.varint()? != n as u64 {
            return Err(self.malformed(what));
        }
        Ok(())
    }

    fn bigint(&mut self) -> Result<JsBigInt> {
        let bitfield = self.varint()?;
        let len = usize::try_from(bitfield >> 1).map_err(|_| self.truncated())?;
        let magnitude = self.raw(len)?.to_vec();
        Ok(JsBigInt { negative: bitfield & 1 == 1, magnitude })
    }

    pub(crate) fn value(&mut self, depth: usize) -> Result<Value> {
        let at = self.pos;
        let t = self.tag()?;
        self.value_tagged(t, at, depth)
    }

    fn value_tagged(&mut self, t: u8, at: usize, depth: usize) -> Result<Value> {
        if depth > self.max_depth {
            return Err(Error::TooDeep { max: self.max_depth });
        }
        Ok(match t {
            tag::UNDEFINED => Value::Undefined,
            tag::NULL => Value::Null,
            tag::TRUE => Value::Bool(true),
            tag::FALSE => Value::Bool(false),
            tag::INT32 => Value::Int(unzigzag(self.varint32()?)),
            tag::UINT32 => Value::number(self.varint32()? as f64),
            tag::DOUBLE => Value::Double(self.double()?),
            tag::BIGINT => Value::BigInt(self.bigint()?),
            tag::ONE_BYTE => Value::String(self.one_byte()?),
            tag::TWO_BYTE => Value::String(self.two_byte_str()?),
            tag::UTF8 => Value::String(self.utf8_str()?),
            tag::OBJREF => {
                let id = self.varint32()?;
                if id >= self.next_id {
                    return Err(Error::Malformed { what: "back-reference to an unknown object", offset: at });
                }
                self.saw_ref = true;
                Value::Ref(id)
            }
            tag::BEGIN_OBJECT => {
                self.id();
                let props = self.props(tag::END_OBJECT, depth)?;
                self.expect_count(props.len(), "object property count mismatch")?;
                Value::Object(props)
            }
            tag::BEGIN_DENSE => {
                self.id();
                let len = self.varint32()? as usize;
                // Every element takes at least one byte: cap the allocation by what is left.
                let mut elements = Vec::with_capacity(len.min(self.data.len() - self.pos));
                for _ in 0..len {
                    let at = self.pos;
                    let t = self.tag()?;
                    if t == tag::HOLE {
                        elements.push(Value::Hole);
                    } else {
                        elements.push(self.value_tagged(t, at, depth + 1)?);
                    }
                }
                let props = self.props(tag::END_DENSE, depth)?;
                self.expect_count(props.len(), "dense array property count mismatch")?;
                self.expect_count(len, "dense array length mismatch")?;
                if props.is_empty() {
                    Value::Array(elements)
                } else {
                    Value::ArrayWithProps { elements, props }
                }
            }
            tag::BEGIN_SPARSE => {
                self.id();
                let length = self.varint32()?;
                let props = self.props(tag::END_SPARSE, depth)?;
                self.expect_count(props.len(), "sparse array property count mismatch")?;
                self.expect_count(length as usize, "sparse array length mismatch")?;
                Value::SparseArray { length, props }
            }
            tag::DATE => {
                self.id();
                Value::Date(self.double()?)
            }
            tag::REGEXP => {
                self.id();
                let source = self.string_value()?;
                let flags = self.varint32()?;
                Value::RegExp { source, flags }
            }
            tag::BEGIN_MAP => {
                self.id();
                let mut entries = Vec::new();
                loop {
                    let at = self.pos;
                    let t = self.tag()?;
                    if t == tag::END_MAP {
                        break;
                    }
                    let k = self.value_tagged(t, at, depth + 1)?;
                    let v = self.value(depth + 1)?;
                    entries.push((k, v));
                }
                self.expect_count(entries.len() * 2, "map length mismatch")?;
                Value::Map(entries)
            }
            tag::BEGIN_SET => {
                self.id();
                let mut items = Vec::new();
                loop {
                    let at = self.pos;
                    let t = self.tag()?;
                    if t == tag::END_SET {
                        break;
                    }
                    items.push(self.value_tagged(t, at, depth + 1)?);
                }
                self.expect_count(items.len(), "set length mismatch")?;
                Value::Set(items)
            }
            tag::ARRAY_BUFFER => {
                self.id();
                let n = self.varint32()? as usize;
                let b = self.bytes(n)?;
                Value::ArrayBuffer(b)
            }
            tag::HOST => {
                self.id();
                match self.varint32()? {
                    HOST_ARRAY_BUFFER_VIEW => {
                        let kind = ViewKind::from_index(self.varint32()?)
                            .ok_or_else(|| self.malformed("unknown ArrayBufferView type"))?;
                        let n = self.varint32()? as usize;
                        if !n.is_multiple_of(kind.element_size()) {
                            return Err(self.malformed("view length is not a multiple of its element size"));
                        }
                        let bytes = self.bytes(n)?;
                        if kind == ViewKind::Buffer {
                            Value::Buffer(bytes)
                        } else {
                            Value::TypedArray { kind, bytes }
                        }
                    }
                    HOST_OTHER => {
                        let inner = self.value(depth + 1)?;
                        if !matches!(inner, Value::Object(_)) {
                            return Err(self.malformed("host object must hold a plain object"));
                        }
                        Value::HostObject(Box::new(inner))
                    }
                    _ => return Err(self.malformed("unknown host object kind")),
                }
            }
            tag::ERROR => {
                self.id();
                let mut e = JsError::default();
                loop {
                    let st = self.u8()?;
                    match st {
                        etag::EVAL => e.kind = ErrorKind::EvalError,
                        etag::RANGE => e.kind = ErrorKind::RangeError,
                        etag::REFERENCE => e.kind = ErrorKind::ReferenceError,
                        etag::SYNTAX => e.kind = ErrorKind::SyntaxError,
                        etag::TYPE => e.kind = ErrorKind::TypeError,
                        etag::URI => e.kind = ErrorKind::UriError,
                        etag::MESSAGE => e.message = Some(self.string_value()?),
                        etag::STACK => e.stack = Some(self.string_value()?),
                        etag::CAUSE => e.cause = Some(self.value(depth + 1)?),
                        etag::END => break,
                        _ => return Err(self.malformed("unknown error sub-tag")),
                    }
                }
                Value::Error(Box::new(e))
            }
            tag::TRUE_OBJECT | tag::FALSE_OBJECT => {
                self.id();
                Value::Wrapper(Box::new(Value::Bool(t == tag::TRUE_OBJECT)))
            }
            tag::NUMBER_OBJECT => {
                self.id();
                Value::Wrapper(Box::new(Value::Double(self.double()?)))
            }
            tag::BIGINT_OBJECT => {
                self.id();
                Value::Wrapper(Box::new(Value::BigInt(self.bigint()?)))
            }
            tag::STRING_OBJECT => {
                self.id();
                Value::Wrapper(Box::new(Value::String(self.string_value()?)))
            }
            _ => return Err(Error::UnknownTag { tag: t, offset: at }),
        })
    }

    /// Skips one value without building it.
    pub(crate) fn skip(&mut self, depth: usize) -> Result<()> {
        let at = self.pos;
        let t = self.tag()?;
        self.skip_tagged(t, at, depth)
    }

    pub(crate) fn skip_tagged(&mut self, t: u8, at: usize, depth: usize) -> Result<()> {
        if depth > self.max_depth {
            return Err(Error::TooDeep { max: self.max_depth });
        }
        match t {
            tag::UNDEFINED | tag::NULL | tag::TRUE | tag::FALSE | tag::TRUE_OBJECT | tag::FALSE_OBJECT => {}
            tag::INT32 | tag::UINT32 | tag::OBJREF => {
                self.varint()?;
            }
            tag::DOUBLE | tag::DATE | tag::NUMBER_OBJECT => {
                self.raw(8)?;
            }
            tag::BIGINT | tag::BIGINT_OBJECT => {
                self.bigint_skip()?;
            }
            tag::ONE_BYTE | tag::TWO_BYTE | tag::UTF8 | tag::ARRAY_BUFFER => {
                let n = self.varint32()? as usize;
                self.raw(n)?;
            }
            tag::STRING_OBJECT => self.skip(depth + 1)?,
            tag::REGEXP => {
                self.skip(depth + 1)?;
                self.varint()?;
            }
            tag::BEGIN_OBJECT => {
                self.skip_props(tag::END_OBJECT, depth)?;
                self.varint()?;
            }
            tag::BEGIN_SPARSE => {
                self.varint()?;
                self.skip_props(tag::END_SPARSE, depth)?;
                self.varint()?;
                self.varint()?;
            }
            tag::BEGIN_DENSE => {
                let len = self.varint32()?;
                for _ in 0..len {
                    let at = self.pos;
                    let t = self.tag()?;
                    if t != tag::HOLE {
                        self.skip_tagged(t, at, depth + 1)?;
                    }
                }
                self.skip_props(tag::END_DENSE, depth)?;
                self.varint()?;
                self.varint()?;
            }
            tag::BEGIN_MAP | tag::BEGIN_SET => {
                let end = if t == tag::BEGIN_MAP { tag::END_MAP } else { tag::END_SET };
                loop {
                    let at = self.pos;
                    let t = self.tag()?;
                    if t == end {
                        break;
                    }
                    self.skip_tagged(t, at, depth + 1)?;
                }
                self.varint()?;
            }
            tag::HOST => match self.varint32()? {
                HOST_ARRAY_BUFFER_VIEW => {
                    self.varint()?;
                    let n = self.varint32()? as usize;
                    self.raw(n)?;
                }
                HOST_OTHER => self.skip(depth + 1)?,
                _ => return Err(self.malformed("unknown host object kind")),
            },
            tag::ERROR => loop {
                match self.u8()? {
                    etag::EVAL | etag::RANGE | etag::REFERENCE | etag::SYNTAX | etag::TYPE | etag::URI => {}
                    etag::MESSAGE | etag::STACK | etag::CAUSE => self.skip(depth + 1)?,
                    etag::END => break,
                    _ => return Err(self.malformed("unknown error sub-tag")),
                }
            },
            _ => return Err(Error::UnknownTag { tag: t, offset: at }),
        }
        Ok(())
    }

    fn bigint_skip(&mut self) -> Result<()> {
        let bitfield = self.varint()?;
        let len = usize::try_from(bitfield >> 1).map_err(|_| self.truncated())?;
        self.raw(len)?;
        Ok(())
    }

    fn skip_props(&mut self, end: u8, depth: usize) -> Result<()> {
        loop {
            let at = self.pos;
            let t = self.tag()?;
            if t == end {
                return Ok(());
            }
            self.skip_tagged(t, at, depth + 1)?;
            self.skip(depth + 1)?;
        }
    }
}

pub(crate) fn unzigzag(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

// ---------------------------------------------------------------------------
// Back-reference resolution
// ---------------------------------------------------------------------------

/// Whether a value gets a V8 object id (JS receivers do; primitives don't).
fn has_id(v: &Value) -> bool {
    !matches!(
        v,
        Value::Undefined
            | Value::Null
            | Value::Bool(_)
            | Value::Int(_)
            | Value::Double(_)
            | Value::BigInt(_)
            | Value::String(_)
            | Value::Hole
            | Value::Ref(_)
    )
}

/// Visits children in the order the decoder read them, so that pre-order
/// position equals V8's object id.
fn children<'v>(v: &'v Value, f: &mut dyn FnMut(&'v Value)) {
    match v {
        Value::Object(p) | Value::SparseArray { props: p, .. } => p.iter().for_each(|(_, x)| f(x)),
        Value::Array(e) => e.iter().for_each(f),
        Value::ArrayWithProps { elements, props } => {
            elements.iter().for_each(&mut *f);
            props.iter().for_each(|(_, x)| f(x));
        }
        Value::Map(m) => m.iter().for_each(|(k, x)| {
            f(k);
            f(x)
        }),
        Value::Set(s) => s.iter().for_each(f),
        Value::Error(e) => {
            if let Some(c) = &e.cause {
                f(c)
            }
        }
        Value::HostObject(inner) => f(inner),
        _ => {}
    }
}

fn collect_ids<'v>(v: &'v Value, table: &mut Vec<&'v Value>) {
    // Recursion depth is bounded by the decoder's depth cap.
    if has_id(v) {
        table.push(v);
    }
    let mut kids = Vec::new();
    children(v, &mut |c| kids.push(c));
    for c in kids {
        collect_ids(c, table);
    }
}

struct Resolver<'v> {
    table: Vec<&'v Value>,
    active: Vec<u32>,
    budget: usize,
    max_nodes: usize,
    max_depth: usize,
}

impl<'v> Resolver<'v> {
    fn resolve(&mut self, v: &'v Value, next: &mut u32, depth: usize) -> Result<Value> {
        if self.budget == 0 {
            return Err(Error::TooLarge { max: self.max_nodes });
        }
        self.budget -= 1;
        if depth > self.max_depth {
            return Err(Error::TooDeep { max: self.max_depth });
        }
        if let Value::Ref(id) = v {
            // A reference to an object still being built is a cycle: keep it.
            if self.active.contains(id) {
                return Ok(Value::Ref(*id));
            }
            let target = *self
                .table
                .get(*id as usize)
                .ok_or(Error::Malformed { what: "back-reference to an unknown object", offset: 0 })?;
            let mut n = *id;
            return self.resolve(target, &mut n, depth);
        }
        if !has_id(v) {
            return Ok(v.clone());
        }
        let my = *next;
        *next = next.wrapping_add(1);
        self.active.push(my);
        let d = depth + 1;
        let out = match v {
            Value::Object(p) => Value::Object(self.props(p, next, d)?),
            Value::SparseArray { length, props } => {
                Value::SparseArray { length: *length, props: self.props(props, next, d)? }
            }
            Value::Array(e) => Value::Array(self.list(e, next, d)?),
            Value::ArrayWithProps { elements, props } => {
                let elements = self.list(elements, next, d)?;
                Value::ArrayWithProps { elements, props: self.props(props, next, d)? }
            }
            Value::Map(m) => {
                let mut out = Vec::with_capacity(m.len());
                for (k, x) in m {
                    let k = self.resolve(k, next, d)?;
                    out.push((k, self.resolve(x, next, d)?));
                }
                Value::Map(out)
            }
            Value::Set(s) => Value::Set(self.list(s, next, d)?),
            Value::Error(e) => {
                let mut e2 =
                    JsError { kind: e.kind, message: e.message.clone(), cause: None, stack: e.stack.clone() };
                if let Some(c) = &e.cause {
                    e2.cause = Some(self.resolve(c, next, d)?);
                }
                Value::Error(Box::new(e2))
            }
            Value::HostObject(inner) => Value::HostObject(Box::new(self.resolve(inner, next, d)?)),
            other => other.clone(),
        };
        self.active.pop();
        Ok(out)
    }

    fn list(&mut self, items: &'v [Value], next: &mut u32, depth: usize) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(items.len());
        for x in items {
            out.push(self.resolve(x, next, depth)?);
        }
        Ok(out)
    }

    fn props(&mut self, props: &'v Props, next: &mut u32, depth: usize) -> Result<Props> {
        let mut out = Vec::with_capacity(props.len());
        for (k, x) in props {
            out.push((k.clone(), self.resolve(x, next, depth)?));
        }
        Ok(out)
    }
}
