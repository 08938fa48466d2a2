//! `spindle prune`: flags → a validated [`PruneConfig`] (before anything is loaded) → the
//! sequential pipeline of `spindle::prune` → a report on the terminal and, with `--json`, a file.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};
use spindle::prune::{Allocation, Method, PruneConfig, PruneReport, prune_model};
use spindle::{mem, output, progress};
use spindle_model::{Model, Runtime};
use spindle_prune::magnitude::Scope;
use spindle_prune::owl::OwlConfig;
use spindle_prune::ria::RiaConfig;
use spindle_prune::{Pattern, SparseGptConfig};
use tch::Kind;

use crate::Failure;
use crate::cmd::cli::{AllocationArg, DtypeArg, MethodArg, PruneArgs, ScopeArg};
use crate::cmd::common::{allocation_json, calibration, device_name, kind_name, method_options_json, model_hashes, parse_pattern};

/// Stage two: the raw flags as a typed configuration, or a usage error naming the flag.
fn config(args: &PruneArgs) -> Result<PruneConfig, Failure> {
    let pattern = match (&args.pattern, args.sparsity) {
        (Some(p), _) => parse_pattern(p).map_err(Failure::Usage)?,
        (None, Some(s)) => Pattern::Unstructured { sparsity: s }
            .validate()
            .map_err(|_| Failure::Usage(format!("--sparsity must be in [0, 1), got {s}")))?,
        (None, None) => return Err(Failure::Usage("pass --sparsity or --pattern".into())),
    };
    let method = match args.method {
        MethodArg::Magnitude => Method::Magnitude(match args.magnitude_scope {
            ScopeArg::Matrix => Scope::Matrix,
            ScopeArg::Row => Scope::Row,
        }),
        MethodArg::Wanda => Method::Wanda,
        MethodArg::Ria => {
            if !args.ria_alpha.is_finite() {
                return Err(Failure::Usage(format!("--ria-alpha must be finite, got {}", args.ria_alpha)));
            }
            Method::Ria(RiaConfig { alpha: args.ria_alpha })
        }
        MethodArg::Sparsegpt => {
            if !(args.percdamp > 0.0 && args.max_percdamp >= args.percdamp) {
                return Err(Failure::Usage(format!(
                    "--percdamp must be positive and at most --max-percdamp, got {} and {}",
                    args.percdamp, args.max_percdamp
                )));
            }
            if args.blocksize < 1 {
                return Err(Failure::Usage(format!("--blocksize must be at least 1, got {}", args.blocksize)));
            }
            Method::SparseGpt(SparseGptConfig { blocksize: args.blocksize, percdamp: args.percdamp, max_percdamp: args.max_percdamp })
        }
    };
    let allocation = match args.allocation {
        AllocationArg::Uniform => Allocation::Uniform,
        AllocationArg::Owl => {
            if matches!(pattern, Pattern::NM { .. }) {
                return Err(Failure::Usage("--allocation owl needs --sparsity (OWL allocates unstructured sparsity per block)".into()));
            }
            if !(args.owl_m > 0.0 && args.owl_lambda >= 0.0) {
                return Err(Failure::Usage(format!(
                    "--owl-m must be positive and --owl-lambda non-negative, got {} and {}",
                    args.owl_m, args.owl_lambda
                )));
            }
            Allocation::Owl(OwlConfig { m: args.owl_m, lambda: args.owl_lambda })
        }
    };
    if args.batch_size == 0 || args.nsamples == 0 {
        return Err(Failure::Usage("--batch-size and --nsamples must be at least 1".into()));
    }
    let defaults = crate::cmd::induce::prune_defaults(args.method);
    let induce =
        crate::cmd::induce::config(&args.induce, crate::cmd::induce::scorer_of(args.method, args.ria_alpha), pattern, "none", defaults)?;
    let reconstruct = crate::cmd::induce::reconstruct_config(&args.reconstruct, &args.induce, defaults)?;
    Ok(PruneConfig {
        method,
        pattern,
        allocation,
        true_sequential: args.true_sequential,
        layer_errors: args.layer_errors,
        batch_size: args.batch_size,
        induce,
        reconstruct,
    })
}

