//! `dump.pm2`: save (atomic, previous kept as `.bak`) and resurrect.
//!
//! A failed or empty save never destroys a good dump: the new content is
//! written to a temporary file and fsynced before anything else moves, and
//! the old dump is copied to `.bak` before the rename replaces it.

use crate::error::DaemonError;
use crate::state::SharedRef;
use crate::supervisor;
use corral_config::Context;
use corral_proto::ProcInfo;
use std::path::Path;

pub fn save(shared: &SharedRef, force: bool, pretty: bool) -> Result<(String, usize), DaemonError> {
    // Modules are not part of the saved list (as in pm2): the CLI starts
    // them from module_conf.json whenever it starts a daemon.
    let infos: Vec<ProcInfo> = shared
        .table()
        .procs
        .values()
        .filter(|e| !corral_proto::is_module(&e.info.app))
        .map(|e| e.info.clone())
        .collect();
    let path = shared.home.dump();
    let path_s = path.to_string_lossy().into_owned();
    if infos.is_empty() && !force {
        return Ok((path_s, 0));
    }
    let entries: Vec<serde_json::Value> = infos
        .iter()
        .map(|p| {
            let mut v = corral_config::pm2_env(p);
            if let Some(o) = v.as_object_mut() {
                // pm2 drops these so a resurrect allocates fresh ids.
                o.remove("pm_id");
                o.remove("prev_restart_delay");
            }
            v
        })
        .collect();
    let text = if pretty { serde_json::to_string_pretty(&entries) } else { serde_json::to_string(&entries) }
        .map_err(|e| DaemonError::Dump(format!("cannot serialize the process list: {e}")))?;
    write_atomic(&path, text.as_bytes())
        .map_err(|e| DaemonError::Dump(format!("cannot write {path_s}: {e}")))?;
    Ok((path_s, infos.len()))
}

/// Writes `bytes` to `path` atomically: a 0600 temporary file (the dump holds
/// every app's environment, secrets included), fsynced, then renamed over the
/// dump after the old dump was copied to `.bak` (also 0600). Whatever fails,
/// no `.tmp` file is left behind and the old dump is untouched.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("pm2.tmp");
    let result = write_atomic_via(path, &tmp, bytes);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_atomic_via(path: &Path, tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::paths::write_private(tmp, bytes)?;
    if path.exists() {
        let bak = bak_path(path);
        let bak_tmp = bak.with_extension("bak.tmp");
        let copied = std::fs::read(path).and_then(|old| crate::paths::write_private(&bak_tmp, &old));
        if let Err(e) = copied.and_then(|()| std::fs::rename(&bak_tmp, &bak)) {
            let _ = std::fs::remove_file(&bak_tmp);
            return Err(e);
        }
    }
    std::fs::rename(tmp, path)
}

fn bak_path(path: &Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".bak");
    s.into()
}

/// Reads the dump, falling back to `.bak` when the dump is missing or does
/// not parse. pm2 deletes a dump that fails to parse; Corral moves it aside
/// to `dump.pm2.bad` for the user to inspect (so the broken file is no
/// longer where the next resurrect looks, as with pm2, and nothing is lost).
fn read_dump(shared: &SharedRef) -> Result<Vec<serde_json::Value>, DaemonError> {
    let path = shared.home.dump();
    let mut last_err = format!("No processes saved; DUMP file doesn't exist ({})", path.display());
    let mut broken_main = false;
    for p in [path.clone(), bak_path(&path)] {
        match std::fs::read(&p) {
            Ok(bytes) => match serde_json::from_slice::<Vec<serde_json::Value>>(&bytes) {
                Ok(v) => {
                    if broken_main {
                        move_aside(&path);
                    }
                    return Ok(v);
                }
                Err(e) => {
                    broken_main |= p == path;
                    last_err = format!("{} is not a valid process list: {e}", p.display());
                }
            },
            Err(_) => continue,
        }
    }
    Err(DaemonError::Dump(last_err))
}

