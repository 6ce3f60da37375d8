//! `--wait` on `start`, `restart`, `reload` and their ecosystem variants:
//! after the command, wait until every process it started or restarted is
//! ready, then exit 0; exit 1 with a message naming what is not ready when
//! `--wait-timeout` (seconds, default 60) passes or a process errored.
//!
//! Ready means: online, and for an app whose health checks gate readiness
//! (startup or readiness probe, `notify`), its health status is `ready`.
//! `wait_ready` apps are online only once they sent `ready`; apps with no
//! checks count as ready when online.

use super::{Cli, Code};
use crate::output;
use anyhow::Result;
use corral_proto::{HealthStatus, ProcInfo};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const DEFAULT_TIMEOUT_S: f64 = 60.0;

/// The processes before the command: pm_id -> (pid, pm_uptime).
pub type Before = BTreeMap<u32, (u32, u64)>;

pub fn snapshot(procs: &[ProcInfo]) -> Before {
    procs.iter().map(|p| (p.pm_id, (p.pid, p.pm_uptime))).collect()
}

enum State {
    Ready,
    Waiting(String),
    Failed(String),
}

fn state(p: &ProcInfo) -> State {
    let gated = p.app.health.as_ref().is_some_and(|h| h.gates_readiness());
    match p.status.as_str() {
        "errored" | "stopped" | "stopping" => return State::Failed(format!("is {}", p.status)),
        "online" => {}
        other => return State::Waiting(format!("is {other}")),
    }
    if !gated {
        return State::Ready;
    }
    let h = p.health.clone().unwrap_or_default();
    if h.status == HealthStatus::Ready {
        return State::Ready;
    }
    let last = h.last.map(|l| format!(", last {} probe: {}", l.probe, l.detail)).unwrap_or_default();
    State::Waiting(format!("is {}{last}", h.status.as_str()))
}

/// Waits for the processes that are new or were relaunched since `before`.
pub fn wait(cli: &mut Cli, before: &Before) -> Result<Code> {
    let secs = match cli.args.value("wait-timeout") {
        None => DEFAULT_TIMEOUT_S,
        Some(v) => match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => s,
            _ => {
                output::error(&format!("--wait-timeout: expected a number of seconds above 0, got {v:?}"));
                return Ok(1);
            }
        },
    };
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        let procs = cli.list()?;
        let mine: Vec<&ProcInfo> = procs
            .iter()
            .filter(|p| before.get(&p.pm_id).is_none_or(|&(pid, up)| pid != p.pid || up != p.pm_uptime))
            .collect();
        let mut waiting = Vec::new();
        for p in &mine {
            match state(p) {
                State::Ready => {}
                State::Failed(why) => {
                    output::error(&format!("App [{}:{}] {why}: not ready", p.app.name, p.pm_id));
                    return Ok(1);
                }
                State::Waiting(why) => waiting.push(format!("App [{}:{}] {why}", p.app.name, p.pm_id)),
            }
        }
        if waiting.is_empty() {
            if !mine.is_empty() {
                output::info(&format!("{} process(es) ready", mine.len()));
            }
            return Ok(0);
        }
        if Instant::now() >= deadline {
            for w in &waiting {
                output::error(&format!("{w}: not ready within {secs}s"));
            }
            return Ok(1);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
