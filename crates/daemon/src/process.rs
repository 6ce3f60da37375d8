//! One task per process: spawn, watch, stop, restart. Controls arrive on a
//! queue and are handled one at a time, so a `restart` that arrives during a
//! `stop` waits for the stop to finish instead of racing it.
//!
//! Architecture invariant: only this task changes a process's status, pid
//! and counters (the RPC server only reads them, except `reset`).

use crate::logs::{self, LogFiles, Source};
use crate::paths;
use crate::policy::{self, Decision};
use crate::proctree;
use crate::state::{Entry, SharedRef};
use crate::timefmt::now_ms;
use crate::{cluster, dlog, env};
use corral_proto::{AppSpec, Event, ExecMode, ProcInfo, Stream};
use node_ipc::{Channel, ChildChannel, Limits, Mode, Value};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub type Done<T> = oneshot::Sender<T>;

/// Controls queued to a process task.
#[derive(Debug)]
pub enum Ctl {
    /// Launch if not running (`pm2 start <id>` on a stopped process, or the
    /// first launch). Answers once the process is online (or failed).
    Start {
        done: Option<Done<Result<(), String>>>,
    },
    Stop {
        done: Done<()>,
    },
    /// `update` replaces the stored spec first (`--update-env`, ecosystem).
    Restart {
        update: Option<Box<AppSpec>>,
        done: Done<Result<(), String>>,
    },
    Reload {
        update: Option<Box<AppSpec>>,
        done: Done<Result<(), String>>,
    },
    Delete {
        done: Done<()>,
    },
    Signal {
        sig: i32,
        done: Done<Result<(), String>>,
    },
}

/// Something a running child told us over its IPC channel.
#[derive(Debug)]
pub enum ChildEvent {
    /// `process.send('ready')`.
    Ready,
    /// A cluster worker's `listening`.
    Listening,
    /// A cluster worker's `online`.
    Online,
    /// The worker's first Socket.IO adapter or sticky message: it can take
    /// sticky traffic (counts as "listening" for a reload).
    StickyReady,
    /// `{node_version}` sent by the app.
    NodeVersion(String),
}

struct Running {
    child: tokio::process::Child,
    pid: i32,
    /// Worker id in the cluster registry, when the child has an IPC channel.
    wid: Option<u32>,
    events: mpsc::UnboundedReceiver<ChildEvent>,
    /// Held so the channel stays open while the child lives.
    _events_tx: mpsc::UnboundedSender<ChildEvent>,
}

enum Sig {
    Exit(Option<std::process::ExitStatus>),
    Event(ChildEvent),
}

