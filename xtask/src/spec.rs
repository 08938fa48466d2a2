//! The paper's tables as data: `eval/tables/<table>.toml`, parsed in two stages.
//!
//! A spec file is deserialized into raw serde structs that mirror the TOML, then resolved into a
//! [`Table`] with no `Option`s left where the runner needs a value: methods and patterns become
//! enums, columns become [`Measure`]s, each profile gets its full budget. Every error names the
//! spec file and the field or value at fault. [`Table::runs`] expands one profile into the
//! [`Run`]s the runner executes: one `spindle prune` (none for the dense row) and one
//! `spindle eval` per model × row, each argument spelled out, so that the cache key of a run is a
//! hash of exactly what is executed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The folder of the table specs, relative to the workspace root.
pub(crate) const TABLES_DIR: &str = "eval/tables";

// ---------------------------------------------------------------------------------------------
// Raw: the TOML as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: String,
    version: u32,
    title: String,
    #[serde(default)]
    notes: Vec<String>,
    columns: Vec<RawColumn>,
    #[serde(default)]
    mean: bool,
    tolerance: RawTolerance,
    profiles: BTreeMap<String, RawProfile>,
    rows: Vec<RawRow>,
    #[serde(default)]
    reference: Vec<RawReference>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    id: String,
    label: String,
    ppl: Option<String>,
    task: Option<String>,
    metric: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTolerance {
    ppl_rel: f64,
    acc_abs: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    description: String,
    models: Vec<RawModel>,
    calib: Option<String>,
    nsamples: usize,
    seqlen: usize,
    #[serde(default)]
    seed: u64,
    max_windows: Option<usize>,
    limit: Option<usize>,
    #[serde(default = "one")]
    batch_size: usize,
    #[serde(default)]
    si_args: Vec<String>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: String,
    label: String,
    source: String,
    seqlen: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    id: String,
    label: String,
    method: String,
    sparsity: Option<f64>,
    pattern: Option<String>,
    si: Option<RawSi>,
    base: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSi {
    stages: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReference {
    model: String,
    row: String,
    column: String,
    value: f64,
    source: String,
}

// ---------------------------------------------------------------------------------------------
// Resolved.

/// What a column measures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Measure {
    /// Perplexity on a corpus (`spindle eval --ppl`).
    Ppl { corpus: String },
    /// A zero-shot task's metric, reported in percent.
    Task { task: String, metric: Metric },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Metric {
    Acc,
    AccNorm,
}

impl Metric {
    pub(crate) fn key(self) -> &'static str {
        match self {
            Metric::Acc => "acc",
            Metric::AccNorm => "acc_norm",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub id: String,
    pub label: String,
    pub measure: Measure,
}

/// The pruning method of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Method {
    Dense,
    Magnitude,
    Wanda,
    SparseGpt,
    Ria,
}

impl Method {
    fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "dense" => Method::Dense,
            "magnitude" => Method::Magnitude,
            "wanda" => Method::Wanda,
            "sparsegpt" => Method::SparseGpt,
            "ria" => Method::Ria,
            _ => return None,
        })
    }

    fn flag(self) -> &'static str {
        match self {
            Method::Dense => "dense",
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
            Method::SparseGpt => "sparsegpt",
            Method::Ria => "ria",
        }
    }
}

/// The sparsity pattern of a pruned row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Pattern {
    Unstructured { sparsity: f64 },
    NM { n: usize, m: usize },
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Unstructured { sparsity } => write!(f, "{}% unstructured", sparsity * 100.0),
            Pattern::NM { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

/// An induction stage, as `spindle --induce` names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stage {
    Distribution,
    EquivalentSnl,
    Feature,
}

impl Stage {
    fn parse(s: &str) -> Option<Stage> {
        Some(match s {
            "distribution" => Stage::Distribution,
            "equivalent-snl" => Stage::EquivalentSnl,
            "feature" => Stage::Feature,
            _ => return None,
        })
    }

