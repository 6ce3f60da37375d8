//! The JavaScript value model shared by both serialization modes.

use std::fmt;

use bytes::Bytes;

/// A JavaScript string as it travels between processes.
///
/// Most strings are plain Unicode and [`JsString::as_str`] is all one needs. Two
/// details of V8 are kept so that a decoded value re-encodes to the very same
/// bytes: a string V8 held in two-byte form although every character fits in
/// Latin-1, and strings with lone surrogates (legal in JS, not in Rust), whose
/// UTF-16 code units are kept next to a lossy Rust rendering.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct JsString {
    text: String,
    form: StrForm,
}

#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub(crate) enum StrForm {
    /// Encoded one-byte when every char is ≤ U+00FF, two-byte otherwise (what V8
    /// does for any freshly built string).
    #[default]
    Auto,
    /// Always encoded two-byte.
    TwoByte,
    /// Ill-formed UTF-16; `text` is the lossy rendering.
    Wtf16(Box<[u16]>),
}

impl JsString {
    /// Wraps Rust text.
    pub fn new(text: impl Into<String>) -> Self {
        JsString { text: text.into(), form: StrForm::Auto }
    }

    /// Builds a string from UTF-16 code units, keeping lone surrogates.
    pub fn from_utf16(units: &[u16]) -> Self {
        let mut text = String::with_capacity(units.len());
        let mut well_formed = true;
        let mut wide = false;
        for c in char::decode_utf16(units.iter().copied()) {
            match c {
                Ok(c) => {
                    wide |= c as u32 > 0xFF;
                    text.push(c);
                }
                Err(_) => {
                    well_formed = false;
                    text.push(char::REPLACEMENT_CHARACTER);
                }
            }
        }
        let form = if !well_formed {
            StrForm::Wtf16(units.into())
        } else if wide {
            StrForm::Auto
        } else {
            // Only a two-byte string can have produced Latin-1-only code units here.
            StrForm::TwoByte
        };
        JsString { text, form }
    }

    pub(crate) fn form(&self) -> &StrForm {
        &self.form
    }

    /// The text (lossy, with U+FFFD, if the string holds lone surrogates).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Consumes the string into its (possibly lossy) Rust text.
    pub fn into_string(self) -> String {
        self.text
    }

    /// False when the string holds lone surrogates.
    pub fn is_well_formed(&self) -> bool {
        !matches!(self.form, StrForm::Wtf16(_))
    }

    /// The exact UTF-16 code units of the JS string.
    pub fn to_utf16(&self) -> Vec<u16> {
        match &self.form {
            StrForm::Wtf16(units) => units.to_vec(),
            _ => self.text.encode_utf16().collect(),
        }
    }
}

impl std::ops::Deref for JsString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for JsString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for JsString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<&str> for JsString {
    fn from(s: &str) -> Self {
        JsString::new(s)
    }
}

impl From<String> for JsString {
    fn from(s: String) -> Self {
        JsString::new(s)
    }
}

impl PartialEq<str> for JsString {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for JsString {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

/// A JS BigInt: sign and magnitude as little-endian bytes (a multiple of 8 long,
/// as V8 writes them).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct JsBigInt {
    /// True for negative values.
    pub negative: bool,
    /// Little-endian magnitude; V8 writes whole 64-bit digits.
    pub magnitude: Vec<u8>,
}

impl JsBigInt {
    /// The BigInt for `n`.
    pub fn from_i128(n: i128) -> Self {
        let mag = n.unsigned_abs();
        let mut magnitude = mag.to_le_bytes().to_vec();
        // V8 writes the minimal number of 64-bit digits (zero digits for 0n).
        let digits = if mag == 0 {
            0
        } else if mag >> 64 == 0 {
            1
        } else {
            2
        };
        magnitude.truncate(digits * 8);
        JsBigInt { negative: n < 0 && mag != 0, magnitude }
    }

