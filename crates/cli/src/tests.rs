//! Command flows against an in-process fake daemon speaking the proto: the
//! lines, streams and exit codes pm2 users and scripts depend on.

use crate::output::CAPTURE;
use corral_proto::{
    read_frame, write_frame, Hello, Op, ProcInfo, Reply, Request, Welcome, CORRAL_VERSION, PROTOCOL_VERSION,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Tests share the process environment (`PM2_HOME`) and the capture.
static SERIAL: Mutex<()> = Mutex::new(());

type State = Arc<Mutex<Vec<ProcInfo>>>;

fn proc(id: u32, name: &str, ns: &str, status: &str) -> ProcInfo {
    let mut p = ProcInfo {
        pm_id: id,
        pid: if status == "online" { 1000 + id } else { 0 },
        status: status.parse().unwrap(),
        username: "root".into(),
        ..Default::default()
    };
    p.app.name = name.into();
    p.app.namespace = ns.into();
    p.app.script = format!("/srv/{name}.js");
    p
}

fn answer(st: &State, home: &Path, req: Request) -> Reply {
    let mut procs = st.lock().unwrap_or_else(|e| e.into_inner());
    match req {
        Request::Ping => Reply::Pong,
        Request::List => Reply::Procs { procs: procs.clone() },
        Request::Op { op, id, .. } => {
            let Some(i) = procs.iter().position(|p| p.pm_id == id) else {
                return Reply::Error { message: format!("Process {id} not found") };
            };
            match op {
                Op::Stop => {
                    procs[i].status = corral_proto::Status::Stopped;
                    procs[i].pid = 0;
                }
                Op::Restart | Op::Reload => {
                    if procs[i].status == "online" {
                        procs[i].restart_time += 1;
                    }
                    procs[i].status = corral_proto::Status::Online;
                    procs[i].pid = 2000 + id;
                }
                Op::Delete => {
                    procs.remove(i);
                }
                Op::Reset => procs[i].restart_time = 0,
            }
            Reply::Procs { procs: procs.clone() }
        }
        Request::Start { app } => {
            let next = procs.iter().map(|p| p.pm_id + 1).max().unwrap_or(0);
            let n = app.instances.unwrap_or(1).max(1) as u32;
            let new: Vec<ProcInfo> = (0..n)
                .map(|k| {
                    let mut p = proc(next + k, &app.name, &app.namespace, "online");
                    p.app = app.clone();
                    p
                })
                .collect();
            procs.extend(new.clone());
            Reply::Procs { procs: new }
        }
        Request::Scale { name, count } => {
            let mine: Vec<u32> = procs.iter().filter(|p| p.app.name == name).map(|p| p.pm_id).collect();
            let drop = mine.len().saturating_sub(count as usize);
            procs.retain(|p| !mine[..drop].contains(&p.pm_id));
            Reply::Ok
        }
        Request::Save { .. } => {
            Reply::Saved { path: home.join("dump.pm2").display().to_string(), count: procs.len() }
        }
        Request::Resurrect => Reply::Resurrected { restored: vec![], procs: vec![] },
        _ => Reply::Ok,
    }
}

/// Serves the socket in `home` from a background thread.
fn fake_daemon(home: &Path, initial: Vec<ProcInfo>) -> State {
    let st: State = Arc::new(Mutex::new(initial));
    let st2 = st.clone();
    let home = home.to_path_buf();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let l = tokio::net::UnixListener::bind(home.join("corral.sock")).unwrap();
            ready_tx.send(()).unwrap();
            loop {
                let Ok((mut s, _)) = l.accept().await else { return };
                let st = st2.clone();
                let home = home.clone();
                tokio::spawn(async move {
                    let Ok(h) = read_frame::<_, Hello>(&mut s).await else { return };
                    assert_eq!(h.protocol, PROTOCOL_VERSION);
                    let w = Welcome {
                        protocol: PROTOCOL_VERSION,
                        daemon_version: CORRAL_VERSION.into(),
                        pid: 1,
                        pm2_home: home.display().to_string(),
                        settings: Default::default(),
                        capabilities: Vec::new(),
                    };
                    if write_frame(&mut s, &w).await.is_err() {
                        return;
                    }
                    while let Ok(req) = read_frame::<_, Request>(&mut s).await {
                        let kill = matches!(req, Request::Kill);
                        let r = answer(&st, &home, req);
                        if write_frame(&mut s, &r).await.is_err() || kill {
                            return;
                        }
                    }
                });
            }
        });
    });
    ready_rx.recv().unwrap();
    st
}

