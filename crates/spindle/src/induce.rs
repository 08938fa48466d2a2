//! Sparsity Induction on a model, and reconstruction after pruning: the lifecycles that apply
//! `spindle-induce`'s math block by block, either on their own (`spindle induce`, writing the
//! induced dense model) or around each block's pruning (`spindle prune --induce ...
//! --reconstruct`, one pass).
//!
//! For each block, in order: (1) one pass over the calibration inputs that gathers, as needed,
//! each input group's statistics (`max|X|`, `scaler_row`, the first window's tokens for the
//! equivalent SNL) and the block's outputs (what the feature stage, and a later reconstruction,
//! train towards); (2) the distribution level: for each absorbable site of the block
//! (`Block::scaling_sites`), in forward order, scales are fitted and absorbed, and the statistics
//! of the group they scale are rescaled exactly; (3) the equivalent SNL, the same way; (4) the
//! model-changing feature level: scalers on each input group, trained against the block's outputs
//! of step (1), then merged. Stages (1)–(3) leave the block's function unchanged up to float
//! rounding. All of this happens before the pruner sees the block: it is induction.
//!
//! Reconstruction ([`reconstruct_block`]) happens after: the pruner has chosen its mask and
//! updated its weights, and scalers on each input group of the pruned block are trained to bring
//! its outputs back to the dense block's, then merged into the pruned weights (the mask is
//! unchanged). It is a post-pruning reconstruction, not induction, and is named apart.

use std::path::{Path, PathBuf};
use std::time::Instant;

use spindle_induce::distribution::{self, Producer, Site};
use spindle_induce::feature::{self, EpochLoss};
use spindle_induce::{
    ChannelMap, ChannelStats, DistributionConfig, EquivalentSnlConfig, FeatureConfig, FeatureSource, InduceError, Measures, PruningAware,
    Scorer, scale,
};
use spindle_model::{Block, KvRepeat, Model, ScaleProducer, ScalingSite};
use spindle_prune::{Pattern, PruneError};
use tch::{Kind, Tensor};

use crate::activations::{Activations, group_columns};
use crate::error::PipelineError;

/// Which induction stages run, with their options. Every stage here acts before the pruner
/// sees the block; training after pruning is [`PruneConfig::reconstruct`](crate::prune::PruneConfig::reconstruct).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InduceConfig {
    pub distribution: Option<DistributionConfig>,
    /// The distribution stage's scales refined by training (the "trained" variant): after the
    /// closed form, further absorbable scales at the same sites are trained on the block pruned
    /// through the target pruner's mask (straight-through) to reconstruct the dense block's
    /// outputs, optionally with the SNL of the consumers' inputs, then absorbed. The dense
    /// function stays unchanged; only what the pruner selects moves (so nothing for a selection
    /// invariant under scaling). `None`: the closed form alone.
    pub refine: Option<FeatureConfig>,
    pub equivalent: Option<EquivalentSnlConfig>,
    pub feature: Option<FeatureConfig>,
    /// What the feature stage reconstructs: the dense block, or the block through the target
    /// pruner's mask ([`InduceConfig::mask`]).
    pub pruning_aware: PruningAware,
    /// The selection the feature stage prunes through with [`PruningAware::Mask`] (SparseGPT's
    /// is approximated by Wanda's), and the distribution stage optimises for.
    pub mask: Scorer,
    pub pattern: Pattern,
    /// Which absorbable sites the equivalent stages use.
    pub sites: SiteChoice,
    /// The equivalent per-channel shift (`spindle prune` only): each input group's consumers
    /// see `x − z` (`z` the group's mean input on the calibration tokens) and `W·z` goes into
    /// their bias. The dense function is unchanged; the pruner's statistics see centred inputs
    /// (Wanda's column norms, SparseGPT's Hessian), and after pruning each bias keeps
    /// `(W − W′)·z`. Where an architecture has no biases there (Llama), this adds them.
    pub shift: bool,
}

/// Which absorbable sites of a block the equivalent stages rescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteChoice {
    /// Every site of `Block::scaling_sites`.
    All,
    /// Only the sites whose producer is a norm (no pruned matrix is divided by the scales).
    Norms,
}

