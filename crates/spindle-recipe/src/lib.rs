//! `spindle-recipe` is the one description of what spindle does to a model: the calibration data,
//! the induction stages before pruning, the pruner, the reconstruction after it, and the dtype.
//! Flags, recipe files, table specs and the library all speak it, and every pruned model carries
//! the resolved recipe that made it (`spindle_recipe.toml`), so a checkpoint says how it was made
//! and re-running that file reproduces it.
//!
//! It exists as its own crate, with no libtorch, so that `xtask` (which never links libtorch) can
//! write recipes for its table runs with the same types the pipeline reads.
//!
//! A [`Recipe`] is what a user wrote: every field optional. [`Recipe::resolve`] fills every
//! default (including the per-pruner ones, [`StageDefaults::for_method`]) and checks every value,
//! and returns a [`Resolved`] recipe, which has no open choice left. Errors name the field (and
//! the flag that sets it).
//!
//! Architecture Invariant: every default of `spindle prune` lives here, once; the command line
//! only maps flags onto [`Recipe`] fields.
//!
//! ```
//! use spindle_recipe::Recipe;
//! let recipe = Recipe::from_toml_str("[prune]\nmethod = \"wanda\"\npattern = \"2:4\"\n\n[induce]\nstages = [\"feature\"]\n")?;
//! let resolved = recipe.resolve()?;
//! assert_eq!(resolved.calibration.as_ref().map(|c| c.nsamples), Some(128));
//! let feature = resolved.induce.as_ref().and_then(|i| i.feature.as_ref()).expect("the feature stage");
//! assert_eq!(feature.epochs, 2);
//! // The resolved recipe, written out and read back, resolves to itself.
//! assert_eq!(Recipe::from_toml_str(&resolved.to_toml()?)?.resolve()?, resolved);
//! // A bad value is refused by field and flag.
//! let err = Recipe::from_toml_str("[prune]\nmethod = \"wanda\"\nsparsity = 1.5\n")?.resolve().unwrap_err();
//! assert_eq!(err.to_string(), "prune.sparsity (--sparsity) must be in [0, 1), got 1.5");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod resolve;

/// What is wrong with a recipe: the field (and its flag), and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecipeError {
    /// A value out of range, a missing field, or options of a stage or pruner not in use.
    #[error("{field}{} {problem}", flag_of(field).map(|f| format!(" ({f})")).unwrap_or_default())]
    Field { field: &'static str, problem: String },
    /// The file could not be read or parsed.
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    /// The resolved recipe could not be written as TOML.
    #[error("the recipe cannot be written as TOML: {0}")]
    Write(String),
}

pub(crate) fn field(field: &'static str, problem: impl Into<String>) -> RecipeError {
    RecipeError::Field { field, problem: problem.into() }
}

/// The flag of `spindle prune` that sets a recipe field, for error messages.
pub fn flag_of(field: &str) -> Option<&'static str> {
    Some(match field {
        "dtype" => "--dtype",
        "calibration.source" => "--calib",
        "calibration.nsamples" => "--nsamples",
        "calibration.seqlen" => "--seqlen",
        "calibration.seed" => "--seed",
        "calibration.batch_size" => "--batch-size",
        "prune.method" => "--method",
        "prune.sparsity" => "--sparsity",
        "prune.pattern" => "--pattern",
        "prune.allocation" => "--allocation",
        "prune.owl.m" => "--owl-m",
        "prune.owl.lambda" => "--owl-lambda",
        "prune.magnitude.scope" => "--magnitude-scope",
        "prune.ria.alpha" => "--ria-alpha",
        "prune.sparsegpt.blocksize" => "--blocksize",
        "prune.sparsegpt.percdamp" => "--percdamp",
        "prune.sparsegpt.max_percdamp" => "--max-percdamp",
        "induce.stages" => "--induce",
        "induce.sites" => "--si-sites",
        "induce.distribution.start" => "--si-start",
        "induce.distribution.smoothquant_alpha" => "--si-alpha",
        "induce.distribution.steps" => "--si-steps",
        "induce.distribution.lr" => "--si-lr",
        "induce.distribution.temperature" => "--si-temperature",
        "induce.distribution.max_log_scale" => "--si-max-log-scale",
        "induce.distribution.fit" => "--si-fit",
        "induce.distribution.refine.epochs" => "--si-refine-epochs",
        "induce.distribution.refine.lr" => "--si-refine-lr",
        "induce.distribution.refine.snl" => "--si-refine-snl",
        "induce.distribution.refine.snl_lambda" | "induce.feature.snl_lambda" => "--snl-lambda",
        "induce.distribution.refine.snl_tokens"
        | "induce.equivalent_snl.snl_tokens"
        | "induce.feature.snl_tokens"
        | "reconstruct.snl_tokens" => "--snl-tokens",
        "induce.equivalent_snl.snl" | "induce.feature.snl" => "--snl",
        "induce.equivalent_snl.steps" => "--equiv-steps",
        "induce.equivalent_snl.max_log_scale" => "--equiv-max-log-scale",
        "induce.feature.pruning_aware" => "--pruning-aware",
        "induce.feature.lr" => "--feature-lr",
        "induce.feature.epochs" => "--feature-epochs",
        "induce.feature.weight_decay" => "--feature-weight-decay",
        "induce.feature.snl_features" | "reconstruct.snl_features" => "--snl-features",
        "reconstruct" => "--reconstruct",
        "reconstruct.snl" => "--recon-snl",
        "reconstruct.snl_lambda" => "--recon-snl-lambda",
        "reconstruct.lr" => "--recon-lr",
        "reconstruct.epochs" => "--recon-epochs",
        _ => return None,
    })
}

