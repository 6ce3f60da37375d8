//! Process-tree helpers over `/proc`: pm2's `treekill` walks descendants with
//! `ps --ppid`; we read `/proc` directly (no fork, works on busybox images).
//! Nothing here keeps a file open after it returns (a leak of the incumbent's).

use std::collections::HashMap;

/// `(pid, ppid)` for every process we can see.
fn parent_map() -> HashMap<i32, Vec<i32>> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return children;
    };
    for ent in dir.flatten() {
        let name = ent.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(ppid) = read_ppid(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    children
}

fn read_ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start
    // after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// How long one scan of `/proc` serves every caller. Without the kernel's
/// `/proc/<pid>/task/<tid>/children` (often compiled out), finding a
/// process's descendants means reading the stat file of every process on
/// the machine; stopping 1000 apps at once did that 2000 times, on the
/// daemon's only thread (20 s for `pm2 kill`). One scan per window makes a
/// mass stop linear. A process forked within the window is still reached:
/// it shares its parent's process group, which every stop signals too.
const SCAN_REUSE: std::time::Duration = std::time::Duration::from_millis(100);

type ParentMap = std::sync::Arc<HashMap<i32, Vec<i32>>>;

static SCAN: std::sync::Mutex<Option<(std::time::Instant, ParentMap)>> = std::sync::Mutex::new(None);

fn recent_parent_map() -> ParentMap {
    let now = std::time::Instant::now();
    let mut g = SCAN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, map)) = g.as_ref() {
        if now.duration_since(*at) < SCAN_REUSE {
            return map.clone();
        }
    }
    let map: ParentMap = std::sync::Arc::new(parent_map());
    *g = Some((now, map.clone()));
    map
}

/// Every descendant of `pid` (children before grandchildren), from a scan
/// of `/proc` at most [`SCAN_REUSE`] old.
pub fn descendants(pid: i32) -> Vec<i32> {
    let map = recent_parent_map();
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        if let Some(kids) = map.get(&p) {
            for &k in kids {
                if !out.contains(&k) && k != pid {
                    out.push(k);
                    queue.push(k);
                }
            }
        }
    }
    out
}

/// Children of `parent` that are zombies.
pub fn zombie_children(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            let Some(i) = stat.rfind(')') else { return false };
            let mut f = stat[i + 2..].split(' ');
            f.next() == Some("Z") && f.next().and_then(|p| p.parse::<i32>().ok()) == Some(parent)
        })
        .collect()
}

pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // A zombie still answers kill(0); look at its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(s.rfind(')').and_then(|i| s.as_bytes().get(i + 2)), Some(b'Z') | Some(b'X')),
        Err(_) => false,
    }
}

pub fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: kill has no memory-safety preconditions.
    pid > 0 && unsafe { libc::kill(pid, sig) } == 0
}

/// Signals the main pid's process group (it is a session leader: we spawn
/// with setsid) and every descendant that left the group, each process
/// once: an app that counts its SIGINTs (or logs each) must see one, as
/// under pm2.
pub fn signal_tree(pid: i32, sig: i32, treekill: bool, known: &[i32]) {
    if !treekill {
        signal(pid, sig);
        return;
    }
    let mut all = descendants(pid);
    for &k in known {
        if !all.contains(&k) {
            all.push(k);
        }
    }
    // SAFETY: as above; a negative pid addresses the process group.
    let group_sent = pid > 0 && unsafe { libc::kill(-pid, sig) } == 0;
    if !group_sent || !in_group(pid, pid) {
        signal(pid, sig);
    }
    for p in all {
        if !(group_sent && in_group(p, pid)) {
            signal(p, sig);
        }
    }
}

/// Is `p` (still) in process group `pgid`?
fn in_group(p: i32, pgid: i32) -> bool {
    // SAFETY: getpgid has no memory-safety preconditions.
    p > 0 && unsafe { libc::getpgid(p) } == pgid
}

/// Resident memory in bytes and total CPU ticks (utime + stime).
pub fn usage(pid: i32) -> Option<(u64, u64)> {
    // One read into a stack buffer: `list` samples every process on each
    // call, and read_to_string's growing reads cost six syscalls per file.
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let n = f.read(&mut buf).ok()?;
    let stat = std::str::from_utf8(&buf[..n]).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields after the name, 0-based: state=0 ... utime=11 stime=12 rss=21.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    Some((rss_pages * page_size(), utime + stime))
}

/// Resident size in bytes counted page by page (`/proc/<pid>/smaps_rollup`).
/// Dearer than `usage`, which reads the kernel's running totals; those lag
/// by the per-CPU batches not yet folded in, and read 0 for a process that
/// has just exec'd (84 of 200 node spawns read at once here). Used only then.
pub fn rss_walked(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Rss:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// A signal by name (`SIGINT`, `int`) or number (1-64).
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let s = s.to_ascii_uppercase();
    let s = s.strip_prefix("SIG").unwrap_or(&s);
    Some(match s {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "TERM" => libc::SIGTERM,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "ALRM" => libc::SIGALRM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "WINCH" => libc::SIGWINCH,
        "PIPE" => libc::SIGPIPE,
        _ => return None,
    })
}

pub fn signal_name(n: i32) -> String {
    let name = match n {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGPIPE => "SIGPIPE",
        _ => return format!("SIG{n}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_measurable() {
        let me = std::process::id() as i32;
        assert!(alive(me));
        let (rss, _) = usage(me).unwrap();
        assert!(rss > 0);
        assert!(!alive(0));
    }

    #[test]
    fn a_just_spawned_process_has_a_counted_resident_size() {
        // `usage` may read 0 here (the kernel's totals lag); the walk never does.
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let rss = rss_walked(child.id() as i32);
        let _ = child.kill();
        let _ = child.wait();
        assert!(rss.is_some_and(|r| r > 0), "{rss:?}");
        assert_eq!(rss_walked(0), None);
    }
}
