//! `pm2 logs`: tail the log files, then stream live lines from the
//! daemon until Ctrl-C.
//!
//! Deliberate difference: pm2 reads only the last `n*200` bytes of each file
//! and can cut long lines; Corral reads backwards until it has `n` lines.

use crate::commands::{Cli, Code};
use crate::output::{self, paint, Color};
use crate::resolve::{is_numeric, is_regex};
use crate::timefmt;
use anyhow::Result;
use corral_proto::{Event, ProcInfo, Stream};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Which processes a `logs` target selects (also applied to live events).
pub enum Filter {
    All,
    /// `pm2 logs PM2`: the daemon's own log only.
    Pm2,
    Id(u32),
    Regex(regex::Regex),
    Name(String),
}

impl Filter {
    pub fn parse(t: &str) -> Filter {
        if t == "all" {
            return Filter::All;
        }
        if t == "PM2" {
            return Filter::Pm2;
        }
        if is_numeric(t) {
            if let Ok(id) = t.parse() {
                return Filter::Id(id);
            }
        }
        if is_regex(t) {
            let pat: String = t.chars().filter(|c| *c != '/').collect();
            if let Ok(re) = regex::Regex::new(&pat) {
                return Filter::Regex(re);
            }
        }
        Filter::Name(t.to_string())
    }

    pub fn matches(&self, id: u32, name: &str, namespace: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Pm2 => false,
            Filter::Id(i) => *i == id,
            Filter::Regex(re) => re.is_match(name),
            Filter::Name(n) => n == name || n == namespace,
        }
    }
}

/// The last `n` lines of a file (empty if unreadable).
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut chunk = (n as u64 * 200).max(4096);
    loop {
        let from = len.saturating_sub(chunk);
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        let text = String::from_utf8_lossy(&buf);
        let mut lines: Vec<&str> = text.split('\n').collect();
        if lines.last() == Some(&"") {
            lines.pop();
        }
        // The first line may be partial unless we read from the start.
        if from == 0 || lines.len() > n {
            let skip_partial = usize::from(from > 0);
            let usable = &lines[skip_partial..];
            return usable[usable.len().saturating_sub(n)..].iter().map(|s| s.to_string()).collect();
        }
        if chunk >= len {
            return lines.iter().map(|s| s.to_string()).collect();
        }
        chunk = chunk.saturating_mul(4);
    }
}

/// `<id>|<name>` padded or cut to 10 chars (the tail blocks' prefix).
pub fn tail_prefix(label: &str) -> String {
    let w: String = label.chars().take(10).collect();
    format!("{w:<10} | ")
}

/// How `pm2 logs` (and `pm2-runtime`) print what they stream.
#[derive(Default)]
pub struct Opts {
    pub raw: bool,
    pub json: bool,
    pub format: bool,
    pub timestamp: Option<String>,
    pub only_err: bool,
    pub only_out: bool,
    /// `--highlight <s>`: first occurrence per line marked (on a TTY).
    pub highlight: Option<String>,
}