macro_rules! names {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }
        impl $name {
            /// The name as recipes and flags spell it.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

names!(
    /// The pruner.
    MethodName { Magnitude = "magnitude", Wanda = "wanda", SparseGpt = "sparsegpt", Ria = "ria" }
);
names!(
    /// The dtype weights and calibration activations are held in while pruning; `model`: the
    /// checkpoint's.
    Dtype { Float32 = "float32", Bfloat16 = "bfloat16", Float16 = "float16", Model = "model" }
);
names!(
    /// How the sparsity is shared between blocks.
    AllocationName { Uniform = "uniform", Owl = "owl" }
);
names!(
    /// Magnitude's threshold: per matrix (the reference) or per output row.
    Scope { Matrix = "matrix", Row = "row" }
);
names!(
    /// An induction stage.
    Stage { Distribution = "distribution", EquivalentSnl = "equivalent-snl", Feature = "feature", Shift = "shift" }
);
names!(
    /// Which absorbable sites the equivalent stages rescale.
    Sites { All = "all", Norms = "norms" }
);
names!(
    /// Where the distribution stage's search starts.
    Start { Identity = "identity", SmoothQuant = "smoothquant", ActNorm = "act-norm" }
);
names!(
    /// How the distribution stage chooses its scales.
    Fit { ClosedForm = "closed-form", Reconstruction = "reconstruction" }
);
names!(
    /// A Spectral Norm Loss, or none.
    Snl { Nuclear = "nuclear", SpectralFrobenius = "spectral-frobenius", SpectralEnergy = "spectral-energy", None = "none" }
);
names!(
    /// What the feature stage's scalers reconstruct before the pruner runs.
    PruningAware { Off = "off", Mask = "mask" }
);
names!(
    /// The features an SNL acts on.
    SnlFeatures { Inputs = "inputs", Output = "output" }
);

/// An N:M pattern, written `"N:M"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Nm {
    pub n: usize,
    pub m: usize,
}

impl std::str::FromStr for Nm {
    type Err = String;
    fn from_str(s: &str) -> Result<Nm, String> {
        let bad = || format!("must be N:M with 0 < N < M (e.g. 2:4), got {s:?}");
        let (n, m) = s.split_once(':').ok_or_else(bad)?;
        let (n, m) = (n.trim().parse::<usize>().map_err(|_| bad())?, m.trim().parse::<usize>().map_err(|_| bad())?);
        if n == 0 || n >= m {
            return Err(bad());
        }
        Ok(Nm { n, m })
    }
}

impl TryFrom<String> for Nm {
    type Error = String;
    fn try_from(s: String) -> Result<Nm, String> {
        s.parse()
    }
}

impl From<Nm> for String {
    fn from(p: Nm) -> String {
        format!("{}:{}", p.n, p.m)
    }
}

// ---------------------------------------------------------------------------------------------
// What a user writes: every field optional.

/// A recipe as written: in a file, from flags, or in a table spec. Every field is optional;
/// [`Recipe::resolve`] fills the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Dtype>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<Prune>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub induce: Option<Induce>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconstruct: Option<Reconstruct>,
}

/// Calibration windows, drawn as the reference loaders draw them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// `c4`, or a .txt/.jsonl/.parquet file [default: c4].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Windows [default: 128].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsamples: Option<usize>,
    /// Tokens per window [default: 2048, or the model's context if smaller].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seqlen: Option<usize>,
    /// The seed of Python's `random.seed` that draws the windows [default: 0].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Windows per forward pass [default: 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
}

