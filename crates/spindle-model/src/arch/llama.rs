//! The Llama family: Llama 1/2/3, Mistral, Qwen2 and Qwen3 are configurations of one decoder
//! (RMSNorm, RoPE, SwiGLU MLP), differing in biases, sliding windows and Qwen3's per-head q/k
//! norms. transformers' `modeling_llama.py`, `modeling_mistral.py`, `modeling_qwen2.py` and
//! `modeling_qwen3.py` are the references.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use tch::Tensor;

use super::{Arch, Family, Load, Outer, Parts, QKV, Step, check_rope, decoder_outer, load_linear, load_norms, qkv_attention};
use crate::config::{Architecture, AttentionWindow, BiasSlot, ConfigError, ModelConfig, RopeScaling, need, resolve_dtype, resolve_rope};
use crate::model::{Block, KvRepeat, Linear, ModelError, Norm, ScaleProducer, ScalingSite};
use crate::weights::Weights;

/// The settings that tell the members of the family apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Llama {
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// Biases on q_proj, k_proj, v_proj (Qwen2; Llama's and Qwen3's `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on o_proj (`attention_bias`).
    pub o_bias: bool,
    /// Biases on the MLP's linears (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Qwen3: RMSNorm over each head of q and k (`self_attn.q_norm`, `self_attn.k_norm`,
    /// `[head_dim]`) before RoPE.
    pub qk_norm: bool,
}

const LINEARS: [&str; 7] =
    ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];
const GROUPS: [&[&str]; 4] = [QKV, &["self_attn.o_proj"], &["mlp.gate_proj", "mlp.up_proj"], &["mlp.down_proj"]];
const NORMS: [&str; 2] = ["input_layernorm", "post_attention_layernorm"];
const QK_NORMS: [&str; 2] = ["self_attn.q_norm", "self_attn.k_norm"];

/// config.json of the family as written by transformers 4 or 5.
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
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    // transformers 4 layout
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    torch_dtype: Option<String>,
    // transformers 5 layout
    rope_parameters: Option<Value>,
    dtype: Option<String>,
    // Mistral / Qwen2 / Qwen3
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
}

pub(crate) fn resolve(path: &Path, architecture: Architecture, json: Value) -> Result<ModelConfig, ConfigError> {
    let raw: RawConfig = serde_json::from_value(json).map_err(|err| ConfigError::Json { path: path.to_path_buf(), err })?;
    let hidden_size = need(path, "hidden_size", raw.hidden_size)?;
    let num_heads = need(path, "num_attention_heads", raw.num_attention_heads)?;
    if let Some(act) = raw.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(ConfigError::Unsupported {
            path: path.to_path_buf(),
            key: "hidden_act",
            value: format!("{act:?} (supported: \"silu\")"),
        });
    }
    let (rope_theta, rope_scaling) = resolve_rope(path, raw.rope_parameters.as_ref(), raw.rope_theta, raw.rope_scaling.as_ref(), 10000.0)?;
    let window = match (architecture, raw.sliding_window, raw.use_sliding_window) {
        // Mistral applies its window (through the attention mask) whenever one is set.
        (Architecture::Mistral, Some(w), _) => AttentionWindow::Sliding(w),
        // Qwen2 and Qwen3 slide only with use_sliding_window, and then only in the layers from
        // max_window_layers on: one mask per layer group, which spindle does not build yet.
        // Published configs set the flag false and carry an unused sliding_window.
        (Architecture::Qwen2 | Architecture::Qwen3, _, Some(true)) => {
            return Err(ConfigError::Unsupported {
                path: path.to_path_buf(),
                key: "use_sliding_window",
                value: "true (per-layer sliding windows are not supported)".into(),
            });
        }
        _ => AttentionWindow::Full,
    };
    let attention_bias = raw.attention_bias.unwrap_or(false);
    Ok(ModelConfig {
        architecture,
        family: Family::Llama(Llama {
            rope_theta,
            rope_scaling,
            qkv_bias: attention_bias || architecture == Architecture::Qwen2,
            o_bias: attention_bias,
            // Only Llama's code reads mlp_bias; the others' MLPs have no biases.
            mlp_bias: architecture == Architecture::Llama && raw.mlp_bias.unwrap_or(false),
            qk_norm: architecture == Architecture::Qwen3,
        }),
        vocab_size: need(path, "vocab_size", raw.vocab_size)?,
        hidden_size,
        intermediate_size: need(path, "intermediate_size", raw.intermediate_size)?,
        num_layers: need(path, "num_hidden_layers", raw.num_hidden_layers)?,
        num_heads,
        num_kv_heads: raw.num_key_value_heads.unwrap_or(num_heads),
        // Qwen3Config's class default is 128, not hidden / heads.
        head_dim: raw.head_dim.unwrap_or(if architecture == Architecture::Qwen3 {
            128
        } else {
            hidden_size.checked_div(num_heads).unwrap_or(0)
        }),
        max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
        norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        dtype: resolve_dtype(path, raw.dtype.as_deref(), raw.torch_dtype.as_deref())?,
        window,
    })
}

