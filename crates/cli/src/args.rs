//! Command-line parsing with commander 2.x's rules, which pm2 users rely on:
//! options may appear before or after the command, `--opt=value` and
//! `--opt value` are equivalent, a required value takes the next word even if
//! it starts with `-`, an optional value takes it only if it does not, and
//! everything after a bare `--` belongs to the app.
//!
//! All options are global (pm2 declares them on the program, not on each
//! command), so one table serves every command.

use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `--flag`
    Flag,
    /// `--opt <value>`
    Value,
    /// `--opt [value]`
    OptValue,
}

struct OptDef {
    long: &'static str,
    short: Option<char>,
    kind: Kind,
}

const fn f(long: &'static str, short: Option<char>) -> OptDef {
    OptDef { long, short, kind: Kind::Flag }
}
const fn v(long: &'static str, short: Option<char>) -> OptDef {
    OptDef { long, short, kind: Kind::Value }
}
const fn o(long: &'static str, short: Option<char>) -> OptDef {
    OptDef { long, short, kind: Kind::OptValue }
}

/// Every option pm2 6.x declares (including the ones Corral accepts and
/// ignores), so valid pm2 command lines never hit "unknown option".
const OPTIONS: &[OptDef] = &[
    f("version", Some('v')),
    f("help", Some('h')),
    f("silent", Some('s')),
    f("no-color", None),
    f("mini-list", Some('m')),
    v("sort", None),
    v("name", Some('n')),
    v("instances", Some('i')),
    o("watch", None),
    v("ignore-watch", None),
    v("watch-delay", None),
    v("ext", None),
    v("env", None),
    f("update-env", Some('a')),
    f("force", Some('f')),
    v("interpreter", None),
    v("interpreter-args", None),
    v("node-args", None),
    v("output", Some('o')),
    v("error", Some('e')),
    o("log", Some('l')),
    v("log-date-format", None),
    f("time", None),
    // `slist -t`: a command option in pm2, harmless as a global flag.
    f("tree", Some('t')),
    v("log-type", None),
    f("merge-logs", None),
    f("disable-logs", None),
    v("max-memory-restart", None),
    v("restart-delay", None),
    v("exp-backoff-restart-delay", None),
    o("max-restarts", None),
    v("min-uptime", None),
    f("no-autorestart", None),
    f("no-autostart", None),
    v("stop-exit-codes", None),
    v("kill-timeout", Some('k')),
    v("listen-timeout", None),
    f("wait-ready", None),
    v("readiness", None),
    v("liveness", None),
    v("startup-probe", None),
    f("notify", None),
    v("watchdog", None),
    f("wait", None),
    v("wait-timeout", None),
    f("shutdown-with-message", None),
    f("no-treekill", None),
    v("cron", Some('c')),
    v("cron-restart", None),
    v("cwd", None),
    v("namespace", None),
    // Corral's `pm2 update --binary <path>` (in-place update to another
    // binary) and `--restart` (the save/kill/resurrect update of pm2).
    v("binary", None),
    f("restart", None),
    f("execute-command", Some('x')),
    v("pid", Some('p')),
    v("uid", None),
    v("gid", None),
    v("only", None),
    f("source-map-support", None),
    f("disable-source-map-support", None),
    o("filter-env", None),
    v("parallel", None),
    f("attach", None),
    f("no-daemon", None),
    v("user", Some('u')),
    v("hp", None),
    v("service-name", None),
    f("wait-ip", None),
    f("no-vizion", None),
    f("no-pmx", None),
    f("no-automation", None),
    f("trace", None),
    f("disable-trace", None),
    f("v8", None),
    f("event-loop-inspector", None),
    f("deep-monitoring", None),
    f("sticky", None),
    v("listen", None),
    f("write", Some('w')),
    v("instance-var", None),
    v("increment-var", None),
    v("lines", None),
    f("raw", None),
    f("err", None),
    f("out", None),
    f("nostream", None),
    o("timestamp", None),
    f("json", None),
    f("format", None),
    f("formatted", None),
    o("highlight", None),
    f("container", None),
    f("dist", None),
    v("image-name", None),
    v("node-version", None),
    f("fresh", None),
    f("daemon", None),
    f("dockerdaemon", None),
    f("no-auto-exit", None),
    f("auto-exit", None),
    o("web", None),
    v("delay", None),
    v("secret", None),
    v("public", None),
    v("machine-name", None),
    v("port", None),
    f("spa", None),
    v("basic-auth-username", None),
    v("basic-auth-password", None),
    f("monitor", None),
    f("tarball", None),
    f("install", None),
    f("docker", None),
    f("v1", None),
    o("safe", None),
    f("rotate", None),
    // Corral's own: `pm2 --version --verbose` also shows Corral's version.
    f("verbose", None),
];

