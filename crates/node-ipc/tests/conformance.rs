//! Codec conformance against the real `node` binary: Node's own IPC writer
//! produces the frames at test time; we must decode them to the same value and
//! re-encode them byte for byte.

mod common;

use common::{describe, hex, vectors};
use node_ipc::{encode_frame_into, read_fields, v8, DecodeOptions, FrameDecoder, Mode, TopLevel, Value};

#[test]
fn node_frames_decode_and_reencode_identically() {
    let vs = vectors();
    assert!(vs.len() >= 89, "expected the full case list, got {}", vs.len());
    for c in &vs {
        let len = u32::from_be_bytes([c.frame[0], c.frame[1], c.frame[2], c.frame[3]]) as usize;
        let payload = &c.frame[4..];
        assert_eq!(len, payload.len(), "{}: length prefix", c.name);

        let v = v8::decode(payload).unwrap_or_else(|e| panic!("{}: decode failed: {e}", c.name));
        assert_eq!(describe(&v), c.desc, "{}: decoded value differs", c.name);

        let exact =
            v8::decode_with(payload, &DecodeOptions { keep_refs: true, ..Default::default() }).unwrap();
        let mut out = Vec::new();
        encode_frame_into(&exact, Mode::Advanced, 15, &mut out).unwrap();
        assert_eq!(hex(&out), hex(&c.frame), "{}: re-encoding differs", c.name);

        // Values without back-references re-encode identically from the default decode too.
        if !c.name.contains("twice") && !c.name.contains("shared") {
            let mut out = Vec::new();
            encode_frame_into(&v, Mode::Advanced, 15, &mut out).unwrap();
            assert_eq!(hex(&out), hex(&c.frame), "{}: re-encoding of resolved value differs", c.name);
        }

        // The field reader copes with every shape.
        let f = read_fields(payload, Mode::Advanced).unwrap_or_else(|e| panic!("{}: fields: {e}", c.name));
        if matches!(v, Value::Object(_)) {
            assert_eq!(f.top, TopLevel::Object, "{}", c.name);
        }
    }
}

#[test]
fn frame_decoder_splits_node_frames_fed_byte_by_byte() {
    let vs = vectors();
    let stream: Vec<u8> = vs.iter().flat_map(|c| c.frame.iter().copied()).collect();
    let mut dec = FrameDecoder::new(Mode::Advanced, 1 << 20);
    let mut got = Vec::new();
    for b in stream {
        dec.extend(&[b]);
        while let Some(p) = dec.next_frame().unwrap() {
            got.push(p);
        }
    }
    assert_eq!(got.len(), vs.len());
    for (p, c) in got.iter().zip(&vs) {
        assert_eq!(&p[..], &c.frame[4..], "{}", c.name);
    }
}

#[test]
fn older_versions_are_read_and_written() {
    // Node 20 reads 13–15; a peer's version is mirrored in what we write.
    let v = Value::object([("a", Value::from("\u{20ac}")), ("b", Value::buffer(&b"hi"[..]))]);
    for version in [13u32, 14, 15] {
        let mut out = Vec::new();
        encode_frame_into(&v, Mode::Advanced, version, &mut out).unwrap();
        assert_eq!(out[4..6], [0xff, version as u8]);
        assert_eq!(v8::decode(&out[4..]).unwrap(), v);
    }
    assert!(matches!(v8::decode(&[0xff, 0x0c, 0x30]), Err(node_ipc::Error::UnsupportedVersion(12))));
    assert!(matches!(v8::decode(&[0x30]), Err(node_ipc::Error::UnsupportedVersion(0))));
}
