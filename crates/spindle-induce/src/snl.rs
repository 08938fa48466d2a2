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
//! Singular values come from `Tensor::svd` (libtorch's `linalg_svd` fails on CPU through tch),
//! in f64 with gradients through the full decomposition.

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
    pub const ALL: [Snl; 3] = [
        Snl::NuclearOverSpectral,
        Snl::SpectralOverFrobenius,
        Snl::SpectralEnergy,
    ];

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
            return Err(InduceError::Shape(format!(
                "SNL needs a [tokens, channels] feature matrix, got {size:?}"
            )));
        }
        let m = f.reshape([-1, channels]).to_kind(Kind::Double);
        let (_, s, _) = m.svd(true, true);
        let s1 = s.narrow(0, 0, 1).squeeze().clamp_min(1e-300);
        let loss = match self {
            Snl::NuclearOverSpectral => s.sum(Kind::Double) / s1,
            Snl::SpectralOverFrobenius => -(s1 / s.pow_tensor_scalar(2).sum(Kind::Double).sqrt()),
            Snl::SpectralEnergy => {
                -(s1.pow_tensor_scalar(2) / s.pow_tensor_scalar(2).sum(Kind::Double))
            }
        };
        Ok(loss.to_kind(Kind::Float))
    }
}
