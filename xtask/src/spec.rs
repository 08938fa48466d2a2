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
use spindle_recipe::Recipe;

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
    figure: Option<RawFigure>,
}

/// A PNG beside the table: one panel per pruning method, the column's value (log scale) against
/// the rows' sparsity patterns in spec order, one line per row family, error bars of ± one sd
/// where a row has several seeds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFigure {
    column: String,
    title: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    id: String,
    label: String,
    ppl: Option<String>,
    task: Option<String>,
    metric: Option<String>,
    /// Perplexity over only the first K windows (overrides the profile's `max_windows`);
    /// `0` means every window.
    max_windows: Option<usize>,
    /// Evaluate this column only for these calibration seeds (e.g. the full protocol on seed 0).
    seeds: Option<Vec<u64>>,
    /// Show the task's majority-class share as a baseline (tasks whose gold labels are classes).
    #[serde(default)]
    majority: bool,
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
    /// Several calibration seeds: every run that draws calibration windows runs once per seed,
    /// and cells show the mean ± sd (overrides `seed`).
    seeds: Option<Vec<u64>>,
    max_windows: Option<usize>,
    limit: Option<usize>,
    #[serde(default = "one")]
    batch_size: usize,
    /// Recipe fields every row with induction adds (e.g. `induce.feature.epochs = 1`).
    si_recipe: Option<Recipe>,
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
    reconstruct: Option<RawReconstruct>,
    base: Option<String>,
    /// Calibration windows as a multiple of the profile's `nsamples` (the "just more data"
    /// control row).
    nsamples_factor: Option<usize>,
    /// This row's calibration seeds, overriding the profile's (e.g. seeds only where one seed
    /// cannot tell a difference from noise).
    seeds: Option<Vec<u64>>,
    /// Further recipe fields of this row (an ablation's variant), over everything else.
    recipe: Option<Recipe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSi {
    stages: Vec<String>,
    pruning_aware: Option<String>,
    snl: Option<String>,
    snl_lambda: Option<f64>,
    feature_epochs: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReconstruct {
    snl: Option<String>,
    snl_lambda: Option<f64>,
    epochs: Option<usize>,
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
    /// Perplexity windows: `Some(0)` every window, `Some(k)` the first k, `None` the profile's.
    pub max_windows: Option<usize>,
    /// Only runs of these calibration seeds evaluate this column (`None`: every run).
    pub seeds: Option<Vec<u64>>,
    pub majority: bool,
}

impl Column {
    /// Whether a run of `seed` (`None`: a run that draws no calibration, which stands for every
    /// seed) evaluates this column.
    pub(crate) fn applies_to(&self, seed: Option<u64>) -> bool {
        match (&self.seeds, seed) {
            (Some(seeds), Some(s)) => seeds.contains(&s),
            _ => true,
        }
    }
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
    Shift,
}

impl Stage {
    fn parse(s: &str) -> Option<Stage> {
        Some(match s {
            "distribution" => Stage::Distribution,
            "equivalent-snl" => Stage::EquivalentSnl,
            "feature" => Stage::Feature,
            "shift" => Stage::Shift,
            _ => return None,
        })
    }

    fn flag(self) -> &'static str {
        match self {
            Stage::Distribution => "distribution",
            Stage::EquivalentSnl => "equivalent-snl",
            Stage::Feature => "feature",
            Stage::Shift => "shift",
        }
    }
}

/// The SNL choices of `spindle --snl` / `--recon-snl`.
const SNLS: [&str; 4] = ["nuclear", "spectral-frobenius", "spectral-energy", "none"];

#[derive(Debug, Clone)]
pub(crate) struct Si {
    pub stages: Vec<Stage>,
    /// `off` or `mask` (the feature stage's `--pruning-aware`).
    pub pruning_aware: Option<String>,
    pub snl: Option<String>,
    pub snl_lambda: Option<f64>,
    pub feature_epochs: Option<usize>,
}

