//! A table rendered from the run cache: Markdown laid out like the paper's table, JSON, CSV.
//!
//! A table may run each row under several calibration seeds. A cell then shows the mean ± the
//! sample standard deviation over the seeds finished, and a row with a `base` carries its
//! *paired* difference from it: the change per seed (perplexity relative, accuracy in points),
//! its mean and a 95% confidence interval from Student's t, and a verdict that says only what
//! the interval says (`helps`, `hurts`, `within noise`). A row that reads no calibration (the
//! dense model, magnitude alone) has one run, which stands for every seed. With one seed, cells
//! show the value, zero-shot cells its standard error as lm-eval computes it, and `base` rows
//! their change. Cells with a published reference carry it and their difference from it. A run
//! not finished yet leaves its cell empty (or its seed out), and the caption says how many are
//! pending. Nothing here depends on the clock, so a finished table renders to the same bytes
//! every time.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::cache::{Fingerprint, Planned, output_stem};
use crate::figures::{Figures, ModelFigures, RowFigures, SeedFigures, summary};
use crate::spec::{Family, Measure, Pattern, Profile, Table};

/// The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95%). Above 30 the
/// value at the next tabulated smaller `df` is used, which widens the interval a little.
pub(crate) fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101,
        2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= 30 => T[d - 1],
        d if d < 40 => 2.042,
        d if d < 60 => 2.021,
        d if d < 120 => 2.000,
        _ => 1.980,
    }
}

/// A paired difference of a row from its base, over the seeds both have.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Paired {
    /// `(seed, difference)`: relative in percent for perplexity, points for accuracy.
    pub per_seed: Vec<(Option<u64>, f64)>,
    pub mean: f64,
    /// The 95% confidence interval of the mean difference (`None` for one pair).
    pub ci: Option<(f64, f64)>,
}

impl Paired {
    /// What the interval shows, for a measure where `lower_is_better`.
    pub(crate) fn verdict(&self, lower_is_better: bool) -> &'static str {
        match self.ci {
            None => "one seed",
            Some((lo, hi)) if (hi < 0.0 && lower_is_better) || (lo > 0.0 && !lower_is_better) => "helps",
            Some((lo, hi)) if (lo > 0.0 && lower_is_better) || (hi < 0.0 && !lower_is_better) => "hurts",
            Some(_) => "within noise",
        }
    }
}

/// The change of `v` against `base`: relative (percent) for perplexity, in points for accuracy.
fn change(ppl: bool, v: f64, base: f64) -> f64 {
    if ppl { (v / base - 1.0) * 100.0 } else { v - base }
}

/// Pairs `row`'s runs with `base`'s by seed (a run that stands for every seed pairs with each).
pub(crate) fn paired(row: &RowFigures, base: &RowFigures, column: usize, ppl: bool) -> Option<Paired> {
    let mut per_seed = Vec::new();
    for r in &row.runs {
        let Some(v) = r.values[column] else { continue };
        for b in &base.runs {
            let Some(bv) = b.values[column] else { continue };
            let matches = match (r.seed, b.seed) {
                (Some(x), Some(y)) => x == y,
                _ => true,
            };
            if matches {
                per_seed.push((r.seed.or(b.seed), change(ppl, v, bv)));
            }
        }
    }
    let diffs: Vec<f64> = per_seed.iter().map(|(_, d)| *d).collect();
    let s = summary(&diffs)?;
    let ci = (s.n > 1).then(|| {
        let half = t975(s.n - 1) * s.sd / (s.n as f64).sqrt();
        (s.mean - half, s.mean + half)
    });
    Some(Paired { per_seed, mean: s.mean, ci })
}

impl RowFigures {
    fn column(&self, i: usize) -> Vec<f64> {
        self.runs.iter().filter_map(|r| r.values[i]).collect()
    }

    /// The mean over the table's columns, per run (runs with every column finished).
    fn run_means(&self) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| {
                let v: Option<Vec<f64>> = r.values.iter().copied().collect();
                v.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
            })
            .collect()
    }

    /// A row of the mean column as a row of one column, for pairing.
    fn as_mean(&self) -> RowFigures {
        let runs = self
            .runs
            .iter()
            .map(|r| {
                let v: Option<Vec<f64>> = r.values.iter().copied().collect();
                let m = v.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64);
                SeedFigures { seed: r.seed, key: r.key.clone(), values: vec![m], stderr: vec![None], majority: vec![None] }
            })
            .collect();
        RowFigures { id: self.id.clone(), label: self.label.clone(), family: self.family, runs }
    }

    /// One run's standard error of the mean of its columns (independent tasks): √Σse² / k.
    fn mean_stderr(&self) -> Option<f64> {
        let r = self.runs.first()?;
        let se: Option<Vec<f64>> = r.stderr.iter().copied().collect();
        se.filter(|v| !v.is_empty()).map(|v| v.iter().map(|x| x * x).sum::<f64>().sqrt() / v.len() as f64)
    }
}

