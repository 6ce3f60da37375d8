//! Tests of the jlist / pm2_env shapes and reading dumps back.

use crate::tests::fx;
use crate::*;
use corral_proto::ExecMode;
use serde_json::{json, Value};

fn spec_of(f: &crate::tests::Fx, v: Value) -> AppSpec {
    let Value::Object(m) = v else { panic!() };
    app_from_value(&m, &f.ctx).unwrap().0
}

/// What the daemon does: the app env plus injected pm2 fields.
fn proc_of(app: AppSpec, pm_id: u32, instance: u32, home: &std::path::Path) -> ProcInfo {
    let mut env = app.env.clone();
    for (k, v) in [
        ("pm_id", pm_id.to_string()),
        ("name", app.name.clone()),
        ("namespace", app.namespace.clone()),
        ("unique_id", "bd2b20d7-35d5-4da8-97d5-fafd2cbf74a1".into()),
        ("pm_exec_path", app.script.clone()),
        ("status", "launching".into()),
        ("exec_mode", app.exec_mode.as_str().into()),
        ("instances", app.instances.unwrap_or(1).to_string()),
        ("vizion", "true".into()),
        ("PM2_HOME", home.to_string_lossy().into_owned()),
    ] {
        env.insert(k.to_owned(), v);
    }
    env.insert(app.instance_var.clone(), instance.to_string());
    let logs = home.join("logs");
    let base = sanitize_log_name(&app.name);
    let sfx = if app.merge_logs { String::new() } else { format!("-{pm_id}") };
    ProcInfo {
        pm_id,
        pid: 4242,
        status: corral_proto::Status::Online,
        restart_time: 2,
        unstable_restarts: 0,
        created_at: 1795654844253,
        pm_uptime: 1795654844253,
        exit_code: None,
        prev_restart_delay: None,
        instance,
        unique_id: "bd2b20d7-35d5-4da8-97d5-fafd2cbf74a1".into(),
        pm_out_log_path: app
            .out_file
            .clone()
            .map(|p| if sfx.is_empty() { p } else { p.replace(".log", &format!("{sfx}.log")) })
            .unwrap_or_else(|| logs.join(format!("{base}-out{sfx}.log")).to_string_lossy().into_owned()),
        pm_err_log_path: app
            .error_file
            .clone()
            .unwrap_or_else(|| logs.join(format!("{base}-error{sfx}.log")).to_string_lossy().into_owned()),
        pm_log_path: app.log_file.clone(),
        pm_pid_path: app
            .pid_file
            .clone()
            .map(|p| p.replace(".pid", &format!("-{pm_id}.pid")))
            .unwrap_or_else(|| home.join(format!("pids/{base}-{pm_id}.pid")).to_string_lossy().into_owned()),
        node_version: Some("20.20.2".into()),
        username: "root".into(),
        memory: 57221120,
        cpu: 0.26,
        env,
        app,
        sticky: false,
        env_is_delta: false,
        axm: None,
        health: None,
    }
}

