//! Prometheus text exposition format 0.0.4, written: `# HELP` and `# TYPE` once per family,
//! then its samples, every family contiguous and named once. Pure; what cannot be written
//! validly (a bad metric or label name, a family named twice) is left out, never emitted
//! broken, because one bad line makes Prometheus reject the whole scrape.

use std::collections::HashSet;
use std::fmt::Write as _;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::Untyped => "untyped",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            "untyped" => Kind::Untyped,
            _ => return None,
        })
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn valid_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved for Prometheus).
pub fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    !s.starts_with("__")
        && matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A sample value as the format spells it.
pub fn format_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

fn escape_help(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_label_value(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Writes families one after the other.
#[derive(Default)]
pub struct Writer {
    out: String,
    families: HashSet<String>,
    /// Sample names of the family being written (`name`, `name_bucket`, ...): a sample is
    /// written only under its own family.
    current: Option<(String, Kind)>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    /// True when a family of that name was written already.
    pub fn has_family(&self, name: &str) -> bool {
        self.families.contains(name)
    }

    /// Starts a family. False (and nothing written; its samples will be skipped) when the name
    /// is invalid or already used.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> bool {
        if !valid_metric_name(name) || self.families.contains(name) {
            self.current = None;
            return false;
        }
        self.families.insert(name.to_string());
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(help, &mut self.out);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
        self.current = Some((name.to_string(), kind));
        true
    }

    /// Whether `sample` belongs to the current family (`name` itself, or the
    /// `_bucket`/`_sum`/`_count` series of a histogram or summary).
    fn belongs(&self, sample: &str) -> bool {
        let Some((fam, kind)) = &self.current else { return false };
        if sample == fam {
            return true;
        }
        let Some(suffix) = sample.strip_prefix(fam.as_str()) else { return false };
        match kind {
            Kind::Histogram => matches!(suffix, "_bucket" | "_sum" | "_count"),
            Kind::Summary => matches!(suffix, "_sum" | "_count"),
            _ => false,
        }
    }

    /// Writes one sample of the current family. Labels with an invalid or repeated name are
    /// dropped; the sample is skipped when it is not of the current family.
    pub fn sample<K: AsRef<str>, V: AsRef<str>>(&mut self, name: &str, labels: &[(K, V)], value: f64) {
        if !self.belongs(name) {
            return;
        }
        self.out.push_str(name);
        let mut first = true;
        let mut seen: Vec<&str> = Vec::with_capacity(labels.len());
        for (k, v) in labels {
            let k = k.as_ref();
            if !valid_label_name(k) || seen.contains(&k) {
                continue;
            }
            seen.push(k);
            self.out.push(if first { '{' } else { ',' });
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label_value(v.as_ref(), &mut self.out);
            self.out.push('"');
        }
        if !first {
            self.out.push('}');
        }
        self.out.push(' ');
        format_value(value, &mut self.out);
        self.out.push('\n');
    }

    /// A whole histogram series (buckets, sum, count) of the current family.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &super::counters::HistogramSnapshot) {
        let mut le = String::new();
        for (bound, count) in &h.buckets {
            le.clear();
            format_value(*bound, &mut le);
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, *count as f64);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::counters::HistogramSnapshot;

    const NO: &[(&str, &str)] = &[];

    #[test]
    fn families_and_samples() {
        let mut w = Writer::new();
        assert!(w.family("corral_x_total", "Things.\nMore \\ text", Kind::Counter));
        w.sample("corral_x_total", &[("app", "a\"b\\c\nd"), ("pm_id", "1")], 3.0);
        w.sample("corral_x_total", NO, 0.5);
        assert_eq!(
            w.finish(),
            "# HELP corral_x_total Things.\\nMore \\\\ text\n# TYPE corral_x_total counter\n\
             corral_x_total{app=\"a\\\"b\\\\c\\nd\",pm_id=\"1\"} 3\ncorral_x_total 0.5\n"
        );
    }

    #[test]
    fn bad_names_and_duplicates_are_left_out() {
        let mut w = Writer::new();
        assert!(!w.family("1bad", "h", Kind::Gauge));
        w.sample("1bad", NO, 1.0);
        assert!(!w.family("", "h", Kind::Gauge));
        assert!(w.family("ok", "h", Kind::Gauge));
        w.sample("other", NO, 1.0);
        w.sample("ok", &[("__reserved", "x"), ("bad-label", "x"), ("l", "1"), ("l", "2")], 1.0);
        assert!(!w.family("ok", "again", Kind::Gauge));
        w.sample("ok", NO, 2.0);
        assert_eq!(w.finish(), "# HELP ok h\n# TYPE ok gauge\nok{l=\"1\"} 1\n");
    }

    #[test]
    fn special_values() {
        let mut s = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e-7, 12345678.0, -0.25] {
            format_value(v, &mut s);
            s.push(' ');
        }
        assert_eq!(s, "NaN +Inf -Inf 0.0000001 12345678 -0.25 ");
    }

    #[test]
    fn histogram_series() {
        let mut w = Writer::new();
        assert!(w.family("lat_seconds", "Latency.", Kind::Histogram));
        let h = HistogramSnapshot { buckets: vec![(0.5, 1), (f64::INFINITY, 2)], count: 2, sum: 1.25 };
        w.histogram("lat_seconds", &[("port", "80")], &h);
        assert_eq!(
            w.finish(),
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{port=\"80\",le=\"0.5\"} 1\nlat_seconds_bucket{port=\"80\",le=\"+Inf\"} 2\n\
             lat_seconds_sum{port=\"80\"} 1.25\nlat_seconds_count{port=\"80\"} 2\n"
        );
    }

    #[test]
    fn names() {
        assert!(valid_metric_name("a:b_c9"));
        assert!(!valid_metric_name("a-b"));
        assert!(!valid_metric_name("é"));
        assert!(valid_label_name("_x"));
        assert!(!valid_label_name("__x"));
        assert!(!valid_label_name("x:y"));
    }
}
