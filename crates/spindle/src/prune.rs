//! The sequential pruning pipeline: the lifecycle that walks a model block by block and applies
//! `spindle-prune`'s pure functions to its linears, as the Wanda and SparseGPT scripts do, with
//! one block resident at a time and the pruned model written as it goes.
//!
//! For each block: run the (still dense) block on the calibration inputs while accumulating the
//! method's statistics for every linear (its input columns' norms, or its Hessian); prune every
//! linear; re-run the pruned block to produce the next block's inputs. With `true_sequential`,
//! the linears are pruned group by group in forward order (q/k/v, then o, then gate/up, then
//! down), re-accumulating statistics through the partly pruned block before each group, as the
//! SparseGPT repo's `--true-sequential` does. Magnitude pruning needs no calibration: without
//! calibration inputs no forward pass is run at all.
//!
//! OWL allocation needs per-block outlier ratios of the dense model; they are measured in a
//! separate dense pass before pruning starts (the OWL repo does the same).

use std::path::{Path, PathBuf};
use std::time::Instant;

use spindle_induce::Scorer;
use spindle_model::{BiasSlot, Block, Model};
use spindle_prune::magnitude::Scope;
use spindle_prune::owl::OwlConfig;
use spindle_prune::ria::RiaConfig;
use spindle_prune::{ActNorms, ColumnNorms, Hessian, Pattern, PruneError, SparseGptConfig};
use tch::{Device, Kind, Tensor};

pub(crate) use crate::activations::{Activations, group_columns};
pub use crate::error::PipelineError;

/// Which pruner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    Magnitude(Scope),
    Wanda,
    SparseGpt(SparseGptConfig),
    Ria(RiaConfig),
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Magnitude(_) => "magnitude",
            Method::Wanda => "wanda",
            Method::SparseGpt(_) => "sparsegpt",
            Method::Ria(_) => "ria",
        }
    }

    fn needs_calibration(self) -> bool {
        match self {
            Method::Magnitude(_) => false,
            Method::Wanda | Method::SparseGpt(_) | Method::Ria(_) => true,
        }
    }

    /// This method, ready to accumulate its statistics for an input group of `columns`: the
    /// method owns which statistics it reads, so a new pruner names them here or fails to compile.
    fn prepare(self, columns: i64, device: Device) -> Prepared {
        match self {
            Method::Magnitude(scope) => Prepared::Magnitude(scope),
            Method::Wanda => Prepared::Wanda(ColumnNorms::new(columns, device)),
            Method::Ria(c) => Prepared::Ria(c, ColumnNorms::new(columns, device)),
            Method::SparseGpt(c) => Prepared::SparseGpt(c, Hessian::new(columns, device)),
        }
    }
}

/// The selection a pruner makes, as the induction stages see it. SparseGPT's is approximated by
/// Wanda's: it prunes by `w²/[H⁻¹]²ᵢᵢ`, which like Wanda's score no absorbable scaling changes.
impl From<Method> for Scorer {
    fn from(m: Method) -> Scorer {
        match m {
            Method::Magnitude(_) => Scorer::Magnitude,
            Method::Wanda | Method::SparseGpt(_) => Scorer::Wanda,
            Method::Ria(c) => Scorer::Ria { alpha: c.alpha },
        }
    }
}

/// A method with the statistics it has accumulated for one input group: what pruning that
/// group needs, with no combination of method and statistics that cannot occur.
enum Prepared {
    Magnitude(Scope),
    Wanda(ColumnNorms),
    Ria(RiaConfig, ColumnNorms),
    SparseGpt(SparseGptConfig, Hessian),
}

impl Prepared {
    fn add_batch(&mut self, x: &Tensor) -> Result<(), PruneError> {
        match self {
            Prepared::Magnitude(_) => Ok(()),
            Prepared::Wanda(n) | Prepared::Ria(_, n) => n.add_batch(x),
            Prepared::SparseGpt(_, h) => h.add_batch(x),
        }
    }
}

/// How the target sparsity is shared between blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Allocation {
    Uniform,
    Owl(OwlConfig),
}

