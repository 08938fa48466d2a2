//! Flags → recipe fields: the command line is a thin mapping onto [`Recipe`]. A flag given sets
//! its field (over a `--recipe` file's); a flag that configures a stage which does not run is a
//! usage error naming the flag. Defaults and range checks are the recipe's
//! ([`Recipe::resolve`]), never decided here.

use spindle::recipe::{
    AllocationName, Calibration, Distribution, Dtype, EquivalentSnl, Feature, Fit, Induce, MagnitudeOptions, MethodName, Nm, Owl,
    PruningAware, Recipe, Reconstruct, Refine, RiaOptions, Scope, Sites, Snl, SnlFeatures, SparseGptOptions, Stage, Start,
};

use crate::Failure;
use crate::cmd::cli::{
    AllocationArg, CalibFlags, DtypeArg, FitArg, InduceFlags, MethodArg, PruneArgs, PruningAwareArg, ReconstructFlags, ScopeArg, SitesArg,
    SnlArg, SnlFeaturesArg, StartArg,
};

fn usage(m: impl Into<String>) -> Failure {
    Failure::Usage(m.into())
}

pub(crate) fn method(m: MethodArg) -> MethodName {
    match m {
        MethodArg::Magnitude => MethodName::Magnitude,
        MethodArg::Wanda => MethodName::Wanda,
        MethodArg::Sparsegpt => MethodName::SparseGpt,
        MethodArg::Ria => MethodName::Ria,
    }
}

fn snl(s: SnlArg) -> Snl {
    match s {
        SnlArg::Nuclear => Snl::Nuclear,
        SnlArg::SpectralFrobenius => Snl::SpectralFrobenius,
        SnlArg::SpectralEnergy => Snl::SpectralEnergy,
        SnlArg::None => Snl::None,
    }
}

fn features(f: SnlFeaturesArg) -> SnlFeatures {
    match f {
        SnlFeaturesArg::Inputs => SnlFeatures::Inputs,
        SnlFeaturesArg::Output => SnlFeatures::Output,
    }
}

/// `"2:4"` → an N:M pattern; the only place a pattern is a string.
pub fn parse_pattern(s: &str) -> Result<Nm, Failure> {
    s.parse::<Nm>().map_err(|e| usage(format!("--pattern {e}")))
}

/// `"distribution,feature"` → the stages; `none` (or nothing) is no stage.
pub fn parse_stages(s: &str) -> Result<Vec<Stage>, Failure> {
    let mut out = Vec::new();
    for stage in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        out.push(match stage {
            "distribution" => Stage::Distribution,
            "equivalent-snl" => Stage::EquivalentSnl,
            "feature" => Stage::Feature,
            "shift" => Stage::Shift,
            "none" => continue,
            other => {
                return Err(usage(format!(
                    "--induce: unknown stage {other:?}; the stages are distribution, equivalent-snl, feature, shift (comma-separated), or none"
                )));
            }
        });
    }
    Ok(out)
}

impl CalibFlags {
    /// Sets the calibration fields these flags give.
    pub fn apply(&self, c: &mut Calibration) {
        if let Some(v) = &self.calib {
            c.source = Some(v.clone());
        }
        c.nsamples = self.nsamples.or(c.nsamples);
        c.seqlen = self.seqlen.or(c.seqlen);
        c.seed = self.seed.or(c.seed);
    }

    fn given(&self) -> bool {
        self.calib.is_some() || self.nsamples.is_some() || self.seqlen.is_some() || self.seed.is_some()
    }
}

