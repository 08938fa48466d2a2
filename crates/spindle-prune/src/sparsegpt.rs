//! SparseGPT (Frantar & Alistarh, 2023; `SparseGPT.fasterprune` of the SparseGPT repo): prune
//! column block by column block, choosing the mask from `w² / diag(Hinv)²` and propagating each
//! removed weight's error to the columns not yet visited through the upper Cholesky factor of
//! the damped inverse Hessian.
//!
//! One deliberate difference from the reference: when a Cholesky factorisation fails (the
//! reference raises), the damping is multiplied by ten and the factorisation retried, up to
//! [`SparseGptConfig::max_percdamp`]; each retry is returned in [`SparseGptOutcome::retries`]
//! for the report. There is never a fallback to an identity.

use tch::{Kind, Tensor};

use crate::mask::{check_pattern, floor_share};
use crate::{Pattern, PruneError};

/// SparseGPT's options (the reference defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SparseGptConfig {
    /// Columns per block.
    pub blocksize: i64,
    /// Damping as a share of the mean Hessian diagonal.
    pub percdamp: f64,
    /// The largest damping tried after failed factorisations (each retry multiplies by 10).
    pub max_percdamp: f64,
}

impl Default for SparseGptConfig {
    fn default() -> Self {
        SparseGptConfig { blocksize: 128, percdamp: 0.01, max_percdamp: 1.0 }
    }
}

/// A factorisation that failed and the damping that was tried next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DampRetry {
    pub failed_percdamp: f64,
    pub next_percdamp: f64,
}

/// The pruned weight (in the input's dtype), its mask, and what happened on the way.
#[derive(Debug)]
pub struct SparseGptOutcome {
    pub weight: Tensor,
    pub mask: Tensor,
    /// The reference's `Losses`, summed over rows: Σ (w − q)² / d² / 2.
    pub loss: f64,
    /// The damping that factorised.
    pub percdamp: f64,
    pub retries: Vec<DampRetry>,
}

/// `Hinv`: the upper Cholesky factor of the inverse of `h` damped by `percdamp`, or `None` when
/// a factorisation fails.
fn inverse_factor(h: &Tensor, percdamp: f64) -> Result<Option<Tensor>, PruneError> {
    // As the reference: `percdamp * torch.mean(torch.diag(H))`, a mean over a contiguous copy of
    // the diagonal (a strided view sums in another order) times `percdamp` in f32.
    let damp = (h.diagonal(0, 0, 1).contiguous().mean(Kind::Float) * percdamp).double_value(&[]);
    let h = h + Tensor::eye(h.size()[0], (Kind::Float, h.device())) * damp;
    let (l, info) = h.f_linalg_cholesky_ex(false, false)?;
    if info.int64_value(&[]) != 0 {
        return Ok(None);
    }
    let inv = l.f_cholesky_inverse(false)?;
    let (u, info) = inv.f_linalg_cholesky_ex(true, false)?;
    if info.int64_value(&[]) != 0 {
        return Ok(None);
    }
    Ok(Some(u))
}

