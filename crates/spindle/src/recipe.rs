//! A recipe, run: the library entry point that takes a [`Resolved`] recipe and a model directory
//! to a pruned checkpoint that carries its recipe (`spindle_recipe.toml`), and the mapping of a
//! resolved recipe onto the typed configurations of [`crate::prune`] and [`crate::induce`].
//!
//! The recipe types themselves live in `spindle-recipe` (no libtorch, so `xtask` writes them
//! too) and are re-exported here.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use spindle_data::DataDir;
use spindle_data::cache::{TokenCache, file_sha256};
use spindle_data::corpus::{Corpus, Documents, calibration_documents, sample_windows, tokenize_documents};
use spindle_induce::{DistributionConfig, EquivalentSnlConfig, FeatureConfig, FeatureSource, PruningAware as InducePruningAware, Scorer};
use spindle_model::{Model, ModelConfig};
use spindle_prune::magnitude::Scope as PruneScope;
use spindle_prune::owl::OwlConfig;
use spindle_prune::ria::RiaConfig;
use spindle_prune::{Pattern, SparseGptConfig};
pub use spindle_recipe::*;
use tch::{Device, Kind, Tensor};

use crate::induce::{InduceConfig, SiteChoice};
use crate::prune::{Allocation, Method, PipelineError, PruneConfig, PruneReport, prune_model_with_files};

/// The file a pruned model directory carries its resolved recipe in.
pub const RECIPE_FILE: &str = "spindle_recipe.toml";

/// The pattern a resolved recipe prunes to.
pub fn pattern_of(p: &ResolvedPrune) -> Pattern {
    match p.target() {
        Sparsity::Unstructured(sparsity) => Pattern::Unstructured { sparsity },
        Sparsity::Nm(Nm { n, m }) => Pattern::NM { n, m },
    }
}

/// The pruner of a resolved recipe, with its options.
pub fn method_of(p: &ResolvedPrune) -> Method {
    match p.method {
        MethodName::Magnitude => Method::Magnitude(match p.magnitude.map_or(Scope::Matrix, |m| m.scope) {
            Scope::Matrix => PruneScope::Matrix,
            Scope::Row => PruneScope::Row,
        }),
        MethodName::Wanda => Method::Wanda,
        MethodName::Ria => Method::Ria(RiaConfig { alpha: p.ria.map_or(0.5, |r| r.alpha) }),
        MethodName::SparseGpt => {
            let d = SparseGptConfig::default();
            let s = p.sparsegpt.unwrap_or(ResolvedSparseGpt { blocksize: d.blocksize, percdamp: d.percdamp, max_percdamp: d.max_percdamp });
            Method::SparseGpt(SparseGptConfig { blocksize: s.blocksize, percdamp: s.percdamp, max_percdamp: s.max_percdamp })
        }
    }
}

fn snl_of(s: Snl) -> Option<spindle_induce::Snl> {
    match s {
        Snl::Nuclear => Some(spindle_induce::Snl::NuclearOverSpectral),
        Snl::SpectralFrobenius => Some(spindle_induce::Snl::SpectralOverFrobenius),
        Snl::SpectralEnergy => Some(spindle_induce::Snl::SpectralEnergy),
        Snl::None => None,
    }
}

fn source_of(f: SnlFeatures) -> FeatureSource {
    match f {
        SnlFeatures::Inputs => FeatureSource::LinearInputs,
        SnlFeatures::Output => FeatureSource::BlockOutput,
    }
}

fn config_err(what: &str) -> impl Fn(spindle_induce::InduceError) -> PipelineError + '_ {
    move |e| PipelineError::Config(format!("{what}: {e}"))
}

