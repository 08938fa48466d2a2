//! `spindle prune`: flags (over a `--recipe` file) → a resolved recipe (before anything is
//! loaded) → `spindle::prune_with_recipe` → a report on the terminal and, with `--json`, a file.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};
use spindle::induce::{BlockInduction, BlockReconstruction};
use spindle::prune::{BlockReport, LinearReport, PipelineError, PruneConfig, PruneReport};
use spindle::recipe::{CalibrationInfo, Event, Recipe, RecipeReport, Resolved};
use spindle::{mem, output, progress};
use spindle_model::Runtime;

use crate::Failure;
use crate::cmd::cli::PruneArgs;
use crate::cmd::common::{allocation_json, device_name, kind_name, method_options_json, model_hashes};
use crate::cmd::data::token_cache;
use crate::cmd::flags;

/// Stage two: the flags (over a `--recipe` file) as a resolved recipe, or a usage error naming
/// the flag or field.
pub(crate) fn recipe(args: &PruneArgs) -> Result<Resolved, Failure> {
    let base = match &args.recipe {
        Some(path) => Recipe::from_file(path).map_err(|e| Failure::Usage(format!("--recipe {e}")))?,
        None => Recipe::default(),
    };
    let recipe = flags::prune_recipe(args, base)?;
    recipe.resolve().map_err(|e| Failure::Usage(e.to_string()))
}

pub fn run(args: PruneArgs, runtime: Runtime, data_flag: Option<&Path>) -> Result<(), Failure> {
    let started = Instant::now();
    let resolved = recipe(&args)?;
    let cfg = spindle::recipe::prune_config(&resolved).map_err(|e| Failure::Usage(e.to_string()))?;
    let out = match (&args.out, args.print_recipe) {
        (_, true) => None,
        (Some(out), false) => Some(out.clone()),
        (None, false) => return Err(Failure::Usage("pass --out (or --print-recipe)".into())),
    };
    if let Some(out) = &out
        && out.exists()
    {
        return Err(Failure::Usage(format!("--out {} already exists; spindle writes a new directory and never overwrites", out.display())));
    }
    let dir = crate::cmd::resolve_model(&args.model)?;
    let Some(out) = out else {
        let context = spindle_model::ModelConfig::from_file(&dir.join("config.json")).map_err(anyhow::Error::from)?.max_position_embeddings;
        let text = resolved.with_context(context).to_toml().map_err(anyhow::Error::from)?;
        say!("{}", text.trim_end());
        return Ok(());
    };
    let calib_source = resolved.calibration.as_ref().map(|c| c.source.clone()).unwrap_or_default();
    let mut read: Vec<&str> = vec![&calib_source];
    if let Some(r) = &args.recipe {
        read.push(r.to_str().unwrap_or_default());
    }
    crate::cmd::check_outputs(Some(&out), &[("--json", args.json.as_deref())], &crate::cmd::inputs(&dir, &read))?;
    let data = match &resolved.calibration {
        Some(_) => Some(crate::cmd::data::data_dir(data_flag)?),
        None => None,
    };

    let bar = progress::items("pruning blocks");
    let report = spindle::prune_with_recipe(&dir, &resolved, &out, data.as_ref(), &token_cache(), runtime.device, &mut |e| {
        if let Event::Blocks { done, total } = e {
            progress::update(&bar, done, total)
        }
    })
    .map_err(|e| match e {
        PipelineError::Data(e) => crate::cmd::corpus_failure(e),
        e => Failure::Other(anyhow::Error::from(e).context(format!("pruning {}", dir.display()))),
    })?;
    bar.finish_and_clear();
    let peak = mem::peak_rss_bytes();
    let RecipeReport { recipe, calibration, prune: report, kind, seconds_calibration, seconds_load } = report;
    print_report(&report, &cfg, peak)?;

    if let Some(path) = args.json {
        let value = PruneJson {
            model: &args.model,
            model_dir: &dir,
            model_commit: spindle::hub::commit_of(&dir),
            model_sha256: model_hashes(&dir)?,
            out: &report.out,
            recipe: &recipe,
            config: json!({
                "method": cfg.method.name(), "method_options": method_options_json(cfg.method), "pattern": spindle::induce::pattern_json(cfg.pattern),
                "allocation": allocation_json(cfg.allocation), "true_sequential": cfg.true_sequential, "layer_errors": cfg.layer_errors,
                "batch_size": cfg.batch_size, "dtype": kind_name(kind), "device": device_name(runtime.device), "threads": runtime.threads,
                "spindle_version": env!("CARGO_PKG_VERSION"),
                "induce": cfg.induce.as_ref().map(crate::cmd::induce::config_json),
                "reconstruct": cfg.reconstruct.as_ref().map(crate::cmd::induce::reconstruct_json),
            }),
            induction: &report.induction,
            reconstruction: &report.reconstruction,
            added_bias_parameters: report.added_bias_parameters,
            data: calibration.as_ref(),
            overall_sparsity: report.overall_sparsity,
            linears: &report.linears,
            blocks: &report.blocks,
            seconds: PruneSeconds {
                calibration_data: seconds_calibration,
                load: seconds_load,
                owl: report.seconds_owl,
                prune_and_save: report.seconds_prune,
                total: started.elapsed().as_secs_f64(),
            },
            peak_rss_bytes: peak,
        };
        let value = serde_json::to_value(&value).map_err(anyhow::Error::from)?;
        output::write_json(&path, &value).map_err(|e| crate::cmd::roll_back(&report.out, e.into()))?;
    }
    Ok(())
}

