//! The bench's figures: each named, with its unit and the stage it measures, printed as a
//! table beside the ceilings measured in the same run, and written as JSON and a short
//! markdown report under the results folder.

use std::{fmt::Write as _, path::Path};

use serde_json::json;

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Which stage measured it (e.g. `end to end`, `ceiling`).
    pub stage: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// What it means or how it was measured.
    pub note: String,
}

/// Everything one run measured, with the machine it ran on.
#[derive(Debug, Default)]
pub struct Report {
    pub command: String,
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn add(
        &mut self,
        stage: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        note: impl Into<String>,
    ) {
        let figure = Figure {
            stage,
            name: name.into(),
            value,
            unit,
            note: note.into(),
        };
        println!(
            "  {:<48} {:>12} {}",
            figure.name,
            format_value(figure.value),
            figure.unit
        );
        self.figures.push(figure);
    }

    /// One figure per quantile of sorted `values`: `<name> <label>` (e.g. `… p99`).
    pub fn add_quantiles(
        &mut self,
        stage: &'static str,
        name: &str,
        values: &[f64],
        quantiles: &[(&str, f64)],
        unit: &'static str,
        note: &str,
    ) {
        for (label, q) in quantiles {
            self.add(stage, format!("{name} {label}"), quantile(values, *q), unit, note);
        }
    }

    /// The figure named `name`, if measured.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|figure| figure.name == name)
            .map(|figure| figure.value)
    }

    /// The whole table, stage by stage.
    pub fn table(&self) -> String {
        let mut table = String::from("| stage | figure | value | unit | note |\n|---|---|---:|---|---|\n");
        for figure in &self.figures {
            let _ = writeln!(
                table,
                "| {} | {} | {} | {} | {} |",
                figure.stage,
                figure.name,
                format_value(figure.value),
                figure.unit,
                figure.note
            );
        }
        table
    }

    /// Writes `bench.json` and `bench.md` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let cores = cores();
        let figures: Vec<serde_json::Value> = self
            .figures
            .iter()
            .map(|figure| {
                json!({
                    "stage": figure.stage,
                    "name": figure.name,
                    "value": figure.value,
                    "unit": figure.unit,
                    "note": figure.note,
                })
            })
            .collect();
        let document = json!({
            "command": self.command,
            "at": chrono::Utc::now().to_rfc3339(),
            "cores": cores,
            "figures": figures,
        });
        std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&document)?)?;
        let markdown = format!(
            "# mesh bench\n\n`{}` on {} cores, {}.\n\n{}",
            self.command,
            cores,
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
            self.table()
        );
        std::fs::write(dir.join("bench.md"), markdown)?;
        Ok(())
    }
}

/// The cores this machine offers.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn format_value(value: f64) -> String {
    if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// The value at quantile `q` (0..=1) of sorted `values` (0 when empty).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_sorted_values() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 51.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn the_report_is_written_as_json_and_markdown() {
        let mut report = Report {
            command: "mesh bench --smoke".into(),
            ..Report::default()
        };
        report.add(
            "ceiling",
            "raw insert",
            12345.6,
            "rows/s",
            "UNNEST, 1000 per statement",
        );
        let dir = std::env::temp_dir().join(format!("mesh-bench-test-{}", uuid::Uuid::new_v4().simple()));
        report.write(&dir).expect("written");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("bench.json")).expect("json"))
                .expect("parses");
        assert_eq!(json["figures"][0]["value"], 12345.6);
        assert_eq!(json["figures"][0]["unit"], "rows/s");
        let markdown = std::fs::read_to_string(dir.join("bench.md")).expect("markdown");
        assert!(
            markdown.contains("| ceiling | raw insert | 12346 | rows/s |"),
            "{markdown}"
        );
        std::fs::remove_dir_all(dir).expect("cleaned");
    }
}