pub fn run(args: PruneArgs, runtime: Runtime, data_flag: Option<&Path>) -> Result<(), Failure> {
    let started = Instant::now();
    let cfg = config(&args)?;
    let needs_calib = !matches!(cfg.method, Method::Magnitude(_))
        || matches!(cfg.allocation, Allocation::Owl(_))
        || cfg.induce.is_some()
        || cfg.reconstruct.is_some();
    if args.out.exists() {
        return Err(Failure::Usage(format!(
            "--out {} already exists; spindle writes a new directory and never overwrites",
            args.out.display()
        )));
    }
    let dir = crate::cmd::resolve_model(&args.model)?;
    crate::cmd::check_outputs(Some(&args.out), &[("--json", args.json.as_deref())], &crate::cmd::inputs(&dir, &[&args.calib]))?;

    // Calibration windows, drawn as the reference loaders draw them.
    let t0 = Instant::now();
    let (calib, data_info) = if needs_calib {
        let (ids, info) = calibration(&dir, &args.calib, args.nsamples, args.seqlen, args.seed, data_flag)?;
        (Some(ids), info)
    } else {
        (None, json!(null))
    };
    let seconds_calib = t0.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let kind = match args.dtype {
        DtypeArg::Float32 => Kind::Float,
        DtypeArg::Bfloat16 => Kind::BFloat16,
        DtypeArg::Float16 => Kind::Half,
        DtypeArg::Model => spindle_model::ModelConfig::from_file(&dir.join("config.json")).map_err(anyhow::Error::from)?.dtype.kind(),
    };
    let model = Model::open(&dir, runtime.device, kind).with_context(|| format!("loading {}", dir.display()))?;
    let seconds_load = t0.elapsed().as_secs_f64();
    tracing::debug!(peak_mib = mem::peak_rss_bytes().unwrap_or(0) >> 20, "model open");
    let bar = progress::items("pruning blocks");
    let report = prune_model(&model, calib.as_ref(), &cfg, &args.out, &mut |d, t| progress::update(&bar, d, t))
        .map_err(|e| Failure::Other(anyhow::Error::from(e).context(format!("pruning {}", dir.display()))))?;
    bar.finish_and_clear();
    let peak = mem::peak_rss_bytes();
    print_report(&report, &cfg, peak)?;

    if let Some(path) = args.json {
        let value = json!({
            "model": args.model,
            "model_dir": dir,
            "model_sha256": model_hashes(&dir)?,
            "out": report.out,
            "config": {
                "method": cfg.method.name(), "method_options": method_options_json(cfg.method), "pattern": pattern_json(cfg.pattern),
                "allocation": allocation_json(cfg.allocation), "true_sequential": cfg.true_sequential, "layer_errors": cfg.layer_errors,
                "batch_size": cfg.batch_size, "dtype": kind_name(kind), "device": device_name(runtime.device), "threads": runtime.threads,
                "spindle_version": env!("CARGO_PKG_VERSION"),
                "induce": cfg.induce.as_ref().map(crate::cmd::induce::config_json),
                "reconstruct": cfg.reconstruct.as_ref().map(crate::cmd::induce::reconstruct_json),
            },
            "induction": crate::cmd::induce::blocks_json(&report.induction),
            "reconstruction": crate::cmd::induce::reconstruction_json(&report.reconstruction),
            "added_bias_parameters": report.added_bias_parameters,
            "data": data_info,
            "overall_sparsity": report.overall_sparsity,
            "linears": report.linears.iter().map(|l| json!({
                "name": l.name, "shape": l.shape, "target": l.target, "sparsity": l.sparsity, "rel_error": l.rel_error,
                "percdamp": l.percdamp, "damp_retries": l.damp_retries,
            })).collect::<Vec<_>>(),
            "blocks": report.blocks.iter().map(|b| json!({
                "index": b.index, "target": b.target, "outlier_ratio": b.outlier_ratio, "seconds": b.seconds,
            })).collect::<Vec<_>>(),
            "seconds": {
                "calibration_data": seconds_calib, "load": seconds_load, "owl": report.seconds_owl,
                "prune_and_save": report.seconds_prune, "total": started.elapsed().as_secs_f64(),
            },
            "peak_rss_bytes": peak,
        });
        output::write_json(&path, &value).map_err(|e| crate::cmd::roll_back(&report.out, e.into()))?;
    }
    Ok(())
}

fn pattern_json(p: Pattern) -> Value {
    match p {
        Pattern::Unstructured { sparsity } => json!({"unstructured": sparsity}),
        Pattern::NM { n, m } => json!({"n": n, "m": m}),
    }
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
    use spindle_induce::{PruningAware, Snl};

    use crate::Failure;
    use crate::cmd::cli::{Cli, Command};

    fn parse(method: &str, extra: &[&str]) -> Result<PruneConfig, Failure> {
        let argv = ["spindle", "prune", "--model", "m", "--out", "o", "--sparsity", "0.5", "--method", method];
        let cli = Cli::try_parse_from(argv.iter().chain(extra)).expect("the flags parse");
        let Command::Prune(args) = cli.command else { unreachable!("a prune command") };
        super::config(&args)
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
            let defaults = super::super::induce::prune_defaults(match method {
                "magnitude" => crate::cmd::cli::MethodArg::Magnitude,
                "wanda" => crate::cmd::cli::MethodArg::Wanda,
                "sparsegpt" => crate::cmd::cli::MethodArg::Sparsegpt,
                _ => crate::cmd::cli::MethodArg::Ria,
            });
            assert_eq!((induce.pruning_aware, induce.feature.expect("feature").snl), (defaults.pruning_aware, defaults.snl), "{method}");
            assert_eq!(c.reconstruct.expect("reconstruction asked for").snl, defaults.recon_snl, "{method}");
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

    #[test]
    fn training_after_pruning_is_named_reconstruction() {
        assert!(usage("wanda", &["--induce", "feature", "--pruning-aware", "pruned"]).contains("--reconstruct"));
        assert_eq!(usage("wanda", &["--recon-snl", "nuclear"]), "--recon-snl is an option of the reconstruction: it needs --reconstruct");
        assert_eq!(
            usage("wanda", &["--reconstruct", "--recon-lr", "0"]),
            "the reconstruction: the learning rate must be positive and finite, got 0"
        );
    }
}
