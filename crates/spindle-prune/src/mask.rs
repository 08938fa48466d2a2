//! Masks from scores: the three selection rules the reference pruners share.

use tch::{Kind, Tensor};

use crate::{Pattern, PruneError, dims2};

/// `floor(count · p)` as Python's `int(count * p)` computes it.
pub(crate) fn floor_share(count: i64, p: f64) -> i64 {
    (count as f64 * p).floor() as i64
}

/// Checks that `w` is 2-D and, for N:M, that its input dimension is divisible by M.
pub fn check_pattern(w: &Tensor, pattern: Pattern) -> Result<(i64, i64), PruneError> {
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
    if k == 0 {
        return Ok(Tensor::zeros_like(score).to_kind(Kind::Bool));
    }
    // The first k of a stable ascending sort, without sorting (which was most of Wanda's
    // pruning time after the forward passes): every score below the row's k-th smallest t,
    // then the scores equal to t in index order until the row has k.
    let t = row_kth(score, k)?;
    let below = score.lt_tensor(&t);
    let tied = score.eq_tensor(&t);
    let room = Tensor::from(k) - below.sum_dim_intlist(-1, true, Kind::Int64);
    let first_ties = tied.cumsum(-1, Kind::Int64).le_tensor(&room);
    Ok(below.logical_or(&tied.logical_and(&first_ties)))
}

/// Each row's `k`-th smallest score (1-based) `[out, 1]`, NaN ranked highest as `kthvalue` and
/// `sort` rank it. On the CPU it is selected here, row by row in one host copy of the scores:
/// libtorch's `kthvalue` copies every row with its indices, several times slower (the figures
/// are in `docs/results/bench.md`).
fn row_kth(score: &Tensor, k: i64) -> Result<Tensor, PruneError> {
    if !selects_here(score) {
        return Ok(score.kthvalue(k, -1, true).0);
    }
    let (rows, cols) = dims2(score)?;
    let mut values = Vec::<f32>::try_from(score.to_kind(Kind::Float).contiguous().view([-1]))?;
    let kth: Vec<f32> = values.chunks_exact_mut(cols as usize).map(|row| select_kth(row, k as usize - 1)).collect();
    Ok(Tensor::from_slice(&kth).view([rows, 1]).to_kind(score.kind()))
}

/// Whether [`select_kth`] can rank `scores` exactly: on the CPU, in a dtype f32 holds exactly.
fn selects_here(scores: &Tensor) -> bool {
    scores.device() == tch::Device::Cpu && matches!(scores.kind(), Kind::Float | Kind::BFloat16 | Kind::Half)
}

/// The `k`-th smallest (0-based) of `values`, reordering them; NaN ranks above every number and
/// −0 equals +0, as libtorch's comparisons have it. The value is exact: f32 holds every score
/// dtype spindle prunes in (f32, bf16, f16) without rounding.
fn select_kth(values: &mut [f32], k: usize) -> f32 {
    let nan_high = |a: &f32, b: &f32| match (a.is_nan(), b.is_nan()) {
        (false, false) => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
        (a_nan, b_nan) => a_nan.cmp(&b_nan),
    };
    *values.select_nth_unstable_by(k, nan_high).1
}

/// Per-matrix selection: `|score| <= sorted(score)[floor(numel · p)]`, as magnitude pruning and
/// SparseGPT's block masks do. This prunes every score tied with the threshold, so one more
/// than `floor(numel · p)` at least; at `p = 0` the reference would still prune the smallest
/// weight, which no user asking for sparsity 0 wants, so `p = 0` prunes nothing here.
pub fn per_matrix(score: &Tensor, sparsity: f64) -> Result<Tensor, PruneError> {
    if sparsity == 0.0 {
        return Ok(Tensor::zeros_like(score).to_kind(Kind::Bool));
    }
    Ok(score.le_tensor(&kth_smallest(&score.flatten(0, -1), floor_share(score.numel() as i64, sparsity))?))
}

