//! `set` / `get` / `unset` / `conf` / `config` / `multiset`: the
//! `module_conf.json` store (`{ "<module>": { "<key>": value } }`, 4-space
//! JSON) that pm2 modules such as pm2-logrotate read their settings from.

use super::{Cli, Code};
use crate::output;
use anyhow::{Context as _, Result};
use corral_proto::{Op, Reply, Request};
use serde_json::{Map, Value};

fn path(cli: &Cli) -> std::path::PathBuf {
    cli.home.join("module_conf.json")
}

pub(crate) fn load(cli: &Cli) -> Map<String, Value> {
    std::fs::read_to_string(path(cli))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

pub(crate) fn store(cli: &Cli, conf: &Map<String, Value>) -> Result<()> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(conf, &mut ser)?;
    let p = path(cli);
    let tmp = p.with_extension("json.tmp");
    corral_daemon::paths::write_private(&tmp, &buf)
        .and_then(|()| std::fs::rename(&tmp, &p))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("cannot write {}", p.display()))?;
    Ok(())
}

/// `module:key` or `module.key`.
fn split_key(k: &str) -> Option<(&str, &str)> {
    k.split_once(':').or_else(|| k.split_once('.')).filter(|(m, k)| !m.is_empty() && !k.is_empty())
}

fn parse_value(v: &str) -> Value {
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(v.to_string()),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn print_module(name: &str, conf: &Map<String, Value>) {
    output::out(&format!("=== {name} ==="));
    if let Some(Value::Object(m)) = conf.get(name) {
        for (k, v) in m {
            output::out(&format!("{k}: {}", show(v)));
        }
    }
}

/// Restarts the app named like the module so it sees its new settings
/// (pm2 passes each setting as a variable and the section as JSON in the
/// variable named after the app).
fn restart_module(cli: &mut Cli, module: &str, conf: &Map<String, Value>) -> Result<()> {
    let procs = cli.list()?;
    let env = super::modules::module_env(module, conf);
    let mut restarted = false;
    for p in procs.iter().filter(|p| p.app.name == module) {
        let mut spec = p.app.clone();
        spec.env.extend(env.clone());
        let req = Request::Op { op: Op::Restart, id: p.pm_id, update: Some(Box::new(spec)) };
        if let Reply::Error { message } = cli.client()?.request(&req)? {
            output::error(&message);
        } else {
            restarted = true;
        }
    }
    if restarted {
        output::info(&format!("Module {module} restarted"));
    }
    Ok(())
}

fn set_pairs(cli: &mut Cli, pairs: &[(String, String)]) -> Result<Code> {
    let mut conf = load(cli);
    let mut modules = Vec::new();
    for (k, v) in pairs {
        let Some((module, key)) = split_key(k) else {
            output::error(&format!("Invalid key {k}: use <module>:<key>"));
            return Ok(1);
        };
        let entry = conf.entry(module.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        if let Some(m) = entry.as_object_mut() {
            m.insert(key.to_string(), parse_value(v));
        }
        if !modules.iter().any(|m: &String| m == module) {
            modules.push(module.to_string());
        }
    }
    store(cli, &conf)?;
    for m in &modules {
        restart_module(cli, m, &conf)?;
    }
    if modules.iter().any(|m| m == "pm2-logrotate") {
        // The daemon rotates logs itself: it re-reads its settings now
        // rather than at its next check.
        if let Ok(Some(mut c)) = crate::client::Client::connect_existing(&cli.home) {
            let _ = c.request(&Request::ReloadLogs);
        }
    }
    output::info("Setting changed");
    for m in &modules {
        print_module(m, &conf);
    }
    Ok(0)
}

pub fn set(cli: &mut Cli) -> Result<Code> {
    match cli.args.positionals.as_slice() {
        [k, v, ..] => {
            let pair = [(k.clone(), v.clone())];
            set_pairs(cli, &pair)
        }
        _ => {
            output::err("\n  error: missing required argument `key'\n");
            Ok(1)
        }
    }
}

pub fn multiset(cli: &mut Cli) -> Result<Code> {
    let words: Vec<String> =
        cli.args.positionals.iter().flat_map(|s| s.split_whitespace().map(String::from)).collect();
    if words.is_empty() || !words.len().is_multiple_of(2) {
        output::error("multiset expects \"<key> <value> [<key> <value> ...]\"");
        return Ok(1);
    }
    let pairs: Vec<(String, String)> = words.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
    set_pairs(cli, &pairs)
}

pub fn get(cli: &mut Cli) -> Result<Code> {
    let conf = load(cli);
    match cli.args.positionals.first() {
        None => {
            for (module, keys) in &conf {
                if let Value::Object(m) = keys {
                    for (k, v) in m {
                        output::out(&format!("$ pm2 set {module}:{k} {}", show(v)));
                    }
                }
            }
            Ok(0)
        }
        Some(k) => {
            let v = match split_key(k) {
                Some((m, key)) => conf.get(m).and_then(|o| o.get(key)),
                None => conf.get(k.as_str()),
            };
            match v {
                Some(Value::Object(m)) => {
                    for (k, v) in m {
                        output::out(&format!("{k}: {}", show(v)));
                    }
                }
                Some(v) => output::out(&show(v)),
                None => output::out("undefined"),
            }
            Ok(0)
        }
    }
}

pub fn unset(cli: &mut Cli) -> Result<Code> {
    let Some(k) = cli.args.positionals.first().cloned() else {
        output::err("\n  error: missing required argument `key'\n");
        return Ok(1);
    };
    let mut conf = load(cli);
    match split_key(&k) {
        Some((m, key)) => {
            if let Some(Value::Object(o)) = conf.get_mut(m) {
                o.remove(key);
            }
        }
        None => {
            conf.remove(&k);
        }
    }
    store(cli, &conf)?;
    output::info("Setting changed");
    Ok(0)
}

/// `conf [key] [value]` / `config <key> [value]`: get or set.
pub fn conf(cli: &mut Cli) -> Result<Code> {
    if cli.args.positionals.len() >= 2 {
        set(cli)
    } else {
        get(cli)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert_eq!(split_key("pm2-logrotate:max_size"), Some(("pm2-logrotate", "max_size")));
        assert_eq!(split_key("mod.key"), Some(("mod", "key")));
        assert_eq!(split_key("nokey"), None);
        assert_eq!(parse_value("true"), Value::Bool(true));
        assert_eq!(parse_value("10M"), Value::String("10M".into()));
    }
}
