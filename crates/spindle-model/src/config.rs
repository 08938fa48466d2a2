//! `config.json` in two stages: a raw serde struct per architecture family, exactly as the file is
//! written (every field optional, both the transformers-4 and transformers-5 key layouts), then a
//! resolved [`ModelConfig`] with no `Option` left in it. Everything a forward pass depends on is
//! decided here, once; an unknown architecture or an unsupported setting is an error naming it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::arch::{Family, REGISTRY};

/// The architectures spindle runs (the `architectures` entry of config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `LlamaForCausalLM` (LLaMA 1/2/3, SmolLM2, TinyLlama, ...).
    Llama,
    /// `MistralForCausalLM`.
    Mistral,
    /// `Qwen2ForCausalLM` (q/k/v biases).
    Qwen2,
    /// `Qwen3ForCausalLM` (per-head q/k norms).
    Qwen3,
    /// `Gemma2ForCausalLM`.
    Gemma2,
    /// `Gemma3ForCausalLM` (the text model, `gemma3_text`).
    Gemma3,
    /// `Phi3ForCausalLM` (fused projections).
    Phi3,
    /// `MixtralForCausalLM` (a sparse mixture of experts).
    Mixtral,
    /// `OPTForCausalLM`.
    Opt,
}

impl Architecture {
    /// The Hugging Face class name, as written in `architectures`.
    pub fn hf_name(self) -> &'static str {
        REGISTRY.iter().find(|(_, a, _)| *a == self).map_or("", |(name, _, _)| name)
    }

    /// Every supported class name, comma-separated, for messages.
    fn supported() -> String {
        REGISTRY.iter().map(|(name, _, _)| *name).collect::<Vec<_>>().join(", ")
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
    #[error("{path}: unknown architecture {name:?} (supported: {supported})")]
    UnknownArchitecture { path: PathBuf, name: String, supported: String },
    #[error("{path}: no `architectures` entry")]
    NoArchitecture { path: PathBuf },
    #[error("{path}: required key `{key}` is missing")]
    Missing { path: PathBuf, key: &'static str },
    #[error("{path}: unsupported {key} = {value}")]
    Unsupported { path: PathBuf, key: &'static str, value: String },
    #[error("{path}: inconsistent config: {what}")]
    Inconsistent { path: PathBuf, what: String },
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
    /// linears carry biases, as the family's module says.
    pub fn bias_slots(&self) -> Vec<BiasSlot> {
        self.family.arch().bias_slots(self.architecture)
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
        let Some((_, architecture, resolve)) = REGISTRY.iter().find(|(hf, _, _)| *hf == name) else {
            return Err(ConfigError::UnknownArchitecture { path: p(), name: name.to_owned(), supported: Architecture::supported() });
        };
        let config = resolve(path, *architecture, json)?;
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
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!("num_attention_heads {} is not a multiple of num_key_value_heads {}", self.num_heads, self.num_kv_heads));
        }
        self.family.arch().check(self).or_else(bad)
    }
}

pub(crate) fn need<T>(path: &Path, key: &'static str, v: Option<T>) -> Result<T, ConfigError> {
    v.ok_or_else(|| ConfigError::Missing { path: path.to_path_buf(), key })
}

pub(crate) fn resolve_dtype(path: &Path, tf5: Option<&str>, tf4: Option<&str>) -> Result<DType, ConfigError> {
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
pub(crate) fn resolve_rope(
    path: &Path,
    rope_parameters: Option<&Value>,
    rope_theta: Option<f64>,
    rope_scaling: Option<&Value>,
    default_theta: f64,
) -> Result<(f64, RopeScaling), ConfigError> {
    let unsupported = |key: &'static str, value: String| ConfigError::Unsupported { path: path.to_path_buf(), key, value };
    let params = rope_parameters.filter(|v| !v.is_null());
    let theta = params.and_then(|p| f64_field(p, "rope_theta")).or(rope_theta).unwrap_or(default_theta);
    let scaling = params.or(rope_scaling.filter(|v| !v.is_null()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{llama::Llama, opt::Opt};

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
            Family::Llama(Llama {
                rope_theta: 100000.0,
                rope_scaling: RopeScaling::None,
                qkv_bias: false,
                o_bias: false,
                mlp_bias: false,
                qk_norm: false
            })
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
        let Family::Llama(Llama { rope_theta, rope_scaling, .. }) = a.family else { panic!("llama family") };
        assert_eq!(rope_theta, 500000.0);
        assert_eq!(
            rope_scaling,
            RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 16 }
        );
        // transformers 5's plain layout.
        let plain = tf5.replace(r#""rope_type":"llama3""#, r#""rope_type":"default""#);
        assert!(
            matches!(parse(&plain).unwrap().family, Family::Llama(Llama { rope_scaling: RopeScaling::None, rope_theta, .. }) if rope_theta == 500000.0)
        );
    }

    #[test]
    fn sliding_windows_follow_each_architecture() {
        let base = r#""hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":128,"sliding_window":6"#;
        let mistral = parse(&format!(r#"{{"architectures":["MistralForCausalLM"],{base}}}"#)).unwrap();
        assert_eq!(mistral.window, AttentionWindow::Sliding(6));
        let qwen = parse(&format!(r#"{{"architectures":["Qwen2ForCausalLM"],{base},"use_sliding_window":false}}"#)).unwrap();
        assert_eq!(qwen.window, AttentionWindow::Full);
        assert!(matches!(qwen.family, Family::Llama(Llama { qkv_bias: true, o_bias: false, .. })));
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
        assert_eq!(c.family, Family::Opt(Opt { pre_norm: false, word_embed_proj_dim: 512, bias: true }));
        assert_eq!((c.head_dim, c.num_kv_heads, c.dtype), (64, 16, DType::F16));
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn unknown_and_unsupported_settings_are_named() {
        let err = parse(r#"{"architectures":["GPT2LMHeadModel"]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m/config.json: unknown architecture \"GPT2LMHeadModel\" (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM, MixtralForCausalLM, OPTForCausalLM)"
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
