//! Giving memory back once the daemon goes quiet.
//!
//! A daemon spends nearly all its life idle, so what it holds while idle is
//! what users see in `ps`. Two things stay resident after a burst of work
//! although nothing needs them until the next burst:
//! - heap pages glibc keeps after many small frees (a flood of connections,
//!   a `jlist` of large environments): `malloc_trim` returns them;
//! - code and read-only data touched once (start-up, argument parsing, a
//!   resurrect, a rare command): the daemon and the CLI are one binary, so
//!   the page tables keep several MB of it mapped that the idle daemon never
//!   runs. `madvise(MADV_DONTNEED)` over those mappings drops them; a page
//!   needed again faults back in from the page cache (a minor fault, no I/O
//!   while the file is cached).
//!
//! Only private, read-only file mappings without a single private
//! (copy-on-write) page are dropped: for those the file's contents are the
//! mapping's contents, so nothing can be lost. A mapping the dynamic linker
//! relocated (RELRO) has private pages and is left alone, as are writable
//! ones, anonymous memory and the kernel's `[vdso]`.
//!
//! Anyone may call [`activity`]; [`run`] trims once `quiet` has passed
//! without any.

use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::Notify;

fn notify() -> &'static Notify {
    static N: OnceLock<Notify> = OnceLock::new();
    N.get_or_init(Notify::new)
}

/// Marks the daemon busy: the next trim waits for a quiet period after this.
pub fn activity() {
    // `notify_one` keeps a permit when nobody waits, so activity during a
    // trim or between two waits is not lost.
    notify().notify_one();
}

/// Trims after every busy period, once `quiet` has passed without
/// [`activity`]. Runs for the daemon's life.
pub async fn run(quiet: Duration) {
    loop {
        notify().notified().await;
        loop {
            tokio::select! {
                _ = notify().notified() => continue,
                _ = tokio::time::sleep(quiet) => break,
            }
        }
        now();
    }
}

/// Returns freed heap pages and drops clean file-backed pages from the page
/// tables. Cheap (a read of `/proc/self/smaps` and a few syscalls).
pub fn now() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in clean_file_ranges(&smaps) {
        // SAFETY: the range is one of our own mappings as the kernel lists it:
        // private, not writable, file-backed, without any private page. There
        // MADV_DONTNEED only removes page-table entries; the next access maps
        // the same file page again.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// The private, read-only, file-backed mappings of a `/proc/self/smaps`
/// listing that hold no anonymous (copy-on-write) page.
fn clean_file_ranges(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // The mapping being read: its range if it qualifies so far.
    let mut current: Option<(usize, usize)> = None;
    let mut anonymous_seen = false;
    let flush = |current: &mut Option<(usize, usize)>, anonymous_seen: bool, out: &mut Vec<_>| {
        if let Some(r) = current.take() {
            // A listing without the Anonymous line is not trusted.
            if anonymous_seen {
                out.push(r);
            }
        }
    };
    for line in smaps.lines() {
        if let Some(rest) = line.strip_prefix("Anonymous:") {
            let kb = rest.trim().trim_end_matches("kB").trim().parse::<u64>();
            if kb != Ok(0) {
                current = None;
            }
            anonymous_seen = true;
            continue;
        }
        let mut f = line.splitn(6, ' ');
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        // A mapping header: the previous mapping is complete.
        flush(&mut current, anonymous_seen, &mut out);
        anonymous_seen = false;
        let path = f.nth(3).map(str::trim_start).unwrap_or("");
        let p = perms.as_bytes();
        let qualifies = p.len() == 4 && p[0] == b'r' && p[1] == b'-' && p[3] == b'p' && path.starts_with('/');
        current = (qualifies && a < b).then_some((a, b));
    }
    flush(&mut current, anonymous_seen, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(header: &str, anonymous_kb: u64) -> String {
        format!("{header}\nSize:               2048 kB\nRss:                 100 kB\nAnonymous:         {anonymous_kb} kB\nVmFlags: rd mr mw me\n")
    }

    #[test]
    fn only_clean_read_only_file_mappings_are_chosen() {
        let smaps = [
            mapping("5581a0000000-5581a0200000 r--p 00000000 fe:01 1234   /opt/corral/pm2", 0),
            mapping("5581a0200000-5581a1000000 r-xp 00200000 fe:01 1234   /opt/corral/pm2", 0),
            // RELRO: relocated by the dynamic linker, then made read-only.
            mapping("5581a1000000-5581a1100000 r--p 01000000 fe:01 1234   /opt/corral/pm2", 12),
            mapping("5581a1100000-5581a1110000 rw-p 01100000 fe:01 1234   /opt/corral/pm2", 0),
            mapping("7f0000000000-7f0000100000 r-xp 00000000 fe:01 99     /usr/lib/libc.so.6", 0),
            mapping("7f0000200000-7f0000300000 r-xp 00000000 fe:01 77     /opt/corral/pm2 (deleted)", 0),
            mapping("7f0000300000-7f0000400000 r--s 00000000 fe:01 78     /dev/shm/x", 0),
            mapping("7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]", 8),
            mapping("7ffd10000000-7ffd10002000 r-xp 00000000 00:00 0      [vdso]", 0),
            "garbage line\n".to_string(),
            // No Anonymous line: not trusted.
            "7ffd20000000-7ffd20002000 r-xp 00000000 fe:01 5 /usr/lib/x.so\nRss: 4 kB\n".to_string(),
        ]
        .concat();
        assert_eq!(
            clean_file_ranges(&smaps),
            [
                (0x5581a0000000, 0x5581a0200000),
                (0x5581a0200000, 0x5581a1000000),
                (0x7f0000000000, 0x7f0000100000),
                (0x7f0000200000, 0x7f0000300000),
            ]
        );
        assert!(clean_file_ranges("").is_empty());
    }

    #[test]
    fn trimming_our_own_process_keeps_it_running() {
        now();
        // Code and constants are read again after their pages were dropped.
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
        now();
    }
}
