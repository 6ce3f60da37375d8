//! pm2's `PM2_HOME` layout. Only the names; nothing here does I/O
//! except [`Home::ensure`].

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
    /// `PM2_DUMP_FILE_PATH`, when set.
    pub dump_file: Option<PathBuf>,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into(), dump_file: None }
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn pids(&self) -> PathBuf {
        self.root.join("pids")
    }
    /// pm2's RPC socket (axon req/rep), for pm2's own clients.
    pub fn rpc_sock(&self) -> PathBuf {
        self.root.join("rpc.sock")
    }
    /// pm2's event bus socket (axon pub/sub).
    pub fn pub_sock(&self) -> PathBuf {
        self.root.join("pub.sock")
    }
    /// Corral's own control socket (the CLI's length-prefixed protocol).
    /// `NOTIFY_SOCKET` of apps that use sd_notify (bound on first use).
    pub fn notify_sock(&self) -> PathBuf {
        self.root.join("notify.sock")
    }

    pub fn corral_sock(&self) -> PathBuf {
        self.root.join("corral.sock")
    }
    /// pm2's `PM2_PID_FILE_PATH` override, as `PM2_DUMP_FILE_PATH` for the
    /// dump.
    pub fn pid_file(&self) -> PathBuf {
        env_path("PM2_PID_FILE_PATH").unwrap_or_else(|| self.root.join("pm2.pid"))
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("pm2.log")
    }
    pub fn dump(&self) -> PathBuf {
        self.dump_file.clone().unwrap_or_else(|| self.root.join("dump.pm2"))
    }

    /// Creates the directories pm2 creates on every invocation. A new home
    /// is owner-only (0700): it holds the dump with every app's environment,
    /// the logs and the control socket. An existing home keeps its mode.
    pub fn ensure(&self) -> std::io::Result<()> {
        create_private_dir(&self.root)?;
        for d in [self.logs(), self.pids(), self.root.join("modules")] {
            std::fs::create_dir_all(&d)?;
        }
        Ok(())
    }
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// `mkdir -p` whose last component, when it has to be created, is 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other,
    }
}

/// Creates (or replaces the content of) an owner-only file and fsyncs it. A
/// file that already existed with wider permissions is narrowed first.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()
}

/// Inserts `-<id>` before the extension, as pm2 does for per-instance logs
/// and pid files (`app-out.log` -> `app-out-3.log`).
pub fn with_id_suffix(path: &str, id: u32) -> String {
    let p = Path::new(path);
    let file = p.file_name().and_then(|f| f.to_str()).unwrap_or(path);
    let (stem, ext) = match file.rfind('.') {
        Some(i) if i > 0 => (&file[..i], &file[i..]),
        _ => (file, ""),
    };
    let new = format!("{stem}-{id}{ext}");
    match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(new).to_string_lossy().into_owned(),
        _ => new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_rules() {
        assert_eq!(with_id_suffix("/a/b/app-out.log", 3), "/a/b/app-out-3.log");
        assert_eq!(with_id_suffix("/a/b/app.pid", 0), "/a/b/app-0.pid");
        assert_eq!(with_id_suffix("/a/noext", 1), "/a/noext-1");
    }

    #[test]
    fn new_home_is_owner_only_existing_home_is_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path().join("a/b/.pm2"));
        home.ensure().unwrap();
        let mode = std::fs::metadata(&home.root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(home.logs().is_dir() && home.pids().is_dir());
        std::fs::set_permissions(&home.root, std::fs::Permissions::from_mode(0o755)).unwrap();
        home.ensure().unwrap();
        let mode = std::fs::metadata(&home.root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }
}
