//! `config.json` in two stages: a raw serde struct per architecture family, exactly as the file is
//! written (every field optional, both the transformers-4 and transformers-5 key layouts), then a
//! resolved [`ModelConfig`] with no `Option` left in it. Everything a forward pass depends on is
//! decided here, once; an unknown architecture or an unsupported setting is an error naming it.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// The architectures spindle runs (the `architectures` entry of config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `LlamaForCausalLM` (LLaMA 1/2/3, SmolLM2, TinyLlama, ...).
    Llama,
    /// `MistralForCausalLM`.
    Mistral,
    /// `Qwen2ForCausalLM` (q/k/v biases).
    Qwen2,
    /// `OPTForCausalLM`.
    Opt,
}

impl Architecture {
    /// The Hugging Face class name, as written in `architectures`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Opt => "OPTForCausalLM",
        }
    }

    fn from_hf_name(name: &str) -> Option<Architecture> {
        [Architecture::Llama, Architecture::Mistral, Architecture::Qwen2, Architecture::Opt].into_iter().find(|a| a.hf_name() == name)
    }
}

/// The dtype the checkpoint declares (`torch_dtype` in transformers 4, `dtype` in 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn kind(self) -> tch::Kind {
        match self {
            DType::F32 => tch::Kind::Float,
            DType::F16 => tch::Kind::Half,
            DType::BF16 => tch::Kind::BFloat16,
        }
    }

    /// The name transformers writes.
    pub fn hf_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        }
    }

    fn parse(s: &str) -> Option<DType> {
        match s {
            "float32" | "fp32" => Some(DType::F32),
            "float16" | "fp16" => Some(DType::F16),
            "bfloat16" | "bf16" => Some(DType::BF16),
            _ => None,
        }
    }
}

/// Rotary position embedding frequencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (transformers' "linear").
    Linear { factor: f64 },
    /// Llama-3's frequency-dependent scaling (transformers' "llama3").
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: usize },
}

/// Which past positions a query attends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionWindow {
    /// Every earlier position (causal).
    Full,
    /// Only the last `n` positions, itself included (Mistral's `sliding_window`).
    Sliding(usize),
}

/// What differs between the two families of decoder that spindle runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Family {
    /// Llama, Mistral, Qwen2: RMSNorm, RoPE, SwiGLU MLP (gate_proj, up_proj, down_proj).
    LlamaLike {
        rope_theta: f64,
        rope_scaling: RopeScaling,
        /// Biases on q_proj, k_proj, v_proj (Qwen2; Llama's `attention_bias`).
        qkv_bias: bool,
        /// Bias on o_proj (Llama's `attention_bias`).
        o_bias: bool,
        /// Biases on the MLP's linears (Llama's `mlp_bias`).
        mlp_bias: bool,
    },
    /// OPT: LayerNorm, learned positions (offset 2), ReLU MLP (fc1, fc2), biases everywhere.
    Opt {
        /// `do_layer_norm_before`: pre-LN (true, most sizes) or post-LN (OPT-350M).
        pre_norm: bool,
        /// `word_embed_proj_dim`; differs from `hidden_size` when project_in/project_out exist.
        word_embed_proj_dim: usize,
        /// `enable_bias`.
        bias: bool,
    },
}

/// A config.json resolved: every value the forward pass needs, no `Option` left.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Key/value heads (GQA); equal to `num_heads` without GQA.
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub dtype: DType,
    pub window: AttentionWindow,
}

