//! Arbitrary bytes, split into arbitrary reads, through the sticky balancer's HTTP reader (head,
//! body, chunked framing, streaming threshold), the pipelined-handshake counter and the
//! Engine.IO target checks. Nothing may panic, and what the reader returns must be a prefix of
//! what was sent with consistent offsets.
#![no_main]

use corral_daemon::sticky::http::{count_handshakes, is_engine_io_target, read_request, sid_from_target};
use corral_daemon::sticky::HttpLimits;
use libfuzzer_sys::fuzz_target;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Hands out the input in chunks of `step` bytes, then EOF. Never pending.
struct Chunks<'a> {
    rest: &'a [u8],
    step: usize,
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.step.min(self.rest.len()).min(buf.remaining());
        let (now, later) = self.rest.split_at(n);
        buf.put_slice(now);
        self.rest = later;
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static RT: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, input)) = data.split_first() else { return };
    let step = usize::from(knobs % 23) + 1;
    let limits = HttpLimits {
        max_head: 512 + usize::from(knobs) * 8,
        max_body: 4096,
        stream_above: if knobs & 1 == 0 { 256 } else { 4096 },
        ..HttpLimits::default()
    };
    let result = RT.with(|rt| rt.block_on(read_request(&mut Chunks { rest: input, step }, &limits)));
    if let Ok(req) = result {
        assert!(input.starts_with(&req.data), "data is not what was sent");
        assert!(req.head_len <= req.end && req.end <= req.data.len());
        assert!(req.head_len <= limits.max_head);
        if !req.body_complete {
            assert_eq!(req.end, req.data.len());
        }
        if let Some(sid) = &req.sid {
            assert!(!sid.is_empty() && sid.len() <= 256);
        }
        let _ = count_handshakes(&req.data, &limits);
    }
    let _ = count_handshakes(input, &limits);
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = is_engine_io_target(text);
        let _ = sid_from_target(text);
    }
});
