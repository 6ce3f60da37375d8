//! Built-in log rotation (the I/O side of `rotate.rs`) and soft-failing log
//! writes.
//!
//! The daemon owns every log fd, so a file rotates by rename + reopen, done
//! by the writer itself right after the write that made the file reach
//! `max_size`, under the `LogFiles` lock the pumps write under: every line
//! lands whole in exactly one file, none is lost or written twice (pm2-logrotate
//! copies then truncates, which loses what the app writes in between).
//! Several processes may share a path (`merge_logs`, one combined file): they
//! share one [`PathState`], so their writes add up to one size, and a writer
//! whose path was rotated by another reopens before its next write (all
//! writes run on the daemon's one thread, so none reaches the renamed file
//! after its rotation, and compressing it loses nothing).
//!
//! Compression and `retain` run on one background thread, never on the
//! daemon's. A background task re-reads `module_conf.json` every
//! `workerInterval`, fires `rotateInterval`, and rotates `pm2.log`.
//!
//! A failing write (full disk) drops that chunk and is counted; the next
//! write tries again, so logging resumes by itself when space returns. The
//! first failure and the recovery are reported in `pm2.log`.

use crate::rotate::{self, AppOverrides, Policy, Settings};
use crate::state::SharedRef;
use crate::{dlog, timefmt};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, SystemTime};

static GLOBAL: RwLock<Option<Arc<Settings>>> = RwLock::new(None);
/// Bumped whenever the global settings change, so writers recompute their
/// policy with one atomic load per write.
static GEN: AtomicU64 = AtomicU64::new(1);
/// A `pm2-logrotate` module app runs under this daemon: it rotates, we stand
/// aside (two rotators would rotate the same file twice).
static MODULE_RUNNING: AtomicBool = AtomicBool::new(false);

/// Log writes that failed (chunks dropped), over the daemon's life.
pub static FAILED_WRITES: AtomicU64 = AtomicU64::new(0);
/// Rotations done, over the daemon's life.
pub static ROTATIONS: AtomicU64 = AtomicU64::new(0);

pub fn global() -> Option<Arc<Settings>> {
    if MODULE_RUNNING.load(Ordering::Relaxed) {
        return None;
    }
    GLOBAL.read().ok().and_then(|g| g.clone())
}