/// Reconstruction after pruning (`spindle prune --reconstruct`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reconstruct {
    pub snl: Option<String>,
    pub snl_lambda: Option<f64>,
    pub epochs: Option<usize>,
}

/// What a row is, for labels and for the evidence's three families of rows: a base pruner,
/// induction before pruning, reconstruction after it, both, or the base pruner with more
/// calibration data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Dense,
    Base,
    Si,
    Reconstruction,
    SiReconstruction,
    MoreData,
}

impl Family {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::Dense => "dense",
            Family::Base => "base",
            Family::Si => "si",
            Family::Reconstruction => "reconstruction",
            Family::SiReconstruction => "si+reconstruction",
            Family::MoreData => "more-data",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub id: String,
    pub label: String,
    pub method: Method,
    /// `None` exactly for the dense row.
    pub pattern: Option<Pattern>,
    pub si: Option<Si>,
    pub reconstruct: Option<Reconstruct>,
    /// The row this one is compared with (its delta is shown beside each cell).
    pub base: Option<String>,
    /// Calibration windows as a multiple of the profile's.
    pub nsamples_factor: usize,
    /// Seeds overriding the profile's for this row.
    pub seeds: Option<Vec<u64>>,
    /// Further recipe fields of this row, over everything else.
    pub recipe: Option<Recipe>,
}

impl Row {
    pub(crate) fn family(&self) -> Family {
        match (self.method, &self.si, &self.reconstruct) {
            (Method::Dense, ..) => Family::Dense,
            (_, Some(_), Some(_)) => Family::SiReconstruction,
            (_, Some(_), None) => Family::Si,
            (_, None, Some(_)) => Family::Reconstruction,
            (_, None, None) if self.nsamples_factor > 1 => Family::MoreData,
            (_, None, None) => Family::Base,
        }
    }