    fn flag(self) -> &'static str {
        match self {
            Stage::Distribution => "distribution",
            Stage::EquivalentSnl => "equivalent-snl",
            Stage::Feature => "feature",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Si {
    pub stages: Vec<Stage>,
    /// Further `spindle prune` induction flags of this row (an ablation's variant).
    pub args: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub id: String,
    pub label: String,
    pub method: Method,
    /// `None` exactly for the dense row.
    pub pattern: Option<Pattern>,
    pub si: Option<Si>,
    /// The row this one is compared with (its delta is shown beside each cell).
    pub base: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Model {
    pub id: String,
    pub label: String,
    /// A known name of `spindle` (`smollm2-135m`) or a directory; `${VAR}` is expanded.
    pub source: String,
    pub seqlen: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub name: String,
    pub description: String,
    pub models: Vec<Model>,
    pub calib: String,
    pub nsamples: usize,
    pub seed: u64,
    pub max_windows: Option<usize>,
    pub limit: Option<usize>,
    pub batch_size: usize,
    pub si_args: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Tolerance {
    /// Relative tolerance of a perplexity cell.
    pub ppl_rel: f64,
    /// Absolute tolerance of an accuracy cell, in percentage points.
    pub acc_abs: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct Reference {
    pub model: String,
    pub row: String,
    pub column: String,
    pub value: f64,
    pub source: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub name: String,
    pub version: u32,
    pub title: String,
    pub notes: Vec<String>,
    pub columns: Vec<Column>,
    pub mean: bool,
    pub tolerance: Tolerance,
    pub profiles: BTreeMap<String, Profile>,
    pub rows: Vec<Row>,
    pub references: Vec<Reference>,
}

/// The path of a table's spec.
pub(crate) fn spec_path(root: &Path, table: &str) -> PathBuf {
    root.join(TABLES_DIR).join(format!("{table}.toml"))
}

/// The names of every table spec in `eval/tables`, sorted.
pub(crate) fn table_names(root: &Path) -> Result<Vec<String>> {
    let dir = root.join(TABLES_DIR);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_owned());
            }
    }
    names.sort();
    Ok(names)
}

/// Reads and resolves `eval/tables/<table>.toml`.
pub(crate) fn load(root: &Path, table: &str) -> Result<Table> {
    let path = spec_path(root, table);
    let text = std::fs::read_to_string(&path).with_context(|| {
        let known = table_names(root).map(|n| n.join(", ")).unwrap_or_default();
        format!("no table spec {} (the specs are: {known})", path.display())
    })?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

pub(crate) fn parse(text: &str) -> Result<Table> {
    let raw: RawTable = toml::from_str(text)?;
    resolve(raw)
}

fn resolve(raw: RawTable) -> Result<Table> {
    let mut columns = Vec::new();
    let mut ids = BTreeSet::new();
    for c in raw.columns {
        if !ids.insert(c.id.clone()) {
            bail!("column {:?} appears twice", c.id);
        }
        let measure = match (c.ppl, c.task, c.metric.as_deref()) {
            (Some(corpus), None, None) => Measure::Ppl { corpus },
            (None, Some(task), metric) => {
                let metric = match metric.unwrap_or("acc") {
                    "acc" => Metric::Acc,
                    "acc_norm" => Metric::AccNorm,
                    other => bail!("column {:?}: metric {other:?} is not acc or acc_norm", c.id),
                };
                Measure::Task { task, metric }
            }
            _ => bail!("column {:?} needs exactly one of `ppl = CORPUS` or `task = TASK` (with an optional metric)", c.id),
        };
        columns.push(Column { id: c.id, label: c.label, measure });
    }
    if columns.is_empty() {
        bail!("the table has no columns");
    }
    if raw.mean && !columns.iter().all(|c| matches!(c.measure, Measure::Task { .. })) {
        bail!("`mean = true` needs every column to be a task");
    }

    let mut rows: Vec<Row> = Vec::new();
    for r in raw.rows {
        if rows.iter().any(|o| o.id == r.id) {
            bail!("row {:?} appears twice", r.id);
        }
        let method = Method::parse(&r.method)
            .with_context(|| format!("row {:?}: unknown method {:?} (dense, magnitude, wanda, sparsegpt, ria)", r.id, r.method))?;
        let pattern = match (method, r.sparsity, r.pattern.as_deref()) {
            (Method::Dense, None, None) => None,
            (Method::Dense, _, _) => bail!("row {:?}: the dense row takes no sparsity or pattern", r.id),
            (_, Some(s), None) if s > 0.0 && s < 1.0 => Some(Pattern::Unstructured { sparsity: s }),
            (_, Some(s), None) => bail!("row {:?}: sparsity {s} is not in (0, 1)", r.id),
            (_, None, Some(p)) => Some(parse_nm(p).with_context(|| format!("row {:?}", r.id))?),
            _ => bail!("row {:?}: give exactly one of `sparsity` or `pattern`", r.id),
        };
        let si = match r.si {
            None => None,
            Some(si) => {
                if method == Method::Dense {
                    bail!("row {:?}: induction needs a pruning method (it is pruner-aware)", r.id);
                }
                let stages = si
                    .stages
                    .iter()
                    .map(|s| Stage::parse(s).with_context(|| format!("row {:?}: unknown stage {s:?} (distribution, equivalent-snl, feature)", r.id)))
                    .collect::<Result<Vec<_>>>()?;
                if stages.is_empty() {
                    bail!("row {:?}: `si.stages` is empty (leave `si` out for no induction)", r.id);
                }
                Some(Si { stages, args: si.args })
            }
        };
        rows.push(Row { id: r.id, label: r.label, method, pattern, si, base: r.base });
    }
    for r in &rows {
        if let Some(b) = &r.base
            && !rows.iter().any(|o| &o.id == b) {
                bail!("row {:?}: base {b:?} is not a row of this table", r.id);
            }
    }

    let mut profiles = BTreeMap::new();
    for (name, p) in raw.profiles {
        if p.models.is_empty() {
            bail!("profile {name}: no models");
        }
        if p.nsamples == 0 || p.seqlen == 0 || p.batch_size == 0 {
            bail!("profile {name}: nsamples, seqlen and batch_size must be at least 1");
        }
        let models = p
            .models
            .into_iter()
            .map(|m| Model { seqlen: m.seqlen.unwrap_or(p.seqlen), id: m.id, label: m.label, source: m.source })
            .collect();
        profiles.insert(
            name.clone(),
            Profile {
                name,
                description: p.description,
                models,
                calib: p.calib.unwrap_or_else(|| "c4".to_owned()),
                nsamples: p.nsamples,
                seed: p.seed,
                max_windows: p.max_windows,
                limit: p.limit,
                batch_size: p.batch_size,
                si_args: p.si_args,
            },
        );
    }
    for needed in ["cpu", "paper"] {
        if !profiles.contains_key(needed) {
            bail!("the table has no `{needed}` profile");
        }
    }

    let mut references = Vec::new();
    for r in raw.reference {
        if !rows.iter().any(|o| o.id == r.row) {
            bail!("reference: row {:?} is not a row of this table", r.row);
        }
        if !columns.iter().any(|c| c.id == r.column) {
            bail!("reference: column {:?} is not a column of this table", r.column);
        }
        if !profiles.values().any(|p| p.models.iter().any(|m| m.id == r.model)) {
            bail!("reference: model {:?} is in no profile", r.model);
        }
        references.push(Reference { model: r.model, row: r.row, column: r.column, value: r.value, source: r.source });
    }
    let tolerance = Tolerance { ppl_rel: raw.tolerance.ppl_rel, acc_abs: raw.tolerance.acc_abs };
    Ok(Table { name: raw.name, version: raw.version, title: raw.title, notes: raw.notes, columns, mean: raw.mean, tolerance, profiles, rows, references })
}

fn parse_nm(p: &str) -> Result<Pattern> {
    let bad = || format!("pattern {p:?} is not N:M with 0 < N < M (e.g. \"2:4\")");
    let (n, m) = p.split_once(':').with_context(bad)?;
    let (n, m): (usize, usize) = (n.trim().parse().with_context(bad)?, m.trim().parse().with_context(bad)?);
    if n == 0 || n >= m {
        bail!(bad());
    }
    Ok(Pattern::NM { n, m })
}

// ---------------------------------------------------------------------------------------------
// Expansion into runs.

/// One cell row of a table for one model: the commands that produce its figures.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub model: Model,
    pub row: Row,
    /// `spindle prune` arguments after the subcommand, without `--out`/`--json`; `None` for dense.
    pub prune: Option<Vec<String>>,
    /// `spindle eval` arguments after the subcommand, without `--model`/`--json`.
    pub eval: Vec<String>,
}

impl Table {
    pub(crate) fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).with_context(|| {
            format!("table {} has no profile {name:?} (it has: {})", self.name, self.profiles.keys().cloned().collect::<Vec<_>>().join(", "))
        })
    }

