//! The block-wise forward pass: [`Model::embed`] → [`Block::forward`] for each block (loaded on
//! demand by [`Model::block`]) → [`Model::head`]. Only the embeddings and the head are resident;
//! a block is read from the memory-mapped checkpoint when asked for and freed when dropped.
//!
//! Numerics follow Hugging Face transformers' eager implementations (RMSNorm in fp32, RoPE
//! frequencies in fp32, softmax through libtorch's scaled_dot_product_attention with an additive
//! mask), so fp32 logits agree with transformers to about 1e-5.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::config::{AttentionWindow, ConfigError, Family, ModelConfig, RopeScaling};
use crate::weights::{Weights, WeightsError};

mod cached;
pub use cached::{CachedCtx, KvCache};

/// Why a model cannot be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{dir}: no config.json")]
    NoConfig { dir: PathBuf },
    #[error("block {index} does not exist: the model has {layers} blocks")]
    NoSuchBlock { index: usize, layers: usize },
    #[error("input ids must be a [batch, seq] int64 tensor, got {kind:?} of shape {shape:?}")]
    BadInput { kind: Kind, shape: Vec<i64> },
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: i64, vocab: usize },
    #[error("sequence length {len} exceeds the model's {max} learned positions")]
    TooLong { len: usize, max: usize },
    #[error(transparent)]
    Save(#[from] crate::save::SaveError),
    #[error("bad input scales: {0}")]
    BadScales(String),
    #[error("key/value cache mismatch: {0}")]
    KvCache(String),
    /// config.json's block count and the blocks the weights hold disagree.
    #[error("{dir}: config.json says num_hidden_layers = {layers}, but {what}")]
    Blocks { dir: PathBuf, layers: usize, what: String },
}

/// Checks that the weights hold blocks `0..layers` under `{prefix}layers.` and nothing beyond:
/// a tensor of a block past the count would be dropped from every output, and a count past the
/// weights would fail only when that block is reached (or allocate per block first).
/// The prefix of the decoder's tensor names (`model.`, or OPT's `model.decoder.` / `decoder.`).
pub(crate) fn tensor_prefix(family: &Family, weights: &Weights) -> String {
    match family {
        Family::LlamaLike { .. } => "model.",
        Family::Opt { .. } if weights.contains("model.decoder.embed_tokens.weight") => "model.decoder.",
        Family::Opt { .. } => "decoder.",
    }
    .to_owned()
}

pub(crate) fn check_blocks(dir: &Path, weights: &Weights, prefix: &str, layers: usize) -> Result<(), ModelError> {
    let stem = format!("{prefix}layers.");
    let mut seen = std::collections::BTreeSet::new();
    for name in weights.names() {
        if let Some(rest) = name.strip_prefix(&stem) {
            let index = rest.split('.').next().and_then(|i| i.parse::<usize>().ok());
            match index {
                Some(i) if i < layers => {
                    seen.insert(i);
                }
                _ => return Err(ModelError::Blocks { dir: dir.to_path_buf(), layers, what: format!("the weights hold {name}") }),
            }
        }
    }
    if seen.len() != layers {
        let missing = (0..layers).find(|i| !seen.contains(i)).unwrap_or(0);
        return Err(ModelError::Blocks {
            dir: dir.to_path_buf(),
            layers,
            what: format!("the weights hold {} blocks (block {missing} is missing)", seen.len()),
        });
    }
    Ok(())
}

/// A linear layer `y = x Wᵀ + b`, with `weight` `[out, in]` as Hugging Face stores it.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// RMSNorm (Llama family) or LayerNorm (OPT).
#[derive(Debug)]
pub struct Norm {
    pub weight: Tensor,
    /// LayerNorm's bias; `None` for RMSNorm.
    pub bias: Option<Tensor>,
    eps: f64,
}

impl Norm {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        match &self.bias {
            // transformers' LlamaRMSNorm: normalise in fp32, cast back, then scale.
            None => {
                let dtype = x.kind();
                let h = x.to_kind(Kind::Float);
                let variance = h.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
                let h = &h * (variance + self.eps).rsqrt();
                &self.weight * h.to_kind(dtype)
            }
            Some(bias) => {
                let last = x.size().last().copied().unwrap_or(0);
                x.layer_norm([last], Some(&self.weight), Some(bias), self.eps, false)
            }
        }
    }
}

/// Per-batch state shared by every block: the additive attention mask and, for RoPE models,
/// the rotary tables.
#[derive(Debug)]
pub struct ForwardCtx {
    /// `[batch, 1, seq, seq]`, 0 where attention is allowed and the dtype's minimum elsewhere;
    /// `None` when attention is plainly causal (no padding, no sliding window), which lets
    /// libtorch use its fused causal kernel instead of materialising the mask.
    pub mask: Option<Tensor>,
    /// `[batch, 1, seq, head_dim]` each, for RoPE models.
    rope: Option<(Tensor, Tensor)>,
}

