//! Mixtral (transformers' `modeling_mixtral.py`): Mistral's attention and, in place of its MLP,
//! a sparse mixture of experts. A dense router (`block_sparse_moe.gate`) scores every token
//! against every expert; softmax in fp32 over all experts, the top `num_experts_per_tok`, their
//! weights renormalised to sum to 1; each chosen expert (`experts.{e}.w1` gate, `w3` up, `w2`
//! down, SwiGLU) runs on its own tokens, and the weighted outputs are summed into the residual.
//!
//! What the pruning pipeline sees: each expert's `[w1, w3]` and `[w2]` are input groups of their
//! own, shown only the inputs of the tokens routed to that expert, so every statistic of an
//! expert comes from its tokens alone. The router is a fixed linear: it stays dense. Checkpoints
//! are read in the per-expert layout the hub's Mixtral files (and transformers' `save_pretrained`)
//! use; the fused in-memory layout of transformers 5 (`mlp.experts.gate_up_proj`) is refused.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use tch::{Kind, Tensor};

use super::{
    Arch, Family, Load, Outer, Parts, QKV, Step, check_rope, decoder_outer, intern, intern_groups, load_linear, load_norms, qkv_attention,
};
use crate::config::{Architecture, AttentionWindow, BiasSlot, ConfigError, ModelConfig, RopeScaling, need, resolve_dtype, resolve_rope};
use crate::model::{Block, KvRepeat, Linear, ModelError, Norm, ScaleProducer, ScalingSite};
use crate::weights::Weights;

/// Mixtral's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixtral {
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// `num_local_experts`.
    pub experts: usize,
    /// `num_experts_per_tok`.
    pub top_k: usize,
    /// Per expert, the paths of its gate (`w1`), up (`w3`) and down (`w2`) projections.
    experts_paths: Vec<[&'static str; 3]>,
    /// q/k/v, o, then per expert `[w1, w3]` and `[w2]`.
    groups: &'static [&'static [&'static str]],
}

const ROUTER: &str = "block_sparse_moe.gate";
const O: &[&str] = &["self_attn.o_proj"];
const NORMS: [&str; 2] = ["input_layernorm", "post_attention_layernorm"];

/// config.json of Mixtral as written by transformers 4 or 5.
#[derive(Debug, Deserialize)]
struct RawConfig {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    tie_word_embeddings: Option<bool>,
    sliding_window: Option<usize>,
    num_local_experts: Option<usize>,
    num_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    // transformers 4 layout
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    torch_dtype: Option<String>,
    // transformers 5 layout
    rope_parameters: Option<Value>,
    dtype: Option<String>,
}

pub(crate) fn resolve(path: &Path, architecture: Architecture, json: Value) -> Result<ModelConfig, ConfigError> {
    let raw: RawConfig = serde_json::from_value(json).map_err(|err| ConfigError::Json { path: path.to_path_buf(), err })?;
    let unsupported = |key: &'static str, value: String| ConfigError::Unsupported { path: path.to_path_buf(), key, value };
    if let Some(act) = raw.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(unsupported("hidden_act", format!("{act:?} (supported: \"silu\")")));
    }
    let (rope_theta, rope_scaling) = resolve_rope(path, raw.rope_parameters.as_ref(), raw.rope_theta, raw.rope_scaling.as_ref(), 1e6)?;
    let experts = raw.num_local_experts.or(raw.num_experts).unwrap_or(8);
    let top_k = raw.num_experts_per_tok.unwrap_or(2);
    if experts == 0 || top_k == 0 || top_k > experts {
        return Err(ConfigError::Inconsistent {
            path: path.to_path_buf(),
            what: format!("num_experts_per_tok ({top_k}) must be between 1 and num_local_experts ({experts})"),
        });
    }
    let experts_paths: Vec<[&'static str; 3]> =
        (0..experts).map(|e| ["w1", "w3", "w2"].map(|w| intern(&format!("block_sparse_moe.experts.{e}.{w}")))).collect();
    let mut groups: Vec<Vec<&'static str>> = vec![QKV.to_vec(), O.to_vec()];
    for [w1, w3, w2] in &experts_paths {
        groups.push(vec![w1, w3]);
        groups.push(vec![w2]);
    }
    let hidden_size = need(path, "hidden_size", raw.hidden_size)?;
    let num_heads = need(path, "num_attention_heads", raw.num_attention_heads)?;
    Ok(ModelConfig {
        architecture,
        family: Family::Mixtral(Mixtral { rope_theta, rope_scaling, experts, top_k, experts_paths, groups: intern_groups(groups) }),
        vocab_size: need(path, "vocab_size", raw.vocab_size)?,
        hidden_size,
        intermediate_size: need(path, "intermediate_size", raw.intermediate_size)?,
        num_layers: need(path, "num_hidden_layers", raw.num_hidden_layers)?,
        num_heads,
        num_kv_heads: raw.num_key_value_heads.unwrap_or(num_heads),
        head_dim: raw.head_dim.unwrap_or(hidden_size.checked_div(num_heads).unwrap_or(0)),
        max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096 * 32),
        norm_eps: raw.rms_norm_eps.unwrap_or(1e-5),
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        dtype: resolve_dtype(path, raw.dtype.as_deref(), raw.torch_dtype.as_deref())?,
        // A window, when set, applies to every layer (as Mistral's).
        window: raw.sliding_window.map_or(AttentionWindow::Full, AttentionWindow::Sliding),
    })
}

