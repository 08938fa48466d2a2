//! What `spindle inspect` reports about a model directory: architecture, parameter count, dtypes,
//! and the sparsity (share of exact zeros) of every linear layer inside the decoder blocks — the
//! check people run on a pruned model. Tensors are read one at a time.

use std::collections::BTreeMap;
use std::path::Path;

use tch::{Device, Kind};

use crate::config::ModelConfig;
use crate::model::ModelError;
use crate::weights::Weights;

/// One linear layer's sparsity.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSparsity {
    /// Full tensor name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    pub zeros: u64,
    pub numel: u64,
}

impl LinearSparsity {
    pub fn sparsity(&self) -> f64 {
        if self.numel == 0 { 0.0 } else { self.zeros as f64 / self.numel as f64 }
    }
}

/// The report.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub config: ModelConfig,
    /// Every tensor's element count, summed (tied weights are stored once).
    pub parameters: u64,
    /// Tensor count per stored dtype (`F32`, `F16`, `BF16`).
    pub dtypes: BTreeMap<String, usize>,
    /// The linear layers of the decoder blocks, in name order.
    pub linears: Vec<LinearSparsity>,
}

impl Inspection {
    /// Zeros over elements across all block linears.
    pub fn overall_sparsity(&self) -> f64 {
        let (z, n) = self.linears.iter().fold((0u64, 0u64), |(z, n), l| (z + l.zeros, n + l.numel));
        if n == 0 { 0.0 } else { z as f64 / n as f64 }
    }
}

fn is_block_linear(name: &str) -> bool {
    name.contains(".layers.") && (name.ends_with("_proj.weight") || name.ends_with(".fc1.weight") || name.ends_with(".fc2.weight"))
}

/// Inspects the model directory `dir`; `progress(done, total)` counts tensors.
pub fn inspect(dir: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<Inspection, ModelError> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(ModelError::NoConfig { dir: dir.to_path_buf() });
    }
    let config = ModelConfig::from_file(&config_path)?;
    let weights = Weights::open(dir)?;
    crate::model::check_blocks(dir, &weights, &crate::model::tensor_prefix(&config.family, &weights), config.num_layers)?;
    let names: Vec<String> = weights.names().map(str::to_owned).collect();
    let mut parameters = 0u64;
    let mut dtypes = BTreeMap::new();
    let mut linears = Vec::new();
    for (i, name) in names.iter().enumerate() {
        progress(i, names.len());
        let shape = weights.shape(name).map(<[usize]>::to_vec).unwrap_or_default();
        let numel: u64 = shape.iter().map(|&d| d as u64).product();
        parameters += numel;
        let kind = weights.stored_kind(name);
        let dtype = match kind {
            Some(Kind::Float) => "F32",
            Some(Kind::Half) => "F16",
            Some(Kind::BFloat16) => "BF16",
            _ => "other",
        };
        *dtypes.entry(dtype.to_owned()).or_insert(0) += 1;
        if is_block_linear(name) {
            let t = weights.load(name, &shape, kind.unwrap_or(Kind::Float), Device::Cpu)?;
            let zeros = t.eq(0.0).sum(Kind::Int64).int64_value(&[]) as u64;
            linears.push(LinearSparsity { name: name.clone(), shape, zeros, numel });
        }
    }
    progress(names.len(), names.len());
    Ok(Inspection { config, parameters, dtypes, linears })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parameters_dtypes_and_exact_zeros() {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/opt-pre");
        let d = tempfile::tempdir().unwrap();
        std::fs::copy(golden.join("config.json"), d.path().join("config.json")).unwrap();
        // Zero out a known number of entries of one linear.
        let w = Weights::open(&golden).unwrap();
        let mut tensors = Vec::new();
        for name in w.names() {
            let shape = w.shape(name).unwrap().to_vec();
            let mut t = w.load(name, &shape, Kind::Float, Device::Cpu).unwrap();
            if name == "model.decoder.layers.1.fc1.weight" {
                t = t.flatten(0, -1).index_fill(0, &tch::Tensor::arange(100, (Kind::Int64, Device::Cpu)), 0.0).view([64, 32]);
            }
            tensors.push((name.to_owned(), t));
        }
        crate::write_safetensors(&d.path().join("model.safetensors"), &tensors).unwrap();
        let r = inspect(d.path(), &mut |_, _| {}).unwrap();
        let expected: u64 = tensors.iter().map(|(_, t)| t.numel() as u64).sum();
        assert_eq!(r.parameters, expected);
        assert_eq!(r.dtypes.get("F32"), Some(&tensors.len()));
        assert_eq!(r.linears.len(), 12);
        let fc1 = r.linears.iter().find(|l| l.name == "model.decoder.layers.1.fc1.weight").unwrap();
        assert_eq!((fc1.zeros, fc1.numel, fc1.shape.clone()), (100, 2048, vec![64, 32]));
        assert!(r.linears.iter().filter(|l| l.name != fc1.name).all(|l| l.zeros == 0));
        assert!((r.overall_sparsity() - 100.0 / r.linears.iter().map(|l| l.numel).sum::<u64>() as f64).abs() < 1e-12);
    }
}
