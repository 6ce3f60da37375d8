//! pm2 modules: `install`, `uninstall`, `module:update`, and starting the
//! installed modules whenever the CLI starts a daemon.
//!
//! The layout is pm2's (lib/API/Modules/NPM.js): a module `<name>` is
//! installed with `npm install <name> --prefix $PM2_HOME/modules/<name>`, so
//! its code is in `modules/<name>/node_modules/<name>`, and it is recorded in
//! `module_conf.json` under `module-db-v2`. Its package.json `config` section
//! gives default settings, merged into `module_conf.json` under `<name>`
//! unless already set. It runs as a fork-mode process named after the
//! package, flagged `pmx_module: true`, with its settings in the env: every
//! key as its own variable and the whole section as JSON in the variable
//! named after the module (what pmx's / @pm2/io's `initModule` reads).
//!
//! Modules are not part of `dump.pm2`: like pm2, the CLI starts every
//! recorded module when it has just started a daemon.
//!
//! Unlike pm2, the download goes to a temporary folder that replaces the
//! installed one only once npm succeeded, so a failed install or update
//! leaves nothing behind and the previous version untouched.

use super::conf::{load, print_module, store};
use super::{Cli, Code};
use crate::output;
use anyhow::{Context as _, Result};
use corral_proto::{AppSpec, Op, Reply, Request};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `module_conf.json` key listing the installed npm modules (pm2's
/// `MODULE_CONF_PREFIX`).
pub const MODULE_DB: &str = "module-db-v2";

const PREFIX: &str = "[PM2][Module] ";

fn say(msg: &str) {
    output::out(&format!("{}{msg}", output::paint(output::Color::Cyan, PREFIX)));
}

fn fail(msg: &str) {
    output::err(&format!("{}{msg}", output::paint_err(output::Color::Red, "[PM2][Module][ERROR] ")));
}

/// `name@version` (or `@scope/name@range`) -> the package name.
pub fn canonical_name(spec: &str) -> &str {
    let cut =
        if let Some(rest) = spec.strip_prefix('@') { rest.find('@').map(|i| i + 1) } else { spec.find('@') };
    match cut {
        Some(i) => &spec[..i],
        None => spec,
    }
}

/// npm's package-name rules, which also keep the name a safe path below
/// `modules/`: `name` or `@scope/name`, lowercase letters, digits and
/// `-._~`, not starting with `.` or `_`.
pub fn valid_name(name: &str) -> bool {
    fn part(p: &str) -> bool {
        !p.is_empty()
            && p.len() <= 214
            && !p.starts_with('.')
            && !p.starts_with('_')
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b))
    }
    match name.strip_prefix('@') {
        Some(scoped) => matches!(scoped.split_once('/'), Some((s, n)) if part(s) && part(n)),
        None => part(name),
    }
}

fn modules_root(home: &Path) -> PathBuf {
    home.join("modules")
}

fn module_dir(home: &Path, name: &str) -> PathBuf {
    modules_root(home).join(name)
}

fn package_dir(home: &Path, name: &str) -> PathBuf {
    module_dir(home, name).join("node_modules").join(name)
}

/// The env pm2 gives a module (and any app named like a section of
/// `module_conf.json`): each setting as a variable, and the whole section
/// as JSON under the module's name.
pub fn module_env(name: &str, conf: &Map<String, Value>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match conf.get(name) {
        Some(Value::Object(section)) => {
            for (k, v) in section {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                env.insert(k.clone(), s);
            }
            env.insert(name.to_string(), Value::Object(section.clone()).to_string());
        }
        _ => {
            env.insert(name.to_string(), "{}".into());
        }
    }
    env
}

