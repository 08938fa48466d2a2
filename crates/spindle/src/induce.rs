//! Sparsity Induction on a model: the lifecycle that applies `spindle-induce`'s math block by
//! block, either on its own (`spindle induce`, writing the induced dense model) or just before each
//! block is pruned (`spindle prune --induce`, one pass).
//!
//! For each block, in order: (1) one statistics pass over the calibration inputs (per input group:
//! `max|X|`, `scaler_row`, and the first window's tokens for the equivalent SNL); (2) the
//! distribution level: for each absorbable site of the block (`Block::scaling_sites`), in forward
//! order, scales are fitted and absorbed, and the statistics of the group they scale are rescaled
//! exactly; (3) the equivalent SNL, the same way; (4) the model-changing feature level: scalers on
//! each input group, trained against the block's output before this stage, then merged.
//! Stages (1)–(3) leave the block's function unchanged up to float rounding.

use std::path::{Path, PathBuf};
use std::time::Instant;

use spindle_induce::distribution::{self, Producer, Site};
use spindle_induce::feature::{self, EpochLoss};
use spindle_induce::{
    ChannelMap, ChannelStats, DistributionConfig, EquivalentSnlConfig, FeatureConfig,
    FeatureSource, InduceError, Measures, PruningAware, Scorer, scale,
};
use spindle_model::{Block, KvRepeat, Model, ScaleProducer, ScalingSite};
use spindle_prune::Pattern;
use tch::{Kind, Tensor};

use crate::prune::{Activations, PipelineError};

/// Which stages run, with their options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InduceConfig {
    pub distribution: Option<DistributionConfig>,
    pub equivalent: Option<EquivalentSnlConfig>,
    pub feature: Option<FeatureConfig>,
    /// The selection the feature stage prunes through with [`PruningAware::Mask`] (SparseGPT's
    /// is approximated by Wanda's). With [`PruningAware::Pruned`] the scalers are trained on the
    /// *pruned* block instead, after the pruner ran (`prune_model` only; `induce_model` refuses
    /// it): the scalers compensate what that pruner leaves, not what a proxy mask would remove.
    pub mask: Scorer,
    pub pattern: Pattern,
    /// Which absorbable sites the equivalent stages use.
    pub sites: SiteChoice,
}

/// Which absorbable sites of a block the equivalent stages rescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteChoice {
    /// Every site of `Block::scaling_sites`.
    All,
    /// Only the sites whose producer is a norm (no pruned matrix is divided by the scales).
    Norms,
}

impl InduceConfig {
    /// Whether the feature stage trains on the pruned block, after the pruner ran.
    pub fn feature_on_pruned(&self) -> bool {
        self.feature.is_some_and(|f| f.pruning_aware == PruningAware::Pruned)
    }

    pub fn is_empty(&self) -> bool {
        self.distribution.is_none() && self.equivalent.is_none() && self.feature.is_none()
    }

    /// A short description of the stages, e.g. `distribution+feature(nuclear λ 1e-5,pruning-aware pruned)`.
    pub fn stages(&self) -> String {
        let mut parts = Vec::new();
        if self.distribution.is_some() {
            parts.push("distribution".to_owned());
        }
        if let Some(e) = &self.equivalent {
            parts.push(format!("equivalent-snl({})", e.snl.name()));
        }
        if let Some(f) = &self.feature {
            let snl = f.snl.map_or_else(|| "none".to_owned(), |s| format!("{} λ {:e}", s.name(), f.lambda));
            parts.push(format!("feature({snl},pruning-aware {})", f.pruning_aware.name()));
        }
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join("+")
        }
    }
}

/// One site of one block.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteReport {
    pub label: &'static str,
    /// `distribution` or `equivalent-snl`.
    pub stage: &'static str,
    pub objective_before: f64,
    pub objective_after: f64,
    pub chosen: String,
    /// min and max of the absorbed scales.
    pub scale_range: (f64, f64),
    /// Measures of the site's matrices (consumers, then a producer linear) before and after
    /// (distribution stage only).
    pub before: Vec<Measures>,
    pub after: Vec<Measures>,
    /// The first consumer's score distribution under the target pruner's scorer, before and
    /// after ([`HISTOGRAM`] bins of `log10(score / median)`); distribution stage only.
    pub histogram: Option<(Vec<f64>, Vec<f64>)>,
}

