//! Reliability under bad input and bad luck: file permissions and symbolic
//! links, the control socket's limits, the sticky port under floods.
//! Every load here is bounded in count and time and stays on loopback.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

#[test]
fn new_home_is_private_and_dump_is_owner_only() {
    let mut pm2 = Pm2::new();
    let home = pm2.home().join("fresh/.pm2");
    pm2.envs.push(("PM2_HOME".into(), home.to_string_lossy().into_owned()));
    pm2.run(&["start", "forever.js", "--name", "svc"]).ok();
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("module_conf.json")), 0o600);
    pm2.run(&["save"]).ok();
    assert_eq!(mode(&home.join("dump.pm2")), 0o600);
    pm2.run(&["save"]).ok();
    assert_eq!(mode(&home.join("dump.pm2.bak")), 0o600);
    assert!(!home.join("dump.pm2.tmp").exists());
    pm2.run(&["set", "mod:key", "v"]).ok();
    assert_eq!(mode(&home.join("module_conf.json")), 0o600);
    pm2.run(&["kill"]).ok();
}

#[test]
fn symlinked_log_file_is_refused_and_flush_spares_the_target() {
    let pm2 = Pm2::new();
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = dir.path().join("app-out.log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let out = link.to_string_lossy().into_owned();
    let r = pm2.run(&["start", "forever.js", "--name", "linked", "--output", &out]);
    let list =
        pm2.wait_for("errored", T, |l| l.iter().any(|p| p["name"] == "linked" && status(p) == "errored"));
    assert_eq!(pid(&list[0]), 0);
    let said = format!("{}{}", r.all(), pm2.daemon_log());
    assert!(said.contains("symbolic link"), "{said}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

    // A log that is a real file at start and swapped for a link later:
    // `flush` refuses it and never truncates what it points to.
    let real = dir.path().join("real-out.log");
    let real_s = real.to_string_lossy().into_owned();
    pm2.run(&["start", "forever.js", "--name", "real", "--output", &real_s]).ok();
    pm2.wait_for("online", T, |l| l.iter().any(|p| p["name"] == "real" && status(p) == "online"));
    std::fs::remove_file(&real).unwrap();
    std::os::unix::fs::symlink(&victim, &real).unwrap();
    let r = pm2.run(&["flush", "real"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("symbolic link"), "{}", r.all());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

    // Streams behind a link (containers log to /dev/stdout) still work.
    let r = pm2.run(&["start", "forever.js", "--name", "stream", "--output", "/dev/stdout"]);
    r.ok();
    pm2.wait_for("online", T, |l| l.iter().any(|p| p["name"] == "stream" && status(p) == "online"));
}

/// 72 apps with a 120 KB environment variable each: every reply that lists
/// them is larger than one 16 MiB frame and is streamed.
#[test]
fn jlist_of_72_apps_with_120_kb_env_each() {
    let pm2 = Pm2::new();
    let dir = tempfile::tempdir().unwrap();
    let big = "v".repeat(120 * 1024);
    let apps: Vec<serde_json::Value> = (0..72)
        .map(|i| {
            serde_json::json!({
                "name": format!("big{i}"),
                "script": "/bin/sleep",
                "args": "600",
                "interpreter": "none",
                "env": { "BIG_VAR": big },
            })
        })
        .collect();
    let eco = dir.path().join("eco.json");
    std::fs::write(&eco, serde_json::to_vec(&serde_json::json!({ "apps": apps })).unwrap()).unwrap();
    let r = pm2.run(&["start", &eco.to_string_lossy()]);
    assert_eq!(r.code, 0, "pm2 start reported an error:\n{}", r.stderr);
    let list = pm2.wait_for("72 apps online", Duration::from_secs(60), |l| {
        l.len() == 72 && l.iter().all(|p| status(p) == "online")
    });
    let env = &list[71]["pm2_env"];
    assert_eq!(env["env"]["BIG_VAR"].as_str().map(str::len), Some(120 * 1024), "{}", env["name"]);
    let raw = pm2.run(&["jlist"]);
    assert!(raw.stdout.len() > 16 * 1024 * 1024, "jlist is {} bytes", raw.stdout.len());
    pm2.run(&["ls"]).ok();
    pm2.run(&["describe", "big3"]).ok();
    pm2.run(&["save"]).ok();
    pm2.run(&["delete", "all"]).ok();
    assert!(pm2.jlist().is_empty());
}

#[test]
fn oversized_app_is_refused_at_the_door_and_the_daemon_stays_usable() {
    let pm2 = Pm2::new();
    let dir = tempfile::tempdir().unwrap();
    let eco = dir.path().join("eco.json");
    let name = "n".repeat(2 * 1024 * 1024);
    let app = serde_json::json!({ "apps": [{ "name": name, "script": "/bin/sleep", "args": "600", "interpreter": "none" }] });
    std::fs::write(&eco, serde_json::to_vec(&app).unwrap()).unwrap();
    let r = pm2.run(&["start", &eco.to_string_lossy()]);
    assert_ne!(r.code, 0);
    assert!(
        r.all().contains("app name is 2097152 bytes long; the limit is 200 bytes"),
        "{}",
        &r.all()[..2000.min(r.all().len())]
    );
    assert!(pm2.jlist().is_empty());

    let app = serde_json::json!({ "apps": [{ "name": "env", "script": "/bin/sleep", "args": "600", "interpreter": "none", "env": { "HUGE": "x".repeat(300 * 1024) } }] });
    std::fs::write(&eco, serde_json::to_vec(&app).unwrap()).unwrap();
    let r = pm2.run(&["start", &eco.to_string_lossy()]);
    assert_ne!(r.code, 0);
    assert!(r.all().contains("environment variable HUGE of app env"), "{}", r.all());
    pm2.run(&["ls"]).ok();
    pm2.run(&["save", "--force"]).ok();
}

fn control_hello(home: &std::path::Path) -> std::os::unix::net::UnixStream {
    let mut s = std::os::unix::net::UnixStream::connect(home.join("corral.sock")).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let hello = serde_json::to_vec(&serde_json::json!({"protocol": 1, "client_version": "test"})).unwrap();
    s.write_all(&(hello.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&hello).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut welcome = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut welcome).unwrap();
    s
}

#[test]
fn idle_control_connections_are_closed_and_counted() {
    let mut pm2 = Pm2::new();
    pm2.envs.push(("PM2_CONTROL_IDLE_TIMEOUT_MS".into(), "1500".into()));
    pm2.run(&["ping"]).ok();
    let home = pm2.home().to_path_buf();

    // Idle after the hello: closed by the daemon.
    let mut idle = control_hello(&home);
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the daemon wrote to an idle connection");
    assert!(t0.elapsed() < T);

    // An announced 16 MiB frame that never comes costs nothing and is cut
    // off by the idle timeout too.
    let mut liar = control_hello(&home);
    liar.write_all(&[0x00, 0xff, 0xff, 0xff, b'{']).unwrap();
    assert_eq!(liar.read(&mut buf).unwrap_or(0), 0);

    // Past the cap, connections are refused with an error; the CLI works
    // again as soon as they are gone.
    let held: Vec<_> = (0..300)
        .map(|_| {
            let s = std::os::unix::net::UnixStream::connect(home.join("corral.sock")).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut refused = std::collections::HashSet::new();
    poll("connections past the cap refused", T, || {
        for (i, mut s) in held.iter().enumerate() {
            let mut b = [0u8; 256];
            if let Ok(n) = s.read(&mut b) {
                if String::from_utf8_lossy(&b[..n]).contains("control connections open") {
                    refused.insert(i);
                }
            }
        }
        (refused.len() >= 300 - 256).then_some(())
    });
    drop(held);
    poll("control socket usable again", T, || (pm2.run(&["ping"]).code == 0).then_some(()));
    pm2.run(&["ls"]).ok();
}

fn raise_own_fd_limit(to: u64) {
    // SAFETY: plain struct in/out.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max.min(to);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// One Engine.IO handshake on a new connection: the new sid, or what went wrong.
fn handshake(port: u16) -> Result<String, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(15))).map_err(|e| e.to_string())?;
    s.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(text.chars().take(200).collect());
    }
    let at = text.find("\"sid\":\"").ok_or_else(|| text.to_string())? + 7;
    Ok(text[at..].chars().take_while(|c| *c != '"').collect())
}

/// The daemon at a 4096-descriptor limit, flooded with 3000 partial requests (more than its
/// cap of 2048 connections being read): the oldest are shed, fresh handshakes are served, and
/// the control socket, `jlist` and a kill -9 + respawn keep working.
#[test]
fn partial_request_flood_at_the_fd_limit_leaves_the_daemon_working() {
    const FLOOD: usize = 3000;
    raise_own_fd_limit(FLOOD as u64 + 1024);
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    let port: u16 = pm2.envs.iter().find(|(k, _)| k == "PM2_PORT").and_then(|(_, v)| v.parse().ok()).unwrap();
    let mut start = pm2.cmd(&["start", "sio_worker.js", "-i", "2", "--name", "sio"]);
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's (and so the daemon's)
    // descriptor limit.
    unsafe {
        use std::os::unix::process::CommandExt;
        start.pre_exec(|| {
            let r = libc::rlimit { rlim_cur: 4096, rlim_max: 4096 };
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            Ok(())
        });
    }
    assert!(start.status().unwrap().success());
    pm2.wait_for("2 online workers", T, |l| l.iter().filter(|p| status(p) == "online").count() == 2);
    poll("a first handshake", T, || handshake(port).ok());
    let daemon: i32 = std::fs::read_to_string(pm2.home().join("pm2.pid")).unwrap().trim().parse().unwrap();
    let rss_before = rss_kb(daemon);

    let t0 = Instant::now();
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { break };
        let _ = s.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        flood.push(s);
        if t0.elapsed() > T {
            break;
        }
    }
    assert!(flood.len() >= 2500, "only {} flood connections", flood.len());

    // Fresh clients are served: the oldest partial requests make room.
    let sid = poll("a handshake during the flood", T, || handshake(port).ok());
    assert!(!sid.is_empty());
    // The control socket works, and so does a spawn.
    let list = pm2.jlist();
    assert_eq!(list.len(), 2);
    let victim = pid(&list[0]);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    pm2.wait_for("the killed worker respawned", T, |l| {
        l.len() == 2 && l.iter().all(|p| status(p) == "online" && pid(p) != victim && pid(p) > 0)
    });
    poll("a handshake after the respawn", T, || handshake(port).ok());
    let rss_peak = rss_kb(daemon);
    let shed = flood
        .iter()
        .filter(|s| {
            let _ = s.set_nonblocking(true);
            let mut b = [0u8; 64];
            matches!((&mut &**s).read(&mut b), Ok(n) if n > 0 && b.starts_with(b"HTTP/1.1 503"))
        })
        .count();
    drop(flood);
    eprintln!(
        "flood of {FLOOD} partial requests at a 4096-fd limit: {shed} shed with 503; daemon RSS {rss_before} kB -> {rss_peak} kB"
    );
    assert!(shed > 0, "no connection was shed");
    pm2.run(&["ls"]).ok();
}

