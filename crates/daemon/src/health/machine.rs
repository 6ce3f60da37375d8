//! The health of one run of a process, as a pure state machine: probe
//! results, the ready signal (`ready` / `READY=1`) and missed watchdog pings
//! go in; whether the process is ready (takes new connections) and whether
//! it must be restarted come out. No clock, no I/O: the supervisor feeds it.
//!
//! Kubernetes' rules: readiness and liveness probes count only once the
//! startup probe passed; a probe changes state after `successThreshold`
//! successes or `failureThreshold` failures in a row; a failing startup or
//! liveness probe restarts the process, a failing readiness probe only takes
//! it out of routing. A process is ready when its start is over (startup
//! probe passed, ready signal received when one is expected) and its
//! readiness probe, if any, passes.

use corral_proto::{HealthInfo, HealthSpec, HealthStatus, ProbeResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Readiness,
    Liveness,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Readiness => "readiness",
            Kind::Liveness => "liveness",
        }
    }
}

/// Consecutive results of one probe against its thresholds.
#[derive(Debug, Clone)]
struct Counter {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
}

impl Counter {
    fn new(p: &corral_proto::Probe) -> Counter {
        Counter {
            success_threshold: p.success_threshold.max(1),
            failure_threshold: p.failure_threshold.max(1),
            successes: 0,
            failures: 0,
        }
    }

    /// `Some(passing)` when this result crosses a threshold (once per streak).
    fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes == self.success_threshold).then_some(true)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures == self.failure_threshold).then_some(false)
        }
    }
}

/// What the supervisor must do after an input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// `Some(new)` when [`Machine::is_ready`] changed.
    pub ready_changed: Option<bool>,
    /// Restart the process, for this reason.
    pub restart: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Machine {
    startup: Option<Counter>,
    readiness: Option<Counter>,
    liveness: Option<Counter>,
    startup_passed: bool,
    /// A ready signal is expected (`wait_ready`, `notify`) and not yet had.
    awaiting_signal: bool,
    readiness_passing: bool,
    was_ready: bool,
    info: HealthInfo,
}

impl Machine {
    /// `expects_signal`: the app says when it is ready (`wait_ready`'s
    /// `process.send('ready')`, or `READY=1` with `notify`).
    pub fn new(spec: &HealthSpec, expects_signal: bool) -> Machine {
        let mut m = Machine {
            startup: spec.startup.as_ref().map(Counter::new),
            readiness: spec.readiness.as_ref().map(Counter::new),
            liveness: spec.liveness.as_ref().map(Counter::new),
            startup_passed: spec.startup.is_none(),
            awaiting_signal: expects_signal,
            readiness_passing: spec.readiness.is_none(),
            was_ready: false,
            info: HealthInfo::default(),
        };
        m.info.status = m.status();
        m.was_ready = m.is_ready();
        m
    }

    /// The machine of a process adopted across an in-place update, from the
    /// health it had: a start that was over stays over (the app will not
    /// send its `ready` again), readiness as it last was. A process caught
    /// while starting starts over.
    pub fn resume(spec: &HealthSpec, expects_signal: bool, had: &HealthInfo) -> Machine {
        let mut m = Machine::new(spec, expects_signal);
        if matches!(had.status, HealthStatus::Ready | HealthStatus::Unready) {
            m.startup_passed = true;
            m.awaiting_signal = false;
            m.readiness_passing = spec.readiness.is_none() || had.status == HealthStatus::Ready;
            m.was_ready = true;
            m.info = had.clone();
            m.info.status = m.status();
        }
        m
    }

    /// Start period over: the startup probe passed (or there is none).
    /// Readiness and liveness probes run from then on.
    pub fn probing(&self) -> bool {
        self.startup_passed
    }

    /// Takes new connections and sessions.
    pub fn is_ready(&self) -> bool {
        self.startup_passed && !self.awaiting_signal && self.readiness_passing
    }

    pub fn status(&self) -> HealthStatus {
        if self.is_ready() {
            HealthStatus::Ready
        } else if self.was_ready {
            HealthStatus::Unready
        } else {
            HealthStatus::Starting
        }
    }

