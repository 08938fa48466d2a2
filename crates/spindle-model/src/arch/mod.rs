//! Architecture families, one module each. A family's module is everything spindle knows about
//! it: how its `config.json` resolves, what its tensors are called, which linears read the same
//! input (the groups a pruner shares statistics over), its norms, the places a per-channel
//! scaling can be absorbed (and what passes through them: RoPE pairs, grouped-query heads), and
//! the steps of its forward pass. The rest of the crate asks the family through [`Arch`]; nothing
//! outside this folder matches on a family or sniffs tensor names.
//!
//! Architecture Invariant: a new family touches its module, one line of [`REGISTRY`] (and its
//! [`Family`] variant with the one `match` that hands out its [`Arch`]), and its test fixture.
//! Nothing in spindle-prune, spindle-induce or spindle-eval changes.

pub mod gemma;
pub mod llama;
pub mod mixtral;
pub mod opt;
pub mod phi3;

use std::path::Path;

use serde_json::Value;
use tch::{Kind, Tensor};

use crate::config::{Architecture, BiasSlot, ConfigError, ModelConfig, RopeScaling};
use crate::model::{Block, ForwardCtx, KvCache, KvRepeat, Linear, ModelError, Norm, Observer, ScalingSite};
use crate::weights::{Weights, WeightsError};

/// What differs between the architecture families spindle runs: each variant holds its
/// module's resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Family {
    /// Llama, Mistral, Qwen2, Qwen3: RMSNorm, RoPE, SwiGLU MLP.
    Llama(llama::Llama),
    /// OPT: LayerNorm, learned positions, ReLU MLP.
    Opt(opt::Opt),
    /// Gemma 2 and 3: `(1 + w)` RMSNorms around each sublayer, scaled embeddings, GeGLU,
    /// alternating sliding-window layers, soft-capping.
    Gemma(gemma::Gemma),
    /// Phi-3: fused qkv_proj and gate_up_proj.
    Phi3(phi3::Phi3),
    /// Mixtral: a sparse mixture of experts in place of the MLP.
    Mixtral(mixtral::Mixtral),
}

impl Family {
    /// The family's knowledge, behind one interface.
    pub(crate) fn arch(&self) -> &dyn Arch {
        match self {
            Family::Llama(a) => a,
            Family::Opt(a) => a,
            Family::Gemma(a) => a,
            Family::Phi3(a) => a,
            Family::Mixtral(a) => a,
        }
    }
}

/// Resolves a config.json (parsed) of `architecture` into a [`ModelConfig`]; `path` is for
/// messages.
pub(crate) type Resolver = fn(&Path, Architecture, Value) -> Result<ModelConfig, ConfigError>;

/// Every architecture spindle runs: its Hugging Face class name (the `architectures` entry of
/// config.json), its [`Architecture`], and the resolver of the family module that runs it.
pub(crate) const REGISTRY: &[(&str, Architecture, Resolver)] = &[
    ("LlamaForCausalLM", Architecture::Llama, llama::resolve),
    ("MistralForCausalLM", Architecture::Mistral, llama::resolve),
    ("Qwen2ForCausalLM", Architecture::Qwen2, llama::resolve),
    ("Qwen3ForCausalLM", Architecture::Qwen3, llama::resolve),
    ("Gemma2ForCausalLM", Architecture::Gemma2, gemma::resolve),
    ("Gemma3ForCausalLM", Architecture::Gemma3, gemma::resolve),
    ("Phi3ForCausalLM", Architecture::Phi3, phi3::resolve),
    ("MixtralForCausalLM", Architecture::Mixtral, mixtral::resolve),
    ("OPTForCausalLM", Architecture::Opt, opt::resolve),
];

/// Loads one tensor by its name (relative to what the caller prefixed) with a checked shape.
pub(crate) type Load<'a> = dyn Fn(&str, &[usize]) -> Result<Tensor, WeightsError> + 'a;

