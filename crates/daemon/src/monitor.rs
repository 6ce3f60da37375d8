//! CPU and memory of online processes, sampled on demand (`list`, `jlist`)
//! from `/proc` without keeping any file open.

use crate::proctree;
use crate::state::Table;
use crate::timefmt::now_ms;
use corral_proto::Status;

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
        let Some((rss, ticks)) = proctree::usage(e.info.pid as i32) else {
            e.info.memory = 0;
            e.info.cpu = 0.0;
            continue;
        };
        e.info.memory = rss;
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