/// Sets the `[induce]` fields the induction flags give, over `induce` (a recipe's), where
/// `default_stages` run when neither names any; `reconstruct` is whether the reconstruction runs
/// (it shares `--snl-features` and `--snl-tokens`).
pub fn apply_induce(
    flags: &InduceFlags,
    induce: &mut Option<Induce>,
    default_stages: &[Stage],
    reconstruct: Option<&mut Reconstruct>,
) -> Result<(), Failure> {
    if flags.pruning_aware == Some(PruningAwareArg::Pruned) {
        return Err(usage(
            "--pruning-aware pruned is now `spindle prune --reconstruct`: training on the pruned block, after the pruner, is reconstruction, not induction",
        ));
    }
    let mut i = induce.take().unwrap_or_default();
    if let Some(s) = &flags.induce {
        i.stages = Some(parse_stages(s)?);
    }
    let stages = i.stages.clone().unwrap_or_else(|| default_stages.to_vec());
    let on = |s: Stage| stages.contains(&s);
    let need = |stage: Stage, flag: &str| -> Result<(), Failure> {
        if on(stage) { Ok(()) } else { Err(usage(format!("{flag} is an option of the {stage} stage: it needs --induce ...,{stage}"))) }
    };
    if let Some(s) = flags.si_sites {
        if stages.is_empty() {
            return Err(usage("--si-sites is an option of the induction stages: it needs --induce"));
        }
        i.sites = Some(match s {
            SitesArg::All => Sites::All,
            SitesArg::Norms => Sites::Norms,
        });
    }

    // The distribution stage.
    let distribution_flags = [
        ("--si-start", flags.si_start.is_some()),
        ("--si-alpha", flags.si_alpha.is_some()),
        ("--si-steps", flags.si_steps.is_some()),
        ("--si-lr", flags.si_lr.is_some()),
        ("--si-temperature", flags.si_temperature.is_some()),
        ("--si-max-log-scale", flags.si_max_log_scale.is_some()),
        ("--si-fit", flags.si_fit.is_some()),
        ("--si-refine-epochs", flags.si_refine_epochs.is_some()),
        ("--si-refine-lr", flags.si_refine_lr.is_some()),
        ("--si-refine-snl", flags.si_refine_snl.is_some()),
    ];
    for (flag, _) in distribution_flags.iter().filter(|(_, g)| *g) {
        need(Stage::Distribution, flag)?;
    }
    if on(Stage::Distribution) && distribution_flags.iter().any(|(_, g)| *g) {
        let d = i.distribution.get_or_insert_with(Distribution::default);
        if let Some(s) = flags.si_start {
            d.start = Some(match s {
                StartArg::Identity => Start::Identity,
                StartArg::Smoothquant => Start::SmoothQuant,
                StartArg::ActNorm => Start::ActNorm,
            });
        }
        d.smoothquant_alpha = flags.si_alpha.or(d.smoothquant_alpha);
        d.steps = flags.si_steps.or(d.steps);
        d.lr = flags.si_lr.or(d.lr);
        d.temperature = flags.si_temperature.or(d.temperature);
        d.max_log_scale = flags.si_max_log_scale.or(d.max_log_scale);
        if let Some(f) = flags.si_fit {
            d.fit = Some(match f {
                FitArg::ClosedForm => Fit::ClosedForm,
                FitArg::Reconstruction => Fit::Reconstruction,
            });
        }
        if flags.si_refine_epochs.is_some() || flags.si_refine_lr.is_some() || flags.si_refine_snl.is_some() {
            if d.fit != Some(Fit::Reconstruction) {
                return Err(usage("--si-refine-epochs, --si-refine-lr and --si-refine-snl are options of --si-fit reconstruction"));
            }
            let r = d.refine.get_or_insert_with(Refine::default);
            r.epochs = flags.si_refine_epochs.or(r.epochs);
            r.lr = flags.si_refine_lr.or(r.lr);
            r.snl = flags.si_refine_snl.map(snl).or(r.snl);
        }
    }
    let refines = on(Stage::Distribution) && i.distribution.as_ref().is_some_and(|d| d.fit == Some(Fit::Reconstruction));

    // The feature stage.
    let feature_flags = [
        ("--feature-lr", flags.feature_lr.is_some()),
        ("--feature-epochs", flags.feature_epochs.is_some()),
        ("--feature-weight-decay", flags.feature_weight_decay.is_some()),
        ("--pruning-aware", flags.pruning_aware.is_some()),
    ];
    for (flag, _) in feature_flags.iter().filter(|(_, g)| *g) {
        need(Stage::Feature, flag)?;
    }
    // The equivalent SNL stage.
    for (flag, given) in [("--equiv-steps", flags.equiv_steps.is_some()), ("--equiv-max-log-scale", flags.equiv_max_log_scale.is_some())] {
        if given {
            need(Stage::EquivalentSnl, flag)?;
        }
    }

    // Options several parts share: each sets every part in use, and needs one.
    let users = |flag: &str, parts: &str, any: bool| -> Result<(), Failure> {
        if any { Ok(()) } else { Err(usage(format!("{flag} is an option of {parts}, and none of them runs"))) }
    };
    if flags.snl.is_some() {
        users("--snl", "the feature and equivalent-snl stages", on(Stage::Feature) || on(Stage::EquivalentSnl))?;
    }
    if flags.snl_lambda.is_some() {
        users("--snl-lambda", "the feature stage and --si-fit reconstruction", on(Stage::Feature) || refines)?;
    }
    let reconstructs = reconstruct.is_some();
    if flags.snl_features.is_some() {
        users("--snl-features", "the feature stage and --reconstruct", on(Stage::Feature) || reconstructs)?;
    }
    if flags.snl_tokens.is_some() {
        users(
            "--snl-tokens",
            "the feature and equivalent-snl stages, --si-fit reconstruction and --reconstruct",
            on(Stage::Feature) || on(Stage::EquivalentSnl) || refines || reconstructs,
        )?;
    }
    if on(Stage::Feature) {
        let any = feature_flags.iter().any(|(_, g)| *g)
            || flags.snl.is_some()
            || flags.snl_lambda.is_some()
            || flags.snl_features.is_some()
            || flags.snl_tokens.is_some();
        if any {
            let f = i.feature.get_or_insert_with(Feature::default);
            f.lr = flags.feature_lr.or(f.lr);
            f.epochs = flags.feature_epochs.or(f.epochs);
            f.weight_decay = flags.feature_weight_decay.or(f.weight_decay);
            if let Some(p) = flags.pruning_aware {
                f.pruning_aware = Some(if p == PruningAwareArg::Off { PruningAware::Off } else { PruningAware::Mask });
            }
            f.snl = flags.snl.map(snl).or(f.snl);
            f.snl_lambda = flags.snl_lambda.or(f.snl_lambda);
            f.snl_features = flags.snl_features.map(features).or(f.snl_features);
            f.snl_tokens = flags.snl_tokens.or(f.snl_tokens);
        }
    }
    if on(Stage::EquivalentSnl)
        && (flags.equiv_steps.is_some() || flags.equiv_max_log_scale.is_some() || flags.snl.is_some() || flags.snl_tokens.is_some())
    {
        let e = i.equivalent_snl.get_or_insert_with(EquivalentSnl::default);
        e.steps = flags.equiv_steps.or(e.steps);
        e.max_log_scale = flags.equiv_max_log_scale.or(e.max_log_scale);
        e.snl = flags.snl.map(snl).or(e.snl);
        e.snl_tokens = flags.snl_tokens.or(e.snl_tokens);
    }
    if refines && (flags.snl_lambda.is_some() || flags.snl_tokens.is_some()) {
        let r = i.distribution.get_or_insert_with(Distribution::default).refine.get_or_insert_with(Refine::default);
        r.snl_lambda = flags.snl_lambda.or(r.snl_lambda);
        r.snl_tokens = flags.snl_tokens.or(r.snl_tokens);
    }
    if let Some(r) = reconstruct {
        r.snl_features = flags.snl_features.map(features).or(r.snl_features);
        r.snl_tokens = flags.snl_tokens.or(r.snl_tokens);
    }
    *induce = (i != Induce::default()).then_some(i);
    Ok(())
}