/// `sorted(flat)[k]` (0-based), the reference's threshold, without sorting: a selection in
/// O(n) where the sort was O(n log n) and most of magnitude pruning's time. The value is the
/// same (the k-th order statistic is one number however ties are ordered), so are the masks.
pub(crate) fn kth_smallest(flat: &Tensor, k: i64) -> Result<Tensor, PruneError> {
    if !selects_here(flat) {
        return Ok(flat.kthvalue(k + 1, 0, false).0);
    }
    let mut values = Vec::<f32>::try_from(flat.to_kind(Kind::Float).contiguous())?;
    if k < 0 || k as usize >= values.len() {
        return Err(PruneError::Shape(format!("no {k}-th smallest of {} scores", values.len())));
    }
    let kth = if values.len() >= RADIX_FROM { radix_kth(&values, k as usize) } else { select_kth(&mut values, k as usize) };
    Ok(Tensor::from(kth).to_kind(flat.kind()))
}

/// From this many scores on, [`radix_kth`] (two passes) is faster than a quickselect, whose
/// partitions showed in profiles of a magnitude prune with Sparsity Induction (its feature stage
/// selects every matrix's threshold at every step).
const RADIX_FROM: usize = 1 << 17;

/// `f32` → `u32` preserving the order [`select_kth`] ranks by: negative numbers below positive
/// ones, NaN above everything; −0 just below +0, which is harmless since the two compare equal
/// wherever the threshold is used.
fn order_key(x: f32) -> u32 {
    if x.is_nan() {
        u32::MAX
    } else {
        let b = x.to_bits();
        if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 }
    }
}

/// The inverse of [`order_key`] (NaN for `u32::MAX`).
fn from_key(k: u32) -> f32 {
    if k == u32::MAX {
        f32::NAN
    } else if k & 0x8000_0000 != 0 {
        f32::from_bits(k & 0x7fff_ffff)
    } else {
        f32::from_bits(!k)
    }
}

/// The `k`-th smallest (0-based) of `values` by a two-pass radix selection: count the top 16
/// bits of every key, find the bucket holding rank `k`, then count the low 16 bits inside it.
/// The same number as [`select_kth`] gives (−0 and +0 aside, which compare equal).
fn radix_kth(values: &[f32], k: usize) -> f32 {
    let mut high = vec![0u32; 1 << 16];
    for &v in values {
        high[(order_key(v) >> 16) as usize] += 1;
    }
    let (bucket, before) = rank_in(&high, k);
    let mut low = vec![0u32; 1 << 16];
    for &v in values {
        let key = order_key(v);
        if key >> 16 == bucket as u32 {
            low[(key & 0xffff) as usize] += 1;
        }
    }
    let (within, _) = rank_in(&low, k - before);
    from_key(((bucket as u32) << 16) | within as u32)
}

/// The bin of `counts` that holds rank `k` (0-based), and how many lie in the bins before it.
fn rank_in(counts: &[u32], k: usize) -> (usize, usize) {
    let mut seen = 0usize;
    for (bin, &c) in counts.iter().enumerate() {
        if seen + c as usize > k {
            return (bin, seen);
        }
        seen += c as usize;
    }
    (counts.len() - 1, seen)
}

/// N:M selection: in every group of `m` consecutive inputs of each row, the `m − n` lowest
/// scores. The reference takes them with `torch.topk(..., largest=False)`, whose choice among
/// equal scores is unspecified (and differs between CPU and GPU); dequantized checkpoints tie
/// often (many of SmolLM2's magnitude groups tie at the cut). Here ties go to the lower input
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

#[cfg(test)]
mod tests {
    use tch::{Kind, Tensor};

    /// Scores with many ties (small integers), as dequantized weights have.
    fn tied_scores(rows: i64, cols: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randint(7, [rows, cols], (Kind::Float, tch::Device::Cpu))
    }

