//! Results: one [`Report`] per scenario run, printed as a table (medians over the repeated runs
//! of each target, with the Chatao / peer ratio) and recorded as JSON lines or CSV rows.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::stats::median;

/// Which way a metric improves, for the reader of the ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
    /// A parameter or a count that must match (loss, duplicates: zero).
    Neither,
}

/// One measured quantity.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub key: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub better: Better,
}

/// One run of one scenario against one target.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: &'static str,
    pub target: String,
    pub run: u32,
    pub metrics: Vec<Metric>,
    /// Free-form facts about the run (TLS suite, warnings).
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str, target: &str) -> Report {
        Report { scenario, target: target.to_owned(), run: 0, metrics: vec![], notes: vec![] }
    }

    pub fn push(&mut self, key: &'static str, value: f64, unit: &'static str, better: Better) {
        self.metrics.push(Metric { key, value, unit, better });
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.key == key).map(|m| m.value)
    }

    /// The report as one JSON object: `{scenario, target, run, label, metrics: {key: value},
    /// units: {key: unit}, notes}`.
    pub fn to_json(&self, label: &str) -> Value {
        let mut metrics = Map::new();
        let mut units = Map::new();
        for m in &self.metrics {
            metrics.insert(m.key.into(), json!(m.value));
            units.insert(m.key.into(), json!(m.unit));
        }
        json!({
            "scenario": self.scenario, "target": self.target, "run": self.run, "label": label,
            "metrics": metrics, "units": units, "notes": self.notes,
        })
    }
}

/// Appends one JSON line per report to `path`.
pub fn append_json(path: &Path, reports: &[Report], label: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    for r in reports {
        writeln!(f, "{}", r.to_json(label))?;
    }
    Ok(())
}

/// Appends one CSV row per metric to `path` (`scenario,target,run,label,metric,value,unit`),
/// with a header when the file is new.
pub fn append_csv(path: &Path, reports: &[Report], label: &str) -> Result<()> {
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    if new {
        writeln!(f, "scenario,target,run,label,metric,value,unit")?;
    }
    for r in reports {
        for m in &r.metrics {
            let label = label.replace([',', '"', '\n'], " ");
            writeln!(
                f,
                "{},{},{},{label},{},{},{}",
                r.scenario, r.target, r.run, m.key, m.value, m.unit
            )?;
        }
    }
    Ok(())
}

/// Formats a value for the table: integers without decimals, small numbers with three
/// significant digits.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 1000.0 || (v.fract() == 0.0 && a < 1e15) {
        format!("{:.0}", v)
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.3}")
    }
}

/// The table: one row per metric, one column per target (median of its runs), and the ratio of
/// the first target to each other one.
pub fn table(reports: &[Report]) -> String {
    let mut targets: Vec<&str> = vec![];
    for r in reports {
        if !targets.contains(&r.target.as_str()) {
            targets.push(&r.target);
        }
    }
    let mut keys: Vec<(&'static str, &'static str, Better)> = vec![];
    for r in reports {
        for m in &r.metrics {
            if !keys.iter().any(|k| k.0 == m.key) {
                keys.push((m.key, m.unit, m.better));
            }
        }
    }
    let runs = |t: &str| reports.iter().filter(|r| r.target == t).count();
    let med = |t: &str, key: &str| {
        let values: Vec<f64> =
            reports.iter().filter(|r| r.target == t).filter_map(|r| r.get(key)).collect();
        median(&values)
    };
    let mut header = vec!["metric".to_owned(), "unit".to_owned()];
    for t in &targets {
        header.push(format!("{t} (median of {})", runs(t)));
    }
    for t in targets.iter().skip(1) {
        header.push(format!("{}/{t}", targets[0]));
    }
    let mut rows = vec![header];
    for (key, unit, better) in &keys {
        let mut row = vec![(*key).to_owned(), (*unit).to_owned()];
        let values: Vec<Option<f64>> = targets.iter().map(|t| med(t, key)).collect();
        row.extend(values.iter().map(|v| v.map_or("-".into(), fmt_value)));
        for v in values.iter().skip(1) {
            let ratio = match (values[0], *v, better) {
                (Some(a), Some(b), Better::Higher | Better::Lower) if b != 0.0 => {
                    format!("{:.2}x", a / b)
                }
                _ => String::new(),
            };
            row.push(ratio);
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r.get(c).map_or(0, String::len)).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c < 2 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(target: &str, run: u32, v: f64) -> Report {
        let mut r = Report::new("fanout", target);
        r.run = run;
        r.push("deliveries_per_cpu_s", v, "1/s", Better::Higher);
        r.push("lost", 0.0, "msgs", Better::Neither);
        r
    }

    #[test]
    fn the_table_shows_medians_and_ratios() {
        let rs = [
            report("chatao", 1, 30.0),
            report("inspircd", 1, 10.0),
            report("chatao", 2, 90.0),
            report("inspircd", 2, 10.0),
            report("chatao", 3, 60.0),
            report("inspircd", 3, 12.0),
        ];
        let t = table(&rs);
        let line = t.lines().find(|l| l.starts_with("deliveries_per_cpu_s")).unwrap_or("");
        assert!(line.contains(" 60 ") && line.ends_with("6.00x"), "{t}");
        assert!(t.lines().next().unwrap_or("").contains("chatao (median of 3)"));
        let lost = t.lines().find(|l| l.starts_with("lost")).unwrap_or("");
        assert!(!lost.contains('x'), "{t}");
    }

    #[test]
    fn json_and_values() {
        let j = report("chatao", 1, 5.0).to_json("x");
        assert_eq!(j["metrics"]["deliveries_per_cpu_s"], 5.0);
        assert_eq!(j["units"]["lost"], "msgs");
        assert_eq!(fmt_value(1234.56), "1235");
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(0.01234), "0.012");
        assert_eq!(fmt_value(12.345), "12.35");
    }
}
