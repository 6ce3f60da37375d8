//! Health checks: startup, readiness and liveness probes and sd_notify.
//!
//! - [`machine`]: the pure state machine of one run (thresholds, phases,
//!   ready / unready / restart decisions), unit-tested without time or I/O.
//! - [`probe`]: the probe task of one run (HTTP, TCP, exec; schedule).
//! - [`notify`]: `NOTIFY_SOCKET` (one datagram socket for the daemon, bound
//!   on first use), the sender found by its kernel-given pid.
//!
//! [`HealthRun`] bundles them for one run; the process's supervisor actor
//! owns it, so the health state has one owner. The actor publishes
//! readiness changes to the cluster primary (routing) by calling
//! `WorkerHost::set_ready`, and nothing else writes them.

pub mod input;
pub mod machine;
pub mod notify;
pub mod probe;

pub use input::{Input, Notice};
pub use machine::{Kind, Machine, Outcome};
pub use notify::NotifyHub;

use corral_proto::HealthSpec;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Something for the actor to feed to [`HealthRun::apply`].
#[derive(Debug)]
pub enum Event {
    Input(Input),
    WatchdogMissed,
}

/// The health of one run of a process: its machine, its probe task and its
/// `NOTIFY_SOCKET` registration.
pub struct HealthRun {
    machine: Machine,
    rx: mpsc::UnboundedReceiver<Input>,
    probes: Option<probe::ProbeTask>,
    _notify: Option<notify::Registration>,
    /// `(interval, next deadline)` once the app has a watchdog.
    watchdog: Option<(Duration, Instant)>,
}

/// The environment a child with health checks gets on top of its own:
/// `NOTIFY_SOCKET` (binding the socket now if needed) and `WATCHDOG_USEC`.
pub fn child_env(spec: &HealthSpec, hub: &Arc<NotifyHub>, env: &mut BTreeMap<String, String>) {
    if !spec.offers_notify() {
        return;
    }
    match hub.ensure_bound() {
        Ok(()) => {
            env.insert("NOTIFY_SOCKET".into(), hub.path().to_string_lossy().into_owned());
            if let Some(ms) = spec.watchdog_ms {
                env.insert("WATCHDOG_USEC".into(), (ms.saturating_mul(1000)).to_string());
            }
        }
        Err(e) => crate::dlog::error(&format!("cannot bind {}: {e}", hub.path().display())),
    }
}

impl HealthRun {
    /// Starts the health of a run just spawned with `pid`. `expects_signal`:
    /// the app says when it is ready (`wait_ready` or `notify`).
    pub fn start(
        spec: &HealthSpec,
        expects_signal: bool,
        hub: &Arc<NotifyHub>,
        pid: i32,
        env: &BTreeMap<String, String>,
        cwd: &str,
        connect: Option<probe::Connector>,
    ) -> HealthRun {
        HealthRun::with_machine(spec, Machine::new(spec, expects_signal), hub, pid, env, cwd, connect)
    }

    /// Goes on with the health of a process adopted across an in-place
    /// update (`had`: its `pm2_env.health` then).
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        spec: &HealthSpec,
        expects_signal: bool,
        had: Option<&corral_proto::HealthInfo>,
        hub: &Arc<NotifyHub>,
        pid: i32,
        env: &BTreeMap<String, String>,
        cwd: &str,
        connect: Option<probe::Connector>,
    ) -> HealthRun {
        let machine = match had {
            Some(had) => Machine::resume(spec, expects_signal, had),
            None => Machine::new(spec, expects_signal),
        };
        HealthRun::with_machine(spec, machine, hub, pid, env, cwd, connect)
    }

    fn with_machine(
        spec: &HealthSpec,
        machine: Machine,
        hub: &Arc<NotifyHub>,
        pid: i32,
        env: &BTreeMap<String, String>,
        cwd: &str,
        connect: Option<probe::Connector>,
    ) -> HealthRun {
        let (tx, rx) = mpsc::unbounded_channel();
        let port = env.get("PORT").and_then(|p| p.trim().parse::<u16>().ok()).filter(|p| *p > 0);
        let target = probe::Target { port, cwd: cwd.to_string(), env: env.clone(), connect };
        let launched = Instant::now();
        let probes =
            spec.has_probes().then(|| probe::spawn(spec, target, launched, machine.probing(), tx.clone()));
        let notify = spec.offers_notify().then(|| hub.register(pid, tx.clone()));
        let watchdog = spec.watchdog_ms.map(|ms| {
            let d = Duration::from_millis(ms.max(1));
            (d, launched + d)
        });
        HealthRun { machine, rx, probes, _notify: notify, watchdog }
    }

    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    pub fn is_ready(&self) -> bool {
        self.machine.is_ready()
    }

    /// The next input or a missed watchdog; pending forever if none can come.
    pub async fn next(&mut self) -> Event {
        let wd = self.watchdog.map(|(_, at)| at);
        tokio::select! {
            Some(i) = self.rx.recv() => Event::Input(i),
            _ = async {
                match wd {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => Event::WatchdogMissed,
        }
    }

    /// Feeds an event to the machine; `at`: epoch ms.
    pub fn apply(&mut self, ev: Event, at: u64) -> Outcome {
        let was_probing = self.machine.probing();
        let out = match ev {
            Event::Input(Input::Probe { kind, ok, detail }) => self.machine.on_probe(kind, ok, detail, at),
            Event::Input(Input::Notify(n)) => {
                if let Some(s) = n.status {
                    self.machine.on_status_text(s);
                }
                if n.watchdog {
                    if let Some((d, at)) = self.watchdog.as_mut() {
                        *at = Instant::now() + *d;
                    }
                }
                if n.ready {
                    self.machine.on_signal()
                } else {
                    Outcome::default()
                }
            }
            Event::WatchdogMissed => {
                let ms = self.watchdog.map(|(d, _)| d.as_millis() as u64).unwrap_or(0);
                // One restart per missed interval at most.
                self.watchdog = None;
                self.machine.on_watchdog_missed(ms, at)
            }
        };
        if !was_probing && self.machine.probing() {
            if let Some(p) = &self.probes {
                p.set_probing();
            }
        }
        out
    }

    /// `ready` over IPC (`wait_ready`), or pm2's `listen_timeout` passing for
    /// a `wait_ready` app: the ready signal.
    pub fn signal(&mut self) -> Outcome {
        self.machine.on_signal()
    }

    /// The run is being retired or stopped: no more probes.
    pub fn stop_probes(&mut self) {
        self.probes = None;
        self.watchdog = None;
    }
}
