//! save / resurrect / cleardump / update / flush / reloadLogs.

use super::{answered, Cli, Code};
use crate::output;
use crate::resolve::is_numeric;
use anyhow::Result;
use corral_proto::{Reply, Request};

fn dump_path(cli: &Cli) -> std::path::PathBuf {
    match std::env::var_os("PM2_DUMP_FILE_PATH") {
        Some(p) if !p.is_empty() => p.into(),
        _ => cli.home.join("dump.pm2"),
    }
}

/// Returns Ok(true) when something was written.
fn do_save(cli: &mut Cli, force: bool) -> Result<Option<Code>> {
    output::info("Saving current process list...");
    let procs = cli.list()?;
    let force = force || std::env::var_os("FORCE").is_some();
    if procs.is_empty() && !force {
        // pm2 leaves an existing dump alone but creates an empty one.
        let dump = dump_path(cli);
        if !dump.exists() {
            let _ = corral_daemon::paths::write_private(&dump, b"[]");
        }
        output::warn("PM2 is not managing any process, skipping save...");
        output::warn("To force saving use: pm2 save --force");
        return Ok(None);
    }
    match cli.client()?.request(&Request::Save { force })? {
        Reply::Saved { path, .. } => {
            output::info(&format!("Successfully saved in {path}"));
            Ok(Some(0))
        }
        Reply::Error { message } => {
            output::error(&message);
            Ok(Some(1))
        }
        _ => {
            output::info(&format!("Successfully saved in {}", dump_path(cli).display()));
            Ok(Some(0))
        }
    }
}

pub fn save(cli: &mut Cli) -> Result<Code> {
    let force = cli.args.has("force");
    Ok(do_save(cli, force)?.unwrap_or(0))
}

fn do_resurrect(cli: &mut Cli) -> Result<()> {
    output::info("Resurrecting");
    let dump = dump_path(cli);
    let mut bak = dump.clone().into_os_string();
    bak.push(".bak");
    let bak = std::path::PathBuf::from(bak);
    output::info(&format!("Restoring processes located in {}", dump.display()));
    if !dump.exists() {
        // pm2's messages as it falls back from the dump to its backup.
        output::error(&format!("Failed to read dump file in {}", dump.display()));
        output::info(&format!("Restoring processes located in {}", bak.display()));
        if !bak.exists() {
            output::error(&format!("Failed to read dump file in {}", bak.display()));
            output::error("No processes saved; DUMP file doesn't exist");
            return Ok(());
        }
    }
    let reply = cli.client()?.request(&Request::Resurrect)?;
    print_resurrected(reply);
    Ok(())
}

/// pm2's lines for what a resurrect brought back (or why it failed).
pub(crate) fn print_resurrected(reply: Reply) {
    match reply {
        Reply::Resurrected { restored, .. } => {
            for r in restored {
                output::info(&format!("Process {r} restored"));
            }
        }
        Reply::Error { message } => output::error(&message),
        _ => {}
    }
}

/// Exits 0 even when nothing could be restored, as pm2 does.
pub fn resurrect(cli: &mut Cli) -> Result<Code> {
    do_resurrect(cli)?;
    cli.print_list()?;
    Ok(0)
}

pub fn cleardump(cli: &mut Cli) -> Result<Code> {
    let p = dump_path(cli);
    corral_daemon::paths::write_private(&p, b"[]")?;
    output::info(&format!("Successfully created {}", p.display()));
    Ok(0)
}

