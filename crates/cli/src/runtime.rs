//! `pm2-runtime`: the container entry point. The daemon runs in a
//! thread of this process; apps' output goes to our stdout/stderr;
//! SIGINT/SIGTERM stop everything and exit 0; with auto-exit (default) the
//! runtime exits 2 once no app has been online for three checks in a row.

use crate::args;
use crate::client::{connect_async, ensure_home, pm2_home, request_async, sock_path};
use crate::commands::start::{cli_app_object, config_context};
use crate::commands::Cli;
use crate::output;
use anyhow::{anyhow, Result};
use corral_proto::{
    read_frame_unbounded as read_frame, write_frame, AppSpec, Event, FrameError, Reply, Request,
};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// First auto-exit check after start, then every `CHECK_EVERY`.
const FIRST_CHECK: Duration = Duration::from_secs(4);
const CHECK_EVERY: Duration = Duration::from_secs(2);
const CHECKS_BEFORE_EXIT: u32 = 3;

#[derive(Clone, Copy)]
enum LogFormat {
    Raw,
    Json,
    Format,
}

pub fn run(argv: Vec<String>) -> i32 {
    if args::has_token_before_dashdash(&argv, &["-v", "-V", "--version"]) {
        let verbose = args::has_token_before_dashdash(&argv, &["--verbose"]);
        output::raw_out(&corral_proto::version_text(verbose));
        return 0;
    }
    output::init(args::has_token_before_dashdash(&argv, &["-s", "--silent"]), true);
    let parsed = match args::parse(&argv) {
        Ok(p) => p,
        Err(e) => {
            output::err(&e.message());
            return 1;
        }
    };
    if parsed.has("help") || parsed.command.is_none() {
        output::out("\nUsage: pm2-runtime [options] <app.js|ecosystem.config.js>\n\n  Runs the apps in the foreground (containers): logs on stdout/stderr,\n  SIGINT/SIGTERM stop every app and exit.\n");
        return if parsed.has("help") { 0 } else { 1 };
    }
    let auto_exit = !parsed.has("no-auto-exit");
    report(run_inner(parsed, auto_exit))
}

fn report(r: Result<i32>) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) => {
            output::error(&format!("{e:#}"));
            1
        }
    }
}

/// `pm2 start <app> --no-daemon`: the daemon runs inside this process and
/// the logs are streamed until SIGINT/SIGTERM (no auto-exit).
pub fn run_no_daemon(parsed: args::Parsed) -> i32 {
    output::out("[--no-daemon] Continue to stream logs");
    report(run_inner(parsed, false))
}

fn run_inner(mut parsed: args::Parsed, auto_exit: bool) -> Result<i32> {
    // `pm2-runtime start app.js` is accepted like `pm2-runtime app.js`.
    if parsed.command.as_deref() == Some("start") && !parsed.positionals.is_empty() {
        parsed.command = Some(parsed.positionals.remove(0));
    }
    let target = parsed.command.clone().unwrap_or_default();
    let home = pm2_home();
    ensure_home(&home)?;
    let rt = crate::client::new_runtime()?;
    if rt.block_on(tokio::net::UnixStream::connect(sock_path(&home))).is_ok() {
        return Err(anyhow!(
            "a PM2 daemon is already running with PM2_HOME={}; stop it (pm2 kill) or use another PM2_HOME",
            home.display()
        ));
    }
    let _ = std::fs::remove_file(sock_path(&home));

    let (done_tx, done_rx) = mpsc::channel::<Result<(), String>>();
    let opts = corral_daemon::DaemonOptions { pm2_home: home.clone() };
    std::thread::Builder::new()
        .name("corral-daemon".into())
        .spawn(move || {
            let r = corral_daemon::run(opts).map_err(|e| format!("{e:#}"));
            let _ = done_tx.send(r);
        })
        .map_err(|e| anyhow!("cannot start the daemon thread: {e}"))?;

    if let Some(d) = parsed.value("delay").and_then(|d| d.parse::<f64>().ok()) {
        std::thread::sleep(Duration::from_secs_f64(d.max(0.0)));
    }
    if parsed.has("web") {
        output::warn("--web is not supported by Corral; ignored");
    }
    let format = if parsed.has("json") {
        LogFormat::Json
    } else if parsed.has("format") || parsed.has("formatted") {
        LogFormat::Format
    } else {
        LogFormat::Raw
    };
    let cli = Cli::new(parsed, home.clone());
    let apps = build_apps(&cli, &target)?;
    rt.block_on(supervise(&home, apps, format, auto_exit, &done_rx))
}

