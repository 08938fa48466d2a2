//! Gemma 2 and Gemma 3 (text): transformers' `modeling_gemma2.py` and `modeling_gemma3.py`.
//! A Llama-like decoder with these differences: RMSNorms that scale by `1 + w` in fp32, a norm
//! before and after each sublayer (the post-norm applied to the sublayer's output before the
//! residual add), embeddings multiplied by √hidden, a GeGLU MLP (tanh-approximated GELU),
//! attention scores scaled by `query_pre_attn_scalar^-½`, layers that alternate between a sliding
//! window and full attention, and soft-capping: of attention scores (Gemma 2 only; Gemma 3's code
//! ignores the key) and of the final logits. Gemma 3 adds per-head q/k norms before RoPE, and its
//! sliding layers rotate with their own base (`rope_local_base_freq`).
//! `tests/golden/FAMILIES.md` records each of these facts with its place in transformers.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use tch::Tensor;

use super::{Arch, Family, Load, Outer, Parts, QKV, Scores, Step, check_rope, decoder_outer, load_linear, load_norms, qkv_attention_in};
use crate::config::{Architecture, AttentionWindow, BiasSlot, ConfigError, ModelConfig, RopeScaling, need, resolve_dtype, resolve_rope};
use crate::model::{Block, KvRepeat, Linear, ModelError, Norm, ScaleProducer, ScalingSite};
use crate::weights::Weights;

/// Gemma's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma {
    /// Gemma 3 has per-head q/k norms and ignores the attention soft-cap.
    pub qk_norm: bool,
    /// RoPE of the full-attention layers.
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// RoPE of the sliding-window layers (Gemma 2: the same as the full ones).
    pub local_rope_theta: f64,
    pub local_rope_scaling: RopeScaling,
    /// Per layer: whether it attends through the sliding window.
    pub sliding: Vec<bool>,
    /// `sliding_window`: a query sees itself and the `window − 1` positions before it.
    pub window: usize,
    /// `query_pre_attn_scalar`: scores are scaled by its `-½` power.
    pub query_pre_attn_scalar: f64,
    /// `attn_logit_softcapping` (Gemma 2).
    pub attn_softcap: Option<f64>,
    /// `final_logit_softcapping`.
    pub final_softcap: Option<f64>,
    /// `attention_bias`: biases on q, k, v and o.
    pub attention_bias: bool,
}

const LINEARS: [&str; 7] =
    ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];
const GROUPS: [&[&str]; 4] = [QKV, &["self_attn.o_proj"], &["mlp.gate_proj", "mlp.up_proj"], &["mlp.down_proj"]];
const NORMS: [&str; 4] = ["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"];
const QK_NORMS: [&str; 2] = ["self_attn.q_norm", "self_attn.k_norm"];

/// config.json of Gemma 2 or 3 as written by transformers 4 or 5 (the soft-caps are read from
/// the JSON itself: an absent key and `null` mean different things).
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
    hidden_activation: Option<String>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    query_pre_attn_scalar: Option<f64>,
    sliding_window: Option<usize>,
    layer_types: Option<Vec<String>>,
    sliding_window_pattern: Option<usize>,
    use_bidirectional_attention: Option<bool>,
    // transformers 4 layout
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_local_base_freq: Option<f64>,
    torch_dtype: Option<String>,
    // transformers 5 layout
    rope_parameters: Option<Value>,
    dtype: Option<String>,
}

/// A soft-cap key: absent gives the class default, `null` turns it off.
fn softcap(path: &Path, json: &Value, key: &'static str, default: Option<f64>) -> Result<Option<f64>, ConfigError> {
    match json.get(key) {
        None => Ok(default),
        Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(cap) if cap.is_finite() && cap > 0.0 => Ok(Some(cap)),
            _ => Err(ConfigError::Unsupported { path: path.to_path_buf(), key, value: format!("{v} (a positive number or null)") }),
        },
    }
}

