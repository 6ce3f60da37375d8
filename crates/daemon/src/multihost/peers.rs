//! What this node knows about the others, from the entries it reads and their heartbeat
//! keys: a pure state machine (no I/O, no clock), owned by the stream reader.
//!
//! - Each peer is a node id plus an incarnation (random per daemon start). Its entries carry
//!   a per-node sequence number: one below the next expected is a duplicate (a publisher
//!   that retried after a lost reply, or replayed its recent entries after Redis lost its
//!   data), a jump is entries lost (trimmed from the stream while we were away), counted.
//! - The uids (and namespaces) each peer's workers used, so that when the peer dies every
//!   local worker gets `ADAPTER_CLOSE` for each of them at once, and so that a response
//!   for a remote requester is published for its node only.
//! - A peer whose heartbeat key is gone, or names another incarnation, is dead.

use super::entry::Entry;
use crate::sticky::relay::kind;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// uids remembered per peer (bounded against a node spinning dynamic namespaces).
const MAX_UIDS_PER_PEER: usize = 1 << 16;
const MAX_NSPS_PER_UID: usize = 16;
/// Peers remembered at once: a stream flooded with made-up node ids (signed, so only by a
/// holder of the secret) cannot grow memory without bound.
const MAX_PEERS: usize = 1024;

/// An adapter close to deliver to the local workers of `group`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Close {
    pub group: String,
    pub uid: String,
    pub nsp: String,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub incarnation: String,
    next_seq: Option<u64>,
    /// uid -> (group, namespaces)
    uids: BTreeMap<String, (String, BTreeSet<String>)>,
    pub entries: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Entries delivered by a push (the direct path) and the sequence number after the last
    /// of them: the stream's copies below it are echoes, not duplicates.
    #[serde(default)]
    pub direct: u64,
    #[serde(default)]
    direct_upto: u64,
}

/// What to do with one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Our own entry, or one we already delivered.
    Skip,
    /// The stream's copy of an entry a push delivered already.
    Echo,
    /// Deliver to the local workers (`lost`: entries of this peer missing right before it).
    Deliver { lost: u64 },
    /// Addressed to another node; tracked, not delivered.
    NotForUs { lost: u64 },
}

/// Serializable: an in-place update carries it to the next image (`multihost::Resume`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Peers {
    me: String,
    my_incarnation: String,
    peers: BTreeMap<String, Peer>,
    /// uid -> node, for routing responses to the requester's node.
    owners: HashMap<String, String>,
}

impl Peers {
    pub fn new(me: &str, my_incarnation: &str) -> Self {
        Peers {
            me: me.into(),
            my_incarnation: my_incarnation.into(),
            peers: BTreeMap::new(),
            owners: HashMap::new(),
        }
    }

    /// What the previous image knew (an in-place update), for this node; `None` when it
    /// cannot be read or names another node.
    pub fn resume(v: serde_json::Value, me: &str, my_incarnation: &str) -> Option<Peers> {
        let p: Peers = serde_json::from_value(v).ok()?;
        (p.me == me && p.my_incarnation == my_incarnation).then_some(p)
    }

    /// The node whose worker owns `uid`, if another node's.
    pub fn owner(&self, uid: &str) -> Option<&str> {
        self.owners.get(uid).map(String::as_str)
    }

