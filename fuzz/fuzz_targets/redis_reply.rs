//! Arbitrary bytes as what a Redis server (or anything at its address) sends a node: the
//! resumable scanner, fed in arbitrary pieces, must agree with the parser on where a reply ends,
//! and a parsed reply taken as a stream entry's fields must verify or be refused, never panic.
#![no_main]

use corral_daemon::multihost::entry::Entry;
use corral_daemon::multihost::resp::{parse, Reply, Scanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else { return };
    let step = usize::from(step % 32) + 1;
    // In pieces, as reads deliver them.
    let mut sc = Scanner::default();
    let mut have = 0;
    let in_pieces = loop {
        have = (have + step).min(bytes.len());
        match sc.scan(&bytes[..have]) {
            Ok(Some(end)) => break Ok(Some(end)),
            Ok(None) if have == bytes.len() => break Ok(None),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
    };
    assert_eq!(in_pieces, Scanner::default().scan(bytes));
    if let Ok(Some((reply, used))) = parse(bytes) {
        assert_eq!(in_pieces, Ok(Some(used)));
        if let Reply::Array(fields) = &reply {
            let _ = Entry::from_fields(fields, b"fuzz-secret-0123456789");
            let _ = Entry::claimed_node(fields);
        }
    }
});
