//! OPT (transformers' `modeling_opt.py`): LayerNorm, learned positions (offset 2), a ReLU MLP
//! (fc1, fc2), biases on every linear; pre-LN in most sizes, post-LN in OPT-350M, which also
//! projects between a narrower embedding and the hidden size.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use tch::Tensor;

use super::{Arch, Family, Load, Outer, Parts, QKV, Step, load_linear, qkv_attention};
use crate::config::{Architecture, AttentionWindow, BiasSlot, ConfigError, ModelConfig, RopeScaling, need, resolve_dtype};
use crate::model::{Block, KvRepeat, Linear, ModelError, Norm, ScaleProducer, ScalingSite};
use crate::weights::Weights;

/// OPT's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Opt {
    /// `do_layer_norm_before`: pre-LN (true, most sizes) or post-LN (OPT-350M).
    pub pre_norm: bool,
    /// `word_embed_proj_dim`; differs from `hidden_size` when project_in/project_out exist.
    pub word_embed_proj_dim: usize,
    /// `enable_bias`.
    pub bias: bool,
}

const LINEARS: [&str; 6] = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"];
const GROUPS: [&[&str]; 4] = [QKV, &["self_attn.out_proj"], &["fc1"], &["fc2"]];
const NORMS: [&str; 2] = ["self_attn_layer_norm", "final_layer_norm"];

/// config.json of OPT.
#[derive(Debug, Deserialize)]
struct RawConfig {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    ffn_dim: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    max_position_embeddings: Option<usize>,
    word_embed_proj_dim: Option<usize>,
    do_layer_norm_before: Option<bool>,
    activation_function: Option<String>,
    enable_bias: Option<bool>,
    layer_norm_elementwise_affine: Option<bool>,
    tie_word_embeddings: Option<bool>,
    #[serde(rename = "_remove_final_layer_norm")]
    remove_final_layer_norm: Option<bool>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
}

pub(crate) fn resolve(path: &Path, architecture: Architecture, json: Value) -> Result<ModelConfig, ConfigError> {
    let raw: RawConfig = serde_json::from_value(json).map_err(|err| ConfigError::Json { path: path.to_path_buf(), err })?;
    let unsupported = |key: &'static str, value: String| ConfigError::Unsupported { path: path.to_path_buf(), key, value };
    if let Some(act) = raw.activation_function.as_deref().filter(|a| *a != "relu") {
        return Err(unsupported("activation_function", format!("{act:?} (supported: \"relu\")")));
    }
    if raw.layer_norm_elementwise_affine == Some(false) {
        return Err(unsupported("layer_norm_elementwise_affine", "false".into()));
    }
    if raw.remove_final_layer_norm == Some(true) {
        return Err(unsupported("_remove_final_layer_norm", "true".into()));
    }
    let hidden_size = need(path, "hidden_size", raw.hidden_size)?;
    let num_heads = need(path, "num_attention_heads", raw.num_attention_heads)?;
    Ok(ModelConfig {
        architecture,
        family: Family::Opt(Opt {
            pre_norm: raw.do_layer_norm_before.unwrap_or(true),
            word_embed_proj_dim: raw.word_embed_proj_dim.unwrap_or(hidden_size),
            bias: raw.enable_bias.unwrap_or(true),
        }),
        vocab_size: need(path, "vocab_size", raw.vocab_size)?,
        hidden_size,
        intermediate_size: need(path, "ffn_dim", raw.ffn_dim)?,
        num_layers: need(path, "num_hidden_layers", raw.num_hidden_layers)?,
        num_heads,
        num_kv_heads: num_heads,
        head_dim: hidden_size.checked_div(num_heads).unwrap_or(0),
        max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
        // torch.nn.LayerNorm's default; OPT's config has no key for it.
        norm_eps: 1e-5,
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(true),
        dtype: resolve_dtype(path, raw.dtype.as_deref(), raw.torch_dtype.as_deref())?,
        window: AttentionWindow::Full,
    })
}

