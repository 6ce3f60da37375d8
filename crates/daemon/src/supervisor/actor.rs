//! One actor (task) per process: spawn, watch, stop, restart, reload.
//! Controls arrive on a queue and are handled one at a time, so a `restart`
//! that arrives during a `stop` waits for the stop to finish instead of
//! racing it; while a cluster reload waits for its replacement, urgent
//! controls (stop, delete, signal) are handled at once.
//!
//! Architecture invariant: only this task changes a process's status, pid
//! and counters; everyone else reads them or sends a control.

use super::handle::{Ctl, Done, ProcessHandle};
use super::host::{ExitRequest, WorkerEvent, WorkerHost, WorkerInfo};
use super::ladder;
use super::spawn::{self, command_line, fill_paths};
use crate::dlog;
use crate::error::DaemonError;
use crate::health::{self, HealthRun};
use crate::logs::{self, LogFiles, Source};
use crate::policy::{self, Decision};
use crate::proctree;
use crate::state::{Entry, SharedRef};
use crate::timefmt::now_ms;
use corral_proto::{AppSpec, Event, ExecMode, ProcInfo, Status, Stream};
use node_ipc::{Channel, ChildChannel};
use std::collections::VecDeque;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The child of a run: spawned by this image, or adopted from the image
/// before an in-place upgrade.
enum ChildProc {
    Spawned(tokio::process::Child),
    Adopted(super::adopted::AdoptedChild),
}

impl ChildProc {
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            ChildProc::Spawned(c) => c.wait().await,
            ChildProc::Adopted(a) => a.wait().await,
        }
    }
}

/// Workers a reload replaced that are still being retired (their children
/// are no process of the table): an in-place upgrade waits for them.
pub static RETIRING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Running {
    child: ChildProc,
    /// Its descriptors, for an in-place upgrade.
    live: crate::state::Live,
    pid: i32,
    /// Worker id in the cluster registry, when the child has an IPC channel.
    wid: Option<u32>,
    events: mpsc::UnboundedReceiver<WorkerEvent>,
    /// Held so the channel stays open while the child lives.
    _events_tx: mpsc::UnboundedSender<WorkerEvent>,
    /// Health checks of this run (apps with `AppSpec::health` only).
    health: Option<HealthRun>,
}

enum Sig {
    Exit(Option<std::process::ExitStatus>),
    Event(WorkerEvent),
    Health(health::Event),
}

/// The next health event of a run; pending forever without health checks.
async fn next_health(h: &mut Option<HealthRun>) -> health::Event {
    match h {
        Some(h) => h.next().await,
        None => std::future::pending().await,
    }
}

