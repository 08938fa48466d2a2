//! [`Recipe`] → [`Resolved`]: every default filled, every value checked, every option in use.

use crate::{
    AllocationName, Fit, MethodName, Recipe, RecipeError, Resolved, ResolvedCalibration, ResolvedDistribution, ResolvedEquivalentSnl,
    ResolvedFeature, ResolvedInduce, ResolvedMagnitude, ResolvedOwl, ResolvedPrune, ResolvedReconstruct, ResolvedRefine, ResolvedRia,
    ResolvedSparseGpt, Scope, Sites, Snl, SnlFeatures, Stage, StageDefaults, Start, field,
};

/// The defaults every stage shares.
const LAMBDA: f64 = 1e-5;
const SCALER_LR: f64 = 5e-3;
const EPOCHS: usize = 2;
const SNL_TOKENS: i64 = 256;

fn positive(name: &'static str, v: f64) -> Result<f64, RecipeError> {
    if v > 0.0 && v.is_finite() { Ok(v) } else { Err(field(name, format!("must be positive and finite, got {v}"))) }
}

fn non_negative(name: &'static str, v: f64) -> Result<f64, RecipeError> {
    if v >= 0.0 && v.is_finite() { Ok(v) } else { Err(field(name, format!("must be non-negative and finite, got {v}"))) }
}

fn at_least_one<T: Copy + PartialOrd + From<u8> + std::fmt::Display>(name: &'static str, v: T) -> Result<T, RecipeError> {
    if v >= T::from(1u8) { Ok(v) } else { Err(field(name, format!("must be at least 1, got {v}"))) }
}

/// Options given for a part that is not in use.
fn unused(name: &'static str, why: &str) -> RecipeError {
    field(name, format!("is given, but {why}"))
}

pub(crate) fn recipe(r: &Recipe) -> Result<Resolved, RecipeError> {
    let p = r.prune.clone().unwrap_or_default();
    let method = p.method.ok_or_else(|| field("prune.method", "is missing: name the pruner (magnitude, wanda, sparsegpt or ria)"))?;
    let (sparsity, pattern) = match (p.sparsity, p.pattern) {
        (Some(_), Some(_)) => return Err(field("prune.sparsity", "and prune.pattern are both given: give one")),
        (None, None) => return Err(field("prune.sparsity", "is missing: give a sparsity (e.g. 0.5) or an N:M pattern (e.g. 2:4)")),
        (Some(s), None) if !(0.0..1.0).contains(&s) => return Err(field("prune.sparsity", format!("must be in [0, 1), got {s}"))),
        (s, p) => (s, p),
    };
    let allocation = p.allocation.unwrap_or(AllocationName::Uniform);
    let owl = match (allocation, p.owl) {
        (AllocationName::Owl, _) if pattern.is_some() => {
            return Err(field("prune.allocation", "owl needs a sparsity, not a pattern (OWL allocates unstructured sparsity per block)"));
        }
        (AllocationName::Owl, o) => {
            let o = o.unwrap_or_default();
            Some(ResolvedOwl {
                m: positive("prune.owl.m", o.m.unwrap_or(5.0))?,
                lambda: non_negative("prune.owl.lambda", o.lambda.unwrap_or(0.08))?,
            })
        }
        (AllocationName::Uniform, Some(_)) => return Err(unused("prune.owl", "allocation is uniform")),
        (AllocationName::Uniform, None) => None,
    };
    let not_for = |name: &'static str, owner: MethodName| unused(name, &format!("it is an option of {owner}, and the method is {method}"));
    if method != MethodName::Magnitude && p.magnitude.is_some() {
        return Err(not_for("prune.magnitude", MethodName::Magnitude));
    }
    if method != MethodName::Ria && p.ria.is_some() {
        return Err(not_for("prune.ria", MethodName::Ria));
    }
    if method != MethodName::SparseGpt && p.sparsegpt.is_some() {
        return Err(not_for("prune.sparsegpt", MethodName::SparseGpt));
    }
    let magnitude = (method == MethodName::Magnitude)
        .then(|| ResolvedMagnitude { scope: p.magnitude.as_ref().and_then(|m| m.scope).unwrap_or(Scope::Matrix) });
    let ria = match method {
        MethodName::Ria => {
            let alpha = p.ria.as_ref().and_then(|r| r.alpha).unwrap_or(0.5);
            if !alpha.is_finite() {
                return Err(field("prune.ria.alpha", format!("must be finite, got {alpha}")));
            }
            Some(ResolvedRia { alpha })
        }
        _ => None,
    };
    let sparsegpt = match method {
        MethodName::SparseGpt => {
            let s = p.sparsegpt.clone().unwrap_or_default();
            let blocksize = s.blocksize.unwrap_or(128);
            if blocksize < 1 {
                return Err(field("prune.sparsegpt.blocksize", format!("must be at least 1, got {blocksize}")));
            }
            let percdamp = positive("prune.sparsegpt.percdamp", s.percdamp.unwrap_or(0.01))?;
            let max_percdamp = positive("prune.sparsegpt.max_percdamp", s.max_percdamp.unwrap_or(1.0))?;
            if max_percdamp < percdamp {
                return Err(field("prune.sparsegpt.max_percdamp", format!("must be at least percdamp ({percdamp}), got {max_percdamp}")));
            }
            Some(ResolvedSparseGpt { blocksize, percdamp, max_percdamp })
        }
        _ => None,
    };
    let defaults = StageDefaults::for_method(method);
    let induce = resolve_induce(r.induce.as_ref(), &[], defaults)?;
    let reconstruct = match &r.reconstruct {
        None => None,
        Some(c) => Some(ResolvedReconstruct {
            snl: c.snl.unwrap_or(defaults.reconstruct_snl),
            snl_lambda: non_negative("reconstruct.snl_lambda", c.snl_lambda.unwrap_or(LAMBDA))?,
            lr: positive("reconstruct.lr", c.lr.unwrap_or(SCALER_LR))?,
            epochs: at_least_one("reconstruct.epochs", c.epochs.unwrap_or(EPOCHS))?,
            snl_features: c.snl_features.unwrap_or(SnlFeatures::Inputs),
            snl_tokens: at_least_one("reconstruct.snl_tokens", c.snl_tokens.unwrap_or(SNL_TOKENS))?,
        }),
    };
    let needs_calibration = method != MethodName::Magnitude || owl.is_some() || induce.is_some() || reconstruct.is_some();
    // Still checked when unused, so that a sweep passing one calibration to every method
    // learns of a bad value at once; the resolved recipe then says no data was read.
    let calibration = r.calibration.clone().unwrap_or_default().resolve()?;
    let calibration = needs_calibration.then_some(calibration);
    Ok(Resolved {
        dtype: r.dtype.unwrap_or(crate::Dtype::Float32),
        calibration,
        prune: ResolvedPrune {
            method,
            sparsity,
            pattern,
            allocation,
            true_sequential: p.true_sequential.unwrap_or(false),
            layer_errors: p.layer_errors.unwrap_or(false),
            owl,
            magnitude,
            ria,
            sparsegpt,
        },
        induce,
        reconstruct,
    })
}

