//! Ecosystem files and CLI options into one validated [`corral_proto::AppSpec`].
//!
//! Every source of app declarations goes through [`app_from_value`]: an
//! ecosystem file's app object, the CLI's flags (mapped to ecosystem keys by
//! the CLI) and a saved `pm2_env` from `dump.pm2`. One validation path means
//! one set of error messages.
//!
//! STUB: the public API below is the contract other crates build against;
//! bodies are filled in by the config work.

use corral_proto::{AppSpec, ProcInfo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("File {0} not found")]
    NotFound(String),
    #[error("File {file} malformated\n{reason}")]
    Malformed { file: String, reason: String },
    /// `key` has the wrong type or value; `reason` says what was expected.
    #[error("{file}: app {app}: \"{key}\": {reason}")]
    Invalid { file: String, app: String, key: String, reason: String },
    #[error("No script path - aborting")]
    NoScript,
    #[error("Script not found: {0}")]
    ScriptNotFound(String),
    #[error("Interpreter {0} is NOT AVAILABLE in PATH. (type 'which {0}' to double check.)")]
    InterpreterNotFound(String),
    #[error("{0}")]
    Other(String),
}

/// Everything resolution depends on besides the app object itself.
#[derive(Debug, Clone)]
pub struct Context {
    /// The CLI's working directory (base for relative `cwd`/`script`).
    pub cwd: PathBuf,
    /// The CLI process environment (inherited by apps, pm2's rule).
    pub env: BTreeMap<String, String>,
    pub pm2_home: PathBuf,
    /// `--env <name>`: merge `env_<name>` over `env`.
    pub env_name: Option<String>,
    /// Number of CPUs, for `instances: "max"`.
    pub nproc: usize,
    /// Name of the file being read, for error messages (`"<cli>"` for flags).
    pub source: String,
}

/// The apps of one ecosystem file: each app resolves independently (pm2
/// starts the good ones and exits 1 if any failed).
#[derive(Debug)]
pub struct Loaded {
    pub apps: Vec<Result<AppSpec, ConfigError>>,
    pub warnings: Vec<String>,
}

/// pm2's rule: an argument is a config file when its name *contains*
/// `.json`, `.yml`, `.yaml`, `.config.js`, `.config.cjs` or `.config.mjs`.
pub fn is_ecosystem_file(arg: &str) -> bool {
    [".json", ".yml", ".yaml", ".config.js", ".config.cjs", ".config.mjs"]
        .iter()
        .any(|s| arg.contains(s))
}

/// Reads and validates an ecosystem file (JS via `node`, JSON with
/// comments, YAML).
pub fn load_ecosystem(path: &Path, ctx: &Context) -> Result<Loaded, ConfigError> {
    let _ = (path, ctx);
    Err(ConfigError::Other("ecosystem files: not implemented yet".into()))
}

/// Validates one app object (ecosystem keys, any alias) into an AppSpec.
/// Unknown keys are kept (`extra`) and reported as warnings.
pub fn app_from_value(
    obj: &serde_json::Map<String, serde_json::Value>,
    ctx: &Context,
) -> Result<(AppSpec, Vec<String>), ConfigError> {
    let _ = (obj, ctx);
    Err(ConfigError::Other("not implemented yet".into()))
}

/// One element of `pm2 jlist` for a process, byte-compatible with pm2's
/// field names.
pub fn jlist_entry(p: &ProcInfo) -> serde_json::Value {
    serde_json::json!({ "pid": p.pid, "name": p.app.name, "pm_id": p.pm_id })
}

/// The `pm2_env` object of a process (what `dump.pm2` stores per entry).
pub fn pm2_env(p: &ProcInfo) -> serde_json::Value {
    let _ = p;
    serde_json::Value::Null
}

/// Rebuilds an AppSpec from a saved `pm2_env` (Corral's or real pm2's
/// `dump.pm2`).
pub fn app_from_pm2_env(v: &serde_json::Value, ctx: &Context) -> Result<AppSpec, ConfigError> {
    let _ = (v, ctx);
    Err(ConfigError::Other("not implemented yet".into()))
}