fn node_binary() -> std::path::PathBuf {
    let out = std::process::Command::new("sh").args(["-c", "command -v node"]).output().expect("sh");
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A respawn that fails because the interpreter is missing (a deploy
/// replacing it when the app crashed) is retried with backoff: once the
/// interpreter is back the app comes online by itself; one that never comes
/// back goes `errored` after the restart budget.
#[test]
fn missing_interpreter_is_retried_until_it_comes_back() {
    let pm2 = Pm2::new();
    let dir = tempfile::tempdir().unwrap();
    let interp = dir.path().join("node");
    std::fs::copy(node_binary(), &interp).unwrap();
    let interp_s = interp.to_string_lossy().into_owned();
    pm2.run(&["start", "forever.js", "--name", "later", "--interpreter", &interp_s]).ok();
    let list = pm2.wait_for("online", T, |l| l.iter().any(|p| p["name"] == "later" && pid(p) > 0));
    let first = pid(&list[0]) as i32;

    std::fs::remove_file(&interp).unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let list = pm2.wait_for("waiting restart", T, |l| {
        l.iter().any(|p| p["name"] == "later" && status(p) == "waiting restart")
    });
    assert_eq!(pid(&list[0]), 0);
    let log = pm2.daemon_log();
    assert!(log.contains("retrying in") && log.contains(&interp_s), "{log}");

    // Restored the way a deploy does it (whole file, then rename), so no
    // attempt ever sees half a binary.
    let part = dir.path().join("node.part");
    std::fs::copy(node_binary(), &part).unwrap();
    std::fs::rename(&part, &interp).unwrap();
    let list = pm2.wait_for("online after the interpreter came back", Duration::from_secs(60), |l| {
        l.iter().any(|p| p["name"] == "later" && status(p) == "online" && pid(p) > 0)
    });
    let second = pid(&list[0]) as i32;
    assert_ne!(second, first);
    assert!(pid_alive(second));

    // Never comes back: errored once the budget (3 attempts here) is spent.
    let other = tempfile::tempdir().unwrap();
    let gone = other.path().join("node");
    std::fs::copy(node_binary(), &gone).unwrap();
    let gone_s = gone.to_string_lossy().into_owned();
    pm2.run(&["start", "forever.js", "--name", "never", "--interpreter", &gone_s, "--max-restarts", "3"])
        .ok();
    let list = pm2.wait_for("online", T, |l| l.iter().any(|p| p["name"] == "never" && pid(p) > 0));
    let p = list.iter().find(|p| p["name"] == "never").map(pid).unwrap_or(0) as i32;
    std::fs::remove_file(&gone).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(p, libc::SIGKILL) };
    let list =
        pm2.wait_for("errored", T, |l| l.iter().any(|p| p["name"] == "never" && status(p) == "errored"));
    assert!(list.iter().any(|p| p["name"] == "later" && status(p) == "online"));
    assert!(pm2.daemon_log().contains("gave up after 3 failed attempts"), "{}", pm2.daemon_log());
}

/// A tmpfs of `size` mounted on a private directory for one test, unmounted
/// (lazily, so a daemon still holding a file cannot keep it) when dropped.
/// `None` when mounting is not permitted (not root, no CAP_SYS_ADMIN).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("corral-tmpfs-").tempdir().ok()?;
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        st.success().then_some(Tmpfs { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn remount(&self, opt: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(self.path())
            .status()
            .expect("mount");
        assert!(st.success(), "remount {opt} failed");
    }

    /// Makes the path read-only for every new open while files already open
    /// for writing (which forbid a plain `remount,ro`) stay writable: a
    /// read-only bind mount on top of it.
    fn cover_read_only(&self) {
        for args in [&["--bind"][..], &["-o", "remount,bind,ro"][..]] {
            let st = std::process::Command::new("mount")
                .args(args)
                .arg(self.path())
                .arg(self.path())
                .status()
                .expect("mount");
            assert!(st.success(), "mount {args:?} failed");
        }
    }

    fn uncover(&self) {
        let st = std::process::Command::new("umount").arg(self.path()).status().expect("umount");
        assert!(st.success(), "umount of the read-only cover failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Twice: a read-only cover left by a failed test sits on top.
        for _ in 0..2 {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Writes `path` in 64 KiB chunks until the file system says it is full.
fn fill(path: &std::path::Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut total = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
        assert!(total < 64 << 20, "the file system never filled");
    }
    total
}

/// PM2_HOME on a small file system that fills up: the app keeps running
/// while its log writes fail, `pm2 save` fails with a clear error and leaves
/// the previous dump whole (and no temporary file), and once space returns
/// the log writes resume by themselves (the daemon reports what was dropped)
/// and `save` works again.
#[test]
fn full_disk_keeps_apps_running_and_the_dump_intact() {
    let Some(fs) = Tmpfs::mount("4m") else {
        println!("SKIPPED: cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)");
        return;
    };
    let home = fs.path().to_path_buf();
    let mut pm2 = Pm2::new();
    pm2.envs.push(("PM2_HOME".into(), home.to_string_lossy().into_owned()));
    // 1 KiB lines every 50 ms, so a write always needs a new page.
    let app_dir = tempfile::tempdir().unwrap();
    let script = app_dir.path().join("chatty.js");
    std::fs::write(
        &script,
        "let n = 0; setInterval(() => console.log(`line ${n++} ` + 'y'.repeat(1024)), 50);\n",
    )
    .unwrap();
    let script_s = script.to_string_lossy().into_owned();
    pm2.run(&["start", &script_s, "--name", "chatty"]).ok();
    let list = pm2.wait_for("online", T, |l| l.iter().any(|p| p["name"] == "chatty" && pid(p) > 0));
    let app_pid = pid(&list[0]);
    pm2.run(&["save"]).ok();
    let dump = std::fs::read(home.join("dump.pm2")).unwrap();

    let filler = home.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0);
    let out_log = home.join("logs/chatty-out.log");
    // The log stops growing: its writes fail.
    let stuck = poll("log writes to fail", T, || {
        let a = std::fs::metadata(&out_log).map(|m| m.len()).ok()?;
        std::thread::sleep(Duration::from_millis(500));
        let b = std::fs::metadata(&out_log).map(|m| m.len()).ok()?;
        (a == b).then_some(b)
    });

    let r = pm2.run(&["save"]);
    assert_ne!(r.code, 0, "save on a full disk must fail\n{}", r.all());
    assert!(r.all().contains("No space left"), "{}", r.all());
    assert_eq!(std::fs::read(home.join("dump.pm2")).unwrap(), dump, "the previous dump changed");
    assert!(!home.join("dump.pm2.tmp").exists());
    assert!(!home.join("dump.pm2.bak.tmp").exists());
    let list = pm2.jlist();
    let p = list.iter().find(|p| p["name"] == "chatty").expect("chatty listed");
    assert_eq!((status(p), pid(p)), ("online", app_pid), "the app must keep running on a full disk");
    assert!(pid_alive(app_pid as i32));

    std::fs::remove_file(&filler).unwrap();
    poll("log writes to resume", T, || {
        (std::fs::metadata(&out_log).map(|m| m.len()).unwrap_or(0) > stuck).then_some(())
    });
    let log = poll("the daemon to report the dropped lines", T, || {
        let log = std::fs::read_to_string(home.join("pm2.log")).unwrap_or_default();
        log.contains("writes resumed").then_some(log)
    });
    assert!(log.contains("were dropped"), "{log}");
    pm2.run(&["save"]).ok();
    assert!(!home.join("dump.pm2.tmp").exists());
    let list = pm2.jlist();
    assert_eq!(pid(&list[0]), app_pid);
    pm2.run(&["kill"]).ok();
}

/// A read-only PM2_HOME: a running daemon keeps its apps and refuses `save`
/// clearly; a daemon cannot start there and says why (non-zero exit); the
/// saved list survives both and is restored once the home is writable again.
#[test]
fn read_only_home_never_loses_the_saved_list() {
    let Some(fs) = Tmpfs::mount("8m") else {
        println!("SKIPPED: cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)");
        return;
    };
    let home = fs.path().to_path_buf();
    let mut pm2 = Pm2::new();
    pm2.envs.push(("PM2_HOME".into(), home.to_string_lossy().into_owned()));
    pm2.run(&["start", "forever.js", "--name", "kept"]).ok();
    let list = pm2.wait_for("online", T, |l| l.iter().any(|p| p["name"] == "kept" && pid(p) > 0));
    let app_pid = pid(&list[0]);
    pm2.run(&["save"]).ok();
    let dump = std::fs::read(home.join("dump.pm2")).unwrap();

    // Read-only under a running daemon.
    fs.cover_read_only();
    let r = pm2.run(&["save"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("Read-only file system"), "{}", r.all());
    let list = pm2.jlist();
    assert_eq!((status(&list[0]), pid(&list[0])), ("online", app_pid));
    assert_eq!(std::fs::read(home.join("dump.pm2")).unwrap(), dump);

    // Read-only before a daemon starts.
    fs.uncover();
    pm2.run(&["kill"]).ok();
    fs.remount("ro");
    let r = pm2.run(&["ls"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("Read-only file system"), "{}", r.all());
    let r = pm2.run(&["resurrect"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert_eq!(std::fs::read(home.join("dump.pm2")).unwrap(), dump);

    fs.remount("rw");
    pm2.run(&["resurrect"]).ok();
    pm2.wait_for("restored", T, |l| l.iter().any(|p| p["name"] == "kept" && status(p) == "online"));
    pm2.run(&["kill"]).ok();
}

/// Handshakes sent while a Socket.IO app is starting (the sticky port is bound before any
/// worker is ready) wait for the app instead of getting a 503; connections refused before the
/// port is bound are retried.
#[test]
fn requests_while_the_app_starts_wait_for_it_instead_of_503() {
    let mut pm2 = Pm2::new();
    pm2.cwd = node_dir();
    let port: u16 = pm2.envs.iter().find(|(k, _)| k == "PM2_PORT").and_then(|(_, v)| v.parse().ok()).unwrap();
    // The daemon first, so the app's start is all that remains.
    pm2.run(&["ping"]).ok();
    let mut start = pm2.cmd(&["start", "sio_worker.js", "-i", "2", "--name", "sio"]).spawn().unwrap();
    let deadline = Instant::now() + T;
    let (mut served, mut refused, mut others) = (0, 0, Vec::new());
    while served < 20 && Instant::now() < deadline {
        match handshake(port) {
            Ok(_) => served += 1,
            Err(e) if e.contains("refused") => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => others.push(e),
        }
    }
    assert!(start.wait().unwrap().success());
    assert_eq!(served, 20, "refused {refused}, other answers: {others:?}");
    assert!(others.is_empty(), "answers other than 200 while the app started: {others:?}");
}