/// The induction section resolved with `default_stages` where it names none (`spindle prune`:
/// none; `spindle induce`: distribution and feature); `None` when no stage runs.
pub fn resolve_induce(
    induce: Option<&crate::Induce>,
    default_stages: &[Stage],
    defaults: StageDefaults,
) -> Result<Option<ResolvedInduce>, RecipeError> {
    let i = induce.cloned().unwrap_or_default();
    let stages = i.stages.clone().unwrap_or_else(|| default_stages.to_vec());
    for (k, s) in stages.iter().enumerate() {
        if stages[..k].contains(s) {
            return Err(field("induce.stages", format!("names {s} twice")));
        }
    }
    let lacks = |name: &'static str, stage: Stage| unused(name, &format!("induce.stages lacks the {stage} stage it configures"));
    if i.distribution.is_some() && !stages.contains(&Stage::Distribution) {
        return Err(lacks("induce.distribution", Stage::Distribution));
    }
    if i.equivalent_snl.is_some() && !stages.contains(&Stage::EquivalentSnl) {
        return Err(lacks("induce.equivalent_snl", Stage::EquivalentSnl));
    }
    if i.feature.is_some() && !stages.contains(&Stage::Feature) {
        return Err(lacks("induce.feature", Stage::Feature));
    }
    if stages.is_empty() {
        if i.sites.is_some() {
            return Err(unused("induce.sites", "no induction stage runs"));
        }
        return Ok(None);
    }
    let distribution = match stages.contains(&Stage::Distribution) {
        false => None,
        true => {
            let d = i.distribution.clone().unwrap_or_default();
            let start = d.start.unwrap_or(Start::ActNorm);
            let smoothquant_alpha = match (start, d.smoothquant_alpha) {
                (Start::SmoothQuant, a) => {
                    let a = a.unwrap_or(0.5);
                    if !(0.0..=1.0).contains(&a) {
                        return Err(field("induce.distribution.smoothquant_alpha", format!("must be in [0, 1], got {a}")));
                    }
                    Some(a)
                }
                (_, Some(_)) => return Err(unused("induce.distribution.smoothquant_alpha", "start is not smoothquant")),
                (_, None) => None,
            };
            let fit = d.fit.unwrap_or(Fit::ClosedForm);
            let refine = match (fit, &d.refine) {
                (Fit::ClosedForm, Some(_)) => return Err(unused("induce.distribution.refine", "fit is closed-form")),
                (Fit::ClosedForm, None) => None,
                (Fit::Reconstruction, r) => {
                    let r = r.clone().unwrap_or_default();
                    Some(ResolvedRefine {
                        epochs: at_least_one("induce.distribution.refine.epochs", r.epochs.unwrap_or(EPOCHS))?,
                        lr: positive("induce.distribution.refine.lr", r.lr.unwrap_or(SCALER_LR))?,
                        snl: r.snl.unwrap_or(Snl::None),
                        snl_lambda: non_negative("induce.distribution.refine.snl_lambda", r.snl_lambda.unwrap_or(LAMBDA))?,
                        snl_tokens: at_least_one("induce.distribution.refine.snl_tokens", r.snl_tokens.unwrap_or(SNL_TOKENS))?,
                    })
                }
            };
            Some(ResolvedDistribution {
                start,
                smoothquant_alpha,
                steps: d.steps.unwrap_or(0),
                lr: positive("induce.distribution.lr", d.lr.unwrap_or(0.05))?,
                temperature: positive("induce.distribution.temperature", d.temperature.unwrap_or(0.05))?,
                max_log_scale: positive("induce.distribution.max_log_scale", d.max_log_scale.unwrap_or(8.0))?,
                fit,
                refine,
            })
        }
    };
    let equivalent_snl = match stages.contains(&Stage::EquivalentSnl) {
        false => None,
        true => {
            let e = i.equivalent_snl.clone().unwrap_or_default();
            let snl = e.snl.unwrap_or(Snl::Nuclear);
            if snl == Snl::None {
                return Err(field("induce.equivalent_snl.snl", "must not be none: the equivalent stage needs an SNL"));
            }
            Some(ResolvedEquivalentSnl {
                snl,
                steps: e.steps.unwrap_or(30),
                max_log_scale: positive("induce.equivalent_snl.max_log_scale", e.max_log_scale.unwrap_or(1.0))?,
                snl_tokens: at_least_one("induce.equivalent_snl.snl_tokens", e.snl_tokens.unwrap_or(SNL_TOKENS))?,
            })
        }
    };
    let feature = match stages.contains(&Stage::Feature) {
        false => None,
        true => {
            let f = i.feature.clone().unwrap_or_default();
            Some(ResolvedFeature {
                pruning_aware: f.pruning_aware.unwrap_or(defaults.pruning_aware),
                snl: f.snl.unwrap_or(defaults.feature_snl),
                snl_lambda: non_negative("induce.feature.snl_lambda", f.snl_lambda.unwrap_or(LAMBDA))?,
                lr: positive("induce.feature.lr", f.lr.unwrap_or(SCALER_LR))?,
                epochs: at_least_one("induce.feature.epochs", f.epochs.unwrap_or(EPOCHS))?,
                weight_decay: non_negative("induce.feature.weight_decay", f.weight_decay.unwrap_or(0.0))?,
                snl_features: f.snl_features.unwrap_or(SnlFeatures::Inputs),
                snl_tokens: at_least_one("induce.feature.snl_tokens", f.snl_tokens.unwrap_or(SNL_TOKENS))?,
            })
        }
    };
    Ok(Some(ResolvedInduce { stages, sites: i.sites.unwrap_or(Sites::Norms), distribution, equivalent_snl, feature }))
}

