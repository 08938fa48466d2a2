//! Sparsity-friendliness measures of a weight's importance distribution.
//!
//! A pruner ranks weights by a score and removes the lowest at the target sparsity. How much a
//! weight matters to the layer's output is, to first order, its *true importance*
//! `|W_ij|·‖X_j‖` (Wanda's score), which an absorbable scaling cannot change. So the useful
//! measures are:
//!
//! - `true_removed`: the share of true importance that the pruner's own selection removes — what
//!   the distribution-level stage minimises;
//! - `own_removed`: the share of the pruner's own score mass it removes (how "sharp" the score
//!   distribution looks to the pruner);
//! - `entropy`: the normalised Shannon entropy of the score distribution (1 = flat, lower =
//!   concentrated). Reported, never optimised: on a magnitude score it is minimised by a
//!   degenerate scaling that blows one channel up.

use spindle_prune::Pattern;
use tch::{Kind, Tensor};

use crate::InduceError;

/// The score a pruner ranks by, as a differentiable function of a weight `[out, in]` and its
/// input's `scaler_row` `[in]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scorer {
    /// `|W|`, one threshold per matrix (the Wanda repo's magnitude baseline).
    Magnitude,
    /// `|W|·‖X‖`, ranked within each output row.
    Wanda,
    /// `(|W|/Σ_col|W| + |W|/Σ_row|W|)·‖X‖^alpha`, ranked within each output row.
    Ria { alpha: f64 },
}

impl Scorer {
    /// The score `[out, in]` (differentiable in `w` and `sq`): the pruner's own score function
    /// of `spindle-prune`, so the selection induction optimises is the one the pruner makes.
    pub fn score(self, w: &Tensor, sq: &Tensor) -> Result<Tensor, InduceError> {
        Ok(match self {
            Scorer::Magnitude => spindle_prune::magnitude::score(w),
            Scorer::Wanda => spindle_prune::wanda::score(w, sq)?,
            Scorer::Ria { alpha } => spindle_prune::ria::score(w, sq, spindle_prune::ria::RiaConfig { alpha })?,
        })
    }

    /// Whether the pruner compares scores within each output row (else within the matrix).
    pub fn per_row(self) -> bool {
        !matches!(self, Scorer::Magnitude)
    }

    /// Whether no absorbable scaling can change this selection: Wanda's `|W_ij|·‖X_j‖` is
    /// unchanged under `W → W·D`, `X → X/D` (tested in `tests/invariance.rs`).
    pub fn invariant_under_scaling(self) -> bool {
        matches!(self, Scorer::Wanda)
    }

    /// Whether the score reads the input's statistics (magnitude's does not).
    pub fn uses_statistics(self) -> bool {
        !matches!(self, Scorer::Magnitude)
    }

    /// The mask (`true` = removed) the pruner would choose from `score` under `pattern`, exactly
    /// as `spindle-prune` chooses it.
    pub fn select(self, score: &Tensor, pattern: Pattern) -> Result<Tensor, InduceError> {
        let score = score.detach();
        Ok(match pattern {
            Pattern::NM { n, m } => spindle_prune::mask::n_m(&score, n, m)?,
            Pattern::Unstructured { sparsity } if self.per_row() => spindle_prune::mask::per_row(&score, sparsity)?,
            Pattern::Unstructured { sparsity } => spindle_prune::mask::per_matrix(&score, sparsity)?,
        })
    }
}

/// The measures of one weight, see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Measures {
    pub true_removed: f64,
    pub own_removed: f64,
    pub entropy: f64,
}