impl Arch for Llama {
    fn prefix(&self, _: &Weights) -> &'static str {
        "model."
    }

    fn load_outer(&self, c: &ModelConfig, weights: &Weights, load: &Load<'_>) -> Result<Outer, ModelError> {
        decoder_outer(c, weights, load, Norm::rms)
    }

    fn load_block(&self, c: &ModelConfig, load: &Load<'_>) -> Result<Parts, ModelError> {
        let (h, i, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let (q_out, kv_out) = (c.num_heads * hd, c.num_kv_heads * hd);
        let shapes = [
            (q_out, h, self.qkv_bias),
            (kv_out, h, self.qkv_bias),
            (kv_out, h, self.qkv_bias),
            (h, q_out, self.o_bias),
            (i, h, self.mlp_bias),
            (i, h, self.mlp_bias),
            (h, i, self.mlp_bias),
        ];
        let mut linears: Vec<(&'static str, Linear)> = Vec::new();
        for (path, (out, inp, bias)) in LINEARS.into_iter().zip(shapes) {
            linears.push((path, load_linear(load, path, out, inp, bias)?));
        }
        let mut norms = load_norms(load, &NORMS, h, c.norm_eps, Norm::rms)?;
        if self.qk_norm {
            norms.extend(load_norms(load, &QK_NORMS, hd, c.norm_eps, Norm::rms)?);
        }
        Ok(Parts::new(linears, norms))
    }

    fn input_groups(&self) -> &'static [&'static [&'static str]] {
        &GROUPS
    }

    /// The pre-attention norm into q/k/v, v into o, the pre-MLP norm into gate/up and up (through
    /// SwiGLU's product) into down. q/k are no site: RoPE mixes channel pairs.
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
                producer: ScaleProducer::Norm("post_attention_layernorm"),
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

    fn forward(&self, b: &Block, hidden: &Tensor, step: &mut Step<'_>) -> Tensor {
        let qk_norm = self.qk_norm.then_some((QK_NORMS[0], QK_NORMS[1]));
        let h = hidden + qkv_attention(b, &b.nrm("input_layernorm").forward(hidden), step, GROUPS[1], qk_norm);
        let x = step.input(&b.nrm("post_attention_layernorm").forward(&h), 2, GROUPS[2]);
        let act = step.input(&(b.lin_at("mlp.gate_proj").forward(&x).silu() * b.lin_at("mlp.up_proj").forward(&x)), 3, GROUPS[3]);
        &h + b.lin_at("mlp.down_proj").forward(&act)
    }

    /// Llama's `attention_bias` covers q/k/v and o (as does Qwen3's), `mlp_bias` the MLP; Qwen2
    /// has q/k/v biases and no key for more; Mistral none.
    fn bias_slots(&self, architecture: Architecture) -> Vec<BiasSlot> {
        use BiasSlot::{Addable, Impossible, Present};
        let attn = if self.qkv_bias && self.o_bias { Present } else { Addable("attention_bias") };
        match architecture {
            Architecture::Llama => {
                let mlp = if self.mlp_bias { Present } else { Addable("mlp_bias") };
                vec![attn, attn, mlp, mlp]
            }
            Architecture::Qwen3 => vec![attn, attn, Impossible, Impossible],
            Architecture::Qwen2 => vec![Present, Impossible, Impossible, Impossible],
            _ => vec![Impossible; 4],
        }
    }

    fn check(&self, c: &ModelConfig) -> Result<(), String> {
        check_rope(&[self.rope_theta], c.head_dim)
    }
}
