//! OWL, Outlier-Weighed Layerwise sparsity (Yin et al., 2024), with llm-compressor's formula:
//! each block's outlier ratio is the percentage of its Wanda-style scores `|W|·‖x‖` (over all its
//! linears together) above `M ×` their mean; the ratios are rescaled to `[0, 2λ]` and each block
//! gets `1 − (r − mean(r) + (1 − target))`, so blocks with more outliers are pruned less and the
//! mean sparsity stays at the target.

use tch::{Kind, Tensor};

use crate::PruneError;

/// OWL's options (llm-compressor's defaults: M = 5, λ = 0.08).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OwlConfig {
    /// The outlier threshold as a multiple of the mean score.
    pub m: f64,
    /// Half the spread of the sparsities around the target.
    pub lambda: f64,
}

impl Default for OwlConfig {
    fn default() -> Self {
        OwlConfig { m: 5.0, lambda: 0.08 }
    }
}

/// One linear's OWL scores `|W| · act_norm` (see [`crate::ActNorms`]).
pub fn score(w: &Tensor, act_norm: &Tensor) -> Result<Tensor, PruneError> {
    let (_, i) = crate::dims2(w)?;
    if act_norm.size() != [i] {
        return Err(PruneError::Shape(format!("activation norms {:?} do not match a weight with {i} inputs", act_norm.size())));
    }
    Ok(w.abs().to_kind(Kind::Float) * act_norm.to_kind(Kind::Float).unsqueeze(0))
}

/// A block's outlier ratio in percent from its linears' scores.
pub fn outlier_ratio(scores: &[Tensor], m: f64) -> Result<f64, PruneError> {
    if scores.is_empty() {
        return Err(PruneError::Owl("a block with no linear layers".into()));
    }
    let flat: Vec<Tensor> = scores.iter().map(|s| s.flatten(0, -1)).collect();
    let all = Tensor::cat(&flat, 0);
    let threshold = all.mean(Kind::Float) * m;
    let above = all.gt_tensor(&threshold).sum(Kind::Int64).int64_value(&[]);
    Ok(100.0 * above as f64 / all.numel() as f64)
}

/// Per-block sparsities from per-block outlier ratios, around `target`.
pub fn sparsities(ratios: &[f64], target: f64, cfg: OwlConfig) -> Result<Vec<f64>, PruneError> {
    if ratios.len() < 2 {
        return Err(PruneError::Owl(format!("needs at least two blocks, got {}", ratios.len())));
    }
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max.is_nan() || max <= min {
        return Err(PruneError::Owl(format!(
            "every block has the same outlier ratio ({min}%), so OWL's rescaling is undefined; use uniform allocation"
        )));
    }
    let scaled: Vec<f64> = ratios.iter().map(|r| (r - min) * (1.0 / (max - min) * cfg.lambda * 2.0)).collect();
    let mean = scaled.iter().sum::<f64>() / scaled.len() as f64;
    let out: Vec<f64> = scaled.iter().map(|r| 1.0 - (r - mean + (1.0 - target))).collect();
    if let Some(bad) = out.iter().find(|s| !(0.0..1.0).contains(*s)) {
        return Err(PruneError::Owl(format!("a block's sparsity came out as {bad}, outside [0, 1): lower λ ({})", cfg.lambda)));
    }
    Ok(out)
}
