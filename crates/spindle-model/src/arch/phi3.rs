//! Phi-3 (transformers' `modeling_phi3.py`): a Llama-like decoder whose q, k and v projections
//! are one fused `qkv_proj` (all q rows, then k, then v) and whose gate and up projections are
//! one fused `gate_up_proj` (gate rows, then up). Each fused matrix is pruned as the one linear
//! it is, and the scaling sites of v and up are their row ranges inside it.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use tch::Tensor;

use super::{
    Arch, Family, Load, Outer, Parts, Scores, Step, apply_rope, attend, check_rope, decoder_outer, load_linear, load_norms, split_heads,
};
use crate::config::{Architecture, AttentionWindow, BiasSlot, ConfigError, ModelConfig, RopeScaling, need, resolve_dtype, resolve_rope};
use crate::model::{Block, KvRepeat, Linear, ModelError, Norm, ScaleProducer, ScalingSite};
use crate::weights::Weights;

/// Phi-3's settings, with the sizes that locate the fused row ranges.
#[derive(Debug, Clone, PartialEq)]
pub struct Phi3 {
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// Rows of q (`heads · head_dim`) and of each of k and v (`kv_heads · head_dim`) in qkv_proj.
    pub q_rows: i64,
    pub kv_rows: i64,
    /// Rows of each of gate and up in gate_up_proj (`intermediate_size`).
    pub ffn_rows: i64,
}

const LINEARS: [&str; 4] = ["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"];
const GROUPS: [&[&str]; 4] = [&["self_attn.qkv_proj"], &["self_attn.o_proj"], &["mlp.gate_up_proj"], &["mlp.down_proj"]];
const NORMS: [&str; 2] = ["input_layernorm", "post_attention_layernorm"];

/// config.json of Phi-3 as written by transformers 4 or 5.
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
    // transformers 4 layout
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    partial_rotary_factor: Option<f64>,
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
    let params = raw.rope_parameters.as_ref().filter(|v| !v.is_null());
    let partial = params.and_then(|p| p.get("partial_rotary_factor")).and_then(Value::as_f64).or(raw.partial_rotary_factor).unwrap_or(1.0);
    if partial != 1.0 {
        return Err(unsupported("partial_rotary_factor", format!("{partial} (supported: 1.0, rotary over the whole head)")));
    }
    let (rope_theta, rope_scaling) = resolve_rope(path, params, raw.rope_theta, raw.rope_scaling.as_ref(), 10000.0)?;
    let hidden_size = need(path, "hidden_size", raw.hidden_size)?;
    let num_heads = need(path, "num_attention_heads", raw.num_attention_heads)?;
    let num_kv_heads = raw.num_key_value_heads.unwrap_or(num_heads);
    // Phi3Config has no head_dim field, but transformers reads one a file carries.
    let head_dim = raw.head_dim.unwrap_or(hidden_size.checked_div(num_heads).unwrap_or(0));
    let intermediate_size = need(path, "intermediate_size", raw.intermediate_size)?;
    Ok(ModelConfig {
        architecture,
        family: Family::Phi3(Phi3 {
            rope_theta,
            rope_scaling,
            q_rows: (num_heads * head_dim) as i64,
            kv_rows: (num_kv_heads * head_dim) as i64,
            ffn_rows: intermediate_size as i64,
        }),
        vocab_size: need(path, "vocab_size", raw.vocab_size)?,
        hidden_size,
        intermediate_size,
        num_layers: need(path, "num_hidden_layers", raw.num_hidden_layers)?,
        num_heads,
        num_kv_heads,
        head_dim,
        max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
        norm_eps: raw.rms_norm_eps.unwrap_or(1e-5),
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        dtype: resolve_dtype(path, raw.dtype.as_deref(), raw.torch_dtype.as_deref())?,
        // A window, when set, applies to every layer.
        window: raw.sliding_window.map_or(AttentionWindow::Full, AttentionWindow::Sliding),
    })
}

