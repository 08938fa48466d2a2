//! The feature-level stage, in the two readings the issue asks to compare.
//!
//! **Equivalent** ([`fit_equivalent`]): an absorbable scale pair (as in [`crate::scale`]) chosen to
//! minimise the SNL of the consumers' scaled input `X / D`. The dense function does not change;
//! the loss only picks `D`. Per-channel scaling can make any `X` look rank-one by blowing one
//! channel up, so `|log D|` is bounded ([`EquivalentSnlConfig::max_log_scale`]).
//!
//! **Model-changing** ([`train`]): learnable channel scalers `s = 1 + δ` on the inputs of a
//! block's linears (one per input group), the backbone frozen, trained on the calibration inputs
//! with AdamW (weight decay pulls `δ` toward 0, i.e. `s` toward identity) to minimise
//! `‖block_dense(X) − block_scaled(X)‖² / ‖block_dense(X)‖² + λ·SNL(F)`, then merged into the
//! weights (`W·diag(s)`). The block itself is the caller's: [`train`] is given a closure that runs
//! it with a set of scalers and returns the reconstruction loss and the features, so this crate
//! needs no architecture. For the pruning-aware variant the caller prunes the scaled weights
//! inside that closure through [`straight_through`].

use tch::{Kind, Tensor};

use crate::InduceError;
use crate::scale::ChannelMap;
use crate::snl::Snl;

/// The equivalent SNL stage's options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EquivalentSnlConfig {
    pub snl: Snl,
    pub steps: usize,
    pub lr: f64,
    /// `|log D|` is clamped to this.
    pub max_log_scale: f64,
    /// At most this many tokens (the first ones) enter the SNL.
    pub max_tokens: i64,
}

impl Default for EquivalentSnlConfig {
    fn default() -> Self {
        EquivalentSnlConfig { snl: Snl::NuclearOverSpectral, steps: 30, lr: 0.05, max_log_scale: 1.0, max_tokens: 512 }
    }
}

/// Which features the model-changing SNL acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSource {
    /// The scaled inputs of the block's linears, `X ⊙ s`, one matrix per input group.
    LinearInputs,
    /// The block's output.
    BlockOutput,
}

/// What the model-changing feature stage (before pruning) reconstructs, and so what its scalers
/// learn to compensate. Training after the pruner ran, on the pruned block, is not a reading of
/// this stage: it is reconstruction after pruning, a stage of its own (`spindle prune
/// --reconstruct`), which the same [`train`] drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruningAware {
    /// The dense block: the scalers keep its function, and only the SNL moves them.
    Off,
    /// The block pruned by the target pruner's mask, chosen afresh on the scaled weights at
    /// every step (straight-through), before the pruner runs. SparseGPT's mask is approximated
    /// by Wanda's, and its weight update is not modelled.
    Mask,
}

impl PruningAware {
    pub fn name(self) -> &'static str {
        match self {
            PruningAware::Off => "off",
            PruningAware::Mask => "mask",
        }
    }
}

/// The scaler trainer's options: the model-changing feature stage before pruning and the
/// reconstruction after it train the same scalers the same way, on different blocks. The
/// defaults train for 2 epochs at AdamW's learning rate 5e-3 without the SNL; λ 1e-5 is the
/// weight an SNL gets when one is asked for without a weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureConfig {
    /// `None`: reconstruction only.
    pub snl: Option<Snl>,
    pub lambda: f64,
    pub lr: f64,
    pub epochs: usize,
    pub weight_decay: f64,
    pub source: FeatureSource,
    /// At most this many tokens of each feature matrix enter the SNL.
    pub max_tokens: i64,
    /// Orders the calibration samples of each epoch.
    pub seed: u64,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            snl: None,
            lambda: 1e-5,
            lr: 5e-3,
            epochs: 2,
            weight_decay: 0.0,
            source: FeatureSource::LinearInputs,
            max_tokens: 256,
            seed: 0,
        }
    }
}