fn by_long(name: &str) -> Option<&'static OptDef> {
    OPTIONS.iter().find(|d| d.long == name)
}

fn by_short(c: char) -> Option<&'static OptDef> {
    OPTIONS.iter().find(|d| d.short == Some(c))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// `--foo` or `-z`: printed as commander does.
    UnknownOption(String),
    MissingArgument(String),
}

impl ArgError {
    /// The text commander prints (on stderr) before exiting 1.
    pub fn message(&self) -> String {
        match self {
            ArgError::UnknownOption(o) => format!("\n  error: unknown option `{o}'\n"),
            ArgError::MissingArgument(o) => format!("\n  error: option `{o}' argument missing\n"),
        }
    }
}

/// The result of parsing `argv[1..]`.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    pub command: Option<String>,
    /// Positional arguments after the command.
    pub positionals: Vec<String>,
    /// Everything after a bare `--`.
    pub app_args: Vec<String>,
    /// Canonical long name → one entry per occurrence (`None` = no value).
    opts: BTreeMap<&'static str, Vec<Option<String>>>,
}

impl Parsed {
    pub fn has(&self, long: &str) -> bool {
        self.opts.contains_key(long)
    }

    /// Last value given for `long`, if any occurrence carried one.
    pub fn value(&self, long: &str) -> Option<&str> {
        self.opts.get(long)?.iter().rev().find_map(|v| v.as_deref())
    }

    /// Every value given for a repeatable option.
    pub fn values(&self, long: &str) -> Vec<&str> {
        self.opts.get(long).map(|v| v.iter().filter_map(|x| x.as_deref()).collect()).unwrap_or_default()
    }

    /// Test helper and programmatic construction.
    pub fn set(&mut self, long: &'static str, value: Option<String>) {
        self.opts.entry(long).or_default().push(value);
    }
}

fn looks_numeric(s: &str) -> bool {
    // `pm2 scale app -1` and `-i -1`: a negative number is a value, never a
    // cluster of short options.
    let t = s.strip_prefix('-').unwrap_or(s);
    !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Parses `args` (without the program name).
pub fn parse(args: &[String]) -> Result<Parsed, ArgError> {
    let mut p = Parsed::default();
    let mut i = 0;
    let push_pos = |p: &mut Parsed, a: String| {
        if p.command.is_none() {
            p.command = Some(a);
        } else {
            p.positionals.push(a);
        }
    };
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            p.app_args = args[i..].to_vec();
            break;
        }
        if let Some(body) = a.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let def = by_long(name).ok_or_else(|| ArgError::UnknownOption(format!("--{name}")))?;
            let value = take_value(def, inline, args, &mut i, &format!("--{name}"))?;
            p.set(def.long, value);
        } else if a.len() > 1 && a.starts_with('-') && !looks_numeric(a) {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut k = 0;
            while k < chars.len() {
                let c = chars[k];
                k += 1;
                let def = by_short(c).ok_or_else(|| ArgError::UnknownOption(format!("-{c}")))?;
                if def.kind != Kind::Flag && k < chars.len() {
                    // `-n3` / `-imax`: the rest of the word is the value.
                    let rest: String = chars[k..].iter().collect();
                    p.set(def.long, Some(rest));
                    break;
                }
                let value = take_value(def, None, args, &mut i, &format!("-{c}"))?;
                p.set(def.long, value);
            }
        } else {
            push_pos(&mut p, a.clone());
        }
    }
    if p.command.as_deref() == Some("log") {
        p.command = Some("logs".into());
    }
    Ok(p)
}