impl SiteChoice {
    pub fn name(self) -> &'static str {
        match self {
            SiteChoice::All => "all",
            SiteChoice::Norms => "norms",
        }
    }
}

impl InduceConfig {
    /// This configuration for a block pruned to `pattern` (under OWL each block has its own
    /// sparsity): the masks the feature stage prunes through and the selection the distribution
    /// stage optimises for follow it.
    pub fn for_pattern(mut self, pattern: Pattern) -> InduceConfig {
        self.pattern = pattern;
        if let Some(d) = self.distribution.as_mut() {
            d.pattern = pattern;
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.distribution.is_none() && self.equivalent.is_none() && self.feature.is_none() && !self.shift
    }

    /// Whether the distribution stage runs: it is skipped for a pruner whose selection no
    /// absorbable scaling can change (Wanda's score `|W|·‖X‖`, which SparseGPT's is
    /// approximated by), since its outcome there is `D = 1`, the model unchanged bit for bit.
    pub fn distribution_acts(&self) -> bool {
        self.distribution.is_some_and(|d| !d.scorer.invariant_under_scaling())
    }

    /// A short description of the stages, e.g. `distribution+feature(nuclear λ 1e-5,pruning-aware mask)`.
    pub fn stages(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.distribution {
            parts.push(if d.scorer.invariant_under_scaling() {
                "distribution(skipped: the selection is invariant under absorbable scaling)".to_owned()
            } else if let Some(r) = &self.refine {
                format!("distribution(refined by reconstruction through the mask, {})", snl_name(r))
            } else {
                "distribution".to_owned()
            });
        }
        if let Some(e) = &self.equivalent {
            parts.push(format!("equivalent-snl({})", e.snl.name()));
        }
        if let Some(f) = &self.feature {
            parts.push(format!("feature({},pruning-aware {})", snl_name(f), self.pruning_aware.name()));
        }
        if self.shift {
            parts.push("shift".to_owned());
        }
        if parts.is_empty() { "none".to_owned() } else { parts.join("+") }
    }
}

/// `none`, or e.g. `nuclear λ 1e-5`.
pub fn snl_name(f: &FeatureConfig) -> String {
    f.snl.map_or_else(|| "none".to_owned(), |s| format!("{} λ {:e}", s.name(), f.lambda))
}

/// One site of one block. In JSON, `scale_range` is `scale_min` and `scale_max`, and the
/// measures are `measures_before` and `measures_after`.
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

impl serde::Serialize for SiteReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("SiteReport", 10)?;
        st.serialize_field("label", self.label)?;
        st.serialize_field("stage", self.stage)?;
        st.serialize_field("objective_before", &self.objective_before)?;
        st.serialize_field("objective_after", &self.objective_after)?;
        st.serialize_field("chosen", &self.chosen)?;
        st.serialize_field("scale_min", &self.scale_range.0)?;
        st.serialize_field("scale_max", &self.scale_range.1)?;
        st.serialize_field("histogram", &self.histogram)?;
        st.serialize_field("measures_before", &self.before)?;
        st.serialize_field("measures_after", &self.after)?;
        st.end()
    }
}

/// A pattern in reports: `{"unstructured": 0.5}` or `{"n": 2, "m": 4}`.
/// A pattern as every JSON of spindle writes it: `{"unstructured": sparsity}` or `{"n": n, "m": m}`.
pub fn pattern_json(p: Pattern) -> serde_json::Value {
    match p {
        Pattern::Unstructured { sparsity } => serde_json::json!({"unstructured": sparsity}),
        Pattern::NM { n, m } => serde_json::json!({"n": n, "m": m}),
    }
}

pub(crate) fn serialize_pattern<S: serde::Serializer>(p: &Pattern, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&pattern_json(*p), s)
}

/// The histograms' range and bins: `log10(score / median)` over `[lo, hi)`.
pub const HISTOGRAM: (f64, f64, i64) = (-4.0, 2.0, 60);

/// One block's induction.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BlockInduction {
    pub index: usize,
    /// The pattern the block was induced for (under OWL, the block's own sparsity).
    #[serde(serialize_with = "serialize_pattern")]
    pub pattern: Pattern,
    pub sites: Vec<SiteReport>,
    /// Per epoch of the feature stage.
    pub feature_epochs: Vec<EpochLoss>,
    /// `min`/`max` of each trained scaler, by input group.
    pub scaler_ranges: Vec<(f64, f64)>,
    pub seconds: f64,
}

