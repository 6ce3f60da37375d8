//! Arbitrary bytes on a push connection (what another node, or anything that reaches the
//! node-to-node port, sends after the push magic): frames are split in arbitrary read sizes the
//! same as whole, and each frame's batch verifies or is refused, never panics. The last
//! sequence number a batch claims (read unverified to skip echoes) never panics either.
#![no_main]

use corral_daemon::multihost::direct::split;
use corral_daemon::multihost::entry::Entry;
use corral_daemon::multihost::resp::Reply;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret-0123456789";

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else { return };
    let step = usize::from(step % 32) + 1;
    // Whole: every frame in turn until an error or an incomplete rest.
    let mut whole = Vec::new();
    let mut at = 0;
    let end = loop {
        match split(&bytes[at..]) {
            Ok(Some(f)) => {
                whole.push((f.node.to_vec(), f.mac.to_vec(), f.body.to_vec()));
                let _ = Entry::from_batch(f.node, f.body, f.mac, SECRET);
                let fields = [b"n".as_slice(), f.node, b"b", f.body, b"h", f.mac]
                    .map(|v| Reply::Bulk(v.to_vec()));
                let _ = Entry::claimed_last(&fields);
                at += f.used;
            }
            Ok(None) => break Ok(at),
            Err(e) => break Err(e),
        }
    };
    // In pieces, as reads deliver them, the way the listener buffers them.
    let mut buf = Vec::new();
    let mut pieces = Vec::new();
    let mut fed = 0;
    let in_pieces = loop {
        let next = (fed + step).min(bytes.len());
        buf.extend_from_slice(&bytes[fed..next]);
        fed = next;
        let mut used = 0;
        let r = loop {
            match split(&buf[used..]) {
                Ok(Some(f)) => {
                    pieces.push((f.node.to_vec(), f.mac.to_vec(), f.body.to_vec()));
                    used += f.used;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        buf.drain(..used);
        match r {
            Err(e) => break Err(e),
            Ok(()) if fed == bytes.len() => break Ok(bytes.len() - buf.len()),
            Ok(()) => {}
        }
    };
    // Pieces may see an error earlier (a bad prefix shows as soon as it arrives) but never
    // accept a different frame.
    match (&end, &in_pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("whole {end:?} vs in pieces {in_pieces:?}"),
    }
    assert_eq!(whole, pieces);
});
