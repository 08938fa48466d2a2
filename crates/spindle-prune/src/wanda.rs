//! Wanda (Sun et al., 2023; `prune_wanda` of the Wanda repo): score `|W_ij| · sqrt(scaler_row_j)`,
//! ranked within each output row.

use tch::Tensor;

use crate::mask::{check_pattern, select_per_row};
use crate::{Pattern, PruneError};

/// Wanda's score `[out, in]` from `w` and `scaler_row` `[in]` (see [`crate::ColumnNorms`]).
pub fn score(w: &Tensor, scaler_row: &Tensor) -> Result<Tensor, PruneError> {
    let (_, i) = crate::dims2(w)?;
    if scaler_row.size() != [i] {
        return Err(PruneError::Shape(format!("scaler_row {:?} does not match a weight with {i} inputs", scaler_row.size())));
    }
    Ok(w.abs() * scaler_row.to_kind(w.kind()).sqrt().reshape([1, -1]))
}

/// The mask Wanda removes from `w`.
pub fn mask(w: &Tensor, scaler_row: &Tensor, pattern: Pattern) -> Result<Tensor, PruneError> {
    check_pattern(w, pattern)?;
    select_per_row(&score(w, scaler_row)?, pattern)
}
