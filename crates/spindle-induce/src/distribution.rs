//! The distribution-level stage: per-site scales that make the target pruner's selection remove
//! as little true importance as possible, found from a closed-form start by gradient descent and
//! kept only where they measurably help.
//!
//! For a site with consumers `C_k` (input columns scaled by `D`) and, when the producer is a
//! linear, its rows `W_p` (divided by `D`), the objective is the mean over those matrices of
//! `Σ_{removed} T / Σ T`, where `T` is the true importance (`|C|·‖X‖` for a consumer;
//! `|W_p|·‖X_p‖·‖C_{:,r}·g_r‖` for a producer row `r`, with its downstream weight and the gain
//! `g_r = ‖X_{c,r}‖ / ‖H_r‖` from the producer's output `H` to the consumers' input — SwiGLU's gate
//! or attention's mixing sit between them) and "removed"
//! is what the target pruner would choose on the scaled weights. The hard objective is piecewise
//! constant in `D`, so gradient descent (Adam on `θ = log D`) follows a soft mask
//! ([`crate::measure::soft_mask`]); every few steps the hard objective is measured, and the best
//! of identity, the closed-form start and the iterates is returned. Identity wins ties, so a
//! scorer the scaling cannot affect (Wanda) leaves the model bit for bit unchanged.

use spindle_prune::Pattern;
use tch::{Kind, Tensor};

use crate::InduceError;
use crate::measure::{Measures, Scorer, measures, soft_mask};
use crate::scale::{ChannelMap, ChannelStats};

/// Where the search for `D` starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    /// `D = 1`.
    Identity,
    /// SmoothQuant's `max|X_j|^α / max_i|C_ij|^(1−α)` over the site's consumers.
    SmoothQuant { alpha: f64 },
    /// `‖X_j‖` (the square root of Wanda's `scaler_row`, the largest over a channel's columns):
    /// a consumer's magnitude score becomes exactly Wanda's score, ranked per matrix, which is
    /// the selection that removes the least true importance a per-matrix threshold can.
    ActNorm,
}

/// The distribution-level stage's options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistributionConfig {
    /// The pruner whose selection the scales are chosen for.
    pub scorer: Scorer,
    /// The pattern it will prune with.
    pub pattern: Pattern,
    pub start: Start,
    /// Adam steps on `log D` (0: the start is only compared with identity).
    pub steps: usize,
    pub lr: f64,
    /// The soft mask's temperature, relative to the selection threshold.
    pub temperature: f64,
    /// `|log D|` is clamped to this.
    pub max_log_scale: f64,
    /// Measure the hard objective every this many steps.
    pub eval_every: usize,
}

impl Default for DistributionConfig {
    fn default() -> Self {
        DistributionConfig {
            scorer: Scorer::Magnitude,
            pattern: Pattern::Unstructured { sparsity: 0.5 },
            start: Start::ActNorm,
            steps: 0,
            lr: 0.05,
            temperature: 0.05,
            max_log_scale: 8.0,
            eval_every: 5,
        }
    }
}

impl DistributionConfig {
    pub fn validate(self) -> Result<DistributionConfig, InduceError> {
        self.pattern.validate()?;
        let bad = |field: &str, value: String, rule: &str| {
            Err(InduceError::Config(format!("the distribution stage's {field} must be {rule}, got {value}")))
        };
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("learning rate (--si-lr)", self.lr.to_string(), "positive and finite");
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad("temperature (--si-temperature)", self.temperature.to_string(), "positive and finite");
        }
        if !(self.max_log_scale > 0.0 && self.max_log_scale.is_finite()) {
            return bad("largest |log scale| (--si-max-log-scale)", self.max_log_scale.to_string(), "positive and finite");
        }
        if self.eval_every == 0 {
            return bad("evaluation interval", "0".into(), "at least 1");
        }
        if let Start::SmoothQuant { alpha } = self.start
            && !(0.0..=1.0).contains(&alpha)
        {
            return bad("SmoothQuant alpha (--si-alpha)", alpha.to_string(), "in [0, 1]");
        }
        Ok(self)
    }
}

/// One site, as tensors.
#[derive(Debug)]
pub struct Site<'a> {
    /// The consumers' weights `[out_k, columns]` (one input group).
    pub consumers: Vec<&'a Tensor>,
    /// Statistics of the consumers' shared input.
    pub stats: &'a ChannelStats,
    pub map: ChannelMap,
    /// When the producer is a linear: its weight, its input's statistics, and the mean squared
    /// norm of each of its output channels.
    pub producer: Option<Producer<'a>>,
}

