//! Magnitude pruning (Wanda repo `prune_magnitude`): the score is `|W|`; unstructured masks use
//! one threshold for the whole matrix (or, as an option, rank within each row); N:M masks take
//! the smallest of each group.

use tch::Tensor;

use crate::mask::{check_pattern, n_m, per_matrix, per_row};
use crate::{Pattern, PruneError};

/// Where an unstructured magnitude threshold is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// One threshold per matrix (the reference).
    #[default]
    Matrix,
    /// `floor(in · p)` per output row, stable-sorted.
    Row,
}

/// Magnitude's score: `|W|`.
pub fn score(w: &Tensor) -> Tensor {
    w.abs()
}

/// The mask magnitude pruning removes from `w` `[out, in]`.
pub fn mask(w: &Tensor, pattern: Pattern, scope: Scope) -> Result<Tensor, PruneError> {
    check_pattern(w, pattern)?;
    let score = score(w);
    match (pattern, scope) {
        (Pattern::Unstructured { sparsity }, Scope::Matrix) => per_matrix(&score, sparsity),
        (Pattern::Unstructured { sparsity }, Scope::Row) => per_row(&score, sparsity),
        (Pattern::NM { n, m }, _) => n_m(&score, n, m),
    }
}
