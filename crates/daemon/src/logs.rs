//! Per-process log files and the pumps that fill them from the child's
//! stdout/stderr.
//!
//! Lines are not torn: a pump writes whole lines (it keeps a partial last
//! line until its newline arrives, the buffer passes [`MAX_PARTIAL`], the
//! stream ends, or nothing more comes for [`PARTIAL_FLUSH`]), and each write
//! is a single `write` on an `O_APPEND` file, so several processes sharing a
//! merged file interleave by line.

use crate::logfile::{open_append, truncate_log};
use crate::timefmt;
use corral_proto::{Event, Stream};
use std::fs::File;
use std::sync::{Arc, Mutex};
use tokio::net::unix::pipe::Receiver;
use tokio::sync::broadcast;

const MAX_PARTIAL: usize = 64 * 1024;
/// How long a partial last line is held for its newline before it is
/// written as is.
const PARTIAL_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

/// Where one process's output goes. Reopened by `reloadLogs`.
#[derive(Debug)]
pub struct LogFiles {
    pub out_path: String,
    pub err_path: String,
    pub combined_path: Option<String>,
    out: Option<File>,
    err: Option<File>,
    combined: Option<File>,
    /// Rotation and failed-write accounting (logrotate.rs).
    rot: crate::logrotate::Rotation,
    /// The user the app runs as (`uid`/`gid`): files are handed to it at
    /// every (re)open, so logs recreated by a rotation stay the app's.
    owner: Option<crate::privileges::Creds>,
}

impl LogFiles {
    pub fn open(out_path: String, err_path: String, combined_path: Option<String>) -> std::io::Result<Self> {
        let mut l = LogFiles {
            out_path,
            err_path,
            combined_path,
            out: None,
            err: None,
            combined: None,
            rot: Default::default(),
            owner: None,
        };
        l.reopen()?;
        Ok(l)
    }

    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.out = open_append(&self.out_path)?;
        self.err = if self.err_path == self.out_path { None } else { open_append(&self.err_path)? };
        self.combined = match &self.combined_path {
            Some(p) => open_append(p)?,
            None => None,
        };
        self.rot.opened(0, &self.out_path, self.out.as_ref());
        self.rot.opened(1, &self.err_path, self.err.as_ref());
        if let Some(p) = &self.combined_path {
            self.rot.opened(2, p, self.combined.as_ref());
        }
        self.give();
        Ok(())
    }

    /// Hands the files to the app's user now and after every reopen
    /// (rotation's included).
    pub fn set_owner(&mut self, owner: Option<crate::privileges::Creds>) {
        self.owner = owner.clone();
        self.rot.set_owner(owner);
        self.give();
    }

    fn give(&self) {
        if let Some(o) = &self.owner {
            for p in [Some(&self.out_path), Some(&self.err_path), self.combined_path.as_ref()]
                .into_iter()
                .flatten()
            {
                o.give(p);
            }
        }
    }

    /// The app's own rotation keys (`log_max_size`...).
    pub fn set_rotation(&mut self, app: crate::rotate::AppOverrides) {
        self.rot.set_app(app);
    }

    /// `rotateInterval` fired: rotate every non-empty file.
    pub fn force_rotate(&mut self) {
        let LogFiles { out_path, err_path, combined_path, out, err, combined, rot, .. } = self;
        rot.force(0, out_path, out);
        rot.force(1, err_path, err);
        if let Some(p) = combined_path {
            rot.force(2, p, combined);
        }
    }

    /// Truncates in place so writers holding the file keep working
    /// (pm2's `flush`); never through a symbolic link.
    pub fn truncate(&self) {
        for p in
            [Some(&self.out_path), Some(&self.err_path), self.combined_path.as_ref()].into_iter().flatten()
        {
            if let Err(e) = truncate_log(p) {
                crate::dlog::error(&format!("flush: {e}"));
            }
        }
    }

    /// A failing disk must not stop the pump (the child would block on a
    /// full pipe): `rot.write` drops and counts the chunk, the next write
    /// retries; it also rotates the file once it is due.
    fn write(&mut self, stream: &Stream, bytes: &[u8]) {
        let LogFiles { out_path, err_path, combined_path, out, err, combined, rot, .. } = self;
        match stream {
            Stream::Err if err.is_some() => rot.write(1, err_path, err, bytes),
            _ => rot.write(0, out_path, out, bytes),
        }
        if let Some(p) = combined_path {
            rot.write(2, p, combined, bytes);
        }
    }
}

/// A child's stdin pipe as a non-blocking file: a write to an app that does
/// not read its stdin fails with `WouldBlock` instead of stalling the daemon.
pub fn nonblocking_file(fd: std::os::fd::OwnedFd) -> File {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own; no memory is involved.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    File::from(fd)
}

