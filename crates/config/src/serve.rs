//! `pm2 serve`'s static file server: a small Node script embedded in the
//! binary and written to `PM2_HOME/serve.js` when an app needs it (`pm2
//! serve`, `script: "serve"`, or a `static` section of an ecosystem file).

use std::path::{Path, PathBuf};

const SERVE_JS: &str = include_str!("serve.js");

/// Writes the server script under `pm2_home` (only when missing or
/// different) and returns its path.
pub fn ensure_script(pm2_home: &Path) -> std::io::Result<PathBuf> {
    let p = pm2_home.join("serve.js");
    if std::fs::read_to_string(&p).ok().as_deref() != Some(SERVE_JS) {
        std::fs::create_dir_all(pm2_home)?;
        let tmp = pm2_home.join(format!(".serve.js.{}", std::process::id()));
        std::fs::write(&tmp, SERVE_JS)?;
        std::fs::rename(&tmp, &p)?;
    }
    Ok(p)
}

/// The app object pm2 makes of one entry of an ecosystem file's `static`
/// section (`{path, port, host, spa, basic_auth: {username, password},
/// name}`).
pub fn static_app(
    entry: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::{json, Value};
    let port = entry.get("port").cloned().unwrap_or(json!(8080));
    let port_s = match &port {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut env = serde_json::Map::new();
    env.insert("PM2_SERVE_PORT".into(), port);
    for (k, var) in
        [("path", "PM2_SERVE_PATH"), ("host", "PM2_SERVE_HOST"), ("homepage", "PM2_SERVE_HOMEPAGE")]
    {
        if let Some(v) = entry.get(k).filter(|v| !v.is_null()) {
            env.insert(var.into(), v.clone());
        }
    }
    if let Some(spa) = entry.get("spa") {
        env.insert("PM2_SERVE_SPA".into(), Value::String(crate::coerce::env_string(spa)));
    }
    if let Some(Value::Object(a)) = entry.get("basic_auth") {
        env.insert("PM2_SERVE_BASIC_AUTH".into(), json!("true"));
        if let Some(u) = a.get("username") {
            env.insert("PM2_SERVE_BASIC_AUTH_USERNAME".into(), u.clone());
        }
        if let Some(p) = a.get("password") {
            env.insert("PM2_SERVE_BASIC_AUTH_PASSWORD".into(), p.clone());
        }
    }
    let mut app = serde_json::Map::new();
    let name = entry.get("name").and_then(Value::as_str).map(String::from);
    app.insert("name".into(), json!(name.unwrap_or_else(|| format!("static-page-server-{port_s}"))));
    app.insert("script".into(), json!("serve"));
    app.insert("env".into(), Value::Object(env));
    app
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn static_section_entry_becomes_a_serve_app() {
        let Value::Object(e) = json!({"path": ".", "spa": true, "port": 8081,
                                      "basic_auth": {"username": "user", "password": "pass"}})
        else {
            unreachable!()
        };
        let app = static_app(&e);
        assert_eq!(app["name"], "static-page-server-8081");
        assert_eq!(app["script"], "serve");
        assert_eq!(
            app["env"],
            json!({"PM2_SERVE_PORT": 8081, "PM2_SERVE_PATH": ".", "PM2_SERVE_SPA": "true",
                   "PM2_SERVE_BASIC_AUTH": "true", "PM2_SERVE_BASIC_AUTH_USERNAME": "user",
                   "PM2_SERVE_BASIC_AUTH_PASSWORD": "pass"})
        );
        let d = tempfile::tempdir().unwrap();
        let p = ensure_script(d.path()).unwrap();
        assert_eq!(std::fs::read_to_string(p).unwrap(), SERVE_JS);
    }

    use serde_json::Value;
}