    pub fn info(&self) -> &HealthInfo {
        &self.info
    }

    /// The last probe result, for messages.
    pub fn last_detail(&self) -> Option<String> {
        self.info.last.as_ref().map(|l| format!("{} probe: {}", l.probe, l.detail))
    }

    /// `ready` / `READY=1`.
    pub fn on_signal(&mut self) -> Outcome {
        let before = self.is_ready();
        self.awaiting_signal = false;
        self.settle(before, None)
    }

    /// `STATUS=` from the app.
    pub fn on_status_text(&mut self, text: String) {
        self.info.notify_status = Some(text);
    }

    /// One probe result; `at` in epoch ms.
    pub fn on_probe(&mut self, kind: Kind, ok: bool, detail: String, at: u64) -> Outcome {
        let before = self.is_ready();
        // Results of probes that do not run in this phase (a result in
        // flight while the phase changed) are dropped.
        let counts = match kind {
            Kind::Startup => !self.startup_passed,
            Kind::Readiness | Kind::Liveness => self.startup_passed,
        };
        if !counts {
            return Outcome::default();
        }
        if !ok {
            self.info.failures = self.info.failures.saturating_add(1);
        }
        let mut restart = None;
        let counter = match kind {
            Kind::Startup => self.startup.as_mut(),
            Kind::Readiness => self.readiness.as_mut(),
            Kind::Liveness => self.liveness.as_mut(),
        };
        let crossed = counter.as_ref().map(|c| c.failure_threshold);
        let change = counter.and_then(|c| c.record(ok));
        match (kind, change) {
            (Kind::Startup, Some(true)) => self.startup_passed = true,
            (Kind::Readiness, Some(p)) => self.readiness_passing = p,
            (Kind::Startup | Kind::Liveness, Some(false)) => {
                restart = Some(format!(
                    "{} probe failed {} times in a row ({detail})",
                    kind.as_str(),
                    crossed.unwrap_or(1)
                ));
            }
            _ => {}
        }
        self.info.last = Some(ProbeResult { probe: kind.as_str().into(), ok, detail, at });
        self.settle(before, restart)
    }

    /// No `WATCHDOG=1` within the watchdog interval: a liveness failure.
    pub fn on_watchdog_missed(&mut self, interval_ms: u64, at: u64) -> Outcome {
        let before = self.is_ready();
        let detail = format!("no WATCHDOG=1 within {interval_ms}ms");
        self.info.failures = self.info.failures.saturating_add(1);
        self.info.last =
            Some(ProbeResult { probe: "watchdog".into(), ok: false, detail: detail.clone(), at });
        self.settle(before, Some(format!("watchdog: {detail}")))
    }

