//! Codec unit behaviour: hostile input, the field reader, JSON.stringify
//! fidelity, and property-based round trips.

use node_ipc::{
    fields::{read_fields_json, read_fields_v8},
    json, read_fields, v8, DecodeOptions, Error, FrameDecoder, JsBigInt, JsString, Mode, TopLevel, Value,
    ViewKind,
};
use proptest::prelude::*;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn spec_vectors_encode_exactly() {
    // Hex captured from Node 20 (`v8.serialize` of the same value).
    let cases: Vec<(Value, &str)> = vec![
        (Value::from("ready"), "ff0f 2205 7265616479"),
        (
            Value::object([("cmd", Value::from("NODE_HANDLE_ACK"))]),
            "ff0f 6f 2203 636d64 220f 4e4f44455f48414e444c455f41434b 7b01",
        ),
        (Value::from("caf\u{e9}"), "ff0f 2204 636166e9"),
        (Value::from("h\u{20ac}llo"), "ff0f 630a 6800ac206c006c006f00"),
        (Value::object([("a", Value::from("\u{20ac}"))]), "ff0f 6f 2201 61 63 02 ac20 7b01"),
        (Value::object([("ab", Value::from("\u{20ac}"))]), "ff0f 6f 2202 6162 00 63 02 ac20 7b01"),
        (
            Value::object([("1", Value::from("x")), ("b", Value::Bool(true))]),
            "ff0f 6f 4902 220178 220162 54 7b02",
        ),
        (Value::from(300), "ff0f 49d804"),
        (Value::from(2147483648u32), "ff0f 4e000000000000e041"),
        (Value::BigInt(JsBigInt::from_i128(5)), "ff0f 5a10 0500000000000000"),
        (Value::buffer(&b"hi"[..]), "ff0f 5c 00 0a 02 6869"),
        (Value::TypedArray { kind: ViewKind::Uint8, bytes: vec![1, 2, 3].into() }, "ff0f 5c 00 01 03 010203"),
        (Value::Map(vec![(Value::from("a"), Value::from(1))]), "ff0f 3b 220161 4902 3a 02"),
        (Value::Date(0.0), "ff0f 44 0000000000000000"),
        (Value::RegExp { source: "ab".into(), flags: 3 }, "ff0f 52 22026162 03"),
        (
            Value::Array(vec![Value::from(1), Value::from("a"), Value::Null]),
            "ff0f 4103 4902 220161 30 24 00 03",
        ),
        (
            Value::SparseArray {
                length: 3,
                props: vec![("0".into(), Value::from(1)), ("2".into(), Value::from(3))],
            },
            "ff0f 6103 4900 4902 4904 4906 40 02 03",
        ),
    ];
    for (v, h) in cases {
        assert_eq!(v8::encode(&v).unwrap(), unhex(h), "{v:?}");
        assert_eq!(v8::decode(&unhex(h)).unwrap(), v, "{h}");
    }
}

#[test]
fn hostile_v8_input_is_a_typed_error() {
    type Check = fn(&Error) -> bool;
    let bad: Vec<(&str, Check)> = vec![
        ("", |e| matches!(e, Error::Truncated { .. })),
        ("ff", |e| matches!(e, Error::Truncated { .. })),
        ("ff0f", |e| matches!(e, Error::Truncated { .. })),
        ("ff0f01", |e| matches!(e, Error::UnknownTag { tag: 1, .. })),
        ("ff0c30", |e| matches!(e, Error::UnsupportedVersion(12))),
        ("ff11 30", |e| matches!(e, Error::UnsupportedVersion(17))),
        ("30", |e| matches!(e, Error::UnsupportedVersion(0))),
        // wrong property count: crashes Node, must not crash us
        ("ff0f 6f 2201 61 4902 7b05", |e| matches!(e, Error::Malformed { .. })),
        // 4 GiB string length
        ("ff0f 22 ffffffff0f 61", |e| matches!(e, Error::Truncated { .. })),
        // huge dense array with nothing behind it
        ("ff0f 41 ffffffff0f", |e| matches!(e, Error::Truncated { .. })),
        // odd two-byte length
        ("ff0f 63 03 616263", |e| matches!(e, Error::InvalidUtf16 { .. })),
        // invalid UTF-8 in the legacy utf8 tag
        ("ff0f 53 02 c328", |e| matches!(e, Error::InvalidUtf8 { .. })),
        // back-reference to an object that doesn't exist
        ("ff0f 6f 2201 61 5e05 7b01", |e| matches!(e, Error::Malformed { .. })),
        // varint that never ends
        ("ff0f 49 ffffffffffffffffffffff", |e| {
            matches!(e, Error::Malformed { .. } | Error::Truncated { .. })
        }),
        // object key that is an object
        ("ff0f 6f 6f7b00 30 7b01", |e| matches!(e, Error::Malformed { .. })),
        // typed array whose length is not a multiple of the element size
        ("ff0f 5c 00 08 03 010203", |e| matches!(e, Error::Malformed { .. })),
        ("ff0f 5c 00 0d 00", |e| matches!(e, Error::Malformed { .. })),
        ("ff0f 5c 07", |e| matches!(e, Error::Malformed { .. })),
        ("ff0f 72 7a", |e| matches!(e, Error::Malformed { .. })),
        ("ff0f 5a ffffffff0f", |e| matches!(e, Error::Truncated { .. })),
    ];
    for (h, ok) in bad {
        let e = v8::decode(&unhex(h)).expect_err(h);
        assert!(ok(&e), "{h}: {e:?}");
        let _ = read_fields_v8(&unhex(h));
    }
}