/// The histograms' range and bins: `log10(score / median)` over `[lo, hi)`.
pub const HISTOGRAM: (f64, f64, i64) = (-4.0, 2.0, 60);

/// One block's induction.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockInduction {
    pub index: usize,
    pub sites: Vec<SiteReport>,
    /// Per epoch of the feature stage.
    pub feature_epochs: Vec<EpochLoss>,
    /// `min`/`max` of each trained scaler, by input group.
    pub scaler_ranges: Vec<(f64, f64)>,
    pub seconds: f64,
}

/// `spindle induce`'s whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct InduceReport {
    pub out: PathBuf,
    pub blocks: Vec<BlockInduction>,
    pub seconds: f64,
}

fn ind(e: InduceError) -> PipelineError {
    PipelineError::Induce(e)
}

fn missing(what: &str) -> PipelineError {
    PipelineError::Config(format!("the block has no {what}"))
}

fn map_of(site: &ScalingSite) -> ChannelMap {
    match site.repeat {
        Some(KvRepeat {
            kv_heads,
            group,
            head_dim,
        }) => ChannelMap::Repeat {
            kv_heads,
            group,
            head_dim,
        },
        None => ChannelMap::Identity,
    }
}

/// Absorbs `d` at `site` into `block`.
fn absorb(block: &mut Block, site: &ScalingSite, d: &Tensor) -> Result<(), PipelineError> {
    match site.producer {
        ScaleProducer::Norm(path) => {
            let n = block.norm_mut(path).ok_or_else(|| missing(path))?;
            let (w, b) = scale::absorb_into_norm(&n.weight, n.bias.as_ref(), d).map_err(ind)?;
            n.weight = w;
            n.bias = b;
        }
        ScaleProducer::Linear(path) => {
            let l = block.linear_at_mut(path).ok_or_else(|| missing(path))?;
            let (w, b) = scale::absorb_into_rows(&l.weight, l.bias.as_ref(), d).map_err(ind)?;
            l.weight = w;
            l.bias = b;
        }
    }
    for path in site.consumers {
        let l = block.linear_at_mut(path).ok_or_else(|| missing(path))?;
        l.weight = scale::absorb_into_columns(&l.weight, d, map_of(site)).map_err(ind)?;
    }
    Ok(())
}

/// Per input group: statistics and the first batch's input (for the equivalent SNL).
struct GroupObs {
    stats: Vec<ChannelStats>,
    sample: Vec<Option<Tensor>>,
}

/// `gram_for`: the paths of producer linears whose input group also needs its Gram matrix.
fn observe_groups(
    block: &Block,
    acts: &Activations,
    keep_sample: bool,
    gram_for: &[&str],
) -> Result<GroupObs, PipelineError> {
    let groups = block.input_groups();
    let device = acts.batches[0].device();
    let mut stats = Vec::new();
    for g in groups {
        let columns = crate::prune::group_columns(block, g)?;
        stats.push(if g.iter().any(|p| gram_for.contains(p)) {
            ChannelStats::with_gram(columns, device)
        } else {
            ChannelStats::new(columns, device)
        });
    }
    let mut sample: Vec<Option<Tensor>> = groups.iter().map(|_| None).collect();
    let mut failure = None;
    acts.observe(block, &mut |paths, x| {
        if let Some(k) = groups.iter().position(|g| g[0] == paths[0]) {
            if let Err(e) = stats[k].add_batch(x) {
                failure = Some(e);
            }
            if keep_sample && sample[k].is_none() {
                sample[k] = Some(x.to_kind(Kind::Float).copy());
            }
        }
    });
    if let Some(e) = failure {
        return Err(ind(e));
    }
    Ok(GroupObs { stats, sample })
}

