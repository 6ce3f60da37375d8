//! Opening and truncating log files safely (no following a planted
//! symbolic link to a regular file); shared by the log writers and the
//! rotation.

use std::fs::{File, OpenOptions};

pub(crate) fn open_append(path: &str) -> std::io::Result<Option<File>> {
    if path == "/dev/null" {
        return Ok(None);
    }
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    open_log(path).map(Some)
}

/// Opens a log file for appending without following a symbolic link to a
/// regular file: a link planted where a log goes (`/tmp/app.log ->
/// ~/.ssh/authorized_keys`) must not make the daemon write, or `flush`
/// truncate, another file. Followed anyway: a link to a stream (a fifo, a
/// tty; appending to it cannot clobber anything) and the system's aliases of
/// the daemon's own descriptors (`/dev/stdout`, `/dev/fd/N`, which containers
/// use). The stream check is made on the opened descriptor, so swapping the
/// link between the check and the open changes nothing.
pub fn open_log(path: &str) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let nofollow = OpenOptions::new().create(true).append(true).custom_flags(libc::O_NOFOLLOW).open(path);
    match nofollow {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let f = OpenOptions::new().append(true).open(path)?;
            if f.metadata()?.is_file() && !own_descriptor_alias(path) {
                return Err(symlink_refused(path));
            }
            Ok(f)
        }
        other => other,
    }
}

/// Root-owned system links that name one of the daemon's own descriptors;
/// nobody else can plant or redirect them.
fn own_descriptor_alias(path: &str) -> bool {
    matches!(path, "/dev/stdout" | "/dev/stderr")
        || path
            .strip_prefix("/dev/fd/")
            .or_else(|| path.strip_prefix("/proc/self/fd/"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn symlink_refused(path: &str) -> std::io::Error {
    let target = std::fs::read_link(path).map(|t| format!(" (to {})", t.display())).unwrap_or_default();
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "refusing to use log file {path}: it is a symbolic link{target}; point the log option at the file itself"
        ),
    )
}

/// Empties a log file in place (`pm2 flush`) so writers holding it keep
/// working. Never through a symbolic link, and only a regular file: a
/// device or fifo has nothing to truncate.
pub fn truncate_log(path: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if path == "/dev/null" {
        return Ok(());
    }
    let f = match OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(symlink_refused(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if f.metadata()?.is_file() {
        f.set_len(0)?;
    }
    Ok(())
}