/// A config.json that cannot be used, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {io}")]
    Io { path: PathBuf, io: std::io::Error },
    #[error("{path}: not valid JSON for a model config: {err}")]
    Json { path: PathBuf, err: serde_json::Error },
    #[error("{path}: unknown architecture {name:?} (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, OPTForCausalLM)")]
    UnknownArchitecture { path: PathBuf, name: String },
    #[error("{path}: no `architectures` entry")]
    NoArchitecture { path: PathBuf },
    #[error("{path}: required key `{key}` is missing")]
    Missing { path: PathBuf, key: &'static str },
    #[error("{path}: unsupported {key} = {value}")]
    Unsupported { path: PathBuf, key: &'static str, value: String },
    #[error("{path}: inconsistent config: {what}")]
    Inconsistent { path: PathBuf, what: String },
}

/// config.json of the Llama family as written by transformers 4 or 5.
#[derive(Debug, Deserialize)]
struct RawLlamaConfig {
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
    // Mistral / Qwen2
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
}

/// config.json of OPT.
#[derive(Debug, Deserialize)]
struct RawOptConfig {
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

/// Whether the linears of an input group carry biases: they do; they can, once a config.json key
/// is set true (transformers then loads a bias for every linear that key covers); or the
/// architecture's code has none there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasSlot {
    Present,
    Addable(&'static str),
    Impossible,
}

impl ModelConfig {
    /// Per input group in forward order (q/k/v, o, gate/up or fc1, down or fc2): whether its
    /// linears carry biases. Llama's `attention_bias` covers q/k/v and o, `mlp_bias` the MLP;
    /// Qwen2 has q/k/v biases and no key for more; Mistral none; OPT's `enable_bias` covers every
    /// linear.
    pub fn bias_slots(&self) -> [BiasSlot; 4] {
        use BiasSlot::{Addable, Impossible, Present};
        match (&self.family, self.architecture) {
            (Family::Opt { bias: true, .. }, _) => [Present; 4],
            (Family::Opt { bias: false, .. }, _) => [Addable("enable_bias"); 4],
            (Family::LlamaLike { qkv_bias, o_bias, mlp_bias, .. }, Architecture::Llama) => {
                let attn = if *qkv_bias && *o_bias { Present } else { Addable("attention_bias") };
                let mlp = if *mlp_bias { Present } else { Addable("mlp_bias") };
                [attn, attn, mlp, mlp]
            }
            (Family::LlamaLike { qkv_bias: true, .. }, Architecture::Qwen2) => [Present, Impossible, Impossible, Impossible],
            _ => [Impossible; 4],
        }
    }

    /// Reads and resolves `path` (a config.json).
    pub fn from_file(path: &Path) -> Result<ModelConfig, ConfigError> {
        let text = spindle_io::read_to_string(path).map_err(|io| ConfigError::Io { path: path.to_path_buf(), io })?;
        Self::from_json(path, &text)
    }

    /// Resolves config.json text; `path` is only used in messages.
    pub fn from_json(path: &Path, text: &str) -> Result<ModelConfig, ConfigError> {
        let p = || path.to_path_buf();
        let json: Value = serde_json::from_str(text).map_err(|err| ConfigError::Json { path: p(), err })?;
        let name = json
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .ok_or_else(|| ConfigError::NoArchitecture { path: p() })?;
        let architecture =
            Architecture::from_hf_name(name).ok_or_else(|| ConfigError::UnknownArchitecture { path: p(), name: name.to_owned() })?;
        let config = match architecture {
            Architecture::Opt => {
                let raw: RawOptConfig = serde_json::from_value(json).map_err(|err| ConfigError::Json { path: p(), err })?;
                resolve_opt(path, raw)?
            }
            _ => {
                let raw: RawLlamaConfig = serde_json::from_value(json).map_err(|err| ConfigError::Json { path: p(), err })?;
                resolve_llama(path, architecture, raw)?
            }
        };
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError::Inconsistent { path: path.to_path_buf(), what });
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.num_layers == 0 || self.hidden_size == 0 {
            return bad("hidden_size, num_hidden_layers and the head counts must be positive".into());
        }
        if self.vocab_size == 0 || self.intermediate_size == 0 || self.max_position_embeddings == 0 {
            return bad(format!(
                "vocab_size ({}), the feed-forward size ({}) and max_position_embeddings ({}) must be positive",
                self.vocab_size, self.intermediate_size, self.max_position_embeddings
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return bad(format!("the norm epsilon (rms_norm_eps) must be finite and not negative, got {}", self.norm_eps));
        }
        if let Family::LlamaLike { rope_theta, .. } = self.family
            && !(rope_theta.is_finite() && rope_theta > 0.0)
        {
            return bad(format!("rope_theta must be positive and finite, got {rope_theta}"));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!("num_attention_heads {} is not a multiple of num_key_value_heads {}", self.num_heads, self.num_kv_heads));
        }
        if let Family::Opt { .. } = self.family
            && !self.hidden_size.is_multiple_of(self.num_heads)
        {
            return bad(format!("hidden_size {} is not a multiple of num_attention_heads {}", self.hidden_size, self.num_heads));
        }
        if let Family::LlamaLike { .. } = self.family
            && !self.head_dim.is_multiple_of(2)
        {
            return bad(format!("head_dim {} is odd; rotary embeddings need pairs", self.head_dim));
        }
        Ok(())
    }
}

fn need<T>(path: &Path, key: &'static str, v: Option<T>) -> Result<T, ConfigError> {
    v.ok_or_else(|| ConfigError::Missing { path: path.to_path_buf(), key })
}

fn resolve_dtype(path: &Path, tf5: Option<&str>, tf4: Option<&str>) -> Result<DType, ConfigError> {
    match tf5.or(tf4) {
        None => Ok(DType::F32),
        Some(s) => DType::parse(s).ok_or_else(|| ConfigError::Unsupported { path: path.to_path_buf(), key: "dtype", value: s.to_owned() }),
    }
}

fn f64_field(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// RoPE theta and scaling from either layout: transformers 4 writes `rope_theta` and
/// `rope_scaling` at the top level; transformers 5 writes both inside `rope_parameters`.
fn resolve_rope(path: &Path, raw: &RawLlamaConfig) -> Result<(f64, RopeScaling), ConfigError> {
    let unsupported = |key: &'static str, value: String| ConfigError::Unsupported { path: path.to_path_buf(), key, value };
    let params = raw.rope_parameters.as_ref().filter(|v| !v.is_null());
    let theta = params.and_then(|p| f64_field(p, "rope_theta")).or(raw.rope_theta).unwrap_or(10000.0);
    let scaling = params.or(raw.rope_scaling.as_ref().filter(|v| !v.is_null()));
    let Some(scaling) = scaling else { return Ok((theta, RopeScaling::None)) };
    let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Value::as_str).unwrap_or("default");
    let factor = || f64_field(scaling, "factor").ok_or_else(|| unsupported("rope_scaling.factor", "missing".into()));
    let rope =
        match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: factor()? },
            "llama3" => RopeScaling::Llama3 {
                factor: factor()?,
                low_freq_factor: f64_field(scaling, "low_freq_factor").unwrap_or(1.0),
                high_freq_factor: f64_field(scaling, "high_freq_factor").unwrap_or(4.0),
                original_max_position_embeddings: scaling
                    .get("original_max_position_embeddings")
                    .and_then(Value::as_u64)
                    .map(|v| v as usize)
                    .ok_or_else(|| unsupported("rope_scaling.original_max_position_embeddings", "missing".into()))?,
            },
            other => return Err(unsupported("rope_scaling.rope_type", format!("{other:?} (supported: default, linear, llama3)"))),
        };
    Ok((theta, rope))
}

