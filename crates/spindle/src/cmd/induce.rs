//! `spindle induce` and the `--induce` flags of `spindle prune`: flags → a validated
//! [`InduceConfig`] (before anything is loaded) → `spindle::induce` → a report on the terminal
//! and, with `--json`, a file.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};
use spindle::induce::{BlockInduction, BlockReconstruction, InduceConfig, SiteChoice, induce_model};
use spindle::{mem, output, progress};
use spindle_induce::{DistributionConfig, EquivalentSnlConfig, FeatureConfig, FeatureSource, Measures, PruningAware, Scorer, Snl, Start};
use spindle_model::{Model, Runtime};
use spindle_prune::Pattern;
use tch::Kind;

use crate::Failure;
use crate::cmd::cli::{
    FitArg, InduceArgs, InduceFlags, MethodArg, PruningAwareArg, ReconstructFlags, SitesArg, SnlArg, SnlFeaturesArg, StartArg,
};
use crate::cmd::common::{calibration, model_hashes, parse_pattern};

/// The selection a pruner makes, as the induction stages see it (SparseGPT's is approximated by
/// Wanda's: both are unchanged by absorbable scaling).
pub(crate) fn scorer_of(method: MethodArg, ria_alpha: f64) -> Scorer {
    match method {
        MethodArg::Magnitude => Scorer::Magnitude,
        MethodArg::Wanda | MethodArg::Sparsegpt => Scorer::Wanda,
        MethodArg::Ria => Scorer::Ria { alpha: ria_alpha },
    }
}

/// What the feature stage and the reconstruction take where their flags leave a choice open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FeatureDefaults {
    /// The feature stage's pruning-aware mode.
    pub pruning_aware: PruningAware,
    /// The feature stage's SNL when `--snl` is not given (its λ, unless `--snl-lambda` says, is
    /// [`FeatureConfig`]'s default, 1e-5).
    pub snl: Option<Snl>,
    /// The reconstruction's SNL when `--recon-snl` is not given.
    pub recon_snl: Option<Snl>,
}

/// `spindle prune`'s defaults per pruner for the stages' open choices.
pub(crate) fn prune_defaults(method: MethodArg) -> FeatureDefaults {
    match method {
        MethodArg::Magnitude | MethodArg::Wanda | MethodArg::Ria | MethodArg::Sparsegpt => {
            FeatureDefaults { pruning_aware: PruningAware::Mask, snl: None, recon_snl: None }
        }
    }
}

/// `spindle induce`'s defaults: it runs no pruner, so the scalers train through the target's
/// mask (and no SNL).
pub(crate) fn induce_defaults() -> FeatureDefaults {
    FeatureDefaults { pruning_aware: PruningAware::Mask, snl: None, recon_snl: None }
}

/// A configuration error's own words, without the variant's prefix.
fn problem(e: spindle_induce::InduceError) -> String {
    match e {
        spindle_induce::InduceError::Config(m) => m,
        other => other.to_string(),
    }
}

fn snl_of(arg: SnlArg) -> Option<Snl> {
    match arg {
        SnlArg::Nuclear => Some(Snl::NuclearOverSpectral),
        SnlArg::SpectralFrobenius => Some(Snl::SpectralOverFrobenius),
        SnlArg::SpectralEnergy => Some(Snl::SpectralEnergy),
        SnlArg::None => None,
    }
}

fn source_of(flags: &InduceFlags) -> FeatureSource {
    match flags.snl_features {
        SnlFeaturesArg::Inputs => FeatureSource::LinearInputs,
        SnlFeaturesArg::Output => FeatureSource::BlockOutput,
    }
}

