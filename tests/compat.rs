//! pm2 compatibility details that pm2's own e2e suite checks, each as a
//! black-box test of the real binary.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn stop_and_reload_signal_each_process_once() {
    let pm2 = Pm2::new();
    pm2.run(&["start", "delayed_exit.js", "-i", "2"]).ok();
    let list = pm2.wait_for("2 online", T, |l| l.len() == 2 && l.iter().all(|p| status(p) == "online"));
    let logs: Vec<String> =
        list.iter().map(|p| p["pm2_env"]["pm_out_log_path"].as_str().unwrap().to_string()).collect();
    for l in &logs {
        poll("app up", T, || Some(()).filter(|_| read(l).contains("delayed up")));
    }
    pm2.run(&["reload", "delayed_exit"]).ok();
    for l in &logs {
        poll("old worker exited", T, || Some(()).filter(|_| read(l).contains("exiting")));
        assert_eq!(read(l).matches("got SIGINT").count(), 1, "{l}:\n{}", read(l));
    }
}

#[test]
fn init_overwrites_like_pm2_but_keeps_a_backup() {
    let pm2 = Pm2::new();
    let dir = tempfile::tempdir().unwrap();
    let mut pm2 = pm2;
    pm2.cwd = dir.path().to_path_buf();
    std::fs::write(dir.path().join("ecosystem.config.js"), "// mine\n").unwrap();
    let r = pm2.run(&["init", "simple"]);
    r.ok();
    assert!(r.all().contains("generated"), "{}", r.all());
    let now = std::fs::read_to_string(dir.path().join("ecosystem.config.js")).unwrap();
    assert!(now.contains("apps"), "{now}");
    let bak = std::fs::read_to_string(dir.path().join("ecosystem.config.js.bak")).unwrap();
    assert_eq!(bak, "// mine\n");
}
