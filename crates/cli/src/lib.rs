//! The `pm2` command line (and `pm2-runtime`): parses pm2's syntax,
//! connects to (or spawns) the Corral daemon over `$PM2_HOME/corral.sock`,
//! resolves targets, and prints pm2's output.
//!
//! Output differences from pm2 that are deliberate:
//! - no ANSI colours unless the stream is a TTY (and `--no-color` /
//!   `NO_COLOR` / `TERM=dumb` are unset), so piped output is parseable;
//! - a daemon that fails to start is reported (`[PM2][ERROR] Daemon failed
//!   to start: ...`, exit 1) instead of pm2's silent exit 0;
//! - `pm2 kill` with no daemon running does not spawn one first.
//!
//! The same binary is the daemon: `CORRAL_DAEMON_MODE=1` (set only by the
//! CLI when it spawns the daemon) switches `main_pm2` to
//! `corral_daemon::run`.
//!
//! Map of the crate:
//! - [`args`]: commander 2.x-compatible parsing (one global option table);
//! - [`client`]: `corral.sock` connection, handshake, daemon spawn and its
//!   failure report;
//! - [`resolve`]: target resolution (`all`, `/re/`, name, namespace, id,
//!   script path), done client-side as pm2 does;
//! - [`commands`]: one function per command, each returning the exit code;
//! - [`render`]: pure renderers (table, describe, jlist/prettylist) tested
//!   against the spec's captured pm2 output; [`inspect`] is Node's
//!   `util.inspect` for JSON values;
//! - [`logs`], [`startup`], [`monit`], [`runtime`] (`pm2-runtime` and
//!   `--no-daemon`).

pub mod args;
pub mod client;
pub mod commands;
pub mod help;
pub mod initscripts;
pub mod inspect;
pub mod logs;
pub mod monit;
pub mod output;
pub mod render;
pub mod resolve;
pub mod runtime;
pub mod startup;
pub mod timefmt;

#[cfg(test)]
mod tests;

use commands::{info, ops, start, state, Cli, Code};
use corral_proto::Op;

const DAEMON_MODE_ENV: &str = "CORRAL_DAEMON_MODE";

/// Runs the daemon when spawned as one; returns its exit code.
fn daemon_mode() -> Option<i32> {
    if std::env::var_os(DAEMON_MODE_ENV).is_some_and(|v| v == "1") {
        // Apps inherit the daemon's environment: the marker must not leak.
        std::env::remove_var(DAEMON_MODE_ENV);
        let pm2_home = client::pm2_home();
        return Some(match corral_daemon::run(corral_daemon::DaemonOptions { pm2_home }) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("PM2 error: daemon stopped: {e:#}");
                1
            }
        });
    }
    None
}

pub fn main_pm2() -> i32 {
    // An in-place update asks the new binary which handover formats it
    // adopts before handing it the daemon.
    if std::env::var_os(corral_daemon::upgrade::format::ENV_PROBE).is_some() {
        println!("{}", corral_daemon::upgrade::format::probe_line());
        return 0;
    }
    if let Some(code) = daemon_mode() {
        return code;
    }
    let argv: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    run_pm2(argv)
}

pub fn main_runtime() -> i32 {
    if let Some(code) = daemon_mode() {
        return code;
    }
    let argv: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    runtime::run(argv)
}

/// Commands pm2 has that Corral does not implement (PM2 Plus, module
/// publishing, ...): a clear message and exit 1 rather than "Command not found".
const UNSUPPORTED: &[&str] = &[
    "link",
    "unlink",
    "open",
    "plus",
    "register",
    "login",
    "logout",
    "module:generate",
    "package",
    "publish",
    "pull",
    "forward",
    "backward",
    "deepUpdate",
    "sysmonit",
    "create",
    "autoinstall",
    "imonit",
];

/// Why an unsupported command is unsupported, and what to use instead.
fn unsupported_message(cmd: &str) -> String {
    match cmd {
        "link" | "unlink" | "plus" | "register" | "login" | "logout" | "open" => format!(
            "Command {cmd} is not supported by Corral: PM2 Plus (app.pm2.io) is not available. \
             Dashboards and exporters built on pm2's API (require('pm2'), launchBus) work against Corral's daemon."
        ),
        "module:generate" | "package" | "publish" => format!(
            "Command {cmd} is not supported by Corral: modules are installed from the npm registry \
             (`pm2 install <module>[@version]`); publish them with npm."
        ),
        _ => format!("Command {cmd} is not supported by Corral"),
    }
}

