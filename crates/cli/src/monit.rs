//! `pm2 monit` (also `dashboard`, `dash`): a full-screen terminal dashboard.
//!
//! Panels: the process list (status, cpu, memory, restarts and a sparkline
//! of each one's cpu and memory history), cpu/memory charts of the selected
//! process, its live log, its `describe` facts, and its custom metrics
//! (`axm_monitor`, what @pm2/io reports) with its health. Keys act on the
//! selected process (restart, reload, stop), scroll and search the log.
//!
//! Cost to the daemon: one `jlist` request a second (the request `pm2 jlist`
//! makes; the daemon caches its rendering) and one log subscription for the
//! selected process only (the daemon filters by id before sending). The
//! screen is redrawn only when something changed.
//!
//! The terminal is restored on every way out: quit keys, an error, SIGTERM
//! or SIGHUP, and a panic (ratatui's panic hook restores it before the
//! message is printed).

use crate::client::{connect_async, Client};
use crate::commands::{Cli, Code};
use crate::output;
use crate::render::{bytes_to_size, time_since};
use crate::timefmt::{iso, now_ms};
use anyhow::{anyhow, Result};
use corral_proto::{read_frame, write_frame, Event, Op, Reply, Request, Stream};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often the process list is asked for.
const LIST_PERIOD: Duration = Duration::from_secs(1);
/// Samples of cpu/memory history kept per process.
const HISTORY: usize = 120;
/// Log lines kept for the selected process.
const LOG_LINES: usize = 5000;
/// Lines read back from the log files when a process gets selected.
const LOG_BACKFILL: usize = 200;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// One process as the dashboard shows it (from its `jlist` entry).
#[derive(Debug, Clone, Default)]
struct Proc {
    id: u32,
    name: String,
    status: String,
    pid: u64,
    cpu: f64,
    memory: u64,
    restarts: u64,
    env: Value,
}

impl Proc {
    fn from_jlist(v: &Value) -> Option<Proc> {
        let env = v.get("pm2_env").cloned().unwrap_or(Value::Null);
        Some(Proc {
            id: v.get("pm_id")?.as_u64()? as u32,
            name: v.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
            status: env.get("status").and_then(Value::as_str).unwrap_or("").to_string(),
            pid: v.get("pid").and_then(Value::as_u64).unwrap_or(0),
            cpu: v.pointer("/monit/cpu").and_then(Value::as_f64).unwrap_or(0.0),
            memory: v.pointer("/monit/memory").and_then(Value::as_u64).unwrap_or(0),
            restarts: env.get("restart_time").and_then(Value::as_u64).unwrap_or(0),
            env,
        })
    }

