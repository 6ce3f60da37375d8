//! One stream entry: an adapter frame a worker of this node sent, with what the other nodes
//! need to route it without decoding it, signed with HMAC-SHA256 under the cluster secret.
//!
//! A frame's values (one-letter names; every value is covered by the signature): `n` node
//! id, `i` incarnation (random per daemon start), `q` per-node sequence number, `g` app
//! group, `w` sending worker, `k` adapter message type, `u` uid, `s` namespace, `r`
//! requesterUid, `t` the only node that should deliver it (responses), `m` the frame's
//! encoding (`a` V8, `j` JSON), `f` the frame bytes. Absent optional values are empty.
//!
//! A stream entry carries one frame with these as its fields plus `h`, the signature, or
//! (what the publisher writes) a batch: `n`, `b` and `h`, where `b` holds the frames the
//! publisher had queued when it woke, each as its eleven values after `n`, every value
//! prefixed by its length (u32, big endian), and `h` signs `n` and `b`. A burst then costs
//! Redis one entry, and every reader one signature and one field, per batch rather than per
//! frame; a paced stream makes batches of one.

use super::resp::Reply;

/// What a node publishes for one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub node: String,
    pub incarnation: String,
    pub seq: u64,
    pub group: String,
    pub sender: u32,
    pub kind: Option<i64>,
    pub uid: Option<String>,
    pub nsp: Option<String>,
    pub requester: Option<String>,
    pub to: Option<String>,
    /// The frame is JSON (a worker spawned with JSON serialization), not V8.
    pub json: bool,
    pub frame: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("malformed entry: {0}")]
    Malformed(&'static str),
    /// Signed with another secret, or altered: the node name is the claim, not a fact.
    #[error("bad signature (claims node {0:?}; a different PM2_CLUSTER_SECRET?)")]
    BadSignature(String),
}

const NAMES: [&str; 13] = ["n", "i", "q", "g", "w", "k", "u", "s", "r", "t", "m", "f", "h"];
/// Frames in one batch at most (the publisher's batches are far smaller).
pub const MAX_BATCH: usize = 4096;
/// The publisher starts a new batch past this many bytes of frames.
pub const BATCH_BYTES: usize = 256 << 10;

fn opt(s: &Option<String>) -> &[u8] {
    s.as_deref().unwrap_or("").as_bytes()
}