#[test]
fn deep_nesting_is_capped() {
    let mut deep = vec![0xff, 0x0f];
    for _ in 0..10_000 {
        deep.extend_from_slice(&[b'A', 1]);
    }
    assert!(matches!(v8::decode(&deep), Err(Error::TooDeep { max: 128 })));
    assert!(matches!(read_fields_v8(&deep), Ok(_) | Err(_)));
    let mut obj = vec![0xff, 0x0f, b'o', b'"', 1, b'a'];
    for _ in 0..10_000 {
        obj.extend_from_slice(&[b'o', b'"', 1, b'a']);
    }
    assert!(matches!(read_fields_v8(&obj), Err(Error::TooDeep { .. })));
    let mut v = Value::Null;
    for _ in 0..200 {
        v = Value::Array(vec![v]);
    }
    assert!(matches!(v8::encode(&v), Err(Error::TooDeep { .. })));
    assert!(matches!(json::encode(&v), Err(Error::TooDeep { .. })));
    let line = "[".repeat(10_000);
    assert!(json::decode(line.as_bytes()).is_err());
}

#[test]
fn back_reference_bombs_are_bounded() {
    // a0 = {}, a1 = [a0, a0], a2 = [a1, a1], ... doubling per level.
    let mut p = vec![0xff, 0x0f];
    let levels = 60;
    for _ in 0..levels {
        p.extend_from_slice(&[b'A', 2]);
    }
    p.extend_from_slice(&[b'o', b'{', 0]);
    // innermost array: second element refers to the object (id = levels)
    p.extend_from_slice(&[b'^', levels as u8, b'$', 0, 2]);
    for level in (0..levels - 1).rev() {
        p.extend_from_slice(&[b'^', (level + 1) as u8, b'$', 0, 2]);
    }
    let e = v8::decode(&p).expect_err("expansion must be refused");
    assert!(matches!(e, Error::TooLarge { .. } | Error::TooDeep { .. }), "{e:?}");
    // Keeping references decodes it cheaply.
    let kept = v8::decode_with(&p, &DecodeOptions { keep_refs: true, ..Default::default() }).unwrap();
    assert_eq!(v8::encode(&kept).unwrap(), p);
}

#[test]
fn cycles_stay_references() {
    // {self: <itself>}
    let p = unhex("ff0f 6f 2204 73656c66 5e00 7b01");
    let v = v8::decode(&p).unwrap();
    assert_eq!(v, Value::object([("self", Value::Ref(0))]));
    assert_eq!(v8::encode(&v).unwrap(), p);
    assert!(json::encode(&v).is_err());
}

