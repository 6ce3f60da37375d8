//! The Corral daemon: supervisor, cluster primary, sticky balancer, relay.
//!
//! Signal contract (pm2's): SIGTERM, SIGINT and SIGQUIT dump the
//! process list (when there is at least one app), stop every process and
//! exit 0; SIGUSR2 updates the daemon in place ([`upgrade`]) and reopens every
//! log file (`reloadLogs`); SIGHUP is ignored.

pub mod activation;
pub mod balancer;
pub mod cluster;
pub mod cron;
pub mod dlog;
pub mod error;
pub mod health;
pub mod inspector;
pub mod logfile;
pub mod logrotate;
pub mod logs;
pub mod metrics;
pub mod monitor;
pub mod multihost;
pub mod paths;
pub mod persist;
pub mod pm2api;
pub mod policy;
pub mod portowner;
pub mod privileges;
pub mod proctree;
pub mod reuseport;
pub mod rotate;
pub mod runtimes;
pub mod server;
pub mod settings;
pub mod state;
pub mod sticky;
pub mod supervisor;
pub mod sysinfo;
pub mod timefmt;
pub mod trim;
pub mod upgrade;
pub mod watcher;

use anyhow::Context as _;
use corral_proto::Status;
use paths::Home;
use state::{Shared, SharedRef};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How the daemon was asked to run.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub pm2_home: PathBuf,
}

/// Runs the daemon until `pm2 kill` or a terminating signal. Blocks the
/// calling thread; returns when the daemon has stopped every process.
pub fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot create the daemon's runtime")?;
    rt.block_on(run_async(opts))
}

/// A daemon that balances thousands of connections needs more than the
/// usual 1024 descriptors: raise the soft limit to the hard one.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

