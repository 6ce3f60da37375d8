//! `cron_restart`: restart an app on a cron schedule. Like pm2,
//! a tick restarts a stopped app too; the schedule lives as long as the
//! process entry.

use crate::dlog;
use crate::error::DaemonError;
use crate::supervisor::handle::ProcessHandle;
use croner::Cron;
use std::time::Duration;

/// Dropping it cancels the schedule.
pub struct CronHandle(tokio::task::JoinHandle<()>);

impl Drop for CronHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Parses a 5- or 6-field pattern (seconds optional) or an `@` alias, by
/// the same rule the config validated it with.
pub fn parse(pattern: &str) -> Result<Cron, DaemonError> {
    corral_config::parse_cron(pattern).map_err(DaemonError::CronPattern)
}

pub fn start(handle: ProcessHandle, name: &str, pattern: &str) -> Option<CronHandle> {
    let id = handle.id();
    let cron = match parse(pattern) {
        Ok(c) => c,
        Err(e) => {
            dlog::error(&format!("App [{name}:{id}] {e}"));
            return None;
        }
    };
    dlog::log(&format!("[PM2] cron restart at {pattern}"));
    let name = name.to_string();
    Some(CronHandle(tokio::spawn(async move {
        loop {
            let now = chrono::Local::now();
            let Ok(next) = cron.find_next_occurrence(&now, false) else { return };
            let wait = (next - now).to_std().unwrap_or(Duration::from_millis(0));
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
            dlog::log(&format!("[PM2] cron restart of app {name} (id {id})"));
            if let Err(DaemonError::TaskEnded) = handle.restart(None).await {
                return;
            }
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