#[test]
fn frame_decoder_caps_and_fails_closed() {
    let mut d = FrameDecoder::new(Mode::Advanced, 16);
    d.extend(&[0, 0, 0, 17]);
    assert!(matches!(d.next_frame(), Err(Error::FrameTooLarge { len: 17, max: 16 })));
    assert!(d.next_frame().is_err());
    let mut d = FrameDecoder::new(Mode::Json, 8);
    d.extend(b"12345678");
    assert!(d.next_frame().unwrap().is_none());
    d.extend(b"9");
    assert!(matches!(d.next_frame(), Err(Error::FrameTooLarge { .. })));
    let mut d = FrameDecoder::new(Mode::Json, 1 << 10);
    d.extend(b"{\"a\":1}\n\"b\"\r\n1");
    assert_eq!(&d.next_frame().unwrap().unwrap()[..], b"{\"a\":1}");
    assert_eq!(&d.next_frame().unwrap().unwrap()[..], b"\"b\"\r");
    assert!(d.next_frame().unwrap().is_none());
    assert_eq!(d.buffered(), 1);
}

#[test]
fn field_reader_finds_routing_fields() {
    let msg = Value::object([
        ("type", Value::from(8)),
        ("data", Value::object([("uid", Value::from("inner")), ("b", Value::buffer(vec![1, 2, 3]))])),
        ("uid", Value::from("ce022a03e5d1c3a3")),
        ("requesterUid", Value::from("r\u{20ac}q")),
        ("nsp", Value::from("/")),
        ("source", Value::from("_sio_adapter")),
        ("ack", Value::Double(1.5)),
        ("seq", Value::from(9)),
        ("key", Value::from("4:127.0.0.1:80")),
        ("cmd", Value::Null),
    ]);
    for mode in [Mode::Advanced, Mode::Json] {
        let p = node_ipc::encode_payload(&msg, mode).unwrap();
        let f = read_fields(&p, mode).unwrap();
        assert_eq!(f.top, TopLevel::Object);
        assert_eq!(f.type_.unwrap().as_i64(), Some(8), "{mode:?}");
        assert!(f.uid.unwrap().eq_str("ce022a03e5d1c3a3"), "inner uid must not win");
        assert!(f.requester_uid.unwrap().eq_str("r\u{20ac}q"));
        assert_eq!(f.requester_uid.unwrap().as_str().unwrap(), "r\u{20ac}q");
        assert!(f.source.unwrap().eq_str("_sio_adapter"));
        assert!(f.nsp.unwrap().eq_str("/"));
        assert_eq!(f.ack.unwrap().as_f64(), Some(1.5));
        assert_eq!(f.seq.unwrap().as_i64(), Some(9));
        assert!(f.key.unwrap().eq_str("4:127.0.0.1:80"));
        assert!(f.cmd.is_none());
        assert!(f.act.is_none());
        assert!(!f.is_internal());
    }
    let ready = v8::encode(&Value::from("ready")).unwrap();
    let f = read_fields(&ready, Mode::Advanced).unwrap();
    assert!(matches!(f.top, TopLevel::String(s) if s.eq_str("ready")));
    let f = read_fields_json(br#""shut\u0064own""#).unwrap();
    assert!(matches!(f.top, TopLevel::String(s) if s.eq_str("shutdown")));
    let f = read_fields_json(
        br#" {"c\u006dd" : "NODE_\u0048ANDLE", "x": [1, {"cmd": 2}], "type":"net.Socket"} "#,
    )
    .unwrap();
    assert!(f.cmd.unwrap().eq_str("NODE_HANDLE"));
    assert!(f.is_internal());
    assert!(f.type_.unwrap().eq_str("net.Socket"));
    assert!(read_fields_json(b"").is_err());
    assert!(read_fields_json(b"{\"a\":").is_err());
    assert!(read_fields_json(b"{\"a\" 1}").is_err());
    assert_eq!(read_fields_json(b"[1,2]").unwrap().top, TopLevel::Other);
}

#[test]
fn json_writer_matches_json_stringify() {
    let cases: Vec<(Value, &str)> = vec![
        (Value::Double(1e21), "1e+21"),
        (Value::Double(1e-7), "1e-7"),
        (Value::Double(0.000001), "0.000001"),
        (Value::Double(123456789012345680000.0), "123456789012345680000"),
        (Value::Double(2f64.powi(60)), "1152921504606847000"),
        (Value::Double(-0.0), "0"),
        (Value::Double(f64::NAN), "null"),
        (Value::Double(1.5), "1.5"),
        (Value::Double(-1.25e-10), "-1.25e-10"),
        (Value::Double(5e-324), "5e-324"),
        (Value::from("a\u{1}\u{7f}\"\\/\u{2028}"), "\"a\\u0001\u{7f}\\\"\\\\/\u{2028}\""),
        (Value::String(JsString::from_utf16(&[0x61, 0xd800])), "\"a\\ud800\""),
        (Value::object([("u", Value::Undefined), ("n", Value::Null)]), "{\"n\":null}"),
        (Value::Array(vec![Value::Undefined, Value::Hole]), "[null,null]"),
        (Value::buffer(vec![0, 255]), "{\"type\":\"Buffer\",\"data\":[0,255]}"),
        (Value::Date(0.0), "\"1970-01-01T00:00:00.000Z\""),
        (Value::Date(-1.0), "\"1969-12-31T23:59:59.999Z\""),
        (Value::Date(8.64e15), "\"+275760-09-13T00:00:00.000Z\""),
        (Value::Date(-62198755200000.0), "\"-000001-01-01T00:00:00.000Z\""),
        (Value::Date(f64::NAN), "null"),
        (Value::TypedArray { kind: ViewKind::Int16, bytes: vec![0xfe, 0xff].into() }, "{\"0\":-2}"),
        (Value::Map(vec![]), "{}"),
        (Value::SparseArray { length: 3, props: vec![("1".into(), Value::from(2))] }, "[null,2,null]"),
    ];
    for (v, want) in cases {
        assert_eq!(String::from_utf8(json::encode(&v).unwrap()).unwrap(), want, "{v:?}");
    }
    assert!(json::encode(&Value::Undefined).is_err());
    // What JSON.stringify writes for a lone surrogate still decodes (lossily).
    assert_eq!(
        json::decode(br#"["a\ud800","\ud83d\ude00","\udc00x"]"#).unwrap(),
        Value::Array(vec![Value::from("a\u{fffd}"), Value::from("\u{1f600}"), Value::from("\u{fffd}x")])
    );
    assert!(json::decode(br#"["\ud800"#).is_err());
    assert!(json::encode(&Value::BigInt(JsBigInt::from_i128(1))).is_err());
}

#[test]
fn accessors_and_json_conversions() {
    let j = serde_json::json!({"a": 1, "b": [true, null, "x"], "c": 2.5, "d": 10_000_000_000i64, "e": {"f": "g"}});
    let v = Value::from(j.clone());
    assert_eq!(v.get("a").and_then(Value::as_i64), Some(1));
    assert_eq!(v.get("c").and_then(Value::as_f64), Some(2.5));
    assert_eq!(v.get("d").and_then(Value::as_i64), Some(10_000_000_000));
    assert_eq!(v.get("e").and_then(|e| e.get("f")).and_then(Value::as_str), Some("g"));
    assert_eq!(v.get("b").and_then(Value::as_array).map(|a| a.len()), Some(3));
    assert!(v.get("zz").is_none());
    assert_eq!(serde_json::Value::from(&v), j);
    assert_eq!(Value::buffer(vec![1u8]).to_json(), serde_json::json!({"type": "Buffer", "data": [1]}));
    assert_eq!(JsBigInt::from_i128(-(1i128 << 100)).to_i128(), Some(-(1i128 << 100)));
    assert_eq!(
        json::bigint_decimal(&JsBigInt::from_i128(-12345678901234567890123)),
        "-12345678901234567890123"
    );
}

fn arb_string() -> impl Strategy<Value = JsString> {
    prop_oneof![
        "[a-z]{0,8}".prop_map(JsString::new),
        any::<String>().prop_map(JsString::new),
        proptest::collection::vec(any::<u16>(), 0..8).prop_map(|u| JsString::from_utf16(&u)),
        "[\u{0}-\u{ff}]{0,6}".prop_map(JsString::new),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Undefined),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::Int),
        any::<f64>().prop_filter("NaN payloads differ", |d| !d.is_nan()).prop_map(Value::Double),
        any::<i128>().prop_map(|n| Value::BigInt(JsBigInt::from_i128(n))),
        arb_string().prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::buffer),
        (0u32..13, proptest::collection::vec(any::<u8>(), 0..4)).prop_filter_map("element size", |(k, b)| {
            let kind = ViewKind::from_index(k)?;
            if kind == ViewKind::Buffer {
                return None;
            }
            let n = b.len() - b.len() % kind.element_size();
            Some(Value::TypedArray { kind, bytes: b[..n].to_vec().into() })
        }),
        any::<i64>().prop_map(|ms| Value::Date(ms as f64)),
        (arb_string(), 0u32..512).prop_map(|(source, flags)| Value::RegExp { source, flags }),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec((arb_string(), inner.clone()), 0..5).prop_map(Value::Object),
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..3).prop_map(Value::Map),
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Set),
            (0u32..20, proptest::collection::vec((0u32..20, inner.clone()), 0..4)).prop_map(
                |(len, items)| {
                    Value::SparseArray {
                        length: len,
                        props: items.into_iter().map(|(k, v)| (JsString::new(k.to_string()), v)).collect(),
                    }
                }
            ),
        ]
    })
}