pub(crate) fn collect(table: &Table, planned: &[Planned], cache: &Path) -> Figures {
    let mut models: Vec<ModelFigures> = Vec::new();
    let mut pending = 0;
    for p in planned {
        let finished = p.finished(cache);
        if finished.is_none() {
            pending += 1;
        }
        let pick = |field: &str| -> Vec<Option<f64>> {
            table.columns.iter().map(|c| finished.as_ref().and_then(|f| f[field][&c.id].as_f64())).collect()
        };
        let run = SeedFigures {
            seed: p.run.seed,
            key: p.key.clone(),
            values: pick("figures"),
            stderr: pick("stderr"),
            majority: pick("majority"),
        };
        let model = match models.iter_mut().find(|m| m.id == p.run.model.id) {
            Some(m) => m,
            None => {
                models.push(ModelFigures { id: p.run.model.id.clone(), label: p.run.model.label.clone(), rows: Vec::new() });
                let last = models.len() - 1;
                &mut models[last]
            }
        };
        match model.rows.iter_mut().find(|r| r.id == p.run.row.id) {
            Some(r) => r.runs.push(run),
            None => model.rows.push(RowFigures {
                id: p.run.row.id.clone(),
                label: p.run.row.label.clone(),
                family: p.run.row.family(),
                runs: vec![run],
            }),
        }
    }
    Figures { models, pending }
}

fn is_ppl(m: &Measure) -> bool {
    matches!(m, Measure::Ppl { .. })
}

fn fmt_change(ppl: bool, d: f64) -> String {
    if ppl { format!("{d:+.1}%") } else { format!("{d:+.2}") }
}

fn fmt_paired(ppl: bool, p: &Paired) -> String {
    match p.ci {
        Some((lo, hi)) if ppl => format!("{:+.1}% [{lo:+.1}, {hi:+.1}]", p.mean),
        Some((lo, hi)) => format!("{:+.2} [{lo:+.2}, {hi:+.2}]", p.mean),
        None => fmt_change(ppl, p.mean),
    }
}