/// A producer linear of a site.
#[derive(Debug, Clone, Copy)]
pub struct Producer<'a> {
    /// `[channels, in_p]`.
    pub weight: &'a Tensor,
    /// Its input's `scaler_row` `[in_p]`.
    pub sq_in: &'a Tensor,
    /// `‖H_r‖²` of its output channels `[channels]`, on the same scale as `scaler_row` (see
    /// [`ChannelStats::output_sq_norms`]).
    pub out_sq: &'a Tensor,
}

/// The outcome for one site.
#[derive(Debug)]
pub struct SiteFit {
    /// `D` `[channels]`, f32, positive.
    pub scales: Tensor,
    /// Measures of each matrix (consumers in order, then the producer) before and after.
    pub before: Vec<Measures>,
    pub after: Vec<Measures>,
    /// The hard objective at identity and at the chosen `D`.
    pub objective_before: f64,
    pub objective_after: f64,
    /// `identity`, `start` or `step N`.
    pub chosen: String,
}

struct Prepared {
    weights: Vec<Tensor>,
    /// f32 `[columns]` or `[in_p]`.
    sq: Vec<Tensor>,
    importance: Vec<Tensor>,
    /// Which matrices are consumers (scaled by columns) — the rest is the producer (rows).
    consumer: Vec<bool>,
}

fn prepare(site: &Site<'_>) -> Result<Prepared, InduceError> {
    let sq = site.stats.sq_norms()?.to_kind(Kind::Float);
    let columns = sq.size()[0];
    let mut p = Prepared { weights: Vec::new(), sq: Vec::new(), importance: Vec::new(), consumer: Vec::new() };
    // Σ_k Σ_i C_k[i, j]² · ‖X_j‖²: how strongly each consumer column's input reaches the outputs.
    let mut col_sq = Tensor::zeros([columns], (Kind::Float, sq.device()));
    for c in &site.consumers {
        if c.size().len() != 2 || c.size()[1] != columns {
            return Err(InduceError::Shape(format!("consumer {:?} does not read {columns} columns", c.size())));
        }
        let w = c.detach().to_kind(Kind::Float);
        col_sq += w.pow_tensor_scalar(2).sum_dim_intlist([0i64].as_slice(), false, None) * &sq;
        p.importance.push(w.abs() * sq.sqrt().view([1, -1]));
        p.weights.push(w);
        p.sq.push(sq.shallow_clone());
        p.consumer.push(true);
    }
    if let Some(Producer { weight: w, sq_in: sq_p, out_sq }) = site.producer {
        let channels = site.map.channels(columns);
        if w.size().len() != 2 || w.size()[0] != channels || sq_p.size() != [w.size()[1]] || out_sq.size() != [channels] {
            return Err(InduceError::Shape(format!(
                "producer {:?} with scaler_row {:?} and output norms {:?} for {channels} channels",
                w.size(),
                sq_p.size(),
                out_sq.size()
            )));
        }
        let w = w.detach().to_kind(Kind::Float);
        let sq_p = sq_p.to_kind(Kind::Float);
        // ‖C_{:,r}‖·‖X_{c,r}‖ / ‖H_r‖, summed in squares over the columns a channel feeds.
        let down = (site.map.reduce_sum(&col_sq) / out_sq.to_kind(Kind::Float).clamp_min(1e-30)).sqrt();
        p.importance.push(w.abs() * sq_p.sqrt().view([1, -1]) * down.view([-1, 1]));
        p.weights.push(w);
        p.sq.push(sq_p);
        p.consumer.push(false);
    }
    Ok(p)
}

/// The scaled weight and `scaler_row` of matrix `k` under `D` (`e` = `D` expanded to columns).
fn scaled(p: &Prepared, k: usize, d: &Tensor, e: &Tensor) -> (Tensor, Tensor) {
    if p.consumer[k] {
        (&p.weights[k] * e.view([1, -1]), &p.sq[k] / e.pow_tensor_scalar(2))
    } else {
        (&p.weights[k] / d.view([-1, 1]), p.sq[k].shallow_clone())
    }
}

fn hard(p: &Prepared, cfg: &DistributionConfig, map: ChannelMap, d: &Tensor) -> Result<(f64, Vec<Measures>), InduceError> {
    let _g = tch::no_grad_guard();
    let e = map.expand(d);
    let mut all = Vec::new();
    for k in 0..p.weights.len() {
        let (w, sq) = scaled(p, k, d, &e);
        all.push(measures(cfg.scorer, &cfg.scorer.score(&w, &sq)?, &p.importance[k], cfg.pattern)?);
    }
    let j = all.iter().map(|m| m.true_removed).sum::<f64>() / all.len().max(1) as f64;
    Ok((j, all))
}

