//! `pm2 deploy [file] <environment> [command]`: pm2's deployment over ssh
//! and git, driven by the ecosystem file's `deploy` section.
//!
//! pm2 hands the section to the `pm2-deploy` npm package, whose `deployForEnv`
//! validates one environment, prepends its `env` to `post-deploy` and runs
//! the package's `deploy` shell script (visionmedia/deploy: `setup`,
//! `update`, `revert [n]`, `curr`, `prev`, `list`, `exec <cmd>`, `ref <ref>`,
//! the hooks) once per host with the environment's JSON on its stdin.
//! Corral does `deployForEnv`'s part here and runs the same script, so
//! deployments behave as under pm2; the JSON goes to the script's stdin
//! directly rather than through `echo '<json>' |` in a shell, so a quote in a
//! setting cannot break (or inject into) the command line.
//!
//! The script is looked up in `node_modules/pm2-deploy` above the ecosystem
//! file and the working directory, then in `$PM2_HOME/deploy`, where it is
//! installed with npm on first use (pm2 ships it as a dependency).

use super::{Cli, Code};
use crate::output;
use anyhow::{Context as _, Result};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The pm2-deploy release pm2 6 depends on.
const PM2_DEPLOY: &str = "pm2-deploy@1.0.2";

/// The files pm2 looks for when no ecosystem file is named.
const DEFAULT_FILES: &[&str] = &[
    "ecosystem.config.js",
    "ecosystem.config.cjs",
    "ecosystem.config.mjs",
    "ecosystem.json",
    "ecosystem.yml",
    "ecosystem.yaml",
    "ecosystem.json5",
    "package.json",
];

const HELP: &str = "
-----> Helper: Deployment with PM2

  Generate a sample ecosystem.config.js with the command
  $ pm2 ecosystem
  Then edit the file depending on your needs

  Commands:
    setup                run remote setup commands
    update               update deploy to the latest release
    revert [n]           revert to [n]th last deployment or 1
    curr[ent]            output current release commit
    prev[ious]           output previous release commit
    exec|run <cmd>       execute the given <cmd>
    list                 list previous deploy commits
    [ref]                deploy to [ref], the \"ref\" setting, or latest tag

  Basic Examples:

    First initialize remote production host:
    $ pm2 deploy ecosystem.config.js production setup

    Then deploy new code:
    $ pm2 deploy ecosystem.config.js production

    If I want to revert to the previous commit:
    $ pm2 deploy ecosystem.config.js production revert 1

    Execute a command on remote server:
    $ pm2 deploy ecosystem.config.js production exec \"pm2 restart all\"

    PM2 will look by default to the ecosystem.config.js file so you dont need to give the file name:
    $ pm2 deploy production
    Else you have to tell PM2 the name of your ecosystem file
";

pub fn deploy(cli: &mut Cli) -> Result<Code> {
    let pos = cli.args.positionals.clone();
    if pos.first().is_some_and(|f| f == "help") {
        output::out(HELP);
        return Ok(0);
    }
    let (file, env) = match pos.first() {
        Some(f) if corral_config::is_ecosystem_file(f) => (f.clone(), pos.get(1).cloned()),
        first => match DEFAULT_FILES.iter().find(|n| cli.cwd.join(n).is_file()) {
            Some(f) => (f.to_string(), first.cloned()),
            None => {
                output::error(&format!(
                    "Not any default deployment file exists. Allowed default config file names are: {}",
                    DEFAULT_FILES.join(", ")
                ));
                return Ok(1);
            }
        },
    };
    let ctx = super::start::config_context(cli, &file);
    let doc = match corral_config::load_ecosystem_document(Path::new(&file), &ctx) {
        Ok(d) => d,
        Err(e) => {
            output::error(&e.to_string());
            return Ok(1);
        }
    };
    let Some(env) = env else {
        output::out(HELP);
        return Ok(0);
    };
    let Some(section) = doc.get("deploy").and_then(|d| d.get(&env)).filter(|s| !s.is_null()) else {
        output::error(&format!("{env} environment is not defined in {file} file"));
        return Ok(1);
    };
    let mut section = section.clone();
    if let Some(o) = section.as_object_mut() {
        if o.get("post-deploy").is_none_or(|v| v.is_null() || v == "") {
            o.insert("post-deploy".into(), Value::String(format!("pm2 startOrRestart {file} --env {env}")));
        }
    }
    let configs = match host_configs(&section, &cli.cwd) {
        Ok(c) => c,
        Err(e) => {
            output::error("Deploy failed");
            output::error(&e);
            return Ok(1);
        }
    };
    let script = match deploy_script(cli, Path::new(&file)) {
        Ok(s) => s,
        Err(e) => {
            output::error("Deploy failed");
            output::error(&format!("{e:#}"));
            return Ok(1);
        }
    };
    // The script's own arguments: what followed `deploy` (file and
    // environment included, which it skips), `--force` first when given.
    let mut args: Vec<String> = Vec::new();
    if cli.args.has("force") {
        args.push("--force".into());
    }
    args.extend(pos.iter().cloned());
    output::out(&format!("--> Deploying to {env} environment"));
    for (host, config) in configs {
        output::out(&format!("--> on host {host}"));
        if let Err(e) = run_script(&script, &config, &args, &cli.cwd) {
            output::error("Deploy failed");
            output::error(&e);
            return Ok(1);
        }
    }
    output::info("--> Success");
    Ok(0)
}