    fn env_str(&self, key: &str) -> String {
        match self.env.get(key) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|x| x.as_str().map(String::from).unwrap_or_else(|| x.to_string()))
                .collect::<Vec<_>>()
                .join(" "),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => if *b { "✔" } else { "✘" }.to_string(),
            _ => "N/A".into(),
        }
    }

    /// The `describe` facts.
    fn facts(&self, now: u64) -> Vec<(&'static str, String)> {
        let uptime = match self.env.get("pm_uptime").and_then(Value::as_u64) {
            Some(t) if self.status == "online" && t > 0 => time_since(now as i64, t as i64),
            _ => "0".into(),
        };
        let created = match self.env.get("created_at").and_then(Value::as_u64) {
            Some(t) if t > 0 => iso(t as i64),
            _ => "N/A".into(),
        };
        vec![
            ("status", self.status.clone()),
            ("name", self.name.clone()),
            ("namespace", self.env_str("namespace")),
            ("version", self.env_str("version")),
            ("pid", if self.pid > 0 { self.pid.to_string() } else { "N/A".into() }),
            ("restarts", self.restarts.to_string()),
            ("unstable restarts", self.env_str("unstable_restarts")),
            ("uptime", uptime),
            ("script path", self.env_str("pm_exec_path")),
            ("script args", self.env_str("args")),
            ("interpreter", self.env_str("exec_interpreter")),
            ("interpreter args", self.env_str("node_args")),
            ("exec mode", self.env_str("exec_mode")),
            ("exec cwd", self.env_str("pm_cwd")),
            ("node.js version", self.env_str("node_version")),
            ("watch & reload", self.env_str("watch")),
            ("out log path", self.env_str("pm_out_log_path")),
            ("error log path", self.env_str("pm_err_log_path")),
            ("created at", created),
        ]
    }

    /// `axm_monitor`: what @pm2/io (or pmx) reports, `name: value unit`.
    fn metrics(&self) -> Vec<(String, String)> {
        let Some(Value::Object(m)) = self.env.get("axm_monitor") else { return Vec::new() };
        m.iter()
            .map(|(k, v)| {
                let value = match v.get("value").unwrap_or(v) {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let unit = v.get("unit").and_then(Value::as_str).unwrap_or("");
                (k.clone(), if unit.is_empty() { value } else { format!("{value} {unit}") })
            })
            .collect()
    }

    /// Health facts: status, and readiness/probe results when the daemon
    /// reports them (`health`, `ready`).
    fn health(&self) -> Vec<(String, String)> {
        let mut v = vec![("status".to_string(), self.status.clone())];
        for key in ["health", "ready", "readiness", "liveness"] {
            match self.env.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => v.push((key.into(), s.clone())),
                Some(Value::Object(o)) => {
                    for (k, x) in o {
                        let s = x.as_str().map(String::from).unwrap_or_else(|| x.to_string());
                        v.push((format!("{key}.{k}"), s));
                    }
                }
                Some(other) => v.push((key.into(), other.to_string())),
            }
        }
        if let Some(c) = self.env.get("exit_code").filter(|c| !c.is_null()) {
            v.push(("last exit code".into(), c.to_string()));
        }
        v
    }
}

#[derive(Debug, Default)]
struct History {
    cpu: VecDeque<u64>,
    mem: VecDeque<u64>,
}

impl History {
    fn push(&mut self, cpu: f64, mem: u64) {
        if self.cpu.len() == HISTORY {
            self.cpu.pop_front();
            self.mem.pop_front();
        }
        self.cpu.push_back(cpu.round().max(0.0) as u64);
        self.mem.push_back(mem);
    }
}

/// `▁▂▃▄▅▆▇█` over the last `width` samples, scaled to the largest.
fn spark_text(data: &VecDeque<u64>, width: usize, floor: u64) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let skip = data.len().saturating_sub(width);
    let max = data.iter().skip(skip).copied().max().unwrap_or(0).max(floor).max(1);
    data.iter().skip(skip).map(|v| BARS[((v * 7) / max).min(7) as usize]).collect()
}

struct LogLine {
    err: bool,
    text: String,
}

/// What the helper threads tell the UI.
enum Msg {
    /// The daemon now streams this process's lines to us: time to read
    /// the files' tails (reading them before would leave a gap).
    Subscribed(u32),
    Log {
        pm_id: u32,
        err: bool,
        text: String,
    },
    Done(String),
}

struct App {
    home: PathBuf,
    procs: Vec<Proc>,
    hist: HashMap<u32, History>,
    table: TableState,
    selected_id: Option<u32>,
    logs: VecDeque<LogLine>,
    logs_of: Option<u32>,
    /// Backfilled lines live lines may repeat (read from the file just
    /// after the subscription started), oldest first.
    overlap: VecDeque<String>,
    /// Lines scrolled up from the newest (0 = follow).
    scroll: usize,
    log_height: usize,
    search: Option<String>,
    /// The search being typed after `/`.
    input: Option<String>,
    /// Index (in `logs`) of the current match.
    hit: Option<usize>,
    note: Option<(String, Instant)>,
    error: Option<String>,
}

impl App {
    fn selected(&self) -> Option<&Proc> {
        self.table.selected().and_then(|i| self.procs.get(i))
    }

    fn set_list(&mut self, list: Vec<Proc>) {
        for p in &list {
            self.hist.entry(p.id).or_default().push(p.cpu, p.memory);
        }
        self.hist.retain(|id, _| list.iter().any(|p| p.id == *id));
        self.procs = list;
        // Keep the same process selected when others come and go.
        let idx = self.selected_id.and_then(|id| self.procs.iter().position(|p| p.id == id)).or(
            if self.procs.is_empty() {
                None
            } else {
                Some(self.table.selected().unwrap_or(0).min(self.procs.len() - 1))
            },
        );
        self.table.select(idx);
        self.selected_id = self.selected().map(|p| p.id);
    }

