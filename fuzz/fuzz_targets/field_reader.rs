//! The top-level field reader on arbitrary V8 payloads and JSON lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_ipc::fields::{read_fields_json, read_fields_v8};

fuzz_target!(|data: &[u8]| {
    for f in [read_fields_v8(data), read_fields_json(data)].into_iter().flatten() {
        for v in [f.source, f.type_, f.cmd, f.uid, f.requester_uid, f.act, f.ack, f.seq, f.key, f.nsp]
            .into_iter()
            .flatten()
        {
            let _ = v.as_str();
            let _ = v.eq_str("NODE_HANDLE");
        }
        let _ = f.is_internal();
    }
});