pub fn run_pm2(argv: Vec<String>) -> i32 {
    // `-v`, `-V` and `--version` are answered before anything else, without
    // a daemon (pm2 answers `-v` so; its `--version` connects first, which
    // buys nothing).
    if args::has_token_before_dashdash(&argv, &["-v", "-V", "--version"]) {
        let verbose = args::has_token_before_dashdash(&argv, &["--verbose"]);
        output::raw_out(&corral_proto::version_text(verbose));
        return 0;
    }
    let silent = args::has_token_before_dashdash(&argv, &["-s", "--silent"]);
    let no_color = args::has_token_before_dashdash(&argv, &["--no-color"]);
    output::init(silent, no_color);
    let parsed = match args::parse(&argv) {
        Ok(p) => p,
        Err(e) => {
            output::err(&e.message());
            return 1;
        }
    };
    if parsed.has("help") {
        let text = match parsed.command.as_deref() {
            Some(cmd) => help::command_help(cmd).unwrap_or_else(usage),
            None => usage(),
        };
        output::out(&text);
        return 0;
    }
    if parsed.has("no-daemon") && parsed.command.as_deref() == Some("start") {
        return runtime::run_no_daemon(parsed);
    }
    let home = client::pm2_home();
    let mut cli = Cli::new(parsed, home);
    match dispatch(&mut cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(r) = e.downcast_ref::<commands::Reported>() {
                return r.0;
            }
            if let Some(s) = e.downcast_ref::<client::SpawnFailed>() {
                output::error(&s.to_string());
            } else {
                output::error(&format!("{e:#}"));
            }
            1
        }
    }
}

fn dispatch(cli: &mut Cli) -> anyhow::Result<Code> {
    let Some(cmd) = cli.args.command.clone() else {
        output::out(&usage());
        return Ok(1);
    };
    match cmd.as_str() {
        "startup" => return startup::startup(cli),
        "unstartup" => return startup::unstartup(cli),
        "kill" => return ops::kill(cli),
        // Connects itself: it must also cope with a daemon it cannot talk to.
        "update" | "updatePM2" => return state::update(cli),
        "ecosystem" | "init" => return commands::misc::ecosystem(cli),
        // Runs locally (git, ssh): no daemon needed.
        "deploy" => return commands::deploy::deploy(cli),
        "logrotate" => return startup::logrotate(cli),
        "examples" => {
            output::out(help::EXAMPLES);
            return Ok(0);
        }
        "completion" => {
            let bin =
                std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "pm2".into());
            output::raw_out(&help::completion_script(&bin));
            return Ok(0);
        }
        _ => {}
    }
    let known = is_known(&cmd);
    if !known {
        if UNSUPPORTED.contains(&cmd.as_str()) {
            output::error(&unsupported_message(&cmd));
            return Ok(1);
        }
        output::error("Command not found");
        output::out(&usage());
        return Ok(1);
    }
    // A missing argument is a usage error: reported before any daemon is
    // contacted (commander does it before pm2's action runs).
    if let Some((need, what)) = required_args(&cmd) {
        if cli.args.positionals.len() < need {
            output::err(&format!("\n  error: missing required argument `{what}'\n"));
            return Ok(1);
        }
    }
    // pm2 connects (and spawns) before any command runs.
    cli.client()?;
    // `--wait`: after the command, wait for what it (re)started to be ready.
    let waits = cli.args.has("wait")
        && matches!(
            cmd.as_str(),
            "start" | "restart" | "reload" | "startOrRestart" | "startOrReload" | "startOrGracefulReload"
        );
    if waits {
        let before = commands::wait::snapshot(&cli.list()?);
        let code = run_command(cli, &cmd)?;
        if code != 0 {
            return Ok(code);
        }
        return commands::wait::wait(cli, &before);
    }
    run_command(cli, &cmd)
}