/// `spindle induce`'s whole run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
        Some(KvRepeat { kv_heads, group, head_dim }) => ChannelMap::Repeat { kv_heads, group, head_dim },
        None => ChannelMap::Identity,
    }
}

/// Absorbs `d` at `site` into `block`.
fn absorb(block: &mut Block, site: &ScalingSite, d: &Tensor) -> Result<(), PipelineError> {
    match site.producer {
        ScaleProducer::Norm(path) => {
            let n = block.norm_mut(path).ok_or_else(|| missing(path))?;
            let offset = n.weight_offset();
            if offset == 0.0 {
                let (w, b) = scale::absorb_into_norm(&n.weight, n.bias.as_ref(), d).map_err(ind)?;
                n.weight = w;
                n.bias = b;
            } else {
                // A norm that scales by `offset + w` (Gemma's): that product is what `d` divides.
                let (w, b) = scale::absorb_into_norm(&(&n.weight + offset), n.bias.as_ref(), d).map_err(ind)?;
                n.weight = w - offset;
                n.bias = b;
            }
        }
        ScaleProducer::Linear(path) => {
            let l = block.linear_at_mut(path).ok_or_else(|| missing(path))?;
            let rows = site.producer_row_scales(d, l.weight.size()[0]);
            let (w, b) = scale::absorb_into_rows(&l.weight, l.bias.as_ref(), &rows).map_err(ind)?;
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

/// What the first pass over a block gathered.
struct FirstPass {
    /// Per input group; empty when no statistics were asked for.
    stats: Vec<ChannelStats>,
    /// Per input group, the first batch's input (for the equivalent SNL), when asked for.
    sample: Vec<Option<Tensor>>,
    /// The block's outputs, one per calibration batch, when asked for.
    outputs: Option<Vec<Tensor>>,
}

/// One pass of `block` over `acts` gathering what is asked for: every input group's statistics
/// (with the Gram matrix for the groups read by the linears in `gram_for`), the first batch's
/// inputs, the outputs. Runs no forward pass when nothing is asked for.
fn first_pass(
    block: &Block,
    acts: &Activations,
    stats: bool,
    keep_sample: bool,
    gram_for: &[&str],
    outputs: bool,
) -> Result<FirstPass, PipelineError> {
    let groups = block.input_groups();
    let mut pass = FirstPass { stats: Vec::new(), sample: groups.iter().map(|_| None).collect(), outputs: None };
    if !(stats || keep_sample || outputs) {
        return Ok(pass);
    }
    let device = acts.batches[0].device();
    if stats {
        for g in groups {
            let columns = group_columns(block, g)?;
            pass.stats.push(if g.iter().any(|p| gram_for.contains(p)) {
                ChannelStats::with_gram(columns, device)
            } else {
                ChannelStats::new(columns, device)
            });
        }
    }
    let mut failure = None;
    let mut observer = |paths: &'static [&'static str], x: &Tensor| {
        if let Some(k) = groups.iter().position(|g| g[0] == paths[0]) {
            if let Some(st) = pass.stats.get_mut(k)
                && let Err(e) = st.add_batch(x)
            {
                failure = Some(e);
            }
            if keep_sample && pass.sample[k].is_none() {
                pass.sample[k] = Some(x.to_kind(Kind::Float).copy());
            }
        }
    };
    let outs = if outputs {
        Some(acts.run(block, &mut observer))
    } else {
        acts.observe(block, &mut observer);
        None
    };
    if let Some(e) = failure {
        return Err(ind(e));
    }
    pass.outputs = outs;
    Ok(pass)
}

fn group_of(block: &Block, path: &str) -> Result<usize, PipelineError> {
    block.input_groups().iter().position(|g| g.contains(&path)).ok_or_else(|| missing(path))
}

fn range(d: &Tensor) -> (f64, f64) {
    (d.min().double_value(&[]), d.max().double_value(&[]))
}

/// A group's squared input norms, or `None` for a group no calibration token reached (an expert
/// of a mixture the router never chose), whose masks are chosen by magnitude as the pruner does.
fn reached_sq(stats: &ChannelStats) -> Result<Option<&Tensor>, InduceError> {
    match stats.sq_norms() {
        Ok(sq) => Ok(Some(sq)),
        Err(InduceError::Prune(PruneError::NoStatistics)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn stats_at(stats: &[ChannelStats], k: usize) -> Result<&ChannelStats, PipelineError> {
    stats.get(k).ok_or_else(|| missing("statistics of an input group"))
}

/// Induces one block in place, on its calibration inputs `acts` (which are not changed).
/// `want_outputs`: also return the block's outputs before any stage changed it (a later
/// reconstruction's targets) when this function runs a pass over the block anyway; `None` then
/// means the caller computes them (the pruner's statistics pass can).
pub(crate) fn induce_block(
    block: &mut Block,
    acts: &Activations,
    cfg: &InduceConfig,
    want_outputs: bool,
) -> Result<(BlockInduction, Option<Vec<Tensor>>), PipelineError> {
    let started = Instant::now();
    let mut report = BlockInduction {
        index: block.index(),
        pattern: cfg.pattern,
        sites: Vec::new(),
        feature_epochs: Vec::new(),
        scaler_ranges: Vec::new(),
        seconds: 0.0,
    };
    let _guard = tch::no_grad_guard();
    let distribution = cfg.distribution.filter(|_| cfg.distribution_acts());
    let equivalent = cfg.equivalent;
    let sites: Vec<ScalingSite> = if distribution.is_some() || equivalent.is_some() {
        block.scaling_sites().into_iter().filter(|s| cfg.sites == SiteChoice::All || matches!(s.producer, ScaleProducer::Norm(_))).collect()
    } else {
        Vec::new()
    };
    let producers: Vec<&str> = sites
        .iter()
        .filter_map(|s| match s.producer {
            ScaleProducer::Linear(p) => Some(p),
            ScaleProducer::Norm(_) => None,
        })
        .collect();
    let mask_stats = cfg.feature.is_some() && cfg.pruning_aware == PruningAware::Mask && cfg.mask.uses_statistics();
    // One pass for everything that reads the block before it changes: the sites' statistics
    // (rescaled exactly as scales are absorbed, so the mask-aware feature stage reads them
    // too), the equivalent SNL's sample, and the outputs the feature stage trains towards. The
    // equivalent stages leave the function unchanged, so these outputs are the block's targets.
    let stats = distribution.is_some() || equivalent.is_some() || mask_stats;
    let mut pass = first_pass(
        block,
        acts,
        stats,
        equivalent.is_some(),
        &producers,
        cfg.feature.is_some() || (distribution.is_some() && cfg.refine.is_some()) || (want_outputs && stats),
    )?;
    if let Some(dc) = &distribution {
        for site in &sites {
            let g = group_of(block, site.consumers[0])?;
            let consumers: Vec<Tensor> = site
                .consumers
                .iter()
                .map(|p| block.linear_at(p).map(|l| l.weight.shallow_clone()).ok_or_else(|| missing(p)))
                .collect::<Result<_, _>>()?;
            let producer = match site.producer {
                ScaleProducer::Linear(path) => {
                    let pg = group_of(block, path)?;
                    let w = site.producer_rows_of(&block.linear_at(path).ok_or_else(|| missing(path))?.weight);
                    let st = stats_at(&pass.stats, pg)?;
                    let out_sq = st.output_sq_norms(&w).map_err(ind)?;
                    Some((w, st.sq_norms().map_err(ind)?.shallow_clone(), out_sq))
                }
                ScaleProducer::Norm(_) => None,
            };
            let sq = stats_at(&pass.stats, g)?.sq_norms().map_err(ind)?.shallow_clone();
            let hist = |w: &Tensor, sq: &Tensor| -> Result<Vec<f64>, PipelineError> {
                let (lo, hi, bins) = HISTOGRAM;
                Ok(spindle_induce::measure::log_histogram(&dc.scorer.score(&w.to_kind(Kind::Float), sq).map_err(ind)?, lo, hi, bins))
            };
            let hist_before = hist(&consumers[0], &sq)?;
            let fit = {
                let s = Site {
                    consumers: consumers.iter().collect(),
                    stats: stats_at(&pass.stats, g)?,
                    map: map_of(site),
                    producer: producer.as_ref().map(|(weight, sq_in, out_sq)| Producer { weight, sq_in, out_sq }),
                };
                tch::with_grad(|| distribution::fit(&s, dc)).map_err(ind)?
            };
            absorb(block, site, &fit.scales)?;
            let e = map_of(site).expand(&fit.scales);
            pass.stats[g] = stats_at(&pass.stats, g)?.rescaled(&e).map_err(ind)?;
            let first = block.linear_at(site.consumers[0]).ok_or_else(|| missing(site.consumers[0]))?.weight.shallow_clone();
            let hist_after = hist(&first, stats_at(&pass.stats, g)?.sq_norms().map_err(ind)?)?;
            if let Some(x) = pass.sample[g].as_mut() {
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
    if let Some(ec) = &equivalent {
        for site in &sites {
            let g = group_of(block, site.consumers[0])?;
            let Some(x) = pass.sample[g].as_ref() else {
                return Err(missing("observed input"));
            };
            let (d, before, after) = tch::with_grad(|| feature::fit_equivalent(x, map_of(site), ec)).map_err(ind)?;
            absorb(block, site, &d)?;
            let e = map_of(site).expand(&d);
            if mask_stats {
                pass.stats[g] = stats_at(&pass.stats, g)?.rescaled(&e).map_err(ind)?;
            }
            if let Some(x) = pass.sample[g].as_mut() {
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
    if let (Some(_), Some(rc)) = (&distribution, &cfg.refine) {
        let targets = pass.outputs.as_deref().ok_or_else(|| missing("outputs before the distribution stage"))?;
        let (ds, epochs) = refine_sites(block, acts, &sites, cfg, &pass.stats, targets, rc)?;
        for (site, d) in sites.iter().zip(&ds) {
            absorb(block, site, d)?;
            let g = group_of(block, site.consumers[0])?;
            let e = map_of(site).expand(d);
            pass.stats[g] = stats_at(&pass.stats, g)?.rescaled(&e).map_err(ind)?;
            if let Some(x) = pass.sample[g].as_mut() {
                *x = &*x / e.view([1, -1]).to_kind(Kind::Float);
            }
            report.sites.push(SiteReport {
                label: site.label,
                stage: "distribution-refine",
                objective_before: epochs.first().map_or(0.0, |e| e.reconstruction),
                objective_after: epochs.last().map_or(0.0, |e| e.reconstruction),
                chosen: "trained".to_owned(),
                scale_range: range(d),
                before: Vec::new(),
                after: Vec::new(),
                histogram: None,
            });
        }
    }
    let outputs = pass.outputs.take();
    if let Some(fc) = cfg.feature.as_ref() {
        let targets = outputs.as_deref().ok_or_else(|| missing("outputs before the feature stage"))?;
        let through = match cfg.pruning_aware {
            PruningAware::Mask => {
                Through::Mask { scorer: cfg.mask, pattern: cfg.pattern, stats: if mask_stats { Some(&pass.stats) } else { None } }
            }
            PruningAware::Off => Through::Dense,
        };
        let (epochs, ranges) = train_block(block, acts, fc, through, targets)?;
        report.feature_epochs = epochs;
        report.scaler_ranges = ranges;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok((report, outputs.filter(|_| want_outputs)))
}

/// The trained refinement of the distribution stage: absorbable scales `D_k = exp(δ_k)` at each
/// of `sites`, trained so that the block pruned through `cfg.mask`'s selection (re-chosen on the
/// scaled weights at every step, straight-through) reconstructs `targets`. Producers are
/// divided and consumers multiplied exactly as [`absorb`] will, so the dense function never
/// moves. Returns the scales and the per-epoch losses; the block is left as it came.
fn refine_sites(
    block: &mut Block,
    acts: &Activations,
    sites: &[ScalingSite],
    cfg: &InduceConfig,
    stats: &[ChannelStats],
    targets: &[Tensor],
    rc: &FeatureConfig,
) -> Result<(Vec<Tensor>, Vec<EpochLoss>), PipelineError> {
    let groups = block.input_groups();
    // Per site: its channel count and the group its consumers read.
    let mut sizes = Vec::new();
    let mut consumer_group = Vec::new();
    for site in sites {
        let g = group_of(block, site.consumers[0])?;
        sizes.push(map_of(site).channels(group_columns(block, groups[g])?));
        consumer_group.push(g);
    }
    let linears: Vec<(&'static str, Tensor, Option<Tensor>)> =
        block.linears().map(|(p, l)| (p, l.weight.copy(), l.bias.as_ref().map(Tensor::copy))).collect();
    let norms: Vec<(&'static str, Tensor, Option<Tensor>)> =
        block.norms().map(|(p, n)| (p, n.weight.copy(), n.bias.as_ref().map(Tensor::copy))).collect();
    let device = acts.batches[0].device();
    let sq_of = |g: usize, e: Option<&Tensor>| -> Result<Tensor, InduceError> {
        if !cfg.mask.uses_statistics() {
            return Ok(Tensor::ones([1], (Kind::Float, device)));
        }
        // A group no calibration token reached: its mask is chosen by magnitude.
        let Some(sq) = reached_sq(stats.get(g).ok_or(InduceError::NoStatistics)?)? else {
            return Ok(Tensor::ones([1], (Kind::Float, device)));
        };
        Ok(match e {
            Some(e) => sq / e.detach().pow_tensor_scalar(2),
            None => sq.shallow_clone(),
        })
    };
    let outcome = tch::with_grad(|| {
        feature::train(&sizes, device, acts.batches.len(), rc, &mut |scalers, sample| {
            let ds: Vec<Tensor> = scalers.iter().map(|s| (s - 1.0).exp()).collect();
            // Column scales of each input group, row scales of each producer linear.
            let mut cols: Vec<Option<Tensor>> = groups.iter().map(|_| None).collect();
            for (k, site) in sites.iter().enumerate() {
                cols[consumer_group[k]] = Some(map_of(site).expand(&ds[k]));
            }
            for (path, w, b) in &linears {
                let g = groups
                    .iter()
                    .position(|g| g.contains(path))
                    .ok_or_else(|| InduceError::Shape(format!("{path} is in no input group")))?;
                let mut w = w.to_kind(Kind::Float);
                let mut b = b.as_ref().map(|b| b.to_kind(Kind::Float));
                // Out of place on purpose: `to_kind` to the same kind aliases the block's weight,
                // which an in-place `*=` would change.
                #[allow(clippy::assign_op_pattern)]
                if let Some(e) = &cols[g] {
                    w = w * e.view([1, -1]);
                }
                for (k, site) in sites.iter().enumerate() {
                    #[allow(clippy::assign_op_pattern)]
                    if site.producer == ScaleProducer::Linear(path) {
                        let d = site.producer_row_scales(&ds[k], w.size()[0]);
                        w = w / d.view([-1, 1]);
                        b = b.map(|b| b / &d);
                    }
                }
                let m = cfg.mask.select(&cfg.mask.score(&w.detach(), &sq_of(g, cols[g].as_ref())?)?, cfg.pattern)?;
                let masked = feature::straight_through(&w, &m);
                let l = block.linear_at_mut(path).ok_or_else(|| InduceError::Shape(format!("the block lost {path}")))?;
                l.weight = masked;
                l.bias = b;
            }
            for (path, w, b) in &norms {
                let n = block.norm_mut(path).ok_or_else(|| InduceError::Shape(format!("the block lost {path}")))?;
                n.weight = w.shallow_clone();
                n.bias = b.as_ref().map(Tensor::shallow_clone);
                let offset = n.weight_offset();
                for (k, site) in sites.iter().enumerate() {
                    if site.producer == ScaleProducer::Norm(path) {
                        // A norm that scales by `offset + w` (Gemma's) has that product divided.
                        n.weight = if offset == 0.0 { w / &ds[k] } else { (w + offset) / &ds[k] - offset };
                        n.bias = b.as_ref().map(|b| b / &ds[k]);
                    }
                }
            }
            let x = &acts.batches[sample];
            let mut feats: Vec<Tensor> = Vec::new();
            let out = block.forward_observed(x, acts.ctx(x), &mut |paths, input| {
                if rc.source == FeatureSource::LinearInputs
                    && let Some(g) = groups.iter().position(|g| g[0] == paths[0])
                    && consumer_group.contains(&g)
                {
                    feats.push(input.to_kind(Kind::Float));
                }
            });
            let target = targets[sample].to_kind(Kind::Float);
            let recon = (out.to_kind(Kind::Float) - &target).pow_tensor_scalar(2).mean(Kind::Float)
                / target.pow_tensor_scalar(2).mean(Kind::Float).clamp_min(1e-30);
            if rc.source == FeatureSource::BlockOutput {
                feats.push(out);
            }
            Ok((recon, feats))
        })
    });
    // The block gets its weights back, whatever happened; the caller absorbs the scales.
    for (path, w, b) in linears {
        let l = block.linear_at_mut(path).ok_or_else(|| missing(path))?;
        l.weight = w;
        l.bias = b;
    }
    for (path, w, b) in norms {
        let n = block.norm_mut(path).ok_or_else(|| missing(path))?;
        n.weight = w;
        n.bias = b;
    }
    let outcome = outcome.map_err(ind)?;
    let ds = outcome.scalers.iter().map(|s| (s - 1.0).exp()).collect();
    Ok((ds, outcome.epochs))
}

/// One block's reconstruction after pruning.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BlockReconstruction {
    pub index: usize,
    /// Per epoch.
    pub epochs: Vec<EpochLoss>,
    /// `min`/`max` of each trained scaler, by input group.
    pub scaler_ranges: Vec<(f64, f64)>,
    pub seconds: f64,
}

/// Reconstruction after pruning: scalers on each input group of the pruned `block` (its mask and
/// values fixed) trained to bring its outputs on `acts` back to `targets` (the dense block's
/// outputs there), then merged into the pruned weights, whose zeros therefore stay exactly the
/// pruner's.
pub(crate) fn reconstruct_block(
    block: &mut Block,
    acts: &Activations,
    cfg: &FeatureConfig,
    targets: &[Tensor],
) -> Result<BlockReconstruction, PipelineError> {
    let started = Instant::now();
    let _guard = tch::no_grad_guard();
    let (epochs, scaler_ranges) = train_block(block, acts, cfg, Through::Dense, targets)?;
    Ok(BlockReconstruction { index: block.index(), epochs, scaler_ranges, seconds: started.elapsed().as_secs_f64() })
}

/// Per-epoch losses and the `(min, max)` of each trained scaler.
type Trained = (Vec<EpochLoss>, Vec<(f64, f64)>);

/// Through what the trained scalers act.
enum Through<'a> {
    /// The block as it is (dense, or pruned for a reconstruction): the scalers multiply each
    /// group's input inside the forward pass (`Block::forward_input_scaled`), which is the same
    /// function as scaling the weights' columns, with no gradient through a weight matrix.
    Dense,
    /// The block pruned by `scorer`'s selection under `pattern`, re-chosen on the scaled weights
    /// at every step, straight-through; `stats`: each group's input statistics, for a scorer
    /// that reads them.
    Mask { scorer: Scorer, pattern: Pattern, stats: Option<&'a [ChannelStats]> },
}

/// Trains scalers per input group of `block` towards `targets` (its outputs wanted on `acts`),
/// then merges them into the weights.
fn train_block(
    block: &mut Block,
    acts: &Activations,
    cfg: &FeatureConfig,
    through: Through<'_>,
    targets: &[Tensor],
) -> Result<Trained, PipelineError> {
    let groups = block.input_groups();
    if targets.len() != acts.batches.len() {
        return Err(PipelineError::Config(format!("{} targets for {} calibration batches", targets.len(), acts.batches.len())));
    }
    let mut dense: Vec<Vec<(&'static str, Tensor)>> = Vec::new();
    let mut sizes = Vec::new();
    for g in groups {
        let mut ws = Vec::new();
        for p in *g {
            ws.push((*p, block.linear_at(p).ok_or_else(|| missing(p))?.weight.copy()));
        }
        sizes.push(ws[0].1.size()[1]);
        dense.push(ws);
    }
    let device = acts.batches[0].device();
    let source = cfg.source;
    let features_of = |out: &Tensor, feats: Vec<Tensor>, sample: usize| -> Result<(Tensor, Vec<Tensor>), InduceError> {
        let target = targets[sample].to_kind(Kind::Float);
        let diff = (out.to_kind(Kind::Float) - &target).pow_tensor_scalar(2).mean(Kind::Float);
        let recon = diff / target.pow_tensor_scalar(2).mean(Kind::Float).clamp_min(1e-30);
        let mut feats = feats;
        if source == FeatureSource::BlockOutput {
            feats.push(out.shallow_clone());
        }
        Ok((recon, feats))
    };
    let outcome = tch::with_grad(|| {
        feature::train(&sizes, device, acts.batches.len(), cfg, &mut |scalers, sample| {
            let x = &acts.batches[sample];
            let mut feats: Vec<Tensor> = Vec::new();
            let out = match &through {
                Through::Dense => block
                    .forward_input_scaled(x, acts.ctx(x), scalers, &mut |paths, input| {
                        if source == FeatureSource::LinearInputs && groups.iter().any(|g| g[0] == paths[0]) {
                            feats.push(input.to_kind(Kind::Float));
                        }
                    })
                    .map_err(|e| InduceError::Shape(e.to_string()))?,
                Through::Mask { scorer, pattern, stats } => {
                    for (k, ws) in dense.iter().enumerate() {
                        for (path, w) in ws {
                            let s = scalers[k].to_kind(w.kind());
                            let scaled = w * s.view([1, -1]);
                            let sq = match stats {
                                Some(st) => reached_sq(st.get(k).ok_or(InduceError::NoStatistics)?)?,
                                None => None,
                            };
                            // No statistics asked for, or a group no calibration token reached:
                            // the mask is by magnitude (such a group never runs on a calibration
                            // token, so it adds nothing to the loss either way).
                            let sq_owned;
                            let sq = match sq {
                                Some(sq) => sq,
                                None => {
                                    sq_owned = Tensor::ones([sizes[k]], (Kind::Float, device));
                                    &sq_owned
                                }
                            };
                            let m = scorer.select(&scorer.score(&scaled.detach(), sq)?, *pattern)?;
                            match block.linear_at_mut(path) {
                                Some(l) => l.weight = feature::straight_through(&scaled, &m),
                                None => return Err(InduceError::Shape(format!("the block lost {path}"))),
                            }
                        }
                    }
                    block.forward_observed(x, acts.ctx(x), &mut |paths, input| {
                        if source == FeatureSource::LinearInputs
                            && let Some(k) = groups.iter().position(|g| g[0] == paths[0])
                        {
                            feats.push(input.to_kind(Kind::Float) * scalers[k].view([1, 1, -1]));
                        }
                    })
                }
            };
            features_of(&out, feats, sample)
        })
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
    induce_model_with_files(model, calib, cfg, batch_size, out, &[], progress)
}

/// [`induce_model`], with `files` (name, bytes) written into the output directory beside the
/// weights, published with them or not at all (the record of what was done).
pub fn induce_model_with_files(
    model: &Model,
    calib: &Tensor,
    cfg: &InduceConfig,
    batch_size: usize,
    out: &Path,
    files: &[(&str, &[u8])],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<InduceReport, PipelineError> {
    let _guard = tch::no_grad_guard();
    if cfg.is_empty() {
        return Err(PipelineError::Config("no induction stage was chosen".into()));
    }
    if cfg.shift {
        return Err(PipelineError::Config(
            "the shift acts through a pruner's statistics and the bias its pruning leaves: use it with `spindle prune --induce shift`"
                .into(),
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
    let dir = model.save_with_config(out, &[], files, &mut |i| -> Result<Block, PipelineError> {
        progress(i, layers);
        let mut block = model.block(i).map_err(PipelineError::Model)?;
        blocks.push(induce_block(&mut block, &acts, cfg, false).map_err(|e| e.in_block("sparsity induction", i))?.0);
        acts.batches = acts.run(&block, &mut |_, _| {});
        crate::mem::release_free_memory();
        Ok(block)
    })?;
    progress(layers, layers);
    Ok(InduceReport { out: dir, blocks, seconds: t0.elapsed().as_secs_f64() })
}
