//! `pm2 jlist` and `pm2 prettylist`: the same entries, as compact JSON or
//! as Node's `util.inspect` prints them.

use crate::inspect::inspect;
use corral_proto::ProcInfo;

fn entries(procs: &[ProcInfo]) -> serde_json::Value {
    let mut sorted: Vec<&ProcInfo> = procs.iter().collect();
    sorted.sort_by_key(|p| p.pm_id);
    serde_json::Value::Array(sorted.into_iter().map(corral_config::jlist_entry).collect())
}

/// Compact JSON array, ascending pm_id, no trailing newline.
pub fn jlist(procs: &[ProcInfo]) -> String {
    serde_json::to_string(&entries(procs)).unwrap_or_else(|_| "[]".into())
}

/// `util.inspect(list, false, null, false)`.
pub fn prettylist(procs: &[ProcInfo]) -> String {
    inspect(&entries(procs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jlist_is_ascending_compact_without_newline() {
        let mk = |id| ProcInfo { pm_id: id, ..Default::default() };
        let s = jlist(&[mk(3), mk(1)]);
        assert!(s.starts_with('[') && s.ends_with(']'));
        assert!(!s.contains('\n') && !s.contains(": "));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v[0]["pm_id"], 1);
        assert_eq!(v[1]["pm_id"], 3);
        assert_eq!(jlist(&[]), "[]");
    }

    #[test]
    fn prettylist_uses_js_notation() {
        let mut p = ProcInfo { pm_id: 0, pid: 12, ..Default::default() };
        p.app.name = "api".into();
        let s = prettylist(&[p]);
        assert!(s.contains("name: 'api'"), "{s}");
        assert!(s.contains("pm_id: 0"), "{s}");
        assert!(s.starts_with('['));
    }
}
