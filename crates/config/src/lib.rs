//! Ecosystem files and CLI options into one validated [`corral_proto::AppSpec`].
//!
//! Every source of app declarations goes through [`app_from_value`]: an
//! ecosystem file's app object, the CLI's flags (mapped to ecosystem keys by
//! the CLI) and a saved `pm2_env` from `dump.pm2`. One validation path means
//! one set of error messages.
//!
//! Modules: [`json5`] (lenient JSON for `.json` files and `dump.pm2`),
//! `app` (the option table and resolution), `ecosystem` (file formats),
//! `jlist` (pm2's JSON shapes and reading them back).
//!
//! `AppSpec::extra` holds, besides unknown keys and `env_<name>` objects,
//! the known pm2 keys Corral does not model (under their canonical name):
//! `uid`, `gid` (applied by the daemon), `port` (already applied as `env.PORT`), `filter_env`
//! (already applied to `env`), `force`, `watch_options`, `vizion`, `pmx`,
//! `automation`, `windowsHide`, `km_link`, `source_map_support`, ...
//! `watch: true` is `watch == true` with empty `watch_paths` (= the cwd).

mod app;
mod coerce;
mod ecosystem;
pub mod health;
mod jlist;
pub mod json5;
mod paths;
mod runtime_version;
pub mod serve;

pub use app::{canonical_key, check_cron, parse_cron, sanitize_log_name, TIME_FORMAT};
pub use coerce::{env_string, parse_bytes, parse_duration_ms, split_args};
pub use jlist::instance_from_pm2_env;

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
    [".json", ".yml", ".yaml", ".config.js", ".config.cjs", ".config.mjs"].iter().any(|s| arg.contains(s))
}

/// Reads and validates an ecosystem file (JS via `node`, JSON with
/// comments, YAML).
///
/// `path` is resolved against `ctx.cwd`; `ctx.source` is replaced by the
/// path as given, for messages. A file that cannot be read or evaluated is
/// an `Err`; per-app problems are in `Loaded::apps`.
pub fn load_ecosystem(path: &Path, ctx: &Context) -> Result<Loaded, ConfigError> {
    ecosystem::load(path, ctx)
}

/// The whole document an ecosystem file evaluates to, unvalidated (`pm2
/// deploy` reads its `deploy` section).
pub fn load_ecosystem_document(path: &Path, ctx: &Context) -> Result<serde_json::Value, ConfigError> {
    ecosystem::load_raw(path, ctx)
}

/// Same as [`load_ecosystem`] for an already parsed document (`pm2 start -`
/// reads JSON from stdin).
pub fn load_document(doc: &serde_json::Value, ctx: &Context) -> Result<Loaded, ConfigError> {
    ecosystem::from_document(doc, ctx)
}

/// Validates one app object (ecosystem keys, any alias) into an AppSpec.
/// Unknown keys are kept (`extra`) and reported as warnings.
pub fn app_from_value(
    obj: &serde_json::Map<String, serde_json::Value>,
    ctx: &Context,
) -> Result<(AppSpec, Vec<String>), ConfigError> {
    app::resolve_app(obj, ctx, ctx.env.clone())
}

/// Number of processes an `instances` value starts: unset → 1, `0`/`max`
/// → nproc, `-k` → nproc-k (at least 1).
pub fn effective_instances(instances: Option<i64>, nproc: usize) -> u32 {
    let nproc = nproc.max(1) as i64;
    let n = match instances {
        None => 1,
        Some(0) => nproc,
        Some(k) if k < 0 => (nproc + k).max(1),
        Some(k) => k,
    };
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One element of `pm2 jlist` for a process, byte-compatible with pm2's
/// field names.
pub fn jlist_entry(p: &ProcInfo) -> serde_json::Value {
    jlist::jlist_entry(p)
}

/// `jlist_entry(p)` serialized, with `pm2_env` supplied pre-serialized (the
/// daemon caches it between changes).
pub fn jlist_entry_text(p: &ProcInfo, pm2_env_json: &str, out: &mut String) {
    jlist::jlist_entry_text(p, pm2_env_json, out)
}

/// The `pm2_env` object of a process (what `dump.pm2` stores per entry).
pub fn pm2_env(p: &ProcInfo) -> serde_json::Value {
    jlist::pm2_env(p)
}

/// Rebuilds an AppSpec from a saved `pm2_env` (Corral's or real pm2's
/// `dump.pm2`).
///
/// A dump holds one entry per instance, so `instances` is always `None`:
/// read the instance index with [`instance_from_pm2_env`]. The saved env is
/// the whole env (the CLI env of the original start included), so
/// `ctx.env` is not inherited; `ctx.env_name` is ignored.
pub fn app_from_pm2_env(v: &serde_json::Value, ctx: &Context) -> Result<AppSpec, ConfigError> {
    jlist::app_from_pm2_env(v, ctx)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_jlist;