    fn move_selection(&mut self, down: bool) {
        if self.procs.is_empty() {
            return;
        }
        let i = self.table.selected().unwrap_or(0);
        let n = if down { (i + 1).min(self.procs.len() - 1) } else { i.saturating_sub(1) };
        self.table.select(Some(n));
        self.selected_id = self.selected().map(|p| p.id);
    }

    /// A new process is selected: its log starts from the files' tails.
    fn switch_logs(&mut self) {
        if self.logs_of == self.selected_id {
            return;
        }
        self.logs_of = self.selected_id;
        self.logs.clear();
        self.overlap.clear();
        self.scroll = 0;
        self.hit = None;
    }

    /// The subscription of `id` is live: prepend the tails of its files.
    fn backfill(&mut self, id: u32) {
        if self.logs_of != Some(id) {
            return;
        }
        let Some(p) = self.procs.iter().find(|p| p.id == id) else { return };
        let mut lines = Vec::new();
        for (key, err) in [("pm_out_log_path", false), ("pm_err_log_path", true)] {
            if let Some(path) = p.env.get(key).and_then(Value::as_str).filter(|p| *p != "/dev/null") {
                let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                lines.push((mtime, err, crate::logs::tail_lines(Path::new(path), LOG_BACKFILL)));
            }
        }
        // The file written last comes last, nearest the live lines.
        lines.sort_by_key(|(m, _, _)| *m);
        let live = std::mem::take(&mut self.logs);
        for (_, err, ls) in lines {
            for text in ls {
                self.push_log(err, text);
            }
        }
        self.overlap = self.logs.iter().rev().take(50).rev().map(|l| l.text.clone()).collect();
        for l in live {
            self.push_live(l.err, l.text);
        }
    }

    /// A streamed line; one the backfill already showed is dropped.
    fn push_live(&mut self, err: bool, text: String) {
        if let Some(j) = self.overlap.iter().position(|o| *o == text) {
            self.overlap.drain(..=j);
            return;
        }
        self.overlap.clear();
        self.push_log(err, text);
    }

    fn push_log(&mut self, err: bool, text: String) {
        if self.logs.len() == LOG_LINES {
            self.logs.pop_front();
            self.hit = self.hit.and_then(|h| h.checked_sub(1));
        }
        self.logs.push_back(LogLine { err, text });
        // A reader scrolled up keeps looking at the same lines.
        if self.scroll > 0 {
            self.scroll = (self.scroll + 1).min(self.logs.len().saturating_sub(1));
        }
    }

    fn scroll_by(&mut self, up: bool, n: usize) {
        let max = self.logs.len().saturating_sub(self.log_height.max(1));
        self.scroll = if up { (self.scroll + n).min(max) } else { self.scroll.saturating_sub(n) };
    }

    /// Moves to the next match older (`back`) or newer than the current one
    /// and scrolls it into view.
    fn find(&mut self, back: bool) {
        let Some(q) = self.search.clone().filter(|q| !q.is_empty()) else { return };
        let len = self.logs.len();
        let start = self.hit.unwrap_or(len);
        let found = if back {
            (0..start).rev().find(|&i| self.logs[i].text.contains(&q))
        } else {
            (start + 1..len).find(|&i| self.logs[i].text.contains(&q))
        };
        match found {
            Some(i) => {
                self.hit = Some(i);
                let from_bottom = len - 1 - i;
                let h = self.log_height.max(1);
                self.scroll = from_bottom.saturating_sub(h / 2).min(len.saturating_sub(h));
            }
            None if self.hit.is_none() => self.note(format!("no match for \"{q}\"")),
            None => self.note(format!("no {} match for \"{q}\"", if back { "older" } else { "newer" })),
        }
    }

    fn note(&mut self, s: String) {
        self.note = Some((s, Instant::now()));
    }

