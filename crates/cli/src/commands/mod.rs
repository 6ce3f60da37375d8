//! Command implementations. Each returns the process exit code; an `Err`
//! is printed as `[PM2][ERROR] ...` and exits 1.

pub mod conf;
pub mod info;
pub mod misc;
pub mod ops;
pub mod start;
pub mod state;
pub mod trigger;

use crate::args::Parsed;
use crate::client::Client;
use crate::output;
use crate::render::table::{render_list, render_mini, ListOptions};
use crate::timefmt::now_ms;
use anyhow::Result;
use corral_proto::ProcInfo;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub type Code = i32;

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
            self.client = Some(Client::connect_or_spawn(&self.home)?);
        }
        // Set just above; the Option only defers the connection.
        self.client.as_mut().ok_or_else(|| anyhow::anyhow!("not connected"))
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
        output::out(&render_list(procs, &opts));
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