/// pm2-deploy's `deployForEnv` up to the spawn: `ssh_options` as `-o`
/// words, the schema check, `path` made absolute, one config per host with
/// the environment's `env` exported before `post-deploy`.
pub fn host_configs(section: &Value, cwd: &Path) -> std::result::Result<Vec<(String, Value)>, String> {
    let Some(o) = section.as_object() else {
        return Err(format!("Invalid type: {} (expected object)", type_name(section)));
    };
    let mut o: Map<String, Value> = o.clone();
    if let Some(opts) = o.get("ssh_options").cloned() {
        let list = match opts {
            Value::Array(a) => a,
            other => vec![other],
        };
        let words: Vec<String> = list.iter().map(|v| format!("-o {}", js_text(v))).collect();
        o.insert("ssh_options".into(), Value::String(words.join(" ")));
    }
    for key in ["host", "repo", "path", "ref"] {
        if !o.contains_key(key) {
            return Err(format!("Missing required property: {key}"));
        }
    }
    for (key, want) in
        [("user", "string"), ("repo", "string"), ("path", "string"), ("ref", "string"), ("fetch", "string")]
    {
        if let Some(v) = o.get(key) {
            if !v.is_string() {
                return Err(format!("Invalid type: {} (expected {want}) for {key}", type_name(v)));
            }
        }
    }
    if o.get("user").and_then(Value::as_str) == Some("") {
        return Err("String is too short (0 chars), minimum 1 for user".into());
    }
    let hosts = match o.get("host") {
        Some(Value::Array(a)) => a.clone(),
        Some(h @ Value::String(_)) => vec![h.clone()],
        Some(other) => {
            return Err(format!("Invalid type: {} (expected string/array) for host", type_name(other)))
        }
        None => Vec::new(),
    };
    if let Some(p) = o.get("path").and_then(Value::as_str) {
        let abs = crate::resolve::normalize(&cwd.join(p));
        o.insert("path".into(), Value::String(abs.display().to_string()));
    }
    let post = o.get("post-deploy").map(js_text).filter(|s| !s.is_empty());
    let exported = env_words(o.get("env"));
    let post = match (exported.is_empty(), post) {
        (true, p) => p,
        (false, None) => Some(format!("export {exported}")),
        (false, Some(p)) => Some(format!("export {exported} && {p}")),
    };
    match post {
        Some(p) => o.insert("post-deploy".into(), Value::String(p)),
        None => o.remove("post-deploy"),
    };
    Ok(hosts
        .into_iter()
        .map(|h| {
            let shown = h.get("host").map(js_text).unwrap_or_else(|| js_text(&h));
            let mut c = o.clone();
            c.insert("host".into(), h);
            (shown, Value::Object(c))
        })
        .collect())
}

/// `NAME=value` words of an `env` object, names upper-cased (pm2-deploy's
/// `envToString`).
fn env_words(env: Option<&Value>) -> String {
    let Some(Value::Object(env)) = env else { return String::new() };
    env.iter().map(|(k, v)| format!("{}={}", k.to_uppercase(), js_text(v))).collect::<Vec<_>>().join(" ")
}

