//! `pm2 monit`: stub replaced below.
use crate::commands::{Cli, Code};
pub fn monit(cli: &mut Cli) -> anyhow::Result<Code> {
    cli.print_list()?;
    Ok(0)
}