    pub fn peers(&self) -> impl Iterator<Item = (&str, &Peer)> {
        self.peers.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// True when there are peers and every one of them delivered by push at least once (this
    /// incarnation of theirs).
    pub fn all_push(&self) -> bool {
        !self.peers.is_empty() && self.peers.values().all(|p| p.direct > 0)
    }

    /// True when every frame up to `seq` of `node`'s incarnation `inc` was delivered by a
    /// push already: the stream's entry is an echo (the claim need not be verified to skip).
    pub fn is_echo(&self, node: &[u8], inc: &[u8], seq: u64) -> bool {
        let Ok(node) = std::str::from_utf8(node) else { return false };
        self.peers.get(node).is_some_and(|p| p.incarnation.as_bytes() == inc && seq < p.direct_upto)
    }

    /// A pushed entry (already verified): taken only when it is exactly the next one of the
    /// peer's incarnation this node knows from the stream; `None` leaves it to the stream (a
    /// gap after a dropped push, a peer or incarnation not read from the stream yet), which
    /// then delivers it in its place.
    pub fn on_direct(&mut self, e: &Entry) -> Option<(Verdict, Vec<Close>)> {
        let p = self.peers.get(&e.node)?;
        if p.incarnation != e.incarnation || p.next_seq != Some(e.seq) {
            return None;
        }
        let r = self.on_entry(e);
        if let Some(p) = self.peers.get_mut(&e.node) {
            p.direct += 1;
            p.direct_upto = e.seq.saturating_add(1);
        }
        Some(r)
    }

    /// An entry read from the stream (already verified). The returned closes (a peer that
    /// restarted under the same id: its previous incarnation's uids) go out before the entry.
    pub fn on_entry(&mut self, e: &Entry) -> (Verdict, Vec<Close>) {
        if e.node == self.me {
            // Ours, or our previous life's (same PM2_NODE_ID): its workers died with it, and
            // the other nodes closed them when its heartbeat stopped.
            let _ = &self.my_incarnation;
            return (Verdict::Skip, Vec::new());
        }
        let mut closes = Vec::new();
        if self.peers.get(&e.node).is_some_and(|p| p.incarnation != e.incarnation) {
            closes = self.remove(&e.node);
        }
        if !self.peers.contains_key(&e.node) && self.peers.len() >= MAX_PEERS {
            return (Verdict::Skip, closes);
        }
        let peer = self
            .peers
            .entry(e.node.clone())
            .or_insert_with(|| Peer { incarnation: e.incarnation.clone(), ..Peer::default() });
        let mut lost = 0;
        match peer.next_seq {
            Some(next) if e.seq < next => {
                if e.seq < peer.direct_upto {
                    return (Verdict::Echo, closes);
                }
                peer.duplicates += 1;
                return (Verdict::Skip, closes);
            }
            Some(next) => lost = e.seq - next,
            None => {}
        }
        peer.next_seq = Some(e.seq.saturating_add(1));
        peer.entries += 1;
        peer.lost += lost;

        if let Some(uid) = &e.uid {
            if e.kind == Some(kind::ADAPTER_CLOSE) {
                if let Some((_, nsps)) = peer.uids.get_mut(uid) {
                    if let Some(nsp) = &e.nsp {
                        nsps.remove(nsp);
                    }
                    if nsps.is_empty() || e.nsp.is_none() {
                        peer.uids.remove(uid);
                        if self.owners.get(uid) == Some(&e.node) {
                            self.owners.remove(uid);
                        }
                    }
                }
            } else if peer.uids.contains_key(uid) || peer.uids.len() < MAX_UIDS_PER_PEER {
                let (_, nsps) =
                    peer.uids.entry(uid.clone()).or_insert_with(|| (e.group.clone(), BTreeSet::new()));
                if let Some(nsp) = &e.nsp {
                    if nsps.len() < MAX_NSPS_PER_UID {
                        nsps.insert(nsp.clone());
                    }
                }
                self.owners.insert(uid.clone(), e.node.clone());
            }
        }
        let for_us = e.to.as_deref().is_none_or(|t| t == self.me);
        (if for_us { Verdict::Deliver { lost } } else { Verdict::NotForUs { lost } }, closes)
    }

    /// The heartbeat key of `node` was read: `current` is the incarnation it names, `None`
    /// when the key is gone (expired). Returns the closes if the peer we knew is dead.
    /// `None` while it lives.
    pub fn on_heartbeat(&mut self, node: &str, current: Option<&str>) -> Option<Vec<Close>> {
        match self.peers.get(node) {
            Some(p) if current != Some(p.incarnation.as_str()) => Some(self.remove(node)),
            _ => None,
        }
    }

    pub fn is_known(&self, node: &str) -> bool {
        self.peers.contains_key(node)
    }

    /// Node ids whose heartbeat must be checked.
    pub fn nodes(&self) -> Vec<String> {
        self.peers.keys().cloned().collect()
    }

    fn remove(&mut self, node: &str) -> Vec<Close> {
        let Some(p) = self.peers.remove(node) else { return Vec::new() };
        let mut closes = Vec::new();
        for (uid, (group, nsps)) in p.uids {
            if self.owners.get(&uid).is_some_and(|n| n == node) {
                self.owners.remove(&uid);
            }
            closes.extend(nsps.into_iter().map(|nsp| Close { group: group.clone(), uid: uid.clone(), nsp }));
        }
        closes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node: &str, inc: &str, seq: u64, kind: i64, uid: &str, nsp: &str) -> Entry {
        Entry {
            node: node.into(),
            incarnation: inc.into(),
            seq,
            group: "chat".into(),
            sender: 1,
            kind: Some(kind),
            uid: Some(uid.into()),
            nsp: Some(nsp.into()),
            requester: None,
            to: None,
            json: false,
            frame: vec![0xff],
        }
    }

    fn close(uid: &str, nsp: &str) -> Close {
        Close { group: "chat".into(), uid: uid.into(), nsp: nsp.into() }
    }

    #[test]
    fn the_next_image_resumes_what_this_one_knew() {
        let mut p = Peers::new("me", "i1");
        assert!(matches!(
            p.on_entry(&entry("b", "x", 7, kind::HEARTBEAT, "u1", "/")).0,
            Verdict::Deliver { .. }
        ));
        let v = serde_json::to_value(&p).unwrap();
        assert!(Peers::resume(v.clone(), "other", "i1").is_none());
        assert!(Peers::resume(v.clone(), "me", "i2").is_none());
        let mut q = Peers::resume(v, "me", "i1").unwrap();
        // The same sequence is a duplicate, the next one is delivered with nothing lost.
        assert_eq!(q.on_entry(&entry("b", "x", 7, kind::HEARTBEAT, "u1", "/")).0, Verdict::Skip);
        assert_eq!(
            q.on_entry(&entry("b", "x", 8, kind::HEARTBEAT, "u1", "/")).0,
            Verdict::Deliver { lost: 0 }
        );
        // And its uids are closed when it dies.
        assert_eq!(q.on_heartbeat("b", None), Some(vec![close("u1", "/")]));
    }

    #[test]
    fn a_push_is_taken_only_as_the_next_entry_and_the_streams_copy_is_an_echo() {
        let mut p = Peers::new("a", "1");
        // A peer never read from the stream: left to the stream.
        assert_eq!(p.on_direct(&entry("b", "9", 10, 3, "u", "/")), None);
        assert_eq!(p.on_entry(&entry("b", "9", 10, 3, "u", "/")).0, Verdict::Deliver { lost: 0 });
        // The next one arrives pushed first: delivered; its stream copy is an echo.
        assert_eq!(
            p.on_direct(&entry("b", "9", 11, 3, "u", "/")).map(|r| r.0),
            Some(Verdict::Deliver { lost: 0 })
        );
        assert_eq!(
            p.on_direct(&entry("b", "9", 12, 3, "u", "/")).map(|r| r.0),
            Some(Verdict::Deliver { lost: 0 })
        );
        // A replayed push is not the next one.
        assert_eq!(p.on_direct(&entry("b", "9", 12, 3, "u", "/")), None);
        assert!(p.is_echo(b"b", b"9", 12) && !p.is_echo(b"b", b"9", 13) && !p.is_echo(b"b", b"8", 12));
        assert_eq!(p.on_entry(&entry("b", "9", 11, 3, "u", "/")).0, Verdict::Echo);
        assert_eq!(p.on_entry(&entry("b", "9", 12, 3, "u", "/")).0, Verdict::Echo);
        // A dropped push (13): 14 waits for the stream, which brings both in order.
        assert_eq!(p.on_direct(&entry("b", "9", 14, 3, "u", "/")), None);
        assert_eq!(p.on_entry(&entry("b", "9", 13, 3, "u", "/")).0, Verdict::Deliver { lost: 0 });
        assert_eq!(p.on_entry(&entry("b", "9", 14, 3, "u", "/")).0, Verdict::Deliver { lost: 0 });
        // Another incarnation (a restart) is the stream's to introduce.
        assert_eq!(p.on_direct(&entry("b", "new", 0, 3, "u", "/")), None);
        let (_, peer) = p.peers().find(|(n, _)| *n == "b").unwrap();
        assert_eq!((peer.direct, peer.duplicates, peer.lost), (2, 0, 0));
        assert!(p.all_push());
        // A peer that never pushed: the stream is its only path.
        assert_eq!(p.on_entry(&entry("c", "1", 0, 3, "v", "/")).0, Verdict::Deliver { lost: 0 });
        assert!(!p.all_push());
    }

    #[test]
    fn own_entries_are_skipped() {
        let mut p = Peers::new("a", "1");
        assert_eq!(p.on_entry(&entry("a", "1", 0, 3, "u", "/")).0, Verdict::Skip);
        assert_eq!(p.on_entry(&entry("a", "0", 0, 3, "u", "/")).0, Verdict::Skip);
        assert!(p.nodes().is_empty());
    }

    #[test]
    fn duplicates_skipped_gaps_counted() {
        let mut p = Peers::new("a", "1");
        assert_eq!(p.on_entry(&entry("b", "9", 10, 3, "u", "/")).0, Verdict::Deliver { lost: 0 });
        assert_eq!(p.on_entry(&entry("b", "9", 11, 3, "u", "/")).0, Verdict::Deliver { lost: 0 });
        assert_eq!(p.on_entry(&entry("b", "9", 11, 3, "u", "/")).0, Verdict::Skip);
        assert_eq!(p.on_entry(&entry("b", "9", 5, 3, "u", "/")).0, Verdict::Skip);
        assert_eq!(p.on_entry(&entry("b", "9", 15, 3, "u", "/")).0, Verdict::Deliver { lost: 3 });
        let (_, b) = p.peers().next().unwrap();
        assert_eq!((b.entries, b.lost, b.duplicates), (3, 3, 2));
    }

    #[test]
    fn entries_for_another_node_are_tracked_not_delivered() {
        let mut p = Peers::new("a", "1");
        let mut e = entry("b", "9", 0, kind::FETCH_SOCKETS_RESPONSE, "ub", "/");
        e.to = Some("c".into());
        assert_eq!(p.on_entry(&e).0, Verdict::NotForUs { lost: 0 });
        e.seq = 1;
        e.to = Some("a".into());
        assert_eq!(p.on_entry(&e).0, Verdict::Deliver { lost: 0 });
        assert_eq!(p.owner("ub"), Some("b"));
    }

    #[test]
    fn dead_peer_closes_every_uid_and_namespace() {
        let mut p = Peers::new("a", "1");
        p.on_entry(&entry("b", "9", 0, kind::INITIAL_HEARTBEAT, "u1", "/"));
        p.on_entry(&entry("b", "9", 1, kind::INITIAL_HEARTBEAT, "u2", "/admin"));
        p.on_entry(&entry("b", "9", 2, kind::HEARTBEAT, "u3", "/"));
        p.on_entry(&entry("b", "9", 3, kind::ADAPTER_CLOSE, "u3", "/"));
        p.on_entry(&entry("c", "7", 0, kind::HEARTBEAT, "u4", "/"));
        assert_eq!(p.on_heartbeat("b", Some("9")), None);
        assert_eq!(p.on_heartbeat("b", None), Some(vec![close("u1", "/"), close("u2", "/admin")]));
        assert_eq!(p.owner("u1"), None);
        assert_eq!(p.owner("u4"), Some("c"));
        assert_eq!(p.nodes(), vec!["c".to_string()]);
        // Once removed, nothing more to close.
        assert_eq!(p.on_heartbeat("b", None), None);
        assert_eq!(p.on_heartbeat("zz", None), None);
    }

    #[test]
    fn restart_under_the_same_id_closes_the_old_incarnation() {
        let mut p = Peers::new("a", "1");
        p.on_entry(&entry("b", "9", 100, kind::HEARTBEAT, "old", "/"));
        // New incarnation: its sequence restarts, which must not read as duplicates.
        let (v, closes) = p.on_entry(&entry("b", "10", 0, kind::INITIAL_HEARTBEAT, "new", "/"));
        assert_eq!(v, Verdict::Deliver { lost: 0 });
        assert_eq!(closes, vec![close("old", "/")]);
        // The heartbeat key now names the new incarnation: alive.
        assert_eq!(p.on_heartbeat("b", Some("10")), None);
        assert_eq!(p.on_heartbeat("b", Some("9")), Some(vec![close("new", "/")]));
    }

    #[test]
    fn memory_is_bounded() {
        let mut p = Peers::new("a", "1");
        for i in 0..(MAX_PEERS + 5) {
            p.on_entry(&entry(&format!("n{i}"), "1", 0, 2, &format!("u{i}"), "/"));
        }
        assert_eq!(p.nodes().len(), MAX_PEERS);
        let mut q = Peers::new("a", "1");
        for i in 0..(MAX_UIDS_PER_PEER as u64 + 5) {
            q.on_entry(&entry("b", "1", i, 2, &format!("u{i}"), "/"));
        }
        assert_eq!(q.on_heartbeat("b", None).map(|c| c.len()), Some(MAX_UIDS_PER_PEER));
    }
}