    /// The value if it fits in an i128.
    pub fn to_i128(&self) -> Option<i128> {
        let significant = self.magnitude.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        if significant > 16 {
            return None;
        }
        let mut buf = [0u8; 16];
        buf[..significant].copy_from_slice(&self.magnitude[..significant]);
        let mag = u128::from_le_bytes(buf);
        if self.negative {
            if mag <= i128::MAX as u128 + 1 {
                Some((mag as i128).wrapping_neg())
            } else {
                None
            }
        } else {
            i128::try_from(mag).ok()
        }
    }
}

/// Which `ArrayBufferView` a Node host object was (Node's own numbering, which
/// is what travels on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViewKind {
    /// `Int8Array`
    Int8 = 0,
    /// `Uint8Array`
    Uint8 = 1,
    /// `Uint8ClampedArray`
    Uint8Clamped = 2,
    /// `Int16Array`
    Int16 = 3,
    /// `Uint16Array`
    Uint16 = 4,
    /// `Int32Array`
    Int32 = 5,
    /// `Uint32Array`
    Uint32 = 6,
    /// `Float32Array`
    Float32 = 7,
    /// `Float64Array`
    Float64 = 8,
    /// `DataView`
    DataView = 9,
    /// Node's `Buffer` (FastBuffer); see [`Value::Buffer`].
    Buffer = 10,
    /// `BigInt64Array`
    BigInt64 = 11,
    /// `BigUint64Array`
    BigUint64 = 12,
}

impl ViewKind {
    /// Node's index for this view type.
    pub fn index(self) -> u32 {
        self as u32
    }

    /// The view type for Node's index.
    pub fn from_index(i: u32) -> Option<Self> {
        use ViewKind::*;
        Some(match i {
            0 => Int8,
            1 => Uint8,
            2 => Uint8Clamped,
            3 => Int16,
            4 => Uint16,
            5 => Int32,
            6 => Uint32,
            7 => Float32,
            8 => Float64,
            9 => DataView,
            10 => Buffer,
            11 => BigInt64,
            12 => BigUint64,
            _ => return None,
        })
    }

    /// Bytes per element; the byte length of a view must be a multiple of it or
    /// Node throws while rebuilding the view.
    pub fn element_size(self) -> usize {
        use ViewKind::*;
        match self {
            Int8 | Uint8 | Uint8Clamped | DataView | Buffer => 1,
            Int16 | Uint16 => 2,
            Int32 | Uint32 | Float32 => 4,
            Float64 | BigInt64 | BigUint64 => 8,
        }
    }
}

/// The prototype of a serialized `Error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `Error`
    #[default]
    Error,
    /// `EvalError`
    EvalError,
    /// `RangeError`
    RangeError,
    /// `ReferenceError`
    ReferenceError,
    /// `SyntaxError`
    SyntaxError,
    /// `TypeError`
    TypeError,
    /// `URIError`
    UriError,
}

impl ErrorKind {
    /// The constructor's name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Error => "Error",
            ErrorKind::EvalError => "EvalError",
            ErrorKind::RangeError => "RangeError",
            ErrorKind::ReferenceError => "ReferenceError",
            ErrorKind::SyntaxError => "SyntaxError",
            ErrorKind::TypeError => "TypeError",
            ErrorKind::UriError => "URIError",
        }
    }
}

/// A serialized JS `Error` (V8 keeps only these fields).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct JsError {
    /// The prototype.
    pub kind: ErrorKind,
    /// `error.message`.
    pub message: Option<JsString>,
    /// `error.cause`.
    pub cause: Option<Value>,
    /// `error.stack`.
    pub stack: Option<JsString>,
}

/// Object properties in wire order (JS puts integer keys first, ascending).
pub type Props = Vec<(JsString, Value)>;

/// A JavaScript value as carried by Node's IPC channel.
///
/// Numbers keep V8's distinction between small integers ([`Value::Int`]) and
/// heap numbers ([`Value::Double`]) so that re-encoding a decoded value gives
/// Node's bytes back. Build values with the `From` conversions, [`Value::object`]
/// and [`Value::buffer`]; read them with [`Value::get`], [`Value::as_str`],
/// [`Value::as_f64`], [`Value::as_i64`] and friends.
#[derive(Clone, Debug, PartialEq, Default)]
#[non_exhaustive]
pub enum Value {
    /// `undefined`
    #[default]
    Undefined,
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number V8 held as a small integer (tag `I`).
    Int(i32),
    /// A number V8 held as a heap number (tag `N`), including integral ones.
    Double(f64),
    /// A BigInt.
    BigInt(JsBigInt),
    /// A string.
    String(JsString),
    /// A plain object.
    Object(Props),
    /// A packed array; an element may be [`Value::Hole`].
    Array(Vec<Value>),
    /// A packed array that also has named properties.
    ArrayWithProps {
        /// The elements.
        elements: Vec<Value>,
        /// The extra properties.
        props: Props,
    },
    /// A holey array: its length and the properties actually present.
    SparseArray {
        /// `array.length`.
        length: u32,
        /// Present indices (as decimal keys) and named properties.
        props: Props,
    },
    /// A missing element in a packed array.
    Hole,
    /// A `Date` (milliseconds since the epoch, may be NaN).
    Date(f64),
    /// A `RegExp`: source and V8's flag bits (g=1, i=2, m=4, …).
    RegExp {
        /// The pattern.
        source: JsString,
        /// V8's flag bits.
        flags: u32,
    },
    /// A `Map`, in insertion order.
    Map(Vec<(Value, Value)>),
    /// A `Set`, in insertion order.
    Set(Vec<Value>),
    /// A Node `Buffer`.
    Buffer(Bytes),
    /// A TypedArray or DataView other than a Buffer.
    TypedArray {
        /// The view type.
        kind: ViewKind,
        /// The view's bytes.
        bytes: Bytes,
    },
    /// A bare `ArrayBuffer`.
    ArrayBuffer(Bytes),
    /// An `Error`.
    Error(Box<JsError>),
    /// A primitive wrapper object (`new Number(1)`, `Object('s')`, …); the
    /// inner value is a Bool, Double, BigInt or String.
    Wrapper(Box<Value>),
    /// A Node host object that is not an ArrayBufferView, sent as its own
    /// enumerable properties.
    HostObject(Box<Value>),
    /// A back-reference to an earlier object of the same message, by V8 object
    /// id (0 is the top-level object). Produced only by
    /// [`DecodeOptions::keep_refs`](crate::DecodeOptions) or for cycles.
    Ref(u32),
}

