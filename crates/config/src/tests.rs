//! Tests of app resolution and ecosystem files (JS ones run the real node).

use crate::*;
use corral_proto::ExecMode;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;

pub(crate) struct Fx {
    _dir: tempfile::TempDir,
    pub ctx: Context,
}

pub(crate) fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()));
    env.insert("HOME".to_owned(), "/home/u".to_owned());
    env.insert("SHELL_VAR".to_owned(), "from-shell".to_owned());
    let ctx = Context {
        cwd: root.clone(),
        env,
        pm2_home: root.join(".pm2"),
        env_name: None,
        nproc: 2,
        source: "ecosystem.json".into(),
    };
    fs::write(root.join("app.js"), "console.log('hi')\n").unwrap();
    Fx { _dir: dir, ctx }
}

impl Fx {
    pub fn root(&self) -> PathBuf {
        self.ctx.cwd.clone()
    }
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.root().join(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(&p, text).unwrap();
        p
    }
}

fn obj(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn ok(f: &Fx, v: Value) -> (AppSpec, Vec<String>) {
    match app_from_value(&obj(v), &f.ctx) {
        Ok(x) => x,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn err(f: &Fx, v: Value) -> ConfigError {
    match app_from_value(&obj(v), &f.ctx) {
        Ok((s, _)) => panic!("expected an error, got {s:?}"),
        Err(e) => e,
    }
}

fn has(cmd: &str) -> bool {
    paths::which(cmd, &std::env::var("PATH").unwrap_or_default()).is_some()
}

// ---------------------------------------------------------------- app

#[test]
fn minimal_app_defaults() {
    let f = fx();
    let (s, w) = ok(&f, json!({"script": "app.js"}));
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(s.script, f.root().join("app.js").to_string_lossy());
    assert_eq!(s.name, "app");
    assert_eq!(s.namespace, "default");
    assert_eq!(s.cwd, f.root().to_string_lossy());
    assert_eq!(s.interpreter, "node");
    assert_eq!(s.exec_mode, ExecMode::Fork);
    assert_eq!(s.instances, None);
    assert!(s.merge_logs);
    assert!(s.autorestart && s.autostart && s.treekill);
    assert_eq!(s.env.get("SHELL_VAR").map(String::as_str), Some("from-shell"));
    assert_eq!(s.instance_var, "NODE_APP_INSTANCE");
    assert!(s.extra.is_empty());
}

#[test]
fn script_aliases() {
    let f = fx();
    for k in ["exec", "cmd", "command", "script"] {
        let (s, _) = ok(&f, json!({ k: "app.js" }));
        assert_eq!(s.name, "app", "{k}");
    }
    // The canonical key wins over an alias whatever the order.
    f.write("other.js", "");
    let (s, w) = ok(&f, json!({"exec": "other.js", "script": "app.js"}));
    assert_eq!(s.name, "app");
    assert_eq!(w.len(), 1, "{w:?}");
}

#[test]
fn missing_script() {
    let f = fx();
    assert!(matches!(err(&f, json!({"name": "x"})), ConfigError::NoScript));
    assert!(matches!(err(&f, json!({"script": ""})), ConfigError::NoScript));
    assert_eq!(
        err(&f, json!({"script": "nope.js"})).to_string(),
        format!("Script not found: {}/nope.js", f.root().display())
    );
}

#[test]
fn script_resolution_uses_app_cwd_then_cli_cwd_then_path() {
    let f = fx();
    f.write("sub/w.js", "");
    f.write("cfg/placeholder", "");
    let (s, _) = ok(&f, json!({"script": "w.js", "cwd": "sub"}));
    assert_eq!(s.script, f.root().join("sub/w.js").to_string_lossy());
    assert_eq!(s.cwd, f.root().join("sub").to_string_lossy());
    // Relative to the CLI cwd, never to the config file's directory.
    let (s, _) = ok(&f, json!({"script": "../app.js", "cwd": "cfg"}));
    assert_eq!(s.script, f.root().join("app.js").to_string_lossy());
    let (s, _) = ok(&f, json!({"script": "sh"}));
    assert!(s.script.starts_with('/') && s.script.ends_with("/sh"), "{}", s.script);
    assert_eq!(s.name, "sh");
    assert_eq!(s.interpreter, "none");
    let e = err(&f, json!({"script": "app.js", "cwd": "missing"}));
    assert!(e.to_string().contains("\"cwd\": directory"), "{e}");
}

#[test]
fn shell_command_line() {
    let f = fx();
    let (s, _) = ok(&f, json!({"script": "python3 -m http.server 8000"}));
    assert!(s.script.ends_with("/bash") || s.script.ends_with("/sh"), "{}", s.script);
    assert_eq!(s.args, vec!["-c", "python3 -m http.server 8000"]);
    assert_eq!(s.name, "python3 -m http");
    assert_eq!(s.interpreter, "none");
    assert_eq!(s.exec_mode, ExecMode::Fork);
    // A path with a space that exists is a path, not a command line.
    f.write("my app/srv.js", "");
    let (s, _) = ok(&f, json!({"script": "my app/srv.js"}));
    assert_eq!(s.name, "srv");
    assert_eq!(s.interpreter, "node");
}

#[test]
fn interpreter_by_extension() {
    let f = fx();
    for (file, want) in [("a.cjs", "node"), ("a.mjs", "node"), ("a.sh", "bash")] {
        f.write(file, "");
        let (s, _) = ok(&f, json!({ "script": file }));
        assert_eq!(s.interpreter, want, "{file}");
        assert_eq!(s.name, "a");
    }
    f.write("p.py", "print(1)");
    match app_from_value(&obj(json!({"script": "p.py"})), &f.ctx) {
        Ok((s, _)) => assert!(s.interpreter == "python" || s.interpreter == "python3"),
        Err(e) => assert_eq!(e.to_string(), ConfigError::InterpreterNotFound("python".into()).to_string()),
    }
    f.write("t.ts", "");
    let r = app_from_value(&obj(json!({"script": "t.ts"})), &f.ctx);
    if has("bun") {
        assert_eq!(r.unwrap().0.interpreter, "bun");
    } else {
        assert_eq!(
            r.unwrap_err().to_string(),
            "Interpreter bun is NOT AVAILABLE in PATH. (type 'which bun' to double check.)"
        );
    }
    // Binary → exec directly.
    let bin = f.write("tool", "");
    fs::write(&bin, b"\x7fELF\x02\x01\x01\0\0\0").unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(ok(&f, json!({"script": "tool"})).0.interpreter, "none");
    // Executable shell script without extension → exec; plain text → node.
    let sh = f.write("run", "#!/bin/sh\necho hi\n");
    fs::set_permissions(&sh, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(ok(&f, json!({"script": "run"})).0.interpreter, "none");
    f.write("plain", "console.log(1)\n");
    assert_eq!(ok(&f, json!({"script": "plain"})).0.interpreter, "node");
}

#[test]
fn explicit_interpreter() {
    let f = fx();
    let (s, _) = ok(&f, json!({"script": "app.js", "interpreter": "none"}));
    assert_eq!(s.interpreter, "none");
    let (s, _) = ok(&f, json!({"script": "app.js", "exec_interpreter": "sh"}));
    assert_eq!(s.interpreter, "sh");
    let e = err(&f, json!({"script": "app.js", "interpreter": "nope-interp"}));
    assert_eq!(
        e.to_string(),
        "Interpreter nope-interp is NOT AVAILABLE in PATH. (type 'which nope-interp' to double check.)"
    );
    let mut f2 = fx();
    f2.ctx.env.insert("PATH".into(), "/nonexistent".into());
    let e = app_from_value(&obj(json!({"script": "app.js"})), &f2.ctx).unwrap_err();
    assert!(matches!(e, ConfigError::InterpreterNotFound(ref i) if i == "node"), "{e}");
}

#[test]
fn args_and_node_args() {
    let f = fx();
    let (s, _) = ok(
        &f,
        json!({"script": "app.js", "args": "--port 3000 --msg \"a b\"", "node_args": "--max-old-space-size=4096"}),
    );
    assert_eq!(s.args, vec!["--port", "3000", "--msg", "a b"]);
    assert_eq!(s.node_args, vec!["--max-old-space-size=4096"]);
    let (s, _) =
        ok(&f, json!({"script": "app.js", "args": ["--port", 3000, true], "interpreterArgs": ["--inspect"]}));
    assert_eq!(s.args, vec!["--port", "3000", "true"]);
    assert_eq!(s.node_args, vec!["--inspect"]);
    let (s, _) = ok(&f, json!({"script": "app.js", "interpreter_args": "-r dotenv/config"}));
    assert_eq!(s.node_args, vec!["-r", "dotenv/config"]);
    let e = err(&f, json!({"script": "app.js", "args": {"a": 1}}));
    assert_eq!(
        e.to_string(),
        "ecosystem.json: app app: \"args\": expected a string or an array of strings, got an object"
    );
    let e = err(&f, json!({"script": "app.js", "nodeArgs": ["ok", {"x": 1}]}));
    assert!(
        e.to_string()
            .contains("\"nodeArgs\": expected a string or an array of strings, but item 1 is an object"),
        "{e}"
    );
}

#[test]
fn instances_and_exec_mode() {
    let f = fx();
    let cases = [
        (json!(4), Some(4), ExecMode::Cluster),
        (json!("3"), Some(3), ExecMode::Cluster),
        (json!("max"), Some(0), ExecMode::Cluster),
        (json!(0), Some(0), ExecMode::Cluster),
        (json!(-1), Some(-1), ExecMode::Cluster),
        (json!(1), Some(1), ExecMode::Cluster),
    ];
    for (v, want, mode) in cases {
        let (s, _) = ok(&f, json!({"script": "app.js", "instances": v}));
        assert_eq!((s.instances, s.exec_mode), (want, mode), "{v}");
    }
    for (m, want) in [
        ("fork", ExecMode::Fork),
        ("fork_mode", ExecMode::Fork),
        ("cluster", ExecMode::Cluster),
        ("cluster_mode", ExecMode::Cluster),
    ] {
        let (s, _) = ok(&f, json!({"script": "app.js", "instances": 2, "exec_mode": m}));
        assert_eq!(s.exec_mode, want, "{m}");
    }
    let (s, _) = ok(&f, json!({"script": "app.js", "execMode": "cluster"}));
    assert_eq!(s.exec_mode, ExecMode::Cluster);
    // Non-node scripts never default to cluster, and are forced to fork.
    f.write("s.sh", "");
    let (s, _) = ok(&f, json!({"script": "s.sh", "instances": 2}));
    assert_eq!(s.exec_mode, ExecMode::Fork);
    let (s, w) = ok(&f, json!({"script": "s.sh", "exec_mode": "cluster"}));
    assert_eq!(s.exec_mode, ExecMode::Fork);
    assert!(w[0].contains("cluster mode needs a node, bun or deno script"), "{w:?}");
    // pm2 reads other strings as 0 (= max); we keep that but warn.
    let (s, w) = ok(&f, json!({"script": "app.js", "instances": "lots"}));
    assert_eq!(s.instances, Some(0));
    assert!(w[0].contains("treated as 0"), "{w:?}");
    let e = err(&f, json!({"script": "app.js", "instances": {"n": 1}}));
    assert_eq!(
        e.to_string(),
        "ecosystem.json: app app: \"instances\": expected a number or \"max\", got an object"
    );
    let e = err(&f, json!({"script": "app.js", "instances": 1.5}));
    assert!(e.to_string().contains("expected an integer"), "{e}");
    let e = err(&f, json!({"script": "app.js", "exec_mode": "fast"}));
    assert_eq!(
        e.to_string(),
        "ecosystem.json: app app: \"exec_mode\": expected \"fork\" or \"cluster\", got \"fast\""
    );
    let (s, _) = ok(&f, json!({"script": "app.js", "instances": 2, "execute_command": true}));
    assert_eq!(s.exec_mode, ExecMode::Fork);
}

#[test]
fn merge_logs_default_rule() {
    let f = fx();
    let m = |v: Value| ok(&f, v).0.merge_logs;
    assert!(m(json!({"script": "app.js"})));
    assert!(m(json!({"script": "app.js", "instances": "max"})));
    assert!(m(json!({"script": "app.js", "instances": 0, "exec_mode": "fork"})));
    assert!(!m(json!({"script": "app.js", "instances": 0, "exec_mode": "cluster"})));
    assert!(!m(json!({"script": "app.js", "instances": 2})));
    assert!(!m(json!({"script": "app.js", "exec_mode": "fork", "instances": 3})));
    assert!(!m(json!({"script": "app.js", "exec_mode": "cluster"})));
    assert!(m(json!({"script": "app.js", "instances": 2, "combine_logs": true})));
    assert!(m(json!({"script": "app.js", "instances": 2, "mergeLogs": "true"})));
}

#[test]
fn sizes_durations_and_numbers() {
    let f = fx();
    let (s, _) = ok(
        &f,
        json!({"script": "app.js", "maxMemoryRestart": "10M", "min_uptime": "5s", "kill_timeout": "3000",
               "restart_delay": 250, "exp_backoff_restart_delay": "100", "max_restarts": "3", "listen_timeout": "8s",
               "killRetryTime": 50, "watch_delay": "1s"}),
    );
    assert_eq!(s.max_memory_restart, Some(10 * 1024 * 1024));
    assert_eq!(s.min_uptime, 5000);
    assert_eq!(s.kill_timeout, 3000);
    assert_eq!(s.restart_delay, 250);
    assert_eq!(s.exp_backoff_restart_delay, Some(100));
    assert_eq!(s.max_restarts, 3);
    assert_eq!(s.listen_timeout, 8000);
    assert_eq!(s.kill_retry_time, 50);
    assert_eq!(s.watch_delay, 1000);
    assert_eq!(
        ok(&f, json!({"script": "app.js", "max_memory_restart": 1048576})).0.max_memory_restart,
        Some(1 << 20)
    );
    let e = err(&f, json!({"script": "app.js", "max_memory_restart": "lots"}));
    assert_eq!(
        e.to_string(),
        "ecosystem.json: app app: \"max_memory_restart\": expected bytes or a size like \"200M\"/\"1G\", got a string (\"lots\")"
    );
    let e = err(&f, json!({"script": "app.js", "kill_timeout": true}));
    assert!(e.to_string().contains("\"kill_timeout\": expected a duration in milliseconds"), "{e}");
    let e = err(&f, json!({"script": "app.js", "max_restarts": -1}));
    assert!(
        e.to_string().contains("\"max_restarts\": expected a non-negative integer, got a number (-1)"),
        "{e}"
    );
    let e = err(&f, json!({"script": "app.js", "min_uptime": 50}));
    assert!(e.to_string().contains("at least 100"), "{e}");
    let e = err(&f, json!({"script": "app.js", "autorestart": "yes"}));
    assert_eq!(
        e.to_string(),
        "ecosystem.json: app app: \"autorestart\": expected a boolean, got a string (\"yes\")"
    );
}

#[test]
fn stop_exit_codes_forms() {
    let f = fx();
    let c = |v: Value| ok(&f, json!({"script": "app.js", "stop_exit_codes": v})).0.stop_exit_codes;
    assert_eq!(c(json!(0)), vec![0]);
    assert_eq!(c(json!([0, 2])), vec![0, 2]);
    assert_eq!(c(json!(["0", "3"])), vec![0, 3]);
    assert_eq!(c(json!("0 2,4")), vec![0, 2, 4]);
    let e = err(&f, json!({"script": "app.js", "stopExitCodes": ["x"]}));
    assert!(e.to_string().contains("\"stopExitCodes\": expected an exit code"), "{e}");
}

#[test]
fn cron_restart() {
    let f = fx();
    let c = |v: Value| ok(&f, json!({"script": "app.js", "cron": v})).0.cron_restart;
    assert_eq!(c(json!("0 0 * * *")), Some("0 0 * * *".into()));
    assert_eq!(c(json!("*/10 * * * * *")), Some("*/10 * * * * *".into()));
    assert_eq!(c(json!("@daily")), Some("@daily".into()));
    assert_eq!(c(json!(0)), None);
    assert_eq!(c(json!("0")), None);
    let e = err(&f, json!({"script": "app.js", "cron_restart": "every day"}));
    assert!(e.to_string().contains("\"cron_restart\": Cron pattern error:"), "{e}");
}

#[test]
fn time_and_log_options() {
    let f = fx();
    let (s, _) = ok(&f, json!({"script": "app.js", "time": true}));
    assert_eq!(s.log_date_format.as_deref(), Some("YYYY-MM-DDTHH:mm:ss"));
    let (s, _) = ok(&f, json!({"script": "app.js", "time": true, "log_date_format": "HH:mm"}));
    assert_eq!(s.log_date_format.as_deref(), Some("HH:mm"));
    let (s, _) = ok(
        &f,
        json!({"script": "app.js", "cwd": ".", "output": "logs/o.log", "err": "~/e.log", "pid": "run/a.pid",
               "log": true, "log_type": "json", "disable_logs": true}),
    );
    let root = f.root();
    assert_eq!(s.out_file.as_deref(), Some(root.join("logs/o.log").to_str().unwrap()));
    assert_eq!(s.error_file.as_deref(), Some("/home/u/e.log"));
    assert_eq!(s.pid_file.as_deref(), Some(root.join("run/a.pid").to_str().unwrap()));
    assert_eq!(s.log_file.as_deref(), Some(root.join(".pm2/logs/app.log").to_str().unwrap()));
    assert_eq!(s.log_type.as_deref(), Some("json"));
    assert!(s.disable_logs);
    for (k, v) in [("out_file", "/dev/null"), ("outFile", "NULL"), ("out_log", "/dev/null")] {
        assert_eq!(ok(&f, json!({"script": "app.js", k: v})).0.out_file.as_deref(), Some("/dev/null"));
    }
    for k in ["error", "err_file", "err_log", "errFile", "error_file"] {
        assert_eq!(
            ok(&f, json!({"script": "app.js", k: "/tmp/x.log"})).0.error_file.as_deref(),
            Some("/tmp/x.log"),
            "{k}"
        );
    }
    let (s, _) = ok(&f, json!({"script": "app.js", "log_file": "all.log", "name": "a b"}));
    assert_eq!(s.log_file.as_deref(), Some(root.join("all.log").to_str().unwrap()));
    let (s, _) = ok(&f, json!({"script": "app.js", "log": true, "name": "my app_1"}));
    assert!(s.log_file.unwrap().ends_with("/logs/my-app-1.log"));
    let e = err(&f, json!({"script": "app.js", "out_file": 3}));
    assert_eq!(e.to_string(), "ecosystem.json: app app: \"out_file\": expected a string, got a number (3)");
}

#[test]
fn env_composition() {
    let mut f = fx();
    f.ctx.env_name = Some("production".into());
    let (s, w) = ok(
        &f,
        json!({"script": "app.js", "env": {"A": "1", "N": 5, "B": true, "O": {"x": [1]}, "SHELL_VAR": "app"},
               "env_production": {"A": "prod", "NODE_ENV": "production"}, "env_dev": {"A": "dev"}, "port": 8080}),
    );
    assert!(w.is_empty(), "{w:?}");
    let e = |k: &str| s.env.get(k).cloned().unwrap_or_default();
    assert_eq!(e("A"), "prod");
    assert_eq!(e("N"), "5");
    assert_eq!(e("B"), "true");
    assert_eq!(e("O"), r#"{"x":[1]}"#);
    assert_eq!(e("SHELL_VAR"), "app");
    assert_eq!(e("NODE_ENV"), "production");
    assert_eq!(e("PORT"), "8080");
    assert_eq!(s.extra.get("env_production"), Some(&json!({"A": "prod", "NODE_ENV": "production"})));
    assert_eq!(s.extra.get("env_dev"), Some(&json!({"A": "dev"})));
    assert_eq!(s.extra.get("port"), Some(&json!(8080)));
    // Missing env_<name> is a warning, as in pm2.
    f.ctx.env_name = Some("staging".into());
    let (_, w) = ok(&f, json!({"script": "app.js"}));
    assert_eq!(w, vec!["Environment [staging] is not defined in process file".to_owned()]);
    // filter_env.
    f.ctx.env_name = None;
    let (s, _) = ok(&f, json!({"script": "app.js", "filter_env": true, "env": {"K": "v"}}));
    assert_eq!(s.env.keys().collect::<Vec<_>>(), vec!["K"]);
    let (s, _) = ok(&f, json!({"script": "app.js", "filter_env": ["SHELL"]}));
    assert!(!s.env.contains_key("SHELL_VAR") && s.env.contains_key("PATH"));
    let e = err(&f, json!({"script": "app.js", "env": [1]}));
    assert_eq!(
        e.to_string(),
        "ecosystem.json: app app: \"env\": expected an object of variables, got an array"
    );
    let (s, _) = ok(&f, json!({"script": "app.js", "env": "{\"J\": 1}"}));
    assert_eq!(s.env.get("J").map(String::as_str), Some("1"));
}

#[test]
fn unknown_keys_are_kept_and_warned() {
    let f = fx();
    let (s, w) =
        ok(&f, json!({"script": "app.js", "name": "api", "foo": {"a": 1}, "vizion": false, "uid": "www"}));
    assert_eq!(
        w,
        vec!["ecosystem.json: app api: unknown option \"foo\" (kept, but Corral does not use it)".to_owned()]
    );
    assert_eq!(s.extra.get("foo"), Some(&json!({"a": 1})));
    assert_eq!(s.extra.get("vizion"), Some(&json!(false)));
    assert_eq!(s.extra.get("uid"), Some(&json!("www")));
}

#[test]
fn names_and_namespace() {
    let mut f = fx();
    f.write("app.test.js", "");
    assert_eq!(ok(&f, json!({"script": "app.test.js"})).0.name, "app.test");
    let (s, _) = ok(&f, json!({"script": "app.js", "name": "web", "namespace": "front", "name_prefix": "p"}));
    assert_eq!((s.name.as_str(), s.namespace.as_str()), ("p:web", "front"));
    assert!(!s.extra.contains_key("name_prefix"));
    f.ctx.env_name = Some("prod".into());
    let (s, _) = ok(&f, json!({"script": "app.js", "append_env_to_name": true}));
    assert_eq!(s.name, "app-prod");
    let e = err(&f, json!({"script": "app.js", "name": 12}));
    assert_eq!(e.to_string(), "ecosystem.json: app app.js: \"name\": expected a string, got a number (12)");
}

#[test]
fn watch_options() {
    let f = fx();
    let (s, _) = ok(&f, json!({"script": "app.js", "watch": true}));
    assert!(s.watch && s.watch_paths.is_empty());
    let (s, _) = ok(
        &f,
        json!({"script": "app.js", "watch": ["src", "/abs"], "ignore_watch": "node_modules logs", "watchDelay": 500}),
    );
    assert!(s.watch);
    assert_eq!(s.watch_paths, vec![f.root().join("src").to_string_lossy().into_owned(), "/abs".into()]);
    assert_eq!(s.ignore_watch, vec!["node_modules", "logs"]);
    assert_eq!(s.watch_delay, 500);
    let (s, _) = ok(&f, json!({"script": "app.js", "watch": "lib"}));
    assert_eq!(s.watch_paths, vec![f.root().join("lib").to_string_lossy().into_owned()]);
    assert!(!ok(&f, json!({"script": "app.js", "watch": false})).0.watch);
    let e = err(&f, json!({"script": "app.js", "watch": 1}));
    assert!(e.to_string().contains("\"watch\""), "{e}");
}

#[test]
fn misc_options() {
    let f = fx();
    let (s, _) = ok(
        &f,
        json!({"script": "app.js", "autorestart": false, "autostart": false, "treekill": false, "wait_ready": true,
               "shutdown_with_message": true, "instance_var": "INSTANCE_ID", "increment_var": "PORT",
               "sticky": true, "sticky_port": "9000"}),
    );
    assert!(!s.autorestart && !s.autostart && !s.treekill && s.wait_ready && s.shutdown_with_message);
    assert_eq!(s.instance_var, "INSTANCE_ID");
    assert_eq!(s.increment_var.as_deref(), Some("PORT"));
    assert_eq!((s.sticky, s.sticky_port), (Some(true), Some(9000)));
    let e = err(&f, json!({"script": "app.js", "uid": "www", "gid": [1]}));
    assert_eq!(
        e.to_string(),
        "ecosystem.json: app app: \"gid\": expected a user/group name or id, got an array"
    );
    let e = err(&f, json!({"script": "app.js", "sticky_port": 70000}));
    assert!(e.to_string().contains("port number"), "{e}");
}

#[test]
fn cluster_group_option() {
    let f = fx();
    let group = |v: Value| ok(&f, json!({"script": "app.js", "cluster_group": v})).0.cluster_group;
    assert_eq!(group(json!("chat")), Some("chat".to_string()));
    assert_eq!(group(json!(false)), Some(String::new()));
    assert_eq!(group(json!("false")), Some(String::new()));
    assert_eq!(group(json!(true)), None);
    assert_eq!(ok(&f, json!({"script": "app.js"})).0.cluster_group, None);
    for bad in [json!(""), json!("a b"), json!(3), json!(["x"])] {
        let e = err(&f, json!({"script": "app.js", "cluster_group": bad}));
        assert!(e.to_string().contains("\"cluster_group\""), "{e}");
    }
}

#[test]
fn version_from_nearest_package_json() {
    let f = fx();
    f.write("package.json", r#"{"name": "x", "version": "1.2.3"}"#);
    f.write("lib/deep/w.js", "");
    let (s, _) = ok(&f, json!({"script": "lib/deep/w.js"}));
    assert_eq!(s.version.as_deref(), Some("1.2.3"));
    f.write("lib/package.json", r#"{"name": "inner"}"#);
    let (s, _) = ok(&f, json!({"script": "lib/deep/w.js"}));
    assert_eq!(s.version, None);
}

#[test]
fn effective_instance_counts() {
    assert_eq!(effective_instances(None, 4), 1);
    assert_eq!(effective_instances(Some(0), 4), 4);
    assert_eq!(effective_instances(Some(-1), 4), 3);
    assert_eq!(effective_instances(Some(-9), 4), 1);
    assert_eq!(effective_instances(Some(3), 4), 3);
}

#[test]
fn camel_case_keys() {
    assert_eq!(canonical_key("maxMemoryRestart"), Some("max_memory_restart"));
    assert_eq!(canonical_key("interpreterArgs"), Some("node_args"));
    assert_eq!(canonical_key("execInterpreter"), Some("exec_interpreter"));
    assert_eq!(canonical_key("combineLogs"), Some("merge_logs"));
    assert_eq!(canonical_key("windowsHide"), Some("windowsHide"));
    assert_eq!(canonical_key("cronRestart"), Some("cron_restart"));
    assert_eq!(canonical_key("PORT"), None);
    assert_eq!(canonical_key("foo"), None);
}

// ---------------------------------------------------------------- files

fn load_ok(f: &Fx, rel: &str) -> Loaded {
    match load_ecosystem(Path::new(rel), &f.ctx) {
        Ok(l) => l,
        Err(e) => panic!("{rel}: {e}"),
    }
}

fn names(l: &Loaded) -> Vec<String> {
    l.apps.iter().map(|a| a.as_ref().map(|s| s.name.clone()).unwrap_or_else(|e| format!("ERR {e}"))).collect()
}

#[test]
fn js_module_exports() {
    let f = fx();
    f.write(
        "ecosystem.config.js",
        "const base = { autorestart: true, onExit() {} };\nmodule.exports = { apps: [\n  { ...base, name: 'api', script: 'app.js', env: { PORT: 3000, F: () => 1, U: undefined } },\n  { name: 'w', script: 'app.js', instances: process.env.SHELL_VAR === 'from-shell' ? 2 : 1 },\n] };\nconsole.log('noise from the config');\n",
    );
    let l = load_ok(&f, "ecosystem.config.js");
    assert_eq!(names(&l), vec!["api", "w"]);
    let api = l.apps[0].as_ref().unwrap();
    assert_eq!(api.env.get("PORT").map(String::as_str), Some("3000"));
    assert!(!api.env.contains_key("F") && !api.env.contains_key("U"));
    // pm2's quirk: a variable named after the app.
    assert_eq!(api.env.get("api").map(String::as_str), Some("{}"));
    assert_eq!(l.apps[1].as_ref().unwrap().instances, Some(2));
}

#[test]
fn js_export_default_and_named() {
    let f = fx();
    f.write("a.config.mjs", "export default { apps: [{ name: 'd', script: 'app.js' }] };\n");
    assert_eq!(names(&load_ok(&f, "a.config.mjs")), vec!["d"]);
    f.write("b.config.mjs", "export const apps = [{ name: 'n', script: 'app.js' }];\n");
    assert_eq!(names(&load_ok(&f, "b.config.mjs")), vec!["n"]);
    // A .js config inside a "type": "module" package (pm2 fails there).
    f.write("esm/package.json", r#"{"type": "module"}"#);
    f.write(
        "esm/ecosystem.config.js",
        "const apps = [{ name: 'e', script: 'app.js' }];\nexport default { apps };\n",
    );
    assert_eq!(names(&load_ok(&f, "esm/ecosystem.config.js")), vec!["e"]);
    f.write("c.config.cjs", "module.exports = [{ name: 'arr', script: 'app.js' }];\n");
    assert_eq!(names(&load_ok(&f, "c.config.cjs")), vec!["arr"]);
}

#[test]
fn js_config_that_throws() {
    let f = fx();
    f.write("bad.config.js", "throw new Error('boom from config');\n");
    let e = load_ecosystem(Path::new("bad.config.js"), &f.ctx).unwrap_err();
    let s = e.to_string();
    assert!(s.starts_with("File bad.config.js malformated\n"), "{s}");
    assert!(s.contains("boom from config"), "{s}");
    f.write("syntax.config.js", "module.exports = { apps: [ };\n");
    let e = load_ecosystem(Path::new("syntax.config.js"), &f.ctx).unwrap_err();
    assert!(e.to_string().contains("SyntaxError"), "{e}");
    assert!(matches!(load_ecosystem(Path::new("none.config.js"), &f.ctx), Err(ConfigError::NotFound(_))));
}

#[test]
fn json_with_comments_and_trailing_commas() {
    let f = fx();
    f.write(
        "ecosystem.json",
        "// pm2 evaluates this as JS\n{\n  apps: [\n    { name: 'j1', script: 'app.js', instances: '2', /* c */ },\n    { \"name\": \"j2\", \"script\": \"nope.js\", },\n  ],\n}\n",
    );
    let l = load_ok(&f, "ecosystem.json");
    assert_eq!(names(&l)[0], "j1");
    assert!(names(&l)[1].starts_with("ERR Script not found:"), "{:?}", names(&l));
    // A JS expression that is not JSON5 goes through node, like pm2.
    f.write("expr.json", "{ apps: [{ name: 'x' + 1, script: 'app.js' }] }");
    assert_eq!(names(&load_ok(&f, "expr.json")), vec!["x1"]);
    f.write("broken.json", "{ apps: [ }");
    let e = load_ecosystem(Path::new("broken.json"), &f.ctx).unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
}

#[test]
fn yaml_file() {
    let f = fx();
    f.write(
        "process.yml",
        "apps:\n  - name: y1\n    script: app.js\n    instances: 2\n    env:\n      PORT: 80\n  - script: app.js\n    name: y2\n    exec_mode: fork\n",
    );
    let l = load_ok(&f, "process.yml");
    assert_eq!(names(&l), vec!["y1", "y2"]);
    let y1 = l.apps[0].as_ref().unwrap();
    assert_eq!(y1.exec_mode, ExecMode::Cluster);
    assert_eq!(y1.env.get("PORT").map(String::as_str), Some("80"));
    f.write("bad.yaml", "apps: [\n");
    assert!(matches!(load_ecosystem(Path::new("bad.yaml"), &f.ctx), Err(ConfigError::Malformed { .. })));
}

#[test]
fn top_level_shapes() {
    let f = fx();
    f.write("one.json", r#"{"apps": {"name": "single", "script": "app.js"}}"#);
    assert_eq!(names(&load_ok(&f, "one.json")), vec!["single"]);
    f.write("pm2.json", r#"{"pm2": [{"name": "p", "script": "app.js"}]}"#);
    assert_eq!(names(&load_ok(&f, "pm2.json")), vec!["p"]);
    f.write("bare.json", r#"{"name": "bare", "script": "app.js"}"#);
    assert_eq!(names(&load_ok(&f, "bare.json")), vec!["bare"]);
    f.write("arr.json", r#"[{"name": "a1", "script": "app.js"}, 3]"#);
    let l = load_ok(&f, "arr.json");
    assert_eq!(names(&l)[0], "a1");
    assert!(names(&l)[1].contains("each app must be an object"));
    f.write("badapps.json", r#"{"apps": "x"}"#);
    assert!(load_ecosystem(Path::new("badapps.json"), &f.ctx).is_err());
}

#[test]
fn deploy_env_is_lowest_priority() {
    let mut f = fx();
    f.ctx.env_name = Some("production".into());
    f.write(
        "d.json",
        r#"{"apps": [{"name": "d", "script": "app.js", "env": {"A": "app"}, "env_production": {"B": "prod"}}],
            "deploy": {"production": {"env": {"A": "deploy", "B": "deploy", "C": "deploy"}}}}"#,
    );
    let l = load_ok(&f, "d.json");
    let s = l.apps[0].as_ref().unwrap();
    assert_eq!((s.env["A"].as_str(), s.env["B"].as_str(), s.env["C"].as_str()), ("app", "prod", "deploy"));
}

#[test]
fn module_conf_env_quirk() {
    let f = fx();
    f.write(".pm2/module_conf.json", r#"{"mod": {"k": "v"}}"#);
    f.write("m.json", r#"{"apps": [{"name": "mod", "script": "app.js"}]}"#);
    let l = load_ok(&f, "m.json");
    assert_eq!(l.apps[0].as_ref().unwrap().env["mod"], r#"{"k":"v"}"#);
}

#[test]
fn ecosystem_file_rule() {
    assert!(is_ecosystem_file("ecosystem.config.js"));
    assert!(is_ecosystem_file("a.json5"));
    assert!(!is_ecosystem_file("app.js"));
}

#[test]
fn document_from_stdin() {
    let f = fx();
    let l = load_document(&json!({"apps": [{"name": "in", "script": "app.js"}]}), &f.ctx).unwrap();
    assert_eq!(names(&l), vec!["in"]);
    assert!(load_document(&Value::Null, &f.ctx).is_err());
}

#[test]
fn js_config_with_open_handles_and_requires() {
    let f = fx();
    f.write("shared.js", "module.exports = { script: 'app.js', env: { FROM: 'shared' } };\n");
    f.write(
        "h.config.js",
        "const base = require('./shared');\nsetInterval(() => {}, 1000);\nmodule.exports = { apps: [{ ...base, name: 'h' }] };\n",
    );
    let start = std::time::Instant::now();
    let l = load_ok(&f, "h.config.js");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(l.apps[0].as_ref().unwrap().env["FROM"], "shared");
    f.write("exit.config.js", "process.exit(0);\n");
    let e = load_ecosystem(Path::new("exit.config.js"), &f.ctx).unwrap_err();
    assert!(e.to_string().contains("printed no config"), "{e}");
}

#[test]
fn log_names_and_cron_patterns_follow_pm2() {
    assert_eq!(crate::sanitize_log_name("python3 -m http"), "python3--m-http");
    assert!(crate::check_cron("*/5 * * * *").is_ok());
    assert!(crate::check_cron("*/2 * * * * *").is_ok());
    assert!(crate::check_cron("@hourly").is_ok());
    assert!(crate::check_cron("not a cron").is_err());
    assert!(crate::check_cron("* * *").is_err());
}

#[test]
fn listen_fds_option() {
    let f = fx();
    f.write("s.sh", "");
    let (s, _) = ok(&f, json!({"script": "s.sh", "instances": 2, "listen_fds": ["127.0.0.1:8000", "9000"]}));
    assert_eq!(s.listen_fds, ["127.0.0.1:8000", "0.0.0.0:9000"]);
    let (s, _) = ok(&f, json!({"script": "s.sh", "listen": "[::1]:8000"}));
    assert_eq!(s.listen_fds, ["[::1]:8000"]);
    for bad in [json!("127.0.0.1:0"), json!("localhost:80"), json!(["1.2.3.4:5", "1.2.3.4:5"]), json!({})] {
        let e = err(&f, json!({"script": "s.sh", "listen_fds": bad}));
        assert!(e.to_string().contains("listen_fds"), "{e}");
    }
    // Cluster workers get their listeners from node:cluster.
    let e = err(&f, json!({"script": "app.js", "instances": 2, "listen_fds": "127.0.0.1:8000"}));
    assert!(e.to_string().contains("fork"), "{e}");
}