pub(crate) fn resolve(path: &Path, architecture: Architecture, json: Value) -> Result<ModelConfig, ConfigError> {
    let gemma3 = architecture == Architecture::Gemma3;
    let unsupported = |key: &'static str, value: String| ConfigError::Unsupported { path: path.to_path_buf(), key, value };
    // Gemma2Config defaults both caps on (50, 30); Gemma3TextConfig both off, and its attention
    // code never applies the attention cap.
    let attn_softcap = if gemma3 { None } else { softcap(path, &json, "attn_logit_softcapping", Some(50.0))? };
    let final_softcap = softcap(path, &json, "final_logit_softcapping", if gemma3 { None } else { Some(30.0) })?;
    let raw: RawConfig = serde_json::from_value(json).map_err(|err| ConfigError::Json { path: path.to_path_buf(), err })?;
    if let Some(act) = raw.hidden_activation.as_deref().filter(|a| *a != "gelu_pytorch_tanh") {
        return Err(unsupported("hidden_activation", format!("{act:?} (supported: \"gelu_pytorch_tanh\")")));
    }
    if raw.use_bidirectional_attention == Some(true) {
        return Err(unsupported("use_bidirectional_attention", "true (not a causal language model)".into()));
    }
    let num_layers = need(path, "num_hidden_layers", raw.num_hidden_layers)?;
    let sliding: Vec<bool> = match &raw.layer_types {
        Some(types) => {
            if types.len() != num_layers {
                return Err(ConfigError::Inconsistent {
                    path: path.to_path_buf(),
                    what: format!("layer_types has {} entries for num_hidden_layers = {num_layers}", types.len()),
                });
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(unsupported("layer_types", format!("{other:?} (supported: \"sliding_attention\", \"full_attention\")"))),
                })
                .collect::<Result<_, _>>()?
        }
        // Gemma 2: even layers slide. Gemma 3: every `sliding_window_pattern`-th layer (default
        // 6) is full. The private `_sliding_window_pattern` transformers writes is not read back
        // by it, so not here either.
        None if gemma3 => {
            let pattern = raw.sliding_window_pattern.unwrap_or(6).max(1);
            (0..num_layers).map(|i| !(i + 1).is_multiple_of(pattern)).collect()
        }
        None => (0..num_layers).map(|i| i % 2 == 0).collect(),
    };
    let window = raw.sliding_window.unwrap_or(4096);
    if window == 0 {
        return Err(unsupported("sliding_window", "0".into()));
    }
    let params = raw.rope_parameters.as_ref().filter(|v| !v.is_null());
    let ((rope_theta, rope_scaling), (local_rope_theta, local_rope_scaling)) = if gemma3 {
        match params.and_then(|p| p.get("full_attention")) {
            // transformers 5: one RoPE per layer type.
            Some(full) => {
                let local = match params.and_then(|p| p.get("sliding_attention")) {
                    Some(l) => resolve_rope(path, Some(l), None, None, 10000.0)?,
                    None => (10000.0, RopeScaling::None),
                };
                (resolve_rope(path, Some(full), None, None, 1e6)?, local)
            }
            // transformers 4: `rope_theta` and `rope_scaling` for the full layers, plain RoPE at
            // `rope_local_base_freq` for the sliding ones.
            None => (
                resolve_rope(path, params, raw.rope_theta, raw.rope_scaling.as_ref(), 1e6)?,
                (raw.rope_local_base_freq.unwrap_or(10000.0), RopeScaling::None),
            ),
        }
    } else {
        let rope = resolve_rope(path, params, raw.rope_theta, raw.rope_scaling.as_ref(), 10000.0)?;
        (rope, rope)
    };
    let hidden_size = need(path, "hidden_size", raw.hidden_size)?;
    let num_heads = need(path, "num_attention_heads", raw.num_attention_heads)?;
    Ok(ModelConfig {
        architecture,
        family: Family::Gemma(Gemma {
            qk_norm: gemma3,
            rope_theta,
            rope_scaling,
            local_rope_theta,
            local_rope_scaling,
            sliding,
            window,
            query_pre_attn_scalar: raw.query_pre_attn_scalar.unwrap_or(256.0),
            attn_softcap,
            final_softcap,
            attention_bias: raw.attention_bias.unwrap_or(false),
        }),
        vocab_size: need(path, "vocab_size", raw.vocab_size)?,
        hidden_size,
        intermediate_size: need(path, "intermediate_size", raw.intermediate_size)?,
        num_layers,
        num_heads,
        // The class defaults (Gemma-2-2B's and Gemma-3's), not hidden / heads.
        num_kv_heads: raw.num_key_value_heads.unwrap_or(4),
        head_dim: raw.head_dim.unwrap_or(256),
        max_position_embeddings: raw.max_position_embeddings.unwrap_or(8192),
        norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(true),
        dtype: resolve_dtype(path, raw.dtype.as_deref(), raw.torch_dtype.as_deref())?,
        // Per layer, through `Gemma::sliding`.
        window: AttentionWindow::Full,
    })
}