fn resolve_llama(path: &Path, architecture: Architecture, raw: RawLlamaConfig) -> Result<ModelConfig, ConfigError> {
    let hidden_size = need(path, "hidden_size", raw.hidden_size)?;
    let num_heads = need(path, "num_attention_heads", raw.num_attention_heads)?;
    if let Some(act) = raw.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(ConfigError::Unsupported {
            path: path.to_path_buf(),
            key: "hidden_act",
            value: format!("{act:?} (supported: \"silu\")"),
        });
    }
    let (rope_theta, rope_scaling) = resolve_rope(path, &raw)?;
    let window = match (architecture, raw.sliding_window, raw.use_sliding_window) {
        // Mistral applies its window (through the attention mask) whenever one is set.
        (Architecture::Mistral, Some(w), _) => AttentionWindow::Sliding(w),
        // Qwen2 slides only with use_sliding_window, and then only in the layers from
        // max_window_layers on: one mask per layer group, which spindle does not build yet.
        // Published Qwen2 configs set the flag false and carry an unused sliding_window.
        (Architecture::Qwen2, _, Some(true)) => {
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
        family: Family::LlamaLike {
            rope_theta,
            rope_scaling,
            qkv_bias: attention_bias || architecture == Architecture::Qwen2,
            o_bias: attention_bias,
            mlp_bias: raw.mlp_bias.unwrap_or(false),
        },
        vocab_size: need(path, "vocab_size", raw.vocab_size)?,
        hidden_size,
        intermediate_size: need(path, "intermediate_size", raw.intermediate_size)?,
        num_layers: need(path, "num_hidden_layers", raw.num_hidden_layers)?,
        num_heads,
        num_kv_heads: raw.num_key_value_heads.unwrap_or(num_heads),
        head_dim: raw.head_dim.unwrap_or(hidden_size.checked_div(num_heads).unwrap_or(0)),
        max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
        norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        dtype: resolve_dtype(path, raw.dtype.as_deref(), raw.torch_dtype.as_deref())?,
        window,
    })
}