/// Bytes written to a pipe and not read yet (`FIONREAD`, which Linux
/// answers for either end); 0 when unknown.
pub fn unread_bytes(f: &File) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`, which we own.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r == 0 && n > 0 {
        n as usize
    } else {
        0
    }
}

/// Identity of the process a pump works for, for the events it publishes.
#[derive(Debug, Clone)]
pub struct Source {
    pub pm_id: u32,
    pub name: String,
    pub namespace: String,
    pub date_format: Option<String>,
    pub json: bool,
    pub disabled: bool,
}

thread_local! {
    /// One read buffer per thread instead of one per pipe: hundreds of idle
    /// apps must not each hold a read buffer. Only borrowed inside a
    /// synchronous `try_read`.
    static CHUNK: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
}

/// Reads what the pipe has now into `buf`: `Ok(0)` at EOF.
async fn read_some(r: &Receiver, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    loop {
        r.readable().await?;
        let res: std::io::Result<usize> = CHUNK.with(|c| {
            let mut c = c.borrow_mut();
            let n = r.try_read(&mut c)?;
            buf.extend_from_slice(&c[..n]);
            Ok(n)
        });
        match res {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Copies one stream of a child into its log files and onto the event bus
/// until EOF. Holds no buffer while the child is quiet except a partial line.
pub async fn pump(
    r: Receiver,
    stream: Stream,
    files: Arc<Mutex<LogFiles>>,
    src: Source,
    bus: broadcast::Sender<Event>,
) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if crate::upgrade::pause::is_paused() {
            // An in-place upgrade: what the child writes now waits in the
            // pipe for the next image's pump; a partial line read already
            // cannot be handed over, so it is written now.
            if !buf.is_empty() {
                emit(&buf, &stream, &files, &src, &bus);
                buf = Vec::new();
            }
            crate::upgrade::pause::resumed().await;
            continue;
        }
        let n = if buf.is_empty() {
            tokio::select! {
                n = read_some(&r, &mut buf) => n.unwrap_or(0),
                // `read_some` only awaits readiness before its synchronous
                // read, so leaving it here loses nothing.
                _ = crate::upgrade::pause::paused() => continue,
            }
        } else {
            // A partial line waits for its newline only briefly: output
            // written without one (a prompt, `process.stderr.write('x')`)
            // must reach the log as pm2 writes it, not sit here until the
            // process exits. `read_some` only awaits readiness, so the
            // timeout never loses data.
            let read = tokio::select! {
                r = tokio::time::timeout(PARTIAL_FLUSH, read_some(&r, &mut buf)) => r,
                _ = crate::upgrade::pause::paused() => continue,
            };
            match read {
                Ok(n) => n.unwrap_or(0),
                Err(_) => {
                    emit(&buf, &stream, &files, &src, &bus);
                    buf = Vec::new();
                    continue;
                }
            }
        };
        if n == 0 {
            if !buf.is_empty() {
                buf.push(b'\n');
                emit(&buf, &stream, &files, &src, &bus);
            }
            return;
        }
        let cut = match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if buf.len() >= MAX_PARTIAL => buf.len(),
            None => continue,
        };
        emit(&buf[..cut], &stream, &files, &src, &bus);
        buf.drain(..cut);
        if buf.is_empty() {
            buf = Vec::new();
        }
    }
}

fn emit(
    lines: &[u8],
    stream: &Stream,
    files: &Arc<Mutex<LogFiles>>,
    src: &Source,
    bus: &broadcast::Sender<Event>,
) {
    if src.disabled {
        return;
    }
    let at = timefmt::now_ms();
    let text = String::from_utf8_lossy(lines);
    let formatted: std::borrow::Cow<'_, [u8]> = if src.json {
        let mut s = String::new();
        for line in text.split_inclusive('\n') {
            let v = serde_json::json!({
                "message": line,
                // pm2: the log_date_format if set, else `toISOString()`.
                "timestamp": match &src.date_format {
                    Some(f) => timefmt::format_local(at, f),
                    None => timefmt::iso_utc(at),
                },
                "type": match stream { Stream::Out => "out", Stream::Err => "err" },
                "process_id": src.pm_id,
                "app_name": src.name,
            });
            s.push_str(&v.to_string());
            s.push('\n');
        }
        std::borrow::Cow::Owned(s.into_bytes())
    } else if let Some(fmt) = &src.date_format {
        let prefix = format!("{}: ", timefmt::format_local(at, fmt));
        let mut s = String::with_capacity(text.len() + 32);
        for line in text.split_inclusive('\n') {
            s.push_str(&prefix);
            s.push_str(line);
        }
        std::borrow::Cow::Owned(s.into_bytes())
    } else {
        std::borrow::Cow::Borrowed(lines)
    };
    if let Ok(mut f) = files.lock() {
        f.write(stream, &formatted);
    }
    if bus.receiver_count() > 0 {
        let _ = bus.send(Event::Log {
            pm_id: src.pm_id,
            name: src.name.clone(),
            namespace: src.namespace.clone(),
            stream: stream.clone(),
            at,
            data: text.into_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log source of one test process.
    fn test_source() -> Source {
        Source {
            pm_id: 0,
            name: "a".into(),
            namespace: "default".into(),
            date_format: None,
            json: false,
            disabled: false,
        }
    }

    #[tokio::test]
    async fn pump_writes_whole_lines_and_flushes_partial_at_eof() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log").to_string_lossy().into_owned();
        let err = dir.path().join("e.log").to_string_lossy().into_owned();
        let files = Arc::new(Mutex::new(LogFiles::open(out.clone(), err, None).unwrap()));
        let (bus, _) = broadcast::channel(16);
        let src = test_source();
        let (mut tx, rx) = tokio::net::unix::pipe::pipe().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"one\ntw").await.unwrap();
        drop(tx);
        pump(rx, Stream::Out, files.clone(), src, bus).await;
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "one\ntw\n");
    }

    #[tokio::test]
    async fn a_partial_line_is_written_while_the_stream_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log").to_string_lossy().into_owned();
        let err = dir.path().join("e.log").to_string_lossy().into_owned();
        let files = Arc::new(Mutex::new(LogFiles::open(out, err.clone(), None).unwrap()));
        let (bus, _) = broadcast::channel(16);
        let src = test_source();
        let (mut tx, rx) = tokio::net::unix::pipe::pipe().unwrap();
        let task = tokio::spawn(pump(rx, Stream::Err, files.clone(), src, bus));
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"errwrite").await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::read_to_string(&err).unwrap_or_default() != "errwrite" {
            assert!(std::time::Instant::now() < deadline, "partial chunk never written");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"errwrite\n").await.unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(std::fs::read_to_string(&err).unwrap(), "errwriteerrwrite\n");
    }
}