impl FeatureConfig {
    pub fn validate(self) -> Result<FeatureConfig, InduceError> {
        let bad = |field: &str, value: String, rule: &str| Err(InduceError::Config(format!("{field} must be {rule}, got {value}")));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("the learning rate", self.lr.to_string(), "positive and finite");
        }
        if !(self.lambda >= 0.0 && self.lambda.is_finite()) {
            return bad("the SNL weight λ", self.lambda.to_string(), "non-negative and finite");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("the weight decay", self.weight_decay.to_string(), "non-negative and finite");
        }
        if self.epochs == 0 {
            return bad("the epochs", self.epochs.to_string(), "at least 1");
        }
        if self.max_tokens <= 0 {
            return bad("the SNL's tokens", self.max_tokens.to_string(), "at least 1");
        }
        Ok(self)
    }
}

/// The first `max` rows of `f` flattened to `[tokens, channels]`.
fn head_tokens(f: &Tensor, max: i64) -> Tensor {
    let c = f.size().last().copied().unwrap_or(1);
    let m = f.reshape([-1, c]);
    let n = m.size()[0].min(max);
    m.narrow(0, 0, n)
}

/// The equivalent reading: `D` `[channels]` minimising `snl(X / expand(D))` for the consumers'
/// input `x` `[.., columns]`, with the loss before and after.
pub fn fit_equivalent(x: &Tensor, map: ChannelMap, cfg: &EquivalentSnlConfig) -> Result<(Tensor, f64, f64), InduceError> {
    let x = head_tokens(&x.detach().to_kind(Kind::Float), cfg.max_tokens);
    let columns = x.size()[1];
    let channels = map.channels(columns);
    let theta = Tensor::zeros([channels], (Kind::Float, x.device())).set_requires_grad(true);
    let eval = |theta: &Tensor| -> Result<Tensor, InduceError> { cfg.snl.loss(&(&x / map.expand(&theta.exp()).view([1, -1]))) };
    let before = tch::no_grad(|| eval(&theta))?.double_value(&[]);
    let mut best = (before, theta.detach().copy());
    let (mut m1, mut m2) = (theta.zeros_like(), theta.zeros_like());
    for step in 1..=cfg.steps {
        let loss = eval(&theta)?;
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(InduceError::NotFinite { what: format!("the equivalent SNL at step {step}") });
        }
        if value < best.0 {
            best = (value, theta.detach().copy());
        }
        theta.shallow_clone().zero_grad();
        loss.backward();
        adam_step(&theta, &theta.grad(), &mut m1, &mut m2, step, cfg.lr, 0.0, None);
        tch::no_grad(|| {
            let _ = theta.detach().clamp_(-cfg.max_log_scale, cfg.max_log_scale);
        });
    }
    let last = tch::no_grad(|| eval(&theta))?.double_value(&[]);
    if last < best.0 {
        best = (last, theta.detach().copy());
    }
    Ok((best.1.exp(), before, best.0))
}

/// One AdamW step on `p` in place (decoupled decay toward `decay_to`, default 0).
#[allow(clippy::too_many_arguments)]
fn adam_step(p: &Tensor, grad: &Tensor, m1: &mut Tensor, m2: &mut Tensor, step: usize, lr: f64, weight_decay: f64, decay_to: Option<f64>) {
    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
    tch::no_grad(|| {
        let g = grad.detach();
        *m1 = &*m1 * b1 + &g * (1.0 - b1);
        *m2 = &*m2 * b2 + g.pow_tensor_scalar(2) * (1.0 - b2);
        let mhat = &*m1 / (1.0 - b1.powi(step as i32));
        let vhat = &*m2 / (1.0 - b2.powi(step as i32));
        let mut t = p.detach();
        if weight_decay > 0.0 {
            let target = decay_to.unwrap_or(0.0);
            let _ = t.g_sub_(&((&t - target) * (lr * weight_decay)));
        }
        let _ = t.g_sub_(&(mhat / (vhat.sqrt() + eps) * lr));
    });
}