fn take_value(
    def: &OptDef,
    inline: Option<String>,
    args: &[String],
    i: &mut usize,
    shown: &str,
) -> Result<Option<String>, ArgError> {
    match def.kind {
        Kind::Flag => Ok(None),
        Kind::Value => {
            if inline.is_some() {
                return Ok(inline);
            }
            match args.get(*i) {
                Some(v) if v != "--" => {
                    *i += 1;
                    Ok(Some(v.clone()))
                }
                _ => Err(ArgError::MissingArgument(shown.to_string())),
            }
        }
        Kind::OptValue => {
            if inline.is_some() {
                return Ok(inline);
            }
            match args.get(*i) {
                Some(v) if !v.starts_with('-') || looks_numeric(v) => {
                    *i += 1;
                    Ok(Some(v.clone()))
                }
                _ => Ok(None),
            }
        }
    }
}

/// pm2 treats `-s`/`--silent` and `-v` as exact tokens before any `--`.
pub fn has_token_before_dashdash(args: &[String], tokens: &[&str]) -> bool {
    args.iter().take_while(|a| *a != "--").any(|a| tokens.contains(&a.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Result<Parsed, ArgError> {
        parse(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_before_and_after_command() {
        let a = p(&["--name", "api", "start", "app.js", "-i", "2"]).unwrap();
        assert_eq!(a.command.as_deref(), Some("start"));
        assert_eq!(a.positionals, vec!["app.js"]);
        assert_eq!(a.value("name"), Some("api"));
        assert_eq!(a.value("instances"), Some("2"));
    }

    #[test]
    fn dashdash_passes_args_verbatim() {
        let a = p(&["start", "app.js", "--", "--port", "3000", "-s"]).unwrap();
        assert_eq!(a.app_args, vec!["--port", "3000", "-s"]);
        assert!(!a.has("silent"));
    }

    #[test]
    fn unknown_option_message() {
        let e = p(&["stop", "all", "--foo"]).unwrap_err();
        assert_eq!(e.message(), "\n  error: unknown option `--foo'\n");
    }

    #[test]
    fn equals_and_short_clusters() {
        let a = p(&["start", "x.js", "--name=web", "-fs", "-imax"]).unwrap();
        assert_eq!(a.value("name"), Some("web"));
        assert!(a.has("force") && a.has("silent"));
        assert_eq!(a.value("instances"), Some("max"));
    }

    #[test]
    fn negative_numbers_are_values() {
        let a = p(&["scale", "app", "-1"]).unwrap();
        assert_eq!(a.positionals, vec!["app", "-1"]);
        let a = p(&["start", "app.js", "-i", "-1"]).unwrap();
        assert_eq!(a.value("instances"), Some("-1"));
    }

    #[test]
    fn optional_value_does_not_eat_options() {
        let a = p(&["start", "app.js", "--watch", "--name", "x"]).unwrap();
        assert!(a.has("watch"));
        assert_eq!(a.value("watch"), None);
        assert_eq!(a.value("name"), Some("x"));
    }

    #[test]
    fn missing_required_value() {
        let e = p(&["start", "app.js", "--name"]).unwrap_err();
        assert!(matches!(e, ArgError::MissingArgument(_)));
    }

    #[test]
    fn log_is_logs() {
        assert_eq!(p(&["log", "api"]).unwrap().command.as_deref(), Some("logs"));
    }
}