impl crate::Calibration {
    /// Every default filled: c4, 128 windows, seed 0, one window per forward pass (the window
    /// length stays open until the model's context is known).
    pub fn resolve(&self) -> Result<ResolvedCalibration, RecipeError> {
        Ok(ResolvedCalibration {
            source: self.source.clone().unwrap_or_else(|| "c4".to_owned()),
            nsamples: at_least_one("calibration.nsamples", self.nsamples.unwrap_or(128))?,
            seqlen: self.seqlen.map(|l| at_least_one("calibration.seqlen", l)).transpose()?,
            seed: self.seed.unwrap_or(0),
            batch_size: at_least_one("calibration.batch_size", self.batch_size.unwrap_or(1))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Recipe, Stage};

    fn err(text: &str) -> String {
        match Recipe::from_toml_str(text).and_then(|r| r.resolve()) {
            Ok(r) => panic!("expected an error, resolved to {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_error_names_its_field_and_flag() {
        let wanda = "[prune]\nmethod = \"wanda\"\nsparsity = 0.5\n";
        assert_eq!(
            err("[prune]\nsparsity = 0.5\n"),
            "prune.method (--method) is missing: name the pruner (magnitude, wanda, sparsegpt or ria)"
        );
        assert_eq!(
            err("[prune]\nmethod = \"wanda\"\nsparsity = 0.5\npattern = \"2:4\"\n"),
            "prune.sparsity (--sparsity) and prune.pattern are both given: give one"
        );
        assert_eq!(
            err(&format!("{wanda}[prune.sparsegpt]\npercdamp = 0.1\n")),
            "prune.sparsegpt is given, but it is an option of sparsegpt, and the method is wanda"
        );
        assert_eq!(err(&format!("{wanda}[calibration]\nnsamples = 0\n")), "calibration.nsamples (--nsamples) must be at least 1, got 0");
        assert_eq!(
            err(&format!("{wanda}[induce]\nstages = [\"distribution\"]\n[induce.feature]\nepochs = 1\n")),
            "induce.feature is given, but induce.stages lacks the feature stage it configures"
        );
        assert_eq!(
            err(&format!("{wanda}[induce]\nstages = [\"feature\"]\n[induce.feature]\nlr = 0.0\n")),
            "induce.feature.lr (--feature-lr) must be positive and finite, got 0"
        );
        assert_eq!(
            err(&format!("{wanda}[induce]\nstages = [\"equivalent-snl\"]\n[induce.equivalent_snl]\nsnl = \"none\"\n")),
            "induce.equivalent_snl.snl (--snl) must not be none: the equivalent stage needs an SNL"
        );
        assert_eq!(
            err("[prune]\nmethod = \"wanda\"\npattern = \"2:4\"\nallocation = \"owl\"\n"),
            "prune.allocation (--allocation) owl needs a sparsity, not a pattern (OWL allocates unstructured sparsity per block)"
        );
        assert!(err("[prune]\nmethod = \"wanda\"\npattern = \"4:2\"\n").contains("must be N:M with 0 < N < M"));
        assert!(err("[prune]\nmethod = \"wanda\"\nsparsity = 0.5\nsparstiy = 0.5\n").contains("unknown field `sparstiy`"));
    }

    #[test]
    fn defaults_fill_per_stage_and_the_resolved_recipe_is_a_fixed_point() {
        let r = Recipe::from_toml_str(
            "[prune]\nmethod = \"sparsegpt\"\nsparsity = 0.5\n[induce]\nstages = [\"distribution\", \"feature\"]\n[induce.distribution]\nfit = \"reconstruction\"\n[reconstruct]\n",
        )
        .and_then(|r| r.resolve())
        .expect("valid");
        let i = r.induce.as_ref().expect("induction");
        assert_eq!(i.stages, [Stage::Distribution, Stage::Feature]);
        let refine = i.distribution.as_ref().and_then(|d| d.refine).expect("the reconstruction fit");
        assert_eq!((refine.epochs, refine.lr, refine.snl_tokens), (2, 5e-3, 256));
        assert_eq!(r.prune.sparsegpt.map(|s| (s.blocksize, s.percdamp, s.max_percdamp)), Some((128, 0.01, 1.0)));
        assert_eq!(r.calibration.as_ref().map(|c| (c.source.as_str(), c.nsamples, c.seqlen, c.seed)), Some(("c4", 128, None, 0)));
        assert!(r.reconstruct.is_some());
        let text = r.clone().with_context(8192).to_toml().expect("TOML");
        assert!(text.contains("seqlen = 2048"), "{text}");
        let again = Recipe::from_toml_str(&text).and_then(|x| x.resolve()).expect("its own output resolves");
        assert_eq!(again, r.with_context(8192));
        // Magnitude alone reads no data, and says so by having no calibration section.
        let m = Recipe::from_toml_str("[prune]\nmethod = \"magnitude\"\npattern = \"2:4\"\n").and_then(|r| r.resolve()).expect("valid");
        assert!(m.calibration.is_none());
        let given = Recipe::from_toml_str("[prune]\nmethod = \"magnitude\"\npattern = \"2:4\"\n[calibration]\nnsamples = 8\n")
            .and_then(|r| r.resolve())
            .expect("valid");
        assert_eq!(given, m, "calibration a run does not read is not part of what it did");
        assert!(!m.to_toml().expect("TOML").contains("calibration"));
    }

    #[test]
    fn an_overlay_replaces_only_the_fields_it_sets() {
        let base = Recipe::from_toml_str(
            "[prune]\nmethod = \"wanda\"\nsparsity = 0.5\n[induce]\nstages = [\"feature\"]\n[induce.feature]\nsnl = \"none\"\nepochs = 2\n",
        )
        .expect("valid");
        let over = Recipe::from_toml_str("[induce.feature]\nepochs = 1\n[calibration]\nseed = 4\n").expect("valid");
        let r = base.overlay(&over).expect("merged");
        let f = r.induce.as_ref().and_then(|i| i.feature.as_ref()).expect("feature");
        assert_eq!((f.snl, f.epochs), (Some(crate::Snl::None), Some(1)));
        assert_eq!(r.calibration.and_then(|c| c.seed), Some(4));
        assert_eq!(r.prune.and_then(|p| p.sparsity), Some(0.5));
    }
}
