//! Which node owns an Engine.IO session: the signed record kept in Redis and the lookup
//! cache (pure: no I/O, the clock is passed in).
//!
//! `corral:sid:<group>:<sid>` = `<node> <host:port> <hmac>`: the owning node, where its
//! node-to-node listener is reached, and an HMAC-SHA256 under the cluster secret of the key's
//! group and sid with both values. Anyone who can write to Redis could otherwise point a sid
//! at a host of their choosing and receive its requests.

use super::entry::{ct_eq, hex, sign};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Lifetime of a record in Redis: a safety net for a node that died without deleting its
/// records; the owner refreshes its live sessions' records every [`REFRESH_EVERY`].
pub const RECORD_TTL: Duration = Duration::from_secs(120);
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// How long a lookup's answer is believed. An owner that is wrong (the session ended, the
/// node died) is found out by the forward itself, which then drops the entry.
pub const POSITIVE_TTL: Duration = Duration::from_secs(60);
/// A sid nobody owns: asked again after this (a client retrying a stale sid costs one `GET`
/// per second, not one per request).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Entries kept at most; past this the expired ones go, then everything.
pub const MAX_CACHED: usize = 50_000;

pub fn record_key(group: &str, sid: &str) -> String {
    format!("corral:sid:{group}:{sid}")
}

/// A session's owner, as read from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    /// `host:port` of its node-to-node listener.
    pub addr: String,
}

fn mac(secret: &[u8], group: &str, sid: &str, node: &str, addr: &str) -> String {
    hex(&sign(
        secret,
        [b"sid".as_slice(), group.as_bytes(), sid.as_bytes(), node.as_bytes(), addr.as_bytes()],
    ))
}

/// The record value this node writes for a session it owns.
pub fn record_value(secret: &[u8], group: &str, sid: &str, node: &str, addr: &str) -> String {
    format!("{node} {addr} {}", mac(secret, group, sid, node, addr))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("malformed session record")]
    Malformed,
    #[error("session record with a bad signature (claims node {0:?}; a different PM2_CLUSTER_SECRET?)")]
    BadSignature(String),
}

/// Parses and verifies a record read from `record_key(group, sid)`.
pub fn parse_record(secret: &[u8], group: &str, sid: &str, value: &[u8]) -> Result<Owner, RecordError> {
    let text = std::str::from_utf8(value).map_err(|_| RecordError::Malformed)?;
    let mut it = text.split(' ');
    let (Some(node), Some(addr), Some(m), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(RecordError::Malformed);
    };
    if !ct_eq(mac(secret, group, sid, node, addr).as_bytes(), m.as_bytes()) {
        return Err(RecordError::BadSignature(node.chars().take(64).collect()));
    }
    Ok(Owner { node: node.to_owned(), addr: addr.to_owned() })
}

/// Recent lookups: `Some(owner)` or `None` (nobody owns it), each with its expiry.
#[derive(Debug, Default)]
pub struct Cache {
    map: HashMap<(String, String), (Option<Owner>, Instant)>,
}

/// What the cache knows of a sid.
#[derive(Debug, PartialEq, Eq)]
pub enum Cached {
    Owner(Owner),
    Nobody,
    Unknown,
}

impl Cache {
    pub fn get(&mut self, group: &str, sid: &str, now: Instant) -> Cached {
        let key = (group.to_owned(), sid.to_owned());
        match self.map.get(&key) {
            Some((_, exp)) if *exp <= now => {
                self.map.remove(&key);
                Cached::Unknown
            }
            Some((Some(o), _)) => Cached::Owner(o.clone()),
            Some((None, _)) => Cached::Nobody,
            None => Cached::Unknown,
        }
    }

    pub fn put(&mut self, group: &str, sid: &str, owner: Option<Owner>, now: Instant) {
        if self.map.len() >= MAX_CACHED {
            self.map.retain(|_, (_, exp)| *exp > now);
            if self.map.len() >= MAX_CACHED {
                // Only a flood of distinct sids gets here; forgetting costs a GET each.
                self.map.clear();
            }
        }
        let ttl = if owner.is_some() { POSITIVE_TTL } else { NEGATIVE_TTL };
        self.map.insert((group.to_owned(), sid.to_owned()), (owner, now + ttl));
    }

    /// The forward failed: the owner is no longer right.
    pub fn forget(&mut self, group: &str, sid: &str) {
        self.map.remove(&(group.to_owned(), sid.to_owned()));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_forgeries_are_refused() {
        let v = record_value(b"k", "chat", "sid1", "web-2", "10.0.0.2:7000");
        let o = parse_record(b"k", "chat", "sid1", v.as_bytes()).unwrap();
        assert_eq!(o, Owner { node: "web-2".into(), addr: "10.0.0.2:7000".into() });
        // Another secret, another sid or group (a record copied to another key), an edit.
        assert!(matches!(
            parse_record(b"x", "chat", "sid1", v.as_bytes()),
            Err(RecordError::BadSignature(_))
        ));
        assert!(parse_record(b"k", "chat", "sid2", v.as_bytes()).is_err());
        assert!(parse_record(b"k", "other", "sid1", v.as_bytes()).is_err());
        let edited = v.replace("10.0.0.2", "10.6.6.6");
        assert!(parse_record(b"k", "chat", "sid1", edited.as_bytes()).is_err());
        for bad in [&b""[..], b"a b", b"a b c d", &[0xff, 0x20, 0x20]] {
            assert!(parse_record(b"k", "chat", "sid1", bad).is_err());
        }
    }

    #[test]
    fn cache_expires_positive_and_negative_entries() {
        let mut c = Cache::default();
        let t = Instant::now();
        let o = Owner { node: "b".into(), addr: "h:1".into() };
        assert_eq!(c.get("g", "s", t), Cached::Unknown);
        c.put("g", "s", Some(o.clone()), t);
        c.put("g", "gone", None, t);
        assert_eq!(c.get("g", "s", t + POSITIVE_TTL - Duration::from_millis(1)), Cached::Owner(o));
        assert_eq!(c.get("g", "gone", t), Cached::Nobody);
        assert_eq!(c.get("g", "gone", t + NEGATIVE_TTL), Cached::Unknown);
        assert_eq!(c.get("g", "s", t + POSITIVE_TTL), Cached::Unknown);
        c.put("g", "s", None, t);
        c.forget("g", "s");
        assert_eq!(c.get("g", "s", t), Cached::Unknown);
    }

    #[test]
    fn cache_is_bounded() {
        let mut c = Cache::default();
        let t = Instant::now();
        for i in 0..MAX_CACHED + 10 {
            c.put("g", &i.to_string(), None, t);
        }
        assert!(c.len() <= MAX_CACHED);
    }
}
