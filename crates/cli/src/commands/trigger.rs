//! `pm2 trigger <id|name|namespace|all> <action> [param]`: runs an action an
//! app declared with @pm2/io and prints each process's answer as pm2 does
//! (`[name:id:namespace]=<json>`).

use super::{Cli, Code};
use crate::output;
use anyhow::Result;
use corral_proto::{Reply, Request};

pub fn trigger(cli: &mut Cli) -> Result<Code> {
    let (target, action) = match cli.args.positionals.as_slice() {
        [t, a, ..] => (t.clone(), a.clone()),
        _ => {
            output::err("\n  error: missing required argument `action_name'\n");
            return Ok(1);
        }
    };
    // pm2 passes the parameter as the string it was given.
    let param = cli.args.positionals.get(2).map(|p| serde_json::Value::String(p.clone()));
    match cli.client()?.request(&Request::Trigger { target, action: action.clone(), param })? {
        Reply::Triggered { sent: 0, .. } => {
            output::error("Not any process has received a command (offline or unexistent)");
            Ok(1)
        }
        Reply::Triggered { sent, replies } => {
            output::out(&format!("{sent} processes have received command {action}"));
            for r in &replies {
                output::out(&format!("[{}:{}:{}]={}", r.name, r.pm_id, r.namespace, r.value));
            }
            if replies.len() < sent {
                output::error(&format!(
                    "{} of {sent} processes did not answer {action} in time",
                    sent - replies.len()
                ));
                return Ok(1);
            }
            Ok(0)
        }
        Reply::Error { message } => {
            output::error(&message);
            Ok(1)
        }
        other => Err(anyhow::anyhow!("unexpected reply to trigger: {other:?}")),
    }
}
