//! The process table shared by the RPC server and the per-process tasks.
//!
//! Architecture invariant: the table is only ever locked for short,
//! non-blocking updates; no lock is held across an `.await`. Each process's
//! life cycle is owned by its own task ([`crate::process`]); everyone else
//! talks to it through its control queue.

use crate::paths::Home;
use crate::policy::Counters;
use crate::process::Ctl;
use corral_proto::{Event, ProcInfo};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, mpsc};

pub struct Entry {
    pub info: ProcInfo,
    pub counters: Counters,
    pub ctl: mpsc::UnboundedSender<Ctl>,
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
}

impl Entry {
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
    pub table: Mutex<Table>,
    pub bus: broadcast::Sender<Event>,
    /// Set once shutdown starts: exits are then final, no auto-restart.
    pub shutting_down: std::sync::atomic::AtomicBool,
    pub nproc: usize,
    /// The daemon's own environment at start (cluster workers inherit it,
    /// as with pm2).
    pub daemon_env: BTreeMap<String, String>,
    pub username: String,
    pub node_version: Mutex<Option<String>>,
    /// Cluster primary and Socket.IO state (listeners, workers, routers).
    pub cluster: Mutex<crate::cluster::Registry>,
    /// `PM2_PORT`: the default sticky balancer port.
    pub pm2_port: u16,
    /// `PM2_STICKY_HOST`: the sticky balancer's bind address (all
    /// interfaces, dual stack, by default as pm2).
    pub sticky_host: Option<String>,
    /// Sticky ports bound so far (port -> bind error, if binding failed).
    pub sticky_ports: Mutex<BTreeMap<u16, Option<String>>>,
}

pub type SharedRef = Arc<Shared>;

impl Shared {
    pub fn new(home: Home) -> SharedRef {
        let (bus, _) = broadcast::channel(1024);
        let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Arc::new(Shared {
            home,
            table: Mutex::new(Table::default()),
            bus,
            shutting_down: Default::default(),
            nproc,
            daemon_env: std::env::vars().collect(),
            username: current_username(),
            node_version: Mutex::new(None),
            cluster: Mutex::new(Default::default()),
            pm2_port: std::env::var("PM2_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8080),
            sticky_host: std::env::var("PM2_STICKY_HOST").ok().filter(|h| !h.is_empty()),
            sticky_ports: Mutex::new(BTreeMap::new()),
        })
    }

    /// Locks the table. A poisoned lock (a panic elsewhere while holding it)
    /// must not take the daemon down: the data is still consistent at every
    /// statement boundary we release it on, so we keep using it.
    pub fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn cluster(&self) -> MutexGuard<'_, crate::cluster::Registry> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
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

fn current_username() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy
    // the name out at once on this single thread.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return std::env::var("USER").unwrap_or_else(|_| "root".into());
        }
        std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
    }
}
