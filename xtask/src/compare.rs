//! `cargo xtask compare <table>`: the nightly regression check.
//!
//! It compares `results/<table>.json` (written by `cargo xtask reproduce`) with the committed
//! baseline `eval/baselines/<table>.json`, cell by cell, each with its tolerance: relative for
//! perplexity, absolute (points) for accuracy. It fails when a cell moved beyond its tolerance,
//! or is missing from the results, and prints every such cell. `--bless` writes the baseline from
//! the current results with the tolerances of the table's spec. A baseline keeps the version of
//! the table spec it was blessed from: results of another version (another protocol: other
//! items, budget or rows) are refused as a whole rather than compared cell by cell.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cache::output_stem;
use crate::{project_root, read_json};

#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    /// The table (its results and its baseline).
    table: String,
    #[arg(long, default_value = "cpu")]
    profile: String,
    /// The results to check (default: results/<table>.json).
    #[arg(long)]
    results: Option<PathBuf>,
    /// The baseline (default: eval/baselines/<table>.json, `-<profile>` for other profiles).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Write the baseline from the results instead of comparing.
    #[arg(long)]
    bless: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Ppl,
    Acc,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cell {
    pub model: String,
    pub row: String,
    pub column: String,
    pub kind: Kind,
    pub value: f64,
    /// Relative for perplexity, absolute points for accuracy.
    pub tolerance: f64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Baseline {
    pub table: String,
    pub profile: String,
    /// The table spec's version (`version` in `eval/tables/<table>.toml`) it was blessed from.
    pub version: u64,
    /// The code version of the results it was blessed from.
    pub code_version: String,
    pub cells: Vec<Cell>,
}

/// Refuses results of another table version than the baseline's: their cells measure another
/// protocol, so a cell-by-cell comparison would report noise as regressions (or hide them).
pub(crate) fn same_version(baseline: &Baseline, baseline_path: &Path, results_version: u64) -> Result<()> {
    if baseline.version != results_version {
        bail!(
            "{} was blessed from {} version {}, but the results are version {}: the protocol changed, so no cell is comparable; \
             bless a new baseline from a full run (`cargo xtask compare {} --bless`)",
            baseline_path.display(),
            baseline.table,
            baseline.version,
            results_version,
            baseline.table
        );
    }
    Ok(())
}

/// The cells of a results JSON, each with the tolerance of its kind from the results' table.
pub(crate) fn cells(results: &Value) -> Result<Vec<Cell>> {
    let tol_ppl = results["tolerance"]["ppl_rel"].as_f64().context("results lack tolerance.ppl_rel")?;
    let tol_acc = results["tolerance"]["acc_abs"].as_f64().context("results lack tolerance.acc_abs")?;
    let columns = results["columns"].as_array().context("results lack columns")?;
    let mut out = Vec::new();
    for m in results["models"].as_array().context("results lack models")? {
        for r in m["rows"].as_array().context("a model lacks rows")? {
            for c in columns {
                let column = c["id"].as_str().context("a column lacks its id")?;
                let kind = if c["kind"] == "ppl" { Kind::Ppl } else { Kind::Acc };
                if let Some(value) = r["figures"][column].as_f64() {
                    out.push(Cell {
                        model: m["id"].as_str().unwrap_or_default().to_owned(),
                        row: r["id"].as_str().unwrap_or_default().to_owned(),
                        column: column.to_owned(),
                        kind,
                        value,
                        tolerance: if kind == Kind::Ppl { tol_ppl } else { tol_acc },
                    });
                }
            }
        }
    }
    Ok(out)
}

/// One line per baseline cell that moved beyond its tolerance or is missing.
pub(crate) fn regressions(baseline: &Baseline, current: &[Cell]) -> Vec<String> {
    let mut out = Vec::new();
    for b in &baseline.cells {
        let name = format!("{} / {} / {}", b.model, b.row, b.column);
        match current.iter().find(|c| c.model == b.model && c.row == b.row && c.column == b.column) {
            None => out.push(format!("{name}: missing from the results (baseline {:.4})", b.value)),
            Some(c) => {
                let (moved, shown) = match b.kind {
                    Kind::Ppl => {
                        let rel = (c.value - b.value) / b.value;
                        (
                            rel.abs() > b.tolerance || !rel.is_finite(),
                            format!("{:+.2}% (tolerance ±{:.2}%)", rel * 100.0, b.tolerance * 100.0),
                        )
                    }
                    Kind::Acc => {
                        let d = c.value - b.value;
                        (d.abs() > b.tolerance || !d.is_finite(), format!("{d:+.2} points (tolerance ±{:.2})", b.tolerance))
                    }
                };
                if moved {
                    out.push(format!("{name}: {:.4} → {:.4}, {shown}", b.value, c.value));
                }
            }
        }
    }
    out
}

pub(crate) fn run(args: &CompareArgs) -> Result<()> {
    let root = project_root();
    let results_path = args.results.clone().unwrap_or_else(|| output_stem(&root, &args.table, &args.profile).with_extension("json"));
    let baseline_path = args.baseline.clone().unwrap_or_else(|| {
        let name = if args.profile == "cpu" { args.table.clone() } else { format!("{}-{}", args.table, args.profile) };
        root.join("eval/baselines").join(format!("{name}.json"))
    });
    let results = read_json(&results_path)?;
    if results["table"] != args.table.as_str() || results["profile"] != args.profile.as_str() {
        bail!(
            "{} holds table {} profile {}, not {} {}",
            results_path.display(),
            results["table"],
            results["profile"],
            args.table,
            args.profile
        );
    }
    let results_version = results["version"].as_u64().with_context(|| format!("{} lacks the table's version", results_path.display()))?;
    let current = cells(&results).with_context(|| format!("in {}", results_path.display()))?;
    if args.bless {
        if results["pending"].as_u64() != Some(0) {
            bail!("{} is incomplete ({} runs pending): finish the table before blessing it", results_path.display(), results["pending"]);
        }
        let baseline = Baseline {
            table: args.table.clone(),
            profile: args.profile.clone(),
            version: results_version,
            code_version: results["code_version"].as_str().unwrap_or_default().to_owned(),
            cells: current,
        };
        if let Some(dir) = baseline_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&baseline_path, serde_json::to_string_pretty(&baseline)? + "\n")
            .with_context(|| format!("writing {}", baseline_path.display()))?;
        println!("wrote {} ({} cells)", baseline_path.display(), baseline.cells.len());
        return Ok(());
    }
    let text = std::fs::read_to_string(&baseline_path).with_context(|| format!("reading the baseline {}", baseline_path.display()))?;
    let baseline: Baseline = serde_json::from_str(&text).with_context(|| format!("parsing {}", baseline_path.display()))?;
    same_version(&baseline, &baseline_path, results_version)?;
    let moved = regressions(&baseline, &current);
    if moved.is_empty() {
        println!("{} ({}): all {} cells within tolerance of {}", args.table, args.profile, baseline.cells.len(), baseline_path.display());
        return Ok(());
    }
    for m in &moved {
        println!("{m}");
    }
    bail!("{} of {} cells of {} moved beyond tolerance of {}", moved.len(), baseline.cells.len(), args.table, baseline_path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(row: &str, kind: Kind, value: f64, tolerance: f64) -> Cell {
        Cell { model: "m".into(), row: row.into(), column: "c".into(), kind, value, tolerance }
    }

    fn baseline() -> Baseline {
        Baseline {
            table: "t".into(),
            profile: "cpu".into(),
            version: 2,
            code_version: String::new(),
            cells: vec![cell("ppl", Kind::Ppl, 20.0, 0.02), cell("acc", Kind::Acc, 60.0, 1.5)],
        }
    }

    #[test]
    fn within_tolerance_passes() {
        let now = [cell("ppl", Kind::Ppl, 20.39, 0.02), cell("acc", Kind::Acc, 58.6, 1.5)];
        assert_eq!(regressions(&baseline(), &now), Vec::<String>::new());
    }

    #[test]
    fn a_cell_nudged_beyond_tolerance_fails_and_is_named() {
        let now = [cell("ppl", Kind::Ppl, 20.41, 0.02), cell("acc", Kind::Acc, 61.6, 1.5)];
        let moved = regressions(&baseline(), &now);
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert!(moved[0].starts_with("m / ppl / c: 20.0000 → 20.4100, +2.05%"), "{}", moved[0]);
        assert!(moved[1].starts_with("m / acc / c: 60.0000 → 61.6000, +1.60 points"), "{}", moved[1]);
    }

    #[test]
    fn results_of_another_table_version_are_refused_naming_both() {
        let path = Path::new("eval/baselines/t.json");
        assert!(same_version(&baseline(), path, 2).is_ok());
        let e = same_version(&baseline(), path, 3).unwrap_err().to_string();
        assert!(e.starts_with("eval/baselines/t.json was blessed from t version 2, but the results are version 3"), "{e}");
    }

    #[test]
    fn a_committed_baseline_without_its_version_is_a_parse_error() {
        let e = serde_json::from_str::<Baseline>(r#"{"table": "t", "profile": "cpu", "code_version": "", "cells": []}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `version`"), "{e}");
    }

    #[test]
    fn a_missing_or_non_finite_cell_fails() {
        let now = [cell("ppl", Kind::Ppl, f64::NAN, 0.02)];
        let moved = regressions(&baseline(), &now);
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert!(moved[1].contains("acc / c: missing"), "{}", moved[1]);
    }

    #[test]
    fn cells_are_read_from_a_results_json_with_their_kind_and_tolerance() {
        let results = serde_json::json!({
            "tolerance": {"ppl_rel": 0.01, "acc_abs": 2.0},
            "columns": [{"id": "w", "kind": "ppl"}, {"id": "p", "kind": "acc"}],
            "models": [{"id": "m", "rows": [{"id": "r", "figures": {"w": 10.0, "p": null}}]}],
        });
        assert_eq!(
            cells(&results).unwrap(),
            vec![Cell { model: "m".into(), row: "r".into(), column: "w".into(), kind: Kind::Ppl, value: 10.0, tolerance: 0.01 }]
        );
    }
}