/// The pruner and its options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prune {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<MethodName>,
    /// Unstructured sparsity in [0, 1) (or `pattern`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<f64>,
    /// N:M sparsity, e.g. `"2:4"` (or `sparsity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Nm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<AllocationName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_sequential: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owl: Option<Owl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub magnitude: Option<MagnitudeOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ria: Option<RiaOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsegpt: Option<SparseGptOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MagnitudeOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiaOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseGptOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocksize: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percdamp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_percdamp: Option<f64>,
}

/// Sparsity Induction: the stages that act before the pruner sees a block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Induce {
    /// The stages [default for `spindle prune`: none; for `spindle induce`: distribution, feature].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<Stage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<Sites>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equivalent_snl: Option<EquivalentSnl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<Feature>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
    /// SmoothQuant's migration strength α (with `start = "smoothquant"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothquant_alpha: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<Fit>,
    /// The training of `fit = "reconstruction"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refine: Option<Refine>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl: Option<Snl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl_lambda: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl_tokens: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EquivalentSnl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl: Option<Snl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl_tokens: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruning_aware: Option<PruningAware>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl: Option<Snl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl_lambda: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl_features: Option<SnlFeatures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl_tokens: Option<i64>,
}

/// Reconstruction after pruning: per-channel scalers trained on each pruned block (its mask and
/// weights fixed) towards the dense block's outputs, then merged. Not induction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconstruct {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl: Option<Snl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl_lambda: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl_features: Option<SnlFeatures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snl_tokens: Option<i64>,
}

impl Recipe {
    /// Parses a recipe; an unknown field or a bad value is named.
    pub fn from_toml_str(text: &str) -> Result<Recipe, RecipeError> {
        toml::from_str(text).map_err(|e| RecipeError::File { path: "the recipe".into(), problem: one_line(&e, text) })
    }

    /// Reads a recipe file (a regular file of at most 1 MiB).
    pub fn from_file(path: &Path) -> Result<Recipe, RecipeError> {
        let file = |problem: String| RecipeError::File { path: path.display().to_string(), problem };
        let bytes = spindle_io::read_at_most(path, 1 << 20).map_err(|e| file(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| file("not UTF-8 text".into()))?;
        toml::from_str(&text).map_err(|e| file(one_line(&e, &text)))
    }

    /// Fills every default (the per-pruner ones included) and checks every value.
    pub fn resolve(&self) -> Result<Resolved, RecipeError> {
        resolve::recipe(self)
    }

    /// This recipe with every field `over` sets replaced by `over`'s (sections merged field by
    /// field; a list such as `induce.stages` is replaced whole).
    pub fn overlay(&self, over: &Recipe) -> Result<Recipe, RecipeError> {
        let value = |r: &Recipe| toml::Value::try_from(r).map_err(|e| RecipeError::Write(e.to_string()));
        let mut base = value(self)?;
        merge(&mut base, value(over)?);
        base.try_into().map_err(|e: toml::de::Error| RecipeError::Write(e.message().trim().replace('\n', " ")))
    }

    /// This recipe as TOML.
    pub fn to_toml(&self) -> Result<String, RecipeError> {
        toml::to_string(self).map_err(|e| RecipeError::Write(e.to_string()))
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// A TOML error on one line: its message, and the line of `text` it is at.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            // A span is at a token boundary; `get` keeps a malformed one from panicking.
            let before = text.get(..span.start).unwrap_or(text);
            let line_no = before.matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
            format!("line {line_no} (`{line}`): {msg}")
        }
        None => msg,
    }
}

// ---------------------------------------------------------------------------------------------
// Resolved: no open choice left.

/// Per-pruner defaults of the stages' open choices: decided by the selection sweep
/// (`docs/results/si_evidence.md`), the same for every pruner today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageDefaults {
    /// The feature stage's pruning-aware mode.
    pub pruning_aware: PruningAware,
    /// The feature stage's SNL.
    pub feature_snl: Snl,
    /// The reconstruction's SNL.
    pub reconstruct_snl: Snl,
}

impl StageDefaults {
    /// `spindle prune`'s defaults for `method`.
    pub fn for_method(method: MethodName) -> StageDefaults {
        match method {
            MethodName::Magnitude | MethodName::Wanda | MethodName::SparseGpt | MethodName::Ria => {
                StageDefaults { pruning_aware: PruningAware::Mask, feature_snl: Snl::None, reconstruct_snl: Snl::None }
            }
        }
    }
}

/// A recipe with every default filled and every value checked. Serialised, it is the
/// `spindle_recipe.toml` a pruned model carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    pub dtype: Dtype,
    /// `None` exactly when the run reads no calibration data (magnitude without induction,
    /// reconstruction or OWL); calibration fields given for such a run are checked, then left
    /// out, since they are not part of what the run did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<ResolvedCalibration>,
    pub prune: ResolvedPrune,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub induce: Option<ResolvedInduce>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconstruct: Option<ResolvedReconstruct>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedCalibration {
    pub source: String,
    pub nsamples: usize,
    /// `None`: 2048, or the model's context if smaller ([`Resolved::with_context`] fills it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seqlen: Option<usize>,
    pub seed: i64,
    pub batch_size: usize,
}

