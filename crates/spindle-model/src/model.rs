//! The block-wise forward pass: [`Model::embed`] → [`Block::forward`] for each block (loaded on
//! demand by [`Model::block`]) → [`Model::head`]. Only the embeddings and the head are resident;
//! a block is read from the memory-mapped checkpoint when asked for and freed when dropped.
//!
//! Numerics follow Hugging Face transformers' eager implementations (RMSNorm in fp32, RoPE
//! frequencies in fp32, softmax through libtorch's scaled_dot_product_attention with an additive
//! mask), so fp32 logits agree with transformers to about 1e-5.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::arch::{Family, InputMap, Outer, Step, rope_tables};
use crate::config::{AttentionWindow, ConfigError, ModelConfig};
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
    /// The checkpoint stores a family's tensors in a layout spindle does not read.
    #[error("unsupported tensor layout: {0}")]
    Layout(String),
    /// config.json's block count and the blocks the weights hold disagree.
    #[error("{dir}: config.json says num_hidden_layers = {layers}, but {what}")]
    Blocks { dir: PathBuf, layers: usize, what: String },
}

/// Checks that the weights hold blocks `0..layers` under `{prefix}layers.` and nothing beyond:
/// a tensor of a block past the count would be dropped from every output, and a count past the
/// weights would fail only when that block is reached (or allocate per block first).
/// The prefix of the decoder's tensor names (`model.`, or OPT's `model.decoder.` / `decoder.`).
pub(crate) fn tensor_prefix(family: &Family, weights: &Weights) -> String {
    family.arch().prefix(weights).to_owned()
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

/// RMSNorm (Llama family), RMSNorm scaled by `1 + weight` (Gemma), or LayerNorm (OPT).
#[derive(Debug)]
pub struct Norm {
    pub weight: Tensor,
    /// LayerNorm's bias; `None` for RMSNorm.
    pub bias: Option<Tensor>,
    pub(crate) eps: f64,
    /// Gemma's RMSNorm multiplies by `1 + weight`, in fp32.
    pub(crate) unit_offset: bool,
}

impl Norm {
    pub(crate) fn rms(weight: Tensor, eps: f64) -> Norm {
        Norm { weight, bias: None, eps, unit_offset: false }
    }

    pub(crate) fn layer(weight: Tensor, bias: Tensor, eps: f64) -> Norm {
        Norm { weight, bias: Some(bias), eps, unit_offset: false }
    }

    pub(crate) fn rms_unit_offset(weight: Tensor, eps: f64) -> Norm {
        Norm { weight, bias: None, eps, unit_offset: true }
    }

    /// What the forward pass adds to `weight` before it scales: 1 for Gemma's norms, 0
    /// otherwise. Scaling the norm's output channels by `1/d` makes the weight
    /// `(weight + offset) / d − offset`.
    pub fn weight_offset(&self) -> f64 {
        if self.unit_offset { 1.0 } else { 0.0 }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        match &self.bias {
            // transformers' Gemma2RMSNorm: all in fp32, `1 + w`, cast back after the product.
            None if self.unit_offset => {
                let dtype = x.kind();
                let h = x.to_kind(Kind::Float);
                let variance = h.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
                let h = &h * (variance + self.eps).rsqrt();
                (h * (self.weight.to_kind(Kind::Float) + 1.0)).to_kind(dtype)
            }
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
    pub(crate) rope: Option<(Tensor, Tensor)>,
    /// The mask and tables of the sliding-window layers, for families that alternate them with
    /// full-attention layers (Gemma).
    pub(crate) sliding: Option<Box<ForwardCtx>>,
}

/// One decoder block with its linear layers and norms under their Hugging Face names.
#[derive(Debug)]
pub struct Block {
    index: usize,
    /// The architecture family, which knows the block's groups, sites and forward steps.
    family: Family,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
    /// (path inside the block, e.g. `self_attn.q_proj`, layer), in Hugging Face order.
    linears: Vec<(&'static str, Linear)>,
    /// (path inside the block, e.g. `input_layernorm`, norm).
    norms: Vec<(&'static str, Norm)>,
    /// Linears no pruner touches (a mixture of experts' router), by path.
    fixed: Vec<(&'static str, Linear)>,
}

/// A callback shown each linear layer's input during [`Block::forward_observed`].
pub type Observer<'a> = &'a mut dyn FnMut(&'static [&'static str], &Tensor);

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
    /// A fused producer linear (Phi-3's `qkv_proj`, `gate_up_proj`): the rows `(start, len)`
    /// that are the channels; `None` when all its rows are.
    pub producer_rows: Option<(i64, i64)>,
}

impl ScalingSite {
    /// The producer linear's weight rows that are this site's channels.
    pub fn producer_rows_of(&self, weight: &Tensor) -> Tensor {
        match self.producer_rows {
            Some((start, len)) => weight.narrow(0, start, len),
            None => weight.shallow_clone(),
        }
    }

    /// `d` (one scale per channel) as row scales of the producer linear with `rows` rows: `d`
    /// itself, or, for a fused producer, `d` on its row range and 1 on every other row.
    pub fn producer_row_scales(&self, d: &Tensor, rows: i64) -> Tensor {
        match self.producer_rows {
            Some((start, len)) => {
                let ones = |n: i64| Tensor::ones([n], (d.kind(), d.device()));
                Tensor::cat(&[ones(start), d.shallow_clone(), ones(rows - start - len)], 0)
            }
            None => d.shallow_clone(),
        }
    }
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
        self.family.arch().scaling_sites(repeat)
    }

    /// The family this block belongs to.
    pub fn family(&self) -> &Family {
        &self.family
    }

    /// (query heads, key/value heads, head size).
    pub(crate) fn heads(&self) -> (i64, i64, i64) {
        (self.num_heads, self.num_kv_heads, self.head_dim)
    }

    /// The norms, by their path inside the block.
    pub fn norms(&self) -> impl Iterator<Item = (&'static str, &Norm)> {
        self.norms.iter().map(|(n, l)| (*n, l))
    }

    /// A norm by name (`input_layernorm`, `self_attn_layer_norm`, ...), mutable for scaling.
    pub fn norm_mut(&mut self, name: &str) -> Option<&mut Norm> {
        self.norms.iter_mut().find(|(p, _)| *p == name).map(|(_, n)| n)
    }

    // Every name the families use is one their module put in the block itself, so a miss is a
    // bug.
    pub(crate) fn lin(&self, name: &str) -> &Linear {
        match self.linear(name) {
            Some(l) => l,
            None => unreachable!("block built without {name}"),
        }
    }

    pub(crate) fn lin_at(&self, path: &str) -> &Linear {
        match self.linear_at(path) {
            Some(l) => l,
            None => unreachable!("block built without {path}"),
        }
    }

    /// A linear that stays dense (a router), by its path inside the block.
    pub fn fixed_linear(&self, path: &str) -> Option<&Linear> {
        self.fixed.iter().find(|(p, _)| *p == path).map(|(_, l)| l)
    }

    pub(crate) fn fixed_at(&self, path: &str) -> &Linear {
        match self.fixed_linear(path) {
            Some(l) => l,
            None => unreachable!("block built without {path}"),
        }
    }

    pub(crate) fn nrm(&self, name: &str) -> &Norm {
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
        for (path, l) in &self.fixed {
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
            let width = self.lin_at(g[0]).weight.size()[1];
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
            let width = self.lin_at(g[0]).weight.size()[1];
            if let Some(s) = s
                && s.size() != [width]
            {
                return Err(ModelError::BadScales(format!("the input shift of {} has shape {:?}, not [{width}]", g[0], s.size())));
            }
        }
        Ok(self.forward_with(hidden, ctx, InputMap::Shifted(shifts), observe))
    }

    /// [`Block::forward_observed`] for statistics kept per calibration sequence (OWL's norms):
    /// every observed input is `[batch, seq, in]`. A mixture-of-experts block shows each expert's
    /// input with zeros at the tokens not routed to it, where `forward_observed` shows the routed
    /// rows `[tokens, in]`. The output is the same.
    pub fn forward_observed_by_sequence(&self, hidden: &Tensor, ctx: &ForwardCtx, observe: Observer<'_>) -> Tensor {
        self.forward_step(hidden, ctx, InputMap::Plain, observe, true)
    }

    fn forward_with(&self, hidden: &Tensor, ctx: &ForwardCtx, map: InputMap<'_>, observe: Observer<'_>) -> Tensor {
        self.forward_step(hidden, ctx, map, observe, false)
    }

    fn forward_step(&self, hidden: &Tensor, ctx: &ForwardCtx, map: InputMap<'_>, observe: Observer<'_>, by_sequence: bool) -> Tensor {
        let mut step = Step { ctx, map, observe, past: None, kv: None, by_sequence };
        self.family.arch().forward(self, hidden, &mut step)
    }

    /// The groups of linears that read the same input, in the order the forward pass reaches
    /// them (for true-sequential pruning).
    pub fn input_groups(&self) -> &'static [&'static [&'static str]] {
        self.family.arch().input_groups()
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
    /// Gemma: embeddings multiplied by √hidden (rounded to the weights' dtype).
    embed_scale: Option<f64>,
    /// Gemma 2: logits soft-capped, `cap · tanh(logits / cap)`.
    final_softcap: Option<f64>,
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
        let load = |name: &str, shape: &[usize]| weights.load(name, shape, kind, device);
        let arch = config.family.arch();
        let Outer { embed_tokens, embed_positions, project_in, project_out, final_norm, lm_head, embed_scale, final_softcap } =
            arch.load_outer(&config, &weights, &load)?;
        let prefix = arch.prefix(&weights).to_owned();
        let model = Model {
            embed_positions,
            project_in,
            project_out,
            final_norm,
            lm_head,
            embed_tokens,
            embed_scale,
            final_softcap,
            prefix,
            config,
            weights,
            device,
            kind,
        };
        let c = &model.config;
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
        let crate::arch::Parts { linears, norms, fixed } = c.family.arch().load_block(c, &load)?;
        Ok(Block {
            index,
            family: c.family.clone(),
            num_heads: c.num_heads as i64,
            num_kv_heads: c.num_kv_heads as i64,
            head_dim: c.head_dim as i64,
            linears,
            norms,
            fixed,
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
        let mut h = self.token_embeddings(&ids);
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

    /// The token embeddings of `ids` (on the device), times Gemma's scale where it has one:
    /// √hidden as fp32, rounded to the embeddings' dtype, as transformers multiplies.
    pub(crate) fn token_embeddings(&self, ids: &Tensor) -> Tensor {
        let h = Tensor::embedding(&self.embed_tokens, ids, -1, false, false);
        match self.embed_scale {
            Some(scale) => {
                let scale = Tensor::from(scale as f32).to_kind(self.embed_tokens.kind()).to_device(self.device);
                h * scale
            }
            None => h,
        }
    }

    /// The additive-mask minimum of the model's dtype.
    pub(crate) fn mask_min(&self) -> f64 {
        crate::arch::mask_min(self.kind)
    }

    /// The mask and rotary tables every block of this batch needs.
    pub fn context(&self, batch: i64, seq: i64, mask: Option<&Tensor>) -> ForwardCtx {
        let arch = self.config.family.arch();
        let mut ctx = self.context_for(batch, seq, mask, self.config.window, arch.rope());
        if let Some((window, rope)) = arch.sliding_layers() {
            ctx.sliding = Some(Box::new(self.context_for(batch, seq, mask, AttentionWindow::Sliding(window), rope)));
        }
        ctx
    }

    fn context_for(
        &self,
        batch: i64,
        seq: i64,
        mask: Option<&Tensor>,
        window: AttentionWindow,
        rope: Option<(f64, crate::config::RopeScaling)>,
    ) -> ForwardCtx {
        let dev = self.device;
        let sliding = matches!(window, AttentionWindow::Sliding(w) if (w as i64) < seq);
        let additive = if mask.is_none() && !sliding {
            None
        } else {
            let i = Tensor::arange(seq, (Kind::Int64, dev)).unsqueeze(1);
            let j = Tensor::arange(seq, (Kind::Int64, dev)).unsqueeze(0);
            let mut allowed = j.le_tensor(&i);
            if let AttentionWindow::Sliding(w) = window {
                allowed = allowed.logical_and(&(&i - &j).lt(w as i64));
            }
            let keys = self.mask_or_ones(batch, seq, mask).ne(0).view([batch, 1, 1, seq]);
            let allowed = allowed.view([1, 1, seq, seq]).logical_and(&keys);
            let min = self.mask_min();
            Some(Tensor::zeros([1], (Kind::Float, dev)).where_self(&allowed, &Tensor::full([1], min, (Kind::Float, dev))))
        };
        let rope = rope.map(|(theta, scaling)| rope_tables(theta, scaling, self.config.head_dim as i64, 0, seq, dev));
        ForwardCtx { mask: additive, rope, sliding: None }
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
        let logits = h.linear::<Tensor>(&self.lm_head, None);
        match self.final_softcap {
            Some(cap) => (logits / cap).tanh() * cap,
            None => logits,
        }
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
