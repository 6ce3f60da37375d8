//! pm2's `PM2_HOME` layout (spec §3.1). Only the names; nothing here does I/O
//! except [`Home::ensure`].

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn pids(&self) -> PathBuf {
        self.root.join("pids")
    }
    pub fn rpc_sock(&self) -> PathBuf {
        self.root.join("rpc.sock")
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
        env_path("PM2_DUMP_FILE_PATH").unwrap_or_else(|| self.root.join("dump.pm2"))
    }

    /// Creates the directories pm2 creates on every invocation.
    pub fn ensure(&self) -> std::io::Result<()> {
        for d in [self.root.clone(), self.logs(), self.pids(), self.root.join("modules")] {
            std::fs::create_dir_all(&d)?;
        }
        Ok(())
    }
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// pm2 replaces every character outside `[a-zA-Z0-9.-]` in file names.
pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
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
        assert_eq!(sanitize("python3 -m http"), "python3--m-http");
    }
}