/// Object keys that look like array indices are written as numbers and come
/// back as their canonical decimal text; "01" stays a string. Normalise the
/// generated value the way the wire does before comparing.
fn normalise(v: Value) -> Value {
    match v {
        Value::Object(p) => Value::Object(p.into_iter().map(|(k, v)| (k, normalise(v))).collect()),
        Value::Array(e) => Value::Array(e.into_iter().map(normalise).collect()),
        Value::Map(m) => Value::Map(m.into_iter().map(|(k, v)| (normalise(k), normalise(v))).collect()),
        Value::Set(s) => Value::Set(s.into_iter().map(normalise).collect()),
        Value::SparseArray { length, props } => {
            Value::SparseArray { length, props: props.into_iter().map(|(k, v)| (k, normalise(v))).collect() }
        }
        Value::String(s) if s.is_well_formed() => {
            // A Latin-1-only string read from a two-byte form keeps that form.
            Value::String(s)
        }
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn v8_round_trip(v in arb_value()) {
        let bytes = v8::encode(&v).unwrap();
        let back = v8::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &normalise(v));
        // Re-encoding what we decoded is byte-identical.
        prop_assert_eq!(v8::encode(&back).unwrap(), bytes.clone());
        // And the field reader never fails on what we write.
        prop_assert!(read_fields_v8(&bytes).is_ok());
    }

    #[test]
    fn json_round_trip_of_json_values(v in arb_value()) {
        if let Ok(line) = json::encode(&v) {
            prop_assert!(!line.contains(&b'\n'));
            // Duplicate keys collapse on parse, so check that one parse/write cycle
            // reaches a fixed point rather than strict equality.
            if let Ok(once) = json::decode(&line).and_then(|v| json::encode(&v)) {
                let twice = json::encode(&json::decode(&once).unwrap()).unwrap();
                prop_assert_eq!(once, twice);
            }
            prop_assert!(read_fields_json(&line).is_ok());
        }
    }

    /// The stable-toolchain stand-in for the cargo-fuzz targets: arbitrary
    /// bytes never panic the decoders or the field readers.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256), header in any::<bool>()) {
        let mut p = if header { vec![0xff, 0x0f] } else { Vec::new() };
        p.extend_from_slice(&data);
        let _ = v8::decode(&p);
        let _ = v8::decode_with(&p, &DecodeOptions { keep_refs: true, ..Default::default() });
        same_fields(&p);
        let _ = read_fields_json(&data);
        let _ = json::decode(&data);
        let mut d = FrameDecoder::new(Mode::Advanced, 1 << 12);
        d.extend(&data);
        while let Ok(Some(f)) = d.next_frame() {
            let _ = v8::decode(&f);
        }
    }

    /// Mutations of valid payloads reach deeper than random bytes do.
    #[test]
    fn mutated_payloads_never_panic(v in arb_value(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = v8::encode(&v).unwrap();
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        if let Ok(back) = v8::decode(&bytes) {
            let _ = v8::encode(&back);
            let _ = json::encode(&back);
        }
        same_fields(&bytes);
    }

    #[test]
    fn fast_and_careful_field_readers_agree(v in arb_value(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3)) {
        let mut bytes = v8::encode(&Value::object([("type", Value::from(1)), ("v", v), ("uid", Value::from("u"))])).unwrap();
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        same_fields(&bytes);
    }
}

/// Whatever the fast scanner accepts, the careful reader reads identically.
fn same_fields(bytes: &[u8]) {
    if let Ok(fast) = read_fields_v8(bytes) {
        let careful = node_ipc::fields::read_fields_v8_careful(bytes).expect("careful reader accepts it too");
        assert_eq!(fast, careful);
    }
}