struct Run {
    code: i32,
    out: String,
    err: String,
}

fn run(home: &Path, args: &[&str]) -> Run {
    std::env::set_var("PM2_HOME", home);
    std::env::set_var("NO_COLOR", "1");
    *CAPTURE.lock().unwrap_or_else(|e| e.into_inner()) = Some((String::new(), String::new()));
    let code = crate::run_pm2(args.iter().map(|s| s.to_string()).collect());
    let (out, err) = CAPTURE.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
    Run { code, out, err }
}

fn setup(procs: Vec<ProcInfo>) -> (std::sync::MutexGuard<'static, ()>, tempfile::TempDir, PathBuf, State) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_path_buf();
    let st = fake_daemon(&home, procs);
    (guard, dir, home, st)
}

fn sample() -> Vec<ProcInfo> {
    vec![
        proc(0, "api", "default", "online"),
        proc(1, "web", "front", "online"),
        proc(2, "web", "front", "online"),
    ]
}

#[test]
fn stop_by_name_prints_actions_and_table() {
    let (_g, _d, home, st) = setup(sample());
    let r = run(&home, &["stop", "web"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.starts_with(
        "[PM2] Applying action stopProcessId on app [web](ids: [ 1, 2 ])\n[PM2] [web](1) ✓\n[PM2] [web](2) ✓\n┌"
    ), "{}", r.out);
    assert!(r.out.contains("│ stopped   │"));
    assert!(st.lock().unwrap().iter().filter(|p| p.app.name == "web").all(|p| p.status == "stopped"));
}

#[test]
fn unknown_targets_exit_1_with_pm2_messages() {
    let (_g, _d, home, _st) = setup(sample());
    let r = run(&home, &["stop", "nope"]);
    assert_eq!((r.code, r.out.as_str()), (1, ""));
    assert_eq!(r.err, "[PM2][ERROR] Process or Namespace nope not found\n");
    let r = run(&home, &["restart", "99"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.out,
        "Use --update-env to update environment variables\n[PM2] Applying action restartProcessId on app [99](ids: [ '99' ])\n"
    );
    assert_eq!(r.err, "[PM2][ERROR] Process 99 not found\n");
    let r = run(&home, &["delete", "/^zz/"]);
    assert_eq!((r.code, r.err.as_str()), (1, "[PM2][WARN] No process found\n"));
}

#[test]
fn numeric_id_is_shown_as_typed() {
    let (_g, _d, home, _st) = setup(sample());
    let r = run(&home, &["stop", "1"]);
    assert_eq!(r.code, 0);
    assert!(
        r.out.starts_with("[PM2] Applying action stopProcessId on app [1](ids: [ '1' ])\n[PM2] [web](1) ✓\n"),
        "{}",
        r.out
    );
}

#[test]
fn reload_prints_no_table_and_uses_lock() {
    let (_g, _d, home, _st) = setup(sample());
    let r = run(&home, &["reload", "front"]);
    assert_eq!(r.code, 0);
    assert!(!r.out.contains('┌'), "{}", r.out);
    assert!(r.out.contains("[PM2] [web](2) ✓"));
    std::fs::write(home.join("reload.lock"), crate::timefmt::now_ms().to_string()).unwrap();
    let r = run(&home, &["reload", "api"]);
    assert_eq!(r.code, 1);
    assert!(r.err.starts_with("[PM2][ERROR] Reload already in progress, please try again in "), "{}", r.err);
    assert_eq!(run(&home, &["reload", "api", "--force"]).code, 0);
}

#[test]
fn jlist_is_raw_and_ascending() {
    let (_g, _d, home, _st) =
        setup(vec![proc(2, "b", "default", "online"), proc(0, "a", "default", "online")]);
    let r = run(&home, &["jlist"]);
    assert_eq!(r.code, 0);
    assert!(r.out.starts_with('[') && r.out.ends_with(']'), "{}", r.out);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v.as_array().map(|a| a.len()), Some(2));
    assert!(r.out.find("\"a\"") < r.out.find("\"b\""));
}

#[test]
fn info_commands() {
    let (_g, _d, home, _st) = setup(sample());
    assert_eq!(run(&home, &["id", "web"]).out, "[ 1, 2 ]\n");
    assert_eq!(run(&home, &["id", "nope"]).out, "[]\n");
    assert_eq!(run(&home, &["pid", "web"]).out, "1001\n1002\n");
    let r = run(&home, &["pid", "nope"]);
    assert_eq!((r.code, r.out.as_str()), (0, "\n"));
    assert_eq!(run(&home, &["ping"]).out, "{ msg: 'pong' }\n");
    let r = run(&home, &["describe", "nope"]);
    assert_eq!((r.code, r.err.as_str()), (1, "[PM2][WARN] nope doesn't exist\n"));
    let r = run(&home, &["describe", "web"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.out.matches(" Describing process with id ").count(), 2);
    let r = run(&home, &["env", "99"]);
    assert_eq!((r.code, r.err.as_str()), (1, "[PM2][ERROR] Modules with id 99 not found\n"));
}

#[test]
fn scale_and_save() {
    let (_g, _d, home, _st) = setup(sample());
    let r = run(&home, &["scale", "web", "2"]);
    assert_eq!((r.code, r.err.as_str()), (1, "[PM2][ERROR] Nothing to do\n"));
    let r = run(&home, &["scale", "nope", "2"]);
    assert_eq!((r.code, r.err.as_str()), (1, "[PM2][ERROR] Application nope not found\n"));
    let r = run(&home, &["scale", "web", "1"]);
    assert_eq!(r.code, 0);
    assert!(
        r.out.starts_with("[PM2] Applying action deleteProcessId on app [1](ids: [ 1 ])\n[PM2] [web](1) ✓\n"),
        "{}",
        r.out
    );
    let r = run(&home, &["save"]);
    assert_eq!(
        r.out,
        format!(
            "[PM2] Saving current process list...\n[PM2] Successfully saved in {}\n",
            home.join("dump.pm2").display()
        )
    );
}

#[test]
fn save_with_nothing_is_a_warning_and_exit_0() {
    let (_g, _d, home, _st) = setup(vec![]);
    let r = run(&home, &["save"]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.out,
        "[PM2] Saving current process list...\n[PM2][WARN] PM2 is not managing any process, skipping save...\n[PM2][WARN] To force saving use: pm2 save --force\n"
    );
    let r = run(&home, &["stop", "all"]);
    assert_eq!((r.code, r.err.as_str()), (1, "[PM2][WARN] No process found\n"));
}

#[test]
fn kill_reports_every_process() {
    let (_g, _d, home, _st) = setup(sample());
    let r = run(&home, &["kill"]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.out,
        "[PM2] Applying action deleteProcessId on app [all](ids: [ 0, 1, 2 ])\n[PM2] [api](0) ✓\n[PM2] [web](1) ✓\n[PM2] [web](2) ✓\n[PM2] [v] All Applications Stopped\n[PM2] [v] PM2 Daemon Stopped\n"
    );
}

#[test]
fn usage_errors_need_no_daemon() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let r = run(home, &[]);
    assert_eq!(r.code, 1);
    assert!(r.out.contains("Usage: pm2"));
    let r = run(home, &["foobar"]);
    assert_eq!(r.code, 1);
    assert!(r.err.starts_with("[PM2][ERROR] Command not found\n"));
    let r = run(home, &["stop", "all", "--foo"]);
    assert_eq!((r.code, r.err.as_str()), (1, "\n  error: unknown option `--foo'\n\n"));
    let r = run(home, &["stop"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("error: missing required argument `id|name|namespace|all|json|stdin'"));
    let r = run(home, &["-v"]);
    assert_eq!((r.code, r.out.as_str()), (0, "6.0.14\n"));
    for flag in ["--version", "-V"] {
        assert_eq!(run(home, &[flag]).out, "6.0.14\n");
    }
    let r = run(home, &["--version", "--verbose"]);
    assert_eq!(r.out, format!("6.0.14\nCorral {CORRAL_VERSION} (pm2 6.0.14 compatible)\n"));
    // PM2 Plus and module publishing: a clear refusal, no daemon.
    let r = run(home, &["link", "secret", "public"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("Command link is not supported by Corral: PM2 Plus"), "{}", r.err);
    let r = run(home, &["module:generate", "x"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("modules are installed from the npm registry"), "{}", r.err);
    let r = run(home, &["install"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("missing required argument `module|git:// url'"), "{}", r.err);
    let r = run(home, &["trigger", "app"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("missing required argument `action_name'"), "{}", r.err);
    assert!(!home.join("corral.sock").exists());
}

#[test]
fn start_by_name_restarts() {
    let (_g, _d, home, st) = setup(sample());
    let r = run(&home, &["start", "api"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.starts_with(
        "[PM2] Applying action restartProcessId on app [api](ids: [ 0 ])\n[PM2] [api](0) ✓\n[PM2] Process successfully started\n"
    ));
    assert_eq!(st.lock().unwrap()[0].restart_time, 1);
}

#[test]
fn start_of_a_number_or_all_is_a_restart() {
    let (_g, _d, home, _st) = setup(sample());
    let r = run(&home, &["start", "99"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.out, "[PM2] Applying action restartProcessId on app [99](ids: [ '99' ])\n");
    assert_eq!(r.err, "[PM2][ERROR] Process 99 not found\n");
    let r = run(&home, &["start", "front"]);
    assert_eq!(r.code, 0);
    assert!(r.out.starts_with("[PM2] Applying action restartProcessId on app [front](ids: [ 1, 2 ])\n"));
    let (_g2, _d2, home2, _st2) = {
        drop(_g);
        setup(vec![])
    };
    let r = run(&home2, &["start", "all"]);
    assert_eq!((r.code, r.err.as_str()), (1, "[PM2][WARN] No process found\n"));
}

#[test]
fn daemon_setting_mismatch_is_reported() {
    let daemon: std::collections::BTreeMap<String, String> =
        [("PM2_PORT".to_string(), "8080".to_string())].into();
    let same = |k: &str| (k == "PM2_PORT").then(|| "8080".to_string());
    assert!(crate::client::settings_mismatch(&daemon, same).is_empty());
    let other = |k: &str| (k == "PM2_PORT").then(|| "9090".to_string());
    let w = crate::client::settings_mismatch(&daemon, other);
    assert_eq!(w.len(), 1);
    assert!(
        w[0].starts_with("PM2_PORT=9090 is ignored: the running daemon was started with PM2_PORT=8080"),
        "{w:?}"
    );
    let unset_there = |k: &str| (k == "PM2_STICKY_HOST").then(|| "0.0.0.0".to_string());
    assert!(crate::client::settings_mismatch(&daemon, unset_there)[0].contains("PM2_STICKY_HOST unset"));
    // Nothing given to this call: nothing to say.
    assert!(crate::client::settings_mismatch(&daemon, |_| None).is_empty());
}