/// `pm2 update`: the daemon re-executes itself in place with the binary on
/// disk (or `--binary`), keeping every process, connection and session.
/// A daemon too old for that (no `handover` capability), or `--restart`,
/// gets pm2's save → kill → respawn → resurrect.
pub fn update(cli: &mut Cli) -> Result<Code> {
    match crate::client::Client::connect_existing(&cli.home) {
        Ok(Some(mut c)) => {
            let can = c.welcome.capabilities.iter().any(|k| k == corral_proto::CAP_HANDOVER);
            if can && !cli.args.has("restart") {
                let binary = match cli.args.value("binary") {
                    Some(b) => Some(
                        std::fs::canonicalize(b)
                            .map_err(|e| anyhow::anyhow!("--binary {b}: {e}"))?
                            .to_string_lossy()
                            .into_owned(),
                    ),
                    None => None,
                };
                output::info("Updating the daemon in place (every process keeps running)");
                match c.request(&corral_proto::Request::Update { binary })? {
                    corral_proto::Reply::Updated {
                        pid,
                        from_version,
                        to_version,
                        processes,
                        wall_ms,
                        ..
                    } => {
                        output::info(&format!(
                            "Daemon {pid} updated in place from {from_version} to {to_version}: {processes} processes kept, {wall_ms} ms"
                        ));
                    }
                    corral_proto::Reply::Error { message } => {
                        output::error(&format!("In-place update failed: {message}"));
                        return Ok(1);
                    }
                    other => {
                        output::error(&format!("In-place update: unexpected answer {other:?}"));
                        return Ok(1);
                    }
                }
                drop(c);
                output::out(&output::paint(output::Color::BoldBlue, ">>>>>>>>>> PM2 updated"));
                cli.print_list()?;
                return Ok(0);
            }
            if !can {
                output::warn(&format!(
                    "The running daemon ({}) cannot update in place: saving, stopping every process, starting the new daemon and resurrecting",
                    c.welcome.daemon_version
                ));
            }
            cli.set_client(c)
        }
        Ok(None) => {}
        Err(e) => {
            // A daemon from another Corral version may refuse our protocol.
            // SIGTERM makes it dump its list, which the new daemon restores.
            output::warn(&format!("The running daemon cannot be driven ({e:#}); stopping it by signal"));
            crate::client::carry_daemon_settings(crate::client::daemon_settings(&cli.home));
            if super::ops::kill_by_signal(&cli.home)? != 0 {
                return Ok(1);
            }
            cli.client()?;
            do_resurrect(cli)?;
            output::out(&output::paint(output::Color::BoldBlue, ">>>>>>>>>> PM2 updated"));
            cli.print_list()?;
            return Ok(0);
        }
    }
    let saved = do_save(cli, false)?;
    if saved == Some(1) {
        return Ok(1);
    }
    // The new daemon must keep the old one's settings (PM2_PORT...), even
    // when this command runs from a shell that lacks them.
    crate::client::carry_daemon_settings(crate::client::daemon_settings(&cli.home));
    if let Some(mut c) = cli.disconnect() {
        if super::ops::kill_daemon(&mut c, &cli.home)? != 0 {
            return Ok(1);
        }
    }
    cli.client()?;
    if saved.is_some() {
        do_resurrect(cli)?;
    }
    output::out(&output::paint(output::Color::BoldBlue, ">>>>>>>>>> PM2 updated"));
    cli.print_list()?;
    Ok(0)
}

pub fn flush(cli: &mut Cli) -> Result<Code> {
    let procs = cli.list()?;
    let target = cli.args.positionals.first().cloned();
    let selected: Vec<_> = procs
        .iter()
        .filter(|p| match &target {
            None => true,
            Some(t) => p.app.name == *t || (is_numeric(t) && t.parse::<u32>().is_ok_and(|id| id == p.pm_id)),
        })
        .collect();
    if target.is_none() {
        output::info(&format!("Flushing {}", cli.home.join("pm2.log").display()));
    }
    for p in &selected {
        output::info("Flushing:");
        output::info(&p.pm_out_log_path);
        output::info(&p.pm_err_log_path);
        if let Some(l) = &p.pm_log_path {
            output::info(l);
        }
    }
    let ids = target.as_ref().map(|_| selected.iter().map(|p| p.pm_id).collect::<Vec<_>>());
    // An unknown name flushes nothing and still succeeds (pm2).
    if ids.as_ref().is_none_or(|v| !v.is_empty()) {
        if let Err(code) = answered(cli.client()?.request(&Request::Flush { ids })?) {
            return Ok(code);
        }
    }
    output::info("Logs flushed");
    Ok(0)
}

pub fn reload_logs(cli: &mut Cli) -> Result<Code> {
    output::out("Reloading all logs...");
    if let Err(code) = answered(cli.client()?.request(&Request::ReloadLogs)?) {
        return Ok(code);
    }
    output::info("All logs reloaded");
    Ok(0)
}