/// A value as JavaScript's `String(v)` / `%s` prints it.
fn js_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// pm2-deploy's `deploy` script: in a `node_modules` above the ecosystem
/// file or the working directory, else in `$PM2_HOME/deploy` (installed
/// there with npm the first time).
fn deploy_script(cli: &Cli, file: &Path) -> Result<PathBuf> {
    let rel = Path::new("node_modules/pm2-deploy/deploy");
    let file_dir = cli.cwd.join(file).parent().map(Path::to_path_buf).unwrap_or_else(|| cli.cwd.clone());
    for start in [file_dir, cli.cwd.clone()] {
        for dir in start.ancestors() {
            if dir.join(rel).is_file() {
                return Ok(dir.join(rel));
            }
        }
    }
    let home = cli.home.join("deploy");
    if home.join(rel).is_file() {
        return Ok(home.join(rel));
    }
    output::info(&format!("Installing {PM2_DEPLOY} (pm2's deployment script) in {}", home.display()));
    std::fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;
    let st = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--no-save", "--prefix"])
        .arg(&home)
        .arg(PM2_DEPLOY)
        .stdout(Stdio::null())
        .status()
        .context("cannot run npm to install pm2-deploy")?;
    if !st.success() || !home.join(rel).is_file() {
        anyhow::bail!("npm could not install {PM2_DEPLOY} ({st}); install it next to your ecosystem file: npm install pm2-deploy");
    }
    Ok(home.join(rel))
}

/// Runs the script for one host: the config as one JSON line on its stdin.
fn run_script(script: &Path, config: &Value, args: &[String], cwd: &Path) -> std::result::Result<(), String> {
    let mut child = Command::new("bash")
        .arg(script)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
    let line = format!("{config}\n");
    if let Some(mut stdin) = child.stdin.take() {
        // The script reads one line; it may exit without reading at all.
        let _ = stdin.write_all(line.as_bytes());
    }
    let st = child.wait().map_err(|e| e.to_string())?;
    if st.success() {
        Ok(())
    } else {
        Err(format!(
            "Deploy failed with exit code: {}",
            st.code().map(|c| c.to_string()).unwrap_or_else(|| st.to_string())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deploy_for_env_shapes_each_host() {
        let s = json!({
            "user": "web", "host": ["a", "b"], "ref": "origin/main", "repo": "git@x:y.git", "path": "rel/dir",
            "ssh_options": ["StrictHostKeyChecking=no", "PasswordAuthentication=no"],
            "env": { "node_env": "production", "PORT": 3000 },
            "post-deploy": "npm install"
        });
        let c = host_configs(&s, Path::new("/srv")).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0, "a");
        let v = &c[1].1;
        assert_eq!(v["host"], "b");
        assert_eq!(v["path"], "/srv/rel/dir");
        assert_eq!(v["ssh_options"], "-o StrictHostKeyChecking=no -o PasswordAuthentication=no");
        assert_eq!(v["post-deploy"], "export NODE_ENV=production PORT=3000 && npm install");
    }

    #[test]
    fn deploy_for_env_validates_as_pm2_deploy() {
        let base = json!({ "host": "h", "ref": "r", "repo": "x", "path": "/p" });
        assert!(host_configs(&base, Path::new("/")).is_ok());
        for (k, want) in
            [("repo", "Missing required property: repo"), ("host", "Missing required property: host")]
        {
            let mut s = base.clone();
            s.as_object_mut().unwrap().remove(k);
            assert_eq!(host_configs(&s, Path::new("/")).unwrap_err(), want);
        }
        let mut s = base.clone();
        s["ref"] = json!(3);
        assert!(host_configs(&s, Path::new("/"))
            .unwrap_err()
            .contains("Invalid type: number (expected string)"));
        let mut s = base.clone();
        s["user"] = json!("");
        assert!(host_configs(&s, Path::new("/")).is_err());
        // Only an env: the hook is the export alone.
        let mut s = base.clone();
        s["env"] = json!({ "a": "1" });
        assert_eq!(host_configs(&s, Path::new("/")).unwrap()[0].1["post-deploy"], "export A=1");
        // An object host shows its `host`.
        let mut s = base;
        s["host"] = json!([{ "host": "10.0.0.1", "port": "22" }]);
        assert_eq!(host_configs(&s, Path::new("/")).unwrap()[0].0, "10.0.0.1");
    }
}