/// `spindle prune`'s flags over `base` (a `--recipe` file's recipe, or the empty one).
pub fn prune_recipe(args: &PruneArgs, base: Recipe) -> Result<Recipe, Failure> {
    let mut r = base;
    let mut p = r.prune.take().unwrap_or_default();
    if let Some(m) = args.method {
        p.method = Some(method(m));
    }
    if let Some(s) = args.sparsity {
        (p.sparsity, p.pattern) = (Some(s), None);
    }
    if let Some(s) = &args.pattern {
        (p.sparsity, p.pattern) = (None, Some(parse_pattern(s)?));
    }
    if let Some(a) = args.allocation {
        p.allocation = Some(match a {
            AllocationArg::Uniform => AllocationName::Uniform,
            AllocationArg::Owl => AllocationName::Owl,
        });
    }
    if args.owl_m.is_some() || args.owl_lambda.is_some() {
        if p.allocation != Some(AllocationName::Owl) {
            return Err(usage("--owl-m and --owl-lambda are options of --allocation owl"));
        }
        let o = p.owl.get_or_insert_with(Owl::default);
        o.m = args.owl_m.or(o.m);
        o.lambda = args.owl_lambda.or(o.lambda);
    }
    if args.true_sequential {
        p.true_sequential = Some(true);
    }
    if args.layer_errors {
        p.layer_errors = Some(true);
    }
    let only = |flag: &str, owner: MethodName| -> Result<(), Failure> {
        match p.method {
            Some(m) if m != owner => Err(usage(format!("{flag} of --method {owner}, not {m}"))),
            _ => Ok(()),
        }
    };
    if let Some(s) = args.magnitude_scope {
        only("--magnitude-scope is an option", MethodName::Magnitude)?;
        p.magnitude = Some(MagnitudeOptions {
            scope: Some(match s {
                ScopeArg::Matrix => Scope::Matrix,
                ScopeArg::Row => Scope::Row,
            }),
        });
    }
    if let Some(a) = args.ria_alpha {
        only("--ria-alpha is an option", MethodName::Ria)?;
        p.ria = Some(RiaOptions { alpha: Some(a) });
    }
    if args.percdamp.is_some() || args.max_percdamp.is_some() || args.blocksize.is_some() {
        only("--percdamp, --max-percdamp and --blocksize are options", MethodName::SparseGpt)?;
        let s = p.sparsegpt.get_or_insert_with(SparseGptOptions::default);
        s.percdamp = args.percdamp.or(s.percdamp);
        s.max_percdamp = args.max_percdamp.or(s.max_percdamp);
        s.blocksize = args.blocksize.or(s.blocksize);
    }
    r.prune = Some(p);
    if let Some(d) = args.dtype {
        r.dtype = Some(dtype_of(d));
    }
    if args.calib.given() || args.batch_size.is_some() {
        let c = r.calibration.get_or_insert_with(Calibration::default);
        args.calib.apply(c);
        c.batch_size = args.batch_size.or(c.batch_size);
    }
    apply_reconstruct(&args.reconstruct, &mut r.reconstruct)?;
    apply_induce(&args.induce, &mut r.induce, &[], r.reconstruct.as_mut())?;
    Ok(r)
}