/// The induction stages of a resolved recipe, for a pruner that selects as `scorer` at `pattern`.
pub fn induce_config(i: &ResolvedInduce, scorer: Scorer, pattern: Pattern) -> Result<InduceConfig, PipelineError> {
    let distribution = match &i.distribution {
        None => None,
        Some(d) => Some(
            DistributionConfig {
                scorer,
                pattern,
                start: match d.start {
                    Start::Identity => spindle_induce::Start::Identity,
                    Start::SmoothQuant => spindle_induce::Start::SmoothQuant { alpha: d.smoothquant_alpha.unwrap_or(0.5) },
                    Start::ActNorm => spindle_induce::Start::ActNorm,
                },
                steps: d.steps,
                lr: d.lr,
                temperature: d.temperature,
                max_log_scale: d.max_log_scale,
                ..Default::default()
            }
            .validate()
            .map_err(config_err("induce.distribution"))?,
        ),
    };
    let refine = match i.distribution.as_ref().and_then(|d| d.refine) {
        None => None,
        Some(r) => Some(
            FeatureConfig {
                snl: snl_of(r.snl),
                lambda: r.snl_lambda,
                lr: r.lr,
                epochs: r.epochs,
                weight_decay: 0.0,
                source: FeatureSource::LinearInputs,
                max_tokens: r.snl_tokens,
                seed: 0,
            }
            .validate()
            .map_err(config_err("induce.distribution.refine"))?,
        ),
    };
    let equivalent = i.equivalent_snl.and_then(|e| {
        snl_of(e.snl).map(|snl| EquivalentSnlConfig {
            snl,
            steps: e.steps,
            max_log_scale: e.max_log_scale,
            max_tokens: e.snl_tokens,
            ..Default::default()
        })
    });
    if i.equivalent_snl.is_some() && equivalent.is_none() {
        return Err(PipelineError::Config("induce.equivalent_snl.snl must not be none".into()));
    }
    let feature = match &i.feature {
        None => None,
        Some(f) => Some(
            FeatureConfig {
                snl: snl_of(f.snl),
                lambda: f.snl_lambda,
                lr: f.lr,
                epochs: f.epochs,
                weight_decay: f.weight_decay,
                source: source_of(f.snl_features),
                max_tokens: f.snl_tokens,
                seed: 0,
            }
            .validate()
            .map_err(config_err("induce.feature"))?,
        ),
    };
    let pruning_aware = match i.feature.map_or(PruningAware::Mask, |f| f.pruning_aware) {
        PruningAware::Off => InducePruningAware::Off,
        PruningAware::Mask => InducePruningAware::Mask,
    };
    Ok(InduceConfig {
        distribution,
        refine,
        equivalent,
        feature,
        pruning_aware,
        mask: scorer,
        pattern,
        sites: match i.sites {
            Sites::All => SiteChoice::All,
            Sites::Norms => SiteChoice::Norms,
        },
        shift: i.has(Stage::Shift),
    })
}

/// The reconstruction of a resolved recipe.
pub fn reconstruct_config(r: &ResolvedReconstruct) -> Result<FeatureConfig, PipelineError> {
    FeatureConfig {
        snl: snl_of(r.snl),
        lambda: r.snl_lambda,
        lr: r.lr,
        epochs: r.epochs,
        weight_decay: 0.0,
        source: source_of(r.snl_features),
        max_tokens: r.snl_tokens,
        seed: 0,
    }
    .validate()
    .map_err(config_err("reconstruct"))
}

/// The pipeline's configuration for a resolved recipe.
pub fn prune_config(r: &Resolved) -> Result<PruneConfig, PipelineError> {
    let pattern = pattern_of(&r.prune);
    let method = method_of(&r.prune);
    let scorer = Scorer::from(method);
    Ok(PruneConfig {
        method,
        pattern,
        allocation: match r.prune.owl {
            Some(o) => Allocation::Owl(OwlConfig { m: o.m, lambda: o.lambda }),
            None => Allocation::Uniform,
        },
        true_sequential: r.prune.true_sequential,
        layer_errors: r.prune.layer_errors,
        batch_size: r.calibration.as_ref().map_or(1, |c| c.batch_size),
        induce: r.induce.as_ref().map(|i| induce_config(i, scorer, pattern)).transpose()?,
        reconstruct: r.reconstruct.as_ref().map(reconstruct_config).transpose()?,
    })
}

/// `float32`, `bfloat16`, `float16`, or the checkpoint's own dtype.
pub fn kind_of(dtype: Dtype, model_dir: &Path) -> Result<Kind, PipelineError> {
    Ok(match dtype {
        Dtype::Float32 => Kind::Float,
        Dtype::Bfloat16 => Kind::BFloat16,
        Dtype::Float16 => Kind::Half,
        Dtype::Model => ModelConfig::from_file(&model_dir.join("config.json")).map_err(spindle_model::ModelError::from)?.dtype.kind(),
    })
}

/// Which calibration windows a run used, and where they came from.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationInfo {
    pub calib: String,
    pub source: PathBuf,
    pub source_sha256: String,
    pub nsamples: usize,
    pub seqlen: usize,
    pub seed: i64,
    pub note: String,
    /// Each window's `[document, token offset]`.
    pub windows: Vec<(usize, usize)>,
}

/// The calibration windows of `docs` (the reference loaders' draw): a small corpus tokenized
/// through the token cache, a large one (C4's train shard) only where the draw looks, as the
/// reference loader does. The ids are the same either way.
pub fn calibration_windows(
    docs: &Documents,
    corpus: &Corpus,
    tokenizer: &spindle_data::Tokenizer,
    tokens: &TokenCache,
    nsamples: usize,
    seqlen: usize,
    seed: i64,
) -> Result<Vec<spindle_data::corpus::Window>, spindle_data::DataError> {
    if docs.docs.len() <= LAZY_DOCUMENTS {
        let (ids, _) = tokenize_documents(docs, &format!("calib:{corpus}"), tokenizer, tokens)?;
        sample_windows(docs, &mut |i| Ok(ids[i].clone()), nsamples, seqlen, seed)
    } else {
        sample_windows(docs, &mut |i| tokenizer.encode(&docs.docs[i], true), nsamples, seqlen, seed)
    }
}

