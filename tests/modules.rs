//! pm2 modules from the npm registry: `pm2 install` of the real
//! pm2-logrotate (pinned version), its Module table, its settings through
//! `pm2 set`, log rotation by `max_size`, restart with a new daemon, not
//! saved in dump.pm2, `pm2 uninstall`; a package that does not exist fails
//! cleanly. Needs `npm` and the npm registry.

mod common;

use common::{poll, Pm2};
use serde_json::Value;
use std::time::Duration;

const LOGROTATE: &str = "pm2-logrotate@3.0.0";

fn module_db(pm2: &Pm2) -> Value {
    let text = std::fs::read_to_string(pm2.home().join("module_conf.json")).unwrap_or_else(|_| "{}".into());
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v["module-db-v2"].clone()
}

fn rotated_files(pm2: &Pm2) -> Vec<String> {
    std::fs::read_dir(pm2.home().join("logs"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("chatty-out__") && n.ends_with(".log"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn unknown_module_fails_and_leaves_nothing() {
    let pm2 = Pm2::new();
    let r = pm2.run(&["install", "corral-test-no-such-module-3f9a1c"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("nothing was installed"), "{}", r.all());
    let left: Vec<String> = std::fs::read_dir(pm2.home().join("modules"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind in modules/: {left:?}");
    assert!(module_db(&pm2).get("corral-test-no-such-module-3f9a1c").is_none());
    let r = pm2.run(&["install", "../escape"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is not an npm package name"), "{}", r.all());
    let r = pm2.run(&["uninstall", "corral-test-no-such-module-3f9a1c"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Unknown module"), "{}", r.all());
}

#[test]
fn logrotate_module_installs_rotates_and_uninstalls() {
    let pm2 = Pm2::new();
    let r = pm2.run(&["install", LOGROTATE]);
    r.ok();
    assert!(r.stdout.contains("Module successfully installed and launched"), "{}", r.all());
    assert!(r.stdout.contains("\nModule\n"), "no Module table:\n{}", r.stdout);
    assert!(r.stdout.contains("pm2-logrotate"), "{}", r.stdout);
    assert!(pm2.home().join("modules/pm2-logrotate/node_modules/pm2-logrotate/package.json").exists());
    assert!(module_db(&pm2).get("pm2-logrotate").is_some());
    pm2.wait_for("pm2-logrotate online as a module", Duration::from_secs(30), |l| {
        l.iter().any(|p| {
            p["name"] == "pm2-logrotate"
                && p["pm2_env"]["pmx_module"] == true
                && common::status(p) == "online"
        })
    });

    // A chatty app whose log the module rotates once max_size is small.
    let script = pm2.home().join("chatty.js");
    std::fs::write(&script, "setInterval(() => console.log('x'.repeat(200)), 20);\n").expect("write app");
    pm2.run(&["start", &script.to_string_lossy(), "--name", "chatty"]).ok();
    pm2.run(&["set", "pm2-logrotate:max_size", "1K"]).ok();
    let r = pm2.run(&["set", "pm2-logrotate:workerInterval", "1"]);
    r.ok();
    assert!(r.stdout.contains("Module pm2-logrotate restarted"), "{}", r.all());
    let m = pm2.proc("pm2-logrotate").expect("module listed");
    let conf: Value = serde_json::from_str(m["pm2_env"]["env"]["pm2-logrotate"].as_str().unwrap_or("{}"))
        .unwrap_or(Value::Null);
    assert_eq!(conf["max_size"], "1K", "module env: {conf}");
    assert_eq!(conf["workerInterval"], "1", "module env: {conf}");
    let files = poll("a rotated chatty-out log", Duration::from_secs(60), || {
        let f = rotated_files(&pm2);
        (!f.is_empty()).then_some(f)
    });
    assert!(!files.is_empty());

    // `pm2 ls` shows it in the Module table, apart from the apps.
    let r = pm2.run(&["ls"]);
    r.ok();
    let (apps, modules) = r.stdout.split_once("\nModule\n").expect("Module table");
    assert!(apps.contains("chatty") && !apps.contains("pm2-logrotate"), "{}", r.stdout);
    assert!(modules.contains("pm2-logrotate") && !modules.contains("chatty"), "{}", r.stdout);

    // Not saved with the apps; a new daemon starts it from module_conf.json.
    pm2.run(&["save"]).ok();
    let dump = std::fs::read_to_string(pm2.home().join("dump.pm2")).expect("dump.pm2");
    assert!(dump.contains("chatty") && !dump.contains("pm2-logrotate"), "{dump}");
    pm2.run(&["kill"]).ok();
    pm2.run(&["resurrect"]).ok();
    pm2.wait_for("module and app back", Duration::from_secs(30), |l| {
        l.iter().filter(|p| common::status(p) == "online").count() == 2
            && l.iter().filter(|p| p["name"] == "pm2-logrotate").count() == 1
    });

    // `all` means the apps, as in pm2: the module stays.
    pm2.run(&["stop", "all"]).ok();
    let list = pm2.jlist();
    let m = list.iter().find(|p| p["name"] == "pm2-logrotate").expect("module listed");
    assert_eq!(common::status(m), "online");

    let r = pm2.run(&["uninstall", "pm2-logrotate"]);
    r.ok();
    assert!(!pm2.home().join("modules/pm2-logrotate").exists());
    assert!(module_db(&pm2).get("pm2-logrotate").is_none());
    let list = pm2.jlist();
    assert!(list.iter().all(|p| p["name"] != "pm2-logrotate"), "{list:?}");
    assert!(list.iter().any(|p| p["name"] == "chatty"));
}

/// pm2-server-monit bundles @pm2/io 2.x, which sends metrics only once
/// initialised (pm2 does it for every process it starts): its metrics show
/// in jlist and describe, and its actions answer.
#[test]
fn server_monit_module_shows_its_metrics() {
    let pm2 = Pm2::new();
    let r = pm2.run(&["install", "pm2-server-monit@3.0.0"]);
    r.ok();
    let has_metrics = |l: &[Value]| {
        l.iter().any(|p| {
            p["name"] == "pm2-server-monit"
                && p["pm2_env"]["axm_monitor"]["CPU usage"]["value"].is_number()
                && p["pm2_env"]["axm_monitor"].get("Free memory").is_some()
        })
    };
    pm2.wait_for("pm2-server-monit metrics", Duration::from_secs(60), has_metrics);
    let d = pm2.run(&["describe", "pm2-server-monit"]);
    d.ok();
    assert!(d.stdout.contains(" Code metrics value ") && d.stdout.contains("CPU usage"), "{}", d.stdout);
    assert!(d.stdout.contains(" Actions available "), "{}", d.stdout);
    pm2.run(&["uninstall", "pm2-server-monit"]).ok();
}