    pub(crate) fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }

    /// The runs of `profile`, models outermost, rows in the spec's order.
    pub(crate) fn runs(&self, profile: &Profile) -> Vec<Run> {
        let mut ppl = Vec::new();
        let mut tasks = Vec::new();
        for c in &self.columns {
            match &c.measure {
                Measure::Ppl { corpus } if !ppl.contains(corpus) => ppl.push(corpus.clone()),
                Measure::Task { task, .. } if !tasks.contains(task) => tasks.push(task.clone()),
                _ => {}
            }
        }
        let mut runs = Vec::new();
        for model in &profile.models {
            let mut eval = Vec::new();
            if !ppl.is_empty() {
                eval.extend(["--ppl".to_owned(), ppl.join(","), "--seqlen".to_owned(), model.seqlen.to_string()]);
                if let Some(k) = profile.max_windows {
                    eval.extend(["--max-windows".to_owned(), k.to_string()]);
                }
            }
            if !tasks.is_empty() {
                eval.extend(["--tasks".to_owned(), tasks.join(",")]);
                if let Some(n) = profile.limit {
                    eval.extend(["--limit".to_owned(), n.to_string()]);
                }
            }
            eval.extend(["--batch-size".to_owned(), profile.batch_size.to_string()]);
            for row in &self.rows {
                let prune = row.pattern.map(|pattern| {
                    let mut a = vec!["--method".to_owned(), row.method.flag().to_owned()];
                    match pattern {
                        Pattern::Unstructured { sparsity } => a.extend(["--sparsity".to_owned(), sparsity.to_string()]),
                        Pattern::NM { n, m } => a.extend(["--pattern".to_owned(), format!("{n}:{m}")]),
                    }
                    a.extend(["--calib".to_owned(), profile.calib.clone()]);
                    a.extend(["--nsamples".to_owned(), profile.nsamples.to_string()]);
                    a.extend(["--seqlen".to_owned(), model.seqlen.to_string()]);
                    a.extend(["--seed".to_owned(), profile.seed.to_string()]);
                    if let Some(si) = &row.si {
                        let stages: Vec<&str> = si.stages.iter().map(|s| s.flag()).collect();
                        a.extend(["--induce".to_owned(), stages.join(",")]);
                        a.extend(profile.si_args.iter().cloned());
                        a.extend(si.args.iter().cloned());
                    }
                    a
                });
                runs.push(Run { model: model.clone(), row: row.clone(), prune, eval: eval.clone() });
            }
        }
        runs
    }
}