async fn next_signal(run: &mut Option<Running>) -> Sig {
    match run {
        None => std::future::pending().await,
        Some(r) => tokio::select! {
            st = r.child.wait() => Sig::Exit(st.ok()),
            Some(ev) = r.events.recv() => Sig::Event(ev),
        },
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Registers a new process in the table and starts its task. The caller
/// sends `Ctl::Start` when it wants it launched.
pub fn register(shared: &SharedRef, app: AppSpec, instance: Option<u32>) -> u32 {
    let (tx, rx) = mpsc::unbounded_channel();
    let id;
    {
        let mut t = shared.table();
        id = t.alloc_id();
        let instance = instance.unwrap_or_else(|| t.free_instance(&app.name));
        let info = new_info(shared, id, instance, app);
        t.procs.insert(
            id,
            Entry {
                info,
                counters: Default::default(),
                ctl: tx,
                cpu_sample: None,
                files: None,
                stdin: None,
                rev: 0,
                jlist_cache: None,
            },
        );
    }
    tokio::spawn(run(shared.clone(), id, rx));
    id
}

fn new_info(shared: &SharedRef, id: u32, instance: u32, app: AppSpec) -> ProcInfo {
    let mut p = ProcInfo {
        pm_id: id,
        instance,
        status: "stopped".into(),
        unique_id: env::uuid_v4(),
        username: shared.username.clone(),
        app,
        ..Default::default()
    };
    fill_paths(shared, &mut p);
    p
}

/// Log and pid paths (spec §2.2, §3.10): `-<pm_id>` suffix unless logs are
/// merged; pid files always get it.
pub fn fill_paths(shared: &SharedRef, p: &mut ProcInfo) {
    let app = &p.app;
    let base = paths::sanitize(&app.name);
    let logs = shared.home.logs();
    let pick = |custom: &Option<String>, default: String| -> String {
        let path = custom.clone().unwrap_or(default);
        if app.merge_logs || path == "/dev/null" {
            path
        } else {
            paths::with_id_suffix(&path, p.pm_id)
        }
    };
    let out = pick(&app.out_file, logs.join(format!("{base}-out.log")).to_string_lossy().into_owned());
    let err = pick(&app.error_file, logs.join(format!("{base}-error.log")).to_string_lossy().into_owned());
    let combined = app.log_file.as_ref().map(|f| pick(&Some(f.clone()), String::new()));
    let pid = match &app.pid_file {
        Some(f) => paths::with_id_suffix(f, p.pm_id),
        None => shared.home.pids().join(format!("{base}-{}.pid", p.pm_id)).to_string_lossy().into_owned(),
    };
    p.pm_out_log_path = out;
    p.pm_err_log_path = err;
    p.pm_log_path = combined;
    p.pm_pid_path = pid;
}

struct Task {
    shared: SharedRef,
    id: u32,
    run: Option<Running>,
    restart_at: Option<Instant>,
    /// Answered when the process becomes online (wait_ready).
    pending_online: Vec<Done<Result<(), String>>>,
    ready_deadline: Option<Instant>,
    /// File watcher (`watch`), started at the first launch, dropped with the
    /// task (delete).
    watcher: Option<crate::watcher::WatchHandle>,
    /// `cron_restart` schedule, registered at the first launch.
    cron: Option<crate::cron::CronHandle>,
}

pub async fn run(shared: SharedRef, id: u32, mut rx: mpsc::UnboundedReceiver<Ctl>) {
    let mut t = Task {
        shared,
        id,
        run: None,
        restart_at: None,
        pending_online: Vec::new(),
        ready_deadline: None,
        watcher: None,
        cron: None,
    };
    loop {
        tokio::select! {
            ctl = rx.recv() => {
                let Some(ctl) = ctl else { break };
                if t.handle(ctl).await { break; }
            }
            sig = next_signal(&mut t.run) => match sig {
                Sig::Exit(st) => t.on_exit(st),
                Sig::Event(ev) => t.on_event(ev),
            },
                        _ = sleep_until_opt(t.restart_at) => {
                t.restart_at = None;
                t.shared.with_entry(t.id, |e| e.info.restart_time += 1);
                t.launch();
            }
            _ = sleep_until_opt(t.ready_deadline) => {
                // pm2 marks the app online anyway when listen_timeout passes.
                t.ready_deadline = None;
                t.set_online();
            }
        }
    }
}

impl Task {
    fn info(&self) -> Option<ProcInfo> {
        self.shared.table().procs.get(&self.id).map(|e| e.info.clone())
    }

    fn label(&self) -> String {
        let name = self.info().map(|i| i.app.name).unwrap_or_default();
        format!("{name}:{}", self.id)
    }

    fn set_status(&self, status: &str) {
        self.shared.with_entry(self.id, |e| e.info.status = status.to_string());
    }

    fn publish(&self, event: &str) {
        let name = self.info().map(|i| i.app.name).unwrap_or_default();
        self.shared.publish(Event::Process { pm_id: self.id, name, event: event.into(), at: now_ms() });
    }

    /// Returns true when the task must end (process deleted).
    async fn handle(&mut self, ctl: Ctl) -> bool {
        match ctl {
            Ctl::Start { done } => {
                self.restart_at = None;
                if self.run.is_some() {
                    if let Some(d) = done {
                        let _ = d.send(Ok(()));
                    }
                    return false;
                }
                self.shared.with_entry(self.id, |e| {
                    e.counters.created_at = Some(now_ms());
                    e.info.created_at = now_ms();
                });
                if let Some(d) = done {
                    self.pending_online.push(d);
                }
                self.launch();
            }
            Ctl::Stop { done } => {
                self.stop().await;
                let _ = done.send(());
            }
            Ctl::Reload { update, done }
                if self.run.is_some()
                    && self
                        .info()
                        .is_some_and(|i| i.status == "online" && i.app.exec_mode == ExecMode::Cluster) =>
            {
                let r = self.reload_cluster(update).await;
                let _ = done.send(r);
            }
            Ctl::Restart { update, done } | Ctl::Reload { update, done } => {
                self.restart_at = None;
                let was_running =
                    self.run.is_some() || self.info().is_some_and(|i| i.status == "waiting restart");
                if self.run.is_some() {
                    self.stop_with(true).await;
                }
                self.shared.with_entry(self.id, |e| {
                    manual_restart(e, update);
                    if was_running {
                        e.info.restart_time += 1;
                    }
                });
                if let Some(mut info) = self.info() {
                    fill_paths(&self.shared, &mut info);
                    self.shared.with_entry(self.id, |e| {
                        e.info.pm_out_log_path = info.pm_out_log_path;
                        e.info.pm_err_log_path = info.pm_err_log_path;
                        e.info.pm_log_path = info.pm_log_path;
                        e.info.pm_pid_path = info.pm_pid_path;
                    });
                }
                self.pending_online.push(done);
                self.launch();
                self.publish("restart");
            }
            Ctl::Delete { done } => {
                self.restart_at = None;
                self.stop().await;
                if let Some(i) = self.info() {
                    let _ = std::fs::remove_file(&i.pm_pid_path);
                }
                self.publish("delete");
                self.shared.table().remove(self.id);
                let _ = done.send(());
                return true;
            }
            Ctl::Signal { sig, done } => {
                let r = match &self.run {
                    Some(r) if proctree::signal(r.pid, sig) => Ok(()),
                    Some(r) => Err(format!("could not signal pid {}", r.pid)),
                    None => Err(format!("Process {} is not running", self.id)),
                };
                let _ = done.send(r);
            }
        }
        false
    }

    fn launch(&mut self) {
        let Some(info) = self.info() else { return };
        let app = info.app.clone();
        if app.watch && self.watcher.is_none() {
            self.watcher = crate::watcher::start(&self.shared, self.id, &app);
        } else if !app.watch {
            self.watcher = None;
        }
        match &app.cron_restart {
            Some(p) if self.cron.is_none() => {
                self.cron = crate::cron::start(&self.shared, self.id, &app.name, p)
            }
            None => self.cron = None,
            _ => {}
        }
        let label = format!("{}:{}", app.name, self.id);
        dlog::log(&format!("App [{label}] starting in -{} mode-", short_mode(app.exec_mode)));

        // `uid`/`gid` are resolved at every launch: the user database may
        // have changed since the app was started.
        let creds = match crate::privileges::for_app(&app) {
            Ok(c) => c,
            Err(e) => {
                self.fail_launch(&format!("App [{label}]: {e}"));
                return;
            }
        };
        let mut env = env::build(&self.shared, &info);
        if let Some(c) = &creds {
            c.apply_env(&mut env);
        }
        let files = match LogFiles::open(
            info.pm_out_log_path.clone(),
            info.pm_err_log_path.clone(),
            info.pm_log_path.clone(),
        ) {
            Ok(mut f) => {
                f.set_rotation(crate::rotate::AppOverrides::from_extra(&app.extra));
                f.set_owner(creds.clone());
                Arc::new(Mutex::new(f))
            }
            Err(e) => {
                self.fail_launch(&format!("cannot open log files of app [{label}]: {e}"));
                return;
            }
        };

        let (program, args) = command_line(&app);
        let mut cmd = std::process::Command::new(&program);
        cmd.args(&args)
            .current_dir(&app.cwd)
            .env_clear()
            .envs(&env)
            // A fork-mode app gets a stdin pipe as under pm2 (`pm2 send`);
            // cluster workers none.
            .stdin(if app.exec_mode == ExecMode::Cluster { Stdio::null() } else { Stdio::piped() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Node apps get a channel as with pm2: JSON in fork mode (so
        // `process.send` works), V8 "advanced" for cluster workers (so
        // Buffers in Socket.IO adapter messages survive).
        let cluster_mode = app.exec_mode == ExecMode::Cluster;
        let ipc_mode = if cluster_mode {
            Some(Mode::Advanced)
        } else if app.is_node() {
            Some(Mode::Json)
        } else {
            None
        };
        let wid = ipc_mode.map(|_| self.shared.cluster().alloc_wid());
        let chan = match (ipc_mode, wid) {
            (Some(mode), Some(wid)) => match ChildChannel::new(mode) {
                Ok(c) => Some(if cluster_mode { c.unique_id(wid.to_string()) } else { c }),
                Err(e) => {
                    self.fail_launch(&format!("cannot create the IPC channel of app [{label}]: {e}"));
                    return;
                }
            },
            _ => None,
        };
        if let Some(c) = &chan {
            c.apply(&mut cmd);
        }
        // SAFETY: setsid is async-signal-safe. A session of its own makes the
        // child a process-group leader, so one kill(-pid) reaches every
        // grandchild that stayed in the group (treekill).
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        // Last hook: the ones above may need the daemon's privileges.
        if let Some(c) = &creds {
            c.apply(&mut cmd);
        }
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.fail_launch(&format!("Error: spawn {program} {e} (app [{label}])"));
                return;
            }
        };
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        if let (Some(chan), Some(wid), Some(mode)) = (chan, wid, ipc_mode) {
            match Channel::new(chan.into_parent(), mode, Limits::default()) {
                Ok((tx, rx)) => {
                    cluster::worker_spawned(&self.shared, wid, self.id, pid, &app, tx);
                    tokio::spawn(cluster::worker_reader(
                        self.shared.clone(),
                        wid,
                        label.clone(),
                        rx,
                        ev_tx.clone(),
                    ));
                }
                Err(e) => dlog::error(&format!("IPC channel of app [{label}] failed: {e}")),
            }
        }
        let src = Source {
            pm_id: self.id,
            name: app.name.clone(),
            namespace: app.namespace.clone(),
            date_format: app.log_date_format.clone(),
            json: app.log_type.as_deref() == Some("json"),
            disabled: app.disable_logs,
        };
        let pipe = |fd: std::io::Result<std::os::fd::OwnedFd>| {
            fd.and_then(tokio::net::unix::pipe::Receiver::from_owned_fd).ok()
        };
        if let Some(out) = child.stdout.take().and_then(|o| pipe(o.into_owned_fd())) {
            tokio::spawn(logs::pump(out, Stream::Out, files.clone(), src.clone(), self.shared.bus.clone()));
        }
        if let Some(err) = child.stderr.take().and_then(|e| pipe(e.into_owned_fd())) {
            tokio::spawn(logs::pump(err, Stream::Err, files.clone(), src, self.shared.bus.clone()));
        }
        let stdin = child.stdin.take().and_then(|i| i.into_owned_fd().ok()).map(logs::nonblocking_file);
        self.shared.with_entry(self.id, |e| {
            e.files = Some(files);
            e.stdin = stdin.map(Arc::new);
        });
        let _ = std::fs::write(&info.pm_pid_path, pid.to_string());
        if let Some(c) = &creds {
            c.give(&info.pm_pid_path);
        }
        self.run = Some(Running { child, pid, wid, events: ev_rx, _events_tx: ev_tx });
        // pm2's `process:event` "start", sent for every launch before
        // "online" (pm2-runtime --json shows it).
        self.publish("start");
        let now = now_ms();
        self.shared.with_entry(self.id, |e| {
            e.info.pid = pid as u32;
            e.info.status = "launching".into();
            e.info.pm_uptime = now;
            e.info.env = env;
            e.counters.pm_uptime = now;
            e.cpu_sample = None;
        });
        if app.wait_ready || cluster_mode {
            // Online on `ready` (wait_ready) or the worker's `online`; pm2
            // gives up waiting after listen_timeout and marks it online.
            self.ready_deadline = Some(Instant::now() + Duration::from_millis(app.listen_timeout));
        } else {
            self.set_online();
        }
    }

    fn set_online(&mut self) {
        if self.run.is_none() {
            return;
        }
        self.ready_deadline = None;
        self.set_status("online");
        dlog::log(&format!("App [{}] online", self.label()));
        self.publish("online");
        for d in self.pending_online.drain(..) {
            let _ = d.send(Ok(()));
        }
    }

    fn fail_launch(&mut self, msg: &str) {
        dlog::error(msg);
        self.shared.with_entry(self.id, |e| {
            e.info.status = "errored".into();
            e.info.pid = 0;
        });
        for d in self.pending_online.drain(..) {
            let _ = d.send(Err(msg.to_string()));
        }
    }

    fn on_event(&mut self, ev: ChildEvent) {
        let Some(info) = self.info() else { return };
        let counts = match ev {
            ChildEvent::NodeVersion(v) => {
                self.shared.with_entry(self.id, |e| e.info.node_version = Some(v));
                false
            }
            ChildEvent::Ready => true,
            ChildEvent::Online => !info.app.wait_ready,
            ChildEvent::Listening | ChildEvent::StickyReady => false,
        };
        if counts && info.status == "launching" {
            self.set_online();
        }
    }

    fn on_exit(&mut self, st: Option<std::process::ExitStatus>) {
        let Some(run) = self.run.take() else { return };
        let (code, _) = exit_parts(st);
        let label = self.label();
        log_exit(&label, st);
        // Children of a crashed app must not outlive it as orphans. The pid
        // itself is reaped already, so only its process group is addressed.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-run.pid, libc::SIGKILL) };
        let now = now_ms();
        let stopping = self.shared.is_shutting_down();
        let decision = self.shared.with_entry(self.id, |e| {
            e.info.pid = 0;
            e.info.exit_code = code.or(Some(0));
            e.info.status = "stopped".into();
            let d = policy::on_exit(&e.info.app, &mut e.counters, now, code, stopping);
            // restart_time counts restarts when they run (see the
            // restart_at branch of the task loop): not the exit that ends in
            // `errored`, nor a delayed restart still waiting.
            e.info.unstable_restarts = e.counters.unstable_restarts;
            e.info.prev_restart_delay = e.counters.prev_restart_delay;
            if e.counters.created_at.is_none() {
                e.info.created_at = 0;
            }
            d
        });
        if let Some(i) = self.info() {
            let _ = std::fs::remove_file(&i.pm_pid_path);
        }
        if let Some(wid) = run.wid {
            let linger = matches!(decision, Some(Decision::Restart { .. }));
            cluster::worker_gone(&self.shared, wid, linger);
        }
        self.publish("exit");
        for d in self.pending_online.drain(..) {
            let _ = d.send(Err(format!("App [{label}] exited before it was ready")));
        }
        self.ready_deadline = None;
        match decision {
            None | Some(Decision::Stop) => {}
            Some(Decision::Errored { unstable }) => {
                let script = self.info().map(|i| i.app.script).unwrap_or_default();
                dlog::log(&format!(
                    "Script {script} had too many unstable restarts ({unstable}). Stopped. \"errored\""
                ));
                self.set_status("errored");
                self.publish("restart overlimit");
            }
            Some(Decision::Restart { delay_ms, waiting }) => {
                if waiting {
                    self.set_status("waiting restart");
                    dlog::log(&format!("App [{label}] will restart in {delay_ms}ms"));
                }
                self.restart_at = Some(Instant::now() + Duration::from_millis(delay_ms));
            }
        }
    }

    /// Rolling replacement of one cluster worker (spec §3.8): start the new
    /// worker under the same pm_id, wait until it listens (or sends `ready`
    /// with wait_ready, or speaks Socket.IO), stop routing new connections to
    /// the old one, and retire the old one in the background. A replacement
    /// that dies before it is ready leaves the old worker serving.
    async fn reload_cluster(&mut self, update: Option<Box<AppSpec>>) -> Result<(), String> {
        let Some(old) = self.run.take() else { return Ok(()) };
        self.shared.with_entry(self.id, |e| manual_restart(e, update));
        let Some(info) = self.info() else { return Ok(()) };
        let app = info.app.clone();
        let label = format!("{}:{}", app.name, self.id);
        self.launch();
        let Some(mut new) = self.run.take() else {
            self.run = Some(old);
            self.set_status("online");
            return Err(format!("the replacement of app [{label}] failed to start"));
        };
        let deadline = Instant::now() + Duration::from_millis(app.listen_timeout);
        loop {
            tokio::select! {
                ev = new.events.recv() => match ev {
                    Some(ChildEvent::Ready) => break,
                    Some(ChildEvent::Listening | ChildEvent::StickyReady) if !app.wait_ready => break,
                    Some(ChildEvent::NodeVersion(v)) => {
                        self.shared.with_entry(self.id, |e| e.info.node_version = Some(v));
                    }
                    Some(_) => {}
                    // The channel is gone: the exit branch tells what happened.
                    None => {
                        let st = new.child.wait().await.ok();
                        return self.reload_failed(old, new, st, &label);
                    }
                },
                st = new.child.wait() => {
                    return self.reload_failed(old, new, st.ok(), &label);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    dlog::log(&format!("App [{label}] did not listen within {}ms, reloading anyway", app.listen_timeout));
                    break;
                }
            }
        }
        self.run = Some(new);
        self.shared.with_entry(self.id, |e| e.info.restart_time += 1);
        self.set_online();
        if let Some(wid) = old.wid {
            cluster::drain_worker(&self.shared, wid, true);
        }
        tokio::spawn(retire(self.shared.clone(), old, app, label));
        self.publish("reload");
        Ok(())
    }

    fn reload_failed(
        &mut self,
        old: Running,
        new: Running,
        st: Option<std::process::ExitStatus>,
        label: &str,
    ) -> Result<(), String> {
        let (code, signal) = exit_parts(st);
        // The replacement's launch armed the online timer; the old worker
        // must not be announced online again when it fires.
        self.ready_deadline = None;
        if let Some(wid) = new.wid {
            cluster::worker_gone(&self.shared, wid, true);
        }
        let old_pid = old.pid;
        self.run = Some(old);
        self.shared.with_entry(self.id, |e| {
            e.info.pid = old_pid as u32;
            e.info.status = "online".into();
        });
        let how = match (code, signal) {
            (Some(c), _) => format!("with code {c}"),
            (None, Some(s)) => format!("via signal {s}"),
            (None, None) => "before it was ready".to_string(),
        };
        let msg = format!(
            "reload of app [{label}] failed: the new worker exited {how}; the old worker keeps serving"
        );
        dlog::error(&msg);
        Err(msg)
    }

    /// pm2's stop sequence (spec §3.7). Leaves the process `stopped`, or
    /// `errored` if it survived SIGKILL.
    async fn stop(&mut self) {
        self.stop_with(false).await
    }

    /// `linger`: a replacement follows (restart), so the app's listeners
    /// keep queueing connections meanwhile instead of closing.
    async fn stop_with(&mut self, linger: bool) {
        self.ready_deadline = None;
        let Some(mut run) = self.run.take() else {
            let st = self.info().map(|i| i.status).unwrap_or_default();
            if st != "errored" || self.restart_at.is_some() {
                self.set_status("stopped");
            }
            self.restart_at = None;
            return;
        };
        let Some(info) = self.info() else { return };
        let app = &info.app;
        let label = format!("{}:{}", app.name, self.id);
        self.set_status("stopping");
        dlog::log(&format!("Stopping app:{} id:{}", app.name, self.id));
        if let Some(wid) = run.wid {
            cluster::drain_worker(&self.shared, wid, linger);
        }
        let known = proctree::descendants(run.pid);
        let by_message = (app.shutdown_with_message || std::env::var_os("PM2_KILL_USE_MESSAGE").is_some())
            && run.wid.is_some_and(|wid| cluster::send_message(&self.shared, wid, &Value::from("shutdown")));
        if !by_message {
            proctree::signal_tree(run.pid, kill_signal(), app.treekill, &known);
        }
        let grace = Duration::from_millis(app.kill_timeout);
        let deadline = Instant::now() + grace;
        let mut status = tokio::time::timeout_at(deadline, run.child.wait()).await.ok().and_then(|r| r.ok());
        if status.is_none() {
            dlog::log(&format!(
                "Process with pid {} still alive after {}ms, sending it SIGKILL now...",
                run.pid, app.kill_timeout
            ));
            proctree::signal_tree(run.pid, libc::SIGKILL, true, &known);
            status = tokio::time::timeout(grace, run.child.wait()).await.ok().and_then(|r| r.ok());
            if status.is_none() {
                dlog::error(&format!("Process with pid {} could not be killed", run.pid));
                self.shared.with_entry(self.id, |e| e.info.status = "errored".into());
                self.run = Some(run);
                return;
            }
        }
        // Grandchildren get what is left of the grace period, then SIGKILL.
        while known.iter().any(|&p| proctree::alive(p)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(app.kill_retry_time.clamp(10, 100))).await;
        }
        for &p in &known {
            if proctree::alive(p) {
                proctree::signal(p, libc::SIGKILL);
            }
        }
        let (code, _) = exit_parts(status);
        log_exit(&label, status);
        let _ = std::fs::remove_file(&info.pm_pid_path);
        if let Some(wid) = run.wid {
            cluster::worker_gone(&self.shared, wid, linger);
        }
        self.shared.with_entry(self.id, |e| {
            e.info.pid = 0;
            e.info.status = "stopped".into();
            e.info.exit_code = code.or(Some(0));
        });
        self.publish("stop");
    }
}

/// Stops a worker that a reload replaced, gracefully: it is already drained
/// (no new connections), so ask it to close its servers and exit when idle
/// (`disconnect`, or the `'shutdown'` message), then SIGINT, then SIGKILL,
/// each after kill_timeout.
async fn retire(shared: SharedRef, mut old: Running, app: AppSpec, label: String) {
    let grace = Duration::from_millis(app.kill_timeout);
    let socketio = old.wid.is_some_and(|wid| cluster::is_socketio_worker(&shared, wid));
    if let (true, Some(wid)) = (socketio, old.wid) {
        // Its Socket.IO sessions finish on it (their requests still route
        // here), bounded by PM2_GRACEFUL_TIMEOUT; only the rest are cut.
        let limit =
            std::env::var("PM2_GRACEFUL_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(8000u64);
        let deadline = Instant::now() + Duration::from_millis(limit);
        while cluster::session_count(&shared, wid) > 0 && Instant::now() < deadline {
            tokio::select! {
                _ = old.child.wait() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
    let asked = match old.wid {
        Some(wid) if app.shutdown_with_message => {
            cluster::send_message(&shared, wid, &Value::from("shutdown"))
        }
        // A Socket.IO worker never exits on `disconnect` (its adapter timers
        // keep it alive) and would lose its channel: go straight to SIGINT.
        Some(_) if socketio => false,
        Some(wid) => cluster::send_disconnect(&shared, wid),
        None => false,
    };
    let mut status = None;
    if asked {
        status = tokio::time::timeout(grace, old.child.wait()).await.ok().and_then(|r| r.ok());
    }
    if status.is_none() {
        proctree::signal_tree(old.pid, kill_signal(), app.treekill, &[]);
        status = tokio::time::timeout(grace, old.child.wait()).await.ok().and_then(|r| r.ok());
    }
    if status.is_none() {
        dlog::log(&format!(
            "Process with pid {} still alive after {}ms, sending it SIGKILL now...",
            old.pid, app.kill_timeout
        ));
        proctree::signal_tree(old.pid, libc::SIGKILL, true, &[]);
        status = old.child.wait().await.ok();
    }
    if let Some(wid) = old.wid {
        cluster::worker_gone(&shared, wid, true);
    }
    let (code, signal) = exit_parts(status);
    dlog::log(&format!(
        "App [{label}] (replaced by reload) exited with code [{}] via signal [{}]",
        code.map(|c| c.to_string()).unwrap_or_else(|| "0".into()),
        signal.unwrap_or_else(|| "SIGINT".into())
    ));
}

/// What a manual restart/reload does to the counters (pm2's
/// `restartProcessId`): a fresh unstable window and no backoff; `update`
/// replaces the stored spec.
fn manual_restart(e: &mut Entry, update: Option<Box<AppSpec>>) {
    if let Some(app) = update {
        e.info.app = *app;
    }
    let now = now_ms();
    e.counters.created_at = Some(now);
    e.counters.unstable_restarts = 0;
    e.counters.prev_restart_delay = None;
    e.info.created_at = now;
    e.info.unstable_restarts = 0;
    e.info.prev_restart_delay = None;
}

/// pm2.log's exit line: `App [name:id] exited with code [c] via signal [s]`.
fn log_exit(label: &str, st: Option<std::process::ExitStatus>) {
    let (code, signal) = exit_parts(st);
    dlog::log(&format!(
        "App [{label}] exited with code [{}] via signal [{}]",
        code.map(|c| c.to_string()).unwrap_or_else(|| "0".into()),
        signal.unwrap_or_else(|| "SIGINT".into())
    ));
}

fn short_mode(m: ExecMode) -> &'static str {
    match m {
        ExecMode::Fork => "fork",
        ExecMode::Cluster => "cluster",
    }
}

/// `PM2_KILL_SIGNAL` (default SIGINT).
fn kill_signal() -> i32 {
    std::env::var("PM2_KILL_SIGNAL").ok().and_then(|s| parse_signal(&s)).unwrap_or(libc::SIGINT)
}

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

fn exit_parts(st: Option<std::process::ExitStatus>) -> (Option<i32>, Option<String>) {
    use std::os::unix::process::ExitStatusExt;
    match st {
        Some(s) => (s.code(), s.signal().map(signal_name)),
        None => (None, None),
    }
}

/// Program and argv for a fork-mode app (spec §3.9): `interpreter
/// [node_args] script args`, or the script itself for `none`.
pub fn command_line(app: &AppSpec) -> (String, Vec<String>) {
    if app.interpreter == "none" || app.interpreter.is_empty() {
        return (app.script.clone(), app.args.clone());
    }
    let mut args = app.node_args.clone();
    if app.is_node() {
        if let Ok(extra) = std::env::var("PM2_NODE_OPTIONS") {
            args.extend(extra.split_whitespace().map(String::from));
        }
    }
    args.push(app.script.clone());
    args.extend(app.args.iter().cloned());
    (app.interpreter.clone(), args)
}