/// One decoder block with its linear layers and norms under their Hugging Face names.
#[derive(Debug)]
pub struct Block {
    index: usize,
    pre_norm: bool,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
    /// (path inside the block, e.g. `self_attn.q_proj`, layer), in Hugging Face order.
    linears: Vec<(&'static str, Linear)>,
    /// (path inside the block, e.g. `input_layernorm`, norm).
    norms: Vec<(&'static str, Norm)>,
}

const LLAMA_LINEARS: [&str; 7] =
    ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];
/// A callback shown each linear layer's input during [`Block::forward_observed`].
pub type Observer<'a> = &'a mut dyn FnMut(&'static [&'static str], &Tensor);

const QKV: &[&str] = &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"];
const LLAMA_GROUPS: [&[&str]; 4] = [QKV, &["self_attn.o_proj"], &["mlp.gate_proj", "mlp.up_proj"], &["mlp.down_proj"]];
const OPT_GROUPS: [&[&str]; 4] = [QKV, &["self_attn.out_proj"], &["fc1"], &["fc2"]];
const LLAMA_NORMS: [&str; 2] = ["input_layernorm", "post_attention_layernorm"];
const OPT_LINEARS: [&str; 6] = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"];
const OPT_NORMS: [&str; 2] = ["self_attn_layer_norm", "final_layer_norm"];

/// What produces the channels of an absorbable scaling site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleProducer {
    /// A norm (path inside the block) whose weight (and bias) can be divided by the scales.
    Norm(&'static str),
    /// A linear (path inside the block) whose output rows (and bias) can be divided by the scales.
    Linear(&'static str),
}

/// A place inside a block where a positive per-channel scaling `D` can be absorbed exactly: the
/// producer's output channels are divided by `D` and the consumers' input columns multiplied by
/// it, and the block computes the same function. Which places exist is architecture knowledge,
/// so it lives here; what `D` should be is `spindle-induce`'s business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingSite {
    /// A short label for reports: `attn_in`, `attn_out`, `ffn_in`, `ffn_out`.
    pub label: &'static str,
    pub producer: ScaleProducer,
    /// The linears that read the producer's channels (one input group).
    pub consumers: &'static [&'static str],
    /// Grouped-query attention: the producer (v_proj) has `kv_heads · head_dim` channels, each
    /// read by `group` query heads, so each scale is repeated over its query group in the
    /// consumer's columns (`[kv_heads, group, head_dim]` order).
    pub repeat: Option<KvRepeat>,
}

/// The shape of grouped-query attention's channel repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvRepeat {
    pub kv_heads: i64,
    pub group: i64,
    pub head_dim: i64,
}

