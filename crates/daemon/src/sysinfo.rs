//! Host metrics for `getSystemData` and `pm2 slist` / `sysinfos`, in the
//! shape pm2 7's daemon gives them (its `lib/tools/SysMetrics.js`): an
//! `axm_monitor`-like map `{ "<Name>": { value, type: "metric", unit,
//! historic: true } }` with CPU, RAM, per-interface network rates, disk
//! throughput and per-filesystem usage.
//!
//! pm2 samples every 5 s in its daemon. Corral samples only when asked (an
//! idle daemon does nothing for it): rates are the deltas since the previous
//! call, and a call with no recent previous sample takes two samples a
//! quarter of a second apart so every value is real.
//!
//! A leaf: imports nothing of the daemon.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Cumulative counters read from /proc and /sys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// (idle, total) jiffies over every cpu.
    pub cpu: Option<(u64, u64)>,
    /// (total, available) bytes.
    pub mem: Option<(u64, u64)>,
    /// Per interface: rx, tx bytes, rx/tx errors, rx/tx drops.
    pub net: BTreeMap<String, [u64; 6]>,
    /// (read, write) bytes over the block devices.
    pub disk: Option<(u64, u64)>,
    /// (mount point, used %, size in GB) of real devices.
    pub fs: Vec<(String, f64, f64)>,
}

/// The previous sample and when it was taken.
static PREVIOUS: Mutex<Option<(Instant, Sample)>> = Mutex::new(None);

/// A previous sample older than this is not a useful base for rates.
const STALE: Duration = Duration::from_secs(60);
/// The gap between two samples when there is no useful previous one.
const FIRST_GAP: Duration = Duration::from_millis(250);

/// The current metrics. Blocks for up to 250 ms (run it off the daemon's
/// event loop).
pub fn system_data() -> Value {
    let prev = PREVIOUS.lock().ok().and_then(|p| p.clone());
    let (t0, base) = match prev {
        Some((t, s)) if t.elapsed() < STALE && t.elapsed() > Duration::from_millis(100) => (t, s),
        _ => {
            let s = read_sample();
            std::thread::sleep(FIRST_GAP);
            (Instant::now() - FIRST_GAP, s)
        }
    };
    let now = read_sample();
    let dt = t0.elapsed().as_secs_f64();
    let out = snapshot(&base, &now, dt);
    if let Ok(mut p) = PREVIOUS.lock() {
        *p = Some((Instant::now(), now));
    }
    Value::Object(out)
}

fn metric(value: Value, unit: &str) -> Value {
    json!({ "value": value, "type": "metric", "unit": unit, "historic": true })
}

fn round(v: f64, digits: i32) -> Value {
    let f = 10f64.powi(digits);
    let r = (v * f).round() / f;
    serde_json::Number::from_f64(r).map(Value::Number).unwrap_or(Value::from(0))
}

