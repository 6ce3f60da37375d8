//! pm2's auto-restart decision (`God.handleExit` in lib/God/Methods.js), as a pure
//! function of the counters and the clock so it can be tested without
//! processes or real time.

use corral_proto::{AppSpec, ProcInfo};

/// Counters the policy reads and updates: a view of the process's info,
/// where they are stored once ([`Counters::of`], [`Counters::store`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Epoch ms of the last manual start/restart (`created_at`); `None`
    /// after an overlimit, as pm2 resets it.
    pub created_at: Option<u64>,
    /// Epoch ms when the current run went online (`pm_uptime`).
    pub pm_uptime: u64,
    pub unstable_restarts: u32,
    pub prev_restart_delay: Option<u64>,
}

impl Counters {
    /// The counters as the process info holds them (`created_at` 0 = none).
    pub fn of(info: &ProcInfo) -> Counters {
        Counters {
            created_at: (info.created_at > 0).then_some(info.created_at),
            pm_uptime: info.pm_uptime,
            unstable_restarts: info.unstable_restarts,
            prev_restart_delay: info.prev_restart_delay,
        }
    }

    /// Writes them back.
    pub fn store(&self, info: &mut ProcInfo) {
        info.created_at = self.created_at.unwrap_or(0);
        info.pm_uptime = self.pm_uptime;
        info.unstable_restarts = self.unstable_restarts;
        info.prev_restart_delay = self.prev_restart_delay;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave it stopped (autorestart off, stop_exit_codes, or a manual stop).
    Stop,
    /// Too many unstable restarts.
    Errored { unstable: u32 },
    /// Restart after `delay_ms` (0 = at once). `waiting` = pm2 shows
    /// `waiting restart` meanwhile.
    Restart { delay_ms: u64, waiting: bool },
}

/// `stopping` is true when the exit was requested (stop/delete/restart) or
/// the daemon is shutting down.
pub fn on_exit(app: &AppSpec, c: &mut Counters, now: u64, code: Option<i32>, stopping: bool) -> Decision {
    let exit_is_final =
        stopping || !app.autorestart || code.is_some_and(|code| app.stop_exit_codes.contains(&code));
    decide(app, c, now, exit_is_final)
}

/// A liveness (or startup, or watchdog) failure past its threshold: the
/// daemon stopped the process itself, so the restart is never final (the
/// probe the user configured asked for it, whatever `autorestart` says), but
/// it is paced like a crash: unstable restarts count towards `max_restarts`
/// and `restart_delay` / `exp_backoff_restart_delay` apply, so a service whose
/// dependency is down is not restarted in a tight loop (Kubernetes backs off
/// liveness restarts the same way).
pub fn on_health_failure(app: &AppSpec, c: &mut Counters, now: u64) -> Decision {
    decide(app, c, now, false)
}

fn decide(app: &AppSpec, c: &mut Counters, now: u64, exit_is_final: bool) -> Decision {
    let min_uptime = app.min_uptime;
    let max_restarts = app.max_restarts;
    let since_created = c.created_at.map(|t| now.saturating_sub(t)).unwrap_or(u64::MAX);
    if since_created < min_uptime.saturating_mul(max_restarts as u64)
        && now.saturating_sub(c.pm_uptime) < min_uptime
    {
        c.unstable_restarts += 1;
    }
    if !exit_is_final && c.unstable_restarts >= max_restarts {
        let unstable = c.unstable_restarts;
        c.unstable_restarts = 0;
        c.created_at = None;
        return Decision::Errored { unstable };
    }
    if exit_is_final {
        return Decision::Stop;
    }
    if let Some(base) = app.exp_backoff_restart_delay {
        let delay = match c.prev_restart_delay {
            Some(prev) => ((prev as f64 * 1.5).floor() as u64).min(15_000),
            None => base,
        };
        c.prev_restart_delay = Some(delay);
        return Decision::Restart { delay_ms: delay, waiting: true };
    }
    if app.restart_delay > 0 {
        return Decision::Restart { delay_ms: app.restart_delay, waiting: true };
    }
    Decision::Restart { delay_ms: 0, waiting: false }
}

/// The most a failed spawn waits before its next attempt (pm2's cap on the
/// exponential backoff).
pub const SPAWN_RETRY_MAX_MS: u64 = 15_000;
/// The first wait after a failed spawn when the app sets no delay of its own.
pub const SPAWN_RETRY_BASE_MS: u64 = 100;

/// When a process could not even be spawned (`failures` consecutive failed
/// attempts so far, this one included): the delay before the next attempt,
/// or `None` once the restart budget (`max_restarts` attempts) is spent and
/// the process must go `errored`. The delay starts at the app's own
/// `exp_backoff_restart_delay` or `restart_delay` (100 ms when it has none)
/// and grows by half at each failure up to 15 s, so a missing interpreter
/// or an exhausted fd table gets about a minute and a half of attempts with
/// the default budget of 16, instead of 16 attempts in a few milliseconds.
pub fn spawn_retry_delay(app: &AppSpec, failures: u32) -> Option<u64> {
    if failures == 0 || failures >= app.max_restarts {
        return None;
    }
    let base = app
        .exp_backoff_restart_delay
        .filter(|&d| d > 0)
        .or((app.restart_delay > 0).then_some(app.restart_delay))
        .unwrap_or(SPAWN_RETRY_BASE_MS)
        .min(SPAWN_RETRY_MAX_MS);
    let mut delay = base;
    for _ in 1..failures {
        delay = ((delay as f64 * 1.5).floor() as u64).min(SPAWN_RETRY_MAX_MS);
    }
    Some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppSpec {
        AppSpec::default()
    }

    #[test]
    fn crash_loop_reaches_errored_after_max_restarts() {
        let a = app();
        let mut c = Counters { created_at: Some(0), pm_uptime: 0, ..Default::default() };
        let mut now = 0;
        let mut restarts = 0;
        loop {
            now += 200;
            match on_exit(&a, &mut c, now, Some(1), false) {
                Decision::Restart { .. } => {
                    restarts += 1;
                    c.pm_uptime = now;
                }
                Decision::Errored { unstable } => {
                    assert_eq!(unstable, 16);
                    break;
                }
                Decision::Stop => panic!("unexpected stop"),
            }
            assert!(restarts < 100);
        }
        assert_eq!(restarts, 15);
        assert_eq!(c.created_at, None);
    }

    #[test]
    fn crashes_after_the_unstable_window_restart_forever() {
        let a = app();
        let mut c = Counters { created_at: Some(0), pm_uptime: 0, ..Default::default() };
        let mut now = 20_000;
        for _ in 0..100 {
            now += 1_500;
            assert!(matches!(on_exit(&a, &mut c, now, Some(1), false), Decision::Restart { .. }));
            c.pm_uptime = now;
        }
    }

    #[test]
    fn stop_exit_codes_and_autorestart() {
        let mut a = app();
        a.stop_exit_codes = vec![0];
        let mut c = Counters { created_at: Some(0), pm_uptime: 0, ..Default::default() };
        assert_eq!(on_exit(&a, &mut c, 50_000, Some(0), false), Decision::Stop);
        assert!(matches!(on_exit(&a, &mut c, 60_000, Some(2), false), Decision::Restart { .. }));
        a.autorestart = false;
        assert_eq!(on_exit(&a, &mut c, 70_000, Some(2), false), Decision::Stop);
    }

    #[test]
    fn exponential_backoff_grows_and_caps() {
        let mut a = app();
        a.exp_backoff_restart_delay = Some(100);
        let mut c = Counters { created_at: Some(0), pm_uptime: 0, ..Default::default() };
        let mut delays = vec![];
        for i in 0..20 {
            let now = 100_000 + i * 20_000;
            if let Decision::Restart { delay_ms, waiting } = on_exit(&a, &mut c, now, Some(1), false) {
                assert!(waiting);
                delays.push(delay_ms);
            }
        }
        assert_eq!(&delays[..4], &[100, 150, 225, 337]);
        assert_eq!(*delays.last().unwrap(), 15_000);
    }

    #[test]
    fn max_restarts_zero_errors_on_first_exit() {
        let mut a = app();
        a.max_restarts = 0;
        let mut c = Counters { created_at: Some(0), pm_uptime: 0, ..Default::default() };
        assert!(matches!(on_exit(&a, &mut c, 10, Some(1), false), Decision::Errored { .. }));
    }

    #[test]
    fn health_failures_restart_with_the_crash_backoff_even_without_autorestart() {
        let mut a = app();
        a.autorestart = false;
        let mut c = Counters { pm_uptime: 0, created_at: Some(0), ..Counters::default() };
        assert_eq!(on_health_failure(&a, &mut c, 60_000), Decision::Restart { delay_ms: 0, waiting: false });
        a.exp_backoff_restart_delay = Some(100);
        let delays: Vec<Decision> = (0..3).map(|_| on_health_failure(&a, &mut c, 60_000)).collect();
        assert_eq!(
            delays,
            [100, 150, 225].map(|delay_ms| Decision::Restart { delay_ms, waiting: true }).to_vec()
        );
    }

    #[test]
    fn failed_spawns_back_off_then_spend_the_restart_budget() {
        let a = app();
        let delays: Vec<Option<u64>> = (1..=17).map(|n| spawn_retry_delay(&a, n)).collect();
        assert_eq!(&delays[..4], &[Some(100), Some(150), Some(225), Some(337)]);
        assert_eq!(delays[14], Some(15_000));
        // The default budget is 16 attempts: the 16th failure is final.
        assert_eq!(delays[15], None);
        let total: u64 = delays.iter().flatten().sum();
        assert!((60_000..120_000).contains(&total), "{total}");
    }

    #[test]
    fn failed_spawns_start_from_the_apps_own_delay() {
        let mut a = app();
        a.restart_delay = 2_000;
        assert_eq!(spawn_retry_delay(&a, 1), Some(2_000));
        assert_eq!(spawn_retry_delay(&a, 2), Some(3_000));
        a.exp_backoff_restart_delay = Some(500);
        assert_eq!(spawn_retry_delay(&a, 1), Some(500));
        a.max_restarts = 0;
        assert_eq!(spawn_retry_delay(&a, 1), None);
    }
}