impl Arch for Mixtral {
    fn prefix(&self, _: &Weights) -> &'static str {
        "model."
    }

    fn load_outer(&self, c: &ModelConfig, weights: &Weights, load: &Load<'_>) -> Result<Outer, ModelError> {
        if weights.contains("model.layers.0.mlp.experts.gate_up_proj") {
            return Err(ModelError::Layout(
                "the experts are stored fused (mlp.experts.gate_up_proj, transformers 5's in-memory layout); spindle reads the \
                 per-expert layout block_sparse_moe.experts.{e}.w1/w2/w3 that save_pretrained writes by default"
                    .into(),
            ));
        }
        decoder_outer(c, weights, load, Norm::rms)
    }

    fn load_block(&self, c: &ModelConfig, load: &Load<'_>) -> Result<Parts, ModelError> {
        let (h, i, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let (q_out, kv_out) = (c.num_heads * hd, c.num_kv_heads * hd);
        let attention = [(QKV[0], q_out, h), (QKV[1], kv_out, h), (QKV[2], kv_out, h), (O[0], h, q_out)];
        let mut linears: Vec<(&'static str, Linear)> = Vec::new();
        for (path, out, inp) in attention {
            linears.push((path, load_linear(load, path, out, inp, false)?));
        }
        for [w1, w3, w2] in &self.experts_paths {
            linears.push((w1, load_linear(load, w1, i, h, false)?));
            linears.push((w3, load_linear(load, w3, i, h, false)?));
            linears.push((w2, load_linear(load, w2, h, i, false)?));
        }
        let norms = load_norms(load, &NORMS, h, c.norm_eps, Norm::rms)?;
        let fixed = vec![(ROUTER, load_linear(load, ROUTER, self.experts, h, false)?)];
        Ok(Parts { linears, norms, fixed })
    }

    fn input_groups(&self) -> &'static [&'static [&'static str]] {
        self.groups
    }

    /// The pre-attention norm into q/k/v and v into o. The pre-MLP norm feeds every expert and
    /// the router, and an expert's up rows feed its down projection on its own tokens only: those
    /// places are absorbable, but their statistics would span groups of different tokens, so
    /// they are not offered yet.
    fn scaling_sites(&self, repeat: Option<KvRepeat>) -> Vec<ScalingSite> {
        vec![
            ScalingSite {
                label: "attn_in",
                producer: ScaleProducer::Norm("input_layernorm"),
                consumers: QKV,
                repeat: None,
                producer_rows: None,
            },
            ScalingSite { label: "attn_out", producer: ScaleProducer::Linear(QKV[2]), consumers: O, repeat, producer_rows: None },
        ]
    }

    fn rope(&self) -> Option<(f64, RopeScaling)> {
        Some((self.rope_theta, self.rope_scaling))
    }

    fn forward(&self, b: &Block, hidden: &Tensor, step: &mut Step<'_>) -> Tensor {
        let h = hidden + qkv_attention(b, &b.nrm("input_layernorm").forward(hidden), step, O, None);
        let x = b.nrm("post_attention_layernorm").forward(&h);
        let size = x.size();
        let flat = x.reshape([-1, *size.last().unwrap_or(&0)]);
        // transformers' MixtralTopKRouter: fp32 softmax over all experts, top-k, renormalised.
        let logits = b.fixed_at(ROUTER).forward(&flat);
        let probs = logits.softmax(-1, Kind::Float);
        let (top_w, top_i) = probs.topk(self.top_k as i64, -1, true, true);
        let top_w = &top_w / top_w.sum_dim_intlist([-1i64].as_slice(), true, Kind::Float);
        let mut out = flat.zeros_like();
        // Experts in ascending order, each on its tokens ordered by (choice slot, token), as
        // transformers' eager experts gather them.
        let chosen = top_i.transpose(0, 1);
        for (e, [w1, w3, w2]) in self.experts_paths.iter().enumerate() {
            let hits = chosen.eq(e as i64).nonzero();
            if hits.size()[0] == 0 {
                // Per sequence, an expert no token of the batch reaches has inputs of zeros.
                if step.by_sequence {
                    let none = Tensor::zeros([0], (Kind::Int64, flat.device()));
                    let intermediate = b.lin_at(w2).weight.size()[1];
                    let shape = [size[0], size[1]];
                    drop(step.routed_input(&flat.index_select(0, &none), 2 + 2 * e, self.groups[2 + 2 * e], &none, shape));
                    let act = Tensor::zeros([0, intermediate], (flat.kind(), flat.device()));
                    drop(step.routed_input(&act, 3 + 2 * e, self.groups[3 + 2 * e], &none, shape));
                }
                continue;
            }
            let (slot, token) = (hits.select(1, 0), hits.select(1, 1));
            let shape = [size[0], size[1]];
            let xe = step.routed_input(&flat.index_select(0, &token), 2 + 2 * e, self.groups[2 + 2 * e], &token, shape);
            let act = b.lin_at(w1).forward(&xe).silu() * b.lin_at(w3).forward(&xe);
            let act = step.routed_input(&act, 3 + 2 * e, self.groups[3 + 2 * e], &token, shape);
            let weight = top_w.index(&[Some(&token), Some(&slot)]).unsqueeze(-1);
            let ye = b.lin_at(w2).forward(&act) * weight;
            out = out.index_add(0, &token, &ye.to_kind(flat.kind()));
        }
        &h + out.reshape(size.as_slice())
    }

    /// No bias anywhere, and no config key that adds one.
    fn bias_slots(&self, _: Architecture) -> Vec<BiasSlot> {
        vec![BiasSlot::Impossible; self.groups.len()]
    }

    fn check(&self, c: &ModelConfig) -> Result<(), String> {
        check_rope(&[self.rope_theta], c.head_dim)
    }
}
