//! The Spectral Norm Loss (SNL): a scale-free measure of how far a token × channel feature matrix
//! `F` is from rank one, to be minimised. Three variants, since the paper's exact form is not
//! available (σ are `F`'s singular values, σ₁ the largest):
//!
//! - [`Snl::NuclearOverSpectral`]: `Σσ / σ₁` (the nuclear norm over the spectral norm, a smooth
//!   surrogate of the rank, ≥ 1);
//! - [`Snl::SpectralOverFrobenius`]: `−σ₁ / ‖F‖_F` (in [−1, 0));
//! - [`Snl::SpectralEnergy`]: `−σ₁² / Σσ²`, the share of energy in the top direction.
//!
//! All are invariant to the scale of `F`, so they cannot be lowered by shrinking the features.
//!
//! The singular values come from the eigenvalues of the smaller Gram matrix (`F Fᵀ` or `Fᵀ F`,
//! in f64), and the gradient is the closed form of a spectral function's: with `F = U Σ Vᵀ`,
//! `∂L/∂F = Σᵢ (∂L/∂σᵢ) uᵢ vᵢᵀ = U diag((∂L/∂σᵢ)/σᵢ) Uᵀ F`. This is what a full SVD with its
//! backward computes, at a fifth of the cost on the feature stage's 256 × 576 and 256 × 1536
//! matrices (an SVD with its backward was half of a Wanda + SNL prune). Singular values below
//! `1e-7·σ₁` are where the Gram matrix's f64 eigenvalues are rounding noise: they count as zero
//! and get no gradient (the subgradient of a rank-deficient matrix's nuclear norm that has
//! none). `snl_matches_the_svd_and_its_gradient` checks both against the SVD with autograd.

use tch::{Kind, Tensor};

use crate::InduceError;

/// Which SNL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snl {
    NuclearOverSpectral,
    SpectralOverFrobenius,
    SpectralEnergy,
}

impl Snl {
    pub const ALL: [Snl; 3] = [Snl::NuclearOverSpectral, Snl::SpectralOverFrobenius, Snl::SpectralEnergy];

    pub fn name(self) -> &'static str {
        match self {
            Snl::NuclearOverSpectral => "nuclear",
            Snl::SpectralOverFrobenius => "spectral-frobenius",
            Snl::SpectralEnergy => "spectral-energy",
        }
    }

    /// The loss of `f` `[.., channels]` (leading dimensions are tokens), a 0-d f32 tensor that
    /// carries gradients to `f`.
    pub fn loss(self, f: &Tensor) -> Result<Tensor, InduceError> {
        let size = f.size();
        let channels = size.last().copied().unwrap_or(0);
        if size.len() < 2 || channels == 0 || f.numel() == 0 {
            return Err(InduceError::Shape(format!("SNL needs a [tokens, channels] feature matrix, got {size:?}")));
        }
        let m = f.reshape([-1, channels]).to_kind(Kind::Double);
        let (rows, cols) = (m.size()[0], channels);
        let md = m.detach();
        // The smaller Gram matrix: rows ≤ cols, G = F Fᵀ = U Σ² Uᵀ; else G = Fᵀ F = V Σ² Vᵀ.
        let wide = rows <= cols;
        let gram = if wide { md.matmul(&md.tr()) } else { md.tr().matmul(&md) };
        let (lambda, q) = gram.linalg_eigh("L");
        // Descending, as an SVD orders them.
        let lambda = lambda.flip([0]).clamp_min(0.0);
        let q = q.flip([1]);
        let sigma: Vec<f64> = Vec::<f64>::try_from(lambda.sqrt().contiguous()).map_err(InduceError::Torch)?;
        let s1 = sigma.first().copied().unwrap_or(0.0).max(1e-300);
        let (value, dsigma): (f64, Vec<f64>) = match self {
            Snl::NuclearOverSpectral => {
                let total: f64 = sigma.iter().sum();
                let mut w = vec![1.0 / s1; sigma.len()];
                w[0] -= total / (s1 * s1);
                (total / s1, w)
            }
            Snl::SpectralOverFrobenius => {
                let fro = sigma.iter().map(|s| s * s).sum::<f64>().sqrt().max(1e-300);
                let mut w: Vec<f64> = sigma.iter().map(|s| s1 * s / fro.powi(3)).collect();
                w[0] -= 1.0 / fro;
                (-s1 / fro, w)
            }
            Snl::SpectralEnergy => {
                let energy = sigma.iter().map(|s| s * s).sum::<f64>().max(1e-300);
                let mut w: Vec<f64> = sigma.iter().map(|s| 2.0 * s1 * s1 * s / (energy * energy)).collect();
                w[0] -= 2.0 * s1 / energy;
                (-(s1 * s1) / energy, w)
            }
        };
        if !value.is_finite() {
            return Err(InduceError::NotFinite { what: format!("the {} SNL", self.name()) });
        }
        // (∂L/∂σᵢ)/σᵢ, zero where σᵢ is below the Gram matrix's resolution.
        let coef: Vec<f64> = sigma.iter().zip(&dsigma).map(|(s, w)| if *s > 1e-7 * s1 { w / s } else { 0.0 }).collect();
        let coef = Tensor::from_slice(&coef).to_device(md.device());
        let qc = &q * coef.view([1, -1]);
        let grad = if wide { qc.matmul(&q.tr()).matmul(&md) } else { md.matmul(&qc).matmul(&q.tr()) };
        // A value of exactly `value` whose gradient with respect to `f` is `grad`.
        let linear = (&m * &grad).sum(Kind::Double);
        let offset = value - (&md * &grad).sum(Kind::Double).double_value(&[]);
        Ok((linear + offset).to_kind(Kind::Float))
    }
}
