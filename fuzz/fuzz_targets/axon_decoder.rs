//! Arbitrary byte streams, split into arbitrary reads, through the amp frame
//! decoder, argument unpacking and RPC request parsing (what rpc.sock and
//! pub.sock read from clients).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut dec = axon::Decoder::new(1 << 16);
    let step = (split as usize % 17) + 1;
    'feed: for chunk in rest.chunks(step) {
        dec.extend(chunk);
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    for a in &frame {
                        let _ = axon::unpack(a);
                    }
                    if let Ok(inc) = axon::rpc::parse_request(frame) {
                        let _ = axon::rpc::reply_err(&inc.id, "x");
                    }
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
});