/// pm2's map from two samples `dt` seconds apart (pure).
pub fn snapshot(prev: &Sample, cur: &Sample, dt: f64) -> Map<String, Value> {
    let mut m = Map::new();
    if let (Some((pi, pt)), Some((ci, ct))) = (prev.cpu, cur.cpu) {
        let (di, dtot) = (ci.saturating_sub(pi) as f64, ct.saturating_sub(pt) as f64);
        let pct = if dtot > 0.0 { (1.0 - di / dtot) * 100.0 } else { 0.0 };
        m.insert("CPU Usage".into(), metric(round(pct.clamp(0.0, 100.0), 1), "%"));
    }
    // pm2 always has it (-1: unknown) so its renderer never misses it.
    m.insert("CPU Temperature".into(), metric(Value::from(-1), "°C"));
    if let Some((total, avail)) = cur.mem {
        let active = total.saturating_sub(avail);
        let pct = if total > 0 { active as f64 / total as f64 * 100.0 } else { 0.0 };
        m.insert("RAM Usage".into(), metric(round(pct, 1), "%"));
        m.insert("RAM Total".into(), metric(Value::from(total), "b"));
        m.insert("RAM Available".into(), metric(Value::from(avail), "b"));
        m.insert("RAM Active".into(), metric(Value::from(active), "b"));
    }
    for (name, c) in &cur.net {
        let mut rate = [0f64; 6];
        if let (Some(p), true) = (prev.net.get(name), dt > 0.0) {
            for i in 0..6 {
                let d = c[i].saturating_sub(p[i]) as f64 / dt;
                rate[i] = if i < 2 { d / 1024.0 / 1024.0 } else { d * 60.0 };
            }
        }
        m.insert(format!("net:rx_5:{name}"), metric(round(rate[0], 3), "mb/s"));
        m.insert(format!("net:tx_5:{name}"), metric(round(rate[1], 3), "mb/s"));
        m.insert(format!("net:rx_errors_60:{name}"), metric(round(rate[2], 0), "/min"));
        m.insert(format!("net:tx_errors_60:{name}"), metric(round(rate[3], 0), "/min"));
        m.insert(format!("net:rx_dropped_60:{name}"), metric(round(rate[4], 0), "/min"));
        m.insert(format!("net:tx_dropped_60:{name}"), metric(round(rate[5], 0), "/min"));
    }
    let (mut rd, mut wr) = (0.0, 0.0);
    if let (Some((pr, pw)), Some((cr, cw)), true) = (prev.disk, cur.disk, dt > 0.0) {
        rd = cr.saturating_sub(pr) as f64 / dt / 1024.0 / 1024.0;
        wr = cw.saturating_sub(pw) as f64 / dt / 1024.0 / 1024.0;
    }
    m.insert("Disk Reads".into(), metric(round(rd, 3), "mb/s"));
    m.insert("Disk Writes".into(), metric(round(wr, 3), "mb/s"));
    for (mount, pct, gb) in &cur.fs {
        m.insert(format!("fs:use:{mount}"), metric(round(*pct, 2), "%"));
        m.insert(format!("fs:size:{mount}"), metric(round(*gb, 2), "gb"));
    }
    m
}

/// Reads every counter; what cannot be read is left out.
pub fn read_sample() -> Sample {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    Sample {
        cpu: read("/proc/stat").and_then(|s| parse_cpu(&s)),
        mem: read("/proc/meminfo").and_then(|s| parse_meminfo(&s)),
        net: read_net(),
        disk: read_disk(),
        fs: read("/proc/self/mounts").map(|s| fs_usage(&s)).unwrap_or_default(),
    }
}

/// The `cpu` line of /proc/stat: (idle + iowait, user..irq total) as
/// Node's `os.cpus()` times count them (user, nice, sys, idle, irq).
fn parse_cpu(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if f.len() < 7 {
        return None;
    }
    let (user, nice, sys, idle, irq) = (f[0], f[1], f[2], f[3], f[5]);
    Some((idle, user + nice + sys + idle + irq))
}

/// (MemTotal, MemAvailable) in bytes.
fn parse_meminfo(mi: &str) -> Option<(u64, u64)> {
    let get = |k: &str| {
        mi.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    let total = get("MemTotal")?;
    let avail = get("MemAvailable").or_else(|| get("MemFree"))?;
    Some((total, avail))
}

fn read_net() -> BTreeMap<String, [u64; 6]> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else { return out };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            continue;
        }
        let base = e.path().join("statistics");
        let mut c = [0u64; 6];
        let files = ["rx_bytes", "tx_bytes", "rx_errors", "tx_errors", "rx_dropped", "tx_dropped"];
        for (i, f) in files.iter().enumerate() {
            c[i] =
                std::fs::read_to_string(base.join(f)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        }
        out.insert(name, c);
    }
    out
}

