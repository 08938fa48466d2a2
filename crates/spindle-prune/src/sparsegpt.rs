//! SparseGPT (Frantar & Alistarh, 2023; `SparseGPT.fasterprune` of the SparseGPT repo): prune
//! column block by column block, choosing the mask from `w² / diag(Hinv)²` and propagating each
//! removed weight's error to the columns not yet visited through the upper Cholesky factor of
//! the damped inverse Hessian.
//!
//! One deliberate difference from the reference: when a Cholesky factorisation fails (the
//! reference raises), the damping is multiplied by ten and the factorisation retried, up to
//! [`SparseGptConfig::max_percdamp`]; each retry is returned in [`SparseGptOutcome::retries`]
//! for the report. There is never a fallback to an identity.
//!
//! The column loop is the reference's, reshaped for speed with its values unchanged (a unit test
//! holds it to a transcription of `fasterprune` bit for bit): each block is transposed so that a
//! column is a contiguous row, the pruned block, errors and losses are formed once per block
//! from the visited columns instead of once per column, and [`prune_shared`] runs the loop once
//! for weights that share a Hessian (q/k/v, gate/up) with their rows stacked.

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

impl SparseGptConfig {
    /// The options, or [`PruneError::BadOption`] naming the one out of range.
    pub fn validate(&self) -> Result<(), PruneError> {
        let bad = |problem: String| Err(PruneError::BadOption { method: "SparseGPT", problem });
        if self.blocksize < 1 {
            return bad(format!("blocksize must be at least 1, got {}", self.blocksize));
        }
        if !(self.percdamp > 0.0 && self.percdamp.is_finite()) {
            return bad(format!("percdamp must be positive and finite, got {}", self.percdamp));
        }
        if !(self.max_percdamp > 0.0 && self.max_percdamp.is_finite()) {
            return bad(format!("max_percdamp must be positive and finite, got {}", self.max_percdamp));
        }
        Ok(())
    }
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

/// What [`factorise`] leaves for the column loop.
struct Factorised {
    /// The dead inputs `[in]`.
    dead: Tensor,
    hinv: Tensor,
    percdamp: f64,
    retries: Vec<DampRetry>,
}

/// The reference's set-up before the column loop, on `w` (an f32 copy, changed in place): dead
/// inputs (never active in calibration) get `H_dd = 1` and a zeroed column, then `Hinv` is
/// factorised, with more damping after each failure.
fn factorise(w: &mut Tensor, h: &Tensor, cfg: SparseGptConfig) -> Result<Factorised, PruneError> {
    let h = h.to_dtype(Kind::Float, false, true);
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
    Ok(Factorised { dead, hinv, percdamp, retries })
}

/// Prunes `w` `[out, in]` with Hessian `h` `[in, in]` (see [`crate::Hessian`]).
pub fn prune(w: &Tensor, h: &Tensor, pattern: Pattern, cfg: SparseGptConfig) -> Result<SparseGptOutcome, PruneError> {
    let mut out = prune_shared(&[w], h, pattern, cfg)?;
    out.pop().ok_or_else(|| PruneError::Shape("SparseGPT returned no weight".into()))
}

/// Prunes several weights that read the same input, so share one Hessian `h` (q/k/v, or
/// gate/up), in one pass: exactly what [`prune`] gives each of them, bit for bit. SparseGPT
/// treats the rows of a weight independently given `Hinv` (only the unstructured block masks
/// look across rows, and they are still chosen per weight here), so stacking the weights' rows
/// runs the column loop, whose cost is per column, once for the group instead of once per
/// weight, and factorises `H` once.
pub fn prune_shared(ws: &[&Tensor], h: &Tensor, pattern: Pattern, cfg: SparseGptConfig) -> Result<Vec<SparseGptOutcome>, PruneError> {
    let mut members = Vec::with_capacity(ws.len());
    let mut cols = None;
    for w in ws {
        let (r, c) = check_pattern(w, pattern)?;
        if *cols.get_or_insert(c) != c {
            return Err(PruneError::Shape(format!("weights with {} and {c} inputs cannot share one Hessian", cols.unwrap_or(c))));
        }
        members.push(r);
    }
    let Some(cols) = cols else {
        return Ok(Vec::new());
    };
    if h.size() != [cols, cols] {
        return Err(PruneError::Shape(format!("Hessian {:?} does not match a weight with {cols} inputs", h.size())));
    }
    cfg.validate()?;
    let _guard = tch::no_grad_guard();
    let dtype = ws[0].kind();
    let rows: i64 = members.iter().sum();
    // A fresh f32 copy (updated in place below; `to_kind` to the same kind would alias).
    let mut w = if ws.len() == 1 {
        ws[0].to_dtype(Kind::Float, false, true)
    } else {
        Tensor::cat(&ws.iter().map(|w| w.to_kind(Kind::Float)).collect::<Vec<_>>(), 0)
    };
    let Factorised { dead, hinv, percdamp, retries } = factorise(&mut w, h, cfg)?;

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
        let hinv1 = hinv.narrow(0, i1, count).narrow(1, i1, count);
        let hdiag1 = hinv1.diagonal(0, 0, 1).contiguous();
        let d: Vec<f32> = Vec::<f32>::try_from(&hdiag1)?;
        let mask1 = match unstructured {
            // Each weight's own threshold over its rows of the block, as `prune` of it alone.
            Some(p) if p > 0.0 => {
                let tmp = w1.pow_tensor_scalar(2) / hdiag1.reshape([1, -1]).pow_tensor_scalar(2);
                let mut start = 0;
                let mut parts = Vec::with_capacity(members.len());
                for &r in &members {
                    let part = tmp.narrow(0, start, r);
                    let flat = part.flatten(0, -1);
                    let thresh = crate::mask::kth_smallest(&flat, floor_share(flat.size()[0], p))?;
                    parts.push(part.le_tensor(&thresh));
                    start += r;
                }
                if parts.len() == 1 { parts.remove(0) } else { Tensor::cat(&parts, 0) }
            }
            // N:M masks are chosen lazily below; sparsity 0 prunes nothing.
            _ => Tensor::zeros_like(&w1).to_kind(Kind::Bool),
        };
        // The column loop, on the block transposed so that every column is a contiguous row.
        // Column i is read at its turn and never written again (the update goes to the columns
        // after it), so at the end of the block `w1` holds every column as it was visited: the
        // pruned block `q1`, the errors and the losses follow from it and the mask in
        // whole-block operations, value for value what the reference computes one column at a
        // time.
        let w1t = w1.tr().contiguous();
        let mask1t = mask1.tr().contiguous();
        for i in 0..count {
            if let Some((prune_n, m)) = nm
                && i % m as i64 == 0
            {
                let m = m as i64;
                let tmp = w1t.narrow(0, i, m).tr().pow_tensor_scalar(2) / hdiag1.narrow(0, i, m).reshape([1, -1]).pow_tensor_scalar(2);
                let idx = crate::mask::lowest(&tmp, prune_n as i64);
                let _ = mask1t.narrow(0, i, m).scatter_value_(0, &idx.tr(), 1);
            }
            if i + 1 == count {
                break;
            }
            // e = (w − q) / d, where w − q is w at the pruned rows and 0 elsewhere.
            let e = w1t.get(i).where_scalarother(&mask1t.get(i), 0.0) / f64::from(d[i as usize]);
            let mut tail = w1t.narrow(0, i + 1, count - i - 1);
            tail -= hinv1.narrow(0, i, 1).narrow(1, i + 1, count - i - 1).tr().matmul(&e.unsqueeze(0));
        }
        let w1 = w1t.tr();
        let mask1 = mask1t.tr();
        let removed = w1.where_scalarother(&mask1, 0.0);
        let hd = hdiag1.reshape([1, -1]);
        // Row-major, as the reference's `Err1`: a transposed operand sends the matmul below down
        // another BLAS kernel, whose sums differ in the last bit on some CPUs (AMD EPYC here).
        let err1 = (&removed / &hd).contiguous();
        losses += (removed.pow_tensor_scalar(2) / hd.pow_tensor_scalar(2)).sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / 2.0;
        w.narrow(1, i1, count).copy_(&w1.masked_fill(&mask1, 0.0));
        mask_all.narrow(1, i1, count).copy_(&mask1);
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
    let mut out = Vec::with_capacity(members.len());
    let mut start = 0;
    for &r in &members {
        let loss = losses.narrow(0, start, r).sum(Kind::Float).double_value(&[]);
        out.push(SparseGptOutcome {
            weight: w.narrow(0, start, r).to_kind(dtype).contiguous(),
            mask: mask_all.narrow(0, start, r).contiguous(),
            loss,
            percdamp,
            retries: retries.clone(),
        });
        start += r;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's `fasterprune`, one column at a time as written there (Q1, Err1 and
    /// Losses1 filled per column; the update including the column itself): what the reshaped
    /// loop above must equal bit for bit (the set-up before the loop, `factorise`, is shared).
    fn transcription(w: &Tensor, h: &Tensor, pattern: Pattern, cfg: SparseGptConfig) -> Result<SparseGptOutcome, PruneError> {
        let (rows, cols) = check_pattern(w, pattern)?;
        let _guard = tch::no_grad_guard();
        let dtype = w.kind();
        let mut w = w.to_dtype(Kind::Float, false, true);
        let Factorised { dead, hinv, percdamp, retries } = factorise(&mut w, h, cfg)?;

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
                    // `torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]`
                    let thresh = flat.sort(0, false).0.get(floor_share(flat.size()[0], p));
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

    fn case(rows: i64, cols: i64, seed: i64) -> (Tensor, Tensor) {
        tch::manual_seed(seed);
        let w = Tensor::randn([rows, cols], (Kind::Float, tch::Device::Cpu));
        let x = Tensor::randn([4 * cols, cols], (Kind::Float, tch::Device::Cpu));
        let _ = x.narrow(1, 3, 1).zero_(); // a dead input
        let h = x.tr().matmul(&x) * (2.0 / (4 * cols) as f64);
        (w, h)
    }

    #[test]
    fn out_of_range_options_are_named_as_options_not_patterns() {
        let w = Tensor::ones([2, 4], (Kind::Float, tch::Device::Cpu));
        let h = Tensor::eye(4, (Kind::Float, tch::Device::Cpu));
        let half = Pattern::Unstructured { sparsity: 0.5 };
        for (cfg, msg) in [
            (SparseGptConfig { blocksize: 0, ..Default::default() }, "bad SparseGPT option: blocksize must be at least 1, got 0"),
            (
                SparseGptConfig { percdamp: f64::NAN, ..Default::default() },
                "bad SparseGPT option: percdamp must be positive and finite, got NaN",
            ),
            (SparseGptConfig { percdamp: 0.0, ..Default::default() }, "bad SparseGPT option: percdamp must be positive and finite, got 0"),
            (
                SparseGptConfig { max_percdamp: f64::INFINITY, ..Default::default() },
                "bad SparseGPT option: max_percdamp must be positive and finite, got inf",
            ),
        ] {
            let err = prune_shared(&[&w], &h, half, cfg).unwrap_err();
            assert!(matches!(err, PruneError::BadOption { .. }), "{err:?}");
            assert_eq!(err.to_string(), msg);
        }
    }

    #[test]
    fn the_block_loop_and_shared_hessians_equal_the_reference_loop_bit_for_bit() {
        let cfg = SparseGptConfig { blocksize: 16, ..SparseGptConfig::default() };
        for pattern in [Pattern::Unstructured { sparsity: 0.5 }, Pattern::Unstructured { sparsity: 0.8 }, Pattern::NM { n: 2, m: 4 }] {
            let (w, h) = case(24, 40, 1);
            let (v, _) = case(8, 40, 2);
            let expected = [transcription(&w, &h, pattern, cfg).unwrap(), transcription(&v, &h, pattern, cfg).unwrap()];
            let alone = prune(&w, &h, pattern, cfg).unwrap();
            assert!(alone.weight.equal(&expected[0].weight) && alone.mask.equal(&expected[0].mask), "{pattern}");
            let shared = prune_shared(&[&w, &v], &h, pattern, cfg).unwrap();
            for (got, want) in shared.iter().zip(&expected) {
                assert!(got.weight.equal(&want.weight), "{pattern}: weights differ");
                assert!(got.mask.equal(&want.mask), "{pattern}: masks differ");
                assert!((got.loss - want.loss).abs() <= 1e-6 * want.loss.abs(), "{pattern}: loss {} vs {}", got.loss, want.loss);
            }
        }
    }

    #[test]
    fn weights_with_different_inputs_cannot_share_a_hessian() {
        let (w, h) = case(4, 8, 0);
        let v = Tensor::ones([4, 6], (Kind::Float, tch::Device::Cpu));
        let err = prune_shared(&[&w, &v], &h, Pattern::Unstructured { sparsity: 0.5 }, SparseGptConfig::default()).unwrap_err();
        assert_eq!(err.to_string(), "shape mismatch: weights with 8 and 6 inputs cannot share one Hessian");
    }
}
