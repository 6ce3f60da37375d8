//! Incremental amp frame decoding and `amp-message` unpacking.

use crate::{Error, AMP_VERSION};

/// One unpacked argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Str(String),
    Json(serde_json::Value),
    Blob(Vec<u8>),
}

impl Arg {
    pub fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Arg::Json(v) => Some(v),
            _ => None,
        }
    }
}

/// Unpacks one raw argument the way `amp-message` does: `j:` is JSON (a
/// parse error is an error here, where the JS side would throw), `s:` a
/// string (invalid UTF-8 replaced, as `Buffer#toString` does), else a blob.
pub fn unpack(raw: &[u8]) -> Result<Arg, Error> {
    match raw {
        [b'j', b':', rest @ ..] => {
            serde_json::from_slice(rest).map(Arg::Json).map_err(|e| Error::Json(e.to_string()))
        }
        [b's', b':', rest @ ..] => Ok(Arg::Str(String::from_utf8_lossy(rest).into_owned())),
        _ => Ok(Arg::Blob(raw.to_vec())),
    }
}

/// Reassembles amp frames from a byte stream.
///
/// Bytes are appended with [`Decoder::extend`]; [`Decoder::next_frame`]
/// returns each complete frame's raw (still packed) arguments. The buffer
/// never grows past the frame limit: a frame that announces more is an
/// error as soon as its header says so, before its bytes arrive.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    max: usize,
}

impl Decoder {
    pub fn new(max_frame: usize) -> Decoder {
        Decoder { buf: Vec::new(), pos: 0, max: max_frame }
    }

    pub fn extend(&mut self, data: &[u8]) {
        // Drop consumed bytes before growing, so a long-lived connection's
        // buffer stays the size of one frame.
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos >= 64 * 1024) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<Vec<u8>>>, Error> {
        let data = &self.buf[self.pos..];
        let Some(&meta) = data.first() else { return Ok(None) };
        let version = meta >> 4;
        if version != AMP_VERSION {
            return Err(Error::Version(version));
        }
        let argc = usize::from(meta & 0x0f);
        if argc == 0 {
            return Err(Error::NoArgs);
        }
        // First pass: are all the lengths and bytes here, and within bounds?
        let mut off = 1usize;
        for _ in 0..argc {
            let Some(len) = data.get(off..off + 4) else { return self.need(off + 4) };
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            off = off.saturating_add(4).saturating_add(len);
            if off > self.max {
                return Err(Error::TooLarge(off as u64, self.max));
            }
            if off > data.len() {
                return Ok(None);
            }
        }
        let mut args = Vec::with_capacity(argc);
        let mut at = 1usize;
        for _ in 0..argc {
            let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
            at += 4;
            args.push(data[at..at + len].to_vec());
            at += len;
        }
        self.pos += at;
        Ok(Some(args))
    }

