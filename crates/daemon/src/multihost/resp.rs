//! The Redis protocol (RESP2, and the RESP3 reply types) as a pure codec: commands are
//! encoded as arrays of bulk strings, replies are parsed incrementally from whatever bytes
//! have arrived. Replies come from the network, so the parser bounds every length, the
//! nesting depth and the element counts, and never panics: a malformed reply is an error
//! for that connection, which is then dropped and re-established.

/// Largest bulk string accepted (stream entries carry adapter frames; these are far smaller).
pub const MAX_BULK: usize = 64 << 20;
/// Most elements in one aggregate reply.
pub const MAX_ELEMENTS: usize = 1 << 20;
/// Deepest nesting accepted (XREAD replies are 5 levels deep).
pub const MAX_DEPTH: usize = 16;
/// Longest simple line (status, error, number).
const MAX_LINE: usize = 64 << 10;

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`: the server refused the command.
    Error(String),
    Int(i64),
    /// `$-1`, `*-1` (RESP2) and `_` (RESP3).
    Nil,
    Bulk(Vec<u8>),
    /// Arrays, RESP3 sets and pushes.
    Array(Vec<Reply>),
    /// RESP3 maps, as key/value pairs.
    Map(Vec<(Reply, Reply)>),
    Double(f64),
    Bool(bool),
}

impl Reply {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(b) => Some(b),
            Reply::Status(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RespError {
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
    #[error("reply too large: {0}")]
    TooLarge(&'static str),
}

/// Appends one command (`*N\r\n$len\r\narg\r\n...`).
pub fn encode<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        let a = a.as_ref();
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the start of `buf`. `Ok(None)`: incomplete, read more and call
/// again with the longer buffer. `Ok(Some((reply, used)))`: `used` bytes were consumed.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    let mut p = Parser { buf, pos: 0 };
    match p.value(0)? {
        Some(r) => Ok(Some((r, p.pos))),
        None => Ok(None),
    }
}

/// Finds where one reply ends without building it, resuming where the previous call stopped.
///
/// A connection reads a large reply (an XREAD of a thousand entries is hundreds of kB) in
/// many pieces. Parsing the whole buffer again after each piece built and dropped every
/// element each time (quadratic: the reader of a busy stream spent most of its time there).
/// The scanner walks each byte once, keeping the elements still expected at every open
/// level; [`parse`] then runs once on the complete reply. It checks the same bounds as the
/// parser (depth, counts, lengths, line length), so a hostile peer cannot make it wait for
/// more than the parser would accept; the contents are checked by the parser.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Where the next element starts (everything before it is scanned).
    pos: usize,
    /// For each open aggregate, the elements it still expects.
    open: Vec<usize>,
}

impl Scanner {
    /// `buf` holds the reply from its first byte and only grows between calls. Returns the
    /// reply's length once it is complete (and forgets it: the next call starts a new reply
    /// at the start of the buffer it is given).
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, RespError> {
        loop {
            let mut p = Parser { buf, pos: self.pos };
            let Some(&tag) = buf.get(p.pos) else { return Ok(None) };
            p.pos += 1;
            // Elements this one opens (0: it is a leaf).
            let opens = match tag {
                b'+' | b'-' | b':' | b'(' | b'_' | b'#' | b',' => match p.line()? {
                    Some(_) => 0,
                    None => return Ok(None),
                },
                b'$' | b'=' | b'!' => match p.int_line()? {
                    None => return Ok(None),
                    Some(-1) => 0,
                    Some(n) => {
                        let n = usize::try_from(n).map_err(|_| RespError::Malformed("negative length"))?;
                        if n > MAX_BULK {
                            return Err(RespError::TooLarge("bulk string"));
                        }
                        if buf.len() - p.pos < n + 2 {
                            return Ok(None);
                        }
                        p.pos += n + 2;
                        0
                    }
                },
                b'*' | b'~' | b'>' | b'%' | b'|' => match p.count()? {
                    None => return Ok(None),
                    Some(None) => 0,
                    Some(Some(n)) => match tag {
                        b'%' => n * 2,
                        // An attribute map, then the reply it describes.
                        b'|' => n * 2 + 1,
                        _ => n,
                    },
                },
                _ => return Err(RespError::Malformed("unknown reply type")),
            };
            self.pos = p.pos;
            if opens > 0 {
                if self.open.len() > MAX_DEPTH {
                    return Err(RespError::TooLarge("nesting"));
                }
                self.open.push(opens);
                continue;
            }
            // A leaf is complete: it closes every aggregate it was the last element of.
            loop {
                match self.open.last_mut() {
                    None => {
                        let end = self.pos;
                        *self = Scanner::default();
                        return Ok(Some(end));
                    }
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    /// The next CRLF-terminated line, without the CRLF; None if incomplete.
    fn line(&mut self) -> Result<Option<&[u8]>, RespError> {
        let rest = &self.buf[self.pos..];
        let window = &rest[..rest.len().min(MAX_LINE + 2)];
        match window.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                let start = self.pos;
                self.pos += i + 2;
                Ok(Some(&self.buf[start..start + i]))
            }
            None if rest.len() > MAX_LINE + 1 => Err(RespError::TooLarge("line")),
            None => Ok(None),
        }
    }

    fn int_line(&mut self) -> Result<Option<i64>, RespError> {
        let Some(l) = self.line()? else { return Ok(None) };
        let s = std::str::from_utf8(l).map_err(|_| RespError::Malformed("number is not ASCII"))?;
        s.parse::<i64>().map(Some).map_err(|_| RespError::Malformed("bad number"))
    }

    fn text_line(&mut self) -> Result<Option<String>, RespError> {
        Ok(self.line()?.map(|l| String::from_utf8_lossy(l).into_owned()))
    }

    /// A length-prefixed blob (bulk, verbatim, blob error); None if incomplete,
    /// Some(None) for the RESP2 nil `-1`.
    fn blob(&mut self) -> Result<Option<Option<Vec<u8>>>, RespError> {
        let Some(n) = self.int_line()? else { return Ok(None) };
        if n == -1 {
            return Ok(Some(None));
        }
        let n = usize::try_from(n).map_err(|_| RespError::Malformed("negative length"))?;
        if n > MAX_BULK {
            return Err(RespError::TooLarge("bulk string"));
        }
        let rest = &self.buf[self.pos..];
        if rest.len() < n + 2 {
            return Ok(None);
        }
        if &rest[n..n + 2] != b"\r\n" {
            return Err(RespError::Malformed("bulk string not followed by CRLF"));
        }
        let v = rest[..n].to_vec();
        self.pos += n + 2;
        Ok(Some(Some(v)))
    }

    fn count(&mut self) -> Result<Option<Option<usize>>, RespError> {
        let Some(n) = self.int_line()? else { return Ok(None) };
        if n == -1 {
            return Ok(Some(None));
        }
        let n = usize::try_from(n).map_err(|_| RespError::Malformed("negative count"))?;
        if n > MAX_ELEMENTS {
            return Err(RespError::TooLarge("aggregate"));
        }
        Ok(Some(Some(n)))
    }

    fn value(&mut self, depth: usize) -> Result<Option<Reply>, RespError> {
        if depth > MAX_DEPTH {
            return Err(RespError::TooLarge("nesting"));
        }
        let Some(&tag) = self.buf.get(self.pos) else { return Ok(None) };
        self.pos += 1;
        macro_rules! need {
            ($e:expr) => {
                match $e? {
                    Some(v) => v,
                    None => return Ok(None),
                }
            };
        }
        let r = match tag {
            b'+' => Reply::Status(need!(self.text_line())),
            b'-' => Reply::Error(need!(self.text_line())),
            b':' => Reply::Int(need!(self.int_line())),
            b'$' => match need!(self.blob()) {
                Some(b) => Reply::Bulk(b),
                None => Reply::Nil,
            },
            // Verbatim string: "txt:" prefix then the text.
            b'=' => match need!(self.blob()) {
                Some(b) if b.len() >= 4 && b[3] == b':' => Reply::Bulk(b[4..].to_vec()),
                _ => return Err(RespError::Malformed("verbatim string without a format")),
            },
            b'!' => match need!(self.blob()) {
                Some(b) => Reply::Error(String::from_utf8_lossy(&b).into_owned()),
                None => return Err(RespError::Malformed("nil blob error")),
            },
            b'(' => {
                // Big number: kept as text, we never need its value.
                let l = need!(self.line());
                if l.is_empty()
                    || !l.iter().enumerate().all(|(i, c)| c.is_ascii_digit() || (i == 0 && *c == b'-'))
                {
                    return Err(RespError::Malformed("bad big number"));
                }
                Reply::Bulk(l.to_vec())
            }
            b'_' => {
                let l = need!(self.line());
                if !l.is_empty() {
                    return Err(RespError::Malformed("bad null"));
                }
                Reply::Nil
            }
            b'#' => match need!(self.line()) {
                b"t" => Reply::Bool(true),
                b"f" => Reply::Bool(false),
                _ => return Err(RespError::Malformed("bad boolean")),
            },
            b',' => {
                let l = need!(self.line());
                let s = std::str::from_utf8(l).map_err(|_| RespError::Malformed("bad double"))?;
                let v = match s {
                    "inf" => f64::INFINITY,
                    "-inf" => f64::NEG_INFINITY,
                    _ => s.parse::<f64>().map_err(|_| RespError::Malformed("bad double"))?,
                };
                Reply::Double(v)
            }
            b'*' | b'~' | b'>' => match need!(self.count()) {
                None => Reply::Nil,
                Some(n) => {
                    // Capacity grows with what actually arrives, not with the announced count.
                    let mut v = Vec::with_capacity(n.min(1024));
                    for _ in 0..n {
                        v.push(need!(self.value(depth + 1)));
                    }
                    Reply::Array(v)
                }
            },
            b'%' | b'|' => match need!(self.count()) {
                None => return Err(RespError::Malformed("nil map")),
                Some(n) => {
                    let mut v = Vec::with_capacity(n.min(1024));
                    for _ in 0..n {
                        let k = need!(self.value(depth + 1));
                        let val = need!(self.value(depth + 1));
                        v.push((k, val));
                    }
                    if tag == b'|' {
                        // Attributes describe the reply that follows; skip them.
                        return self.value(depth + 1);
                    }
                    Reply::Map(v)
                }
            },
            _ => return Err(RespError::Malformed("unknown reply type")),
        };
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &[u8]) -> Reply {
        let (r, used) = parse(s).unwrap().unwrap();
        assert_eq!(used, s.len(), "{:?}", String::from_utf8_lossy(s));
        r
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode(&["SET", "k", ""], &mut out);
        encode(&[b"GET".as_slice(), b"\r\n\0"], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*2\r\n$3\r\nGET\r\n$3\r\n\r\n\0\r\n");
    }

    #[test]
    fn parses_resp2() {
        assert_eq!(one(b"+OK\r\n"), Reply::Status("OK".into()));
        assert_eq!(one(b"-WRONGPASS invalid\r\n"), Reply::Error("WRONGPASS invalid".into()));
        assert_eq!(one(b":-42\r\n"), Reply::Int(-42));
        assert_eq!(one(b"$-1\r\n"), Reply::Nil);
        assert_eq!(one(b"*-1\r\n"), Reply::Nil);
        assert_eq!(one(b"$4\r\na\r\nb\r\n"), Reply::Bulk(b"a\r\nb".to_vec()));
        assert_eq!(
            one(b"*2\r\n$1\r\nx\r\n*1\r\n:1\r\n"),
            Reply::Array(vec![Reply::Bulk(b"x".to_vec()), Reply::Array(vec![Reply::Int(1)])])
        );
    }

    #[test]
    fn parses_resp3() {
        assert_eq!(one(b"_\r\n"), Reply::Nil);
        assert_eq!(one(b"#t\r\n"), Reply::Bool(true));
        assert_eq!(one(b",1.5\r\n"), Reply::Double(1.5));
        assert_eq!(one(b",-inf\r\n"), Reply::Double(f64::NEG_INFINITY));
        assert_eq!(one(b"(123\r\n"), Reply::Bulk(b"123".to_vec()));
        assert_eq!(one(b"=7\r\ntxt:abc\r\n"), Reply::Bulk(b"abc".to_vec()));
        assert_eq!(one(b"!3\r\nERR\r\n"), Reply::Error("ERR".into()));
        assert_eq!(one(b"%1\r\n+a\r\n:1\r\n"), Reply::Map(vec![(Reply::Status("a".into()), Reply::Int(1))]));
        assert_eq!(one(b"~1\r\n:1\r\n"), Reply::Array(vec![Reply::Int(1)]));
        assert_eq!(one(b"|1\r\n+ttl\r\n:3\r\n:7\r\n"), Reply::Int(7));
    }

    #[test]
    fn every_prefix_is_incomplete_never_an_error() {
        let full: &[u8] = b"*3\r\n$5\r\nhello\r\n*2\r\n:1\r\n+OK\r\n%1\r\n$1\r\nk\r\n,2.5\r\n";
        for i in 0..full.len() {
            assert_eq!(parse(&full[..i]), Ok(None), "prefix {i}");
        }
        let (_, used) = parse(full).unwrap().unwrap();
        assert_eq!(used, full.len());
        // Two replies back to back: the first is returned with its length.
        let mut two = full.to_vec();
        two.extend_from_slice(b"+OK\r\n");
        assert_eq!(parse(&two).unwrap().unwrap().1, full.len());
    }

    /// Feeds `full` to a scanner in pieces of `step` bytes, as reads would deliver it.
    fn scan_in_pieces(full: &[u8], step: usize) -> Result<Option<usize>, RespError> {
        let mut sc = Scanner::default();
        let mut have = 0;
        loop {
            have = (have + step).min(full.len());
            if let Some(end) = sc.scan(&full[..have])? {
                return Ok(Some(end));
            }
            if have == full.len() {
                return Ok(None);
            }
        }
    }

    #[test]
    fn the_scanner_finds_the_end_the_parser_finds_in_any_pieces() {
        let full: &[u8] = b"*3\r\n$5\r\nhello\r\n*2\r\n:1\r\n+OK\r\n%1\r\n$1\r\nk\r\n,2.5\r\n";
        let mut two = full.to_vec();
        two.extend_from_slice(b"|1\r\n+ttl\r\n:3\r\n*0\r\n");
        for step in 1..=full.len() {
            assert_eq!(scan_in_pieces(full, step), Ok(Some(full.len())), "step {step}");
            assert_eq!(scan_in_pieces(&two, step), Ok(Some(full.len())), "step {step}");
        }
        // The scanner starts over after a complete reply.
        let mut sc = Scanner::default();
        assert_eq!(sc.scan(&two), Ok(Some(full.len())));
        assert_eq!(sc.scan(&two[full.len()..]), Ok(Some(two.len() - full.len())));
        for nil in [&b"$-1\r\n"[..], b"*-1\r\n", b"_\r\n", b"*0\r\n"] {
            assert_eq!(Scanner::default().scan(nil), Ok(Some(nil.len())));
        }
        assert_eq!(Scanner::default().scan(b"*1000000\r\n:1\r\n"), Ok(None));
        assert_eq!(Scanner::default().scan(b"$999999999999\r\n"), Err(RespError::TooLarge("bulk string")));
        assert_eq!(Scanner::default().scan(b"*99999999\r\n"), Err(RespError::TooLarge("aggregate")));
        assert_eq!(
            Scanner::default().scan(&b"*1\r\n".repeat(MAX_DEPTH + 2)),
            Err(RespError::TooLarge("nesting"))
        );
        assert!(Scanner::default().scan(b"?\r\n").is_err());
    }

    #[test]
    fn random_bytes_scan_like_they_parse() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = b"+-:$*_#,(=!%~>|\r\n0123456789-abc";
        for _ in 0..50_000 {
            let mut buf = Vec::new();
            let len = (x % 48) as usize;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let scanned = Scanner::default().scan(&buf);
            // Whatever the parser takes whole, the scanner finds whole, with the same length.
            if let Ok(Some((_, used))) = parse(&buf) {
                assert_eq!(scanned, Ok(Some(used)), "{:?}", String::from_utf8_lossy(&buf));
            }
            // And in pieces it agrees with itself.
            if let Ok(r) = scanned {
                assert_eq!(scan_in_pieces(&buf, 3), Ok(r), "{:?}", String::from_utf8_lossy(&buf));
            }
        }
    }

    #[test]
    fn hostile_replies_are_errors() {
        for bad in [
            &b"?\r\n"[..],
            b":abc\r\n",
            b"$-2\r\n",
            b"$3\r\nabcXY",
            b"*-5\r\n",
            b"#x\r\n",
            b",nan-ish\r\n",
            b"(12a\r\n",
            b"_x\r\n",
            b"=2\r\nab\r\n",
            b"%-1\r\n",
            b":99999999999999999999\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"$999999999999\r\n"), Err(RespError::TooLarge("bulk string")));
        assert_eq!(parse(b"*99999999\r\n"), Err(RespError::TooLarge("aggregate")));
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 2);
        assert_eq!(parse(&deep), Err(RespError::TooLarge("nesting")));
        let long = vec![b'+'; MAX_LINE + 10];
        assert_eq!(parse(&long), Err(RespError::TooLarge("line")));
        // A huge announced count with few elements is just incomplete, and allocates little.
        assert_eq!(parse(b"*1000000\r\n:1\r\n"), Ok(None));
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small xorshift so the test is deterministic without a dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"+-:$*_#,(=!%~>|\r\n0123456789-abc";
        for _ in 0..20_000 {
            let mut buf = Vec::new();
            let len = (x % 40) as usize;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            if let Ok(Some((_, used))) = parse(&buf) {
                assert!(used <= buf.len());
            }
        }
    }
}