/// A validated pruning configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneConfig {
    pub method: Method,
    pub pattern: Pattern,
    pub allocation: Allocation,
    pub true_sequential: bool,
    /// Calibration sequences per forward pass.
    pub batch_size: usize,
    /// Measure every linear's relative reconstruction error ([`LinearReport::rel_error`]) while
    /// the pruned block is re-run. It costs two extra matmuls per linear per calibration batch
    /// (a large share of a Wanda prune; see `docs/results/bench.md`), work the reference scripts never do, so it is
    /// asked for rather than always paid.
    pub layer_errors: bool,
    /// Sparsity Induction applied to each block just before it is pruned.
    pub induce: Option<crate::induce::InduceConfig>,
    /// Reconstruction after pruning: per-channel scalers on each pruned block's input groups,
    /// trained towards the dense block's outputs and merged into the pruned weights (the mask is
    /// kept). Not induction: it acts after the pruner.
    pub reconstruct: Option<spindle_induce::FeatureConfig>,
}

/// What happened to one linear layer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LinearReport {
    /// The full tensor name without `.weight`, e.g. `model.layers.3.mlp.down_proj`.
    pub name: String,
    pub shape: Vec<i64>,
    /// The sparsity asked of this layer.
    pub target: f64,
    /// The share of exact zeros after pruning.
    pub sparsity: f64,
    /// `Σ‖X(W − Ŵ)ᵀ‖² / Σ‖XWᵀ‖²` over the calibration inputs the layer sees in the pruned
    /// block; `None` without calibration or without [`PruneConfig::layer_errors`].
    pub rel_error: Option<f64>,
    /// SparseGPT only: the damping that factorised and the retries before it.
    pub percdamp: Option<f64>,
    pub damp_retries: Vec<(f64, f64)>,
    /// The calibration tokens whose inputs made this layer's statistics: every token for a
    /// dense layer, the tokens routed to it for an expert of a mixture; `None` for a method
    /// that reads none.
    pub calibration_tokens: Option<u64>,
    /// Set when the method could not run on this layer and another rule pruned it: an expert
    /// no calibration token was routed to is pruned by magnitude (one threshold per matrix).
    pub fallback: Option<String>,
}

/// The rule for a layer whose statistics saw no token (an expert no calibration token was
/// routed to): pruned by magnitude, never left dense.
pub const UNREACHED_RULE: &str = "magnitude: no calibration token reached it";

/// One block's figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BlockReport {
    pub index: usize,
    pub target: f64,
    /// OWL's outlier ratio in percent.
    pub outlier_ratio: Option<f64>,
    pub seconds: f64,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PruneReport {
    pub out: PathBuf,
    pub linears: Vec<LinearReport>,
    pub blocks: Vec<BlockReport>,
    /// Zeros over weights, over every decoder linear.
    pub overall_sparsity: f64,
    pub seconds_owl: f64,
    pub seconds_prune: f64,
    /// Per block, when induction ran.
    pub induction: Vec<crate::induce::BlockInduction>,
    /// Per block, when reconstruction ran.
    pub reconstruction: Vec<crate::induce::BlockReconstruction>,
    /// Bias entries the shift added to linears that had none (0 without the shift, or where
    /// every shifted linear already had a bias).
    pub added_bias_parameters: u64,
}

fn prune_err(linear: &str) -> impl Fn(PruneError) -> PipelineError + '_ {
    move |cause| PipelineError::Prune { linear: linear.to_owned(), cause }
}