pub async fn run_async(opts: DaemonOptions) -> anyhow::Result<()> {
    // An in-place upgrade handed this image a running daemon: detected
    // before anything else (and its variable removed before the
    // environment is read).
    let handover = match upgrade::take_handover() {
        None => None,
        Some(Ok(doc)) => Some(doc),
        Some(Err(e)) => upgrade::unreadable(e),
    };
    raise_fd_limit();
    // The one read of the environment.
    let config = settings::DaemonConfig::from_env();
    balancer::configure(&config);
    let mut home = Home::new(opts.pm2_home);
    home.dump_file = config.dump_file.clone();
    home.ensure().with_context(|| format!("PM2_HOME {} is not writable", home.root.display()))?;
    let sock = home.corral_sock();
    // A live daemon on Corral's socket, or pm2's own daemon on rpc.sock,
    // owns this home; files nobody listens on are leftovers of a crash.
    // (After an in-place upgrade the live daemon is this process.)
    for s in [sock.clone(), home.rpc_sock(), home.pub_sock()].into_iter().filter(|_| handover.is_none()) {
        if s.exists() {
            if UnixStream::connect(&s).await.is_ok() {
                anyhow::bail!(
                    "a daemon is already running for PM2_HOME {} ({} answers)",
                    home.root.display(),
                    s.display()
                );
            }
            std::fs::remove_file(&s)
                .with_context(|| format!("cannot remove stale socket {}", s.display()))?;
        }
    }
    // pm2's sockets first: once the CLI sees corral.sock, pm2's clients can
    // connect too.
    let (pm2_listeners, listener) = match &handover {
        Some(doc) => (
            pm2api::Listeners { rpc: adopt_unix(doc.rpc_fd)?, pubsub: adopt_unix(doc.pub_fd)? },
            adopt_unix(doc.control_fd)?,
        ),
        None => (
            pm2api::bind(&home.rpc_sock(), &home.pub_sock()).with_context(|| {
                format!("cannot bind {} and {}", home.rpc_sock().display(), home.pub_sock().display())
            })?,
            pm2api::bind_private(&sock).with_context(|| format!("cannot bind {}", sock.display()))?,
        ),
    };
    {
        use std::os::fd::AsRawFd;
        upgrade::remember_start(
            handover.as_ref().map(|d| d.start_path.clone()).filter(|p| !p.is_empty()),
            [listener.as_raw_fd(), pm2_listeners.rpc.as_raw_fd(), pm2_listeners.pubsub.as_raw_fd()],
        );
    }
    let pid_file = home.pid_file();
    std::fs::write(&pid_file, std::process::id().to_string())
        .with_context(|| format!("cannot write {}", pid_file.display()))?;

    let shared = Shared::new(home.clone(), config);
    let weak = std::sync::Arc::downgrade(&shared);
    shared.cluster.set_sticky_port_server(Box::new(move |port| {
        if let Some(shared) = weak.upgrade() {
            let _ = balancer::ensure_listening(&shared, port);
        }
    }));
    let weak = std::sync::Arc::downgrade(&shared);
    shared.cluster.set_app_message_sink(Box::new(move |pm_id, pid, msg| {
        if let Some(shared) = weak.upgrade() {
            pm2api::bus::worker_message(&shared, pm_id, pid, msg);
        }
    }));
    dlog::attach_bus(shared.bus.clone());
    banner(&shared);
    let mut adopted = handover.map(|doc| upgrade::adopt(&shared, doc));
    start_bridge(&shared, adopted.as_mut().and_then(|a| a.bridge.take()));
    if adopted.is_some() {
        shared.cluster.announce_sessions();
    }
    metrics::start(&shared).await;
    tokio::spawn(worker_tick(shared.clone()));
    // What start-up touched is given back once the daemon has been quiet
    // for two seconds, and again after every later burst of commands.
    tokio::spawn(trim::run(std::time::Duration::from_secs(2)));
    trim::activity();
    {
        let (a, b) = (shared.clone(), shared.clone());
        tokio::spawn(logrotate::run(
            shared.home.root.clone(),
            shared.home.daemon_log(),
            move || a.table().procs.values().any(|e| e.info.app.name == rotate::MODULE),
            move || {
                // `rotateInterval` fired: every non-empty app log rotates.
                let files: Vec<_> = b.table().procs.values().filter_map(|e| e.files.clone()).collect();
                logrotate::with_forcing(|| {
                    for f in files {
                        if let Ok(mut f) = f.lock() {
                            f.force_rotate();
                        }
                    }
                })
            },
        ));
    }
    if std::process::id() == 1 {
        tokio::spawn(reap_orphans());
    }

    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    let server = tokio::spawn(server::serve(shared.clone(), listener, shutdown_tx.clone()));
    let pm2_server = tokio::spawn(pm2api::serve(shared.clone(), pm2_listeners, shutdown_tx.clone()));
    if let Some(a) = adopted {
        tokio::spawn(server::answer_update(shared.clone(), a, shutdown_tx.clone()));
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { on_terminate(&shared).await; break; }
            _ = int.recv() => { on_terminate(&shared).await; break; }
            _ = quit.recv() => { on_terminate(&shared).await; break; }
            // pm2's SIGUSR2 reopens the log files; Corral's updates the
            // daemon in place, which reopens them too (a refused update
            // still reopens them).
            _ = usr2.recv() => {
                let why = upgrade::upgrade(&shared, None, None).await;
                dlog::error(&format!("SIGUSR2: {why}"));
                server::reload_logs(&shared);
            }
            _ = hup.recv() => {}
            _ = shutdown_rx.changed() => break,
        }
    }
    // Announced already when the kill came from a client; a signal gets it here.
    pm2api::announce_kill();
    let _ = shutdown_tx.send(true);
    let _ = server.await;
    let _ = pm2_server.await;
    for s in [&sock, &home.rpc_sock(), &home.pub_sock(), &home.notify_sock()] {
        let _ = std::fs::remove_file(s);
    }
    let _ = std::fs::remove_file(&pid_file);
    dlog::log("PM2 successfully stopped");
    Ok(())
}

/// Joins the other nodes when `PM2_CLUSTER_REDIS` is set. A bad setting is logged and the
/// node runs alone: its apps must not go down because the cluster is misconfigured.
///
/// `resume`: the previous image's bridge (an in-place update). A node id made up at start
/// is kept: to the other nodes it is the same node.
fn start_bridge(shared: &SharedRef, resume: Option<multihost::Resume>) {
    let previous_id = resume.as_ref().map(|r| r.node_id.clone()).filter(|id| !id.is_empty());
    let cfg = multihost::config::from_env(
        |k| shared.config.env.get(k).cloned(),
        || {
            previous_id
                .unwrap_or_else(|| multihost::config::default_node_id(&hostname(), multihost::random_u32()))
        },
    );
    match cfg {
        Ok(None) => {}
        Ok(Some(cfg)) => {
            let local =
                std::sync::Arc::new(cluster::RemoteFrames::new(std::sync::Arc::downgrade(&shared.cluster)));
            match multihost::Bridge::start(cfg, local, resume) {
                Ok(bridge) => shared.cluster.reg().bridge = Some(bridge),
                Err(e) => dlog::error(&format!("Cluster: {e}; this node runs alone")),
            }
        }
        Err(e) => dlog::error(&format!("Cluster: {e}; this node runs alone")),
    }
}

