//! Pure renderers: process snapshots in, text out. Nothing here reads the
//! clock, the terminal or the daemon, so every layout is unit-tested against
//! the spec's captured pm2 output.

pub mod describe;
pub mod prettylist;
pub mod table;

use crate::output::{paint_if, Color};

/// pm2's `timeSince`: each unit is used only when its count exceeds 1
/// (hence `119s`, then `2m`).
pub fn time_since(now_ms: i64, then_ms: i64) -> String {
    let seconds = ((now_ms - then_ms) as f64 / 1000.0).floor().max(0.0) as i64;
    for (div, unit) in [(31_536_000, "Y"), (2_592_000, "M"), (86_400, "D"), (3600, "h"), (60, "m")] {
        let n = seconds / div;
        if n > 1 {
            return format!("{n}{unit}");
        }
    }
    format!("{seconds}s")
}

/// pm2's `bytesToSize(bytes, 1)`: 1024 base, one decimal.
pub fn bytes_to_size(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b < K {
        format!("{bytes}b")
    } else if b < K * K {
        format!("{:.1}kb", b / K)
    } else if b < K * K * K {
        format!("{:.1}mb", b / (K * K))
    } else if b < K * K * K * K {
        format!("{:.1}gb", b / (K * K * K))
    } else {
        format!("{:.1}tb", b / (K * K * K * K))
    }
}

/// A table cell: text plus an optional colour applied after padding is
/// computed on the plain text.
#[derive(Debug, Clone)]
pub struct Cell {
    pub text: String,
    pub color: Option<Color>,
}

impl Cell {
    pub fn plain(s: impl Into<String>) -> Cell {
        Cell { text: s.into(), color: None }
    }
    pub fn colored(s: impl Into<String>, c: Color) -> Cell {
        Cell { text: s.into(), color: Some(c) }
    }
}

/// Terminal columns of one char: 0 for combining marks and zero-width
/// characters, 2 for East Asian wide/fullwidth and emoji, else 1 (what
/// `string-width` gives cli-tableau for common text).
pub fn char_width(c: char) -> usize {
    let u = c as u32;
    match u {
        0x0300..=0x036F | 0x200B..=0x200F | 0xFE00..=0xFE0F | 0x20D0..=0x20FF => 0,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// cli-tableau's truncation: keep what fits in `w - 1` columns and add `…`.
pub fn truncate(s: &str, w: usize) -> String {
    if width(s) <= w {
        return s.to_string();
    }
    if w == 0 {
        return String::new();
    }
    let mut t = String::new();
    let mut used = 0;
    for c in s.chars() {
        let cw = char_width(c);
        if used + cw > w - 1 {
            break;
        }
        used += cw;
        t.push(c);
    }
    t.push('…');
    t
}

/// Box-drawn table with 1-space left/right padding; `widths` include the
/// padding (cli-tableau's `colWidths`).
pub struct BoxTable {
    pub widths: Vec<usize>,
    pub head: Option<Vec<Cell>>,
    pub rows: Vec<Vec<Cell>>,
    pub color: bool,
}

impl BoxTable {
    fn border(&self, l: &str, m: &str, r: &str) -> String {
        let inner: Vec<String> = self.widths.iter().map(|w| "─".repeat(*w)).collect();
        paint_if(self.color, Color::Gray, &format!("{l}{}{r}", inner.join(m)))
    }

    fn row(&self, cells: &[Cell], head: bool) -> String {
        let bar = paint_if(self.color, Color::Gray, "│");
        let mut s = bar.clone();
        for (i, w) in self.widths.iter().enumerate() {
            let cell = cells.get(i).cloned().unwrap_or_else(|| Cell::plain(""));
            let avail = w.saturating_sub(2);
            let text = truncate(&cell.text, avail);
            let fill = " ".repeat(avail.saturating_sub(width(&text)));
            let color = if head { Some(Color::BoldCyan) } else { cell.color };
            let shown = match color {
                Some(c) => paint_if(self.color, c, &text),
                None => text,
            };
            s.push(' ');
            s.push_str(&shown);
            s.push_str(&fill);
            if *w >= 2 {
                s.push(' ');
            }
            s.push_str(&bar);
        }
        s
    }

    pub fn render(&self) -> String {
        let mut lines = vec![self.border("┌", "┬", "┐")];
        if let Some(h) = &self.head {
            lines.push(self.row(h, true));
            if !self.rows.is_empty() {
                lines.push(self.border("├", "┼", "┤"));
            }
        }
        for r in &self.rows {
            lines.push(self.row(r, false));
        }
        lines.push(self.border("└", "┴", "┘"));
        lines.join("\n")
    }
}

/// Column widths that fit every cell (cli-tableau's automatic sizing).
pub fn auto_widths(rows: &[Vec<Cell>]) -> Vec<usize> {
    let n = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    (0..n)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| width(&c.text)).max().unwrap_or(0) + 2)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_since_units() {
        let now = 1_000_000_000;
        assert_eq!(time_since(now, now), "0s");
        assert_eq!(time_since(now, now - 119_999), "119s");
        assert_eq!(time_since(now, now - 120_000), "2m");
        assert_eq!(time_since(now, now - 3 * 3_600_000), "3h");
        assert_eq!(time_since(now, now - 47 * 3_600_000), "47h");
        assert_eq!(time_since(now, now - 3 * 86_400_000), "3D");
        assert_eq!(time_since(now, now + 5000), "0s");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes_to_size(0), "0b");
        assert_eq!(bytes_to_size(1023), "1023b");
        assert_eq!(bytes_to_size(21_495_808), "20.5mb");
        assert_eq!(bytes_to_size(57_221_120), "54.6mb");
        assert_eq!(bytes_to_size(2048), "2.0kb");
    }

    #[test]
    fn wide_characters_take_two_columns() {
        assert_eq!(width("api"), 3);
        assert_eq!(width("服务"), 4);
        assert_eq!(width("e\u{301}"), 1);
        assert_eq!(truncate("服务服务服务", 6), "服务…");
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate("waiting restart", 9), "waiting …");
        assert_eq!(truncate("online", 9), "online");
    }
}
