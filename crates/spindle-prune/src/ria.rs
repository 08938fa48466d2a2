//! RIA, Relative Importance and Activations (Zhang et al., 2024): score
//! `(|W_ij| / Σ_i|W_ij| + |W_ij| / Σ_j|W_ij|) · ‖x_j‖^a`, ranked within each output row like
//! Wanda. `‖x_j‖` is `sqrt(scaler_row_j)`, the same statistic Wanda uses; `a` is 0.5 by default.

use tch::Tensor;

use crate::mask::{check_pattern, select_per_row};
use crate::{Pattern, PruneError};

/// RIA's options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiaConfig {
    /// The activation exponent `a`.
    pub alpha: f64,
}

impl Default for RiaConfig {
    fn default() -> Self {
        RiaConfig { alpha: 0.5 }
    }
}

/// RIA's score `[out, in]`.
pub fn score(w: &Tensor, scaler_row: &Tensor, cfg: RiaConfig) -> Result<Tensor, PruneError> {
    let (_, i) = crate::dims2(w)?;
    if scaler_row.size() != [i] {
        return Err(PruneError::Shape(format!("scaler_row {:?} does not match a weight with {i} inputs", scaler_row.size())));
    }
    let a = w.abs();
    let col = a.sum_dim_intlist([0i64].as_slice(), false, None);
    let row = a.sum_dim_intlist([1i64].as_slice(), false, None).reshape([-1, 1]);
    let relative = &a / col + &a / row;
    Ok(relative * scaler_row.to_kind(w.kind()).sqrt().reshape([1, -1]).pow_tensor_scalar(cfg.alpha))
}

/// The mask RIA removes from `w`.
pub fn mask(w: &Tensor, scaler_row: &Tensor, pattern: Pattern, cfg: RiaConfig) -> Result<Tensor, PruneError> {
    check_pattern(w, pattern)?;
    select_per_row(&score(w, scaler_row, cfg)?, pattern)
}
