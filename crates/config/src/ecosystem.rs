//! Reading ecosystem files: JS through the machine's `node`, JSON as a
//! JavaScript literal, YAML.

use crate::{app_from_value, json5, paths, ConfigError, Context, Loaded};
use serde_json::{Map, Value};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Marks the start of the JSON on node's stdout, so anything the config
/// itself prints (console.log while loading) is skipped.
const MARKER: &str = "\u{1}CORRAL-CONFIG-JSON\u{1}";

/// Loads with import(), which handles CommonJS (`module.exports`, seen as
/// `default`), ES modules (`export default`, `export const apps`) and
/// `"type": "module"` packages alike. Functions and undefined vanish in
/// JSON.stringify, which is what we want.
const LOADER: &str = r#"
const { pathToFileURL } = require('url');
const MARK = process.env.__CORRAL_MARK;
delete process.env.__CORRAL_MARK;
(async () => {
  const ns = await import(pathToFileURL(process.argv[1]).href);
  let cfg = ns;
  const d = ns.default;
  if (d !== undefined && d !== null && (typeof d === 'object' || typeof d === 'function')) {
    if (!('apps' in ns) || (typeof d === 'object' && 'apps' in d)) cfg = d;
  }
  cfg = await cfg;
  if (cfg && typeof cfg === 'object' && !Array.isArray(cfg) && Object.getPrototypeOf(cfg) === null) cfg = { ...cfg };
  if (cfg && typeof cfg === 'object' && 'default' in cfg && 'apps' in cfg) { cfg = { ...cfg }; delete cfg.default; }
  const out = JSON.stringify(cfg === undefined ? null : cfg);
  process.stdout.write(MARK + out, () => process.exit(0));
})().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n', () => process.exit(1));
});
"#;

/// pm2 evaluates `.json` files as `(<content>)`; only reached when the
/// file is not plain JSON5 (e.g. it uses `process.env`).
const JSON_EVAL: &str = r#"
const fs = require('fs'); const vm = require('vm');
const MARK = process.env.__CORRAL_MARK;
delete process.env.__CORRAL_MARK;
try {
  const v = vm.runInThisContext('(' + fs.readFileSync(process.argv[1], 'utf8') + ')', { timeout: 1000 });
  process.stdout.write(MARK + JSON.stringify(v === undefined ? null : v), () => process.exit(0));
} catch (e) {
  process.stderr.write(String((e && e.stack) || e) + '\n', () => process.exit(1));
}
"#;

const NODE_TIMEOUT: Duration = Duration::from_secs(20);

pub fn load(path: &Path, ctx: &Context) -> Result<Loaded, ConfigError> {
    let doc = load_raw(path, ctx)?;
    let ctx = Context { source: path.to_string_lossy().into_owned(), ..ctx.clone() };
    from_document(&doc, &ctx)
}

/// The whole document an ecosystem file evaluates to (apps, `deploy`...).
pub fn load_raw(path: &Path, ctx: &Context) -> Result<Value, ConfigError> {
    let abs = paths::resolve(&ctx.cwd, &path.to_string_lossy());
    let shown = path.to_string_lossy().into_owned();
    if !abs.is_file() {
        return Err(ConfigError::NotFound(shown));
    }
    let name = abs.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let malformed = |reason: String| ConfigError::Malformed { file: shown.clone(), reason };
    let doc = if name.ends_with(".yml") || name.ends_with(".yaml") {
        let text = std::fs::read_to_string(&abs).map_err(|e| malformed(e.to_string()))?;
        let y: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        yaml_to_json(y)
    } else if name.ends_with(".js") || name.ends_with(".cjs") || name.ends_with(".mjs") {
        run_node(LOADER, &abs, ctx).map_err(malformed)?
    } else if name.contains(".json") || name.contains(".yml") || name.contains(".yaml") {
        // The substring rule lets `app.json.bak` in; treat by content.
        let text = std::fs::read_to_string(&abs).map_err(|e| malformed(e.to_string()))?;
        match json5::parse(&text) {
            Ok(v) => v,
            Err(e) if name.contains(".y") => {
                let y: serde_yaml::Value =
                    serde_yaml::from_str(&text).map_err(|ye| malformed(format!("{e}; as YAML: {ye}")))?;
                yaml_to_json(y)
            }
            // Files using real JS expressions still work, as with pm2.
            Err(e) => run_node(JSON_EVAL, &abs, ctx).map_err(|_| malformed(e.to_string()))?,
        }
    } else {
        run_node(LOADER, &abs, ctx).map_err(malformed)?
    };
    Ok(doc)
}