fn set_global(s: Option<Settings>) {
    if let Ok(mut g) = GLOBAL.write() {
        if g.as_deref() != s.as_ref() {
            *g = s.map(Arc::new);
            GEN.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads the `pm2-logrotate` section of `module_conf.json` (absent or
/// unreadable file = rotation off).
pub fn reload_config(home: &Path) {
    let parsed = std::fs::read_to_string(home.join("module_conf.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| Settings::from_module_conf(&v));
    set_global(parsed);
}

/// One log path's shared state: every open fd on it adds to `size`; `gen`
/// counts its rotations.
#[derive(Debug, Default)]
pub struct PathState {
    gen: AtomicU64,
    size: AtomicU64,
}

fn path_state(path: &str) -> Arc<PathState> {
    static PATHS: OnceLock<Mutex<HashMap<String, Weak<PathState>>>> = OnceLock::new();
    let mut m = match PATHS.get_or_init(Default::default).lock() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    if let Some(s) = m.get(path).and_then(Weak::upgrade) {
        return s;
    }
    m.retain(|_, w| w.strong_count() > 0);
    let s = Arc::new(PathState::default());
    m.insert(path.to_string(), Arc::downgrade(&s));
    s
}

#[derive(Debug, Default)]
struct Slot {
    state: Option<Arc<PathState>>,
    /// The path's rotation generation our fd was opened at.
    gen: u64,
    failed_writes: u64,
    dropped_bytes: u64,
}

/// Rotation and failure accounting for one process's log files
/// (out, err, combined = slots 0, 1, 2).
#[derive(Debug, Default)]
pub struct Rotation {
    app: AppOverrides,
    /// The app's user (`uid`/`gid`): a file recreated by a rotation is
    /// handed to it like the first one.
    owner: Option<crate::privileges::Creds>,
    cached: Option<(u64, Option<Policy>)>,
    slots: [Slot; 3],
}

impl Rotation {
    pub fn set_owner(&mut self, owner: Option<crate::privileges::Creds>) {
        self.owner = owner;
    }

    pub fn set_app(&mut self, app: AppOverrides) {
        self.app = app;
        self.cached = None;
    }

    fn policy(&mut self) -> Option<&Policy> {
        let gen = GEN.load(Ordering::Relaxed) + u64::from(MODULE_RUNNING.load(Ordering::Relaxed)) * (1 << 63);
        if self.cached.as_ref().is_none_or(|(g, _)| *g != gen) {
            let g = global();
            self.cached = Some((gen, rotate::effective(g.as_deref(), &self.app)));
        }
        self.cached.as_ref().and_then(|(_, p)| p.as_ref())
    }

    /// `file` was (re)opened on `path`.
    pub fn opened(&mut self, slot: usize, path: &str, file: Option<&File>) {
        let Some(s) = self.slots.get_mut(slot) else { return };
        let Some(f) = file else {
            s.state = None;
            return;
        };
        let st = path_state(path);
        st.size.store(f.metadata().map(|m| m.len()).unwrap_or(0), Ordering::Relaxed);
        s.gen = st.gen.load(Ordering::Relaxed);
        s.state = Some(st);
    }

    /// Writes `bytes` (whole lines) to `file`, then rotates it when due.
    pub fn write(&mut self, slot: usize, path: &str, file: &mut Option<File>, bytes: &[u8]) {
        if file.is_none() || slot >= self.slots.len() {
            return;
        }
        let rotated_elsewhere = self.slots[slot]
            .state
            .as_ref()
            .is_some_and(|st| st.gen.load(Ordering::Relaxed) != self.slots[slot].gen);
        if rotated_elsewhere {
            self.reopen(slot, path, file);
        }
        let Some(f) = file.as_mut() else { return };
        let s = &mut self.slots[slot];
        match f.write_all(bytes) {
            Ok(()) => {
                if s.failed_writes > 0 {
                    dlog::log(&format!(
                        "log file {path}: writes resumed ({} chunks, {} bytes were dropped)",
                        s.failed_writes, s.dropped_bytes
                    ));
                    s.failed_writes = 0;
                    s.dropped_bytes = 0;
                }
                let size = match &s.state {
                    Some(st) => st.size.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64,
                    None => 0,
                };
                if self.policy().is_some_and(|p| rotate::due(p, size)) {
                    self.rotate(slot, path, file);
                }
            }
            Err(e) => {
                // The pump must go on (a child blocked on a full pipe would
                // stop): drop the chunk, count it, retry on the next one.
                FAILED_WRITES.fetch_add(1, Ordering::Relaxed);
                if s.failed_writes == 0 {
                    dlog::error(&format!(
                        "log file {path}: write failed ({e}); its lines are dropped until writes succeed again"
                    ));
                }
                s.failed_writes += 1;
                s.dropped_bytes += bytes.len() as u64;
            }
        }
    }

    /// `rotateInterval`: rotates a non-empty file whatever its size.
    pub fn force(&mut self, slot: usize, path: &str, file: &mut Option<File>) {
        if file.is_none() || self.policy().is_none() {
            return;
        }
        let size =
            self.slots.get(slot).and_then(|s| s.state.as_ref()).map(|st| st.size.load(Ordering::Relaxed));
        let behind = self
            .slots
            .get(slot)
            .and_then(|s| s.state.as_ref().map(|st| st.gen.load(Ordering::Relaxed) != s.gen))
            .unwrap_or(false);
        if behind {
            // Another process sharing the path rotated it already.
            self.reopen(slot, path, file);
        } else if size.unwrap_or(0) > 0 {
            self.rotate(slot, path, file);
        }
    }

    fn reopen(&mut self, slot: usize, path: &str, file: &mut Option<File>) {
        match crate::logs::open_append(path) {
            Ok(f) => {
                *file = f;
                if let Some(o) = &self.owner {
                    o.give(path);
                }
                self.opened(slot, path, file.as_ref());
            }
            Err(e) => dlog::error(&format!("log file {path}: cannot reopen ({e})")),
        }
    }

    fn rotate(&mut self, slot: usize, path: &str, file: &mut Option<File>) {
        let Some(policy) = self.policy().cloned() else { return };
        let Some(st) = self.slots[slot].state.clone() else { return };
        // A counter run ahead (a truncating `pm2 flush`) is corrected by
        // the file itself before anything is renamed.
        if let Some(f) = file.as_ref() {
            let real = f.metadata().map(|m| m.len()).unwrap_or(0);
            st.size.store(real, Ordering::Relaxed);
            if real == 0
                || (policy.max_size > 0 && real < policy.max_size && !FORCING.load(Ordering::Relaxed))
            {
                return;
            }
        }
        match rename_aside(path, &policy) {
            Ok(target) => {
                // `retain` orders rotated files by mtime; the kernel's
                // coarse clock can give several fast rotations one mtime,
                // so stamp the rotation time at full precision.
                if let Some(f) = file.as_ref() {
                    let _ = f.set_modified(SystemTime::now());
                }
                st.gen.fetch_add(1, Ordering::Relaxed);
                self.reopen(slot, path, file);
                ROTATIONS.fetch_add(1, Ordering::Relaxed);
                after_rotation(target, path, &policy);
            }
            Err(e) => dlog::error(&format!("log file {path}: rotation failed ({e})")),
        }
    }
}

/// Set while `rotateInterval` forces rotations (size ignored).
static FORCING: AtomicBool = AtomicBool::new(false);

/// Renames `path` to its rotated name (never over an existing file).
fn rename_aside(path: &str, policy: &Policy) -> std::io::Result<String> {
    let stamp = timefmt::format(timefmt::now_ms(), &policy.date_format);
    let taken = |p: &str| Path::new(p).exists() || Path::new(&format!("{p}.gz")).exists();
    let mut n = 0u32;
    let target = loop {
        let t = rotate::rotated_name(path, &stamp, n);
        if !taken(&t) {
            break t;
        }
        n += 1;
        if n > 100_000 {
            return Err(std::io::Error::other("no free rotated file name"));
        }
    };
    std::fs::rename(path, &target)?;
    Ok(target)
}

struct Job {
    rotated: String,
    compress: bool,
    retain: Option<usize>,
    dir: PathBuf,
    prefix: String,
}

/// Hands compression and `retain` to the background thread.
fn after_rotation(rotated: String, path: &str, policy: &Policy) {
    let p = Path::new(path);
    let dir = p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let job = Job {
        rotated,
        compress: policy.compress,
        retain: policy.retain,
        dir,
        prefix: rotate::rotated_prefix(&name),
    };
    if !job.compress && job.retain.is_none() {
        return;
    }
    static WORKER: OnceLock<Mutex<Option<std::sync::mpsc::Sender<Job>>>> = OnceLock::new();
    let w = WORKER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new().name("logrotate".into()).spawn(move || {
            while let Ok(job) = rx.recv() {
                run_job(&job);
            }
        });
        Mutex::new(spawned.ok().map(|_| tx))
    });
    let sent = w.lock().ok().and_then(|g| g.as_ref().map(|tx| tx.send(job).is_ok()));
    if sent != Some(true) {
        dlog::error("log rotation: the background thread is gone; rotated files are kept as they are");
    }
}

fn run_job(job: &Job) {
    // `retain` of a later rotation may have deleted it already.
    if job.compress && Path::new(&job.rotated).exists() {
        if let Err(e) = gzip(&job.rotated) {
            dlog::error(&format!("log rotation: cannot compress {} ({e})", job.rotated));
        }
    }
    if job.retain.is_some() {
        delete_old(&job.dir, &job.prefix, job.retain);
    }
}

/// `<rotated>.gz` via a `.tmp` file, so a crash never leaves a cut archive
/// under the final name; the plain file goes once the archive is whole.
pub fn gzip(path: &str) -> std::io::Result<()> {
    let tmp = format!("{path}.gz.tmp");
    let result = (|| {
        let mut src = File::open(path)?;
        let modified = src.metadata()?.modified()?;
        let dst = File::create(&tmp)?;
        let mut enc =
            flate2::write::GzEncoder::new(std::io::BufWriter::new(dst), flate2::Compression::default());
        std::io::copy(&mut src, &mut enc)?;
        let dst = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
        // `retain` orders rotated files by mtime: the archive keeps the
        // age of what it holds, not the time it was made.
        dst.set_modified(modified)?;
        dst.sync_all()?;
        std::fs::rename(&tmp, format!("{path}.gz"))?;
        std::fs::remove_file(path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `retain`: deletes all but the newest rotated files of one log.
pub fn delete_old(dir: &Path, prefix: &str, retain: Option<usize>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let rotated: Vec<(String, u128)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(prefix) {
                return None;
            }
            let age = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            Some((name, age))
        })
        .collect();
    for name in rotate::to_delete(rotated, retain) {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// The background task: re-reads the settings every `workerInterval`, fires
/// `rotateInterval`, rotates `pm2.log`. Costs one `stat` per interval while
/// rotation is off.
pub async fn run(shared: SharedRef) {
    let home = shared.home.root.clone();
    let conf = home.join("module_conf.json");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = mtime(&conf);
    reload_config(&home);
    let mut cron_of: Option<(String, croner::Cron)> = None;
    loop {
        let g = global();
        let pattern = g.as_ref().and_then(|g| g.rotate_interval.clone());
        if cron_of.as_ref().map(|(p, _)| p) != pattern.as_ref() {
            cron_of = pattern.and_then(|p| match crate::cron::parse(&p) {
                Ok(c) => Some((p, c)),
                Err(e) => {
                    dlog::error(&format!("pm2-logrotate:rotateInterval {p}: {e}"));
                    None
                }
            });
        }
        let now = chrono::Local::now();
        let cron_wait = cron_of
            .as_ref()
            .and_then(|(_, c)| c.find_next_occurrence(&now, false).ok())
            .and_then(|next| (next - now).to_std().ok());
        let tick = g.as_ref().map(|g| g.worker_interval).unwrap_or(rotate::DEFAULT_WORKER_INTERVAL);
        let (wait, cron_due) = match cron_wait {
            Some(c) if c <= tick => (c, true),
            _ => (tick, false),
        };
        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        let m = mtime(&conf);
        if m != seen {
            seen = m;
            reload_config(&home);
        }
        let module = shared.table().procs.values().any(|e| e.info.app.name == rotate::MODULE);
        if MODULE_RUNNING.swap(module, Ordering::Relaxed) != module {
            dlog::log(if module {
                "pm2-logrotate runs as a module: built-in log rotation stands aside"
            } else {
                "built-in log rotation resumes"
            });
        }
        if cron_due && global().is_some() {
            force_all(&shared);
        }
        if let Some(g) = global() {
            rotate_daemon_log(&shared.home.daemon_log(), &g);
        }
    }
}

/// `rotateInterval` fired: every non-empty app log rotates.
fn force_all(shared: &SharedRef) {
    let files: Vec<_> = shared.table().procs.values().filter_map(|e| e.files.clone()).collect();
    FORCING.store(true, Ordering::Relaxed);
    for f in files {
        if let Ok(mut f) = f.lock() {
            f.force_rotate();
        }
    }
    FORCING.store(false, Ordering::Relaxed);
}

/// `pm2.log` is the daemon's own stdout/stderr (when the CLI spawned it; not
/// under `pm2-runtime`): rotated by rename, then the new file is put on fds
/// 1 and 2.
fn rotate_daemon_log(path: &Path, g: &Settings) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else { return };
    if meta.len() == 0 || meta.len() < g.max_size {
        return;
    }
    // SAFETY: fstat on fd 1 writes only into the struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(1, &mut st) } != 0 || st.st_ino != meta.ino() || st.st_dev != meta.dev() {
        return;
    }
    let policy = Policy {
        max_size: g.max_size,
        retain: g.retain,
        compress: g.compress,
        date_format: g.date_format.clone(),
    };
    let p = path.to_string_lossy();
    let _ = std::io::stdout().flush();
    let Ok(target) = rename_aside(&p, &policy) else { return };
    match crate::logs::open_append(&p) {
        Ok(Some(f)) => {
            // SAFETY: dup2 onto our own stdout/stderr; `f` stays valid for
            // both calls and is closed after.
            unsafe {
                libc::dup2(f.as_raw_fd(), 1);
                libc::dup2(f.as_raw_fd(), 2);
            }
        }
        _ => return,
    }
    after_rotation(target, &p, &policy);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_writes_are_counted_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a.log").to_string_lossy().into_owned();
        let mut rot = Rotation::default();
        // /dev/full fails every write with ENOSPC.
        let mut file = Some(std::fs::OpenOptions::new().append(true).open("/dev/full").unwrap());
        rot.opened(0, "/dev/full", file.as_ref());
        rot.write(0, "/dev/full", &mut file, b"x\n");
        rot.write(0, "/dev/full", &mut file, b"y\n");
        assert_eq!(rot.slots[0].failed_writes, 2);
        assert_eq!(rot.slots[0].dropped_bytes, 4);
        // Space returns (here: the fd now points at a file that accepts).
        file = crate::logs::open_append(&good).unwrap();
        rot.write(0, &good, &mut file, b"z\n");
        assert_eq!(rot.slots[0].failed_writes, 0);
        assert_eq!(std::fs::read_to_string(&good).unwrap(), "z\n");
    }

    #[test]
    fn size_rotation_keeps_every_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app-out.log").to_string_lossy().into_owned();
        let mut rot = Rotation::default();
        rot.set_app(AppOverrides { max_size: Some(100), retain: Some(None), compress: None });
        let mut file = crate::logs::open_append(&path).unwrap();
        rot.opened(0, &path, file.as_ref());
        for i in 0..100 {
            rot.write(0, &path, &mut file, format!("line {i:05}\n").as_bytes());
        }
        let mut all = String::new();
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.path()).collect();
        names.sort();
        assert!(names.len() > 5, "{names:?}");
        for n in &names {
            all.push_str(&std::fs::read_to_string(n).unwrap());
        }
        let mut lines: Vec<&str> = all.lines().collect();
        lines.sort();
        let want: Vec<String> = (0..100).map(|i| format!("line {i:05}")).collect();
        assert_eq!(lines, want);
    }

    #[test]
    fn gzip_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x__1.log");
        std::fs::write(&p, "hello\n").unwrap();
        gzip(&p.to_string_lossy()).unwrap();
        assert!(!p.exists());
        let gz = std::fs::read(dir.path().join("x__1.log.gz")).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut s).unwrap();
        assert_eq!(s, "hello\n");
    }

    #[test]
    fn retain_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for (i, n) in ["a__1.log", "a__2.log", "a__3.log", "b__1.log", "a.log"].iter().enumerate() {
            let p = dir.path().join(n);
            std::fs::write(&p, "x").unwrap();
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + i as u64);
            File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
        }
        delete_old(dir.path(), "a__", Some(1));
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec!["a.log", "a__3.log", "b__1.log"]);
    }
}