fn installed(conf: &Map<String, Value>) -> Vec<String> {
    match conf.get(MODULE_DB) {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// `pm2 install <module>[@version]` and `pm2 module:update <module>`.
pub fn install(cli: &mut Cli) -> Result<Code> {
    let Some(spec) = cli.args.positionals.first().cloned() else {
        output::err("\n  error: missing required argument `module|git:// url'\n");
        return Ok(1);
    };
    let name = canonical_name(&spec).to_string();
    if !valid_name(&name) {
        fail(&format!(
            "{spec} is not an npm package name: Corral installs modules from the npm registry (name or name@version)"
        ));
        return Ok(1);
    }
    let root = modules_root(&cli.home);
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let tmp = root.join(format!(".install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = download(&spec, &name, &tmp);
    let pkg = match result {
        Ok(pkg) => pkg,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            fail(&format!("{e:#}"));
            return Ok(1);
        }
    };
    say("Module downloaded");
    // An installed copy is replaced: its process goes first, then its files.
    if installed(&load(cli)).contains(&name) {
        say("Module already installed. Updating.");
    }
    delete_processes(cli, &name)?;
    let dest = module_dir(&cli.home, &name);
    let _ = std::fs::remove_dir_all(&dest);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    if let Err(e) = std::fs::rename(&tmp, &dest) {
        let _ = std::fs::remove_dir_all(&tmp);
        fail(&format!("cannot move the module into {}: {e}", dest.display()));
        return Ok(1);
    }
    let mut conf = load(cli);
    if let Some(Value::Object(defaults)) = pkg.get("config") {
        let section = conf.entry(name.clone()).or_insert_with(|| Value::Object(Map::new()));
        if !section.is_object() {
            *section = Value::Object(Map::new());
        }
        if let Value::Object(section) = section {
            for (k, v) in defaults {
                section.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    let db = conf.entry(MODULE_DB.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !db.is_object() {
        *db = Value::Object(Map::new());
    }
    if let Value::Object(db) = db {
        db.insert(name.clone(), Value::Object(Map::new()));
    }
    store(cli, &conf)?;
    if let Err(e) = start_module(cli, &name) {
        fail(&format!("{e:#}"));
        return Ok(1);
    }
    print_module(&name, &load(cli));
    say("Module successfully installed and launched");
    say("Checkout module options: `$ pm2 conf`");
    cli.print_list()?;
    Ok(0)
}

/// Runs npm into `tmp` and returns the module's package.json.
fn download(spec: &str, name: &str, tmp: &Path) -> Result<Map<String, Value>> {
    say(&format!("Calling [NPM] to install {spec} ..."));
    let status = Command::new("npm")
        .args(["install", spec, "--loglevel=error", "--no-audit", "--no-fund", "--prefix"])
        .arg(tmp)
        .current_dir(tmp)
        .stdin(std::process::Stdio::null())
        .status()
        .context("cannot run npm (is it installed and in PATH?)")?;
    if !status.success() {
        anyhow::bail!(
            "Installation of {spec} failed: npm install exited with {}; nothing was installed",
            status.code().map_or_else(|| "a signal".to_string(), |c| format!("status {c}"))
        );
    }
    let pj = tmp.join("node_modules").join(name).join("package.json");
    let text = std::fs::read_to_string(&pj)
        .with_context(|| format!("npm installed {spec} but {} cannot be read", pj.display()))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => anyhow::bail!("{} is not a JSON object; nothing was installed", pj.display()),
    }
}

/// The app objects pm2 would start for the module: its package.json `apps`
/// (or `pm2`) entries, else one app running `bin`, `main` or `index.js`.
fn module_apps(pkg: &Map<String, Value>) -> Vec<Map<String, Value>> {
    let declared = pkg.get("apps").or_else(|| pkg.get("pm2"));
    let mut apps: Vec<Map<String, Value>> = match declared {
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_object().cloned()).collect(),
        Some(Value::Object(o)) => vec![o.clone()],
        _ => Vec::new(),
    };
    if apps.is_empty() {
        let script = match pkg.get("bin") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) => o.values().find_map(|v| v.as_str().map(String::from)),
            _ => None,
        }
        .or_else(|| pkg.get("main").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| "index.js".into());
        let mut o = Map::new();
        o.insert("script".into(), Value::String(script));
        apps.push(o);
    }
    apps
}

/// Starts the installed module `name` unless it already runs.
fn start_module(cli: &mut Cli, name: &str) -> Result<()> {
    let procs = cli.list()?;
    if procs.iter().any(|p| p.app.name == name && corral_proto::is_module(&p.app)) {
        return Ok(());
    }
    let dir = package_dir(&cli.home, name);
    let pj = dir.join("package.json");
    let text = std::fs::read_to_string(&pj).with_context(|| format!("cannot read {}", pj.display()))?;
    let pkg = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => m,
        _ => anyhow::bail!("{} is not a JSON object", pj.display()),
    };
    let conf = load(cli);
    let env = module_env(name, &conf);
    let mut ctx = super::start::config_context(cli, &pj.to_string_lossy());
    ctx.cwd = dir.clone();
    for mut obj in module_apps(&pkg) {
        let script = obj.get("script").and_then(Value::as_str).unwrap_or("index.js").to_string();
        let script_path = dir.join(&script);
        obj.insert("script".into(), Value::String(script_path.to_string_lossy().into_owned()));
        // pm2 forces the package name and the module folder.
        obj.insert("name".into(), Value::String(name.to_string()));
        obj.insert("cwd".into(), Value::String(dir.to_string_lossy().into_owned()));
        obj.remove("watch");
        let (mut spec, _warnings): (AppSpec, _) = corral_config::app_from_value(&obj, &ctx)
            .map_err(|e| anyhow::anyhow!("module {name} cannot be started: {e}"))?;
        spec.env.extend(env.clone());
        spec.extra.insert("pmx_module".into(), Value::Bool(true));
        if legacy_io(&dir, &cli.home) {
            match ensure_module_io(&cli.home) {
                Ok(p) => spec.node_args.push(format!("--require={}", p.display())),
                Err(e) => output::warn(&format!("module {name}: its metrics will not show ({e})")),
            }
        }
        say(&format!("Starting NPM module {name}"));
        if let Reply::Error { message } = cli.client()?.request(&Request::Start { app: spec })? {
            anyhow::bail!("module {name} cannot be started: {message}");
        }
    }
    Ok(())
}

/// Initialises a module's own @pm2/io before the module runs.
///
/// pm2 loads its @pm2/io into every process it starts, and every copy of
/// @pm2/io hands out the first instance created in the process (a global
/// symbol), so a module's `require('@pm2/io')` gets pm2's, already
/// initialised. @pm2/io 2.x and 3.x, which older modules bundle
/// (pm2-server-monit 3.0.0 among them), send no metrics until something
/// calls `init()`: under pm2 that something is pm2. Corral injects nothing
/// into apps; for such a module it preloads this script, which initialises
/// the module's own copy (resolved from its script), as pm2's would be.
const MODULE_IO_JS: &str = "'use strict';
// Written by Corral for pm2 modules bundling @pm2/io 2.x/3.x: pm2 initialises
// @pm2/io in every process it starts, and those versions rely on it.
try {
  const path = require('path');
  const from = [process.argv[1] ? path.dirname(process.argv[1]) : process.cwd(), process.cwd()];
  const io = require(require.resolve('@pm2/io', { paths: from }));
  if (io && typeof io.init === 'function') io.init();
} catch (e) {
  // No @pm2/io after all: the module runs without metrics, as it would anyway.
}
";

/// The module at `dir` resolves an @pm2/io older than 4 (Node's lookup:
/// `node_modules` of `dir` and its parents, up to `home`).
fn legacy_io(dir: &Path, home: &Path) -> bool {
    for d in dir.ancestors() {
        let pj = d.join("node_modules/@pm2/io/package.json");
        if let Ok(text) = std::fs::read_to_string(&pj) {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let major = v["version"].as_str().and_then(|s| s.split('.').next()?.parse::<u32>().ok());
            return major.is_some_and(|m| m < 4);
        }
        if d == home {
            break;
        }
    }
    false
}

/// Writes the preload under `home` (when missing or different).
fn ensure_module_io(home: &Path) -> std::io::Result<PathBuf> {
    let p = home.join("module-io.js");
    if std::fs::read_to_string(&p).ok().as_deref() != Some(MODULE_IO_JS) {
        let tmp = home.join(format!(".module-io.js.{}", std::process::id()));
        std::fs::write(&tmp, MODULE_IO_JS)?;
        std::fs::rename(&tmp, &p)?;
    }
    Ok(p)
}

/// Deletes the module processes named `name` (apps of that name are left).
fn delete_processes(cli: &mut Cli, name: &str) -> Result<bool> {
    let procs = cli.list()?;
    let mut any = false;
    for p in procs.iter().filter(|p| p.app.name == name && corral_proto::is_module(&p.app)) {
        let req = Request::Op { op: Op::Delete, id: p.pm_id, update: None };
        if let Reply::Error { message } = cli.client()?.request(&req)? {
            output::error(&message);
        }
        any = true;
    }
    Ok(any)
}

/// `pm2 uninstall <module>`.
pub fn uninstall(cli: &mut Cli) -> Result<Code> {
    let Some(spec) = cli.args.positionals.first().cloned() else {
        output::err("\n  error: missing required argument `module'\n");
        return Ok(1);
    };
    let mut conf = load(cli);
    let names: Vec<String> =
        if spec == "all" { installed(&conf) } else { vec![canonical_name(&spec).to_string()] };
    for name in &names {
        let known = installed(&conf).contains(name);
        if !valid_name(name) || (!known && !module_dir(&cli.home, name).exists()) {
            fail("Unknown module");
            return Ok(1);
        }
        if let Some(Value::Object(db)) = conf.get_mut(MODULE_DB) {
            db.remove(name);
        }
        store(cli, &conf)?;
        if delete_processes(cli, name)? {
            output::info("In memory process deleted");
        }
        let dir = module_dir(&cli.home, name);
        output::out(&format!("Deleting {}", dir.display()));
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                fail(&format!("cannot delete {}: {e}", dir.display()));
                return Ok(1);
            }
        }
        // An emptied `@scope` folder goes too.
        if let Some(parent) = dir.parent().filter(|p| *p != modules_root(&cli.home)) {
            let _ = std::fs::remove_dir(parent);
        }
        conf = load(cli);
    }
    cli.print_list()?;
    Ok(0)
}