impl Arch for Gemma {
    fn prefix(&self, _: &Weights) -> &'static str {
        "model."
    }

    fn load_outer(&self, c: &ModelConfig, weights: &Weights, load: &Load<'_>) -> Result<Outer, ModelError> {
        Ok(Outer {
            embed_scale: Some((c.hidden_size as f64).sqrt()),
            final_softcap: self.final_softcap,
            ..decoder_outer(c, weights, load, Norm::rms_unit_offset)?
        })
    }

    fn load_block(&self, c: &ModelConfig, load: &Load<'_>) -> Result<Parts, ModelError> {
        let (h, i, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let (q_out, kv_out, b) = (c.num_heads * hd, c.num_kv_heads * hd, self.attention_bias);
        let shapes = [(q_out, h, b), (kv_out, h, b), (kv_out, h, b), (h, q_out, b), (i, h, false), (i, h, false), (h, i, false)];
        let mut linears: Vec<(&'static str, Linear)> = Vec::new();
        for (path, (out, inp, bias)) in LINEARS.into_iter().zip(shapes) {
            linears.push((path, load_linear(load, path, out, inp, bias)?));
        }
        let mut norms = load_norms(load, &NORMS, h, c.norm_eps, Norm::rms_unit_offset)?;
        if self.qk_norm {
            norms.extend(load_norms(load, &QK_NORMS, hd, c.norm_eps, Norm::rms_unit_offset)?);
        }
        Ok(Parts::new(linears, norms))
    }

    fn input_groups(&self) -> &'static [&'static [&'static str]] {
        &GROUPS
    }

    /// The pre-attention norm into q/k/v, v into o, the pre-feed-forward norm into gate/up, and
    /// up (through GeGLU's product) into down. The post-norms read a linear's output and
    /// normalise it, so they absorb no scaling of their input.
    fn scaling_sites(&self, repeat: Option<KvRepeat>) -> Vec<ScalingSite> {
        vec![
            ScalingSite {
                label: "attn_in",
                producer: ScaleProducer::Norm("input_layernorm"),
                consumers: QKV,
                repeat: None,
                producer_rows: None,
            },
            ScalingSite {
                label: "attn_out",
                producer: ScaleProducer::Linear("self_attn.v_proj"),
                consumers: GROUPS[1],
                repeat,
                producer_rows: None,
            },
            ScalingSite {
                label: "ffn_in",
                producer: ScaleProducer::Norm("pre_feedforward_layernorm"),
                consumers: GROUPS[2],
                repeat: None,
                producer_rows: None,
            },
            ScalingSite {
                label: "ffn_out",
                producer: ScaleProducer::Linear("mlp.up_proj"),
                consumers: GROUPS[3],
                repeat: None,
                producer_rows: None,
            },
        ]
    }

    fn rope(&self) -> Option<(f64, RopeScaling)> {
        Some((self.rope_theta, self.rope_scaling))
    }

    fn sliding_layers(&self) -> Option<(usize, Option<(f64, RopeScaling)>)> {
        self.sliding.iter().any(|s| *s).then_some((self.window, Some((self.local_rope_theta, self.local_rope_scaling))))
    }

    fn forward(&self, b: &Block, hidden: &Tensor, step: &mut Step<'_>) -> Tensor {
        let ctx = step.ctx_for(self.sliding.get(b.index()).copied().unwrap_or(false));
        let scores = Scores { scale: Some(self.query_pre_attn_scalar.powf(-0.5)), softcap: self.attn_softcap };
        let qk_norm = self.qk_norm.then_some((QK_NORMS[0], QK_NORMS[1]));
        let a = qkv_attention_in(b, &b.nrm("input_layernorm").forward(hidden), step, GROUPS[1], qk_norm, ctx, scores);
        let h = hidden + b.nrm("post_attention_layernorm").forward(&a);
        let x = step.input(&b.nrm("pre_feedforward_layernorm").forward(&h), 2, GROUPS[2]);
        let act = step.input(&(b.lin_at("mlp.gate_proj").forward(&x).gelu("tanh") * b.lin_at("mlp.up_proj").forward(&x)), 3, GROUPS[3]);
        &h + b.nrm("post_feedforward_layernorm").forward(&b.lin_at("mlp.down_proj").forward(&act))
    }

    /// `attention_bias` covers q/k/v and o; the MLP has none.
    fn bias_slots(&self, _: Architecture) -> Vec<BiasSlot> {
        use BiasSlot::{Addable, Impossible, Present};
        let attn = if self.attention_bias { Present } else { Addable("attention_bias") };
        vec![attn, attn, Impossible, Impossible]
    }

    fn check(&self, c: &ModelConfig) -> Result<(), String> {
        check_rope(&[self.rope_theta, self.local_rope_theta], c.head_dim)?;
        if !(self.query_pre_attn_scalar.is_finite() && self.query_pre_attn_scalar > 0.0) {
            return Err(format!("query_pre_attn_scalar must be positive and finite, got {}", self.query_pre_attn_scalar));
        }
        Ok(())
    }
}