/// `spindle prune --json`: the report, field for field.
#[derive(Serialize)]
struct PruneJson<'a> {
    model: &'a str,
    model_dir: &'a Path,
    /// The hub commit the model directory is a snapshot of (`--model ORG/NAME[@REVISION]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    model_commit: Option<String>,
    model_sha256: Value,
    out: &'a Path,
    /// The recipe as run (what the model's `spindle_recipe.toml` holds).
    recipe: &'a Resolved,
    /// The typed configuration the recipe resolved to, as the pipeline saw it.
    config: Value,
    induction: &'a [BlockInduction],
    reconstruction: &'a [BlockReconstruction],
    added_bias_parameters: u64,
    /// The calibration windows drawn; `null` for a run that reads none.
    data: Option<&'a CalibrationInfo>,
    overall_sparsity: f64,
    linears: &'a [LinearReport],
    blocks: &'a [BlockReport],
    seconds: PruneSeconds,
    peak_rss_bytes: Option<u64>,
}

#[derive(Serialize)]
struct PruneSeconds {
    calibration_data: f64,
    load: f64,
    owl: f64,
    prune_and_save: f64,
    total: f64,
}

fn print_report(r: &PruneReport, cfg: &PruneConfig, peak: Option<u64>) -> Result<(), Failure> {
    let retries: usize = r.linears.iter().map(|l| l.damp_retries.len()).sum();
    let worst = r.linears.iter().filter_map(|l| l.rel_error.map(|e| (e, &l.name))).fold(None::<(f64, &String)>, |acc, (e, n)| match acc {
        Some((a, _)) if a >= e => acc,
        _ => Some((e, n)),
    });
    if let Some(line) = crate::cmd::induce::summary_line(&r.induction) {
        say!("{line}");
    }
    let last: Vec<f64> = r.reconstruction.iter().filter_map(|b| b.epochs.last().map(|e| e.reconstruction)).collect();
    if !last.is_empty() {
        say!("reconstruction: final relative reconstruction error, mean over blocks {:.3e}", last.iter().sum::<f64>() / last.len() as f64);
    }
    if r.added_bias_parameters > 0 {
        say!("shift: {} bias parameters added (config.json's attention_bias/mlp_bias set)", r.added_bias_parameters);
    }
    say!(
        "{} {} over {} linears in {} blocks: overall sparsity {:.4}",
        cfg.method.name(),
        cfg.pattern,
        r.linears.len(),
        r.blocks.len(),
        r.overall_sparsity
    );
    if let Some((e, n)) = worst {
        say!("largest relative reconstruction error {e:.4} ({n})");
    }
    if retries > 0 {
        say!("SparseGPT: {retries} Cholesky retries with more damping (see the JSON report)");
    }
    let peak = peak.map_or("unknown".to_owned(), |b| format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0)));
    say!("wrote {} in {:.1} s; peak resident memory {peak}", r.out.display(), r.seconds_prune + r.seconds_owl);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use spindle::prune::PruneConfig;
    use spindle::recipe::Resolved;
    use spindle_induce::{DistributionConfig, FeatureConfig, PruningAware, Scorer, Snl, Start};
    use spindle_prune::Pattern;

    use crate::Failure;
    use crate::cmd::cli::{Cli, Command};

    fn resolve(argv: &[&str]) -> Result<Resolved, Failure> {
        let cli = Cli::try_parse_from(["spindle", "prune", "--model", "m", "--out", "o"].iter().chain(argv)).expect("the flags parse");
        let Command::Prune(args) = cli.command else { unreachable!("a prune command") };
        super::recipe(&args)
    }

    fn parse(method: &str, extra: &[&str]) -> Result<PruneConfig, Failure> {
        let mut argv = vec!["--sparsity", "0.5", "--method", method];
        argv.extend(extra);
        let r = resolve(&argv)?;
        spindle::recipe::prune_config(&r).map_err(|e| Failure::Usage(e.to_string()))
    }

    fn usage(method: &str, extra: &[&str]) -> String {
        match parse(method, extra) {
            Err(Failure::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn the_stages_defaults_hold_per_pruner_and_each_flag_overrides_one() {
        for method in ["magnitude", "wanda", "sparsegpt", "ria"] {
            let c = parse(method, &["--induce", "feature", "--reconstruct"]).expect("valid");
            let induce = c.induce.expect("induction asked for");
            assert_eq!((induce.pruning_aware, induce.feature.expect("feature").snl), (PruningAware::Mask, None), "{method}");
            assert_eq!(c.reconstruct.expect("reconstruction asked for").snl, None, "{method}");
        }
        let c = parse("wanda", &["--induce", "feature", "--pruning-aware", "off", "--snl", "nuclear"]).expect("valid");
        let induce = c.induce.expect("induction");
        assert_eq!((induce.pruning_aware, induce.feature.expect("feature").snl), (PruningAware::Off, Some(Snl::NuclearOverSpectral)));
        assert!(c.reconstruct.is_none(), "no reconstruction unless asked for");
        let c =
            parse("sparsegpt", &["--reconstruct", "--recon-snl", "spectral-energy", "--recon-snl-lambda", "1e-3", "--recon-epochs", "3"])
                .expect("valid");
        assert!(c.induce.is_none(), "reconstruction alone runs no induction");
        let r = c.reconstruct.expect("reconstruction");
        assert_eq!((r.snl, r.lambda, r.epochs), (Some(Snl::SpectralEnergy), 1e-3, 3));
    }

    /// The configuration the flags built before recipes existed, field for field: what keeps the
    /// pruned checkpoints bit-identical.
    #[test]
    fn the_default_induction_is_the_configuration_of_before() {
        let c = parse("magnitude", &["--induce", "distribution,feature", "--feature-epochs", "1", "--nsamples", "4"]).expect("valid");
        let i = c.induce.expect("induction");
        let d = i.distribution.expect("the distribution stage");
        let expected = DistributionConfig {
            scorer: Scorer::Magnitude,
            pattern: Pattern::Unstructured { sparsity: 0.5 },
            start: Start::ActNorm,
            steps: 0,
            lr: 0.05,
            temperature: 0.05,
            max_log_scale: 8.0,
            ..Default::default()
        };
        assert_eq!(d, expected);
        assert_eq!(i.feature, Some(FeatureConfig { epochs: 1, ..Default::default() }));
        assert!(i.refine.is_none() && i.equivalent.is_none() && !i.shift);
        assert_eq!((i.mask, i.pattern, i.sites.name()), (Scorer::Magnitude, Pattern::Unstructured { sparsity: 0.5 }, "norms"));
        assert_eq!(c.batch_size, 1);
    }

    #[test]
    fn flags_override_the_fields_of_a_recipe_file() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("r.toml");
        std::fs::write(&path, "[prune]\nmethod = \"wanda\"\npattern = \"2:4\"\n[calibration]\nnsamples = 16\nseed = 3\n").expect("written");
        let file = path.to_str().expect("UTF-8");
        let r = resolve(&["--recipe", file]).expect("valid");
        assert_eq!(
            (r.prune.pattern.map(String::from), r.calibration.as_ref().map(|c| (c.nsamples, c.seed))),
            (Some("2:4".into()), Some((16, 3)))
        );
        let r = resolve(&["--recipe", file, "--sparsity", "0.6", "--seed", "4", "--method", "sparsegpt"]).expect("valid");
        assert_eq!((r.prune.sparsity, r.prune.pattern), (Some(0.6), None));
        assert_eq!(r.calibration.as_ref().map(|c| (c.nsamples, c.seed)), Some((16, 4)));
        assert_eq!(r.prune.sparsegpt.map(|s| s.blocksize), Some(128));
        match resolve(&["--recipe", file, "--percdamp", "0.1"]) {
            Err(Failure::Usage(m)) => {
                assert_eq!(m, "--percdamp, --max-percdamp and --blocksize are options of --method sparsegpt, not wanda")
            }
            other => panic!("expected a usage error, got {other:?}"),
        }
        match resolve(&["--recipe", "/nonexistent/r.toml"]) {
            Err(Failure::Usage(m)) => assert!(m.starts_with("--recipe /nonexistent/r.toml: "), "{m}"),
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn training_after_pruning_is_named_reconstruction() {
        assert!(usage("wanda", &["--induce", "feature", "--pruning-aware", "pruned"]).contains("--reconstruct"));
        assert_eq!(usage("wanda", &["--recon-snl", "nuclear"]), "--recon-snl is an option of the reconstruction: it needs --reconstruct");
        assert_eq!(usage("wanda", &["--reconstruct", "--recon-lr", "0"]), "reconstruct.lr (--recon-lr) must be positive and finite, got 0");
    }
}
