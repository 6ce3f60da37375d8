//! CPU and memory of online processes, sampled on demand (`list`, `jlist`)
//! from `/proc` without keeping any file open.
//!
//! A process's sample is reused while it is younger than [`MIN_SAMPLE_MS`]:
//! reading `/proc/<pid>/stat` (open, read, close; the kernel formats 52
//! fields and sums the thread group's times) was most of what `jlist` of 100
//! apps cost the daemon, and a CPU % over a window of a few ms is noise
//! anyway, the counters advancing in 10 ms ticks. A process that went online
//! since (restart, reload) has no sample and is read at once.
//!
//! Right after `exec` the kernel has not yet folded the new address space's
//! per-CPU page counters into the total `/proc/<pid>/stat` shows, so a
//! `jlist` in the first instants reads a resident size of 0 (kept for 500 ms,
//! that 0 reached a scrape 63 ms later). Then the pages are counted instead
//! ([`proctree::rss_walked`]), and a 0 that remains is not kept as a sample.

use crate::proctree;
use crate::state::Table;
use crate::timefmt::now_ms;
use corral_proto::Status;

/// Youngest sample that is taken again rather than reused: every poll of a
/// once-a-second dashboard still reads fresh values.
pub const MIN_SAMPLE_MS: u64 = 500;

pub fn refresh(t: &mut Table) {
    let hz = proctree::clock_ticks() as f64;
    let now = now_ms();
    for e in t.procs.values_mut() {
        if e.info.pid == 0 || e.info.status != Status::Online {
            e.info.memory = 0;
            e.info.cpu = 0.0;
            e.cpu_sample = None;
            continue;
        }
        if let Some((_, ms0)) = e.cpu_sample {
            if fresh(ms0, now) {
                continue;
            }
        }
        let Some((rss, ticks)) = proctree::usage(e.info.pid as i32) else {
            e.info.memory = 0;
            e.info.cpu = 0.0;
            continue;
        };
        let rss = match rss {
            0 => proctree::rss_walked(e.info.pid as i32).unwrap_or(0),
            n => n,
        };
        e.info.memory = rss;
        if rss == 0 {
            e.info.cpu = 0.0;
            e.cpu_sample = None;
            continue;
        }
        let cpu = match e.cpu_sample {
            Some((t0, ms0)) if now > ms0 => {
                let secs = (now - ms0) as f64 / 1000.0;
                ((ticks.saturating_sub(t0)) as f64 / hz) / secs * 100.0
            }
            _ => {
                // First sample: average since the process went online.
                let secs = (now.saturating_sub(e.info.pm_uptime)) as f64 / 1000.0;
                if secs > 0.0 {
                    (ticks as f64 / hz) / secs * 100.0
                } else {
                    0.0
                }
            }
        };
        e.info.cpu = (cpu * 10.0).round() / 10.0;
        e.cpu_sample = Some((ticks, now));
    }
}

/// `node --version` of the daemon's PATH, asked once, at the first report
/// (rare), rather than at every daemon start.
pub fn node_version() -> String {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        std::process::Command::new("node")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().trim_start_matches('v').to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "N/A".into())
    })
    .clone()
}

/// True when a sample taken at `ms0` is still good at `now` (a clock that
/// went backwards makes it stale).
fn fresh(ms0: u64, now: u64) -> bool {
    now >= ms0 && now - ms0 < MIN_SAMPLE_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_reused_only_while_young() {
        assert!(fresh(1000, 1000));
        assert!(fresh(1000, 1000 + MIN_SAMPLE_MS - 1));
        assert!(!fresh(1000, 1000 + MIN_SAMPLE_MS));
        assert!(!fresh(1000, 999), "clock went backwards");
    }
}
