//! A table rendered from the run cache: Markdown laid out like the paper's table, JSON, CSV.
//!
//! Cells of a row with a `base` carry their change against it (perplexity in percent, accuracy
//! in points); cells with a published reference carry it and their difference from it. A run not
//! finished yet is an empty cell, and the caption says how many are pending. Nothing here
//! depends on the clock, so a finished table renders to the same bytes every time.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::reproduce::{Fingerprint, Planned, output_stem};
use crate::spec::{Measure, Pattern, Profile, Table};

/// A table's figures: per model, per row, per column.
pub(crate) struct Figures {
    pub models: Vec<ModelFigures>,
    pub pending: usize,
}

pub(crate) struct ModelFigures {
    pub id: String,
    pub label: String,
    pub rows: Vec<RowFigures>,
}

pub(crate) struct RowFigures {
    pub id: String,
    pub label: String,
    pub key: Option<String>,
    pub values: Vec<Option<f64>>,
}

impl RowFigures {
    fn mean(&self) -> Option<f64> {
        let v: Option<Vec<f64>> = self.values.iter().copied().collect();
        v.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
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
        let values = table.columns.iter().map(|c| finished.as_ref().and_then(|f| f["figures"][&c.id].as_f64())).collect();
        let row = RowFigures { id: p.run.row.id.clone(), label: p.run.row.label.clone(), key: p.key.clone(), values };
        match models.iter_mut().find(|m| m.id == p.run.model.id) {
            Some(m) => m.rows.push(row),
            None => models.push(ModelFigures { id: p.run.model.id.clone(), label: p.run.model.label.clone(), rows: vec![row] }),
        }
    }
    Figures { models, pending }
}

fn is_ppl(m: &Measure) -> bool {
    matches!(m, Measure::Ppl { .. })
}

/// The change of `v` against `base`: relative for perplexity, in points for accuracy.
fn delta(ppl: bool, v: f64, base: f64) -> String {
    if ppl { format!("{:+.1}%", (v / base - 1.0) * 100.0) } else { format!("{:+.2}", v - base) }
}

fn budget(profile: &Profile, table: &Table) -> String {
    let mut parts = vec![format!(
        "calibration {} × {} tokens of {} (seed {})",
        profile.nsamples,
        profile.models.first().map_or(0, |m| m.seqlen),
        profile.calib,
        profile.seed
    )];
    if table.columns.iter().any(|c| is_ppl(&c.measure)) {
        parts.push(match profile.max_windows {
            Some(k) => format!("perplexity over the first {k} windows of each corpus"),
            None => "perplexity over every window".to_owned(),
        });
    }
    if table.columns.iter().any(|c| !is_ppl(&c.measure)) {
        parts.push(match profile.limit {
            Some(n) => format!("the first {n} items of each task"),
            None => "every item of each task".to_owned(),
        });
    }
    if !profile.si_args.is_empty() {
        parts.push(format!("SI rows add `{}`", profile.si_args.join(" ")));
    }
    parts.join("; ")
}