impl Value {
    /// An object from `(key, value)` pairs.
    pub fn object<K: Into<JsString>, I: IntoIterator<Item = (K, Value)>>(pairs: I) -> Value {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A Node `Buffer`.
    pub fn buffer(bytes: impl Into<Bytes>) -> Value {
        Value::Buffer(bytes.into())
    }

    /// A number, as V8 would hold it: integral values in i32 range (other than
    /// -0) become [`Value::Int`].
    pub fn number(n: f64) -> Value {
        if n.fract() == 0.0
            && (i32::MIN as f64..=i32::MAX as f64).contains(&n)
            && !(n == 0.0 && n.is_sign_negative())
        {
            Value::Int(n as i32)
        } else {
            Value::Double(n)
        }
    }

    /// The property `key` of an object (also of arrays' named properties).
    pub fn get(&self, key: &str) -> Option<&Value> {
        let props = match self {
            Value::Object(p)
            | Value::ArrayWithProps { props: p, .. }
            | Value::SparseArray { props: p, .. } => p,
            Value::HostObject(inner) => return inner.get(key),
            _ => return None,
        };
        props.iter().rev().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// A number as f64 (Int and Double).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Double(d) => Some(*d),
            _ => None,
        }
    }

    /// A number as i64 when it is integral and exactly representable.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i as i64),
            Value::Double(d) if d.fract() == 0.0 && d.abs() <= 9_007_199_254_740_992.0 => Some(*d as i64),
            _ => None,
        }
    }

    /// A boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The elements of a packed array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::ArrayWithProps { elements: v, .. } => Some(v),
            _ => None,
        }
    }

    /// The properties of a plain object.
    pub fn as_object(&self) -> Option<&Props> {
        match self {
            Value::Object(p) => Some(p),
            _ => None,
        }
    }

    /// The bytes of a Buffer, TypedArray, DataView or ArrayBuffer.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Buffer(b) | Value::TypedArray { bytes: b, .. } | Value::ArrayBuffer(b) => Some(b),
            _ => None,
        }
    }

    /// True for `undefined`.
    pub fn is_undefined(&self) -> bool {
        matches!(self, Value::Undefined)
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Converts to what `JSON.parse(JSON.stringify(v))` would give, as far as
    /// JSON allows (a Buffer becomes `{"type":"Buffer","data":[…]}`, `undefined`
    /// properties vanish, NaN becomes null). BigInts (which make
    /// `JSON.stringify` throw) become decimal strings here, and sparse arrays
    /// are cut at 2^20 elements.
    pub fn to_json(&self) -> serde_json::Value {
        crate::json::to_json_value(self)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Self {
        Value::Int(n)
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::number(n as f64)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::number(n as f64)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::number(n as f64)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::number(n)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s.into())
    }
}

impl From<JsString> for Value {
    fn from(s: JsString) -> Self {
        Value::String(s)
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::Array(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        crate::json::from_json_value(v)
    }
}

impl From<&serde_json::Value> for Value {
    fn from(v: &serde_json::Value) -> Self {
        crate::json::from_json_value(v.clone())
    }
}

impl From<&Value> for serde_json::Value {
    fn from(v: &Value) -> Self {
        v.to_json()
    }
}

impl From<Value> for serde_json::Value {
    fn from(v: Value) -> Self {
        v.to_json()
    }
}
