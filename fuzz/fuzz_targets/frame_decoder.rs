//! Arbitrary byte streams, split into arbitrary reads, through the frame
//! decoder of both modes and then through the payload decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_ipc::{decode_payload, FrameDecoder, Mode};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    for mode in [Mode::Advanced, Mode::Json] {
        let mut dec = FrameDecoder::new(mode, 1 << 16);
        let step = (split as usize % 17) + 1;
        'feed: for chunk in rest.chunks(step) {
            dec.extend(chunk);
            loop {
                match dec.next_frame() {
                    Ok(Some(frame)) => {
                        if let Ok(v) = decode_payload(&frame, mode) {
                            // Whatever decodes must encode again without panicking.
                            let _ = node_ipc::encode_payload(&v, mode);
                        }
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
});