/// Prunes `model` into `out` as `cfg` says, with `calib` `[nsamples, seqlen]` token ids (needed
/// by every method but magnitude, and by OWL). `progress(done, total)` counts blocks.
pub fn prune_model(
    model: &Model,
    calib: Option<&Tensor>,
    cfg: &PruneConfig,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PruneReport, PipelineError> {
    prune_model_with_files(model, calib, cfg, out, &[], progress)
}

/// [`prune_model`], with `files` (name, bytes) written into the output directory beside the
/// weights, published with them or not at all (the recipe a checkpoint carries).
pub fn prune_model_with_files(
    model: &Model,
    calib: Option<&Tensor>,
    cfg: &PruneConfig,
    out: &Path,
    files: &[(&str, &[u8])],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PruneReport, PipelineError> {
    let _guard = tch::no_grad_guard();
    cfg.pattern.validate().map_err(|e| PipelineError::Config(e.to_string()))?;
    if cfg.batch_size == 0 {
        return Err(PipelineError::Config("the calibration batch size must be at least 1".into()));
    }
    let owl = match cfg.allocation {
        Allocation::Owl(o) => Some(o),
        Allocation::Uniform => None,
    };
    if owl.is_some() && matches!(cfg.pattern, Pattern::NM { .. }) {
        return Err(PipelineError::Config(
            "OWL allocates unstructured sparsity per block; it cannot be combined with an N:M pattern".into(),
        ));
    }
    let induce = cfg.induce.filter(|c| !c.is_empty());
    let needs_calib = cfg.method.needs_calibration() || owl.is_some() || induce.is_some() || cfg.reconstruct.is_some();
    let calib = match calib {
        Some(c) if c.size().len() == 2 && c.size()[0] > 0 => Some(c),
        Some(c) => return Err(PipelineError::Config(format!("calibration ids must be [nsamples > 0, seqlen], got {:?}", c.size()))),
        None if needs_calib => {
            let who = if induce.is_some() {
                "sparsity induction"
            } else if cfg.reconstruct.is_some() {
                "reconstruction"
            } else if owl.is_some() {
                "OWL"
            } else {
                cfg.method.name()
            };
            return Err(PipelineError::Config(format!("{who} needs calibration data")));
        }
        None => None,
    };
    let layers = model.config().num_layers;
    let nsamples = calib.map_or(0, |c| c.size()[0] as usize);

    // OWL: per-block outlier ratios of the dense model, then per-block sparsities.
    let t0 = Instant::now();
    let (targets, ratios) = match (owl, calib) {
        (Some(o), Some(ids)) => {
            let ratios = owl_ratios(model, ids, cfg.batch_size, o, nsamples, progress)?;
            let sparsities =
                spindle_prune::owl::sparsities(&ratios, cfg.pattern.ratio(), o).map_err(|e| PipelineError::Config(e.to_string()))?;
            (sparsities, Some(ratios))
        }
        _ => (vec![cfg.pattern.ratio(); layers], None),
    };
    let seconds_owl = t0.elapsed().as_secs_f64();

    crate::mem::release_free_memory();
    tracing::debug!(
        current_rss_mib = crate::mem::current_rss_bytes().unwrap_or(0) >> 20,
        peak_mib = crate::mem::peak_rss_bytes().unwrap_or(0) >> 20,
        "before the first block"
    );
    let t0 = Instant::now();
    let mut acts = match calib {
        Some(ids) => Some(Activations::embed(model, ids, cfg.batch_size)?),
        None => None,
    };
    // The equivalent shift: which input groups can carry the biases it leaves, and the
    // config.json keys that make transformers load biases it adds.
    let shift_groups: Option<Vec<bool>> =
        induce.filter(|ic| ic.shift).map(|_| model.config().bias_slots().into_iter().map(|s| s != BiasSlot::Impossible).collect());
    if shift_groups.as_ref().is_some_and(|g| !g.iter().any(|x| *x)) {
        return Err(PipelineError::Config(format!(
            "the shift needs linears that can carry a bias, and {} has none",
            model.config().architecture.hf_name()
        )));
    }
    let mut config_keys: Vec<(&str, serde_json::Value)> = Vec::new();
    if shift_groups.is_some() {
        for slot in model.config().bias_slots() {
            if let BiasSlot::Addable(key) = slot
                && !config_keys.iter().any(|(k, _)| *k == key)
            {
                config_keys.push((key, serde_json::Value::Bool(true)));
            }
        }
    }
    let plan = BlockPlan { model, cfg, induce, shift_groups, targets: &targets, ratios: ratios.as_deref() };
    let mut rep = RunReports::default();
    let out_dir = model.save_with_config(out, &config_keys, files, &mut |i| -> Result<Block, PipelineError> {
        progress(i, layers);
        prune_block(&plan, i, &mut acts, &mut rep)
    })?;
    let RunReports { linears, blocks, induction, reconstruction, added_bias_parameters } = rep;
    progress(layers, layers);
    let (zeros, total) = linears.iter().fold((0.0, 0.0), |(z, t), l| {
        let n = l.shape.iter().product::<i64>() as f64;
        (z + l.sparsity * n, t + n)
    });
    Ok(PruneReport {
        out: out_dir,
        linears,
        blocks,
        overall_sparsity: if total > 0.0 { zeros / total } else { 0.0 },
        seconds_owl,
        seconds_prune: t0.elapsed().as_secs_f64(),
        induction,
        reconstruction,
        added_bias_parameters,
    })
}

/// What pruning each block reads: the run's settings, fixed before the first block.
struct BlockPlan<'a> {
    model: &'a Model,
    cfg: &'a PruneConfig,
    induce: Option<crate::induce::InduceConfig>,
    /// The equivalent shift: which input groups can carry the biases it leaves.
    shift_groups: Option<Vec<bool>>,
    /// Each block's sparsity (uniform, or OWL's).
    targets: &'a [f64],
    ratios: Option<&'a [f64]>,
}

/// What the blocks add to as they are pruned.
#[derive(Default)]
struct RunReports {
    linears: Vec<LinearReport>,
    blocks: Vec<BlockReport>,
    induction: Vec<crate::induce::BlockInduction>,
    reconstruction: Vec<crate::induce::BlockReconstruction>,
    added_bias_parameters: u64,
}

/// Block `i`, read from the checkpoint: induced (when asked) for the sparsity it is pruned to,
/// its statistics accumulated over `acts` and its groups pruned (with the shift's biases),
/// reconstructed (when asked), checked against its targets, and re-run so that `acts` become the
/// next block's inputs. Its reports go into `rep`.
fn prune_block(plan: &BlockPlan<'_>, i: usize, acts: &mut Option<Activations>, rep: &mut RunReports) -> Result<Block, PipelineError> {
    let started = Instant::now();
    let mut block = plan.model.block(i)?;
    // Reconstruction trains towards the block's outputs before anything changed it: taken
    // from induction's first pass, else from the pruner's statistics pass, else a pass.
    let mut dense_outputs: Option<Vec<Tensor>> = None;
    let pattern = match plan.cfg.pattern {
        Pattern::Unstructured { .. } => Pattern::Unstructured { sparsity: plan.targets[i] },
        p => p,
    };
    if let (Some(ic), Some(a)) = (&plan.induce, acts.as_ref()) {
        // Induced for the sparsity this block is pruned to (its own under OWL).
        let ic = ic.for_pattern(pattern);
        let (report, outputs) = crate::induce::induce_block(&mut block, a, &ic, plan.cfg.reconstruct.is_some())
            .map_err(|e| e.in_block("sparsity induction", i))?;
        rep.induction.push(report);
        dense_outputs = outputs;
    }
    let keep_outputs = plan.cfg.reconstruct.is_some() && dense_outputs.is_none();
    let prefix = plan.model.block_prefix(i);
    // Each linear's shape, and (for the errors only) its dense weight.
    let dense: Vec<(&'static str, Vec<i64>, Option<Tensor>)> =
        block.linears().map(|(p, l)| (p, l.weight.size(), plan.cfg.layer_errors.then(|| l.weight.copy()))).collect();
    let mut info: Vec<LinearInfo> = Vec::new();
    // Per linear, the calibration tokens its statistics saw.
    let mut tokens: Vec<(&'static str, Option<u64>)> = Vec::new();
    let groups = block.input_groups();
    // The shift of each group (its inputs' mean over the calibration tokens of the dense
    // block), and the group's weights before pruning, for the bias it leaves.
    let shifts: Vec<Option<Tensor>> = match (plan.shift_groups.as_deref(), acts.as_ref()) {
        (Some(allowed), Some(a)) => channel_means(&block, a, allowed)?,
        _ => groups.iter().map(|_| None).collect(),
    };
    let before: Vec<(&'static str, Tensor)> = groups
        .iter()
        .zip(&shifts)
        .filter(|(_, z)| z.is_some())
        .flat_map(|(g, _)| g.iter())
        .filter_map(|p| block.linear_at(p).map(|l| (*p, l.weight.copy())))
        .collect();
    if plan.cfg.true_sequential && acts.is_some() {
        for (k, group) in groups.iter().enumerate() {
            // The first group's pass runs on the still dense block: its outputs are the targets.
            let (stats, seen, outputs) =
                accumulate(&block, acts.as_ref(), plan.cfg.method, &[group], &shifts[k..=k], keep_outputs && k == 0, &prefix)?;
            if outputs.is_some() {
                dense_outputs = outputs;
            }
            tokens.extend(group.iter().map(|p| (*p, seen.first().copied().flatten())));
            let prepared =
                stats.into_iter().next().ok_or_else(|| PipelineError::Config(format!("{prefix}: a group lost its statistics")))?;
            info.extend(prune_group(&mut block, group, prepared, pattern, &prefix)?);
            rep.added_bias_parameters += shift_bias(&mut block, group, shifts[k].as_ref(), &before)?;
        }
    } else {
        let all: Vec<&[&str]> = groups.to_vec();
        let (stats, seen, outputs) = accumulate(&block, acts.as_ref(), plan.cfg.method, &all, &shifts, keep_outputs, &prefix)?;
        if outputs.is_some() {
            dense_outputs = outputs;
        }
        for (group, t) in groups.iter().zip(&seen) {
            tokens.extend(group.iter().map(|p| (*p, *t)));
        }
        for ((group, s), z) in groups.iter().zip(stats).zip(&shifts) {
            info.extend(prune_group(&mut block, group, s, pattern, &prefix)?);
            rep.added_bias_parameters += shift_bias(&mut block, group, z.as_ref(), &before)?;
        }
    }
    drop(before);
    if let (Some(rc), Some(a)) = (&plan.cfg.reconstruct, acts.as_ref()) {
        let targets =
            dense_outputs.take().ok_or_else(|| PipelineError::Config("reconstruction has no dense outputs to train towards".into()))?;
        rep.reconstruction
            .push(crate::induce::reconstruct_block(&mut block, a, rc, &targets).map_err(|e| e.in_block("reconstruction", i))?);
    }
    // Re-run the pruned block: the next block's inputs, and each linear's error.
    let mut err: Vec<(f64, f64)> = vec![(0.0, 0.0); dense.len()];
    if let Some(a) = acts.as_mut() {
        let current: Vec<Tensor> = dense
            .iter()
            .map(|(p, ..)| block.linear_at(p).map(|l| l.weight.shallow_clone()))
            .collect::<Option<_>>()
            .ok_or_else(|| PipelineError::Config("a block lost a linear layer".into()))?;
        let outs = a.run(&block, &mut |paths, x| {
            if !plan.cfg.layer_errors {
                return;
            }
            let x = x.to_kind(Kind::Float);
            for p in paths {
                if let Some((k, Some(w))) = dense.iter().enumerate().find(|(_, (q, ..))| q == p).map(|(k, (.., w))| (k, w)) {
                    let w = w.to_kind(Kind::Float);
                    let dw = &w - current[k].to_kind(Kind::Float);
                    err[k].0 += x.matmul(&dw.tr()).pow_tensor_scalar(2).sum(Kind::Double).double_value(&[]);
                    err[k].1 += x.matmul(&w.tr()).pow_tensor_scalar(2).sum(Kind::Double).double_value(&[]);
                }
            }
        });
        a.batches = outs;
    }
    for (k, (path, shape, _)) in dense.iter().enumerate() {
        let weight = block.linear_at(path).map(|l| &l.weight).ok_or_else(|| PipelineError::Config(format!("no linear {prefix}{path}")))?;
        let pruned = spindle_prune::sparsity(weight);
        check_sparsity(&format!("{prefix}{path}"), shape, pruned, pattern.ratio())?;
        let (percdamp, retries) = info.iter().find(|(p, ..)| p == path).map(|(_, d, r)| (*d, r.clone())).unwrap_or((None, Vec::new()));
        let calibration_tokens = tokens.iter().find(|(p, _)| p == path).and_then(|(_, t)| *t);
        let fallback = (calibration_tokens == Some(0)).then(|| UNREACHED_RULE.to_owned());
        if fallback.is_some() {
            tracing::warn!(linear = %format!("{prefix}{path}"), "no calibration token reached it; pruned by magnitude");
        }
        rep.linears.push(LinearReport {
            name: format!("{prefix}{path}"),
            shape: shape.clone(),
            target: pattern.ratio(),
            sparsity: pruned,
            rel_error: acts.as_ref().filter(|_| plan.cfg.layer_errors).map(|_| if err[k].1 > 0.0 { err[k].0 / err[k].1 } else { 0.0 }),
            percdamp,
            damp_retries: retries,
            calibration_tokens,
            fallback,
        });
    }
    crate::mem::release_free_memory();
    tracing::debug!(
        block = i,
        current_rss_mib = crate::mem::current_rss_bytes().unwrap_or(0) >> 20,
        peak_mib = crate::mem::peak_rss_bytes().unwrap_or(0) >> 20,
        "block pruned"
    );
    rep.blocks.push(BlockReport {
        index: i,
        target: pattern.ratio(),
        outlier_ratio: plan.ratios.map(|r| r[i]),
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(block)
}

/// Whether a linear of `shape` `[out, in]` pruned to `achieved` meets `target`. Every pruner
/// rounds its removed count down per row (Wanda, RIA), per matrix (magnitude) or per 128-column
/// block (SparseGPT), so it may fall short by less than `1/in + 1/out`; anything below that is
/// a pruner that did not prune (a statistic that compared false everywhere), and an error.
fn check_sparsity(linear: &str, shape: &[i64], achieved: f64, target: f64) -> Result<(), PipelineError> {
    let rows = shape.first().copied().unwrap_or(1).max(1) as f64;
    let cols = shape.get(1).copied().unwrap_or(1).max(1) as f64;
    if achieved + 1.0 / cols + 1.0 / rows < target {
        return Err(PipelineError::UnderPruned { linear: linear.to_owned(), achieved, target });
    }
    Ok(())
}

/// What [`accumulate`] returns: per group the method with its statistics (magnitude where the
/// group saw no token), the tokens each group saw, and the block's outputs when they were asked
/// for.
type Accumulated = (Vec<Prepared>, Vec<Option<u64>>, Option<Vec<Tensor>>);

/// Runs the block over the calibration inputs once, accumulating the method's statistics for
/// each of `groups`; with `keep_outputs`, also returns the block's outputs (a method without
/// statistics then still runs the pass for them).
fn accumulate(
    block: &Block,
    acts: Option<&Activations>,
    method: Method,
    groups: &[&[&str]],
    shifts: &[Option<Tensor>],
    keep_outputs: bool,
    prefix: &str,
) -> Result<Accumulated, PipelineError> {
    let without_statistics = || -> Result<Vec<Prepared>, PipelineError> {
        match method {
            Method::Magnitude(scope) => Ok(groups.iter().map(|_| Prepared::Magnitude(scope)).collect()),
            Method::Wanda | Method::SparseGpt(_) | Method::Ria(_) => {
                Err(PipelineError::Config(format!("{} needs calibration data", method.name())))
            }
        }
    };
    let none = || groups.iter().map(|_| None).collect::<Vec<Option<u64>>>();
    let Some(acts) = acts else {
        return Ok((without_statistics()?, none(), None));
    };
    if !method.needs_calibration() {
        let outputs = keep_outputs.then(|| acts.run(block, &mut |_, _| {}));
        return Ok((without_statistics()?, none(), outputs));
    }
    let device = acts.batches[0].device();
    let mut stats: Vec<Prepared> = Vec::with_capacity(groups.len());
    for g in groups {
        stats.push(method.prepare(group_columns(block, g)?, device));
    }
    let mut failure: Option<PipelineError> = None;
    let mut tokens: Vec<u64> = vec![0; groups.len()];
    let mut observer = |paths: &'static [&'static str], x: &Tensor| {
        if failure.is_some() {
            return;
        }
        if let Some(k) = groups.iter().position(|g| g[0] == paths[0]) {
            let width = x.size().last().copied().unwrap_or(1).max(1);
            tokens[k] += (x.numel() as i64 / width) as u64;
            // With the shift, the pruner's statistics see the centred input `x − z`.
            let shifted = shifts.get(k).and_then(Option::as_ref).map(|z| x - z.to_kind(x.kind()));
            let x = shifted.as_ref().unwrap_or(x);
            if let Err(e) = stats[k].add_batch(x) {
                failure = Some(PipelineError::Prune { linear: format!("{prefix}{}", paths[0]), cause: e });
            }
        }
    };
    let outputs = if keep_outputs {
        Some(acts.run(block, &mut observer))
    } else {
        acts.observe(block, &mut observer);
        None
    };
    if let Some(e) = failure {
        return Err(e);
    }
    // A group no token reached (an expert of a mixture) has no statistics: magnitude prunes it.
    let stats = stats.into_iter().zip(&tokens).map(|(s, t)| if *t == 0 { Prepared::Magnitude(Scope::Matrix) } else { s }).collect();
    Ok((stats, tokens.into_iter().map(Some).collect(), outputs))
}

type LinearInfo = (&'static str, Option<f64>, Vec<(f64, f64)>);

/// Per input group where `allowed`, the mean of its input over every calibration token (f32,
/// summed in f64): the equivalent shift `z` of that group.
fn channel_means(block: &Block, acts: &Activations, allowed: &[bool]) -> Result<Vec<Option<Tensor>>, PipelineError> {
    let groups = block.input_groups();
    let mut sums: Vec<Option<(Tensor, i64)>> = groups.iter().map(|_| None).collect();
    acts.observe(block, &mut |paths, x| {
        if let Some(k) = groups.iter().position(|g| g[0] == paths[0])
            && allowed.get(k).copied().unwrap_or(false)
        {
            let c = x.size().last().copied().unwrap_or(0);
            let flat = x.reshape([-1, c]).to_kind(Kind::Double);
            let n = flat.size()[0];
            let add = flat.sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
            sums[k] = Some(match sums[k].take() {
                Some((s, m)) => (s + add, m + n),
                None => (add, n),
            });
        }
    });
    let mut out = Vec::with_capacity(groups.len());
    for (k, g) in groups.iter().enumerate() {
        out.push(match sums[k].take() {
            Some((s, n)) if n > 0 => {
                let z = (s / n as f64).to_kind(Kind::Float);
                if !bool::try_from(z.isfinite().all()).unwrap_or(false) {
                    return Err(PipelineError::Config(format!("the mean input of {} is not finite", g[0])));
                }
                Some(z)
            }
            _ => None,
        });
    }
    Ok(out)
}

/// After a shifted group is pruned: each of its linears computes `W′(x − z) + b + W·z`, which is
/// `W′x + b + (W − W′)·z`, so its bias gains `(W − W′)·z` (a zero bias first where it had none).
/// Returns the bias entries added.
fn shift_bias(
    block: &mut Block,
    group: &[&'static str],
    z: Option<&Tensor>,
    before: &[(&'static str, Tensor)],
) -> Result<u64, PipelineError> {
    let Some(z) = z else { return Ok(0) };
    let mut added = 0;
    for path in group {
        let dense = before
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, w)| w)
            .ok_or_else(|| PipelineError::Config(format!("no dense copy of {path}")))?;
        let l = block.linear_at_mut(path).ok_or_else(|| PipelineError::Config(format!("no linear {path}")))?;
        let kind = l.weight.kind();
        let delta = (dense.to_kind(Kind::Float) - l.weight.to_kind(Kind::Float)).mv(&z.to_kind(Kind::Float));
        l.bias = Some(match l.bias.take() {
            Some(b) => (b.to_kind(Kind::Float) + delta).to_kind(kind),
            None => {
                added += delta.numel() as u64;
                delta.to_kind(kind)
            }
        });
    }
    Ok(added)
}

/// Prunes the linears of one input group in place.
fn prune_group(
    block: &mut Block,
    group: &[&'static str],
    prepared: Prepared,
    pattern: Pattern,
    prefix: &str,
) -> Result<Vec<LinearInfo>, PipelineError> {
    for p in group {
        let name = format!("{prefix}{p}");
        let w = block.linear_at(p).ok_or_else(|| PipelineError::Config(format!("no linear {name}")))?;
        if !bool::try_from(w.weight.isfinite().all()).map_err(|e| prune_err(&name)(e.into()))? {
            return Err(PipelineError::Prune { linear: name, cause: PruneError::NotFinite { what: "its weight, before pruning,".into() } });
        }
    }
    match prepared {
        Prepared::SparseGpt(c, h) => sparsegpt_group(block, group, &h, c, pattern, prefix),
        Prepared::Magnitude(scope) => mask_each(block, group, prefix, |w| spindle_prune::magnitude::mask(w, pattern, scope)),
        Prepared::Wanda(n) => mask_each(block, group, prefix, |w| spindle_prune::wanda::mask(w, n.get()?, pattern)),
        Prepared::Ria(c, n) => mask_each(block, group, prefix, |w| spindle_prune::ria::mask(w, n.get()?, pattern, c)),
    }
}

/// SparseGPT on one group: one pass for the group's shared Hessian (bit for bit what one pass
/// per linear gives), the weights updated in place.
fn sparsegpt_group(
    block: &mut Block,
    group: &[&'static str],
    h: &Hessian,
    c: SparseGptConfig,
    pattern: Pattern,
    prefix: &str,
) -> Result<Vec<LinearInfo>, PipelineError> {
    let mut info = Vec::new();
    let names = group.iter().map(|p| format!("{prefix}{p}")).collect::<Vec<_>>().join(", ");
    let mut ws = Vec::with_capacity(group.len());
    for p in group {
        let name = format!("{prefix}{p}");
        let w = block.linear_at(p).map(|l| l.weight.shallow_clone()).ok_or_else(|| PipelineError::Config(format!("no linear {name}")))?;
        // Each weight's own shape error names it, not the group.
        spindle_prune::check_pattern(&w, pattern).map_err(prune_err(&name))?;
        ws.push(w);
    }
    let outs = spindle_prune::sparsegpt::prune_shared(&ws.iter().collect::<Vec<_>>(), h.get().map_err(prune_err(&names))?, pattern, c)
        .map_err(prune_err(&names))?;
    for (path, o) in group.iter().zip(outs) {
        for r in &o.retries {
            tracing::warn!(linear = %format!("{prefix}{path}"), failed = r.failed_percdamp, next = r.next_percdamp, "Cholesky failed; retrying with more damping");
        }
        let retries = o.retries.iter().map(|r| (r.failed_percdamp, r.next_percdamp)).collect();
        let linear = block.linear_at_mut(path).ok_or_else(|| PipelineError::Config(format!("no linear {prefix}{path}")))?;
        linear.weight = o.weight;
        info.push((*path, Some(o.percdamp), retries));
    }
    Ok(info)
}

/// A mask pruner on each linear of a group: `mask(weight)` chooses what is removed.
fn mask_each(
    block: &mut Block,
    group: &[&'static str],
    prefix: &str,
    mask: impl Fn(&Tensor) -> Result<Tensor, PruneError>,
) -> Result<Vec<LinearInfo>, PipelineError> {
    let mut info = Vec::new();
    for path in group {
        let name = format!("{prefix}{path}");
        let linear = block.linear_at_mut(path).ok_or_else(|| PipelineError::Config(format!("no linear {name}")))?;
        let m = mask(&linear.weight).map_err(prune_err(&name))?;
        linear.weight = spindle_prune::apply_mask(&linear.weight, &m);
        info.push((*path, None, Vec::new()));
    }
    Ok(info)
}

/// OWL's dense pass: each block's outlier ratio from its linears' `|W|·‖x‖` scores.
fn owl_ratios(
    model: &Model,
    ids: &Tensor,
    batch_size: usize,
    cfg: OwlConfig,
    nsamples: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f64>, PipelineError> {
    let layers = model.config().num_layers;
    let mut acts = Activations::embed(model, ids, batch_size)?;
    let mut ratios = Vec::with_capacity(layers);
    for i in 0..layers {
        progress(i, layers);
        let block = model.block(i)?;
        let groups = block.input_groups();
        let device = acts.batches[0].device();
        let mut norms: Vec<ActNorms> = Vec::new();
        for g in groups {
            let columns = group_columns(&block, g)?;
            norms.push(ActNorms::new(columns, nsamples, device));
        }
        let mut failure = None;
        // Per sequence: an expert's norms are over the tokens of each sequence routed to it.
        let outs = acts.run_by_sequence(&block, &mut |paths, x| {
            if let Some(k) = groups.iter().position(|g| g[0] == paths[0])
                && let Err(e) = norms[k].add_batch(x)
            {
                failure = Some(PipelineError::Prune { linear: format!("{}{}", model.block_prefix(i), paths[0]), cause: e });
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let mut scores = Vec::new();
        for (g, n) in groups.iter().zip(&norms) {
            for path in *g {
                let name = format!("{}{path}", model.block_prefix(i));
                let w = &block.linear_at(path).ok_or_else(|| PipelineError::Config(format!("no linear {name}")))?.weight;
                scores.push(spindle_prune::owl::score(w, n.get().map_err(prune_err(&name))?).map_err(prune_err(&name))?);
            }
        }
        ratios.push(spindle_prune::owl::outlier_ratio(&scores, cfg.m).map_err(prune_err(&model.block_prefix(i)))?);
        acts.batches = outs;
    }
    Ok(ratios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linear_pruned_short_of_its_target_is_an_error_rounding_is_not() {
        // Wanda on [32, 64] at 50%: floor(64·0.5) = 32 per row, exactly 0.5.
        assert!(check_sparsity("l", &[32, 64], 0.5, 0.5).is_ok());
        // SparseGPT's per-block rounding on a [3, 200] weight at 70%: 418 of 600 zeros.
        assert!(check_sparsity("l", &[3, 200], 418.0 / 600.0, 0.7).is_ok());
        // F5: Wanda on overflowed statistics kept nearly every weight.
        let err = check_sparsity("model.layers.0.self_attn.q_proj", &[64, 64], 0.0556, 0.5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model.layers.0.self_attn.q_proj: pruned to sparsity 0.0556 where 0.5000 was asked; nothing was written"
        );
        assert!(check_sparsity("l", &[64, 64], 0.45, 0.5).is_err());
    }
}
