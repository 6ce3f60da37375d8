//! Per-process log files and the pumps that fill them from the child's
//! stdout/stderr.
//!
//! Lines are never torn: a pump writes only whole lines (it keeps a partial
//! last line until its newline arrives, the buffer passes [`MAX_PARTIAL`],
//! or the stream ends), and each write is a single `write` on an `O_APPEND`
//! file, so several processes sharing a merged file interleave by line.

use crate::logfile::{open_append, truncate_log};
use crate::timefmt;
use corral_proto::{Event, Stream};
use std::fs::File;
use std::sync::{Arc, Mutex};
use tokio::net::unix::pipe::Receiver;
use tokio::sync::broadcast;

const MAX_PARTIAL: usize = 64 * 1024;

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
        let n = read_some(&r, &mut buf).await.unwrap_or(0);
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
                "timestamp": timefmt::format_local(at, "YYYY-MM-DDTHH:mm:ss"),
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

    #[tokio::test]
    async fn pump_writes_whole_lines_and_flushes_partial_at_eof() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log").to_string_lossy().into_owned();
        let err = dir.path().join("e.log").to_string_lossy().into_owned();
        let files = Arc::new(Mutex::new(LogFiles::open(out.clone(), err, None).unwrap()));
        let (bus, _) = broadcast::channel(16);
        let src = Source {
            pm_id: 0,
            name: "a".into(),
            namespace: "default".into(),
            date_format: None,
            json: false,
            disabled: false,
        };
        let (mut tx, rx) = tokio::net::unix::pipe::pipe().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"one\ntw").await.unwrap();
        drop(tx);
        pump(rx, Stream::Out, files.clone(), src, bus).await;
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "one\ntw\n");
    }
}
