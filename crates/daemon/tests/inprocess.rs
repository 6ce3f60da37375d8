//! The daemon run in-process (pueue's pattern): a temporary PM2_HOME, a
//! client speaking the proto frames, real child processes.

use corral_proto::{read_frame, write_frame, AppSpec, Hello, Op, Reply, Request, Welcome, PROTOCOL_VERSION};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

struct Client {
    s: UnixStream,
}

impl Client {
    async fn connect(home: &Path) -> Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match UnixStream::connect(home.join("corral.sock")).await {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => panic!("daemon never listened: {e}"),
            }
        };
        let mut c = Client { s };
        write_frame(&mut c.s, &Hello { protocol: PROTOCOL_VERSION, client_version: "test".into() })
            .await
            .unwrap();
        let _w: Welcome = read_frame(&mut c.s).await.unwrap();
        c
    }

    async fn req(&mut self, r: Request) -> Reply {
        write_frame(&mut self.s, &r).await.unwrap();
        read_frame(&mut self.s).await.unwrap()
    }

    async fn list(&mut self) -> Vec<corral_proto::ProcInfo> {
        match self.req(Request::List).await {
            Reply::Procs { procs } => procs,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn sh_app(name: &str, script: &str) -> AppSpec {
    AppSpec {
        name: name.into(),
        script: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        interpreter: "none".into(),
        cwd: "/".into(),
        ..Default::default()
    }
}

async fn wait_until<F>(c: &mut Client, what: &str, f: F) -> Vec<corral_proto::ProcInfo>
where
    F: Fn(&[corral_proto::ProcInfo]) -> bool,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let l = c.list().await;
        if f(&l) {
            return l;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {l:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn start_crash_restart_stop_delete_kill() {
    let home = tempfile::tempdir().unwrap();
    let opts = corral_daemon::DaemonOptions { pm2_home: home.path().to_path_buf() };
    let daemon = tokio::spawn(corral_daemon::run_async(opts));
    let mut c = Client::connect(home.path()).await;
    assert!(matches!(c.req(Request::Ping).await, Reply::Pong));

    let r = c.req(Request::Start { app: sh_app("sleeper", "echo hello; exec sleep 30") }).await;
    let Reply::Procs { procs } = r else { panic!("{r:?}") };
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0].status, "online");
    let pid = procs[0].pid;
    assert!(pid > 0);

    // A crash is restarted with a new pid.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let l =
        wait_until(&mut c, "restart", |l| l[0].restart_time == 1 && l[0].pid != 0 && l[0].pid != pid).await;
    assert_eq!(l[0].status, "online");

    let r = c.req(Request::Op { op: Op::Stop, id: 0, update: None }).await;
    let Reply::Procs { procs } = r else { panic!("{r:?}") };
    assert_eq!(procs[0].status, "stopped");
    assert_eq!(procs[0].pid, 0);

    let out = std::fs::read_to_string(home.path().join("logs/sleeper-out.log")).unwrap();
    assert!(out.contains("hello"));

    let r = c.req(Request::Op { op: Op::Delete, id: 0, update: None }).await;
    assert!(matches!(r, Reply::Procs { .. }));
    assert!(c.list().await.is_empty());

    let r = c.req(Request::Op { op: Op::Stop, id: 7, update: None }).await;
    assert!(matches!(r, Reply::Error { .. }));

    assert!(matches!(c.req(Request::Kill).await, Reply::Ok));
    tokio::time::timeout(Duration::from_secs(10), daemon).await.unwrap().unwrap().unwrap();
    assert!(!home.path().join("pm2.pid").exists());
}

#[tokio::test(flavor = "current_thread")]
async fn crash_loop_goes_errored() {
    let home = tempfile::tempdir().unwrap();
    let opts = corral_daemon::DaemonOptions { pm2_home: home.path().to_path_buf() };
    let daemon = tokio::spawn(corral_daemon::run_async(opts));
    let mut c = Client::connect(home.path()).await;
    let mut app = sh_app("crasher", "exit 3");
    app.max_restarts = 3;
    c.req(Request::Start { app }).await;
    let l = wait_until(&mut c, "errored", |l| l[0].status == "errored").await;
    assert_eq!(l[0].pid, 0);
    assert_eq!(l[0].exit_code, Some(3));
    assert!(matches!(c.req(Request::Kill).await, Reply::Ok));
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;
}

/// The restart-delay and backoff timers run on tokio's clock: with paused
/// time a 60 s `restart_delay` passes in virtual time, and the process waits
/// in `waiting restart` until then.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn restart_delay_runs_on_tokio_time() {
    let home = tempfile::tempdir().unwrap();
    let opts = corral_daemon::DaemonOptions { pm2_home: home.path().to_path_buf() };
    let daemon = tokio::spawn(corral_daemon::run_async(opts));
    let mut c = Client::connect(home.path()).await;
    let mut app = sh_app("delayed", "sleep 0.2; exit 1");
    app.restart_delay = 60_000;
    let real = std::time::Instant::now();
    let virt = tokio::time::Instant::now();
    c.req(Request::Start { app }).await;
    // With paused time the clock jumps to the next timer whenever the
    // runtime is idle, which it can be while a `list` is in flight: the
    // whole 60 s may pass between two polls, so `waiting restart` is checked
    // when it is seen, not required to be seen.
    let l = wait_until(&mut c, "waiting restart or the restart", |l| {
        l[0].status == "waiting restart" || l[0].restart_time >= 1
    })
    .await;
    if l[0].status == "waiting restart" {
        // Counted when the restart runs, not while it waits (pm2's reset.sh
        // checks `restart_time: 0` during a --restart-delay).
        assert_eq!(l[0].restart_time, 0);
        assert_eq!(l[0].pid, 0);
    }
    let l = wait_until(&mut c, "the delayed restart", |l| l[0].pid != 0).await;
    assert_eq!(l[0].restart_time, 1);
    assert!(virt.elapsed() >= Duration::from_secs(60), "restarted after {:?} of tokio time", virt.elapsed());
    assert!(real.elapsed() < Duration::from_secs(30), "paused time did not advance the timer");
    assert!(matches!(c.req(Request::Kill).await, Reply::Ok));
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;
}

/// A stop that arrives while a cluster reload waits for its replacement to
/// listen pre-empts the reload instead of queueing behind listen_timeout
/// (10 minutes here): the replacement is retired, the reload answers with an
/// error, the stop stops the worker that was serving.
#[tokio::test(flavor = "current_thread")]
async fn a_stop_preempts_a_reload_waiting_for_its_replacement() {
    let home = tempfile::tempdir().unwrap();
    let opts = corral_daemon::DaemonOptions { pm2_home: home.path().to_path_buf() };
    let daemon = tokio::spawn(corral_daemon::run_async(opts));
    let mut c = Client::connect(home.path()).await;
    let mut c2 = Client::connect(home.path()).await;
    let mut app = sh_app("web", "exec sleep 300");
    app.exec_mode = corral_proto::ExecMode::Cluster;
    // No sticky balancer on the machine's PM2_PORT for this test.
    app.sticky = Some(false);
    // `sh` never says `online`: listen_timeout marks it online.
    app.listen_timeout = 300;
    app.kill_timeout = 1000;
    let r = c.req(Request::Start { app: app.clone() }).await;
    assert!(matches!(r, Reply::Procs { .. }), "{r:?}");
    let old = wait_until(&mut c, "online", |l| l[0].status == "online").await[0].pid;

    let mut slow = app.clone();
    slow.listen_timeout = 600_000;
    let reload = tokio::spawn(async move {
        c2.req(Request::Op { op: Op::Reload, id: 0, update: Some(Box::new(slow)) }).await
    });
    let new = wait_until(&mut c, "the replacement", |l| l[0].pid != 0 && l[0].pid != old).await[0].pid;

    let t0 = Instant::now();
    let r = c.req(Request::Op { op: Op::Stop, id: 0, update: None }).await;
    let Reply::Procs { procs } = r else { panic!("{r:?}") };
    assert!(t0.elapsed() < Duration::from_secs(30), "the stop waited {:?}", t0.elapsed());
    assert_eq!(procs[0].status, "stopped");
    let r = tokio::time::timeout(Duration::from_secs(30), reload).await.unwrap().unwrap();
    let Reply::Error { message } = r else { panic!("{r:?}") };
    assert!(message.contains("abandoned"), "{message}");
    let deadline = Instant::now() + Duration::from_secs(30);
    // SAFETY: kill with signal 0 only checks the pid.
    while [old, new].iter().any(|&p| unsafe { libc::kill(p as i32, 0) } == 0) {
        assert!(Instant::now() < deadline, "old {old} or replacement {new} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(c.req(Request::Kill).await, Reply::Ok));
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;
}

/// `reset` is a control of the process's actor like any other: the counters
/// it zeroes are the ones `list` shows.
#[tokio::test(flavor = "current_thread")]
async fn reset_zeroes_the_restart_counters() {
    let home = tempfile::tempdir().unwrap();
    let opts = corral_daemon::DaemonOptions { pm2_home: home.path().to_path_buf() };
    let daemon = tokio::spawn(corral_daemon::run_async(opts));
    let mut c = Client::connect(home.path()).await;
    c.req(Request::Start { app: sh_app("counted", "exec sleep 30") }).await;
    let pid = wait_until(&mut c, "online", |l| l[0].status == "online").await[0].pid;
    // SAFETY: plain kill of our child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until(&mut c, "a restart", |l| l[0].restart_time == 1 && l[0].status == "online").await;
    let r = c.req(Request::Op { op: Op::Reset, id: 0, update: None }).await;
    let Reply::Procs { procs } = r else { panic!("{r:?}") };
    assert_eq!(procs[0].restart_time, 0);
    assert_eq!(c.list().await[0].restart_time, 0);
    assert!(matches!(c.req(Request::Kill).await, Reply::Ok));
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;
}
