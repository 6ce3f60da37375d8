//! Target resolution, done in the CLI as pm2 does: the daemon only
//! ever sees ids.

use corral_proto::ProcInfo;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Resolved ids (ascending list order).
    Ids(Vec<u32>),
    /// A numeric target taken as a pm_id: pm2 keeps it as the string the
    /// user typed, so its action line shows `(ids: [ '0' ])`.
    Id(u32),
    /// A numeric target that matched neither a name, a namespace nor an id:
    /// pm2 prints the action line with `[ '99' ]` and then the error.
    UnknownId(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// `[PM2][WARN] No process found` (stderr), exit 1.
    NoProcess,
    /// `[PM2][ERROR] Process or Namespace x not found`, exit 1.
    NotFound(String),
    /// `[PM2][ERROR] Invalid regex ...`.
    BadRegex(String),
}

impl ResolveError {
    pub fn print(&self) {
        match self {
            ResolveError::NoProcess => crate::output::warn_err("No process found"),
            ResolveError::NotFound(t) => crate::output::error(&format!("Process or Namespace {t} not found")),
            ResolveError::BadRegex(e) => crate::output::error(&format!("Invalid regular expression: {e}")),
        }
    }
}

pub fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

/// `/re/` as pm2 recognises it: starts and ends with `/`, is not a number.
pub fn is_regex(s: &str) -> bool {
    s.len() >= 2 && s.starts_with('/') && s.ends_with('/')
}

fn ids_of<'a>(it: impl Iterator<Item = &'a ProcInfo>) -> Vec<u32> {
    it.map(|p| p.pm_id).collect()
}

/// Resolves one target string against the list.
pub fn resolve(target: &str, procs: &[ProcInfo], cwd: &Path) -> Result<Target, ResolveError> {
    if target == "all" {
        // As in pm2, `all` leaves modules alone: they stop with
        // `pm2 uninstall` (or by name), not with the apps.
        let ids = ids_of(procs.iter().filter(|p| !corral_proto::is_module(&p.app)));
        if ids.is_empty() {
            return Err(ResolveError::NoProcess);
        }
        return Ok(Target::Ids(ids));
    }
    if is_regex(target) {
        // pm2 strips every `/` before compiling.
        let pat: String = target.chars().filter(|c| *c != '/').collect();
        let re = regex::Regex::new(&pat).map_err(|e| ResolveError::BadRegex(e.to_string()))?;
        let ids = ids_of(procs.iter().filter(|p| re.is_match(&p.app.name)));
        if ids.is_empty() {
            return Err(ResolveError::NoProcess);
        }
        return Ok(Target::Ids(ids));
    }
    let by_name = if is_numeric(target) {
        ids_of(procs.iter().filter(|p| p.app.name == target))
    } else {
        let abs = cwd.join(target);
        let abs = normalize(&abs);
        ids_of(procs.iter().filter(|p| p.app.name == target || Path::new(&p.app.script) == abs))
    };
    if !by_name.is_empty() {
        return Ok(Target::Ids(by_name));
    }
    let by_ns = ids_of(procs.iter().filter(|p| p.app.namespace == target));
    if !by_ns.is_empty() {
        return Ok(Target::Ids(by_ns));
    }
    if is_numeric(target) {
        return match target.parse::<u32>() {
            Ok(id) if procs.iter().any(|p| p.pm_id == id) => Ok(Target::Id(id)),
            _ => Ok(Target::UnknownId(target.to_string())),
        };
    }
    Err(ResolveError::NotFound(target.to_string()))
}

/// `path.resolve`: lexical `.`/`..` folding, no symlink resolution.
pub fn normalize(p: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl Target {
    pub fn ids(&self) -> Vec<u32> {
        match self {
            Target::Ids(v) => v.clone(),
            Target::Id(i) => vec![*i],
            Target::UnknownId(_) => Vec::new(),
        }
    }
}

/// `ids: [ 0, 1 ]` as pm2's `%s` of an array prints it.
pub fn ids_display(ids: &[u32]) -> String {
    crate::inspect::inspect(&serde_json::json!(ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: u32, name: &str, ns: &str, script: &str) -> ProcInfo {
        let mut p = ProcInfo { pm_id: id, ..Default::default() };
        p.app.name = name.into();
        p.app.namespace = ns.into();
        p.app.script = script.into();
        p
    }

    fn list() -> Vec<ProcInfo> {
        vec![
            p(0, "api", "default", "/srv/app.js"),
            p(1, "web", "front", "/srv/web.js"),
            p(2, "worker", "default", "/srv/w.js"),
            p(3, "web", "front", "/srv/web.js"),
            p(4, "7", "default", "/srv/seven.js"),
        ]
    }

    #[test]
    fn all_name_namespace() {
        let cwd = Path::new("/srv");
        assert_eq!(resolve("all", &list(), cwd), Ok(Target::Ids(vec![0, 1, 2, 3, 4])));
        assert_eq!(resolve("web", &list(), cwd), Ok(Target::Ids(vec![1, 3])));
        assert_eq!(resolve("front", &list(), cwd), Ok(Target::Ids(vec![1, 3])));
        assert_eq!(resolve("default", &list(), cwd), Ok(Target::Ids(vec![0, 2, 4])));
        assert_eq!(resolve("nope", &list(), cwd), Err(ResolveError::NotFound("nope".into())));
        assert_eq!(resolve("all", &[], cwd), Err(ResolveError::NoProcess));
    }

    #[test]
    fn numeric_prefers_name_then_id() {
        let cwd = Path::new("/");
        assert_eq!(resolve("7", &list(), cwd), Ok(Target::Ids(vec![4])));
        assert_eq!(resolve("2", &list(), cwd), Ok(Target::Id(2)));
        assert_eq!(resolve("99", &list(), cwd), Ok(Target::UnknownId("99".into())));
    }

    #[test]
    fn regex_and_script_path() {
        assert_eq!(resolve("/we/", &list(), Path::new("/")), Ok(Target::Ids(vec![1, 3])));
        assert_eq!(resolve("/^zz/", &list(), Path::new("/")), Err(ResolveError::NoProcess));
        assert_eq!(resolve("./app.js", &list(), Path::new("/srv")), Ok(Target::Ids(vec![0])));
        assert_eq!(resolve("../w.js", &list(), Path::new("/srv/x")), Ok(Target::Ids(vec![2])));
    }

    #[test]
    fn ids_are_shown_like_node() {
        assert_eq!(ids_display(&[0, 1]), "[ 0, 1 ]");
    }
}