impl Entry {
    /// The signed fields in order, each as (name, value); the signature is computed over
    /// their length-prefixed concatenation, so no two field sets sign the same bytes.
    fn signed(&self) -> [(&'static str, Vec<u8>); 12] {
        [
            ("n", self.node.as_bytes().to_vec()),
            ("i", self.incarnation.as_bytes().to_vec()),
            ("q", self.seq.to_string().into_bytes()),
            ("g", self.group.as_bytes().to_vec()),
            ("w", self.sender.to_string().into_bytes()),
            ("k", self.kind.map(|k| k.to_string()).unwrap_or_default().into_bytes()),
            ("u", opt(&self.uid).to_vec()),
            ("s", opt(&self.nsp).to_vec()),
            ("r", opt(&self.requester).to_vec()),
            ("t", opt(&self.to).to_vec()),
            ("m", if self.json { b"j".to_vec() } else { b"a".to_vec() }),
            ("f", self.frame.clone()),
        ]
    }

    /// A batch's body: each entry's signed values after the node id, length-prefixed.
    pub fn batch_body(entries: &[&Entry]) -> Vec<u8> {
        let mut body = Vec::with_capacity(entries.iter().map(|e| e.frame.len() + 96).sum());
        for e in entries {
            for (_, v) in e.signed().iter().skip(1) {
                body.extend_from_slice(&(v.len() as u32).to_be_bytes());
                body.extend_from_slice(v);
            }
        }
        body
    }

    /// A batch's signature (hex): the node id and the body under the cluster secret.
    pub fn batch_mac(node: &str, body: &[u8], secret: &[u8]) -> String {
        hex(&sign(secret, [node.as_bytes(), body]))
    }

    /// Cuts `entries` into batches in order, a new one past [`BATCH_BYTES`] of frames (a
    /// frame bigger than that is a batch of its own), and calls `each` for each batch: what
    /// one stream entry or one push carries.
    pub fn in_batches<'a>(entries: impl IntoIterator<Item = &'a Entry>, mut each: impl FnMut(&[&'a Entry])) {
        let mut group: Vec<&Entry> = Vec::new();
        let mut bytes = 0usize;
        for e in entries {
            if !group.is_empty() && bytes + e.frame.len() > BATCH_BYTES {
                each(&group);
                group.clear();
                bytes = 0;
            }
            bytes += e.frame.len();
            group.push(e);
        }
        if !group.is_empty() {
            each(&group);
        }
    }

    /// The XADD field/value arguments of a batch of this node's entries, signature last.
    pub fn batch_fields(node: &str, entries: &[&Entry], secret: &[u8]) -> Vec<Vec<u8>> {
        let body = Entry::batch_body(entries);
        let mac = Entry::batch_mac(node, &body, secret);
        vec![b"n".to_vec(), node.as_bytes().to_vec(), b"b".to_vec(), body, b"h".to_vec(), mac.into_bytes()]
    }

    /// The XADD field/value arguments of this entry alone, signature last.
    pub fn to_fields(&self, secret: &[u8]) -> Vec<Vec<u8>> {
        let signed = self.signed();
        let mac = sign(secret, signed.iter().map(|(_, v)| v.as_slice()));
        let mut out = Vec::with_capacity(26);
        for (k, v) in signed {
            out.push(k.as_bytes().to_vec());
            out.push(v);
        }
        out.push(b"h".to_vec());
        out.push(hex(&mac).into_bytes());
        out
    }

    /// The node an entry claims to come from, without verifying it: a node skips its own
    /// entries (it reads the stream it writes) before paying for their signature. A forged
    /// entry claiming to be ours is skipped the same way, never delivered.
    pub fn claimed_node(fields: &[Reply]) -> Option<&[u8]> {
        fields.chunks_exact(2).find(|p| p[0].as_bytes() == Some(b"n")).and_then(|p| p[1].as_bytes())
    }

    /// The node, incarnation and last sequence number a batch claims, without verifying or
    /// copying anything: a stream entry whose frames a push already delivered is skipped
    /// before its signature is checked (skipping a forged claim is harmless; only delivery
    /// needs the signature). `None` for a single-frame entry or a malformed batch.
    pub fn claimed_last(fields: &[Reply]) -> Option<(&[u8], &[u8], u64)> {
        if fields.len() != 6 || fields[0].as_bytes() != Some(b"n") || fields[2].as_bytes() != Some(b"b") {
            return None;
        }
        let (node, mut rest) = (fields[1].as_bytes()?, fields[3].as_bytes()?);
        let mut last = None;
        while !rest.is_empty() {
            // Eleven values per entry: the incarnation and the sequence number first.
            let mut v: [&[u8]; 11] = [&[]; 11];
            for slot in v.iter_mut() {
                let (len, tail) = rest.split_first_chunk::<4>()?;
                let len = u32::from_be_bytes(*len) as usize;
                *slot = tail.get(..len)?;
                rest = &tail[len..];
            }
            last = Some([v[0], v[1]]);
        }
        let [inc, seq] = last?;
        let seq = std::str::from_utf8(seq).ok()?.parse().ok()?;
        Some((node, inc, seq))
    }

    /// Parses and verifies a stream entry's field/value list as XREAD returns it: a batch
    /// or a single frame.
    pub fn from_fields(fields: &[Reply], secret: &[u8]) -> Result<Vec<Entry>, EntryError> {
        let m = EntryError::Malformed;
        if fields.len() == 6 && fields[2].as_bytes() == Some(b"b") {
            let mut vals: [Option<&[u8]>; 3] = [None; 3];
            for pair in fields.chunks_exact(2) {
                let k = pair[0].as_bytes().ok_or(m("field name is not a string"))?;
                let v = pair[1].as_bytes().ok_or(m("field value is not a string"))?;
                let i = [&b"n"[..], b"b", b"h"].iter().position(|n| *n == k).ok_or(m("unknown field"))?;
                if vals[i].replace(v).is_some() {
                    return Err(m("duplicate field"));
                }
            }
            let [Some(n), Some(body), Some(h)] = vals else { return Err(m("missing field")) };
            return Entry::from_batch(n, body, h, secret);
        }
        Entry::from_single(fields, secret).map(|e| vec![e])
    }

    /// Parses and verifies a batch: the claimed node id, the body and its signature (hex), as
    /// a stream entry's fields or a direct push carry them.
    pub fn from_batch(n: &[u8], body: &[u8], h: &[u8], secret: &[u8]) -> Result<Vec<Entry>, EntryError> {
        let m = EntryError::Malformed;
        let node = std::str::from_utf8(n).map_err(|_| m("field is not UTF-8"))?;
        let mac = sign(secret, [n, body]);
        if !ct_eq(hex(&mac).as_bytes(), h) {
            return Err(EntryError::BadSignature(node.chars().take(64).collect()));
        }
        let mut out = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            if out.len() >= MAX_BATCH {
                return Err(m("too many frames in a batch"));
            }
            let mut v: [&[u8]; 11] = [&[]; 11];
            for slot in v.iter_mut() {
                let (len, tail) = rest.split_first_chunk::<4>().ok_or(m("truncated batch"))?;
                let len = u32::from_be_bytes(*len) as usize;
                if tail.len() < len {
                    return Err(m("truncated batch"));
                }
                let (value, tail) = tail.split_at(len);
                *slot = value;
                rest = tail;
            }
            out.push(Entry::from_values(node, v)?);
        }
        Ok(out)
    }

    /// One frame's entry (what publishers before batching wrote).
    fn from_single(fields: &[Reply], secret: &[u8]) -> Result<Entry, EntryError> {
        let m = EntryError::Malformed;
        if !fields.len().is_multiple_of(2) || fields.len() > 2 * NAMES.len() {
            return Err(m("odd or too many fields"));
        }
        let mut vals: [Option<&[u8]>; 13] = [None; 13];
        for pair in fields.chunks_exact(2) {
            let k = pair[0].as_bytes().ok_or(m("field name is not a string"))?;
            let v = pair[1].as_bytes().ok_or(m("field value is not a string"))?;
            let i = NAMES.iter().position(|n| n.as_bytes() == k).ok_or(m("unknown field"))?;
            if vals[i].replace(v).is_some() {
                return Err(m("duplicate field"));
            }
        }
        let [Some(n), Some(i), Some(q), Some(g), Some(w), Some(k), Some(u), Some(s), Some(r), Some(t), Some(mo), Some(f), Some(h)] =
            vals
        else {
            return Err(m("missing field"));
        };
        let text = |b: &[u8]| std::str::from_utf8(b).map(str::to_owned).map_err(|_| m("field is not UTF-8"));
        let node = text(n)?;
        // Verified before anything else is believed.
        let mac = sign(secret, [n, i, q, g, w, k, u, s, r, t, mo, f]);
        if !ct_eq(hex(&mac).as_bytes(), h) {
            return Err(EntryError::BadSignature(node.chars().take(64).collect()));
        }
        Entry::from_values(&node, [i, q, g, w, k, u, s, r, t, mo, f])
    }

    /// An entry from its values after the node id (verified by the caller).
    fn from_values(node: &str, v: [&[u8]; 11]) -> Result<Entry, EntryError> {
        let m = EntryError::Malformed;
        let [i, q, g, w, k, u, s, r, t, mo, f] = v;
        let text = |b: &[u8]| std::str::from_utf8(b).map(str::to_owned).map_err(|_| m("field is not UTF-8"));
        let num = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse::<u64>().ok());
        let opt_text = |b: &[u8]| -> Result<Option<String>, EntryError> {
            if b.is_empty() {
                Ok(None)
            } else {
                text(b).map(Some)
            }
        };
        Ok(Entry {
            node: node.to_owned(),
            incarnation: text(i)?,
            seq: num(q).ok_or(m("bad sequence number"))?,
            group: text(g)?,
            sender: num(w).and_then(|w| u32::try_from(w).ok()).ok_or(m("bad sender"))?,
            kind: if k.is_empty() {
                None
            } else {
                Some(std::str::from_utf8(k).ok().and_then(|s| s.parse::<i64>().ok()).ok_or(m("bad type"))?)
            },
            uid: opt_text(u)?,
            nsp: opt_text(s)?,
            requester: opt_text(r)?,
            to: opt_text(t)?,
            json: match mo {
                b"a" => false,
                b"j" => true,
                _ => return Err(m("bad encoding")),
            },
            frame: f.to_vec(),
        })
    }
}

