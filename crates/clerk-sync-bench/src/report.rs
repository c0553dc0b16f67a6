//! The one table `make bench` prints (figure | value | ceiling | ratio | target | pass/fail) and
//! its JSON twin under `target/bench/` (`results.json`, plus a timestamped copy to compare runs;
//! the soak writes `soak.json` the same way).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

/// What a figure must reach.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// `value / ceiling` at least this.
    RatioAtLeast(f64),
}

impl Target {
    /// The threshold as the table's target column shows it, in the figure's `unit`.
    pub fn describe(&self, unit: &str) -> String {
        match *self {
            Target::AtLeast(t) => format!(">= {}", number(t, unit)),
            Target::AtMost(t) => format!("<= {}", number(t, unit)),
            Target::RatioAtLeast(t) => format!(">= {t:.2}x ceiling"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    pub ceiling: Option<f64>,
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    /// Where the target was asked for (`phases::targets`).
    pub source: Option<&'static str>,
    /// `None` when there is no target, or a ratio target without a ceiling in this run.
    pub pass: Option<bool>,
    pub note: String,
}

impl Row {
    pub fn new(figure: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            figure: figure.into(),
            value,
            unit,
            ceiling: None,
            ratio: None,
            target: None,
            source: None,
            pass: None,
            note: String::new(),
        }
    }

    pub fn ceiling(mut self, ceiling: Option<f64>) -> Self {
        self.ceiling = ceiling;
        self.ratio = ceiling.filter(|c| *c > 0.0).map(|c| self.value / c);
        self.judge()
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self.judge()
    }

    /// Judges the row against one of the bench's targets (`phases::targets::TARGETS`).
    pub fn goal(mut self, goal: &crate::phases::targets::Goal) -> Self {
        self.source = Some(goal.source);
        self.target(goal.target)
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// A figure that must also be free of errors: fails whatever its value if `errors > 0`.
    pub fn require_no_errors(mut self, errors: u64) -> Self {
        if errors > 0 {
            self.pass = Some(false);
            self.note = format!("{errors} errors; {}", self.note);
        }
        self
    }

    fn judge(mut self) -> Self {
        self.pass = match self.target {
            Some(Target::AtLeast(t)) => Some(self.value >= t),
            Some(Target::AtMost(t)) => Some(self.value <= t),
            Some(Target::RatioAtLeast(t)) => self.ratio.map(|r| r >= t),
            None => None,
        };
        self
    }
}

fn number(v: f64, unit: &str) -> String {
    let n = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if unit.is_empty() { n } else { format!("{n} {unit}") }
}

fn target_text(row: &Row) -> String {
    row.target.map(|t| t.describe(row.unit)).unwrap_or_default()
}

/// The table as text, one row per figure; notes follow it, numbered.
pub fn table(rows: &[Row]) -> String {
    let header = ["figure", "value", "ceiling", "ratio", "target", "pass/fail"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.figure.clone(),
                number(r.value, r.unit),
                r.ceiling.map(|c| number(c, r.unit)).unwrap_or_default(),
                r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default(),
                target_text(r),
                match r.pass {
                    Some(true) => "PASS".to_owned(),
                    Some(false) => "FAIL".to_owned(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let parts: Vec<String> = cols
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| if i == 0 { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        format!("| {} |\n", parts.join(" | "))
    };
    let mut out = line(&header.map(str::to_owned));
    out.push_str(&format!("|{}|\n", widths.map(|w| "-".repeat(w + 2)).join("|")));
    for row in &cells {
        out.push_str(&line(row));
    }
    let notes: Vec<String> =
        rows.iter().filter(|r| !r.note.is_empty()).map(|r| format!("  - {}: {}", r.figure, r.note)).collect();
    if !notes.is_empty() {
        out.push_str("notes:\n");
        out.push_str(&notes.join("\n"));
        out.push('\n');
    }
    out
}

/// Writes `results.json` and `results-<UTC timestamp>.json` into `dir`; returns the first path.
pub fn write_json(dir: &Path, document: &Value) -> anyhow::Result<PathBuf> {
    write_named_json(dir, "results", document)
}

/// Writes `<name>.json` and `<name>-<UTC timestamp>.json` into `dir`; returns the first path.
pub fn write_named_json(dir: &Path, name: &str, document: &Value) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_string_pretty(document)?;
    let latest = dir.join(format!("{name}.json"));
    std::fs::write(&latest, &text)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    std::fs::write(dir.join(format!("{name}-{stamp}.json")), &text)?;
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_judged_against_the_ceiling_and_errors_fail_a_row() {
        let row = Row::new("gateway c64", 900.0, "/s").ceiling(Some(1000.0)).target(Target::RatioAtLeast(0.8));
        assert_eq!(row.pass, Some(true));
        let row = Row::new("gateway c64", 700.0, "/s").target(Target::RatioAtLeast(0.8));
        assert_eq!(row.pass, None, "no ceiling in this run: no verdict");
        let row = Row::new("p99", 5.0, "ms").target(Target::AtMost(20.0)).require_no_errors(3);
        assert_eq!(row.pass, Some(false));
        let judged =
            Row::new("worker x1 events/s", 9_000.0, "events/s").goal(&crate::phases::targets::WORKER_EVENTS_PER_S);
        assert_eq!((judged.pass, judged.source), (Some(false), Some("original brief")));
        let text = table(&[row]);
        assert!(text.contains("FAIL") && text.contains("<= 20.0 ms") && text.contains("3 errors"));
    }
}
