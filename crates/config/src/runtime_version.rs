//! The oldest Bun and Deno that can run cluster workers, checked when an
//! app is resolved so that `pm2 start` refuses a too-old runtime with an
//! error instead of starting workers that crash in a loop. Measured with
//! each release from npm: Bun 1.1.24 workers do not set `SO_REUSEPORT`, so
//! the second one fails with EADDRINUSE; Deno 2.7 has no `node:cluster`
//! worker side, with the same result.

use corral_proto::{AppSpec, ExecMode, Runtime};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// major.minor.patch
type Version = (u32, u32, u32);

pub const MIN_BUN: Version = (1, 1, 25);
pub const MIN_DENO: Version = (2, 8, 0);

/// Why this cluster app's runtime is too old, or `None` (not a Bun or Deno
/// cluster app, recent enough, or its version could not be read: then the
/// app starts and the workers' own errors tell).
pub fn too_old(spec: &AppSpec, interpreter: &Path) -> Option<String> {
    if spec.exec_mode != ExecMode::Cluster {
        return None;
    }
    let (name, min) = match spec.runtime() {
        Runtime::Bun => ("Bun", MIN_BUN),
        Runtime::Deno => ("Deno", MIN_DENO),
        _ => return None,
    };
    let v = version_of(interpreter)?;
    (v < min).then(|| {
        format!(
            "{name} {}.{}.{} cannot run cluster workers ({name} {}.{}.{} or later can); upgrade it, or run the app in fork mode",
            v.0, v.1, v.2, min.0, min.1, min.2
        )
    })
}

/// `<interpreter> --version`, parsed; cached per path (one run per process).
fn version_of(interpreter: &Path) -> Option<Version> {
    type Cache = HashMap<std::path::PathBuf, Option<Version>>;
    static CACHE: Mutex<Option<Cache>> = Mutex::new(None);
    if let Ok(mut c) = CACHE.lock() {
        if let Some(v) = c.get_or_insert_with(HashMap::new).get(interpreter) {
            return *v;
        }
    }
    let v = run_version(interpreter).as_deref().and_then(parse_version);
    if let Ok(mut c) = CACHE.lock() {
        c.get_or_insert_with(HashMap::new).insert(interpreter.to_path_buf(), v);
    }
    v
}

/// The first line of `--version`, waiting at most 5 s (a wedged binary
/// must not hang `pm2 start`).
fn run_version(interpreter: &Path) -> Option<String> {
    let mut child = Command::new(interpreter)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    out.lines().next().map(str::to_owned)
}

/// `1.1.24`, `1.3.11-canary.20260322.1`, `deno 2.7.14 (stable, ...)`.
fn parse_version(line: &str) -> Option<Version> {
    let word = line.split_whitespace().find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let core = word.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|n| n.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.1.24"), Some((1, 1, 24)));
        assert_eq!(parse_version("1.3.11-canary.20260322.1"), Some((1, 3, 11)));
        assert_eq!(
            parse_version("deno 2.7.14 (stable, release, x86_64-unknown-linux-gnu)"),
            Some((2, 7, 14))
        );
        assert_eq!(parse_version("nonsense"), None);
        assert!((1, 1, 24) < MIN_BUN && (1, 1, 25) >= MIN_BUN && (1, 4, 5) >= MIN_BUN);
        assert!((2, 7, 14) < MIN_DENO && (2, 8, 0) >= MIN_DENO);
    }
}