/// Stage two of the induction flags: `None` when no stage is asked for.
pub(crate) fn config(
    flags: &InduceFlags,
    scorer: Scorer,
    pattern: Pattern,
    default_stages: &str,
    defaults: FeatureDefaults,
) -> Result<Option<InduceConfig>, Failure> {
    let stages = flags.induce.as_deref().unwrap_or(default_stages);
    let (mut distribution, mut equivalent, mut feature, mut shift) = (false, false, false, false);
    for stage in stages.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match stage {
            "distribution" => distribution = true,
            "equivalent-snl" => equivalent = true,
            "feature" => feature = true,
            "shift" => shift = true,
            "none" => {}
            other => {
                return Err(Failure::Usage(format!(
                    "--induce: unknown stage {other:?}; the stages are distribution, equivalent-snl, feature, shift (comma-separated), or none"
                )));
            }
        }
    }
    let pruning_aware = match flags.pruning_aware {
        Some(PruningAwareArg::Off) => PruningAware::Off,
        Some(PruningAwareArg::Mask) => PruningAware::Mask,
        Some(PruningAwareArg::Pruned) => {
            return Err(Failure::Usage(
                "--pruning-aware pruned is now `spindle prune --reconstruct`: training on the pruned block, after the pruner, is reconstruction, not induction".into(),
            ));
        }
        None => defaults.pruning_aware,
    };
    if flags.pruning_aware.is_some() && !feature {
        return Err(Failure::Usage("--pruning-aware is an option of the feature stage: it needs --induce ...,feature".into()));
    }
    if !(distribution || equivalent || feature || shift) {
        return Ok(None);
    }
    let usage = |e: spindle_induce::InduceError| Failure::Usage(e.to_string());
    // `None`: the flag was not given.
    let snl = flags.snl.map(snl_of);
    let distribution = if distribution {
        let start = match flags.si_start {
            StartArg::Identity => Start::Identity,
            StartArg::Smoothquant => Start::SmoothQuant { alpha: flags.si_alpha },
            StartArg::ActNorm => Start::ActNorm,
        };
        let c = DistributionConfig {
            scorer,
            pattern,
            start,
            steps: flags.si_steps,
            lr: flags.si_lr,
            temperature: flags.si_temperature,
            max_log_scale: flags.si_max_log_scale,
            ..Default::default()
        };
        Some(c.validate().map_err(usage)?)
    } else {
        None
    };
    let equivalent = if equivalent {
        let Some(snl) = snl.unwrap_or(Some(Snl::NuclearOverSpectral)) else {
            return Err(Failure::Usage("--induce equivalent-snl needs an --snl other than none".into()));
        };
        if !(flags.equiv_max_log_scale > 0.0 && flags.snl_tokens > 0) {
            return Err(Failure::Usage(format!(
                "--equiv-max-log-scale and --snl-tokens must be positive, got {} and {}",
                flags.equiv_max_log_scale, flags.snl_tokens
            )));
        }
        Some(EquivalentSnlConfig {
            snl,
            steps: flags.equiv_steps,
            max_log_scale: flags.equiv_max_log_scale,
            max_tokens: flags.snl_tokens,
            ..Default::default()
        })
    } else {
        None
    };
    let feature = if feature {
        let c = FeatureConfig {
            snl: snl.unwrap_or(defaults.snl),
            lambda: flags.snl_lambda.unwrap_or(FeatureConfig::default().lambda),
            lr: flags.feature_lr,
            epochs: flags.feature_epochs,
            weight_decay: flags.feature_weight_decay,
            source: source_of(flags),
            max_tokens: flags.snl_tokens,
            seed: 0,
        };
        Some(c.validate().map_err(|e| Failure::Usage(format!("the feature stage: {}", problem(e))))?)
    } else {
        None
    };
    let sites = match flags.si_sites {
        SitesArg::All => SiteChoice::All,
        SitesArg::Norms => SiteChoice::Norms,
    };
    let refine = match flags.si_fit {
        FitArg::ClosedForm => None,
        FitArg::Reconstruction => {
            if distribution.is_none() {
                return Err(Failure::Usage("--si-fit is an option of the distribution stage: it needs --induce distribution,...".into()));
            }
            let c = FeatureConfig {
                snl: flags.si_refine_snl.and_then(snl_of),
                lambda: flags.snl_lambda.unwrap_or(FeatureConfig::default().lambda),
                lr: flags.si_refine_lr,
                epochs: flags.si_refine_epochs,
                weight_decay: 0.0,
                source: FeatureSource::LinearInputs,
                max_tokens: flags.snl_tokens,
                seed: 0,
            };
            Some(c.validate().map_err(|e| Failure::Usage(format!("the distribution stage's training: {}", problem(e))))?)
        }
    };
    Ok(Some(InduceConfig { distribution, refine, equivalent, feature, pruning_aware, mask: scorer, pattern, sites, shift }))
}