/// Prunes `w` `[out, in]` with Hessian `h` `[in, in]` (see [`crate::Hessian`]).
pub fn prune(w: &Tensor, h: &Tensor, pattern: Pattern, cfg: SparseGptConfig) -> Result<SparseGptOutcome, PruneError> {
    let (rows, cols) = check_pattern(w, pattern)?;
    if h.size() != [cols, cols] {
        return Err(PruneError::Shape(format!("Hessian {:?} does not match a weight with {cols} inputs", h.size())));
    }
    if cfg.blocksize < 1 || cfg.percdamp.is_nan() || cfg.percdamp <= 0.0 {
        return Err(PruneError::BadPattern(format!("blocksize {} and percdamp {} must be positive", cfg.blocksize, cfg.percdamp)));
    }
    let _guard = tch::no_grad_guard();
    let dtype = w.kind();
    // Fresh copies: both are updated in place below, and `to_kind` to the same kind aliases.
    let mut w = w.to_dtype(Kind::Float, false, true);
    let h = h.to_dtype(Kind::Float, false, true);
    // Dead inputs (never active in calibration): H_dd = 1 and the column zeroed.
    let dead = h.diagonal(0, 0, 1).eq(0.0);
    let _ = h.diagonal(0, 0, 1).masked_fill_(&dead, 1.0);
    let _ = w.masked_fill_(&dead.reshape([1, -1]), 0.0);

    let mut percdamp = cfg.percdamp;
    let mut retries = Vec::new();
    let mut tried = Vec::new();
    let hinv = loop {
        tried.push(percdamp);
        if let Some(u) = inverse_factor(&h, percdamp)? {
            break u;
        }
        let next = percdamp * 10.0;
        if next > cfg.max_percdamp * (1.0 + 1e-9) {
            return Err(PruneError::Cholesky { tried, max_percdamp: cfg.max_percdamp });
        }
        retries.push(DampRetry { failed_percdamp: percdamp, next_percdamp: next });
        percdamp = next;
    };
    drop(h);

    let unstructured = match pattern {
        Pattern::Unstructured { sparsity } => Some(sparsity),
        Pattern::NM { .. } => None,
    };
    let nm = pattern.pruned_per_group();
    let mask_all = Tensor::zeros([rows, cols], (Kind::Bool, w.device()));
    let mut losses = Tensor::zeros([rows], (Kind::Float, w.device()));
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + cfg.blocksize).min(cols);
        let count = i2 - i1;
        let w1 = w.narrow(1, i1, count).copy();
        let q1 = Tensor::zeros_like(&w1);
        let err1 = Tensor::zeros_like(&w1);
        let losses1 = Tensor::zeros_like(&w1);
        let hinv1 = hinv.narrow(0, i1, count).narrow(1, i1, count);
        let hdiag1 = hinv1.diagonal(0, 0, 1);
        let mask1 = match unstructured {
            Some(p) if p > 0.0 => {
                let tmp = w1.pow_tensor_scalar(2) / hdiag1.reshape([1, -1]).pow_tensor_scalar(2);
                let flat = tmp.flatten(0, -1);
                let thresh = crate::mask::kth_smallest(&flat, floor_share(flat.size()[0], p))?;
                tmp.le_tensor(&thresh)
            }
            // N:M masks are chosen lazily below; sparsity 0 prunes nothing.
            _ => Tensor::zeros_like(&w1).to_kind(Kind::Bool),
        };
        for i in 0..count {
            let wcol = w1.select(1, i);
            let d = hinv1.get(i).get(i);
            if let Some((prune_n, m)) = nm
                && i % m as i64 == 0
            {
                let m = m as i64;
                let tmp = w1.narrow(1, i, m).pow_tensor_scalar(2) / hdiag1.narrow(0, i, m).reshape([1, -1]).pow_tensor_scalar(2);
                let idx = crate::mask::lowest(&tmp, prune_n as i64);
                let _ = mask1.narrow(1, i, m).scatter_value_(1, &idx, 1);
            }
            let q = wcol.masked_fill(&mask1.select(1, i), 0.0);
            q1.select(1, i).copy_(&q);
            let diff = &wcol - &q;
            losses1.select(1, i).copy_(&(diff.pow_tensor_scalar(2) / d.pow_tensor_scalar(2)));
            let e = diff / &d;
            let update = e.unsqueeze(1).matmul(&hinv1.get(i).narrow(0, i, count - i).unsqueeze(0));
            let mut tail = w1.narrow(1, i, count - i);
            tail -= update;
            err1.select(1, i).copy_(&e);
        }
        w.narrow(1, i1, count).copy_(&q1);
        mask_all.narrow(1, i1, count).copy_(&mask1);
        losses += losses1.sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / 2.0;
        if i2 < cols {
            let mut rest = w.narrow(1, i2, cols - i2);
            rest -= err1.matmul(&hinv.narrow(0, i1, count).narrow(1, i2, cols - i2));
        }
        i1 = i2;
    }
    if !bool::try_from(w.isfinite().all()).unwrap_or(false) {
        return Err(PruneError::NotFinite { what: "the SparseGPT-updated weight".into() });
    }
    // Dead columns are zero too; they count as pruned.
    let mask_all = mask_all.logical_or(&dead.reshape([1, -1]).expand([rows, cols], false));
    let loss = losses.sum(Kind::Float).double_value(&[]);
    Ok(SparseGptOutcome { weight: w.to_kind(dtype), mask: mask_all, loss, percdamp, retries })
}
