//! No import cycle among the daemon's modules: each file of `src/` is a
//! node, each `use`/path that names another module is an edge (to the
//! longest module prefix the path names), and the graph must be acyclic.
//! Test code and comments do not count. Run alone with
//! `cargo test -p corral-daemon --test module_cycles`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src");
    let mut segs: Module =
        rel.iter().map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if matches!(segs.last().map(String::as_str), Some("mod" | "lib")) {
        segs.pop();
    }
    segs
}

/// The file's code without comments and without its `#[cfg(test)]` tail.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parses a path tree at `s` (after `crate::`/`super::`/a module name and
/// its `::`): `a::b`, `{a, b::c}`, nested. Returns the paths it names.
fn tree(s: &str) -> Vec<Module> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let inner = &rest[..end];
        let mut out = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(tree(&inner[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.extend(tree(&inner[start..]));
        return out;
    }
    let ident: String = s.chars().take_while(|&c| is_ident(c)).collect();
    if ident.is_empty() || ident == "self" {
        return vec![vec![]];
    }
    let rest = &s[ident.len()..];
    match rest.strip_prefix("::") {
        Some(r) => tree(r)
            .into_iter()
            .map(|mut p| {
                p.insert(0, ident.clone());
                p
            })
            .collect(),
        None => vec![vec![ident]],
    }
}

/// Every module path the code names: `crate::…`, `super::…`, and paths
/// starting with a child module's name.
fn referenced(m: &Module, code: &str, children: &BTreeSet<String>) -> Vec<Module> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let text: String = bytes.iter().collect();
    let mut i = 0;
    while i < bytes.len() {
        let prev_ok = i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == ':');
        if prev_ok && is_ident(bytes[i]) {
            let ident: String = bytes[i..].iter().take_while(|&&c| is_ident(c)).collect();
            let after = i + ident.len();
            let rest: String = bytes[after..bytes.len().min(after + 2)].iter().collect();
            if rest == "::" {
                let tail: String = text.chars().skip(after + 2).collect::<String>();
                let base: Option<Module> = match ident.as_str() {
                    "crate" => Some(vec![]),
                    "super" => Some(m[..m.len().saturating_sub(1)].to_vec()),
                    "self" => Some(m.clone()),
                    c if children.contains(c) => Some([m.clone(), vec![c.to_string()]].concat()),
                    _ => None,
                };
                if let Some(base) = base {
                    for p in tree(&tail) {
                        out.push([base.clone(), p].concat());
                    }
                }
            }
            i = after;
        } else {
            i += 1;
        }
    }
    out
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mods: BTreeMap<Module, PathBuf> = all
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        // Test-only modules may use anything.
        .filter(|(m, _)| !m.last().is_some_and(|n| n.starts_with("tests")))
        .collect();
    let mut g = BTreeMap::new();
    for (m, f) in &mods {
        let children: BTreeSet<String> = mods
            .keys()
            .filter(|c| c.len() == m.len() + 1 && c.starts_with(m))
            .map(|c| c[m.len()].clone())
            .collect();
        let text = std::fs::read_to_string(f).expect("read");
        let mut edges = BTreeSet::new();
        for p in referenced(m, &code(&text), &children) {
            // The longest prefix of the path that is a module.
            let target = (0..=p.len()).rev().map(|n| p[..n].to_vec()).find(|q| mods.contains_key(q));
            if let Some(t) = target.filter(|t| t != m) {
                edges.insert(t);
            }
        }
        g.insert(m.clone(), edges);
    }
    g
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn find_cycle(g: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    // 0 unseen, 1 on the stack, 2 done.
    fn dfs(
        n: &Module,
        g: &BTreeMap<Module, BTreeSet<Module>>,
        color: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        color.insert(n.clone(), 1);
        stack.push(n.clone());
        for t in g.get(n).into_iter().flatten() {
            match color.get(t).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == t).unwrap_or(0);
                    let mut c = stack[at..].to_vec();
                    c.push(t.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = dfs(t, g, color, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        color.insert(n.clone(), 2);
        None
    }
    let mut color = BTreeMap::new();
    for n in g.keys() {
        if color.get(n).copied().unwrap_or(0) == 0 {
            if let Some(c) = dfs(n, g, &mut color, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_daemons_modules_import_no_cycle() {
    let g = graph();
    if std::env::var_os("SHOW_MODULE_GRAPH").is_some() {
        for (m, e) in &g {
            eprintln!("{} -> {}", name(m), e.iter().map(name).collect::<Vec<_>>().join(", "));
        }
    }
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle: {}", c.iter().map(name).collect::<Vec<_>>().join(" -> "));
    }
}

#[test]
fn the_checker_sees_use_trees_and_relative_paths() {
    let m: Module = vec!["a".into()];
    let children: BTreeSet<String> = ["kid".to_string()].into();
    let refs =
        referenced(&m, "use crate::{x, y::{z, w}};\nlet v = super::q::f(); kid::g(); other::h();", &children);
    let names: Vec<String> = refs.iter().map(name).collect();
    for want in ["x", "y::z", "y::w", "q::f", "a::kid::g"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("other")));
    let mut g = BTreeMap::new();
    g.insert(vec!["a".to_string()], [vec!["b".to_string()]].into());
    g.insert(vec!["b".to_string()], [vec!["a".to_string()]].into());
    assert!(find_cycle(&g).is_some());
    g.insert(vec!["b".to_string()], BTreeSet::new());
    assert!(find_cycle(&g).is_none());
}
