//! stub
use crate::commands::{Cli, Code};
pub fn startup(_cli: &mut Cli) -> anyhow::Result<Code> {
    Ok(1)
}
pub fn unstartup(_cli: &mut Cli) -> anyhow::Result<Code> {
    Ok(1)
}