    fn match_count(&self) -> usize {
        match &self.search {
            Some(q) if !q.is_empty() => self.logs.iter().filter(|l| l.text.contains(q.as_str())).count(),
            _ => 0,
        }
    }
}

/// Puts the terminal back however `monit` ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub fn monit(cli: &mut Cli) -> Result<Code> {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(1) } != 1 || unsafe { libc::isatty(0) } != 1 {
        output::error("pm2 monit needs a terminal");
        return Ok(1);
    }
    let mut client = cli.disconnect().map(Ok).unwrap_or_else(|| Client::connect_or_spawn(&cli.home))?;
    // SAFETY: the handler only stores into an atomic.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;

    let (tx, rx) = mpsc::channel::<Msg>();
    let (sel_tx, sel_rx) = tokio::sync::watch::channel::<Option<u32>>(None);
    let home = cli.home.clone();
    let log_tx = tx.clone();
    let log_thread = std::thread::Builder::new()
        .name("monit-logs".into())
        .spawn(move || follow_logs(&home, sel_rx, log_tx))
        .map_err(|e| anyhow!("cannot start the log thread: {e}"))?;

    let mut app = App {
        home: cli.home.clone(),
        procs: Vec::new(),
        hist: HashMap::new(),
        table: TableState::default(),
        selected_id: None,
        logs: VecDeque::new(),
        logs_of: None,
        overlap: VecDeque::new(),
        scroll: 0,
        log_height: 10,
        search: None,
        input: None,
        hit: None,
        note: None,
        error: None,
    };
    let mut next_poll = Instant::now();
    let mut dirty = true;
    let result: Result<()> = loop {
        if STOP.load(Ordering::Relaxed) {
            break Ok(());
        }
        if Instant::now() >= next_poll {
            next_poll = Instant::now() + LIST_PERIOD;
            match fetch(&mut client) {
                Ok(list) => {
                    app.error = None;
                    app.set_list(list);
                }
                Err(e) => {
                    app.error = Some(e.to_string());
                    // The daemon may have been restarted (`pm2 update`).
                    if let Ok(Some(c)) = Client::connect_existing(&app.home) {
                        client = c;
                    }
                }
            }
            dirty = true;
        }
        app.switch_logs();
        if *sel_tx.borrow() != app.logs_of {
            let _ = sel_tx.send(app.logs_of);
        }
        while let Ok(m) = rx.try_recv() {
            match m {
                Msg::Subscribed(id) => app.backfill(id),
                Msg::Log { pm_id, err, text } if Some(pm_id) == app.logs_of => app.push_live(err, text),
                Msg::Log { .. } => {}
                Msg::Done(s) => {
                    app.note(s);
                    next_poll = Instant::now();
                }
            }
            dirty = true;
        }
        if app.note.as_ref().is_some_and(|(_, t)| t.elapsed() > Duration::from_secs(5)) {
            app.note = None;
            dirty = true;
        }
        if dirty {
            if let Err(e) = terminal.draw(|f| draw(f, &mut app)) {
                break Err(e.into());
            }
            dirty = false;
        }
        let wait = next_poll.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        match event::poll(wait) {
            Ok(true) => match event::read() {
                Ok(TermEvent::Key(k)) if k.kind != KeyEventKind::Release => {
                    dirty = true;
                    if !on_key(&mut app, k, &tx) {
                        break Ok(());
                    }
                }
                Ok(TermEvent::Resize(..)) => dirty = true,
                Ok(_) => {}
                Err(e) => break Err(e.into()),
            },
            Ok(false) => {}
            Err(e) => break Err(e.into()),
        }
    };
    drop(sel_tx);
    drop(_restore);
    let _ = log_thread.join();
    result.map(|()| 0)
}

/// The `jlist` request, parsed.
fn fetch(client: &mut Client) -> Result<Vec<Proc>> {
    match client.jlist_bytes()? {
        Some(bytes) => {
            let v: Value = serde_json::from_slice(&bytes)?;
            let mut list: Vec<Proc> =
                v.as_array().map(|a| a.iter().filter_map(Proc::from_jlist).collect()).unwrap_or_default();
            list.sort_by_key(|p| p.id);
            Ok(list)
        }
        None => Err(anyhow!("this daemon does not render jlist")),
    }
}