    fn settle(&mut self, before: bool, restart: Option<String>) -> Outcome {
        let now = self.is_ready();
        if now {
            self.was_ready = true;
        }
        self.info.status = self.status();
        Outcome { ready_changed: (now != before).then_some(now), restart }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::{Probe, ProbeCheck};

    fn probe(success: u32, failure: u32) -> Probe {
        Probe {
            success_threshold: success,
            failure_threshold: failure,
            ..Probe::new(ProbeCheck::Tcp { port: Some(1) })
        }
    }

    fn ok(m: &mut Machine, k: Kind) -> Outcome {
        m.on_probe(k, true, "ok".into(), 0)
    }
    fn fail(m: &mut Machine, k: Kind) -> Outcome {
        m.on_probe(k, false, "HTTP 503".into(), 0)
    }

    #[test]
    fn no_gating_probe_means_ready_at_once() {
        let spec = HealthSpec { liveness: Some(probe(1, 3)), ..Default::default() };
        let m = Machine::new(&spec, false);
        assert!(m.is_ready());
        assert_eq!(m.status(), HealthStatus::Ready);
    }

    #[test]
    fn readiness_turns_ready_then_unready_then_back_by_thresholds() {
        let spec = HealthSpec { readiness: Some(probe(2, 3)), ..Default::default() };
        let mut m = Machine::new(&spec, false);
        assert_eq!(m.status(), HealthStatus::Starting);
        assert_eq!(ok(&mut m, Kind::Readiness), Outcome::default());
        assert_eq!(ok(&mut m, Kind::Readiness).ready_changed, Some(true));
        assert_eq!(ok(&mut m, Kind::Readiness), Outcome::default());
        fail(&mut m, Kind::Readiness);
        fail(&mut m, Kind::Readiness);
        assert!(m.is_ready());
        let o = fail(&mut m, Kind::Readiness);
        assert_eq!(o, Outcome { ready_changed: Some(false), restart: None });
        assert_eq!(m.status(), HealthStatus::Unready);
        assert_eq!(m.info().failures, 3);
        // More failures: no repeated transition, never a restart.
        assert_eq!(fail(&mut m, Kind::Readiness), Outcome::default());
        ok(&mut m, Kind::Readiness);
        assert_eq!(ok(&mut m, Kind::Readiness).ready_changed, Some(true));
        assert_eq!(m.info().last.as_ref().map(|l| l.ok), Some(true));
    }

    #[test]
    fn liveness_restarts_after_its_threshold_only() {
        let spec = HealthSpec { liveness: Some(probe(1, 2)), ..Default::default() };
        let mut m = Machine::new(&spec, false);
        assert_eq!(fail(&mut m, Kind::Liveness).restart, None);
        ok(&mut m, Kind::Liveness);
        assert_eq!(fail(&mut m, Kind::Liveness).restart, None);
        let r = fail(&mut m, Kind::Liveness).restart.unwrap();
        assert!(r.contains("liveness probe failed 2 times in a row (HTTP 503)"), "{r}");
        // Liveness does not take the process out of routing.
        assert!(m.is_ready());
    }

    #[test]
    fn startup_gates_the_others_and_restarts_when_it_fails() {
        let spec = HealthSpec {
            startup: Some(probe(1, 2)),
            readiness: Some(probe(1, 1)),
            liveness: Some(probe(1, 1)),
            ..Default::default()
        };
        let mut m = Machine::new(&spec, false);
        assert!(!m.probing());
        // Liveness results before the start is over do not count.
        assert_eq!(fail(&mut m, Kind::Liveness), Outcome::default());
        assert_eq!(ok(&mut m, Kind::Readiness), Outcome::default());
        ok(&mut m, Kind::Startup);
        assert!(m.probing());
        assert!(!m.is_ready(), "readiness has not passed yet");
        assert_eq!(ok(&mut m, Kind::Readiness).ready_changed, Some(true));
        // A late startup result changes nothing.
        assert_eq!(fail(&mut m, Kind::Startup), Outcome::default());

        let mut m = Machine::new(&spec, false);
        fail(&mut m, Kind::Startup);
        let r = fail(&mut m, Kind::Startup).restart.unwrap();
        assert!(r.starts_with("startup probe failed 2 times"), "{r}");
    }

    #[test]
    fn ready_signal_is_part_of_the_start() {
        let spec = HealthSpec { notify: true, ..Default::default() };
        let mut m = Machine::new(&spec, true);
        assert_eq!(m.status(), HealthStatus::Starting);
        assert_eq!(m.on_signal().ready_changed, Some(true));
        assert_eq!(m.on_signal(), Outcome::default());
        m.on_status_text("serving".into());
        assert_eq!(m.info().notify_status.as_deref(), Some("serving"));

        let spec = HealthSpec { readiness: Some(probe(1, 1)), ..Default::default() };
        let mut m = Machine::new(&spec, true);
        ok(&mut m, Kind::Readiness);
        assert!(!m.is_ready(), "still waiting for the signal");
        assert_eq!(m.on_signal().ready_changed, Some(true));
    }

    #[test]
    fn missed_watchdog_restarts() {
        let spec = HealthSpec { watchdog_ms: Some(100), ..Default::default() };
        let mut m = Machine::new(&spec, false);
        let o = m.on_watchdog_missed(100, 5);
        assert!(o.restart.unwrap().contains("no WATCHDOG=1 within 100ms"));
        assert_eq!(m.info().last.as_ref().map(|l| l.probe.as_str()), Some("watchdog"));
    }
}