    /// Whether its prune draws calibration windows (so its figures depend on the seed).
    /// Magnitude without induction or reconstruction reads no data.
    pub(crate) fn uses_calibration(&self) -> bool {
        match self.method {
            Method::Dense => false,
            Method::Magnitude => self.si.is_some() || self.reconstruct.is_some(),
            _ => true,
        }
    }
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
    /// The calibration seeds, at least one.
    pub seeds: Vec<u64>,
    pub max_windows: Option<usize>,
    pub limit: Option<usize>,
    pub batch_size: usize,
    /// Recipe fields every row with induction adds.
    pub si_recipe: Option<Recipe>,
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
pub(crate) struct Figure {
    /// The column plotted.
    pub column: String,
    pub title: String,
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
    pub figure: Option<Figure>,
}

/// The path of a table's spec.
/// `eval/tables/<table>.toml`, or `table` itself where it names a `.toml` file (a spec of your
/// own).
pub(crate) fn spec_path(root: &Path, table: &str) -> PathBuf {
    if table.ends_with(".toml") { PathBuf::from(table) } else { root.join(TABLES_DIR).join(format!("{table}.toml")) }
}

/// The names of every table spec in `eval/tables`, sorted.
pub(crate) fn table_names(root: &Path) -> Result<Vec<String>> {
    let dir = root.join(TABLES_DIR);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
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
        if c.max_windows.is_some() && !matches!(measure, Measure::Ppl { .. }) {
            bail!("column {:?}: `max_windows` applies to perplexity columns", c.id);
        }
        if c.majority && !matches!(measure, Measure::Task { .. }) {
            bail!("column {:?}: `majority` applies to task columns", c.id);
        }
        if c.seeds.as_ref().is_some_and(Vec::is_empty) {
            bail!("column {:?}: `seeds` is empty (leave it out for every seed)", c.id);
        }
        columns.push(Column { id: c.id, label: c.label, measure, max_windows: c.max_windows, seeds: c.seeds, majority: c.majority });
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
                    .map(|s| {
                        Stage::parse(s)
                            .with_context(|| format!("row {:?}: unknown stage {s:?} (distribution, equivalent-snl, feature, shift)", r.id))
                    })
                    .collect::<Result<Vec<_>>>()?;
                if stages.is_empty() {
                    bail!("row {:?}: `si.stages` is empty (leave `si` out for no induction)", r.id);
                }
                if let Some(p) = &si.pruning_aware
                    && !["off", "mask"].contains(&p.as_str())
                {
                    bail!("row {:?}: si.pruning_aware {p:?} is not off or mask (training after pruning is `reconstruct`)", r.id);
                }
                if (si.pruning_aware.is_some() || si.snl.is_some() || si.snl_lambda.is_some() || si.feature_epochs.is_some())
                    && !stages.contains(&Stage::Feature)
                {
                    bail!(
                        "row {:?}: si.pruning_aware, snl, snl_lambda and feature_epochs are options of the feature stage, which `si.stages` lacks",
                        r.id
                    );
                }
                check_snl(&r.id, "si.snl", si.snl.as_deref())?;
                Some(Si {
                    stages,
                    pruning_aware: si.pruning_aware,
                    snl: si.snl,
                    snl_lambda: si.snl_lambda,
                    feature_epochs: si.feature_epochs,
                })
            }
        };
        let reconstruct = match r.reconstruct {
            None => None,
            Some(_) if method == Method::Dense => bail!("row {:?}: reconstruction needs a pruning method", r.id),
            Some(rc) => {
                check_snl(&r.id, "reconstruct.snl", rc.snl.as_deref())?;
                Some(Reconstruct { snl: rc.snl, snl_lambda: rc.snl_lambda, epochs: rc.epochs })
            }
        };
        let nsamples_factor = match r.nsamples_factor {
            None => 1,
            Some(0) => bail!("row {:?}: nsamples_factor must be at least 1", r.id),
            Some(_) if method == Method::Dense => bail!("row {:?}: the dense row draws no calibration", r.id),
            Some(f) => f,
        };
        if let Some(seeds) = &r.seeds
            && (seeds.is_empty() || seeds.iter().enumerate().any(|(i, x)| seeds[..i].contains(x)))
        {
            bail!("row {:?}: `seeds` must be distinct seeds, at least one", r.id);
        }
        rows.push(Row {
            id: r.id,
            label: r.label,
            method,
            pattern,
            si,
            reconstruct,
            base: r.base,
            nsamples_factor,
            seeds: r.seeds,
            recipe: r.recipe,
        });
    }
    for r in &rows {
        if let Some(b) = &r.base
            && !rows.iter().any(|o| &o.id == b)
        {
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
        let seeds = p.seeds.unwrap_or_else(|| vec![p.seed]);
        if seeds.is_empty() {
            bail!("profile {name}: `seeds` is empty");
        }
        if seeds.iter().enumerate().any(|(i, s)| seeds[..i].contains(s)) {
            bail!("profile {name}: a seed appears twice in {seeds:?}");
        }
        profiles.insert(
            name.clone(),
            Profile {
                name,
                description: p.description,
                models,
                calib: p.calib.unwrap_or_else(|| "c4".to_owned()),
                nsamples: p.nsamples,
                seeds,
                max_windows: p.max_windows,
                limit: p.limit,
                batch_size: p.batch_size,
                si_recipe: p.si_recipe,
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
    let figure = match raw.figure {
        None => None,
        Some(f) => {
            if !columns.iter().any(|c| c.id == f.column) {
                bail!("figure: column {:?} is not a column of this table", f.column);
            }
            Some(Figure { column: f.column, title: f.title })
        }
    };
    // Every run's recipe resolves as spindle will resolve it: a bad field fails here, naming the
    // row, before any run starts.
    for p in profiles.values() {
        for m in &p.models {
            for r in rows.iter().filter(|r| r.pattern.is_some()) {
                let seed = r.uses_calibration().then_some(0);
                let Some(pattern) = r.pattern else { continue };
                prune_recipe(p, m, r, pattern, seed)
                    .and_then(|recipe| recipe.resolve().map_err(anyhow::Error::from))
                    .with_context(|| format!("row {:?}, profile {}: its recipe", r.id, p.name))?;
            }
        }
    }
    Ok(Table {
        name: raw.name,
        version: raw.version,
        title: raw.title,
        notes: raw.notes,
        columns,
        mean: raw.mean,
        tolerance,
        profiles,
        rows,
        references,
        figure,
    })
}

fn check_snl(row: &str, field: &str, snl: Option<&str>) -> Result<()> {
    match snl {
        Some(s) if !SNLS.contains(&s) => bail!("row {row:?}: {field} {s:?} is not one of {}", SNLS.join(", ")),
        _ => Ok(()),
    }
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

/// One `spindle eval` of a run and the columns it provides.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Eval {
    /// `spindle eval` arguments after the subcommand, without `--model`/`--json`.
    pub args: Vec<String>,
    /// The ids of the columns whose figures it computes.
    pub columns: Vec<String>,
    /// Columns of the first `windows` windows of a corpus this evaluation reads whole: their
    /// perplexity comes from its per-window figures, with no evaluation of their own.
    pub derived: Vec<Derived>,
}

/// A perplexity column over the first `windows` windows, from an evaluation of every window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Derived {
    pub column: String,
    pub corpus: String,
    pub windows: usize,
}

/// One row of a table for one model and one calibration seed: the commands that produce its
/// figures.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub model: Model,
    pub row: Row,
    /// The calibration seed; `None` for a row that draws no calibration (the dense model,
    /// magnitude alone), whose one run stands for every seed.
    pub seed: Option<u64>,
    /// The recipe `spindle prune --recipe` runs (without the model and `--out`/`--json`); `None`
    /// for dense.
    pub prune: Option<Recipe>,
    /// One or more evaluations of the (pruned) model: one per distinct perplexity window count.
    pub evals: Vec<Eval>,
}

impl Table {
    pub(crate) fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).with_context(|| {
            format!(
                "table {} has no profile {name:?} (it has: {})",
                self.name,
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    pub(crate) fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }

    /// Whether the table reports several calibration seeds under `profile`.
    pub(crate) fn seeded(&self, profile: &Profile) -> bool {
        profile.seeds.len() > 1 || self.rows.iter().any(|r| r.seeds.as_ref().is_some_and(|s| s.len() > 1))
    }

    /// The evaluations a run of `seed` makes: perplexity columns grouped by their window count
    /// (one `spindle eval` each), the tasks with the first group.
    fn evals(&self, profile: &Profile, model: &Model, seed: Option<u64>) -> Vec<Eval> {
        let mut groups: Vec<(Option<usize>, Vec<&Column>)> = Vec::new();
        let mut tasks: Vec<&Column> = Vec::new();
        for c in self.columns.iter().filter(|c| c.applies_to(seed)) {
            match &c.measure {
                Measure::Ppl { .. } => {
                    let k = match c.max_windows.or(profile.max_windows) {
                        Some(0) | None => None,
                        Some(k) => Some(k),
                    };
                    match groups.iter_mut().find(|(g, _)| *g == k) {
                        Some((_, cs)) => cs.push(c),
                        None => groups.push((k, vec![c])),
                    }
                }
                Measure::Task { .. } => tasks.push(c),
            }
        }
        if groups.is_empty() && !tasks.is_empty() {
            groups.push((None, Vec::new()));
        }
        // A group of the first k windows whose corpora an all-window group also reads is taken
        // from that group's per-window figures: the same windows, batched alike (k a multiple of
        // the batch size), give the same figures bit for bit, one evaluation fewer.
        let corpus_of = |c: &Column| match &c.measure {
            Measure::Ppl { corpus } => Some(corpus.clone()),
            Measure::Task { .. } => None,
        };
        let mut derived_into: Vec<Vec<Derived>> = vec![Vec::new(); groups.len()];
        let whole = groups.iter().position(|(k, _)| k.is_none());
        if let Some(w) = whole {
            let read: Vec<String> = groups[w].1.iter().filter_map(|c| corpus_of(c)).collect();
            let mut k_groups = Vec::new();
            for (i, (k, cols)) in groups.iter().enumerate() {
                if let Some(k) = *k
                    && k % profile.batch_size == 0
                    && cols.iter().all(|c| corpus_of(c).is_some_and(|corpus| read.contains(&corpus)))
                {
                    for c in cols {
                        if let Some(corpus) = corpus_of(c) {
                            derived_into[w].push(Derived { column: c.id.clone(), corpus, windows: k });
                        }
                    }
                    k_groups.push(i);
                }
            }
            for i in k_groups.into_iter().rev() {
                groups.remove(i);
                derived_into.remove(i);
            }
        }
        let mut evals = Vec::new();
        for (i, (windows, cols)) in groups.iter().enumerate() {
            let mut args = Vec::new();
            let mut ids: Vec<String> = cols.iter().map(|c| c.id.clone()).collect();
            let mut corpora: Vec<&str> = Vec::new();
            for c in cols {
                if let Measure::Ppl { corpus } = &c.measure
                    && !corpora.contains(&corpus.as_str())
                {
                    corpora.push(corpus);
                }
            }
            if !corpora.is_empty() {
                args.extend(["--ppl".to_owned(), corpora.join(","), "--seqlen".to_owned(), model.seqlen.to_string()]);
                if let Some(k) = windows {
                    args.extend(["--max-windows".to_owned(), k.to_string()]);
                }
            }
            if i == 0 && !tasks.is_empty() {
                let mut names: Vec<&str> = Vec::new();
                for c in &tasks {
                    if let Measure::Task { task, .. } = &c.measure
                        && !names.contains(&task.as_str())
                    {
                        names.push(task);
                    }
                }
                args.extend(["--tasks".to_owned(), names.join(",")]);
                if let Some(n) = profile.limit {
                    args.extend(["--limit".to_owned(), n.to_string()]);
                }
                ids.extend(tasks.iter().map(|c| c.id.clone()));
            }
            args.extend(["--batch-size".to_owned(), profile.batch_size.to_string()]);
            evals.push(Eval { args, columns: ids, derived: derived_into[i].clone() });
        }
        evals
    }

    /// The runs of `profile`: models outermost, rows in the spec's order, then seeds.
    /// Every run, per model in seed-major order: each row's first seed, then each row's second,
    /// and so on. An interrupted table therefore has whole seeds of every row finished first,
    /// which is what a reader can compare.
    pub(crate) fn runs(&self, profile: &Profile) -> Vec<Run> {
        let mut runs = Vec::new();
        for model in &profile.models {
            let seeds: Vec<Vec<Option<u64>>> = self
                .rows
                .iter()
                .map(|row| {
                    if row.uses_calibration() {
                        row.seeds.as_ref().unwrap_or(&profile.seeds).iter().map(|s| Some(*s)).collect()
                    } else {
                        vec![None]
                    }
                })
                .collect();
            let rounds = seeds.iter().map(Vec::len).max().unwrap_or(0);
            for round in 0..rounds {
                for (row, seeds) in self.rows.iter().zip(&seeds) {
                    let Some(&seed) = seeds.get(round) else { continue };
                    let prune = row.pattern.map(|pattern| {
                        prune_recipe(profile, model, row, pattern, seed).expect("every row's recipe resolved when the spec was loaded")
                    });
                    runs.push(Run { model: model.clone(), row: row.clone(), seed, prune, evals: self.evals(profile, model, seed) });
                }
            }
        }
        runs
    }
}

/// A spec's name for a recipe value (an SNL, a pruning-aware mode, a stage) as the recipe's type.
fn named<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    use serde::de::IntoDeserializer;
    T::deserialize(s.into_deserializer()).map_err(|e: serde::de::value::Error| anyhow::anyhow!("{e}"))
}

/// The recipe `spindle prune` runs for `row` (the model and output paths apart).
fn prune_recipe(profile: &Profile, model: &Model, row: &Row, pattern: Pattern, seed: Option<u64>) -> Result<Recipe> {
    use spindle_recipe as r;
    let mut prune = r::Prune { method: Some(named(row.method.flag())?), ..Default::default() };
    match pattern {
        Pattern::Unstructured { sparsity } => prune.sparsity = Some(sparsity),
        Pattern::NM { n, m } => prune.pattern = Some(r::Nm { n, m }),
    }
    let calibration = seed.map(|seed| r::Calibration {
        source: Some(profile.calib.clone()),
        nsamples: Some(profile.nsamples * row.nsamples_factor),
        seqlen: Some(model.seqlen),
        seed: Some(seed as i64),
        batch_size: None,
    });
    let induce = match &row.si {
        None => None,
        Some(si) => {
            let feature = (si.pruning_aware.is_some() || si.snl.is_some() || si.snl_lambda.is_some() || si.feature_epochs.is_some())
                .then(|| -> Result<r::Feature> {
                    Ok(r::Feature {
                        pruning_aware: si.pruning_aware.as_deref().map(named).transpose()?,
                        snl: si.snl.as_deref().map(named).transpose()?,
                        snl_lambda: si.snl_lambda,
                        epochs: si.feature_epochs,
                        ..Default::default()
                    })
                })
                .transpose()?;
            let stages = si.stages.iter().map(|s| named(s.flag())).collect::<Result<Vec<r::Stage>>>()?;
            Some(r::Induce { stages: Some(stages), feature, ..Default::default() })
        }
    };
    let reconstruct = match &row.reconstruct {
        None => None,
        Some(rc) => Some(r::Reconstruct {
            snl: rc.snl.as_deref().map(named).transpose()?,
            snl_lambda: rc.snl_lambda,
            epochs: rc.epochs,
            ..Default::default()
        }),
    };
    let mut recipe = Recipe { dtype: None, calibration, prune: Some(prune), induce, reconstruct };
    if row.si.is_some()
        && let Some(extra) = &profile.si_recipe
    {
        recipe = recipe.overlay(extra)?;
    }
    if let Some(extra) = &row.recipe {
        recipe = recipe.overlay(extra)?;
    }
    Ok(recipe)
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
        for paper in ["table1", "table2", "table3", "table4", "si_selection"] {
            assert!(names.iter().any(|n| n == paper), "{paper} is missing from {names:?}");
        }
        for name in names {
            let t = load(&root(), &name).unwrap();
            assert_eq!(t.name, name);
            for profile in ["cpu", "paper"] {
                let p = t.profile(profile).unwrap();
                let runs = t.runs(p);
                let per_model: usize =
                    t.rows.iter().map(|r| if r.uses_calibration() { r.seeds.as_ref().unwrap_or(&p.seeds).len() } else { 1 }).sum();
                assert_eq!(runs.len(), p.models.len() * per_model, "{name} {profile}");
                for run in &runs {
                    assert_eq!(run.prune.is_none(), run.row.method == Method::Dense);
                    assert_eq!(run.seed.is_some(), run.row.uses_calibration());
                    assert!(!run.evals.is_empty());
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
        let tasks: Vec<_> =
            t.columns.iter().filter_map(|c| if let Measure::Task { task, .. } = &c.measure { Some(task.as_str()) } else { None }).collect();
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
        si_recipe = { induce = { feature = { epochs = 1 } } }
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
        si = { stages = ["distribution", "feature"] }
        recipe = { induce = { feature = { snl = "nuclear" } } }
    "#;

    #[test]
    fn runs_spell_out_every_argument() {
        let t = parse(MINI).unwrap();
        let runs = t.runs(t.profile("cpu").unwrap());
        assert_eq!(runs[0].prune, None);
        assert_eq!(runs[0].evals[0].args, ["--ppl", "wikitext2", "--seqlen", "512", "--max-windows", "4", "--batch-size", "1"]);
        let recipe = runs[1].prune.as_ref().unwrap().to_toml().unwrap();
        assert_eq!(
            recipe,
            "[calibration]\nsource = \"c4\"\nnsamples = 8\nseqlen = 512\nseed = 0\n\n[prune]\nmethod = \"wanda\"\npattern = \"2:4\"\n\n\
             [induce]\nstages = [\"distribution\", \"feature\"]\n\n[induce.feature]\nsnl = \"nuclear\"\nepochs = 1\n"
        );
        // A field the recipe refuses fails the spec, naming the row.
        let bad = MINI.replace("snl = \"nuclear\" } } }", "lr = 0.0 } } }");
        let e = format!("{:#}", parse(&bad).unwrap_err());
        assert!(e.contains("row \"w24\", profile cpu: its recipe: induce.feature.lr (--feature-lr) must be positive"), "{e}");
    }

    /// A seed grid with the evidence's row families: each row that reads calibration runs once
    /// per seed, magnitude alone once; typed options become flags; a column restricted to seed 0
    /// adds a second evaluation to seed 0's runs only.
    #[test]
    fn seeds_families_and_per_column_evaluations_expand_into_runs() {
        let spec = MINI
            .replace("max_windows = 4\n", "max_windows = 4\nseeds = [0, 1]\n")
            .replace(
                "columns = [{ id = \"w\", label = \"W\", ppl = \"wikitext2\" }]",
                "columns = [{ id = \"w\", label = \"W\", ppl = \"wikitext2\" }, { id = \"wf\", label = \"W all\", ppl = \"wikitext2\", max_windows = 0, seeds = [0] }, { id = \"p\", label = \"PTB\", ppl = \"ptb\", max_windows = 0, seeds = [0] }]",
            )
            + r#"
        [[rows]]
        id = "mag"
        label = "Magnitude"
        method = "magnitude"
        sparsity = 0.5
        [[rows]]
        id = "wanda+recon"
        label = "Wanda + reconstruction"
        method = "wanda"
        sparsity = 0.5
        reconstruct = { snl = "nuclear", snl_lambda = 1e-5 }
        [[rows]]
        id = "wanda+si+recon"
        label = "Wanda + SI + reconstruction"
        method = "wanda"
        sparsity = 0.5
        si = { stages = ["feature"], pruning_aware = "off", snl = "nuclear", snl_lambda = 1e-5 }
        reconstruct = {}
        [[rows]]
        id = "wanda-4x"
        label = "Wanda, 4x calibration"
        method = "wanda"
        sparsity = 0.5
        nsamples_factor = 4
        "#;
        let t = parse(&spec).unwrap();
        let fam = |id: &str| t.row(id).unwrap().family();
        assert_eq!(
            [fam("dense"), fam("w24"), fam("mag"), fam("wanda+recon"), fam("wanda+si+recon"), fam("wanda-4x")],
            [Family::Dense, Family::Si, Family::Base, Family::Reconstruction, Family::SiReconstruction, Family::MoreData]
        );
        let runs = t.runs(t.profile("cpu").unwrap());
        let order: Vec<(&str, Option<u64>)> = runs.iter().map(|r| (r.row.id.as_str(), r.seed)).collect();
        assert_eq!(
            order,
            [
                ("dense", None),
                ("w24", Some(0)),
                ("mag", None),
                ("wanda+recon", Some(0)),
                ("wanda+si+recon", Some(0)),
                ("wanda-4x", Some(0)),
                ("w24", Some(1)),
                ("wanda+recon", Some(1)),
                ("wanda+si+recon", Some(1)),
                ("wanda-4x", Some(1)),
            ],
            "seed-major: every row's seed 0 before any row's seed 1"
        );
        let of = |id: &str| runs.iter().filter(|r| r.row.id == id).collect::<Vec<_>>();
        assert_eq!(of("dense").len(), 1);
        assert_eq!(of("mag").len(), 1, "magnitude alone reads no calibration: one run for every seed");
        assert_eq!(of("mag")[0].seed, None);
        assert!(of("mag")[0].prune.as_ref().unwrap().calibration.is_none(), "magnitude alone draws no calibration");
        // Seed 0 reads WikiText-2 whole for `wf`: the 4-window column `w` comes from that
        // evaluation's first 4 windows, with no evaluation of its own.
        let all_windows = Eval {
            args: ["--ppl", "wikitext2,ptb", "--seqlen", "512", "--batch-size", "1"].map(String::from).to_vec(),
            columns: vec!["wf".into(), "p".into()],
            derived: vec![Derived { column: "w".into(), corpus: "wikitext2".into(), windows: 4 }],
        };
        assert_eq!(of("mag")[0].evals, std::slice::from_ref(&all_windows), "a seedless run stands for seed 0 too");
        let recon = of("wanda+recon");
        assert_eq!(recon.iter().map(|r| r.seed).collect::<Vec<_>>(), [Some(0), Some(1)]);
        assert_eq!(recon[0].evals, [all_windows]);
        assert_eq!(recon[1].evals.len(), 1, "seed 1 evaluates the seed grid's columns only");
        assert_eq!(recon[1].evals[0].args, ["--ppl", "wikitext2", "--seqlen", "512", "--max-windows", "4", "--batch-size", "1"]);
        assert!(recon[1].evals[0].derived.is_empty());
        // Not derived where the batch size does not divide the window count (another batching
        // could round differently).
        let t3 = parse(&spec.replace("max_windows = 4\nseeds", "max_windows = 4\nbatch_size = 3\nseeds")).unwrap();
        let runs3 = t3.runs(t3.profile("cpu").unwrap());
        let r3 = runs3.iter().find(|r| r.row.id == "wanda+recon" && r.seed == Some(0)).unwrap();
        assert_eq!(r3.evals.len(), 2);
        assert!(r3.evals.iter().all(|e| e.derived.is_empty()));
        let toml_of = |id: &str, k: usize| of(id)[k].prune.as_ref().unwrap().to_toml().unwrap();
        assert!(
            toml_of("wanda+recon", 1).ends_with("[reconstruct]\nsnl = \"nuclear\"\nsnl_lambda = 0.00001\n"),
            "{}",
            toml_of("wanda+recon", 1)
        );
        let both = toml_of("wanda+si+recon", 0);
        assert!(
            both.ends_with(
                "[induce]\nstages = [\"feature\"]\n\n[induce.feature]\npruning_aware = \"off\"\nsnl = \"nuclear\"\nsnl_lambda = 0.00001\nepochs = 1\n\n[reconstruct]\n"
            ),
            "{both}"
        );
        assert!(toml_of("wanda-4x", 0).contains("nsamples = 32\n"));
        let err = |from: &str, to: &str| format!("{:#}", parse(&spec.replace(from, to)).unwrap_err());
        assert!(err("pruning_aware = \"off\"", "pruning_aware = \"pruned\"").contains("training after pruning is `reconstruct`"));
        assert!(err("snl = \"nuclear\", snl_lambda = 1e-5 }\n", "snl = \"nucl\" }\n").contains("reconstruct.snl \"nucl\" is not one of"));
        assert!(err("nsamples_factor = 4", "nsamples_factor = 0").contains("nsamples_factor must be at least 1"));
    }

    #[test]
    fn bad_specs_name_the_field_at_fault() {
        let err = |from: &str, to: &str| format!("{:#}", parse(&MINI.replace(from, to)).unwrap_err());
        assert!(
            err("pattern = \"2:4\"", "pattern = \"4:2\"").contains("pattern \"4:2\" is not N:M"),
            "{}",
            err("pattern = \"2:4\"", "pattern = \"4:2\"")
        );
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
