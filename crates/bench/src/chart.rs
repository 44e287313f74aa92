//! `chatao-bench chart`: the figures people compare, drawn from the bench's own JSON lines
//! (`--json`) as one SVG: deliveries per server CPU-second against the room's size for each
//! target (Chatao and the IRC peers), and the latency distribution of each target at one room
//! size. Each point is the median of the runs that match (scenario `fanout`, flat out, the
//! label asked for).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use serde_json::Value;

use crate::stats::median;

/// One run read back from a JSON line.
#[derive(Debug, Clone)]
struct Run {
    target: String,
    label: String,
    metrics: BTreeMap<String, f64>,
}

/// The latency percentiles drawn, with their metric names.
const PERCENTILES: [(&str, &str); 5] = [
    ("p50", "latency_p50"),
    ("p90", "latency_p90"),
    ("p99", "latency_p99"),
    ("p99.9", "latency_p999"),
    ("max", "latency_max"),
];

/// Reads every `fanout` run of `files` (JSON lines written by `--json`); other scenarios and
/// lines that are not JSON are skipped.
fn read_runs(files: &[impl AsRef<Path>]) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for file in files {
        let file = file.as_ref();
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
            if v["scenario"] != "fanout" {
                continue;
            }
            let metrics = v["metrics"]
                .as_object()
                .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
                .unwrap_or_default();
            runs.push(Run {
                target: v["target"].as_str().unwrap_or("?").to_owned(),
                label: v["label"].as_str().unwrap_or("").to_owned(),
                metrics,
            });
        }
    }
    Ok(runs)
}

/// The median of `metric` over `runs`, by target and then by the room's size.
fn medians(runs: &[&Run], metric: &str) -> BTreeMap<String, BTreeMap<u64, f64>> {
    let mut by: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for r in runs {
        let (Some(clients), Some(v)) = (r.metrics.get("clients"), r.metrics.get(metric)) else {
            continue;
        };
        by.entry(r.target.clone()).or_default().entry(*clients as u64).or_default().push(*v);
    }
    by.into_iter()
        .map(|(t, m)| (t, m.into_iter().map(|(n, v)| (n, median(&v).unwrap_or(0.0))).collect()))
        .collect()
}

fn colour(i: usize) -> RGBColor {
    [RGBColor(200, 40, 40), RGBColor(40, 90, 200), RGBColor(30, 140, 60), RGBColor(150, 90, 20)]
        [i % 4]
}

/// Draws the chart of the flat-out `fanout` runs labelled `label` in `files` into `out` (SVG):
/// deliveries per server CPU-second against the number of clients, and the latency
/// percentiles at `latency_clients` clients.
pub fn draw(
    files: &[impl AsRef<Path>],
    label: &str,
    latency_clients: u64,
    out: &Path,
) -> Result<()> {
    let runs = read_runs(files)?;
    let chosen: Vec<&Run> = runs
        .iter()
        .filter(|r| r.label == label && r.metrics.get("offered_rate").copied() == Some(0.0))
        .collect();
    if chosen.is_empty() {
        bail!("no flat-out fanout runs labelled {label:?} in the files given");
    }
    let rates = medians(&chosen, "deliveries_per_cpu_s");
    let at: Vec<&Run> = chosen
        .iter()
        .copied()
        .filter(|r| r.metrics.get("clients").copied() == Some(latency_clients as f64))
        .collect();

    let root = SVGBackend::new(out, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(560);
    draw_rates(&left, &rates).map_err(|e| anyhow::anyhow!("{e}"))?;
    draw_latency(&right, &at, latency_clients).map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn draw_rates(area: &Area<'_>, rates: &BTreeMap<String, BTreeMap<u64, f64>>) -> DrawResult {
    let xs: Vec<u64> = rates.values().flat_map(|m| m.keys().copied()).collect();
    let (xmin, xmax) = (
        xs.iter().copied().min().unwrap_or(100) as f64 * 0.8,
        xs.iter().copied().max().unwrap_or(1000) as f64 * 1.25,
    );
    let ymax = rates.values().flat_map(|m| m.values().copied()).fold(0.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption("Deliveries per server CPU-second (one room, flat out)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((xmin..xmax).log_scale(), 0.0..ymax.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("clients in the room")
        .y_desc("deliveries / CPU-s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{:.1} M", y / 1e6))
        .draw()?;
    for (i, (target, points)) in rates.iter().enumerate() {
        let c = colour(i);
        let pts: Vec<(f64, f64)> = points.iter().map(|(n, v)| (*n as f64, *v)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(target.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw()?;
    Ok(())
}

fn draw_latency(area: &Area<'_>, runs: &[&Run], clients: u64) -> DrawResult {
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (_, key) in PERCENTILES {
        for (target, v) in medians(runs, key) {
            by.entry(target).or_default().push(v.values().next().copied().unwrap_or(0.0));
        }
    }
    let ymax = by.values().flatten().copied().fold(0.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("Latency at {clients} clients (flat out)"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0usize..PERCENTILES.len() - 1, 0.0..ymax.max(1.0))?;
    chart
        .configure_mesh()
        .x_labels(PERCENTILES.len())
        .x_label_formatter(&|i| PERCENTILES.get(*i).map_or(String::new(), |p| p.0.to_owned()))
        .x_desc("percentile")
        .y_desc("ms")
        .draw()?;
    for (i, (target, ys)) in by.iter().enumerate() {
        let c = colour(i);
        let pts: Vec<(usize, f64)> = ys.iter().copied().enumerate().collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(target.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(target: &str, clients: u32, rate: f64, p99: f64) -> String {
        format!(
            r#"{{"scenario":"fanout","target":"{target}","run":1,"label":"pinned","metrics":{{"clients":{clients},"offered_rate":0,"deliveries_per_cpu_s":{rate},"latency_p50":1,"latency_p90":2,"latency_p99":{p99},"latency_p999":4,"latency_max":5}},"units":{{}},"notes":[]}}"#
        )
    }

    #[test]
    fn the_chart_is_drawn_from_json_lines_with_every_target_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.jsonl");
        let lines = [
            line("chatao", 200, 2e6, 30.0),
            line("chatao", 1000, 1e6, 40.0),
            line("chatao", 1000, 3e6, 50.0),
            line("inspircd", 200, 9e5, 20.0),
            line("inspircd", 1000, 4e5, 60.0),
            "not json".to_owned(),
        ];
        std::fs::write(&file, lines.join("\n")).unwrap();
        let out = dir.path().join("c.svg");
        draw(&[&file], "pinned", 1000, &out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("chatao") && svg.contains("inspircd"));
        assert!(svg.contains("Latency at 1000 clients"));
        let runs = read_runs(&[&file]).unwrap();
        let chosen: Vec<&Run> = runs.iter().collect();
        assert_eq!(medians(&chosen, "deliveries_per_cpu_s")["chatao"][&1000], 2e6);
        assert!(draw(&[&file], "other", 1000, &out).is_err(), "no runs with that label");
    }
}
