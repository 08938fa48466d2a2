//! Absorbable per-channel scaling: the exact algebra of moving a positive diagonal `D` from a
//! producer's output channels into its consumers' input columns, and the per-channel activation
//! statistics the scales are chosen from.
//!
//! For a producer with output `h` (a norm: `h = norm(x)·γ + β`; a linear: `h = x Wᵀ + b`) and a
//! consumer `y = h Cᵀ`, `y = (h / D)(C·D)ᵀ`: dividing `γ, β` (or the rows of `W` and `b`) by `D`
//! and multiplying the columns of `C` by `D` leaves `y` unchanged. Through a ReLU this holds for
//! positive `D` only, and spindle's scales are always positive (they are `exp(θ)`). With
//! grouped-query attention a v_proj channel is read by several query heads' columns of o_proj:
//! [`ChannelMap::Repeat`] expands one scale per producer channel into the consumer's columns.

use tch::{Kind, Tensor};

use crate::InduceError;

/// How a site's producer channels map onto its consumers' input columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelMap {
    /// One column per channel.
    Identity,
    /// Grouped-query attention: `kv_heads · head_dim` channels, each repeated over the `group`
    /// query heads that read it (consumer columns in `[kv_heads, group, head_dim]` order).
    Repeat { kv_heads: i64, group: i64, head_dim: i64 },
}

impl ChannelMap {
    /// The number of producer channels for `columns` consumer columns.
    pub fn channels(self, columns: i64) -> i64 {
        match self {
            ChannelMap::Identity => columns,
            ChannelMap::Repeat { kv_heads, head_dim, .. } => kv_heads * head_dim,
        }
    }

    /// Producer-channel values `[channels]` → consumer-column values `[columns]`
    /// (differentiable).
    pub fn expand(self, d: &Tensor) -> Tensor {
        match self {
            ChannelMap::Identity => d.shallow_clone(),
            ChannelMap::Repeat { kv_heads, group, head_dim } => {
                d.view([kv_heads, 1, head_dim]).expand([kv_heads, group, head_dim], false).reshape([-1])
            }
        }
    }

    /// Consumer-column values → producer channels, by the maximum over each channel's columns.
    pub fn reduce_max(self, v: &Tensor) -> Tensor {
        match self {
            ChannelMap::Identity => v.shallow_clone(),
            ChannelMap::Repeat { kv_heads, group, head_dim } => {
                v.view([kv_heads, group, head_dim]).amax([1i64].as_slice(), false).reshape([-1])
            }
        }
    }

    /// Consumer-column values → producer channels, by the sum over each channel's columns.
    pub fn reduce_sum(self, v: &Tensor) -> Tensor {
        match self {
            ChannelMap::Identity => v.shallow_clone(),
            ChannelMap::Repeat { kv_heads, group, head_dim } => {
                v.view([kv_heads, group, head_dim]).sum_dim_intlist([1i64].as_slice(), false, None).reshape([-1])
            }
        }
    }
}

/// Checks that `d` is a 1-D tensor of `n` positive, finite scales.
pub fn check_scales(d: &Tensor, n: i64) -> Result<(), InduceError> {
    if d.size() != [n] {
        return Err(InduceError::Shape(format!("scales {:?} for {n} channels", d.size())));
    }
    let d = d.to_kind(Kind::Double);
    if !bool::try_from(d.isfinite().all()).unwrap_or(false) || !bool::try_from(d.gt(0.0).all()).unwrap_or(false) {
        let (lo, hi) = (d.min().double_value(&[]), d.max().double_value(&[]));
        return Err(InduceError::BadScales(format!("{n} scales range over [{lo}, {hi}]")));
    }
    Ok(())
}

/// A norm's weight and bias with `D` absorbed: `γ / D`, `β / D`.
pub fn absorb_into_norm(weight: &Tensor, bias: Option<&Tensor>, d: &Tensor) -> Result<(Tensor, Option<Tensor>), InduceError> {
    check_scales(d, weight.size().first().copied().unwrap_or(0))?;
    let d = d.to_kind(weight.kind()).to_device(weight.device());
    Ok((weight / &d, bias.map(|b| b / &d)))
}

/// A producer linear `[out, in]` with `D` `[out]` absorbed into its output rows: `W / D`, `b / D`.
pub fn absorb_into_rows(weight: &Tensor, bias: Option<&Tensor>, d: &Tensor) -> Result<(Tensor, Option<Tensor>), InduceError> {
    check_scales(d, weight.size().first().copied().unwrap_or(0))?;
    let d = d.to_kind(weight.kind()).to_device(weight.device());
    Ok((weight / d.view([-1, 1]), bias.map(|b| b / &d)))
}

