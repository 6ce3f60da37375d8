//! Anything the V8 decoder accepts (keeping back-references) must re-encode to
//! bytes that decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_ipc::{v8, DecodeOptions};

fuzz_target!(|data: &[u8]| {
    let keep = DecodeOptions { keep_refs: true, ..Default::default() };
    if let Ok(v) = v8::decode_with(data, &keep) {
        let bytes = v8::encode(&v).expect("a decoded value encodes");
        let again = v8::decode_with(&bytes, &keep).expect("our own output decodes");
        // NaN payloads and Latin-1 two-byte forms make value equality too
        // strict; byte equality of a second encoding is the invariant.
        assert_eq!(v8::encode(&again).expect("re-encode"), bytes);
    }
    let _ = v8::decode(data);
});