/// Handles one key; false = quit.
fn on_key(app: &mut App, k: KeyEvent, tx: &mpsc::Sender<Msg>) -> bool {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(k.code, KeyCode::Char('c') | KeyCode::Char('d')) {
        return false;
    }
    if let Some(input) = app.input.as_mut() {
        match k.code {
            KeyCode::Enter => {
                let q = app.input.take().unwrap_or_default();
                app.search = Some(q).filter(|q| !q.is_empty());
                app.hit = None;
                app.find(true);
            }
            KeyCode::Esc => app.input = None,
            KeyCode::Backspace => {
                input.pop();
            }
            KeyCode::Char(c) => input.push(c),
            _ => {}
        }
        return true;
    }
    let page = app.log_height.max(2) - 1;
    match k.code {
        KeyCode::Char('q') => return false,
        KeyCode::Esc if app.search.is_some() => {
            app.search = None;
            app.hit = None;
        }
        KeyCode::Esc => return false,
        KeyCode::Up | KeyCode::Char('k') => app.move_selection(false),
        KeyCode::Down | KeyCode::Char('j') => app.move_selection(true),
        KeyCode::PageUp => app.scroll_by(true, page),
        KeyCode::PageDown => app.scroll_by(false, page),
        KeyCode::Home => app.scroll_by(true, usize::MAX / 2),
        KeyCode::End => app.scroll = 0,
        KeyCode::Char('/') => app.input = Some(String::new()),
        KeyCode::Char('n') => app.find(true),
        KeyCode::Char('N') => app.find(false),
        KeyCode::Char('r') => act(app, Op::Restart, tx),
        KeyCode::Char('R') => act(app, Op::Reload, tx),
        KeyCode::Char('s') => act(app, Op::Stop, tx),
        _ => {}
    }
    true
}

/// Runs an operation on the selected process on a thread of its own (a
/// restart waits for the stop sequence; the screen must not freeze).
fn act(app: &mut App, op: Op, tx: &mpsc::Sender<Msg>) {
    let Some(p) = app.selected() else { return };
    let (id, name) = (p.id, p.name.clone());
    let verb = match op {
        Op::Restart => "restart",
        Op::Reload => "reload",
        Op::Stop => "stop",
        _ => "act on",
    };
    app.note(format!("{verb}ing {name} [{id}]..."));
    let home = app.home.clone();
    let tx = tx.clone();
    let spawned = std::thread::Builder::new().name("monit-op".into()).spawn(move || {
        let msg = match Client::connect_existing(&home) {
            Ok(Some(mut c)) => match c.request(&Request::Op { op, id, update: None }) {
                Ok(Reply::Error { message }) => format!("{verb} {name}: {message}"),
                Ok(_) => format!("{verb} {name} [{id}]: done"),
                Err(e) => format!("{verb} {name}: {e}"),
            },
            Ok(None) => "no daemon is running".to_string(),
            Err(e) => format!("{verb} {name}: {e}"),
        };
        let _ = tx.send(Msg::Done(msg));
    });
    if let Err(e) = spawned {
        app.note(format!("cannot {verb}: {e}"));
    }
}

