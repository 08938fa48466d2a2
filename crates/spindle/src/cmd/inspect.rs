//! `spindle inspect MODEL [--json PATH]`.

use anyhow::Context;
use serde_json::json;
use spindle::{output, progress};

use crate::Failure;
use crate::cmd::cli::InspectArgs;

pub fn run(args: InspectArgs) -> Result<(), Failure> {
    let dir = crate::cmd::resolve_model(&args.model)?;
    crate::cmd::check_outputs(None, &[("--json", args.json.as_deref())], &[&dir])?;
    let bar = progress::items("reading tensors");
    let report = spindle_model::inspect(&dir, &mut |done, total| progress::update(&bar, done, total))
        .with_context(|| format!("inspecting {}", dir.display()))?;
    bar.finish_and_clear();
    let c = &report.config;
    say!("model: {}", dir.display());
    say!(
        "architecture: {}, {} blocks, hidden {}, heads {}/{} (head_dim {}), intermediate {}, vocab {}",
        c.architecture.hf_name(),
        c.num_layers,
        c.hidden_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.intermediate_size,
        c.vocab_size
    );
    let dtypes: Vec<String> = report.dtypes.iter().map(|(k, v)| format!("{k}: {v} tensors")).collect();
    say!("parameters: {} ({})", report.parameters, dtypes.join(", "));
    say!("block linears: {} layers, sparsity {:.2}%", report.linears.len(), 100.0 * report.overall_sparsity());
    let width = report.linears.iter().map(|l| l.name.len()).max().unwrap_or(0);
    for l in &report.linears {
        say!("  {:width$}  {:>14}  {:6.2}%", l.name, format!("{:?}", l.shape), 100.0 * l.sparsity());
    }
    if let Some(path) = args.json {
        let linears: Vec<_> = report
            .linears
            .iter()
            .map(|l| json!({"name": l.name, "shape": l.shape, "zeros": l.zeros, "numel": l.numel, "sparsity": l.sparsity()}))
            .collect();
        let value = json!({
            "model": dir,
            "architecture": c.architecture.hf_name(),
            "config": {
                "num_layers": c.num_layers, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
                "num_heads": c.num_heads, "num_kv_heads": c.num_kv_heads, "head_dim": c.head_dim,
                "vocab_size": c.vocab_size, "dtype": c.dtype.hf_name(), "tie_word_embeddings": c.tie_word_embeddings,
            },
            "parameters": report.parameters,
            "dtypes": report.dtypes,
            "sparsity": report.overall_sparsity(),
            "linears": linears,
        });
        output::write_json(&path, &value).map_err(anyhow::Error::from)?;
    }
    Ok(())
}
