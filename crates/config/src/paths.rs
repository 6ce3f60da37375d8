//! Path helpers with Node's `path.resolve` semantics (lexical, no symlink
//! resolution), `$PATH` lookup and file sniffing.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// `~` and `~/x` become the home directory (from the CLI env, else the
/// process env).
pub fn expand_tilde(p: &str, home: Option<&str>) -> String {
    let home = home.map(str::to_owned).or_else(|| std::env::var("HOME").ok());
    match home {
        Some(h) if p == "~" => h,
        Some(h) if p.starts_with("~/") => format!("{}/{}", h.trim_end_matches('/'), &p[2..]),
        _ => p.to_owned(),
    }
}

/// `path.resolve(base, p)`: join then normalise `.` and `..` lexically.
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    normalize(&base.join(p))
}

pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                // `/..` stays `/`, as in Node.
                if !out.pop() {
                    out.push("/");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push("/");
    }
    out
}

pub fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// `which name` over a `$PATH` value.
pub fn which(name: &str, path_var: &str) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable_file(&p).then_some(p);
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable_file(p))
}

/// What the first bytes of a script say about how to run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Contains NUL bytes (ELF, Mach-O...): exec it directly.
    Binary,
    /// `#!` line naming an interpreter other than node.
    ForeignShebang,
    Text,
    Unreadable,
}

pub fn sniff(p: &Path) -> FileKind {
    let mut buf = [0u8; 512];
    let n = match std::fs::File::open(p).and_then(|mut f| f.read(&mut buf)) {
        Ok(n) => n,
        Err(_) => return FileKind::Unreadable,
    };
    let head = &buf[..n];
    if head.contains(&0) {
        return FileKind::Binary;
    }
    if head.starts_with(b"#!") {
        let line = head.split(|&b| b == b'\n').next().unwrap_or(head);
        let line = String::from_utf8_lossy(line);
        if !line.contains("node") {
            return FileKind::ForeignShebang;
        }
    }
    FileKind::Text
}

/// `version` of the nearest `package.json` at or above `dir`.
pub fn package_version(dir: &Path) -> Option<String> {
    let mut cur = Some(dir);
    while let Some(d) = cur {
        let candidate = d.join("package.json");
        if let Ok(text) = std::fs::read_to_string(&candidate) {
            // The nearest package.json decides even without a version, as
            // pm2 stops at the first one it finds.
            return serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(str::to_owned));
        }
        cur = d.parent();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_is_lexical() {
        assert_eq!(resolve(Path::new("/srv/cfg"), "../env.js"), PathBuf::from("/srv/env.js"));
        assert_eq!(resolve(Path::new("/srv"), "/abs/./x"), PathBuf::from("/abs/x"));
        assert_eq!(resolve(Path::new("/"), "../../a"), PathBuf::from("/a"));
    }

    #[test]
    fn tilde() {
        assert_eq!(expand_tilde("~/logs/a.log", Some("/home/u")), "/home/u/logs/a.log");
        assert_eq!(expand_tilde("~", Some("/home/u/")), "/home/u/");
        assert_eq!(expand_tilde("a~/b", Some("/home/u")), "a~/b");
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh", "/nonexistent:/bin:/usr/bin").is_some());
        assert!(which("definitely-not-a-command-xyz", "/bin:/usr/bin").is_none());
    }
}