fn apply_reconstruct(flags: &ReconstructFlags, reconstruct: &mut Option<Reconstruct>) -> Result<(), Failure> {
    if flags.reconstruct && reconstruct.is_none() {
        *reconstruct = Some(Reconstruct::default());
    }
    let given = [
        ("--recon-snl", flags.recon_snl.is_some()),
        ("--recon-snl-lambda", flags.recon_snl_lambda.is_some()),
        ("--recon-lr", flags.recon_lr.is_some()),
        ("--recon-epochs", flags.recon_epochs.is_some()),
    ];
    let Some(r) = reconstruct else {
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            return Err(usage(format!("{flag} is an option of the reconstruction: it needs --reconstruct")));
        }
        return Ok(());
    };
    r.snl = flags.recon_snl.map(snl).or(r.snl);
    r.snl_lambda = flags.recon_snl_lambda.or(r.snl_lambda);
    r.lr = flags.recon_lr.or(r.lr);
    r.epochs = flags.recon_epochs.or(r.epochs);
    Ok(())
}

/// The recipe's dtype for a `--dtype` flag.
pub(crate) fn dtype_of(d: DtypeArg) -> Dtype {
    match d {
        DtypeArg::Float32 => Dtype::Float32,
        DtypeArg::Bfloat16 => Dtype::Bfloat16,
        DtypeArg::Float16 => Dtype::Float16,
        DtypeArg::Model => Dtype::Model,
    }
}