pub fn logs(cli: &mut Cli) -> Result<Code> {
    let target = cli.args.positionals.first().cloned().unwrap_or_else(|| "all".into());
    // parseInt: leading digits count, a sign is dropped, garbage means 15.
    let lines: usize = cli
        .args
        .value("lines")
        .map(|v| v.trim_start_matches(['-', '+']))
        .and_then(|v| {
            let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .unwrap_or(15);
    let o = Opts {
        raw: cli.args.has("raw"),
        json: cli.args.has("json"),
        format: cli.args.has("format"),
        timestamp: cli
            .args
            .has("timestamp")
            .then(|| cli.args.value("timestamp").unwrap_or("YYYY-MM-DD-HH:mm:ss").to_string()),
        only_err: cli.args.has("err"),
        only_out: cli.args.has("out"),
        highlight: cli.args.value("highlight").map(String::from),
    };
    // Read-only from here on: a vanished reader (`| head`) ends the command.
    output::exit_on_broken_pipe();
    let filter = Filter::parse(&target);
    let procs = cli.list()?;
    let selected: Vec<&ProcInfo> =
        procs.iter().filter(|p| filter.matches(p.pm_id, &p.app.name, &p.app.namespace)).collect();
    // pm2: --nostream wins (tail only); --json / --format stream without
    // tailing.
    let nostream = cli.args.has("nostream");
    if lines > 0 && (nostream || (!o.json && !o.format)) {
        print_tails(cli, &target, &selected, lines, &o);
    }
    if nostream {
        return Ok(0);
    }
    let client = match cli.disconnect() {
        Some(c) => c,
        None => crate::client::Client::connect_or_spawn(&cli.home)?,
    };
    let mut width = 3usize;
    let all = matches!(filter, Filter::All | Filter::Pm2);
    client.stream_events(None, |ev| {
        print_event(&ev, &filter, all, &o, &mut width);
        true
    })?;
    Ok(0)
}

/// `--attach`: stream the live output of `names` (no tailing) until
/// Ctrl-C.
pub fn attach(cli: &mut Cli, names: Vec<String>) -> Result<Code> {
    output::exit_on_broken_pipe();
    let client = match cli.disconnect() {
        Some(c) => c,
        None => crate::client::Client::connect_or_spawn(&cli.home)?,
    };
    let o = Opts::default();
    let mut width = 3usize;
    client.stream_events(None, |ev| {
        if let Event::Log { name, .. } = &ev {
            if names.iter().any(|n| n == name) {
                print_event(&ev, &Filter::All, false, &o, &mut width);
            }
        }
        true
    })?;
    Ok(0)
}

fn print_tails(cli: &Cli, target: &str, selected: &[&ProcInfo], n: usize, o: &Opts) {
    let plural = if target == "all" { "processes" } else { "process" };
    output::log_out(&paint(
        Color::Gray,
        &format!(
            "[TAILING] Tailing last {n} lines for [{target}] {plural} (change the value with --lines option)"
        ),
    ));
    if (target == "all" || target == "PM2") && !o.raw && !o.only_err && !o.only_out {
        let p = cli.home.join("pm2.log");
        print_block(&p, n, "PM2", Color::Blue, o.raw);
    }
    let mut files: Vec<(String, String, bool)> = Vec::new();
    for p in selected {
        let label = format!("{}|{}", p.pm_id, p.app.name);
        if !o.only_err {
            files.push((p.pm_out_log_path.clone(), label.clone(), false));
        }
        if !o.only_out {
            files.push((p.pm_err_log_path.clone(), label, true));
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|(path, _, _)| !path.is_empty() && path != "/dev/null" && seen.insert(path.clone()));
    let mtime = |p: &str| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    files.retain(|(p, _, _)| mtime(p).is_some());
    files.sort_by_key(|(p, _, _)| mtime(p));
    for (path, label, is_err) in files {
        print_block(Path::new(&path), n, &label, if is_err { Color::Red } else { Color::Green }, o.raw);
    }
}

fn print_block(path: &Path, n: usize, label: &str, color: Color, raw: bool) {
    output::log_out(&paint(Color::Gray, &format!("{} last {n} lines:", path.display())));
    let lines = tail_lines(path, n);
    for l in &lines {
        if raw {
            output::log_out(l);
        } else {
            output::log_out(&format!("{}{l}", paint(color, &tail_prefix(label))));
        }
    }
    if !lines.is_empty() {
        output::log_out("");
    }
}

/// Prints one streamed event as pm2's Log.js does; `all` = the target is
/// every process (daemon lines shown).
pub fn print_event(ev: &Event, filter: &Filter, all: bool, o: &Opts, width: &mut usize) {
    // pm2 stamps the time of display, not of the event.
    let ts = || -> String {
        match &o.timestamp {
            Some(fmt) => {
                paint(Color::Gray, &format!("{} ", timefmt::format(&timefmt::local(timefmt::now_ms()), fmt)))
            }
            None => String::new(),
        }
    };
    match ev {
        Event::Log { pm_id, name, namespace, stream, at, data } => {
            if !filter.matches(*pm_id, name, namespace) {
                return;
            }
            let is_err = matches!(stream, Stream::Err);
            if (o.only_err && !is_err) || (o.only_out && is_err) {
                return;
            }
            if o.json {
                // pm2's jsonStream: one object per chunk, line breaks removed.
                let message: String = data.chars().filter(|c| *c != '\n' && *c != '\r').collect();
                let v = serde_json::json!({
                    "message": message,
                    "timestamp": timefmt::iso(if *at > 0 { *at as i64 } else { timefmt::now_ms() }),
                    "type": if is_err { "err" } else { "out" },
                    "process_id": pm_id,
                    "app_name": name,
                });
                output::log_out(&v.to_string());
                return;
            }
            for line in data.split('\n').filter(|l| !l.is_empty()) {
                let line = line.strip_suffix('\r').unwrap_or(line);
                if o.format {
                    let t = timefmt::format(&timefmt::local(timefmt::now_ms()), "YYYY-MM-DD-HH:mm:ssZZ");
                    output::log_out(&format!(
                        "timestamp={t} app={name} id={pm_id} type={} message={line}",
                        if is_err { "error" } else { "out" }
                    ));
                } else if o.raw {
                    if is_err {
                        output::log_err(line);
                    } else {
                        output::log_out(line);
                    }
                } else {
                    let marked;
                    let line = match o.highlight.as_deref().filter(|h| !h.is_empty()) {
                        Some(h) => {
                            marked = line.replacen(h, &paint(Color::BgGray, h), 1);
                            marked.as_str()
                        }
                        None => line,
                    };
                    let label = format!("{pm_id}|{name}");
                    *width = (*width).max(label.chars().count() + 1);
                    let prefix = format!("{label:<w$} | ", w = *width);
                    output::log_out(&format!(
                        "{}{}{line}",
                        ts(),
                        paint(if is_err { Color::Red } else { Color::Green }, &prefix)
                    ));
                }
            }
        }
        Event::Process { name, event, at, .. } => {
            // pm2's jsonStream does not filter process events by target.
            if o.json {
                let v = serde_json::json!({
                    "timestamp": timefmt::iso(if *at > 0 { *at as i64 } else { timefmt::now_ms() }),
                    "type": "process_event",
                    "status": event,
                    "app_name": name,
                });
                output::log_out(&v.to_string());
            }
        }
        Event::Daemon { data, .. } => {
            if !all || o.json || o.only_err || o.only_out {
                return;
            }
            for line in data.split('\n').filter(|l| !l.is_empty()) {
                if o.format {
                    let t = timefmt::format(&timefmt::local(timefmt::now_ms()), "YYYY-MM-DD-HH:mm:ssZZ");
                    output::log_out(&format!("timestamp={t} app=pm2 message={line}"));
                } else if o.raw {
                    output::log_out(line);
                } else {
                    output::log_out(&format!("{}{}{line}", ts(), paint(Color::Blue, &tail_prefix("PM2"))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_ten_wide() {
        assert_eq!(tail_prefix("0|api"), "0|api      | ");
        assert_eq!(tail_prefix("PM2"), "PM2        | ");
        assert_eq!(tail_prefix("12|averyverylongname"), "12|averyve | ");
    }

    #[test]
    fn tail_reads_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let body: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, body).unwrap();
        assert_eq!(tail_lines(&p, 2), vec!["line 998", "line 999"]);
        std::fs::write(&p, "a\nb").unwrap();
        assert_eq!(tail_lines(&p, 5), vec!["a", "b"]);
        assert!(tail_lines(&dir.path().join("none"), 3).is_empty());
    }

    #[test]
    fn filters() {
        assert!(Filter::parse("all").matches(3, "x", "y"));
        assert!(!Filter::parse("PM2").matches(3, "x", "y"));
        assert!(Filter::parse("3").matches(3, "x", "y"));
        assert!(Filter::parse("/^we/").matches(0, "web", "d"));
        assert!(Filter::parse("front").matches(0, "web", "front"));
        assert!(!Filter::parse("api").matches(0, "web", "front"));
    }
}