fn budget(profile: &Profile, table: &Table) -> String {
    let list = |seeds: &[u64]| match seeds {
        [s] => format!("seed {s}"),
        many => format!("seeds {}", many.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
    };
    let mut seeds = list(&profile.seeds);
    // Rows with seeds of their own (a spec that spends seeds where the noise needs them).
    let mut own: Vec<&Vec<u64>> = Vec::new();
    for r in table.rows.iter().filter(|r| r.uses_calibration()) {
        if let Some(s) = r.seeds.as_ref().filter(|s| **s != profile.seeds && !own.contains(s)) {
            own.push(s);
        }
    }
    if !own.is_empty() {
        seeds += &format!("; rows with seeds of their own: {}", own.iter().map(|s| list(s)).collect::<Vec<_>>().join(" or "));
    }
    let mut parts = vec![format!(
        "calibration {} × {} tokens of {} ({seeds})",
        profile.nsamples,
        profile.models.first().map_or(0, |m| m.seqlen),
        profile.calib,
    )];
    let mut windows: Vec<String> = Vec::new();
    for c in table.columns.iter().filter(|c| is_ppl(&c.measure)) {
        let w = match c.max_windows.or(profile.max_windows) {
            Some(0) | None => "every window".to_owned(),
            Some(k) => format!("the first {k} windows"),
        };
        let only = c
            .seeds
            .as_ref()
            .map(|s| format!(" (seed {} only)", s.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")))
            .unwrap_or_default();
        windows.push(format!("{}: {w}{only}", c.label));
    }
    if !windows.is_empty() {
        parts.push(format!("perplexity over {}", windows.join("; ")));
    }
    if table.columns.iter().any(|c| !is_ppl(&c.measure)) {
        parts.push(match profile.limit {
            Some(n) => format!("the first {n} items of each task"),
            None => "every item of each task".to_owned(),
        });
    }
    if let Some(text) = profile.si_recipe.as_ref().and_then(|r| r.to_toml().ok()) {
        parts.push(format!("SI rows add the recipe fields `{}`", text.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")));
    }
    parts.join("; ")
}

/// A cell's value: the value, or mean ± sd over seeds (a lone seedless run marked `¹`); zero-shot
/// cells of one run with their standard error.
fn value_cell(row: &RowFigures, i: usize, seeded: bool) -> String {
    let v = row.column(i);
    let Some(s) = summary(&v) else { return String::new() };
    if seeded {
        if row.runs.iter().all(|r| r.seed.is_none()) {
            return format!("{:.2}¹", s.mean);
        }
        return if s.n > 1 { format!("{:.2} ± {:.2}", s.mean, s.sd) } else { format!("{:.2} (n=1)", s.mean) };
    }
    match row.runs.first().and_then(|r| r.stderr[i]) {
        Some(se) => format!("{:.2} ± {se:.2}", s.mean),
        None => format!("{:.2}", s.mean),
    }
}

/// The "just more data" row an SI or reconstruction row has to beat: the row of family
/// `MoreData` with the same base (the base pruner with more calibration windows), if the table
/// has one.
fn control_of<'a>(table: &Table, row_id: &str, rows: &'a [RowFigures]) -> Option<&'a RowFigures> {
    let row = table.row(row_id)?;
    if !matches!(row.family(), Family::Si | Family::Reconstruction | Family::SiReconstruction) {
        return None;
    }
    let base = row.base.as_deref()?;
    let control = table.rows.iter().find(|o| o.family() == Family::MoreData && o.base.as_deref() == Some(base))?;
    rows.iter().find(|o| o.id == control.id)
}

/// The reconstruction row an SI + reconstruction row extends: same base, same reconstruction,
/// same calibration budget, no SI. Pairing the two says what SI adds once reconstruction runs.
fn reconstruction_of<'a>(table: &Table, row_id: &str, rows: &'a [RowFigures]) -> Option<&'a RowFigures> {
    let row = table.row(row_id)?;
    if row.family() != Family::SiReconstruction {
        return None;
    }
    let recon = table.rows.iter().find(|o| {
        o.family() == Family::Reconstruction
            && o.base == row.base
            && o.reconstruct == row.reconstruct
            && o.nsamples_factor == row.nsamples_factor
    })?;
    rows.iter().find(|o| o.id == recon.id)
}

/// One line of the markdown's list of paired differences: `row` against `other` (with `note`
/// after its label) in `column`, the interval and the verdict.
fn pair_line(model: &str, row: &str, other: &str, note: &str, column: &str, p: &Paired, ppl: bool) -> String {
    format!(
        "- {model} / {row} against {other}{note}, {column}: {} ({} seed{}): **{}**\n",
        fmt_paired(ppl, p),
        p.per_seed.len(),
        if p.per_seed.len() == 1 { "" } else { "s" },
        p.verdict(ppl)
    )
}

/// A paired difference in the JSON: unit, every seed's difference, mean, 95% interval, verdict,
/// and the row it was paired with where that is not the base (`("control", id)`).
fn pair_json(p: &Paired, ppl: bool, against: Option<(&str, &str)>) -> Value {
    let mut v = json!({
        "unit": if ppl { "percent" } else { "points" },
        "per_seed": p.per_seed.iter().map(|(s, d)| json!({"seed": s, "delta": d})).collect::<Vec<_>>(),
        "mean": p.mean, "ci95": p.ci.map(|(lo, hi)| vec![lo, hi]), "verdict": p.verdict(ppl),
    });
    if let (Some((key, id)), Some(map)) = (against, v.as_object_mut()) {
        map.insert(key.to_owned(), json!(id));
    }
    v
}

pub(crate) fn markdown(table: &Table, profile: &Profile, figures: &Figures, fp: &Fingerprint) -> String {
    let seeded = table.seeded(profile);
    // How many seeds the rows ask for: the profile's, or a row's own.
    let asked = {
        let n = table.rows.iter().map(|r| r.seeds.as_ref().map_or(profile.seeds.len(), Vec::len));
        match (n.clone().min(), n.max()) {
            (Some(lo), Some(hi)) if lo != hi => format!("{lo} to {hi} asked for, by row"),
            (lo, _) => format!("{} asked for", lo.unwrap_or(profile.seeds.len())),
        }
    };
    let mut s = format!("# {}: {}\n\n", table.name, table.title);
    let cmd = if profile.name == "cpu" {
        format!("cargo xtask reproduce {}", table.name)
    } else {
        format!("cargo xtask reproduce {} --profile {}", table.name, profile.name)
    };
    s += &format!(
        "Written by `{cmd}` (spec `eval/tables/{}.toml` v{}, profile `{}`: {}). Budget: {}. Code {}, data {}, ATen CPU kernels {}.\n\n",
        table.name,
        table.version,
        profile.name,
        profile.description,
        budget(profile, table),
        &fp.code_version[..12],
        &fp.data_hash[..12],
        fp.kernels
    );
    if figures.pending > 0 {
        s += &format!("**Incomplete:** {} run(s) not finished; their cells are empty or leave their seed out.\n\n", figures.pending);
    }
    let mut sources: Vec<String> = Vec::new();
    let mut pairs_md = String::new();
    for m in &figures.models {
        s += &format!("## {}\n\n", m.label);
        s += "| Method |";
        for c in &table.columns {
            s += &format!(" {} |", c.label);
        }
        if table.mean {
            s += " Mean |";
        }
        s += "\n|---|";
        for _ in 0..table.columns.len() + usize::from(table.mean) {
            s += "---:|";
        }
        s += "\n";
        for r in &m.rows {
            let base = table.row(&r.id).and_then(|row| row.base.clone()).and_then(|b| m.rows.iter().find(|o| o.id == b));
            // The row's other references, listed (not shown in its cell) after its base.
            let others = [
                (control_of(table, &r.id, &m.rows), " (more calibration data, no SI)"),
                (reconstruction_of(table, &r.id, &m.rows), " (what SI adds to reconstruction)"),
            ];
            s += &format!("| {} |", r.label);
            for (i, c) in table.columns.iter().enumerate() {
                let ppl = is_ppl(&c.measure);
                let mut cell = value_cell(r, i, seeded);
                if let Some(p) = base.and_then(|b| paired(r, b, i, ppl)) {
                    cell += &format!(" ({})", if seeded { fmt_paired(ppl, &p) } else { fmt_change(ppl, p.mean) });
                    if seeded {
                        pairs_md += &pair_line(&m.label, &r.label, base.map_or("", |b| b.label.as_str()), "", &c.label, &p, ppl);
                    }
                }
                for (other, note) in &others {
                    if seeded
                        && let Some(o) = other
                        && let Some(p) = paired(r, o, i, ppl)
                    {
                        pairs_md += &pair_line(&m.label, &r.label, &o.label, note, &c.label, &p, ppl);
                    }
                }
                if let Some(rf) = table.references.iter().find(|x| x.model == m.id && x.row == r.id && x.column == c.id) {
                    cell += &format!(" [ref {}", rf.value);
                    if let Some(v) = summary(&r.column(i)) {
                        cell += &format!(", {}", fmt_change(ppl, change(ppl, v.mean, rf.value)));
                    }
                    cell += "]";
                    if !sources.contains(&rf.source) {
                        sources.push(rf.source.clone());
                    }
                }
                s += &format!(" {cell} |");
            }
            if table.mean {
                let means = r.run_means();
                let mut cell = match summary(&means) {
                    Some(x) if seeded && x.n > 1 => format!("{:.2} ± {:.2}", x.mean, x.sd),
                    Some(x) => match r.mean_stderr().filter(|_| !seeded) {
                        Some(se) => format!("{:.2} ± {se:.2}", x.mean),
                        None => format!("{:.2}", x.mean),
                    },
                    None => String::new(),
                };
                if let Some(p) = base.and_then(|b| paired(&r.as_mean(), &b.as_mean(), 0, false)) {
                    cell += &format!(" ({})", if seeded { fmt_paired(false, &p) } else { fmt_change(false, p.mean) });
                }
                s += &format!(" {cell} |");
            }
            s += "\n";
        }
        // The majority-class baseline of the tasks that have one (the same for every row).
        let majority: Vec<Option<f64>> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| if c.majority { m.rows.iter().flat_map(|r| &r.runs).find_map(|r| r.majority[i]) } else { None })
            .collect();
        if majority.iter().any(Option::is_some) {
            s += "| *Majority class* |";
            for v in &majority {
                s += &format!(" {} |", v.map(|v| format!("*{v:.2}*")).unwrap_or_default());
            }
            if table.mean {
                s += " |";
            }
            s += "\n";
        }
        s += "\n";
    }
    if seeded {
        s += &format!(
            "Cells are the mean ± standard deviation over the calibration seeds finished ({asked}); ¹ marks a row that reads no calibration data, computed once. \
             The figure in parentheses is the paired difference from the row's base, per seed (perplexity: relative; accuracy: points), with its 95% confidence interval (Student's t).\n"
        );
        if !pairs_md.is_empty() {
            s += "\nPaired differences and what their intervals show (helps: the interval excludes 0 on the better side; hurts: on the worse side; within noise: it contains 0; one seed: no interval, so no verdict here):\n\n";
            s += &pairs_md;
        }
    } else {
        s += "The figure in parentheses is the change against the row's base";
        s += if table.columns.iter().any(|c| is_ppl(&c.measure)) { " (perplexity: relative; accuracy: points)" } else { " (points)" };
        s += ".";
        if table.columns.iter().any(|c| !is_ppl(&c.measure)) {
            s += " Zero-shot cells show ± one standard error, as lm-evaluation-harness computes it (the Mean's, √Σse²/k, treats tasks as independent).";
        }
        s += "\n";
    }
    if !sources.is_empty() {
        s += &format!("\n[ref …] cells are published figures for the same model and protocol: {}.\n", sources.join("; "));
    }
    for n in &table.notes {
        s += &format!("\n{n}\n");
    }
    s
}