/// The closed-form start for a site.
pub fn smoothquant(site: &Site<'_>, alpha: f64) -> Result<Tensor, InduceError> {
    let x = site.map.reduce_max(&site.stats.max_abs()?.to_kind(Kind::Float));
    let mut w_max: Option<Tensor> = None;
    for c in &site.consumers {
        let m = c.detach().to_kind(Kind::Float).abs().amax([0i64].as_slice(), false);
        w_max = Some(match w_max {
            Some(prev) => prev.maximum(&m),
            None => m,
        });
    }
    let w = site.map.reduce_max(&w_max.ok_or_else(|| InduceError::Shape("a site without consumers".into()))?);
    let d = x.clamp_min(1e-5).pow_tensor_scalar(alpha) / w.clamp_min(1e-5).pow_tensor_scalar(1.0 - alpha);
    Ok(d.clamp(1e-5, 1e5))
}

/// Finds the scales of one site.
pub fn fit(site: &Site<'_>, cfg: &DistributionConfig) -> Result<SiteFit, InduceError> {
    let p = prepare(site)?;
    let columns = site.stats.sq_norms()?.size()[0];
    let channels = site.map.channels(columns);
    let device = p.weights[0].device();
    let identity = Tensor::ones([channels], (Kind::Float, device));
    let (j0, before) = hard(&p, cfg, site.map, &identity)?;
    let mut best = (j0, identity.shallow_clone(), before.clone(), "identity".to_owned());
    // Wanda's selection is invariant under any absorbable scaling: nothing to search.
    if cfg.scorer == Scorer::Wanda {
        return Ok(SiteFit { scales: identity, after: before.clone(), before, objective_before: j0, objective_after: j0, chosen: best.3 });
    }
    let start = match cfg.start {
        Start::Identity => identity.shallow_clone(),
        Start::SmoothQuant { alpha } => smoothquant(site, alpha)?,
        Start::ActNorm => {
            let n = site.map.reduce_max(&site.stats.sq_norms()?.to_kind(Kind::Float).sqrt());
            // Scaled to a geometric mean of 1, so the producer's weights keep their size.
            let n = n.clamp_min(1e-5);
            let g = n.log().mean(Kind::Float).exp();
            (n / g).clamp(1e-5, 1e5)
        }
    };
    let bound = cfg.max_log_scale;
    let theta0 = start.log().clamp(-bound, bound);
    let consider = |best: &mut (f64, Tensor, Vec<Measures>, String), theta: &Tensor, label: String| -> Result<(), InduceError> {
        let d = theta.detach().exp();
        let (j, m) = hard(&p, cfg, site.map, &d)?;
        if !j.is_finite() {
            return Err(InduceError::NotFinite { what: format!("the distribution objective at {label}") });
        }
        if j < best.0 {
            *best = (j, d, m, label);
        }
        Ok(())
    };
    if cfg.start != Start::Identity {
        consider(&mut best, &theta0, "start".to_owned())?;
    }
    // Adam on θ = log D.
    let theta = theta0.detach().set_requires_grad(true);
    let (mut m1, mut m2) = (theta.zeros_like(), theta.zeros_like());
    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
    for step in 1..=cfg.steps {
        let d = theta.exp();
        let e = site.map.expand(&d);
        let mut loss = Tensor::zeros([], (Kind::Float, device));
        for k in 0..p.weights.len() {
            let (w, sq) = scaled(&p, k, &d, &e);
            let score = cfg.scorer.score(&w, &sq)?;
            let soft = soft_mask(cfg.scorer, &score, cfg.pattern, cfg.temperature);
            loss += (soft * &p.importance[k]).sum(Kind::Float) / p.importance[k].sum(Kind::Float).clamp_min(1e-30);
        }
        let loss = loss / p.weights.len() as f64;
        if !loss.double_value(&[]).is_finite() {
            return Err(InduceError::NotFinite { what: format!("the soft distribution objective at step {step}") });
        }
        let grad = tch::no_grad(|| {
            let mut t = theta.shallow_clone();
            t.zero_grad();
            loss.backward();
            theta.grad().detach().copy()
        });
        tch::no_grad(|| {
            m1 = &m1 * b1 + &grad * (1.0 - b1);
            m2 = &m2 * b2 + grad.pow_tensor_scalar(2) * (1.0 - b2);
            let mhat = &m1 / (1.0 - b1.powi(step as i32));
            let vhat = &m2 / (1.0 - b2.powi(step as i32));
            let update = mhat / (vhat.sqrt() + eps) * cfg.lr;
            let mut t = theta.detach();
            let _ = t.g_sub_(&update);
            let _ = t.clamp_(-bound, bound);
        });
        if step % cfg.eval_every == 0 || step == cfg.steps {
            consider(&mut best, &theta, format!("step {step}"))?;
        }
    }
    let (j, d, after, chosen) = best;
    Ok(SiteFit { scales: d, before, after, objective_before: j0, objective_after: j, chosen })
}