fn short(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

impl Block {
    /// This block's index in the model.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The linear layers, by their path inside the block (`self_attn.q_proj`, `mlp.down_proj`,
    /// `fc1`, ...), in Hugging Face order.
    pub fn linears(&self) -> impl Iterator<Item = (&'static str, &Linear)> {
        self.linears.iter().map(|(n, l)| (*n, l))
    }

    /// A linear layer by its Hugging Face name (`q_proj`, `down_proj`, `fc1`, ...).
    pub fn linear(&self, name: &str) -> Option<&Linear> {
        self.linears.iter().find(|(p, _)| short(p) == name).map(|(_, l)| l)
    }

    /// The same, mutable, for pruning and scaling.
    pub fn linear_mut(&mut self, name: &str) -> Option<&mut Linear> {
        self.linears.iter_mut().find(|(p, _)| short(p) == name).map(|(_, l)| l)
    }

    /// A linear layer by its path inside the block (`self_attn.q_proj`, `fc1`, ...).
    pub fn linear_at(&self, path: &str) -> Option<&Linear> {
        self.linears.iter().find(|(p, _)| *p == path).map(|(_, l)| l)
    }

    /// The same, mutable.
    pub fn linear_at_mut(&mut self, path: &str) -> Option<&mut Linear> {
        self.linears.iter_mut().find(|(p, _)| *p == path).map(|(_, l)| l)
    }

    /// The places where a per-channel scaling can be absorbed without changing the block's
    /// function, in forward order: the pre-attention norm into q/k/v and v into o, the pre-MLP
    /// norm into gate/up (fc1) and up (fc1, through its ReLU) into down (fc2). q/k are left out
    /// (RoPE mixes channel pairs), and so are the norm sites of post-norm OPT, whose q/k/v and
    /// fc1 read the residual stream itself.
    pub fn scaling_sites(&self) -> Vec<ScalingSite> {
        let repeat = (self.num_heads != self.num_kv_heads).then_some(KvRepeat {
            kv_heads: self.num_kv_heads,
            group: self.num_heads / self.num_kv_heads,
            head_dim: self.head_dim,
        });
        if self.linear("o_proj").is_some() {
            vec![
                ScalingSite { label: "attn_in", producer: ScaleProducer::Norm("input_layernorm"), consumers: QKV, repeat: None },
                ScalingSite { label: "attn_out", producer: ScaleProducer::Linear("self_attn.v_proj"), consumers: LLAMA_GROUPS[1], repeat },
                ScalingSite {
                    label: "ffn_in",
                    producer: ScaleProducer::Norm("post_attention_layernorm"),
                    consumers: LLAMA_GROUPS[2],
                    repeat: None,
                },
                ScalingSite { label: "ffn_out", producer: ScaleProducer::Linear("mlp.up_proj"), consumers: LLAMA_GROUPS[3], repeat: None },
            ]
        } else {
            let mut sites = Vec::new();
            if self.pre_norm {
                sites.push(ScalingSite {
                    label: "attn_in",
                    producer: ScaleProducer::Norm("self_attn_layer_norm"),
                    consumers: QKV,
                    repeat: None,
                });
            }
            sites.push(ScalingSite {
                label: "attn_out",
                producer: ScaleProducer::Linear("self_attn.v_proj"),
                consumers: OPT_GROUPS[1],
                repeat,
            });
            if self.pre_norm {
                sites.push(ScalingSite {
                    label: "ffn_in",
                    producer: ScaleProducer::Norm("final_layer_norm"),
                    consumers: OPT_GROUPS[2],
                    repeat: None,
                });
            }
            sites.push(ScalingSite { label: "ffn_out", producer: ScaleProducer::Linear("fc1"), consumers: OPT_GROUPS[3], repeat: None });
            sites
        }
    }

    /// The norms, by their path inside the block.
    pub fn norms(&self) -> impl Iterator<Item = (&'static str, &Norm)> {
        self.norms.iter().map(|(n, l)| (*n, l))
    }

    /// A norm by name (`input_layernorm`, `self_attn_layer_norm`, ...), mutable for scaling.
    pub fn norm_mut(&mut self, name: &str) -> Option<&mut Norm> {
        self.norms.iter_mut().find(|(p, _)| *p == name).map(|(_, n)| n)
    }

    // Every name used below is one this module put in the block itself, so a miss is a bug.
    fn lin(&self, name: &str) -> &Linear {
        match self.linear(name) {
            Some(l) => l,
            None => unreachable!("block built without {name}"),
        }
    }

    fn nrm(&self, name: &str) -> &Norm {
        match self.norms.iter().find(|(p, _)| *p == name) {
            Some((_, n)) => n,
            None => unreachable!("block built without {name}"),
        }
    }

    /// Every tensor of the block under its full checkpoint name (`prefix` is the block's, e.g.
    /// `model.layers.3.`), in Hugging Face order.
    pub fn named_tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (path, l) in &self.linears {
            out.push((format!("{prefix}{path}.weight"), l.weight.shallow_clone()));
            if let Some(b) = &l.bias {
                out.push((format!("{prefix}{path}.bias"), b.shallow_clone()));
            }
        }
        for (path, n) in &self.norms {
            out.push((format!("{prefix}{path}.weight"), n.weight.shallow_clone()));
            if let Some(b) = &n.bias {
                out.push((format!("{prefix}{path}.bias"), b.shallow_clone()));
            }
        }
        out
    }

    /// Runs the block on `hidden` `[batch, seq, hidden]`.
    pub fn forward(&self, hidden: &Tensor, ctx: &ForwardCtx) -> Tensor {
        self.forward_observed(hidden, ctx, &mut |_, _| {})
    }

    /// Runs the block and shows `observe` the input of every linear layer as it is computed:
    /// `observe(paths, x)` with the paths of the linears that read `x` (`q_proj`, `k_proj` and
    /// `v_proj` share one input, as do `gate_proj` and `up_proj`). The pruning pipeline
    /// accumulates its statistics here.
    pub fn forward_observed(&self, hidden: &Tensor, ctx: &ForwardCtx, observe: Observer<'_>) -> Tensor {
        self.forward_with(hidden, ctx, InputMap::Plain, observe)
    }

    /// Runs the block with the input of each group of [`Block::input_groups`] multiplied by that
    /// group's `scales[k]` (`[in]`, broadcast over tokens) before its linears read it: the
    /// function of the block whose linears' input columns are scaled, `W·diag(s)`, computed
    /// without forming the scaled weights, so a gradient reaches `s` without one through a full
    /// weight matrix. `observe` is shown the scaled inputs. Errors when `scales` does not hold
    /// one vector of the right width per group.
    pub fn forward_input_scaled(
        &self,
        hidden: &Tensor,
        ctx: &ForwardCtx,
        scales: &[Tensor],
        observe: Observer<'_>,
    ) -> Result<Tensor, ModelError> {
        let groups = self.input_groups();
        if scales.len() != groups.len() {
            return Err(ModelError::BadScales(format!("{} input scales for {} input groups", scales.len(), groups.len())));
        }
        for (g, s) in groups.iter().zip(scales) {
            let width = self.lin(short(g[0])).weight.size()[1];
            if s.size() != [width] {
                return Err(ModelError::BadScales(format!("the input scales of {} have shape {:?}, not [{width}]", g[0], s.size())));
            }
        }
        Ok(self.forward_with(hidden, ctx, InputMap::Scaled(scales), observe))
    }

    /// Runs the block with the input of each group of [`Block::input_groups`] replaced by
    /// `x − shifts[k]` (`[in]`, broadcast over tokens) where a shift is given: with each of that
    /// group's biases raised by `W·shifts[k]`, the block computes its original function, which is
    /// how an equivalent per-channel shift is checked. Errors when `shifts` does not hold one
    /// entry per group, or a shift of the wrong width.
    pub fn forward_input_shifted(
        &self,
        hidden: &Tensor,
        ctx: &ForwardCtx,
        shifts: &[Option<Tensor>],
        observe: Observer<'_>,
    ) -> Result<Tensor, ModelError> {
        let groups = self.input_groups();
        if shifts.len() != groups.len() {
            return Err(ModelError::BadScales(format!("{} input shifts for {} input groups", shifts.len(), groups.len())));
        }
        for (g, s) in groups.iter().zip(shifts) {
            let width = self.lin(short(g[0])).weight.size()[1];
            if let Some(s) = s
                && s.size() != [width]
            {
                return Err(ModelError::BadScales(format!("the input shift of {} has shape {:?}, not [{width}]", g[0], s.size())));
            }
        }
        Ok(self.forward_with(hidden, ctx, InputMap::Shifted(shifts), observe))
    }

    fn forward_with(&self, hidden: &Tensor, ctx: &ForwardCtx, scales: InputMap<'_>, observe: Observer<'_>) -> Tensor {
        if self.linear("o_proj").is_some() {
            self.forward_llama(hidden, ctx, scales, observe)
        } else {
            self.forward_opt(hidden, ctx, scales, observe)
        }
    }

    /// The groups of linears that read the same input, in the order the forward pass reaches
    /// them (for true-sequential pruning).
    pub fn input_groups(&self) -> &'static [&'static [&'static str]] {
        if self.linear("o_proj").is_some() { &LLAMA_GROUPS } else { &OPT_GROUPS }
    }

    fn attention(
        &self,
        x: &Tensor,
        ctx: &ForwardCtx,
        out_group: &'static [&'static str],
        scales: InputMap<'_>,
        observe: Observer<'_>,
    ) -> Tensor {
        let (b, s) = (x.size()[0], x.size()[1]);
        let split = |t: Tensor, heads: i64| t.view([b, s, heads, self.head_dim]).transpose(1, 2);
        let x = &input_scaled(x, scales, 0);
        observe(QKV, x);
        let mut q = split(self.lin("q_proj").forward(x), self.num_heads);
        let mut k = split(self.lin("k_proj").forward(x), self.num_kv_heads);
        let v = split(self.lin("v_proj").forward(x), self.num_kv_heads);
        if let Some((cos, sin)) = &ctx.rope {
            q = apply_rope(&q, cos, sin);
            k = apply_rope(&k, cos, sin);
        }
        let mask = ctx.mask.as_ref().map(|m| m.to_kind(q.kind()));
        // Grouped-query attention: each kv head serves `group` query heads. Repeating k and v
        // (as transformers' `repeat_kv` does) keeps libtorch on its fused CPU kernels, which the
        // `enable_gqa` flag would leave.
        let group = self.num_heads / self.num_kv_heads;
        let (k, v) =
            if group > 1 { (k.repeat_interleave_self_int(group, 1, None), v.repeat_interleave_self_int(group, 1, None)) } else { (k, v) };
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, mask.as_ref(), 0.0, mask.is_none(), None::<f64>, false);
        let y = input_scaled(&y.transpose(1, 2).contiguous().view([b, s, self.num_heads * self.head_dim]), scales, 1);
        observe(out_group, &y);
        self.lin(short(out_group[0])).forward(&y)
    }

    fn forward_llama(&self, hidden: &Tensor, ctx: &ForwardCtx, scales: InputMap<'_>, observe: Observer<'_>) -> Tensor {
        let h = hidden + self.attention(&self.nrm("input_layernorm").forward(hidden), ctx, LLAMA_GROUPS[1], scales, observe);
        let x = input_scaled(&self.nrm("post_attention_layernorm").forward(&h), scales, 2);
        observe(LLAMA_GROUPS[2], &x);
        let act = input_scaled(&(self.lin("gate_proj").forward(&x).silu() * self.lin("up_proj").forward(&x)), scales, 3);
        observe(LLAMA_GROUPS[3], &act);
        &h + self.lin("down_proj").forward(&act)
    }

    fn forward_opt(&self, hidden: &Tensor, ctx: &ForwardCtx, scales: InputMap<'_>, observe: Observer<'_>) -> Tensor {
        let attn_norm = self.nrm("self_attn_layer_norm");
        let ffn_norm = self.nrm("final_layer_norm");
        let x = if self.pre_norm { attn_norm.forward(hidden) } else { hidden.shallow_clone() };
        let mut h = hidden + self.attention(&x, ctx, OPT_GROUPS[1], scales, observe);
        if !self.pre_norm {
            h = attn_norm.forward(&h);
        }
        let x = input_scaled(&if self.pre_norm { ffn_norm.forward(&h) } else { h.shallow_clone() }, scales, 2);
        observe(OPT_GROUPS[2], &x);
        let act = input_scaled(&self.lin("fc1").forward(&x).relu(), scales, 3);
        observe(OPT_GROUPS[3], &act);
        let mut out = &h + self.lin("fc2").forward(&act);
        if !self.pre_norm {
            out = ffn_norm.forward(&out);
        }
        out
    }
}