fn group_of(block: &Block, path: &str) -> Result<usize, PipelineError> {
    block
        .input_groups()
        .iter()
        .position(|g| g.contains(&path))
        .ok_or_else(|| missing(path))
}

fn range(d: &Tensor) -> (f64, f64) {
    (d.min().double_value(&[]), d.max().double_value(&[]))
}

/// Induces one block in place, on its calibration inputs `acts` (which are not changed).
pub(crate) fn induce_block(
    block: &mut Block,
    acts: &Activations,
    cfg: &InduceConfig,
) -> Result<BlockInduction, PipelineError> {
    let started = Instant::now();
    let mut report = BlockInduction {
        index: block.index(),
        sites: Vec::new(),
        feature_epochs: Vec::new(),
        scaler_ranges: Vec::new(),
        seconds: 0.0,
    };
    let _guard = tch::no_grad_guard();
    if cfg.distribution.is_some() || cfg.equivalent.is_some() {
        let sites: Vec<ScalingSite> = block
            .scaling_sites()
            .into_iter()
            .filter(|s| {
                cfg.sites == SiteChoice::All || matches!(s.producer, ScaleProducer::Norm(_))
            })
            .collect();
        let producers: Vec<&str> = sites
            .iter()
            .filter_map(|s| match s.producer {
                ScaleProducer::Linear(p) => Some(p),
                ScaleProducer::Norm(_) => None,
            })
            .collect();
        let mut obs = observe_groups(block, acts, cfg.equivalent.is_some(), &producers)?;
        if let Some(dc) = &cfg.distribution {
            for site in &sites {
                let g = group_of(block, site.consumers[0])?;
                let consumers: Vec<Tensor> = site
                    .consumers
                    .iter()
                    .map(|p| {
                        block
                            .linear_at(p)
                            .map(|l| l.weight.shallow_clone())
                            .ok_or_else(|| missing(p))
                    })
                    .collect::<Result<_, _>>()?;
                let producer = match site.producer {
                    ScaleProducer::Linear(path) => {
                        let pg = group_of(block, path)?;
                        let w = block
                            .linear_at(path)
                            .ok_or_else(|| missing(path))?
                            .weight
                            .shallow_clone();
                        let out_sq = obs.stats[pg].output_sq_norms(&w).map_err(ind)?;
                        Some((
                            w,
                            obs.stats[pg].sq_norms().map_err(ind)?.shallow_clone(),
                            out_sq,
                        ))
                    }
                    ScaleProducer::Norm(_) => None,
                };
                let sq = obs.stats[g].sq_norms().map_err(ind)?.shallow_clone();
                let hist = |w: &Tensor, sq: &Tensor| {
                    let (lo, hi, bins) = HISTOGRAM;
                    spindle_induce::measure::log_histogram(
                        &dc.scorer.score(&w.to_kind(Kind::Float), sq),
                        lo,
                        hi,
                        bins,
                    )
                };
                let hist_before = hist(&consumers[0], &sq);
                let fit = {
                    let s = Site {
                        consumers: consumers.iter().collect(),
                        stats: &obs.stats[g],
                        map: map_of(site),
                        producer: producer.as_ref().map(|(weight, sq_in, out_sq)| Producer {
                            weight,
                            sq_in,
                            out_sq,
                        }),
                    };
                    tch::with_grad(|| distribution::fit(&s, dc)).map_err(ind)?
                };
                absorb(block, site, &fit.scales)?;
                let e = map_of(site).expand(&fit.scales);
                obs.stats[g] = obs.stats[g].rescaled(&e).map_err(ind)?;
                let first = block
                    .linear_at(site.consumers[0])
                    .ok_or_else(|| missing(site.consumers[0]))?
                    .weight
                    .shallow_clone();
                let hist_after = hist(&first, obs.stats[g].sq_norms().map_err(ind)?);
                if let Some(x) = obs.sample[g].as_mut() {
                    *x = &*x / e.view([1, -1]).to_kind(Kind::Float);
                }
                report.sites.push(SiteReport {
                    label: site.label,
                    stage: "distribution",
                    objective_before: fit.objective_before,
                    objective_after: fit.objective_after,
                    chosen: fit.chosen,
                    scale_range: range(&fit.scales),
                    before: fit.before,
                    after: fit.after,
                    histogram: Some((hist_before, hist_after)),
                });
            }
        }
        if let Some(ec) = &cfg.equivalent {
            for site in &sites {
                let g = group_of(block, site.consumers[0])?;
                let Some(x) = obs.sample[g].as_ref() else {
                    return Err(missing("observed input"));
                };
                let (d, before, after) =
                    tch::with_grad(|| feature::fit_equivalent(x, map_of(site), ec)).map_err(ind)?;
                absorb(block, site, &d)?;
                let e = map_of(site).expand(&d);
                if let Some(x) = obs.sample[g].as_mut() {
                    *x = &*x / e.view([1, -1]);
                }
                report.sites.push(SiteReport {
                    label: site.label,
                    stage: "equivalent-snl",
                    objective_before: before,
                    objective_after: after,
                    chosen: String::new(),
                    scale_range: range(&d),
                    before: Vec::new(),
                    after: Vec::new(),
                    histogram: None,
                });
            }
        }
    }
    if let Some(fc) = cfg.feature.as_ref().filter(|_| !cfg.feature_on_pruned()) {
        let (epochs, ranges) = train_block(block, acts, fc, Some((cfg.mask, cfg.pattern)), None)?;
        report.feature_epochs = epochs;
        report.scaler_ranges = ranges;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The feature stage on a block that has just been pruned ([`PruningAware::Pruned`]):
/// scalers on each input group of the pruned weights (mask and values fixed), trained against
/// `targets` (the block's outputs on `acts` before pruning), merged into the pruned weights.
/// Adds the losses, scaler ranges and time to `report`.
pub(crate) fn train_pruned_block(
    block: &mut Block,
    acts: &Activations,
    cfg: &FeatureConfig,
    targets: Vec<Tensor>,
    report: &mut BlockInduction,
) -> Result<(), PipelineError> {
    let started = Instant::now();
    let _guard = tch::no_grad_guard();
    let (epochs, ranges) = train_block(block, acts, cfg, None, Some(targets))?;
    report.feature_epochs = epochs;
    report.scaler_ranges = ranges;
    report.seconds += started.elapsed().as_secs_f64();
    Ok(())
}

/// Per-epoch losses and the `(min, max)` of each trained scaler.
type Trained = (Vec<EpochLoss>, Vec<(f64, f64)>);

/// The model-changing stage on one block: scalers per input group, trained, merged.
/// `mask`: the selection a [`PruningAware::Mask`] run trains through (straight-through).
/// `targets`: the outputs to reconstruct (default: the block's own before
/// this stage).
fn train_block(
    block: &mut Block,
    acts: &Activations,
    cfg: &FeatureConfig,
    mask: Option<(Scorer, Pattern)>,
    targets: Option<Vec<Tensor>>,
) -> Result<Trained, PipelineError> {
    let groups = block.input_groups();
    // Targets: the block's output before this stage; the current weights; each group's
    // statistics (for the pruning-aware masks).
    let targets: Vec<Tensor> = match targets {
        Some(t) => t,
        None => acts.run(block, &mut |_, _| {}),
    };
    let obs = match mask {
        Some(m) if cfg.pruning_aware == PruningAware::Mask => Some((m, observe_groups(block, acts, false, &[])?)),
        _ => None,
    };
    let mut dense: Vec<Vec<(&'static str, Tensor)>> = Vec::new();
    let mut sizes = Vec::new();
    for g in groups {
        let mut ws = Vec::new();
        for p in *g {
            ws.push((
                *p,
                block.linear_at(p).ok_or_else(|| missing(p))?.weight.copy(),
            ));
        }
        sizes.push(ws[0].1.size()[1]);
        dense.push(ws);
    }
    let device = acts.batches[0].device();
    let outcome = tch::with_grad(|| {
        feature::train(
            &sizes,
            device,
            acts.batches.len(),
            cfg,
            &mut |scalers, sample| {
                for (k, ws) in dense.iter().enumerate() {
                    for (path, w) in ws {
                        let s = scalers[k].to_kind(w.kind());
                        let mut scaled = w * s.view([1, -1]);
                        if let Some(((mask, pattern), obs)) = &obs {
                            let sq = obs.stats[k].sq_norms()?;
                            let m = mask.select(&mask.score(&scaled.detach(), sq), *pattern)?;
                            scaled = feature::straight_through(&scaled, &m);
                        }
                        match block.linear_at_mut(path) {
                            Some(l) => l.weight = scaled,
                            None => {
                                return Err(InduceError::Shape(format!("the block lost {path}")));
                            }
                        }
                    }
                }
                let x = &acts.batches[sample];
                let mut feats: Vec<Tensor> = Vec::new();
                let out = block.forward_observed(x, acts.ctx(x), &mut |paths, input| {
                    if cfg.source == FeatureSource::LinearInputs
                        && let Some(k) = groups.iter().position(|g| g[0] == paths[0])
                    {
                        feats.push(input.to_kind(Kind::Float) * scalers[k].view([1, 1, -1]));
                    }
                });
                let target = &targets[sample];
                let diff = (out.to_kind(Kind::Float) - target.to_kind(Kind::Float))
                    .pow_tensor_scalar(2)
                    .mean(Kind::Float);
                let recon = diff
                    / target
                        .to_kind(Kind::Float)
                        .pow_tensor_scalar(2)
                        .mean(Kind::Float)
                        .clamp_min(1e-30);
                if cfg.source == FeatureSource::BlockOutput {
                    feats.push(out);
                }
                Ok((recon, feats))
            },
        )
    });
    // Whatever happened, the block gets plain (detached) weights back.
    let merged = match &outcome {
        Ok(o) => Some(&o.scalers),
        Err(_) => None,
    };
    for (k, ws) in dense.iter().enumerate() {
        for (path, w) in ws {
            let l = block.linear_at_mut(path).ok_or_else(|| missing(path))?;
            l.weight = match merged {
                Some(s) => (w * s[k].to_kind(w.kind()).view([1, -1])).detach(),
                None => w.shallow_clone(),
            };
        }
    }
    let outcome = outcome.map_err(ind)?;
    let ranges = outcome.scalers.iter().map(range).collect();
    Ok((outcome.epochs, ranges))
}

/// Induces `model` into `out` (the induced dense model), with calibration ids `[nsamples,
/// seqlen]`. `progress(done, total)` counts blocks.
pub fn induce_model(
    model: &Model,
    calib: &Tensor,
    cfg: &InduceConfig,
    batch_size: usize,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<InduceReport, PipelineError> {
    let _guard = tch::no_grad_guard();
    if cfg.is_empty() {
        return Err(PipelineError::Config(
            "no induction stage was chosen".into(),
        ));
    }
    if cfg.feature_on_pruned() {
        return Err(PipelineError::Config(
            "the feature stage on the pruned block (pruning-aware `pruned`) needs a pruner: use it with `spindle prune --induce`".into(),
        ));
    }
    if calib.size().len() != 2 || calib.size()[0] == 0 || batch_size == 0 {
        return Err(PipelineError::Config(format!(
            "calibration ids must be [nsamples > 0, seqlen] with a batch size ≥ 1, got {:?}",
            calib.size()
        )));
    }
    let t0 = Instant::now();
    let layers = model.config().num_layers;
    let mut acts = Activations::embed(model, calib, batch_size).map_err(PipelineError::Model)?;
    let mut blocks = Vec::new();
    let dir = model.save(out, &mut |i| -> Result<Block, PipelineError> {
        progress(i, layers);
        let mut block = model.block(i).map_err(PipelineError::Model)?;
        blocks.push(induce_block(&mut block, &acts, cfg)?);
        acts.batches = acts.run(&block, &mut |_, _| {});
        crate::mem::release_free_memory();
        Ok(block)
    })?;
    progress(layers, layers);
    Ok(InduceReport {
        out: dir,
        blocks,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