/// `dump.pm2` -> `dump.pm2.bad` (replacing an older one).
fn move_aside(path: &Path) {
    let mut bad = path.as_os_str().to_owned();
    bad.push(".bad");
    let bad = std::path::PathBuf::from(bad);
    match std::fs::rename(path, &bad) {
        Ok(()) => crate::dlog::log(&format!(
            "{} could not be parsed: moved to {}, resurrected from the backup",
            path.display(),
            bad.display()
        )),
        Err(e) => crate::dlog::error(&format!("cannot move {} aside: {e}", path.display())),
    }
}

pub async fn resurrect(shared: &SharedRef) -> Result<(Vec<String>, Vec<u32>), DaemonError> {
    let entries = read_dump(shared)?;
    let running: Vec<String> = shared.table().procs.values().map(|e| e.info.app.name.clone()).collect();
    let mut restored = Vec::new();
    let mut ids = Vec::new();
    let mut waits = Vec::new();
    for entry in entries {
        let cwd = entry.get("pm_cwd").and_then(|v| v.as_str()).unwrap_or("/").to_string();
        let ctx = Context {
            cwd: cwd.into(),
            env: Default::default(),
            pm2_home: shared.home.root.clone(),
            env_name: None,
            nproc: shared.nproc,
            source: shared.home.dump().to_string_lossy().into_owned(),
        };
        let mut app = match corral_config::app_from_pm2_env(&entry, &ctx) {
            Ok(a) => a,
            Err(e) => {
                crate::dlog::error(&format!("resurrect: skipping an entry: {e}"));
                continue;
            }
        };
        // A dump written before the size limits existed may hold an app that
        // would break every reply: leave it in the file, do not load it.
        if let Err(e) = app.check_limits() {
            crate::dlog::error(&format!("resurrect: skipping an entry: {e}"));
            continue;
        }
        // An app saved with a uid/gid this daemon cannot apply must not
        // come back running as the daemon's user.
        if let Err(e) = crate::privileges::normalize(&mut app) {
            crate::dlog::error(&format!("resurrect: skipping app {}: {e}", app.name));
            continue;
        }
        if running.contains(&app.name) {
            continue;
        }
        let instance = entry.get("NODE_APP_INSTANCE").and_then(|v| v.as_u64()).map(|v| v as u32);
        let stopped = entry.get("status").and_then(|v| v.as_str()) == Some("stopped");
        let restart_time = entry.get("restart_time").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        restored.push(app.script.clone());
        let handle = supervisor::register(shared, app, instance);
        let id = handle.id();
        ids.push(id);
        if stopped {
            shared.with_entry(id, |e| e.info.restart_time = restart_time);
            continue;
        }
        waits.push(handle.start());
    }
    for w in waits {
        let _ = w.await;
    }
    Ok((restored, ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn dump_and_backup_are_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let dump = d.path().join("dump.pm2");
        // An old dump written world-readable by an earlier version.
        std::fs::write(&dump, b"[1]").unwrap();
        std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&dump, b"[2]").unwrap();
        assert_eq!(std::fs::read(&dump).unwrap(), b"[2]");
        assert_eq!(mode(&dump), 0o600);
        let bak = bak_path(&dump);
        assert_eq!(std::fs::read(&bak).unwrap(), b"[1]");
        assert_eq!(mode(&bak), 0o600);
        assert!(!d.path().join("dump.pm2.tmp").exists());
        assert!(!d.path().join("dump.pm2.bak.tmp").exists());
    }

    #[test]
    fn failed_save_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        // A dump path that cannot be replaced (a directory): the save fails
        // after the temporary file was written.
        let dump = d.path().join("dump.pm2");
        std::fs::create_dir(&dump).unwrap();
        assert!(write_atomic(&dump, b"[]").is_err());
        assert!(!d.path().join("dump.pm2.tmp").exists());
        assert!(!d.path().join("dump.pm2.bak.tmp").exists());
        assert!(dump.is_dir());
    }
}