fn resolve_opt(path: &Path, raw: RawOptConfig) -> Result<ModelConfig, ConfigError> {
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
        architecture: Architecture::Opt,
        family: Family::Opt {
            pre_norm: raw.do_layer_norm_before.unwrap_or(true),
            word_embed_proj_dim: raw.word_embed_proj_dim.unwrap_or(hidden_size),
            bias: raw.enable_bias.unwrap_or(true),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig, ConfigError> {
        ModelConfig::from_json(Path::new("m/config.json"), text)
    }

    const SMOLLM2: &str = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":576,"intermediate_size":1536,
        "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"vocab_size":49152,
        "rms_norm_eps":1e-5,"rope_theta":100000,"tie_word_embeddings":true,"torch_dtype":"bfloat16",
        "max_position_embeddings":8192,"hidden_act":"silu"}"#;

    #[test]
    fn a_transformers4_llama_config_resolves() {
        let c = parse(SMOLLM2).unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (9, 3, 64));
        assert_eq!(c.dtype, DType::BF16);
        assert!(c.tie_word_embeddings);
        assert_eq!(
            c.family,
            Family::LlamaLike { rope_theta: 100000.0, rope_scaling: RopeScaling::None, qkv_bias: false, o_bias: false, mlp_bias: false }
        );
        assert_eq!(c.window, AttentionWindow::Full);
    }

    #[test]
    fn both_layouts_of_llama3_rope_scaling_resolve_alike() {
        let tf4 = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":128,"rope_theta":500000.0,"torch_dtype":"float32",
            "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":16}}"#;
        let tf5 = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":128,"dtype":"float32",
            "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":16}}"#;
        let (a, b) = (parse(tf4).unwrap(), parse(tf5).unwrap());
        assert_eq!(a, b);
        let Family::LlamaLike { rope_theta, rope_scaling, .. } = a.family else { panic!("llama family") };
        assert_eq!(rope_theta, 500000.0);
        assert_eq!(
            rope_scaling,
            RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 16 }
        );
        // transformers 5's plain layout.
        let plain = tf5.replace(r#""rope_type":"llama3""#, r#""rope_type":"default""#);
        assert!(
            matches!(parse(&plain).unwrap().family, Family::LlamaLike { rope_scaling: RopeScaling::None, rope_theta, .. } if rope_theta == 500000.0)
        );
    }

    #[test]
    fn sliding_windows_follow_each_architecture() {
        let base = r#""hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":128,"sliding_window":6"#;
        let mistral = parse(&format!(r#"{{"architectures":["MistralForCausalLM"],{base}}}"#)).unwrap();
        assert_eq!(mistral.window, AttentionWindow::Sliding(6));
        let qwen = parse(&format!(r#"{{"architectures":["Qwen2ForCausalLM"],{base},"use_sliding_window":false}}"#)).unwrap();
        assert_eq!(qwen.window, AttentionWindow::Full);
        assert!(matches!(qwen.family, Family::LlamaLike { qkv_bias: true, o_bias: false, .. }));
        let err = parse(&format!(r#"{{"architectures":["Qwen2ForCausalLM"],{base},"use_sliding_window":true}}"#)).unwrap_err();
        assert_eq!(err.to_string(), "m/config.json: unsupported use_sliding_window = true (per-layer sliding windows are not supported)");
    }

    #[test]
    fn opt_defaults_and_project_dims() {
        let c = parse(
            r#"{"architectures":["OPTForCausalLM"],"hidden_size":1024,"ffn_dim":4096,"num_hidden_layers":24,
            "num_attention_heads":16,"vocab_size":50272,"word_embed_proj_dim":512,"do_layer_norm_before":false,
            "activation_function":"relu","torch_dtype":"float16","max_position_embeddings":2048}"#,
        )
        .unwrap();
        assert_eq!(c.family, Family::Opt { pre_norm: false, word_embed_proj_dim: 512, bias: true });
        assert_eq!((c.head_dim, c.num_kv_heads, c.dtype), (64, 16, DType::F16));
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn unknown_and_unsupported_settings_are_named() {
        let err = parse(r#"{"architectures":["GPT2LMHeadModel"]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m/config.json: unknown architecture \"GPT2LMHeadModel\" (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, OPTForCausalLM)"
        );
        let err = parse(&SMOLLM2.replace(r#""rope_theta":100000"#, r#""rope_scaling":{"rope_type":"yarn","factor":4.0}"#)).unwrap_err();
        assert_eq!(err.to_string(), "m/config.json: unsupported rope_scaling.rope_type = \"yarn\" (supported: default, linear, llama3)");
        let err = parse(&SMOLLM2.replace("silu", "gelu")).unwrap_err();
        assert_eq!(err.to_string(), "m/config.json: unsupported hidden_act = \"gelu\" (supported: \"silu\")");
        let err = parse(&SMOLLM2.replace(r#""hidden_size":576,"#, "")).unwrap_err();
        assert_eq!(err.to_string(), "m/config.json: required key `hidden_size` is missing");
        let err = parse(&SMOLLM2.replace(r#""num_key_value_heads":3"#, r#""num_key_value_heads":4"#)).unwrap_err();
        assert_eq!(err.to_string(), "m/config.json: inconsistent config: num_attention_heads 9 is not a multiple of num_key_value_heads 4");
        let err = parse(&SMOLLM2.replace("bfloat16", "int8")).unwrap_err();
        assert_eq!(err.to_string(), "m/config.json: unsupported dtype = int8");
        // Values that load but would make every activation NaN or infinite (and so every
        // statistic a pruner reads), or divide by zero.
        for (from, to, what) in [
            (r#""rms_norm_eps":1e-5"#, r#""rms_norm_eps":-1"#, "the norm epsilon (rms_norm_eps) must be finite and not negative, got -1"),
            (r#""rope_theta":100000"#, r#""rope_theta":0"#, "rope_theta must be positive and finite, got 0"),
            (
                r#""max_position_embeddings":8192"#,
                r#""max_position_embeddings":0"#,
                "vocab_size (49152), the feed-forward size (1536) and max_position_embeddings (0) must be positive",
            ),
            (
                r#""vocab_size":49152"#,
                r#""vocab_size":0"#,
                "vocab_size (0), the feed-forward size (1536) and max_position_embeddings (8192) must be positive",
            ),
        ] {
            let err = parse(&SMOLLM2.replace(from, to)).unwrap_err();
            assert_eq!(err.to_string(), format!("m/config.json: inconsistent config: {what}"));
        }
        assert!(matches!(parse("{not json"), Err(ConfigError::Json { .. })));
        assert!(matches!(parse(r#"{"hidden_size":3}"#), Err(ConfigError::NoArchitecture { .. })));
    }
}