pub(crate) fn to_json(table: &Table, profile: &Profile, figures: &Figures, fp: &Fingerprint) -> Value {
    let models: Vec<Value> = figures
        .models
        .iter()
        .map(|m| {
            let rows: Vec<Value> = m
                .rows
                .iter()
                .map(|r| {
                    let row = table.row(&r.id);
                    let base = row.and_then(|x| x.base.clone()).and_then(|b| m.rows.iter().find(|o| o.id == b));
                    let mut means = serde_json::Map::new();
                    let mut sds = serde_json::Map::new();
                    let mut ns = serde_json::Map::new();
                    let mut deltas = serde_json::Map::new();
                    let mut against_control = serde_json::Map::new();
                    let control = control_of(table, &r.id, &m.rows);
                    let mut against_reconstruction = serde_json::Map::new();
                    let recon = reconstruction_of(table, &r.id, &m.rows);
                    for (i, c) in table.columns.iter().enumerate() {
                        let ppl = is_ppl(&c.measure);
                        if let Some(rec) = recon
                            && let Some(p) = paired(r, rec, i, ppl)
                        {
                            against_reconstruction.insert(c.id.clone(), pair_json(&p, ppl, Some(("reconstruction", &rec.id))));
                        }
                        if let Some(ctl) = control
                            && let Some(p) = paired(r, ctl, i, ppl)
                        {
                            against_control.insert(c.id.clone(), pair_json(&p, ppl, Some(("control", &ctl.id))));
                        }
                        let s = summary(&r.column(i));
                        means.insert(c.id.clone(), json!(s.map(|s| s.mean)));
                        sds.insert(c.id.clone(), json!(s.map(|s| s.sd)));
                        ns.insert(c.id.clone(), json!(s.map_or(0, |s| s.n)));
                        if let Some(p) = base.and_then(|b| paired(r, b, i, ppl)) {
                            deltas.insert(c.id.clone(), pair_json(&p, ppl, None));
                        }
                    }
                    let runs: Vec<Value> = r
                        .runs
                        .iter()
                        .map(|x| {
                            let cells: serde_json::Map<String, Value> =
                                table.columns.iter().zip(&x.values).map(|(c, v)| (c.id.clone(), json!(v))).collect();
                            let se: serde_json::Map<String, Value> = table
                                .columns
                                .iter()
                                .zip(&x.stderr)
                                .filter(|(_, v)| v.is_some())
                                .map(|(c, v)| (c.id.clone(), json!(v)))
                                .collect();
                            json!({"seed": x.seed, "run": x.key, "figures": cells, "stderr": se})
                        })
                        .collect();
                    let mean = if table.mean { json!(summary(&r.run_means()).map(|s| s.mean)) } else { Value::Null };
                    json!({
                        "id": r.id, "label": r.label, "family": r.family.name(), "run": r.runs.first().and_then(|x| x.key.clone()),
                        "base": row.and_then(|x| x.base.clone()),
                        "pattern": row.and_then(|x| x.pattern).map(|p: Pattern| p.to_string()),
                        "figures": means, "sd": sds, "n": ns, "delta": deltas, "delta_vs_control": against_control,
                        "delta_vs_reconstruction": against_reconstruction, "runs": runs, "mean": mean,
                    })
                })
                .collect();
            let majority: serde_json::Map<String, Value> = table
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.majority)
                .map(|(i, c)| (c.id.clone(), json!(m.rows.iter().flat_map(|r| &r.runs).find_map(|r| r.majority[i]))))
                .collect();
            json!({"id": m.id, "label": m.label, "rows": rows, "majority": majority})
        })
        .collect();
    let columns: Vec<Value> = table
        .columns
        .iter()
        .map(|c| json!({"id": c.id, "label": c.label, "kind": if is_ppl(&c.measure) { "ppl" } else { "acc" }}))
        .collect();
    let references: Vec<Value> = table
        .references
        .iter()
        .map(|r| json!({"model": r.model, "row": r.row, "column": r.column, "value": r.value, "source": r.source}))
        .collect();
    json!({
        "table": table.name, "version": table.version, "title": table.title, "profile": profile.name,
        "budget": budget(profile, table), "seeds": profile.seeds, "code_version": fp.code_version, "data_hash": fp.data_hash, "kernels": fp.kernels,
        "pending": figures.pending, "columns": columns, "models": models, "references": references,
        "tolerance": {"ppl_rel": table.tolerance.ppl_rel, "acc_abs": table.tolerance.acc_abs},
    })
}