pub(crate) fn markdown(table: &Table, profile: &Profile, figures: &Figures, fp: &Fingerprint) -> String {
    let mut s = format!("# {}: {}\n\n", table.name, table.title);
    let cmd = if profile.name == "cpu" {
        format!("cargo xtask reproduce {}", table.name)
    } else {
        format!("cargo xtask reproduce {} --profile {}", table.name, profile.name)
    };
    s += &format!(
        "Written by `{cmd}` (spec `eval/tables/{}.toml` v{}, profile `{}`: {}). Budget: {}. Code {}, data {}.\n\n",
        table.name,
        table.version,
        profile.name,
        profile.description,
        budget(profile, table),
        &fp.code_version[..12],
        &fp.data_hash[..12]
    );
    if figures.pending > 0 {
        s += &format!("**Incomplete:** {} run(s) not finished; their cells are empty.\n\n", figures.pending);
    }
    let mut sources: Vec<String> = Vec::new();
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
            s += &format!("| {} |", r.label);
            for (i, c) in table.columns.iter().enumerate() {
                let ppl = is_ppl(&c.measure);
                let mut cell = match r.values[i] {
                    Some(v) => format!("{v:.2}"),
                    None => String::new(),
                };
                if let (Some(v), Some(b)) = (r.values[i], base.and_then(|b| b.values[i])) {
                    cell += &format!(" ({})", delta(ppl, v, b));
                }
                if let Some(rf) = table.references.iter().find(|x| x.model == m.id && x.row == r.id && x.column == c.id) {
                    cell += &format!(" [ref {}", rf.value);
                    if let Some(v) = r.values[i] {
                        cell += &format!(", {}", delta(ppl, v, rf.value));
                    }
                    cell += "]";
                    if !sources.contains(&rf.source) {
                        sources.push(rf.source.clone());
                    }
                }
                s += &format!(" {cell} |");
            }
            if table.mean {
                let mut cell = r.mean().map(|v| format!("{v:.2}")).unwrap_or_default();
                if let (Some(v), Some(b)) = (r.mean(), base.and_then(RowFigures::mean)) {
                    cell += &format!(" ({})", delta(false, v, b));
                }
                s += &format!(" {cell} |");
            }
            s += "\n";
        }
        s += "\n";
    }
    s += "Rows marked + SI induce sparsity before pruning; the figure in parentheses is the change against the row without it";
    s += if table.columns.iter().any(|c| is_ppl(&c.measure)) { " (perplexity: relative; accuracy: points)" } else { " (points)" };
    s += ".";
    if !sources.is_empty() {
        s += &format!(" [ref …] cells are published figures for the same model and protocol: {}.", sources.join("; "));
    }
    s += "\n";
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
                    let cells: serde_json::Map<String, Value> = table.columns.iter().zip(&r.values).map(|(c, v)| (c.id.clone(), json!(v))).collect();
                    json!({
                        "id": r.id, "label": r.label, "run": r.key, "base": row.and_then(|x| x.base.clone()),
                        "pattern": row.and_then(|x| x.pattern).map(|p: Pattern| p.to_string()),
                        "figures": cells, "mean": if table.mean { json!(r.mean()) } else { Value::Null },
                    })
                })
                .collect();
            json!({"id": m.id, "label": m.label, "rows": rows})
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
        "budget": budget(profile, table), "code_version": fp.code_version, "data_hash": fp.data_hash,
        "pending": figures.pending, "columns": columns, "models": models, "references": references,
        "tolerance": {"ppl_rel": table.tolerance.ppl_rel, "acc_abs": table.tolerance.acc_abs},
    })
}

pub(crate) fn to_csv(table: &Table, figures: &Figures) -> String {
    let mut s = String::from("model,row,column,value,reference\n");
    for m in &figures.models {
        for r in &m.rows {
            for (c, v) in table.columns.iter().zip(&r.values) {
                let rf = table.references.iter().find(|x| x.model == m.id && x.row == r.id && x.column == c.id).map(|x| x.value.to_string()).unwrap_or_default();
                s += &format!("{},{},{},{},{rf}\n", m.id, r.id, c.id, v.map(|v| v.to_string()).unwrap_or_default());
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
        // One temporary name per process: two runners of one table (`--only` split across
        // cores) may render it at the same moment, and each rename must find its own file.
        let tmp = stem.with_extension(format!("{ext}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
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

    fn row(id: &str, label: &str, values: Vec<Option<f64>>) -> RowFigures {
        RowFigures { id: id.into(), label: label.into(), key: Some(format!("key-{id}")), values }
    }

    #[test]
    fn cells_carry_their_change_against_the_base_row_and_the_reference() {
        let t = crate::spec::parse(SPEC).unwrap();
        let figures = Figures {
            models: vec![ModelFigures {
                id: "m".into(),
                label: "Model M".into(),
                rows: vec![row("wanda", "Wanda", vec![Some(11.0), Some(20.0)]), row("wanda+si", "Wanda + SI", vec![Some(9.9), None])],
            }],
            pending: 1,
        };
        let fp = Fingerprint { data_dir: "/d".into(), data_hash: "d".repeat(64), code_version: "c".repeat(64) };
        let md = markdown(&t, t.profile("cpu").unwrap(), &figures, &fp);
        assert!(md.starts_with("# t: a title\n"), "{md}");
        assert!(md.contains("Budget: calibration 8 × 512 tokens of c4 (seed 0); perplexity over the first 64 windows of each corpus."), "{md}");
        assert!(md.contains("**Incomplete:** 1 run(s) not finished"), "{md}");
        assert!(md.contains("| Wanda | 11.00 [ref 10, +10.0%] | 20.00 |\n"), "{md}");
        assert!(md.contains("| Wanda + SI | 9.90 (-10.0%) |  |\n"), "{md}");
        assert!(md.contains("a paper"), "{md}");
        let csv = to_csv(&t, &figures);
        assert_eq!(csv, "model,row,column,value,reference\nm,wanda,w,11,10\nm,wanda,c,20,\nm,wanda+si,w,9.9,\nm,wanda+si,c,,\n");
        let json = to_json(&t, t.profile("cpu").unwrap(), &figures, &fp);
        assert_eq!(json["models"][0]["rows"][1]["figures"]["c"], Value::Null);
        assert_eq!(json["models"][0]["rows"][1]["base"], "wanda");
        assert_eq!(json["pending"], 1);
    }
}
