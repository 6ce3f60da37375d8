//! `watch`: restart an app when files under its watched paths change
//! (spec §3.16). One watcher per process; the first change after
//! `watch_delay` restarts it (a stopped app is started, as pm2 does), and
//! changes that arrive while that restart is pending are folded into it.

use crate::dlog;
use crate::process::Ctl;
use crate::state::SharedRef;
use corral_proto::AppSpec;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Dropping it stops watching.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn start(shared: &SharedRef, id: u32, app: &AppSpec) -> Option<WatchHandle> {
    let cwd = PathBuf::from(&app.cwd);
    let roots: Vec<PathBuf> = if app.watch_paths.is_empty() {
        vec![cwd.clone()]
    } else {
        app.watch_paths.iter().map(|p| cwd.join(p)).collect()
    };
    let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            dlog::error(&format!("[Watch] cannot watch app {}: {e}", app.name));
            return None;
        }
    };
    for root in &roots {
        if let Err(e) = watcher.watch(root, RecursiveMode::Recursive) {
            dlog::error(&format!("[Watch] cannot watch {} for app {}: {e}", root.display(), app.name));
        }
    }
    dlog::log(&format!("[Watch] Start watching {}", app.name));
    let task = tokio::spawn(run(
        shared.clone(),
        id,
        app.name.clone(),
        cwd,
        app.ignore_watch.clone(),
        app.watch_delay,
        rx,
    ));
    Some(WatchHandle { _watcher: watcher, task })
}

async fn run(
    shared: SharedRef,
    id: u32,
    name: String,
    cwd: PathBuf,
    ignore: Vec<String>,
    delay_ms: u64,
    mut rx: mpsc::UnboundedReceiver<PathBuf>,
) {
    while let Some(path) = rx.recv().await {
        let rel = path.strip_prefix(&cwd).unwrap_or(&path).to_string_lossy().into_owned();
        if ignored(&rel, &ignore) {
            continue;
        }
        dlog::log(&format!("Change detected on path {rel} for app {name} - restarting"));
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let Some((ctl, watching)) = shared.with_entry(id, |e| (e.ctl.clone(), e.info.app.watch)) else {
            return;
        };
        if !watching {
            // Turned off by a stop; the handle goes at the next launch.
            continue;
        }
        let (done, wait) = oneshot::channel();
        if ctl.send(Ctl::Restart { update: None, done }).is_err() {
            return;
        }
        let _ = wait.await;
        // Whatever changed meanwhile is covered by the restart just done.
        while rx.try_recv().is_ok() {}
    }
}

/// pm2's default ignore (`/[\/\\]\.|node_modules/`) when the app sets none,
/// else its `ignore_watch` entries: globs (`*`, `**`, `?`) matched against
/// the relative path and the file name, or plain names matched against any
/// path component or prefix.
pub fn ignored(rel: &str, patterns: &[String]) -> bool {
    if patterns.is_empty() {
        return rel.starts_with('.') || rel.contains("/.") || rel.contains("node_modules");
    }
    let file = Path::new(rel).file_name().and_then(|f| f.to_str()).unwrap_or(rel);
    patterns.iter().any(|p| {
        let p = p.trim_start_matches("./");
        if p.contains(['*', '?']) {
            glob(p.as_bytes(), rel.as_bytes()) || glob(p.as_bytes(), file.as_bytes())
        } else {
            rel == p || rel.starts_with(&format!("{p}/")) || rel.split('/').any(|c| c == p)
        }
    })
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = p[2..].strip_prefix(b"/").unwrap_or(&p[2..]);
            (0..=s.len()).any(|i| glob(rest, &s[i..]))
        }
        Some(b'*') => {
            (0..=s.len()).take_while(|&i| i == 0 || s[i - 1] != b'/').any(|i| glob(&p[1..], &s[i..]))
        }
        Some(b'?') => !s.is_empty() && s[0] != b'/' && glob(&p[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && glob(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_custom_ignores() {
        assert!(ignored("node_modules/x/index.js", &[]));
        assert!(ignored(".git/HEAD", &[]));
        assert!(ignored("src/.hidden", &[]));
        assert!(!ignored("src/app.js", &[]));
        let pats = vec!["logs".to_string(), "*.log".to_string(), "tmp/**".to_string()];
        assert!(ignored("logs/a.txt", &pats));
        assert!(ignored("deep/x.log", &pats));
        assert!(ignored("tmp/a/b/c", &pats));
        assert!(!ignored("src/app.js", &pats));
        // A custom list replaces the default, as in pm2.
        assert!(!ignored("node_modules/x.js", &pats));
    }
}