pub(crate) fn to_csv(table: &Table, figures: &Figures) -> String {
    let mut s = String::from("model,row,seed,column,value,reference\n");
    for m in &figures.models {
        for r in &m.rows {
            for run in &r.runs {
                for (c, v) in table.columns.iter().zip(&run.values) {
                    let rf = table
                        .references
                        .iter()
                        .find(|x| x.model == m.id && x.row == r.id && x.column == c.id)
                        .map(|x| x.value.to_string())
                        .unwrap_or_default();
                    let seed = run.seed.map(|s| s.to_string()).unwrap_or_default();
                    s += &format!("{},{},{seed},{},{},{rf}\n", m.id, r.id, c.id, v.map(|v| v.to_string()).unwrap_or_default());
                }
            }
        }
    }
    s
}

/// Renders the table from the cache into `results/` (atomically) and returns the Markdown.
pub(crate) fn write(root: &Path, table: &Table, profile: &str, planned: &[Planned], cache: &Path, fp: &Fingerprint) -> Result<String> {
    let profile = table.profile(profile)?;
    let figures = collect(table, planned, cache);
    let md = markdown(table, profile, &figures, fp);
    let stem = output_stem(root, &table.name, &profile.name);
    if let Some(dir) = stem.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&to_json(table, profile, &figures, fp))? + "\n";
    for (ext, text) in [("md", md.as_str()), ("json", json.as_str()), ("csv", to_csv(table, &figures).as_str())] {
        let path = stem.with_extension(ext);
        // One temporary name per process and thread: two runners of one table (`--only` split
        // across cores) may render it at the same moment, and each rename must find its own file.
        let tmp =
            stem.with_extension(format!("{ext}.{}.{:?}.tmp", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""));
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(fig) = &table.figure {
        crate::figure::draw(table, profile, fig, &figures, &stem.with_extension("png"))?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
        name = "t"
        version = 3
        title = "a title"
        columns = [{ id = "w", label = "W", ppl = "wikitext2" }, { id = "c", label = "C", ppl = "c4" }]
        tolerance = { ppl_rel = 0.01, acc_abs = 1.0 }
        [profiles.cpu]
        description = "small"
        models = [{ id = "m", label = "Model M", source = "smollm2-135m" }]
        nsamples = 8
        seqlen = 512
        max_windows = 64
        [profiles.paper]
        description = "big"
        models = [{ id = "m", label = "Model M", source = "smollm2-135m" }]
        nsamples = 128
        seqlen = 2048
        [[rows]]
        id = "wanda"
        label = "Wanda"
        method = "wanda"
        sparsity = 0.5
        [[rows]]
        id = "wanda+si"
        label = "Wanda + SI"
        method = "wanda"
        sparsity = 0.5
        si = { stages = ["feature"] }
        base = "wanda"
        [[reference]]
        model = "m"
        row = "wanda"
        column = "w"
        value = 10.0
        source = "a paper"
    "#;

    fn run(seed: Option<u64>, values: Vec<Option<f64>>) -> SeedFigures {
        let n = values.len();
        SeedFigures { seed, key: Some(format!("key-{seed:?}")), values, stderr: vec![None; n], majority: vec![None; n] }
    }

    fn row(id: &str, label: &str, runs: Vec<SeedFigures>) -> RowFigures {
        RowFigures { id: id.into(), label: label.into(), family: Family::Base, runs }
    }

    fn fp() -> Fingerprint {
        Fingerprint { data_dir: "/d".into(), data_hash: "d".repeat(64), code_version: "c".repeat(64), kernels: "avx2".into() }
    }

    #[test]
    fn cells_carry_their_change_against_the_base_row_and_the_reference() {
        let t = crate::spec::parse(SPEC).unwrap();
        let figures = Figures {
            models: vec![ModelFigures {
                id: "m".into(),
                label: "Model M".into(),
                rows: vec![
                    row("wanda", "Wanda", vec![run(Some(0), vec![Some(11.0), Some(20.0)])]),
                    row("wanda+si", "Wanda + SI", vec![run(Some(0), vec![Some(9.9), None])]),
                ],
            }],
            pending: 1,
        };
        let md = markdown(&t, t.profile("cpu").unwrap(), &figures, &fp());
        assert!(md.starts_with("# t: a title\n"), "{md}");
        assert!(
            md.contains(
                "Budget: calibration 8 × 512 tokens of c4 (seed 0); perplexity over W: the first 64 windows; C: the first 64 windows."
            ),
            "{md}"
        );
        assert!(md.contains("**Incomplete:** 1 run(s) not finished"), "{md}");
        let mixed = crate::spec::parse(&SPEC.replace("base = \"wanda\"\n", "base = \"wanda\"\nseeds = [0, 1, 2]\n")).unwrap();
        assert!(
            budget(mixed.profile("cpu").unwrap(), &mixed)
                .starts_with("calibration 8 × 512 tokens of c4 (seed 0; rows with seeds of their own: seeds 0, 1, 2); "),
            "{}",
            budget(mixed.profile("cpu").unwrap(), &mixed)
        );
        assert!(md.contains("| Wanda | 11.00 [ref 10, +10.0%] | 20.00 |\n"), "{md}");
        assert!(md.contains("| Wanda + SI | 9.90 (-10.0%) |  |\n"), "{md}");
        assert!(md.contains("a paper"), "{md}");
        let csv = to_csv(&t, &figures);
        assert_eq!(
            csv,
            "model,row,seed,column,value,reference\nm,wanda,0,w,11,10\nm,wanda,0,c,20,\nm,wanda+si,0,w,9.9,\nm,wanda+si,0,c,,\n"
        );
        let json = to_json(&t, t.profile("cpu").unwrap(), &figures, &fp());
        assert_eq!(json["models"][0]["rows"][1]["figures"]["c"], Value::Null);
        assert_eq!(json["models"][0]["rows"][1]["base"], "wanda");
        assert_eq!(json["pending"], 1);
    }

    #[test]
    fn seeded_cells_are_mean_and_sd_with_paired_confidence_intervals() {
        let spec = SPEC.replace("max_windows = 64\n", "max_windows = 64\nseeds = [0, 1, 2]\n");
        let t = crate::spec::parse(&spec).unwrap();
        // Base 10, 12, 14; SI 9, 10.8, 13.3 → per seed −10%, −10%, −5%.
        let base = row("wanda", "Wanda", (0..3).map(|s| run(Some(s), vec![Some(10.0 + 2.0 * s as f64), None])).collect());
        let si = row(
            "wanda+si",
            "Wanda + SI",
            vec![run(Some(0), vec![Some(9.0), None]), run(Some(1), vec![Some(10.8), None]), run(Some(2), vec![Some(13.3), None])],
        );
        let p = paired(&si, &base, 0, true).unwrap();
        let d: Vec<f64> = p.per_seed.iter().map(|(_, d)| *d).collect();
        assert!((d[0] + 10.0).abs() < 1e-9 && (d[1] + 10.0).abs() < 1e-9 && (d[2] + 5.0).abs() < 1e-9, "{d:?}");
        let mean: f64 = -25.0 / 3.0;
        let sd = ((2.0 * (10.0 + mean).powi(2) + (5.0 + mean).powi(2)) / 2.0_f64).sqrt();
        let half = 4.303 * sd / 3f64.sqrt();
        let (lo, hi) = p.ci.unwrap();
        assert!((p.mean - mean).abs() < 1e-9 && (lo - (mean - half)).abs() < 1e-9 && (hi - (mean + half)).abs() < 1e-9);
        assert_eq!(p.verdict(true), "helps", "the interval [{lo}, {hi}] lies below 0");
        assert_eq!(p.verdict(false), "hurts", "for accuracy, lower is worse");
        let noisy = row(
            "x",
            "X",
            vec![run(Some(0), vec![Some(9.5), None]), run(Some(1), vec![Some(12.5), None]), run(Some(2), vec![Some(13.3), None])],
        );
        assert_eq!(paired(&noisy, &base, 0, true).unwrap().verdict(true), "within noise");
        let figures = Figures { models: vec![ModelFigures { id: "m".into(), label: "Model M".into(), rows: vec![base, si] }], pending: 0 };
        let md = markdown(&t, t.profile("cpu").unwrap(), &figures, &fp());
        assert!(md.contains("| Wanda | 12.00 ± 2.00 [ref 10, +20.0%] |  |\n"), "{md}");
        assert!(md.contains(&format!("| Wanda + SI | 11.03 ± 2.16 ({:+.1}% [{:+.1}, {:+.1}]) |  |\n", mean, lo, hi)), "{md}");
        assert!(md.contains("against Wanda, W: ") && md.contains("(3 seeds): **helps**"), "{md}");
        // A base that reads no calibration pairs with every seed.
        let lone = row("wanda", "Wanda", vec![run(None, vec![Some(10.0), None])]);
        let p =
            paired(&row("x", "X", (0..3).map(|s| run(Some(s), vec![Some(9.0 - 0.1 * s as f64), None])).collect()), &lone, 0, true).unwrap();
        assert_eq!(p.per_seed.len(), 3);
        assert_eq!(p.verdict(true), "helps");
        let json = to_json(&t, t.profile("cpu").unwrap(), &figures, &fp());
        assert_eq!(json["models"][0]["rows"][1]["delta"]["w"]["per_seed"].as_array().unwrap().len(), 3);
        assert_eq!(json["models"][0]["rows"][1]["runs"][2]["figures"]["w"], 13.3);
        assert_eq!(json["seeds"], json!([0, 1, 2]));
    }

    /// SI has to beat "just more data": an SI row is also paired, seed by seed, with the base
    /// pruner's more-calibration row, in the markdown's list and in the JSON, one seed included
    /// (as its pairing with the base is).
    #[test]
    fn si_rows_are_also_paired_with_the_more_data_control() {
        let spec = SPEC.replace("max_windows = 64\n", "max_windows = 64\nseeds = [0, 1, 2]\n")
            + "\n[[rows]]\nid = \"wanda-4x\"\nlabel = \"Wanda, 4x calibration\"\nmethod = \"wanda\"\nsparsity = 0.5\nnsamples_factor = 4\nbase = \"wanda\"\n";
        let t = crate::spec::parse(&spec).unwrap();
        let base = row("wanda", "Wanda", (0..3).map(|s| run(Some(s), vec![Some(10.0 + 2.0 * s as f64), None])).collect());
        // SI 9, 10.8, 13.3 against the control 9.9, 11.88, 13.86 (−1% a seed): −9.1%, −9.1%, −4.0%.
        let si = row(
            "wanda+si",
            "Wanda + SI",
            vec![run(Some(0), vec![Some(9.0), Some(20.0)]), run(Some(1), vec![Some(10.8), None]), run(Some(2), vec![Some(13.3), None])],
        );
        // Column C is seed 0 alone (as a full-protocol check is): listed, one seed, no verdict.
        let more = row(
            "wanda-4x",
            "Wanda, 4x calibration",
            (0..3).map(|s| run(Some(s), vec![Some(0.99 * (10.0 + 2.0 * s as f64)), (s == 0).then_some(25.0)])).collect(),
        );
        let figures =
            Figures { models: vec![ModelFigures { id: "m".into(), label: "Model M".into(), rows: vec![base, si, more] }], pending: 0 };
        let md = markdown(&t, t.profile("cpu").unwrap(), &figures, &fp());
        assert!(md.contains("- Model M / Wanda + SI against Wanda, 4x calibration (more calibration data, no SI), W: "), "{md}");
        assert!(
            md.contains(
                "- Model M / Wanda + SI against Wanda, 4x calibration (more calibration data, no SI), C: -20.0% (1 seed): **one seed**\n"
            ),
            "{md}"
        );
        assert!(
            !md.contains("- Model M / Wanda, 4x calibration against Wanda, 4x calibration"),
            "the control is not paired with itself: {md}"
        );
        let json = to_json(&t, t.profile("cpu").unwrap(), &figures, &fp());
        let d = &json["models"][0]["rows"][1]["delta_vs_control"]["w"];
        assert_eq!(d["control"], "wanda-4x");
        let per_seed: Vec<f64> = d["per_seed"].as_array().unwrap().iter().map(|x| x["delta"].as_f64().unwrap()).collect();
        let want = [(9.0 / 9.9 - 1.0) * 100.0, (10.8 / 11.88 - 1.0) * 100.0, (13.3 / 13.86 - 1.0) * 100.0];
        assert!(per_seed.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9), "{per_seed:?}");
        assert_eq!(json["models"][0]["rows"][0]["delta_vs_control"], json!({}), "a base row has no control");
    }

    /// Does SI add anything once reconstruction runs? An SI + reconstruction row is also paired
    /// with the reconstruction row of its base (same reconstruction, no SI), and only with that
    /// one: a reconstruction of another configuration is not its counterpart.
    #[test]
    fn si_with_reconstruction_is_also_paired_with_reconstruction_alone() {
        let spec = SPEC.replace("max_windows = 64\n", "max_windows = 64\nseeds = [0, 1, 2]\n")
            + "\n[[rows]]\nid = \"wanda+recon1\"\nlabel = \"Wanda + reconstruction, 1 epoch\"\nmethod = \"wanda\"\nsparsity = 0.5\nreconstruct = { epochs = 1 }\nbase = \"wanda\"\n"
            + "\n[[rows]]\nid = \"wanda+recon\"\nlabel = \"Wanda + reconstruction\"\nmethod = \"wanda\"\nsparsity = 0.5\nreconstruct = { snl = \"none\" }\nbase = \"wanda\"\n"
            + "\n[[rows]]\nid = \"wanda+si+recon\"\nlabel = \"Wanda + SI + reconstruction\"\nmethod = \"wanda\"\nsparsity = 0.5\nsi = { stages = [\"feature\"] }\nreconstruct = { snl = \"none\" }\nbase = \"wanda\"\n";
        let t = crate::spec::parse(&spec).unwrap();
        let seeds = |f: &dyn Fn(f64) -> f64| (0..3).map(|s| run(Some(s), vec![Some(f(10.0 + 2.0 * s as f64)), None])).collect::<Vec<_>>();
        let rows = vec![
            row("wanda", "Wanda", seeds(&|v| v)),
            row("wanda+si", "Wanda + SI", seeds(&|v| 0.98 * v)),
            row("wanda+recon1", "Wanda + reconstruction, 1 epoch", seeds(&|v| 0.95 * v)),
            row("wanda+recon", "Wanda + reconstruction", seeds(&|v| 0.9 * v)),
            // 0.9 * 1.01, 0.9 * 1.02, 0.9 * 1.03 of the base: +1%, +2%, +3% against reconstruction.
            row(
                "wanda+si+recon",
                "Wanda + SI + reconstruction",
                (0..3).map(|s| run(Some(s), vec![Some(0.9 * (1.01 + 0.01 * s as f64) * (10.0 + 2.0 * s as f64)), None])).collect(),
            ),
        ];
        let figures = Figures { models: vec![ModelFigures { id: "m".into(), label: "Model M".into(), rows }], pending: 0 };
        let md = markdown(&t, t.profile("cpu").unwrap(), &figures, &fp());
        let line = md
            .lines()
            .find(|l| l.contains("against Wanda + reconstruction (what SI adds to reconstruction)"))
            .unwrap_or_else(|| panic!("{md}"));
        assert!(
            line.starts_with("- Model M / Wanda + SI + reconstruction against")
                && line.contains("+2.0% [-0.5, +4.5]")
                && line.ends_with("**within noise**"),
            "{line}"
        );
        assert_eq!(md.matches("what SI adds to reconstruction").count(), 1, "{md}");
        let json = to_json(&t, t.profile("cpu").unwrap(), &figures, &fp());
        let d = &json["models"][0]["rows"][4]["delta_vs_reconstruction"]["w"];
        assert_eq!(d["reconstruction"], "wanda+recon");
        let per_seed: Vec<f64> = d["per_seed"].as_array().unwrap().iter().map(|x| x["delta"].as_f64().unwrap()).collect();
        assert!(per_seed.iter().zip([1.0, 2.0, 3.0]).all(|(a, b)| (a - b).abs() < 1e-9), "{per_seed:?}");
        for i in 0..4 {
            assert_eq!(json["models"][0]["rows"][i]["delta_vs_reconstruction"], json!({}), "row {i} has no reconstruction counterpart");
        }
    }

    /// A row run under one seed (where its difference is large against the seed spread) has no
    /// interval: its pair is listed as one seed, with no verdict, and the caption says rows ask
    /// for different numbers of seeds.
    #[test]
    fn a_one_seed_pair_is_listed_without_a_verdict() {
        let spec = SPEC
            .replace("max_windows = 64\n", "max_windows = 64\nseeds = [0, 1, 2]\n")
            .replace("si = { stages = [\"feature\"] }\n", "si = { stages = [\"feature\"] }\n        seeds = [0]\n");
        let t = crate::spec::parse(&spec).unwrap();
        let base = row("wanda", "Wanda", (0..3).map(|s| run(Some(s), vec![Some(10.0 + s as f64), None])).collect());
        let si = row("wanda+si", "Wanda + SI", vec![run(Some(0), vec![Some(5.0), None])]);
        let figures = Figures { models: vec![ModelFigures { id: "m".into(), label: "Model M".into(), rows: vec![base, si] }], pending: 0 };
        let md = markdown(&t, t.profile("cpu").unwrap(), &figures, &fp());
        assert!(md.contains("- Model M / Wanda + SI against Wanda, W: -50.0% (1 seed): **one seed**\n"), "{md}");
        assert!(md.contains("over the calibration seeds finished (1 to 3 asked for, by row)"), "{md}");
        assert!(!md.contains("**helps**"), "{md}");
        // Every row asking for the same seeds of its own: that count, not the profile's.
        let spec = SPEC.replace("sparsity = 0.5\n", "sparsity = 0.5\n        seeds = [0, 1, 2]\n");
        let t = crate::spec::parse(&spec).unwrap();
        let md = markdown(&t, t.profile("cpu").unwrap(), &figures, &fp());
        assert!(md.contains("over the calibration seeds finished (3 asked for)"), "{md}");
    }

    #[test]
    fn t_quantiles_are_the_tabulated_ones() {
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(4), 2.776);
        assert_eq!(t975(30), 2.042);
        assert!(t975(0).is_infinite());
    }
}
