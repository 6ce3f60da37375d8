//! `set` / `get` / `unset` / `conf` / `config` / `multiset`: the
//! `module_conf.json` store (`{ "<module>": { "<key>": value } }`, 4-space
//! JSON) that pm2 modules such as pm2-logrotate read their settings from.

use super::{answered, Cli, Code};
use crate::output;
use anyhow::{Context as _, Result};
use corral_proto::{Op, Request};
use serde_json::{Map, Value};

fn path(cli: &Cli) -> std::path::PathBuf {
    cli.home.join("module_conf.json")
}

pub(crate) fn load(cli: &Cli) -> Map<String, Value> {
    load_at(&cli.home)
}

fn load_at(home: &std::path::Path) -> Map<String, Value> {
    std::fs::read_to_string(home.join("module_conf.json"))
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

/// pm2's `splitKey`: `module:key`, `module.key` (or deeper, `a.b.c`), or a
/// plain top-level `key`.
fn levels(k: &str) -> Vec<&str> {
    let sep = if k.contains('.') {
        '.'
    } else if k.contains(':') {
        ':'
    } else {
        return vec![k];
    };
    k.split(sep).filter(|l| !l.is_empty()).collect()
}

/// `module:key` or `module.key`.
fn split_key(k: &str) -> Option<(&str, &str)> {
    k.split_once(':').or_else(|| k.split_once('.')).filter(|(m, k)| !m.is_empty() && !k.is_empty())
}

/// Sets `value` at the path `levels` (objects created or replaced on the
/// way, as pm2 does).
fn set_path(conf: &mut Map<String, Value>, levels: &[&str], value: Value) {
    let Some((last, parents)) = levels.split_last() else { return };
    let mut cur = conf;
    for l in parents {
        let slot = cur.entry(l.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else { return };
        cur = next;
    }
    cur.insert(last.to_string(), value);
}

fn unset_path(conf: &mut Map<String, Value>, levels: &[&str]) {
    let Some((last, parents)) = levels.split_last() else { return };
    let mut cur = conf;
    for l in parents {
        match cur.get_mut(*l) {
            Some(Value::Object(next)) => cur = next,
            _ => return,
        }
    }
    cur.remove(*last);
}

fn parse_value(v: &str) -> Value {
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(v.to_string()),
    }
}

/// pm2's `Modularizer.getAdditionalConf(name)`: what a start or a restart
/// by name adds to the app's env: each setting of `module_conf.json[name]`
/// (as a string), and a variable named after the app holding them all as
/// JSON (`{}` when there are none; pm2 shows that one as an object).
pub fn module_env(home: &std::path::Path, name: &str) -> Vec<(String, String, Option<Value>)> {
    let conf = load_at(home);
    let mut out = Vec::new();
    match conf.get(name) {
        Some(Value::Object(m)) if !m.is_empty() => {
            for (k, v) in m {
                out.push((k.clone(), corral_config::env_string(v), None));
            }
            out.push((name.to_string(), Value::Object(m.clone()).to_string(), None));
        }
        _ => out.push((name.to_string(), "{}".into(), Some(Value::Object(Map::new())))),
    }
    out
}

/// Merges [`module_env`] into `spec`'s env; true if anything changed.
pub fn apply_module_env(spec: &mut corral_proto::AppSpec, home: &std::path::Path) -> bool {
    let mut changed = false;
    for (k, v, typed) in module_env(home, &spec.name.clone()) {
        if spec.env.get(&k) != Some(&v) {
            spec.env.insert(k.clone(), v);
            changed = true;
        }
        match typed {
            Some(t) => {
                spec.env_typed.insert(k, t);
            }
            None => {
                spec.env_typed.remove(&k);
            }
        }
    }
    changed
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
/// (pm2 passes them as an env var named after the app).
fn restart_module(cli: &mut Cli, module: &str) -> Result<()> {
    let procs = cli.list()?;
    let mut restarted = false;
    for p in procs.iter().filter(|p| p.app.name == module) {
        let mut spec = p.app.clone();
        apply_module_env(&mut spec, &cli.home);
        let req = Request::Op { op: Op::Restart, id: p.pm_id, update: Some(Box::new(spec)) };
        if answered(cli.client()?.request(&req)?).is_ok() {
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
        let lv = levels(k);
        if lv.is_empty() {
            output::error(&format!("Invalid key {k}"));
            return Ok(1);
        }
        set_path(&mut conf, &lv, parse_value(v));
        // `app.key`: the app named so is restarted to see it.
        if lv.len() > 1 && !modules.iter().any(|m: &String| m == lv[0]) {
            modules.push(lv[0].to_string());
        }
    }
    store(cli, &conf)?;
    for m in &modules {
        restart_module(cli, m)?;
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
    if k == "all" {
        conf.clear();
    } else {
        unset_path(&mut conf, &levels(&k));
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
        assert_eq!(levels("key1"), vec!["key1"]);
        assert_eq!(levels("a.b.c"), vec!["a", "b", "c"]);
        assert_eq!(levels("m:k"), vec!["m", "k"]);
        let mut c = Map::new();
        set_path(&mut c, &["key1"], Value::String("val1".into()));
        set_path(&mut c, &["echo", "config_var"], Value::Bool(false));
        set_path(&mut c, &["echo", "probes"], Value::Bool(true));
        assert_eq!(
            Value::Object(c.clone()),
            serde_json::json!({"key1": "val1", "echo": {"config_var": false, "probes": true}})
        );
        unset_path(&mut c, &["echo", "probes"]);
        unset_path(&mut c, &["key1"]);
        assert_eq!(Value::Object(c), serde_json::json!({"echo": {"config_var": false}}));
        assert_eq!(parse_value("true"), Value::Bool(true));
        assert_eq!(parse_value("10M"), Value::String("10M".into()));
    }
}