/// Measures of `score` (the pruner's) against `importance` (the true importance), both
/// `[out, in]`, under `pattern`.
pub fn measures(scorer: Scorer, score: &Tensor, importance: &Tensor, pattern: Pattern) -> Result<Measures, InduceError> {
    if score.size() != importance.size() {
        return Err(InduceError::Shape(format!("score {:?} vs importance {:?}", score.size(), importance.size())));
    }
    let mask = scorer.select(score, pattern)?;
    let s = score.detach().to_kind(Kind::Double);
    let t = importance.detach().to_kind(Kind::Double);
    let share = |v: &Tensor| {
        let total = v.sum(Kind::Double).double_value(&[]);
        if total > 0.0 { v.masked_select(&mask).sum(Kind::Double).double_value(&[]) / total } else { 0.0 }
    };
    Ok(Measures { true_removed: share(&t), own_removed: share(&s), entropy: entropy(&s) })
}

/// Normalised Shannon entropy of a non-negative tensor read as a distribution.
pub fn entropy(v: &Tensor) -> f64 {
    let v = v.to_kind(Kind::Double).reshape([-1]);
    let n = v.size()[0];
    let total = v.sum(Kind::Double).double_value(&[]);
    if n < 2 || total <= 0.0 {
        return 0.0;
    }
    let p = &v / total;
    let plogp = (&p * p.clamp_min(1e-300).log()).sum(Kind::Double).double_value(&[]);
    -plogp / (n as f64).ln()
}

/// A soft version of `select`'s mask, differentiable in `score`: `σ((t − s)/(τ·t̄))` with `t` the
/// selection boundary (detached; per matrix, per row, or per group of `m` for N:M: the midpoint
/// between the largest removed and the smallest kept score) and `t̄` its mean.
pub fn soft_mask(scorer: Scorer, score: &Tensor, pattern: Pattern, temperature: f64) -> Tensor {
    let s = score.detach();
    let (rows, cols) = (s.size()[0], s.size()[1]);
    // The mean of the k-th and (k+1)-th smallest along `dim` (1-based k, clamped to the range).
    let boundary = |v: &Tensor, dim: i64, n: i64, k: i64| -> Tensor {
        let lo = v.kthvalue(k.clamp(1, n), dim, true).0;
        let hi = v.kthvalue((k + 1).clamp(1, n), dim, true).0;
        (lo + hi) / 2.0
    };
    let t = match pattern {
        Pattern::NM { n, m } => {
            let (n, m) = (n as i64, m as i64);
            let g = s.view([rows, cols / m, m]);
            boundary(&g, 2, m, m - n).expand([rows, cols / m, m], false).reshape([rows, cols])
        }
        Pattern::Unstructured { sparsity } if scorer.per_row() => boundary(&s, 1, cols, (cols as f64 * sparsity).floor() as i64),
        Pattern::Unstructured { sparsity } => {
            let n = rows * cols;
            boundary(&s.reshape([-1]), 0, n, (n as f64 * sparsity).floor() as i64).view([1, 1])
        }
    };
    let scale = t.mean(Kind::Float).clamp_min(1e-30) * temperature;
    ((t - score) / scale).sigmoid()
}

/// The distribution of a non-negative score on a log scale: the share of entries in each of
/// `bins` equal bins of `log10(score / median(score))` over `[lo, hi)`, values outside clamped into
/// the end bins (zeros into the first). Normalising by the median makes a scaled and an unscaled
/// weight comparable.
pub fn log_histogram(score: &Tensor, lo: f64, hi: f64, bins: i64) -> Vec<f64> {
    let s = score.detach().to_kind(Kind::Double).reshape([-1]);
    let n = s.size()[0];
    if n == 0 || bins < 1 || hi <= lo {
        return Vec::new();
    }
    let med = s.median().double_value(&[]).max(1e-300);
    let width = (hi - lo) / bins as f64;
    let v = (s / med).clamp_min(1e-300).log10();
    let idx = ((v - lo) / width).floor().clamp(0.0, (bins - 1) as f64).to_kind(Kind::Int64);
    let h = idx.bincount(None::<Tensor>, bins).to_kind(Kind::Double) / n as f64;
    Vec::<f64>::try_from(&h).unwrap_or_default()
}