fn run_command(cli: &mut Cli, cmd: &str) -> anyhow::Result<Code> {
    match cmd {
        "start" => start::start(cli),
        "stop" | "restart" | "reload" | "delete" | "del" | "reset" => ops::run(cli, cmd),
        "startOrRestart" => start::start_or(cli, Op::Restart),
        "startOrReload" | "startOrGracefulReload" => start::start_or(cli, Op::Reload),
        "list" | "ls" | "l" | "ps" | "status" if cli.args.has("watch") => commands::misc::list_watch(cli),
        "list" | "ls" | "l" | "ps" | "status" => info::list(cli),
        "report" => commands::misc::report(cli),
        "set" => commands::conf::set(cli),
        "multiset" => commands::conf::multiset(cli),
        "get" => commands::conf::get(cli),
        "unset" => commands::conf::unset(cli),
        "conf" | "config" => commands::conf::conf(cli),
        "jlist" => info::jlist(cli),
        "prettylist" => info::prettylist(cli),
        "describe" | "desc" | "info" | "show" => info::describe(cli),
        "env" => info::env(cli),
        "pid" => info::pid(cli),
        "id" => info::id(cli),
        "ping" => info::ping(cli),
        "logs" => logs::logs(cli),
        "flush" => state::flush(cli),
        "reloadLogs" => state::reload_logs(cli),
        "save" | "dump" => state::save(cli),
        "resurrect" => state::resurrect(cli),
        "cleardump" => state::cleardump(cli),
        "update" | "updatePM2" => state::update(cli),
        "sendSignal" => ops::send_signal(cli),
        "trigger" => commands::trigger::trigger(cli),
        "install" | "module:install" | "module:update" => commands::modules::install(cli),
        "uninstall" | "module:uninstall" => commands::modules::uninstall(cli),
        "scale" => ops::scale(cli),
        "monit" | "dashboard" | "dash" => monit::monit(cli),
        "monitor" => ops::monitor_state(cli, true),
        "send" => ops::send_line(cli),
        "serve" | "expose" => start::serve(cli),
        "attach" => ops::attach(cli),
        "unmonitor" => ops::monitor_state(cli, false),
        "inspect" => commands::profile::inspect(cli),
        "profile:cpu" => commands::profile::profile(cli, corral_daemon::inspector::Profile::Cpu),
        "profile:mem" => commands::profile::profile(cli, corral_daemon::inspector::Profile::Mem),
        "slist" | "sysinfos" => commands::profile::slist(cli),
        _ => {
            output::error("Command not found");
            Ok(1)
        }
    }
}

/// Positional arguments a command cannot do without, and commander's name
/// for the first missing one.
fn required_args(cmd: &str) -> Option<(usize, &'static str)> {
    Some(match cmd {
        "stop" | "restart" | "delete" | "del" => (1, "id|name|namespace|all|json|stdin"),
        "reload" => (1, "id|name|namespace|all"),
        "reset" => (1, "id|name|all"),
        "describe" | "desc" | "info" | "show" => (1, "name|id"),
        "env" => (1, "id"),
        "id" => (1, "name"),
        "sendSignal" => (2, "pm2_id|name"),
        "trigger" => (2, "action_name"),
        "scale" => (2, "number"),
        "inspect" => (1, "name"),
        "startOrRestart" | "startOrReload" | "startOrGracefulReload" => (1, "json"),
        "set" => (2, "value"),
        "unset" => (1, "key"),
        "install" | "module:install" => (1, "module|git:// url"),
        "module:update" => (1, "module|git:// url"),
        "uninstall" | "module:uninstall" => (1, "module"),
        _ => return None,
    })
}

fn is_known(cmd: &str) -> bool {
    matches!(
        cmd,
        "start"
            | "stop"
            | "restart"
            | "reload"
            | "delete"
            | "del"
            | "reset"
            | "startOrRestart"
            | "startOrReload"
            | "startOrGracefulReload"
            | "list"
            | "ls"
            | "l"
            | "ps"
            | "status"
            | "jlist"
            | "prettylist"
            | "describe"
            | "desc"
            | "info"
            | "show"
            | "env"
            | "pid"
            | "id"
            | "ping"
            | "logs"
            | "flush"
            | "reloadLogs"
            | "save"
            | "dump"
            | "resurrect"
            | "cleardump"
            | "update"
            | "updatePM2"
            | "sendSignal"
            | "trigger"
            | "scale"
            | "monit"
            | "dashboard"
            | "dash"
            | "report"
            | "set"
            | "multiset"
            | "get"
            | "unset"
            | "conf"
            | "config"
            | "monitor"
            | "unmonitor"
            | "send"
            | "attach"
            | "serve"
            | "expose"
            | "install"
            | "module:install"
            | "module:update"
            | "uninstall"
            | "module:uninstall"
            | "inspect"
            | "profile:cpu"
            | "profile:mem"
            | "slist"
            | "sysinfos"
    )
}

pub fn usage() -> String {
    help::usage(&client::pm2_home())
}