/// The log subscription of the selected process: one connection asking the
/// daemon for that id's lines only, replaced when the selection changes;
/// ends when the UI drops `sel`.
fn follow_logs(home: &Path, mut sel: tokio::sync::watch::Receiver<Option<u32>>, tx: mpsc::Sender<Msg>) {
    let Ok(rt) = crate::client::new_runtime() else { return };
    rt.block_on(async move {
        loop {
            let current = *sel.borrow_and_update();
            let Some(id) = current else {
                if sel.changed().await.is_err() {
                    return;
                }
                continue;
            };
            let mut stream = match connect_async(home).await {
                Ok(s) => s,
                Err(_) => {
                    // No daemon right now: try again in a while or on a
                    // new selection.
                    tokio::select! {
                        r = sel.changed() => if r.is_err() { return },
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            };
            if write_frame(&mut stream, &Request::Logs { ids: Some(vec![id]) }).await.is_err() {
                continue;
            }
            // The daemon answers `Ok` once subscribed, before any line.
            match read_frame::<_, Value>(&mut stream).await {
                Ok(v) if v.get("reply").is_some() => {
                    if tx.send(Msg::Subscribed(id)).is_err() {
                        return;
                    }
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
            loop {
                tokio::select! {
                    r = sel.changed() => {
                        if r.is_err() {
                            return;
                        }
                        break;
                    }
                    frame = read_frame::<_, Value>(&mut stream) => {
                        let Ok(v) = frame else {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            break;
                        };
                        if let Ok(Event::Log { pm_id, stream: s, data, .. }) = serde_json::from_value::<Event>(v) {
                            for line in data.split('\n').filter(|l| !l.is_empty()) {
                                let text = line.strip_suffix('\r').unwrap_or(line).to_string();
                                if tx.send(Msg::Log { pm_id, err: matches!(s, Stream::Err), text }).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

fn status_color(s: &str) -> Color {
    match s {
        "online" => Color::Green,
        "stopped" | "stopping" => Color::Gray,
        "errored" => Color::Red,
        _ => Color::Yellow,
    }
}

fn titled(title: impl Into<Line<'static>>) -> Block<'static> {
    Block::default().borders(Borders::ALL).title(title)
}

fn draw(f: &mut Frame, app: &mut App) {
    let area = f.area();
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Percentage(62), Constraint::Min(6), Constraint::Length(1)])
        .split(area);
    let top = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(45), Constraint::Percentage(55)])
        .split(rows[0]);
    let left = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(4), Constraint::Length(8)])
        .split(top[0]);
    let bottom = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(rows[1]);
    draw_list(f, app, left[0]);
    draw_charts(f, app, left[1]);
    draw_logs(f, app, top[1]);
    draw_facts(f, app, bottom[0]);
    draw_metrics(f, app, bottom[1]);
    draw_footer(f, app, rows[2]);
}

fn draw_list(f: &mut Frame, app: &mut App, area: Rect) {
    let spark_w = 12usize;
    let rows: Vec<Row> = app
        .procs
        .iter()
        .map(|p| {
            let h = app.hist.get(&p.id);
            let cpu_spark = h.map(|h| spark_text(&h.cpu, spark_w, 100)).unwrap_or_default();
            let mem_spark = h.map(|h| spark_text(&h.mem, spark_w, 1)).unwrap_or_default();
            Row::new(vec![
                Cell::from(p.id.to_string()),
                Cell::from(p.name.clone()),
                Cell::from(p.status.clone()).style(Style::default().fg(status_color(&p.status))),
                Cell::from(format!("{:.0}%", p.cpu)),
                Cell::from(bytes_to_size(p.memory)),
                Cell::from(p.restarts.to_string()),
                Cell::from(cpu_spark).style(Style::default().fg(Color::Cyan)),
                Cell::from(mem_spark).style(Style::default().fg(Color::Magenta)),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(3),
        Constraint::Min(8),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(3),
        Constraint::Length(spark_w as u16),
        Constraint::Length(spark_w as u16),
    ];
    let header = Row::new(["id", "name", "status", "cpu", "mem", "↺", "cpu history", "mem history"])
        .style(Style::default().add_modifier(Modifier::BOLD));
    let title = match &app.error {
        Some(e) => Line::from(vec![
            Span::raw(" Processes "),
            Span::styled(format!("({e}) "), Style::default().fg(Color::Red)),
        ]),
        None => Line::from(format!(" Processes ({}) ", app.procs.len())),
    };
    let table = Table::new(rows, widths)
        .header(header)
        .block(titled(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    f.render_stateful_widget(table, area, &mut app.table);
}

fn draw_charts(f: &mut Frame, app: &App, area: Rect) {
    let halves = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(area);
    let p = app.selected();
    let h = p.and_then(|p| app.hist.get(&p.id));
    let w = area.width.saturating_sub(2) as usize;
    let tail = |d: Option<&VecDeque<u64>>| -> Vec<u64> {
        d.map(|d| d.iter().skip(d.len().saturating_sub(w)).copied().collect()).unwrap_or_default()
    };
    let cpu = tail(h.map(|h| &h.cpu));
    let mem = tail(h.map(|h| &h.mem));
    let cpu_title = format!(" cpu {:.0}% ", p.map(|p| p.cpu).unwrap_or(0.0));
    let mem_title = format!(" memory {} ", bytes_to_size(p.map(|p| p.memory).unwrap_or(0)));
    let max_cpu = cpu.iter().copied().max().unwrap_or(0).max(100);
    f.render_widget(
        Sparkline::default()
            .block(titled(cpu_title))
            .data(&cpu)
            .max(max_cpu)
            .style(Style::default().fg(Color::Cyan)),
        halves[0],
    );
    f.render_widget(
        Sparkline::default().block(titled(mem_title)).data(&mem).style(Style::default().fg(Color::Magenta)),
        halves[1],
    );
}

fn highlighted(text: &str, q: Option<&str>, base: Style) -> Line<'static> {
    let Some(q) = q.filter(|q| !q.is_empty() && text.contains(*q)) else {
        return Line::from(Span::styled(text.to_string(), base));
    };
    let mut spans = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(q) {
        spans.push(Span::styled(rest[..i].to_string(), base));
        spans.push(Span::styled(q.to_string(), base.bg(Color::Yellow).fg(Color::Black)));
        rest = &rest[i + q.len()..];
    }
    spans.push(Span::styled(rest.to_string(), base));
    Line::from(spans)
}

fn draw_logs(f: &mut Frame, app: &mut App, area: Rect) {
    let h = area.height.saturating_sub(2) as usize;
    app.log_height = h;
    let len = app.logs.len();
    app.scroll = app.scroll.min(len.saturating_sub(h));
    let end = len - app.scroll;
    let start = end.saturating_sub(h);
    let q = app.search.as_deref();
    let lines: Vec<Line> = (start..end)
        .map(|i| {
            let l = &app.logs[i];
            let mut base = if l.err { Style::default().fg(Color::Red) } else { Style::default() };
            if app.hit == Some(i) {
                base = base.add_modifier(Modifier::BOLD);
            }
            highlighted(&l.text, q, base)
        })
        .collect();
    let who = app.selected().map(|p| format!("{} [{}]", p.name, p.id)).unwrap_or_else(|| "no process".into());
    let mut title = format!(" Logs: {who} ");
    if app.scroll > 0 {
        title.push_str(&format!("(scrolled {} up, End to follow) ", app.scroll));
    }
    if let Some(q) = &app.search {
        title.push_str(&format!("search \"{q}\": {} matches ", app.match_count()));
    }
    f.render_widget(Paragraph::new(lines).block(titled(title)), area);
}

fn kv_lines(rows: Vec<(String, String)>, key_w: usize) -> Vec<Line<'static>> {
    rows.into_iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!("{k:<key_w$} "), Style::default().fg(Color::Cyan)),
                Span::raw(v),
            ])
        })
        .collect()
}

fn draw_facts(f: &mut Frame, app: &App, area: Rect) {
    let rows = app
        .selected()
        .map(|p| p.facts(now_ms() as u64).into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        .unwrap_or_default();
    f.render_widget(Paragraph::new(kv_lines(rows, 17)).block(titled(" Metadata ")), area);
}

fn draw_metrics(f: &mut Frame, app: &App, area: Rect) {
    let mut lines = Vec::new();
    if let Some(p) = app.selected() {
        lines.push(Line::styled("Health", Style::default().add_modifier(Modifier::BOLD)));
        let mut health = kv_lines(p.health(), 16);
        if let Some(first) = health.first_mut() {
            *first = Line::from(vec![
                Span::styled(format!("{:<16} ", "status"), Style::default().fg(Color::Cyan)),
                Span::styled(p.status.clone(), Style::default().fg(status_color(&p.status))),
            ]);
        }
        lines.extend(health);
        lines.push(Line::raw(""));
        lines.push(Line::styled("Custom metrics", Style::default().add_modifier(Modifier::BOLD)));
        let m = p.metrics();
        if m.is_empty() {
            lines.push(Line::styled(
                "none reported (@pm2/io metrics show here)",
                Style::default().fg(Color::DarkGray),
            ));
        }
        lines.extend(kv_lines(m, 24));
    }
    f.render_widget(Paragraph::new(lines).block(titled(" Health & metrics ")), area);
}

fn draw_footer(f: &mut Frame, app: &App, area: Rect) {
    let line = if let Some(input) = &app.input {
        Line::from(vec![
            Span::styled(" search: ", Style::default().fg(Color::Yellow)),
            Span::raw(format!("{input}█")),
            Span::styled("   Enter find  Esc cancel", Style::default().fg(Color::DarkGray)),
        ])
    } else if let Some((note, _)) = &app.note {
        Line::styled(format!(" {note}"), Style::default().fg(Color::Yellow))
    } else {
        let key = |k: &'static str| Span::styled(k, Style::default().fg(Color::Black).bg(Color::Cyan));
        let txt = |t: &'static str| Span::raw(t);
        Line::from(vec![
            key("↑↓"),
            txt(" select "),
            key("r"),
            txt(" restart "),
            key("R"),
            txt(" reload "),
            key("s"),
            txt(" stop "),
            key("PgUp/PgDn"),
            txt(" scroll "),
            key("End"),
            txt(" follow "),
            key("/"),
            txt(" search "),
            key("n/N"),
            txt(" older/newer match "),
            key("q"),
            txt(" quit"),
        ])
    };
    f.render_widget(Paragraph::new(line), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_text_scales_to_the_largest() {
        let d: VecDeque<u64> = [0, 50, 100].into_iter().collect();
        assert_eq!(spark_text(&d, 10, 100), "▁▄█");
        assert_eq!(spark_text(&d, 2, 100), "▄█");
        assert_eq!(spark_text(&VecDeque::new(), 5, 1), "");
    }

    fn app_with(lines: &[&str]) -> App {
        let mut app = App {
            home: PathBuf::new(),
            procs: Vec::new(),
            hist: HashMap::new(),
            table: TableState::default(),
            selected_id: None,
            logs: VecDeque::new(),
            logs_of: None,
            overlap: VecDeque::new(),
            scroll: 0,
            log_height: 4,
            search: None,
            input: None,
            hit: None,
            note: None,
            error: None,
        };
        for l in lines {
            app.push_log(false, l.to_string());
        }
        app
    }

    #[test]
    fn search_walks_matches_from_the_newest() {
        let lines: Vec<String> =
            (0..20).map(|i| if i % 5 == 0 { format!("hit {i}") } else { format!("x {i}") }).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut app = app_with(&refs);
        app.search = Some("hit".into());
        app.find(true);
        assert_eq!(app.hit, Some(15));
        app.find(true);
        assert_eq!(app.hit, Some(10));
        assert!(app.scroll > 0);
        app.find(false);
        assert_eq!(app.hit, Some(15));
        assert_eq!(app.match_count(), 4);
    }

    #[test]
    fn selection_follows_the_process_across_list_changes() {
        let mut app = app_with(&[]);
        let p = |id| Proc { id, name: format!("p{id}"), ..Proc::default() };
        app.set_list(vec![p(0), p(1), p(2)]);
        app.move_selection(true);
        app.move_selection(true);
        assert_eq!(app.selected_id, Some(2));
        app.set_list(vec![p(1), p(2)]);
        assert_eq!(app.selected().map(|p| p.id), Some(2));
        app.set_list(vec![p(1)]);
        assert_eq!(app.selected().map(|p| p.id), Some(1));
        assert_eq!(app.hist.len(), 1);
    }

    #[test]
    fn proc_from_jlist_entry() {
        let v = serde_json::json!({"pm_id": 3, "name": "api", "pid": 42, "monit": {"cpu": 2.5, "memory": 1024},
            "pm2_env": {"status": "online", "restart_time": 4, "axm_monitor": {"Heap": {"value": "6.5", "unit": "MiB"}}}});
        let p = Proc::from_jlist(&v).unwrap();
        assert_eq!((p.id, p.pid, p.restarts, p.memory), (3, 42, 4, 1024));
        assert_eq!(p.metrics(), vec![("Heap".to_string(), "6.5 MiB".to_string())]);
        assert!(p.facts(0).iter().any(|(k, v)| *k == "status" && v == "online"));
    }
}