/// HMAC-SHA256 over the length-prefixed parts. ring's SHA-256 uses the CPU's SHA
/// instructions where there are some: every entry is signed once and verified by every
/// other node, which made the portable implementation a tenth of a busy reader's time.
pub(super) fn sign<'a>(secret: &[u8], parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut h = ring::hmac::Context::with_key(&key);
    for p in parts {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(h.sign().as_ref());
    out
}

pub(super) fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 0xf)] as char);
    }
    s
}

/// Constant-time comparison: how much of a forged signature matched must not leak.
pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            node: "web-1".into(),
            incarnation: "00ff".into(),
            seq: 42,
            group: "chat".into(),
            sender: 3,
            kind: Some(8),
            uid: Some("59186b404b17233b".into()),
            nsp: Some("/".into()),
            requester: Some("aaaabbbbccccdddd".into()),
            to: Some("web-2".into()),
            json: false,
            frame: vec![0xff, 0x0f, 0x6f, 0x00, 0x0d, 0x0a],
        }
    }

    fn as_replies(fields: Vec<Vec<u8>>) -> Vec<Reply> {
        fields.into_iter().map(Reply::Bulk).collect()
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let back = Entry::from_fields(&as_replies(e.to_fields(b"secret")), b"secret").unwrap();
        assert_eq!(back, vec![e]);
        let bare =
            Entry { kind: None, uid: None, nsp: None, requester: None, to: None, json: true, ..sample() };
        assert_eq!(Entry::from_fields(&as_replies(bare.to_fields(b"k")), b"k").unwrap(), vec![bare]);
    }

    fn batch() -> Vec<Entry> {
        let bare = Entry { seq: 43, kind: None, uid: None, to: None, json: true, frame: vec![], ..sample() };
        let big = Entry { seq: 44, frame: vec![7; 70_000], ..sample() };
        vec![sample(), bare, big]
    }

    #[test]
    fn a_batch_round_trips_and_says_whose_it_is() {
        let b = batch();
        let refs: Vec<&Entry> = b.iter().collect();
        let fields = as_replies(Entry::batch_fields("web-1", &refs, b"secret"));
        assert_eq!(fields.len(), 6);
        assert_eq!(Entry::claimed_node(&fields), Some(&b"web-1"[..]));
        assert_eq!(Entry::from_fields(&fields, b"secret").unwrap(), b);
        assert_eq!(Entry::from_fields(&fields, b"other"), Err(EntryError::BadSignature("web-1".into())));
    }

    #[test]
    fn batches_are_cut_in_order_past_the_byte_bound() {
        let sized = |seq, n| Entry { seq, frame: vec![0; n], ..sample() };
        let es = [sized(1, 100), sized(2, BATCH_BYTES), sized(3, 10), sized(4, 10)];
        let mut cuts = Vec::new();
        Entry::in_batches(&es, |g| cuts.push(g.iter().map(|e| e.seq).collect::<Vec<_>>()));
        assert_eq!(cuts, vec![vec![1], vec![2], vec![3, 4]]);
        Entry::in_batches(&[], |_| panic!("no batch of nothing"));
    }

    #[test]
    fn a_batch_tells_its_last_sequence_number_unverified() {
        let b = batch();
        let refs: Vec<&Entry> = b.iter().collect();
        let fields = as_replies(Entry::batch_fields("node-a", &refs, b"k"));
        let last = b.last().unwrap();
        assert_eq!(
            Entry::claimed_last(&fields),
            Some((&b"node-a"[..], last.incarnation.as_bytes(), last.seq))
        );
        // Truncated or single-frame: nothing claimed.
        let mut cut = fields.clone();
        if let Reply::Bulk(body) = &mut cut[3] {
            body.truncate(body.len() - 1);
        }
        assert_eq!(Entry::claimed_last(&cut), None);
        assert_eq!(Entry::claimed_last(&as_replies(last.to_fields(b"k"))), None);
    }

    #[test]
    fn an_altered_or_malformed_batch_is_refused() {
        let b = batch();
        let refs: Vec<&Entry> = b.iter().collect();
        let fields = Entry::batch_fields("web-1", &refs, b"s");
        // Any byte of the body or the node id changed: the signature no longer matches.
        for (field, at) in [(3, 0), (3, 5), (3, 200), (1, 0)] {
            let mut f = fields.clone();
            f[field][at] ^= 1;
            assert!(
                matches!(Entry::from_fields(&as_replies(f), b"s"), Err(EntryError::BadSignature(_))),
                "field {field} byte {at}"
            );
        }
        // Signed but not a whole number of frames, or a length past the end.
        let resign = |body: Vec<u8>| {
            let mac = hex(&sign(b"s", [&b"web-1"[..], body.as_slice()]));
            as_replies(vec![
                b"n".to_vec(),
                b"web-1".to_vec(),
                b"b".to_vec(),
                body,
                b"h".to_vec(),
                mac.into_bytes(),
            ])
        };
        let mut short = fields[3].clone();
        short.truncate(short.len() - 1);
        assert_eq!(Entry::from_fields(&resign(short), b"s"), Err(EntryError::Malformed("truncated batch")));
        assert_eq!(
            Entry::from_fields(&resign(vec![0, 0, 0]), b"s"),
            Err(EntryError::Malformed("truncated batch"))
        );
        assert_eq!(
            Entry::from_fields(&resign(vec![0xff, 0xff, 0xff, 0xff, 1]), b"s"),
            Err(EntryError::Malformed("truncated batch"))
        );
        // An empty batch is no frame at all.
        assert_eq!(Entry::from_fields(&resign(vec![]), b"s"), Ok(vec![]));
        // Values that make no sense are refused even when signed.
        let mut bad = Vec::new();
        for v in [&b"inc"[..], b"x", b"g", b"1", b"", b"", b"", b"", b"", b"a", b""] {
            bad.extend_from_slice(&(v.len() as u32).to_be_bytes());
            bad.extend_from_slice(v);
        }
        assert_eq!(Entry::from_fields(&resign(bad), b"s"), Err(EntryError::Malformed("bad sequence number")));
        // A duplicated or unknown field name.
        let mut dup = as_replies(fields.clone());
        dup[2] = Reply::Bulk(b"n".to_vec());
        assert!(Entry::from_fields(&dup, b"s").is_err());
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        let mac = ring::hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(hex(mac.as_ref()), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn signatures_are_the_length_prefixed_hmac() {
        // The same bytes as the portable implementation signed them: entries of nodes on
        // either build verify.
        let mut m = Vec::new();
        for p in [&b"ab"[..], b"", b"c"] {
            m.extend_from_slice(&(p.len() as u64).to_be_bytes());
            m.extend_from_slice(p);
        }
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
        assert_eq!(sign(b"k", [&b"ab"[..], b"", b"c"]).as_slice(), ring::hmac::sign(&key, &m).as_ref());
        assert_eq!(hex(&[0x00, 0x9f, 0xff]), "009fff");
    }

    #[test]
    fn wrong_secret_or_any_altered_field_is_refused() {
        let fields = sample().to_fields(b"secret");
        assert_eq!(
            Entry::from_fields(&as_replies(fields.clone()), b"other"),
            Err(EntryError::BadSignature("web-1".into()))
        );
        for i in (1..fields.len() - 2).step_by(2) {
            let mut f = fields.clone();
            f[i].push(b'0');
            assert!(
                matches!(Entry::from_fields(&as_replies(f), b"secret"), Err(EntryError::BadSignature(_))),
                "field {}",
                String::from_utf8_lossy(&fields[i - 1])
            );
        }
        // Moving a byte from one field to the next changes the signed bytes too.
        let mut f = fields.clone();
        let last = f[1].pop().unwrap();
        f[3].insert(0, last);
        assert!(matches!(Entry::from_fields(&as_replies(f), b"secret"), Err(EntryError::BadSignature(_))));
    }

    #[test]
    fn malformed_entries_are_errors() {
        let fields = sample().to_fields(b"s");
        let r = as_replies(fields.clone());
        assert!(Entry::from_fields(&r[..r.len() - 1], b"s").is_err());
        assert!(Entry::from_fields(&r[..r.len() - 2], b"s").is_err());
        let mut dup = r.clone();
        dup[2] = Reply::Bulk(b"n".to_vec());
        assert!(Entry::from_fields(&dup, b"s").is_err());
        let mut odd = r.clone();
        odd[0] = Reply::Bulk(b"zz".to_vec());
        assert!(Entry::from_fields(&odd, b"s").is_err());
        let mut nested = r;
        nested[1] = Reply::Array(vec![]);
        assert!(Entry::from_fields(&nested, b"s").is_err());
        assert!(Entry::from_fields(&[], b"s").is_err());
        // Signed but nonsensical values are still refused.
        let bad = Entry { seq: 1, ..sample() };
        let mut f = bad.to_fields(b"s");
        f[5] = b"x".to_vec();
        assert!(Entry::from_fields(&as_replies(f), b"s").is_err());
    }
}
