//! The process table shared by the RPC server and the per-process tasks.
//!
//! Architecture invariant: the table is only ever locked for short,
//! non-blocking updates; no lock is held across an `.await`. Each process's
//! life cycle is owned by its own actor ([`crate::supervisor`]); everyone
//! else talks to it through its [`ProcessHandle`].

use crate::paths::Home;
use crate::settings::DaemonConfig;
use crate::supervisor::handle::ProcessHandle;
use corral_proto::{Event, ProcInfo};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

pub struct Entry {
    pub info: ProcInfo,
    pub handle: ProcessHandle,
    /// Last CPU sample `(ticks, ms)` for the cpu% of `list`.
    pub cpu_sample: Option<(u64, u64)>,
    /// Open log files of the current run, reopened by `reloadLogs`.
    pub files: Option<Arc<Mutex<crate::logs::LogFiles>>>,
    /// Write end of a fork-mode process's stdin (non-blocking), for
    /// `pm2 send` / `pm2 attach`.
    pub stdin: Option<Arc<std::fs::File>>,
    /// Bumped by every change to `info` except the monit sample (`touch`).
    pub rev: u64,
    /// `pm2_env` of this process as JSON, at revision `.0`.
    pub jlist_cache: Option<(u64, String)>,
    /// What its actor records of the current run for an in-place upgrade.
    pub live: Live,
}

/// Written only by the process's actor: the descriptors and timer of its
/// current run that an in-place upgrade hands to the next image.
#[derive(Debug, Default, Clone)]
pub struct Live {
    /// Worker id of its channel.
    pub wid: Option<u32>,
    /// Read ends of its stdout and stderr pipes (owned by the log pumps).
    pub out_fd: Option<std::os::fd::RawFd>,
    pub err_fd: Option<std::os::fd::RawFd>,
    /// A crash restart is due at this time (ms since the epoch).
    pub restart_at_ms: Option<u64>,
    /// The actor is in the middle of a stop or a reload: no quiet point.
    pub busy: bool,
}

impl Entry {
    /// A process's entry before its first run (or as adopted from the image
    /// before an in-place update): nothing open yet.
    pub fn new(info: ProcInfo, handle: ProcessHandle) -> Entry {
        Entry {
            info,
            handle,
            cpu_sample: None,
            files: None,
            stdin: None,
            rev: 0,
            jlist_cache: None,
            live: Default::default(),
        }
    }

    /// Marks `info` changed (invalidates the rendered `pm2_env`).
    pub fn touch(&mut self) {
        self.rev = self.rev.wrapping_add(1);
    }
}

#[derive(Default)]
pub struct Table {
    pub procs: BTreeMap<u32, Entry>,
    pub next_id: u32,
}

impl Table {
    pub fn alloc_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Lowest instance index not used by another process of that name
    /// (pm2's `NODE_APP_INSTANCE` rule).
    pub fn free_instance(&self, name: &str) -> u32 {
        let used: Vec<u32> =
            self.procs.values().filter(|e| e.info.app.name == name).map(|e| e.info.instance).collect();
        (0..).find(|i| !used.contains(i)).unwrap_or(0)
    }

    pub fn remove(&mut self, id: u32) {
        self.procs.remove(&id);
        if self.procs.is_empty() {
            self.next_id = 0;
        }
    }
}

pub struct Shared {
    pub home: Home,
    /// Read once from the environment at start.
    pub config: DaemonConfig,
    pub table: Mutex<Table>,
    pub bus: broadcast::Sender<Event>,
    /// Set once shutdown starts: exits are then final, no auto-restart.
    pub shutting_down: std::sync::atomic::AtomicBool,
    pub nproc: usize,
    pub username: String,
    /// The cluster primary: listeners, workers, Socket.IO routers; the
    /// host of every worker channel.
    pub cluster: Arc<crate::cluster::Primary>,
    /// Sticky ports bound so far (port -> bind error, if binding failed).
    pub sticky_ports: Mutex<BTreeMap<u16, Option<String>>>,
    /// `NOTIFY_SOCKET` (sd_notify) of apps with health checks; bound on
    /// first use.
    pub notify: Arc<crate::health::NotifyHub>,
    /// Sockets bound for apps' `listen_fds` (socket activation).
    pub activation: crate::activation::Sockets,
}

pub type SharedRef = Arc<Shared>;

impl Shared {
    pub fn new(home: Home, config: DaemonConfig) -> SharedRef {
        let (bus, _) = broadcast::channel(1024);
        let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let notify = crate::health::NotifyHub::new(home.notify_sock());
        Arc::new(Shared {
            home,
            table: Mutex::new(Table::default()),
            bus,
            shutting_down: Default::default(),
            nproc,
            username: current_username(&config.env),
            cluster: crate::cluster::Primary::new(config.pm2_port, config.graceful_timeout),
            sticky_ports: Mutex::new(BTreeMap::new()),
            notify,
            activation: Default::default(),
            config,
        })
    }

    /// Locks the table. A poisoned lock (a panic elsewhere while holding it)
    /// must not take the daemon down: the data is still consistent at every
    /// statement boundary we release it on, so we keep using it.
    pub fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn publish(&self, ev: Event) {
        if self.bus.receiver_count() > 0 {
            let _ = self.bus.send(ev);
        }
    }

    /// Updates a process's entry if it still exists.
    pub fn with_entry<R>(&self, id: u32, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        self.table().procs.get_mut(&id).map(|e| {
            e.touch();
            f(e)
        })
    }
}

/// `env`: the daemon's environment, for `USER` when the passwd entry is
/// missing.
fn current_username(env: &BTreeMap<String, String>) -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy
    // the name out at once on this single thread.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return env.get("USER").cloned().unwrap_or_else(|| "root".into());
        }
        std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
    }
}
