//! `cron_restart`: restart an app on a cron schedule (spec §3.16). Like pm2,
//! a tick restarts a stopped app too; the schedule lives as long as the
//! process entry.

use crate::dlog;
use crate::process::Ctl;
use crate::state::SharedRef;
use croner::Cron;
use std::time::Duration;
use tokio::sync::oneshot;

/// Dropping it cancels the schedule.
pub struct CronHandle(tokio::task::JoinHandle<()>);

impl Drop for CronHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Parses a 5- or 6-field pattern (seconds optional) or an `@` alias.
pub fn parse(pattern: &str) -> Result<Cron, String> {
    Cron::new(pattern).with_seconds_optional().parse().map_err(|e| format!("Cron pattern error: {e}"))
}

pub fn start(shared: &SharedRef, id: u32, name: &str, pattern: &str) -> Option<CronHandle> {
    let cron = match parse(pattern) {
        Ok(c) => c,
        Err(e) => {
            dlog::error(&format!("App [{name}:{id}] {e}"));
            return None;
        }
    };
    dlog::log(&format!("[PM2] cron restart at {pattern}"));
    let shared = shared.clone();
    let name = name.to_string();
    Some(CronHandle(tokio::spawn(async move {
        loop {
            let now = chrono::Local::now();
            let Ok(next) = cron.find_next_occurrence(&now, false) else { return };
            let wait = (next - now).to_std().unwrap_or(Duration::from_millis(0));
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
            dlog::log(&format!("[PM2] cron restart of app {name} (id {id})"));
            let Some(ctl) = shared.with_entry(id, |e| e.ctl.clone()) else { return };
            let (done, wait) = oneshot::channel();
            if ctl.send(Ctl::Restart { update: None, done }).is_err() {
                return;
            }
            let _ = wait.await;
        }
    })))
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns() {
        assert!(super::parse("*/5 * * * *").is_ok());
        assert!(super::parse("*/2 * * * * *").is_ok());
        assert!(super::parse("not a cron").is_err());
    }
}
