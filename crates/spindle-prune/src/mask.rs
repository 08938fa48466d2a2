//! Masks from scores: the three selection rules the reference pruners share.

use tch::{Kind, Tensor};

use crate::{Pattern, PruneError, dims2};

/// `floor(count · p)` as Python's `int(count * p)` computes it.
pub(crate) fn floor_share(count: i64, p: f64) -> i64 {
    (count as f64 * p).floor() as i64
}

/// Checks that `w` is 2-D and, for N:M, that its input dimension is divisible by M.
pub(crate) fn check_pattern(w: &Tensor, pattern: Pattern) -> Result<(i64, i64), PruneError> {
    let pattern = pattern.validate()?;
    let (o, i) = dims2(w)?;
    if let Pattern::NM { m, .. } = pattern
        && i % m as i64 != 0
    {
        return Err(PruneError::NotDivisible { pattern: pattern.to_string(), m, shape: vec![o, i] });
    }
    Ok((o, i))
}

/// Per-row selection: each row's `floor(in · p)` lowest scores, ranked with a stable sort
/// (Wanda's and RIA's `torch.sort(W_metric, dim=-1, stable=True)`).
pub fn per_row(score: &Tensor, sparsity: f64) -> Result<Tensor, PruneError> {
    let (_, i) = dims2(score)?;
    let k = floor_share(i, sparsity);
    let mask = Tensor::zeros_like(score).to_kind(Kind::Bool);
    if k == 0 {
        return Ok(mask);
    }
    let (_, idx) = score.sort_stable(true, -1, false);
    Ok(mask.scatter_value(1, &idx.narrow(1, 0, k), 1))
}

/// Per-matrix selection: `|score| <= sorted(score)[floor(numel · p)]`, as magnitude pruning and
/// SparseGPT's block masks do. This prunes every score tied with the threshold, so one more
/// than `floor(numel · p)` at least; at `p = 0` the reference would still prune the smallest
/// weight, which no user asking for sparsity 0 wants, so `p = 0` prunes nothing here.
pub fn per_matrix(score: &Tensor, sparsity: f64) -> Result<Tensor, PruneError> {
    if sparsity == 0.0 {
        return Ok(Tensor::zeros_like(score).to_kind(Kind::Bool));
    }
    let flat = score.flatten(0, -1);
    let k = floor_share(flat.size()[0], sparsity);
    let (sorted, _) = flat.sort(0, false);
    let thresh = sorted.get(k);
    Ok(score.le_tensor(&thresh))
}

/// N:M selection: in every group of `m` consecutive inputs of each row, the `m − n` lowest
/// scores. The reference takes them with `torch.topk(..., largest=False)`, whose choice among
/// equal scores is unspecified (and differs between CPU and GPU); dequantized checkpoints tie
/// often (15% of SmolLM2's magnitude groups tie at the cut). Here ties go to the lower input
/// index, by a stable sort, so a mask never depends on the kernel that chose it. Without ties
/// the result is topk's.
pub fn n_m(score: &Tensor, n: usize, m: usize) -> Result<Tensor, PruneError> {
    let (o, i) = dims2(score)?;
    let (m64, prune) = (m as i64, (m - n) as i64);
    let groups = score.to_kind(Kind::Float).reshape([o, i / m64, m64]);
    let mask = Tensor::zeros([o, i / m64, m64], (Kind::Bool, score.device())).scatter_value(2, &lowest(&groups, prune), 1);
    Ok(mask.reshape([o, i]))
}

/// The indices of the `k` lowest values along the last dimension, ties to the lower index.
pub(crate) fn lowest(x: &Tensor, k: i64) -> Tensor {
    let (_, idx) = x.sort_stable(true, -1, false);
    idx.narrow(-1, 0, k)
}

/// The mask of `pattern` from `score`, ranking per row for unstructured patterns.
pub(crate) fn select_per_row(score: &Tensor, pattern: Pattern) -> Result<Tensor, PruneError> {
    match pattern {
        Pattern::Unstructured { sparsity } => per_row(score, sparsity),
        Pattern::NM { n, m } => n_m(score, n, m),
    }
}

/// `w` with the masked weights set to zero (same dtype and device).
pub fn apply_mask(w: &Tensor, mask: &Tensor) -> Tensor {
    w.masked_fill(mask, 0.0)
}

/// The share of exact zeros in `w`.
pub fn sparsity(w: &Tensor) -> f64 {
    let zeros = w.eq(0.0).sum(Kind::Int64).int64_value(&[]);
    zeros as f64 / w.numel().max(1) as f64
}