/// How the forward pass maps each input group's input before its linears read it.
#[derive(Clone, Copy)]
enum InputMap<'a> {
    Plain,
    Scaled(&'a [Tensor]),
    Shifted(&'a [Option<Tensor>]),
}

/// `x` mapped for group `k`: times its scales, minus its shift, or `x` itself (the same tensor,
/// no operation: the plain forward stays bit for bit what it was).
fn input_scaled(x: &Tensor, map: InputMap<'_>, k: usize) -> Tensor {
    match map {
        InputMap::Scaled(s) if k < s.len() => x * s[k].to_kind(x.kind()),
        InputMap::Shifted(s) => match s.get(k) {
            Some(Some(z)) => x - z.to_kind(x.kind()),
            _ => x.shallow_clone(),
        },
        _ => x.shallow_clone(),
    }
}

/// transformers' `rotate_half` convention: the two halves of each head are the pairs.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let rotated = Tensor::cat(&[x2.neg(), x1], 3);
    x * cos.to_kind(x.kind()) + rotated * sin.to_kind(x.kind())
}

/// The inverse frequencies of RoPE, computed as transformers does (fp32).
fn inv_freq(theta: f64, scaling: RopeScaling, head_dim: i64, device: Device) -> Tensor {
    let exponents = Tensor::arange_start_step(0, head_dim, 2, (Kind::Int64, device)).to_kind(Kind::Float) / head_dim as f64;
    let base = Tensor::pow_scalar(theta, &exponents);
    let inv = base.reciprocal();
    match scaling {
        RopeScaling::None => inv,
        RopeScaling::Linear { factor } => inv / factor,
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            let old = original_max_position_embeddings as f64;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            let wavelen = (2.0 * std::f64::consts::PI) / &inv;
            let scaled = inv.where_self(&wavelen.le(low_wavelen), &(&inv / factor));
            let smooth = (old / &wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
            let smoothed: Tensor = (1.0 - &smooth) * &scaled / factor + &smooth * &scaled;
            let medium = wavelen.ge(high_wavelen).logical_and(&wavelen.le(low_wavelen));
            smoothed.where_self(&medium, &scaled)
        }
    }
}