    fn need(&self, upto: usize) -> Result<Option<Vec<Vec<u8>>>, Error> {
        if upto > self.max {
            return Err(Error::TooLarge(upto as u64, self.max));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, pack_json_text, pack_str};

    fn frames(dec: &mut Decoder) -> Result<Vec<Vec<Vec<u8>>>, Error> {
        let mut out = Vec::new();
        while let Some(f) = dec.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn bytes_of_amp_for_a_known_message() {
        // amp-message packing of ['s:hello', {a:1}]: what pm2-axon writes.
        let f = encode(&[pack_str("hello"), pack_json_text("{\"a\":1}")]).unwrap();
        let mut want = vec![0x12, 0, 0, 0, 7];
        want.extend_from_slice(b"s:hello");
        want.extend_from_slice(&[0, 0, 0, 9]);
        want.extend_from_slice(b"j:{\"a\":1}");
        assert_eq!(f, want);
    }

    #[test]
    fn any_split_decodes_the_same() {
        let a = encode(&[pack_str("x"), pack_json_text("[1,2,3]")]).unwrap();
        let b = encode(&[b"\x00\x01raw".to_vec()]).unwrap();
        let stream: Vec<u8> = [a.clone(), b.clone(), a.clone()].concat();
        for step in 1..stream.len() {
            let mut dec = Decoder::new(1024);
            let mut got = Vec::new();
            for chunk in stream.chunks(step) {
                dec.extend(chunk);
                got.extend(frames(&mut dec).unwrap());
            }
            assert_eq!(got.len(), 3, "step {step}");
            assert_eq!(got[1], vec![b"\x00\x01raw".to_vec()]);
            assert_eq!(unpack(&got[0][1]).unwrap(), Arg::Json(serde_json::json!([1, 2, 3])));
            assert_eq!(dec.pending(), 0);
        }
    }

    #[test]
    fn unpack_kinds() {
        assert_eq!(unpack(b"s:abc").unwrap(), Arg::Str("abc".into()));
        assert_eq!(unpack(b"s:").unwrap(), Arg::Str(String::new()));
        assert_eq!(unpack(b"j:null").unwrap(), Arg::Json(serde_json::Value::Null));
        assert_eq!(unpack(b"x:1").unwrap(), Arg::Blob(b"x:1".to_vec()));
        assert_eq!(unpack(b"").unwrap(), Arg::Blob(Vec::new()));
        assert_eq!(unpack(b"s:\xff").unwrap(), Arg::Str("\u{fffd}".into()));
        assert!(matches!(unpack(b"j:{"), Err(Error::Json(_))));
    }

    #[test]
    fn hostile_headers_are_errors_not_panics_or_allocations() {
        // Wrong version, zero args, huge lengths, garbage.
        for (bytes, want) in [
            (&b"\x21\x00\x00\x00\x00"[..], Error::Version(2)),
            (&b"\x10"[..], Error::NoArgs),
            (&b"GET / HTTP/1.1\r\n"[..], Error::Version(4)),
            (&b"\x11\xff\xff\xff\xff"[..], Error::TooLarge(1 + 4 + 0xffff_ffff, 1024)),
        ] {
            let mut dec = Decoder::new(1024);
            dec.extend(bytes);
            assert_eq!(dec.next_frame(), Err(want));
        }
        // The limit counts the whole frame, across arguments.
        let mut dec = Decoder::new(20);
        dec.extend(&[0x12, 0, 0, 0, 10]);
        dec.extend(&[0u8; 10]);
        dec.extend(&[0, 0, 0, 10]);
        assert!(matches!(dec.next_frame(), Err(Error::TooLarge(..))));
    }

    #[test]
    fn truncated_frames_wait_for_more() {
        let f = encode(&[pack_str("hello")]).unwrap();
        for cut in 0..f.len() {
            let mut dec = Decoder::new(1024);
            dec.extend(&f[..cut]);
            assert_eq!(dec.next_frame(), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn encode_limits() {
        assert_eq!(encode(&[]), Err(Error::NoArgs));
        assert_eq!(encode(&vec![Vec::new(); 16]), Err(Error::TooManyArgs(16)));
        assert!(encode(&vec![Vec::new(); 15]).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn round_trip(args in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..64), 1..15),
                      step in 1usize..40) {
            let f = encode(&args).unwrap();
            let mut dec = Decoder::new(1 << 20);
            let mut got = Vec::new();
            for c in f.chunks(step) {
                dec.extend(c);
                got.extend(frames(&mut dec).unwrap());
            }
            proptest::prop_assert_eq!(got, vec![args]);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(0u8..=255, 0..256), step in 1usize..17) {
            let mut dec = Decoder::new(4096);
            'feed: for c in data.chunks(step) {
                dec.extend(c);
                loop {
                    match dec.next_frame() {
                        Ok(Some(f)) => { for a in &f { let _ = unpack(a); } }
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
        }
    }
}