impl Arch for Opt {
    fn prefix(&self, weights: &Weights) -> &'static str {
        if weights.contains("model.decoder.embed_tokens.weight") { "model.decoder." } else { "decoder." }
    }

    fn load_outer(&self, c: &ModelConfig, weights: &Weights, load: &Load<'_>) -> Result<Outer, ModelError> {
        let (h, v, e) = (c.hidden_size, c.vocab_size, self.word_embed_proj_dim);
        let prefix = self.prefix(weights);
        let p = |n: &str| format!("{prefix}{n}");
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
        let final_norm = if self.pre_norm {
            Some(Norm::layer(load(&p("final_layer_norm.weight"), &[h])?, load(&p("final_layer_norm.bias"), &[h])?, c.norm_eps))
        } else {
            None
        };
        let lm_head = if weights.contains("lm_head.weight") || !c.tie_word_embeddings {
            load("lm_head.weight", &[v, e])?
        } else {
            embed_tokens.shallow_clone()
        };
        Ok(Outer { embed_tokens, embed_positions, project_in, project_out, final_norm, lm_head, embed_scale: None, final_softcap: None })
    }

    fn load_block(&self, c: &ModelConfig, load: &Load<'_>) -> Result<Parts, ModelError> {
        let (h, f) = (c.hidden_size, c.intermediate_size);
        let shapes = [(h, h), (h, h), (h, h), (h, h), (f, h), (h, f)];
        let mut linears: Vec<(&'static str, Linear)> = Vec::new();
        for (path, (out, inp)) in LINEARS.into_iter().zip(shapes) {
            linears.push((path, load_linear(load, path, out, inp, self.bias)?));
        }
        let mut norms = Vec::new();
        for path in NORMS {
            let weight = load(&format!("{path}.weight"), &[h])?;
            let bias = load(&format!("{path}.bias"), &[h])?;
            norms.push((path, Norm::layer(weight, bias, c.norm_eps)));
        }
        Ok(Parts::new(linears, norms))
    }

    fn input_groups(&self) -> &'static [&'static [&'static str]] {
        &GROUPS
    }

    /// As Llama's, with fc1 through its ReLU into fc2; post-norm OPT has no norm sites, since
    /// its q/k/v and fc1 read the residual stream itself.
    fn scaling_sites(&self, repeat: Option<KvRepeat>) -> Vec<ScalingSite> {
        let mut sites = Vec::new();
        if self.pre_norm {
            sites.push(ScalingSite {
                label: "attn_in",
                producer: ScaleProducer::Norm("self_attn_layer_norm"),
                consumers: QKV,
                repeat: None,
                producer_rows: None,
            });
        }
        sites.push(ScalingSite {
            label: "attn_out",
            producer: ScaleProducer::Linear("self_attn.v_proj"),
            consumers: GROUPS[1],
            repeat,
            producer_rows: None,
        });
        if self.pre_norm {
            sites.push(ScalingSite {
                label: "ffn_in",
                producer: ScaleProducer::Norm("final_layer_norm"),
                consumers: GROUPS[2],
                repeat: None,
                producer_rows: None,
            });
        }
        sites.push(ScalingSite {
            label: "ffn_out",
            producer: ScaleProducer::Linear("fc1"),
            consumers: GROUPS[3],
            repeat: None,
            producer_rows: None,
        });
        sites
    }

    fn rope(&self) -> Option<(f64, RopeScaling)> {
        None
    }

    fn forward(&self, b: &Block, hidden: &Tensor, step: &mut Step<'_>) -> Tensor {
        let attn_norm = b.nrm("self_attn_layer_norm");
        let ffn_norm = b.nrm("final_layer_norm");
        let x = if self.pre_norm { attn_norm.forward(hidden) } else { hidden.shallow_clone() };
        let mut h = hidden + qkv_attention(b, &x, step, GROUPS[1], None);
        if !self.pre_norm {
            h = attn_norm.forward(&h);
        }
        let x = step.input(&if self.pre_norm { ffn_norm.forward(&h) } else { h.shallow_clone() }, 2, GROUPS[2]);
        let act = step.input(&b.lin_at("fc1").forward(&x).relu(), 3, GROUPS[3]);
        let mut out = &h + b.lin_at("fc2").forward(&act);
        if !self.pre_norm {
            out = ffn_norm.forward(&out);
        }
        out
    }

    /// `enable_bias` covers every linear.
    fn bias_slots(&self, _: Architecture) -> Vec<BiasSlot> {
        vec![if self.bias { BiasSlot::Present } else { BiasSlot::Addable("enable_bias") }; 4]
    }

    fn check(&self, c: &ModelConfig) -> Result<(), String> {
        if !c.hidden_size.is_multiple_of(c.num_heads) {
            return Err(format!("hidden_size {} is not a multiple of num_attention_heads {}", c.hidden_size, c.num_heads));
        }
        Ok(())
    }
}