async fn next_signal(run: &mut Option<Running>) -> Sig {
    match run {
        None => std::future::pending().await,
        Some(r) => tokio::select! {
            st = r.child.wait() => Sig::Exit(st.ok()),
            Some(ev) = r.events.recv() => Sig::Event(ev),
            ev = next_health(&mut r.health) => Sig::Health(ev),
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
pub fn register(shared: &SharedRef, app: AppSpec, instance: Option<u32>) -> ProcessHandle {
    let (handle, rx);
    {
        let mut t = shared.table();
        let id = t.alloc_id();
        (handle, rx) = ProcessHandle::new(id);
        let instance = instance.unwrap_or_else(|| t.free_instance(&app.name));
        let info = new_info(shared, id, instance, app);
        t.procs.insert(id, Entry::new(info, handle.clone()));
    }
    tokio::spawn(run(shared.clone(), handle.clone(), rx));
    handle
}

/// Adopts a process handed over by the image before an in-place upgrade:
/// its table entry as it was (pm_id, counters, uptime, status), and, when
/// its child runs, the child itself with its channel, log pipes and stdin.
/// Its actor goes on as if it had launched the child.
pub fn adopt(shared: &SharedRef, h: crate::upgrade::format::ProcHandover) -> Result<ProcessHandle, String> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let id = h.info.pm_id;
    let (handle, rx) = ProcessHandle::new(id);
    let app = h.info.app.clone();
    let label = format!("{}:{}", app.name, id);
    shared.table().procs.insert(id, Entry::new(h.info.clone(), handle.clone()));
    let mut t = Task::new(shared.clone(), handle.clone(), rx);
    if let Some(ms) = h.restart_in_ms {
        t.restart_at = Some(Instant::now() + Duration::from_millis(ms));
    }
    if let Some(c) = h.child {
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let wid = c.ipc.as_ref().map(|i| i.wid);
        if let Some(ipc) = &c.ipc {
            let who = WorkerInfo { pm_id: id, pid: c.pid, label: &label, app: &app };
            // A channel that cannot be adopted is closed: the worker exits
            // with it and the restart policy applies, as for any exit.
            if let Err(e) = shared.cluster.adopt_worker(ipc, who, ev_tx.clone()) {
                dlog::error(&format!("App [{label}]: {e}; its channel is closed"));
            }
        }
        let creds = crate::privileges::for_app(&app).ok().flatten();
        let files = LogFiles::open(
            h.info.pm_out_log_path.clone(),
            h.info.pm_err_log_path.clone(),
            h.info.pm_log_path.clone(),
        )
        .or_else(|e| {
            // Its output still has to be read (a full pipe would stall it).
            dlog::error(&format!(
                "cannot open log files of app [{label}]: {e}; its output goes to /dev/null"
            ));
            LogFiles::open("/dev/null".into(), "/dev/null".into(), None)
        })
        .ok();
        let files = files.map(|mut f| {
            f.set_rotation(crate::rotate::AppOverrides::from_extra(&app.extra));
            f.set_owner(creds);
            Arc::new(Mutex::new(f))
        });
        let src = Source {
            pm_id: id,
            name: app.name.clone(),
            namespace: app.namespace.clone(),
            date_format: app.log_date_format.clone(),
            json: app.log_type.as_deref() == Some("json"),
            disabled: app.disable_logs,
        };
        // SAFETY (all three): the handover names these descriptors as this
        // child's pipes; nothing else in this image owns them.
        let pipe = |fd: i32| {
            tokio::net::unix::pipe::Receiver::from_owned_fd(unsafe { OwnedFd::from_raw_fd(fd) }).ok()
        };
        if let (Some(out), Some(files)) = (c.out_fd.and_then(pipe), &files) {
            tokio::spawn(logs::pump(out, Stream::Out, files.clone(), src.clone(), shared.bus.clone()));
        }
        if let (Some(err), Some(files)) = (c.err_fd.and_then(pipe), &files) {
            tokio::spawn(logs::pump(err, Stream::Err, files.clone(), src, shared.bus.clone()));
        }
        let stdin = c.stdin_fd.map(|fd| logs::nonblocking_file(unsafe { OwnedFd::from_raw_fd(fd) }));
        shared.with_entry(id, |e| {
            e.files = files;
            e.stdin = stdin.map(Arc::new);
        });
        // Health goes on where it was: a ready process stays ready (it will
        // not say `ready` again), its probes resume.
        let health = app.health.as_ref().map(|hs| {
            // The socket is bound again at the same path (a datagram sent
            // during the switch is lost; the watchdog starts a new interval).
            if hs.offers_notify() {
                if let Err(e) = shared.notify.ensure_bound() {
                    dlog::error(&format!("cannot bind {}: {e}", shared.notify.path().display()));
                }
            }
            let connect: Option<health::probe::Connector> =
                wid.filter(|_| app.exec_mode == ExecMode::Cluster).map(|wid| {
                    let host = t.host.clone();
                    std::sync::Arc::new(move |port| host.connect_probe(wid, port)) as health::probe::Connector
                });
            HealthRun::adopt(
                hs,
                hs.notify || app.wait_ready,
                h.info.health.as_ref(),
                &shared.notify,
                c.pid,
                &h.info.env,
                &app.cwd,
                connect,
            )
        });
        if let (Some(wid), Some(hr)) = (wid, &health) {
            t.host.set_ready(wid, hr.is_ready());
        }
        if health.as_ref().is_some_and(|hr| !hr.is_ready()) && h.info.status == Status::Launching {
            let budget =
                app.health.as_ref().map_or(app.listen_timeout, |hs| hs.ready_budget_ms(app.listen_timeout));
            t.health_deadline = Some(Instant::now() + Duration::from_millis(budget));
        }
        let health_info = health.as_ref().map(|hr| hr.machine().info().clone());
        shared.with_entry(id, |e| e.info.health = health_info);
        t.run = Some(Running {
            child: ChildProc::Adopted(super::adopted::AdoptedChild::new(c.pid)),
            live: crate::state::Live { wid, out_fd: c.out_fd, err_fd: c.err_fd, ..Default::default() },
            pid: c.pid,
            wid,
            events: ev_rx,
            _events_tx: ev_tx,
            health,
        });
        if app.watch {
            t.watcher = crate::watcher::start(handle.clone(), &app);
        }
        if h.info.status == Status::Launching {
            t.ready_deadline = Some(Instant::now() + Duration::from_millis(app.listen_timeout));
        }
    }
    if let Some(p) = &app.cron_restart {
        t.cron = crate::cron::start(handle.clone(), &app.name, p);
    }
    tokio::spawn(t.event_loop());
    Ok(handle)
}

fn new_info(shared: &SharedRef, id: u32, instance: u32, app: AppSpec) -> ProcInfo {
    let mut p = ProcInfo {
        pm_id: id,
        instance,
        status: Status::Stopped,
        unique_id: spawn::uuid_v4(),
        username: shared.username.clone(),
        app,
        ..Default::default()
    };
    fill_paths(shared, &mut p);
    p
}

struct Task {
    shared: SharedRef,
    id: u32,
    /// Our own address, for the watcher and the cron schedule.
    me: ProcessHandle,
    /// Serves the child's IPC channel, if it has one.
    host: Arc<dyn WorkerHost>,
    run: Option<Running>,
    restart_at: Option<Instant>,
    /// Consecutive launches that failed before a child existed (spawn
    /// errors such as a missing interpreter or EMFILE), retried with
    /// backoff until the restart budget is spent; 0 after a spawn succeeds
    /// or a manual start/restart.
    spawn_failures: u32,
    /// Answered when the process becomes online (wait_ready).
    pending_online: Vec<Done>,
    ready_deadline: Option<Instant>,
    /// Restarts of an app whose health checks gate readiness: answered when
    /// the new run is ready, or with an error at `health_deadline`.
    pending_ready: Vec<Done>,
    health_deadline: Option<Instant>,
    /// File watcher (`watch`), started at the first launch, dropped with the
    /// task (delete).
    watcher: Option<crate::watcher::WatchHandle>,
    /// `cron_restart` schedule, registered at the first launch.
    cron: Option<crate::cron::CronHandle>,
    /// The control queue.
    ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    /// Controls that arrived while a reload waited and are handled after it,
    /// before the queue.
    deferred: VecDeque<Ctl>,
}

/// The next control: deferred ones first.
async fn next_ctl(deferred: &mut VecDeque<Ctl>, rx: &mut mpsc::UnboundedReceiver<Ctl>) -> Option<Ctl> {
    match deferred.pop_front() {
        Some(c) => Some(c),
        None => rx.recv().await,
    }
}

async fn run(shared: SharedRef, me: ProcessHandle, ctl_rx: mpsc::UnboundedReceiver<Ctl>) {
    Task::new(shared, me, ctl_rx).event_loop().await
}

impl Task {
    fn new(shared: SharedRef, me: ProcessHandle, ctl_rx: mpsc::UnboundedReceiver<Ctl>) -> Task {
        Task {
            host: shared.cluster.clone(),
            shared,
            id: me.id(),
            me,
            run: None,
            restart_at: None,
            spawn_failures: 0,
            pending_online: Vec::new(),
            ready_deadline: None,
            pending_ready: Vec::new(),
            health_deadline: None,
            watcher: None,
            cron: None,
            ctl_rx,
            deferred: VecDeque::new(),
        }
    }

    /// Records what an in-place upgrade needs of this task's state.
    fn sync_live(&self, busy: bool) {
        let at = self
            .restart_at
            .map(|t| now_ms() + t.saturating_duration_since(Instant::now()).as_millis() as u64);
        let run = self.run.as_ref().map(|r| r.live.clone()).unwrap_or_default();
        if let Some(e) = self.shared.table().procs.get_mut(&self.id) {
            e.live = crate::state::Live { restart_at_ms: at, busy, ..run };
        }
    }

    async fn event_loop(self) {
        let mut t = self;
        t.sync_live(false);
        loop {
            tokio::select! {
                ctl = next_ctl(&mut t.deferred, &mut t.ctl_rx) => {
                    let Some(ctl) = ctl else { break };
                    // A stop or reload in progress is no quiet point for an
                    // in-place upgrade: it waits for the control's end.
                    t.sync_live(true);
                    if t.handle(ctl).await { break; }
                }
                sig = next_signal(&mut t.run) => match sig {
                    Sig::Exit(st) => t.on_exit(st),
                    Sig::Event(ev) => t.on_event(ev),
                    Sig::Health(ev) => t.on_health(ev).await,
                },
                _ = sleep_until_opt(t.restart_at) => {
                    t.restart_at = None;
                    t.shared.with_entry(t.id, |e| e.info.restart_time += 1);
                    t.launch();
                }
                _ = sleep_until_opt(t.ready_deadline) => {
                    // pm2 marks the app online anyway when listen_timeout passes
                    // (and, for wait_ready, takes that as its ready signal).
                    t.ready_deadline = None;
                    t.set_online();
                    t.wait_ready_signal().await;
                }
                _ = sleep_until_opt(t.health_deadline) => {
                    t.health_deadline = None;
                    t.not_ready_in_time();
                }
            }
            t.sync_live(false);
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

    fn set_status(&self, status: Status) {
        self.shared.with_entry(self.id, |e| e.info.status = status);
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
                    let _ = done.send(Ok(()));
                    return false;
                }
                self.shared.with_entry(self.id, |e| e.info.created_at = now_ms());
                self.spawn_failures = 0;
                self.pending_online.push(done);
                self.launch();
            }
            Ctl::Stop { done } => {
                self.stop().await;
                self.shared.activation.release(self.id);
                // `pm2 stop` turns watching off (the server stored
                // `watch: false` before asking): a change must not restart
                // a stopped app.
                if !self.info().is_some_and(|i| i.app.watch) {
                    self.watcher = None;
                }
                let _ = done.send(Ok(()));
            }
            Ctl::Reload { update, done }
                if self.run.is_some()
                    && self.info().is_some_and(|i| {
                        i.status == Status::Online && i.app.exec_mode == ExecMode::Cluster
                    }) =>
            {
                let r = self.reload_cluster(update).await;
                let _ = done.send(r);
            }
            Ctl::Restart { update, done } | Ctl::Reload { update, done } => {
                self.restart_at = None;
                let was_running =
                    self.run.is_some() || self.info().is_some_and(|i| i.status == Status::WaitingRestart);
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
                self.spawn_failures = 0;
                if self.info().is_some_and(|i| gated(&i.app)) {
                    // Answered once the new run is ready (a cluster app
                    // restarted one by one keeps serving meanwhile).
                    self.pending_ready.push(done);
                } else {
                    self.pending_online.push(done);
                }
                self.launch();
                self.publish("restart");
            }
            Ctl::Delete { done } => {
                self.restart_at = None;
                self.stop().await;
                self.shared.activation.release(self.id);
                if let Some(i) = self.info() {
                    let _ = std::fs::remove_file(&i.pm_pid_path);
                }
                self.publish("delete");
                self.shared.table().remove(self.id);
                let _ = done.send(Ok(()));
                return true;
            }
            Ctl::Reset { done } => {
                self.shared.with_entry(self.id, |e| {
                    e.info.restart_time = 0;
                    e.info.unstable_restarts = 0;
                });
                let _ = done.send(Ok(()));
            }
            Ctl::ResetBackoff { done } => {
                self.shared.with_entry(self.id, |e| e.info.prev_restart_delay = None);
                let _ = done.send(Ok(()));
            }
            Ctl::Signal { sig, done } => {
                let r = match &self.run {
                    Some(r) if proctree::signal(r.pid, sig) => Ok(()),
                    Some(r) => Err(DaemonError::SignalFailed(r.pid)),
                    None => Err(DaemonError::NotRunning(self.id)),
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
            self.watcher = crate::watcher::start(self.me.clone(), &app);
        } else if !app.watch {
            self.watcher = None;
        }
        match &app.cron_restart {
            Some(p) if self.cron.is_none() => self.cron = crate::cron::start(self.me.clone(), &app.name, p),
            None => self.cron = None,
            _ => {}
        }
        let label = format!("{}:{}", app.name, self.id);
        dlog::log(&format!("App [{label}] starting in -{} mode-", short_mode(app.exec_mode)));
        if let Some(w) = crate::runtimes::launch_warning(&app) {
            dlog::log(&w);
        }

        // `uid`/`gid` are resolved at every launch: the user database may
        // have changed since the app was started.
        let creds = match crate::privileges::for_app(&app) {
            Ok(c) => c,
            Err(e) => {
                self.fail_launch(&format!("App [{label}]: {e}"));
                return;
            }
        };
        let mut env = spawn::build(&self.shared, &info);
        if let Some(c) = &creds {
            c.apply_env(&mut env);
        }
        if let Some(h) = &app.health {
            health::child_env(h, &self.shared.notify, &mut env);
        }
        // Socket activation (`listen_fds`): bound once, held across
        // restarts; LISTEN_PID is set in the child (activation.rs).
        let sockets = match self.shared.activation.acquire(self.id, &app) {
            Ok(s) => s,
            Err(e) => {
                self.fail_launch(&format!("App [{label}]: {e}"));
                return;
            }
        };
        for k in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
            env.remove(k);
        }
        if !sockets.is_empty() {
            env.insert("LISTEN_FDS".into(), sockets.len().to_string());
            env.insert("LISTEN_FDNAMES".into(), crate::activation::fd_names(&app, sockets.len()));
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
                self.spawn_failed(&format!("cannot open log files of app [{label}]: {e}"), &e);
                return;
            }
        };

        let (program, args) = command_line(&app, &self.shared.config.node_options);
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
        // Buffers in Socket.IO adapter messages survive); Bun and Deno
        // differ (runtimes.rs).
        let cluster_mode = app.exec_mode == ExecMode::Cluster;
        let ipc_mode = crate::runtimes::ipc_mode(&app);
        let wid = ipc_mode.map(|_| self.host.alloc_worker_id());
        let chan = match (ipc_mode, wid) {
            (Some(mode), Some(wid)) => match ChildChannel::new(mode) {
                Ok(c) => {
                    let c =
                        if sockets.is_empty() { c } else { c.child_fd(crate::activation::channel_fd(&app)) };
                    Some(if cluster_mode { c.unique_id(wid.to_string()) } else { c })
                }
                Err(e) => {
                    self.spawn_failed(&format!("cannot create the IPC channel of app [{label}]: {e}"), &e);
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
        // After the last hook, as it execs the program itself.
        if let Err(e) = crate::activation::apply(&mut cmd, &sockets) {
            self.fail_launch(&format!("App [{label}]: cannot pass its sockets: {e}"));
            return;
        }
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.spawn_failed(&format!("Error: spawn {program} {e} (app [{label}])"), &e);
                return;
            }
        };
        self.spawn_failures = 0;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        if let (Some(chan), Some(wid), Some(mode)) = (chan, wid, ipc_mode) {
            match Channel::new(chan.into_parent(), mode, crate::runtimes::channel_limits(&app)) {
                Ok((tx, rx)) => {
                    let who = WorkerInfo { pm_id: self.id, pid, label: &label, app: &app };
                    self.host.attach(wid, who, tx, rx, ev_tx.clone());
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
        use std::os::fd::AsRawFd;
        let mut live = crate::state::Live { wid, ..Default::default() };
        if let Some(out) = child.stdout.take().and_then(|o| pipe(o.into_owned_fd())) {
            live.out_fd = Some(out.as_raw_fd());
            tokio::spawn(logs::pump(out, Stream::Out, files.clone(), src.clone(), self.shared.bus.clone()));
        }
        if let Some(err) = child.stderr.take().and_then(|e| pipe(e.into_owned_fd())) {
            live.err_fd = Some(err.as_raw_fd());
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
        let health = app.health.as_ref().map(|h| {
            // Probes of a worker whose listeners the host owns go to that
            // worker, not to whichever worker the shared port picks.
            let connect: Option<health::probe::Connector> = wid.filter(|_| cluster_mode).map(|wid| {
                let host = self.host.clone();
                std::sync::Arc::new(move |port| host.connect_probe(wid, port)) as health::probe::Connector
            });
            HealthRun::start(h, h.notify || app.wait_ready, &self.shared.notify, pid, &env, &app.cwd, connect)
        });
        let health_info = health.as_ref().map(|h| h.machine().info().clone());
        if health.as_ref().is_some_and(|h| !h.is_ready()) {
            let budget =
                app.health.as_ref().map_or(app.listen_timeout, |h| h.ready_budget_ms(app.listen_timeout));
            self.health_deadline = Some(Instant::now() + Duration::from_millis(budget));
        }
        self.shared.with_entry(self.id, |e| e.info.health = health_info);
        self.run = Some(Running {
            child: ChildProc::Spawned(child),
            live,
            pid,
            wid,
            events: ev_rx,
            _events_tx: ev_tx,
            health,
        });
        // pm2's `process:event` "start", sent for every launch before
        // "online" (pm2-runtime --json shows it).
        self.publish("start");
        let now = now_ms();
        self.shared.with_entry(self.id, |e| {
            e.info.pid = pid as u32;
            e.info.status = Status::Launching;
            e.info.pm_uptime = now;
            e.info.env = env;
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
        self.set_status(Status::Online);
        dlog::log(&format!("App [{}] online", self.label()));
        self.publish("online");
        for d in self.pending_online.drain(..) {
            let _ = d.send(Ok(()));
        }
    }

    fn fail_launch(&mut self, msg: &str) {
        dlog::error(msg);
        self.shared.with_entry(self.id, |e| {
            e.info.status = Status::Errored;
            e.info.pid = 0;
        });
        for d in self.pending_online.drain(..) {
            let _ = d.send(Err(DaemonError::Launch(msg.to_string())));
        }
    }

    /// A launch failed before a child existed. A transient cause (see
    /// [`spawn::is_transient`]) is retried like a crash, with backoff, until
    /// the restart budget is spent: a spawn that fails once must not leave
    /// the app dead once the cause is gone. Meanwhile the app shows
    /// `waiting restart` with pid 0; whoever waits for it to come online is
    /// told at once what failed and that it is being retried.
    fn spawn_failed(&mut self, msg: &str, err: &std::io::Error) {
        let Some(app) = self.info().map(|i| i.app) else { return };
        self.spawn_failures += 1;
        let n = self.spawn_failures;
        let retry = (spawn::is_transient(err) && !self.shared.is_shutting_down())
            .then(|| policy::spawn_retry_delay(&app, n))
            .flatten();
        let Some(delay_ms) = retry else {
            self.spawn_failures = 0;
            if n > 1 {
                self.fail_launch(&format!("{msg}; gave up after {n} failed attempts"));
            } else {
                self.fail_launch(msg);
            }
            return;
        };
        let msg =
            format!("{msg}; attempt {n} of {} failed, retrying in {delay_ms}ms", app.max_restarts.max(1));
        dlog::error(&msg);
        self.shared.with_entry(self.id, |e| {
            e.info.status = Status::WaitingRestart;
            e.info.pid = 0;
        });
        for d in self.pending_online.drain(..) {
            let _ = d.send(Err(DaemonError::Launch(msg.clone())));
        }
        self.restart_at = Some(Instant::now() + Duration::from_millis(delay_ms));
    }

    fn on_event(&mut self, ev: WorkerEvent) {
        let Some(info) = self.info() else { return };
        let counts = match ev {
            WorkerEvent::NodeVersion(v) => {
                self.shared.with_entry(self.id, |e| e.info.node_version = Some(v));
                false
            }
            WorkerEvent::Ready => {
                if info.app.wait_ready {
                    let out = self.run.as_mut().and_then(|r| r.health.as_mut()).map(|h| h.signal());
                    if let Some(out) = out {
                        self.record_health();
                        self.ready_changed(out.ready_changed);
                    }
                }
                true
            }
            WorkerEvent::Online => !info.app.wait_ready,
            WorkerEvent::Listening | WorkerEvent::Serving => false,
        };
        if counts && info.status == Status::Launching {
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
            e.info.status = Status::Stopped;
            let mut counters = policy::Counters::of(&e.info);
            let d = policy::on_exit(&e.info.app, &mut counters, now, code, stopping);
            counters.store(&mut e.info);
            // restart_time counts restarts when they run (the restart_at
            // branch of the actor's loop), as pm2: not the exit that ends in
            // `errored`, nor a delayed restart still waiting.
            d
        });
        if let Some(i) = self.info() {
            let _ = std::fs::remove_file(&i.pm_pid_path);
        }
        if let Some(wid) = run.wid {
            let linger = matches!(decision, Some(Decision::Restart { .. }));
            self.host.detach(wid, linger);
        }
        self.publish("exit");
        for d in self.pending_online.drain(..).chain(self.pending_ready.drain(..)) {
            let _ = d.send(Err(DaemonError::ExitedBeforeReady(label.clone())));
        }
        self.ready_deadline = None;
        self.health_deadline = None;
        self.shared.with_entry(self.id, |e| {
            if let Some(h) = e.info.health.as_mut() {
                h.status = corral_proto::HealthStatus::Unknown;
            }
        });
        match decision {
            None | Some(Decision::Stop) => {}
            Some(Decision::Errored { unstable }) => {
                let script = self.info().map(|i| i.app.script).unwrap_or_default();
                dlog::log(&format!(
                    "Script {script} had too many unstable restarts ({unstable}). Stopped. \"errored\""
                ));
                self.set_status(Status::Errored);
                self.publish("restart overlimit");
            }
            Some(Decision::Restart { delay_ms, waiting }) => {
                if waiting {
                    self.set_status(Status::WaitingRestart);
                    dlog::log(&format!("App [{label}] will restart in {delay_ms}ms"));
                }
                self.restart_at = Some(Instant::now() + Duration::from_millis(delay_ms));
            }
        }
    }

    /// Rolling replacement of one cluster worker: start the new
    /// worker under the same pm_id, wait until it listens (or sends `ready`
    /// with wait_ready, or speaks Socket.IO), stop routing new connections to
    /// the old one, and retire the old one in the background. A replacement
    /// that dies before it is ready leaves the old worker serving.
    async fn reload_cluster(&mut self, update: Option<Box<AppSpec>>) -> Result<(), DaemonError> {
        let Some(old) = self.run.take() else { return Ok(()) };
        self.shared.with_entry(self.id, |e| manual_restart(e, update));
        let Some(info) = self.info() else { return Ok(()) };
        let app = info.app.clone();
        let label = format!("{}:{}", app.name, self.id);
        self.launch();
        let Some(mut new) = self.run.take() else {
            // The old worker keeps serving: no retry of the replacement's
            // spawn is scheduled behind its back.
            self.restart_at = None;
            self.spawn_failures = 0;
            // The failed launch cleared the pid: it is the old worker's again.
            let old_pid = old.pid;
            self.run = Some(old);
            self.shared.with_entry(self.id, |e| {
                e.info.pid = old_pid as u32;
                e.info.status = Status::Online;
            });
            return Err(DaemonError::ReloadFailed(format!(
                "the replacement of app [{label}] failed to start"
            )));
        };
        // An app whose health checks gate readiness: the new worker must be
        // ready (its checks, not only `listening`) within its budget, or the
        // reload fails and the old worker keeps serving.
        let strict = gated(&app);
        self.health_deadline = None;
        let budget = match &app.health {
            Some(h) if strict => h.ready_budget_ms(app.listen_timeout),
            _ => app.listen_timeout,
        };
        let deadline = Instant::now() + Duration::from_millis(budget);
        loop {
            tokio::select! {
                ev = new.events.recv() => match ev {
                    Some(WorkerEvent::Ready) if strict => {
                        if app.wait_ready {
                            if let Some(h) = new.health.as_mut() {
                                let out = h.signal();
                                self.shared.with_entry(self.id, |e| e.info.health = Some(h.machine().info().clone()));
                                if out.ready_changed == Some(true) {
                                    break;
                                }
                            }
                        }
                    }
                    Some(WorkerEvent::Ready) => break,
                    Some(WorkerEvent::Listening | WorkerEvent::Serving) if strict => {}
                    Some(WorkerEvent::Listening | WorkerEvent::Serving) if !app.wait_ready => break,
                    Some(WorkerEvent::NodeVersion(v)) => {
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
                ev = next_health(&mut new.health) => {
                    let Some(h) = new.health.as_mut() else { continue };
                    let out = h.apply(ev, now_ms());
                    let hinfo = h.machine().info().clone();
                    self.shared.with_entry(self.id, |e| e.info.health = Some(hinfo));
                    if let Some(why) = out.restart {
                        let msg = format!(
                            "reload of app [{label}] failed: the new worker's {why}; the old worker keeps serving"
                        );
                        return self.reload_not_ready(old, new, app, info.pm_uptime, msg);
                    }
                    if out.ready_changed == Some(true) {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if strict {
                        let last = new
                            .health
                            .as_ref()
                            .and_then(|h| h.machine().last_detail())
                            .map(|d| format!(" (last {d})"))
                            .unwrap_or_default();
                        let msg = format!(
                            "reload of app [{label}] failed: the new worker was not ready within {budget}ms{last}; \
                             it was stopped and the old worker keeps serving"
                        );
                        return self.reload_not_ready(old, new, app, info.pm_uptime, msg);
                    }
                    dlog::log(&format!("App [{label}] did not listen within {}ms, reloading anyway", app.listen_timeout));
                    break;
                }
                // Urgent controls do not wait for listen_timeout: a signal
                // goes to the worker serving now (the old one), a stop or
                // delete abandons the reload and then runs; the rest wait
                // for the reload's end.
                Some(ctl) = self.ctl_rx.recv() => match ctl {
                    Ctl::Signal { sig, done } => {
                        let r = if proctree::signal(old.pid, sig) {
                            Ok(())
                        } else {
                            Err(DaemonError::SignalFailed(old.pid))
                        };
                        let _ = done.send(r);
                    }
                    c @ (Ctl::Stop { .. } | Ctl::Delete { .. }) => {
                        self.deferred.push_front(c);
                        return self.reload_abandoned(old, new, app, &label);
                    }
                    c => self.deferred.push_back(c),
                },
            }
        }
        if let (Some(wid), Some(h)) = (new.wid, new.health.as_ref()) {
            self.host.set_ready(wid, h.is_ready());
            if h.is_ready() {
                self.publish("ready");
            }
        }
        self.run = Some(new);
        self.shared.with_entry(self.id, |e| e.info.restart_time += 1);
        self.set_online();
        if let Some(wid) = old.wid {
            self.host.drain(wid, true);
        }
        let mut old = old;
        if let Some(h) = old.health.as_mut() {
            h.stop_probes();
        }
        tokio::spawn(retire(self.host.clone(), old, app, label, self.shared.config.kill_signal));
        self.publish("reload");
        Ok(())
    }

    /// The new worker of a reload never became ready (or its startup probe
    /// failed): it is stopped, the old worker is the process again.
    fn reload_not_ready(
        &mut self,
        old: Running,
        mut new: Running,
        app: AppSpec,
        old_uptime: u64,
        msg: String,
    ) -> Result<(), DaemonError> {
        self.ready_deadline = None;
        if let Some(h) = new.health.as_mut() {
            h.stop_probes();
        }
        if let Some(wid) = new.wid {
            self.host.drain(wid, true);
        }
        let label = format!("{}:{}", app.name, self.id);
        tokio::spawn(retire(self.host.clone(), new, app, label, self.shared.config.kill_signal));
        let old_pid = old.pid;
        let old_health = old.health.as_ref().map(|h| h.machine().info().clone());
        self.run = Some(old);
        self.shared.with_entry(self.id, |e| {
            e.info.pid = old_pid as u32;
            e.info.pm_uptime = old_uptime;
            e.info.status = Status::Online;
            e.info.health = old_health;
        });
        dlog::error(&msg);
        self.publish("reload failed");
        Err(DaemonError::ReloadFailed(msg))
    }

    /// Publishes the current run's health to the table.
    fn record_health(&self) {
        let info = self.run.as_ref().and_then(|r| r.health.as_ref()).map(|h| h.machine().info().clone());
        if info.is_some() {
            self.shared.with_entry(self.id, |e| e.info.health = info);
        }
    }

    /// The current run turned ready or not ready: routing follows, the
    /// event bus and pm2.log say so, a restart waiting for it is answered.
    fn ready_changed(&mut self, changed: Option<bool>) {
        let Some(ready) = changed else { return };
        let Some(run) = self.run.as_ref() else { return };
        if let Some(wid) = run.wid {
            self.host.set_ready(wid, ready);
        }
        let label = self.label();
        if ready {
            dlog::log(&format!("App [{label}] ready"));
            self.publish("ready");
            self.health_deadline = None;
            for d in self.pending_ready.drain(..) {
                let _ = d.send(Ok(()));
            }
        } else {
            let why = run.health.as_ref().and_then(|h| h.machine().last_detail()).unwrap_or_default();
            dlog::log(&format!("App [{label}] not ready ({why}): no new connections"));
            self.publish("unready");
        }
    }

    /// A probe result, a notification or a missed watchdog for the current run.
    async fn on_health(&mut self, ev: health::Event) {
        let Some(h) = self.run.as_mut().and_then(|r| r.health.as_mut()) else { return };
        let out = h.apply(ev, now_ms());
        self.record_health();
        self.ready_changed(out.ready_changed);
        if let Some(why) = out.restart {
            self.health_restart(&why).await;
        }
    }

    /// `wait_ready`'s `listen_timeout` passed: pm2 counts the app as started.
    async fn wait_ready_signal(&mut self) {
        let wait_ready = self.info().is_some_and(|i| i.app.wait_ready);
        let out = match self.run.as_mut().and_then(|r| r.health.as_mut()) {
            Some(h) if wait_ready && !h.machine().is_ready() => h.signal(),
            _ => return,
        };
        self.record_health();
        self.ready_changed(out.ready_changed);
    }

    /// A restart waiting for readiness gave up: the process keeps running.
    fn not_ready_in_time(&mut self) {
        let label = self.label();
        let last = self
            .run
            .as_ref()
            .and_then(|r| r.health.as_ref())
            .and_then(|h| h.machine().last_detail())
            .map(|d| format!(" (last {d})"))
            .unwrap_or_default();
        let msg = format!("App [{label}] is running but not ready yet{last}");
        if !self.pending_ready.is_empty() {
            dlog::log(&msg);
        }
        for d in self.pending_ready.drain(..) {
            let _ = d.send(Err(DaemonError::NotReady(msg.clone())));
        }
    }

    /// A liveness (or startup, or watchdog) failure past its threshold:
    /// restart the process, counted in restart_time like pm2's restarts and
    /// paced by the restart policy like a crash (`policy::on_health_failure`).
    async fn health_restart(&mut self, why: &str) {
        let label = self.label();
        dlog::log(&format!("App [{label}] {why}: restarting"));
        if self.run.is_some() {
            self.stop_with(true).await;
        }
        let now = now_ms();
        let decision = self.shared.with_entry(self.id, |e| {
            let mut counters = policy::Counters::of(&e.info);
            let d = policy::on_health_failure(&e.info.app, &mut counters, now);
            counters.store(&mut e.info);
            d
        });
        match decision {
            None => {}
            Some(Decision::Errored { unstable }) => {
                dlog::log(&format!(
                    "App [{label}] failed its health check after too many unstable restarts ({unstable}). Stopped. \"errored\""
                ));
                self.set_status(Status::Errored);
                self.publish("restart overlimit");
            }
            Some(Decision::Restart { delay_ms, waiting: true }) => {
                self.set_status(Status::WaitingRestart);
                dlog::log(&format!("App [{label}] will restart in {delay_ms}ms"));
                self.restart_at = Some(Instant::now() + Duration::from_millis(delay_ms));
            }
            Some(_) => {
                self.shared.with_entry(self.id, |e| e.info.restart_time += 1);
                self.launch();
                self.publish("restart");
            }
        }
    }

    /// A stop or delete arrived while the replacement was not ready yet:
    /// the replacement is retired (gracefully, it may hold connections
    /// already) and the old worker is the process again, for the stop.
    fn reload_abandoned(
        &mut self,
        old: Running,
        new: Running,
        app: AppSpec,
        label: &str,
    ) -> Result<(), DaemonError> {
        self.ready_deadline = None;
        if let Some(wid) = new.wid {
            self.host.drain(wid, true);
        }
        tokio::spawn(retire(self.host.clone(), new, app, label.to_string(), self.shared.config.kill_signal));
        let old_pid = old.pid;
        self.run = Some(old);
        self.shared.with_entry(self.id, |e| {
            e.info.pid = old_pid as u32;
            e.info.status = Status::Online;
        });
        let msg =
            format!("reload of app [{label}] abandoned: a stop arrived before the new worker was ready");
        dlog::log(&msg);
        Err(DaemonError::ReloadFailed(msg))
    }

    fn reload_failed(
        &mut self,
        old: Running,
        new: Running,
        st: Option<std::process::ExitStatus>,
        label: &str,
    ) -> Result<(), DaemonError> {
        let (code, signal) = exit_parts(st);
        // The replacement's launch armed the online timer; the old worker
        // must not be announced online again when it fires.
        self.ready_deadline = None;
        if let Some(wid) = new.wid {
            self.host.detach(wid, true);
        }
        let old_pid = old.pid;
        self.run = Some(old);
        self.shared.with_entry(self.id, |e| {
            e.info.pid = old_pid as u32;
            e.info.status = Status::Online;
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
        Err(DaemonError::ReloadFailed(msg))
    }

    /// pm2's stop sequence. Leaves the process `stopped`, or
    /// `errored` if it survived SIGKILL.
    async fn stop(&mut self) {
        self.stop_with(false).await
    }

    /// `linger`: a replacement follows (restart), so the app's listeners
    /// keep queueing connections meanwhile instead of closing.
    async fn stop_with(&mut self, linger: bool) {
        self.ready_deadline = None;
        self.health_deadline = None;
        let label = self.label();
        for d in self.pending_ready.drain(..) {
            let _ =
                d.send(Err(DaemonError::NotReady(format!("App [{label}] was stopped before it was ready"))));
        }
        let Some(mut run) = self.run.take() else {
            let st = self.info().map(|i| i.status).unwrap_or_default();
            if st != Status::Errored || self.restart_at.is_some() {
                self.set_status(Status::Stopped);
            }
            self.restart_at = None;
            return;
        };
        let Some(info) = self.info() else { return };
        let app = &info.app;
        let label = format!("{}:{}", app.name, self.id);
        self.set_status(Status::Stopping);
        dlog::log(&format!("Stopping app:{} id:{}", app.name, self.id));
        if let Some(wid) = run.wid {
            self.host.drain(wid, linger);
        }
        let known = proctree::descendants(run.pid);
        let by_message = (app.shutdown_with_message || self.shared.config.kill_use_message)
            && run.wid.is_some_and(|wid| self.host.ask_exit(wid, ExitRequest::Shutdown));
        let first = (!by_message).then_some((self.shared.config.kill_signal, app.treekill));
        let grace = Duration::from_millis(app.kill_timeout);
        let deadline = Instant::now() + grace;
        let status =
            ladder::escalate(&mut Tree { run: &mut run, known: &known }, &[first], grace, Some(grace)).await;
        if status.is_none() {
            dlog::error(&format!("Process with pid {} could not be killed", run.pid));
            self.shared.with_entry(self.id, |e| e.info.status = Status::Errored);
            self.run = Some(run);
            return;
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
            self.host.detach(wid, linger);
        }
        self.shared.with_entry(self.id, |e| {
            e.info.pid = 0;
            e.info.status = Status::Stopped;
            e.info.exit_code = code.or(Some(0));
            if let Some(h) = e.info.health.as_mut() {
                h.status = corral_proto::HealthStatus::Unknown;
            }
        });
        self.publish("stop");
    }
}

/// Stops a worker that a reload replaced (or a replacement a stop
/// abandoned), gracefully: it is already drained (no new connections), so
/// its open clients may finish first if its host says so, then it is asked
/// to close its servers and exit when idle (`disconnect`, or the
/// `'shutdown'` message), then gets `kill_signal`, then SIGKILL, each after
/// kill_timeout.
async fn retire(host: Arc<dyn WorkerHost>, old: Running, app: AppSpec, label: String, kill_signal: i32) {
    use std::sync::atomic::Ordering;
    RETIRING.fetch_add(1, Ordering::AcqRel);
    retire_inner(host, old, app, label, kill_signal).await;
    RETIRING.fetch_sub(1, Ordering::AcqRel);
}

async fn retire_inner(
    host: Arc<dyn WorkerHost>,
    mut old: Running,
    app: AppSpec,
    label: String,
    kill_signal: i32,
) {
    let grace = Duration::from_millis(app.kill_timeout);
    let plan = old.wid.map(|wid| host.retirement(wid));
    if let (Some(limit), Some(wid)) = (plan.and_then(|p| p.finish_within), old.wid) {
        // Its open clients finish on it, bounded by the host's limit; only
        // the rest are cut.
        let deadline = Instant::now() + limit;
        while host.open_clients(wid) > 0 && Instant::now() < deadline {
            tokio::select! {
                _ = old.child.wait() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
    // A worker listening on SO_REUSEPORT sockets of its own (Bun) leaves the
    // port's group before anything else, so no new connection lands on it.
    let stopped =
        crate::runtimes::listens_itself(&app).then(|| stop_own_listeners(old.pid, &label)).flatten();
    let asked = match (old.wid, plan) {
        (Some(wid), _) if app.shutdown_with_message => host.ask_exit(wid, ExitRequest::Shutdown),
        (Some(wid), Some(p)) if p.disconnect => host.ask_exit(wid, ExitRequest::Disconnect),
        _ => false,
    };
    let kill = Some((kill_signal, app.treekill));
    let (asked_then_kill, kill_only) = ([None, kill], [kill]);
    let mut rungs: &[Option<(i32, bool)>] = if asked { &asked_then_kill } else { &kill_only };
    let mut exited = None;
    if let Some(s) = stopped.as_ref().filter(|_| !app.shutdown_with_message) {
        // `disconnect` does not close a Bun worker's servers: once the
        // connections it accepted are answered (or kill_timeout passed) it
        // gets the kill signal, as pm2 sends it at once.
        exited = answered(&mut old, s, grace).await;
        rungs = &kill_only;
    }
    let status = match exited {
        Some(st) => st,
        None => ladder::escalate(&mut Tree { run: &mut old, known: &[] }, rungs, grace, None).await,
    };
    if let Some(wid) = old.wid {
        host.detach(wid, true);
    }
    let (code, signal) = exit_parts(status);
    dlog::log(&format!(
        "App [{label}] (replaced by reload) exited with code [{}] via signal [{}]",
        code.map(|c| c.to_string()).unwrap_or_else(|| "0".into()),
        signal.unwrap_or_else(|| "SIGINT".into())
    ));
}

/// Takes a retiring worker's own reuseport listeners out of their groups
/// (`reuseport`); `None` when it had none or they could not be reached
/// (then its exit closes them, as before).
fn stop_own_listeners(pid: i32, label: &str) -> Option<crate::reuseport::Stopped> {
    match crate::reuseport::stop_listeners(pid) {
        Ok(s) if s.ports.is_empty() => None,
        Ok(s) => Some(s),
        Err(e) => {
            static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                dlog::log(&format!(
                    "App [{label}]: cannot stop the retiring worker's listeners before it exits ({e}); \
                     connections it accepted may be reset when it exits"
                ));
            }
            None
        }
    }
}

/// Waits until the retiring worker answered the connections it had
/// accepted when its listeners stopped, or exited (`Some(status)`), at most
/// `grace`.
async fn answered(
    run: &mut Running,
    s: &crate::reuseport::Stopped,
    grace: Duration,
) -> Option<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + grace;
    while s.open_connections() > 0 && Instant::now() < deadline {
        tokio::select! {
            st = run.child.wait() => return Some(st.ok()),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    None
}

/// A running child and the descendants it had when its stop began, for
/// the ladder.
struct Tree<'a> {
    run: &'a mut Running,
    known: &'a [i32],
}

impl ladder::Child for Tree<'_> {
    async fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.run.child.wait().await.ok()
    }
    fn signal(&mut self, sig: i32, tree: bool) {
        proctree::signal_tree(self.run.pid, sig, tree, self.known);
    }
    fn pid(&self) -> i32 {
        self.run.pid
    }
}

/// The app's health checks decide when a new run is ready.
fn gated(app: &AppSpec) -> bool {
    app.health.as_ref().is_some_and(|h| h.gates_readiness())
}

/// What a manual restart/reload does to the counters (pm2's
/// `restartProcessId`): a fresh unstable window and no backoff; `update`
/// replaces the stored spec.
fn manual_restart(e: &mut Entry, update: Option<Box<AppSpec>>) {
    if let Some(app) = update {
        e.info.app = *app;
    }
    let now = now_ms();
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

fn exit_parts(st: Option<std::process::ExitStatus>) -> (Option<i32>, Option<String>) {
    use std::os::unix::process::ExitStatusExt;
    match st {
        Some(s) => (s.code(), s.signal().map(proctree::signal_name)),
        None => (None, None),
    }
}
