//! pm2's JSON shapes (`jlist`, `pm2_env`, `dump.pm2`) and reading them back.

use crate::{ConfigError, Context};
use corral_proto::{AppSpec, ProcInfo};
use serde_json::Value;

pub fn jlist_entry(p: &ProcInfo) -> Value {
    let _ = p;
    Value::Null
}

pub fn pm2_env(p: &ProcInfo) -> Value {
    let _ = p;
    Value::Null
}

pub fn app_from_pm2_env(v: &Value, ctx: &Context) -> Result<AppSpec, ConfigError> {
    let _ = (v, ctx);
    Err(ConfigError::Other("not implemented yet".into()))
}

/// The instance index (`NODE_APP_INSTANCE` or the app's `instance_var`)
/// saved in a `pm2_env`.
pub fn instance_from_pm2_env(v: &Value) -> Option<u32> {
    let _ = v;
    None
}