/// A loaded model: configuration, the memory-mapped checkpoint, and the resident parts
/// (embeddings and head). Blocks are loaded on demand.
#[derive(Debug)]
pub struct Model {
    config: ModelConfig,
    weights: Weights,
    device: Device,
    kind: Kind,
    /// Tensor-name prefix of the decoder (`model.`, `model.decoder.` or `decoder.`).
    prefix: String,
    embed_tokens: Tensor,
    /// OPT's learned positions `[max_pos + 2, hidden]`.
    embed_positions: Option<Tensor>,
    project_in: Option<Linear>,
    project_out: Option<Linear>,
    final_norm: Option<Norm>,
    lm_head: Tensor,
}

impl Model {
    /// Opens a Hugging Face model directory and loads its embeddings and head on `device` as
    /// `kind`. Decoder blocks are read later, one at a time.
    pub fn open(dir: &Path, device: Device, kind: Kind) -> Result<Model, ModelError> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(ModelError::NoConfig { dir: dir.to_path_buf() });
        }
        let config = ModelConfig::from_file(&config_path)?;
        let weights = Weights::open(dir)?;
        let c = &config;
        let (h, v) = (c.hidden_size, c.vocab_size);
        let load = |name: &str, shape: &[usize]| weights.load(name, shape, kind, device);
        let model = match &c.family {
            Family::LlamaLike { .. } => {
                let prefix = tensor_prefix(&c.family, &weights);
                let embed_tokens = load("model.embed_tokens.weight", &[v, h])?;
                let lm_head = if weights.contains("lm_head.weight") || !c.tie_word_embeddings {
                    load("lm_head.weight", &[v, h])?
                } else {
                    embed_tokens.shallow_clone()
                };
                let final_norm = Some(Norm { weight: load("model.norm.weight", &[h])?, bias: None, eps: c.norm_eps });
                Model {
                    embed_positions: None,
                    project_in: None,
                    project_out: None,
                    final_norm,
                    lm_head,
                    embed_tokens,
                    prefix,
                    config: config.clone(),
                    weights,
                    device,
                    kind,
                }
            }
            Family::Opt { pre_norm, word_embed_proj_dim, .. } => {
                let prefix = tensor_prefix(&c.family, &weights);
                let p = |n: &str| format!("{prefix}{n}");
                let e = *word_embed_proj_dim;
                let embed_tokens = load(&p("embed_tokens.weight"), &[v, e])?;
                let embed_positions = Some(load(&p("embed_positions.weight"), &[c.max_position_embeddings + 2, h])?);
                let (project_in, project_out) = if e != h {
                    (
                        Some(Linear { weight: load(&p("project_in.weight"), &[h, e])?, bias: None }),
                        Some(Linear { weight: load(&p("project_out.weight"), &[e, h])?, bias: None }),
                    )
                } else {
                    (None, None)
                };
                let final_norm = if *pre_norm {
                    Some(Norm {
                        weight: load(&p("final_layer_norm.weight"), &[h])?,
                        bias: Some(load(&p("final_layer_norm.bias"), &[h])?),
                        eps: c.norm_eps,
                    })
                } else {
                    None
                };
                let lm_head = if weights.contains("lm_head.weight") || !c.tie_word_embeddings {
                    load("lm_head.weight", &[v, e])?
                } else {
                    embed_tokens.shallow_clone()
                };
                Model {
                    embed_positions,
                    project_in,
                    project_out,
                    final_norm,
                    lm_head,
                    embed_tokens,
                    prefix,
                    config: config.clone(),
                    weights,
                    device,
                    kind,
                }
            }
        };
        check_blocks(dir, &model.weights, &model.prefix, c.num_layers)?;
        Ok(model)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The full tensor-name prefix of block `index` (e.g. `model.layers.3.`).
    pub fn block_prefix(&self, index: usize) -> String {
        format!("{}layers.{index}.", self.prefix)
    }

    /// Reads block `index` from the checkpoint.
    pub fn block(&self, index: usize) -> Result<Block, ModelError> {
        let c = &self.config;
        if index >= c.num_layers {
            return Err(ModelError::NoSuchBlock { index, layers: c.num_layers });
        }
        let prefix = self.block_prefix(index);
        let load = |name: &str, shape: &[usize]| self.weights.load(&format!("{prefix}{name}"), shape, self.kind, self.device);
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (q_out, kv_out) = (c.num_heads * hd, c.num_kv_heads * hd);
        let mut linears = Vec::new();
        let mut norms = Vec::new();
        let pre_norm = match &c.family {
            Family::LlamaLike { qkv_bias, o_bias, mlp_bias, .. } => {
                let i = c.intermediate_size;
                let shapes = [
                    (q_out, h, *qkv_bias),
                    (kv_out, h, *qkv_bias),
                    (kv_out, h, *qkv_bias),
                    (h, q_out, *o_bias),
                    (i, h, *mlp_bias),
                    (i, h, *mlp_bias),
                    (h, i, *mlp_bias),
                ];
                for (path, (out, inp, has_bias)) in LLAMA_LINEARS.into_iter().zip(shapes) {
                    let weight = load(&format!("{path}.weight"), &[out, inp])?;
                    let bias = if has_bias { Some(load(&format!("{path}.bias"), &[out])?) } else { None };
                    linears.push((path, Linear { weight, bias }));
                }
                for path in LLAMA_NORMS {
                    norms.push((path, Norm { weight: load(&format!("{path}.weight"), &[h])?, bias: None, eps: c.norm_eps }));
                }
                true
            }
            Family::Opt { pre_norm, bias, .. } => {
                let f = c.intermediate_size;
                let shapes = [(h, h), (h, h), (h, h), (h, h), (f, h), (h, f)];
                for (path, (out, inp)) in OPT_LINEARS.into_iter().zip(shapes) {
                    let weight = load(&format!("{path}.weight"), &[out, inp])?;
                    let bias = if *bias { Some(load(&format!("{path}.bias"), &[out])?) } else { None };
                    linears.push((path, Linear { weight, bias }));
                }
                for path in OPT_NORMS {
                    let weight = load(&format!("{path}.weight"), &[h])?;
                    let bias = Some(load(&format!("{path}.bias"), &[h])?);
                    norms.push((path, Norm { weight, bias, eps: c.norm_eps }));
                }
                *pre_norm
            }
        };
        Ok(Block {
            index,
            pre_norm,
            num_heads: c.num_heads as i64,
            num_kv_heads: c.num_kv_heads as i64,
            head_dim: hd as i64,
            linears,
            norms,
        })
    }

    fn check_ids(&self, ids: &Tensor) -> Result<(i64, i64), ModelError> {
        let shape = ids.size();
        if ids.kind() != Kind::Int64 || shape.len() != 2 {
            return Err(ModelError::BadInput { kind: ids.kind(), shape });
        }
        if ids.numel() > 0 {
            let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
            let vocab = self.config.vocab_size;
            for id in [lo, hi] {
                if id < 0 || id as usize >= vocab {
                    return Err(ModelError::TokenOutOfRange { id, vocab });
                }
            }
        }
        Ok((shape[0], shape[1]))
    }

    /// A mask of ones when none is given, as int64 on the model's device.
    fn mask_or_ones(&self, b: i64, s: i64, mask: Option<&Tensor>) -> Tensor {
        match mask {
            Some(m) => m.to_kind(Kind::Int64).to_device(self.device),
            None => Tensor::ones([b, s], (Kind::Int64, self.device)),
        }
    }

    /// Token (and, for OPT, position) embeddings of `ids` `[batch, seq]`; `mask` `[batch, seq]`
    /// marks real tokens with 1 and padding with 0.
    pub fn embed(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor, ModelError> {
        let (b, s) = self.check_ids(ids)?;
        let ids = ids.to_device(self.device);
        let mut h = Tensor::embedding(&self.embed_tokens, &ids, -1, false, false);
        if let Some(p) = &self.project_in {
            h = p.forward(&h);
        }
        if let Some(table) = &self.embed_positions {
            let max = self.config.max_position_embeddings;
            if s as usize > max {
                return Err(ModelError::TooLong { len: s as usize, max });
            }
            // transformers' OPTLearnedPositionalEmbedding: cumsum over the mask, offset 2.
            let m = self.mask_or_ones(b, s, mask);
            let positions = (m.cumsum(1, Kind::Int64) * &m - 1) + 2;
            // Out of place on purpose: `h` may alias a tensor the caller holds.
            #[allow(clippy::assign_op_pattern)]
            {
                h = h + Tensor::embedding(table, &positions, -1, false, false);
            }
        }
        Ok(h)
    }

    /// The mask and rotary tables every block of this batch needs.
    pub fn context(&self, batch: i64, seq: i64, mask: Option<&Tensor>) -> ForwardCtx {
        let dev = self.device;
        let sliding = matches!(self.config.window, AttentionWindow::Sliding(w) if (w as i64) < seq);
        let additive = if mask.is_none() && !sliding {
            None
        } else {
            let i = Tensor::arange(seq, (Kind::Int64, dev)).unsqueeze(1);
            let j = Tensor::arange(seq, (Kind::Int64, dev)).unsqueeze(0);
            let mut allowed = j.le_tensor(&i);
            if let AttentionWindow::Sliding(w) = self.config.window {
                allowed = allowed.logical_and(&(&i - &j).lt(w as i64));
            }
            let keys = self.mask_or_ones(batch, seq, mask).ne(0).view([batch, 1, 1, seq]);
            let allowed = allowed.view([1, 1, seq, seq]).logical_and(&keys);
            let min = match self.kind {
                Kind::Half => f64::from(half::f16::MIN),
                Kind::BFloat16 => f64::from(half::bf16::MIN),
                _ => f64::from(f32::MIN),
            };
            Some(Tensor::zeros([1], (Kind::Float, dev)).where_self(&allowed, &Tensor::full([1], min, (Kind::Float, dev))))
        };
        let rope = match &self.config.family {
            Family::LlamaLike { rope_theta, rope_scaling, .. } => {
                let inv = inv_freq(*rope_theta, *rope_scaling, self.config.head_dim as i64, dev);
                let positions = Tensor::arange(seq, (Kind::Float, dev));
                let freqs = positions.unsqueeze(1).matmul(&inv.unsqueeze(0));
                let emb = Tensor::cat(&[&freqs, &freqs], -1).view([1, 1, seq, -1]);
                Some((emb.cos(), emb.sin()))
            }
            Family::Opt { .. } => None,
        };
        ForwardCtx { mask: additive, rope }
    }

    /// Logits `[batch, seq, vocab]` for every position.
    pub fn head(&self, hidden: &Tensor) -> Tensor {
        let mut h = match &self.final_norm {
            Some(n) => n.forward(hidden),
            None => hidden.shallow_clone(),
        };
        if let Some(p) = &self.project_out {
            h = p.forward(&h);
        }
        h.linear::<Tensor>(&self.lm_head, None)
    }

    /// Writes the model to a new directory `out`: block `i` comes from `block(i)` (a pruned or
    /// scaled block, or `self.block(i)` unchanged), everything else is copied from the input
    /// checkpoint. Every tensor keeps its name and its stored dtype; config.json and the tokenizer
    /// files are copied. One block is resident at a time; the input is never overwritten. An
    /// error from `block` stops the write and leaves no output directory behind.
    pub fn save<E: From<ModelError>>(&self, out: &Path, block: &mut dyn FnMut(usize) -> Result<Block, E>) -> Result<PathBuf, E> {
        self.save_with_config(out, &[], &[], block)
    }

    /// [`Model::save`], with `config` keys set in the written config.json (e.g.
    /// `("attention_bias", true)` when blocks gained biases); keys not named are copied. `files`
    /// are further side files written into the directory (e.g. the recipe that made it).
    pub fn save_with_config<E: From<ModelError>>(
        &self,
        out: &Path,
        config: &[(&str, serde_json::Value)],
        files: &[(&str, &[u8])],
        block: &mut dyn FnMut(usize) -> Result<Block, E>,
    ) -> Result<PathBuf, E> {
        let dir = self.weights.dir().to_path_buf();
        let mut writer = crate::save::HfDirWriter::create(out, Some(&dir)).map_err(ModelError::from)?;
        let stored = |name: &str, t: Tensor| -> (String, Tensor) {
            let kind = self.weights.stored_kind(name).unwrap_or(self.kind);
            (name.to_owned(), t.to_device(Device::Cpu).to_kind(kind))
        };
        let layers_prefix = format!("{}layers.", self.prefix);
        let mut rest = Vec::new();
        for name in self.weights.names().filter(|n| !n.starts_with(&layers_prefix)) {
            let shape: Vec<i64> = self.weights.shape(name).unwrap_or_default().iter().map(|&d| d as i64).collect();
            let kind = self.weights.stored_kind(name).unwrap_or(self.kind);
            rest.push(crate::safetensors_write::TensorSpec { name: name.to_owned(), shape, kind });
        }
        writer
            .write_shard_lazy(&rest, &mut |spec| {
                let shape: Vec<usize> = spec.shape.iter().map(|&d| d as usize).collect();
                self.weights.load(&spec.name, &shape, spec.kind, Device::Cpu).map_err(|e| e.to_string())
            })
            .map_err(ModelError::from)?;
        for i in 0..self.config.num_layers {
            let b = block(i)?;
            let tensors: Vec<(String, Tensor)> = b.named_tensors(&self.block_prefix(i)).into_iter().map(|(n, t)| stored(&n, t)).collect();
            writer.write_shard(&tensors).map_err(ModelError::from)?;
        }
        for side in [
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "tokenizer.model",
            "vocab.json",
            "merges.txt",
        ] {
            if side == "config.json" && !config.is_empty() {
                let path = dir.join(side);
                let text = spindle_io::read_to_string(&path)
                    .map_err(|io| ModelError::from(crate::save::SaveError::Io { path: path.clone(), io }))?;
                let mut value: serde_json::Value =
                    serde_json::from_str(&text).map_err(|err| ModelError::from(ConfigError::Json { path: path.clone(), err }))?;
                let Some(map) = value.as_object_mut() else {
                    return Err(ModelError::from(ConfigError::Inconsistent { path, what: "not a JSON object".into() }).into());
                };
                for (k, v) in config {
                    map.insert((*k).to_owned(), v.clone());
                }
                writer.write_json(side, &value).map_err(ModelError::from)?;
                continue;
            }
            writer.copy_if_present(&dir, side).map_err(ModelError::from)?;
        }
        for (name, bytes) in files {
            writer.write_file(name, bytes).map_err(ModelError::from)?;
        }
        Ok(writer.finish().map_err(ModelError::from)?)
    }

    /// The whole forward pass, one block resident at a time.
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor, ModelError> {
        let mut h = self.embed(ids, mask)?;
        let size = ids.size();
        let ctx = self.context(size[0], size[1], mask);
        for i in 0..self.config.num_layers {
            h = self.block(i)?.forward(&h, &ctx);
        }
        Ok(self.head(&h))
    }
}