/// `source` with `${VAR}` replaced by the environment's value; an unset variable is an error
/// naming it.
pub(crate) fn expand_source(source: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = source;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').with_context(|| format!("model source {source:?}: unclosed ${{"))?;
        let var = &after[..end];
        let value = std::env::var(var).ok().filter(|v| !v.is_empty()).with_context(|| {
            format!("model source {source:?} needs the environment variable {var} (the folder holding the paper's checkpoints)")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        crate::project_root()
    }

    #[test]
    fn every_committed_spec_resolves_and_expands_in_both_profiles() {
        let names = table_names(&root()).unwrap();
        assert_eq!(names, ["table1", "table2", "table3", "table4"]);
        for name in names {
            let t = load(&root(), &name).unwrap();
            assert_eq!(t.name, name);
            for profile in ["cpu", "paper"] {
                let p = t.profile(profile).unwrap();
                let runs = t.runs(p);
                assert_eq!(runs.len(), p.models.len() * t.rows.len(), "{name} {profile}");
                for run in &runs {
                    assert_eq!(run.prune.is_none(), run.row.method == Method::Dense);
                }
            }
        }
    }

    #[test]
    fn table2_cpu_profile_is_the_default_model_and_six_tasks() {
        let t = load(&root(), "table2").unwrap();
        let p = t.profile("cpu").unwrap();
        assert_eq!(p.models.len(), 1);
        assert_eq!(p.models[0].source, "smollm2-135m");
        let tasks: Vec<_> = t.columns.iter().filter_map(|c| if let Measure::Task { task, .. } = &c.measure { Some(task.as_str()) } else { None }).collect();
        assert_eq!(tasks, ["piqa", "arc_easy", "arc_challenge", "boolq", "hellaswag", "winogrande"]);
        assert!(t.mean);
    }

    const MINI: &str = r#"
        name = "t"
        version = 1
        title = "t"
        columns = [{ id = "w", label = "W", ppl = "wikitext2" }]
        tolerance = { ppl_rel = 0.01, acc_abs = 1.0 }
        [profiles.cpu]
        description = "d"
        models = [{ id = "m", label = "M", source = "smollm2-135m" }]
        nsamples = 8
        seqlen = 512
        max_windows = 4
        si_args = ["--feature-epochs", "1"]
        [profiles.paper]
        description = "d"
        models = [{ id = "m", label = "M", source = "${SPINDLE_TEST_UNSET_VAR}/m", seqlen = 2048 }]
        nsamples = 128
        seqlen = 2048
        [[rows]]
        id = "dense"
        label = "Dense"
        method = "dense"
        [[rows]]
        id = "w24"
        label = "Wanda 2:4"
        method = "wanda"
        pattern = "2:4"
        si = { stages = ["distribution", "feature"], args = ["--snl", "nuclear"] }
    "#;

    #[test]
    fn runs_spell_out_every_argument() {
        let t = parse(MINI).unwrap();
        let runs = t.runs(t.profile("cpu").unwrap());
        assert_eq!(runs[0].prune, None);
        assert_eq!(runs[0].eval, ["--ppl", "wikitext2", "--seqlen", "512", "--max-windows", "4", "--batch-size", "1"]);
        assert_eq!(
            runs[1].prune.as_deref().unwrap(),
            [
                "--method", "wanda", "--pattern", "2:4", "--calib", "c4", "--nsamples", "8", "--seqlen", "512", "--seed", "0", "--induce",
                "distribution,feature", "--feature-epochs", "1", "--snl", "nuclear"
            ]
        );
    }

    #[test]
    fn bad_specs_name_the_field_at_fault() {
        let err = |from: &str, to: &str| format!("{:#}", parse(&MINI.replace(from, to)).unwrap_err());
        assert!(err("pattern = \"2:4\"", "pattern = \"4:2\"").contains("pattern \"4:2\" is not N:M"), "{}", err("pattern = \"2:4\"", "pattern = \"4:2\""));
        assert!(err("method = \"wanda\"", "method = \"wandaa\"").contains("row \"w24\": unknown method \"wandaa\""));
        assert!(err("\"distribution\", \"feature\"", "\"distributio\"").contains("unknown stage \"distributio\""));
        assert!(err("[profiles.paper]", "[profiles.gpu]").contains("no `paper` profile"));
        assert!(err("ppl = \"wikitext2\"", "task = \"piqa\", metric = \"f1\"").contains("metric \"f1\""));
    }

    #[test]
    fn unset_source_variables_are_named() {
        let e = format!("{:#}", expand_source("${SPINDLE_TEST_UNSET_VAR}/m").unwrap_err());
        assert!(e.contains("SPINDLE_TEST_UNSET_VAR"), "{e}");
        assert_eq!(expand_source("smollm2-135m").unwrap(), "smollm2-135m");
    }
}