/// A control socket handed over by the image before an in-place upgrade.
fn adopt_unix(fd: std::os::fd::RawFd) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::fd::FromRawFd;
    // SAFETY: the handover names this descriptor as a listening unix socket
    // the previous image owned; nothing else in this image owns it.
    let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    l.set_nonblocking(true).context("handed-over control socket")?;
    tokio::net::UnixListener::from_std(l).context("handed-over control socket")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

async fn on_terminate(shared: &SharedRef) {
    dlog::log("pm2 has been killed by signal, dumping process list before exit...");
    server::shutdown_all(shared, true).await;
}

fn banner(shared: &SharedRef) {
    let h = &shared.home;
    dlog::log("===============================================================================");
    dlog::log("--- New PM2 Daemon started ----------------------------------------------------");
    dlog::log(&format!(
        "Time                 : {}",
        timefmt::format_local(timefmt::now_ms(), "YYYY-MM-DDTHH:mm:ss.SSSZ")
    ));
    dlog::log(&format!("PM2 version          : {} (corral)", corral_proto::CORRAL_VERSION));
    dlog::log(&format!("Process ID           : {}", std::process::id()));
    dlog::log(&format!("PM2 home             : {}", h.root.display()));
    dlog::log(&format!("PM2 PID file         : {}", h.pid_file().display()));
    dlog::log(&format!("RPC socket file      : {}", h.rpc_sock().display()));
    dlog::log(&format!("BUS socket file      : {}", h.pub_sock().display()));
    dlog::log(&format!("Corral socket file   : {}", h.corral_sock().display()));
    dlog::log(&format!("Application log path : {}", h.logs().display()));
    dlog::log(&format!("Process dump file    : {}", h.dump().display()));
    dlog::log("===============================================================================");
}

/// As PID 1 (`pm2-runtime` in a container) every orphaned grandchild becomes
/// our child. tokio reaps only the children it spawned, so the others would
/// stay zombies. A zombie still there on two scans a second apart is not one
/// tokio is about to reap: reap it by pid (never `waitpid(-1)`, which would
/// steal our own children's exit statuses).
async fn reap_orphans() {
    let me = std::process::id() as i32;
    let mut seen: Vec<i32> = Vec::new();
    let mut iv = tokio::time::interval(Duration::from_secs(1));
    loop {
        iv.tick().await;
        let zombies = proctree::zombie_children(me);
        for &z in zombies.iter().filter(|z| seen.contains(z)) {
            let mut status = 0;
            // SAFETY: waitpid on a specific pid with WNOHANG writes only status.
            unsafe { libc::waitpid(z, &mut status, libc::WNOHANG) };
        }
        seen = zombies;
    }
}

/// pm2's periodic worker: memory limit and backoff reset.
async fn worker_tick(shared: SharedRef) {
    let reset_after = shared.config.backoff_reset_ms;
    let mut iv = tokio::time::interval(shared.config.worker_interval);
    iv.tick().await;
    loop {
        iv.tick().await;
        let now = timefmt::now_ms();
        let mut over = Vec::new();
        {
            let mut t = shared.table();
            monitor::refresh(&mut t);
            for e in t.procs.values_mut() {
                if e.info.status != Status::Online {
                    continue;
                }
                if e.info.prev_restart_delay.is_some() && now.saturating_sub(e.info.pm_uptime) > reset_after {
                    dlog::log(&format!(
                        "[PM2][WORKER] Reset the restart delay, as app {} has been up for more than {reset_after}ms",
                        e.info.app.name
                    ));
                    drop(e.handle.reset_backoff());
                }
                if let Some(limit) = e.info.app.max_memory_restart {
                    if e.info.memory > limit {
                        dlog::log(&format!(
                            "[PM2][WORKER] Process {} restarted because it exceeds --max-memory-restart value (current_memory={} max_memory_limit={} [octets])",
                            e.info.pm_id, e.info.memory, limit
                        ));
                        over.push(e.handle.clone());
                    }
                }
            }
        }
        for h in over {
            drop(h.reload(None));
        }
    }
}