/// Above this many documents, calibration tokenizes only the documents its draw looks at.
pub const LAZY_DOCUMENTS: usize = 10_000;

/// `[nsamples, seqlen]` calibration ids drawn as the reference loaders draw them from `data`,
/// tokenized by the model's tokenizer (cached in `tokens`).
///
/// Corpora of more documents than [`LAZY_DOCUMENTS`] are tokenized only where the draw looks.
pub fn draw_calibration(
    model_dir: &Path,
    c: &ResolvedCalibration,
    seqlen: usize,
    data: &DataDir,
    tokens: &TokenCache,
) -> Result<(Tensor, CalibrationInfo), PipelineError> {
    let tokenizer = spindle_data::Tokenizer::from_file(&model_dir.join("tokenizer.json"))?;
    let Ok(corpus) = c.source.parse::<Corpus>();
    let docs = calibration_documents(&corpus, data)?;
    let windows = calibration_windows(&docs, &corpus, &tokenizer, tokens, c.nsamples, seqlen, c.seed)?;
    let flat: Vec<i64> = windows.iter().flat_map(|w| w.ids.iter().map(|&t| i64::from(t))).collect();
    let tensor = Tensor::from_slice(&flat).view([c.nsamples as i64, seqlen as i64]);
    let info = CalibrationInfo {
        calib: corpus.to_string(),
        source_sha256: file_sha256(&docs.source)?,
        source: docs.source.clone(),
        nsamples: c.nsamples,
        seqlen,
        seed: c.seed,
        note: docs.note.to_owned(),
        windows: windows.iter().map(|w| (w.doc, w.offset)).collect(),
    };
    Ok((tensor, info))
}

/// What a recipe run reports to its observer as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A phase begins: `"calibration"`, `"load"` or `"prune"`.
    Phase(&'static str),
    /// `done` of `total` blocks.
    Blocks { done: usize, total: usize },
}

/// What [`prune_with_recipe`] did.
#[derive(Debug)]
pub struct RecipeReport {
    /// The recipe as run, with the calibration window length made explicit: what the output
    /// directory's `spindle_recipe.toml` holds.
    pub recipe: Resolved,
    pub calibration: Option<CalibrationInfo>,
    pub prune: PruneReport,
    /// The dtype the model was held in.
    pub kind: Kind,
    pub seconds_calibration: f64,
    pub seconds_load: f64,
}

/// Runs a resolved recipe: draws its calibration windows from `data` (needed exactly when the
/// recipe has a calibration section), opens `model_dir` on
/// `device`, prunes into the new directory `out`, and writes the recipe as run into it
/// ([`RECIPE_FILE`]). The library draws nothing: progress goes to `observer`.
pub fn prune_with_recipe(
    model_dir: &Path,
    recipe: &Resolved,
    out: &Path,
    data: Option<&DataDir>,
    tokens: &TokenCache,
    device: Device,
    observer: &mut dyn FnMut(Event),
) -> Result<RecipeReport, PipelineError> {
    let context = ModelConfig::from_file(&model_dir.join("config.json")).map_err(spindle_model::ModelError::from)?.max_position_embeddings;
    let recipe = recipe.clone().with_context(context);
    let cfg = prune_config(&recipe)?;
    let t0 = Instant::now();
    observer(Event::Phase("calibration"));
    let calib = match &recipe.calibration {
        Some(c) => {
            let data = data.ok_or_else(|| PipelineError::Config("the recipe's calibration needs a data folder".into()))?;
            Some(draw_calibration(model_dir, c, c.seqlen.unwrap_or(2048.min(context)), data, tokens)?)
        }
        None => None,
    };
    let seconds_calibration = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    observer(Event::Phase("load"));
    let kind = kind_of(recipe.dtype, model_dir)?;
    let model = Model::open(model_dir, device, kind)?;
    let seconds_load = t0.elapsed().as_secs_f64();
    let text = recipe.to_toml().map_err(|e| PipelineError::Config(e.to_string()))?;
    observer(Event::Phase("prune"));
    let report =
        prune_model_with_files(&model, calib.as_ref().map(|c| &c.0), &cfg, out, &[(RECIPE_FILE, text.as_bytes())], &mut |d, t| {
            observer(Event::Blocks { done: d, total: t })
        })?;
    Ok(RecipeReport { recipe, calibration: calib.map(|c| c.1), prune: report, kind, seconds_calibration, seconds_load })
}