#[test]
fn jlist_shape_online() {
    let f = fx();
    f.write("package.json", r#"{"version": "1.2.3"}"#);
    let app = spec_of(
        &f,
        json!({"name": "worker", "script": "app.js", "args": "--a b", "env": {"BAR": 1, "status": "evil", "name": "evil"},
               "env_production": {"X": "1"}, "custom_key": 7, "max_memory_restart": "200M", "kill_timeout": 3000,
               "cron_restart": "0 * * * *"}),
    );
    let p = proc_of(app, 2, 0, &f.ctx.pm2_home);
    let j = jlist_entry(&p);
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["pid", "name", "pm2_env", "pm_id", "monit"]);
    assert_eq!(j["pid"], 4242);
    assert_eq!(j["name"], "worker");
    assert_eq!(j["pm_id"], 2);
    assert_eq!(j["monit"], json!({"memory": 57221120u64, "cpu": 0.3}));
    let e = &j["pm2_env"];
    for (k, want) in [
        ("name", json!("worker")),
        ("namespace", json!("default")),
        ("pm_id", json!(2)),
        ("status", json!("online")),
        ("restart_time", json!(2)),
        ("unstable_restarts", json!(0)),
        ("created_at", json!(1795654844253u64)),
        ("pm_uptime", json!(1795654844253u64)),
        ("exec_mode", json!("fork_mode")),
        ("exec_interpreter", json!("node")),
        ("instances", json!(1)),
        ("instance_var", json!("NODE_APP_INSTANCE")),
        ("NODE_APP_INSTANCE", json!(0)),
        ("node_args", json!([])),
        ("args", json!(["--a", "b"])),
        ("merge_logs", json!(true)),
        ("watch", json!(false)),
        ("autorestart", json!(true)),
        ("autostart", json!(true)),
        ("treekill", json!(true)),
        ("vizion", json!(true)),
        ("pmx", json!(true)),
        ("automation", json!(true)),
        ("windowsHide", json!(true)),
        ("kill_retry_time", json!(100)),
        ("km_link", json!(false)),
        ("username", json!("root")),
        ("version", json!("1.2.3")),
        ("node_version", json!("20.20.2")),
        ("unique_id", json!("bd2b20d7-35d5-4da8-97d5-fafd2cbf74a1")),
        ("max_memory_restart", json!(200 * 1024 * 1024)),
        ("kill_timeout", json!(3000)),
        ("cron_restart", json!("0 * * * *")),
        ("env_production", json!({"X": "1"})),
        ("custom_key", json!(7)),
        ("axm_actions", json!([])),
        ("axm_monitor", json!({})),
        ("axm_dynamic", json!({})),
        // Flattened env var, typed as in the file.
        ("BAR", json!(1)),
    ] {
        assert_eq!(e[k], want, "pm2_env.{k}");
    }
    assert_eq!(e["pm_exec_path"], json!(f.root().join("app.js").to_string_lossy()));
    assert_eq!(e["pm_cwd"], json!(f.root().to_string_lossy()));
    assert!(e["pm_out_log_path"].as_str().unwrap().ends_with("/logs/worker-out.log"));
    assert!(e["pm_pid_path"].as_str().unwrap().ends_with("/pids/worker-2.pid"));
    assert!(e.get("pm_log_path").is_none());
    assert!(e.get("exit_code").is_none());
    // env vars never shadow pm2's own fields, but stay in `env`; the keys
    // the daemon injects into the child are not in `env` (pm2 shows them
    // once), and numbers given in the file stay numbers.
    assert_eq!(e["env"]["status"], "evil");
    assert_eq!(e["env"]["name"], "evil");
    for injected in ["exec_mode", "pm_exec_path", "instances", "vizion", "NODE_APP_INSTANCE", "pm_id"] {
        assert!(e["env"].get(injected).is_none(), "env.{injected}");
    }
    assert_eq!(e["env"]["BAR"], 1);
    // pm2 starts @pm2/io inside an app only when it is configured for it:
    // nothing reports axm options by default.
    assert_eq!(e["axm_options"], json!({}));
    assert_eq!(e["env"]["unique_id"], "bd2b20d7-35d5-4da8-97d5-fafd2cbf74a1");
    assert_eq!(e["env"]["SHELL_VAR"], "from-shell");
    assert_eq!(e["SHELL_VAR"], "from-shell");
    // Whole thing serialises as compact JSON starting like pm2's.
    let text = serde_json::to_string(&j).unwrap();
    assert!(text.starts_with(r#"{"pid":4242,"name":"worker","pm2_env":{"namespace":"default","#), "{text}");
}

#[test]
fn jlist_stopped_and_errored() {
    let f = fx();
    let app = spec_of(&f, json!({"script": "app.js"}));
    let mut p = proc_of(app, 0, 0, &f.ctx.pm2_home);
    for st in ["stopped", "errored"] {
        p.status = st.parse().unwrap();
        p.exit_code = Some(1);
        p.prev_restart_delay = Some(150);
        let j = jlist_entry(&p);
        assert_eq!(j["pid"], 0);
        assert_eq!(j["monit"], json!({"memory": 0, "cpu": 0}));
        assert_eq!(j["pm2_env"]["status"], st);
        assert_eq!(j["pm2_env"]["exit_code"], 1);
        assert_eq!(j["pm2_env"]["prev_restart_delay"], 150);
    }
    p.status = corral_proto::Status::Online;
    p.cpu = 12.0;
    assert_eq!(serde_json::to_string(&jlist_entry(&p)["monit"]).unwrap(), r#"{"memory":57221120,"cpu":12}"#);
}

#[test]
fn pm2_env_cluster_and_options() {
    let f = fx();
    let app = spec_of(
        &f,
        json!({"name": "web", "script": "app.js", "instances": 2, "watch": ["src"], "log": "all.log",
               "instance_var": "INSTANCE_ID", "vizion": false, "time": true}),
    );
    let mut p = proc_of(app, 3, 1, &f.ctx.pm2_home);
    p.pm_log_path = p.app.log_file.clone();
    let e = pm2_env(&p);
    assert_eq!(e["exec_mode"], "cluster_mode");
    assert_eq!(e["instances"], 2);
    assert_eq!(e["merge_logs"], false);
    // A custom instance_var replaces NODE_APP_INSTANCE, as in pm2.
    assert!(e.get("NODE_APP_INSTANCE").is_none());
    assert_eq!(e["INSTANCE_ID"], 1);
    assert_eq!(e["vizion"], false);
    assert_eq!(e["log_date_format"], "YYYY-MM-DDTHH:mm:ss");
    assert_eq!(e["watch"], json!([f.root().join("src").to_string_lossy()]));
    assert_eq!(e["pm_log_path"], json!(f.root().join("all.log").to_string_lossy()));
}

#[test]
fn round_trip_through_a_dump() {
    let f = fx();
    f.write("out/placeholder", "");
    let specs = [
        json!({"name": "api", "script": "app.js"}),
        json!({"name": "web", "script": "app.js", "instances": 2, "env": {"PORT": 3000}, "env_production": {"A": "b"},
               "max_memory_restart": "1G", "cron": "0 3 * * *", "kill_timeout": 5000, "min_uptime": "2s",
               "max_restarts": 3, "restart_delay": 100, "exp_backoff_restart_delay": 200, "stop_exit_codes": [0, 3],
               "wait_ready": true, "listen_timeout": 9000, "shutdown_with_message": true, "increment_var": "PORT",
               "autorestart": false, "treekill": false, "watch": ["lib"], "ignore_watch": ["node_modules"],
               "watch_delay": 300, "out_file": "out/web.log", "error_file": "/dev/null", "pid": "out/web.pid",
               "log_type": "json", "time": true, "node_args": ["--max-old-space-size=512"], "args": ["-x", "y z"],
               "namespace": "front", "instance_var": "INST", "sticky": true, "sticky_port": 9001, "unknown_opt": [1],
               "vizion": false, "uid": "www", "filter_env": ["SECRET"]}),
        json!({"name": "sh", "script": "sleep 100"}),
        json!({"name": "solo", "script": "app.js", "instances": 2, "cluster_group": false}),
        json!({"name": "chat-eu", "script": "app.js", "instances": 2, "cluster_group": "chat"}),
        json!({"script": "app.js", "exec_mode": "fork", "instances": 3, "autostart": false, "disable_logs": true}),
        json!({"name": "probed", "script": "app.js", "env": {"PORT": 4000}, "notify": true, "watchdog": "30s",
               "readinessProbe": {"httpGet": {"path": "/ready", "status": 204}, "periodSeconds": 0.5},
               "liveness_probe": "tcp:4001", "startup_probe": {"exec": ["test", "-f", "/tmp/x"], "failureThreshold": 30}}),
    ];
    for (i, sv) in specs.into_iter().enumerate() {
        let app = spec_of(&f, sv);
        let instance = if app.instances.is_some() { 1 } else { 0 };
        let mut p = proc_of(app.clone(), 7 + i as u32, instance, &f.ctx.pm2_home);
        if let Some(var) = &app.increment_var {
            // The daemon adds the instance index to increment_var.
            let base: i64 = app.env[var].parse().unwrap();
            p.env.insert(var.clone(), (base + instance as i64).to_string());
        }
        let mut entry = pm2_env(&p);
        // `pm2 save` drops these, then writes text.
        let o = entry.as_object_mut().unwrap();
        o.remove("pm_id");
        o.remove("instances");
        o.remove("prev_restart_delay");
        let text = serde_json::to_string_pretty(&entry).unwrap();
        let back_v: Value = json5::parse(&text).unwrap();
        let mut ctx = f.ctx.clone();
        ctx.env.clear();
        let back = app_from_pm2_env(&back_v, &ctx).unwrap_or_else(|e| panic!("{}: {e}", app.name));
        let mut want = app.clone();
        want.instances = None;
        assert_eq!(back, want, "round trip of {}", app.name);
        assert_eq!(instance_from_pm2_env(&back_v), Some(instance));
    }
}

/// A real pm2 6.0.14 `dump.pm2` (two entries, shaped like the captured jlist
/// sample: fork app from an ecosystem file, and a cluster instance).
fn real_pm2_dump(root: &str, home: &str) -> String {
    r#"[
  {
    "namespace": "default", "kill_retry_time": 100, "windowsHide": true, "username": "root", "treekill": true,
    "automation": true, "pmx": true, "instance_var": "NODE_APP_INSTANCE", "autorestart": true, "autostart": true,
    "vizion": true, "merge_logs": true, "args": ["--a", "b"], "name": "worker", "node_args": [],
    "pm_exec_path": "@ROOT@/env.js", "pm_cwd": "@ROOT@", "exec_interpreter": "node", "exec_mode": "fork_mode",
    "pm_out_log_path": "@PMHOME@/logs/worker-out.log", "pm_err_log_path": "@PMHOME@/logs/worker-error.log",
    "pm_pid_path": "@PMHOME@/pids/worker-2.pid", "km_link": false, "vizion_running": false, "NODE_APP_INSTANCE": 0,
    "worker": "{}", "BAR": "1", "PM2_JSON_PROCESSING": "true", "PM2_USAGE": "CLI", "PM2_HOME": "@PMHOME@",
    "PM2_PORT": "18080", "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root",
    "unique_id": "bd2b20d7-35d5-4da8-97d5-fafd2cbf74a1", "status": "online", "pm_uptime": 1795654844253,
    "axm_actions": [{"action_name": "km:heapdump", "action_type": "internal", "arity": 2}],
    "axm_monitor": {"Used Heap Size": {"value": "6.50", "type": "internal/v8/heap/used", "unit": "MiB", "historic": true}},
    "axm_options": {"error": true, "heapdump": true}, "axm_dynamic": {}, "created_at": 1795654844253,
    "restart_time": 0, "unstable_restarts": 0, "version": "1.2.3", "node_version": "20.20.2",
    "versioning": null,
    "env": {"worker": "{}", "BAR": "1", "PM2_JSON_PROCESSING": "true", "PM2_USAGE": "CLI", "PM2_HOME": "@PMHOME@",
            "PM2_PORT": "18080", "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root",
            "unique_id": "bd2b20d7-35d5-4da8-97d5-fafd2cbf74a1"}
  },
  {
    "namespace": "default", "kill_retry_time": 100, "windowsHide": true, "username": "root", "treekill": true,
    "automation": true, "pmx": true, "instance_var": "NODE_APP_INSTANCE", "autorestart": true, "autostart": true,
    "vizion": true, "merge_logs": false, "name": "web", "node_args": ["--max-old-space-size=256"],
    "pm_exec_path": "@ROOT@/web.js", "pm_cwd": "@ROOT@", "exec_interpreter": "/usr/lib/node_modules/pm2/node_modules/.bin/node",
    "exec_mode": "cluster_mode", "max_memory_restart": 209715200, "cron_restart": "0 3 * * *", "kill_timeout": 3000,
    "pm_out_log_path": "/var/log/web/out-3.log", "pm_err_log_path": "@PMHOME@/logs/web-error-3.log",
    "pm_pid_path": "@PMHOME@/pids/web-3.pid", "km_link": false, "vizion_running": false, "NODE_APP_INSTANCE": 1,
    "env_production": {"NODE_ENV": "production"}, "web": "{}", "NODE_ENV": "production",
    "unique_id": "0f6a3b1e-0000-4000-8000-000000000001", "status": "stopped", "pm_uptime": 1795654845000,
    "axm_actions": [], "axm_monitor": {}, "axm_options": {}, "axm_dynamic": {}, "created_at": 1795654845000,
    "restart_time": 4, "unstable_restarts": 0, "exit_code": 0, "_pm2_version": "6.0.14", "version": "N/A",
    "node_version": "20.20.2",
    "env": {"web": "{}", "NODE_ENV": "production", "unique_id": "0f6a3b1e-0000-4000-8000-000000000001"}
  }
]"#
    .replace("@ROOT@", root)
    .replace("@PMHOME@", home)
}

#[test]
fn real_pm2_dump_is_loadable() {
    let f = fx();
    f.write("env.js", "");
    f.write("web.js", "");
    let root = f.root().to_string_lossy().into_owned();
    let home = f.ctx.pm2_home.to_string_lossy().into_owned();
    let text = real_pm2_dump(&root, &home);
    let Value::Array(entries) = json5::parse(&text).unwrap() else { panic!() };
    let mut ctx = f.ctx.clone();
    ctx.env.clear();

    let w = app_from_pm2_env(&entries[0], &ctx).unwrap();
    assert_eq!(w.name, "worker");
    assert_eq!(w.script, format!("{root}/env.js"));
    assert_eq!(w.cwd, root);
    assert_eq!(w.args, vec!["--a", "b"]);
    assert_eq!(w.interpreter, "node");
    assert_eq!(w.exec_mode, ExecMode::Fork);
    assert_eq!(w.instances, None);
    assert!(w.merge_logs);
    assert_eq!((w.out_file.as_deref(), w.error_file.as_deref(), w.pid_file.as_deref()), (None, None, None));
    let mut env_keys: Vec<&str> = w.env.keys().map(String::as_str).collect();
    env_keys.sort();
    assert_eq!(
        env_keys,
        vec!["BAR", "HOME", "PATH", "PM2_JSON_PROCESSING", "PM2_PORT", "PM2_USAGE", "worker"]
    );
    assert!(w.extra.is_empty(), "{:?}", w.extra);
    assert_eq!(instance_from_pm2_env(&entries[0]), Some(0));

    let c = app_from_pm2_env(&entries[1], &ctx).unwrap();
    assert_eq!(c.name, "web");
    assert_eq!(c.exec_mode, ExecMode::Cluster);
    assert_eq!(c.interpreter, "node");
    assert_eq!(c.node_args, vec!["--max-old-space-size=256"]);
    assert!(!c.merge_logs);
    assert_eq!(c.max_memory_restart, Some(209715200));
    assert_eq!(c.cron_restart.as_deref(), Some("0 3 * * *"));
    assert_eq!(c.kill_timeout, 3000);
    assert_eq!(c.out_file.as_deref(), Some("/var/log/web/out.log"));
    assert_eq!(c.error_file, None);
    assert_eq!(c.pid_file, None);
    assert_eq!(c.env.get("NODE_ENV").map(String::as_str), Some("production"));
    assert!(!c.env.contains_key("unique_id"));
    assert_eq!(c.extra.get("env_production"), Some(&json!({"NODE_ENV": "production"})));
    assert_eq!(c.extra.len(), 1, "{:?}", c.extra);
    assert_eq!(instance_from_pm2_env(&entries[1]), Some(1));

    // An option that no longer validates is dropped, the process is kept.
    let mut odd = entries[1].clone();
    odd["min_uptime"] = json!(5);
    odd["kill_timeout"] = json!({"weird": true});
    let c = app_from_pm2_env(&odd, &ctx).unwrap();
    assert_eq!((c.min_uptime, c.kill_timeout), (1000, 1600));
    assert_eq!(c.cron_restart.as_deref(), Some("0 3 * * *"));

    // A missing script is reported, not silently dropped.
    let mut gone = entries[0].clone();
    gone["pm_exec_path"] = json!(format!("{root}/gone.js"));
    assert!(matches!(app_from_pm2_env(&gone, &ctx), Err(ConfigError::ScriptNotFound(_))));
    assert!(app_from_pm2_env(&json!(3), &ctx).is_err());
}

#[test]
fn jlist_of_100_apps_with_large_envs() {
    // Speed is measured in bench/ (row 2), never asserted here.
    let f = fx();
    let mut app = spec_of(&f, json!({"script": "app.js", "env_production": {"A": "1"}}));
    for i in 0..60 {
        app.env.insert(format!("VAR_{i}"), "x".repeat(40));
    }
    let procs: Vec<ProcInfo> = (0..100).map(|i| proc_of(app.clone(), i, 0, &f.ctx.pm2_home)).collect();
    let out = Value::Array(procs.iter().map(jlist_entry).collect());
    let text = serde_json::to_string(&out).unwrap();
    assert!(text.len() > 100_000);
    let back: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(back.len(), 100);
    assert_eq!(back[99]["pm2_env"]["env"]["VAR_59"], "x".repeat(40));
}

#[test]
fn jlist_entry_text_matches_jlist_entry() {
    use corral_proto::ProcInfo;
    let mut p = ProcInfo {
        pm_id: 3,
        pid: 42,
        status: corral_proto::Status::Online,
        memory: 1234,
        cpu: 12.5,
        ..Default::default()
    };
    p.app.name = "we\"ird".into();
    for status in ["online", "stopped"] {
        p.status = status.parse().unwrap();
        let mut text = String::new();
        crate::jlist_entry_text(&p, &crate::pm2_env(&p).to_string(), &mut text);
        assert_eq!(text, serde_json::to_string(&crate::jlist_entry(&p)).unwrap());
    }
}

#[test]
fn increment_var_and_typed_env_in_pm2_env() {
    let f = fx();
    let app = spec_of(
        &f,
        json!({"name": "inc", "script": "app.js", "instances": 2, "increment_var": "PORT",
               "env": {"PORT": 3000, "FLAG": true, "S": "3000"}}),
    );
    let p = proc_of(app, 4, 1, &f.ctx.pm2_home);
    let e = pm2_env(&p);
    assert_eq!(e["PORT"], 3001);
    assert_eq!(e["env"]["PORT"], 3001);
    assert_eq!(e["env"]["FLAG"], true);
    assert_eq!(e["env"]["S"], "3000");
    // An --update-env that changed the value drops the type.
    let mut p2 = p.clone();
    p2.app.env.insert("FLAG".into(), "no".into());
    assert_eq!(pm2_env(&p2)["env"]["FLAG"], "no");
}

#[test]
fn pm2_cluster_entry_without_merge_logs_gets_no_doubled_suffix() {
    let f = fx();
    f.write("web.js", "");
    let root = f.root().to_string_lossy().into_owned();
    let entry = json!({"name": "web", "pm_id": 1, "exec_mode": "cluster_mode", "instances": 2,
        "pm_exec_path": format!("{root}/web.js"), "pm_cwd": root,
        "pm_out_log_path": "/var/log/web/web-out-1.log", "pm_err_log_path": "/var/log/web/web-err-1.log",
        "pm_pid_path": "/var/run/web-1.pid", "env": {}});
    let mut ctx = f.ctx.clone();
    ctx.env.clear();
    let app = app_from_pm2_env(&entry, &ctx).unwrap();
    assert_eq!(app.out_file.as_deref(), Some("/var/log/web/web-out.log"));
    assert_eq!(app.error_file.as_deref(), Some("/var/log/web/web-err.log"));
    assert!(!app.merge_logs);
    // A suffix that is not this entry's pm_id is part of the name.
    let mut e2 = entry.clone();
    e2["pm_out_log_path"] = json!("/var/log/web/web-out-2024.log");
    let app = app_from_pm2_env(&e2, &ctx).unwrap();
    assert_eq!(app.out_file.as_deref(), Some("/var/log/web/web-out-2024.log"));
}
