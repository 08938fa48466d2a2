//! What the commands that read calibration data and write models share: calibration windows
//! drawn as the reference loaders draw them, and the hashes of a model's files for reports. Both `cmd/prune.rs` and `cmd/induce.rs` use it, and it uses
//! neither.

use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};
use spindle::prune::{Allocation, Method};
use spindle::recipe::ResolvedCalibration;
use spindle_data::cache::file_sha256;
use spindle_prune::magnitude::Scope;
use tch::{Device, Kind, Tensor};

use crate::Failure;
use crate::cmd::data::{token_cache, tokenizer_of};

/// `[nsamples, seqlen]` calibration ids drawn as the reference loaders draw them, and their
/// description for the JSON report.
pub(crate) fn calibration(dir: &Path, calib: &ResolvedCalibration, data_flag: Option<&Path>) -> Result<(Tensor, Value), Failure> {
    let (_, context) = tokenizer_of(dir)?;
    let seqlen = calib.seqlen.unwrap_or(2048.min(context));
    let data = crate::cmd::data::data_dir(data_flag)?;
    let (ids, info) = spindle::recipe::draw_calibration(dir, calib, seqlen, &data, &token_cache()).map_err(|e| match e {
        spindle::prune::PipelineError::Data(e) => crate::cmd::corpus_failure(e),
        e => Failure::Other(e.into()),
    })?;
    Ok((ids, serde_json::to_value(&info).map_err(anyhow::Error::from)?))
}

/// SHA-256 of every safetensors file of a model directory, by name.
pub(crate) fn model_hashes(dir: &Path) -> anyhow::Result<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    let mut out = serde_json::Map::new();
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        out.insert(name, json!(file_sha256(&f)?));
    }
    Ok(Value::Object(out))
}

/// A method's options as JSON fields (reports hold no Debug strings).
pub(crate) fn method_options_json(m: Method) -> Value {
    match m {
        Method::Magnitude(scope) => json!({"scope": match scope { Scope::Matrix => "matrix", Scope::Row => "row" }}),
        Method::Wanda => json!({}),
        Method::SparseGpt(c) => json!({"blocksize": c.blocksize, "percdamp": c.percdamp, "max_percdamp": c.max_percdamp}),
        Method::Ria(c) => json!({"alpha": c.alpha}),
    }
}

/// `"uniform"`, or `{"owl": {"m": .., "lambda": ..}}`.
pub(crate) fn allocation_json(a: Allocation) -> Value {
    match a {
        Allocation::Uniform => json!("uniform"),
        Allocation::Owl(o) => json!({"owl": {"m": o.m, "lambda": o.lambda}}),
    }
}

/// `cpu`, `cuda:N`, ... as the `--device` flag spells them.
pub(crate) fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

/// `float32`, `bfloat16`, `float16` as the `--dtype` flag spells them (other kinds by torch's name).
pub(crate) fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Float => "float32",
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        Kind::Double => "float64",
        _ => "other",
    }
}