impl Arch for Phi3 {
    fn prefix(&self, _: &Weights) -> &'static str {
        "model."
    }

    fn load_outer(&self, c: &ModelConfig, weights: &Weights, load: &Load<'_>) -> Result<Outer, ModelError> {
        decoder_outer(c, weights, load, Norm::rms)
    }

    fn load_block(&self, c: &ModelConfig, load: &Load<'_>) -> Result<Parts, ModelError> {
        let h = c.hidden_size;
        let (q, kv, i) = (self.q_rows as usize, self.kv_rows as usize, c.intermediate_size);
        let shapes = [(q + 2 * kv, h), (h, q), (2 * i, h), (h, i)];
        let mut linears: Vec<(&'static str, Linear)> = Vec::new();
        for (path, (out, inp)) in LINEARS.into_iter().zip(shapes) {
            linears.push((path, load_linear(load, path, out, inp, false)?));
        }
        let norms = load_norms(load, &NORMS, h, c.norm_eps, Norm::rms)?;
        Ok(Parts::new(linears, norms))
    }

    fn input_groups(&self) -> &'static [&'static [&'static str]] {
        &GROUPS
    }

    /// The pre-attention norm into qkv_proj, qkv_proj's v rows into o_proj, the pre-MLP norm into
    /// gate_up_proj, and gate_up_proj's up rows (through SwiGLU's product) into down_proj.
    fn scaling_sites(&self, repeat: Option<KvRepeat>) -> Vec<ScalingSite> {
        let site = |label, producer, consumers, repeat, producer_rows| ScalingSite { label, producer, consumers, repeat, producer_rows };
        vec![
            site("attn_in", ScaleProducer::Norm("input_layernorm"), GROUPS[0], None, None),
            site(
                "attn_out",
                ScaleProducer::Linear("self_attn.qkv_proj"),
                GROUPS[1],
                repeat,
                Some((self.q_rows + self.kv_rows, self.kv_rows)),
            ),
            site("ffn_in", ScaleProducer::Norm("post_attention_layernorm"), GROUPS[2], None, None),
            site("ffn_out", ScaleProducer::Linear("mlp.gate_up_proj"), GROUPS[3], None, Some((self.ffn_rows, self.ffn_rows))),
        ]
    }

    fn rope(&self) -> Option<(f64, RopeScaling)> {
        Some((self.rope_theta, self.rope_scaling))
    }

    fn forward(&self, b: &Block, hidden: &Tensor, step: &mut Step<'_>) -> Tensor {
        let (heads, kv_heads, hd) = b.heads();
        let x = step.input(&b.nrm("input_layernorm").forward(hidden), 0, GROUPS[0]);
        let qkv = b.lin_at("self_attn.qkv_proj").forward(&x);
        let mut q = split_heads(qkv.narrow(-1, 0, self.q_rows), heads, hd);
        let mut k = split_heads(qkv.narrow(-1, self.q_rows, self.kv_rows), kv_heads, hd);
        let v = split_heads(qkv.narrow(-1, self.q_rows + self.kv_rows, self.kv_rows), kv_heads, hd);
        let ctx = step.ctx;
        if let Some((cos, sin)) = &ctx.rope {
            q = apply_rope(&q, cos, sin);
            k = apply_rope(&k, cos, sin);
        }
        let y = attend(b, &q, k, v, step, ctx, Scores::default());
        let y = step.input(&y, 1, GROUPS[1]);
        let h = hidden + b.lin_at("self_attn.o_proj").forward(&y);
        let x = step.input(&b.nrm("post_attention_layernorm").forward(&h), 2, GROUPS[2]);
        let gate_up = b.lin_at("mlp.gate_up_proj").forward(&x);
        let (gate, up) = (gate_up.narrow(-1, 0, self.ffn_rows), gate_up.narrow(-1, self.ffn_rows, self.ffn_rows));
        let act = step.input(&(up * gate.silu()), 3, GROUPS[3]);
        &h + b.lin_at("mlp.down_proj").forward(&act)
    }

    /// Phi-3's linears are built without biases, and no config key adds them.
    fn bias_slots(&self, _: Architecture) -> Vec<BiasSlot> {
        vec![BiasSlot::Impossible; 4]
    }

    fn check(&self, c: &ModelConfig) -> Result<(), String> {
        check_rope(&[self.rope_theta], c.head_dim)
    }
}