/// A consumer linear `[out, in]` with `D` absorbed into its input columns through `map`:
/// `C · expand(D)`.
pub fn absorb_into_columns(weight: &Tensor, d: &Tensor, map: ChannelMap) -> Result<Tensor, InduceError> {
    let columns = weight.size().get(1).copied().unwrap_or(0);
    check_scales(d, map.channels(columns))?;
    let e = map.expand(&d.to_kind(weight.kind()).to_device(weight.device()));
    if e.size() != [columns] {
        return Err(InduceError::Shape(format!(
            "{:?} expands {} scales to {:?}, the weight has {columns} inputs",
            map,
            d.size()[0],
            e.size()
        )));
    }
    Ok(weight * e.view([1, -1]))
}

/// Per-column statistics of a consumer group's input `[.., columns]`, in f32: the maximum
/// absolute value (SmoothQuant's `max|X_j|`) and Wanda's `scaler_row` (the running mean over
/// sequences of each column's squared norm).
#[derive(Debug)]
pub struct ChannelStats {
    max_abs: Tensor,
    norms: spindle_prune::ColumnNorms,
    /// The running mean over sequences of `XᵀX` (its diagonal is `scaler_row`), when asked for.
    gram: Option<Tensor>,
}

impl ChannelStats {
    pub fn new(columns: i64, device: tch::Device) -> ChannelStats {
        ChannelStats {
            max_abs: Tensor::zeros([columns], (Kind::Float, device)),
            norms: spindle_prune::ColumnNorms::new(columns, device),
            gram: None,
        }
    }

    /// The same, also accumulating the Gram matrix `XᵀX` (for the output norms of a linear that
    /// reads these activations).
    pub fn with_gram(columns: i64, device: tch::Device) -> ChannelStats {
        ChannelStats { gram: Some(Tensor::zeros([columns, columns], (Kind::Float, device))), ..ChannelStats::new(columns, device) }
    }

    /// Adds one batch of activations `[.., columns]`.
    pub fn add_batch(&mut self, x: &Tensor) -> Result<(), InduceError> {
        let before = self.norms.nsamples() as f64;
        self.norms.add_batch(x)?;
        let after = self.norms.nsamples() as f64;
        let columns = self.max_abs.size()[0];
        let flat = x.reshape([-1, columns]).to_kind(Kind::Float);
        let m = flat.abs().amax([0i64].as_slice(), false);
        self.max_abs = self.max_abs.maximum(&m);
        if let Some(g) = &mut self.gram {
            *g *= before / after;
            *g += flat.tr().matmul(&flat) / after;
        }
        Ok(())
    }

    /// `‖x W_rᵀ‖²` for each row `r` of `w` `[rows, columns]` (a linear reading these activations),
    /// on the scale of `scaler_row`; needs [`ChannelStats::with_gram`].
    pub fn output_sq_norms(&self, w: &Tensor) -> Result<Tensor, InduceError> {
        let g = self.gram.as_ref().ok_or_else(|| InduceError::Config("output norms need statistics made with_gram".into()))?;
        self.norms.get()?;
        let w = w.detach().to_kind(Kind::Float);
        Ok((w.matmul(g) * &w).sum_dim_intlist([1i64].as_slice(), false, None))
    }

    /// `max|X_j|` `[columns]`.
    pub fn max_abs(&self) -> Result<&Tensor, InduceError> {
        self.norms.get()?;
        Ok(&self.max_abs)
    }

    /// `scaler_row` `[columns]`.
    pub fn sq_norms(&self) -> Result<&Tensor, InduceError> {
        Ok(self.norms.get()?)
    }

    /// The statistics of the same activations after the consumer columns' inputs were divided by
    /// `expanded` `[columns]` (an absorbed scaling): exact, since both are per column.
    pub fn rescaled(&self, expanded: &Tensor) -> Result<ChannelStats, InduceError> {
        let sq = self.sq_norms()?;
        let e = expanded.to_kind(Kind::Float).to_device(sq.device());
        Ok(ChannelStats {
            max_abs: &self.max_abs / &e,
            norms: spindle_prune::ColumnNorms::from_parts(sq / e.pow_tensor_scalar(2), self.norms.nsamples()),
            gram: self.gram.as_ref().map(|g| g / e.view([-1, 1]) / e.view([1, -1])),
        })
    }
}