/// The resident parts of a model: everything that is not a decoder block.
pub(crate) struct Outer {
    pub embed_tokens: Tensor,
    /// OPT's learned positions `[max_pos + 2, hidden]`.
    pub embed_positions: Option<Tensor>,
    pub project_in: Option<Linear>,
    pub project_out: Option<Linear>,
    pub final_norm: Option<Norm>,
    pub lm_head: Tensor,
    /// Embeddings multiplied by this (Gemma's √hidden).
    pub embed_scale: Option<f64>,
    /// Logits soft-capped at this (Gemma 2).
    pub final_softcap: Option<f64>,
}

/// A block's tensors, each under its path inside the block, in Hugging Face order.
pub(crate) struct Parts {
    /// The linears a pruner prunes.
    pub linears: Vec<(&'static str, Linear)>,
    pub norms: Vec<(&'static str, Norm)>,
    /// Linears that stay dense (a mixture of experts' router).
    pub fixed: Vec<(&'static str, Linear)>,
}

impl Parts {
    pub(crate) fn new(linears: Vec<(&'static str, Linear)>, norms: Vec<(&'static str, Norm)>) -> Parts {
        Parts { linears, norms, fixed: Vec::new() }
    }
}

/// A name made at run time (an expert's path), kept for the life of the process. The same text
/// always gives the same `&'static str`, so each distinct name is held once, however many blocks
/// are loaded.
pub(crate) fn intern(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match names.get(name) {
        Some(n) => n,
        None => {
            let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
            names.insert(n);
            n
        }
    }
}

/// Input groups made at run time (a mixture of experts' per-expert groups), interned as
/// [`intern`] does names: one copy per distinct list.
pub(crate) fn intern_groups(groups: Vec<Vec<&'static str>>) -> &'static [&'static [&'static str]] {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Groups = &'static [&'static [&'static str]];
    type Table = HashMap<Vec<Vec<&'static str>>, Groups>;
    static GROUPS: OnceLock<Mutex<Table>> = OnceLock::new();
    let mut all = GROUPS.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(g) = all.get(&groups) {
        return g;
    }
    let leaked: Vec<&'static [&'static str]> = groups.iter().map(|g| &*Box::leak(g.clone().into_boxed_slice())).collect();
    let leaked: Groups = Box::leak(leaked.into_boxed_slice());
    all.insert(groups, leaked);
    leaked
}

/// One family's knowledge. Implemented by each family module's settings struct.
pub(crate) trait Arch: std::fmt::Debug {
    /// The prefix of the decoder's tensor names (`model.`, OPT's `model.decoder.` or `decoder.`).
    fn prefix(&self, weights: &Weights) -> &'static str;
    /// Loads the embeddings, final norm and head (`load` takes full tensor names).
    fn load_outer(&self, c: &ModelConfig, weights: &Weights, load: &Load<'_>) -> Result<Outer, ModelError>;
    /// Loads one block's linears and norms (`load` takes names inside the block).
    fn load_block(&self, c: &ModelConfig, load: &Load<'_>) -> Result<Parts, ModelError>;
    /// The groups of linears that read one input, in forward order.
    fn input_groups(&self) -> &'static [&'static [&'static str]];
    /// The places a per-channel scaling can be absorbed exactly, in forward order; `repeat` is
    /// the grouped-query repetition of the value heads, if any.
    fn scaling_sites(&self, repeat: Option<KvRepeat>) -> Vec<ScalingSite>;
    /// RoPE's base and scaling, for families that rotate.
    fn rope(&self) -> Option<(f64, RopeScaling)>;
    /// For families whose layers alternate between full and sliding-window attention: the
    /// window and the sliding layers' RoPE. Each block then asks [`Step::ctx_for`].
    fn sliding_layers(&self) -> Option<(usize, Option<(f64, RopeScaling)>)> {
        None
    }
    /// One block's forward pass.
    fn forward(&self, block: &Block, hidden: &Tensor, step: &mut Step<'_>) -> Tensor;
    /// Per input group (in [`Arch::input_groups`] order): whether its linears carry biases.
    fn bias_slots(&self, architecture: Architecture) -> Vec<BiasSlot>;
    /// Family-specific checks of a resolved config; the message names the key.
    fn check(&self, c: &ModelConfig) -> Result<(), String>;
}

/// How the forward pass maps each input group's input before its linears read it.
#[derive(Clone, Copy)]
pub(crate) enum InputMap<'a> {
    Plain,
    Scaled(&'a [Tensor]),
    Shifted(&'a [Option<Tensor>]),
}

/// The state of one block's forward pass that is not the hidden states: the batch's context,
/// how inputs are mapped, who observes them, and the key/value cache read and written.
pub(crate) struct Step<'a> {
    pub ctx: &'a ForwardCtx,
    pub map: InputMap<'a>,
    pub observe: Observer<'a>,
    /// This block's cache of earlier positions (cached runs only).
    pub past: Option<&'a KvCache>,
    /// The keys and values this run computed (after RoPE, before repetition).
    pub kv: Option<KvCache>,
    /// Show the observer an expert's input as `[batch, seq, in]`, zero for the tokens not routed
    /// to it (statistics per sequence: OWL's norms), instead of the routed rows `[tokens, in]`.
    pub by_sequence: bool,
}

impl<'a> Step<'a> {
    /// The context of a sliding-window layer (`sliding`) or a full one: the sliding layers' own
    /// mask and RoPE tables where the family has them.
    pub fn ctx_for(&self, sliding: bool) -> &'a ForwardCtx {
        let ctx: &'a ForwardCtx = self.ctx;
        match (&ctx.sliding, sliding) {
            (Some(s), true) => s,
            _ => ctx,
        }
    }

    /// `x` mapped for input group `k`, then shown to the observer as the input of `group`:
    /// times its scales, minus its shift, or `x` itself (the same tensor, no operation: the
    /// plain forward stays bit for bit what it was).
    pub fn input(&mut self, x: &Tensor, k: usize, group: &'static [&'static str]) -> Tensor {
        let x = self.mapped(x, k);
        (self.observe)(group, &x);
        x
    }

    /// [`Step::input`] for the rows `token` of a flattened `[batch · seq, in]` input that a
    /// mixture-of-experts block routes to one expert; `shape` is `[batch, seq]`. The observer sees
    /// the routed rows, or with `by_sequence` the whole batch with zeros elsewhere.
    pub fn routed_input(&mut self, x: &Tensor, k: usize, group: &'static [&'static str], token: &Tensor, shape: [i64; 2]) -> Tensor {
        let x = self.mapped(x, k);
        if self.by_sequence {
            let columns = x.size()[1];
            let padded = Tensor::zeros([shape[0] * shape[1], columns], (x.kind(), x.device())).index_copy(0, token, &x);
            (self.observe)(group, &padded.view([shape[0], shape[1], columns]));
        } else {
            (self.observe)(group, &x);
        }
        x
    }

    fn mapped(&self, x: &Tensor, k: usize) -> Tensor {
        match self.map {
            InputMap::Scaled(s) if k < s.len() => x * s[k].to_kind(x.kind()),
            InputMap::Shifted(s) => match s.get(k) {
                Some(Some(z)) => x - z.to_kind(x.kind()),
                _ => x.shallow_clone(),
            },
            _ => x.shallow_clone(),
        }
    }
}

/// `[batch, seq, heads · head_dim]` → `[batch, heads, seq, head_dim]`.
pub(crate) fn split_heads(t: Tensor, heads: i64, head_dim: i64) -> Tensor {
    let (b, s) = (t.size()[0], t.size()[1]);
    t.view([b, s, heads, head_dim]).transpose(1, 2)
}

/// How attention turns scores into weights, where a family differs from `1/√head_dim` and a plain
/// softmax.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Scores {
    /// The factor on `q·k` (Gemma: `query_pre_attn_scalar^-½`); `None`: `head_dim^-½`.
    pub scale: Option<f64>,
    /// Gemma 2: scores soft-capped, `cap · tanh(s / cap)`, before the mask.
    pub softcap: Option<f64>,
}

/// Scaled dot-product attention of `q` `[b, heads, s, hd]` over `k`, `v` `[b, kv_heads, s, hd]`
/// (after RoPE) and the step's cached keys and values, under `ctx`'s mask; records this run's
/// keys and values in the step; returns `[b, s, heads · hd]`.
pub(crate) fn attend(block: &Block, q: &Tensor, k: Tensor, v: Tensor, step: &mut Step<'_>, ctx: &ForwardCtx, scores: Scores) -> Tensor {
    let (heads, kv_heads, hd) = block.heads();
    let (b, s) = (q.size()[0], q.size()[2]);
    step.kv = Some(KvCache { keys: k.shallow_clone(), values: v.shallow_clone() });
    let (k, v) = match step.past {
        Some(p) => {
            let shape = [b, kv_heads, p.len(), hd];
            (Tensor::cat(&[p.keys.expand(shape, false), k], 2), Tensor::cat(&[p.values.expand(shape, false), v], 2))
        }
        None => (k, v),
    };
    let mask = ctx.mask.as_ref().map(|m| m.to_kind(q.kind()));
    // Grouped-query attention: each kv head serves `group` query heads. Repeating k and v (as
    // transformers' `repeat_kv` does) keeps libtorch on its fused CPU kernels, which the
    // `enable_gqa` flag would leave.
    let group = heads / kv_heads;
    let (k, v) =
        if group > 1 { (k.repeat_interleave_self_int(group, 1, None), v.repeat_interleave_self_int(group, 1, None)) } else { (k, v) };
    let y = match scores.softcap {
        None => Tensor::scaled_dot_product_attention(q, &k, &v, mask.as_ref(), 0.0, mask.is_none(), scores.scale, false),
        // transformers' eager attention with Gemma 2's cap: scores, cap, mask, fp32 softmax.
        Some(cap) => {
            let scale = scores.scale.unwrap_or((hd as f64).powf(-0.5));
            let raw = q.matmul(&k.transpose(2, 3)) * scale;
            let capped = (raw / cap).tanh() * cap;
            let t = k.size()[2];
            let mask = match mask {
                Some(m) => m,
                None => {
                    let future = Tensor::ones([s, t], (Kind::Bool, q.device())).triu(t - s + 1);
                    Tensor::zeros([s, t], (q.kind(), q.device())).masked_fill(&future, mask_min(q.kind())).view([1, 1, s, t])
                }
            };
            (capped + mask).softmax(-1, Kind::Float).to_kind(q.kind()).matmul(&v)
        }
    };
    y.transpose(1, 2).contiguous().view([b, s, heads * hd])
}

/// The additive-mask minimum of `kind`: what masked scores get.
pub(crate) fn mask_min(kind: Kind) -> f64 {
    match kind {
        Kind::Half => f64::from(half::f16::MIN),
        Kind::BFloat16 => f64::from(half::bf16::MIN),
        _ => f64::from(f32::MIN),
    }
}

/// transformers' `rotate_half` convention: the two halves of each head are the pairs.
pub(crate) fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let rotated = Tensor::cat(&[x2.neg(), x1], 3);
    x * cos.to_kind(x.kind()) + rotated * sin.to_kind(x.kind())
}

/// The inverse frequencies of RoPE, computed as transformers does (fp32).
pub(crate) fn inv_freq(theta: f64, scaling: RopeScaling, head_dim: i64, device: tch::Device) -> Tensor {
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

/// RoPE's cos and sin tables `[1, 1, seq, head_dim]` of positions `past .. past + seq`, as
/// transformers computes them (fp32 products of the positions and the inverse frequencies).
pub(crate) fn rope_tables(theta: f64, scaling: RopeScaling, head_dim: i64, past: i64, seq: i64, device: tch::Device) -> (Tensor, Tensor) {
    let inv = inv_freq(theta, scaling, head_dim, device);
    let positions = Tensor::arange(past + seq, (Kind::Float, device));
    let freqs = positions.unsqueeze(1).matmul(&inv.unsqueeze(0));
    let emb = Tensor::cat(&[&freqs, &freqs], -1).view([1, 1, past + seq, -1]);
    let emb = if past > 0 { emb.narrow(2, past, seq) } else { emb };
    (emb.cos(), emb.sin())
}

/// The resident parts of a decoder stored under `model.` (every family but OPT): the token
/// embeddings, the head (the embeddings themselves when tied and the file has no
/// `lm_head.weight`), and the final norm, built by `norm` from its weight and epsilon. No
/// positions, projections, embedding scale or soft-cap; a family that has those sets them.
pub(crate) fn decoder_outer(
    c: &ModelConfig,
    weights: &Weights,
    load: &Load<'_>,
    norm: fn(Tensor, f64) -> Norm,
) -> Result<Outer, ModelError> {
    let (h, v) = (c.hidden_size, c.vocab_size);
    let embed_tokens = load("model.embed_tokens.weight", &[v, h])?;
    let lm_head = if weights.contains("lm_head.weight") || !c.tie_word_embeddings {
        load("lm_head.weight", &[v, h])?
    } else {
        embed_tokens.shallow_clone()
    };
    let final_norm = Some(norm(load("model.norm.weight", &[h])?, c.norm_eps));
    Ok(Outer {
        embed_tokens,
        embed_positions: None,
        project_in: None,
        project_out: None,
        final_norm,
        lm_head,
        embed_scale: None,
        final_softcap: None,
    })
}

/// Norms without a bias, each `norm` of `{path}.weight` `[width]`, under their paths.
pub(crate) fn load_norms(
    load: &Load<'_>,
    paths: &[&'static str],
    width: usize,
    eps: f64,
    norm: fn(Tensor, f64) -> Norm,
) -> Result<Vec<(&'static str, Norm)>, ModelError> {
    paths.iter().map(|&path| Ok((path, norm(load(&format!("{path}.weight"), &[width])?, eps)))).collect()
}

/// The checks every rotary family makes: positive finite bases, and heads of pairs.
pub(crate) fn check_rope(thetas: &[f64], head_dim: usize) -> Result<(), String> {
    if let Some(theta) = thetas.iter().find(|t| !(t.is_finite() && **t > 0.0)) {
        return Err(format!("rope_theta must be positive and finite, got {theta}"));
    }
    if !head_dim.is_multiple_of(2) {
        return Err(format!("head_dim {head_dim} is odd; rotary embeddings need pairs"));
    }
    Ok(())
}

/// Loads `path.weight` `[out, inp]` and, when `bias`, `path.bias` `[out]`.
pub(crate) fn load_linear(load: &Load<'_>, path: &str, out: usize, inp: usize, bias: bool) -> Result<Linear, ModelError> {
    let weight = load(&format!("{path}.weight"), &[out, inp])?;
    let bias = if bias { Some(load(&format!("{path}.bias"), &[out])?) } else { None };
    Ok(Linear { weight, bias })
}

/// The query, key and value projections, which read one input.
pub(crate) const QKV: &[&str] = &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"];

/// Attention with separate q/k/v projections (input group 0) and the output projection `out`
/// (input group 1): q and k normalised per head first when `qk_norm` names their norms (Qwen3),
/// then rotated when the context carries RoPE tables.
pub(crate) fn qkv_attention(
    block: &Block,
    x: &Tensor,
    step: &mut Step<'_>,
    out: &'static [&'static str],
    qk_norm: Option<(&str, &str)>,
) -> Tensor {
    let ctx = step.ctx;
    qkv_attention_in(block, x, step, out, qk_norm, ctx, Scores::default())
}

/// [`qkv_attention`] under the mask and RoPE tables of `ctx` (a sliding layer's, say), with the
/// family's `scores`.
pub(crate) fn qkv_attention_in(
    block: &Block,
    x: &Tensor,
    step: &mut Step<'_>,
    out: &'static [&'static str],
    qk_norm: Option<(&str, &str)>,
    ctx: &ForwardCtx,
    scores: Scores,
) -> Tensor {
    let (heads, kv_heads, hd) = block.heads();
    let x = step.input(x, 0, QKV);
    let mut q = split_heads(block.lin("q_proj").forward(&x), heads, hd);
    let mut k = split_heads(block.lin("k_proj").forward(&x), kv_heads, hd);
    let v = split_heads(block.lin("v_proj").forward(&x), kv_heads, hd);
    if let Some((qn, kn)) = qk_norm {
        q = block.nrm(qn).forward(&q);
        k = block.nrm(kn).forward(&k);
    }
    if let Some((cos, sin)) = &ctx.rope {
        q = apply_rope(&q, cos, sin);
        k = apply_rope(&k, cos, sin);
    }
    let y = attend(block, &q, k, v, step, ctx, scores);
    let y = step.input(&y, 1, out);
    block.lin_at(out[0]).forward(&y)
}