/// Starts every recorded module (the CLI has just started a daemon). A
/// module that cannot start is reported; the command goes on.
pub fn launch_all(cli: &mut Cli) {
    let names = installed(&load(cli));
    for name in names {
        if !valid_name(&name) || !package_dir(&cli.home, &name).join("package.json").exists() {
            continue;
        }
        if let Err(e) = start_module(cli, &name) {
            fail(&format!("{e:#}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(canonical_name("pm2-logrotate"), "pm2-logrotate");
        assert_eq!(canonical_name("pm2-logrotate@3.0.0"), "pm2-logrotate");
        assert_eq!(canonical_name("@scope/mod@^1"), "@scope/mod");
        assert_eq!(canonical_name("@scope/mod"), "@scope/mod");
        assert!(valid_name("pm2-logrotate"));
        assert!(valid_name("@scope/mod.js"));
        assert!(!valid_name("../etc"));
        assert!(!valid_name("@scope/../x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("Upper"));
        assert!(!valid_name(""));
        assert!(!valid_name(".hidden"));
    }

    #[test]
    fn env_and_apps() {
        let conf: Map<String, Value> =
            serde_json::from_str(r#"{"m":{"max_size":"1K","compress":false}}"#).unwrap_or_default();
        let env = module_env("m", &conf);
        assert_eq!(env.get("max_size").map(String::as_str), Some("1K"));
        assert_eq!(env.get("compress").map(String::as_str), Some("false"));
        let whole: Value = serde_json::from_str(env.get("m").map_or("", String::as_str)).unwrap_or_default();
        assert_eq!(whole, serde_json::json!({"compress": false, "max_size": "1K"}));
        let pkg: Map<String, Value> =
            serde_json::from_str(r#"{"main":"a.js","apps":{"name":"x","script":"app.js"}}"#)
                .unwrap_or_default();
        assert_eq!(module_apps(&pkg)[0].get("script"), Some(&Value::String("app.js".into())));
        let pkg: Map<String, Value> = serde_json::from_str(r#"{"main":"a.js"}"#).unwrap_or_default();
        assert_eq!(module_apps(&pkg)[0].get("script"), Some(&Value::String("a.js".into())));
    }
}