    #[test]
    fn per_row_selects_exactly_what_a_stable_sort_selects() {
        for (seed, p) in [(0, 0.5), (1, 0.3), (2, 0.9), (3, 0.05)] {
            let score = tied_scores(16, 96, seed);
            let k = super::floor_share(96, p);
            let (_, idx) = score.sort_stable(true, -1, false);
            let by_sort = Tensor::zeros_like(&score).to_kind(Kind::Bool).scatter_value(1, &idx.narrow(1, 0, k), 1);
            let ours = super::per_row(&score, p).unwrap();
            assert!(ours.equal(&by_sort), "seed {seed}, p {p}");
            let per_row_count = ours.sum_dim_intlist(-1, false, Kind::Int64);
            assert!(per_row_count.eq(k).all().int64_value(&[]) == 1, "every row prunes exactly k");
        }
    }

    #[test]
    fn the_cpu_row_selection_is_kthvalue_with_ties_signed_zeros_and_nans() {
        let score = tied_scores(24, 50, 7);
        // Signed zeros and NaNs, which a careless comparison orders differently from libtorch.
        let _ = score.narrow(0, 0, 6).narrow(1, 0, 20).fill_(-0.0);
        let _ = score.narrow(0, 3, 6).narrow(1, 10, 7).fill_(f64::NAN);
        for k in [1, 2, 17, 25, 44, 49, 50] {
            let ours = super::row_kth(&score, k).unwrap();
            let (theirs, _) = score.kthvalue(k, -1, true);
            let same = ours.eq_tensor(&theirs).logical_or(&ours.isnan().logical_and(&theirs.isnan()));
            assert!(bool::try_from(same.all()).unwrap(), "k {k}");
        }
        // bf16 and f16 are ranked here exactly; f64 (which f32 would round) goes to kthvalue.
        for kind in [Kind::BFloat16, Kind::Half, Kind::Double] {
            let jitter = Tensor::rand([24, 50], (Kind::Double, tch::Device::Cpu)) * 1e-9;
            let other = (score.nan_to_num(0.0, None, None).to_kind(Kind::Double) + jitter).to_kind(kind);
            assert!(super::row_kth(&other, 9).unwrap().equal(&other.kthvalue(9, -1, true).0), "{kind:?}");
        }
    }

    #[test]
    fn the_radix_selection_is_the_quickselect_with_ties_signed_zeros_and_nans() {
        tch::manual_seed(11);
        // Large enough for the radix path; small integers tie heavily, negative values and
        // NaNs as a careless key would misorder them.
        let n = super::RADIX_FROM as i64 + 4321;
        let ints = Tensor::randint(9, [n], (Kind::Float, tch::Device::Cpu)) - 4.0;
        let _ = ints.narrow(0, 0, 5000).fill_(-0.0);
        let _ = ints.narrow(0, 7000, 300).fill_(f64::NAN);
        let fine = Tensor::randn([n], (Kind::Float, tch::Device::Cpu)) * 1e-3;
        for scores in [ints, fine.abs(), fine] {
            let values = Vec::<f32>::try_from(&scores).unwrap();
            for k in [0, 1, 4999, 5000, n as usize / 2, n as usize - 301, n as usize - 1] {
                let mut copy = values.clone();
                let want = super::select_kth(&mut copy, k);
                let got = super::radix_kth(&values, k);
                assert!(got == want || (got.is_nan() && want.is_nan()), "k {k}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn per_matrix_thresholds_at_the_sorted_value() {
        for (seed, p) in [(0, 0.5), (1, 0.25), (2, 0.99)] {
            let score = tied_scores(12, 40, seed);
            let flat = score.flatten(0, -1);
            let (sorted, _) = flat.sort(0, false);
            let by_sort = score.le_tensor(&sorted.get(super::floor_share(flat.size()[0], p)));
            assert!(super::per_matrix(&score, p).unwrap().equal(&by_sort), "seed {seed}, p {p}");
        }
    }
}