/// Stage two of the reconstruction flags: `None` without `--reconstruct`.
pub(crate) fn reconstruct_config(
    flags: &ReconstructFlags,
    induce: &InduceFlags,
    defaults: FeatureDefaults,
) -> Result<Option<FeatureConfig>, Failure> {
    if !flags.reconstruct {
        let given = [
            ("--recon-snl", flags.recon_snl.is_some()),
            ("--recon-snl-lambda", flags.recon_snl_lambda.is_some()),
            ("--recon-lr", flags.recon_lr.is_some()),
            ("--recon-epochs", flags.recon_epochs.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            return Err(Failure::Usage(format!("{flag} is an option of the reconstruction: it needs --reconstruct")));
        }
        return Ok(None);
    }
    let d = FeatureConfig::default();
    let c = FeatureConfig {
        snl: flags.recon_snl.map_or(defaults.recon_snl, snl_of),
        lambda: flags.recon_snl_lambda.unwrap_or(d.lambda),
        lr: flags.recon_lr.unwrap_or(d.lr),
        epochs: flags.recon_epochs.unwrap_or(d.epochs),
        weight_decay: 0.0,
        source: source_of(induce),
        max_tokens: induce.snl_tokens,
        seed: 0,
    };
    Ok(Some(c.validate().map_err(|e| Failure::Usage(format!("the reconstruction: {}", problem(e))))?))
}

fn measures_json(m: &[Measures]) -> Value {
    json!(m.iter().map(|m| json!({"true_removed": m.true_removed, "own_removed": m.own_removed, "entropy": m.entropy})).collect::<Vec<_>>())
}

/// The per-block induction figures, as JSON.
pub(crate) fn blocks_json(blocks: &[BlockInduction]) -> Value {
    json!(blocks.iter().map(|b| json!({
        "index": b.index,
        "pattern": pattern_json(b.pattern),
        "seconds": b.seconds,
        "sites": b.sites.iter().map(|s| json!({
            "label": s.label, "stage": s.stage, "objective_before": s.objective_before, "objective_after": s.objective_after,
            "chosen": s.chosen, "scale_min": s.scale_range.0, "scale_max": s.scale_range.1, "histogram": s.histogram,
            "measures_before": measures_json(&s.before), "measures_after": measures_json(&s.after),
        })).collect::<Vec<_>>(),
        "feature_epochs": b.feature_epochs.iter().map(|e| json!({"reconstruction": e.reconstruction, "snl": e.snl})).collect::<Vec<_>>(),
        "scaler_ranges": b.scaler_ranges,
    })).collect::<Vec<_>>())
}

fn snl_json(f: &FeatureConfig) -> Value {
    json!({
        "snl": f.snl.map(|s| s.name()), "snl_lambda": f.lambda, "lr": f.lr, "epochs": f.epochs,
        "weight_decay": f.weight_decay,
        "snl_features": match f.source { FeatureSource::LinearInputs => "inputs", FeatureSource::BlockOutput => "output" },
        "snl_tokens": f.max_tokens,
    })
}

fn scorer_json(s: Scorer) -> Value {
    match s {
        Scorer::Magnitude => json!("magnitude"),
        Scorer::Wanda => json!("wanda"),
        Scorer::Ria { alpha } => json!({"ria": {"alpha": alpha}}),
    }
}

fn pattern_json(p: Pattern) -> Value {
    match p {
        Pattern::Unstructured { sparsity } => json!({"unstructured": sparsity}),
        Pattern::NM { n, m } => json!({"n": n, "m": m}),
    }
}

/// The induction configuration, as JSON.
pub(crate) fn config_json(c: &InduceConfig) -> Value {
    json!({
        "stages": c.stages(),
        "distribution": c.distribution.map(|d| json!({
            "acts": c.distribution_acts(),
            "scorer": scorer_json(d.scorer),
            "fit": if c.refine.is_some() { "reconstruction" } else { "closed-form" },
            "refine": c.refine.as_ref().map(snl_json),
            "start": match d.start {
                Start::Identity => json!("identity"),
                Start::SmoothQuant { alpha } => json!({"smoothquant": {"alpha": alpha}}),
                Start::ActNorm => json!("act-norm"),
            },
            "steps": d.steps, "lr": d.lr, "temperature": d.temperature, "max_log_scale": d.max_log_scale,
        })),
        "equivalent_snl": c.equivalent.map(|e| json!({
            "snl": e.snl.name(), "steps": e.steps, "lr": e.lr, "max_log_scale": e.max_log_scale, "snl_tokens": e.max_tokens,
        })),
        "feature": c.feature.as_ref().map(snl_json),
        "pruning_aware": c.pruning_aware.name(),
        "shift": c.shift,
        "mask": scorer_json(c.mask),
        "pattern": pattern_json(c.pattern),
        "sites": c.sites.name(),
    })
}

/// The reconstruction configuration, as JSON.
pub(crate) fn reconstruct_json(c: &FeatureConfig) -> Value {
    snl_json(c)
}

/// The per-block reconstruction figures, as JSON.
pub(crate) fn reconstruction_json(blocks: &[BlockReconstruction]) -> Value {
    json!(
        blocks
            .iter()
            .map(|b| json!({
                "index": b.index,
                "seconds": b.seconds,
                "epochs": b.epochs.iter().map(|e| json!({"reconstruction": e.reconstruction, "snl": e.snl})).collect::<Vec<_>>(),
                "scaler_ranges": b.scaler_ranges,
            }))
            .collect::<Vec<_>>()
    )
}

/// Mean of the distribution stage's objective before and after, over every site.
pub(crate) fn summary_line(blocks: &[BlockInduction]) -> Option<String> {
    let sites: Vec<_> = blocks.iter().flat_map(|b| b.sites.iter().filter(|s| s.stage == "distribution")).collect();
    let mut out = Vec::new();
    if !sites.is_empty() {
        let n = sites.len() as f64;
        let before = sites.iter().map(|s| s.objective_before).sum::<f64>() / n;
        let after = sites.iter().map(|s| s.objective_after).sum::<f64>() / n;
        out.push(format!("distribution: true importance removed {:.4} -> {:.4} (mean over {} sites)", before, after, sites.len()));
    }
    let last: Vec<f64> = blocks.iter().filter_map(|b| b.feature_epochs.last().map(|e| e.reconstruction)).collect();
    if !last.is_empty() {
        out.push(format!(
            "feature: final relative reconstruction error, mean over blocks {:.3e}",
            last.iter().sum::<f64>() / last.len() as f64
        ));
    }
    (!out.is_empty()).then(|| out.join("\n"))
}

pub fn run(args: InduceArgs, runtime: Runtime, data_flag: Option<&Path>) -> Result<(), Failure> {
    let started = Instant::now();
    let pattern = match &args.pattern {
        Some(p) => parse_pattern(p).map_err(Failure::Usage)?,
        None => Pattern::Unstructured { sparsity: args.sparsity }
            .validate()
            .map_err(|_| Failure::Usage(format!("--sparsity must be in [0, 1), got {}", args.sparsity)))?,
    };
    if !args.ria_alpha.is_finite() {
        return Err(Failure::Usage(format!("--ria-alpha must be finite, got {}", args.ria_alpha)));
    }
    let cfg = config(&args.induce, scorer_of(args.target, args.ria_alpha), pattern, "distribution,feature", induce_defaults())?
        .ok_or_else(|| Failure::Usage("--induce none: nothing to do".into()))?;
    if cfg.shift {
        return Err(Failure::Usage(
            "--induce shift acts through a pruner's statistics and the bias its pruning leaves: use it with `spindle prune --induce shift`"
                .into(),
        ));
    }
    if args.batch_size == 0 || args.nsamples == 0 {
        return Err(Failure::Usage("--batch-size and --nsamples must be at least 1".into()));
    }
    if args.out.exists() {
        return Err(Failure::Usage(format!(
            "--out {} already exists; spindle writes a new directory and never overwrites",
            args.out.display()
        )));
    }
    let dir = crate::cmd::resolve_model(&args.model)?;
    crate::cmd::check_outputs(Some(&args.out), &[("--json", args.json.as_deref())], &crate::cmd::inputs(&dir, &[&args.calib]))?;
    if let Some(plots) = &args.plots {
        spindle::output::check_output_path(
            "--plots",
            plots,
            spindle::output::OutputKind::NewDir,
            &crate::cmd::inputs(&dir, &[&args.calib]),
            &[&args.out],
        )
        .map_err(|e| Failure::Usage(e.to_string()))?;
    }
    let (calib, data_info) = calibration(&dir, &args.calib, args.nsamples, args.seqlen, args.seed, data_flag)?;
    let model = Model::open(&dir, runtime.device, Kind::Float).with_context(|| format!("loading {}", dir.display()))?;
    let bar = progress::items("inducing blocks");
    let report = induce_model(&model, &calib, &cfg, args.batch_size, &args.out, &mut |d, t| progress::update(&bar, d, t))
        .map_err(|e| Failure::Other(anyhow::Error::from(e).context(format!("inducing {}", dir.display()))))?;
    bar.finish_and_clear();
    let peak = mem::peak_rss_bytes();
    say!("sparsity induction ({}) over {} blocks", cfg.stages(), report.blocks.len());
    if let Some(line) = summary_line(&report.blocks) {
        say!("{line}");
    }
    say!("wrote {} in {:.1} s", report.out.display(), report.seconds);
    let plots = match &args.plots {
        Some(dir) if cfg.distribution.is_some() => {
            let (files, labelled) = crate::cmd::plot::write_histograms(dir, &report.blocks, &format!("{:?}", cfg.mask)).map_err(|e| {
                let _ = std::fs::remove_dir_all(dir);
                crate::cmd::roll_back(&report.out, e)
            })?;
            say!(
                "plots: {}{}",
                files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
                if labelled { "" } else { " (no system font found: unlabelled)" }
            );
            json!({"files": files, "labelled": labelled})
        }
        Some(_) => {
            say!("plots: none (they show the distribution stage, which did not run)");
            json!(null)
        }
        None => json!(null),
    };
    if let Some(path) = args.json {
        let value = json!({
            "model": args.model,
            "model_dir": dir,
            "model_sha256": model_hashes(&dir)?,
            "out": report.out,
            "target": match args.target {
                MethodArg::Magnitude => "magnitude",
                MethodArg::Wanda => "wanda",
                MethodArg::Sparsegpt => "sparsegpt",
                MethodArg::Ria => "ria",
            },
            "config": config_json(&cfg),
            "threads": runtime.threads,
            "spindle_version": env!("CARGO_PKG_VERSION"),
            "data": data_info,
            "blocks": blocks_json(&report.blocks),
            "seconds": {"induce_and_save": report.seconds, "total": started.elapsed().as_secs_f64()},
            "peak_rss_bytes": peak,
            "plots": plots,
        });
        output::write_json(&path, &value).map_err(|e| crate::cmd::roll_back(&report.out, e.into()))?;
    }
    Ok(())
}