/// Unstructured sparsity or an N:M pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sparsity {
    Unstructured(f64),
    Nm(Nm),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedPrune {
    pub method: MethodName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Nm>,
    pub allocation: AllocationName,
    pub true_sequential: bool,
    pub layer_errors: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owl: Option<ResolvedOwl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub magnitude: Option<ResolvedMagnitude>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ria: Option<ResolvedRia>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparsegpt: Option<ResolvedSparseGpt>,
}

impl ResolvedPrune {
    /// The sparsity asked for (exactly one of `sparsity` and `pattern` is set).
    pub fn target(&self) -> Sparsity {
        match self.pattern {
            Some(p) => Sparsity::Nm(p),
            None => Sparsity::Unstructured(self.sparsity.unwrap_or(0.0)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResolvedOwl {
    pub m: f64,
    pub lambda: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResolvedMagnitude {
    pub scope: Scope,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResolvedRia {
    pub alpha: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResolvedSparseGpt {
    pub blocksize: i64,
    pub percdamp: f64,
    pub max_percdamp: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedInduce {
    pub stages: Vec<Stage>,
    pub sites: Sites,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution: Option<ResolvedDistribution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equivalent_snl: Option<ResolvedEquivalentSnl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<ResolvedFeature>,
}

impl ResolvedInduce {
    pub fn has(&self, stage: Stage) -> bool {
        self.stages.contains(&stage)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedDistribution {
    pub start: Start,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smoothquant_alpha: Option<f64>,
    pub steps: usize,
    pub lr: f64,
    pub temperature: f64,
    pub max_log_scale: f64,
    pub fit: Fit,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refine: Option<ResolvedRefine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResolvedRefine {
    pub epochs: usize,
    pub lr: f64,
    pub snl: Snl,
    pub snl_lambda: f64,
    pub snl_tokens: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResolvedEquivalentSnl {
    pub snl: Snl,
    pub steps: usize,
    pub max_log_scale: f64,
    pub snl_tokens: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResolvedFeature {
    pub pruning_aware: PruningAware,
    pub snl: Snl,
    pub snl_lambda: f64,
    pub lr: f64,
    pub epochs: usize,
    pub weight_decay: f64,
    pub snl_features: SnlFeatures,
    pub snl_tokens: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResolvedReconstruct {
    pub snl: Snl,
    pub snl_lambda: f64,
    pub lr: f64,
    pub epochs: usize,
    pub snl_features: SnlFeatures,
    pub snl_tokens: i64,
}

impl Resolved {
    /// The calibration window length made explicit: 2048, or `context` if smaller.
    pub fn with_context(mut self, context: usize) -> Resolved {
        if let Some(c) = &mut self.calibration
            && c.seqlen.is_none()
        {
            c.seqlen = Some(2048.min(context));
        }
        self
    }

    /// This recipe as TOML (the `spindle_recipe.toml` of a pruned model).
    pub fn to_toml(&self) -> Result<String, RecipeError> {
        toml::to_string(self).map_err(|e| RecipeError::Write(e.to_string()))
    }
}

/// What `spindle induce` did to a dense model, as its output directory records it (in
/// `spindle_recipe.toml`, like a pruned model's recipe): the calibration windows, the stages and
/// the pruner and sparsity the model was prepared for (`[target]`; nothing was pruned, so it is
/// not a `[prune]` section and the file is not a recipe `spindle prune --recipe` runs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InduceRecord<'a> {
    pub calibration: &'a ResolvedCalibration,
    pub target: InduceTarget,
    pub induce: &'a ResolvedInduce,
}

/// The pruner and sparsity a model was induced for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InduceTarget {
    pub method: MethodName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Nm>,
    /// RIA's activation exponent, for `method = "ria"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ria_alpha: Option<f64>,
}

impl InduceRecord<'_> {
    /// The record as TOML, opened by a comment that says what it is.
    pub fn to_toml(&self) -> Result<String, RecipeError> {
        let body = toml::to_string(self).map_err(|e| RecipeError::Write(e.to_string()))?;
        Ok(format!(
            "# Written by `spindle induce`: this dense model was transformed by [induce], for the pruner in\n\
             # [target]; no weight was pruned, so this is a record, not a recipe for `spindle prune`.\n{body}"
        ))
    }
}

pub use resolve::resolve_induce;
