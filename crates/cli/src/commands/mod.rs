//! Command implementations. Each returns the process exit code; an `Err`
//! is printed as `[PM2][ERROR] ...` and exits 1.

pub mod conf;
pub mod deploy;
pub mod info;
pub mod misc;
pub mod modules;
pub mod ops;
pub mod profile;
pub mod start;
pub mod state;
pub mod trigger;
pub mod wait;

use crate::args::Parsed;
use crate::client::Client;
use crate::output;
use crate::render::table::{render_list, render_mini, render_modules, ListOptions};
use crate::timefmt::now_ms;
use anyhow::Result;
use corral_proto::{ProcInfo, Reply, Request};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub type Code = i32;

/// The daemon's answer; an error answer is printed as pm2 prints it
/// (`[PM2][ERROR] ...`) and becomes exit code 1. The one place commands turn
/// `Reply::Error` into output.
pub(crate) fn answered(reply: Reply) -> std::result::Result<Reply, Code> {
    match reply {
        Reply::Error { message } => {
            output::error(&message);
            Err(1)
        }
        other => Ok(other),
    }
}

/// An error already shown to the user: unwinds the command (no table) and
/// exits with the code, without printing anything more.
#[derive(Debug)]
pub struct Reported(pub Code);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Reported {}

/// State shared by every command of one invocation.
pub struct Cli {
    pub args: Parsed,
    pub home: PathBuf,
    pub cwd: PathBuf,
    client: Option<Client>,
}

impl Cli {
    pub fn new(args: Parsed, home: PathBuf) -> Cli {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Cli { args, home, cwd, client: None }
    }

    /// The daemon connection, spawning the daemon on first use.
    pub fn client(&mut self) -> Result<&mut Client> {
        if self.client.is_none() {
            // Read before the spawn, which rewrites pm2.pid.
            let died = crate::client::died_uncleanly(&self.home);
            let c = Client::connect_or_spawn(&self.home)?;
            let spawned = c.spawned;
            self.client = Some(c);
            if let (true, Some(pid)) = (spawned, died) {
                self.restore_after_crash(pid)?;
            }
            // pm2 starts the installed modules whenever it starts a daemon
            // (they are not in dump.pm2).
            if spawned && self.args.command.as_deref() != Some("kill") {
                modules::launch_all(self);
            }
        }
        // Set just above; the Option only defers the connection.
        self.client.as_mut().ok_or_else(|| anyhow::anyhow!("not connected"))
    }

    /// The daemon died without stopping its apps (kill -9, OOM) and this
    /// command just started a new one: bring back the last saved process
    /// list, as the systemd unit would, instead of leaving the user with an
    /// empty list (pm2's behaviour). Commands that decide about the saved
    /// list themselves are left alone.
    fn restore_after_crash(&mut self, pid: i32) -> Result<()> {
        let cmd = self.args.command.as_deref().unwrap_or("");
        if matches!(cmd, "kill" | "resurrect" | "update" | "cleardump" | "unstartup") {
            return Ok(());
        }
        let dump = match std::env::var_os("PM2_DUMP_FILE_PATH") {
            Some(p) => PathBuf::from(p),
            None => self.home.join("dump.pm2"),
        };
        if !dump.exists() {
            return Ok(());
        }
        output::warn(&format!(
            "The PM2 daemon (pid {pid}) died without stopping its apps; restoring the process list saved in {}",
            dump.display()
        ));
        let stopped = crate::client::stop_orphans(&self.home, Duration::from_secs(3));
        if stopped > 0 {
            output::warn(&format!("Stopped {stopped} app process(es) the dead daemon left running"));
        }
        let Some(c) = self.client.as_mut() else { return Ok(()) };
        state::print_resurrected(c.request(&Request::Resurrect)?);
        Ok(())
    }

    /// Uses an already established connection.
    pub fn set_client(&mut self, c: Client) {
        self.client = Some(c);
    }

    /// Drops the connection (after `kill`, before reconnecting).
    pub fn disconnect(&mut self) -> Option<Client> {
        self.client.take()
    }

    pub fn list(&mut self) -> Result<Vec<ProcInfo>> {
        self.client()?.list()
    }

    /// pm2's `speedList`: the table (or the mini list with `-m`).
    pub fn print_list(&mut self) -> Result<()> {
        let procs = self.list()?;
        self.print_procs(&procs);
        Ok(())
    }

    pub fn print_procs(&self, procs: &[ProcInfo]) {
        let sort = self.args.value("sort");
        if self.args.has("mini-list") {
            let m = render_mini(procs, now_ms(), sort);
            output::out(m.strip_suffix('\n').unwrap_or(&m));
            return;
        }
        let opts =
            ListOptions { now_ms: now_ms(), columns: terminal_columns(), sort, color: output::color_out() };
        // Modules get pm2's separate table below the apps.
        let (modules, apps): (Vec<ProcInfo>, Vec<ProcInfo>) =
            procs.iter().cloned().partition(|p| corral_proto::is_module(&p.app));
        output::out(&render_list(&apps, &opts));
        if !modules.is_empty() {
            let title = if modules.len() > 1 { "Modules" } else { "Module" };
            output::out(&output::paint_if(opts.color, output::Color::Bold, title));
            output::out(&render_modules(&modules, &opts));
        }
    }
}

/// `process.stdout.columns`, or 300 when stdout is not a terminal (pm2's
/// fallback, which selects the full table for pipes and files).
pub fn terminal_columns() -> usize {
    // SAFETY: TIOCGWINSZ fills the zeroed winsize we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            return ws.ws_col as usize;
        }
    }
    300
}

/// The CLI's environment as a map (lossy for non-UTF-8 values).
pub fn local_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .collect()
}

/// `[PM2] Applying action <m> on app [<t>](ids: <ids>)`.
pub fn print_applying(method: &str, target: &str, ids_shown: &str) {
    output::info(&format!("Applying action {method} on app [{target}](ids: {ids_shown})"));
}

/// `[PM2] [<name>](<id>) ✓`.
pub fn print_done(name: &str, id: u32) {
    output::info(&format!("[{name}]({id}) ✓"));
}