/// Splits a parsed document into apps and resolves each one.
pub fn from_document(doc: &Value, ctx: &Context) -> Result<Loaded, ConfigError> {
    let malformed =
        |reason: &str| ConfigError::Malformed { file: ctx.source.clone(), reason: reason.to_owned() };
    let list = match doc {
        Value::Object(top) => match top.get("apps").or_else(|| top.get("pm2")) {
            Some(Value::Array(a)) => a.clone(),
            Some(o @ Value::Object(_)) => vec![o.clone()],
            Some(other) => {
                return Err(malformed(&format!(
                    "\"apps\" must be an array of app objects, got {}",
                    crate::coerce::describe(other)
                )))
            }
            None => vec![doc.clone()],
        },
        Value::Array(a) => a.clone(),
        Value::Null => {
            return Err(malformed("the file does not declare any app (empty or undefined export)"))
        }
        other => {
            return Err(malformed(&format!(
                "expected an object with \"apps\", got {}",
                crate::coerce::describe(other)
            )))
        }
    };
    let deploy_env = ctx.env_name.as_ref().and_then(|e| {
        doc.get("deploy")
            .and_then(|d| d.get(e))
            .and_then(|d| d.get("env"))
            .and_then(Value::as_object)
            .cloned()
    });
    // A `static` section adds one static file server app per entry.
    let mut list = list;
    if let Some(Value::Array(statics)) = doc.get("static") {
        for s in statics {
            if let Value::Object(o) = s {
                list.push(Value::Object(crate::serve::static_app(o)));
            }
        }
    }
    let module_conf = read_module_conf(ctx);
    let mut warnings = Vec::new();
    let mut apps = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let Value::Object(obj) = item else {
            apps.push(Err(ConfigError::Invalid {
                file: ctx.source.clone(),
                app: format!("#{i}"),
                key: "apps".into(),
                reason: format!("each app must be an object, got {}", crate::coerce::describe(item)),
            }));
            continue;
        };
        let merged;
        let obj = match (&deploy_env, obj.get("env")) {
            // deploy.<env>.env sits below the app's own env.
            (Some(denv), None | Some(Value::Object(_))) => {
                let mut env = denv.clone();
                if let Some(Value::Object(own)) = obj.get("env") {
                    for (k, v) in own {
                        env.insert(k.clone(), v.clone());
                    }
                }
                let mut o = obj.clone();
                o.insert("env".into(), Value::Object(env));
                merged = o;
                &merged
            }
            _ => obj,
        };
        // `script: "serve"` names the built-in static file server.
        let with_serve;
        let obj = if obj.get("script").and_then(Value::as_str) == Some("serve")
            && !ctx.cwd.join("serve").exists()
        {
            match crate::serve::ensure_script(&ctx.pm2_home) {
                Ok(p) => {
                    let mut o = obj.clone();
                    o.insert("script".into(), Value::String(p.to_string_lossy().into_owned()));
                    // It says `ready` once it listens.
                    o.entry("wait_ready").or_insert(Value::Bool(true));
                    with_serve = o;
                    &with_serve
                }
                Err(_) => obj,
            }
        } else {
            obj
        };
        match app_from_value(obj, ctx) {
            Ok((mut spec, w)) => {
                // pm2 quirk kept for compatibility: an app started from a
                // file gets a variable named after itself holding its
                // module_conf.json section.
                if !spec.env.contains_key(&spec.name) {
                    let conf = module_conf.as_ref().and_then(|m| m.get(&spec.name)).map(Value::to_string);
                    spec.env.insert(spec.name.clone(), conf.unwrap_or_else(|| "{}".into()));
                }
                warnings.extend(w);
                apps.push(Ok(spec));
            }
            Err(e) => apps.push(Err(e)),
        }
    }
    warnings.dedup();
    Ok(Loaded { apps, warnings })
}

fn read_module_conf(ctx: &Context) -> Option<Map<String, Value>> {
    let text = std::fs::read_to_string(ctx.pm2_home.join("module_conf.json")).ok()?;
    match serde_json::from_str(&text).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn yaml_to_json(y: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match y {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64().and_then(serde_json::Number::from_f64).map(Value::Number).unwrap_or(Value::Null)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    other => match yaml_to_json(other) {
                        Value::String(s) => s,
                        v => v.to_string(),
                    },
                };
                out.insert(key, yaml_to_json(v));
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value),
    }
}

/// Runs `script` with node on `file`, with the CLI's env and cwd (configs
/// read `process.env`), and returns the JSON it printed. Errors carry
/// node's own message.
fn run_node(script: &str, file: &Path, ctx: &Context) -> Result<Value, String> {
    let path_var = ctx.env.get("PATH").cloned().or_else(|| std::env::var("PATH").ok()).unwrap_or_default();
    let node = paths::which("node", &path_var)
        .or_else(|| paths::which("node", "/usr/local/bin:/usr/bin:/bin"))
        .ok_or_else(|| "reading a JavaScript config needs `node`, which was not found in PATH".to_owned())?;
    let mut cmd = Command::new(node);
    cmd.arg("-e").arg(script).arg("--").arg(file);
    if !ctx.env.is_empty() {
        cmd.env_clear().envs(&ctx.env);
    }
    cmd.env("__CORRAL_MARK", MARKER);
    if ctx.cwd.is_dir() {
        cmd.current_dir(&ctx.cwd);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run node: {e}"))?;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut b);
        }
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut b);
        }
        b
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > NODE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for node: {e}")),
        }
    };
    let out = out_t.join().unwrap_or_default();
    let err = err_t.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(format!("evaluating the config took longer than {} s", NODE_TIMEOUT.as_secs()));
    };
    let out = String::from_utf8_lossy(&out);
    let err = String::from_utf8_lossy(&err);
    if !status.success() {
        let msg = err.trim();
        return Err(if msg.is_empty() { format!("node exited with {status}") } else { msg.to_owned() });
    }
    let Some(at) = out.rfind(MARKER) else {
        return Err(format!(
            "node printed no config (exit {status}){}",
            if err.trim().is_empty() { String::new() } else { format!(": {}", err.trim()) }
        ));
    };
    serde_json::from_str(&out[at + MARKER.len()..]).map_err(|e| format!("config is not serialisable: {e}"))
}