/// `w` with the removed entries (`mask` true) zeroed in the forward pass and an identity
/// gradient in the backward pass.
pub fn straight_through(w: &Tensor, mask: &Tensor) -> Tensor {
    w - (w * mask.to_kind(w.kind())).detach()
}

/// One epoch's mean losses.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EpochLoss {
    pub reconstruction: f64,
    pub snl: f64,
}

/// What [`train`] returns.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The trained scalers, detached, one per size asked for.
    pub scalers: Vec<Tensor>,
    pub epochs: Vec<EpochLoss>,
}

/// splitmix64: a tiny deterministic generator for the sample order.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The caller's block under a set of scalers, on one calibration sample: the reconstruction
/// loss (0-d) and the feature matrices for the SNL.
pub type ScaledForward<'a> = &'a mut dyn FnMut(&[Tensor], usize) -> Result<(Tensor, Vec<Tensor>), InduceError>;

/// Trains scalers `s_k = 1 + δ_k` of the given `sizes` over `samples` calibration samples for
/// `cfg.epochs` epochs. `forward(scalers, sample)` runs the caller's block with the scalers and
/// returns the reconstruction loss (0-d) and the feature matrices for the SNL.
pub fn train(
    sizes: &[i64],
    device: tch::Device,
    samples: usize,
    cfg: &FeatureConfig,
    forward: ScaledForward<'_>,
) -> Result<TrainOutcome, InduceError> {
    let cfg = cfg.validate()?;
    if samples == 0 {
        return Err(InduceError::NoStatistics);
    }
    let deltas: Vec<Tensor> = sizes.iter().map(|&n| Tensor::zeros([n], (Kind::Float, device)).set_requires_grad(true)).collect();
    let mut moments: Vec<(Tensor, Tensor)> = deltas.iter().map(|d| (d.zeros_like(), d.zeros_like())).collect();
    let mut rng = cfg.seed ^ 0x0053_5049_4E44_4C45;
    let mut epochs = Vec::new();
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..samples).collect();
        for i in (1..samples).rev() {
            let j = (splitmix(&mut rng) % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let (mut rec_sum, mut snl_sum) = (0.0, 0.0);
        for &sample in &order {
            step += 1;
            let scalers: Vec<Tensor> = deltas.iter().map(|d| d + 1.0).collect();
            let (recon, features) = forward(&scalers, sample)?;
            let mut loss = recon.shallow_clone();
            let mut snl_value = 0.0;
            if let Some(snl) = cfg.snl
                && !features.is_empty()
            {
                let mut total = Tensor::zeros([], (Kind::Float, device));
                for f in &features {
                    total += snl.loss(&head_tokens(f, cfg.max_tokens))?;
                }
                let total = total / features.len() as f64;
                snl_value = total.double_value(&[]);
                loss += total * cfg.lambda;
            }
            let (r, l) = (recon.double_value(&[]), loss.double_value(&[]));
            if !r.is_finite() || !l.is_finite() {
                return Err(InduceError::NotFinite { what: format!("the feature-stage loss (epoch {epoch}, sample {sample})") });
            }
            rec_sum += r;
            snl_sum += snl_value;
            for d in &deltas {
                d.shallow_clone().zero_grad();
            }
            loss.backward();
            for (d, (m1, m2)) in deltas.iter().zip(moments.iter_mut()) {
                let g = d.grad();
                if g.defined() {
                    adam_step(d, &g, m1, m2, step, cfg.lr, cfg.weight_decay, None);
                }
            }
        }
        epochs.push(EpochLoss { reconstruction: rec_sum / samples as f64, snl: snl_sum / samples as f64 });
    }
    let scalers = deltas.iter().map(|d| (d.detach() + 1.0).copy()).collect();
    Ok(TrainOutcome { scalers, epochs })
}