/// Sectors read and written (512 bytes each) by the block devices, loop,
/// ram, device-mapper and floppy devices left out as pm2 does.
fn read_disk() -> Option<(u64, u64)> {
    let dir = std::fs::read_dir("/sys/block").ok()?;
    let (mut r, mut w) = (0u64, 0u64);
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ["loop", "ram", "dm-", "fd"].iter().any(|p| name.starts_with(p)) {
            continue;
        }
        if let Ok(st) = std::fs::read_to_string(e.path().join("stat")) {
            let f: Vec<u64> = st.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if f.len() > 6 {
                r += f[2] * 512;
                w += f[6] * 512;
            }
        }
    }
    Some((r, w))
}

/// Used % (of used + available, as `df` computes it) and size of every
/// filesystem mounted from a `/dev/` device, once per mount point.
fn fs_usage(mounts: &str) -> Vec<(String, f64, f64)> {
    let mut out: Vec<(String, f64, f64)> = Vec::new();
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 2 || !f[0].starts_with("/dev/") {
            continue;
        }
        // /proc/mounts escapes spaces and tabs as octal.
        let mount = f[1].replace("\\040", " ").replace("\\011", "\t");
        if out.iter().any(|(m, _, _)| *m == mount) {
            continue;
        }
        let Ok(c) = std::ffi::CString::new(mount.as_str()) else { continue };
        // SAFETY: statvfs fills the zeroed struct it is given; `c` is a valid
        // NUL-terminated path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            continue;
        }
        let frag = st.f_frsize as f64;
        let size = st.f_blocks as f64 * frag;
        let avail = st.f_bavail as f64 * frag;
        let used = (st.f_blocks as f64 - st.f_bfree as f64) * frag;
        if used + avail <= 0.0 {
            continue;
        }
        out.push((mount, used / (used + avail) * 100.0, size / 1024.0 / 1024.0 / 1024.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_two_samples() {
        let mut a = Sample { cpu: Some((100, 200)), mem: Some((1000, 250)), ..Default::default() };
        a.net.insert("eth0".into(), [0, 0, 0, 0, 0, 0]);
        a.disk = Some((0, 0));
        let mut b = a.clone();
        b.cpu = Some((150, 300));
        b.net.insert("eth0".into(), [2 * 1024 * 1024, 1024 * 1024, 1, 0, 0, 0]);
        b.disk = Some((1024 * 1024, 0));
        b.fs.push(("/".into(), 37.123, 251.999));
        let m = snapshot(&a, &b, 1.0);
        assert_eq!(m["CPU Usage"]["value"], json!(50.0));
        assert_eq!(m["CPU Usage"]["unit"], "%");
        assert_eq!(m["CPU Usage"]["type"], "metric");
        assert_eq!(m["CPU Usage"]["historic"], true);
        assert_eq!(m["CPU Temperature"]["value"], -1);
        assert_eq!(m["RAM Usage"]["value"], json!(75.0));
        assert_eq!(m["RAM Active"]["value"], 750);
        assert_eq!(m["net:rx_5:eth0"]["value"], json!(2.0));
        assert_eq!(m["net:tx_5:eth0"]["unit"], "mb/s");
        assert_eq!(m["net:rx_errors_60:eth0"]["value"], json!(60.0));
        assert_eq!(m["Disk Reads"]["value"], json!(1.0));
        assert_eq!(m["fs:use:/"]["value"], json!(37.12));
        assert_eq!(m["fs:size:/"]["value"], json!(252.0));
    }

    #[test]
    fn proc_parsers() {
        let stat = "cpu  10 2 3 80 5 1 0 0 0 0\ncpu0 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_cpu(stat), Some((80, 10 + 2 + 3 + 80 + 1)));
        assert_eq!(parse_cpu("nothing"), None);
        let mi = "MemTotal:       2000 kB\nMemFree:         100 kB\nMemAvailable:    500 kB\n";
        assert_eq!(parse_meminfo(mi), Some((2000 * 1024, 500 * 1024)));
    }

    #[test]
    fn real_host_values() {
        let v = system_data();
        assert!(v["RAM Total"]["value"].as_u64().unwrap_or(0) > 0, "{v}");
        assert!(v.get("CPU Usage").is_some(), "{v}");
        assert!(v.get("Disk Reads").is_some(), "{v}");
    }
}