/// The app specs to start: an ecosystem file's apps (`--only`, `--env`), or
/// one script with pm2-runtime's defaults (log files disabled).
fn build_apps(cli: &Cli, target: &str) -> Result<Vec<AppSpec>> {
    let ctx = config_context(cli, target);
    if corral_config::is_ecosystem_file(target) {
        let path = crate::resolve::normalize(&cli.cwd.join(target));
        let loaded = corral_config::load_ecosystem(&path, &ctx).map_err(|e| anyhow!("{e}"))?;
        for w in &loaded.warnings {
            output::warn(w);
        }
        let only: Option<Vec<String>> = cli
            .args
            .value("only")
            .map(|v| v.split([',', ' ']).filter(|s| !s.is_empty()).map(String::from).collect());
        let mut apps = Vec::new();
        for a in loaded.apps {
            match a {
                Ok(a) if only.as_ref().is_none_or(|o| o.contains(&a.name)) => apps.push(a),
                Ok(_) => {}
                Err(e) => {
                    // Same rule as `pm2 start --only`: other apps' errors are hidden.
                    let relevant = match (&only, &e) {
                        (None, _) => true,
                        (Some(o), corral_config::ConfigError::Invalid { app, .. }) => o.contains(app),
                        (Some(_), _) => false,
                    };
                    if relevant {
                        output::error(&format!("Error: {e}"));
                    }
                }
            }
        }
        return Ok(apps);
    }
    let mut obj = cli_app_object(&cli.args, target);
    obj.entry("out_file").or_insert_with(|| "/dev/null".into());
    obj.entry("error_file").or_insert_with(|| "/dev/null".into());
    let (spec, warnings) = corral_config::app_from_value(&obj, &ctx).map_err(|e| anyhow!("{e}"))?;
    for w in &warnings {
        output::warn(w);
    }
    Ok(vec![spec])
}

async fn supervise(
    home: &Path,
    apps: Vec<AppSpec>,
    format: LogFormat,
    auto_exit: bool,
    done: &mpsc::Receiver<Result<(), String>>,
) -> Result<i32> {
    let mut control = connect_waiting(home, done).await?;
    let mut events = connect_async(home).await?;
    write_frame(&mut events, &Request::Logs { ids: None }).await.map_err(|e| anyhow!("{e}"))?;
    // The daemon answers once subscribed: starting the apps only then means
    // their first events (`start`, `online`) are on the stream.
    read_frame::<_, serde_json::Value>(&mut events).await.map_err(|e| anyhow!("log stream: {e}"))?;
    for app in apps {
        let name = app.name.clone();
        match request_async(&mut control, &Request::Start { app }).await? {
            Reply::Error { message } => output::error(&format!("Error: {message}")),
            Reply::Procs { procs } => {
                output::info(&format!("App [{name}] launched ({} instances)", procs.len()))
            }
            _ => {}
        }
    }
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FIRST_CHECK, CHECK_EVERY);
    let mut idle_checks = 0u32;
    loop {
        tokio::select! {
            _ = sigint.recv() => return shutdown(home, &mut control, done, 0).await,
            _ = sigterm.recv() => return shutdown(home, &mut control, done, 0).await,
            _ = tick.tick() => {
                if let Ok(r) = done.try_recv() {
                    return daemon_ended(r);
                }
                if !auto_exit {
                    continue;
                }
                let online = match request_async(&mut control, &Request::List).await? {
                    Reply::Procs { procs } => procs.iter().filter(|p| p.status == "online" || p.status == "launching").count(),
                    _ => 0,
                };
                idle_checks = if online == 0 { idle_checks + 1 } else { 0 };
                if idle_checks >= CHECKS_BEFORE_EXIT {
                    output::info("No application online, exiting");
                    return shutdown(home, &mut control, done, 2).await;
                }
            }
            ev = read_frame::<_, serde_json::Value>(&mut events) => match ev {
                Ok(v) => {
                    if let Ok(ev) = serde_json::from_value::<Event>(v) {
                        print_event(&ev, format);
                    }
                }
                Err(FrameError::Closed) => {
                    return match done.recv_timeout(Duration::from_secs(5)) {
                        Ok(r) => daemon_ended(r),
                        Err(_) => Err(anyhow!("the daemon closed the log stream")),
                    };
                }
                Err(e) => return Err(anyhow!("log stream: {e}")),
            },
        }
    }
}

async fn connect_waiting(
    home: &Path,
    done: &mpsc::Receiver<Result<(), String>>,
) -> Result<tokio::net::UnixStream> {
    let start = std::time::Instant::now();
    loop {
        if let Ok(s) = connect_async(home).await {
            return Ok(s);
        }
        if let Ok(r) = done.try_recv() {
            daemon_ended(r)?;
            return Err(anyhow!("the daemon stopped before accepting connections"));
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Err(anyhow!("Daemon failed to start: no answer on {}", sock_path(home).display()));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn daemon_ended(r: Result<(), String>) -> Result<i32> {
    match r {
        Ok(()) => Ok(0),
        Err(e) => Err(anyhow!("daemon stopped: {e}")),
    }
}

async fn shutdown(
    home: &Path,
    control: &mut tokio::net::UnixStream,
    done: &mpsc::Receiver<Result<(), String>>,
    code: i32,
) -> Result<i32> {
    // The daemon may already be shutting down on the same signal. It closes
    // control connections left idle, so a failed request is sent again on a
    // fresh one.
    if request_async(control, &Request::Kill).await.is_err() {
        if let Ok(mut fresh) = connect_async(home).await {
            let _ = request_async(&mut fresh, &Request::Kill).await;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if done.try_recv().is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(code)
}

fn print_event(ev: &Event, format: LogFormat) {
    // The daemon runs in this process and already writes its own log lines
    // to our stdout; the bus copy would print each one twice.
    if matches!(ev, Event::Daemon { .. }) {
        return;
    }
    // pm2-runtime streams like `pm2 logs all --raw` / `--json` / `--format`.
    let o = crate::logs::Opts {
        raw: matches!(format, LogFormat::Raw),
        json: matches!(format, LogFormat::Json),
        format: matches!(format, LogFormat::Format),
        ..Default::default()
    };
    let mut width = 3;
    crate::logs::print_event(ev, &crate::logs::Filter::All, true, &o, &mut width);
}
