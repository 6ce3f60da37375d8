//! Reliability under bad input and bad luck: file permissions and symbolic
//! links, the control socket's limits, the sticky port under floods.
//! Every load here is bounded in count and time and stays on loopback.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

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
