//! The Corral daemon: supervisor, cluster primary, sticky balancer, relay.

pub mod sticky;

use std::path::PathBuf;

/// How the daemon was asked to run.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub pm2_home: PathBuf,
}

/// Runs the daemon until `pm2 kill` or a terminating signal. Blocks.
pub fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    let _ = opts;
    Ok(())
}
