//! `spindle induce`: flags → the recipe's resolved `[induce]` section → a validated
//! [`InduceConfig`] (before anything is loaded) → `spindle::induce` → a report on the terminal
//! and, with `--json`, a file. Also the induction and reconstruction reports as JSON, which
//! `spindle prune` shares.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};
use spindle::induce::{BlockInduction, InduceConfig};
use spindle::prune::Method;
use spindle::recipe::{Calibration, Stage, StageDefaults};
use spindle::{mem, output, progress};
use spindle_induce::{FeatureConfig, FeatureSource, Scorer, Start};
use spindle_model::{Model, Runtime};
use spindle_prune::Pattern;
use tch::Kind;

use crate::Failure;
use crate::cmd::cli::{InduceArgs, MethodArg};
use crate::cmd::common::{calibration, model_hashes};
use crate::cmd::flags;

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
        "pattern": spindle::induce::pattern_json(c.pattern),
        "sites": c.sites.name(),
    })
}

/// The reconstruction configuration, as JSON.
pub(crate) fn reconstruct_json(c: &FeatureConfig) -> Value {
    snl_json(c)
}

/// `spindle induce --json`: the report, field for field.
#[derive(serde::Serialize)]
struct InduceJson<'a> {
    model: &'a str,
    model_dir: &'a Path,
    /// The hub commit the model directory is a snapshot of (`--model ORG/NAME[@REVISION]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    model_commit: Option<String>,
    model_sha256: Value,
    out: &'a Path,
    /// The pruner the model was prepared for.
    target: &'static str,
    config: Value,
    threads: usize,
    spindle_version: &'static str,
    data: Value,
    blocks: &'a [BlockInduction],
    seconds: InduceSeconds,
    peak_rss_bytes: Option<u64>,
    plots: Value,
}

#[derive(serde::Serialize)]
struct InduceSeconds {
    induce_and_save: f64,
    total: f64,
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
    let usage = |e: spindle::recipe::RecipeError| Failure::Usage(e.to_string());
    let pattern = match &args.pattern {
        Some(p) => {
            let nm = flags::parse_pattern(p)?;
            Pattern::NM { n: nm.n, m: nm.m }
        }
        None => Pattern::Unstructured { sparsity: args.sparsity }
            .validate()
            .map_err(|_| Failure::Usage(format!("--sparsity must be in [0, 1), got {}", args.sparsity)))?,
    };
    if !args.ria_alpha.is_finite() {
        return Err(Failure::Usage(format!("--ria-alpha must be finite, got {}", args.ria_alpha)));
    }
    let target = flags::method(args.target);
    let default_stages = [Stage::Distribution, Stage::Feature];
    let mut induce = None;
    flags::apply_induce(&args.induce, &mut induce, &default_stages, None)?;
    let resolved = spindle::recipe::resolve_induce(induce.as_ref(), &default_stages, StageDefaults::for_method(target))
        .map_err(usage)?
        .ok_or_else(|| Failure::Usage("--induce none: nothing to do".into()))?;
    if resolved.has(Stage::Shift) {
        return Err(Failure::Usage(
            "--induce shift acts through a pruner's statistics and the bias its pruning leaves: use it with `spindle prune --induce shift`"
                .into(),
        ));
    }
    // The pruner the model is prepared for, with the option its selection reads.
    let method = match args.target {
        MethodArg::Magnitude => Method::Magnitude(spindle_prune::magnitude::Scope::Matrix),
        MethodArg::Wanda => Method::Wanda,
        MethodArg::Sparsegpt => Method::SparseGpt(spindle_prune::SparseGptConfig::default()),
        MethodArg::Ria => Method::Ria(spindle_prune::ria::RiaConfig { alpha: args.ria_alpha }),
    };
    let cfg = spindle::recipe::induce_config(&resolved, Scorer::from(method), pattern).map_err(|e| Failure::Usage(e.to_string()))?;
    let mut calib = Calibration::default();
    args.calib.apply(&mut calib);
    calib.batch_size = args.batch_size;
    let calib = calib.resolve().map_err(usage)?;
    if args.out.exists() {
        return Err(Failure::Usage(format!(
            "--out {} already exists; spindle writes a new directory and never overwrites",
            args.out.display()
        )));
    }
    let dir = crate::cmd::resolve_model(&args.model)?;
    crate::cmd::check_outputs(Some(&args.out), &[("--json", args.json.as_deref())], &crate::cmd::inputs(&dir, &[&calib.source]))?;
    if let Some(plots) = &args.plots {
        spindle::output::check_output_path(
            "--plots",
            plots,
            spindle::output::OutputKind::NewDir,
            &crate::cmd::inputs(&dir, &[&calib.source]),
            &[&args.out],
        )
        .map_err(|e| Failure::Usage(e.to_string()))?;
    }
    let (calib_ids, data_info) = calibration(&dir, &calib, data_flag)?;
    let model = Model::open(&dir, runtime.device, Kind::Float).with_context(|| format!("loading {}", dir.display()))?;
    let bar = progress::items("inducing blocks");
    let mut as_run = calib.clone();
    as_run.seqlen = data_info["seqlen"].as_u64().map(|l| l as usize).or(as_run.seqlen);
    let record = spindle::recipe::InduceRecord {
        calibration: &as_run,
        target: spindle::recipe::InduceTarget {
            method: target,
            sparsity: match pattern {
                Pattern::Unstructured { sparsity } => Some(sparsity),
                Pattern::NM { .. } => None,
            },
            pattern: match pattern {
                Pattern::NM { n, m } => Some(spindle::recipe::Nm { n, m }),
                Pattern::Unstructured { .. } => None,
            },
            ria_alpha: (target == spindle::recipe::MethodName::Ria).then_some(args.ria_alpha),
        },
        induce: &resolved,
    }
    .to_toml()
    .map_err(anyhow::Error::from)?;
    let files = [(spindle::recipe::RECIPE_FILE, record.as_bytes())];
    let report = spindle::induce::induce_model_with_files(&model, &calib_ids, &cfg, calib.batch_size, &args.out, &files, &mut |d, t| {
        progress::update(&bar, d, t)
    })
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
        let value = InduceJson {
            model: &args.model,
            model_dir: &dir,
            model_commit: spindle::hub::commit_of(&dir),
            model_sha256: model_hashes(&dir)?,
            out: &report.out,
            target: target.name(),
            config: config_json(&cfg),
            threads: runtime.threads,
            spindle_version: env!("CARGO_PKG_VERSION"),
            data: data_info,
            blocks: &report.blocks,
            seconds: InduceSeconds { induce_and_save: report.seconds, total: started.elapsed().as_secs_f64() },
            peak_rss_bytes: peak,
            plots,
        };
        let value = serde_json::to_value(&value).map_err(anyhow::Error::from)?;
        output::write_json(&path, &value).map_err(|e| crate::cmd::roll_back(&report.out, e.into()))?;
    }
    Ok(())
}
